//! Agent inputs: registrations and their task lists, reports, pongs, status updates, last wills,
//! and the health checks that find silent agents.

use std::collections::{BTreeSet, VecDeque};

use agent_nostd_core::ids::validate_id;
use agent_nostd_core::topic::{self, AgentTopic, Topic};
use agent_nostd_core::wire::{
    AgentInfo, AgentMsg, DecodeError as AgentDecodeError, KillTask, MasterMsg, Reason, RegisterAck,
    ResourceReport, StatusAck, StatusUpdate as AgentStatus, TaskReport, TaskState, WireMessage,
};
use agent_nostd_core::Resources;
use std::sync::Arc;

use bramble_proto::{self as proto, AgentDescription, Attribute, Event};

use super::{Agent, AgentIdx, FrameworkIdx, Idx, MasterCore, RecvError};
use crate::allocator::Amount;

impl MasterCore {
    // ----- agent inputs -----

    /// A payload arrived on an agent topic: decode it, check it belongs there, handle it.
    pub fn handle_agent_bytes(
        &mut self,
        now: u64,
        topic_name: &str,
        payload: &[u8],
    ) -> Result<(), RecvError> {
        let (id, kind) = match topic::parse(topic_name) {
            Some(Topic::Agent { id, kind }) if kind != AgentTopic::Cmd => (id, kind),
            _ => {
                self.stats.misrouted += 1;
                return Err(RecvError::UnknownTopic);
            }
        };
        let msg = match AgentMsg::decode(payload) {
            Ok(m) => m,
            Err(e) => {
                match e {
                    AgentDecodeError::UnsupportedVersion { .. } => {
                        self.stats.unsupported_version += 1
                    }
                    _ => self.stats.malformed += 1,
                }
                return Err(RecvError::AgentDecode(e));
            }
        };
        let names_other = match &msg {
            AgentMsg::Register(info) => info.agent_id != id,
            AgentMsg::ReRegister(r) => r.info.agent_id != id,
            _ => false,
        };
        if msg.kind() != kind || names_other {
            self.stats.misrouted += 1;
            return Err(RecvError::WrongTopic);
        }
        self.handle_agent_message(now, id, &msg);
        Ok(())
    }

    /// A decoded message from agent `agent_id` (a valid id, taken from the topic).
    pub fn handle_agent_message(&mut self, now: u64, agent_id: &str, msg: &AgentMsg) {
        self.touch_agent_id(agent_id);
        match msg {
            AgentMsg::Register(info) => self.register_agent(now, info, &[]),
            AgentMsg::ReRegister(r) => self.register_agent(now, &r.info, &r.tasks),
            AgentMsg::Report(report) => self.on_report(now, agent_id, report),
            AgentMsg::Pong { .. } => {
                self.live_agent(now, agent_id);
            }
            AgentMsg::Status(update) => self.on_status(now, agent_id, update),
            AgentMsg::Gone => {
                if let Some(slot) = self.agents.lookup(agent_id) {
                    if self.agents.get(slot).is_some_and(|a| a.reachable) {
                        self.mark_unreachable(now, slot, "its connection dropped (last will)");
                    }
                }
            }
        }
    }

    /// A resource report. It also counts the agent's tasks: when that count and the master's differ
    /// for `task_retry_ms` (a lost launch or kill, a stale duplicate registration), the agent is asked
    /// to re-register, which settles every task.
    pub(super) fn on_report(&mut self, now: u64, agent_id: &str, report: &ResourceReport) {
        let retry = self.config.task_retry_ms;
        let Some(a) = self.live_agent(now, agent_id) else {
            return;
        };
        a.last_report = Some(*report);
        if usize::from(report.running_tasks) == a.tasks.len() {
            a.mismatch_since = None;
            return;
        }
        match a.mismatch_since {
            None => a.mismatch_since = Some(now),
            Some(since) if now.saturating_sub(since) >= retry => {
                a.mismatch_since = Some(now);
                self.send_agent(agent_id, MasterMsg::ReRegisterRequest);
            }
            Some(_) => {}
        }
    }

    /// The agent, if known and reachable, with `last_seen` bumped; otherwise asks it to re-register.
    pub(super) fn live_agent(&mut self, now: u64, agent_id: &str) -> Option<&mut Agent> {
        let slot = self.agents.lookup(agent_id);
        match slot.and_then(|s| self.agents.get(s)) {
            Some(a) if a.reachable => {}
            _ => {
                self.stats.unknown_agent_messages += 1;
                self.send_agent(agent_id, MasterMsg::ReRegisterRequest);
                return None;
            }
        }
        let a = self.agents.get_mut(slot?)?;
        a.last_seen = now;
        Some(a)
    }

    pub(super) fn register_agent(&mut self, now: u64, info: &AgentInfo, reported: &[TaskReport]) {
        if validate_id(&info.agent_id).is_err() {
            self.stats.malformed += 1;
            return;
        }
        let id = info.agent_id.as_str().to_owned();
        let slot = match self.agents.lookup(&id) {
            Some(s) => s,
            None => {
                if self.agents.len() >= self.config.max_agents {
                    self.stats.agents_refused += 1;
                    return;
                }
                let agent = Agent {
                    id: id.clone(),
                    desc: Arc::new(AgentDescription {
                        agent_id: id.clone(),
                        hostname: String::new(),
                        arch: String::new(),
                        attributes: Vec::new(),
                    }),
                    total: Resources::ZERO,
                    allocated: Amount::default(),
                    offer: None,
                    reachable: false,
                    last_seen: now,
                    unreachable_since: now,
                    last_report: None,
                    mismatch_since: None,
                    ended: VecDeque::new(),
                    tasks: BTreeSet::new(),
                };
                self.agents.insert(id.clone(), agent)
            }
        };
        self.stats.agent_registrations += 1;
        let Some(a) = self.agents.get_mut(slot) else {
            return;
        };
        let was_reachable = a.reachable;
        let old_total = a.total;
        if was_reachable {
            self.cluster_total.sub(a.total);
        }
        a.desc = Arc::new(AgentDescription {
            agent_id: id.clone(),
            hostname: info.hostname.as_str().to_owned(),
            arch: info.arch.as_str().to_owned(),
            attributes: info
                .attributes
                .iter()
                .map(|at| Attribute {
                    key: at.key.as_str().to_owned(),
                    value: at.value.as_str().to_owned(),
                })
                .collect(),
        });
        a.total = info.total;
        a.reachable = true;
        a.last_seen = now;
        a.mismatch_since = None;
        self.cluster_total.add(info.total);
        if !was_reachable {
            // Its tasks count for their frameworks again, whatever they turn out to be.
            let keys: Vec<(FrameworkIdx, String)> = a.tasks.iter().cloned().collect();
            for (fi, tid) in &keys {
                if let Some(t) = self
                    .frameworks
                    .get_mut(*fi)
                    .and_then(|f| f.tasks.get_mut(tid))
                {
                    if t.state == TaskState::Unreachable {
                        // Counted again below once its state is known.
                        t.state = TaskState::Staging;
                        let r = t.resources;
                        if let Some(f) = self.frameworks.get_mut(*fi) {
                            f.allocated.add(r);
                        }
                    }
                }
                self.touch_task(*fi, tid);
            }
        }
        self.reconcile_agent_tasks(now, slot, reported);
        // An outstanding offer stays valid unless the agent's size changed or its tasks grew into it.
        let stale_offer = self.agents.get(slot).and_then(|a| {
            let o = a.offer?;
            let fits = self
                .offers
                .get(&o)
                .is_some_and(|rec| rec.resources.fits_in(&a.free()));
            (!fits || a.total != old_total).then_some(o)
        });
        if let Some(o) = stale_offer {
            self.rescind(o, true);
        }
        self.send_agent(
            &id,
            MasterMsg::RegisterAck(RegisterAck {
                agent_id: info.agent_id.clone(),
                master_epoch: self.epoch,
            }),
        );
        self.request_allocation(now);
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
                .frameworks
                .get(fi)
                .and_then(|f| f.tasks.get(&tid))
                .map(|t| (t.agent, t.state, t.kill_grace));
            match known {
                Some((agent, state, kill)) if agent == slot => {
                    // A running task listed as still starting is from a stale (duplicated) list.
                    let stale = state == TaskState::Running && r.state < TaskState::Running;
                    if state != r.state && !stale {
                        if let Some(t) = self
                            .frameworks
                            .get_mut(fi)
                            .and_then(|f| f.tasks.get_mut(&tid))
                        {
                            t.state = r.state;
                        }
                        self.touch_task(fi, &tid);
                        if state != TaskState::Staging || r.state != TaskState::Starting {
                            self.send_framework(
                                fi,
                                Event::Update(proto::StatusUpdate {
                                    task_id: tid.clone(),
                                    agent_id: Some(agent_id.clone()),
                                    state: r.state,
                                    reason: Reason::None,
                                    message: "agent re-registered".into(),
                                }),
                            );
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
                    self.send_framework(
                        fi,
                        Event::Update(proto::StatusUpdate {
                            task_id: tid.clone(),
                            agent_id: Some(agent_id.clone()),
                            state: r.state,
                            reason: Reason::None,
                            message: "agent re-registered".into(),
                        }),
                    );
                }
            }
        }
        // Tasks the master had there that the agent no longer holds are lost, but for launches
        // younger than `task_retry_ms`: their RunTask may still be on its way.
        let retry = self.config.task_retry_ms;
        let missing: Vec<(FrameworkIdx, String)> = self
            .agents
            .get(slot)
            .map(|a| a.tasks.difference(&listed).cloned().collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter(|(fi, tid)| {
                let young = self
                    .frameworks
                    .get(*fi)
                    .and_then(|f| f.tasks.get(tid))
                    .is_some_and(|t| {
                        t.state == TaskState::Staging && now.saturating_sub(t.since) < retry
                    });
                !young
            })
            .collect();
        for (fi, tid) in missing {
            self.end_task(fi, &tid);
            self.send_framework(
                fi,
                Event::Update(proto::StatusUpdate {
                    task_id: tid,
                    agent_id: Some(agent_id.clone()),
                    state: TaskState::Lost,
                    reason: Reason::AgentRestarted,
                    message: "the agent re-registered without this task".into(),
                }),
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
        self.frameworks
            .get(fi)
            .and_then(|f| f.tasks.get(tid))
            .is_some_and(|t| t.agent == agent)
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
            let t = self.frameworks.get(fi)?.tasks.get(&tid)?;
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
                    if let Some(t) = self
                        .frameworks
                        .get_mut(fi)
                        .and_then(|f| f.tasks.get_mut(&tid))
                    {
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
            Event::Update(proto::StatusUpdate {
                task_id: tid.to_owned(),
                agent_id: Some(agent_id.to_owned()),
                state: u.state,
                reason: u.reason,
                message: u.message.as_str().to_owned(),
            }),
        );
    }

    pub(super) fn health_check(&mut self, now: u64) {
        self.retry_tasks(now);
        for slot in (0..self.agents.slot_count()).map(AgentIdx::from_slot) {
            let Some(a) = self.agents.get(slot) else {
                continue;
            };
            if a.reachable {
                let silent = now.saturating_sub(a.last_seen);
                if silent >= self.config.agent_timeout_ms {
                    let why = format!("it was silent for {} s", silent / 1_000);
                    self.mark_unreachable(now, slot, &why);
                } else if silent >= self.config.ping_interval_ms {
                    let seq = self.next_ping_seq;
                    self.next_ping_seq = self.next_ping_seq.wrapping_add(1);
                    let id = a.id.clone();
                    self.send_agent(&id, MasterMsg::Ping { seq });
                }
            } else if now.saturating_sub(a.unreachable_since) >= self.config.unreachable_gc_ms {
                self.remove_agent(slot);
            }
        }
    }

    /// Settles launches and kills that got no answer within `task_retry_ms`: a launch makes the agent
    /// re-register (its task list says whether the launch arrived), a kill is sent again.
    pub(super) fn retry_tasks(&mut self, now: u64) {
        let retry = self.config.task_retry_ms;
        let mut kills = Vec::new();
        let mut ask = BTreeSet::new();
        for (fi, f) in self.frameworks.iter_mut() {
            for (tid, t) in f.tasks.iter_mut() {
                if now.saturating_sub(t.since) < retry || t.state == TaskState::Unreachable {
                    continue;
                }
                if let Some(grace) = t.kill_grace {
                    t.since = now;
                    kills.push((t.agent, fi, tid.clone(), grace));
                } else if t.state == TaskState::Staging {
                    // Asked again every health check until the re-registration settles it: an old
                    // STAGING task the agent does not list is lost.
                    ask.insert(t.agent);
                }
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

    pub(super) fn mark_unreachable(&mut self, now: u64, slot: AgentIdx, why: &str) {
        self.touch_agent(slot);
        self.stats.agents_lost += 1;
        let offer = self.agents.get(slot).and_then(|a| a.offer);
        let mut told: BTreeSet<FrameworkIdx> = BTreeSet::new();
        if let Some(o) = offer {
            if let Some(rec) = self.offers.get(&o) {
                told.insert(rec.framework);
            }
            self.rescind(o, true);
        }
        let Some(a) = self.agents.get_mut(slot) else {
            return;
        };
        a.reachable = false;
        a.unreachable_since = now;
        let total = a.total;
        let id = a.id.clone();
        let tasks: Vec<(FrameworkIdx, String)> = a.tasks.iter().cloned().collect();
        self.cluster_total.sub(total);
        for (fi, tid) in tasks {
            let Some(f) = self.frameworks.get_mut(fi) else {
                continue;
            };
            let Some(t) = f.tasks.get_mut(&tid) else {
                continue;
            };
            if t.state != TaskState::Unreachable {
                t.state = TaskState::Unreachable;
                f.allocated.sub(t.resources);
            }
            told.insert(fi);
            self.send_framework(
                fi,
                Event::Update(proto::StatusUpdate {
                    task_id: tid,
                    agent_id: Some(id.clone()),
                    state: TaskState::Unreachable,
                    reason: Reason::None,
                    message: format!("agent {id} is unreachable: {why}"),
                }),
            );
        }
        for fi in told {
            self.send_framework(
                fi,
                Event::AgentLost {
                    agent_id: id.clone(),
                },
            );
        }
    }

    pub(super) fn remove_agent(&mut self, slot: AgentIdx) {
        self.touch_agent(slot);
        if let Some(o) = self.agents.get(slot).and_then(|a| a.offer) {
            self.rescind(o, true);
        }
        let Some(id) = self.agents.get(slot).map(|a| a.id.clone()) else {
            return;
        };
        let Some(a) = self.agents.remove(slot, &id) else {
            return;
        };
        if a.reachable {
            self.cluster_total.sub(a.total);
        }
        for (fi, tid) in &a.tasks {
            let Some(f) = self.frameworks.get_mut(*fi) else {
                continue;
            };
            if let Some(t) = f.tasks.remove(tid) {
                if t.state != TaskState::Unreachable && a.reachable {
                    f.allocated.sub(t.resources);
                }
                self.send_framework(
                    *fi,
                    Event::Update(proto::StatusUpdate {
                        task_id: tid.clone(),
                        agent_id: Some(a.id.clone()),
                        state: TaskState::Lost,
                        reason: Reason::None,
                        message: format!("agent {} was unreachable too long", a.id),
                    }),
                );
            }
        }
        for f in self.frameworks.values_mut() {
            f.filters.remove(&slot);
        }
    }
}

/// Whether update id `id` came after `last`: ids grow by one per update of an agent (skipping 0 on
/// wrap-around), so they compare by serial-number arithmetic.
fn is_newer_update(id: u32, last: u32) -> bool {
    (id.wrapping_sub(last) as i32) > 0
}
