//! cgroup detection, setup and limits against temporary directories laid out like cgroupfs.
//!
//! No root needed: a plain filesystem does not enforce anything, but it records what the agent
//! writes where, which is what these tests check.

use std::fs;
use std::path::{Path, PathBuf};

use bramble_agent::cgroup::{CgroupError, CgroupPaths, Isolation, Limits, TaskCgroup};

const AGENT_PID: u32 = 4242;
const SERVICE: &str = "system.slice/bramble-agent.service";

fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A v2 root whose agent runs in `/system.slice/bramble-agent.service`, as under systemd.
fn v2_tree(root_controllers: &str, service_controllers: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(&root.join("cgroup.controllers"), root_controllers);
    write(&root.join("cgroup.subtree_control"), "");
    let service = root.join(SERVICE);
    write(&service.join("cgroup.controllers"), service_controllers);
    write(&service.join("cgroup.procs"), &format!("{AGENT_PID}\n"));
    write(&service.join("cgroup.subtree_control"), "");
    (dir, service)
}

fn proc_self_v2() -> String {
    format!("0::/{SERVICE}\n")
}

const ALL: &str = "cpuset cpu io memory hugetlb pids rdma misc\n";

fn limits(cpu_millis: u32, mem_mib: u32, pids_max: u32) -> Limits {
    Limits {
        cpu_millis,
        mem_mib,
        pids_max,
    }
}

#[test]
fn v2_setup_moves_the_agent_into_its_leaf_and_enables_the_controllers() {
    let (dir, service) = v2_tree(ALL, ALL);
    let iso = Isolation::setup(dir.path(), &proc_self_v2(), AGENT_PID);
    assert_eq!(iso.isolation_attribute(), "cgroup2");
    assert_eq!(
        read(&service.join("agent/cgroup.procs")).trim(),
        AGENT_PID.to_string()
    );
    assert!(read(&service.join("cgroup.subtree_control")).contains("+cpu +memory +pids"));
}

#[test]
fn v2_setup_moves_only_the_agent_not_other_processes_of_its_cgroup() {
    let (dir, service) = v2_tree(ALL, ALL);
    write(
        &service.join("cgroup.procs"),
        &format!("777\n{AGENT_PID}\n"),
    );
    Isolation::setup(dir.path(), &proc_self_v2(), AGENT_PID);
    assert_eq!(
        read(&service.join("agent/cgroup.procs")),
        format!("{AGENT_PID}\n")
    );
}

#[test]
fn v2_task_cgroups_sit_beside_the_leaf_with_their_limits_written() {
    let (dir, service) = v2_tree(ALL, ALL);
    let iso = Isolation::setup(dir.path(), &proc_self_v2(), AGENT_PID);
    let cg = iso
        .create_task("fw-1", "task.7", limits(500, 32, 32))
        .unwrap()
        .expect("v2 gives a cgroup");
    let task_dir = service.join("task@fw-1@task.7");
    assert_eq!(
        cg.paths(),
        &CgroupPaths::V2 {
            dir: task_dir.clone()
        }
    );
    assert_eq!(read(&task_dir.join("cpu.max")), "50000 100000");
    assert_eq!(read(&task_dir.join("cpu.weight")), "50");
    assert_eq!(
        read(&task_dir.join("memory.max")),
        (32u64 << 20).to_string()
    );
    assert_eq!(read(&task_dir.join("pids.max")), "32");
    assert!(
        !task_dir.join("memory.swap.max").exists(),
        "memory.swap.max is only written where the kernel has it"
    );
    assert_eq!(cg.join_paths(), vec![task_dir.join("cgroup.procs")]);
}

#[test]
fn v2_swap_is_turned_off_where_the_kernel_offers_it_and_pids_get_a_default() {
    let (dir, service) = v2_tree(ALL, ALL);
    let iso = Isolation::setup(dir.path(), &proc_self_v2(), AGENT_PID);
    // The kernel creates memory.swap.max with the directory; emulate that.
    let task_dir = service.join("task@fw@t");
    write(&task_dir.join("memory.swap.max"), "max");
    iso.create_task("fw", "t", limits(2000, 0, 0))
        .unwrap()
        .unwrap();
    assert_eq!(read(&task_dir.join("memory.swap.max")), "0");
    assert_eq!(read(&task_dir.join("memory.max")), "max");
    assert_eq!(read(&task_dir.join("pids.max")), "256");
    assert_eq!(read(&task_dir.join("cpu.max")), "200000 100000");
    assert_eq!(read(&task_dir.join("cpu.weight")), "200");
}

#[test]
fn v2_oom_kills_are_read_from_memory_events() {
    let (dir, _service) = v2_tree(ALL, ALL);
    let iso = Isolation::setup(dir.path(), &proc_self_v2(), AGENT_PID);
    let cg = iso
        .create_task("fw", "t", limits(100, 16, 8))
        .unwrap()
        .unwrap();
    let CgroupPaths::V2 { dir: task_dir } = cg.paths().clone() else {
        panic!("not v2");
    };
    let events = task_dir.join("memory.events");
    write(
        &events,
        "low 0\nhigh 0\nmax 12\noom 1\noom_kill 0\noom_group_kill 0\n",
    );
    assert!(
        !cg.oom_killed(true),
        "an OOM event without a kill is no OOM kill"
    );
    write(
        &events,
        "low 0\nhigh 0\nmax 40\noom 2\noom_kill 1\noom_group_kill 0\n",
    );
    assert!(cg.oom_killed(false));
}

#[test]
fn v2_cpu_usage_comes_from_cpu_stat_in_nanoseconds() {
    let (dir, _service) = v2_tree(ALL, ALL);
    let iso = Isolation::setup(dir.path(), &proc_self_v2(), AGENT_PID);
    let cg = iso
        .create_task("fw", "t", limits(100, 16, 8))
        .unwrap()
        .unwrap();
    assert_eq!(cg.cpu_usage_ns(), None);
    let CgroupPaths::V2 { dir: task_dir } = cg.paths().clone() else {
        panic!("not v2");
    };
    write(
        &task_dir.join("cpu.stat"),
        "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
    );
    assert_eq!(cg.cpu_usage_ns(), Some(1_500_000));
}

#[test]
fn v2_kill_uses_cgroup_kill_when_the_kernel_has_it() {
    let (dir, _service) = v2_tree(ALL, ALL);
    let iso = Isolation::setup(dir.path(), &proc_self_v2(), AGENT_PID);
    let cg = iso
        .create_task("fw", "t", limits(100, 16, 8))
        .unwrap()
        .unwrap();
    let CgroupPaths::V2 { dir: task_dir } = cg.paths().clone() else {
        panic!("not v2");
    };
    write(&task_dir.join("cgroup.kill"), "");
    cg.kill_all().unwrap();
    assert_eq!(read(&task_dir.join("cgroup.kill")), "1");
}

#[test]
fn a_missing_memory_controller_means_no_isolation_with_the_cmdline_fix() {
    let no_memory = "cpuset cpu io pids\n";
    let (dir, service) = v2_tree(no_memory, no_memory);
    let iso = Isolation::setup(dir.path(), &proc_self_v2(), AGENT_PID);
    assert_eq!(iso.isolation_attribute(), "none");
    let Isolation::None { reason } = &iso else {
        panic!("expected no isolation, got {iso:?}");
    };
    assert!(reason.contains("memory"), "{reason}");
    assert!(
        reason.contains("cgroup_enable=memory cgroup_memory=1"),
        "{reason}"
    );
    assert!(reason.contains("/boot/firmware/cmdline.txt"), "{reason}");
    assert!(reason.contains("/boot/cmdline.txt"), "{reason}");
    assert!(iso
        .create_task("fw", "t", limits(1, 1, 1))
        .unwrap()
        .is_none());
    assert!(
        !service.join("agent").exists(),
        "nothing is moved when cgroups cannot be used"
    );
}

#[test]
fn controllers_not_delegated_to_the_service_mean_no_isolation_naming_delegate_yes() {
    let (dir, _service) = v2_tree(ALL, "cpu io\n");
    let iso = Isolation::setup(dir.path(), &proc_self_v2(), AGENT_PID);
    let Isolation::None { reason } = &iso else {
        panic!("expected no isolation, got {iso:?}");
    };
    assert!(reason.contains("memory, pids"), "{reason}");
    assert!(reason.contains("Delegate=yes"), "{reason}");
}

#[test]
fn an_agent_already_in_its_leaf_uses_the_leafs_parent() {
    let (dir, service) = v2_tree(ALL, ALL);
    write(&service.join("agent/cgroup.procs"), "");
    let iso = Isolation::setup(dir.path(), &format!("0::/{SERVICE}/agent\n"), AGENT_PID);
    let Isolation::V2(layout) = &iso else {
        panic!("expected v2, got {iso:?}");
    };
    assert_eq!(layout.parent, service);
    assert!(read(&service.join("cgroup.subtree_control")).contains("+cpu +memory +pids"));
}

#[test]
fn an_agent_in_the_root_cgroup_puts_tasks_under_a_bramble_cgroup() {
    let (dir, _service) = v2_tree(ALL, ALL);
    let root = dir.path();
    let iso = Isolation::setup(root, "0::/\n", AGENT_PID);
    let Isolation::V2(layout) = &iso else {
        panic!("expected v2, got {iso:?}");
    };
    assert_eq!(layout.parent, root.join("bramble"));
    assert!(read(&root.join("cgroup.subtree_control")).contains("+cpu +memory +pids"));
    assert!(read(&root.join("bramble/cgroup.subtree_control")).contains("+cpu +memory +pids"));
    assert!(!root.join("agent").exists(), "root processes are not moved");
}

#[test]
fn no_cgroup_filesystem_at_all_means_no_isolation() {
    let dir = tempfile::tempdir().unwrap();
    let iso = Isolation::setup(dir.path(), "0::/\n", AGENT_PID);
    assert_eq!(iso.isolation_attribute(), "none");
}

#[test]
fn ids_that_cannot_name_a_cgroup_are_refused() {
    let (dir, _service) = v2_tree(ALL, ALL);
    let iso = Isolation::setup(dir.path(), &proc_self_v2(), AGENT_PID);
    for (fw, task) in [
        ("..", "t"),
        ("fw", "a/b"),
        ("fw", ""),
        ("fw", &"x".repeat(33)),
    ] {
        assert!(
            matches!(
                iso.create_task(fw, task, limits(1, 1, 1)),
                Err(CgroupError::InvalidId { .. })
            ),
            "{fw:?} {task:?}"
        );
    }
}

#[test]
fn a_leftover_cgroup_with_processes_is_not_reused() {
    let (dir, service) = v2_tree(ALL, ALL);
    let iso = Isolation::setup(dir.path(), &proc_self_v2(), AGENT_PID);
    write(&service.join("task@fw@t/cgroup.procs"), "99\n");
    assert!(matches!(
        iso.create_task("fw", "t", limits(1, 1, 1)),
        Err(CgroupError::Busy { .. })
    ));
}

#[test]
fn checkpointed_paths_reopen_only_on_a_board_of_the_same_kind() {
    let (dir, _service) = v2_tree(ALL, ALL);
    let iso = Isolation::setup(dir.path(), &proc_self_v2(), AGENT_PID);
    let cg = iso
        .create_task("fw", "t", limits(1, 1, 1))
        .unwrap()
        .unwrap();
    let json = serde_json::to_string(cg.paths()).unwrap();
    let back: CgroupPaths = serde_json::from_str(&json).unwrap();
    assert_eq!(iso.open_task(back.clone()).unwrap(), cg);
    let v1 = CgroupPaths::V1 {
        memory: "/m".into(),
        cpu: "/c".into(),
        cpuacct: None,
        pids: "/p".into(),
    };
    assert!(matches!(iso.open_task(v1), Err(CgroupError::Mismatch(_))));
    let gone = CgroupPaths::V2 {
        dir: dir.path().join("nope"),
    };
    assert!(matches!(
        TaskCgroup::open(gone),
        Err(CgroupError::Io { .. })
    ));
}

/// A v1 root with `cpu,cpuacct` co-mounted (and the usual `cpu` and `cpuacct` symlinks), memory
/// and pids, with the agent in `/system.slice/bramble-agent.service` everywhere.
fn v1_tree(with_memory: bool) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut hierarchies = vec!["cpu,cpuacct", "pids", "devices"];
    if with_memory {
        hierarchies.push("memory");
    }
    for h in &hierarchies {
        fs::create_dir_all(root.join(h).join(SERVICE)).unwrap();
    }
    std::os::unix::fs::symlink("cpu,cpuacct", root.join("cpu")).unwrap();
    std::os::unix::fs::symlink("cpu,cpuacct", root.join("cpuacct")).unwrap();
    let mut proc_self = String::new();
    for (i, h) in hierarchies.iter().enumerate() {
        proc_self.push_str(&format!("{}:{h}:/{SERVICE}\n", i + 2));
    }
    proc_self.push_str(&format!("1:name=systemd:/{SERVICE}\n0::/{SERVICE}\n"));
    (dir, proc_self)
}

#[test]
fn v1_task_cgroups_get_memory_cpu_and_pids_limits_in_each_hierarchy() {
    let (dir, proc_self) = v1_tree(true);
    let root = dir.path();
    let iso = Isolation::setup(root, &proc_self, AGENT_PID);
    assert_eq!(iso.isolation_attribute(), "cgroup1");
    // The kernel creates memory.memsw.limit_in_bytes when swap accounting is on; emulate that.
    let mem = root.join("memory").join(SERVICE).join("bramble/fw@t");
    write(
        &mem.join("memory.memsw.limit_in_bytes"),
        "9223372036854771712",
    );
    let cg = iso
        .create_task("fw", "t", limits(500, 32, 32))
        .unwrap()
        .unwrap();
    let cpu = root.join("cpu,cpuacct").join(SERVICE).join("bramble/fw@t");
    let pids = root.join("pids").join(SERVICE).join("bramble/fw@t");
    assert_eq!(
        cg.paths(),
        &CgroupPaths::V1 {
            memory: mem.clone(),
            cpu: cpu.clone(),
            cpuacct: Some(cpu.clone()),
            pids: pids.clone(),
        }
    );
    assert_eq!(
        cg.join_paths(),
        vec![mem.join("tasks"), cpu.join("tasks"), pids.join("tasks")],
        "v1 joins through `tasks` (no global lock), and co-mounted cpu,cpuacct once"
    );
    assert_eq!(read(&mem.join("memory.limit_in_bytes")), "33554432");
    assert_eq!(read(&mem.join("memory.memsw.limit_in_bytes")), "33554432");
    assert_eq!(read(&cpu.join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read(&cpu.join("cpu.shares")), "512");
    assert_eq!(read(&pids.join("pids.max")), "32");
    write(&cpu.join("cpuacct.usage"), "123456789\n");
    assert_eq!(cg.cpu_usage_ns(), Some(123_456_789));
}

#[test]
fn v1_with_separately_mounted_cpu_and_cpuacct_uses_both() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for h in ["cpu", "cpuacct", "memory", "pids"] {
        fs::create_dir_all(root.join(h)).unwrap();
    }
    let proc_self = "8:pids:/\n4:memory:/ci/job1\n2:cpuacct:/\n1:cpu:/\n0::/\n";
    let iso = Isolation::setup(root, proc_self, AGENT_PID);
    let cg = iso
        .create_task("fw", "t", limits(250, 8, 0))
        .unwrap()
        .unwrap();
    let CgroupPaths::V1 {
        memory,
        cpu,
        cpuacct,
        pids,
    } = cg.paths().clone()
    else {
        panic!("not v1");
    };
    assert_eq!(memory, root.join("memory/ci/job1/bramble/fw@t"));
    assert_eq!(cpu, root.join("cpu/bramble/fw@t"));
    assert_eq!(cpuacct, Some(root.join("cpuacct/bramble/fw@t")));
    assert_eq!(pids, root.join("pids/bramble/fw@t"));
    assert_eq!(read(&pids.join("pids.max")), "256");
    assert!(
        !memory.join("memory.memsw.limit_in_bytes").exists(),
        "memsw is only written where the kernel has it"
    );
}

#[test]
fn v1_oom_kills_come_from_the_oom_control_counter_when_the_kernel_has_one() {
    let (dir, proc_self) = v1_tree(true);
    let iso = Isolation::setup(dir.path(), &proc_self, AGENT_PID);
    let cg = iso
        .create_task("fw", "t", limits(500, 32, 32))
        .unwrap()
        .unwrap();
    let CgroupPaths::V1 { memory, .. } = cg.paths().clone() else {
        panic!("not v1");
    };
    write(&memory.join("memory.failcnt"), "17\n");
    write(
        &memory.join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
    );
    assert!(
        !cg.oom_killed(true),
        "the counter says no kill, whatever failcnt says"
    );
    write(
        &memory.join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    );
    assert!(cg.oom_killed(false));
}

#[test]
fn v1_oom_kills_on_old_kernels_are_inferred_from_failcnt_and_sigkill() {
    let (dir, proc_self) = v1_tree(true);
    let iso = Isolation::setup(dir.path(), &proc_self, AGENT_PID);
    let cg = iso
        .create_task("fw", "t", limits(500, 32, 32))
        .unwrap()
        .unwrap();
    let CgroupPaths::V1 { memory, .. } = cg.paths().clone() else {
        panic!("not v1");
    };
    write(
        &memory.join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\n",
    );
    write(&memory.join("memory.failcnt"), "0\n");
    assert!(!cg.oom_killed(true));
    write(&memory.join("memory.failcnt"), "3\n");
    assert!(
        !cg.oom_killed(false),
        "hitting the limit alone is not an OOM kill"
    );
    assert!(cg.oom_killed(true));
}

#[test]
fn v1_without_the_memory_controller_means_no_isolation_with_the_cmdline_fix() {
    let (dir, proc_self) = v1_tree(false);
    let iso = Isolation::setup(dir.path(), &proc_self, AGENT_PID);
    let Isolation::None { reason } = &iso else {
        panic!("expected no isolation, got {iso:?}");
    };
    assert!(
        reason.contains("cgroup_enable=memory cgroup_memory=1"),
        "{reason}"
    );
}

#[test]
fn v2_spare_cgroups_get_neutral_names_beside_the_leaf_and_no_limits_until_they_get_a_task() {
    let (dir, service) = v2_tree(ALL, ALL);
    let iso = Isolation::setup(dir.path(), &proc_self_v2(), AGENT_PID);
    let spare = iso
        .create_spare("pi-a")
        .unwrap()
        .expect("v2 gives a cgroup");
    let CgroupPaths::V2 { dir: spare_dir } = spare.paths().clone() else {
        panic!("a v2 spare has a v2 path");
    };
    assert_eq!(spare_dir.parent(), Some(service.as_path()));
    let name = spare_dir.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(name.starts_with("warm@pi-a@"), "{name}");
    assert!(
        !spare_dir.join("memory.max").exists(),
        "a spare is created without limits"
    );
    spare.set_limits(limits(500, 32, 0)).unwrap();
    assert_eq!(read(&spare_dir.join("cpu.max")), "50000 100000");
    assert_eq!(read(&spare_dir.join("cpu.weight")), "50");
    assert_eq!(
        read(&spare_dir.join("memory.max")),
        (32u64 << 20).to_string()
    );
    assert_eq!(read(&spare_dir.join("pids.max")), "256");
    // The next spare gets another name, even past a leftover that holds the next one.
    let next: u64 = name.rsplit('@').next().unwrap().parse::<u64>().unwrap() + 1;
    fs::create_dir(service.join(format!("warm@pi-a@{next}"))).unwrap();
    let other = iso.create_spare("pi-a").unwrap().unwrap();
    assert_ne!(other.paths(), spare.paths());
    assert!(iso.create_spare("../x").is_err(), "agent ids are checked");
}

#[test]
fn v2_spare_cgroups_left_by_an_earlier_run_are_found_but_not_checkpointed_ones_or_other_agents() {
    let (dir, service) = v2_tree(ALL, ALL);
    let iso = Isolation::setup(dir.path(), &proc_self_v2(), AGENT_PID);
    let left = iso.create_spare("pi-a").unwrap().unwrap();
    let holds_a_task = iso.create_spare("pi-a").unwrap().unwrap();
    let other_agents = iso.create_spare("pi-b").unwrap().unwrap();
    let cold = iso
        .create_task("fw", "t", limits(1, 1, 1))
        .unwrap()
        .unwrap();
    let stale = iso.stale_spare_cgroups("pi-a", &[holds_a_task.paths(), cold.paths()]);
    assert_eq!(stale, vec![left.clone()]);
    for cg in [&left, &holds_a_task, &other_agents] {
        let CgroupPaths::V2 { dir } = cg.paths() else {
            panic!("v2");
        };
        assert!(dir.starts_with(&service));
    }
    let no_iso = Isolation::None {
        reason: "test".into(),
    };
    assert!(no_iso.create_spare("pi-a").unwrap().is_none());
    assert!(no_iso.stale_spare_cgroups("pi-a", &[]).is_empty());
}

#[test]
fn v1_spare_cgroups_have_the_same_neutral_name_in_every_hierarchy() {
    let (dir, proc_self) = v1_tree(true);
    let root = dir.path();
    let iso = Isolation::setup(root, &proc_self, AGENT_PID);
    let spare = iso.create_spare("pi-a").unwrap().unwrap();
    let CgroupPaths::V1 {
        memory, cpu, pids, ..
    } = spare.paths().clone()
    else {
        panic!("a v1 spare has v1 paths");
    };
    let name = memory.file_name().unwrap().to_owned();
    assert_eq!(cpu.file_name().unwrap(), name);
    assert_eq!(pids.file_name().unwrap(), name);
    assert_eq!(
        memory,
        root.join("memory")
            .join(SERVICE)
            .join("bramble")
            .join(&name)
    );
    assert_eq!(
        iso.stale_spare_cgroups("pi-a", &[]),
        vec![spare.clone()],
        "an unreferenced spare is stale"
    );
    assert!(iso.stale_spare_cgroups("pi-a", &[spare.paths()]).is_empty());
}
