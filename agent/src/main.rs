//! `bramble-agent`: the std driver around [`agent_nostd_core::AgentCore`].
//!
//! `bramble-agent [--config FILE] [flags]` runs the agent; flags override the file (see
//! [`bramble_agent::cli`]). `bramble-agent __supervise …` is the small supervisor each task runs under
//! (see [`bramble_agent::process`]); it is not for people.

fn main() -> std::process::ExitCode {
    bramble_agent::cli::main(std::env::args_os().collect())
}
