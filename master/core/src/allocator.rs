//! The allocator's arithmetic: resource sums, dominant shares and the order in which frameworks are
//! offered resources.
//!
//! A round is a pure function, [`plan`] (Nomad's idea: decide on a read-only view, then apply the
//! plan): it puts every framework that wants offers ([`Bidder`]) in a binary heap keyed by
//! [`SortKey`], then walks the free agents ([`FreeAgent`]) once: each agent's whole free remainder
//! goes to the framework at the top of the heap that has no decline filter for it, whose key is then
//! recomputed and pushed back. [`crate::MasterCore`] builds the view, and turns each [`Placement`]
//! into an offer. A round costs O(A log F) for A agents and F frameworks, plus the filtered
//! frameworks skipped.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use agent_nostd_core::Resources;

use crate::config::Policy;

/// A sum of resources that cannot overflow (u64 per part).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amount {
    /// CPU, in millicores.
    pub cpu_millis: u64,
    /// Memory, in MiB.
    pub mem_mib: u64,
    /// Disk, in MiB.
    pub disk_mib: u64,
}

impl Amount {
    /// Adds `r`.
    pub fn add(&mut self, r: Resources) {
        self.cpu_millis += u64::from(r.cpu_millis);
        self.mem_mib += u64::from(r.mem_mib);
        self.disk_mib += u64::from(r.disk_mib);
    }

    /// Takes `r` away, stopping at zero.
    pub fn sub(&mut self, r: Resources) {
        self.cpu_millis = self.cpu_millis.saturating_sub(u64::from(r.cpu_millis));
        self.mem_mib = self.mem_mib.saturating_sub(u64::from(r.mem_mib));
        self.disk_mib = self.disk_mib.saturating_sub(u64::from(r.disk_mib));
    }

    /// The sum of two amounts.
    pub fn plus(self, other: Amount) -> Amount {
        Amount {
            cpu_millis: self.cpu_millis + other.cpu_millis,
            mem_mib: self.mem_mib + other.mem_mib,
            disk_mib: self.disk_mib + other.disk_mib,
        }
    }

    /// True when every part of `other` is at most the same part of `self`.
    pub fn covers_amount(&self, other: &Amount) -> bool {
        other.cpu_millis <= self.cpu_millis
            && other.mem_mib <= self.mem_mib
            && other.disk_mib <= self.disk_mib
    }

    /// True when every part of `r` is at most the same part of `self`.
    pub fn covers(&self, r: &Resources) -> bool {
        u64::from(r.cpu_millis) <= self.cpu_millis
            && u64::from(r.mem_mib) <= self.mem_mib
            && u64::from(r.disk_mib) <= self.disk_mib
    }
}

/// The dominant share of `used` in a cluster of `total`: the larger of its CPU and memory fractions.
/// A part the cluster has none of counts as 0.
pub fn dominant_share(used: Amount, total: Amount) -> f64 {
    let frac = |u: u64, t: u64| if t == 0 { 0.0 } else { u as f64 / t as f64 };
    frac(used.cpu_millis, total.cpu_millis).max(frac(used.mem_mib, total.mem_mib))
}

/// Where a framework stands in the offer order: smaller keys are offered first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SortKey {
    /// 0 while the framework is below its guaranteed minimum, 1 otherwise.
    pub tier: u8,
    /// Under [`Policy::StrictPriority`], `u32::MAX - priority`; 0 under DRF.
    pub rank: u32,
    /// The dominant share divided by the weight.
    pub share: f64,
    /// Registration order, to break ties deterministically.
    pub order: u64,
}

impl SortKey {
    /// The key of a framework holding `used` (allocated plus offered) in a cluster of `total`.
    pub fn new(
        policy: Policy,
        used: Amount,
        total: Amount,
        weight: f64,
        priority: u32,
        guarantee: Option<&Resources>,
        order: u64,
    ) -> Self {
        let below = guarantee.is_some_and(|g| !used.covers(g));
        SortKey {
            tier: if below { 0 } else { 1 },
            rank: match policy {
                Policy::Drf => 0,
                Policy::StrictPriority => u32::MAX - priority,
            },
            share: dominant_share(used, total) / weight,
            order,
        }
    }

    fn cmp_key(&self, other: &Self) -> Ordering {
        self.tier
            .cmp(&other.tier)
            .then(self.rank.cmp(&other.rank))
            .then(self.share.total_cmp(&other.share))
            .then(self.order.cmp(&other.order))
    }
}

/// A heap entry: the framework's slot and its key. Ordered so that `BinaryHeap` pops the smallest key.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<S = usize> {
    /// The key.
    pub key: SortKey,
    /// Which framework it is (the master's framework index).
    pub slot: S,
}

impl<S> PartialEq for Candidate<S> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<S> Eq for Candidate<S> {}

impl<S> PartialOrd for Candidate<S> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<S> Ord for Candidate<S> {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap and the smallest key goes first.
        other.key.cmp_key(&self.key)
    }
}

/// A framework that wants offers, as [`plan`] sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bidder<F> {
    /// Which framework (the master's index).
    pub id: F,
    /// What it holds: allocated plus offered.
    pub used: Amount,
    /// Its DRF weight.
    pub weight: f64,
    /// Its strict priority.
    pub priority: u32,
    /// Its guaranteed minimum.
    pub guarantee: Option<Resources>,
    /// Its registration order (the tie-breaker).
    pub order: u64,
}

impl<F> Bidder<F> {
    fn key(&self, policy: Policy, total: Amount) -> SortKey {
        SortKey::new(
            policy,
            self.used,
            total,
            self.weight,
            self.priority,
            self.guarantee.as_ref(),
            self.order,
        )
    }
}

/// An agent with resources to offer, as [`plan`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreeAgent<A> {
    /// Which agent (the master's index).
    pub id: A,
    /// What it has free and not on offer.
    pub free: Resources,
}

/// One decision of a round: offer `resources` of `agent` to `framework`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement<F, A> {
    /// The framework.
    pub framework: F,
    /// The agent.
    pub agent: A,
    /// What is offered: the agent's whole free remainder.
    pub resources: Resources,
}

/// One allocation round over a read-only view: `agents` in the order they are walked, each given
/// whole to the first bidder in `policy`'s order for which `filtered(framework, agent)` is false.
/// Nothing is placed when no bidder wants offers or the cluster has no CPU and no memory.
pub fn plan<F: Copy, A: Copy>(
    policy: Policy,
    total: Amount,
    mut bidders: Vec<Bidder<F>>,
    agents: impl IntoIterator<Item = FreeAgent<A>>,
    filtered: impl Fn(F, A) -> bool,
) -> Vec<Placement<F, A>> {
    let mut placements = Vec::new();
    if bidders.is_empty() || (total.cpu_millis == 0 && total.mem_mib == 0) {
        return placements;
    }
    let mut heap: BinaryHeap<Candidate> = bidders
        .iter()
        .enumerate()
        .map(|(slot, b)| Candidate {
            key: b.key(policy, total),
            slot,
        })
        .collect();
    let mut skipped = Vec::new();
    for agent in agents {
        let mut chosen = None;
        while let Some(c) = heap.pop() {
            if filtered(bidders[c.slot].id, agent.id) {
                skipped.push(c);
            } else {
                chosen = Some(c);
                break;
            }
        }
        heap.extend(skipped.drain(..));
        let Some(c) = chosen else { continue };
        let bidder = &mut bidders[c.slot];
        placements.push(Placement {
            framework: bidder.id,
            agent: agent.id,
            resources: agent.free,
        });
        bidder.used.add(agent.free);
        heap.push(Candidate {
            key: bidder.key(policy, total),
            slot: c.slot,
        });
    }
    placements
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BinaryHeap;

    fn amount(cpu: u64, mem: u64) -> Amount {
        Amount {
            cpu_millis: cpu,
            mem_mib: mem,
            disk_mib: 0,
        }
    }

    #[test]
    fn dominant_share_is_the_larger_fraction_of_cpu_and_memory() {
        let total = amount(9_000, 18_432);
        // The DRF paper's framework A after three tasks of (1 CPU, 4 GB): 3/9 CPU, 12/18 memory.
        let a = dominant_share(amount(3_000, 12_288), total);
        assert!((a - 2.0 / 3.0).abs() < 1e-9);
        // Framework B after two tasks of (3 CPU, 1 GB): 6/9 CPU.
        let b = dominant_share(amount(6_000, 2_048), total);
        assert!((b - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(dominant_share(amount(5, 5), Amount::default()), 0.0);
    }

    #[test]
    fn a_framework_below_its_guarantee_goes_before_a_lower_share() {
        let total = amount(10_000, 10_000);
        let g = Resources::new(2_000, 0, 0);
        let below = SortKey::new(
            Policy::Drf,
            amount(1_000, 5_000),
            total,
            1.0,
            0,
            Some(&g),
            1,
        );
        let idle = SortKey::new(Policy::Drf, amount(0, 0), total, 1.0, 0, None, 0);
        let heap: BinaryHeap<_> = [(idle, 0), (below, 1)]
            .into_iter()
            .map(|(key, slot)| Candidate { key, slot })
            .collect();
        assert_eq!(heap.peek().map(|c| c.slot), Some(1));
    }

    #[test]
    fn strict_priority_puts_the_higher_priority_first_whatever_its_share() {
        let total = amount(10_000, 10_000);
        let high = SortKey::new(
            Policy::StrictPriority,
            amount(9_000, 0),
            total,
            1.0,
            10,
            None,
            1,
        );
        let low = SortKey::new(Policy::StrictPriority, amount(0, 0), total, 1.0, 1, None, 0);
        assert_eq!(high.cmp_key(&low), Ordering::Less);
        // Under DRF the same two are ordered by share.
        let high = SortKey::new(Policy::Drf, amount(9_000, 0), total, 1.0, 10, None, 1);
        let low = SortKey::new(Policy::Drf, amount(0, 0), total, 1.0, 1, None, 0);
        assert_eq!(high.cmp_key(&low), Ordering::Greater);
    }

    proptest! {
        #[test]
        fn the_heap_pops_frameworks_in_order_of_weighted_share(
            used in proptest::collection::vec((0u64..10_000, 0u64..10_000, 1u32..8), 1..40)
        ) {
            let total = amount(10_000, 10_000);
            let mut heap = BinaryHeap::new();
            for (i, &(c, m, w)) in used.iter().enumerate() {
                let key = SortKey::new(Policy::Drf, amount(c, m), total, f64::from(w), 0, None, i as u64);
                heap.push(Candidate { key, slot: i });
            }
            let mut last: Option<f64> = None;
            while let Some(c) = heap.pop() {
                let (cu, mu, w) = used[c.slot];
                let share = dominant_share(amount(cu, mu), total) / f64::from(w);
                prop_assert!((share - c.key.share).abs() < 1e-12);
                if let Some(l) = last {
                    prop_assert!(l <= share);
                }
                last = Some(share);
            }
        }
    }

    fn bidder(id: u8, order: u64) -> Bidder<u8> {
        Bidder {
            id,
            used: Amount::default(),
            weight: 1.0,
            priority: 0,
            guarantee: None,
            order,
        }
    }

    #[test]
    fn a_round_gives_each_agent_to_the_lowest_share_and_skips_filtered_pairs() {
        let mut total = Amount::default();
        total.add(Resources::new(4000, 4096, 0));
        let agents = (0..4u8).map(|id| FreeAgent {
            id,
            free: Resources::new(1000, 1024, 0),
        });
        // Framework 1 may not have agent 0: it goes to framework 2, then they alternate.
        let placed = plan(
            Policy::Drf,
            total,
            vec![bidder(1, 0), bidder(2, 1)],
            agents,
            |f, a| f == 1 && a == 0,
        );
        let pairs: Vec<(u8, u8)> = placed.iter().map(|p| (p.framework, p.agent)).collect();
        assert_eq!(pairs, [(2, 0), (1, 1), (1, 2), (2, 3)]);
    }

    #[test]
    fn nothing_is_placed_without_bidders_or_without_cluster_resources() {
        let agent = [FreeAgent {
            id: 0u8,
            free: Resources::new(1, 1, 0),
        }];
        let none = plan::<u8, u8>(
            Policy::Drf,
            Amount::default(),
            vec![bidder(1, 0)],
            agent,
            |_, _| false,
        );
        assert!(none.is_empty());
        let mut total = Amount::default();
        total.add(Resources::new(1, 1, 0));
        assert!(plan::<u8, u8>(Policy::Drf, total, vec![], agent, |_, _| false).is_empty());
    }
}
