//! `bramble credentials add|remove|list` and `bramble broker-config mosquitto`: they work on the
//! store in the state directory directly (run them on the master host); a running master picks
//! the change up by itself ([`super::reload`]). Nothing here prints or returns a secret.

use std::path::{Path, PathBuf};

use agent_nostd_core::auth::{Principal, PrincipalKind};

use super::mosquitto;
use super::store::{Store, StoreError};

/// Why a credentials command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The store could not be read, changed or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The name is not a valid principal name.
    #[error("{kind} name {name:?}: 1-32 bytes of A-Z a-z 0-9 . _ -")]
    BadName {
        /// The kind.
        kind: PrincipalKind,
        /// The name given.
        name: String,
    },
    /// Master credentials are not issued one by one.
    #[error("there is one master principal, master-cluster, created with the store; give a standby master a copy of the store")]
    MasterKind,
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn principal(kind: PrincipalKind, name: &str) -> Result<Principal, CommandError> {
    if kind == PrincipalKind::Master {
        return Err(CommandError::MasterKind);
    }
    Principal::new(kind, name).map_err(|_| CommandError::BadName {
        kind,
        name: name.to_owned(),
    })
}

/// The default credential file of `principal`: `./KIND-NAME.credential`.
pub fn default_credential_path(principal: &Principal) -> PathBuf {
    PathBuf::from(format!("{}.credential", principal.username().as_str()))
}

/// `bramble credentials add KIND NAME [--out FILE] [--rotate]`: issues a secret, saves the store,
/// writes the credential file (mode 0600) and returns its path.
pub fn add(
    state_dir: &Path,
    kind: PrincipalKind,
    name: &str,
    out: Option<&Path>,
    rotate: bool,
) -> Result<PathBuf, CommandError> {
    let principal = principal(kind, name)?;
    let _lock = Store::lock(state_dir)?;
    let (mut store, _) = Store::open_or_init(state_dir)?;
    let credential = store.issue(principal.clone(), rotate)?;
    let out = out.map_or_else(|| default_credential_path(&principal), Path::to_owned);
    // The file first: a store entry whose file was never written would need a --rotate.
    credential.write(&out).map_err(StoreError::from)?;
    store.save()?;
    Ok(out)
}

/// `bramble credentials remove KIND NAME`.
pub fn remove(state_dir: &Path, kind: PrincipalKind, name: &str) -> Result<(), CommandError> {
    let principal = principal(kind, name)?;
    let _lock = Store::lock(state_dir)?;
    let mut store = Store::load(&Store::path_in(state_dir))?;
    store.remove(&principal)?;
    store.save()?;
    Ok(())
}

/// `bramble credentials list`: one line per principal with its issue time, no secret.
pub fn list(state_dir: &Path) -> Result<String, CommandError> {
    let (store, _) = Store::open_or_init(state_dir)?;
    let mut out = format!("{:<42} ISSUED\n", "PRINCIPAL");
    for e in store.entries() {
        out.push_str(&format!(
            "{:<42} {}\n",
            e.principal.username().as_str(),
            e.issued
        ));
    }
    Ok(out)
}

/// `bramble broker-config mosquitto --out DIR`: writes the files and returns what to tell the
/// user.
pub fn broker_config_mosquitto(state_dir: &Path, out: &Path) -> Result<String, CommandError> {
    let (store, _) = Store::open_or_init(state_dir)?;
    let written = mosquitto::write(&store, out).map_err(|source| CommandError::Io {
        path: out.to_owned(),
        source,
    })?;
    Ok(format!(
        "wrote {passwd}, {acl} and {conf} ({n} principals)\n\
         To use them with Mosquitto 2:\n\
         \x20 1. make the two files readable by the broker's user only, e.g.\n\
         \x20    chown mosquitto: {passwd} {acl}\n\
         \x20 2. include the snippet: add `include_dir` or copy its lines into mosquitto.conf\n\
         \x20    (e.g. cp {conf} /etc/mosquitto/conf.d/bramble.conf), keeping your `listener` lines\n\
         \x20 3. restart Mosquitto; run this command again (and reload) after `bramble credentials add`\n\
         The master logs in as master-cluster: run `bramble master --broker mqtt://HOST:1883` on this host\n\
         (its state directory holds the store).",
        passwd = written.passwd.display(),
        acl = written.acl.display(),
        conf = written.conf.display(),
        n = store.entries().count(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_mqtt::Credential;

    #[test]
    fn add_writes_a_private_credential_file_and_refuses_a_second_add_without_rotate() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let out = dir.path().join("pi.credential");
        let path = add(&state, PrincipalKind::Agent, "pi", Some(&out), false).unwrap();
        assert_eq!(path, out);
        let credential = Credential::read(&out).unwrap();
        assert_eq!(credential.principal.username().as_str(), "agent-pi");
        let store = Store::load(&Store::path_in(&state)).unwrap();
        assert_eq!(
            store.credential(&credential.principal),
            Some(credential.clone())
        );
        let again = add(&state, PrincipalKind::Agent, "pi", Some(&out), false);
        assert!(matches!(
            again,
            Err(CommandError::Store(StoreError::Exists(_)))
        ));
        assert_eq!(
            Credential::read(&out).unwrap(),
            credential,
            "left as it was"
        );
        add(&state, PrincipalKind::Agent, "pi", Some(&out), true).unwrap();
        assert_ne!(Credential::read(&out).unwrap().secret, credential.secret);
    }

    #[test]
    fn list_shows_principals_and_issue_times_but_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("f.credential");
        add(
            dir.path(),
            PrincipalKind::Framework,
            "pi",
            Some(&out),
            false,
        )
        .unwrap();
        let text = list(dir.path()).unwrap();
        assert!(text.contains("framework-pi "), "{text}");
        assert!(text.contains("master-cluster "), "{text}");
        let store = Store::load(&Store::path_in(dir.path())).unwrap();
        for e in store.entries() {
            assert!(!text.contains(e.secret.to_hex().as_str()));
            assert!(text.contains(&e.issued));
        }
    }

    #[test]
    fn remove_drops_the_principal_and_master_credentials_are_not_issued_by_hand() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.credential");
        add(
            dir.path(),
            PrincipalKind::Operator,
            "bob",
            Some(&out),
            false,
        )
        .unwrap();
        remove(dir.path(), PrincipalKind::Operator, "bob").unwrap();
        assert!(!list(dir.path()).unwrap().contains("operator-bob"));
        assert!(matches!(
            add(dir.path(), PrincipalKind::Master, "x", Some(&out), false),
            Err(CommandError::MasterKind)
        ));
        assert!(matches!(
            add(
                dir.path(),
                PrincipalKind::Agent,
                "no/slash",
                Some(&out),
                false
            ),
            Err(CommandError::BadName { .. })
        ));
    }
}
