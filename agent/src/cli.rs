//! Command-line surface: clap dispatch. Each subcommand's arguments live
//! in the module that implements it (`cmd/`, `daemon`, `weir_lab`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::{
    cmd::{audit, certs, learn, observe, pending, policy},
    daemon, relay,
    telemetry::LogFormat,
};

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
    Agent(Box<daemon::AgentArgs>),
    /// Print observed flows from a running agent, like `hubble observe`.
    Observe(observe::ObserveArgs),
    /// Print the workload flow graph of a running agent.
    Graph(observe::GraphArgs),
    /// Write the suggested NetworkPolicies as YAML (from an agent, or
    /// offline from recorded flows).
    Export(learn::ExportArgs),
    /// Replay observed flows through a directory of NetworkPolicies: exit 0
    /// when nothing observed is denied, 1 on violations, 2 on errors.
    Verify(learn::VerifyArgs),
    /// Per namespace: how long since the last new edge, how much traffic
    /// the suggestion covers, whether it is ready to audit.
    Status(learn::StatusArgs),
    /// The NetworkPolicies a running agent enforces: apply, delete, list.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Per-namespace enforcement modes of a running agent: observe, audit,
    /// enforce.
    #[command(subcommand)]
    Mode(policy::ModeCommand),
    /// The agent's audit log: mode changes, the guard's reverts,
    /// promotions, approvals and rejections, with who, when and why.
    Audit(audit::AuditArgs),
    /// The would-have-dropped queue: connections the enforced policies
    /// deny (audit or enforce), the rule that would allow each; approve or
    /// reject them.
    Pending(pending::PendingArgs),
    /// Write a CA and the certificates of the agents' relay listeners and
    /// of the relay (mutual TLS), for labs and installs without cert-manager.
    Certs(certs::CertsArgs),
    /// Merge every node's agent into one view: the agent's API and UI over
    /// the whole cluster, every answer saying how much of it it covers.
    Relay(relay::config::RelayArgs),
    /// A Kubernetes node in a box: pods as network namespaces on a bridge.
    #[command(subcommand)]
    Lab(weir_lab::LabCommand),
}

/// Run the parsed command line.
///
/// # Errors
/// Whatever the subcommand fails with.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Agent(args) => daemon::run(*args),
        Command::Observe(args) => observe::run(&args),
        Command::Graph(args) => observe::run_graph(&args),
        Command::Export(args) => learn::run_export(&args),
        Command::Verify(args) => learn::run_verify(&args),
        Command::Status(args) => learn::run_status(&args),
        Command::Policy(cmd) => policy::run(&cmd),
        Command::Mode(cmd) => policy::run_mode(&cmd),
        Command::Audit(args) => audit::run(&args),
        Command::Pending(args) => pending::run(&args),
        Command::Certs(args) => certs::run(&args),
        Command::Relay(args) => relay::run(args),
        Command::Lab(cmd) => weir_lab::run(cmd),
    }
}
