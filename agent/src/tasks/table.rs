//! [`Tasks`]: what the agent keeps about its tasks beside the core, keyed by [`TaskKey`]. State
//! only: no I/O.
//!
//! The core holds each task's limits (resources and `pids_max`) and state; this table holds where
//! the task lives on the board (sandbox, cgroup, processes) and the [`RunTask`]s waiting for the
//! launch they cause. A checkpoint joins the two ([`Tasks::checkpoint`]), and
//! [`recover`](super::recover) splits one back into a core snapshot and records.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use agent_nostd_core::ids::TaskKey;
use agent_nostd_core::wire::RunTask;
use agent_nostd_core::AgentCore;

use crate::cgroup::{CgroupPaths, TaskCgroup};
use crate::checkpoint::{Checkpoint, Ended, TaskRecord, CHECKPOINT_VERSION};
use crate::process::Launched;

/// Where one task lives on the board.
#[derive(Debug)]
pub struct TaskSlot {
    /// Its sandbox directory.
    pub sandbox: PathBuf,
    /// Its cgroup, when the board has cgroups and it has one now.
    pub cgroup: Option<TaskCgroup>,
    /// How to find its processes, once launched (or predicted from the warm spare it will use).
    pub launched: Option<Launched>,
}

/// The agent's tasks beside the core, and the RunTasks waiting for their launch.
#[derive(Debug)]
pub struct Tasks {
    sandboxes: PathBuf,
    slots: HashMap<TaskKey, TaskSlot>,
    /// RunTasks handled by the core whose launch has not started: their command lines.
    pending: HashMap<TaskKey, RunTask>,
    /// A record (launch details, cgroup) changed since the last checkpoint.
    dirty: bool,
}

impl Tasks {
    /// An empty table whose sandboxes go under `work_dir/sandboxes`. It counts as changed, so the
    /// first checkpoint is written.
    pub fn new(work_dir: &Path) -> Tasks {
        Tasks {
            sandboxes: work_dir.join("sandboxes"),
            slots: HashMap::new(),
            pending: HashMap::new(),
            dirty: true,
        }
    }

    /// The sandbox of the task `key`: `<work_dir>/sandboxes/<framework>/<task>`.
    pub fn sandbox(&self, key: &TaskKey) -> PathBuf {
        self.sandboxes
            .join(key.framework_id.as_str())
            .join(key.task_id.as_str())
    }

    /// Keeps a RunTask the core has handled, for the launch it may cause.
    pub fn hold_run(&mut self, run: RunTask) {
        self.pending.insert(run.key(), run);
    }

    /// The RunTask held for `key`, taken for its launch.
    pub fn take_run(&mut self, key: &TaskKey) -> Option<RunTask> {
        self.pending.remove(key)
    }

    /// Forgets the RunTasks that caused no launch (duplicates, refusals).
    pub fn drop_unlaunched_runs(&mut self) {
        self.pending.clear();
    }

    /// Records a task about to be launched, for the checkpoint: with the cgroup and pids of the
    /// warm spare its launch will use, when given. [`started`](Self::started) or
    /// [`launch_failed`](Self::launch_failed) completes the same record.
    pub fn record_launch(&mut self, key: TaskKey, spare: Option<(Option<TaskCgroup>, Launched)>) {
        let (cgroup, launched) = match spare {
            Some((cgroup, launched)) => (cgroup, Some(launched)),
            None => (None, None),
        };
        let slot = TaskSlot {
            sandbox: self.sandbox(&key),
            cgroup,
            launched,
        };
        self.slots.insert(key, slot);
        self.dirty = true;
    }

    /// The task's process started: its record gets the actual cgroup and pids (checkpointed again
    /// when they are not the ones predicted).
    pub fn started(&mut self, key: &TaskKey, cgroup: Option<TaskCgroup>, launched: Launched) {
        self.complete_launch(key, cgroup, Some(launched));
    }

    /// The task's process did not start: its record has no cgroup and no pids.
    pub fn launch_failed(&mut self, key: &TaskKey) {
        self.complete_launch(key, None, None);
    }

    fn complete_launch(
        &mut self,
        key: &TaskKey,
        cgroup: Option<TaskCgroup>,
        launched: Option<Launched>,
    ) {
        let sandbox = self.sandbox(key);
        let slot = self.slots.entry(key.clone()).or_insert(TaskSlot {
            sandbox,
            cgroup: None,
            launched: None,
        });
        if slot.launched != launched {
            self.dirty = true;
        }
        slot.cgroup = cgroup;
        slot.launched = launched;
    }

    /// Adds a task taken back from the checkpoint.
    pub fn restore(&mut self, key: TaskKey, slot: TaskSlot) {
        self.slots.insert(key, slot);
    }

    /// The task's record.
    pub fn get(&self, key: &TaskKey) -> Option<&TaskSlot> {
        self.slots.get(key)
    }

    /// The task's process ended: takes its cgroup (to remove) out of its record. `None` when the
    /// task is not in the table.
    pub fn ended(&mut self, key: &TaskKey) -> Option<Option<TaskCgroup>> {
        let slot = self.slots.get_mut(key)?;
        self.dirty = true;
        Some(slot.cgroup.take())
    }

    /// Forgets the task (its end is acknowledged), returning its record to clean up. Checkpointed
    /// with the next change (see the core's release).
    pub fn release(&mut self, key: &TaskKey) -> Option<TaskSlot> {
        self.slots.remove(key)
    }

    /// How many tasks the table holds.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the table holds no task.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The cgroups of the tasks held.
    pub fn cgroup_paths(&self) -> impl Iterator<Item = &CgroupPaths> {
        self.slots
            .values()
            .filter_map(|s| s.cgroup.as_ref().map(TaskCgroup::paths))
    }

    /// Whether a record changed since [`checkpoint`](Self::checkpoint) was last taken.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The checkpoint: the core's [`snapshot`](AgentCore::snapshot) (limits and states) with
    /// the records of its tasks (where they live). Call [`mark_saved`](Self::mark_saved) once it
    /// is on its way to disk.
    pub fn checkpoint(&self, core: &AgentCore, agent_id: &str) -> Checkpoint<Launched> {
        let snapshot = core.snapshot();
        let tasks = snapshot
            .tasks
            .into_iter()
            .filter_map(|task| {
                let slot = self.slots.get(&task.key)?;
                Some(TaskRecord {
                    framework_id: task.key.framework_id.to_string(),
                    task_id: task.key.task_id.to_string(),
                    resources: task.resources,
                    pids_max: task.pids_max,
                    sandbox: slot.sandbox.clone(),
                    cgroup: slot.cgroup.as_ref().map(|c| c.paths().clone()),
                    launched: slot.launched,
                    ended: task.ended.map(|e| Ended {
                        state: e.state,
                        reason: e.reason,
                        message: e.message.to_string(),
                    }),
                })
            })
            .collect();
        Checkpoint {
            version: CHECKPOINT_VERSION,
            agent_id: agent_id.to_owned(),
            boot: snapshot.boot,
            master_epoch: snapshot.master_epoch,
            next_update_id: snapshot.next_update_id,
            tasks,
        }
    }

    /// The last [`checkpoint`](Self::checkpoint) taken is on its way to disk.
    pub fn mark_saved(&mut self) {
        self.dirty = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_nostd_core::Resources;

    fn key(task: &str) -> TaskKey {
        TaskKey::new("fw-1", task).unwrap()
    }

    fn run(task: &str) -> RunTask {
        RunTask {
            framework_id: key(task).framework_id,
            task_id: key(task).task_id,
            argv: heapless::Vec::new(),
            env: heapless::Vec::new(),
            resources: Resources::new(100, 16, 0),
            pids_max: 0,
            artifacts: heapless::Vec::new(),
        }
    }

    fn launched(pid: i32) -> Launched {
        Launched {
            supervisor_pid: pid,
            supervisor_start_time: 1,
            task_pgid: pid + 1,
        }
    }

    #[test]
    fn a_run_task_is_held_by_its_key_until_its_launch_takes_it() {
        let mut tasks = Tasks::new(Path::new("/work"));
        tasks.hold_run(run("t1"));
        tasks.hold_run(run("t2"));
        assert_eq!(tasks.take_run(&key("t2")).unwrap().task_id, "t2");
        assert!(tasks.take_run(&key("t2")).is_none(), "taken once");
        tasks.drop_unlaunched_runs();
        assert!(
            tasks.take_run(&key("t1")).is_none(),
            "dropped after the flush"
        );
    }

    #[test]
    fn a_launch_that_starts_as_the_spare_predicted_changes_no_record() {
        let mut tasks = Tasks::new(Path::new("/work"));
        tasks.mark_saved();
        tasks.record_launch(key("t1"), Some((None, launched(10))));
        assert!(tasks.is_dirty(), "a new record is checkpointed");
        tasks.mark_saved();
        tasks.started(&key("t1"), None, launched(10));
        assert!(!tasks.is_dirty());
        let slot = tasks.get(&key("t1")).unwrap();
        assert_eq!(slot.launched, Some(launched(10)));
        assert_eq!(slot.sandbox, Path::new("/work/sandboxes/fw-1/t1"));
    }

    #[test]
    fn a_launch_that_went_cold_or_failed_completes_the_same_record_and_marks_it_changed() {
        let mut tasks = Tasks::new(Path::new("/work"));
        tasks.record_launch(key("t1"), Some((None, launched(10))));
        tasks.record_launch(key("t2"), None);
        tasks.mark_saved();
        tasks.started(&key("t1"), None, launched(20));
        assert!(tasks.is_dirty(), "not the spare's pids");
        tasks.mark_saved();
        tasks.launch_failed(&key("t2"));
        assert!(!tasks.is_dirty(), "no pids were recorded for it");
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks.get(&key("t1")).unwrap().launched, Some(launched(20)));
        assert_eq!(tasks.get(&key("t2")).unwrap().launched, None);
    }

    #[test]
    fn an_exit_marks_the_record_changed_and_a_release_forgets_it() {
        let mut tasks = Tasks::new(Path::new("/work"));
        tasks.record_launch(key("t1"), None);
        tasks.mark_saved();
        assert!(tasks.ended(&key("nope")).is_none());
        assert!(!tasks.is_dirty());
        assert!(matches!(tasks.ended(&key("t1")), Some(None)));
        assert!(tasks.is_dirty());
        assert!(tasks.release(&key("t1")).is_some());
        assert!(tasks.is_empty());
    }
}
