//! What the UI shows for one node or one edge:
//!
//! - `GET /api/edge?source=ID&target=ID`: the edge's ports with their
//!   counters, the pods at both ends, its recent flow records, and per port
//!   which enforced policy rule allows it or why it is denied, judged by
//!   the generator's evaluator against the enforced policy set, with the
//!   effect the namespaces' modes give the verdict;
//! - `GET /api/node?id=ID`: the node, its pods (addresses, labels), the
//!   ports it served and its edges in and out.

use std::{collections::BTreeSet, net::IpAddr, sync::Arc};

use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
};
use serde::Deserialize;
use weir_generator::{
    cluster::{Cluster, ClusterPod},
    datapath::Mode,
    eval::{DirectionVerdict, Endpoint, Evaluator, Flow, PolicySet},
    model::{NodeId, PodMeta, Protocol, WorkloadRef},
};

use super::{
    AppState,
    error::ApiError,
    graph::{self, Decor},
    query,
    wire::{
        DirectionCheck, EdgeDetails, EdgeVerdict, FlowJson, Modes, NodeDetails, NodeEdge,
        NodeSummary, PodJson, PortPolicy, ServedPort,
    },
};
use crate::{
    aggregator::{FlowRecord, GraphView},
    flow::Initiator,
    learn::analysis::representatives,
};

/// Flow records an edge's details carry.
pub const RECENT_FLOWS: usize = 20;

/// A node id as the graph writes it: `namespace/workload` or an address.
/// Workloads are looked up in the graph (the id does not say the kind).
fn parse_node(id: &str, view: &GraphView) -> Option<NodeId> {
    if let Ok(ip) = id.parse::<IpAddr>() {
        return Some(NodeId::External(ip));
    }
    let (namespace, name) = id.split_once('/')?;
    let known = |w: &WorkloadRef| w.namespace == namespace && w.name == name;
    view.graph
        .workloads
        .keys()
        .find(|w| known(w))
        .or_else(|| {
            view.drops
                .keys()
                .flat_map(|k| [&k.source, &k.target])
                .find_map(|n| match n {
                    NodeId::Workload(w) if known(w) => Some(w),
                    _ => None,
                })
        })
        .cloned()
        .map(NodeId::Workload)
}

/// The query of `/api/edge`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEdgeQuery {
    source: Option<String>,
    target: Option<String>,
}

impl DirectionCheck {
    fn new(verdict: &DirectionVerdict, mode: Option<Mode>) -> Self {
        let mut check = Self {
            verdict: String::new(),
            mode,
            effect: EdgeVerdict::Forwarded,
            allowed_by: Vec::new(),
            rules: Vec::new(),
            reason: None,
            isolated_by: Vec::new(),
        };
        match verdict {
            DirectionVerdict::NotApplicable => "not-applicable".clone_into(&mut check.verdict),
            DirectionVerdict::NotIsolated => "not-isolated".clone_into(&mut check.verdict),
            DirectionVerdict::Allowed { rules } => {
                "allowed".clone_into(&mut check.verdict);
                let policies: BTreeSet<String> =
                    rules.iter().map(|r| r.policy.to_string()).collect();
                check.allowed_by = policies.into_iter().collect();
                check.rules = rules.iter().map(ToString::to_string).collect();
            }
            DirectionVerdict::Denied {
                isolated_by,
                reason,
            } => {
                "denied".clone_into(&mut check.verdict);
                check.reason = Some(reason.as_str().to_owned());
                check.isolated_by = isolated_by.iter().map(ToString::to_string).collect();
                check.effect = match mode {
                    Some(Mode::Enforce) => EdgeVerdict::Dropped,
                    Some(Mode::Audit) => EdgeVerdict::Audit,
                    Some(Mode::Observe) | None => EdgeVerdict::Forwarded,
                };
            }
        }
        check
    }
}

/// The enforced policy set and the namespaces' modes.
fn enforced(state: &AppState) -> Result<(PolicySet, Modes), ApiError> {
    let policies = state.enforced_policies();
    // The enforcer only holds sets that validated.
    let set = PolicySet::new(policies)
        .map_err(|error| ApiError::internal("the enforced set does not validate", error))?;
    Ok((set, state.modes()))
}

fn node_matches(node: &NodeId, pod: Option<&Arc<PodMeta>>, ip: IpAddr) -> bool {
    match (node, pod) {
        (NodeId::Workload(w), Some(pod)) => &pod.workload == w,
        (NodeId::External(addr), None) => *addr == ip,
        _ => false,
    }
}

fn record_on_edge(r: &FlowRecord, source: &NodeId, target: &NodeId) -> bool {
    r.initiator != Initiator::Unknown
        && node_matches(source, r.source_pod.as_ref(), r.source.ip())
        && node_matches(target, r.destination_pod.as_ref(), r.destination.ip())
}

fn pods_of(node: &NodeId, view: &GraphView) -> Vec<String> {
    match node {
        NodeId::Workload(w) => view
            .graph
            .workloads
            .get(w)
            .map(|i| i.pods.iter().cloned().collect())
            .unwrap_or_default(),
        NodeId::External(_) => Vec::new(),
    }
}

/// The policy verdict of every port of an edge.
#[must_use]
pub fn explain(
    set: &PolicySet,
    cluster: &Cluster,
    view: &GraphView,
    modes: &Modes,
    source: &NodeId,
    target: &NodeId,
    ports: &[(Protocol, u16)],
) -> Vec<PortPolicy> {
    let evaluator = Evaluator::new(set, cluster);
    let reps = representatives(&view.graph, cluster);
    let endpoint = |node: &NodeId| -> Option<Endpoint<'_>> {
        match node {
            NodeId::Workload(w) => reps.get(w).map(Endpoint::Pod),
            NodeId::External(ip) => Some(Endpoint::External(*ip)),
        }
    };
    let mode = |node: &NodeId| match node {
        NodeId::Workload(w) => Some(modes.of(&w.namespace)),
        NodeId::External(_) => None,
    };
    let (Some(from), Some(to)) = (endpoint(source), endpoint(target)) else {
        return Vec::new();
    };
    ports
        .iter()
        .map(|&(protocol, port)| {
            let verdict = evaluator.evaluate(&Flow {
                source: from,
                destination: to,
                protocol,
                port,
            });
            let egress = DirectionCheck::new(&verdict.egress, mode(source));
            let ingress = DirectionCheck::new(&verdict.ingress, mode(target));
            PortPolicy {
                port,
                protocol,
                verdict: if verdict.allowed() {
                    "allowed"
                } else {
                    "denied"
                }
                .to_owned(),
                effect: egress.effect.max(ingress.effect),
                egress,
                ingress,
            }
        })
        .collect()
}

/// `GET /api/edge`.
pub async fn edge(
    State(state): State<AppState>,
    query: Result<Query<RawEdgeQuery>, QueryRejection>,
) -> Result<Json<EdgeDetails>, ApiError> {
    let Query(raw) = query?;
    let source_id = query::required("source", raw.source)?;
    let target_id = query::required("target", raw.target)?;
    let view = state.aggregator.view();
    let id = format!("{source_id}->{target_id}");
    let not_found = || ApiError::NotInGraph {
        what: "edge",
        id: id.clone(),
    };
    let source = parse_node(&source_id, &view).ok_or_else(not_found)?;
    let target = parse_node(&target_id, &view).ok_or_else(not_found)?;
    let ports: Vec<_> = graph::all_ports(&view)
        .into_iter()
        .filter(|(k, _)| k.source == source && k.target == target)
        .collect();
    if ports.is_empty() {
        return Err(not_found());
    }
    let summary = graph::edge_json(&source, &target, &ports);
    let keys: Vec<(Protocol, u16)> = ports.iter().map(|(k, _)| (k.protocol, k.port)).collect();
    let (set, modes) = enforced(&state)?;
    let cluster = state.cluster();
    let mut recent = state
        .aggregator
        .recent(RECENT_FLOWS, |r| record_on_edge(r, &source, &target));
    recent.reverse();
    let source_pods = pods_of(&source, &view);
    let target_pods = pods_of(&target, &view);
    let policy = super::learn::blocking(move || {
        explain(&set, &cluster, &view, &modes, &source, &target, &keys)
    })
    .await?;
    Ok(Json(EdgeDetails {
        id,
        source_pods,
        target_pods,
        source: summary.source,
        target: summary.target,
        verdict: summary.verdict,
        ports: summary.ports,
        recent_flows: recent.iter().map(|r| FlowJson::from(r.as_ref())).collect(),
        policy,
    }))
}

/// The query of `/api/node`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNodeQuery {
    id: Option<String>,
}

fn pods_json(node: &NodeId, view: &GraphView, cluster: &Cluster) -> Vec<PodJson> {
    let NodeId::Workload(w) = node else {
        return Vec::new();
    };
    let live: Vec<&ClusterPod> = cluster
        .pods
        .iter()
        .filter(|p| &p.meta.workload == w)
        .collect();
    let mut names: BTreeSet<&String> = live.iter().map(|p| &p.meta.name).collect();
    let info = view.graph.workloads.get(w);
    if let Some(info) = info {
        names.extend(info.pods.iter());
    }
    names
        .into_iter()
        .map(|name| match live.iter().find(|p| &p.meta.name == name) {
            Some(pod) => PodJson {
                name: name.clone(),
                ips: pod.meta.ips.clone(),
                labels: pod.meta.labels.clone(),
            },
            None => PodJson {
                name: name.clone(),
                ips: Vec::new(),
                labels: info.map(|i| i.labels.clone()).unwrap_or_default(),
            },
        })
        .collect()
}

/// `GET /api/node`.
pub async fn node(
    State(state): State<AppState>,
    query: Result<Query<RawNodeQuery>, QueryRejection>,
) -> Result<Json<NodeDetails>, ApiError> {
    let Query(raw) = query?;
    let id = query::required("id", raw.id)?;
    let view = state.aggregator.view();
    let not_found = || ApiError::NotInGraph {
        what: "node",
        id: id.clone(),
    };
    let node = parse_node(&id, &view).ok_or_else(not_found)?;
    let ports = graph::all_ports(&view);
    let touches = ports.keys().any(|k| k.source == node || k.target == node);
    if !touches && !matches!(&node, NodeId::Workload(w) if view.graph.workloads.contains_key(w)) {
        return Err(not_found());
    }
    let modes = state.modes();
    let names = state.host_names();
    let decor = Decor {
        mode_of: &|ns| modes.of(ns),
        name_of: &|ip| names.get(&ip).cloned(),
    };
    let json = decor.node(&node, &view);
    let mut served = BTreeSet::new();
    let mut pairs: std::collections::BTreeMap<(bool, String), Vec<_>> =
        std::collections::BTreeMap::new();
    for (key, stats) in &ports {
        if key.target == node {
            served.insert(ServedPort {
                port: key.port,
                protocol: key.protocol,
            });
            pairs
                .entry((true, key.source.to_string()))
                .or_default()
                .push((*key, *stats));
        }
        if key.source == node {
            pairs
                .entry((false, key.target.to_string()))
                .or_default()
                .push((*key, *stats));
        }
    }
    let (mut edges_in, mut edges_out) = (Vec::new(), Vec::new());
    for ((incoming, peer), ports) in pairs {
        let first = ports[0].0;
        let summary = graph::edge_json(&first.source, &first.target, &ports);
        let edge = NodeEdge {
            id: summary.id,
            peer,
            ports: ports
                .iter()
                .map(|(k, _)| ServedPort {
                    port: k.port,
                    protocol: k.protocol,
                })
                .collect(),
            verdict: summary.verdict,
            connections: summary.connections,
        };
        if incoming {
            edges_in.push(edge);
        } else {
            edges_out.push(edge);
        }
    }
    let cluster = state.cluster();
    Ok(Json(NodeDetails {
        pods: pods_json(&node, &view, &cluster),
        node: NodeSummary {
            id: json.id,
            kind: json.kind,
            group: json.group,
            name: json.name,
            namespace: json.namespace,
            workload: json.workload,
            workload_kind: match &node {
                NodeId::Workload(w) => Some(w.kind.to_string()),
                NodeId::External(_) => None,
            },
            labels: json.labels,
            mode: json.mode,
        },
        ports_served: served.into_iter().collect(),
        edges_in,
        edges_out,
    }))
}
