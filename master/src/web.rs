//! The web dashboard and the Prometheus metrics, over HTTP (axum).
//!
//! The driver hands every status message it publishes on MQTT (the retained JSON under
//! `bramble/v1/status/…`, see `PROTOCOL.md`) to a [`WebState`] as well. The state keeps the latest
//! payload of every live status topic (bounded by [`MAX_TOPICS`]) and forwards each message on a
//! bounded [`tokio::sync::broadcast`] channel. The page subscribes to `GET /events`
//! (Server-Sent Events) and so sees exactly what an MQTT dashboard sees: first a snapshot of every
//! live topic, then the changes, each as one event `{"topic": "...", "payload": <json or null>}`
//! (`null`: the topic was cleared). A client too slow for the channel gets a `reset` event and a
//! fresh snapshot instead of an unbounded queue.
//!
//! # Layout
//!
//! - `GET /`, `/app.js`, `/style.css`: the page, embedded in the binary (`src/web/`); no CDN.
//! - `GET /events`: the status stream, as above. An event named `reset` tells the page to forget
//!   what it has (a snapshot follows), one named `ready` ends the snapshot. The page opened as
//!   `/?once` renders the snapshot and closes the stream (a static page: for screenshots, printing,
//!   and headless browsers, whose virtual time waits for open connections).
//! - `GET /metrics`: Prometheus text exposition format (0.0.4), written by hand: gauges from the
//!   cluster summary topic, counters from the core's [`Stats`], and the allocation round duration
//!   histogram the driver measures around the rounds (the core reads no clock), and the driver's
//!   own health: its queues' depths, the messages it shed (by kind and reason, see
//!   [`crate::outbox`]) and how long ago its core loop last turned
//!   (`bramble_master_loop_last_turn_age_seconds`, computed at scrape time: the loop turns at least
//!   once a second, so a value growing past that is a stuck master, whose other numbers are frozen),
//!   and the HTTP requests refused for want of a valid signature (`bramble_http_refused_total`, by
//!   reason; see [`crate::http`]).
//!
//! Every route here is a read-only `GET`: other methods get `405 Method Not Allowed`, and nothing
//! over HTTP changes the master's state. The dashboard and `/metrics` need no signature.
//!
//! [`routes`] gives a [`Router`] that can be merged into another; [`bind`] and [`serve`] run it.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use futures_util::Stream;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tracing::{debug, info, warn};

use bramble_master_core::election::ElectionStats;
use bramble_master_core::status::{ClusterStatus, CLUSTER_TOPIC, STATUS_PREFIX};
use bramble_master_core::Stats;

use crate::http::HttpRefusals;
use crate::outbox::{Kind, OutStats, ShedReason};
use bramble_mqtt::http_auth::Refused;

/// How many status messages the broadcast channel holds for a slow page before it lags.
pub const EVENTS_CAPACITY: usize = 1_024;
/// The most status topics kept for snapshots (more than the status publisher ever holds for a
/// cluster within [`Config::max_agents`](bramble_master_core::Config::max_agents)).
pub const MAX_TOPICS: usize = 200_000;
/// The upper bounds (seconds) of the allocation round duration histogram's buckets.
pub const ROUND_BUCKETS: [f64; 12] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

const INDEX_HTML: &str = include_str!("web/index.html");
const APP_JS: &str = include_str!("web/app.js");
const STYLE_CSS: &str = include_str!("web/style.css");

/// Why the HTTP server stopped or did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebError {
    /// The address could not be bound.
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server failed.
    #[error("HTTP server: {0}")]
    Serve(std::io::Error),
}

/// What the dashboard and the metrics read; cheap to clone (shared). The driver feeds it.
#[derive(Debug, Clone)]
pub struct WebState {
    hub: Arc<Hub>,
}

#[derive(Debug)]
struct Hub {
    topics: Mutex<Topics>,
    metrics: Mutex<MetricsState>,
    closed: watch::Sender<bool>,
    /// HTTP requests refused for want of a valid signature (counted by [`crate::http::HttpAuth`]).
    http_refusals: Arc<HttpRefusals>,
}

/// The live topics and the channel, under one lock, so a snapshot and the changes after it line up.
#[derive(Debug)]
struct Topics {
    /// Topic → its latest event JSON (`{"topic":…,"payload":…}`).
    current: BTreeMap<String, Arc<str>>,
    tx: broadcast::Sender<Arc<str>>,
    full_warned: bool,
}

#[derive(Debug, Default)]
struct MetricsState {
    stats: Stats,
    /// Per bucket of [`ROUND_BUCKETS`] (not cumulative), then the rounds above the last.
    buckets: [u64; ROUND_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
    /// When the driver's core loop last turned.
    last_turn: Option<std::time::Instant>,
    /// The driver's queues.
    queues: QueueStats,
    /// This master's part in the election.
    election: ElectionMetrics,
}

/// This master's part in the election, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ElectionMetrics {
    /// The epoch it leads under, or `None` while it follows.
    pub leading: Option<u64>,
    /// The other masters ready to take over.
    pub followers: usize,
    /// The election's counters.
    pub stats: ElectionStats,
}

/// The driver's queues, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// The outgoing queue's depths and counters.
    pub outgoing: OutStats,
    /// Incoming messages waiting for the core loop.
    pub incoming_depth: usize,
    /// Messages the reader took from the broker since the master started.
    pub received: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Default for WebState {
    fn default() -> Self {
        Self::new()
    }
}

impl WebState {
    /// An empty state.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(EVENTS_CAPACITY);
        WebState {
            hub: Arc::new(Hub {
                topics: Mutex::new(Topics {
                    current: BTreeMap::new(),
                    tx,
                    full_warned: false,
                }),
                metrics: Mutex::new(MetricsState::default()),
                closed: watch::Sender::new(false),
                http_refusals: Arc::default(),
            }),
        }
    }

    /// A status message the master published: `payload` is its JSON, or empty when the topic was
    /// cleared. Topics outside `bramble/v1/status/` (Home Assistant discovery) are ignored.
    pub fn publish(&self, topic: &str, payload: &[u8]) {
        if !topic.starts_with(STATUS_PREFIX) {
            return;
        }
        let json = if payload.is_empty() {
            "null"
        } else {
            match std::str::from_utf8(payload) {
                Ok(s) => s,
                Err(_) => return warn!(%topic, "a status payload is not UTF-8; not shown"),
            }
        };
        let event: Arc<str> = format!(
            "{{\"topic\":{},\"payload\":{json}}}",
            Value::String(topic.to_owned())
        )
        .into();
        let mut t = lock(&self.hub.topics);
        if payload.is_empty() {
            t.current.remove(topic);
        } else if t.current.len() < MAX_TOPICS || t.current.contains_key(topic) {
            t.current.insert(topic.to_owned(), event.clone());
        } else {
            if !t.full_warned {
                t.full_warned = true;
                warn!("more than {MAX_TOPICS} status topics: the dashboard shows some only");
            }
            return;
        }
        // No receiver (no page open) is fine.
        let _ = t.tx.send(event);
    }

    /// The core's counters, for `/metrics`.
    pub fn set_stats(&self, stats: &Stats) {
        let mut m = lock(&self.hub.metrics);
        if m.stats != *stats {
            m.stats = *stats;
        }
    }

    /// The driver's core loop turned (now).
    pub fn loop_turned(&self) {
        lock(&self.hub.metrics).last_turn = Some(std::time::Instant::now());
    }

    /// The driver's queues: the outgoing one's depths and counters, the incoming messages waiting
    /// for the core loop and those received.
    pub fn set_queues(&self, queues: QueueStats) {
        lock(&self.hub.metrics).queues = queues;
    }

    /// This master's part in the election.
    pub fn set_election(&self, election: ElectionMetrics) {
        let mut m = lock(&self.hub.metrics);
        if m.election != election {
            m.election = election;
        }
    }

    /// One allocation round took `d`.
    pub fn observe_round(&self, d: Duration) {
        let s = d.as_secs_f64();
        let mut m = lock(&self.hub.metrics);
        let i = ROUND_BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(ROUND_BUCKETS.len());
        m.buckets[i] += 1;
        m.sum += s;
        m.count += 1;
    }

    /// The counters of HTTP requests refused for want of a valid signature, shown in `/metrics`
    /// as `bramble_http_refused_total{reason=…}`: hand them to [`crate::http::HttpAuth::new`].
    pub fn http_refusals(&self) -> Arc<HttpRefusals> {
        Arc::clone(&self.hub.http_refusals)
    }

    /// The master stopped: open event streams end (so a graceful HTTP shutdown can finish).
    pub fn close(&self) {
        self.hub.closed.send_replace(true);
    }

    /// The latest JSON of every live status topic.
    pub fn snapshot(&self) -> BTreeMap<String, Value> {
        let t = lock(&self.hub.topics);
        t.current
            .iter()
            .filter_map(|(topic, e)| {
                let mut v: Value = serde_json::from_str(e).ok()?;
                Some((topic.clone(), v["payload"].take()))
            })
            .collect()
    }

    /// A receiver for the changes, and the snapshot it starts from.
    fn subscribe(&self) -> (broadcast::Receiver<Arc<str>>, Vec<Arc<str>>) {
        let t = lock(&self.hub.topics);
        (t.tx.subscribe(), t.current.values().cloned().collect())
    }

    /// `/metrics`: the Prometheus text exposition format.
    pub fn render_metrics(&self) -> String {
        /// A status event's payload, typed.
        #[derive(serde::Deserialize)]
        struct Published<T> {
            payload: T,
        }
        let cluster = lock(&self.hub.topics)
            .current
            .get(CLUSTER_TOPIC)
            .and_then(|e| serde_json::from_str::<Published<ClusterStatus>>(e).ok())
            .map(|e| e.payload);
        let (stats, buckets, sum, count, last_turn, queues, election) = {
            let m = lock(&self.hub.metrics);
            (
                m.stats,
                m.buckets,
                m.sum,
                m.count,
                m.last_turn,
                m.queues,
                m.election,
            )
        };
        let mut out = String::with_capacity(4_096);
        let c = cluster.as_ref();
        let num = |field: fn(&ClusterStatus) -> u64| c.map_or(0, field);
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            write_family(&mut out, name, kind, help, samples)
        };
        family(
            "agents",
            "gauge",
            "Agents known to the master, by state.",
            &[
                ("{state=\"online\"}", num(|c| c.agents_online as u64)),
                ("{state=\"offline\"}", num(|c| c.agents_offline as u64)),
            ],
        );
        family(
            "frameworks",
            "gauge",
            "Frameworks registered with the master.",
            &[("", num(|c| c.frameworks as u64))],
        );
        family(
            "frameworks_connected",
            "gauge",
            "Frameworks whose scheduler is connected.",
            &[("", num(|c| c.frameworks_connected as u64))],
        );
        let task_labels: Vec<(String, u64)> = c
            .map(|c| {
                c.tasks
                    .iter()
                    .map(|(state, n)| (format!("{{state=\"{state}\"}}"), n))
                    .collect()
            })
            .unwrap_or_default();
        let tasks: Vec<(&str, u64)> = task_labels.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        family(
            "tasks",
            "gauge",
            "Tasks by state: live ones, and those that ended since the master started.",
            &tasks,
        );
        family(
            "offers_outstanding",
            "gauge",
            "Offers made and not yet answered or rescinded.",
            &[("", num(|c| c.offers_outstanding as u64))],
        );
        family(
            "cpu_millis",
            "gauge",
            "CPU of the online agents, in thousandths of a core.",
            &[
                ("{kind=\"total\"}", num(|c| c.cpu_millis_total)),
                ("{kind=\"used\"}", num(|c| c.cpu_millis_used)),
            ],
        );
        family(
            "mem_mib",
            "gauge",
            "Memory of the online agents, in MiB.",
            &[
                ("{kind=\"total\"}", num(|c| c.mem_mib_total)),
                ("{kind=\"used\"}", num(|c| c.mem_mib_used)),
            ],
        );
        for (name, help, v) in [
            ("offers_made_total", "Offers made.", stats.offers_made),
            (
                "offers_accepted_total",
                "Offers answered with an accept.",
                stats.offers_accepted,
            ),
            (
                "offers_declined_total",
                "Offers answered with a decline.",
                stats.offers_declined,
            ),
            (
                "offers_rescinded_total",
                "Offers rescinded (timeout, agent lost, framework gone).",
                stats.offers_rescinded,
            ),
            (
                "accepts_refused_total",
                "Accepts refused (the tasks did not fit the offer, or were invalid).",
                stats.accepts_refused,
            ),
            (
                "tasks_launched_total",
                "Tasks launched.",
                stats.tasks_launched,
            ),
            (
                "revocations_total",
                "Tasks killed by revocation.",
                stats.revocations,
            ),
            (
                "status_updates_total",
                "Task status updates recorded and forwarded.",
                stats.status_updates,
            ),
            (
                "agent_registrations_total",
                "Agent registrations and re-registrations.",
                stats.agent_registrations,
            ),
            (
                "agents_lost_total",
                "Agents that became unreachable.",
                stats.agents_lost,
            ),
            (
                "allocation_rounds_total",
                "Allocation rounds run.",
                stats.allocation_rounds,
            ),
            (
                "unauthorized_total",
                "Registrations and accepts refused by the operator's authorization.",
                stats.unauthorized,
            ),
        ] {
            family(name, "counter", help, &[("", v)]);
        }
        family(
            "messages_dropped_total",
            "counter",
            "Messages dropped, by reason.",
            &[
                ("{reason=\"malformed\"}", stats.malformed),
                (
                    "{reason=\"unsupported_version\"}",
                    stats.unsupported_version,
                ),
                ("{reason=\"misrouted\"}", stats.misrouted),
                ("{reason=\"agents_refused\"}", stats.agents_refused),
                ("{reason=\"stale_will\"}", stats.stale_wills),
                (
                    "{reason=\"held_events_dropped\"}",
                    stats.held_events_dropped,
                ),
                (
                    "{reason=\"operator_queries_dropped\"}",
                    stats.queries_dropped,
                ),
            ],
        );
        let frame_drops = by_reason(&bramble_master_core::FrameDrop::ALL, |r| {
            (r.as_str(), stats.frames_dropped.get(r))
        });
        let framework_drops = by_reason(&bramble_master_core::FrameDrop::ALL, |r| {
            (r.as_str(), stats.framework_frames_dropped.get(r))
        });
        let operator_drops = by_reason(&bramble_master_core::master::OperatorDrop::ALL, |r| {
            (r.as_str(), stats.operator_commands_refused.get(r))
        });
        family(
            "framework_frames_dropped_total",
            "counter",
            "Framework calls dropped before they were read (unauthenticated, forged, stale, replayed, no session), by reason.",
            &labelled(&framework_drops),
        );
        family(
            "agent_frames_dropped_total",
            "counter",
            "Agent frames dropped before they were read (unauthenticated, forged, replayed), by reason.",
            &labelled(&frame_drops),
        );
        family(
            "operator_commands_refused_total",
            "counter",
            "Operator commands refused before they were read (unsigned, not an operator, forged, stale, replayed), by reason.",
            &labelled(&operator_drops),
        );
        family(
            "agent_registrations_misaddressed_total",
            "counter",
            "Authenticated agent registrations addressed to another master, answered with a re-registration request.",
            &[("", stats.registrations_misaddressed)],
        );
        let name = "bramble_allocation_round_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time the master spent in a timer tick that ran an allocation round."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, n) in ROUND_BUCKETS.iter().zip(buckets) {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
        let refused = by_reason(&Refused::ALL, |r| {
            (r.label(), self.hub.http_refusals.count(r))
        });
        write_family(
            &mut out,
            "http_refused_total",
            "counter",
            "HTTP requests refused for want of a valid signature (401), by reason.",
            &labelled(&refused),
        );
        render_driver(&mut out, last_turn, &queues);
        render_election(&mut out, &election);
        out
    }
}

/// The samples of a family counted by reason: `{reason="…"}` and the count, for each of `all`.
fn by_reason<R: Copy>(all: &[R], sample: impl Fn(R) -> (&'static str, u64)) -> Vec<(String, u64)> {
    all.iter()
        .map(|&r| {
            let (reason, n) = sample(r);
            (format!("{{reason=\"{reason}\"}}"), n)
        })
        .collect()
}

/// `samples` as [`write_family`] takes them.
fn labelled(samples: &[(String, u64)]) -> Vec<(&str, u64)> {
    samples.iter().map(|(l, v)| (l.as_str(), *v)).collect()
}

/// One metric family: its HELP and TYPE lines and its samples, named `bramble_{name}`.
fn write_family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP bramble_{name} {help}");
    let _ = writeln!(out, "# TYPE bramble_{name} {kind}");
    for (labels, v) in samples {
        let _ = writeln!(out, "bramble_{name}{labels} {v}");
    }
}

/// This master's part in the election: whether it leads, under which epoch, who stands by.
fn render_election(out: &mut String, e: &ElectionMetrics) {
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        write_family(out, &format!("master_{name}"), kind, help, samples)
    };
    family(
        "leading",
        "gauge",
        "1 while this master leads the cluster, 0 while it follows.",
        &[("", u64::from(e.leading.is_some()))],
    );
    family(
        "epoch",
        "gauge",
        "The epoch this master leads under (0 while it follows).",
        &[("", e.leading.unwrap_or(0))],
    );
    family(
        "followers",
        "gauge",
        "Other masters heard within the lease, ready to take over.",
        &[("", e.followers as u64)],
    );
    family(
        "election_events_total",
        "counter",
        "Times this master took the lead, raised its epoch while leading, or stepped down.",
        &[
            ("{event=\"claim\"}", e.stats.claims),
            ("{event=\"raise\"}", e.stats.raises),
            ("{event=\"step_down\"}", e.stats.step_downs),
        ],
    );
    family(
        "election_messages_dropped_total",
        "counter",
        "Peer heartbeats dropped, by reason.",
        &[
            ("{reason=\"malformed\"}", e.stats.bad_peer_messages),
            ("{reason=\"too_many_peers\"}", e.stats.peers_over_limit),
        ],
    );
}

/// The driver's own metrics: the loop's liveness, its queues and what it shed.
fn render_driver(out: &mut String, last_turn: Option<std::time::Instant>, queues: &QueueStats) {
    let outgoing = &queues.outgoing;
    fn head(out: &mut String, name: &str, kind: &str, help: &str) {
        let _ = writeln!(out, "# HELP bramble_master_{name} {help}");
        let _ = writeln!(out, "# TYPE bramble_master_{name} {kind}");
    }
    head(
        out,
        "loop_last_turn_age_seconds",
        "gauge",
        "Seconds since the master's core loop last turned; it turns at least once a second.",
    );
    if let Some(at) = last_turn {
        let age = at.elapsed().as_secs_f64();
        let _ = writeln!(out, "bramble_master_loop_last_turn_age_seconds {age:.3}");
    }
    head(
        out,
        "outgoing_queue_depth",
        "gauge",
        "Messages waiting to be published: protocol messages, and dashboard status topics.",
    );
    let _ = writeln!(
        out,
        "bramble_master_outgoing_queue_depth{{queue=\"protocol\"}} {}",
        outgoing.protocol_depth
    );
    let _ = writeln!(
        out,
        "bramble_master_outgoing_queue_depth{{queue=\"status\"}} {}",
        outgoing.status_depth
    );
    head(
        out,
        "outgoing_queue_bytes",
        "gauge",
        "Payload bytes of the protocol messages waiting to be published.",
    );
    let _ = writeln!(
        out,
        "bramble_master_outgoing_queue_bytes {}",
        outgoing.protocol_bytes
    );
    head(
        out,
        "incoming_queue_depth",
        "gauge",
        "Messages received and waiting for the core loop.",
    );
    let _ = writeln!(
        out,
        "bramble_master_incoming_queue_depth {}",
        queues.incoming_depth
    );
    head(
        out,
        "messages_received_total",
        "counter",
        "Messages the master took from the broker (counted before the core loop sees them).",
    );
    let _ = writeln!(
        out,
        "bramble_master_messages_received_total {}",
        queues.received
    );
    head(
        out,
        "messages_published_total",
        "counter",
        "Messages handed to the MQTT client.",
    );
    let _ = writeln!(
        out,
        "bramble_master_messages_published_total {}",
        outgoing.published
    );
    head(
        out,
        "messages_shed_total",
        "counter",
        "Outgoing messages shed, by kind and reason (superseded, duplicate: nothing was lost).",
    );
    for kind in Kind::ALL {
        for reason in ShedReason::ALL {
            let n = outgoing.shed(kind, reason);
            let possible = match reason {
                ShedReason::QueueFull | ShedReason::Evicted => kind.sheddable(),
                ShedReason::Overflow => !kind.sheddable() && kind != Kind::DashboardStatus,
                ShedReason::Superseded => kind == Kind::DashboardStatus,
                ShedReason::Duplicate => kind == Kind::ReRegisterRequest,
            };
            if possible || n > 0 {
                let _ = writeln!(
                    out,
                    "bramble_master_messages_shed_total{{kind=\"{}\",reason=\"{}\"}} {n}",
                    kind.label(),
                    reason.label()
                );
            }
        }
    }
}

/// The dashboard's routes (`/`, `/app.js`, `/style.css`, `/events`, `/metrics`), ready to be
/// merged into another router.
pub fn routes(state: WebState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/style.css", get(style_css))
        .route("/events", get(events))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Binds the HTTP listener.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, WebError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| WebError::Bind { addr, source })
}

/// Serves `router` on `listener` until `shutdown` completes; then waits up to 2 s for open
/// connections to finish (event streams end when their [`WebState`] is closed).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), WebError> {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "HTTP server listening");
    }
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let graceful = async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    };
    let server = axum::serve(listener, router).with_graceful_shutdown(graceful);
    let mut server = std::pin::pin!(std::future::IntoFuture::into_future(server));
    tokio::select! {
        r = &mut server => return r.map_err(WebError::Serve),
        () = shutdown => {}
    }
    stop_tx.send_replace(true);
    match tokio::time::timeout(Duration::from_secs(2), server).await {
        Ok(r) => r.map_err(WebError::Serve),
        Err(_) => {
            debug!("HTTP connections still open after 2 s; dropped");
            Ok(())
        }
    }
}

/// The URL a person opens for a server bound at `addr` (an unspecified address becomes 127.0.0.1).
pub fn url(addr: SocketAddr) -> String {
    format!("http://{}/", crate::broker::connect_addr(addr))
}

async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
    )
}

async fn app_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
}

async fn style_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLE_CSS,
    )
}

async fn metrics(State(state): State<WebState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.render_metrics(),
    )
}

/// One page's event stream.
struct Subscriber {
    state: WebState,
    rx: broadcast::Receiver<Arc<str>>,
    closed: watch::Receiver<bool>,
    pending: VecDeque<Event>,
}

impl Subscriber {
    fn new(state: WebState) -> Self {
        let (rx, snapshot) = state.subscribe();
        let closed = state.hub.closed.subscribe();
        let mut s = Subscriber {
            state,
            rx,
            closed,
            pending: VecDeque::new(),
        };
        s.queue_snapshot(snapshot);
        s
    }

    fn queue_snapshot(&mut self, snapshot: Vec<Arc<str>>) {
        self.pending.clear();
        self.pending
            .push_back(Event::default().event("reset").data("{}"));
        self.pending
            .extend(snapshot.iter().map(|e| Event::default().data(&**e)));
        self.pending
            .push_back(Event::default().event("ready").data("{}"));
    }

    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            if *self.closed.borrow() {
                return None;
            }
            tokio::select! {
                r = self.rx.recv() => match r {
                    Ok(e) => return Some(Event::default().data(&*e)),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        debug!(missed = n, "a dashboard lagged; sending it a fresh snapshot");
                        let (rx, snapshot) = self.state.subscribe();
                        self.rx = rx;
                        self.queue_snapshot(snapshot);
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                r = self.closed.changed() => if r.is_err() {
                    return None;
                },
            }
        }
    }
}

async fn events(
    State(state): State<WebState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures_util::stream::unfold(Subscriber::new(state), |mut s| async move {
        let e = s.next().await?;
        Some((Ok(e), s))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(e: &Event) -> String {
        // `Event` has no getters; its Debug output carries the data.
        format!("{e:?}")
    }

    #[test]
    fn metrics_say_whether_this_master_leads_under_which_epoch_and_who_stands_by() {
        let web = WebState::new();
        let text = web.render_metrics();
        assert!(text.contains("\nbramble_master_leading 0\n"), "{text}");
        web.set_election(ElectionMetrics {
            leading: Some(0x2_0001),
            followers: 2,
            stats: ElectionStats {
                claims: 1,
                raises: 3,
                peers_over_limit: 4,
                ..Default::default()
            },
        });
        let text = web.render_metrics();
        for line in [
            "bramble_master_leading 1",
            "bramble_master_epoch 131073",
            "bramble_master_followers 2",
            "bramble_master_election_events_total{event=\"claim\"} 1",
            "bramble_master_election_events_total{event=\"raise\"} 3",
            "bramble_master_election_messages_dropped_total{reason=\"too_many_peers\"} 4",
        ] {
            assert!(text.contains(&format!("\n{line}\n")), "{line} in {text}");
        }
    }

    #[test]
    fn metrics_show_the_loop_age_the_queue_depths_and_what_was_shed_by_kind_and_reason() {
        let web = WebState::new();
        let text = web.render_metrics();
        assert!(text.contains("# TYPE bramble_master_loop_last_turn_age_seconds gauge"));
        assert!(
            !text.contains("\nbramble_master_loop_last_turn_age_seconds "),
            "no age before the loop's first turn"
        );
        let mut q = crate::outbox::OutQueue::new(crate::outbox::Limits {
            messages: 1,
            ..Default::default()
        });
        let ping = crate::outbox::Entry {
            topic: "t".into(),
            qos: agent_nostd_core::topic::QoS::AtLeastOnce,
            retain: false,
            payload: vec![1, 2, 3],
            kind: Kind::Ping,
        };
        q.push(ping.clone());
        q.push(ping);
        web.loop_turned();
        web.set_queues(QueueStats {
            outgoing: q.stats(),
            incoming_depth: 7,
            received: 9,
        });
        let text = web.render_metrics();
        let age: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("bramble_master_loop_last_turn_age_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((0.0..1.0).contains(&age), "{age}");
        for line in [
            "bramble_master_outgoing_queue_depth{queue=\"protocol\"} 1",
            "bramble_master_outgoing_queue_bytes 3",
            "bramble_master_incoming_queue_depth 7",
            "bramble_master_messages_received_total 9",
            "bramble_master_messages_shed_total{kind=\"ping\",reason=\"queue_full\"} 1",
            "bramble_master_messages_shed_total{kind=\"run_task\",reason=\"overflow\"} 0",
            "bramble_master_messages_shed_total{kind=\"dashboard_status\",reason=\"superseded\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }

    #[tokio::test]
    async fn a_subscriber_gets_the_snapshot_then_changes_and_a_cleared_topic_as_null() {
        let web = WebState::new();
        web.publish("bramble/v1/status/agent/a", br#"{"agent_id":"a"}"#);
        web.publish("homeassistant/sensor/x/config", b"{}");
        let mut s = Subscriber::new(web.clone());
        assert!(data(&s.next().await.unwrap()).contains("reset"));
        assert!(data(&s.next().await.unwrap()).contains("agent_id"));
        assert!(data(&s.next().await.unwrap()).contains("ready"));
        web.publish("bramble/v1/status/agent/a", b"");
        let e = data(&s.next().await.unwrap());
        assert!(
            e.contains(r#"\"payload\":null"#) || e.contains(r#""payload":null"#),
            "{e}"
        );
        assert!(web.snapshot().is_empty());
        web.close();
        assert!(
            s.next().await.is_none(),
            "the stream ends when the master stops"
        );
    }

    #[tokio::test]
    async fn a_lagging_subscriber_gets_a_reset_and_a_fresh_snapshot() {
        let web = WebState::new();
        let mut s = Subscriber::new(web.clone());
        assert!(data(&s.next().await.unwrap()).contains("reset"));
        assert!(
            data(&s.next().await.unwrap()).contains("ready"),
            "an empty snapshot"
        );
        for i in 0..EVENTS_CAPACITY + 10 {
            web.publish(&format!("bramble/v1/status/task/f/t{i}"), b"{}");
        }
        assert!(data(&s.next().await.unwrap()).contains("reset"));
        let mut n = 0;
        while !data(&s.next().await.unwrap()).contains("ready") {
            n += 1;
        }
        assert_eq!(n, EVENTS_CAPACITY + 10, "every live topic, once");
    }

    #[test]
    fn metrics_carry_help_and_type_for_every_family_and_the_histogram_is_cumulative() {
        let web = WebState::new();
        web.observe_round(Duration::from_micros(50));
        web.observe_round(Duration::from_millis(3));
        web.observe_round(Duration::from_secs(5));
        let text = web.render_metrics();
        let h = "bramble_allocation_round_duration_seconds";
        assert!(
            text.contains(&format!("{h}_bucket{{le=\"0.0001\"}} 1\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{h}_bucket{{le=\"0.005\"}} 2\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{h}_bucket{{le=\"1\"}} 2\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{h}_bucket{{le=\"+Inf\"}} 3\n")),
            "{text}"
        );
        assert!(text.contains(&format!("{h}_count 3\n")), "{text}");
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        assert_eq!(helps, types);
        assert!(helps >= 20);
    }

    #[test]
    fn metrics_read_the_gauges_from_the_cluster_summary_and_none_before_it() {
        let web = WebState::new();
        assert!(!web.render_metrics().contains("bramble_tasks{"));
        let json = r#"{"master_epoch":1,"agents_online":3,"agents_offline":1,"frameworks":2,
            "frameworks_connected":1,"tasks":{"error":0,"failed":1,"finished":12,"killed":0,
            "lost":0,"running":3,"staging":0,"starting":0,"unreachable":0},
            "cpu_millis_total":3000,"cpu_millis_used":1500,"cpu_millis_free":1500,
            "mem_mib_total":1536,"mem_mib_used":192,"mem_mib_free":1344,"disk_mib_total":0,
            "disk_mib_used":0,"disk_mib_free":0,"offers_outstanding":4}"#;
        web.publish(CLUSTER_TOPIC, json.as_bytes());
        let text = web.render_metrics();
        for line in [
            "bramble_agents{state=\"online\"} 3\n",
            "bramble_agents{state=\"offline\"} 1\n",
            "bramble_frameworks_connected 1\n",
            "bramble_tasks{state=\"finished\"} 12\n",
            "bramble_tasks{state=\"unreachable\"} 0\n",
            "bramble_offers_outstanding 4\n",
            "bramble_cpu_millis{kind=\"used\"} 1500\n",
            "bramble_mem_mib{kind=\"total\"} 1536\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
