//! Real tasks in real cgroups on this machine (v1 or v2): memory, CPU and process limits, and
//! killing. They need root and a writable cgroup filesystem, so they are ignored by default; CI
//! runs them as root with `--include-ignored`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agent_nostd_core::agent::{Exit, Signal};
use bramble_agent::cgroup::{CgroupPaths, Isolation, Limits, TaskCgroup};
use bramble_agent::process::{self, launch, RawExit, Spare, TaskSpec, STDOUT_FILE};
use bramble_agent::warm::Launcher;

mod tasks;
use tasks::{sandbox_at, supervisor, take_prepared, task_spec, wait, wait_until};

const FRAMEWORK: &str = "cgtest";

fn isolation() -> Isolation {
    let iso = Isolation::from_system();
    if let Isolation::None { reason } = &iso {
        panic!("these tests need usable cgroups: {reason}");
    }
    iso
}

fn task_cgroup(iso: &Isolation, task_id: &str, limits: Limits) -> TaskCgroup {
    iso.create_task(FRAMEWORK, task_id, limits)
        .unwrap()
        .expect("cgroups are in use")
}

fn spec(sandbox: &Path, task_id: &str, script: &str) -> TaskSpec {
    task_spec(
        FRAMEWORK,
        sandbox,
        task_id,
        &["sh", "-c", script],
        64 * 1024,
    )
}

fn sandbox() -> (tempfile::TempDir, PathBuf) {
    sandbox_at("sandbox")
}

fn dirs_of(cg: &TaskCgroup) -> Vec<PathBuf> {
    cg.paths()
        .dirs()
        .into_iter()
        .map(Path::to_path_buf)
        .collect()
}

/// Removes the cgroup and checks nothing of it is left.
async fn remove_and_check(cg: &TaskCgroup) {
    let dirs = dirs_of(cg);
    cg.remove().await.unwrap();
    for d in dirs {
        assert!(!d.exists(), "{} was removed", d.display());
    }
}

/// The `max` counter of `pids.events`: how often a fork failed at the limit.
fn pids_limit_hits(cg: &TaskCgroup) -> u64 {
    let dir = match cg.paths() {
        CgroupPaths::V2 { dir } => dir,
        CgroupPaths::V1 { pids, .. } => pids,
    };
    std::fs::read_to_string(dir.join("pids.events"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("max ").and_then(|n| n.trim().parse().ok()))
        })
        .unwrap_or(0)
}

#[tokio::test]
#[ignore = "needs root and cgroups"]
async fn a_task_over_its_memory_limit_is_oom_killed_and_reported_as_oom() {
    let iso = isolation();
    let cg = task_cgroup(
        &iso,
        "oom",
        Limits {
            cpu_millis: 1000,
            mem_mib: 32,
            pids_max: 0,
        },
    );
    let (_dir, sb) = sandbox();
    // `tail` keeps the whole line-less input in memory: 128 MiB against a 32 MiB limit.
    let s = spec(&sb, "oom", "head -c 128M /dev/zero | tail");
    let (_launched, mut handle) = launch(&s, Some(&cg), &supervisor()).await.unwrap();
    let raw = wait(&mut handle).await;
    eprintln!("raw exit of the OOM task: {raw:?}");
    assert_eq!(
        process::task_exit(raw, Some(&cg)),
        Exit::OomKilled,
        "raw exit {raw:?}"
    );
    remove_and_check(&cg).await;
}

#[tokio::test]
#[ignore = "needs root and cgroups"]
async fn a_task_within_its_memory_limit_is_not_reported_as_oom() {
    let iso = isolation();
    let cg = task_cgroup(
        &iso,
        "no-oom",
        Limits {
            cpu_millis: 1000,
            mem_mib: 64,
            pids_max: 0,
        },
    );
    let (_dir, sb) = sandbox();
    let s = spec(
        &sb,
        "no-oom",
        "head -c 1M /dev/zero | tail -c 10 >/dev/null; exit 4",
    );
    let (_launched, mut handle) = launch(&s, Some(&cg), &supervisor()).await.unwrap();
    let raw = wait(&mut handle).await;
    assert_eq!(process::task_exit(raw, Some(&cg)), Exit::Code(4));
    remove_and_check(&cg).await;
}

#[tokio::test]
#[ignore = "needs root and cgroups"]
async fn a_busy_loop_limited_to_half_a_core_never_uses_more_than_about_half() {
    let iso = isolation();
    let cg = task_cgroup(
        &iso,
        "cpu-half",
        Limits {
            cpu_millis: 500,
            mem_mib: 64,
            pids_max: 0,
        },
    );
    let (_dir, sb) = sandbox();
    let s = spec(&sb, "cpu-half", "while :; do :; done");
    let (launched, mut handle) = launch(&s, Some(&cg), &supervisor()).await.unwrap();
    wait_until("the loop to use CPU", || {
        cg.cpu_usage_ns().is_some_and(|ns| ns > 0)
    })
    .await;

    let (u0, t0) = (cg.cpu_usage_ns().unwrap(), Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (u1, t1) = (cg.cpu_usage_ns().unwrap(), Instant::now());
    let cores = (u1 - u0) as f64 / (t1 - t0).as_nanos() as f64;
    // Stop the loop before asserting, so a failure leaves nothing running.
    process::signal(&launched, Signal::Kill, Some(&cg)).unwrap();
    assert_eq!(wait(&mut handle).await, RawExit::Signal(9));
    eprintln!("the busy loop used {cores:.3} of a core");
    // Unlimited, the loop takes a whole core; the quota holds it near 0.5 (0.49-0.51 measured on an
    // idle machine). Other load on the machine can only push it lower, so the lower bound is loose.
    assert!(
        (0.15..=0.6).contains(&cores),
        "used {cores:.2} of a core with a 0.5 core limit"
    );
    remove_and_check(&cg).await;
}

#[tokio::test]
#[ignore = "needs root and cgroups"]
async fn a_fork_bomb_is_contained_by_its_pids_limit_and_killed_without_leftovers() {
    let iso = isolation();
    let cg = task_cgroup(
        &iso,
        "fork-bomb",
        Limits {
            cpu_millis: 500,
            mem_mib: 128,
            pids_max: 32,
        },
    );
    let (_dir, sb) = sandbox();
    let s = spec(&sb, "fork-bomb", "b() { b | b & }; b; exec sleep 600");
    let (launched, mut handle) = launch(&s, Some(&cg), &supervisor()).await.unwrap();

    let mut most = 0;
    wait_until("the bomb to hit its process limit", || {
        let now = cg.pids_current().expect("pids.current is readable");
        assert!(
            now <= 32,
            "the cgroup holds {now} processes, over its limit"
        );
        most = most.max(now);
        pids_limit_hits(&cg) > 0
    })
    .await;
    assert!(most > 1, "the bomb did fork");

    // This process is unaffected: it can still start processes.
    let status = std::process::Command::new("true").status().unwrap();
    assert!(status.success());

    process::signal(&launched, Signal::Kill, Some(&cg)).unwrap();
    assert_eq!(wait(&mut handle).await, RawExit::Signal(9));
    wait_until("the cgroup to empty", || cg.is_empty()).await;
    remove_and_check(&cg).await;
}

#[tokio::test]
#[ignore = "needs root and cgroups"]
async fn a_task_that_ignores_sigterm_is_sigkilled_after_its_grace_and_leaves_nothing() {
    let iso = isolation();
    let cg = task_cgroup(
        &iso,
        "stubborn",
        Limits {
            cpu_millis: 500,
            mem_mib: 64,
            pids_max: 0,
        },
    );
    let (_dir, sb) = sandbox();
    let s = spec(
        &sb,
        "stubborn",
        "trap '' TERM; echo ready; while :; do sleep 1; done",
    );
    let (launched, mut handle) = launch(&s, Some(&cg), &supervisor()).await.unwrap();
    wait_until("the trap to be set", || {
        std::fs::read_to_string(sb.join(STDOUT_FILE)).is_ok_and(|s| s == "ready\n")
    })
    .await;

    // The task is in its cgroup; its supervisor is not (an OOM kill there cannot reach it).
    let pids = cg.pids().unwrap();
    assert!(pids.contains(&launched.task_pgid), "{pids:?}");
    assert!(!pids.contains(&launched.supervisor_pid), "{pids:?}");

    process::signal(&launched, Signal::Term, Some(&cg)).unwrap();
    let grace = tokio::time::timeout(Duration::from_secs(1), handle.wait()).await;
    assert!(grace.is_err(), "the task ignores SIGTERM: {grace:?}");

    process::signal(&launched, Signal::Kill, Some(&cg)).unwrap();
    let raw = wait(&mut handle).await;
    assert_eq!(raw, RawExit::Signal(9));
    assert_eq!(process::task_exit(raw, Some(&cg)), Exit::Signal(9));
    wait_until("the cgroup to empty", || cg.is_empty()).await;
    remove_and_check(&cg).await;
}

#[tokio::test]
#[ignore = "needs root and cgroups"]
async fn a_checkpointed_cgroup_is_reopened_and_removing_it_twice_is_fine() {
    let iso = isolation();
    let cg = task_cgroup(
        &iso,
        "reopen",
        Limits {
            cpu_millis: 100,
            mem_mib: 16,
            pids_max: 4,
        },
    );
    let json = serde_json::to_string(cg.paths()).unwrap();
    let reopened = iso.open_task(serde_json::from_str(&json).unwrap()).unwrap();
    assert_eq!(reopened, cg);
    assert!(reopened.is_empty());
    assert_eq!(reopened.pids().unwrap(), Vec::<i32>::new());
    remove_and_check(&reopened).await;
    cg.remove().await.unwrap();
    assert!(cg.is_empty(), "a removed cgroup is empty");
}

#[tokio::test]
#[ignore = "needs root and cgroups"]
async fn a_leftover_empty_cgroup_is_reused_with_higher_or_lower_limits() {
    let iso = isolation();
    let small = Limits {
        cpu_millis: 100,
        mem_mib: 16,
        pids_max: 4,
    };
    let big = Limits {
        cpu_millis: 2000,
        mem_mib: 96,
        pids_max: 64,
    };
    let first = task_cgroup(&iso, "reuse", small);
    // Same task again while the first cgroup is still there (say, its removal failed).
    let again = task_cgroup(&iso, "reuse", big);
    assert_eq!(again, first);
    let limit_file = match again.paths() {
        CgroupPaths::V2 { dir } => dir.join("memory.max"),
        CgroupPaths::V1 { memory, .. } => memory.join("memory.limit_in_bytes"),
    };
    let read_limit = || std::fs::read_to_string(&limit_file).unwrap();
    assert_eq!(read_limit().trim(), (96u64 << 20).to_string());
    let back = task_cgroup(&iso, "reuse", small);
    assert_eq!(read_limit().trim(), (16u64 << 20).to_string());
    remove_and_check(&back).await;
}

/// The line of `/proc/<pid>/cgroup` for `controller` (v1), or the unified one (v2).
fn proc_cgroup_of(pid: i32, controller: Option<&str>) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    text.lines()
        .find(|l| {
            let field = l.split(':').nth(1).unwrap_or("");
            match controller {
                Some(c) => field.split(',').any(|f| f == c),
                None => field.is_empty(),
            }
        })
        .unwrap_or_else(|| panic!("no {controller:?} line in {text}"))
        .to_owned()
}

/// Asserts that process `pid` is in `cg` in every hierarchy (v1) or in the unified one (v2).
fn assert_in_cgroup(pid: i32, cg: &TaskCgroup) {
    let name = dirs_of(cg)[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let controllers: &[Option<&str>] = match cg.paths() {
        CgroupPaths::V1 { .. } => &[Some("memory"), Some("cpu"), Some("pids")],
        CgroupPaths::V2 { .. } => &[None],
    };
    for &controller in controllers {
        let line = proc_cgroup_of(pid, controller);
        assert!(line.ends_with(&format!("/{name}")), "pid {pid}: {line}");
    }
}

#[tokio::test]
#[ignore = "needs root and cgroups"]
async fn a_cold_launch_puts_the_task_and_what_it_forks_in_its_cgroup_everywhere_but_not_the_supervisor(
) {
    let iso = isolation();
    let cg = task_cgroup(
        &iso,
        "joins",
        Limits {
            cpu_millis: 500,
            mem_mib: 32,
            pids_max: 8,
        },
    );
    let (_dir, sb) = sandbox();
    let s = spec(
        &sb,
        "joins",
        "sleep 30 & echo $! > child.tmp && mv child.tmp child; \
         while [ ! -e go ]; do sleep 0.01; done; kill $!",
    );
    let (launched, mut handle) = launch(&s, Some(&cg), &supervisor()).await.unwrap();
    wait_until("the task's child", || sb.join("child").exists()).await;
    let child: i32 = std::fs::read_to_string(sb.join("child"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_in_cgroup(launched.task_pgid, &cg);
    assert_in_cgroup(child, &cg);
    let members = cg.pids().unwrap();
    assert!(
        members.contains(&launched.task_pgid) && members.contains(&child),
        "{members:?}"
    );
    assert!(
        !members.contains(&launched.supervisor_pid),
        "the supervisor stays out of the task's cgroup: {members:?}"
    );
    std::fs::write(sb.join("go"), "").unwrap();
    assert_eq!(wait(&mut handle).await, RawExit::Code(0));
    remove_and_check(&cg).await;
}

#[tokio::test]
#[ignore = "needs root and cgroups"]
async fn a_launch_through_the_warm_spare_runs_the_task_in_its_cgroup_with_the_requested_limits() {
    let (mut launcher, mut ready) = Launcher::new("cg-warm", isolation(), supervisor(), 1);
    launcher.refill();
    take_prepared(&mut launcher, &mut ready).await;
    let spare = launcher.spare().expect("the spare could be prepared");
    let spare_cg = spare.cgroup().expect("cgroups are in use").clone();
    let stub = spare.stub_pid();
    assert_eq!(
        spare_cg.pids().unwrap(),
        vec![stub],
        "the stub joined its cgroup before any launch"
    );

    let limits = Limits {
        cpu_millis: 500,
        mem_mib: 48,
        pids_max: 16,
    };
    let (_dir, sb) = sandbox();
    let s = spec(&sb, "warm-limits", "while [ ! -e go ]; do sleep 0.01; done");
    let mut started = launcher.start(&s, limits).await.unwrap();
    assert!(started.warm, "the task ran in the spare");
    let cg = started.cgroup.clone().unwrap();
    assert_eq!(cg, spare_cg);
    let pid = started.launched.task_pgid;
    assert_eq!(pid, stub);
    let read = |p: PathBuf| std::fs::read_to_string(&p).unwrap().trim().to_owned();
    match cg.paths() {
        CgroupPaths::V1 {
            memory, cpu, pids, ..
        } => {
            assert_eq!(
                read(memory.join("memory.limit_in_bytes")),
                (48u64 << 20).to_string()
            );
            assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "50000");
            assert_eq!(read(cpu.join("cpu.shares")), "512");
            assert_eq!(read(pids.join("pids.max")), "16");
        }
        CgroupPaths::V2 { dir } => {
            assert_eq!(read(dir.join("memory.max")), (48u64 << 20).to_string());
            assert_eq!(read(dir.join("cpu.max")), "50000 100000");
            assert_eq!(read(dir.join("pids.max")), "16");
        }
    }
    assert_in_cgroup(pid, &cg);
    std::fs::write(sb.join("go"), "").unwrap();
    assert_eq!(wait(&mut started.handle).await, RawExit::Code(0));
    assert!(!cg.oom_killed(false));
    remove_and_check(&cg).await;
}

#[tokio::test]
#[ignore = "needs root and cgroups"]
async fn an_agent_that_stops_leaves_no_spare_supervisor_or_spare_cgroup_behind() {
    let iso = isolation();
    let cg = iso
        .create_spare("cg-stale")
        .unwrap()
        .expect("cgroups are in use");
    let spare = Spare::prepare(Some(&cg), &supervisor()).await.unwrap();
    let (sup, stub) = (spare.supervisor_pid(), spare.stub_pid());
    assert_eq!(cg.pids().unwrap(), vec![stub]);
    // The agent goes without retiring its spare: the spare sees EOF and goes too.
    drop(spare);
    wait_until("the spare's supervisor and stub to be gone", || {
        process::process_start_time(sup).is_none() && process::process_start_time(stub).is_none()
    })
    .await;
    // The spare removed its empty cgroup on its way out.
    for d in dirs_of(&cg) {
        assert!(!d.exists(), "{} was removed", d.display());
    }
    assert!(iso.stale_spare_cgroups("cg-stale", &[]).is_empty());
}

#[tokio::test]
#[ignore = "needs root and cgroups"]
async fn a_spare_cgroup_left_behind_is_found_and_removed_at_the_next_start() {
    let iso = isolation();
    // As if the spare's supervisor had been SIGKILLed with its agent: nobody removed it.
    let cg = iso
        .create_spare("cg-left")
        .unwrap()
        .expect("cgroups are in use");
    let kept = iso.create_spare("cg-left").unwrap().unwrap();
    let stale = iso.stale_spare_cgroups("cg-left", &[kept.paths()]);
    assert_eq!(stale, vec![cg.clone()]);
    for s in &stale {
        remove_and_check(s).await;
    }
    assert!(iso
        .stale_spare_cgroups("cg-left", &[kept.paths()])
        .is_empty());
    remove_and_check(&kept).await;
}

#[tokio::test]
#[ignore = "needs root and cgroups"]
async fn a_warm_task_over_its_memory_limit_is_oom_killed_and_reported_as_oom() {
    let (mut launcher, mut ready) = Launcher::new("cg-warm-oom", isolation(), supervisor(), 1);
    launcher.refill();
    take_prepared(&mut launcher, &mut ready).await;
    let limits = Limits {
        cpu_millis: 1000,
        mem_mib: 32,
        pids_max: 0,
    };
    let (_dir, sb) = sandbox();
    // As the cold test: `tail` keeps the whole line-less input in memory.
    let s = spec(&sb, "warm-oom", "head -c 128M /dev/zero | tail");
    let mut started = launcher.start(&s, limits).await.unwrap();
    assert!(started.warm);
    let raw = wait(&mut started.handle).await;
    let cg = started.cgroup.clone().unwrap();
    assert_eq!(
        process::task_exit(raw, Some(&cg)),
        Exit::OomKilled,
        "raw exit {raw:?}"
    );
    remove_and_check(&cg).await;
}
