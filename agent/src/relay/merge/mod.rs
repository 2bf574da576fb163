//! The nodes' contributions merged into one view, without counting a
//! connection twice (pure: no I/O, no clock).
//!
//! A connection between pods on two nodes is counted by both: once from
//! its initiator's side (egress), once from its responder's (ingress).
//! Counters are merged per (edge, initiator's node, responder's node):
//!
//! - the side seen from the initiator (or from both ends, when they share
//!   a node) gives connections, packets and bytes when present, else the
//!   responder's side: never their sum;
//! - verdicts stay per side: egress is judged at the initiator's node,
//!   ingress at the responder's, so the responder's audits and drops count
//!   beside the initiator's verdicts (as one agent holding both ends
//!   counts them: the egress verdict, and the ingress one when it is not
//!   forwarded);
//! - a connection the responder's ingress dropped is not learned, though
//!   the initiator's egress let it out: it comes off the initiator's side
//!   and is a drop, as one agent holding both ends counts it;
//! - first seen is the earliest of the sides, last seen the latest;
//! - different node pairs of one edge add up (different connections).
//!
//! Sides counted before their node kept sides (`unknown`) are taken as
//! they are, under (edge, reporting node) and counted in
//! [`Merged::unknown_sides`]. A node listed twice counts once: its latest
//! contribution (by `generated_at`) wins, so replaying one changes nothing.
//!
//! The cluster the generator selects in (namespaces, pods, Services) is the
//! union of the contributions; where two list the same namespace, pod or
//! Service, the latest contribution's wins. The names of external
//! addresses are the union too, each (name, address) seen from the
//! earliest first packet to the latest last one, by every workload that
//! named it on any node.

use std::collections::{BTreeMap, btree_map::Entry};

use weir_generator::model::{EdgeKey, EdgeStats, FlowGraph, NodeId, PodMeta};

use crate::{
    aggregator::GraphView,
    api::wire::{ContributedEdgeJson, ContributionJson, EdgeEndJson, SeenFromJson, SideJson},
    resolve::{Inventory, LocalPod},
};

/// The merged view.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Merged {
    /// The learned graph and the drops of every node (version 0: the
    /// aggregator holding it gives it one).
    pub view: GraphView,
    /// The cluster as the nodes know it: every namespace with its labels,
    /// the pods each node answers for (on that node), the Services.
    pub inventory: Inventory,
    /// Sides counted before their node kept sides: they may count a
    /// cross-node connection twice.
    pub unknown_sides: usize,
}

/// Who saw a side: the pair of nodes a side is merged under.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ends {
    Known {
        initiator: Option<String>,
        responder: Option<String>,
    },
    /// A side without ends, kept apart under the node that reported it.
    Unknown { reporter: String },
}

/// The sides of one (edge, ends): at most one of each.
#[derive(Clone, Copy, Debug, Default)]
struct Pair {
    /// The initiator's side, or the side of both ends (or an unknown one).
    front: Option<(SeenFromJson, EdgeStats)>,
    /// The responder's side.
    back: Option<EdgeStats>,
}

impl Pair {
    fn add(&mut self, side: &SideJson) {
        let stats = stats(side);
        // Two fronts (or backs) of one pair would mean two nodes claim the
        // same end: keep both counts rather than drop one silently.
        let put = |slot: &mut Option<EdgeStats>| match slot {
            Some(held) => held.merge(&stats),
            None => *slot = Some(stats),
        };
        match side.seen_from {
            SeenFromJson::Responder => put(&mut self.back),
            seen => {
                let mut front = self.front.map(|(_, s)| s);
                put(&mut front);
                self.front = front.map(|s| (seen, s));
            }
        }
    }

    /// The pair counted once.
    fn resolve(self) -> EdgeStats {
        match (self.front, self.back) {
            (Some((seen, front)), Some(back)) => {
                let mut merged = front;
                if seen == SeenFromJson::Initiator {
                    // The responder judged the ingress: what it audited or
                    // dropped counts beside the egress verdict, as an agent
                    // holding both ends counts it.
                    merged.verdicts.audit += back.verdicts.audit;
                    merged.verdicts.dropped += back.verdicts.dropped;
                }
                merged.first_seen = earliest(front.first_seen, back.first_seen);
                merged.last_seen = front.last_seen.max(back.last_seen);
                merged
            }
            (Some((_, only)), None) | (None, Some(only)) => only,
            (None, None) => EdgeStats::default(),
        }
    }
}

/// The earlier of two times, 0 meaning unknown.
fn earliest(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, t) | (t, 0) => t,
        (a, b) => a.min(b),
    }
}

fn stats(side: &SideJson) -> EdgeStats {
    EdgeStats {
        packets: side.packets,
        bytes: side.bytes,
        connections: side.connections,
        first_seen: side.first_seen_ns,
        last_seen: side.last_seen_ns,
        verdicts: side.verdicts,
    }
}

fn node(end: &EdgeEndJson) -> NodeId {
    match end {
        EdgeEndJson::Workload(w) => NodeId::Workload(w.clone()),
        EdgeEndJson::External(ip) => NodeId::External(*ip),
    }
}

fn edge_key(edge: &ContributedEdgeJson) -> EdgeKey {
    EdgeKey {
        source: node(&edge.source),
        target: node(&edge.target),
        protocol: edge.protocol,
        port: edge.port,
    }
}

/// Fold `edges` of `reporter` into `pairs`; how many sides were unknown.
fn collect(
    pairs: &mut BTreeMap<EdgeKey, BTreeMap<Ends, Pair>>,
    reporter: &str,
    edges: &[ContributedEdgeJson],
) -> usize {
    let mut unknown = 0;
    for edge in edges {
        let by_ends = pairs.entry(edge_key(edge)).or_default();
        for side in &edge.sides {
            let ends = if side.seen_from == SeenFromJson::Unknown {
                unknown += 1;
                Ends::Unknown {
                    reporter: reporter.to_owned(),
                }
            } else {
                Ends::Known {
                    initiator: side.initiator_node.clone(),
                    responder: side.responder_node.clone(),
                }
            };
            by_ends.entry(ends).or_default().add(side);
        }
    }
    unknown
}

fn resolve(pairs: BTreeMap<EdgeKey, BTreeMap<Ends, Pair>>) -> BTreeMap<EdgeKey, EdgeStats> {
    pairs
        .into_iter()
        .map(|(key, by_ends)| {
            let mut total = EdgeStats::default();
            for pair in by_ends.into_values() {
                total.merge(&pair.resolve());
            }
            (key, total)
        })
        .collect()
}

/// Take out of the learned edges what their responders' ingress dropped.
///
/// A cross-node connection let out by its initiator's egress and dropped by
/// its responder's ingress is learned on the initiator's node (it saw
/// nothing dropped) and a drop on the responder's. One agent holding both
/// ends counts it as dropped only, and so must the merge: dropped traffic
/// is never learned. The responder's dropped connections come off the
/// initiator's side of the same node pair; a side left with no connection
/// goes.
fn forget_dropped_at_ingress(
    edges: &mut BTreeMap<EdgeKey, BTreeMap<Ends, Pair>>,
    drops: &BTreeMap<EdgeKey, BTreeMap<Ends, Pair>>,
) {
    for (key, by_ends) in drops {
        let Some(learned) = edges.get_mut(key) else {
            continue;
        };
        for (ends, dropped) in by_ends {
            let (Some(back), None) = (dropped.back, dropped.front) else {
                continue;
            };
            let Some(pair) = learned.get_mut(ends) else {
                continue;
            };
            let Some((seen, front)) = pair.front.as_mut() else {
                continue;
            };
            if *seen != SeenFromJson::Initiator {
                continue;
            }
            front.connections = front.connections.saturating_sub(back.connections);
            front.packets = front.packets.saturating_sub(back.packets);
            front.bytes = front.bytes.saturating_sub(back.bytes);
            let v = &mut front.verdicts;
            v.forwarded = v.forwarded.saturating_sub(back.connections);
            if front.connections == 0 {
                pair.front = None;
            }
        }
        learned.retain(|_, pair| pair.front.is_some() || pair.back.is_some());
        if learned.is_empty() {
            edges.remove(key);
        }
    }
}

/// Merge the contributions (in any order) into one view.
pub fn merge<'a>(contributions: impl IntoIterator<Item = &'a ContributionJson>) -> Merged {
    // One contribution per node, the latest; then oldest first, so the
    // latest wins where two list the same namespace, pod or Service.
    let mut latest: BTreeMap<&str, &ContributionJson> = BTreeMap::new();
    for c in contributions {
        match latest.entry(c.node.as_str()) {
            Entry::Vacant(e) => {
                e.insert(c);
            }
            Entry::Occupied(mut e) => {
                if (&c.generated_at, c.version) >= (&e.get().generated_at, e.get().version) {
                    e.insert(c);
                }
            }
        }
    }
    let mut ordered: Vec<&ContributionJson> = latest.into_values().collect();
    ordered.sort_by(|a, b| (&a.generated_at, &a.node).cmp(&(&b.generated_at, &b.node)));

    let mut graph = FlowGraph::default();
    let mut edges = BTreeMap::new();
    let mut drops = BTreeMap::new();
    let mut unknown_sides = 0;
    let mut namespaces = BTreeMap::new();
    let mut pods: BTreeMap<(String, String), LocalPod> = BTreeMap::new();
    let mut services = BTreeMap::new();
    for c in &ordered {
        for w in &c.workloads {
            let info = graph.workloads.entry(w.workload.clone()).or_default();
            if info.pods.is_empty() {
                info.labels.clone_from(&w.labels);
            } else if !w.pods.is_empty() {
                // Labels common to every pod seen, by any node.
                info.labels.retain(|k, v| w.labels.get(k) == Some(v));
            }
            info.pods.extend(w.pods.iter().cloned());
        }
        unknown_sides += collect(&mut edges, &c.node, &c.edges);
        unknown_sides += collect(&mut drops, &c.node, &c.drops);
        namespaces.extend(c.namespaces.iter().map(|(k, v)| (k.clone(), v.clone())));
        for p in &c.pods {
            pods.insert(
                (p.namespace.clone(), p.name.clone()),
                LocalPod {
                    meta: PodMeta {
                        namespace: p.namespace.clone(),
                        name: p.name.clone(),
                        labels: p.labels.clone(),
                        workload: p.workload.clone(),
                        ips: p.ips.clone(),
                    },
                    host_veth: None,
                    ports: p.ports.clone(),
                    local: false,
                    node: Some(c.node.clone()),
                },
            );
        }
        for s in &c.services {
            services.insert((s.namespace.clone(), s.name.clone()), s.clone());
        }
        graph.merge_names(&c.external_names);
    }
    forget_dropped_at_ingress(&mut edges, &drops);
    graph.edges = resolve(edges);
    Merged {
        view: GraphView {
            graph,
            drops: resolve(drops),
            version: 0,
        },
        inventory: Inventory {
            pods: pods.into_values().collect(),
            namespaces,
            services: services.into_values().collect(),
            ..Inventory::default()
        },
        unknown_sides,
    }
}

#[cfg(test)]
mod tests;
