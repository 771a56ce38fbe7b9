//! Cluster-level tests of Bramble.
//!
//! The tests in `tests/tests/` drive the parts together through their public interfaces and real
//! encoded payloads. The simulation harness (master + agents + frameworks on simulated time) grows here.
