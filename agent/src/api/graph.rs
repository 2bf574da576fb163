//! The JSON form of the flow graph (`/api/graph`): nodes by id
//! (`namespace/workload`, or the address of an external node) and one edge
//! per (source, target) pair with its ports, for the UI to draw without
//! regrouping.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weir_generator::model::{EdgeStats, FlowGraph, NodeId, Protocol};

use super::record::rfc3339;

/// The whole graph.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphJson {
    /// Workloads first, then external addresses, each in order.
    pub nodes: Vec<NodeJson>,
    /// Ordered by source, then target.
    pub edges: Vec<EdgeJson>,
}

/// A node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeJson {
    /// `namespace/workload`, or the address.
    pub id: String,
    /// `workload` or `external`.
    pub kind: String,
    /// The workload's namespace (null for external nodes).
    pub namespace: Option<String>,
    /// The workload's name (null for external nodes).
    pub workload: Option<String>,
    /// Labels common to the workload's pods.
    pub labels: BTreeMap<String, String>,
    /// Pods seen, by name.
    pub pods: Vec<String>,
}

/// Connections from one node to another, over every port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeJson {
    /// Initiator's node id.
    pub source: String,
    /// Responder's node id.
    pub target: String,
    /// Destination ports, sorted.
    pub ports: Vec<PortJson>,
    /// Packets, both directions, all ports.
    pub packets: u64,
    /// Bytes, both directions, all ports.
    pub bytes: u64,
    /// Connections opened.
    pub connections: u64,
    /// RFC 3339.
    pub first_seen: String,
    /// RFC 3339.
    pub last_seen: String,
}

/// A destination port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortJson {
    /// Port number (0 for ICMP).
    pub port: u16,
    /// Transport protocol.
    pub protocol: Protocol,
}

impl From<&FlowGraph> for GraphJson {
    fn from(graph: &FlowGraph) -> Self {
        let nodes = graph
            .nodes()
            .into_iter()
            .map(|node| match &node {
                NodeId::Workload(w) => {
                    let info = graph.workloads.get(w);
                    NodeJson {
                        id: node.to_string(),
                        kind: "workload".to_owned(),
                        namespace: Some(w.namespace.clone()),
                        workload: Some(w.name.clone()),
                        labels: info.map(|i| i.labels.clone()).unwrap_or_default(),
                        pods: info
                            .map(|i| i.pods.iter().cloned().collect())
                            .unwrap_or_default(),
                    }
                }
                NodeId::External(_) => NodeJson {
                    id: node.to_string(),
                    kind: "external".to_owned(),
                    namespace: None,
                    workload: None,
                    labels: BTreeMap::new(),
                    pods: Vec::new(),
                },
            })
            .collect();

        // Keyed by the ids' NodeIds so the order follows the graph's.
        let mut pairs: BTreeMap<(&NodeId, &NodeId), (Vec<PortJson>, EdgeStats)> = BTreeMap::new();
        for (key, stats) in &graph.edges {
            let (ports, total) = pairs.entry((&key.source, &key.target)).or_default();
            ports.push(PortJson {
                port: key.port,
                protocol: key.protocol,
            });
            total.merge(stats);
        }
        let edges = pairs
            .into_iter()
            .map(|((source, target), (mut ports, total))| {
                ports.sort_unstable();
                EdgeJson {
                    source: source.to_string(),
                    target: target.to_string(),
                    ports,
                    packets: total.packets,
                    bytes: total.bytes,
                    connections: total.connections,
                    first_seen: rfc3339(total.first_seen),
                    last_seen: rfc3339(total.last_seen),
                }
            })
            .collect();
        Self { nodes, edges }
    }
}
