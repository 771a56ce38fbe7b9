//! The `bramble-sensor` binary: `scheduler` places the readers and runs until Ctrl-C; `executor` is
//! the reader each board runs.

use std::process::ExitCode;

use bramble_sdk::protocol::{parse_sha256, ArtifactInfo};
use bramble_sensor::{SensorOptions, SensorScheduler};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bramble-sensor",
    version,
    about = "A sensor reader on every Bramble board with the sensor"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
enum Command {
    /// Run the scheduler: place one reader per board with the sensor, until Ctrl-C.
    Scheduler {
        #[command(flatten)]
        broker: bramble_sdk::cli::BrokerArgs,
        /// The client name the framework's topics are keyed by.
        #[arg(long, default_value = "sensor")]
        client: String,
        /// The sensor a board must have (attribute sensor=<kind>).
        #[arg(long, default_value = "bme280")]
        kind: String,
        /// The readers' source: auto, thermal, thermal:<path> or simulated:<seed>.
        #[arg(long, default_value = "auto")]
        source: String,
        /// Milliseconds between readings.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u32,
        /// The command that runs the reader on a board, split on spaces (default: this binary
        /// followed by `executor`).
        #[arg(long)]
        executor: Option<String>,
        /// Fetch the executor from this http:// URL (e.g. the master's
        /// `http://master:8080/artifacts/bramble-sensor`) into each reader's sandbox and run it as
        /// `./bramble-sensor executor …`, instead of expecting it installed on the boards.
        #[arg(long, value_name = "URL", requires = "executor_sha256")]
        executor_url: Option<String>,
        /// The SHA-256 of the file at --executor-url, as `sha256sum` prints it.
        #[arg(long, value_name = "HEX", requires = "executor_url")]
        executor_sha256: Option<String>,
        /// A build of the executor for one architecture: `ARCH=URL,SHA256` (e.g.
        /// `arm=http://master:8080/artifacts/bramble-sensor-armv7,9f86…`); repeatable.
        #[arg(long, value_name = "ARCH=URL,SHA256", requires = "executor_url")]
        executor_variant: Vec<String>,
    },
    /// Run one reader (the agent starts this).
    Executor {
        /// The reader's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    bramble_sdk::cli::init_logging();
    match Cli::parse().command {
        Command::Executor { args } => bramble_sensor::executor_main(&args),
        Command::Scheduler {
            broker,
            client,
            kind,
            source,
            interval_ms,
            executor,
            executor_url,
            executor_sha256,
            executor_variant,
        } => {
            let artifact = match executor_artifact(executor_url, executor_sha256, &executor_variant)
            {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(64);
                }
            };
            let executor = match (&artifact, executor) {
                (Some(a), None) => vec![format!("./{}", a.name), "executor".to_owned()],
                (_, executor) => bramble_sdk::cli::executor_command(executor, "bramble-sensor"),
            };
            let mut opts = SensorOptions::new(executor);
            opts.executor_artifact = artifact;
            opts.kind = kind;
            opts.source = source;
            opts.interval_ms = interval_ms;
            scheduler(&broker, &client, opts)
        }
    }
}

/// The executor as an artifact, from `--executor-url`, `--executor-sha256` and `--executor-variant`.
fn executor_artifact(
    url: Option<String>,
    sha256: Option<String>,
    variants: &[String],
) -> Result<Option<ArtifactInfo>, String> {
    let (Some(url), Some(sha256)) = (url, sha256) else {
        return Ok(None);
    };
    let sha256 = parse_sha256(&sha256).map_err(|e| format!("--executor-sha256: {e}"))?;
    let mut artifact = ArtifactInfo::new("bramble-sensor", &url, sha256).executable();
    for v in variants {
        let bad = || format!("--executor-variant {v:?}: expected ARCH=URL,SHA256");
        let (arch, rest) = v.split_once('=').ok_or_else(bad)?;
        let (url, sha) = rest.rsplit_once(',').ok_or_else(bad)?;
        let sha = parse_sha256(sha).map_err(|e| format!("--executor-variant {arch}: {e}"))?;
        artifact = artifact.variant(arch, url, sha);
    }
    Ok(Some(artifact))
}

fn scheduler(broker: &bramble_sdk::cli::BrokerArgs, client: &str, opts: SensorOptions) -> ExitCode {
    let result = (|| -> Result<SensorScheduler, String> {
        let sensor = SensorScheduler::new(opts).map_err(|e| e.to_string())?;
        bramble_sdk::cli::run_blocking(broker, client, "sensor", sensor)
    })();
    match result {
        Ok(sensor) => {
            println!("readers at shutdown:");
            for (agent, p) in sensor.placements() {
                let s = sensor.summaries().get(agent);
                match s {
                    Some(s) => println!(
                        "  {agent}: {} ({} readings, {} anomalies, last {:.2} °C, mean {:.2} ± {:.2})",
                        p.task_id, s.readings, s.anomalies, s.last, s.mean, s.stddev
                    ),
                    None => println!("  {agent}: {} (no summary yet)", p.task_id),
                }
            }
            match sensor.failure() {
                Some(why) => {
                    eprintln!("error: {why}");
                    ExitCode::FAILURE
                }
                None => ExitCode::SUCCESS,
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
