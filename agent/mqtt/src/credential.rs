//! A principal's credential file: who the client is and its secret.
//!
//! ```toml
//! # Bramble credential: keep this file secret (mode 0600).
//! principal = "agent-pi-kitchen"
//! secret = "<64 hex digits>"
//! ```
//!
//! `bramble credentials add` writes one per principal; the agent, a framework or the CLI is pointed
//! at its own. The client logs in to the broker as the principal (username `KIND-NAME`) with the
//! password derived from the secret ([`Credential::login`]), and tags its messages with the key
//! derived from it. Files are written atomically with mode 0600; reading one that others may read
//! logs a warning.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use agent_nostd_core::auth::{AuthError, Principal, Secret};
use serde::Deserialize;
use tracing::warn;

use crate::Login;

/// A principal and its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// Who.
    pub principal: Principal,
    /// Its secret (hidden from `Debug`).
    pub secret: Secret,
}

/// Why a credential file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The file could not be read or written.
    #[error("credential file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML with `principal` and `secret` (the message never quotes the secret).
    #[error("credential file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    principal: String,
    secret: String,
}

impl Credential {
    /// The credential of `principal` with `secret`.
    pub fn new(principal: Principal, secret: Secret) -> Self {
        Credential { principal, secret }
    }

    /// Parses a credential file's text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Credential, CredentialError> {
        let invalid = |reason: String| CredentialError::Invalid {
            path: path.to_owned(),
            reason,
        };
        // toml's message can quote the offending line, which may hold the secret: keep only
        // where it is.
        let file: File = toml::from_str(text).map_err(|e| {
            invalid(match e.span() {
                Some(span) => format!(
                    "not a credential (expected `principal` and `secret`), at byte {}",
                    span.start
                ),
                None => "not a credential (expected `principal` and `secret`)".to_owned(),
            })
        })?;
        let principal = Principal::from_username(&file.principal)
            .map_err(|e: AuthError| invalid(format!("principal: {e}")))?;
        let secret = Secret::from_hex(&file.secret).map_err(|e| invalid(format!("secret: {e}")))?;
        Ok(Credential { principal, secret })
    }

    /// Reads the credential file at `path`, warning when its mode lets others read it.
    pub fn read(path: &Path) -> Result<Credential, CredentialError> {
        let io = |source| CredentialError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.permissions().mode() & 0o077 != 0 {
            warn!(
                path = %path.display(),
                "the credential file can be read by others: chmod 600 it"
            );
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Credential::parse(&text, path)
    }

    /// The file's text.
    pub fn to_toml(&self) -> String {
        format!(
            "# Bramble credential for {}: keep this file secret (mode 0600).\n\
             principal = \"{}\"\nsecret = \"{}\"\n",
            self.principal,
            self.principal.username(),
            self.secret.to_hex()
        )
    }

    /// Writes the file at `path` atomically with mode 0600 (see [`write_atomically`]).
    pub fn write(&self, path: &Path) -> Result<(), CredentialError> {
        write_atomically(path, self.to_toml().as_bytes(), 0o600, |_| Ok(())).map_err(|source| {
            CredentialError::Io {
                path: path.to_owned(),
                source,
            }
        })
    }

    /// The broker login: the principal's username and the password derived from the secret.
    pub fn login(&self) -> Login {
        Login::new(
            self.principal.username().as_str(),
            self.secret.broker_password().as_str(),
        )
    }
}

/// Writes `bytes` to `path` atomically: into a temporary file beside it created with `mode`,
/// handed to `prepare` (to change its owner, say), synced, then renamed over `path`, so a reader
/// sees the old file or the new one, never half of one.
pub fn write_atomically(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    prepare: impl FnOnce(&std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(bytes)?;
    prepare(&file)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_nostd_core::auth::PrincipalKind;

    fn credential() -> Credential {
        Credential::new(
            Principal::new(PrincipalKind::Agent, "pi-kitchen").unwrap(),
            Secret::from_bytes([9; 32]),
        )
    }

    #[test]
    fn a_written_credential_reads_back_the_same_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.credential");
        credential().write(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(Credential::read(&path).unwrap(), credential());
    }

    #[test]
    fn the_login_is_the_principals_username_and_derived_password() {
        let login = credential().login();
        assert_eq!(login.username, "agent-pi-kitchen");
        assert_eq!(
            login.password.expose(),
            Secret::from_bytes([9; 32]).broker_password().as_str()
        );
    }

    #[test]
    fn a_bad_file_is_refused_without_quoting_the_secret() {
        let path = Path::new("x.credential");
        let text = "principal = \"agent-pi\"\nsecret = \"0909zz\"\n";
        let err = Credential::parse(text, path).unwrap_err().to_string();
        assert!(err.contains("secret"), "{err}");
        assert!(!err.contains("0909zz"), "{err}");
        let text = "principal = agent-pi\nsecret = \"0909zz-very-secret\"\n";
        let err = Credential::parse(text, path).unwrap_err().to_string();
        assert!(!err.contains("very-secret"), "{err}");
        let err = Credential::parse("principal = \"nobody\"\nsecret = \"00\"", path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("principal"), "{err}");
    }
}
