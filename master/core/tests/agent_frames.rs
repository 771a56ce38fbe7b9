//! The master takes only authenticated agent frames: forged, replayed, misaddressed and
//! earlier-boot frames are dropped, counted by reason, and change nothing; what it sends an agent is
//! sealed for that agent's boot, numbered above what the agent took.

use agent_nostd_core::auth::{MessageKey, Secret};
use agent_nostd_core::frame::{encode_sealed, Binding, Direction, Frame, ReplayWindow, WILL_SEQ};
use agent_nostd_core::wire::{
    AgentInfo, AgentMsg, MasterEnvelope, MasterMsg, ReRegister, TaskState, WireMessage,
    MAX_UP_FRAME_LEN,
};
use bramble_master_core::{Config, FrameDrop, MasterCore, Outgoing, PrincipalKeys, RecvError};

mod support;
use support::{agent_info, status_msg, transmits};

fn status(fid: &str, update_id: u32, state: TaskState) -> AgentMsg {
    status_msg(
        fid,
        "t1",
        update_id,
        state,
        agent_nostd_core::wire::Reason::None,
    )
}

fn key(n: u8) -> MessageKey {
    Secret::from_bytes([n; 32]).message_key()
}

/// A master that takes only agent `pi`'s own key (no anonymous agents).
fn keyed_master(epoch: u64) -> MasterCore {
    let config = Config {
        principal_keys: PrincipalKeys::only([("pi".to_owned(), key(1))]),
        ..Config::default()
    };
    let mut core = MasterCore::new(config, epoch, 0).unwrap();
    transmits(&mut core);
    core
}

/// `msg` from `agent` as uplink frame `seq` of boot `boot`, sealed with `key`; a registration
/// states that boot and number.
fn frame(key: &MessageKey, agent: &str, boot: u32, seq: u32, mut msg: AgentMsg) -> Vec<u8> {
    if let AgentMsg::Register(info) | AgentMsg::ReRegister(ReRegister { info, .. }) = &mut msg {
        info.boot = boot;
        info.seq = seq;
    }
    let binding = Binding {
        direction: Direction::Up,
        agent_id: agent,
        boot,
    };
    let mut buf = vec![0; MAX_UP_FRAME_LEN];
    let n = encode_sealed(&msg, key, &binding, seq, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn registration(to_epoch: u64) -> AgentMsg {
    AgentMsg::Register(AgentInfo {
        to_epoch,
        ..agent_info("pi")
    })
}

fn deliver(core: &mut MasterCore, msg: &AgentMsg, frame: &[u8]) -> Result<(), RecvError> {
    core.handle_agent_bytes(1, &msg.topic("pi"), frame)
}

/// What the master sent agent `pi`, opened as `pi` in boot `boot` would open it.
fn opened(core: &mut MasterCore, boot: u32) -> Vec<(u32, MasterMsg)> {
    let mut window = ReplayWindow::new();
    transmits(core)
        .into_iter()
        .filter(|t| matches!(t.message, Outgoing::Agent(_)) && t.topic.contains("/pi/"))
        .map(|t| {
            let mut payload = t.payload().to_vec();
            let binding = Binding {
                direction: Direction::Down,
                agent_id: "pi",
                boot,
            };
            agent_nostd_core::frame::decrypt(&key(1), &binding, &mut payload);
            let f = Frame::split(&payload, Direction::Down).expect("a frame");
            let seq = f
                .open(&key(1), &binding, &mut window)
                .expect("sealed for pi");
            (seq, MasterEnvelope::decode(f.message).unwrap().msg)
        })
        .collect()
}

#[test]
fn a_registration_delivered_twice_is_taken_once_and_its_copy_counted_as_a_replay() {
    let mut core = keyed_master(9);
    let reg = registration(9);
    let bytes = frame(&key(1), "pi", 5, 1, reg.clone());
    deliver(&mut core, &reg, &bytes).unwrap();
    assert!(matches!(
        &opened(&mut core, 5)[..],
        [(1, MasterMsg::RegisterAck(_))]
    ));
    assert_eq!(
        deliver(&mut core, &reg, &bytes),
        Err(RecvError::Frame(FrameDrop::Replayed))
    );
    assert!(transmits(&mut core).is_empty(), "no second acknowledgement");
    assert_eq!(core.stats().agent_registrations, 1);
    assert_eq!(core.stats().frames_dropped.get(FrameDrop::Replayed), 1);
}

#[test]
fn frames_sealed_with_another_key_or_unframed_or_from_a_stranger_change_nothing() {
    let mut core = keyed_master(9);
    let reg = registration(9);
    for (bytes, reason) in [
        (frame(&key(2), "pi", 5, 1, reg.clone()), FrameDrop::BadTag),
        (
            frame(&MessageKey::anonymous(), "pi", 5, 1, reg.clone()),
            FrameDrop::BadTag,
        ),
        (
            {
                let mut buf = vec![0; AgentMsg::MAX_ENCODED_LEN];
                let n = reg.encode(&mut buf).unwrap();
                buf.truncate(n);
                buf
            },
            FrameDrop::Unframed,
        ),
    ] {
        assert_eq!(
            deliver(&mut core, &reg, &bytes),
            Err(RecvError::Frame(reason))
        );
    }
    let stranger = AgentMsg::Register(AgentInfo {
        to_epoch: 9,
        ..agent_info("evil")
    });
    let bytes = frame(&MessageKey::anonymous(), "evil", 1, 1, stranger.clone());
    assert_eq!(
        core.handle_agent_bytes(1, &stranger.topic("evil"), &bytes),
        Err(RecvError::Frame(FrameDrop::UnknownPrincipal))
    );
    assert!(core.agent("pi").is_none() && core.agent("evil").is_none());
    assert!(
        transmits(&mut core).is_empty(),
        "no answer to what is not authenticated"
    );
    let drops = core.stats().frames_dropped;
    assert_eq!(drops.get(FrameDrop::BadTag), 2);
    assert_eq!(drops.get(FrameDrop::Unframed), 1);
    assert_eq!(drops.get(FrameDrop::UnknownPrincipal), 1);
}

#[test]
fn a_registration_for_another_master_is_answered_with_a_sealed_request_to_register_here() {
    let mut core = keyed_master(9);
    let reg = registration(7);
    deliver(&mut core, &reg, &frame(&key(1), "pi", 5, 1, reg.clone())).unwrap();
    assert!(
        core.agent("pi").is_none(),
        "not taken: it was meant for epoch 7"
    );
    assert!(matches!(
        &opened(&mut core, 5)[..],
        [(1, MasterMsg::ReRegisterRequest)]
    ));
    assert_eq!(core.stats().registrations_misaddressed, 1);
    let reg = registration(9);
    deliver(&mut core, &reg, &frame(&key(1), "pi", 5, 2, reg.clone())).unwrap();
    assert!(core.agent("pi").is_some());
    assert!(matches!(
        &opened(&mut core, 5)[..],
        [(2, MasterMsg::RegisterAck(_))]
    ));
}

#[test]
fn a_registration_from_an_earlier_boot_is_dropped_and_a_later_boot_starts_afresh() {
    let mut core = keyed_master(9);
    let reg = registration(9);
    deliver(&mut core, &reg, &frame(&key(1), "pi", 5, 40, reg.clone())).unwrap();
    transmits(&mut core);
    assert_eq!(
        deliver(&mut core, &reg, &frame(&key(1), "pi", 4, 90, reg.clone())),
        Err(RecvError::Frame(FrameDrop::OldBoot))
    );
    // The agent restarted: boot 6 numbers from 1 again, and so does what the master sends it.
    deliver(&mut core, &reg, &frame(&key(1), "pi", 6, 1, reg.clone())).unwrap();
    assert!(matches!(
        &opened(&mut core, 6)[..],
        [(1, MasterMsg::RegisterAck(_))]
    ));
    // Frames of the old boot do not verify any more.
    let report = status("f", 1, TaskState::Running);
    assert_eq!(
        deliver(
            &mut core,
            &report,
            &frame(&key(1), "pi", 5, 41, report.clone())
        ),
        Err(RecvError::Frame(FrameDrop::BadTag))
    );
}

#[test]
fn a_master_restarted_under_the_same_epoch_numbers_its_frames_above_what_the_agent_took() {
    let mut core = keyed_master(9);
    let reg = AgentMsg::ReRegister(ReRegister {
        info: AgentInfo {
            to_epoch: 9,
            ..agent_info("pi")
        },
        last_master_epoch: 9,
        down_seq: 500,
        tasks: heapless::Vec::new(),
    });
    deliver(&mut core, &reg, &frame(&key(1), "pi", 5, 1, reg.clone())).unwrap();
    assert!(matches!(
        &opened(&mut core, 5)[..],
        [(501, MasterMsg::RegisterAck(_))]
    ));
}

#[test]
fn only_the_current_connections_genuine_last_will_makes_an_agent_unreachable() {
    let mut core = keyed_master(9);
    let reg = AgentMsg::Register(AgentInfo {
        to_epoch: 9,
        connection: 3,
        ..agent_info("pi")
    });
    deliver(&mut core, &reg, &frame(&key(1), "pi", 5, 1, reg.clone())).unwrap();
    let will = AgentMsg::Gone { connection: 3 };
    assert_eq!(
        deliver(
            &mut core,
            &will,
            &frame(&key(2), "pi", 5, WILL_SEQ, will.clone())
        ),
        Err(RecvError::Frame(FrameDrop::BadTag))
    );
    assert!(
        core.agent("pi").unwrap().reachable,
        "a forged will changes nothing"
    );
    deliver(
        &mut core,
        &will,
        &frame(&key(1), "pi", 5, WILL_SEQ, will.clone()),
    )
    .unwrap();
    assert!(!core.agent("pi").unwrap().reachable);
}

#[test]
fn a_frame_from_an_agent_without_a_session_earns_a_hint_not_a_frame() {
    let mut core = keyed_master(9);
    let report = status("f", 1, TaskState::Running);
    assert_eq!(
        deliver(
            &mut core,
            &report,
            &frame(&key(1), "pi", 5, 7, report.clone())
        ),
        Err(RecvError::Frame(FrameDrop::UnknownBoot))
    );
    let out = transmits(&mut core);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].seal, None);
    assert_eq!(
        out[0].payload(),
        vec![3, 9, 0],
        "an unframed hello of epoch 9"
    );
}

#[test]
fn new_keys_take_effect_and_an_agent_whose_key_changed_must_register_again() {
    let mut core = keyed_master(9);
    let reg = registration(9);
    deliver(&mut core, &reg, &frame(&key(1), "pi", 5, 1, reg.clone())).unwrap();
    transmits(&mut core);
    core.set_principal_keys(PrincipalKeys::only([("pi".to_owned(), key(3))]));
    let report = status("f", 1, TaskState::Running);
    assert_eq!(
        deliver(
            &mut core,
            &report,
            &frame(&key(1), "pi", 5, 2, report.clone())
        ),
        Err(RecvError::Frame(FrameDrop::UnknownBoot))
    );
    deliver(&mut core, &reg, &frame(&key(3), "pi", 5, 3, reg.clone())).unwrap();
    assert!(core.agent("pi").is_some());
}
