//! Removing what is left of a task on the board: its cgroup (off the agent's loop) and its
//! sandbox.

use tracing::warn;

use super::table::TaskSlot;
use crate::cgroup::TaskCgroup;

/// Removes a released task's cgroup and sandbox.
pub fn cleanup(mut slot: TaskSlot) {
    if let Some(cg) = slot.cgroup.take() {
        remove_cgroup(cg);
    }
    if let Err(e) = std::fs::remove_dir_all(&slot.sandbox) {
        if e.kind() != std::io::ErrorKind::NotFound {
            warn!("cannot remove sandbox {}: {e}", slot.sandbox.display());
        }
    }
}

/// Kills what is left in a task's cgroup and removes it, off the main loop (it may wait for the
/// kernel to empty it).
pub fn remove_cgroup(cg: TaskCgroup) {
    tokio::spawn(async move {
        if let Err(e) = cg.remove().await {
            warn!("cannot remove a task cgroup: {e}");
        }
    });
}
