//! The `bramble-pi` binary: `scheduler` runs the job and prints the estimate; `executor` is what
//! each task runs on a board.

use std::process::ExitCode;

use bramble_pi::{PiOptions, PiScheduler};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bramble-pi",
    version,
    about = "Monte Carlo estimate of pi over a Bramble cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
enum Command {
    /// Run the scheduler: register with the master, place the tasks, print the estimate.
    Scheduler {
        #[command(flatten)]
        broker: bramble_sdk::cli::BrokerArgs,
        /// The client name the framework's topics are keyed by.
        #[arg(long, default_value = "pi")]
        client: String,
        /// How many tasks.
        #[arg(long, default_value_t = 8)]
        tasks: u32,
        /// Samples per task.
        #[arg(long, default_value_t = 2_000_000)]
        samples: u64,
        /// The job's seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The command that runs the executor on a board, split on spaces (default: this binary
        /// followed by `executor`).
        #[arg(long)]
        executor: Option<String>,
    },
    /// Run one task's executor (the agent starts this).
    Executor {
        /// The executor's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    bramble_sdk::cli::init_logging();
    match Cli::parse().command {
        Command::Executor { args } => bramble_pi::executor_main(&args),
        Command::Scheduler {
            broker,
            client,
            tasks,
            samples,
            seed,
            executor,
        } => {
            let executor = bramble_sdk::cli::executor_command(executor, "bramble-pi");
            let mut opts = PiOptions::new(executor);
            opts.tasks = tasks;
            opts.samples = samples;
            opts.seed = seed;
            scheduler(&broker, &client, opts)
        }
    }
}

fn scheduler(broker: &bramble_sdk::cli::BrokerArgs, client: &str, opts: PiOptions) -> ExitCode {
    let result = (|| -> Result<PiScheduler, String> {
        let pi = PiScheduler::new(opts).map_err(|e| e.to_string())?;
        bramble_sdk::cli::run_blocking(broker, client, "pi", pi)
    })();
    match result {
        Ok(pi) => {
            let (done, total) = pi.progress();
            let (inside, samples) = pi.samples();
            println!("tasks done: {done}/{total}");
            println!("samples: {inside} inside of {samples}");
            match pi.estimate() {
                Some(e) => println!("pi ≈ {e:.6} (error {:+.6})", e - std::f64::consts::PI),
                None => println!("no estimate: no result came in"),
            }
            if let Some(why) = pi.failure() {
                eprintln!("error: {why}");
                return ExitCode::FAILURE;
            }
            if pi.is_complete() {
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
