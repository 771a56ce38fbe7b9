//! Status updates (ids reserved in blocks, retries with backoff, acknowledgements) and resource
//! reports (heartbeat and early reports on significant change).

use heapless::{Deque, String};

use super::table::{Pending, UPDATES_PER_TASK};
use super::*;
use crate::wire::StatusUpdate;

impl AgentCore {
    pub(super) fn take_update_id(&mut self) -> u32 {
        if self.update_ids_left == 0 {
            // A new block: checkpoint its end before any of its ids goes out.
            self.update_ids_left = UPDATE_ID_BLOCK;
            self.generation = self.generation.wrapping_add(1);
        }
        self.update_ids_left -= 1;
        let id = self.next_update_id;
        self.next_update_id = self.next_update_id.checked_add(1).unwrap_or(1);
        id
    }

    pub(super) fn new_pending(&mut self, now: u64, state: TaskState, reason: Reason) -> Pending {
        Pending {
            update_id: self.take_update_id(),
            state,
            reason,
            next_send: now,
            delay_ms: self.config.status_backoff.initial_ms,
            attempts: 0,
        }
    }

    pub(super) fn push_update(&mut self, i: usize, now: u64, state: TaskState, reason: Reason) {
        let pending = self.new_pending(now, state, reason);
        let updates = &mut self.slots[i].updates;
        // A task has at most STARTING, RUNNING and one terminal update, fewer than the capacity.
        debug_assert!(!updates.is_full());
        if updates.push_back(pending).is_err() {
            self.stats.orphans_dropped += 1;
        }
        self.check_report_change(now);
    }

    pub(super) fn make_updates_due(&mut self, now: u64) {
        let initial = self.config.status_backoff.initial_ms;
        let pending = self
            .slots
            .iter_mut()
            .flat_map(|s| s.updates.iter_mut())
            .chain(self.orphans.iter_mut().map(|o| &mut o.pending));
        for p in pending {
            p.next_send = now;
            p.delay_ms = initial;
        }
    }

    pub(super) fn poll_status(&mut self, now: u64, buf: &mut TransmitBuf) -> Option<Transmit> {
        // The most overdue sendable update among tasks, then orphans.
        let slot = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| next_update(&s.updates).map(|(k, t)| (i, k, t)))
            .filter(|&(_, _, t)| t <= now)
            .min_by_key(|&(_, _, t)| t)
            .map(|(i, k, _)| (i, k));
        let (fw, task, pending, message) = if let Some((i, k)) = slot {
            let s = &mut self.slots[i];
            let terminal_msg = s.message.clone();
            let p = s.updates.iter_mut().nth(k)?;
            let msg = if p.state.is_terminal() {
                terminal_msg
            } else {
                String::new()
            };
            (s.key.framework_id.clone(), s.key.task_id.clone(), p, msg)
        } else {
            let o = self
                .orphans
                .iter_mut()
                .filter(|o| o.pending.next_send <= now)
                .min_by_key(|o| o.pending.next_send)?;
            let mut msg = String::new();
            let _ = msg.push_str(match o.pending.reason {
                Reason::AgentFull => "agent task table is full",
                Reason::InvalidTask => "framework or task id is not a valid id",
                _ => "no such task on this agent",
            });
            (
                o.key.framework_id.clone(),
                o.key.task_id.clone(),
                &mut o.pending,
                msg,
            )
        };
        let update = StatusUpdate {
            framework_id: fw,
            task_id: task,
            update_id: pending.update_id,
            state: pending.state,
            reason: pending.reason,
            message,
        };
        let delay = pending.delay_ms;
        pending.delay_ms = self.config.status_backoff.next(delay);
        pending.next_send = now + u64::from(jitter(&mut self.rng, delay));
        if pending.attempts > 0 {
            self.stats.status_retries += 1;
        }
        pending.attempts = pending.attempts.saturating_add(1);
        self.stats.status_sent += 1;
        self.encode(&AgentMsg::Status(update), buf)
    }

    pub(super) fn current_report(&self) -> ResourceReport {
        let sample = self.sample.unwrap_or(ResourceSample {
            free: self.info.total.saturating_sub(&self.allocated()),
            soc_temp_decidegrees: None,
            throttled: 0,
        });
        let running = self.slots.iter().filter(|s| s.holds_resources()).count();
        ResourceReport {
            free: sample.free,
            running_tasks: u8::try_from(running).unwrap_or(u8::MAX),
            soc_temp_decidegrees: ResourceReport::temperature_field(sample.soc_temp_decidegrees),
            throttled: sample.throttled,
        }
    }

    pub(super) fn check_report_change(&mut self, now: u64) {
        let Some(last) = self.last_report else {
            return; // the first report goes out on registration anyway
        };
        if !self
            .config
            .report_thresholds
            .significant(&last, &self.current_report())
        {
            return;
        }
        let earliest = self
            .last_report_at
            .map_or(now, |t| t + u64::from(self.config.report_min_interval_ms))
            .max(now);
        if self.report_due_at.is_none_or(|t| t > earliest) {
            self.report_due_at = Some(earliest);
        }
    }

    pub(super) fn poll_report(&mut self, now: u64, buf: &mut TransmitBuf) -> Option<Transmit> {
        let heartbeat = self
            .last_report_at
            .map(|t| t + u64::from(self.config.report_heartbeat_ms));
        let due =
            self.report_due_at.is_some_and(|t| t <= now) || heartbeat.is_some_and(|t| t <= now);
        if !due {
            return None;
        }
        let report = self.current_report();
        self.last_report = Some(report);
        self.last_report_at = Some(now);
        self.report_due_at = None;
        self.stats.reports_sent += 1;
        self.encode(&AgentMsg::Report(report), buf)
    }
}

/// The update of one task to send next and when: the earliest due among those already sent once
/// (retries) and the first never sent (first transmissions go in order). Ties go to the older.
pub(super) fn next_update(updates: &Deque<Pending, UPDATES_PER_TASK>) -> Option<(usize, u64)> {
    let mut best: Option<(usize, u64)> = None;
    for (k, p) in updates.iter().enumerate() {
        if best.is_none_or(|(_, t)| p.next_send < t) {
            best = Some((k, p.next_send));
        }
        if p.attempts == 0 {
            break;
        }
    }
    best
}

/// `delay` plus up to a quarter of it at random (xorshift32), so agents spread their retries.
pub(super) fn jitter(rng: &mut u32, delay_ms: u32) -> u32 {
    let mut x = *rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *rng = x;
    delay_ms.saturating_add(x % (delay_ms / 4 + 1))
}
