//! Tasks run as an unprivileged user with the device groups they are given: real tasks, started
//! the way the agent starts them (`tasks::launch::start`: sandbox, artifacts, a cold or warm
//! process in a real cgroup), as a user and groups each test creates (`useradd`, `groupadd`) and
//! removes again. They need root and cgroups, so they are ignored by default; CI runs them as root
//! with `--include-ignored`.

mod support;
mod tasks;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use agent_nostd_core::wire::{Artifact, EnvVar, MasterMsg, RunTask};
use agent_nostd_core::Resources;
use axum::routing::get;
use axum::Router;
use bramble_agent::cgroup::Isolation;
use bramble_agent::config::Tasks;
use bramble_agent::fetch::Fetcher;
use bramble_agent::process::{RawExit, STDERR_FILE, STDOUT_FILE};
use bramble_agent::tasks::launch::{self, LaunchEnv, LaunchFailure};
use bramble_agent::tasks::{TaskUsers, UserError};
use bramble_agent::warm::Launcher;
use sha2::{Digest, Sha256};

use tasks::{supervisor, take_prepared, wait};

/// `useradd` and `groupadd` lock `/etc/passwd` and `/etc/group`: one at a time in this binary
/// (cargo runs test binaries one after another).
static ACCOUNTS: Mutex<()> = Mutex::new(());
static NEXT: AtomicU32 = AtomicU32::new(0);

fn run(cmd: &str, args: &[&str]) {
    let _lock = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A name unique to this test run, at most 32 bytes.
fn unique(what: &str) -> String {
    format!(
        "bt{what}{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// A system group, removed when dropped.
struct TestGroup {
    name: String,
    gid: u32,
}

impl TestGroup {
    fn new() -> TestGroup {
        let name = unique("g");
        run("groupadd", &["--system", &name]);
        let gid = nix::unistd::Group::from_name(&name)
            .unwrap()
            .expect("the group was just added")
            .gid
            .as_raw();
        TestGroup { name, gid }
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        let _lock = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        let _ = Command::new("groupdel").arg(&self.name).status();
    }
}

/// A system user with its own group, as install.sh makes `bramble`; removed when dropped.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl TestUser {
    fn new() -> TestUser {
        let name = unique("u");
        run(
            "useradd",
            &[
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "--user-group",
                &name,
            ],
        );
        let user = nix::unistd::User::from_name(&name)
            .unwrap()
            .expect("the user was just added");
        TestUser {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _lock = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        // Removes its own group too.
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

/// A work directory other users can pass through, like `/var/lib/bramble` (a temporary directory
/// is private).
fn work_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A character device with `/dev/null`'s numbers at `path`, mode 0660, owned by root and `gid`.
fn device(path: &Path, gid: u32) {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    mknod(
        path,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o660),
        makedev(1, 3),
    )
    .unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).unwrap();
    std::os::unix::fs::chown(path, Some(0), Some(gid)).unwrap();
}

fn isolation() -> Isolation {
    let iso = Isolation::from_system();
    if let Isolation::None { reason } = &iso {
        panic!("these tests need usable cgroups: {reason}");
    }
    iso
}

/// A RunTask of framework `fw-1` running `sh -c script`, with `env`.
fn run_task(task: &str, script: &str, env: &[(&str, &str)]) -> RunTask {
    let MasterMsg::RunTask(mut run) = support::run_task(task, &["sh", "-c", script], 100, 32)
    else {
        unreachable!()
    };
    for (k, v) in env {
        run.env
            .push(EnvVar {
                key: heapless::String::try_from(*k).unwrap(),
                value: heapless::String::try_from(*v).unwrap(),
            })
            .unwrap();
    }
    run
}

/// What a launch needs, for an agent that is root with `tasks` as its `[tasks]`.
struct Agent {
    work: tempfile::TempDir,
    users: TaskUsers,
    fetcher: Fetcher,
    launcher: Launcher,
}

impl Agent {
    /// With `spares` warm spares (prepared before it returns).
    async fn new(tasks: Tasks, spares: usize) -> Agent {
        let work = work_dir();
        let id = unique("a");
        let (mut launcher, mut ready) = Launcher::new(&id, isolation(), supervisor(), spares);
        if spares > 0 {
            launcher.refill();
            take_prepared(&mut launcher, &mut ready).await;
        }
        let fetcher = Fetcher::new(work.path().join("cache"), 1 << 20, Duration::from_secs(10));
        Agent {
            users: TaskUsers::new(&tasks),
            work,
            fetcher,
            launcher,
        }
    }

    fn sandbox(&self, task: &str) -> PathBuf {
        self.work.path().join("sandboxes/fw-1").join(task)
    }

    /// Starts `run` and waits for its end; returns its exit and its stdout.
    async fn run(&mut self, run: &RunTask) -> Result<(RawExit, String), LaunchFailure> {
        let env = LaunchEnv {
            agent_id: "pi-test",
            broker_url: "mqtt://127.0.0.1:1".into(),
            users: &self.users,
            log_limit_bytes: 64 * 1024,
            fetcher: &self.fetcher,
            fetch_budget: Duration::from_secs(10),
        };
        let key = run.key();
        let sandbox = self.sandbox(&run.task_id);
        let resources = Resources::new(100, 64, 0);
        let mut started =
            launch::start(&env, &mut self.launcher, &key, run, &sandbox, resources, 0).await?;
        let exit = wait(&mut started.handle).await;
        if let Some(cg) = started.cgroup {
            cg.remove().await.unwrap();
        }
        let stdout = std::fs::read_to_string(sandbox.join(STDOUT_FILE)).unwrap();
        Ok((exit, stdout))
    }
}

fn tasks_as(user: &str, groups: &[&TestGroup], allowed: &[&str]) -> Tasks {
    Tasks {
        user: user.to_owned(),
        groups: Some(groups.iter().map(|g| g.name.clone()).collect()),
        allowed_users: allowed.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn ids(line: &str) -> Vec<u32> {
    line.split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect()
}

/// Serves `content` as `http://…/data.txt`; returns the artifact.
async fn serve_artifact(content: &'static [u8]) -> Artifact {
    let router = Router::new().route("/data.txt", get(move || async move { content }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    Artifact {
        url: heapless::String::try_from(format!("http://{addr}/data.txt").as_str()).unwrap(),
        sha256: Sha256::digest(content).into(),
        executable: false,
        name: heapless::String::try_from("data.txt").unwrap(),
    }
}

#[tokio::test]
#[ignore = "needs root and cgroups"]
async fn a_task_with_default_settings_runs_as_the_configured_user_with_its_groups_and_owns_its_sandbox(
) {
    let user = TestUser::new();
    let given = TestGroup::new();
    let other = TestGroup::new();
    let mut agent = Agent::new(tasks_as(&user.name, &[&given], &[]), 0).await;
    let mut run = run_task(
        "whoami",
        "id -u; id -g; id -G; echo \"$BRAMBLE_USER\"; touch mine; echo mine >> data.txt",
        &[],
    );
    run.artifacts
        .push(serve_artifact(b"fetched\n").await)
        .unwrap();

    let (exit, stdout) = agent.run(&run).await.unwrap();
    assert_eq!(exit, RawExit::Code(0), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], user.uid.to_string(), "id -u");
    assert_eq!(lines[1], user.gid.to_string(), "id -g");
    let groups = ids(lines[2]);
    assert!(groups.contains(&user.gid), "id -G {groups:?}");
    assert!(groups.contains(&given.gid), "the [tasks] group: {groups:?}");
    assert!(!groups.contains(&other.gid), "no other group: {groups:?}");
    assert!(!groups.contains(&0), "not root's group: {groups:?}");
    assert_eq!(lines[3], user.name, "BRAMBLE_USER names the task's user");

    let sandbox = agent.sandbox("whoami");
    for name in [".", "mine", "data.txt", STDOUT_FILE, STDERR_FILE] {
        let meta = std::fs::metadata(sandbox.join(name)).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (user.uid, user.gid),
            "{name} belongs to the task's user"
        );
    }
    assert_eq!(
        std::fs::read_to_string(sandbox.join("data.txt")).unwrap(),
        "fetched\nmine\n",
        "the fetched artifact is the task's to change"
    );
    let cache = std::fs::metadata(agent.work.path().join("cache")).unwrap();
    assert_eq!(
        (cache.uid(), cache.mode() & 0o777),
        (0, 0o700),
        "the cache stays root's"
    );
}

#[tokio::test]
#[ignore = "needs root and cgroups"]
async fn a_task_opens_a_device_of_a_group_it_was_given_but_not_one_of_another_group() {
    let user = TestUser::new();
    let given = TestGroup::new();
    let other = TestGroup::new();
    let devices = work_dir();
    let (mine, theirs) = (devices.path().join("mine"), devices.path().join("theirs"));
    device(&mine, given.gid);
    device(&theirs, other.gid);
    // Cold and through a warm spare: both switch user in the task's process.
    for spares in [0, 1] {
        let mut agent = Agent::new(tasks_as(&user.name, &[&given], &[]), spares).await;
        let script = "(echo x >\"$MINE\") && echo mine-ok || echo mine-denied; \
                      (echo x >\"$THEIRS\") && echo theirs-ok || echo theirs-denied";
        let (mine, theirs) = (mine.to_str().unwrap(), theirs.to_str().unwrap());
        let run = run_task("devices", script, &[("MINE", mine), ("THEIRS", theirs)]);
        let (exit, stdout) = agent.run(&run).await.unwrap();
        assert_eq!(exit, RawExit::Code(0), "{stdout}");
        assert_eq!(stdout, "mine-ok\ntheirs-denied\n", "with {spares} spare(s)");
        agent.launcher.shutdown().await;
    }
}

#[tokio::test]
#[ignore = "needs root and cgroups"]
async fn a_task_asking_for_a_user_not_allowed_fails_with_a_clear_message_and_runs_nothing() {
    let user = TestUser::new();
    let allowed = TestUser::new();
    let mut agent = Agent::new(tasks_as(&user.name, &[], &[&allowed.name]), 0).await;
    for asked in ["root", "nobody"] {
        let run = run_task("escalate", "touch ran", &[("BRAMBLE_USER", asked)]);
        let err = agent.run(&run).await.unwrap_err();
        assert!(
            matches!(&err, LaunchFailure::User(UserError::NotAllowed(u)) if u == asked),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("user `{asked}` is not in this agent's [tasks] allowed_users")
        );
        assert!(
            !agent.sandbox("escalate").exists(),
            "nothing was made for it"
        );
    }

    let run = run_task(
        "allowed",
        "id -u; echo \"$BRAMBLE_USER\"",
        &[("BRAMBLE_USER", allowed.name.as_str())],
    );
    let (exit, stdout) = agent.run(&run).await.unwrap();
    assert_eq!(exit, RawExit::Code(0), "{stdout}");
    assert_eq!(stdout, format!("{}\n{}\n", allowed.uid, allowed.name));
}

#[tokio::test]
#[ignore = "needs root and cgroups"]
async fn a_missing_task_user_fails_the_task_with_how_to_create_it_and_never_runs_it_as_root() {
    let mut agent = Agent::new(tasks_as("bt-no-such-user", &[], &[]), 0).await;
    let err = agent
        .run(&run_task("orphan", "touch ran", &[]))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("no user `bt-no-such-user` on this board")
            && text.contains("useradd --system --no-create-home --shell /usr/sbin/nologin"),
        "{text}"
    );
    assert!(!agent.sandbox("orphan").exists());
}

/// Through the real agent binary (as root or not: `allowed_users` is checked first): the master is
/// told TASK_FAILED with the reason and the message.
#[test]
fn the_master_is_told_a_task_asking_for_a_user_not_allowed_failed_and_why() {
    support::runtime().block_on(async {
        let port = support::start_broker();
        let mut master = support::Master::connect(port).await;
        let work = tempfile::tempdir().unwrap();
        let _agent = support::AgentProcess::start("users-1", port, work.path(), &[]);
        master.accept_registration("users-1", 1).await;
        let mut msg = support::run_task("mallory", &["sh", "-c", "touch ran"], 100, 32);
        if let MasterMsg::RunTask(run) = &mut msg {
            run.env
                .push(EnvVar {
                    key: heapless::String::try_from("BRAMBLE_USER").unwrap(),
                    value: heapless::String::try_from("mallory").unwrap(),
                })
                .unwrap();
        }
        master.send("users-1", &msg).await;
        let end = master
            .wait_state(
                "users-1",
                "mallory",
                agent_nostd_core::wire::TaskState::Failed,
                20,
            )
            .await;
        assert_eq!(end.reason, agent_nostd_core::wire::Reason::LaunchFailed);
        assert_eq!(
            end.message.as_str(),
            "user `mallory` is not in this agent's [tasks] allowed_users"
        );
    });
}
