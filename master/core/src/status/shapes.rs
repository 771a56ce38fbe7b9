//! The JSON of the status topics, as types the publisher writes and readers parse.
//!
//! Each topic's payload is one of these: [`ClusterStatus`] on `bramble/v1/status/cluster`,
//! [`AgentStatus`], [`FrameworkStatus`], [`TaskStatus`] and [`OfferStatus`] on the topics of
//! [`super::topics`]. They derive both `Serialize` and `Deserialize`, so the CLI and the web page
//! read what the publisher writes through the same fields; a payload parsed and serialized again
//! gives the same bytes. Field order is the JSON's (the tests pin it against `PROTOCOL.md`).

use agent_nostd_core::wire::{Reason, TaskState};
use bramble_proto::OfferId;
use serde::{Deserialize, Serialize};

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

/// The task state named `name` in the status JSON (the inverse of [`state_name`]).
pub fn parse_state(name: &str) -> Option<TaskState> {
    TaskCounts::STATES
        .into_iter()
        .find(|s| state_name(*s) == name)
}

/// (De)serializes a [`TaskState`] by its [`state_name`].
mod task_state {
    use agent_nostd_core::wire::TaskState;
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(s: &TaskState, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(super::state_name(*s))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<TaskState, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(de)?;
        super::parse_state(&name)
            .ok_or_else(|| de::Error::unknown_variant(&name, &super::TaskCounts::NAMES))
    }
}

/// Task counts by state, every state present (zeros included), in the JSON's (alphabetical) order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCounts {
    /// Refused: invalid, or did not fit.
    pub error: u64,
    /// Exited non-zero, killed by a signal it did not ask for, or could not start.
    pub failed: u64,
    /// Exited with code 0.
    pub finished: u64,
    /// Killed on request.
    pub killed: u64,
    /// Gone, its end unknown.
    pub lost: u64,
    /// Running.
    pub running: u64,
    /// Sent to the agent.
    pub staging: u64,
    /// Accepted by the agent, starting.
    pub starting: u64,
    /// On an agent that cannot be reached.
    pub unreachable: u64,
}

impl TaskCounts {
    /// Every state, in the JSON's order.
    pub const STATES: [TaskState; 9] = [
        TaskState::Error,
        TaskState::Failed,
        TaskState::Finished,
        TaskState::Killed,
        TaskState::Lost,
        TaskState::Running,
        TaskState::Staging,
        TaskState::Starting,
        TaskState::Unreachable,
    ];
    /// Their names, in the same order.
    pub const NAMES: [&'static str; 9] = [
        "error",
        "failed",
        "finished",
        "killed",
        "lost",
        "running",
        "staging",
        "starting",
        "unreachable",
    ];

    /// The count of `state`.
    pub fn get(&self, state: TaskState) -> u64 {
        match state {
            TaskState::Error => self.error,
            TaskState::Failed => self.failed,
            TaskState::Finished => self.finished,
            TaskState::Killed => self.killed,
            TaskState::Lost => self.lost,
            TaskState::Running => self.running,
            TaskState::Staging => self.staging,
            TaskState::Starting => self.starting,
            TaskState::Unreachable => self.unreachable,
        }
    }

    /// The count of `state`, to change.
    pub fn get_mut(&mut self, state: TaskState) -> &mut u64 {
        match state {
            TaskState::Error => &mut self.error,
            TaskState::Failed => &mut self.failed,
            TaskState::Finished => &mut self.finished,
            TaskState::Killed => &mut self.killed,
            TaskState::Lost => &mut self.lost,
            TaskState::Running => &mut self.running,
            TaskState::Staging => &mut self.staging,
            TaskState::Starting => &mut self.starting,
            TaskState::Unreachable => &mut self.unreachable,
        }
    }

    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &TaskCounts) {
        for s in Self::STATES {
            *self.get_mut(s) += other.get(s);
        }
    }

    /// (state name, count) for every state, in the JSON's order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Self::STATES
            .into_iter()
            .map(|s| (state_name(s), self.get(s)))
    }
}

/// Whether an agent is reachable: `online` or `offline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// The agent answers.
    Online,
    /// The agent missed its health checks; its tasks are unreachable.
    Offline,
}

impl Liveness {
    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Online => "online",
            Liveness::Offline => "offline",
        }
    }
}

/// A framework's connection: `connected`, `disconnected` or `recovered` (known from its agents'
/// tasks after a master restart, its scheduler not back yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Connection {
    /// Its scheduler is connected.
    Connected,
    /// Its scheduler went away; it is removed at the failover deadline unless it comes back.
    Disconnected,
    /// Re-learnt after a master restart; removed at the deadline unless it registers again.
    Recovered,
}

impl Connection {
    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Connection::Connected => "connected",
            Connection::Disconnected => "disconnected",
            Connection::Recovered => "recovered",
        }
    }
}

/// Why a task is in its state (the kind of the agent's [`Reason`]; its code or signal are separate
/// fields of [`TaskStatus`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonKind {
    /// No particular reason.
    None,
    /// The process exited (`exit_code`).
    Exited,
    /// The process was killed by a signal (`signal`).
    Signaled,
    /// It used more memory than its limit and was OOM-killed.
    MemoryLimit,
    /// A kill was asked for.
    KilledByRequest,
    /// It could not be started.
    LaunchFailed,
    /// It asks for more than the agent has, or has free.
    ExceedsResources,
    /// It was not a valid task.
    InvalidTask,
    /// The agent's task table is full.
    AgentFull,
    /// The agent does not know it.
    UnknownTask,
    /// It ended while the agent was down, and its end could not be learnt.
    AgentRestarted,
}

impl ReasonKind {
    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonKind::None => "none",
            ReasonKind::Exited => "exited",
            ReasonKind::Signaled => "signaled",
            ReasonKind::MemoryLimit => "memory_limit",
            ReasonKind::KilledByRequest => "killed_by_request",
            ReasonKind::LaunchFailed => "launch_failed",
            ReasonKind::ExceedsResources => "exceeds_resources",
            ReasonKind::InvalidTask => "invalid_task",
            ReasonKind::AgentFull => "agent_full",
            ReasonKind::UnknownTask => "unknown_task",
            ReasonKind::AgentRestarted => "agent_restarted",
        }
    }
}

impl From<Reason> for ReasonKind {
    fn from(r: Reason) -> Self {
        match r {
            Reason::None => ReasonKind::None,
            Reason::Exited { .. } => ReasonKind::Exited,
            Reason::Signaled { .. } => ReasonKind::Signaled,
            Reason::MemoryLimit => ReasonKind::MemoryLimit,
            Reason::KilledByRequest => ReasonKind::KilledByRequest,
            Reason::LaunchFailed => ReasonKind::LaunchFailed,
            Reason::ExceedsResources => ReasonKind::ExceedsResources,
            Reason::InvalidTask => ReasonKind::InvalidTask,
            Reason::AgentFull => ReasonKind::AgentFull,
            Reason::UnknownTask => ReasonKind::UnknownTask,
            Reason::AgentRestarted => ReasonKind::AgentRestarted,
        }
    }
}

/// `bramble/v1/status/agent/{agent_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Its id.
    pub agent_id: String,
    /// Its hostname, as it registered.
    pub hostname: String,
    /// Its CPU architecture, e.g. `aarch64`.
    pub arch: String,
    /// Whether it is reachable.
    pub state: Liveness,
    /// Its CPU, in thousandths of a core.
    pub cpu_millis_total: u64,
    /// What its tasks hold.
    pub cpu_millis_used: u64,
    /// Total less used.
    pub cpu_millis_free: u64,
    /// What is on offer now.
    pub cpu_millis_offered: u64,
    /// Its memory, in MiB.
    pub mem_mib_total: u64,
    /// What its tasks hold.
    pub mem_mib_used: u64,
    /// Total less used.
    pub mem_mib_free: u64,
    /// What is on offer now.
    pub mem_mib_offered: u64,
    /// Its disk, in MiB.
    pub disk_mib_total: u64,
    /// What its tasks hold.
    pub disk_mib_used: u64,
    /// Total less used.
    pub disk_mib_free: u64,
    /// What is on offer now.
    pub disk_mib_offered: u64,
    /// The agent's attributes, by key.
    pub attributes: std::collections::BTreeMap<String, String>,
    /// From the last resource report, if it had one.
    pub soc_temp_c: Option<f64>,
    /// The firmware's throttling bits from the last report, if one came.
    pub throttled: Option<u8>,
    /// How many of its tasks have not ended.
    pub running_tasks: usize,
    /// `{framework_id}/{task_id}` of its tasks not yet ended.
    pub task_ids: Vec<String>,
}

/// `bramble/v1/status/framework/{framework_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameworkStatus {
    /// Its id.
    pub framework_id: String,
    /// The name it registered with.
    pub name: String,
    /// Its role.
    pub role: String,
    /// Its DRF weight.
    pub weight: f64,
    /// Its priority (under the strict-priority policy, higher comes first).
    pub priority: u32,
    /// Its connection.
    pub state: Connection,
    /// Whether `state` is `connected`.
    pub connected: bool,
    /// Epoch ms at which a disconnected or recovered framework is removed.
    pub failover_deadline: Option<u64>,
    /// DRF's dominant share, allocated plus offered, unweighted.
    pub dominant_share: f64,
    /// Whether it suppressed offers (until it revives).
    pub suppressed: bool,
    /// Its outstanding offers.
    pub offers: usize,
    /// CPU its tasks hold, in thousandths of a core.
    pub cpu_millis_allocated: u64,
    /// Memory its tasks hold, in MiB.
    pub mem_mib_allocated: u64,
    /// Disk its tasks hold, in MiB.
    pub disk_mib_allocated: u64,
    /// CPU on offer to it.
    pub cpu_millis_offered: u64,
    /// Memory on offer to it.
    pub mem_mib_offered: u64,
    /// Disk on offer to it.
    pub disk_mib_offered: u64,
    /// Its live tasks and those that ended since the master started.
    pub tasks: TaskCounts,
}

/// `bramble/v1/status/task/{framework_id}/{task_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// Its framework.
    pub framework_id: String,
    /// Its id within the framework.
    pub task_id: String,
    /// The agent it runs on.
    pub agent_id: String,
    /// Its state, by [`state_name`].
    #[serde(with = "task_state")]
    pub state: TaskState,
    /// CPU it holds, in thousandths of a core.
    pub cpu_millis: u32,
    /// Memory it holds, in MiB.
    pub mem_mib: u32,
    /// Disk it holds, in MiB.
    pub disk_mib: u32,
    /// Why it is in its state.
    pub reason: ReasonKind,
    /// The exit code, when the reason is `exited`.
    pub exit_code: Option<i32>,
    /// The signal, when the reason is `signaled`.
    pub signal: Option<i32>,
    /// The latest status message.
    pub message: String,
    /// Epoch ms of the last change.
    pub updated: u64,
}

impl TaskStatus {
    /// Whether the task ended (finished, failed, killed, lost or error).
    pub fn ended(&self) -> bool {
        self.state.is_terminal()
    }
}

/// `bramble/v1/status/offer/{offer_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfferStatus {
    /// Its id.
    pub offer_id: OfferId,
    /// The framework it is made to.
    pub framework_id: String,
    /// The agent whose resources it offers.
    pub agent_id: String,
    /// CPU offered, in thousandths of a core.
    pub cpu_millis: u32,
    /// Memory offered, in MiB.
    pub mem_mib: u32,
    /// Disk offered, in MiB.
    pub disk_mib: u32,
    /// Epoch ms at which the publisher first saw it.
    pub since: u64,
}

/// `bramble/v1/status/master`: the master's availability. The master publishes `online` when it
/// starts and sets `offline` as its MQTT last will, so dashboards see a dead master at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterStatus {
    /// `online` or `offline`.
    pub state: Liveness,
    /// The epoch of the master this is about.
    pub master_epoch: u64,
    /// The name of the leading master (`bramble master --name`), when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The other masters ready to take over, as the leader last heard them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub followers: Vec<FollowerStatus>,
}

/// A master ready to take over from the leader (in [`MasterStatus::followers`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowerStatus {
    /// Its name (`bramble master --name`).
    pub name: String,
    /// Started with `--standby`: it claims only after the others.
    pub standby: bool,
}

/// `bramble/v1/status/cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The master's epoch (new at each start; ids and offers are unique within one).
    pub master_epoch: u64,
    /// Agents reachable.
    pub agents_online: usize,
    /// Agents not reachable.
    pub agents_offline: usize,
    /// Frameworks registered.
    pub frameworks: usize,
    /// Frameworks whose scheduler is connected.
    pub frameworks_connected: usize,
    /// Live tasks, and those that ended since the master started.
    pub tasks: TaskCounts,
    /// CPU of the online agents, in thousandths of a core.
    pub cpu_millis_total: u64,
    /// What their tasks hold.
    pub cpu_millis_used: u64,
    /// Total less used.
    pub cpu_millis_free: u64,
    /// Memory of the online agents, in MiB.
    pub mem_mib_total: u64,
    /// What their tasks hold.
    pub mem_mib_used: u64,
    /// Total less used.
    pub mem_mib_free: u64,
    /// Disk of the online agents, in MiB.
    pub disk_mib_total: u64,
    /// What their tasks hold.
    pub disk_mib_used: u64,
    /// Total less used.
    pub disk_mib_free: u64,
    /// Offers made and not yet answered or rescinded.
    pub offers_outstanding: usize,
}
