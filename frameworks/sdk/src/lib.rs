//! The Bramble framework SDK, in the spirit of Mesos's scheduler and executor drivers.
//!
//! A framework has two halves. Its *scheduler* implements [`scheduler::Scheduler`]: it registers
//! with the master, receives offers, answers them with tasks or declines, and follows its tasks'
//! status updates; [`scheduler::run`] connects it to the broker. Its *executor* runs inside each
//! task on a board: [`executor::Executor`] connects from the environment the agent sets and
//! exchanges framework messages with the scheduler straight through the broker. The frameworks
//! built on this SDK (`pi`, `wordcount`, `sensor`) live beside this crate under `frameworks/`.
//!
//! # A new framework in one file
//!
//! ```no_run
//! use bramble_sdk::protocol::{Offer, StatusUpdate, TaskInfo};
//! use bramble_sdk::scheduler::{run, Scheduler, SchedulerConfig, SchedulerDriver};
//! use bramble_sdk::{protocol::Register, Resources};
//!
//! /// Runs `echo hello` once, on the first offer big enough.
//! struct Hello {
//!     launched: bool,
//! }
//!
//! impl Scheduler for Hello {
//!     fn offers(&mut self, driver: &mut SchedulerDriver, offers: Vec<Offer>) {
//!         let need = Resources::new(100, 16, 0);
//!         for offer in offers {
//!             if !self.launched && need.fits_in(&offer.resources) {
//!                 let task = TaskInfo::new("hello-1", &["/bin/echo", "hello"], need);
//!                 self.launched = driver.launch(offer.offer_id, vec![task]).is_ok();
//!             } else {
//!                 let _ = driver.decline(vec![offer.offer_id], Some(60));
//!             }
//!         }
//!     }
//!
//!     fn status_update(&mut self, driver: &mut SchedulerDriver, update: StatusUpdate) {
//!         println!("{} is {}", update.task_id, update.state.as_str());
//!         if update.state.is_terminal() {
//!             driver.stop();
//!         }
//!     }
//! }
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), bramble_sdk::SdkError> {
//!     let config = SchedulerConfig {
//!         brokers: "mqtt://127.0.0.1:1883".parse()?,
//!         client_name: "hello".into(),
//!         registration: Register::new("hello"),
//!         credential: None,
//!     };
//!     run(config, Hello { launched: false }).await?;
//!     Ok(())
//! }
//! ```
//!
//! # Layout
//!
//! - [`protocol`]: the framework↔master wire, re-exported from the `bramble-proto` crate: topic
//!   names, [`protocol::Call`] and [`protocol::Event`], their codec and the task validator. The
//!   "Framework ↔ master" section of `PROTOCOL.md` at the repository root is its written spec.
//! - [`messages`]: framework messages between a scheduler and its executors (topics and
//!   [`messages::FrameworkMessage`]), also from `bramble-proto`.
//! - [`scheduler`]: the [`scheduler::Scheduler`] trait, the [`scheduler::SchedulerDriver`] its
//!   callbacks answer through, the sans-IO [`scheduler::SchedulerCore`] (registration, backoff,
//!   master epochs, dispatch; time passed in, so the simulation runs real schedulers) and the thin
//!   [`scheduler::run`] loop over MQTT.
//! - [`executor`]: [`executor::Executor`], the task side.
//! - [`broker`]: `mqtt://host:port` addresses and the lists of them clients fail over between.
//! - [`error`]: [`SdkError`] and [`CallError`].
//! - [`batch`]: offer decisions and retries for a fixed set of work items run to completion.
//! - [`oneshot`]: a one-off task as its own framework, like `mesos-execute` (the scheduler behind
//!   `bramble run`).
//! - [`rng`]: a tiny seeded generator (splitmix64) for frameworks that sample.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod batch;
pub mod broker;
pub mod cli;
pub mod error;
pub mod executor;
pub mod oneshot;
pub mod rng;
pub mod scheduler;

/// The framework↔master wire (the `bramble-proto` crate).
pub use bramble_proto as protocol;
/// Framework messages between a scheduler and its executors.
pub use bramble_proto::message as messages;

pub use agent_nostd_core::wire::{Reason, TaskState};
pub use agent_nostd_core::Resources;
pub use error::{CallError, SdkError};
