//! What a policy set does to the observed graph: the verify report (flows
//! it would deny, workload pairs and ports it allows that were never seen)
//! and the per-namespace readiness (how much recent traffic the suggestion
//! covers, how long since the last new edge). Pure: the CLI and the API
//! both call it.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use weir_generator::{
    cluster::{Cluster, ClusterPod},
    datapath::Mode,
    eval::{DirectionVerdict, Endpoint, Evaluator, Flow, PolicySet, Verdict},
    model::{EdgeKey, FlowGraph, NodeId, PodMeta, Protocol, WorkloadRef},
    synth::FqdnRuleNote,
};

use crate::timestamp::rfc3339;

/// One pod per workload to evaluate flows with: the cluster's first pod of
/// the workload (by name), or, for a workload the cluster no longer has, a
/// pod made of what the graph remembers (its common labels).
#[must_use]
pub fn representatives(graph: &FlowGraph, cluster: &Cluster) -> BTreeMap<WorkloadRef, ClusterPod> {
    let mut reps: BTreeMap<WorkloadRef, ClusterPod> = BTreeMap::new();
    let mut pods: Vec<&ClusterPod> = cluster.pods.iter().collect();
    pods.sort_by(|a, b| (&a.meta.namespace, &a.meta.name).cmp(&(&b.meta.namespace, &b.meta.name)));
    for pod in pods {
        reps.entry(pod.meta.workload.clone())
            .or_insert_with(|| pod.clone());
    }
    for (workload, info) in &graph.workloads {
        reps.entry(workload.clone()).or_insert_with(|| ClusterPod {
            meta: PodMeta {
                namespace: workload.namespace.clone(),
                name: info
                    .pods
                    .first()
                    .cloned()
                    .unwrap_or_else(|| workload.name.clone()),
                labels: info.labels.clone(),
                workload: workload.clone(),
                ips: Vec::new(),
            },
            ports: Vec::new(),
        });
    }
    reps
}

fn endpoint<'a>(
    node: &NodeId,
    reps: &'a BTreeMap<WorkloadRef, ClusterPod>,
) -> Option<Endpoint<'a>> {
    match node {
        NodeId::Workload(w) => reps.get(w).map(Endpoint::Pod),
        NodeId::External(ip) => Some(Endpoint::External(*ip)),
    }
}

fn evaluate(
    evaluator: &Evaluator<'_>,
    reps: &BTreeMap<WorkloadRef, ClusterPod>,
    source: &NodeId,
    target: &NodeId,
    protocol: Protocol,
    port: u16,
) -> Option<Verdict> {
    Some(evaluator.evaluate(&Flow {
        source: endpoint(source, reps)?,
        destination: endpoint(target, reps)?,
        protocol,
        port,
    }))
}

/// One direction of a verdict, for people and programs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionJson {
    /// `allowed`, `denied`, `not-isolated` or `not-applicable`.
    pub verdict: String,
    /// Why it was denied (the evaluator's reason code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The policies that isolate the pod (denied), or the rules that allow
    /// the flow (allowed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
}

impl From<&DirectionVerdict> for DirectionJson {
    fn from(v: &DirectionVerdict) -> Self {
        match v {
            DirectionVerdict::NotApplicable => Self::plain("not-applicable"),
            DirectionVerdict::NotIsolated => Self::plain("not-isolated"),
            DirectionVerdict::Allowed { rules } => Self {
                verdict: "allowed".to_owned(),
                reason: None,
                policies: rules.iter().map(ToString::to_string).collect(),
            },
            DirectionVerdict::Denied {
                isolated_by,
                reason,
            } => Self {
                verdict: "denied".to_owned(),
                reason: Some(reason.as_str().to_owned()),
                policies: isolated_by.iter().map(ToString::to_string).collect(),
            },
        }
    }
}

impl DirectionJson {
    fn plain(verdict: &str) -> Self {
        Self {
            verdict: verdict.to_owned(),
            reason: None,
            policies: Vec::new(),
        }
    }

    fn denied(&self) -> bool {
        self.verdict == "denied"
    }
}

/// An observed flow the policies would drop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeniedFlow {
    /// Initiator (`namespace/workload` or an address).
    pub source: String,
    /// Responder.
    pub target: String,
    /// Protocol.
    pub protocol: Protocol,
    /// Destination port (0 for ICMP).
    pub port: u16,
    /// Connections observed.
    pub connections: u64,
    /// Last seen, RFC 3339.
    pub last_seen: String,
    /// Egress at the source.
    pub egress: DirectionJson,
    /// Ingress at the target.
    pub ingress: DirectionJson,
}

/// A workload pair and port the policies allow but nobody used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnobservedAllowed {
    /// Would-be initiator.
    pub source: String,
    /// Would-be responder.
    pub target: String,
    /// Protocol.
    pub protocol: Protocol,
    /// Port.
    pub port: u16,
    /// Egress at the source.
    pub egress: DirectionJson,
    /// Ingress at the target.
    pub ingress: DirectionJson,
}

/// `weir verify`'s report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Observed edges replayed.
    pub observed: usize,
    /// Workloads known (the cluster's and the graph's).
    pub workloads: usize,
    /// (protocol, port) pairs tried for unobserved pairs: containerPorts and
    /// observed ports.
    pub ports: usize,
    /// (a) observed flows the policies would deny.
    pub denied: Vec<DeniedFlow>,
    /// (b) allowed, never observed.
    pub unobserved_allowed: Vec<UnobservedAllowed>,
    /// Observed flows to an address no rule lists, allowed because DNS
    /// named the address for the source's pods with a name a policy's
    /// name rule allows (`weir.dev/fqdn-rules`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_by_name: Vec<AllowedByName>,
}

/// An observed flow allowed through a DNS name's rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowedByName {
    /// Initiator.
    pub source: String,
    /// The address it went to.
    pub target: String,
    /// Protocol.
    pub protocol: Protocol,
    /// Destination port.
    pub port: u16,
    /// The DNS name.
    pub name: String,
    /// The policy whose rule for the name allows it (`namespace/name`).
    pub policy: String,
}

/// Whether the egress `source -> ip` denied by the policies is allowed
/// by a name rule: a name the source's pods resolved `ip` as, that a
/// policy of its namespace annotates as a rule for the same port, whose
/// listed addresses the policies do let the source reach on that port (so
/// a stale annotation, whose rule is gone, allows nothing).
fn by_name(
    evaluator: &Evaluator<'_>,
    reps: &BTreeMap<WorkloadRef, ClusterPod>,
    policies: &PolicySet,
    graph: &FlowGraph,
    key: &EdgeKey,
) -> Option<(String, String)> {
    let (NodeId::Workload(w), NodeId::External(ip)) = (&key.source, &key.target) else {
        return None;
    };
    let port = format!("{}/{}", key.port, key.protocol);
    for (name, addresses) in &graph.external_names {
        if !addresses.get(ip).is_some_and(|s| s.workloads.contains(w)) {
            continue;
        }
        for policy in policies.policies() {
            if policy.metadata.namespace.as_deref() != Some(w.namespace.as_str()) {
                continue;
            }
            let notes = FqdnRuleNote::of(policy).unwrap_or_default();
            let rule = notes
                .iter()
                .find(|n| n.direction == "egress" && n.name == *name && n.ports.contains(&port));
            let Some(rule) = rule else { continue };
            let allowed = rule.addresses.keys().any(|addr| {
                evaluate(
                    evaluator,
                    reps,
                    &key.source,
                    &NodeId::External(*addr),
                    key.protocol,
                    key.port,
                )
                .is_some_and(|v| !DirectionJson::from(&v.egress).denied())
            });
            if allowed {
                let policy_name = format!(
                    "{}/{}",
                    w.namespace,
                    policy.metadata.name.as_deref().unwrap_or_default()
                );
                return Some((name.clone(), policy_name));
            }
        }
    }
    None
}

impl VerifyReport {
    /// Whether the policies pass: nothing observed is denied and, when
    /// `strict`, nothing unobserved is allowed.
    #[must_use]
    pub fn passes(&self, strict: bool) -> bool {
        self.denied.is_empty() && (!strict || self.unobserved_allowed.is_empty())
    }
}

/// Replay the graph through the policies.
#[must_use]
pub fn verify(policies: &PolicySet, graph: &FlowGraph, cluster: &Cluster) -> VerifyReport {
    let evaluator = Evaluator::new(policies, cluster);
    let reps = representatives(graph, cluster);
    let mut report = VerifyReport {
        observed: graph.edges.len(),
        workloads: reps.len(),
        ..VerifyReport::default()
    };
    for (key, stats) in &graph.edges {
        let Some(verdict) = evaluate(
            &evaluator,
            &reps,
            &key.source,
            &key.target,
            key.protocol,
            key.port,
        ) else {
            continue;
        };
        let (egress, ingress) = (
            DirectionJson::from(&verdict.egress),
            DirectionJson::from(&verdict.ingress),
        );
        if egress.denied()
            && !ingress.denied()
            && let Some((name, policy)) = by_name(&evaluator, &reps, policies, graph, key)
        {
            report.allowed_by_name.push(AllowedByName {
                source: key.source.to_string(),
                target: key.target.to_string(),
                protocol: key.protocol,
                port: key.port,
                name,
                policy,
            });
            continue;
        }
        if egress.denied() || ingress.denied() {
            report.denied.push(DeniedFlow {
                source: key.source.to_string(),
                target: key.target.to_string(),
                protocol: key.protocol,
                port: key.port,
                connections: stats.connections,
                last_seen: rfc3339(stats.last_seen),
                egress,
                ingress,
            });
        }
    }

    let mut ports: BTreeSet<(Protocol, u16)> = cluster
        .pods
        .iter()
        .flat_map(|p| &p.ports)
        .map(|p| (p.protocol, p.port))
        .collect();
    ports.extend(
        graph
            .edges
            .keys()
            .filter(|k| k.protocol.has_ports())
            .map(|k| (k.protocol, k.port)),
    );
    report.ports = ports.len();
    for source in reps.keys() {
        for target in reps.keys() {
            let (s, t) = (
                NodeId::Workload(source.clone()),
                NodeId::Workload(target.clone()),
            );
            for &(protocol, port) in &ports {
                let key = EdgeKey {
                    source: s.clone(),
                    target: t.clone(),
                    protocol,
                    port,
                };
                if graph.edges.contains_key(&key) {
                    continue;
                }
                let Some(verdict) = evaluate(&evaluator, &reps, &s, &t, protocol, port) else {
                    continue;
                };
                if verdict.allowed() {
                    report.unobserved_allowed.push(UnobservedAllowed {
                        source: s.to_string(),
                        target: t.to_string(),
                        protocol,
                        port,
                        egress: DirectionJson::from(&verdict.egress),
                        ingress: DirectionJson::from(&verdict.ingress),
                    });
                }
            }
        }
    }
    report
}

/// How readiness is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadinessOptions {
    /// A namespace is quiet when no new edge appeared for this long.
    pub quiet_period: Duration,
    /// Traffic in this window (by last seen) is what coverage weighs.
    pub window: Duration,
}

impl Default for ReadinessOptions {
    fn default() -> Self {
        Self {
            quiet_period: Duration::from_secs(600),
            window: Duration::from_secs(3600),
        }
    }
}

/// One namespace's readiness.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamespaceReadiness {
    /// The namespace.
    pub namespace: String,
    /// Edges from or to its workloads.
    pub edges: usize,
    /// When the newest edge was first seen, RFC 3339.
    pub last_new_edge: Option<String>,
    /// Seconds since then.
    pub seconds_since_last_new_edge: Option<u64>,
    /// Connections from or to the namespace last seen within the window
    /// (an edge counts at least once).
    pub recent_connections: u64,
    /// Of those, the ones the current suggestion allows in the namespace's
    /// directions (egress of its sources, ingress of its targets).
    pub covered_connections: u64,
    /// `covered / recent` (1 when nothing is recent).
    pub coverage: f64,
    /// Quiet for the quiet period and fully covered.
    pub ready: bool,
    /// Why it is not ready, as `weir mode set` refuses it and the UI's
    /// mode switch says it; none when ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl NamespaceReadiness {
    /// Why it is not ready (`quiet_period`: seconds), or `None` when it is.
    #[must_use]
    pub fn why_not_ready(&self, quiet_period: u64) -> Option<String> {
        if self.ready {
            return None;
        }
        let mut why = Vec::new();
        match self.seconds_since_last_new_edge {
            Some(since) if since < quiet_period => why.push(format!(
                "its last new edge appeared {since}s ago, within the quiet period of {quiet_period}s"
            )),
            None => why.push("no edge was learned yet".to_owned()),
            Some(_) => {}
        }
        if self.covered_connections < self.recent_connections {
            why.push(format!(
                "the suggestion covers {} of its {} recent connections",
                self.covered_connections, self.recent_connections
            ));
        }
        if why.is_empty() {
            why.push("it is not ready (see weir status)".to_owned());
        }
        Some(why.join("; "))
    }
}

/// `GET /api/status` and `weir status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// When the observation window started (the store's creation), RFC 3339.
    pub window_start: Option<String>,
    /// Seconds observed so far.
    pub observed_seconds: Option<u64>,
    /// The quiet period, seconds.
    pub quiet_period_seconds: u64,
    /// The coverage window, seconds.
    pub window_seconds: u64,
    /// Edges in the graph.
    pub edges: usize,
    /// Per namespace, in order.
    pub namespaces: Vec<NamespaceReadiness>,
    /// Connections are missing from the graph for some time (the flow
    /// table was full): `degraded` says when.
    #[serde(default)]
    pub incomplete: bool,
    /// Losses since the agent started, each with its time.
    #[serde(default)]
    pub degraded: Vec<crate::health::Episode>,
    /// DNS names whose addresses changed during the window: a standard
    /// policy's `ipBlock`s for them go stale when they change again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub name_churn: Vec<NameChurn>,
}

/// A DNS name whose address set changed: [`name_churn`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameChurn {
    /// The name.
    pub name: String,
    /// Distinct addresses flows carried it for.
    pub addresses: usize,
    /// Addresses that appeared after its first one (each a change).
    pub changes: usize,
    /// When the name was first seen, RFC 3339.
    pub first_seen: String,
    /// When it first changed, RFC 3339.
    pub changing_since: String,
    /// When it last changed, RFC 3339.
    pub last_change: String,
}

/// An address first seen this long after the name's first one is a change;
/// addresses of one answer (round robin) are seen together.
const CHANGE_SLACK_NS: u64 = 60 * 1_000_000_000;

/// The names of `graph` whose addresses changed: an address first seen
/// more than a minute after the name's first address counts as a change.
#[must_use]
pub fn name_churn(graph: &FlowGraph) -> Vec<NameChurn> {
    graph
        .external_names
        .iter()
        .filter_map(|(name, addresses)| {
            let firsts: Vec<u64> = addresses
                .values()
                .map(|s| s.first_seen)
                .filter(|t| *t > 0)
                .collect();
            let start = *firsts.iter().min()?;
            let later: Vec<u64> = firsts
                .iter()
                .copied()
                .filter(|t| *t > start.saturating_add(CHANGE_SLACK_NS))
                .collect();
            Some(NameChurn {
                name: name.clone(),
                addresses: addresses.len(),
                changes: later.len(),
                first_seen: rfc3339(start),
                changing_since: rfc3339(*later.iter().min()?),
                last_change: rfc3339(*later.iter().max()?),
            })
        })
        .collect()
}

/// Readiness of every namespace with a workload in the graph. `policies`
/// is the current suggestion; `now` and `window_start` are Unix ns.
#[must_use]
pub fn readiness(
    policies: &PolicySet,
    graph: &FlowGraph,
    cluster: &Cluster,
    now: u64,
    window_start: Option<u64>,
    options: ReadinessOptions,
) -> StatusReport {
    let evaluator = Evaluator::new(policies, cluster);
    let reps = representatives(graph, cluster);
    let recent_since = now.saturating_sub(nanos(options.window));
    let quiet = nanos(options.quiet_period);

    #[derive(Default)]
    struct Acc {
        edges: usize,
        last_new: u64,
        recent: u64,
        covered: u64,
    }
    let mut acc: BTreeMap<String, Acc> = BTreeMap::new();
    for workload in graph.workloads.keys() {
        acc.entry(workload.namespace.clone()).or_default();
    }
    let namespace_of = |node: &NodeId| match node {
        NodeId::Workload(w) => Some(w.namespace.clone()),
        NodeId::External(_) => None,
    };
    for (key, stats) in &graph.edges {
        let (source_ns, target_ns) = (namespace_of(&key.source), namespace_of(&key.target));
        let verdict = if stats.last_seen >= recent_since {
            evaluate(
                &evaluator,
                &reps,
                &key.source,
                &key.target,
                key.protocol,
                key.port,
            )
        } else {
            None
        };
        let involved: BTreeSet<&String> = source_ns.iter().chain(target_ns.iter()).collect();
        for ns in involved {
            let a = acc.entry(ns.clone()).or_default();
            a.edges += 1;
            a.last_new = a.last_new.max(stats.first_seen);
            if stats.last_seen < recent_since {
                continue;
            }
            let weight = stats.connections.max(1);
            a.recent += weight;
            let covered = verdict.as_ref().is_some_and(|v| {
                let egress_ok =
                    source_ns.as_ref() != Some(ns) || !DirectionJson::from(&v.egress).denied();
                let ingress_ok =
                    target_ns.as_ref() != Some(ns) || !DirectionJson::from(&v.ingress).denied();
                egress_ok && ingress_ok
            });
            if covered {
                a.covered += weight;
            }
        }
    }
    let namespaces = acc
        .into_iter()
        .map(|(namespace, a)| {
            let since = (a.last_new > 0).then(|| now.saturating_sub(a.last_new));
            #[expect(clippy::cast_precision_loss, reason = "a ratio for display")]
            let coverage = if a.recent == 0 {
                1.0
            } else {
                a.covered as f64 / a.recent as f64
            };
            NamespaceReadiness {
                namespace,
                edges: a.edges,
                last_new_edge: (a.last_new > 0).then(|| rfc3339(a.last_new)),
                seconds_since_last_new_edge: since.map(|s| s / 1_000_000_000),
                recent_connections: a.recent,
                covered_connections: a.covered,
                coverage,
                ready: a.edges > 0 && since.is_some_and(|s| s >= quiet) && a.covered == a.recent,
                reason: None,
            }
        })
        .map(|mut n: NamespaceReadiness| {
            n.reason = n.why_not_ready(options.quiet_period.as_secs());
            n
        })
        .collect();
    StatusReport {
        window_start: window_start.map(rfc3339),
        observed_seconds: window_start.map(|s| now.saturating_sub(s) / 1_000_000_000),
        quiet_period_seconds: options.quiet_period.as_secs(),
        window_seconds: options.window.as_secs(),
        edges: graph.edges.len(),
        namespaces,
        incomplete: false,
        degraded: Vec::new(),
        name_churn: name_churn(graph),
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Why `namespace` is not ready by `report`, `None` when it is; a
/// namespace the report does not know has learned nothing yet.
#[must_use]
pub fn why_not_ready(report: &StatusReport, namespace: &str) -> Option<String> {
    match report.namespaces.iter().find(|n| n.namespace == namespace) {
        Some(ns) => ns.why_not_ready(report.quiet_period_seconds),
        None => Some("nothing was learned from or to it yet".to_owned()),
    }
}

/// What the readiness gate says when it refuses `namespace` `mode`, on
/// every path (the agent's API, the relay's, `weir mode set --kube`).
#[must_use]
pub fn not_ready_message(namespace: &str, mode: Mode, reason: &str) -> String {
    format!("namespace {namespace} is not ready for {mode}: {reason}; force it to proceed")
}

#[cfg(test)]
mod tests {
    use weir_generator::{
        cluster::NamedPort,
        model::{EdgeKey, EdgeStats, WorkloadKind},
    };

    use super::*;
    use crate::learn::{SuggestOptions, policies};

    const SEC: u64 = 1_000_000_000;
    const T0: u64 = 1_700_000_000 * SEC;

    fn workload(ns: &str, name: &str) -> WorkloadRef {
        WorkloadRef::new(ns, WorkloadKind::Deployment, name)
    }

    fn pod(ns: &str, name: &str, ip: &str, port: u16) -> ClusterPod {
        ClusterPod {
            meta: PodMeta {
                namespace: ns.into(),
                name: format!("{name}-7d9f-x"),
                labels: BTreeMap::from([("app".into(), name.into())]),
                workload: workload(ns, name),
                ips: vec![ip.parse().unwrap()],
            },
            ports: vec![NamedPort {
                name: None,
                port,
                protocol: Protocol::Tcp,
            }],
        }
    }

    fn cluster() -> Cluster {
        Cluster {
            namespaces: ["shop", "data"]
                .into_iter()
                .map(|ns| {
                    (
                        ns.to_owned(),
                        BTreeMap::from([("kubernetes.io/metadata.name".into(), ns.into())]),
                    )
                })
                .collect(),
            pods: vec![
                pod("shop", "frontend", "10.0.0.1", 8080),
                pod("shop", "cart", "10.0.0.2", 7070),
                pod("data", "db", "10.0.1.9", 5432),
            ],
            services: vec![],
        }
    }

    /// frontend -> cart:7070 (first seen at `new_edge_at`), cart ->
    /// db:5432, frontend -> 203.0.113.10:443; all last seen at T0 + 100 s.
    fn graph(new_edge_at: u64) -> FlowGraph {
        let mut g = FlowGraph::default();
        for p in &cluster().pods {
            g.add_pod(&p.meta);
        }
        let w = |ns, name| NodeId::Workload(workload(ns, name));
        let edges = [
            (w("shop", "frontend"), w("shop", "cart"), 7070, new_edge_at),
            (w("shop", "cart"), w("data", "db"), 5432, T0),
            (
                w("shop", "frontend"),
                NodeId::External("203.0.113.10".parse().unwrap()),
                443,
                T0,
            ),
        ];
        for (source, target, port, first_seen) in edges {
            g.record(
                EdgeKey {
                    source,
                    target,
                    protocol: Protocol::Tcp,
                    port,
                },
                &EdgeStats {
                    packets: 10,
                    bytes: 100,
                    connections: 2,
                    first_seen,
                    last_seen: T0 + 100 * SEC,
                    ..EdgeStats::default()
                },
            );
        }
        g
    }

    fn suggestion_set(graph: &FlowGraph, cluster: &Cluster) -> PolicySet {
        let suggestion = crate::learn::suggest(graph, cluster, &SuggestOptions::default());
        let loaded = policies::parse("suggestion", &suggestion.yaml).unwrap();
        policies::policy_set(loaded).unwrap()
    }

    fn set(yaml: &str) -> PolicySet {
        policies::policy_set(policies::parse("t.yaml", yaml).unwrap()).unwrap()
    }

    const DENY_ALL: &str = "kind: NetworkPolicy\nmetadata: {name: deny, namespace: shop}\n\
        spec: {podSelector: {}, policyTypes: [Ingress, Egress]}\n---\n\
        kind: NetworkPolicy\nmetadata: {name: deny, namespace: data}\n\
        spec: {podSelector: {}, policyTypes: [Ingress, Egress]}\n";

    #[test]
    fn a_name_whose_addresses_change_is_reported_and_round_robin_is_not() {
        const S: u64 = 1_000_000_000;
        let web = WorkloadRef::new(
            "shop",
            weir_generator::model::WorkloadKind::Deployment,
            "web",
        );
        let mut g = FlowGraph::default();
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        // two addresses of one answer, then two re-points
        g.name_address(
            "api.payments.example",
            ip("203.0.113.10"),
            &web,
            1000 * S,
            1001 * S,
        );
        g.name_address(
            "api.payments.example",
            ip("203.0.113.12"),
            &web,
            1010 * S,
            1011 * S,
        );
        g.name_address(
            "api.payments.example",
            ip("203.0.113.11"),
            &web,
            2000 * S,
            2001 * S,
        );
        g.name_address(
            "api.payments.example",
            ip("203.0.113.13"),
            &web,
            3000 * S,
            3001 * S,
        );
        g.name_address("cdn.example", ip("198.51.100.1"), &web, 1000 * S, 1001 * S);
        g.name_address("cdn.example", ip("198.51.100.2"), &web, 1030 * S, 1031 * S);
        let churn = name_churn(&g);
        assert_eq!(
            churn,
            [NameChurn {
                name: "api.payments.example".into(),
                addresses: 4,
                changes: 2,
                first_seen: rfc3339(1000 * S),
                changing_since: rfc3339(2000 * S),
                last_change: rfc3339(3000 * S),
            }]
        );
    }

    #[test]
    fn the_suggestion_passes_verify_complete_and_tight() {
        let (g, c) = (graph(T0), cluster());
        let report = verify(&suggestion_set(&g, &c), &g, &c);
        assert!(report.denied.is_empty(), "{:#?}", report.denied);
        assert!(
            report.unobserved_allowed.is_empty(),
            "{:#?}",
            report.unobserved_allowed
        );
        assert!(report.passes(true));
        assert_eq!((report.observed, report.workloads, report.ports), (3, 3, 4));
    }

    /// The policies learned while the name pointed at one address pass a
    /// later flow to its new address, which no rule lists, only because
    /// DNS named it so for the source's pods; the report names the name.
    #[test]
    fn verify_passes_a_flow_to_a_new_address_of_an_allowed_name() {
        let name = "api.payments.example";
        let (old, new) = (
            "203.0.113.10".parse().unwrap(),
            "203.0.113.11".parse().unwrap(),
        );
        let frontend = workload("shop", "frontend");
        let c = cluster();
        let mut learned = graph(T0);
        learned.name_address(name, old, &frontend, T0, T0 + SEC);
        let policies = suggestion_set(&learned, &c);

        let mut later = learned.clone();
        later.record(
            EdgeKey {
                source: NodeId::Workload(frontend.clone()),
                target: NodeId::External(new),
                protocol: Protocol::Tcp,
                port: 443,
            },
            &EdgeStats {
                connections: 1,
                first_seen: T0 + 200 * SEC,
                last_seen: T0 + 201 * SEC,
                ..EdgeStats::default()
            },
        );
        let unnamed = verify(&policies, &later, &c);
        assert_eq!(unnamed.denied.len(), 1, "{unnamed:?}");
        assert_eq!(unnamed.denied[0].target, "203.0.113.11");

        later.name_address(name, new, &frontend, T0 + 200 * SEC, T0 + 201 * SEC);
        let report = verify(&policies, &later, &c);
        assert!(report.denied.is_empty(), "{report:?}");
        assert_eq!(
            report.allowed_by_name,
            [AllowedByName {
                source: "shop/frontend".into(),
                target: "203.0.113.11".into(),
                protocol: Protocol::Tcp,
                port: 443,
                name: name.into(),
                policy: "shop/weir-frontend".into(),
            }]
        );
        // Another port is not the name rule's.
        let mut other_port = later.clone();
        other_port.record(
            EdgeKey {
                source: NodeId::Workload(frontend),
                target: NodeId::External(new),
                protocol: Protocol::Tcp,
                port: 8443,
            },
            &EdgeStats {
                connections: 1,
                ..EdgeStats::default()
            },
        );
        assert_eq!(verify(&policies, &other_port, &c).denied.len(), 1);
    }

    #[test]
    fn verify_reports_denied_flows_with_direction_and_reason() {
        let (g, c) = (graph(T0), cluster());
        let report = verify(&set(DENY_ALL), &g, &c);
        assert_eq!(report.denied.len(), 3);
        let first = &report.denied[0];
        assert_eq!(first.egress.verdict, "denied");
        assert!(first.egress.reason.is_some());
        assert_eq!(first.egress.policies, ["shop/deny"]);
        assert!(report.unobserved_allowed.is_empty());
        assert!(!report.passes(false));
    }

    #[test]
    fn verify_reports_allowed_pairs_never_observed() {
        let (g, c) = (graph(T0), cluster());
        // Nothing isolated: everything is allowed.
        let allow = "kind: NetworkPolicy\nmetadata: {name: allow, namespace: other}\nspec: {podSelector: {}}\n";
        let report = verify(&set(allow), &g, &c);
        assert!(report.denied.is_empty());
        // 3 workloads x 3 workloads x 4 ports, minus the 2 observed pod pairs.
        assert_eq!(report.unobserved_allowed.len(), 3 * 3 * 4 - 2);
        assert!(report.passes(false));
        assert!(!report.passes(true));
    }

    #[test]
    fn readiness_needs_quiet_and_full_coverage() {
        let c = cluster();
        let options = ReadinessOptions {
            quiet_period: Duration::from_secs(600),
            window: Duration::from_secs(3600),
        };
        // The last new edge appeared 700 s before now: quiet.
        let now = T0 + 1000 * SEC;
        let g = graph(T0 + 300 * SEC);
        let status = readiness(&suggestion_set(&g, &c), &g, &c, now, Some(T0), options);
        assert_eq!(status.observed_seconds, Some(1000));
        let names: Vec<&str> = status
            .namespaces
            .iter()
            .map(|n| n.namespace.as_str())
            .collect();
        assert_eq!(names, ["data", "shop"]);
        let shop = &status.namespaces[1];
        assert_eq!(shop.edges, 3);
        assert_eq!(shop.seconds_since_last_new_edge, Some(700));
        assert_eq!((shop.recent_connections, shop.covered_connections), (6, 6));
        assert!(shop.ready, "{shop:?}");

        // A new edge 100 s ago: not quiet yet.
        let g = graph(T0 + 900 * SEC);
        let status = readiness(&suggestion_set(&g, &c), &g, &c, now, Some(T0), options);
        assert!(!status.namespaces[1].ready);
        assert!(status.namespaces[0].ready, "data's only edge is old");

        // A policy set that covers nothing.
        let g = graph(T0);
        let status = readiness(&set(DENY_ALL), &g, &c, now, Some(T0), options);
        let shop = &status.namespaces[1];
        assert_eq!(shop.covered_connections, 0);
        assert!(shop.coverage < f64::EPSILON);
        assert!(!shop.ready);

        // Traffic older than the window does not weigh.
        let later = T0 + 10_000 * SEC;
        let status = readiness(&set(DENY_ALL), &g, &c, later, Some(T0), options);
        assert_eq!(status.namespaces[1].recent_connections, 0);
        assert!((status.namespaces[1].coverage - 1.0).abs() < f64::EPSILON);
    }

    #[test]
    fn representatives_fall_back_to_the_graph_for_gone_workloads() {
        let g = graph(T0);
        let reps = representatives(&g, &Cluster::default());
        assert_eq!(reps.len(), 3);
        let cart = &reps[&workload("shop", "cart")];
        assert_eq!(cart.meta.labels["app"], "cart");
    }
}
