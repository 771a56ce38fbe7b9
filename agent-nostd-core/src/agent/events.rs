//! What the driver hands the core besides wire messages (task events, resource samples) and what
//! it gets back (actions, transmits, errors, counters, views of the task table).

use crate::ids::{FrameworkId, TaskId, TaskKey};
use crate::resources::Resources;
use crate::topic::{QoS, TopicBuf};
use crate::wire::{DecodeError, Reason, TaskState};

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
    /// Start the task (from the [`RunTask`](crate::wire::RunTask) just handled) with these limits, then report
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

/// A payload [`AgentCore::poll_transmit`](super::AgentCore::poll_transmit) wrote, and where to publish it.
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
    /// The message comes from a master older than the newest one obeyed (its epoch is lower).
    StaleMaster,
    /// A command that is not a frame.
    Unauthenticated,
    /// A frame whose tag does not verify.
    BadTag,
    /// A frame whose number was taken before (or is too old to tell).
    Replayed(crate::frame::FrameError),
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
            RecvError::StaleMaster => {
                f.write_str("message from an older master than the one obeyed (stale epoch)")
            }
            RecvError::Unauthenticated => f.write_str("command is not an authenticated frame"),
            RecvError::BadTag => f.write_str("frame's tag does not verify (forged or altered)"),
            RecvError::Replayed(e) => write!(f, "frame refused: {e}"),
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
    /// Messages from a master whose epoch is below the newest obeyed, dropped (fencing).
    pub stale_master: u32,
    /// Frames whose tag did not verify (forged, altered, for another boot), dropped.
    pub bad_tag: u32,
    /// Frames whose number was taken before or is below the replay window, dropped.
    pub replayed: u32,
    /// Messages on the command topic that were not frames (but a hint), dropped.
    pub unauthenticated: u32,
    /// Hints from a master that does not know this agent.
    pub hints: u32,
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
