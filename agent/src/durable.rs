//! Checkpoints written off the agent's loop, and the publishes that wait for them.
//!
//! A status update may leave only once the checkpoint that covers it (its task's record, its update
//! id's block) is on disk. Writing that checkpoint inside the agent's loop would stall everything
//! for its flush ([`write_slot`]'s `fdatasync`: tens of µs on this project's test machine, up to
//! milliseconds on an SD card or behind other I/O), launches included. [`Durable`] writes on
//! tokio's blocking pool instead, each into the slot its generation names, one write at a time
//! (a newer snapshot replaces one still waiting), and holds what the core sends meanwhile, in
//! order, until the write that covers it is done:
//!
//! ```text
//! checkpoint changed     ─▶ durable.write(bytes)      background write #n (or next after the current)
//! core sends a message   ─▶ durable.publish(p)        Some(p): nothing outstanding, send it now
//!                                                     None: held until write #n is done
//! write #n done          ─▶ durable.on_written(n, r) ─▶ durable.release() … the held, oldest first
//! ```
//!
//! A launch asks for its checkpoint before it starts the task's process, so the fsync runs while
//! the task `exec`s. At most [`HELD_CAP`] publishes wait; beyond that they are dropped and counted
//! (the core resends status updates until they are acknowledged). A write that fails is logged and
//! releases what waited on it: a disk that cannot take the checkpoint must not silence the agent.

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;

use tokio::sync::mpsc;
use tracing::{error, warn};

use crate::checkpoint::write_slot;

/// The most publishes held at once: every task's updates, and room for reports and the like.
pub const HELD_CAP: usize = agent_nostd_core::wire::MAX_TASKS * 4 + 16;

/// A message for the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Its topic.
    pub topic: String,
    /// Its QoS.
    pub qos: rumqttc::QoS,
    /// Whether it is retained.
    pub retain: bool,
    /// Its bytes.
    pub payload: Vec<u8>,
}

/// A finished write: its number and outcome.
pub type Written = (u64, io::Result<()>);

/// Background checkpoint writes and the publishes held behind them; see the module docs.
#[derive(Debug)]
pub struct Durable {
    path: PathBuf,
    /// The number of the newest write asked for (0: none yet).
    requested: u64,
    /// The number of the newest write done.
    done: u64,
    in_flight: bool,
    /// The checkpoint generation on disk; a write in flight is the next one. It advances only when
    /// a write succeeds, so a failed write's slot (perhaps torn) is the one written next, never the
    /// other, whole, one.
    generation: u64,
    /// The newest snapshot asked for while a write was in flight.
    next: Option<(u64, Vec<u8>)>,
    held: VecDeque<(u64, Publish)>,
    dropped: u64,
    written: mpsc::Sender<Written>,
}

impl Durable {
    /// Writes checkpoints to `path`; finished writes arrive on the receiver, for
    /// [`on_written`](Durable::on_written).
    pub fn new(path: impl Into<PathBuf>) -> (Durable, mpsc::Receiver<Written>) {
        // One write in flight at a time: one message at a time.
        let (written, rx) = mpsc::channel(1);
        let durable = Durable {
            path: path.into(),
            requested: 0,
            done: 0,
            in_flight: false,
            generation: 0,
            next: None,
            held: VecDeque::new(),
            dropped: 0,
            written,
        };
        (durable, rx)
    }

    /// Asks for `bytes` to be written atomically to the checkpoint's path, after any write in
    /// flight. Returns at once; what is published from now on waits for this write.
    pub fn write(&mut self, bytes: Vec<u8>) {
        self.requested += 1;
        if self.in_flight {
            self.next = Some((self.requested, bytes));
        } else {
            self.spawn(self.requested, bytes);
        }
    }

    /// Continues from the generation a checkpoint was loaded at
    /// ([`CheckpointFile::generation`](crate::checkpoint::CheckpointFile::generation)).
    pub fn resume_at(&mut self, generation: u64) {
        self.generation = generation;
    }

    fn spawn(&mut self, n: u64, bytes: Vec<u8>) {
        self.in_flight = true;
        let path = self.path.clone();
        let written = self.written.clone();
        let generation = self.generation + 1;
        tokio::task::spawn_blocking(move || {
            let result = write_slot(&path, generation, &bytes);
            let _ = written.blocking_send((n, result));
        });
    }

    /// `p` if it may go now (no write outstanding, nothing held before it); otherwise it is held
    /// until the newest write asked for is done (or dropped, when [`HELD_CAP`] are held).
    pub fn publish(&mut self, p: Publish) -> Option<Publish> {
        if self.requested == self.done && self.held.is_empty() {
            return Some(p);
        }
        if self.held.len() >= HELD_CAP {
            self.dropped += 1;
            warn!(
                topic = %p.topic,
                dropped = self.dropped,
                "dropped a publish: {HELD_CAP} wait for the checkpoint already"
            );
            return None;
        }
        self.held.push_back((self.requested, p));
        None
    }

    /// Write `n` finished: starts the next one, if asked for. Returns whether it failed (then the
    /// file holds an older checkpoint).
    pub fn on_written(&mut self, (n, result): Written) -> bool {
        self.in_flight = false;
        self.done = self.done.max(n);
        if result.is_ok() {
            self.generation += 1;
        }
        if let Some((next, bytes)) = self.next.take() {
            self.spawn(next, bytes);
        }
        match result {
            Ok(()) => false,
            Err(e) => {
                error!("cannot write the checkpoint {}: {e}", self.path.display());
                true
            }
        }
    }

    /// The oldest held publish whose write is done, or `None`.
    pub fn release(&mut self) -> Option<Publish> {
        match self.held.front() {
            Some((n, _)) if *n <= self.done => self.held.pop_front().map(|(_, p)| p),
            _ => None,
        }
    }

    /// Whether a write is in flight or waiting.
    pub fn is_writing(&self) -> bool {
        self.in_flight || self.next.is_some()
    }

    /// How many publishes are held.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// How many publishes were dropped because [`HELD_CAP`] were held.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(topic: &str) -> Publish {
        Publish {
            topic: topic.into(),
            qos: rumqttc::QoS::AtLeastOnce,
            retain: false,
            payload: vec![1],
        }
    }

    /// The checkpoint bytes of the newest whole slot.
    fn newest(path: &std::path::Path) -> Vec<u8> {
        let slots: Vec<Vec<u8>> = (0..2)
            .filter_map(|g| std::fs::read(crate::checkpoint::slot_path(path, g)).ok())
            .collect();
        let mut parsed: Vec<(u64, &[u8])> = slots
            .iter()
            .filter_map(|b| crate::checkpoint::parse_slot(b).ok())
            .collect();
        parsed.sort();
        parsed
            .last()
            .map(|(_, body)| body.to_vec())
            .unwrap_or_default()
    }

    fn release_all(d: &mut Durable) -> Vec<String> {
        std::iter::from_fn(|| d.release())
            .map(|p| p.topic)
            .collect()
    }

    #[tokio::test]
    async fn publishes_go_at_once_when_no_write_is_outstanding() {
        let dir = tempfile::tempdir().unwrap();
        let (mut d, _rx) = Durable::new(dir.path().join("agent.json"));
        assert_eq!(d.publish(p("a")), Some(p("a")));
        assert!(!d.is_writing());
    }

    #[tokio::test]
    async fn publishes_wait_for_the_write_asked_for_before_them_and_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.json");
        let (mut d, mut rx) = Durable::new(&path);
        d.write(b"one".to_vec());
        assert_eq!(d.publish(p("starting")), None);
        // A second snapshot while the first is in flight: what follows waits for it.
        d.write(b"two".to_vec());
        assert_eq!(d.publish(p("running")), None);
        assert_eq!(d.held(), 2);

        let first = rx.recv().await.unwrap();
        assert_eq!(first.0, 1);
        assert!(!d.on_written(first));
        assert_eq!(release_all(&mut d), ["starting"]);
        assert!(d.is_writing(), "the second write started");
        // Nothing overtakes what is held.
        assert_eq!(d.publish(p("report")), None);

        let second = rx.recv().await.unwrap();
        assert!(!d.on_written(second));
        assert_eq!(release_all(&mut d), ["running", "report"]);
        assert_eq!(newest(&path), b"two");
        assert_eq!(d.publish(p("later")), Some(p("later")));
    }

    #[tokio::test]
    async fn a_newer_snapshot_replaces_one_still_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.json");
        let (mut d, mut rx) = Durable::new(&path);
        d.write(b"one".to_vec());
        d.write(b"two".to_vec());
        d.write(b"three".to_vec());
        assert_eq!(d.publish(p("x")), None);
        let mut writes = 0;
        while d.is_writing() {
            let w = rx.recv().await.unwrap();
            writes += 1;
            d.on_written(w);
        }
        assert_eq!(writes, 2, "\"two\" was never written");
        assert_eq!(newest(&path), b"three");
        assert_eq!(release_all(&mut d), ["x"]);
    }

    #[tokio::test]
    async fn a_failed_write_is_reported_and_releases_what_waited() {
        let dir = tempfile::tempdir().unwrap();
        // The checkpoint's directory is a file: the write fails.
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, b"").unwrap();
        let (mut d, mut rx) = Durable::new(blocker.join("agent.json"));
        d.write(b"one".to_vec());
        assert_eq!(d.publish(p("a")), None);
        let w = rx.recv().await.unwrap();
        assert!(d.on_written(w), "the failure is reported");
        assert_eq!(release_all(&mut d), ["a"]);
    }

    #[tokio::test]
    async fn held_publishes_are_bounded_and_the_overflow_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut d, _rx) = Durable::new(dir.path().join("agent.json"));
        d.write(b"one".to_vec());
        for i in 0..HELD_CAP + 5 {
            assert_eq!(d.publish(p(&format!("t{i}"))), None);
        }
        assert_eq!(d.held(), HELD_CAP);
        assert_eq!(d.dropped(), 5);
    }
}
