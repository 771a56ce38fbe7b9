//! End-to-end delivery of status updates: the framework's acknowledgement travels to the agent,
//! updates a framework has not acknowledged are resent when it (re-)registers, and each framework's
//! completed-task cache answers reconciliation of tasks that ended.
//!
//! An agent keeps every status update, resending it with backoff, until a `StatusAck` names it.
//! The master sends that ack only once the *framework* acknowledged the update
//! ([`Call::Acknowledge`](bramble_proto::Call::Acknowledge)), or at once when no framework is left
//! to tell. What the master keeps meanwhile is bounded: the newest unacknowledged update of each
//! task it holds, and per framework [`Config::max_completed_tasks`] ended tasks (oldest dropped and
//! counted in `completed_evicted`; an evicted update still unacknowledged comes back with its
//! agent's next resend).

use std::collections::VecDeque;

use agent_nostd_core::ids::validate_id;
use agent_nostd_core::wire::{MasterMsg, Reason, StatusAck};
use bramble_proto::{self as proto, Acknowledge, Event};

use super::registry::FrameworkIdx;
use super::*;

/// A task that ended, as its framework's completed-task cache keeps it.
#[derive(Debug, Clone)]
pub(super) struct Completed {
    /// Its terminal update; `update_id` is the agent's, when it came from one.
    pub(super) update: proto::StatusUpdate,
    /// The framework acknowledged it (or it needs no acknowledgement).
    pub(super) acked: bool,
    /// Known from the agent's task list only, while the agent still holds its own update (with
    /// the exit code) unacknowledged: reconciliation waits for that update instead of answering
    /// without a reason, for as long as the master knows the agent (reachable or not).
    pub(super) awaiting_agent: bool,
}

/// A framework's completed-task cache: the latest ended tasks, oldest first.
#[derive(Debug, Clone, Default)]
pub(super) struct CompletedTasks {
    tasks: VecDeque<Completed>,
}

impl CompletedTasks {
    /// The entry of task `tid`, if it is cached.
    pub(super) fn get(&self, tid: &str) -> Option<&Completed> {
        self.tasks.iter().rev().find(|c| c.update.task_id == tid)
    }

    fn get_mut(&mut self, tid: &str) -> Option<&mut Completed> {
        self.tasks
            .iter_mut()
            .rev()
            .find(|c| c.update.task_id == tid)
    }

    /// Records task `c`'s end, replacing an older entry of the same id; returns how many entries
    /// were evicted to stay within `max`.
    fn push(&mut self, c: Completed, max: usize) -> u64 {
        self.tasks
            .retain(|old| old.update.task_id != c.update.task_id);
        let mut evicted = 0;
        while self.tasks.len() >= max.max(1) {
            self.tasks.pop_front();
            evicted += 1;
        }
        self.tasks.push_back(c);
        evicted
    }

    /// Forgets task `tid` (its id is launched again).
    pub(super) fn remove(&mut self, tid: &str) {
        self.tasks.retain(|c| c.update.task_id != tid);
    }

    /// The updates still waiting for the framework's acknowledgement.
    fn unacked(&self) -> impl Iterator<Item = &proto::StatusUpdate> {
        self.tasks.iter().filter(|c| !c.acked).map(|c| &c.update)
    }

    /// How many entries it holds.
    pub(super) fn len(&self) -> usize {
        self.tasks.len()
    }
}

/// How many ended tasks of frameworks the master does not know (yet) it keeps, from agents'
/// re-registrations after a master restart, until their framework registers.
pub(super) const UNCLAIMED_KEPT: usize = 4_096;

impl MasterCore {
    /// Keeps the end of a task of framework `fid`, which this master does not know yet.
    pub(super) fn keep_unclaimed(&mut self, fid: &str, update: proto::StatusUpdate) {
        if self.unclaimed.len() >= UNCLAIMED_KEPT {
            self.unclaimed.pop_front();
            self.stats.completed_evicted += 1;
        }
        self.unclaimed.push_back((fid.to_owned(), update));
    }

    /// Framework `fi` is known now: the ends of its tasks that agents reported before go to its
    /// completed-task cache.
    pub(super) fn claim_completed(&mut self, fi: FrameworkIdx) {
        let Some(fid) = self.frameworks.get(fi).map(|f| f.id.clone()) else {
            return;
        };
        if !self.unclaimed.iter().any(|(f, _)| *f == fid) {
            return;
        }
        let (mine, rest): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.unclaimed)
            .into_iter()
            .partition(|(f, _)| *f == fid);
        self.unclaimed = rest;
        for (_, update) in mine {
            let known = self
                .frameworks
                .get(fi)
                .is_some_and(|f| f.completed.get(&update.task_id).is_some());
            if !known && !self.tasks.contains(fi, &update.task_id) {
                self.remember_completed(fi, update);
            }
        }
    }

    /// Records that task `tid` of framework `fi` ended with `update` (forwarded by the caller).
    pub(super) fn remember_completed(&mut self, fi: FrameworkIdx, update: proto::StatusUpdate) {
        self.remember_completed_as(fi, update, false);
    }

    /// [`remember_completed`](Self::remember_completed), noting whether the agent still holds its
    /// own update of that end (see [`Completed::awaiting_agent`]).
    pub(super) fn remember_completed_as(
        &mut self,
        fi: FrameworkIdx,
        update: proto::StatusUpdate,
        awaiting_agent: bool,
    ) {
        let max = self.config.max_completed_tasks;
        let Some(f) = self.frameworks.get_mut(fi) else {
            return;
        };
        let acked = update.update_id.is_none();
        let c = Completed {
            update,
            acked,
            awaiting_agent,
        };
        self.stats.completed_evicted += f.completed.push(c, max);
    }

    /// Sends framework `fi` the master's own terminal `event` about a task it just ended, and
    /// remembers it for reconciliation.
    pub(super) fn send_completed(&mut self, fi: FrameworkIdx, event: Event) {
        if let Event::Update(u) = &event {
            self.remember_completed(fi, u.clone());
        }
        self.send_framework(fi, event);
    }

    /// A terminal update for a task the master no longer holds (it ended before, or the master
    /// restarted): forwarded once more unless the framework has acknowledged it already. Returns
    /// whether the master should acknowledge it to the agent itself.
    pub(super) fn ended_task_update(
        &mut self,
        fi: FrameworkIdx,
        update: proto::StatusUpdate,
    ) -> bool {
        // `Some(settled)` when the cache holds an end of this task from this agent already; an
        // entry known from the agent's task list only (no id) is replaced by the update below.
        // The same end again (a resend, or under another id from a restarted agent) goes on while
        // unacknowledged; another end from that agent (its answer to a late kill of a task it no
        // longer holds) is dropped: the first one stands.
        let cached = self
            .frameworks
            .get(fi)
            .and_then(|f| f.completed.get(&update.task_id))
            .filter(|c| c.update.agent_id == update.agent_id && c.update.update_id.is_some())
            .map(|c| c.acked || c.update.state != update.state);
        match cached {
            Some(true) => {
                self.stats.duplicate_status_updates += 1;
                true
            }
            Some(false) => {
                self.stats.duplicate_status_updates += 1;
                self.send_framework(fi, Event::Update(update));
                false
            }
            None => {
                self.stats.status_updates += 1;
                self.send_framework(fi, Event::Update(update.clone()));
                self.remember_completed(fi, update);
                false
            }
        }
    }

    /// Whether task `tid` of framework `fi` ended on agent `agent_id`, by the completed-task
    /// cache.
    pub(super) fn completed_on(&self, fi: FrameworkIdx, tid: &str, agent_id: &str) -> bool {
        self.frameworks
            .get(fi)
            .and_then(|f| f.completed.get(tid))
            .is_some_and(|c| c.update.agent_id.as_deref() == Some(agent_id))
    }

    /// The framework `fi` handled an update: the agent may forget it.
    pub(super) fn acknowledge(&mut self, fi: FrameworkIdx, ack: Acknowledge) {
        if validate_id(&ack.agent_id).is_err() || validate_id(&ack.task_id).is_err() {
            self.stats.malformed += 1;
            return;
        }
        let matches = |u: &proto::StatusUpdate| {
            u.agent_id.as_deref() == Some(ack.agent_id.as_str())
                && u.update_id
                    .is_some_and(|id| !agent_nostd_core::wire::is_newer_update(id, ack.update_id))
        };
        if let Some(t) = self.tasks.get_mut(fi, &ack.task_id) {
            if t.unacked.as_deref().is_some_and(matches) {
                t.unacked = None;
            }
        } else if let Some(c) = self
            .frameworks
            .get_mut(fi)
            .and_then(|f| f.completed.get_mut(&ack.task_id))
        {
            if matches(&c.update) {
                c.acked = true;
            }
        }
        let Some(fid) = self.frameworks.get(fi).map(|f| f.id.clone()) else {
            return;
        };
        // Passed on whether or not this master forwarded the update (a previous one may have):
        // the agent checks that it holds the update.
        if self.agents.lookup(&ack.agent_id).is_none() {
            return;
        }
        let (Ok(framework_id), Ok(task_id)) = (
            agent_nostd_core::ids::id(&fid),
            agent_nostd_core::ids::id(&ack.task_id),
        ) else {
            return;
        };
        self.stats.acknowledgements += 1;
        self.send_agent(
            &ack.agent_id,
            MasterMsg::StatusAck(StatusAck {
                framework_id,
                task_id,
                update_id: ack.update_id,
            }),
        );
    }

    /// Sends framework `fi` again every update it has not acknowledged (it just (re-)registered:
    /// what was sent before may have been lost with its connection).
    pub(super) fn resend_unacked(&mut self, fi: FrameworkIdx) {
        let mut updates: Vec<proto::StatusUpdate> = self
            .tasks
            .of_framework(fi)
            .filter_map(|(_, t)| t.unacked.as_deref().cloned())
            .collect();
        if let Some(f) = self.frameworks.get(fi) {
            updates.extend(f.completed.unacked().cloned());
        }
        for u in updates {
            self.stats.updates_resent += 1;
            self.send_framework(fi, Event::Update(u));
        }
    }

    /// The answer to reconciling task `tid` of framework `fi`, or `None` when the master does not
    /// know it yet may learn of it (agents are still re-registering after its start).
    pub(super) fn reconcile_answer(
        &mut self,
        now: u64,
        fi: FrameworkIdx,
        tid: &str,
    ) -> Option<Event> {
        let known = self.tasks.get(fi, tid).map(|t| (t.agent, t.state));
        if let Some((agent, state)) = known {
            return Some(update_event(
                tid,
                self.agents.get(agent).map(|a| a.id.clone()),
                state,
                Reason::None,
                "reconciliation",
            ));
        }
        if let Some(c) = self.frameworks.get(fi).and_then(|f| f.completed.get(tid)) {
            // Its agent resends the update with the exit code as soon as it is registered again,
            // so the answer waits while the master still knows the agent, reachable or not (an
            // unreachable agent is forgotten after `unreachable_gc_ms`): a board that is back
            // within that gives the exit code, one that never comes back gives the state alone.
            let agent_known = c
                .update
                .agent_id
                .as_deref()
                .is_some_and(|id| self.agents.lookup(id).is_some());
            if c.awaiting_agent && agent_known {
                self.stats.unknown_task_answers_deferred += 1;
                return None;
            }
            let mut update = c.update.clone();
            update.update_id = None;
            if c.awaiting_agent {
                update.message = format!(
                    "ended while its agent was unreachable; the agent was lost before it told the exit code{}",
                    if update.message.is_empty() { String::new() } else { format!(" ({})", update.message) }
                );
            }
            return Some(Event::Update(update));
        }
        self.unknown_task_answer(now, fi, tid)
    }

    /// TASK_LOST for a task the master does not know, or `None` within the re-registration window
    /// after the master started (counted) when the framework was registered with an earlier
    /// master: its agents may still be re-registering with the task.
    pub(super) fn unknown_task_answer(
        &mut self,
        now: u64,
        fi: FrameworkIdx,
        tid: &str,
    ) -> Option<Event> {
        let fresh = self.frameworks.get(fi).is_some_and(|f| f.fresh);
        if !fresh
            && now
                < self
                    .started
                    .saturating_add(self.config.reregistration_window_ms)
        {
            self.stats.unknown_task_answers_deferred += 1;
            return None;
        }
        Some(framework::unknown_task_update(tid))
    }
}
