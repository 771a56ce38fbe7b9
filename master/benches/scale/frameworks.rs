//! The frameworks the bench drives: `bramble run -- /bin/true` (the real CLI, its stderr lines
//! timed as they arrive), and placers, SDK schedulers that accept every offer with as many small
//! tasks as fit and count the updates that come back.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_nostd_core::wire::TaskState;
use agent_nostd_core::Resources;
use bramble_proto::{ErrorCode, Offer, OfferId, StatusUpdate, TaskInfo};
use bramble_sdk::scheduler::{Scheduler, SchedulerDriver};

use crate::procs::BRAMBLE;

/// A placer's task: a quarter core and 256 MiB, so 16 fit on a simulated board.
pub const TASK: Resources = Resources::new(250, 256, 0);

/// What one `bramble run` showed.
#[derive(Debug)]
pub struct RunTiming {
    /// From its start to its "launching" line (registration and the first offer).
    pub to_accept: Option<Duration>,
    /// From its "launching" line (the accept) to its TASK_RUNNING line.
    pub accept_to_running: Option<Duration>,
    /// From its start to its exit.
    pub total: Duration,
    /// Its exit status, `None` if it was killed at the deadline.
    pub status: Option<i32>,
    /// Its last stderr lines, for a failure message.
    pub last_lines: Vec<String>,
}

/// Runs `bramble run --broker URL -- /bin/true` and times its stderr lines, killing it after
/// `deadline`. It finds no operator credential (its HOME is `home`), so it signs with the
/// anonymous key.
pub fn bramble_run(broker_url: &str, home: &std::path::Path, deadline: Duration) -> RunTiming {
    let started = Instant::now();
    let mut child = Command::new(BRAMBLE)
        .args(["run", "--broker", broker_url, "--", "/bin/true"])
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home)
        .env_remove("BRAMBLE_CREDENTIAL")
        .env_remove("BRAMBLE_BROKER")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bramble run starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .map(|l| (Instant::now(), l))
            .collect::<Vec<_>>()
    });
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code();
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let total = started.elapsed();
    let lines = reader.join().unwrap_or_default();
    let at = |needle: &str| {
        lines
            .iter()
            .find(|(_, l)| l.contains(needle))
            .map(|(at, _)| *at)
    };
    let accepted = at("launching");
    let running = at("TASK_RUNNING");
    RunTiming {
        to_accept: accepted.map(|a| a.duration_since(started)),
        accept_to_running: accepted.zip(running).map(|(a, r)| r.duration_since(a)),
        total,
        status,
        last_lines: lines
            .iter()
            .rev()
            .take(5)
            .rev()
            .map(|(_, l)| l.clone())
            .collect(),
    }
}

/// What all the placers saw, summed.
#[derive(Debug, Default)]
pub struct PlaceCounters {
    /// Offers received.
    pub offers: AtomicU64,
    /// Tasks sent in accepts.
    pub launched: AtomicU64,
    /// Tasks seen placed: their first TASK_RUNNING or TASK_FINISHED (the master may shed a
    /// RUNNING update to a framework under load, so RUNNING alone undercounts).
    pub placed: AtomicU64,
    /// TASK_RUNNING updates (copies included).
    pub running: AtomicU64,
    /// TASK_FINISHED updates (copies included).
    pub finished: AtomicU64,
    /// Other terminal updates (failed, lost, error, …).
    pub other_ends: AtomicU64,
    /// Accepts the master refused.
    pub refused: AtomicU64,
    /// The first task that ended other than finished, and how.
    pub first_other_end: std::sync::Mutex<Option<String>>,
}

impl PlaceCounters {
    /// The current value of `field`.
    pub fn get(field: &AtomicU64) -> u64 {
        field.load(Ordering::Relaxed)
    }

    /// The first task that ended other than finished, and how.
    pub fn first_other_end(&self) -> Option<String> {
        self.first_other_end.lock().ok()?.clone()
    }
}

/// A scheduler that fills every offer with [`TASK`]s, `true` each, for as long as it runs.
pub struct Placer {
    counters: Arc<PlaceCounters>,
    next_id: u64,
    /// How many tasks each outstanding accept carried, until RUNNING comes or it is refused.
    by_offer: HashMap<OfferId, u64>,
    /// Tasks seen placed (RUNNING or FINISHED): updates are delivered at least once, and a
    /// task's FINISHED comes again while its acknowledgement is lost.
    placed: HashSet<String>,
}

impl Placer {
    /// A placer adding to `counters`.
    pub fn new(counters: Arc<PlaceCounters>) -> Self {
        Placer {
            counters,
            next_id: 0,
            by_offer: HashMap::new(),
            placed: HashSet::new(),
        }
    }
}

impl Scheduler for Placer {
    fn offers(&mut self, driver: &mut SchedulerDriver, offers: Vec<Offer>) {
        self.counters
            .offers
            .fetch_add(offers.len() as u64, Ordering::Relaxed);
        let mut decline = Vec::new();
        for offer in offers {
            let fit = (offer.resources.cpu_millis / TASK.cpu_millis)
                .min(offer.resources.mem_mib / TASK.mem_mib) as u64;
            if fit == 0 {
                decline.push(offer.offer_id);
                continue;
            }
            let first = self.next_id;
            self.next_id += fit;
            let tasks: Vec<TaskInfo> = (first..first + fit)
                .map(|i| TaskInfo::new(&format!("p{i}"), &["true"], TASK))
                .collect();
            if driver.launch(offer.offer_id, tasks).is_ok() {
                self.counters.launched.fetch_add(fit, Ordering::Relaxed);
                if self.by_offer.len() > 100_000 {
                    self.by_offer.clear();
                }
                self.by_offer.insert(offer.offer_id, fit);
            }
        }
        if !decline.is_empty() {
            let _ = driver.decline(decline, Some(1));
        }
    }

    fn error(
        &mut self,
        _driver: &mut SchedulerDriver,
        code: ErrorCode,
        offer_id: Option<OfferId>,
        _message: &str,
    ) {
        if code == ErrorCode::AcceptRefused {
            let n = offer_id
                .and_then(|id| self.by_offer.remove(&id))
                .unwrap_or(0);
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            self.counters.launched.fetch_sub(n, Ordering::Relaxed);
        }
    }

    fn status_update(&mut self, _driver: &mut SchedulerDriver, update: StatusUpdate) {
        let c = &self.counters;
        match update.state {
            TaskState::Running | TaskState::Finished => {
                if !self.placed.contains(&update.task_id) {
                    self.placed.insert(update.task_id.clone());
                    c.placed.fetch_add(1, Ordering::Relaxed);
                }
                if update.state == TaskState::Running {
                    c.running.fetch_add(1, Ordering::Relaxed)
                } else {
                    c.finished.fetch_add(1, Ordering::Relaxed)
                }
            }
            s if s.is_terminal() => {
                if let Ok(mut first) = c.first_other_end.lock() {
                    first.get_or_insert_with(|| {
                        format!(
                            "{} {} on {:?} ({:?}): {}",
                            update.task_id,
                            s.as_str(),
                            update.agent_id,
                            update.reason,
                            update.message
                        )
                    });
                }
                c.other_ends.fetch_add(1, Ordering::Relaxed)
            }
            _ => 0,
        };
    }
}
