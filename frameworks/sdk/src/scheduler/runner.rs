//! The run loop: [`run`] connects a [`SchedulerCore`] to the broker over MQTT (rumqttc on tokio).
//!
//! It is a thin loop: it turns MQTT packets and timer wake-ups into the core's `handle_*` calls,
//! publishes what [`SchedulerCore::poll_transmit`] hands out (with `try_publish`, never awaiting
//! inside the loop that polls the connection), and sleeps until [`SchedulerCore::poll_timeout`].
//! What stays here is the connection's own: the [`bramble_mqtt::Session`] (reconnecting with
//! backoff from 500 ms to 30 s, where rumqttc itself would retry at once), the clock
//! (milliseconds since the loop started), the grace period a stopping scheduler gets to send its
//! last calls, and the name of each connection: before every connection attempt the session
//! asks for a new nonce (a random base from the OS plus a counter), sets the last will
//! `Call::Gone { connection: nonce }`, and the core registers with `Register.connection` = the
//! same nonce, so the master ignores a will from an older connection that arrives late.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_nostd_core::auth::MessageKey;
use agent_nostd_core::frame::{Direction, WILL_SEQ};
use agent_nostd_core::topic;
use bramble_mqtt::{Brokers, ClientConfig, Session, SessionEvent};
use bramble_proto::frame::NO_SESSION;
use rumqttc::{AsyncClient, LastWill, QoS};
use tokio::time::Instant;
use tracing::{debug, info, trace, warn};

use super::{Scheduler, SchedulerCore};
use crate::error::SdkError;
use crate::protocol::{will_topic, Call, Register};

/// Everything [`run`] needs.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// The brokers, tried in order (the runner fails over between them).
    pub brokers: Brokers,
    /// The client name every topic is keyed by (a valid id); the MQTT client id is
    /// `bramble-fw-{client_name}`.
    pub client_name: String,
    /// The registration sent to the master.
    pub registration: Register,
    /// The principal the framework speaks as (`framework-{client_name}`, or an operator for
    /// `bramble run`), whose key seals every call; `None` speaks as `framework-{client_name}`
    /// with the anonymous key, which only a master run without credentials takes.
    pub credential: Option<bramble_mqtt::Credential>,
}

/// Runs `scheduler` until it calls [`SchedulerDriver::stop`](super::SchedulerDriver::stop), then
/// returns it.
pub async fn run<S: Scheduler>(config: SchedulerConfig, scheduler: S) -> Result<S, SdkError> {
    run_until(config, scheduler, std::future::pending()).await
}

/// Like [`run`], but also stops (with a teardown) when `shutdown` completes, e.g. on Ctrl-C.
///
/// A refused broker login is logged at ERROR (once per backoff cycle) and retried with backoff,
/// as a long-lived scheduler must ride out a broker whose accounts are being fixed.
pub async fn run_until<S: Scheduler>(
    config: SchedulerConfig,
    scheduler: S,
    shutdown: impl Future<Output = ()>,
) -> Result<S, SdkError> {
    run_inner(config, scheduler, shutdown, false).await
}

/// Like [`run_until`], for a one-shot command (`bramble run`): a refused broker login ends it at
/// once with [`SdkError::LoginRefused`] instead of being retried.
pub async fn run_once_until<S: Scheduler>(
    config: SchedulerConfig,
    scheduler: S,
    shutdown: impl Future<Output = ()>,
) -> Result<S, SdkError> {
    run_inner(config, scheduler, shutdown, true).await
}

async fn run_inner<S: Scheduler>(
    config: SchedulerConfig,
    scheduler: S,
    shutdown: impl Future<Output = ()>,
    one_shot: bool,
) -> Result<S, SdkError> {
    let wall_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut core = SchedulerCore::new(&config.client_name, config.registration.clone(), scheduler)?
        .with_wall_clock(wall_secs);
    if let Some(c) = &config.credential {
        core = core.with_principal(c.principal.username().as_str(), c.secret.message_key());
    }
    // Executors log in as their framework: with the login the scheduler itself uses.
    core.set_executor_login(config.brokers.first().login.clone());
    let client = &config.client_name;
    let config_mqtt = ClientConfig {
        inflight: 64,
        request_capacity: 256,
        // Offers of a large cluster come in one event; headroom above the broker's limit.
        max_packet: (bramble_mqtt::MAX_INCOMING, bramble_mqtt::MAX_PACKET),
        // Each connection attempt sets its own will (below).
        last_will: None,
        ..ClientConfig::new(format!("bramble-fw-{client}"), config.brokers.clone())
    };
    // No filters of its own: the core says what to subscribe to after each ConnAck.
    let connection = Arc::new(AtomicU64::new(0));
    let mut nonces = ConnectionNonces::new();
    let will = {
        let (topic, connection) = (will_topic(client), Arc::clone(&connection));
        let (client, key) = (
            client.clone(),
            config
                .credential
                .as_ref()
                .map_or_else(MessageKey::anonymous, |c| c.secret.message_key()),
        );
        move || {
            let nonce = nonces.next();
            connection.store(nonce, Ordering::Relaxed);
            let gone = bramble_proto::frame::seal(
                Call::Gone { connection: nonce }.encode(),
                &key,
                Direction::FrameworkUp,
                &client,
                NO_SESSION,
                WILL_SEQ,
            );
            Some(LastWill::new(topic.clone(), gone, QoS::AtLeastOnce, false))
        }
    };
    let session = Session::new("scheduler", config_mqtt, Vec::new()).with_will(will);
    let mqtt = session.client().clone();
    let mut runner = Runner {
        core,
        mqtt,
        started: Instant::now(),
        connection,
        one_shot,
        refused: None,
    };
    info!(client = %client, brokers = %config.brokers, "scheduler starting");
    runner.run(session, shutdown).await;
    if let Some(refusal) = runner.refused.take() {
        return Err(SdkError::LoginRefused(refusal));
    }
    info!(client = %client, stats = ?runner.core.stats(), "scheduler stopped");
    Ok(runner.core.into_scheduler())
}

/// Names each MQTT connection of this process: a random base from the OS (std's `RandomState`
/// is seeded from it) plus a counter, never 0 (0 leaves a connection unnamed). The master ignores
/// a last will whose connection is not the one the framework registered on last, so a will of an
/// old connection arriving late does not take down the new one.
#[derive(Debug)]
struct ConnectionNonces {
    base: u64,
    count: u64,
}

impl ConnectionNonces {
    fn new() -> Self {
        let base = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        ConnectionNonces { base, count: 0 }
    }

    fn next(&mut self) -> u64 {
        loop {
            self.count += 1;
            let nonce = self.base.wrapping_add(self.count);
            if nonce != 0 {
                return nonce;
            }
        }
    }
}

/// How long a stopping driver waits to get its last calls out.
const STOP_GRACE: Duration = Duration::from_secs(5);

struct Runner<S> {
    core: SchedulerCore<S>,
    mqtt: AsyncClient,
    /// The core's clock starts here.
    started: Instant,
    /// The nonce the will of the current connection attempt carries.
    connection: Arc<AtomicU64>,
    /// Whether a refused login ends the run (a one-shot command) instead of being retried.
    one_shot: bool,
    /// The refusal that ended a one-shot run.
    refused: Option<bramble_mqtt::Refusal>,
}

impl<S: Scheduler> Runner<S> {
    async fn run(&mut self, mut session: Session, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut stop_deadline: Option<Instant> = None;
        let mut disconnect_sent = false;
        loop {
            self.flush();
            let stopping = self.core.is_stopping();
            if stopping && stop_deadline.is_none() {
                stop_deadline = Some(Instant::now() + STOP_GRACE);
            }
            if self.core.is_done() && !disconnect_sent {
                // Requests are handled in order: the disconnect follows every call queued before.
                disconnect_sent = self.mqtt.try_disconnect().is_ok();
            }
            let wake = self
                .core
                .poll_timeout()
                .map(|ms| self.started + Duration::from_millis(ms));
            tokio::select! {
                () = &mut shutdown, if !stopping => {
                    info!("shutdown requested: tearing the framework down");
                    self.core.stop();
                }
                event = session.poll() => match event {
                    SessionEvent::Connected => {
                        let connection = self.connection.load(Ordering::Relaxed);
                        self.core.handle_connected(self.now(), connection);
                        self.subscribe();
                    }
                    SessionEvent::SubAck => self.core.handle_subscribed(self.now()),
                    SessionEvent::Publish(p) => {
                        // A publish that does not decode is counted and logged by the core.
                        let _ = self.core.handle_publish(self.now(), &p.topic, &p.payload);
                    }
                    SessionEvent::Disconnected => break,
                    SessionEvent::Lost { .. } if disconnect_sent => break,
                    SessionEvent::Lost { refused: Some(r), .. } if self.one_shot => {
                        self.refused = Some(r);
                        break;
                    }
                    // The session waits out its backoff before the next attempt.
                    SessionEvent::Lost { .. } => self.core.handle_disconnected(self.now()),
                    SessionEvent::Other(_) => {}
                },
                () = sleep_until(wake) => self.core.handle_timeout(self.now()),
                () = sleep_until(stop_deadline) => {
                    warn!("could not send the last calls in {STOP_GRACE:?}; leaving anyway");
                    break;
                }
            }
        }
    }

    /// Milliseconds since the loop started: the core's clock.
    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn subscribe(&mut self) {
        while let Some(filters) = self.core.poll_subscribe() {
            let subscribe = self.mqtt.try_subscribe_many(
                filters
                    .into_iter()
                    .map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce)),
            );
            if let Err(e) = subscribe {
                warn!("cannot subscribe: {e}; registering anyway");
                self.core.handle_subscribe_failed(self.now());
            }
        }
    }

    /// Publishes what the core hands out, oldest first, until the client's request queue is full.
    fn flush(&mut self) {
        while let Some(mut t) = self.core.poll_transmit() {
            let payload = std::mem::take(&mut t.payload);
            let len = payload.len();
            let qos = match t.qos {
                topic::QoS::AtMostOnce => QoS::AtMostOnce,
                topic::QoS::AtLeastOnce => QoS::AtLeastOnce,
            };
            // rumqttc fails its connection on a packet above its outgoing limit and, after the
            // reconnect, sends the same packet again: one call too large would loop for ever.
            if bramble_mqtt::publish_len(t.topic.as_str(), len, qos) > bramble_mqtt::MAX_PACKET {
                warn!(topic = %t.topic, len, "dropped a publish above the broker's packet limit");
                continue;
            }
            match self
                .mqtt
                .try_publish(t.topic.as_str(), qos, t.retain, payload)
            {
                Ok(()) => trace!(topic = %t.topic, len, "queued a publish"),
                Err(e) => {
                    debug!("publish deferred: {e}");
                    self.core.requeue_transmit(t);
                    break;
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_nonces_are_distinct_and_never_zero() {
        let mut a = ConnectionNonces::new();
        let first: Vec<u64> = (0..3).map(|_| a.next()).collect();
        assert!(first.iter().all(|&n| n != 0));
        assert_ne!(first[0], first[1]);
        assert_ne!(first[1], first[2]);
        let mut wrapping = ConnectionNonces {
            base: u64::MAX - 1,
            count: 0,
        };
        assert_eq!([wrapping.next(), wrapping.next()], [u64::MAX, 1]);
    }
}
