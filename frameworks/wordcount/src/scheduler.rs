//! The wordcount scheduler: one map task per chunk, chunks handed out on request, counts reduced
//! exactly once per chunk.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use bramble_sdk::batch::{Batch, BatchOptions};
use bramble_sdk::messages::MAX_MESSAGE_DATA;
use bramble_sdk::protocol::{ErrorCode, Offer, OfferId, StatusUpdate, TaskInfo};
use bramble_sdk::scheduler::{Scheduler, SchedulerDriver};
use bramble_sdk::Resources;
use tracing::{info, warn};

use crate::count::{self, merge, Counts};
use crate::message::WcMsg;

/// The most `Counts` parts one chunk's counts may come in (a full chunk needs about three).
pub const MAX_PARTS: u32 = 16;
/// The largest chunk: a chunk must fit one framework message.
pub const MAX_CHUNK_BYTES: usize = MAX_MESSAGE_DATA - 64;

/// What the job looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WordcountOptions {
    /// Chunk size in bytes (default 8 KiB, at most [`MAX_CHUNK_BYTES`]).
    pub chunk_bytes: usize,
    /// The command prefix that runs the executor on a board, e.g.
    /// `["/usr/bin/bramble-wordcount", "executor"]`.
    pub executor: Vec<String>,
    /// What each map task asks for (default 250m CPU, 32 MiB).
    pub resources: Resources,
    /// Relaunches per chunk before the job fails (default 3).
    pub max_retries: u32,
}

impl WordcountOptions {
    /// The defaults, with `executor` as the executor prefix.
    pub fn new(executor: Vec<String>) -> Self {
        WordcountOptions {
            chunk_bytes: 8 * 1024,
            executor,
            resources: Resources::new(250, 32, 0),
            max_retries: 3,
        }
    }
}

/// Why a job cannot be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WordcountError {
    /// No executor command, or one that leaves no room for arguments.
    #[error("the executor command must have 1 to 14 elements")]
    BadExecutor,
    /// The chunk size is out of range.
    #[error("chunk size must be 64 to {MAX_CHUNK_BYTES} bytes")]
    BadChunkSize,
    /// Too many chunks for task ids.
    #[error("the input makes {0} chunks; at most 1000000")]
    TooManyChunks(usize),
    /// A task must ask for some CPU and memory.
    #[error("each task must ask for some CPU and memory")]
    NoResources,
    /// The input could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

#[derive(Debug, Default)]
struct Partial {
    parts: BTreeMap<u32, Vec<(String, u64)>>,
    expected: Option<u32>,
}

/// The wordcount scheduler. See the crate docs.
#[derive(Debug)]
pub struct WordcountScheduler {
    opts: WordcountOptions,
    chunks: Vec<String>,
    batch: Batch,
    /// Counts arriving from each task, until its chunk is complete.
    partial: HashMap<String, Partial>,
    counts: Counts,
    fatal: Option<String>,
    /// Framework messages dropped because they did not decode or did not fit the job.
    pub dropped_messages: u64,
}

impl WordcountScheduler {
    /// A job counting `text`.
    pub fn new(opts: WordcountOptions, text: &str) -> Result<Self, WordcountError> {
        if opts.executor.is_empty() || opts.executor.len() > 14 {
            return Err(WordcountError::BadExecutor);
        }
        if !(64..=MAX_CHUNK_BYTES).contains(&opts.chunk_bytes) {
            return Err(WordcountError::BadChunkSize);
        }
        if opts.resources.cpu_millis == 0 || opts.resources.mem_mib == 0 {
            return Err(WordcountError::NoResources);
        }
        let chunks: Vec<String> = count::chunks(text, opts.chunk_bytes)
            .into_iter()
            .map(str::to_owned)
            .collect();
        if chunks.len() > 1_000_000 {
            return Err(WordcountError::TooManyChunks(chunks.len()));
        }
        let batch = Batch::new(BatchOptions {
            prefix: "wc".into(),
            items: chunks.len() as u32,
            resources: opts.resources,
            max_retries: opts.max_retries,
        });
        Ok(WordcountScheduler {
            opts,
            chunks,
            batch,
            partial: HashMap::new(),
            counts: Counts::new(),
            fatal: None,
            dropped_messages: 0,
        })
    }

    /// A job counting the file at `path` (read as UTF-8, invalid bytes replaced).
    pub fn from_file(opts: WordcountOptions, path: &Path) -> Result<Self, WordcountError> {
        let bytes = std::fs::read(path).map_err(|source| WordcountError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::new(opts, &String::from_utf8_lossy(&bytes))
    }

    /// How many chunks (map tasks) the input makes.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// The counts reduced so far (all of them once [`is_complete`](Self::is_complete)).
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// The `n` most frequent words, most frequent first, ties alphabetically.
    pub fn top(&self, n: usize) -> Vec<(String, u64)> {
        count::top(&self.counts, n)
    }

    /// Chunks counted, and chunks in all.
    pub fn progress(&self) -> (u32, u32) {
        self.batch.progress()
    }

    /// True once every chunk is counted.
    pub fn is_complete(&self) -> bool {
        self.batch.is_done()
    }

    /// Why the job failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.fatal.as_deref().or(self.batch.failure())
    }

    fn drop_message(&mut self, task_id: &str, why: &str) {
        self.dropped_messages += 1;
        warn!(
            task = task_id,
            dropped = self.dropped_messages,
            "dropped a message: {why}"
        );
    }

    /// Merges the chunk of `task_id` if all its parts are in.
    fn try_complete(&mut self, driver: &mut SchedulerDriver, task_id: &str, index: u32) {
        let Some(p) = self.partial.get(task_id) else {
            return;
        };
        let Some(expected) = p.expected else {
            return;
        };
        if p.parts.len() != expected as usize || p.parts.keys().any(|&k| k >= expected) {
            return;
        }
        let Some(p) = self.partial.remove(task_id) else {
            return;
        };
        if !self.batch.complete(index) {
            return;
        }
        for words in p.parts.into_values() {
            merge(&mut self.counts, words);
        }
        // Other attempts of the same chunk are not needed any more.
        let batch = &self.batch;
        self.partial
            .retain(|t, _| batch.parse_task_id(t).map(|(i, _)| i) != Some(index));
        let (done, total) = self.progress();
        info!(task = task_id, done, total, "chunk counted");
        if self.batch.is_done() {
            driver.stop();
        }
    }
}

fn task(opts: &WordcountOptions, task_id: &str) -> TaskInfo {
    TaskInfo {
        task_id: task_id.to_owned(),
        argv: opts.executor.clone(),
        env: Vec::new(),
        resources: opts.resources,
        artifacts: Vec::new(),
    }
}

impl Scheduler for WordcountScheduler {
    fn registered(&mut self, driver: &mut SchedulerDriver, framework_id: &str, _: u64) {
        info!(
            framework_id,
            chunks = self.chunks.len(),
            "wordcount job registered"
        );
        if self.batch.is_done() {
            info!("nothing to count");
            driver.stop();
        }
    }

    fn offers(&mut self, driver: &mut SchedulerDriver, offers: Vec<Offer>) {
        let opts = &self.opts;
        self.batch.offers(driver, offers, |_, id| task(opts, id));
    }

    fn status_update(&mut self, driver: &mut SchedulerDriver, update: StatusUpdate) {
        info!(task = %update.task_id, state = update.state.as_str(), "update");
        if self.batch.status_update(driver, &update) {
            driver.stop();
        }
    }

    fn framework_message(&mut self, driver: &mut SchedulerDriver, task_id: &str, data: Vec<u8>) {
        let Some((index, attempt)) = self.batch.parse_task_id(task_id) else {
            return self.drop_message(task_id, "not a task of this job");
        };
        // Only attempts launched so far may report: this bounds what `partial` holds.
        let current = self.batch.parse_task_id(&self.batch.task_id(index));
        if current.is_none_or(|(_, latest)| attempt > latest) {
            return self.drop_message(task_id, "not a task of this job");
        }
        let Some(msg) = WcMsg::decode(&data) else {
            return self.drop_message(task_id, "does not decode");
        };
        if self.batch.state(index) == Some(&bramble_sdk::batch::ItemState::Done) {
            return;
        }
        match msg {
            WcMsg::Ready => {
                let chunk = WcMsg::Chunk {
                    text: self.chunks[index as usize].clone(),
                };
                if let Err(e) = driver.send_message(task_id, chunk.encode()) {
                    warn!(
                        task = task_id,
                        "cannot send the chunk: {e}; the task will ask again"
                    );
                }
            }
            WcMsg::Counts { part, words } if part < MAX_PARTS => {
                let p = self.partial.entry(task_id.to_owned()).or_default();
                p.parts.insert(part, words);
                self.try_complete(driver, task_id, index);
            }
            WcMsg::Done { parts } if parts <= MAX_PARTS => {
                self.partial.entry(task_id.to_owned()).or_default().expected = Some(parts);
                self.try_complete(driver, task_id, index);
            }
            WcMsg::Counts { .. } | WcMsg::Done { .. } => {
                self.drop_message(task_id, "too many parts")
            }
            WcMsg::Chunk { .. } => self.drop_message(task_id, "a chunk from an executor"),
        }
    }

    fn agent_lost(&mut self, driver: &mut SchedulerDriver, agent_id: &str) {
        if self.batch.agent_lost(driver, agent_id) {
            driver.stop();
        }
    }

    fn error(
        &mut self,
        driver: &mut SchedulerDriver,
        code: ErrorCode,
        offer_id: Option<OfferId>,
        message: &str,
    ) {
        if code == ErrorCode::RegistrationRefused {
            self.fatal = Some(format!("registration refused: {message}"));
            driver.stop();
        } else if self.batch.error(driver, code, offer_id, message) {
            driver.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bramble_sdk::protocol::{AgentDescription, Call};
    use bramble_sdk::scheduler::Outgoing;

    use super::*;
    use crate::count::count_words;
    use crate::message::parts;

    fn offer(id: OfferId, cpu: u32, mem: u32) -> Offer {
        Offer {
            offer_id: id,
            agent: Arc::new(AgentDescription {
                agent_id: "a".into(),
                hostname: "a".into(),
                arch: "aarch64".into(),
                attributes: vec![],
            }),
            resources: Resources::new(cpu, mem, 0),
        }
    }

    fn job(text: &str, chunk: usize) -> WordcountScheduler {
        let mut o = WordcountOptions::new(vec!["wc".into(), "executor".into()]);
        o.chunk_bytes = chunk;
        WordcountScheduler::new(o, text).unwrap()
    }

    /// Plays the map task of `task` against the scheduler: Ready, then the counts of what it got.
    fn play_map(s: &mut WordcountScheduler, d: &mut SchedulerDriver, task: &str) {
        s.framework_message(d, task, WcMsg::Ready.encode());
        let out = d.take_outgoing();
        let text = out
            .iter()
            .find_map(|o| match o {
                Outgoing::Message(m) if m.task_id == task => match WcMsg::decode(&m.data) {
                    Some(WcMsg::Chunk { text }) => Some(text),
                    _ => None,
                },
                _ => None,
            })
            .expect("the scheduler sent the chunk");
        let ps = parts(count_words(&text));
        let n = ps.len() as u32;
        // Parts arrive twice and out of order, as at-least-once delivery allows.
        for p in ps.iter().rev().chain(ps.iter()) {
            s.framework_message(d, task, p.encode());
        }
        s.framework_message(d, task, WcMsg::Done { parts: n }.encode());
        s.framework_message(d, task, WcMsg::Done { parts: n }.encode());
    }

    #[test]
    fn one_map_task_per_chunk_is_launched_and_the_reduction_equals_a_direct_count() {
        let text = "the quick brown fox\njumps over the lazy dog\n".repeat(20);
        let mut s = job(&text, 100);
        let mut d = SchedulerDriver::new("wc");
        let n = s.chunk_count();
        assert!(n > 5);
        s.offers(&mut d, vec![offer(1, 100_000, 100_000)]);
        let calls = d.take_calls();
        assert!(matches!(&calls[0], Call::Accept(a) if a.tasks.len() == n));
        for i in 0..n {
            play_map(&mut s, &mut d, &format!("wc-{i}-0"));
        }
        assert!(s.is_complete());
        assert_eq!(s.counts(), &count_words(&text));
        assert_eq!(s.top(1), vec![("the".to_owned(), 40)]);
        assert!(d.is_stopping());
    }

    #[test]
    fn counts_of_a_relaunched_chunk_are_merged_only_once() {
        let text = "a b c\n".repeat(5);
        let mut s = job(&text, 1000);
        let mut d = SchedulerDriver::new("wc");
        s.offers(&mut d, vec![offer(1, 1000, 1000)]);
        s.status_update(
            &mut d,
            bramble_sdk::protocol::StatusUpdate {
                task_id: "wc-0-0".into(),
                agent_id: None,
                state: bramble_sdk::TaskState::Lost,
                reason: bramble_sdk::Reason::None,
                message: String::new(),
                update_id: None,
            },
        );
        s.offers(&mut d, vec![offer(2, 1000, 1000)]);
        d.take_outgoing();
        // Both the old and the new attempt report.
        play_map(&mut s, &mut d, "wc-0-1");
        play_map_after_done(&mut s, &mut d, "wc-0-0");
        assert_eq!(s.counts().get("a"), Some(&5));
    }

    fn play_map_after_done(s: &mut WordcountScheduler, d: &mut SchedulerDriver, task: &str) {
        let ps = parts(count_words("a b c\n"));
        for p in &ps {
            s.framework_message(d, task, p.encode());
        }
        s.framework_message(
            d,
            task,
            WcMsg::Done {
                parts: ps.len() as u32,
            }
            .encode(),
        );
    }

    #[test]
    fn garbage_and_messages_from_strangers_are_dropped_and_counted() {
        let mut s = job("a b\n", 1000);
        let mut d = SchedulerDriver::new("wc");
        s.framework_message(&mut d, "wc-0-0", vec![0xFF, 0xFF]);
        s.framework_message(&mut d, "other-1", WcMsg::Ready.encode());
        s.framework_message(&mut d, "wc-0-0", WcMsg::Done { parts: 1000 }.encode());
        s.framework_message(&mut d, "wc-0-7", WcMsg::Ready.encode());
        assert_eq!(s.dropped_messages, 4);
        assert!(d.take_outgoing().is_empty());
    }

    #[test]
    fn an_empty_input_stops_as_soon_as_it_is_registered() {
        let mut s = job("", 1000);
        let mut d = SchedulerDriver::new("wc");
        s.registered(&mut d, "f", 1);
        assert!(s.is_complete());
        assert!(d.is_stopping());
    }
}
