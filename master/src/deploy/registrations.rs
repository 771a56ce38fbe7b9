//! Watching the broker for agents' registrations, so `bramble deploy` knows when a board it
//! installed came up.

use std::collections::BTreeMap;
use std::time::Duration;

use agent_nostd_core::topic::{self, AgentTopic, Topic};
use bramble_mqtt::{Backoff, Session, SessionEvent};
use tokio::sync::watch;
use tracing::debug;

use super::*;

/// The most distinct agent ids the registration watcher remembers.
pub(super) const MAX_WATCHED_IDS: usize = 4096;

/// Registrations seen since the watch began: agent id → how many.
pub(super) type Seen = BTreeMap<String, u64>;

/// Subscribes to every agent's register topic and counts registrations per id. Returns once the
/// subscription is acknowledged (within `timeout`), so no later registration is missed.
pub(super) async fn watch_registrations(
    broker: Brokers,
    timeout: Duration,
    login: Option<bramble_mqtt::Login>,
) -> Result<(watch::Receiver<Seen>, tokio::task::JoinHandle<()>), String> {
    let config = bramble_mqtt::ClientConfig {
        clean_session: true,
        login,
        request_capacity: 16,
        ..bramble_mqtt::ClientConfig::new(format!("bramble-deploy-{}", std::process::id()), broker)
    };
    let filter = AgentTopic::Register.filter().as_str().to_owned();
    // The watch lasts one deploy: it retries sooner than long-lived clients do.
    let mut session = Session::new("deploy", config, vec![filter]).with_backoff(Backoff::new(
        Duration::from_millis(200),
        Duration::from_secs(5),
    ));
    let (seen_tx, seen_rx) = watch::channel(Seen::new());
    let (ready_tx, mut ready_rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        loop {
            match session.poll().await {
                SessionEvent::SubAck => {
                    let _ = ready_tx.send(true);
                }
                SessionEvent::Publish(p) => {
                    if let Some(Topic::Agent {
                        id,
                        kind: AgentTopic::Register,
                    }) = topic::parse(&p.topic)
                    {
                        debug!(id, "registration seen");
                        seen_tx.send_modify(|seen| {
                            if seen.len() < MAX_WATCHED_IDS || seen.contains_key(id) {
                                *seen.entry(id.to_owned()).or_default() += 1;
                            }
                        });
                    }
                }
                _ => {}
            }
        }
    });
    let ready = tokio::time::timeout(timeout, ready_rx.wait_for(|ready| *ready))
        .await
        .is_ok_and(|r| r.is_ok());
    if ready {
        Ok((seen_rx, task))
    } else {
        task.abort();
        Err(format!("no subscription within {} s", timeout.as_secs()))
    }
}
