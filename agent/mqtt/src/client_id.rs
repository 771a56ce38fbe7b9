//! Bound client ids: a client that logs in connects with its base id (`bramble-agent-pi1`,
//! `bramble-master-NAME`, …) followed by a suffix only its password gives, so nobody else can
//! connect with that id and take its session over (a broker drops the older connection of a
//! client id that connects again).
//!
//! The bound id is `BASE-XXXXXXXXXXXXXXXX`: the base, `-`, and the first 8 bytes of
//! HMAC-SHA-256(password, `"bramble/v1 client id"` ‖ BASE) as 16 lowercase hex digits, where the
//! password is the one presented in the same CONNECT (for a Bramble principal, its broker
//! password). It is deterministic, so a persistent session survives a restart. It holds on any
//! broker: Mosquitto's password file and ACL cannot tie a client id to a login, but no principal
//! can compute another's suffix. The embedded broker also checks it ([`unbind_client_id`]) before
//! it checks that the base is one the principal may use.
//!
//! A client without a login (`bramble up` on loopback) keeps its bare base id.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::login::Password;

/// What the HMAC of a bound client id is over, before the base id.
const LABEL: &[u8] = b"bramble/v1 client id";

/// The suffix's length: `-` and 16 hex digits.
const SUFFIX_LEN: usize = 1 + 16;

/// `base` bound to `password`: `base`, `-`, and 16 lowercase hex digits that only the password
/// gives (see the module docs).
pub fn bound_client_id(base: &str, password: &Password) -> String {
    format!("{base}-{}", crate::to_hex(&suffix(base, password.expose())))
}

/// The base of `client_id` when its suffix is the one `password` gives that base; `None` for any
/// other id (a bare base, a suffix of another password, anything malformed). The suffix is
/// compared in constant time.
pub fn unbind_client_id<'a>(client_id: &'a str, password: &str) -> Option<&'a str> {
    let cut = client_id.len().checked_sub(SUFFIX_LEN)?;
    if !client_id.is_char_boundary(cut) {
        return None;
    }
    let (base, rest) = client_id.split_at(cut);
    let digits = rest.strip_prefix('-')?.as_bytes();
    let expected = crate::to_hex(&suffix(base, password));
    let diff = expected
        .bytes()
        .zip(digits)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    (diff == 0).then_some(base)
}

/// The first 8 bytes of HMAC-SHA-256(password, LABEL ‖ base).
fn suffix(base: &str, password: &str) -> [u8; 8] {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(password.as_bytes()).expect("HMAC takes any key length");
    mac.update(LABEL);
    mac.update(base.as_bytes());
    let tag = mac.finalize().into_bytes();
    let mut out = [0u8; 8];
    out.copy_from_slice(&tag[..8]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_id_is_the_base_and_the_first_eight_bytes_of_the_hmac_in_hex() {
        // python3: hmac.new(b"hunter2", b"bramble/v1 client id" + b"bramble-agent-pi1",
        //   hashlib.sha256).hexdigest()[:16]
        let id = bound_client_id("bramble-agent-pi1", &Password::new("hunter2"));
        assert_eq!(id, "bramble-agent-pi1-af922600d31dafde");
    }

    #[test]
    fn the_same_base_and_password_always_give_the_same_id() {
        let pw = Password::new("0123456789abcdef0123456789abcdef");
        assert_eq!(
            bound_client_id("bramble-master-m1", &pw),
            bound_client_id("bramble-master-m1", &pw)
        );
        assert_ne!(
            bound_client_id("bramble-master-m1", &pw),
            bound_client_id("bramble-master-m2", &pw)
        );
    }

    #[test]
    fn an_id_unbinds_to_its_base_under_its_own_password_only() {
        let pw = Password::new("hunter2");
        for base in ["bramble-agent-pi1", "bramble-exec-pi-task-7", "x", ""] {
            let id = bound_client_id(base, &pw);
            assert_eq!(unbind_client_id(&id, "hunter2"), Some(base), "{id}");
            assert_eq!(unbind_client_id(&id, "hunter3"), None, "{id}");
        }
    }

    #[test]
    fn a_bare_base_a_foreign_suffix_or_a_malformed_id_does_not_unbind() {
        let pw = Password::new("hunter2");
        let id = bound_client_id("bramble-agent-pi1", &pw);
        assert_eq!(unbind_client_id("bramble-agent-pi1", "hunter2"), None);
        // Another principal's id, bound under its own password, is not this one's.
        let theirs = bound_client_id("bramble-agent-pi1", &Password::new("evil"));
        assert_eq!(unbind_client_id(&theirs, "hunter2"), None);
        // The suffix in upper case, one digit off, without its dash, cut short.
        assert_eq!(unbind_client_id(&id.to_uppercase(), "hunter2"), None);
        let mut off = id.clone();
        let last = off.pop().unwrap();
        off.push(if last == '0' { '1' } else { '0' });
        assert_eq!(unbind_client_id(&off, "hunter2"), None);
        let dashless = id.replacen("pi1-", "pi1x", 1);
        assert_eq!(unbind_client_id(&dashless, "hunter2"), None);
        assert_eq!(unbind_client_id(&id[..id.len() - 1], "hunter2"), None);
        for short in ["", "-", "0123456789abcdef", "ééééééééé"] {
            assert_eq!(unbind_client_id(short, "hunter2"), None, "{short}");
        }
    }
}
