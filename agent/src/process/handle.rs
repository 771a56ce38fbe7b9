//! A started or re-adopted task: [`TaskHandle`] waits for its end, [`signal`] signals it, and
//! [`adopt`] takes it back after an agent restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_nostd_core::agent::Signal;
use nix::errno::Errno;
use nix::sys::signal::{self as nixsig, killpg};
use nix::unistd::Pid;

use super::spec::{Launched, RawExit};
use super::EXIT_FILE;
use crate::cgroup::{CgroupError, TaskCgroup};

/// How often an adopted task's supervisor is checked.
const ADOPT_POLL: Duration = Duration::from_millis(250);

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

pub(super) enum Waiter {
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
    pub(super) launched: Launched,
    pub(super) sandbox: PathBuf,
    pub(super) waiter: Waiter,
    pub(super) ended: Option<RawExit>,
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
