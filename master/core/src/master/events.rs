//! The core's events: what it tells the parts beside it (the status publisher, and through it the
//! dashboard topics, the web page and `bramble up`) about the cluster, polled like its transmits.
//!
//! Recording is off until [`MasterCore::record_events`] turns it on. Change events are noted once
//! per id until polled (a round that offers 10,000 agents to one framework notes that framework
//! once), status updates in order, both bounded: past [`EVENT_IDS_CAP`] ids the notes collapse into
//! one [`CoreEvent::Overflow`], and past the update cap the oldest update is dropped.

use std::collections::{BTreeSet, VecDeque};

use agent_nostd_core::wire::Reason;
use bramble_proto::{self as proto, OfferId};

use super::registry::{AgentIdx, FrameworkIdx};
use super::*;

/// Something the core did that the parts beside it may want to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreEvent {
    /// More changed than the core noted: look at everything.
    Overflow,
    /// An agent registered, reported, changed state, got or lost an offer or a task, or is gone.
    AgentChanged {
        /// The agent.
        agent_id: String,
    },
    /// A framework registered, called, changed state, got or lost an offer or a task, or is gone.
    FrameworkChanged {
        /// The framework.
        framework_id: String,
    },
    /// A task was launched, changed state or ended.
    TaskChanged {
        /// Its framework.
        framework_id: String,
        /// The task.
        task_id: String,
    },
    /// An offer was made, answered, rescinded or expired.
    OfferChanged {
        /// The offer.
        offer_id: OfferId,
    },
    /// A status update was sent (or held) for a framework. Answers about tasks the master does
    /// not know are not events.
    TaskUpdated {
        /// The task's framework.
        framework_id: String,
        /// The update, as the framework gets it.
        update: proto::StatusUpdate,
    },
}

/// The most ids noted before the notes collapse into [`CoreEvent::Overflow`].
pub const EVENT_IDS_CAP: usize = 65_536;

/// What is noted and not yet polled.
#[derive(Debug, Clone, Default)]
pub(super) struct EventLog {
    update_cap: usize,
    updates: VecDeque<(String, proto::StatusUpdate)>,
    agents: BTreeSet<String>,
    frameworks: BTreeSet<String>,
    tasks: BTreeSet<(String, String)>,
    offers: BTreeSet<OfferId>,
    overflow: bool,
}

impl EventLog {
    fn bound(&mut self) {
        let len = self.agents.len() + self.frameworks.len() + self.tasks.len() + self.offers.len();
        if len > EVENT_IDS_CAP {
            self.agents.clear();
            self.frameworks.clear();
            self.tasks.clear();
            self.offers.clear();
            self.overflow = true;
        }
    }

    pub(super) fn agent(&mut self, agent_id: &str) {
        if !self.agents.contains(agent_id) {
            self.agents.insert(agent_id.to_owned());
            self.bound();
        }
    }

    pub(super) fn framework(&mut self, framework_id: &str) {
        if !self.frameworks.contains(framework_id) {
            self.frameworks.insert(framework_id.to_owned());
            self.bound();
        }
    }

    pub(super) fn task(&mut self, framework_id: &str, task_id: &str) {
        self.tasks
            .insert((framework_id.to_owned(), task_id.to_owned()));
        self.bound();
    }

    pub(super) fn offer(&mut self, offer_id: OfferId) {
        self.offers.insert(offer_id);
        self.bound();
    }

    pub(super) fn update(&mut self, framework_id: &str, update: &proto::StatusUpdate) {
        if update.reason == Reason::UnknownTask {
            return;
        }
        if self.updates.len() >= self.update_cap {
            self.updates.pop_front();
        }
        self.updates
            .push_back((framework_id.to_owned(), update.clone()));
    }

    fn pop(&mut self) -> Option<CoreEvent> {
        if std::mem::take(&mut self.overflow) {
            return Some(CoreEvent::Overflow);
        }
        if let Some((framework_id, update)) = self.updates.pop_front() {
            return Some(CoreEvent::TaskUpdated {
                framework_id,
                update,
            });
        }
        if let Some(agent_id) = self.agents.pop_first() {
            return Some(CoreEvent::AgentChanged { agent_id });
        }
        if let Some(framework_id) = self.frameworks.pop_first() {
            return Some(CoreEvent::FrameworkChanged { framework_id });
        }
        if let Some((framework_id, task_id)) = self.tasks.pop_first() {
            return Some(CoreEvent::TaskChanged {
                framework_id,
                task_id,
            });
        }
        let offer_id = self.offers.pop_first()?;
        Some(CoreEvent::OfferChanged { offer_id })
    }
}

impl MasterCore {
    /// Turns event recording on, keeping at most `update_cap` status updates (the oldest are
    /// dropped), or off with 0. See [`poll_event`](Self::poll_event).
    pub fn record_events(&mut self, update_cap: usize) {
        self.events = (update_cap > 0).then(|| EventLog {
            update_cap,
            ..EventLog::default()
        });
    }

    /// The next event, or `None` (always `None` while recording is off). Status updates come in
    /// the order they were sent; change events once per id since the last poll.
    pub fn poll_event(&mut self) -> Option<CoreEvent> {
        self.events.as_mut()?.pop()
    }

    pub(super) fn agent_changed(&mut self, slot: AgentIdx) {
        if let (Some(ev), Some(a)) = (self.events.as_mut(), self.agents.get(slot)) {
            ev.agent(&a.id);
        }
    }

    pub(super) fn agent_id_changed(&mut self, agent_id: &str) {
        if let Some(ev) = self.events.as_mut() {
            ev.agent(agent_id);
        }
    }

    pub(super) fn framework_changed(&mut self, fi: FrameworkIdx) {
        if let (Some(ev), Some(f)) = (self.events.as_mut(), self.frameworks.get(fi)) {
            ev.framework(&f.id);
        }
    }

    /// A task changed: it, its framework and its agent.
    pub(super) fn task_changed(&mut self, fi: FrameworkIdx, tid: &str) {
        let (Some(ev), Some(f)) = (self.events.as_mut(), self.frameworks.get(fi)) else {
            return;
        };
        ev.task(&f.id, tid);
        ev.framework(&f.id);
        if let Some(a) = self
            .tasks
            .get(fi, tid)
            .and_then(|t| self.agents.get(t.agent))
        {
            ev.agent(&a.id);
        }
    }

    pub(super) fn offer_changed(&mut self, id: OfferId) {
        if let Some(ev) = self.events.as_mut() {
            ev.offer(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use agent_nostd_core::wire::TaskState;

    use super::*;

    #[test]
    fn changes_are_noted_once_per_id_and_updates_keep_their_order() {
        let mut log = EventLog {
            update_cap: 2,
            ..EventLog::default()
        };
        log.agent("pi");
        log.agent("pi");
        let update = |t: &str| proto::StatusUpdate {
            task_id: t.into(),
            agent_id: None,
            state: TaskState::Running,
            reason: Reason::None,
            message: String::new(),
            update_id: None,
        };
        for t in ["a", "b", "c"] {
            log.update("fw", &update(t));
        }
        let events: Vec<CoreEvent> = std::iter::from_fn(|| log.pop()).collect();
        assert_eq!(
            events,
            [
                CoreEvent::TaskUpdated {
                    framework_id: "fw".into(),
                    update: update("b")
                },
                CoreEvent::TaskUpdated {
                    framework_id: "fw".into(),
                    update: update("c")
                },
                CoreEvent::AgentChanged {
                    agent_id: "pi".into()
                },
            ]
        );
    }

    #[test]
    fn too_many_noted_ids_collapse_into_one_overflow() {
        let mut log = EventLog {
            update_cap: 1,
            ..EventLog::default()
        };
        for id in 0..=EVENT_IDS_CAP as u64 {
            log.offer(id);
        }
        assert_eq!(log.pop(), Some(CoreEvent::Overflow));
        assert_eq!(log.pop(), None);
    }
}
