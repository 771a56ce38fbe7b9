//! The status topics: their prefix, the filter a dashboard subscribes to, and one builder per
//! kind (`PROTOCOL.md`, "Status topics").

use bramble_proto::OfferId;

/// The prefix of every status topic.
pub const STATUS_PREFIX: &str = "bramble/v1/status/";
/// The filter a dashboard subscribes to.
pub const STATUS_FILTER: &str = "bramble/v1/status/#";
/// The cluster summary's topic.
pub const CLUSTER_TOPIC: &str = "bramble/v1/status/cluster";
/// The master's availability: `online` while it runs, `offline` (its MQTT last will) once its
/// connection is gone.
pub const MASTER_TOPIC: &str = "bramble/v1/status/master";
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
