//! The embedded broker's login check: a principal logs in with its username (`KIND-NAME`) and
//! the broker password derived from its secret, with a client id bound to that password
//! ([`bramble_mqtt::client_id`]) whose base is one of its own ([`super::client_ids`]). Refused
//! logins are counted and logged at most once per 10 s.
//!
//! The table is replaced whole when the store changes ([`super::reload`]); rumqttd calls
//! [`Authenticator::check`] for each CONNECT (its auth handler sees the client id, the username
//! and the password).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use agent_nostd_core::auth::Principal;
use tracing::warn;

use super::store::Store;

/// How often refused logins are logged at most.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Why a login was refused (logged; never with the password).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No username, or one that is not in the store.
    UnknownPrincipal,
    /// The password is not the principal's.
    WrongPassword,
    /// The client id is not bound to the password presented, or its base belongs to another
    /// principal.
    ForeignClientId,
}

/// The logins the broker accepts, and how many it refused.
#[derive(Debug, Default)]
pub struct Authenticator {
    /// Username → (principal, broker password).
    logins: RwLock<HashMap<String, (Principal, String)>>,
    refused: AtomicU64,
    /// When a refusal was last logged, and how many since.
    log: Mutex<(Option<Instant>, u64)>,
}

impl Authenticator {
    /// Accepts the principals of `store`.
    pub fn new(store: &Store) -> Self {
        let auth = Authenticator::default();
        auth.replace(store);
        auth
    }

    /// Accepts the principals of `store` from now on (and no others).
    pub fn replace(&self, store: &Store) {
        let logins = store
            .entries()
            .map(|e| {
                (
                    e.principal.username().as_str().to_owned(),
                    (
                        e.principal.clone(),
                        e.secret.broker_password().as_str().to_owned(),
                    ),
                )
            })
            .collect();
        *self.logins.write().unwrap_or_else(PoisonError::into_inner) = logins;
    }

    /// How many principals are accepted.
    pub fn len(&self) -> usize {
        self.logins
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no principal is accepted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Logins refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Whether the broker lets this CONNECT in; a refusal is counted and logged (rate-limited).
    pub fn check(&self, client_id: &str, username: &str, password: &str) -> bool {
        match self.judge(client_id, username, password) {
            Ok(()) => true,
            Err(refusal) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                self.log_refusal(refusal, client_id, username);
                false
            }
        }
    }

    /// The check without its side effects.
    pub fn judge(&self, client_id: &str, username: &str, password: &str) -> Result<(), Refusal> {
        let logins = self.logins.read().unwrap_or_else(PoisonError::into_inner);
        let (principal, expected) = logins.get(username).ok_or(Refusal::UnknownPrincipal)?;
        if !constant_time_eq(expected.as_bytes(), password.as_bytes()) {
            return Err(Refusal::WrongPassword);
        }
        let base =
            bramble_mqtt::unbind_client_id(client_id, password).ok_or(Refusal::ForeignClientId)?;
        if !super::client_ids::may_use(principal, base) {
            return Err(Refusal::ForeignClientId);
        }
        Ok(())
    }

    fn log_refusal(&self, refusal: Refusal, client_id: &str, username: &str) {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if log.0.is_some_and(|at| now.duration_since(at) < LOG_EVERY) {
            log.1 += 1;
            return;
        }
        let unlogged = std::mem::take(&mut log.1);
        log.0 = Some(now);
        drop(log);
        // The username and client id are printable-filtered and cut: they come from the network.
        warn!(
            reason = ?refusal,
            username = %clean(username),
            client_id = %clean(client_id),
            refused_total = self.refused(),
            "the embedded broker refused a login ({unlogged} more refused since the last such line)"
        );
    }
}

/// At most 64 printable ASCII characters of `s`.
fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect()
}

/// Equality whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_nostd_core::auth::PrincipalKind;

    fn store_with(names: &[&str]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = Store::open_or_init(dir.path()).unwrap();
        for n in names {
            store
                .issue(Principal::new(PrincipalKind::Agent, n).unwrap(), false)
                .unwrap();
        }
        (dir, store)
    }

    fn password(store: &Store, username: &str) -> String {
        let p = Principal::from_username(username).unwrap();
        store
            .credential(&p)
            .unwrap()
            .login()
            .password
            .expose()
            .to_owned()
    }

    /// `base` bound to `password`, as the principal's client connects with it.
    fn bound(base: &str, password: &str) -> String {
        bramble_mqtt::bound_client_id(base, &bramble_mqtt::Password::new(password))
    }

    #[test]
    fn a_principal_with_its_password_and_its_own_bound_client_id_is_let_in() {
        let (_dir, store) = store_with(&["pi"]);
        let auth = Authenticator::new(&store);
        let pw = password(&store, "agent-pi");
        assert!(auth.check(&bound("bramble-agent-pi", &pw), "agent-pi", &pw));
        assert!(auth.check(&bound("bramble-exec-fw-t1", &pw), "agent-pi", &pw));
        assert_eq!(auth.refused(), 0);
    }

    #[test]
    fn unknown_users_wrong_passwords_and_foreign_client_ids_are_refused_and_counted() {
        let (_dir, store) = store_with(&["pi", "other"]);
        let auth = Authenticator::new(&store);
        let pw = password(&store, "agent-pi");
        let id = bound("bramble-agent-pi", &pw);
        assert_eq!(
            auth.judge(&id, "agent-nobody", &pw),
            Err(Refusal::UnknownPrincipal)
        );
        assert_eq!(auth.judge(&id, "", ""), Err(Refusal::UnknownPrincipal));
        assert_eq!(
            auth.judge(&id, "agent-pi", &password(&store, "agent-other")),
            Err(Refusal::WrongPassword)
        );
        assert_eq!(
            auth.judge(&bound("bramble-master-x", &pw), "agent-pi", &pw),
            Err(Refusal::ForeignClientId)
        );
        assert!(!auth.check(&bound("bramble-agent-other", &pw), "agent-pi", &pw));
        assert!(!auth.check(&id, "agent-pi", "guess"));
        assert_eq!(auth.refused(), 2);
    }

    #[test]
    fn a_client_id_not_bound_to_the_password_presented_is_refused() {
        let (_dir, store) = store_with(&["pi", "other"]);
        let auth = Authenticator::new(&store);
        let pw = password(&store, "agent-pi");
        let other = password(&store, "agent-other");
        // The bare base, and the base bound to another principal's password (which agent-other
        // connects with, and which agent-pi cannot compute).
        for id in [
            "bramble-agent-pi".to_owned(),
            bound("bramble-agent-pi", &other),
            format!("{}x", bound("bramble-agent-pi", &pw)),
        ] {
            assert_eq!(
                auth.judge(&id, "agent-pi", &pw),
                Err(Refusal::ForeignClientId),
                "{id}"
            );
        }
        // agent-other bound to its own password is let in only with a base of its own.
        assert_eq!(
            auth.judge(&bound("bramble-agent-pi", &other), "agent-other", &other),
            Err(Refusal::ForeignClientId)
        );
        assert_eq!(
            auth.judge(&bound("bramble-agent-other", &other), "agent-other", &other),
            Ok(())
        );
    }

    #[test]
    fn a_replaced_table_forgets_removed_principals() {
        let (_dir, mut store) = store_with(&["pi"]);
        let auth = Authenticator::new(&store);
        let pw = password(&store, "agent-pi");
        store
            .remove(&Principal::new(PrincipalKind::Agent, "pi").unwrap())
            .unwrap();
        auth.replace(&store);
        assert!(!auth.check(&bound("bramble-agent-pi", &pw), "agent-pi", &pw));
    }
}
