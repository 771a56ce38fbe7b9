//! What to run ([`TaskSpec`]) and where (the sandbox), the environment and request a task's
//! supervisor gets, and the records of a launch ([`Launched`]) and of an exit ([`RawExit`]).

use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use agent_nostd_core::agent::Exit;
use nix::unistd::{chown, Gid, Uid};
use serde::{Deserialize, Serialize};

use super::launch::LaunchError;
use super::supervisor::Request;
use super::DEFAULT_PATH;
use crate::cgroup::TaskCgroup;

/// What to run, where and as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSpec {
    /// The task's framework.
    pub framework_id: String,
    /// The task.
    pub task_id: String,
    /// This agent.
    pub agent_id: String,
    /// The program and its arguments; a program without `/` is looked up in `PATH`.
    pub argv: Vec<String>,
    /// The task's environment (the agent's own is not passed on).
    pub env: Vec<(String, String)>,
    /// The task's working directory, which must exist (see [`create_sandbox`]).
    pub sandbox: PathBuf,
    /// Who to run as, when not the agent's own user (the agent must be root).
    pub run_as: Option<RunAs>,
    /// The most bytes kept of each of stdout and stderr.
    pub log_limit_bytes: u64,
}

/// The user a task's process runs as: set in the task's process before `exec`, in this order:
/// `setgroups(groups)`, `setgid(gid)`, `setuid(uid)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAs {
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// The supplementary groups (the primary group need not be listed: it is always added).
    pub groups: Vec<u32>,
}

impl RunAs {
    /// The user with no supplementary groups but its primary one.
    pub fn new(uid: u32, gid: u32) -> RunAs {
        RunAs {
            uid,
            gid,
            groups: Vec::new(),
        }
    }

    /// `(uid, gid)`: who owns the task's sandbox and files.
    pub fn owner(&self) -> (u32, u32) {
        (self.uid, self.gid)
    }

    /// The supplementary groups the process gets: the primary group first, then `groups`
    /// without repeats.
    pub fn all_groups(&self) -> Vec<u32> {
        let mut all = vec![self.gid];
        for &g in &self.groups {
            if !all.contains(&g) {
                all.push(g);
            }
        }
        all
    }
}

/// A running task, as the driver checkpoints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launched {
    /// The supervisor's pid.
    pub supervisor_pid: i32,
    /// The supervisor's start time (field 22 of `/proc/<pid>/stat`), to tell it from a reused pid.
    pub supervisor_start_time: u64,
    /// The task's process group (its first process's pid).
    pub task_pgid: i32,
}

/// How a task's process ended, as the supervisor recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawExit {
    /// It exited with this code.
    Code(i32),
    /// This signal ended it.
    Signal(i32),
    /// Nothing was recorded (the supervisor itself died).
    Unknown,
}

impl RawExit {
    /// Whether SIGKILL ended it, directly or as a shell's `128 + 9`.
    pub fn looks_sigkilled(&self) -> bool {
        matches!(self, RawExit::Signal(9) | RawExit::Code(137))
    }
}

/// Maps a raw exit and the cgroup's OOM verdict to the core's [`Exit`]. An OOM kill anywhere in
/// the task's cgroup wins: a shell whose child was OOM-killed exits with a code, not a signal.
pub fn exit_reason(raw: RawExit, oom_killed: bool) -> Exit {
    if oom_killed {
        return Exit::OomKilled;
    }
    match raw {
        RawExit::Code(c) => Exit::Code(c),
        RawExit::Signal(s) => Exit::Signal(s),
        RawExit::Unknown => Exit::Unknown,
    }
}

/// [`exit_reason`] with the OOM verdict read from the task's cgroup, if it has one.
pub fn task_exit(raw: RawExit, cgroup: Option<&TaskCgroup>) -> Exit {
    let oom = cgroup.is_some_and(|c| c.oom_killed(raw.looks_sigkilled()));
    exit_reason(raw, oom)
}

/// Creates a task's sandbox directory, mode 0700, owned by `run_as` when set. The parents it
/// creates get mode 0711: the task's user can pass through them to its sandbox but cannot list
/// the other tasks' sandboxes.
pub fn create_sandbox(path: &Path, run_as: Option<&RunAs>) -> Result<(), LaunchError> {
    use std::os::unix::fs::DirBuilderExt as _;
    let err = |source| LaunchError::Sandbox {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(parent)
            .map_err(err)?;
    }
    std::fs::create_dir_all(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    if let Some((uid, gid)) = run_as.map(RunAs::owner) {
        chown(path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
            .map_err(|e| err(io::Error::from(e)))?;
    }
    Ok(())
}

/// The task's environment: `spec.env`, then the `BRAMBLE_*` variables, later names replacing
/// earlier ones, plus a default `PATH`.
fn task_env(spec: &TaskSpec) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::with_capacity(spec.env.len() + 5);
    let mut set = |k: &str, v: &str| {
        if let Some(slot) = env.iter_mut().find(|(key, _)| key == k) {
            slot.1 = v.to_owned();
        } else {
            env.push((k.to_owned(), v.to_owned()));
        }
    };
    for (k, v) in &spec.env {
        set(k, v);
    }
    set("BRAMBLE_TASK_ID", &spec.task_id);
    set("BRAMBLE_FRAMEWORK_ID", &spec.framework_id);
    set("BRAMBLE_AGENT_ID", &spec.agent_id);
    set("BRAMBLE_SANDBOX", &spec.sandbox.to_string_lossy());
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".to_owned(), DEFAULT_PATH.to_owned()));
    }
    env
}

fn validate(spec: &TaskSpec) -> Result<(), LaunchError> {
    let bad = |m: String| Err(LaunchError::InvalidSpec(m));
    for (what, id) in [
        ("framework id", &spec.framework_id),
        ("task id", &spec.task_id),
        ("agent id", &spec.agent_id),
    ] {
        if let Err(e) = agent_nostd_core::ids::validate_id(id) {
            return bad(format!("{what} {id:?}: {e}"));
        }
    }
    if spec.argv.is_empty() || spec.argv[0].is_empty() {
        return bad("argv is empty".into());
    }
    if spec.argv.iter().any(|a| a.contains('\0')) {
        return bad("an argument contains a NUL byte".into());
    }
    for (k, v) in &spec.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return bad(format!("bad environment variable name or value {k:?}"));
        }
    }
    if spec.sandbox.as_os_str().is_empty() || !spec.sandbox.is_dir() {
        return bad(format!(
            "sandbox {} is not a directory",
            spec.sandbox.display()
        ));
    }
    Ok(())
}

/// The supervisor's request for `spec` (checked first), joining the `cgroup_join` files, as JSON.
pub(super) fn request_body(
    spec: &TaskSpec,
    cgroup_join: Vec<PathBuf>,
) -> Result<Vec<u8>, LaunchError> {
    validate(spec)?;
    let request = Request {
        argv: spec.argv.clone(),
        env: task_env(spec),
        sandbox: spec.sandbox.clone(),
        run_as: spec.run_as.clone(),
        log_limit_bytes: spec.log_limit_bytes,
        cgroup_join,
    };
    serde_json::to_vec(&request)
        .map_err(|e| LaunchError::InvalidSpec(format!("cannot encode the task: {e}")))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::process) fn spec() -> TaskSpec {
        TaskSpec {
            framework_id: "fw".into(),
            task_id: "t1".into(),
            agent_id: "pi".into(),
            argv: vec!["/bin/true".into()],
            env: vec![
                ("A".into(), "1".into()),
                ("BRAMBLE_TASK_ID".into(), "x".into()),
            ],
            sandbox: "/tmp".into(),
            run_as: None,
            log_limit_bytes: 10,
        }
    }

    #[test]
    fn task_env_adds_bramble_variables_overriding_and_a_default_path() {
        let env = task_env(&spec());
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("A"), Some("1"));
        assert_eq!(get("BRAMBLE_TASK_ID"), Some("t1"));
        assert_eq!(get("BRAMBLE_FRAMEWORK_ID"), Some("fw"));
        assert_eq!(get("BRAMBLE_AGENT_ID"), Some("pi"));
        assert_eq!(get("BRAMBLE_SANDBOX"), Some("/tmp"));
        assert_eq!(get("PATH"), Some(DEFAULT_PATH));
        assert_eq!(
            env.iter().filter(|(k, _)| k == "BRAMBLE_TASK_ID").count(),
            1
        );
    }

    #[test]
    fn a_task_users_groups_start_with_its_primary_group_without_repeats() {
        let run_as = RunAs {
            uid: 1000,
            gid: 1000,
            groups: vec![44, 1000, 997, 44],
        };
        assert_eq!(run_as.all_groups(), vec![1000, 44, 997]);
        assert_eq!(RunAs::new(7, 8).all_groups(), vec![8]);
        assert_eq!(run_as.owner(), (1000, 1000));
    }

    #[test]
    fn a_sandbox_is_private_and_its_new_parents_only_let_others_pass() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let sandbox = dir.path().join("sandboxes/fw/task");
        create_sandbox(&sandbox, None).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&sandbox), 0o700);
        assert_eq!(mode(&dir.path().join("sandboxes/fw")), 0o711);
        assert_eq!(mode(&dir.path().join("sandboxes")), 0o711);
    }

    #[test]
    fn raw_exits_serialize_as_the_documented_json() {
        assert_eq!(
            serde_json::to_string(&RawExit::Code(3)).unwrap(),
            r#"{"code":3}"#
        );
        assert_eq!(
            serde_json::to_string(&RawExit::Signal(9)).unwrap(),
            r#"{"signal":9}"#
        );
    }

    #[test]
    fn an_oom_kill_wins_over_the_raw_exit() {
        assert_eq!(exit_reason(RawExit::Code(137), true), Exit::OomKilled);
        assert_eq!(exit_reason(RawExit::Code(2), false), Exit::Code(2));
        assert_eq!(exit_reason(RawExit::Signal(15), false), Exit::Signal(15));
        assert_eq!(exit_reason(RawExit::Unknown, false), Exit::Unknown);
        assert!(RawExit::Signal(9).looks_sigkilled());
        assert!(!RawExit::Code(1).looks_sigkilled());
    }

    #[test]
    fn bad_specs_are_refused_before_anything_runs() {
        let mut s = spec();
        s.argv.clear();
        assert!(matches!(validate(&s), Err(LaunchError::InvalidSpec(_))));
        let mut s = spec();
        s.task_id = "../etc".into();
        assert!(matches!(validate(&s), Err(LaunchError::InvalidSpec(_))));
        let mut s = spec();
        s.env.push(("A=B".into(), "x".into()));
        assert!(matches!(validate(&s), Err(LaunchError::InvalidSpec(_))));
        let mut s = spec();
        s.argv.push("a\0b".into());
        assert!(matches!(validate(&s), Err(LaunchError::InvalidSpec(_))));
        let mut s = spec();
        s.sandbox = "/nonexistent/bramble/sandbox".into();
        assert!(matches!(validate(&s), Err(LaunchError::InvalidSpec(_))));
        assert!(validate(&spec()).is_ok());
    }
}
