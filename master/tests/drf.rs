//! Two frameworks share a real cluster by DRF over MQTT: the embedded broker, the master, three agents
//! running real `sleep` processes in cgroups (when it can), and two greedy schedulers through the SDK.
//! Their dominant shares converge: each ends holding the same share of its dominant resource.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_nostd_core::Resources;
use bramble::cluster::{AgentSpec, ClusterBroker, ClusterOptions, LocalCluster};
use bramble::demo::scheduler_config;
use bramble_master_core::allocator::Amount;
use bramble_master_core::Config;
use bramble_proto::{Offer, StatusUpdate, TaskInfo};
use bramble_sdk::scheduler::{self, Scheduler, SchedulerDriver};

mod support;
use support::{cluster_options, free_port, runtime};

/// Each agent: 1 GiB of memory and 1 GiB of disk (and a little CPU), so the cluster has 3 GiB of
/// each. CPU stays out of the contest: what an agent offers of it follows the machine's measured
/// load, which other processes change.
const AGENT: Resources = Resources::new(200, 1_024, 1_024);
/// Memory-heavy tasks. Sized so that an agent holds at most 3 of a kind, and while it holds fewer
/// than 3 of a kind another of that kind still fits: the only full cluster is 3 of each on every
/// agent, whatever order the tasks land in.
const MEM_TASK: Resources = Resources::new(10, 300, 40);
/// Disk-heavy tasks, the mirror image of [`MEM_TASK`].
const DISK_TASK: Resources = Resources::new(10, 40, 300);
/// Each framework's dominant share when the cluster is full: 9 tasks of 300 MiB out of 3 GiB.
const FULL_SHARE: f64 = 9.0 * 300.0 / 3_072.0;
/// One task's dominant share.
const TASK_SHARE: f64 = 300.0 / 3_072.0;

/// Launches one long task of its size on every offer it fits (like the DRF paper's progressive
/// filling, one task at a time), and declines the rest. It declines everything until `contest_open`:
/// without preemption, a framework that registers first would otherwise fill the cluster alone.
struct Filler {
    prefix: &'static str,
    task: Resources,
    launched: usize,
    contest_open: Arc<AtomicBool>,
}

impl Scheduler for Filler {
    fn offers(&mut self, driver: &mut SchedulerDriver, offers: Vec<Offer>) {
        for offer in offers {
            if self.contest_open.load(Ordering::SeqCst) && self.task.fits_in(&offer.resources) {
                let id = format!("{}{}", self.prefix, self.launched);
                self.launched += 1;
                let task = TaskInfo::new(&id, &["sleep", "600"], self.task);
                let _ = driver.launch(offer.offer_id, vec![task]);
            } else {
                let _ = driver.decline(vec![offer.offer_id], Some(1));
            }
        }
    }

    fn status_update(&mut self, _driver: &mut SchedulerDriver, update: StatusUpdate) {
        assert!(
            !update.state.is_terminal(),
            "{} ended early: {:?} {}",
            update.task_id,
            update.state,
            update.message
        );
    }
}

/// The dominant share of `allocated` in a cluster of `total`.
fn dominant_share(allocated: &Amount, total: &Amount) -> f64 {
    let cpu = allocated.cpu_millis as f64 / total.cpu_millis as f64;
    let mem = allocated.mem_mib as f64 / total.mem_mib as f64;
    let disk = allocated.disk_mib as f64 / total.disk_mib as f64;
    cpu.max(mem).max(disk)
}

#[test]
fn two_frameworks_with_different_dominant_resources_converge_to_equal_shares_over_mqtt() {
    let runtime = runtime();
    runtime.block_on(async {
        let work = tempfile::tempdir().unwrap();
        let port = free_port();
        let agents = ["drf-a", "drf-b", "drf-c"]
            .iter()
            .map(|id| AgentSpec {
                id: (*id).to_owned(),
                attributes: vec![],
                capacity: AGENT,
            })
            .collect();
        let broker = ClusterBroker::Embedded(format!("127.0.0.1:{port}").parse().unwrap());
        let mut cluster = LocalCluster::start(ClusterOptions {
            master: Config {
                allocation_interval_ms: 100,
                ..Config::default()
            },
            ..cluster_options(broker, work.path(), agents)
        })
        .unwrap();
        tokio::time::timeout(Duration::from_secs(30), cluster.wait_for_agents(3))
            .await
            .expect("3 agents register");
        let total = Amount {
            cpu_millis: 3 * u64::from(AGENT.cpu_millis),
            mem_mib: 3 * u64::from(AGENT.mem_mib),
            disk_mib: 3 * u64::from(AGENT.disk_mib),
        };

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let contest_open = Arc::new(AtomicBool::new(false));
        let run = |name: &'static str, prefix: &'static str, task: Resources| {
            let mut stop = stop_rx.clone();
            let filler = Filler {
                prefix,
                task,
                launched: 0,
                contest_open: contest_open.clone(),
            };
            tokio::spawn(scheduler::run_until(
                scheduler_config(&cluster.broker, name, name),
                filler,
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            ))
        };
        let mem_fw = run("drf-mem", "m", MEM_TASK);
        let disk_fw = run("drf-disk", "d", DISK_TASK);
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if cluster.snapshots.borrow_and_update().frameworks.len() == 2 {
                    return;
                }
                cluster.snapshots.changed().await.unwrap();
            }
        })
        .await
        .expect("both frameworks register");
        contest_open.store(true, Ordering::SeqCst);

        // Per agent, 3 of each fit (1,020 MiB of memory and of disk) and nothing more: DRF alternates
        // the two frameworks until the cluster is full, 9 tasks and the same dominant share each.
        let mut trajectory = Vec::new();
        let converged = tokio::time::timeout(Duration::from_secs(90), async {
            loop {
                cluster.snapshots.changed().await.unwrap();
                let snap = cluster.snapshots.borrow_and_update().clone();
                let mut shares: Vec<(String, usize, f64)> = snap
                    .frameworks
                    .iter()
                    .map(|f| {
                        (
                            f.name.clone(),
                            f.tasks,
                            dominant_share(&f.allocated, &total),
                        )
                    })
                    .collect();
                shares.sort_by(|a, b| a.0.cmp(&b.0));
                trajectory.push(shares.clone());
                if shares.len() == 2 && shares.iter().all(|s| s.1 == 9) {
                    return shares;
                }
            }
        })
        .await;
        let shares = match converged {
            Ok(shares) => shares,
            Err(_) => panic!("no convergence in 90 s; shares seen: {trajectory:?}"),
        };
        for (name, tasks, share) in &shares {
            assert_eq!(*tasks, 9, "{name}");
            assert!((share - FULL_SHARE).abs() < 1e-9, "{name} holds {share}");
        }
        // On the way, neither framework got ahead by more than one task per agent.
        for step in &trajectory {
            if let [(_, _, a), (_, _, b)] = step[..] {
                assert!(
                    (a - b).abs() <= 3.0 * TASK_SHARE + 1e-9,
                    "shares drifted apart: {trajectory:?}"
                );
            }
        }

        stop_tx.send(true).unwrap();
        for fw in [mem_fw, disk_fw] {
            tokio::time::timeout(Duration::from_secs(30), fw)
                .await
                .expect("the framework stops")
                .unwrap()
                .unwrap();
        }
        assert!(
            cluster.wait_for_no_tasks(Duration::from_secs(30)).await,
            "the frameworks' tasks are killed when they stop"
        );
        cluster.stop().await;
    });
}
