//! The scheduler driver: a framework's [`Scheduler`] gets the master's events as callbacks and
//! answers through a [`SchedulerDriver`]; [`run`] connects both to the broker.
//!
//! The driver itself does no networking (in the spirit of quinn-proto): every call a callback makes
//! is checked and queued in a bounded outbox, which [`run`] publishes after the callback returns
//! (with `try_publish`, never awaiting inside the loop that polls the connection). Tests build a
//! [`SchedulerDriver::new`] on its own, feed a scheduler its callbacks, and inspect
//! [`SchedulerDriver::take_outgoing`].
//!
//! MQTT: client id `bramble-fw-{client}`, persistent session, last will [`Call::Gone`] on the will
//! topic. On every ConnAck it subscribes to its event topic, its framework-message topic and the
//! master's hello, and once the subscription is acknowledged it sends [`Call::Register`] (or
//! [`Call::ReRegister`] with the id it holds), repeating with backoff until `Registered` comes. A
//! new master epoch in the retained hello also triggers a `ReRegister`. Reconnection backs off from
//! 500 ms to 30 s (rumqttc itself would retry at once). A payload that does not decode is logged,
//! counted in [`DriverStats`] and dropped.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use agent_nostd_core::ids::validate_id;
use agent_nostd_core::topic::MASTER_HELLO;
use agent_nostd_core::wire::{MasterMsg, WireMessage};
use rumqttc::{AsyncClient, Event as MqttEvent, EventLoop, LastWill, MqttOptions, Packet, QoS};
use tokio::time::Instant;
use tracing::{debug, info, trace, warn};

use crate::error::{CallError, SdkError};
use crate::messages::{exec_topic, message_topic, FrameworkMessage, MAX_MESSAGE_DATA};
use crate::protocol::{
    call_topic, event_topic, register_topic, will_topic, Accept, Call, Decline, ErrorCode, Event,
    Kill, Offer, OfferId, ReRegister, Register, StatusUpdate, TaskInfo, MAX_OFFERS_PER_CALL,
    MAX_TASKS_PER_CALL,
};

/// The environment variable the driver adds to every task it launches: the scheduler's client
/// name, so the executor knows where to send framework messages.
pub const FRAMEWORK_CLIENT_ENV: &str = "BRAMBLE_FRAMEWORK_CLIENT";

/// How many calls and messages the outbox holds before refusing more.
pub const OUTBOX_CAPACITY: usize = 1024;

/// A framework's scheduler. Every callback gets the driver to answer through; calls are sent
/// after the callback returns.
pub trait Scheduler {
    /// The master accepted the registration (again, after a failover or master restart, when the
    /// id or epoch changed).
    fn registered(&mut self, driver: &mut SchedulerDriver, framework_id: &str, master_epoch: u64) {
        let _ = (driver, framework_id, master_epoch);
    }

    /// New offers: answer each with [`SchedulerDriver::launch`] or [`SchedulerDriver::decline`].
    fn offers(&mut self, driver: &mut SchedulerDriver, offers: Vec<Offer>);

    /// An offer was withdrawn; accepting it now fails with `UnknownOffer`.
    fn offer_rescinded(&mut self, driver: &mut SchedulerDriver, offer_id: OfferId) {
        let _ = (driver, offer_id);
    }

    /// A task changed state. Delivery is at least once: this must be idempotent.
    fn status_update(&mut self, driver: &mut SchedulerDriver, update: StatusUpdate);

    /// An executor sent data (on the framework-message topic). At least once, too.
    fn framework_message(&mut self, driver: &mut SchedulerDriver, task_id: &str, data: Vec<u8>) {
        let _ = (driver, task_id, data);
    }

    /// An agent became unreachable; its tasks get their own updates.
    fn agent_lost(&mut self, driver: &mut SchedulerDriver, agent_id: &str) {
        let _ = (driver, agent_id);
    }

    /// A call failed. `offer_id` names the offer of a refused accept.
    fn error(
        &mut self,
        driver: &mut SchedulerDriver,
        code: ErrorCode,
        offer_id: Option<OfferId>,
        message: &str,
    ) {
        let _ = (driver, code, offer_id, message);
    }
}

/// Something the driver will send.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// A call to the master (on the register or call topic).
    Call(Call),
    /// A framework message to one executor (on its exec topic).
    Message(FrameworkMessage),
}

/// The scheduler's handle on the master: it validates and queues calls. See the module docs.
#[derive(Debug)]
pub struct SchedulerDriver {
    client: String,
    framework_id: Option<String>,
    master_epoch: Option<u64>,
    outbox: VecDeque<Outgoing>,
    stopping: bool,
}

impl SchedulerDriver {
    /// A driver for the scheduler behind `client`, not connected to anything: [`run`] makes its own,
    /// tests use this one and read [`take_outgoing`](Self::take_outgoing).
    pub fn new(client: &str) -> Self {
        SchedulerDriver {
            client: client.to_owned(),
            framework_id: None,
            master_epoch: None,
            outbox: VecDeque::new(),
            stopping: false,
        }
    }

    /// The client name every topic is keyed by.
    pub fn client_name(&self) -> &str {
        &self.client
    }

    /// The framework id the master gave, once registered.
    pub fn framework_id(&self) -> Option<&str> {
        self.framework_id.as_deref()
    }

    /// The epoch of the master the framework registered with.
    pub fn master_epoch(&self) -> Option<u64> {
        self.master_epoch
    }

    /// Accepts `offer_id`, launching `tasks` on it (none: the offer goes back, like a decline with
    /// the default filter). Adds [`FRAMEWORK_CLIENT_ENV`] to each task's environment.
    pub fn launch(&mut self, offer_id: OfferId, tasks: Vec<TaskInfo>) -> Result<(), CallError> {
        if tasks.len() > MAX_TASKS_PER_CALL {
            return Err(CallError::Invalid(format!(
                "{} tasks in one accept; at most {MAX_TASKS_PER_CALL}",
                tasks.len()
            )));
        }
        let mut out = Vec::with_capacity(tasks.len());
        for mut task in tasks {
            validate_id(&task.task_id)
                .map_err(|e| CallError::Invalid(format!("task id `{}`: {e:?}", task.task_id)))?;
            if task.argv.is_empty()
                || task.argv.len() > 16
                || task.argv.iter().any(|a| a.len() > 128)
            {
                return Err(CallError::Invalid(format!(
                    "task {}: argv must be 1 to 16 elements of at most 128 bytes",
                    task.task_id
                )));
            }
            task.env.retain(|(k, _)| k != FRAMEWORK_CLIENT_ENV);
            if task.env.len() >= 16 {
                return Err(CallError::Invalid(format!(
                    "task {}: at most 15 environment variables (the driver adds {FRAMEWORK_CLIENT_ENV})",
                    task.task_id
                )));
            }
            task.env
                .push((FRAMEWORK_CLIENT_ENV.to_owned(), self.client.clone()));
            out.push(task);
        }
        self.push(Outgoing::Call(Call::Accept(Accept {
            offer_id,
            tasks: out,
        })))
    }

    /// Declines offers; their agents are not offered again for `refuse_seconds` (`None`: the
    /// master's default, 5 s).
    pub fn decline(
        &mut self,
        offer_ids: Vec<OfferId>,
        refuse_seconds: Option<u32>,
    ) -> Result<(), CallError> {
        let calls: Vec<Outgoing> = offer_ids
            .chunks(MAX_OFFERS_PER_CALL)
            .map(|ids| {
                Outgoing::Call(Call::Decline(Decline {
                    offer_ids: ids.to_vec(),
                    refuse_seconds,
                }))
            })
            .collect();
        self.room_for(calls.len())?;
        for c in calls {
            self.push(c)?;
        }
        Ok(())
    }

    /// Clears every filter and resumes offers.
    pub fn revive(&mut self) -> Result<(), CallError> {
        self.push(Outgoing::Call(Call::Revive))
    }

    /// Stops offers until the next [`revive`](Self::revive).
    pub fn suppress(&mut self) -> Result<(), CallError> {
        self.push(Outgoing::Call(Call::Suppress))
    }

    /// Kills a task: SIGTERM, then SIGKILL after `grace_ms`.
    pub fn kill(&mut self, task_id: &str, grace_ms: u32) -> Result<(), CallError> {
        self.push(Outgoing::Call(Call::Kill(Kill {
            task_id: task_id.to_owned(),
            grace_ms,
        })))
    }

    /// Asks for the latest state of these tasks (every task when empty); answers come as updates.
    pub fn reconcile(&mut self, task_ids: Vec<String>) -> Result<(), CallError> {
        if task_ids.len() > MAX_TASKS_PER_CALL {
            return Err(CallError::Invalid(format!(
                "{} tasks in one reconcile; at most {MAX_TASKS_PER_CALL}",
                task_ids.len()
            )));
        }
        self.push(Outgoing::Call(Call::Reconcile { task_ids }))
    }

    /// Sends `data` to the executor of `task_id`, straight through the broker.
    pub fn send_message(&mut self, task_id: &str, data: Vec<u8>) -> Result<(), CallError> {
        if data.len() > MAX_MESSAGE_DATA {
            return Err(CallError::Invalid(format!(
                "message of {} bytes; at most {MAX_MESSAGE_DATA}",
                data.len()
            )));
        }
        validate_id(task_id)
            .map_err(|e| CallError::Invalid(format!("task id `{task_id}`: {e:?}")))?;
        self.push(Outgoing::Message(FrameworkMessage {
            task_id: task_id.to_owned(),
            data,
        }))
    }

    /// Tears the framework down (its tasks are killed) and leaves [`run`], which returns the
    /// scheduler. Calls queued before are still sent; later ones are refused.
    pub fn stop(&mut self) {
        if self.stopping {
            return;
        }
        // Teardown may go beyond the capacity: it is the last call.
        if self.framework_id.is_some() {
            self.outbox.push_back(Outgoing::Call(Call::Teardown));
        }
        self.stopping = true;
    }

    /// True once [`stop`](Self::stop) was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// Takes everything queued, oldest first.
    pub fn take_outgoing(&mut self) -> Vec<Outgoing> {
        self.outbox.drain(..).collect()
    }

    /// Takes the queued calls to the master only, dropping framework messages (a test helper).
    pub fn take_calls(&mut self) -> Vec<Call> {
        self.take_outgoing()
            .into_iter()
            .filter_map(|o| match o {
                Outgoing::Call(c) => Some(c),
                Outgoing::Message(_) => None,
            })
            .collect()
    }

    /// Records the registration, as the run loop does on `Registered` (tests use it to set an id).
    pub fn set_registered(&mut self, framework_id: &str, master_epoch: u64) {
        self.framework_id = Some(framework_id.to_owned());
        self.master_epoch = Some(master_epoch);
    }

    fn room_for(&self, n: usize) -> Result<(), CallError> {
        if self.stopping {
            return Err(CallError::Stopping);
        }
        if self.outbox.len() + n > OUTBOX_CAPACITY {
            return Err(CallError::OutboxFull(OUTBOX_CAPACITY));
        }
        Ok(())
    }

    fn push(&mut self, out: Outgoing) -> Result<(), CallError> {
        self.room_for(1)?;
        self.outbox.push_back(out);
        Ok(())
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use agent_nostd_core::Resources;

    #[test]
    fn launched_tasks_carry_the_framework_client_in_their_environment() {
        let mut d = SchedulerDriver::new("pi");
        let mut t = TaskInfo::new("t1", &["/bin/true"], Resources::new(100, 10, 0));
        t.env.push((FRAMEWORK_CLIENT_ENV.into(), "other".into()));
        d.launch(7, vec![t]).unwrap();
        let calls = d.take_calls();
        let Call::Accept(a) = &calls[0] else {
            panic!("not an accept: {calls:?}")
        };
        assert_eq!(a.offer_id, 7);
        assert_eq!(
            a.tasks[0].env,
            vec![(FRAMEWORK_CLIENT_ENV.to_owned(), "pi".to_owned())]
        );
    }

    #[test]
    fn invalid_tasks_are_refused_before_anything_is_queued() {
        let mut d = SchedulerDriver::new("pi");
        let bad_id = TaskInfo::new("a b", &["/bin/true"], Resources::new(1, 1, 0));
        assert!(matches!(
            d.launch(1, vec![bad_id]),
            Err(CallError::Invalid(_))
        ));
        let no_argv = TaskInfo::new("t", &[], Resources::new(1, 1, 0));
        assert!(matches!(
            d.launch(1, vec![no_argv]),
            Err(CallError::Invalid(_))
        ));
        assert!(d.take_outgoing().is_empty());
    }

    #[test]
    fn long_declines_are_split_into_calls_the_master_accepts() {
        let mut d = SchedulerDriver::new("pi");
        d.decline((0..300).collect(), Some(60)).unwrap();
        let calls = d.take_calls();
        assert_eq!(calls.len(), 2);
        assert!(
            matches!(&calls[0], Call::Decline(x) if x.offer_ids.len() == 256 && x.refuse_seconds == Some(60))
        );
    }

    #[test]
    fn a_full_outbox_refuses_calls_instead_of_growing() {
        let mut d = SchedulerDriver::new("pi");
        for _ in 0..OUTBOX_CAPACITY {
            d.revive().unwrap();
        }
        assert_eq!(d.suppress(), Err(CallError::OutboxFull(OUTBOX_CAPACITY)));
    }

    #[test]
    fn stop_queues_a_teardown_once_registered_and_refuses_later_calls() {
        let mut d = SchedulerDriver::new("pi");
        d.set_registered("1-1", 1);
        d.stop();
        d.stop();
        assert_eq!(d.revive(), Err(CallError::Stopping));
        assert_eq!(d.take_calls(), vec![Call::Teardown]);
    }
}
