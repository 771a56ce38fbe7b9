//! The framework↔master wire of Bramble: topic names, the calls a scheduler makes, the events the
//! master sends back, the framework messages between a scheduler and its executors, their codec,
//! and the one validator of a task a framework asks to launch.
//!
//! Every payload is one version byte ([`FRAMEWORK_PROTOCOL_VERSION`]) followed by the postcard
//! encoding of a [`Call`] (framework → master) or of an [`EventEnvelope`] (master → framework:
//! the sending master's epoch, then the [`Event`]; frameworks ignore an older master's events). As on the agent
//! wire, postcard is positional: new calls, events, error codes are variants appended at the end of
//! their enum, and any other change bumps the version byte.
//!
//! Topics, all keyed by `{client}`, a name the framework chooses (a valid id, see
//! [`agent_nostd_core::ids`]). The framework subscribes to its event topic *before* it registers, so
//! nothing the master sends right after the registration (the first offers) can be missed; the
//! framework id the master assigns is carried in the messages, not in the topics, and a framework
//! that fails over may come back under another client name.
//!
//! | topic | direction | QoS | retain | payload |
//! |---|---|---|---|---|
//! | `bramble/v1/framework/register/{client}` | framework → master | 1 | no | [`Call::Register`] / [`Call::ReRegister`] |
//! | `bramble/v1/framework/call/{client}` | framework → master | 1 | no | any other [`Call`] but [`Call::Gone`] |
//! | `bramble/v1/framework/will/{client}` | framework → master | 1 | no | [`Call::Gone`] (MQTT last will) |
//! | `bramble/v1/framework/event/{client}` | master → framework | 1 | no | every [`Event`] |
//! | `bramble/v1/framework/message/{client}` | executor → scheduler | 1 | no | [`FrameworkMessage`] |
//! | `bramble/v1/framework/exec/{client}/{task_id}` | scheduler → executor | 1 | no | [`FrameworkMessage`] |
//!
//! The "Framework ↔ master" section of `PROTOCOL.md` at the repository root is the full spec, with
//! field layouts.
//!
//! The crate is `no_std` with `alloc`: it does no I/O, so the master's core, the SDK's scheduler
//! core and the simulation share it.
//!
//! # Layout
//!
//! - [`topic`]: topic names, [`FrameworkTopic`] and [`parse_topic`].
//! - [`call`]: [`Call`] and its bodies ([`Register`], [`Accept`], [`Decline`], [`Kill`],
//!   [`Acknowledge`], …).
//! - [`task`]: [`TaskInfo`] and its artifacts, and [`TaskInfo::validate`] /
//!   [`TaskInfo::to_run_task`], the one check of a task against the wire's limits.
//! - [`event`]: [`Event`] and its bodies ([`Offer`], [`StatusUpdate`], [`ErrorCode`], …).
//! - [`codec`]: the version byte + postcard codec, [`EventEnvelope`] and [`DecodeError`].
//! - [`frame`]: calls and events as authenticated frames, and the sessions they belong to.
//! - [`message`]: [`FrameworkMessage`], scheduler ↔ executor data.

#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod call;
pub mod codec;
pub mod event;
pub mod frame;
pub mod message;
pub mod task;
pub mod topic;

pub use call::{Accept, Acknowledge, Call, Decline, Kill, ReRegister, Register};
pub use codec::{DecodeError, EventEnvelope};
pub use event::{AgentDescription, Attribute, ErrorCode, Event, Offer, StatusUpdate};
pub use message::{exec_topic, message_topic, FrameworkMessage, MAX_MESSAGE_DATA, MESSAGE_VERSION};
pub use task::{parse_sha256, sha256_hex, ArtifactInfo, ArtifactVariant, TaskError, TaskInfo};
pub use topic::{
    call_topic, event_topic, parse_topic, register_topic, will_topic, FrameworkTopic,
    FRAMEWORK_PREFIX, MASTER_FILTERS,
};

/// The version byte at the start of every framework↔master payload.
///
/// Version 2 appended `artifacts` to [`TaskInfo`] (postcard has no field-level compatibility);
/// version 3 appended `update_id` to [`StatusUpdate`] and `connection` to [`Register`], gave
/// [`Call::Gone`] its connection, and added [`Call::Acknowledge`]; version 4 put the sending
/// master's epoch before every event ([`EventEnvelope`]); version 5 made every call and event an
/// authenticated frame ([`frame`]) and appended `principal`, `time` and `nonce` to [`Register`].
pub const FRAMEWORK_PROTOCOL_VERSION: u8 = 5;

/// The most tasks one accept may launch, and the most task ids one reconcile may list.
pub const MAX_TASKS_PER_CALL: usize = 256;
/// The most offers one decline may name.
pub const MAX_OFFERS_PER_CALL: usize = 256;
/// The longest framework name or role, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// The largest weight a framework may ask for.
pub const MAX_WEIGHT: f64 = 1_000_000.0;

/// An offer's id, unique within one master epoch.
pub type OfferId = u64;
