//! Test support for the agent's end-to-end tests: an in-process MQTT broker, a scripted master that
//! speaks the real wire protocol, and the real `bramble-agent` binary as a child process.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_nostd_core::ids::id;
use agent_nostd_core::topic::{self, AgentTopic, Topic};
use agent_nostd_core::wire::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

/// The release `bramble-agent` beside an example binary (`target/release/examples/<name>`), for the
/// examples that measure it; panics with the command to build it when it is missing.
pub fn release_agent() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let agent = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("bramble-agent");
    assert!(
        agent.is_file(),
        "{} is missing: build it first (cargo build --release -p bramble-agent)",
        agent.display()
    );
    agent
}

/// A one-thread runtime, like the agent's own.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Starts the master's embedded broker (`bramble::broker`, the one `bramble master` runs) on a
/// free loopback port and returns the port once it accepts connections.
pub fn start_broker() -> u16 {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}").parse().unwrap();
    bramble::broker::start(&bramble::broker::BrokerConfig::small(listen)).unwrap();
    port
}

/// A message an agent sent, with the agent's id.
#[derive(Debug, Clone)]
pub struct FromAgent {
    pub agent: String,
    pub msg: AgentMsg,
}

/// A scripted master: it sees every agent message and sends what the test says.
pub struct Master {
    client: AsyncClient,
    rx: mpsc::Receiver<FromAgent>,
    pub garbage: mpsc::Receiver<String>,
    /// The epoch its messages carry: the last one it acknowledged a registration with.
    epoch: u64,
    /// Each agent's boot, as its latest registration said (agents without a credential seal
    /// with the anonymous key, which is what this master checks).
    boots: Arc<Mutex<HashMap<String, u32>>>,
    /// The number of the next frame it sends.
    down_seq: AtomicU32,
    /// The key its agents seal with (the anonymous one unless [`Master::connect_keyed`]).
    key: agent_nostd_core::auth::MessageKey,
}

/// Opens an agent's frame: its message, once its tag verifies under the anonymous key with the
/// boot its registration stated (the frame's own, for a registration).
fn open_frame(
    agent: &str,
    payload: &[u8],
    boots: &Mutex<HashMap<String, u32>>,
    key: &agent_nostd_core::auth::MessageKey,
) -> Result<AgentMsg, String> {
    use agent_nostd_core::frame::{Binding, Direction, Frame, WILL_SEQ};
    let frame = Frame::split(payload, Direction::Up).map_err(|e| e.to_string())?;
    let msg = AgentMsg::decode(frame.message).map_err(|e| e.to_string())?;
    let (boot, seq) = match &msg {
        AgentMsg::Register(info) | AgentMsg::ReRegister(ReRegister { info, .. }) => {
            (info.boot, info.seq)
        }
        AgentMsg::Gone { .. } => (
            boots.lock().unwrap().get(agent).copied().unwrap_or(0),
            WILL_SEQ,
        ),
        _ => {
            let boot = boots.lock().unwrap().get(agent).copied().unwrap_or(0);
            (boot, frame.counter)
        }
    };
    let binding = Binding {
        direction: Direction::Up,
        agent_id: agent,
        boot,
    };
    if !frame.verifies(key, &binding, seq) {
        return Err("the tag does not verify".into());
    }
    if matches!(msg, AgentMsg::Register(_) | AgentMsg::ReRegister(_)) {
        boots.lock().unwrap().insert(agent.to_owned(), boot);
    }
    Ok(msg)
}

impl Master {
    pub async fn connect(port: u16) -> Master {
        Self::connect_keyed(port, agent_nostd_core::auth::MessageKey::anonymous()).await
    }

    /// A scripted master whose agents seal their frames with `key` (one with a credential).
    pub async fn connect_keyed(port: u16, key: agent_nostd_core::auth::MessageKey) -> Master {
        let reader_key = key.clone();
        let mut opts = MqttOptions::new("test-master", "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_max_packet_size(64 * 1024, 64 * 1024);
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let (tx, rx) = mpsc::channel(1024);
        let (gtx, garbage) = mpsc::channel(1024);
        let (ready_tx, mut ready) = mpsc::channel(1);
        let boots = Arc::new(Mutex::new(HashMap::new()));
        let reader_boots = boots.clone();
        let sub = client.clone();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for kind in [
                            AgentTopic::Register,
                            AgentTopic::Report,
                            AgentTopic::Status,
                            AgentTopic::Pong,
                            AgentTopic::Will,
                        ] {
                            sub.subscribe(kind.filter().as_str(), QoS::AtLeastOnce)
                                .await
                                .unwrap();
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.try_send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let Some(Topic::Agent { id, .. }) = topic::parse(&p.topic) else {
                            continue;
                        };
                        match open_frame(id, &p.payload, &reader_boots, &reader_key) {
                            Ok(msg) => {
                                let _ = tx
                                    .send(FromAgent {
                                        agent: id.to_owned(),
                                        msg,
                                    })
                                    .await;
                            }
                            Err(e) => {
                                let _ = gtx.send(format!("{}: {e}", p.topic)).await;
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready.recv())
            .await
            .expect("the test master subscribed");
        Master {
            client,
            rx,
            garbage,
            epoch: 1,
            boots,
            down_seq: AtomicU32::new(1),
            key,
        }
    }

    /// Sends `msg` to `agent` as a frame sealed for the boot it registered with.
    pub async fn send(&self, agent: &str, msg: &MasterMsg) {
        use agent_nostd_core::frame::{encode_sealed, Binding, Direction};
        let boot = self.boots.lock().unwrap().get(agent).copied().unwrap_or(0);
        let binding = Binding {
            direction: Direction::Down,
            agent_id: agent,
            boot,
        };
        let seq = self.down_seq.fetch_add(1, Ordering::Relaxed);
        let mut buf = vec![0; MAX_DOWN_FRAME_LEN];
        let envelope = msg.clone().from_epoch(self.epoch);
        let n = encode_sealed(&envelope, &self.key, &binding, seq, &mut buf).unwrap();
        self.client
            .publish(
                topic::agent(agent, AgentTopic::Cmd).as_str(),
                QoS::AtLeastOnce,
                false,
                buf[..n].to_vec(),
            )
            .await
            .unwrap();
    }

    pub async fn publish_raw(&self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }

    /// The next agent message for which `pick` returns `Some`, skipping others, within `secs`.
    pub async fn expect<T>(
        &mut self,
        secs: u64,
        mut pick: impl FnMut(&FromAgent) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let msg = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .expect("the expected agent message did not come in time")
                .expect("the test master stopped");
            if let Some(t) = pick(&msg) {
                return t;
            }
        }
    }

    /// Waits for a (re)registration from `agent` and acknowledges it with `epoch`.
    pub async fn accept_registration(&mut self, agent: &str, epoch: u64) -> AgentMsg {
        let msg = self
            .expect(20, |m| {
                (m.agent == agent
                    && matches!(m.msg, AgentMsg::Register(_) | AgentMsg::ReRegister(_)))
                .then(|| m.msg.clone())
            })
            .await;
        self.epoch = epoch;
        self.send(
            agent,
            &MasterMsg::RegisterAck(RegisterAck {
                agent_id: id(agent).unwrap(),
            }),
        )
        .await;
        msg
    }

    /// Waits for the next status update of `task` and acknowledges it.
    pub async fn next_status(&mut self, agent: &str, task: &str, secs: u64) -> StatusUpdate {
        let u = self
            .expect(secs, |m| match &m.msg {
                AgentMsg::Status(u) if m.agent == agent && u.task_id == task => Some(u.clone()),
                _ => None,
            })
            .await;
        self.send(
            agent,
            &MasterMsg::StatusAck(StatusAck {
                framework_id: u.framework_id.clone(),
                task_id: u.task_id.clone(),
                update_id: u.update_id,
            }),
        )
        .await;
        u
    }

    /// Waits until `task` reaches `state`, acknowledging every update on the way.
    pub async fn wait_state(
        &mut self,
        agent: &str,
        task: &str,
        state: TaskState,
        secs: u64,
    ) -> StatusUpdate {
        loop {
            let u = self.next_status(agent, task, secs).await;
            if u.state == state {
                return u;
            }
            assert!(
                !u.state.is_terminal(),
                "{task} ended {:?} ({}), not {state:?}",
                u.state,
                u.message
            );
        }
    }
}

pub fn run_task(task: &str, argv: &[&str], cpu: u32, mem: u32) -> MasterMsg {
    let mut args = heapless::Vec::new();
    for a in argv {
        args.push(heapless::String::try_from(*a).unwrap()).unwrap();
    }
    MasterMsg::RunTask(RunTask {
        framework_id: id("fw-1").unwrap(),
        task_id: id(task).unwrap(),
        argv: args,
        env: heapless::Vec::new(),
        resources: agent_nostd_core::Resources::new(cpu, mem, 0),
        pids_max: 0,
        artifacts: heapless::Vec::new(),
    })
}

/// The real agent binary, killed when dropped.
pub struct AgentProcess {
    pub child: Child,
    pub work_dir: PathBuf,
}

impl AgentProcess {
    pub fn start(agent_id: &str, port: u16, work_dir: &Path, extra: &[&str]) -> AgentProcess {
        // Set for integration tests only: examples compile this module too and use `start_exe`.
        #[allow(clippy::option_env_unwrap)]
        let exe =
            Path::new(option_env!("CARGO_BIN_EXE_bramble-agent").expect("built by cargo test"));
        Self::start_exe(exe, agent_id, port, work_dir, extra)
    }

    pub fn start_exe(
        exe: &Path,
        agent_id: &str,
        port: u16,
        work_dir: &Path,
        extra: &[&str],
    ) -> AgentProcess {
        let child = Command::new(exe)
            .args(["--agent-id", agent_id])
            .arg("--broker")
            .arg(format!("mqtt://127.0.0.1:{port}"))
            .arg("--work-dir")
            .arg(work_dir)
            // Tasks run as the test's own user: as root, the default `bramble` user need not
            // exist, and could not enter a sandbox below a private temporary directory.
            .arg("--run-as")
            .arg(bramble_agent::tasks::user::current_user_name())
            .args(extra)
            .env("BRAMBLE_LOG", "info")
            .stdin(Stdio::null())
            .spawn()
            .expect("the agent binary starts");
        AgentProcess {
            child,
            work_dir: work_dir.to_owned(),
        }
    }

    /// SIGKILL: the agent dies without a word, as on a power cut of the agent alone.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill_hard();
    }
}
