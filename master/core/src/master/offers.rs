//! The offer cycle: the allocation round, offers, accepts and revocation.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt::Write as _;
use std::sync::Arc;

use agent_nostd_core::wire::{MasterMsg, RunTask, TaskState, MAX_TASKS};
use agent_nostd_core::Resources;
use bramble_proto::{self as proto, Accept, ErrorCode, Event, Offer};

use super::{AgentIdx, Framework, FrameworkIdx, FrameworkState, Idx, MasterCore, OfferRec};
use crate::allocator::{dominant_share, Amount, Candidate, SortKey};

impl MasterCore {
    pub(super) fn accept(&mut self, now: u64, fi: FrameworkIdx, accept: Accept) {
        let offer_id = accept.offer_id;
        let rec = match self.offers.get(&offer_id) {
            Some(rec) if rec.framework == fi => *rec,
            _ => {
                return self.call_error(
                    fi,
                    ErrorCode::UnknownOffer,
                    Some(offer_id),
                    &format!("offer {offer_id} is not outstanding for this framework"),
                )
            }
        };
        let fid = self
            .frameworks
            .get(fi)
            .map(|f| f.id.clone())
            .unwrap_or_default();
        // Whatever happens the offer is used up; its resources go back to the pool.
        self.stats.offers_accepted += 1;
        self.rescind(offer_id, false);
        self.request_allocation(now);
        let held = self.agents.get(rec.agent).map_or(0, |a| a.tasks.len());
        let checked = if held + accept.tasks.len() > MAX_TASKS {
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
                return self.call_error(fi, ErrorCode::AcceptRefused, Some(offer_id), &why);
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
        let f = self.frameworks.get(fi).ok_or("framework gone")?;
        let arch = self.agents.get(agent).map_or("", |a| a.desc.arch.as_str());
        let mut seen = BTreeSet::new();
        let mut sum = Amount::default();
        let mut runs = Vec::with_capacity(accept.tasks.len());
        for t in &accept.tasks {
            let tid = &t.task_id;
            let run = t.to_run_task(fid, arch).map_err(|e| e.to_string())?;
            if !seen.insert(tid.as_str()) || f.tasks.contains_key(tid) {
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

    // ----- allocation -----

    /// Makes the next allocation round run now.
    pub(super) fn request_allocation(&mut self, now: u64) {
        self.next_allocation = self.next_allocation.min(now);
    }

    /// One allocation round: every agent's unoffered free remainder goes to the framework first in
    /// the policy's order that has no filter for it. Each round starts one agent further on (Mesos
    /// shuffles its agents per round for the same reason): a framework that takes its first offer
    /// spreads its tasks instead of piling them onto the first agent.
    pub(super) fn allocate(&mut self, now: u64) {
        self.stats.allocation_rounds += 1;
        let total = self.cluster_total;
        let policy = self.config.policy;
        let mut heap = BinaryHeap::new();
        for (slot, f) in self.frameworks.iter() {
            if f.state != FrameworkState::Active || f.suppressed {
                continue;
            }
            heap.push(Candidate {
                key: key_of(policy, f, total),
                slot,
            });
        }
        let mut new_offers: BTreeMap<FrameworkIdx, Vec<Offer>> = BTreeMap::new();
        let mut skipped = Vec::new();
        if !heap.is_empty() && (total.cpu_millis > 0 || total.mem_mib > 0) {
            let n = self.agents.slot_count();
            let start = (self.stats.allocation_rounds % n.max(1) as u64) as usize;
            for ai in (start..n).chain(0..start).map(AgentIdx::from_slot) {
                let Some(a) = self.agents.get(ai) else {
                    continue;
                };
                if !a.reachable || a.offer.is_some() || a.tasks.len() >= MAX_TASKS {
                    continue;
                }
                let free = a.free();
                if free.cpu_millis == 0 || free.mem_mib == 0 {
                    continue;
                }
                let mut chosen = None;
                while let Some(c) = heap.pop() {
                    let filtered = self
                        .frameworks
                        .get(c.slot)
                        .and_then(|f| f.filters.get(&ai))
                        .is_some_and(|&until| until > now);
                    if filtered {
                        skipped.push(c);
                    } else {
                        chosen = Some(c);
                        break;
                    }
                }
                heap.extend(skipped.drain(..));
                let Some(c) = chosen else { continue };
                if let Some(offer) = self.make_offer(now, c.slot, ai, free) {
                    new_offers.entry(c.slot).or_default().push(offer);
                }
                if let Some(f) = self.frameworks.get(c.slot) {
                    heap.push(Candidate {
                        key: key_of(policy, f, total),
                        slot: c.slot,
                    });
                }
            }
        }
        if self.config.revocation {
            self.revoke(now, &new_offers);
        }
        for (slot, offers) in new_offers {
            self.send_framework(slot, Event::Offers(offers));
        }
        // Forget expired filters so they do not pile up.
        if self.stats.allocation_rounds % 64 == 0 {
            for f in self.frameworks.values_mut() {
                f.filters.retain(|_, until| *until > now);
            }
        }
    }

    pub(super) fn make_offer(
        &mut self,
        now: u64,
        fi: FrameworkIdx,
        ai: AgentIdx,
        free: Resources,
    ) -> Option<Offer> {
        let a = self.agents.get_mut(ai)?;
        let id = self.next_offer_id;
        a.offer = Some(id);
        let offer = Offer {
            offer_id: id,
            agent: Arc::clone(&a.desc),
            resources: free,
        };
        self.next_offer_id += 1;
        self.stats.offers_made += 1;
        self.offers.insert(
            id,
            OfferRec {
                framework: fi,
                agent: ai,
                resources: free,
            },
        );
        self.offer_expiry
            .push(std::cmp::Reverse((now + self.config.offer_timeout_ms, id)));
        if let Some(f) = self.frameworks.get_mut(fi) {
            f.offered.add(free);
            f.offers.insert(id);
        }
        self.touch_offer(id);
        self.touch_agent(ai);
        self.touch_framework(fi);
        Some(offer)
    }

    /// Kills a task of a framework over its fair share for each framework below its guarantee that
    /// got nothing this round, one wave at a time.
    pub(super) fn revoke(&mut self, now: u64, new_offers: &BTreeMap<FrameworkIdx, Vec<Offer>>) {
        let in_flight = self
            .frameworks
            .values()
            .flat_map(|f| f.tasks.values())
            .any(|t| t.revoking);
        if in_flight {
            return;
        }
        let active: Vec<FrameworkIdx> = self
            .frameworks
            .iter()
            .filter(|(_, f)| f.state == FrameworkState::Active)
            .map(|(i, _)| i)
            .collect();
        let weights: f64 = active
            .iter()
            .filter_map(|&i| self.frameworks.get(i))
            .map(|f| f.info.weight)
            .sum();
        let total = self.cluster_total;
        for &starving in &active {
            let Some(f) = self.frameworks.get(starving) else {
                continue;
            };
            if f.suppressed
                || !f.below_guarantee()
                || !f.offers.is_empty()
                || new_offers.contains_key(&starving)
            {
                continue;
            }
            // The victim: the framework furthest over its weighted fair share, not below its own
            // guarantee; its most recently launched task that still runs on a reachable agent.
            let victim = active
                .iter()
                .filter(|&&i| i != starving)
                .filter_map(|&i| {
                    let v = self.frameworks.get(i)?;
                    if v.below_guarantee() {
                        return None;
                    }
                    let fair = v.info.weight / weights;
                    let over = dominant_share(v.allocated, total) / fair;
                    (over > 1.0).then_some((i, over))
                })
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .and_then(|(vi, _)| {
                    let v = self.frameworks.get(vi)?;
                    let (tid, t) = v
                        .tasks
                        .iter()
                        .filter(|(_, t)| {
                            t.state != TaskState::Unreachable && t.kill_grace.is_none()
                        })
                        .max_by_key(|(_, t)| t.launched)?;
                    Some((vi, tid.clone(), t.agent))
                });
            let Some((vi, tid, agent)) = victim else {
                continue;
            };
            let grace = self.config.revocation_grace_ms;
            if let Some(t) = self
                .frameworks
                .get_mut(vi)
                .and_then(|v| v.tasks.get_mut(&tid))
            {
                t.revoking = true;
                t.kill_grace = Some(grace);
                t.since = now;
            }
            self.stats.revocations += 1;
            self.send_kill(agent, vi, &tid, grace);
            return;
        }
    }
}

fn key_of(policy: crate::config::Policy, f: &Framework, total: Amount) -> SortKey {
    SortKey::new(
        policy,
        f.used(),
        total,
        f.info.weight,
        f.info.priority,
        f.info.guarantee.as_ref(),
        f.order,
    )
}
