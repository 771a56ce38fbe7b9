//! Why an input was dropped ([`RecvError`]) and what the master counts ([`Stats`]).

use agent_nostd_core::wire::DecodeError as AgentDecodeError;
use bramble_proto as proto;

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
    /// An agent frame was not authenticated or was replayed.
    #[error("agent frame dropped: {0}")]
    Frame(super::agent_auth::FrameDrop),
    /// An operator command was not signed by an operator, or was stale or replayed.
    #[error("operator command refused: {0}")]
    Operator(super::operator_auth::OperatorDrop),
}

/// Counters of what the master did and dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Payloads that failed to decode (any reason but version).
    pub malformed: u64,
    /// Agent frames dropped before they were read: unauthenticated, forged or replayed.
    pub frames_dropped: super::agent_auth::FrameDrops,
    /// Framework frames dropped before they were read: unauthenticated, forged, stale or
    /// replayed.
    pub framework_frames_dropped: super::agent_auth::FrameDrops,
    /// Authenticated registrations addressed to another master's epoch, answered with a
    /// re-registration request.
    pub registrations_misaddressed: u64,
    /// Hints (an unframed hello) sent to agents the master has no session with.
    pub hints_sent: u64,
    /// Signed status queries dropped because [`MAX_QUERIES`](super::query::MAX_QUERIES) waited
    /// already for the driver.
    pub queries_dropped: u64,
    /// Operator commands refused before they were read: unsigned, forged, stale or replayed.
    pub operator_commands_refused: super::operator_auth::OperatorDrops,
    /// Payloads from another protocol version.
    pub unsupported_version: u64,
    /// Payloads on a topic that does not carry them.
    pub misrouted: u64,
    /// Agent registrations and re-registrations handled.
    pub agent_registrations: u64,
    /// Registrations refused because [`Config::max_agents`](crate::Config::max_agents) was reached.
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
    /// Registrations and accepts refused by the operator's authorization (an unknown principal,
    /// a task user not granted).
    pub unauthorized: u64,
    /// Tasks killed by revocation.
    pub revocations: u64,
    /// Events for disconnected frameworks dropped because their queue was full.
    pub held_events_dropped: u64,
    /// Agents that became unreachable.
    pub agents_lost: u64,
    /// Status updates a framework acknowledged (passed on to their agents).
    pub acknowledgements: u64,
    /// Status updates resent to a framework that (re-)registered without acknowledging them.
    pub updates_resent: u64,
    /// Ended tasks dropped from a framework's completed-task cache to make room (reconciling one
    /// later answers TASK_LOST).
    pub completed_evicted: u64,
    /// Last wills of an older connection of a framework or an agent, ignored.
    pub stale_wills: u64,
    /// Reconciliations and kills of tasks the master does not know left unanswered because
    /// agents may still be re-registering after the master started, and reconciliations of tasks
    /// whose agent's own terminal update is on its way.
    pub unknown_task_answers_deferred: u64,
    /// Calls from clients with no registered framework behind them, answered `NotRegistered`.
    pub calls_not_registered: u64,
    /// Re-registrations of agents that obey a newer epoch than this master's, not answered.
    pub newer_epoch_reports: u64,
    /// Times this master raised its epoch above one its agents obeyed.
    pub epoch_raises: u64,
    /// Refused accepts of an earlier master's offer whose tasks were not reported TASK_LOST (that
    /// master may have launched them; reconciliation settles them).
    pub foreign_accepts: u64,
}
