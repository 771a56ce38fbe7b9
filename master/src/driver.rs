//! The master's driver: connects [`MasterCore`] to an MQTT broker (the embedded one, or any external
//! MQTT 3.1.1 broker) on tokio.
//!
//! # Three tasks, and why they cannot deadlock
//!
//! - The **reader** polls rumqttc's event loop through a [`Session`] (resubscribing on every
//!   ConnAck, backing off on errors) and hands each incoming publish to the core loop over a
//!   bounded channel ([`INCOMING_CAPACITY`]). It waits for the core loop only.
//! - The **core loop** owns the core: it feeds it those messages and its timer, and moves what the
//!   core and the status publisher send into the outgoing queue ([`crate::outbox::OutQueue`])
//!   *without waiting*: when the queue is full it sheds by the policy stated there (messages the
//!   protocol repeats first, dashboard status coalesced per topic, every shed counted by kind and
//!   reason). It waits on nothing but its inputs, and turns at least once a second (a heartbeat),
//!   noting each turn for `/metrics` (`bramble_master_loop_last_turn_age_seconds`).
//! - The **publisher** takes the queue's messages one at a time and awaits
//!   `AsyncClient::publish`, i.e. room in rumqttc's request channel, which the reader's event loop
//!   drains.
//!
//! So the waits go reader → core loop and publisher → reader, never around a cycle: the master's
//! reading never waits on its writing. (The driver used to await each publish in the core loop.
//! Under a burst of incoming messages that each asked for an answer, the request channel and the
//! incoming channel, 1,024 slots each, both filled, and the core loop and the reader waited for
//! each other forever, while `/metrics` served frozen numbers.)
//!
//! Memory stays bounded: the incoming channel by its capacity (the reader then leaves messages in
//! the socket, and the broker holds or drops them by its own limits), the outgoing queue by its
//! limits, the core's outbox by what one batch of [`INCOMING_BATCH`] messages or one timer tick
//! makes, since the loop empties it every turn.
//!
//! # Spreading
//!
//! Health pings are spread by the core (`Config::ping_spread`: a tenth of the agents per check, a
//! check every tenth of `ping_interval_ms`, by default); an allocation round sends one
//! offers event per framework. The publisher hands messages to rumqttc one at a time, so a burst
//! the core makes leaves at the rate the event loop writes it (at most
//! `ClientConfig::inflight` QoS 1 publishes unacknowledged), while the core loop goes on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use agent_nostd_core::topic::QoS;
use bramble_mqtt::{Session, SessionEvent};
use rumqttc::AsyncClient;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tracing::{debug, info, trace, warn};

use crate::outbox::{Entry, Kind, Limits, OutQueue, ShedReason};
use crate::web::{QueueStats, WebState};
use bramble_master_core::status::{FollowerStatus, Observed, StatusPublisher};
use bramble_master_core::{Config, ConfigError, FrameworkView, MasterCore, Stats};

pub use crate::leadership::Leadership;
pub use crate::mqtt::{BrokerAddr, Brokers, MAX_PACKET};

/// Why the master stopped.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// The master configuration is invalid.
    #[error("invalid master config: {0}")]
    Config(#[from] ConfigError),
    /// The master's name is not 1–32 bytes of `A-Z a-z 0-9 . _ -`.
    #[error("invalid master name {0:?}: use 1-32 bytes of A-Z a-z 0-9 . _ -")]
    BadName(String),
    /// The leader's task panicked (a bug).
    #[error("the leader stopped unexpectedly: {0}")]
    LeaderPanicked(String),
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

/// Runs the master against the broker at `broker` (failing over between several) until
/// `shutdown` completes. When `snapshots` is given, a [`Snapshot`] is sent to it about once a
/// second.
pub async fn run(
    config: Config,
    broker: impl Into<Brokers>,
    snapshots: Option<watch::Sender<Snapshot>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), MasterError> {
    run_with_web(config, broker, snapshots, None, shutdown).await
}

/// The most incoming messages handled before the master's outputs are queued.
pub const INCOMING_BATCH: usize = 32;

/// The incoming messages the reader may hand over before the core loop takes them.
pub const INCOMING_CAPACITY: usize = 1_024;

/// At most one warning about shed messages per this long.
const SHED_WARN_EVERY: Duration = Duration::from_secs(5);

/// The outgoing queue, shared by the core loop (which fills it) and the publisher (which empties
/// it).
#[derive(Debug, Default)]
struct Outgoing {
    queue: Mutex<OutQueue>,
    /// Wakes the publisher when the queue was filled.
    filled: Notify,
}

impl Outgoing {
    fn lock(&self) -> MutexGuard<'_, OutQueue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The publisher task: publishes the queue's messages in order, waiting for rumqttc to take each.
async fn publish(client: AsyncClient, out: Arc<Outgoing>) {
    loop {
        let next = out.lock().pop();
        let Some(e) = next else {
            out.filled.notified().await;
            continue;
        };
        let qos = match e.qos {
            QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
            QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        };
        // rumqttc fails its connection on a packet above its outgoing limit and sends the same
        // packet again after the reconnect: one message that large would loop for ever.
        let len = bramble_mqtt::publish_len(&e.topic, e.payload.len(), qos);
        if len > MAX_PACKET {
            warn!(topic = %e.topic, len, kind = e.kind.label(), "dropped a publish above the broker's packet limit");
            continue;
        }
        trace!(topic = %e.topic, kind = e.kind.label(), "publishing");
        if let Err(err) = client.publish(e.topic, qos, e.retain, e.payload).await {
            // Only when the event loop is gone, i.e. the master is stopping.
            return debug!("the publisher stops: {err}");
        }
    }
}

/// Warns about shed messages at most once per [`SHED_WARN_EVERY`], with how many since.
#[derive(Debug, Default)]
struct ShedLog {
    last: Option<Instant>,
    since: u64,
}

impl ShedLog {
    fn note(&mut self, (kind, reason): (Kind, ShedReason)) {
        if reason == ShedReason::Superseded {
            return; // nothing was lost
        }
        self.since += 1;
        let now = Instant::now();
        if self
            .last
            .is_none_or(|t| now.duration_since(t) >= SHED_WARN_EVERY)
        {
            warn!(
                shed = self.since,
                last_kind = kind.label(),
                last_reason = reason.label(),
                "the outgoing queue is full: shedding messages (see bramble_master_messages_shed_total)"
            );
            self.last = Some(now);
            self.since = 0;
        }
    }
}

/// What the reader hands the core loop.
enum Inbound {
    /// A message, by topic.
    Publish(String, Vec<u8>),
    /// The broker accepted a (re)connection, and said whether it still held the session.
    Connected {
        /// `false`: the broker lost every session (it restarted), the retained hello with it.
        session_present: bool,
    },
}

fn handle_inbound(
    core: &mut MasterCore,
    status: &mut StatusPublisher,
    drops: &mut DropLog,
    now: u64,
    inbound: Inbound,
) {
    match inbound {
        Inbound::Publish(topic, payload) => {
            handle_incoming(core, status, drops, now, &topic, &payload)
        }
        Inbound::Connected { session_present } => core.handle_connected(now, session_present),
    }
}

/// Hands one incoming message to the core by its topic (or, on a status topic, to the status
/// publisher, which repairs what is not its own); a bad one is logged, counted and dropped.
fn handle_incoming(
    core: &mut MasterCore,
    status: &mut StatusPublisher,
    drops: &mut DropLog,
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
        core.handle_framework_bytes(now, wall_secs(), topic, payload)
    } else if topic.starts_with(bramble_master_core::master::OPERATOR_PREFIX) {
        core.handle_operator_bytes(now, wall_secs(), topic, payload)
    } else {
        core.handle_agent_bytes(now, topic, payload)
    };
    if let Err(e) = result {
        drops.dropped(now, topic, payload.len(), &e);
    }
}

/// The wall clock in seconds since the Unix epoch (operator commands carry theirs).
fn wall_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Logs dropped messages without flooding: the first at once, then at most one a second with how
/// many went unlogged meanwhile (each is counted by reason in `/metrics` regardless).
#[derive(Debug, Default)]
struct DropLog {
    quiet_until: u64,
    unlogged: u64,
}

impl DropLog {
    const EVERY_MS: u64 = 1_000;

    fn dropped(&mut self, now: u64, topic: &str, len: usize, e: &bramble_master_core::RecvError) {
        if now < self.quiet_until {
            self.unlogged += 1;
            return;
        }
        let unlogged = std::mem::take(&mut self.unlogged);
        self.quiet_until = now + Self::EVERY_MS;
        warn!(%topic, len, unlogged, "dropped a message: {e} (see bramble_agent_frames_dropped_total and bramble_messages_dropped_total)");
    }
}

/// [`run`], also feeding `web` (the dashboard and `/metrics`): every status message, the core's
/// counters and the duration of the timer ticks that ran an allocation round. `web` is closed when
/// the master stops. The master is elected as [`Leadership::default`] says (it leads unless
/// another master does).
pub async fn run_with_web(
    config: Config,
    broker: impl Into<Brokers>,
    snapshots: Option<watch::Sender<Snapshot>>,
    web: Option<WebState>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), MasterError> {
    crate::leadership::run(
        config,
        broker.into(),
        Leadership::default(),
        snapshots,
        web,
        shutdown,
    )
    .await
}

/// Why a leader stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The master stops: say `offline` on the availability topic.
    Shutdown,
    /// A newer leader is up: leave without a word (its `online` stands).
    StepDown,
}

/// What a leader is given besides its config: its epoch and name, and its ties to the election.
pub(crate) struct LeaderLink {
    /// The master's name: its client id is `bramble-master-{name}`.
    pub name: String,
    /// The login of its connections, if the broker wants one.
    pub login: Option<bramble_mqtt::Login>,
    /// The agents' message keys as the credential store has them (`None`: the config's).
    pub principal_keys: Option<watch::Receiver<bramble_master_core::PrincipalKeys>>,
    /// The epoch to lead under, from the election: it starts at the claimed one and is raised
    /// while leading.
    pub epoch: watch::Receiver<u64>,
    /// The newest epoch above ours that agents obey, for the election.
    pub newer: watch::Sender<Option<u64>>,
    /// The other masters ready to take over, from the election, for the availability topic.
    pub followers: watch::Receiver<Vec<FollowerStatus>>,
}

/// Leads the cluster under the epoch `link` gives until `stop` says why not.
pub(crate) async fn lead(
    config: Config,
    broker: Brokers,
    link: LeaderLink,
    snapshots: Option<watch::Sender<Snapshot>>,
    web: Option<WebState>,
    stop: impl std::future::Future<Output = Stop>,
) -> Result<(), MasterError> {
    let LeaderLink {
        name,
        login,
        principal_keys,
        epoch: mut raise,
        newer,
        mut followers,
    } = link;
    let epoch = *raise.borrow_and_update();
    let started = Instant::now();
    let now = || started.elapsed().as_millis() as u64;
    // Status JSON carries wall-clock times: the core's clock counts from this start.
    let wall_base_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut status = StatusPublisher::new(&config, wall_base_ms).with_master_name(&name);
    status.set_followers(followers.borrow_and_update().clone());
    // The store's keys as they are now, and whenever it changes (a sender that is gone, or none,
    // never wakes the loop).
    let mut principal_keys =
        principal_keys.unwrap_or_else(|| watch::channel(config.principal_keys.clone()).1);
    let config = Config {
        principal_keys: principal_keys.borrow_and_update().clone(),
        ..config
    };
    let mut core = MasterCore::new(config, epoch, now())?;
    StatusPublisher::attach(&mut core);
    info!(%broker, epoch = format_args!("{epoch:#x}"), %name, "leading the cluster");

    // Dashboards learn of a dead master from its last will: `offline`, retained.
    let (will_topic, will_payload) = StatusPublisher::last_will(epoch, Some(&name));
    let mqtt = bramble_mqtt::ClientConfig {
        login: login.clone(),
        max_packet: (crate::mqtt::MAX_INCOMING, MAX_PACKET),
        last_will: Some(rumqttc::LastWill::new(
            will_topic,
            will_payload,
            rumqttc::QoS::AtLeastOnce,
            true,
        )),
        ..bramble_mqtt::ClientConfig::new(format!("bramble-master-{name}"), broker.clone())
    };
    // Its own status topics too, to repair what others publish there.
    let mut filters = MasterCore::subscriptions();
    filters.push(bramble_master_core::status::STATUS_FILTER.to_owned());
    // A clean start: what the broker queued for this id during an earlier leadership of this
    // master was for whoever led since (say, a framework's accept of that leader's offer).
    let mut session = Session::new("master", mqtt, filters).with_clean_start();
    let client = session.client().clone();
    let (incoming_tx, mut incoming) = mpsc::channel::<Inbound>(INCOMING_CAPACITY);
    let out = Arc::new(Outgoing {
        queue: Mutex::new(OutQueue::new(Limits::default())),
        filled: Notify::new(),
    });
    let publisher = tokio::spawn(publish(client.clone(), out.clone()));
    let mut shed_log = ShedLog::default();
    let mut drops = DropLog::default();
    // Counted by the reader, so `/metrics` shows messages arriving even while the loop is behind.
    let received = Arc::new(AtomicU64::new(0));
    let counted = received.clone();
    let mut poller = tokio::spawn(async move {
        loop {
            let inbound = match session.poll().await {
                SessionEvent::Publish(p) => {
                    counted.fetch_add(1, Ordering::Relaxed);
                    Inbound::Publish(p.topic, p.payload.to_vec())
                }
                SessionEvent::Connected => Inbound::Connected {
                    session_present: session.session_present(),
                },
                SessionEvent::Disconnected => return,
                _ => continue,
            };
            if incoming_tx.send(inbound).await.is_err() {
                return;
            }
        }
    });

    // Retained status a previous master left on the broker: cleared unless this one republishes it.
    let stale =
        crate::mqtt::retained_topics_as(&broker, &status.stale_filters(), login.as_ref()).await;
    status.clear_stale_at(stale, now() + bramble_master_core::status::STALE_GRACE_MS);
    tokio::pin!(stop);
    let stopped;
    // The heartbeat: the loop turns at least this often (and sends snapshots, if asked).
    let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        if let Some(w) = &web {
            w.loop_turned();
        }
        // Encoded and rendered before taking the lock, so the publisher waits for neither. The
        // dashboard's retained status topics go after the protocol's own messages; while too
        // many wait, the core's change notes wait instead (bounded: they overflow into a full
        // render).
        let entries: Vec<Entry> = std::iter::from_fn(|| core.poll_transmit())
            .map(|t| Entry::from_transmit(&t))
            .collect();
        let mut statuses = Vec::new();
        if !out.lock().status_full() {
            status.update(&mut core, now());
            while let Some(t) = status.poll_transmit() {
                if let Some(w) = &web {
                    w.publish(&t.topic, &t.payload);
                }
                statuses.push(t);
            }
        }
        // Operators' status queries, answered from what the publisher published.
        let replies: Vec<Entry> = std::iter::from_fn(|| core.poll_query())
            .map(|q| Entry {
                topic: q.reply_topic(),
                qos: QoS::AtLeastOnce,
                retain: false,
                payload: q.seal(&status.answer(&q)),
                kind: crate::outbox::Kind::OperatorReply,
            })
            .collect();
        let (queued, rendered) = (
            !entries.is_empty() || !replies.is_empty(),
            !statuses.is_empty(),
        );
        let queue_stats = {
            let mut queue = out.lock();
            for e in entries.into_iter().chain(replies) {
                if let Some(shed) = queue.push(e) {
                    shed_log.note(shed);
                }
            }
            for t in statuses {
                if let Some(shed) = queue.push_status(t.topic, t.payload) {
                    shed_log.note(shed);
                }
            }
            queue.stats()
        };
        if queued || rendered {
            out.filled.notify_one();
        }
        if let Some(w) = &web {
            w.set_stats(core.stats());
            w.set_queues(QueueStats {
                outgoing: queue_stats,
                incoming_depth: incoming.len(),
                received: received.load(Ordering::Relaxed),
            });
        }
        newer.send_if_modified(|n| {
            let changed = *n != core.newer_epoch();
            *n = core.newer_epoch();
            changed
        });
        let wake = core
            .poll_timeout()
            .map(|t| started + Duration::from_millis(t));
        tokio::select! {
            why = &mut stop => {
                stopped = why;
                break;
            }
            Ok(()) = followers.changed() => {
                status.set_followers(followers.borrow_and_update().clone());
            }
            Ok(()) = principal_keys.changed() => {
                let keys = principal_keys.borrow_and_update().clone();
                info!(agents = keys.len(), "the agents' keys changed");
                core.set_principal_keys(keys);
            }
            Ok(()) = raise.changed() => {
                let epoch = *raise.borrow_and_update();
                info!(epoch = format_args!("{epoch:#x}"), "leading on under a higher epoch than the agents obey");
                core.raise_epoch(epoch);
            }
            Some(inbound) = incoming.recv() => {
                handle_inbound(&mut core, &mut status, &mut drops, now(), inbound);
                // What has arrived meanwhile is handled before the outputs go: a STARTING and a
                // RUNNING that came together leave together, ahead of the status topics, which
                // are rendered once for both.
                for _ in 1..INCOMING_BATCH {
                    let Ok(inbound) = incoming.try_recv() else {
                        break;
                    };
                    handle_inbound(&mut core, &mut status, &mut drops, now(), inbound);
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
            _ = heartbeat.tick() => {
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
    publisher.abort();
    if stopped == Stop::Shutdown {
        info!("master stopping");
        // A clean stop publishes no last will: say `offline` ourselves (after anything the
        // publisher still had), then leave.
        let (topic, offline) = StatusPublisher::last_will(core.epoch(), Some(&name));
        let _ = client.try_publish(topic, rumqttc::QoS::AtLeastOnce, true, offline);
    } else {
        info!("a newer master leads: stepping down");
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(1), &mut poller).await;
    poller.abort();
    debug!("master stopped");
    Ok(())
}

/// Sleeps until `at`, or for ever when there is nothing to wake for.
pub(crate) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
