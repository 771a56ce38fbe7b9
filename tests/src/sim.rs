//! A deterministic simulation of a whole cluster: one [`MasterCore`], several [`AgentCore`]s and
//! scripted frameworks, joined by an in-memory broker on simulated time.
//!
//! Every message goes through its real encoding and topic, as over MQTT. The broker can lose, delay
//! and duplicate messages from a seeded generator, so a run is reproducible from its seed; like MQTT,
//! it keeps the messages of one topic to one receiver in order. Time jumps to the next wake-up: the
//! earliest of every core's `poll_timeout` and the next delivery.
//!
//! The simulated agent host plays "the OS": a launch starts at once, SIGKILL ends a task at once,
//! SIGTERM ends it at once unless the host is told to ignore it, and the test decides when tasks exit
//! ([`Sim::finish_task`]).
//!
//! With [`SimConfig::check_invariants`] on (the default), the master's books and every board's task
//! table are checked after every step, and a violation panics with an explanation.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use agent_nostd_core::agent::{Action, Config as AgentConfig, EndedTask, Exit, LocalEvent, Signal};
use agent_nostd_core::ids::id;
use agent_nostd_core::topic::{self, AgentTopic, Topic};
use agent_nostd_core::wire::{AgentInfo, Attribute as WireAttribute, MasterMsg, TaskState};
use agent_nostd_core::{AgentCore, AgentMsg, Resources, WireMessage};
use bramble_master_core::{Config as MasterConfig, MasterCore};
use bramble_proto::{
    self as proto, Call, Decline, Event, FrameworkTopic, Offer, ReRegister, Register, StatusUpdate,
    TaskInfo,
};

/// The broker's behaviour and the run's seed.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Seeds every random choice.
    pub seed: u64,
    /// Probability that a message between an agent and the master is lost (framework traffic never
    /// is: schedulers keep a persistent QoS 1 session).
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Shortest delivery delay, in milliseconds.
    pub min_delay_ms: u64,
    /// Longest delivery delay, in milliseconds.
    pub max_delay_ms: u64,
    /// Check the master's invariants after every step.
    pub check_invariants: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            loss: 0.0,
            duplicate: 0.0,
            min_delay_ms: 1,
            max_delay_ms: 1,
            check_invariants: true,
        }
    }
}

/// splitmix64: small, seedable, good enough for fault injection.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A float in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An integer in [lo, hi].
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.next_u64() % (hi - lo + 1)
        }
    }
}

/// What a scripted framework does with the events it receives.
pub trait Script {
    /// Called for every event after it is logged; returns the calls to make.
    fn on_event(&mut self, now: u64, event: &Event) -> Vec<Call>;
}

/// A script that does nothing: the test makes every call itself.
#[derive(Debug, Default)]
pub struct Manual;

impl Script for Manual {
    fn on_event(&mut self, _now: u64, _event: &Event) -> Vec<Call> {
        Vec::new()
    }
}

/// A script that launches tasks of one size on every offer: up to `per_offer` per offer and `limit`
/// in all (counting only tasks still running). Offers where nothing fits, or beyond the limit, are
/// declined with `refuse_seconds`.
#[derive(Debug, Clone)]
pub struct PackTasks {
    /// Every task's size.
    pub task: Resources,
    /// The most tasks launched on one offer.
    pub per_offer: usize,
    /// The most tasks running at once.
    pub limit: usize,
    /// The decline filter, in seconds (`None` for the master's default).
    pub refuse_seconds: Option<u32>,
    /// Task ids are `{prefix}{n}`.
    pub prefix: String,
    /// Tasks launched so far (the next `n`).
    pub launched: usize,
    /// Tasks launched and not yet seen ending.
    pub running: usize,
    /// Offers already answered (a duplicated event is not answered twice), with the number of tasks
    /// launched on each.
    answered: BTreeMap<u64, usize>,
    /// Tasks seen ending (an update delivered twice is counted once).
    ended: BTreeSet<String>,
}

impl PackTasks {
    /// Tasks of `task`, one per offer, at most `limit` at once.
    pub fn new(prefix: &str, task: Resources, per_offer: usize, limit: usize) -> Self {
        PackTasks {
            task,
            per_offer,
            limit,
            refuse_seconds: None,
            prefix: prefix.to_owned(),
            launched: 0,
            running: 0,
            answered: BTreeMap::new(),
            ended: BTreeSet::new(),
        }
    }
}

impl Script for PackTasks {
    fn on_event(&mut self, _now: u64, event: &Event) -> Vec<Call> {
        match event {
            Event::Offers(offers) => offers
                .iter()
                .filter(|o| !self.answered.contains_key(&o.offer_id))
                .collect::<Vec<_>>()
                .into_iter()
                .map(|o| {
                    let mut left = o.resources;
                    let mut tasks = Vec::new();
                    while tasks.len() < self.per_offer
                        && self.running < self.limit
                        && self.task.fits_in(&left)
                    {
                        left = left.saturating_sub(&self.task);
                        let tid = format!("{}{}", self.prefix, self.launched);
                        self.launched += 1;
                        self.running += 1;
                        tasks.push(TaskInfo::new(&tid, &["/bin/work"], self.task));
                    }
                    self.answered.insert(o.offer_id, tasks.len());
                    if tasks.is_empty() {
                        Call::Decline(Decline {
                            offer_ids: vec![o.offer_id],
                            refuse_seconds: self.refuse_seconds,
                        })
                    } else {
                        Call::Accept(proto::Accept {
                            offer_id: o.offer_id,
                            tasks,
                        })
                    }
                })
                .collect(),
            Event::Registered { .. } => {
                // Offer ids are unique within one master epoch only.
                self.answered.clear();
                Vec::new()
            }
            Event::Update(u) if u.state.is_terminal() && u.task_id.starts_with(&self.prefix) => {
                if self.ended.insert(u.task_id.clone()) {
                    self.running = self.running.saturating_sub(1);
                }
                Vec::new()
            }
            Event::Error {
                offer_id: Some(id), ..
            } => {
                // The accept was refused: none of its tasks runs.
                let tasks = self.answered.get_mut(id).map_or(0, std::mem::take);
                self.running = self.running.saturating_sub(tasks);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }
}

/// One simulated board: the agent core and the "OS" that runs its tasks.
pub struct SimAgent {
    /// The agent's state machine.
    pub core: AgentCore,
    /// Whether it is connected to the broker.
    pub connected: bool,
    /// The processes running on the board, by (framework, task).
    pub running: BTreeMap<(String, String), Resources>,
    /// When set, SIGTERM is ignored (the task only dies at SIGKILL).
    pub ignore_term: bool,
    /// When set, the board is cut off: nothing it sends or is sent arrives, and no last will is
    /// published (the broker has not noticed yet).
    pub partitioned: bool,
    /// Every task ever launched here, in order.
    pub launched: Vec<(String, String)>,
    /// Every signal sent to a task here, in order.
    pub signals: Vec<(String, Signal, u64)>,
    /// Every process that ended here, by (framework, task), in order.
    pub ended: Vec<(String, String)>,
    info: AgentInfo,
}

/// One scripted framework.
pub struct SimFramework {
    /// Its client name.
    pub client: String,
    /// Its registration.
    pub register: Register,
    /// Its id, once registered.
    pub framework_id: Option<String>,
    /// The epoch of the master that registered it.
    pub master_epoch: u64,
    /// Whether it is connected to the broker.
    pub connected: bool,
    /// Every event received, with the time it arrived.
    pub events: Vec<(u64, Event)>,
    /// What it does on events.
    pub script: Box<dyn Script>,
    /// Messages the broker keeps for it while it is disconnected (a persistent QoS 1 session).
    parked: Vec<(String, Vec<u8>)>,
}

impl SimFramework {
    /// Every offer received.
    pub fn offers(&self) -> Vec<Offer> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Offers(o) => Some(o.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// Every status update about `task_id`.
    pub fn updates(&self, task_id: &str) -> Vec<StatusUpdate> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Update(u) if u.task_id == task_id => Some(u.clone()),
                _ => None,
            })
            .collect()
    }

    /// The latest state received for `task_id`.
    pub fn state(&self, task_id: &str) -> Option<TaskState> {
        self.updates(task_id).last().map(|u| u.state)
    }

    /// Every error event received.
    pub fn errors(&self) -> Vec<Event> {
        self.events
            .iter()
            .filter(|(_, e)| matches!(e, Event::Error { .. }))
            .map(|(_, e)| e.clone())
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Dest {
    Master,
    Agent(usize),
    Framework(usize),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Delivery {
    at: u64,
    seq: u64,
    dest: Dest,
    topic: String,
    payload: Vec<u8>,
}

/// The simulated cluster.
pub struct Sim {
    /// Simulated time, in milliseconds.
    pub now: u64,
    /// The master.
    pub master: MasterCore,
    /// The master's settings (used again on restart).
    pub master_config: MasterConfig,
    /// The boards.
    pub agents: Vec<SimAgent>,
    /// The frameworks.
    pub frameworks: Vec<SimFramework>,
    /// The broker's settings.
    pub config: SimConfig,
    /// Messages the broker lost.
    pub lost: u64,
    net: BinaryHeap<Reverse<Delivery>>,
    /// The last delivery time per (destination, topic): MQTT keeps each topic in order.
    last_delivery: HashMap<(Dest, String), u64>,
    seq: u64,
    rng: Rng,
    retained_hello: Option<Vec<u8>>,
}

impl Sim {
    /// A cluster with a master of `master_config` (epoch 1) and no agents or frameworks yet.
    pub fn new(config: SimConfig, master_config: MasterConfig) -> Self {
        let master = MasterCore::new(master_config.clone(), 1, 0)
            .expect("the test's master config is valid");
        let mut sim = Sim {
            now: 0,
            master,
            master_config,
            agents: Vec::new(),
            frameworks: Vec::new(),
            rng: Rng::new(config.seed),
            config,
            lost: 0,
            net: BinaryHeap::new(),
            last_delivery: HashMap::new(),
            seq: 0,
            retained_hello: None,
        };
        sim.drain_master();
        sim
    }

    /// A cluster with default master settings and a perfect network.
    pub fn perfect() -> Self {
        Sim::new(SimConfig::default(), MasterConfig::default())
    }

    /// Adds a connected board with `total` resources and `key=value` attributes; returns its index.
    pub fn add_agent(
        &mut self,
        agent_id: &str,
        total: Resources,
        attributes: &[(&str, &str)],
    ) -> usize {
        let mut attrs = heapless::Vec::new();
        for (k, v) in attributes {
            let a = WireAttribute {
                key: heapless::String::try_from(*k).expect("short attribute key"),
                value: heapless::String::try_from(*v).expect("short attribute value"),
            };
            attrs.push(a).expect("at most 8 attributes");
        }
        let info = AgentInfo {
            agent_id: id(agent_id).expect("valid agent id"),
            hostname: heapless::String::try_from(format!("{agent_id}.lan").as_str())
                .expect("short hostname"),
            arch: heapless::String::try_from("aarch64").expect("short"),
            board: heapless::String::new(),
            total,
            attributes: attrs,
        };
        let config = agent_config(self.agents.len());
        let core = AgentCore::new(config, info.clone(), self.now).expect("valid agent config");
        self.agents.push(SimAgent {
            core,
            connected: false,
            running: BTreeMap::new(),
            ignore_term: false,
            partitioned: false,
            launched: Vec::new(),
            signals: Vec::new(),
            ended: Vec::new(),
            info,
        });
        let i = self.agents.len() - 1;
        self.connect_agent(i);
        i
    }

    /// Adds a framework with `script` that registers at once; returns its index.
    pub fn add_framework(
        &mut self,
        client: &str,
        register: Register,
        script: impl Script + 'static,
    ) -> usize {
        self.frameworks.push(SimFramework {
            client: client.to_owned(),
            register: register.clone(),
            framework_id: None,
            master_epoch: 0,
            connected: true,
            events: Vec::new(),
            script: Box::new(script),
            parked: Vec::new(),
        });
        let j = self.frameworks.len() - 1;
        self.publish_call(j, Call::Register(register));
        j
    }

    /// The framework's id (it must have registered).
    pub fn fid(&self, j: usize) -> String {
        self.frameworks[j]
            .framework_id
            .clone()
            .expect("the framework has registered")
    }

    /// Framework `j` makes `call`.
    pub fn call(&mut self, j: usize, call: Call) {
        self.publish_call(j, call);
    }

    /// Runs until simulated time `t`.
    pub fn run_until(&mut self, t: u64) {
        let mut spins = 0u32;
        loop {
            let next = self.next_wakeup();
            match next {
                Some(n) if n <= t => {
                    if n <= self.now {
                        spins += 1;
                        assert!(
                            spins < 100_000,
                            "the simulation makes no progress at {}",
                            self.now
                        );
                    } else {
                        spins = 0;
                        self.now = n;
                    }
                    self.process_due();
                }
                _ => {
                    self.now = self.now.max(t);
                    return;
                }
            }
        }
    }

    /// Runs for `ms` milliseconds.
    pub fn run_for(&mut self, ms: u64) {
        let t = self.now + ms;
        self.run_until(t);
    }

    /// Runs until `done` holds (checked after every step), for at most `limit_ms`. Returns whether it
    /// held.
    pub fn run_until_cond(&mut self, limit_ms: u64, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.now + limit_ms;
        while !done(self) {
            let next = self.next_wakeup().unwrap_or(end).max(self.now + 1).min(end);
            if self.now >= end {
                return false;
            }
            self.run_until(next);
        }
        true
    }

    /// The process of task `task_id` of framework `j` on board `i` ends with `exit`.
    pub fn finish_task(&mut self, i: usize, j: usize, task_id: &str, exit: Exit) {
        let fid = self.fid(j);
        let key = (fid.clone(), task_id.to_owned());
        self.agents[i].running.remove(&key);
        self.agents[i].ended.push(key);
        let now = self.now;
        self.agents[i]
            .core
            .handle_event(
                now,
                LocalEvent::Exited {
                    framework_id: &fid,
                    task_id,
                    exit,
                },
            )
            .expect("the task runs on that agent");
        self.drain_agent(i);
    }

    /// The board's connection drops: the broker publishes its last will.
    pub fn disconnect_agent(&mut self, i: usize) {
        let a = &mut self.agents[i];
        if !a.connected {
            return;
        }
        a.connected = false;
        a.core.handle_disconnected(self.now);
        let mut buf = [0u8; AgentMsg::MAX_ENCODED_LEN];
        let will = a.core.last_will(&mut buf);
        let payload = buf[..will.len].to_vec();
        self.send(Dest::Master, will.topic.as_str(), payload);
    }

    /// The board reconnects and receives the retained hello.
    pub fn connect_agent(&mut self, i: usize) {
        self.agents[i].connected = true;
        let now = self.now;
        self.agents[i].core.handle_connected(now);
        if let Some(hello) = self.retained_hello.clone() {
            self.send(Dest::Agent(i), topic::MASTER_HELLO, hello);
        }
        self.drain_agent(i);
    }

    /// The agent process restarts: a new core takes back what its checkpoint holds — the processes
    /// still running, and the ended tasks whose end the master has not acknowledged — and
    /// reconnects.
    pub fn restart_agent(&mut self, i: usize) {
        self.disconnect_agent(i);
        let now = self.now;
        let a = &mut self.agents[i];
        let next_id = a.core.next_update_id();
        let config = agent_config(i);
        let mut core = AgentCore::new(config, a.info.clone(), now).expect("valid agent");
        core.set_next_update_id(next_id);
        for ((fw, task), r) in &a.running {
            core.adopt_task(fw, task, *r, 0).expect("adoptable task");
        }
        for t in a.core.tasks() {
            if let (Some(reason), true) = (t.end_reason, t.unacked_updates > 0) {
                let ended = EndedTask {
                    framework_id: t.framework_id,
                    task_id: t.task_id,
                    resources: t.resources,
                    state: t.state,
                    reason,
                    message: t.message,
                };
                core.restore_ended_task(now, ended)
                    .expect("restorable task");
            }
        }
        a.core = core;
        self.connect_agent(i);
    }

    /// The framework's connection drops: the broker publishes its last will, and keeps what is
    /// published for the framework until it reconnects (a persistent session).
    pub fn disconnect_framework(&mut self, j: usize) {
        self.frameworks[j].connected = false;
        let client = self.frameworks[j].client.clone();
        self.send(
            Dest::Master,
            &proto::will_topic(&client),
            Call::Gone.encode(),
        );
    }

    /// The framework reconnects and re-registers with its id (or registers, if it never got one).
    pub fn reconnect_framework(&mut self, j: usize) {
        // The broker first hands over what it kept for the session.
        for (topic, payload) in std::mem::take(&mut self.frameworks[j].parked) {
            self.send(Dest::Framework(j), &topic, payload);
        }
        let f = &mut self.frameworks[j];
        f.connected = true;
        let call = match &f.framework_id {
            Some(fid) => Call::ReRegister(ReRegister {
                framework_id: fid.clone(),
                info: f.register.clone(),
            }),
            None => Call::Register(f.register.clone()),
        };
        self.publish_call(j, call);
    }

    /// The master restarts with a new `epoch` and empty state; messages in flight still arrive.
    pub fn restart_master(&mut self, epoch: u64) {
        self.master = MasterCore::new(self.master_config.clone(), epoch, self.now)
            .expect("valid master config");
        self.drain_master();
    }

    /// Checks the master's books, panicking with its explanation.
    ///
    /// Also checks that no board holds more than it has, for any resource.
    pub fn assert_invariants(&self) {
        if let Err(e) = self.master.check_invariants() {
            panic!("master invariant broken at {} ms: {e}", self.now);
        }
        for a in &self.agents {
            let total = a.core.total();
            assert!(
                a.core.allocated().fits_in(&total),
                "{} holds {} of {} at {} ms",
                a.core.agent_id(),
                a.core.allocated(),
                total,
                self.now
            );
        }
    }

    // ----- engine -----

    fn next_wakeup(&self) -> Option<u64> {
        let mut next = self.master.poll_timeout();
        let mut consider = |t: Option<u64>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: u64| n.min(t)));
            }
        };
        for a in &self.agents {
            consider(a.core.poll_timeout());
        }
        consider(self.net.peek().map(|Reverse(d)| d.at));
        next
    }

    fn process_due(&mut self) {
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
        for i in 0..self.agents.len() {
            if self.agents[i].core.poll_timeout().is_some_and(|t| t <= now) {
                self.agents[i].core.handle_timeout(now);
                self.drain_agent(i);
            }
        }
    }

    fn maybe_check(&self) {
        if self.config.check_invariants {
            self.assert_invariants();
        }
    }

    fn deliver(&mut self, d: Delivery) {
        let now = self.now;
        match d.dest {
            Dest::Master => {
                let r = if d.topic.starts_with(proto::FRAMEWORK_PREFIX) {
                    self.master
                        .handle_framework_bytes(now, &d.topic, &d.payload)
                } else {
                    self.master.handle_agent_bytes(now, &d.topic, &d.payload)
                };
                r.expect("the simulation sends only well-formed payloads");
                self.drain_master();
            }
            Dest::Agent(i) => {
                if !self.agents[i].connected || self.agents[i].partitioned {
                    return;
                }
                let _ = self.agents[i].core.handle_bytes(now, &d.topic, &d.payload);
                self.drain_agent(i);
            }
            Dest::Framework(j) => {
                if !self.frameworks[j].connected {
                    // A persistent session: the broker keeps it until the framework is back.
                    self.frameworks[j].parked.push((d.topic, d.payload));
                    return;
                }
                if d.topic == topic::MASTER_HELLO {
                    let Ok(MasterMsg::Hello { master_epoch }) = MasterMsg::decode(&d.payload)
                    else {
                        return;
                    };
                    let f = &self.frameworks[j];
                    if f.framework_id.is_some() && f.master_epoch != master_epoch {
                        // A new master: take the old id back, as a scheduler driver does.
                        self.reconnect_framework(j);
                    }
                    return;
                }
                let event = Event::decode(&d.payload).expect("the master sends well-formed events");
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
            }
        }
    }

    fn drain_master(&mut self) {
        while let Some(t) = self.master.poll_transmit() {
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
                continue;
            }
            if let Some(Topic::Agent {
                id,
                kind: AgentTopic::Cmd,
            }) = topic::parse(&t.topic)
            {
                if let Some(i) = self.agents.iter().position(|a| a.core.agent_id() == id) {
                    self.send(Dest::Agent(i), &t.topic, payload);
                }
                continue;
            }
            let dest = match proto::parse_topic(&t.topic) {
                Some((FrameworkTopic::Event, client)) => {
                    self.frameworks.iter().position(|f| f.client == client)
                }
                _ => None,
            };
            if let Some(j) = dest {
                self.send(Dest::Framework(j), &t.topic, payload);
            }
        }
    }

    fn drain_agent(&mut self, i: usize) {
        let mut buf = [0u8; AgentMsg::MAX_ENCODED_LEN];
        loop {
            let now = self.now;
            while let Some(t) = self.agents[i].core.poll_transmit(now, &mut buf) {
                if self.agents[i].partitioned {
                    continue;
                }
                let payload = buf[..t.len].to_vec();
                self.send(Dest::Master, t.topic.as_str(), payload);
            }
            let mut acted = false;
            while let Some(action) = self.agents[i].core.poll_action() {
                acted = true;
                self.host_action(i, action);
            }
            if !acted {
                break;
            }
        }
    }

    fn host_action(&mut self, i: usize, action: Action) {
        let now = self.now;
        let a = &mut self.agents[i];
        match action {
            Action::Launch {
                framework_id,
                task_id,
                resources,
                ..
            } => {
                let key = (
                    framework_id.as_str().to_owned(),
                    task_id.as_str().to_owned(),
                );
                a.launched.push(key.clone());
                a.running.insert(key, resources);
                let _ = a.core.handle_event(
                    now,
                    LocalEvent::Started {
                        framework_id: &framework_id,
                        task_id: &task_id,
                    },
                );
            }
            Action::Signal {
                framework_id,
                task_id,
                signal,
            } => {
                a.signals.push((task_id.as_str().to_owned(), signal, now));
                if signal == Signal::Term && a.ignore_term {
                    return;
                }
                let key = (
                    framework_id.as_str().to_owned(),
                    task_id.as_str().to_owned(),
                );
                if a.running.remove(&key).is_some() {
                    a.ended.push(key);
                    let sig = if signal == Signal::Term { 15 } else { 9 };
                    let _ = a.core.handle_event(
                        now,
                        LocalEvent::Exited {
                            framework_id: &framework_id,
                            task_id: &task_id,
                            exit: Exit::Signal(sig),
                        },
                    );
                }
            }
            Action::Release { .. } => {}
        }
    }

    fn publish_call(&mut self, j: usize, call: Call) {
        let f = &self.frameworks[j];
        if !f.connected {
            return;
        }
        let topic = match &call {
            Call::Register(_) | Call::ReRegister(_) => proto::register_topic(&f.client),
            Call::Gone => proto::will_topic(&f.client),
            _ => proto::call_topic(&f.client),
        };
        self.send(Dest::Master, &topic, call.encode());
    }

    fn send(&mut self, dest: Dest, topic: &str, payload: Vec<u8>) {
        // Framework traffic is never lost: schedulers keep a persistent QoS 1 session.
        let framework =
            topic.starts_with(proto::FRAMEWORK_PREFIX) || matches!(dest, Dest::Framework(_));
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

fn agent_config(i: usize) -> AgentConfig {
    AgentConfig {
        jitter_seed: (i as u32).wrapping_mul(0x9E37_79B9) | 1,
        ..AgentConfig::default()
    }
}
