//! The agent's sans-IO state machine, [`AgentCore`].
//!
//! It does no I/O and reads no clock: `now` (milliseconds on any monotonic clock) is a parameter. The
//! driver feeds it inputs and carries out its outputs:
//!
//! - inputs: [`AgentCore::handle_bytes`] / [`AgentCore::handle_message`] (from the master),
//!   [`AgentCore::handle_event`] (a task started, failed to start or exited),
//!   [`AgentCore::handle_resource_sample`], [`AgentCore::handle_connected`] /
//!   [`AgentCore::handle_disconnected`] and [`AgentCore::handle_timeout`];
//! - restarts: [`AgentCore::snapshot`] is what a checkpoint holds, and [`AgentCore::restore`]
//!   takes it back in a new core (see [`snapshot`]);
//! - outputs: [`AgentCore::poll_transmit`] (a payload to publish, and where),
//!   [`AgentCore::poll_action`] (launch a task, signal its process group, forget it) and
//!   [`AgentCore::poll_timeout`] (when to call `handle_timeout` next).
//!
//! # Call order
//!
//! After any `handle_*` call, the driver calls `poll_transmit` until it returns `None`, then
//! `poll_action` until it returns `None`, then `poll_timeout` to arm its timer. When the timer fires it
//! calls `handle_timeout(now)` and polls again.
//!
//! # Guarantees
//!
//! - Registration is retried with exponential backoff (with jitter) until acknowledged.
//! - Each task's status updates are kept in order and resent with backoff until acknowledged: delivery
//!   is at least once. They are pipelined: RUNNING goes out right after STARTING, without waiting for
//!   STARTING's acknowledgement (a round trip through the broker on every launch). Each is first sent
//!   in order; an acknowledgement covers the update it names and every earlier one of that task, and
//!   the master ignores an update older than the newest it has (`update_id` grows per agent). They live in the task's slot, so the queue is bounded by [`MAX_TASKS`] × 3 and
//!   nothing is ever dropped to make room: when the table is full a new launch is refused instead.
//! - A task that does not fit in what is free, or is malformed, is refused with `TASK_ERROR` and a reason.
//! - A kill sends SIGTERM, then SIGKILL when the grace period ends.
//! - Nothing in here allocates or panics on input from the network.
//!
//! # Layout
//!
//! - this file: [`AgentCore`], its inputs and outputs, and registration;
//! - [`config`]: its settings;
//! - [`events`]: what the driver hands it and gets from it besides wire messages;
//! - `table`: the task table, the master's RunTask and KillTask, and refusals;
//! - `updates`: status updates (ids, retries, acknowledgements) and resource reports;
//! - [`snapshot`]: what a checkpoint holds, and the restore path.

pub mod config;
pub mod events;
pub mod snapshot;
mod table;
mod updates;

use core::fmt::Write as _;

use heapless::Vec;

pub use config::{Backoff, Config, ConfigError, Thresholds};
pub use events::{
    Action, EndedTask, Exit, LocalEvent, RecvError, ResourceSample, Signal, Stats, TaskError,
    TaskView, Transmit,
};
pub use snapshot::{EndedSnapshot, Snapshot, TaskSnapshot};
use table::{push_truncated, Orphan, Phase, RestoredTask, Slot, WANT_KILL, WANT_LAUNCH, WANT_TERM};
use updates::{jitter, next_update};

use crate::auth::MessageKey;
use crate::frame::{self, Binding, Direction, Frame, ReplayWindow, WILL_SEQ};
use crate::ids::{validate_id, TaskKey};
use crate::resources::Resources;
use crate::topic::{self, AgentTopic, Topic};
use crate::wire::{
    AgentInfo, AgentMsg, DecodeError, MasterEnvelope, MasterMsg, ReRegister, Reason,
    ResourceReport, TaskReport, TaskState, WireMessage, MAX_TASKS, MAX_UP_FRAME_LEN,
};

/// The buffer [`AgentCore::poll_transmit`] encodes into: large enough for any [`AgentMsg`] as a
/// frame.
pub type TransmitBuf = [u8; MAX_UP_FRAME_LEN];

/// How many updates about tasks the agent does not hold (refusals it has no slot for, kills of unknown
/// tasks) wait for acknowledgement at once.
pub const MAX_ORPHAN_UPDATES: usize = 8;
/// Status update ids are reserved in blocks this long. A checkpoint records the end of the current
/// block ([`AgentCore::update_id_checkpoint`]), so a restarted agent never reuses an id the master
/// may hold, and only one update in a block needs a checkpoint before it is sent.
pub const UPDATE_ID_BLOCK: u32 = 1024;
/// How many tasks whose end the framework acknowledged the agent still names, with their terminal
/// state, in a re-registration's task list (room permitting: the list holds [`MAX_TASKS`]), so a
/// new master can answer reconciliation of a task that ended before it started. Not checkpointed:
/// a restarted agent starts with none.
pub const COMPLETED_KEPT: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Registration {
    Registering {
        next_attempt: u64,
        delay_ms: u32,
        last_sent: Option<u64>,
    },
    Registered,
}

/// The agent's state machine. See the [module docs](self) for the call order.
///
/// At the default capacities ([`MAX_TASKS`] = 32) it is about 12 KiB and never allocates.
#[derive(Debug, Clone)]
pub struct AgentCore {
    config: Config,
    info: AgentInfo,
    registration: Registration,
    /// The newest master epoch obeyed (the fence): messages from older masters are dropped.
    master_epoch: u64,
    /// The master registrations are addressed to: the fence, or a newer epoch a hello announced
    /// (a hello is not authenticated, so it never moves the fence itself).
    target_epoch: u64,
    /// The key this agent's frames are tagged with, both ways.
    key: MessageKey,
    /// The number of the next uplink frame (this boot's; see [`crate::frame`]).
    up_seq: u32,
    /// The downlink numbers taken from the master of `master_epoch`.
    down: ReplayWindow,
    /// When a master's hint last made a registered agent register again.
    hinted_at: Option<u64>,
    /// An older master announced itself: tell it, by re-registering, the epoch it must beat.
    tell_epoch: bool,
    connected: bool,
    slots: Vec<Slot, MAX_TASKS>,
    /// The latest tasks released after their end was acknowledged, oldest first.
    completed: heapless::Deque<(TaskKey, TaskState), COMPLETED_KEPT>,
    orphans: Vec<Orphan, MAX_ORPHAN_UPDATES>,
    next_update_id: u32,
    /// Ids reserved from `next_update_id` on that a checkpoint already covers.
    update_ids_left: u32,
    pong: Option<u32>,
    sample: Option<ResourceSample>,
    last_report: Option<ResourceReport>,
    last_report_at: Option<u64>,
    /// When a significant change makes an early report due.
    report_due_at: Option<u64>,
    rng: u32,
    generation: u32,
    stats: Stats,
}

impl AgentCore {
    /// A core for the agent described by `info`, registering from `now` on (once connected). Its
    /// frames are tagged with `key` (the agent's [message key](crate::auth::Secret::message_key))
    /// and bound to `info.boot`, which must be above every boot this agent used before (see
    /// [`restore`](Self::restore)).
    pub fn new(
        config: Config,
        info: AgentInfo,
        key: MessageKey,
        now: u64,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        if validate_id(&info.agent_id).is_err() {
            return Err(ConfigError {
                field: "agent_id",
                problem: "must be 1-32 bytes of A-Z a-z 0-9 . _ -",
            });
        }
        let rng = config.jitter_seed | 1;
        Ok(AgentCore {
            registration: Registration::Registering {
                next_attempt: now,
                delay_ms: config.register_backoff.initial_ms,
                last_sent: None,
            },
            config,
            info,
            master_epoch: 0,
            target_epoch: 0,
            key,
            up_seq: 1,
            down: ReplayWindow::new(),
            hinted_at: None,
            tell_epoch: false,
            connected: false,
            slots: Vec::new(),
            completed: heapless::Deque::new(),
            orphans: Vec::new(),
            next_update_id: 1,
            update_ids_left: 0,
            pong: None,
            sample: None,
            last_report: None,
            last_report_at: None,
            report_due_at: None,
            rng,
            generation: 0,
            stats: Stats::default(),
        })
    }

    /// The agent's id.
    pub fn agent_id(&self) -> &str {
        &self.info.agent_id
    }

    /// True once the current master has acknowledged the registration.
    pub fn is_registered(&self) -> bool {
        self.registration == Registration::Registered
    }

    /// The newest master epoch this agent has obeyed, or 0: it drops what older masters send.
    pub fn master_epoch(&self) -> u64 {
        self.master_epoch
    }

    /// The boot number its frames are bound to.
    pub fn boot(&self) -> u32 {
        self.info.boot
    }

    /// What the agent offers in all.
    pub fn total(&self) -> Resources {
        self.info.total
    }

    /// The sum of the limits of tasks starting or running.
    pub fn allocated(&self) -> Resources {
        self.slots
            .iter()
            .filter(|s| s.holds_resources())
            .fold(Resources::ZERO, |acc, s| acc.saturating_add(&s.resources))
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Bumped whenever something a checkpoint must hold changes (a task added or ended, the master
    /// epoch, a new block of update ids; not a task released): the driver writes a checkpoint only when this
    /// moved, so an idle agent writes nothing, and neither do acknowledgements or most updates.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The next status update id to be used.
    pub fn next_update_id(&self) -> u32 {
        self.next_update_id
    }

    /// The id a restarted agent continues from: past every id this block of
    /// [`UPDATE_ID_BLOCK`] reserves (ids skip 0 when they wrap).
    pub fn update_id_checkpoint(&self) -> u32 {
        match self.next_update_id.overflowing_add(self.update_ids_left) {
            (id, false) => id,
            (id, true) => id + 1,
        }
    }

    /// Continue update ids from a checkpoint's [`update_id_checkpoint`](Self::update_id_checkpoint),
    /// so ids are not reused after a restart.
    pub fn set_next_update_id(&mut self, id: u32) {
        self.next_update_id = id.max(1);
        self.update_ids_left = 0;
    }

    /// Every task in the table.
    pub fn tasks(&self) -> impl Iterator<Item = TaskView<'_>> {
        self.slots.iter().map(Slot::view)
    }

    /// The task named `key`, if the table holds it.
    pub fn task(&self, key: &TaskKey) -> Option<TaskView<'_>> {
        self.slots.iter().find(|s| s.key == *key).map(Slot::view)
    }

    /// The MQTT last will of the current connection: [`AgentMsg::Gone`] naming it on this agent's
    /// `will` topic (also what a clean shutdown publishes). The driver sets the will of each
    /// connection before it connects, with [`AgentCore::will_of`].
    pub fn last_will(&self, buf: &mut TransmitBuf) -> Transmit {
        Self::will_of(
            &self.info.agent_id,
            &self.key,
            self.info.boot,
            self.info.connection,
            buf,
        )
    }

    /// The MQTT last will of connection `connection` of agent `agent_id` in boot `boot`, sealed
    /// with `key` as frame [`WILL_SEQ`] (the broker may publish it at any time, so it cannot take
    /// a number in turn; the master takes it only for the connection it names).
    pub fn will_of(
        agent_id: &str,
        key: &MessageKey,
        boot: u32,
        connection: u32,
        buf: &mut TransmitBuf,
    ) -> Transmit {
        let msg = AgentMsg::Gone { connection };
        let binding = Binding {
            direction: Direction::Up,
            agent_id,
            boot,
        };
        // Cannot fail: the buffer holds the largest AgentMsg as a frame.
        let len = frame::encode_sealed(&msg, key, &binding, WILL_SEQ, buf).unwrap_or(0);
        Transmit {
            topic: topic::agent(agent_id, AgentTopic::Will),
            qos: AgentTopic::Will.qos(),
            retain: false,
            len,
        }
    }

    // ----- inputs -----

    /// The MQTT connection `connection` is up (after every reconnect; its last will names it).
    /// The agent registers again at once, so the master knows which connection's will counts
    /// (then unacknowledged updates go out).
    pub fn handle_connected(&mut self, now: u64, connection: u32) {
        self.connected = true;
        self.info.connection = connection;
        self.start_registering(now);
    }

    /// The MQTT connection is down: nothing is sent until [`handle_connected`](Self::handle_connected).
    pub fn handle_disconnected(&mut self, _now: u64) {
        self.connected = false;
    }

    /// A payload arrived on `topic`. Checks it belongs there, authenticates it, and handles it.
    ///
    /// The retained hello is the one message that is not a frame: it only says that a master of
    /// its epoch is there, so the agent registers with it (and that master's authenticated answer
    /// is what moves the fence). On the command topic, an unframed hello is a master's hint that it
    /// does not know this agent (it cannot make a frame for a boot it has not heard); anything else
    /// must be a frame whose tag verifies under this agent's key and boot, with a number not taken
    /// before from its master. Frames on the command topic are encrypted: `payload` is decrypted
    /// in place (and restored when it does not verify), so the driver hands over a buffer of its
    /// own.
    ///
    /// Returns the message handled, so the driver can keep a [`RunTask`](crate::wire::RunTask)'s
    /// command line for the [`Action::Launch`] it may cause. Errors are counted in
    /// [`stats`](Self::stats) and change nothing else (but an older master's hello, which is
    /// answered with the epoch it must beat).
    pub fn handle_bytes(
        &mut self,
        now: u64,
        topic: &str,
        payload: &mut [u8],
    ) -> Result<MasterMsg, RecvError> {
        let on_hello_topic = match topic::parse(topic) {
            Some(Topic::MasterHello) => true,
            Some(Topic::Agent {
                id,
                kind: AgentTopic::Cmd,
            }) if id == self.info.agent_id.as_str() => false,
            _ => {
                self.stats.misrouted += 1;
                return Err(RecvError::UnknownTopic);
            }
        };
        // Frames and unframed messages alike start with the version byte (in clear).
        match payload.first() {
            None => return Err(self.decode_error(DecodeError::Empty)),
            Some(&v) if v != crate::wire::PROTOCOL_VERSION => {
                return Err(self.decode_error(DecodeError::UnsupportedVersion { got: v }))
            }
            Some(_) => {}
        }
        if on_hello_topic {
            return match MasterEnvelope::decode(payload) {
                Ok(envelope) => self.handle_unframed(now, true, envelope),
                Err(e) => Err(self.decode_error(e)),
            };
        }
        // On the command topic: a frame, decrypted in place, whose tag verifies; or, when it does
        // not, the payload as it came, unframed (a master's hint) or forged.
        let binding = Binding {
            direction: Direction::Down,
            agent_id: &self.info.agent_id,
            boot: self.info.boot,
        };
        frame::decrypt(&self.key, &binding, payload);
        if let Ok(frame) = Frame::split(payload, Direction::Down) {
            if frame.verifies(&self.key, &binding, frame.counter) {
                let envelope = MasterEnvelope::decode(frame.message);
                return match envelope {
                    Ok(envelope) => self.handle_framed(now, frame.counter, envelope),
                    Err(e) => Err(self.decode_error(e)),
                };
            }
        }
        frame::decrypt(&self.key, &binding, payload);
        let framed = payload.len() >= Direction::Down.trailer_len();
        match MasterEnvelope::decode(payload) {
            Ok(envelope) => self.handle_unframed(now, false, envelope),
            // Shaped as a frame, yet neither a verified frame nor a message: forged or altered.
            Err(_) if framed => {
                self.stats.bad_tag += 1;
                Err(RecvError::BadTag)
            }
            Err(e) => Err(self.decode_error(e)),
        }
    }

    /// A frame from the master whose tag verified, numbered `seq`.
    fn handle_framed(
        &mut self,
        now: u64,
        seq: u32,
        MasterEnvelope { epoch, msg }: MasterEnvelope,
    ) -> Result<MasterMsg, RecvError> {
        if matches!(msg, MasterMsg::Hello) {
            self.stats.misrouted += 1;
            return Err(RecvError::WrongTopic);
        }
        if epoch < self.master_epoch {
            self.stats.stale_master += 1;
            return Err(RecvError::StaleMaster);
        }
        // A newer master numbers its frames afresh.
        let mut window = if epoch > self.master_epoch {
            ReplayWindow::new()
        } else {
            self.down
        };
        if let Err(e) = window.check(seq) {
            self.stats.replayed += 1;
            return Err(RecvError::Replayed(e));
        }
        if let MasterMsg::RegisterAck(ack) = &msg {
            if ack.agent_id != self.info.agent_id {
                self.stats.misrouted += 1;
                return Err(RecvError::NotForThisAgent);
            }
        }
        window.take(seq);
        self.down = window;
        self.handle_message(now, epoch, &msg);
        Ok(msg)
    }

    /// An unframed message: the hello on its topic, a master's hint on the command topic; any
    /// other message is dropped (misrouted on the hello topic, unauthenticated on the command
    /// topic).
    fn handle_unframed(
        &mut self,
        now: u64,
        on_hello_topic: bool,
        envelope: MasterEnvelope,
    ) -> Result<MasterMsg, RecvError> {
        match envelope {
            MasterEnvelope {
                epoch,
                msg: MasterMsg::Hello,
            } => {
                if on_hello_topic {
                    self.on_hello(now, epoch)?;
                } else {
                    self.on_hint(now, epoch)?;
                }
                Ok(MasterMsg::Hello)
            }
            _ if on_hello_topic => {
                self.stats.misrouted += 1;
                Err(RecvError::WrongTopic)
            }
            _ => {
                self.stats.unauthenticated += 1;
                Err(RecvError::Unauthenticated)
            }
        }
    }

    fn decode_error(&mut self, e: DecodeError) -> RecvError {
        match e {
            DecodeError::UnsupportedVersion { .. } => self.stats.unsupported_version += 1,
            _ => self.stats.malformed += 1,
        }
        RecvError::Decode(e)
    }

    /// An authenticated message from the master of `epoch`, at or above the fence.
    ///
    /// A message from a newer epoch makes that master the one obeyed (the driver checkpoints it,
    /// as [`generation`](Self::generation) moves) and the agent re-registers with it.
    fn handle_message(&mut self, now: u64, epoch: u64, msg: &MasterMsg) {
        if epoch > self.master_epoch {
            // A newer master: it alone is obeyed from now on, and it knows nothing of us yet (a
            // registration under way goes on: its answer below says what to do).
            self.master_epoch = epoch;
            self.generation = self.generation.wrapping_add(1);
            if self.registration == Registration::Registered {
                self.start_registering(now);
            }
        }
        self.target_epoch = epoch;
        match msg {
            MasterMsg::Hello => {}
            MasterMsg::RegisterAck(_) => self.on_register_ack(now),
            MasterMsg::RunTask(run) => self.on_run_task(now, run),
            MasterMsg::KillTask(kill) => self.on_kill_task(now, kill),
            MasterMsg::StatusAck(ack) => self.on_status_ack(ack),
            MasterMsg::Ping { seq } => self.pong = Some(*seq),
            MasterMsg::ReRegisterRequest => self.start_registering(now),
        }
    }

    /// A task started, failed to start, or exited.
    pub fn handle_event(&mut self, now: u64, event: LocalEvent<'_>) -> Result<(), TaskError> {
        let (fw, task) = match event {
            LocalEvent::Started {
                framework_id,
                task_id,
            }
            | LocalEvent::LaunchFailed {
                framework_id,
                task_id,
                ..
            }
            | LocalEvent::Exited {
                framework_id,
                task_id,
                ..
            } => (framework_id, task_id),
        };
        let i = self.slot_index(fw, task).ok_or(TaskError::UnknownTask)?;
        let slot = &self.slots[i];
        let launch_pending = slot.want & WANT_LAUNCH != 0;
        match (event, slot.phase) {
            (_, Phase::Ended(..)) => Err(TaskError::InvalidTransition),
            (_, Phase::Launching) if launch_pending => Err(TaskError::InvalidTransition),
            (LocalEvent::Started { .. }, Phase::Launching) => {
                let slot = &mut self.slots[i];
                slot.phase = Phase::Running;
                if let Some(grace) = slot.kill_grace_ms {
                    // A kill arrived while the process was being started: start killing it now.
                    Self::begin_kill(slot, now, grace);
                }
                self.push_update(i, now, TaskState::Running, Reason::None);
                Ok(())
            }
            (LocalEvent::Started { .. }, _) => Err(TaskError::InvalidTransition),
            (LocalEvent::LaunchFailed { message, .. }, Phase::Launching) => {
                // The reason says it failed to start; the 64 bytes of the message are all for why
                // (e.g. `artifact run.sh: sha256 mismatch: expected 9f86d08, got e3b0c44`).
                self.end_task(i, now, TaskState::Failed, Reason::LaunchFailed, |m| {
                    push_truncated(m, message);
                });
                Ok(())
            }
            (LocalEvent::LaunchFailed { .. }, _) => Err(TaskError::InvalidTransition),
            (LocalEvent::Exited { exit, .. }, _) => {
                let mem = slot.resources.mem_mib;
                let (state, reason) = if slot.kill_grace_ms.is_some() {
                    (TaskState::Killed, Reason::KilledByRequest)
                } else {
                    match exit {
                        Exit::Code(0) => (TaskState::Finished, Reason::Exited { code: 0 }),
                        Exit::Code(code) => (TaskState::Failed, Reason::Exited { code }),
                        Exit::Signal(signal) => (TaskState::Failed, Reason::Signaled { signal }),
                        Exit::OomKilled => (TaskState::Failed, Reason::MemoryLimit),
                        Exit::Unknown => (TaskState::Lost, Reason::AgentRestarted),
                    }
                };
                self.end_task(i, now, state, reason, |m| {
                    let _ = match (reason, exit) {
                        (Reason::KilledByRequest, _) => write!(m, "killed on request"),
                        (Reason::Exited { code: 0 }, _) => Ok(()),
                        (Reason::Exited { code }, _) => write!(m, "exited with code {code}"),
                        (Reason::Signaled { signal }, _) => write!(m, "killed by signal {signal}"),
                        (Reason::MemoryLimit, _) => {
                            write!(m, "memory limit of {mem} MiB exceeded (OOM-killed)")
                        }
                        _ => write!(m, "ended while the agent was down"),
                    };
                });
                Ok(())
            }
        }
    }

    /// A fresh measurement of the board. Sends an early report when it moved beyond the thresholds.
    pub fn handle_resource_sample(&mut self, now: u64, sample: ResourceSample) {
        self.sample = Some(sample);
        self.check_report_change(now);
    }

    /// The timer armed from [`poll_timeout`](Self::poll_timeout) fired.
    pub fn handle_timeout(&mut self, now: u64) {
        for slot in self.slots.iter_mut() {
            if let Some(deadline) = slot.kill_deadline {
                if now >= deadline {
                    slot.kill_deadline = None;
                    slot.want |= WANT_KILL;
                }
            }
        }
    }

    // ----- outputs -----

    /// The next payload to publish, encoded into `buf`, or `None` when there is nothing to send now.
    pub fn poll_transmit(&mut self, now: u64, buf: &mut TransmitBuf) -> Option<Transmit> {
        if !self.connected {
            return None;
        }
        if let Some(seq) = self.pong.take() {
            return self.encode(&AgentMsg::Pong { seq }, buf);
        }
        if self.tell_epoch {
            self.tell_epoch = false;
            self.stats.registrations_sent += 1;
            let msg = self.registration_message();
            return self.encode(&msg, buf);
        }
        match self.registration {
            Registration::Registering {
                next_attempt,
                delay_ms,
                ..
            } => {
                if now < next_attempt {
                    return None;
                }
                let next_delay = self.config.register_backoff.next(delay_ms);
                self.registration = Registration::Registering {
                    next_attempt: now + u64::from(self.jitter(delay_ms)),
                    delay_ms: next_delay,
                    last_sent: Some(now),
                };
                self.stats.registrations_sent += 1;
                let msg = self.registration_message();
                return self.encode(&msg, buf);
            }
            Registration::Registered => {}
        }
        if let Some(t) = self.poll_status(now, buf) {
            return Some(t);
        }
        self.poll_report(now, buf)
    }

    /// The next thing the driver must do, or `None`.
    pub fn poll_action(&mut self) -> Option<Action> {
        let (i, slot) = self
            .slots
            .iter_mut()
            .enumerate()
            .find(|(_, s)| s.want != 0)?;
        let TaskKey {
            framework_id,
            task_id,
        } = slot.key.clone();
        let action = if slot.want & WANT_LAUNCH != 0 {
            slot.want &= !WANT_LAUNCH;
            Action::Launch {
                framework_id,
                task_id,
                resources: slot.resources,
                pids_max: slot.pids_max,
            }
        } else if slot.want & (WANT_TERM | WANT_KILL) != 0 {
            let signal = if slot.want & WANT_KILL != 0 {
                Signal::Kill
            } else {
                Signal::Term
            };
            slot.want &= !(WANT_TERM | WANT_KILL);
            Action::Signal {
                framework_id,
                task_id,
                signal,
            }
        } else {
            // No checkpoint for this: until the next one drops it, a restart restores the ended
            // task and resends its (acknowledged) terminal update, which the master ignores.
            let state = slot.state();
            let key = slot.key.clone();
            self.slots.swap_remove(i);
            if self.completed.is_full() {
                self.completed.pop_front();
            }
            let _ = self.completed.push_back((key, state));
            Action::Release {
                framework_id,
                task_id,
            }
        };
        Some(action)
    }

    /// When the driver should call [`handle_timeout`](Self::handle_timeout) or poll again, or `None`
    /// when nothing is scheduled.
    pub fn poll_timeout(&self) -> Option<u64> {
        let kills = self.slots.iter().filter_map(|s| s.kill_deadline);
        let mut earliest = kills.min();
        let mut consider = |t: Option<u64>| {
            if let Some(t) = t {
                earliest = Some(earliest.map_or(t, |e| e.min(t)));
            }
        };
        if !self.connected {
            return earliest;
        }
        match self.registration {
            Registration::Registering { next_attempt, .. } => consider(Some(next_attempt)),
            Registration::Registered => {
                for slot in &self.slots {
                    consider(next_update(&slot.updates).map(|(_, t)| t));
                }
                for o in &self.orphans {
                    consider(Some(o.pending.next_send));
                }
                consider(self.report_due_at);
                consider(
                    self.last_report_at
                        .map(|t| t + u64::from(self.config.report_heartbeat_ms)),
                );
            }
        }
        earliest
    }

    // ----- registration -----

    /// A master's hello (not authenticated). An older master's is answered with a registration
    /// naming the newest epoch, so a new leader that started low learns what to start above; a
    /// newer one's makes the agent register with it (addressed to its epoch); the obeyed master's
    /// makes a waiting registration go out now.
    fn on_hello(&mut self, now: u64, epoch: u64) -> Result<(), RecvError> {
        if epoch < self.master_epoch {
            self.stats.stale_master += 1;
            self.tell_epoch = true;
            return Err(RecvError::StaleMaster);
        }
        if epoch > self.target_epoch {
            self.target_epoch = epoch;
            if self.registration == Registration::Registered {
                self.start_registering(now);
                return Ok(());
            }
        }
        match self.registration {
            Registration::Registered => {}
            // A master appeared while we wait to retry: retry now, unless a registration just went
            // out (the retained hello arrives right after every connect).
            Registration::Registering {
                ref mut next_attempt,
                last_sent,
                ..
            } => {
                let initial = u64::from(self.config.register_backoff.initial_ms);
                if last_sent.is_none_or(|t| now >= t + initial) {
                    *next_attempt = now;
                }
            }
        }
        Ok(())
    }

    /// The master of `epoch` says, unauthenticated, that it does not know this agent (it forgot
    /// it, or never heard this boot): register again, at most once per initial registration delay
    /// (a forged hint costs a registration, nothing more).
    fn on_hint(&mut self, now: u64, epoch: u64) -> Result<(), RecvError> {
        if epoch < self.master_epoch {
            self.stats.stale_master += 1;
            return Err(RecvError::StaleMaster);
        }
        self.stats.hints += 1;
        let initial = u64::from(self.config.register_backoff.initial_ms);
        if self.registration == Registration::Registered
            && self.hinted_at.is_none_or(|t| now >= t + initial)
        {
            self.hinted_at = Some(now);
            self.target_epoch = self.target_epoch.max(epoch);
            self.start_registering(now);
        }
        Ok(())
    }

    fn on_register_ack(&mut self, now: u64) {
        if self.registration == Registration::Registered {
            return; // duplicate
        }
        self.registration = Registration::Registered;
        self.make_updates_due(now);
        self.report_due_at = Some(now);
    }

    fn start_registering(&mut self, now: u64) {
        self.registration = Registration::Registering {
            next_attempt: now,
            delay_ms: self.config.register_backoff.initial_ms,
            last_sent: None,
        };
    }

    /// The registration to send next (as frame `up_seq`, addressed to `target_epoch`).
    fn registration_message(&self) -> AgentMsg {
        let mut info = self.info.clone();
        info.seq = self.up_seq;
        info.to_epoch = self.target_epoch;
        if self.slots.is_empty() && self.master_epoch == 0 {
            return AgentMsg::Register(info);
        }
        let mut tasks = Vec::new();
        for s in &self.slots {
            // Cannot overflow: both hold MAX_TASKS.
            let _ = tasks.push(TaskReport {
                framework_id: s.key.framework_id.clone(),
                task_id: s.key.task_id.clone(),
                resources: s.resources,
                state: s.state(),
            });
        }
        // Then the latest completed tasks, newest first, as long as there is room.
        for (key, state) in self.completed.iter().rev() {
            if self.slots.iter().any(|s| s.key == *key) {
                continue; // the id was launched again: the slot speaks for it
            }
            let report = TaskReport {
                framework_id: key.framework_id.clone(),
                task_id: key.task_id.clone(),
                resources: Resources::ZERO,
                state: *state,
            };
            if tasks.push(report).is_err() {
                break;
            }
        }
        AgentMsg::ReRegister(ReRegister {
            info,
            last_master_epoch: self.master_epoch,
            down_seq: self.down.highest(),
            tasks,
        })
    }

    fn jitter(&mut self, delay_ms: u32) -> u32 {
        jitter(&mut self.rng, delay_ms)
    }

    /// Encodes `msg` and seals it as the next uplink frame.
    fn encode(&mut self, msg: &AgentMsg, buf: &mut TransmitBuf) -> Option<Transmit> {
        let kind = msg.kind();
        let binding = Binding {
            direction: Direction::Up,
            agent_id: &self.info.agent_id,
            boot: self.info.boot,
        };
        // Cannot fail: the buffer holds the largest AgentMsg as a frame (pinned by the max-size
        // tests).
        let len = frame::encode_sealed(msg, &self.key, &binding, self.up_seq, buf).ok()?;
        // The will's number is never used in turn; a boot sends far fewer frames than that.
        self.up_seq = self.up_seq.saturating_add(1).min(WILL_SEQ - 1);
        Some(Transmit {
            topic: topic::agent(&self.info.agent_id, kind),
            qos: kind.qos(),
            retain: false,
            len,
        })
    }
}
