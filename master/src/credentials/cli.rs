//! The command-line shapes of `bramble credentials …` and `bramble broker-config …` (clap), and
//! the master's start-up with its store: [`embedded_broker`] for the embedded broker,
//! [`external_broker`] for an external one, each with the agents' message keys and the HTTP keys
//! artifact requests are signed with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agent_nostd_core::auth::PrincipalKind;
use bramble_master_core::PrincipalKeys;
use bramble_mqtt::Login;
use tokio::sync::watch;

use super::commands::{self, CommandError};
use super::reload::Reloader;
use super::store::{Store, StoreError, DEFAULT_STATE_DIR};
use super::Authenticator;
use crate::broker::{self, Anonymous, BrokerConfig, BrokerError};
use crate::http::HttpKeys;

/// `--state-dir`: where the master keeps the credential store.
#[derive(Debug, Clone, clap::Args)]
pub struct StateDir {
    /// The master's state directory, holding the credential store `credentials.toml`.
    #[arg(long = "state-dir", env = "BRAMBLE_STATE_DIR", value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub path: PathBuf,
}

/// A kind of principal that is issued one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// A board (NAME is its agent id).
    Agent,
    /// A framework (NAME is its client name).
    Framework,
    /// A person or script using the CLI.
    Operator,
}

impl From<Kind> for PrincipalKind {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Agent => PrincipalKind::Agent,
            Kind::Framework => PrincipalKind::Framework,
            Kind::Operator => PrincipalKind::Operator,
        }
    }
}

/// `bramble credentials …`: run on the master host; a running master picks changes up.
#[derive(Debug, clap::Subcommand)]
pub enum CredentialsCommand {
    /// Issue a principal its secret and write its credential file (mode 0600); prints the path.
    Add {
        /// What it is.
        kind: Kind,
        /// Its name (an agent's id, a framework's client name): 1-32 bytes of A-Z a-z 0-9 . _ -
        name: String,
        /// Where to write the credential file (default: ./KIND-NAME.credential).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Issue a new secret to a principal that has one (its old secret stops working).
        #[arg(long)]
        rotate: bool,
        /// The store's directory.
        #[command(flatten)]
        state_dir: StateDir,
    },
    /// Remove a principal: it can no longer log in.
    Remove {
        /// What it is.
        kind: Kind,
        /// Its name.
        name: String,
        /// The store's directory.
        #[command(flatten)]
        state_dir: StateDir,
    },
    /// List the principals and when each was issued (never a secret).
    List {
        /// The store's directory.
        #[command(flatten)]
        state_dir: StateDir,
    },
}

/// `bramble broker-config …`.
#[derive(Debug, clap::Subcommand)]
pub enum BrokerConfigCommand {
    /// Write a Mosquitto password file, ACL file and mosquitto.conf snippet from the store.
    Mosquitto {
        /// The directory to write `passwd`, `acl` and `mosquitto.conf` into.
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
        /// The store's directory.
        #[command(flatten)]
        state_dir: StateDir,
    },
}

impl CredentialsCommand {
    /// Runs it; what to print on stdout.
    pub fn run(self) -> Result<String, CommandError> {
        match self {
            CredentialsCommand::Add {
                kind,
                name,
                out,
                rotate,
                state_dir,
            } => {
                let path =
                    commands::add(&state_dir.path, kind.into(), &name, out.as_deref(), rotate)?;
                Ok(format!("{}\n", path.display()))
            }
            CredentialsCommand::Remove {
                kind,
                name,
                state_dir,
            } => {
                commands::remove(&state_dir.path, kind.into(), &name)?;
                Ok(String::new())
            }
            CredentialsCommand::List { state_dir } => commands::list(&state_dir.path),
        }
    }
}

impl BrokerConfigCommand {
    /// Runs it; what to print on stdout.
    pub fn run(self) -> Result<String, CommandError> {
        match self {
            BrokerConfigCommand::Mosquitto { out, state_dir } => {
                commands::broker_config_mosquitto(&state_dir.path, &out).map(|s| s + "\n")
            }
        }
    }
}

/// Why the master's embedded broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened or created.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The broker did not start.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// What the master starts with from its store: the login of its own clients and the agents'
/// message keys, kept up to date as the store changes.
#[derive(Debug)]
pub struct Started {
    /// The master principal's login, if the broker wants one.
    pub login: Option<Login>,
    /// The keys the agents' frames must be sealed with.
    pub principal_keys: watch::Receiver<PrincipalKeys>,
    /// The keys HTTP requests for artifacts must be signed with (agents and operators), or
    /// `None` without a store: artifacts are then served to anyone.
    pub http_keys: Option<watch::Receiver<HttpKeys>>,
}

/// The agents' message keys in `store` (principal `agent-NAME` keys agent NAME), with the
/// operators' (`operator-NAME`: operator commands, `bramble run`) and the frameworks'
/// (`framework-NAME`: their calls).
pub fn principal_keys(store: &Store) -> PrincipalKeys {
    let mut keys = PrincipalKeys::only(
        store
            .entries()
            .filter(|e| e.principal.kind() == PrincipalKind::Agent)
            .map(|e| (e.principal.name().to_owned(), e.secret.message_key())),
    );
    for e in store.entries() {
        match e.principal.kind() {
            PrincipalKind::Operator => {
                keys.insert_operator(e.principal.name(), e.secret.message_key())
            }
            PrincipalKind::Framework => {
                keys.insert_framework(e.principal.name(), e.secret.message_key())
            }
            _ => {}
        }
    }
    keys
}

/// The HTTP keys of the agents and operators in `store`.
pub fn http_keys(store: &Store) -> HttpKeys {
    HttpKeys::only(
        store
            .entries()
            .map(|e| (e.principal.clone(), e.secret.http_key())),
    )
}

/// The keys of the store in `state_dir` (which may not exist yet), re-read as it changes, with
/// the anonymous key allowed too: a local cluster whose own agents have no credentials, joined by
/// boards that do (`bramble deploy` into a test lab).
pub fn watch_principal_keys_with_anonymous(state_dir: &Path) -> watch::Receiver<PrincipalKeys> {
    let path = Store::path_in(state_dir);
    let keys = |store: &Store| principal_keys(store).allowing_anonymous(true);
    let initial = Store::load(&path).map_or_else(|_| PrincipalKeys::anonymous(), |s| keys(&s));
    let (tx, rx) = watch::channel(initial);
    let reloader = Reloader::watching(path).on_change(move |s| {
        let _ = tx.send(keys(s));
    });
    if let Err(e) = reloader.spawn() {
        tracing::warn!("cannot watch the credential store: {e}");
    }
    rx
}

/// Agents without a key of their own may use the anonymous one: a cluster without credentials.
fn anonymous_agents() -> Started {
    tracing::warn!(
        "no credential store: agents' frames are taken under the anonymous key, which anyone can make"
    );
    Started {
        login: None,
        principal_keys: watch::channel(PrincipalKeys::anonymous()).1,
        http_keys: None,
    }
}

/// Watches `store`'s file: the reloaded agents' keys and HTTP keys go to the returned receivers.
fn watch_store(
    store: &Store,
    auth: Option<Arc<Authenticator>>,
) -> (watch::Receiver<PrincipalKeys>, watch::Receiver<HttpKeys>) {
    let (tx, rx) = watch::channel(principal_keys(store));
    let (http_tx, http_rx) = watch::channel(http_keys(store));
    let mut reloader = Reloader::watching(store.path().to_owned()).on_change(move |s| {
        let _ = tx.send(principal_keys(s));
        let _ = http_tx.send(http_keys(s));
    });
    if let Some(auth) = auth {
        reloader = reloader.into_authenticator(auth);
    }
    if let Err(e) = reloader.spawn() {
        tracing::warn!(
            "cannot watch the credential store (restart the master after changing it): {e}"
        );
    }
    (rx, http_rx)
}

/// Starts the master's embedded broker on `listen`. Unless `insecure_allow_anonymous`, it opens
/// (or on first start creates) the store in `state_dir`, accepts only its principals, re-reads it
/// when it changes, and returns the master principal's login for the master's own clients with
/// the agents' keys.
pub fn embedded_broker(
    listen: SocketAddr,
    state_dir: &Path,
    insecure_allow_anonymous: bool,
) -> Result<Started, StartError> {
    if insecure_allow_anonymous {
        let config = BrokerConfig {
            anonymous: Anonymous::Insecure,
            ..BrokerConfig::small(listen)
        };
        broker::start(&config)?;
        return Ok(anonymous_agents());
    }
    let (store, _) = {
        let _lock = Store::lock(state_dir)?;
        Store::open_or_init(state_dir)?
    };
    let auth = Arc::new(Authenticator::new(&store));
    broker::start(&BrokerConfig::small(listen).with_auth(Arc::clone(&auth)))?;
    let (principal_keys, http_keys) = watch_store(&store, Some(auth));
    Ok(Started {
        login: master_login(&store),
        principal_keys,
        http_keys: Some(http_keys),
    })
}

/// A master on an external broker: the master principal's login and the agents' keys from the
/// store in `state_dir`, if there is one (it never creates one; without it, agents use the
/// anonymous key).
pub fn external_broker(state_dir: &Path) -> Result<Started, StoreError> {
    let path = Store::path_in(state_dir);
    if !path.exists() {
        return Ok(anonymous_agents());
    }
    let store = Store::load(&path)?;
    let (principal_keys, http_keys) = watch_store(&store, None);
    Ok(Started {
        login: master_login(&store),
        principal_keys,
        http_keys: Some(http_keys),
    })
}

/// The master principal's login from the store in `state_dir`, if there is a store (a master on an
/// external broker uses it; it never creates one).
pub fn stored_master_login(state_dir: &Path) -> Result<Option<Login>, StoreError> {
    let path = Store::path_in(state_dir);
    if !path.exists() {
        return Ok(None);
    }
    Ok(master_login(&Store::load(&path)?))
}

fn master_login(store: &Store) -> Option<Login> {
    store
        .credential(&Store::master_principal())
        .map(|c| c.login())
}
