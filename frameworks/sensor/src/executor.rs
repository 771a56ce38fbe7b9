//! The reader task: read, keep rolling statistics, publish readings and alerts, summarise.

use std::process::ExitCode;
use std::time::Duration;

use bramble_sdk::executor::{Delivery, Executor};
use bramble_sdk::SdkError;
use clap::Parser;
use tracing::{error, info, warn};

use crate::message::{alert_topic, reading_topic, Alert, Reading, Summary};
use crate::source::{Source, SourceError};
use crate::stats::Detector;

/// Failed readings in a row after which the reader gives up.
pub const MAX_READ_FAILURES: u32 = 10;

/// The reader's arguments (what follows the executor prefix on the task's command line).
#[derive(Debug, Clone, Parser)]
#[command(name = "bramble-sensor executor", about = "One sensor reader")]
pub struct ExecutorArgs {
    /// `auto`, `thermal`, `thermal:<path>` or `simulated:<seed>`.
    #[arg(long, default_value = "auto")]
    pub source: String,
    /// Milliseconds between readings.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// Readings in the rolling window.
    #[arg(long, default_value_t = 60)]
    pub window: usize,
    /// Standard deviations beyond which a reading is an anomaly.
    #[arg(long, default_value_t = 3.0)]
    pub sigma: f64,
    /// Readings in the window before anomalies are flagged.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Readings between summaries sent to the scheduler.
    #[arg(long, default_value_t = 10)]
    pub summary_every: u64,
    /// Stop after this many readings (0: run until killed).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
}

/// Why a reader stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    /// The broker connection failed.
    #[error(transparent)]
    Sdk(#[from] SdkError),
    /// The source is unusable.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// `BRAMBLE_AGENT_ID` is not set: the topics are keyed by it.
    #[error("BRAMBLE_AGENT_ID is not set: is this process running as a Bramble task?")]
    NoAgentId,
}

/// The executor side: parses `args`, connects from the task's environment and reads until killed
/// (or `--count` readings). Builds its own current-thread runtime.
pub fn executor_main(args: &[String]) -> ExitCode {
    let (args, runtime) =
        match bramble_sdk::cli::executor_start::<ExecutorArgs>("bramble-sensor executor", args) {
            Ok(started) => started,
            Err(code) => return code,
        };
    runtime.block_on(async move {
        let result = async {
            let exec = Executor::connect_from_env().await?;
            let r = read_loop(&exec, &args).await;
            exec.close().await;
            r
        }
        .await;
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!("{e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Reads and publishes on a connected executor.
pub async fn read_loop(exec: &Executor, args: &ExecutorArgs) -> Result<(), ReaderError> {
    let env = exec.env();
    let agent = env.agent_id.clone().ok_or(ReaderError::NoAgentId)?;
    let task = env.task_id.clone();
    let seed = agent.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
    });
    let mut source = Source::parse(&args.source, seed)?;
    let mut detector = Detector::new(args.window, args.sigma, args.warmup);
    let (reading_topic, alert_topic) = (reading_topic(&agent), alert_topic(&agent));
    info!(agent = %agent, source = source.kind(), "reader started");
    let mut tick = tokio::time::interval(Duration::from_millis(args.interval_ms.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0;
    let mut seq = 0u64;
    while args.count == 0 || seq < args.count {
        tick.tick().await;
        let value = match source.read() {
            Ok(v) => {
                failures = 0;
                v
            }
            Err(e) => {
                failures += 1;
                warn!(failures, "cannot read: {e}");
                if failures >= MAX_READ_FAILURES {
                    return Err(e.into());
                }
                continue;
            }
        };
        let Some(obs) = detector.observe(value) else {
            continue;
        };
        let reading = Reading {
            agent_id: agent.clone(),
            task_id: task.clone(),
            seq,
            source: source.kind().to_owned(),
            celsius: obs.value,
            mean: obs.mean,
            stddev: obs.stddev,
            anomaly: obs.anomaly,
        };
        if let Err(e) = exec
            .publish_json(&reading_topic, &reading, Delivery::AtMostOnce)
            .await
        {
            warn!("cannot publish a reading: {e}");
        }
        if obs.anomaly {
            let alert = Alert {
                agent_id: agent.clone(),
                task_id: task.clone(),
                seq,
                celsius: obs.value,
                mean: obs.mean,
                stddev: obs.stddev,
                deviations: (obs.value - obs.mean) / obs.stddev.max(crate::stats::MIN_STDDEV),
            };
            warn!(value = obs.value, mean = obs.mean, "anomaly");
            if let Err(e) = exec
                .publish_json(&alert_topic, &alert, Delivery::AtLeastOnce)
                .await
            {
                warn!("cannot publish an alert: {e}");
            }
        }
        seq += 1;
        if args.summary_every > 0 && seq % args.summary_every == 0 {
            let (mean, stddev) = detector.mean_stddev().unwrap_or((obs.value, 0.0));
            let summary = Summary {
                readings: detector.readings,
                anomalies: detector.anomalies,
                last: obs.value,
                mean,
                stddev,
                min: detector.min,
                max: detector.max,
            };
            if let Err(e) = exec.send_message(summary.encode()).await {
                warn!("cannot send a summary: {e}");
            }
        }
    }
    Ok(())
}
