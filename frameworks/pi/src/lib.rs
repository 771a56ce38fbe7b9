//! `bramble-pi`: a Monte Carlo estimate of π fanned out over a Bramble cluster.
//!
//! The scheduler splits the job into N tasks (default 8) of M samples each (default 2,000,000) and
//! places them on whatever boards are offered, several per offer when they fit. Each executor draws
//! its samples from a splitmix64 generator seeded from its task index, counts the points inside
//! the quarter circle, and sends `(inside, total)` back as a framework message. The scheduler sums
//! them; π ≈ 4 · inside / total. A task that fails or is lost is relaunched (bounded retries); so
//! is a task that finished but whose result did not come within the batch's grace period
//! ([`bramble_sdk::batch::RESULT_GRACE_MS`], 10 s: the message was lost, e.g. in a broker
//! restart), and a result from any attempt counts. The scheduler stops once every result is in.
//!
//! # Layout
//!
//! - [`scheduler`]: [`PiScheduler`] and its [`PiOptions`].
//! - [`executor`]: the sampling ([`executor::sample`]) and [`executor_main`], the task side.
//! - [`message`]: [`message::PiResult`], what an executor sends back.
//! - `main.rs`: the `bramble-pi` binary (`scheduler` and `executor` subcommands).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod executor;
pub mod message;
pub mod scheduler;

pub use executor::executor_main;
pub use scheduler::{PiError, PiOptions, PiScheduler};
