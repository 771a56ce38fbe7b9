//! [`TaskCgroup`]: one task's cgroup, to join, read (OOM kills, CPU, memory), kill and remove.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::files::{read_keyed, read_pids, read_u64, write_value};
use super::limits::apply_limits;
use super::{io_err, off_loop, CgroupError, CgroupPaths, Limits};

/// How long [`TaskCgroup::remove`] keeps killing and retrying before it gives up.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How many read-and-kill rounds [`TaskCgroup::kill_all`] does without `cgroup.kill`.
const KILL_ROUNDS: usize = 64;

/// One task's cgroup (one directory per hierarchy on v1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskCgroup {
    pub(super) paths: CgroupPaths,
}

impl TaskCgroup {
    /// Opens an existing task cgroup, e.g. from the checkpoint after an agent restart.
    pub fn open(paths: CgroupPaths) -> Result<TaskCgroup, CgroupError> {
        for dir in paths.dirs() {
            let meta = fs::metadata(dir).map_err(io_err(dir))?;
            if !meta.is_dir() {
                return Err(io_err(dir)(io::Error::from(io::ErrorKind::NotADirectory)));
            }
        }
        Ok(TaskCgroup { paths })
    }

    /// Where it lives: checkpoint this.
    pub fn paths(&self) -> &CgroupPaths {
        &self.paths
    }

    /// Sets a task's limits (a spare's cgroup when it gets its task); cheap writes.
    pub fn set_limits(&self, limits: Limits) -> Result<(), CgroupError> {
        apply_limits(&self.paths, limits)
    }

    /// The file of each hierarchy that a process writes `0` to, between `fork` and `exec`, to
    /// join it: `tasks` on v1, `cgroup.procs` on v2.
    ///
    /// On v1, `tasks` moves only the calling thread, and the kernel then skips its global
    /// `cgroup_threadgroup_rwsem`. Through `cgroup.procs`, the first move after a quiet spell waits
    /// out an RCU grace period while holding `cgroup_mutex`, stalling every other cgroup `mkdir`,
    /// `rmdir` and move on the board: 9–31 ms per join here, against 0.13 ms through `tasks`.
    /// Whoever writes is single-threaded (a warm stub, or a task process just forked by its
    /// supervisor), so its one thread is the whole process.
    pub fn join_paths(&self) -> Vec<PathBuf> {
        let file = match self.paths {
            CgroupPaths::V1 { .. } => "tasks",
            CgroupPaths::V2 { .. } => "cgroup.procs",
        };
        self.paths
            .dirs()
            .into_iter()
            .map(|d| d.join(file))
            .collect()
    }

    /// The processes in it (the union over hierarchies on v1).
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut all = BTreeSet::new();
        for dir in self.paths.dirs() {
            all.extend(read_pids(&dir.join("cgroup.procs"))?);
        }
        Ok(all.into_iter().collect())
    }

    /// Whether no process is left in it. A cgroup that cannot be read counts as empty only if it
    /// is gone.
    pub fn is_empty(&self) -> bool {
        match self.pids() {
            Ok(p) => p.is_empty(),
            Err(CgroupError::Io { source, .. }) => source.kind() == io::ErrorKind::NotFound,
            Err(_) => false,
        }
    }

    /// How many processes the pids controller counts now (`pids.current`).
    pub fn pids_current(&self) -> Option<u64> {
        let dir = match &self.paths {
            CgroupPaths::V2 { dir } => dir,
            CgroupPaths::V1 { pids, .. } => pids,
        };
        read_u64(&dir.join("pids.current"))
    }

    /// Whether the kernel OOM-killed a process in it.
    ///
    /// v2, and v1 on kernels 4.13+: the `oom_kill` counter (`memory.events` / `memory.oom_control`)
    /// is above 0; `ended_by_sigkill` is not needed. Older v1 kernels: the limit was hit
    /// (`memory.failcnt` > 0) and `ended_by_sigkill` (see the [module docs](super)).
    pub fn oom_killed(&self, ended_by_sigkill: bool) -> bool {
        match &self.paths {
            CgroupPaths::V2 { dir } => {
                read_keyed(&dir.join("memory.events"), "oom_kill").is_some_and(|n| n > 0)
            }
            CgroupPaths::V1 { memory, .. } => {
                match read_keyed(&memory.join("memory.oom_control"), "oom_kill") {
                    Some(n) => n > 0,
                    None => {
                        ended_by_sigkill
                            && read_u64(&memory.join("memory.failcnt")).is_some_and(|n| n > 0)
                    }
                }
            }
        }
    }

    /// CPU time used by its processes so far, in nanoseconds (`None` without cpuacct on v1).
    pub fn cpu_usage_ns(&self) -> Option<u64> {
        match &self.paths {
            CgroupPaths::V2 { dir } => {
                read_keyed(&dir.join("cpu.stat"), "usage_usec").map(|us| us.saturating_mul(1000))
            }
            CgroupPaths::V1 { cpuacct, .. } => read_u64(&cpuacct.as_ref()?.join("cpuacct.usage")),
        }
    }

    /// Memory in use now, in bytes.
    pub fn memory_bytes(&self) -> Option<u64> {
        match &self.paths {
            CgroupPaths::V2 { dir } => read_u64(&dir.join("memory.current")),
            CgroupPaths::V1 { memory, .. } => read_u64(&memory.join("memory.usage_in_bytes")),
        }
    }

    /// Sends SIGKILL to every process in it, without waiting for them to go.
    ///
    /// Uses `cgroup.kill` when the kernel has it (v2, 5.14+), which also catches processes being
    /// forked. Otherwise it reads the processes and kills them, round after round, until a read
    /// finds none new: a process with SIGKILL pending cannot fork, so the set only shrinks.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        if let CgroupPaths::V2 { dir } = &self.paths {
            let kill_file = dir.join("cgroup.kill");
            if kill_file.exists() {
                return write_value(&kill_file, "1");
            }
        }
        let mut killed = BTreeSet::new();
        for _ in 0..KILL_ROUNDS {
            let pids = self.pids()?;
            let fresh: Vec<i32> = pids.into_iter().filter(|p| !killed.contains(p)).collect();
            if fresh.is_empty() {
                break;
            }
            for pid in fresh {
                // ESRCH: it ended meanwhile.
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                killed.insert(pid);
            }
        }
        Ok(())
    }

    /// Removes the cgroup: kills whatever is left in it, waits for it to empty and removes its
    /// directories, retrying while the kernel says busy, for up to 5 seconds. Removing a cgroup
    /// that is already gone succeeds.
    pub async fn remove(&self) -> Result<(), CgroupError> {
        let deadline = tokio::time::Instant::now() + REMOVE_TIMEOUT;
        let mut delay = Duration::from_millis(5);
        loop {
            let cgroup = self.clone();
            let round = off_loop(move || {
                if !cgroup.is_empty() {
                    cgroup.kill_all()?;
                }
                cgroup.try_rmdir()
            })
            .await;
            match round {
                Ok(()) => {
                    tracing::debug!(paths = ?self.paths, "task cgroup removed");
                    return Ok(());
                }
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(match e {
                        CgroupError::Io { path, source }
                            if source.raw_os_error() == Some(nix::libc::EBUSY) =>
                        {
                            CgroupError::Busy {
                                path,
                                pids: self.pids().unwrap_or_default(),
                            }
                        }
                        e => e,
                    });
                }
                Err(CgroupError::Io { source, .. })
                    if source.raw_os_error() == Some(nix::libc::EBUSY) => {}
                Err(e) => return Err(e),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    }

    fn try_rmdir(&self) -> Result<(), CgroupError> {
        for dir in self.paths.dirs() {
            match fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(dir)(e)),
            }
        }
        Ok(())
    }
}

/// Opens the files of [`TaskCgroup::join_paths`] for writing, close-on-exec.
pub fn open_join_files(paths: &[PathBuf]) -> Result<Vec<File>, CgroupError> {
    paths
        .iter()
        .map(|p| OpenOptions::new().write(true).open(p).map_err(io_err(p)))
        .collect()
}
