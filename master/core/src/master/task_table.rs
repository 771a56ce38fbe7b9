//! [`TaskTable`]: every task the master holds, keyed by framework and task id, with the index of
//! each agent's tasks and the sums the allocator reads, all kept in step by the table's own
//! methods.
//!
//! Two sums, as DRF needs them: an agent's `allocated` counts every task on it that has not ended
//! (reachable or not: the board still runs them); a framework's counts only its tasks that are not
//! UNREACHABLE, on reachable agents (what it holds in the cluster the allocator shares out).

use std::collections::{BTreeMap, BTreeSet};

use agent_nostd_core::wire::TaskState;
use agent_nostd_core::Resources;
use bramble_proto as proto;

use super::registry::{AgentIdx, FrameworkIdx, Idx};
use crate::allocator::Amount;

/// A task the master holds.
#[derive(Debug, Clone)]
pub(super) struct Task {
    pub(super) agent: AgentIdx,
    pub(super) resources: Resources,
    pub(super) state: TaskState,
    pub(super) last_update_id: Option<u32>,
    /// The newest update from its agent, forwarded to the framework and not yet acknowledged:
    /// resent whenever the framework (re-)registers.
    pub(super) unacked: Option<Box<proto::StatusUpdate>>,
    pub(super) kill_grace: Option<u32>,
    pub(super) revoking: bool,
    /// Launch order, for revocation (newest first).
    pub(super) launched: u64,
    /// When it was launched or last asked to die: the retry clock of `task_retry_ms`.
    pub(super) since: u64,
}

/// A task's key in the table: its framework and its id.
pub(super) type TaskRef = (FrameworkIdx, String);

/// Every task, with the per-agent index and the sums. See the [module docs](self).
#[derive(Debug, Clone, Default)]
pub(super) struct TaskTable {
    /// By framework slot, then by task id (lookups borrow the id; nothing is allocated to find
    /// one). A registry slot is reused only once its framework's tasks are gone.
    tasks: Vec<BTreeMap<String, Task>>,
    /// By agent slot (a registry slot is reused only once its tasks are gone): its tasks, and
    /// what they hold.
    by_agent: Vec<(BTreeSet<TaskRef>, Amount)>,
    /// By framework slot: what its counted tasks hold.
    framework_allocated: Vec<Amount>,
    next_launch_seq: u64,
}

fn counted(state: TaskState) -> bool {
    state != TaskState::Unreachable
}

impl TaskTable {
    /// Adds a task launched (or found) on `agent` at `now`, counting it for its framework.
    pub(super) fn insert(
        &mut self,
        now: u64,
        fi: FrameworkIdx,
        tid: &str,
        agent: AgentIdx,
        resources: Resources,
        state: TaskState,
    ) {
        let launched = self.next_launch_seq;
        self.next_launch_seq += 1;
        let task = Task {
            agent,
            resources,
            state,
            last_update_id: None,
            unacked: None,
            kill_grace: None,
            revoking: false,
            launched,
            since: now,
        };
        // An id in use is never inserted again (accepts refuse it, a task list settles it first);
        // were it, the sums would drop the old record.
        if let Some(old) = slot(&mut self.tasks, fi.slot()).insert(tid.to_owned(), task) {
            self.uncount(fi, tid, &old, true);
        }
        slot(&mut self.framework_allocated, fi.slot()).add(resources);
        let (tasks, allocated) = slot(&mut self.by_agent, agent.slot());
        allocated.add(resources);
        tasks.insert((fi, tid.to_owned()));
    }

    /// Takes task `t` out of the sums and the agent index.
    fn uncount(&mut self, fi: FrameworkIdx, tid: &str, t: &Task, agent_reachable: bool) {
        if counted(t.state) && agent_reachable {
            slot(&mut self.framework_allocated, fi.slot()).sub(t.resources);
        }
        let (tasks, allocated) = slot(&mut self.by_agent, t.agent.slot());
        allocated.sub(t.resources);
        tasks.remove(&(fi, tid.to_owned()));
    }

    /// Removes a task, giving its resources back. `agent_reachable` says whether its agent is
    /// reachable (only then did the task count for its framework).
    pub(super) fn remove(
        &mut self,
        fi: FrameworkIdx,
        tid: &str,
        agent_reachable: bool,
    ) -> Option<Task> {
        let t = self.tasks.get_mut(fi.slot())?.remove(tid)?;
        self.uncount(fi, tid, &t, agent_reachable);
        Some(t)
    }

    /// The task `tid` of framework `fi`.
    pub(super) fn get(&self, fi: FrameworkIdx, tid: &str) -> Option<&Task> {
        self.tasks.get(fi.slot())?.get(tid)
    }

    /// The task, to change anything but its state's being UNREACHABLE or not (see
    /// [`set_unreachable`](Self::set_unreachable) and [`set_reachable`](Self::set_reachable)).
    pub(super) fn get_mut(&mut self, fi: FrameworkIdx, tid: &str) -> Option<&mut Task> {
        self.tasks.get_mut(fi.slot())?.get_mut(tid)
    }

    /// Whether framework `fi` holds task `tid`.
    pub(super) fn contains(&self, fi: FrameworkIdx, tid: &str) -> bool {
        self.get(fi, tid).is_some()
    }

    /// Marks a task UNREACHABLE (its agent was lost); it stops counting for its framework.
    pub(super) fn set_unreachable(&mut self, fi: FrameworkIdx, tid: &str) {
        if let Some(t) = self.tasks.get_mut(fi.slot()).and_then(|m| m.get_mut(tid)) {
            if counted(t.state) {
                t.state = TaskState::Unreachable;
                slot(&mut self.framework_allocated, fi.slot()).sub(t.resources);
            }
        }
    }

    /// An UNREACHABLE task's agent came back: the task is STAGING until its agent's list says
    /// more, and counts for its framework again.
    pub(super) fn set_reachable(&mut self, fi: FrameworkIdx, tid: &str) {
        if let Some(t) = self.tasks.get_mut(fi.slot()).and_then(|m| m.get_mut(tid)) {
            if !counted(t.state) {
                t.state = TaskState::Staging;
                slot(&mut self.framework_allocated, fi.slot()).add(t.resources);
            }
        }
    }

    /// The tasks of framework `fi`, by task id.
    pub(super) fn of_framework(&self, fi: FrameworkIdx) -> impl Iterator<Item = (&str, &Task)> {
        self.tasks
            .get(fi.slot())
            .into_iter()
            .flatten()
            .map(|(tid, t)| (tid.as_str(), t))
    }

    /// Every task as (framework, task id, task), by framework then task id.
    pub(super) fn iter(&self) -> impl Iterator<Item = (FrameworkIdx, &str, &Task)> {
        self.tasks.iter().enumerate().flat_map(|(s, m)| {
            let fi = FrameworkIdx::from_slot(s);
            m.iter().map(move |(tid, t)| (fi, tid.as_str(), t))
        })
    }

    /// Every task, mutably (not its state's being UNREACHABLE or not).
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (FrameworkIdx, &str, &mut Task)> {
        self.tasks.iter_mut().enumerate().flat_map(|(s, m)| {
            let fi = FrameworkIdx::from_slot(s);
            m.iter_mut().map(move |(tid, t)| (fi, tid.as_str(), t))
        })
    }

    /// How many tasks framework `fi` holds.
    pub(super) fn count_of_framework(&self, fi: FrameworkIdx) -> usize {
        self.tasks.get(fi.slot()).map_or(0, BTreeMap::len)
    }

    /// The tasks on agent `ai`, by framework then task id.
    pub(super) fn on_agent(&self, ai: AgentIdx) -> impl Iterator<Item = &TaskRef> {
        self.by_agent
            .get(ai.slot())
            .into_iter()
            .flat_map(|(tasks, _)| tasks)
    }

    /// How many tasks agent `ai` holds.
    pub(super) fn count_on_agent(&self, ai: AgentIdx) -> usize {
        self.by_agent
            .get(ai.slot())
            .map_or(0, |(tasks, _)| tasks.len())
    }

    /// What the tasks on agent `ai` hold.
    pub(super) fn agent_allocated(&self, ai: AgentIdx) -> Amount {
        self.by_agent
            .get(ai.slot())
            .map_or_else(Amount::default, |(_, a)| *a)
    }

    /// What framework `fi`'s counted tasks hold.
    pub(super) fn framework_allocated(&self, fi: FrameworkIdx) -> Amount {
        self.framework_allocated
            .get(fi.slot())
            .copied()
            .unwrap_or_default()
    }
}

/// The entry of slot `i`, growing `v` to hold it.
fn slot<T: Default>(v: &mut Vec<T>, i: usize) -> &mut T {
    if v.len() <= i {
        v.resize_with(i + 1, T::default);
    }
    &mut v[i]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sums_follow_tasks_in_and_out_of_unreachable() {
        let (f, a) = (FrameworkIdx::from_slot(0), AgentIdx::from_slot(3));
        let r = Resources::new(100, 10, 0);
        let mut table = TaskTable::default();
        table.insert(0, f, "t1", a, r, TaskState::Staging);
        table.insert(0, f, "t2", a, r, TaskState::Staging);
        assert_eq!(table.framework_allocated(f).cpu_millis, 200);
        table.set_unreachable(f, "t1");
        table.set_unreachable(f, "t1");
        assert_eq!(table.framework_allocated(f).cpu_millis, 100);
        assert_eq!(table.agent_allocated(a).cpu_millis, 200);
        table.set_reachable(f, "t1");
        assert_eq!(
            table.get(f, "t1").map(|t| t.state),
            Some(TaskState::Staging)
        );
        assert_eq!(table.framework_allocated(f).cpu_millis, 200);
        table.remove(f, "t1", true);
        assert_eq!(table.count_on_agent(a), 1);
        assert_eq!(
            table.of_framework(f).map(|(t, _)| t).collect::<Vec<_>>(),
            ["t2"]
        );
        table.remove(f, "t2", true);
        assert_eq!(table.agent_allocated(a), Amount::default());
        assert_eq!(table.count_on_agent(a), 0);
    }
}
