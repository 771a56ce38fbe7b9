//! A broker's refusal of a login: the CONNACK return codes 4 (bad username or password) and 5
//! (not authorized), which rumqttc 0.25 reports as
//! `ConnectionError::ConnectionRefused(ConnectReturnCode)`.
//!
//! A refusal is not a network failure: retrying at once cannot fix it. One-shot clients (the
//! CLI, `bramble run`) stop with its message; long-lived ones (agent, master, schedulers) keep
//! retrying with backoff and log it at ERROR once per backoff cycle (see [`crate::Session`]).
//! The message names the username, never the password.

use core::fmt;

use rumqttc::{ConnectReturnCode, ConnectionError};

/// Why the broker refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// CONNACK 4: the broker does not know this username and password.
    BadUsernameOrPassword,
    /// CONNACK 5: the client may not connect (e.g. anonymous clients are not allowed).
    NotAuthorized,
}

/// The broker refused the login of `username` (`None`: no username was presented).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The username presented, if any.
    pub username: Option<String>,
    /// Why.
    pub reason: RefusalReason,
}

impl Refusal {
    /// The refusal `error` reports, if it is one; `username` is the one presented.
    pub fn of(error: &ConnectionError, username: Option<&str>) -> Option<Refusal> {
        let reason = match error {
            ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword) => {
                RefusalReason::BadUsernameOrPassword
            }
            ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized) => {
                RefusalReason::NotAuthorized
            }
            _ => return None,
        };
        Some(Refusal {
            username: username.map(str::to_owned),
            reason,
        })
    }
}

/// `the broker refused the login for USER: bad username or password` (or `not authorized`;
/// `anonymous` when no username was presented).
impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.reason {
            RefusalReason::BadUsernameOrPassword => "bad username or password",
            RefusalReason::NotAuthorized => "not authorized",
        };
        match &self.username {
            Some(user) => write!(f, "the broker refused the login for {user}: {why}"),
            None => write!(
                f,
                "the broker refused the login for anonymous: {why} (give a username and password, or a credential file)"
            ),
        }
    }
}

impl std::error::Error for Refusal {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bad_credentials_and_not_authorized_are_refusals() {
        let refused = |code| ConnectionError::ConnectionRefused(code);
        let r = Refusal::of(
            &refused(ConnectReturnCode::BadUserNamePassword),
            Some("fw-pi"),
        );
        assert_eq!(
            r.unwrap().to_string(),
            "the broker refused the login for fw-pi: bad username or password"
        );
        let r = Refusal::of(&refused(ConnectReturnCode::NotAuthorized), None).unwrap();
        assert!(r
            .to_string()
            .starts_with("the broker refused the login for anonymous: not authorized"));
        assert!(Refusal::of(&refused(ConnectReturnCode::ServiceUnavailable), Some("u")).is_none());
        assert!(Refusal::of(&ConnectionError::RequestsDone, Some("u")).is_none());
    }
}
