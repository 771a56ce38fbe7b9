//! The allocation round (DRF or strict priorities, with filters) and revocation for guarantees.

use std::collections::BTreeMap;

use agent_nostd_core::wire::{TaskState, MAX_TASKS};
use bramble_proto::{Event, Offer};

use super::registry::{AgentIdx, FrameworkIdx, Idx};
use super::*;
use crate::allocator::{dominant_share, plan, Bidder, FreeAgent, Placement};

impl MasterCore {
    /// Makes the next allocation round run now.
    pub(super) fn request_allocation(&mut self, now: u64) {
        self.timers.set_earlier(Timer::Allocation, now);
    }

    /// One allocation round: every agent's unoffered free remainder goes to the framework first in
    /// the policy's order that has no filter for it. Each round starts one agent further on (Mesos
    /// shuffles its agents per round for the same reason): a framework that takes its first offer
    /// spreads its tasks instead of piling them onto the first agent.
    pub(super) fn allocate(&mut self, now: u64) {
        self.stats.allocation_rounds += 1;
        let placements = self.plan_round(now);
        let mut new_offers: BTreeMap<FrameworkIdx, Vec<Offer>> = BTreeMap::new();
        for p in placements {
            if let Some(offer) = self.make_offer(now, p.framework, p.agent, p.resources) {
                new_offers.entry(p.framework).or_default().push(offer);
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

    /// Decides this round's offers without changing anything: the frameworks that want offers, the
    /// agents with an unoffered free remainder (starting one agent further on each round), and the
    /// decline filters still in force at `now`.
    fn plan_round(&self, now: u64) -> Vec<Placement<FrameworkIdx, AgentIdx>> {
        let bidders: Vec<Bidder<FrameworkIdx>> = self
            .frameworks
            .iter()
            .filter(|(_, f)| f.state == FrameworkState::Active && !f.suppressed)
            .map(|(id, f)| Bidder {
                id,
                used: f.used(self.tasks.framework_allocated(id)),
                weight: f.info.weight,
                priority: f.info.priority,
                guarantee: f.info.guarantee,
                order: f.order,
            })
            .collect();
        let n = self.agents.slot_count();
        let start = (self.stats.allocation_rounds % n.max(1) as u64) as usize;
        let agents = (start..n)
            .chain(0..start)
            .map(AgentIdx::from_slot)
            .filter_map(|id| {
                let a = self.agents.get(id)?;
                if !a.reachable || a.offer.is_some() || self.tasks.count_on_agent(id) >= MAX_TASKS {
                    return None;
                }
                let free = a.free(self.tasks.agent_allocated(id));
                (free.cpu_millis > 0 && free.mem_mib > 0).then_some(FreeAgent { id, free })
            });
        let filtered = |f: FrameworkIdx, a: AgentIdx| {
            self.frameworks
                .get(f)
                .and_then(|f| f.filters.get(&a))
                .is_some_and(|&until| until > now)
        };
        plan(
            self.config.policy,
            self.cluster_total,
            bidders,
            agents,
            filtered,
        )
    }

    /// Kills a task of a framework over its fair share for each framework below its guarantee that
    /// got nothing this round, one wave at a time.
    pub(super) fn revoke(&mut self, now: u64, new_offers: &BTreeMap<FrameworkIdx, Vec<Offer>>) {
        let in_flight = self.tasks.iter().any(|(_, _, t)| t.revoking);
        if in_flight {
            return;
        }
        let active = self.active_frameworks();
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
                || !f.below_guarantee(self.tasks.framework_allocated(starving))
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
                    let allocated = self.tasks.framework_allocated(i);
                    if v.below_guarantee(allocated) {
                        return None;
                    }
                    let fair = v.info.weight / weights;
                    let over = dominant_share(allocated, total) / fair;
                    (over > 1.0).then_some((i, over))
                })
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .and_then(|(vi, _)| {
                    let (tid, t) = self
                        .tasks
                        .of_framework(vi)
                        .filter(|(_, t)| {
                            t.state != TaskState::Unreachable && t.kill_grace.is_none()
                        })
                        .max_by_key(|(_, t)| t.launched)?;
                    Some((vi, tid.to_owned(), t.agent))
                });
            let Some((vi, tid, agent)) = victim else {
                continue;
            };
            let grace = self.config.revocation_grace_ms;
            if let Some(t) = self.tasks.get_mut(vi, &tid) {
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
