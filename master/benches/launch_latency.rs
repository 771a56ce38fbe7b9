//! Framework accept → RUNNING seen by the framework, for short tasks on loopback through the embedded
//! broker: a local cluster (broker, master, 3 agents running real processes), and a scheduler that
//! accepts offers with `true` tasks and times each task from its accept to its TASK_RUNNING update.
//! It runs twice: with one task in flight at a time (the launch path alone) and with up to 8 (agents
//! launch one process at a time, so queueing adds to the path). Prints p50, p90, p99 and max.
//!
//! Agents keep a warm spare (a task process ready in its cgroup) unless `--cold` is given, which
//! measures every launch on the cold path (a new supervisor, a new cgroup, the first attach).
//!
//! ```sh
//! cargo bench -p bramble --bench launch_latency            # 1,000 tasks
//! cargo bench -p bramble --bench launch_latency -- 5000    # another count
//! cargo bench -p bramble --bench launch_latency -- 1000 --cold
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use agent_nostd_core::wire::TaskState;
use agent_nostd_core::Resources;
use bramble::cluster::{AgentSpec, ClusterBroker, ClusterOptions, LocalCluster};
use bramble::demo::scheduler_config;
use bramble_master_core::Config;
use bramble_proto::{ErrorCode, Offer, OfferId, StatusUpdate, TaskInfo};
use bramble_sdk::scheduler::{self, Scheduler, SchedulerDriver};

const TASK: Resources = Resources::new(10, 4, 0);

struct Timer {
    wanted: usize,
    /// Tasks accepted but not yet RUNNING at most (1 measures the path alone; more adds queueing).
    in_flight: usize,
    /// Tasks accepted and not refused.
    launched: usize,
    next_id: usize,
    /// The tasks of each accept, until the master refuses it or they run.
    by_offer: HashMap<OfferId, Vec<String>>,
    accepted_at: HashMap<String, Instant>,
    latencies: Vec<Duration>,
    ended: usize,
    /// Offers are suppressed while at the in-flight limit.
    suppressed: bool,
}

impl Scheduler for Timer {
    fn offers(&mut self, driver: &mut SchedulerDriver, offers: Vec<Offer>) {
        for offer in offers {
            let fit = (offer.resources.cpu_millis / TASK.cpu_millis)
                .min(offer.resources.mem_mib / TASK.mem_mib) as usize;
            let flying = self.accepted_at.len();
            let n = fit
                .min(self.in_flight.saturating_sub(flying))
                .min(self.wanted - self.launched);
            if n == 0 {
                // At the in-flight limit: hand the offer back and ask for no more until a task
                // runs (a decline filter would hold the next launch back by its whole period).
                let _ = driver.decline(vec![offer.offer_id], Some(0));
                if !self.suppressed {
                    self.suppressed = true;
                    let _ = driver.suppress();
                }
                continue;
            }
            let first = self.next_id;
            self.next_id += n;
            let tasks: Vec<TaskInfo> = (first..first + n)
                .map(|i| TaskInfo {
                    task_id: format!("t{i}"),
                    argv: vec!["true".into()],
                    env: vec![],
                    resources: TASK,
                    artifacts: Vec::new(),
                })
                .collect();
            let now = Instant::now();
            for t in &tasks {
                self.accepted_at.insert(t.task_id.clone(), now);
            }
            self.launched += n;
            self.by_offer.insert(
                offer.offer_id,
                tasks.iter().map(|t| t.task_id.clone()).collect(),
            );
            let _ = driver.launch(offer.offer_id, tasks);
        }
    }

    /// A refused accept (e.g. the agent's task table would overflow): its tasks go back to the
    /// pool and are launched on a later offer.
    fn error(
        &mut self,
        driver: &mut SchedulerDriver,
        code: ErrorCode,
        offer_id: Option<OfferId>,
        _message: &str,
    ) {
        if code != ErrorCode::AcceptRefused {
            return;
        }
        if let Some(tasks) = offer_id.and_then(|id| self.by_offer.remove(&id)) {
            for t in &tasks {
                self.accepted_at.remove(t);
            }
            self.launched -= tasks.len();
            if self.suppressed {
                self.suppressed = false;
                let _ = driver.revive();
            }
        }
    }

    fn status_update(&mut self, driver: &mut SchedulerDriver, update: StatusUpdate) {
        if update.state == TaskState::Running {
            if let Some(at) = self.accepted_at.remove(&update.task_id) {
                self.latencies.push(at.elapsed());
            }
            if self.suppressed && self.launched < self.wanted {
                self.suppressed = false;
                let _ = driver.revive();
            }
        }
        if update.state.is_terminal() {
            self.ended += 1;
            if update.state != TaskState::Finished {
                eprintln!(
                    "{} ended {:?}: {}",
                    update.task_id, update.state, update.message
                );
            }
        }
        if self.ended % 100 == 0 {
            eprintln!(
                "launched {} running {} ended {}",
                self.launched,
                self.latencies.len(),
                self.ended
            );
        }
        if self.ended >= self.wanted {
            driver.stop();
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BRAMBLE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error,rumqttd=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let numbers: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let wanted = numbers.first().copied().unwrap_or(1000);
    let warm = !std::env::args().any(|a| a == "--cold");
    for in_flight in [1, 8] {
        measure(wanted, in_flight, warm);
    }
}

fn measure(wanted: usize, in_flight: usize, warm: bool) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let work = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let agents = ["a", "b", "c"]
            .iter()
            .map(|id| AgentSpec {
                id: format!("bench-{id}"),
                attributes: vec![],
                capacity: Resources::new(1000, 512, 1024),
            })
            .collect();
        let options = ClusterOptions {
            broker: ClusterBroker::Embedded(format!("127.0.0.1:{port}").parse().unwrap()),
            agents,
            work_dir: work.path().to_owned(),
            supervisor: PathBuf::from(env!("CARGO_BIN_EXE_bramble")),
            master: Config {
                allocation_interval_ms: 50,
                ..Config::default()
            },
            warm_spares: if warm {
                bramble_agent::config::DEFAULT_WARM_SPARES
            } else {
                0
            },
            credential_store: None,
        };
        let mut cluster = LocalCluster::start(options).unwrap();
        cluster.wait_for_agents(3).await;
        let timer = Timer {
            wanted,
            in_flight,
            launched: 0,
            next_id: 0,
            by_offer: HashMap::new(),
            accepted_at: HashMap::new(),
            latencies: Vec::with_capacity(wanted),
            ended: 0,
            suppressed: false,
        };
        let started = Instant::now();
        let done = scheduler::run(
            scheduler_config(&cluster.broker, "latency", "latency"),
            timer,
        )
        .await
        .unwrap();
        let elapsed = started.elapsed();
        let mut l = done.latencies;
        l.sort();
        println!(
            "accept -> RUNNING for {} tasks, at most {in_flight} in flight (3 agents, loopback, embedded broker, {})",
            l.len(),
            if warm { "warm spares" } else { "cold launches" }
        );
        for (name, p) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
            println!("  {name}: {:.2} ms", percentile(&l, p).as_secs_f64() * 1e3);
        }
        println!("  max: {:.2} ms", l.last().unwrap().as_secs_f64() * 1e3);
        println!(
            "  {} tasks launched and finished in {:.1} s ({:.0} tasks/s through real processes)",
            wanted,
            elapsed.as_secs_f64(),
            wanted as f64 / elapsed.as_secs_f64()
        );
        cluster.stop().await;
    });
}
