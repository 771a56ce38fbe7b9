//! Real frameworks in the simulation: the `pi` and `wordcount` schedulers, driven by the SDK's
//! `SchedulerCore`, run to their results on simulated boards whose executors compute for real.

use agent_nostd_core::Resources;
use bramble_master_core::Config;
use bramble_pi::executor::{sample, task_seed};
use bramble_pi::{PiOptions, PiScheduler};
use bramble_proto::Register;
use bramble_tests::sim::{SchedulerId, Sim, SimConfig};
use bramble_wordcount::count::count_words;
use bramble_wordcount::{WordcountOptions, WordcountScheduler};

const PI_TASKS: u32 = 8;
const PI_SAMPLES: u64 = 20_000;

fn pi_job(seed: u64) -> PiScheduler {
    let mut o = PiOptions::new(vec!["/usr/bin/bramble-pi".into(), "executor".into()]);
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
