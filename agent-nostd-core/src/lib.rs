//! Bramble's agent core: the agent↔master wire protocol, its MQTT topic names and the agent's sans-IO
//! state machine.
//!
//! `#![no_std]` and without `alloc`: every string and list has a fixed capacity (heapless), so the same
//! code runs in the std agent on a Raspberry Pi and builds for microcontrollers (`thumbv6m-none-eabi`,
//! `thumbv7em-none-eabihf`). Nothing here reads a clock, a socket or a file; time comes in as `now`
//! (milliseconds) and effects go out through `poll_*` (the quinn-proto style).
//!
//! # Layout
//!
//! - [`ids`]: agent, framework and task ids, their validation, and [`TaskKey`], which names a task.
//! - [`resources`]: CPU, memory and disk amounts.
//! - [`wire`]: every agent↔master message, the version byte and the postcard codec.
//! - [`topic`]: the `bramble/v1/…` topic names and their parser.
//! - [`agent`]: [`AgentCore`], the agent's state machine.
//! - [`frame`]: authenticated frames (message, counter, tag) and the replay window.
//! - [`auth`]: principals, their secrets, the broker passwords and message keys derived from them.
//!
//! `PROTOCOL.md` at the repository root is the wire spec.

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod auth;
pub mod frame;
pub mod ids;
pub mod resources;
pub mod topic;
pub mod wire;

pub use agent::{Action, AgentCore, Config, Exit, LocalEvent, ResourceSample, Signal, Transmit};
pub use ids::TaskKey;
pub use resources::Resources;
pub use wire::{AgentMsg, MasterEnvelope, MasterMsg, WireMessage, PROTOCOL_VERSION};
