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
//!   to `run_as` and `exec`s. The supervisor itself never joins the task's cgroup, so the task's
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

mod supervisor;

use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use agent_nostd_core::agent::{Exit, Signal};
use nix::errno::Errno;
use nix::sys::signal::{self as nixsig, killpg};
use nix::unistd::{chown, Gid, Pid, Uid};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{ChildStdin, ChildStdout};

use crate::cgroup::{CgroupError, TaskCgroup};

pub use supervisor::supervise_main;
use supervisor::{Reply, Request};

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

/// How often an adopted task's supervisor is checked.
const ADOPT_POLL: Duration = Duration::from_millis(250);
/// How long [`launch`] waits for the supervisor's answer.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest answer line the supervisor may send.
const MAX_REPLY: u64 = 64 * 1024;

/// What to run, where and as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSpec {
    /// The task's framework.
    pub framework_id: String,
    /// The task.
    pub task_id: String,
    /// This agent.
    pub agent_id: String,
    /// The program and its arguments; a program without `/` is looked up in `PATH`.
    pub argv: Vec<String>,
    /// The task's environment (the agent's own is not passed on).
    pub env: Vec<(String, String)>,
    /// The task's working directory, which must exist (see [`create_sandbox`]).
    pub sandbox: PathBuf,
    /// `(uid, gid)` to run as, when not the agent's own user.
    pub run_as: Option<(u32, u32)>,
    /// The most bytes kept of each of stdout and stderr.
    pub log_limit_bytes: u64,
}

/// A running task, as the driver checkpoints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launched {
    /// The supervisor's pid.
    pub supervisor_pid: i32,
    /// The supervisor's start time (field 22 of `/proc/<pid>/stat`), to tell it from a reused pid.
    pub supervisor_start_time: u64,
    /// The task's process group (its first process's pid).
    pub task_pgid: i32,
}

/// How a task's process ended, as the supervisor recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawExit {
    /// It exited with this code.
    Code(i32),
    /// This signal ended it.
    Signal(i32),
    /// Nothing was recorded (the supervisor itself died).
    Unknown,
}

impl RawExit {
    /// Whether SIGKILL ended it, directly or as a shell's `128 + 9`.
    pub fn looks_sigkilled(&self) -> bool {
        matches!(self, RawExit::Signal(9) | RawExit::Code(137))
    }
}

/// Maps a raw exit and the cgroup's OOM verdict to the core's [`Exit`]. An OOM kill anywhere in
/// the task's cgroup wins: a shell whose child was OOM-killed exits with a code, not a signal.
pub fn exit_reason(raw: RawExit, oom_killed: bool) -> Exit {
    if oom_killed {
        return Exit::OomKilled;
    }
    match raw {
        RawExit::Code(c) => Exit::Code(c),
        RawExit::Signal(s) => Exit::Signal(s),
        RawExit::Unknown => Exit::Unknown,
    }
}

/// [`exit_reason`] with the OOM verdict read from the task's cgroup, if it has one.
pub fn task_exit(raw: RawExit, cgroup: Option<&TaskCgroup>) -> Exit {
    let oom = cgroup.is_some_and(|c| c.oom_killed(raw.looks_sigkilled()));
    exit_reason(raw, oom)
}

/// Why a task could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// The spec cannot be run (empty argv, NUL bytes, bad ids, no sandbox).
    #[error("invalid task: {0}")]
    InvalidSpec(String),
    /// The task's process failed before or at `exec`; the message says why, e.g.
    /// `No such file or directory (os error 2): /usr/bin/nope`.
    #[error("{0}")]
    Exec(String),
    /// The supervisor could not be started.
    #[error("cannot start the supervisor {}: {source}", path.display())]
    Spawn {
        /// The supervisor executable.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The supervisor misbehaved (ended without answering, answered garbage, timed out).
    #[error("supervisor failed: {0}")]
    Supervisor(String),
    /// The sandbox could not be prepared.
    #[error("sandbox {}: {source}", path.display())]
    Sandbox {
        /// The sandbox directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Why a signal could not be delivered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// The checkpointed process group is not a safe target.
    #[error("refusing to signal process group {0}")]
    InvalidPgid(i32),
    /// `killpg` failed.
    #[error("killpg({pgid}, {signal}): {errno}")]
    Kill {
        /// The process group.
        pgid: i32,
        /// The signal.
        signal: &'static str,
        /// The error.
        errno: Errno,
    },
    /// Killing the cgroup failed.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
}

/// Creates a task's sandbox directory (and its parents), mode 0700, owned by `run_as` when set.
pub fn create_sandbox(path: &Path, run_as: Option<(u32, u32)>) -> Result<(), LaunchError> {
    let err = |source| LaunchError::Sandbox {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    if let Some((uid, gid)) = run_as {
        chown(path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
            .map_err(|e| err(io::Error::from(e)))?;
    }
    Ok(())
}

/// The task's environment: `spec.env`, then the `BRAMBLE_*` variables, later names replacing
/// earlier ones, plus a default `PATH`.
fn task_env(spec: &TaskSpec) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::with_capacity(spec.env.len() + 5);
    let mut set = |k: &str, v: &str| {
        if let Some(slot) = env.iter_mut().find(|(key, _)| key == k) {
            slot.1 = v.to_owned();
        } else {
            env.push((k.to_owned(), v.to_owned()));
        }
    };
    for (k, v) in &spec.env {
        set(k, v);
    }
    set("BRAMBLE_TASK_ID", &spec.task_id);
    set("BRAMBLE_FRAMEWORK_ID", &spec.framework_id);
    set("BRAMBLE_AGENT_ID", &spec.agent_id);
    set("BRAMBLE_SANDBOX", &spec.sandbox.to_string_lossy());
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".to_owned(), DEFAULT_PATH.to_owned()));
    }
    env
}

fn validate(spec: &TaskSpec) -> Result<(), LaunchError> {
    let bad = |m: String| Err(LaunchError::InvalidSpec(m));
    for (what, id) in [
        ("framework id", &spec.framework_id),
        ("task id", &spec.task_id),
        ("agent id", &spec.agent_id),
    ] {
        if let Err(e) = agent_nostd_core::ids::validate_id(id) {
            return bad(format!("{what} {id:?}: {e}"));
        }
    }
    if spec.argv.is_empty() || spec.argv[0].is_empty() {
        return bad("argv is empty".into());
    }
    if spec.argv.iter().any(|a| a.contains('\0')) {
        return bad("an argument contains a NUL byte".into());
    }
    for (k, v) in &spec.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return bad(format!("bad environment variable name or value {k:?}"));
        }
    }
    if spec.sandbox.as_os_str().is_empty() || !spec.sandbox.is_dir() {
        return bad(format!(
            "sandbox {} is not a directory",
            spec.sandbox.display()
        ));
    }
    Ok(())
}

/// Starts the task under a new supervisor (`supervisor_exe __supervise`, normally
/// `std::env::current_exe()`), in `cgroup` when given. Returns once the task's program has been
/// `exec`ed, or with the reason it could not be.
pub async fn launch(
    spec: &TaskSpec,
    cgroup: Option<&TaskCgroup>,
    supervisor_exe: &Path,
) -> Result<(Launched, TaskHandle), LaunchError> {
    let body = request_body(spec, cgroup.map(TaskCgroup::join_paths).unwrap_or_default())?;

    let (mut child, supervisor_pid, start_time) =
        spawn_supervisor(supervisor_command(supervisor_exe), supervisor_exe).await?;
    let stdin = child.stdin.take();
    let mut stdout = child.stdout.take().map(BufReader::new);
    let pipes = stdin.zip(stdout.as_mut());
    handshake(spec, child, pipes, &body, supervisor_pid, start_time).await
}

fn supervisor_command(supervisor_exe: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(supervisor_exe);
    command
        .arg(SUPERVISE_ARG)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(false);
    command
}

/// The supervisor's request for `spec` (checked first), joining the `cgroup_join` files, as JSON.
fn request_body(spec: &TaskSpec, cgroup_join: Vec<PathBuf>) -> Result<Vec<u8>, LaunchError> {
    validate(spec)?;
    let request = Request {
        argv: spec.argv.clone(),
        env: task_env(spec),
        sandbox: spec.sandbox.clone(),
        run_as: spec.run_as,
        log_limit_bytes: spec.log_limit_bytes,
        cgroup_join,
    };
    serde_json::to_vec(&request)
        .map_err(|e| LaunchError::InvalidSpec(format!("cannot encode the task: {e}")))
}

/// Spawns a supervisor; returns it with its pid and start time. It stays our unreaped child, so
/// its pid cannot be reused until we wait for it.
///
/// The `fork` runs on tokio's blocking pool: it waits while a process-wide cgroup move anywhere on
/// the machine holds the kernel's `cgroup_threadgroup_rwsem` (through an RCU grace period, 10–30
/// ms, see [`crate::cgroup`]), which must not stall the agent's loop.
async fn spawn_supervisor(
    mut command: tokio::process::Command,
    supervisor_exe: &Path,
) -> Result<(tokio::process::Child, i32, Option<u64>), LaunchError> {
    let spawn_error = |source| LaunchError::Spawn {
        path: supervisor_exe.to_path_buf(),
        source,
    };
    let runtime = tokio::runtime::Handle::current();
    let spawned = tokio::task::spawn_blocking(move || {
        // The child is registered with the runtime's process driver.
        let _context = runtime.enter();
        let child = command.spawn()?;
        let supervisor_pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        let start_time = process_start_time(supervisor_pid);
        Ok((child, supervisor_pid, start_time))
    })
    .await;
    match spawned {
        Ok(result) => result.map_err(spawn_error),
        Err(join) => Err(spawn_error(io::Error::other(join))),
    }
}

/// Reads one answer line of at most [`MAX_REPLY`] bytes.
async fn read_reply(stdout: &mut BufReader<ChildStdout>) -> Result<Reply, &'static str> {
    let mut line = String::new();
    (&mut *stdout)
        .take(MAX_REPLY)
        .read_line(&mut line)
        .await
        .map_err(|_| "cannot read its answer")?;
    serde_json::from_str::<Reply>(line.trim_end()).map_err(|_| {
        if line.is_empty() {
            "it ended without answering"
        } else {
            "it answered garbage"
        }
    })
}

/// Sends the request to a supervisor and turns its answer into a running task or an error.
async fn handshake(
    spec: &TaskSpec,
    mut child: tokio::process::Child,
    pipes: Option<(ChildStdin, &mut BufReader<ChildStdout>)>,
    body: &[u8],
    supervisor_pid: i32,
    start_time: Option<u64>,
) -> Result<(Launched, TaskHandle), LaunchError> {
    let answer = async {
        let (mut stdin, stdout) = pipes.ok_or("no stdin or stdout pipe")?;
        // If it stopped reading, its answer (or its end) below says why.
        let _ = stdin.write_all(body).await;
        drop(stdin);
        read_reply(stdout).await
    };
    let reply = match tokio::time::timeout(HANDSHAKE_TIMEOUT, answer).await {
        Ok(a) => a,
        Err(_) => Err("no answer within 30 s"),
    };
    match (reply, start_time) {
        (Ok(Reply::Started { task_pid }), Some(start)) if supervisor_pid > 1 && task_pid > 1 => {
            let launched = Launched {
                supervisor_pid,
                supervisor_start_time: start,
                task_pgid: task_pid,
            };
            tracing::debug!(
                framework_id = %spec.framework_id,
                task_id = %spec.task_id,
                ?launched,
                "task started"
            );
            let handle = TaskHandle {
                launched,
                sandbox: spec.sandbox.clone(),
                waiter: Waiter::Child(Box::new(child)),
                ended: None,
            };
            Ok((launched, handle))
        }
        (Ok(Reply::Failed { message }), _) => {
            let _ = child.wait().await;
            Err(LaunchError::Exec(message))
        }
        (other, _) => {
            let problem = match other {
                Err(e) => e.to_owned(),
                Ok(_) => "its pid or the task's could not be read".to_owned(),
            };
            // If it did start the task, the task must not outlive this failure. Its group is
            // killed while the supervisor still holds it, so the id cannot have been reused.
            if let Ok(Reply::Started { task_pid }) = other {
                if task_pid > 1 {
                    let _ = killpg(Pid::from_raw(task_pid), nixsig::Signal::SIGKILL);
                }
            }
            let _ = child.start_kill();
            let status = child.wait().await;
            let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
            Err(LaunchError::Supervisor(format!("{problem} ({status})")))
        }
    }
}

/// A warm spare: a supervisor already started in warm mode (`__supervise --warm`), whose task
/// process (the *stub*) is already forked, in its own process group and in the spare's cgroup,
/// waiting for its task. [`Spare::launch`] then costs one request and one `exec`: neither the
/// supervisor's `exec` nor the cgroup join (on v2 an RCU grace period after a quiet spell, 10–30
/// ms) is on the launch's path.
///
/// Dropping it (or the agent dying) closes the supervisor's stdin: it kills the stub and exits.
/// Its cgroup is the caller's to remove.
#[derive(Debug)]
pub struct Spare {
    child: tokio::process::Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    supervisor_pid: i32,
    start_time: u64,
    stub_pid: i32,
    cgroup: Option<TaskCgroup>,
}

impl Spare {
    /// Starts a warm supervisor whose stub joins `cgroup` (when given), and waits until it is
    /// ready.
    pub async fn prepare(
        cgroup: Option<&TaskCgroup>,
        supervisor_exe: &Path,
    ) -> Result<Spare, LaunchError> {
        let procs = cgroup.map(TaskCgroup::join_paths).unwrap_or_default();
        let mut command = supervisor_command(supervisor_exe);
        command.arg(supervisor::WARM_ARG).args(&procs);
        let (mut child, supervisor_pid, start_time) =
            spawn_supervisor(command, supervisor_exe).await?;
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().map(BufReader::new);
        let ready = async {
            let reply = match stdout.as_mut() {
                Some(out) => read_reply(out).await.map_err(str::to_owned),
                None => Err("no stdout pipe".to_owned()),
            };
            match reply {
                Ok(Reply::Ready { stub_pid }) if stub_pid > 1 => Ok(stub_pid),
                Ok(Reply::Failed { message }) => Err(message),
                Ok(_) => Err("it answered out of turn".to_owned()),
                Err(e) => Err(e),
            }
        };
        let ready = match tokio::time::timeout(HANDSHAKE_TIMEOUT, ready).await {
            Ok(r) => r,
            Err(_) => Err("no answer within 30 s".to_owned()),
        };
        match (ready, stdin, stdout, start_time) {
            (Ok(stub_pid), Some(stdin), Some(stdout), Some(start_time)) if supervisor_pid > 1 => {
                tracing::debug!(supervisor_pid, stub_pid, "warm spare ready");
                Ok(Spare {
                    child,
                    stdin,
                    stdout,
                    supervisor_pid,
                    start_time,
                    stub_pid,
                    cgroup: cgroup.cloned(),
                })
            }
            (ready, ..) => {
                let problem = ready
                    .err()
                    .unwrap_or_else(|| "its pid could not be read".into());
                let _ = child.start_kill();
                let _ = child.wait().await;
                Err(LaunchError::Supervisor(format!("warm spare: {problem}")))
            }
        }
    }

    /// The cgroup its stub is in: set the task's limits on it before [`launch`](Spare::launch).
    pub fn cgroup(&self) -> Option<&TaskCgroup> {
        self.cgroup.as_ref()
    }

    /// The warm supervisor's pid.
    pub fn supervisor_pid(&self) -> i32 {
        self.supervisor_pid
    }

    /// The stub's pid: the task's pid and process group once launched.
    pub fn stub_pid(&self) -> i32 {
        self.stub_pid
    }

    /// The record a launch in this spare will have, known before it starts (so it can be
    /// checkpointed while the task `exec`s).
    pub fn launched(&self) -> Launched {
        Launched {
            supervisor_pid: self.supervisor_pid,
            supervisor_start_time: self.start_time,
            task_pgid: self.stub_pid,
        }
    }

    /// Whether its supervisor still runs (it may have been killed meanwhile).
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Runs `spec` in the stub. Like [`launch`], but with the spare's cgroup as the task's;
    /// [`LaunchError::Supervisor`] means the spare was broken (the task did not run), and a cold
    /// [`launch`] may be tried instead.
    pub async fn launch(mut self, spec: &TaskSpec) -> Result<(Launched, TaskHandle), LaunchError> {
        // The stub joined the cgroup already.
        let body = request_body(spec, Vec::new())?;
        let pipes = Some((self.stdin, &mut self.stdout));
        handshake(
            spec,
            self.child,
            pipes,
            &body,
            self.supervisor_pid,
            Some(self.start_time),
        )
        .await
    }

    /// Tells the supervisor to go (EOF on its stdin: it kills the stub and exits) and waits for
    /// it, for up to a second.
    pub async fn retire(self) {
        let Spare {
            mut child, stdin, ..
        } = self;
        drop(stdin);
        let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
    }
}

enum Waiter {
    /// The supervisor is our child.
    Child(Box<tokio::process::Child>),
    /// The supervisor belongs to an earlier agent: poll `/proc`.
    Adopted,
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Waiter::Child(_) => "Child",
            Waiter::Adopted => "Adopted",
        })
    }
}

/// A running task: [`wait`](TaskHandle::wait) for its end. Dropping it leaves the task running.
#[derive(Debug)]
pub struct TaskHandle {
    launched: Launched,
    sandbox: PathBuf,
    waiter: Waiter,
    ended: Option<RawExit>,
}

impl TaskHandle {
    /// The task's checkpoint record.
    pub fn launched(&self) -> Launched {
        self.launched
    }

    /// The task's sandbox.
    pub fn sandbox(&self) -> &Path {
        &self.sandbox
    }

    /// Waits until the task has ended and its supervisor has recorded how, and returns that
    /// ([`RawExit::Unknown`] if the supervisor died without recording it). Cancel-safe; once it
    /// has returned, it returns the same again at once.
    pub async fn wait(&mut self) -> RawExit {
        if let Some(raw) = self.ended {
            return raw;
        }
        match &mut self.waiter {
            Waiter::Child(child) => {
                if let Err(e) = child.wait().await {
                    tracing::warn!(error = %e, pid = self.launched.supervisor_pid,
                        "cannot wait for the task's supervisor; watching /proc instead");
                    self.waiter = Waiter::Adopted;
                    poll_until_gone(&self.launched).await;
                }
            }
            Waiter::Adopted => poll_until_gone(&self.launched).await,
        }
        let raw = recorded_exit(&self.sandbox).unwrap_or_else(|| {
            tracing::warn!(sandbox = %self.sandbox.display(),
                "the task's supervisor ended without recording an exit status");
            RawExit::Unknown
        });
        self.ended = Some(raw);
        raw
    }
}

async fn poll_until_gone(launched: &Launched) {
    let mut tick = tokio::time::interval(ADOPT_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !supervisor_alive(launched) {
            return;
        }
    }
}

/// The exit status the task's supervisor recorded in `sandbox`, if any.
///
/// The task's leftover processes could have put anything there, so only a small regular file
/// is read: no symlink is followed and a FIFO does not block.
pub fn recorded_exit(sandbox: &Path) -> Option<RawExit> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(sandbox.join(EXIT_FILE))
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = Vec::new();
    file.take(256).read_to_end(&mut text).ok()?;
    match serde_json::from_slice::<RawExit>(&text) {
        Ok(raw @ (RawExit::Code(_) | RawExit::Signal(_))) => Some(raw),
        _ => None,
    }
}

/// The start time (field 22 of `/proc/<pid>/stat`, in clock ticks since boot) of a live process,
/// `None` if there is no such process or it is a zombie.
pub fn process_start_time(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_start_time(&stat)
}

/// Field 22 of a `/proc/<pid>/stat` line, unless field 3 says the process is dead or a zombie.
fn parse_stat_start_time(stat: &str) -> Option<u64> {
    // The command (field 2) is in parentheses and may itself hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if matches!(state, "Z" | "X" | "x") {
        return None;
    }
    // `state` was field 3; field 22 is 19 further on.
    fields.nth(18)?.parse().ok()
}

/// Whether the checkpointed supervisor still runs (same pid, same start time, not a zombie).
pub fn supervisor_alive(launched: &Launched) -> bool {
    launched.supervisor_pid > 1
        && process_start_time(launched.supervisor_pid) == Some(launched.supervisor_start_time)
}

/// Sends `signal` to the task's process group. [`Signal::Kill`] also kills everything in its
/// cgroup, when given, which catches processes that left the group.
///
/// The group is only signalled while the task's supervisor is alive (checked by pid and start
/// time): the group's id cannot be reused while its leader is unreaped, and the supervisor exits
/// within about a second of reaping it, far too soon for pids to wrap around. A group that is
/// already gone is not an error.
pub fn signal(
    launched: &Launched,
    signal: Signal,
    cgroup: Option<&TaskCgroup>,
) -> Result<(), SignalError> {
    if launched.task_pgid <= 1 {
        return Err(SignalError::InvalidPgid(launched.task_pgid));
    }
    let (sig, name) = match signal {
        Signal::Term => (nixsig::Signal::SIGTERM, "SIGTERM"),
        Signal::Kill => (nixsig::Signal::SIGKILL, "SIGKILL"),
    };
    let mut result = Ok(());
    if supervisor_alive(launched) {
        match killpg(Pid::from_raw(launched.task_pgid), sig) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(errno) => {
                result = Err(SignalError::Kill {
                    pgid: launched.task_pgid,
                    signal: name,
                    errno,
                })
            }
        }
    } else {
        tracing::debug!(
            ?launched,
            "supervisor gone: not signalling the process group"
        );
    }
    if signal == Signal::Kill {
        if let Some(cg) = cgroup {
            cg.kill_all()?;
        }
    }
    result
}

/// What [`adopt`] found of a checkpointed task.
#[derive(Debug)]
pub enum Adopted {
    /// Its supervisor still runs: wait on this handle.
    Running(TaskHandle),
    /// It ended while the agent was down, like this.
    Ended(RawExit),
    /// It is gone and nothing was recorded (report it LOST: ended while the agent was down).
    Unknown,
}

/// Takes back a task after an agent restart, from its checkpointed [`Launched`] and sandbox.
pub fn adopt(launched: &Launched, sandbox: &Path) -> Adopted {
    if supervisor_alive(launched) {
        return Adopted::Running(TaskHandle {
            launched: *launched,
            sandbox: sandbox.to_path_buf(),
            waiter: Waiter::Adopted,
            ended: None,
        });
    }
    match recorded_exit(sandbox) {
        Some(raw) => Adopted::Ended(raw),
        None => Adopted::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TaskSpec {
        TaskSpec {
            framework_id: "fw".into(),
            task_id: "t1".into(),
            agent_id: "pi".into(),
            argv: vec!["/bin/true".into()],
            env: vec![
                ("A".into(), "1".into()),
                ("BRAMBLE_TASK_ID".into(), "x".into()),
            ],
            sandbox: "/tmp".into(),
            run_as: None,
            log_limit_bytes: 10,
        }
    }

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

    #[test]
    fn stat_start_time_is_field_22_even_with_parentheses_in_the_name() {
        let line = "123 (a) b) S 1 123 123 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 \
                    10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        assert_eq!(parse_stat_start_time(line), Some(98765));
        let zombie = line.replace(") S ", ") Z ");
        assert_eq!(parse_stat_start_time(&zombie), None);
        assert_eq!(parse_stat_start_time("garbage"), None);
    }

    #[test]
    fn our_own_start_time_is_readable() {
        let me = i32::try_from(std::process::id()).unwrap();
        assert!(process_start_time(me).is_some());
        assert_eq!(process_start_time(0), None);
        assert_eq!(process_start_time(-5), None);
    }

    #[test]
    fn task_env_adds_bramble_variables_overriding_and_a_default_path() {
        let env = task_env(&spec());
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("A"), Some("1"));
        assert_eq!(get("BRAMBLE_TASK_ID"), Some("t1"));
        assert_eq!(get("BRAMBLE_FRAMEWORK_ID"), Some("fw"));
        assert_eq!(get("BRAMBLE_AGENT_ID"), Some("pi"));
        assert_eq!(get("BRAMBLE_SANDBOX"), Some("/tmp"));
        assert_eq!(get("PATH"), Some(DEFAULT_PATH));
        assert_eq!(
            env.iter().filter(|(k, _)| k == "BRAMBLE_TASK_ID").count(),
            1
        );
    }

    #[test]
    fn raw_exits_serialize_as_the_documented_json() {
        assert_eq!(
            serde_json::to_string(&RawExit::Code(3)).unwrap(),
            r#"{"code":3}"#
        );
        assert_eq!(
            serde_json::to_string(&RawExit::Signal(9)).unwrap(),
            r#"{"signal":9}"#
        );
    }

    #[test]
    fn an_oom_kill_wins_over_the_raw_exit() {
        assert_eq!(exit_reason(RawExit::Code(137), true), Exit::OomKilled);
        assert_eq!(exit_reason(RawExit::Code(2), false), Exit::Code(2));
        assert_eq!(exit_reason(RawExit::Signal(15), false), Exit::Signal(15));
        assert_eq!(exit_reason(RawExit::Unknown, false), Exit::Unknown);
        assert!(RawExit::Signal(9).looks_sigkilled());
        assert!(!RawExit::Code(1).looks_sigkilled());
    }

    #[test]
    fn bad_specs_are_refused_before_anything_runs() {
        let mut s = spec();
        s.argv.clear();
        assert!(matches!(validate(&s), Err(LaunchError::InvalidSpec(_))));
        let mut s = spec();
        s.task_id = "../etc".into();
        assert!(matches!(validate(&s), Err(LaunchError::InvalidSpec(_))));
        let mut s = spec();
        s.env.push(("A=B".into(), "x".into()));
        assert!(matches!(validate(&s), Err(LaunchError::InvalidSpec(_))));
        let mut s = spec();
        s.argv.push("a\0b".into());
        assert!(matches!(validate(&s), Err(LaunchError::InvalidSpec(_))));
        let mut s = spec();
        s.sandbox = "/nonexistent/bramble/sandbox".into();
        assert!(matches!(validate(&s), Err(LaunchError::InvalidSpec(_))));
        assert!(validate(&spec()).is_ok());
    }

    #[test]
    fn signalling_a_nonsense_process_group_is_refused() {
        for pgid in [-1, 0, 1] {
            let l = Launched {
                supervisor_pid: 1,
                supervisor_start_time: 0,
                task_pgid: pgid,
            };
            assert!(matches!(
                signal(&l, Signal::Kill, None),
                Err(SignalError::InvalidPgid(_))
            ));
        }
    }

    #[test]
    fn a_dead_supervisor_without_a_sound_record_is_adopted_as_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let l = Launched {
            supervisor_pid: i32::MAX,
            supervisor_start_time: 1,
            task_pgid: i32::MAX,
        };
        assert!(matches!(adopt(&l, dir.path()), Adopted::Unknown));
        std::fs::write(dir.path().join(EXIT_FILE), br#"{"signal":15}"#).unwrap();
        assert!(matches!(
            adopt(&l, dir.path()),
            Adopted::Ended(RawExit::Signal(15))
        ));
        std::fs::write(dir.path().join(EXIT_FILE), b"garbage").unwrap();
        assert!(matches!(adopt(&l, dir.path()), Adopted::Unknown));
        std::fs::remove_file(dir.path().join(EXIT_FILE)).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join(EXIT_FILE)).unwrap();
        assert!(matches!(adopt(&l, dir.path()), Adopted::Unknown));
        std::fs::remove_file(dir.path().join(EXIT_FILE)).unwrap();
        nix::unistd::mkfifo(
            &dir.path().join(EXIT_FILE),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        assert!(matches!(adopt(&l, dir.path()), Adopted::Unknown));
    }
}
