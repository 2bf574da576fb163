//! `weir lab`: a Kubernetes node in a box. Pods are network namespaces on
//! a bridge, joined by veth pairs named like a CNI names them, declared in
//! ordinary Kubernetes YAML; each answers on its containerPorts (TCP and
//! UDP echo). Hosts outside the cluster are namespaces in documentation
//! ranges. Nothing is routed to or from the machine's uplink.
//!
//! Modules: [`spec`] reads YAML, [`plan`] and [`ipam`] decide names and
//! addresses, [`lifecycle`] makes and removes kernel objects through [`net`]
//! (and [`cmd`], the one program runner), [`state`] is the state file and
//! the library API others read, [`probe`] tests connectivity, [`serve`] is
//! the responder, [`services`] the ClusterIP DNAT.
//!
//! The `weir` binary (the agent crate) nests [`LabCommand`] as `weir lab`
//! and calls [`run`]; `up` starts each pod's responder by re-executing that
//! binary as `weir lab serve`. The agent reads a lab's [`LabState`] to map
//! addresses to pods.
#![forbid(unsafe_code)]

pub mod cmd;
pub mod dns;
pub mod error;
pub mod ipam;
pub mod lifecycle;
pub mod names;
pub mod net;
pub mod netns;
pub mod plan;
pub mod probe;
pub mod serve;
pub mod services;
pub mod spec;
pub mod state;
pub mod status;

use std::{
    ffi::OsString, io::Write, os::unix::process::ExitStatusExt, path::PathBuf, process::ExitCode,
    time::Duration,
};

use anyhow::Context;
use clap::{Args, Subcommand};

pub use self::{error::LabError, names::LabName, state::LabState};
use self::{lifecycle::UpOptions, probe::PortProto};

/// `weir lab [--lab NAME] <command>`.
#[derive(Debug, Args)]
pub struct LabCommand {
    /// Which lab: several labs can run side by side.
    #[arg(long, global = true, env = "WEIR_LAB", default_value = "default")]
    pub lab: LabName,
    /// What to do.
    #[command(subcommand)]
    pub action: LabAction,
}

// The agent's `cli.rs` nests `LabCommand` as a subcommand; implementing `Subcommand`
// through `Args` lets the lab carry its own global `--lab` flag.
impl Subcommand for LabCommand {
    fn augment_subcommands(cmd: clap::Command) -> clap::Command {
        <Self as Args>::augment_args(cmd)
    }

    fn augment_subcommands_for_update(cmd: clap::Command) -> clap::Command {
        <Self as Args>::augment_args_for_update(cmd)
    }

    fn has_subcommand(name: &str) -> bool {
        LabAction::has_subcommand(name)
    }
}

/// Output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Tables for people.
    #[default]
    Text,
    /// JSON for programs.
    Json,
}

/// `weir lab` subcommands.
#[derive(Debug, Subcommand)]
pub enum LabAction {
    /// Create the lab from Kubernetes YAML files.
    Up(UpArgs),
    /// List pods, external hosts and services.
    Status {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Whether a connection gets through: prints `connected` (exit 0) or
    /// `blocked` (exit 1).
    Probe(ProbeArgs),
    /// Run a command inside a pod's (or external host's) network namespace.
    Exec {
        /// `NAMESPACE/POD` or an external host's name.
        target: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<OsString>,
    },
    /// Remove everything the lab made (also after a crash). Idempotent.
    Down,
    /// Run a pod's responders (started by `up`, inside the pod's netns).
    #[command(hide = true)]
    Serve {
        /// TCP ports to echo on.
        #[arg(long)]
        tcp: Vec<u16>,
        /// UDP ports to echo on.
        #[arg(long)]
        udp: Vec<u16>,
        /// The netns this runs in (for logs and `ps`).
        #[arg(long)]
        netns: Option<String>,
        /// Answer DNS on port 53 from this zone file (the lab's CoreDNS).
        #[arg(long)]
        dns: Option<PathBuf>,
    },
    /// The lab's DNS: list the names kube-system/coredns answers, or
    /// re-point one.
    #[command(subcommand)]
    Dns(DnsAction),
}

/// `weir lab dns` subcommands.
#[derive(Debug, Subcommand)]
pub enum DnsAction {
    /// Print every name the lab's DNS answers, with TTL and addresses.
    Show {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
    /// Make NAME answer these addresses from now on (each an external
    /// host's or a Service's address).
    Set {
        /// The name, e.g. `api.payments.example`.
        name: String,
        /// Its new addresses.
        #[arg(required = true)]
        ips: Vec<std::net::IpAddr>,
        /// A new TTL in seconds (default: the name's current one).
        #[arg(long)]
        ttl: Option<u32>,
    },
    /// Resolve NAME from inside a pod through the lab's DNS Service, as
    /// the pod's resolver would.
    Lookup {
        /// `NAMESPACE/POD` to ask from.
        from: String,
        /// The name.
        name: String,
        /// Ask for AAAA records.
        #[arg(long, short = '6')]
        ipv6: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },
}

/// `weir lab up` arguments.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// YAML files (multi-document; Namespace, Pod, Deployment, StatefulSet,
    /// DaemonSet, Service, List, and the lab kinds Lab and ExternalHost).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Replace a running lab of the same name.
    #[arg(long)]
    pub replace: bool,
    /// How long to wait for the responders to listen.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub ready_timeout: Duration,
    /// Output format of the resulting status.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
}

/// `weir lab probe` arguments.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Source: `NAMESPACE/POD` or an external host's name.
    #[arg(required_unless_present = "matrix", conflicts_with = "matrix")]
    pub from: Option<String>,
    /// Destination: `NAMESPACE/POD`, an external host's name, an IP, or a
    /// DNS name resolved from the source through the lab's DNS.
    #[arg(required_unless_present = "matrix")]
    pub to: Option<String>,
    /// `PORT[/PROTO]`, e.g. `80`, `53/UDP`.
    #[arg(required_unless_present = "matrix", value_name = "PORT[/PROTO]")]
    pub target: Option<PortProto>,
    /// Probe every pod pair and print a truth table.
    #[arg(long, requires = "port")]
    pub matrix: bool,
    /// Port for `--matrix`, `PORT[/PROTO]`.
    #[arg(long)]
    pub port: Option<PortProto>,
    /// Only pods of these namespaces (`--matrix`; repeatable).
    #[arg(long = "namespace", short = 'n')]
    pub namespaces: Vec<String>,
    /// Use IPv6 addresses for named destinations.
    #[arg(long, short = '6')]
    pub ipv6: bool,
    /// Give up after this long.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Probes in flight at once (`--matrix`).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
}

fn print(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value).context("cannot encode JSON")?;
    text.push('\n');
    print(&text)
}

fn load(lab: &LabName) -> anyhow::Result<LabState> {
    Ok(LabState::load(lab.as_str())?)
}

/// Run a lab subcommand.
///
/// # Errors
/// Whatever the subcommand fails with.
pub fn run(cmd: LabCommand) -> anyhow::Result<ExitCode> {
    let lab = cmd.lab;
    match cmd.action {
        LabAction::Up(args) => {
            let opts = UpOptions {
                lab: lab.clone(),
                files: args.files,
                replace: args.replace,
                responder_exe: std::env::current_exe().context("cannot find the weir binary")?,
                ready_timeout: args.ready_timeout,
            };
            let state = lifecycle::up(&opts).with_context(|| format!("lab {lab}: up"))?;
            match args.output {
                Output::Text => print(&status::render(&state))?,
                Output::Json => print_json(&status::Status::from(&state))?,
            }
            Ok(ExitCode::SUCCESS)
        }
        LabAction::Status { output } => {
            let state = load(&lab)?;
            match output {
                Output::Text => print(&status::render(&state))?,
                Output::Json => print_json(&status::Status::from(&state))?,
            }
            Ok(ExitCode::SUCCESS)
        }
        LabAction::Probe(args) => run_probe(&lab, args),
        LabAction::Exec { target, command } => {
            let state = load(&lab)?;
            let (netns, _) = state.endpoint(&target)?;
            let status = std::process::Command::new("ip")
                .args(["netns", "exec", netns])
                .args(&command)
                .status()
                .context("cannot run ip netns exec")?;
            let code = status
                .code()
                .or_else(|| status.signal().map(|s| 128 + s))
                .unwrap_or(1);
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        LabAction::Down => {
            let found = lifecycle::down(&lab).with_context(|| format!("lab {lab}: down"))?;
            print(&if found {
                format!("lab {lab} removed\n")
            } else {
                format!("lab {lab}: nothing to remove\n")
            })?;
            Ok(ExitCode::SUCCESS)
        }
        LabAction::Serve {
            tcp,
            udp,
            netns,
            dns,
        } => {
            tracing::info!(lab = %lab, netns = netns.as_deref().unwrap_or("?"), "responder starting");
            serve::serve(&tcp, &udp, dns.as_deref()).context("responder")?;
            Ok(ExitCode::SUCCESS)
        }
        LabAction::Dns(action) => run_dns(&lab, action),
    }
}

fn run_dns(lab: &LabName, action: DnsAction) -> anyhow::Result<ExitCode> {
    let state = load(lab)?;
    match action {
        DnsAction::Show { output } => {
            let zone = dns::Zone::load(&dns::zone_path(&state))?;
            match output {
                Output::Text => print(&dns::render(&zone))?,
                Output::Json => print_json(&zone)?,
            }
        }
        DnsAction::Set { name, ips, ttl } => {
            let zone = dns::set(&state, &name, &ips, ttl)?;
            print(&dns::render(&zone))?;
        }
        DnsAction::Lookup {
            from,
            name,
            ipv6,
            output,
        } => {
            let found = probe::resolve(&state, &from, &name, ipv6, Duration::from_secs(2))?;
            match output {
                Output::Text => print(&format!(
                    "{name}: {} ttl={} {}\n",
                    found.rcode,
                    found.ttl.map_or_else(|| "-".to_owned(), |t| t.to_string()),
                    found
                        .ips
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                ))?,
                Output::Json => print_json(&found)?,
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_probe(lab: &LabName, args: ProbeArgs) -> anyhow::Result<ExitCode> {
    let state = load(lab)?;
    if args.matrix {
        let target = args.port.context("--matrix needs --port")?;
        let m = probe::matrix(
            &state,
            &args.namespaces,
            target,
            args.ipv6,
            args.timeout,
            args.concurrency,
        )?;
        match args.output {
            Output::Text => print(&m.render())?,
            Output::Json => print_json(&m)?,
        }
        let all = m.connected.iter().flatten().all(|c| *c);
        return Ok(if all {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let (Some(from), Some(to), Some(target)) = (args.from, args.to, args.target) else {
        anyhow::bail!("probe needs FROM TO PORT[/PROTO], or --matrix --port PORT[/PROTO]");
    };
    let (netns, _) = state.endpoint(&from)?;
    let ip = probe::target_ip_from(
        &state,
        &from,
        &to,
        args.ipv6,
        args.timeout.max(Duration::from_secs(1)),
    )?;
    let dst = std::net::SocketAddr::new(ip, target.port);
    let connected = probe::probe_addr(netns, dst, target.protocol, args.timeout)?;
    match args.output {
        Output::Text => print(if connected {
            "connected\n"
        } else {
            "blocked\n"
        })?,
        Output::Json => print_json(&serde_json::json!({
            "from": from, "to": to, "ip": ip, "port": target.port,
            "protocol": target.protocol, "connected": connected,
        }))?,
    }
    Ok(if connected {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
