//! From observed traffic to policies, and back: `weir export` (the
//! suggested NetworkPolicies as YAML), `weir verify` (replay flows through
//! a directory of policies) and `weir status` (is a namespace ready to
//! audit?).
//!
//! Each works against a running agent (`--server`) or, for `export` and
//! `verify`, offline from a recorded flow log (`--flows`, JSON lines of
//! `weir observe -o json` or `hubble observe -o json`) and an inventory
//! (`--inventory`, Pods, Namespaces and Services as YAML, as `kubectl get
//! pods,namespaces,services -A -o yaml` writes them).

pub mod analysis;
pub mod flows;
pub mod policies;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    io::{self, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    str::FromStr,
    time::Duration,
};

use anyhow::{Context as _, bail};
use reqwest::{Url, blocking::Client};
use serde::{Deserialize, Serialize};
use weir_generator::{
    cluster::Cluster,
    model::FlowGraph,
    synth::{self, AggregateExternal, ServicePorts},
};

use self::analysis::{StatusReport, VerifyReport};
use crate::{observe::Output, resolve::inventory};

/// The agent's default address.
const DEFAULT_SERVER: &str = "http://127.0.0.1:9090";

/// `--aggregate-external V4,V6`: prefix lengths external peers are
/// widened to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Aggregate {
    /// IPv4 prefix length (0-32).
    pub v4: u8,
    /// IPv6 prefix length (0-128).
    pub v6: u8,
}

impl FromStr for Aggregate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (v4, v6) = s
            .split_once(',')
            .ok_or_else(|| format!("expected V4,V6 prefix lengths (e.g. 24,64), got {s:?}"))?;
        let v4: u8 = v4
            .trim()
            .parse()
            .ok()
            .filter(|n| *n <= 32)
            .ok_or_else(|| format!("bad IPv4 prefix length {v4:?} (0-32)"))?;
        let v6: u8 = v6
            .trim()
            .parse()
            .ok()
            .filter(|n| *n <= 128)
            .ok_or_else(|| format!("bad IPv6 prefix length {v6:?} (0-128)"))?;
        Ok(Self { v4, v6 })
    }
}

/// Which ports a rule for traffic through a Service allows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ServicePortsArg {
    /// The backend's target port only (what NetworkPolicy sees after DNAT).
    #[default]
    Target,
    /// The target port and the Service port.
    Both,
}

impl ServicePortsArg {
    fn as_str(self) -> &'static str {
        match self {
            Self::Target => "target",
            Self::Both => "both",
        }
    }
}

impl FromStr for ServicePortsArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "target" => Ok(Self::Target),
            "both" => Ok(Self::Both),
            _ => Err(format!("expected target or both, got {s:?}")),
        }
    }
}

/// The learner's options as the CLI and the API take them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SuggestOptions {
    /// Only these namespaces (all when empty).
    pub namespaces: BTreeSet<String>,
    /// Widen external peers.
    pub aggregate_external: Option<Aggregate>,
    /// Service ports.
    pub service_ports: ServicePortsArg,
}

impl SuggestOptions {
    /// The generator's options.
    #[must_use]
    pub fn synth(&self) -> synth::Options {
        synth::Options {
            namespaces: (!self.namespaces.is_empty()).then(|| self.namespaces.clone()),
            aggregate_external: self.aggregate_external.map(|a| AggregateExternal {
                v4_prefix: a.v4,
                v6_prefix: a.v6,
            }),
            service_ports: match self.service_ports {
                ServicePortsArg::Target => ServicePorts::TargetOnly,
                ServicePortsArg::Both => ServicePorts::Both,
            },
        }
    }
}

/// The suggestion as files: `GET /api/policies?format=json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoliciesJson {
    /// Every policy, namespace by namespace (the default deny first).
    pub policies: Vec<PolicyJson>,
    /// Every namespace's YAML, one stream: what `weir export` writes.
    #[serde(alias = "all")]
    pub yaml: String,
    /// Namespace -> its policies as YAML (`<ns>.yaml`).
    pub files: BTreeMap<String, String>,
    /// `kustomization.yaml` listing the files.
    pub kustomization: String,
    /// What the learner could not express exactly.
    pub warnings: Vec<String>,
}

/// One suggested policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyJson {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The workload it selects (`namespace/name`, as the graph's node
    /// ids), null for the namespace's default deny.
    pub workload: Option<String>,
    /// The policy as one YAML document.
    pub yaml: String,
}

/// One policy as a YAML document (what `weir export` writes after each
/// `---`).
#[must_use]
pub fn policy_yaml(policy: &k8s_openapi::api::networking::v1::NetworkPolicy) -> String {
    // Plain data with string keys: serializing cannot fail.
    serde_yaml::to_string(policy).unwrap_or_default()
}

/// Learn policies from a graph.
#[must_use]
pub fn suggest(graph: &FlowGraph, cluster: &Cluster, options: &SuggestOptions) -> PoliciesJson {
    let suggestion = synth::synthesize(graph, cluster, &options.synth());
    let files = suggestion
        .namespaces
        .keys()
        .filter_map(|ns| suggestion.yaml(ns).map(|y| (ns.clone(), y)))
        .collect();
    let policies = suggestion
        .namespaces
        .iter()
        .flat_map(|(ns, list)| list.iter().map(move |p| (ns, p)))
        .map(|(ns, p)| {
            let name = p.metadata.name.clone().unwrap_or_default();
            // `weir.dev/workload: Deployment shop/web`.
            let workload = p
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(synth::WORKLOAD_ANNOTATION))
                .and_then(|w| w.split_once(' '))
                .map(|(_kind, id)| id.to_owned());
            PolicyJson {
                namespace: ns.clone(),
                workload,
                name,
                yaml: policy_yaml(p),
            }
        })
        .collect();
    PoliciesJson {
        files,
        yaml: suggestion.all_yaml(),
        kustomization: suggestion.kustomization(),
        policies,
        warnings: suggestion
            .warnings
            .iter()
            .map(ToString::to_string)
            .collect(),
    }
}

/// Where flows and pods come from, offline.
#[derive(Debug, clap::Args)]
pub struct OfflineArgs {
    /// Recorded flows: JSON lines of `weir observe -o json` or `hubble
    /// observe -o json` (instead of --server).
    #[arg(
        long,
        value_name = "FILE",
        requires = "inventory",
        conflicts_with = "server"
    )]
    pub flows: Option<PathBuf>,
    /// Pods, Namespaces and Services as YAML (with --flows).
    #[arg(long, value_name = "FILE", requires = "flows")]
    pub inventory: Option<PathBuf>,
    /// Base URL of a running agent's API [default: http://127.0.0.1:9090].
    #[arg(long)]
    pub server: Option<Url>,
}

/// `weir export` arguments.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub source: OfflineArgs,
    /// Only this namespace (repeat for more; all by default).
    #[arg(short, long = "namespace", value_name = "NS", value_parser = crate::policy::namespace_arg)]
    pub namespaces: Vec<String>,
    /// A directory for `<namespace>.yaml` files and a `kustomization.yaml`,
    /// or `-` for one YAML stream on stdout.
    #[arg(short, long, default_value = "-", value_name = "DIR")]
    pub output: PathBuf,
    /// Widen external peers to these prefix lengths (IPv4,IPv6), e.g. 24,64.
    #[arg(long, value_name = "V4,V6")]
    pub aggregate_external: Option<Aggregate>,
    /// Allow traffic through a Service on the target port only, or also on
    /// the Service port.
    #[arg(long, value_enum, default_value_t = ServicePortsArg::Target)]
    pub service_ports: ServicePortsArg,
    /// Install the suggestion as the agent's enforced policies for the
    /// chosen namespaces (every namespace of the suggestion by default),
    /// replacing the policies enforced there before. Modes are not changed:
    /// `weir mode set NS audit|enforce` turns judging on.
    #[arg(long)]
    pub apply: bool,
    /// With --apply: the agent's API token.
    #[command(flatten)]
    pub token: crate::policy::TokenArgs,
    /// With --apply: create the policies in the cluster (kubeconfig's
    /// current context) by server-side apply, field manager `weir`,
    /// instead of handing them to an agent.
    #[arg(long, requires = "apply")]
    pub kube: bool,
    /// With --apply --kube: `server` has the API server check the policies
    /// and store nothing; `none` creates them.
    #[arg(long, value_enum, default_value_t, requires = "kube")]
    pub dry_run: crate::resolve::kube::write::DryRun,
}

/// `weir verify` arguments.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Directory of NetworkPolicy YAML files (*.yaml, *.yml).
    #[arg(long, value_name = "DIR")]
    pub policies: PathBuf,
    #[command(flatten)]
    pub source: OfflineArgs,
    /// Also fail when the policies allow workload pairs and ports never
    /// observed.
    #[arg(long)]
    pub strict: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `weir status` arguments.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub server: crate::observe::ServerArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// The offline inputs: a graph from the flow log, a cluster from the
/// inventory. Bad lines are reported on `warn` and skipped.
fn offline(
    flows: &Path,
    inventory_path: &Path,
    warn: &mut impl Write,
) -> anyhow::Result<(FlowGraph, Cluster)> {
    let text = std::fs::read_to_string(inventory_path)
        .with_context(|| format!("cannot read {}", inventory_path.display()))?;
    let inventory = inventory::parse(inventory_path, &text, None)?;
    for warning in &inventory.warnings {
        writeln!(warn, "weir: warning: {warning}")?;
    }
    let cluster = inventory.cluster();
    let log = std::fs::read_to_string(flows)
        .with_context(|| format!("cannot read {}", flows.display()))?;
    let parsed = flows::parse(&log, &cluster);
    for bad in &parsed.bad {
        writeln!(
            warn,
            "weir: {}:{}: skipped: {}",
            flows.display(),
            bad.line,
            bad.reason
        )?;
    }
    for other in &parsed.not_flows {
        writeln!(
            warn,
            "weir: {}:{}: skipped: {}",
            flows.display(),
            other.line,
            other.reason
        )?;
    }
    if !parsed.bad.is_empty() || !parsed.not_flows.is_empty() {
        writeln!(
            warn,
            "weir: {}: {} malformed line(s) and {} other object(s) skipped, {} flow(s) read",
            flows.display(),
            parsed.bad.len(),
            parsed.not_flows.len(),
            parsed.flows
        )?;
    }
    // A gate must never pass because its input was broken or empty.
    if parsed.usable() == 0 {
        bail!(
            "{}: no usable flow ({} flow record(s), none that makes an edge; {} malformed \
             line(s), {} other object(s)): nothing to check or learn from",
            flows.display(),
            parsed.flows,
            parsed.bad.len(),
            parsed.not_flows.len()
        );
    }
    Ok((parsed.graph, cluster))
}

/// Run `weir export`.
///
/// # Errors
/// Unreadable inputs, an unreachable agent, an unwritable output.
pub fn run_export(args: &ExportArgs) -> anyhow::Result<ExitCode> {
    let policies = export_policies(args, &mut io::stderr().lock())?;
    if args.apply {
        return apply_export(args, &policies);
    }
    write_export(&policies, &args.output, &mut io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}

/// `weir export --apply`: the suggestion becomes the enforced set of its
/// namespaces (or of `--namespace`s, which also drops what was enforced in
/// a chosen namespace the suggestion has nothing for).
fn apply_export(args: &ExportArgs, policies: &PoliciesJson) -> anyhow::Result<ExitCode> {
    let replace: Vec<String> = if args.namespaces.is_empty() {
        policies.files.keys().cloned().collect()
    } else {
        args.namespaces.clone()
    };
    if replace.is_empty() {
        bail!("the suggestion has no policy: nothing to apply (has the agent observed traffic?)");
    }
    if args.kube {
        return apply_export_to_cluster(args, policies);
    }
    let server = server_url(args.source.server.as_ref())?;
    let applied = crate::policy::post_policies(
        &server,
        &args.token.resolve(),
        policies.yaml.clone(),
        &replace,
    )?;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "enforced {} suggested polic{} for {} ({} map writes); modes unchanged (weir mode set NS audit|enforce)",
        applied.applied.len(),
        if applied.applied.len() == 1 {
            "y"
        } else {
            "ies"
        },
        replace.join(", "),
        applied.writes
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `weir export --apply --kube`: server-side apply of the suggestion.
fn apply_export_to_cluster(args: &ExportArgs, policies: &PoliciesJson) -> anyhow::Result<ExitCode> {
    use crate::resolve::kube::write::{self, DryRun};
    let mut set = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&policies.yaml) {
        let policy: Option<k8s_openapi::api::networking::v1::NetworkPolicy> =
            serde::Deserialize::deserialize(document).context("the suggestion's YAML")?;
        set.extend(policy);
    }
    let applied = write::block_on(async {
        let client = write::client().await?;
        Ok(write::apply_policies(client, &set, args.dry_run).await?)
    })?;
    let mut out = io::stdout().lock();
    for key in &applied {
        match args.dry_run {
            DryRun::Server => writeln!(out, "networkpolicy {key} checked (server dry run)")?,
            DryRun::None => writeln!(out, "networkpolicy {key} applied")?,
        }
    }
    if args.dry_run == DryRun::Server {
        writeln!(out, "nothing was stored: --dry-run=none applies")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn suggest_options(args: &ExportArgs) -> SuggestOptions {
    SuggestOptions {
        namespaces: args.namespaces.iter().cloned().collect(),
        aggregate_external: args.aggregate_external,
        service_ports: args.service_ports,
    }
}

/// The suggestion, from the agent or offline.
///
/// # Errors
/// See [`run_export`].
pub fn export_policies(args: &ExportArgs, warn: &mut impl Write) -> anyhow::Result<PoliciesJson> {
    let options = suggest_options(args);
    let policies = match (&args.source.flows, &args.source.inventory) {
        (Some(flows), Some(inventory)) => {
            let (graph, cluster) = offline(flows, inventory, warn)?;
            suggest(&graph, &cluster, &options)
        }
        _ => {
            let server = server_url(args.source.server.as_ref())?;
            let mut url = endpoint(&server, &["api", "policies"])?;
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("format", "json");
                if !options.namespaces.is_empty() {
                    let list: Vec<&str> = options.namespaces.iter().map(String::as_str).collect();
                    q.append_pair("namespace", &list.join(","));
                }
                if let Some(a) = options.aggregate_external {
                    q.append_pair("aggregate_external", &format!("{},{}", a.v4, a.v6));
                }
                q.append_pair("service_ports", options.service_ports.as_str());
            }
            let response = send(client()?.get(url.clone()), &url)?;
            response
                .json()
                .with_context(|| format!("{url} did not answer with policies"))?
        }
    };
    for warning in &policies.warnings {
        writeln!(warn, "weir: warning: {warning}")?;
    }
    Ok(policies)
}

/// Write the suggestion: one YAML stream to `out` for `-`, else one file
/// per namespace and a `kustomization.yaml` in the directory `output`.
///
/// # Errors
/// When the directory or a file cannot be written.
pub fn write_export(
    policies: &PoliciesJson,
    output: &Path,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if output == Path::new("-") {
        out.write_all(policies.yaml.as_bytes())?;
        return Ok(());
    }
    // A file name comes from a namespace name, which a flow record or an
    // agent's answer supplies: only a valid one may become a path.
    for namespace in policies.files.keys() {
        if let Err(reason) = weir_generator::names::dns1123_label(namespace) {
            bail!("refusing to write policies of namespace {namespace:?}: {reason}");
        }
    }
    std::fs::create_dir_all(output)
        .with_context(|| format!("cannot create {}", output.display()))?;
    for (namespace, yaml) in &policies.files {
        let path = output.join(format!("{namespace}.yaml"));
        std::fs::write(&path, yaml).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let path = output.join("kustomization.yaml");
    std::fs::write(&path, &policies.kustomization)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Run `weir verify`: exit 0 when the policies pass, 1 on violations.
///
/// # Errors
/// Unreadable or invalid policies, unreadable inputs, an unreachable agent
/// (main exits 2).
pub fn run_verify(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let report = verify_report(args, &mut io::stderr().lock())?;
    let mut out = io::stdout().lock();
    match args.output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, &report)?;
            writeln!(out)?;
        }
        Output::Table => out.write_all(verify_table(&report, args.strict).as_bytes())?,
    }
    Ok(if report.passes(args.strict) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The verify report, from the agent or offline.
///
/// # Errors
/// See [`run_verify`].
pub fn verify_report(args: &VerifyArgs, warn: &mut impl Write) -> anyhow::Result<VerifyReport> {
    let loaded = policies::load_dir(&args.policies)?;
    match (&args.source.flows, &args.source.inventory) {
        (Some(flows), Some(inventory)) => {
            let set = policies::policy_set(loaded)?;
            let (graph, cluster) = offline(flows, inventory, warn)?;
            Ok(analysis::verify(&set, &graph, &cluster))
        }
        _ => {
            // Checked here too, so a bad file is named by its path rather
            // than as a document of the request body.
            let body = policies_yaml(&loaded)?;
            policies::policy_set(loaded)?;
            let server = server_url(args.source.server.as_ref())?;
            let url = endpoint(&server, &["api", "verify"])?;
            let request = client()?
                .post(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/yaml")
                .body(body);
            let response = send(request, &url)?;
            response
                .json()
                .with_context(|| format!("{url} did not answer with a report"))
        }
    }
}

/// Policies as one multi-document YAML stream.
pub(crate) fn policies_yaml(loaded: &[policies::Sourced]) -> anyhow::Result<String> {
    let mut body = String::new();
    for sourced in loaded {
        body.push_str("---\n");
        body.push_str(
            &serde_yaml::to_string(&sourced.policy)
                .with_context(|| format!("cannot re-encode a policy of {}", sourced.source))?,
        );
    }
    Ok(body)
}

fn port(protocol: weir_generator::model::Protocol, port: u16) -> String {
    if protocol.has_ports() {
        format!("{port}/{protocol}")
    } else {
        protocol.to_string()
    }
}

fn direction(name: &str, d: &analysis::DirectionJson) -> String {
    let mut s = format!("{name} {}", d.verdict);
    if let Some(reason) = &d.reason {
        let _ = write!(s, " ({reason})");
    }
    if !d.policies.is_empty() {
        let by = if d.verdict == "denied" {
            "isolated by"
        } else {
            "by"
        };
        let _ = write!(s, " {by} {}", d.policies.join(", "));
    }
    s
}

/// The report for people.
#[must_use]
pub fn verify_table(report: &VerifyReport, strict: bool) -> String {
    let mut out = String::new();
    if !report.denied.is_empty() {
        let _ = writeln!(
            out,
            "DENIED: {} observed flow(s) the policies would drop",
            report.denied.len()
        );
        for d in &report.denied {
            let mut why = Vec::new();
            if d.egress.verdict == "denied" {
                why.push(direction("egress", &d.egress));
            }
            if d.ingress.verdict == "denied" {
                why.push(direction("ingress", &d.ingress));
            }
            let _ = writeln!(
                out,
                "  {} -> {} {} ({} connections, last {}): {}",
                d.source,
                d.target,
                port(d.protocol, d.port),
                d.connections,
                d.last_seen,
                why.join("; ")
            );
        }
    }
    if !report.unobserved_allowed.is_empty() {
        let _ = writeln!(
            out,
            "ALLOWED, NEVER OBSERVED: {} workload pair(s) and port(s)",
            report.unobserved_allowed.len()
        );
        for u in &report.unobserved_allowed {
            let _ = writeln!(
                out,
                "  {} -> {} {}: {}; {}",
                u.source,
                u.target,
                port(u.protocol, u.port),
                direction("egress", &u.egress),
                direction("ingress", &u.ingress)
            );
        }
    }
    let verdict = if report.passes(strict) {
        "pass"
    } else {
        "FAIL"
    };
    let _ = writeln!(
        out,
        "{verdict}: {} observed edge(s) replayed, {} denied; {} workload(s) x {} port(s) tried, {} allowed but never observed{}",
        report.observed,
        report.denied.len(),
        report.workloads,
        report.ports,
        report.unobserved_allowed.len(),
        if strict { " (strict)" } else { "" }
    );
    out
}

/// Run `weir status`.
///
/// # Errors
/// The agent cannot be reached or answers with an error.
pub fn run_status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let url = endpoint(&args.server.server, &["api", "status"])?;
    let response = send(client()?.get(url.clone()), &url)?;
    let status: StatusReport = response
        .json()
        .with_context(|| format!("{url} did not answer with a status"))?;
    let mut out = io::stdout().lock();
    match args.output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, &status)?;
            writeln!(out)?;
        }
        Output::Table => out.write_all(status_table(&status).as_bytes())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Readiness for people.
#[must_use]
pub fn status_table(status: &StatusReport) -> String {
    let mut rows = vec![[
        "NAMESPACE".to_owned(),
        "EDGES".to_owned(),
        "LAST NEW EDGE".to_owned(),
        "COVERAGE".to_owned(),
        "READY".to_owned(),
    ]];
    for ns in &status.namespaces {
        rows.push([
            ns.namespace.clone(),
            ns.edges.to_string(),
            ns.seconds_since_last_new_edge.map_or_else(
                || "-".to_owned(),
                |s| format!("{} ago", humantime::format_duration(Duration::from_secs(s))),
            ),
            format!(
                "{:.1}% ({}/{})",
                ns.coverage * 100.0,
                ns.covered_connections,
                ns.recent_connections
            ),
            if ns.ready { "yes" } else { "no" }.to_owned(),
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    if let (Some(start), Some(secs)) = (&status.window_start, status.observed_seconds) {
        let _ = writeln!(
            out,
            "observing since {start} ({}); quiet period {}, coverage window {}",
            humantime::format_duration(Duration::from_secs(secs)),
            humantime::format_duration(Duration::from_secs(status.quiet_period_seconds)),
            humantime::format_duration(Duration::from_secs(status.window_seconds)),
        );
    }
    for e in &status.degraded {
        let until = e
            .until
            .as_ref()
            .map_or_else(|| "now (ongoing)".to_owned(), Clone::clone);
        let _ = writeln!(
            out,
            "{} from {} to {until}: {}",
            if e.incomplete {
                "INCOMPLETE"
            } else {
                "DEGRADED"
            },
            e.from,
            e.message
        );
    }
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub(crate) fn server_url(server: Option<&Url>) -> anyhow::Result<Url> {
    match server {
        Some(url) => Ok(url.clone()),
        None => match std::env::var("WEIR_SERVER") {
            Ok(s) => s
                .parse()
                .with_context(|| format!("WEIR_SERVER={s:?} is not a URL")),
            Err(_) => Ok(Url::parse(DEFAULT_SERVER)?),
        },
    }
}

/// The URL of an API path under the server's base URL (which may have a
/// path prefix, with or without a trailing `/`): each segment is
/// percent-encoded, `/`, `#`, `?` and `%` included, so a name never adds a
/// path segment, a fragment or a query.
///
/// # Errors
/// An empty, `.` or `..` segment (a URL drops or resolves them), or a
/// server URL that cannot have a path (`mailto:`).
pub fn endpoint(server: &Url, segments: &[&str]) -> anyhow::Result<Url> {
    if let Some(bad) = segments.iter().find(|s| matches!(**s, "" | "." | "..")) {
        bail!("{bad:?} cannot be a segment of a URL path");
    }
    let mut url = server.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("{server} cannot be the agent's URL"))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

pub(crate) fn client() -> anyhow::Result<Client> {
    Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .build()
        .context("cannot build an HTTP client")
}

pub(crate) fn send(
    request: reqwest::blocking::RequestBuilder,
    url: &Url,
) -> anyhow::Result<reqwest::blocking::Response> {
    let response = request.send().with_context(|| {
        format!("cannot reach the weir agent at {url} (is `weir agent` running? see --server)")
    })?;
    let status = response.status();
    if !status.is_success() {
        let message = response
            .json::<serde_json::Value>()
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| status.to_string());
        return Err(anyhow::Error::new(Refused {
            status: status.as_u16(),
        })
        .context(format!("{url}: {message}")));
    }
    Ok(response)
}

/// An error status from the agent, kept under the message so callers can
/// tell a missing token from other refusals.
#[derive(Debug, thiserror::Error)]
#[error("HTTP {status}")]
struct Refused {
    status: u16,
}

/// Whether the agent answered 401 (no token, or a wrong one).
pub(crate) fn is_unauthorized(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|e| e.downcast_ref::<Refused>().is_some_and(|r| r.status == 401))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregate_external_parses_two_prefix_lengths() {
        assert_eq!("24,64".parse(), Ok(Aggregate { v4: 24, v6: 64 }));
        assert_eq!("32, 128".parse(), Ok(Aggregate { v4: 32, v6: 128 }));
        for bad in ["24", "33,64", "24,129", "a,b", ""] {
            assert!(bad.parse::<Aggregate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn export_writes_one_file_per_namespace_and_a_kustomization() {
        let policies = PoliciesJson {
            files: BTreeMap::from([
                ("data".to_owned(), "# data\n".to_owned()),
                ("shop".to_owned(), "# shop\n".to_owned()),
            ]),
            yaml: "# data\n---\n# shop\n".to_owned(),
            kustomization: "resources: [data.yaml, shop.yaml]\n".to_owned(),
            ..PoliciesJson::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let out_dir = dir.path().join("policies");
        let mut stdout = Vec::new();
        write_export(&policies, &out_dir, &mut stdout).unwrap();
        assert!(stdout.is_empty());
        let mut names: Vec<String> = std::fs::read_dir(&out_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["data.yaml", "kustomization.yaml", "shop.yaml"]);
        assert_eq!(
            std::fs::read_to_string(out_dir.join("shop.yaml")).unwrap(),
            "# shop\n"
        );
        write_export(&policies, Path::new("-"), &mut stdout).unwrap();
        assert_eq!(String::from_utf8(stdout).unwrap(), policies.yaml);
    }

    // A namespace from a crafted flow record must not name a path outside
    // the output directory (or anything but `<namespace>.yaml`).
    #[test]
    fn export_refuses_namespaces_that_are_not_names() {
        let dir = tempfile::tempdir().unwrap();
        let out_dir = dir.path().join("policies");
        for bad in ["../escape", "a/b", "..", "", "UPPER", "x\0y"] {
            let policies = PoliciesJson {
                files: BTreeMap::from([(bad.to_owned(), "# x\n".to_owned())]),
                ..PoliciesJson::default()
            };
            let error = write_export(&policies, &out_dir, &mut Vec::new())
                .expect_err(bad)
                .to_string();
            assert!(error.contains("refusing to write"), "{bad:?}: {error}");
        }
        assert!(!dir.path().join("escape.yaml").exists());
        assert!(!out_dir.exists(), "nothing is written when a name is bad");
    }
}
