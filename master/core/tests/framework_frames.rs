//! The master takes only authenticated framework calls: a registration from a principal that may
//! speak for its client, fresh and taken once, opens a session; every later call must be sealed in
//! it. Forged, stale, replayed and foreign calls are dropped, counted by reason, and change
//! nothing; events go out sealed in the framework's session.

use agent_nostd_core::auth::{MessageKey, Secret};
use agent_nostd_core::frame::{Direction, Frame};
use bramble_master_core::{Config, FrameDrop, MasterCore, PrincipalKeys, RecvError};
use bramble_proto::frame::{binding, seal, NO_SESSION};
use bramble_proto::{self as proto, Call, Register};

mod support;
use support::{transmits, wall};

fn key(n: u8) -> MessageKey {
    Secret::from_bytes([n; 32]).message_key()
}

/// A master that knows framework `pi`'s key and operator `admin`'s, and no anonymous principal.
fn keyed_master() -> MasterCore {
    let mut keys = PrincipalKeys::only([]);
    keys.insert_framework("pi", key(1));
    keys.insert_operator("admin", key(2));
    let config = Config {
        principal_keys: keys,
        ..Config::default()
    };
    let mut core = MasterCore::new(config, 9, 0).unwrap();
    transmits(&mut core);
    core
}

fn registration(principal: &str, time: u64, nonce: u64) -> Call {
    let mut r = Register::new("pi");
    r.principal = principal.to_owned();
    r.time = time;
    r.nonce = nonce;
    Call::Register(r)
}

fn register(core: &mut MasterCore, client: &str, payload: &[u8]) -> Result<(), RecvError> {
    core.handle_framework_bytes(1_000, wall(1_000), &proto::register_topic(client), payload)
}

fn sealed(call: &Call, key: &MessageKey, client: &str, session: u32, seq: u32) -> Vec<u8> {
    seal(
        call.encode(),
        key,
        Direction::FrameworkUp,
        client,
        session,
        seq,
    )
}

/// Framework `pi`'s genuine registration number `nonce`, sealed with its key.
fn pi_registration(nonce: u64) -> Vec<u8> {
    sealed(
        &registration("framework-pi", wall(1_000), nonce),
        &key(1),
        "pi",
        NO_SESSION,
        0,
    )
}

#[test]
fn a_fresh_registration_opens_a_session_once_and_its_replay_is_refused() {
    let mut core = keyed_master();
    let reg = pi_registration(1);
    register(&mut core, "pi", &reg).unwrap();
    let session = core.framework_session("pi").expect("a session");
    // The Registered event goes out sealed in it.
    let out = transmits(&mut core);
    let payload = out[0].payload();
    let f = Frame::split(&payload, Direction::FrameworkDown).unwrap();
    assert!(f.verifies(
        &key(1),
        &binding(Direction::FrameworkDown, "pi", session),
        f.counter
    ));
    assert_eq!(
        register(&mut core, "pi", &reg),
        Err(RecvError::Frame(FrameDrop::Replayed))
    );
    assert_eq!(core.framework_session("pi"), Some(session));
}

#[test]
fn stale_foreign_and_forged_registrations_open_nothing() {
    let mut core = keyed_master();
    let now = wall(1_000);
    for (payload, client, reason) in [
        // Made ten minutes ago.
        (
            sealed(
                &registration("framework-pi", now - 600, 1),
                &key(1),
                "pi",
                NO_SESSION,
                0,
            ),
            "pi",
            FrameDrop::Stale,
        ),
        // Another framework's principal for this client.
        (
            sealed(
                &registration("framework-other", now, 2),
                &key(1),
                "pi",
                NO_SESSION,
                0,
            ),
            "pi",
            FrameDrop::UnknownPrincipal,
        ),
        // The right principal, the wrong key.
        (
            sealed(
                &registration("framework-pi", now, 3),
                &key(9),
                "pi",
                NO_SESSION,
                0,
            ),
            "pi",
            FrameDrop::BadTag,
        ),
        // An operator only speaks for `bramble run`'s clients.
        (
            sealed(
                &registration("operator-admin", now, 4),
                &key(2),
                "pi",
                NO_SESSION,
                0,
            ),
            "pi",
            FrameDrop::UnknownPrincipal,
        ),
    ] {
        assert_eq!(
            register(&mut core, client, &payload),
            Err(RecvError::Frame(reason))
        );
    }
    assert_eq!(core.framework_session("pi"), None);
    assert!(core.framework_ids().is_empty());
    // The operator for bramble run's client.
    let run = sealed(
        &registration("operator-admin", now, 5),
        &key(2),
        "bramble-run-7",
        NO_SESSION,
        0,
    );
    register(&mut core, "bramble-run-7", &run).unwrap();
    assert!(core.framework_session("bramble-run-7").is_some());
}

#[test]
fn a_forged_teardown_or_kill_changes_nothing_and_a_genuine_one_is_taken() {
    let mut core = keyed_master();
    let reg = pi_registration(1);
    register(&mut core, "pi", &reg).unwrap();
    transmits(&mut core);
    let session = core.framework_session("pi").unwrap();
    let call = |payload: &[u8], core: &mut MasterCore| {
        core.handle_framework_bytes(2_000, wall(2_000), &proto::call_topic("pi"), payload)
    };
    for (payload, reason) in [
        (Call::Teardown.encode(), FrameDrop::Unframed),
        (
            sealed(&Call::Teardown, &key(9), "pi", session, 1),
            FrameDrop::BadTag,
        ),
        (
            sealed(&Call::Teardown, &key(1), "pi", NO_SESSION, 1),
            FrameDrop::BadTag,
        ),
        (
            sealed(&Call::Teardown, &key(1), "pi", session ^ 1, 1),
            FrameDrop::BadTag,
        ),
    ] {
        assert_eq!(call(&payload, &mut core), Err(RecvError::Frame(reason)));
    }
    assert_eq!(core.framework_ids().len(), 1, "still registered");
    let genuine = sealed(&Call::Teardown, &key(1), "pi", session, 1);
    call(&genuine, &mut core).unwrap();
    assert!(core.framework_ids().is_empty(), "torn down");
    assert_eq!(
        core.stats().framework_frames_dropped.get(FrameDrop::BadTag),
        3
    );
    assert_eq!(
        core.stats()
            .framework_frames_dropped
            .get(FrameDrop::Unframed),
        1
    );
}

#[test]
fn a_call_sealed_in_the_session_before_a_re_registration_is_still_taken_once() {
    let mut core = keyed_master();
    let first = pi_registration(1);
    register(&mut core, "pi", &first).unwrap();
    let old = core.framework_session("pi").unwrap();
    let second = pi_registration(2);
    register(&mut core, "pi", &second).unwrap();
    assert_ne!(core.framework_session("pi"), Some(old));
    let revive = sealed(&Call::Revive, &key(1), "pi", old, 5);
    let call = |core: &mut MasterCore| {
        core.handle_framework_bytes(2_000, wall(2_000), &proto::call_topic("pi"), &revive)
    };
    call(&mut core).unwrap();
    assert_eq!(call(&mut core), Err(RecvError::Frame(FrameDrop::Replayed)));
}
