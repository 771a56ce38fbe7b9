//! Cgroups for warm spares ([`crate::warm`]): made before their task is known, named
//! `warm@<agent_id>@<n>`, and the ones an earlier run left behind.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::files::check_id;
use super::{io_err, CgroupError, CgroupPaths, Isolation, TaskCgroup};

/// The name prefix of spare cgroups: `warm@<agent>@<n>`.
pub const SPARE_PREFIX: &str = "warm@";
/// How many names [`Isolation::create_spare`] tries before it gives up.
const SPARE_NAME_TRIES: usize = 64;
/// The next spare number this process tries.
static NEXT_SPARE: AtomicU64 = AtomicU64::new(1);

impl Isolation {
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
}
