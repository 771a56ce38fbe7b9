//! Helpers shared by the tests that run real task processes (`process_tasks.rs`, `warm_spare.rs`,
//! `cgroup_limits.rs`): the supervisor binary, sandboxes, task specs, warm spares, bounded waits and
//! helper "agents" that die.
//!
//! Each test binary uses only some of them.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bramble_agent::process::{self, RawExit, Spare, TaskHandle, TaskSpec};
use bramble_agent::warm::Launcher;
use tokio::sync::mpsc;

/// Generous: only reached when something is broken.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The supervisor: the `bramble-agent` binary under test.
pub fn supervisor() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bramble-agent"))
}

/// Waits for the spare `launcher` is preparing (after its `refill`) and hands it over.
pub async fn take_prepared(launcher: &mut Launcher, ready: &mut mpsc::Receiver<Option<Spare>>) {
    let spare = tokio::time::timeout(TIMEOUT, ready.recv())
        .await
        .expect("a spare in time")
        .expect("the launcher is alive");
    launcher.on_ready(spare);
}

/// A new sandbox at `rel` below a temporary directory (kept while the `TempDir` lives).
pub fn sandbox_at(rel: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let sb = dir.path().join(rel);
    process::create_sandbox(&sb, None).unwrap();
    (dir, sb)
}

/// `argv` as task `task_id` of `framework_id` in `sandbox`, keeping `log_limit_bytes` of output.
pub fn task_spec(
    framework_id: &str,
    sandbox: &Path,
    task_id: &str,
    argv: &[&str],
    log_limit_bytes: u64,
) -> TaskSpec {
    TaskSpec {
        framework_id: framework_id.into(),
        task_id: task_id.into(),
        agent_id: "pi-test".into(),
        argv: argv.iter().map(|s| (*s).to_owned()).collect(),
        env: vec![],
        sandbox: sandbox.to_path_buf(),
        run_as: None,
        log_limit_bytes,
    }
}

/// Waits for the task to end, failing after [`TIMEOUT`].
pub async fn wait(handle: &mut TaskHandle) -> RawExit {
    tokio::time::timeout(TIMEOUT, handle.wait())
        .await
        .expect("the task ends in time")
}

/// Polls `cond` until it holds, failing after [`TIMEOUT`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs test `test` of this test binary as a helper process (an agent that does something, prints a
/// line and dies), with `env` set, and returns what follows `marker` on the line it printed.
pub async fn helper_says(test: &str, env: (&str, &OsStr), marker: &str) -> String {
    let out = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(env.0, env.1)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .output();
    let out = tokio::time::timeout(TIMEOUT, out)
        .await
        .expect("the helper agent exits")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        // libtest may print its own "test … ... " first on the same line.
        .find_map(|l| l.split_once(marker).map(|(_, said)| said.to_owned()))
        .unwrap_or_else(|| panic!("the helper printed no {marker:?} line: {stdout}"))
}
