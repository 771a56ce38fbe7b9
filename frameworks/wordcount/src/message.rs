//! The wordcount framework messages (postcard of [`WcMsg`] as the framework message's data).
//!
//! A map task sends `Ready`; the scheduler answers `Chunk` on the task's exec topic (and again for
//! every repeated `Ready`); the task sends its counts as `Counts` parts of at most
//! [`PART_BUDGET`] bytes, then `Done` with the number of parts.

use serde::{Deserialize, Serialize};

/// The most bytes of word counts one `Counts` part carries, leaving room within a framework message.
pub const PART_BUDGET: usize = 12 * 1024;

/// One wordcount message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WcMsg {
    /// Executor → scheduler: send me my chunk.
    Ready,
    /// Scheduler → executor: the chunk to count.
    Chunk {
        /// The text.
        text: String,
    },
    /// Executor → scheduler: part `part` of the counts.
    Counts {
        /// The part's number, from 0.
        part: u32,
        /// Words and their counts.
        words: Vec<(String, u64)>,
    },
    /// Executor → scheduler: every part is sent.
    Done {
        /// How many parts there are.
        parts: u32,
    },
}

impl WcMsg {
    /// The framework message data.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising strings and integers to a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes framework message data, refusing trailing bytes.
    pub fn decode(data: &[u8]) -> Option<Self> {
        match postcard::take_from_bytes::<Self>(data) {
            Ok((m, [])) => Some(m),
            _ => None,
        }
    }
}

/// Splits counts into `Counts` parts whose encoding stays within [`PART_BUDGET`].
pub fn parts(counts: impl IntoIterator<Item = (String, u64)>) -> Vec<WcMsg> {
    let mut out = Vec::new();
    let mut words = Vec::new();
    let mut size = 0;
    for (w, n) in counts {
        // A string is a length varint (≤ 5 bytes) and its bytes; a u64 varint is ≤ 10 bytes.
        let cost = w.len() + 15;
        if size + cost > PART_BUDGET && !words.is_empty() {
            out.push(WcMsg::Counts {
                part: out.len() as u32,
                words: std::mem::take(&mut words),
            });
            size = 0;
        }
        size += cost;
        words.push((w, n));
    }
    if !words.is_empty() || out.is_empty() {
        out.push(WcMsg::Counts {
            part: out.len() as u32,
            words,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bramble_sdk::messages::MAX_MESSAGE_DATA;

    #[test]
    fn messages_round_trip_and_garbage_is_refused() {
        for m in [
            WcMsg::Ready,
            WcMsg::Chunk { text: "a b".into() },
            WcMsg::Counts {
                part: 1,
                words: vec![("a".into(), 2)],
            },
            WcMsg::Done { parts: 2 },
        ] {
            assert_eq!(WcMsg::decode(&m.encode()), Some(m));
        }
        assert_eq!(WcMsg::decode(&[9]), None);
        assert_eq!(WcMsg::decode(&[0, 0]), None);
    }

    #[test]
    fn many_counts_are_split_into_parts_that_fit_a_framework_message() {
        let counts: Vec<(String, u64)> =
            (0..5000).map(|i| (format!("word{i}"), u64::MAX)).collect();
        let ps = parts(counts.clone());
        assert!(ps.len() > 1);
        let mut back = Vec::new();
        for (i, p) in ps.iter().enumerate() {
            assert!(p.encode().len() <= PART_BUDGET && PART_BUDGET < MAX_MESSAGE_DATA);
            let WcMsg::Counts { part, words } = p else {
                panic!("{p:?}")
            };
            assert_eq!(*part as usize, i);
            back.extend(words.iter().cloned());
        }
        assert_eq!(back, counts);
        assert_eq!(
            parts(Vec::new()).len(),
            1,
            "an empty chunk still sends one part"
        );
    }
}
