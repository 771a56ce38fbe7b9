//! An agent's lifecycle: registration (its task list settled by `task.rs`), reports, health checks,
//! becoming unreachable and being removed.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use agent_nostd_core::ids::validate_id;
use agent_nostd_core::wire::{
    AgentInfo, MasterMsg, Reason, RegisterAck, ResourceReport, TaskReport, TaskState,
};
use agent_nostd_core::Resources;
use bramble_proto::{AgentDescription, Attribute, Event, OfferId};

use super::registry::{AgentIdx, FrameworkIdx, Idx, Keyed};
use super::*;
use crate::allocator::Amount;

#[derive(Debug, Clone)]
pub(super) struct Agent {
    pub(super) id: String,
    /// What its offers say about it.
    pub(super) desc: Arc<AgentDescription>,
    pub(super) total: Resources,
    pub(super) offer: Option<OfferId>,
    pub(super) reachable: bool,
    pub(super) last_seen: u64,
    pub(super) unreachable_since: u64,
    pub(super) last_report: Option<ResourceReport>,
    /// Since when its reports count another number of tasks than the master holds there.
    pub(super) mismatch_since: Option<u64>,
    /// The latest tasks that ended here by the agent's own word, as (framework id, task id): a
    /// re-registration still listing one of them as running is a stale duplicate.
    pub(super) ended: VecDeque<(String, String)>,
    /// The MQTT connection of its latest registration: only that connection's last will counts.
    pub(super) connection: u32,
}

/// How many ended tasks each agent remembers (see `Agent::ended`).
pub(super) const ENDED_KEPT: usize = 64;

impl Agent {
    /// What is left of its total once its tasks' `allocated` is taken.
    pub(super) fn free(&self, allocated: Amount) -> Resources {
        let sat = |total: u32, used: u64| {
            u32::try_from(u64::from(total).saturating_sub(used)).unwrap_or(0)
        };
        Resources::new(
            sat(self.total.cpu_millis, allocated.cpu_millis),
            sat(self.total.mem_mib, allocated.mem_mib),
            sat(self.total.disk_mib, allocated.disk_mib),
        )
    }
}

impl Keyed for Agent {
    fn id(&self) -> &str {
        &self.id
    }
}

impl MasterCore {
    /// A resource report. It also counts the agent's tasks: when that count and the master's differ
    /// for `task_retry_ms` (a lost launch or kill, a stale duplicate registration), the agent is asked
    /// to re-register, which settles every task.
    pub(super) fn on_report(&mut self, now: u64, agent_id: &str, report: &ResourceReport) {
        let retry = self.config.task_retry_ms;
        let held = self
            .agents
            .lookup(agent_id)
            .map_or(0, |ai| self.tasks.count_on_agent(ai));
        let Some(a) = self.live_agent(now, agent_id) else {
            return;
        };
        a.last_report = Some(*report);
        if usize::from(report.running_tasks) == held {
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
                    offer: None,
                    reachable: false,
                    last_seen: now,
                    unreachable_since: now,
                    last_report: None,
                    mismatch_since: None,
                    ended: VecDeque::new(),
                    connection: info.connection,
                };
                self.agents.insert(agent)
            }
        };
        self.stats.agent_registrations += 1;
        let Some(a) = self.agents.get_mut(slot) else {
            return;
        };
        let was_reachable = a.reachable;
        a.connection = info.connection;
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
            let keys: Vec<TaskRef> = self.tasks.on_agent(slot).cloned().collect();
            for (fi, tid) in &keys {
                // STAGING until its state is known (below), counted for its framework again.
                self.tasks.set_reachable(*fi, tid);
                self.task_changed(*fi, tid);
            }
        }
        self.reconcile_agent_tasks(now, slot, reported);
        // An outstanding offer stays valid unless the agent's size changed or its tasks grew into it.
        let allocated = self.tasks.agent_allocated(slot);
        let stale_offer = self.agents.get(slot).and_then(|a| {
            let o = a.offer?;
            let fits = self
                .offers
                .get(o)
                .is_some_and(|rec| rec.resources.fits_in(&a.free(allocated)));
            (!fits || a.total != old_total).then_some(o)
        });
        if let Some(o) = stale_offer {
            self.rescind_offer(o);
        }
        self.send_agent(
            &id,
            MasterMsg::RegisterAck(RegisterAck {
                agent_id: info.agent_id.clone(),
            }),
        );
        self.request_allocation(now);
    }

    /// A health check, every `ping_interval_ms / ping_spread`: silent agents become unreachable,
    /// long-unreachable ones are forgotten, and agents silent for `ping_interval_ms` are pinged, at
    /// most `ceil(reachable agents / ping_spread)` per check (enough to ping every agent once a
    /// period), round robin (see [`PingSchedule`](super::timers::PingSchedule)). Unanswered
    /// launches and kills are retried once a `ping_interval_ms`, as before the spreading.
    pub(super) fn health_check(&mut self, now: u64) {
        let interval = self.config.ping_interval_ms;
        let spread = u64::from(self.config.ping_spread.max(1));
        if self.timers.pings.take_full(now, interval) {
            self.retry_tasks(now);
        }
        let slots = self.agents.slot_count();
        let reachable = (0..slots)
            .filter_map(|s| self.agents.get(AgentIdx::from_slot(s)))
            .filter(|a| a.reachable)
            .count() as u64;
        let mut budget = reachable.div_ceil(spread).max(1);
        for slot in self.timers.pings.order(slots).map(AgentIdx::from_slot) {
            let Some(a) = self.agents.get(slot) else {
                continue;
            };
            if a.reachable {
                let silent = now.saturating_sub(a.last_seen);
                if silent >= self.config.agent_timeout_ms {
                    let why = format!("it was silent for {} s", silent / 1_000);
                    self.mark_unreachable(now, slot, &why);
                } else if budget > 0
                    && self
                        .timers
                        .pings
                        .is_due(slot.slot(), a.last_seen, now, interval)
                {
                    budget -= 1;
                    let seq = self.next_ping_seq;
                    self.next_ping_seq = self.next_ping_seq.wrapping_add(1);
                    let id = a.id.clone();
                    self.timers.pings.pinged(slot.slot(), now);
                    self.send_agent(&id, MasterMsg::Ping { seq });
                }
            } else if now.saturating_sub(a.unreachable_since) >= self.config.unreachable_gc_ms {
                self.remove_agent(slot);
            }
        }
        // The next check comes after a share of the period, not the whole of it.
        self.timers
            .set_within(Timer::Health, now + (interval / spread).max(1));
    }

    pub(super) fn mark_unreachable(&mut self, now: u64, slot: AgentIdx, why: &str) {
        self.agent_changed(slot);
        self.stats.agents_lost += 1;
        let offer = self.agents.get(slot).and_then(|a| a.offer);
        let mut told: BTreeSet<FrameworkIdx> = BTreeSet::new();
        if let Some(o) = offer {
            if let Some(rec) = self.offers.get(o) {
                told.insert(rec.framework);
            }
            self.rescind_offer(o);
        }
        let Some(a) = self.agents.get_mut(slot) else {
            return;
        };
        a.reachable = false;
        a.unreachable_since = now;
        let total = a.total;
        let id = a.id.clone();
        let tasks: Vec<TaskRef> = self.tasks.on_agent(slot).cloned().collect();
        self.cluster_total.sub(total);
        for (fi, tid) in tasks {
            if self.frameworks.get(fi).is_none() {
                continue;
            }
            self.tasks.set_unreachable(fi, &tid);
            told.insert(fi);
            self.send_framework(
                fi,
                update_event(
                    tid,
                    Some(id.clone()),
                    TaskState::Unreachable,
                    Reason::None,
                    format!("agent {id} is unreachable: {why}"),
                ),
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
        self.agent_changed(slot);
        if let Some(o) = self.agents.get(slot).and_then(|a| a.offer) {
            self.rescind_offer(o);
        }
        let Some(a) = self.agents.remove(slot) else {
            return;
        };
        if a.reachable {
            self.cluster_total.sub(a.total);
        }
        let tasks: Vec<TaskRef> = self.tasks.on_agent(slot).cloned().collect();
        for (fi, tid) in &tasks {
            let removed = self.tasks.remove(*fi, tid, a.reachable);
            if removed.is_some() && self.frameworks.get(*fi).is_some() {
                let lost = update_event(
                    tid.clone(),
                    Some(a.id.clone()),
                    TaskState::Lost,
                    Reason::None,
                    format!("agent {} was unreachable too long", a.id),
                );
                self.send_completed(*fi, lost);
            }
        }
        for f in self.frameworks.values_mut() {
            f.filters.remove(&slot);
        }
    }
}
