//! Read-only views of the core's state, for the driver, the status publisher, the CLI and tests.

use agent_nostd_core::wire::{ResourceReport, TaskState};
use agent_nostd_core::Resources;
use bramble_proto::OfferId;

use super::*;
use crate::allocator::{dominant_share, Amount};

/// A read-only view of an agent.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentView {
    /// The agent's id.
    pub agent_id: String,
    /// Its hostname.
    pub hostname: String,
    /// What it offers in all.
    pub total: Resources,
    /// What its tasks hold.
    pub allocated: Amount,
    /// What is on offer now.
    pub offered: Resources,
    /// The outstanding offer, if any.
    pub offer_id: Option<OfferId>,
    /// False once it missed its pings or its last will arrived.
    pub reachable: bool,
    /// How many tasks it runs, as the master knows.
    pub tasks: usize,
    /// Its latest resource report.
    pub last_report: Option<ResourceReport>,
    /// Its CPU architecture, e.g. `aarch64`.
    pub arch: String,
    /// Its attributes, as (key, value), e.g. (`sensor`, `bme280`).
    pub attributes: Vec<(String, String)>,
}

/// A read-only view of a framework.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameworkView {
    /// The framework's id.
    pub framework_id: String,
    /// Its name (empty while only recovered from agents).
    pub name: String,
    /// Its state.
    pub state: FrameworkState,
    /// What its tasks hold (on reachable agents).
    pub allocated: Amount,
    /// What is on offer to it.
    pub offered: Amount,
    /// Its dominant share (allocated plus offered), before weighting.
    pub dominant_share: f64,
    /// Whether it suppressed offers.
    pub suppressed: bool,
    /// Its tasks not yet ended.
    pub tasks: usize,
    /// Its outstanding offers.
    pub offers: usize,
    /// Its role.
    pub role: String,
    /// Its DRF weight.
    pub weight: f64,
    /// Its strict priority.
    pub priority: u32,
}

/// A read-only view of an outstanding offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferView {
    /// The offer's id.
    pub offer_id: OfferId,
    /// The framework it is made to.
    pub framework_id: String,
    /// The agent whose resources it offers.
    pub agent_id: String,
    /// What it offers.
    pub resources: Resources,
}

/// A read-only view of a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskView {
    /// Its agent.
    pub agent_id: String,
    /// Its limits.
    pub resources: Resources,
    /// Its latest state.
    pub state: TaskState,
}

impl MasterCore {
    /// One agent.
    pub fn agent(&self, agent_id: &str) -> Option<AgentView> {
        let ai = self.agents.lookup(agent_id)?;
        let a = self.agents.get(ai)?;
        Some(AgentView {
            agent_id: a.id.clone(),
            hostname: a.desc.hostname.clone(),
            total: a.total,
            allocated: self.tasks.agent_allocated(ai),
            offered: a
                .offer
                .and_then(|o| self.offers.get(o))
                .map_or(Resources::ZERO, |o| o.resources),
            offer_id: a.offer,
            reachable: a.reachable,
            tasks: self.tasks.count_on_agent(ai),
            last_report: a.last_report,
            arch: a.desc.arch.clone(),
            attributes: a
                .desc
                .attributes
                .iter()
                .map(|at| (at.key.clone(), at.value.clone()))
                .collect(),
        })
    }

    /// Every agent's id.
    pub fn agent_ids(&self) -> Vec<String> {
        self.agents.values().map(|a| a.id.clone()).collect()
    }

    /// One framework.
    pub fn framework(&self, framework_id: &str) -> Option<FrameworkView> {
        let fi = self.frameworks.lookup(framework_id)?;
        let f = self.frameworks.get(fi)?;
        let allocated = self.tasks.framework_allocated(fi);
        Some(FrameworkView {
            framework_id: f.id.clone(),
            name: f.info.name.clone(),
            state: f.state,
            allocated,
            offered: f.offered,
            dominant_share: dominant_share(f.used(allocated), self.cluster_total),
            suppressed: f.suppressed,
            tasks: self.tasks.count_of_framework(fi),
            offers: f.offers.len(),
            role: f.info.role.clone(),
            weight: f.info.weight,
            priority: f.info.priority,
        })
    }

    /// Every framework's id.
    pub fn framework_ids(&self) -> Vec<String> {
        self.frameworks.values().map(|f| f.id.clone()).collect()
    }

    /// One task, as the master knows it.
    pub fn task(&self, framework_id: &str, task_id: &str) -> Option<TaskView> {
        let t = self
            .tasks
            .get(self.frameworks.lookup(framework_id)?, task_id)?;
        Some(TaskView {
            agent_id: self.agents.get(t.agent)?.id.clone(),
            resources: t.resources,
            state: t.state,
        })
    }

    /// Every task not yet ended, as (framework id, task id, view), by framework then task id.
    pub fn tasks(&self) -> Vec<(String, String, TaskView)> {
        let mut out = Vec::new();
        for (fi, tid, t) in self.tasks.iter() {
            let (Some(f), Some(a)) = (self.frameworks.get(fi), self.agents.get(t.agent)) else {
                continue;
            };
            out.push((
                f.id.clone(),
                tid.to_owned(),
                TaskView {
                    agent_id: a.id.clone(),
                    resources: t.resources,
                    state: t.state,
                },
            ));
        }
        out
    }

    /// Every outstanding offer, by id.
    pub fn offers(&self) -> Vec<OfferView> {
        self.offers
            .iter()
            .filter_map(|(id, rec)| {
                Some(OfferView {
                    offer_id: id,
                    framework_id: self.frameworks.get(rec.framework)?.id.clone(),
                    agent_id: self.agents.get(rec.agent)?.id.clone(),
                    resources: rec.resources,
                })
            })
            .collect()
    }

    /// One outstanding offer.
    pub fn offer(&self, offer_id: OfferId) -> Option<OfferView> {
        let rec = self.offers.get(offer_id)?;
        Some(OfferView {
            offer_id,
            framework_id: self.frameworks.get(rec.framework)?.id.clone(),
            agent_id: self.agents.get(rec.agent)?.id.clone(),
            resources: rec.resources,
        })
    }

    /// How many offers are outstanding.
    pub fn offer_count(&self) -> usize {
        self.offers.len()
    }

    /// The tasks not yet ended on an agent, as `{framework_id}/{task_id}`, sorted.
    pub fn agent_task_ids(&self, agent_id: &str) -> Vec<String> {
        let Some(ai) = self.agents.lookup(agent_id) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = self
            .tasks
            .on_agent(ai)
            .filter_map(|(fi, tid)| Some(format!("{}/{tid}", self.frameworks.get(*fi)?.id)))
            .collect();
        ids.sort();
        ids
    }

    /// The states of a framework's tasks not yet ended.
    pub fn framework_task_states(&self, framework_id: &str) -> Vec<TaskState> {
        self.frameworks
            .lookup(framework_id)
            .map(|fi| self.tasks.of_framework(fi).map(|(_, t)| t.state).collect())
            .unwrap_or_default()
    }
}
