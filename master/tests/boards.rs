//! The board builds of `bramble-agent` (from `cross/build.sh`) under qemu-user, against an x86_64
//! master and its embedded broker on loopback: each registers with its board's `arch` and runs a
//! task to FINISHED.
//!
//! Tasks run under the agent's own supervisor (`bramble-agent __supervise`). Without binfmt_misc
//! the kernel cannot exec an ARM binary, so the emulated agent could not start its supervisor
//! itself: the agent gets `--supervisor` pointing at a small script that runs the same ARM binary
//! under qemu-user. The task (`sh -c 'exit 0'`) is a host program, which qemu-user execs natively.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bramble::cluster::{ClusterBroker, LocalCluster};
use bramble::demo::scheduler_config;
use bramble_proto::{Offer, StatusUpdate, TaskInfo};
use bramble_sdk::scheduler::{self, Scheduler, SchedulerDriver};
use bramble_sdk::{Resources, TaskState};

mod support;
use support::{cluster_options, free_port, runtime, target_dir};
/// A board build and how to run it.
struct Board {
    triple: &'static str,
    /// The qemu-user command and its arguments, before the binary.
    qemu: &'static [&'static str],
    /// What the agent reports as its architecture (`std::env::consts::ARCH` on the board).
    arch: &'static str,
}

const AARCH64: Board = Board {
    triple: "aarch64-unknown-linux-gnu",
    qemu: &["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"],
    arch: "aarch64",
};
const ARMV7: Board = Board {
    triple: "armv7-unknown-linux-gnueabihf",
    qemu: &["qemu-arm", "-L", "/usr/arm-linux-gnueabihf"],
    arch: "arm",
};
const AARCH64_MUSL: Board = Board {
    triple: "aarch64-unknown-linux-musl",
    qemu: &["qemu-aarch64"],
    arch: "aarch64",
};

impl Board {
    fn binary(&self) -> PathBuf {
        let bin = target_dir().join(self.triple).join("release/bramble-agent");
        assert!(
            bin.is_file(),
            "{} is missing: run cross/build.sh first (it builds the board targets)",
            bin.display()
        );
        bin
    }
}

/// The emulated agent as a child process, killed when dropped.
struct EmulatedAgent(Child);

impl EmulatedAgent {
    fn start(board: &Board, id: &str, broker: &str, work: &Path) -> EmulatedAgent {
        let bin = board.binary();
        let supervisor = work.join("supervise-under-qemu");
        let mut script = String::from("#!/bin/sh\nexec");
        for part in board.qemu {
            script.push_str(&format!(" '{part}'"));
        }
        script.push_str(&format!(" '{}' \"$@\"\n", bin.display()));
        std::fs::write(&supervisor, script).unwrap();
        std::fs::set_permissions(
            &supervisor,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let config = work.join("agent.toml");
        std::fs::write(&config, "").unwrap();
        let child = Command::new(board.qemu[0])
            .args(&board.qemu[1..])
            .arg(&bin)
            .arg("--config")
            .arg(&config)
            .args(["--agent-id", id, "--broker", broker])
            .arg("--work-dir")
            .arg(work.join("agent"))
            .arg("--supervisor")
            .arg(&supervisor)
            // As root, tasks run as root: the `bramble` user need not exist for the tests.
            .arg("--run-as")
            .arg(bramble_agent::tasks::user::current_user_name())
            .env("BRAMBLE_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} (apt-get install qemu-user): {e}",
                    board.qemu[0]
                )
            });
        EmulatedAgent(child)
    }
}

impl Drop for EmulatedAgent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Launches one task on the first offer from `agent_id`, declines the rest, and stops when the
/// task ends.
struct RunOneTask {
    agent_id: String,
    /// The architecture the offer described the agent with.
    arch: Option<String>,
    launched: bool,
    end: Option<StatusUpdate>,
}

impl Scheduler for RunOneTask {
    fn offers(&mut self, driver: &mut SchedulerDriver, offers: Vec<Offer>) {
        for offer in offers {
            if !self.launched && offer.agent.agent_id == self.agent_id {
                self.arch = Some(offer.agent.arch.clone());
                let task = TaskInfo {
                    task_id: "exit-0".into(),
                    argv: vec!["sh".into(), "-c".into(), "exit 0".into()],
                    env: vec![],
                    resources: Resources::new(100, 32, 0),
                    artifacts: Vec::new(),
                };
                driver.launch(offer.offer_id, vec![task]).unwrap();
                self.launched = true;
            } else {
                driver.decline(vec![offer.offer_id], None).unwrap();
            }
        }
    }

    fn status_update(&mut self, driver: &mut SchedulerDriver, update: StatusUpdate) {
        if update.state.is_terminal() {
            self.end = Some(update);
            driver.stop();
        }
    }
}

fn the_board_agent_registers_and_runs_a_task_to_finished(board: &Board) {
    let work = tempfile::tempdir().unwrap();
    let runtime = runtime();
    runtime.block_on(async {
        let listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        // No in-process agents: the board's agent runs under qemu.
        let options = cluster_options(ClusterBroker::Embedded(listen), work.path(), vec![]);
        let mut cluster = LocalCluster::start(options).unwrap();
        let id = format!("qemu-{}", board.arch);
        let _agent = EmulatedAgent::start(board, &id, &cluster.broker.to_string(), work.path());
        tokio::time::timeout(Duration::from_secs(60), cluster.wait_for_agents(1))
            .await
            .unwrap_or_else(|_| panic!("the {} agent registers within 60 s", board.triple));

        let scheduler = RunOneTask {
            agent_id: id.clone(),
            arch: None,
            launched: false,
            end: None,
        };
        let config = scheduler_config(&cluster.broker, "qemu-test", "qemu-test");
        let done = tokio::time::timeout(Duration::from_secs(60), scheduler::run(config, scheduler))
            .await
            .unwrap_or_else(|_| panic!("the task on the {} agent ends within 60 s", board.triple))
            .unwrap();
        assert_eq!(done.arch.as_deref(), Some(board.arch), "the offer's arch");
        let end = done.end.expect("a terminal update");
        assert_eq!(end.state, TaskState::Finished, "{end:?}");
        assert_eq!(end.agent_id.as_deref(), Some(id.as_str()));
        assert!(
            cluster.wait_for_no_tasks(Duration::from_secs(20)).await,
            "the master sees no task left"
        );
        cluster.stop().await;
    });
}

#[test]
#[ignore = "needs qemu-user and the cross builds (cross/build.sh)"]
fn the_aarch64_agent_registers_under_qemu_and_runs_a_task_to_finished() {
    the_board_agent_registers_and_runs_a_task_to_finished(&AARCH64);
}

#[test]
#[ignore = "needs qemu-user and the cross builds (cross/build.sh)"]
fn the_armv7_agent_registers_under_qemu_and_runs_a_task_to_finished() {
    the_board_agent_registers_and_runs_a_task_to_finished(&ARMV7);
}

#[test]
#[ignore = "needs qemu-user and the cross builds (cross/build.sh)"]
fn the_static_musl_agent_registers_under_qemu_and_runs_a_task_to_finished() {
    the_board_agent_registers_and_runs_a_task_to_finished(&AARCH64_MUSL);
}
