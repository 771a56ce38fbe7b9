//! `bramble-sensor`: one reader task on every board that has a given sensor, with rolling
//! statistics and anomaly alerts published for dashboards.
//!
//! The scheduler places exactly one reader on each board whose offer carries the attribute
//! `sensor=<kind>` (default `bme280`; a comma-separated value lists several sensors). Offers from
//! other boards are declined with a long filter, offers from boards that already have a reader with
//! a shorter one. When a reader fails or is lost, or its board is lost, the scheduler revives offers
//! and places it again when a qualifying board offers. It runs until stopped.
//!
//! The reader samples the SoC thermal zone on a real Pi (`/sys/class/thermal/thermal_zone0/temp`)
//! or a deterministic simulated source elsewhere, keeps a rolling mean and standard deviation over a
//! window, flags readings more than k σ from the mean after a warm-up, and publishes JSON readings
//! (`bramble/v1/sensor/{agent_id}/reading`, QoS 0) and alerts (`…/alert`, QoS 1), plus a summary to
//! its scheduler as a framework message every few readings.
//!
//! # Layout
//!
//! - [`stats`]: [`stats::Detector`], the rolling statistics and anomaly rule.
//! - [`source`]: [`source::Source`], thermal zone or simulated.
//! - [`message`]: the JSON reading and alert, the summary framework message, the topics.
//! - [`scheduler`]: [`SensorScheduler`] and its [`SensorOptions`].
//! - [`executor`]: [`executor_main`], the reader task.
//! - `main.rs`: the `bramble-sensor` binary (`scheduler` and `executor` subcommands).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod executor;
pub mod message;
pub mod scheduler;
pub mod source;
pub mod stats;

pub use executor::executor_main;
pub use scheduler::{Placement, PlacementState, SensorError, SensorOptions, SensorScheduler};
