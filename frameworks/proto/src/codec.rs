//! The codec of framework↔master payloads: one version byte, then postcard; a decode checks the
//! version first and refuses trailing bytes. An event travels in an [`EventEnvelope`]: after the
//! version byte comes the sending master's epoch (a varint), then the event.

use alloc::vec;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::{Call, Event, FRAMEWORK_PROTOCOL_VERSION};

/// An [`Event`] with the epoch of the master that sent it: the fencing token. A framework acts
/// only on events of the newest master epoch it has seen, so a deposed master that still thinks
/// it leads cannot mislead it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// The sending master's epoch.
    pub epoch: u64,
    /// The event.
    pub event: Event,
}

/// Why a framework payload could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The payload is empty.
    #[error("empty payload")]
    Empty,
    /// The version byte is not [`FRAMEWORK_PROTOCOL_VERSION`].
    #[error("framework protocol version {got} is not supported (this build speaks {FRAMEWORK_PROTOCOL_VERSION})")]
    UnsupportedVersion {
        /// The version byte received.
        got: u8,
    },
    /// The payload ends in the middle of a message.
    #[error("payload is truncated")]
    Truncated,
    /// The payload is not a valid message.
    #[error("payload is not a valid message")]
    Malformed,
    /// A whole message was read but bytes are left over.
    #[error("payload has bytes after the message")]
    TrailingBytes,
}

/// `version`, then the postcard encoding of `msg`.
pub(crate) fn encode_versioned<T: Serialize>(version: u8, msg: &T) -> Vec<u8> {
    let mut out = vec![version];
    // Serialising to a Vec cannot fail: every type here is plainly serialisable.
    let body = postcard::to_allocvec(msg).unwrap_or_default();
    out.extend_from_slice(&body);
    out
}

/// Decodes a payload of `version`, checking the version byte first and refusing trailing bytes.
pub(crate) fn decode_versioned<T: for<'de> Deserialize<'de>>(
    version: u8,
    payload: &[u8],
) -> Result<T, DecodeError> {
    let (&got, body) = payload.split_first().ok_or(DecodeError::Empty)?;
    if got != version {
        return Err(DecodeError::UnsupportedVersion { got });
    }
    match postcard::take_from_bytes::<T>(body) {
        Ok((msg, [])) => Ok(msg),
        Ok(_) => Err(DecodeError::TrailingBytes),
        Err(postcard::Error::DeserializeUnexpectedEnd) => Err(DecodeError::Truncated),
        Err(_) => Err(DecodeError::Malformed),
    }
}

impl Call {
    /// The payload: version byte and postcard.
    pub fn encode(&self) -> Vec<u8> {
        encode_versioned(FRAMEWORK_PROTOCOL_VERSION, self)
    }

    /// Decodes a payload, checking its version byte first and refusing trailing bytes.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        decode_versioned(FRAMEWORK_PROTOCOL_VERSION, payload)
    }
}

impl Event {
    /// The payload as sent by the master of `epoch`: version byte, epoch, then the event.
    pub fn encode_from(&self, epoch: u64) -> Vec<u8> {
        encode_versioned(FRAMEWORK_PROTOCOL_VERSION, &(epoch, self))
    }

    /// This event as sent by the master of `epoch`.
    pub fn from_epoch(self, epoch: u64) -> EventEnvelope {
        EventEnvelope { epoch, event: self }
    }
}

impl EventEnvelope {
    /// The payload: version byte, epoch, then the event.
    pub fn encode(&self) -> Vec<u8> {
        self.event.encode_from(self.epoch)
    }

    /// Decodes a payload, checking its version byte first and refusing trailing bytes.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        decode_versioned(FRAMEWORK_PROTOCOL_VERSION, payload)
    }
}

#[cfg(test)]
mod tests {
    use alloc::string::String;
    use alloc::sync::Arc;

    use agent_nostd_core::wire::{Reason, TaskState};
    use agent_nostd_core::Resources;

    use super::*;
    use crate::{
        Accept, Acknowledge, AgentDescription, ArtifactInfo, Attribute, Decline, ErrorCode, Kill,
        Offer, ReRegister, Register, StatusUpdate, TaskInfo,
    };

    #[test]
    fn payloads_start_with_the_version_byte_and_pin_their_bytes() {
        assert_eq!(Call::Revive.encode(), vec![5, 4]);
        // An event: version, the master's epoch (varint), then the event.
        assert_eq!(
            Event::Rescind { offer_id: 300 }.encode_from(7),
            vec![5, 7, 2, 0xAC, 0x02]
        );
        assert_eq!(
            Event::Rescind { offer_id: 300 }.encode_from((1 << 16) | 1),
            vec![5, 0x81, 0x80, 0x04, 2, 0xAC, 0x02]
        );
        let kill = Call::Kill(Kill {
            task_id: "t1".into(),
            grace_ms: 5,
        });
        assert_eq!(kill.encode(), vec![5, 6, 2, b't', b'1', 5]);
        let ack = Call::Acknowledge(Acknowledge {
            agent_id: "a".into(),
            task_id: "t1".into(),
            update_id: 300,
        });
        assert_eq!(
            ack.encode(),
            vec![5, 10, 1, b'a', 2, b't', b'1', 0xAC, 0x02]
        );
        assert_eq!(Call::Gone { connection: 7 }.encode(), vec![5, 9, 7]);
        // A task's artifacts follow its resources: name, url, sha256, executable, variants.
        let accept = Call::Accept(Accept {
            offer_id: 1,
            tasks: vec![TaskInfo::new("t", &["./x"], Resources::new(1, 1, 0))
                .with_artifact(ArtifactInfo::new("x", "http://m/x", [7; 32]).executable())],
        });
        let mut golden = vec![5, 2, 1, 1, 1, b't', 1, 3, b'.', b'/', b'x', 0, 1, 1, 0, 1];
        golden.extend_from_slice(&[1, b'x', 10]);
        golden.extend_from_slice(b"http://m/x");
        golden.extend_from_slice(&[7; 32]);
        golden.extend_from_slice(&[1, 0]);
        assert_eq!(accept.encode(), golden);
    }

    /// The pinned examples in PROTOCOL.md are these encodings.
    #[test]
    fn the_protocol_docs_pinned_examples_are_what_the_code_encodes() {
        let doc = include_str!("../../../PROTOCOL.md");
        let examples = [
            ("`Call::Revive`", Call::Revive.encode()),
            (
                "`Call::Kill { task_id: \"t1\", grace_ms: 5 }`",
                Call::Kill(Kill {
                    task_id: "t1".into(),
                    grace_ms: 5,
                })
                .encode(),
            ),
            (
                "`Call::Acknowledge { agent_id: \"a\", task_id: \"t1\", update_id: 300 }`",
                Call::Acknowledge(Acknowledge {
                    agent_id: "a".into(),
                    task_id: "t1".into(),
                    update_id: 300,
                })
                .encode(),
            ),
            (
                "`Call::Gone { connection: 7 }`",
                Call::Gone { connection: 7 }.encode(),
            ),
            (
                "`Event::Rescind { offer_id: 300 }` from epoch 7",
                Event::Rescind { offer_id: 300 }.encode_from(7),
            ),
            (
                "`Event::Rescind { offer_id: 300 }` from epoch 65537 (term 1, tiebreak 1)",
                Event::Rescind { offer_id: 300 }.encode_from((1 << 16) | 1),
            ),
        ];
        for (name, bytes) in examples {
            let hex: Vec<String> = bytes.iter().map(|b| alloc::format!("{b:02X}")).collect();
            let row = alloc::format!("| {name} | `{}` |", hex.join(" "));
            assert!(doc.contains(&row), "PROTOCOL.md lacks the row {row}");
        }
    }

    #[test]
    fn every_call_and_event_round_trips() {
        let calls = [
            Call::Register(Register::new("pi")),
            Call::ReRegister(ReRegister {
                framework_id: "1-2".into(),
                info: Register::new("pi"),
            }),
            Call::Accept(Accept {
                offer_id: 9,
                tasks: vec![TaskInfo::new("t1", &["/bin/true"], Resources::new(1, 2, 3))],
            }),
            Call::Decline(Decline {
                offer_ids: vec![1, 2],
                refuse_seconds: Some(30),
            }),
            Call::Suppress,
            Call::Reconcile { task_ids: vec![] },
            Call::Teardown,
            Call::Gone {
                connection: 1 << 40,
            },
            Call::Acknowledge(Acknowledge {
                agent_id: "pi4".into(),
                task_id: "t1".into(),
                update_id: u32::MAX,
            }),
        ];
        for c in calls {
            assert_eq!(Call::decode(&c.encode()), Ok(c));
        }
        let events = [
            Event::Registered {
                framework_id: "1-2".into(),
                master_epoch: 7,
            },
            Event::Offers(vec![Offer {
                offer_id: 1,
                agent: Arc::new(AgentDescription {
                    agent_id: "pi4".into(),
                    hostname: "pi4.lan".into(),
                    arch: "aarch64".into(),
                    attributes: vec![Attribute {
                        key: "sensor".into(),
                        value: "bme280".into(),
                    }],
                }),
                resources: Resources::new(4000, 4096, 0),
            }]),
            Event::Update(StatusUpdate {
                task_id: "t1".into(),
                agent_id: Some("pi4".into()),
                state: TaskState::Running,
                reason: Reason::None,
                message: String::new(),
                update_id: Some(17),
            }),
            Event::Update(StatusUpdate {
                task_id: "t2".into(),
                agent_id: None,
                state: TaskState::Lost,
                reason: Reason::UnknownTask,
                message: "unknown".into(),
                update_id: None,
            }),
            Event::AgentLost {
                agent_id: "pi4".into(),
            },
            Event::Error {
                code: ErrorCode::AcceptRefused,
                offer_id: Some(1),
                message: "no".into(),
            },
        ];
        for (epoch, e) in events.into_iter().enumerate() {
            let envelope = e.from_epoch(epoch as u64 * 1_000_003);
            assert_eq!(EventEnvelope::decode(&envelope.encode()), Ok(envelope));
        }
    }

    #[test]
    fn bad_payloads_are_refused_with_a_reason() {
        assert_eq!(Call::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(
            Call::decode(&[3, 4]),
            Err(DecodeError::UnsupportedVersion { got: 3 })
        );
        assert_eq!(Call::decode(&[5, 4, 0]), Err(DecodeError::TrailingBytes));
        assert_eq!(Call::decode(&[5, 100]), Err(DecodeError::Malformed));
        assert_eq!(Call::decode(&[5, 6, 5, b't']), Err(DecodeError::Truncated));
        // A version 3 event (no epoch) is refused, not misread.
        assert_eq!(
            EventEnvelope::decode(&[3, 2, 0xAC, 0x02]),
            Err(DecodeError::UnsupportedVersion { got: 3 })
        );
        assert_eq!(EventEnvelope::decode(&[5, 7]), Err(DecodeError::Truncated));
    }
}
