//! The allocation round (DRF or strict priorities, with filters) and revocation for guarantees.

use std::collections::{BTreeMap, BinaryHeap};

use agent_nostd_core::wire::{TaskState, MAX_TASKS};
use bramble_proto::{Event, Offer};

use super::registry::{AgentIdx, FrameworkIdx, Idx};
use super::*;
use crate::allocator::{dominant_share, Amount, Candidate, SortKey};

pub(super) fn key_of(policy: crate::config::Policy, f: &Framework, total: Amount) -> SortKey {
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
