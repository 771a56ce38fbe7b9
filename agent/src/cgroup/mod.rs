//! Per-task cgroups, v1 and v2, and detection of what the board offers.
//!
//! [`Isolation::setup`] looks at a cgroup filesystem root (normally `/sys/fs/cgroup`) and at the
//! agent's own `/proc/self/cgroup`, prepares the agent's part of the tree and says which kind of
//! isolation the agent can give its tasks. [`Isolation::create_task`] then makes one [`TaskCgroup`]
//! per task with its CPU, memory and process limits.
//!
//! # Usage
//!
//! ```text
//! start:    iso = Isolation::from_system()          advertise isolation=<iso.isolation_attribute()>
//! launch:   cg = iso.create_task(fw, task, limits)? Option<TaskCgroup>; checkpoint cg.paths()
//!           process::launch(&spec, cg.as_ref(), exe)
//! kill:     process::signal(&launched, Signal::Kill, cg.as_ref())
//! exit:     exit = process::task_exit(raw, cg.as_ref()); then cg.remove().await
//! restart:  cg = iso.open_task(checkpointed_paths)?
//!           for cg in iso.stale_spare_cgroups(agent_id, &kept): cg.remove().await
//! spare:    cg = iso.create_spare(agent_id)?           no limits; a warm stub joins it early
//!           on launch: cg.set_limits(limits)?           then checkpoint cg.paths() as usual
//! ```
//!
//! # Spare cgroups
//!
//! A warm spare ([`crate::warm`]) needs its cgroup before its task is known, so it is named
//! `warm@<agent_id>@<n>` beside the task cgroups below (the agent's id keeps agents sharing a
//! cgroup apart), and keeps that name once it holds a task: cgroup v2 cannot rename a cgroup
//! (v1 could), so one rule serves both. Recovery uses the checkpointed paths, never names derived
//! from ids; the driver logs which task each spare cgroup got. Spare cgroups not in the checkpoint
//! are what an earlier run left, and are removed at start.
//!
//! # cgroup v2 (Raspberry Pi OS, systemd)
//!
//! The agent's own cgroup `P` (e.g. `/system.slice/bramble-agent.service`, delegated with
//! `Delegate=yes`) cannot both hold processes and give controllers to children. So the agent first
//! moves itself into the leaf `P/agent` (the supervisors it starts later are born there), then
//! enables `+cpu +memory +pids` in `P/cgroup.subtree_control`, and creates each task's
//! cgroup beside the leaf as `P/task@<framework>@<task>` (or `P/warm@<agent>@<n>`, see below). If
//! the agent already runs in a cgroup named `agent` (e.g. systemd's `DelegateSubgroup=agent`), its
//! parent is `P`. If the agent runs in the root cgroup, `P` is `/bramble`.
//!
//! Limits: `cpu.max` = `"<cpu_millis × 100> 100000"`, `cpu.weight` = `cpu_millis / 10` (1..=10000),
//! `memory.max`, `memory.swap.max` = 0 when present, `pids.max`. An OOM kill shows in
//! `memory.events` (`oom_kill N`); CPU time in `cpu.stat` (`usage_usec`). Killing uses `cgroup.kill`
//! when the kernel has it (5.14+).
//!
//! The memory controller is missing on Raspberry Pi OS unless the kernel command line has
//! `cgroup_enable=memory`: that is reported as "no usable cgroups", with the fix, see below.
//!
//! A task's process joins by writing `0` to `cgroup.procs`, which takes the kernel's global
//! `cgroup_threadgroup_rwsem` for writing: the first join after a quiet spell waits out an RCU
//! grace period (10–30 ms) holding `cgroup_mutex`, unless the hierarchy is mounted with
//! `favordynmods` (kernel command line `cgroup_favordynmods=true`, 6.1+). Warm spares join before
//! their launch; without the option, the agent logs [`FAVOR_DYNMODS_TIP`] once at start.
//!
//! The unit this expects: `Delegate=yes` (the agent may manage its own subtree) and
//! `KillMode=process` (stopping the agent leaves its tasks running, for re-adoption). On systemd
//! 254 and later, `DelegateSubgroup=agent` also starts the agent straight in its leaf. Without it
//! (e.g. systemd 252 on Raspberry Pi OS 12), systemd puts a restarted agent in `P` itself, which
//! the kernel refuses while `P` gives controllers to task cgroups that still hold tasks: the
//! restart can fail with `status=219/CGROUP` (systemd issue #24064).
//!
//! # cgroup v1
//!
//! Each task gets `<hierarchy>/<agent's own cgroup>/bramble/<framework>@<task>` (or
//! `…/bramble/warm@<agent>@<n>`, see below) in the memory, cpu,
//! cpuacct (optional; the same directory when co-mounted as `cpu,cpuacct`) and pids hierarchies.
//! Limits: `memory.limit_in_bytes` and, when present, `memory.memsw.limit_in_bytes` with the same value
//! (so swap cannot dodge the limit), `cpu.cfs_period_us` = 100000, `cpu.cfs_quota_us`, `cpu.shares` =
//! `cpu_millis × 1024 / 1000` (at least 2), `pids.max`. CPU time comes from `cpuacct.usage`.
//! A task's process joins through each hierarchy's `tasks` file, not `cgroup.procs`: see
//! [`TaskCgroup::join_paths`].
//!
//! OOM detection on v1: kernels since 4.13 count kills in the `oom_kill` line of
//! `memory.oom_control`, which is used when present. Older kernels have no such counter, so the
//! agent uses a heuristic: the cgroup hit its limit (`memory.failcnt` > 0) *and* the task ended by
//! SIGKILL (or a shell reported 128 + 9). It can mistake a task the agent killed itself, after it had
//! hit its limit, for an OOM kill; the driver knows when it killed a task and reports that instead.
//!
//! # No isolation
//!
//! When the agent is not root, the filesystem is read-only or a controller is missing,
//! [`Isolation::setup`] returns [`Isolation::None`] with a reason naming the fix and logs it once as
//! a warning. Tasks still run, without limits, and the agent advertises `isolation=none`
//! ([`Isolation::isolation_attribute`]).
//!
//! # Layout
//!
//! - `mod.rs` (this file): [`Isolation`], [`CgroupPaths`], [`CgroupError`] and task cgroup creation.
//! - `v2`: the unified hierarchy's set-up (the agent's leaf, delegated controllers).
//! - `v1`: the per-controller hierarchies' set-up.
//! - `limits`: [`Limits`] and how they map to each version's files.
//! - `spares`: cgroups for warm spares, made before their task is known.
//! - `task`: [`TaskCgroup`], one task's cgroup: join, read, kill, remove.
//! - `files`: reading and writing cgroupfs files and `/proc/<pid>/cgroup`.

mod files;
mod limits;
mod spares;
mod task;
mod v1;
mod v2;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use files::{check_id, parse_proc_cgroup, read_pids};
use limits::apply_limits;
pub use limits::{Limits, CPU_PERIOD_US, DEFAULT_PIDS_MAX, MIN_CPU_QUOTA_US};
pub use spares::SPARE_PREFIX;
pub use task::{open_join_files, TaskCgroup};
use v1::setup_v1;
pub use v1::V1Layout;
use v2::setup_v2;
pub use v2::{favors_dynmods, V2Layout};

/// Where cgroup filesystems are mounted on a normal Linux system.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";
/// The leaf the agent moves itself into on cgroup v2.
pub const AGENT_LEAF: &str = "agent";
/// The directory that holds task cgroups on cgroup v1 (and on v2 when the agent is in the root).
pub const BRAMBLE_DIR: &str = "bramble";
/// The kernel command line fix for a missing memory controller on Raspberry Pi OS.
pub const MEMORY_CONTROLLER_FIX: &str = "add `cgroup_enable=memory cgroup_memory=1` to \
     /boot/firmware/cmdline.txt (older releases: /boot/cmdline.txt) and reboot";

/// The kernel command line setting that makes task launches faster on cgroup v2 (kernel 6.1+).
pub const FAVOR_DYNMODS_TIP: &str = "add `cgroup_favordynmods=true` to /boot/firmware/cmdline.txt \
     and reboot: then a process joining a cgroup no longer waits out an RCU grace period (10-30 ms, \
     which holds up every other cgroup change on the board), at a small cost to every fork and exit";

/// What went wrong with a cgroup.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CgroupError {
    /// A framework or task id cannot name a cgroup.
    #[error("invalid id {id:?}: {problem}")]
    InvalidId {
        /// The id.
        id: String,
        /// Why.
        problem: String,
    },
    /// A cgroup file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A cgroup file held something unexpected.
    #[error("{}: cannot parse {content:?}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it held (truncated).
        content: String,
    },
    /// The cgroup still had processes after they were killed.
    #[error("{}: still holds processes {pids:?} after SIGKILL", path.display())]
    Busy {
        /// The cgroup directory.
        path: PathBuf,
        /// The processes left.
        pids: Vec<i32>,
    },
    /// A checkpointed cgroup is of another version than the board's.
    #[error("cgroup paths do not match this board's isolation ({0})")]
    Mismatch(&'static str),
    /// Work run by [`off_loop`] panicked or was cancelled.
    #[error("cgroup work on the blocking pool did not finish: {0}")]
    Interrupted(#[from] tokio::task::JoinError),
}

/// Runs cgroupfs work on tokio's blocking pool. `mkdir` and `rmdir` there wait for the kernel's
/// cgroup mutex, which a process-wide move anywhere on the machine (a v2 join, another program
/// writing `cgroup.procs`) can hold through an RCU grace period (10–30 ms): done inline, they
/// would stall the agent's loop for that long.
pub async fn off_loop<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, CgroupError> + Send + 'static,
) -> Result<T, CgroupError> {
    tokio::task::spawn_blocking(work).await?
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where one task's cgroup lives: what the driver checkpoints to re-adopt it with
/// [`TaskCgroup::open`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "version", rename_all = "lowercase")]
pub enum CgroupPaths {
    /// One directory in the unified hierarchy.
    V2 {
        /// The task's cgroup directory.
        dir: PathBuf,
    },
    /// One directory per v1 hierarchy.
    V1 {
        /// In the memory hierarchy.
        memory: PathBuf,
        /// In the cpu hierarchy.
        cpu: PathBuf,
        /// In the cpuacct hierarchy (equal to `cpu` when co-mounted), if there is one.
        cpuacct: Option<PathBuf>,
        /// In the pids hierarchy.
        pids: PathBuf,
    },
}

impl CgroupPaths {
    /// Every distinct directory, parents' order irrelevant.
    pub fn dirs(&self) -> Vec<&Path> {
        let candidates: Vec<&Path> = match self {
            CgroupPaths::V2 { dir } => vec![dir],
            CgroupPaths::V1 {
                memory,
                cpu,
                cpuacct,
                pids,
            } => [Some(memory), Some(cpu), cpuacct.as_ref(), Some(pids)]
                .into_iter()
                .flatten()
                .map(PathBuf::as_path)
                .collect(),
        };
        let mut out: Vec<&Path> = Vec::with_capacity(candidates.len());
        for p in candidates {
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }
}

/// What isolation the agent can give its tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Isolation {
    /// The unified hierarchy.
    V2(V2Layout),
    /// Legacy per-controller hierarchies.
    V1(V1Layout),
    /// No usable cgroups: tasks run without limits.
    None {
        /// Why, and how to fix it.
        reason: String,
    },
}

impl Isolation {
    /// Detects and prepares cgroups for this process, from `/sys/fs/cgroup` and `/proc/self/cgroup`.
    pub fn from_system() -> Isolation {
        let own = match fs::read_to_string("/proc/self/cgroup") {
            Ok(s) => s,
            Err(e) => {
                return Isolation::none(format!("cannot read /proc/self/cgroup: {e}"));
            }
        };
        let iso = Isolation::setup(Path::new(DEFAULT_ROOT), &own, std::process::id());
        if matches!(iso, Isolation::V2(_)) {
            let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
            if !favors_dynmods(&mounts, Path::new(DEFAULT_ROOT)) {
                tracing::info!("tip for faster task launches: {FAVOR_DYNMODS_TIP}");
            }
        }
        iso
    }

    /// Detects what `root` (laid out like `/sys/fs/cgroup`) offers given the agent's
    /// `/proc/self/cgroup` contents, and prepares it: on v2 it moves the agent (`agent_pid`) into
    /// its leaf and enables the controllers for task cgroups; on v1 it creates the `bramble`
    /// directories. Call it once, at start: it logs one warning when the result is
    /// [`Isolation::None`].
    pub fn setup(root: &Path, proc_self_cgroup: &str, agent_pid: u32) -> Isolation {
        let entries = parse_proc_cgroup(proc_self_cgroup);
        let result = if root.join("cgroup.controllers").is_file() {
            setup_v2(root, &entries, agent_pid)
        } else if entries.iter().any(|e| !e.controllers.is_empty()) {
            setup_v1(root, &entries)
        } else {
            Err(format!(
                "no cgroup filesystem found at {} (neither cgroup v2 nor v1 controllers)",
                root.display()
            ))
        };
        match result {
            Ok(iso) => {
                tracing::info!(
                    isolation = iso.isolation_attribute(),
                    "task isolation ready"
                );
                iso
            }
            Err(reason) => Isolation::none(reason),
        }
    }

    fn none(reason: String) -> Isolation {
        tracing::warn!("tasks will run WITHOUT cgroup limits (isolation=none): {reason}");
        Isolation::None { reason }
    }

    /// The agent attribute value: `cgroup2`, `cgroup1` or `none`.
    pub fn isolation_attribute(&self) -> &'static str {
        match self {
            Isolation::V2(_) => "cgroup2",
            Isolation::V1(_) => "cgroup1",
            Isolation::None { .. } => "none",
        }
    }

    /// Where a task's cgroup goes (whether or not it exists), `None` without isolation.
    pub fn task_paths(&self, framework_id: &str, task_id: &str) -> Option<CgroupPaths> {
        let name = format!("{framework_id}@{task_id}");
        self.paths_named(&format!("task@{name}"), &name)
    }

    /// The cgroup named `v2_name` under the v2 parent, or `v1_name` in every v1 hierarchy.
    fn paths_named(&self, v2_name: &str, v1_name: &str) -> Option<CgroupPaths> {
        match self {
            Isolation::V2(l) => Some(CgroupPaths::V2 {
                dir: l.parent.join(v2_name),
            }),
            Isolation::V1(l) => Some(CgroupPaths::V1 {
                memory: l.memory.join(v1_name),
                cpu: l.cpu.join(v1_name),
                cpuacct: l.cpuacct.as_ref().map(|d| d.join(v1_name)),
                pids: l.pids.join(v1_name),
            }),
            Isolation::None { .. } => None,
        }
    }

    /// Creates the task's cgroup with its limits; `Ok(None)` without isolation.
    ///
    /// A leftover cgroup of the same name (say, from a task whose cleanup failed) is reused if it is
    /// empty, and refused with [`CgroupError::Busy`] if it still holds processes.
    pub fn create_task(
        &self,
        framework_id: &str,
        task_id: &str,
        limits: Limits,
    ) -> Result<Option<TaskCgroup>, CgroupError> {
        check_id(framework_id)?;
        check_id(task_id)?;
        let Some(paths) = self.task_paths(framework_id, task_id) else {
            return Ok(None);
        };
        let mut created: Vec<&Path> = Vec::new();
        let undo = |created: &[&Path]| {
            for dir in created {
                let _ = fs::remove_dir(dir);
            }
        };
        for dir in paths.dirs() {
            // The parent exists since setup, unless someone removed it meanwhile.
            if let Some(parent) = dir.parent() {
                let _ = fs::create_dir_all(parent);
            }
            let problem = match fs::create_dir(dir) {
                Ok(()) => {
                    created.push(dir);
                    None
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    match read_pids(&dir.join("cgroup.procs")) {
                        Ok(pids) if pids.is_empty() => None,
                        Ok(pids) => Some(CgroupError::Busy {
                            path: dir.to_path_buf(),
                            pids,
                        }),
                        Err(e) => Some(e),
                    }
                }
                Err(e) => Some(io_err(dir)(e)),
            };
            if let Some(e) = problem {
                undo(&created);
                return Err(e);
            }
        }
        if let Err(e) = apply_limits(&paths, limits) {
            undo(&created);
            return Err(e);
        }
        let cg = TaskCgroup { paths };
        tracing::debug!(?cg.paths, ?limits, "task cgroup created");
        Ok(Some(cg))
    }

    /// Re-opens a checkpointed task cgroup, checking it is of this board's kind.
    pub fn open_task(&self, paths: CgroupPaths) -> Result<TaskCgroup, CgroupError> {
        match (self, &paths) {
            (Isolation::V2(_), CgroupPaths::V2 { .. })
            | (Isolation::V1(_), CgroupPaths::V1 { .. }) => TaskCgroup::open(paths),
            (Isolation::None { .. }, _) => Err(CgroupError::Mismatch("none")),
            _ => Err(CgroupError::Mismatch(self.isolation_attribute())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_paths_list_a_co_mounted_cpu_and_cpuacct_directory_once() {
        let p = CgroupPaths::V1 {
            memory: "/m/x".into(),
            cpu: "/c/x".into(),
            cpuacct: Some("/c/x".into()),
            pids: "/p/x".into(),
        };
        assert_eq!(p.dirs().len(), 3);
    }

    #[test]
    fn cgroup_paths_round_trip_through_json() {
        let p = CgroupPaths::V2 {
            dir: "/sys/fs/cgroup/a/task@f@t".into(),
        };
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(
            json,
            r#"{"version":"v2","dir":"/sys/fs/cgroup/a/task@f@t"}"#
        );
        assert_eq!(serde_json::from_str::<CgroupPaths>(&json).unwrap(), p);
    }
}
