//! The run loop: [`run`] connects a [`SchedulerCore`] to the broker over MQTT (rumqttc on tokio).
//!
//! It is a thin loop: it turns MQTT packets and timer wake-ups into the core's `handle_*` calls,
//! publishes what [`SchedulerCore::poll_transmit`] hands out (with `try_publish`, never awaiting
//! inside the loop that polls the connection), and sleeps until [`SchedulerCore::poll_timeout`].
//! What stays here is the connection's own: reconnecting with backoff from 500 ms to 30 s (rumqttc
//! itself would retry at once), the clock (milliseconds since the loop started), and the grace
//! period a stopping scheduler gets to send its last calls.

use std::future::Future;
use std::time::Duration;

use agent_nostd_core::topic;
use rumqttc::{AsyncClient, Event as MqttEvent, EventLoop, LastWill, MqttOptions, Packet, QoS};
use tokio::time::Instant;
use tracing::{debug, info, trace, warn};

use super::{Scheduler, SchedulerCore};
use crate::error::SdkError;
use crate::protocol::{will_topic, Call, Register};

/// Everything [`run`] needs.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// The broker's host.
    pub broker_host: String,
    /// The broker's port.
    pub broker_port: u16,
    /// The client name every topic is keyed by (a valid id); the MQTT client id is
    /// `bramble-fw-{client_name}`.
    pub client_name: String,
    /// The registration sent to the master.
    pub registration: Register,
}

/// Runs `scheduler` until it calls [`SchedulerDriver::stop`](super::SchedulerDriver::stop), then
/// returns it.
pub async fn run<S: Scheduler>(config: SchedulerConfig, scheduler: S) -> Result<S, SdkError> {
    run_until(config, scheduler, std::future::pending()).await
}

/// Like [`run`], but also stops (with a teardown) when `shutdown` completes, e.g. on Ctrl-C.
pub async fn run_until<S: Scheduler>(
    config: SchedulerConfig,
    scheduler: S,
    shutdown: impl Future<Output = ()>,
) -> Result<S, SdkError> {
    let core = SchedulerCore::new(&config.client_name, config.registration.clone(), scheduler)?;
    let client = &config.client_name;
    let mut options = MqttOptions::new(
        format!("bramble-fw-{client}"),
        config.broker_host.clone(),
        config.broker_port,
    );
    options
        .set_clean_session(false)
        .set_keep_alive(Duration::from_secs(15))
        .set_inflight(64)
        .set_request_channel_capacity(256)
        // Offers of a large cluster come in one event; calls stay small.
        .set_max_packet_size(4 * 1024 * 1024, 64 * 1024)
        .set_last_will(LastWill::new(
            will_topic(client),
            Call::Gone.encode(),
            QoS::AtLeastOnce,
            false,
        ));
    let (mqtt, mut eventloop) = AsyncClient::new(options, 256);
    // Small MQTT messages must not wait on Nagle's algorithm (it cost ~40 ms per hop).
    let mut net = eventloop.network_options();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    let mut runner = Runner {
        core,
        mqtt,
        started: Instant::now(),
    };
    info!(client = %client, broker = %format!("{}:{}", config.broker_host, config.broker_port), "scheduler starting");
    runner.run(eventloop, shutdown).await;
    info!(client = %client, stats = ?runner.core.stats(), "scheduler stopped");
    Ok(runner.core.into_scheduler())
}

const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a stopping driver waits to get its last calls out.
const STOP_GRACE: Duration = Duration::from_secs(5);

struct Runner<S> {
    core: SchedulerCore<S>,
    mqtt: AsyncClient,
    /// The core's clock starts here.
    started: Instant,
}

impl<S: Scheduler> Runner<S> {
    async fn run(&mut self, mut eventloop: EventLoop, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(500);
        let mut reconnect_at: Option<Instant> = None;
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
                event = eventloop.poll(), if reconnect_at.is_none() => match event {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                        info!("connected to the broker");
                        backoff = Duration::from_millis(500);
                        self.core.handle_connected(self.now());
                        self.subscribe();
                    }
                    Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                        self.core.handle_subscribed(self.now());
                    }
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                        // A publish that does not decode is counted and logged by the core.
                        let _ = self.core.handle_publish(self.now(), &p.topic, &p.payload);
                    }
                    Ok(MqttEvent::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(e) => {
                        if disconnect_sent {
                            break;
                        }
                        warn!("broker connection lost: {e}; retrying in {backoff:?}");
                        self.core.handle_disconnected(self.now());
                        reconnect_at = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                },
                () = sleep_until(reconnect_at) => reconnect_at = None,
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
