//! What every framework binary needs around its scheduler: logging, the default executor command,
//! and running a scheduler until it stops or Ctrl-C.

use crate::broker::Brokers;
use crate::protocol::Register;
use crate::scheduler::{run_until, Scheduler, SchedulerConfig};

/// Logs to stderr at the level in `BRAMBLE_LOG` (error|warn|info|debug|trace; info by default).
pub fn init_logging() {
    let level = std::env::var("BRAMBLE_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing_subscriber::filter::LevelFilter>().ok())
        .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();
}

/// The executor command for tasks when none is given: this very binary followed by `executor`
/// (`fallback` if the binary's path cannot be found).
pub fn default_executor(fallback: &str) -> Vec<String> {
    let exe = std::env::current_exe()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| fallback.to_owned());
    vec![exe, "executor".to_owned()]
}

/// `--executor "CMD ARGS"` split on spaces, or the [`default_executor`].
pub fn executor_command(given: Option<String>, fallback: &str) -> Vec<String> {
    match given {
        Some(cmd) => cmd.split_whitespace().map(str::to_owned).collect(),
        None => default_executor(fallback),
    }
}

/// Registers `scheduler` as framework `name` through the broker at `broker` (an `mqtt://` URL, or
/// a comma list of them to fail over between)
/// under the client name `client`, and runs it on a current-thread runtime until it stops (or
/// Ctrl-C, which tears the framework down). Returns the scheduler with its results.
pub fn run_blocking<S: Scheduler>(
    broker: &str,
    client: &str,
    name: &str,
    scheduler: S,
) -> Result<S, String> {
    let brokers = Brokers::parse(broker).map_err(|e| e.to_string())?;
    let config = SchedulerConfig {
        brokers,
        client_name: client.to_owned(),
        registration: Register::new(name),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime
        .block_on(run_until(config, scheduler, async {
            let _ = tokio::signal::ctrl_c().await;
        }))
        .map_err(|e| e.to_string())
}

/// The start of every `executor_main`: parses `args` (what follows the executor prefix) as `T`,
/// naming the program `program` in errors, and builds a current-thread runtime. On failure the
/// error is printed and the exit code to return is given back.
pub fn executor_start<T: clap::Parser>(
    program: &str,
    args: &[String],
) -> Result<(T, tokio::runtime::Runtime), std::process::ExitCode> {
    let parsed = T::try_parse_from(std::iter::once(program.to_owned()).chain(args.iter().cloned()))
        .map_err(|e| {
            let _ = e.print();
            std::process::ExitCode::from(2)
        })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            tracing::error!("cannot start the runtime: {e}");
            std::process::ExitCode::FAILURE
        })?;
    Ok((parsed, runtime))
}
