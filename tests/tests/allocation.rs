//! The allocator on a simulated cluster: DRF (the paper's worked example, weights), guaranteed
//! minimums, strict priorities and revocation.

use agent_nostd_core::wire::{Reason, TaskState};
use agent_nostd_core::Resources;
use bramble_master_core::{Config, Policy};
use bramble_proto::Register;
use bramble_tests::sim::{PackTasks, Sim, SimConfig};

const GIB: u32 = 1024;

fn res(cpus: u32, gib: u32) -> Resources {
    Resources::new(cpus * 1000, gib * GIB, 0)
}

/// Tasks each framework's agent-side processes are running.
fn running(sim: &Sim, j: usize) -> usize {
    let fid = sim.fid(j);
    sim.agents
        .iter()
        .flat_map(|a| a.running.keys())
        .filter(|k| k.framework_id == fid.as_str())
        .count()
}

#[test]
fn drf_worked_example_gives_a_three_tasks_and_b_two() {
    // The DRF paper: 9 CPU and 18 GB; A runs tasks of (1 CPU, 4 GB), B tasks of (3 CPU, 1 GB).
    let mut sim = Sim::perfect();
    sim.add_agent("big", res(9, 18), &[]);
    sim.add_framework(
        "a",
        Register::new("A"),
        PackTasks::new("a", res(1, 4), 1, 100),
    );
    sim.add_framework(
        "b",
        Register::new("B"),
        PackTasks::new("b", res(3, 1), 1, 100),
    );
    sim.run_for(30_000);
    assert_eq!(running(&sim, 0), 3);
    assert_eq!(running(&sim, 1), 2);
    // Each holds 2/3 of its dominant resource.
    for j in 0..2 {
        let share = sim.master.framework(&sim.fid(j)).unwrap().dominant_share;
        assert!((share - 2.0 / 3.0).abs() < 1e-9, "framework {j}: {share}");
    }
}

#[test]
fn a_framework_with_twice_the_weight_gets_twice_the_share() {
    let mut sim = Sim::perfect();
    sim.add_agent("big", res(12, 12), &[]);
    let mut heavy = Register::new("heavy");
    heavy.weight = 2.0;
    sim.add_framework(
        "light",
        Register::new("light"),
        PackTasks::new("l", res(1, 1), 1, 100),
    );
    sim.add_framework("heavy", heavy, PackTasks::new("h", res(1, 1), 1, 100));
    sim.run_for(30_000);
    assert_eq!(running(&sim, 0), 4);
    assert_eq!(running(&sim, 1), 8);
    let light = sim.master.framework(&sim.fid(0)).unwrap().dominant_share;
    let heavy = sim.master.framework(&sim.fid(1)).unwrap().dominant_share;
    assert!((heavy - 2.0 * light).abs() < 1e-9, "{heavy} vs {light}");
}

#[test]
fn the_lowest_share_gets_each_offer_across_many_agents() {
    let mut sim = Sim::perfect();
    for i in 0..6 {
        sim.add_agent(&format!("pi{i}"), res(4, 4), &[]);
    }
    for (name, size) in [("x", res(1, 1)), ("y", res(2, 1)), ("z", res(1, 2))] {
        sim.add_framework(
            name,
            Register::new(name),
            PackTasks::new(name, size, 1, 1_000),
        );
    }
    sim.run_for(60_000);
    let shares: Vec<f64> = (0..3)
        .map(|j| sim.master.framework(&sim.fid(j)).unwrap().dominant_share)
        .collect();
    // 24 CPU / 24 GB: DRF leaves them within one task's share of each other.
    let (lo, hi) = shares
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), s| (lo.min(*s), hi.max(*s)));
    assert!(hi - lo <= 2.0 / 24.0 + 1e-9, "{shares:?}");
    sim.assert_invariants();
}

#[test]
fn a_framework_below_its_guarantee_is_offered_first() {
    let mut sim = Sim::perfect();
    sim.add_agent("pi1", res(4, 4), &[]);
    sim.add_framework(
        "plain",
        Register::new("plain"),
        PackTasks::new("p", res(1, 1), 1, 100),
    );
    let mut guaranteed = Register::new("guaranteed");
    guaranteed.guarantee = Some(res(2, 2));
    sim.add_framework("g", guaranteed, PackTasks::new("g", res(1, 1), 1, 100));
    sim.run_for(30_000);
    // Registered second, yet it gets the first offer and its first two tasks before anyone else.
    let first_offer_to_g = sim.frameworks[1]
        .events
        .iter()
        .find_map(|(t, e)| matches!(e, bramble_proto::Event::Offers(_)).then_some(*t));
    assert!(
        sim.frameworks[0].offers().is_empty() || {
            let first_to_plain = sim.frameworks[0]
                .events
                .iter()
                .find_map(|(t, e)| matches!(e, bramble_proto::Event::Offers(_)).then_some(*t));
            first_to_plain > first_offer_to_g
        }
    );
    let launched = &sim.agents[0].launched;
    let g = sim.fid(1);
    assert!(
        launched[..2].iter().all(|k| k.framework_id == g.as_str()),
        "{launched:?}"
    );
    // Past its guarantee it shares by DRF: 2 and 2.
    assert_eq!(running(&sim, 0), 2);
    assert_eq!(running(&sim, 1), 2);
}

#[test]
fn strict_priority_offers_the_higher_priority_first_whatever_its_share() {
    let config = Config {
        policy: Policy::StrictPriority,
        ..Config::default()
    };
    let mut sim = Sim::new(SimConfig::default(), config);
    sim.add_agent("pi1", res(4, 4), &[]);
    sim.add_agent("pi2", res(4, 4), &[]);
    let mut low = Register::new("low");
    low.priority = 1;
    let mut high = Register::new("high");
    high.priority = 5;
    sim.add_framework("low", low, PackTasks::new("l", res(1, 1), 1, 100));
    sim.add_framework("high", high, PackTasks::new("h", res(1, 1), 1, 6));
    sim.run_for(30_000);
    // The high-priority framework takes the 6 tasks it wants before the other gets anything.
    let launched: Vec<String> = sim
        .agents
        .iter()
        .flat_map(|a| a.launched.iter().map(|k| k.framework_id.to_string()))
        .collect();
    assert_eq!(running(&sim, 1), 6);
    assert_eq!(running(&sim, 0), 2);
    let first_low = sim.frameworks[0]
        .events
        .iter()
        .find_map(|(t, e)| matches!(e, bramble_proto::Event::Offers(_)).then_some(*t));
    let sixth_high = sim.frameworks[1]
        .events
        .iter()
        .filter(|(_, e)| matches!(e, bramble_proto::Event::Offers(_)))
        .nth(5)
        .map(|(t, _)| *t);
    assert!(first_low > sixth_high, "{launched:?}");
}

fn revocation_cluster(revocation: bool) -> Sim {
    let config = Config {
        revocation,
        revocation_grace_ms: 1_000,
        ..Config::default()
    };
    let mut sim = Sim::new(SimConfig::default(), config);
    sim.add_agent("pi1", res(4, 4), &[]);
    sim.add_framework(
        "hog",
        Register::new("hog"),
        PackTasks::new("h", res(1, 1), 4, 4),
    );
    sim.run_for(5_000);
    assert_eq!(running(&sim, 0), 4);
    let mut needy = Register::new("needy");
    needy.guarantee = Some(res(1, 1));
    sim.add_framework("needy", needy, PackTasks::new("n", res(1, 1), 1, 1));
    sim
}

#[test]
fn revocation_kills_a_task_of_a_framework_over_its_share_for_one_below_its_guarantee() {
    let mut sim = revocation_cluster(true);
    sim.run_for(30_000);
    assert_eq!(running(&sim, 1), 1);
    assert_eq!(running(&sim, 0), 3);
    assert_eq!(sim.master.stats().revocations, 1);
    // The hog's newest task went through the normal kill path, with a SIGTERM first.
    let killed = sim.frameworks[0].updates("h3");
    let last = killed.last().unwrap();
    assert_eq!(
        (last.state, last.reason),
        (TaskState::Killed, Reason::KilledByRequest)
    );
    assert!(sim.agents[0]
        .signals
        .iter()
        .any(|(t, s, _)| t == "h3" && *s == agent_nostd_core::agent::Signal::Term));
}

#[test]
fn revocation_is_off_by_default() {
    assert!(!Config::default().revocation);
    let mut sim = revocation_cluster(false);
    sim.run_for(30_000);
    assert_eq!(running(&sim, 1), 0);
    assert_eq!(running(&sim, 0), 4);
    assert_eq!(sim.master.stats().revocations, 0);
    assert!(sim.agents[0].signals.is_empty());
}
