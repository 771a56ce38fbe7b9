//! The dashboard's JSON status topics and Home Assistant discovery, sans-IO.
//!
//! [`StatusPublisher`] runs after each input the core handled. The core notes which agents,
//! frameworks, tasks and offers that changed and the status updates it sent, as [`CoreEvent`]s
//! ([`MasterCore::poll_event`]); the publisher renders the JSON of those only,
//! and queues a [`StatusTransmit`] for the topics whose bytes differ from what it published last.
//! Things that are gone (an answered or rescinded offer, a removed agent or framework) get an empty
//! retained payload, which deletes the retained message. Everything is published retained at QoS 1,
//! so a dashboard that subscribes to `bramble/v1/status/#` sees the whole cluster at once.
//!
//! Topics and shapes are specified in the "Status topics" section of `PROTOCOL.md`.
//!
//! - **Ended tasks** (finished, failed, killed, lost, error) stay visible: the last
//!   [`ENDED_TASKS_KEPT`] of each framework keep their topic; older ones, and all of a framework's
//!   tasks when the framework is removed, are cleared. Task counts by state include every task that
//!   ended since the master started.
//! - **Time**: the publisher reads no clock. `now` is the core's (ms since the master started) and
//!   `wall_base_ms` (wall-clock ms at that start, given by the driver) turns it into epoch ms.
//! - **Cost**: an update renders only what the core touched (the first one, and one after the
//!   core's notes overflowed, render everything); the cluster summary is summed from what the
//!   publisher keeps per agent and framework. Memory is bounded by the entities the core holds plus
//!   [`ENDED_TASKS_KEPT`] per framework.
//! - **Home Assistant** discovery (when [`Config::ha_discovery`]): see [`discovery`].
//! - **Repair**: anyone who may publish on the broker may overwrite a retained status topic. The
//!   driver hands the publisher what arrives on `bramble/v1/status/#` ([`StatusPublisher::observe`]).
//!   The publisher tells its own echoes (a keyed hash of each payload it queued and has not seen come
//!   back, at most [`MAX_IN_FLIGHT`] per topic) from anything else; a foreign payload on a topic it
//!   owns, once none of its own publishes on that topic is still on the way, makes it publish its
//!   value again, at most [`MAX_REPAIRS_PER_SECOND`] topics a second (the rest wait for the next
//!   second). Topics it does not own are left alone (a previous master's are cleared at start).
//!
//! # Layout
//!
//! - this file: [`StatusPublisher`], what changed in the core → what to publish or clear.
//! - [`shapes`]: the JSON of each topic ([`ClusterStatus`], [`AgentStatus`], [`FrameworkStatus`],
//!   [`TaskStatus`], [`OfferStatus`], [`TaskCounts`]), serialized here and parsed by the readers.
//! - [`topics`]: the topic names and builders.
//! - [`discovery`]: the Home Assistant discovery configs.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::BuildHasher;

use agent_nostd_core::wire::{Reason, TaskState};
use agent_nostd_core::Resources;
use bramble_proto::{OfferId, StatusUpdate};
use serde::Serialize;

use crate::allocator::Amount;
use crate::{Config, CoreEvent, FrameworkState, MasterCore};

mod answer;
pub mod discovery;
pub mod shapes;
pub mod topics;

pub use self::discovery::ha_node_id;
pub use self::shapes::{
    parse_state, state_name, AgentStatus, ClusterStatus, Connection, FollowerStatus,
    FrameworkStatus, Liveness, MasterStatus, OfferStatus, ReasonKind, TaskCounts, TaskStatus,
};
pub use self::topics::{
    agent_topic, framework_topic, offer_topic, task_topic, CLUSTER_TOPIC, MASTER_TOPIC,
    STATUS_FILTER, STATUS_PREFIX,
};

/// How many ended tasks each framework keeps on its status topics.
pub const ENDED_TASKS_KEPT: usize = 16;
/// How many status updates the core holds for the publisher between two updates.
pub const TASK_LOG_CAP: usize = 4_096;
/// How long after its start a master waits for agents and frameworks to come back before it clears
/// the retained topics a previous master left that it did not publish again.
pub const STALE_GRACE_MS: u64 = 15_000;
/// The most stale topics remembered for clearing.
pub const MAX_STALE: usize = 100_000;

/// The most of its own publishes on one topic the publisher waits to see come back; older ones
/// are forgotten (the broker may not echo them, e.g. when it refuses the master's subscription).
pub const MAX_IN_FLIGHT: usize = 16;
/// How long the publisher waits to see one of its publishes come back before it takes it as lost.
pub const ECHO_TIMEOUT_MS: u64 = 10_000;
/// The most topics the publisher repairs in one second of the core's clock.
pub const MAX_REPAIRS_PER_SECOND: u32 = 100;

/// What [`StatusPublisher::observe`] made of a retained message seen on the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// Not a status topic: nothing to do.
    NotStatus,
    /// What this publisher published there: its own echo, or the retained copy after a reconnect.
    Own,
    /// Something else, but a publish of this publisher's on the topic is still on the way and
    /// will overwrite it.
    Overwritten,
    /// Something else on a topic this publisher owns: its value is published again.
    Repaired,
    /// A topic this publisher does not own: left alone.
    NotOwned,
}

/// A retained QoS 1 publish; an empty payload deletes the retained message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusTransmit {
    /// The topic.
    pub topic: String,
    /// The JSON, or empty to clear the topic.
    pub payload: Vec<u8>,
}

/// What the publisher remembers of a task beyond what the core holds.
#[derive(Debug, Clone)]
struct TaskNote {
    state: TaskState,
    reason: Reason,
    message: String,
    updated: u64,
    agent_id: String,
    resources: Resources,
}

fn task_status(fid: &str, tid: &str, n: &TaskNote) -> TaskStatus {
    let (exit_code, signal) = match n.reason {
        Reason::Exited { code } => (Some(code), None),
        Reason::Signaled { signal } => (None, Some(signal)),
        _ => (None, None),
    };
    TaskStatus {
        framework_id: fid.to_owned(),
        task_id: tid.to_owned(),
        agent_id: n.agent_id.clone(),
        state: n.state,
        cpu_millis: n.resources.cpu_millis,
        mem_mib: n.resources.mem_mib,
        disk_mib: n.resources.disk_mib,
        reason: n.reason.into(),
        exit_code,
        signal,
        message: n.message.clone(),
        updated: n.updated,
    }
}

/// Publishes the master's state as retained JSON topics, on change only. See the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct StatusPublisher {
    wall_base_ms: u64,
    /// The leading master's name, for its availability topic.
    master_name: Option<String>,
    /// The epoch the availability topic says.
    online_epoch: u64,
    /// The other masters ready to take over, for the availability topic.
    followers: Vec<FollowerStatus>,
    /// Whether they changed since the availability topic was published.
    followers_changed: bool,
    ha_prefix: Option<String>,
    /// Topic → the payload last published (never empty: cleared topics are removed).
    published: HashMap<String, Vec<u8>>,
    /// When each outstanding offer was first seen, in epoch ms.
    offer_since: HashMap<OfferId, u64>,
    /// Live tasks, by (framework id, task id).
    live: HashMap<(String, String), TaskNote>,
    /// The latest ended tasks of each framework, oldest first, at most [`ENDED_TASKS_KEPT`].
    ended: HashMap<String, VecDeque<(String, TaskNote)>>,
    /// Tasks ended since the master started, per framework.
    ended_counts: HashMap<String, TaskCounts>,
    /// Tasks ended since the master started, of every framework.
    ended_total: TaskCounts,
    /// Retained topics found at start, cleared at `stale_at` unless published by then.
    stale: Vec<String>,
    stale_at: u64,
    /// Whether the first (full) update ran.
    started: bool,
    /// The cluster total at the last update.
    last_total: Amount,
    /// Per agent: reachable, and (cpu, mem, disk) used, for the cluster summary.
    agent_agg: HashMap<String, (bool, [u64; 3])>,
    /// Per framework: its live tasks by state, and whether connected, for the cluster summary.
    fw_agg: HashMap<String, (TaskCounts, bool)>,
    queue: VecDeque<StatusTransmit>,
    /// Keys the hashes of published payloads (randomly, so nobody can forge an echo).
    hasher: RandomState,
    /// Per topic, the hashes of queued payloads not yet seen back and when they were queued,
    /// oldest first.
    in_flight: HashMap<String, VecDeque<(u64, u64)>>,
    /// The core's clock at the latest update.
    clock: u64,
    /// Owned topics holding a foreign payload, to publish again.
    to_repair: BTreeSet<String>,
    /// The second (of the core's clock) of the latest repairs, and how many went out in it.
    repair_window: (u64, u32),
    /// Topics published again over a foreign payload, since the start.
    repairs: u64,
    /// Foreign payloads seen on owned topics, since the start.
    foreign: u64,
}

impl StatusPublisher {
    /// A publisher for a master started at `wall_base_ms` (epoch ms), with Home Assistant
    /// discovery as `config` says. Nothing is published yet: the first [`update`](Self::update)
    /// publishes everything (a restarted embedded broker has lost the retained messages).
    pub fn new(config: &Config, wall_base_ms: u64) -> Self {
        StatusPublisher {
            wall_base_ms,
            master_name: None,
            online_epoch: 0,
            followers: Vec::new(),
            followers_changed: false,
            ha_prefix: config.ha_discovery.then(|| config.ha_prefix.clone()),
            published: HashMap::new(),
            offer_since: HashMap::new(),
            live: HashMap::new(),
            ended: HashMap::new(),
            ended_counts: HashMap::new(),
            ended_total: TaskCounts::default(),
            stale: Vec::new(),
            stale_at: 0,
            started: false,
            last_total: Amount::default(),
            agent_agg: HashMap::new(),
            fw_agg: HashMap::new(),
            queue: VecDeque::new(),
            hasher: RandomState::new(),
            in_flight: HashMap::new(),
            clock: 0,
            to_repair: BTreeSet::new(),
            repair_window: (0, 0),
            repairs: 0,
            foreign: 0,
        }
    }

    /// The same publisher, naming the master (`bramble master --name`) on [`MASTER_TOPIC`].
    pub fn with_master_name(mut self, name: &str) -> Self {
        self.master_name = Some(name.to_owned());
        self
    }

    /// The other masters ready to take over, as the election hears them: the availability topic
    /// lists them from the next [`update`](Self::update) on.
    pub fn set_followers(&mut self, followers: Vec<FollowerStatus>) {
        if followers != self.followers {
            self.followers = followers;
            self.followers_changed = true;
        }
    }

    /// The master's MQTT last will: `offline` on [`MASTER_TOPIC`], retained (the driver sets it
    /// on the master's connection), as (topic, payload).
    pub fn last_will(master_epoch: u64, name: Option<&str>) -> (String, Vec<u8>) {
        let offline = MasterStatus {
            state: Liveness::Offline,
            master_epoch,
            name: name.map(str::to_owned),
            followers: Vec::new(),
        };
        (
            MASTER_TOPIC.to_owned(),
            json_bytes(&offline).unwrap_or_default(),
        )
    }

    /// Makes `core` record the events this publisher reads (status updates bounded by
    /// [`TASK_LOG_CAP`]).
    pub fn attach(core: &mut MasterCore) {
        core.record_events(TASK_LOG_CAP);
    }

    /// The topic filters under which a previous master may have left retained messages: the status
    /// topics, and the discovery configs when discovery is on.
    pub fn stale_filters(&self) -> Vec<String> {
        let mut filters = vec![STATUS_FILTER.to_owned()];
        if let Some(prefix) = &self.ha_prefix {
            filters.push(format!("{prefix}/sensor/+/+/config"));
        }
        filters
    }

    /// Takes the retained topics found on the broker at start (under
    /// [`stale_filters`](Self::stale_filters)): those this publisher has not published by `at`
    /// (the core's clock) are then cleared. Topics that are not Bramble's are ignored.
    pub fn clear_stale_at(&mut self, topics: impl IntoIterator<Item = String>, at: u64) {
        let ha = self
            .ha_prefix
            .as_ref()
            .map(|p| format!("{p}/sensor/bramble"));
        self.stale = topics
            .into_iter()
            .filter(|t| {
                t.starts_with(STATUS_PREFIX)
                    || ha.as_ref().is_some_and(|h| {
                        t.strip_prefix(h.as_str())
                            .is_some_and(|rest| rest.starts_with('/') || rest.starts_with('_'))
                    })
            })
            .take(MAX_STALE)
            .collect();
        self.stale_at = at;
    }

    /// The topics currently published (retained), with their payloads.
    pub fn published(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.published
            .iter()
            .map(|(t, p)| (t.as_str(), p.as_slice()))
    }

    /// The next publish, or `None`.
    pub fn poll_transmit(&mut self) -> Option<StatusTransmit> {
        self.queue.pop_front()
    }

    /// Looks at what changed in `core` at time `now` (the core's clock) and queues the topics whose
    /// JSON changed. The first call (and one after the core's change notes overflowed) looks at
    /// everything.
    pub fn update(&mut self, core: &mut MasterCore, now: u64) {
        self.clock = now;
        let wall = self.wall_base_ms.saturating_add(now);
        let (mut dirty, updates) = drain_events(core);
        let ended = self.take_updates(updates, wall);
        dirty.tasks.extend(ended);
        let full = !self.started || dirty.overflow;
        if full {
            self.started = true;
            dirty.agents.extend(core.agent_ids());
            dirty.frameworks.extend(core.framework_ids());
            dirty
                .tasks
                .extend(core.tasks().into_iter().map(|(f, t, _)| (f, t)));
            dirty
                .offers
                .extend(core.offers().into_iter().map(|o| o.offer_id));
            // And whatever is published, so that what is gone is cleared.
            for topic in self.published.keys() {
                let Some(rest) = topic.strip_prefix(STATUS_PREFIX) else {
                    continue;
                };
                let mut parts = rest.splitn(3, '/');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some("agent"), Some(id), None) => {
                        dirty.agents.insert(id.to_owned());
                    }
                    (Some("framework"), Some(id), None) => {
                        dirty.frameworks.insert(id.to_owned());
                    }
                    (Some("task"), Some(f), Some(t)) => {
                        dirty.tasks.insert((f.to_owned(), t.to_owned()));
                    }
                    (Some("offer"), Some(id), None) => {
                        if let Ok(id) = id.parse() {
                            dirty.offers.insert(id);
                        }
                    }
                    _ => {}
                }
            }
            if let Some(prefix) = self.ha_prefix.clone() {
                for (topic, config) in discovery::cluster_configs(&prefix) {
                    self.set(topic, json_bytes(&config));
                }
            }
        }
        // Published with the first update (repairs and full updates after an overflow put it
        // back), and again when the master raised its epoch.
        if full || self.online_epoch != core.epoch() || self.followers_changed {
            self.online_epoch = core.epoch();
            self.followers_changed = false;
            let online = MasterStatus {
                state: Liveness::Online,
                master_epoch: core.epoch(),
                name: self.master_name.clone(),
                followers: self.followers.clone(),
            };
            self.set(MASTER_TOPIC.to_owned(), json_bytes(&online));
        }
        // The dominant shares of every framework move with the cluster's total.
        let total = core.cluster_total();
        if total != self.last_total {
            self.last_total = total;
            dirty.frameworks.extend(core.framework_ids());
        }
        for fid in &dirty.frameworks {
            self.render_framework(core, fid);
        }
        for (fid, tid) in &dirty.tasks {
            self.render_task(core, fid, tid, wall);
        }
        for aid in &dirty.agents {
            self.render_agent(core, aid);
        }
        for id in &dirty.offers {
            self.render_offer(core, *id, wall);
        }
        self.render_cluster(core);

        self.repair(now);
        if !self.stale.is_empty() && now >= self.stale_at {
            for topic in std::mem::take(&mut self.stale) {
                if !self.published.contains_key(&topic) {
                    self.transmit(topic, Vec::new());
                }
            }
        }
    }

    /// Publishes `payload` on `topic` if it differs from what is there (`None` clears).
    fn set(&mut self, topic: String, payload: Option<Vec<u8>>) {
        match payload {
            Some(bytes) => {
                if self.published.get(&topic) != Some(&bytes) {
                    self.to_repair.remove(&topic);
                    self.transmit(topic.clone(), bytes.clone());
                    self.published.insert(topic, bytes);
                }
            }
            None => {
                if self.published.remove(&topic).is_some() {
                    self.to_repair.remove(&topic);
                    self.transmit(topic, Vec::new());
                }
            }
        }
    }

    /// Queues a publish, and notes it as on its way back.
    fn transmit(&mut self, topic: String, payload: Vec<u8>) {
        if topic.starts_with(STATUS_PREFIX) {
            let hash = self.hasher.hash_one(&payload);
            let pending = self.in_flight.entry(topic.clone()).or_default();
            if pending.len() == MAX_IN_FLIGHT {
                pending.pop_front();
            }
            pending.push_back((hash, self.clock));
        }
        self.queue.push_back(StatusTransmit { topic, payload });
    }

    /// Takes a retained message seen on the broker under `bramble/v1/status/#` (the driver
    /// subscribes to it): this publisher's own echo, or a foreign payload, which on a topic it owns
    /// is overwritten with its value again (queued by the next [`update`](Self::update), within
    /// [`MAX_REPAIRS_PER_SECOND`]). See the [module docs](self).
    ///
    /// `now` is the core's clock: a publish not seen back within [`ECHO_TIMEOUT_MS`] is taken as
    /// lost, so it cannot keep a foreign payload from being repaired.
    pub fn observe(&mut self, topic: &str, payload: &[u8], now: u64) -> Observed {
        if !topic.starts_with(STATUS_PREFIX) {
            return Observed::NotStatus;
        }
        if let Some(pending) = self.in_flight.get_mut(topic) {
            while pending
                .front()
                .is_some_and(|(_, at)| now.saturating_sub(*at) > ECHO_TIMEOUT_MS)
            {
                pending.pop_front();
            }
            if pending.is_empty() {
                self.in_flight.remove(topic);
                return self.observe(topic, payload, now);
            }
            let hash = self.hasher.hash_one(payload);
            // The broker keeps the order of one publisher's messages on a topic: an echo means
            // every earlier publish is behind us too.
            if let Some(at) = pending.iter().position(|(h, _)| *h == hash) {
                pending.drain(..=at);
                if pending.is_empty() {
                    self.in_flight.remove(topic);
                }
                return Observed::Own;
            }
            return Observed::Overwritten;
        }
        match self.published.get(topic) {
            Some(ours) if ours.as_slice() == payload => Observed::Own,
            Some(_) => {
                self.foreign += 1;
                self.to_repair.insert(topic.to_owned());
                Observed::Repaired
            }
            None if payload.is_empty() => Observed::Own,
            None => Observed::NotOwned,
        }
    }

    /// Topics published again over a foreign payload since the start.
    pub fn repairs(&self) -> u64 {
        self.repairs
    }

    /// Foreign payloads seen on owned topics ([`Observed::Repaired`]) since the start.
    pub fn foreign(&self) -> u64 {
        self.foreign
    }

    /// Publishes again the owned topics that hold a foreign payload, within the second's budget.
    fn repair(&mut self, now: u64) {
        if self.to_repair.is_empty() {
            return;
        }
        let second = now / 1000;
        if self.repair_window.0 != second {
            self.repair_window = (second, 0);
        }
        while self.repair_window.1 < MAX_REPAIRS_PER_SECOND {
            let Some(topic) = self.to_repair.pop_first() else {
                break;
            };
            if let Some(ours) = self.published.get(&topic).cloned() {
                self.transmit(topic, ours);
                self.repair_window.1 += 1;
                self.repairs += 1;
            }
        }
    }

    fn render_task(&mut self, core: &MasterCore, fid: &str, tid: &str, wall: u64) {
        let key = (fid.to_owned(), tid.to_owned());
        let topic = task_topic(fid, tid);
        let Some(view) = core.task(fid, tid) else {
            self.live.remove(&key);
            let ended = self
                .ended
                .get(fid)
                .and_then(|e| e.iter().find(|(t, _)| t == tid))
                .map(|(_, n)| json_bytes(&task_status(fid, tid, n)));
            return self.set(topic, ended.flatten());
        };
        let note = self.live.entry(key).or_insert_with(|| TaskNote {
            state: view.state,
            reason: Reason::None,
            message: String::new(),
            updated: wall,
            agent_id: String::new(),
            resources: Resources::ZERO,
        });
        if note.state != view.state {
            note.state = view.state;
            note.updated = wall;
        }
        note.agent_id = view.agent_id;
        note.resources = view.resources;
        let json = json_bytes(&task_status(fid, tid, note));
        self.set(topic, json);
    }

    fn render_framework(&mut self, core: &MasterCore, fid: &str) {
        let topic = framework_topic(fid);
        let Some(f) = core.framework(fid) else {
            // Gone, with all its tasks.
            self.set(topic, None);
            let prefix = task_topic(fid, "");
            let tasks: Vec<String> = self
                .published
                .keys()
                .filter(|t| t.starts_with(&prefix))
                .cloned()
                .collect();
            for t in tasks {
                self.set(t, None);
            }
            self.ended.remove(fid);
            self.ended_counts.remove(fid);
            self.fw_agg.remove(fid);
            self.live.retain(|(f, _), _| f != fid);
            return;
        };
        let mut live = TaskCounts::default();
        for s in core.framework_task_states(fid) {
            *live.get_mut(s) += 1;
        }
        let connected = f.state == FrameworkState::Active;
        let mut tasks = live;
        self.fw_agg.insert(fid.to_owned(), (live, connected));
        if let Some(ended) = self.ended_counts.get(fid) {
            tasks.add(ended);
        }
        let (state, deadline) = match f.state {
            FrameworkState::Active => (Connection::Connected, None),
            FrameworkState::Disconnected { deadline } => (Connection::Disconnected, Some(deadline)),
            FrameworkState::Recovered { deadline } => (Connection::Recovered, Some(deadline)),
        };
        let json = json_bytes(&FrameworkStatus {
            framework_id: fid.to_owned(),
            name: f.name.clone(),
            role: f.role.clone(),
            weight: f.weight,
            priority: f.priority,
            state,
            connected,
            failover_deadline: deadline.map(|d| self.wall_base_ms.saturating_add(d)),
            dominant_share: f.dominant_share,
            suppressed: f.suppressed,
            offers: f.offers,
            cpu_millis_allocated: f.allocated.cpu_millis,
            mem_mib_allocated: f.allocated.mem_mib,
            disk_mib_allocated: f.allocated.disk_mib,
            cpu_millis_offered: f.offered.cpu_millis,
            mem_mib_offered: f.offered.mem_mib,
            disk_mib_offered: f.offered.disk_mib,
            tasks,
        });
        self.set(topic, json);
    }

    fn render_agent(&mut self, core: &MasterCore, aid: &str) {
        let topic = agent_topic(aid);
        let Some(a) = core.agent(aid) else {
            self.set(topic, None);
            self.agent_agg.remove(aid);
            if let Some(prefix) = self.ha_prefix.clone() {
                let node = ha_node_id(aid);
                for s in discovery::AGENT_SENSORS {
                    self.set(discovery::config_topic(&prefix, &node, s.object), None);
                }
            }
            return;
        };
        let used = a.allocated;
        self.agent_agg.insert(
            aid.to_owned(),
            (a.reachable, [used.cpu_millis, used.mem_mib, used.disk_mib]),
        );
        let total = a.total;
        let free = |t: u32, u: u64| u64::from(t).saturating_sub(u);
        let json = json_bytes(&AgentStatus {
            agent_id: aid.to_owned(),
            hostname: a.hostname.clone(),
            arch: a.arch.clone(),
            state: if a.reachable {
                Liveness::Online
            } else {
                Liveness::Offline
            },
            cpu_millis_total: total.cpu_millis.into(),
            cpu_millis_used: used.cpu_millis,
            cpu_millis_free: free(total.cpu_millis, used.cpu_millis),
            cpu_millis_offered: a.offered.cpu_millis.into(),
            mem_mib_total: total.mem_mib.into(),
            mem_mib_used: used.mem_mib,
            mem_mib_free: free(total.mem_mib, used.mem_mib),
            mem_mib_offered: a.offered.mem_mib.into(),
            disk_mib_total: total.disk_mib.into(),
            disk_mib_used: used.disk_mib,
            disk_mib_free: free(total.disk_mib, used.disk_mib),
            disk_mib_offered: a.offered.disk_mib.into(),
            attributes: a
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            soc_temp_c: a
                .last_report
                .and_then(|r| r.temperature())
                .map(|d| f64::from(d) / 10.0),
            throttled: a.last_report.map(|r| r.throttled),
            running_tasks: a.tasks,
            task_ids: core.agent_task_ids(aid),
        });
        self.set(topic, json);
        if let Some(prefix) = self.ha_prefix.clone() {
            let model = a
                .attributes
                .iter()
                .find(|(k, _)| k == "model")
                .map_or("Raspberry Pi-class board", |(_, v)| v.as_str());
            for (topic, config) in discovery::agent_configs(&prefix, aid, &a.hostname, model) {
                self.set(topic, json_bytes(&config));
            }
        }
    }

    fn render_offer(&mut self, core: &MasterCore, id: OfferId, wall: u64) {
        let topic = offer_topic(id);
        let Some(o) = core.offer(id) else {
            self.offer_since.remove(&id);
            return self.set(topic, None);
        };
        let since = *self.offer_since.entry(id).or_insert(wall);
        let json = json_bytes(&OfferStatus {
            offer_id: id,
            framework_id: o.framework_id.clone(),
            agent_id: o.agent_id.clone(),
            cpu_millis: o.resources.cpu_millis,
            mem_mib: o.resources.mem_mib,
            disk_mib: o.resources.disk_mib,
            since,
        });
        self.set(topic, json);
    }

    /// The cluster summary, from what the publisher keeps of each agent and framework.
    fn render_cluster(&mut self, core: &MasterCore) {
        let (mut online, mut offline) = (0, 0);
        let mut used = [0u64; 3];
        for (reachable, u) in self.agent_agg.values() {
            if *reachable {
                online += 1;
                for (sum, v) in used.iter_mut().zip(u) {
                    *sum += v;
                }
            } else {
                offline += 1;
            }
        }
        let mut tasks = self.ended_total;
        let mut connected = 0;
        for (live, is_connected) in self.fw_agg.values() {
            connected += usize::from(*is_connected);
            tasks.add(live);
        }
        let total = core.cluster_total();
        let json = json_bytes(&ClusterStatus {
            master_epoch: core.epoch(),
            agents_online: online,
            agents_offline: offline,
            frameworks: self.fw_agg.len(),
            frameworks_connected: connected,
            tasks,
            cpu_millis_total: total.cpu_millis,
            cpu_millis_used: used[0],
            cpu_millis_free: total.cpu_millis.saturating_sub(used[0]),
            mem_mib_total: total.mem_mib,
            mem_mib_used: used[1],
            mem_mib_free: total.mem_mib.saturating_sub(used[1]),
            disk_mib_total: total.disk_mib,
            disk_mib_used: used[2],
            disk_mib_free: total.disk_mib.saturating_sub(used[2]),
            offers_outstanding: core.offer_count(),
        });
        self.set(CLUSTER_TOPIC.to_owned(), json);
    }

    /// Records the updates the core sent since the last call: reasons and messages of live tasks,
    /// and the tasks that ended. Returns the tasks whose ended record changed or was dropped.
    fn take_updates(
        &mut self,
        updates: Vec<(String, StatusUpdate)>,
        wall: u64,
    ) -> Vec<(String, String)> {
        let mut touched = Vec::new();
        for (framework_id, u) in updates {
            let key = (framework_id, u.task_id);
            if u.state.is_terminal() {
                let ended = self.ended.entry(key.0.clone()).or_default();
                // At least once: the same ending may come again.
                if ended
                    .iter()
                    .any(|(tid, n)| *tid == key.1 && n.state == u.state)
                {
                    continue;
                }
                let before = self.live.remove(&key);
                let note = TaskNote {
                    state: u.state,
                    reason: u.reason,
                    message: u.message,
                    updated: wall,
                    agent_id: before
                        .as_ref()
                        .map(|b| b.agent_id.clone())
                        .or(u.agent_id)
                        .unwrap_or_default(),
                    resources: before.map_or(Resources::ZERO, |b| b.resources),
                };
                ended.retain(|(tid, _)| *tid != key.1);
                if ended.len() >= ENDED_TASKS_KEPT {
                    if let Some((old, _)) = ended.pop_front() {
                        touched.push((key.0.clone(), old));
                    }
                }
                ended.push_back((key.1.clone(), note));
                *self
                    .ended_counts
                    .entry(key.0.clone())
                    .or_default()
                    .get_mut(u.state) += 1;
                *self.ended_total.get_mut(u.state) += 1;
                touched.push(key);
            } else {
                // A relaunch under the same id starts afresh.
                if let Some(ended) = self.ended.get_mut(&key.0) {
                    ended.retain(|(tid, _)| *tid != key.1);
                }
                touched.push(key.clone());
                let note = self.live.entry(key).or_insert_with(|| TaskNote {
                    state: u.state,
                    reason: Reason::None,
                    message: String::new(),
                    updated: wall,
                    agent_id: u.agent_id.clone().unwrap_or_default(),
                    resources: Resources::ZERO,
                });
                // Reconciliation answers repeat the state without a reason: keep what we have.
                if note.state != u.state || u.reason != Reason::None {
                    note.state = u.state;
                    note.reason = u.reason;
                    note.message = u.message;
                    note.updated = wall;
                }
            }
        }
        touched
    }
}

/// The JSON of `value`; `None` (the topic is then cleared) only if it cannot be serialized, which
/// the shapes here never are (string keys, finite numbers or null).
/// What changed since the last update: the ids to render again.
#[derive(Debug, Default)]
struct Dirty {
    agents: BTreeSet<String>,
    frameworks: BTreeSet<String>,
    tasks: BTreeSet<(String, String)>,
    offers: BTreeSet<OfferId>,
    /// The core noted more than it could: render everything.
    overflow: bool,
}

/// Takes every event the core has: the ids that changed, and the status updates in order.
fn drain_events(core: &mut MasterCore) -> (Dirty, Vec<(String, StatusUpdate)>) {
    let mut dirty = Dirty::default();
    let mut updates = Vec::new();
    while let Some(event) = core.poll_event() {
        match event {
            CoreEvent::Overflow => dirty.overflow = true,
            CoreEvent::AgentChanged { agent_id } => {
                dirty.agents.insert(agent_id);
            }
            CoreEvent::FrameworkChanged { framework_id } => {
                dirty.frameworks.insert(framework_id);
            }
            CoreEvent::TaskChanged {
                framework_id,
                task_id,
            } => {
                dirty.tasks.insert((framework_id, task_id));
            }
            CoreEvent::OfferChanged { offer_id } => {
                dirty.offers.insert(offer_id);
            }
            CoreEvent::TaskUpdated {
                framework_id,
                update,
            } => updates.push((framework_id, update)),
        }
    }
    (dirty, updates)
}

fn json_bytes<T: Serialize>(value: &T) -> Option<Vec<u8>> {
    serde_json::to_vec(value).ok()
}
