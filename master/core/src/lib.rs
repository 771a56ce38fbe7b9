//! The Bramble master's sans-IO core.
//!
//! The master keeps the agents, frameworks, offers and tasks of a cluster as soft state, decides with
//! its DRF allocator which framework is offered which agent's free resources, and relays launches,
//! kills and status updates between frameworks and agents. This crate is that logic and nothing
//! else: [`MasterCore`] is a state machine in the quinn-proto style that reads no clock and touches
//! no socket or file. The `bramble` binary's driver feeds it payloads and timer ticks and publishes
//! what it polls out; the simulation in `bramble-tests` runs it on simulated time. It speaks to
//! agents with the messages of [`agent_nostd_core::wire`] and to frameworks with those of
//! [`bramble_proto`]. It depends on the wire crates, serde and serde_json only (CI checks that no
//! tokio, rumqttc, rumqttd, axum, hyper or indicatif is in its tree).
//!
//! # Layout
//!
//! - [`config`]: [`Config`] (intervals, timeouts, policy, revocation switch, limits) and its checks.
//! - [`allocator`]: resource sums, dominant shares and the offer order ([`allocator::SortKey`]).
//! - [`master`]: [`MasterCore`] itself, with its call order documented on the module: the state,
//!   the outputs and the timers, with the inputs split by wire — agents (registrations, status
//!   relay, health checks), frameworks (registration, failover, calls), offers (the allocation
//!   round, accepts, revocation) and the operator's kill topic.
//! - [`election`]: [`election::Election`], which of several masters leads (heartbeats through the
//!   broker, epochs as fencing tokens).
//! - [`status`]: the dashboard's retained JSON status topics: [`status::StatusPublisher`] (what
//!   changed → what to publish) in `mod.rs`, the JSON types the CLI and the web page parse back in
//!   [`status::shapes`], the topic names in [`status::topics`] and Home Assistant discovery in
//!   [`status::discovery`].
//!
//! `benches/allocation.rs` times one allocation round at 1,000 × 100 and 10,000 × 1,000
//! (agents × frameworks).

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod allocator;
pub mod authz;
pub mod config;
pub mod election;
pub mod master;
pub mod status;

pub use crate::config::{Config, ConfigError, Policy};
pub use crate::master::{
    AgentView, CoreEvent, FrameDrop, FrameDrops, FrameworkState, FrameworkView, MasterCore,
    OfferView, Outgoing, PrincipalKeys, RecvError, Seal, Stats, TaskView, Transmit,
};
