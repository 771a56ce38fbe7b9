//! The cluster's credential store: `STATE_DIR/credentials.toml`, every principal with its secret
//! and when it was issued.
//!
//! ```toml
//! # Bramble credential store: every principal of the cluster and its secret. Keep it secret.
//! [[principal]]
//! principal = "master-cluster"
//! secret = "<64 hex digits>"
//! issued = "2026-12-07T19:30:00Z"
//! ```
//!
//! The file has mode 0600 in a 0700 directory and is always replaced whole (a temporary file
//! beside it, synced, renamed over it), so a master re-reading it never sees half a file. Secrets
//! come from the kernel ([`super::random`]). Errors never quote the file's text.

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use agent_nostd_core::auth::{Principal, PrincipalKind, Secret};
use bramble_mqtt::{Credential, CredentialError};
use serde::Deserialize;
use tracing::{info, warn};

/// The store's file name in the state directory.
pub const STORE_FILE: &str = "credentials.toml";
/// The lock file beside it ([`Store::lock`]).
pub const LOCK_FILE: &str = "credentials.lock";
/// Where the master keeps its state unless told otherwise (the .deb's unit uses it too).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/bramble-master";
/// The one master principal every master of the cluster logs in as.
pub const MASTER_NAME: &str = "cluster";
/// The operator the first start creates.
pub const FIRST_OPERATOR: &str = "admin";

/// One principal in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Who.
    pub principal: Principal,
    /// Its secret (hidden from `Debug`).
    pub secret: Secret,
    /// When it was issued (RFC 3339, UTC).
    pub issued: String,
}

/// Why the store could not be read, changed or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The store is not what this version writes (the message never quotes the file).
    #[error("credential store {path}: {reason}")]
    Invalid {
        /// The store.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The principal is already issued (`--rotate` replaces its secret).
    #[error("{0} already has a credential (use --rotate to issue a new secret)")]
    Exists(String),
    /// The principal is not in the store.
    #[error("{0} is not in the credential store")]
    Unknown(String),
    /// The master principal is the cluster's own and cannot be removed.
    #[error("{0} is the masters' own principal and cannot be removed")]
    Protected(String),
    /// A credential file could not be written.
    #[error(transparent)]
    Credential(#[from] CredentialError),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    principal: Vec<FileEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    principal: String,
    secret: String,
    issued: String,
}

/// An exclusive `flock` on the store's lock file: held by whoever reads, changes and saves the
/// store, so two `bramble credentials add` (or a deploy beside one) never lose each other's
/// principal. Released when dropped.
#[derive(Debug)]
pub struct StoreLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

/// What [`Store::open_or_init`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// The store was there.
    Existing,
    /// The store was created, with the master principal and the first operator, whose
    /// credential file is here.
    Created {
        /// `STATE_DIR/operator-admin.credential`.
        operator_credential: PathBuf,
    },
}

/// The credential store, in memory; [`Store::save`] writes it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    path: PathBuf,
    /// By username (`KIND-NAME`).
    entries: BTreeMap<String, Entry>,
}

impl Store {
    /// The store's path in `state_dir`.
    pub fn path_in(state_dir: &Path) -> PathBuf {
        state_dir.join(STORE_FILE)
    }

    /// Waits for the exclusive lock on the store in `state_dir` (creating the directory, mode
    /// 0700, and the lock file, mode 0600, when missing). Take it before a read-modify-write; not
    /// twice in one thread.
    pub fn lock(state_dir: &Path) -> Result<StoreLock, StoreError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Io { path, source }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(io(state_dir))?;
        let path = state_dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        // Root's lock file would shut the master's own user out of it.
        give_to_directory_owner(&file, &path).map_err(io(&path))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map(StoreLock)
            .map_err(|(_, errno)| io(&path)(std::io::Error::from(errno)))
    }

    /// The master principal, `master-cluster`.
    pub fn master_principal() -> Principal {
        Principal::new(PrincipalKind::Master, MASTER_NAME).expect("a valid name")
    }

    /// An empty store that [`Store::save`] writes to `path`.
    pub fn empty(path: PathBuf) -> Store {
        Store {
            path,
            entries: BTreeMap::new(),
        }
    }

    /// Reads the store at `path`.
    pub fn load(path: &Path) -> Result<Store, StoreError> {
        let text = std::fs::read_to_string(path).map_err(|source| StoreError::Io {
            path: path.to_owned(),
            source,
        })?;
        Store::parse(&text, path)
    }

    /// Parses a store's text; `path` names it in errors and is where it is saved.
    pub fn parse(text: &str, path: &Path) -> Result<Store, StoreError> {
        let invalid = |reason: String| StoreError::Invalid {
            path: path.to_owned(),
            reason,
        };
        // toml's message may quote a line holding a secret: keep only where it is.
        let file: File = toml::from_str(text).map_err(|e| {
            invalid(match e.span() {
                Some(span) => format!("not a credential store, at byte {}", span.start),
                None => "not a credential store".to_owned(),
            })
        })?;
        let mut store = Store::empty(path.to_owned());
        for (i, e) in file.principal.into_iter().enumerate() {
            let principal = Principal::from_username(&e.principal)
                .map_err(|err| invalid(format!("principal #{}: {err}", i + 1)))?;
            let secret = Secret::from_hex(&e.secret)
                .map_err(|err| invalid(format!("{}: {err}", e.principal)))?;
            let entry = Entry {
                principal,
                secret,
                issued: e.issued,
            };
            if store.entries.insert(e.principal.clone(), entry).is_some() {
                return Err(invalid(format!("{} is listed twice", e.principal)));
            }
        }
        Ok(store)
    }

    /// Opens the store in `state_dir`, creating the directory (0700) and the store when missing:
    /// the master principal, the operator `admin`, and `operator-admin.credential` beside it.
    /// Creation is logged once at INFO with what to do next.
    pub fn open_or_init(state_dir: &Path) -> Result<(Store, Opened), StoreError> {
        let path = Store::path_in(state_dir);
        match std::fs::metadata(&path) {
            Ok(_) => {
                warn_if_open(state_dir, &path);
                return Ok((Store::load(&path)?, Opened::Existing));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(StoreError::Io { path, source }),
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|source| StoreError::Io {
                path: state_dir.to_owned(),
                source,
            })?;
        warn_if_open(state_dir, &path);
        let mut store = Store::empty(path.clone());
        store.issue(Store::master_principal(), false)?;
        let operator = Principal::new(PrincipalKind::Operator, FIRST_OPERATOR).expect("valid");
        let credential = store.issue(operator.clone(), false)?;
        let operator_credential =
            state_dir.join(format!("{}.credential", operator.username().as_str()));
        credential.write(&operator_credential)?;
        store.save()?;
        info!(
            store = %path.display(),
            operator = %operator_credential.display(),
            "created the cluster's credentials: the store (keep it secret; give a standby master a \
             copy) and the operator's credential file; next, issue each board its own: \
             `bramble credentials add agent NAME`"
        );
        Ok((
            store,
            Opened::Created {
                operator_credential,
            },
        ))
    }

    /// Where the store is saved.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Issues `principal` a new secret and returns its credential; a principal already there is
    /// refused unless `rotate`. Not saved until [`Store::save`].
    pub fn issue(&mut self, principal: Principal, rotate: bool) -> Result<Credential, StoreError> {
        let username = principal.username().as_str().to_owned();
        if !rotate && self.entries.contains_key(&username) {
            return Err(StoreError::Exists(username));
        }
        let secret =
            Secret::from_bytes(super::random::bytes().map_err(|source| StoreError::Io {
                path: "/dev/urandom".into(),
                source,
            })?);
        let entry = Entry {
            principal: principal.clone(),
            secret: secret.clone(),
            issued: super::time::now_rfc3339(),
        };
        self.entries.insert(username, entry);
        Ok(Credential::new(principal, secret))
    }

    /// Removes `principal` (not the master principal). Not saved until [`Store::save`].
    pub fn remove(&mut self, principal: &Principal) -> Result<(), StoreError> {
        let username = principal.username().as_str().to_owned();
        if principal.kind() == PrincipalKind::Master {
            return Err(StoreError::Protected(username));
        }
        self.entries
            .remove(&username)
            .map(drop)
            .ok_or(StoreError::Unknown(username))
    }

    /// Every principal, by username.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// The credential of `principal`, if it is in the store.
    pub fn credential(&self, principal: &Principal) -> Option<Credential> {
        self.entries
            .get(principal.username().as_str())
            .map(|e| Credential::new(e.principal.clone(), e.secret.clone()))
    }

    /// The store's text.
    pub fn to_toml(&self) -> String {
        let mut out = String::from(
            "# Bramble credential store: every principal of the cluster and its secret.\n\
             # Keep it secret (mode 0600); manage it with `bramble credentials`.\n",
        );
        for (username, e) in &self.entries {
            out.push_str(&format!(
                "\n[[principal]]\nprincipal = \"{username}\"\nsecret = \"{}\"\nissued = \"{}\"\n",
                e.secret.to_hex(),
                e.issued.replace(['"', '\\'], "")
            ));
        }
        out
    }

    /// Writes the store atomically: a temporary file beside it (mode 0600, synced), renamed over
    /// it.
    pub fn save(&self) -> Result<(), StoreError> {
        let path = &self.path;
        bramble_mqtt::credential::write_atomically(path, self.to_toml().as_bytes(), 0o600, |file| {
            give_to_directory_owner(file, path)
        })
        .map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })
    }
}

/// Run as root (`sudo bramble credentials add` on a master host), makes a new file in the state
/// directory (the store, its lock) the directory owner's, so the master's own user (the unit's
/// `DynamicUser`) can still open it.
fn give_to_directory_owner(file: &std::fs::File, store: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if nix::unistd::geteuid().is_root() {
        let dir = store.parent().filter(|d| !d.as_os_str().is_empty());
        let owner = std::fs::metadata(dir.unwrap_or(Path::new(".")))?;
        std::os::unix::fs::fchown(file, Some(owner.uid()), Some(owner.gid()))?;
    }
    Ok(())
}

/// Warns when the state directory or the store can be read by others.
fn warn_if_open(state_dir: &Path, store: &Path) {
    for (path, what) in [(state_dir, "directory"), (store, "store")] {
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                warn!(
                    path = %path.display(),
                    "the credential {what} can be read by others: chmod {} it",
                    if what == "store" { "600" } else { "700" }
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(name: &str) -> Principal {
        Principal::new(PrincipalKind::Agent, name).unwrap()
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_first_open_creates_the_master_and_an_operator_with_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (store, opened) = Store::open_or_init(&state).unwrap();
        let Opened::Created {
            operator_credential,
        } = opened
        else {
            panic!("expected a new store");
        };
        let names: Vec<String> = store
            .entries()
            .map(|e| e.principal.username().as_str().to_owned())
            .collect();
        assert_eq!(names, ["master-cluster", "operator-admin"]);
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&Store::path_in(&state)), 0o600);
        assert_eq!(mode(&operator_credential), 0o600);
        let operator = Credential::read(&operator_credential).unwrap();
        assert_eq!(store.credential(&operator.principal), Some(operator));
        // A second open reads the same store back.
        let (again, opened) = Store::open_or_init(&state).unwrap();
        assert_eq!(opened, Opened::Existing);
        assert_eq!(again, store);
    }

    #[test]
    fn an_added_principal_is_saved_and_a_second_add_needs_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open_or_init(dir.path()).unwrap();
        let first = store.issue(agent("pi-kitchen"), false).unwrap();
        store.save().unwrap();
        let loaded = Store::load(store.path()).unwrap();
        assert_eq!(loaded.credential(&agent("pi-kitchen")), Some(first.clone()));
        let mut store = loaded;
        assert!(matches!(
            store.issue(agent("pi-kitchen"), false),
            Err(StoreError::Exists(name)) if name == "agent-pi-kitchen"
        ));
        let rotated = store.issue(agent("pi-kitchen"), true).unwrap();
        assert_ne!(rotated.secret, first.secret);
        assert_eq!(store.credential(&agent("pi-kitchen")), Some(rotated));
    }

    #[test]
    fn a_removed_principal_is_gone_and_the_master_cannot_be_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open_or_init(dir.path()).unwrap();
        store.issue(agent("pi-1"), false).unwrap();
        store.remove(&agent("pi-1")).unwrap();
        assert_eq!(store.credential(&agent("pi-1")), None);
        assert!(matches!(
            store.remove(&agent("pi-1")),
            Err(StoreError::Unknown(_))
        ));
        assert!(matches!(
            store.remove(&Store::master_principal()),
            Err(StoreError::Protected(_))
        ));
    }

    #[test]
    fn saving_replaces_the_file_whole_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open_or_init(dir.path()).unwrap();
        let before = std::fs::metadata(store.path()).unwrap();
        store.issue(agent("pi-2"), false).unwrap();
        // A stale temporary file from a crash is replaced, not appended to.
        std::fs::write(dir.path().join("credentials.toml.tmp"), "garbage").unwrap();
        store.save().unwrap();
        use std::os::unix::fs::MetadataExt;
        let after = std::fs::metadata(store.path()).unwrap();
        assert_ne!(
            before.ino(),
            after.ino(),
            "renamed over, not rewritten in place"
        );
        assert!(!dir.path().join("credentials.toml.tmp").exists());
        assert_eq!(mode(store.path()), 0o600);
        assert_eq!(Store::load(store.path()).unwrap(), store);
    }

    #[test]
    fn the_store_lock_is_exclusive_until_dropped() {
        use nix::fcntl::{Flock, FlockArg};
        let dir = tempfile::tempdir().unwrap();
        let held = Store::lock(dir.path()).unwrap();
        let try_lock = || {
            let file = std::fs::File::open(dir.path().join(LOCK_FILE)).unwrap();
            Flock::lock(file, FlockArg::LockExclusiveNonblock).is_ok()
        };
        assert!(!try_lock(), "a second locker waits");
        drop(held);
        assert!(try_lock(), "free once dropped");
    }

    #[test]
    #[ignore = "needs root"]
    fn files_root_writes_in_the_masters_directory_stay_the_masters() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        // The master's own user (the unit's DynamicUser) owns its state directory.
        std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
        let _lock = Store::lock(&state).unwrap();
        let (mut store, _) = Store::open_or_init(&state).unwrap();
        store.issue(agent("pi"), false).unwrap();
        store.save().unwrap();
        for file in [LOCK_FILE, STORE_FILE] {
            let meta = std::fs::metadata(state.join(file)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "{file}");
        }
    }

    #[test]
    fn a_bad_store_is_refused_without_quoting_its_secrets() {
        let path = Path::new("credentials.toml");
        let text = "[[principal]]\nprincipal = \"agent-pi\"\nsecret = \"0909-very-secret\"\nissued = \"x\"\n";
        let err = Store::parse(text, path).unwrap_err().to_string();
        assert!(err.contains("agent-pi"), "{err}");
        assert!(!err.contains("very-secret"), "{err}");
        let err = Store::parse("principal = very-secret", path)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("very-secret"), "{err}");
    }

    #[test]
    fn the_debug_of_a_store_shows_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open_or_init(dir.path()).unwrap();
        let shown = format!("{store:?}");
        for e in store.entries() {
            assert!(!shown.contains(e.secret.to_hex().as_str()));
        }
    }
}
