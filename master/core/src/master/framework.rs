//! A framework's lifecycle: registration and failover, its calls, disconnection, recovery from
//! agents' task lists after a master restart, and removal.

use std::collections::{BTreeSet, HashMap, VecDeque};

use agent_nostd_core::ids::validate_id;
use agent_nostd_core::wire::{Reason, TaskState};
use bramble_proto::{self as proto, Call, ErrorCode, Event, OfferId, Register};

use super::delivery::CompletedTasks;
use super::registry::{AgentIdx, FrameworkIdx, Keyed};
use super::*;
use crate::allocator::Amount;

/// The lifecycle of a framework, as the master sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameworkState {
    /// Registered and connected: it gets offers.
    Active,
    /// Its connection dropped; its tasks are killed at `deadline` unless it re-registers.
    Disconnected {
        /// When it is removed.
        deadline: u64,
    },
    /// Known only from agents' task lists (after a master restart); removed at `deadline` unless it
    /// re-registers.
    Recovered {
        /// When it is removed.
        deadline: u64,
    },
}

#[derive(Debug, Clone)]
pub(super) struct Framework {
    pub(super) id: String,
    pub(super) client: Option<String>,
    pub(super) info: Register,
    pub(super) state: FrameworkState,
    pub(super) suppressed: bool,
    /// Agent → until when it is not offered to this framework.
    pub(super) filters: HashMap<AgentIdx, u64>,
    pub(super) offered: Amount,
    pub(super) offers: BTreeSet<OfferId>,
    pub(super) held: VecDeque<Event>,
    /// The latest tasks that ended, for reconciliation and resends.
    pub(super) completed: CompletedTasks,
    /// It registered first with this master: every task it has was launched here, so a task this
    /// master does not know is unknown for good, re-registration window or not.
    pub(super) fresh: bool,
    pub(super) order: u64,
}

impl Framework {
    /// What it holds, given what its tasks hold (`allocated`): that plus what is on offer to it.
    pub(super) fn used(&self, allocated: Amount) -> Amount {
        allocated.plus(self.offered)
    }

    /// Whether it holds less than its guarantee, given what its tasks hold.
    pub(super) fn below_guarantee(&self, allocated: Amount) -> bool {
        self.info
            .guarantee
            .as_ref()
            .is_some_and(|g| !self.used(allocated).covers(g))
    }
}

pub(super) fn unknown_task_update(tid: &str) -> Event {
    update_event(
        tid.to_owned(),
        None,
        TaskState::Lost,
        Reason::UnknownTask,
        "the master knows no such task",
    )
}

impl Keyed for Framework {
    fn id(&self) -> &str {
        &self.id
    }
}

impl MasterCore {
    /// The frameworks registered and connected.
    pub(super) fn active_frameworks(&self) -> Vec<FrameworkIdx> {
        self.frameworks
            .iter()
            .filter(|(_, f)| f.state == FrameworkState::Active)
            .map(|(i, _)| i)
            .collect()
    }

    pub(super) fn framework_call(&mut self, now: u64, fi: FrameworkIdx, call: Call) {
        match call {
            Call::Accept(accept) => self.accept(now, fi, accept),
            Call::Decline(d) => {
                if d.offer_ids.len() > proto::MAX_OFFERS_PER_CALL {
                    return self.call_error(fi, ErrorCode::InvalidCall, None, "too many offers");
                }
                let refuse = d
                    .refuse_seconds
                    .map_or(self.config.default_refuse_ms, |s| u64::from(s) * 1_000);
                for id in d.offer_ids {
                    let Some(rec) = self.offers.get(id).copied() else {
                        continue;
                    };
                    if rec.framework != fi {
                        continue;
                    }
                    self.stats.offers_declined += 1;
                    self.settle_offer(id);
                    if refuse > 0 {
                        if let Some(f) = self.frameworks.get_mut(fi) {
                            f.filters.insert(rec.agent, now + refuse);
                        }
                    }
                }
                self.request_allocation(now);
            }
            Call::Revive => {
                if let Some(f) = self.frameworks.get_mut(fi) {
                    f.filters.clear();
                    f.suppressed = false;
                }
                self.request_allocation(now);
            }
            Call::Suppress => {
                if let Some(f) = self.frameworks.get_mut(fi) {
                    f.suppressed = true;
                }
            }
            Call::Kill(k) => {
                let task = self.tasks.get_mut(fi, &k.task_id);
                match task {
                    Some(t) => {
                        t.kill_grace = Some(k.grace_ms);
                        t.since = now;
                        let agent = t.agent;
                        self.send_kill(agent, fi, &k.task_id, k.grace_ms);
                    }
                    // Not held: its end if it ended, else what reconciling an unknown task answers.
                    None => {
                        if let Some(answer) = self.reconcile_answer(now, fi, &k.task_id) {
                            self.send_framework(fi, answer);
                        }
                    }
                }
            }
            Call::Reconcile { task_ids } => {
                if task_ids.len() > proto::MAX_TASKS_PER_CALL {
                    return self.call_error(fi, ErrorCode::InvalidCall, None, "too many tasks");
                }
                let ids: Vec<String> = if task_ids.is_empty() {
                    self.tasks
                        .of_framework(fi)
                        .map(|(tid, _)| tid.to_owned())
                        .collect()
                } else {
                    task_ids
                };
                for tid in ids {
                    if let Some(event) = self.reconcile_answer(now, fi, &tid) {
                        self.send_framework(fi, event);
                    }
                }
            }
            Call::Teardown => {
                self.remove_framework(now, fi);
                self.recompute_framework_deadline();
            }
            Call::Acknowledge(ack) => self.acknowledge(fi, ack),
            // Handled by `handle_framework_call` before a framework is looked up.
            Call::Register(_) | Call::ReRegister(_) | Call::Gone { .. } => {}
        }
    }

    pub(super) fn register_framework(
        &mut self,
        now: u64,
        client: &str,
        previous: Option<String>,
        info: Register,
    ) {
        let refuse = |core: &mut Self, why: String| {
            core.send_client(
                client,
                Event::Error {
                    code: ErrorCode::RegistrationRefused,
                    offer_id: None,
                    message: why,
                },
            )
        };
        if let Err(why) = info.validate() {
            return refuse(self, why);
        }
        let info = match &self.config.authorization {
            None => info,
            Some(authz) => match authz.register(client, info) {
                Ok(info) => info,
                Err(why) => {
                    self.stats.unauthorized += 1;
                    return refuse(self, why.to_string());
                }
            },
        };
        if info.failover_timeout_ms > self.config.max_failover_timeout_ms {
            let max = self.config.max_failover_timeout_ms;
            return refuse(self, format!("failover_timeout_ms must be at most {max}"));
        }
        let existing = match &previous {
            Some(fid) => {
                if validate_id(fid).is_err() {
                    return refuse(self, format!("{fid:?} is not a valid framework id"));
                }
                if self.removed_ids.iter().any(|r| r == fid) {
                    return refuse(self, format!("framework {fid} was removed"));
                }
                self.frameworks.lookup(fid.as_str())
            }
            // A repeated registration from the same client (e.g. a QoS 1 duplicate) gets the same id.
            None => self.clients.get(client).copied(),
        };
        let fi = match existing {
            Some(fi) => fi,
            None => {
                if self.frameworks.len() >= self.config.max_frameworks {
                    return refuse(self, "the master has too many frameworks".into());
                }
                let fresh = previous.is_none();
                let fid = match previous {
                    Some(fid) => fid,
                    None => loop {
                        let seq = self.next_framework_seq;
                        self.next_framework_seq += 1;
                        let fid = format!("{:x}-{seq}", self.epoch);
                        // A framework re-registering with a made-up id may hold this one already.
                        if self.frameworks.lookup(&fid).is_none()
                            && !self.removed_ids.contains(&fid)
                        {
                            break fid;
                        }
                    },
                };
                let fi = self.insert_framework(fid, info.clone(), FrameworkState::Active);
                if let Some(f) = self.frameworks.get_mut(fi) {
                    f.fresh = fresh;
                }
                fi
            }
        };
        // The client name now points at this framework only.
        if let Some(old) = self.frameworks.get(fi).and_then(|f| f.client.clone()) {
            if self.clients.get(&old) == Some(&fi) {
                self.clients.remove(&old);
            }
        }
        if let Some(&other) = self.clients.get(client) {
            if other != fi {
                self.disconnect_framework(now, other);
            }
        }
        self.clients.insert(client.to_owned(), fi);
        let Some(f) = self.frameworks.get_mut(fi) else {
            return;
        };
        f.client = Some(client.to_owned());
        f.info = info;
        f.state = FrameworkState::Active;
        // Every (re-)registration starts wanting offers, as a Mesos SUBSCRIBE without suppressed
        // roles does: a Revive sent beside the registration (on another topic) may reach the
        // master first and be refused, and must not leave the framework suppressed for good. A
        // framework that wants none suppresses again.
        f.suppressed = false;
        let fid = f.id.clone();
        let held: Vec<Event> = f.held.drain(..).collect();
        self.send_client(
            client,
            Event::Registered {
                framework_id: fid,
                master_epoch: self.epoch,
            },
        );
        for e in held {
            self.send_framework(fi, e);
        }
        self.resend_unacked(fi);
        self.recompute_framework_deadline();
        self.request_allocation(now);
    }

    pub(super) fn insert_framework(
        &mut self,
        fid: String,
        info: Register,
        state: FrameworkState,
    ) -> FrameworkIdx {
        let order = self.next_framework_seq;
        self.next_framework_seq += 1;
        let f = Framework {
            id: fid,
            client: None,
            info,
            state,
            suppressed: false,
            filters: HashMap::new(),
            offered: Amount::default(),
            offers: BTreeSet::new(),
            held: VecDeque::new(),
            completed: CompletedTasks::default(),
            fresh: false,
            order,
        };
        let slot = self.frameworks.insert(f);
        self.framework_changed(slot);
        self.claim_completed(slot);
        slot
    }

    /// A framework named in an agent's task list that this master does not know (it restarted).
    pub(super) fn recover_framework(&mut self, now: u64, fid: &str) -> Option<FrameworkIdx> {
        if self.removed_ids.iter().any(|r| r == fid)
            || self.frameworks.len() >= self.config.max_frameworks
        {
            return None;
        }
        let mut info = Register::new(fid);
        info.failover_timeout_ms = self.config.framework_recovery_timeout_ms;
        let deadline = now + self.config.framework_recovery_timeout_ms;
        let fi =
            self.insert_framework(fid.to_owned(), info, FrameworkState::Recovered { deadline });
        self.recompute_framework_deadline();
        Some(fi)
    }

    pub(super) fn disconnect_framework(&mut self, now: u64, fi: FrameworkIdx) {
        self.framework_changed(fi);
        let Some(f) = self.frameworks.get_mut(fi) else {
            return;
        };
        if f.state != FrameworkState::Active {
            return;
        }
        f.state = FrameworkState::Disconnected {
            deadline: now + f.info.failover_timeout_ms,
        };
        if let Some(c) = f.client.take() {
            if self.clients.get(&c) == Some(&fi) {
                self.clients.remove(&c);
            }
        }
        let offers: Vec<OfferId> = f.offers.iter().copied().collect();
        for o in offers {
            self.settle_offer(o);
        }
        self.recompute_framework_deadline();
        self.request_allocation(now);
    }

    pub(super) fn remove_framework(&mut self, now: u64, fi: FrameworkIdx) {
        self.framework_changed(fi);
        let offers: Vec<OfferId> = self
            .frameworks
            .get(fi)
            .map(|f| f.offers.iter().copied().collect())
            .unwrap_or_default();
        for o in offers {
            self.settle_offer(o);
        }
        let tasks: Vec<(String, AgentIdx)> = self
            .tasks
            .of_framework(fi)
            .map(|(tid, t)| (tid.to_owned(), t.agent))
            .collect();
        for (tid, agent) in tasks {
            self.send_kill(agent, fi, &tid, 0);
            self.end_task(fi, &tid);
        }
        let Some(f) = self.frameworks.remove(fi) else {
            return;
        };
        if let Some(c) = &f.client {
            if self.clients.get(c) == Some(&fi) {
                self.clients.remove(c);
            }
        }
        if self.removed_ids.len() >= REMOVED_IDS_KEPT {
            self.removed_ids.pop_front();
        }
        self.removed_ids.push_back(f.id);
        self.request_allocation(now);
    }

    pub(super) fn recompute_framework_deadline(&mut self) {
        let deadline = self
            .frameworks
            .values()
            .filter_map(|f| match f.state {
                FrameworkState::Disconnected { deadline }
                | FrameworkState::Recovered { deadline } => Some(deadline),
                FrameworkState::Active => None,
            })
            .min();
        self.timers.set(Timer::FrameworkDeadline, deadline);
    }
}
