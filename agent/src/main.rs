//! `bramble-agent`: the std driver around [`agent_nostd_core::AgentCore`].
//!
//! `bramble-agent [--config FILE] [flags]` runs the agent; flags override the file.
//! `bramble-agent __supervise …` is the small supervisor each task runs under (see
//! [`bramble_agent::process`]); it is not for people.

use std::path::PathBuf;
use std::process::ExitCode;

use bramble_agent::config::{Config, Overrides, DEFAULT_CONFIG_PATH};
use clap::Parser;

/// The Bramble agent: reports this board's resources to the master and runs its tasks in cgroups.
#[derive(Debug, Parser)]
#[command(name = "bramble-agent", version, about)]
struct Cli {
    /// The config file (TOML). Default: /etc/bramble/agent.toml, if it exists.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// The MQTT broker, e.g. mqtt://192.168.1.10:1883.
    #[arg(long)]
    broker: Option<String>,
    /// The agent's id (default: the hostname).
    #[arg(long)]
    agent_id: Option<String>,
    /// Where sandboxes and the checkpoint live.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// The user tasks run as when the agent is root.
    #[arg(long)]
    run_as: Option<String>,
    /// An attribute to advertise, e.g. --attribute sensor=bme280 (repeatable).
    #[arg(long = "attribute", value_name = "KEY=VALUE", value_parser = parse_attribute)]
    attributes: Vec<(String, String)>,
    /// Memory kept for the OS, in MiB.
    #[arg(long, value_name = "MIB")]
    reserve_mem: Option<u32>,
}

fn parse_attribute(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == bramble_agent::process::SUPERVISE_ARG)
    {
        return bramble_agent::process::supervise_main(&args[2..]);
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BRAMBLE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (path, required) = match &cli.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let overrides = Overrides {
        agent_id: cli.agent_id,
        broker: cli.broker,
        work_dir: cli.work_dir,
        run_as: cli.run_as,
        attributes: cli.attributes,
        reserve_mem_mib: cli.reserve_mem,
    };
    let config = match Config::load(&path, required, overrides, &hostname) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bramble-agent: {e}");
            return ExitCode::from(78); // EX_CONFIG
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bramble-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bramble_agent::driver::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C or SIGTERM (systemd's stop).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
