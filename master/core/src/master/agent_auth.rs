//! Proof that an agent said it: the agents' message keys, each agent's session (its boot and the
//! frame numbers both ways), the checks every agent frame passes before the core reads it, and the
//! sealing of every frame the master sends an agent. See PROTOCOL.md, "Authenticated frames".

use std::collections::HashMap;
use std::fmt;

use agent_nostd_core::auth::MessageKey;
use agent_nostd_core::frame::{Binding, Direction, Frame, FrameError, ReplayWindow, WILL_SEQ};
use agent_nostd_core::wire::AgentMsg;

/// The message keys of the cluster's principals: which key an agent's frames must be sealed with
/// (principal `agent-NAME`'s for the agent whose id is NAME, and, when the cluster runs without
/// credentials (`bramble up` on loopback), the [anonymous key](MessageKey::anonymous) for agents
/// without one of their own), and the frameworks' and operators' keys, which seal their calls and
/// sign operator commands.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PrincipalKeys {
    keys: HashMap<String, MessageKey>,
    /// The operators' keys, by name (principal `operator-NAME`), for signed operator commands
    /// and `bramble run`'s calls.
    operators: HashMap<String, MessageKey>,
    /// The frameworks' keys, by name (principal `framework-NAME`), for their calls.
    frameworks: HashMap<String, MessageKey>,
    /// The anonymous key, when principals without a key of their own may use it (computed once:
    /// it is looked up for every frame of an open cluster).
    anonymous: Option<MessageKey>,
}

impl PrincipalKeys {
    /// Every agent may use the anonymous key (a cluster without credentials).
    pub fn anonymous() -> Self {
        PrincipalKeys {
            keys: HashMap::new(),
            operators: HashMap::new(),
            frameworks: HashMap::new(),
            anonymous: Some(MessageKey::anonymous()),
        }
    }

    /// Only these agents, each with its own key.
    pub fn only(keys: impl IntoIterator<Item = (String, MessageKey)>) -> Self {
        PrincipalKeys {
            keys: keys.into_iter().collect(),
            operators: HashMap::new(),
            frameworks: HashMap::new(),
            anonymous: None,
        }
    }

    /// Gives agent `agent_id` its own key.
    pub fn insert(&mut self, agent_id: &str, key: MessageKey) {
        self.keys.insert(agent_id.to_owned(), key);
    }

    /// Gives operator `name` (principal `operator-NAME`) its key.
    pub fn insert_operator(&mut self, name: &str, key: MessageKey) {
        self.operators.insert(name.to_owned(), key);
    }

    /// The key operator `name` signs its commands with, if it is one (any name may use the
    /// anonymous key when anonymous principals are allowed).
    pub fn operator_key(&self, name: &str) -> Option<MessageKey> {
        match self.operators.get(name) {
            Some(k) => Some(k.clone()),
            None => self.anonymous.clone(),
        }
    }

    /// Gives framework `name` (principal `framework-NAME`) its key.
    pub fn insert_framework(&mut self, name: &str, key: MessageKey) {
        self.frameworks.insert(name.to_owned(), key);
    }

    /// The key a framework or operator principal seals its calls with, if it is one of the
    /// cluster's (any, with the anonymous key, when anonymous principals are allowed).
    pub fn principal_key(
        &self,
        principal: &agent_nostd_core::auth::Principal,
    ) -> Option<MessageKey> {
        use agent_nostd_core::auth::PrincipalKind;
        let own = match principal.kind() {
            PrincipalKind::Framework => self.frameworks.get(principal.name()),
            PrincipalKind::Operator => self.operators.get(principal.name()),
            _ => None,
        };
        match own {
            Some(k) => Some(k.clone()),
            None => self.anonymous.clone(),
        }
    }

    /// Whether principals without a key of their own may use the anonymous one.
    pub fn allows_anonymous(&self) -> bool {
        self.anonymous.is_some()
    }

    /// Lets agents without a key of their own use the anonymous one.
    pub fn allowing_anonymous(mut self, allow: bool) -> Self {
        self.anonymous = allow.then(MessageKey::anonymous);
        self
    }

    /// The key agent `agent_id` seals with, if it may speak at all.
    pub fn key(&self, agent_id: &str) -> Option<MessageKey> {
        match self.keys.get(agent_id) {
            Some(k) => Some(k.clone()),
            None => self.anonymous.clone(),
        }
    }

    /// How many agents have a key of their own.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no agent has a key of its own.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Why an agent frame was dropped before it was read; each is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameDrop {
    /// A whole message without a trailer: version 3 speaks only in frames.
    Unframed,
    /// No key for this agent (not a principal of the cluster).
    UnknownPrincipal,
    /// No session for this agent: it has not registered with this master in its current boot.
    UnknownBoot,
    /// A registration from a boot before the one the master holds (a replay of an old one).
    OldBoot,
    /// The tag does not verify: forged, altered, or a registration whose number and counter
    /// disagree.
    BadTag,
    /// A number taken before.
    Replayed,
    /// A number below the replay window.
    TooOld,
    /// A framework's registration made more than the allowed time from the master's clock.
    Stale,
}

impl FrameDrop {
    /// Every reason, in the order `/metrics` lists them.
    pub const ALL: [FrameDrop; 8] = [
        FrameDrop::Unframed,
        FrameDrop::UnknownPrincipal,
        FrameDrop::UnknownBoot,
        FrameDrop::OldBoot,
        FrameDrop::BadTag,
        FrameDrop::Replayed,
        FrameDrop::TooOld,
        FrameDrop::Stale,
    ];

    /// Its `reason` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            FrameDrop::Unframed => "unframed",
            FrameDrop::UnknownPrincipal => "unknown_principal",
            FrameDrop::UnknownBoot => "unknown_boot",
            FrameDrop::OldBoot => "old_boot",
            FrameDrop::BadTag => "bad_tag",
            FrameDrop::Replayed => "replayed",
            FrameDrop::TooOld => "too_old",
            FrameDrop::Stale => "stale",
        }
    }

    fn from_window(e: FrameError) -> FrameDrop {
        match e {
            FrameError::TooOld => FrameDrop::TooOld,
            _ => FrameDrop::Replayed,
        }
    }
}

impl fmt::Display for FrameDrop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameDrop::Unframed => "not a frame (unauthenticated)",
            FrameDrop::UnknownPrincipal => "no key for this agent",
            FrameDrop::UnknownBoot => "no session for this agent's boot (not registered here)",
            FrameDrop::OldBoot => "a registration from an earlier boot (replayed)",
            FrameDrop::BadTag => "the tag does not verify (forged or altered)",
            FrameDrop::Replayed => "a frame number taken before (replayed)",
            FrameDrop::TooOld => "a frame number below the replay window",
            FrameDrop::Stale => {
                "a registration made too long ago or in the future (check the clocks)"
            }
        })
    }
}

/// One agent's boot as this master knows it.
#[derive(Debug, Clone)]
struct Session {
    boot: u32,
    up: ReplayWindow,
    next_down: u32,
}

/// What sealing a frame for an agent takes, captured when the message is queued.
#[derive(Debug, Clone, PartialEq)]
pub struct Seal {
    /// The agent's key.
    pub key: MessageKey,
    /// The agent's boot.
    pub boot: u32,
    /// The frame's number.
    pub seq: u32,
}

/// The keys and every agent's session. Sessions outlive the agents' records (a forgotten agent
/// that comes back is still recognised), up to `max_sessions`.
#[derive(Debug, Clone)]
pub(super) struct AgentAuth {
    keys: PrincipalKeys,
    sessions: HashMap<String, Session>,
    max_sessions: usize,
}

impl AgentAuth {
    pub(super) fn new(keys: PrincipalKeys, max_sessions: usize) -> Self {
        AgentAuth {
            keys,
            sessions: HashMap::new(),
            max_sessions,
        }
    }

    pub(super) fn set_keys(&mut self, keys: PrincipalKeys) {
        // An agent whose key changed must register again under the new one.
        self.sessions
            .retain(|id, _| keys.key(id).is_some() && keys.key(id) == self.keys.key(id));
        self.keys = keys;
    }

    pub(super) fn keys(&self) -> &PrincipalKeys {
        &self.keys
    }

    /// Checks `frame`, whose message is `msg`, from agent `agent_id`, and takes its number.
    /// `downlink_floor` is the downlink number a re-registration says it took from this master
    /// (0 otherwise): a new session numbers above it.
    pub(super) fn open(
        &mut self,
        agent_id: &str,
        frame: &Frame<'_>,
        msg: &AgentMsg,
        downlink_floor: u32,
    ) -> Result<(), FrameDrop> {
        let key = self.keys.key(agent_id).ok_or(FrameDrop::UnknownPrincipal)?;
        let binding = |boot| Binding {
            direction: Direction::Up,
            agent_id,
            boot,
        };
        let info = match msg {
            AgentMsg::Register(info) => Some(info),
            AgentMsg::ReRegister(r) => Some(&r.info),
            _ => None,
        };
        if let Some(info) = info {
            // A registration states its boot and whole number, so any master can check it.
            if info.seq as u16 != frame.counter as u16
                || !frame.verifies(&key, &binding(info.boot), info.seq)
            {
                return Err(FrameDrop::BadTag);
            }
            match self.sessions.get_mut(agent_id) {
                Some(s) if info.boot < s.boot => return Err(FrameDrop::OldBoot),
                Some(s) if info.boot == s.boot => {
                    s.up.check(info.seq).map_err(FrameDrop::from_window)?;
                    s.up.take(info.seq);
                    s.next_down = s.next_down.max(downlink_floor.saturating_add(1));
                }
                _ => {
                    if !self.sessions.contains_key(agent_id)
                        && self.sessions.len() >= self.max_sessions
                    {
                        return Err(FrameDrop::UnknownBoot);
                    }
                    let mut up = ReplayWindow::new();
                    up.take(info.seq);
                    let next_down = downlink_floor.saturating_add(1).max(1);
                    let session = Session {
                        boot: info.boot,
                        up,
                        next_down,
                    };
                    self.sessions.insert(agent_id.to_owned(), session);
                }
            }
            return Ok(());
        }
        let s = self
            .sessions
            .get_mut(agent_id)
            .ok_or(FrameDrop::UnknownBoot)?;
        if let AgentMsg::Gone { .. } = msg {
            // The will is sealed when the agent connects and published whenever the connection
            // drops: it never takes a number in turn (the caller checks its connection).
            return if frame.verifies(&key, &binding(s.boot), WILL_SEQ) {
                Ok(())
            } else {
                Err(FrameDrop::BadTag)
            };
        }
        let seq = frame.seq(s.up.highest());
        if !frame.verifies(&key, &binding(s.boot), seq) {
            return Err(FrameDrop::BadTag);
        }
        s.up.check(seq).map_err(FrameDrop::from_window)?;
        s.up.take(seq);
        Ok(())
    }

    /// The seal of the next frame to agent `agent_id`, or `None` when the master has no session
    /// with it (it cannot make a frame the agent would take).
    pub(super) fn next_seal(&mut self, agent_id: &str) -> Option<Seal> {
        let key = self.keys.key(agent_id)?;
        let s = self.sessions.get_mut(agent_id)?;
        let seq = s.next_down;
        s.next_down = s.next_down.saturating_add(1);
        Some(Seal {
            key,
            boot: s.boot,
            seq,
        })
    }

    /// Whether agent `agent_id` may speak at all (it has a key).
    pub(super) fn is_principal(&self, agent_id: &str) -> bool {
        self.keys.key(agent_id).is_some()
    }
}

/// Agent frames dropped before they were read, by [`FrameDrop`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameDrops([u64; FrameDrop::ALL.len()]);

impl FrameDrops {
    /// How many were dropped for `reason`.
    pub fn get(&self, reason: FrameDrop) -> u64 {
        self.0[reason as usize]
    }

    /// How many were dropped in all.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    pub(super) fn count(&mut self, reason: FrameDrop) {
        self.0[reason as usize] += 1;
    }
}
