//! [`MasterCore`]: the master's sans-IO state machine.
//!
//! It keeps the agents, frameworks, offers and tasks (all soft state, rebuilt from re-registrations
//! after a restart), runs the allocator and the offer cycle, and speaks both wires: the agent wire of
//! [`agent_nostd_core::wire`] and the framework protocol of [`bramble_proto`].
//!
//! The inputs are handled in `agents.rs` (the agent wire and health checks), `frameworks.rs` (the
//! framework protocol) and `offers.rs` (the allocation round, accepts and revocation); this module
//! holds the state, the outputs and the timers.
//!
//! # Call order
//!
//! The driver (the MQTT event loop) does, in a loop:
//!
//! 1. feed inputs: [`MasterCore::handle_agent_bytes`] for payloads on agent uplink topics,
//!    [`MasterCore::handle_framework_bytes`] for payloads on framework topics (or the `*_message` /
//!    `*_call` variants with decoded messages), and [`MasterCore::handle_timeout`] when the timer armed
//!    from `poll_timeout` fires;
//! 2. after any of those, call [`MasterCore::poll_transmit`] until it returns `None`, publishing each
//!    [`Transmit`] (its topic, QoS, retain flag and [`Transmit::payload`]);
//! 3. arm its timer at [`MasterCore::poll_timeout`].
//!
//! The first transmits, right after [`MasterCore::new`], are the retained `Hello` with the master's
//! epoch. The driver subscribes to [`MasterCore::subscriptions`] before feeding anything.
//!
//! # Guarantees
//!
//! - Nothing here panics on input from the network; bad input is counted in [`Stats`] and dropped.
//! - A status update is acknowledged to its agent only after it is recorded and queued for its
//!   framework (the framework's event comes out of `poll_transmit` before the ack).
//! - An agent is never offered more than its total less what its tasks hold, and an accept whose tasks
//!   do not fit in the offer is refused whole ([`MasterCore::check_invariants`] checks the books).
//! - Lost or stale agent messages heal: a task still STAGING after [`Config::task_retry_ms`], or
//!   reports whose task count disagrees with the master's for that long, make the master ask the
//!   agent to re-register (its task list settles every task); an unanswered kill is sent again; a
//!   duplicated old registration cannot revive a task the agent reported ended.
//! - Growth from the network is bounded: agents and frameworks by [`Config::max_agents`] and
//!   [`Config::max_frameworks`], a disconnected framework's waiting events by
//!   [`Config::max_held_events`], filters by the number of agents, tasks by agents × `MAX_TASKS`,
//!   the memory of ended tasks by 64 per agent and of removed framework ids by 1,024; the notes kept
//!   for the status publisher (when on) by [`STATUS_CHANGES_CAP`] ids and 4,096 updates.
//!   The transmit queue holds what one input produced and is emptied by the driver after each input.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use agent_nostd_core::topic::{self, AgentTopic, QoS};
use agent_nostd_core::wire::{
    DecodeError as AgentDecodeError, KillTask, MasterMsg, ResourceReport, TaskState, WireMessage,
};
use agent_nostd_core::Resources;
use bramble_proto::{self as proto, AgentDescription, ErrorCode, Event, OfferId, Register};

use crate::allocator::{dominant_share, Amount};
use crate::config::{Config, ConfigError};

mod agents;
mod frameworks;
mod offers;
mod operator;
mod registry;

use registry::{AgentIdx, FrameworkIdx, Idx, Registry};

pub use operator::{OPERATOR_KILL_TOPIC, OPERATOR_PREFIX};

/// What the master sends: to an agent or to a framework.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// A message on the agent wire (boxed: a RunTask is over 5 KiB).
    Agent(Box<MasterMsg>),
    /// An event on the framework protocol.
    Framework(Event),
}

/// Something to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Transmit {
    /// The topic.
    pub topic: String,
    /// The MQTT QoS.
    pub qos: QoS,
    /// Whether the broker retains it.
    pub retain: bool,
    /// The message.
    pub message: Outgoing,
}

impl Transmit {
    /// The encoded payload (version byte + postcard).
    pub fn payload(&self) -> Vec<u8> {
        match &self.message {
            Outgoing::Agent(msg) => {
                let mut buf = vec![0u8; MasterMsg::MAX_ENCODED_LEN];
                // Cannot fail: the buffer holds the largest MasterMsg.
                let len = msg.encode(&mut buf).unwrap_or(0);
                buf.truncate(len);
                buf
            }
            Outgoing::Framework(event) => event.encode(),
        }
    }
}

/// Why an input was not used. Each is also counted in [`Stats`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// The topic is not one the master listens on.
    #[error("not a topic the master listens on")]
    UnknownTopic,
    /// An agent payload could not be decoded.
    #[error("undecodable agent payload: {0}")]
    AgentDecode(AgentDecodeError),
    /// A framework payload could not be decoded.
    #[error("undecodable framework payload: {0}")]
    FrameworkDecode(proto::DecodeError),
    /// A valid message arrived on a topic that does not carry it, or names another sender.
    #[error("message arrived on a topic that does not carry it")]
    WrongTopic,
    /// An operator command is not the JSON it should be.
    #[error("undecodable operator command")]
    OperatorDecode,
}

/// Counters of what the master did and dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Payloads that failed to decode (any reason but version).
    pub malformed: u64,
    /// Payloads from another protocol version.
    pub unsupported_version: u64,
    /// Payloads on a topic that does not carry them.
    pub misrouted: u64,
    /// Agent registrations and re-registrations handled.
    pub agent_registrations: u64,
    /// Registrations refused because [`Config::max_agents`] was reached.
    pub agents_refused: u64,
    /// Status updates recorded and forwarded.
    pub status_updates: u64,
    /// Status updates received again (already recorded), acknowledged again.
    pub duplicate_status_updates: u64,
    /// Messages from agents the master does not know, answered with a re-registration request.
    pub unknown_agent_messages: u64,
    /// Allocation rounds run.
    pub allocation_rounds: u64,
    /// Offers made.
    pub offers_made: u64,
    /// Offers rescinded (timeout, agent lost, framework gone).
    pub offers_rescinded: u64,
    /// Offers answered with an accept (refused accepts included: see `accepts_refused`).
    pub offers_accepted: u64,
    /// Offers answered with a decline.
    pub offers_declined: u64,
    /// Tasks launched.
    pub tasks_launched: u64,
    /// Accepts refused.
    pub accepts_refused: u64,
    /// Tasks killed by revocation.
    pub revocations: u64,
    /// Events for disconnected frameworks dropped because their queue was full.
    pub held_events_dropped: u64,
    /// Agents that became unreachable.
    pub agents_lost: u64,
}

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

/// A read-only view of an agent.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentView {
    /// The agent's id.
    pub agent_id: String,
    /// Its hostname.
    pub hostname: String,
    /// What it offers in all.
    pub total: Resources,
    /// What its tasks hold.
    pub allocated: Amount,
    /// What is on offer now.
    pub offered: Resources,
    /// The outstanding offer, if any.
    pub offer_id: Option<OfferId>,
    /// False once it missed its pings or its last will arrived.
    pub reachable: bool,
    /// How many tasks it runs, as the master knows.
    pub tasks: usize,
    /// Its latest resource report.
    pub last_report: Option<ResourceReport>,
    /// Its CPU architecture, e.g. `aarch64`.
    pub arch: String,
    /// Its attributes, as (key, value), e.g. (`sensor`, `bme280`).
    pub attributes: Vec<(String, String)>,
}

/// A read-only view of a framework.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameworkView {
    /// The framework's id.
    pub framework_id: String,
    /// Its name (empty while only recovered from agents).
    pub name: String,
    /// Its state.
    pub state: FrameworkState,
    /// What its tasks hold (on reachable agents).
    pub allocated: Amount,
    /// What is on offer to it.
    pub offered: Amount,
    /// Its dominant share (allocated plus offered), before weighting.
    pub dominant_share: f64,
    /// Whether it suppressed offers.
    pub suppressed: bool,
    /// Its tasks not yet ended.
    pub tasks: usize,
    /// Its outstanding offers.
    pub offers: usize,
    /// Its role.
    pub role: String,
    /// Its DRF weight.
    pub weight: f64,
    /// Its strict priority.
    pub priority: u32,
}

/// A read-only view of an outstanding offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferView {
    /// The offer's id.
    pub offer_id: OfferId,
    /// The framework it is made to.
    pub framework_id: String,
    /// The agent whose resources it offers.
    pub agent_id: String,
    /// What it offers.
    pub resources: Resources,
}

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
    fn bound(&mut self) {
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

/// A read-only view of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskView {
    /// Its agent.
    pub agent_id: String,
    /// Its limits.
    pub resources: Resources,
    /// Its latest state.
    pub state: TaskState,
}

#[derive(Debug, Clone)]
struct Agent {
    id: String,
    /// What its offers say about it.
    desc: Arc<AgentDescription>,
    total: Resources,
    /// Sum of the resources of its tasks that have not ended (reachable or not).
    allocated: Amount,
    offer: Option<OfferId>,
    reachable: bool,
    last_seen: u64,
    unreachable_since: u64,
    last_report: Option<ResourceReport>,
    /// (framework, task id).
    tasks: BTreeSet<(FrameworkIdx, String)>,
    /// Since when its reports count another number of tasks than the master holds there.
    mismatch_since: Option<u64>,
    /// The latest tasks that ended here by the agent's own word, as (framework id, task id): a
    /// re-registration still listing one of them as running is a stale duplicate.
    ended: VecDeque<(String, String)>,
}

/// How many ended tasks each agent remembers (see `Agent::ended`).
const ENDED_KEPT: usize = 64;

impl Agent {
    fn free(&self) -> Resources {
        let sat = |total: u32, used: u64| {
            u32::try_from(u64::from(total).saturating_sub(used)).unwrap_or(0)
        };
        Resources::new(
            sat(self.total.cpu_millis, self.allocated.cpu_millis),
            sat(self.total.mem_mib, self.allocated.mem_mib),
            sat(self.total.disk_mib, self.allocated.disk_mib),
        )
    }
}

#[derive(Debug, Clone)]
struct Task {
    agent: AgentIdx,
    resources: Resources,
    state: TaskState,
    last_update_id: Option<u32>,
    kill_grace: Option<u32>,
    revoking: bool,
    launched: u64,
    /// When it was launched or last asked to die: the retry clock of `task_retry_ms`.
    since: u64,
}

#[derive(Debug, Clone)]
struct Framework {
    id: String,
    client: Option<String>,
    info: Register,
    state: FrameworkState,
    suppressed: bool,
    /// Agent → until when it is not offered to this framework.
    filters: HashMap<AgentIdx, u64>,
    /// Resources of its tasks on reachable agents.
    allocated: Amount,
    offered: Amount,
    tasks: BTreeMap<String, Task>,
    offers: BTreeSet<OfferId>,
    held: VecDeque<Event>,
    order: u64,
}

impl Framework {
    fn used(&self) -> Amount {
        self.allocated.plus(self.offered)
    }

    fn below_guarantee(&self) -> bool {
        self.info
            .guarantee
            .as_ref()
            .is_some_and(|g| !self.used().covers(g))
    }
}

#[derive(Debug, Clone, Copy)]
struct OfferRec {
    framework: FrameworkIdx,
    agent: AgentIdx,
    resources: Resources,
}

/// How many removed framework ids are remembered, so a torn-down framework cannot re-register.
const REMOVED_IDS_KEPT: usize = 1_024;

/// The master's state machine. See the [module docs](self) for the call order.
#[derive(Debug, Clone)]
pub struct MasterCore {
    config: Config,
    epoch: u64,
    agents: Registry<AgentIdx, Agent>,
    frameworks: Registry<FrameworkIdx, Framework>,
    /// MQTT client name → the framework connected under it.
    clients: HashMap<String, FrameworkIdx>,
    removed_ids: VecDeque<String>,
    offers: BTreeMap<OfferId, OfferRec>,
    offer_expiry: BinaryHeap<std::cmp::Reverse<(u64, OfferId)>>,
    next_offer_id: OfferId,
    next_framework_seq: u64,
    next_launch_seq: u64,
    next_ping_seq: u32,
    cluster_total: Amount,
    next_allocation: u64,
    next_health: u64,
    next_framework_deadline: Option<u64>,
    outbox: VecDeque<Transmit>,
    /// Status updates for the dashboard, at most this many (0: not recorded).
    task_log_cap: usize,
    task_log: VecDeque<TaskUpdateRecord>,
    changes: Option<StatusChanges>,
    stats: Stats,
}

impl MasterCore {
    /// A master with a fresh `epoch`, started at `now`.
    ///
    /// The epoch must be larger than any earlier master's (e.g. the wall clock in milliseconds): it
    /// tells agents to re-register and it is part of every framework id this master hands out, which
    /// keeps framework ids unique across restarts.
    pub fn new(config: Config, epoch: u64, now: u64) -> Result<Self, ConfigError> {
        config.validate()?;
        if epoch == 0 {
            return Err(ConfigError {
                field: "epoch",
                problem: "must be above 0 (0 means no master to agents)",
            });
        }
        let mut core = MasterCore {
            next_allocation: now + config.allocation_interval_ms,
            next_health: now + config.ping_interval_ms,
            config,
            epoch,
            agents: Registry::new(),
            frameworks: Registry::new(),
            clients: HashMap::new(),
            removed_ids: VecDeque::new(),
            offers: BTreeMap::new(),
            offer_expiry: BinaryHeap::new(),
            next_offer_id: 1,
            next_framework_seq: 1,
            next_launch_seq: 0,
            next_ping_seq: 1,
            cluster_total: Amount::default(),
            next_framework_deadline: None,
            outbox: VecDeque::new(),
            task_log_cap: 0,
            task_log: VecDeque::new(),
            changes: None,
            stats: Stats::default(),
        };
        core.outbox.push_back(Transmit {
            topic: topic::MASTER_HELLO.to_owned(),
            qos: QoS::AtLeastOnce,
            retain: true,
            message: Outgoing::Agent(Box::new(MasterMsg::Hello {
                master_epoch: epoch,
            })),
        });
        Ok(core)
    }

    /// The MQTT topic filters the driver subscribes to.
    pub fn subscriptions() -> Vec<String> {
        let uplinks = [
            AgentTopic::Register,
            AgentTopic::Report,
            AgentTopic::Status,
            AgentTopic::Pong,
            AgentTopic::Will,
        ];
        uplinks
            .iter()
            .map(|k| k.filter().as_str().to_owned())
            .chain(proto::MASTER_FILTERS.iter().map(|f| (*f).to_owned()))
            .chain(std::iter::once(OPERATOR_KILL_TOPIC.to_owned()))
            .collect()
    }

    // ----- inspection -----

    /// This master's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The sum of the totals of the reachable agents.
    pub fn cluster_total(&self) -> Amount {
        self.cluster_total
    }

    /// One agent.
    pub fn agent(&self, agent_id: &str) -> Option<AgentView> {
        let a = self.agents.get(self.agents.lookup(agent_id)?)?;
        Some(AgentView {
            agent_id: a.id.clone(),
            hostname: a.desc.hostname.clone(),
            total: a.total,
            allocated: a.allocated,
            offered: a
                .offer
                .and_then(|o| self.offers.get(&o))
                .map_or(Resources::ZERO, |o| o.resources),
            offer_id: a.offer,
            reachable: a.reachable,
            tasks: a.tasks.len(),
            last_report: a.last_report,
            arch: a.desc.arch.clone(),
            attributes: a
                .desc
                .attributes
                .iter()
                .map(|at| (at.key.clone(), at.value.clone()))
                .collect(),
        })
    }

    /// Every agent's id.
    pub fn agent_ids(&self) -> Vec<String> {
        self.agents.values().map(|a| a.id.clone()).collect()
    }

    /// One framework.
    pub fn framework(&self, framework_id: &str) -> Option<FrameworkView> {
        let f = self.frameworks.get(self.frameworks.lookup(framework_id)?)?;
        Some(FrameworkView {
            framework_id: f.id.clone(),
            name: f.info.name.clone(),
            state: f.state,
            allocated: f.allocated,
            offered: f.offered,
            dominant_share: dominant_share(f.used(), self.cluster_total),
            suppressed: f.suppressed,
            tasks: f.tasks.len(),
            offers: f.offers.len(),
            role: f.info.role.clone(),
            weight: f.info.weight,
            priority: f.info.priority,
        })
    }

    /// Every framework's id.
    pub fn framework_ids(&self) -> Vec<String> {
        self.frameworks.values().map(|f| f.id.clone()).collect()
    }

    /// One task, as the master knows it.
    pub fn task(&self, framework_id: &str, task_id: &str) -> Option<TaskView> {
        let f = self.frameworks.get(self.frameworks.lookup(framework_id)?)?;
        let t = f.tasks.get(task_id)?;
        Some(TaskView {
            agent_id: self.agents.get(t.agent)?.id.clone(),
            resources: t.resources,
            state: t.state,
        })
    }

    /// Every task not yet ended, as (framework id, task id, view), by framework then task id.
    pub fn tasks(&self) -> Vec<(String, String, TaskView)> {
        let mut out = Vec::new();
        for f in self.frameworks.values() {
            for (tid, t) in &f.tasks {
                let Some(a) = self.agents.get(t.agent) else {
                    continue;
                };
                out.push((
                    f.id.clone(),
                    tid.clone(),
                    TaskView {
                        agent_id: a.id.clone(),
                        resources: t.resources,
                        state: t.state,
                    },
                ));
            }
        }
        out
    }

    /// Every outstanding offer, by id.
    pub fn offers(&self) -> Vec<OfferView> {
        self.offers
            .iter()
            .filter_map(|(id, rec)| {
                Some(OfferView {
                    offer_id: *id,
                    framework_id: self.frameworks.get(rec.framework)?.id.clone(),
                    agent_id: self.agents.get(rec.agent)?.id.clone(),
                    resources: rec.resources,
                })
            })
            .collect()
    }

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

    /// One outstanding offer.
    pub fn offer(&self, offer_id: OfferId) -> Option<OfferView> {
        let rec = self.offers.get(&offer_id)?;
        Some(OfferView {
            offer_id,
            framework_id: self.frameworks.get(rec.framework)?.id.clone(),
            agent_id: self.agents.get(rec.agent)?.id.clone(),
            resources: rec.resources,
        })
    }

    /// How many offers are outstanding.
    pub fn offer_count(&self) -> usize {
        self.offers.len()
    }

    /// The tasks not yet ended on an agent, as `{framework_id}/{task_id}`, sorted.
    pub fn agent_task_ids(&self, agent_id: &str) -> Vec<String> {
        let Some(a) = self.agents.by_id(agent_id) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = a
            .tasks
            .iter()
            .filter_map(|(fi, tid)| Some(format!("{}/{tid}", self.frameworks.get(*fi)?.id)))
            .collect();
        ids.sort();
        ids
    }

    /// The states of a framework's tasks not yet ended.
    pub fn framework_task_states(&self, framework_id: &str) -> Vec<TaskState> {
        self.frameworks
            .by_id(framework_id)
            .map(|f| f.tasks.values().map(|t| t.state).collect())
            .unwrap_or_default()
    }

    // ----- change notes for the status publisher -----

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

    /// Checks the books: every agent's tasks and offer fit in its total, offers are consistent,
    /// framework sums match their tasks. Returns the first inconsistency found.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut fw_alloc: HashMap<FrameworkIdx, Amount> = HashMap::new();
        let mut fw_offered: HashMap<FrameworkIdx, Amount> = HashMap::new();
        let mut cluster = Amount::default();
        for (ai, a) in self.agents.iter() {
            let mut sum = Amount::default();
            for (fi, tid) in &a.tasks {
                let f = self
                    .frameworks
                    .get(*fi)
                    .ok_or_else(|| format!("agent {} lists a task of a removed framework", a.id))?;
                let t = f
                    .tasks
                    .get(tid)
                    .ok_or_else(|| format!("agent {} lists unknown task {tid}", a.id))?;
                if t.agent != ai {
                    return Err(format!("task {tid} is listed on two agents"));
                }
                sum.add(t.resources);
                if a.reachable && t.state != TaskState::Unreachable {
                    fw_alloc.entry(*fi).or_default().add(t.resources);
                }
            }
            if sum != a.allocated {
                return Err(format!(
                    "agent {} allocation is off: {sum:?} vs {:?}",
                    a.id, a.allocated
                ));
            }
            let mut used = sum;
            if let Some(o) = a.offer {
                let rec = self
                    .offers
                    .get(&o)
                    .ok_or_else(|| format!("agent {} points at a missing offer", a.id))?;
                if rec.agent != ai {
                    return Err(format!("offer {o} is on another agent"));
                }
                used.add(rec.resources);
            }
            let mut total = Amount::default();
            total.add(a.total);
            if !total.covers_amount(&used) {
                return Err(format!(
                    "agent {} is over-committed: {used:?} of {}",
                    a.id, a.total
                ));
            }
            if a.reachable {
                cluster.add(a.total);
            }
        }
        for (id, rec) in &self.offers {
            let a = self
                .agents
                .get(rec.agent)
                .ok_or_else(|| format!("offer {id} is on a removed agent"))?;
            if a.offer != Some(*id) || !a.reachable {
                return Err(format!("offer {id} is not the offer of its agent"));
            }
            let f = self
                .frameworks
                .get(rec.framework)
                .ok_or_else(|| format!("offer {id} belongs to a removed framework"))?;
            if !f.offers.contains(id) || f.state != FrameworkState::Active {
                return Err(format!("offer {id} is not listed by an active framework"));
            }
            fw_offered
                .entry(rec.framework)
                .or_default()
                .add(rec.resources);
        }
        for (fi, f) in self.frameworks.iter() {
            if fw_alloc.get(&fi).copied().unwrap_or_default() != f.allocated {
                return Err(format!("framework {} allocation is off", f.id));
            }
            if fw_offered.get(&fi).copied().unwrap_or_default() != f.offered {
                return Err(format!("framework {} offered sum is off", f.id));
            }
            for (tid, t) in &f.tasks {
                let ok = self
                    .agents
                    .get(t.agent)
                    .is_some_and(|a| a.tasks.contains(&(fi, tid.clone())));
                if !ok || t.state.is_terminal() {
                    return Err(format!("task {tid} of {} is not on its agent", f.id));
                }
            }
        }
        if cluster != self.cluster_total {
            return Err("cluster total is off".into());
        }
        Ok(())
    }

    // ----- outputs -----

    /// The next message to publish, or `None`.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.pop_front()
    }

    /// When the driver should call [`handle_timeout`](Self::handle_timeout) next.
    pub fn poll_timeout(&self) -> Option<u64> {
        let mut t = self.next_allocation.min(self.next_health);
        if let Some(std::cmp::Reverse((at, _))) = self.offer_expiry.peek() {
            t = t.min(*at);
        }
        if let Some(d) = self.next_framework_deadline {
            t = t.min(d);
        }
        Some(t)
    }

    // ----- timers -----

    /// The timer fired: expire offers, remove frameworks past their failover timeout, check agents'
    /// health and run the allocation round when due.
    pub fn handle_timeout(&mut self, now: u64) {
        while let Some(std::cmp::Reverse((at, id))) = self.offer_expiry.peek().copied() {
            if at > now {
                break;
            }
            self.offer_expiry.pop();
            if let Some(rec) = self.offers.get(&id).copied() {
                self.rescind(id, true);
                // Unanswered counts as declined: the agent goes to the others first.
                let until = now + self.config.default_refuse_ms;
                if let Some(f) = self.frameworks.get_mut(rec.framework) {
                    f.filters.insert(rec.agent, until);
                }
                self.request_allocation(now);
            }
        }
        if self.next_framework_deadline.is_some_and(|d| d <= now) {
            let due: Vec<FrameworkIdx> = self
                .frameworks
                .iter()
                .filter_map(|(i, f)| match f.state {
                    FrameworkState::Disconnected { deadline }
                    | FrameworkState::Recovered { deadline }
                        if deadline <= now =>
                    {
                        Some(i)
                    }
                    _ => None,
                })
                .collect();
            for slot in due {
                self.remove_framework(now, slot);
            }
            self.recompute_framework_deadline();
        }
        if now >= self.next_health {
            self.health_check(now);
            self.next_health = now + self.config.ping_interval_ms;
        }
        if now >= self.next_allocation {
            self.allocate(now);
            self.next_allocation = now + self.config.allocation_interval_ms;
        }
    }

    // ----- bookkeeping helpers -----

    fn add_task(
        &mut self,
        now: u64,
        fi: FrameworkIdx,
        tid: &str,
        agent: AgentIdx,
        r: Resources,
        state: TaskState,
    ) {
        let launched = self.next_launch_seq;
        self.next_launch_seq += 1;
        let Some(f) = self.frameworks.get_mut(fi) else {
            return;
        };
        f.tasks.insert(
            tid.to_owned(),
            Task {
                agent,
                resources: r,
                state,
                last_update_id: None,
                kill_grace: None,
                revoking: false,
                launched,
                since: now,
            },
        );
        f.allocated.add(r);
        let fid = f.id.clone();
        if let Some(a) = self.agents.get_mut(agent) {
            a.allocated.add(r);
            a.tasks.insert((fi, tid.to_owned()));
            // A new launch may reuse the id of a task that ended here.
            a.ended.retain(|(f, t)| *f != fid || t != tid);
        }
        self.touch_task(fi, tid);
    }

    /// Forgets a task that ended by the agent's own word, remembering it on its agent.
    fn end_reported_task(&mut self, fi: FrameworkIdx, tid: &str) {
        let fid = self.frameworks.get(fi).map(|f| f.id.clone());
        let agent = self
            .frameworks
            .get(fi)
            .and_then(|f| f.tasks.get(tid))
            .map(|t| t.agent);
        if let (Some(fid), Some(a)) = (fid, agent.and_then(|ai| self.agents.get_mut(ai))) {
            if a.ended.len() >= ENDED_KEPT {
                a.ended.pop_front();
            }
            a.ended.push_back((fid, tid.to_owned()));
        }
        self.end_task(fi, tid);
    }

    /// Forgets a task and gives its resources back.
    fn end_task(&mut self, fi: FrameworkIdx, tid: &str) {
        self.touch_task(fi, tid);
        let Some(f) = self.frameworks.get_mut(fi) else {
            return;
        };
        let Some(t) = f.tasks.remove(tid) else {
            return;
        };
        let agent_reachable = self.agents.get(t.agent).is_some_and(|a| a.reachable);
        if t.state != TaskState::Unreachable && agent_reachable {
            f.allocated.sub(t.resources);
        }
        if let Some(a) = self.agents.get_mut(t.agent) {
            a.allocated.sub(t.resources);
            a.tasks.remove(&(fi, tid.to_owned()));
        }
    }

    /// Withdraws an offer, giving its resources back; tells the framework when `notify`.
    fn rescind(&mut self, id: OfferId, notify: bool) {
        let Some(rec) = self.offers.remove(&id) else {
            return;
        };
        self.touch_offer(id);
        self.touch_agent(rec.agent);
        self.touch_framework(rec.framework);
        if let Some(a) = self.agents.get_mut(rec.agent) {
            if a.offer == Some(id) {
                a.offer = None;
            }
        }
        if let Some(f) = self.frameworks.get_mut(rec.framework) {
            f.offered.sub(rec.resources);
            f.offers.remove(&id);
        }
        if notify {
            self.stats.offers_rescinded += 1;
            self.send_framework(rec.framework, Event::Rescind { offer_id: id });
        }
    }

    fn send_kill(&mut self, agent: AgentIdx, fi: FrameworkIdx, tid: &str, grace_ms: u32) {
        let (Some(a), Some(f)) = (self.agents.get(agent), self.frameworks.get(fi)) else {
            return;
        };
        let (Ok(framework_id), Ok(task_id)) = (
            agent_nostd_core::ids::id(&f.id),
            agent_nostd_core::ids::id(tid),
        ) else {
            return;
        };
        let agent_id = a.id.clone();
        self.send_agent(
            &agent_id,
            MasterMsg::KillTask(KillTask {
                framework_id,
                task_id,
                grace_ms,
            }),
        );
    }

    fn send_agent(&mut self, agent_id: &str, msg: MasterMsg) {
        self.touch_agent_id(agent_id);
        if let (Some(c), MasterMsg::RunTask(r)) = (self.changes.as_mut(), &msg) {
            c.tasks
                .insert((r.framework_id.as_str().into(), r.task_id.as_str().into()));
        }
        self.outbox.push_back(Transmit {
            topic: topic::agent(agent_id, AgentTopic::Cmd).as_str().to_owned(),
            qos: QoS::AtLeastOnce,
            retain: false,
            message: Outgoing::Agent(Box::new(msg)),
        });
    }

    /// Sends an event to a framework, or holds it while the framework is not connected.
    fn send_framework(&mut self, fi: FrameworkIdx, event: Event) {
        let max = self.config.max_held_events;
        let Some(f) = self.frameworks.get_mut(fi) else {
            return;
        };
        if let (Some(c), Event::Update(u)) = (self.changes.as_mut(), &event) {
            c.tasks.insert((f.id.clone(), u.task_id.clone()));
            if let Some(a) = &u.agent_id {
                c.agents.insert(a.clone());
            }
            c.bound();
        }
        if let (Some(c), Event::Rescind { offer_id }) = (self.changes.as_mut(), &event) {
            c.offers.insert(*offer_id);
        }
        if let Some(c) = self.changes.as_mut() {
            c.frameworks.insert(f.id.clone());
        }
        if let Event::Update(u) = &event {
            if self.task_log_cap > 0 && u.reason != agent_nostd_core::wire::Reason::UnknownTask {
                if self.task_log.len() >= self.task_log_cap {
                    self.task_log.pop_front();
                }
                self.task_log.push_back(TaskUpdateRecord {
                    framework_id: f.id.clone(),
                    update: u.clone(),
                });
            }
        }
        if let (FrameworkState::Active, Some(client)) = (f.state, &f.client) {
            let topic = proto::event_topic(client);
            self.outbox.push_back(Transmit {
                topic,
                qos: QoS::AtLeastOnce,
                retain: false,
                message: Outgoing::Framework(event),
            });
        } else {
            if matches!(event, Event::Offers(_) | Event::Rescind { .. }) {
                return; // a disconnected framework holds no offers
            }
            if f.held.len() >= max {
                f.held.pop_front();
                self.stats.held_events_dropped += 1;
            }
            f.held.push_back(event);
        }
    }

    fn send_client(&mut self, client: &str, event: Event) {
        self.outbox.push_back(Transmit {
            topic: proto::event_topic(client),
            qos: QoS::AtLeastOnce,
            retain: false,
            message: Outgoing::Framework(event),
        });
    }

    fn call_error(
        &mut self,
        fi: FrameworkIdx,
        code: ErrorCode,
        offer_id: Option<OfferId>,
        message: &str,
    ) {
        self.send_framework(
            fi,
            Event::Error {
                code,
                offer_id,
                message: message.to_owned(),
            },
        );
    }
}
