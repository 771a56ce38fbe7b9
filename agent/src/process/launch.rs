//! Starting a task: under a new supervisor ([`launch`]), or in a warm [`Spare`] made ready before
//! the task was known.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{self as nixsig, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{ChildStdin, ChildStdout};

use super::handle::{process_start_time, TaskHandle, Waiter};
use super::spec::{request_body, Launched, TaskSpec};
use super::supervisor::{self, Reply};
use super::SUPERVISE_ARG;
use crate::cgroup::TaskCgroup;

/// How long [`launch`] waits for the supervisor's answer.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest answer line the supervisor may send.
const MAX_REPLY: u64 = 64 * 1024;

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
