//! The flow graph as `GET /api/graph` serves it ([`GraphJson`]): nodes by id
//! (`namespace/workload`, or the address of an external node) and one edge
//! per (source, target) pair with its ports, for the UI to draw without
//! regrouping. Dropped connections are drawn too (they are kept apart from
//! the learned graph), so an edge's `verdict` is the worst seen on it.
//!
//! Filters (`namespace`, `protocol`, `port`, `verdict`, `since`) select
//! ports of edges; an edge without a selected port is left out, and its
//! totals are those of its selected ports.
//!
//! External addresses that flows carried a DNS name for are drawn as one
//! node per name (id: the name; `addresses` lists them with their first
//! and last seen), and their edges merge into the name's; an address with
//! several names goes under the first. Addresses without a name stay
//! nodes of their own.

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
    wire::{EdgeJson, EdgeVerdict, GraphJson, NameAddressJson, NodeJson, PortJson},
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
                    addresses: Vec::new(),
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
                addresses: Vec::new(),
            },
        }
    }

    /// The JSON of the node standing for the DNS name `name`.
    #[must_use]
    pub fn name_node(name: &str, view: &GraphView) -> NodeJson {
        NodeJson {
            id: name.to_owned(),
            kind: "external".to_owned(),
            group: "external".to_owned(),
            name: name.to_owned(),
            mode: None,
            namespace: None,
            workload: None,
            labels: BTreeMap::new(),
            pods: Vec::new(),
            addresses: view
                .graph
                .external_names
                .get(name)
                .into_iter()
                .flatten()
                .map(|(ip, seen)| NameAddressJson {
                    address: *ip,
                    first_seen: rfc3339(seen.first_seen),
                    last_seen: rfc3339(seen.last_seen),
                })
                .collect(),
        }
    }
}

/// A node as drawn: a graph node, or the DNS name its address goes under.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Drawn<'a> {
    Node(NodeId),
    Name(&'a str),
}

impl std::fmt::Display for Drawn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Node(n) => n.fmt(f),
            Self::Name(name) => f.write_str(name),
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

/// The edge between two drawn nodes: [`edge_json`], with the ports of
/// several addresses of a name added up per port.
fn drawn_edge_json(
    source: &Drawn<'_>,
    target: &Drawn<'_>,
    ports: &[(&EdgeKey, EdgeStats)],
) -> EdgeJson {
    let mut by_port: BTreeMap<(Protocol, u16), (&EdgeKey, EdgeStats)> = BTreeMap::new();
    for (key, stats) in ports {
        by_port
            .entry((key.protocol, key.port))
            .or_insert((*key, EdgeStats::default()))
            .1
            .merge(stats);
    }
    let merged: Vec<(&EdgeKey, EdgeStats)> = by_port.into_values().collect();
    let mut json = edge_json(&ports[0].0.source, &ports[0].0.target, &merged);
    json.source = source.to_string();
    json.target = target.to_string();
    json.id = format!("{}->{}", json.source, json.target);
    json
}

/// The graph as the UI draws it.
#[must_use]
pub fn build(view: &GraphView, decor: &Decor<'_>, filter: &GraphFilter, now: u64) -> GraphJson {
    let names = view.graph.names_by_address();
    let drawn = |node: &NodeId| match node {
        NodeId::External(ip) => names
            .get(ip)
            .and_then(|n| n.first())
            .map_or_else(|| Drawn::Node(node.clone()), |name| Drawn::Name(name)),
        NodeId::Workload(_) => Drawn::Node(node.clone()),
    };
    let mut pairs: BTreeMap<(Drawn<'_>, Drawn<'_>), Vec<(&EdgeKey, EdgeStats)>> = BTreeMap::new();
    for (key, stats) in all_ports(view) {
        if (filter.node_in_namespaces(&key.source) || filter.node_in_namespaces(&key.target))
            && filter.port_matches(key, &stats)
        {
            pairs
                .entry((drawn(&key.source), drawn(&key.target)))
                .or_default()
                .push((key, stats));
        }
    }
    let mut nodes: BTreeSet<Drawn<'_>> = pairs
        .keys()
        .flat_map(|(s, t)| [s.clone(), t.clone()])
        .collect();
    if !filter.selects_ports() {
        nodes.extend(
            view.graph
                .nodes()
                .iter()
                .filter(|n| filter.node_in_namespaces(n))
                .map(drawn),
        );
    }
    GraphJson {
        version: view.version,
        generated_at: rfc3339(now),
        nodes: nodes
            .iter()
            .map(|n| match n {
                Drawn::Node(n) => decor.node(n, view),
                Drawn::Name(name) => Decor::name_node(name, view),
            })
            .collect(),
        edges: pairs
            .iter()
            .map(|((s, t), ports)| drawn_edge_json(s, t, ports))
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

#[cfg(test)]
mod tests {
    use weir_generator::model::{WorkloadKind, WorkloadRef};

    use super::*;

    #[test]
    fn addresses_with_a_name_are_one_node_and_their_edges_merge() {
        let web = WorkloadRef::new("shop", WorkloadKind::Deployment, "web");
        let mut view = GraphView::default();
        let mut out = |to: &str, port: u16, at: u64| {
            view.graph.record(
                EdgeKey {
                    source: NodeId::Workload(web.clone()),
                    target: NodeId::External(to.parse().unwrap()),
                    protocol: Protocol::Tcp,
                    port,
                },
                &EdgeStats {
                    connections: 1,
                    packets: 2,
                    first_seen: at,
                    last_seen: at + 1,
                    ..EdgeStats::default()
                },
            );
        };
        out("203.0.113.10", 443, 1_000_000_000);
        out("203.0.113.11", 443, 2_000_000_000);
        out("198.51.100.1", 80, 3_000_000_000);
        for (ip, at) in [
            ("203.0.113.10", 1_000_000_000),
            ("203.0.113.11", 2_000_000_000),
        ] {
            view.graph.name_address(
                "api.payments.example",
                ip.parse().unwrap(),
                &web,
                at,
                at + 1,
            );
        }
        let decor = Decor {
            mode_of: &|_| Mode::Observe,
            name_of: &|_| None,
        };
        let json = build(&view, &decor, &GraphFilter::default(), 0);
        let ids: Vec<&str> = json.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["shop/web", "198.51.100.1", "api.payments.example"]);
        let name = &json.nodes[2];
        assert_eq!(
            (name.kind.as_str(), name.name.as_str()),
            ("external", "api.payments.example")
        );
        assert_eq!(
            name.addresses
                .iter()
                .map(|a| (a.address.to_string(), a.first_seen.as_str()))
                .collect::<Vec<_>>(),
            [
                ("203.0.113.10".to_owned(), "1970-01-01T00:00:01.000000000Z"),
                ("203.0.113.11".to_owned(), "1970-01-01T00:00:02.000000000Z")
            ]
        );
        let edge = json
            .edges
            .iter()
            .find(|e| e.target == "api.payments.example")
            .expect("the edge to the name");
        assert_eq!(edge.id, "shop/web->api.payments.example");
        assert_eq!(edge.connections, 2);
        assert_eq!(edge.ports.len(), 1, "one port, both addresses' counters");
        assert_eq!((edge.ports[0].port, edge.ports[0].connections), (443, 2));
        assert_eq!(json.edges.len(), 2);
    }
}
