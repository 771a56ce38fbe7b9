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

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// Where cgroup filesystems are mounted on a normal Linux system.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";
/// The process limit used when a task asks for 0 (no preference).
pub const DEFAULT_PIDS_MAX: u32 = 256;
/// The CFS period, in microseconds (a small CPU share gets a longer one, see [`MIN_CPU_QUOTA_US`]).
pub const CPU_PERIOD_US: u64 = 100_000;
/// The smallest CFS quota per period a task gets while its period can still grow (to the kernel's
/// 1 s maximum): starting a process (`exec`, loading its libraries) takes 1–3 ms of CPU, and a
/// task of 10 millicpus with 1 ms per 100 ms was throttled for up to a whole period before it
/// could run. The share over time is unchanged.
pub const MIN_CPU_QUOTA_US: u64 = 10_000;
/// The kernel's longest CFS period.
const MAX_CPU_PERIOD_US: u64 = 1_000_000;
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

/// How long [`TaskCgroup::remove`] keeps killing and retrying before it gives up.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How many read-and-kill rounds [`TaskCgroup::kill_all`] does without `cgroup.kill`.
const KILL_ROUNDS: usize = 64;
/// The name prefix of spare cgroups: `warm@<agent>@<n>`.
pub const SPARE_PREFIX: &str = "warm@";
/// How many names [`Isolation::create_spare`] tries before it gives up.
const SPARE_NAME_TRIES: usize = 64;
/// The next spare number this process tries.
static NEXT_SPARE: AtomicU64 = AtomicU64::new(1);
/// The controllers every task cgroup needs.
const V2_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

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

/// A task's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// CPU in thousandths of a core; 0 means no quota and the smallest weight.
    pub cpu_millis: u32,
    /// Memory in MiB; 0 means no limit.
    pub mem_mib: u32,
    /// Most processes (and threads) at once; 0 means [`DEFAULT_PIDS_MAX`].
    pub pids_max: u32,
}

impl Limits {
    fn pids(&self) -> u32 {
        if self.pids_max == 0 {
            DEFAULT_PIDS_MAX
        } else {
            self.pids_max
        }
    }

    fn mem_bytes(&self) -> Option<u64> {
        (self.mem_mib > 0).then(|| u64::from(self.mem_mib) * 1024 * 1024)
    }

    /// The CFS period in microseconds: [`CPU_PERIOD_US`], or longer (up to 1 s) so that the quota
    /// per period reaches [`MIN_CPU_QUOTA_US`].
    pub fn cpu_period_us(&self) -> u64 {
        match u64::from(self.cpu_millis) {
            0 => CPU_PERIOD_US,
            m => (MIN_CPU_QUOTA_US * 1_000)
                .div_ceil(m)
                .clamp(CPU_PERIOD_US, MAX_CPU_PERIOD_US),
        }
    }

    /// The CFS quota in microseconds per [`cpu_period_us`](Self::cpu_period_us), `None` for no
    /// quota.
    fn cpu_quota_us(&self) -> Option<u64> {
        // The kernel refuses quotas under 1 ms.
        (self.cpu_millis > 0)
            .then(|| (u64::from(self.cpu_millis) * self.cpu_period_us() / 1_000).max(1_000))
    }

    /// `cpu.max` for cgroup v2.
    pub fn cpu_max(&self) -> String {
        let period = self.cpu_period_us();
        match self.cpu_quota_us() {
            Some(q) => format!("{q} {period}"),
            None => format!("max {period}"),
        }
    }

    /// `cpu.weight` for cgroup v2: 1000 millis is the default weight 100.
    pub fn cpu_weight(&self) -> u32 {
        (self.cpu_millis / 10).clamp(1, 10_000)
    }

    /// `cpu.shares` for cgroup v1: 1000 millis is the default 1024.
    pub fn cpu_shares(&self) -> u64 {
        (u64::from(self.cpu_millis) * 1024 / 1000).max(2)
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

/// The v2 layout: the directory task cgroups are created in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Layout {
    /// The delegated cgroup `P` that holds the agent's leaf and the task cgroups.
    pub parent: PathBuf,
}

/// The v1 layout: the `bramble` directory in each hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Layout {
    /// In the memory hierarchy.
    pub memory: PathBuf,
    /// In the cpu hierarchy.
    pub cpu: PathBuf,
    /// In the cpuacct hierarchy, the same as `cpu` when co-mounted.
    pub cpuacct: Option<PathBuf>,
    /// In the pids hierarchy.
    pub pids: PathBuf,
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

    /// Where the spare cgroup `warm@<agent_id>@<seq>` goes, `None` without isolation.
    fn spare_paths(&self, agent_id: &str, seq: u64) -> Option<CgroupPaths> {
        let name = format!("{SPARE_PREFIX}{agent_id}@{seq}");
        self.paths_named(&name, &name)
    }

    /// Creates a cgroup for a warm spare of agent `agent_id`, `warm@<agent_id>@<n>` beside the
    /// other task cgroups, without limits (the kernel's defaults: none); `Ok(None)` without
    /// isolation. Its name says nothing of the task it will hold (cgroup v2 cannot rename a
    /// cgroup): the checkpoint records its paths, and the driver logs which task it got. The agent's
    /// id in it keeps agents that share a cgroup (`bramble up`) off each other's spares. A name
    /// already taken (a leftover) is skipped.
    pub fn create_spare(&self, agent_id: &str) -> Result<Option<TaskCgroup>, CgroupError> {
        check_id(agent_id)?;
        for _ in 0..SPARE_NAME_TRIES {
            let seq = NEXT_SPARE.fetch_add(1, Ordering::Relaxed);
            let Some(paths) = self.spare_paths(agent_id, seq) else {
                return Ok(None);
            };
            let mut created: Vec<&Path> = Vec::new();
            let mut taken = false;
            for dir in paths.dirs() {
                if let Some(parent) = dir.parent() {
                    let _ = fs::create_dir_all(parent);
                }
                match fs::create_dir(dir) {
                    Ok(()) => created.push(dir),
                    Err(e) => {
                        for d in &created {
                            let _ = fs::remove_dir(d);
                        }
                        if e.kind() != io::ErrorKind::AlreadyExists {
                            return Err(io_err(dir)(e));
                        }
                        taken = true;
                        break;
                    }
                }
            }
            if !taken {
                tracing::debug!(?paths, "spare cgroup created");
                return Ok(Some(TaskCgroup { paths }));
            }
        }
        let dir = self
            .spare_paths(agent_id, 0)
            .map(|p| p.dirs()[0].to_path_buf())
            .unwrap_or_default();
        Err(io_err(&dir)(io::Error::from(io::ErrorKind::AlreadyExists)))
    }

    /// Agent `agent_id`'s spare cgroups (`warm@<agent_id>@<n>`) that are not in `keep`: what a
    /// previous run of the agent left behind (its unused spare). Remove them at start, once the
    /// checkpointed tasks are known.
    pub fn stale_spare_cgroups(&self, agent_id: &str, keep: &[&CgroupPaths]) -> Vec<TaskCgroup> {
        let prefix = format!("{SPARE_PREFIX}{agent_id}@");
        // On v1 every hierarchy is listed: a removal may have stopped half-way.
        let listed: Vec<&PathBuf> = match self {
            Isolation::V2(l) => vec![&l.parent],
            Isolation::V1(l) => [
                Some(&l.memory),
                Some(&l.cpu),
                l.cpuacct.as_ref(),
                Some(&l.pids),
            ]
            .into_iter()
            .flatten()
            .collect(),
            Isolation::None { .. } => return Vec::new(),
        };
        let mut seqs: Vec<u64> = listed
            .into_iter()
            .filter_map(|dir| fs::read_dir(dir).ok())
            .flatten()
            .filter_map(|e| {
                let name = e.ok()?.file_name();
                name.to_str()?.strip_prefix(&prefix)?.parse().ok()
            })
            .collect();
        seqs.sort_unstable();
        seqs.dedup();
        seqs.into_iter()
            .filter_map(|seq| self.spare_paths(agent_id, seq))
            .filter(|paths| !keep.contains(&paths))
            .map(|paths| TaskCgroup { paths })
            .collect()
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

/// One line of `/proc/<pid>/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProcCgroup<'a> {
    /// The raw controller field, e.g. `cpu,cpuacct` (empty for v2).
    field: &'a str,
    /// Its controllers, without `name=…` entries.
    controllers: Vec<&'a str>,
    /// The cgroup path, starting with `/`.
    path: &'a str,
}

/// Whether the cgroup v2 filesystem mounted at `root` has `favordynmods` among its options, given
/// `/proc/self/mounts`. Joining a cgroup through `cgroup.procs` (which v2 requires) takes the
/// kernel's global `cgroup_threadgroup_rwsem` for writing; without `favordynmods` the first such
/// write after a quiet spell waits for an RCU grace period. Warm spares take that wait before
/// their launch, but cold launches and spare preparation still pay it.
pub fn favors_dynmods(mounts: &str, root: &Path) -> bool {
    mounts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (_, Some(at), Some("cgroup2"), Some(options)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return false;
        };
        Path::new(at) == root && options.split(',').any(|o| o == "favordynmods")
    })
}

fn parse_proc_cgroup(s: &str) -> Vec<ProcCgroup<'_>> {
    s.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let field = parts.next()?;
            let path = parts.next()?.trim_end();
            Some(ProcCgroup {
                field,
                controllers: field
                    .split(',')
                    .filter(|c| !c.is_empty() && !c.starts_with("name="))
                    .collect(),
                path,
            })
        })
        .collect()
}

/// `root` joined with an absolute cgroup path.
fn under(root: &Path, cgroup_path: &str) -> PathBuf {
    let rel = cgroup_path.trim_start_matches('/');
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    }
}

fn read_words(path: &Path) -> io::Result<BTreeSet<String>> {
    Ok(fs::read_to_string(path)?
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

fn setup_v2(root: &Path, entries: &[ProcCgroup<'_>], agent_pid: u32) -> Result<Isolation, String> {
    let own = entries
        .iter()
        .find(|e| e.field.is_empty())
        .map_or("/", |e| e.path);
    let root_controllers = read_words(&root.join("cgroup.controllers"))
        .map_err(|e| format!("cannot read {}/cgroup.controllers: {e}", root.display()))?;
    if !root_controllers.contains("memory") {
        return Err(format!(
            "the kernel's memory cgroup controller is disabled; {MEMORY_CONTROLLER_FIX}"
        ));
    }
    let own_dir = under(root, own);
    let is_root = own_dir == root;
    let parent = if is_root {
        root.join(BRAMBLE_DIR)
    } else if own_dir.file_name().is_some_and(|n| n == AGENT_LEAF) {
        // Already in the leaf (an earlier setup, or systemd's DelegateSubgroup=agent).
        own_dir
            .parent()
            .map_or_else(|| own_dir.clone(), Path::to_path_buf)
    } else {
        own_dir.clone()
    };
    let where_from = if is_root { root } else { parent.as_path() };
    let available = read_words(&where_from.join("cgroup.controllers")).map_err(|e| {
        format!(
            "cannot read {}/cgroup.controllers: {e}",
            where_from.display()
        )
    })?;
    let missing: Vec<&str> = V2_CONTROLLERS
        .iter()
        .copied()
        .filter(|c| !available.contains(*c))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "controllers {} are not delegated to {} (run the agent as a systemd service with \
             Delegate=yes, or as root)",
            missing.join(", "),
            where_from.display()
        ));
    }
    let enable = "+cpu +memory +pids";
    if is_root {
        write_value(&root.join("cgroup.subtree_control"), enable).map_err(|e| e.to_string())?;
        match fs::create_dir(&parent) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", parent.display())),
        }
        write_value(&parent.join("cgroup.subtree_control"), enable).map_err(|e| e.to_string())?;
    } else {
        let leaf = parent.join(AGENT_LEAF);
        match fs::create_dir(&leaf) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(format!(
                    "cannot create {}: {e} (the agent needs root, or a systemd unit with \
                     Delegate=yes)",
                    leaf.display()
                ))
            }
        }
        move_agent_to_leaf(&leaf, agent_pid)?;
        match write_value(&parent.join("cgroup.subtree_control"), enable) {
            Ok(()) => {}
            Err(CgroupError::Io { source, .. })
                if source.raw_os_error() == Some(nix::libc::EBUSY) =>
            {
                let others = read_pids(&parent.join("cgroup.procs")).unwrap_or_default();
                return Err(format!(
                    "{} still holds other processes {others:?}, so it cannot give controllers \
                     to task cgroups (run the agent as its own systemd service with \
                     Delegate=yes)",
                    parent.display()
                ));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(Isolation::V2(V2Layout { parent }))
}

/// Moves the agent (all its threads) into `leaf`. Only the agent: other processes in its cgroup
/// (say, the shell of a root session it was started from) are not the agent's to move.
fn move_agent_to_leaf(leaf: &Path, agent_pid: u32) -> Result<(), String> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .open(leaf.join("cgroup.procs"))
        .and_then(|mut f| f.write_all(format!("{agent_pid}\n").as_bytes()))
        .map_err(|e| {
            format!(
                "cannot move the agent (pid {agent_pid}) into {}: {e} (the agent needs root, or \
                 a systemd unit with Delegate=yes)",
                leaf.display()
            )
        })
}

/// Finds the mount of a v1 controller: `root/<field>` (e.g. `cpu,cpuacct`), else `root/<name>`.
fn v1_mount(
    root: &Path,
    entries: &[ProcCgroup<'_>],
    controller: &str,
) -> Option<(PathBuf, String)> {
    let e = entries
        .iter()
        .find(|e| e.controllers.contains(&controller))?;
    let dir = [root.join(e.field), root.join(controller)]
        .into_iter()
        .find(|p| p.is_dir())?;
    Some((dir, e.path.to_owned()))
}

fn setup_v1(root: &Path, entries: &[ProcCgroup<'_>]) -> Result<Isolation, String> {
    let mut missing = Vec::new();
    let mut find = |c: &'static str| {
        let m = v1_mount(root, entries, c);
        if m.is_none() {
            missing.push(c);
        }
        m
    };
    let memory = find("memory");
    let cpu = find("cpu");
    let pids = find("pids");
    if missing.contains(&"memory") {
        return Err(format!(
            "the kernel's memory cgroup controller is disabled; {MEMORY_CONTROLLER_FIX}"
        ));
    }
    let (Some(memory), Some(cpu), Some(pids)) = (memory, cpu, pids) else {
        return Err(format!(
            "cgroup v1 controllers {} are not mounted under {}",
            missing.join(", "),
            root.display()
        ));
    };
    let cpuacct = v1_mount(root, entries, "cpuacct");
    let bramble = |(mount, own): &(PathBuf, String)| under(mount, own).join(BRAMBLE_DIR);
    let layout = V1Layout {
        memory: bramble(&memory),
        cpu: bramble(&cpu),
        cpuacct: cpuacct.as_ref().map(bramble),
        pids: bramble(&pids),
    };
    let probe = CgroupPaths::V1 {
        memory: layout.memory.clone(),
        cpu: layout.cpu.clone(),
        cpuacct: layout.cpuacct.clone(),
        pids: layout.pids.clone(),
    };
    for dir in probe.dirs() {
        if let Err(e) = fs::create_dir_all(dir) {
            return Err(format!(
                "cannot create {}: {e} (the agent needs root and a writable cgroup filesystem)",
                dir.display()
            ));
        }
    }
    Ok(Isolation::V1(layout))
}

fn check_id(id: &str) -> Result<(), CgroupError> {
    agent_nostd_core::ids::validate_id(id).map_err(|e| CgroupError::InvalidId {
        id: id.chars().take(64).collect(),
        problem: e.to_string(),
    })
}

/// Writes `value` to a cgroup file in one `write`.
fn write_value(path: &Path, value: &str) -> Result<(), CgroupError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(io_err(path))
}

fn read_pids(path: &Path) -> Result<Vec<i32>, CgroupError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(s
            .split_whitespace()
            .filter_map(|w| w.parse::<i32>().ok())
            .filter(|p| *p > 0)
            .collect()),
        // A fresh directory on a plain filesystem (tests) has no cgroup.procs: no processes.
        Err(e)
            if e.kind() == io::ErrorKind::NotFound && path.parent().is_some_and(Path::is_dir) =>
        {
            Ok(Vec::new())
        }
        Err(e) => Err(io_err(path)(e)),
    }
}

/// The value of `key` in a flat-keyed file such as `memory.events` or `cpu.stat`.
fn read_keyed(path: &Path, key: &str) -> Option<u64> {
    let s = fs::read_to_string(path).ok()?;
    keyed_value(&s, key)
}

fn keyed_value(s: &str, key: &str) -> Option<u64> {
    s.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key)).then(|| it.next()?.parse().ok())?
    })
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn apply_limits(paths: &CgroupPaths, limits: Limits) -> Result<(), CgroupError> {
    match paths {
        CgroupPaths::V2 { dir } => {
            write_value(&dir.join("cpu.max"), &limits.cpu_max())?;
            write_value(&dir.join("cpu.weight"), &limits.cpu_weight().to_string())?;
            let mem = limits
                .mem_bytes()
                .map_or_else(|| "max".to_owned(), |b| b.to_string());
            write_value(&dir.join("memory.max"), &mem)?;
            let swap = dir.join("memory.swap.max");
            if swap.exists() {
                write_value(&swap, "0")?;
            }
            write_value(&dir.join("pids.max"), &limits.pids().to_string())?;
        }
        CgroupPaths::V1 {
            memory, cpu, pids, ..
        } => {
            let mem = limits
                .mem_bytes()
                .map_or_else(|| "-1".to_owned(), |b| b.to_string());
            // memsw may never be below the memory limit: lower memory first, raise memsw
            // first (a reused cgroup may hold higher or lower limits than these).
            let limit = memory.join("memory.limit_in_bytes");
            let memsw = memory.join("memory.memsw.limit_in_bytes");
            let has_memsw = memsw.exists();
            match write_value(&limit, &mem) {
                Ok(()) if has_memsw => write_value(&memsw, &mem)?,
                Ok(()) => {}
                Err(_) if has_memsw => {
                    write_value(&memsw, &mem)?;
                    write_value(&limit, &mem)?;
                }
                Err(e) => return Err(e),
            }
            write_value(
                &cpu.join("cpu.cfs_period_us"),
                &limits.cpu_period_us().to_string(),
            )?;
            let quota = limits
                .cpu_quota_us()
                .map_or_else(|| "-1".to_owned(), |q| q.to_string());
            write_value(&cpu.join("cpu.cfs_quota_us"), &quota)?;
            write_value(&cpu.join("cpu.shares"), &limits.cpu_shares().to_string())?;
            write_value(&pids.join("pids.max"), &limits.pids().to_string())?;
        }
    }
    Ok(())
}

/// One task's cgroup (one directory per hierarchy on v1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskCgroup {
    paths: CgroupPaths,
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
    /// (`memory.failcnt` > 0) and `ended_by_sigkill` (see the [module docs](self)).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn favordynmods_is_found_only_among_the_options_of_the_cgroup2_mount_at_the_root() {
        let root = Path::new("/sys/fs/cgroup");
        let pi = "sysfs /sys sysfs rw,nosuid 0 0\n\
                  cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0\n";
        assert!(!favors_dynmods(pi, root));
        let tuned = pi.replace("nsdelegate", "nsdelegate,favordynmods");
        assert!(favors_dynmods(&tuned, root));
        let elsewhere = "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,favordynmods 0 0\n";
        assert!(!favors_dynmods(elsewhere, root), "another mount point");
        let v1 = "cgroup /sys/fs/cgroup cgroup rw,favordynmods,memory 0 0\n";
        assert!(!favors_dynmods(v1, root), "not cgroup2");
        assert!(!favors_dynmods("garbage\n\n", root));
    }

    #[test]
    fn limits_map_millis_to_quota_weight_and_shares() {
        let l = Limits {
            cpu_millis: 500,
            mem_mib: 32,
            pids_max: 0,
        };
        assert_eq!(l.cpu_max(), "50000 100000");
        assert_eq!(l.cpu_weight(), 50);
        assert_eq!(l.cpu_shares(), 512);
        assert_eq!(l.pids(), DEFAULT_PIDS_MAX);
        assert_eq!(l.mem_bytes(), Some(32 << 20));
    }

    #[test]
    fn small_cpu_shares_get_a_longer_period_so_a_start_is_not_throttled() {
        let cpu = |cpu_millis| Limits {
            cpu_millis,
            mem_mib: 0,
            pids_max: 0,
        };
        // 1% of a CPU: 10 ms per second rather than 1 ms per 100 ms.
        assert_eq!(cpu(10).cpu_max(), "10000 1000000");
        assert_eq!(cpu(50).cpu_max(), "10000 200000");
        assert_eq!(cpu(100).cpu_max(), "10000 100000");
        assert_eq!(cpu(2_000).cpu_max(), "200000 100000");
        for m in [1, 7, 10, 33, 99, 100, 250, 1_000, 4_000] {
            let (l, quota, period) = (
                cpu(m),
                cpu(m).cpu_quota_us().unwrap(),
                cpu(m).cpu_period_us(),
            );
            assert!((100_000..=1_000_000).contains(&period), "{m}: {period}");
            assert!(quota >= 1_000, "{m}: the kernel's minimum");
            // The share is kept (to the microsecond), and the quota reaches 10 ms where it can.
            assert!(
                quota * 1_000 / period <= u64::from(m).max(1) + 1,
                "{m}: {quota}/{period}"
            );
            if m >= 10 {
                assert!(quota >= MIN_CPU_QUOTA_US, "{m}: {quota}");
            }
            assert_eq!(l.cpu_max(), format!("{quota} {period}"));
        }
    }

    #[test]
    fn tiny_and_zero_cpu_limits_stay_within_kernel_bounds() {
        let tiny = Limits {
            cpu_millis: 1,
            mem_mib: 0,
            pids_max: 5,
        };
        assert_eq!(tiny.cpu_max(), "1000 1000000");
        assert_eq!(tiny.cpu_weight(), 1);
        assert_eq!(tiny.cpu_shares(), 2);
        assert_eq!(tiny.mem_bytes(), None);
        let zero = Limits {
            cpu_millis: 0,
            ..tiny
        };
        assert_eq!(zero.cpu_max(), "max 100000");
        let huge = Limits {
            cpu_millis: u32::MAX,
            ..tiny
        };
        assert_eq!(huge.cpu_weight(), 10_000);
    }

    #[test]
    fn proc_cgroup_lines_parse_into_controllers_and_paths() {
        let e = parse_proc_cgroup(
            "12:cpu,cpuacct:/system.slice/x.service\n1:name=systemd:/init.scope\n0::/a/b\n",
        );
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(e[0].path, "/system.slice/x.service");
        assert!(e[1].controllers.is_empty());
        assert_eq!(e[2].field, "");
        assert_eq!(e[2].path, "/a/b");
    }

    #[test]
    fn keyed_files_yield_the_value_of_their_key() {
        let s = "low 0\nhigh 3\nmax 7\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed_value(s, "oom_kill"), Some(1));
        assert_eq!(keyed_value(s, "oom"), Some(2));
        assert_eq!(keyed_value(s, "nope"), None);
        assert_eq!(keyed_value("oom_kill x\n", "oom_kill"), None);
    }

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
