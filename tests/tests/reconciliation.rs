//! Reconciliation across a master restart: a new master knows the tasks that ended before it
//! started from its agents' re-registrations, so reconciling one answers its real end.

use agent_nostd_core::agent::Exit;
use agent_nostd_core::wire::TaskState;
use agent_nostd_core::Resources;
use bramble_master_core::Config;
use bramble_proto::{Accept, Call, Event, Register, TaskInfo};
use bramble_tests::sim::{Manual, Sim};

fn reconcile(sim: &mut Sim, task_id: &str) -> Vec<TaskState> {
    let before = sim.frameworks[0].events.len();
    sim.call(
        0,
        Call::Reconcile {
            task_ids: vec![task_id.into()],
        },
    );
    sim.run_for(100);
    sim.frameworks[0].events[before..]
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Update(u) if u.task_id == task_id => Some(u.state),
            _ => None,
        })
        .collect()
}

#[test]
fn a_task_that_ended_before_a_master_restart_reconciles_to_its_end_not_lost() {
    let mut sim = Sim::perfect();
    sim.add_agent("pi1", Resources::new(2_000, 2_048, 0), &[]);
    sim.add_framework("fw", Register::new("fw"), Manual);
    sim.run_for(100);
    let offer_id = sim.frameworks[0].offers()[0].offer_id;
    sim.call(
        0,
        Call::Accept(Accept {
            offer_id,
            tasks: vec![TaskInfo::new("t1", &["/bin/x"], Resources::new(100, 10, 0))],
        }),
    );
    sim.run_for(100);
    sim.finish_task(0, 0, "t1", Exit::Code(3));
    // The framework acknowledges the end; the board releases the task.
    sim.run_for(1_000);
    assert_eq!(sim.agents[0].core.tasks().count(), 0);
    assert_eq!(sim.frameworks[0].state("t1"), Some(TaskState::Failed));

    sim.restart_master(2);
    sim.run_for(1_000);
    assert_eq!(reconcile(&mut sim, "t1"), [TaskState::Failed]);
    // A task nobody ever ran is unknown, once agents have had time to re-register.
    sim.run_for(Config::default().reregistration_window_ms);
    assert_eq!(reconcile(&mut sim, "never"), [TaskState::Lost]);
}
