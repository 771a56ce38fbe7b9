//! The `pi` executor: draw seeded samples, count those inside the quarter circle, send the counts.

use std::process::ExitCode;

use bramble_sdk::executor::Executor;
use bramble_sdk::rng::SplitMix64;
use clap::Parser;
use tracing::{error, info};

use crate::message::PiResult;

/// The executor's arguments (what follows the executor prefix on the task's command line).
#[derive(Debug, Clone, Parser)]
#[command(name = "bramble-pi executor", about = "Samples for one pi task")]
pub struct ExecutorArgs {
    /// The task's index in the job.
    #[arg(long)]
    pub index: u32,
    /// How many samples to draw.
    #[arg(long, default_value_t = 2_000_000)]
    pub samples: u64,
    /// The job's seed; the task's generator is seeded from it and the index.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// The seed of task `index` in a job seeded with `seed`.
pub fn task_seed(seed: u64, index: u32) -> u64 {
    // Spread the indices apart so neighbouring tasks draw unrelated sequences.
    seed ^ u64::from(index).wrapping_mul(0xD1B5_4A32_D192_ED03)
}

/// Draws `samples` points in the unit square; returns `(inside, total)`.
pub fn sample(seed: u64, samples: u64) -> (u64, u64) {
    let mut rng = SplitMix64::new(seed);
    let mut inside = 0;
    for _ in 0..samples {
        let x = rng.next_f64();
        let y = rng.next_f64();
        if x * x + y * y < 1.0 {
            inside += 1;
        }
    }
    (inside, samples)
}

/// The executor side: parses `args`, samples, connects to the broker from the task's environment
/// and sends the result. Builds its own current-thread runtime.
pub fn executor_main(args: &[String]) -> ExitCode {
    let (args, runtime) =
        match bramble_sdk::cli::executor_start::<ExecutorArgs>("bramble-pi executor", args) {
            Ok(started) => started,
            Err(code) => return code,
        };
    // Sample before connecting: the connection would sit idle while the CPU is busy.
    let (inside, total) = sample(task_seed(args.seed, args.index), args.samples);
    info!(index = args.index, inside, total, "sampled");
    let result = PiResult {
        index: args.index,
        inside,
        total,
    };
    runtime.block_on(async move {
        let exec = match Executor::connect_from_env().await {
            Ok(e) => e,
            Err(e) => {
                error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let sent = exec.send_message(result.encode()).await;
        exec.close().await;
        match sent {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!("cannot send the result: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_million_seeded_samples_estimate_pi_within_a_hundredth() {
        let (inside, total) = sample(task_seed(0, 0), 2_000_000);
        let estimate = 4.0 * inside as f64 / total as f64;
        assert!((estimate - std::f64::consts::PI).abs() < 0.01, "{estimate}");
    }

    #[test]
    fn the_same_seed_draws_the_same_samples_and_tasks_draw_different_ones() {
        assert_eq!(
            sample(task_seed(5, 1), 10_000),
            sample(task_seed(5, 1), 10_000)
        );
        assert_ne!(
            sample(task_seed(5, 1), 10_000),
            sample(task_seed(5, 2), 10_000)
        );
    }

    #[test]
    fn executor_arguments_are_parsed_and_bad_ones_fail_with_usage() {
        let a = ExecutorArgs::try_parse_from(["x", "--index", "3", "--samples", "10"]).unwrap();
        assert_eq!((a.index, a.samples, a.seed), (3, 10, 0));
        assert_eq!(
            executor_main(&["--index".to_owned(), "nope".to_owned()]),
            ExitCode::from(2)
        );
    }
}
