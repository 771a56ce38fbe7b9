//! End-to-end delivery in `MasterCore`, message by message: a framework's acknowledgement is what
//! releases an agent's update, unacknowledged updates come back on re-registration, ended tasks
//! reconcile to their real end, and calls the master cannot act on get an answer.

use agent_nostd_core::ids::id;
use agent_nostd_core::topic::{self, AgentTopic};
use agent_nostd_core::wire::{AgentMsg, MasterMsg, Reason, TaskState};
use agent_nostd_core::Resources;
use bramble_master_core::{Config, FrameworkState, MasterCore, Outgoing, Transmit};
use bramble_proto::{
    self as proto, Accept, Acknowledge, Call, ErrorCode, Event, ReRegister, Register, TaskInfo,
};

mod support;
use support::{
    agent_info as info, call, drain as offers_and_id, events, send_agent, status_msg as status,
    transmits as drain,
};

const WINDOW: u64 = 15_000;

fn updates(out: &[Transmit]) -> Vec<proto::StatusUpdate> {
    events(out)
        .into_iter()
        .filter_map(|e| match e {
            Event::Update(u) => Some(u),
            _ => None,
        })
        .collect()
}

fn acks(out: &[Transmit]) -> Vec<u32> {
    out.iter()
        .filter_map(|t| match &t.message {
            Outgoing::Agent(m) => match m.msg {
                MasterMsg::StatusAck(ref a)
                    if t.topic == topic::agent("pi", AgentTopic::Cmd).as_str() =>
                {
                    Some(a.update_id)
                }
                _ => None,
            },
            Outgoing::Framework { .. } => None,
        })
        .collect()
}

fn agent(core: &mut MasterCore, now: u64, msg: &AgentMsg) {
    send_agent(core, now, "pi", msg);
}

fn ack(tid: &str, update_id: u32) -> Call {
    Call::Acknowledge(Acknowledge {
        agent_id: "pi".into(),
        task_id: tid.into(),
        update_id,
    })
}

/// A master (epoch 9, started at 0, `config`) with agent `pi` and framework client `fw`
/// (connection 7) running `tasks` (STAGING). Returns the framework id.
fn cluster(config: Config, tasks: &[&str]) -> (MasterCore, String) {
    let mut core = MasterCore::new(config, 9, 0).unwrap();
    agent(&mut core, 0, &AgentMsg::Register(info("pi")));
    let mut register = Register::new("fw");
    register.connection = 7;
    call(&mut core, 0, Call::Register(register));
    core.handle_timeout(0);
    let (offers, fid) = offers_and_id(&mut core);
    let tasks = tasks
        .iter()
        .map(|t| TaskInfo::new(t, &["/bin/true"], Resources::new(100, 10, 0)))
        .collect();
    call(
        &mut core,
        1,
        Call::Accept(Accept {
            offer_id: offers[0].offer_id,
            tasks,
        }),
    );
    drain(&mut core);
    (core, fid.unwrap())
}

#[test]
fn an_update_the_framework_missed_while_disconnected_is_resent_when_it_registers_again() {
    let (mut core, fid) = cluster(Config::default(), &["t1"]);
    agent(
        &mut core,
        2,
        &status(&fid, "t1", 1, TaskState::Running, Reason::None),
    );
    drain(&mut core);
    call(&mut core, 3, Call::Gone { connection: 7 });
    agent(
        &mut core,
        4,
        &status(
            &fid,
            "t1",
            2,
            TaskState::Finished,
            Reason::Exited { code: 0 },
        ),
    );
    let out = drain(&mut core);
    assert!(events(&out).is_empty() && acks(&out).is_empty());

    call(
        &mut core,
        5,
        Call::ReRegister(ReRegister {
            framework_id: fid.clone(),
            info: Register::new("fw"),
        }),
    );
    let resent = updates(&drain(&mut core));
    let states: Vec<_> = resent.iter().map(|u| (u.state, u.update_id)).collect();
    assert_eq!(states, [(TaskState::Finished, Some(2))]);
    assert_eq!(core.stats().updates_resent, 1);
    call(&mut core, 6, ack("t1", 2));
    assert_eq!(acks(&drain(&mut core)), [2]);
    // Acknowledged: the next registration resends nothing.
    call(&mut core, 7, Call::Register(Register::new("fw")));
    assert!(updates(&drain(&mut core)).is_empty());
}

#[test]
fn reconciling_an_ended_task_answers_its_real_end_not_lost() {
    let (mut core, fid) = cluster(Config::default(), &["t1"]);
    let failed = Reason::Exited { code: 3 };
    agent(
        &mut core,
        2,
        &status(&fid, "t1", 1, TaskState::Failed, failed),
    );
    call(&mut core, 3, ack("t1", 1));
    drain(&mut core);
    assert!(
        core.task(&fid, "t1").is_none(),
        "ended tasks leave the task table"
    );
    call(
        &mut core,
        4,
        Call::Reconcile {
            task_ids: vec!["t1".into()],
        },
    );
    let answer = updates(&drain(&mut core));
    assert_eq!(answer.len(), 1);
    assert_eq!(
        (answer[0].state, answer[0].reason, answer[0].update_id),
        (TaskState::Failed, failed, None)
    );
}

#[test]
fn the_completed_task_cache_keeps_its_bound_and_forgets_the_oldest_first() {
    let config = Config {
        max_completed_tasks: 2,
        ..Config::default()
    };
    let (mut core, fid) = cluster(config, &["t1", "t2", "t3"]);
    for (n, tid) in ["t1", "t2", "t3"].into_iter().enumerate() {
        let n = n as u32 + 1;
        agent(
            &mut core,
            2,
            &status(&fid, tid, n, TaskState::Finished, Reason::None),
        );
        call(&mut core, 3, ack(tid, n));
    }
    drain(&mut core);
    assert_eq!(core.stats().completed_evicted, 1);
    core.check_invariants().unwrap();
    let task_ids = vec!["t1".into(), "t3".into()];
    call(&mut core, 4, Call::Reconcile { task_ids });
    let answer: Vec<_> = updates(&drain(&mut core))
        .into_iter()
        .map(|u| (u.task_id, u.state))
        .collect();
    assert_eq!(
        answer,
        [
            ("t1".to_owned(), TaskState::Lost),
            ("t3".to_owned(), TaskState::Finished)
        ]
    );
}

#[test]
fn an_unknown_task_of_a_framework_from_an_earlier_master_is_answered_only_after_the_window() {
    let mut core = MasterCore::new(Config::default(), 9, 0).unwrap();
    call(
        &mut core,
        0,
        Call::ReRegister(ReRegister {
            framework_id: "1-1".into(),
            info: Register::new("fw"),
        }),
    );
    drain(&mut core);
    let reconcile = || Call::Reconcile {
        task_ids: vec!["ghost".into()],
    };
    call(&mut core, 100, reconcile());
    assert!(
        updates(&drain(&mut core)).is_empty(),
        "its agent may not be back yet"
    );
    assert_eq!(core.stats().unknown_task_answers_deferred, 1);
    call(&mut core, WINDOW, reconcile());
    let answer = updates(&drain(&mut core));
    assert_eq!(
        answer
            .iter()
            .map(|u| (u.state, u.reason))
            .collect::<Vec<_>>(),
        [(TaskState::Lost, Reason::UnknownTask)]
    );
}

#[test]
fn a_last_will_from_an_older_connection_is_ignored_and_the_current_ones_applies() {
    let (mut core, fid) = cluster(Config::default(), &[]);
    call(&mut core, 2, Call::Gone { connection: 6 });
    assert_eq!(core.framework(&fid).unwrap().state, FrameworkState::Active);
    assert_eq!(core.stats().stale_wills, 1);
    call(&mut core, 3, Call::Gone { connection: 7 });
    assert!(matches!(
        core.framework(&fid).unwrap().state,
        FrameworkState::Disconnected { .. }
    ));
}

/// Client `fw` speaks to `core` in a session (its registration was authentic) but has no
/// framework there (the registration was refused): what a framework whose last will was taken,
/// or that was torn down, looks like to the master.
fn session_without_framework(core: &mut MasterCore) {
    let mut refused = Register::new("fw");
    refused.weight = -1.0;
    call(core, 0, Call::Register(refused));
    drain(core);
    assert!(core.framework_session("fw").is_some());
}

#[test]
fn an_accept_from_a_client_with_no_framework_is_answered_with_its_offer_and_each_task_lost() {
    let mut core = MasterCore::new(Config::default(), 9, 0).unwrap();
    session_without_framework(&mut core);
    let tasks = ["a", "b"]
        .iter()
        .map(|t| TaskInfo::new(t, &["/bin/true"], Resources::new(100, 10, 0)))
        .collect();
    call(&mut core, 1, Call::Accept(Accept { offer_id: 5, tasks }));
    let out = events(&drain(&mut core));
    assert!(matches!(
        &out[0],
        Event::Error {
            code: ErrorCode::NotRegistered,
            offer_id: Some(5),
            ..
        }
    ));
    let lost: Vec<_> = out[1..]
        .iter()
        .map(|e| match e {
            Event::Update(u) => (u.task_id.as_str(), u.state, u.reason, u.update_id),
            other => panic!("expected an update, got {other:?}"),
        })
        .collect();
    assert_eq!(
        lost,
        [
            ("a", TaskState::Lost, Reason::LaunchFailed, None),
            ("b", TaskState::Lost, Reason::LaunchFailed, None)
        ]
    );
    assert_eq!(core.stats().calls_not_registered, 1);
}

#[test]
fn an_update_nobody_is_left_to_acknowledge_is_acknowledged_by_the_master() {
    let (mut core, fid) = cluster(Config::default(), &["t1"]);
    call(&mut core, 2, Call::Teardown);
    drain(&mut core);
    agent(
        &mut core,
        3,
        &status(&fid, "t1", 1, TaskState::Killed, Reason::KilledByRequest),
    );
    let out = drain(&mut core);
    assert!(events(&out).is_empty());
    assert_eq!(acks(&out), [1]);
}

#[test]
fn a_late_resend_of_a_running_task_that_ended_is_stale_and_its_kill_answer_is_not_a_second_end() {
    let (mut core, fid) = cluster(Config::default(), &["t1"]);
    agent(
        &mut core,
        2,
        &status(&fid, "t1", 1, TaskState::Running, Reason::None),
    );
    let done = Reason::Exited { code: 0 };
    agent(
        &mut core,
        3,
        &status(&fid, "t1", 2, TaskState::Finished, done),
    );
    call(&mut core, 4, ack("t1", 2));
    drain(&mut core);
    // RUNNING comes again, late (after a broker restart the agent resends everything at once).
    agent(
        &mut core,
        5,
        &status(&fid, "t1", 1, TaskState::Running, Reason::None),
    );
    let out = drain(&mut core);
    let kills = out
        .iter()
        .filter(
            |t| matches!(&t.message, Outgoing::Agent(m) if matches!(m.msg, MasterMsg::KillTask(_))),
        )
        .count();
    assert_eq!(kills, 0, "a task that ended is not killed");
    assert_eq!(acks(&out), [1]);
    assert!(events(&out).is_empty());
    // Were a kill to reach the agent anyway, its LOST answer contradicts nothing the framework hears.
    agent(
        &mut core,
        6,
        &status(&fid, "t1", 3, TaskState::Lost, Reason::UnknownTask),
    );
    let out = drain(&mut core);
    assert!(events(&out).is_empty());
    assert_eq!(acks(&out), [3]);
}

/// Agent `pi` re-registers (with epoch 9) listing task `t1` of `fid` in `state`.
fn reregister_listing(core: &mut MasterCore, now: u64, fid: &str, state: TaskState) {
    let mut tasks = heapless::Vec::new();
    tasks
        .push(agent_nostd_core::wire::TaskReport {
            framework_id: id(fid).unwrap(),
            task_id: id("t1").unwrap(),
            resources: Resources::new(100, 10, 0),
            state,
        })
        .unwrap();
    let re = agent_nostd_core::wire::ReRegister {
        info: info("pi"),
        last_master_epoch: 9,
        down_seq: 0,
        tasks,
    };
    agent(core, now, &AgentMsg::ReRegister(re));
}

#[test]
fn an_end_known_only_from_the_agents_task_list_is_reconciled_once_the_agents_own_update_came() {
    let (mut core, fid) = cluster(Config::default(), &["t1"]);
    agent(
        &mut core,
        2,
        &status(&fid, "t1", 1, TaskState::Running, Reason::None),
    );
    call(&mut core, 3, ack("t1", 1));
    drain(&mut core);
    // The FAILED update was lost; the agent re-registers listing the task ended.
    reregister_listing(&mut core, 4, &fid, TaskState::Failed);
    drain(&mut core);
    let reconcile = || Call::Reconcile {
        task_ids: vec!["t1".into()],
    };
    call(&mut core, 5, reconcile());
    assert!(
        updates(&drain(&mut core)).is_empty(),
        "no answer without the exit code while the agent's own update is on its way"
    );
    let exited = Reason::Exited { code: 3 };
    agent(
        &mut core,
        6,
        &status(&fid, "t1", 2, TaskState::Failed, exited),
    );
    let u = updates(&drain(&mut core));
    assert_eq!((u[0].state, u[0].reason), (TaskState::Failed, exited));
    call(&mut core, 7, reconcile());
    let u = updates(&drain(&mut core));
    assert_eq!((u[0].state, u[0].reason), (TaskState::Failed, exited));
}

#[test]
fn an_end_known_only_from_the_task_list_of_an_agent_that_went_unreachable_waits_until_the_agent_is_forgotten(
) {
    let config = Config::default();
    let (timeout, gc) = (config.agent_timeout_ms, config.unreachable_gc_ms);
    let (mut core, fid) = cluster(config, &["t1"]);
    reregister_listing(&mut core, 4, &fid, TaskState::Finished);
    drain(&mut core);
    let reconcile = || Call::Reconcile {
        task_ids: vec!["t1".into()],
    };
    // The agent falls silent before its FINISHED update with the exit code gets through.
    let mut now = 5;
    while now < 4 + timeout * 2 {
        core.handle_timeout(now);
        now += 1_000;
    }
    drain(&mut core);
    call(&mut core, now, reconcile());
    assert!(
        updates(&drain(&mut core)).is_empty(),
        "an unreachable agent may be back with the exit code"
    );
    while now < 4 + timeout * 2 + gc + 10_000 {
        core.handle_timeout(now);
        now += 1_000;
    }
    drain(&mut core);
    call(&mut core, now, reconcile());
    let u = updates(&drain(&mut core));
    assert_eq!(u.len(), 1, "answered once the agent is forgotten");
    assert_eq!(
        (u[0].state, u[0].reason),
        (TaskState::Finished, Reason::None)
    );
    assert!(u[0].message.contains("exit code"), "{}", u[0].message);
}

/// A master of term 2 (epoch `2 << 16`), with an agent and framework `fw` registered.
fn term_two_master() -> MasterCore {
    let mut core = MasterCore::new(Config::default(), 2 << 16, 0).unwrap();
    send_agent(&mut core, 0, "pi", &AgentMsg::Register(info("pi")));
    call(&mut core, 0, Call::Register(Register::new("fw")));
    drain(&mut core);
    core
}

fn accept_of(offer_id: u64) -> Call {
    Call::Accept(Accept {
        offer_id,
        tasks: vec![TaskInfo::new(
            "a",
            &["/bin/true"],
            Resources::new(100, 10, 0),
        )],
    })
}

#[test]
fn an_accept_of_an_earlier_masters_offer_is_refused_without_saying_its_tasks_did_not_launch() {
    // The earlier master (term 1) may have launched them: reconciliation settles them.
    let earlier = (1 << 32) | 3;
    let mut core = term_two_master();
    call(&mut core, 1, accept_of(earlier));
    let out = events(&drain(&mut core));
    assert!(
        matches!(&out[..], [Event::Error { code: ErrorCode::UnknownOffer, offer_id: Some(o), .. }] if *o == earlier),
        "{out:?}"
    );
    // The same from a client with no framework: NotRegistered, and no TASK_LOST either.
    let mut core = MasterCore::new(Config::default(), 2 << 16, 0).unwrap();
    session_without_framework(&mut core);
    call(&mut core, 1, accept_of(earlier));
    let out = events(&drain(&mut core));
    assert!(
        matches!(
            &out[..],
            [Event::Error {
                code: ErrorCode::NotRegistered,
                ..
            }]
        ),
        "{out:?}"
    );
    assert_eq!(core.stats().foreign_accepts, 1);
}

#[test]
fn an_accept_of_an_unknown_offer_of_this_masters_term_reports_its_tasks_lost() {
    let mut core = term_two_master();
    call(&mut core, 1, accept_of((2 << 32) | 999));
    let out = events(&drain(&mut core));
    assert!(
        matches!(&out[..], [Event::Error { code: ErrorCode::UnknownOffer, .. }, Event::Update(u)]
            if u.task_id == "a" && u.state == TaskState::Lost && u.reason == Reason::LaunchFailed),
        "{out:?}"
    );
    assert_eq!(core.stats().foreign_accepts, 0);
}
