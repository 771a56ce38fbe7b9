//! Real frameworks in the simulation: a framework's own [`Scheduler`] driven by the SDK's real
//! [`SchedulerCore`], the way its tokio runner drives it over MQTT.
//!
//! [`Sim::add_scheduler`] connects a core to the in-memory broker: ConnAck, the subscriptions it
//! asks for, their SubAck, then the master's retained hello. What the core transmits is routed by
//! its real topic and encoding: registrations and calls to the master, framework messages to the
//! executor behind `exec/{client}/{task}`. Events on `event/{client}`, executors' messages on
//! `message/{client}` and every hello come back through [`SchedulerCore::handle_publish`]; its
//! `poll_timeout` is part of the simulation's next wake-up. Once the core
//! [`is_done`](SchedulerCore::is_done), the simulated runner disconnects cleanly (no last will),
//! as `bramble_sdk::scheduler::run` does.
//!
//! Each (re)connection is named by a counter ([`SimScheduler::connection`]), as the real runner
//! names it by a nonce: the core registers with it, and the last will carries it.

use std::any::Any;
use std::marker::PhantomData;

use bramble_proto::{self as proto, Event, EventEnvelope, FrameworkTopic, Register};
use bramble_sdk::scheduler::{Outgoing, PublishError, Scheduler, SchedulerCore, Transmit};

use super::{Dest, Sim};

/// The object-safe face of a [`SchedulerCore`] of any scheduler type.
trait Driven {
    fn handle_connected(&mut self, now: u64, connection: u64);
    fn poll_subscribe(&mut self) -> Option<[String; 3]>;
    fn handle_subscribed(&mut self, now: u64);
    fn handle_publish(&mut self, now: u64, topic: &str, payload: &[u8])
        -> Result<(), PublishError>;
    fn handle_timeout(&mut self, now: u64);
    fn handle_disconnected(&mut self, now: u64);
    fn poll_transmit(&mut self) -> Option<Transmit>;
    fn poll_timeout(&self) -> Option<u64>;
    fn is_done(&self) -> bool;
    fn framework_id(&self) -> Option<String>;
    fn stale_master(&self) -> u64;
    fn last_will(&self, connection: u64) -> Vec<u8>;
    fn as_any(&self) -> &dyn Any;
}

impl<S: Scheduler + 'static> Driven for SchedulerCore<S> {
    fn handle_connected(&mut self, now: u64, connection: u64) {
        SchedulerCore::handle_connected(self, now, connection);
    }
    fn poll_subscribe(&mut self) -> Option<[String; 3]> {
        SchedulerCore::poll_subscribe(self)
    }
    fn handle_subscribed(&mut self, now: u64) {
        SchedulerCore::handle_subscribed(self, now);
    }
    fn handle_publish(
        &mut self,
        now: u64,
        topic: &str,
        payload: &[u8],
    ) -> Result<(), PublishError> {
        SchedulerCore::handle_publish(self, now, topic, payload)
    }
    fn handle_timeout(&mut self, now: u64) {
        SchedulerCore::handle_timeout(self, now);
    }
    fn handle_disconnected(&mut self, now: u64) {
        SchedulerCore::handle_disconnected(self, now);
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        SchedulerCore::poll_transmit(self)
    }
    fn poll_timeout(&self) -> Option<u64> {
        SchedulerCore::poll_timeout(self)
    }
    fn is_done(&self) -> bool {
        SchedulerCore::is_done(self)
    }
    fn stale_master(&self) -> u64 {
        self.stats().stale_master
    }
    fn last_will(&self, connection: u64) -> Vec<u8> {
        SchedulerCore::last_will(self, connection)
    }
    fn framework_id(&self) -> Option<String> {
        self.driver().framework_id().map(str::to_owned)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Names one real scheduler added with [`Sim::add_scheduler`], and its type.
#[derive(Debug)]
pub struct SchedulerId<S> {
    /// Its index in [`Sim::schedulers`].
    pub index: usize,
    ty: PhantomData<fn() -> S>,
}

impl<S> Clone for SchedulerId<S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for SchedulerId<S> {}

/// One real framework scheduler and its simulated connection.
pub struct SimScheduler {
    /// Its client name (the topics are keyed by it).
    pub client: String,
    /// Whether it is connected to the broker.
    pub connected: bool,
    /// Whether it stopped and left (a clean disconnect once its core was done).
    pub left: bool,
    /// When it left.
    pub left_at: Option<u64>,
    /// Publishes its core refused (they do not decode, or came on a topic it does not read).
    pub refused: Vec<PublishError>,
    /// Every event it received and did not ignore as an older master's, with the time it arrived.
    pub events: Vec<(u64, Event)>,
    /// Every event it ignored as an older master's (a zombie's), with the time and that epoch.
    pub stale_events: Vec<(u64, u64, Event)>,
    /// Every call and framework message it sent, with the time it left.
    pub sent: Vec<(u64, Outgoing)>,
    /// Names its current connection (1, 2, … per connection), in its registration and its will.
    pub connection: u64,
    core: Box<dyn Driven>,
    /// What the broker keeps for its persistent session while it is disconnected.
    parked: Vec<(String, Vec<u8>)>,
}

impl Sim {
    /// Adds a real framework: `scheduler` behind a [`SchedulerCore`] keyed by `client`, which
    /// connects at once and registers with `registration`.
    pub fn add_scheduler<S: Scheduler + 'static>(
        &mut self,
        client: &str,
        registration: Register,
        scheduler: S,
    ) -> SchedulerId<S> {
        // Each framework has its own key, and only the masters know it.
        let key = super::framework_key(client);
        self.master_config
            .principal_keys
            .insert_framework(client, key.clone());
        self.share_keys();
        let core = SchedulerCore::new(client, registration, scheduler)
            .expect("the test's client name and registration are valid")
            .with_principal(&format!("framework-{client}"), key)
            .with_wall_clock(super::SIM_WALL_BASE_SECS);
        self.schedulers.push(SimScheduler {
            client: client.to_owned(),
            connected: false,
            left: false,
            left_at: None,
            refused: Vec::new(),
            events: Vec::new(),
            stale_events: Vec::new(),
            sent: Vec::new(),
            connection: 0,
            core: Box::new(core),
            parked: Vec::new(),
        });
        let k = self.schedulers.len() - 1;
        self.connect_scheduler(k);
        SchedulerId {
            index: k,
            ty: PhantomData,
        }
    }

    /// The core of the scheduler `id` names.
    pub fn scheduler_core<S: Scheduler + 'static>(&self, id: SchedulerId<S>) -> &SchedulerCore<S> {
        self.schedulers[id.index]
            .core
            .as_any()
            .downcast_ref()
            .expect("a SchedulerId names a core of its type")
    }

    /// The scheduler `id` names.
    pub fn scheduler<S: Scheduler + 'static>(&self, id: SchedulerId<S>) -> &S {
        self.scheduler_core(id).scheduler()
    }

    /// The framework id scheduler `k` holds, once a master registered it.
    pub fn scheduler_framework_id(&self, k: usize) -> Option<String> {
        self.schedulers[k].core.framework_id()
    }

    /// The scheduler's connection drops: the broker publishes its last will and keeps what is
    /// published for it (a persistent session).
    pub fn disconnect_scheduler(&mut self, k: usize) {
        let s = &mut self.schedulers[k];
        if !s.connected {
            return;
        }
        s.connected = false;
        s.core.handle_disconnected(self.now);
        let will = proto::will_topic(&s.client);
        let gone = s.core.last_will(s.connection);
        self.send(Dest::Master, &will, gone);
    }

    /// The broker died under the scheduler: its connection is gone without a last will, and so
    /// is what the broker kept for its session.
    pub(super) fn lose_scheduler_session(&mut self, k: usize) {
        let s = &mut self.schedulers[k];
        s.parked.clear();
        if s.connected {
            s.connected = false;
            s.core.handle_disconnected(self.now);
        }
    }

    /// The scheduler (re)connects: ConnAck, what the broker kept for its session, its
    /// subscriptions and their SubAck, then the retained hello.
    pub fn connect_scheduler(&mut self, k: usize) {
        if self.schedulers[k].connected || self.schedulers[k].left {
            return;
        }
        let now = self.now;
        for (topic, payload) in std::mem::take(&mut self.schedulers[k].parked) {
            self.send(Dest::Scheduler(k), &topic, payload);
        }
        let s = &mut self.schedulers[k];
        s.connected = true;
        s.connection += 1;
        s.core.handle_connected(now, s.connection);
        let mut subscribed = false;
        while s.core.poll_subscribe().is_some() {
            subscribed = true;
        }
        if subscribed {
            s.core.handle_subscribed(now);
        }
        if let Some(hello) = self.retained_hello.clone() {
            self.send(
                Dest::Scheduler(k),
                agent_nostd_core::topic::MASTER_HELLO,
                hello,
            );
        }
        self.drain_scheduler(k);
    }

    /// The scheduler index of the real framework behind `client`, if any.
    pub(super) fn scheduler_by_client(&self, client: &str) -> Option<usize> {
        self.schedulers.iter().position(|s| s.client == client)
    }

    pub(super) fn scheduler_timeouts(&self) -> impl Iterator<Item = u64> + '_ {
        self.schedulers
            .iter()
            .filter(|s| s.connected)
            .filter_map(|s| s.core.poll_timeout())
    }

    pub(super) fn scheduler_due(&mut self) {
        let now = self.now;
        for k in 0..self.schedulers.len() {
            let s = &mut self.schedulers[k];
            if s.connected && s.core.poll_timeout().is_some_and(|t| t <= now) {
                s.core.handle_timeout(now);
                self.drain_scheduler(k);
            }
        }
    }

    /// A publish for scheduler `k` arrives.
    pub(super) fn deliver_to_scheduler(&mut self, k: usize, topic: String, payload: Vec<u8>) {
        let now = self.now;
        let s = &mut self.schedulers[k];
        if s.left {
            return;
        }
        if !s.connected {
            s.parked.push((topic, payload));
            return;
        }
        let stale_before = s.core.stale_master();
        if let Err(e) = s.core.handle_publish(now, &topic, &payload) {
            s.refused.push(e);
        }
        if proto::parse_topic(&topic).is_some_and(|(t, _)| t == FrameworkTopic::Event) {
            if let Some(EventEnvelope { epoch, event }) = super::peek_event(&payload) {
                if s.core.stale_master() > stale_before {
                    s.stale_events.push((now, epoch, event));
                } else {
                    s.events.push((now, event));
                }
            }
        }
        self.drain_scheduler(k);
    }

    /// Hands what the core transmits to the broker; leaves once the core is done.
    fn drain_scheduler(&mut self, k: usize) {
        if !self.schedulers[k].connected {
            return;
        }
        while let Some(t) = self.schedulers[k].core.poll_transmit() {
            let dest = match proto::parse_topic(&t.topic) {
                Some((
                    FrameworkTopic::Register | FrameworkTopic::Call | FrameworkTopic::Will,
                    _,
                )) => Dest::Master,
                // The executor's exec topic: the host finds the executor when it arrives.
                _ => Dest::Executor,
            };
            self.schedulers[k]
                .sent
                .push((self.now, t.outgoing().clone()));
            self.send(dest, &t.topic, t.payload);
        }
        let s = &mut self.schedulers[k];
        if s.core.is_done() {
            s.connected = false;
            s.left = true;
            s.left_at = Some(self.now);
        }
    }
}
