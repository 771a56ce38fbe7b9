//! The Bramble framework SDK.
//!
//! It will hold the framework↔master protocol and, in the spirit of Mesos's drivers, a scheduler trait
//! with its driver (accept, decline with filters, revive, suppress, kill, reconcile) and the executor
//! side that runs inside tasks. The frameworks themselves (`pi`, `wordcount`, `sensor`) live beside it
//! under `frameworks/`.
