//! The `bramble-wordcount` binary: `scheduler` counts a file over the cluster and prints the top
//! words; `executor` is what each map task runs on a board.

use std::path::PathBuf;
use std::process::ExitCode;

use bramble_sdk::broker::BrokerAddr;
use bramble_sdk::protocol::Register;
use bramble_sdk::scheduler::{run_until, SchedulerConfig};
use bramble_wordcount::{WordcountOptions, WordcountScheduler};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bramble-wordcount",
    version,
    about = "Word count of a file over a Bramble cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the scheduler: split the file, place the map tasks, print the top words.
    Scheduler {
        /// The file to count.
        input: PathBuf,
        /// The broker the master listens on.
        #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
        broker: String,
        /// The client name the framework's topics are keyed by.
        #[arg(long, default_value = "wordcount")]
        client: String,
        /// Chunk size in bytes.
        #[arg(long, default_value_t = 8 * 1024)]
        chunk_bytes: usize,
        /// How many words to print.
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// The command that runs the executor on a board, split on spaces (default: this binary
        /// followed by `executor`).
        #[arg(long)]
        executor: Option<String>,
    },
    /// Run one map task's executor (the agent starts this).
    Executor {
        /// The executor's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    init_logging();
    match Cli::parse().command {
        Command::Executor { args } => bramble_wordcount::executor_main(&args),
        Command::Scheduler {
            input,
            broker,
            client,
            chunk_bytes,
            top,
            executor,
        } => {
            let executor = match executor {
                Some(cmd) => cmd.split_whitespace().map(str::to_owned).collect(),
                None => default_executor(),
            };
            let mut opts = WordcountOptions::new(executor);
            opts.chunk_bytes = chunk_bytes;
            scheduler(&broker, &client, &input, opts, top)
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
        .unwrap_or_else(|_| "bramble-wordcount".to_owned());
    vec![exe, "executor".to_owned()]
}

fn scheduler(
    broker: &str,
    client: &str,
    input: &std::path::Path,
    opts: WordcountOptions,
    top: usize,
) -> ExitCode {
    let result = (|| -> Result<WordcountScheduler, String> {
        let addr = BrokerAddr::parse(broker).map_err(|e| e.to_string())?;
        let job = WordcountScheduler::from_file(opts, input).map_err(|e| e.to_string())?;
        let config = SchedulerConfig {
            broker_host: addr.host,
            broker_port: addr.port,
            client_name: client.to_owned(),
            registration: Register::new("wordcount"),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime
            .block_on(run_until(config, job, async {
                let _ = tokio::signal::ctrl_c().await;
            }))
            .map_err(|e| e.to_string())
    })();
    match result {
        Ok(job) => {
            let (done, total) = job.progress();
            println!("chunks counted: {done}/{total}");
            println!("distinct words: {}", job.counts().len());
            for (word, n) in job.top(top) {
                println!("{n:>10}  {word}");
            }
            if let Some(why) = job.failure() {
                eprintln!("error: {why}");
                return ExitCode::FAILURE;
            }
            if job.is_complete() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
