//! The task supervisor, `bramble-agent __supervise`: one small process per task.
//!
//! # Protocol
//!
//! 0. Warm mode only (`__supervise --warm <join file>…`, a *spare*): before any request, the
//!    supervisor forks the task's process at once (the *stub*, see below) and answers
//!    `{"ready":{"stub_pid":N}}` once the stub has its own process group and has joined the cgroup
//!    files named on the command line (or `{"failed":…}` and exits). It then waits: EOF on stdin
//!    without a request means the agent is gone or retired the spare, so it kills the stub,
//!    removes the (now empty) cgroup directories and exits 0.
//! 1. The agent writes one JSON [`Request`] to the supervisor's stdin and closes it.
//! 2. The supervisor answers one JSON line on stdout, a [`Reply`]: `{"started":{"task_pid":N}}`
//!    once the task's `exec` succeeded, or `{"failed":{"message":"…"}}`, then points its stdin and
//!    stdout at `/dev/null`, so the agent may go away.
//! 3. While the task runs, it copies the task's stdout and stderr into the sandbox's logs, in its
//!    one thread (`poll` on both pipes and a pidfd of the task). When the task has ended it writes
//!    `.exit` in the sandbox and exits 0.
//!
//! # Between fork and exec
//!
//! Everything the task's process needs (C strings, pointer arrays, file descriptors) is prepared
//! before `fork`; the child then only makes async-signal-safe system calls and never allocates.
//! If a step fails, it writes the step and `errno` (8 bytes) to a close-on-exec pipe and exits
//! 127; a successful `exec` closes the pipe, which the supervisor reads as success.
//!
//! In warm mode the stub is forked before the request exists, while the supervisor still has one
//! thread, so the stub may allocate. It points its stdin and stdout at `/dev/null` (the agent's
//! pipes must not outlive the supervisor through it), calls `setpgid(0, 0)`, writes `0` to each
//! join file (`tasks` on v1, `cgroup.procs` on v2, see [`crate::cgroup::TaskCgroup::join_paths`];
//! on v2 the costly first attach, paid before any launch), says so with one byte on a
//! ready pipe, then blocks reading the request from a task pipe. The supervisor forwards the
//! request there once it has checked it; the stub builds its `exec` arguments and goes on with the
//! same steps (sandbox, stdio, credentials, `exec`) and the same status pipe as a cold task. EOF
//! on the task pipe (the supervisor died) makes the stub exit.
//!
//! The supervisor has no log subscriber and its stderr is `/dev/null`: what goes wrong after it
//! answered is appended to the task's captured `stderr` in the sandbox.
//!
//! At start it closes every descriptor it inherited above stderr, so none leaks into the task.
//!
//! # Layout
//!
//! - `mod.rs` (this file): the entry point, the request and reply, and a cold task's run.
//! - `child`: the task's process between `fork` and `exec`, and the steps it reports.
//! - `warm`: warm mode, the stub forked before its task is known.
//! - `capture`: the task's output into its logs, its exit, and the `.exit` record.

mod capture;
mod child;
mod warm;

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nix::libc;
use nix::sys::signal::{self, SigHandler, Signal};
use nix::unistd::{dup2_stdin, dup2_stdout, fork, setsid, ForkResult};
use serde::{Deserialize, Serialize};

use super::spec::RunAs;
use super::STDERR_FILE;
use crate::cgroup::open_join_files;
use capture::{capture_until_exit, pidfd_open, wait_for, write_exit, Capture, Outputs};
use child::{child_exec, cloexec_pipe, step_failure, ChildFds, ChildPlan, Forked};
use warm::supervise_warm;

/// The most bytes of request the supervisor reads.
const MAX_REQUEST: u64 = 4 << 20;

/// What the agent asks the supervisor to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Request {
    pub argv: Vec<String>,
    /// The complete environment of the task.
    pub env: Vec<(String, String)>,
    pub sandbox: PathBuf,
    pub run_as: Option<RunAs>,
    pub log_limit_bytes: u64,
    /// The file of each hierarchy the task joins by writing `0` (`tasks` on v1, `cgroup.procs` on
    /// v2).
    pub cgroup_join: Vec<PathBuf>,
}

/// The supervisor's one answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Reply {
    Started {
        task_pid: i32,
    },
    Failed {
        message: String,
    },
    /// Warm mode: the stub is forked, in its process group and cgroup, waiting for its task.
    Ready {
        stub_pid: i32,
    },
}

/// The hidden option after `__supervise` that starts a warm spare.
pub(crate) const WARM_ARG: &str = "--warm";

/// The supervisor's entry point: `bramble-agent __supervise`, with the request on stdin, or
/// `bramble-agent __supervise --warm <join file>…` for a warm spare.
pub fn supervise_main(args: &[OsString]) -> ExitCode {
    // Our own session (and process group): the agent's death, a terminal hangup or a signal to
    // the agent's group does not reach us. Cannot fail: the agent spawned us in its own group.
    let _ = setsid();
    close_inherited_fds();
    for sig in [Signal::SIGHUP, Signal::SIGINT, Signal::SIGPIPE] {
        // SAFETY: installing SIG_IGN runs no code of ours in signal context.
        let _ = unsafe { signal::signal(sig, SigHandler::SigIgn) };
    }
    if args.first().is_some_and(|a| a == WARM_ARG) {
        let procs: Vec<PathBuf> = args[1..].iter().map(PathBuf::from).collect();
        return supervise_warm(&procs);
    }
    let request = match read_request() {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err("the agent sent no task".to_owned()),
        Err(message) => Err(message),
    };
    let request = match request {
        Ok(r) => r,
        Err(message) => {
            let _ = reply(&Reply::Failed { message });
            return ExitCode::from(1);
        }
    };
    match supervise(&request) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            let _ = reply(&Reply::Failed { message });
            ExitCode::from(1)
        }
    }
}

/// The request on stdin, `None` on EOF without one.
fn read_request() -> Result<Option<Request>, String> {
    let mut buf = Vec::new();
    io::stdin()
        .lock()
        .take(MAX_REQUEST)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read the task from stdin: {e}"))?;
    if buf.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(&buf)
        .map(Some)
        .map_err(|e| format!("cannot decode the task: {e}"))
}

fn reply(r: &Reply) -> io::Result<()> {
    let mut line = serde_json::to_vec(r).map_err(io::Error::other)?;
    line.push(b'\n');
    let mut out = io::stdout().lock();
    out.write_all(&line)?;
    out.flush()
}

/// Records a problem the agent can no longer be told about at the end of the task's captured
/// stderr (beyond its cap: these lines are few and short), where whoever reads the task's logs
/// sees it. The supervisor's own stderr is `/dev/null`: holding the agent's would keep any pipe
/// the agent's stderr is (a test harness, a log collector) open for as long as tasks run.
fn note(sandbox: &Path, message: &str) {
    let file = OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(sandbox.join(STDERR_FILE));
    if let Ok(mut f) = file {
        let _ = writeln!(f, "bramble-agent supervisor: {message}");
    }
}

/// Closes every file descriptor above stderr that the supervisor inherited without
/// close-on-exec (a jobserver pipe, a socket of whoever started the agent): the task must not
/// inherit them, and the supervisor needs none.
fn close_inherited_fds() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    // The directory's own descriptor is closed by now; closing it again is a harmless EBADF.
    for fd in fds {
        // SAFETY: nothing in this process owns these descriptors: it has opened none yet.
        unsafe { libc::close(fd) };
    }
}

fn supervise(req: &Request) -> Result<(), String> {
    let (plan, program) = ChildPlan::new(req)?;
    // Pointer arrays for execve, NULL-terminated, built before fork.
    let (argv_ptrs, env_ptrs) = plan.pointers();

    let cgroup_files = open_join_files(&req.cgroup_join)
        .map_err(|e| format!("cannot open the task's cgroup: {e}"))?;
    let cgroup_fds: Vec<RawFd> = cgroup_files.iter().map(AsRawFd::as_raw_fd).collect();
    let outputs = Outputs::new(&req.sandbox, req.run_as.as_ref())?;
    let (out_r, out_w) = cloexec_pipe("stdout")?;
    let (err_r, err_w) = cloexec_pipe("stderr")?;
    let (status_r, status_w) = cloexec_pipe("status")?;

    let fds = ChildFds {
        devnull: outputs.devnull.as_raw_fd(),
        stdout: out_w.as_raw_fd(),
        stderr: err_w.as_raw_fd(),
        status: status_w.as_raw_fd(),
        cgroups: &cgroup_fds,
        setpgid: true,
    };
    // SAFETY: this process has one thread (the supervisor starts none before this point), and the
    // child only makes async-signal-safe calls on data prepared above, then execs or _exits.
    let child = match unsafe { fork() } {
        Ok(ForkResult::Child) => unsafe { child_exec(&plan, &argv_ptrs, &env_ptrs, &fds) },
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => return Err(format!("cannot fork the task: {e}")),
    };
    // The child's ends: ours must be closed so that EOF means what it should.
    drop((out_w, err_w, status_w, cgroup_files));
    let forked = Forked {
        child,
        status_r,
        out_r,
        err_r,
    };
    run_task(req, &program, forked, outputs)
}

/// Waits for the forked task's `exec`, answers the agent, captures the task's output and records
/// its exit.
fn run_task(req: &Request, program: &Path, task: Forked, outputs: Outputs) -> Result<(), String> {
    let Forked {
        child,
        status_r,
        out_r,
        err_r,
    } = task;
    let Outputs {
        stdout_log,
        stderr_log,
        devnull,
    } = outputs;
    let mut status = Vec::with_capacity(8);
    let _ = File::from(status_r).read_to_end(&mut status);
    if !status.is_empty() {
        let _ = wait_for(child, &req.sandbox);
        return Err(step_failure(
            &status,
            &req.sandbox,
            program,
            req.run_as.as_ref(),
        ));
    }

    if let Err(e) = reply(&Reply::Started {
        task_pid: child.as_raw(),
    }) {
        // The agent is gone before it learned of the task: nobody would ever watch it.
        note(
            &req.sandbox,
            &format!("cannot answer the agent ({e}); killing the task"),
        );
        let _ = signal::killpg(child, Signal::SIGKILL);
        let _ = wait_for(child, &req.sandbox);
        return Ok(());
    }
    // Let go of the agent's pipes.
    let _ = dup2_stdin(&devnull);
    let _ = dup2_stdout(&devnull);
    drop(devnull);

    let logs = [
        Capture::new(out_r, stdout_log, req.log_limit_bytes),
        Capture::new(err_r, stderr_log, req.log_limit_bytes),
    ];
    let raw = capture_until_exit(child, &req.sandbox, logs, pidfd_open(child));
    if let Err(e) = write_exit(&req.sandbox, raw) {
        note(&req.sandbox, &format!("cannot record the task's exit: {e}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_have_the_documented_shape() {
        assert_eq!(
            serde_json::to_string(&Reply::Started { task_pid: 42 }).unwrap(),
            r#"{"started":{"task_pid":42}}"#
        );
        assert_eq!(
            serde_json::to_string(&Reply::Failed {
                message: "x".into()
            })
            .unwrap(),
            r#"{"failed":{"message":"x"}}"#
        );
    }
}
