//! What a `pi` executor sends its scheduler: postcard of [`PiResult`] as the framework message's data.

use serde::{Deserialize, Serialize};

/// One task's samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PiResult {
    /// The task's index in the job.
    pub index: u32,
    /// Samples that fell inside the quarter circle.
    pub inside: u64,
    /// Samples drawn.
    pub total: u64,
}

impl PiResult {
    /// The framework message data.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising three integers to a Vec cannot fail.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes framework message data, refusing trailing bytes and impossible counts.
    pub fn decode(data: &[u8]) -> Option<Self> {
        match postcard::take_from_bytes::<Self>(data) {
            Ok((r, [])) if r.inside <= r.total => Some(r),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_round_trip_and_nonsense_is_refused() {
        let r = PiResult {
            index: 3,
            inside: 785,
            total: 1000,
        };
        assert_eq!(PiResult::decode(&r.encode()), Some(r));
        let bad = PiResult {
            index: 3,
            inside: 1001,
            total: 1000,
        };
        assert_eq!(PiResult::decode(&bad.encode()), None);
        assert_eq!(PiResult::decode(&[1, 2]), None);
    }
}
