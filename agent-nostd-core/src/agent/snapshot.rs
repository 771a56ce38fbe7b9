//! [`Snapshot`]: what a checkpoint holds of an [`AgentCore`], and the one path that rebuilds a
//! core from it after a restart ([`AgentCore::restore`]).

use heapless::{String, Vec};

use super::{AgentCore, Exit, LocalEvent, RestoredTask, TaskError};
use crate::ids::TaskKey;
use crate::resources::Resources;
use crate::wire::{Reason, TaskState, MAX_MESSAGE_LEN, MAX_TASKS};

/// The core's persistent state: what a checkpoint must hold for [`AgentCore::restore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The boot the agent's frames were bound to: a restarted agent takes a boot above it (a
    /// driver must write the checkpoint with the new boot before the first frame goes out).
    pub boot: u32,
    /// The newest master epoch the agent has obeyed, its fence: a restarted agent still drops
    /// what an older master sends, and tells a new leader the epoch it must start above.
    pub master_epoch: u64,
    /// The status update id a restarted agent continues from
    /// ([`AgentCore::update_id_checkpoint`]).
    pub next_update_id: u32,
    /// Every task in the table, in its order.
    pub tasks: Vec<TaskSnapshot, MAX_TASKS>,
}

/// One task of a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSnapshot {
    /// The task.
    pub key: TaskKey,
    /// Its limits.
    pub resources: Resources,
    /// Its process limit, 0 for the driver's default.
    pub pids_max: u32,
    /// How it ended, once it has.
    pub ended: Option<EndedSnapshot>,
}

/// How a task of a [`Snapshot`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedSnapshot {
    /// Its terminal state.
    pub state: TaskState,
    /// Why it ended.
    pub reason: Reason,
    /// The message of its terminal update.
    pub message: String<MAX_MESSAGE_LEN, u8>,
}

impl AgentCore {
    /// What a checkpoint must hold now. Take it when [`generation`](Self::generation) moved.
    pub fn snapshot(&self) -> Snapshot {
        let mut tasks = Vec::new();
        for view in self.tasks() {
            let ended = view.end_reason.map(|reason| EndedSnapshot {
                state: view.state,
                reason,
                message: String::try_from(view.message).unwrap_or_default(),
            });
            // Cannot overflow: both hold MAX_TASKS.
            let _ = tasks.push(TaskSnapshot {
                key: view.key.clone(),
                resources: view.resources,
                pids_max: view.pids_max,
                ended,
            });
        }
        Snapshot {
            boot: self.info.boot,
            master_epoch: self.master_epoch(),
            next_update_id: self.update_id_checkpoint(),
            tasks,
        }
    }

    /// Takes back, after an agent restart, what `snapshot` holds: update ids continue from it, and
    /// each task is restored in order. A task that had ended sends its terminal update again (with
    /// a new update id) once registered; a running one whose process ended while the agent was
    /// down, as `exited` says (the driver looked), ends at once, as if
    /// [`handle_event`](Self::handle_event) had been told.
    ///
    /// Returns, for each task of the snapshot in order, whether it was taken back (a task already
    /// in the table is refused with [`TaskError::AlreadyKnown`]).
    pub fn restore(
        &mut self,
        now: u64,
        snapshot: &Snapshot,
        mut exited: impl FnMut(&TaskKey) -> Option<Exit>,
    ) -> Vec<Result<(), TaskError>, MAX_TASKS> {
        self.set_next_update_id(snapshot.next_update_id);
        // Above every boot before, so nothing sent then verifies now.
        if snapshot.boot >= self.info.boot {
            self.info.boot = snapshot.boot.saturating_add(1);
        }
        self.generation = self.generation.wrapping_add(1);
        self.master_epoch = self.master_epoch.max(snapshot.master_epoch);
        self.target_epoch = self.target_epoch.max(self.master_epoch);
        let mut results = Vec::new();
        for task in &snapshot.tasks {
            let restored = RestoredTask {
                key: &task.key,
                resources: task.resources,
                pids_max: task.pids_max,
                ended: task
                    .ended
                    .as_ref()
                    .map(|e| (e.state, e.reason, e.message.as_str())),
            };
            let result = self.restore_task(now, restored);
            if result.is_ok() && task.ended.is_none() {
                if let Some(exit) = exited(&task.key) {
                    let _ = self.handle_event(
                        now,
                        LocalEvent::Exited {
                            framework_id: &task.key.framework_id,
                            task_id: &task.key.task_id,
                            exit,
                        },
                    );
                }
            }
            // Cannot overflow: both hold MAX_TASKS.
            let _ = results.push(result);
        }
        results
    }
}
