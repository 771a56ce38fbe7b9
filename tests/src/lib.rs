//! Cluster-level tests of Bramble.
//!
//! The tests in `tests/tests/` drive the parts together through their public interfaces and real
//! encoded payloads, on simulated time.
//!
//! # Layout
//!
//! - [`sim`]: the deterministic simulation harness — [`sim::Sim`] joins a `MasterCore`, several
//!   `AgentCore`s, scripted stand-in frameworks ([`sim::Script`], e.g. [`sim::PackTasks`]) and real
//!   ones (a framework's `Scheduler` behind the SDK's `SchedulerCore`, [`sim::Sim::add_scheduler`],
//!   with simulated `pi`, `wordcount` and `sensor` executors, [`sim::executors`]) through an
//!   in-memory broker with optional seeded loss, delay and duplication.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod sim;
