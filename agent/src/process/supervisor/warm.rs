//! Warm mode (`__supervise --warm <join file>…`): the stub is forked into its cgroup before its
//! task is known, then runs the task it is sent like a cold supervisor (see the module docs).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use nix::libc;
use nix::sys::signal::{self, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult};

use super::capture::Outputs;
use super::child::{
    child_exec, cloexec_pipe, open_devnull, report, step_failure, ChildFds, ChildPlan, Forked,
    STEP_CGROUP, STEP_EXEC, STEP_PGID, STEP_REQUEST,
};
use super::{read_request, reply, run_task, Reply, Request, MAX_REQUEST};
use crate::cgroup::open_join_files;

/// How often an unused spare's cgroup directory is tried again while the kernel says busy.
pub(super) const RMDIR_TRIES: usize = 100;

/// The warm supervisor's ends of its stub, besides [`Forked`].
pub(super) struct Stub {
    pub(super) forked: Forked,
    pub(super) ready_r: File,
    pub(super) task_w: OwnedFd,
}

impl Stub {
    /// Kills the stub and reaps it.
    pub(super) fn kill(self) {
        let _ = signal::kill(self.forked.child, Signal::SIGKILL);
        drop(self.task_w);
        let _ = waitpid(self.forked.child, None);
    }
}

/// The raw descriptors a stub uses.
pub(super) struct StubFds<'a> {
    /// The task's, as for a cold child.
    pub(super) task: ChildFds<'a>,
    /// Where it says it is ready.
    pub(super) ready_w: RawFd,
    /// Where its request comes from.
    pub(super) task_r: RawFd,
    /// The supervisor's end of that pipe, which the stub must close.
    pub(super) task_w: RawFd,
}

/// A warm spare (`__supervise --warm <join file>…`): forks the stub into its cgroup, says it is
/// ready, then runs the task it is sent like a cold supervisor (see the module docs).
pub(super) fn supervise_warm(procs: &[PathBuf]) -> ExitCode {
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
pub(super) fn remove_spare_cgroup(procs: &[PathBuf]) {
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
pub(super) fn run_in_stub(req: &Request, stub: Stub) -> Result<(), String> {
    let prepared = ChildPlan::new(req).and_then(|(_, program)| {
        let body = serde_json::to_vec(req).map_err(|e| format!("cannot encode the task: {e}"))?;
        Ok((
            program,
            Outputs::new(&req.sandbox, req.run_as.as_ref())?,
            body,
        ))
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
pub(super) fn fork_stub(procs: &[PathBuf]) -> Result<Stub, String> {
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
pub(super) unsafe fn stub_main(fds: &StubFds<'_>) -> ! {
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
