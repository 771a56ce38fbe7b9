//! A task's lifecycle as the master keeps it: launched (STAGING), updated by its agent's status
//! updates (recorded, forwarded to the framework, acknowledged), settled against an agent's task list
//! on (re-)registration, retried when a launch or kill got no answer, and ended.

use std::collections::BTreeSet;

use agent_nostd_core::ids::validate_id;
use agent_nostd_core::wire::{
    is_newer_update, KillTask, MasterMsg, Reason, StatusAck, StatusUpdate as AgentStatus,
    TaskReport, TaskState,
};
use agent_nostd_core::Resources;
use bramble_proto::{self as proto, Event};

use super::registry::{AgentIdx, FrameworkIdx};
use super::*;

/// The one builder of the status update a framework gets about task `task_id`.
pub(super) fn update_event(
    task_id: impl Into<String>,
    agent_id: Option<String>,
    state: TaskState,
    reason: Reason,
    message: impl Into<String>,
) -> Event {
    Event::Update(proto::StatusUpdate {
        task_id: task_id.into(),
        agent_id,
        state,
        reason,
        message: message.into(),
        update_id: None,
    })
}

/// TASK_LOST / `LaunchFailed` for task `tid` of an accept that did not launch it, and why.
pub(super) fn not_launched_event(tid: &str, why: &str) -> Event {
    update_event(
        tid,
        None,
        TaskState::Lost,
        Reason::LaunchFailed,
        format!("not launched: {why}"),
    )
}

/// The update a framework gets for its task `tid` in the list agent `agent_id` re-registered with.
fn listed_update(tid: &str, agent_id: &str, state: TaskState) -> Event {
    update_event(
        tid,
        Some(agent_id.to_owned()),
        state,
        Reason::None,
        "agent re-registered",
    )
}

impl MasterCore {
    pub(super) fn add_task(
        &mut self,
        now: u64,
        fi: FrameworkIdx,
        tid: &str,
        agent: AgentIdx,
        r: Resources,
        state: TaskState,
    ) {
        let Some(fid) = self.frameworks.get(fi).map(|f| f.id.clone()) else {
            return;
        };
        self.tasks.insert(now, fi, tid, agent, r, state);
        if let Some(f) = self.frameworks.get_mut(fi) {
            f.completed.remove(tid);
        }
        if let Some(a) = self.agents.get_mut(agent) {
            // A new launch may reuse the id of a task that ended here.
            a.ended.retain(|(f, t)| *f != fid || t != tid);
        }
        self.task_changed(fi, tid);
    }

    /// Forgets a task that ended by the agent's own word (`update`), remembering it on its agent
    /// and in its framework's completed-task cache.
    ///
    /// `listed`: the end is known from the agent's task list only; the agent's own update (with
    /// the exit code) is unacknowledged there and comes after the registration.
    pub(super) fn end_reported_task(
        &mut self,
        fi: FrameworkIdx,
        tid: &str,
        update: proto::StatusUpdate,
        listed: bool,
    ) {
        self.remember_completed_as(fi, update, listed);
        let fid = self.frameworks.get(fi).map(|f| f.id.clone());
        let agent = self.tasks.get(fi, tid).map(|t| t.agent);
        if let (Some(fid), Some(a)) = (fid, agent.and_then(|ai| self.agents.get_mut(ai))) {
            if a.ended.len() >= ENDED_KEPT {
                a.ended.pop_front();
            }
            a.ended.push_back((fid, tid.to_owned()));
        }
        self.end_task(fi, tid);
    }

    /// Forgets a task and gives its resources back.
    pub(super) fn end_task(&mut self, fi: FrameworkIdx, tid: &str) {
        self.task_changed(fi, tid);
        if self.frameworks.get(fi).is_none() {
            return;
        }
        let Some(agent) = self.tasks.get(fi, tid).map(|t| t.agent) else {
            return;
        };
        let reachable = self.agents.get(agent).is_some_and(|a| a.reachable);
        self.tasks.remove(fi, tid, reachable);
    }

    /// Makes the master's view of an agent's tasks match what the agent reported.
    pub(super) fn reconcile_agent_tasks(
        &mut self,
        now: u64,
        slot: AgentIdx,
        reported: &[TaskReport],
    ) {
        let agent_id = self
            .agents
            .get(slot)
            .map(|a| a.id.clone())
            .unwrap_or_default();
        let mut listed: BTreeSet<(FrameworkIdx, String)> = BTreeSet::new();
        for r in reported {
            if validate_id(&r.framework_id).is_err() || validate_id(&r.task_id).is_err() {
                self.stats.malformed += 1;
                continue;
            }
            let fi = match self.frameworks.lookup(r.framework_id.as_str()) {
                Some(fi) => fi,
                // An ended task of a framework this master does not know (yet): kept until it
                // registers, for its reconciliation.
                None if r.state.is_terminal() => {
                    let update = proto::StatusUpdate {
                        task_id: r.task_id.as_str().to_owned(),
                        agent_id: Some(agent_id.clone()),
                        state: r.state,
                        reason: Reason::None,
                        message: "agent re-registered".into(),
                        update_id: None,
                    };
                    self.keep_unclaimed(r.framework_id.as_str(), update);
                    continue;
                }
                None => match self.recover_framework(now, r.framework_id.as_str()) {
                    Some(fi) => fi,
                    None => {
                        // A removed framework (or no room for one): nothing may keep running.
                        if !r.state.is_terminal() {
                            self.send_agent(
                                &agent_id,
                                MasterMsg::KillTask(KillTask {
                                    framework_id: r.framework_id.clone(),
                                    task_id: r.task_id.clone(),
                                    grace_ms: 0,
                                }),
                            );
                        }
                        continue;
                    }
                },
            };
            let tid = r.task_id.as_str().to_owned();
            if r.state.is_terminal() {
                // Ended on the agent; its update comes (again) on the status topic.
                let listed = proto::StatusUpdate {
                    task_id: tid.clone(),
                    agent_id: Some(agent_id.clone()),
                    state: r.state,
                    reason: Reason::None,
                    message: "agent re-registered".into(),
                    update_id: None,
                };
                if self.task_slot_is(fi, &tid, slot) {
                    self.end_reported_task(fi, &tid, listed, true);
                } else if self
                    .frameworks
                    .get(fi)
                    .is_some_and(|f| f.completed.get(&tid).is_none())
                {
                    // A task the agent still holds (its resources are listed; released ones come
                    // with none) has its own update unacknowledged there: it comes next.
                    let held = r.resources != Resources::ZERO;
                    self.remember_completed_as(fi, listed, held);
                }
                continue;
            }
            listed.insert((fi, tid.clone()));
            let known = self
                .tasks
                .get(fi, &tid)
                .map(|t| (t.agent, t.state, t.kill_grace));
            match known {
                Some((agent, state, kill)) if agent == slot => {
                    // A running task listed as still starting is from a stale (duplicated) list.
                    let stale = state == TaskState::Running && r.state < TaskState::Running;
                    if state != r.state && !stale {
                        if let Some(t) = self.tasks.get_mut(fi, &tid) {
                            t.state = r.state;
                        }
                        self.task_changed(fi, &tid);
                        if state != TaskState::Staging || r.state != TaskState::Starting {
                            self.send_framework(fi, listed_update(&tid, &agent_id, r.state));
                        }
                    }
                    if let Some(grace) = kill {
                        self.send_kill(slot, fi, &tid, grace);
                    }
                }
                Some(_) => {
                    // The framework has this task id on another agent: this copy is a stray.
                    listed.remove(&(fi, tid.clone()));
                    self.send_kill(slot, fi, &tid, 0);
                }
                None if self.ended_here(slot, fi, &tid) => {
                    // It ended here by the agent's own word: this list is a stale duplicate.
                    listed.remove(&(fi, tid.clone()));
                }
                None => {
                    // New to this master (it restarted): the framework hears the state from it too.
                    self.add_task(now, fi, &tid, slot, r.resources, r.state);
                    self.send_framework(fi, listed_update(&tid, &agent_id, r.state));
                }
            }
        }
        // Tasks the master had there that the agent no longer holds are lost, but for launches
        // younger than `task_retry_ms`: their RunTask may still be on its way.
        let retry = self.config.task_retry_ms;
        let missing: Vec<TaskRef> = self
            .tasks
            .on_agent(slot)
            .filter(|k| !listed.contains(*k))
            .cloned()
            .collect::<Vec<_>>()
            .into_iter()
            .filter(|(fi, tid)| {
                let young = self.tasks.get(*fi, tid).is_some_and(|t| {
                    t.state == TaskState::Staging && now.saturating_sub(t.since) < retry
                });
                !young
            })
            .collect();
        for (fi, tid) in missing {
            self.end_task(fi, &tid);
            let lost = update_event(
                tid,
                Some(agent_id.clone()),
                TaskState::Lost,
                Reason::AgentRestarted,
                "the agent re-registered without this task",
            );
            self.send_completed(fi, lost);
        }
    }

    /// Whether the agent in `slot` reported task `tid` of framework `fi` ended.
    pub(super) fn ended_here(&self, slot: AgentIdx, fi: FrameworkIdx, tid: &str) -> bool {
        let Some(fid) = self.frameworks.get(fi).map(|f| f.id.as_str()) else {
            return false;
        };
        self.agents
            .get(slot)
            .is_some_and(|a| a.ended.iter().any(|(f, t)| f == fid && t == tid))
    }

    pub(super) fn task_slot_is(&self, fi: FrameworkIdx, tid: &str, agent: AgentIdx) -> bool {
        self.tasks.get(fi, tid).is_some_and(|t| t.agent == agent)
    }

    pub(super) fn on_status(&mut self, now: u64, agent_id: &str, u: &AgentStatus) {
        if self.live_agent(now, agent_id).is_none() {
            return; // asked to re-register; the agent resends the update afterwards
        }
        let Some(slot) = self.agents.lookup(agent_id) else {
            return;
        };
        let tid = u.task_id.as_str().to_owned();
        let update = proto::StatusUpdate {
            task_id: tid.clone(),
            agent_id: Some(agent_id.to_owned()),
            state: u.state,
            reason: u.reason,
            message: u.message.as_str().to_owned(),
            update_id: Some(u.update_id),
        };
        // Whether the master acknowledges the update to the agent itself: only when no framework
        // is left to acknowledge it. Otherwise the framework's acknowledgement is passed on.
        let ack_now = match self.frameworks.lookup(u.framework_id.as_str()) {
            None => {
                if !u.state.is_terminal() {
                    self.send_agent(
                        agent_id,
                        MasterMsg::KillTask(KillTask {
                            framework_id: u.framework_id.clone(),
                            task_id: u.task_id.clone(),
                            grace_ms: 0,
                        }),
                    );
                }
                true
            }
            Some(fi) => match self
                .tasks
                .get(fi, &tid)
                .map(|t| (t.agent, t.last_update_id, t.unacked.is_some()))
            {
                Some((agent, last, unacked)) if agent == slot => match last {
                    Some(last) if last == u.update_id => {
                        // The newest update again: forwarded again while the framework has not
                        // acknowledged it, acknowledged again once it has.
                        self.stats.duplicate_status_updates += 1;
                        if unacked {
                            self.send_framework(fi, Event::Update(update));
                        }
                        !unacked
                    }
                    Some(last) if !is_newer_update(u.update_id, last) => {
                        // Older than the newest (agents pipeline a task's updates): settled by
                        // the newest one's acknowledgement, or at once if that came already.
                        self.stats.duplicate_status_updates += 1;
                        !unacked
                    }
                    _ => {
                        self.apply_update(now, fi, &tid, update);
                        false
                    }
                },
                Some(_) => {
                    // The id names a task on another agent: this one is a stray.
                    self.stats.duplicate_status_updates += 1;
                    if !u.state.is_terminal() {
                        self.send_kill(slot, fi, &tid, 0);
                    }
                    true
                }
                None if u.state.is_terminal() => self.ended_task_update(fi, update),
                None if self.ended_here(slot, fi, &tid)
                    || self.completed_on(fi, &tid, agent_id) =>
                {
                    // An older update of a task that ended here, resent late (e.g. all at once
                    // after a broker restart): stale, not a task nobody accounts for. Killing it
                    // would only make the agent report a second end.
                    self.stats.duplicate_status_updates += 1;
                    true
                }
                None => {
                    // Running, but nobody accounts for it: stopped.
                    self.send_kill(slot, fi, &tid, 0);
                    true
                }
            },
        };
        if ack_now {
            self.send_agent(
                agent_id,
                MasterMsg::StatusAck(StatusAck {
                    framework_id: u.framework_id.clone(),
                    task_id: u.task_id.clone(),
                    update_id: u.update_id,
                }),
            );
        }
    }

    /// A new update of task `tid` from its agent: recorded, forwarded, and kept until the
    /// framework acknowledges it; a terminal one ends the task.
    fn apply_update(&mut self, now: u64, fi: FrameworkIdx, tid: &str, update: proto::StatusUpdate) {
        self.stats.status_updates += 1;
        let terminal = update.state.is_terminal();
        if let Some(t) = self.tasks.get_mut(fi, tid) {
            t.last_update_id = update.update_id;
            t.state = update.state;
            t.unacked = Some(Box::new(update.clone()));
        }
        self.task_changed(fi, tid);
        self.send_framework(fi, Event::Update(update.clone()));
        if terminal {
            self.end_reported_task(fi, tid, update, false);
            self.request_allocation(now);
        }
    }

    /// Settles launches and kills that got no answer within `task_retry_ms`: a launch makes the agent
    /// re-register (its task list says whether the launch arrived), a kill is sent again.
    pub(super) fn retry_tasks(&mut self, now: u64) {
        let retry = self.config.task_retry_ms;
        let mut kills = Vec::new();
        let mut ask = BTreeSet::new();
        for (fi, tid, t) in self.tasks.iter_mut() {
            if now.saturating_sub(t.since) < retry || t.state == TaskState::Unreachable {
                continue;
            }
            if let Some(grace) = t.kill_grace {
                t.since = now;
                kills.push((t.agent, fi, tid.to_owned(), grace));
            } else if t.state == TaskState::Staging {
                // Asked again every health check until the re-registration settles it: an old
                // STAGING task the agent does not list is lost.
                ask.insert(t.agent);
            }
        }
        for (agent, fi, tid, grace) in kills {
            self.send_kill(agent, fi, &tid, grace);
        }
        for agent in ask {
            if let Some(id) = self.agents.get(agent).map(|a| a.id.clone()) {
                self.send_agent(&id, MasterMsg::ReRegisterRequest);
            }
        }
    }
}
