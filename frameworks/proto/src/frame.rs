//! Calls and events as authenticated frames: the encoded call or event, then a 4-byte number and
//! an 8-byte tag (HMAC-SHA-256 under the principal's message key, see
//! [`agent_nostd_core::frame`], with the framework directions), bound to the framework's client
//! name and its **session**.
//!
//! A registration is sealed outside any session ([`NO_SESSION`]); it names its principal and the
//! wall-clock second it was made, and the master takes it within [`FRESH_SECS`] of its clock, once.
//! Its session is then [`session_of`] the registration's tag and the master's epoch: the master
//! seals every event to the framework in it (the `Registered` answer first), and the scheduler,
//! which knows its registration's tag, finds the session from an event's epoch and seals every
//! later call in it. A registration recorded and replayed to another master makes a session of
//! its own, in which nothing recorded verifies. The last will is sealed outside any session, with
//! [`WILL_SEQ`], and names its connection. Calls in a session are encrypted (an `Accept` carries
//! command lines and environments); registrations, wills and events are not (see
//! [`Direction::encrypts`]).

use alloc::vec::Vec;

pub use agent_nostd_core::auth::MessageKey;
pub use agent_nostd_core::frame::{
    decrypt, Binding, Direction, Frame, FrameError, ReplayWindow, WILL_SEQ,
};

/// The session of a registration, and of the will.
pub const NO_SESSION: u32 = 0;
/// How far a registration's time may be from the master's, either way, in seconds.
pub const FRESH_SECS: u64 = 300;

/// The binding of a frame `direction` of `client` in `session`.
pub fn binding(direction: Direction, client: &str, session: u32) -> Binding<'_> {
    Binding {
        direction,
        agent_id: client,
        boot: session,
    }
}

/// The session a registration whose frame's tag is `tag` opens with the master of `epoch`.
pub fn session_of(tag: &[u8], epoch: u64) -> u32 {
    let epoch = epoch.to_be_bytes();
    let mixed = MessageKey::anonymous().tag(&[b"bramble/v1 framework session", tag, &epoch]);
    let session = u32::from_be_bytes([mixed[0], mixed[1], mixed[2], mixed[3]]);
    session.max(1)
}

/// `message` (an encoded call or event) sealed as frame `seq` of `client` in `session`.
pub fn seal(
    mut message: Vec<u8>,
    key: &MessageKey,
    direction: Direction,
    client: &str,
    session: u32,
    seq: u32,
) -> Vec<u8> {
    let len = message.len();
    message.resize(len + direction.trailer_len(), 0);
    // Cannot fail: the buffer was sized for the trailer.
    let _ = agent_nostd_core::frame::seal(
        key,
        &binding(direction, client, session),
        seq,
        &mut message,
        len,
    );
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Call;

    #[test]
    fn a_sealed_call_verifies_only_for_its_client_session_and_direction() {
        let key = MessageKey::anonymous();
        let payload = seal(
            Call::Revive.encode(),
            &key,
            Direction::FrameworkUp,
            "fw",
            9,
            4,
        );
        // In a session, the call is encrypted after its version byte.
        let sent = Frame::split(&payload, Direction::FrameworkUp).unwrap();
        assert_eq!(sent.message[0], Call::Revive.encode()[0]);
        assert_ne!(sent.message, Call::Revive.encode());
        let mut payload = payload.clone();
        decrypt(
            &key,
            &binding(Direction::FrameworkUp, "fw", 9),
            &mut payload,
        );
        let f = Frame::split(&payload, Direction::FrameworkUp).unwrap();
        assert_eq!(f.message, Call::Revive.encode());
        assert_eq!(f.counter, 4);
        assert!(f.verifies(&key, &binding(Direction::FrameworkUp, "fw", 9), 4));
        assert!(!f.verifies(&key, &binding(Direction::FrameworkUp, "fw", 8), 4));
        assert!(!f.verifies(&key, &binding(Direction::FrameworkUp, "other", 9), 4));
        assert!(!f.verifies(&key, &binding(Direction::FrameworkDown, "fw", 9), 4));
        assert!(!f.verifies(&key, &binding(Direction::Up, "fw", 9), 4));
    }

    #[test]
    fn a_session_depends_on_the_registration_and_the_epoch_and_is_never_zero() {
        let a = session_of(&[1; 8], 7);
        assert_ne!(a, NO_SESSION);
        assert_eq!(a, session_of(&[1; 8], 7));
        assert_ne!(a, session_of(&[2; 8], 7));
        assert_ne!(a, session_of(&[1; 8], 8));
    }
}
