//! The `bramble-wordcount` binary: `scheduler` counts a file over the cluster and prints the top
//! words; `executor` is what each map task runs on a board.

use std::path::PathBuf;
use std::process::ExitCode;

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
#[allow(clippy::large_enum_variant)] // parsed once
enum Command {
    /// Run the scheduler: split the file, place the map tasks, print the top words.
    Scheduler {
        /// The file to count.
        input: PathBuf,
        #[command(flatten)]
        broker: bramble_sdk::cli::BrokerArgs,
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
    bramble_sdk::cli::init_logging();
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
            let executor = bramble_sdk::cli::executor_command(executor, "bramble-wordcount");
            let mut opts = WordcountOptions::new(executor);
            opts.chunk_bytes = chunk_bytes;
            scheduler(&broker, &client, &input, opts, top)
        }
    }
}

fn scheduler(
    broker: &bramble_sdk::cli::BrokerArgs,
    client: &str,
    input: &std::path::Path,
    opts: WordcountOptions,
    top: usize,
) -> ExitCode {
    let result = (|| -> Result<WordcountScheduler, String> {
        let job = WordcountScheduler::from_file(opts, input).map_err(|e| e.to_string())?;
        bramble_sdk::cli::run_blocking(broker, client, "wordcount", job)
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
