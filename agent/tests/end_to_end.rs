//! The real agent binary against an in-process broker and a scripted master: registration, tasks to
//! their end, kills, garbage on its topics, and recovery after the agent is SIGKILLed.

mod support;

use std::time::Duration;

use agent_nostd_core::ids::id;
use agent_nostd_core::wire::*;
use support::*;

#[test]
fn the_agent_registers_with_its_board_and_runs_a_task_to_its_exit_code() {
    runtime().block_on(async {
        let port = start_broker();
        let mut master = Master::connect(port).await;
        let work = tempfile::tempdir().unwrap();
        let _agent = AgentProcess::start(
            "e2e-1",
            port,
            work.path(),
            &["--attribute", "sensor=bme280"],
        );

        let AgentMsg::Register(info) = master.accept_registration("e2e-1", 1).await else {
            panic!("a fresh agent registers, not re-registers");
        };
        assert_eq!(info.arch, std::env::consts::ARCH);
        assert!(info.total.cpu_millis >= 1000);
        assert!(info.total.mem_mib > 0);
        let attr = |k: &str| {
            info.attributes
                .iter()
                .find(|a| a.key == k)
                .map(|a| a.value.to_string())
        };
        assert_eq!(attr("sensor").as_deref(), Some("bme280"));
        let isolation = attr("isolation").expect("isolation is advertised");
        assert!(
            ["cgroup1", "cgroup2", "none"].contains(&isolation.as_str()),
            "{isolation}"
        );

        master
            .expect(10, |m| matches!(m.msg, AgentMsg::Report(_)).then_some(()))
            .await;

        master
            .send(
                "e2e-1",
                &run_task("t1", &["sh", "-c", "echo hello; exit 3"], 100, 32),
            )
            .await;
        let end = master
            .wait_state("e2e-1", "t1", TaskState::Failed, 20)
            .await;
        assert_eq!(end.reason, Reason::Exited { code: 3 });
        assert_eq!(end.message, "exited with code 3");

        master
            .send("e2e-1", &run_task("t2", &["true"], 100, 32))
            .await;
        let end = master
            .wait_state("e2e-1", "t2", TaskState::Finished, 20)
            .await;
        assert_eq!(end.reason, Reason::Exited { code: 0 });

        master
            .send("e2e-1", &run_task("t3", &["/no/such/program"], 100, 32))
            .await;
        let end = master
            .wait_state("e2e-1", "t3", TaskState::Failed, 20)
            .await;
        assert_eq!(end.reason, Reason::LaunchFailed);
        assert!(end.message.contains("No such file"), "{}", end.message);
    });
}

#[test]
fn a_kill_through_mqtt_ends_the_task_as_killed() {
    runtime().block_on(async {
        let port = start_broker();
        let mut master = Master::connect(port).await;
        let work = tempfile::tempdir().unwrap();
        let _agent = AgentProcess::start("e2e-kill", port, work.path(), &[]);
        master.accept_registration("e2e-kill", 1).await;
        master
            .send("e2e-kill", &run_task("sleeper", &["sleep", "600"], 100, 32))
            .await;
        master
            .wait_state("e2e-kill", "sleeper", TaskState::Running, 20)
            .await;
        master
            .send(
                "e2e-kill",
                &MasterMsg::KillTask(KillTask {
                    framework_id: id("fw-1").unwrap(),
                    task_id: id("sleeper").unwrap(),
                    grace_ms: 1_000,
                }),
            )
            .await;
        let end = master
            .wait_state("e2e-kill", "sleeper", TaskState::Killed, 20)
            .await;
        assert_eq!(end.reason, Reason::KilledByRequest);
    });
}

#[test]
fn garbage_on_the_agents_topics_is_dropped_and_the_agent_keeps_working() {
    runtime().block_on(async {
        let port = start_broker();
        let mut master = Master::connect(port).await;
        let work = tempfile::tempdir().unwrap();
        let _agent = AgentProcess::start("e2e-junk", port, work.path(), &[]);
        master.accept_registration("e2e-junk", 1).await;
        for payload in [vec![], vec![0xFF; 40], vec![1, 99, 1, 2], vec![9, 0, 1]] {
            master
                .publish_raw("bramble/v1/agent/e2e-junk/cmd", payload.clone())
                .await;
            master.publish_raw("bramble/v1/master/hello", payload).await;
        }
        master
            .send("e2e-junk", &MasterMsg::Ping { seq: 4242 })
            .await;
        master
            .expect(10, |m| {
                matches!(m.msg, AgentMsg::Pong { seq: 4242 }).then_some(())
            })
            .await;
        master
            .send("e2e-junk", &run_task("ok", &["true"], 100, 32))
            .await;
        master
            .wait_state("e2e-junk", "ok", TaskState::Finished, 20)
            .await;
    });
}

#[test]
fn tasks_survive_an_agent_restart_and_those_that_ended_meanwhile_report_their_real_exit() {
    runtime().block_on(async {
        let port = start_broker();
        let mut master = Master::connect(port).await;
        let work = tempfile::tempdir().unwrap();
        let marker = work.path().join("release-me");
        let mut agent = AgentProcess::start("e2e-restart", port, work.path(), &[]);
        master.accept_registration("e2e-restart", 1).await;

        master
            .send("e2e-restart", &run_task("long", &["sleep", "600"], 100, 32))
            .await;
        master
            .wait_state("e2e-restart", "long", TaskState::Running, 20)
            .await;
        let script = format!(
            "while [ ! -e {} ]; do sleep 0.05; done; exit 7",
            marker.display()
        );
        master
            .send(
                "e2e-restart",
                &run_task("short", &["sh", "-c", &script], 100, 32),
            )
            .await;
        master
            .wait_state("e2e-restart", "short", TaskState::Running, 20)
            .await;

        agent.kill_hard();
        // While the agent is down, `short` ends with code 7 and its supervisor records it.
        std::fs::write(&marker, b"").unwrap();
        let recorded = work
            .path()
            .join("sandboxes/fw-1/short")
            .join(bramble_agent::process::EXIT_FILE);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !recorded.exists() {
            assert!(std::time::Instant::now() < deadline, "short never ended");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let _agent = AgentProcess::start("e2e-restart", port, work.path(), &[]);
        let AgentMsg::ReRegister(re) = master.accept_registration("e2e-restart", 2).await else {
            panic!("a restarted agent with tasks re-registers");
        };
        let long = re
            .tasks
            .iter()
            .find(|t| t.task_id == "long")
            .expect("long is listed");
        assert_eq!(
            long.state,
            TaskState::Running,
            "the long task was re-adopted"
        );
        let end = master
            .wait_state("e2e-restart", "short", TaskState::Failed, 20)
            .await;
        assert_eq!(end.reason, Reason::Exited { code: 7 }, "{}", end.message);

        // The re-adopted task is still under control: it can be killed.
        master
            .send(
                "e2e-restart",
                &MasterMsg::KillTask(KillTask {
                    framework_id: id("fw-1").unwrap(),
                    task_id: id("long").unwrap(),
                    grace_ms: 500,
                }),
            )
            .await;
        master
            .wait_state("e2e-restart", "long", TaskState::Killed, 20)
            .await;
    });
}

#[test]
fn a_corrupt_checkpoint_is_set_aside_and_the_agent_starts_afresh() {
    runtime().block_on(async {
        let port = start_broker();
        let mut master = Master::connect(port).await;
        let work = tempfile::tempdir().unwrap();
        std::fs::write(
            work.path().join("agent.json"),
            b"{\"version\": 1, \"agent_id\": tru",
        )
        .unwrap();
        let _agent = AgentProcess::start("e2e-corrupt", port, work.path(), &[]);
        let AgentMsg::Register(_) = master.accept_registration("e2e-corrupt", 1).await else {
            panic!("an agent without a usable checkpoint registers afresh");
        };
        let aside = std::fs::read(work.path().join("agent.json.corrupt")).unwrap();
        assert!(
            aside.starts_with(b"{\"version\": 1"),
            "kept for a person to look at"
        );
        master
            .send("e2e-corrupt", &run_task("t1", &["true"], 100, 32))
            .await;
        master
            .wait_state("e2e-corrupt", "t1", TaskState::Finished, 20)
            .await;
    });
}
