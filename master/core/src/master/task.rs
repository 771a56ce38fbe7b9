//! A task's lifecycle as the master keeps it: launched (STAGING), updated by its agent's status
//! updates (recorded, forwarded to the framework, acknowledged), settled against an agent's task list
//! on (re-)registration, retried when a launch or kill got no answer, and ended.

use std::collections::BTreeSet;

use agent_nostd_core::ids::validate_id;
use agent_nostd_core::wire::{
    KillTask, MasterMsg, Reason, StatusAck, StatusUpdate as AgentStatus, TaskReport, TaskState,
};
use agent_nostd_core::Resources;
use bramble_proto::{self as proto, Event};

use super::registry::{AgentIdx, FrameworkIdx};
use super::*;

/// Whether update id `id` came after `last`: ids grow by one per update of an agent (skipping 0 on
/// wrap-around), so they compare by serial-number arithmetic.
pub(super) fn is_newer_update(id: u32, last: u32) -> bool {
    (id.wrapping_sub(last) as i32) > 0
}

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
        if let Some(a) = self.agents.get_mut(agent) {
            // A new launch may reuse the id of a task that ended here.
            a.ended.retain(|(f, t)| *f != fid || t != tid);
        }
        self.task_changed(fi, tid);
    }

    /// Forgets a task that ended by the agent's own word, remembering it on its agent.
    pub(super) fn end_reported_task(&mut self, fi: FrameworkIdx, tid: &str) {
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
                if self.task_slot_is(fi, &tid, slot) {
                    self.end_reported_task(fi, &tid);
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
            self.send_framework(
                fi,
                update_event(
                    tid,
                    Some(agent_id.clone()),
                    TaskState::Lost,
                    Reason::AgentRestarted,
                    "the agent re-registered without this task",
                ),
            );
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
        let fi = self.frameworks.lookup(u.framework_id.as_str());
        let known = fi.and_then(|fi| {
            let t = self.tasks.get(fi, &tid)?;
            Some((fi, t.agent == slot, t.last_update_id))
        });
        match (fi, known) {
            (Some(fi), Some((_, true, last))) => {
                // A copy of the newest update, or an older one resent after a newer arrived
                // (agents pipeline a task's updates): acknowledged, never applied.
                if last.is_some_and(|last| !is_newer_update(u.update_id, last)) {
                    self.stats.duplicate_status_updates += 1;
                } else {
                    self.stats.status_updates += 1;
                    if let Some(t) = self.tasks.get_mut(fi, &tid) {
                        t.last_update_id = Some(u.update_id);
                        t.state = u.state;
                    }
                    self.forward_update(fi, &tid, agent_id, u);
                    if u.state.is_terminal() {
                        self.end_reported_task(fi, &tid);
                        self.request_allocation(now);
                    }
                }
            }
            (Some(fi), elsewhere) => {
                // The master does not hold this task there: pass on an ending (at least once) unless
                // the id now names a task on another agent, and stop anything still running that
                // nobody accounts for.
                if u.state.is_terminal() {
                    if elsewhere.is_some() {
                        self.stats.duplicate_status_updates += 1;
                    } else {
                        self.stats.status_updates += 1;
                        self.forward_update(fi, &tid, agent_id, u);
                    }
                } else {
                    self.send_kill(slot, fi, &tid, 0);
                }
            }
            (None, _) => {
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
            }
        }
        // Recorded and queued for the framework: now the agent may forget it.
        self.send_agent(
            agent_id,
            MasterMsg::StatusAck(StatusAck {
                framework_id: u.framework_id.clone(),
                task_id: u.task_id.clone(),
                update_id: u.update_id,
            }),
        );
    }

    pub(super) fn forward_update(
        &mut self,
        fi: FrameworkIdx,
        tid: &str,
        agent_id: &str,
        u: &AgentStatus,
    ) {
        self.send_framework(
            fi,
            update_event(
                tid.to_owned(),
                Some(agent_id.to_owned()),
                u.state,
                u.reason,
                u.message.as_str(),
            ),
        );
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
