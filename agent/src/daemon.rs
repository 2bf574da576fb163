//! `weir agent`: the node daemon.

use std::process::ExitCode;

/// `weir agent` arguments.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {}

/// Run the agent.
///
/// # Errors
/// Not yet built.
pub fn run(_args: AgentArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("agent: not built yet")
}
