//! Simulated agents: each one a real [`AgentCore`] at its default intervals on its own MQTT
//! connection (client id `bramble-agent-ID`, persistent session, the core's last will), driven
//! like `agent/src/driver.rs` drives it, but with no processes: a launch is reported started at
//! once and exited 0 after the task time (a kill, exited by SIGTERM at once).
//!
//! One tokio task per agent: a task is a few hundred bytes, and an idle agent costs a timer and a
//! socket. What every agent saw is summed in [`Counters`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_nostd_core::agent::{
    Action, AgentCore, Config as CoreConfig, Exit, LocalEvent, ResourceSample, TransmitBuf,
};
use agent_nostd_core::auth::MessageKey;
use agent_nostd_core::ids::TaskKey;
use agent_nostd_core::topic::{self, AgentTopic};
use agent_nostd_core::wire::{AgentInfo, Attribute, MAX_DOWN_FRAME_LEN, MAX_UP_FRAME_LEN};
use agent_nostd_core::Resources;
use bramble_agent::driver::{last_will, seed, truncated};
use bramble_mqtt::{BrokerAddr, ClientConfig, Session, SessionEvent};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What every simulated agent offers: a Raspberry Pi 4 (4 cores, 4 GiB, 16 GiB of SD card).
pub const BOARD: Resources = Resources::new(4000, 4096, 16 * 1024);

/// How often a real agent samples its board (`reports.sample_secs`' default).
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// What all the simulated agents saw, summed.
#[derive(Debug, Default)]
pub struct Counters {
    /// ConnAcks, the first of each agent included.
    pub connacks: AtomicU64,
    /// ConnAcks after an agent's first: reconnections.
    pub reconnects: AtomicU64,
    /// Connection attempts that failed or connections that dropped.
    pub lost: AtomicU64,
    /// Agents whose core holds an acknowledged registration now.
    pub registered: AtomicU64,
    /// Publishes the request queue had no room for (the core resends what matters).
    pub deferred: AtomicU64,
    /// Publishes handed to the client.
    pub published: AtomicU64,
    /// Messages received.
    pub received: AtomicU64,
    /// Messages the core refused (bad frame, wrong topic, …).
    pub refused: AtomicU64,
    /// Launch actions (tasks "started").
    pub launches: AtomicU64,
}

impl Counters {
    /// The current value of `field`.
    pub fn get(field: &AtomicU64) -> u64 {
        field.load(Ordering::Relaxed)
    }
}

/// Starts `n` simulated agents (`sim-00000`, …) against `broker` on the current runtime.
/// Each task finishes `task_time` after its launch.
pub fn spawn_all(
    n: usize,
    broker: &BrokerAddr,
    counters: &Arc<Counters>,
    task_time: Duration,
) -> Vec<JoinHandle<()>> {
    // Distinct boots, above any a previous run of the bench used for the same ids.
    let base_boot = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs() as u32);
    (0..n)
        .map(|i| {
            let broker = broker.clone();
            let counters = Arc::clone(counters);
            let boot = base_boot.wrapping_add(i as u32).max(1);
            tokio::spawn(run_agent(i, boot, broker, counters, task_time))
        })
        .collect()
}

/// The registration of simulated agent `id`.
fn info(id: &str, boot: u32) -> AgentInfo {
    let mut attributes = heapless::Vec::new();
    let _ = attributes.push(Attribute {
        key: truncated("isolation"),
        value: truncated("none"),
    });
    AgentInfo {
        agent_id: truncated(id),
        hostname: truncated(id),
        arch: truncated("aarch64"),
        board: truncated("Raspberry Pi 4 Model B (simulated)"),
        total: BOARD,
        attributes,
        connection: 0,
        boot,
        seq: 0,
        to_epoch: 0,
    }
}

/// One agent, until its task is aborted (the runtime is dropped).
async fn run_agent(
    index: usize,
    boot: u32,
    broker: BrokerAddr,
    counters: Arc<Counters>,
    task_time: Duration,
) {
    let id = format!("sim-{index:05}");
    let key = MessageKey::anonymous();
    let config = CoreConfig {
        jitter_seed: seed(&id),
        ..CoreConfig::default()
    };
    let mut core = match AgentCore::new(config, info(&id, boot), key.clone(), 0) {
        Ok(core) => core,
        Err(e) => panic!("simulated agent {id}: {e:?}"),
    };
    let mqtt = ClientConfig {
        inflight: 16,
        request_capacity: 64,
        max_packet: (bramble_mqtt::MAX_PACKET, MAX_DOWN_FRAME_LEN + 256),
        ..ClientConfig::new(format!("bramble-agent-{id}"), broker)
    };
    let filters = vec![
        topic::agent(&id, AgentTopic::Cmd).as_str().to_owned(),
        topic::MASTER_HELLO.to_owned(),
    ];
    // Each connection's last will names it, as the real driver's do.
    let connection = Arc::new(AtomicU64::new(0));
    let named = Arc::clone(&connection);
    let will_id = id.clone();
    let mut attempt = 0u32;
    let mut session = Session::new("agent", mqtt, filters).with_will(move || {
        attempt = attempt.wrapping_add(1);
        let n = (seed(&will_id) ^ attempt.wrapping_mul(0x9E37_79B9)).max(1);
        named.store(u64::from(n), Ordering::Relaxed);
        Some(last_will(&will_id, &key, boot, n))
    });
    let client = session.client().clone();
    let started = Instant::now();
    let now = || started.elapsed().as_millis() as u64;
    let mut buf: Box<TransmitBuf> = Box::new([0; MAX_UP_FRAME_LEN]);
    let mut received: Vec<u8> = Vec::with_capacity(MAX_DOWN_FRAME_LEN);
    // Running tasks, by when they exit (a constant task time keeps this in order).
    let mut exits: VecDeque<(Instant, TaskKey)> = VecDeque::new();
    let mut connected_before = false;
    let mut registered = false;
    // Spread the samples of many agents over the period, as boards started at random would.
    let mut next_sample = started + SAMPLE_EVERY.mul_f64((index % 97) as f64 / 97.0);
    loop {
        // Publish what the core wants sent, then carry out its actions, until neither is left.
        loop {
            let mut any = false;
            while let Some(t) = core.poll_transmit(now(), &mut buf) {
                any = true;
                let qos = match t.qos {
                    topic::QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
                    topic::QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
                };
                let payload = buf[..t.len].to_vec();
                match client.try_publish(t.topic.as_str(), qos, t.retain, payload) {
                    Ok(()) => counters.published.fetch_add(1, Ordering::Relaxed),
                    Err(_) => counters.deferred.fetch_add(1, Ordering::Relaxed),
                };
            }
            while let Some(action) = core.poll_action() {
                any = true;
                let key = action.key();
                match action {
                    Action::Launch { .. } => {
                        counters.launches.fetch_add(1, Ordering::Relaxed);
                        let event = LocalEvent::Started {
                            framework_id: &key.framework_id,
                            task_id: &key.task_id,
                        };
                        let _ = core.handle_event(now(), event);
                        exits.push_back((Instant::now() + task_time, key));
                    }
                    Action::Signal { .. } => {
                        if let Some(i) = exits.iter().position(|(_, k)| *k == key) {
                            exits.remove(i);
                            let event = LocalEvent::Exited {
                                framework_id: &key.framework_id,
                                task_id: &key.task_id,
                                exit: Exit::Signal(15),
                            };
                            let _ = core.handle_event(now(), event);
                        }
                    }
                    Action::Release { .. } => {}
                }
            }
            if !any {
                break;
            }
        }
        if core.is_registered() != registered {
            registered = core.is_registered();
            if registered {
                counters.registered.fetch_add(1, Ordering::Relaxed);
            } else {
                counters.registered.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let core_wake = core
            .poll_timeout()
            .map(|t| started + Duration::from_millis(t));
        let exit_wake = exits.front().map(|(at, _)| *at);
        let wake = [core_wake, exit_wake, Some(next_sample)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_sample);
        tokio::select! {
            event = session.poll() => match event {
                SessionEvent::Connected => {
                    counters.connacks.fetch_add(1, Ordering::Relaxed);
                    if connected_before {
                        counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    connected_before = true;
                    let connection = connection.load(Ordering::Relaxed) as u32;
                    core.handle_connected(now(), connection);
                }
                SessionEvent::Publish(p) => {
                    counters.received.fetch_add(1, Ordering::Relaxed);
                    received.clear();
                    received.extend_from_slice(&p.payload);
                    if core.handle_bytes(now(), &p.topic, &mut received).is_err() {
                        counters.refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                SessionEvent::Lost { .. } => {
                    counters.lost.fetch_add(1, Ordering::Relaxed);
                    core.handle_disconnected(now());
                }
                _ => {}
            },
            () = tokio::time::sleep_until(wake) => {
                let at = Instant::now();
                core.handle_timeout(now());
                while exits.front().is_some_and(|(due, _)| *due <= at) {
                    let Some((_, key)) = exits.pop_front() else { break };
                    let event = LocalEvent::Exited {
                        framework_id: &key.framework_id,
                        task_id: &key.task_id,
                        exit: Exit::Code(0),
                    };
                    let _ = core.handle_event(now(), event);
                }
                if next_sample <= at {
                    next_sample = at + SAMPLE_EVERY;
                    let sample = ResourceSample {
                        free: BOARD.saturating_sub(&core.allocated()),
                        soc_temp_decidegrees: Some(450),
                        throttled: 0,
                    };
                    core.handle_resource_sample(now(), sample);
                }
            }
        }
    }
}
