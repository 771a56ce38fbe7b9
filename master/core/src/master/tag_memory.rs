//! The tags of messages taken lately whose freshness rests on a wall-clock time (operator
//! commands, framework registrations): each is remembered until it could no longer be fresh, so a
//! replay within its window is refused, and the memory stays bounded.

use std::collections::{HashMap, VecDeque};

use agent_nostd_core::auth::TAG_LEN;

/// How many tags are remembered at most; beyond, the oldest still fresh goes (a flood of genuine
/// messages that large is not an operator's nor a framework's).
pub(super) const REMEMBERED: usize = 4_096;

/// Tags taken, each until the wall-clock second it stops being fresh.
#[derive(Debug, Clone, Default)]
pub(super) struct TagMemory {
    until: HashMap<[u8; TAG_LEN], u64>,
    order: VecDeque<([u8; TAG_LEN], u64)>,
}

impl TagMemory {
    /// Takes `tag`, fresh until `until`, at wall-clock second `now`: false when it was taken
    /// before (a replay).
    pub(super) fn take(&mut self, tag: &[u8], until: u64, now: u64) -> bool {
        while let Some(&(t, u)) = self.order.front() {
            if u >= now && self.order.len() < REMEMBERED {
                break;
            }
            self.order.pop_front();
            self.until.remove(&t);
        }
        let mut key = [0u8; TAG_LEN];
        key.copy_from_slice(&tag[..TAG_LEN.min(tag.len())]);
        if self.until.contains_key(&key) {
            return false;
        }
        self.until.insert(key, until);
        self.order.push_back((key, until));
        true
    }

    /// How many tags are remembered.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        debug_assert_eq!(self.order.len(), self.until.len());
        self.order.len()
    }
}
