//! The scheduler's sans-IO state machine, [`SchedulerCore`]: registration, its backoff, the
//! master's epoch, and dispatch of what arrives to the framework's [`Scheduler`].
//!
//! It does no I/O and reads no clock: `now` (milliseconds on any monotonic clock, as in the agent's
//! `AgentCore`) is a parameter. The run loop, or a simulation, feeds it inputs and carries out its
//! outputs:
//!
//! - inputs: [`SchedulerCore::handle_connected`] (a ConnAck), [`SchedulerCore::handle_subscribed`]
//!   (the SubAck) or [`SchedulerCore::handle_subscribe_failed`],
//!   [`SchedulerCore::handle_publish`] (events, framework messages, the master's hello),
//!   [`SchedulerCore::handle_timeout`], [`SchedulerCore::handle_disconnected`] and
//!   [`SchedulerCore::stop`];
//! - outputs: [`SchedulerCore::poll_subscribe`] (the topics to subscribe to after a ConnAck),
//!   [`SchedulerCore::poll_transmit`] (a call or framework message to publish, and where),
//!   [`SchedulerCore::poll_timeout`] (when to call `handle_timeout` next) and
//!   [`SchedulerCore::is_done`] (the scheduler stopped and everything it queued was handed out).
//!
//! # Call order
//!
//! After a ConnAck, the driver calls `handle_connected`, then `poll_subscribe` and subscribes to
//! what it returns (reporting a refusal with `handle_subscribe_failed`). After any `handle_*` call
//! it calls `poll_transmit` until it returns `None` (a transmit the transport cannot take yet goes
//! back with [`SchedulerCore::requeue_transmit`], and the driver tries again later), then
//! `poll_timeout` to arm its timer. When the timer fires it calls `handle_timeout(now)` and polls
//! again. It leaves once `is_done` holds.
//!
//! # Guarantees
//!
//! - Once subscribed, the core sends `Register` (or `ReRegister` with the id it holds) and repeats
//!   it with backoff, from 2 s doubling up to 30 s, until `Registered` comes. One registration
//!   waits at a time, ahead of every other call.
//! - A new master epoch in the master's hello, or a reconnect, makes it register again.
//! - A payload that does not decode is counted in [`DriverStats`], logged and dropped.

use agent_nostd_core::ids::validate_id;
use agent_nostd_core::topic::{QoS, MASTER_HELLO};
use agent_nostd_core::wire::{MasterMsg, WireMessage};
use tracing::{debug, info, trace, warn};

use super::{Outgoing, Scheduler, SchedulerDriver};
use crate::error::SdkError;
use crate::messages::{exec_topic, message_topic, FrameworkMessage};
use crate::protocol::{
    call_topic, event_topic, register_topic, Call, DecodeError, ErrorCode, Event, ReRegister,
    Register,
};

/// The first registration retry comes this long (ms) after the first attempt.
const REGISTER_BACKOFF_START_MS: u64 = 2_000;
/// Registration retries are never further apart than this (ms).
const REGISTER_BACKOFF_MAX_MS: u64 = 30_000;

/// Counters of what the driver handled and dropped.
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

/// Why [`SchedulerCore::handle_publish`] dropped a publish. Each is also counted in
/// [`DriverStats`] and logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The payload on the event topic is not an [`Event`].
    #[error("the event does not decode: {0}")]
    BadEvent(#[source] DecodeError),
    /// The payload on the framework-message topic is not a [`FrameworkMessage`].
    #[error("the framework message does not decode: {0}")]
    BadMessage(#[source] DecodeError),
    /// The payload on the master's hello topic is not a `Hello`.
    #[error("the master hello is not a Hello")]
    BadHello,
    /// The topic is not one this scheduler reads.
    #[error("not a topic this scheduler reads")]
    UnknownTopic,
}

/// A payload [`SchedulerCore::poll_transmit`] encoded, and where to publish it.
#[derive(Debug, Clone, PartialEq)]
pub struct Transmit {
    /// The topic.
    pub topic: String,
    /// The encoded call or framework message.
    pub payload: Vec<u8>,
    /// The QoS to publish with.
    pub qos: QoS,
    /// Whether the broker should retain it.
    pub retain: bool,
    item: Outgoing,
}

impl Transmit {
    /// The call or framework message the payload encodes.
    pub fn outgoing(&self) -> &Outgoing {
        &self.item
    }
}

/// The scheduler side of a framework without its I/O: see the module docs for the call order.
#[derive(Debug)]
pub struct SchedulerCore<S> {
    scheduler: S,
    driver: SchedulerDriver,
    registration: Register,
    event_topic: String,
    message_topic: String,
    stats: DriverStats,
    /// Connected, and the topics not handed out yet by `poll_subscribe`.
    subscribe_due: bool,
    /// Subscribed after a ConnAck; the registration goes out on the SubAck.
    awaiting_suback: bool,
    registered: bool,
    /// The last registration sent was a `ReRegister`.
    sent_reregister: bool,
    /// When to (re)send the registration, while unregistered.
    register_at: Option<u64>,
    register_backoff_ms: u64,
}

impl<S: Scheduler> SchedulerCore<S> {
    /// A core for `scheduler`, whose topics are keyed by `client` (a valid id), registering with
    /// `registration` once connected. Refuses a client name or registration any master would.
    pub fn new(client: &str, registration: Register, scheduler: S) -> Result<Self, SdkError> {
        validate_id(client).map_err(|_| SdkError::BadClientName(client.to_owned()))?;
        registration.validate().map_err(SdkError::BadRegistration)?;
        Ok(SchedulerCore {
            scheduler,
            driver: SchedulerDriver::new(client),
            registration,
            event_topic: event_topic(client),
            message_topic: message_topic(client),
            stats: DriverStats::default(),
            subscribe_due: false,
            awaiting_suback: false,
            registered: false,
            sent_reregister: false,
            register_at: None,
            register_backoff_ms: REGISTER_BACKOFF_START_MS,
        })
    }

    /// The framework's scheduler.
    pub fn scheduler(&self) -> &S {
        &self.scheduler
    }

    /// The framework's scheduler, to change it between inputs.
    pub fn scheduler_mut(&mut self) -> &mut S {
        &mut self.scheduler
    }

    /// Gives the scheduler back, e.g. once [`is_done`](Self::is_done).
    pub fn into_scheduler(self) -> S {
        self.scheduler
    }

    /// The driver the scheduler's callbacks answer through (its id, epoch and outbox).
    pub fn driver(&self) -> &SchedulerDriver {
        &self.driver
    }

    /// What the core handled and dropped so far.
    pub fn stats(&self) -> DriverStats {
        self.stats
    }

    /// True once the current master acknowledged the registration (until a reconnect, a new
    /// master epoch or a `NotRegistered` error).
    pub fn is_registered(&self) -> bool {
        self.registered
    }

    /// True once the scheduler (or [`stop`](Self::stop)) asked to stop.
    pub fn is_stopping(&self) -> bool {
        self.driver.stopping
    }

    /// True once stopping and every call queued before was handed out by
    /// [`poll_transmit`](Self::poll_transmit): the driver may disconnect.
    pub fn is_done(&self) -> bool {
        self.driver.stopping && self.driver.outbox.is_empty()
    }

    // ----- inputs -----

    /// The connection to the broker is up (after every ConnAck): [`poll_subscribe`] says what to
    /// subscribe to. A reconnect may have cost the master our session (its last will fired), so
    /// the framework registers again.
    ///
    /// [`poll_subscribe`]: Self::poll_subscribe
    pub fn handle_connected(&mut self, _now: u64) {
        self.subscribe_due = true;
        self.registered = false;
    }

    /// The subscription from [`poll_subscribe`](Self::poll_subscribe) was acknowledged: the
    /// registration goes out.
    pub fn handle_subscribed(&mut self, now: u64) {
        if self.awaiting_suback {
            self.awaiting_suback = false;
            self.send_registration(now);
        }
    }

    /// The subscription could not even be requested: the core registers anyway.
    pub fn handle_subscribe_failed(&mut self, now: u64) {
        self.awaiting_suback = false;
        self.send_registration(now);
    }

    /// The connection to the broker is lost; a SubAck for the old connection will not come.
    pub fn handle_disconnected(&mut self, _now: u64) {
        self.subscribe_due = false;
        self.awaiting_suback = false;
    }

    /// A publish arrived on `topic`: an event, a framework message or the master's hello. What does
    /// not decode is counted, logged and dropped (the error says why).
    pub fn handle_publish(
        &mut self,
        now: u64,
        topic: &str,
        payload: &[u8],
    ) -> Result<(), PublishError> {
        trace!(topic, len = payload.len(), "received a publish");
        let result = if topic == self.event_topic {
            Event::decode(payload)
                .map(|event| {
                    self.stats.events += 1;
                    self.on_event(now, event);
                })
                .map_err(PublishError::BadEvent)
        } else if topic == self.message_topic {
            FrameworkMessage::decode(payload)
                .map(|m| {
                    self.stats.messages += 1;
                    self.scheduler
                        .framework_message(&mut self.driver, &m.task_id, m.data);
                })
                .map_err(PublishError::BadMessage)
        } else if topic == MASTER_HELLO {
            match MasterMsg::decode(payload) {
                Ok(MasterMsg::Hello { master_epoch }) => {
                    self.on_hello(now, master_epoch);
                    Ok(())
                }
                Ok(_) | Err(_) => Err(PublishError::BadHello),
            }
        } else {
            Err(PublishError::UnknownTopic)
        };
        if let Err(e) = &result {
            if *e == PublishError::UnknownTopic {
                self.stats.misrouted += 1;
            } else {
                self.stats.malformed += 1;
            }
            warn!(
                topic,
                len = payload.len(),
                malformed = self.stats.malformed,
                misrouted = self.stats.misrouted,
                "dropped a publish: {e}"
            );
        }
        result
    }

    /// Time passed: resends the registration when its retry is due.
    pub fn handle_timeout(&mut self, now: u64) {
        match self.register_at {
            Some(at) if now >= at => {
                self.register_at = None;
                if !self.registered {
                    self.send_registration(now);
                }
            }
            _ => {}
        }
    }

    /// Tears the framework down, as [`SchedulerDriver::stop`] does from a callback (e.g. on
    /// Ctrl-C).
    pub fn stop(&mut self) {
        self.driver.stop();
    }

    // ----- outputs -----

    /// The topic filters to subscribe to (at least once), once after each
    /// [`handle_connected`](Self::handle_connected).
    pub fn poll_subscribe(&mut self) -> Option<[String; 3]> {
        if !std::mem::take(&mut self.subscribe_due) {
            return None;
        }
        self.awaiting_suback = true;
        Some([
            self.event_topic.clone(),
            self.message_topic.clone(),
            MASTER_HELLO.to_owned(),
        ])
    }

    /// The next call or framework message to publish, oldest first (a registration goes ahead of
    /// everything), or `None` when the outbox is empty.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let item = self.driver.outbox.pop_front()?;
        let client = &self.driver.client;
        let (topic, payload) = match &item {
            Outgoing::Call(c @ (Call::Register(_) | Call::ReRegister(_))) => {
                (register_topic(client), c.encode())
            }
            Outgoing::Call(c) => (call_topic(client), c.encode()),
            Outgoing::Message(m) => (exec_topic(client, &m.task_id), m.encode()),
        };
        Some(Transmit {
            topic,
            payload,
            qos: QoS::AtLeastOnce,
            retain: false,
            item,
        })
    }

    /// Puts back a transmit the transport could not take: it comes out first again, unless a
    /// newer registration replaces it. Its payload may have been taken; it is encoded again.
    pub fn requeue_transmit(&mut self, transmit: Transmit) {
        self.driver.outbox.push_front(transmit.item);
    }

    /// When the driver should call [`handle_timeout`](Self::handle_timeout) next, or `None`
    /// when nothing is scheduled.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.register_at
    }

    // ----- registration and dispatch -----

    /// Queues `Register`, or `ReRegister` when the framework holds an id, at the front of the
    /// outbox, and arms the retry timer.
    fn send_registration(&mut self, now: u64) {
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
        self.register_at = Some(now + self.register_backoff_ms);
        self.register_backoff_ms = (self.register_backoff_ms * 2).min(REGISTER_BACKOFF_MAX_MS);
    }

    fn on_hello(&mut self, now: u64, epoch: u64) {
        if self.registered && self.driver.master_epoch != Some(epoch) {
            info!(epoch, "a new master is up: re-registering");
            self.registered = false;
            self.register_backoff_ms = REGISTER_BACKOFF_START_MS;
            self.send_registration(now);
        }
    }

    fn on_event(&mut self, now: u64, event: Event) {
        let d = &mut self.driver;
        match event {
            Event::Registered {
                framework_id,
                master_epoch,
            } => {
                self.registered = true;
                self.register_at = None;
                self.register_backoff_ms = REGISTER_BACKOFF_START_MS;
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
                        self.send_registration(now);
                    }
                    ErrorCode::RegistrationRefused => {
                        self.register_at = None;
                    }
                    ErrorCode::NotRegistered => {
                        self.registered = false;
                        if self.register_at.is_none() {
                            self.send_registration(now);
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

#[cfg(test)]
mod tests;
