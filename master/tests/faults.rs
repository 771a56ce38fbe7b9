//! Faults injected into a running cluster, with real processes: end-to-end delivery of status
//! updates must survive them. A framework runs 300 short tasks (each appends its task id to a
//! `launches` file, then sleeps a little) while a fault is injected three times mid-workload (once
//! each quarter of the items has finished); afterwards every task the framework launched must have
//! reached exactly one terminal state at the framework (no terminal update lost, none
//! contradicted), and no task id may appear twice in `launches` (no duplicate launch). Items whose
//! task ends otherwise than FINISHED are relaunched under a new task id (the SDK's [`Batch`]), so
//! the workload completes. Each test prints a one-line summary, then details:
//!
//! `faults: broker SIGKILL injections=N tasks=T terminal_lost=L duplicate_launches=D elapsed=…s`
//!
//! - `tasks`: distinct task ids that really ran (lines of `launches`; more than 300 when a task the
//!   framework relaunched, e.g. after TASK_UNREACHABLE, had run after all);
//! - `terminal_lost`: task ids the framework launched that never got a terminal update;
//! - `duplicate_launches`: extra lines of `launches` for a task id already there;
//! - details: `relaunches` (task ids of a later attempt), `contradicted` (two different terminal
//!   states), `ran_but_not_finished` (ran, yet reported e.g. TASK_LOST: printed, not failed).
//!
//! The faults: Mosquitto SIGKILLed and started again on its port after 1 s (no persistence: every
//! session and message in flight is gone), with the master and three agents in process; and, on the
//! embedded broker, agent processes (`bramble __agent`) SIGKILLed and started again on their work
//! directories after 1 s (their tasks keep running and are re-adopted).
//!
//! Both need the SDK to acknowledge status updates (`Call::Acknowledge`) and to reconcile on every
//! (re)registration: without acknowledgements an agent holds every ended task until acknowledged,
//! so each agent's task table (32) fills and no more than 96 tasks ever run.
//!
//! Run with `cargo test -p bramble --test faults -- --ignored --nocapture` (`.ci/run` runs every
//! ignored test); add `RUST_LOG=info` (or finer) for the cluster's logs. They run one at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_nostd_core::wire::TaskState;
use agent_nostd_core::Resources;
use bramble::cluster::{AgentSpec, ClusterBroker, LocalCluster};
use bramble::demo::scheduler_config;
use bramble::driver::BrokerAddr;
use bramble_proto::{ErrorCode, Offer, OfferId, StatusUpdate, TaskInfo};
use bramble_sdk::batch::{Batch, BatchOptions};
use bramble_sdk::scheduler::{self, Scheduler, SchedulerDriver};
use tokio::sync::watch;
use tokio::time::Instant;

mod support;
use bramble_master_core::election::{Peer, PeerRole, PEERS_FILTER};
use support::{
    cluster_options, free_port, kill_processes_below, processes_below, runtime, AgentProcess,
    Mosquitto,
};

/// How many short tasks the workload runs.
const TASKS: u32 = 300;
/// What each task asks for: 20 fit at once on each in-process agent (1000m cpu), 60 on the
/// cluster.
const TASK_RESOURCES: Resources = Resources::new(50, 16, 0);
/// What each task asks for from agent processes, which offer the whole machine (2000m cpu on two
/// cores): again 20 at once on each, within the agent's task table (32).
const TASK_RESOURCES_2CPU: Resources = Resources::new(100, 16, 0);
/// How many times the broker is SIGKILLed, spread evenly over the workload.
const BROKER_INJECTIONS: u32 = 3;
/// How long the broker stays down each time.
const BROKER_DOWN: Duration = Duration::from_secs(1);
/// How many times an agent process is SIGKILLed (a different one each time).
const AGENT_INJECTIONS: u32 = 3;
/// How long a killed agent stays down.
const AGENT_DOWN: Duration = Duration::from_secs(1);
/// The workload, faults included, must settle within this.
const WORKLOAD_TIMEOUT: Duration = Duration::from_secs(180);

/// What the framework saw, shared with the test.
#[derive(Debug, Default)]
struct Tally {
    /// Every task id the framework sent in an accept.
    launched: BTreeSet<String>,
    /// Every terminal update per task id, in arrival order (at least once: repeats are allowed).
    terminals: BTreeMap<String, Vec<TaskState>>,
    /// How each terminal update was told (reason, message, from the agent or the master), per
    /// task id, for the failure messages.
    told: BTreeMap<String, Vec<String>>,
    /// The last state of each task id.
    last: BTreeMap<String, TaskState>,
    /// Status updates received.
    updates: u64,
    /// Items finished (a task of theirs reported TASK_FINISHED).
    done: u32,
    /// Why the batch gave up, if it did.
    failure: Option<String>,
}

impl Tally {
    /// Every item finished, and every task id launched has a terminal state.
    fn settled(&self) -> bool {
        self.done == TASKS && self.unsettled().is_empty()
    }

    /// Task ids launched without a terminal update, with their last state.
    fn unsettled(&self) -> Vec<(String, Option<TaskState>)> {
        self.launched
            .iter()
            .filter(|id| !self.terminals.contains_key(*id))
            .map(|id| (id.clone(), self.last.get(id).copied()))
            .collect()
    }
}

/// A batch of [`TASKS`] items (each asking for the same resources), each one task `echo ID >> launches; sleep S`, relaunched under a
/// new id (`fault-{item}-{attempt}`) when its task ends otherwise than FINISHED. Records every
/// update in the shared [`Tally`] and bumps `changed` after each callback.
struct Workload {
    batch: Batch,
    launches: PathBuf,
    /// How long each task sleeps after it wrote its line, e.g. `0.05`.
    sleep: &'static str,
    tally: Arc<Mutex<Tally>>,
    changed: watch::Sender<u64>,
}

impl Workload {
    fn new(
        launches: PathBuf,
        resources: Resources,
        sleep: &'static str,
    ) -> (Workload, Arc<Mutex<Tally>>, watch::Receiver<u64>) {
        let batch = Batch::new(BatchOptions {
            prefix: "fault".into(),
            items: TASKS,
            resources,
            max_retries: 5,
        });
        let tally = Arc::new(Mutex::new(Tally::default()));
        let (changed, rx) = watch::channel(0);
        let workload = Workload {
            batch,
            launches,
            sleep,
            tally: tally.clone(),
            changed,
        };
        (workload, tally, rx)
    }

    fn sync(&mut self) {
        {
            let mut t = self.tally.lock().unwrap();
            t.done = self.batch.progress().0;
            if t.failure.is_none() {
                t.failure = self.batch.failure().map(str::to_owned);
            }
        }
        self.changed.send_modify(|n| *n += 1);
    }
}

impl Scheduler for Workload {
    fn offers(&mut self, driver: &mut SchedulerDriver, offers: Vec<Offer>) {
        let launches = self.launches.display().to_string();
        let sleep = self.sleep;
        let mut ids = Vec::new();
        self.batch.offers(driver, offers, |_, id| {
            ids.push(id.to_owned());
            let script = format!("echo {id} >> {launches}; sleep {sleep}");
            // The batch sets the resources.
            TaskInfo::new(id, &["/bin/sh", "-c", &script], Resources::new(1, 1, 0))
        });
        self.tally.lock().unwrap().launched.extend(ids);
        self.sync();
    }

    fn offer_rescinded(&mut self, driver: &mut SchedulerDriver, offer_id: OfferId) {
        // A rescinded offer was never accepted (an accept lost with the broker, say): its items
        // go back to pending, as after an unknown-offer error.
        self.batch.error(
            driver,
            ErrorCode::UnknownOffer,
            Some(offer_id),
            "offer rescinded",
        );
        self.sync();
    }

    fn status_update(&mut self, driver: &mut SchedulerDriver, update: StatusUpdate) {
        {
            let mut t = self.tally.lock().unwrap();
            t.updates += 1;
            t.last.insert(update.task_id.clone(), update.state);
            if update.state.is_terminal() {
                t.terminals
                    .entry(update.task_id.clone())
                    .or_default()
                    .push(update.state);
                let from = match update.update_id {
                    Some(id) => format!("agent update {id}"),
                    None => "master".to_owned(),
                };
                t.told
                    .entry(update.task_id.clone())
                    .or_default()
                    .push(format!(
                        "{} ({:?}: {}; {from})",
                        update.state.as_str(),
                        update.reason,
                        update.message
                    ));
            }
        }
        self.batch.status_update(driver, &update);
        if update.state == TaskState::Finished {
            if let Some((index, _)) = self.batch.parse_task_id(&update.task_id) {
                self.batch.complete(index);
            }
        }
        self.sync();
    }

    fn agent_lost(&mut self, driver: &mut SchedulerDriver, agent_id: &str) {
        self.batch.agent_lost(driver, agent_id);
        self.sync();
    }

    fn error(
        &mut self,
        driver: &mut SchedulerDriver,
        code: ErrorCode,
        offer_id: Option<OfferId>,
        message: &str,
    ) {
        self.batch.error(driver, code, offer_id, message);
        self.sync();
    }
}

/// Kills every process left below a directory when dropped (tasks orphaned by a failed test).
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        kill_processes_below(&self.0);
    }
}

/// What a workload came to.
#[derive(Debug)]
struct Figures {
    /// Distinct task ids that ran.
    tasks_run: usize,
    /// Task ids launched without a terminal update.
    terminal_lost: Vec<(String, Option<TaskState>)>,
    /// Task ids in `launches` more than once, with their count.
    duplicate_launches: BTreeMap<String, usize>,
    /// Task ids with two different terminal states, with how each was told.
    contradicted: BTreeMap<String, Vec<String>>,
    /// Task ids that ran but were never launched by the framework (must not happen).
    unknown_runs: Vec<String>,
    /// Task ids reported FINISHED that never ran (must not happen).
    finished_not_run: Vec<String>,
    /// Task ids that ran but whose terminal state is not FINISHED (e.g. TASK_LOST): informational.
    ran_but_not_finished: BTreeMap<String, Vec<TaskState>>,
    /// Relaunches: task ids of a later attempt.
    relaunches: usize,
    /// Terminal updates delivered in all (repeats included).
    terminal_deliveries: usize,
}

impl Figures {
    fn count(tally: &Tally, launches: &Path) -> Figures {
        let text = std::fs::read_to_string(launches).unwrap_or_default();
        let mut runs: BTreeMap<String, usize> = BTreeMap::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            *runs.entry(line.to_owned()).or_default() += 1;
        }
        let finished = |states: &Vec<TaskState>| states.contains(&TaskState::Finished);
        Figures {
            tasks_run: runs.len(),
            terminal_lost: tally.unsettled(),
            duplicate_launches: runs
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|(id, n)| (id.clone(), *n))
                .collect(),
            contradicted: tally
                .terminals
                .iter()
                .filter(|(_, s)| s.iter().any(|x| *x != s[0]))
                .map(|(id, _)| (id.clone(), tally.told[id].clone()))
                .collect(),
            unknown_runs: runs
                .keys()
                .filter(|id| !tally.launched.contains(*id))
                .cloned()
                .collect(),
            finished_not_run: tally
                .terminals
                .iter()
                .filter(|(id, s)| finished(s) && !runs.contains_key(*id))
                .map(|(id, _)| id.clone())
                .collect(),
            ran_but_not_finished: tally
                .terminals
                .iter()
                .filter(|(id, s)| !finished(s) && runs.contains_key(*id))
                .map(|(id, s)| (id.clone(), s.clone()))
                .collect(),
            relaunches: tally
                .launched
                .iter()
                .filter(|id| !id.ends_with("-0"))
                .count(),
            terminal_deliveries: tally.terminals.values().map(Vec::len).sum(),
        }
    }

    fn duplicates(&self) -> usize {
        self.duplicate_launches.values().map(|n| n - 1).sum()
    }
}

/// The fault tests run one at a time: each loads both cores, and a port one test picked as free
/// could be taken meanwhile by the other's connections.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Three plain agents, each with room for 20 of the workload's tasks at once.
fn agents() -> Vec<AgentSpec> {
    ["pi-a", "pi-b", "pi-c"]
        .into_iter()
        .map(|id| AgentSpec {
            id: id.into(),
            attributes: vec![("room".into(), "lab".into())],
            capacity: Resources::new(1000, 512, 1024),
        })
        .collect()
}

/// Where the workload runs.
trait Cluster {
    /// Where clients reach the broker.
    fn broker(&self) -> BrokerAddr;
    /// Waits (up to `timeout`) until no task runs; says whether that happened.
    async fn drained(&mut self, timeout: Duration) -> bool;
}

impl Cluster for LocalCluster {
    fn broker(&self) -> BrokerAddr {
        self.broker.clone()
    }

    async fn drained(&mut self, timeout: Duration) -> bool {
        self.wait_for_no_tasks(timeout).await
    }
}

/// A fault, injected a few times over the workload.
trait Fault {
    /// What the summary line calls it, e.g. `broker SIGKILL`.
    fn name(&self) -> &'static str;
    /// Injects it for the `n`th time (from 1), returning once the faulty part is back.
    fn inject(&mut self, n: u32);
}

/// How a workload with faults went.
struct Outcome {
    settled: bool,
    elapsed: Duration,
    injections: u32,
    stopped: Result<(), String>,
    drained: bool,
    tally: Tally,
    figures: Figures,
}

/// Runs the workload on `cluster`, injecting `fault` `injections` times (once each quarter of the
/// items has finished, for three), then tears the framework down and counts. Prints the summary.
async fn run_with_faults(
    cluster: &mut impl Cluster,
    launches: &Path,
    (resources, sleep): (Resources, &'static str),
    injections: u32,
    fault: &mut dyn Fault,
) -> Outcome {
    let (workload, tally, mut changed) = Workload::new(launches.to_owned(), resources, sleep);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let config = scheduler_config(&cluster.broker(), "faults", "faults");
    let run = tokio::spawn(scheduler::run_until(config, workload, async {
        let _ = stop_rx.await;
    }));

    let started = Instant::now();
    let deadline = started + WORKLOAD_TIMEOUT;
    let mut injected = 0u32;
    // (when the faulty part came back, the update count then), until the next update arrives.
    let mut recovering: Option<(Instant, u64)> = None;
    let settled = loop {
        let (done, updates, settled, failed) = {
            let t = tally.lock().unwrap();
            (t.done, t.updates, t.settled(), t.failure.is_some())
        };
        if let Some((back, seen)) = recovering {
            if updates > seen {
                println!(
                    "faults: first status update {:.1}s after injection {injected} ended",
                    back.elapsed().as_secs_f64()
                );
                recovering = None;
            }
        }
        if settled || failed {
            break settled;
        }
        if injected < injections && done >= (injected + 1) * TASKS / (injections + 1) {
            injected += 1;
            println!(
                "faults: injection {injected}: {} at {:.1}s, {done}/{TASKS} tasks finished",
                fault.name(),
                started.elapsed().as_secs_f64()
            );
            // The cluster runs on the runtime's workers; this thread only watches.
            fault.inject(injected);
            recovering = Some((Instant::now(), updates));
            continue;
        }
        if tokio::time::timeout_at(deadline, changed.changed())
            .await
            .is_err()
        {
            break false;
        }
    };
    let elapsed = started.elapsed();

    let _ = stop_tx.send(());
    let stopped = match tokio::time::timeout(Duration::from_secs(30), run).await {
        Ok(Ok(Ok(_))) => Ok(()),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("did not stop within 30 s".to_owned()),
    };
    // Teardown kills what is left; then every task has ended and `launches` is final.
    let drained = cluster.drained(Duration::from_secs(30)).await;

    let tally = std::mem::take(&mut *tally.lock().unwrap());
    let figures = Figures::count(&tally, launches);
    println!(
        "faults: {} injections={injected} tasks={} terminal_lost={} duplicate_launches={} elapsed={:.1}s",
        fault.name(),
        figures.tasks_run,
        figures.terminal_lost.len(),
        figures.duplicates(),
        elapsed.as_secs_f64()
    );
    println!(
        "faults: details: launched={} relaunches={} updates={} terminal_deliveries={} contradicted={} ran_but_not_finished={} finished_not_run={} unknown_runs={}",
        tally.launched.len(),
        figures.relaunches,
        tally.updates,
        figures.terminal_deliveries,
        figures.contradicted.len(),
        figures.ran_but_not_finished.len(),
        figures.finished_not_run.len(),
        figures.unknown_runs.len(),
    );
    if !figures.ran_but_not_finished.is_empty() {
        println!(
            "faults: ran but reported otherwise: {:?}",
            figures.ran_but_not_finished
        );
    }
    Outcome {
        settled,
        elapsed,
        injections: injected,
        stopped,
        drained,
        tally,
        figures,
    }
}

/// The assertions every fault test makes.
fn check(o: &Outcome, injections: u32) {
    let (tally, figures) = (&o.tally, &o.figures);
    assert!(
        o.settled,
        "the workload did not settle (stopped after {:.1}s, limit {WORKLOAD_TIMEOUT:?}; {} of {TASKS} items finished; batch failure: {:?}); tasks without a terminal update (id, last state): {:?}",
        o.elapsed.as_secs_f64(), tally.done, tally.failure, figures.terminal_lost
    );
    assert_eq!(o.stopped, Ok(()), "the framework stops");
    assert!(o.drained, "no task is left running after the teardown");
    assert_eq!(tally.failure, None);
    assert_eq!(o.injections, injections);
    assert_eq!(figures.terminal_lost, vec![], "terminal updates lost");
    assert_eq!(
        figures.duplicate_launches,
        BTreeMap::new(),
        "task ids launched twice"
    );
    assert_eq!(
        figures.contradicted,
        BTreeMap::new(),
        "tasks with two terminal states"
    );
    assert_eq!(figures.unknown_runs, Vec::<String>::new());
    assert_eq!(figures.finished_not_run, Vec::<String>::new());
    assert!(figures.tasks_run >= TASKS as usize);
}

/// Mosquitto SIGKILLed, and started again on its port after [`BROKER_DOWN`].
struct BrokerKill<'a>(&'a mut Mosquitto);

impl Fault for BrokerKill<'_> {
    fn name(&self) -> &'static str {
        "broker SIGKILL"
    }

    fn inject(&mut self, _: u32) {
        self.0.kill9();
        std::thread::sleep(BROKER_DOWN);
        self.0.restart();
    }
}

#[test]
#[ignore = "needs mosquitto"]
fn broker_sigkilled_mid_workload_loses_no_terminal_update_and_launches_nothing_twice() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    init_logs();
    let work = tempfile::tempdir().unwrap();
    let _reaper = Reaper(work.path().to_owned());
    let mut mosquitto = Mosquitto::start();
    let launches = work.path().join("launches");
    let outcome = runtime().block_on(async {
        let mut options = cluster_options(
            ClusterBroker::External(mosquitto.addr()),
            work.path(),
            agents(),
        );
        // Recovery of what the broker dropped leans on these two timers; shorter than the
        // defaults (30 s, 60 s) so that three faults fit in the test's time.
        options.master.offer_timeout_ms = 10_000;
        options.master.task_retry_ms = 10_000;
        let mut cluster = LocalCluster::start(options).unwrap();
        tokio::time::timeout(Duration::from_secs(30), cluster.wait_for_agents(3))
            .await
            .expect("3 agents register");
        let mut fault = BrokerKill(&mut mosquitto);
        let outcome = run_with_faults(
            &mut cluster,
            &launches,
            (TASK_RESOURCES, "0.05"),
            BROKER_INJECTIONS,
            &mut fault,
        )
        .await;
        cluster.stop().await;
        outcome
    });
    check(&outcome, BROKER_INJECTIONS);
}

/// An agent process SIGKILLed (its tasks keep running), and started again on its work directory
/// after [`AGENT_DOWN`]: it re-adopts its tasks and reports those that ended meanwhile. Injection
/// `n` hits agent `n % 3`.
struct AgentKill {
    agents: Vec<(String, Option<AgentProcess>)>,
    broker: BrokerAddr,
    work: PathBuf,
}

impl Fault for AgentKill {
    fn name(&self) -> &'static str {
        "agent SIGKILL"
    }

    fn inject(&mut self, n: u32) {
        let i = n as usize % self.agents.len();
        let (id, process) = &mut self.agents[i];
        drop(process.take()); // SIGKILL, then reaped
        std::thread::sleep(AGENT_DOWN);
        *process = Some(AgentProcess::start(
            id,
            "room=lab",
            &self.broker,
            &self.work,
        ));
    }
}

#[test]
#[ignore = "real processes: SIGKILLs and restarts agent processes mid-workload"]
fn agents_sigkilled_and_restarted_mid_workload_lose_no_terminal_update_and_launch_nothing_twice() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    init_logs();
    let work = tempfile::tempdir().unwrap();
    let _reaper = Reaper(work.path().to_owned());
    let launches = work.path().join("launches");
    let outcome = runtime().block_on(async {
        let broker = ClusterBroker::Embedded(format!("127.0.0.1:{}", free_port()).parse().unwrap());
        let mut options = cluster_options(broker, work.path(), vec![]);
        // A RunTask lost with a killed agent is settled after this (default 60 s).
        options.master.task_retry_ms = 10_000;
        let mut cluster = LocalCluster::start(options).unwrap();
        let mut fault = AgentKill {
            agents: ["pi-a", "pi-b", "pi-c"]
                .into_iter()
                .map(|id| {
                    let p = AgentProcess::start(id, "room=lab", &cluster.broker, work.path());
                    (id.to_owned(), Some(p))
                })
                .collect(),
            broker: cluster.broker.clone(),
            work: work.path().to_owned(),
        };
        tokio::time::timeout(Duration::from_secs(30), cluster.wait_for_agents(3))
            .await
            .expect("3 agents register");
        let outcome = run_with_faults(
            &mut cluster,
            &launches,
            // Longer tasks than with the broker fault, so that the three restarts (a second
            // each) land while tasks run, not after the last one.
            (TASK_RESOURCES_2CPU, "0.3"),
            AGENT_INJECTIONS,
            &mut fault,
        )
        .await;
        drop(fault);
        cluster.stop().await;
        outcome
    });
    check(&outcome, AGENT_INJECTIONS);
}

/// How many times the leading master is SIGKILLed.
const MASTER_INJECTIONS: u32 = 3;
/// The longest a standby may take to lead after the leader's SIGKILL.
const TAKEOVER_LIMIT: Duration = Duration::from_secs(10);

/// Masters, agents and Mosquitto as processes: the cluster of the master fault.
struct Processes {
    broker: BrokerAddr,
    work: PathBuf,
}

impl Cluster for Processes {
    fn broker(&self) -> BrokerAddr {
        self.broker.clone()
    }

    async fn drained(&mut self, timeout: Duration) -> bool {
        // The tasks run in sandboxes below the work directory (agents and masters do not).
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if processes_below(&self.work).is_empty() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

/// `bramble master` as its own process on an external broker (no HTTP), killed when dropped.
struct MasterProcess(std::process::Child);

impl MasterProcess {
    fn start(name: &str, standby: bool, broker: &BrokerAddr) -> MasterProcess {
        let mut cmd = std::process::Command::new(support::BRAMBLE);
        cmd.args([
            "master",
            "--no-http",
            "--allocation-interval",
            "0.2",
            "--name",
            name,
        ])
        .arg("--broker")
        .arg(broker.to_string())
        .arg("--state-dir")
        .arg(support::scratch_state_dir())
        .env("BRAMBLE_LOG", "warn");
        if standby {
            cmd.arg("--standby");
        }
        MasterProcess(cmd.spawn().unwrap())
    }
}

impl Drop for MasterProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the masters' heartbeats say: name → (role, epoch, when heard).
type Heartbeats = Arc<Mutex<BTreeMap<String, (PeerRole, u64, std::time::Instant)>>>;

/// Listens to the masters' heartbeats on `bramble/v1/master/peers/+`.
fn watch_heartbeats(broker: &BrokerAddr) -> Heartbeats {
    let beats: Heartbeats = Arc::default();
    let mut options = rumqttc::MqttOptions::new("faults-watcher", broker.host.clone(), broker.port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 64);
    let seen = beats.clone();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe(PEERS_FILTER, rumqttc::QoS::AtMostOnce);
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    if let Ok(peer) = serde_json::from_slice::<Peer>(&p.payload) {
                        let at = std::time::Instant::now();
                        seen.lock()
                            .unwrap()
                            .insert(peer.name, (peer.role, peer.epoch, at));
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    beats
}

/// The master leading now (heard as leader within the last 3 s, the highest epoch), if any.
fn leader(beats: &Heartbeats) -> Option<(String, u64)> {
    beats
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, (role, _, at))| {
            *role == PeerRole::Leader && at.elapsed() < Duration::from_secs(3)
        })
        .max_by_key(|(_, (_, epoch, _))| *epoch)
        .map(|(name, (_, epoch, _))| (name.clone(), *epoch))
}

/// Polls (every 10 ms, up to `limit`) until `ok` holds of the leader.
fn wait_for_leader(
    beats: &Heartbeats,
    limit: Duration,
    ok: impl Fn(&str, u64) -> bool,
) -> Option<(String, u64)> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Some((name, epoch)) = leader(beats).filter(|(n, e)| ok(n, *e)) {
            return Some((name, epoch));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// The leading master SIGKILLed while a standby runs; the killed one comes back as a standby.
struct MasterKill {
    masters: BTreeMap<String, MasterProcess>,
    broker: BrokerAddr,
    beats: Heartbeats,
    /// How long each takeover took: SIGKILL to the new leader's first heartbeat as leader.
    takeovers: Vec<Duration>,
}

impl Fault for MasterKill {
    fn name(&self) -> &'static str {
        "leader master SIGKILL"
    }

    fn inject(&mut self, _: u32) {
        let (name, epoch) = wait_for_leader(&self.beats, TAKEOVER_LIMIT, |_, _| true)
            .expect("a master leads before the fault");
        drop(self.masters.remove(&name)); // SIGKILL, then reaped
        let killed = std::time::Instant::now();
        let (next, next_epoch) =
            wait_for_leader(&self.beats, TAKEOVER_LIMIT, |n, e| n != name && e > epoch)
                .unwrap_or_else(|| {
                    panic!("no standby took over from {name} within {TAKEOVER_LIMIT:?}")
                });
        let took = killed.elapsed();
        println!(
            "faults: {next} took over from {name} in {:.2}s (epoch {epoch:#x} -> {next_epoch:#x})",
            took.as_secs_f64()
        );
        self.takeovers.push(took);
        self.masters.insert(
            name.clone(),
            MasterProcess::start(&name, true, &self.broker),
        );
    }
}

#[test]
#[ignore = "needs mosquitto; real processes: SIGKILLs the leading master mid-workload"]
fn the_leader_sigkilled_mid_workload_is_replaced_by_a_standby_within_seconds_losing_and_repeating_nothing(
) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    init_logs();
    let work = tempfile::tempdir().unwrap();
    let _reaper = Reaper(work.path().to_owned());
    let mosquitto = Mosquitto::start();
    let broker = mosquitto.addr();
    let launches = work.path().join("launches");
    let (outcome, takeovers) = runtime().block_on(async {
        let beats = watch_heartbeats(&broker);
        let mut masters = BTreeMap::new();
        masters.insert("m1".to_owned(), MasterProcess::start("m1", false, &broker));
        wait_for_leader(&beats, Duration::from_secs(20), |n, _| n == "m1").expect("m1 leads");
        masters.insert("m2".to_owned(), MasterProcess::start("m2", true, &broker));
        let agents: Vec<AgentProcess> = ["pi-a", "pi-b", "pi-c"]
            .into_iter()
            .map(|id| AgentProcess::start(id, "room=lab", &broker, work.path()))
            .collect();
        support::retained_until(&broker, "3 agents register", Duration::from_secs(30), |s| {
            s.cluster_status().is_some_and(|c| c.agents_online >= 3)
        })
        .await;
        let mut fault = MasterKill {
            masters,
            broker: broker.clone(),
            beats,
            takeovers: Vec::new(),
        };
        let mut cluster = Processes {
            broker: broker.clone(),
            work: work.path().to_owned(),
        };
        let outcome = run_with_faults(
            &mut cluster,
            &launches,
            (TASK_RESOURCES_2CPU, "0.3"),
            MASTER_INJECTIONS,
            &mut fault,
        )
        .await;
        drop(agents);
        let takeovers = std::mem::take(&mut fault.takeovers);
        drop(fault);
        (outcome, takeovers)
    });
    check(&outcome, MASTER_INJECTIONS);
    let slowest = takeovers.iter().max().copied().unwrap_or_default();
    println!(
        "faults: takeovers {:?}, slowest {:.2}s",
        takeovers
            .iter()
            .map(|d| format!("{:.2}s", d.as_secs_f64()))
            .collect::<Vec<_>>(),
        slowest.as_secs_f64()
    );
    assert!(slowest < TAKEOVER_LIMIT);
}
