//! The driver's outgoing stage: a bounded queue between the core loop, which fills it and never
//! waits, and the publisher task, which empties it into rumqttc and may wait as long as the event
//! loop needs.
//!
//! # Shedding policy
//!
//! Two parts, each bounded:
//!
//! - **Protocol messages** (everything [`MasterCore`](bramble_master_core::MasterCore) sends) wait
//!   in one FIFO, so the order the core chose (an offer before its rescind, a RegisterAck before a
//!   RunTask) is kept. The FIFO is *full* at [`Limits::messages`] entries or [`Limits::bytes`]
//!   bytes. Each message has a [priority](Entry::priority), lowest first:
//!   1. QoS 0 messages (the master sends none today);
//!   2. requests to re-register (the agent's next message asks again);
//!   3. StatusAcks (the agent resends the update, which the master takes idempotently);
//!   4. pings (one more a `ping_interval` later; three lost in a row lose the agent);
//!   5. offers (a lost one is rescinded only after `offer_timeout`, 30 s by default);
//!   6. everything else: RunTask, KillTask, RegisterAck, the hello, task updates and the other
//!      framework events, which the protocol repeats late or not at all.
//!
//!   A request to re-register to an agent that already has one waiting is dropped at once
//!   (reason `duplicate`, which loses nothing): a flood of messages from unknown agents queues at
//!   most one request per agent.
//!
//!   A message that comes when the FIFO is full evicts the *oldest* queued message of the lowest
//!   priority below its own (reason `evicted`). If there is none, a message of priority 1 to 5 is
//!   shed (reason `queue_full`), and one of priority 6 is queued above the bound, up to the hard
//!   bound ([`Limits::hard_messages`], [`Limits::hard_bytes`]); beyond that it is shed too
//!   (reason `overflow`). Even those are recovered by the protocol, only later: a lost RunTask
//!   leaves its task STAGING until `task_retry_ms` settles it, a lost KillTask is sent again after
//!   `task_retry_ms`.
//! - **Dashboard status** (retained JSON, latest wins) is coalesced per topic: a newer payload
//!   replaces a queued one (reason `superseded`, which loses nothing), so at most one message per
//!   topic waits. When [`Limits::status_topics`] topics wait, the driver stops rendering status
//!   ([`OutQueue::status_full`]); the core keeps noting what changed (itself bounded: it falls back
//!   to a full re-render when its notes overflow), so nothing is lost, only later.
//!
//! The publisher takes protocol messages first but never more than [`STATUS_EVERY`] in a row while
//! status waits, so the dashboard is late under load, not frozen.
//!
//! Every message shed is counted by [`Kind`] and [`ShedReason`] in [`OutStats`] (shown in
//! `/metrics`).

use std::collections::{HashMap, HashSet, VecDeque};

use agent_nostd_core::topic::QoS;
use agent_nostd_core::wire::MasterMsg;
use bramble_master_core::master::{Outgoing, Transmit};
use bramble_proto::Event;

/// At most this many protocol messages are published in a row while dashboard status waits.
pub const STATUS_EVERY: u32 = 16;

/// The priority of the messages the protocol does not repeat soon: never evicted.
pub const CRITICAL: u8 = 5;

/// What a queued message is, for the policy and the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A liveness probe to an agent.
    Ping,
    /// A request that an agent re-register.
    ReRegisterRequest,
    /// The acknowledgement of an agent's status update.
    StatusAck,
    /// An offers event to a framework.
    Offers,
    /// A task launch.
    RunTask,
    /// A task kill.
    KillTask,
    /// An agent's registration accepted.
    RegisterAck,
    /// The master's retained hello.
    Hello,
    /// Any other framework event (registered, update, rescind, agent lost, error).
    FrameworkEvent,
    /// A retained dashboard status topic.
    DashboardStatus,
    /// A page of the answer to an operator's status query.
    OperatorReply,
}

impl Kind {
    /// Every kind, in the order of [`OutStats::shed`].
    pub const ALL: [Kind; 11] = [
        Kind::Ping,
        Kind::ReRegisterRequest,
        Kind::StatusAck,
        Kind::Offers,
        Kind::RunTask,
        Kind::KillTask,
        Kind::RegisterAck,
        Kind::Hello,
        Kind::FrameworkEvent,
        Kind::DashboardStatus,
        Kind::OperatorReply,
    ];

    /// The kind of a core transmit.
    pub fn of(t: &Transmit) -> Kind {
        match &t.message {
            Outgoing::Agent(m) => match m.msg {
                // A hint to an agent the master cannot make a frame for: a request to register.
                MasterMsg::Hello if t.topic != agent_nostd_core::topic::MASTER_HELLO => {
                    Kind::ReRegisterRequest
                }
                MasterMsg::Hello => Kind::Hello,
                MasterMsg::RegisterAck(_) => Kind::RegisterAck,
                MasterMsg::RunTask(_) => Kind::RunTask,
                MasterMsg::KillTask(_) => Kind::KillTask,
                MasterMsg::StatusAck(_) => Kind::StatusAck,
                MasterMsg::Ping { .. } => Kind::Ping,
                MasterMsg::ReRegisterRequest => Kind::ReRegisterRequest,
            },
            Outgoing::Framework {
                event: Event::Offers(_),
                ..
            } => Kind::Offers,
            Outgoing::Framework { .. } => Kind::FrameworkEvent,
        }
    }

    /// Whether the protocol repeats it on its own soon if it is lost (see the
    /// [module docs](self)).
    pub fn sheddable(self) -> bool {
        self.priority() < CRITICAL
    }

    /// Its priority at QoS 1 (see the [module docs](self)): the lower, the sooner shed.
    pub fn priority(self) -> u8 {
        match self {
            // The CLI that asked gives up after its timeout and says so.
            Kind::ReRegisterRequest | Kind::OperatorReply => 1,
            Kind::StatusAck => 2,
            Kind::Ping => 3,
            Kind::Offers => 4,
            _ => CRITICAL,
        }
    }

    /// Its label in `/metrics`.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Ping => "ping",
            Kind::ReRegisterRequest => "reregister_request",
            Kind::StatusAck => "status_ack",
            Kind::Offers => "offers",
            Kind::RunTask => "run_task",
            Kind::KillTask => "kill_task",
            Kind::RegisterAck => "register_ack",
            Kind::Hello => "hello",
            Kind::FrameworkEvent => "framework_event",
            Kind::DashboardStatus => "dashboard_status",
            Kind::OperatorReply => "operator_reply",
        }
    }
}

/// Why a message was shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShedReason {
    /// It came when the queue was full, and the protocol repeats it.
    QueueFull,
    /// It waited in a full queue, and a message the protocol does not repeat took its place.
    Evicted,
    /// It came when the queue was at its hard bound.
    Overflow,
    /// A newer payload of the same status topic replaced it (nothing is lost).
    Superseded,
    /// The same request to re-register already waits for the same agent (nothing is lost).
    Duplicate,
}

impl ShedReason {
    /// Every reason, in the order of [`OutStats::shed`].
    pub const ALL: [ShedReason; 5] = [
        ShedReason::QueueFull,
        ShedReason::Evicted,
        ShedReason::Overflow,
        ShedReason::Superseded,
        ShedReason::Duplicate,
    ];

    /// Its label in `/metrics`.
    pub fn label(self) -> &'static str {
        match self {
            ShedReason::QueueFull => "queue_full",
            ShedReason::Evicted => "evicted",
            ShedReason::Overflow => "overflow",
            ShedReason::Superseded => "superseded",
            ShedReason::Duplicate => "duplicate",
        }
    }
}

/// The bounds of an [`OutQueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Protocol messages queued before shedding starts.
    pub messages: usize,
    /// Protocol payload bytes queued before shedding starts.
    pub bytes: usize,
    /// Protocol messages never exceeded, whatever their kind.
    pub hard_messages: usize,
    /// Protocol payload bytes never exceeded, whatever their kind.
    pub hard_bytes: usize,
    /// Status topics waiting before the driver stops rendering status.
    pub status_topics: usize,
}

impl Default for Limits {
    /// 4,096 messages or 16 MiB (hard: 16,384 or 64 MiB); 65,536 status topics.
    fn default() -> Self {
        Limits {
            messages: 4_096,
            bytes: 16 << 20,
            hard_messages: 16_384,
            hard_bytes: 64 << 20,
            status_topics: 65_536,
        }
    }
}

/// One message ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The topic.
    pub topic: String,
    /// The QoS.
    pub qos: QoS,
    /// Whether the broker retains it.
    pub retain: bool,
    /// The encoded payload.
    pub payload: Vec<u8>,
    /// What it is.
    pub kind: Kind,
}

impl Entry {
    /// A core transmit, encoded.
    pub fn from_transmit(t: &Transmit) -> Entry {
        Entry {
            kind: Kind::of(t),
            topic: t.topic.clone(),
            qos: t.qos,
            retain: t.retain,
            payload: t.payload(),
        }
    }

    /// Its priority: 0 at QoS 0, else its kind's.
    pub fn priority(&self) -> u8 {
        if self.qos == QoS::AtMostOnce {
            0
        } else {
            self.kind.priority()
        }
    }
}

/// The counters and depths of an [`OutQueue`], for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutStats {
    /// Protocol messages waiting.
    pub protocol_depth: usize,
    /// Their payload bytes.
    pub protocol_bytes: usize,
    /// Status topics waiting.
    pub status_depth: usize,
    /// Messages shed, by [`Kind::ALL`] then [`ShedReason::ALL`].
    pub shed: [[u64; ShedReason::ALL.len()]; Kind::ALL.len()],
    /// Messages handed to the MQTT client.
    pub published: u64,
}

impl OutStats {
    /// Messages of `kind` shed for `reason`.
    pub fn shed(&self, kind: Kind, reason: ShedReason) -> u64 {
        self.shed[kind as usize][reason as usize]
    }

    /// Messages shed for any reason but `superseded` and `duplicate` (which lose nothing).
    pub fn lost(&self) -> u64 {
        Kind::ALL
            .iter()
            .flat_map(|k| {
                [
                    ShedReason::QueueFull,
                    ShedReason::Evicted,
                    ShedReason::Overflow,
                ]
                .map(|r| self.shed(*k, r))
            })
            .sum()
    }
}

/// The bounded outgoing queue; see the [module docs](self) for its policy.
#[derive(Debug, Default)]
pub struct OutQueue {
    limits: Limits,
    protocol: VecDeque<Entry>,
    bytes: usize,
    /// How many queued protocol entries there are of each priority.
    by_priority: [usize; CRITICAL as usize + 1],
    /// The topics of the queued requests to re-register.
    reregister: HashSet<String>,
    /// Status topics in the order they first waited, and their latest payloads.
    status_order: VecDeque<String>,
    status: HashMap<String, Vec<u8>>,
    /// Protocol messages taken in a row while status waited.
    run: u32,
    stats: OutStats,
}

impl OutQueue {
    /// An empty queue with `limits`.
    pub fn new(limits: Limits) -> Self {
        OutQueue {
            limits,
            ..OutQueue::default()
        }
    }

    /// Queues a protocol message, or sheds one by the policy. Returns what was shed, if anything.
    pub fn push(&mut self, entry: Entry) -> Option<(Kind, ShedReason)> {
        if entry.kind == Kind::ReRegisterRequest && self.reregister.contains(&entry.topic) {
            return Some(self.count(entry.kind, ShedReason::Duplicate));
        }
        let full = self.protocol.len() >= self.limits.messages || self.bytes >= self.limits.bytes;
        let priority = entry.priority();
        let mut shed = None;
        if full {
            if let Some(old) = self.evict_below(priority) {
                shed = Some(self.count(old.kind, ShedReason::Evicted));
            } else if priority < CRITICAL {
                return Some(self.count(entry.kind, ShedReason::QueueFull));
            } else if self.protocol.len() >= self.limits.hard_messages
                || self.bytes + entry.payload.len() > self.limits.hard_bytes
            {
                return Some(self.count(entry.kind, ShedReason::Overflow));
            }
        }
        self.bytes += entry.payload.len();
        self.by_priority[usize::from(priority)] += 1;
        if entry.kind == Kind::ReRegisterRequest {
            self.reregister.insert(entry.topic.clone());
        }
        self.protocol.push_back(entry);
        shed
    }

    /// Queues the latest payload of a status topic (empty: clear it), replacing a waiting one.
    pub fn push_status(&mut self, topic: String, payload: Vec<u8>) -> Option<(Kind, ShedReason)> {
        match self.status.get_mut(&topic) {
            Some(waiting) => {
                *waiting = payload;
                Some(self.count(Kind::DashboardStatus, ShedReason::Superseded))
            }
            None => {
                self.status_order.push_back(topic.clone());
                self.status.insert(topic, payload);
                None
            }
        }
    }

    /// Whether so many status topics wait that the driver should not render more now.
    pub fn status_full(&self) -> bool {
        self.status.len() >= self.limits.status_topics
    }

    /// The next message to publish: protocol messages first, but status at least every
    /// [`STATUS_EVERY`] messages.
    pub fn pop(&mut self) -> Option<Entry> {
        let status_turn = self.run >= STATUS_EVERY || self.protocol.is_empty();
        if !status_turn || self.status.is_empty() {
            if let Some(e) = self.protocol.pop_front() {
                self.run = if self.status.is_empty() {
                    0
                } else {
                    self.run + 1
                };
                self.forget(&e);
                self.stats.published += 1;
                return Some(e);
            }
        }
        let topic = self.status_order.pop_front()?;
        let payload = self.status.remove(&topic).unwrap_or_default();
        self.run = 0;
        self.stats.published += 1;
        Some(Entry {
            topic,
            qos: QoS::AtLeastOnce,
            retain: true,
            payload,
            kind: Kind::DashboardStatus,
        })
    }

    /// The counters and depths.
    pub fn stats(&self) -> OutStats {
        OutStats {
            protocol_depth: self.protocol.len(),
            protocol_bytes: self.bytes,
            status_depth: self.status.len(),
            ..self.stats
        }
    }

    /// Removes the oldest queued protocol message of the lowest priority below `priority`.
    fn evict_below(&mut self, priority: u8) -> Option<Entry> {
        let lowest = (0..priority).find(|p| self.by_priority[usize::from(*p)] > 0)?;
        let at = self.protocol.iter().position(|e| e.priority() == lowest)?;
        let e = self.protocol.remove(at)?;
        self.forget(&e);
        Some(e)
    }

    /// `e` left the protocol FIFO.
    fn forget(&mut self, e: &Entry) {
        self.bytes -= e.payload.len();
        self.by_priority[usize::from(e.priority())] -= 1;
        if e.kind == Kind::ReRegisterRequest {
            self.reregister.remove(&e.topic);
        }
    }

    fn count(&mut self, kind: Kind, reason: ShedReason) -> (Kind, ShedReason) {
        self.stats.shed[kind as usize][reason as usize] += 1;
        (kind, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: Kind, n: usize) -> Entry {
        Entry {
            topic: format!("t/{n}"),
            qos: QoS::AtLeastOnce,
            retain: false,
            payload: vec![0; 10],
            kind,
        }
    }

    fn small() -> Limits {
        Limits {
            messages: 4,
            bytes: 1_000,
            hard_messages: 6,
            hard_bytes: 10_000,
            status_topics: 2,
        }
    }

    fn drain(q: &mut OutQueue) -> Vec<(Kind, String)> {
        std::iter::from_fn(|| q.pop().map(|e| (e.kind, e.topic))).collect()
    }

    #[test]
    fn a_full_queue_sheds_new_pings_and_keeps_the_order_of_the_rest() {
        let mut q = OutQueue::new(small());
        for n in 0..4 {
            assert_eq!(q.push(entry(Kind::RunTask, n)), None);
        }
        assert_eq!(
            q.push(entry(Kind::Ping, 9)),
            Some((Kind::Ping, ShedReason::QueueFull))
        );
        let topics: Vec<_> = drain(&mut q).into_iter().map(|(_, t)| t).collect();
        assert_eq!(topics, ["t/0", "t/1", "t/2", "t/3"]);
        assert_eq!(q.stats().shed(Kind::Ping, ShedReason::QueueFull), 1);
        assert_eq!(q.stats().lost(), 1);
    }

    #[test]
    fn a_launch_into_a_full_queue_evicts_the_oldest_message_of_the_lowest_priority() {
        let mut q = OutQueue::new(small());
        q.push(entry(Kind::Offers, 0));
        q.push(entry(Kind::StatusAck, 1));
        q.push(entry(Kind::StatusAck, 2));
        q.push(entry(Kind::KillTask, 3));
        let mut qos0 = entry(Kind::RegisterAck, 4);
        qos0.qos = QoS::AtMostOnce;
        assert_eq!(
            q.push(qos0),
            Some((Kind::RegisterAck, ShedReason::QueueFull)),
            "a QoS 0 message is sheddable whatever its kind"
        );
        assert_eq!(
            q.push(entry(Kind::RunTask, 5)),
            Some((Kind::StatusAck, ShedReason::Evicted))
        );
        let topics: Vec<_> = drain(&mut q).into_iter().map(|(_, t)| t).collect();
        assert_eq!(topics, ["t/0", "t/2", "t/3", "t/5"]);
    }

    #[test]
    fn offers_and_pings_into_a_queue_full_of_reregister_requests_take_their_place() {
        let mut q = OutQueue::new(small());
        for n in 0..4 {
            q.push(entry(Kind::ReRegisterRequest, n));
        }
        assert_eq!(
            q.push(entry(Kind::ReRegisterRequest, 4)),
            Some((Kind::ReRegisterRequest, ShedReason::QueueFull))
        );
        assert_eq!(
            q.push(entry(Kind::Offers, 5)),
            Some((Kind::ReRegisterRequest, ShedReason::Evicted))
        );
        assert_eq!(
            q.push(entry(Kind::Ping, 6)),
            Some((Kind::ReRegisterRequest, ShedReason::Evicted))
        );
        assert_eq!(
            q.push(entry(Kind::Ping, 7)),
            Some((Kind::ReRegisterRequest, ShedReason::Evicted))
        );
        assert_eq!(
            q.push(entry(Kind::Ping, 8)),
            Some((Kind::ReRegisterRequest, ShedReason::Evicted))
        );
        assert_eq!(
            q.push(entry(Kind::Ping, 9)),
            Some((Kind::Ping, ShedReason::QueueFull)),
            "a ping does not evict another ping"
        );
        assert_eq!(
            q.push(entry(Kind::Offers, 10)),
            Some((Kind::Ping, ShedReason::Evicted))
        );
        let kinds: Vec<_> = drain(&mut q).into_iter().map(|(k, _)| k).collect();
        assert_eq!(kinds, [Kind::Offers, Kind::Ping, Kind::Ping, Kind::Offers]);
    }

    #[test]
    fn launches_go_above_the_bound_up_to_the_hard_bound_and_are_then_shed() {
        let mut q = OutQueue::new(small());
        let shed: Vec<_> = (0..8).map(|n| q.push(entry(Kind::RunTask, n))).collect();
        assert_eq!(shed[..6], [None; 6]);
        assert_eq!(shed[6..], [Some((Kind::RunTask, ShedReason::Overflow)); 2]);
        assert_eq!(q.stats().protocol_depth, 6);
        assert_eq!(q.stats().protocol_bytes, 60);
    }

    #[test]
    fn a_second_request_to_re_register_the_same_agent_is_dropped_while_the_first_waits() {
        let mut q = OutQueue::new(small());
        assert_eq!(q.push(entry(Kind::ReRegisterRequest, 1)), None);
        assert_eq!(
            q.push(entry(Kind::ReRegisterRequest, 1)),
            Some((Kind::ReRegisterRequest, ShedReason::Duplicate))
        );
        assert_eq!(q.push(entry(Kind::ReRegisterRequest, 2)), None);
        assert_eq!(q.pop().unwrap().topic, "t/1");
        assert_eq!(
            q.push(entry(Kind::ReRegisterRequest, 1)),
            None,
            "once sent, it may be asked again"
        );
        assert_eq!(q.stats().protocol_depth, 2);
        assert_eq!(q.stats().lost(), 0);
    }

    #[test]
    fn the_byte_bound_fills_the_queue_like_the_message_bound() {
        let mut q = OutQueue::new(Limits {
            bytes: 25,
            ..small()
        });
        for n in 0..3 {
            q.push(entry(Kind::Offers, n));
        }
        assert_eq!(
            q.push(entry(Kind::Offers, 3)),
            Some((Kind::Offers, ShedReason::QueueFull))
        );
        assert_eq!(q.stats().protocol_depth, 3);
    }

    #[test]
    fn status_is_coalesced_per_topic_and_the_latest_payload_wins() {
        let mut q = OutQueue::new(small());
        assert_eq!(q.push_status("s/a".into(), b"1".to_vec()), None);
        assert!(!q.status_full());
        q.push_status("s/b".into(), b"1".to_vec());
        assert!(q.status_full());
        assert_eq!(
            q.push_status("s/a".into(), b"2".to_vec()),
            Some((Kind::DashboardStatus, ShedReason::Superseded))
        );
        let a = q.pop().unwrap();
        assert_eq!((a.topic.as_str(), a.payload.as_slice()), ("s/a", &b"2"[..]));
        assert!(a.retain);
        assert_eq!(q.pop().unwrap().topic, "s/b");
        assert_eq!(q.pop(), None);
        assert_eq!(q.stats().lost(), 0, "superseded status loses nothing");
    }

    #[test]
    fn status_waits_behind_at_most_sixteen_protocol_messages() {
        let mut q = OutQueue::new(Limits {
            messages: 100,
            hard_messages: 100,
            ..small()
        });
        for n in 0..40 {
            q.push(entry(Kind::RunTask, n));
        }
        q.push_status("s/a".into(), b"1".to_vec());
        let kinds: Vec<_> = drain(&mut q).into_iter().map(|(k, _)| k).collect();
        let at = kinds.iter().position(|k| *k == Kind::DashboardStatus);
        assert_eq!(at, Some(STATUS_EVERY as usize));
        assert_eq!(kinds.len(), 41);
    }
}
