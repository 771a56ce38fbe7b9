//! The real binary's command line: help, version, and a bad config refused with the field named.

use std::process::Command;

const AGENT: &str = env!("CARGO_BIN_EXE_bramble-agent");

#[test]
fn a_bad_config_file_stops_the_agent_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "[reserve]\nmem_mib = -5\n").unwrap();
    let out = Command::new(AGENT)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mem_mib"), "{err}");

    std::fs::write(&path, "broker = \"http://nope\"\n").unwrap();
    let out = Command::new(AGENT)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`broker`"));
}

#[test]
fn a_missing_config_named_on_the_command_line_is_an_error() {
    let out = Command::new(AGENT)
        .args(["--config", "/nonexistent/agent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/agent.toml"));
}

#[test]
fn help_and_version_answer_and_unknown_flags_are_usage_errors() {
    let help = Command::new(AGENT).arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--broker"));
    let version = Command::new(AGENT).arg("-V").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("bramble-agent "));
    let bad = Command::new(AGENT).arg("--nope").output().unwrap();
    assert_eq!(bad.status.code(), Some(64));
}
