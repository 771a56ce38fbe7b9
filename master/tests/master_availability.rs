//! The master's availability on `bramble/v1/status/master`, with a real master process on
//! Mosquitto: `bramble status` says it is online while it runs, and offline once it is gone, by
//! its last will after a SIGKILL, or by its own word after a clean stop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{broker_url, Mosquitto, BRAMBLE};

fn start_master(broker: &str) -> Child {
    start_named_master(broker, &[])
}

fn start_named_master(broker: &str, args: &[&str]) -> Child {
    Command::new(BRAMBLE)
        .args(["master", "--broker", broker, "--no-http"])
        .arg("--state-dir")
        .arg(support::scratch_state_dir())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the bramble binary runs")
}

/// `bramble status` against `broker`: whether it succeeded, and what it said.
fn status(broker: &str) -> (bool, String) {
    let out = Command::new(BRAMBLE)
        .args(["status", "--broker", broker, "--timeout", "2"])
        .output()
        .expect("the bramble binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Asks `bramble status` until `done` holds for its answer, for at most 30 s.
fn status_until(broker: &str, done: impl Fn(bool, &str) -> bool) -> (bool, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, text) = status(broker);
        if done(ok, &text) || Instant::now() > deadline {
            return (ok, text);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn online(ok: bool, text: &str) -> bool {
    ok && !text.contains("master offline")
}

fn offline(ok: bool, text: &str) -> bool {
    !ok && text.contains("master offline")
}

#[test]
#[ignore = "needs mosquitto"]
fn a_killed_master_shows_offline_by_its_last_will_and_a_stopped_one_by_its_own_word() {
    let mosquitto = Mosquitto::start();
    let broker = broker_url(&mosquitto.addr());

    let mut master = start_master(&broker);
    let (ok, text) = status_until(&broker, online);
    assert!(online(ok, &text), "the running master is online: {text}");
    master.kill().unwrap(); // SIGKILL: only the broker can tell
    master.wait().unwrap();
    let (ok, text) = status_until(&broker, offline);
    assert!(
        offline(ok, &text),
        "its last will says it is offline: {text}"
    );

    let mut master = start_master(&broker);
    let (ok, text) = status_until(&broker, online);
    assert!(online(ok, &text), "a new master is online again: {text}");
    let pid = master.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    master.wait().unwrap();
    let (ok, text) = status_until(&broker, offline);
    assert!(
        offline(ok, &text),
        "a cleanly stopped master says it is offline: {text}"
    );
}

#[test]
#[ignore = "needs mosquitto"]
fn bramble_status_names_the_leader_and_the_standby_ready_to_take_over() {
    let mosquitto = Mosquitto::start();
    let broker = broker_url(&mosquitto.addr());
    let mut leader = start_named_master(&broker, &["--name", "alpha"]);
    let (ok, text) = status_until(&broker, |ok, t| {
        online(ok, t) && t.contains("led by master alpha")
    });
    assert!(ok && text.contains("led by master alpha"), "{text}");
    let mut standby = start_named_master(&broker, &["--name", "beta", "--standby"]);
    let listed =
        |ok: bool, t: &str| online(ok, t) && t.contains("ready to take over: beta (standby)");
    let (ok, text) = status_until(&broker, listed);
    assert!(listed(ok, &text), "the standby is listed: {text}");
    standby.kill().unwrap();
    standby.wait().unwrap();
    let gone = |ok: bool, t: &str| online(ok, t) && !t.contains("ready to take over");
    let (ok, text) = status_until(&broker, gone);
    assert!(gone(ok, &text), "a killed standby leaves the list: {text}");
    leader.kill().unwrap();
    leader.wait().unwrap();
}
