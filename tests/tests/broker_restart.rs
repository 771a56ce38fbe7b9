//! The broker dies mid-workload and comes back empty (no sessions, no retained messages, nothing
//! in flight), with the real `pi` and `wordcount` schedulers and a scripted framework that keeps
//! launching short tasks on simulated boards.
//!
//! What must hold, for any seed and restart times: both jobs finish with the right result, no task
//! id is launched twice, the end of every task of the scripted framework (which never leaves)
//! reaches it, and once the cluster is quiet no board holds an update its framework has not
//! acknowledged.

use std::collections::BTreeSet;

use agent_nostd_core::agent::Exit;
use agent_nostd_core::Resources;
use bramble_master_core::Config;
use bramble_pi::PiScheduler;
use bramble_proto::{Event, Register};
use bramble_tests::sim::jobs::{pi_job, wordcount_job};
use bramble_tests::sim::{PackTasks, Rng, SchedulerId, Sim, SimConfig};
use bramble_wordcount::WordcountScheduler;
use proptest::prelude::*;

struct Cluster {
    sim: Sim,
    pi: SchedulerId<PiScheduler>,
    wc: SchedulerId<WordcountScheduler>,
    /// The scripted framework's index.
    packer: usize,
    rng: Rng,
}

fn cluster(config: SimConfig) -> Cluster {
    let rng = Rng::new(config.seed ^ 0x5eed);
    let mut sim = Sim::new(config, Config::default());
    for i in 0..3 {
        sim.add_agent(&format!("pi{i}"), Resources::new(2_000, 2_048, 0), &[]);
    }
    let packer = sim.add_framework(
        "packer",
        Register::new("packer"),
        PackTasks::new("p", Resources::new(100, 32, 0), 2, 6),
    );
    let pi = sim.add_scheduler("pi", Register::new("pi"), pi_job(12));
    let wc = sim.add_scheduler("wc", Register::new("wordcount"), wordcount_job(400, None));
    Cluster {
        sim,
        pi,
        wc,
        packer,
        rng,
    }
}

impl Cluster {
    /// Ends one running task of the scripted framework, with a random exit code, if one runs.
    fn finish_a_packed_task(&mut self) {
        let Some(fid) = self.sim.frameworks[self.packer].framework_id.clone() else {
            return;
        };
        let running: Vec<(usize, String)> = (0..self.sim.agents.len())
            .flat_map(|i| {
                self.sim.agents[i]
                    .running
                    .keys()
                    .filter(|k| k.framework_id.as_str() == fid)
                    .map(move |k| (i, k.task_id.as_str().to_owned()))
            })
            .collect();
        if running.is_empty() {
            return;
        }
        let (i, tid) = running[self.rng.range(0, running.len() as u64 - 1) as usize].clone();
        let code = self.rng.range(0, 2) as i32;
        self.sim.finish_task_of(i, &fid, &tid, Exit::Code(code));
    }

    /// Runs `steps` steps of 50–400 ms, each ending a packed task, restarting the broker (down
    /// for the given time) before the steps named in `restarts`; then more steps until a packed
    /// task has ended (a restart that loses the first launches delays them by `task_retry_ms`).
    fn workload(&mut self, steps: u64, restarts: &[(u64, u64)]) {
        for step in 0.. {
            if step >= steps && (self.packed_ended() > 0 || step >= steps + 1_000) {
                break;
            }
            for &(_, down_ms) in restarts.iter().filter(|(at, _)| *at == step) {
                self.sim.restart_broker(down_ms);
            }
            let ms = self.rng.range(50, 400);
            self.sim.run_for(ms);
            self.finish_a_packed_task();
        }
    }

    /// How many tasks of the scripted framework have ended on the boards.
    fn packed_ended(&self) -> usize {
        let fid = self.sim.frameworks[self.packer]
            .framework_id
            .clone()
            .unwrap_or_default();
        self.sim
            .agents
            .iter()
            .flat_map(|a| &a.ended)
            .filter(|k| k.framework_id.as_str() == fid)
            .count()
    }

    /// Runs until both jobs are done, then lets the cluster go quiet (the last acknowledgements
    /// reach the boards).
    fn finish(&mut self, limit_ms: u64) -> bool {
        let (pi, wc) = (self.pi.index, self.wc.index);
        let done = self
            .sim
            .run_until_cond(limit_ms, |s| s.schedulers[pi].left && s.schedulers[wc].left);
        self.sim.run_for(120_000);
        done
    }

    /// What must hold once both jobs are done and the cluster is quiet.
    fn check(&self) -> Result<(), TestCaseError> {
        let sim = &self.sim;
        let pi = sim.scheduler(self.pi);
        prop_assert!(pi.is_complete(), "pi: {:?}", pi.failure());
        prop_assert!((pi.estimate().unwrap() - std::f64::consts::PI).abs() < 0.1);
        let wc = sim.scheduler(self.wc);
        prop_assert!(wc.is_complete(), "wordcount: {:?}", wc.failure());
        prop_assert_eq!(wc.counts().get("bramble").copied(), Some(800));

        sim.check_delivery().map_err(TestCaseError::fail)?;
        let packer = &sim.frameworks[self.packer];
        let fid = packer.framework_id.clone().unwrap_or_default();
        let heard: BTreeSet<&str> = packer
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Update(u) if u.state.is_terminal() => Some(u.task_id.as_str()),
                _ => None,
            })
            .collect();
        let mut ended = 0;
        for key in sim.agents.iter().flat_map(|a| &a.ended) {
            if key.framework_id.as_str() == fid {
                ended += 1;
                prop_assert!(
                    heard.contains(key.task_id.as_str()),
                    "the end of {} was lost",
                    key.task_id
                );
            }
        }
        prop_assert!(ended > 0, "the scripted framework ran tasks");
        Ok(())
    }
}

#[test]
fn every_job_finishes_and_no_end_is_lost_when_the_broker_restarts_in_the_middle() {
    let mut c = cluster(SimConfig {
        max_delay_ms: 20,
        ..SimConfig::default()
    });
    c.workload(40, &[(10, 300)]);
    assert!(c.finish(600_000), "still running at {} ms", c.sim.now);
    c.check().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    // Seed 15435631049184134799 once failed here (a restart at step 1 lost the scripted
    // framework's first launches): kept as `a_restart_that_loses_the_first_launches_…` below.
    #[test]
    fn no_update_is_lost_and_no_task_runs_twice_when_the_broker_loses_every_session(
        seed in any::<u64>(),
        duplicate in 0.0..0.2f64,
        max_delay_ms in 1u64..60,
        restarts in proptest::collection::vec((0u64..40, 10u64..3_000), 1..4),
    ) {
        let mut c = cluster(SimConfig {
            seed,
            duplicate,
            max_delay_ms,
            ..SimConfig::default()
        });
        c.workload(40, &restarts);
        prop_assert!(c.finish(900_000), "still running at {} ms", c.sim.now);
        c.check()?;
    }
}

#[test]
fn a_restart_that_loses_the_first_launches_still_loses_no_end() {
    let mut c = cluster(SimConfig {
        seed: 15_435_631_049_184_134_799,
        duplicate: 0.151_714_799_337_265_8,
        max_delay_ms: 58,
        ..SimConfig::default()
    });
    c.workload(40, &[(1, 10)]);
    assert!(c.finish(900_000), "still running at {} ms", c.sim.now);
    c.check().unwrap();
}
