//! The flow graph as `GET /api/graph` serves it ([`GraphJson`]): nodes by id
//! (`namespace/workload`, or the address of an external node) and one edge
//! per (source, target) pair with its ports, for the UI to draw without
//! regrouping. Dropped connections are drawn too (they are kept apart from
//! the learned graph), so an edge's `verdict` is the worst seen on it.
//!
//! Filters (`namespace`, `protocol`, `port`, `verdict`, `since`) select
//! ports of edges; an edge without a selected port is left out, and its
//! totals are those of its selected ports.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
};
use serde::Deserialize;
use weir_generator::{
    datapath::Mode,
    model::{EdgeKey, EdgeStats, NodeId, Protocol, VerdictCounts},
};

use super::{
    AppState,
    error::ApiError,
    query,
    wire::{EdgeJson, EdgeVerdict, GraphJson, NodeJson, PortJson},
};
use crate::{aggregator::GraphView, timestamp::rfc3339};

impl EdgeVerdict {
    /// The worst verdict counted. Ports counted before verdicts were (an
    /// old store) were let through: forwarded.
    #[must_use]
    pub fn worst(counts: &VerdictCounts) -> Self {
        if counts.dropped > 0 {
            Self::Dropped
        } else if counts.audit > 0 {
            Self::Audit
        } else {
            Self::Forwarded
        }
    }

    /// Whether connections of this verdict were counted.
    fn seen_in(self, counts: &VerdictCounts) -> bool {
        match self {
            Self::Forwarded => counts.forwarded > 0 || counts.is_zero(),
            Self::Audit => counts.audit > 0,
            Self::Dropped => counts.dropped > 0,
        }
    }
}

impl PortJson {
    /// A port with its counters.
    #[must_use]
    pub fn new(protocol: Protocol, port: u16, stats: &EdgeStats) -> Self {
        Self {
            port,
            protocol,
            connections: stats.connections,
            packets: stats.packets,
            bytes: stats.bytes,
            first_seen: rfc3339(stats.first_seen),
            last_seen: rfc3339(stats.last_seen),
            verdicts: stats.verdicts,
        }
    }
}

/// `protocol=`: a protocol, where `ICMP` means both ICMP versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolFilter {
    /// Exactly this protocol.
    Exact(Protocol),
    /// ICMPv4 or ICMPv6.
    AnyIcmp,
}

impl ProtocolFilter {
    fn matches(self, protocol: Protocol) -> bool {
        match self {
            Self::Exact(p) => p == protocol,
            Self::AnyIcmp => matches!(protocol, Protocol::Icmp | Protocol::IcmpV6),
        }
    }
}

/// The query of `/api/graph` as sent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGraphQuery {
    namespace: Option<String>,
    protocol: Option<String>,
    port: Option<String>,
    verdict: Option<String>,
    since: Option<String>,
}

/// Which part of the graph a client wants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GraphFilter {
    /// An edge matches when either end is a workload of one of these.
    pub namespaces: Option<BTreeSet<String>>,
    /// Ports of this protocol.
    pub protocol: Option<ProtocolFilter>,
    /// This destination port.
    pub port: Option<u16>,
    /// Ports with connections of this verdict.
    pub verdict: Option<EdgeVerdict>,
    /// Ports last seen at or after this time, Unix ns.
    pub since: Option<u64>,
}

impl GraphFilter {
    /// Check every parameter; `now` is Unix ns.
    ///
    /// # Errors
    /// [`ApiError::BadParameter`] naming the first bad one.
    pub fn parse(raw: RawGraphQuery, now: u64) -> Result<Self, ApiError> {
        // Checked in this order: the first bad one is named.
        let namespaces = query::namespaces(raw.namespace)?;
        let protocol = raw
            .protocol
            .map(|p| {
                if p.eq_ignore_ascii_case("icmp") {
                    Ok(ProtocolFilter::AnyIcmp)
                } else {
                    query::value("protocol", &p).map(ProtocolFilter::Exact)
                }
            })
            .transpose()?;
        Ok(Self {
            namespaces,
            protocol,
            port: query::port(raw.port)?,
            verdict: query::optional("verdict", raw.verdict)?,
            since: query::since(raw.since, now)?,
        })
    }

    fn selects_ports(&self) -> bool {
        self.protocol.is_some()
            || self.port.is_some()
            || self.verdict.is_some()
            || self.since.is_some()
    }

    fn node_in_namespaces(&self, node: &NodeId) -> bool {
        match (&self.namespaces, node) {
            (None, _) => true,
            (Some(set), NodeId::Workload(w)) => set.contains(&w.namespace),
            (Some(_), NodeId::External(_)) => false,
        }
    }

    fn port_matches(&self, key: &EdgeKey, stats: &EdgeStats) -> bool {
        self.protocol.is_none_or(|p| p.matches(key.protocol))
            && self
                .port
                .is_none_or(|p| key.protocol.has_ports() && p == key.port)
            && self.verdict.is_none_or(|v| v.seen_in(&stats.verdicts))
            && self.since.is_none_or(|t| stats.last_seen >= t)
    }
}

/// What the graph alone does not know: namespace modes and host names.
pub struct Decor<'a> {
    /// Namespace -> its mode.
    pub mode_of: &'a dyn Fn(&str) -> Mode,
    /// A host name for an external address.
    pub name_of: &'a dyn Fn(IpAddr) -> Option<String>,
}

impl Decor<'_> {
    /// The JSON of a node; `graph` gives a workload's labels and pods.
    #[must_use]
    pub fn node(&self, node: &NodeId, view: &GraphView) -> NodeJson {
        match node {
            NodeId::Workload(w) => {
                let info = view.graph.workloads.get(w);
                NodeJson {
                    id: node.to_string(),
                    kind: "workload".to_owned(),
                    group: w.namespace.clone(),
                    name: w.name.clone(),
                    mode: Some((self.mode_of)(&w.namespace)),
                    namespace: Some(w.namespace.clone()),
                    workload: Some(w.name.clone()),
                    labels: info.map(|i| i.labels.clone()).unwrap_or_default(),
                    pods: info
                        .map(|i| i.pods.iter().cloned().collect())
                        .unwrap_or_default(),
                }
            }
            NodeId::External(ip) => NodeJson {
                id: node.to_string(),
                kind: "external".to_owned(),
                group: "external".to_owned(),
                name: (self.name_of)(*ip).unwrap_or_else(|| ip.to_string()),
                mode: None,
                namespace: None,
                workload: None,
                labels: BTreeMap::new(),
                pods: Vec::new(),
            },
        }
    }
}

/// Every edge key with its counters, learned and dropped together.
#[must_use]
pub fn all_ports(view: &GraphView) -> BTreeMap<&EdgeKey, EdgeStats> {
    let mut all: BTreeMap<&EdgeKey, EdgeStats> =
        view.graph.edges.iter().map(|(k, s)| (k, *s)).collect();
    for (key, stats) in &view.drops {
        all.entry(key).or_default().merge(stats);
    }
    all
}

/// One (source, target) pair's edge from its ports.
#[must_use]
pub fn edge_json(source: &NodeId, target: &NodeId, ports: &[(&EdgeKey, EdgeStats)]) -> EdgeJson {
    let mut total = EdgeStats::default();
    let mut json: Vec<PortJson> = ports
        .iter()
        .map(|(key, stats)| {
            total.merge(stats);
            PortJson::new(key.protocol, key.port, stats)
        })
        .collect();
    json.sort_by_key(|p| (p.port, p.protocol));
    let verdict = ports
        .iter()
        .map(|(_, s)| EdgeVerdict::worst(&s.verdicts))
        .max()
        .unwrap_or_default();
    EdgeJson {
        id: format!("{source}->{target}"),
        source: source.to_string(),
        target: target.to_string(),
        verdict,
        ports: json,
        packets: total.packets,
        bytes: total.bytes,
        connections: total.connections,
        first_seen: rfc3339(total.first_seen),
        last_seen: rfc3339(total.last_seen),
    }
}

/// The graph as the UI draws it.
#[must_use]
pub fn build(view: &GraphView, decor: &Decor<'_>, filter: &GraphFilter, now: u64) -> GraphJson {
    let mut pairs: BTreeMap<(&NodeId, &NodeId), Vec<(&EdgeKey, EdgeStats)>> = BTreeMap::new();
    for (key, stats) in all_ports(view) {
        if (filter.node_in_namespaces(&key.source) || filter.node_in_namespaces(&key.target))
            && filter.port_matches(key, &stats)
        {
            pairs
                .entry((&key.source, &key.target))
                .or_default()
                .push((key, stats));
        }
    }
    let mut nodes: BTreeSet<NodeId> = pairs
        .keys()
        .flat_map(|(s, t)| [(*s).clone(), (*t).clone()])
        .collect();
    if !filter.selects_ports() {
        nodes.extend(
            view.graph
                .nodes()
                .into_iter()
                .filter(|n| filter.node_in_namespaces(n)),
        );
    }
    GraphJson {
        version: view.version,
        generated_at: rfc3339(now),
        nodes: nodes.iter().map(|n| decor.node(n, view)).collect(),
        edges: pairs
            .iter()
            .map(|((s, t), ports)| edge_json(s, t, ports))
            .collect(),
        incomplete: false,
        degraded: Vec::new(),
    }
}

/// `GET /api/graph`.
pub async fn graph(
    State(state): State<AppState>,
    query: Result<Query<RawGraphQuery>, QueryRejection>,
) -> Result<Json<GraphJson>, ApiError> {
    let Query(raw) = query?;
    let now = crate::graph_store::unix_now();
    let filter = GraphFilter::parse(raw, now)?;
    let view = state.aggregator.view();
    let modes = state.modes();
    let names = state.host_names();
    let decor = Decor {
        mode_of: &|ns| modes.of(ns),
        name_of: &|ip| names.get(&ip).cloned(),
    };
    let mut json = build(&view, &decor, &filter, now);
    json.degraded = state.health.episodes(filter.since);
    json.incomplete = json.degraded.iter().any(|e| e.incomplete);
    Ok(Json(json))
}
