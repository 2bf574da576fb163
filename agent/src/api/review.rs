//! Reviewing the suggestion before it is enforced:
//!
//! - `GET /api/policies/diff?namespace=NS`: the suggested policies of NS
//!   against those enforced there (names added, removed, changed in their
//!   spec, unchanged) and a unified diff of the two YAML streams;
//! - `GET /api/verify/suggestion[?namespace=NS[,NS...]]`: the verify report
//!   of the current suggestion (as `POST /api/verify` gives for a body);
//! - `GET /api/impact?namespace=NS&mode=audit|enforce[&window=1h]`: how
//!   many connections of the recent window the policies in force (the
//!   enforced set, not the suggestion) would deny in NS's directions if NS
//!   were in that mode, with NS's readiness.

use std::{collections::BTreeSet, time::Duration};

use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::{Deserialize, Serialize};
use weir_generator::{
    datapath::Mode,
    eval::{Endpoint, Evaluator, Flow, PolicySet},
    model::{NodeId, Protocol},
    synth,
};

use super::{
    AppState,
    error::ApiError,
    graph::all_ports,
    learn::{blocking, check_namespaces, inputs, status_report},
    query::{self, bad},
};
use crate::learn::{
    SuggestOptions,
    analysis::{self, DirectionJson, NamespaceReadiness, VerifyReport, representatives},
    policy_yaml,
};

fn one_namespace(value: Option<String>) -> Result<String, ApiError> {
    match value {
        Some(ns) if !ns.is_empty() && !ns.contains(',') => Ok(ns),
        Some(ns) if ns.contains(',') => Err(bad("namespace", "one namespace only")),
        _ => Err(bad("namespace", "required")),
    }
}

/// The query of `/api/policies/diff`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiffQuery {
    namespace: Option<String>,
}

/// `GET /api/policies/diff`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDiff {
    /// The namespace.
    pub namespace: String,
    /// Suggested, not enforced.
    pub added: Vec<String>,
    /// Enforced, not suggested.
    pub removed: Vec<String>,
    /// Both, with different specs.
    pub changed: Vec<String>,
    /// Both, with the same spec.
    pub unchanged: Vec<String>,
    /// Unified diff of the enforced YAML (`---` before each policy, by
    /// name) to the suggested YAML.
    pub diff: String,
}

fn stream(policies: &[&NetworkPolicy]) -> String {
    policies
        .iter()
        .map(|p| format!("---\n{}", policy_yaml(p)))
        .collect()
}

/// Compare what is enforced in a namespace with what is suggested.
#[must_use]
pub fn diff(
    namespace: &str,
    enforced: &[NetworkPolicy],
    suggested: &[NetworkPolicy],
) -> PolicyDiff {
    let name = |p: &NetworkPolicy| p.metadata.name.clone().unwrap_or_default();
    let mut enforced: Vec<&NetworkPolicy> = enforced
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
        .collect();
    enforced.sort_by_key(|p| name(p));
    let mut suggested: Vec<&NetworkPolicy> = suggested.iter().collect();
    suggested.sort_by_key(|p| name(p));
    let mut result = PolicyDiff {
        namespace: namespace.to_owned(),
        added: Vec::new(),
        removed: Vec::new(),
        changed: Vec::new(),
        unchanged: Vec::new(),
        diff: String::new(),
    };
    let names: BTreeSet<String> = enforced.iter().chain(&suggested).map(|p| name(p)).collect();
    for n in names {
        let e = enforced.iter().find(|p| name(p) == n);
        let s = suggested.iter().find(|p| name(p) == n);
        match (e, s) {
            (None, Some(_)) => result.added.push(n),
            (Some(_), None) => result.removed.push(n),
            (Some(e), Some(s)) if e.spec == s.spec => result.unchanged.push(n),
            _ => result.changed.push(n),
        }
    }
    let (before, after) = (stream(&enforced), stream(&suggested));
    result.diff = similar::TextDiff::from_lines(&before, &after)
        .unified_diff()
        .context_radius(3)
        .header(
            &format!("enforced/{namespace}.yaml"),
            &format!("suggested/{namespace}.yaml"),
        )
        .to_string();
    result
}

/// `GET /api/policies/diff`.
pub async fn policy_diff(
    State(state): State<AppState>,
    query: Result<Query<RawDiffQuery>, QueryRejection>,
) -> Result<Json<PolicyDiff>, ApiError> {
    let Query(raw) = query?;
    let namespace = one_namespace(raw.namespace)?;
    let (graph, cluster) = inputs(&state);
    check_namespaces(&BTreeSet::from([namespace.clone()]), &graph, &cluster)?;
    let enforced = state.enforced_policies();
    let result = blocking(move || {
        let options = SuggestOptions {
            namespaces: BTreeSet::from([namespace.clone()]),
            ..SuggestOptions::default()
        };
        let mut suggestion = synth::synthesize(&graph, &cluster, &options.synth());
        let suggested = suggestion.namespaces.remove(&namespace).unwrap_or_default();
        diff(&namespace, &enforced, &suggested)
    })
    .await?;
    Ok(Json(result))
}

/// The query of `/api/verify/suggestion`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSuggestionQuery {
    namespace: Option<String>,
}

/// `GET /api/verify/suggestion`.
pub async fn verify_suggestion(
    State(state): State<AppState>,
    query: Result<Query<RawSuggestionQuery>, QueryRejection>,
) -> Result<Json<VerifyReport>, ApiError> {
    let Query(raw) = query?;
    let namespaces = query::namespaces(raw.namespace)?.unwrap_or_default();
    let (graph, cluster) = inputs(&state);
    check_namespaces(&namespaces, &graph, &cluster)?;
    let report = blocking(move || -> Result<VerifyReport, ApiError> {
        let options = SuggestOptions {
            namespaces,
            ..SuggestOptions::default()
        };
        let suggestion = synth::synthesize(&graph, &cluster, &options.synth());
        let set = PolicySet::new(suggestion.policies().cloned().collect())
            .map_err(|error| ApiError::internal("the suggestion does not validate", error))?;
        Ok(analysis::verify(&set, &graph, &cluster))
    })
    .await??;
    Ok(Json(report))
}

/// The query of `/api/impact`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawImpactQuery {
    namespace: Option<String>,
    mode: Option<String>,
    window: Option<String>,
}

/// A connection the policies in force would deny.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeniedJson {
    /// Initiator's node id.
    pub source: String,
    /// Responder's node id.
    pub target: String,
    /// Destination port.
    pub port: u16,
    /// Transport protocol.
    pub protocol: Protocol,
    /// The namespace's direction that denies it: `egress` or `ingress`.
    pub direction: String,
    /// `default-deny`, `peer-not-allowed` or `port-not-allowed`.
    pub reason: String,
    /// The policies that isolate the pod.
    pub isolated_by: Vec<String>,
    /// Connections in the window (at least 1).
    pub connections: u64,
}

/// `GET /api/impact`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Impact {
    /// The namespace.
    pub namespace: String,
    /// The mode asked about.
    pub mode: Mode,
    /// The window, seconds.
    pub window_seconds: u64,
    /// Connections from or to the namespace last seen in the window (an
    /// edge port counts at least once).
    pub flows_total: u64,
    /// Of those, the ones the enforced policies deny in the namespace's
    /// directions (none in observe mode).
    pub flows_denied: u64,
    /// The denied edge ports, most connections first.
    pub denied: Vec<DeniedJson>,
    /// Denied edge ports left out of `denied`.
    pub denied_omitted: usize,
    /// The namespace's `/api/status` entry (null when it has no workload
    /// in the graph).
    pub readiness: Option<NamespaceReadiness>,
}

/// Denied edge ports listed.
pub const MAX_DENIED: usize = 50;

/// `GET /api/impact`.
pub async fn impact(
    State(state): State<AppState>,
    query: Result<Query<RawImpactQuery>, QueryRejection>,
) -> Result<Json<Impact>, ApiError> {
    let Query(raw) = query?;
    let namespace = one_namespace(raw.namespace)?;
    let mode = match raw.mode {
        Some(m) => query::value::<Mode>("mode", &m)?,
        None => return Err(bad("mode", "required")),
    };
    let window = raw
        .window
        .map(|w| {
            humantime::parse_duration(&w)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    bad(
                        "window",
                        format!("{w:?}: expected a duration like 1h or 15m"),
                    )
                })
        })
        .transpose()?
        .unwrap_or(Duration::from_secs(3600));
    let (graph, cluster) = inputs(&state);
    check_namespaces(&BTreeSet::from([namespace.clone()]), &graph, &cluster)?;
    let enforced = state.enforced_policies();
    let view = state.aggregator.view();
    let now = crate::graph_store::unix_now();
    let since = now.saturating_sub(u64::try_from(window.as_nanos()).unwrap_or(u64::MAX));
    let ns = namespace.clone();
    let (total, denied_total, mut denied) =
        blocking(move || -> Result<(u64, u64, Vec<DeniedJson>), ApiError> {
            let set = PolicySet::new(enforced)
                .map_err(|error| ApiError::internal("the enforced set does not validate", error))?;
            let evaluator = Evaluator::new(&set, &cluster);
            let reps = representatives(&view.graph, &cluster);
            let endpoint = |node: &NodeId| match node {
                NodeId::Workload(w) => reps.get(w).map(Endpoint::Pod),
                NodeId::External(ip) => Some(Endpoint::External(*ip)),
            };
            let in_ns = |node: &NodeId| matches!(node, NodeId::Workload(w) if w.namespace == ns);
            let (mut total, mut denied_total, mut denied) = (0, 0, Vec::new());
            for (key, stats) in all_ports(&view) {
                let (from_ns, to_ns) = (in_ns(&key.source), in_ns(&key.target));
                if !(from_ns || to_ns) || stats.last_seen < since {
                    continue;
                }
                let weight = stats.connections.max(1);
                total += weight;
                if mode == Mode::Observe {
                    continue;
                }
                let (Some(source), Some(destination)) =
                    (endpoint(&key.source), endpoint(&key.target))
                else {
                    continue;
                };
                let verdict = evaluator.evaluate(&Flow {
                    source,
                    destination,
                    protocol: key.protocol,
                    port: key.port,
                });
                let denying = [
                    (from_ns, "egress", DirectionJson::from(&verdict.egress)),
                    (to_ns, "ingress", DirectionJson::from(&verdict.ingress)),
                ]
                .into_iter()
                .find(|(ours, _, d)| *ours && d.verdict == "denied");
                if let Some((_, direction, d)) = denying {
                    denied_total += weight;
                    denied.push(DeniedJson {
                        source: key.source.to_string(),
                        target: key.target.to_string(),
                        port: key.port,
                        protocol: key.protocol,
                        direction: direction.to_owned(),
                        reason: d.reason.unwrap_or_default(),
                        isolated_by: d.policies,
                        connections: weight,
                    });
                }
            }
            Ok((total, denied_total, denied))
        })
        .await??;
    denied.sort_by_key(|d| std::cmp::Reverse(d.connections));
    let omitted = denied.len().saturating_sub(MAX_DENIED);
    denied.truncate(MAX_DENIED);
    let readiness = status_report(&state)
        .await?
        .namespaces
        .into_iter()
        .find(|r| r.namespace == namespace);
    Ok(Json(Impact {
        namespace,
        mode,
        window_seconds: window.as_secs(),
        flows_total: total,
        flows_denied: denied_total,
        denied,
        denied_omitted: omitted,
        readiness,
    }))
}
