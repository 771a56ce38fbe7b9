//! The status topics end to end: the embedded broker, the master, real agents and a framework; a
//! plain MQTT client (a fresh subscription to `bramble/v1/status/#` each time, so it sees exactly the
//! retained state) checks what a dashboard would see; and the `bramble` CLI reads the same topics.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_nostd_core::Resources;
use bramble::cluster::{AgentSpec, ClusterBroker, ClusterOptions, LocalCluster};
use bramble::driver::BrokerAddr;
use bramble::query::StatusSnapshot;
use bramble_master_core::Config;
use bramble_proto::{Offer, OfferId, Register, StatusUpdate, TaskInfo};
use bramble_sdk::scheduler::{self, Scheduler, SchedulerConfig, SchedulerDriver};
use serde_json::Value;

mod support;
use support::{
    bramble_cli, broker_url, cluster_options, free_port, kill_processes_below, retained_until,
    runtime, AgentProcess, BRAMBLE,
};
/// One agent, `plain` (`room=attic`), with `master` (else the support's master config).
fn start_cluster(work: &Path, master: Option<Config>) -> LocalCluster {
    let broker = ClusterBroker::Embedded(format!("127.0.0.1:{}", free_port()).parse().unwrap());
    let agents = vec![AgentSpec {
        id: "plain".into(),
        attributes: vec![("room".into(), "attic".into())],
        capacity: Resources::new(1000, 512, 1024),
    }];
    let options = cluster_options(broker, work, agents);
    LocalCluster::start(ClusterOptions {
        master: master.unwrap_or(options.master.clone()),
        ..options
    })
    .unwrap()
}

/// [`start_cluster`] with the default master, once `plain` has registered.
async fn cluster_with_its_agent(work: &Path) -> LocalCluster {
    let mut cluster = start_cluster(work, None);
    tokio::time::timeout(Duration::from_secs(30), cluster.wait_for_agents(1))
        .await
        .expect("the agent registers");
    cluster
}
/// Launches `ok` (exits 0) and `bad` (exits 3) on `plain`, `long` (sleeps) on `doomed`, and
/// declines everything else; remembers every offer it answered.
#[derive(Default)]
struct Plan {
    plain_done: bool,
    doomed_done: bool,
    answered: Arc<Mutex<BTreeSet<OfferId>>>,
}

impl Scheduler for Plan {
    fn offers(&mut self, driver: &mut SchedulerDriver, offers: Vec<Offer>) {
        let r = Resources::new(250, 16, 0);
        for o in offers {
            self.answered.lock().unwrap().insert(o.offer_id);
            let tasks = match o.agent.agent_id.as_str() {
                "plain" if !self.plain_done => {
                    self.plain_done = true;
                    vec![
                        TaskInfo::new("ok", &["/bin/true"], r),
                        TaskInfo::new("bad", &["/bin/sh", "-c", "exit 3"], r),
                    ]
                }
                "doomed" if !self.doomed_done => {
                    self.doomed_done = true;
                    vec![TaskInfo::new("long", &["/bin/sleep", "600"], r)]
                }
                _ => vec![],
            };
            let answered = if tasks.is_empty() {
                driver.decline(vec![o.offer_id], Some(1))
            } else {
                driver.launch(o.offer_id, tasks)
            };
            answered.unwrap();
        }
    }

    fn status_update(&mut self, _: &mut SchedulerDriver, _: StatusUpdate) {}
}

fn agent<'a>(s: &'a StatusSnapshot, id: &str) -> Option<&'a Value> {
    s.entries.get(&format!("bramble/v1/status/agent/{id}"))
}

fn task<'a>(s: &'a StatusSnapshot, tid: &str) -> Option<&'a Value> {
    s.kind("task").into_iter().find(|t| t["task_id"] == tid)
}

fn state_of(s: &StatusSnapshot, tid: &str) -> Option<String> {
    task(s, tid).and_then(|t| t["state"].as_str().map(str::to_owned))
}

/// Every non-empty retained message under `filter`, read with a plain MQTT client.
async fn retained(broker: &BrokerAddr, filter: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    bramble::mqtt::retained(
        broker,
        &[filter.to_owned()],
        Duration::from_secs(5),
        |t, p| {
            if !p.is_empty() {
                out.push((t.to_owned(), p.to_vec()));
            }
        },
    )
    .await
    .unwrap();
    out
}

#[test]
fn the_retained_status_topics_follow_launches_finishes_and_an_agent_loss_without_stale_entries() {
    let work = tempfile::tempdir().unwrap();
    let master = Config {
        allocation_interval_ms: 200,
        ping_interval_ms: 500,
        agent_timeout_ms: 2_000,
        unreachable_gc_ms: 3_000,
        ha_discovery: true,
        ..Config::default()
    };
    runtime().block_on(async {
        let mut cluster = start_cluster(work.path(), Some(master));
        let broker = cluster.broker.clone();
        let mut doomed = Some(AgentProcess::start(
            "doomed",
            "doomed=yes",
            &broker,
            work.path(),
        ));
        tokio::time::timeout(Duration::from_secs(30), cluster.wait_for_agents(2))
            .await
            .expect("2 agents register");

        let plan = Plan::default();
        let answered = plan.answered.clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let config = SchedulerConfig {
            brokers: (&broker).into(),
            client_name: "status-e2e".into(),
            registration: Register::new("status-e2e"),
            credential: None,
        };
        let run = tokio::spawn(scheduler::run_until(config, plan, async {
            let _ = stop_rx.await;
        }));

        // Launches and finishes.
        let s = retained_until(&broker, "tasks run", Duration::from_secs(30), |s| {
            state_of(s, "ok").as_deref() == Some("finished")
                && state_of(s, "bad").as_deref() == Some("failed")
                && state_of(s, "long").as_deref() == Some("running")
        })
        .await;
        assert_eq!(task(&s, "ok").unwrap()["exit_code"], 0);
        assert_eq!(task(&s, "bad").unwrap()["exit_code"], 3);
        // Times are wall-clock epoch ms (the master's epoch is no clock).
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let updated = task(&s, "ok").unwrap()["updated"].as_u64().unwrap();
        assert!(
            now_ms.abs_diff(updated) < 120_000,
            "updated {updated} is not about now ({now_ms})"
        );
        let m = s.master_status().expect("the master's availability");
        assert!(m.name.is_some(), "the leading master names itself");
        assert_eq!(task(&s, "long").unwrap()["agent_id"], "doomed");
        let d = agent(&s, "doomed").unwrap();
        assert_eq!(d["state"], "online");
        assert_eq!(d["running_tasks"], 1);
        assert_eq!(d["cpu_millis_used"], 250);
        let p = agent(&s, "plain").unwrap();
        assert_eq!(p["attributes"]["room"], "attic");
        assert_eq!(p["running_tasks"], 0);
        let fw = s.kind("framework");
        assert_eq!(fw.len(), 1);
        assert_eq!(fw[0]["name"], "status-e2e");
        assert_eq!(fw[0]["tasks"]["finished"], 1);
        assert_eq!(fw[0]["tasks"]["failed"], 1);
        assert_eq!(fw[0]["tasks"]["running"], 1);
        let discovery = retained(&broker, "homeassistant/#").await;
        let doomed_configs: Vec<&(String, Vec<u8>)> = discovery
            .iter()
            .filter(|(t, _)| t.starts_with("homeassistant/sensor/bramble_doomed/"))
            .collect();
        assert_eq!(doomed_configs.len(), 4, "4 sensors for the agent");
        for (topic, payload) in &doomed_configs {
            let c: Value = serde_json::from_slice(payload).unwrap();
            for key in [
                "name",
                "unique_id",
                "state_topic",
                "availability_topic",
                "device",
            ] {
                assert!(!c[key].is_null(), "{topic} has {key}");
            }
        }

        // The agent dies without a word: offline, its task unreachable.
        drop(doomed.take());
        let s = retained_until(&broker, "agent offline", Duration::from_secs(30), |s| {
            agent(s, "doomed").is_some_and(|a| a["state"] == "offline")
                && state_of(s, "long").as_deref() == Some("unreachable")
        })
        .await;
        assert_eq!(s.cluster().unwrap()["agents_offline"], 1);

        // Unreachable too long: the agent goes, with its discovery configs; its task is lost.
        let s = retained_until(&broker, "agent removed", Duration::from_secs(30), |s| {
            agent(s, "doomed").is_none() && state_of(s, "long").as_deref() == Some("lost")
        })
        .await;
        let c = s.cluster().unwrap();
        assert_eq!(
            (c["agents_online"].clone(), c["agents_offline"].clone()),
            (1.into(), 0.into())
        );
        let discovery = retained(&broker, "homeassistant/#").await;
        assert!(
            discovery.iter().all(|(t, _)| !t.contains("bramble_doomed")),
            "the removed agent's discovery configs are cleared"
        );
        assert!(discovery.iter().any(|(t, _)| t.contains("bramble_plain")));

        // No offer topic names an offer the framework answered; the cluster counts the rest.
        let offers = s.kind("offer");
        let answered = answered.lock().unwrap().clone();
        for o in &offers {
            let id = o["offer_id"].as_u64().unwrap();
            assert!(!answered.contains(&id), "offer {id} was answered: {o}");
        }
        assert_eq!(c["offers_outstanding"], offers.len());

        // The CLI reads the same topics.
        let url = broker_url(&broker);
        let out = tokio::task::spawn_blocking(move || {
            Command::new(BRAMBLE)
                .args(["agents", "--json", "--broker", &url])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let agents: Value = serde_json::from_slice(&out.stdout).unwrap();
        let ids: Vec<&str> = agents
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["agent_id"].as_str())
            .collect();
        assert_eq!(ids, ["plain"]);

        let _ = stop_tx.send(());
        run.await.unwrap().unwrap();
        cluster.wait_for_no_tasks(Duration::from_secs(20)).await;
        cluster.stop().await;
    });
    kill_processes_below(work.path());
}

#[test]
fn bramble_run_runs_a_command_on_a_matching_agent_and_exits_with_its_exit_code() {
    let work = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let mut cluster = cluster_with_its_agent(work.path()).await;
        let url = broker_url(&cluster.broker);
        let out = bramble_cli(&[
            "run",
            "--broker",
            &url,
            "--cpus",
            "0.25",
            "--mem",
            "16",
            "--constraint",
            "room=attic",
            "--",
            "/bin/sh",
            "-c",
            "exit 7",
        ])
        .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(7), "{stderr}");
        assert!(stderr.contains("launching run-"), "{stderr}");
        assert!(
            stderr.contains("TASK_FAILED on plain (exit code 7)"),
            "{stderr}"
        );
        cluster.wait_for_no_tasks(Duration::from_secs(20)).await;
        cluster.stop().await;
    });
}

#[test]
fn bramble_kill_stops_a_task_started_by_bramble_run_which_then_exits_non_zero() {
    let work = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let mut cluster = cluster_with_its_agent(work.path()).await;
        let broker = cluster.broker.clone();
        let url = broker_url(&broker);
        let mut run = Command::new(BRAMBLE)
            .args(["run", "--broker", &url, "--cpus", "0.1", "--mem", "8"])
            .args(["--", "/bin/sleep", "600"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let task_id = format!("run-{}", run.id());
        retained_until(&broker, "the task runs", Duration::from_secs(30), |s| {
            state_of(s, &task_id).as_deref() == Some("running")
        })
        .await;
        let out = bramble_cli(&["kill", &task_id, "--grace", "1", "--broker", &url]).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // `bramble run` tears its framework down as soon as the task ends, which clears the
        // task's topic: either is a clean end.
        let ended = [format!("{task_id}: killed\n"), format!("{task_id}: gone\n")];
        assert!(ended.iter().any(|e| stdout.ends_with(e)), "{stdout}");
        let status = tokio::task::spawn_blocking(move || run.wait().unwrap())
            .await
            .unwrap();
        assert!(
            matches!(status.code(), Some(137 | 143)),
            "bramble run exits as killed: {status:?}"
        );
        cluster.wait_for_no_tasks(Duration::from_secs(20)).await;
        cluster.stop().await;
    });
}
