//! `weir pending`: the would-have-dropped queue of a running agent.
//!
//! ```sh
//! weir pending [-n shop]                                   # what the policies deny, and the rule for each
//! weir pending approve 'shop/loadgen->data/store:6379/TCP' # enforce that rule (diff printed first)
//! weir pending approve ID --kube --dry-run none            # server-side apply it to the cluster instead
//! weir pending reject ID                                   # keep it denied, out of the queue
//! ```
//!
//! Approving prints the diff of the enforced policies before it writes
//! anything; `--dry-run` stops there.

use std::{
    fmt::Write as _,
    io::{self, Write},
    process::ExitCode,
};

use anyhow::Context as _;
use k8s_openapi::api::networking::v1::NetworkPolicy;

use super::{
    client::{self, Client, ServerArgs, TokenArgs, endpoint},
    kube::{self, DryRun},
    output::{Output, table},
};
use crate::api::wire::{PendingDecided, PendingDecisionBody, PendingPreview, PendingQueue};

/// `weir pending` arguments: list, or decide.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PendingArgs {
    #[command(subcommand)]
    pub command: Option<PendingCommand>,
    #[command(flatten)]
    pub list: ListArgs,
}

/// `weir pending` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PendingCommand {
    /// Enforce the rules that allow these edges (the agent's enforced
    /// policies; with --kube, the cluster's NetworkPolicies).
    Approve(ApproveArgs),
    /// Keep these edges denied and out of the queue (until they are seen
    /// again after the agent's --pending-reject-window).
    Reject(RejectArgs),
}

/// `weir pending` (list) arguments.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Only edges this namespace's policies deny (repeat for more).
    #[arg(short, long = "namespace", value_name = "NS", value_parser = client::namespace_arg)]
    pub namespaces: Vec<String>,
    /// Output format; JSON includes each edge's rule as YAML.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `weir pending approve` arguments.
#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub token: TokenArgs,
    /// Edge ids as `weir pending` lists them (SOURCE->TARGET:PORT/PROTOCOL).
    #[arg(value_name = "EDGE", required = true)]
    pub edges: Vec<String>,
    /// Write the policies to the cluster (kubeconfig's current context) by
    /// server-side apply, field manager `weir`, as `weir export --apply
    /// --kube` does; the agents follow the cluster's policies.
    #[arg(long)]
    pub kube: bool,
    /// With --kube: `server` has the API server check the policies and
    /// store nothing; `none` creates them.
    #[arg(long, value_enum, default_value_t, requires = "kube")]
    pub dry_run: DryRun,
}

/// `weir pending reject` arguments.
#[derive(Debug, clap::Args)]
pub struct RejectArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub token: TokenArgs,
    /// Edge ids as `weir pending` lists them.
    #[arg(value_name = "EDGE", required = true)]
    pub edges: Vec<String>,
}

/// Run `weir pending ...`.
///
/// # Errors
/// An unreachable agent, an edge not in the queue, a refused change.
pub fn run(args: &PendingArgs) -> anyhow::Result<ExitCode> {
    let mut out = io::stdout().lock();
    match &args.command {
        None => {
            let mut url = endpoint(&args.list.server.server, &["api", "pending"])?;
            if !args.list.namespaces.is_empty() {
                url.query_pairs_mut()
                    .append_pair("namespace", &args.list.namespaces.join(","));
            }
            let queue: PendingQueue = Client::new()?.get_json(&url, "the pending queue")?;
            match args.list.output {
                Output::Json => {
                    serde_json::to_writer_pretty(&mut out, &queue)?;
                    writeln!(out)?;
                }
                Output::Table => out.write_all(queue_table(&queue).as_bytes())?,
            }
        }
        Some(PendingCommand::Approve(args)) => approve(args, &mut out)?,
        Some(PendingCommand::Reject(args)) => {
            let decided = decide(
                &args.server,
                &args.token,
                "reject",
                &PendingDecisionBody {
                    edges: args.edges.clone(),
                    record_only: false,
                },
            )?;
            for edge in &decided.edges {
                writeln!(out, "rejected {edge}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn decide(
    server: &ServerArgs,
    token: &TokenArgs,
    what: &str,
    body: &PendingDecisionBody,
) -> anyhow::Result<PendingDecided> {
    let url = endpoint(&server.server, &["api", "pending", what])?;
    let client = Client::new()?;
    let response = client.change(client.post(&url).json(body), &url, &token.resolve())?;
    Ok(client::decode(response, &url, "the decision")?)
}

fn approve(args: &ApproveArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let mut url = endpoint(&args.server.server, &["api", "pending", "preview"])?;
    url.query_pairs_mut()
        .append_pair("edges", &args.edges.join(","));
    let preview: PendingPreview = Client::new()?.get_json(&url, "the approval's preview")?;
    out.write_all(preview.diff.as_bytes())?;
    if args.kube {
        let mut set: Vec<NetworkPolicy> = Vec::new();
        for document in serde_yaml::Deserializer::from_str(&preview.yaml) {
            let policy: Option<NetworkPolicy> =
                serde::Deserialize::deserialize(document).context("the preview's YAML")?;
            set.extend(policy);
        }
        let applied = kube::block_on(async {
            let client = kube::client().await?;
            Ok(kube::apply_policies(client, &set, args.dry_run).await?)
        })?;
        for key in &applied {
            match args.dry_run {
                DryRun::Server => writeln!(out, "networkpolicy {key} checked (server dry run)")?,
                DryRun::None => writeln!(out, "networkpolicy {key} applied")?,
            }
        }
        if args.dry_run == DryRun::Server {
            writeln!(
                out,
                "nothing was stored nor decided: --dry-run=none applies"
            )?;
            return Ok(());
        }
    }
    let decided = decide(
        &args.server,
        &args.token,
        "approve",
        &PendingDecisionBody {
            edges: preview.edges,
            record_only: args.kube,
        },
    )?;
    for edge in &decided.edges {
        writeln!(out, "approved {edge}")?;
    }
    if !args.kube {
        writeln!(
            out,
            "enforced {} ({} map writes)",
            decided.policies.join(", "),
            decided.writes
        )?;
    }
    Ok(())
}

/// The queue for people: one row per edge, its rule's policies below.
#[must_use]
pub fn queue_table(queue: &PendingQueue) -> String {
    if queue.entries.is_empty() {
        return "nothing pending: no connection the enforced policies deny\n".to_owned();
    }
    let mut rows = vec![[
        "NAMESPACE".to_owned(),
        "EDGE".to_owned(),
        "AUDIT".to_owned(),
        "DROPPED".to_owned(),
        "LAST SEEN".to_owned(),
        "DENIED BY".to_owned(),
    ]];
    for e in &queue.entries {
        let denied: Vec<String> = e
            .denied
            .iter()
            .map(|d| format!("{} {} ({})", d.direction, d.isolated_by.join(","), d.reason))
            .collect();
        rows.push([
            e.namespaces.join(","),
            e.id.clone(),
            e.audit.to_string(),
            e.dropped.to_string(),
            e.last_seen.clone(),
            denied.join("; "),
        ]);
    }
    let mut out = table(&rows);
    for e in &queue.entries {
        let _ = match &e.no_rule {
            Some(why) => writeln!(out, "{}: no rule: {why}", e.id),
            None => writeln!(out, "{}: allowed by {}", e.id, e.policies.join(", ")),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::{
        api::wire::{PendingDenial, PendingEdge},
        cli::{Cli, Command},
    };

    fn parse(args: &[&str]) -> Result<PendingArgs, clap::Error> {
        match Cli::try_parse_from([&["weir", "pending"], args].concat())?.command {
            Command::Pending(args) => Ok(args),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pending_lists_approves_and_rejects() {
        let list = parse(&["-n", "shop", "-n", "data"]).unwrap();
        assert!(list.command.is_none());
        assert_eq!(list.list.namespaces, ["shop", "data"]);
        assert!(parse(&["-n", "Not_A_Name"]).is_err());

        let id = "shop/loadgen->data/store:6379/TCP";
        let Some(PendingCommand::Approve(approve)) = parse(&["approve", id]).unwrap().command
        else {
            panic!("approve parses");
        };
        assert_eq!(
            (approve.edges.as_slice(), approve.kube),
            ([id.to_owned()].as_slice(), false)
        );
        // In a cluster: the same server-side apply as export --apply --kube,
        // a dry run unless asked otherwise.
        let Some(PendingCommand::Approve(approve)) =
            parse(&["approve", id, "--kube"]).unwrap().command
        else {
            panic!("approve --kube parses");
        };
        assert_eq!(approve.dry_run, DryRun::Server);
        let Some(PendingCommand::Approve(approve)) =
            parse(&["approve", id, "--kube", "--dry-run", "none"])
                .unwrap()
                .command
        else {
            panic!("--dry-run none parses");
        };
        assert_eq!(approve.dry_run, DryRun::None);
        assert!(
            parse(&["approve", id, "--dry-run", "none"]).is_err(),
            "--dry-run needs --kube"
        );
        assert!(parse(&["approve"]).is_err(), "an edge is required");
        assert!(parse(&["reject"]).is_err(), "an edge is required");
        let Some(PendingCommand::Reject(reject)) = parse(&["reject", id, id]).unwrap().command
        else {
            panic!("reject parses");
        };
        assert_eq!(reject.edges.len(), 2);
    }

    #[test]
    fn the_table_names_the_edge_what_denies_it_and_its_rule() {
        assert!(queue_table(&PendingQueue::default()).starts_with("nothing pending"));
        let queue = PendingQueue {
            entries: vec![PendingEdge {
                id: "shop/a->data/b:1/TCP".to_owned(),
                source: "shop/a".to_owned(),
                target: "data/b".to_owned(),
                port: 1,
                protocol: weir_generator::model::Protocol::Tcp,
                namespaces: vec!["data".to_owned()],
                first_seen: "t0".to_owned(),
                last_seen: "t1".to_owned(),
                audit: 0,
                dropped: 3,
                denied: vec![PendingDenial {
                    direction: "ingress".to_owned(),
                    namespace: "data".to_owned(),
                    reason: "default-deny".to_owned(),
                    isolated_by: vec!["data/deny".to_owned()],
                }],
                policies: vec!["data/weir-allow-in-a-to-b-1-tcp".to_owned()],
                rule: String::new(),
                no_rule: None,
            }],
            reject_window_seconds: 1,
        };
        let table = queue_table(&queue);
        assert!(
            table.contains("shop/a->data/b:1/TCP")
                && table.contains("ingress data/deny (default-deny)")
                && table.contains("allowed by data/weir-allow-in-a-to-b-1-tcp"),
            "{table}"
        );
    }
}
