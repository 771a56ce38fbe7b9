//! Proof that a framework said it: every call is a frame (see [`bramble_proto::frame`]) checked
//! with the key of the principal its session belongs to, and every event the master sends a
//! framework is sealed in that session. A registration opens the session: it names a principal
//! that may speak for its client (`framework-{client}`, or an operator for `bramble run`'s
//! `bramble-run-*` clients), is made within [`FRESH_SECS`] of the master's clock, and is taken
//! once. Calls in a session are encrypted ([`Direction::encrypts`]): they are decrypted as they
//! are verified.

use std::collections::HashMap;

use agent_nostd_core::auth::{MessageKey, Principal, PrincipalKind};
use agent_nostd_core::frame::{self, Frame, ReplayWindow, WILL_SEQ};
use bramble_proto::frame::{binding, session_of, Direction, FRESH_SECS, NO_SESSION};
use bramble_proto::Call;

use super::agent_auth::{FrameDrop, PrincipalKeys, Seal};
use super::tag_memory::TagMemory;

/// The client-name prefix of `bramble run`, which an operator speaks for.
pub const RUN_CLIENT_PREFIX: &str = "bramble-run-";

#[derive(Debug, Clone)]
struct Session {
    /// Who speaks in it, and with what key.
    principal: Principal,
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
    /// The registrations taken lately, to take each once.
    seen: TagMemory,
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
    /// Checks `frame`, a registration or a will (sealed outside any session, in clear) whose
    /// message is `call`, from `client`; a registration opens a new session with the master of
    /// `epoch`.
    pub(super) fn open(
        &mut self,
        keys: &PrincipalKeys,
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
            let tag = frame.tag();
            if !self.seen.take(tag, info.time + FRESH_SECS, wall_secs) {
                return Err(FrameDrop::Replayed);
            }
            let previous = self
                .sessions
                .get(client)
                .filter(|s| s.key == key)
                .map(|s| (s.session, s.up));
            let session = Session {
                principal,
                key,
                session: session_of(tag, epoch),
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
        // The will is made when the scheduler connects, before any session (the caller checks the
        // connection it names). Any other call travels in a session, encrypted: see `open_call`.
        let b = binding(Direction::FrameworkUp, client, NO_SESSION);
        match call {
            Call::Gone { .. } if frame.verifies(&s.key, &b, WILL_SEQ) => Ok(()),
            _ => Err(FrameDrop::BadTag),
        }
    }

    /// Opens `payload`, a call from `client` on its call topic: decrypts it in place in the
    /// client's session (or the one before its latest registration, whose calls sent before it
    /// heard the new one are still taken, each once), verifies it and takes its number. Without
    /// a session it is `UnknownBoot`; when it verifies in neither session, `BadTag`, and the
    /// payload is as it came.
    pub(super) fn open_call(&mut self, client: &str, payload: &mut [u8]) -> Result<(), FrameDrop> {
        let s = self
            .sessions
            .get_mut(client)
            .ok_or(FrameDrop::UnknownBoot)?;
        let key = &s.key;
        // The frame's number when it verifies in `session` (decrypted), else `None` (restored).
        let opens = |session, payload: &mut [u8]| {
            let b = binding(Direction::FrameworkUp, client, session);
            frame::decrypt(key, &b, payload);
            let seq = Frame::split(payload, Direction::FrameworkUp)
                .ok()
                .filter(|f| f.verifies(key, &b, f.counter))
                .map(|f| f.counter);
            if seq.is_none() {
                frame::decrypt(key, &b, payload);
            }
            seq
        };
        let (window, seq) = if let Some(seq) = opens(s.session, payload) {
            (&mut s.up, seq)
        } else if let Some((session, window)) = &mut s.previous {
            (window, opens(*session, payload).ok_or(FrameDrop::BadTag)?)
        } else {
            return Err(FrameDrop::BadTag);
        };
        window.check(seq).map_err(|e| match e {
            agent_nostd_core::frame::FrameError::TooOld => FrameDrop::TooOld,
            _ => FrameDrop::Replayed,
        })?;
        window.take(seq);
        Ok(())
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

    /// Drops the sessions whose principal's key changed or went: they must register again.
    pub(super) fn retain_keys(&mut self, keys: &PrincipalKeys) {
        self.sessions
            .retain(|_, s| keys.principal_key(&s.principal).as_ref() == Some(&s.key));
    }
}
