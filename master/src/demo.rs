//! The `bramble up` demo: the `pi` and `sensor` frameworks side by side on the local cluster, with
//! their results and the frameworks' dominant shares printed as they come, until Ctrl-C.
//!
//! Executors are this very binary (`bramble __exec pi …`, `bramble __exec sensor …`), so the demo needs
//! nothing installed.

use std::path::Path;
use std::time::Duration;

use bramble_pi::{PiOptions, PiScheduler};
use bramble_proto::{ErrorCode, Offer, OfferId, Register, StatusUpdate};
use bramble_sdk::scheduler::{self, Scheduler, SchedulerConfig, SchedulerDriver};
use bramble_sensor::{SensorOptions, SensorScheduler};

use crate::cluster::LocalCluster;
use crate::driver::Snapshot;
use crate::mqtt::BrokerAddr;

/// A scheduler wrapped so that `watch` sees it after every change.
pub struct Watched<S, F: FnMut(&S)> {
    /// The wrapped scheduler.
    pub inner: S,
    watch: F,
}

impl<S, F: FnMut(&S)> Watched<S, F> {
    /// Wraps `inner`.
    pub fn new(inner: S, watch: F) -> Self {
        Watched { inner, watch }
    }
}

impl<S: Scheduler, F: FnMut(&S)> Scheduler for Watched<S, F> {
    fn registered(&mut self, driver: &mut SchedulerDriver, framework_id: &str, master_epoch: u64) {
        self.inner.registered(driver, framework_id, master_epoch);
    }
    fn offers(&mut self, driver: &mut SchedulerDriver, offers: Vec<Offer>) {
        self.inner.offers(driver, offers);
        (self.watch)(&self.inner);
    }
    fn offer_rescinded(&mut self, driver: &mut SchedulerDriver, offer_id: OfferId) {
        self.inner.offer_rescinded(driver, offer_id);
    }
    fn status_update(&mut self, driver: &mut SchedulerDriver, update: StatusUpdate) {
        self.inner.status_update(driver, update);
        (self.watch)(&self.inner);
    }
    fn framework_message(&mut self, driver: &mut SchedulerDriver, task_id: &str, data: Vec<u8>) {
        self.inner.framework_message(driver, task_id, data);
        (self.watch)(&self.inner);
    }
    fn agent_lost(&mut self, driver: &mut SchedulerDriver, agent_id: &str) {
        self.inner.agent_lost(driver, agent_id);
        (self.watch)(&self.inner);
    }
    fn error(
        &mut self,
        driver: &mut SchedulerDriver,
        code: ErrorCode,
        offer_id: Option<OfferId>,
        message: &str,
    ) {
        self.inner.error(driver, code, offer_id, message);
    }
}

/// A framework registration with the demo's defaults.
pub fn registration(name: &str) -> Register {
    Register {
        name: name.to_owned(),
        role: "demo".to_owned(),
        weight: 1.0,
        priority: 0,
        guarantee: None,
        failover_timeout_ms: 10_000,
        ..Register::new(name)
    }
}

/// Where a framework connects.
pub fn scheduler_config(broker: &BrokerAddr, client: &str, name: &str) -> SchedulerConfig {
    SchedulerConfig {
        brokers: broker.into(),
        client_name: client.to_owned(),
        registration: registration(name),
        credential: None,
    }
}

/// The executor prefix that runs `framework`'s executor through this binary.
pub fn executor(exe: &Path, framework: &str) -> Vec<String> {
    vec![
        exe.display().to_string(),
        "__exec".to_owned(),
        framework.to_owned(),
    ]
}

/// Runs the demo until Ctrl-C.
pub async fn run(cluster: &LocalCluster, exe: &Path) -> Result<(), String> {
    println!("Demo: the pi and sensor frameworks share the cluster by DRF. Ctrl-C to stop.");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let broker = cluster.broker.clone();
    let sensor_exe = executor(exe, "sensor");
    let sensor_stop = stopped(stop_rx.clone());
    let sensor = tokio::spawn(async move {
        let mut options = SensorOptions::new(sensor_exe);
        options.interval_ms = 500;
        let inner = SensorScheduler::new(options).map_err(|e| e.to_string())?;
        let mut printed: std::collections::BTreeMap<String, u64> = Default::default();
        let watched = Watched::new(inner, move |s: &SensorScheduler| {
            for (agent, sum) in s.summaries() {
                if printed.get(agent) == Some(&sum.readings) {
                    continue;
                }
                printed.insert(agent.clone(), sum.readings);
                println!(
                    "  sensor  {agent}: {:.1} °C (mean {:.1}, σ {:.2}, {} readings, {} anomalies)",
                    sum.last, sum.mean, sum.stddev, sum.readings, sum.anomalies
                );
            }
        });
        let config = scheduler_config(&broker, "demo-sensor", "sensor");
        scheduler::run_until(config, watched, sensor_stop)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    });

    let broker = cluster.broker.clone();
    let pi_exe = executor(exe, "pi");
    let mut pi_stop = stop_rx.clone();
    let pi = tokio::spawn(async move {
        let mut job = 0u64;
        loop {
            job += 1;
            let mut options = PiOptions::new(pi_exe.clone());
            options.seed = job;
            let inner = PiScheduler::new(options).map_err(|e| e.to_string())?;
            println!(
                "  pi      job {job}: {} tasks of 2,000,000 samples",
                inner.progress().1
            );
            let config = scheduler_config(&broker, &format!("demo-pi-{job}"), "pi");
            let done = scheduler::run_until(config, inner, stopped(pi_stop.clone()))
                .await
                .map_err(|e| e.to_string())?;
            match (done.estimate(), done.failure()) {
                (_, Some(why)) => println!("  pi      job {job} failed: {why}"),
                (Some(pi), None) => {
                    let (inside, total) = done.samples();
                    println!(
                        "  pi      job {job}: π ≈ {pi:.6} from {total} samples ({inside} inside), error {:.1e}",
                        (pi - std::f64::consts::PI).abs()
                    );
                }
                (None, None) => return Ok::<(), String>(()), // stopped
            }
            tokio::select! {
                _ = pi_stop.wait_for(|s| *s) => return Ok(()),
                () = tokio::time::sleep(Duration::from_secs(3)) => {}
            }
        }
    });

    let mut snapshots = cluster.snapshots.clone();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = print_shares(&mut snapshots) => {}
    }
    println!("stopping the frameworks (their tasks are killed)");
    let _ = stop_tx.send(true);
    for (name, handle) in [("sensor", sensor), ("pi", pi)] {
        match tokio::time::timeout(Duration::from_secs(10), handle).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("{name}: {e}"),
            Ok(Err(e)) => eprintln!("{name}: {e}"),
            Err(_) => eprintln!("{name} did not stop within 10 s"),
        }
    }
    Ok(())
}

/// Prints the frameworks' dominant shares whenever they change.
pub async fn print_shares(snapshots: &mut tokio::sync::watch::Receiver<Snapshot>) {
    let mut last = String::new();
    while snapshots.changed().await.is_ok() {
        let line = {
            let s = snapshots.borrow();
            s.frameworks
                .iter()
                .filter(|f| !f.name.is_empty())
                .map(|f| {
                    format!(
                        "{} {:.0}% ({} tasks)",
                        f.name,
                        f.dominant_share * 100.0,
                        f.tasks
                    )
                })
                .collect::<Vec<_>>()
                .join(" | ")
        };
        if !line.is_empty() && line != last {
            println!("  shares  {line}");
            last = line;
        }
    }
}
