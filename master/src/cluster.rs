//! A whole Bramble cluster in one process: the embedded broker, the master and a few agents, each
//! agent on its own thread with its own runtime and work directory, as on separate boards. This is
//! `bramble up`, and what the end-to-end tests run against.

use std::net::SocketAddr;
use std::path::PathBuf;

use agent_nostd_core::Resources;
use bramble_agent::config::{Capacity, Config as AgentConfig, Overrides};
use tokio::sync::{oneshot, watch};
use tracing::{error, info};

use crate::broker::{self, BrokerConfig, BrokerError};
use crate::driver::{BrokerAddr, Snapshot};
use crate::web::WebState;
use bramble_master_core::Config;

/// One agent of a local cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSpec {
    /// Its id.
    pub id: String,
    /// Its attributes.
    pub attributes: Vec<(String, String)>,
    /// What it offers at most.
    pub capacity: Resources,
}

/// Which broker a local cluster uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterBroker {
    /// Start the embedded broker listening here.
    Embedded(SocketAddr),
    /// Use a broker that is already running (e.g. Mosquitto).
    External(BrokerAddr),
}

/// How to start a local cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The broker.
    pub broker: ClusterBroker,
    /// The agents.
    pub agents: Vec<AgentSpec>,
    /// Below which each agent gets its work directory.
    pub work_dir: PathBuf,
    /// The binary tasks are supervised by (one that dispatches `__supervise`).
    pub supervisor: PathBuf,
    /// The master's settings.
    pub master: Config,
    /// How many warm spares each agent keeps (0: none; agents' default:
    /// [`DEFAULT_WARM_SPARES`](bramble_agent::config::DEFAULT_WARM_SPARES)).
    pub warm_spares: u8,
    /// A credential store (its state directory) whose principals' keys the master also takes,
    /// re-read as it changes (e.g. as `bramble deploy` issues boards their credentials); the
    /// cluster's own agents use the anonymous key. `None`: the anonymous key only.
    pub credential_store: Option<PathBuf>,
}

impl ClusterOptions {
    /// The three agents of `bramble up`: one with a BME280 sensor, one with a camera, one plain.
    pub fn demo_agents() -> Vec<AgentSpec> {
        let attrs = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let capacity = Resources::new(1000, 512, 2048);
        vec![
            AgentSpec {
                id: "pi-kitchen".into(),
                attributes: attrs(&[("sensor", "bme280"), ("room", "kitchen")]),
                capacity,
            },
            AgentSpec {
                id: "pi-garage".into(),
                attributes: attrs(&[("camera", "picam"), ("room", "garage")]),
                capacity,
            },
            AgentSpec {
                id: "pi-attic".into(),
                attributes: attrs(&[("room", "attic")]),
                capacity,
            },
        ]
    }
}

/// Why a local cluster did not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The broker did not start.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// An agent's settings are invalid.
    #[error("agent {id}: {source}")]
    Agent {
        /// The agent.
        id: String,
        /// Why.
        source: bramble_agent::config::ConfigError,
    },
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
}

/// A running local cluster. [`LocalCluster::stop`] stops it; tasks still running are left to the
/// agents' checkpoints, so stop the frameworks (which kills their tasks) first.
pub struct LocalCluster {
    /// Where clients reach the broker.
    pub broker: BrokerAddr,
    /// The cluster's snapshots, about once a second.
    pub snapshots: watch::Receiver<Snapshot>,
    /// What the master shows on the web dashboard (serve it with [`crate::web::serve`]).
    pub web: WebState,
    master: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
    agents: Vec<(oneshot::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl LocalCluster {
    /// Starts the broker (unless external), the master (on the current tokio runtime) and the
    /// agents.
    pub fn start(options: ClusterOptions) -> Result<LocalCluster, ClusterError> {
        let broker = match &options.broker {
            ClusterBroker::Embedded(listen) => {
                // A harness (`bramble up`, tests): no credentials. Off loopback (the deploy
                // test's lab network) that is insecure, and logged as such.
                let anonymous = if listen.ip().is_loopback() {
                    broker::Anonymous::LoopbackOnly
                } else {
                    broker::Anonymous::Insecure
                };
                broker::start(&BrokerConfig {
                    anonymous,
                    ..BrokerConfig::small(*listen)
                })?;
                let addr = broker::connect_addr(*listen);
                BrokerAddr::new(addr.ip().to_string(), addr.port())
            }
            ClusterBroker::External(addr) => addr.clone(),
        };
        let (snap_tx, snapshots) = watch::channel(Snapshot::default());
        let credential_store = options.credential_store.clone();
        let (stop_master, stopped) = oneshot::channel::<()>();
        let master_broker = broker.clone();
        let web = WebState::new();
        let master_web = web.clone();
        let master = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            let leadership = crate::leadership::Leadership {
                principal_keys: credential_store
                    .as_deref()
                    .map(crate::credentials::cli::watch_principal_keys_with_anonymous),
                ..crate::leadership::Leadership::default()
            };
            let run = crate::leadership::run(
                options.master,
                master_broker.into(),
                leadership,
                Some(snap_tx),
                Some(master_web),
                shutdown,
            );
            if let Err(e) = run.await {
                error!("master: {e}");
            }
        });
        let mut agents = Vec::new();
        for spec in options.agents {
            let overrides = Overrides {
                agent_id: Some(spec.id.clone()),
                broker: Some(broker.to_string()),
                work_dir: Some(options.work_dir.join(&spec.id)),
                attributes: spec.attributes.clone(),
                capacity: Some(Capacity {
                    cpu_millis: Some(spec.capacity.cpu_millis),
                    mem_mib: Some(spec.capacity.mem_mib),
                    disk_mib: Some(spec.capacity.disk_mib),
                }),
                ..Overrides::default()
            };
            let mut config = AgentConfig::from_toml(
                "",
                std::path::Path::new("(bramble up)"),
                overrides,
                &spec.id,
            )
            .map_err(|source| ClusterError::Agent {
                id: spec.id.clone(),
                source,
            })?;
            config.warm_spares = options.warm_spares;
            // The demo's tasks run as whoever ran `bramble up` (root as root), so it needs no
            // `bramble` user on the machine.
            config.tasks.user = bramble_agent::tasks::user::current_user_name();
            // The broker as given, with its login (the URL text above leaves the password out).
            config.broker = broker.clone().into();
            let (stop, stopped) = oneshot::channel::<()>();
            let supervisor = options.supervisor.clone();
            let id = spec.id.clone();
            let thread = std::thread::Builder::new()
                .name(format!("agent-{id}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => return error!("agent {id}: cannot start its runtime: {e}"),
                    };
                    let shutdown = async {
                        let _ = stopped.await;
                    };
                    let run = bramble_agent::driver::run(config, Some(supervisor), shutdown);
                    if let Err(e) = runtime.block_on(run) {
                        error!("agent {id}: {e}");
                    }
                })
                .map_err(ClusterError::Thread)?;
            agents.push((stop, thread));
        }
        info!(%broker, agents = agents.len(), "local cluster started");
        Ok(LocalCluster {
            broker,
            snapshots,
            web,
            master: Some((stop_master, master)),
            agents,
        })
    }

    /// Waits until `n` agents are registered and reachable.
    pub async fn wait_for_agents(&mut self, n: usize) {
        let _ = self.snapshots.wait_for(|s| s.agents >= n).await;
    }

    /// Waits (up to `timeout`) until no agent runs a task, e.g. after the frameworks tore down and
    /// the master killed their tasks. Returns whether that happened.
    pub async fn wait_for_no_tasks(&mut self, timeout: std::time::Duration) -> bool {
        let drained = self.snapshots.wait_for(|s| s.running_tasks == 0);
        matches!(tokio::time::timeout(timeout, drained).await, Ok(Ok(_)))
    }

    /// Stops the agents, then the master.
    pub async fn stop(mut self) {
        for (stop, thread) in self.agents.drain(..) {
            let _ = stop.send(());
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        if let Some((stop, task)) = self.master.take() {
            let _ = stop.send(());
            let _ = task.await;
        }
    }
}
