//! Proof that a framework said it: every call is a frame (see [`bramble_proto::frame`]) checked
//! with the key of the principal its session belongs to, and every event the master sends a
//! framework is sealed in that session. A registration opens the session: it names a principal
//! that may speak for its client (`framework-{client}`, or an operator for `bramble run`'s
//! `bramble-run-*` clients), is made within [`FRESH_SECS`] of the master's clock, and is taken
//! once.

use std::collections::{HashMap, VecDeque};

use agent_nostd_core::auth::{MessageKey, Principal, PrincipalKind, TAG_LEN};
use agent_nostd_core::frame::{Frame, ReplayWindow, WILL_SEQ};
use bramble_proto::frame::{binding, session_of, Direction, FRESH_SECS, NO_SESSION};
use bramble_proto::Call;

use super::agent_auth::{AgentKeys, FrameDrop, Seal};

/// How many registrations' tags are remembered to refuse replays (they are forgotten once they
/// could no longer be fresh).
const REMEMBERED: usize = 4_096;

/// The client-name prefix of `bramble run`, which an operator speaks for.
pub const RUN_CLIENT_PREFIX: &str = "bramble-run-";

#[derive(Debug, Clone)]
struct Session {
    key: MessageKey,
    session: u32,
    up: ReplayWindow,
    next_down: u32,
    /// The session before a re-registration, and its numbers: calls the framework sent in it
    /// before it heard the new one are still taken (each once).
    previous: Option<(u32, ReplayWindow)>,
}

/// Every framework client's session, and the registrations taken lately.
#[derive(Debug, Clone, Default)]
pub(super) struct FrameworkAuth {
    sessions: HashMap<String, Session>,
    seen: HashMap<[u8; TAG_LEN], u64>,
    order: VecDeque<([u8; TAG_LEN], u64)>,
}

/// Whether `principal` may speak for framework client `client`.
fn may_speak_for(principal: &Principal, client: &str) -> bool {
    match principal.kind() {
        PrincipalKind::Framework => principal.name() == client,
        PrincipalKind::Operator => client.starts_with(RUN_CLIENT_PREFIX),
        _ => false,
    }
}

impl FrameworkAuth {
    /// Checks `frame`, whose message is `call`, from `client`, and takes its number; a
    /// registration opens a new session with the master of `epoch`.
    pub(super) fn open(
        &mut self,
        keys: &AgentKeys,
        client: &str,
        frame: &Frame<'_>,
        call: &Call,
        wall_secs: u64,
        epoch: u64,
    ) -> Result<(), FrameDrop> {
        let info = match call {
            Call::Register(info) => Some(info),
            Call::ReRegister(r) => Some(&r.info),
            _ => None,
        };
        if let Some(info) = info {
            let principal = Principal::from_username(&info.principal)
                .map_err(|_| FrameDrop::UnknownPrincipal)?;
            if !keys.allows_anonymous() && !may_speak_for(&principal, client) {
                return Err(FrameDrop::UnknownPrincipal);
            }
            let key = keys
                .principal_key(&principal)
                .ok_or(FrameDrop::UnknownPrincipal)?;
            let b = binding(Direction::FrameworkUp, client, NO_SESSION);
            if !frame.verifies(&key, &b, frame.counter) {
                return Err(FrameDrop::BadTag);
            }
            if info.time.abs_diff(wall_secs) > FRESH_SECS {
                return Err(FrameDrop::Stale);
            }
            let mut tag = [0u8; TAG_LEN];
            tag.copy_from_slice(frame.tag());
            self.forget_old(wall_secs);
            if self.seen.contains_key(&tag) {
                return Err(FrameDrop::Replayed);
            }
            let until = info.time + FRESH_SECS;
            self.seen.insert(tag, until);
            self.order.push_back((tag, until));
            let previous = self
                .sessions
                .get(client)
                .filter(|s| s.key == key)
                .map(|s| (s.session, s.up));
            let session = Session {
                key,
                session: session_of(&tag, epoch),
                up: ReplayWindow::new(),
                next_down: 1,
                previous,
            };
            self.sessions.insert(client.to_owned(), session);
            return Ok(());
        }
        let s = self
            .sessions
            .get_mut(client)
            .ok_or(FrameDrop::UnknownBoot)?;
        if let Call::Gone { .. } = call {
            // The will is made when the scheduler connects, before any session (the caller
            // checks the connection it names).
            let b = binding(Direction::FrameworkUp, client, NO_SESSION);
            return if frame.verifies(&s.key, &b, WILL_SEQ) {
                Ok(())
            } else {
                Err(FrameDrop::BadTag)
            };
        }
        let verifies = |session| {
            frame.verifies(
                &s.key,
                &binding(Direction::FrameworkUp, client, session),
                frame.counter,
            )
        };
        let window = if verifies(s.session) {
            &mut s.up
        } else {
            match &mut s.previous {
                Some((session, window)) if verifies(*session) => window,
                _ => return Err(FrameDrop::BadTag),
            }
        };
        window.check(frame.counter).map_err(|e| match e {
            agent_nostd_core::frame::FrameError::TooOld => FrameDrop::TooOld,
            _ => FrameDrop::Replayed,
        })?;
        window.take(frame.counter);
        Ok(())
    }

    fn forget_old(&mut self, wall_secs: u64) {
        while let Some(&(t, until)) = self.order.front() {
            if until >= wall_secs && self.order.len() < REMEMBERED {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&t);
        }
    }

    /// The seal of the next event to `client`, or `None` without a session.
    pub(super) fn next_seal(&mut self, client: &str) -> Option<Seal> {
        let s = self.sessions.get_mut(client)?;
        let seq = s.next_down;
        s.next_down = s.next_down.saturating_add(1);
        Some(Seal {
            key: s.key.clone(),
            boot: s.session,
            seq,
        })
    }

    /// The session of `client`, if it has one.
    pub(super) fn session(&self, client: &str) -> Option<u32> {
        self.sessions.get(client).map(|s| s.session)
    }

    /// Drops the sessions whose principal's key changed or went.
    pub(super) fn retain_keys(&mut self, keys: &AgentKeys) {
        self.sessions.retain(|_, s| {
            keys.all_keys().any(|k| *k == s.key)
                || (keys.allows_anonymous() && s.key == MessageKey::anonymous())
        });
    }
}
