//! The `pi` scheduler: places the sampling tasks, sums their results, relaunches failures.

use std::collections::BTreeMap;

use bramble_sdk::batch::{Batch, BatchOptions};
use bramble_sdk::protocol::{ErrorCode, Offer, OfferId, StatusUpdate, TaskInfo};
use bramble_sdk::scheduler::{Scheduler, SchedulerDriver};
use bramble_sdk::Resources;
use tracing::{info, warn};

use crate::message::PiResult;

/// What the job looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PiOptions {
    /// How many tasks (default 8).
    pub tasks: u32,
    /// Samples per task (default 2,000,000).
    pub samples: u64,
    /// The job's seed (default 0); task `i` is seeded from it and `i`.
    pub seed: u64,
    /// The command prefix that runs the executor on a board, e.g.
    /// `["/usr/bin/bramble-pi", "executor"]`; the task's arguments follow it.
    pub executor: Vec<String>,
    /// What each task asks for (default 250m CPU, 32 MiB).
    pub resources: Resources,
    /// Relaunches per task before the job fails (default 3).
    pub max_retries: u32,
}

impl PiOptions {
    /// The defaults, with `executor` as the executor prefix.
    pub fn new(executor: Vec<String>) -> Self {
        PiOptions {
            tasks: 8,
            samples: 2_000_000,
            seed: 0,
            executor,
            resources: Resources::new(250, 32, 0),
            max_retries: 3,
        }
    }
}

/// Why the options cannot make a job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PiError {
    /// No executor command.
    #[error("the executor command is empty")]
    NoExecutor,
    /// The executor prefix leaves no room for the task's arguments (16 argv elements at most).
    #[error(
        "the executor command has {0} elements; at most 10 leave room for the task's arguments"
    )]
    ExecutorTooLong(usize),
    /// Zero tasks or zero samples.
    #[error("the job needs at least one task and one sample")]
    Empty,
    /// More tasks than task ids can name.
    #[error("at most 100000 tasks")]
    TooManyTasks,
    /// A task must ask for some CPU and memory.
    #[error("each task must ask for some CPU and memory")]
    NoResources,
}

/// The `pi` scheduler. See the crate docs.
#[derive(Debug)]
pub struct PiScheduler {
    opts: PiOptions,
    batch: Batch,
    results: BTreeMap<u32, PiResult>,
    fatal: Option<String>,
    /// Framework messages dropped because they did not decode or did not fit the job.
    pub dropped_messages: u64,
}

impl PiScheduler {
    /// A job from `opts`.
    pub fn new(opts: PiOptions) -> Result<Self, PiError> {
        if opts.executor.is_empty() {
            return Err(PiError::NoExecutor);
        }
        if opts.executor.len() > 10 {
            return Err(PiError::ExecutorTooLong(opts.executor.len()));
        }
        if opts.tasks == 0 || opts.samples == 0 {
            return Err(PiError::Empty);
        }
        if opts.tasks > 100_000 {
            return Err(PiError::TooManyTasks);
        }
        if opts.resources.cpu_millis == 0 || opts.resources.mem_mib == 0 {
            return Err(PiError::NoResources);
        }
        let batch = Batch::new(BatchOptions {
            prefix: "pi".into(),
            items: opts.tasks,
            resources: opts.resources,
            max_retries: opts.max_retries,
        });
        Ok(PiScheduler {
            opts,
            batch,
            results: BTreeMap::new(),
            fatal: None,
            dropped_messages: 0,
        })
    }

    /// The estimate from the results in so far, or `None` before the first.
    pub fn estimate(&self) -> Option<f64> {
        let (inside, total) = self.samples();
        (total > 0).then(|| 4.0 * inside as f64 / total as f64)
    }

    /// Samples inside the quarter circle, and samples in all, over the results in so far.
    pub fn samples(&self) -> (u64, u64) {
        self.results.values().fold((0, 0), |(i, t), r| {
            (i.saturating_add(r.inside), t.saturating_add(r.total))
        })
    }

    /// Tasks done, and tasks in all.
    pub fn progress(&self) -> (u32, u32) {
        self.batch.progress()
    }

    /// True once every task's result is in.
    pub fn is_complete(&self) -> bool {
        self.batch.is_done()
    }

    /// Why the job failed (a task out of retries, registration refused), if it did.
    pub fn failure(&self) -> Option<&str> {
        self.fatal.as_deref().or(self.batch.failure())
    }

    fn fail(&mut self, driver: &mut SchedulerDriver) {
        if let Some(why) = self.failure() {
            warn!("the job failed: {why}");
        }
        driver.stop();
    }
}

/// The command of task `index`: the executor prefix and the task's arguments.
fn task(opts: &PiOptions, index: u32, task_id: &str) -> TaskInfo {
    let mut argv = opts.executor.clone();
    argv.extend([
        "--index".to_owned(),
        index.to_string(),
        "--samples".to_owned(),
        opts.samples.to_string(),
        "--seed".to_owned(),
        opts.seed.to_string(),
    ]);
    TaskInfo {
        task_id: task_id.to_owned(),
        argv,
        env: Vec::new(),
        resources: opts.resources,
        artifacts: Vec::new(),
    }
}

impl Scheduler for PiScheduler {
    fn registered(&mut self, _: &mut SchedulerDriver, framework_id: &str, _: u64) {
        info!(
            framework_id,
            tasks = self.opts.tasks,
            samples = self.opts.samples,
            "pi job registered"
        );
    }

    fn offers(&mut self, driver: &mut SchedulerDriver, offers: Vec<Offer>) {
        let opts = &self.opts;
        self.batch
            .offers(driver, offers, |index, id| task(opts, index, id));
    }

    fn status_update(&mut self, driver: &mut SchedulerDriver, update: StatusUpdate) {
        info!(task = %update.task_id, state = update.state.as_str(), "update");
        if self.batch.status_update(driver, &update) {
            self.fail(driver);
        }
    }

    fn framework_message(&mut self, driver: &mut SchedulerDriver, task_id: &str, data: Vec<u8>) {
        let index = self.batch.parse_task_id(task_id).map(|(i, _)| i);
        let result = match PiResult::decode(&data) {
            Some(r) if Some(r.index) == index && r.total == self.opts.samples => r,
            _ => {
                self.dropped_messages += 1;
                warn!(
                    task = task_id,
                    len = data.len(),
                    dropped = self.dropped_messages,
                    "dropped a result that does not fit the job"
                );
                return;
            }
        };
        if self.batch.complete(result.index) {
            self.results.insert(result.index, result);
            let (done, total) = self.progress();
            info!(task = task_id, done, total, estimate = ?self.estimate(), "result in");
            if self.batch.is_done() {
                driver.stop();
            }
        }
    }

    fn agent_lost(&mut self, driver: &mut SchedulerDriver, agent_id: &str) {
        if self.batch.agent_lost(driver, agent_id) {
            self.fail(driver);
        }
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
            self.fail(driver);
        } else if self.batch.error(driver, code, offer_id, message) {
            self.fail(driver);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bramble_sdk::protocol::{AgentDescription, Call};
    use bramble_sdk::{Reason, TaskState};

    use super::*;

    fn offer(id: OfferId, agent: &str, cpu: u32, mem: u32) -> Offer {
        Offer {
            offer_id: id,
            agent: Arc::new(AgentDescription {
                agent_id: agent.into(),
                hostname: agent.into(),
                arch: "aarch64".into(),
                attributes: vec![],
            }),
            resources: Resources::new(cpu, mem, 0),
        }
    }

    fn update(task: &str, state: TaskState) -> StatusUpdate {
        StatusUpdate {
            task_id: task.into(),
            agent_id: Some("a".into()),
            state,
            reason: Reason::None,
            message: String::new(),
            update_id: None,
        }
    }

    fn pi(tasks: u32) -> PiScheduler {
        let mut o = PiOptions::new(vec!["/usr/bin/bramble-pi".into(), "executor".into()]);
        o.tasks = tasks;
        o.samples = 1000;
        PiScheduler::new(o).unwrap()
    }

    fn result(index: u32, inside: u64) -> Vec<u8> {
        PiResult {
            index,
            inside,
            total: 1000,
        }
        .encode()
    }

    #[test]
    fn tasks_are_packed_into_offers_with_the_executor_command_and_suppressed_when_placed() {
        let mut s = pi(3);
        let mut d = SchedulerDriver::new("pi");
        s.offers(
            &mut d,
            vec![offer(1, "a", 500, 1024), offer(2, "b", 4000, 4096)],
        );
        let calls = d.take_calls();
        let Call::Accept(a) = &calls[0] else {
            panic!("{calls:?}")
        };
        assert_eq!(a.offer_id, 1);
        assert_eq!(a.tasks.len(), 2);
        assert_eq!(
            a.tasks[0].argv,
            [
                "/usr/bin/bramble-pi",
                "executor",
                "--index",
                "0",
                "--samples",
                "1000",
                "--seed",
                "0"
            ]
        );
        assert!(matches!(&calls[1], Call::Accept(a) if a.offer_id == 2 && a.tasks.len() == 1));
        assert_eq!(calls[2], Call::Suppress);
    }

    #[test]
    fn results_are_summed_once_each_and_the_scheduler_stops_when_all_are_in() {
        let mut s = pi(2);
        let mut d = SchedulerDriver::new("pi");
        d.set_registered("f", 1);
        s.offers(&mut d, vec![offer(1, "a", 4000, 4096)]);
        d.take_calls();
        s.framework_message(&mut d, "pi-0-0", result(0, 790));
        s.framework_message(&mut d, "pi-0-0", result(0, 790));
        assert_eq!(s.progress(), (1, 2));
        assert!(!d.is_stopping());
        s.framework_message(&mut d, "pi-1-0", result(1, 780));
        assert!(s.is_complete());
        assert_eq!(s.samples(), (1570, 2000));
        assert_eq!(s.estimate(), Some(4.0 * 1570.0 / 2000.0));
        assert!(d.is_stopping());
    }

    #[test]
    fn results_that_do_not_fit_the_job_are_dropped_and_counted() {
        let mut s = pi(2);
        let mut d = SchedulerDriver::new("pi");
        s.framework_message(&mut d, "pi-0-0", result(1, 10));
        s.framework_message(&mut d, "pi-0-0", vec![0xFF]);
        s.framework_message(&mut d, "other", result(0, 10));
        assert_eq!(s.dropped_messages, 3);
        assert_eq!(s.progress(), (0, 2));
    }

    #[test]
    fn a_failed_task_is_relaunched_under_a_new_id_and_the_job_fails_after_its_retries() {
        let mut o = PiOptions::new(vec!["x".into()]);
        o.tasks = 1;
        o.max_retries = 1;
        let mut s = PiScheduler::new(o).unwrap();
        let mut d = SchedulerDriver::new("pi");
        s.offers(&mut d, vec![offer(1, "a", 4000, 4096)]);
        d.take_calls();
        s.status_update(&mut d, update("pi-0-0", TaskState::Failed));
        assert_eq!(d.take_calls(), vec![Call::Revive]);
        s.offers(&mut d, vec![offer(2, "a", 4000, 4096)]);
        let calls = d.take_calls();
        assert!(matches!(&calls[0], Call::Accept(a) if a.tasks[0].task_id == "pi-0-1"));
        s.status_update(&mut d, update("pi-0-1", TaskState::Error));
        assert!(s.failure().is_some());
        assert!(d.is_stopping());
    }

    #[test]
    fn tasks_on_a_lost_agent_are_placed_again_on_the_next_offer() {
        let mut s = pi(1);
        let mut d = SchedulerDriver::new("pi");
        s.offers(&mut d, vec![offer(1, "a", 4000, 4096)]);
        s.status_update(&mut d, update("pi-0-0", TaskState::Running));
        d.take_calls();
        s.agent_lost(&mut d, "a");
        assert_eq!(d.take_calls(), vec![Call::Revive]);
        s.offers(&mut d, vec![offer(2, "b", 4000, 4096)]);
        assert!(matches!(&d.take_calls()[0], Call::Accept(a) if a.offer_id == 2));
    }

    #[test]
    fn bad_options_are_refused() {
        assert_eq!(
            PiScheduler::new(PiOptions::new(vec![])).unwrap_err(),
            PiError::NoExecutor
        );
        let mut o = PiOptions::new(vec!["x".into()]);
        o.tasks = 0;
        assert_eq!(PiScheduler::new(o).unwrap_err(), PiError::Empty);
    }
}
