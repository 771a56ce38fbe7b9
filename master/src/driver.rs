//! The master's driver: connects [`MasterCore`] to an MQTT broker (the embedded one, or any external
//! MQTT 3.1.1 broker) on tokio.
//!
//! Two tasks: one polls rumqttc's event loop (resubscribing on every ConnAck, backing off on errors,
//! forwarding incoming publishes through a bounded channel), the other owns the core, feeds it those
//! payloads and its timer, and awaits each publish. Publishing from a task other than the one polling
//! the event loop cannot deadlock, and awaiting gives back-pressure instead of dropped launches.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agent_nostd_core::topic::QoS;
use bramble_mqtt::{Session, SessionEvent};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, trace, warn};

use crate::web::WebState;
use bramble_master_core::status::{Observed, StatusPublisher};
use bramble_master_core::{Config, ConfigError, FrameworkView, MasterCore, Stats};

pub use crate::mqtt::{BrokerAddr, MAX_PACKET};

/// Why the master stopped.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// The master configuration is invalid.
    #[error("invalid master config: {0}")]
    Config(#[from] ConfigError),
}

/// A snapshot of the cluster for people (`bramble up` prints it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Reachable agents.
    pub agents: usize,
    /// Tasks not yet ended on reachable agents, as the master knows.
    pub running_tasks: usize,
    /// Every framework.
    pub frameworks: Vec<FrameworkView>,
    /// The master's counters.
    pub stats: Stats,
}

/// Runs the master against the broker at `broker` until `shutdown` completes. When `snapshots` is
/// given, a [`Snapshot`] is sent to it about once a second.
pub async fn run(
    config: Config,
    broker: BrokerAddr,
    snapshots: Option<watch::Sender<Snapshot>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), MasterError> {
    run_with_web(config, broker, snapshots, None, shutdown).await
}

/// The most incoming messages handled before the master's outputs are sent.
const INCOMING_BATCH: usize = 32;

/// Hands one incoming message to the core by its topic (or, on a status topic, to the status
/// publisher, which repairs what is not its own); a bad one is logged, counted and dropped.
fn handle_incoming(
    core: &mut MasterCore,
    status: &mut StatusPublisher,
    now: u64,
    topic: &str,
    payload: &[u8],
) {
    trace!(%topic, len = payload.len(), "received a publish");
    if topic.starts_with(bramble_master_core::status::STATUS_PREFIX) {
        if status.observe(topic, payload, now) == Observed::Repaired {
            let n = status.foreign();
            if n.is_power_of_two() {
                warn!(%topic, len = payload.len(), n, "a foreign payload on a status topic of this master's; publishing its value again");
            }
        }
        return;
    }
    let result = if topic.starts_with(bramble_proto::FRAMEWORK_PREFIX) {
        core.handle_framework_bytes(now, topic, payload)
    } else if topic.starts_with(bramble_master_core::master::OPERATOR_PREFIX) {
        core.handle_operator_bytes(now, topic, payload)
    } else {
        core.handle_agent_bytes(now, topic, payload)
    };
    if let Err(e) = result {
        let s = core.stats();
        warn!(%topic, len = payload.len(), ?s, "dropped a message: {e}");
    }
}

/// [`run`], also feeding `web` (the dashboard and `/metrics`): every status message, the core's
/// counters and the duration of the timer ticks that ran an allocation round. `web` is closed when
/// the master stops.
pub async fn run_with_web(
    config: Config,
    broker: BrokerAddr,
    snapshots: Option<watch::Sender<Snapshot>>,
    web: Option<WebState>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), MasterError> {
    // The epoch tells agents and frameworks that this is a new master: the start time in ms is
    // unique per start (and never 0).
    let epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64)
        .max(1);
    let started = Instant::now();
    let now = || started.elapsed().as_millis() as u64;
    let mut status = StatusPublisher::new(&config, epoch);
    let mut core = MasterCore::new(config, epoch, now())?;
    StatusPublisher::attach(&mut core);
    info!(%broker, epoch, "master starting");

    let (client, eventloop) = bramble_mqtt::connect(bramble_mqtt::ClientConfig {
        max_packet: (crate::mqtt::MAX_INCOMING, MAX_PACKET),
        ..bramble_mqtt::ClientConfig::new("bramble-master", broker.host.clone(), broker.port)
    });
    let (incoming_tx, mut incoming) = mpsc::channel::<(String, Vec<u8>)>(1024);
    // Its own status topics too, to repair what others publish there.
    let mut filters = MasterCore::subscriptions();
    filters.push(bramble_master_core::status::STATUS_FILTER.to_owned());
    let mut session = Session::new("master", client.clone(), eventloop, filters);
    let poller = tokio::spawn(async move {
        loop {
            if let SessionEvent::Publish(p) = session.poll().await {
                if incoming_tx
                    .send((p.topic, p.payload.to_vec()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    });

    // Retained status a previous master left on the broker: cleared unless this one republishes it.
    let stale = crate::mqtt::retained_topics(&broker, &status.stale_filters()).await;
    status.clear_stale_at(stale, now() + bramble_master_core::status::STALE_GRACE_MS);
    tokio::pin!(shutdown);
    let mut snapshot_tick = tokio::time::interval(Duration::from_secs(1));
    snapshot_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        while let Some(t) = core.poll_transmit() {
            let qos = match t.qos {
                QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
                QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
            };
            match client
                .publish(t.topic.clone(), qos, t.retain, t.payload())
                .await
            {
                Ok(()) => trace!(topic = %t.topic, "queued a publish"),
                Err(e) => warn!("cannot publish on {}: {e}", t.topic),
            }
        }
        // The dashboard's retained status topics, after the protocol's own messages.
        status.update(&mut core, now());
        while let Some(t) = status.poll_transmit() {
            if let Some(w) = &web {
                w.publish(&t.topic, &t.payload);
            }
            let (qos, retain) = (rumqttc::QoS::AtLeastOnce, true);
            if let Err(e) = client
                .publish(t.topic.clone(), qos, retain, t.payload)
                .await
            {
                warn!("cannot publish on {}: {e}", t.topic);
            }
        }
        if let Some(w) = &web {
            w.set_stats(core.stats());
        }
        let wake = core
            .poll_timeout()
            .map(|t| started + Duration::from_millis(t));
        tokio::select! {
            () = &mut shutdown => break,
            Some((topic, payload)) = incoming.recv() => {
                handle_incoming(&mut core, &mut status, now(), &topic, &payload);
                // What has arrived meanwhile is handled before the outputs go: a STARTING and a
                // RUNNING that came together leave together, ahead of the status topics, which
                // are rendered once for both.
                for _ in 1..INCOMING_BATCH {
                    let Ok((topic, payload)) = incoming.try_recv() else {
                        break;
                    };
                    handle_incoming(&mut core, &mut status, now(), &topic, &payload);
                }
            }
            () = sleep_until(wake) => {
                let rounds = core.stats().allocation_rounds;
                let started_at = std::time::Instant::now();
                core.handle_timeout(now());
                if let Some(w) = web.as_ref().filter(|_| core.stats().allocation_rounds != rounds) {
                    w.observe_round(started_at.elapsed());
                }
            }
            _ = snapshot_tick.tick(), if snapshots.is_some() => {
                if let Some(tx) = &snapshots {
                    let frameworks = core
                        .framework_ids()
                        .iter()
                        .filter_map(|id| core.framework(id))
                        .collect();
                    let reachable: Vec<_> = core
                        .agent_ids()
                        .iter()
                        .filter_map(|id| core.agent(id))
                        .filter(|a| a.reachable)
                        .collect();
                    let _ = tx.send(Snapshot {
                        agents: reachable.len(),
                        running_tasks: reachable.iter().map(|a| a.tasks).sum(),
                        frameworks,
                        stats: *core.stats(),
                    });
                }
            }
        }
    }
    info!("master stopping");
    if let Some(w) = &web {
        w.close();
    }
    let _ = client.try_disconnect();
    poller.abort();
    debug!("master stopped");
    Ok(())
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
