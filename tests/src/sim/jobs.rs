//! The real pi and wordcount schedulers sized as the simulation's property tests run them (their
//! executors are simulated): `tasks` pi tasks of 10,000 samples each, and wordcount over `lines`
//! lines of "bramble offers drf bramble" (so "bramble" counts `2 × lines`), both retrying a failed
//! task 10 times.

use bramble_pi::{PiOptions, PiScheduler};
use bramble_wordcount::{WordcountOptions, WordcountScheduler};

/// Pi over `tasks` tasks.
pub fn pi_job(tasks: u32) -> PiScheduler {
    let mut o = PiOptions::new(vec!["/usr/bin/bramble-pi".into(), "executor".into()]);
    o.tasks = tasks;
    o.samples = 10_000;
    o.max_retries = 10;
    PiScheduler::new(o).expect("valid pi options")
}

/// Wordcount over `lines` lines, in chunks of `chunk_bytes` (`None`: the default size).
pub fn wordcount_job(lines: usize, chunk_bytes: Option<usize>) -> WordcountScheduler {
    let mut o = WordcountOptions::new(vec!["/usr/bin/bramble-wordcount".into(), "executor".into()]);
    o.max_retries = 10;
    if let Some(bytes) = chunk_bytes {
        o.chunk_bytes = bytes;
    }
    let text = "bramble offers drf bramble\n".repeat(lines);
    WordcountScheduler::new(o, &text).expect("valid wordcount options")
}
