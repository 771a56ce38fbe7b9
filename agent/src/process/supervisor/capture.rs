//! The task's output copied into its logs (up to a cap, the rest drained), its exit reaped, and
//! the `.exit` record written.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::libc;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::child::open_devnull;
use super::note;
use super::RunAs;
use crate::process::{RawExit, EXIT_FILE, STDERR_FILE, STDOUT_FILE};

/// How often the task's exit is checked on kernels without pidfds (before 5.3).
pub(super) const EXIT_CHECK: Duration = Duration::from_millis(50);

/// How long the supervisor waits for the output pipes to drain after the task ended.
pub(super) const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// What the task's output goes to, prepared before it runs.
pub(super) struct Outputs {
    pub(super) stdout_log: File,
    pub(super) stderr_log: File,
    pub(super) devnull: File,
}

impl Outputs {
    /// Creates the logs in `sandbox`, owned by the task's user when it has one (so the task can
    /// read its own output; the supervisor writes through the descriptors it holds).
    pub(super) fn new(sandbox: &Path, run_as: Option<&RunAs>) -> Result<Outputs, String> {
        let outputs = Outputs {
            stdout_log: create_log(sandbox, STDOUT_FILE)?,
            stderr_log: create_log(sandbox, STDERR_FILE)?,
            devnull: open_devnull()?,
        };
        if let Some((uid, gid)) = run_as.map(RunAs::owner) {
            for (log, name) in [
                (&outputs.stdout_log, STDOUT_FILE),
                (&outputs.stderr_log, STDERR_FILE),
            ] {
                std::os::unix::fs::fchown(log, Some(uid), Some(gid))
                    .map_err(|e| format!("cannot give {name} to uid {uid}: {e}"))?;
            }
        }
        Ok(outputs)
    }
}

pub(super) fn create_log(sandbox: &Path, name: &str) -> Result<File, String> {
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

/// Waits for the task's first process and reaps it.
pub(super) fn wait_for(child: Pid, sandbox: &Path) -> RawExit {
    loop {
        if let Some(raw) = reap(child, sandbox, None) {
            return raw;
        }
    }
}

/// The task's exit if it has ended (and reaps it), without blocking.
pub(super) fn try_wait(child: Pid, sandbox: &Path) -> Option<RawExit> {
    reap(child, sandbox, Some(WaitPidFlag::WNOHANG))
}

/// One `waitpid` with `flags`: the exit, or `None` when the task has not ended (or the call was
/// interrupted). An error is noted in the task's stderr and counts as an unknown exit.
pub(super) fn reap(child: Pid, sandbox: &Path, flags: Option<WaitPidFlag>) -> Option<RawExit> {
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
pub(super) struct Capture {
    pub(super) pipe: Option<File>,
    pub(super) log: File,
    pub(super) cap: u64,
    pub(super) written: u64,
    /// Cleared when a write fails (a full disk): the pipe is still drained.
    pub(super) writable: bool,
}

impl Capture {
    pub(super) fn new(pipe: OwnedFd, log: File, cap: u64) -> Capture {
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
    pub(super) fn pump(&mut self, buf: &mut [u8]) {
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
pub(super) fn pidfd_open(child: Pid) -> Option<OwnedFd> {
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
pub(super) fn capture_until_exit(
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
pub(super) fn write_exit(sandbox: &Path, raw: RawExit) -> io::Result<()> {
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
    use nix::sys::signal::{self, Signal};

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
}
