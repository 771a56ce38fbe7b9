//! `bramble`: the master and operator CLI.
//!
//! `bramble up` (a local cluster) and `bramble master` arrive with the end-to-end work; until then the
//! binary says so and exits non-zero rather than pretend to run a cluster.

use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--version" || a == "-V") {
        println!(
            "bramble {} (wire protocol v{})",
            env!("CARGO_PKG_VERSION"),
            agent_nostd_core::PROTOCOL_VERSION
        );
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "bramble {}: the master and `bramble up` are not built yet; \
         only the wire protocol and the agent core exist so far",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}
