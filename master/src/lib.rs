//! The Bramble master's runtime: the `bramble` binary around [`bramble_master_core::MasterCore`].
//!
//! The master's logic (registries, DRF allocator, offers, task states, the status publisher) is the
//! sans-IO `bramble-master-core` crate. This crate holds everything that touches the world around
//! it: the tokio driver that connects the core to an MQTT broker, the embedded rumqttd broker, the
//! HTTP server (artifacts, the web dashboard, `/metrics`), the CLI verbs that read the status topics,
//! `bramble run`, `bramble up` with its demo, and `bramble deploy`.
//!
//! # Layout
//!
//! - [`mqtt`]: the leaf every other module uses: the broker address, the largest packet, and the
//!   one-shot clients (read retained messages, publish once).
//! - [`driver`]: the tokio driver connecting the core to an MQTT broker.
//! - [`outbox`]: the driver's bounded outgoing queue and its shedding policy.
//! - [`leadership`]: the election (standby masters) around the driver's leader; [`epoch_file`]:
//!   the newest epoch kept across restarts.
//! - [`broker`]: the embedded rumqttd broker, with small explicit limits.
//! - [`credentials`]: the cluster's credential store, `bramble credentials`, the embedded
//!   broker's login check and the Mosquitto password/ACL files.
//! - [`query`]: the CLI's queries of the status topics and their tables.
//! - [`run`]: `bramble run`, a one-off task as its own framework.
//! - [`http`]: the HTTP server (axum): the artifact store agents fetch from.
//! - [`web`]: the web dashboard (Server-Sent Events of the status topics) and `/metrics`.
//! - [`cluster`]: a whole cluster in one process (broker, master, agents).
//! - [`up`] and [`demo`]: `bramble up`, the local cluster with the pi and sensor frameworks.
//! - [`deploy`]: `bramble deploy`, the agent pushed to many boards over SSH.
//!
//! `benches/launch_latency.rs` times accept → RUNNING through a whole local cluster; the
//! allocation bench lives with the core, and the cluster-level tests on simulated time in the
//! `bramble-tests` package.

// One `unsafe` block, in `broker::set_listener_nodelay`, borrows a descriptor by number.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod broker;
pub mod cluster;
pub mod credentials;
pub mod demo;
pub mod deploy;
pub mod driver;
pub mod epoch_file;
pub mod http;
pub mod leadership;
pub mod mqtt;
pub mod outbox;
pub mod query;
pub mod run;
pub mod up;
pub mod web;
