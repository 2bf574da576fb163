//! `weir export` (the suggested NetworkPolicies as YAML), `weir verify`
//! (replay flows through a directory of policies) and `weir status` (is a
//! namespace ready to audit?).
//!
//! Each works against a running agent (`--server`) or, for `export` and
//! `verify`, offline from a recorded flow log (`--flows`, JSON lines of
//! `weir observe -o json` or `hubble observe -o json`) and an inventory
//! (`--inventory`, Pods, Namespaces and Services as YAML, as `kubectl get
//! pods,namespaces,services -A -o yaml` writes them).

use std::{
    fmt::Write as _,
    io::{self, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, bail};
use clap::builder::PossibleValue;
use reqwest::Url;
use weir_generator::dialect::Dialect;

use super::{
    client::{self, Client, ServerArgs, TokenArgs, endpoint, server_url},
    kube::{self, DryRun},
    output::{Output, policies_noun, port, table},
    policy,
};
use crate::learn::{
    Aggregate, PoliciesJson, ServicePortsArg, SuggestOptions,
    analysis::{self, StatusReport, VerifyReport},
    load_offline, policies, policies_yaml, suggest,
};

// The learner's option, as clap lists it (in `--help` too).
impl clap::ValueEnum for ServicePortsArg {
    fn value_variants<'a>() -> &'a [Self] {
        &[Self::Target, Self::Both]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.as_str()).help(match self {
            Self::Target => "The backend's target port only (what NetworkPolicy sees after DNAT)",
            Self::Both => "The target port and the Service port",
        }))
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
    #[arg(short, long = "namespace", value_name = "NS", value_parser = client::namespace_arg)]
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
    /// How egress to DNS names is written: `standard` (NetworkPolicy, an
    /// ipBlock per address seen for the name), `cilium`
    /// (CiliumNetworkPolicy toFQDNs) or `anp` (AdminNetworkPolicy
    /// domainNames); the in-cluster part is NetworkPolicy in each.
    #[arg(long, default_value_t = Dialect::Standard)]
    pub dialect: Dialect,
    /// With --dialect cilium|anp: fold sibling names (`a.api.example`,
    /// `b.api.example` on the same ports) into `*.api.example`.
    #[arg(long)]
    pub fqdn_patterns: bool,
    /// Install the suggestion as the agent's enforced policies for the
    /// chosen namespaces (every namespace of the suggestion by default),
    /// replacing the policies enforced there before. Modes are not changed:
    /// `weir mode set NS audit|enforce` turns judging on.
    #[arg(long)]
    pub apply: bool,
    /// With --apply: the agent's API token.
    #[command(flatten)]
    pub token: TokenArgs,
    /// With --apply: create the policies in the cluster (kubeconfig's
    /// current context) by server-side apply, field manager `weir`,
    /// instead of handing them to an agent.
    #[arg(long, requires = "apply")]
    pub kube: bool,
    /// With --apply --kube: `server` has the API server check the policies
    /// and store nothing; `none` creates them.
    #[arg(long, value_enum, default_value_t, requires = "kube")]
    pub dry_run: DryRun,
    /// With --apply through a relay: apply even while some nodes' agents
    /// are missing or stale (the relay refuses otherwise, naming them: a
    /// missing node means missing allow rules).
    #[arg(long, requires = "apply", conflicts_with = "kube")]
    pub allow_partial: bool,
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
    pub server: ServerArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Run `weir export`.
///
/// # Errors
/// Unreadable inputs, an unreachable agent, an unwritable output.
pub fn run_export(args: &ExportArgs) -> anyhow::Result<ExitCode> {
    if args.apply && args.dialect != Dialect::Standard {
        bail!(
            "--apply installs NetworkPolicies only: export --dialect {} and apply its objects with your CNI's tools",
            args.dialect
        );
    }
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
        return kube::apply_export(policies, args.dry_run);
    }
    let server = server_url(args.source.server.as_ref())?;
    let applied = policy::post_policies(
        &server,
        &args.token.resolve(),
        policies.yaml.clone(),
        &replace,
        args.allow_partial,
    )?;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "enforced {} suggested {} for {} ({} map writes); modes unchanged (weir mode set NS audit|enforce)",
        applied.applied.len(),
        policies_noun(applied.applied.len()),
        replace.join(", "),
        applied.writes
    )?;
    Ok(ExitCode::SUCCESS)
}

fn suggest_options(args: &ExportArgs) -> SuggestOptions {
    SuggestOptions {
        namespaces: args.namespaces.iter().cloned().collect(),
        aggregate_external: args.aggregate_external,
        service_ports: args.service_ports,
        dialect: args.dialect,
        fqdn_patterns: args.fqdn_patterns,
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
            let (graph, cluster) = load_offline(flows, inventory, warn)?;
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
                if options.dialect != Dialect::Standard {
                    q.append_pair("dialect", options.dialect.as_str());
                }
                if options.fqdn_patterns {
                    q.append_pair("fqdn_patterns", "true");
                }
            }
            Client::new()?.get_json(&url, "policies")?
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
            let (graph, cluster) = load_offline(flows, inventory, warn)?;
            Ok(analysis::verify(&set, &graph, &cluster))
        }
        _ => {
            // Checked here too, so a bad file is named by its path rather
            // than as a document of the request body.
            let body = policies_yaml(&loaded)?;
            policies::policy_set(loaded)?;
            let server = server_url(args.source.server.as_ref())?;
            let url = endpoint(&server, &["api", "verify"])?;
            let client = Client::new()?;
            let response = client.send(client.post_yaml(&url, body), &url)?;
            Ok(client::decode(response, &url, "a report")?)
        }
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
    for a in &report.allowed_by_name {
        let _ = writeln!(
            out,
            "allowed by DNS name: {} -> {} {} is {} for its pods, whose rule in {} allows it",
            a.source,
            a.target,
            port(a.protocol, a.port),
            a.name,
            a.policy
        );
    }
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
    let status: StatusReport = Client::new()?.get_json(&url, "a status")?;
    let mut out = io::stdout().lock();
    match args.output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, &status)?;
            writeln!(out)?;
        }
        Output::Table => {
            out.write_all(status_table(&status).as_bytes())?;
            // The guard's word, when the agent enforces (an agent without
            // an enforcer answers 503: nothing to add).
            let url = endpoint(&args.server.server, &["api", "modes"])?;
            if let Ok(modes) = Client::new()?.get_json::<crate::api::wire::Modes>(&url, "modes") {
                out.write_all(super::policy::guard_lines(&modes).as_bytes())?;
            }
        }
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
    for c in &status.name_churn {
        let _ = writeln!(
            out,
            "warning: DNS name {} changed address {} time{} since {} (last {}; {} addresses seen since {}): \
             the standard policy's ipBlocks for it go stale when it changes again; \
             a policy that names the peer (CiliumNetworkPolicy toFQDNs, AdminNetworkPolicy domainNames) follows it",
            c.name,
            c.changes,
            if c.changes == 1 { "" } else { "s" },
            c.changing_since,
            c.last_change,
            c.addresses,
            c.first_seen,
        );
    }
    out.push_str(&table(&rows));
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn status_warns_of_a_dns_name_whose_address_keeps_changing() {
        let status = StatusReport {
            window_start: None,
            observed_seconds: None,
            quiet_period_seconds: 60,
            window_seconds: 60,
            edges: 0,
            namespaces: Vec::new(),
            incomplete: false,
            degraded: Vec::new(),
            name_churn: vec![crate::learn::analysis::NameChurn {
                name: "api.payments.example".into(),
                addresses: 3,
                changes: 2,
                first_seen: "2026-12-07T06:00:00Z".into(),
                changing_since: "2026-12-07T06:10:00Z".into(),
                last_change: "2026-12-07T06:20:00Z".into(),
            }],
        };
        let table = status_table(&status);
        assert!(
            table.contains(
                "warning: DNS name api.payments.example changed address 2 times since \
                 2026-12-07T06:10:00Z (last 2026-12-07T06:20:00Z; 3 addresses seen since \
                 2026-12-07T06:00:00Z): the standard policy's ipBlocks for it go stale"
            ),
            "{table}"
        );
        let quiet = StatusReport {
            name_churn: Vec::new(),
            ..status
        };
        assert!(!status_table(&quiet).contains("warning"));
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
