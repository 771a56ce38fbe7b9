//! The scheduler driver: a framework's [`Scheduler`] gets the master's events as callbacks and
//! answers through a [`SchedulerDriver`]; [`run`] connects both to the broker.
//!
//! The protocol logic does no networking and reads no clock (in the spirit of quinn-proto).
//! [`SchedulerCore`] holds the registration, its backoff and the master's epoch, decodes what
//! arrives and dispatches it to the [`Scheduler`]; time comes in as a parameter. Every call a
//! callback makes is checked and queued in the driver's bounded outbox, which the core hands out
//! through [`SchedulerCore::poll_transmit`] after the callback returns. [`run`] is a thin tokio
//! loop around the core; a simulation drives the same core on simulated time. Tests of a scheduler
//! alone build a [`SchedulerDriver::new`], feed the scheduler its callbacks, and inspect
//! [`SchedulerDriver::take_outgoing`].
//!
//! MQTT: client id `bramble-fw-{client}`, persistent session, last will
//! [`Call::Gone`](crate::protocol::Call::Gone) on the will topic. On every ConnAck it subscribes to
//! its event topic, its framework-message topic and the master's hello, and once the subscription
//! is acknowledged it sends [`Call::Register`](crate::protocol::Call::Register) (or
//! [`Call::ReRegister`](crate::protocol::Call::ReRegister) with the id it holds), repeating with
//! backoff until `Registered` comes. A new master epoch in the retained hello also triggers a
//! `ReRegister`. Reconnection backs off from 500 ms to 30 s (rumqttc itself would retry at once). A
//! payload that does not decode is logged, counted in [`DriverStats`] and dropped. Each connection
//! is named by a nonce: its last will is `Gone { connection }` and the registration sent on it
//! carries the same `connection`, so the master ignores a late will of an older connection.
//!
//! # Delivery guarantees
//!
//! - Status updates are at least once. An update from an agent is acknowledged
//!   (`Call::Acknowledge`) only after [`Scheduler::status_update`] returned; until then its agent
//!   resends it. A redelivery is acknowledged again but not passed on (by update id, per task and
//!   agent; the last 4,096 ended tasks are remembered for this), nor is an answer of the master's
//!   that repeats the state the SDK already passed on.
//!   [`Scheduler::status_update`] should still be idempotent: after a scheduler restart, or for
//!   a task forgotten, an update may come again.
//! - The SDK reconciles the tasks it launched and has not seen end: after every registration
//!   (including a confirmation after a broker restart) and, while registered, each task without
//!   news for 10 s (not heard of yet, or staging) or 120 s (otherwise). Answers come as updates.
//! - Framework messages are at least once between live parties but are not acknowledged: one
//!   sent by an executor that then exits can be lost (e.g. in a broker restart). A framework that
//!   needs a result should time it out with [`SchedulerDriver::set_timer`] and
//!   [`Scheduler::timer`], as [`crate::batch`] does.
//!
//! # Layout
//!
//! - `mod.rs`: the [`Scheduler`] trait.
//! - `core.rs`: [`SchedulerCore`], the sans-IO state machine (registration, epochs, dispatch,
//!   acknowledgements, deduplication, reconciliation, timers);
//!   `core/tests.rs` drives it on simulated time.
//! - `driver.rs`: [`SchedulerDriver`], the outbox callbacks answer through, and their timers.
//! - `runner.rs`: [`run`] and [`run_until`], the thin MQTT loop on tokio.

mod core;
mod driver;
mod runner;

pub use self::core::{
    DriverStats, PublishError, SchedulerCore, Transmit, ENDED_TASKS_CAPACITY, RECONCILE_IDLE_MS,
    RECONCILE_STAGING_MS,
};
pub use driver::{Outgoing, SchedulerDriver, FRAMEWORK_CLIENT_ENV, MAX_TIMERS, OUTBOX_CAPACITY};
pub use runner::{run, run_once_until, run_until, SchedulerConfig};

use crate::protocol::{ErrorCode, Offer, OfferId, StatusUpdate};

/// A framework's scheduler. Every callback gets the driver to answer through; calls are sent
/// after the callback returns.
pub trait Scheduler {
    /// The master accepted the registration (again, after a failover or master restart, when the
    /// id or epoch changed). The SDK reconciles the tasks it launched after every registration,
    /// whether or not this is called.
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

    /// A timer set with [`SchedulerDriver::set_timer`] is due.
    fn timer(&mut self, driver: &mut SchedulerDriver, token: u64) {
        let _ = (driver, token);
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
