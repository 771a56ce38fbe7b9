//! The operator's queries (`bramble status`, `agents`, `frameworks`, `tasks`, `offers`): read the
//! retained status topics a running master publishes (see [`bramble_master_core::status`]) and render them as
//! aligned tables or JSON.
//!
//! [`collect`] subscribes to `bramble/v1/status/#` and gathers the retained messages until the
//! broker has been quiet for [`QUIET`](crate::mqtt::QUIET) after the SUBACK (or until a timeout).
//! Each payload is parsed into its topic's shape ([`StatusEntry`]: the master core's
//! [`ClusterStatus`](bramble_master_core::status::ClusterStatus),
//! [`AgentStatus`](bramble_master_core::status::AgentStatus), …), so the tables read the fields the
//! publisher writes; the JSON as published is kept too, for `--json`. The rendering functions work
//! on the shapes only, so they are tested without a broker.
//!
//! # Layout
//!
//! - this file: [`collect`], and finding a task by name for `bramble kill`.
//! - `ask.rs`: [`ask`], the master's answer to a signed status query, page by page (what the CLI
//!   tries first: it has no limit on the number of entries).
//! - `snapshot.rs`: [`StatusSnapshot`] and [`StatusEntry`], the parsed topics.
//! - `render.rs`: the tables.

use std::time::Duration;

pub use crate::mqtt::QueryError;
use crate::mqtt::{retained, Brokers};
use bramble_master_core::status::{TaskStatus, STATUS_FILTER};

mod ask;
mod render;
mod snapshot;
#[cfg(test)]
mod tests;

pub use self::ask::ask;
pub use self::render::{
    render_agents, render_cluster, render_frameworks, render_offers, render_tasks, table,
};
pub use self::snapshot::{EntryError, StatusEntry, StatusSnapshot, MAX_ENTRIES};

/// Reads the retained status topics from the broker at `broker` (the first of several that can
/// be reached), waiting at most `timeout`.
pub async fn collect(
    broker: impl Into<Brokers>,
    timeout: Duration,
) -> Result<StatusSnapshot, QueryError> {
    let mut snapshot = StatusSnapshot::default();
    retained(
        broker,
        &[STATUS_FILTER.to_owned()],
        timeout,
        |topic, payload| snapshot.insert(topic, payload),
    )
    .await?;
    Ok(snapshot)
}

/// Finds the task `spec` names among the retained status: `FRAMEWORK_ID/TASK_ID`, or a task id
/// that only one framework uses. Returns (framework id, task id) and its status.
pub fn find_task<'a>(
    snapshot: &'a StatusSnapshot,
    spec: &str,
) -> Result<(String, String, &'a TaskStatus), String> {
    let tasks = snapshot.tasks();
    let matches: Vec<&TaskStatus> = match spec.split_once('/') {
        Some((f, t)) => tasks
            .into_iter()
            .filter(|v| v.framework_id == f && v.task_id == t)
            .collect(),
        None => tasks.into_iter().filter(|v| v.task_id == spec).collect(),
    };
    match matches.as_slice() {
        [] => Err(format!("no task {spec} in the cluster's status")),
        [one] => Ok((one.framework_id.clone(), one.task_id.clone(), one)),
        many => Err(format!(
            "several frameworks have a task {spec}: name one of {}",
            many.iter()
                .map(|v| format!("{}/{}", v.framework_id, v.task_id))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Whether a task's status shows it ended (finished, failed, killed, lost or error).
pub fn task_ended(task: &TaskStatus) -> bool {
    task.ended()
}
