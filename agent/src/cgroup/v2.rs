//! Setting up the unified hierarchy (cgroup v2): the agent's leaf and the controllers it delegates
//! to task cgroups.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use super::files::{read_pids, read_words, under, write_value, ProcCgroup};
use super::{CgroupError, Isolation, AGENT_LEAF, BRAMBLE_DIR, MEMORY_CONTROLLER_FIX};

/// The controllers every task cgroup needs.
const V2_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

/// The v2 layout: the directory task cgroups are created in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Layout {
    /// The delegated cgroup `P` that holds the agent's leaf and the task cgroups.
    pub parent: PathBuf,
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

pub(super) fn setup_v2(
    root: &Path,
    entries: &[ProcCgroup<'_>],
    agent_pid: u32,
) -> Result<Isolation, String> {
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
}
