//! The task's process between `fork` and `exec`: what it needs prepared beforehand
//! ([`ChildPlan`], [`ChildFds`]), the steps it takes, and the message for the step that failed.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::libc;
use nix::unistd::{pipe2, Pid};

use super::Request;
use super::RunAs;

// The steps of the child between fork and exec, as reported through the status pipe.
pub(super) const STEP_PGID: i32 = 1;
pub(super) const STEP_CGROUP: i32 = 2;
pub(super) const STEP_CHDIR: i32 = 3;
pub(super) const STEP_STDIO: i32 = 4;
pub(super) const STEP_CREDENTIALS: i32 = 5;
pub(super) const STEP_EXEC: i32 = 6;
pub(super) const STEP_REQUEST: i32 = 7;

/// Everything the child needs, prepared before `fork`.
pub(super) struct ChildPlan {
    pub(super) program: CString,
    pub(super) argv: Vec<CString>,
    pub(super) env: Vec<CString>,
    pub(super) sandbox: CString,
    /// `(uid, gid, supplementary groups)` to switch to.
    pub(super) run_as: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
}

pub(super) fn cstring(what: &str, bytes: &[u8]) -> Result<CString, String> {
    CString::new(bytes).map_err(|_| format!("{what} contains a NUL byte"))
}

impl ChildPlan {
    pub(super) fn new(req: &Request) -> Result<(ChildPlan, PathBuf), String> {
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
            run_as: req.run_as.as_ref().map(|r| (r.uid, r.gid, r.all_groups())),
        };
        Ok((plan, program))
    }
}

/// The program to `exec`: `argv[0]` if it holds a `/` (relative ones start from the sandbox),
/// else the first executable file of that name in the task's `PATH`.
pub(super) fn resolve_program(req: &Request) -> Result<PathBuf, String> {
    let name = req.argv.first().ok_or("argv is empty")?;
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    let path = req
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or(crate::process::DEFAULT_PATH, |(_, v)| v.as_str());
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

pub(super) fn cloexec_pipe(what: &str) -> Result<(OwnedFd, OwnedFd), String> {
    pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("cannot create the {what} pipe: {e}"))
}

impl ChildPlan {
    /// NULL-terminated pointer arrays for `execve`, into `self`.
    pub(super) fn pointers(&self) -> (Vec<*const libc::c_char>, Vec<*const libc::c_char>) {
        let mut argv: Vec<*const libc::c_char> = self.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut env: Vec<*const libc::c_char> = self.env.iter().map(|e| e.as_ptr()).collect();
        env.push(std::ptr::null());
        (argv, env)
    }
}

pub(super) fn open_devnull() -> Result<File, String> {
    File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("cannot open /dev/null: {e}"))
}

/// The supervisor's ends of a forked task process's pipes.
pub(super) struct Forked {
    pub(super) child: Pid,
    pub(super) status_r: OwnedFd,
    pub(super) out_r: OwnedFd,
    pub(super) err_r: OwnedFd,
}

/// The raw file descriptors the child uses.
#[derive(Clone, Copy)]
pub(super) struct ChildFds<'a> {
    pub(super) devnull: RawFd,
    pub(super) stdout: RawFd,
    pub(super) stderr: RawFd,
    pub(super) status: RawFd,
    pub(super) cgroups: &'a [RawFd],
    /// Whether to call `setpgid(0, 0)` (a warm stub has already).
    pub(super) setpgid: bool,
}

/// The task's side of the fork: never returns.
///
/// # Safety
///
/// Only to be called in the child of a `fork` of a single-threaded process, with pointer arrays
/// that are NULL-terminated and point into `plan`.
pub(super) unsafe fn child_exec(
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
    if let Some((uid, gid, groups)) = &plan.run_as {
        if libc::setgroups(groups.len(), groups.as_ptr()) != 0
            || libc::setgid(*gid) != 0
            || libc::setuid(*uid) != 0
        {
            fail(STEP_CREDENTIALS);
        }
    }
    libc::execve(plan.program.as_ptr(), argv.as_ptr(), env.as_ptr());
    fail(STEP_EXEC)
}

/// Writes a failed step and its `errno` to the status pipe and exits 127.
///
/// # Safety
///
/// As for [`child_exec`].
pub(super) unsafe fn report(status: RawFd, step: i32, errno: i32) -> ! {
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&step.to_le_bytes());
    msg[4..].copy_from_slice(&errno.to_le_bytes());
    libc::write(status, msg.as_ptr().cast(), msg.len());
    libc::_exit(127)
}

/// The message for a failed step reported by the child.
pub(super) fn step_failure(
    msg: &[u8],
    sandbox: &Path,
    program: &Path,
    run_as: Option<&RunAs>,
) -> String {
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
            let (uid, gid) = run_as.map(RunAs::owner).unwrap_or_default();
            format!("cannot switch to uid {uid} gid {gid}: {err}")
        }
        _ => format!("{err}: {}", program.display()),
    }
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
                Some(&RunAs::new(65534, 65534)),
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
}
