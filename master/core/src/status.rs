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
//! - **Home Assistant** discovery (when [`Config::ha_discovery`]): per agent, sensors for CPU used,
//!   memory used, running tasks and SoC temperature on `{prefix}/sensor/bramble_{agent}/{object}/config`,
//!   and the cluster's totals on `{prefix}/sensor/bramble/{object}/config`. Agent ids become node ids
//!   with `.` replaced by `_`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use agent_nostd_core::wire::{Reason, TaskState};
use agent_nostd_core::Resources;
use bramble_proto::{OfferId, StatusUpdate};
use serde::Serialize;

use crate::allocator::Amount;
use crate::{Config, CoreEvent, FrameworkState, MasterCore};

/// The prefix of every status topic.
pub const STATUS_PREFIX: &str = "bramble/v1/status/";
/// The filter a dashboard subscribes to.
pub const STATUS_FILTER: &str = "bramble/v1/status/#";
/// The cluster summary's topic.
pub const CLUSTER_TOPIC: &str = "bramble/v1/status/cluster";
/// How many ended tasks each framework keeps on its status topics.
pub const ENDED_TASKS_KEPT: usize = 16;
/// How many status updates the core holds for the publisher between two updates.
pub const TASK_LOG_CAP: usize = 4_096;
/// How long after its start a master waits for agents and frameworks to come back before it clears
/// the retained topics a previous master left that it did not publish again.
pub const STALE_GRACE_MS: u64 = 15_000;
/// The most stale topics remembered for clearing.
pub const MAX_STALE: usize = 100_000;

/// The topic of an agent's status.
pub fn agent_topic(agent_id: &str) -> String {
    format!("{STATUS_PREFIX}agent/{agent_id}")
}

/// The topic of a framework's status.
pub fn framework_topic(framework_id: &str) -> String {
    format!("{STATUS_PREFIX}framework/{framework_id}")
}

/// The topic of an outstanding offer.
pub fn offer_topic(offer_id: OfferId) -> String {
    format!("{STATUS_PREFIX}offer/{offer_id}")
}

/// The topic of a task's status.
pub fn task_topic(framework_id: &str, task_id: &str) -> String {
    format!("{STATUS_PREFIX}task/{framework_id}/{task_id}")
}

/// The Home Assistant node id of an agent (`bramble_` and the id with `.` as `_`).
pub fn ha_node_id(agent_id: &str) -> String {
    let safe: String = agent_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("bramble_{safe}")
}

/// A retained QoS 1 publish; an empty payload deletes the retained message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusTransmit {
    /// The topic.
    pub topic: String,
    /// The JSON, or empty to clear the topic.
    pub payload: Vec<u8>,
}

/// A task state's name in the status JSON: `running`, `finished`, …
pub fn state_name(s: TaskState) -> &'static str {
    match s {
        TaskState::Staging => "staging",
        TaskState::Starting => "starting",
        TaskState::Running => "running",
        TaskState::Finished => "finished",
        TaskState::Failed => "failed",
        TaskState::Killed => "killed",
        TaskState::Lost => "lost",
        TaskState::Error => "error",
        TaskState::Unreachable => "unreachable",
    }
}

const ALL_STATES: [TaskState; 9] = [
    TaskState::Staging,
    TaskState::Starting,
    TaskState::Running,
    TaskState::Finished,
    TaskState::Failed,
    TaskState::Killed,
    TaskState::Lost,
    TaskState::Error,
    TaskState::Unreachable,
];

/// Counts of tasks by state, every state present (zeros included).
type StateCounts = BTreeMap<&'static str, u64>;

fn zero_counts() -> StateCounts {
    ALL_STATES.iter().map(|s| (state_name(*s), 0)).collect()
}

fn reason_name(r: Reason) -> &'static str {
    match r {
        Reason::None => "none",
        Reason::Exited { .. } => "exited",
        Reason::Signaled { .. } => "signaled",
        Reason::MemoryLimit => "memory_limit",
        Reason::KilledByRequest => "killed_by_request",
        Reason::LaunchFailed => "launch_failed",
        Reason::ExceedsResources => "exceeds_resources",
        Reason::InvalidTask => "invalid_task",
        Reason::AgentFull => "agent_full",
        Reason::UnknownTask => "unknown_task",
        Reason::AgentRestarted => "agent_restarted",
    }
}

/// `bramble/v1/status/agent/{agent_id}`.
#[derive(Debug, Serialize)]
struct AgentJson<'a> {
    agent_id: &'a str,
    hostname: &'a str,
    arch: &'a str,
    state: &'static str,
    cpu_millis_total: u64,
    cpu_millis_used: u64,
    cpu_millis_free: u64,
    cpu_millis_offered: u64,
    mem_mib_total: u64,
    mem_mib_used: u64,
    mem_mib_free: u64,
    mem_mib_offered: u64,
    disk_mib_total: u64,
    disk_mib_used: u64,
    disk_mib_free: u64,
    disk_mib_offered: u64,
    attributes: BTreeMap<&'a str, &'a str>,
    soc_temp_c: Option<f64>,
    throttled: Option<u8>,
    running_tasks: usize,
    task_ids: Vec<String>,
}

/// `bramble/v1/status/framework/{framework_id}`.
#[derive(Debug, Serialize)]
struct FrameworkJson<'a> {
    framework_id: &'a str,
    name: &'a str,
    role: &'a str,
    weight: f64,
    priority: u32,
    state: &'static str,
    connected: bool,
    failover_deadline: Option<u64>,
    dominant_share: f64,
    suppressed: bool,
    offers: usize,
    cpu_millis_allocated: u64,
    mem_mib_allocated: u64,
    disk_mib_allocated: u64,
    cpu_millis_offered: u64,
    mem_mib_offered: u64,
    disk_mib_offered: u64,
    tasks: StateCounts,
}

/// `bramble/v1/status/task/{framework_id}/{task_id}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct TaskJson {
    framework_id: String,
    task_id: String,
    agent_id: String,
    state: &'static str,
    cpu_millis: u32,
    mem_mib: u32,
    disk_mib: u32,
    reason: &'static str,
    exit_code: Option<i32>,
    signal: Option<i32>,
    message: String,
    updated: u64,
}

/// `bramble/v1/status/offer/{offer_id}`.
#[derive(Debug, Serialize)]
struct OfferJson<'a> {
    offer_id: OfferId,
    framework_id: &'a str,
    agent_id: &'a str,
    cpu_millis: u32,
    mem_mib: u32,
    disk_mib: u32,
    since: u64,
}

/// `bramble/v1/status/cluster`.
#[derive(Debug, Serialize)]
struct ClusterJson {
    master_epoch: u64,
    agents_online: usize,
    agents_offline: usize,
    frameworks: usize,
    frameworks_connected: usize,
    tasks: StateCounts,
    cpu_millis_total: u64,
    cpu_millis_used: u64,
    cpu_millis_free: u64,
    mem_mib_total: u64,
    mem_mib_used: u64,
    mem_mib_free: u64,
    disk_mib_total: u64,
    disk_mib_used: u64,
    disk_mib_free: u64,
    offers_outstanding: usize,
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

fn task_json(fid: &str, tid: &str, n: &TaskNote) -> TaskJson {
    let (exit_code, signal) = match n.reason {
        Reason::Exited { code } => (Some(code), None),
        Reason::Signaled { signal } => (None, Some(signal)),
        _ => (None, None),
    };
    TaskJson {
        framework_id: fid.to_owned(),
        task_id: tid.to_owned(),
        agent_id: n.agent_id.clone(),
        state: state_name(n.state),
        cpu_millis: n.resources.cpu_millis,
        mem_mib: n.resources.mem_mib,
        disk_mib: n.resources.disk_mib,
        reason: reason_name(n.reason),
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
    ended_counts: HashMap<String, StateCounts>,
    /// Tasks ended since the master started, of every framework.
    ended_total: StateCounts,
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
    fw_agg: HashMap<String, (StateCounts, bool)>,
    queue: VecDeque<StatusTransmit>,
}

impl StatusPublisher {
    /// A publisher for a master started at `wall_base_ms` (epoch ms), with Home Assistant
    /// discovery as `config` says. Nothing is published yet: the first [`update`](Self::update)
    /// publishes everything (a restarted embedded broker has lost the retained messages).
    pub fn new(config: &Config, wall_base_ms: u64) -> Self {
        StatusPublisher {
            wall_base_ms,
            ha_prefix: config.ha_discovery.then(|| config.ha_prefix.clone()),
            published: HashMap::new(),
            offer_since: HashMap::new(),
            live: HashMap::new(),
            ended: HashMap::new(),
            ended_counts: HashMap::new(),
            ended_total: zero_counts(),
            stale: Vec::new(),
            stale_at: 0,
            started: false,
            last_total: Amount::default(),
            agent_agg: HashMap::new(),
            fw_agg: HashMap::new(),
            queue: VecDeque::new(),
        }
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
                for (topic, config) in ha::cluster_configs(&prefix) {
                    self.set(topic, json_bytes(&config));
                }
            }
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

        if !self.stale.is_empty() && now >= self.stale_at {
            for topic in std::mem::take(&mut self.stale) {
                if !self.published.contains_key(&topic) {
                    self.queue.push_back(StatusTransmit {
                        topic,
                        payload: Vec::new(),
                    });
                }
            }
        }
    }

    /// Publishes `payload` on `topic` if it differs from what is there (`None` clears).
    fn set(&mut self, topic: String, payload: Option<Vec<u8>>) {
        match payload {
            Some(bytes) => {
                if self.published.get(&topic) != Some(&bytes) {
                    self.queue.push_back(StatusTransmit {
                        topic: topic.clone(),
                        payload: bytes.clone(),
                    });
                    self.published.insert(topic, bytes);
                }
            }
            None => {
                if self.published.remove(&topic).is_some() {
                    self.queue.push_back(StatusTransmit {
                        topic,
                        payload: Vec::new(),
                    });
                }
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
                .map(|(_, n)| json_bytes(&task_json(fid, tid, n)));
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
        let json = json_bytes(&task_json(fid, tid, note));
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
        let mut live = zero_counts();
        for s in core.framework_task_states(fid) {
            *live.entry(state_name(s)).or_default() += 1;
        }
        let connected = f.state == FrameworkState::Active;
        let mut tasks = live.clone();
        self.fw_agg.insert(fid.to_owned(), (live, connected));
        if let Some(ended) = self.ended_counts.get(fid) {
            for (s, n) in ended {
                *tasks.entry(s).or_default() += n;
            }
        }
        let (state, deadline) = match f.state {
            FrameworkState::Active => ("connected", None),
            FrameworkState::Disconnected { deadline } => ("disconnected", Some(deadline)),
            FrameworkState::Recovered { deadline } => ("recovered", Some(deadline)),
        };
        let json = json_bytes(&FrameworkJson {
            framework_id: fid,
            name: &f.name,
            role: &f.role,
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
                for s in ha::AGENT_SENSORS {
                    self.set(ha::config_topic(&prefix, &node, s.object), None);
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
        let json = json_bytes(&AgentJson {
            agent_id: aid,
            hostname: &a.hostname,
            arch: &a.arch,
            state: if a.reachable { "online" } else { "offline" },
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
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            soc_temp_c: a
                .last_report
                .and_then(|r| r.soc_temp_decidegrees)
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
            for (topic, config) in ha::agent_configs(&prefix, aid, &a.hostname, model) {
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
        let json = json_bytes(&OfferJson {
            offer_id: id,
            framework_id: &o.framework_id,
            agent_id: &o.agent_id,
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
        let mut tasks = self.ended_total.clone();
        let mut connected = 0;
        for (live, is_connected) in self.fw_agg.values() {
            connected += usize::from(*is_connected);
            for (s, n) in live {
                *tasks.entry(s).or_default() += n;
            }
        }
        let total = core.cluster_total();
        let json = json_bytes(&ClusterJson {
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
                    .or_insert_with(zero_counts)
                    .entry(state_name(u.state))
                    .or_default() += 1;
                *self.ended_total.entry(state_name(u.state)).or_default() += 1;
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

/// Home Assistant MQTT discovery configs (`<prefix>/<component>/<node_id>/<object_id>/config`).
pub mod ha {
    use serde::Serialize;

    use super::{agent_topic, ha_node_id, CLUSTER_TOPIC};

    /// The device an entity belongs to.
    #[derive(Debug, Serialize)]
    pub struct Device {
        /// Stable ids of the device.
        pub identifiers: Vec<String>,
        /// Its name in Home Assistant.
        pub name: String,
        /// Its model.
        pub model: String,
        /// Always `Bramble`.
        pub manufacturer: &'static str,
    }

    /// One sensor's discovery config.
    #[derive(Debug, Serialize)]
    pub struct SensorConfig {
        /// The entity's name (Home Assistant shows it after the device's name).
        pub name: &'static str,
        /// Unique across Home Assistant.
        pub unique_id: String,
        /// The status topic the value is read from.
        pub state_topic: String,
        /// Extracts the value from the status JSON.
        pub value_template: &'static str,
        /// The unit, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub unit_of_measurement: Option<&'static str>,
        /// The device class, where one applies.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub device_class: Option<&'static str>,
        /// Always `measurement`.
        pub state_class: &'static str,
        /// Where availability is read from (the agent's status topic), if anywhere.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub availability_topic: Option<String>,
        /// Turns the status JSON into `online` or `offline`.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub availability_template: Option<&'static str>,
        /// `online`.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub payload_available: Option<&'static str>,
        /// `offline`.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub payload_not_available: Option<&'static str>,
        /// The device.
        pub device: Device,
    }

    /// One sensor: its object id, name, value template, unit and device class.
    #[derive(Debug, Clone, Copy)]
    pub struct Sensor {
        /// The object id (the topic's `{object}`).
        pub object: &'static str,
        /// The entity's name.
        pub name: &'static str,
        /// Extracts the value from the status JSON.
        pub template: &'static str,
        /// The unit, if any.
        pub unit: Option<&'static str>,
        /// The device class, if one applies.
        pub class: Option<&'static str>,
    }

    const fn sensor(
        object: &'static str,
        name: &'static str,
        template: &'static str,
        unit: Option<&'static str>,
        class: Option<&'static str>,
    ) -> Sensor {
        Sensor {
            object,
            name,
            template,
            unit,
            class,
        }
    }

    /// CPU and memory used, the same fields in an agent's topic and the cluster's.
    const CPU_USED: Sensor = sensor(
        "cpu_used",
        "CPU used",
        "{{ (value_json.cpu_millis_used / 1000) | round(2) }}",
        Some("cores"),
        None,
    );
    const MEM_USED: Sensor = sensor(
        "mem_used",
        "Memory used",
        "{{ value_json.mem_mib_used }}",
        Some("MiB"),
        None,
    );

    /// Each agent's sensors, read from its status topic.
    pub const AGENT_SENSORS: [Sensor; 4] = [
        CPU_USED,
        MEM_USED,
        sensor(
            "running_tasks",
            "Running tasks",
            "{{ value_json.running_tasks }}",
            None,
            None,
        ),
        sensor(
            "soc_temp",
            "SoC temperature",
            "{{ value_json.soc_temp_c }}",
            Some("°C"),
            Some("temperature"),
        ),
    ];

    /// The cluster's sensors, read from `bramble/v1/status/cluster`.
    pub const CLUSTER_SENSORS: [Sensor; 5] = [
        sensor(
            "agents_online",
            "Agents online",
            "{{ value_json.agents_online }}",
            None,
            None,
        ),
        sensor(
            "running_tasks",
            "Running tasks",
            "{{ value_json.tasks.running }}",
            None,
            None,
        ),
        CPU_USED,
        MEM_USED,
        sensor(
            "offers_outstanding",
            "Offers outstanding",
            "{{ value_json.offers_outstanding }}",
            None,
            None,
        ),
    ];

    /// The config topic of one sensor.
    pub fn config_topic(prefix: &str, node_id: &str, object_id: &str) -> String {
        format!("{prefix}/sensor/{node_id}/{object_id}/config")
    }

    /// The discovery configs of an agent's sensors, as (topic, config).
    pub fn agent_configs(
        prefix: &str,
        agent_id: &str,
        hostname: &str,
        model: &str,
    ) -> Vec<(String, SensorConfig)> {
        let node = ha_node_id(agent_id);
        AGENT_SENSORS
            .iter()
            .map(|s| {
                (
                    config_topic(prefix, &node, s.object),
                    SensorConfig {
                        name: s.name,
                        unique_id: format!("{node}_{}", s.object),
                        state_topic: agent_topic(agent_id),
                        value_template: s.template,
                        unit_of_measurement: s.unit,
                        device_class: s.class,
                        state_class: "measurement",
                        availability_topic: Some(agent_topic(agent_id)),
                        availability_template: Some("{{ value_json.state }}"),
                        payload_available: Some("online"),
                        payload_not_available: Some("offline"),
                        device: Device {
                            identifiers: vec![node.clone()],
                            name: if hostname.is_empty() || hostname == agent_id {
                                format!("Bramble {agent_id}")
                            } else {
                                format!("Bramble {agent_id} ({hostname})")
                            },
                            model: model.to_owned(),
                            manufacturer: "Bramble",
                        },
                    },
                )
            })
            .collect()
    }

    /// The discovery configs of the cluster's sensors (node id `bramble`), as (topic, config).
    pub fn cluster_configs(prefix: &str) -> Vec<(String, SensorConfig)> {
        CLUSTER_SENSORS
            .iter()
            .map(|s| {
                (
                    config_topic(prefix, "bramble", s.object),
                    SensorConfig {
                        name: s.name,
                        unique_id: format!("bramble_cluster_{}", s.object),
                        state_topic: CLUSTER_TOPIC.to_owned(),
                        value_template: s.template,
                        unit_of_measurement: s.unit,
                        device_class: s.class,
                        state_class: "measurement",
                        availability_topic: None,
                        availability_template: None,
                        payload_available: None,
                        payload_not_available: None,
                        device: Device {
                            identifiers: vec!["bramble_cluster".to_owned()],
                            name: "Bramble cluster".to_owned(),
                            model: "Bramble master".to_owned(),
                            manufacturer: "Bramble",
                        },
                    },
                )
            })
            .collect()
    }
}
