//! The core's timers in one table: when the next allocation round, health check and framework
//! failover deadline are due. Offer expiry, one entry per offer, lives in the offer book.

/// A timer of the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// The next allocation round (every `allocation_interval_ms`, or at once when requested).
    Allocation,
    /// The next health check: pings, silent agents, unanswered launches and kills.
    Health,
    /// The earliest deadline of a disconnected or recovered framework.
    FrameworkDeadline,
}

impl Timer {
    const ALL: [Timer; 3] = [Timer::Allocation, Timer::Health, Timer::FrameworkDeadline];
}

/// When each [`Timer`] is due, if armed.
#[derive(Debug, Clone, Default)]
pub(super) struct Timers {
    at: [Option<u64>; Timer::ALL.len()],
}

impl Timers {
    /// Arms `timer` at `at` (replacing its time) or, with `None`, stops it.
    pub(super) fn set(&mut self, timer: Timer, at: Option<u64>) {
        self.at[timer as usize] = at;
    }

    /// Arms `timer` at `at` unless it is already due earlier.
    pub(super) fn set_earlier(&mut self, timer: Timer, at: u64) {
        let slot = &mut self.at[timer as usize];
        *slot = Some(slot.map_or(at, |t| t.min(at)));
    }

    /// Whether `timer` is armed and due by `now`.
    pub(super) fn is_due(&self, timer: Timer, now: u64) -> bool {
        self.at[timer as usize].is_some_and(|t| t <= now)
    }

    /// The earliest armed timer's time.
    pub(super) fn next(&self) -> Option<u64> {
        self.at.iter().flatten().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_wake_up_is_the_earliest_armed_timer() {
        let mut t = Timers::default();
        assert_eq!(t.next(), None);
        t.set(Timer::Health, Some(500));
        t.set(Timer::Allocation, Some(1_000));
        assert_eq!(t.next(), Some(500));
        t.set_earlier(Timer::Allocation, 200);
        t.set_earlier(Timer::Health, 900);
        assert_eq!(t.next(), Some(200));
        assert!(t.is_due(Timer::Allocation, 200) && !t.is_due(Timer::Health, 499));
        t.set(Timer::Allocation, None);
        assert_eq!(t.next(), Some(500));
    }
}
