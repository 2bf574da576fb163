//! From observed traffic to policies, and back: the learner's options and
//! its suggestion ([`suggest`]), the replay of flows through policies and
//! readiness ([`analysis`]), flow logs ([`flow_log`], [`load_offline`]) and
//! policy files ([`policies`]). The API (`api/learn.rs`) and the commands
//! (`cmd/learn.rs`: `weir export`, `verify`, `status`) both use it.
//!
//! Offline, flows come from a recorded flow log (JSON lines of `weir
//! observe -o json` or `hubble observe -o json`) and pods from an inventory
//! (Pods, Namespaces and Services as YAML, as `kubectl get
//! pods,namespaces,services -A -o yaml` writes them).

pub mod analysis;
pub mod flow_log;
pub mod policies;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    path::Path,
    str::FromStr,
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use weir_generator::{
    cluster::Cluster,
    dialect::{self, Dialect},
    model::FlowGraph,
    synth::{self, AggregateExternal, ServicePorts},
};

use crate::resolve::inventory;

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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServicePortsArg {
    /// The backend's target port only (what NetworkPolicy sees after DNAT).
    #[default]
    Target,
    /// The target port and the Service port.
    Both,
}

impl ServicePortsArg {
    /// Its name in the CLI and the API.
    #[must_use]
    pub fn as_str(self) -> &'static str {
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
    /// The kinds of object egress to DNS names is written as.
    pub dialect: Dialect,
    /// Fold sibling DNS names into wildcards (FQDN dialects only).
    pub fqdn_patterns: bool,
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

/// Learn policies from a graph, written in the options' dialect.
#[must_use]
pub fn suggest(graph: &FlowGraph, cluster: &Cluster, options: &SuggestOptions) -> PoliciesJson {
    let learned = synth::synthesize(graph, cluster, &options.synth());
    let rendered = dialect::render(
        options.dialect,
        &learned,
        &learned.fqdn_egress,
        dialect::Options {
            fqdn_patterns: options.fqdn_patterns,
        },
    );
    let suggestion = &rendered.standard;
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
        files: rendered.files(),
        yaml: rendered.all_yaml(),
        kustomization: suggestion.kustomization(),
        policies,
        warnings: suggestion
            .warnings
            .iter()
            .map(ToString::to_string)
            .chain(rendered.warnings.iter().cloned())
            .collect(),
    }
}

/// The offline inputs: a graph from the flow log, a cluster from the
/// inventory. Bad lines are reported on `warn` and skipped.
///
/// # Errors
/// Unreadable or invalid files, a log without a usable flow.
pub fn load_offline(
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
    let parsed = flow_log::parse(&log, &cluster);
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

/// Policies as one multi-document YAML stream.
///
/// # Errors
/// A policy that cannot be re-encoded.
pub fn policies_yaml(loaded: &[policies::Sourced]) -> anyhow::Result<String> {
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
}
