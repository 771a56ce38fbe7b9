//! The warm spare without cgroups (isolation `none`): a pre-spawned supervisor with a pre-forked
//! task process. A launch through it, its replacement, a dead spare falling back to the cold path,
//! and a spare whose agent goes away. With real cgroups: `cgroup_limits.rs`.

use std::path::{Path, PathBuf};

use bramble_agent::cgroup::{Isolation, Limits};
use bramble_agent::process::{self, RawExit, Spare, TaskSpec, STDOUT_FILE};
use bramble_agent::warm::Launcher;
use tokio::sync::mpsc;

mod tasks;
use tasks::{helper_says, sandbox_at, supervisor, take_prepared, task_spec, wait, wait_until};

const HELPER_TEST: &str = "an_agent_run_as_a_helper_prepares_a_spare_and_dies_without_cleaning_up";
const HELPER_ENV: &str = "BRAMBLE_TEST_SPARE_HELPER";

fn no_isolation() -> Isolation {
    Isolation::None {
        reason: "test".into(),
    }
}

const LIMITS: Limits = Limits {
    cpu_millis: 100,
    mem_mib: 16,
    pids_max: 8,
};

fn spec(sandbox: &Path, task_id: &str, argv: &[&str]) -> TaskSpec {
    task_spec("fw-warm", sandbox, task_id, argv, 1 << 20)
}

fn sandbox() -> (tempfile::TempDir, PathBuf) {
    sandbox_at("sandbox")
}

/// Whether `pid` is a live process (not a zombie).
fn alive(pid: i32) -> bool {
    process::process_start_time(pid).is_some()
}

/// The launcher with its first spare ready.
async fn ready_launcher() -> (Launcher, mpsc::Receiver<Option<Spare>>) {
    let (mut launcher, mut ready) = Launcher::new("pi-test", no_isolation(), supervisor(), 1);
    launcher.refill();
    take_prepared(&mut launcher, &mut ready).await;
    assert!(launcher.spare().is_some(), "the spare could be prepared");
    (launcher, ready)
}

/// The process group and session of `pid`.
fn pgrp_and_session(pid: i32) -> (i32, i32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .collect();
    (f[2].parse().unwrap(), f[3].parse().unwrap())
}

#[tokio::test]
async fn a_launch_through_the_warm_spare_runs_the_task_in_the_prepared_process() {
    let (mut launcher, _ready) = ready_launcher().await;
    let (supervisor_pid, stub_pid) = {
        let spare = launcher.spare().unwrap();
        (spare.supervisor_pid(), spare.stub_pid())
    };
    // The stub already has its own process group, in the supervisor's session.
    assert_eq!(pgrp_and_session(stub_pid).0, stub_pid);
    assert_eq!(pgrp_and_session(stub_pid).1, supervisor_pid);
    let (_dir, sb) = sandbox();
    let s = spec(
        &sb,
        "warm-env",
        &["sh", "-c", "echo \"$BRAMBLE_TASK_ID $$\"; pwd; exit 4"],
    );
    let mut started = launcher.start(&s, LIMITS).await.unwrap();
    assert!(started.warm);
    assert_eq!(started.launched.supervisor_pid, supervisor_pid);
    assert_eq!(started.launched.task_pgid, stub_pid);
    assert_eq!(wait(&mut started.handle).await, RawExit::Code(4));
    let out = std::fs::read_to_string(sb.join(STDOUT_FILE)).unwrap();
    let real = sb.canonicalize().unwrap();
    assert_eq!(out, format!("warm-env {stub_pid}\n{}\n", real.display()));
}

#[tokio::test]
async fn a_warm_launch_of_a_missing_program_fails_with_the_same_message_as_a_cold_one() {
    let (mut launcher, _ready) = ready_launcher().await;
    let stub = launcher.spare().unwrap().stub_pid();
    let (_dir, sb) = sandbox();
    let s = spec(&sb, "nope", &["/usr/bin/no-such-program-xyz"]);
    let err = launcher.start(&s, LIMITS).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "No such file or directory (os error 2): /usr/bin/no-such-program-xyz"
    );
    wait_until("the unused stub to be gone", || !alive(stub)).await;
}

#[tokio::test]
async fn after_a_launch_a_new_spare_is_ready_and_no_more_than_the_count_exist() {
    let (mut launcher, mut ready) = ready_launcher().await;
    let first = launcher.spare().unwrap().supervisor_pid();
    let (_dir, sb) = sandbox();
    let mut started = launcher
        .start(&spec(&sb, "t1", &["true"]), LIMITS)
        .await
        .unwrap();
    assert!(started.warm);
    assert!(launcher.spare().is_none(), "the spare was used");
    launcher.refill();
    assert!(launcher.is_preparing());
    // A second refill while one is on its way starts nothing more.
    launcher.refill();
    take_prepared(&mut launcher, &mut ready).await;
    let second = launcher.spare().expect("a new spare is ready");
    assert_ne!(second.supervisor_pid(), first);
    assert!(alive(second.stub_pid()));
    assert!(!launcher.is_preparing());
    launcher.refill();
    assert!(!launcher.is_preparing(), "one spare is the count");
    assert!(ready.try_recv().is_err(), "no other spare was prepared");
    assert_eq!(wait(&mut started.handle).await, RawExit::Code(0));
}

#[tokio::test]
async fn a_dead_spare_falls_back_to_the_cold_path_and_the_task_still_runs() {
    let (mut launcher, _ready) = ready_launcher().await;
    let (dead, stub) = {
        let spare = launcher.spare().unwrap();
        (spare.supervisor_pid(), spare.stub_pid())
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dead),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let (_dir, sb) = sandbox();
    let mut started = launcher
        .start(&spec(&sb, "cold", &["sh", "-c", "echo ran"]), LIMITS)
        .await
        .unwrap();
    assert!(!started.warm, "the task ran on the cold path");
    assert_ne!(started.launched.supervisor_pid, dead);
    assert_eq!(wait(&mut started.handle).await, RawExit::Code(0));
    assert_eq!(
        std::fs::read_to_string(sb.join(STDOUT_FILE)).unwrap(),
        "ran\n"
    );
    // The orphaned stub saw EOF on its task pipe and went.
    wait_until("the dead spare's stub to be gone", || !alive(stub)).await;
}

#[tokio::test]
async fn a_spare_whose_agent_lets_go_exits_and_takes_its_stub_with_it() {
    let spare = Spare::prepare(None, &supervisor()).await.unwrap();
    let (sup, stub) = (spare.supervisor_pid(), spare.stub_pid());
    assert!(alive(sup) && alive(stub));
    drop(spare);
    wait_until("the spare's supervisor and stub to be gone", || {
        !alive(sup) && !alive(stub)
    })
    .await;
}

/// Does nothing in a normal run. Run by the next test as a separate process, it plays an agent
/// that prepares a spare, prints its pids and dies at once, without cleaning up.
#[tokio::test]
async fn an_agent_run_as_a_helper_prepares_a_spare_and_dies_without_cleaning_up() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    let spare = Spare::prepare(None, &supervisor()).await.unwrap();
    println!("SPARE {} {}", spare.supervisor_pid(), spare.stub_pid());
    std::process::exit(0);
}

#[tokio::test]
async fn the_spare_of_an_agent_that_died_exits_by_itself() {
    let pids: Vec<i32> = helper_says(HELPER_TEST, (HELPER_ENV, "1".as_ref()), "SPARE ")
        .await
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    wait_until("the dead agent's spare to be gone", || {
        pids.iter().all(|p| !alive(*p))
    })
    .await;
}

#[tokio::test]
async fn a_launcher_keeps_its_count_of_spares_and_back_to_back_launches_both_go_warm() {
    let (mut launcher, mut ready) = Launcher::new("pi-pool", no_isolation(), supervisor(), 2);
    for n in 1..=2 {
        launcher.refill();
        assert!(launcher.is_preparing(), "spare {n} is on its way");
        take_prepared(&mut launcher, &mut ready).await;
        assert_eq!(launcher.ready(), n);
    }
    launcher.refill();
    assert!(!launcher.is_preparing(), "two spares are the count");
    let oldest = launcher.spare().unwrap().supervisor_pid();

    let (_dir, sb) = sandbox();
    let mut first = launcher
        .start(&spec(&sb, "t1", &["true"]), LIMITS)
        .await
        .unwrap();
    let mut second = launcher
        .start(&spec(&sb, "t2", &["true"]), LIMITS)
        .await
        .unwrap();
    assert!(first.warm && second.warm, "both launches found a spare");
    assert_eq!(
        first.launched.supervisor_pid, oldest,
        "the oldest spare is used first"
    );
    assert_ne!(
        first.launched.supervisor_pid,
        second.launched.supervisor_pid
    );
    assert_eq!(launcher.ready(), 0);
    assert_eq!(wait(&mut first.handle).await, RawExit::Code(0));
    assert_eq!(wait(&mut second.handle).await, RawExit::Code(0));
    launcher.shutdown().await;
}
