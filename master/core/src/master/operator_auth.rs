//! Proof that an operator sent a command: the command's JSON followed by an 8-byte tag made with
//! the operator principal's message key, the JSON naming the operator and the wall-clock second it
//! was made. A command is taken within [`FRESH_SECS`] of the master's clock and only once (its tag
//! is remembered until it could no longer be fresh). Operator commands are rare one-shots from the
//! CLI, which keeps no state between runs, so the clock stands in for the frame numbers agents
//! use; it needs the operator's and the master's clocks within [`FRESH_SECS`] (NTP). See
//! PROTOCOL.md, "Operator commands".

use std::fmt;

use agent_nostd_core::auth::{MessageKey, Principal, PrincipalKind, TAG_LEN};

use super::tag_memory::TagMemory;

/// How far an operator command's time may be from the master's, either way, in seconds.
pub const FRESH_SECS: u64 = 300;
const LABEL: &[u8] = b"bramble/v1 operator->master";

/// The fields every signed operator command carries besides its own.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Signer {
    /// The operator principal, e.g. `operator-admin`.
    pub operator: String,
    /// When it was made, in seconds since the Unix epoch.
    pub time: u64,
}

/// Why an operator command was refused before it was read; each is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OperatorDrop {
    /// Too short for a tag, or its JSON does not name an operator and a time.
    Unsigned,
    /// The principal is not an operator, or the master holds no key for it.
    UnknownPrincipal,
    /// The tag does not verify.
    BadTag,
    /// Its time is more than [`FRESH_SECS`] from the master's.
    Stale,
    /// Taken once already.
    Replayed,
}

impl OperatorDrop {
    /// Every reason, in the order `/metrics` lists them.
    pub const ALL: [OperatorDrop; 5] = [
        OperatorDrop::Unsigned,
        OperatorDrop::UnknownPrincipal,
        OperatorDrop::BadTag,
        OperatorDrop::Stale,
        OperatorDrop::Replayed,
    ];

    /// Its `reason` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            OperatorDrop::Unsigned => "unsigned",
            OperatorDrop::UnknownPrincipal => "unknown_principal",
            OperatorDrop::BadTag => "bad_tag",
            OperatorDrop::Stale => "stale",
            OperatorDrop::Replayed => "replayed",
        }
    }
}

impl fmt::Display for OperatorDrop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OperatorDrop::Unsigned => "not a signed operator command",
            OperatorDrop::UnknownPrincipal => "not an operator of this cluster",
            OperatorDrop::BadTag => "the tag does not verify (forged or altered)",
            OperatorDrop::Stale => "made too long ago, or in the future (check the clocks)",
            OperatorDrop::Replayed => "taken once already (replayed)",
        })
    }
}

/// Operator commands refused, by [`OperatorDrop`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OperatorDrops([u64; OperatorDrop::ALL.len()]);

impl OperatorDrops {
    /// How many were refused for `reason`.
    pub fn get(&self, reason: OperatorDrop) -> u64 {
        self.0[reason as usize]
    }

    pub(super) fn count(&mut self, reason: OperatorDrop) {
        self.0[reason as usize] += 1;
    }
}

/// Signs `json` (an operator command whose object names `operator` and `time`) with `key`: the
/// payload to publish.
pub fn sign(json: &[u8], key: &MessageKey) -> Vec<u8> {
    let tag = key.tag(&[LABEL, json]);
    let mut out = Vec::with_capacity(json.len() + TAG_LEN);
    out.extend_from_slice(json);
    out.extend_from_slice(&tag);
    out
}

/// A command that was taken: its JSON, and the key and tag it was signed with (an answer to it
/// is sealed with them, see [`super::StatusQuery`]).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Opened<'p> {
    pub json: &'p [u8],
    pub key: MessageKey,
    pub tag: [u8; TAG_LEN],
}

/// The recent commands' tags, to take each once.
#[derive(Debug, Clone, Default)]
pub(super) struct OperatorAuth {
    seen: TagMemory,
}

impl OperatorAuth {
    /// Checks `payload` at wall-clock second `wall_secs` with the operators' keys (`key_of`
    /// gives an operator's key by name): the command, once taken.
    pub(super) fn open<'p>(
        &mut self,
        payload: &'p [u8],
        wall_secs: u64,
        key_of: impl Fn(&str) -> Option<MessageKey>,
    ) -> Result<Opened<'p>, OperatorDrop> {
        let (json, tag) = payload
            .split_last_chunk::<TAG_LEN>()
            .ok_or(OperatorDrop::Unsigned)?;
        let signer: Signer = serde_json::from_slice(json).map_err(|_| OperatorDrop::Unsigned)?;
        let principal = Principal::from_username(&signer.operator)
            .map_err(|_| OperatorDrop::UnknownPrincipal)?;
        if principal.kind() != PrincipalKind::Operator {
            return Err(OperatorDrop::UnknownPrincipal);
        }
        let key = key_of(principal.name()).ok_or(OperatorDrop::UnknownPrincipal)?;
        if !key.verify(&[LABEL, json], tag) {
            return Err(OperatorDrop::BadTag);
        }
        if signer.time.abs_diff(wall_secs) > FRESH_SECS {
            return Err(OperatorDrop::Stale);
        }
        if !self.seen.take(tag, signer.time + FRESH_SECS, wall_secs) {
            return Err(OperatorDrop::Replayed);
        }
        Ok(Opened {
            json,
            key,
            tag: *tag,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_nostd_core::auth::Secret;

    fn key() -> MessageKey {
        Secret::from_bytes([4; 32]).message_key()
    }

    fn command(operator: &str, time: u64) -> Vec<u8> {
        serde_json::json!({"framework_id": "f", "task_id": "t", "operator": operator, "time": time})
            .to_string()
            .into_bytes()
    }

    fn keys(name: &str) -> Option<MessageKey> {
        (name == "admin").then(key)
    }

    #[test]
    fn a_signed_fresh_command_is_taken_once() {
        let mut auth = OperatorAuth::default();
        let signed = sign(&command("operator-admin", 1_000), &key());
        assert!(auth.open(&signed, 1_100, keys).is_ok());
        assert_eq!(auth.open(&signed, 1_101, keys), Err(OperatorDrop::Replayed));
    }

    #[test]
    fn unsigned_forged_foreign_and_stale_commands_are_refused_by_reason() {
        let mut auth = OperatorAuth::default();
        let json = command("operator-admin", 1_000);
        assert_eq!(auth.open(&json, 1_000, keys), Err(OperatorDrop::Unsigned));
        let other = Secret::from_bytes([5; 32]).message_key();
        assert_eq!(
            auth.open(&sign(&json, &other), 1_000, keys),
            Err(OperatorDrop::BadTag)
        );
        for who in ["operator-eve", "framework-admin", "nobody"] {
            assert_eq!(
                auth.open(&sign(&command(who, 1_000), &key()), 1_000, keys),
                Err(OperatorDrop::UnknownPrincipal),
                "{who}"
            );
        }
        assert_eq!(
            auth.open(&sign(&json, &key()), 1_000 + FRESH_SECS + 1, keys),
            Err(OperatorDrop::Stale)
        );
        let mut altered = sign(&json, &key());
        altered[3] ^= 1;
        assert!(auth.open(&altered, 1_000, keys).is_err());
    }

    #[test]
    fn the_replay_memory_stays_bounded() {
        let mut auth = OperatorAuth::default();
        for i in 0..(super::super::tag_memory::REMEMBERED as u64 + 10) {
            let signed = sign(&command("operator-admin", 1_000 + i % 100), &{
                let mut s = [4u8; 32];
                s[..8].copy_from_slice(&i.to_le_bytes());
                Secret::from_bytes(s).message_key()
            });
            let _ = auth.open(&signed, 1_050, |_| {
                let mut s = [4u8; 32];
                s[..8].copy_from_slice(&i.to_le_bytes());
                Some(Secret::from_bytes(s).message_key())
            });
        }
        assert!(auth.seen.len() <= super::super::tag_memory::REMEMBERED);
    }
}
