//! Standby masters: runs the [`Election`] on its own MQTT connection and the leader
//! ([`crate::driver`]'s core loop) only while this master leads.
//!
//! Each master has a name (`--name`, by default the host name) and two connections:
//! `bramble-master-{name}-election` carries its heartbeats and its last will (`gone`) on
//! `bramble/v1/master/peers/{name}` and reads its peers' and the retained hello;
//! `bramble-master-{name}` is the leader's, opened when it takes the lead and closed when it steps
//! down, with the dashboard's `offline` as its will. So a standby never says the cluster is
//! offline, and a SIGKILLed leader's peers hear its will at once.

use std::time::Duration;

use agent_nostd_core::topic::MASTER_HELLO;
use agent_nostd_core::wire::{MasterEnvelope, WireMessage};
use bramble_master_core::election::{
    Election, ElectionConfig, ElectionEvent, PEERS_FILTER, PEERS_PREFIX,
};
use bramble_master_core::status::FollowerStatus;
use bramble_master_core::Config;
use bramble_mqtt::{Session, SessionEvent};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::driver::{self, sleep_until, LeaderLink, MasterError, Snapshot, Stop};
use crate::epoch_file::EpochFile;
use crate::mqtt::Brokers;
use crate::web::{ElectionMetrics, WebState};

/// Who this master is in an election.
#[derive(Debug, Clone)]
pub struct Leadership {
    /// Its name, unique among the masters: 1–32 bytes of `A-Z a-z 0-9 . _ -`.
    pub name: String,
    /// A standby waits a whole lease after connecting before it may claim, and ranks after
    /// masters that are not standbys.
    pub standby: bool,
    /// The election's timings.
    pub election: ElectionConfig,
    /// The login of both its connections (the master principal's, from the credential store),
    /// if the broker wants one.
    pub login: Option<bramble_mqtt::Login>,
    /// The agents' message keys as the credential store has them now (`None`: the config's).
    pub principal_keys: Option<watch::Receiver<bramble_master_core::PrincipalKeys>>,
    /// Where the newest epoch is kept across restarts (`None`: not kept; the retained hello
    /// alone tells a restarted master what to start above).
    pub epoch_file: Option<EpochFile>,
}

impl Default for Leadership {
    /// Named after the host, not a standby, default timings.
    fn default() -> Self {
        Leadership {
            name: default_name(),
            standby: false,
            election: ElectionConfig::default(),
            login: None,
            principal_keys: None,
            epoch_file: None,
        }
    }
}

/// The host name, cut to a valid master name (`master` when there is none).
pub fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(32)
        .collect();
    if agent_nostd_core::ids::validate_id(&name).is_ok() {
        name
    } else {
        "master".to_owned()
    }
}

/// What the leader's task tells the election loop.
enum FromLeader {
    /// Agents obey this newer epoch (or none any more).
    Newer(Option<u64>),
    /// The leader stopped by itself.
    Ended(Result<Result<(), MasterError>, tokio::task::JoinError>),
}

/// The leader while this master leads.
struct Leader {
    stop: oneshot::Sender<Stop>,
    /// The epoch to lead under: the newest value wins, so no raise can be lost.
    epoch: watch::Sender<u64>,
    newer: watch::Receiver<Option<u64>>,
    task: JoinHandle<Result<(), MasterError>>,
}

/// Runs the master with standbys: takes part in the election until `shutdown`, leading when
/// elected. See the [module docs](self).
pub async fn run(
    config: Config,
    broker: Brokers,
    leadership: Leadership,
    snapshots: Option<watch::Sender<Snapshot>>,
    web: Option<WebState>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), MasterError> {
    config.validate()?;
    if agent_nostd_core::ids::validate_id(&leadership.name).is_err() {
        return Err(MasterError::BadName(leadership.name));
    }
    let mut election = Election::new(leadership.election, &leadership.name, leadership.standby);
    let will = election.last_will();
    let config_mqtt = bramble_mqtt::ClientConfig {
        clean_session: true,
        login: leadership.login.clone(),
        max_packet: (crate::mqtt::MAX_INCOMING, crate::mqtt::MAX_PACKET),
        last_will: Some(rumqttc::LastWill::new(
            will.topic,
            will.payload,
            rumqttc::QoS::AtLeastOnce,
            false,
        )),
        ..bramble_mqtt::ClientConfig::new(
            format!("bramble-master-{}-election", leadership.name),
            broker.clone(),
        )
    };
    let filters = vec![PEERS_FILTER.to_owned(), MASTER_HELLO.to_owned()];
    let mut session = Session::new("election", config_mqtt, filters);
    let client = session.client().clone();
    info!(
        name = %leadership.name,
        standby = leadership.standby,
        %broker,
        "master starting: {}",
        if leadership.standby { "a standby until the leader goes" } else { "leading unless another master does" }
    );
    let started = Instant::now();
    let now = || started.elapsed().as_millis() as u64;
    if let Some(stored) = leadership.epoch_file.as_ref().and_then(EpochFile::load) {
        // As if the retained hello had said it: a claim takes a term above it.
        election.handle_hello(now(), stored);
    }
    let mut leader: Option<Leader> = None;
    let followers = watch::Sender::new(Vec::new());
    tokio::pin!(shutdown);
    let outcome = 'run: loop {
        while let Some(t) = election.poll_transmit(now()) {
            // A heartbeat lost to a full request channel is sent again next second.
            let _ = client.try_publish(t.topic, rumqttc::QoS::AtMostOnce, false, t.payload);
        }
        while let Some(event) = election.poll_event() {
            match event {
                ElectionEvent::Lead { epoch } => {
                    // Kept before any message carries it.
                    if let Some(Err(e)) = leadership.epoch_file.as_ref().map(|f| f.store(epoch)) {
                        warn!(
                            "cannot store the epoch (a restart with its broker may reuse it): {e}"
                        );
                    }
                    match &leader {
                        Some(l) => {
                            l.epoch.send_replace(epoch);
                        }
                        None => {
                            leader = Some(start_leader(
                                &config,
                                &broker,
                                &leadership,
                                epoch,
                                followers.subscribe(),
                                snapshots.clone(),
                                web.clone(),
                            ));
                        }
                    }
                }
                ElectionEvent::Follow { newer } => {
                    info!(newer = format_args!("{newer:#x}"), "a newer master leads");
                    if let Some(l) = leader.take() {
                        if let Err(e) = stop_leader(l, Stop::StepDown).await {
                            break 'run Err(e);
                        }
                    }
                }
            }
        }
        let heard: Vec<FollowerStatus> = election
            .followers(now())
            .map(|(name, standby)| FollowerStatus {
                name: name.to_owned(),
                standby,
            })
            .collect();
        followers.send_if_modified(|f| {
            let changed = *f != heard;
            *f = heard;
            changed
        });
        if let Some(w) = &web {
            w.set_election(ElectionMetrics {
                leading: election.leading(),
                followers: followers.borrow().len(),
                stats: *election.stats(),
            });
        }
        let wake = election
            .poll_timeout(now())
            .map(|t| started + Duration::from_millis(t));
        let from_leader = async {
            let Some(l) = leader.as_mut() else {
                return std::future::pending().await;
            };
            tokio::select! {
                Ok(()) = l.newer.changed() => FromLeader::Newer(*l.newer.borrow_and_update()),
                ended = &mut l.task => FromLeader::Ended(ended),
            }
        };
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            event = session.poll() => match event {
                SessionEvent::Publish(p) => {
                    if p.topic == MASTER_HELLO {
                        if let Ok(MasterEnvelope { epoch, .. }) = MasterEnvelope::decode(&p.payload) {
                            election.handle_hello(now(), epoch);
                        }
                    } else if p.topic.starts_with(PEERS_PREFIX) {
                        if let Err(e) = election.handle_peer(now(), &p.topic, &p.payload) {
                            let n = election.stats().bad_peer_messages;
                            if n.is_power_of_two() {
                                warn!(topic = %p.topic, n, "dropped a peer message: {e}");
                            }
                        }
                    }
                }
                SessionEvent::Connected => election.handle_connected(now()),
                SessionEvent::Lost { .. } => election.handle_disconnected(now()),
                _ => {}
            },
            from = from_leader => match from {
                FromLeader::Newer(Some(epoch)) => election.handle_newer_epoch(now(), epoch),
                FromLeader::Newer(None) => {}
                FromLeader::Ended(ended) => {
                    leader = None;
                    break match ended {
                        Ok(result) => result,
                        Err(e) => Err(MasterError::LeaderPanicked(e.to_string())),
                    };
                }
            },
            () = sleep_until(wake) => election.handle_timeout(now()),
        }
    };
    let stopped = match leader.take() {
        Some(l) => stop_leader(l, Stop::Shutdown).await,
        None => Ok(()),
    };
    if let Some(w) = &web {
        w.close();
    }
    // Say we are gone (a clean disconnect publishes no will), then leave.
    let gone = election.last_will();
    let _ = client.try_publish(gone.topic, rumqttc::QoS::AtLeastOnce, false, gone.payload);
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while !matches!(session.poll().await, SessionEvent::Disconnected) {}
    })
    .await;
    outcome.and(stopped)
}

fn start_leader(
    config: &Config,
    broker: &Brokers,
    leadership: &Leadership,
    epoch: u64,
    followers: watch::Receiver<Vec<FollowerStatus>>,
    snapshots: Option<watch::Sender<Snapshot>>,
    web: Option<WebState>,
) -> Leader {
    let (stop_tx, stop_rx) = oneshot::channel();
    let (epoch_tx, epoch_rx) = watch::channel(epoch);
    let (newer_tx, newer_rx) = watch::channel(None);
    let link = LeaderLink {
        name: leadership.name.clone(),
        login: leadership.login.clone(),
        principal_keys: leadership.principal_keys.clone(),
        epoch: epoch_rx,
        newer: newer_tx,
        followers,
    };
    let stop = async move { stop_rx.await.unwrap_or(Stop::Shutdown) };
    let task = tokio::spawn(driver::lead(
        config.clone(),
        broker.clone(),
        link,
        snapshots,
        web,
        stop,
    ));
    Leader {
        stop: stop_tx,
        epoch: epoch_tx,
        newer: newer_rx,
        task,
    }
}

async fn stop_leader(leader: Leader, why: Stop) -> Result<(), MasterError> {
    let _ = leader.stop.send(why);
    match leader.task.await {
        Ok(result) => result,
        Err(e) => Err(MasterError::LeaderPanicked(e.to_string())),
    }
}
