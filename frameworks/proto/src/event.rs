//! Master → framework events: registration, offers and their rescinding, task status updates,
//! lost agents and errors.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use agent_nostd_core::wire::{Reason, TaskState};
use agent_nostd_core::Resources;
use serde::{Deserialize, Serialize};

use crate::OfferId;

/// A key=value attribute of an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribute {
    /// The key, e.g. `sensor`.
    pub key: String,
    /// The value, e.g. `bme280`.
    pub value: String,
}

/// What an offer says about its agent. The master builds it once per agent registration and
/// shares it between that agent's offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentDescription {
    /// The agent's id.
    pub agent_id: String,
    /// Its hostname.
    pub hostname: String,
    /// Its architecture (`aarch64`, `arm`, …).
    pub arch: String,
    /// Its attributes, e.g. `sensor=bme280`.
    pub attributes: Vec<Attribute>,
}

/// Resources of one agent offered to one framework.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The offer's id.
    pub offer_id: OfferId,
    /// The agent (on the wire, its fields in place).
    pub agent: Arc<AgentDescription>,
    /// What is offered: everything free on the agent.
    pub resources: Resources,
}

/// A task's new state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusUpdate {
    /// The task.
    pub task_id: String,
    /// Its agent, when known.
    pub agent_id: Option<String>,
    /// The state.
    pub state: TaskState,
    /// Why.
    pub reason: Reason,
    /// A detail for people, possibly empty.
    pub message: String,
    /// The agent's id of this update when it must be acknowledged: the framework answers
    /// [`Call::Acknowledge`](crate::Call::Acknowledge) with `agent_id` and this id once it has
    /// handled the update, and the agent resends it (through the master) until then. `None` for
    /// the master's own updates (answers to `Reconcile`, launches that could not happen, tasks lost
    /// with their agent): they need no acknowledgement, and `Reconcile` recovers them.
    pub update_id: Option<u32>,
}

impl StatusUpdate {
    /// The acknowledgement this update asks for, if any: it came from an agent, with an id.
    pub fn acknowledgement(&self) -> Option<crate::Acknowledge> {
        Some(crate::Acknowledge {
            agent_id: self.agent_id.clone()?,
            task_id: self.task_id.clone(),
            update_id: self.update_id?,
        })
    }
}

/// What kind of error an [`Event::Error`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The registration was refused (bad name, weight, …); the framework is not registered.
    RegistrationRefused,
    /// The call came from a client the master knows no registered framework behind: register again.
    NotRegistered,
    /// The offer is not (or no longer) this framework's.
    UnknownOffer,
    /// The accept was refused and none of its tasks launched; the offer went back to the pool.
    AcceptRefused,
    /// The call is malformed (too many tasks, bad id, …).
    InvalidCall,
}

/// Master → framework events. Append new variants at the end only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// The registration was accepted.
    Registered {
        /// The framework's id: keep it to re-register after a failover.
        framework_id: String,
        /// The master's epoch: a new one means the master restarted.
        master_epoch: u64,
    },
    /// New offers.
    Offers(Vec<Offer>),
    /// An offer was withdrawn (timeout, agent lost, …): accepting it now fails.
    Rescind {
        /// The offer.
        offer_id: OfferId,
    },
    /// A task changed state.
    Update(StatusUpdate),
    /// An agent became unreachable; its tasks get their own updates.
    AgentLost {
        /// The agent.
        agent_id: String,
    },
    /// A call failed.
    Error {
        /// What kind of failure.
        code: ErrorCode,
        /// The offer concerned, if any.
        offer_id: Option<OfferId>,
        /// For people, e.g. `task t1 asks cpu 3000m but the offer has 2000m`.
        message: String,
    },
}
