//! The core's timers in one table: when the next allocation round, health check and framework
//! failover deadline are due. Offer expiry, one entry per offer, lives in the offer book.
//!
//! It also holds the health check's ping schedule ([`PingSchedule`]): when each agent was last
//! pinged and where the next check goes on, so that the pings of one `ping_interval_ms` are spread
//! over `Config::ping_spread` checks instead of leaving in one burst.

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
    /// The latest time the next [`set`](Timers::set) of each timer may arm it at.
    within: [Option<u64>; Timer::ALL.len()],
    /// The health check's pings.
    pub(super) pings: PingSchedule,
}

impl Timers {
    /// Arms `timer` at `at` (replacing its time) or, with `None`, stops it. A time given to
    /// [`set_within`](Self::set_within) since the last `set` caps `at`.
    pub(super) fn set(&mut self, timer: Timer, at: Option<u64>) {
        let within = self.within[timer as usize].take();
        self.at[timer as usize] = match (at, within) {
            (Some(at), Some(w)) => Some(at.min(w)),
            (at, _) => at,
        };
    }

    /// The next [`set`](Self::set) of `timer` arms it at `at` at the latest (e.g. a check that
    /// left work for its next turn asks for that turn sooner than its usual period).
    pub(super) fn set_within(&mut self, timer: Timer, at: u64) {
        let slot = &mut self.within[timer as usize];
        *slot = Some(slot.map_or(at, |w| w.min(at)));
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

/// Which agents the health check pings, and when: an agent silent for `ping_interval_ms` is due
/// for a ping, and again every `ping_interval_ms` while it stays silent. A check pings at most its
/// budget, going on from where the previous check stopped (round robin over the agent slots), so
/// no agent waits behind others for more than a period.
#[derive(Debug, Clone, Default)]
pub(super) struct PingSchedule {
    /// When the agent in each slot was last pinged (0: never).
    pinged: Vec<u64>,
    /// The slot the next check starts at.
    cursor: usize,
    /// When the last full check (task retries) ran.
    full_at: Option<u64>,
}

impl PingSchedule {
    /// Whether the agent in `slot`, last seen at `last_seen`, is due for a ping at `now`.
    pub(super) fn is_due(&self, slot: usize, last_seen: u64, now: u64, interval: u64) -> bool {
        let pinged = self.pinged.get(slot).copied().unwrap_or(0);
        now.saturating_sub(last_seen) >= interval
            && (pinged <= last_seen || now.saturating_sub(pinged) >= interval)
    }

    /// The agent in `slot` was pinged at `now`; the next check starts after it.
    pub(super) fn pinged(&mut self, slot: usize, now: u64) {
        if self.pinged.len() <= slot {
            self.pinged.resize(slot + 1, 0);
        }
        self.pinged[slot] = now;
        self.cursor = slot + 1;
    }

    /// The slots in the order this check looks at them: from the cursor, wrapping around.
    pub(super) fn order(&self, slots: usize) -> impl Iterator<Item = usize> {
        let start = if self.cursor < slots { self.cursor } else { 0 };
        (start..slots).chain(0..start)
    }

    /// Whether a full check (task retries, once a `period`) is due at `now`; if so, it is noted as
    /// run.
    pub(super) fn take_full(&mut self, now: u64, period: u64) -> bool {
        let due = self
            .full_at
            .is_none_or(|at| now.saturating_sub(at) >= period);
        if due {
            self.full_at = Some(now);
        }
        due
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

    #[test]
    fn set_within_caps_the_next_set_only() {
        let mut t = Timers::default();
        t.set_within(Timer::Health, 700);
        t.set_within(Timer::Health, 600);
        t.set(Timer::Health, Some(5_000));
        assert_eq!(t.next(), Some(600));
        t.set(Timer::Health, Some(5_000));
        assert_eq!(t.next(), Some(5_000));
    }

    #[test]
    fn an_agent_is_pinged_once_per_interval_while_it_stays_silent() {
        let mut p = PingSchedule::default();
        assert!(!p.is_due(3, 1_000, 5_999, 5_000), "not silent long enough");
        assert!(p.is_due(3, 1_000, 6_000, 5_000));
        p.pinged(3, 6_000);
        assert!(
            !p.is_due(3, 1_000, 10_999, 5_000),
            "pinged less than an interval ago"
        );
        assert!(p.is_due(3, 1_000, 11_000, 5_000));
        assert!(
            p.is_due(3, 7_000, 12_000, 5_000),
            "an agent seen after its ping (or a new agent in the slot) starts afresh"
        );
    }

    #[test]
    fn the_next_check_goes_on_after_the_last_agent_pinged() {
        let mut p = PingSchedule::default();
        assert_eq!(p.order(4).collect::<Vec<_>>(), [0, 1, 2, 3]);
        p.pinged(1, 10);
        assert_eq!(p.order(4).collect::<Vec<_>>(), [2, 3, 0, 1]);
        p.pinged(3, 10);
        assert_eq!(p.order(4).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert!(p.take_full(0, 100) && !p.take_full(99, 100) && p.take_full(100, 100));
    }
}
