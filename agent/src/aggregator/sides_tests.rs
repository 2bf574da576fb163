//! The sides an edge is seen from ([`SeenFrom`]): what a relay needs to
//! count a connection between two nodes once.

use std::net::IpAddr;

use weir_generator::model::{EdgeKey, EdgeStats, NodeId, Protocol, WorkloadKind, WorkloadRef};

use super::{testing::*, *};
use crate::flow::Verdict;

fn w(ns: &str, name: &str) -> NodeId {
    NodeId::Workload(WorkloadRef::new(ns, WorkloadKind::Deployment, name))
}

fn key(source: NodeId, target: NodeId, port: u16) -> EdgeKey {
    EdgeKey {
        source,
        target,
        protocol: Protocol::Tcp,
        port,
    }
}

/// The shop, with db on node-2 (the kube source's `spec.nodeName`).
fn resolver() -> FakeResolver {
    shop().on_node("10.0.1.9", "node-2")
}

/// (seen from, peer node, connections, packets) of each side of an edge.
fn sides_of(c: &Contribution, edge: &EdgeKey) -> Vec<(SeenFrom, Option<String>, u64, u64)> {
    c.sides[edge]
        .iter()
        .map(|s| {
            (
                s.seen_from,
                s.peer_node.as_deref().map(str::to_owned),
                s.stats.connections,
                s.stats.packets,
            )
        })
        .collect()
}

#[test]
fn a_connection_to_a_remote_responder_is_counted_from_the_initiators_side() {
    let (agg, _) = node_aggregator();
    let o = obs(1, "10.0.0.1:43210", "10.0.1.9:5432", Initiator::Local);
    agg.fold(&o, &resolver());
    let c = agg.contribution();
    assert_eq!(&*c.node, "node-1");
    let edge = key(w("shop", "frontend"), w("data", "db"), 5432);
    assert_eq!(
        sides_of(&c, &edge),
        [(SeenFrom::Initiator, Some("node-2".to_owned()), 1, 2)]
    );
    assert_eq!(c.view.graph.edges[&edge].connections, 1);
}

#[test]
fn a_connection_from_a_remote_initiator_is_counted_from_the_responders_side() {
    let (agg, _) = node_aggregator();
    // db on node-2 opens a connection to cart, attached here.
    let o = obs(2, "10.0.0.2:7070", "10.0.1.9:50000", Initiator::Remote);
    agg.fold(&o, &resolver());
    let c = agg.contribution();
    let edge = key(w("data", "db"), w("shop", "cart"), 7070);
    assert_eq!(
        sides_of(&c, &edge),
        [(SeenFrom::Responder, Some("node-2".to_owned()), 1, 2)]
    );
}

#[test]
fn a_peer_whose_node_is_unknown_or_external_has_no_peer_node() {
    let (agg, _) = node_aggregator();
    // No `on_node` for db: the source did not say where it runs.
    agg.fold(
        &obs(1, "10.0.0.1:43210", "10.0.1.9:5432", Initiator::Local),
        &shop(),
    );
    agg.fold(
        &obs(2, "10.0.0.2:7070", "203.0.113.7:50000", Initiator::Remote),
        &shop(),
    );
    let c = agg.contribution();
    let to_db = key(w("shop", "frontend"), w("data", "db"), 5432);
    assert_eq!(sides_of(&c, &to_db), [(SeenFrom::Initiator, None, 1, 2)]);
    let external = NodeId::External("203.0.113.7".parse::<IpAddr>().unwrap());
    let from_outside = key(external, w("shop", "cart"), 7070);
    assert_eq!(
        sides_of(&c, &from_outside),
        [(SeenFrom::Responder, None, 1, 2)]
    );
}

#[test]
fn a_connection_between_two_local_pods_is_one_edge_seen_from_both_sides() {
    let (agg, _) = node_aggregator();
    let r = resolver();
    let mut at_cart = obs(2, "10.0.0.2:7070", "10.0.0.1:43210", Initiator::Remote);
    at_cart.verdict = Verdict::Audit;
    agg.fold(
        &obs(1, "10.0.0.1:43210", "10.0.0.2:7070", Initiator::Local),
        &r,
    );
    agg.fold(&at_cart, &r);
    let c = agg.contribution();
    let edge = key(w("shop", "frontend"), w("shop", "cart"), 7070);
    assert_eq!(c.view.graph.edges.len(), 1);
    assert_eq!(
        sides_of(&c, &edge),
        [(SeenFrom::Both, Some("node-1".to_owned()), 1, 2)]
    );
    // Both ends' verdicts: egress let it out, ingress audited it.
    let verdicts = c.sides[&edge][0].stats.verdicts;
    assert_eq!((verdicts.forwarded, verdicts.audit), (1, 1));
}

#[test]
fn the_sides_of_an_edge_add_up_to_the_edge() {
    let (agg, _) = node_aggregator();
    // One workload pair, seen from both sides of two different pods:
    // frontend-a (here) -> db (node-2), and db -> frontend-a's port.
    let r = resolver();
    agg.fold(
        &obs(1, "10.0.0.1:43210", "10.0.1.9:5432", Initiator::Local),
        &r,
    );
    agg.fold(
        &obs(1, "10.0.0.1:43211", "10.0.1.9:5432", Initiator::Local),
        &r,
    );
    let c = agg.contribution();
    for (edge, stats) in &c.view.graph.edges {
        let mut sum = EdgeStats::default();
        for side in &c.sides[edge] {
            sum.merge(&side.stats);
        }
        assert_eq!(&sum, stats, "{edge:?}");
    }
    assert_eq!(c.sides.len(), c.view.graph.edges.len());
}

#[test]
fn a_connection_dropped_late_moves_its_side_to_the_drops() {
    let (agg, _) = node_aggregator();
    let r = resolver();
    let edge = key(w("shop", "frontend"), w("shop", "cart"), 7070);
    agg.fold(
        &obs(1, "10.0.0.1:43210", "10.0.0.2:7070", Initiator::Local),
        &r,
    );
    agg.fold(
        &obs(2, "10.0.0.2:7070", "10.0.0.1:43210", Initiator::Remote),
        &r,
    );
    assert!(agg.contribution().sides.contains_key(&edge));
    // The responder's drop arrives later (a sweep).
    let mut dropped = obs(2, "10.0.0.2:7070", "10.0.0.1:43210", Initiator::Remote);
    dropped.new_flow = false;
    dropped.verdict = Verdict::Dropped;
    agg.fold(&dropped, &r);
    let c = agg.contribution();
    assert!(!c.sides.contains_key(&edge), "{:?}", c.sides);
    assert!(!c.view.graph.edges.contains_key(&edge));
    assert_eq!(c.drop_sides[&edge][0].seen_from, SeenFrom::Both);
    assert_eq!(c.drop_sides[&edge][0].stats.connections, 1);
}

#[test]
fn restored_edges_are_on_an_unknown_side() {
    let (first, _) = node_aggregator();
    first.fold(
        &obs(1, "10.0.0.1:43210", "10.0.1.9:5432", Initiator::Local),
        &resolver(),
    );
    let (again, _) = node_aggregator();
    again.restore(&first.graph());
    let c = again.contribution();
    let edge = key(w("shop", "frontend"), w("data", "db"), 5432);
    assert_eq!(sides_of(&c, &edge), [(SeenFrom::Unknown, None, 1, 2)]);
}

#[test]
fn saved_sides_come_back_and_sides_that_do_not_add_up_are_unknown() {
    let (first, _) = node_aggregator();
    let r = resolver();
    first.fold(
        &obs(1, "10.0.0.1:43210", "10.0.1.9:5432", Initiator::Local),
        &r,
    );
    first.fold(
        &obs(2, "10.0.0.2:7070", "10.0.1.9:40000", Initiator::Remote),
        &r,
    );
    let (graph, _, sides) = first.for_store_with_sides();
    assert_eq!(sides, first.contribution().sides);

    let (again, _) = node_aggregator();
    again.restore_with_sides(&graph, &sides);
    assert_eq!(again.contribution().sides, sides);
    // Folding on top keeps the sides apart, as before the restart.
    again.fold(
        &obs(1, "10.0.0.1:43299", "10.0.1.9:5432", Initiator::Local),
        &r,
    );
    let to_db = key(w("shop", "frontend"), w("data", "db"), 5432);
    assert_eq!(
        sides_of(&again.contribution(), &to_db),
        [(SeenFrom::Initiator, Some("node-2".to_owned()), 2, 4)]
    );

    // Sides an older weir left behind, no longer matching their edge.
    let mut stale = sides.clone();
    stale.get_mut(&to_db).unwrap()[0].stats.connections += 1;
    let (third, _) = node_aggregator();
    third.restore_with_sides(&graph, &stale);
    let c = third.contribution();
    assert_eq!(sides_of(&c, &to_db), [(SeenFrom::Unknown, None, 1, 2)]);
    let from_db = key(w("data", "db"), w("shop", "cart"), 7070);
    assert_eq!(c.sides[&from_db][0].seen_from, SeenFrom::Responder);
}

#[test]
fn a_flow_record_names_the_peers_node_and_its_place_in_the_stream() {
    let (agg, _) = node_aggregator();
    let r = resolver();
    agg.fold(
        &obs(1, "10.0.0.1:43210", "10.0.1.9:5432", Initiator::Local),
        &r,
    );
    agg.fold(
        &obs(2, "10.0.0.2:7070", "10.0.1.9:41000", Initiator::Remote),
        &r,
    );
    // An external peer has no node.
    agg.fold(
        &obs(1, "10.0.0.1:43211", "198.51.100.7:443", Initiator::Local),
        &r,
    );
    let records = agg.recent(10, |_| true);
    let peers: Vec<Option<&str>> = records.iter().map(|r| r.peer_node.as_deref()).collect();
    assert_eq!(peers, [Some("node-2"), Some("node-2"), None]);
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert!(seqs[0] > 0, "{seqs:?}");
    assert_eq!(seqs, [seqs[0], seqs[0] + 1, seqs[0] + 2]);
}

#[test]
fn an_edge_to_a_workload_on_several_nodes_keeps_a_side_per_node() {
    let (agg, _) = node_aggregator();
    // cart-a is attached here, cart-b runs on node-2, cart-c on node-3.
    let r = resolver()
        .pod("shop", "cart", "cart-b", "10.0.2.2", None)
        .on_node("10.0.2.2", "node-2")
        .pod("shop", "cart", "cart-c", "10.0.3.2", None)
        .on_node("10.0.3.2", "node-3");
    let edge = key(w("shop", "frontend"), w("shop", "cart"), 7070);
    for (local, remote) in [
        ("10.0.0.1:43210", "10.0.0.2:7070"),
        ("10.0.0.1:43211", "10.0.2.2:7070"),
        ("10.0.0.1:43212", "10.0.3.2:7070"),
        ("10.0.0.1:43213", "10.0.2.2:7070"),
    ] {
        agg.fold(&obs(1, local, remote, Initiator::Local), &r);
    }
    agg.fold(
        &obs(2, "10.0.0.2:7070", "10.0.0.1:43210", Initiator::Remote),
        &r,
    );
    let node = |n: &str| Some(n.to_owned());
    let c = agg.contribution();
    assert_eq!(
        sides_of(&c, &edge),
        [
            (SeenFrom::Initiator, node("node-2"), 2, 4),
            (SeenFrom::Initiator, node("node-3"), 1, 2),
            (SeenFrom::Both, node("node-1"), 1, 2),
        ]
    );
    assert_eq!(c.view.graph.edges[&edge].connections, 4);

    // The paired connection dropped late: its side goes, the others stay
    // and still add up to the edge.
    let mut dropped = obs(2, "10.0.0.2:7070", "10.0.0.1:43210", Initiator::Remote);
    dropped.new_flow = false;
    dropped.verdict = Verdict::Dropped;
    agg.fold(&dropped, &r);
    let c = agg.contribution();
    assert_eq!(
        sides_of(&c, &edge),
        [
            (SeenFrom::Initiator, node("node-2"), 2, 4),
            (SeenFrom::Initiator, node("node-3"), 1, 2),
        ]
    );
    let mut sum = EdgeStats::default();
    for side in &c.sides[&edge] {
        sum.merge(&side.stats);
    }
    assert_eq!(c.view.graph.edges[&edge], sum);

    // And they come back from the store as they were.
    let (graph, _, sides) = agg.for_store_with_sides();
    let (again, _) = node_aggregator();
    again.restore_with_sides(&graph, &sides);
    assert_eq!(again.contribution().sides, sides);
    assert_eq!(again.graph(), graph);
}
