//! `bramble run`: a one-off task as its own little framework, like `mesos-execute`.
//!
//! The framework is the SDK's [`bramble_sdk::oneshot`] (re-exported here): [`OneShot`] places the
//! command as one task on an agent that fits [`RunSpec`] ([`fits`]), reports its state changes on
//! stderr and stops when it ends; [`exit_code`] is the command line's exit status. The command
//! line itself (`bramble run` in `main.rs`) parses the options, registers with
//! [`registration`] and drives the framework with `bramble_sdk::scheduler::run_until`.

pub use bramble_sdk::oneshot::{exit_code, fits, registration, OneShot, RunSpec};
