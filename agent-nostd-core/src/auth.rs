//! Principals, their secrets and the keys derived from them.
//!
//! Every client of a Bramble cluster speaks as a **principal**: an agent, a framework, an operator
//! (the CLI) or the master. Each principal has one **secret**, 32 random bytes the master issues
//! (`bramble credentials add`) and keeps, written as 64 lowercase hex digits. Two values are
//! derived from it, one way, with HMAC-SHA-256, so that neither gives away the other:
//!
//! - the **broker password** ([`Secret::broker_password`]), 32 hex digits, which the client sends
//!   in its MQTT CONNECT under the username [`Principal::username`]. Without TLS a LAN sniffer can
//!   read it; it lets them connect, but not speak as the principal;
//! - the **message key** ([`Secret::message_key`]), which tags the principal's messages so that the
//!   receiver knows who sent them, whatever the broker lets through (see PROTOCOL.md,
//!   "Authenticated frames");
//!   From it comes its **cipher key** (HMAC-SHA-256(message key, `"bramble/v1 cipher key"`)),
//!   which keeps the messages that carry commands and their environment readable only by the
//!   receiver (see PROTOCOL.md, "Encrypted frames");
//! - the **HTTP key** ([`Secret::http_key`]), which signs the principal's requests to the master's
//!   HTTP server (see PROTOCOL.md, "HTTP authentication").
//!
//! Nothing here allocates; it builds for the same targets as the rest of the crate.

use core::fmt;

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The length of a secret in bytes.
pub const SECRET_LEN: usize = 32;
/// The length of a message tag on the wire, in bytes (HMAC-SHA-256 truncated).
pub const TAG_LEN: usize = 8;
/// The length of an HTTP request tag, in bytes (the whole HMAC-SHA-256: HTTP has room for it).
pub const HTTP_TAG_LEN: usize = 32;

/// What a principal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PrincipalKind {
    /// A board running `bramble-agent`; its name is the agent id.
    Agent,
    /// A framework's scheduler (and its executors).
    Framework,
    /// A person or script using the CLI.
    Operator,
    /// A master (every master of a cluster shares the master principal's secret).
    Master,
}

impl PrincipalKind {
    /// Every kind, in the order they are listed.
    pub const ALL: [PrincipalKind; 4] = [
        PrincipalKind::Agent,
        PrincipalKind::Framework,
        PrincipalKind::Operator,
        PrincipalKind::Master,
    ];

    /// The kind's name: `agent`, `framework`, `operator` or `master`.
    pub const fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::Agent => "agent",
            PrincipalKind::Framework => "framework",
            PrincipalKind::Operator => "operator",
            PrincipalKind::Master => "master",
        }
    }

    /// The kind named `name`, if any.
    pub fn parse(name: &str) -> Option<PrincipalKind> {
        PrincipalKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for PrincipalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest principal name, in bytes (an agent id's limit).
pub const MAX_PRINCIPAL_NAME: usize = 32;

/// A principal: a kind and a name of 1–32 bytes of `A-Z a-z 0-9 . _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal {
    kind: PrincipalKind,
    name: heapless::String<MAX_PRINCIPAL_NAME, u8>,
}

/// Why a principal or a secret was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// The name is empty, longer than 32 bytes or holds a byte outside `A-Z a-z 0-9 . _ -`.
    InvalidName,
    /// The username is not `KIND-NAME` for a known kind.
    InvalidUsername,
    /// A secret is not 64 hex digits.
    InvalidSecret,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthError::InvalidName => "a principal name is 1-32 bytes of A-Z a-z 0-9 . _ -",
            AuthError::InvalidUsername => {
                "a username is agent-NAME, framework-NAME, operator-NAME or master-NAME"
            }
            AuthError::InvalidSecret => "a secret is 64 hex digits",
        })
    }
}

impl Principal {
    /// The principal `kind` named `name`.
    pub fn new(kind: PrincipalKind, name: &str) -> Result<Principal, AuthError> {
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid {
            return Err(AuthError::InvalidName);
        }
        let name = heapless::String::try_from(name).map_err(|_| AuthError::InvalidName)?;
        Ok(Principal { kind, name })
    }

    /// The principal whose MQTT username is `username` (`KIND-NAME`).
    pub fn from_username(username: &str) -> Result<Principal, AuthError> {
        let (kind, name) = username.split_once('-').ok_or(AuthError::InvalidUsername)?;
        let kind = PrincipalKind::parse(kind).ok_or(AuthError::InvalidUsername)?;
        Principal::new(kind, name)
    }

    /// What it is.
    pub fn kind(&self) -> PrincipalKind {
        self.kind
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its MQTT username: `KIND-NAME`, e.g. `agent-pi-kitchen`.
    pub fn username(&self) -> heapless::String<48, u8> {
        let mut out = heapless::String::new();
        // Kind (≤ 9) + '-' + name (≤ 32) fits in 48.
        let _ = out.push_str(self.kind.as_str());
        let _ = out.push('-');
        let _ = out.push_str(&self.name);
        out
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

/// A principal's secret. Its `Debug` hides it; only [`Secret::to_hex`] shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; SECRET_LEN]);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_into<const N: usize>(bytes: &[u8], out: &mut heapless::String<N, u8>) {
    for b in bytes {
        let _ = out.push(HEX[(b >> 4) as usize] as char);
        let _ = out.push(HEX[(b & 15) as usize] as char);
    }
}

impl Secret {
    /// The secret made of these bytes (the driver draws them from the OS's random source).
    pub const fn from_bytes(bytes: [u8; SECRET_LEN]) -> Secret {
        Secret(bytes)
    }

    /// The secret written as 64 hex digits (surrounding whitespace is ignored).
    pub fn from_hex(text: &str) -> Result<Secret, AuthError> {
        let text = text.trim().as_bytes();
        if text.len() != 2 * SECRET_LEN {
            return Err(AuthError::InvalidSecret);
        }
        let digit = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(AuthError::InvalidSecret),
        };
        let mut bytes = [0u8; SECRET_LEN];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = digit(text[2 * i])? << 4 | digit(text[2 * i + 1])?;
        }
        Ok(Secret(bytes))
    }

    /// The secret as 64 lowercase hex digits, for the credential files that hold it.
    pub fn to_hex(&self) -> heapless::String<{ 2 * SECRET_LEN }, u8> {
        let mut out = heapless::String::new();
        hex_into(&self.0, &mut out);
        out
    }

    fn derive(&self, label: &[u8]) -> [u8; 32] {
        hmac(&self.0, label)
    }

    /// The password for the broker: 32 hex digits derived from the secret
    /// (HMAC-SHA-256(secret, `"bramble/v1 broker password"`), first 16 bytes).
    pub fn broker_password(&self) -> heapless::String<32, u8> {
        let mut out = heapless::String::new();
        hex_into(&self.derive(b"bramble/v1 broker password")[..16], &mut out);
        out
    }

    /// The key that tags this principal's messages
    /// (HMAC-SHA-256(secret, `"bramble/v1 message key"`)).
    pub fn message_key(&self) -> MessageKey {
        MessageKey::new(self.derive(b"bramble/v1 message key"))
    }

    /// The key that signs this principal's HTTP requests
    /// (HMAC-SHA-256(secret, `"bramble/v1 http key"`)); its own label, so an HTTP tag is never a
    /// message tag or a password.
    pub fn http_key(&self) -> HttpKey {
        HttpKey(self.derive(b"bramble/v1 http key"))
    }
}

/// The key a principal's HTTP requests are signed with (see [`Secret::http_key`]).
#[derive(Clone, PartialEq, Eq)]
pub struct HttpKey([u8; 32]);

impl fmt::Debug for HttpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HttpKey(<hidden>)")
    }
}

impl HttpKey {
    /// The tag of the concatenation of `parts`: the whole HMAC-SHA-256.
    pub fn tag(&self, parts: &[&[u8]]) -> [u8; HTTP_TAG_LEN] {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// Whether `tag` is the tag of `parts`, compared in constant time.
    pub fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let expected = self.tag(parts);
        tag.len() == HTTP_TAG_LEN
            && expected
                .iter()
                .zip(tag)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// HMAC-SHA-256(`key`, `label`).
fn hmac(key: &[u8], label: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(label);
    mac.finalize().into_bytes().into()
}

/// The key a principal's messages are tagged with (see [`Secret::message_key`]), and the cipher
/// key derived from it.
#[derive(Clone, PartialEq, Eq)]
pub struct MessageKey {
    mac: [u8; 32],
    cipher: [u8; 32],
}

impl fmt::Debug for MessageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MessageKey(<hidden>)")
    }
}

impl MessageKey {
    /// The key of a cluster run without credentials (`bramble up` on loopback, an anonymous
    /// broker): the message key of the all-zero secret. Its frames still carry numbers, so
    /// duplicates and replays are refused, but anyone can make them; a master accepts them only
    /// when told to.
    pub fn anonymous() -> MessageKey {
        Secret::from_bytes([0; SECRET_LEN]).message_key()
    }

    fn new(mac: [u8; 32]) -> MessageKey {
        let cipher = hmac(&mac, b"bramble/v1 cipher key");
        MessageKey { mac, cipher }
    }

    /// XORs `bytes` with the ChaCha20 keystream (RFC 8439) of the frame whose tag is `tag` and
    /// whose number is `seq`: the cipher key, and the nonce `tag ‖ seq` (big-endian). It encrypts
    /// and decrypts alike.
    ///
    /// The tag is computed over the plaintext, so the nonce is synthetic (SIV): two frames share a
    /// keystream only if they share tag and number, which for different messages happens with
    /// chance 2⁻⁶⁴. No frame needs a nonce of its own on the wire, and no counter state shared
    /// between masters can make one repeat.
    pub fn apply_keystream(&self, tag: &[u8; TAG_LEN], seq: u32, bytes: &mut [u8]) {
        let mut nonce = [0u8; 12];
        nonce[..TAG_LEN].copy_from_slice(tag);
        nonce[TAG_LEN..].copy_from_slice(&seq.to_be_bytes());
        ChaCha20::new(&self.cipher.into(), &nonce.into()).apply_keystream(bytes);
    }

    /// The tag of the concatenation of `parts`: HMAC-SHA-256 truncated to [`TAG_LEN`] bytes.
    pub fn tag(&self, parts: &[&[u8]]) -> [u8; TAG_LEN] {
        let mut mac = HmacSha256::new_from_slice(&self.mac).expect("HMAC takes any key length");
        for part in parts {
            mac.update(part);
        }
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// Whether `tag` is the tag of `parts`, compared in constant time.
    pub fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let expected = self.tag(parts);
        tag.len() == TAG_LEN
            && expected
                .iter()
                .zip(tag)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;

    const SECRET_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn a_secret_reads_back_as_the_hex_it_was_written_as() {
        let secret = Secret::from_hex(SECRET_HEX).unwrap();
        assert_eq!(secret.to_hex().as_str(), SECRET_HEX);
        assert_eq!(
            Secret::from_hex(&SECRET_HEX.to_uppercase()).unwrap(),
            secret
        );
    }

    #[test]
    fn a_secret_of_the_wrong_length_or_with_a_non_hex_digit_is_refused() {
        assert_eq!(Secret::from_hex("abcd"), Err(AuthError::InvalidSecret));
        let bad = SECRET_HEX.replace('f', "g");
        assert_eq!(Secret::from_hex(&bad), Err(AuthError::InvalidSecret));
    }

    #[test]
    fn debug_output_never_shows_a_secret_or_a_key() {
        let secret = Secret::from_hex(SECRET_HEX).unwrap();
        let shown = format!("{secret:?} {:?}", secret.message_key());
        assert!(!shown.contains("0001"), "{shown}");
        assert_eq!(shown, "Secret(<hidden>) MessageKey(<hidden>)");
    }

    #[test]
    fn the_broker_password_and_the_message_key_are_pinned_and_differ() {
        let secret = Secret::from_hex(SECRET_HEX).unwrap();
        let password = secret.broker_password();
        assert_eq!(password.len(), 32);
        // Pinned so that a change of derivation is a visible, deliberate wire change.
        assert_eq!(password.as_str(), PINNED_PASSWORD);
        let key = secret.message_key();
        assert_ne!(
            &key.mac[..16],
            &secret.derive(b"bramble/v1 broker password")[..16]
        );
    }

    // python3: hmac.new(bytes(range(32)), b"bramble/v1 broker password", hashlib.sha256).hexdigest()[:32]
    const PINNED_PASSWORD: &str = "1c4566051c3428f074d6759a43cd356e";

    #[test]
    fn the_http_key_is_pinned_and_differs_from_the_message_key() {
        let secret = Secret::from_hex(SECRET_HEX).unwrap();
        let key = secret.http_key();
        // Pinned so that a change of derivation is a visible, deliberate wire change.
        assert_eq!(key.0, hex32(PINNED_HTTP_KEY));
        assert_ne!(key.0, secret.message_key().mac);
        let tag = key.tag(&[b"GET", b"\n", b"/artifacts/job.sh", b"\n", b"1765000000"]);
        assert_eq!(tag, hex32(PINNED_HTTP_TAG));
        assert!(key.verify(&[b"GET\n/artifacts/job.sh\n1765000000"], &tag));
        assert!(!key.verify(&[b"GET\n/artifacts/job.sh\n1765000001"], &tag));
        assert!(!key.verify(&[b"GET\n/artifacts/job.sh\n1765000000"], &tag[..31]));
        assert!(!Secret::from_bytes([7; 32])
            .http_key()
            .verify(&[b"GET\n/artifacts/job.sh\n1765000000"], &tag));
        assert_eq!(format!("{key:?}"), "HttpKey(<hidden>)");
    }

    fn hex32(text: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    // python3: k = hmac.new(bytes(range(32)), b"bramble/v1 http key", hashlib.sha256).digest()
    const PINNED_HTTP_KEY: &str =
        "2fa197cf887f14caffc7c9404e3de5fb51f0368a99068abee08283e6e1a39e78";
    // python3: hmac.new(k, b"GET\n/artifacts/job.sh\n1765000000", hashlib.sha256).hexdigest()
    const PINNED_HTTP_TAG: &str =
        "d3b51d77b1d53f3950687df39a2adb65637ad5a1488a9d70f9b2d1de67638337";

    #[test]
    fn a_tag_verifies_only_for_the_same_key_and_bytes() {
        let key = Secret::from_hex(SECRET_HEX).unwrap().message_key();
        let other = Secret::from_bytes([7; 32]).message_key();
        let tag = key.tag(&[b"bramble", b"/v1"]);
        assert!(key.verify(&[b"bramble/v1"], &tag));
        assert!(!key.verify(&[b"bramble/v2"], &tag));
        assert!(!other.verify(&[b"bramble/v1"], &tag));
        assert!(!key.verify(&[b"bramble/v1"], &tag[..7]));
    }

    #[test]
    fn the_keystream_is_pinned_and_undoes_itself() {
        let key = Secret::from_hex(SECRET_HEX).unwrap().message_key();
        // Pinned so that a change of derivation is a visible, deliberate wire change.
        assert_eq!(key.cipher, hex32(PINNED_CIPHER_KEY));
        let mut bytes = *b"run as root";
        key.apply_keystream(&[1, 2, 3, 4, 5, 6, 7, 8], 9, &mut bytes);
        // python3 (cryptography): Cipher(algorithms.ChaCha20(cipher_key, bytes(4) + bytes(
        //     [1, 2, 3, 4, 5, 6, 7, 8]) + (9).to_bytes(4, "big")), None).encryptor().update(...)
        assert_eq!(
            bytes,
            [0xaf, 0x8b, 0x53, 0xf6, 0x91, 0x84, 0x29, 0xf7, 0x7d, 0xd9, 0x0c]
        );
        key.apply_keystream(&[1, 2, 3, 4, 5, 6, 7, 8], 9, &mut bytes);
        assert_eq!(&bytes, b"run as root");
    }

    // python3: m = hmac.new(bytes(range(32)), b"bramble/v1 message key", hashlib.sha256).digest()
    //          hmac.new(m, b"bramble/v1 cipher key", hashlib.sha256).hexdigest()
    const PINNED_CIPHER_KEY: &str =
        "701d9673b477c2386300df5dcf81b413dddaa879e8d0b6c91b2e9e265ee34dff";

    #[test]
    fn another_tag_number_or_key_gives_another_keystream() {
        let key = Secret::from_hex(SECRET_HEX).unwrap().message_key();
        let stream = |key: &MessageKey, tag: [u8; TAG_LEN], seq| {
            let mut bytes = [0u8; 16];
            key.apply_keystream(&tag, seq, &mut bytes);
            bytes
        };
        let base = stream(&key, [1; 8], 9);
        assert_ne!(base, stream(&key, [2; 8], 9));
        assert_ne!(base, stream(&key, [1; 8], 10));
        assert_ne!(base, stream(&MessageKey::anonymous(), [1; 8], 9));
    }

    #[test]
    fn a_username_names_the_kind_and_the_principal() {
        let p = Principal::new(PrincipalKind::Agent, "pi-kitchen").unwrap();
        assert_eq!(p.username().as_str(), "agent-pi-kitchen");
        assert_eq!(Principal::from_username("agent-pi-kitchen").unwrap(), p);
        assert_eq!(
            Principal::from_username("framework-pi").unwrap().kind(),
            PrincipalKind::Framework
        );
        assert_eq!(
            Principal::from_username("root-x"),
            Err(AuthError::InvalidUsername)
        );
        assert_eq!(
            Principal::new(PrincipalKind::Agent, "a/b"),
            Err(AuthError::InvalidName)
        );
        assert_eq!(
            Principal::new(PrincipalKind::Agent, &"x".repeat(33)),
            Err(AuthError::InvalidName)
        );
    }
}
