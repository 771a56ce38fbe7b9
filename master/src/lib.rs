//! The Bramble master.
//!
//! The master keeps the agents, frameworks, offers and tasks of a cluster as soft state, decides with
//! its DRF allocator which framework is offered which agent's free resources, and relays launches,
//! kills and status updates between frameworks and agents. Its heart is [`MasterCore`], a sans-IO
//! state machine in the quinn-proto style: it reads no clock and touches no socket; the driver (the
//! MQTT event loop with the embedded broker, the dashboard and the `bramble` CLI) feeds it payloads and
//! timer ticks and publishes what it polls out. It speaks to agents with the messages of
//! [`agent_nostd_core::wire`] and to frameworks with those of [`bramble_sdk::protocol`].
//!
//! # Layout
//!
//! - [`config`]: [`Config`] (intervals, timeouts, policy, revocation switch, limits) and its checks.
//! - [`allocator`]: resource sums, dominant shares and the offer order ([`allocator::SortKey`]).
//! - [`core`]: [`MasterCore`] itself, with its call order documented on the module: the state, the
//!   outputs and the timers, with the inputs split by wire — agents (registrations, status relay,
//!   health checks), frameworks (registration, failover, calls) and offers (the allocation round,
//!   accepts, revocation).
//! - [`status`]: the dashboard's retained JSON status topics and Home Assistant discovery, sans-IO.
//! - [`query`]: the CLI's queries of the status topics and their tables.
//! - [`run`]: `bramble run`, a one-off task as its own framework.
//! - [`driver`]: the tokio driver connecting the core to an MQTT broker.
//! - [`broker`]: the embedded rumqttd broker, with small explicit limits.
//! - [`http`]: the HTTP server (axum): the artifact store agents fetch from.
//! - [`cluster`]: a whole cluster in one process (broker, master, agents).
//! - [`web`]: the web dashboard (Server-Sent Events of the status topics) and `/metrics`.
//! - [`up`] and [`demo`]: `bramble up`, the local cluster with the pi and sensor frameworks.
//! - [`deploy`]: `bramble deploy`, the agent pushed to many boards over SSH.
//!
//! `benches/allocation.rs` times one allocation round at 1,000 × 100 and 10,000 × 1,000
//! (agents × frameworks); the cluster-level tests on simulated time live in the `bramble-tests`
//! package.

// One `unsafe` block, in `broker::set_listener_nodelay`, borrows a descriptor by number.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod allocator;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod core;
pub mod demo;
pub mod deploy;
pub mod driver;
pub mod http;
pub mod query;
pub mod run;
pub mod status;
pub mod up;
pub mod web;

pub use crate::config::{Config, ConfigError, Policy};
pub use crate::core::{
    AgentView, FrameworkState, FrameworkView, MasterCore, OfferView, Outgoing, RecvError, Stats,
    StatusChanges, TaskUpdateRecord, TaskView, Transmit,
};
