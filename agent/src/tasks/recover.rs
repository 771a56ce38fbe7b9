//! Taking tasks back after an agent restart: the checkpoint is read, and each task recorded in it
//! is restored in the core (one [`Snapshot`] through [`AgentCore::restore`]) and the table, and
//! its processes looked for on the board.

use std::collections::HashMap;

use agent_nostd_core::agent::{EndedSnapshot, Exit, Snapshot, TaskError, TaskSnapshot};
use agent_nostd_core::ids::TaskKey;
use agent_nostd_core::wire::MAX_MESSAGE_LEN;
use agent_nostd_core::AgentCore;
use tracing::{error, info, warn};

use super::cleanup::remove_cgroup;
use super::table::{TaskSlot, Tasks};
use crate::cgroup::Isolation;
use crate::checkpoint::{Checkpoint, CheckpointFile};
use crate::durable::Durable;
use crate::process::{self, Launched, TaskHandle};

/// The checkpoint of the previous run of agent `agent_id`, if there is a readable one of that
/// agent. An unreadable one is moved aside; `durable` continues after the generation read.
pub fn load(
    file: &mut CheckpointFile,
    durable: &mut Durable,
    agent_id: &str,
) -> Option<Checkpoint<Launched>> {
    let checkpoint = match file.load::<Launched>() {
        Ok(Some(c)) => {
            durable.resume_at(file.generation());
            c
        }
        Ok(None) => return None,
        Err(e) => {
            error!("{e}; starting without it");
            match file.quarantine() {
                Ok(aside) => {
                    warn!("the unreadable checkpoint was moved to {}", aside.display())
                }
                Err(e) => error!("cannot move the checkpoint aside: {e}"),
            }
            return None;
        }
    };
    if checkpoint.agent_id != agent_id {
        warn!(
            "the checkpoint belongs to agent `{}`, not `{agent_id}`: ignoring its tasks",
            checkpoint.agent_id
        );
        return None;
    }
    Some(checkpoint)
}

/// Restores every task of `checkpoint` in `core` (through [`AgentCore::restore`], in the
/// checkpoint's order) and in `tasks`. The processes of the tasks that were running are looked for
/// first: one that ended while the agent was down is reported ended at once, and the handles of
/// the ones still running are returned, to be watched.
pub fn restore(
    core: &mut AgentCore,
    tasks: &mut Tasks,
    isolation: &Isolation,
    checkpoint: Checkpoint<Launched>,
    now: u64,
) -> Vec<(TaskKey, TaskHandle)> {
    let mut snapshot = Snapshot {
        boot: checkpoint.boot,
        master_epoch: checkpoint.master_epoch,
        next_update_id: checkpoint.next_update_id,
        tasks: heapless::Vec::new(),
    };
    // Beside each task of the snapshot: its record, and what was found of its processes.
    let mut found: Vec<(TaskSlot, Option<process::Adopted>)> = Vec::new();
    let mut exits: HashMap<TaskKey, Exit> = HashMap::new();
    for rec in checkpoint.tasks {
        let key = match rec.key() {
            Ok(key) => key,
            Err(e) => {
                warn!(task = %rec.task_id, "cannot re-adopt task: {e}");
                continue;
            }
        };
        let task = TaskSnapshot {
            key: key.clone(),
            resources: rec.resources,
            pids_max: rec.pids_max,
            ended: rec.ended.as_ref().map(|e| EndedSnapshot {
                state: e.state,
                reason: e.reason,
                message: truncated(&e.message),
            }),
        };
        if snapshot.tasks.push(task).is_err() {
            warn!(task = %rec.task_id, "cannot re-adopt task: {}", TaskError::TableFull);
            continue;
        }
        let cgroup = rec.cgroup.clone().and_then(|paths| {
            isolation
                .open_task(paths)
                .map_err(|e| warn!(task = %rec.task_id, "cannot reopen the task's cgroup: {e}"))
                .ok()
        });
        let slot = TaskSlot {
            sandbox: rec.sandbox.clone(),
            cgroup,
            launched: rec.launched,
        };
        let adopted = rec.ended.is_none().then(|| match &rec.launched {
            Some(launched) => process::adopt(launched, &rec.sandbox),
            None => process::Adopted::Unknown,
        });
        let exit = match &adopted {
            Some(process::Adopted::Ended(raw)) => {
                Some(process::task_exit(*raw, slot.cgroup.as_ref()))
            }
            Some(process::Adopted::Unknown) => Some(Exit::Unknown),
            _ => None,
        };
        if let Some(exit) = exit {
            // A second record of the same task is refused by the core: the first one's counts.
            exits.entry(key).or_insert(exit);
        }
        found.push((slot, adopted));
    }
    let results = core.restore(now, &snapshot, |key| exits.get(key).copied());
    let mut running = Vec::new();
    for ((task, (mut slot, adopted)), result) in snapshot.tasks.iter().zip(found).zip(results) {
        let key = &task.key;
        if let Err(e) = result {
            match task.ended {
                Some(_) => warn!(task = %key.task_id, "cannot restore an ended task: {e}"),
                None => warn!(task = %key.task_id, "cannot re-adopt task: {e}"),
            }
            continue;
        }
        match adopted {
            None => {}
            Some(process::Adopted::Running(handle)) => {
                info!(framework = %key.framework_id, task = %key.task_id, "re-adopted a running task");
                running.push((key.clone(), handle));
            }
            Some(process::Adopted::Ended(_)) => {
                let exit = exits.get(key).copied().unwrap_or(Exit::Unknown);
                info!(framework = %key.framework_id, task = %key.task_id, ?exit, "task ended while the agent was down");
                remove_cgroup_of(&mut slot);
            }
            Some(process::Adopted::Unknown) => {
                warn!(framework = %key.framework_id, task = %key.task_id, "task is gone and its end is unknown");
                remove_cgroup_of(&mut slot);
            }
        }
        tasks.restore(key.clone(), slot);
    }
    running
}

fn remove_cgroup_of(slot: &mut TaskSlot) {
    if let Some(cg) = slot.cgroup.take() {
        remove_cgroup(cg);
    }
}

/// `message` cut to what a status update carries, at a character boundary.
fn truncated(message: &str) -> heapless::String<MAX_MESSAGE_LEN, u8> {
    let mut out = heapless::String::new();
    for c in message.chars() {
        if out.push(c).is_err() {
            break;
        }
    }
    out
}
