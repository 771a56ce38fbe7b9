//! The SDK's errors: [`SdkError`] for the drivers, [`CallError`] for a call a scheduler could not
//! queue.

/// Why a driver could not start or carry on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdkError {
    /// A broker address is not an `mqtt://host[:port]` URL (or the list names none).
    #[error("invalid broker address: {0}")]
    BadBroker(#[from] crate::broker::BrokerError),
    /// The client name is not a valid id (1 to 32 bytes of `A-Z a-z 0-9 . _ -`).
    #[error("invalid client name `{0}`: it must be 1 to 32 bytes of A-Z a-z 0-9 . _ -")]
    BadClientName(String),
    /// The registration would be refused by any master.
    #[error("invalid registration: {0}")]
    BadRegistration(String),
    /// An environment variable an executor needs is not set.
    #[error("environment variable {0} is not set: is this process running as a Bramble task?")]
    MissingEnv(&'static str),
    /// An environment variable an executor needs is set to something unusable.
    #[error("environment variable {name} is invalid: {reason}")]
    BadEnv {
        /// The variable.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The broker refused the login (a one-shot run gives up on it; see
    /// [`run_once_until`](crate::scheduler::run_once_until)).
    #[error("{0}")]
    LoginRefused(bramble_mqtt::Refusal),
    /// The broker did not answer in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The connection to the broker is gone for good (the executor's driver stopped).
    #[error("the broker connection is closed")]
    Closed,
    /// A message is larger than a framework message may be.
    #[error("message of {len} bytes is larger than the {max} bytes allowed")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The MQTT client refused a request.
    #[error("mqtt client: {0}")]
    Client(#[from] rumqttc::ClientError),
    /// A value could not be turned into JSON.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

/// Why a [`SchedulerDriver`](crate::scheduler::SchedulerDriver) call was not queued. Nothing was
/// sent; the scheduler's own state should treat the call as not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The outgoing buffer is full: the broker connection is not keeping up.
    #[error("the outgoing call buffer is full ({0} calls)")]
    OutboxFull(usize),
    /// As many timers as allowed are pending already.
    #[error("too many pending timers ({0})")]
    TooManyTimers(usize),
    /// The driver is stopping and takes no more calls.
    #[error("the driver is stopping")]
    Stopping,
    /// The call would be refused by the master.
    #[error("invalid call: {0}")]
    Invalid(String),
}
