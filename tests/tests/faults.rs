//! Failures on a simulated cluster: silent and disconnected agents, agent and master restarts,
//! framework failover, and bad payloads.

use agent_nostd_core::agent::Exit;
use agent_nostd_core::wire::TaskState;
use agent_nostd_core::Resources;
use bramble_master_core::{Config, FrameworkState};
use bramble_proto::{Accept, Call, Event, Register, TaskInfo};
use bramble_tests::sim::{Manual, PackTasks, Sim, SimConfig};

fn res(cpus: u32, gib: u32) -> Resources {
    Resources::new(cpus * 1000, gib * 1024, 0)
}

/// Two agents of 4 CPU / 4 GB, framework 0 running `t1` on agent 0.
fn one_task_running() -> Sim {
    let mut sim = Sim::perfect();
    sim.add_agent("pi0", res(4, 4), &[]);
    sim.add_framework("fw", Register::new("fw"), Manual);
    sim.run_for(50);
    sim.add_agent("pi1", res(4, 4), &[]);
    let offer = sim.frameworks[0].offers()[0].clone();
    assert_eq!(offer.agent.agent_id, "pi0");
    sim.call(
        0,
        Call::Accept(Accept {
            offer_id: offer.offer_id,
            tasks: vec![TaskInfo::new("t1", &["/bin/sleep", "1000"], res(1, 1))],
        }),
    );
    sim.run_for(100);
    assert_eq!(sim.frameworks[0].state("t1"), Some(TaskState::Running));
    sim
}

fn agent_lost(sim: &Sim, agent: &str) -> bool {
    sim.frameworks[0]
        .events
        .iter()
        .any(|(_, e)| matches!(e, Event::AgentLost { agent_id } if agent_id == agent))
}

#[test]
fn agent_that_goes_silent_is_marked_unreachable_and_its_tasks_reported() {
    let mut sim = one_task_running();
    let cut = sim.now;
    sim.agents[0].partitioned = true;
    sim.run_for(14_000);
    assert_eq!(sim.frameworks[0].state("t1"), Some(TaskState::Running));
    sim.run_for(6_000);
    assert_eq!(sim.frameworks[0].state("t1"), Some(TaskState::Unreachable));
    assert!(agent_lost(&sim, "pi0"));
    let lost_at = sim.frameworks[0]
        .events
        .iter()
        .find(|(_, e)| matches!(e, Event::AgentLost { .. }))
        .map(|(t, _)| *t)
        .unwrap();
    assert!(
        lost_at >= cut + 15_000 && lost_at <= cut + 21_000,
        "{lost_at}"
    );
    assert!(!sim.master.agent("pi0").unwrap().reachable);
    // Its resources leave the cluster total.
    assert_eq!(sim.master.cluster_total().cpu_millis, 4_000);

    // The partition heals: the agent is asked to re-register and its task is running again.
    sim.agents[0].partitioned = false;
    let back = sim.run_until_cond(60_000, |s| {
        s.frameworks[0].state("t1") == Some(TaskState::Running)
    });
    assert!(back);
    assert!(sim.master.agent("pi0").unwrap().reachable);
    assert_eq!(sim.master.cluster_total().cpu_millis, 8_000);
}

#[test]
fn agent_last_will_marks_it_unreachable_at_once() {
    let mut sim = one_task_running();
    let at = sim.now;
    sim.disconnect_agent(0);
    sim.run_for(10);
    assert!(agent_lost(&sim, "pi0"));
    let u = sim.frameworks[0].updates("t1");
    let last = u.last().unwrap();
    assert_eq!(last.state, TaskState::Unreachable);
    assert!(last.message.contains("last will"), "{}", last.message);
    assert!(sim.now - at <= 10);

    sim.connect_agent(0);
    let back = sim.run_until_cond(60_000, |s| {
        s.frameworks[0].state("t1") == Some(TaskState::Running)
    });
    assert!(back);
}

#[test]
fn an_agent_unreachable_too_long_is_forgotten_and_its_tasks_lost() {
    let config = Config {
        unreachable_gc_ms: 60_000,
        ..Config::default()
    };
    let mut sim = Sim::new(SimConfig::default(), config);
    sim.add_agent("pi0", res(4, 4), &[]);
    sim.add_framework(
        "fw",
        Register::new("fw"),
        PackTasks::new("t", res(1, 1), 1, 1),
    );
    sim.run_for(1_000);
    sim.agents[0].partitioned = true;
    sim.run_for(90_000);
    assert_eq!(sim.frameworks[0].state("t0"), Some(TaskState::Lost));
    assert!(sim.master.agent("pi0").is_none());
    assert_eq!(sim.master.framework(&sim.fid(0)).unwrap().tasks, 0);
}

#[test]
fn agent_restart_readopts_its_tasks_without_losing_them() {
    let mut sim = one_task_running();
    let updates_before = sim.frameworks[0].updates("t1").len();
    sim.restart_agent(0);
    sim.run_for(30_000);
    let fid = sim.fid(0);
    assert_eq!(
        sim.master.task(&fid, "t1").map(|t| t.state),
        Some(TaskState::Running)
    );
    // The last will made it unreachable for a moment; it came back RUNNING, never LOST.
    let states: Vec<TaskState> = sim.frameworks[0].updates("t1")[updates_before..]
        .iter()
        .map(|u| u.state)
        .collect();
    assert_eq!(states, vec![TaskState::Unreachable, TaskState::Running]);
    sim.finish_task(0, 0, "t1", Exit::Code(0));
    sim.run_for(100);
    assert_eq!(sim.frameworks[0].state("t1"), Some(TaskState::Finished));
}

#[test]
fn master_restart_rebuilds_tasks_from_agent_reregistrations() {
    let mut sim = Sim::perfect();
    sim.add_agent("pi0", res(4, 4), &[]);
    sim.add_agent("pi1", res(4, 4), &[]);
    sim.add_framework(
        "fw",
        Register::new("fw"),
        PackTasks::new("t", res(2, 2), 1, 3),
    );
    sim.run_for(10_000);
    let old_fid = sim.fid(0);
    let running: Vec<_> = sim
        .agents
        .iter()
        .flat_map(|a| a.running.keys().cloned())
        .collect();
    assert_eq!(running.len(), 3);

    sim.restart_master(2);
    sim.run_for(10_000);
    // Agents re-registered with their tasks; the framework took its id back.
    assert_eq!(sim.fid(0), old_fid);
    let view = sim.master.framework(&old_fid).unwrap();
    assert_eq!(view.state, FrameworkState::Active);
    assert_eq!(view.tasks, 3);
    for key in &running {
        assert_eq!(
            sim.master
                .task(&key.framework_id, &key.task_id)
                .map(|t| t.state),
            Some(TaskState::Running)
        );
    }
    sim.assert_invariants();
    // No task was lost or launched twice.
    assert_eq!(
        sim.agents.iter().map(|a| a.launched.len()).sum::<usize>(),
        3
    );
    for j in 0..3 {
        assert_eq!(
            sim.frameworks[0].state(&format!("t{j}")),
            Some(TaskState::Running)
        );
    }
    // A framework registering with the new master gets an id that cannot clash with the old ones.
    sim.add_framework("late", Register::new("late"), Manual);
    sim.run_for(100);
    let late = sim.fid(1);
    assert!(late.starts_with("2-"), "{late}");
    assert_ne!(late, old_fid);
    // The remaining resources are offered again: 2 CPU on one agent, 4 on the other.
    let offered: u32 = sim.frameworks[1]
        .offers()
        .iter()
        .map(|o| o.resources.cpu_millis)
        .sum();
    assert_eq!(offered, 2_000);
}

#[test]
fn tasks_of_a_framework_that_never_comes_back_after_a_master_restart_are_killed() {
    let config = Config {
        framework_recovery_timeout_ms: 30_000,
        ..Config::default()
    };
    let mut sim = Sim::new(SimConfig::default(), config);
    sim.add_agent("pi0", res(4, 4), &[]);
    sim.add_framework(
        "fw",
        Register::new("fw"),
        PackTasks::new("t", res(1, 1), 1, 1),
    );
    sim.run_for(2_000);
    assert_eq!(sim.agents[0].running.len(), 1);
    sim.frameworks[0].connected = false; // the scheduler is gone for good
    sim.restart_master(2);
    sim.run_for(10_000);
    let fid = sim.fid(0);
    assert!(matches!(
        sim.master.framework(&fid).map(|f| f.state),
        Some(FrameworkState::Recovered { .. })
    ));
    sim.run_for(30_000);
    assert!(sim.master.framework(&fid).is_none());
    assert!(sim.agents[0].running.is_empty());
}

#[test]
fn framework_failover_within_its_timeout_keeps_its_tasks_and_gets_missed_updates() {
    let mut sim = one_task_running();
    sim.add_framework("other", Register::new("other"), Manual);
    sim.run_for(50);
    sim.disconnect_framework(0);
    sim.run_for(50);
    let fid = sim.fid(0);
    assert!(matches!(
        sim.master.framework(&fid).unwrap().state,
        FrameworkState::Disconnected { .. }
    ));
    // While it is away its task ends; the update waits for it.
    sim.finish_task(0, 0, "t1", Exit::Code(0));
    sim.run_for(5_000);
    assert_eq!(sim.frameworks[0].state("t1"), Some(TaskState::Running));
    // Its offers went to the other framework meanwhile.
    assert!(!sim.frameworks[1].offers().is_empty());
    sim.reconnect_framework(0);
    sim.run_for(50);
    assert_eq!(sim.fid(0), fid);
    assert_eq!(sim.frameworks[0].state("t1"), Some(TaskState::Finished));
}

#[test]
fn framework_failover_timeout_kills_its_tasks() {
    let mut sim = Sim::perfect();
    sim.add_agent("pi0", res(4, 4), &[]);
    let mut reg = Register::new("fw");
    reg.failover_timeout_ms = 20_000;
    sim.add_framework("fw", reg, PackTasks::new("t", res(1, 1), 2, 2));
    sim.run_for(2_000);
    assert_eq!(sim.agents[0].running.len(), 2);
    let fid = sim.fid(0);
    sim.disconnect_framework(0);
    sim.run_for(19_000);
    assert_eq!(sim.agents[0].running.len(), 2);
    sim.run_for(2_000);
    assert!(sim.agents[0].running.is_empty());
    assert!(sim.master.framework(&fid).is_none());
    assert_eq!(sim.master.agent("pi0").unwrap().allocated.cpu_millis, 0);
}

#[test]
fn duplicated_and_delayed_messages_change_nothing_the_frameworks_see_twice() {
    let config = SimConfig {
        seed: 7,
        duplicate: 0.3,
        min_delay_ms: 1,
        max_delay_ms: 40,
        ..SimConfig::default()
    };
    let mut sim = Sim::new(config, Config::default());
    sim.add_agent("pi0", res(4, 4), &[]);
    sim.add_framework(
        "fw",
        Register::new("fw"),
        PackTasks::new("t", res(1, 1), 1, 4),
    );
    sim.run_for(20_000);
    assert_eq!(sim.agents[0].running.len(), 4);
    for i in 0..4 {
        sim.finish_task(0, 0, &format!("t{i}"), Exit::Code(0));
    }
    sim.run_for(20_000);
    // Re-launched up to the limit again after they finished, never beyond the board.
    assert!(sim.agents[0].running.len() <= 4);
    for i in 0..4 {
        let states: Vec<TaskState> = sim.frameworks[0]
            .updates(&format!("t{i}"))
            .iter()
            .map(|u| u.state)
            .collect();
        let mut dedup = states.clone();
        dedup.dedup();
        assert_eq!(
            dedup,
            vec![TaskState::Starting, TaskState::Running, TaskState::Finished],
            "t{i}: {states:?}"
        );
    }
}

#[test]
fn tasks_of_a_removed_framework_are_killed_when_their_agent_comes_back() {
    let mut sim = Sim::perfect();
    sim.add_agent("pi0", res(4, 4), &[]);
    let mut reg = Register::new("fw");
    reg.failover_timeout_ms = 20_000;
    sim.add_framework("fw", reg, PackTasks::new("t", res(1, 1), 2, 2));
    sim.run_for(2_000);
    assert_eq!(sim.agents[0].running.len(), 2);
    // The board drops off, then the framework goes and never comes back in time: the kills the
    // master sends when it removes the framework cannot reach the board.
    sim.disconnect_agent(0);
    sim.disconnect_framework(0);
    sim.run_for(25_000);
    assert!(sim.master.framework_ids().is_empty());
    assert_eq!(sim.agents[0].running.len(), 2);
    // The board returns and lists them: they are killed.
    sim.connect_agent(0);
    let killed = sim.run_until_cond(60_000, |s| s.agents[0].running.is_empty());
    assert!(killed);
    assert_eq!(sim.master.agent("pi0").unwrap().tasks, 0);
}
