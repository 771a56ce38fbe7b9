//! [`MasterCore::check_invariants`]: the books (allocations, offers, sums) checked against each other.

use std::collections::HashMap;

use agent_nostd_core::wire::TaskState;

use super::registry::FrameworkIdx;
use super::*;
use crate::allocator::Amount;

impl MasterCore {
    /// Checks the books: every agent's tasks and offer fit in its total, offers are consistent,
    /// framework sums match their tasks. Returns the first inconsistency found.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut fw_alloc: HashMap<FrameworkIdx, Amount> = HashMap::new();
        let mut fw_offered: HashMap<FrameworkIdx, Amount> = HashMap::new();
        let mut cluster = Amount::default();
        for (ai, a) in self.agents.iter() {
            let mut sum = Amount::default();
            for (fi, tid) in self.tasks.on_agent(ai) {
                if self.frameworks.get(*fi).is_none() {
                    return Err(format!(
                        "agent {} lists a task of a removed framework",
                        a.id
                    ));
                }
                let t = self
                    .tasks
                    .get(*fi, tid)
                    .ok_or_else(|| format!("agent {} lists unknown task {tid}", a.id))?;
                if t.agent != ai {
                    return Err(format!("task {tid} is listed on two agents"));
                }
                sum.add(t.resources);
                if a.reachable && t.state != TaskState::Unreachable {
                    fw_alloc.entry(*fi).or_default().add(t.resources);
                }
            }
            let allocated = self.tasks.agent_allocated(ai);
            if sum != allocated {
                return Err(format!(
                    "agent {} allocation is off: {sum:?} vs {allocated:?}",
                    a.id
                ));
            }
            let mut used = sum;
            if let Some(o) = a.offer {
                let rec = self
                    .offers
                    .get(o)
                    .ok_or_else(|| format!("agent {} points at a missing offer", a.id))?;
                if rec.agent != ai {
                    return Err(format!("offer {o} is on another agent"));
                }
                used.add(rec.resources);
            }
            let mut total = Amount::default();
            total.add(a.total);
            if !total.covers_amount(&used) {
                return Err(format!(
                    "agent {} is over-committed: {used:?} of {}",
                    a.id, a.total
                ));
            }
            if a.reachable {
                cluster.add(a.total);
            }
        }
        for (id, rec) in self.offers.iter() {
            let a = self
                .agents
                .get(rec.agent)
                .ok_or_else(|| format!("offer {id} is on a removed agent"))?;
            if a.offer != Some(id) || !a.reachable {
                return Err(format!("offer {id} is not the offer of its agent"));
            }
            let f = self
                .frameworks
                .get(rec.framework)
                .ok_or_else(|| format!("offer {id} belongs to a removed framework"))?;
            if !f.offers.contains(&id) || f.state != FrameworkState::Active {
                return Err(format!("offer {id} is not listed by an active framework"));
            }
            fw_offered
                .entry(rec.framework)
                .or_default()
                .add(rec.resources);
        }
        for (fi, f) in self.frameworks.iter() {
            if fw_alloc.get(&fi).copied().unwrap_or_default() != self.tasks.framework_allocated(fi)
            {
                return Err(format!("framework {} allocation is off", f.id));
            }
            if fw_offered.get(&fi).copied().unwrap_or_default() != f.offered {
                return Err(format!("framework {} offered sum is off", f.id));
            }
            if f.completed.len() > self.config.max_completed_tasks.max(1) {
                return Err(format!("framework {} keeps too many completed tasks", f.id));
            }
        }
        for (fi, tid, t) in self.tasks.iter() {
            let f = self
                .frameworks
                .get(fi)
                .ok_or_else(|| format!("task {tid} belongs to a removed framework"))?;
            let listed = self.agents.get(t.agent).is_some()
                && self
                    .tasks
                    .on_agent(t.agent)
                    .any(|k| k.0 == fi && k.1 == tid);
            if !listed || t.state.is_terminal() {
                return Err(format!("task {tid} of {} is not on its agent", f.id));
            }
        }
        if cluster != self.cluster_total {
            return Err("cluster total is off".into());
        }
        Ok(())
    }
}
