//! Warm spares: task processes made ready before they are needed, so that a launch pays neither
//! a supervisor's `exec` nor the cgroup join (on v2, the first of a burst waits out an RCU grace
//! period, 10–30 ms; see [`crate::cgroup`]).
//!
//! [`Launcher`] keeps up to `count` [`Spare`]s (`warm_spares` in the agent's config, 2 by default:
//! a launch right after another on the same board finds the second while the first is replaced).
//! A spare is a warm supervisor whose stub is forked, in its own process group and in a spare
//! cgroup `warm@<agent>@<n>` without limits, blocked reading its task; about 400 KiB, and nothing
//! written to disk while it waits. Spares are prepared one at a time, oldest used first:
//!
//! ```text
//! driver loop, when idle and with room:  launcher.refill()   prepares a spare in the background
//!                          ready_rx ──▶  launcher.on_ready(spare)
//! launch:  launcher.start(&spec, limits)  spare alive? set its cgroup's limits, send it the task
//!                                         else, or if the spare turns out broken: the cold path
//!                                         (a new cgroup named after the task, a new supervisor)
//! stop:    launcher.shutdown()            retires the spare and removes its cgroup
//! start:   Isolation::stale_spare_cgroups spare cgroups a previous run left, to remove
//! ```
//!
//! The spare never fails a launch: a dead or broken spare (its supervisor was killed, its pipe is
//! broken, its cgroup refuses the limits) is discarded and the task starts cold. A failed
//! preparation is retried with a backoff (5 s doubling to 10 min), so a supervisor program without
//! warm mode costs a warning now and then, and every launch goes cold.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::cgroup::{self, CgroupError, Isolation, Limits, TaskCgroup};
use crate::process::{self, LaunchError, Launched, Spare, TaskHandle, TaskSpec};

/// The first wait before another try after a spare could not be prepared.
const RETRY_FIRST: Duration = Duration::from_secs(5);
/// The longest wait between tries.
const RETRY_MAX: Duration = Duration::from_secs(600);

/// A started task.
#[derive(Debug)]
pub struct Started {
    /// Its checkpoint record.
    pub launched: Launched,
    /// Wait on it for the task's end.
    pub handle: TaskHandle,
    /// Its cgroup: checkpoint its paths.
    pub cgroup: Option<TaskCgroup>,
    /// Whether it ran in the warm spare.
    pub warm: bool,
}

/// Why a task did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Its cgroup could not be made.
    #[error("cannot create the task's cgroup: {0}")]
    Cgroup(#[from] CgroupError),
    /// Its process could not be started.
    #[error(transparent)]
    Launch(#[from] LaunchError),
}

/// Starts tasks, through a warm spare when there is one.
#[derive(Debug)]
pub struct Launcher {
    agent_id: String,
    isolation: Isolation,
    supervisor: PathBuf,
    /// Ready spares, oldest first; at most `count`.
    spares: VecDeque<Spare>,
    count: usize,
    /// A spare is being prepared.
    preparing: bool,
    retry_at: Option<Instant>,
    retry_wait: Duration,
    ready: mpsc::Sender<Option<Spare>>,
}

impl Launcher {
    /// A launcher that keeps up to `count` spares (none yet), and the receiver of prepared spares,
    /// to hand to [`on_ready`](Launcher::on_ready).
    pub fn new(
        agent_id: &str,
        isolation: Isolation,
        supervisor: PathBuf,
        count: usize,
    ) -> (Launcher, mpsc::Receiver<Option<Spare>>) {
        // One preparation at a time, so one slot is enough.
        let (ready, ready_rx) = mpsc::channel(1);
        let launcher = Launcher {
            agent_id: agent_id.to_owned(),
            isolation,
            supervisor,
            spares: VecDeque::with_capacity(count),
            count,
            preparing: false,
            retry_at: None,
            retry_wait: RETRY_FIRST,
            ready,
        };
        (launcher, ready_rx)
    }

    /// The spare the next launch uses, when one is ready.
    pub fn spare(&self) -> Option<&Spare> {
        self.spares.front()
    }

    /// How many spares are ready.
    pub fn ready(&self) -> usize {
        self.spares.len()
    }

    /// Whether a spare is being prepared.
    pub fn is_preparing(&self) -> bool {
        self.preparing
    }

    /// Starts preparing a spare in the background, unless `count` are ready, one is on its way, or
    /// the last try failed too recently. One at a time: preparing several at once (two `exec`s)
    /// measurably slowed the launches they overlapped. Never blocks: the spare arrives on the
    /// receiver.
    pub fn refill(&mut self) {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        if self.spares.len() < self.count && !self.preparing {
            self.preparing = true;
            let agent_id = self.agent_id.clone();
            let isolation = self.isolation.clone();
            let supervisor = self.supervisor.clone();
            let ready = self.ready.clone();
            tokio::spawn(async move {
                let spare = prepare(&agent_id, &isolation, &supervisor).await;
                // The launcher is gone: dropping the spare retires it (EOF on its stdin).
                let _ = ready.send(spare).await;
            });
        }
    }

    /// Takes a prepared spare (`None`: the preparation failed).
    pub fn on_ready(&mut self, spare: Option<Spare>) {
        self.preparing = false;
        match spare {
            Some(spare) => {
                self.retry_at = None;
                self.retry_wait = RETRY_FIRST;
                if self.spares.len() < self.count {
                    self.spares.push_back(spare);
                } else {
                    discard(spare);
                }
            }
            None => {
                self.retry_at = Some(Instant::now() + self.retry_wait);
                self.retry_wait = (self.retry_wait * 2).min(RETRY_MAX);
            }
        }
    }

    /// Starts `spec` with `limits`: in the oldest spare if there is a sound one, else cold.
    pub async fn start(&mut self, spec: &TaskSpec, limits: Limits) -> Result<Started, StartError> {
        if let Some(spare) = self.spares.pop_front() {
            match try_spare(spare, spec, limits).await {
                Ok(started) => return Ok(started),
                Err(Some(e)) => return Err(e),
                Err(None) => {}
            }
        }
        let isolation = self.isolation.clone();
        let (fw, task) = (spec.framework_id.clone(), spec.task_id.clone());
        let cgroup = cgroup::off_loop(move || isolation.create_task(&fw, &task, limits)).await?;
        match process::launch(spec, cgroup.as_ref(), &self.supervisor).await {
            Ok((launched, handle)) => Ok(Started {
                launched,
                handle,
                cgroup,
                warm: false,
            }),
            Err(e) => {
                if let Some(cg) = cgroup {
                    remove_in_background(cg);
                }
                Err(e.into())
            }
        }
    }

    /// Retires the spares and removes their cgroups.
    pub async fn shutdown(&mut self) {
        while let Some(spare) = self.spares.pop_front() {
            let cgroup = spare.cgroup().cloned();
            spare.retire().await;
            if let Some(cg) = cgroup {
                if let Err(e) = cg.remove().await {
                    warn!("cannot remove the spare's cgroup: {e}");
                }
            }
        }
    }
}

/// Runs the task in `spare`. `Err(None)`: the spare was unusable and the task did not run, so the
/// cold path should be tried.
async fn try_spare(
    mut spare: Spare,
    spec: &TaskSpec,
    limits: Limits,
) -> Result<Started, Option<StartError>> {
    if !spare.is_alive() {
        warn!(task = %spec.task_id, "the warm spare died; starting the task cold");
        discard(spare);
        return Err(None);
    }
    let cgroup = spare.cgroup().cloned();
    if let Some(cg) = &cgroup {
        if let Err(e) = cg.set_limits(limits) {
            warn!(task = %spec.task_id, "cannot limit the spare's cgroup ({e}); starting the task cold");
            discard(spare);
            return Err(None);
        }
    }
    match spare.launch(spec).await {
        Ok((launched, handle)) => Ok(Started {
            launched,
            handle,
            cgroup,
            warm: true,
        }),
        Err(e) => {
            if let Some(cg) = cgroup {
                remove_in_background(cg);
            }
            match e {
                LaunchError::Supervisor(why) => {
                    warn!(task = %spec.task_id, "the warm spare failed ({why}); starting the task cold");
                    Err(None)
                }
                e => Err(Some(e.into())),
            }
        }
    }
}

/// A spare: its cgroup (made off the loop, see [`cgroup::off_loop`]), then a warm supervisor in it.
async fn prepare(
    agent_id: &str,
    isolation: &Isolation,
    supervisor: &std::path::Path,
) -> Option<Spare> {
    let (isolation, id) = (isolation.clone(), agent_id.to_owned());
    let cgroup = match cgroup::off_loop(move || isolation.create_spare(&id)).await {
        Ok(cg) => cg,
        Err(e) => {
            warn!("cannot create a cgroup for the warm spare: {e}");
            return None;
        }
    };
    match Spare::prepare(cgroup.as_ref(), supervisor).await {
        Ok(spare) => {
            debug!(cgroup = ?cgroup.as_ref().map(TaskCgroup::paths), "warm spare ready");
            Some(spare)
        }
        Err(e) => {
            warn!("cannot prepare a warm spare: {e}");
            if let Some(cg) = cgroup {
                let _ = cg.remove().await;
            }
            None
        }
    }
}

/// Retires a spare and removes its cgroup, in the background.
fn discard(spare: Spare) {
    tokio::spawn(async move {
        let cgroup = spare.cgroup().cloned();
        spare.retire().await;
        if let Some(cg) = cgroup {
            if let Err(e) = cg.remove().await {
                warn!("cannot remove a spare's cgroup: {e}");
            }
        }
    });
}

fn remove_in_background(cg: TaskCgroup) {
    tokio::spawn(async move {
        if let Err(e) = cg.remove().await {
            warn!("cannot remove a task cgroup: {e}");
        }
    });
}
