//! `bramble up`, the README's first command, as a newcomer runs it: the binary starts the local
//! cluster and the demo, prints real results within seconds, and stops cleanly on Ctrl-C.

mod support;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{free_port, kill_processes_below, processes_below, BRAMBLE};

/// Generous: only reached when something is broken.
const TIMEOUT: Duration = Duration::from_secs(90);

/// The estimate in a line like `  pi      job 1: π ≈ 3.141236 from … samples …`.
fn pi_estimate(line: &str) -> Option<f64> {
    let rest = line.trim_start().strip_prefix("pi")?;
    rest.split_once("π ≈ ")?
        .1
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[test]
fn bramble_up_prints_pi_and_sensor_results_and_shares_then_stops_cleanly_on_ctrl_c() {
    let work = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut up = Command::new(BRAMBLE)
        .args([
            "up",
            "--listen",
            &listen,
            "--http",
            "127.0.0.1:0",
            "--work-dir",
        ])
        .arg(work.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = up.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });

    let deadline = Instant::now() + TIMEOUT;
    let mut seen = Vec::new();
    let (mut registered, mut pi, mut sensor, mut shares) = (false, None, false, false);
    while !(registered && pi.is_some() && sensor && shares) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = lines.recv_timeout(left) else {
            let _ = up.kill();
            kill_processes_below(work.path());
            panic!(
                "bramble up did not show the demo's results in time:\n{}",
                seen.join("\n")
            );
        };
        registered |= line.contains("3 agents registered");
        pi = pi.or(pi_estimate(&line));
        sensor |= line.trim_start().starts_with("sensor") && line.contains("°C");
        shares |= line.trim_start().starts_with("shares")
            && line.contains("pi ")
            && line.contains("sensor ");
        seen.push(line);
    }
    let pi = pi.unwrap();
    assert!((pi - std::f64::consts::PI).abs() < 0.01, "π ≈ {pi}");

    let status = Command::new("kill")
        .args(["-INT", &up.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(up.wait());
    });
    let exit = done
        .recv_timeout(TIMEOUT)
        .expect("bramble up stops after Ctrl-C")
        .unwrap();
    let rest: Vec<String> = lines.try_iter().collect();
    reader.join().unwrap();
    let rest: Vec<String> = rest.into_iter().chain(lines.try_iter()).collect();
    assert!(exit.success(), "{exit}: {}", rest.join("\n"));
    assert!(
        rest.iter().any(|l| l.contains("stopping the cluster")),
        "{}",
        rest.join("\n")
    );
    let left = processes_below(work.path());
    kill_processes_below(work.path());
    assert!(left.is_empty(), "processes left in the sandboxes: {left:?}");
}
