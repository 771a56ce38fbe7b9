//! `bramble-wordcount`: a word count of one file, one map task per chunk, reduced in the scheduler.
//!
//! The scheduler splits the input into chunks of whole lines (default about 8 KiB, so a chunk fits
//! the broker's 16 KiB payload limit) and launches one map task per chunk on whatever boards are
//! offered. A map task asks its scheduler for its chunk (it sends `Ready`, the scheduler answers
//! with `Chunk` on the task's exec topic), counts the words, and sends the counts back in parts
//! that fit a framework message, then `Done`. The scheduler merges each chunk's counts exactly once
//! and prints the top N words. A map task that finished without all its counts arriving within the
//! batch's grace period ([`bramble_sdk::batch::RESULT_GRACE_MS`], 10 s) is relaunched; the counts
//! of whichever attempt completes first are merged.
//!
//! A *word* is a maximal run of Unicode alphanumeric characters ([`char::is_alphanumeric`]),
//! lowercased with [`str::to_lowercase`]; everything else separates words.
//!
//! # Layout
//!
//! - [`count`]: the word definition, counting, chunking, and the top-N order.
//! - [`message`]: [`message::WcMsg`], the framework messages both ways.
//! - [`scheduler`]: [`WordcountScheduler`] and its [`WordcountOptions`].
//! - [`executor`]: [`executor_main`], the map task.
//! - `main.rs`: the `bramble-wordcount` binary (`scheduler` and `executor` subcommands).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod count;
pub mod executor;
pub mod message;
pub mod scheduler;

pub use executor::executor_main;
pub use scheduler::{WordcountError, WordcountOptions, WordcountScheduler};
