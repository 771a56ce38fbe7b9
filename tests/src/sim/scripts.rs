//! The scripted stand-in frameworks: [`Script`]s that answer events with calls, and the
//! [`SimFramework`] that runs one.

use std::collections::{BTreeMap, BTreeSet};

use agent_nostd_core::wire::TaskState;
use agent_nostd_core::Resources;
use bramble_proto::{self as proto, Call, Decline, Event, Offer, Register, StatusUpdate, TaskInfo};

/// What a scripted framework does with the events it receives.
pub trait Script {
    /// Called for every event after it is logged; returns the calls to make.
    fn on_event(&mut self, now: u64, event: &Event) -> Vec<Call>;
}

/// A script that does nothing: the test makes every call itself.
#[derive(Debug, Default)]
pub struct Manual;

impl Script for Manual {
    fn on_event(&mut self, _now: u64, _event: &Event) -> Vec<Call> {
        Vec::new()
    }
}

/// A script that launches tasks of one size on every offer: up to `per_offer` per offer and `limit`
/// in all (counting only tasks still running). Offers where nothing fits, or beyond the limit, are
/// declined with `refuse_seconds`.
#[derive(Debug, Clone)]
pub struct PackTasks {
    /// Every task's size.
    pub task: Resources,
    /// The most tasks launched on one offer.
    pub per_offer: usize,
    /// The most tasks running at once.
    pub limit: usize,
    /// The decline filter, in seconds (`None` for the master's default).
    pub refuse_seconds: Option<u32>,
    /// Task ids are `{prefix}{n}`.
    pub prefix: String,
    /// Tasks launched so far (the next `n`).
    pub launched: usize,
    /// Tasks launched and not yet seen ending.
    pub running: usize,
    /// Offers already answered (a duplicated event is not answered twice), with the number of tasks
    /// launched on each.
    answered: BTreeMap<u64, usize>,
    /// Tasks seen ending (an update delivered twice is counted once).
    ended: BTreeSet<String>,
}

impl PackTasks {
    /// Tasks of `task`, one per offer, at most `limit` at once.
    pub fn new(prefix: &str, task: Resources, per_offer: usize, limit: usize) -> Self {
        PackTasks {
            task,
            per_offer,
            limit,
            refuse_seconds: None,
            prefix: prefix.to_owned(),
            launched: 0,
            running: 0,
            answered: BTreeMap::new(),
            ended: BTreeSet::new(),
        }
    }
}

impl Script for PackTasks {
    fn on_event(&mut self, _now: u64, event: &Event) -> Vec<Call> {
        match event {
            Event::Offers(offers) => offers
                .iter()
                .filter(|o| !self.answered.contains_key(&o.offer_id))
                .collect::<Vec<_>>()
                .into_iter()
                .map(|o| {
                    let mut left = o.resources;
                    let mut tasks = Vec::new();
                    while tasks.len() < self.per_offer
                        && self.running < self.limit
                        && self.task.fits_in(&left)
                    {
                        left = left.saturating_sub(&self.task);
                        let tid = format!("{}{}", self.prefix, self.launched);
                        self.launched += 1;
                        self.running += 1;
                        tasks.push(TaskInfo::new(&tid, &["/bin/work"], self.task));
                    }
                    self.answered.insert(o.offer_id, tasks.len());
                    if tasks.is_empty() {
                        Call::Decline(Decline {
                            offer_ids: vec![o.offer_id],
                            refuse_seconds: self.refuse_seconds,
                        })
                    } else {
                        Call::Accept(proto::Accept {
                            offer_id: o.offer_id,
                            tasks,
                        })
                    }
                })
                .collect(),
            Event::Registered { .. } => {
                // Offer ids are unique within one master epoch only.
                self.answered.clear();
                Vec::new()
            }
            Event::Update(u) if u.state.is_terminal() && u.task_id.starts_with(&self.prefix) => {
                if self.ended.insert(u.task_id.clone()) {
                    self.running = self.running.saturating_sub(1);
                }
                Vec::new()
            }
            Event::Error {
                offer_id: Some(id), ..
            } => {
                // The accept was refused: none of its tasks runs.
                let tasks = self.answered.get_mut(id).map_or(0, std::mem::take);
                self.running = self.running.saturating_sub(tasks);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }
}

/// One scripted framework.
pub struct SimFramework {
    /// Its client name.
    pub client: String,
    /// Its registration.
    pub register: Register,
    /// Its id, once registered.
    pub framework_id: Option<String>,
    /// The epoch of the master that registered it.
    pub master_epoch: u64,
    /// Whether it is connected to the broker.
    pub connected: bool,
    /// Every event received, with the time it arrived.
    pub events: Vec<(u64, Event)>,
    /// What it does on events.
    pub script: Box<dyn Script>,
    /// Messages the broker keeps for it while it is disconnected (a persistent QoS 1 session).
    pub(super) parked: Vec<(String, Vec<u8>)>,
    /// Calls it made: its registrations' nonces and its calls' numbers.
    pub(super) calls: u64,
}

impl SimFramework {
    /// Every offer received.
    pub fn offers(&self) -> Vec<Offer> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Offers(o) => Some(o.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Every status update about `task_id`.
    pub fn updates(&self, task_id: &str) -> Vec<StatusUpdate> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Update(u) if u.task_id == task_id => Some(u.clone()),
                _ => None,
            })
            .collect()
    }

    /// The latest state received for `task_id`.
    pub fn state(&self, task_id: &str) -> Option<TaskState> {
        self.updates(task_id).last().map(|u| u.state)
    }

    /// Every error event received.
    pub fn errors(&self) -> Vec<Event> {
        self.events
            .iter()
            .filter(|(_, e)| matches!(e, Event::Error { .. }))
            .map(|(_, e)| e.clone())
            .collect()
    }
}
