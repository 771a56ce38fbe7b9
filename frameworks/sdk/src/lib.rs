//! The Bramble framework SDK.
//!
//! A framework's scheduler talks to the master over MQTT with the messages of [`protocol`]: it
//! registers, receives offers, answers them with tasks or declines, and follows its tasks' status
//! updates. The scheduler and executor drivers (in the spirit of Mesos's) will grow beside the
//! protocol; the frameworks themselves (`pi`, `wordcount`, `sensor`) live beside this crate under
//! `frameworks/`.
//!
//! # Layout
//!
//! - [`protocol`]: framework topic names, [`protocol::Call`] and [`protocol::Event`], and their
//!   version-byte + postcard codec. The "Framework ↔ master" section of `PROTOCOL.md` at the repository root is its written spec.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod protocol;
