//! Simulated executors: what the `pi`, `wordcount` and `sensor` executor processes would do on a
//! board, computed for real and spoken in their real framework messages.
//!
//! The simulated host plays the OS. When an agent launches a task whose command is
//! `.../bramble-{pi,wordcount,sensor} executor ARGS`, the host parses `ARGS` with the executor's
//! own argument parser and starts an [`Executor`]: a small state machine with time passed in, like
//! the cores. It hands out [`ExecOutput`]s — framework message data to send to the scheduler, and
//! the process's exit — which the host carries out through the broker and the agent core.
//!
//! Every executor first takes [`START_MS`] to start and connect. Then:
//!
//! - `pi`: samples with the real [`bramble_pi::executor::sample`] and seed, sends the
//!   [`PiResult`] after a compute time of [`PI_MS_PER_10K_SAMPLES`] per 10,000 samples, then
//!   exits 0.
//! - `wordcount`: sends `Ready`, and again every `--ready-timeout-ms` up to `--ready-attempts`
//!   times (then exits 1); on its `Chunk` it counts the words with the real
//!   [`count_words`], sends the real [`parts`] and `Done`, then exits 0.
//!
//! - `sensor`: reads its source every `--interval-ms` (the first at once), seeded from the board's
//!   agent id as the real reader is, feeds the real [`Detector`], and sends the real [`Summary`]
//!   every `--summary-every` readings; with `--count` it exits 0 after that many. Its JSON
//!   readings and alerts for dashboards are not simulated.
//!
//! Arguments the real parser refuses end the task with exit code 2, as the binaries do.

use agent_nostd_core::agent::Exit;
use bramble_pi::executor::{sample, task_seed, ExecutorArgs as PiArgs};
use bramble_pi::message::PiResult;
use bramble_sensor::executor::{ExecutorArgs as SensorArgs, MAX_READ_FAILURES};
use bramble_sensor::message::Summary;
use bramble_sensor::source::Source;
use bramble_sensor::stats::Detector;
use bramble_wordcount::count::count_words;
use bramble_wordcount::executor::ExecutorArgs as WcArgs;
use bramble_wordcount::message::{parts, WcMsg};
use clap::Parser;

/// The program name of the `pi` binary; a task running `{dir}/bramble-pi executor ...` is a pi
/// executor.
pub const PI_PROGRAM: &str = "bramble-pi";
/// The program name of the `wordcount` binary.
pub const WORDCOUNT_PROGRAM: &str = "bramble-wordcount";
/// The program name of the `sensor` binary.
pub const SENSOR_PROGRAM: &str = "bramble-sensor";

/// Simulated milliseconds from a launch to the executor's first action: the process starts and
/// connects to the broker.
pub const START_MS: u64 = 100;
/// Simulated milliseconds a pi executor spends per 10,000 samples.
pub const PI_MS_PER_10K_SAMPLES: u64 = 1;

/// What an executor does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutput {
    /// Send this framework message data to the scheduler (QoS 1: it waits for the broker).
    Send(Vec<u8>),
    /// The process exits.
    Exit(Exit),
}

/// One simulated executor process. See the module docs.
#[derive(Debug, Clone)]
pub enum Executor {
    /// A pi task: its result goes out at `at`.
    Pi {
        /// When the sampling is done.
        at: u64,
        /// What it sends then.
        result: PiResult,
    },
    /// A wordcount map task waiting for its chunk.
    Wordcount {
        /// When it asks for its chunk again.
        retry_at: u64,
        /// Requests it may still make after the current one.
        attempts_left: u32,
        /// Its arguments.
        args: WcArgs,
    },
    /// A sensor reader.
    Sensor(Box<Reader>),
    /// The process has nothing more to do (it has exited or is about to).
    Exited,
}

/// A sensor reader's state, as in `bramble_sensor::executor::read_loop`.
#[derive(Debug, Clone)]
pub struct Reader {
    /// When it reads next.
    pub next_at: u64,
    /// Its arguments.
    pub args: SensorArgs,
    /// What it reads.
    pub source: Source,
    /// Its rolling statistics.
    pub detector: Detector,
    /// Readings observed so far.
    pub seq: u64,
    /// Failed reads in a row.
    pub failures: u32,
}

impl Reader {
    /// One tick of the read loop.
    fn tick(&mut self, now: u64) -> Vec<ExecOutput> {
        self.next_at = now + self.args.interval_ms.max(1);
        let value = match self.source.read() {
            Ok(v) => {
                self.failures = 0;
                v
            }
            Err(_) => {
                self.failures += 1;
                if self.failures >= MAX_READ_FAILURES {
                    return vec![ExecOutput::Exit(Exit::Code(1))];
                }
                return Vec::new();
            }
        };
        let Some(obs) = self.detector.observe(value) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        self.seq += 1;
        let every = self.args.summary_every;
        if every > 0 && self.seq % every == 0 {
            let d = &self.detector;
            let (mean, stddev) = d.mean_stddev().unwrap_or((obs.value, 0.0));
            let summary = Summary {
                readings: d.readings,
                anomalies: d.anomalies,
                last: obs.value,
                mean,
                stddev,
                min: d.min,
                max: d.max,
            };
            out.push(ExecOutput::Send(summary.encode()));
        }
        if self.args.count != 0 && self.seq >= self.args.count {
            out.push(ExecOutput::Exit(Exit::Code(0)));
        }
        out
    }
}

/// The seed a sensor reader on board `agent_id` gives its simulated source (FNV-1a of the id).
pub fn sensor_seed(agent_id: &str) -> u64 {
    agent_id.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
    })
}

impl Executor {
    /// The executor `argv` runs on board `agent_id`, if it is one the simulation knows, and what
    /// it does at once.
    pub fn spawn(now: u64, agent_id: &str, argv: &[String]) -> Option<(Executor, Vec<ExecOutput>)> {
        let (program, rest) = argv.split_first()?;
        let (sub, args) = rest.split_first()?;
        if sub != "executor" {
            return None;
        }
        let name = program.rsplit('/').next().unwrap_or(program);
        let parse_failed = || (Executor::Exited, vec![ExecOutput::Exit(Exit::Code(2))]);
        if name == PI_PROGRAM {
            let Ok(a) = parse::<PiArgs>("bramble-pi executor", args) else {
                return Some(parse_failed());
            };
            let (inside, total) = sample(task_seed(a.seed, a.index), a.samples);
            let result = PiResult {
                index: a.index,
                inside,
                total,
            };
            let at = now + START_MS + (a.samples / 10_000).max(1) * PI_MS_PER_10K_SAMPLES;
            Some((Executor::Pi { at, result }, Vec::new()))
        } else if name == WORDCOUNT_PROGRAM {
            let Ok(a) = parse::<WcArgs>("bramble-wordcount executor", args) else {
                return Some(parse_failed());
            };
            // The first request goes out once started, like a retry with nothing before it.
            let exec = Executor::Wordcount {
                retry_at: now + START_MS,
                attempts_left: a.ready_attempts,
                args: a,
            };
            Some((exec, Vec::new()))
        } else if name == SENSOR_PROGRAM {
            let Ok(a) = parse::<SensorArgs>("bramble-sensor executor", args) else {
                return Some(parse_failed());
            };
            let Ok(source) = Source::parse(&a.source, sensor_seed(agent_id)) else {
                return Some((Executor::Exited, vec![ExecOutput::Exit(Exit::Code(1))]));
            };
            let reader = Reader {
                next_at: now + START_MS,
                detector: Detector::new(a.window, a.sigma, a.warmup),
                args: a,
                source,
                seq: 0,
                failures: 0,
            };
            Some((Executor::Sensor(Box::new(reader)), Vec::new()))
        } else {
            None
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self {
            Executor::Pi { at, .. } => Some(*at),
            Executor::Wordcount { retry_at, .. } => Some(*retry_at),
            Executor::Sensor(r) => Some(r.next_at),
            Executor::Exited => None,
        }
    }

    /// Time passed: a pi result is ready; a wordcount task asks again or gives up.
    pub fn handle_timeout(&mut self, now: u64) -> Vec<ExecOutput> {
        match self {
            Executor::Pi { at, result } if now >= *at => {
                let data = result.encode();
                *self = Executor::Exited;
                vec![ExecOutput::Send(data), ExecOutput::Exit(Exit::Code(0))]
            }
            Executor::Wordcount {
                retry_at,
                attempts_left,
                args,
            } if now >= *retry_at => {
                if *attempts_left == 0 {
                    *self = Executor::Exited;
                    return vec![ExecOutput::Exit(Exit::Code(1))];
                }
                *attempts_left -= 1;
                *retry_at = now + args.ready_timeout_ms;
                vec![ExecOutput::Send(WcMsg::Ready.encode())]
            }
            Executor::Sensor(r) if now >= r.next_at => {
                let out = r.tick(now);
                if out.iter().any(|o| matches!(o, ExecOutput::Exit(_))) {
                    *self = Executor::Exited;
                }
                out
            }
            _ => Vec::new(),
        }
    }

    /// A framework message from the scheduler arrived on the task's exec topic.
    pub fn handle_message(&mut self, data: &[u8]) -> Vec<ExecOutput> {
        let Executor::Wordcount { .. } = self else {
            return Vec::new();
        };
        // What is not a chunk is dropped with a warning by the real executor.
        let Some(WcMsg::Chunk { text }) = WcMsg::decode(data) else {
            return Vec::new();
        };
        let ps = parts(count_words(&text));
        let n = ps.len() as u32;
        let mut out: Vec<ExecOutput> = ps.iter().map(|p| ExecOutput::Send(p.encode())).collect();
        out.push(ExecOutput::Send(WcMsg::Done { parts: n }.encode()));
        out.push(ExecOutput::Exit(Exit::Code(0)));
        *self = Executor::Exited;
        out
    }
}

/// Parses an executor's arguments as its binary does (`executor_start`).
fn parse<T: Parser>(program: &str, args: &[String]) -> Result<T, clap::Error> {
    T::try_parse_from(std::iter::once(program.to_owned()).chain(args.iter().cloned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn a_pi_executor_sends_the_real_samples_when_done_and_exits_zero() {
        let cmd = argv(&[
            "/usr/bin/bramble-pi",
            "executor",
            "--index",
            "2",
            "--samples",
            "50000",
            "--seed",
            "7",
        ]);
        let (mut e, out) = Executor::spawn(100, "pi0", &cmd).expect("a pi executor");
        assert!(out.is_empty());
        assert_eq!(e.poll_timeout(), Some(100 + START_MS + 5));
        assert!(e.handle_timeout(104 + START_MS).is_empty());
        let (inside, total) = sample(task_seed(7, 2), 50_000);
        let data = PiResult {
            index: 2,
            inside,
            total,
        }
        .encode();
        assert_eq!(
            e.handle_timeout(105 + START_MS),
            vec![ExecOutput::Send(data), ExecOutput::Exit(Exit::Code(0))]
        );
        assert_eq!(e.poll_timeout(), None);
    }

    #[test]
    fn a_wordcount_executor_asks_for_its_chunk_until_it_comes_then_sends_the_counts() {
        let cmd = argv(&["bramble-wordcount", "executor", "--ready-attempts", "2"]);
        let (mut e, out) = Executor::spawn(0, "pi0", &cmd).expect("a wordcount executor");
        assert!(out.is_empty());
        assert_eq!(
            e.handle_timeout(START_MS),
            vec![ExecOutput::Send(WcMsg::Ready.encode())]
        );
        assert_eq!(
            e.handle_timeout(START_MS + 5_000),
            vec![ExecOutput::Send(WcMsg::Ready.encode())]
        );
        let chunk = WcMsg::Chunk {
            text: "b a b\n".into(),
        };
        let out = e.handle_message(&chunk.encode());
        let counts = WcMsg::Counts {
            part: 0,
            words: vec![("a".into(), 1), ("b".into(), 2)],
        };
        assert_eq!(
            out,
            vec![
                ExecOutput::Send(counts.encode()),
                ExecOutput::Send(WcMsg::Done { parts: 1 }.encode()),
                ExecOutput::Exit(Exit::Code(0)),
            ]
        );
    }

    #[test]
    fn a_wordcount_executor_that_never_gets_its_chunk_exits_one() {
        let cmd = argv(&["bramble-wordcount", "executor", "--ready-attempts", "1"]);
        let (mut e, _) = Executor::spawn(0, "pi0", &cmd).expect("a wordcount executor");
        assert_eq!(
            e.handle_timeout(START_MS),
            vec![ExecOutput::Send(WcMsg::Ready.encode())]
        );
        assert_eq!(
            e.handle_timeout(START_MS + 5_000),
            vec![ExecOutput::Exit(Exit::Code(1))]
        );
    }

    #[test]
    fn unknown_commands_are_not_executors_and_bad_arguments_exit_two() {
        assert!(Executor::spawn(0, "pi0", &argv(&["/bin/work"])).is_none());
        assert!(Executor::spawn(0, "pi0", &argv(&["bramble-pi", "scheduler"])).is_none());
        let (_, out) =
            Executor::spawn(0, "pi0", &argv(&["bramble-pi", "executor", "--index", "x"]))
                .expect("a pi executor");
        assert_eq!(out, vec![ExecOutput::Exit(Exit::Code(2))]);
    }
}
