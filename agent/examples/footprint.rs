//! Measures the release agent's footprint and prints the figures: idle RSS and PSS, idle CPU, bytes
//! written to storage while idle, and RSS with 10 running tasks (agent and supervisors apart).
//!
//! ```sh
//! cargo build --release -p bramble-agent && cargo run --release -p bramble-agent --example footprint -- [IDLE_SECS]
//! ```
//!
//! It starts an in-process broker and a scripted master (the agent-test support), runs
//! `target/release/bramble-agent` against them with a work directory on the real disk, and reads
//! `/proc/<pid>/{smaps_rollup,stat,io}`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use agent_nostd_core::wire::{AgentMsg, TaskState};
use support::*;

fn proc_kib(pid: u32, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0) // utime + stime
}

fn children(pid: u32) -> Vec<u32> {
    // Supervisors are the agent's children.
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
            after
                .split_whitespace()
                .nth(1)
                .and_then(|x| x.parse::<u32>().ok())
                == Some(pid)
        })
        .collect()
}

fn main() {
    let idle_secs: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(60);
    let release = release_agent();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let port = start_broker();
        let mut master = Master::connect(port).await;
        let work: PathBuf = std::env::var_os("FOOTPRINT_WORK_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::current_dir().unwrap().join("target/footprint-work"));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        let mut agent = AgentProcess::start_exe(&release, "footprint", port, &work, &[]);
        let pid = agent.child.id();
        master.accept_registration("footprint", 1).await;
        master.expect(10, |m| matches!(m.msg, AgentMsg::Report(_)).then_some(())).await;
        tokio::time::sleep(Duration::from_secs(2)).await; // settle after start-up

        // The checkpoint's two slot files (see bramble_agent::checkpoint).
        let slots = [work.join("agent.0.json"), work.join("agent.1.json")];
        let mtime = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let mtimes = || slots.iter().map(mtime).collect::<Vec<_>>();
        let ckpt_before = mtimes();
        let io_before = proc_kib(pid, "io", "write_bytes:");
        let ticks_before = cpu_ticks(pid);
        let t0 = Instant::now();
        // Idle: answer pings like a master would, nothing else.
        let deadline = t0 + Duration::from_secs(idle_secs);
        let mut seq = 0;
        while Instant::now() < deadline {
            seq += 1;
            master.send("footprint", &agent_nostd_core::wire::MasterMsg::Ping { seq }).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        let secs = t0.elapsed().as_secs_f64();
        let hz = 100.0; // USER_HZ on Linux
        let cpu_pct = (cpu_ticks(pid) - ticks_before) as f64 / hz / secs * 100.0;
        let written = proc_kib(pid, "io", "write_bytes:") - io_before;
        let idle_rss = proc_kib(pid, "smaps_rollup", "Rss:");
        let idle_pss = proc_kib(pid, "smaps_rollup", "Pss:");
        println!("idle window: {secs:.0} s");
        println!("agent idle RSS: {idle_rss} KiB ({:.2} MiB), PSS {idle_pss} KiB", idle_rss as f64 / 1024.0);
        println!("agent idle CPU: {cpu_pct:.3} % of one core");
        println!("bytes written to storage while idle: {written}");
        println!(
            "checkpoint rewritten while idle: {}",
            if mtimes() == ckpt_before { "no" } else { "YES" }
        );

        for i in 0..10 {
            master
                .send("footprint", &run_task(&format!("sleep-{i}"), &["sleep", "600"], 100, 16))
                .await;
        }
        for i in 0..10 {
            master
                .wait_state("footprint", &format!("sleep-{i}"), TaskState::Running, 20)
                .await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss10 = proc_kib(pid, "smaps_rollup", "Rss:");
        let sups = children(pid);
        let sup_rss: u64 = sups.iter().map(|p| proc_kib(*p, "smaps_rollup", "Rss:")).sum();
        let sup_pss: u64 = sups.iter().map(|p| proc_kib(*p, "smaps_rollup", "Pss:")).sum();
        println!("agent RSS with 10 running tasks: {rss10} KiB ({:.2} MiB)", rss10 as f64 / 1024.0);
        println!(
            "{} task supervisors: RSS {sup_rss} KiB in all, PSS {sup_pss} KiB in all ({} KiB PSS each)",
            sups.len(),
            sup_pss / sups.len().max(1) as u64
        );
        for i in 0..10 {
            let task = format!("sleep-{i}");
            master
                .send(
                    "footprint",
                    &agent_nostd_core::wire::MasterMsg::KillTask(agent_nostd_core::wire::KillTask {
                        framework_id: agent_nostd_core::ids::id("fw-1").unwrap(),
                        task_id: agent_nostd_core::ids::id(&task).unwrap(),
                        grace_ms: 0,
                    }),
                )
                .await;
            master.wait_state("footprint", &task, TaskState::Killed, 20).await;
        }
        agent.kill_hard();
    });
}
