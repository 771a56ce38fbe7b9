//! Bookkeeping for a batch job: a fixed number of work items, each run by one task at a time until
//! its result arrives, relaunched (with bounded retries) when its task fails or is lost.
//!
//! The `pi` and `wordcount` frameworks share it. [`Batch`] makes the offer decisions (pack as many
//! pending items into each offer as fit, decline the rest, suppress offers once nothing is pending,
//! revive when something is again) and reads status updates; the framework supplies each task's
//! command and tells the batch when an item's result has arrived ([`Batch::complete`]).
//!
//! Task ids are `{prefix}-{index}-{attempt}`; a result is accepted from any attempt of an item (the
//! work of an item is deterministic), status updates only from its current attempt. Everything is
//! idempotent, as at-least-once delivery requires.

use agent_nostd_core::wire::TaskState;
use agent_nostd_core::Resources;
use tracing::{debug, info, warn};

use crate::protocol::{ErrorCode, Offer, OfferId, StatusUpdate, TaskInfo};
use crate::scheduler::SchedulerDriver;

/// How long offers the batch cannot use are refused, in seconds, when nothing is pending.
pub const IDLE_REFUSE_SECONDS: u32 = 30;

/// What the batch is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOptions {
    /// The task id prefix (`{prefix}-{index}-{attempt}` must stay a valid id of ≤ 32 bytes).
    pub prefix: String,
    /// How many items.
    pub items: u32,
    /// What each task asks for.
    pub resources: Resources,
    /// How many times an item is relaunched after its task fails or is lost, before the whole
    /// batch fails.
    pub max_retries: u32,
}

/// Where one item is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemState {
    /// Waiting for an offer.
    Pending,
    /// Sent in an accept on this offer; no update yet.
    Launched {
        /// The offer.
        offer_id: OfferId,
    },
    /// Its task is staging, starting or running.
    Running,
    /// Its task finished, but its result has not arrived yet.
    Finished,
    /// Its result arrived.
    Done,
}

#[derive(Debug, Clone)]
struct Item {
    state: ItemState,
    attempt: u32,
    agent_id: Option<String>,
}

/// The batch's state. See the module docs.
#[derive(Debug, Clone)]
pub struct Batch {
    opts: BatchOptions,
    items: Vec<Item>,
    suppressed: bool,
    failed: Option<String>,
}

impl Batch {
    /// A batch with every item pending.
    pub fn new(opts: BatchOptions) -> Self {
        let items = (0..opts.items)
            .map(|_| Item {
                state: ItemState::Pending,
                attempt: 0,
                agent_id: None,
            })
            .collect();
        Batch {
            opts,
            items,
            suppressed: false,
            failed: None,
        }
    }

    /// The current task id of item `index`.
    pub fn task_id(&self, index: u32) -> String {
        let attempt = self.items.get(index as usize).map_or(0, |i| i.attempt);
        format!("{}-{index}-{attempt}", self.opts.prefix)
    }

    /// The item and attempt a task id of this batch names.
    pub fn parse_task_id(&self, task_id: &str) -> Option<(u32, u32)> {
        let rest = task_id.strip_prefix(&self.opts.prefix)?.strip_prefix('-')?;
        let (index, attempt) = rest.split_once('-')?;
        let index: u32 = index.parse().ok()?;
        let attempt: u32 = attempt.parse().ok()?;
        (index < self.opts.items).then_some((index, attempt))
    }

    /// The state of item `index`.
    pub fn state(&self, index: u32) -> Option<&ItemState> {
        self.items.get(index as usize).map(|i| &i.state)
    }

    /// Items done, and items in all.
    pub fn progress(&self) -> (u32, u32) {
        let done = self
            .items
            .iter()
            .filter(|i| i.state == ItemState::Done)
            .count() as u32;
        (done, self.opts.items)
    }

    /// True when every item is done.
    pub fn is_done(&self) -> bool {
        self.items.iter().all(|i| i.state == ItemState::Done)
    }

    /// Why the batch failed (an item ran out of retries), if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Answers offers: packs pending items into each offer while they fit (`task` builds the
    /// command of item `index` under `task_id`), declines offers it cannot use, and suppresses
    /// offers once nothing is pending.
    pub fn offers(
        &mut self,
        driver: &mut SchedulerDriver,
        offers: Vec<Offer>,
        mut task: impl FnMut(u32, &str) -> TaskInfo,
    ) {
        let mut declined = Vec::new();
        for offer in offers {
            let mut left = offer.resources;
            let mut chosen = Vec::new();
            if self.failed.is_none() {
                for (index, item) in self.items.iter().enumerate() {
                    if !self.opts.resources.fits_in(&left) {
                        break;
                    }
                    if item.state == ItemState::Pending {
                        chosen.push(index as u32);
                        left = left.saturating_sub(&self.opts.resources);
                    }
                }
            }
            if chosen.is_empty() {
                declined.push(offer.offer_id);
                continue;
            }
            let mut tasks = Vec::with_capacity(chosen.len());
            for &index in &chosen {
                let id = self.task_id(index);
                let mut t = task(index, &id);
                t.task_id = id;
                t.resources = self.opts.resources;
                tasks.push(t);
            }
            match driver.launch(offer.offer_id, tasks) {
                Ok(()) => {
                    info!(offer = offer.offer_id, agent = %offer.agent.agent_id, tasks = chosen.len(), "launching");
                    for index in chosen {
                        let item = &mut self.items[index as usize];
                        item.state = ItemState::Launched {
                            offer_id: offer.offer_id,
                        };
                        item.agent_id = Some(offer.agent.agent_id.clone());
                    }
                }
                Err(e) => warn!(offer = offer.offer_id, "cannot launch: {e}"),
            }
        }
        let pending = self.pending();
        if !declined.is_empty() {
            let refuse = (pending == 0).then_some(IDLE_REFUSE_SECONDS);
            if let Err(e) = driver.decline(declined, refuse) {
                warn!("cannot decline: {e}");
            }
        }
        if pending == 0 && !self.suppressed && self.failed.is_none() {
            debug!("every item is placed: suppressing offers");
            if driver.suppress().is_ok() {
                self.suppressed = true;
            }
        }
    }

    /// Follows a task's update. Returns `true` when the batch just failed.
    pub fn status_update(&mut self, driver: &mut SchedulerDriver, update: &StatusUpdate) -> bool {
        let Some((index, attempt)) = self.parse_task_id(&update.task_id) else {
            debug!(task = %update.task_id, "update for a task not of this batch");
            return false;
        };
        let item = &mut self.items[index as usize];
        if attempt != item.attempt || item.state == ItemState::Done {
            debug!(task = %update.task_id, state = update.state.as_str(), "update for an old attempt");
            return false;
        }
        match update.state {
            TaskState::Staging | TaskState::Starting | TaskState::Running => {
                if item.state != ItemState::Finished {
                    item.state = ItemState::Running;
                }
                if update.agent_id.is_some() {
                    item.agent_id.clone_from(&update.agent_id);
                }
                false
            }
            TaskState::Finished => {
                item.state = ItemState::Finished;
                false
            }
            TaskState::Failed
            | TaskState::Killed
            | TaskState::Lost
            | TaskState::Error
            | TaskState::Unreachable => {
                let why = format!(
                    "task {} ended {} ({:?}) {}",
                    update.task_id,
                    update.state.as_str(),
                    update.reason,
                    update.message
                );
                self.retry(driver, index, &why)
            }
        }
    }

    /// An accept failed: its items go back to pending. A refused accept counts as a failed attempt
    /// (it would fail again the same way); an unknown offer (a rescind race) does not. Returns
    /// `true` when the batch just failed.
    pub fn error(
        &mut self,
        driver: &mut SchedulerDriver,
        code: ErrorCode,
        offer_id: Option<OfferId>,
        message: &str,
    ) -> bool {
        let Some(offer_id) = offer_id else {
            return false;
        };
        let hit: Vec<u32> = (0..self.opts.items)
            .filter(|&i| self.items[i as usize].state == ItemState::Launched { offer_id })
            .collect();
        let mut failed = false;
        for index in hit {
            if code == ErrorCode::AcceptRefused {
                failed |= self.retry(driver, index, &format!("accept refused: {message}"));
            } else {
                self.items[index as usize].state = ItemState::Pending;
                self.revive(driver);
            }
        }
        failed
    }

    /// An agent was lost: its unfinished items are relaunched elsewhere. Returns `true` when the
    /// batch just failed.
    pub fn agent_lost(&mut self, driver: &mut SchedulerDriver, agent_id: &str) -> bool {
        let hit: Vec<u32> = (0..self.opts.items)
            .filter(|&i| {
                let item = &self.items[i as usize];
                item.agent_id.as_deref() == Some(agent_id)
                    && matches!(item.state, ItemState::Launched { .. } | ItemState::Running)
            })
            .collect();
        let mut failed = false;
        for index in hit {
            failed |= self.retry(driver, index, &format!("agent {agent_id} lost"));
        }
        failed
    }

    /// Item `index`'s result arrived. Returns `true` the first time only.
    pub fn complete(&mut self, index: u32) -> bool {
        match self.items.get_mut(index as usize) {
            Some(item) if item.state != ItemState::Done => {
                item.state = ItemState::Done;
                true
            }
            _ => false,
        }
    }

    fn pending(&self) -> usize {
        self.items
            .iter()
            .filter(|i| i.state == ItemState::Pending)
            .count()
    }

    fn retry(&mut self, driver: &mut SchedulerDriver, index: u32, why: &str) -> bool {
        let item = &mut self.items[index as usize];
        if item.attempt >= self.opts.max_retries {
            if self.failed.is_none() {
                warn!(index, "{why}; out of retries");
                self.failed = Some(format!(
                    "item {index} failed {} times; last: {why}",
                    item.attempt + 1
                ));
                return true;
            }
            return false;
        }
        item.attempt += 1;
        item.state = ItemState::Pending;
        item.agent_id = None;
        warn!(index, attempt = item.attempt, "{why}; relaunching");
        self.revive(driver);
        false
    }

    fn revive(&mut self, driver: &mut SchedulerDriver) {
        if self.suppressed && driver.revive().is_ok() {
            self.suppressed = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use agent_nostd_core::wire::Reason;

    use super::*;
    use crate::protocol::{AgentDescription, Call};

    fn offer(id: OfferId, agent: &str, cpu: u32, mem: u32) -> Offer {
        Offer {
            offer_id: id,
            agent: Arc::new(AgentDescription {
                agent_id: agent.into(),
                hostname: agent.into(),
                arch: "aarch64".into(),
                attributes: vec![],
            }),
            resources: Resources::new(cpu, mem, 0),
        }
    }

    fn batch(items: u32) -> Batch {
        Batch::new(BatchOptions {
            prefix: "b".into(),
            items,
            resources: Resources::new(250, 32, 0),
            max_retries: 1,
        })
    }

    fn cmd(_: u32, id: &str) -> TaskInfo {
        TaskInfo::new(id, &["/bin/x"], Resources::ZERO)
    }

    fn update(task: &str, state: TaskState) -> StatusUpdate {
        StatusUpdate {
            task_id: task.into(),
            agent_id: Some("a".into()),
            state,
            reason: Reason::None,
            message: String::new(),
            update_id: None,
        }
    }

    #[test]
    fn task_ids_name_item_and_attempt_and_parse_back() {
        let b = batch(3);
        assert_eq!(b.task_id(2), "b-2-0");
        assert_eq!(b.parse_task_id("b-2-0"), Some((2, 0)));
        assert_eq!(b.parse_task_id("b-3-0"), None);
        assert_eq!(b.parse_task_id("c-1-0"), None);
        assert_eq!(b.parse_task_id("b-x-0"), None);
    }

    #[test]
    fn an_offer_is_packed_with_as_many_items_as_fit_and_the_rest_wait() {
        let mut b = batch(5);
        let mut d = SchedulerDriver::new("c");
        b.offers(&mut d, vec![offer(1, "a", 1000, 100)], cmd);
        let calls = d.take_calls();
        let Call::Accept(a) = &calls[0] else {
            panic!("{calls:?}")
        };
        // 1000m / 250m = 4, but 100 MiB / 32 MiB = 3.
        assert_eq!(a.tasks.len(), 3);
        assert_eq!(calls.len(), 1, "no suppress while items are pending");
        assert_eq!(b.state(3), Some(&ItemState::Pending));
    }

    #[test]
    fn offers_too_small_are_declined_and_offers_are_suppressed_once_all_are_placed() {
        let mut b = batch(2);
        let mut d = SchedulerDriver::new("c");
        b.offers(
            &mut d,
            vec![offer(1, "a", 100, 100), offer(2, "b", 4000, 4096)],
            cmd,
        );
        let calls = d.take_calls();
        assert!(matches!(&calls[0], Call::Accept(a) if a.offer_id == 2 && a.tasks.len() == 2));
        assert!(
            matches!(&calls[1], Call::Decline(x) if x.offer_ids == vec![1] && x.refuse_seconds == Some(IDLE_REFUSE_SECONDS))
        );
        assert_eq!(calls[2], Call::Suppress);
    }

    #[test]
    fn a_failed_task_is_relaunched_until_retries_run_out() {
        let mut b = batch(1);
        let mut d = SchedulerDriver::new("c");
        b.offers(&mut d, vec![offer(1, "a", 4000, 4096)], cmd);
        d.take_calls();
        assert!(!b.status_update(&mut d, &update("b-0-0", TaskState::Failed)));
        assert_eq!(d.take_calls(), vec![Call::Revive]);
        assert_eq!(b.state(0), Some(&ItemState::Pending));
        assert_eq!(b.task_id(0), "b-0-1");
        // A late duplicate of the old attempt's failure changes nothing.
        assert!(!b.status_update(&mut d, &update("b-0-0", TaskState::Failed)));
        b.offers(&mut d, vec![offer(2, "a", 4000, 4096)], cmd);
        d.take_calls();
        assert!(b.status_update(&mut d, &update("b-0-1", TaskState::Lost)));
        assert!(b.failure().is_some());
    }

    #[test]
    fn items_on_a_lost_agent_are_relaunched_and_a_result_from_any_attempt_completes_them() {
        let mut b = batch(2);
        let mut d = SchedulerDriver::new("c");
        b.offers(
            &mut d,
            vec![offer(1, "a", 250, 32), offer(2, "z", 250, 32)],
            cmd,
        );
        d.take_calls();
        assert!(!b.agent_lost(&mut d, "a"));
        assert_eq!(b.state(0), Some(&ItemState::Pending));
        assert_eq!(b.state(1), Some(&ItemState::Launched { offer_id: 2 }));
        assert!(b.complete(0));
        assert!(!b.complete(0));
        assert!(b.complete(1));
        assert!(b.is_done());
        assert_eq!(b.progress(), (2, 2));
    }

    #[test]
    fn a_refused_accept_puts_its_items_back_to_pending() {
        let mut b = batch(1);
        let mut d = SchedulerDriver::new("c");
        b.offers(&mut d, vec![offer(7, "a", 4000, 4096)], cmd);
        d.take_calls();
        b.error(&mut d, ErrorCode::UnknownOffer, Some(7), "gone");
        assert_eq!(b.state(0), Some(&ItemState::Pending));
        assert_eq!(b.task_id(0), "b-0-0", "an unknown offer costs no attempt");
    }
}
