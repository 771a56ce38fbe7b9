//! Framework accept → RUNNING seen by the framework, for short tasks on loopback through the embedded
//! broker: a local cluster (broker, master, 3 agents running real processes), and a scheduler that
//! accepts every offer with as many `true` tasks as fit and times each task from its accept to its
//! TASK_RUNNING update. Prints p50, p90, p99 and max.
//!
//! ```sh
//! cargo bench -p bramble --bench launch_latency            # 1,000 tasks
//! cargo bench -p bramble --bench launch_latency -- 5000    # another count
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use agent_nostd_core::wire::TaskState;
use agent_nostd_core::Resources;
use bramble::cluster::{AgentSpec, ClusterBroker, ClusterOptions, LocalCluster};
use bramble::demo::scheduler_config;
use bramble::Config;
use bramble_sdk::protocol::{Offer, StatusUpdate, TaskInfo};
use bramble_sdk::scheduler::{self, Scheduler, SchedulerDriver};

const TASK: Resources = Resources::new(10, 4, 0);

struct Timer {
    wanted: usize,
    launched: usize,
    accepted_at: HashMap<String, Instant>,
    latencies: Vec<Duration>,
    ended: usize,
}

impl Scheduler for Timer {
    fn offers(&mut self, driver: &mut SchedulerDriver, offers: Vec<Offer>) {
        for offer in offers {
            let fit = (offer.resources.cpu_millis / TASK.cpu_millis)
                .min(offer.resources.mem_mib / TASK.mem_mib) as usize;
            let n = fit.min(8).min(self.wanted - self.launched);
            if n == 0 {
                let _ = driver.decline(vec![offer.offer_id], Some(1));
                continue;
            }
            let tasks: Vec<TaskInfo> = (0..n)
                .map(|i| TaskInfo {
                    task_id: format!("t{}", self.launched + i),
                    argv: vec!["true".into()],
                    env: vec![],
                    resources: TASK,
                })
                .collect();
            let now = Instant::now();
            for t in &tasks {
                self.accepted_at.insert(t.task_id.clone(), now);
            }
            self.launched += n;
            let _ = driver.launch(offer.offer_id, tasks);
        }
    }

    fn status_update(&mut self, driver: &mut SchedulerDriver, update: StatusUpdate) {
        if update.state == TaskState::Running {
            if let Some(at) = self.accepted_at.remove(&update.task_id) {
                self.latencies.push(at.elapsed());
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
    let wanted: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1000);
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
        };
        let mut cluster = LocalCluster::start(options).unwrap();
        cluster.wait_for_agents(3).await;
        let timer = Timer {
            wanted,
            launched: 0,
            accepted_at: HashMap::new(),
            latencies: Vec::with_capacity(wanted),
            ended: 0,
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
            "accept -> RUNNING for {} tasks (3 agents, loopback, embedded broker)",
            l.len()
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
