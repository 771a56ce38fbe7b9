//! `bramble-agent`: the std driver around [`agent_nostd_core::AgentCore`].
//!
//! This binary will connect the core to MQTT (rumqttc) and to the OS (processes, cgroups, checkpoint
//! files) on a current-thread tokio runtime. That driver is built in the agent issue; until then the
//! binary says so and exits non-zero rather than pretend to be an agent.

use std::process::ExitCode;

fn main() -> ExitCode {
    let wants_version = std::env::args().any(|a| a == "--version" || a == "-V");
    if wants_version {
        println!(
            "bramble-agent {} (wire protocol v{})",
            env!("CARGO_PKG_VERSION"),
            agent_nostd_core::PROTOCOL_VERSION
        );
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "bramble-agent {}: the board driver (MQTT, processes, cgroups) is not built yet; \
         only the agent core exists so far",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}
