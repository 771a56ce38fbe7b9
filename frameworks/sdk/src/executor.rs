//! The executor side: what runs inside a task and talks to its scheduler through the broker.
//!
//! The agent starts every task with `BRAMBLE_BROKER` (`mqtt://host:port`, or a comma list of the
//! brokers the agent was given, which the executor fails over between), `BRAMBLE_TASK_ID`,
//! `BRAMBLE_FRAMEWORK_ID`, `BRAMBLE_AGENT_ID` and `BRAMBLE_SANDBOX`; the scheduler driver adds
//! `BRAMBLE_FRAMEWORK_CLIENT`. [`Executor::connect_from_env`] reads them, connects (client id
//! `bramble-exec-{client}-{task}`, clean session: a finished task leaves nothing behind in the
//! broker), subscribes to the task's exec topic and returns once the subscription is acknowledged,
//! so nothing the scheduler sends after the executor's first message is missed.
//!
//! The connection is polled by a spawned task; [`Executor::send_message`] hands it a QoS 1 publish
//! and waits for the PUBACK, so a task may exit right after. Incoming messages wait in a bounded
//! queue ([`INCOMING_CAPACITY`]); beyond it they are dropped with a warning.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use bramble_mqtt::{Backoff, Session, SessionEvent};
use rumqttc::{AsyncClient, Event as MqttEvent, Outgoing as MqttOutgoing, Packet};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use agent_nostd_core::ids::validate_id;

use crate::broker::Brokers;
use crate::error::SdkError;
use crate::messages::{exec_topic, message_topic, FrameworkMessage, MAX_MESSAGE_DATA};
use crate::scheduler::FRAMEWORK_CLIENT_ENV;

/// How many messages from the scheduler wait for [`Executor::recv_message`] before more are dropped.
pub const INCOMING_CAPACITY: usize = 64;
/// How long [`Executor::connect`] waits for the broker.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`Executor::send_message`] waits for the broker's PUBACK.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Delivery guarantee of a [`Executor::publish_json`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// QoS 0: fire and forget (readings).
    AtMostOnce,
    /// QoS 1: retried until the broker acknowledges (alerts).
    AtLeastOnce,
}

/// What a task learns from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorEnv {
    /// The brokers (`BRAMBLE_BROKER`), tried in order.
    pub broker: Brokers,
    /// The scheduler's client name (`BRAMBLE_FRAMEWORK_CLIENT`).
    pub client: String,
    /// This task's id (`BRAMBLE_TASK_ID`).
    pub task_id: String,
    /// The agent running the task (`BRAMBLE_AGENT_ID`), if set.
    pub agent_id: Option<String>,
    /// The framework id (`BRAMBLE_FRAMEWORK_ID`), if set.
    pub framework_id: Option<String>,
    /// The task's sandbox directory (`BRAMBLE_SANDBOX`), if set.
    pub sandbox: Option<PathBuf>,
}

impl ExecutorEnv {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, SdkError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads variables through `get` (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SdkError> {
        let need = |name: &'static str| {
            get(name)
                .filter(|v| !v.is_empty())
                .ok_or(SdkError::MissingEnv(name))
        };
        let id = |name: &'static str| -> Result<String, SdkError> {
            let v = need(name)?;
            validate_id(&v).map_err(|e| SdkError::BadEnv {
                name,
                reason: format!("`{v}` is not a valid id ({e:?})"),
            })?;
            Ok(v)
        };
        let broker_url = need("BRAMBLE_BROKER")?;
        let broker = Brokers::parse(&broker_url).map_err(|e| SdkError::BadEnv {
            name: "BRAMBLE_BROKER",
            reason: e.to_string(),
        })?;
        // The framework's login, handed on by its scheduler (BRAMBLE_USERNAME and
        // BRAMBLE_PASSWORD), beats whatever the broker URLs carry.
        if broker.any_tls() {
            // The system's roots, or the CA file in BRAMBLE_CA_FILE if the task has one.
            let files = bramble_mqtt::tls::TlsFiles {
                ca_file: get(bramble_mqtt::tls::CA_FILE_ENV)
                    .filter(|f| !f.is_empty())
                    .map(PathBuf::from),
                ..Default::default()
            };
            bramble_mqtt::tls::configure(&files).map_err(|e| SdkError::BadEnv {
                name: "BRAMBLE_CA_FILE",
                reason: e.to_string(),
            })?;
        }
        let broker = bramble_mqtt::LoginSources::from_env(&get)
            .settle(broker)
            .map_err(|e| SdkError::BadEnv {
                name: "BRAMBLE_PASSWORD",
                reason: e.to_string(),
            })?;
        Ok(ExecutorEnv {
            broker,
            client: id(FRAMEWORK_CLIENT_ENV)?,
            task_id: id("BRAMBLE_TASK_ID")?,
            agent_id: get("BRAMBLE_AGENT_ID").filter(|v| !v.is_empty()),
            framework_id: get("BRAMBLE_FRAMEWORK_ID").filter(|v| !v.is_empty()),
            sandbox: get("BRAMBLE_SANDBOX")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        })
    }
}

enum Command {
    Publish {
        topic: String,
        qos: rumqttc::QoS,
        payload: Vec<u8>,
        /// Told when the broker acknowledged (QoS 1) or the publish was handed over (QoS 0).
        done: Option<oneshot::Sender<Result<(), SdkError>>>,
    },
    Disconnect,
}

/// A task's connection to its scheduler. See the module docs.
pub struct Executor {
    env: ExecutorEnv,
    commands: mpsc::Sender<Command>,
    incoming: mpsc::Receiver<Vec<u8>>,
    poller: JoinHandle<()>,
}

impl Executor {
    /// Connects with the environment the agent and the scheduler driver set.
    pub async fn connect_from_env() -> Result<Self, SdkError> {
        Self::connect(ExecutorEnv::from_env()?).await
    }

    /// Connects, subscribes to this task's exec topic and waits for the broker to acknowledge
    /// (at most [`CONNECT_TIMEOUT`]).
    pub async fn connect(env: ExecutorEnv) -> Result<Self, SdkError> {
        let config = bramble_mqtt::ClientConfig {
            clean_session: true,
            request_capacity: 64,
            ..bramble_mqtt::ClientConfig::new(
                format!("bramble-exec-{}-{}", env.client, env.task_id),
                env.broker.clone(),
            )
        };
        let (commands, commands_rx) = mpsc::channel(64);
        let (incoming_tx, incoming) = mpsc::channel(INCOMING_CAPACITY);
        let (ready_tx, ready_rx) = oneshot::channel();
        let exec = exec_topic(&env.client, &env.task_id);
        // An executor is short-lived: it retries sooner and more often than the default.
        let session = Session::new("executor", config, vec![exec.clone()]).with_backoff(
            Backoff::new(Duration::from_millis(200), Duration::from_secs(10)),
        );
        let client = session.client().clone();
        let poller = tokio::spawn(poll(
            client,
            session,
            exec,
            env.task_id.clone(),
            commands_rx,
            incoming_tx,
            ready_tx,
        ));
        match tokio::time::timeout(CONNECT_TIMEOUT, ready_rx).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(SdkError::Closed),
            Err(_) => {
                poller.abort();
                return Err(SdkError::Timeout("connecting to the broker"));
            }
        }
        info!(task = %env.task_id, client = %env.client, broker = %env.broker, "executor connected");
        Ok(Executor {
            env,
            commands,
            incoming,
            poller,
        })
    }

    /// The environment the executor runs in.
    pub fn env(&self) -> &ExecutorEnv {
        &self.env
    }

    /// Sends `data` to the scheduler (QoS 1) and waits for the broker's PUBACK (at most
    /// [`SEND_TIMEOUT`]): once this returns, the task may exit without losing it.
    pub async fn send_message(&self, data: Vec<u8>) -> Result<(), SdkError> {
        if data.len() > MAX_MESSAGE_DATA {
            return Err(SdkError::TooLarge {
                len: data.len(),
                max: MAX_MESSAGE_DATA,
            });
        }
        let payload = FrameworkMessage {
            task_id: self.env.task_id.clone(),
            data,
        }
        .encode();
        self.publish(
            message_topic(&self.env.client),
            rumqttc::QoS::AtLeastOnce,
            payload,
        )
        .await
    }

    /// The next message the scheduler sent this task, or `None` once the connection driver stopped.
    pub async fn recv_message(&mut self) -> Option<Vec<u8>> {
        self.incoming.recv().await
    }

    /// Publishes `value` as JSON on `topic` (not retained), for dashboards. With
    /// [`Delivery::AtLeastOnce`] it waits for the broker's PUBACK.
    pub async fn publish_json<T: Serialize>(
        &self,
        topic: &str,
        value: &T,
        delivery: Delivery,
    ) -> Result<(), SdkError> {
        let payload = serde_json::to_vec(value)?;
        let qos = match delivery {
            Delivery::AtMostOnce => rumqttc::QoS::AtMostOnce,
            Delivery::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        };
        self.publish(topic.to_owned(), qos, payload).await
    }

    async fn publish(
        &self,
        topic: String,
        qos: rumqttc::QoS,
        payload: Vec<u8>,
    ) -> Result<(), SdkError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Publish {
                topic,
                qos,
                payload,
                done: Some(tx),
            })
            .await
            .map_err(|_| SdkError::Closed)?;
        match tokio::time::timeout(SEND_TIMEOUT, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(SdkError::Closed),
            Err(_) => Err(SdkError::Timeout("waiting for the broker to acknowledge")),
        }
    }

    /// Disconnects cleanly (waiting at most a second for the DISCONNECT to go out).
    pub async fn close(mut self) {
        let _ = self.commands.send(Command::Disconnect).await;
        // Dropping `self` afterwards aborts the poller if it is still running.
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut self.poller).await;
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

type Waiter = oneshot::Sender<Result<(), SdkError>>;

/// Polls the connection (its session resubscribes on ConnAck), forwards exec messages, carries out
/// publishes and matches PUBACKs to their waiters.
async fn poll(
    client: AsyncClient,
    mut session: Session,
    exec: String,
    task_id: String,
    mut commands: mpsc::Receiver<Command>,
    incoming: mpsc::Sender<Vec<u8>>,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    // QoS 1 publishes handed to the client, in order, until the client gives them a packet id.
    let mut unassigned: VecDeque<Waiter> = VecDeque::new();
    let mut by_pkid: HashMap<u16, Waiter> = HashMap::new();
    let mut commands_open = true;
    let mut dropped = 0u64;
    loop {
        tokio::select! {
            cmd = commands.recv(), if commands_open => match cmd {
                Some(Command::Publish { topic, qos, payload, done }) => {
                    match client.try_publish(topic, qos, false, payload) {
                        Ok(()) if qos == rumqttc::QoS::AtMostOnce => {
                            if let Some(done) = done {
                                let _ = done.send(Ok(()));
                            }
                        }
                        Ok(()) => {
                            if let Some(done) = done {
                                unassigned.push_back(done);
                            }
                        }
                        Err(e) => {
                            if let Some(done) = done {
                                let _ = done.send(Err(e.into()));
                            }
                        }
                    }
                }
                Some(Command::Disconnect) => {
                    let _ = client.try_disconnect();
                }
                None => commands_open = false,
            },
            // The session resubscribes on each ConnAck and waits out its backoff after a loss.
            event = session.poll() => match event {
                SessionEvent::SubAck => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                SessionEvent::Publish(p) if p.topic == exec => {
                    match FrameworkMessage::decode(&p.payload) {
                        Ok(m) if m.task_id == task_id => {
                            if incoming.try_send(m.data).is_err() {
                                dropped += 1;
                                warn!(dropped, "executor inbox full: dropped a message from the scheduler");
                            }
                        }
                        Ok(m) => warn!(task = %m.task_id, "dropped a message for another task"),
                        Err(e) => warn!(len = p.payload.len(), "dropped a malformed message: {e}"),
                    }
                }
                SessionEvent::Publish(p) => {
                    warn!(topic = %p.topic, "dropped a message on an unexpected topic");
                }
                SessionEvent::Other(MqttEvent::Outgoing(MqttOutgoing::Publish(pkid))) if pkid != 0 => {
                    // A retransmission reuses a packet id that already has its waiter.
                    if let std::collections::hash_map::Entry::Vacant(slot) = by_pkid.entry(pkid) {
                        if let Some(w) = unassigned.pop_front() {
                            slot.insert(w);
                        }
                    }
                }
                SessionEvent::Other(MqttEvent::Incoming(Packet::PubAck(ack))) => {
                    if let Some(w) = by_pkid.remove(&ack.pkid) {
                        let _ = w.send(Ok(()));
                    }
                }
                SessionEvent::Disconnected => {
                    debug!("executor disconnected");
                    return;
                }
                SessionEvent::Connected | SessionEvent::Lost { .. } | SessionEvent::Other(_) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn the_executor_environment_is_read_from_the_bramble_variables() {
        let env = ExecutorEnv::from_lookup(lookup(&[
            ("BRAMBLE_BROKER", "mqtt://10.0.0.1:1884"),
            ("BRAMBLE_FRAMEWORK_CLIENT", "pi"),
            ("BRAMBLE_TASK_ID", "pi-0-0"),
            ("BRAMBLE_AGENT_ID", "pi4"),
        ]))
        .unwrap();
        assert_eq!(env.broker.first().port, 1884);
        assert_eq!(env.client, "pi");
        assert_eq!(env.task_id, "pi-0-0");
        assert_eq!(env.agent_id.as_deref(), Some("pi4"));
        assert_eq!(env.sandbox, None);
    }

    #[test]
    fn the_schedulers_login_in_the_environment_is_presented_to_every_broker() {
        let env = ExecutorEnv::from_lookup(lookup(&[
            ("BRAMBLE_BROKER", "mqtt://10.0.0.1:1884,mqtt://10.0.0.2"),
            ("BRAMBLE_FRAMEWORK_CLIENT", "pi"),
            ("BRAMBLE_TASK_ID", "pi-0-0"),
            ("BRAMBLE_USERNAME", "framework-pi"),
            ("BRAMBLE_PASSWORD", "s3cret"),
        ]))
        .unwrap();
        for addr in &env.broker {
            let login = addr.login.as_ref().unwrap();
            assert_eq!(login.username, "framework-pi");
            assert_eq!(login.password.expose(), "s3cret");
        }
        assert_eq!(env.broker.to_string().matches("s3cret").count(), 0);
    }

    #[test]
    fn the_broker_variable_may_list_several_brokers_to_fail_over_between() {
        let env = ExecutorEnv::from_lookup(lookup(&[
            ("BRAMBLE_BROKER", "mqtt://10.0.0.1:1884,mqtt://10.0.0.2"),
            ("BRAMBLE_FRAMEWORK_CLIENT", "pi"),
            ("BRAMBLE_TASK_ID", "pi-0-0"),
        ]))
        .unwrap();
        assert_eq!(
            env.broker.to_string(),
            "mqtt://10.0.0.1:1884,mqtt://10.0.0.2:1883"
        );
    }

    #[test]
    fn missing_or_bad_variables_are_named_in_the_error() {
        let err = ExecutorEnv::from_lookup(lookup(&[("BRAMBLE_BROKER", "mqtt://x")])).unwrap_err();
        assert!(
            err.to_string().contains("BRAMBLE_FRAMEWORK_CLIENT"),
            "{err}"
        );
        let err = ExecutorEnv::from_lookup(lookup(&[
            ("BRAMBLE_BROKER", "x:1"),
            ("BRAMBLE_FRAMEWORK_CLIENT", "pi"),
            ("BRAMBLE_TASK_ID", "t"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("BRAMBLE_BROKER"), "{err}");
        let err = ExecutorEnv::from_lookup(lookup(&[
            ("BRAMBLE_BROKER", "mqtt://x"),
            ("BRAMBLE_FRAMEWORK_CLIENT", "pi"),
            ("BRAMBLE_TASK_ID", "a/b"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("BRAMBLE_TASK_ID"), "{err}");
    }
}
