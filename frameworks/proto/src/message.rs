//! Framework messages: data that flows between a framework's scheduler and its executors straight
//! through the broker, without the master.
//!
//! | topic | direction | QoS | retain | payload |
//! |---|---|---|---|---|
//! | `bramble/v1/framework/message/{client}` | executor → scheduler | 1 | no | [`FrameworkMessage`] |
//! | `bramble/v1/framework/exec/{client}/{task_id}` | scheduler → executor | 1 | no | [`FrameworkMessage`] |
//!
//! The payload is the version byte ([`MESSAGE_VERSION`]) followed by the postcard encoding
//! of a [`FrameworkMessage`]: `task_id: String`, `data: Vec<u8>`. What `data` holds is the
//! framework's own business. `PROTOCOL.md` at the repository root is the written spec.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::codec::{decode_versioned, encode_versioned, DecodeError};
use crate::topic::FRAMEWORK_PREFIX;

/// The version byte of framework messages. It is their own: the framework↔master protocol's
/// version moved to 2 without a change here.
pub const MESSAGE_VERSION: u8 = 1;

/// The most bytes of `data` one framework message may carry. The embedded broker refuses packets
/// above 16 KiB; this leaves room for the topic, the task id and the MQTT header.
pub const MAX_MESSAGE_DATA: usize = 15 * 1024;

/// `bramble/v1/framework/message/{client}`: executors → the scheduler behind `client`.
pub fn message_topic(client: &str) -> String {
    format!("{FRAMEWORK_PREFIX}message/{client}")
}

/// `bramble/v1/framework/exec/{client}/{task_id}`: the scheduler behind `client` → one executor.
pub fn exec_topic(client: &str, task_id: &str) -> String {
    format!("{FRAMEWORK_PREFIX}exec/{client}/{task_id}")
}

/// One framework message, in either direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameworkMessage {
    /// The task that sent it (executor → scheduler) or that it is for (scheduler → executor).
    pub task_id: String,
    /// The framework's data, at most [`MAX_MESSAGE_DATA`] bytes.
    pub data: Vec<u8>,
}

impl FrameworkMessage {
    /// The payload: version byte and postcard.
    pub fn encode(&self) -> Vec<u8> {
        encode_versioned(MESSAGE_VERSION, self)
    }

    /// Decodes a payload, checking its version byte first and refusing trailing bytes.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        decode_versioned(MESSAGE_VERSION, payload)
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use super::*;

    #[test]
    fn message_topics_are_keyed_by_client_and_task() {
        assert_eq!(message_topic("pi"), "bramble/v1/framework/message/pi");
        assert_eq!(exec_topic("pi", "t1"), "bramble/v1/framework/exec/pi/t1");
    }

    #[test]
    fn framework_messages_pin_their_bytes_and_round_trip() {
        let m = FrameworkMessage {
            task_id: "t1".into(),
            data: vec![7, 8],
        };
        assert_eq!(m.encode(), vec![1, 2, b't', b'1', 2, 7, 8]);
        assert_eq!(FrameworkMessage::decode(&m.encode()), Ok(m));
    }

    #[test]
    fn bad_framework_messages_are_refused_with_a_reason() {
        assert_eq!(FrameworkMessage::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(
            FrameworkMessage::decode(&[9, 0, 0]),
            Err(DecodeError::UnsupportedVersion { got: 9 })
        );
        assert_eq!(
            FrameworkMessage::decode(&[1, 2, b't']),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            FrameworkMessage::decode(&[1, 0, 0, 5]),
            Err(DecodeError::TrailingBytes)
        );
        assert_eq!(
            FrameworkMessage::decode(&[1, 1, 0xFF, 0]),
            Err(DecodeError::Malformed)
        );
    }
}
