//! An offer's lifecycle: made to a framework, then accepted (its tasks checked and launched),
//! declined, or rescinded.

use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt::Write as _;
use std::sync::Arc;

use agent_nostd_core::wire::{MasterMsg, RunTask, TaskState, MAX_TASKS};
use agent_nostd_core::Resources;
use bramble_proto::{self as proto, Accept, ErrorCode, Event, Offer, OfferId};

use super::registry::{AgentIdx, FrameworkIdx};
use super::*;
use crate::allocator::Amount;

#[derive(Debug, Clone, Copy)]
pub(super) struct OfferRec {
    pub(super) framework: FrameworkIdx,
    pub(super) agent: AgentIdx,
    pub(super) resources: Resources,
}

/// The outstanding offers, their expiry times and the next offer id.
///
/// Expiry entries of offers answered early stay in the heap until their time comes (lazy
/// deletion) and are skipped then.
#[derive(Debug, Clone)]
pub(super) struct OfferBook {
    offers: BTreeMap<OfferId, OfferRec>,
    expiry: BinaryHeap<Reverse<(u64, OfferId)>>,
    next_id: OfferId,
    /// The first id of this master's first term: a lower id is an earlier master's offer.
    first_id: OfferId,
}

impl OfferBook {
    /// A book whose ids start above every id of an earlier term (see [`OfferBook::enter_term`]).
    pub(super) fn new(epoch: u64) -> Self {
        let mut book = OfferBook {
            offers: BTreeMap::new(),
            expiry: BinaryHeap::new(),
            next_id: 1,
            first_id: 1,
        };
        book.enter_term(epoch);
        book.first_id = book.next_id;
        book
    }

    /// Whether `id` is an offer of an earlier master (its term is below this master's first):
    /// that master may have launched an accept of it, so this one cannot say it did not.
    pub(super) fn is_earlier_masters(&self, id: OfferId) -> bool {
        id < self.first_id
    }

    /// Offer ids carry the master's term in their high 32 bits, so an offer id is never reused by
    /// a later master: a framework's accept of an older master's offer, delivered late (say, from
    /// a broker session the new leader took over), can only be unknown, never taken for another
    /// offer of the new master.
    pub(super) fn enter_term(&mut self, epoch: u64) {
        let base = (agent_nostd_core::wire::epoch_term(epoch) << 32) | 1;
        self.next_id = self.next_id.max(base);
    }

    /// Records a new offer that expires at `expires_at`, returning its id.
    pub(super) fn make(&mut self, rec: OfferRec, expires_at: u64) -> OfferId {
        let id = self.next_id;
        self.next_id += 1;
        self.offers.insert(id, rec);
        self.expiry.push(Reverse((expires_at, id)));
        id
    }

    /// The outstanding offer `id`.
    pub(super) fn get(&self, id: OfferId) -> Option<&OfferRec> {
        self.offers.get(&id)
    }

    /// Takes offer `id` off the book (answered, rescinded or expired).
    pub(super) fn settle(&mut self, id: OfferId) -> Option<OfferRec> {
        self.offers.remove(&id)
    }

    /// The next offer due to expire by `now` that is still outstanding.
    pub(super) fn pop_expired(&mut self, now: u64) -> Option<(OfferId, OfferRec)> {
        while let Some(Reverse((at, id))) = self.expiry.peek().copied() {
            if at > now {
                return None;
            }
            self.expiry.pop();
            if let Some(rec) = self.offers.get(&id) {
                return Some((id, *rec));
            }
        }
        None
    }

    /// When the next expiry entry comes due (possibly of an offer already answered).
    pub(super) fn next_expiry(&self) -> Option<u64> {
        self.expiry.peek().map(|Reverse((at, _))| *at)
    }

    /// Every outstanding offer, by id.
    pub(super) fn iter(&self) -> impl Iterator<Item = (OfferId, &OfferRec)> {
        self.offers.iter().map(|(id, rec)| (*id, rec))
    }

    /// How many offers are outstanding.
    pub(super) fn len(&self) -> usize {
        self.offers.len()
    }
}

impl MasterCore {
    pub(super) fn make_offer(
        &mut self,
        now: u64,
        fi: FrameworkIdx,
        ai: AgentIdx,
        free: Resources,
    ) -> Option<Offer> {
        let expires_at = now + self.config.offer_timeout_ms;
        let a = self.agents.get_mut(ai)?;
        let rec = OfferRec {
            framework: fi,
            agent: ai,
            resources: free,
        };
        let id = self.offers.make(rec, expires_at);
        a.offer = Some(id);
        let offer = Offer {
            offer_id: id,
            agent: Arc::clone(&a.desc),
            resources: free,
        };
        self.stats.offers_made += 1;
        if let Some(f) = self.frameworks.get_mut(fi) {
            f.offered.add(free);
            f.offers.insert(id);
        }
        self.offer_changed(id);
        self.agent_changed(ai);
        self.framework_changed(fi);
        Some(offer)
    }

    pub(super) fn accept(&mut self, now: u64, fi: FrameworkIdx, accept: Accept) {
        let offer_id = accept.offer_id;
        let rec = match self.offers.get(offer_id) {
            Some(rec) if rec.framework == fi => *rec,
            _ => {
                let why = format!("offer {offer_id} is not outstanding for this framework");
                self.call_error(fi, ErrorCode::UnknownOffer, Some(offer_id), &why);
                return self.not_launched(fi, &accept, &why);
            }
        };
        let fid = self
            .frameworks
            .get(fi)
            .map(|f| f.id.clone())
            .unwrap_or_default();
        // Whatever happens the offer is used up; its resources go back to the pool.
        self.stats.offers_accepted += 1;
        self.settle_offer(offer_id);
        self.request_allocation(now);
        let held = self.tasks.count_on_agent(rec.agent);
        let unauthorized = self.config.authorization.as_ref().and_then(|authz| {
            let principal = self.frameworks.get(fi)?.client.as_deref()?;
            accept
                .tasks
                .iter()
                .find_map(|t| authz.check_task(principal, t).err())
        });
        let checked = if let Some(why) = unauthorized {
            self.stats.unauthorized += 1;
            Err(why.to_string())
        } else if held + accept.tasks.len() > MAX_TASKS {
            Err(format!(
                "the agent holds {held} tasks and takes at most {MAX_TASKS}; {} more do not fit",
                accept.tasks.len()
            ))
        } else {
            self.check_accept(fi, &fid, rec.agent, &rec.resources, &accept)
        };
        let runs = match checked {
            Ok(runs) => runs,
            Err(why) => {
                self.stats.accepts_refused += 1;
                self.call_error(fi, ErrorCode::AcceptRefused, Some(offer_id), &why);
                return self.not_launched(fi, &accept, &why);
            }
        };
        let agent_id = self
            .agents
            .get(rec.agent)
            .map(|a| a.id.clone())
            .unwrap_or_default();
        for run in runs {
            let tid = run.task_id.as_str().to_owned();
            self.add_task(now, fi, &tid, rec.agent, run.resources, TaskState::Staging);
            self.stats.tasks_launched += 1;
            self.send_agent(&agent_id, MasterMsg::RunTask(run));
        }
    }

    /// Tells framework `fi` that the tasks of `accept` did not launch (TASK_LOST, `LaunchFailed`),
    /// but for ids it holds: a refused copy of an accept that launched them says nothing of them.
    /// Nor does an accept of an earlier master's offer: that master (deposed but still running,
    /// or gone after it launched them) may have launched them, so reconciliation settles them.
    fn not_launched(&mut self, fi: FrameworkIdx, accept: &Accept, why: &str) {
        if self.offers.is_earlier_masters(accept.offer_id) {
            self.stats.foreign_accepts += 1;
            return;
        }
        for t in accept.tasks.iter().take(proto::MAX_TASKS_PER_CALL) {
            if !self.tasks.contains(fi, &t.task_id) {
                self.send_framework(fi, task::not_launched_event(&t.task_id, why));
            }
        }
    }

    /// Checks an accept's tasks against the offer and builds their RunTask messages.
    pub(super) fn check_accept(
        &self,
        fi: FrameworkIdx,
        fid: &str,
        agent: AgentIdx,
        offered: &Resources,
        accept: &Accept,
    ) -> Result<Vec<RunTask>, String> {
        if accept.tasks.len() > proto::MAX_TASKS_PER_CALL {
            return Err(format!(
                "{} tasks in one accept; at most {}",
                accept.tasks.len(),
                proto::MAX_TASKS_PER_CALL
            ));
        }
        if self.frameworks.get(fi).is_none() {
            return Err("framework gone".into());
        }
        let arch = self.agents.get(agent).map_or("", |a| a.desc.arch.as_str());
        let mut seen = BTreeSet::new();
        let mut sum = Amount::default();
        let mut runs = Vec::with_capacity(accept.tasks.len());
        for t in &accept.tasks {
            let tid = &t.task_id;
            let run = t.to_run_task(fid, arch).map_err(|e| e.to_string())?;
            if !seen.insert(tid.as_str()) || self.tasks.contains(fi, tid) {
                return Err(format!("task {tid} already exists"));
            }
            let r = t.resources;
            for (name, asks, has) in [
                ("cpu", r.cpu_millis, offered.cpu_millis),
                ("mem", r.mem_mib, offered.mem_mib),
                ("disk", r.disk_mib, offered.disk_mib),
            ] {
                if asks > has {
                    let unit = if name == "cpu" { "m" } else { "M" };
                    return Err(format!(
                        "task {tid} asks {name} {asks}{unit} but the offer has {has}{unit}"
                    ));
                }
            }
            sum.add(r);
            runs.push(run);
        }
        let mut has = Amount::default();
        has.add(*offered);
        if !has.covers_amount(&sum) {
            let mut msg = String::new();
            let _ = write!(
                msg,
                "the tasks ask cpu {}m mem {}M disk {}M in all but the offer has {}",
                sum.cpu_millis, sum.mem_mib, sum.disk_mib, offered
            );
            return Err(msg);
        }
        Ok(runs)
    }

    /// Takes an answered offer (accepted or declined) or one whose framework left off the book,
    /// giving its resources back.
    pub(super) fn settle_offer(&mut self, id: OfferId) -> Option<OfferRec> {
        let rec = self.offers.settle(id)?;
        self.offer_changed(id);
        self.agent_changed(rec.agent);
        self.framework_changed(rec.framework);
        if let Some(a) = self.agents.get_mut(rec.agent) {
            if a.offer == Some(id) {
                a.offer = None;
            }
        }
        if let Some(f) = self.frameworks.get_mut(rec.framework) {
            f.offered.sub(rec.resources);
            f.offers.remove(&id);
        }
        Some(rec)
    }

    /// Withdraws an offer the framework has not answered (its agent changed or went away, or it
    /// expired) and tells the framework.
    pub(super) fn rescind_offer(&mut self, id: OfferId) {
        if let Some(rec) = self.settle_offer(id) {
            self.stats.offers_rescinded += 1;
            self.send_framework(rec.framework, Event::Rescind { offer_id: id });
        }
    }

    /// Rescinds the offers unanswered by `now`. Unanswered counts as declined: the agent is
    /// filtered for the framework for the default refusal time, so it goes to the others first.
    pub(super) fn expire_offers(&mut self, now: u64) {
        while let Some((id, rec)) = self.offers.pop_expired(now) {
            self.rescind_offer(id);
            let until = now + self.config.default_refuse_ms;
            if let Some(f) = self.frameworks.get_mut(rec.framework) {
                f.filters.insert(rec.agent, until);
            }
            self.request_allocation(now);
        }
    }
}
