//! The `bramble-sensor` binary: `scheduler` places the readers and runs until Ctrl-C; `executor` is
//! the reader each board runs.

use std::process::ExitCode;

use bramble_sdk::broker::BrokerAddr;
use bramble_sdk::protocol::Register;
use bramble_sdk::scheduler::{run_until, SchedulerConfig};
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
    init_logging();
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
            let executor = match executor {
                Some(cmd) => cmd.split_whitespace().map(str::to_owned).collect(),
                None => default_executor(),
            };
            let mut opts = SensorOptions::new(executor);
            opts.kind = kind;
            opts.source = source;
            opts.interval_ms = interval_ms;
            scheduler(&broker, &client, opts)
        }
    }
}

/// Logs to stderr at the level in `BRAMBLE_LOG` (error|warn|info|debug|trace; info by default).
fn init_logging() {
    let level = std::env::var("BRAMBLE_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing_subscriber::filter::LevelFilter>().ok())
        .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();
}

fn default_executor() -> Vec<String> {
    let exe = std::env::current_exe()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "bramble-sensor".to_owned());
    vec![exe, "executor".to_owned()]
}

fn scheduler(broker: &str, client: &str, opts: SensorOptions) -> ExitCode {
    let result = (|| -> Result<SensorScheduler, String> {
        let addr = BrokerAddr::parse(broker).map_err(|e| e.to_string())?;
        let sensor = SensorScheduler::new(opts).map_err(|e| e.to_string())?;
        let config = SchedulerConfig {
            broker_host: addr.host,
            broker_port: addr.port,
            client_name: client.to_owned(),
            registration: Register::new("sensor"),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime
            .block_on(run_until(config, sensor, async {
                let _ = tokio::signal::ctrl_c().await;
            }))
            .map_err(|e| e.to_string())
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
