//! The merge on in-process aggregators: each node folds its own reports,
//! the merge of their contributions is what one agent holding every pod
//! learns.

use std::{collections::BTreeMap, sync::Arc};

use proptest::prelude::*;
use weir_generator::model::{EdgeKey, NodeId, Protocol, WorkloadKind, WorkloadRef};

use super::*;
use crate::{
    aggregator::{Aggregator, Options, testing::*},
    api::contribution::{Tag, to_json},
    flow::{Initiator, Verdict},
    metrics::Metrics,
    resolve::Resolver,
};

fn aggregator(node: &str) -> Aggregator {
    Aggregator::new(
        Options {
            node_name: node.into(),
            ..Options::default()
        },
        Arc::new(Metrics::new()),
    )
}

/// `agg`'s contribution as the relay reads it, made at `at`.
fn contribution(agg: &Aggregator, inventory: &Inventory, at: &str) -> ContributionJson {
    let c = agg.contribution();
    let tag = Tag {
        epoch: 1,
        instance: 1,
        version: c.view.version,
        cluster: 0,
    };
    to_json(&c, &Resolver::new(inventory, |_| None), &tag, at)
}

fn edge(source: &str, target: &str, port: u16) -> EdgeKey {
    let w = |name: &str| {
        NodeId::Workload(WorkloadRef::new(
            if name == "db" { "data" } else { "shop" },
            WorkloadKind::Deployment,
            name,
        ))
    };
    EdgeKey {
        source: w(source),
        target: w(target),
        protocol: Protocol::Tcp,
        port,
    }
}

/// frontend (10.0.0.1) and cart (10.0.0.2) run on node a, db (10.0.1.9)
/// on node b; `attached` are the pods the node runs.
fn resolver(attached: &[&str]) -> FakeResolver {
    let at = |name: &str, index: u32| attached.contains(&name).then_some(index);
    FakeResolver::default()
        .pod(
            "shop",
            "frontend",
            "frontend-a",
            "10.0.0.1",
            at("frontend", 1),
        )
        .pod("shop", "cart", "cart-a", "10.0.0.2", at("cart", 2))
        .pod("data", "db", "db-0", "10.0.1.9", at("db", 3))
        .on_node("10.0.0.1", "a")
        .on_node("10.0.0.2", "a")
        .on_node("10.0.1.9", "b")
}

/// Node a, node b, and one node holding all three pods.
struct Cluster {
    a: Aggregator,
    b: Aggregator,
    one: Aggregator,
}

impl Cluster {
    fn new() -> Self {
        Self {
            a: aggregator("a"),
            b: aggregator("b"),
            one: aggregator("one"),
        }
    }

    /// frontend connects to db: node a sees the initiator, node b the
    /// responder, with `ingress` its verdict.
    fn frontend_to_db(&self, port: u16, ingress: Verdict) {
        let out = obs(
            1,
            "10.0.0.1:43210",
            &format!("10.0.1.9:{port}"),
            Initiator::Local,
        );
        let mut inbound = obs(
            3,
            &format!("10.0.1.9:{port}"),
            "10.0.0.1:43210",
            Initiator::Remote,
        );
        inbound.verdict = ingress;
        self.a.fold(&out, &resolver(&["frontend", "cart"]));
        self.b.fold(&inbound, &resolver(&["db"]));
        let all = resolver(&["frontend", "cart", "db"]);
        self.one.fold(&out, &all);
        self.one.fold(&inbound, &all);
    }

    fn contributions(&self) -> (ContributionJson, ContributionJson) {
        let none = Inventory::default();
        (
            contribution(&self.a, &none, "2026-01-01T00:00:01Z"),
            contribution(&self.b, &none, "2026-01-01T00:00:02Z"),
        )
    }
}

#[test]
fn one_connection_seen_from_both_ends_is_one_edge_counted_once() {
    let cluster = Cluster::new();
    cluster.frontend_to_db(5432, Verdict::Forwarded);
    let (a, b) = cluster.contributions();
    let merged = merge([&a, &b]);
    let e = &merged.view.graph.edges[&edge("frontend", "db", 5432)];
    assert_eq!((e.connections, e.packets, e.bytes), (1, 2, 120));
    assert_eq!(e.verdicts.forwarded, 1);
    assert_eq!(merged.view.graph, cluster.one.graph());
    assert_eq!(merged.unknown_sides, 0);
}

#[test]
fn the_responders_verdict_counts_beside_the_initiators() {
    let cluster = Cluster::new();
    cluster.frontend_to_db(5432, Verdict::Audit);
    let (a, b) = cluster.contributions();
    let merged = merge([&a, &b]);
    let e = &merged.view.graph.edges[&edge("frontend", "db", 5432)];
    assert_eq!((e.verdicts.forwarded, e.verdicts.audit), (1, 1));
    assert_eq!(merged.view.graph, cluster.one.graph());
}

#[test]
fn a_connection_dropped_at_the_responders_ingress_is_not_learned() {
    let cluster = Cluster::new();
    cluster.frontend_to_db(5432, Verdict::Forwarded);
    cluster.frontend_to_db(6379, Verdict::Dropped);
    let (a, b) = cluster.contributions();
    let merged = merge([&a, &b]);
    let dropped = edge("frontend", "db", 6379);
    assert!(
        !merged.view.graph.edges.contains_key(&dropped),
        "dropped traffic is learned: {:?}",
        merged.view.graph.edges
    );
    assert_eq!(merged.view.drops[&dropped].connections, 1);
    assert_eq!(merged.view.graph.edges, cluster.one.graph().edges);
    // A node pair with some connections let in keeps those.
    cluster.frontend_to_db(6379, Verdict::Forwarded);
    let (a, b) = cluster.contributions();
    let merged = merge([&a, &b]);
    assert_eq!(merged.view.graph.edges[&dropped].connections, 1);
    assert_eq!(merged.view.drops[&dropped].connections, 1);
}

#[test]
fn either_side_alone_still_gives_the_edge() {
    let cluster = Cluster::new();
    cluster.frontend_to_db(5432, Verdict::Forwarded);
    let (a, b) = cluster.contributions();
    for only in [&a, &b] {
        let merged = merge([only]);
        let e = &merged.view.graph.edges[&edge("frontend", "db", 5432)];
        assert_eq!((e.connections, e.packets), (1, 2), "{}", only.node);
    }
}

#[test]
fn replaying_a_contribution_changes_nothing() {
    let cluster = Cluster::new();
    cluster.frontend_to_db(5432, Verdict::Forwarded);
    cluster.frontend_to_db(6379, Verdict::Forwarded);
    let (a, b) = cluster.contributions();
    let once = merge([&a, &b]);
    assert_eq!(merge([&a, &b, &a, &b, &b]), once);
    assert_eq!(merge([&b, &a]), once);
    // A node's newer contribution replaces its older one.
    cluster.frontend_to_db(5432, Verdict::Forwarded);
    let (newer, _) = cluster.contributions();
    let mut newer = newer;
    newer.generated_at = "2026-01-01T00:00:03Z".to_owned();
    let merged = merge([&a, &b, &newer]);
    assert_eq!(
        merged.view.graph.edges[&edge("frontend", "db", 5432)].connections,
        2,
        "the initiator's side counts its two connections, b's one is not added"
    );
}

#[test]
fn different_node_pairs_of_one_edge_add_up() {
    let cluster = Cluster::new();
    cluster.frontend_to_db(5432, Verdict::Forwarded);
    // A second frontend replica on node c connects to db too.
    let c = aggregator("c");
    let at_c = FakeResolver::default()
        .pod("shop", "frontend", "frontend-c", "10.0.2.1", Some(1))
        .pod("data", "db", "db-0", "10.0.1.9", None)
        .on_node("10.0.1.9", "b");
    c.fold(
        &obs(1, "10.0.2.1:40000", "10.0.1.9:5432", Initiator::Local),
        &at_c,
    );
    let (a, b) = cluster.contributions();
    let from_c = contribution(&c, &Inventory::default(), "2026-01-01T00:00:03Z");
    let merged = merge([&a, &b, &from_c]);
    let e = &merged.view.graph.edges[&edge("frontend", "db", 5432)];
    assert_eq!(e.connections, 2);
    let frontend = &merged.view.graph.workloads
        [&WorkloadRef::new("shop", WorkloadKind::Deployment, "frontend")];
    assert_eq!(frontend.pods.len(), 2, "{frontend:?}");
}

#[test]
fn unknown_sides_are_taken_as_they_are_and_counted() {
    let cluster = Cluster::new();
    cluster.frontend_to_db(5432, Verdict::Forwarded);
    let (a, mut b) = cluster.contributions();
    for side in b.edges.iter_mut().flat_map(|e| e.sides.iter_mut()) {
        side.seen_from = SeenFromJson::Unknown;
        side.initiator_node = None;
        side.responder_node = None;
    }
    let merged = merge([&a, &b]);
    assert_eq!(merged.unknown_sides, 1);
    assert_eq!(
        merged.view.graph.edges[&edge("frontend", "db", 5432)].connections,
        2,
        "an unknown side cannot be told from the initiator's"
    );
}

#[test]
fn names_of_external_addresses_are_the_union_of_the_nodes() {
    let name = "api.payments.example";
    let (old, new): (std::net::IpAddr, std::net::IpAddr) = (
        "203.0.113.10".parse().unwrap(),
        "203.0.113.11".parse().unwrap(),
    );
    let web = WorkloadRef::new("shop", WorkloadKind::Deployment, "frontend");
    let cart = WorkloadRef::new("shop", WorkloadKind::Deployment, "cart");
    let named = |entries: &[(std::net::IpAddr, &WorkloadRef, u64, u64)]| {
        let mut g = weir_generator::model::FlowGraph::default();
        for (ip, w, first, last) in entries {
            g.name_address(name, *ip, w, *first, *last);
        }
        g
    };
    let (a, b) = (aggregator("a"), aggregator("b"));
    a.restore(&named(&[(old, &web, 10, 20)]));
    b.restore(&named(&[(old, &cart, 5, 15), (new, &web, 30, 40)]));
    let none = Inventory::default();
    let merged = merge(&[
        contribution(&a, &none, "2026-01-01T00:00:01Z"),
        contribution(&b, &none, "2026-01-01T00:00:02Z"),
    ]);
    assert_eq!(
        merged.view.graph.external_names,
        named(&[
            (old, &web, 10, 20),
            (old, &cart, 5, 15),
            (new, &web, 30, 40)
        ])
        .external_names
    );
    let seen = &merged.view.graph.external_names[name][&old];
    assert_eq!(
        (seen.first_seen, seen.last_seen, seen.workloads.len()),
        (5, 20, 2)
    );
}

#[test]
fn the_cluster_is_the_union_of_the_nodes_and_the_latest_wins() {
    let agg = aggregator("a");
    let pod = |name: &str, version: &str, node: &str| LocalPod {
        meta: PodMeta {
            namespace: "shop".into(),
            name: name.into(),
            labels: BTreeMap::from([("version".to_owned(), version.to_owned())]),
            workload: WorkloadRef::new("shop", WorkloadKind::Deployment, "web"),
            ips: vec![],
        },
        host_veth: None,
        ports: Vec::new(),
        local: node == "here",
        node: Some(node.to_owned()),
    };
    let ns = |label: &str| {
        BTreeMap::from([(
            "shop".to_owned(),
            BTreeMap::from([("team".to_owned(), label.to_owned())]),
        )])
    };
    let at_a = Inventory {
        pods: vec![pod("web-1", "1", "here"), pod("web-2", "1", "elsewhere")],
        namespaces: ns("old"),
        ..Inventory::default()
    };
    let at_b = Inventory {
        pods: vec![pod("web-2", "2", "here"), pod("web-1", "2", "elsewhere")],
        namespaces: ns("new"),
        ..Inventory::default()
    };
    let a = contribution(&agg, &at_a, "2026-01-01T00:00:01Z");
    let mut b = contribution(&agg, &at_b, "2026-01-01T00:00:02Z");
    b.node = "b".to_owned();
    // Each node answers for its own pods only.
    assert_eq!(a.pods.len(), 1);
    let merged = merge([&b, &a]);
    let pods: Vec<(&str, &str, Option<&str>)> = merged
        .inventory
        .pods
        .iter()
        .map(|p| {
            (
                p.meta.name.as_str(),
                p.meta.labels["version"].as_str(),
                p.node.as_deref(),
            )
        })
        .collect();
    assert_eq!(pods, [("web-1", "1", Some("a")), ("web-2", "2", Some("b"))]);
    assert_eq!(merged.inventory.namespaces, ns("new"));
}

/// A pod of the property test: (name, node, address).
const PODS: [(&str, &str, &str); 4] = [
    ("frontend", "a", "10.0.0.1"),
    ("cart", "a", "10.0.0.2"),
    ("db", "b", "10.0.1.9"),
    ("queue", "c", "10.0.2.3"),
];

fn node_resolver(node: &str) -> FakeResolver {
    let mut r = FakeResolver::default();
    for (i, (name, on, ip)) in PODS.iter().enumerate() {
        let index = u32::try_from(i).expect("four pods") + 1;
        let attached = node == "one" || node == *on;
        r = r
            .pod(
                "shop",
                name,
                &format!("{name}-0"),
                ip,
                attached.then_some(index),
            )
            .on_node(ip, on);
    }
    r
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// However the connections fall across nodes, and whatever the
    /// responder's ingress did with them, the merged graph is what one node
    /// holding every pod learns.
    #[test]
    fn the_merge_equals_one_node_holding_every_pod(
        conns in prop::collection::vec((0..4_usize, 0..4_usize, 1..4_u16, 0..3_u8), 1..12),
    ) {
        let nodes: BTreeMap<&str, Aggregator> =
            ["a", "b", "c"].into_iter().map(|n| (n, aggregator(n))).collect();
        let one = aggregator("one");
        let everything = node_resolver("one");
        for (i, (from, to, port, ingress)) in conns.into_iter().enumerate() {
            if from == to {
                continue;
            }
            let (_, from_node, from_ip) = PODS[from];
            let (_, to_node, to_ip) = PODS[to];
            let client = format!("{from_ip}:{}", 40_000 + i);
            let server = format!("{to_ip}:{}", 8000 + port);
            let out = obs(u32::try_from(from).expect("small") + 1, &client, &server, Initiator::Local);
            let mut inbound = obs(u32::try_from(to).expect("small") + 1, &server, &client, Initiator::Remote);
            inbound.verdict = match ingress {
                0 => Verdict::Forwarded,
                1 => Verdict::Audit,
                _ => Verdict::Dropped,
            };
            nodes[from_node].fold(&out, &node_resolver(from_node));
            nodes[to_node].fold(&inbound, &node_resolver(to_node));
            one.fold(&out, &everything);
            one.fold(&inbound, &everything);
        }
        let contributions: Vec<ContributionJson> = nodes
            .values()
            .map(|agg| contribution(agg, &Inventory::default(), "2026-01-01T00:00:00Z"))
            .collect();
        let merged = merge(&contributions);
        prop_assert_eq!(merged.view.graph.edges, one.graph().edges);
    }
}
