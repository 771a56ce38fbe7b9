//! Tasks as real processes: sandbox, session and process group, captured output, exit.
//!
//! Every task runs under its own small supervisor, `bramble-agent __supervise` (see
//! [`supervise_main`]), so that its real exit status survives an agent restart:
//!
//! ```text
//! agent ──spawn──▶ supervisor (own session, stays in the agent's cgroup)
//!                    └─fork──▶ task (own process group, in the task's cgroup, maybe another user)
//!                              (warm spare: forked and in its cgroup before the task is known)
//!                                  stdout/stderr ─pipes─▶ supervisor ─▶ <sandbox>/stdout, stderr
//!                  supervisor: waits for the task, writes <sandbox>/.exit, exits
//! ```
//!
//! - [`launch`] spawns the supervisor, hands it the task over its stdin (JSON) and reads one JSON
//!   line back: the task's pid once `exec` succeeded, or why it failed (e.g. `No such file or
//!   directory (os error 2): /usr/bin/nope`), which becomes a [`LaunchError`].
//! - A [`Spare`] does the slow part before there is a task: [`Spare::prepare`] spawns
//!   `__supervise --warm <join file>…`, whose task process (the *stub*) is forked at once,
//!   calls `setpgid(0, 0)`, joins the spare's cgroup and waits; the supervisor answers
//!   `{"ready":{"stub_pid":N}}`. [`Spare::launch`] then sends the same request and reads the same
//!   answer as [`launch`]; the stub enters the sandbox, sets up its stdio, drops to `run_as` and
//!   `exec`s. EOF on the warm supervisor's stdin before a request (the agent died or retired it)
//!   makes it kill the stub and exit. [`crate::warm`] keeps one and falls back to [`launch`].
//! - The supervisor calls `setsid()`, so neither the agent's death nor signals to the agent's process
//!   group reach it. It forks the task, which `setpgid(0, 0)` — its process group is the kill
//!   target of [`signal`] — joins the task's cgroup by writing `0` to the pre-opened join files
//!   (`tasks` on v1, `cgroup.procs` on v2: [`TaskCgroup::join_paths`]), enters the sandbox, drops
//!   to `run_as` ([`RunAs`]: `setgroups`, `setgid`, `setuid`, in that order) and `exec`s. The supervisor itself never joins the task's cgroup, so the task's
//!   OOM kill or `cgroup.kill` cannot hit it.
//! - The task's stdout and stderr are pipes the supervisor copies into `stdout` and `stderr` in the
//!   sandbox, up to `log_limit_bytes` each; beyond that it keeps reading and discards, so the task
//!   never blocks on a full pipe.
//! - When the task ends, the supervisor waits up to a second for the pipes to drain (processes the
//!   task left behind may hold them open), writes the exit status atomically to `.exit` in the
//!   sandbox (`{"code":N}` or `{"signal":N}`; temp file, fsync, rename, fsync of the directory) and
//!   exits.
//! - [`TaskHandle::wait`] resolves when the supervisor has exited and returns what `.exit` says.
//!   After an agent restart, [`adopt`] checks the checkpointed supervisor (pid and start time, so a
//!   reused pid is not mistaken for it) and gives a handle that polls `/proc/<pid>/stat` every
//!   250 ms: the supervisor is no longer the agent's child, and a pidfd would need
//!   `tokio::io::unix::AsyncFd`, i.e. tokio's `net` feature, which this crate does not enable.
//!
//! # Usage
//!
//! ```no_run
//! # async fn demo(cg: Option<&bramble_agent::cgroup::TaskCgroup>) -> Result<(), Box<dyn std::error::Error>> {
//! use bramble_agent::process::{self, TaskSpec};
//! let sandbox = std::path::PathBuf::from("/var/lib/bramble/sandboxes/fw/task");
//! process::create_sandbox(&sandbox, None)?;
//! let spec = TaskSpec {
//!     framework_id: "fw".into(),
//!     task_id: "task".into(),
//!     agent_id: "pi4".into(),
//!     argv: vec!["/bin/echo".into(), "hello".into()],
//!     env: vec![],
//!     sandbox,
//!     run_as: None,
//!     log_limit_bytes: 1 << 20,
//! };
//! let exe = std::env::current_exe()?;
//! let (launched, mut handle) = process::launch(&spec, cg, &exe).await?;
//! // checkpoint `launched` (and the cgroup's paths), report Started …
//! let raw = handle.wait().await;
//! let exit = process::task_exit(raw, cg);
//! # let _ = (launched, exit); Ok(()) }
//! ```
//!
//! # Environment
//!
//! The task gets `spec.env` only (not the agent's environment), plus `BRAMBLE_TASK_ID`,
//! `BRAMBLE_FRAMEWORK_ID`, `BRAMBLE_AGENT_ID` and `BRAMBLE_SANDBOX`, which override variables of
//! the same name, and `PATH` = [`DEFAULT_PATH`] when `spec.env` has none. A program name without a
//! `/` is looked up in that `PATH`.
//!
//! # Caveats
//!
//! - Under systemd the unit needs `KillMode=process`, or stopping the agent also kills every
//!   supervisor and task in its cgroup.
//! - The task can write its own sandbox, so it could replace `.exit` while it runs; the supervisor
//!   writes it last, after the task has ended.
//!
//! # Layout
//!
//! - `spec`: what to run ([`TaskSpec`]), the sandbox, and the records of a launch ([`Launched`])
//!   and of an exit ([`RawExit`]).
//! - `launch`: starting a task under a new supervisor ([`launch`]) or in a warm [`Spare`].
//! - `handle`: a started or re-adopted task: wait for its end ([`TaskHandle`]), signal it,
//!   [`adopt`] it after a restart.
//! - `supervisor`: the `__supervise` side, which runs in its own process.

mod handle;
mod launch;
mod spec;
mod supervisor;

pub use handle::{
    adopt, process_start_time, recorded_exit, signal, supervisor_alive, Adopted, SignalError,
    TaskHandle,
};
pub use launch::{launch, LaunchError, Spare};
pub use spec::{create_sandbox, exit_reason, task_exit, Launched, RawExit, RunAs, TaskSpec};
pub use supervisor::supervise_main;

/// The hidden first argument that runs `bramble-agent` as a task supervisor.
pub const SUPERVISE_ARG: &str = "__supervise";
/// The file in the sandbox that holds the task's exit status, as JSON.
pub const EXIT_FILE: &str = ".exit";
/// The file in the sandbox that holds the task's captured stdout.
pub const STDOUT_FILE: &str = "stdout";
/// The file in the sandbox that holds the task's captured stderr.
pub const STDERR_FILE: &str = "stderr";
/// The task's `PATH` when its environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use super::spec::tests::spec;

    #[test]
    fn handles_and_launches_can_move_to_a_spawned_tokio_task() {
        fn is_send<T: Send>(_: &T) {}
        let s = spec();
        let launching = launch(&s, None, Path::new("/nonexistent"));
        is_send(&launching);
        let l = Launched {
            supervisor_pid: i32::MAX,
            supervisor_start_time: 0,
            task_pgid: i32::MAX,
        };
        if let Adopted::Running(handle) = adopt(&l, Path::new("/nonexistent")) {
            is_send(&handle);
        }
    }
}
