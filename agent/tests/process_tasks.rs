//! Tasks as real processes under their supervisor: environment, sandbox, output, exit statuses,
//! exec failures, signals, running as another user and re-adoption after an agent restart.

use std::path::{Path, PathBuf};

use agent_nostd_core::agent::{Exit, Signal};
use bramble_agent::process::{
    self, adopt, launch, Adopted, LaunchError, RawExit, TaskSpec, EXIT_FILE, STDERR_FILE,
    STDOUT_FILE,
};

mod tasks;
use tasks::{helper_says, sandbox_at, supervisor, task_spec, wait};

fn spec(sandbox: &Path, task_id: &str, argv: &[&str]) -> TaskSpec {
    task_spec("fw-test", sandbox, task_id, argv, 1 << 20)
}

fn sandbox() -> (tempfile::TempDir, PathBuf) {
    sandbox_at("sandboxes/fw-test/task")
}

async fn run(spec: &TaskSpec) -> RawExit {
    let (_launched, mut handle) = launch(spec, None, &supervisor()).await.unwrap();
    wait(&mut handle).await
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fields of `/proc/<pid>/stat` after the command: state, ppid, pgrp, session, …
fn stat_fields(pid: i32) -> Vec<String> {
    let stat = read(Path::new(&format!("/proc/{pid}/stat")));
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    rest.split_whitespace().map(str::to_owned).collect()
}

#[tokio::test]
async fn a_task_sees_its_environment_runs_in_its_sandbox_and_its_output_is_captured() {
    let (_dir, sb) = sandbox();
    let mut s = spec(
        &sb,
        "env-task",
        &[
            "sh",
            "-c",
            "echo \"$BRAMBLE_TASK_ID $BRAMBLE_FRAMEWORK_ID $BRAMBLE_AGENT_ID $MY_VAR\"; \
             echo \"$BRAMBLE_SANDBOX\"; pwd; echo oops >&2; exit 3",
        ],
    );
    s.env = vec![("MY_VAR".into(), "hello world".into())];
    assert_eq!(run(&s).await, RawExit::Code(3));
    let sb_real = sb.canonicalize().unwrap();
    assert_eq!(
        read(&sb.join(STDOUT_FILE)),
        format!(
            "env-task fw-test pi-test hello world\n{}\n{}\n",
            sb.display(),
            sb_real.display()
        )
    );
    assert_eq!(read(&sb.join(STDERR_FILE)), "oops\n");
    assert_eq!(read(&sb.join(EXIT_FILE)), r#"{"code":3}"#);
}

#[tokio::test]
async fn a_task_gets_exactly_its_own_environment_and_not_the_agents() {
    let (_dir, sb) = sandbox();
    let mut s = spec(&sb, "clean-env", &["/usr/bin/env"]);
    s.env = vec![
        ("MY_VAR".into(), "1".into()),
        ("BRAMBLE_TASK_ID".into(), "forged".into()),
    ];
    assert_eq!(run(&s).await, RawExit::Code(0));
    let mut lines: Vec<String> = read(&sb.join(STDOUT_FILE))
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            "BRAMBLE_AGENT_ID=pi-test".to_owned(),
            "BRAMBLE_FRAMEWORK_ID=fw-test".to_owned(),
            format!("BRAMBLE_SANDBOX={}", sb.display()),
            "BRAMBLE_TASK_ID=clean-env".to_owned(),
            "MY_VAR=1".to_owned(),
            format!("PATH={}", process::DEFAULT_PATH),
        ]
    );
}

#[tokio::test]
async fn output_beyond_the_log_limit_is_dropped_and_the_task_still_finishes() {
    let (_dir, sb) = sandbox();
    let mut s = spec(
        &sb,
        "chatty",
        &[
            "sh",
            "-c",
            "head -c 300000 /dev/zero; head -c 5000 /dev/zero >&2",
        ],
    );
    s.log_limit_bytes = 4096;
    assert_eq!(run(&s).await, RawExit::Code(0));
    assert_eq!(std::fs::metadata(sb.join(STDOUT_FILE)).unwrap().len(), 4096);
    assert_eq!(std::fs::metadata(sb.join(STDERR_FILE)).unwrap().len(), 4096);
}

#[tokio::test]
async fn exit_codes_and_signals_map_to_the_cores_exit() {
    let (_dir, sb) = sandbox();
    let code = run(&spec(&sb, "code", &["sh", "-c", "exit 42"])).await;
    assert_eq!(code, RawExit::Code(42));
    assert_eq!(process::task_exit(code, None), Exit::Code(42));

    let (_dir2, sb2) = sandbox();
    let sig = run(&spec(&sb2, "sig", &["sh", "-c", "kill -USR1 $$"])).await;
    assert_eq!(sig, RawExit::Signal(10));
    assert_eq!(process::task_exit(sig, None), Exit::Signal(10));
    assert_eq!(read(&sb2.join(EXIT_FILE)), r#"{"signal":10}"#);
}

#[tokio::test]
async fn a_missing_program_fails_the_launch_with_a_clear_message() {
    let (_dir, sb) = sandbox();
    let err = launch(&spec(&sb, "nope", &["/usr/bin/nope"]), None, &supervisor())
        .await
        .unwrap_err();
    assert!(matches!(err, LaunchError::Exec(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "No such file or directory (os error 2): /usr/bin/nope"
    );
    assert!(
        !sb.join(EXIT_FILE).exists(),
        "a task that never ran has no exit"
    );

    let err = launch(
        &spec(&sb, "nope2", &["bramble-no-such-program"]),
        None,
        &supervisor(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "No such file or directory (os error 2): bramble-no-such-program"
    );
}

#[tokio::test]
async fn a_program_that_is_not_executable_fails_the_launch_with_permission_denied() {
    let (_dir, sb) = sandbox();
    let file = sb.join("data.txt");
    std::fs::write(&file, "not a program").unwrap();
    let argv0 = file.to_str().unwrap();
    let err = launch(&spec(&sb, "noexec", &[argv0]), None, &supervisor())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("Permission denied (os error 13): {argv0}")
    );
}

#[tokio::test]
async fn a_missing_supervisor_executable_is_a_spawn_error() {
    let (_dir, sb) = sandbox();
    let err = launch(
        &spec(&sb, "t", &["true"]),
        None,
        Path::new("/nonexistent/bramble-agent"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, LaunchError::Spawn { .. }), "{err:?}");
}

#[tokio::test]
async fn a_supervisor_that_does_not_speak_the_protocol_is_a_supervisor_error() {
    let (_dir, sb) = sandbox();
    // `true` ignores its arguments and exits without answering.
    let err = launch(&spec(&sb, "t", &["true"]), None, Path::new("/bin/true"))
        .await
        .unwrap_err();
    assert!(matches!(err, LaunchError::Supervisor(_)), "{err:?}");
}

#[tokio::test]
async fn the_supervisor_has_its_own_session_and_the_task_its_own_process_group() {
    let (_dir, sb) = sandbox();
    let s = spec(&sb, "groups", &["sleep", "600"]);
    let (launched, mut handle) = launch(&s, None, &supervisor()).await.unwrap();
    let sup = stat_fields(launched.supervisor_pid);
    let task = stat_fields(launched.task_pgid);
    let me = stat_fields(i32::try_from(std::process::id()).unwrap());
    // Fields after the command: [0] state, [1] ppid, [2] pgrp, [3] session.
    assert_eq!(
        sup[3],
        launched.supervisor_pid.to_string(),
        "supervisor leads a session"
    );
    assert_ne!(sup[3], me[3], "not the agent's session");
    assert_eq!(
        task[2],
        launched.task_pgid.to_string(),
        "task leads its group"
    );
    assert_ne!(task[2], sup[2], "the task's group is not the supervisor's");
    assert_eq!(task[1], launched.supervisor_pid.to_string());
    process::signal(&launched, Signal::Term, None).unwrap();
    assert_eq!(wait(&mut handle).await, RawExit::Signal(15));
    assert!(!process::supervisor_alive(&launched));
}

#[tokio::test]
async fn a_task_survives_its_handle_and_is_adopted_until_it_ends_with_its_real_code() {
    let (_dir, sb) = sandbox();
    let s = spec(
        &sb,
        "long",
        &["sh", "-c", "while [ ! -e go ]; do sleep 0.05; done; exit 7"],
    );
    let (launched, handle) = launch(&s, None, &supervisor()).await.unwrap();
    drop(handle);
    // What the driver checkpoints, back from JSON as after a restart.
    let json = serde_json::to_string(&launched).unwrap();
    let launched: process::Launched = serde_json::from_str(&json).unwrap();
    let Adopted::Running(mut adopted) = adopt(&launched, &sb) else {
        panic!("the task is still running");
    };
    assert_eq!(adopted.launched(), launched);
    std::fs::write(sb.join("go"), "").unwrap();
    assert_eq!(wait(&mut adopted).await, RawExit::Code(7));
    assert_eq!(
        wait(&mut adopted).await,
        RawExit::Code(7),
        "asking again is fine"
    );
}

#[tokio::test]
async fn a_task_that_ended_before_adoption_yields_its_recorded_exit() {
    let (_dir, sb) = sandbox();
    let s = spec(&sb, "short", &["sh", "-c", "exit 5"]);
    let (launched, mut handle) = launch(&s, None, &supervisor()).await.unwrap();
    assert_eq!(wait(&mut handle).await, RawExit::Code(5));
    assert!(matches!(
        adopt(&launched, &sb),
        Adopted::Ended(RawExit::Code(5))
    ));
    std::fs::remove_file(sb.join(EXIT_FILE)).unwrap();
    assert!(matches!(adopt(&launched, &sb), Adopted::Unknown));
}

#[tokio::test]
async fn a_reused_supervisor_pid_is_not_mistaken_for_the_supervisor() {
    let (_dir, sb) = sandbox();
    let me = i32::try_from(std::process::id()).unwrap();
    let launched = process::Launched {
        supervisor_pid: me,
        supervisor_start_time: process::process_start_time(me).unwrap() + 1,
        task_pgid: me,
    };
    assert!(!process::supervisor_alive(&launched));
    assert!(matches!(adopt(&launched, &sb), Adopted::Unknown));
    // And our own group is never signalled through it.
    process::signal(&launched, Signal::Term, None).unwrap();
}

#[tokio::test]
#[ignore = "needs root and cgroups"]
async fn a_task_runs_as_the_configured_unprivileged_user() {
    let (_dir, sb) = sandbox();
    let nobody = process::RunAs::new(65534, 65534);
    process::create_sandbox(&sb, Some(&nobody)).unwrap();
    let mut s = spec(
        &sb,
        "nobody",
        &[
            "sh",
            "-c",
            "id -u; id -g; id -G; touch mine && stat -c %u mine",
        ],
    );
    s.run_as = Some(nobody);
    assert_eq!(run(&s).await, RawExit::Code(0));
    assert_eq!(read(&sb.join(STDOUT_FILE)), "65534\n65534\n65534\n65534\n");
}

/// Set for the helper run of this test binary: the sandbox it launches its task in.
const HELPER_SANDBOX: &str = "BRAMBLE_TEST_HELPER_SANDBOX";
const HELPER_TEST: &str = "an_agent_run_as_a_helper_launches_a_task_and_dies_without_cleaning_up";

/// Does nothing in a normal run. Run by the next test as a separate process, it plays an agent
/// that launches a task, prints its checkpoint record and dies at once.
#[tokio::test]
async fn an_agent_run_as_a_helper_launches_a_task_and_dies_without_cleaning_up() {
    let Some(sb) = std::env::var_os(HELPER_SANDBOX) else {
        return;
    };
    let s = spec(
        Path::new(&sb),
        "orphan",
        &["sh", "-c", "while [ ! -e go ]; do sleep 0.05; done; exit 7"],
    );
    let (launched, _handle) = launch(&s, None, &supervisor()).await.unwrap();
    println!("LAUNCHED {}", serde_json::to_string(&launched).unwrap());
    std::process::exit(0);
}

#[tokio::test]
async fn a_task_outlives_the_agent_that_launched_it_and_is_adopted_by_the_next() {
    let (_dir, sb) = sandbox();
    let json = helper_says(HELPER_TEST, (HELPER_SANDBOX, sb.as_os_str()), "LAUNCHED ").await;
    let launched: process::Launched = serde_json::from_str(&json).unwrap();

    // The agent is gone; its task and the task's supervisor are not.
    assert!(process::supervisor_alive(&launched));
    let Adopted::Running(mut adopted) = adopt(&launched, &sb) else {
        panic!("the task outlived its agent");
    };
    std::fs::write(sb.join("go"), "").unwrap();
    assert_eq!(wait(&mut adopted).await, RawExit::Code(7));
}

#[tokio::test]
async fn descriptors_the_agent_leaked_do_not_reach_the_task() {
    use std::os::fd::AsRawFd as _;
    // A descriptor without close-on-exec, as a careless parent of the agent might leave.
    let leaked = std::fs::File::open("/dev/null").unwrap();
    nix::fcntl::fcntl(
        &leaked,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();
    let (_dir, sb) = sandbox();
    let s = spec(&sb, "fds", &["sh", "-c", "ls /proc/$$/fd"]);
    assert_eq!(run(&s).await, RawExit::Code(0));
    let fds: Vec<i32> = read(&sb.join(STDOUT_FILE))
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    assert_eq!(fds, vec![0, 1, 2], "leaked fd was {}", leaked.as_raw_fd());
}
