//! The agent's tasks on the std side: what [`AgentCore`](agent_nostd_core::AgentCore) decides
//! about a task, carried out on the board.
//!
//! A task's life here: the core handles its RunTask, which the table holds by [`TaskKey`]
//! ([`Tasks::hold_run`]); the core's `Launch` action records the launch once
//! ([`Tasks::record_launch`], with the warm spare's pids when one will be used, so the checkpoint
//! written during the launch already has them); [`launch::start`] makes its sandbox, fetches its
//! artifacts and starts its process with the limits the core holds; [`Tasks::started`] or
//! [`Tasks::launch_failed`] completes the record. Its exit ends it ([`Tasks::ended`]), and the
//! core's `Release` forgets it ([`Tasks::release`], [`cleanup::cleanup`]). After a restart,
//! [`recover`] takes the checkpointed tasks back.
//!
//! Limits (resources and `pids_max`) live in the core only; the table holds where a task lives
//! (sandbox, cgroup, processes).
//!
//! # Layout
//!
//! - [`table`]: [`Tasks`], the records and the pending RunTasks (state, no I/O).
//! - [`launch`]: starting one task (sandbox, artifacts, process).
//! - [`recover`]: the checkpoint read back and its tasks restored.
//! - [`cleanup`]: removing a task's cgroup and sandbox.
//! - [`user`]: who a task runs as (`[tasks]`: user, groups, allowed users).
//!
//! [`TaskKey`]: agent_nostd_core::ids::TaskKey

pub mod cleanup;
pub mod launch;
pub mod recover;
pub mod table;
pub mod user;

pub use launch::{LaunchEnv, LaunchFailure};
pub use table::{TaskSlot, Tasks};
pub use user::{TaskUsers, UserError};
