//! [`Election`]: which of several masters leads, decided through the broker, sans-IO.
//!
//! MQTT 3.1.1 has no compare-and-set, so the election does not try to make two leaders impossible;
//! the **epoch** makes a second leader harmless. Every epoch is `term << 16 | tiebreak` (see
//! [`agent_nostd_core::wire::epoch`]), a leader's term is above every term it has heard of, and
//! agents act only on the newest epoch they have obeyed (they keep it in their checkpoint). So a
//! deposed or paused leader's commands are dropped by every agent that has seen its successor, and
//! the election only has to converge on one leader quickly.
//!
//! # How
//!
//! - Every master publishes a heartbeat ([`Peer`], JSON) on `bramble/v1/master/peers/{name}`
//!   every [`ElectionConfig::heartbeat_ms`], and its MQTT last will there says it is `gone`.
//! - A master that hears no leader for [`ElectionConfig::lease_ms`] (or hears its will) is a
//!   candidate. Candidates are ranked by (standby, name) among the masters heard within the lease;
//!   the one at rank `r` claims after `r` heartbeats more, unless a leader appeared meanwhile.
//! - A claim takes the term after the highest it has heard of: the retained hello, heartbeats, and
//!   the epochs agents say they obey ([`Election::handle_newer_epoch`]).
//! - A leader that hears a leader with a higher epoch steps down ([`ElectionEvent::Follow`]). Two
//!   leaders with the same epoch (two names with the same tiebreak): the one with the larger name
//!   claims the next term, the other steps down.
//! - An epoch an agent obeys that no live master holds belongs to a master the broker forgot (a
//!   broker restart loses retained messages): the leader raises its epoch above it, once a lease
//!   has passed without that master's heartbeat (a leader that has just claimed is heard within
//!   it, and raising at once would start a war of raises between two live leaders).
//! - A master that has just connected waits [`ElectionConfig::settle_ms`] (a standby a whole lease)
//!   before it may claim, so it hears the retained hello and a live leader's heartbeat first.
//!
//! # Call order
//!
//! As for the other cores: feed `handle_*`, then drain [`Election::poll_transmit`] and
//! [`Election::poll_event`], and arm a timer at [`Election::poll_timeout`].

use std::collections::{BTreeMap, VecDeque};

use agent_nostd_core::wire::{epoch as make_epoch, epoch_term};
use serde::{Deserialize, Serialize};

/// The prefix of the peer topics: `bramble/v1/master/peers/{name}`.
pub const PEERS_PREFIX: &str = "bramble/v1/master/peers/";
/// The filter a master subscribes to for its peers.
pub const PEERS_FILTER: &str = "bramble/v1/master/peers/+";
/// The longest peer payload taken; anything larger is dropped unread.
pub const MAX_PEER_PAYLOAD: usize = 512;
/// How many other masters are remembered at once; a heartbeat from one more is dropped (counted)
/// until one is forgotten, [`FORGET_AFTER_LEASES`] leases after it was last heard.
pub const MAX_PEERS: usize = 64;
/// A master not heard for this many leases is forgotten.
pub const FORGET_AFTER_LEASES: u64 = 10;

/// The timings of an election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElectionConfig {
    /// Between heartbeats, in ms.
    pub heartbeat_ms: u64,
    /// A master not heard from for this long is gone, in ms.
    pub lease_ms: u64,
    /// How long a master that is not a standby listens after connecting before it may claim, in ms.
    pub settle_ms: u64,
}

impl Default for ElectionConfig {
    /// Heartbeats every second, a 3 s lease, 500 ms to settle.
    fn default() -> Self {
        ElectionConfig {
            heartbeat_ms: 1_000,
            lease_ms: 3_000,
            settle_ms: 500,
        }
    }
}

/// What a master says about itself on its peer topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Its name (also the last segment of its topic).
    pub name: String,
    /// What it does now.
    pub role: PeerRole,
    /// Its epoch when leading, else the highest epoch it knows.
    pub epoch: u64,
    /// Whether it was started as a standby (it ranks after masters that were not).
    pub standby: bool,
}

/// A master's role, as its heartbeat says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerRole {
    /// It leads under its epoch.
    Leader,
    /// It follows, ready to take over.
    Follower,
    /// Its connection dropped (its last will) or it stopped.
    Gone,
}

/// What the driver must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionEvent {
    /// Lead under `epoch`: start a [`MasterCore`](crate::MasterCore) with it, or, when already
    /// leading, raise the running core's epoch to it.
    Lead {
        /// The epoch to lead under.
        epoch: u64,
    },
    /// Stop leading: a newer leader is up. Drop the core without announcing anything.
    Follow {
        /// The newer leader's epoch.
        newer: u64,
    },
}

/// A message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTransmit {
    /// The topic.
    pub topic: String,
    /// The JSON payload.
    pub payload: Vec<u8>,
}

/// Why a peer payload was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// The topic is not a peer topic.
    #[error("not a peer topic")]
    NotAPeerTopic,
    /// Larger than [`MAX_PEER_PAYLOAD`].
    #[error("peer payload of {0} bytes is too large")]
    TooLarge(usize),
    /// Not a [`Peer`] in JSON.
    #[error("peer payload is not valid: {0}")]
    Malformed(String),
    /// The name in the payload is not the topic's.
    #[error("peer payload names {payload:?} on the topic of {topic:?}")]
    NameMismatch {
        /// The name in the topic.
        topic: String,
        /// The name in the payload.
        payload: String,
    },
}

#[derive(Debug, Clone, Copy)]
struct Heard {
    role: PeerRole,
    epoch: u64,
    standby: bool,
    at: u64,
}

/// Counters, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ElectionStats {
    /// Times this master took the lead (raises not counted).
    pub claims: u64,
    /// Times it raised its epoch while leading.
    pub raises: u64,
    /// Times it stepped down.
    pub step_downs: u64,
    /// Peer payloads dropped (malformed, too large, misnamed).
    pub bad_peer_messages: u64,
    /// Heartbeats of a new master dropped because [`MAX_PEERS`] are remembered already.
    pub peers_over_limit: u64,
}

/// One master's view of the election. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Election {
    config: ElectionConfig,
    name: String,
    tiebreak: u16,
    standby: bool,
    /// `Some(epoch)` while leading.
    leading: Option<u64>,
    /// The highest epoch heard of from anyone (own included).
    highest: u64,
    peers: BTreeMap<String, Heard>,
    /// Since when connected, or `None` while not.
    connected_since: Option<u64>,
    next_heartbeat: u64,
    heartbeat_due: bool,
    /// An epoch above ours that agents obey, and when to raise above it unless its leader is
    /// heard meanwhile.
    pending_raise: Option<(u64, u64)>,
    events: VecDeque<ElectionEvent>,
    stats: ElectionStats,
}

impl Election {
    /// The election of the master called `name` (a valid topic segment: the driver checks), a
    /// standby or not.
    pub fn new(config: ElectionConfig, name: &str, standby: bool) -> Self {
        Election {
            config,
            name: name.to_owned(),
            tiebreak: tiebreak(name),
            standby,
            leading: None,
            highest: 0,
            peers: BTreeMap::new(),
            connected_since: None,
            next_heartbeat: 0,
            heartbeat_due: false,
            pending_raise: None,
            events: VecDeque::new(),
            stats: ElectionStats::default(),
        }
    }

    /// This master's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The epoch this master leads under, or `None` when it follows.
    pub fn leading(&self) -> Option<u64> {
        self.leading
    }

    /// The counters.
    pub fn stats(&self) -> &ElectionStats {
        &self.stats
    }

    /// The masters heard within the lease (this one excluded), as (name, role, epoch).
    pub fn peers(&self, now: u64) -> impl Iterator<Item = (&str, PeerRole, u64)> {
        self.peers
            .iter()
            .filter(move |(_, h)| self.alive(h, now))
            .map(|(n, h)| (n.as_str(), h.role, h.epoch))
    }

    /// The other masters ready to take over (heard within the lease, following), as (name,
    /// standby).
    pub fn followers(&self, now: u64) -> impl Iterator<Item = (&str, bool)> {
        self.peers
            .iter()
            .filter(move |(_, h)| h.role == PeerRole::Follower && self.alive(h, now))
            .map(|(n, h)| (n.as_str(), h.standby))
    }

    /// This master's topic.
    pub fn topic(&self) -> String {
        format!("{PEERS_PREFIX}{}", self.name)
    }

    /// The MQTT last will for the election's connection: `gone` on its topic.
    pub fn last_will(&self) -> PeerTransmit {
        self.message(PeerRole::Gone)
    }

    /// The connection is up: heartbeats start, and claiming waits for the settle time.
    pub fn handle_connected(&mut self, now: u64) {
        self.connected_since = Some(now);
        self.heartbeat_due = true;
        self.next_heartbeat = now;
    }

    /// The connection is down: nothing is claimed until it is back. A leader keeps leading (its
    /// agents are cut off too, and the epoch fences it should another master take over).
    pub fn handle_disconnected(&mut self, _now: u64) {
        self.connected_since = None;
    }

    /// The retained hello (or any master → agent envelope) showed `epoch`.
    pub fn handle_hello(&mut self, _now: u64, epoch: u64) {
        self.hear_epoch(epoch, None);
    }

    /// The running core reports that an agent obeys `epoch`, above ours
    /// ([`MasterCore::newer_epoch`](crate::MasterCore::newer_epoch)).
    pub fn handle_newer_epoch(&mut self, now: u64, epoch: u64) {
        self.highest = self.highest.max(epoch);
        let Some(own) = self.leading else { return };
        if epoch <= own {
            return;
        }
        if self.live_leader_at_least(now, epoch) {
            self.step_down(epoch);
        } else {
            // A master the broker forgot, or one that has just taken the lead and whose
            // heartbeat is on its way: raising at once could start a war of raises between two
            // live leaders. Wait a lease for its heartbeat; lead on above it if none comes.
            let at = self
                .pending_raise
                .map_or(now + self.config.lease_ms, |(_, at)| at);
            let epoch = self.pending_raise.map_or(epoch, |(e, _)| e.max(epoch));
            self.pending_raise = Some((epoch, at));
        }
    }

    /// A payload on a peer topic.
    pub fn handle_peer(&mut self, now: u64, topic: &str, payload: &[u8]) -> Result<(), PeerError> {
        let result = self.parse_peer(topic, payload);
        let peer = match result {
            Ok(p) => p,
            Err(e) => {
                self.stats.bad_peer_messages += 1;
                return Err(e);
            }
        };
        if peer.name == self.name {
            return Ok(()); // our own heartbeat, or our own will from an older connection
        }
        if self.peers.len() >= MAX_PEERS && !self.peers.contains_key(&peer.name) {
            self.stats.peers_over_limit += 1;
            return Ok(());
        }
        self.peers.insert(
            peer.name.clone(),
            Heard {
                role: peer.role,
                epoch: peer.epoch,
                standby: peer.standby,
                at: now,
            },
        );
        match peer.role {
            PeerRole::Leader => self.hear_epoch(peer.epoch, Some(&peer.name)),
            PeerRole::Follower => self.highest = self.highest.max(peer.epoch),
            PeerRole::Gone => {}
        }
        Ok(())
    }

    /// Time passed: heartbeats, claims and raises; masters long silent are forgotten.
    pub fn handle_timeout(&mut self, now: u64) {
        let forget = self.config.lease_ms * FORGET_AFTER_LEASES;
        self.peers.retain(|_, h| now < h.at + forget);
        if self.connected_since.is_some() && now >= self.next_heartbeat {
            self.heartbeat_due = true;
        }
        if let Some((epoch, _)) = self.pending_raise.filter(|(_, at)| now >= *at) {
            self.pending_raise = None;
            match self.leading {
                Some(own) if epoch > own => {
                    if self.live_leader_at_least(now, epoch) {
                        self.step_down(epoch);
                    } else {
                        self.raise();
                    }
                }
                _ => {}
            }
        }
        if self.leading.is_none() && self.may_claim(now) {
            let epoch = make_epoch(epoch_term(self.highest) + 1, self.tiebreak);
            self.leading = Some(epoch);
            self.highest = epoch;
            self.stats.claims += 1;
            self.heartbeat_due = true;
            self.events.push_back(ElectionEvent::Lead { epoch });
        }
    }

    /// The next heartbeat to publish.
    pub fn poll_transmit(&mut self, now: u64) -> Option<PeerTransmit> {
        if !self.heartbeat_due || self.connected_since.is_none() {
            return None;
        }
        self.heartbeat_due = false;
        self.next_heartbeat = now + self.config.heartbeat_ms;
        let role = if self.leading.is_some() {
            PeerRole::Leader
        } else {
            PeerRole::Follower
        };
        Some(self.message(role))
    }

    /// What the driver must do next.
    pub fn poll_event(&mut self) -> Option<ElectionEvent> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    pub fn poll_timeout(&self, now: u64) -> Option<u64> {
        let since = self.connected_since?;
        let mut next = self.next_heartbeat;
        if self.leading.is_none() {
            next = next.min(self.claim_at(now, since).max(now + 1));
        }
        if let Some((_, at)) = self.pending_raise {
            next = next.min(at);
        }
        Some(next)
    }

    // ----- internals -----

    fn message(&self, role: PeerRole) -> PeerTransmit {
        let peer = Peer {
            name: self.name.clone(),
            role,
            epoch: self.leading.unwrap_or(self.highest),
            standby: self.standby,
        };
        PeerTransmit {
            topic: self.topic(),
            payload: serde_json::to_vec(&peer).unwrap_or_default(),
        }
    }

    fn parse_peer(&self, topic: &str, payload: &[u8]) -> Result<Peer, PeerError> {
        let name = topic
            .strip_prefix(PEERS_PREFIX)
            .filter(|n| !n.is_empty() && !n.contains('/'))
            .ok_or(PeerError::NotAPeerTopic)?;
        if payload.len() > MAX_PEER_PAYLOAD {
            return Err(PeerError::TooLarge(payload.len()));
        }
        let peer: Peer =
            serde_json::from_slice(payload).map_err(|e| PeerError::Malformed(e.to_string()))?;
        if peer.name != name {
            return Err(PeerError::NameMismatch {
                topic: name.to_owned(),
                payload: peer.name,
            });
        }
        Ok(peer)
    }

    /// A leader (`from`, or unknown for a hello) showed `epoch`.
    fn hear_epoch(&mut self, epoch: u64, from: Option<&str>) {
        self.highest = self.highest.max(epoch);
        let Some(own) = self.leading else { return };
        match from {
            Some(name) if epoch == own && name != self.name => {
                // Two names with the same tiebreak claimed the same term: the larger name leads
                // on under the next term, the other steps down.
                if name > self.name.as_str() {
                    self.step_down(epoch);
                } else {
                    self.raise();
                }
            }
            Some(_) if epoch > own => self.step_down(epoch),
            // A newer hello with no live leader behind it yet: its leader's heartbeat decides.
            _ => {}
        }
    }

    /// Leads on under the term after every term heard of.
    fn raise(&mut self) {
        let raised = make_epoch(epoch_term(self.highest) + 1, self.tiebreak);
        self.leading = Some(raised);
        self.highest = raised;
        self.stats.raises += 1;
        self.heartbeat_due = true;
        self.events.push_back(ElectionEvent::Lead { epoch: raised });
    }

    fn step_down(&mut self, newer: u64) {
        self.leading = None;
        self.pending_raise = None;
        self.stats.step_downs += 1;
        self.heartbeat_due = true;
        self.events.push_back(ElectionEvent::Follow { newer });
    }

    fn alive(&self, h: &Heard, now: u64) -> bool {
        h.role != PeerRole::Gone && now < h.at + self.config.lease_ms
    }

    fn live_leader_at_least(&self, now: u64, epoch: u64) -> bool {
        self.peers
            .values()
            .any(|h| h.role == PeerRole::Leader && h.epoch >= epoch && self.alive(h, now))
    }

    fn live_leader(&self, now: u64) -> bool {
        self.peers
            .values()
            .any(|h| h.role == PeerRole::Leader && self.alive(h, now))
    }

    /// This master's rank among the live candidates: 0 claims first.
    fn rank(&self, now: u64) -> u64 {
        let me = (self.standby, self.name.as_str());
        self.peers
            .iter()
            .filter(|(_, h)| h.role == PeerRole::Follower && self.alive(h, now))
            .filter(|(n, h)| (h.standby, n.as_str()) < me)
            .count() as u64
    }

    /// When this follower may claim: once it has settled, the lease of every leader it heard has
    /// run out (a will ends it at once), and then its rank's number of heartbeats.
    fn claim_at(&self, now: u64, since: u64) -> u64 {
        let settle = if self.standby {
            self.config.lease_ms
        } else {
            self.config.settle_ms
        };
        let leaders_gone = self
            .peers
            .values()
            .filter_map(|h| match h.role {
                PeerRole::Gone => Some(h.at),
                PeerRole::Leader => Some(h.at + self.config.lease_ms),
                PeerRole::Follower => None,
            })
            .max()
            .unwrap_or(0);
        (since + settle).max(leaders_gone) + self.rank(now) * self.config.heartbeat_ms
    }

    fn may_claim(&self, now: u64) -> bool {
        match self.connected_since {
            Some(since) => !self.live_leader(now) && now >= self.claim_at(now, since),
            None => false,
        }
    }
}

/// The low 16 bits of an epoch for the master called `name`: FNV-1a, folded.
pub fn tiebreak(name: &str) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    ((h >> 16) ^ (h & 0xFFFF)) as u16
}
