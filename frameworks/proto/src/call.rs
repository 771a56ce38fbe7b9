//! Framework → master calls: registration, accepts and declines of offers, filters, kills,
//! reconciliation and teardown.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use agent_nostd_core::Resources;
use serde::{Deserialize, Serialize};

use crate::task::TaskInfo;
use crate::{OfferId, MAX_NAME_LEN, MAX_WEIGHT};

/// A first registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Register {
    /// A name for people, 1 to [`MAX_NAME_LEN`] bytes.
    pub name: String,
    /// The role the framework runs under, at most [`MAX_NAME_LEN`] bytes (may be empty).
    pub role: String,
    /// The DRF weight: its dominant share is divided by this. Finite, above 0, at most [`MAX_WEIGHT`].
    pub weight: f64,
    /// Under the strict-priority policy, higher is offered first.
    pub priority: u32,
    /// The guaranteed minimum: while below it, the framework is offered first.
    pub guarantee: Option<Resources>,
    /// How long the master keeps the framework's tasks after it disconnects, in milliseconds.
    pub failover_timeout_ms: u64,
    /// Names the MQTT connection this registration travels on; the last will set on that
    /// connection ([`Call::Gone`]) names it too, so a will of an older connection, arriving late,
    /// is ignored. 0 when the framework does not say (its will then always applies).
    pub connection: u64,
    /// The principal that speaks for the framework (`framework-{client}`, or an operator for
    /// `bramble run`'s clients): the master checks the registration's frame, and every later
    /// frame of its session, with that principal's key (see [`crate::frame`]).
    pub principal: String,
    /// When it was made, in seconds since the Unix epoch: a registration is taken within
    /// [`crate::frame::FRESH_SECS`] of the master's clock, once.
    pub time: u64,
    /// A number the scheduler draws for each registration, so no two are alike.
    pub nonce: u64,
}

/// A registration that takes back an id the framework held before (after its own restart, or after a
/// master restart).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReRegister {
    /// The id the framework held.
    pub framework_id: String,
    /// The registration, as on first registration.
    pub info: Register,
}

/// Launch tasks on an offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accept {
    /// The offer.
    pub offer_id: OfferId,
    /// The tasks; together they must fit in the offer. The rest of the offer returns to the pool.
    pub tasks: Vec<TaskInfo>,
}

/// Give offers back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decline {
    /// The offers.
    pub offer_ids: Vec<OfferId>,
    /// For how long the same agents are not offered to this framework again, in seconds; `None` for
    /// the master's default (5 s).
    pub refuse_seconds: Option<u32>,
}

/// Kill a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kill {
    /// The task.
    pub task_id: String,
    /// Milliseconds between SIGTERM and SIGKILL; 0 kills at once.
    pub grace_ms: u32,
}

/// The framework has handled a status update: the master passes this on to the agent, which then
/// stops resending the update (and the task's earlier ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledge {
    /// The agent the update came from ([`StatusUpdate::agent_id`](crate::StatusUpdate)).
    pub agent_id: String,
    /// The task.
    pub task_id: String,
    /// The update's id ([`StatusUpdate::update_id`](crate::StatusUpdate)).
    pub update_id: u32,
}

/// Framework → master calls. Append new variants at the end only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Call {
    /// First registration (on the register topic).
    Register(Register),
    /// Registration with a previous id (on the register topic).
    ReRegister(ReRegister),
    /// Launch tasks on an offer.
    Accept(Accept),
    /// Give offers back, with a filter.
    Decline(Decline),
    /// Clear every filter and resume offers.
    Revive,
    /// Stop sending offers until the next revive.
    Suppress,
    /// Kill a task.
    Kill(Kill),
    /// Ask for the latest state of these tasks, or of every task when the list is empty.
    Reconcile {
        /// The tasks, or empty for all.
        task_ids: Vec<String>,
    },
    /// The framework is done: its tasks are killed and it is forgotten.
    Teardown,
    /// The framework's connection dropped (its MQTT last will, on the will topic).
    Gone {
        /// The connection the will was set on ([`Register::connection`]); 0 always applies.
        connection: u64,
    },
    /// A status update was handled: the agent may forget it.
    Acknowledge(Acknowledge),
}

// ----- events -----

impl Register {
    /// A registration with weight 1, priority 0, no guarantee and a one-minute failover timeout.
    pub fn new(name: &str) -> Self {
        Register {
            name: name.to_owned(),
            role: String::new(),
            weight: 1.0,
            priority: 0,
            guarantee: None,
            failover_timeout_ms: 60_000,
            connection: 0,
            principal: String::new(),
            time: 0,
            nonce: 0,
        }
    }

    /// Checks the fields a master relies on, returning what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name.len() > MAX_NAME_LEN {
            return Err(format!("name must be 1 to {MAX_NAME_LEN} bytes"));
        }
        if self.role.len() > MAX_NAME_LEN {
            return Err(format!("role must be at most {MAX_NAME_LEN} bytes"));
        }
        if !(self.weight.is_finite() && self.weight > 0.0 && self.weight <= MAX_WEIGHT) {
            return Err(format!(
                "weight must be above 0 and at most {MAX_WEIGHT}, not {}",
                self.weight
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_checks_name_and_weight() {
        assert!(Register::new("pi").validate().is_ok());
        let mut r = Register::new("pi");
        r.weight = f64::NAN;
        assert!(r.validate().is_err());
        r.weight = 0.0;
        assert!(r.validate().is_err());
        assert!(Register::new("").validate().is_err());
    }
}
