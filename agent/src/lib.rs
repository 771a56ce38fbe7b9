//! The Bramble agent's std side: everything [`agent_nostd_core::AgentCore`] needs from the board.
//!
//! # Layout
//!
//! - [`cli`]: the command line (flags, config, logging, runtime).
//! - [`config`]: the TOML config file and its command-line overrides.
//! - [`discovery`]: what the board has (CPU, memory, disk, arch, model, temperature, throttling).
//! - [`cgroup`]: per-task cgroups, v1 and v2, and detection of what the board offers.
//! - [`process`]: tasks as real processes: sandbox, session and process group, captured output, exit.
//! - [`fetch`]: task artifacts: download over http://, SHA-256 check, cache, sandbox.
//! - [`warm`]: warm spares (task processes made ready before they are needed) and the launcher
//!   that uses them, or starts a task cold.
//! - [`tasks`]: the tasks' lifecycle on the board: records beside the core, launch, recovery,
//!   cleanup.
//! - [`checkpoint`]: the agent's state on disk, written atomically and only when it changed.
//! - [`durable`]: checkpoint writes off the agent's loop, and the publishes held until they land.
//! - [`driver`]: the tokio loop connecting the core to MQTT, the board and the tasks.

pub mod cgroup;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod discovery;
pub mod driver;
pub mod durable;
pub mod fetch;
pub mod process;
pub mod tasks;
pub mod warm;
