//! The Bramble master.
//!
//! It will hold the sans-IO `MasterCore` (agent and framework registries, the DRF allocator and the
//! offer cycle), the embedded rumqttd broker, the dashboard and the `bramble` CLI. The master speaks to
//! agents with the messages of [`agent_nostd_core::wire`].
