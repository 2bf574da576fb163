//! `weir lab`: a Kubernetes node in a box.

use std::process::ExitCode;

/// `weir lab` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum LabCommand {
    /// Remove everything the lab made.
    Down,
}

/// Run a lab subcommand.
///
/// # Errors
/// Not yet built.
pub fn run(_cmd: LabCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("lab: not built yet")
}
