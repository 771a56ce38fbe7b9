//! The agent's sans-IO state machine, [`AgentCore`].
//!
//! It does no I/O and reads no clock: `now` (milliseconds on any monotonic clock) is a parameter. The
//! driver feeds it inputs and carries out its outputs:
//!
//! - inputs: [`AgentCore::handle_bytes`] / [`AgentCore::handle_message`] (from the master),
//!   [`AgentCore::handle_event`] (a task started, failed to start or exited),
//!   [`AgentCore::handle_resource_sample`], [`AgentCore::handle_connected`] /
//!   [`AgentCore::handle_disconnected`] and [`AgentCore::handle_timeout`];
//! - restarts: [`AgentCore::snapshot`] is what a checkpoint holds, and [`AgentCore::restore`]
//!   takes it back in a new core (see [`snapshot`]);
//! - outputs: [`AgentCore::poll_transmit`] (a payload to publish, and where),
//!   [`AgentCore::poll_action`] (launch a task, signal its process group, forget it) and
//!   [`AgentCore::poll_timeout`] (when to call `handle_timeout` next).
//!
//! # Call order
//!
//! After any `handle_*` call, the driver calls `poll_transmit` until it returns `None`, then
//! `poll_action` until it returns `None`, then `poll_timeout` to arm its timer. When the timer fires it
//! calls `handle_timeout(now)` and polls again.
//!
//! # Guarantees
//!
//! - Registration is retried with exponential backoff (with jitter) until acknowledged.
//! - Each task's status updates are kept in order and resent with backoff until acknowledged: delivery
//!   is at least once. They are pipelined: RUNNING goes out right after STARTING, without waiting for
//!   STARTING's acknowledgement (a round trip through the broker on every launch). Each is first sent
//!   in order; an acknowledgement covers the update it names and every earlier one of that task, and
//!   the master ignores an update older than the newest it has (`update_id` grows per agent). They live in the task's slot, so the queue is bounded by [`MAX_TASKS`] × 3 and
//!   nothing is ever dropped to make room: when the table is full a new launch is refused instead.
//! - A task that does not fit in what is free, or is malformed, is refused with `TASK_ERROR` and a reason.
//! - A kill sends SIGTERM, then SIGKILL when the grace period ends.
//! - Nothing in here allocates or panics on input from the network.

mod snapshot;

use core::fmt::Write as _;

use heapless::{Deque, String, Vec};

pub use snapshot::{EndedSnapshot, Snapshot, TaskSnapshot};

use crate::ids::{validate_id, FrameworkId, TaskId, TaskKey};
use crate::resources::Resources;
use crate::topic::{self, AgentTopic, QoS, Topic, TopicBuf};
use crate::wire::{
    AgentInfo, AgentMsg, DecodeError, KillTask, MasterMsg, ReRegister, Reason, ResourceReport,
    RunTask, StatusAck, StatusUpdate, TaskReport, TaskState, WireMessage, MAX_MESSAGE_LEN,
    MAX_TASKS,
};

/// The buffer [`AgentCore::poll_transmit`] encodes into: large enough for any [`AgentMsg`].
pub type TransmitBuf = [u8; AgentMsg::MAX_ENCODED_LEN];

/// How many unacknowledged updates one task can have: STARTING, RUNNING and a terminal state.
const UPDATES_PER_TASK: usize = 4;
/// How many updates about tasks the agent does not hold (refusals it has no slot for, kills of unknown
/// tasks) wait for acknowledgement at once.
pub const MAX_ORPHAN_UPDATES: usize = 8;
/// Status update ids are reserved in blocks this long. A checkpoint records the end of the current
/// block ([`AgentCore::update_id_checkpoint`]), so a restarted agent never reuses an id the master
/// may hold, and only one update in a block needs a checkpoint before it is sent.
pub const UPDATE_ID_BLOCK: u32 = 1024;

/// Exponential backoff settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay, in milliseconds.
    pub initial_ms: u32,
    /// The longest delay, in milliseconds.
    pub max_ms: u32,
}

/// How much a resource sample must change before an early report is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Change in free CPU, in millicores.
    pub cpu_millis: u32,
    /// Change in free memory, in MiB.
    pub mem_mib: u32,
    /// Change in free disk, in MiB.
    pub disk_mib: u32,
    /// Change in SoC temperature, in tenths of a degree.
    pub temp_decidegrees: u16,
}

/// The agent core's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Retry schedule for registration.
    pub register_backoff: Backoff,
    /// Retry schedule for each unacknowledged status update.
    pub status_backoff: Backoff,
    /// A report is sent at least this often, in milliseconds, even if nothing changed.
    pub report_heartbeat_ms: u32,
    /// Reports are never sent more often than this, in milliseconds.
    pub report_min_interval_ms: u32,
    /// What counts as a change worth an early report.
    pub report_thresholds: Thresholds,
    /// Seed for the backoff jitter (e.g. from the agent id), so boards do not retry in lockstep.
    pub jitter_seed: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            register_backoff: Backoff {
                initial_ms: 1_000,
                max_ms: 30_000,
            },
            status_backoff: Backoff {
                initial_ms: 1_000,
                max_ms: 30_000,
            },
            report_heartbeat_ms: 30_000,
            report_min_interval_ms: 1_000,
            report_thresholds: Thresholds {
                cpu_millis: 100,
                mem_mib: 16,
                disk_mib: 64,
                temp_decidegrees: 20,
            },
            jitter_seed: 0x9E37_79B9,
        }
    }
}

/// A bad setting, naming the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigError {
    /// The field, e.g. `status_backoff.initial_ms`.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

impl Config {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, problem| Err(ConfigError { field, problem });
        for (b, initial, max) in [
            (
                self.register_backoff,
                "register_backoff.initial_ms",
                "register_backoff.max_ms",
            ),
            (
                self.status_backoff,
                "status_backoff.initial_ms",
                "status_backoff.max_ms",
            ),
        ] {
            if b.initial_ms == 0 {
                return bad(initial, "must be above 0");
            }
            if b.max_ms < b.initial_ms {
                return bad(max, "must be at least the initial delay");
            }
        }
        if self.report_heartbeat_ms == 0 {
            return bad("report_heartbeat_ms", "must be above 0");
        }
        if self.report_min_interval_ms > self.report_heartbeat_ms {
            return bad(
                "report_min_interval_ms",
                "must not exceed report_heartbeat_ms",
            );
        }
        Ok(())
    }
}

/// What the OS says is free now, as the driver measured it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceSample {
    /// Free resources, less the OS reserve.
    pub free: Resources,
    /// SoC temperature in tenths of a degree Celsius, when known.
    pub soc_temp_decidegrees: Option<i16>,
    /// Firmware throttling flags, 0 if none or unknown.
    pub throttled: u8,
}

/// How a task's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
    /// The kernel's OOM killer ended it at its memory limit.
    OomKilled,
    /// It ended while the agent was down and how is unknown.
    Unknown,
}

/// Something that happened to a task on this board, reported by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalEvent<'a> {
    /// The task's process is running.
    Started {
        /// The task's framework.
        framework_id: &'a str,
        /// The task.
        task_id: &'a str,
    },
    /// The task's process could not be started.
    LaunchFailed {
        /// The task's framework.
        framework_id: &'a str,
        /// The task.
        task_id: &'a str,
        /// Why, for people (truncated to 64 bytes).
        message: &'a str,
    },
    /// The task's process ended.
    Exited {
        /// The task's framework.
        framework_id: &'a str,
        /// The task.
        task_id: &'a str,
        /// How.
        exit: Exit,
    },
}

/// Which signal to send a task's process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: please stop.
    Term,
    /// SIGKILL (and kill the whole cgroup): stop now.
    Kill,
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start the task (from the [`RunTask`] just handled) with these limits, then report
    /// [`LocalEvent::Started`] or [`LocalEvent::LaunchFailed`].
    Launch {
        /// The task's framework.
        framework_id: FrameworkId,
        /// The task.
        task_id: TaskId,
        /// CPU, memory and disk limits.
        resources: Resources,
        /// Process limit, 0 for the driver's default.
        pids_max: u32,
    },
    /// Signal the task's process group.
    Signal {
        /// The task's framework.
        framework_id: FrameworkId,
        /// The task.
        task_id: TaskId,
        /// Which signal.
        signal: Signal,
    },
    /// The task's end is acknowledged: forget it and clean up what is left of it.
    Release {
        /// The task's framework.
        framework_id: FrameworkId,
        /// The task.
        task_id: TaskId,
    },
}

impl Action {
    /// The key of the task this action is about.
    pub fn key(&self) -> TaskKey {
        let (Action::Launch {
            framework_id,
            task_id,
            ..
        }
        | Action::Signal {
            framework_id,
            task_id,
            ..
        }
        | Action::Release {
            framework_id,
            task_id,
        }) = self;
        TaskKey {
            framework_id: framework_id.clone(),
            task_id: task_id.clone(),
        }
    }
}

/// A payload [`AgentCore::poll_transmit`] wrote, and where to publish it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The topic.
    pub topic: TopicBuf,
    /// The QoS to publish with.
    pub qos: QoS,
    /// Whether the broker should retain it.
    pub retain: bool,
    /// How many bytes of the buffer hold the payload.
    pub len: usize,
}

/// Why an input from the network was not used. Each is also counted in [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecvError {
    /// The topic is not one this agent listens on.
    UnknownTopic,
    /// The payload could not be decoded.
    Decode(DecodeError),
    /// A valid message arrived on a topic that does not carry it.
    WrongTopic,
    /// The message names another agent.
    NotForThisAgent,
}

impl core::fmt::Display for RecvError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RecvError::UnknownTopic => f.write_str("not a topic this agent listens on"),
            RecvError::Decode(e) => write!(f, "undecodable payload: {e}"),
            RecvError::WrongTopic => {
                f.write_str("message arrived on a topic that does not carry it")
            }
            RecvError::NotForThisAgent => f.write_str("message names another agent"),
        }
    }
}

/// Why a local event or an adoption was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskError {
    /// No such task in the table.
    UnknownTask,
    /// The event does not fit the task's state (e.g. a second exit).
    InvalidTransition,
    /// The task is already in the table.
    AlreadyKnown,
    /// The table is full.
    TableFull,
    /// A framework or task id is not a valid id.
    InvalidId,
}

impl core::fmt::Display for TaskError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            TaskError::UnknownTask => "no such task",
            TaskError::InvalidTransition => "event does not fit the task's state",
            TaskError::AlreadyKnown => "task already known",
            TaskError::TableFull => "task table is full",
            TaskError::InvalidId => "invalid framework or task id",
        })
    }
}

/// Counters of what the core did and dropped, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Payloads that failed to decode (any reason but version).
    pub malformed: u32,
    /// Payloads from another protocol version.
    pub unsupported_version: u32,
    /// Payloads on a topic that does not carry them, or not for this agent.
    pub misrouted: u32,
    /// Registrations (and re-registrations) sent.
    pub registrations_sent: u32,
    /// Resource reports sent.
    pub reports_sent: u32,
    /// Status updates sent, first tries and retries.
    pub status_sent: u32,
    /// Of those, retries.
    pub status_retries: u32,
    /// RunTask messages for a task already held (duplicate delivery), ignored.
    pub duplicate_launches: u32,
    /// RunTask messages refused with TASK_ERROR.
    pub refused_launches: u32,
    /// Acknowledgements that matched no pending update.
    pub stale_acks: u32,
    /// Updates about tasks without a slot that could not be queued because that queue was full.
    pub orphans_dropped: u32,
}

/// A task as the core sees it, for inspection and checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskView<'a> {
    /// The task's key: its framework and id.
    pub key: &'a TaskKey,
    /// The task's framework.
    pub framework_id: &'a str,
    /// The task.
    pub task_id: &'a str,
    /// Its limits.
    pub resources: Resources,
    /// Its process limit, 0 for the driver's default.
    pub pids_max: u32,
    /// Its latest state.
    pub state: TaskState,
    /// How many of its updates await acknowledgement.
    pub unacked_updates: usize,
    /// Why it ended, once it has.
    pub end_reason: Option<Reason>,
    /// The message of its terminal update, or empty.
    pub message: &'a str,
}

/// A task that ended before an agent restart, as its checkpoint recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndedTask<'a> {
    /// The task's framework.
    pub framework_id: &'a str,
    /// The task.
    pub task_id: &'a str,
    /// Its limits.
    pub resources: Resources,
    /// Its terminal state.
    pub state: TaskState,
    /// Why it ended.
    pub reason: Reason,
    /// The terminal update's message.
    pub message: &'a str,
}

/// A task as a checkpoint recorded it, for [`AgentCore::restore_task`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RestoredTask<'a> {
    key: &'a TaskKey,
    resources: Resources,
    /// 0 for the driver's default.
    pids_max: u32,
    /// How it ended, if it had: its terminal state, why, and the terminal update's message.
    ended: Option<(TaskState, Reason, &'a str)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    update_id: u32,
    state: TaskState,
    reason: Reason,
    next_send: u64,
    delay_ms: u32,
    attempts: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Launching,
    Running,
    Ended(TaskState, Reason),
}

const WANT_LAUNCH: u8 = 1;
const WANT_TERM: u8 = 2;
const WANT_KILL: u8 = 4;
const WANT_RELEASE: u8 = 8;

#[derive(Debug, Clone)]
struct Slot {
    key: TaskKey,
    resources: Resources,
    pids_max: u32,
    phase: Phase,
    /// Set once a kill was asked for: the grace period.
    kill_grace_ms: Option<u32>,
    /// When SIGKILL is due, while the task is being killed.
    kill_deadline: Option<u64>,
    want: u8,
    updates: Deque<Pending, UPDATES_PER_TASK>,
    /// The message carried by the task's terminal update.
    message: String<MAX_MESSAGE_LEN, u8>,
}

impl Slot {
    fn is(&self, framework_id: &str, task_id: &str) -> bool {
        self.key.is(framework_id, task_id)
    }

    fn view(&self) -> TaskView<'_> {
        TaskView {
            key: &self.key,
            framework_id: &self.key.framework_id,
            task_id: &self.key.task_id,
            resources: self.resources,
            pids_max: self.pids_max,
            state: self.state(),
            unacked_updates: self.updates.len(),
            end_reason: match self.phase {
                Phase::Ended(_, reason) => Some(reason),
                _ => None,
            },
            message: &self.message,
        }
    }

    fn holds_resources(&self) -> bool {
        !matches!(self.phase, Phase::Ended(..))
    }

    fn state(&self) -> TaskState {
        match self.phase {
            Phase::Launching => TaskState::Starting,
            Phase::Running => TaskState::Running,
            Phase::Ended(s, _) => s,
        }
    }
}

#[derive(Debug, Clone)]
struct Orphan {
    key: TaskKey,
    pending: Pending,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Registration {
    Registering {
        next_attempt: u64,
        delay_ms: u32,
        last_sent: Option<u64>,
    },
    Registered,
}

/// The agent's state machine. See the [module docs](self) for the call order.
///
/// At the default capacities ([`MAX_TASKS`] = 32) it is about 12 KiB and never allocates.
#[derive(Debug, Clone)]
pub struct AgentCore {
    config: Config,
    info: AgentInfo,
    registration: Registration,
    master_epoch: u64,
    connected: bool,
    slots: Vec<Slot, MAX_TASKS>,
    orphans: Vec<Orphan, MAX_ORPHAN_UPDATES>,
    next_update_id: u32,
    /// Ids reserved from `next_update_id` on that a checkpoint already covers.
    update_ids_left: u32,
    pong: Option<u32>,
    sample: Option<ResourceSample>,
    last_report: Option<ResourceReport>,
    last_report_at: Option<u64>,
    /// When a significant change makes an early report due.
    report_due_at: Option<u64>,
    rng: u32,
    generation: u32,
    stats: Stats,
}

impl AgentCore {
    /// A core for the agent described by `info`, registering from `now` on (once connected).
    pub fn new(config: Config, info: AgentInfo, now: u64) -> Result<Self, ConfigError> {
        config.validate()?;
        if validate_id(&info.agent_id).is_err() {
            return Err(ConfigError {
                field: "agent_id",
                problem: "must be 1-32 bytes of A-Z a-z 0-9 . _ -",
            });
        }
        let rng = config.jitter_seed | 1;
        Ok(AgentCore {
            registration: Registration::Registering {
                next_attempt: now,
                delay_ms: config.register_backoff.initial_ms,
                last_sent: None,
            },
            config,
            info,
            master_epoch: 0,
            connected: false,
            slots: Vec::new(),
            orphans: Vec::new(),
            next_update_id: 1,
            update_ids_left: 0,
            pong: None,
            sample: None,
            last_report: None,
            last_report_at: None,
            report_due_at: None,
            rng,
            generation: 0,
            stats: Stats::default(),
        })
    }

    /// The agent's id.
    pub fn agent_id(&self) -> &str {
        &self.info.agent_id
    }

    /// True once the current master has acknowledged the registration.
    pub fn is_registered(&self) -> bool {
        self.registration == Registration::Registered
    }

    /// The epoch of the master this agent last registered with, or 0.
    pub fn master_epoch(&self) -> u64 {
        self.master_epoch
    }

    /// What the agent offers in all.
    pub fn total(&self) -> Resources {
        self.info.total
    }

    /// The sum of the limits of tasks starting or running.
    pub fn allocated(&self) -> Resources {
        self.slots
            .iter()
            .filter(|s| s.holds_resources())
            .fold(Resources::ZERO, |acc, s| acc.saturating_add(&s.resources))
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Bumped whenever something a checkpoint must hold changes (a task added or ended, the master
    /// epoch, a new block of update ids; not a task released): the driver writes a checkpoint only when this
    /// moved, so an idle agent writes nothing, and neither do acknowledgements or most updates.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The next status update id to be used.
    pub fn next_update_id(&self) -> u32 {
        self.next_update_id
    }

    /// The id a restarted agent continues from: past every id this block of
    /// [`UPDATE_ID_BLOCK`] reserves (ids skip 0 when they wrap).
    pub fn update_id_checkpoint(&self) -> u32 {
        match self.next_update_id.overflowing_add(self.update_ids_left) {
            (id, false) => id,
            (id, true) => id + 1,
        }
    }

    /// Continue update ids from a checkpoint's [`update_id_checkpoint`](Self::update_id_checkpoint),
    /// so ids are not reused after a restart.
    pub fn set_next_update_id(&mut self, id: u32) {
        self.next_update_id = id.max(1);
        self.update_ids_left = 0;
    }

    /// Every task in the table.
    pub fn tasks(&self) -> impl Iterator<Item = TaskView<'_>> {
        self.slots.iter().map(Slot::view)
    }

    /// The task named `key`, if the table holds it.
    pub fn task(&self, key: &TaskKey) -> Option<TaskView<'_>> {
        self.slots.iter().find(|s| s.key == *key).map(Slot::view)
    }

    /// The MQTT last will to set when connecting: [`AgentMsg::Gone`] on this agent's `will` topic.
    pub fn last_will(&self, buf: &mut TransmitBuf) -> Transmit {
        self.encode(&AgentMsg::Gone, buf)
            .expect("Gone always fits the transmit buffer")
    }

    /// Takes back a task that is still running after an agent restart (from the driver's checkpoint).
    /// [`restore`](Self::restore) does this for every task of a snapshot.
    pub fn adopt_task(
        &mut self,
        framework_id: &str,
        task_id: &str,
        resources: Resources,
        pids_max: u32,
    ) -> Result<(), TaskError> {
        let Ok(key) = TaskKey::new(framework_id, task_id) else {
            return Err(TaskError::InvalidId);
        };
        self.adopt_slot(key, resources, pids_max)
    }

    /// Takes back one task a checkpoint recorded: one still running, or one that had ended without
    /// the master acknowledging it (its terminal update is sent again, with a new update id, once
    /// registered). [`restore`](Self::restore), [`adopt_task`](Self::adopt_task) and
    /// [`restore_ended_task`](Self::restore_ended_task) all come here.
    fn restore_task(&mut self, now: u64, task: RestoredTask<'_>) -> Result<(), TaskError> {
        if task.ended.is_some_and(|(state, ..)| !state.is_terminal()) {
            return Err(TaskError::InvalidTransition);
        }
        self.adopt_slot(task.key.clone(), task.resources, task.pids_max)?;
        if let Some((state, reason, message)) = task.ended {
            let i = self.slots.len() - 1;
            self.end_task(i, now, state, reason, |m| push_truncated(m, message));
        }
        Ok(())
    }

    fn adopt_slot(
        &mut self,
        key: TaskKey,
        resources: Resources,
        pids_max: u32,
    ) -> Result<(), TaskError> {
        if self.slot_index(&key.framework_id, &key.task_id).is_some() {
            return Err(TaskError::AlreadyKnown);
        }
        self.slots
            .push(Slot {
                key,
                resources,
                pids_max,
                phase: Phase::Running,
                kill_grace_ms: None,
                kill_deadline: None,
                want: 0,
                updates: Deque::new(),
                message: String::new(),
            })
            .map_err(|_| TaskError::TableFull)?;
        self.generation = self.generation.wrapping_add(1);
        Ok(())
    }

    /// Restores, from the driver's checkpoint, a task that had ended but whose end the master had not
    /// acknowledged: its terminal update is sent again (with a new update id) once registered.
    pub fn restore_ended_task(&mut self, now: u64, task: EndedTask<'_>) -> Result<(), TaskError> {
        if !task.state.is_terminal() {
            return Err(TaskError::InvalidTransition);
        }
        let Ok(key) = TaskKey::new(task.framework_id, task.task_id) else {
            return Err(TaskError::InvalidId);
        };
        let restored = RestoredTask {
            key: &key,
            resources: task.resources,
            pids_max: 0,
            ended: Some((task.state, task.reason, task.message)),
        };
        self.restore_task(now, restored)
    }

    // ----- inputs -----

    /// The MQTT connection is up (after every reconnect). Registration and unacknowledged updates go
    /// out at once.
    pub fn handle_connected(&mut self, now: u64) {
        self.connected = true;
        match &mut self.registration {
            Registration::Registering { next_attempt, .. } => *next_attempt = now,
            Registration::Registered => {
                self.make_updates_due(now);
                self.report_due_at = Some(now);
            }
        }
    }

    /// The MQTT connection is down: nothing is sent until [`handle_connected`](Self::handle_connected).
    pub fn handle_disconnected(&mut self, _now: u64) {
        self.connected = false;
    }

    /// A payload arrived on `topic`. Decodes it, checks it belongs there, and handles it.
    ///
    /// Returns the message handled, so the driver can keep a [`RunTask`]'s command line for the
    /// [`Action::Launch`] it may cause. Errors are counted in [`stats`](Self::stats) and change nothing
    /// else.
    pub fn handle_bytes(
        &mut self,
        now: u64,
        topic: &str,
        payload: &[u8],
    ) -> Result<MasterMsg, RecvError> {
        let expect_hello = match topic::parse(topic) {
            Some(Topic::MasterHello) => true,
            Some(Topic::Agent {
                id,
                kind: AgentTopic::Cmd,
            }) if id == self.info.agent_id.as_str() => false,
            _ => {
                self.stats.misrouted += 1;
                return Err(RecvError::UnknownTopic);
            }
        };
        let msg = match MasterMsg::decode(payload) {
            Ok(msg) => msg,
            Err(e) => {
                match e {
                    DecodeError::UnsupportedVersion { .. } => self.stats.unsupported_version += 1,
                    _ => self.stats.malformed += 1,
                }
                return Err(RecvError::Decode(e));
            }
        };
        if matches!(msg, MasterMsg::Hello { .. }) != expect_hello {
            self.stats.misrouted += 1;
            return Err(RecvError::WrongTopic);
        }
        self.handle_message(now, &msg)?;
        Ok(msg)
    }

    /// A decoded message from the master.
    pub fn handle_message(&mut self, now: u64, msg: &MasterMsg) -> Result<(), RecvError> {
        match msg {
            MasterMsg::Hello { master_epoch } => self.on_hello(now, *master_epoch),
            MasterMsg::RegisterAck(ack) => {
                if ack.agent_id != self.info.agent_id {
                    self.stats.misrouted += 1;
                    return Err(RecvError::NotForThisAgent);
                }
                self.on_register_ack(now, ack.master_epoch);
            }
            MasterMsg::RunTask(run) => self.on_run_task(now, run),
            MasterMsg::KillTask(kill) => self.on_kill_task(now, kill),
            MasterMsg::StatusAck(ack) => self.on_status_ack(ack),
            MasterMsg::Ping { seq } => self.pong = Some(*seq),
            MasterMsg::ReRegisterRequest => self.start_registering(now),
        }
        Ok(())
    }

    /// A task started, failed to start, or exited.
    pub fn handle_event(&mut self, now: u64, event: LocalEvent<'_>) -> Result<(), TaskError> {
        let (fw, task) = match event {
            LocalEvent::Started {
                framework_id,
                task_id,
            }
            | LocalEvent::LaunchFailed {
                framework_id,
                task_id,
                ..
            }
            | LocalEvent::Exited {
                framework_id,
                task_id,
                ..
            } => (framework_id, task_id),
        };
        let i = self.slot_index(fw, task).ok_or(TaskError::UnknownTask)?;
        let slot = &self.slots[i];
        let launch_pending = slot.want & WANT_LAUNCH != 0;
        match (event, slot.phase) {
            (_, Phase::Ended(..)) => Err(TaskError::InvalidTransition),
            (_, Phase::Launching) if launch_pending => Err(TaskError::InvalidTransition),
            (LocalEvent::Started { .. }, Phase::Launching) => {
                let slot = &mut self.slots[i];
                slot.phase = Phase::Running;
                if let Some(grace) = slot.kill_grace_ms {
                    // A kill arrived while the process was being started: start killing it now.
                    Self::begin_kill(slot, now, grace);
                }
                self.push_update(i, now, TaskState::Running, Reason::None);
                Ok(())
            }
            (LocalEvent::Started { .. }, _) => Err(TaskError::InvalidTransition),
            (LocalEvent::LaunchFailed { message, .. }, Phase::Launching) => {
                // The reason says it failed to start; the 64 bytes of the message are all for why
                // (e.g. `artifact run.sh: sha256 mismatch: expected 9f86d08, got e3b0c44`).
                self.end_task(i, now, TaskState::Failed, Reason::LaunchFailed, |m| {
                    push_truncated(m, message);
                });
                Ok(())
            }
            (LocalEvent::LaunchFailed { .. }, _) => Err(TaskError::InvalidTransition),
            (LocalEvent::Exited { exit, .. }, _) => {
                let mem = slot.resources.mem_mib;
                let (state, reason) = if slot.kill_grace_ms.is_some() {
                    (TaskState::Killed, Reason::KilledByRequest)
                } else {
                    match exit {
                        Exit::Code(0) => (TaskState::Finished, Reason::Exited { code: 0 }),
                        Exit::Code(code) => (TaskState::Failed, Reason::Exited { code }),
                        Exit::Signal(signal) => (TaskState::Failed, Reason::Signaled { signal }),
                        Exit::OomKilled => (TaskState::Failed, Reason::MemoryLimit),
                        Exit::Unknown => (TaskState::Lost, Reason::AgentRestarted),
                    }
                };
                self.end_task(i, now, state, reason, |m| {
                    let _ = match (reason, exit) {
                        (Reason::KilledByRequest, _) => write!(m, "killed on request"),
                        (Reason::Exited { code: 0 }, _) => Ok(()),
                        (Reason::Exited { code }, _) => write!(m, "exited with code {code}"),
                        (Reason::Signaled { signal }, _) => write!(m, "killed by signal {signal}"),
                        (Reason::MemoryLimit, _) => {
                            write!(m, "memory limit of {mem} MiB exceeded (OOM-killed)")
                        }
                        _ => write!(m, "ended while the agent was down"),
                    };
                });
                Ok(())
            }
        }
    }

    /// A fresh measurement of the board. Sends an early report when it moved beyond the thresholds.
    pub fn handle_resource_sample(&mut self, now: u64, sample: ResourceSample) {
        self.sample = Some(sample);
        self.check_report_change(now);
    }

    /// The timer armed from [`poll_timeout`](Self::poll_timeout) fired.
    pub fn handle_timeout(&mut self, now: u64) {
        for slot in self.slots.iter_mut() {
            if let Some(deadline) = slot.kill_deadline {
                if now >= deadline {
                    slot.kill_deadline = None;
                    slot.want |= WANT_KILL;
                }
            }
        }
    }

    // ----- outputs -----

    /// The next payload to publish, encoded into `buf`, or `None` when there is nothing to send now.
    pub fn poll_transmit(&mut self, now: u64, buf: &mut TransmitBuf) -> Option<Transmit> {
        if !self.connected {
            return None;
        }
        if let Some(seq) = self.pong.take() {
            return self.encode(&AgentMsg::Pong { seq }, buf);
        }
        match self.registration {
            Registration::Registering {
                next_attempt,
                delay_ms,
                ..
            } => {
                if now < next_attempt {
                    return None;
                }
                let next_delay = self.config.register_backoff.next(delay_ms);
                self.registration = Registration::Registering {
                    next_attempt: now + u64::from(self.jitter(delay_ms)),
                    delay_ms: next_delay,
                    last_sent: Some(now),
                };
                self.stats.registrations_sent += 1;
                let msg = self.registration_message();
                return self.encode(&msg, buf);
            }
            Registration::Registered => {}
        }
        if let Some(t) = self.poll_status(now, buf) {
            return Some(t);
        }
        self.poll_report(now, buf)
    }

    /// The next thing the driver must do, or `None`.
    pub fn poll_action(&mut self) -> Option<Action> {
        let (i, slot) = self
            .slots
            .iter_mut()
            .enumerate()
            .find(|(_, s)| s.want != 0)?;
        let TaskKey {
            framework_id,
            task_id,
        } = slot.key.clone();
        let action = if slot.want & WANT_LAUNCH != 0 {
            slot.want &= !WANT_LAUNCH;
            Action::Launch {
                framework_id,
                task_id,
                resources: slot.resources,
                pids_max: slot.pids_max,
            }
        } else if slot.want & (WANT_TERM | WANT_KILL) != 0 {
            let signal = if slot.want & WANT_KILL != 0 {
                Signal::Kill
            } else {
                Signal::Term
            };
            slot.want &= !(WANT_TERM | WANT_KILL);
            Action::Signal {
                framework_id,
                task_id,
                signal,
            }
        } else {
            // No checkpoint for this: until the next one drops it, a restart restores the ended
            // task and resends its (acknowledged) terminal update, which the master ignores.
            self.slots.swap_remove(i);
            Action::Release {
                framework_id,
                task_id,
            }
        };
        Some(action)
    }

    /// When the driver should call [`handle_timeout`](Self::handle_timeout) or poll again, or `None`
    /// when nothing is scheduled.
    pub fn poll_timeout(&self) -> Option<u64> {
        let kills = self.slots.iter().filter_map(|s| s.kill_deadline);
        let mut earliest = kills.min();
        let mut consider = |t: Option<u64>| {
            if let Some(t) = t {
                earliest = Some(earliest.map_or(t, |e| e.min(t)));
            }
        };
        if !self.connected {
            return earliest;
        }
        match self.registration {
            Registration::Registering { next_attempt, .. } => consider(Some(next_attempt)),
            Registration::Registered => {
                for slot in &self.slots {
                    consider(next_update(&slot.updates).map(|(_, t)| t));
                }
                for o in &self.orphans {
                    consider(Some(o.pending.next_send));
                }
                consider(self.report_due_at);
                consider(
                    self.last_report_at
                        .map(|t| t + u64::from(self.config.report_heartbeat_ms)),
                );
            }
        }
        earliest
    }

    // ----- handlers -----

    fn on_hello(&mut self, now: u64, epoch: u64) {
        match self.registration {
            Registration::Registered if epoch == self.master_epoch => {}
            // A new master: it knows nothing of us until we re-register.
            Registration::Registered => self.start_registering(now),
            // A master appeared while we wait to retry: retry now, unless a registration just went
            // out (the retained hello arrives right after every connect).
            Registration::Registering {
                ref mut next_attempt,
                last_sent,
                ..
            } => {
                let initial = u64::from(self.config.register_backoff.initial_ms);
                if last_sent.is_none_or(|t| now >= t + initial) {
                    *next_attempt = now;
                }
            }
        }
    }

    fn on_register_ack(&mut self, now: u64, epoch: u64) {
        if self.registration == Registration::Registered && epoch == self.master_epoch {
            return; // duplicate
        }
        self.registration = Registration::Registered;
        if epoch != self.master_epoch {
            self.master_epoch = epoch;
            self.generation = self.generation.wrapping_add(1);
        }
        self.make_updates_due(now);
        self.report_due_at = Some(now);
    }

    fn on_run_task(&mut self, now: u64, run: &RunTask) {
        if self.slot_index(&run.framework_id, &run.task_id).is_some() {
            self.stats.duplicate_launches += 1;
            return;
        }
        if validate_id(&run.framework_id).is_err() || validate_id(&run.task_id).is_err() {
            self.stats.refused_launches += 1;
            self.push_orphan(now, run, TaskState::Error, Reason::InvalidTask);
            return;
        }
        if self.slots.is_full() {
            self.stats.refused_launches += 1;
            self.push_orphan(now, run, TaskState::Error, Reason::AgentFull);
            return;
        }
        let free = self.info.total.saturating_sub(&self.allocated());
        let total = self.info.total;
        let asks = run.resources;
        let mut message = String::new();
        let refusal = if run.argv.is_empty() {
            let _ = message.push_str("argv is empty");
            Some(Reason::InvalidTask)
        } else if asks.cpu_millis == 0 || asks.mem_mib == 0 {
            let _ = message.push_str("a task must ask for some cpu and memory");
            Some(Reason::InvalidTask)
        } else if let Some(short) = shortfall(&asks, &total) {
            let _ = write!(
                message,
                "asks {short} but the agent has {} in all",
                short.have
            );
            Some(Reason::ExceedsResources)
        } else if let Some(short) = shortfall(&asks, &free) {
            let _ = write!(message, "asks {short} but only {} is free", short.have);
            Some(Reason::ExceedsResources)
        } else {
            None
        };
        let slot = Slot {
            key: TaskKey {
                framework_id: run.framework_id.clone(),
                task_id: run.task_id.clone(),
            },
            resources: asks,
            pids_max: run.pids_max,
            phase: Phase::Launching,
            kill_grace_ms: None,
            kill_deadline: None,
            want: WANT_LAUNCH,
            updates: Deque::new(),
            message,
        };
        // Cannot fail: is_full was checked above.
        let _ = self.slots.push(slot);
        self.generation = self.generation.wrapping_add(1);
        let i = self.slots.len() - 1;
        match refusal {
            Some(reason) => {
                self.stats.refused_launches += 1;
                let slot = &mut self.slots[i];
                slot.want = 0;
                slot.phase = Phase::Ended(TaskState::Error, reason);
                self.push_update(i, now, TaskState::Error, reason);
            }
            None => self.push_update(i, now, TaskState::Starting, Reason::None),
        }
    }

    fn on_kill_task(&mut self, now: u64, kill: &KillTask) {
        let Some(i) = self.slot_index(&kill.framework_id, &kill.task_id) else {
            // Tell the master the task is not here, so it can reconcile.
            let run_like = (&kill.framework_id, &kill.task_id);
            self.push_orphan_ids(now, run_like, TaskState::Lost, Reason::UnknownTask);
            return;
        };
        let slot = &mut self.slots[i];
        if slot.kill_grace_ms.is_some() || matches!(slot.phase, Phase::Ended(..)) {
            return; // already being killed, or already over
        }
        slot.kill_grace_ms = Some(kill.grace_ms);
        match slot.phase {
            Phase::Launching if slot.want & WANT_LAUNCH != 0 => {
                // Not handed to the driver yet: it never starts.
                slot.want &= !WANT_LAUNCH;
                self.end_task(i, now, TaskState::Killed, Reason::KilledByRequest, |m| {
                    let _ = m.push_str("killed before it started");
                });
            }
            // Being started by the driver: killed as soon as it reports Started.
            Phase::Launching => {}
            Phase::Running => Self::begin_kill(slot, now, kill.grace_ms),
            Phase::Ended(..) => {}
        }
    }

    fn on_status_ack(&mut self, ack: &StatusAck) {
        if let Some(i) = self.slot_index(&ack.framework_id, &ack.task_id) {
            let slot = &mut self.slots[i];
            // Cumulative: the master has this update, so the earlier ones are superseded.
            if let Some(k) = slot
                .updates
                .iter()
                .position(|p| p.update_id == ack.update_id)
            {
                for _ in 0..=k {
                    slot.updates.pop_front();
                }
                // Pending updates are not checkpointed (a restart resends from the task's state),
                // so an acknowledgement changes nothing a checkpoint holds.
                if slot.updates.is_empty() && matches!(slot.phase, Phase::Ended(..)) {
                    slot.want |= WANT_RELEASE;
                }
                return;
            }
        } else if let Some(pos) = self.orphans.iter().position(|o| {
            o.pending.update_id == ack.update_id && o.key.is(&ack.framework_id, &ack.task_id)
        }) {
            self.orphans.remove(pos);
            return;
        }
        self.stats.stale_acks += 1;
    }

    // ----- helpers -----

    fn begin_kill(slot: &mut Slot, now: u64, grace_ms: u32) {
        if grace_ms == 0 {
            slot.want |= WANT_KILL;
        } else {
            slot.want |= WANT_TERM;
            slot.kill_deadline = Some(now + u64::from(grace_ms));
        }
    }

    fn start_registering(&mut self, now: u64) {
        self.registration = Registration::Registering {
            next_attempt: now,
            delay_ms: self.config.register_backoff.initial_ms,
            last_sent: None,
        };
    }

    fn registration_message(&self) -> AgentMsg {
        if self.slots.is_empty() && self.master_epoch == 0 {
            return AgentMsg::Register(self.info.clone());
        }
        let mut tasks = Vec::new();
        for s in &self.slots {
            // Cannot overflow: both hold MAX_TASKS.
            let _ = tasks.push(TaskReport {
                framework_id: s.key.framework_id.clone(),
                task_id: s.key.task_id.clone(),
                resources: s.resources,
                state: s.state(),
            });
        }
        AgentMsg::ReRegister(ReRegister {
            info: self.info.clone(),
            last_master_epoch: self.master_epoch,
            tasks,
        })
    }

    fn slot_index(&self, framework_id: &str, task_id: &str) -> Option<usize> {
        self.slots.iter().position(|s| s.is(framework_id, task_id))
    }

    fn take_update_id(&mut self) -> u32 {
        if self.update_ids_left == 0 {
            // A new block: checkpoint its end before any of its ids goes out.
            self.update_ids_left = UPDATE_ID_BLOCK;
            self.generation = self.generation.wrapping_add(1);
        }
        self.update_ids_left -= 1;
        let id = self.next_update_id;
        self.next_update_id = self.next_update_id.checked_add(1).unwrap_or(1);
        id
    }

    fn new_pending(&mut self, now: u64, state: TaskState, reason: Reason) -> Pending {
        Pending {
            update_id: self.take_update_id(),
            state,
            reason,
            next_send: now,
            delay_ms: self.config.status_backoff.initial_ms,
            attempts: 0,
        }
    }

    fn push_update(&mut self, i: usize, now: u64, state: TaskState, reason: Reason) {
        let pending = self.new_pending(now, state, reason);
        let updates = &mut self.slots[i].updates;
        // A task has at most STARTING, RUNNING and one terminal update, fewer than the capacity.
        debug_assert!(!updates.is_full());
        if updates.push_back(pending).is_err() {
            self.stats.orphans_dropped += 1;
        }
        self.check_report_change(now);
    }

    fn end_task(
        &mut self,
        i: usize,
        now: u64,
        state: TaskState,
        reason: Reason,
        message: impl FnOnce(&mut String<MAX_MESSAGE_LEN, u8>),
    ) {
        let slot = &mut self.slots[i];
        slot.phase = Phase::Ended(state, reason);
        self.generation = self.generation.wrapping_add(1);
        slot.kill_deadline = None;
        slot.want &= !(WANT_TERM | WANT_KILL);
        slot.message.clear();
        message(&mut slot.message);
        self.push_update(i, now, state, reason);
    }

    fn push_orphan(&mut self, now: u64, run: &RunTask, state: TaskState, reason: Reason) {
        self.push_orphan_ids(now, (&run.framework_id, &run.task_id), state, reason);
    }

    fn push_orphan_ids(
        &mut self,
        now: u64,
        (framework_id, task_id): (&FrameworkId, &TaskId),
        state: TaskState,
        reason: Reason,
    ) {
        let already = self.orphans.iter().any(|o| {
            o.key.is(framework_id, task_id)
                && o.pending.state == state
                && o.pending.reason == reason
        });
        if already {
            return; // the pending one says the same and is resent until acknowledged
        }
        if self.orphans.is_full() {
            self.stats.orphans_dropped += 1;
            return;
        }
        let pending = self.new_pending(now, state, reason);
        let _ = self.orphans.push(Orphan {
            key: TaskKey {
                framework_id: framework_id.clone(),
                task_id: task_id.clone(),
            },
            pending,
        });
    }

    fn make_updates_due(&mut self, now: u64) {
        let initial = self.config.status_backoff.initial_ms;
        let pending = self
            .slots
            .iter_mut()
            .flat_map(|s| s.updates.iter_mut())
            .chain(self.orphans.iter_mut().map(|o| &mut o.pending));
        for p in pending {
            p.next_send = now;
            p.delay_ms = initial;
        }
    }

    fn poll_status(&mut self, now: u64, buf: &mut TransmitBuf) -> Option<Transmit> {
        // The most overdue sendable update among tasks, then orphans.
        let slot = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| next_update(&s.updates).map(|(k, t)| (i, k, t)))
            .filter(|&(_, _, t)| t <= now)
            .min_by_key(|&(_, _, t)| t)
            .map(|(i, k, _)| (i, k));
        let (fw, task, pending, message) = if let Some((i, k)) = slot {
            let s = &mut self.slots[i];
            let terminal_msg = s.message.clone();
            let p = s.updates.iter_mut().nth(k)?;
            let msg = if p.state.is_terminal() {
                terminal_msg
            } else {
                String::new()
            };
            (s.key.framework_id.clone(), s.key.task_id.clone(), p, msg)
        } else {
            let o = self
                .orphans
                .iter_mut()
                .filter(|o| o.pending.next_send <= now)
                .min_by_key(|o| o.pending.next_send)?;
            let mut msg = String::new();
            let _ = msg.push_str(match o.pending.reason {
                Reason::AgentFull => "agent task table is full",
                Reason::InvalidTask => "framework or task id is not a valid id",
                _ => "no such task on this agent",
            });
            (
                o.key.framework_id.clone(),
                o.key.task_id.clone(),
                &mut o.pending,
                msg,
            )
        };
        let update = StatusUpdate {
            framework_id: fw,
            task_id: task,
            update_id: pending.update_id,
            state: pending.state,
            reason: pending.reason,
            message,
        };
        let delay = pending.delay_ms;
        pending.delay_ms = self.config.status_backoff.next(delay);
        pending.next_send = now + u64::from(jitter(&mut self.rng, delay));
        if pending.attempts > 0 {
            self.stats.status_retries += 1;
        }
        pending.attempts = pending.attempts.saturating_add(1);
        self.stats.status_sent += 1;
        self.encode(&AgentMsg::Status(update), buf)
    }

    fn current_report(&self) -> ResourceReport {
        let sample = self.sample.unwrap_or(ResourceSample {
            free: self.info.total.saturating_sub(&self.allocated()),
            soc_temp_decidegrees: None,
            throttled: 0,
        });
        let running = self.slots.iter().filter(|s| s.holds_resources()).count();
        ResourceReport {
            free: sample.free,
            running_tasks: u8::try_from(running).unwrap_or(u8::MAX),
            soc_temp_decidegrees: sample.soc_temp_decidegrees,
            throttled: sample.throttled,
        }
    }

    fn check_report_change(&mut self, now: u64) {
        let Some(last) = self.last_report else {
            return; // the first report goes out on registration anyway
        };
        if !self
            .config
            .report_thresholds
            .significant(&last, &self.current_report())
        {
            return;
        }
        let earliest = self
            .last_report_at
            .map_or(now, |t| t + u64::from(self.config.report_min_interval_ms))
            .max(now);
        if self.report_due_at.is_none_or(|t| t > earliest) {
            self.report_due_at = Some(earliest);
        }
    }

    fn poll_report(&mut self, now: u64, buf: &mut TransmitBuf) -> Option<Transmit> {
        let heartbeat = self
            .last_report_at
            .map(|t| t + u64::from(self.config.report_heartbeat_ms));
        let due =
            self.report_due_at.is_some_and(|t| t <= now) || heartbeat.is_some_and(|t| t <= now);
        if !due {
            return None;
        }
        let report = self.current_report();
        self.last_report = Some(report);
        self.last_report_at = Some(now);
        self.report_due_at = None;
        self.stats.reports_sent += 1;
        self.encode(&AgentMsg::Report(report), buf)
    }

    fn jitter(&mut self, delay_ms: u32) -> u32 {
        jitter(&mut self.rng, delay_ms)
    }

    fn encode(&self, msg: &AgentMsg, buf: &mut TransmitBuf) -> Option<Transmit> {
        let kind = msg.kind();
        // Cannot fail: the buffer holds the largest AgentMsg (pinned by the max-size tests).
        let len = msg.encode(buf).ok()?;
        Some(Transmit {
            topic: topic::agent(&self.info.agent_id, kind),
            qos: kind.qos(),
            retain: false,
            len,
        })
    }
}

/// The update of one task to send next and when: the earliest due among those already sent once
/// (retries) and the first never sent (first transmissions go in order). Ties go to the older.
fn next_update(updates: &Deque<Pending, UPDATES_PER_TASK>) -> Option<(usize, u64)> {
    let mut best: Option<(usize, u64)> = None;
    for (k, p) in updates.iter().enumerate() {
        if best.is_none_or(|(_, t)| p.next_send < t) {
            best = Some((k, p.next_send));
        }
        if p.attempts == 0 {
            break;
        }
    }
    best
}

impl Backoff {
    fn next(&self, delay_ms: u32) -> u32 {
        delay_ms.saturating_mul(2).min(self.max_ms)
    }
}

impl Thresholds {
    fn significant(&self, last: &ResourceReport, now: &ResourceReport) -> bool {
        let moved = |a: u32, b: u32, th: u32| a.abs_diff(b) >= th.max(1);
        let temp_moved = match (last.soc_temp_decidegrees, now.soc_temp_decidegrees) {
            (Some(a), Some(b)) => a.abs_diff(b) >= self.temp_decidegrees.max(1),
            (a, b) => a.is_some() != b.is_some(),
        };
        last.running_tasks != now.running_tasks
            || last.throttled != now.throttled
            || temp_moved
            || moved(last.free.cpu_millis, now.free.cpu_millis, self.cpu_millis)
            || moved(last.free.mem_mib, now.free.mem_mib, self.mem_mib)
            || moved(last.free.disk_mib, now.free.disk_mib, self.disk_mib)
    }
}

/// `delay` plus up to a quarter of it at random (xorshift32), so agents spread their retries.
fn jitter(rng: &mut u32, delay_ms: u32) -> u32 {
    let mut x = *rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *rng = x;
    delay_ms.saturating_add(x % (delay_ms / 4 + 1))
}

/// The first resource of `asks` that `have` cannot cover, for a refusal message.
struct Shortfall {
    name: &'static str,
    unit: &'static str,
    asks: u32,
    have: Amount,
}

/// An amount with its unit, e.g. `1000m` or `2800 MiB`.
struct Amount(u32, &'static str);

impl core::fmt::Display for Amount {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}{}", self.0, self.1)
    }
}

impl core::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}{} {}", self.asks, self.unit, self.name)
    }
}

fn shortfall(asks: &Resources, have: &Resources) -> Option<Shortfall> {
    [
        ("cpu", "m", asks.cpu_millis, have.cpu_millis),
        ("memory", " MiB", asks.mem_mib, have.mem_mib),
        ("disk", " MiB", asks.disk_mib, have.disk_mib),
    ]
    .into_iter()
    .find(|&(_, _, a, h)| a > h)
    .map(|(name, unit, asks, have)| Shortfall {
        name,
        unit,
        asks,
        have: Amount(have, unit),
    })
}

fn push_truncated<const N: usize>(s: &mut String<N, u8>, text: &str) {
    for c in text.chars() {
        if s.push(c).is_err() {
            break;
        }
    }
}
