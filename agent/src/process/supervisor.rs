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

use std::ffi::{CString, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::libc;
use nix::sys::signal::{self, SigHandler, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{dup2_stdin, dup2_stdout, fork, pipe2, setsid, ForkResult, Pid};
use serde::{Deserialize, Serialize};

use super::{RawExit, EXIT_FILE, STDERR_FILE, STDOUT_FILE};
use crate::cgroup::open_join_files;

/// The most bytes of request the supervisor reads.
const MAX_REQUEST: u64 = 4 << 20;
/// How often the task's exit is checked on kernels without pidfds (before 5.3).
const EXIT_CHECK: Duration = Duration::from_millis(50);
/// How often an unused spare's cgroup directory is tried again while the kernel says busy.
const RMDIR_TRIES: usize = 100;
/// How long the supervisor waits for the output pipes to drain after the task ended.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// What the agent asks the supervisor to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Request {
    pub argv: Vec<String>,
    /// The complete environment of the task.
    pub env: Vec<(String, String)>,
    pub sandbox: PathBuf,
    pub run_as: Option<(u32, u32)>,
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

// The steps of the child between fork and exec, as reported through the status pipe.
const STEP_PGID: i32 = 1;
const STEP_CGROUP: i32 = 2;
const STEP_CHDIR: i32 = 3;
const STEP_STDIO: i32 = 4;
const STEP_CREDENTIALS: i32 = 5;
const STEP_EXEC: i32 = 6;
const STEP_REQUEST: i32 = 7;

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

/// Everything the child needs, prepared before `fork`.
struct ChildPlan {
    program: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    sandbox: CString,
    run_as: Option<(u32, u32)>,
}

fn cstring(what: &str, bytes: &[u8]) -> Result<CString, String> {
    CString::new(bytes).map_err(|_| format!("{what} contains a NUL byte"))
}

impl ChildPlan {
    fn new(req: &Request) -> Result<(ChildPlan, PathBuf), String> {
        let program = resolve_program(req)?;
        let plan = ChildPlan {
            program: cstring("the program path", program.as_os_str().as_bytes())?,
            argv: req
                .argv
                .iter()
                .map(|a| cstring("an argument", a.as_bytes()))
                .collect::<Result<_, _>>()?,
            env: req
                .env
                .iter()
                .map(|(k, v)| cstring("an environment variable", format!("{k}={v}").as_bytes()))
                .collect::<Result<_, _>>()?,
            sandbox: cstring("the sandbox path", req.sandbox.as_os_str().as_bytes())?,
            run_as: req.run_as,
        };
        Ok((plan, program))
    }
}

/// The program to `exec`: `argv[0]` if it holds a `/` (relative ones start from the sandbox),
/// else the first executable file of that name in the task's `PATH`.
fn resolve_program(req: &Request) -> Result<PathBuf, String> {
    let name = req.argv.first().ok_or("argv is empty")?;
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    let path = req
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or(super::DEFAULT_PATH, |(_, v)| v.as_str());
    for dir in path.split(':') {
        let dir = if dir.is_empty() {
            req.sandbox.clone()
        } else {
            PathBuf::from(dir)
        };
        let candidate = dir.join(name);
        let executable = std::fs::metadata(&candidate)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if executable {
            return Ok(candidate);
        }
    }
    Err(format!(
        "{}: {name}",
        io::Error::from_raw_os_error(libc::ENOENT)
    ))
}

fn create_log(sandbox: &Path, name: &str) -> Result<File, String> {
    let path = sandbox.join(name);
    // No symlink is followed: the sandbox may belong to the task's user, we are root.
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

fn cloexec_pipe(what: &str) -> Result<(OwnedFd, OwnedFd), String> {
    pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("cannot create the {what} pipe: {e}"))
}

impl ChildPlan {
    /// NULL-terminated pointer arrays for `execve`, into `self`.
    fn pointers(&self) -> (Vec<*const libc::c_char>, Vec<*const libc::c_char>) {
        let mut argv: Vec<*const libc::c_char> = self.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut env: Vec<*const libc::c_char> = self.env.iter().map(|e| e.as_ptr()).collect();
        env.push(std::ptr::null());
        (argv, env)
    }
}

fn open_devnull() -> Result<File, String> {
    File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("cannot open /dev/null: {e}"))
}

/// The supervisor's ends of a forked task process's pipes.
struct Forked {
    child: Pid,
    status_r: OwnedFd,
    out_r: OwnedFd,
    err_r: OwnedFd,
}

/// What the task's output goes to, prepared before it runs.
struct Outputs {
    stdout_log: File,
    stderr_log: File,
    devnull: File,
}

impl Outputs {
    fn new(sandbox: &Path) -> Result<Outputs, String> {
        Ok(Outputs {
            stdout_log: create_log(sandbox, STDOUT_FILE)?,
            stderr_log: create_log(sandbox, STDERR_FILE)?,
            devnull: open_devnull()?,
        })
    }
}

fn supervise(req: &Request) -> Result<(), String> {
    let (plan, program) = ChildPlan::new(req)?;
    // Pointer arrays for execve, NULL-terminated, built before fork.
    let (argv_ptrs, env_ptrs) = plan.pointers();

    let cgroup_files = open_join_files(&req.cgroup_join)
        .map_err(|e| format!("cannot open the task's cgroup: {e}"))?;
    let cgroup_fds: Vec<RawFd> = cgroup_files.iter().map(AsRawFd::as_raw_fd).collect();
    let outputs = Outputs::new(&req.sandbox)?;
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

/// The warm supervisor's ends of its stub, besides [`Forked`].
struct Stub {
    forked: Forked,
    ready_r: File,
    task_w: OwnedFd,
}

impl Stub {
    /// Kills the stub and reaps it.
    fn kill(self) {
        let _ = signal::kill(self.forked.child, Signal::SIGKILL);
        drop(self.task_w);
        let _ = waitpid(self.forked.child, None);
    }
}

/// The raw descriptors a stub uses.
struct StubFds<'a> {
    /// The task's, as for a cold child.
    task: ChildFds<'a>,
    /// Where it says it is ready.
    ready_w: RawFd,
    /// Where its request comes from.
    task_r: RawFd,
    /// The supervisor's end of that pipe, which the stub must close.
    task_w: RawFd,
}

/// A warm spare (`__supervise --warm <join file>…`): forks the stub into its cgroup, says it is
/// ready, then runs the task it is sent like a cold supervisor (see the module docs).
fn supervise_warm(procs: &[PathBuf]) -> ExitCode {
    let stub = match fork_stub(procs) {
        Ok(stub) => stub,
        Err(message) => {
            let _ = reply(&Reply::Failed { message });
            return ExitCode::from(1);
        }
    };
    let mut byte = [0u8; 1];
    let ready = (&stub.ready_r).read(&mut byte).is_ok_and(|n| n == 1);
    if !ready {
        // The stub failed a step and exited: its status pipe says which.
        let mut status = Vec::with_capacity(8);
        let _ = File::from(stub.forked.status_r).read_to_end(&mut status);
        let _ = waitpid(stub.forked.child, None);
        let message = step_failure(&status, Path::new("?"), Path::new("?"), None);
        let _ = reply(&Reply::Failed { message });
        return ExitCode::from(1);
    }
    if reply(&Reply::Ready {
        stub_pid: stub.forked.child.as_raw(),
    })
    .is_err()
    {
        // The agent went while the spare was being prepared.
        stub.kill();
        remove_spare_cgroup(procs);
        return ExitCode::from(1);
    }
    let req = match read_request() {
        Ok(Some(req)) => req,
        // The agent is gone, or retired its spare: the spare's cgroup goes with it.
        Ok(None) => {
            stub.kill();
            remove_spare_cgroup(procs);
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            stub.kill();
            let _ = reply(&Reply::Failed { message });
            return ExitCode::from(1);
        }
    };
    match run_in_stub(&req, stub) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            let _ = reply(&Reply::Failed { message });
            ExitCode::from(1)
        }
    }
}

/// Removes the directories of an unused spare's cgroup (its stub is reaped, so it is empty). A
/// directory that is not empty or already gone is left to the agent (which removes leftover spare
/// cgroups at start).
fn remove_spare_cgroup(procs: &[PathBuf]) {
    for dir in procs.iter().filter_map(|p| p.parent()) {
        // The kernel may still count the reaped stub for a moment (EBUSY): retry briefly.
        for _ in 0..RMDIR_TRIES {
            match std::fs::remove_dir(dir) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                _ => break,
            }
        }
    }
}

/// Checks the request as a cold supervisor would before its fork, hands it to the stub and
/// supervises the task.
fn run_in_stub(req: &Request, stub: Stub) -> Result<(), String> {
    let prepared = ChildPlan::new(req).and_then(|(_, program)| {
        let body = serde_json::to_vec(req).map_err(|e| format!("cannot encode the task: {e}"))?;
        Ok((program, Outputs::new(&req.sandbox)?, body))
    });
    let (program, outputs, body) = match prepared {
        Ok(p) => p,
        Err(message) => {
            stub.kill();
            return Err(message);
        }
    };
    let Stub {
        forked,
        ready_r,
        task_w,
    } = stub;
    drop(ready_r);
    let mut task_w = File::from(task_w);
    if let Err(e) = task_w.write_all(&body) {
        let _ = signal::kill(forked.child, Signal::SIGKILL);
        let _ = waitpid(forked.child, None);
        return Err(format!("the spare's task process is gone: {e}"));
    }
    drop(task_w);
    run_task(req, &program, forked, outputs)
}

/// Forks the stub of a warm spare; see the module docs.
fn fork_stub(procs: &[PathBuf]) -> Result<Stub, String> {
    let cgroup_files =
        open_join_files(procs).map_err(|e| format!("cannot open the spare's cgroup: {e}"))?;
    let cgroup_fds: Vec<RawFd> = cgroup_files.iter().map(AsRawFd::as_raw_fd).collect();
    let devnull = open_devnull()?;
    let (out_r, out_w) = cloexec_pipe("stdout")?;
    let (err_r, err_w) = cloexec_pipe("stderr")?;
    let (status_r, status_w) = cloexec_pipe("status")?;
    let (ready_r, ready_w) = cloexec_pipe("ready")?;
    let (task_r, task_w) = cloexec_pipe("task")?;
    let fds = StubFds {
        task: ChildFds {
            devnull: devnull.as_raw_fd(),
            stdout: out_w.as_raw_fd(),
            stderr: err_w.as_raw_fd(),
            status: status_w.as_raw_fd(),
            cgroups: &cgroup_fds,
            setpgid: true,
        },
        ready_w: ready_w.as_raw_fd(),
        task_r: task_r.as_raw_fd(),
        task_w: task_w.as_raw_fd(),
    };
    // SAFETY: this process has one thread (the supervisor starts none before this point), so the
    // stub may allocate; it never returns.
    let child = match unsafe { fork() } {
        Ok(ForkResult::Child) => unsafe { stub_main(&fds) },
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => return Err(format!("cannot fork the spare's task process: {e}")),
    };
    drop((
        out_w,
        err_w,
        status_w,
        ready_w,
        task_r,
        cgroup_files,
        devnull,
    ));
    Ok(Stub {
        forked: Forked {
            child,
            status_r,
            out_r,
            err_r,
        },
        ready_r: File::from(ready_r),
        task_w,
    })
}

/// The stub's side of the fork: joins its group and cgroup, waits for its task and execs it.
///
/// # Safety
///
/// Only to be called in the child of a `fork` of a single-threaded process.
unsafe fn stub_main(fds: &StubFds<'_>) -> ! {
    use std::os::fd::FromRawFd as _;
    // Let go of the supervisor's end of the task pipe (or EOF never comes) and of the agent's
    // pipes (the agent must see EOF when the supervisor dies).
    libc::close(fds.task_w);
    libc::dup2(fds.task.devnull, 0);
    libc::dup2(fds.task.devnull, 1);
    if libc::setpgid(0, 0) != 0 {
        report(fds.task.status, STEP_PGID, nix::errno::Errno::last_raw());
    }
    for &fd in fds.task.cgroups {
        if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
            report(fds.task.status, STEP_CGROUP, nix::errno::Errno::last_raw());
        }
        libc::close(fd);
    }
    libc::write(fds.ready_w, b"R".as_ptr().cast(), 1);
    libc::close(fds.ready_w);
    let mut body = Vec::new();
    let read = File::from_raw_fd(fds.task_r)
        .take(MAX_REQUEST)
        .read_to_end(&mut body);
    if read.is_err() || body.is_empty() {
        // The supervisor is gone, or retired us.
        libc::_exit(0);
    }
    let Ok(req) = serde_json::from_slice::<Request>(&body) else {
        report(fds.task.status, STEP_REQUEST, libc::EINVAL)
    };
    let Ok((plan, _)) = ChildPlan::new(&req) else {
        report(fds.task.status, STEP_EXEC, libc::ENOENT)
    };
    let (argv, env) = plan.pointers();
    let task = ChildFds {
        cgroups: &[],
        setpgid: false,
        ..fds.task
    };
    child_exec(&plan, &argv, &env, &task)
}

/// Writes a failed step and its `errno` to the status pipe and exits 127.
///
/// # Safety
///
/// As for [`child_exec`].
unsafe fn report(status: RawFd, step: i32, errno: i32) -> ! {
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&step.to_le_bytes());
    msg[4..].copy_from_slice(&errno.to_le_bytes());
    libc::write(status, msg.as_ptr().cast(), msg.len());
    libc::_exit(127)
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
        return Err(step_failure(&status, &req.sandbox, program, req.run_as));
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

/// The raw file descriptors the child uses.
#[derive(Clone, Copy)]
struct ChildFds<'a> {
    devnull: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    status: RawFd,
    cgroups: &'a [RawFd],
    /// Whether to call `setpgid(0, 0)` (a warm stub has already).
    setpgid: bool,
}

/// The task's side of the fork: never returns.
///
/// # Safety
///
/// Only to be called in the child of a `fork` of a single-threaded process, with pointer arrays
/// that are NULL-terminated and point into `plan`.
unsafe fn child_exec(
    plan: &ChildPlan,
    argv: &[*const libc::c_char],
    env: &[*const libc::c_char],
    fds: &ChildFds<'_>,
) -> ! {
    let fail = |step: i32| -> ! { report(fds.status, step, nix::errno::Errno::last_raw()) };
    // Signals: the task starts with nothing blocked and default dispositions for those the
    // supervisor ignores (ignored dispositions would survive exec).
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGPIPE] {
        libc::signal(sig, libc::SIG_DFL);
    }
    if fds.setpgid && libc::setpgid(0, 0) != 0 {
        fail(STEP_PGID);
    }
    for &fd in fds.cgroups {
        if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
            fail(STEP_CGROUP);
        }
    }
    if libc::chdir(plan.sandbox.as_ptr()) != 0 {
        fail(STEP_CHDIR);
    }
    if libc::dup2(fds.devnull, 0) < 0
        || libc::dup2(fds.stdout, 1) < 0
        || libc::dup2(fds.stderr, 2) < 0
    {
        fail(STEP_STDIO);
    }
    if let Some((uid, gid)) = plan.run_as {
        let groups = [gid as libc::gid_t];
        if libc::setgroups(1, groups.as_ptr()) != 0
            || libc::setgid(gid as libc::gid_t) != 0
            || libc::setuid(uid as libc::uid_t) != 0
        {
            fail(STEP_CREDENTIALS);
        }
    }
    libc::execve(plan.program.as_ptr(), argv.as_ptr(), env.as_ptr());
    fail(STEP_EXEC)
}

/// The message for a failed step reported by the child.
fn step_failure(msg: &[u8], sandbox: &Path, program: &Path, run_as: Option<(u32, u32)>) -> String {
    let (Ok(step), Ok(errno)) = (
        msg.get(..4).map_or(Err(()), |b| {
            Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        }),
        msg.get(4..8).map_or(Err(()), |b| {
            Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        }),
    ) else {
        return "the task's process failed before exec".to_owned();
    };
    let err = io::Error::from_raw_os_error(errno);
    match step {
        STEP_PGID => format!("cannot give the task its own process group: {err}"),
        STEP_CGROUP => format!("cannot move the task into its cgroup: {err}"),
        STEP_REQUEST => format!("the task's process could not read its task: {err}"),
        STEP_CHDIR => format!("cannot enter the sandbox {}: {err}", sandbox.display()),
        STEP_STDIO => format!("cannot redirect the task's output: {err}"),
        STEP_CREDENTIALS => {
            let (uid, gid) = run_as.unwrap_or_default();
            format!("cannot switch to uid {uid} gid {gid}: {err}")
        }
        _ => format!("{err}: {}", program.display()),
    }
}

/// Waits for the task's first process and reaps it.
fn wait_for(child: Pid, sandbox: &Path) -> RawExit {
    loop {
        if let Some(raw) = reap(child, sandbox, None) {
            return raw;
        }
    }
}

/// The task's exit if it has ended (and reaps it), without blocking.
fn try_wait(child: Pid, sandbox: &Path) -> Option<RawExit> {
    reap(child, sandbox, Some(WaitPidFlag::WNOHANG))
}

/// One `waitpid` with `flags`: the exit, or `None` when the task has not ended (or the call was
/// interrupted). An error is noted in the task's stderr and counts as an unknown exit.
fn reap(child: Pid, sandbox: &Path, flags: Option<WaitPidFlag>) -> Option<RawExit> {
    match waitpid(child, flags) {
        Ok(WaitStatus::Exited(_, code)) => Some(RawExit::Code(code)),
        Ok(WaitStatus::Signaled(_, sig, _)) => Some(RawExit::Signal(sig as i32)),
        Ok(_) | Err(nix::errno::Errno::EINTR) => None,
        Err(e) => {
            note(sandbox, &format!("cannot wait for the task: {e}"));
            Some(RawExit::Unknown)
        }
    }
}

/// One output pipe of the task and its log file: up to `cap` bytes are kept, the rest is read and
/// discarded, so the task never blocks on a full pipe.
struct Capture {
    pipe: Option<File>,
    log: File,
    cap: u64,
    written: u64,
    /// Cleared when a write fails (a full disk): the pipe is still drained.
    writable: bool,
}

impl Capture {
    fn new(pipe: OwnedFd, log: File, cap: u64) -> Capture {
        Capture {
            pipe: Some(File::from(pipe)),
            log,
            cap,
            written: 0,
            writable: true,
        }
    }

    /// Reads what the pipe has (it was reported readable, so this does not block) and keeps what
    /// fits. EOF or an error closes the pipe.
    fn pump(&mut self, buf: &mut [u8]) {
        let Some(pipe) = &mut self.pipe else {
            return;
        };
        let n = match pipe.read(buf) {
            Ok(0) => {
                self.pipe = None;
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            Err(_) => {
                self.pipe = None;
                return;
            }
        };
        let room = usize::try_from(self.cap.saturating_sub(self.written)).unwrap_or(usize::MAX);
        let take = n.min(room);
        if self.writable && take > 0 {
            self.writable = self.log.write_all(&buf[..take]).is_ok();
            self.written += take as u64;
        }
    }
}

/// A pidfd for `child`: readable once it has exited. `None` on kernels before 5.3.
fn pidfd_open(child: Pid) -> Option<OwnedFd> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: a plain system call; on success the descriptor is new and ours alone.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.as_raw(), 0) };
    let fd = RawFd::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: see above.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Copies the task's output into its logs and waits for its end, all in this one thread (no
/// copier threads: a supervisor per task stays one small single-threaded process). It `poll`s
/// both pipes and `pidfd`, the task's; without one (kernels before 5.3) it checks for the exit
/// every [`EXIT_CHECK`] instead. Once the task has ended, processes it left behind may hold the
/// pipes open, so they are drained for [`DRAIN_TIMEOUT`] at most.
fn capture_until_exit(
    child: Pid,
    sandbox: &Path,
    mut logs: [Capture; 2],
    pidfd: Option<OwnedFd>,
) -> RawExit {
    let mut buf = [0u8; 8192];
    // The task's exit once known, and until when the pipes are still drained after it.
    let mut ended: Option<(RawExit, Instant)> = None;
    // Both pipes, then the pidfd. A closed pipe, or the pidfd once the task is reaped, gets -1,
    // which `poll` skips.
    let mut fds = [libc::pollfd {
        fd: -1,
        events: libc::POLLIN,
        revents: 0,
    }; 3];
    loop {
        let open = logs.iter().any(|l| l.pipe.is_some());
        match ended {
            Some((raw, until)) if !open || Instant::now() >= until => return raw,
            // Nothing left to copy: just wait.
            None if !open && pidfd.is_none() => return wait_for(child, sandbox),
            _ => {}
        }
        for (pfd, log) in fds.iter_mut().zip(&logs) {
            pfd.fd = log.pipe.as_ref().map_or(-1, AsRawFd::as_raw_fd);
        }
        fds[2].fd = match (&pidfd, ended) {
            (Some(fd), None) => fd.as_raw_fd(),
            _ => -1,
        };
        let timeout = match (ended, &pidfd) {
            (Some((_, until)), _) => until.saturating_duration_since(Instant::now()),
            (None, None) => EXIT_CHECK,
            (None, Some(_)) => Duration::MAX,
        };
        let timeout_ms = i32::try_from(timeout.as_millis()).map_or(-1, |ms| ms.max(1));
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds for the duration of the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // Cannot happen with valid descriptors; fall back to plain waiting.
            note(sandbox, &format!("cannot poll the task's output: {e}"));
            return ended.map_or_else(|| wait_for(child, sandbox), |(raw, _)| raw);
        }
        for (pfd, log) in fds.iter().zip(&mut logs) {
            if pfd.revents != 0 {
                log.pump(&mut buf);
            }
        }
        if ended.is_none() {
            let raw = match &pidfd {
                // Readable: the task has exited, and this reaps it at once.
                Some(_) => (fds[2].revents != 0).then(|| wait_for(child, sandbox)),
                None => try_wait(child, sandbox),
            };
            ended = raw.map(|raw| (raw, Instant::now() + DRAIN_TIMEOUT));
        }
    }
}

/// Writes `.exit` atomically: a temporary file renamed over it.
///
/// Not fsynced: the record only has to outlive an agent restart (the page cache does), because the
/// agent checkpoints the terminal state itself, with fsync, before it reports it. Two flushes per
/// task saved are two fewer journal commits on a Pi's SD card, and less contention for the next
/// launch's checkpoint.
///
/// The task has been able to write its sandbox, so whatever it left at the temporary name
/// (a symlink to `/etc/passwd`, say) is removed and the file is created anew, never followed.
fn write_exit(sandbox: &Path, raw: RawExit) -> io::Result<()> {
    let tmp = sandbox.join(".exit.tmp");
    let body = serde_json::to_vec(&raw).map_err(io::Error::other)?;
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(&body)?;
    }
    std::fs::rename(&tmp, sandbox.join(EXIT_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(argv0: &str, path: Option<&str>) -> Request {
        Request {
            argv: vec![argv0.into()],
            env: path
                .map(|p| vec![("PATH".to_owned(), p.to_owned())])
                .unwrap_or_default(),
            sandbox: "/tmp".into(),
            run_as: None,
            log_limit_bytes: 0,
            cgroup_join: vec![],
        }
    }

    #[test]
    fn program_names_are_looked_up_in_the_tasks_path() {
        let found = resolve_program(&request("sh", Some("/nonexistent:/bin:/usr/bin"))).unwrap();
        assert!(found.ends_with("sh"), "{found:?}");
        assert_eq!(
            resolve_program(&request("./run", None)).unwrap(),
            PathBuf::from("./run")
        );
        assert_eq!(
            resolve_program(&request("no-such-program-xyz", None)).unwrap_err(),
            "No such file or directory (os error 2): no-such-program-xyz"
        );
    }

    #[test]
    fn step_failures_name_the_step_and_the_error() {
        let msg = |step: i32, errno: i32| {
            let mut m = step.to_le_bytes().to_vec();
            m.extend(errno.to_le_bytes());
            step_failure(
                &m,
                Path::new("/sb"),
                Path::new("/usr/bin/nope"),
                Some((65534, 65534)),
            )
        };
        assert_eq!(
            msg(STEP_EXEC, libc::ENOENT),
            "No such file or directory (os error 2): /usr/bin/nope"
        );
        assert!(msg(STEP_CHDIR, libc::EACCES).starts_with("cannot enter the sandbox /sb"));
        assert!(msg(STEP_CREDENTIALS, libc::EPERM).contains("uid 65534"));
        assert_eq!(
            step_failure(b"abc", Path::new("/"), Path::new("/x"), None),
            "the task's process failed before exec"
        );
    }

    /// Runs `script` with piped output and captures it as the supervisor does, with a pidfd or
    /// without (the fallback for old kernels); returns the exit and the two logs.
    fn capture(script: &str, cap: u64, with_pidfd: bool) -> (RawExit, Vec<u8>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::process::CommandExt as _;
        let child = std::process::Command::new("sh")
            .args(["-c", script])
            .process_group(0)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        let mut child = child;
        let out = OwnedFd::from(child.stdout.take().unwrap());
        let err = OwnedFd::from(child.stderr.take().unwrap());
        let (out_log, err_log) = (dir.path().join("out"), dir.path().join("err"));
        let logs = [
            Capture::new(out, File::create(&out_log).unwrap(), cap),
            Capture::new(err, File::create(&err_log).unwrap(), cap),
        ];
        let pidfd = if with_pidfd { pidfd_open(pid) } else { None };
        assert_eq!(pidfd.is_some(), with_pidfd, "this kernel has pidfds");
        let raw = capture_until_exit(pid, dir.path(), logs, pidfd);
        // What the script left behind goes too.
        let _ = signal::killpg(pid, Signal::SIGKILL);
        (
            raw,
            std::fs::read(out_log).unwrap(),
            std::fs::read(err_log).unwrap(),
        )
    }

    #[test]
    fn output_beyond_the_cap_is_read_and_dropped_and_both_pipes_are_captured() {
        for with_pidfd in [true, false] {
            let script = "head -c 200000 /dev/zero; echo oops >&2; exit 3";
            let (raw, out, err) = capture(script, 12_345, with_pidfd);
            assert_eq!(raw, RawExit::Code(3));
            assert_eq!(out.len(), 12_345, "capped (pidfd: {with_pidfd})");
            assert_eq!(err, b"oops\n");
        }
    }

    #[test]
    fn a_task_killed_by_a_signal_is_recorded_as_that_signal() {
        for with_pidfd in [true, false] {
            let (raw, ..) = capture("echo start; kill -9 $$", 1024, with_pidfd);
            assert_eq!(raw, RawExit::Signal(9), "pidfd: {with_pidfd}");
        }
    }

    #[test]
    fn a_process_left_holding_the_pipes_delays_the_record_by_the_drain_time_only() {
        let started = Instant::now();
        // The background `sleep` keeps both pipes open long after the task itself exits.
        let (raw, out, _) = capture("sleep 30 & echo bye; exit 5", 1024, true);
        assert_eq!(raw, RawExit::Code(5));
        assert_eq!(out, b"bye\n");
        let took = started.elapsed();
        assert!(
            took >= DRAIN_TIMEOUT && took < Duration::from_secs(10),
            "{took:?}"
        );
    }

    #[test]
    fn the_exit_record_is_written_atomically_as_json() {
        let dir = tempfile::tempdir().unwrap();
        write_exit(dir.path(), RawExit::Code(4)).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(EXIT_FILE)).unwrap(),
            r#"{"code":4}"#
        );
        assert!(!dir.path().join(".exit.tmp").exists());
    }

    #[test]
    fn a_symlink_planted_by_the_task_is_not_followed_when_recording_the_exit() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let sandbox = dir.path().join("sandbox");
        std::fs::create_dir(&sandbox).unwrap();
        std::os::unix::fs::symlink(&victim, sandbox.join(".exit.tmp")).unwrap();
        std::os::unix::fs::symlink(&victim, sandbox.join(STDOUT_FILE)).unwrap();
        write_exit(&sandbox, RawExit::Signal(9)).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(
            std::fs::read_to_string(sandbox.join(EXIT_FILE)).unwrap(),
            r#"{"signal":9}"#
        );
        assert!(create_log(&sandbox, STDOUT_FILE).is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }

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
