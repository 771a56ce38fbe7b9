//! Change notes for the status publisher: which agents, frameworks, tasks and offers changed, and
//! the status updates sent to frameworks, recorded only when [`MasterCore::record_task_updates`] is on.

use std::collections::BTreeSet;

use bramble_proto::{self as proto, OfferId};

use super::registry::{AgentIdx, FrameworkIdx};
use super::*;

/// What changed since the status publisher last looked, recorded when
/// [`MasterCore::record_task_updates`] is on: the ids of the agents, frameworks, tasks and offers
/// whose state may differ (ids of things now gone included).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusChanges {
    /// Agents.
    pub agents: BTreeSet<String>,
    /// Frameworks.
    pub frameworks: BTreeSet<String>,
    /// Tasks, as (framework id, task id).
    pub tasks: BTreeSet<(String, String)>,
    /// Offers.
    pub offers: BTreeSet<OfferId>,
    /// More changed than the sets may hold ([`STATUS_CHANGES_CAP`]): look at everything.
    pub overflow: bool,
}

/// The most ids [`StatusChanges`] holds before it gives up on details (`overflow`).
pub const STATUS_CHANGES_CAP: usize = 65_536;

impl StatusChanges {
    pub(super) fn bound(&mut self) {
        let len = self.agents.len() + self.frameworks.len() + self.tasks.len() + self.offers.len();
        if len > STATUS_CHANGES_CAP {
            *self = StatusChanges {
                overflow: true,
                ..StatusChanges::default()
            };
        }
    }
}

/// A status update the master sent (or held) for a framework, recorded for the dashboard when
/// [`MasterCore::record_task_updates`] is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskUpdateRecord {
    /// The task's framework.
    pub framework_id: String,
    /// The update, as the framework gets it.
    pub update: proto::StatusUpdate,
}

impl MasterCore {
    /// Records, for the status publisher, every status update sent or held for a framework (but
    /// answers about unknown tasks), keeping at most `cap` of them (the oldest are dropped), for
    /// [`poll_task_update`](Self::poll_task_update), and what changed, for
    /// [`take_status_changes`](Self::take_status_changes). 0 turns recording off.
    pub fn record_task_updates(&mut self, cap: usize) {
        self.task_log_cap = cap;
        while self.task_log.len() > cap {
            self.task_log.pop_front();
        }
        self.changes = (cap > 0).then(StatusChanges::default);
    }

    /// What changed since the last call (empty when recording is off).
    pub fn take_status_changes(&mut self) -> StatusChanges {
        match self.changes.as_mut() {
            Some(c) => std::mem::take(c),
            None => StatusChanges::default(),
        }
    }

    pub(super) fn touch_agent(&mut self, slot: AgentIdx) {
        if let (Some(c), Some(a)) = (self.changes.as_mut(), self.agents.get(slot)) {
            c.agents.insert(a.id.clone());
            c.bound();
        }
    }

    pub(super) fn touch_agent_id(&mut self, agent_id: &str) {
        if let Some(c) = self.changes.as_mut() {
            c.agents.insert(agent_id.to_owned());
            c.bound();
        }
    }

    pub(super) fn touch_framework(&mut self, fi: FrameworkIdx) {
        if let (Some(c), Some(f)) = (self.changes.as_mut(), self.frameworks.get(fi)) {
            c.frameworks.insert(f.id.clone());
            c.bound();
        }
    }

    /// A task changed: it, its framework and its agent.
    pub(super) fn touch_task(&mut self, fi: FrameworkIdx, tid: &str) {
        let Some(c) = self.changes.as_mut() else {
            return;
        };
        let Some(f) = self.frameworks.get(fi) else {
            return;
        };
        c.tasks.insert((f.id.clone(), tid.to_owned()));
        c.frameworks.insert(f.id.clone());
        if let Some(a) = f.tasks.get(tid).and_then(|t| self.agents.get(t.agent)) {
            c.agents.insert(a.id.clone());
        }
        c.bound();
    }

    pub(super) fn touch_offer(&mut self, id: OfferId) {
        if let Some(c) = self.changes.as_mut() {
            c.offers.insert(id);
            c.bound();
        }
    }

    /// The next recorded status update, oldest first.
    pub fn poll_task_update(&mut self) -> Option<TaskUpdateRecord> {
        self.task_log.pop_front()
    }
}
