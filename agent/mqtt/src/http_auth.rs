//! Signed HTTP requests: how a principal proves who it is to the master's HTTP server without
//! sending its secret (the agent fetches artifacts over plain `http://`).
//!
//! A request carries
//!
//! ```text
//! Authorization: Bramble principal="agent-pi", time="1765000000", tag="<64 hex digits>"
//! ```
//!
//! where `time` is the client's clock in Unix seconds and `tag` is
//! HMAC-SHA-256(http key, `METHOD "\n" PATH "\n" TIME`), under the principal's HTTP key
//! ([`Secret::http_key`]); `PATH` is the request target as sent (path and query). The server
//! looks the principal's key up, checks the tag (in constant time) and takes the request only
//! when `time` is within [`MAX_SKEW_SECS`] of its own clock: boards must run NTP. Within that
//! window the same request can be replayed (it fetches the same file again, which the sniffer
//! that saw the first one already has); after it, it is refused as stale. See PROTOCOL.md,
//! "HTTP authentication".

use std::fmt;

use agent_nostd_core::auth::{HttpKey, Principal, Secret, HTTP_TAG_LEN};

use crate::Credential;

/// The scheme of the `Authorization` header, and the challenge of a 401's `WWW-Authenticate`.
pub const SCHEME: &str = "Bramble";
/// How far a request's time may be from the server's clock, either way, in seconds.
pub const MAX_SKEW_SECS: u64 = 300;

/// Why a request's signature was refused; [`Refused::label`] names it in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refused {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header that is not a Bramble signature.
    Malformed,
    /// A principal the server has no key for (or that may not make this request).
    UnknownPrincipal,
    /// The tag is not the principal's for this request.
    BadTag,
    /// A genuine tag, but its time is more than [`MAX_SKEW_SECS`] from the server's clock.
    Stale,
}

impl Refused {
    /// Every reason, in the order metrics list them.
    pub const ALL: [Refused; 5] = [
        Refused::Missing,
        Refused::Malformed,
        Refused::UnknownPrincipal,
        Refused::BadTag,
        Refused::Stale,
    ];

    /// The reason's label: `missing`, `malformed`, `unknown_principal`, `bad_tag` or `stale`.
    pub const fn label(self) -> &'static str {
        match self {
            Refused::Missing => "missing",
            Refused::Malformed => "malformed",
            Refused::UnknownPrincipal => "unknown_principal",
            Refused::BadTag => "bad_tag",
            Refused::Stale => "stale",
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refused::Missing => "no Authorization header",
            Refused::Malformed => "the Authorization header is not a Bramble signature",
            Refused::UnknownPrincipal => "the principal has no key here",
            Refused::BadTag => "the tag does not match the request",
            Refused::Stale => "the request's time is more than 300 s from the server's clock",
        })
    }
}

/// The tag of `method path` at `time` under `key`.
pub fn tag(key: &HttpKey, method: &str, path: &str, time: u64) -> [u8; HTTP_TAG_LEN] {
    let time = time.to_string();
    key.tag(&[
        method.as_bytes(),
        b"\n",
        path.as_bytes(),
        b"\n",
        time.as_bytes(),
    ])
}

/// A client's signer: its principal and HTTP key (the key is hidden from `Debug`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    username: String,
    key: HttpKey,
}

impl Signer {
    /// Signs as `principal` with the key derived from `secret`.
    pub fn new(principal: &Principal, secret: &Secret) -> Signer {
        Signer {
            username: principal.username().as_str().to_owned(),
            key: secret.http_key(),
        }
    }

    /// Signs as the credential's principal.
    pub fn from_credential(credential: &Credential) -> Signer {
        Signer::new(&credential.principal, &credential.secret)
    }

    /// The `Authorization` header value for `method path` at `time` (Unix seconds).
    pub fn authorization(&self, method: &str, path: &str, time: u64) -> String {
        let hex = crate::to_hex(&tag(&self.key, method, path, time));
        format!(
            "{SCHEME} principal=\"{}\", time=\"{time}\", tag=\"{hex}\"",
            self.username
        )
    }
}

/// A parsed `Authorization` header: who claims to sign, when, and the tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The claimed principal.
    pub principal: Principal,
    /// The client's time, Unix seconds.
    pub time: u64,
    /// The tag.
    pub tag: [u8; HTTP_TAG_LEN],
}

impl Authorization {
    /// Parses a header value: `Bramble principal="…", time="…", tag="…"` (parameters in any
    /// order, each once; nothing else).
    pub fn parse(header: &str) -> Result<Authorization, Refused> {
        let rest = header
            .strip_prefix(SCHEME)
            .and_then(|r| r.strip_prefix(' '))
            .ok_or(Refused::Malformed)?;
        let (mut principal, mut time, mut tag) = (None, None, None);
        for param in rest.split(',') {
            let (name, value) = param.trim().split_once('=').ok_or(Refused::Malformed)?;
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .ok_or(Refused::Malformed)?;
            let slot = match name {
                "principal" => &mut principal,
                "time" => &mut time,
                "tag" => &mut tag,
                _ => return Err(Refused::Malformed),
            };
            if slot.replace(value).is_some() {
                return Err(Refused::Malformed);
            }
        }
        let principal = Principal::from_username(principal.ok_or(Refused::Malformed)?)
            .map_err(|_| Refused::Malformed)?;
        let time = time.ok_or(Refused::Malformed)?;
        if time.is_empty() || time.len() > 20 || !time.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Refused::Malformed);
        }
        let time = time.parse().map_err(|_| Refused::Malformed)?;
        let tag = parse_tag(tag.ok_or(Refused::Malformed)?).ok_or(Refused::Malformed)?;
        Ok(Authorization {
            principal,
            time,
            tag,
        })
    }

    /// Checks the tag against `key` for `method path`, then the time against `now` (Unix
    /// seconds): a genuine request out of the window is [`Refused::Stale`].
    pub fn verify(&self, key: &HttpKey, method: &str, path: &str, now: u64) -> Result<(), Refused> {
        let time = self.time.to_string();
        let genuine = key.verify(
            &[
                method.as_bytes(),
                b"\n",
                path.as_bytes(),
                b"\n",
                time.as_bytes(),
            ],
            &self.tag,
        );
        if !genuine {
            return Err(Refused::BadTag);
        }
        if self.time.abs_diff(now) > MAX_SKEW_SECS {
            return Err(Refused::Stale);
        }
        Ok(())
    }
}

fn parse_tag(hex: &str) -> Option<[u8; HTTP_TAG_LEN]> {
    let hex = hex.as_bytes();
    if hex.len() != 2 * HTTP_TAG_LEN {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; HTTP_TAG_LEN];
    for (i, b) in out.iter_mut().enumerate() {
        *b = digit(hex[2 * i])? << 4 | digit(hex[2 * i + 1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_nostd_core::auth::PrincipalKind;

    const NOW: u64 = 1_765_000_000;
    const PATH: &str = "/artifacts/job.sh";

    fn pi() -> (Principal, Secret) {
        (
            Principal::new(PrincipalKind::Agent, "pi").unwrap(),
            Secret::from_bytes([3; 32]),
        )
    }

    fn signed(time: u64) -> (Authorization, HttpKey) {
        let (principal, secret) = pi();
        let header = Signer::new(&principal, &secret).authorization("GET", PATH, time);
        (Authorization::parse(&header).unwrap(), secret.http_key())
    }

    #[test]
    fn a_signed_request_verifies_under_the_principals_key() {
        let (auth, key) = signed(NOW);
        assert_eq!(auth.principal.username().as_str(), "agent-pi");
        assert_eq!(auth.time, NOW);
        assert_eq!(auth.verify(&key, "GET", PATH, NOW), Ok(()));
    }

    #[test]
    fn the_header_carries_the_principal_the_time_and_the_tag_but_never_the_secret() {
        let (principal, secret) = pi();
        let header = Signer::new(&principal, &secret).authorization("GET", PATH, NOW);
        assert!(
            header.starts_with("Bramble principal=\"agent-pi\", time=\"1765000000\", tag=\""),
            "{header}"
        );
        assert!(!header.contains(secret.to_hex().as_str()));
        assert!(!header.contains(&"03".repeat(32)));
        assert!(!format!("{:?}", Signer::new(&principal, &secret)).contains("03030303"));
    }

    #[test]
    fn a_tag_under_another_key_is_a_bad_tag() {
        let (auth, _) = signed(NOW);
        let other = Secret::from_bytes([4; 32]).http_key();
        assert_eq!(auth.verify(&other, "GET", PATH, NOW), Err(Refused::BadTag));
    }

    #[test]
    fn a_tag_for_another_path_or_method_is_a_bad_tag() {
        let (auth, key) = signed(NOW);
        assert_eq!(
            auth.verify(&key, "GET", "/artifacts/other", NOW),
            Err(Refused::BadTag)
        );
        assert_eq!(
            auth.verify(&key, "GET", "/artifacts/job.sh?x", NOW),
            Err(Refused::BadTag)
        );
        assert_eq!(auth.verify(&key, "POST", PATH, NOW), Err(Refused::BadTag));
    }

    #[test]
    fn a_changed_time_is_a_bad_tag_and_a_genuine_old_one_is_stale() {
        let (mut auth, key) = signed(NOW);
        auth.time += 1;
        assert_eq!(auth.verify(&key, "GET", PATH, NOW), Err(Refused::BadTag));
        for time in [NOW - MAX_SKEW_SECS - 1, NOW + MAX_SKEW_SECS + 1, 0] {
            let (auth, key) = signed(time);
            assert_eq!(
                auth.verify(&key, "GET", PATH, NOW),
                Err(Refused::Stale),
                "{time}"
            );
        }
        for time in [NOW - MAX_SKEW_SECS, NOW + MAX_SKEW_SECS] {
            let (auth, key) = signed(time);
            assert_eq!(auth.verify(&key, "GET", PATH, NOW), Ok(()), "{time}");
        }
    }

    #[test]
    fn the_same_request_replayed_within_the_window_is_accepted_by_design() {
        // No nonce and no server state: a replay within ±300 s fetches the same file again,
        // which whoever saw the first request already saw. After the window it is stale.
        let (auth, key) = signed(NOW);
        assert_eq!(auth.verify(&key, "GET", PATH, NOW), Ok(()));
        assert_eq!(auth.verify(&key, "GET", PATH, NOW + 200), Ok(()));
        assert_eq!(
            auth.verify(&key, "GET", PATH, NOW + MAX_SKEW_SECS + 1),
            Err(Refused::Stale)
        );
    }

    #[test]
    fn headers_that_are_not_bramble_signatures_are_malformed() {
        let tag = "ab".repeat(32);
        for bad in [
            String::new(),
            "Basic dXNlcjpwYXNz".to_owned(),
            "Bramble".to_owned(),
            "Bramble principal=\"agent-pi\", time=\"1\"".to_owned(),
            format!("Bramble principal=\"agent-pi\", time=\"-1\", tag=\"{tag}\""),
            format!("Bramble principal=\"agent-pi\", time=\"1 \", tag=\"{tag}\""),
            format!("Bramble principal=\"pi\", time=\"1\", tag=\"{tag}\""),
            format!("Bramble principal=\"agent-a/b\", time=\"1\", tag=\"{tag}\""),
            format!(
                "Bramble principal=\"agent-pi\", time=\"1\", tag=\"{}\"",
                &tag[1..]
            ),
            format!(
                "Bramble principal=\"agent-pi\", time=\"1\", tag=\"{}\"",
                "zz".repeat(32)
            ),
            format!("Bramble principal=\"agent-pi\", time=\"1\", tag=\"{tag}\", tag=\"{tag}\""),
            format!("Bramble principal=\"agent-pi\", time=\"1\", tag=\"{tag}\", x=\"y\""),
            format!("Bramble principal=agent-pi, time=\"1\", tag=\"{tag}\""),
            format!(
                "Bramble principal=\"agent-pi\", time=\"99999999999999999999999\", tag=\"{tag}\""
            ),
        ] {
            assert_eq!(Authorization::parse(&bad), Err(Refused::Malformed), "{bad}");
        }
        let good = format!("Bramble tag=\"{tag}\",time=\"7\",  principal=\"operator-admin\"");
        let auth = Authorization::parse(&good).unwrap();
        assert_eq!(auth.principal.kind(), PrincipalKind::Operator);
        assert_eq!(auth.time, 7);
        assert_eq!(auth.tag, [0xab; 32]);
    }
}
