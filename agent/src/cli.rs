//! Command-line surface: clap structs and dispatch. Each subcommand's
//! arguments live in the module that implements it.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::{daemon, lab, observe, telemetry::LogFormat};

/// weir: learn Kubernetes NetworkPolicies from observed traffic.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "WEIR_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node agent: attach the eBPF probes, aggregate flows, serve the API.
    Agent(daemon::AgentArgs),
    /// Print observed flows from a running agent, like `hubble observe`.
    Observe(observe::ObserveArgs),
    /// Print the workload flow graph of a running agent.
    Graph(observe::GraphArgs),
    /// A Kubernetes node in a box: pods as network namespaces on a bridge.
    #[command(subcommand)]
    Lab(lab::LabCommand),
}

/// Run the parsed command line.
///
/// # Errors
/// Whatever the subcommand fails with.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Agent(args) => daemon::run(args),
        Command::Observe(args) => observe::run(&args),
        Command::Graph(args) => observe::run_graph(&args),
        Command::Lab(cmd) => lab::run(cmd),
    }
}
