//! The run loop: [`run`] connects a [`Scheduler`] and its [`SchedulerDriver`] to the broker over
//! MQTT (rumqttc on tokio).

use std::future::Future;
use std::time::Duration;

use agent_nostd_core::ids::validate_id;
use agent_nostd_core::topic::MASTER_HELLO;
use agent_nostd_core::wire::{MasterMsg, WireMessage};
use rumqttc::{AsyncClient, Event as MqttEvent, EventLoop, LastWill, MqttOptions, Packet, QoS};
use tokio::time::Instant;
use tracing::{debug, info, trace, warn};

use super::{Outgoing, Scheduler, SchedulerDriver};
use crate::error::SdkError;
use crate::messages::{exec_topic, message_topic, FrameworkMessage};
use crate::protocol::{
    call_topic, event_topic, register_topic, will_topic, Call, ErrorCode, Event, ReRegister,
    Register,
};

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

/// Counters of what the run loop dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Payloads that did not decode.
    pub malformed: u64,
    /// Publishes on a topic the driver does not read.
    pub misrouted: u64,
    /// Events handled.
    pub events: u64,
    /// Framework messages handled.
    pub messages: u64,
}

/// Runs `scheduler` until it calls [`SchedulerDriver::stop`], then returns it.
pub async fn run<S: Scheduler>(config: SchedulerConfig, scheduler: S) -> Result<S, SdkError> {
    run_until(config, scheduler, std::future::pending()).await
}

/// Like [`run`], but also stops (with a teardown) when `shutdown` completes, e.g. on Ctrl-C.
pub async fn run_until<S: Scheduler>(
    config: SchedulerConfig,
    scheduler: S,
    shutdown: impl Future<Output = ()>,
) -> Result<S, SdkError> {
    validate_id(&config.client_name)
        .map_err(|_| SdkError::BadClientName(config.client_name.clone()))?;
    config
        .registration
        .validate()
        .map_err(SdkError::BadRegistration)?;
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
        scheduler,
        driver: SchedulerDriver::new(client),
        registration: config.registration.clone(),
        mqtt,
        event_topic: event_topic(client),
        message_topic: message_topic(client),
        stats: DriverStats::default(),
        awaiting_suback: false,
        registered: false,
        sent_reregister: false,
        register_at: None,
        register_backoff: REGISTER_BACKOFF_START,
    };
    info!(client = %client, broker = %format!("{}:{}", config.broker_host, config.broker_port), "scheduler starting");
    runner.run(eventloop, shutdown).await;
    info!(client = %client, stats = ?runner.stats, "scheduler stopped");
    Ok(runner.scheduler)
}

const REGISTER_BACKOFF_START: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a stopping driver waits to get its last calls out.
const STOP_GRACE: Duration = Duration::from_secs(5);

struct Runner<S> {
    scheduler: S,
    driver: SchedulerDriver,
    registration: Register,
    mqtt: AsyncClient,
    event_topic: String,
    message_topic: String,
    stats: DriverStats,
    /// Subscribed after a ConnAck; the registration goes out on the SubAck.
    awaiting_suback: bool,
    registered: bool,
    /// The last registration sent was a `ReRegister`.
    sent_reregister: bool,
    /// When to (re)send the registration, while unregistered.
    register_at: Option<Instant>,
    register_backoff: Duration,
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
            if self.driver.stopping && stop_deadline.is_none() {
                stop_deadline = Some(Instant::now() + STOP_GRACE);
            }
            if self.driver.stopping && self.driver.outbox.is_empty() && !disconnect_sent {
                // Requests are handled in order: the disconnect follows every call queued before.
                disconnect_sent = self.mqtt.try_disconnect().is_ok();
            }
            tokio::select! {
                () = &mut shutdown, if !self.driver.stopping => {
                    info!("shutdown requested: tearing the framework down");
                    self.driver.stop();
                }
                event = eventloop.poll(), if reconnect_at.is_none() => match event {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                        info!("connected to the broker");
                        backoff = Duration::from_millis(500);
                        self.on_connected();
                    }
                    Ok(MqttEvent::Incoming(Packet::SubAck(_))) if self.awaiting_suback => {
                        self.awaiting_suback = false;
                        self.send_registration();
                    }
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => self.on_publish(&p.topic, &p.payload),
                    Ok(MqttEvent::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(e) => {
                        if disconnect_sent {
                            break;
                        }
                        warn!("broker connection lost: {e}; retrying in {backoff:?}");
                        self.awaiting_suback = false;
                        reconnect_at = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                },
                () = sleep_until(reconnect_at) => reconnect_at = None,
                () = sleep_until(self.register_at) => {
                    self.register_at = None;
                    if !self.registered {
                        self.send_registration();
                    }
                }
                () = sleep_until(stop_deadline) => {
                    warn!("could not send the last calls in {STOP_GRACE:?}; leaving anyway");
                    break;
                }
            }
        }
    }

    fn on_connected(&mut self) {
        let filters = [
            self.event_topic.clone(),
            self.message_topic.clone(),
            MASTER_HELLO.to_owned(),
        ];
        let subscribe = self.mqtt.try_subscribe_many(
            filters
                .into_iter()
                .map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce)),
        );
        match subscribe {
            Ok(()) => self.awaiting_suback = true,
            Err(e) => {
                warn!("cannot subscribe: {e}; registering anyway");
                self.send_registration();
            }
        }
        // A reconnect may have cost the master our session (its last will fired): register again.
        self.registered = false;
    }

    /// Queues `Register`, or `ReRegister` when the framework holds an id, at the front of the
    /// outbox, and arms the retry timer.
    fn send_registration(&mut self) {
        let call = match &self.driver.framework_id {
            Some(id) => {
                self.sent_reregister = true;
                Call::ReRegister(ReRegister {
                    framework_id: id.clone(),
                    info: self.registration.clone(),
                })
            }
            None => {
                self.sent_reregister = false;
                Call::Register(self.registration.clone())
            }
        };
        debug!(reregister = self.sent_reregister, "registering");
        // One registration waiting is enough: retries replace it rather than pile up.
        self.driver
            .outbox
            .retain(|o| !matches!(o, Outgoing::Call(Call::Register(_) | Call::ReRegister(_))));
        self.driver.outbox.push_front(Outgoing::Call(call));
        self.register_at = Some(Instant::now() + self.register_backoff);
        self.register_backoff = (self.register_backoff * 2).min(MAX_BACKOFF);
    }

    /// Publishes what the outbox holds, oldest first, until the client's request queue is full.
    fn flush(&mut self) {
        while let Some(out) = self.driver.outbox.front() {
            let (topic, payload) = match out {
                Outgoing::Call(c @ (Call::Register(_) | Call::ReRegister(_))) => {
                    (register_topic(&self.driver.client), c.encode())
                }
                Outgoing::Call(c) => (call_topic(&self.driver.client), c.encode()),
                Outgoing::Message(m) => (exec_topic(&self.driver.client, &m.task_id), m.encode()),
            };
            let len = payload.len();
            match self
                .mqtt
                .try_publish(topic.as_str(), QoS::AtLeastOnce, false, payload)
            {
                Ok(()) => {
                    trace!(%topic, len, "queued a publish");
                    self.driver.outbox.pop_front();
                }
                Err(e) => {
                    debug!("publish deferred: {e}");
                    break;
                }
            }
        }
    }

    fn on_publish(&mut self, topic: &str, payload: &[u8]) {
        trace!(topic, len = payload.len(), "received a publish");
        if topic == self.event_topic {
            match Event::decode(payload) {
                Ok(event) => {
                    self.stats.events += 1;
                    self.on_event(event);
                }
                Err(e) => {
                    self.stats.malformed += 1;
                    warn!(
                        topic,
                        len = payload.len(),
                        malformed = self.stats.malformed,
                        "dropped an event: {e}"
                    );
                }
            }
        } else if topic == self.message_topic {
            match FrameworkMessage::decode(payload) {
                Ok(m) => {
                    self.stats.messages += 1;
                    self.scheduler
                        .framework_message(&mut self.driver, &m.task_id, m.data);
                }
                Err(e) => {
                    self.stats.malformed += 1;
                    warn!(
                        topic,
                        len = payload.len(),
                        malformed = self.stats.malformed,
                        "dropped a framework message: {e}"
                    );
                }
            }
        } else if topic == MASTER_HELLO {
            match MasterMsg::decode(payload) {
                Ok(MasterMsg::Hello { master_epoch }) => self.on_hello(master_epoch),
                Ok(_) | Err(_) => {
                    self.stats.malformed += 1;
                    warn!(
                        topic,
                        len = payload.len(),
                        malformed = self.stats.malformed,
                        "dropped a master hello that is not a Hello"
                    );
                }
            }
        } else {
            self.stats.misrouted += 1;
            warn!(
                topic,
                misrouted = self.stats.misrouted,
                "dropped a message on a topic this scheduler does not read"
            );
        }
    }

    fn on_hello(&mut self, epoch: u64) {
        if self.registered && self.driver.master_epoch != Some(epoch) {
            info!(epoch, "a new master is up: re-registering");
            self.registered = false;
            self.register_backoff = REGISTER_BACKOFF_START;
            self.send_registration();
        }
    }

    fn on_event(&mut self, event: Event) {
        let d = &mut self.driver;
        match event {
            Event::Registered {
                framework_id,
                master_epoch,
            } => {
                self.registered = true;
                self.register_at = None;
                self.register_backoff = REGISTER_BACKOFF_START;
                let same = d.framework_id.as_deref() == Some(framework_id.as_str())
                    && d.master_epoch == Some(master_epoch);
                if same {
                    debug!(%framework_id, "registration confirmed again");
                    return;
                }
                info!(%framework_id, master_epoch, "registered");
                d.set_registered(&framework_id, master_epoch);
                self.scheduler.registered(d, &framework_id, master_epoch);
            }
            Event::Offers(offers) => self.scheduler.offers(d, offers),
            Event::Rescind { offer_id } => self.scheduler.offer_rescinded(d, offer_id),
            Event::Update(update) => self.scheduler.status_update(d, update),
            Event::AgentLost { agent_id } => self.scheduler.agent_lost(d, &agent_id),
            Event::Error {
                code,
                offer_id,
                message,
            } => {
                warn!(?code, ?offer_id, "master error: {message}");
                match code {
                    ErrorCode::RegistrationRefused if self.sent_reregister => {
                        info!("the master refused our old id: registering as a new framework");
                        d.framework_id = None;
                        d.master_epoch = None;
                        self.send_registration();
                    }
                    ErrorCode::RegistrationRefused => {
                        self.register_at = None;
                    }
                    ErrorCode::NotRegistered => {
                        self.registered = false;
                        if self.register_at.is_none() {
                            self.send_registration();
                        }
                    }
                    _ => {}
                }
                self.scheduler
                    .error(&mut self.driver, code, offer_id, &message);
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
