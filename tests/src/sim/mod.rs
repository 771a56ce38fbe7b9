//! A deterministic simulation of a whole cluster: one [`MasterCore`], several [`AgentCore`]s,
//! scripted stand-in frameworks and real ones (their own `Scheduler` behind the SDK's
//! `SchedulerCore`, [`Sim::add_scheduler`]), joined by an in-memory broker on simulated time.
//!
//! Every message goes through its real encoding and topic, as over MQTT. The broker can lose, delay
//! and duplicate messages from a seeded generator, so a run is reproducible from its seed; like MQTT,
//! it keeps the messages of one topic to one receiver in order. A test can also make it lose the next framework
//! message of a given task ([`Sim::drop_next_message_of`]), e.g. a result sent just before its
//! executor exits. Time jumps to the next wake-up: the
//! earliest of every core's `poll_timeout` and the next delivery.
//!
//! The simulated agent host plays "the OS": a launch starts at once, SIGKILL ends a task at once,
//! SIGTERM ends it at once unless the host is told to ignore it, and the test decides when tasks exit
//! ([`Sim::finish_task`]) — except for the tasks of real frameworks whose command is a `pi`,
//! `wordcount` or `sensor` executor: the host runs a simulated executor ([`executors`]) that
//! computes the real result, sends the framework messages the real one sends, and exits.
//!
//! # Layout
//!
//! - `mod.rs`: [`Sim`], its settings and the operations a test applies (add, restart, disconnect).
//! - `engine.rs`: the next wake-up, due deliveries and timers, and routing through the broker.
//! - `host.rs`: [`SimAgent`], the boards and how their host carries out the agent core's actions.
//! - `schedulers.rs`: real frameworks: [`Sim::add_scheduler`], [`SimScheduler`], [`SchedulerId`].
//! - `jobs.rs`: the pi and wordcount schedulers sized as the property tests run them.
//! - [`executors`]: the simulated `pi`, `wordcount` and `sensor` executor processes.
//! - `scripts.rs`: the scripted stand-in frameworks ([`Script`], [`PackTasks`], [`SimFramework`]).
//! - `rng.rs`: [`Rng`], the seeded generator behind every fault.
//!
//! With [`SimConfig::check_invariants`] on (the default), the master's books and every board's task
//! table are checked after every step, and a violation panics with an explanation.

mod engine;
pub mod executors;
mod host;
pub mod jobs;
mod rng;
mod schedulers;
mod scripts;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use agent_nostd_core::agent::{Config as AgentConfig, Exit, LocalEvent};
use agent_nostd_core::auth::{MessageKey, Secret};
use agent_nostd_core::ids::{id, TaskKey};
use agent_nostd_core::topic;
use agent_nostd_core::wire::{AgentInfo, Attribute as WireAttribute, MAX_UP_FRAME_LEN};
use agent_nostd_core::{AgentCore, Resources};
use bramble_master_core::{Config as MasterConfig, MasterCore};
use bramble_proto::{self as proto, Call, ReRegister, Register};

pub use host::{Command, SimAgent, SimExecutor};
pub use rng::Rng;
pub use schedulers::{SchedulerId, SimScheduler};
pub use scripts::{Manual, PackTasks, Script, SimFramework};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Dest {
    Master,
    Agent(usize),
    Framework(usize),
    /// A real framework's scheduler ([`Sim::add_scheduler`]).
    Scheduler(usize),
    /// Whichever executor reads the delivery's exec topic.
    Executor,
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
    /// The scripted stand-in frameworks.
    pub frameworks: Vec<SimFramework>,
    /// The real frameworks' schedulers.
    pub schedulers: Vec<SimScheduler>,
    /// The simulated executor processes running on the boards.
    pub executors: Vec<SimExecutor>,
    /// The broker's settings.
    pub config: SimConfig,
    /// Messages the broker lost.
    pub lost: u64,
    /// Tasks whose executor's next framework message the broker loses
    /// ([`Sim::drop_next_message_of`]).
    drop_next_message: BTreeSet<String>,
    /// Framework messages lost that way.
    pub dropped_messages: u64,
    net: BinaryHeap<Reverse<Delivery>>,
    /// The last delivery time per (destination, topic): MQTT keeps each topic in order.
    last_delivery: HashMap<(Dest, String), u64>,
    seq: u64,
    rng: Rng,
    retained_hello: Option<Vec<u8>>,
    /// Connections made by agents so far (each one's id, as its last will names it).
    connections: u32,
    /// A deposed master that still thinks it leads ([`Sim::depose_master`]): it hears everything
    /// sent to the master and what it sends goes out, until [`Sim::stop_zombie`].
    pub zombie: Option<MasterCore>,
    /// Transmits the zombie sent.
    pub zombie_transmits: u64,
    /// `RunTask`s of an older master than the agent obeyed that launched a task anyway (the fence
    /// failed; should stay 0).
    pub fence_breaches: u64,
}

impl Sim {
    /// A cluster with a master of `master_config` (epoch 1) and no agents or frameworks yet.
    pub fn new(config: SimConfig, mut master_config: MasterConfig) -> Self {
        // The masters take only the boards' own keys (given as they are added).
        master_config.principal_keys = master_config.principal_keys.allowing_anonymous(false);
        let master = MasterCore::new(master_config.clone(), 1, 0)
            .expect("the test's master config is valid");
        let mut sim = Sim {
            now: 0,
            master,
            master_config,
            agents: Vec::new(),
            frameworks: Vec::new(),
            schedulers: Vec::new(),
            executors: Vec::new(),
            rng: Rng::new(config.seed),
            config,
            lost: 0,
            drop_next_message: BTreeSet::new(),
            dropped_messages: 0,
            net: BinaryHeap::new(),
            last_delivery: HashMap::new(),
            seq: 0,
            retained_hello: None,
            connections: 0,
            zombie: None,
            zombie_transmits: 0,
            fence_breaches: 0,
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
            connection: 0,
            boot: 1,
            seq: 0,
            to_epoch: 0,
        };
        let config = agent_config(self.agents.len());
        // Each board has its own key, and only the masters know it.
        let key = agent_key(self.agents.len());
        self.master_config
            .principal_keys
            .insert(agent_id, key.clone());
        self.share_keys();
        let core = AgentCore::new(config, info.clone(), key, self.now).expect("valid agent config");
        self.agents.push(SimAgent {
            core,
            connected: false,
            running: BTreeMap::new(),
            ignore_term: false,
            partitioned: false,
            launched: Vec::new(),
            signals: Vec::new(),
            ended: Vec::new(),
            commands: BTreeMap::new(),
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
        self.master_config
            .principal_keys
            .insert_framework(client, framework_key(client));
        self.share_keys();
        self.frameworks.push(SimFramework {
            calls: 0,
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
        self.finish_task_of(i, &fid, task_id, exit);
    }

    /// The process of task `task_id` of the framework with id `framework_id` on board `i` ends
    /// with `exit` (for a real framework, its id is [`Sim::scheduler_framework_id`]).
    pub fn finish_task_of(&mut self, i: usize, framework_id: &str, task_id: &str, exit: Exit) {
        let key = TaskKey::new(framework_id, task_id).expect("valid task ids");
        self.agents[i].running.remove(&key);
        self.end_executor(i, &key);
        self.agents[i].ended.push(key);
        let now = self.now;
        self.agents[i]
            .core
            .handle_event(
                now,
                LocalEvent::Exited {
                    framework_id,
                    task_id,
                    exit,
                },
            )
            .expect("the task runs on that agent");
        self.drain_agent(i);
    }

    /// The broker loses the next framework message the executor of task `task_id` sends (of any
    /// framework), e.g. a result sent just before the executor exits.
    pub fn drop_next_message_of(&mut self, task_id: &str) {
        self.drop_next_message.insert(task_id.to_owned());
    }

    /// The board whose process of task `task_id` of framework `framework_id` runs, if any.
    pub fn board_running(&self, framework_id: &str, task_id: &str) -> Option<usize> {
        self.agents
            .iter()
            .position(|a| a.running.keys().any(|k| k.is(framework_id, task_id)))
    }

    /// The board's connection drops: the broker publishes its last will.
    pub fn disconnect_agent(&mut self, i: usize) {
        let a = &mut self.agents[i];
        if !a.connected {
            return;
        }
        a.connected = false;
        a.core.handle_disconnected(self.now);
        let mut buf = [0u8; MAX_UP_FRAME_LEN];
        let will = a.core.last_will(&mut buf);
        let payload = buf[..will.len].to_vec();
        self.send(Dest::Master, will.topic.as_str(), payload);
    }

    /// The board reconnects and receives the retained hello.
    pub fn connect_agent(&mut self, i: usize) {
        self.agents[i].connected = true;
        let now = self.now;
        self.connections += 1;
        let connection = self.connections;
        self.agents[i].core.handle_connected(now, connection);
        if let Some(hello) = self.retained_hello.clone() {
            self.send(Dest::Agent(i), topic::MASTER_HELLO, hello);
        }
        self.drain_agent(i);
    }

    /// The agent process restarts: a new core takes back the old one's checkpoint
    /// ([`AgentCore::snapshot`] through [`AgentCore::restore`], the agent driver's one restore
    /// path) and reconnects. The board's processes live on; a task whose process is gone ended
    /// while the agent was down, how unknown.
    pub fn restart_agent(&mut self, i: usize) {
        self.disconnect_agent(i);
        let now = self.now;
        let a = &mut self.agents[i];
        let snapshot = a.core.snapshot();
        let mut core = AgentCore::new(agent_config(i), a.info.clone(), agent_key(i), now)
            .expect("valid agent");
        let running = &a.running;
        let exited = |key: &TaskKey| (!running.contains_key(key)).then_some(Exit::Unknown);
        for result in core.restore(now, &snapshot, exited) {
            result.expect("a fresh core takes back every task of the snapshot");
        }
        a.core = core;
        self.connect_agent(i);
    }

    /// The framework's connection drops: the broker publishes its last will, and keeps what is
    /// published for the framework until it reconnects (a persistent session).
    pub fn disconnect_framework(&mut self, j: usize) {
        self.frameworks[j].connected = false;
        let client = self.frameworks[j].client.clone();
        let will = proto::frame::seal(
            Call::Gone { connection: 0 }.encode(),
            &framework_key(&client),
            agent_nostd_core::frame::Direction::FrameworkUp,
            &client,
            proto::frame::NO_SESSION,
            agent_nostd_core::frame::WILL_SEQ,
        );
        self.send(Dest::Master, &proto::will_topic(&client), will);
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

    /// The broker is killed and restarted after `down_ms`: every message in flight, every
    /// persistent session's queue and the retained hello are gone, every client's connection drops
    /// without a last will (nobody was left to publish it), and every client reconnects (agents,
    /// then frameworks and schedulers, then the master, which publishes its hello again).
    pub fn restart_broker(&mut self, down_ms: u64) {
        self.lost += self.net.len() as u64;
        self.net.clear();
        self.retained_hello = None;
        let now = self.now;
        for a in &mut self.agents {
            if a.connected {
                a.connected = false;
                a.core.handle_disconnected(now);
            }
        }
        for f in &mut self.frameworks {
            f.connected = false;
            f.parked.clear();
        }
        for k in 0..self.schedulers.len() {
            self.lose_scheduler_session(k);
        }
        self.run_for(down_ms);
        for i in 0..self.agents.len() {
            self.connect_agent(i);
        }
        for j in 0..self.frameworks.len() {
            self.reconnect_framework(j);
        }
        for k in 0..self.schedulers.len() {
            self.connect_scheduler(k);
        }
        let now = self.now;
        self.master.handle_connected(now, false);
        self.drain_master();
        if let Some(z) = self.zombie.as_mut() {
            z.handle_connected(now, false);
            self.drain_zombie();
        }
    }

    /// The master restarts with a new `epoch` and empty state; messages in flight still arrive.
    pub fn restart_master(&mut self, epoch: u64) {
        self.master = MasterCore::new(self.master_config.clone(), epoch, self.now)
            .expect("valid master config");
        self.drain_master();
    }

    /// A new master of `epoch` takes over with empty state while the current one carries on as a
    /// zombie (a paused leader resumed, unaware it was deposed): it keeps receiving everything sent
    /// to the master and what it sends is published, until [`stop_zombie`](Self::stop_zombie).
    /// Messages in flight still arrive (at both).
    pub fn depose_master(&mut self, epoch: u64) {
        let leader = MasterCore::new(self.master_config.clone(), epoch, self.now)
            .expect("valid master config");
        self.zombie = Some(std::mem::replace(&mut self.master, leader));
        self.drain_master();
    }

    /// The master leads on under `epoch` ([`MasterCore::raise_epoch`], as its election does when
    /// agents obey a newer epoch) and publishes its new hello.
    pub fn raise_master_epoch(&mut self, epoch: u64) {
        self.master.raise_epoch(epoch);
        self.drain_master();
    }

    /// The zombie master stops (it noticed it was deposed, or it died).
    pub fn stop_zombie(&mut self) {
        self.zombie = None;
    }

    /// End-to-end delivery as the boards see it: no task id was launched twice on any board, and
    /// no board holds an update its framework has not acknowledged. Call once the cluster is quiet.
    pub fn check_delivery(&self) -> Result<(), String> {
        let mut launched = BTreeSet::new();
        for a in &self.agents {
            for key in &a.launched {
                if !launched.insert(key.clone()) {
                    return Err(format!("{key:?} launched twice"));
                }
            }
            if let Some(t) = a.core.tasks().find(|t| t.unacked_updates > 0) {
                return Err(format!(
                    "{}/{} on {} has {} unacknowledged updates",
                    t.framework_id,
                    t.task_id,
                    a.core.agent_id(),
                    t.unacked_updates
                ));
            }
        }
        Ok(())
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
}

/// The envelope of a master → agent payload for board `i` whose core has boot `boot`, a frame
/// (decrypted in a copy) or not, read without checking it: for the simulation's bookkeeping only
/// (the agent cores check what they act on).
fn peek_down(
    i: usize,
    agent_id: &str,
    boot: u32,
    payload: &[u8],
) -> Option<agent_nostd_core::MasterEnvelope> {
    use agent_nostd_core::frame::{decrypt, Binding, Direction, Frame};
    use agent_nostd_core::WireMessage;
    agent_nostd_core::MasterEnvelope::decode(payload)
        .ok()
        .or_else(|| {
            let binding = Binding {
                direction: Direction::Down,
                agent_id,
                boot,
            };
            let mut payload = payload.to_vec();
            decrypt(&agent_key(i), &binding, &mut payload);
            let frame = Frame::split(&payload, Direction::Down).ok()?;
            agent_nostd_core::MasterEnvelope::decode(frame.message).ok()
        })
}

/// The wall clock, in seconds since the Unix epoch, at simulated time 0 (registrations carry
/// their time; the masters take one within five minutes of theirs).
pub const SIM_WALL_BASE_SECS: u64 = 1_765_000_000;

impl Sim {
    /// Hands the keys of `master_config` to the masters running (a later one starts with them).
    pub(super) fn share_keys(&mut self) {
        let keys = self.master_config.principal_keys.clone();
        self.master.set_principal_keys(keys.clone());
        if let Some(z) = self.zombie.as_mut() {
            z.set_principal_keys(keys);
        }
    }
}

/// The simulated wall clock at simulated time `now`, in seconds since the Unix epoch.
fn wall_secs(now: u64) -> u64 {
    SIM_WALL_BASE_SECS + now / 1_000
}

/// Framework client `client`'s message key.
fn framework_key(client: &str) -> MessageKey {
    let mut secret = [0x5f_u8; 32];
    for (i, b) in client.bytes().enumerate().take(32) {
        secret[i] ^= b;
    }
    Secret::from_bytes(secret).message_key()
}

/// An event payload for a scripted framework, read without checking it (the scripted frameworks
/// stand in for the SDK, whose core checks what it acts on): a frame's event, or an unframed one.
fn peek_event(payload: &[u8]) -> Option<proto::EventEnvelope> {
    use agent_nostd_core::frame::{Direction, Frame};
    Frame::split(payload, Direction::FrameworkDown)
        .ok()
        .and_then(|f| proto::EventEnvelope::decode(f.message).ok())
        .or_else(|| proto::EventEnvelope::decode(payload).ok())
}

/// Board `i`'s message key.
fn agent_key(i: usize) -> MessageKey {
    let mut secret = [0u8; 32];
    secret[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    Secret::from_bytes(secret).message_key()
}

fn agent_config(i: usize) -> AgentConfig {
    AgentConfig {
        jitter_seed: (i as u32).wrapping_mul(0x9E37_79B9) | 1,
        ..AgentConfig::default()
    }
}
