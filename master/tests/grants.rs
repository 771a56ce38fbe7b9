//! The operator's grants (`STATE_DIR/authorization.toml`) with the real `bramble master`: a
//! framework principal without a grant is refused with a reason `bramble run` prints, and one
//! with a grant runs.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod support;
use support::{free_port, BRAMBLE};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `bramble run -- /bin/true` against `port`: its exit status and what it printed.
fn run(port: u16) -> (Option<i32>, String) {
    let mut child = Command::new(BRAMBLE)
        .args(["run", "--broker", &format!("mqtt://127.0.0.1:{port}")])
        .args(["--cpus", "0.1", "--mem", "8", "--", "/bin/true"])
        .env("BRAMBLE_LOG", "warn")
        .env("HOME", "/nonexistent")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "bramble run ends");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), text)
}

/// `bramble master` with its embedded broker on `port` and its state in `state`.
fn start_master(state: &std::path::Path, port: u16) -> Killed {
    Killed(
        Command::new(BRAMBLE)
            .args(["master", "--no-http", "--insecure-allow-anonymous"])
            .args(["--allocation-interval", "0.2"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--state-dir")
            .arg(state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[test]
#[ignore = "starts the master and an agent as processes"]
fn a_framework_the_operator_did_not_grant_is_refused_with_the_reason_and_a_granted_one_runs() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("authorization.toml"),
        "[frameworks.pi]\nweight = 2.0\n",
    )
    .unwrap();
    let port = free_port();
    let master = start_master(&state, port);
    let _agent = Killed(
        Command::new(BRAMBLE)
            .args(["__agent", "--agent-id", "g1"])
            .args(["--broker", &format!("mqtt://127.0.0.1:{port}")])
            .arg("--work-dir")
            .arg(dir.path().join("work"))
            .arg("--run-as")
            .arg(bramble_agent::tasks::user::current_user_name())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // `bramble run`'s client (bramble-run-PID) has no grant.
    let (code, text) = run(port);
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains("is not authorized on this cluster"), "{text}");

    // Granted: every bramble run.
    std::fs::write(
        state.join("authorization.toml"),
        "[frameworks.pi]\nweight = 2.0\n\n[frameworks.\"bramble-run-*\"]\n",
    )
    .unwrap();
    // The grants are read at start: the operator restarts the master.
    drop(master);
    let _master = start_master(&state, port);
    let (code, text) = run(port);
    assert_eq!(code, Some(0), "{text}");
}
