//! The username and password a client presents to the broker.
//!
//! A [`Password`] never shows itself: its `Debug` and `Display` print `<hidden>`, so a password
//! cannot reach a log line, an error or CLI output by accident. Where the login comes from (a URL's
//! userinfo, a config file, an environment variable, a password file, or a principal's credential)
//! is each binary's business; this crate only carries it to the broker.

use core::fmt;

/// A broker password. Only [`Password::expose`] shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// A password from its text.
    pub fn new(text: impl Into<String>) -> Self {
        Password(text.into())
    }

    /// The password itself, for the CONNECT packet.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<hidden>")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<hidden>")
    }
}

/// A username and password for the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The MQTT username (for a Bramble principal, `KIND-NAME`).
    pub username: String,
    /// The password.
    pub password: Password,
}

impl Login {
    /// A login from a username and a password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Login {
            username: username.into(),
            password: Password::new(password),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_prints_its_username_but_never_its_password() {
        let login = Login::new("agent-pi", "hunter2");
        let shown = format!("{login:?} {}", login.password);
        assert!(shown.contains("agent-pi"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(login.password.expose(), "hunter2");
    }
}
