//! The sensor scheduler: exactly one reader on every board with the sensor, re-placed when lost.

use std::collections::BTreeMap;

use bramble_sdk::protocol::{
    ArtifactInfo, Attribute, ErrorCode, Offer, OfferId, StatusUpdate, TaskInfo,
};
use bramble_sdk::scheduler::{Scheduler, SchedulerDriver};
use bramble_sdk::{Resources, TaskState};
use tracing::{info, warn};

use crate::message::Summary;

/// The task id prefix of readers.
pub const TASK_PREFIX: &str = "reader-";

/// How the readers are placed and what they run.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorOptions {
    /// The sensor a board must have: attribute `sensor=<kind>` (default `bme280`).
    pub kind: String,
    /// The command prefix that runs the reader on a board, e.g.
    /// `["/usr/bin/bramble-sensor", "executor"]`.
    pub executor: Vec<String>,
    /// The reader's source: `auto`, `thermal`, `thermal:<path>` or `simulated:<seed>`.
    pub source: String,
    /// Milliseconds between readings (default 1000).
    pub interval_ms: u32,
    /// Readings in the rolling window (default 60).
    pub window: u32,
    /// Standard deviations beyond which a reading is an anomaly (default 3).
    pub sigma: f64,
    /// Readings between summaries sent to the scheduler (default 10).
    pub summary_every: u32,
    /// What each reader asks for (default 100m CPU, 16 MiB).
    pub resources: Resources,
    /// How long boards without the sensor are refused, in seconds (default 3600).
    pub other_board_refuse_seconds: u32,
    /// How long boards that already have a reader are refused, in seconds (default 600); a revive
    /// clears it when a reader needs placing again.
    pub placed_board_refuse_seconds: u32,
    /// The executor binary as an artifact the agent fetches into the reader's sandbox (then
    /// `executor` starts with `./<name>`), or `None` when the boards already have it.
    pub executor_artifact: Option<ArtifactInfo>,
}

impl SensorOptions {
    /// The defaults, with `executor` as the executor prefix.
    pub fn new(executor: Vec<String>) -> Self {
        SensorOptions {
            kind: "bme280".into(),
            executor,
            source: "auto".into(),
            interval_ms: 1000,
            window: 60,
            sigma: 3.0,
            summary_every: 10,
            resources: Resources::new(100, 16, 0),
            other_board_refuse_seconds: 3600,
            placed_board_refuse_seconds: 600,
            executor_artifact: None,
        }
    }
}

/// Why the options cannot place readers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SensorError {
    /// No executor command, or one that leaves no room for the reader's arguments.
    #[error("the executor command must have 1 to 6 elements")]
    BadExecutor,
    /// The sensor kind is empty or too long for an attribute value.
    #[error("the sensor kind must be 1 to 32 bytes")]
    BadKind,
    /// A reader must ask for some CPU and memory.
    #[error("each reader must ask for some CPU and memory")]
    NoResources,
}

/// Where a board's reader is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacementState {
    /// Sent in an accept on this offer; no update yet.
    Launching {
        /// The offer.
        offer_id: OfferId,
    },
    /// Staging, starting or running.
    Running,
}

/// A board's reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The reader task.
    pub task_id: String,
    /// Where it is.
    pub state: PlacementState,
}

/// The sensor scheduler. See the crate docs.
#[derive(Debug)]
pub struct SensorScheduler {
    opts: SensorOptions,
    /// Board → its reader.
    placements: BTreeMap<String, Placement>,
    /// Board → the latest summary of its reader.
    summaries: BTreeMap<String, Summary>,
    next_task: u64,
    fatal: Option<String>,
    /// Framework messages dropped because they did not decode or came from no current reader.
    pub dropped_messages: u64,
}

impl SensorScheduler {
    /// A scheduler from `opts`.
    pub fn new(opts: SensorOptions) -> Result<Self, SensorError> {
        if opts.executor.is_empty() || opts.executor.len() > 6 {
            return Err(SensorError::BadExecutor);
        }
        if opts.kind.is_empty() || opts.kind.len() > 32 {
            return Err(SensorError::BadKind);
        }
        if opts.resources.cpu_millis == 0 || opts.resources.mem_mib == 0 {
            return Err(SensorError::NoResources);
        }
        Ok(SensorScheduler {
            opts,
            placements: BTreeMap::new(),
            summaries: BTreeMap::new(),
            next_task: 0,
            fatal: None,
            dropped_messages: 0,
        })
    }

    /// The current placement: board (agent id) → its reader.
    pub fn placements(&self) -> &BTreeMap<String, Placement> {
        &self.placements
    }

    /// The latest summary from each board's reader.
    pub fn summaries(&self) -> &BTreeMap<String, Summary> {
        &self.summaries
    }

    /// Why the scheduler gave up (registration refused), if it did.
    pub fn failure(&self) -> Option<&str> {
        self.fatal.as_deref()
    }

    /// True when the attributes say the board has the sensor.
    pub fn qualifies(&self, attributes: &[Attribute]) -> bool {
        attributes
            .iter()
            .any(|a| a.key == "sensor" && a.value.split(',').any(|v| v.trim() == self.opts.kind))
    }

    fn board_of(&self, task_id: &str) -> Option<String> {
        self.placements
            .iter()
            .find(|(_, p)| p.task_id == task_id)
            .map(|(a, _)| a.clone())
    }

    fn task(&mut self) -> TaskInfo {
        let task_id = format!("{TASK_PREFIX}{}", self.next_task);
        self.next_task += 1;
        let o = &self.opts;
        let mut argv = o.executor.clone();
        argv.extend([
            "--source".to_owned(),
            o.source.clone(),
            "--interval-ms".to_owned(),
            o.interval_ms.to_string(),
            "--window".to_owned(),
            o.window.to_string(),
            "--sigma".to_owned(),
            o.sigma.to_string(),
            "--summary-every".to_owned(),
            o.summary_every.to_string(),
        ]);
        TaskInfo {
            task_id,
            argv,
            env: Vec::new(),
            resources: o.resources,
            artifacts: o.executor_artifact.iter().cloned().collect(),
        }
    }

    /// Forgets the reader of `agent` and asks for offers again so it can be re-placed.
    fn unplace(&mut self, driver: &mut SchedulerDriver, agent: &str, why: &str) {
        if let Some(p) = self.placements.remove(agent) {
            warn!(agent, task = %p.task_id, "reader gone ({why}); will place another");
            self.summaries.remove(agent);
            if let Err(e) = driver.revive() {
                warn!("cannot revive offers: {e}");
            }
        }
    }
}

impl Scheduler for SensorScheduler {
    fn registered(&mut self, driver: &mut SchedulerDriver, framework_id: &str, _: u64) {
        info!(framework_id, kind = %self.opts.kind, "sensor framework registered");
        // After a failover, learn which readers still run.
        if !self.placements.is_empty() {
            let tasks = self
                .placements
                .values()
                .map(|p| p.task_id.clone())
                .collect();
            if let Err(e) = driver.reconcile(tasks) {
                warn!("cannot reconcile: {e}");
            }
        }
    }

    fn offers(&mut self, driver: &mut SchedulerDriver, offers: Vec<Offer>) {
        let mut other_boards = Vec::new();
        let mut placed_boards = Vec::new();
        let mut too_small = Vec::new();
        for offer in offers {
            let agent = offer.agent.agent_id.clone();
            if !self.qualifies(&offer.agent.attributes) {
                other_boards.push(offer.offer_id);
            } else if self.placements.contains_key(&agent) {
                placed_boards.push(offer.offer_id);
            } else if !self.opts.resources.fits_in(&offer.resources) {
                too_small.push(offer.offer_id);
            } else {
                let task = self.task();
                let task_id = task.task_id.clone();
                match driver.launch(offer.offer_id, vec![task]) {
                    Ok(()) => {
                        info!(agent = %agent, task = %task_id, "placing a reader");
                        self.placements.insert(
                            agent,
                            Placement {
                                task_id,
                                state: PlacementState::Launching {
                                    offer_id: offer.offer_id,
                                },
                            },
                        );
                    }
                    Err(e) => warn!(agent = %agent, "cannot place a reader: {e}"),
                }
            }
        }
        for (ids, refuse) in [
            (other_boards, Some(self.opts.other_board_refuse_seconds)),
            (placed_boards, Some(self.opts.placed_board_refuse_seconds)),
            (too_small, None),
        ] {
            if !ids.is_empty() {
                if let Err(e) = driver.decline(ids, refuse) {
                    warn!("cannot decline: {e}");
                }
            }
        }
    }

    fn status_update(&mut self, driver: &mut SchedulerDriver, update: StatusUpdate) {
        let live = matches!(
            update.state,
            TaskState::Staging | TaskState::Starting | TaskState::Running
        );
        match self.board_of(&update.task_id) {
            Some(agent) if live => {
                if let Some(p) = self.placements.get_mut(&agent) {
                    if p.state != PlacementState::Running {
                        info!(agent = %agent, task = %update.task_id, state = update.state.as_str(), "reader up");
                    }
                    p.state = PlacementState::Running;
                }
            }
            Some(agent) => {
                let why = format!(
                    "{} {:?} {}",
                    update.state.as_str(),
                    update.reason,
                    update.message
                );
                self.unplace(driver, &agent, &why);
            }
            None if live && update.task_id.starts_with(TASK_PREFIX) => {
                // A reader we had given up on is back (its board re-registered).
                match update.agent_id {
                    Some(agent) if !self.placements.contains_key(&agent) => {
                        info!(agent = %agent, task = %update.task_id, "a reader came back: keeping it");
                        self.placements.insert(
                            agent,
                            Placement {
                                task_id: update.task_id,
                                state: PlacementState::Running,
                            },
                        );
                    }
                    _ => {
                        info!(task = %update.task_id, "a second reader on a board: killing it");
                        if let Err(e) = driver.kill(&update.task_id, 2000) {
                            warn!("cannot kill: {e}");
                        }
                    }
                }
            }
            None => {}
        }
    }

    fn framework_message(&mut self, _: &mut SchedulerDriver, task_id: &str, data: Vec<u8>) {
        let (Some(agent), Some(summary)) = (self.board_of(task_id), Summary::decode(&data)) else {
            self.dropped_messages += 1;
            warn!(
                task = task_id,
                len = data.len(),
                dropped = self.dropped_messages,
                "dropped a message"
            );
            return;
        };
        info!(
            agent = %agent,
            readings = summary.readings,
            anomalies = summary.anomalies,
            last = summary.last,
            mean = summary.mean,
            stddev = summary.stddev,
            "summary"
        );
        self.summaries.insert(agent, summary);
    }

    fn agent_lost(&mut self, driver: &mut SchedulerDriver, agent_id: &str) {
        self.unplace(driver, agent_id, "board lost");
    }

    fn error(
        &mut self,
        driver: &mut SchedulerDriver,
        code: ErrorCode,
        offer_id: Option<OfferId>,
        message: &str,
    ) {
        if code == ErrorCode::RegistrationRefused {
            self.fatal = Some(format!("registration refused: {message}"));
            driver.stop();
            return;
        }
        let Some(offer_id) = offer_id else { return };
        let hit = self
            .placements
            .iter()
            .find(|(_, p)| p.state == PlacementState::Launching { offer_id })
            .map(|(a, _)| a.clone());
        if let Some(agent) = hit {
            self.unplace(driver, &agent, message);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bramble_sdk::protocol::{AgentDescription, Call};
    use bramble_sdk::Reason;

    use super::*;

    fn offer(id: OfferId, agent: &str, sensor: Option<&str>) -> Offer {
        Offer {
            offer_id: id,
            agent: Arc::new(AgentDescription {
                agent_id: agent.into(),
                hostname: agent.into(),
                arch: "aarch64".into(),
                attributes: sensor
                    .map(|s| Attribute {
                        key: "sensor".into(),
                        value: s.into(),
                    })
                    .into_iter()
                    .collect(),
            }),
            resources: Resources::new(4000, 4096, 0),
        }
    }

    fn update(task: &str, agent: &str, state: TaskState) -> StatusUpdate {
        StatusUpdate {
            task_id: task.into(),
            agent_id: Some(agent.into()),
            state,
            reason: Reason::None,
            message: String::new(),
            update_id: None,
        }
    }

    fn sensor() -> SensorScheduler {
        SensorScheduler::new(SensorOptions::new(vec![
            "/usr/bin/bramble-sensor".into(),
            "executor".into(),
        ]))
        .unwrap()
    }

    fn accepts(calls: &[Call]) -> Vec<(OfferId, usize)> {
        calls
            .iter()
            .filter_map(|c| match c {
                Call::Accept(a) => Some((a.offer_id, a.tasks.len())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn readers_go_only_on_boards_with_the_sensor_and_others_are_refused_for_long() {
        let mut s = sensor();
        let mut d = SchedulerDriver::new("sensor");
        s.offers(
            &mut d,
            vec![
                offer(1, "plain", None),
                offer(2, "cam", Some("camera")),
                offer(3, "bme", Some("bme280")),
                offer(4, "both", Some("camera,bme280")),
            ],
        );
        let calls = d.take_calls();
        assert_eq!(accepts(&calls), vec![(3, 1), (4, 1)]);
        assert!(
            calls.contains(&Call::Decline(bramble_sdk::protocol::Decline {
                offer_ids: vec![1, 2],
                refuse_seconds: Some(3600),
            }))
        );
        assert_eq!(
            s.placements().keys().cloned().collect::<Vec<_>>(),
            vec!["bme".to_owned(), "both".to_owned()]
        );
        let Call::Accept(a) = &calls[0] else {
            panic!("{calls:?}")
        };
        assert_eq!(
            &a.tasks[0].argv[..4],
            ["/usr/bin/bramble-sensor", "executor", "--source", "auto"]
        );
    }

    #[test]
    fn a_reader_names_the_executor_artifact_and_runs_it_from_its_sandbox() {
        let mut opts = SensorOptions::new(vec!["./bramble-sensor".into(), "executor".into()]);
        let artifact = ArtifactInfo::new(
            "bramble-sensor",
            "http://m:8080/artifacts/bramble-sensor",
            [1; 32],
        )
        .executable();
        opts.executor_artifact = Some(artifact.clone());
        let mut s = SensorScheduler::new(opts).unwrap();
        let mut d = SchedulerDriver::new("sensor");
        s.offers(&mut d, vec![offer(1, "bme", Some("bme280"))]);
        let calls = d.take_calls();
        let Some(Call::Accept(a)) = calls.first() else {
            panic!("the board gets a reader: {calls:?}");
        };
        assert_eq!(a.tasks[0].argv[..2], ["./bramble-sensor", "executor"]);
        assert_eq!(a.tasks[0].artifacts, vec![artifact]);
    }

    #[test]
    fn a_board_that_has_a_reader_gets_no_second_one() {
        let mut s = sensor();
        let mut d = SchedulerDriver::new("sensor");
        s.offers(&mut d, vec![offer(1, "bme", Some("bme280"))]);
        d.take_calls();
        s.offers(&mut d, vec![offer(2, "bme", Some("bme280"))]);
        let calls = d.take_calls();
        assert!(accepts(&calls).is_empty());
        assert!(
            matches!(&calls[0], Call::Decline(x) if x.offer_ids == vec![2] && x.refuse_seconds == Some(600))
        );
        assert_eq!(s.placements().len(), 1);
    }

    #[test]
    fn a_lost_board_is_given_a_new_reader_when_it_offers_again() {
        let mut s = sensor();
        let mut d = SchedulerDriver::new("sensor");
        s.offers(&mut d, vec![offer(1, "bme", Some("bme280"))]);
        s.status_update(&mut d, update("reader-0", "bme", TaskState::Running));
        assert_eq!(s.placements()["bme"].state, PlacementState::Running);
        d.take_calls();
        s.agent_lost(&mut d, "bme");
        assert!(s.placements().is_empty());
        assert_eq!(d.take_calls(), vec![Call::Revive]);
        s.offers(&mut d, vec![offer(2, "bme", Some("bme280"))]);
        assert_eq!(accepts(&d.take_calls()), vec![(2, 1)]);
        assert_eq!(s.placements()["bme"].task_id, "reader-1");
    }

    #[test]
    fn a_failed_reader_is_replaced_and_a_returning_old_one_is_killed() {
        let mut s = sensor();
        let mut d = SchedulerDriver::new("sensor");
        s.offers(&mut d, vec![offer(1, "bme", Some("bme280"))]);
        s.status_update(&mut d, update("reader-0", "bme", TaskState::Unreachable));
        s.offers(&mut d, vec![offer(2, "bme", Some("bme280"))]);
        s.status_update(&mut d, update("reader-1", "bme", TaskState::Running));
        d.take_calls();
        // The old reader's board came back with it still running.
        s.status_update(&mut d, update("reader-0", "bme", TaskState::Running));
        assert_eq!(
            d.take_calls(),
            vec![Call::Kill(bramble_sdk::protocol::Kill {
                task_id: "reader-0".into(),
                grace_ms: 2000
            })]
        );
        assert_eq!(s.placements()["bme"].task_id, "reader-1");
    }

    #[test]
    fn a_refused_accept_frees_the_board_for_another_try() {
        let mut s = sensor();
        let mut d = SchedulerDriver::new("sensor");
        s.offers(&mut d, vec![offer(5, "bme", Some("bme280"))]);
        d.take_calls();
        s.error(&mut d, ErrorCode::AcceptRefused, Some(5), "no");
        assert!(s.placements().is_empty());
        assert_eq!(d.take_calls(), vec![Call::Revive]);
    }

    #[test]
    fn summaries_are_kept_per_board_and_strangers_are_dropped() {
        let mut s = sensor();
        let mut d = SchedulerDriver::new("sensor");
        s.offers(&mut d, vec![offer(1, "bme", Some("bme280"))]);
        let sum = Summary {
            readings: 10,
            anomalies: 0,
            last: 45.0,
            mean: 45.0,
            stddev: 0.2,
            min: 44.6,
            max: 45.4,
        };
        s.framework_message(&mut d, "reader-0", sum.encode());
        s.framework_message(&mut d, "reader-9", sum.encode());
        s.framework_message(&mut d, "reader-0", vec![1]);
        assert_eq!(s.summaries()["bme"], sum);
        assert_eq!(s.dropped_messages, 2);
    }
}
