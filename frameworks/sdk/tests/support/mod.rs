//! Test support, shared by the SDK's and the frameworks' tests (they include this file with
//! `#[path]`): an in-process MQTT broker (rumqttd) on a free loopback port, with the small memory
//! settings an edge broker wants (copied from the agent's test support); a scripted master that
//! speaks `bramble_sdk::protocol`; and a scripted cluster that runs accepted tasks as local
//! processes with the environment an agent gives them.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bramble_sdk::protocol::{self, AgentDescription, Attribute, Call, Event, Offer, StatusUpdate};
use bramble_sdk::{Reason, Resources, TaskState};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

/// How long a test waits for anything.
pub const WAIT: Duration = Duration::from_secs(30);

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

/// A scripted master: every call it receives, with its topic.
pub struct Master {
    pub client: AsyncClient,
    rx: mpsc::Receiver<(String, Call)>,
    /// The epoch events go out with: the last `Registered`'s (1 before any).
    epoch: Arc<std::sync::atomic::AtomicU64>,
    /// Each client's latest registration's tag: its events are sealed in the session it opens.
    tags: Arc<std::sync::Mutex<HashMap<String, Vec<u8>>>>,
    /// The number of the next event.
    seq: std::sync::atomic::AtomicU32,
}

/// The call a framework's frame carries (and, for a registration, the frame's tag); the test
/// master takes the frameworks at their word (they use the anonymous key). A call in a session
/// is decrypted in `session`.
fn open_call(payload: &[u8], client: &str, session: u32) -> Option<(Call, Vec<u8>)> {
    use protocol::frame::{binding, decrypt, Direction, Frame, MessageKey};
    if let Ok(frame) = Frame::split(payload, Direction::FrameworkUp) {
        if let Ok(call) = Call::decode(frame.message) {
            return Some((call, frame.tag().to_vec()));
        }
    }
    let mut payload = payload.to_vec();
    let b = binding(Direction::FrameworkUp, client, session);
    decrypt(&MessageKey::anonymous(), &b, &mut payload);
    let frame = Frame::split(&payload, Direction::FrameworkUp).ok()?;
    Some((Call::decode(frame.message).ok()?, frame.tag().to_vec()))
}

impl Master {
    pub async fn connect(port: u16) -> Master {
        let opts = MqttOptions::new("test-master", "127.0.0.1", port);
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let (tx, rx) = mpsc::channel(256);
        let (ready_tx, mut ready) = mpsc::channel(1);
        let sub = client.clone();
        let tags: Arc<std::sync::Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let reader_tags = tags.clone();
        let epoch = Arc::new(std::sync::atomic::AtomicU64::new(1));
        let reader_epoch = epoch.clone();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                        for f in protocol::MASTER_FILTERS {
                            sub.try_subscribe(f, QoS::AtLeastOnce).unwrap();
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.try_send(());
                    }
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                        let client = protocol::parse_topic(&p.topic).map(|(_, c)| c.to_owned());
                        let client = client.unwrap_or_default();
                        let tag = reader_tags.lock().unwrap().get(&client).cloned();
                        let epoch = reader_epoch.load(std::sync::atomic::Ordering::Relaxed);
                        let session = protocol::frame::session_of(&tag.unwrap_or_default(), epoch);
                        if let Some((call, tag)) = open_call(&p.payload, &client, session) {
                            if let Call::Register(_) | Call::ReRegister(_) = &call {
                                reader_tags.lock().unwrap().insert(client, tag);
                            }
                            let _ = tx.send((p.topic.clone(), call)).await;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(WAIT, ready.recv())
            .await
            .expect("the test master subscribed");
        Master {
            client,
            rx,
            epoch,
            tags,
            seq: std::sync::atomic::AtomicU32::new(1),
        }
    }

    pub async fn expect(&mut self) -> (String, Call) {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("a call came in time")
            .expect("the master runs")
    }

    pub async fn send_raw(&self, client: &str, payload: Vec<u8>) {
        self.client
            .publish(
                protocol::event_topic(client),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await
            .unwrap();
    }

    /// Sends `event` as the master of the epoch of the last `Registered` sent (1 before any).
    pub async fn send(&self, client: &str, event: &Event) {
        use std::sync::atomic::Ordering;
        if let Event::Registered { master_epoch, .. } = event {
            self.epoch.store(*master_epoch, Ordering::Relaxed);
        }
        let epoch = self.epoch.load(Ordering::Relaxed).max(1);
        let tag = self
            .tags
            .lock()
            .unwrap()
            .get(client)
            .cloned()
            .unwrap_or_default();
        let payload = protocol::frame::seal(
            event.encode_from(epoch),
            &protocol::frame::MessageKey::anonymous(),
            protocol::frame::Direction::FrameworkDown,
            client,
            protocol::frame::session_of(&tag, epoch),
            self.seq.fetch_add(1, Ordering::Relaxed),
        );
        self.send_raw(client, payload).await;
    }
}

/// A board of the scripted cluster.
pub fn board(agent_id: &str, cpu: u32, mem: u32, attributes: &[(&str, &str)]) -> Offer {
    Offer {
        offer_id: 0,
        agent: Arc::new(AgentDescription {
            agent_id: agent_id.into(),
            hostname: agent_id.into(),
            arch: "x86_64".into(),
            attributes: attributes
                .iter()
                .map(|(k, v)| Attribute {
                    key: (*k).into(),
                    value: (*v).into(),
                })
                .collect(),
        }),
        resources: Resources::new(cpu, mem, 0),
    }
}

/// What the scripted cluster saw.
#[derive(Debug, Default)]
pub struct ClusterLog {
    pub calls: Vec<Call>,
    /// (task id, agent id, exit code) of every task that ended on its own.
    pub exits: Vec<(String, String, Option<i32>)>,
}

/// Plays master and agents for the framework behind `client`: answers its registration, offers
/// every board once (and again after each revive, minus what runs there), runs each accepted task
/// as a local process (`argv[0]` replaced by `exe`) with the environment an agent gives, reports
/// RUNNING and then FINISHED or FAILED, and returns at the framework's teardown, killing what still
/// runs.
pub async fn serve_cluster(
    master: &mut Master,
    port: u16,
    client: &str,
    boards: &[Offer],
    exe: &str,
) -> ClusterLog {
    let mut log = ClusterLog::default();
    let (_, call) = master.expect().await;
    assert!(matches!(call, Call::Register(_)), "{call:?}");
    master
        .send(
            client,
            &Event::Registered {
                framework_id: "e2e-1".into(),
                master_epoch: 1,
            },
        )
        .await;
    let mut next_offer = 1u64;
    let mut offered: HashMap<u64, Offer> = HashMap::new();
    // Task id → (agent, resources, dropping it kills the task).
    let mut running: HashMap<String, (String, Resources, tokio::sync::oneshot::Sender<()>)> =
        HashMap::new();
    let (exit_tx, mut exit_rx) = mpsc::channel::<(String, Option<i32>)>(64);
    type Running = HashMap<String, (String, Resources, tokio::sync::oneshot::Sender<()>)>;
    let mut make_offers = |running: &Running, offered: &mut HashMap<u64, Offer>| {
        let mut out = Vec::new();
        for b in boards {
            let used = running
                .values()
                .filter(|(a, _, _)| *a == b.agent.agent_id)
                .fold(Resources::ZERO, |acc, (_, r, _)| acc.saturating_add(r));
            let mut o = b.clone();
            o.offer_id = next_offer;
            next_offer += 1;
            o.resources = b.resources.saturating_sub(&used);
            offered.insert(o.offer_id, o.clone());
            out.push(o);
        }
        out
    };
    let first = make_offers(&running, &mut offered);
    master.send(client, &Event::Offers(first)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        tokio::select! {
            got = tokio::time::timeout_at(deadline, master.rx.recv()) => {
                let (_, call) = got.expect("the framework finished in time").expect("the master runs");
                log.calls.push(call.clone());
                match call {
                    Call::Accept(a) => {
                        let offer = offered.remove(&a.offer_id).expect("accepted a known offer");
                        for t in a.tasks {
                            let agent = offer.agent.agent_id.clone();
                            let mut cmd = tokio::process::Command::new(exe);
                            cmd.args(&t.argv[1..])
                                .env_clear()
                                .envs(t.env.iter().cloned())
                                .env("BRAMBLE_BROKER", format!("mqtt://127.0.0.1:{port}"))
                                .env("BRAMBLE_TASK_ID", &t.task_id)
                                .env("BRAMBLE_FRAMEWORK_ID", "e2e-1")
                                .env("BRAMBLE_AGENT_ID", &agent)
                                .env("BRAMBLE_LOG", "warn")
                                .stdin(Stdio::null())
                                .kill_on_drop(true);
                            let mut child = cmd.spawn().expect("the executor starts");
                            let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
                            let exits = exit_tx.clone();
                            let id = t.task_id.clone();
                            tokio::spawn(async move {
                                tokio::select! {
                                    status = child.wait() => {
                                        let code = status.ok().and_then(|s| s.code());
                                        let _ = exits.send((id, code)).await;
                                    }
                                    _ = kill_rx => {
                                        let _ = child.kill().await;
                                    }
                                }
                            });
                            running.insert(t.task_id.clone(), (agent.clone(), t.resources, kill_tx));
                            master.send(client, &Event::Update(StatusUpdate {
                                task_id: t.task_id.clone(),
                                agent_id: Some(agent),
                                state: TaskState::Running,
                                reason: Reason::None,
                                message: String::new(),
                                update_id: None,
                            })).await;
                        }
                    }
                    Call::Decline(d) => {
                        for id in d.offer_ids {
                            offered.remove(&id);
                        }
                    }
                    Call::Revive => {
                        let again = make_offers(&running, &mut offered);
                        master.send(client, &Event::Offers(again)).await;
                    }
                    Call::Teardown => {
                        // A grace period, as a kill gives: tasks that end by themselves in it are
                        // logged; the rest are killed when their senders drop.
                        let grace = tokio::time::Instant::now() + Duration::from_secs(3);
                        while !running.is_empty() {
                            match tokio::time::timeout_at(grace, exit_rx.recv()).await {
                                Ok(Some((id, code))) => {
                                    if let Some((agent, _, _)) = running.remove(&id) {
                                        log.exits.push((id, agent, code));
                                    }
                                }
                                _ => break,
                            }
                        }
                        return log;
                    }
                    _ => {}
                }
            }
            Some((id, code)) = exit_rx.recv() => {
                let Some((agent, _, _)) = running.remove(&id) else { continue };
                log.exits.push((id.clone(), agent.clone(), code));
                master.send(client, &Event::Update(StatusUpdate {
                    task_id: id,
                    agent_id: Some(agent),
                    state: if code == Some(0) { TaskState::Finished } else { TaskState::Failed },
                    reason: Reason::Exited { code: code.unwrap_or(-1) },
                    message: String::new(),
                    update_id: None,
                })).await;
            }
        }
    }
}
