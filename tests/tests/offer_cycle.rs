//! The offer cycle end to end: offers, accepts, declines and their filters, revive, suppress,
//! rescinds, refusals, kills and finished tasks, on a simulated cluster with real payloads.

use agent_nostd_core::agent::Exit;
use agent_nostd_core::ids::TaskKey;
use agent_nostd_core::wire::{Reason, TaskState};
use agent_nostd_core::Resources;
use bramble_master_core::Config;
use bramble_proto::{Accept, Call, Decline, ErrorCode, Event, Kill, Register, TaskInfo};
use bramble_tests::sim::{Manual, Sim, SimConfig};

const GIB: u32 = 1024;

fn res(cpus: u32, gib: u32) -> Resources {
    Resources::new(cpus * 1000, gib * GIB, 0)
}

fn task(id: &str, r: Resources) -> TaskInfo {
    TaskInfo::new(id, &["/usr/bin/worker", "--fast"], r)
}

fn accept(offer_id: u64, tasks: Vec<TaskInfo>) -> Call {
    Call::Accept(Accept { offer_id, tasks })
}

/// One agent of 4 CPU / 4 GB and two manual frameworks, settled after the first round.
fn two_frameworks_one_agent() -> Sim {
    let mut sim = Sim::perfect();
    sim.add_agent("pi1", res(4, 4), &[("sensor", "bme280")]);
    sim.add_framework("fw1", Register::new("one"), Manual);
    sim.add_framework("fw2", Register::new("two"), Manual);
    sim.run_for(50);
    sim
}

#[test]
fn offer_example_from_the_brief_launches_two_tasks_and_offers_the_remainder_to_framework_two() {
    let mut sim = two_frameworks_one_agent();
    // 1-2. The allocator offers framework 1 everything agent 1 has.
    let offers = sim.frameworks[0].offers();
    assert_eq!(offers.len(), 1);
    assert_eq!(offers[0].agent.agent_id, "pi1");
    assert_eq!(offers[0].resources, res(4, 4));
    assert_eq!(offers[0].agent.attributes[0].key, "sensor");
    assert!(sim.frameworks[1].offers().is_empty());

    // 3. Framework 1 answers with (2 CPU, 1 GB) and (1 CPU, 2 GB).
    let offer_id = offers[0].offer_id;
    sim.call(
        0,
        accept(offer_id, vec![task("t1", res(2, 1)), task("t2", res(1, 2))]),
    );
    sim.run_for(50);

    // 4. Agent 1 starts them and framework 1 sees them run.
    let fid = sim.fid(0);
    assert_eq!(
        sim.agents[0].launched,
        vec![
            TaskKey::new(&fid, "t1").unwrap(),
            TaskKey::new(&fid, "t2").unwrap()
        ]
    );
    for t in ["t1", "t2"] {
        let states: Vec<TaskState> = sim.frameworks[0]
            .updates(t)
            .iter()
            .map(|u| u.state)
            .collect();
        assert_eq!(states, vec![TaskState::Starting, TaskState::Running], "{t}");
        assert_eq!(
            sim.master.task(&fid, t).map(|v| v.state),
            Some(TaskState::Running)
        );
    }
    // The remaining 1 CPU and 1 GB go to framework 2.
    let offers2 = sim.frameworks[1].offers();
    assert_eq!(offers2.len(), 1);
    assert_eq!(offers2[0].resources, res(1, 1));
    assert_eq!(sim.frameworks[0].offers().len(), 1);
}

#[test]
fn accept_that_overcommits_the_offer_is_refused_with_a_reason() {
    let mut sim = two_frameworks_one_agent();
    let offer_id = sim.frameworks[0].offers()[0].offer_id;
    sim.call(0, accept(offer_id, vec![task("big", res(5, 1))]));
    sim.run_for(20);
    let errors = sim.frameworks[0].errors();
    assert_eq!(
        errors,
        vec![Event::Error {
            code: ErrorCode::AcceptRefused,
            offer_id: Some(offer_id),
            message: "task big asks cpu 5000m but the offer has 4000m".into(),
        }]
    );
    assert!(sim.agents[0].launched.is_empty());

    // Each task fits on its own but not together: refused whole, nothing launched.
    sim.run_until_cond(5_000, |s| s.frameworks[0].offers().len() >= 2);
    let offer = sim.frameworks[0].offers()[1].clone();
    sim.call(
        0,
        accept(
            offer.offer_id,
            vec![task("a", res(3, 1)), task("b", res(3, 1))],
        ),
    );
    sim.run_for(20);
    let Event::Error { code, message, .. } = sim.frameworks[0].errors()[1].clone() else {
        unreachable!()
    };
    assert_eq!(code, ErrorCode::AcceptRefused);
    assert!(
        message.contains("in all but the offer has cpu 4000m"),
        "{message}"
    );
    assert!(sim.agents[0].launched.is_empty());
    assert_eq!(sim.master.stats().accepts_refused, 2);
}

#[test]
fn accepting_an_offer_twice_fails_the_second_time() {
    let mut sim = two_frameworks_one_agent();
    let offer_id = sim.frameworks[0].offers()[0].offer_id;
    sim.call(0, accept(offer_id, vec![task("t1", res(1, 1))]));
    sim.call(0, accept(offer_id, vec![task("t2", res(1, 1))]));
    sim.run_for(20);
    assert_eq!(sim.agents[0].launched.len(), 1);
    assert!(matches!(
        sim.frameworks[0].errors()[..],
        [Event::Error {
            code: ErrorCode::UnknownOffer,
            ..
        }]
    ));
}

#[test]
fn declined_agent_is_not_reoffered_before_the_filter_expires() {
    let mut sim = Sim::perfect();
    sim.add_agent("pi1", res(4, 4), &[]);
    sim.add_framework("fw1", Register::new("one"), Manual);
    sim.run_for(50);
    let offer_id = sim.frameworks[0].offers()[0].offer_id;
    let declined_at = sim.now;
    sim.call(
        0,
        Call::Decline(Decline {
            offer_ids: vec![offer_id],
            refuse_seconds: Some(10),
        }),
    );
    // Rounds run every second, yet nothing comes back for 10 s.
    sim.run_for(9_000);
    assert_eq!(sim.frameworks[0].offers().len(), 1);
    sim.run_for(3_000);
    let offers = sim.frameworks[0].offers();
    assert_eq!(offers.len(), 2);
    let second_at = sim.frameworks[0]
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Offers(_)))
        .nth(1)
        .map(|(t, _)| *t)
        .unwrap();
    assert!(
        second_at >= declined_at + 10_000,
        "re-offered at {second_at}"
    );
}

#[test]
fn declined_resources_go_to_the_other_framework_at_once() {
    let mut sim = two_frameworks_one_agent();
    let offer_id = sim.frameworks[0].offers()[0].offer_id;
    sim.call(
        0,
        Call::Decline(Decline {
            offer_ids: vec![offer_id],
            refuse_seconds: None,
        }),
    );
    sim.run_for(20);
    assert_eq!(sim.frameworks[1].offers().len(), 1);
    assert_eq!(sim.frameworks[1].offers()[0].resources, res(4, 4));
}

#[test]
fn revive_clears_decline_filters() {
    let mut sim = Sim::perfect();
    sim.add_agent("pi1", res(4, 4), &[]);
    sim.add_framework("fw1", Register::new("one"), Manual);
    sim.run_for(50);
    let offer_id = sim.frameworks[0].offers()[0].offer_id;
    sim.call(
        0,
        Call::Decline(Decline {
            offer_ids: vec![offer_id],
            refuse_seconds: Some(3_600),
        }),
    );
    sim.run_for(2_000);
    assert_eq!(sim.frameworks[0].offers().len(), 1);
    sim.call(0, Call::Revive);
    sim.run_for(20);
    assert_eq!(sim.frameworks[0].offers().len(), 2);
}

#[test]
fn suppressed_framework_gets_no_offers_until_it_revives() {
    let mut sim = Sim::perfect();
    sim.add_framework("fw1", Register::new("one"), Manual);
    sim.run_for(10);
    sim.call(0, Call::Suppress);
    sim.run_for(10);
    sim.add_agent("pi1", res(4, 4), &[]);
    sim.run_for(5_000);
    assert!(sim.frameworks[0].offers().is_empty());
    sim.call(0, Call::Revive);
    sim.run_for(20);
    assert_eq!(sim.frameworks[0].offers().len(), 1);
}

#[test]
fn unanswered_offer_is_rescinded_after_offer_timeout_and_given_to_others() {
    let config = Config {
        offer_timeout_ms: 10_000,
        ..Config::default()
    };
    let mut sim = Sim::new(SimConfig::default(), config);
    sim.add_agent("pi1", res(4, 4), &[]);
    sim.add_framework("fw1", Register::new("one"), Manual);
    sim.add_framework("fw2", Register::new("two"), Manual);
    sim.run_for(50);
    let offer_id = sim.frameworks[0].offers()[0].offer_id;
    sim.run_for(9_000);
    assert!(sim.frameworks[1].offers().is_empty());
    sim.run_for(2_000);
    assert!(sim.frameworks[0]
        .events
        .iter()
        .any(|(_, e)| *e == Event::Rescind { offer_id }));
    assert_eq!(sim.frameworks[1].offers().len(), 1);
    // Accepting the rescinded offer fails and launches nothing.
    sim.call(0, accept(offer_id, vec![task("late", res(1, 1))]));
    sim.run_for(20);
    assert!(sim.agents[0].launched.is_empty());
    assert_eq!(sim.master.stats().offers_rescinded, 1);
}

#[test]
fn finished_task_resources_come_back_in_the_next_offer() {
    let mut sim = Sim::perfect();
    sim.add_agent("pi1", res(4, 4), &[]);
    sim.add_framework("fw1", Register::new("one"), Manual);
    sim.run_for(50);
    let offer_id = sim.frameworks[0].offers()[0].offer_id;
    sim.call(0, accept(offer_id, vec![task("t1", res(4, 4))]));
    sim.run_for(2_000);
    assert_eq!(
        sim.frameworks[0].offers().len(),
        1,
        "nothing free while t1 runs"
    );
    sim.finish_task(0, 0, "t1", Exit::Code(0));
    sim.run_for(50);
    let last = sim.frameworks[0].updates("t1").last().cloned().unwrap();
    assert_eq!(last.state, TaskState::Finished);
    assert_eq!(last.reason, Reason::Exited { code: 0 });
    let offers = sim.frameworks[0].offers();
    assert_eq!(offers.len(), 2);
    assert_eq!(offers[1].resources, res(4, 4));
    let fid = sim.fid(0);
    assert_eq!(sim.master.task(&fid, "t1"), None);
}

#[test]
fn failed_task_reports_its_exit_code_and_oom() {
    let mut sim = Sim::perfect();
    sim.add_agent("pi1", res(4, 4), &[]);
    sim.add_framework("fw1", Register::new("one"), Manual);
    sim.run_for(50);
    let offer_id = sim.frameworks[0].offers()[0].offer_id;
    sim.call(
        0,
        accept(offer_id, vec![task("t1", res(1, 1)), task("t2", res(1, 1))]),
    );
    sim.run_for(50);
    sim.finish_task(0, 0, "t1", Exit::Code(3));
    sim.finish_task(0, 0, "t2", Exit::OomKilled);
    sim.run_for(50);
    let t1 = sim.frameworks[0].updates("t1").last().cloned().unwrap();
    assert_eq!(
        (t1.state, t1.reason),
        (TaskState::Failed, Reason::Exited { code: 3 })
    );
    let t2 = sim.frameworks[0].updates("t2").last().cloned().unwrap();
    assert_eq!(
        (t2.state, t2.reason),
        (TaskState::Failed, Reason::MemoryLimit)
    );
    assert!(t2.message.contains("OOM"), "{}", t2.message);
}

#[test]
fn kill_reaches_the_agent_and_the_framework_sees_killed() {
    let mut sim = Sim::perfect();
    sim.add_agent("pi1", res(4, 4), &[]);
    sim.add_framework("fw1", Register::new("one"), Manual);
    sim.run_for(50);
    let offer_id = sim.frameworks[0].offers()[0].offer_id;
    sim.call(0, accept(offer_id, vec![task("t1", res(1, 1))]));
    sim.run_for(50);
    sim.agents[0].ignore_term = true;
    sim.call(
        0,
        Call::Kill(Kill {
            task_id: "t1".into(),
            grace_ms: 3_000,
        }),
    );
    sim.run_for(1_000);
    // SIGTERM went out and the task ignores it: still running during the grace period.
    assert_eq!(sim.frameworks[0].state("t1"), Some(TaskState::Running));
    sim.run_for(3_000);
    let signals: Vec<_> = sim.agents[0].signals.iter().map(|(_, s, _)| *s).collect();
    use agent_nostd_core::agent::Signal;
    assert_eq!(signals, vec![Signal::Term, Signal::Kill]);
    let last = sim.frameworks[0].updates("t1").last().cloned().unwrap();
    assert_eq!(
        (last.state, last.reason),
        (TaskState::Killed, Reason::KilledByRequest)
    );
    assert!(sim.agents[0].running.is_empty());
}

#[test]
fn killing_an_unknown_task_reports_it_lost() {
    let mut sim = Sim::perfect();
    sim.add_framework("fw1", Register::new("one"), Manual);
    sim.run_for(10);
    sim.call(
        0,
        Call::Kill(Kill {
            task_id: "ghost".into(),
            grace_ms: 0,
        }),
    );
    sim.run_for(10);
    let u = sim.frameworks[0].updates("ghost");
    assert_eq!(u.len(), 1);
    assert_eq!(
        (u[0].state, u[0].reason),
        (TaskState::Lost, Reason::UnknownTask)
    );
}

#[test]
fn reconcile_reports_listed_tasks_or_all_of_them() {
    let mut sim = Sim::perfect();
    sim.add_agent("pi1", res(4, 4), &[]);
    sim.add_framework("fw1", Register::new("one"), Manual);
    sim.run_for(50);
    let offer_id = sim.frameworks[0].offers()[0].offer_id;
    sim.call(
        0,
        accept(offer_id, vec![task("t1", res(1, 1)), task("t2", res(1, 1))]),
    );
    sim.run_for(50);
    let before = sim.frameworks[0].events.len();
    sim.call(
        0,
        Call::Reconcile {
            task_ids: vec!["t2".into(), "nope".into()],
        },
    );
    sim.run_for(10);
    let explicit: Vec<_> = sim.frameworks[0].events[before..]
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Update(u) => Some((u.task_id.clone(), u.state)),
            _ => None,
        })
        .collect();
    assert_eq!(
        explicit,
        vec![
            ("t2".into(), TaskState::Running),
            ("nope".into(), TaskState::Lost)
        ]
    );
    let before = sim.frameworks[0].events.len();
    sim.call(0, Call::Reconcile { task_ids: vec![] });
    sim.run_for(10);
    let implicit: Vec<_> = sim.frameworks[0].events[before..]
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Update(u) => Some((u.task_id.clone(), u.state)),
            _ => None,
        })
        .collect();
    assert_eq!(
        implicit,
        vec![
            ("t1".into(), TaskState::Running),
            ("t2".into(), TaskState::Running)
        ]
    );
}

#[test]
fn teardown_kills_every_task_and_frees_the_agent() {
    let mut sim = two_frameworks_one_agent();
    let offer_id = sim.frameworks[0].offers()[0].offer_id;
    sim.call(0, accept(offer_id, vec![task("t1", res(4, 4))]));
    sim.run_for(50);
    let fid = sim.fid(0);
    sim.call(0, Call::Teardown);
    sim.run_for(50);
    assert!(sim.agents[0].running.is_empty());
    assert!(sim.master.framework(&fid).is_none());
    // Framework 2 now gets the whole agent.
    let offers = sim.frameworks[1].offers();
    assert_eq!(offers.last().map(|o| o.resources), Some(res(4, 4)));
    // A torn-down framework cannot come back under its old id.
    sim.reconnect_framework(0);
    sim.run_for(10);
    assert!(matches!(
        sim.frameworks[0].events.last(),
        Some((
            _,
            Event::Error {
                code: ErrorCode::RegistrationRefused,
                ..
            }
        ))
    ));
}

#[test]
fn calls_from_a_client_without_a_session_are_answered_with_a_not_registered_hint() {
    let mut master = bramble_master_core::MasterCore::new(Config::default(), 5, 0).unwrap();
    while master.poll_transmit().is_some() {}
    let call = bramble_proto::frame::seal(
        Call::Revive.encode(),
        &agent_nostd_core::auth::MessageKey::anonymous(),
        bramble_proto::frame::Direction::FrameworkUp,
        "stranger",
        77,
        1,
    );
    assert!(master
        .handle_framework_bytes(0, 0, "bramble/v1/framework/call/stranger", &call)
        .is_err());
    let t = master.poll_transmit().unwrap();
    assert_eq!(
        t.seal, None,
        "not a frame: there is no session to seal it in"
    );
    assert_eq!(t.topic, "bramble/v1/framework/event/stranger");
    assert!(matches!(
        t.message,
        bramble_master_core::Outgoing::Framework {
            event: Event::Error {
                code: ErrorCode::NotRegistered,
                ..
            },
            ..
        }
    ));
}

/// Launches one task on boards with `sensor=bme280` and declines the others for an hour.
struct SensorReader {
    launched: bool,
}

impl bramble_tests::sim::Script for SensorReader {
    fn on_event(&mut self, _now: u64, event: &Event) -> Vec<Call> {
        let Event::Offers(offers) = event else {
            return Vec::new();
        };
        offers
            .iter()
            .map(|o| {
                let has_sensor = o
                    .agent
                    .attributes
                    .iter()
                    .any(|a| a.key == "sensor" && a.value == "bme280");
                if has_sensor && !self.launched {
                    self.launched = true;
                    accept(o.offer_id, vec![task("reader", res(1, 1))])
                } else {
                    Call::Decline(Decline {
                        offer_ids: vec![o.offer_id],
                        refuse_seconds: Some(3_600),
                    })
                }
            })
            .collect()
    }
}

#[test]
fn offers_carry_agent_attributes_so_a_framework_can_pick_its_boards() {
    let mut sim = Sim::perfect();
    sim.add_agent("plain", res(4, 4), &[("model", "Pi 4")]);
    sim.add_agent(
        "sensor",
        res(4, 4),
        &[("sensor", "bme280"), ("model", "Pi Zero 2")],
    );
    sim.add_framework(
        "reader",
        Register::new("reader"),
        SensorReader { launched: false },
    );
    sim.run_for(10_000);
    assert!(sim.agents[0].launched.is_empty());
    assert_eq!(sim.agents[1].launched.len(), 1);
    let offers = sim.frameworks[0].offers();
    let sensor_offer = offers
        .iter()
        .find(|o| o.agent.agent_id == "sensor")
        .unwrap();
    assert_eq!(sensor_offer.agent.hostname, "sensor.lan");
    assert_eq!(sensor_offer.agent.arch, "aarch64");
    assert_eq!(sensor_offer.agent.attributes.len(), 2);
    // The declined board is not offered again within the hour.
    let plain_offers = offers
        .iter()
        .filter(|o| o.agent.agent_id == "plain")
        .count();
    assert_eq!(plain_offers, 1);
}
