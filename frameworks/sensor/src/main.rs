//! The `bramble-sensor` binary: `scheduler` places the readers and runs until Ctrl-C; `executor` is
//! the reader each board runs.

use std::process::ExitCode;

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
enum Command {
    /// Run the scheduler: place one reader per board with the sensor, until Ctrl-C.
    Scheduler {
        /// The broker the master listens on.
        #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
        broker: String,
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
        } => {
            let executor = bramble_sdk::cli::executor_command(executor, "bramble-sensor");
            let mut opts = SensorOptions::new(executor);
            opts.kind = kind;
            opts.source = source;
            opts.interval_ms = interval_ms;
            scheduler(&broker, &client, opts)
        }
    }
}

fn scheduler(broker: &str, client: &str, opts: SensorOptions) -> ExitCode {
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
