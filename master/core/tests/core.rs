//! `MasterCore` driven by hand, message by message: the order of its outputs, its answers to
//! strangers, and what it does with bad input.

use agent_nostd_core::ids::id;
use agent_nostd_core::topic::{self, AgentTopic};
use agent_nostd_core::wire::{AgentMsg, MasterMsg, Reason, StatusUpdate, TaskState};
use agent_nostd_core::Resources;
use bramble_master_core::{Config, FrameDrop, MasterCore, Outgoing, RecvError, Transmit};
use bramble_proto::{self as proto, Accept, Call, ErrorCode, Event, Register, TaskInfo};
use proptest::prelude::*;

mod support;
use support::{agent_info as info, call, drain as offers_and_id, events, transmits as drain};

fn agent_msgs(out: &[Transmit]) -> Vec<(String, MasterMsg)> {
    out.iter()
        .filter_map(|t| match &t.message {
            Outgoing::Agent(m) => Some((t.topic.clone(), m.msg.clone())),
            Outgoing::Framework { .. } => None,
        })
        .collect()
}

fn send_agent(
    core: &mut MasterCore,
    now: u64,
    agent: &str,
    msg: &AgentMsg,
) -> Result<(), RecvError> {
    let frame = support::frame_from(core, agent, msg);
    core.handle_agent_bytes(now, &msg.topic(agent), &frame)
}

/// A master with agent `pi` and framework client `fw` running task `t1` (STAGING).
fn with_task() -> (MasterCore, String) {
    let mut core = MasterCore::new(Config::default(), 9, 0).unwrap();
    send_agent(&mut core, 0, "pi", &AgentMsg::Register(info("pi"))).unwrap();
    call(&mut core, 0, Call::Register(Register::new("fw")));
    core.handle_timeout(0);
    let (offers, fid) = offers_and_id(&mut core);
    let (fid, offer) = (fid.unwrap(), offers[0].clone());
    let accept = Call::Accept(Accept {
        offer_id: offer.offer_id,
        tasks: vec![TaskInfo::new(
            "t1",
            &["/bin/true"],
            Resources::new(1_000, 100, 0),
        )],
    });
    support::fw_call(&mut core, 1, "fw", accept).unwrap();
    let out = drain(&mut core);
    assert!(matches!(agent_msgs(&out)[..], [(_, MasterMsg::RunTask(_))]));
    (core, fid)
}

fn status(fid: &str, update_id: u32, state: TaskState) -> AgentMsg {
    AgentMsg::Status(StatusUpdate {
        framework_id: id(fid).unwrap(),
        task_id: id("t1").unwrap(),
        update_id,
        state,
        reason: Reason::None,
        message: heapless::String::new(),
    })
}

#[test]
fn the_first_transmit_is_the_retained_hello_with_the_epoch() {
    let mut core = MasterCore::new(Config::default(), 42, 0).unwrap();
    let t = core.poll_transmit().unwrap();
    assert_eq!(t.topic, topic::MASTER_HELLO);
    assert!(t.retain);
    assert_eq!(
        t.payload(),
        vec![3, 42, 0],
        "version 3, epoch 42, Hello: not a frame"
    );
    assert!(core.poll_transmit().is_none());
}

#[test]
fn a_bad_config_is_refused_naming_the_field() {
    let config = Config {
        allocation_interval_ms: 0,
        ..Config::default()
    };
    let err = MasterCore::new(config, 1, 0).unwrap_err();
    assert_eq!(err.field, "allocation_interval_ms");
    assert_eq!(
        MasterCore::new(Config::default(), 0, 0).unwrap_err().field,
        "epoch"
    );
}

fn acknowledge(core: &mut MasterCore, now: u64, update_id: u32) {
    let ack = Call::Acknowledge(proto::Acknowledge {
        agent_id: "pi".into(),
        task_id: "t1".into(),
        update_id,
    });
    support::fw_call(core, now, "fw", ack).unwrap();
}

fn is_ack(out: &[Transmit], update_id: u32) -> bool {
    matches!(
        agent_msgs(out)[..],
        [(ref topic, MasterMsg::StatusAck(ref a))]
            if a.update_id == update_id && topic == topic::agent("pi", AgentTopic::Cmd).as_str()
    )
}

#[test]
fn a_status_update_reaches_its_agent_as_acknowledged_only_once_the_framework_acknowledges_it() {
    let (mut core, fid) = with_task();
    send_agent(&mut core, 2, "pi", &status(&fid, 1, TaskState::Running)).unwrap();
    let out = drain(&mut core);
    assert_eq!(
        out.len(),
        1,
        "the update goes to the framework, no ack to the agent yet"
    );
    assert_eq!(out[0].topic, proto::event_topic("fw"));
    assert!(matches!(
        &out[0].message,
        Outgoing::Framework { event: Event::Update(u), .. }
            if u.task_id == "t1" && u.state == TaskState::Running && u.update_id == Some(1)
                && u.agent_id.as_deref() == Some("pi")
    ));
    assert_eq!(core.task(&fid, "t1").unwrap().state, TaskState::Running);
    acknowledge(&mut core, 3, 1);
    assert!(is_ack(&drain(&mut core), 1));
    assert_eq!(core.stats().acknowledgements, 1);
}

#[test]
fn framework_events_carry_the_epoch_they_were_queued_under_and_the_raised_one_after_a_raise() {
    let (mut core, fid) = with_task();
    send_agent(&mut core, 2, "pi", &status(&fid, 1, TaskState::Running)).unwrap();
    // Queued under epoch 9, encoded after the raise: still epoch 9.
    core.raise_epoch(12);
    send_agent(&mut core, 3, "pi", &status(&fid, 2, TaskState::Finished)).unwrap();
    let epochs: Vec<u64> = drain(&mut core)
        .iter()
        .filter(|t| t.topic == proto::event_topic("fw"))
        .map(|t| {
            let payload = t.payload();
            let frame = agent_nostd_core::frame::Frame::split(
                &payload,
                agent_nostd_core::frame::Direction::FrameworkDown,
            )
            .unwrap();
            let envelope = proto::EventEnvelope::decode(frame.message).unwrap();
            match &t.message {
                Outgoing::Framework { epoch, event } => {
                    assert_eq!((*epoch, event), (envelope.epoch, &envelope.event));
                }
                Outgoing::Agent(_) => unreachable!("on an event topic"),
            }
            envelope.epoch
        })
        .collect();
    assert_eq!(epochs, [9, 12]);
}

#[test]
fn a_resent_status_update_is_forwarded_again_until_acknowledged_and_then_acknowledged_again() {
    let (mut core, fid) = with_task();
    send_agent(&mut core, 2, "pi", &status(&fid, 1, TaskState::Running)).unwrap();
    drain(&mut core);
    send_agent(&mut core, 3, "pi", &status(&fid, 1, TaskState::Running)).unwrap();
    let out = drain(&mut core);
    assert!(agent_msgs(&out).is_empty());
    assert!(matches!(&events(&out)[..], [Event::Update(u)] if u.update_id == Some(1)));
    acknowledge(&mut core, 4, 1);
    drain(&mut core);
    // The agent resent it before the acknowledgement reached it: the master answers for it.
    send_agent(&mut core, 5, "pi", &status(&fid, 1, TaskState::Running)).unwrap();
    let out = drain(&mut core);
    assert!(events(&out).is_empty());
    assert!(is_ack(&out, 1));
    assert_eq!(core.stats().duplicate_status_updates, 2);
    assert_eq!(core.stats().status_updates, 1, "applied once");
}

#[test]
fn an_older_update_resent_after_a_newer_one_does_not_roll_the_task_back() {
    let (mut core, fid) = with_task();
    // Pipelined: STARTING (1) and RUNNING (2) arrive in order; STARTING's resend comes late.
    send_agent(&mut core, 2, "pi", &status(&fid, 1, TaskState::Starting)).unwrap();
    send_agent(&mut core, 2, "pi", &status(&fid, 2, TaskState::Running)).unwrap();
    drain(&mut core);
    send_agent(&mut core, 3, "pi", &status(&fid, 1, TaskState::Starting)).unwrap();
    let out = drain(&mut core);
    assert!(
        out.is_empty(),
        "neither forwarded nor acknowledged: RUNNING's ack settles it"
    );
    assert_eq!(core.task(&fid, "t1").unwrap().state, TaskState::Running);
    assert_eq!(core.stats().duplicate_status_updates, 1);
    acknowledge(&mut core, 4, 2);
    assert!(is_ack(&drain(&mut core), 2));
}

#[test]
fn update_ids_compare_across_wrap_around() {
    let (mut core, fid) = with_task();
    send_agent(
        &mut core,
        2,
        "pi",
        &status(&fid, u32::MAX, TaskState::Starting),
    )
    .unwrap();
    send_agent(&mut core, 2, "pi", &status(&fid, 1, TaskState::Running)).unwrap();
    drain(&mut core);
    assert_eq!(core.task(&fid, "t1").unwrap().state, TaskState::Running);
    assert_eq!(core.stats().duplicate_status_updates, 0);
}

#[test]
fn a_status_update_from_an_agent_without_a_session_is_dropped_and_hinted_to_register() {
    let (mut core, fid) = with_task();
    assert_eq!(
        send_agent(
            &mut core,
            2,
            "stranger",
            &status(&fid, 1, TaskState::Running),
        ),
        Err(RecvError::Frame(FrameDrop::UnknownBoot))
    );
    let out = drain(&mut core);
    assert_eq!(
        agent_msgs(&out),
        vec![(
            topic::agent("stranger", AgentTopic::Cmd)
                .as_str()
                .to_owned(),
            MasterMsg::Hello
        )]
    );
    assert_eq!(
        out[0].seal, None,
        "a hint is not a frame: the master has no session"
    );
    assert!(events(&out).is_empty());
    // At most one hint a second.
    let again = send_agent(
        &mut core,
        3,
        "stranger",
        &status(&fid, 2, TaskState::Running),
    );
    assert_eq!(again, Err(RecvError::Frame(FrameDrop::UnknownBoot)));
    assert!(drain(&mut core).is_empty());
    assert_eq!(core.stats().frames_dropped.get(FrameDrop::UnknownBoot), 2);
}

#[test]
fn a_running_task_nobody_knows_is_killed() {
    let (mut core, fid) = with_task();
    let mut msg = status(&fid, 7, TaskState::Running);
    if let AgentMsg::Status(u) = &mut msg {
        u.task_id = id("orphan").unwrap();
    }
    send_agent(&mut core, 2, "pi", &msg).unwrap();
    let out = drain(&mut core);
    let msgs = agent_msgs(&out);
    assert!(
        matches!(&msgs[0].1, MasterMsg::KillTask(k) if k.task_id == "orphan" && k.grace_ms == 0)
    );
    assert!(matches!(&msgs[1].1, MasterMsg::StatusAck(a) if a.update_id == 7));
}

#[test]
fn garbage_payloads_on_every_topic_are_counted_and_dropped() {
    let (mut core, fid) = with_task();
    let before = core.check_invariants();
    assert_eq!(before, Ok(()));
    let status_topic = topic::agent("pi", AgentTopic::Status);
    assert!(matches!(
        core.handle_agent_bytes(5, &status_topic, &[3, 0xFF, 0xFF]),
        Err(RecvError::AgentDecode(_))
    ));
    assert!(matches!(
        core.handle_agent_bytes(5, &status_topic, &[9, 3]),
        Err(RecvError::AgentDecode(_))
    ));
    assert_eq!(
        core.handle_agent_bytes(5, "bramble/v1/agent/pi/cmd", &[1, 6]),
        Err(RecvError::UnknownTopic)
    );
    // A valid report on the status topic is misrouted.
    let report = support::frame_from(&core, "pi", &AgentMsg::Pong { seq: 1 });
    assert_eq!(
        core.handle_agent_bytes(5, &status_topic, &report),
        Err(RecvError::WrongTopic)
    );
    // A registration naming another agent than its topic.
    let reg = support::frame_from(&core, "pi", &AgentMsg::Register(info("other")));
    assert_eq!(
        core.handle_agent_bytes(5, &topic::agent("pi", AgentTopic::Register), &reg),
        Err(RecvError::WrongTopic)
    );
    assert!(matches!(
        core.handle_framework_bytes(5, support::wall(5), &proto::call_topic("fw"), &[]),
        Err(RecvError::FrameworkDecode(proto::DecodeError::Empty))
    ));
    assert_eq!(
        core.handle_framework_bytes(
            5,
            support::wall(5),
            &proto::event_topic("fw"),
            &Call::Revive.encode()
        ),
        Err(RecvError::UnknownTopic)
    );
    // A teardown on the register topic: sealed in its session it is encrypted, and only a call's
    // topic is read as one, so there it reads as nothing.
    assert!(matches!(
        core.handle_framework_bytes(
            5,
            support::wall(5),
            &proto::register_topic("fw"),
            &support::framework_frame(&core, 5, "fw", &Call::Teardown)
        ),
        Err(RecvError::FrameworkDecode(_))
    ));
    let stats = *core.stats();
    assert_eq!(stats.malformed, 3);
    assert_eq!(stats.unsupported_version, 1);
    assert_eq!(stats.misrouted, 4);
    assert!(drain(&mut core).is_empty());
    assert_eq!(core.check_invariants(), Ok(()));
    assert_eq!(core.task(&fid, "t1").unwrap().state, TaskState::Staging);
}

#[test]
fn a_registration_with_a_bad_weight_is_refused() {
    let mut core = MasterCore::new(Config::default(), 1, 0).unwrap();
    drain(&mut core);
    let mut reg = Register::new("fw");
    reg.weight = -1.0;
    support::fw_call(&mut core, 0, "fw", Call::Register(reg)).unwrap();
    let out = drain(&mut core);
    assert!(matches!(
        &events(&out)[..],
        [Event::Error { code: ErrorCode::RegistrationRefused, message, .. }] if message.contains("weight")
    ));
    assert!(core.framework_ids().is_empty());
}

#[test]
fn a_repeated_registration_from_the_same_client_gets_the_same_id() {
    let mut core = MasterCore::new(Config::default(), 1, 0).unwrap();
    support::fw_call(&mut core, 0, "fw", Call::Register(Register::new("fw"))).unwrap();
    support::fw_call(&mut core, 0, "fw", Call::Register(Register::new("fw"))).unwrap();
    let ids: Vec<String> = events(&drain(&mut core))
        .into_iter()
        .filter_map(|e| match e {
            Event::Registered { framework_id, .. } => Some(framework_id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, vec!["1-1".to_owned(), "1-1".to_owned()]);
    assert_eq!(core.framework_ids().len(), 1);
}

#[test]
fn an_accept_with_a_bad_task_launches_none_of_its_tasks() {
    let mut core = MasterCore::new(Config::default(), 1, 0).unwrap();
    send_agent(&mut core, 0, "pi", &AgentMsg::Register(info("pi"))).unwrap();
    support::fw_call(&mut core, 0, "fw", Call::Register(Register::new("fw"))).unwrap();
    core.handle_timeout(0);
    let offer = events(&drain(&mut core))
        .into_iter()
        .find_map(|e| match e {
            Event::Offers(o) => Some(o[0].clone()),
            _ => None,
        })
        .unwrap();
    let r = Resources::new(100, 100, 0);
    let cases: Vec<(Vec<TaskInfo>, &str)> = vec![
        (
            vec![
                TaskInfo::new("ok", &["/bin/true"], r),
                TaskInfo::new("a/b", &["x"], r),
            ],
            "not a valid id",
        ),
        (vec![TaskInfo::new("t", &[], r)], "empty argv"),
        (
            vec![TaskInfo::new("t", &["x"], Resources::new(0, 10, 0))],
            "some cpu and memory",
        ),
        (
            vec![TaskInfo::new("t", &["x"], r), TaskInfo::new("t", &["x"], r)],
            "already exists",
        ),
        (
            vec![TaskInfo::new("t", &["x"; 17], r)],
            "more than 16 arguments",
        ),
    ];
    for (i, (tasks, why)) in cases.into_iter().enumerate() {
        let now = 10 + i as u64;
        core.handle_timeout(now);
        drain(&mut core);
        let offer_id = core.agent("pi").unwrap().offer_id.unwrap_or(offer.offer_id);
        support::fw_call(
            &mut core,
            now,
            "fw",
            Call::Accept(Accept { offer_id, tasks }),
        )
        .unwrap();
        let out = drain(&mut core);
        assert!(agent_msgs(&out).is_empty(), "{why}");
        let events = events(&out);
        assert!(
            matches!(&events[0], Event::Error { code: ErrorCode::AcceptRefused, message, .. } if message.contains(why)),
            "{why}: {events:?}"
        );
        // Each task the accept named hears it did not launch.
        assert!(
            events[1..].iter().all(|e| matches!(e, Event::Update(u)
                if u.state == TaskState::Lost && u.reason == Reason::LaunchFailed)),
            "{why}: {events:?}"
        );
    }
    assert_eq!(core.check_invariants(), Ok(()));
}

fn topics() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(topic::agent("pi", AgentTopic::Register).as_str().to_owned()),
        Just(topic::agent("pi", AgentTopic::Report).as_str().to_owned()),
        Just(topic::agent("pi", AgentTopic::Status).as_str().to_owned()),
        Just(topic::agent("pi", AgentTopic::Pong).as_str().to_owned()),
        Just(topic::agent("pi", AgentTopic::Will).as_str().to_owned()),
        Just(proto::register_topic("fw")),
        Just(proto::call_topic("fw")),
        Just(proto::will_topic("fw")),
        "[a-z/+#]{0,40}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_payloads_never_panic_and_keep_the_books(
        inputs in proptest::collection::vec((topics(), proptest::collection::vec(any::<u8>(), 0..64)), 1..40)
    ) {
        let (mut core, _) = with_task();
        for (i, (t, mut payload)) in inputs.into_iter().enumerate() {
            // Mostly the right version byte, so the decoder gets past it.
            if let Some(first) = payload.first_mut() {
                if i % 4 != 0 {
                    *first = 1;
                }
            }
            let now = 10 + i as u64 * 500;
            if t.starts_with(proto::FRAMEWORK_PREFIX) {
                let _ = core.handle_framework_bytes(now, support::wall(now), &t, &payload);
            } else {
                let _ = core.handle_agent_bytes(now, &t, &payload);
            }
            core.handle_timeout(now);
            drain(&mut core);
            prop_assert_eq!(core.check_invariants(), Ok(()));
        }
    }
}

fn report(running_tasks: u8) -> AgentMsg {
    AgentMsg::Report(agent_nostd_core::wire::ResourceReport {
        free: Resources::new(3_000, 3_996, 0),
        running_tasks,
        soc_temp_decidegrees: agent_nostd_core::wire::NO_TEMPERATURE,
        throttled: 0,
    })
}

#[test]
fn an_agent_whose_reports_disagree_on_its_task_count_is_asked_to_reregister() {
    let (mut core, _) = with_task();
    // The RunTask never arrived: the agent keeps reporting no task.
    send_agent(&mut core, 10, "pi", &report(0)).unwrap();
    assert!(agent_msgs(&drain(&mut core)).is_empty());
    send_agent(&mut core, 30_010, "pi", &report(0)).unwrap();
    assert!(agent_msgs(&drain(&mut core)).is_empty());
    send_agent(&mut core, 60_010, "pi", &report(0)).unwrap();
    assert_eq!(
        agent_msgs(&drain(&mut core)),
        vec![(
            topic::agent("pi", AgentTopic::Cmd).as_str().to_owned(),
            MasterMsg::ReRegisterRequest
        )]
    );
    // Agreeing again resets the clock.
    send_agent(&mut core, 60_020, "pi", &report(1)).unwrap();
    send_agent(&mut core, 90_020, "pi", &report(0)).unwrap();
    assert!(agent_msgs(&drain(&mut core)).is_empty());
}

#[test]
fn a_stale_duplicate_reregistration_does_not_revive_an_ended_task() {
    let (mut core, fid) = with_task();
    send_agent(&mut core, 2, "pi", &status(&fid, 1, TaskState::Running)).unwrap();
    // A re-registration listing t1 as running is published, then t1 finishes…
    let stale = AgentMsg::ReRegister(agent_nostd_core::wire::ReRegister {
        info: info("pi"),
        last_master_epoch: 9,
        down_seq: 0,
        tasks: heapless::Vec::from_slice(&[agent_nostd_core::wire::TaskReport {
            framework_id: id(&fid).unwrap(),
            task_id: id("t1").unwrap(),
            resources: Resources::new(1_000, 100, 0),
            state: TaskState::Running,
        }])
        .unwrap(),
    });
    send_agent(&mut core, 3, "pi", &status(&fid, 2, TaskState::Finished)).unwrap();
    drain(&mut core);
    assert_eq!(core.task(&fid, "t1"), None);
    // …and a duplicate of the re-registration arrives late.
    send_agent(&mut core, 4, "pi", &stale).unwrap();
    let out = drain(&mut core);
    assert_eq!(core.task(&fid, "t1"), None);
    assert!(events(&out)
        .iter()
        .all(|e| !matches!(e, Event::Update(u) if u.task_id == "t1")));
    assert!(matches!(
        agent_msgs(&out)[..],
        [(_, MasterMsg::RegisterAck(_))]
    ));
    assert_eq!(core.check_invariants(), Ok(()));
}

#[test]
fn successive_allocation_rounds_start_at_successive_agents_so_first_offers_spread() {
    let mut core = MasterCore::new(Config::default(), 9, 0).unwrap();
    for agent in ["a", "b", "c"] {
        send_agent(&mut core, 0, agent, &AgentMsg::Register(info(agent))).unwrap();
    }
    support::fw_call(&mut core, 0, "fw", Call::Register(Register::new("fw"))).unwrap();
    // A framework that launches on the first offer of each round and hands back the rest.
    let mut firsts = Vec::new();
    let mut now = 0;
    for n in 0..6 {
        core.handle_timeout(now);
        let offers = events(&drain(&mut core))
            .into_iter()
            .find_map(|e| match e {
                Event::Offers(offers) => Some(offers),
                _ => None,
            })
            .unwrap_or_else(|| panic!("round {n} made offers"));
        assert_eq!(offers.len(), 3, "every agent has room");
        firsts.push(offers[0].agent.agent_id.clone());
        let accept = Call::Accept(Accept {
            offer_id: offers[0].offer_id,
            tasks: vec![TaskInfo::new(
                &format!("t{n}"),
                &["/bin/true"],
                Resources::new(100, 16, 0),
            )],
        });
        let decline = Call::Decline(proto::Decline {
            offer_ids: offers[1..].iter().map(|o| o.offer_id).collect(),
            refuse_seconds: Some(0),
        });
        for call in [accept, decline] {
            support::fw_call(&mut core, now, "fw", call).unwrap();
        }
        drain(&mut core);
        now = core.poll_timeout().expect("another round is due").max(now);
    }
    // Never the same agent twice in a row, and each one twice over six rounds.
    assert!(firsts.windows(2).all(|w| w[0] != w[1]), "{firsts:?}");
    for agent in ["a", "b", "c"] {
        assert_eq!(
            firsts.iter().filter(|f| *f == agent).count(),
            2,
            "{firsts:?}"
        );
    }
}

#[test]
fn an_agent_obeying_a_newer_epoch_is_not_answered_until_the_master_leads_above_it() {
    let mut core = MasterCore::new(Config::default(), 9, 0).unwrap();
    drain(&mut core);
    let re = |epoch| {
        AgentMsg::ReRegister(agent_nostd_core::wire::ReRegister {
            info: info("pi"),
            last_master_epoch: epoch,
            down_seq: 0,
            tasks: heapless::Vec::new(),
        })
    };
    send_agent(&mut core, 1, "pi", &re(40)).unwrap();
    assert!(drain(&mut core).is_empty(), "pi would drop the answer");
    assert_eq!(core.newer_epoch(), Some(40));
    assert!(core.agent("pi").is_none());

    core.raise_epoch(41);
    assert_eq!(core.newer_epoch(), None);
    let out = drain(&mut core);
    assert_eq!(
        agent_msgs(&out),
        [(topic::MASTER_HELLO.to_owned(), MasterMsg::Hello)]
    );
    assert!(matches!(&out[0].message, Outgoing::Agent(m) if m.epoch == 41));
    send_agent(&mut core, 2, "pi", &re(41)).unwrap();
    let out = drain(&mut core);
    assert!(matches!(
        &out[0].message,
        Outgoing::Agent(m) if m.epoch == 41 && matches!(m.msg, MasterMsg::RegisterAck(_))
    ));
    // Lower or equal epochs change nothing.
    core.raise_epoch(41);
    core.raise_epoch(3);
    assert_eq!(core.epoch(), 41);
    assert_eq!(core.stats().epoch_raises, 1);
}

#[test]
fn an_agents_will_of_an_older_connection_is_ignored_and_its_current_one_counts() {
    let mut core = MasterCore::new(Config::default(), 9, 0).unwrap();
    let mut pi = info("pi");
    pi.connection = 5;
    send_agent(&mut core, 0, "pi", &AgentMsg::Register(pi)).unwrap();
    drain(&mut core);
    // The will of the connection before, delivered late (say, after a broker restart).
    send_agent(&mut core, 1, "pi", &AgentMsg::Gone { connection: 4 }).unwrap();
    assert!(core.agent("pi").unwrap().reachable);
    assert_eq!(core.stats().stale_wills, 1);
    send_agent(&mut core, 2, "pi", &AgentMsg::Gone { connection: 5 }).unwrap();
    assert!(!core.agent("pi").unwrap().reachable);
}

#[test]
fn a_framework_that_registers_again_is_offered_again_even_if_it_had_suppressed() {
    let (mut core, fid) = with_task();
    call(&mut core, 2, Call::Suppress);
    drain(&mut core);
    core.handle_timeout(1_100);
    assert!(offers_and_id(&mut core).0.is_empty(), "suppressed");
    // Its connection drops (say, a broker restart); on the way back the Revive it sent beside
    // its registration reaches the master first and is refused.
    call(&mut core, 1_150, Call::Gone { connection: 0 });
    call(&mut core, 1_200, Call::Revive);
    assert_eq!(core.stats().calls_not_registered, 1);
    call(
        &mut core,
        1_250,
        Call::ReRegister(proto::ReRegister {
            framework_id: fid,
            info: Register::new("fw"),
        }),
    );
    drain(&mut core);
    core.handle_timeout(2_200);
    assert!(!offers_and_id(&mut core).0.is_empty(), "offered again");
}
