//! Taking tasks back after an agent restart: the checkpoint is read, and each task recorded in it
//! is restored in the core and the table, and its processes looked for on the board.

use agent_nostd_core::agent::{Exit, LocalEvent, RestoredTask};
use agent_nostd_core::ids::TaskKey;
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

/// Restores every task of `checkpoint` in `core` and `tasks`, in the checkpoint's order. A task
/// whose process ended while the agent was down is reported ended at once; the handles of the
/// ones still running are returned, to be watched.
pub fn restore(
    core: &mut AgentCore,
    tasks: &mut Tasks,
    isolation: &Isolation,
    checkpoint: Checkpoint<Launched>,
    now: u64,
) -> Vec<(TaskKey, TaskHandle)> {
    core.set_next_update_id(checkpoint.next_update_id);
    let mut running = Vec::new();
    for rec in checkpoint.tasks {
        let key = match rec.key() {
            Ok(key) => key,
            Err(e) => {
                warn!(task = %rec.task_id, "cannot re-adopt task: {e}");
                continue;
            }
        };
        let cgroup = rec.cgroup.clone().and_then(|paths| {
            isolation
                .open_task(paths)
                .map_err(|e| warn!(task = %rec.task_id, "cannot reopen the task's cgroup: {e}"))
                .ok()
        });
        let mut slot = TaskSlot {
            sandbox: rec.sandbox.clone(),
            cgroup,
            launched: rec.launched,
        };
        let restored = RestoredTask {
            key: &key,
            resources: rec.resources,
            pids_max: rec.pids_max,
            ended: rec
                .ended
                .as_ref()
                .map(|e| (e.state, e.reason, e.message.as_str())),
        };
        if let Err(e) = core.restore_task(now, restored) {
            match rec.ended {
                Some(_) => warn!(task = %rec.task_id, "cannot restore an ended task: {e}"),
                None => warn!(task = %rec.task_id, "cannot re-adopt task: {e}"),
            }
            continue;
        }
        if rec.ended.is_some() {
            tasks.restore(key, slot);
            continue;
        }
        let outcome = match &rec.launched {
            Some(launched) => process::adopt(launched, &rec.sandbox),
            None => process::Adopted::Unknown,
        };
        match outcome {
            process::Adopted::Running(handle) => {
                info!(framework = %key.framework_id, task = %key.task_id, "re-adopted a running task");
                running.push((key.clone(), handle));
            }
            process::Adopted::Ended(raw) => {
                let exit = process::task_exit(raw, slot.cgroup.as_ref());
                info!(framework = %key.framework_id, task = %key.task_id, ?exit, "task ended while the agent was down");
                end_adopted(core, &key, &mut slot, exit, now);
            }
            process::Adopted::Unknown => {
                warn!(framework = %key.framework_id, task = %key.task_id, "task is gone and its end is unknown");
                end_adopted(core, &key, &mut slot, Exit::Unknown, now);
            }
        }
        tasks.restore(key, slot);
    }
    running
}

fn end_adopted(core: &mut AgentCore, key: &TaskKey, slot: &mut TaskSlot, exit: Exit, now: u64) {
    if let Some(cg) = slot.cgroup.take() {
        remove_cgroup(cg);
    }
    let _ = core.handle_event(
        now,
        LocalEvent::Exited {
            framework_id: &key.framework_id,
            task_id: &key.task_id,
            exit,
        },
    );
}
