//! `weir certs`: a CA and the certificates of the agents' relay listeners
//! and of the relay, for labs, tests and installs without cert-manager.

use std::{io::Write as _, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;

use crate::tls::generate;

/// `weir certs` arguments.
#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    /// Directory to write `ca.crt`, `ca.key`, `agents/<node>/` and
    /// `relay/` into (each with `tls.crt`, `tls.key`, `ca.crt`).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// A node to issue an agent certificate for
    /// (`<node>.agents.weir.internal`); repeatable.
    #[arg(long = "node", value_name = "NODE", required = true)]
    pub nodes: Vec<String>,
    /// Days the certificates are valid.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub days: u32,
    /// Replace the CA already in --out (every certificate it signed stops
    /// being trusted).
    #[arg(long)]
    pub force: bool,
}

/// Generate and write the certificates; print what was written.
///
/// # Errors
/// A bad node name, an existing CA without --force, a file not written.
pub fn run(args: &CertsArgs) -> anyhow::Result<ExitCode> {
    let mut nodes = args.nodes.clone();
    nodes.sort();
    nodes.dedup();
    let validity = Duration::from_secs(u64::from(args.days) * 86_400);
    let certs = generate::generate(&nodes, validity, time::OffsetDateTime::now_utc())?;
    let written = generate::write(&certs, &args.out, args.force)
        .with_context(|| format!("cannot write the certificates into {}", args.out.display()))?;
    let mut out = std::io::stdout().lock();
    for path in written {
        writeln!(out, "{}", path.display())?;
    }
    Ok(ExitCode::SUCCESS)
}
