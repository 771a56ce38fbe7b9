//! The agent↔master messages and their codec.
//!
//! Every payload is one version byte ([`PROTOCOL_VERSION`]) followed by the postcard encoding of an
//! [`AgentMsg`] (agent → master) or a [`MasterEnvelope`] (master → agent: the master's epoch and a
//! [`MasterMsg`]). postcard is positional and has no
//! field-level compatibility, so the rules are: a new message or reason is a variant appended at the end
//! of its enum; any other change bumps [`PROTOCOL_VERSION`]. A payload with another version byte is
//! refused with [`DecodeError::UnsupportedVersion`] before a single field is read, so an old agent never
//! misreads a new master, nor the other way round.
//!
//! Every string and list has a fixed capacity, so every message has a maximum encoded size
//! ([`AgentMsg::MAX_ENCODED_LEN`], [`MasterEnvelope::MAX_ENCODED_LEN`]) that the tests pin.

use heapless::{String, Vec};
use serde::{Deserialize, Serialize};

use crate::ids::{AgentId, FrameworkId, TaskId, TaskKey};
use crate::resources::Resources;

/// The wire version carried in the first byte of every agent↔master payload.
///
/// Version 2 put every master → agent message in a [`MasterEnvelope`] carrying the master's epoch
/// (the fencing token), took the epoch out of `Hello` and `RegisterAck`, and made the agent's last
/// will name its connection (`AgentInfo::connection`, `Gone { connection }`).
///
/// Version 3 made every payload but the hello an authenticated frame ([`crate::frame`]): a
/// registration names the agent's boot, the frame's full number and the master it is addressed to
/// (`AgentInfo::{boot, seq, to_epoch}`), a re-registration the newest downlink number taken
/// (`ReRegister::down_seq`), and a report's temperature lost its `Option` (see [`NO_TEMPERATURE`]) so
/// that a report frame stays within 32 bytes.
pub const PROTOCOL_VERSION: u8 = 3;

/// How many attributes an agent may advertise.
pub const MAX_ATTRIBUTES: usize = 8;
/// How many tasks one agent runs at most (and so lists in a re-registration).
pub const MAX_TASKS: usize = 32;
/// How many argv elements a task may have.
pub const MAX_ARGS: usize = 16;
/// The longest argv element, in bytes.
pub const MAX_ARG_LEN: usize = 128;
/// How many environment variables a task may set.
pub const MAX_ENV: usize = 16;
/// How many artifacts a task may fetch.
pub const MAX_ARTIFACTS: usize = 4;
/// The longest artifact URL, in bytes.
pub const MAX_ARTIFACT_URL_LEN: usize = 160;
/// The longest artifact file name (in the task's sandbox), in bytes.
pub const MAX_ARTIFACT_NAME_LEN: usize = 64;
/// The longest human-readable status message, in bytes.
pub const MAX_MESSAGE_LEN: usize = 64;

/// A `key=value` attribute an agent advertises, such as `sensor=bme280`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribute {
    /// At most 16 bytes.
    pub key: String<16, u8>,
    /// At most 32 bytes.
    pub value: String<32, u8>,
}

/// What an agent tells the master about itself when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// The agent's own id; it also names the agent's topics.
    pub agent_id: AgentId,
    /// The board's hostname.
    pub hostname: String<64, u8>,
    /// The CPU architecture, as Rust names it: `aarch64`, `arm`, `x86_64`, …
    pub arch: String<16, u8>,
    /// The board model, e.g. `Raspberry Pi 4 Model B Rev 1.4`, or empty when unknown.
    pub board: String<64, u8>,
    /// What the agent offers to tasks (the board's total less what is reserved for the OS).
    pub total: Resources,
    /// Attributes for placement, such as `sensor=bme280`.
    pub attributes: Vec<Attribute, MAX_ATTRIBUTES, u8>,
    /// The agent's current MQTT connection, as its last will names it ([`AgentMsg::Gone`]): the
    /// master ignores a will of another connection (a stale one, delivered late).
    pub connection: u32,
    /// The agent's boot number (it grows with every start; see [`crate::frame::Binding`]): the
    /// master checks this frame's tag, and every later one until the next registration, with it.
    pub boot: u32,
    /// The full sequence number of the frame carrying this registration (an uplink frame carries
    /// only its low 16 bits), so that a master that has not heard this boot yet can check the tag.
    pub seq: u32,
    /// The epoch of the master this registration is for: a master of another epoch answers with an
    /// authenticated [`MasterMsg::ReRegisterRequest`] instead of acting on it, so a registration
    /// recorded and replayed to a later master is never taken.
    pub to_epoch: u64,
}

/// The lifecycle state of a task, as Mesos names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TaskState {
    /// The master has sent the task to the agent.
    Staging,
    /// The agent has accepted the task and is starting it.
    Starting,
    /// The task's process is running.
    Running,
    /// The task exited with code 0.
    Finished,
    /// The task exited with a non-zero code, was killed by a signal it did not ask for, or could not start.
    Failed,
    /// The task was killed on request.
    Killed,
    /// The task is gone and its end is unknown.
    Lost,
    /// The task was refused: it was invalid or did not fit.
    Error,
    /// The task's agent cannot be reached; it may come back.
    Unreachable,
}

impl TaskState {
    /// True for the states a task never leaves.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Finished
                | TaskState::Failed
                | TaskState::Killed
                | TaskState::Lost
                | TaskState::Error
        )
    }

    /// The Mesos-style name, e.g. `TASK_RUNNING`.
    pub const fn as_str(self) -> &'static str {
        match self {
            TaskState::Staging => "TASK_STAGING",
            TaskState::Starting => "TASK_STARTING",
            TaskState::Running => "TASK_RUNNING",
            TaskState::Finished => "TASK_FINISHED",
            TaskState::Failed => "TASK_FAILED",
            TaskState::Killed => "TASK_KILLED",
            TaskState::Lost => "TASK_LOST",
            TaskState::Error => "TASK_ERROR",
            TaskState::Unreachable => "TASK_UNREACHABLE",
        }
    }
}

/// Why a task is in its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    /// No particular reason (e.g. STARTING, RUNNING).
    None,
    /// The process exited with this code.
    Exited {
        /// The exit code.
        code: i32,
    },
    /// The process was ended by this signal.
    Signaled {
        /// The signal number.
        signal: i32,
    },
    /// The task used more memory than its limit and was OOM-killed.
    MemoryLimit,
    /// The task was killed because a kill was asked for.
    KilledByRequest,
    /// The process could not be started (bad path, permission, …).
    LaunchFailed,
    /// The task asks for more than the agent has, or has free.
    ExceedsResources,
    /// The task is malformed (bad id, empty argv, zero resources).
    InvalidTask,
    /// The agent's task table is full.
    AgentFull,
    /// The agent does not know the task.
    UnknownTask,
    /// The task ended while the agent was down and its end could not be learnt.
    AgentRestarted,
}

/// One running (or not yet acknowledged) task, as listed in a re-registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReport {
    /// The task's framework.
    pub framework_id: FrameworkId,
    /// The task.
    pub task_id: TaskId,
    /// The task's resource limits.
    pub resources: Resources,
    /// The task's latest state on the agent.
    pub state: TaskState,
}

/// A registration from an agent that already runs tasks or knew a master before: the master rebuilds
/// its soft state from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReRegister {
    /// The agent, as in a registration.
    pub info: AgentInfo,
    /// The epoch of the master the agent was last registered with, or 0.
    pub last_master_epoch: u64,
    /// The highest downlink frame number the agent has taken from that master (its replay window's
    /// top): a master of that epoch that restarted and lost count numbers its frames above it.
    pub down_seq: u32,
    /// Every task the agent holds.
    pub tasks: Vec<TaskReport, MAX_TASKS, u8>,
}

/// The [`ResourceReport::soc_temp_decidegrees`] of a board that does not expose its temperature.
pub const NO_TEMPERATURE: i16 = i16::MIN;

/// The agent's periodic resource report. At most 22 bytes on the wire, 32 as a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceReport {
    /// What is free now, as the OS sees it (less the OS reserve). Used is total − free.
    pub free: Resources,
    /// How many tasks are running.
    pub running_tasks: u8,
    /// SoC temperature in tenths of a degree Celsius, or [`NO_TEMPERATURE`] when the board does
    /// not expose it (see [`ResourceReport::temperature`]).
    pub soc_temp_decidegrees: i16,
    /// Throttling flags as the firmware reports them (`vcgencmd get_throttled` low bits), 0 if none.
    pub throttled: u8,
}

impl ResourceReport {
    /// The SoC temperature in tenths of a degree Celsius, when the board exposes it.
    pub fn temperature(&self) -> Option<i16> {
        (self.soc_temp_decidegrees != NO_TEMPERATURE).then_some(self.soc_temp_decidegrees)
    }

    /// The wire form of an optional temperature.
    pub fn temperature_field(temp: Option<i16>) -> i16 {
        temp.unwrap_or(NO_TEMPERATURE)
    }
}

/// Whether update id `id` came after `last`: an agent's update ids grow by one per update
/// (skipping 0 on wrap-around), so they compare by serial-number arithmetic.
pub fn is_newer_update(id: u32, last: u32) -> bool {
    (id.wrapping_sub(last) as i32) > 0
}

/// A change of a task's state, kept and resent by the agent until the master acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusUpdate {
    /// The task's framework.
    pub framework_id: FrameworkId,
    /// The task.
    pub task_id: TaskId,
    /// Unique per agent; the acknowledgement names it. Receivers must be idempotent.
    pub update_id: u32,
    /// The new state.
    pub state: TaskState,
    /// Why.
    pub reason: Reason,
    /// A human-readable detail, possibly empty.
    pub message: String<MAX_MESSAGE_LEN, u8>,
}

/// Agent → master messages. Append new variants at the end only.
// Without alloc nothing can be boxed; a message lives on the stack only while it is coded.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentMsg {
    /// First registration of an agent that runs no tasks.
    Register(AgentInfo),
    /// Registration carrying the agent's tasks.
    ReRegister(ReRegister),
    /// Periodic resource report.
    Report(ResourceReport),
    /// A task status update.
    Status(StatusUpdate),
    /// The answer to a [`MasterMsg::Ping`].
    Pong {
        /// The ping's sequence number.
        seq: u32,
    },
    /// The agent is gone: its MQTT last will, also sent on a clean shutdown.
    Gone {
        /// The connection the will belongs to (see [`AgentInfo::connection`]).
        connection: u32,
    },
}

/// The master's answer to a registration (the master's epoch is the envelope's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterAck {
    /// The agent's id, echoed.
    pub agent_id: AgentId,
}

/// The environment variable a task names the Unix user it asks to run as in (the agent's
/// `[tasks] allowed_users` and the operator's grants decide whether it may).
pub const TASK_USER_VAR: &str = "BRAMBLE_USER";

/// The user a task's environment asks for: the last [`TASK_USER_VAR`] wins, and an empty value
/// names none. The master's authorization and the agent read a task's request with this one
/// function, so they never disagree about which user was asked for.
pub fn requested_user<'a>(env: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<&'a str> {
    env.into_iter()
        .filter(|(k, _)| *k == TASK_USER_VAR)
        .map(|(_, v)| v)
        .last()
        .filter(|v| !v.is_empty())
}

/// An environment variable for a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    /// The name, at most 32 bytes.
    pub key: String<32, u8>,
    /// The value, at most 128 bytes.
    pub value: String<128, u8>,
}

/// A file the agent fetches into the task's sandbox before launch.
///
/// `name` was appended after the first release of the wire. A `RunTask` with no artifacts encodes
/// exactly as before; one with artifacts was never accepted by an agent of that release (it failed
/// such tasks with "cannot fetch artifacts yet"), so the version byte stayed 1 then (see PROTOCOL.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// Where to fetch it (already resolved for the agent's architecture). Only `http://`.
    pub url: String<MAX_ARTIFACT_URL_LEN, u8>,
    /// Its SHA-256; a mismatch fails the task.
    pub sha256: [u8; 32],
    /// Whether to mark it executable.
    pub executable: bool,
    /// The file's name in the sandbox: one path component, not `.` or `..`. Empty means the last
    /// path segment of `url`.
    pub name: String<MAX_ARTIFACT_NAME_LEN, u8>,
}

/// Launch a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTask {
    /// The task's framework.
    pub framework_id: FrameworkId,
    /// The task.
    pub task_id: TaskId,
    /// The command; `argv[0]` is the program.
    pub argv: Vec<String<MAX_ARG_LEN, u8>, MAX_ARGS, u8>,
    /// Extra environment variables.
    pub env: Vec<EnvVar, MAX_ENV, u8>,
    /// The task's limits; they must fit in what the agent has free.
    pub resources: Resources,
    /// The most processes the task may have, or 0 for the agent's default.
    pub pids_max: u32,
    /// Files to fetch before launch.
    pub artifacts: Vec<Artifact, MAX_ARTIFACTS, u8>,
}

impl RunTask {
    /// The key of the task this launches.
    pub fn key(&self) -> TaskKey {
        TaskKey {
            framework_id: self.framework_id.clone(),
            task_id: self.task_id.clone(),
        }
    }
}

/// Kill a task: SIGTERM to its process group, SIGKILL after the grace period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillTask {
    /// The task's framework.
    pub framework_id: FrameworkId,
    /// The task.
    pub task_id: TaskId,
    /// Milliseconds between SIGTERM and SIGKILL; 0 kills at once.
    pub grace_ms: u32,
}

/// The master has recorded a status update; the agent may forget it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusAck {
    /// The task's framework.
    pub framework_id: FrameworkId,
    /// The task.
    pub task_id: TaskId,
    /// The acknowledged update.
    pub update_id: u32,
}

/// Master → agent messages. Append new variants at the end only.
// Without alloc nothing can be boxed; a message lives on the stack only while it is coded.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MasterMsg {
    /// The master announces itself (retained on the hello topic); a newer epoch (the envelope's)
    /// means agents re-register.
    Hello,
    /// A registration was accepted.
    RegisterAck(RegisterAck),
    /// Launch a task.
    RunTask(RunTask),
    /// Kill a task.
    KillTask(KillTask),
    /// A status update was recorded.
    StatusAck(StatusAck),
    /// Liveness probe; the agent answers [`AgentMsg::Pong`].
    Ping {
        /// Echoed in the pong.
        seq: u32,
    },
    /// The master does not know this agent (e.g. it restarted): re-register with your tasks.
    ReRegisterRequest,
}

/// How a master epoch is built: the leadership term in the high bits, a tiebreak from the master's
/// name in the low [`EPOCH_TIEBREAK_BITS`], so two masters elected in the same term still differ.
pub const EPOCH_TIEBREAK_BITS: u32 = 16;

/// The epoch of term `term` won by the master whose tiebreak is `tiebreak`.
pub const fn epoch(term: u64, tiebreak: u16) -> u64 {
    (term << EPOCH_TIEBREAK_BITS) | tiebreak as u64
}

/// The leadership term of `epoch`.
pub const fn epoch_term(epoch: u64) -> u64 {
    epoch >> EPOCH_TIEBREAK_BITS
}

/// Every master → agent payload: the sender's epoch, the fencing token, and the message.
///
/// Epochs only grow: a leader's epoch is above every epoch before it (see PROTOCOL.md,
/// "Leadership"). An agent acts only on the newest epoch it has obeyed (it keeps that epoch in its
/// checkpoint) and drops what an older master sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterEnvelope {
    /// The sending master's epoch.
    pub epoch: u64,
    /// The message.
    pub msg: MasterMsg,
}

/// Why a payload could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The buffer is smaller than the encoding.
    BufferTooSmall,
}

/// Why a payload could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The payload is empty.
    Empty,
    /// The payload's version byte is not [`PROTOCOL_VERSION`].
    UnsupportedVersion {
        /// The version byte received.
        got: u8,
    },
    /// The payload ends in the middle of a message.
    Truncated,
    /// The payload is not a valid message (bad tag, bad varint, bad UTF-8, a string or list over its
    /// capacity, …).
    Malformed,
    /// A whole message was read but bytes are left over.
    TrailingBytes,
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::Empty => f.write_str("empty payload"),
            DecodeError::UnsupportedVersion { got } => write!(
                f,
                "protocol version {got} is not supported (this build speaks {PROTOCOL_VERSION})"
            ),
            DecodeError::Truncated => f.write_str("payload is truncated"),
            DecodeError::Malformed => f.write_str("payload is not a valid message"),
            DecodeError::TrailingBytes => f.write_str("payload has bytes after the message"),
        }
    }
}

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("buffer too small for the message")
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::AgentMsg {}
    impl Sealed for super::MasterEnvelope {}
}

/// A message that travels between agent and master: [`AgentMsg`] or [`MasterEnvelope`].
pub trait WireMessage: Serialize + for<'de> Deserialize<'de> + sealed::Sealed {
    /// The largest encoding of any message of this type, version byte included.
    const MAX_ENCODED_LEN: usize;

    /// Encodes `self` with its version byte into `buf`, returning the length written.
    fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        let (first, rest) = buf.split_first_mut().ok_or(EncodeError::BufferTooSmall)?;
        *first = PROTOCOL_VERSION;
        let used = postcard::to_slice(self, rest)
            .map_err(|_| EncodeError::BufferTooSmall)?
            .len();
        Ok(used + 1)
    }

    /// Decodes a payload, checking its version byte first and refusing trailing bytes.
    fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let (&version, body) = payload.split_first().ok_or(DecodeError::Empty)?;
        if version != PROTOCOL_VERSION {
            return Err(DecodeError::UnsupportedVersion { got: version });
        }
        match postcard::take_from_bytes::<Self>(body) {
            Ok((msg, [])) => Ok(msg),
            Ok(_) => Err(DecodeError::TrailingBytes),
            Err(postcard::Error::DeserializeUnexpectedEnd) => Err(DecodeError::Truncated),
            Err(_) => Err(DecodeError::Malformed),
        }
    }
}

impl WireMessage for AgentMsg {
    /// A full re-registration: 1 + 1 + 621 (info) + 10 (epoch) + 5 (down_seq) + 1 + 32 × 82
    /// (tasks).
    const MAX_ENCODED_LEN: usize = 3_263;
}

impl WireMessage for MasterEnvelope {
    /// A full RunTask: 1 + 10 (epoch) + 1 + 33 + 33 + 2_081 (argv) + 2_609 (env) + 15 + 5 + 1_041
    /// (artifacts: 1 + 4 × (162 url + 32 sha256 + 1 executable + 65 name)).
    const MAX_ENCODED_LEN: usize = 5_829;
}

impl MasterMsg {
    /// This message from the master of `epoch`, ready to encode.
    pub fn from_epoch(self, epoch: u64) -> MasterEnvelope {
        MasterEnvelope { epoch, msg: self }
    }
}

/// The largest encoded [`AgentMsg::Report`], version byte included.
pub const MAX_REPORT_LEN: usize = 22;
/// The largest encoded [`AgentMsg::Status`], version byte included.
pub const MAX_STATUS_LEN: usize = 145;

/// The largest agent → master frame: the largest [`AgentMsg`] and its trailer.
pub const MAX_UP_FRAME_LEN: usize = AgentMsg::MAX_ENCODED_LEN + crate::frame::UP_TRAILER_LEN;
/// The largest master → agent frame: the largest [`MasterEnvelope`] and its trailer.
pub const MAX_DOWN_FRAME_LEN: usize =
    MasterEnvelope::MAX_ENCODED_LEN + crate::frame::DOWN_TRAILER_LEN;

// A resource report, as a frame, must stay within 32 bytes (pinned exactly by the max-size tests).
const _: () = assert!(MAX_REPORT_LEN + crate::frame::UP_TRAILER_LEN <= 32);

impl AgentMsg {
    /// The topic this message travels on, for agent `agent_id`.
    pub fn topic(&self, agent_id: &str) -> crate::topic::TopicBuf {
        crate::topic::agent(agent_id, self.kind())
    }

    /// Which of the agent's uplink topics carries this message.
    pub const fn kind(&self) -> crate::topic::AgentTopic {
        use crate::topic::AgentTopic;
        match self {
            AgentMsg::Register(_) | AgentMsg::ReRegister(_) => AgentTopic::Register,
            AgentMsg::Report(_) => AgentTopic::Report,
            AgentMsg::Status(_) => AgentTopic::Status,
            AgentMsg::Pong { .. } => AgentTopic::Pong,
            AgentMsg::Gone { .. } => AgentTopic::Will,
        }
    }
}
