//! Cluster-level tests of Bramble.
//!
//! The tests in `tests/tests/` drive the parts together through their public interfaces and real
//! encoded payloads, on simulated time.
//!
//! # Layout
//!
//! - [`sim`]: the deterministic simulation harness — [`sim::Sim`] joins a `MasterCore`, several
//!   `AgentCore`s and scripted frameworks ([`sim::Script`], e.g. [`sim::PackTasks`]) through an
//!   in-memory broker with optional seeded loss, delay and duplication.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod sim;
