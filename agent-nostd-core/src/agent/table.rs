//! The core's task table: its slots and the orphans (updates about tasks it does not hold), the
//! master's RunTask and KillTask, adoption after a restart, and refusal messages.

use core::fmt::Write as _;

use heapless::{Deque, String};

use super::*;
use crate::ids::{FrameworkId, TaskId};
use crate::wire::{KillTask, RunTask, StatusAck, MAX_MESSAGE_LEN};

/// How many unacknowledged updates one task can have: STARTING, RUNNING and a terminal state.
pub(super) const UPDATES_PER_TASK: usize = 4;

/// A task as a checkpoint recorded it, for [`AgentCore::restore_task`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RestoredTask<'a> {
    pub(super) key: &'a TaskKey,
    pub(super) resources: Resources,
    /// 0 for the driver's default.
    pub(super) pids_max: u32,
    /// How it ended, if it had: its terminal state, why, and the terminal update's message.
    pub(super) ended: Option<(TaskState, Reason, &'a str)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pending {
    pub(super) update_id: u32,
    pub(super) state: TaskState,
    pub(super) reason: Reason,
    pub(super) next_send: u64,
    pub(super) delay_ms: u32,
    pub(super) attempts: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Launching,
    Running,
    Ended(TaskState, Reason),
}

pub(super) const WANT_LAUNCH: u8 = 1;
pub(super) const WANT_TERM: u8 = 2;
pub(super) const WANT_KILL: u8 = 4;
pub(super) const WANT_RELEASE: u8 = 8;

#[derive(Debug, Clone)]
pub(super) struct Slot {
    pub(super) key: TaskKey,
    pub(super) resources: Resources,
    pub(super) pids_max: u32,
    pub(super) phase: Phase,
    /// Set once a kill was asked for: the grace period.
    pub(super) kill_grace_ms: Option<u32>,
    /// When SIGKILL is due, while the task is being killed.
    pub(super) kill_deadline: Option<u64>,
    pub(super) want: u8,
    pub(super) updates: Deque<Pending, UPDATES_PER_TASK>,
    /// The message carried by the task's terminal update.
    pub(super) message: String<MAX_MESSAGE_LEN, u8>,
}

impl Slot {
    pub(super) fn is(&self, framework_id: &str, task_id: &str) -> bool {
        self.key.is(framework_id, task_id)
    }

    pub(super) fn view(&self) -> TaskView<'_> {
        TaskView {
            key: &self.key,
            framework_id: &self.key.framework_id,
            task_id: &self.key.task_id,
            resources: self.resources,
            pids_max: self.pids_max,
            state: self.state(),
            unacked_updates: self.updates.len(),
            end_reason: match self.phase {
                Phase::Ended(_, reason) => Some(reason),
                _ => None,
            },
            message: &self.message,
        }
    }

    pub(super) fn holds_resources(&self) -> bool {
        !matches!(self.phase, Phase::Ended(..))
    }

    pub(super) fn state(&self) -> TaskState {
        match self.phase {
            Phase::Launching => TaskState::Starting,
            Phase::Running => TaskState::Running,
            Phase::Ended(s, _) => s,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Orphan {
    pub(super) key: TaskKey,
    pub(super) pending: Pending,
}

impl AgentCore {
    /// Takes back a task that is still running after an agent restart (from the driver's checkpoint).
    /// [`restore`](Self::restore) does this for every task of a snapshot.
    pub fn adopt_task(
        &mut self,
        framework_id: &str,
        task_id: &str,
        resources: Resources,
        pids_max: u32,
    ) -> Result<(), TaskError> {
        let Ok(key) = TaskKey::new(framework_id, task_id) else {
            return Err(TaskError::InvalidId);
        };
        self.adopt_slot(key, resources, pids_max)
    }

    /// Takes back one task a checkpoint recorded: one still running, or one that had ended without
    /// the master acknowledging it (its terminal update is sent again, with a new update id, once
    /// registered). [`restore`](Self::restore), [`adopt_task`](Self::adopt_task) and
    /// [`restore_ended_task`](Self::restore_ended_task) all come here.
    pub(super) fn restore_task(
        &mut self,
        now: u64,
        task: RestoredTask<'_>,
    ) -> Result<(), TaskError> {
        if task.ended.is_some_and(|(state, ..)| !state.is_terminal()) {
            return Err(TaskError::InvalidTransition);
        }
        self.adopt_slot(task.key.clone(), task.resources, task.pids_max)?;
        if let Some((state, reason, message)) = task.ended {
            let i = self.slots.len() - 1;
            self.end_task(i, now, state, reason, |m| push_truncated(m, message));
        }
        Ok(())
    }

    pub(super) fn adopt_slot(
        &mut self,
        key: TaskKey,
        resources: Resources,
        pids_max: u32,
    ) -> Result<(), TaskError> {
        if self.slot_index(&key.framework_id, &key.task_id).is_some() {
            return Err(TaskError::AlreadyKnown);
        }
        self.slots
            .push(Slot {
                key,
                resources,
                pids_max,
                phase: Phase::Running,
                kill_grace_ms: None,
                kill_deadline: None,
                want: 0,
                updates: Deque::new(),
                message: String::new(),
            })
            .map_err(|_| TaskError::TableFull)?;
        self.generation = self.generation.wrapping_add(1);
        Ok(())
    }

    /// Restores, from the driver's checkpoint, a task that had ended but whose end the master had not
    /// acknowledged: its terminal update is sent again (with a new update id) once registered.
    pub fn restore_ended_task(&mut self, now: u64, task: EndedTask<'_>) -> Result<(), TaskError> {
        if !task.state.is_terminal() {
            return Err(TaskError::InvalidTransition);
        }
        let Ok(key) = TaskKey::new(task.framework_id, task.task_id) else {
            return Err(TaskError::InvalidId);
        };
        let restored = RestoredTask {
            key: &key,
            resources: task.resources,
            pids_max: 0,
            ended: Some((task.state, task.reason, task.message)),
        };
        self.restore_task(now, restored)
    }

    pub(super) fn on_run_task(&mut self, now: u64, run: &RunTask) {
        if self.slot_index(&run.framework_id, &run.task_id).is_some() {
            self.stats.duplicate_launches += 1;
            return;
        }
        if validate_id(&run.framework_id).is_err() || validate_id(&run.task_id).is_err() {
            self.stats.refused_launches += 1;
            self.push_orphan(now, run, TaskState::Error, Reason::InvalidTask);
            return;
        }
        if self.slots.is_full() {
            self.stats.refused_launches += 1;
            self.push_orphan(now, run, TaskState::Error, Reason::AgentFull);
            return;
        }
        let free = self.info.total.saturating_sub(&self.allocated());
        let total = self.info.total;
        let asks = run.resources;
        let mut message = String::new();
        let refusal = if run.argv.is_empty() {
            let _ = message.push_str("argv is empty");
            Some(Reason::InvalidTask)
        } else if asks.cpu_millis == 0 || asks.mem_mib == 0 {
            let _ = message.push_str("a task must ask for some cpu and memory");
            Some(Reason::InvalidTask)
        } else if let Some(short) = shortfall(&asks, &total) {
            let _ = write!(
                message,
                "asks {short} but the agent has {} in all",
                short.have
            );
            Some(Reason::ExceedsResources)
        } else if let Some(short) = shortfall(&asks, &free) {
            let _ = write!(message, "asks {short} but only {} is free", short.have);
            Some(Reason::ExceedsResources)
        } else {
            None
        };
        let slot = Slot {
            key: run.key(),
            resources: asks,
            pids_max: run.pids_max,
            phase: Phase::Launching,
            kill_grace_ms: None,
            kill_deadline: None,
            want: WANT_LAUNCH,
            updates: Deque::new(),
            message,
        };
        // Cannot fail: is_full was checked above.
        let _ = self.slots.push(slot);
        self.generation = self.generation.wrapping_add(1);
        let i = self.slots.len() - 1;
        match refusal {
            Some(reason) => {
                self.stats.refused_launches += 1;
                let slot = &mut self.slots[i];
                slot.want = 0;
                slot.phase = Phase::Ended(TaskState::Error, reason);
                self.push_update(i, now, TaskState::Error, reason);
            }
            None => self.push_update(i, now, TaskState::Starting, Reason::None),
        }
    }

    pub(super) fn on_kill_task(&mut self, now: u64, kill: &KillTask) {
        let Some(i) = self.slot_index(&kill.framework_id, &kill.task_id) else {
            // Tell the master the task is not here, so it can reconcile.
            let run_like = (&kill.framework_id, &kill.task_id);
            self.push_orphan_ids(now, run_like, TaskState::Lost, Reason::UnknownTask);
            return;
        };
        let slot = &mut self.slots[i];
        if slot.kill_grace_ms.is_some() || matches!(slot.phase, Phase::Ended(..)) {
            return; // already being killed, or already over
        }
        slot.kill_grace_ms = Some(kill.grace_ms);
        match slot.phase {
            Phase::Launching if slot.want & WANT_LAUNCH != 0 => {
                // Not handed to the driver yet: it never starts.
                slot.want &= !WANT_LAUNCH;
                self.end_task(i, now, TaskState::Killed, Reason::KilledByRequest, |m| {
                    let _ = m.push_str("killed before it started");
                });
            }
            // Being started by the driver: killed as soon as it reports Started.
            Phase::Launching => {}
            Phase::Running => Self::begin_kill(slot, now, kill.grace_ms),
            Phase::Ended(..) => {}
        }
    }

    pub(super) fn on_status_ack(&mut self, ack: &StatusAck) {
        if let Some(i) = self.slot_index(&ack.framework_id, &ack.task_id) {
            let slot = &mut self.slots[i];
            // Cumulative: the master has this update, so the earlier ones are superseded.
            if let Some(k) = slot
                .updates
                .iter()
                .position(|p| p.update_id == ack.update_id)
            {
                for _ in 0..=k {
                    slot.updates.pop_front();
                }
                // Pending updates are not checkpointed (a restart resends from the task's state),
                // so an acknowledgement changes nothing a checkpoint holds.
                if slot.updates.is_empty() && matches!(slot.phase, Phase::Ended(..)) {
                    slot.want |= WANT_RELEASE;
                }
                return;
            }
        } else if let Some(pos) = self.orphans.iter().position(|o| {
            o.pending.update_id == ack.update_id && o.key.is(&ack.framework_id, &ack.task_id)
        }) {
            self.orphans.remove(pos);
            return;
        }
        self.stats.stale_acks += 1;
    }

    pub(super) fn begin_kill(slot: &mut Slot, now: u64, grace_ms: u32) {
        if grace_ms == 0 {
            slot.want |= WANT_KILL;
        } else {
            slot.want |= WANT_TERM;
            slot.kill_deadline = Some(now + u64::from(grace_ms));
        }
    }

    pub(super) fn slot_index(&self, framework_id: &str, task_id: &str) -> Option<usize> {
        self.slots.iter().position(|s| s.is(framework_id, task_id))
    }

    pub(super) fn end_task(
        &mut self,
        i: usize,
        now: u64,
        state: TaskState,
        reason: Reason,
        message: impl FnOnce(&mut String<MAX_MESSAGE_LEN, u8>),
    ) {
        let slot = &mut self.slots[i];
        slot.phase = Phase::Ended(state, reason);
        self.generation = self.generation.wrapping_add(1);
        slot.kill_deadline = None;
        slot.want &= !(WANT_TERM | WANT_KILL);
        slot.message.clear();
        message(&mut slot.message);
        self.push_update(i, now, state, reason);
    }

    pub(super) fn push_orphan(
        &mut self,
        now: u64,
        run: &RunTask,
        state: TaskState,
        reason: Reason,
    ) {
        self.push_orphan_ids(now, (&run.framework_id, &run.task_id), state, reason);
    }

    pub(super) fn push_orphan_ids(
        &mut self,
        now: u64,
        (framework_id, task_id): (&FrameworkId, &TaskId),
        state: TaskState,
        reason: Reason,
    ) {
        let already = self.orphans.iter().any(|o| {
            o.key.is(framework_id, task_id)
                && o.pending.state == state
                && o.pending.reason == reason
        });
        if already {
            return; // the pending one says the same and is resent until acknowledged
        }
        if self.orphans.is_full() {
            self.stats.orphans_dropped += 1;
            return;
        }
        let pending = self.new_pending(now, state, reason);
        let _ = self.orphans.push(Orphan {
            key: TaskKey {
                framework_id: framework_id.clone(),
                task_id: task_id.clone(),
            },
            pending,
        });
    }
}

/// The first resource of `asks` that `have` cannot cover, for a refusal message.
pub(super) struct Shortfall {
    pub(super) name: &'static str,
    pub(super) unit: &'static str,
    pub(super) asks: u32,
    pub(super) have: Amount,
}

/// An amount with its unit, e.g. `1000m` or `2800 MiB`.
pub(super) struct Amount(u32, &'static str);

impl core::fmt::Display for Amount {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}{}", self.0, self.1)
    }
}

impl core::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}{} {}", self.asks, self.unit, self.name)
    }
}

pub(super) fn shortfall(asks: &Resources, have: &Resources) -> Option<Shortfall> {
    [
        ("cpu", "m", asks.cpu_millis, have.cpu_millis),
        ("memory", " MiB", asks.mem_mib, have.mem_mib),
        ("disk", " MiB", asks.disk_mib, have.disk_mib),
    ]
    .into_iter()
    .find(|&(_, _, a, h)| a > h)
    .map(|(name, unit, asks, have)| Shortfall {
        name,
        unit,
        asks,
        have: Amount(have, unit),
    })
}

pub(super) fn push_truncated<const N: usize>(s: &mut String<N, u8>, text: &str) {
    for c in text.chars() {
        if s.push(c).is_err() {
            break;
        }
    }
}
