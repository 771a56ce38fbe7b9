//! A running master picks up `bramble credentials add/remove` without a restart: every 2 s it
//! looks at the store's metadata (modification time, size, inode: each save renames a new file
//! over it) and re-reads the store only when that changed. Nothing is written.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use super::authenticator::Authenticator;
use super::store::{Store, StoreError};

/// How often the store's metadata is looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// What identifies one version of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// What takes each new version of the store.
type Listener = Box<dyn Fn(&Store) + Send>;

/// Re-reads the store when the file changed, into an [`Authenticator`] (the embedded broker's
/// logins) and whatever else listens (the agents' message keys).
pub struct Reloader {
    path: PathBuf,
    seen: Option<Stamp>,
    auth: Option<Arc<Authenticator>>,
    listeners: Vec<Listener>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.path)
            .field("listeners", &self.listeners.len())
            .finish()
    }
}

impl Reloader {
    /// Watches `path`, whose current contents `auth` already holds.
    pub fn new(path: PathBuf, auth: Arc<Authenticator>) -> Self {
        Reloader::watching(path).into_authenticator(auth)
    }

    /// Watches `path`, whose current contents the listeners added already hold.
    pub fn watching(path: PathBuf) -> Self {
        let seen = stamp(&path).ok();
        Reloader {
            path,
            seen,
            auth: None,
            listeners: Vec::new(),
        }
    }

    /// Also reloads `auth`.
    pub fn into_authenticator(mut self, auth: Arc<Authenticator>) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Also calls `listener` with every new version.
    pub fn on_change(mut self, listener: impl Fn(&Store) + Send + 'static) -> Self {
        self.listeners.push(Box::new(listener));
        self
    }

    /// Re-reads the store if it changed since the last look: `Ok(true)` when it was reloaded.
    /// A store that cannot be read leaves the accepted logins as they were.
    pub fn check(&mut self) -> Result<bool, StoreError> {
        let now = stamp(&self.path).map_err(|source| StoreError::Io {
            path: self.path.clone(),
            source,
        })?;
        if self.seen == Some(now) {
            return Ok(false);
        }
        self.seen = Some(now);
        let store = Store::load(&self.path)?;
        if let Some(auth) = &self.auth {
            auth.replace(&store);
        }
        for listener in &self.listeners {
            listener(&store);
        }
        Ok(true)
    }

    /// Checks every [`CHECK_EVERY`] on a thread of its own, for the life of the process.
    pub fn spawn(mut self) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("credential-reload".into())
            .spawn(move || {
                let mut failing = false;
                loop {
                    std::thread::sleep(CHECK_EVERY);
                    match self.check() {
                        Ok(true) => {
                            failing = false;
                            info!(
                                store = %self.path.display(),
                                "the credential store changed: its principals are taken now"
                            );
                        }
                        Ok(false) => failing = false,
                        Err(e) if !failing => {
                            failing = true;
                            warn!("cannot re-read the credential store (keeping the logins as they were): {e}");
                        }
                        Err(_) => {}
                    }
                }
            })
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_nostd_core::auth::{Principal, PrincipalKind};

    #[test]
    fn a_saved_change_is_picked_up_once_and_an_unchanged_store_is_not_reread() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open_or_init(dir.path()).unwrap();
        let auth = Arc::new(Authenticator::new(&store));
        let mut reloader = Reloader::new(store.path().to_owned(), Arc::clone(&auth));
        assert!(!reloader.check().unwrap());
        let pi = Principal::new(PrincipalKind::Agent, "pi").unwrap();
        let credential = store.issue(pi, false).unwrap();
        let login = credential.login();
        let id = bramble_mqtt::bound_client_id("bramble-agent-pi", &login.password);
        assert!(!auth.check(&id, &login.username, login.password.expose()));
        store.save().unwrap();
        assert!(reloader.check().unwrap());
        assert!(auth.check(&id, &login.username, login.password.expose()));
        assert!(!reloader.check().unwrap());
    }

    #[test]
    fn a_broken_store_keeps_the_logins_that_were_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open_or_init(dir.path()).unwrap();
        let auth = Arc::new(Authenticator::new(&store));
        let mut reloader = Reloader::new(store.path().to_owned(), Arc::clone(&auth));
        std::fs::write(store.path(), "not a store at all").unwrap();
        assert!(reloader.check().is_err());
        assert_eq!(auth.len(), 2);
    }
}
