//! Property tests on random clusters, random framework behaviour and random failures (message loss,
//! duplication and delay, disconnects, partitions, agent and master restarts, framework failovers):
//!
//! - no agent is ever given more than it has, for any resource, and no resource is in two outstanding
//!   offers (the harness checks the master's books and every board after every step);
//! - a declined agent is not offered to that framework again before its filter expires;
//! - every status update an agent sends is eventually acknowledged and delivered to its framework;
//! - once the failures stop, the agents, the master and the frameworks agree on every task.

use agent_nostd_core::agent::Exit;
use agent_nostd_core::ids::TaskKey;
use agent_nostd_core::wire::TaskState;
use agent_nostd_core::Resources;
use bramble_master_core::Config;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use bramble_proto::{Accept, Call, Decline, Event, Kill, Register, TaskInfo};
use bramble_tests::sim::{PackTasks, Rng, Script, Sim, SimConfig};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// A running task ends (the n-th running task of the cluster, modulo their number).
    Finish(usize, i32),
    Disconnect(usize),
    Reconnect(usize),
    Partition(usize),
    Heal(usize),
    RestartAgent(usize),
    RestartMaster,
    /// A framework kills the n-th task the master knows for it, with this grace period.
    Kill(usize, usize, u32),
    /// A framework's connection drops (its last will is published).
    FrameworkGone(usize),
    /// A framework reconnects and re-registers.
    FrameworkBack(usize),
}

/// Every kind of failure and framework behaviour.
fn any_op() -> BoxedStrategy<Op> {
    prop_oneof![
        6 => (any::<usize>(), 0i32..3).prop_map(|(n, c)| Op::Finish(n, c)),
        1 => any::<usize>().prop_map(Op::Disconnect),
        2 => any::<usize>().prop_map(Op::Reconnect),
        1 => any::<usize>().prop_map(Op::Partition),
        2 => any::<usize>().prop_map(Op::Heal),
        1 => any::<usize>().prop_map(Op::RestartAgent),
        1 => Just(Op::RestartMaster),
        2 => (any::<usize>(), any::<usize>(), 0u32..3_000).prop_map(|(j, n, g)| Op::Kill(j, n, g)),
        1 => any::<usize>().prop_map(Op::FrameworkGone),
        2 => any::<usize>().prop_map(Op::FrameworkBack),
    ]
    .boxed()
}

/// Every failure but a framework outliving its failover timeout (its updates have nowhere to go).
fn delivery_op() -> BoxedStrategy<Op> {
    prop_oneof![
        6 => (any::<usize>(), 0i32..3).prop_map(|(n, c)| Op::Finish(n, c)),
        1 => any::<usize>().prop_map(Op::Disconnect),
        2 => any::<usize>().prop_map(Op::Reconnect),
        1 => any::<usize>().prop_map(Op::Partition),
        2 => any::<usize>().prop_map(Op::Heal),
        1 => any::<usize>().prop_map(Op::RestartAgent),
        1 => Just(Op::RestartMaster),
        2 => (any::<usize>(), any::<usize>(), 0u32..3_000).prop_map(|(j, n, g)| Op::Kill(j, n, g)),
    ]
    .boxed()
}

#[derive(Debug, Clone)]
struct Workload {
    seed: u64,
    loss: f64,
    duplicate: f64,
    max_delay_ms: u64,
    agents: Vec<(u32, u32)>,
    frameworks: Vec<(u32, u32, usize, usize)>,
    ops: Vec<(u64, Op)>,
}

fn workload(ops: BoxedStrategy<Op>) -> impl Strategy<Value = Workload> {
    (
        any::<u64>(),
        0.0..0.2f64,
        0.0..0.2f64,
        1u64..80,
        proptest::collection::vec((1u32..=8, 1u32..=8), 1..5),
        proptest::collection::vec((1u32..=8, 1u32..=8, 1usize..=3, 1usize..=8), 1..4),
        proptest::collection::vec((100u64..5_000, ops), 0..25),
    )
        .prop_map(
            |(seed, loss, duplicate, max_delay_ms, agents, frameworks, ops)| Workload {
                seed,
                loss,
                duplicate,
                max_delay_ms,
                agents,
                frameworks,
                ops,
            },
        )
}

fn build(w: &Workload) -> Sim {
    let config = SimConfig {
        seed: w.seed,
        loss: w.loss,
        duplicate: w.duplicate,
        min_delay_ms: 1,
        max_delay_ms: w.max_delay_ms,
        check_invariants: true,
    };
    let mut sim = Sim::new(config, Config::default());
    for (i, &(cpus, gib)) in w.agents.iter().enumerate() {
        sim.add_agent(
            &format!("pi{i}"),
            Resources::new(cpus * 1000, gib * 1024, 0),
            &[],
        );
    }
    for (j, &(cpu_quarters, mem_quarters, per_offer, limit)) in w.frameworks.iter().enumerate() {
        let task = Resources::new(cpu_quarters * 250, mem_quarters * 256, 0);
        sim.add_framework(
            &format!("fw{j}"),
            Register::new(&format!("framework {j}")),
            PackTasks::new(&format!("f{j}t"), task, per_offer, limit),
        );
    }
    sim
}

fn apply(sim: &mut Sim, op: &Op, epoch: &mut u64) {
    let n = sim.agents.len();
    match *op {
        Op::Finish(k, code) => {
            let running: Vec<(usize, String, String)> = sim
                .agents
                .iter()
                .enumerate()
                .filter(|(_, a)| a.connected && !a.partitioned)
                .flat_map(|(i, a)| {
                    a.running
                        .keys()
                        .map(move |k| (i, k.framework_id.to_string(), k.task_id.to_string()))
                })
                .collect();
            if running.is_empty() {
                return;
            }
            let (i, fid, tid) = running[k % running.len()].clone();
            let Some(j) = sim
                .frameworks
                .iter()
                .position(|f| f.framework_id.as_deref() == Some(fid.as_str()))
            else {
                return;
            };
            sim.finish_task(i, j, &tid, Exit::Code(code));
        }
        Op::Disconnect(i) => sim.disconnect_agent(i % n),
        Op::Reconnect(i) => {
            if !sim.agents[i % n].connected {
                sim.connect_agent(i % n);
            }
        }
        Op::Partition(i) => sim.agents[i % n].partitioned = true,
        Op::Heal(i) => sim.agents[i % n].partitioned = false,
        Op::RestartAgent(i) => sim.restart_agent(i % n),
        Op::RestartMaster => {
            *epoch += 1;
            sim.restart_master(*epoch);
        }
        Op::Kill(j, n, grace_ms) => {
            let j = j % sim.frameworks.len();
            let Some(fid) = sim.frameworks[j].framework_id.clone() else {
                return;
            };
            let tasks: Vec<String> = sim
                .agents
                .iter()
                .flat_map(|a| {
                    a.core
                        .tasks()
                        .map(|t| (t.framework_id.to_owned(), t.task_id.to_owned()))
                })
                .filter(|(f, _)| *f == fid)
                .map(|(_, t)| t)
                .collect();
            if tasks.is_empty() {
                return;
            }
            let task_id = tasks[n % tasks.len()].clone();
            sim.call(j, Call::Kill(Kill { task_id, grace_ms }));
        }
        Op::FrameworkGone(j) => {
            let j = j % sim.frameworks.len();
            if sim.frameworks[j].connected {
                sim.disconnect_framework(j);
            }
        }
        Op::FrameworkBack(j) => {
            let j = j % sim.frameworks.len();
            if !sim.frameworks[j].connected {
                sim.reconnect_framework(j);
            }
        }
    }
}

/// After the failures stop: the agents, the master and the frameworks agree on every task.
fn assert_converged(sim: &Sim) -> Result<(), TestCaseError> {
    for a in &sim.agents {
        let total = a.core.total();
        prop_assert!(
            a.core.allocated().fits_in(&total),
            "{} over-committed",
            a.core.agent_id()
        );
        let view = sim.master.agent(a.core.agent_id());
        prop_assert!(
            view.as_ref().is_some_and(|v| v.reachable),
            "{} not reachable",
            a.core.agent_id()
        );
        for t in a.core.tasks() {
            if t.state != TaskState::Running {
                continue;
            }
            let known = sim.master.task(t.framework_id, t.task_id);
            prop_assert_eq!(
                known.as_ref().map(|k| (k.agent_id.as_str(), k.state)),
                Some((a.core.agent_id(), TaskState::Running)),
                "{}/{} runs on {}",
                t.framework_id,
                t.task_id,
                a.core.agent_id()
            );
            let f = sim
                .frameworks
                .iter()
                .find(|f| f.framework_id.as_deref() == Some(t.framework_id))
                .expect("a task's framework is in the simulation");
            prop_assert_eq!(
                f.state(t.task_id),
                Some(TaskState::Running),
                "{}",
                t.task_id
            );
        }
    }
    for f in &sim.frameworks {
        let Some(fid) = &f.framework_id else { continue };
        let Some(view) = sim.master.framework(fid) else {
            continue;
        };
        prop_assert!(
            view.tasks
                <= sim
                    .agents
                    .iter()
                    .map(|a| a.core.tasks().count())
                    .sum::<usize>()
        );
    }
    Ok(())
}

/// Runs the workload's operations, then stops every failure and lets the cluster settle.
fn run_and_heal(w: &Workload) -> Sim {
    let mut sim = build(w);
    let mut epoch = 1;
    for (gap, op) in &w.ops {
        sim.run_for(*gap);
        apply(&mut sim, op, &mut epoch);
    }
    sim.config.loss = 0.0;
    sim.config.duplicate = 0.0;
    for i in 0..sim.agents.len() {
        sim.agents[i].partitioned = false;
        if !sim.agents[i].connected {
            sim.connect_agent(i);
        }
    }
    for j in 0..sim.frameworks.len() {
        if !sim.frameworks[j].connected {
            sim.reconnect_framework(j);
        }
    }
    sim.run_for(240_000);
    sim
}

/// Every decline a framework made: (time sent, offer id, agent, filter in ms).
type DeclineLog = Rc<RefCell<Vec<(u64, u64, String, u64)>>>;

/// Declines most offers with a random filter and launches a small task on the others; logs every
/// decline.
struct Decliner {
    rng: Rng,
    answered: BTreeSet<u64>,
    declines: DeclineLog,
    launched: usize,
}

impl Script for Decliner {
    fn on_event(&mut self, now: u64, event: &Event) -> Vec<Call> {
        let Event::Offers(offers) = event else {
            return Vec::new();
        };
        let mut calls = Vec::new();
        for o in offers {
            if !self.answered.insert(o.offer_id) {
                continue; // a duplicated event
            }
            if self.rng.unit() < 0.2 && Resources::new(100, 64, 0).fits_in(&o.resources) {
                self.launched += 1;
                let tid = format!("d{}", self.launched);
                calls.push(Call::Accept(Accept {
                    offer_id: o.offer_id,
                    tasks: vec![TaskInfo::new(&tid, &["/bin/x"], Resources::new(100, 64, 0))],
                }));
            } else {
                let refuse_seconds = match self.rng.range(0, 3) {
                    0 => None,
                    _ => Some(self.rng.range(0, 20) as u32),
                };
                let ms = refuse_seconds.map_or(5_000, |s| u64::from(s) * 1_000);
                self.declines
                    .borrow_mut()
                    .push((now, o.offer_id, o.agent.agent_id.clone(), ms));
                calls.push(Call::Decline(Decline {
                    offer_ids: vec![o.offer_id],
                    refuse_seconds,
                }));
            }
        }
        calls
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn no_agent_is_ever_over_committed_and_no_resource_is_in_two_outstanding_offers(
        w in workload(any_op())
    ) {
        // The harness checks the books after every delivery and timer (`check_invariants`), which
        // includes: per agent, its tasks plus its one outstanding offer fit in its total; every offer
        // is the single offer of its agent.
        let sim = run_and_heal(&w);
        sim.assert_invariants();
    }

    #[test]
    fn once_failures_stop_agents_master_and_frameworks_agree_on_every_task(
        w in workload(any_op())
    ) {
        let sim = run_and_heal(&w);
        assert_converged(&sim)?;
    }

    #[test]
    fn every_status_update_is_eventually_acknowledged_and_delivered_under_loss_and_duplication(
        w in workload(delivery_op())
    ) {
        let sim = run_and_heal(&w);
        for a in &sim.agents {
            for t in a.core.tasks() {
                prop_assert_eq!(t.unacked_updates, 0, "{}/{} on {}", t.framework_id, t.task_id, a.core.agent_id());
            }
            for TaskKey { framework_id: fid, task_id: tid } in &a.ended {
                let f = sim
                    .frameworks
                    .iter()
                    .find(|f| f.framework_id.as_deref() == Some(fid.as_str()))
                    .expect("a task's framework is in the simulation");
                let ended = f.updates(tid).iter().any(|u| u.state.is_terminal());
                prop_assert!(ended, "{}'s end on {} never reached its framework", tid, a.core.agent_id());
            }
        }
        assert_converged(&sim)?;
    }

    #[test]
    fn a_declined_agent_is_not_offered_to_that_framework_again_before_its_filter_expires(
        seed in any::<u64>(),
        duplicate in 0.0..0.3f64,
        max_delay_ms in 1u64..60,
        agents in 1usize..6,
        frameworks in 1usize..4,
    ) {
        let config = SimConfig { seed, duplicate, max_delay_ms, ..SimConfig::default() };
        let mut sim = Sim::new(config, Config::default());
        for i in 0..agents {
            sim.add_agent(&format!("pi{i}"), Resources::new(2_000, 2_048, 0), &[]);
        }
        let mut logs = Vec::new();
        for j in 0..frameworks {
            let declines = Rc::new(RefCell::new(Vec::new()));
            logs.push(Rc::clone(&declines));
            let script = Decliner {
                rng: Rng::new(seed ^ (j as u64 + 1)),
                answered: BTreeSet::new(),
                declines,
                launched: 0,
            };
            sim.add_framework(&format!("fw{j}"), Register::new(&format!("decliner {j}")), script);
        }
        sim.run_for(120_000);
        let mut checked = 0;
        for (j, log) in logs.iter().enumerate() {
            for (at, offer_id, agent, ms) in log.borrow().iter() {
                if *ms == 0 {
                    continue;
                }
                checked += 1;
                let early = sim.frameworks[j].events.iter().find(|(t, e)| {
                    *t > *at && *t < at + ms && matches!(e, Event::Offers(os)
                        if os.iter().any(|o| o.offer_id > *offer_id && o.agent.agent_id == *agent))
                });
                prop_assert!(early.is_none(), "framework {} declined {} at {} for {} ms: {:?}", j, agent, at, ms, early);
            }
        }
        prop_assert!(checked > 0);
    }

    #[test]
    fn drf_keeps_identical_frameworks_within_one_task_of_each_other(
        frameworks in 2usize..6,
        cpus in 1u32..16,
        gib in 1u32..16,
        cpu_quarters in 1u32..8,
        mem_quarters in 1u32..8,
    ) {
        let mut sim = Sim::perfect();
        sim.add_agent("pi", Resources::new(cpus * 1000, gib * 1024, 0), &[]);
        let task = Resources::new(cpu_quarters * 250, mem_quarters * 256, 0);
        for j in 0..frameworks {
            sim.add_framework(
                &format!("fw{j}"),
                Register::new(&format!("framework {j}")),
                PackTasks::new(&format!("t{j}-"), task, 1, 1_000),
            );
        }
        sim.run_for(120_000);
        let counts: Vec<usize> = (0..frameworks)
            .map(|j| {
                let fid = sim.fid(j);
                sim.agents[0].running.keys().filter(|k| k.framework_id == fid.as_str()).count()
            })
            .collect();
        let most = *counts.iter().max().unwrap();
        let least = *counts.iter().min().unwrap();
        prop_assert!(most - least <= 1, "{:?}", counts);
        // And the board is as full as the task size and its task table (32) allow.
        let fits = (cpus * 1000 / task.cpu_millis)
            .min(gib * 1024 / task.mem_mib)
            .min(agent_nostd_core::wire::MAX_TASKS as u32) as usize;
        prop_assert_eq!(counts.iter().sum::<usize>(), fits);
    }
}
