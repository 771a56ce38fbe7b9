//! Times the agent's launch path alone, without MQTT: from creating the sandbox to the
//! supervisor's "started" answer, for `true`, N times warm (through a prepared spare) and N times
//! cold. Prints p50, p90 and p99 for each. As root it uses real cgroups; sandboxes go below
//! `$TMPDIR`, whose filesystem shows in the figures (file creation is on the path).
//!
//! ```sh
//! cargo build --release -p bramble-agent && cargo run --release -p bramble-agent --example launch_path -- [N]
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

#[path = "../tests/support/mod.rs"]
mod support;

use bramble_agent::cgroup::{Isolation, Limits};
use bramble_agent::process::{self, TaskSpec};
use bramble_agent::warm::Launcher;
use support::release_agent;

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)].as_secs_f64() * 1e3
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    let supervisor = release_agent();
    let iso = Isolation::from_system();
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        cpu_millis: 100,
        mem_mib: 16,
        pids_max: 0,
    };
    for warm in [true, false] {
        let (mut launcher, mut ready) =
            Launcher::new("lp", iso.clone(), supervisor.clone(), usize::from(warm));
        let mut lat = Vec::with_capacity(n);
        for i in 0..n {
            if warm {
                launcher.refill();
                let s = ready.recv().await.unwrap();
                launcher.on_ready(s);
            }
            let sandbox: PathBuf = dir.path().join(format!("{warm}-{i}"));
            let spec = TaskSpec {
                framework_id: "lp".into(),
                task_id: format!("t{i}"),
                agent_id: "lp".into(),
                argv: vec!["true".into()],
                env: vec![],
                sandbox: sandbox.clone(),
                run_as: None,
                log_limit_bytes: 1 << 20,
            };
            let t = Instant::now();
            process::create_sandbox(&sandbox, None).unwrap();
            let mut started = launcher.start(&spec, limits).await.unwrap();
            lat.push(t.elapsed());
            assert_eq!(started.warm, warm);
            started.handle.wait().await;
            if let Some(cg) = started.cgroup {
                cg.remove().await.unwrap();
            }
        }
        launcher.shutdown().await;
        println!(
            "{} launch of `true` x{n}: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms",
            if warm { "warm" } else { "cold" },
            pct(&mut lat, 0.5),
            pct(&mut lat, 0.9),
            pct(&mut lat, 0.99)
        );
    }
}
