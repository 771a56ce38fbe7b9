//! Helpers shared by the master's integration tests: free ports, the runtime, the target directory,
//! Mosquitto as an external broker, agents as their own processes, and cleaning up the tasks a
//! killed agent leaves behind.
//!
//! Each test binary uses only some of them.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agent_nostd_core::Resources;
use bramble::cluster::{AgentSpec, ClusterBroker, ClusterOptions, LocalCluster};
use bramble::driver::BrokerAddr;
use bramble::query::StatusSnapshot;
use bramble_master_core::Config;

/// The `bramble` binary under test.
pub const BRAMBLE: &str = env!("CARGO_BIN_EXE_bramble");

/// A local cluster of `agents` (in-process, supervising tasks with [`BRAMBLE`], default warm
/// spares) on `broker`, working below `work`, with a master that allocates every 200 ms.
pub fn cluster_options(
    broker: ClusterBroker,
    work: &Path,
    agents: Vec<AgentSpec>,
) -> ClusterOptions {
    ClusterOptions {
        broker,
        agents,
        work_dir: work.to_owned(),
        supervisor: PathBuf::from(BRAMBLE),
        master: Config {
            allocation_interval_ms: 200,
            ..Config::default()
        },
        warm_spares: bramble_agent::config::DEFAULT_WARM_SPARES,
        credential_store: None,
    }
}

/// A cluster of `agents` (all of them registered) on an embedded broker at a free port, working
/// below `work`, with [`cluster_options`].
pub async fn embedded_cluster(work: &Path, agents: Vec<AgentSpec>) -> LocalCluster {
    let broker = ClusterBroker::Embedded(format!("127.0.0.1:{}", free_port()).parse().unwrap());
    let n = agents.len();
    let mut cluster = LocalCluster::start(cluster_options(broker, work, agents)).unwrap();
    tokio::time::timeout(Duration::from_secs(30), cluster.wait_for_agents(n))
        .await
        .unwrap_or_else(|_| panic!("{n} agents register"));
    cluster
}

/// Agents with these ids, no attributes, 1 core, 512 MiB and 1 GiB of disk each.
pub fn plain_agents(ids: &[&str]) -> Vec<AgentSpec> {
    ids.iter()
        .map(|id| AgentSpec {
            id: (*id).into(),
            attributes: vec![],
            capacity: Resources::new(1000, 512, 1024),
        })
        .collect()
}

/// Reads the retained status topics until `cond` holds (or panics after `timeout`, showing them).
pub async fn retained_until(
    broker: &BrokerAddr,
    what: &str,
    timeout: Duration,
    cond: impl Fn(&StatusSnapshot) -> bool,
) -> StatusSnapshot {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let snap = bramble::query::collect(broker, Duration::from_secs(5))
            .await
            .unwrap();
        if cond(&snap) {
            return snap;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: the retained status is {:#?}, garbage {:?}",
            snap.entries,
            snap.garbage(None)
        );
    }
}

/// `bramble ARGS` (the CLI under test) run to its end, off the runtime's threads, within 60 s.
pub async fn bramble_cli(args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || Command::new(BRAMBLE).args(args).output());
    tokio::time::timeout(std::time::Duration::from_secs(60), out)
        .await
        .expect("the bramble command ends")
        .unwrap()
        .unwrap()
}

/// The `mqtt://HOST:PORT` URL of `broker`, as the CLI takes it.
pub fn broker_url(broker: &BrokerAddr) -> String {
    format!("mqtt://{}:{}", broker.host, broker.port)
}

/// A TCP port free on every interface right now.
/// A state directory of its own for a `bramble master` process (its epoch file, and its store if
/// it makes one), so tests never share `/var/lib/bramble-master`. Left behind: a few bytes.
pub fn scratch_state_dir() -> PathBuf {
    tempfile::Builder::new()
        .prefix("bramble-master-state-")
        .tempdir()
        .unwrap()
        .keep()
}

pub fn free_port() -> u16 {
    TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A two-thread runtime, like a small board's master.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `$CARGO_TARGET_DIR`, or the `target` directory this test binary was built into.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/<test>-…
    exe.ancestors().nth(3).unwrap().to_owned()
}

/// An agent as its own process (`bramble __agent`), so it can be SIGKILLed; killed when dropped.
pub struct AgentProcess(pub Child);

impl AgentProcess {
    /// Starts agent `id` with one `attribute` (`key=value`), its work directory below `work`.
    pub fn start(id: &str, attribute: &str, broker: &BrokerAddr, work: &Path) -> AgentProcess {
        let child = Command::new(BRAMBLE)
            .args(["__agent", "--agent-id", id, "--attribute", attribute])
            .arg("--broker")
            .arg(broker.to_string())
            .arg("--work-dir")
            .arg(work.join(id))
            // As root, tasks run as root: the `bramble` user need not exist for the tests.
            .arg("--run-as")
            .arg(bramble_agent::tasks::user::current_user_name())
            .env("BRAMBLE_LOG", "warn")
            .spawn()
            .unwrap();
        AgentProcess(child)
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The processes whose working directory is below `dir` (tasks, in their sandboxes).
pub fn processes_below(dir: &Path) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<i32>().ok()?;
            let cwd = std::fs::read_link(entry.path().join("cwd")).ok()?;
            cwd.starts_with(dir).then_some(pid)
        })
        .collect()
}

/// Kills every process whose working directory is below `dir` (tasks orphaned by a killed agent).
pub fn kill_processes_below(dir: &Path) {
    for pid in processes_below(dir) {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
}

/// Mosquitto on a free loopback port (anonymous, no persistence: a restart loses every session and
/// every message it held), killed when dropped.
pub struct Mosquitto {
    child: Child,
    /// Its port.
    pub port: u16,
    config: tempfile::NamedTempFile,
}

impl Mosquitto {
    /// Starts Mosquitto on a free port and waits until it accepts connections.
    pub fn start() -> Mosquitto {
        Self::start_with("allow_anonymous true\n")
    }

    /// Starts Mosquitto on a free port with `settings` (lines of `mosquitto.conf`, e.g.
    /// `allow_anonymous false` and a `password_file`) and waits until it accepts connections.
    pub fn start_with(settings: &str) -> Mosquitto {
        let port = free_port();
        let mut config = tempfile::Builder::new()
            .prefix("mosquitto-")
            .suffix(".conf")
            .tempfile()
            .unwrap();
        use std::io::Write;
        write!(
            config,
            "listener {port} 127.0.0.1\n{settings}persistence false\n"
        )
        .unwrap();
        config.flush().unwrap();
        let child = Self::spawn(config.path(), port);
        // Owned from here on, so it is killed and reaped on every path (Drop).
        Mosquitto {
            child,
            port,
            config,
        }
    }

    /// Where clients reach it.
    pub fn addr(&self) -> BrokerAddr {
        BrokerAddr::new("127.0.0.1", self.port)
    }

    /// SIGKILLs it (no last wills are sent, every session and in-flight message is gone) and
    /// waits until it is reaped.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port, with nothing of the old one's state.
    pub fn restart(&mut self) {
        self.kill9();
        self.child = Self::spawn(self.config.path(), self.port);
    }

    fn spawn(config: &Path, port: u16) -> Child {
        // Right after a SIGKILL the port may still be held for a moment: retry the start.
        for _ in 0..40 {
            let mut child = Command::new("mosquitto")
                .arg("-c")
                .arg(config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("mosquitto is installed (apt-get install mosquitto)");
            for _ in 0..200 {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // it exited (the port was busy): start it again
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return child;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = child.kill();
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("mosquitto did not start on port {port}");
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The `bramble-agent` binary, as a board runs it: the one built beside this test
/// (`cargo test --workspace` builds it; else `cargo build -p bramble-agent`), or, when it is not
/// there, `bramble __agent`, which runs the same code.
pub fn agent_command() -> Command {
    let agent = target_dir().join("debug").join("bramble-agent");
    if agent.is_file() {
        Command::new(agent)
    } else {
        eprintln!(
            "{} is not built: running `bramble __agent` instead",
            agent.display()
        );
        let mut cmd = Command::new(BRAMBLE);
        cmd.arg("__agent");
        cmd
    }
}

/// Runs headless Chromium (Debian's `/usr/bin/chromium`) with a profile of its own and `args`.
pub fn chromium(profile: &Path, args: &[String]) -> std::process::Output {
    Command::new("/usr/bin/chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium runs")
}

/// Polls a fresh client's event loop until the broker answers its CONNECT (within 10 s):
/// whether it was accepted (a refusing ConnAck, or a closed connection, is a refusal).
pub async fn connack_accepted(eventloop: &mut rumqttc::EventLoop) -> bool {
    use rumqttc::{ConnectReturnCode, Event, Packet};
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    return ack.code == ConnectReturnCode::Success
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await
    .expect("the broker answers a CONNECT within 10 s")
}

/// One raw HTTP/1.1 request with an optional `Authorization` header, exactly as written (no
/// client normalises the path): the status line and the whole response.
pub async fn raw(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.lines().next().unwrap_or("").to_owned();
    (status, text)
}
