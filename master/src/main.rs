//! `bramble`: the master and the operator's command line.
//!
//! - `bramble up`: a whole local cluster (embedded broker, master, 3 agents) and the demo frameworks.
//! - `bramble master`: the master, with its embedded broker or against an external one (`--broker`).
//!
//! Hidden: `bramble __supervise …` supervises a task (as `bramble-agent` does), `bramble __agent …`
//! runs an agent (the `bramble-agent` command line), and `bramble __exec FRAMEWORK …` runs a demo
//! framework's executor, so `bramble up` and the end-to-end tests need no other binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use bramble::broker::{self, BrokerConfig};
use bramble::driver::{self, BrokerAddr};
use bramble::Config;
use clap::{Parser, Subcommand};

/// Bramble: a cluster manager for Raspberry Pi-class boards.
#[derive(Debug, Parser)]
#[command(name = "bramble", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a local cluster (embedded broker, master, 3 agents) and run the demo frameworks.
    Up {
        /// Where the embedded broker listens.
        #[arg(long, default_value = "127.0.0.1:1883")]
        listen: SocketAddr,
        /// Start the cluster only, without the demo frameworks.
        #[arg(long)]
        no_demo: bool,
        /// Where the agents keep their work directories (default: a new temporary directory).
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
    /// Run the master.
    Master {
        /// Where the embedded broker listens.
        #[arg(long, default_value = "0.0.0.0:1883", conflicts_with = "broker")]
        listen: SocketAddr,
        /// Use this external MQTT 3.1.1 broker (e.g. Mosquitto) instead of the embedded one.
        #[arg(long, value_name = "mqtt://HOST:PORT")]
        broker: Option<String>,
        /// Seconds between allocation rounds.
        #[arg(long, default_value_t = 1.0)]
        allocation_interval: f64,
    },
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == bramble_agent::process::SUPERVISE_ARG)
    {
        return bramble_agent::process::supervise_main(&args[2..]);
    }
    if args.get(1).is_some_and(|a| a == "__exec") {
        return exec(&args[2..]);
    }
    if args.get(1).is_some_and(|a| a == "__agent") {
        let mut agent_args = args;
        agent_args.remove(1);
        return bramble_agent::cli::main(agent_args);
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BRAMBLE_LOG").unwrap_or_else(|_| {
                // rumqttd logs every ordinary disconnect as an error.
                let default = match cli.command {
                    Command::Up { .. } => "warn,rumqttd=off",
                    Command::Master { .. } => "info,rumqttd::router::routing=off",
                };
                tracing_subscriber::EnvFilter::new(default)
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bramble: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Master {
            listen,
            broker,
            allocation_interval,
        } => runtime.block_on(master(listen, broker, allocation_interval)),
        Command::Up {
            listen,
            no_demo,
            work_dir,
        } => runtime.block_on(bramble::up::run(listen, !no_demo, work_dir)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bramble: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `bramble __exec FRAMEWORK ARGS…`: a demo framework's executor, run as a task.
fn exec(args: &[std::ffi::OsString]) -> ExitCode {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match args.first().map(String::as_str) {
        Some("pi") => bramble_pi::executor_main(&args[1..]),
        Some("wordcount") => bramble_wordcount::executor_main(&args[1..]),
        Some("sensor") => bramble_sensor::executor_main(&args[1..]),
        other => {
            eprintln!("bramble __exec: unknown framework {other:?} (pi, wordcount, sensor)");
            ExitCode::from(64)
        }
    }
}

async fn master(
    listen: SocketAddr,
    broker: Option<String>,
    allocation_interval: f64,
) -> Result<(), String> {
    let addr = match broker {
        Some(url) => BrokerAddr::parse(&url).map_err(|e| e.to_string())?,
        None => {
            broker::start(&BrokerConfig::small(listen)).map_err(|e| e.to_string())?;
            let a = broker::connect_addr(listen);
            println!("embedded MQTT broker listening on {listen}");
            BrokerAddr {
                host: a.ip().to_string(),
                port: a.port(),
            }
        }
    };
    if !(allocation_interval.is_finite() && allocation_interval > 0.0) {
        return Err("--allocation-interval must be a positive number of seconds".into());
    }
    let config = Config {
        allocation_interval_ms: (allocation_interval * 1000.0) as u64,
        ..Config::default()
    };
    driver::run(config, addr, None, ctrl_c())
        .await
        .map_err(|e| e.to_string())
}

async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
}
