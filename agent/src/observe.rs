//! `weir observe` and `weir graph`: clients of a running agent's API.

use std::process::ExitCode;

/// `weir observe` arguments.
#[derive(Debug, clap::Args)]
pub struct ObserveArgs {}

/// `weir graph` arguments.
#[derive(Debug, clap::Args)]
pub struct GraphArgs {}

/// Run `weir observe`.
///
/// # Errors
/// Not yet built.
pub fn run(_args: &ObserveArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("observe: not built yet")
}

/// Run `weir graph`.
///
/// # Errors
/// Not yet built.
pub fn run_graph(_args: &GraphArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("graph: not built yet")
}
