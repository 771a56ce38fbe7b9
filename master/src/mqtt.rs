//! The `bramble` binary's MQTT plumbing, a leaf every other module uses: the broker addresses, the
//! largest packet, and the one-shot clients of the CLI and the master's start (read the retained
//! messages under some filters, publish one message). Long-lived clients (the master's driver,
//! `bramble deploy`'s watcher) use [`bramble_mqtt::Session`] directly, which fails over between
//! the brokers it is given; every client is built by [`bramble_mqtt::connect`]. A one-shot client
//! given several brokers tries them in order until one answers.

use std::time::Duration;

use bramble_master_core::status::MAX_STALE;
use bramble_mqtt::ClientConfig;
use rumqttc::{Event, Packet, QoS, SubscribeFilter};

pub use bramble_sdk::broker::{BrokerAddr, Brokers};

pub use bramble_mqtt::{MAX_INCOMING, MAX_PACKET};

/// How long the broker must be quiet after the SUBACK before the retained messages count as all
/// delivered.
pub const QUIET: Duration = Duration::from_millis(300);

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The broker could not be reached or dropped the connection.
    #[error("cannot reach the broker at {broker}: {message}")]
    Connection {
        /// The broker.
        broker: String,
        /// What went wrong.
        message: String,
    },
    /// The broker refused the login: no other broker of the list is tried, and nothing is
    /// retried.
    #[error("{0}")]
    Refused(bramble_mqtt::Refusal),
    /// The broker did not acknowledge the subscription in time.
    #[error("the broker at {0} did not answer in time")]
    Timeout(String),
}

impl QueryError {
    /// `broker` could not be reached, or dropped the connection, for `why`.
    pub(crate) fn connection(broker: &BrokerAddr, why: &dyn std::fmt::Display) -> QueryError {
        QueryError::Connection {
            broker: broker.to_string(),
            message: why.to_string(),
        }
    }

    /// What the end of a one-shot connection to `broker` with `e` means: the broker's refusal
    /// of the login, or a connection error.
    pub(crate) fn of(broker: &BrokerAddr, e: rumqttc::ConnectionError) -> QueryError {
        let user = broker.login.as_ref().map(|l| l.username.as_str());
        bramble_mqtt::Refusal::of(&e, user)
            .map_or_else(|| QueryError::connection(broker, &e), QueryError::Refused)
    }
}

/// The config of a one-shot client: a clean session, 5 s keep-alive, packets up to
/// [`MAX_INCOMING`] in and [`MAX_PACKET`] out.
pub(crate) fn one_shot(id: String, broker: &BrokerAddr) -> ClientConfig {
    ClientConfig {
        clean_session: true,
        keep_alive: Duration::from_secs(5),
        request_capacity: 16,
        max_packet: (MAX_INCOMING, MAX_PACKET),
        ..ClientConfig::new(id, broker)
    }
}

/// Subscribes to `filters` and hands every message to `on_publish` until the broker has been
/// quiet for [`QUIET`] after the SUBACK (so, at first, the retained messages), or until `timeout`.
/// Of several `brokers`, the first that answers in time does (each is given `timeout`).
pub async fn retained(
    brokers: impl Into<Brokers>,
    filters: &[String],
    timeout: Duration,
    on_publish: impl FnMut(&str, &[u8]),
) -> Result<(), QueryError> {
    retained_as(brokers, filters, timeout, None, on_publish).await
}

/// [`retained`], logging in with `login`.
pub async fn retained_as(
    brokers: impl Into<Brokers>,
    filters: &[String],
    timeout: Duration,
    login: Option<&bramble_mqtt::Login>,
    mut on_publish: impl FnMut(&str, &[u8]),
) -> Result<(), QueryError> {
    let brokers = brokers.into();
    let mut last = None;
    for broker in &brokers {
        match retained_at(broker, filters, timeout, login, &mut on_publish).await {
            Err(e @ (QueryError::Connection { .. } | QueryError::Timeout(_))) => last = Some(e),
            done => return done,
        }
    }
    Err(last.expect("a broker list is never empty"))
}

/// [`retained`] from one broker.
async fn retained_at(
    broker: &BrokerAddr,
    filters: &[String],
    timeout: Duration,
    login: Option<&bramble_mqtt::Login>,
    on_publish: &mut impl FnMut(&str, &[u8]),
) -> Result<(), QueryError> {
    static QUERIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = QUERIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = format!("bramble-query-{}-{n}", std::process::id());
    let config = ClientConfig {
        login: login.cloned(),
        ..one_shot(id, broker)
    };
    let (client, mut eventloop) = bramble_mqtt::connect(config);
    let connection = |e: &dyn std::fmt::Display| QueryError::connection(broker, e);
    let refused_or = |e| QueryError::of(broker, e);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut subacked = false;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let wait = if subacked { QUIET.min(left) } else { left };
        match tokio::time::timeout(wait, eventloop.poll()).await {
            Err(_) if subacked => break,
            Err(_) => return Err(QueryError::Timeout(broker.to_string())),
            Ok(Err(e)) => return Err(refused_or(e)),
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                let subs = filters
                    .iter()
                    .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                client
                    .subscribe_many(subs)
                    .await
                    .map_err(|e| connection(&e))?;
            }
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => subacked = true,
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => on_publish(&p.topic, &p.payload),
            Ok(Ok(_)) => {}
        }
        if subacked && tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    let _ = client.try_disconnect();
    Ok(())
}

/// The topics of the non-empty retained messages under `filters` (at most
/// [`MAX_STALE`]), or none if the broker cannot be reached
/// within 2 s. The master uses it at start to find what a previous master left.
pub async fn retained_topics(broker: impl Into<Brokers>, filters: &[String]) -> Vec<String> {
    retained_topics_as(broker, filters, None).await
}

/// [`retained_topics`], logging in with `login` (the master's, when the broker wants one).
pub async fn retained_topics_as(
    broker: impl Into<Brokers>,
    filters: &[String],
    login: Option<&bramble_mqtt::Login>,
) -> Vec<String> {
    let mut found = Vec::new();
    let sweep = retained_as(broker, filters, Duration::from_secs(2), login, |t, p| {
        if !p.is_empty() && found.len() < MAX_STALE {
            found.push(t.to_owned());
        }
    });
    if let Err(e) = sweep.await {
        tracing::debug!("no retained topics read: {e}");
    }
    found
}

/// Publishes one message at QoS 1 (not retained) and waits for the broker's acknowledgement. Of
/// several `brokers`, the first that can be reached takes it (each tried within `timeout`; one
/// that took the message but did not acknowledge it in time is not asked again elsewhere).
pub async fn publish_once(
    brokers: impl Into<Brokers>,
    topic: &str,
    payload: Vec<u8>,
    timeout: Duration,
) -> Result<(), QueryError> {
    let brokers = brokers.into();
    let mut last = None;
    for broker in &brokers {
        match publish_once_at(broker, topic, payload.clone(), timeout).await {
            Err(e @ QueryError::Connection { .. }) => last = Some(e),
            done => return done,
        }
    }
    Err(last.expect("a broker list is never empty"))
}

/// [`publish_once`] to one broker.
async fn publish_once_at(
    broker: &BrokerAddr,
    topic: &str,
    payload: Vec<u8>,
    timeout: Duration,
) -> Result<(), QueryError> {
    static PUBLISHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PUBLISHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = format!("bramble-cmd-{}-{n}", std::process::id());
    let (client, mut eventloop) = bramble_mqtt::connect(one_shot(id, broker));
    let connection = |e: &dyn std::fmt::Display| QueryError::connection(broker, e);
    let refused_or = |e| QueryError::of(broker, e);
    client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .map_err(|e| connection(&e))?;
    let acked = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(refused_or(e)),
            }
        }
    };
    let result = tokio::time::timeout(timeout, acked)
        .await
        .map_err(|_| QueryError::Timeout(broker.to_string()))?;
    let _ = client.try_disconnect();
    result
}
