//! The MQTT client set-up every Bramble client shares: the agent, the master, the SDK's scheduler
//! and executor, and the CLI's one-shot queries.
//!
//! rumqttc leaves four things to its user, and each Bramble client once did them on its own:
//! - **TCP_NODELAY**: small MQTT messages must not wait on Nagle's algorithm (it cost ~40 ms per
//!   hop). [`connect`] sets it on every client.
//! - **Reconnect backoff**: polling an `EventLoop` again after an error reconnects at once, with no
//!   pause. [`Session::poll`] waits out a [`Backoff`] (by default 500 ms doubling to 30 s, reset
//!   on ConnAck) first, once every broker it was given has failed in turn (see Failover).
//! - **Resubscription**: rumqttc does not resubscribe after a reconnect. [`Session`] subscribes to
//!   its filters on every ConnAck.
//! - **Failover**: rumqttc connects to one broker. A client is given a list of them
//!   ([`Brokers`]); [`Session`] moves on to the next one whenever a connection attempt fails or an
//!   established connection drops, at once, and backs off only once every broker in the list has
//!   failed in turn.
//!
//! The crate lives beside the agent because the agent is its most constrained user (it is built
//! for size); it has no dependency but rumqttc, tokio's timer, tracing, the agent core's
//! principals and secrets with toml to read credential files, and HMAC-SHA-256 (already the agent
//! core's) for bound client ids.
//!
//! # Layout
//!
//! - [`MAX_PACKET`] and [`MAX_INCOMING`]: the message size limits every broker and client keeps.
//! - [`brokers`]: [`BrokerAddr`] and [`Brokers`], parsed from `mqtt://host[:port]` and comma lists.
//! - [`client_id`]: bound client ids, which only the login's password gives (no takeover).
//! - [`credential`]: a principal's credential file, and the login it gives.
//! - [`http_auth`]: signed HTTP requests (the agent's artifact downloads, checked by the master).
//! - [`login`]: [`Login`] and [`Password`], the credentials a client presents (never printed).
//! - [`sources`]: where a client's login comes from (flags, environment, config, URL,
//!   credential file) and the order they are settled in.
//! - [`tls`]: `mqtts://` through rustls (feature `tls`): the CA file and client certificate.
//! - [`refusal`]: a broker's refusal of a login, as [`Session`] and one-shot clients report it.
//! - [`ClientConfig`] and [`connect`]: the options every client sets, and the client they build.
//! - [`Backoff`]: the reconnect delay.
//! - [`Session`] and [`SessionEvent`]: an event loop that fails over, backs off, resubscribes
//!   and says what happened.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod brokers;
pub mod client_id;
pub mod credential;
pub mod http_auth;
pub mod login;
pub mod refusal;
pub mod sources;
pub mod tls;

pub use brokers::{BrokerAddr, BrokerError, Brokers};
pub use client_id::{bound_client_id, unbind_client_id};
pub use credential::{Credential, CredentialError};
pub use login::{Login, Password};
pub use refusal::{Refusal, RefusalReason};
pub use sources::{refuse_password_in_argv, LoginError, LoginSources, PasswordInArgv};

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, Publish, QoS};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

/// The largest MQTT packet a broker may carry for Bramble, in bytes (1 MiB): the embedded broker
/// refuses a publish whose remaining length is above it, and an external broker must be configured
/// with it (Mosquitto: `max_packet_size 1048576`). It is also the most any Bramble client sends.
///
/// rumqttc cannot skip a packet above its incoming limit: the event loop fails, reconnects, and the
/// broker hands the same packet over again (an unacknowledged QoS 1 message, or a retained one),
/// forever. So no client may take in less than this: every client's incoming limit is at least
/// `MAX_PACKET`, the broker never delivers more, and a client drops (and, at QoS 1, acknowledges)
/// a payload it cannot use. The limit costs nothing until such a packet arrives; rumqttc's read
/// buffer only grows to the packets it is handed.
///
/// 1 MiB fits the largest legitimate message, an offers event for a large cluster; agent messages
/// are under 6 KiB, status JSON under 8 KiB.
pub const MAX_PACKET: usize = 1024 * 1024;

/// The incoming limit of the clients that can afford it (the master, the CLI, the SDK's
/// scheduler), in bytes (4 MiB): headroom against an external broker configured with a larger
/// limit than [`MAX_PACKET`]. The agent and the executor take [`MAX_PACKET`].
pub const MAX_INCOMING: usize = 4 * MAX_PACKET;
const _: () = assert!(MAX_INCOMING >= MAX_PACKET);

/// The length of the MQTT 3.1.1 PUBLISH packet that carries `payload_len` bytes on `topic` at
/// `qos`, fixed header included: what rumqttc compares with its outgoing limit.
pub fn publish_len(topic: &str, payload_len: usize, qos: QoS) -> usize {
    let pkid = if qos == QoS::AtMostOnce { 0 } else { 2 };
    let remaining = 2 + topic.len() + pkid + payload_len;
    let len_len = match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    1 + len_len + remaining
}

/// How a Bramble client connects: its identity, its broker and its limits.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The base MQTT client id (`bramble-agent-{id}`, `bramble-master-{name}`,
    /// `bramble-fw-{client}`, …). A client with a login connects with it bound to the login's
    /// password ([`bound_client_id`]); one without, with it as it is.
    pub client_id: String,
    /// The brokers, tried in order: [`connect`] connects to the first, [`Session`] fails over
    /// to the next.
    pub brokers: Brokers,
    /// Whether the broker forgets the session (subscriptions, queued QoS 1 messages) on
    /// disconnect. Long-lived clients keep it (`false`); one-shot queries do not.
    pub clean_session: bool,
    /// The MQTT keep-alive.
    pub keep_alive: Duration,
    /// The most QoS 1 publishes in flight at once.
    pub inflight: u16,
    /// The capacity of the request channel between the client handle and the event loop.
    pub request_capacity: usize,
    /// The largest packet taken in and sent out, in bytes. The first must be at least
    /// [`MAX_PACKET`] (see there: a smaller one lets one large message take the client off the
    /// broker for good).
    pub max_packet: (usize, usize),
    /// The last will the broker publishes when the connection drops.
    pub last_will: Option<LastWill>,
    /// The username and password presented to every broker that has no login of its own
    /// ([`BrokerAddr::login`]).
    pub login: Option<Login>,
}

impl ClientConfig {
    /// A long-lived client's config: a persistent session, 15 s keep-alive, 100 in flight, a
    /// request channel of 1,024, and packets up to [`MAX_PACKET`] both ways.
    pub fn new(client_id: impl Into<String>, brokers: impl Into<Brokers>) -> Self {
        ClientConfig {
            client_id: client_id.into(),
            brokers: brokers.into(),
            clean_session: false,
            keep_alive: Duration::from_secs(15),
            inflight: 100,
            request_capacity: 1024,
            max_packet: (MAX_PACKET, MAX_PACKET),
            last_will: None,
            login: None,
        }
    }
}

/// Builds the client and its event loop from `config`, for the first of its brokers, with
/// TCP_NODELAY on. An incoming limit below [`MAX_PACKET`] is raised to it.
///
/// The event loop stays on that broker (one-shot clients try the others themselves); a
/// [`Session`] fails over between them all.
pub fn connect(config: ClientConfig) -> (AsyncClient, EventLoop) {
    let options = mqtt_options(&config, config.brokers.first());
    let (client, mut eventloop) = AsyncClient::new(options, config.request_capacity);
    // Small MQTT messages must not wait on Nagle's algorithm (it cost ~40 ms per hop).
    let mut net = eventloop.network_options();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    (client, eventloop)
}

/// The rumqttc options of `config` for the broker at `addr`: every client's options are built
/// here, so a failover rebuilds them with every setting kept.
///
/// With a login, the client id is the config's bound to the login's password
/// ([`bound_client_id`]), so no other principal can connect with it and take the session over;
/// the broker's own login may differ from the config's, and so may the id on each broker.
fn mqtt_options(config: &ClientConfig, addr: &BrokerAddr) -> MqttOptions {
    let incoming = config.max_packet.0.max(MAX_PACKET);
    // The broker's own login (from its URL, or settled by `Brokers::with_login`) comes first.
    let login = addr.login.as_ref().or(config.login.as_ref());
    let client_id = match login {
        Some(login) => bound_client_id(&config.client_id, &login.password),
        None => config.client_id.clone(),
    };
    let mut options = MqttOptions::new(client_id, addr.host.clone(), addr.port);
    options
        .set_clean_session(config.clean_session)
        .set_keep_alive(config.keep_alive)
        .set_inflight(config.inflight)
        .set_request_channel_capacity(config.request_capacity)
        .set_max_packet_size(incoming, config.max_packet.1);
    if let Some(will) = config.last_will.clone() {
        options.set_last_will(will);
    }
    #[cfg(feature = "tls")]
    if addr.tls {
        options.set_transport(tls::transport());
    }
    if let Some(login) = login {
        options.set_credentials(login.username.clone(), login.password.expose());
    }
    options
}

/// The delay before the next reconnection: from `min`, doubling up to `max`, back to `min` on
/// ConnAck. [`Backoff::default`] is 500 ms to 30 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    /// A backoff from `min` doubling up to `max`.
    pub const fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            next: min,
            min,
            max,
        }
    }

    /// The delay to wait now; the one after it is twice as long, up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Back to the first delay (after a successful connection).
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(30))
    }
}

/// What one [`Session::poll`] saw.
#[derive(Debug)]
pub enum SessionEvent {
    /// The broker accepted the connection ([`Session::broker`] says which); the session's filters
    /// have been subscribed to again.
    Connected,
    /// A message arrived.
    Publish(Publish),
    /// The broker acknowledged a subscription.
    SubAck,
    /// This client's disconnect went out: the session is over.
    Disconnected,
    /// The connection failed or dropped; the next poll reconnects, to the next broker in the list
    /// ([`Session::broker`]), after `retry_in`: zero until a whole pass over the list has failed.
    Lost {
        /// Why, for the log.
        error: String,
        /// How long the next poll waits before reconnecting.
        retry_in: Duration,
        /// Set when the broker refused the login (bad username or password, not authorized):
        /// a one-shot client gives up on it; a long-lived one keeps trying (the session logs it
        /// at ERROR once per backoff cycle).
        refused: Option<Refusal>,
    },
    /// Anything else (acks, pings, outgoing packets), as rumqttc reported it.
    Other(Event),
}

/// An MQTT event loop that fails over between its brokers, reconnects with [`Backoff`] and
/// resubscribes to its filters on every ConnAck.
///
/// **Failover.** The first connection goes to the first of [`ClientConfig::brokers`]. Whenever a
/// connection attempt fails or an established connection drops, the next attempt goes to the
/// next broker in the list, round robin, at once: the backoff delay applies only after a whole
/// pass over the list has failed (every broker, counted from the one that failed first, in turn).
/// So a client whose broker dies is on a live second broker within a connection attempt, while a
/// dead cluster is retried 500 ms, 1 s, 2 s, … 30 s apart, a pass at a time. A single broker
/// backs off after each failure, as before. The options for the next broker are rebuilt from the
/// [`ClientConfig`], so every setting (and the last will) is kept.
///
/// [`Session::poll`] is cancel-safe (the reconnect deadline is kept in the session), so it can sit
/// in a `tokio::select!` beside the caller's own timers.
pub struct Session {
    client: AsyncClient,
    eventloop: EventLoop,
    /// What the event loop's options are rebuilt from for another broker.
    config: ClientConfig,
    /// The broker the next (or the current) connection goes to, an index into the list.
    current: usize,
    /// The broker the event loop's options point at.
    aimed: usize,
    /// Connection attempts (or connections) failed since the last ConnAck or the last backoff.
    failed: usize,
    filters: Vec<String>,
    backoff: Backoff,
    reconnect_at: Option<Instant>,
    name: &'static str,
    /// Asked for the last will before each connection attempt ([`Session::with_will`]).
    will: Option<WillSource>,
    /// The last ConnAck's session-present flag.
    session_present: bool,
    /// Until the first ConnAck: connect with a clean session ([`Session::with_clean_start`]).
    clean_start: bool,
    /// Whether a refused login was logged at ERROR since the last backoff wait began.
    refusal_logged: bool,
    /// How many refusals were logged at ERROR (for the tests).
    refusals_logged: u64,
}

/// What [`Session::with_will`] calls before each connection attempt.
type WillSource = Box<dyn FnMut() -> Option<LastWill> + Send>;

impl Session {
    /// A session of a client built from `config` (as [`connect`] builds it), subscribing at QoS 1
    /// to `filters` on each ConnAck and failing over between `config.brokers`. `name` says who it
    /// is in the log (`master`, `agent`, `scheduler`, …). Nothing is sent until the first
    /// [`Session::poll`].
    pub fn new(name: &'static str, config: ClientConfig, filters: Vec<String>) -> Self {
        let (client, eventloop) = connect(config.clone());
        Session {
            client,
            eventloop,
            config,
            current: 0,
            aimed: 0,
            failed: 0,
            filters,
            backoff: Backoff::default(),
            reconnect_at: None,
            name,
            will: None,
            session_present: false,
            clean_start: false,
            refusal_logged: false,
            refusals_logged: 0,
        }
    }

    /// The same session, discarding whatever session the broker holds for this client id at the
    /// first connection (clean session), then keeping its own as `config.clean_session` says
    /// from the first reconnection on. For a client that must not be handed what was queued for
    /// an earlier incarnation of its id, e.g. a master taking the lead again after another master
    /// led (the calls queued meanwhile were that master's to answer).
    pub fn with_clean_start(mut self) -> Self {
        self.clean_start = true;
        self
    }

    /// The same session, asking `will` for the last will before each connection attempt (the
    /// first, and every reconnection), so each connection can carry its own will, e.g. one that
    /// names the connection. `None` keeps the will set before (from [`ClientConfig::last_will`]
    /// or an earlier call).
    pub fn with_will(mut self, will: impl FnMut() -> Option<LastWill> + Send + 'static) -> Self {
        self.will = Some(Box::new(will));
        self
    }

    /// The same session, reconnecting with `backoff` instead of the default.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Whether the broker still held this client's session at the last ConnAck. `false` on a
    /// persistent session's reconnection means the broker lost it (e.g. it restarted): every
    /// subscription, queued message and other client's last will of before is gone too.
    pub fn session_present(&self) -> bool {
        self.session_present
    }

    /// The broker the session is connected to, or the one its next connection attempt goes to.
    pub fn broker(&self) -> &BrokerAddr {
        self.config.brokers.get(self.current)
    }

    /// The client handle, for publishing.
    pub fn client(&self) -> &AsyncClient {
        &self.client
    }

    /// Waits for the next event: first out any reconnect delay, then the event loop's next
    /// event. On a ConnAck it subscribes to the filters before returning
    /// [`SessionEvent::Connected`].
    pub async fn poll(&mut self) -> SessionEvent {
        if let Some(at) = self.reconnect_at {
            tokio::time::sleep_until(at).await;
            self.reconnect_at = None;
        }
        if self.eventloop.network.is_none() {
            // This poll connects: to the broker whose turn it is, with its own will.
            if self.aimed != self.current {
                let will = self.eventloop.mqtt_options.last_will();
                let mut options = mqtt_options(&self.config, self.broker());
                if let Some(will) = will {
                    options.set_last_will(will);
                }
                self.eventloop.mqtt_options = options;
                self.aimed = self.current;
            }
            if let Some(will) = self.will.as_mut().and_then(|f| f()) {
                self.eventloop.mqtt_options.set_last_will(will);
            }
            let clean = self.clean_start || self.config.clean_session;
            self.eventloop.mqtt_options.set_clean_session(clean);
        }
        match self.eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                info!(
                    broker = %self.broker(),
                    session_present = ack.session_present,
                    "{} connected to the broker {}", self.name, self.broker()
                );
                self.session_present = ack.session_present;
                self.clean_start = false;
                self.failed = 0;
                self.backoff.reset();
                for filter in &self.filters {
                    if let Err(e) = self.client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                        warn!("{} cannot subscribe to {filter}: {e}", self.name);
                    }
                }
                SessionEvent::Connected
            }
            Ok(Event::Incoming(Packet::Publish(p))) => SessionEvent::Publish(p),
            Ok(Event::Incoming(Packet::SubAck(_))) => SessionEvent::SubAck,
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => SessionEvent::Disconnected,
            Ok(other) => SessionEvent::Other(other),
            Err(e) => {
                let failed = self.broker().clone();
                let refused = Refusal::of(&e, self.login_at(self.current));
                let retry_in = self.next_broker();
                match &refused {
                    // Once per backoff cycle at ERROR: an operator must fix it, and a flood of
                    // the same line every 500 ms to 30 s helps nobody.
                    Some(r) if !self.refusal_logged => {
                        self.refusal_logged = true;
                        self.refusals_logged += 1;
                        error!(
                            "{} at {failed}: {r}; retrying in {retry_in:?} (fix the login)",
                            self.name
                        );
                    }
                    Some(r) => debug!("{} at {failed}: {r}", self.name),
                    None => warn!(
                        "{} broker connection to {failed}: {e}; trying {} in {retry_in:?}",
                        self.name,
                        self.broker()
                    ),
                }
                if !retry_in.is_zero() {
                    self.reconnect_at = Some(Instant::now() + retry_in);
                    self.refusal_logged = false;
                }
                SessionEvent::Lost {
                    error: refused
                        .as_ref()
                        .map_or_else(|| e.to_string(), ToString::to_string),
                    retry_in,
                    refused,
                }
            }
        }
    }

    /// The username presented to the broker at `index`, if any.
    fn login_at(&self, index: usize) -> Option<&str> {
        let addr = self.config.brokers.get(index);
        addr.login
            .as_ref()
            .or(self.config.login.as_ref())
            .map(|l| l.username.as_str())
    }

    /// After a failure: turns to the next broker and says how long to wait before trying it,
    /// nothing until a whole pass over the list has failed.
    fn next_broker(&mut self) -> Duration {
        let len = self.config.brokers.len();
        self.current = (self.current + 1) % len;
        self.failed += 1;
        if self.failed < len {
            return Duration::ZERO;
        }
        self.failed = 0;
        self.backoff.next_delay()
    }
}

/// `bytes` as lowercase hex digits, two a byte.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xF)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_to_thirty_seconds_and_resets_on_connect() {
        let mut b = Backoff::default();
        let delays: Vec<_> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(500));
    }

    #[test]
    fn publish_len_is_the_length_rumqttc_checks_against_its_outgoing_limit() {
        for len in [0, 1, 100, 16_000, 70_000, MAX_PACKET, 3 * MAX_PACKET] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
                let mut p = Publish::new("bramble/v1/agent/pi-1/cmd", qos, vec![0u8; len]);
                p.pkid = 1; // as the event loop numbers it before writing
                assert_eq!(
                    publish_len("bramble/v1/agent/pi-1/cmd", len, qos),
                    p.size(),
                    "{len} bytes at {qos:?}"
                );
            }
        }
    }

    #[test]
    fn an_incoming_limit_below_the_broker_limit_is_raised_to_it() {
        let config = ClientConfig {
            max_packet: (6 * 1024, 6 * 1024),
            ..ClientConfig::new("t", BrokerAddr::new("127.0.0.1", 1))
        };
        let (_client, eventloop) = connect(config);
        assert_eq!(eventloop.mqtt_options.max_packet_size(), MAX_PACKET);
    }

    /// A port nothing listens on: every connection attempt to it fails at once.
    fn dead_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    /// The port the event loop's options point at: where its last connection attempt went.
    fn tried_port(session: &Session) -> u16 {
        session.eventloop.mqtt_options.broker_address().1
    }

    fn local(ports: &[u16]) -> Brokers {
        Brokers::new(
            ports
                .iter()
                .map(|&p| BrokerAddr::new("127.0.0.1", p))
                .collect(),
        )
        .unwrap()
    }

    /// A stand-in broker on a local port: it answers every CONNECT with an accepting CONNACK and
    /// then holds the connection open (enough for rumqttc's ConnAck; it routes nothing).
    async fn connack_only_broker() -> u16 {
        connack_broker(0).await
    }

    /// A stand-in broker answering every CONNECT with a CONNACK of return `code`.
    async fn connack_broker(code: u8) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    if socket.read(&mut buf).await.unwrap_or(0) > 0 {
                        let _ = socket.write_all(&[0x20, 0x02, 0x00, code]).await;
                    }
                    while socket.read(&mut buf).await.unwrap_or(0) > 0 {}
                });
            }
        });
        port
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_connection_is_retried_after_the_backoff_not_at_once() {
        let port = dead_port();
        let config = ClientConfig::new("t", BrokerAddr::new("127.0.0.1", port));
        let mut session = Session::new("test", config, vec![]);
        let mut waits = Vec::new();
        for _ in 0..3 {
            match session.poll().await {
                SessionEvent::Lost { retry_in, .. } => waits.push(retry_in.as_millis()),
                other => panic!("expected a lost connection, got {other:?}"),
            }
        }
        assert_eq!(waits, [500, 1000, 2000]);
    }

    #[tokio::test(start_paused = true)]
    async fn every_connection_attempt_asks_for_its_own_last_will() {
        let port = dead_port();
        let config = ClientConfig::new("t", BrokerAddr::new("127.0.0.1", port));
        let mut n = 0u8;
        let mut session = Session::new("test", config, vec![]).with_will(move || {
            n += 1;
            Some(LastWill::new("will", vec![n], QoS::AtLeastOnce, false))
        });
        for expected in 1..=3u8 {
            assert!(matches!(session.poll().await, SessionEvent::Lost { .. }));
            let will = session.eventloop.mqtt_options.last_will().unwrap();
            assert_eq!(will.message.as_ref(), [expected]);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_alternate_between_dead_brokers_and_back_off_only_after_both_failed() {
        let (a, b) = (dead_port(), dead_port());
        let mut session = Session::new("test", ClientConfig::new("t", local(&[a, b])), vec![]);
        let (mut tried, mut announced, mut waited) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..6 {
            let started = Instant::now();
            match session.poll().await {
                SessionEvent::Lost { retry_in, .. } => announced.push(retry_in.as_millis()),
                other => panic!("expected a lost connection, got {other:?}"),
            }
            waited.push(started.elapsed().as_millis());
            tried.push(tried_port(&session));
        }
        assert_eq!(tried, [a, b, a, b, a, b]);
        assert_eq!(announced, [0, 500, 0, 1000, 0, 2000]);
        // Each attempt waited out what the one before it announced, and nothing else.
        assert_eq!(waited, [0, 0, 500, 0, 1000, 0]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_whose_first_broker_is_dead_connects_to_the_second_without_a_backoff() {
        let dead = dead_port();
        let live = connack_only_broker().await;
        let mut session =
            Session::new("test", ClientConfig::new("t", local(&[dead, live])), vec![]);
        let started = Instant::now();
        match session.poll().await {
            SessionEvent::Lost { retry_in, .. } => assert_eq!(retry_in, Duration::ZERO),
            other => panic!("expected the dead broker to refuse, got {other:?}"),
        }
        assert_eq!(session.broker(), &BrokerAddr::new("127.0.0.1", live));
        match session.poll().await {
            SessionEvent::Connected => {}
            other => panic!("expected a connection to the live broker, got {other:?}"),
        }
        assert_eq!(tried_port(&session), live);
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "failover waited {:?}",
            started.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_clean_start_connects_clean_until_the_first_connack_then_keeps_a_session() {
        let (dead, live) = (dead_port(), connack_only_broker().await);
        let mut session =
            Session::new("test", ClientConfig::new("t", local(&[dead, live])), vec![])
                .with_clean_start();
        assert!(matches!(session.poll().await, SessionEvent::Lost { .. }));
        assert!(
            session.eventloop.mqtt_options.clean_session(),
            "still clean after a failure"
        );
        assert!(matches!(session.poll().await, SessionEvent::Connected));
        assert!(
            session.eventloop.mqtt_options.clean_session(),
            "the first connection was clean"
        );
        // The next connection attempt (whenever it comes) keeps a session.
        session.eventloop.network = None;
        session.reconnect_at = None;
        let _ = tokio::time::timeout(Duration::from_millis(50), session.poll()).await;
        assert!(!session.eventloop.mqtt_options.clean_session());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failover_keeps_every_option_and_the_will_of_the_attempt() {
        let (a, b) = (dead_port(), dead_port());
        let config = ClientConfig {
            keep_alive: Duration::from_secs(7),
            clean_session: true,
            inflight: 3,
            max_packet: (2 * MAX_PACKET, 1000),
            ..ClientConfig::new("keep", local(&[a, b]))
        };
        let mut n = 0u8;
        let mut session = Session::new("test", config, vec![]).with_will(move || {
            n += 1;
            Some(LastWill::new("will", vec![n], QoS::AtLeastOnce, false))
        });
        for expected in 1..=4u8 {
            assert!(matches!(session.poll().await, SessionEvent::Lost { .. }));
            let options = &session.eventloop.mqtt_options;
            assert_eq!(options.client_id(), "keep");
            assert_eq!(options.keep_alive(), Duration::from_secs(7));
            assert!(options.clean_session());
            assert_eq!(options.inflight(), 3);
            assert_eq!(options.max_packet_size(), 2 * MAX_PACKET);
            assert_eq!(options.last_will().unwrap().message.as_ref(), [expected]);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_login_is_reported_with_its_username_and_retried_after_the_backoff() {
        let port = connack_broker(4).await;
        let config = ClientConfig {
            login: Some(Login::new("fw-pi", "hunter2")),
            ..ClientConfig::new("t", BrokerAddr::new("127.0.0.1", port))
        };
        let mut session = Session::new("test", config, vec![]);
        let mut waits = Vec::new();
        for _ in 0..2 {
            match session.poll().await {
                SessionEvent::Lost {
                    refused: Some(r),
                    retry_in,
                    error,
                } => {
                    assert_eq!(r.username.as_deref(), Some("fw-pi"));
                    assert_eq!(r.reason, RefusalReason::BadUsernameOrPassword);
                    assert!(!error.contains("hunter2"), "{error}");
                    waits.push(retry_in.as_millis());
                }
                other => panic!("expected a refused login, got {other:?}"),
            }
        }
        assert_eq!(waits, [500, 1000], "refusals back off like any failure");
    }

    #[tokio::test(start_paused = true)]
    async fn a_brokers_own_login_is_presented_before_the_clients() {
        let port = connack_broker(5).await;
        let addr = BrokerAddr::new("127.0.0.1", port).with_login(Some(Login::new("own", "x")));
        let config = ClientConfig {
            login: Some(Login::new("client", "y")),
            ..ClientConfig::new("t", addr)
        };
        let mut session = Session::new("test", config, vec![]);
        match session.poll().await {
            SessionEvent::Lost {
                refused: Some(r), ..
            } => {
                assert_eq!(r.username.as_deref(), Some("own"));
                assert_eq!(r.reason, RefusalReason::NotAuthorized);
            }
            other => panic!("expected a refused login, got {other:?}"),
        }
        let login = session.eventloop.mqtt_options.credentials().unwrap();
        assert_eq!(login.username, "own");
    }

    #[test]
    fn a_client_with_a_login_connects_with_its_id_bound_to_the_password_it_presents() {
        let plain = BrokerAddr::new("127.0.0.1", 1);
        let own = BrokerAddr::new("127.0.0.1", 2).with_login(Some(Login::new("own", "x")));
        let config = ClientConfig {
            login: Some(Login::new("agent-pi1", "y")),
            ..ClientConfig::new("bramble-agent-pi1", plain.clone())
        };
        let id = |addr| mqtt_options(&config, addr).client_id();
        assert_eq!(
            id(&plain),
            bound_client_id("bramble-agent-pi1", &Password::new("y"))
        );
        assert_eq!(
            id(&own),
            bound_client_id("bramble-agent-pi1", &Password::new("x"))
        );
        assert_eq!(
            unbind_client_id(&id(&plain), "y"),
            Some("bramble-agent-pi1")
        );
        // Without any login (`bramble up` on loopback), the id is the bare base.
        let anonymous = ClientConfig::new("bramble-agent-pi1", plain.clone());
        assert_eq!(
            mqtt_options(&anonymous, &plain).client_id(),
            "bramble-agent-pi1"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_are_logged_at_error_once_per_backoff_cycle_not_per_attempt() {
        let (a, b) = (connack_broker(5).await, connack_broker(5).await);
        let mut session = Session::new("test", ClientConfig::new("t", local(&[a, b])), vec![]);
        for _ in 0..6 {
            assert!(matches!(
                session.poll().await,
                SessionEvent::Lost {
                    refused: Some(_),
                    ..
                }
            ));
        }
        assert_eq!(session.refusals_logged, 3, "six attempts, three passes");
    }
}
