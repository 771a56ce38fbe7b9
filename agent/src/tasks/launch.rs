//! Starting one task on the board: its sandbox, its artifacts, then its process (through a warm
//! spare when there is one). I/O only: what it started is recorded by the caller.

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_nostd_core::ids::TaskKey;
use agent_nostd_core::wire::RunTask;
use agent_nostd_core::Resources;
use tracing::debug;

use crate::cgroup::Limits;
use crate::fetch::{ArtifactError, Fetcher};
use crate::process::{self, LaunchError, TaskSpec};
use crate::warm::{Launcher, StartError, Started};

use super::user::{self, TaskUsers, UserError};

/// Why a task did not start. Its text is what the master is told (the core keeps 64 bytes).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchFailure {
    /// No RunTask was held for the task: the agent cannot know its command line.
    #[error("the agent lost the task's command line")]
    NoRunTask,
    /// The task cannot run as the user it needs (not allowed, missing).
    #[error(transparent)]
    User(#[from] UserError),
    /// The sandbox could not be made.
    #[error("cannot create sandbox {}: {source}", path.display())]
    Sandbox {
        /// The sandbox directory.
        path: PathBuf,
        /// Why.
        source: LaunchError,
    },
    /// An artifact could not be fetched.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// The artifacts were not all fetched within the fetcher's budget.
    #[error("artifacts: not all fetched within {secs} s")]
    ArtifactsTimedOut {
        /// The budget, in seconds.
        secs: u64,
    },
    /// The process did not start.
    #[error(transparent)]
    Start(#[from] StartError),
}

/// What a launch needs from the agent besides the task.
#[derive(Debug)]
pub struct LaunchEnv<'a> {
    /// This agent's id, for the task's environment.
    pub agent_id: &'a str,
    /// `mqtt://host:port` of the broker (a comma list of them when the agent has several), the
    /// task's `BRAMBLE_BROKER`.
    pub broker_url: String,
    /// Who tasks run as (`[tasks]`).
    pub users: &'a TaskUsers,
    /// The most bytes kept of each of a task's stdout and stderr.
    pub log_limit_bytes: u64,
    /// Downloads and caches artifacts.
    pub fetcher: &'a Fetcher,
    /// All of a task's artifacts share this budget (`[fetcher] timeout_secs`, kept below the MQTT
    /// keep-alive grace, since the loop waits for launches).
    pub fetch_budget: Duration,
}

/// Starts the task `key` of `run` in `sandbox` with the core's `resources` and `pids_max` as its
/// limits.
pub async fn start(
    env: &LaunchEnv<'_>,
    launcher: &mut Launcher,
    key: &TaskKey,
    run: &RunTask,
    sandbox: &Path,
    resources: Resources,
    pids_max: u32,
) -> Result<Started, LaunchFailure> {
    let asked = user::requested(run.env.iter().map(|e| (e.key.as_str(), e.value.as_str())));
    let (run_as, user_name) = env.users.resolve(asked)?;
    let owner = run_as.as_ref().map(process::RunAs::owner);
    process::create_sandbox(sandbox, run_as.as_ref()).map_err(|source| LaunchFailure::Sandbox {
        path: sandbox.to_path_buf(),
        source,
    })?;
    let fetches = async {
        for artifact in &run.artifacts {
            let path = env.fetcher.fetch_into(artifact, sandbox, owner).await?;
            debug!(framework = %key.framework_id, task = %key.task_id, path = %path.display(), "artifact in place");
        }
        Ok::<(), LaunchFailure>(())
    };
    match tokio::time::timeout(env.fetch_budget, fetches).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(LaunchFailure::ArtifactsTimedOut {
                secs: env.fetch_budget.as_secs(),
            })
        }
    }
    let limits = Limits {
        cpu_millis: resources.cpu_millis,
        mem_mib: resources.mem_mib,
        pids_max,
    };
    let spec = TaskSpec {
        framework_id: key.framework_id.to_string(),
        task_id: key.task_id.to_string(),
        agent_id: env.agent_id.to_owned(),
        argv: run.argv.iter().map(|a| a.to_string()).collect(),
        env: run
            .env
            .iter()
            .filter(|e| e.key.as_str() != user::USER_VAR)
            .map(|e| (e.key.to_string(), e.value.to_string()))
            .chain([
                ("BRAMBLE_BROKER".to_owned(), env.broker_url.clone()),
                (user::USER_VAR.to_owned(), user_name.clone()),
            ])
            .collect(),
        sandbox: sandbox.to_path_buf(),
        run_as,
        log_limit_bytes: env.log_limit_bytes,
    };
    let started = launcher.start(&spec, limits).await?;
    debug!(framework = %key.framework_id, task = %key.task_id, warm = started.warm, launched = ?started.launched,
        user = %user_name, "task process started");
    Ok(started)
}
