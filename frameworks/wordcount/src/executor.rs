//! The wordcount map task: ask for the chunk, count it, send the counts back.

use std::process::ExitCode;
use std::time::Duration;

use bramble_sdk::executor::Executor;
use bramble_sdk::SdkError;
use clap::Parser;
use tracing::{error, info, warn};

use crate::count::count_words;
use crate::message::{parts, WcMsg};

/// The executor's arguments (what follows the executor prefix on the task's command line).
#[derive(Debug, Clone, Parser)]
#[command(name = "bramble-wordcount executor", about = "One wordcount map task")]
pub struct ExecutorArgs {
    /// How long to wait for the chunk before asking again, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub ready_timeout_ms: u64,
    /// How many times to ask for the chunk before giving up.
    #[arg(long, default_value_t = 6)]
    pub ready_attempts: u32,
}

/// Why a map task failed.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// The broker connection failed.
    #[error(transparent)]
    Sdk(#[from] SdkError),
    /// The scheduler never sent the chunk.
    #[error("no chunk came after {0} requests")]
    NoChunk(u32),
}

/// The executor side: parses `args`, connects from the task's environment, counts its chunk.
/// Builds its own current-thread runtime.
pub fn executor_main(args: &[String]) -> ExitCode {
    let (args, runtime) = match bramble_sdk::cli::executor_start::<ExecutorArgs>(
        "bramble-wordcount executor",
        args,
    ) {
        Ok(started) => started,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let result = async {
            let mut exec = Executor::connect_from_env().await?;
            let r = map(&mut exec, &args).await;
            exec.close().await;
            r
        }
        .await;
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!("{e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// The map task on a connected executor.
pub async fn map(exec: &mut Executor, args: &ExecutorArgs) -> Result<(), MapError> {
    let text = fetch_chunk(exec, args).await?;
    let counts = count_words(&text);
    info!(
        bytes = text.len(),
        words = counts.len(),
        "counted the chunk"
    );
    let ps = parts(counts);
    let n = ps.len() as u32;
    for p in ps {
        exec.send_message(p.encode()).await?;
    }
    exec.send_message(WcMsg::Done { parts: n }.encode()).await?;
    Ok(())
}

async fn fetch_chunk(exec: &mut Executor, args: &ExecutorArgs) -> Result<String, MapError> {
    for _ in 0..args.ready_attempts {
        exec.send_message(WcMsg::Ready.encode()).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(args.ready_timeout_ms);
        loop {
            match tokio::time::timeout_at(deadline, exec.recv_message()).await {
                Err(_) => break,
                Ok(None) => return Err(SdkError::Closed.into()),
                Ok(Some(data)) => match WcMsg::decode(&data) {
                    Some(WcMsg::Chunk { text }) => return Ok(text),
                    _ => warn!(len = data.len(), "dropped a message that is not a chunk"),
                },
            }
        }
        warn!("no chunk yet; asking again");
    }
    Err(MapError::NoChunk(args.ready_attempts))
}
