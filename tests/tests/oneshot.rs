//! `bramble run`'s one-off framework in the simulation: the real [`OneShot`] scheduler, driven by
//! the SDK's `SchedulerCore` and registered as `bramble run` registers it, runs one plain command
//! on a simulated board; the test decides when and how its process exits.
//!
//! The property covers seeded agent↔master message loss (up to 30 %), duplication of every
//! message (up to 30 %, framework calls and events included), delays of 1 to 80 ms, restarts of
//! the matching board's agent (its processes live on) at a random time and (or) while the task
//! runs, a master restart at a random time or not at all, and any exit code from 0 to 255. It checks that the one-shot stops, that its task ran on at most one
//! board, once, and that its exit status is the task's own code when the task ran, or 1 when the
//! task was lost before it started (its `RunTask` was lost and the master gave it up, which
//! `bramble run` reports and does not retry).
//!
//! What it leaves out, as `frameworks.rs` does and for the same reasons (the delivery issues that
//! follow are to fix them): the master restarts only at the first moment from the drawn time on
//! when no framework call or event is in flight and the boards hold every task the master has
//! ([`Sim::run_until_master_is_replaceable`]); framework traffic itself is never lost, as the
//! simulation models schedulers' persistent QoS 1 sessions.

use agent_nostd_core::agent::Exit;
use agent_nostd_core::wire::{Reason, TaskState};
use agent_nostd_core::Resources;
use bramble_master_core::Config;
use bramble_proto::{Call, ErrorCode, Event};
use bramble_sdk::oneshot::{registration, OneShot, RunSpec};
use bramble_sdk::scheduler::Outgoing;
use bramble_tests::sim::{SchedulerId, Sim, SimConfig};
use proptest::prelude::*;

const TASK: &str = "run-1";

/// pi0 has no attributes, pi1 the sensor, pi2 a room.
fn three_boards(config: SimConfig) -> Sim {
    let mut sim = Sim::new(config, Config::default());
    let attrs: [&[(&str, &str)]; 3] = [&[], &[("sensor", "bme280")], &[("room", "attic")]];
    for (i, a) in attrs.into_iter().enumerate() {
        sim.add_agent(&format!("pi{i}"), Resources::new(1_000, 1_024, 0), a);
    }
    sim
}

/// `bramble run --cpus 0.5 --mem 64 --constraint sensor=bme280 -- /usr/bin/read-sensor --once`.
fn one_shot(sim: &mut Sim) -> SchedulerId<OneShot> {
    let spec = RunSpec {
        task_id: TASK.into(),
        argv: vec!["/usr/bin/read-sensor".into(), "--once".into()],
        resources: Resources::new(500, 64, 0),
        constraints: vec![("sensor".into(), "bme280".into())],
    };
    sim.add_scheduler(
        "bramble-run-1",
        registration("bramble-run"),
        OneShot::new(spec),
    )
}

fn framework_id(sim: &Sim, run: SchedulerId<OneShot>) -> Option<String> {
    sim.scheduler_framework_id(run.index)
}

/// The board the task runs on, once it does.
fn running_on(sim: &Sim, run: SchedulerId<OneShot>) -> Option<usize> {
    framework_id(sim, run).and_then(|fid| sim.board_running(&fid, TASK))
}

/// How many times the task was launched, over every board.
fn launches(sim: &Sim, run: SchedulerId<OneShot>) -> usize {
    let Some(fid) = framework_id(sim, run) else {
        return 0;
    };
    sim.agents
        .iter()
        .flat_map(|a| &a.launched)
        .filter(|k| k.is(&fid, TASK))
        .count()
}

fn calls(sim: &Sim, run: SchedulerId<OneShot>) -> impl Iterator<Item = &Call> {
    sim.schedulers[run.index]
        .sent
        .iter()
        .filter_map(|(_, o)| match o {
            Outgoing::Call(c) => Some(c),
            Outgoing::Message { .. } => None,
        })
}

#[test]
fn the_one_shot_places_its_task_on_the_matching_board_and_stops_with_the_tasks_exit_code() {
    let mut sim = three_boards(SimConfig::default());
    let run = one_shot(&mut sim);
    assert!(sim.run_until_cond(30_000, |s| running_on(s, run).is_some()));
    assert_eq!(running_on(&sim, run), Some(1), "on the sensor board");
    let fid = framework_id(&sim, run).expect("registered");

    // Every offer of another board was declined; the sensor board's was accepted, once.
    let events = &sim.schedulers[run.index].events;
    let others: Vec<u64> = events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Offers(offers) => Some(offers),
            _ => None,
        })
        .flatten()
        .filter(|o| o.agent.agent_id != "pi1")
        .map(|o| o.offer_id)
        .collect();
    assert!(!others.is_empty(), "the other boards were offered");
    let declined: Vec<u64> = calls(&sim, run)
        .filter_map(|c| match c {
            Call::Decline(d) => Some(d.offer_ids.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(
        others.iter().all(|o| declined.contains(o)),
        "{others:?} {declined:?}"
    );
    assert_eq!(
        calls(&sim, run)
            .filter(|c| matches!(c, Call::Accept(_)))
            .count(),
        1
    );
    assert!(!sim.schedulers[run.index].left);

    sim.finish_task_of(1, &fid, TASK, Exit::Code(3));
    assert!(sim.run_until_cond(30_000, |s| s.schedulers[run.index].left));
    let one = sim.scheduler(run);
    assert_eq!(
        one.ended,
        Some((TaskState::Failed, Reason::Exited { code: 3 }))
    );
    assert_eq!(one.exit_status(), 3);
    assert_eq!(launches(&sim, run), 1);
    assert!(
        calls(&sim, run).any(|c| *c == Call::Teardown),
        "it tore its framework down"
    );
    assert!(sim.schedulers[run.index].refused.is_empty());
}

#[test]
fn the_one_shot_of_a_task_that_exits_zero_stops_with_zero() {
    let mut sim = three_boards(SimConfig::default());
    let run = one_shot(&mut sim);
    assert!(sim.run_until_cond(30_000, |s| running_on(s, run).is_some()));
    let fid = framework_id(&sim, run).expect("registered");
    sim.finish_task_of(1, &fid, TASK, Exit::Code(0));
    assert!(sim.run_until_cond(30_000, |s| s.schedulers[run.index].left));
    assert_eq!(
        sim.scheduler(run).ended.map(|(s, _)| s),
        Some(TaskState::Finished)
    );
    assert_eq!(sim.scheduler(run).exit_status(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn the_one_shot_ends_with_its_tasks_exit_code_and_launches_it_at_most_once_under_loss_duplication_and_restarts(
        seed in any::<u64>(),
        loss in 0.0..0.3f64,
        duplicate in 0.0..0.3f64,
        max_delay_ms in 1u64..80,
        code in 0i32..256,
        runs_for in 0u64..5_000,
        agent_restart in proptest::option::of(0u64..5_000),
        restart_while_running in any::<bool>(),
        master_restart in proptest::option::of(0u64..5_000),
    ) {
        one_shot_case(
            seed,
            loss,
            duplicate,
            max_delay_ms,
            code,
            runs_for,
            agent_restart,
            restart_while_running,
            master_restart,
        )?;
    }
}

#[allow(clippy::too_many_arguments)]
fn one_shot_case(
    seed: u64,
    loss: f64,
    duplicate: f64,
    max_delay_ms: u64,
    code: i32,
    runs_for: u64,
    agent_restart: Option<u64>,
    restart_while_running: bool,
    master_restart: Option<u64>,
) -> Result<(), TestCaseError> {
    let config = SimConfig {
        seed,
        loss,
        duplicate,
        max_delay_ms,
        ..SimConfig::default()
    };
    let mut sim = three_boards(config);
    let run = one_shot(&mut sim);
    // The sensor board restarts at its time, and (or) while the task runs; its processes live
    // on.
    if let Some(at) = agent_restart {
        sim.run_until(at);
        sim.restart_agent(1);
    }
    if let Some(at) = master_restart {
        sim.run_until(sim.now.max(at));
        // Calls that cross a master restart are lost today (see the module docs).
        prop_assert!(
            sim.run_until_master_is_replaceable(900_000),
            "the master never settles"
        );
        sim.restart_master(2);
    }
    // The task starts (or is given up as lost), runs a while, and exits with `code`.
    let started = sim.run_until_cond(900_000, |s| {
        running_on(s, run).is_some() || s.schedulers[run.index].left
    });
    prop_assert!(started, "neither started nor ended at {} ms", sim.now);
    let ran = running_on(&sim, run);
    if let Some(i) = ran {
        if restart_while_running {
            sim.run_for(runs_for / 2);
            sim.restart_agent(i);
            sim.run_for(runs_for - runs_for / 2);
        } else {
            sim.run_for(runs_for);
        }
        let fid = framework_id(&sim, run).expect("registered");
        prop_assert_eq!(
            sim.board_running(&fid, TASK),
            Some(i),
            "it still runs there"
        );
        sim.finish_task_of(i, &fid, TASK, Exit::Code(code));
    }
    let left = sim.run_until_cond(900_000, |s| s.schedulers[run.index].left);
    let one = sim.scheduler(run);
    prop_assert!(left, "still running at {} ms: {:?}", sim.now, one.ended);
    prop_assert!(
        launches(&sim, run) <= 1,
        "launched {} times",
        launches(&sim, run)
    );
    // Every offer it takes fits, so an accept is only refused when it launches a task the
    // master already holds.
    let refused = sim.schedulers[run.index].events.iter().any(|(_, e)| {
        matches!(
            e,
            Event::Error {
                code: ErrorCode::AcceptRefused,
                ..
            }
        )
    });
    prop_assert!(!refused, "it launched its task again");
    match ran {
        Some(i) => {
            prop_assert_eq!(i, 1, "on the sensor board");
            let expected = if code == 0 {
                (TaskState::Finished, Reason::Exited { code })
            } else {
                (TaskState::Failed, Reason::Exited { code })
            };
            prop_assert_eq!(one.ended, Some(expected));
            prop_assert_eq!(i32::from(one.exit_status()), code);
        }
        None => {
            prop_assert_eq!(launches(&sim, run), 0);
            prop_assert_eq!(one.ended.map(|(s, _)| s), Some(TaskState::Lost));
            prop_assert_eq!(one.exit_status(), 1);
        }
    }
    Ok(())
}

#[test]
fn probe_seed() {
    one_shot_case(
        3271329743935302733,
        0.254,
        0.067,
        75,
        0,
        4362,
        Some(161),
        true,
        Some(335),
    )
    .unwrap();
}
