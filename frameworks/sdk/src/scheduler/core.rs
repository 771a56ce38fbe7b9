//! The scheduler's sans-IO state machine, [`SchedulerCore`]: registration, its backoff, the
//! master's epoch, dispatch of what arrives to the framework's [`Scheduler`], acknowledgement
//! and deduplication of status updates, reconciliation, and the scheduler's timers.
//!
//! It does no I/O and reads no clock: `now` (milliseconds on any monotonic clock, as in the agent's
//! `AgentCore`) is a parameter. The run loop, or a simulation, feeds it inputs and carries out its
//! outputs:
//!
//! - inputs: [`SchedulerCore::handle_connected`] (a ConnAck), [`SchedulerCore::handle_subscribed`]
//!   (the SubAck) or [`SchedulerCore::handle_subscribe_failed`],
//!   [`SchedulerCore::handle_publish`] (events, framework messages, the master's hello),
//!   [`SchedulerCore::handle_timeout`] (registration retries, the scheduler's timers, periodic
//!   reconciliation), [`SchedulerCore::handle_disconnected`] and
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
//! - A new master epoch in the master's hello, or a reconnect, makes it register again. The
//!   registration names the connection it travels on (`Register.connection`, from
//!   `handle_connected`), the value the connection's last will carries.
//! - **Fencing**: every event carries its master's epoch. The core keeps the highest epoch seen
//!   (hellos and events) and drops every event of a lower one, a deposed master's: not passed
//!   on, not acknowledged, counted in [`DriverStats::stale_master`] and logged (rate-limited). An
//!   event of a newer epoch than the registration's makes it re-register, as a hello would, and is
//!   acted on.
//! - **Teardown** goes out last, and only once the current master acknowledged the registration
//!   (it waits while a registration is outstanding, e.g. after a new master's hello), so it
//!   cannot overtake the registration and leave a framework behind.
//! - A payload that does not decode is counted in [`DriverStats`], logged and dropped.
//! - **Acknowledgement**: an update from an agent (with an `update_id`) is acknowledged with
//!   [`Call::Acknowledge`] after [`Scheduler::status_update`] returns, so an update the
//!   scheduler never handled is resent by its agent. A full outbox drops the ack, counted in
//!   [`DriverStats::acks_dropped`]: the agent resends, and the redelivery is acked.
//! - **Idempotence**: a redelivered update (not newer, in serial-number arithmetic, than the last
//!   one seen for the task from the same agent) is acknowledged again but not passed on. An update
//!   of the master's own (no `update_id`) that repeats the state already known is not passed on
//!   either; one that differs is (the agent's word may still correct a master's answer, e.g. a
//!   LOST from a master that did not know the task yet). Ended tasks are remembered up to
//!   [`ENDED_TASKS_CAPACITY`] (4,096), the oldest forgotten first (counted).
//! - **Reconciliation**: the core tracks the tasks the scheduler launched (and any task an update
//!   names) with their last known state. An error naming an accept's offer does not end its tasks:
//!   a second copy of an accept that did launch them is refused too, so they are reconciled like
//!   any task not heard of, and the master's answer settles it. On every `Registered`, even with
//!   the same id and epoch (a broker restart), it sends
//!   an explicit `Reconcile` of its tasks not ended, in chunks of
//!   [`MAX_TASKS_PER_CALL`]; the `registered` callback still runs only when the id or epoch
//!   changed. While registered, a task without news for [`RECONCILE_STAGING_MS`] (10 s: launched
//!   and not heard of, or staging) or [`RECONCILE_IDLE_MS`] (120 s: any other state not ended) is
//!   reconciled again, and so on while the master does not answer.
//! - **Timers**: [`SchedulerDriver::set_timer`] schedules [`Scheduler::timer`]; due timers fire
//!   in `handle_timeout`, earliest first, and `poll_timeout` includes the earliest. At most
//!   [`MAX_TIMERS`](super::MAX_TIMERS) are pending; none fires once stopping.

use std::collections::{BTreeMap, VecDeque};

use agent_nostd_core::auth::{MessageKey, TAG_LEN};
use agent_nostd_core::frame::{Direction, Frame, ReplayWindow, WILL_SEQ};
use agent_nostd_core::ids::validate_id;
use agent_nostd_core::topic::{QoS, MASTER_HELLO};
use agent_nostd_core::wire::{MasterEnvelope, MasterMsg, TaskState, WireMessage};
use bramble_proto::frame::{binding, session_of, NO_SESSION};
use tracing::{debug, info, trace, warn};

use super::{Outgoing, Scheduler, SchedulerDriver, OUTBOX_CAPACITY};
use crate::error::SdkError;
use crate::messages::{exec_topic, message_topic, FrameworkMessage};
use crate::protocol::{
    call_topic, event_topic, register_topic, Acknowledge, Call, DecodeError, ErrorCode, Event,
    EventEnvelope, ReRegister, Register, StatusUpdate, MAX_TASKS_PER_CALL,
};

/// The first registration retry comes this long (ms) after the first attempt.
const REGISTER_BACKOFF_START_MS: u64 = 2_000;
/// Registration retries are never further apart than this (ms).
const REGISTER_BACKOFF_MAX_MS: u64 = 30_000;

/// A task launched but not heard of, or still staging, is reconciled after this long (ms)
/// without news, and again every as long while the master does not answer.
pub const RECONCILE_STAGING_MS: u64 = 10_000;
/// A task in any other non-terminal state is reconciled after this long (ms) without news.
pub const RECONCILE_IDLE_MS: u64 = 120_000;
/// How many ended tasks the core remembers, so a late redelivery of a terminal update (or a
/// reconciliation answer repeating it) is not passed on again. The oldest is forgotten first.
pub const ENDED_TASKS_CAPACITY: usize = 4096;

/// Counters of what the driver handled and dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverStats {
    /// Payloads that did not decode.
    pub malformed: u64,
    /// Publishes on a topic the driver does not read.
    pub misrouted: u64,
    /// Events handled.
    pub events: u64,
    /// Framework messages handled.
    pub messages: u64,
    /// Acknowledgements queued.
    pub acks: u64,
    /// Acknowledgements not queued because the outbox was full (the agent resends the update,
    /// and its redelivery is acknowledged).
    pub acks_dropped: u64,
    /// Redelivered updates (not newer than the last one from the task's agent): acknowledged
    /// again, not passed to the scheduler.
    pub duplicates: u64,
    /// Updates from the master (no update id) that repeat the state already known: not passed to
    /// the scheduler.
    pub repeats: u64,
    /// `Reconcile` calls queued.
    pub reconciles: u64,
    /// `Reconcile` calls not queued because the outbox was full (tried again a period later).
    pub reconciles_dropped: u64,
    /// Ended tasks forgotten to keep at most [`ENDED_TASKS_CAPACITY`].
    pub ended_forgotten: u64,
    /// Events from a master older than the newest one seen (a deposed master that still thinks
    /// it leads), ignored: not passed on, not acknowledged.
    pub stale_master: u64,
    /// Events dropped unread: not frames, sealed with another key or outside our session, or
    /// with a number taken before.
    pub unauthenticated: u64,
    /// Hints from a master that has no session with us.
    pub hints: u64,
}

/// What the core knows of one task.
#[derive(Debug, Clone)]
struct Tracked {
    /// The last state heard, or `None` while launched and not heard of.
    state: Option<TaskState>,
    /// The agent and id of the newest agent update seen.
    last_update: Option<(String, u32)>,
    /// When news of it last came (or it was launched).
    heard_at: u64,
    /// When it was last reconciled.
    asked_at: Option<u64>,
}

impl Tracked {
    fn is_terminal(&self) -> bool {
        self.state.is_some_and(TaskState::is_terminal)
    }

    /// When it is due for reconciliation.
    fn reconcile_due(&self) -> u64 {
        let quiet = match self.state {
            None | Some(TaskState::Staging) => RECONCILE_STAGING_MS,
            Some(_) => RECONCILE_IDLE_MS,
        };
        self.heard_at.max(self.asked_at.unwrap_or(0)) + quiet
    }
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
    /// An event that is not a frame.
    #[error("the event is not an authenticated frame")]
    Unauthenticated,
    /// An event whose tag does not verify in our session.
    #[error("the event's tag does not verify (forged, or of another session)")]
    BadTag,
    /// An event whose number was taken before.
    #[error("the event's number was taken before (replayed)")]
    Replayed,
    /// A master's hint that it has no session with us (we register).
    #[error("the master has no session with us")]
    Hint,
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
    /// Names the current MQTT connection (in `Register.connection` and its will).
    connection: u64,
    /// The tasks launched or heard of, and the ended ones not forgotten yet.
    tasks: BTreeMap<String, Tracked>,
    /// The ended tasks in `tasks`, oldest first, at most [`ENDED_TASKS_CAPACITY`].
    ended: VecDeque<String>,
    /// No task is due for reconciliation before this (a lower bound).
    reconcile_check_at: Option<u64>,
    /// The highest master epoch seen in an authenticated event: an event of a lower one is a
    /// deposed master's and is ignored (a hello, which anyone can make, never moves it).
    newest_epoch: u64,
    /// The principal the framework speaks as, and its message key.
    principal: String,
    key: MessageKey,
    /// The wall clock, in seconds since the Unix epoch, when `now` was 0: registrations carry
    /// their time.
    wall_base_secs: u64,
    /// The session the master opened for the latest registration it answered, and the event
    /// numbers taken in it.
    session: Option<(u32, ReplayWindow)>,
    /// The session before the latest: events the master sealed in it before it took our new
    /// registration are still taken (each once).
    previous_session: Option<(u32, ReplayWindow)>,
    /// The tag of the latest registration sent: its session is found from it and an event's
    /// epoch.
    registration_tag: Option<[u8; TAG_LEN]>,
    /// The number of the next call in the session.
    call_seq: u32,
    /// Registrations made, so no two carry the same nonce.
    registrations: u64,
    /// When a master's hint (it has no session with us) last made us register.
    hinted_at: Option<u64>,
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
            connection: 0,
            tasks: BTreeMap::new(),
            ended: VecDeque::new(),
            reconcile_check_at: None,
            newest_epoch: 0,
            principal: format!("framework-{client}"),
            key: MessageKey::anonymous(),
            wall_base_secs: 0,
            session: None,
            previous_session: None,
            registration_tag: None,
            call_seq: 1,
            registrations: 0,
            hinted_at: None,
        })
    }

    /// Speaks as `principal` (`framework-{client}`, or an operator for `bramble run`), sealing
    /// every call with `key` (its [message key](agent_nostd_core::auth::Secret::message_key)).
    /// Without it the core uses `framework-{client}` and the anonymous key, which only a master
    /// run without credentials takes.
    pub fn with_principal(mut self, principal: &str, key: MessageKey) -> Self {
        self.principal = principal.to_owned();
        self.key = key;
        self
    }

    /// The wall clock in seconds since the Unix epoch when `now` was 0 (registrations carry
    /// their time; the master takes one within five minutes of its own clock).
    pub fn with_wall_clock(mut self, base_secs: u64) -> Self {
        self.wall_base_secs = base_secs;
        self
    }

    /// The MQTT last will of connection `connection`: `Call::Gone` naming it, sealed outside any
    /// session.
    pub fn last_will(&self, connection: u64) -> Vec<u8> {
        bramble_proto::frame::seal(
            Call::Gone { connection }.encode(),
            &self.key,
            Direction::FrameworkUp,
            &self.driver.client,
            NO_SESSION,
            WILL_SEQ,
        )
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

    /// Hands `login` to the executors of the tasks launched from now on (see
    /// [`SchedulerDriver::set_executor_login`]).
    pub fn set_executor_login(&mut self, login: Option<bramble_mqtt::Login>) {
        self.driver.set_executor_login(login);
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

    /// The connection to the broker named `connection` is up (after every ConnAck):
    /// [`poll_subscribe`] says what to subscribe to. A reconnect may have cost the master our
    /// session (its last will fired), so the framework registers again, with
    /// `Register.connection` = `connection`: the value the last will of this connection carries
    /// in [`Call::Gone`] (0: not named, the will always applies).
    ///
    /// [`poll_subscribe`]: Self::poll_subscribe
    pub fn handle_connected(&mut self, _now: u64, connection: u64) {
        self.subscribe_due = true;
        self.registered = false;
        self.connection = connection;
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
        self.driver.now = now;
        let result = if topic == self.event_topic {
            self.open_event(now, payload).map(|(epoch, event)| {
                self.stats.events += 1;
                self.on_fenced_event(now, epoch, event);
            })
        } else if topic == self.message_topic {
            FrameworkMessage::decode(payload)
                .map(|m| {
                    self.stats.messages += 1;
                    self.scheduler
                        .framework_message(&mut self.driver, &m.task_id, m.data);
                })
                .map_err(PublishError::BadMessage)
        } else if topic == MASTER_HELLO {
            match MasterEnvelope::decode(payload) {
                Ok(MasterEnvelope {
                    epoch,
                    msg: MasterMsg::Hello,
                }) => {
                    self.on_hello(now, epoch);
                    Ok(())
                }
                Ok(_) | Err(_) => Err(PublishError::BadHello),
            }
        } else {
            Err(PublishError::UnknownTopic)
        };
        self.take_launches(now);
        if let Err(e) = &result {
            let n = match e {
                PublishError::Hint => return result,
                PublishError::UnknownTopic => {
                    self.stats.misrouted += 1;
                    self.stats.misrouted
                }
                PublishError::Unauthenticated | PublishError::BadTag | PublishError::Replayed => {
                    self.stats.unauthenticated += 1;
                    self.stats.unauthenticated
                }
                _ => {
                    self.stats.malformed += 1;
                    self.stats.malformed
                }
            };
            // Rate-limited: a flood is logged at 1, 2, 4, 8, … of its kind.
            if n.is_power_of_two() {
                warn!(
                    topic,
                    len = payload.len(),
                    malformed = self.stats.malformed,
                    misrouted = self.stats.misrouted,
                    unauthenticated = self.stats.unauthenticated,
                    "dropped a publish: {e}"
                );
            }
        }
        result
    }

    /// Time passed: resends the registration when its retry is due, fires the scheduler's due
    /// timers (earliest first) and reconciles the tasks due for it.
    pub fn handle_timeout(&mut self, now: u64) {
        self.driver.now = now;
        match self.register_at {
            Some(at) if now >= at => {
                self.register_at = None;
                if !self.registered {
                    self.send_registration(now);
                }
            }
            _ => {}
        }
        self.fire_timers(now);
        self.take_launches(now);
        if self.reconcile_check_at.is_some_and(|at| now >= at) {
            self.reconcile_due(now);
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
        if self.teardown_held() {
            return None;
        }
        let item = self.driver.outbox.pop_front()?;
        let client = self.driver.client.clone();
        let (topic, payload) = match &item {
            Outgoing::Call(c @ (Call::Register(_) | Call::ReRegister(_))) => {
                (register_topic(&client), self.seal_registration(c))
            }
            Outgoing::Call(c) => {
                let session = self.session.map_or(NO_SESSION, |(s, _)| s);
                let seq = self.call_seq;
                self.call_seq = self.call_seq.saturating_add(1);
                let payload = bramble_proto::frame::seal(
                    c.encode(),
                    &self.key,
                    Direction::FrameworkUp,
                    &client,
                    session,
                    seq,
                );
                (call_topic(&client), payload)
            }
            Outgoing::Message(m) => (exec_topic(&client, &m.task_id), m.encode()),
        };
        Some(Transmit {
            topic,
            payload,
            qos: QoS::AtLeastOnce,
            retain: false,
            item,
        })
    }

    /// A registration as a frame outside any session (the same bytes every time it is sealed).
    fn seal_registration(&self, call: &Call) -> Vec<u8> {
        bramble_proto::frame::seal(
            call.encode(),
            &self.key,
            Direction::FrameworkUp,
            &self.driver.client,
            NO_SESSION,
            0,
        )
    }

    /// The teardown waits while a registration is outstanding: sent before the master has the
    /// registration (it travels on another topic and may arrive later, after a new master
    /// took over), it would find no framework, and the registration would then bring the
    /// framework back with nobody left behind it.
    fn teardown_held(&self) -> bool {
        !self.registered
            && self.register_at.is_some()
            && matches!(
                self.driver.outbox.front(),
                Some(Outgoing::Call(Call::Teardown))
            )
    }

    /// Puts back a transmit the transport could not take: it comes out first again, unless a
    /// newer registration replaces it. Its payload may have been taken; it is encoded again.
    pub fn requeue_transmit(&mut self, transmit: Transmit) {
        self.driver.outbox.push_front(transmit.item);
    }

    /// When the driver should call [`handle_timeout`](Self::handle_timeout) next, or `None`
    /// when nothing is scheduled.
    pub fn poll_timeout(&self) -> Option<u64> {
        let timer = self
            .driver
            .timers
            .keys()
            .next()
            .map(|&(at, _)| at)
            .filter(|_| !self.driver.stopping);
        let reconcile = self
            .reconcile_check_at
            .filter(|_| self.registered && !self.driver.stopping);
        [self.register_at, timer, reconcile]
            .into_iter()
            .flatten()
            .min()
    }

    /// The last state the core knows of `task_id` (`None` when unknown, or launched and not
    /// heard of yet).
    pub fn task_state(&self, task_id: &str) -> Option<TaskState> {
        self.tasks.get(task_id).and_then(|t| t.state)
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
        let mut call = call;
        if let Call::Register(r) | Call::ReRegister(ReRegister { info: r, .. }) = &mut call {
            r.connection = self.connection;
            // Its own time and nonce (a retry is a new registration, with a session of its own).
            self.registrations += 1;
            r.principal = self.principal.clone();
            r.time = self.wall_base_secs + now / 1_000;
            r.nonce = self.connection.rotate_left(17) ^ self.registrations;
        }
        // The session the master opens for it is found from its tag.
        let sealed = self.seal_registration(&call);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&sealed[sealed.len() - TAG_LEN..]);
        self.registration_tag = Some(tag);
        debug!(reregister = self.sent_reregister, "registering");
        // One registration waiting is enough: retries replace it rather than pile up.
        self.driver
            .outbox
            .retain(|o| !matches!(o, Outgoing::Call(Call::Register(_) | Call::ReRegister(_))));
        self.driver.outbox.push_front(Outgoing::Call(call));
        self.register_at = Some(now + self.register_backoff_ms);
        self.register_backoff_ms = (self.register_backoff_ms * 2).min(REGISTER_BACKOFF_MAX_MS);
    }

    /// A master announced itself (unauthenticated). Only a newer epoch than the registration's
    /// is a new leader, and the framework registers with it; the fence moves only on that
    /// master's own authenticated answer.
    fn on_hello(&mut self, now: u64, epoch: u64) {
        self.reregister_if_newer(now, epoch);
    }

    /// Takes an event payload apart: a frame sealed in the framework's session (or, the answer
    /// to the latest registration, in the session that registration opened with the event's
    /// master), with a number not taken before. An unframed `NotRegistered` error is a master's
    /// hint that it has no session with us: it makes the framework register, at most once a
    /// second; anything else unframed, forged or replayed is dropped.
    fn open_event(&mut self, now: u64, payload: &[u8]) -> Result<(u64, Event), PublishError> {
        let framed = Frame::split(payload, Direction::FrameworkDown)
            .ok()
            .and_then(|f| Some((f, EventEnvelope::decode(f.message).ok()?)));
        let Some((frame, EventEnvelope { epoch, event })) = framed else {
            return match EventEnvelope::decode(payload) {
                Ok(EventEnvelope {
                    event:
                        Event::Error {
                            code: ErrorCode::NotRegistered,
                            ..
                        },
                    ..
                }) => {
                    self.stats.hints += 1;
                    if self.hinted_at.is_none_or(|t| now >= t + 1_000) {
                        self.hinted_at = Some(now);
                        info!("the master has no session with us: registering");
                        self.registered = false;
                        self.register_backoff_ms = REGISTER_BACKOFF_START_MS;
                        self.send_registration(now);
                    }
                    Err(PublishError::Hint)
                }
                Ok(EventEnvelope {
                    event:
                        Event::Error {
                            code: ErrorCode::RegistrationRefused,
                            message,
                            ..
                        },
                    ..
                }) => {
                    // Not authenticated (the master could not seal for us): said, not obeyed.
                    self.stats.hints += 1;
                    warn!("the master could not authenticate our registration: {message}");
                    Err(PublishError::Hint)
                }
                Ok(_) => Err(PublishError::Unauthenticated),
                Err(e) => Err(PublishError::BadEvent(e)),
            };
        };
        let client = self.driver.client.clone();
        let verifies = |session| {
            frame.verifies(
                &self.key,
                &binding(Direction::FrameworkDown, &client, session),
                frame.counter,
            )
        };
        if let Some((s, mut w)) = self.previous_session.filter(|&(s, _)| verifies(s)) {
            if w.check(frame.counter).is_err() {
                return Err(PublishError::Replayed);
            }
            w.take(frame.counter);
            self.previous_session = Some((s, w));
            return Ok((epoch, event));
        }
        let (session, mut window) = match self.session {
            Some((s, w)) if verifies(s) => (s, w),
            _ => match self.registration_tag.map(|t| session_of(&t, epoch)) {
                // An older master's answer (a deposed leader hears our registration too): its
                // session is not taken; the fence drops the event.
                Some(s) if verifies(s) && epoch < self.newest_epoch => {
                    return Ok((epoch, event));
                }
                Some(s) if verifies(s) => (s, ReplayWindow::new()),
                _ => return Err(PublishError::BadTag),
            },
        };
        if window.check(frame.counter).is_err() {
            return Err(PublishError::Replayed);
        }
        window.take(frame.counter);
        if self.session.map(|(s, _)| s) != Some(session) {
            // The session of our latest registration: calls go in it from now on.
            self.call_seq = 1;
            self.previous_session = self.session;
        }
        self.session = Some((session, window));
        Ok((epoch, event))
    }

    /// Re-registers when `epoch` is a newer master than the one registered with.
    fn reregister_if_newer(&mut self, now: u64, epoch: u64) {
        if self.registered && self.driver.master_epoch.is_some_and(|known| epoch > known) {
            info!(epoch, "a new master is up: re-registering");
            self.registered = false;
            self.register_backoff_ms = REGISTER_BACKOFF_START_MS;
            self.send_registration(now);
        }
    }

    /// The fence: an event of an older master epoch than the newest seen is a deposed master's
    /// and is dropped (counted, logged), never acted on nor acknowledged. An event of a newer
    /// epoch than the registration's announces a new leader, as its hello would: the framework
    /// re-registers, and acts on the event (the leader sends events only to a framework it
    /// counts as registered, and answers a call it cannot act on).
    fn on_fenced_event(&mut self, now: u64, epoch: u64, event: Event) {
        if epoch < self.newest_epoch {
            self.stats.stale_master += 1;
            let n = self.stats.stale_master;
            // Rate-limited: a zombie may send a lot; warn at 1, 2, 4, 8, … ignored events.
            if n.is_power_of_two() {
                warn!(
                    epoch,
                    newest = self.newest_epoch,
                    ignored = n,
                    "ignored an event from an older master (deposed, still sending)"
                );
            } else {
                debug!(
                    epoch,
                    newest = self.newest_epoch,
                    ignored = n,
                    "ignored an older master's event"
                );
            }
            return;
        }
        self.newest_epoch = epoch;
        if !matches!(event, Event::Registered { .. }) {
            self.reregister_if_newer(now, epoch);
        }
        self.on_event(now, event);
    }

    fn on_event(&mut self, now: u64, event: Event) {
        let d = &mut self.driver;
        match event {
            Event::Registered {
                framework_id: _,
                master_epoch,
            } if d.master_epoch.is_some_and(|known| master_epoch < known) => {
                // A deposed master answered a registration the leader answers too.
                self.stats.stale_master += 1;
                debug!(master_epoch, "ignored a registration by an older master");
            }
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
                } else {
                    info!(%framework_id, master_epoch, "registered");
                    d.set_registered(&framework_id, master_epoch);
                    self.scheduler.registered(d, &framework_id, master_epoch);
                }
                // Updates may have been missed while unregistered: ask for every task, every time.
                self.take_launches(now);
                self.reconcile_all(now);
            }
            Event::Offers(offers) => self.scheduler.offers(d, offers),
            Event::Rescind { offer_id } => self.scheduler.offer_rescinded(d, offer_id),
            Event::Update(update) => self.on_update(now, update),
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

    // ----- delivery: acknowledgements, duplicates, reconciliation -----

    /// Passes `update` to the scheduler unless it is a redelivery or a repeat, then acknowledges
    /// it when it asks for that.
    fn on_update(&mut self, now: u64, update: StatusUpdate) {
        let ack = update.acknowledgement();
        if self.note_update(now, &update) {
            self.scheduler.status_update(&mut self.driver, update);
        }
        if let Some(ack) = ack {
            self.queue_ack(ack);
        }
    }

    /// Records `update`; returns whether it is news for the scheduler.
    fn note_update(&mut self, now: u64, update: &StatusUpdate) -> bool {
        let task_id = update.task_id.as_str();
        let known = self.tasks.get(task_id);
        match (update.update_id, &update.agent_id) {
            (Some(id), Some(agent)) => {
                let redelivered =
                    known
                        .and_then(|t| t.last_update.as_ref())
                        .is_some_and(|(a, last)| {
                            a == agent && !agent_nostd_core::wire::is_newer_update(id, *last)
                        });
                if redelivered {
                    self.stats.duplicates += 1;
                    debug!(
                        task = task_id,
                        update_id = id,
                        duplicates = self.stats.duplicates,
                        "a redelivered update: acknowledged again, not passed on"
                    );
                    return false;
                }
            }
            _ => {
                // Only an exact repeat: a master's answer may differ from what an agent said
                // (a restarted master may not know the task yet), and the agent's word wins.
                let repeat = known.is_some_and(|t| t.state == Some(update.state));
                if repeat {
                    self.stats.repeats += 1;
                    debug!(
                        task = task_id,
                        state = update.state.as_str(),
                        repeats = self.stats.repeats,
                        "the master repeats a known state: not passed on"
                    );
                    return false;
                }
            }
        }
        let t = self.tasks.entry(task_id.to_owned()).or_insert(Tracked {
            state: None,
            last_update: None,
            heard_at: now,
            asked_at: None,
        });
        let was_terminal = t.is_terminal();
        t.state = Some(update.state);
        t.heard_at = now;
        if let (Some(id), Some(agent)) = (update.update_id, &update.agent_id) {
            t.last_update = Some((agent.clone(), id));
        }
        if t.is_terminal() && !was_terminal {
            self.ended.push_back(task_id.to_owned());
            while self.ended.len() > ENDED_TASKS_CAPACITY {
                let Some(old) = self.ended.pop_front() else {
                    break;
                };
                if self.tasks.get(&old).is_some_and(Tracked::is_terminal) {
                    self.tasks.remove(&old);
                    self.stats.ended_forgotten += 1;
                }
            }
        }
        true
    }

    /// Queues `ack`, even while stopping (ahead of the teardown). A full outbox drops it,
    /// counted: the agent resends the update, and the redelivery is acknowledged.
    fn queue_ack(&mut self, ack: Acknowledge) {
        let outbox = &mut self.driver.outbox;
        if outbox.len() >= OUTBOX_CAPACITY {
            self.stats.acks_dropped += 1;
            warn!(
                task = %ack.task_id,
                update_id = ack.update_id,
                dropped = self.stats.acks_dropped,
                "the outbox is full: acknowledgement dropped (the agent will resend the update)"
            );
            return;
        }
        let at = match outbox.back() {
            Some(Outgoing::Call(Call::Teardown)) => outbox.len() - 1,
            _ => outbox.len(),
        };
        outbox.insert(at, Outgoing::Call(Call::Acknowledge(ack)));
        self.stats.acks += 1;
    }

    /// Starts tracking the tasks the last callbacks launched.
    fn take_launches(&mut self, now: u64) {
        let launched = std::mem::take(&mut self.driver.launched);
        if launched.is_empty() {
            return;
        }
        for task_id in launched {
            self.tasks.insert(
                task_id,
                Tracked {
                    state: None,
                    last_update: None,
                    heard_at: now,
                    asked_at: None,
                },
            );
        }
        let due = now + RECONCILE_STAGING_MS;
        self.reconcile_check_at = Some(self.reconcile_check_at.map_or(due, |at| at.min(due)));
    }

    /// Reconciles every task not seen ending (after each `Registered`).
    fn reconcile_all(&mut self, now: u64) {
        let ids: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, t)| !t.is_terminal())
            .map(|(id, _)| id.clone())
            .collect();
        self.send_reconcile(now, ids);
        self.next_reconcile_check();
    }

    /// Reconciles the tasks without news for long enough.
    fn reconcile_due(&mut self, now: u64) {
        if self.registered && !self.driver.stopping {
            let ids: Vec<String> = self
                .tasks
                .iter()
                .filter(|(_, t)| !t.is_terminal() && t.reconcile_due() <= now)
                .map(|(id, _)| id.clone())
                .collect();
            self.send_reconcile(now, ids);
            self.next_reconcile_check();
        } else {
            // The next `Registered` reconciles everything.
            self.reconcile_check_at = None;
        }
    }

    fn next_reconcile_check(&mut self) {
        self.reconcile_check_at = self
            .tasks
            .values()
            .filter(|t| !t.is_terminal())
            .map(Tracked::reconcile_due)
            .min();
    }

    /// Queues explicit `Reconcile`s of `ids` (never an empty one: that would ask for every
    /// task), chunked to what the master takes.
    fn send_reconcile(&mut self, now: u64, ids: Vec<String>) {
        if ids.is_empty() || self.driver.stopping {
            return;
        }
        debug!(tasks = ids.len(), "reconciling");
        for chunk in ids.chunks(MAX_TASKS_PER_CALL) {
            // Asked, even if the outbox cannot take it: the next try comes a period later rather
            // than at once (a deadline in the past would make the driver spin).
            for id in chunk {
                if let Some(t) = self.tasks.get_mut(id) {
                    t.asked_at = Some(now);
                }
            }
            if self.driver.outbox.len() >= OUTBOX_CAPACITY {
                self.stats.reconciles_dropped += 1;
                warn!(
                    dropped = self.stats.reconciles_dropped,
                    "the outbox is full: reconciliation put off"
                );
                continue;
            }
            self.driver
                .outbox
                .push_back(Outgoing::Call(Call::Reconcile {
                    task_ids: chunk.to_vec(),
                }));
            self.stats.reconciles += 1;
        }
    }

    /// Fires the timers due at `now`, earliest first; timers set by these callbacks wait for the
    /// next `handle_timeout`, even if already due.
    fn fire_timers(&mut self, now: u64) {
        let last = self.driver.timer_seq;
        while !self.driver.stopping {
            let Some(entry) = self.driver.timers.first_entry() else {
                break;
            };
            let &(at, seq) = entry.key();
            if at > now || seq > last {
                break;
            }
            let token = entry.remove();
            trace!(token, at, "timer");
            self.scheduler.timer(&mut self.driver, token);
        }
    }
}

#[cfg(test)]
mod tests;
