//! The simulation's engine: the next wake-up, due deliveries and timers, routing every transmit
//! through the in-memory broker with its seeded faults.

use std::cmp::Reverse;

use agent_nostd_core::topic::{self, AgentTopic, Topic};
use agent_nostd_core::wire::{MasterEnvelope, MasterMsg};
use agent_nostd_core::WireMessage;
use bramble_proto::{self as proto, Call, Event, EventEnvelope, FrameworkTopic, ReRegister};

use bramble_master_core::{MasterCore, RecvError, Transmit};

use super::{Delivery, Dest, Sim};

impl Sim {
    /// True while a framework's call (registration, call, last will) or an event for one is on
    /// its way through the broker. Framework messages between schedulers and executors do not
    /// count: they do not involve the master.
    pub fn framework_traffic_in_flight(&self) -> bool {
        self.net.iter().any(|Reverse(d)| {
            matches!(
                proto::parse_topic(&d.topic),
                Some((
                    FrameworkTopic::Register
                        | FrameworkTopic::Call
                        | FrameworkTopic::Will
                        | FrameworkTopic::Event,
                    _
                ))
            )
        })
    }

    /// True when every task the master holds as not ended is in its board's agent core: no
    /// `RunTask` is on its way or was lost unnoticed.
    pub fn boards_hold_the_masters_tasks(&self) -> bool {
        self.master.tasks().iter().all(|(fid, tid, view)| {
            view.state.is_terminal()
                || self.agents.iter().any(|a| {
                    a.core.agent_id() == view.agent_id
                        && a.core
                            .tasks()
                            .any(|t| t.framework_id == fid && t.task_id == tid)
                })
        })
    }

    /// Runs until the master holds nothing only it knows: no framework traffic is in flight
    /// ([`Sim::framework_traffic_in_flight`]) and the boards hold every task it has
    /// ([`Sim::boards_hold_the_masters_tasks`]), for at most `limit_ms`. Returns whether it got
    /// there. A master restart from there loses nothing the frameworks cannot get back.
    pub fn run_until_master_is_replaceable(&mut self, limit_ms: u64) -> bool {
        self.run_until_cond(limit_ms, |s| {
            !s.framework_traffic_in_flight() && s.boards_hold_the_masters_tasks()
        })
    }

    // ----- engine -----

    pub(super) fn next_wakeup(&self) -> Option<u64> {
        let mut next = self.master.poll_timeout();
        let mut consider = |t: Option<u64>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: u64| n.min(t)));
            }
        };
        consider(self.zombie.as_ref().and_then(MasterCore::poll_timeout));
        for a in &self.agents {
            consider(a.core.poll_timeout());
        }
        consider(self.net.peek().map(|Reverse(d)| d.at));
        consider(self.scheduler_timeouts().min());
        consider(self.executor_timeouts());
        next
    }

    pub(super) fn process_due(&mut self) {
        let now = self.now;
        while self.net.peek().is_some_and(|Reverse(d)| d.at <= now) {
            let Some(Reverse(d)) = self.net.pop() else {
                break;
            };
            self.deliver(d);
            self.maybe_check();
        }
        if self.master.poll_timeout().is_some_and(|t| t <= now) {
            self.master.handle_timeout(now);
            self.drain_master();
            self.maybe_check();
        }
        if let Some(z) = self.zombie.as_mut() {
            if z.poll_timeout().is_some_and(|t| t <= now) {
                z.handle_timeout(now);
                self.drain_zombie();
            }
        }
        for i in 0..self.agents.len() {
            if self.agents[i].core.poll_timeout().is_some_and(|t| t <= now) {
                self.agents[i].core.handle_timeout(now);
                self.drain_agent(i);
            }
        }
        self.scheduler_due();
        self.executor_due();
    }

    pub(super) fn maybe_check(&self) {
        if self.config.check_invariants {
            self.assert_invariants();
        }
    }

    pub(super) fn deliver(&mut self, d: Delivery) {
        let now = self.now;
        match d.dest {
            Dest::Master => {
                let r = if d.topic.starts_with(proto::FRAMEWORK_PREFIX) {
                    self.master.handle_framework_bytes(
                        now,
                        super::wall_secs(now),
                        &d.topic,
                        &d.payload,
                    )
                } else {
                    self.master.handle_agent_bytes(now, &d.topic, &d.payload)
                };
                // Duplicates the broker delivers again are replays to the master, and a master
                // that has not heard an agent's boot cannot check its frames: both are dropped.
                assert!(
                    matches!(r, Ok(()) | Err(RecvError::Frame(_))),
                    "the simulation sends only well-formed payloads: {r:?}"
                );
                self.drain_master();
                // A deposed master still subscribed hears everything the leader does.
                if let Some(z) = self.zombie.as_mut() {
                    let r = if d.topic.starts_with(proto::FRAMEWORK_PREFIX) {
                        z.handle_framework_bytes(now, super::wall_secs(now), &d.topic, &d.payload)
                    } else {
                        z.handle_agent_bytes(now, &d.topic, &d.payload)
                    };
                    assert!(
                        matches!(r, Ok(()) | Err(RecvError::Frame(_))),
                        "the simulation sends only well-formed payloads: {r:?}"
                    );
                    self.drain_zombie();
                }
            }
            Dest::Agent(i) => {
                if !self.agents[i].connected || self.agents[i].partitioned {
                    return;
                }
                self.note_command(i, &d.payload);
                // A RunTask from an older master than the agent obeys must not launch anything.
                let fenced = matches!(
                    super::peek_down(i, self.agents[i].core.agent_id(), self.agents[i].core.boot(), &d.payload),
                    Some(MasterEnvelope { epoch, msg: MasterMsg::RunTask(_) })
                        if epoch < self.agents[i].core.master_epoch()
                );
                let launched = self.agents[i].launched.len();
                let _ = self.agents[i]
                    .core
                    .handle_bytes(now, &d.topic, &mut d.payload.to_vec());
                self.drain_agent(i);
                if fenced && self.agents[i].launched.len() > launched {
                    self.fence_breaches += 1;
                }
            }
            Dest::Scheduler(k) => self.deliver_to_scheduler(k, d.topic, d.payload),
            Dest::Executor => self.deliver_to_executor(&d.topic, &d.payload),
            Dest::Framework(j) => {
                if !self.frameworks[j].connected {
                    // A persistent session: the broker keeps it until the framework is back.
                    self.frameworks[j].parked.push((d.topic, d.payload));
                    return;
                }
                if d.topic == topic::MASTER_HELLO {
                    let Ok(MasterEnvelope {
                        epoch: master_epoch,
                        msg: MasterMsg::Hello,
                    }) = MasterEnvelope::decode(&d.payload)
                    else {
                        return;
                    };
                    let f = &self.frameworks[j];
                    if f.framework_id.is_some() && f.master_epoch < master_epoch {
                        // A new master: take the old id back, as a scheduler driver does.
                        self.reconnect_framework(j);
                    }
                    return;
                }
                let Some(EventEnvelope { event, .. }) = super::peek_event(&d.payload) else {
                    panic!("the master sends well-formed events");
                };
                let f = &mut self.frameworks[j];
                if let Event::Registered {
                    framework_id,
                    master_epoch,
                } = &event
                {
                    f.framework_id = Some(framework_id.clone());
                    f.master_epoch = *master_epoch;
                }
                f.events.push((now, event.clone()));
                let calls = f.script.on_event(now, &event);
                for c in calls {
                    self.publish_call(j, c);
                }
                // Handled: acknowledged, as the SDK does after its callback returns.
                if let Some(ack) = match &event {
                    Event::Update(u) => u.acknowledgement(),
                    _ => None,
                } {
                    self.publish_call(j, Call::Acknowledge(ack));
                }
            }
        }
    }

    pub(super) fn drain_master(&mut self) {
        while let Some(t) = self.master.poll_transmit() {
            self.route_master_transmit(t);
        }
    }

    /// Publishes what the deposed master sends, as a paused-then-resumed leader's would go out.
    pub(super) fn drain_zombie(&mut self) {
        while let Some(t) = self.zombie.as_mut().and_then(MasterCore::poll_transmit) {
            self.zombie_transmits += 1;
            self.route_master_transmit(t);
        }
    }

    /// Hands a master's transmit to the broker: to its subscribers.
    fn route_master_transmit(&mut self, t: Transmit) {
        {
            let payload = t.payload();
            if t.topic == topic::MASTER_HELLO {
                if t.retain {
                    self.retained_hello = Some(payload.clone());
                }
                for i in 0..self.agents.len() {
                    if self.agents[i].connected {
                        self.send(Dest::Agent(i), &t.topic, payload.clone());
                    }
                }
                for j in 0..self.frameworks.len() {
                    self.send(Dest::Framework(j), &t.topic, payload.clone());
                }
                for k in 0..self.schedulers.len() {
                    if self.schedulers[k].connected {
                        self.send(Dest::Scheduler(k), &t.topic, payload.clone());
                    }
                }
                return;
            }
            if let Some(Topic::Agent {
                id,
                kind: AgentTopic::Cmd,
            }) = topic::parse(&t.topic)
            {
                if let Some(i) = self.agents.iter().position(|a| a.core.agent_id() == id) {
                    self.send(Dest::Agent(i), &t.topic, payload);
                }
                return;
            }
            let dest = match proto::parse_topic(&t.topic) {
                Some((FrameworkTopic::Event, client)) => self
                    .frameworks
                    .iter()
                    .position(|f| f.client == client)
                    .map(Dest::Framework)
                    .or_else(|| self.scheduler_by_client(client).map(Dest::Scheduler)),
                _ => None,
            };
            if let Some(dest) = dest {
                self.send(dest, &t.topic, payload);
            }
        }
    }

    /// Publishes a scripted framework's call, sealed as the SDK seals it: a registration with its
    /// time and nonce outside any session, anything else in the session the leading master holds
    /// for the framework now.
    pub(super) fn publish_call(&mut self, j: usize, mut call: Call) {
        use agent_nostd_core::frame::{Direction, WILL_SEQ};
        use proto::frame::NO_SESSION;
        let now = self.now;
        let f = &mut self.frameworks[j];
        if !f.connected {
            return;
        }
        f.calls += 1;
        let (topic, session, seq) = match &mut call {
            Call::Register(r) | Call::ReRegister(ReRegister { info: r, .. }) => {
                r.principal = format!("framework-{}", f.client);
                r.time = super::wall_secs(now);
                r.nonce = f.calls;
                (proto::register_topic(&f.client), NO_SESSION, 0)
            }
            Call::Gone { .. } => (proto::will_topic(&f.client), NO_SESSION, WILL_SEQ),
            _ => {
                let session = self
                    .master
                    .framework_session(&f.client)
                    .unwrap_or(NO_SESSION);
                (proto::call_topic(&f.client), session, f.calls as u32)
            }
        };
        let payload = proto::frame::seal(
            call.encode(),
            &super::framework_key(&f.client),
            Direction::FrameworkUp,
            &f.client,
            session,
            seq,
        );
        self.send(Dest::Master, &topic, payload);
    }

    pub(super) fn send(&mut self, dest: Dest, topic: &str, payload: Vec<u8>) {
        // Framework traffic is never lost: schedulers keep a persistent QoS 1 session.
        let framework = topic.starts_with(proto::FRAMEWORK_PREFIX)
            || matches!(
                dest,
                Dest::Framework(_) | Dest::Scheduler(_) | Dest::Executor
            );
        let copies = if !framework && self.rng.unit() < self.config.loss {
            self.lost += 1;
            0
        } else if self.rng.unit() < self.config.duplicate {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self
                .rng
                .range(self.config.min_delay_ms, self.config.max_delay_ms);
            let last = self
                .last_delivery
                .entry((dest, topic.to_owned()))
                .or_insert(0);
            let at = (self.now + delay).max(*last);
            *last = at;
            self.seq += 1;
            self.net.push(Reverse(Delivery {
                at,
                seq: self.seq,
                dest,
                topic: topic.to_owned(),
                payload: payload.clone(),
            }));
        }
    }
}
