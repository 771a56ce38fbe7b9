//! [`MasterCore`]: the master's sans-IO state machine.
//!
//! It keeps the agents, frameworks, offers and tasks (all soft state, rebuilt from re-registrations
//! after a restart), runs the allocator and the offer cycle, and speaks both wires: the agent wire of
//! [`agent_nostd_core::wire`] and the framework protocol of [`bramble_proto`].
//!
//! # Layout
//!
//! The state is split by what it is about, not by which wire an input arrived on:
//!
//! - `input.rs`: agent, framework and operator payloads decoded, checked against their topic and
//!   handed to the entity they concern (wire handling only).
//! - `agent.rs`, `framework.rs`, `task.rs`, `offer.rs`: each entity's record and lifecycle; the
//!   task records and the allocated sums (per agent, per framework) live in one `TaskTable`
//!   (`task_table.rs`), the offers in an `OfferBook`.
//! - `delivery.rs`: end-to-end status updates (framework acknowledgements passed to agents,
//!   resends on re-registration) and each framework's completed-task cache.
//! - `allocation.rs`: the allocation round and revocation.
//! - `registry.rs`: the slot arena agents and frameworks live in (`Registry`, indexed by
//!   `AgentIdx` and `FrameworkIdx`).
//! - `output.rs`: what the core sends and the outbox; `events.rs`: the [`CoreEvent`]s the status
//!   publisher polls; `views.rs`: read-only views; `stats.rs`: counters and [`RecvError`];
//!   `invariants.rs`: [`MasterCore::check_invariants`].
//! - This module: [`MasterCore`] itself, its construction, outputs and timers.
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
//! 3. when events are recorded ([`MasterCore::record_events`]), hand each [`CoreEvent`] from
//!    [`MasterCore::poll_event`] to whoever shows the cluster (the status publisher);
//! 4. arm its timer at [`MasterCore::poll_timeout`].
//!
//! The first transmits, right after [`MasterCore::new`], are the retained `Hello` with the master's
//! epoch. The driver subscribes to [`MasterCore::subscriptions`] before feeding anything.
//!
//! # Guarantees
//!
//! - Nothing here panics on input from the network; bad input is counted in [`Stats`] and dropped.
//! - A status update is acknowledged to its agent only once its framework acknowledged it, or at
//!   once when no framework is left to tell; until then the master resends it whenever the
//!   framework (re-)registers. Reconciling a task answers its state, an ended task's terminal
//!   state from the completed-task cache, and an unknown task TASK_LOST once the
//!   re-registration window after the master's start has passed.
//! - An agent is never offered more than its total less what its tasks hold, and an accept whose tasks
//!   do not fit in the offer is refused whole ([`MasterCore::check_invariants`] checks the books).
//! - Lost or stale agent messages heal: a task still STAGING after [`Config::task_retry_ms`], or
//!   reports whose task count disagrees with the master's for that long, make the master ask the
//!   agent to re-register (its task list settles every task); an unanswered kill is sent again; a
//!   duplicated old registration cannot revive a task the agent reported ended.
//! - Growth from the network is bounded: agents and frameworks by [`Config::max_agents`] and
//!   [`Config::max_frameworks`], a disconnected framework's waiting events by
//!   [`Config::max_held_events`], filters by the number of agents, tasks by agents × `MAX_TASKS`,
//!   the memory of ended tasks by 64 per agent, each framework's completed-task cache by
//!   [`Config::max_completed_tasks`], ends of tasks of frameworks not registered yet by 4,096, and
//!   removed framework ids by 1,024; the events kept
//!   for [`MasterCore::poll_event`] (when recorded) by [`EVENT_IDS_CAP`] ids and the update cap.
//!   The transmit queue holds what one input produced and is emptied by the driver after each input.

mod agent;
mod agent_auth;
mod allocation;
mod delivery;
mod events;
mod framework;
mod framework_auth;
mod input;
mod invariants;
mod offer;
mod operator_auth;
mod output;
mod query;
mod registry;
mod stats;
mod tag_memory;
mod task;
mod task_table;
mod timers;
mod views;

use std::collections::{HashMap, VecDeque};

use agent_nostd_core::topic::{self, AgentTopic, QoS};
use agent_nostd_core::wire::MasterMsg;
use bramble_proto as proto;
use bramble_proto::FrameworkTopic;

use crate::allocator::Amount;
use crate::config::{Config, ConfigError};
use agent::{Agent, ENDED_KEPT};
use agent_auth::AgentAuth;
use events::EventLog;
use framework::Framework;
use offer::OfferBook;
use registry::{AgentIdx, FrameworkIdx, Registry};
use task::update_event;
use task_table::{TaskRef, TaskTable};
use timers::{Timer, Timers};

pub use agent_auth::{FrameDrop, FrameDrops, PrincipalKeys, Seal};
pub use events::{CoreEvent, EVENT_IDS_CAP};
pub use framework::FrameworkState;
pub use input::{OPERATOR_KILL_TOPIC, OPERATOR_PREFIX};
pub use operator_auth::{sign as sign_operator_command, OperatorDrop, OperatorDrops, Signer};
pub use output::{Outgoing, Transmit};
pub use query::{
    open_reply, seal_reply, QueryKind, QueryPage, QueryRequest, StatusQuery, MAX_PAGE_BYTES,
    OPERATOR_QUERY_TOPIC, OPERATOR_REPLY_PREFIX,
};
pub use stats::{RecvError, Stats};
pub use views::{AgentView, FrameworkView, OfferView, TaskView};

/// How many removed framework ids are remembered, so a torn-down framework cannot re-register.
pub(super) const REMOVED_IDS_KEPT: usize = 1_024;

/// The master's state machine. See the [module docs](self) for the call order.
#[derive(Debug, Clone)]
pub struct MasterCore {
    config: Config,
    epoch: u64,
    /// The newest epoch above ours that an agent said it obeys (see [`MasterCore::newer_epoch`]).
    newer_epoch: Option<u64>,
    /// When it started: unknown tasks are answered only after the re-registration window.
    started: u64,
    agents: Registry<AgentIdx, Agent>,
    frameworks: Registry<FrameworkIdx, Framework>,
    /// MQTT client name → the framework connected under it.
    clients: HashMap<String, FrameworkIdx>,
    removed_ids: VecDeque<String>,
    /// Ends of tasks of frameworks not known yet, as (framework id, update): see `delivery.rs`.
    unclaimed: VecDeque<(String, proto::StatusUpdate)>,
    offers: OfferBook,
    next_framework_seq: u64,
    next_ping_seq: u32,
    cluster_total: Amount,
    timers: Timers,
    tasks: TaskTable,
    outbox: VecDeque<Transmit>,
    /// The agents' keys and sessions: every agent frame is checked here first.
    auth: AgentAuth,
    /// When each agent without a session was last sent a hint.
    hinted: HashMap<String, u64>,
    /// The operator commands taken lately, to take each once.
    operator_auth: operator_auth::OperatorAuth,
    /// Status queries waiting for the driver to answer them.
    queries: query::Queries,
    /// The framework clients' sessions: every framework call is checked here first.
    fw_auth: framework_auth::FrameworkAuth,
    /// Events noted for [`poll_event`](Self::poll_event), while recording is on.
    events: Option<EventLog>,
    stats: Stats,
}

impl MasterCore {
    /// A master with a fresh `epoch`, started at `now`.
    ///
    /// The epoch must be larger than any earlier master's (the election makes it so, see
    /// [`crate::election`]; never the wall clock: a Pi has no RTC): agents obey only the newest
    /// epoch, it tells them to re-register, and it is part of every framework id this master hands
    /// out, which keeps framework ids unique across masters.
    pub fn new(config: Config, epoch: u64, now: u64) -> Result<Self, ConfigError> {
        config.validate()?;
        if epoch == 0 {
            return Err(ConfigError {
                field: "epoch",
                problem: "must be above 0 (0 means no master to agents)",
            });
        }
        let auth = AgentAuth::new(
            config.principal_keys.clone(),
            config.max_agents.saturating_mul(2),
        );
        let mut core = MasterCore {
            timers: Timers::default(),
            config,
            epoch,
            newer_epoch: None,
            started: now,
            agents: Registry::new(),
            frameworks: Registry::new(),
            clients: HashMap::new(),
            removed_ids: VecDeque::new(),
            unclaimed: VecDeque::new(),
            offers: OfferBook::new(epoch),
            next_framework_seq: 1,
            tasks: TaskTable::default(),
            next_ping_seq: 1,
            cluster_total: Amount::default(),
            outbox: VecDeque::new(),
            auth,
            hinted: HashMap::new(),
            operator_auth: Default::default(),
            queries: Default::default(),
            fw_auth: Default::default(),
            events: None,
            stats: Stats::default(),
        };
        core.timers.set(
            Timer::Allocation,
            Some(now + core.config.allocation_interval_ms),
        );
        core.timers
            .set(Timer::Health, Some(now + core.config.ping_interval_ms));
        core.outbox.push_back(hello(epoch));
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
            .chain([OPERATOR_KILL_TOPIC, OPERATOR_QUERY_TOPIC].map(str::to_owned))
            .collect()
    }

    /// The connection to the broker is up (again): the retained hello goes out again, since a
    /// restarted broker may have lost it (rumqttd keeps no retained message across a restart);
    /// agents and frameworks ignore a hello of the epoch they know.
    ///
    /// `session_present` is the ConnAck's flag. When the broker did not keep the master's
    /// persistent session, it lost every client's session and last will: a framework that does
    /// not come back would never be noticed gone. So every connected framework counts as
    /// disconnected until it registers again (the SDK does on every reconnection), and is removed
    /// after its failover timeout otherwise.
    pub fn handle_connected(&mut self, now: u64, session_present: bool) {
        self.outbox.push_back(hello(self.epoch));
        if !session_present {
            for fi in self.active_frameworks() {
                self.disconnect_framework(now, fi);
            }
        }
    }

    /// This master's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Replaces the agents' keys (the credential store changed). An agent whose key changed or
    /// went must register again, under its new key.
    pub fn set_principal_keys(&mut self, keys: PrincipalKeys) {
        self.fw_auth.retain_keys(&keys);
        self.auth.set_keys(keys);
    }

    /// The session framework client `client` speaks in, if it registered with this master.
    pub fn framework_session(&self, client: &str) -> Option<u32> {
        self.fw_auth.session(client)
    }

    /// The agents' keys in use.
    pub fn principal_keys(&self) -> &PrincipalKeys {
        self.auth.keys()
    }

    /// The newest epoch above this master's that a re-registering agent said it obeys, if any:
    /// such an agent drops everything this master sends. It is a master the broker forgot (its
    /// retained hello lost in a broker restart), or one still leading. The election decides:
    /// [`raise_epoch`](Self::raise_epoch) above it, or step down.
    pub fn newer_epoch(&self) -> Option<u64> {
        self.newer_epoch
    }

    /// Leads on under `epoch`, above the current one (and above [`newer_epoch`](Self::newer_epoch)),
    /// keeping every agent, framework and task: the new retained hello makes agents re-register.
    /// An epoch not above the current one is ignored.
    pub fn raise_epoch(&mut self, epoch: u64) {
        if epoch <= self.epoch {
            return;
        }
        self.epoch = epoch;
        self.offers.enter_term(epoch);
        if self.newer_epoch.is_some_and(|e| e <= epoch) {
            self.newer_epoch = None;
        }
        self.stats.epoch_raises += 1;
        self.outbox.push_back(hello(epoch));
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The sum of the totals of the reachable agents.
    pub fn cluster_total(&self) -> Amount {
        self.cluster_total
    }

    /// The next message to publish, or `None`.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let mut t = self.outbox.pop_front()?;
        if let (Outgoing::Framework { .. }, None) = (&t.message, &t.seal) {
            // Sealed as it leaves, in the session its framework speaks in now (an event held
            // while the framework was away goes out in the session it came back in).
            if let Some((FrameworkTopic::Event, client)) = proto::parse_topic(&t.topic) {
                t.seal = self.fw_auth.next_seal(client);
            }
        }
        Some(t)
    }

    /// When the driver should call [`handle_timeout`](Self::handle_timeout) next.
    pub fn poll_timeout(&self) -> Option<u64> {
        [self.timers.next(), self.offers.next_expiry()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The timer fired: expire offers, remove frameworks past their failover timeout, check agents'
    /// health and run the allocation round when due.
    pub fn handle_timeout(&mut self, now: u64) {
        self.expire_offers(now);
        if self.timers.is_due(Timer::FrameworkDeadline, now) {
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
        if self.timers.is_due(Timer::Health, now) {
            self.health_check(now);
            let next = now + self.config.ping_interval_ms;
            self.timers.set(Timer::Health, Some(next));
        }
        if self.timers.is_due(Timer::Allocation, now) {
            self.allocate(now);
            let next = now + self.config.allocation_interval_ms;
            self.timers.set(Timer::Allocation, Some(next));
        }
    }
}

/// The retained hello announcing master `epoch`.
fn hello(epoch: u64) -> Transmit {
    Transmit {
        topic: topic::MASTER_HELLO.to_owned(),
        qos: QoS::AtLeastOnce,
        retain: true,
        message: Outgoing::Agent(Box::new(MasterMsg::Hello.from_epoch(epoch))),
        seal: None,
    }
}
