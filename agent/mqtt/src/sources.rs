//! Where a client's broker login comes from, and the one order every Bramble client settles it in.
//!
//! 1. An explicit username and password: `username` with `password` or `password_file` (config),
//!    `--username` with `--password-file FILE` (command line), `BRAMBLE_USERNAME` with
//!    `BRAMBLE_PASSWORD` or `BRAMBLE_PASSWORD_FILE` (environment). It is presented to every broker.
//! 2. Else each broker URL's own userinfo (`mqtt://user:pass@host`).
//! 3. Else a principal's credential file (`--credential FILE`, `BRAMBLE_CREDENTIAL`,
//!    `credential_file`): its principal and the password derived from its secret
//!    ([`Credential::login`]).
//!
//! Each binary gathers its sources into [`LoginSources`] (flags over environment over config
//! file, field by field) and calls [`LoginSources::settle`]. A password never comes from argv:
//! [`refuse_password_in_argv`] is what a command line runs on its `--broker` argument. No error
//! here quotes a password.

use std::path::{Path, PathBuf};

use crate::brokers::{has_password, Brokers};
use crate::{Credential, CredentialError, Login, Password};

/// The environment variable of the username.
pub const USERNAME_ENV: &str = "BRAMBLE_USERNAME";
/// The environment variable of the password (never a flag: argv is public).
pub const PASSWORD_ENV: &str = "BRAMBLE_PASSWORD";
/// The environment variable of a file holding the password.
pub const PASSWORD_FILE_ENV: &str = "BRAMBLE_PASSWORD_FILE";
/// The environment variable of a principal's credential file.
pub const CREDENTIAL_ENV: &str = "BRAMBLE_CREDENTIAL";
/// The environment variable of the broker list (where a URL with a password may be given).
pub const BROKER_ENV: &str = "BRAMBLE_BROKER";

/// Why a login could not be settled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// A password (or password file) was given without a username.
    #[error(
        "a password was given without a username (set --username, BRAMBLE_USERNAME or `username`)"
    )]
    PasswordWithoutUsername,
    /// A username was given without any password.
    #[error("the username {username} was given without a password (use --password-file, BRAMBLE_PASSWORD, BRAMBLE_PASSWORD_FILE, or `password`/`password_file` in the config file)")]
    UsernameWithoutPassword {
        /// The username.
        username: String,
    },
    /// The password file could not be read.
    #[error("password file {path}: {source}")]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The password file is empty.
    #[error("password file {path} is empty")]
    EmptyPasswordFile {
        /// The file.
        path: PathBuf,
    },
    /// The credential file could not be read.
    #[error(transparent)]
    Credential(#[from] CredentialError),
}

/// A `--broker` argument carries a password, which everyone can read in `ps`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a password in --broker would be visible to every user in `ps`: put the URL in BRAMBLE_BROKER or the config file, or give the password with --password-file")]
pub struct PasswordInArgv;

/// Refuses a broker list given on the command line if any URL in it carries a password.
pub fn refuse_password_in_argv(list: &str) -> Result<(), PasswordInArgv> {
    if has_password(list) {
        Err(PasswordInArgv)
    } else {
        Ok(())
    }
}

/// The login sources a client was given, already merged (flags over environment over file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginSources {
    /// The explicit username.
    pub username: Option<String>,
    /// The explicit password (config `password`, or `BRAMBLE_PASSWORD`).
    pub password: Option<Password>,
    /// A file whose first line is the password (beaten by `password`).
    pub password_file: Option<PathBuf>,
    /// A principal's credential file: the login when nothing else gives one.
    pub credential_file: Option<PathBuf>,
}

impl LoginSources {
    /// The sources the environment gives: `BRAMBLE_USERNAME`, `BRAMBLE_PASSWORD`,
    /// `BRAMBLE_PASSWORD_FILE`, `BRAMBLE_CREDENTIAL` (empty values count as unset), read through
    /// `lookup` (tests pass their own).
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |k: &str| lookup(k).filter(|v| !v.is_empty());
        LoginSources {
            username: get(USERNAME_ENV),
            password: get(PASSWORD_ENV).map(Password::new),
            password_file: get(PASSWORD_FILE_ENV).map(PathBuf::from),
            credential_file: get(CREDENTIAL_ENV).map(PathBuf::from),
        }
    }

    /// These sources, with each field left unset filled from `lower` (e.g. flags over the
    /// environment, then over the config file). A password and a password file count as one
    /// field: a higher source's password file beats a lower source's password.
    pub fn or(self, lower: LoginSources) -> LoginSources {
        let (password, password_file) = if self.password.is_some() || self.password_file.is_some() {
            (self.password, self.password_file)
        } else {
            (lower.password, lower.password_file)
        };
        LoginSources {
            username: self.username.or(lower.username),
            password,
            password_file,
            credential_file: self.credential_file.or(lower.credential_file),
        }
    }

    /// The explicit login, if a username was given (with a password, or a password file).
    pub fn explicit(&self) -> Result<Option<Login>, LoginError> {
        let password = match (&self.password, &self.password_file) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(path)) => Some(read_password_file(path)?),
            (None, None) => None,
        };
        match (&self.username, password) {
            (Some(username), Some(password)) => Ok(Some(Login {
                username: username.clone(),
                password,
            })),
            (Some(username), None) => Err(LoginError::UsernameWithoutPassword {
                username: username.clone(),
            }),
            (None, Some(_)) => Err(LoginError::PasswordWithoutUsername),
            (None, None) => Ok(None),
        }
    }

    /// `brokers` with each broker's login settled in the order of the module docs. The
    /// credential file is read only when a broker is left without a login.
    pub fn settle(&self, brokers: Brokers) -> Result<Brokers, LoginError> {
        let explicit = self.explicit()?;
        let needs_fallback = explicit.is_none() && brokers.iter().any(|a| a.login.is_none());
        let fallback = match (&self.credential_file, needs_fallback) {
            (Some(path), true) => Some(Credential::read(path)?.login()),
            _ => None,
        };
        Ok(brokers.with_login(explicit.as_ref(), fallback.as_ref()))
    }
}

/// The password in `path`: its first line, without the line end.
fn read_password_file(path: &Path) -> Result<Password, LoginError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoginError::PasswordFile {
        path: path.to_owned(),
        source,
    })?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(LoginError::EmptyPasswordFile {
            path: path.to_owned(),
        });
    }
    Ok(Password::new(line))
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_nostd_core::auth::{Principal, Secret};

    fn users(brokers: &Brokers) -> Vec<Option<(String, String)>> {
        brokers
            .iter()
            .map(|a| {
                a.login
                    .as_ref()
                    .map(|l| (l.username.clone(), l.password.expose().to_owned()))
            })
            .collect()
    }

    fn credential_file(dir: &Path) -> (PathBuf, Login) {
        let principal = Principal::from_username("agent-pi-kitchen").unwrap();
        let credential = Credential::new(principal, Secret::from_bytes([7; 32]));
        let path = dir.join("credential");
        credential.write(&path).unwrap();
        (path, credential.login())
    }

    #[test]
    fn an_explicit_login_beats_the_url_which_beats_the_credential_file() {
        let dir = tempfile::tempdir().unwrap();
        let (cred, cred_login) = credential_file(dir.path());
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, "from-file\n").unwrap();
        let brokers = Brokers::parse("mqtt://url:u@a,mqtt://b").unwrap();
        let all = LoginSources {
            username: Some("explicit".into()),
            password_file: Some(pwfile),
            credential_file: Some(cred.clone()),
            ..Default::default()
        };
        let pair = |u: &str, p: &str| Some((u.to_owned(), p.to_owned()));
        assert_eq!(
            users(&all.settle(brokers.clone()).unwrap()),
            [pair("explicit", "from-file"), pair("explicit", "from-file")]
        );
        let cred_only = LoginSources {
            credential_file: Some(cred),
            ..Default::default()
        };
        let derived = cred_login.password.expose();
        assert_eq!(
            users(&cred_only.settle(brokers.clone()).unwrap()),
            [pair("url", "u"), pair("agent-pi-kitchen", derived)]
        );
        assert_eq!(
            users(&LoginSources::default().settle(brokers).unwrap()),
            [pair("url", "u"), None]
        );
    }

    #[test]
    fn flags_beat_the_environment_which_beats_the_file_field_by_field() {
        let env = LoginSources::from_env(|k| match k {
            "BRAMBLE_USERNAME" => Some("env-user".into()),
            "BRAMBLE_PASSWORD" => Some("env-pw".into()),
            "BRAMBLE_CREDENTIAL" => Some(String::new()),
            _ => None,
        });
        assert_eq!(env.credential_file, None, "an empty variable is unset");
        let flags = LoginSources {
            password_file: Some("/run/pw".into()),
            ..Default::default()
        };
        let file = LoginSources {
            username: Some("file-user".into()),
            credential_file: Some("/etc/cred".into()),
            ..Default::default()
        };
        let merged = flags.or(env).or(file);
        assert_eq!(merged.username.as_deref(), Some("env-user"));
        assert_eq!(
            merged.password, None,
            "the flag's password file beats env's password"
        );
        assert_eq!(merged.password_file, Some(PathBuf::from("/run/pw")));
        assert_eq!(merged.credential_file, Some(PathBuf::from("/etc/cred")));
    }

    #[test]
    fn a_half_login_is_refused_without_showing_the_password() {
        let e = LoginSources {
            password: Some(Password::new("hunter2")),
            ..Default::default()
        }
        .explicit()
        .unwrap_err();
        assert!(matches!(e, LoginError::PasswordWithoutUsername));
        assert!(!format!("{e} {e:?}").contains("hunter2"));
        let e = LoginSources {
            username: Some("u".into()),
            ..Default::default()
        }
        .explicit()
        .unwrap_err();
        assert!(e.to_string().contains("--password-file"), "{e}");
        let e = LoginSources {
            username: Some("u".into()),
            password_file: Some("/nonexistent/pw".into()),
            ..Default::default()
        }
        .explicit()
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/pw"), "{e}");
    }

    #[test]
    fn a_broker_argument_with_a_password_is_refused_and_says_where_to_put_it() {
        assert!(refuse_password_in_argv("mqtt://u@h,mqtt://b").is_ok());
        let e = refuse_password_in_argv("mqtt://a,mqtt://u:hunter2@h").unwrap_err();
        let shown = e.to_string();
        assert!(!shown.contains("hunter2"));
        for hint in ["BRAMBLE_BROKER", "--password-file", "config file"] {
            assert!(shown.contains(hint), "{shown}");
        }
    }
}
