//! Real frameworks in the simulation: the `pi`, `wordcount` and `sensor` schedulers, driven by the
//! SDK's `SchedulerCore`, run to their results on simulated boards whose executors compute for
//! real.
//!
//! The property covers seeded agent↔master message loss (up to 30 %), duplication of every
//! message (up to 30 %, framework traffic included), delays of 1 to 80 ms, one master restart
//! and one agent restart (its processes live on), each at a random time or not at all. What it leaves out, because the system does not recover from it today (the delivery
//! issues that follow are to fix it):
//!
//! - **Framework calls or events that cross a master restart.** Calls made against the old master
//!   (e.g. an accept of its offer) reach the new one before the framework re-registers and are
//!   answered `NotRegistered` without their offer id, so the SDK's `Batch` keeps those items
//!   "launched" forever.
//! - **A restart while the master holds a task no board has** (its `RunTask` is in flight, or was
//!   lost and not yet noticed). The new master never hears of it and the `Batch` never
//!   reconciles, so that item waits forever.
//!
//! So the master restarts at the first moment from the drawn time on when neither holds
//! ([`Sim::run_until_master_is_replaceable`]). Framework traffic itself is never lost, as the
//! simulation models schedulers' persistent QoS 1 sessions. Lost `RunTask`s and updates cost
//! attempts, so the jobs get [`MAX_RETRIES`] relaunches per task instead of the default 3.

use agent_nostd_core::Resources;
use bramble_master_core::Config;
use bramble_pi::executor::{sample, task_seed};
use bramble_pi::{PiOptions, PiScheduler};
use bramble_proto::{Call, Register};
use bramble_sdk::scheduler::Outgoing;
use bramble_sensor::message::Summary;
use bramble_sensor::source::Source;
use bramble_sensor::stats::Detector;
use bramble_sensor::{PlacementState, SensorOptions, SensorScheduler};
use bramble_tests::sim::executors::sensor_seed;
use bramble_tests::sim::{Rng, SchedulerId, Sim, SimConfig};
use bramble_wordcount::count::count_words;
use bramble_wordcount::{WordcountOptions, WordcountScheduler};
use proptest::prelude::*;

const PI_TASKS: u32 = 8;
const PI_SAMPLES: u64 = 20_000;

/// Relaunches per task: a lost `RunTask` or status update costs an attempt, and at 30 % loss a
/// task may lose several in a row.
const MAX_RETRIES: u32 = 20;

fn pi_job(seed: u64) -> PiScheduler {
    let mut o = PiOptions::new(vec!["/usr/bin/bramble-pi".into(), "executor".into()]);
    o.max_retries = MAX_RETRIES;
    o.tasks = PI_TASKS;
    o.samples = PI_SAMPLES;
    o.seed = seed;
    PiScheduler::new(o).expect("valid pi options")
}

/// What the job must sum: every task's real samples (inside, total).
fn expected_samples(seed: u64) -> (u64, u64) {
    (0..PI_TASKS)
        .map(|i| sample(task_seed(seed, i), PI_SAMPLES))
        .fold((0, 0), |(a, b), (i, t)| (a + i, b + t))
}

const TEXT: &str = "the quick brown fox jumps over the lazy dog\n\
    Pack my box with five dozen liquor jugs; the dog sleeps.\n\
    How vexingly quick daft zebras jump! The fox, the dog, the box.\n";

fn wordcount_job(text: &str) -> WordcountScheduler {
    let mut o = WordcountOptions::new(vec!["/usr/bin/bramble-wordcount".into(), "executor".into()]);
    o.chunk_bytes = 128;
    o.max_retries = MAX_RETRIES;
    WordcountScheduler::new(o, text).expect("valid wordcount options")
}

fn three_boards(config: SimConfig) -> Sim {
    let mut sim = Sim::new(config, Config::default());
    for i in 0..3 {
        sim.add_agent(&format!("pi{i}"), Resources::new(1_000, 1_024, 0), &[]);
    }
    sim
}

fn both_done(sim: &Sim, pi: SchedulerId<PiScheduler>, wc: SchedulerId<WordcountScheduler>) -> bool {
    sim.schedulers[pi.index].left && sim.schedulers[wc.index].left
}

#[test]
fn pi_and_wordcount_run_to_their_exact_results_on_three_boards_without_faults() {
    let mut sim = three_boards(SimConfig::default());
    let text = TEXT.repeat(6);
    let pi = sim.add_scheduler("pi", Register::new("pi"), pi_job(3));
    let wc = sim.add_scheduler("wc", Register::new("wordcount"), wordcount_job(&text));
    assert!(sim.scheduler(wc).chunk_count() > 3, "several map tasks");

    assert!(
        sim.run_until_cond(120_000, |s| both_done(s, pi, wc)),
        "pi {:?}, wordcount {:?} at {} ms",
        sim.scheduler(pi).progress(),
        sim.scheduler(wc).progress(),
        sim.now
    );

    let p = sim.scheduler(pi);
    assert!(p.is_complete() && p.failure().is_none());
    assert_eq!(p.samples(), expected_samples(3));
    let estimate = p.estimate().expect("an estimate");
    assert!((estimate - std::f64::consts::PI).abs() < 0.05, "{estimate}");

    let w = sim.scheduler(wc);
    assert!(w.is_complete() && w.failure().is_none());
    assert_eq!(w.counts(), &count_words(&text));
    assert_eq!(w.top(1), vec![("the".to_owned(), 36)]);

    // Every task ran on a board, once, and the boards are empty again.
    let launched: usize = sim.agents.iter().map(|a| a.launched.len()).sum();
    assert_eq!(launched, PI_TASKS as usize + w.chunk_count());
    assert!(sim.agents.iter().all(|a| a.running.is_empty()));
    assert!(sim.schedulers.iter().all(|s| s.refused.is_empty()));
}

/// A text of `lines` lines drawn from a small vocabulary (so words repeat across chunks), with
/// mixed case and punctuation.
fn random_text(rng: &mut Rng, lines: usize) -> String {
    const WORDS: [&str; 12] = [
        "the", "The", "board", "pi", "Pi", "cluster", "task", "offer", "agent", "master", "a",
        "zebra",
    ];
    const SEPARATORS: [&str; 4] = [" ", ", ", "; ", " - "];
    let mut text = String::new();
    for _ in 0..lines {
        let n = rng.range(1, 12);
        for w in 0..n {
            if w > 0 {
                text.push_str(SEPARATORS[rng.range(0, 3) as usize]);
            }
            text.push_str(WORDS[rng.range(0, 11) as usize]);
        }
        text.push_str(".\n");
    }
    text
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn pi_and_wordcount_reach_their_exact_results_under_loss_duplication_and_master_and_agent_restarts(
        seed in any::<u64>(),
        loss in 0.0..0.3f64,
        duplicate in 0.0..0.3f64,
        max_delay_ms in 1u64..80,
        restart_at in proptest::option::of(0u64..3_000),
        agent_restart in proptest::option::of((0u64..3_000, 0usize..3)),
    ) {
        let config = SimConfig {
            seed,
            loss,
            duplicate,
            max_delay_ms,
            ..SimConfig::default()
        };
        let mut sim = three_boards(config);
        let text = random_text(&mut Rng::new(seed), 40);
        let pi = sim.add_scheduler("pi", Register::new("pi"), pi_job(seed));
        let wc = sim.add_scheduler("wc", Register::new("wordcount"), wordcount_job(&text));
        // The board restarts first when its time comes first; its processes live on.
        let board_first = agent_restart.filter(|(t, _)| restart_at.is_none_or(|m| *t <= m));
        if let Some((at, i)) = board_first {
            sim.run_until(at);
            sim.restart_agent(i);
        }
        if let Some(at) = restart_at {
            sim.run_until(at);
            // Calls that cross a master restart are lost today (see the module docs).
            prop_assert!(sim.run_until_master_is_replaceable(900_000), "the master never settles");
            sim.restart_master(2);
        }
        if let Some((at, i)) = agent_restart.filter(|_| board_first.is_none()) {
            sim.run_until(at);
            sim.restart_agent(i);
        }
        let finished = sim.run_until_cond(900_000, |s| both_done(s, pi, wc));
        let p = sim.scheduler(pi);
        let w = sim.scheduler(wc);
        prop_assert!(
            finished,
            "pi {:?} ({:?}), wordcount {:?} ({:?}) at {} ms",
            p.progress(), p.failure(), w.progress(), w.failure(), sim.now
        );
        prop_assert!(p.is_complete() && w.is_complete());
        prop_assert_eq!(p.failure(), None);
        prop_assert_eq!(p.samples(), expected_samples(seed));
        let estimate = p.estimate().expect("an estimate");
        prop_assert!((estimate - std::f64::consts::PI).abs() < 0.05, "{}", estimate);
        prop_assert_eq!(w.failure(), None);
        prop_assert_eq!(w.counts(), &count_words(&text));
    }
}

#[test]
fn the_sensor_scheduler_places_one_reader_per_sensor_board_and_gets_their_real_summaries() {
    let mut sim = Sim::new(SimConfig::default(), Config::default());
    for (i, sensor) in [true, false, true].into_iter().enumerate() {
        let attrs: &[(&str, &str)] = if sensor { &[("sensor", "bme280")] } else { &[] };
        sim.add_agent(&format!("pi{i}"), Resources::new(1_000, 1_024, 0), attrs);
    }
    let mut o = SensorOptions::new(vec!["/usr/bin/bramble-sensor".into(), "executor".into()]);
    o.source = "simulated".into();
    let sensor = sim.add_scheduler(
        "sensor",
        Register::new("sensor"),
        SensorScheduler::new(o).unwrap(),
    );
    sim.run_for(35_000);

    let s = sim.scheduler(sensor);
    assert_eq!(s.placements().keys().collect::<Vec<_>>(), ["pi0", "pi2"]);
    assert!(s
        .placements()
        .values()
        .all(|p| p.state == PlacementState::Running));
    assert_eq!(s.failure(), None);
    // Each reader reads once a second from 100 ms after its launch: 35 readings, so the latest
    // summary is the 30th, computed here the way the reader computes it.
    for board in ["pi0", "pi2"] {
        let mut source = Source::parse("simulated", sensor_seed(board)).unwrap();
        let mut detector = Detector::new(60, 3.0, 10);
        let mut last = None;
        while detector.readings < 30 {
            last = detector.observe(source.read().unwrap());
        }
        let last = last.expect("an observation").value;
        let (mean, stddev) = detector.mean_stddev().unwrap();
        let expected = Summary {
            readings: 30,
            anomalies: detector.anomalies,
            last,
            mean,
            stddev,
            min: detector.min,
            max: detector.max,
        };
        assert_eq!(s.summaries().get(board), Some(&expected), "{board}");
    }
    assert!(
        sim.agents[1].launched.is_empty(),
        "no reader on a board without the sensor"
    );
}

#[test]
fn pi_finishes_after_its_scheduler_loses_its_connection_and_comes_back_within_its_failover_timeout()
{
    let mut sim = three_boards(SimConfig::default());
    let pi = sim.add_scheduler("pi", Register::new("pi"), pi_job(5));
    // The executors are still starting: their results wait in the broker for the scheduler.
    sim.run_for(50);
    sim.disconnect_scheduler(pi.index);
    sim.run_for(5_000);
    assert!(!sim.scheduler(pi).is_complete());
    sim.connect_scheduler(pi.index);
    assert!(sim.run_until_cond(120_000, |s| s.schedulers[pi.index].left));
    let reregistered = sim.schedulers[pi.index]
        .sent
        .iter()
        .any(|(_, o)| matches!(o, Outgoing::Call(Call::ReRegister(_))));
    assert!(reregistered, "it took its id back");
    let p = sim.scheduler(pi);
    assert_eq!(p.failure(), None);
    assert_eq!(p.samples(), expected_samples(5));
}
