use std::net::IpAddr;

use weir_generator::model::{EdgeKey, NodeId, Protocol, WorkloadKind, WorkloadRef};

use super::{testing::*, *};

fn aggregator() -> Aggregator {
    aggregator_with(Options::default())
}

fn aggregator_with(options: Options) -> Aggregator {
    Aggregator::new(options, Arc::new(Metrics::new()))
}

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

#[test]
fn local_initiator_makes_an_edge_to_the_peer_port() {
    let agg = aggregator();
    let r = shop();
    let o = obs(1, "10.0.0.1:43210", "10.0.1.9:5432", Initiator::Local);
    assert_eq!(agg.fold(&o, &r), Folded::NewEdge);
    let mut update = o.clone();
    update.new_flow = false;
    update.connections = 0;
    assert_eq!(agg.fold(&update, &r), Folded::Edge);

    let g = agg.graph();
    let stats = g.edges[&key(w("shop", "frontend"), w("data", "db"), 5432)];
    assert_eq!((stats.packets, stats.bytes, stats.connections), (4, 240, 1));
    assert_eq!(stats.first_seen, o.first_seen);
    assert_eq!(g.edges.len(), 1);
    assert!(
        g.workloads[&WorkloadRef::new("data", WorkloadKind::Deployment, "db")]
            .pods
            .contains("db-0")
    );
}

#[test]
fn remote_initiator_points_the_edge_at_the_endpoint() {
    let agg = aggregator();
    let r = shop();
    let o = obs(2, "10.0.0.2:7070", "203.0.113.7:50000", Initiator::Remote);
    agg.fold(&o, &r);
    let external = NodeId::External("203.0.113.7".parse::<IpAddr>().unwrap());
    let g = agg.graph();
    assert_eq!(
        g.edges.keys().collect::<Vec<_>>(),
        [&key(external, w("shop", "cart"), 7070)]
    );
}

#[test]
fn source_ports_never_split_edges() {
    let agg = aggregator();
    let r = shop();
    for sport in [40000, 40001, 40002] {
        let o = obs(
            1,
            &format!("10.0.0.1:{sport}"),
            "10.0.1.9:5432",
            Initiator::Local,
        );
        agg.fold(&o, &r);
    }
    let g = agg.graph();
    assert_eq!(g.edges.len(), 1);
    assert_eq!(g.edges.values().next().map(|s| s.connections), Some(3));
}

#[test]
fn a_connection_between_attached_pods_counts_once() {
    let agg = aggregator();
    let r = shop();
    let at_frontend = obs(1, "10.0.0.1:43210", "10.0.0.2:7070", Initiator::Local);
    let at_cart = obs(2, "10.0.0.2:7070", "10.0.0.1:43210", Initiator::Remote);
    assert_eq!(agg.fold(&at_frontend, &r), Folded::Held);
    assert!(
        agg.graph().edges.is_empty(),
        "held until the responder reports"
    );
    assert_eq!(agg.fold(&at_cart, &r), Folded::Duplicate);
    let g = agg.graph();
    let stats = g.edges[&key(w("shop", "frontend"), w("shop", "cart"), 7070)];
    assert_eq!((stats.connections, stats.packets), (1, 2));
    assert_eq!(g.edges.len(), 1);
    // Both observation points stay visible in the flow log.
    assert_eq!(agg.recent(10, |_| true).len(), 2);
}

#[test]
fn unknown_initiators_and_endpoints_are_counted_not_guessed() {
    let metrics = Arc::new(Metrics::new());
    let agg = Aggregator::new(Options::default(), Arc::clone(&metrics));
    let r = shop();
    let unknown = obs(1, "10.0.0.1:5353", "10.0.1.9:5353", Initiator::Unknown);
    assert_eq!(agg.fold(&unknown, &r), Folded::UnknownInitiator);
    let stranger = obs(9, "10.9.9.9:1234", "10.0.1.9:5432", Initiator::Local);
    assert_eq!(agg.fold(&stranger, &r), Folded::UnresolvedEndpoint);
    assert!(agg.graph().edges.is_empty());
    let text = metrics.encode();
    assert!(text.contains("weir_initiator_unknown_total 1"), "{text}");
    assert!(
        text.contains("weir_unresolved_total{side=\"endpoint\"} 1"),
        "{text}"
    );
}

#[test]
fn endpoint_falls_back_to_the_local_address() {
    let agg = aggregator();
    let r = shop();
    // ifindex 42 is unknown, but the local address is the frontend's.
    let o = obs(42, "10.0.0.1:43210", "10.0.1.9:5432", Initiator::Local);
    assert_eq!(agg.fold(&o, &r), Folded::NewEdge);
}

#[test]
fn icmp_edges_have_no_port() {
    let agg = aggregator();
    let r = shop();
    let mut o = obs(1, "10.0.0.1:77", "10.0.1.9:77", Initiator::Local);
    o.protocol = Protocol::Icmp;
    o.icmp = Some((8, 0));
    agg.fold(&o, &r);
    let g = agg.graph();
    let k = g.edges.keys().next().expect("one edge");
    assert_eq!((k.protocol, k.port), (Protocol::Icmp, 0));
}

#[test]
fn only_flow_starts_and_ends_make_records_and_the_ring_is_bounded() {
    let agg = aggregator_with(Options {
        ring_capacity: 2,
        ..Options::default()
    });
    let r = shop();
    let mut o = obs(1, "10.0.0.1:1", "10.0.1.9:5432", Initiator::Local);
    agg.fold(&o, &r);
    o.new_flow = false;
    o.connections = 0;
    agg.fold(&o, &r);
    assert_eq!(agg.record_count(), 1);
    o.closed = true;
    agg.fold(&o, &r);
    let mut other = obs(1, "10.0.0.1:2", "10.0.1.9:5432", Initiator::Local);
    other.local.set_port(2);
    agg.fold(&other, &r);
    let recent = agg.recent(10, |_| true);
    assert_eq!(recent.len(), 2);
    assert!(recent[0].closed);
    assert_eq!(recent[1].source.port(), 2);
    let only_last = agg.recent(1, |_| true);
    assert_eq!(only_last[0].source.port(), 2);
}

#[test]
fn records_are_oriented_initiator_to_responder() {
    let agg = aggregator();
    let r = shop();
    agg.fold(
        &obs(2, "10.0.0.2:7070", "10.0.1.9:40000", Initiator::Remote),
        &r,
    );
    let rec = &agg.recent(1, |_| true)[0];
    assert_eq!(rec.source.to_string(), "10.0.1.9:40000");
    assert_eq!(rec.destination.to_string(), "10.0.0.2:7070");
    assert_eq!(
        rec.source_pod.as_ref().map(|p| p.name.as_str()),
        Some("db-0")
    );
    assert_eq!(rec.endpoint_pod().map(|p| p.name.as_str()), Some("cart-a"));
}

#[tokio::test]
async fn followers_get_later_records_and_laggers_learn_how_many_they_missed() {
    let agg = aggregator_with(Options {
        follow_capacity: 2,
        ..Options::default()
    });
    let r = shop();
    agg.fold(&obs(1, "10.0.0.1:1", "10.0.1.9:5432", Initiator::Local), &r);
    let (backlog, rx) = agg.follow(10, |_| true);
    let mut rx = rx.expect("followers open");
    assert_eq!(backlog.len(), 1);
    for port in 2..=5 {
        agg.fold(
            &obs(
                1,
                &format!("10.0.0.1:{port}"),
                "10.0.1.9:5432",
                Initiator::Local,
            ),
            &r,
        );
    }
    assert!(matches!(
        rx.recv().await,
        Err(broadcast::error::RecvError::Lagged(2))
    ));
    assert_eq!(rx.recv().await.map(|rec| rec.source.port()).ok(), Some(4));
    agg.close_followers();
    assert_eq!(rx.recv().await.map(|rec| rec.source.port()).ok(), Some(5));
    assert!(matches!(
        rx.recv().await,
        Err(broadcast::error::RecvError::Closed)
    ));
}

#[test]
fn snapshots_are_deterministic_whatever_the_fold_order() {
    let r = shop();
    let flows = [
        obs(1, "10.0.0.1:1", "10.0.1.9:5432", Initiator::Local),
        obs(1, "10.0.0.1:2", "10.0.0.2:7070", Initiator::Local),
        obs(2, "10.0.0.2:7070", "10.0.0.1:2", Initiator::Remote),
        obs(2, "10.0.0.2:3", "198.51.100.1:443", Initiator::Local),
        obs(2, "10.0.0.2:7070", "10.0.1.9:9", Initiator::Remote),
    ];
    let a = aggregator();
    let b = aggregator();
    for o in &flows {
        a.fold(o, &r);
    }
    for o in flows.iter().rev() {
        b.fold(o, &r);
    }
    assert_eq!(a.graph(), b.graph());
    assert_eq!(a.graph().edges.len(), 4);
}

#[test]
fn restore_then_graph_gives_the_saved_graph_and_folds_add_on_top() {
    let r = shop();
    let before = aggregator();
    before.fold(
        &obs(1, "10.0.0.1:43210", "10.0.0.2:7070", Initiator::Local),
        &r,
    );
    before.fold(
        &obs(2, "10.0.0.2:7070", "10.0.0.1:43210", Initiator::Remote),
        &r,
    );
    before.fold(
        &obs(1, "10.0.0.1:43211", "203.0.113.9:443", Initiator::Local),
        &r,
    );
    let saved = before.graph();

    let after = aggregator();
    let changes = after.changes();
    after.restore(&saved);
    assert_ne!(after.changes(), changes, "a restore is a change to save");
    assert_eq!(after.graph(), saved);
    assert_eq!(after.edge_count(), 2);

    // The same pods seen live again: same workloads, counters add up.
    let changes = after.changes();
    after.fold(
        &obs(1, "10.0.0.1:43212", "10.0.0.2:7070", Initiator::Local),
        &r,
    );
    after.fold(
        &obs(2, "10.0.0.2:7070", "10.0.0.1:43212", Initiator::Remote),
        &r,
    );
    assert_ne!(after.changes(), changes);
    let graph = after.graph();
    assert_eq!(graph.workloads, saved.workloads);
    let edge = key(w("shop", "frontend"), w("shop", "cart"), 7070);
    assert_eq!(graph.edges[&edge].connections, 2);
    assert_eq!(graph.edges.len(), 2);
}

#[test]
fn verdicts_are_counted_per_edge_and_drops_kept_apart() {
    let agg = aggregator();
    let r = shop();
    let db = key(w("shop", "frontend"), w("data", "db"), 5432);
    let forwarded = obs(1, "10.0.0.1:43210", "10.0.1.9:5432", Initiator::Local);
    let mut audited = obs(1, "10.0.0.1:43211", "10.0.1.9:5432", Initiator::Local);
    audited.verdict = crate::flow::Verdict::Audit;
    let mut dropped = obs(1, "10.0.0.1:43212", "10.0.1.9:5432", Initiator::Local);
    dropped.verdict = crate::flow::Verdict::Dropped;
    assert_eq!(agg.fold(&forwarded, &r), Folded::NewEdge);
    assert_eq!(agg.fold(&audited, &r), Folded::Edge);
    assert_eq!(agg.fold(&dropped, &r), Folded::Dropped);
    // Later reports of a flow count bytes, not connections or verdicts.
    let mut update = audited.clone();
    update.new_flow = false;
    update.connections = 0;
    agg.fold(&update, &r);

    let view = agg.view();
    let learned = view.graph.edges[&db];
    assert_eq!(learned.connections, 2);
    assert_eq!(
        (
            learned.verdicts.forwarded,
            learned.verdicts.audit,
            learned.verdicts.dropped
        ),
        (1, 1, 0)
    );
    assert_eq!(learned.packets, 6);
    let drops = view.drops[&db];
    assert_eq!(
        (drops.connections, drops.packets, drops.verdicts.dropped),
        (1, 2, 1)
    );
    // The learned graph is what was let through.
    assert_eq!(agg.graph(), view.graph);
    assert_eq!(agg.edge_count(), 1);
    assert!(view.version > 0 && view.version == agg.changes());
}

#[test]
fn the_denied_and_drops_snapshots_hold_what_was_denied_and_nothing_else() {
    let agg = aggregator();
    let r = shop();
    let db = key(w("shop", "frontend"), w("data", "db"), 5432);
    let web = key(w("shop", "frontend"), w("data", "db"), 8080);
    let cache = key(w("shop", "frontend"), w("data", "db"), 6379);
    let mut audited = obs(1, "10.0.0.1:43211", "10.0.1.9:5432", Initiator::Local);
    audited.verdict = crate::flow::Verdict::Audit;
    let forwarded = obs(1, "10.0.0.1:43210", "10.0.1.9:8080", Initiator::Local);
    let mut dropped = obs(1, "10.0.0.1:43212", "10.0.1.9:6379", Initiator::Local);
    dropped.verdict = crate::flow::Verdict::Dropped;
    for o in [&audited, &forwarded, &dropped] {
        agg.fold(o, &r);
    }
    let view = agg.view();
    assert!(view.graph.edges.contains_key(&web) && !view.graph.workloads.is_empty());

    let denied = agg.denied();
    assert_eq!(
        denied.graph.edges.keys().collect::<Vec<_>>(),
        [&db],
        "only the audited edge, with the counters the full view has"
    );
    assert_eq!(denied.graph.edges[&db], view.graph.edges[&db]);
    assert!(denied.graph.workloads.is_empty(), "no pods are copied");
    assert_eq!(denied.drops, view.drops);
    assert!(denied.drops.contains_key(&cache));
    assert_eq!(denied.version, view.version);

    let drops = agg.drops();
    assert!(drops.graph.edges.is_empty() && drops.graph.workloads.is_empty());
    assert_eq!(drops.drops, view.drops);
}

#[test]
fn a_connection_its_target_dropped_is_not_learned_whichever_report_comes_first() {
    let r = shop();
    let cart = key(w("shop", "frontend"), w("shop", "cart"), 7070);
    let at_frontend = obs(1, "10.0.0.1:43210", "10.0.0.2:7070", Initiator::Local);
    let mut at_cart = obs(2, "10.0.0.2:7070", "10.0.0.1:43210", Initiator::Remote);
    at_cart.verdict = crate::flow::Verdict::Dropped;
    at_cart.packets_to_pod = 3;
    for responder_first in [false, true] {
        let agg = aggregator();
        if responder_first {
            assert_eq!(agg.fold(&at_cart, &r), Folded::Duplicate);
            assert_eq!(agg.fold(&at_frontend, &r), Folded::Dropped);
        } else {
            assert_eq!(agg.fold(&at_frontend, &r), Folded::Held);
            assert_eq!(agg.fold(&at_cart, &r), Folded::Duplicate);
        }
        // The source's retransmissions, swept later, follow the connection.
        let mut retry = at_frontend.clone();
        (retry.new_flow, retry.connections) = (false, 0);
        assert_eq!(agg.fold(&retry, &r), Folded::Dropped);
        let view = agg.view();
        assert!(view.graph.edges.is_empty(), "{:?}", view.graph.edges);
        // The edge shows both verdicts: let out at the source, dropped at
        // the target; one connection, the initiator's packets only.
        let drops = view.drops[&cart];
        assert_eq!(
            (
                drops.connections,
                drops.packets,
                drops.verdicts.forwarded,
                drops.verdicts.dropped
            ),
            (1, 4, 1, 1)
        );
    }
}

#[test]
fn a_drop_seen_after_the_connection_was_learned_takes_it_back() {
    let agg = aggregator();
    let r = shop();
    let cart = key(w("shop", "frontend"), w("shop", "cart"), 7070);
    // Another connection on the same edge, let in at both ends.
    agg.fold(
        &obs(1, "10.0.0.1:1000", "10.0.0.2:7070", Initiator::Local),
        &r,
    );
    agg.fold(
        &obs(2, "10.0.0.2:7070", "10.0.0.1:1000", Initiator::Remote),
        &r,
    );
    // This one's initiator flow ends before its target's report (its drop
    // event was rate limited): learned for now...
    let mut at_frontend = obs(1, "10.0.0.1:2000", "10.0.0.2:7070", Initiator::Local);
    at_frontend.closed = true;
    assert_eq!(agg.fold(&at_frontend, &r), Folded::Edge);
    assert_eq!(agg.graph().edges[&cart].connections, 2);
    // ... until the sweep brings the drop.
    let mut at_cart = obs(2, "10.0.0.2:7070", "10.0.0.1:2000", Initiator::Remote);
    at_cart.verdict = crate::flow::Verdict::Dropped;
    agg.fold(&at_cart, &r);
    let view = agg.view();
    let learned = view.graph.edges[&cart];
    assert_eq!(
        (
            learned.connections,
            learned.packets,
            learned.verdicts.forwarded
        ),
        (1, 2, 1)
    );
    assert_eq!(view.drops[&cart].connections, 1);

    // An edge only dropped connections made goes away.
    let agg = aggregator();
    agg.fold(&at_frontend, &r);
    agg.fold(&at_cart, &r);
    assert!(agg.graph().edges.is_empty());
    assert_eq!(agg.edge_count(), 0);
}

#[test]
fn a_connection_let_in_at_the_target_after_an_audit_is_learned() {
    let agg = aggregator();
    let r = shop();
    let cart = key(w("shop", "frontend"), w("shop", "cart"), 7070);
    agg.fold(
        &obs(1, "10.0.0.1:43210", "10.0.0.2:7070", Initiator::Local),
        &r,
    );
    let mut at_cart = obs(2, "10.0.0.2:7070", "10.0.0.1:43210", Initiator::Remote);
    at_cart.verdict = crate::flow::Verdict::Audit;
    assert_eq!(agg.fold(&at_cart, &r), Folded::Duplicate);
    let view = agg.view();
    let learned = view.graph.edges[&cart];
    assert_eq!(
        (
            learned.connections,
            learned.verdicts.forwarded,
            learned.verdicts.audit
        ),
        (1, 1, 1)
    );
    assert!(view.drops.is_empty());
    // A forwarded responder report of an unknown, old connection adds nothing.
    let mut late = obs(2, "10.0.0.2:7070", "10.0.0.1:43299", Initiator::Remote);
    late.new_flow = false;
    assert_eq!(agg.fold(&late, &r), Folded::Duplicate);
    assert_eq!(agg.graph().edges[&cart].connections, 1);
}

#[test]
fn every_connection_of_a_reused_tuple_counts() {
    let resolver = shop();
    let agg = Aggregator::new(Options::default(), Arc::new(Metrics::new()));
    let first = obs(1, "10.0.0.1:40000", "10.0.1.9:5432", Initiator::Local);
    agg.fold(&first, &resolver);
    // the same 5-tuple reopened three times before the next sweep
    let mut reopened = first.clone();
    reopened.connections = 3;
    agg.fold(&reopened, &resolver);
    let graph = agg.graph();
    let stats = graph.edges.values().next().expect("one edge");
    assert_eq!(stats.connections, 4);
    assert_eq!(stats.verdicts.forwarded, 4);
}

#[test]
fn the_store_gets_what_was_folded_of_each_live_entry() {
    let agg = aggregator();
    let r = shop();
    let mut o = obs(1, "10.0.0.1:40000", "10.0.1.9:5432", Initiator::Local);
    let counters = crate::flow::EntryCounters {
        packets_from_pod: 1,
        bytes_from_pod: 60,
        packets_to_pod: 1,
        bytes_to_pod: 60,
        connections: 1,
    };
    o.folded = Some(counters);
    agg.fold(&o, &r);
    let (graph, entries) = agg.for_store();
    assert_eq!(graph, agg.graph());
    assert_eq!(entries, vec![(o.entry(), counters)]);
    // A restored aggregator saves them again until they report.
    let next = aggregator();
    next.restore_entries(&entries);
    assert_eq!(next.for_store().1, entries);
    // The last report of an entry forgets it.
    o.closed = true;
    agg.fold(&o, &r);
    assert!(agg.for_store().1.is_empty());
}

#[test]
fn replace_swaps_the_whole_view_and_moves_the_version() {
    let agg = aggregator();
    let r = shop();
    agg.fold(
        &obs(1, "10.0.0.1:40000", "10.0.1.9:5432", Initiator::Local),
        &r,
    );
    let before = agg.changes();
    let other = aggregator();
    other.fold(
        &obs(2, "10.0.0.2:7070", "203.0.113.7:50000", Initiator::Remote),
        &r,
    );
    let mut view = other.view();
    let dropped = view.graph.edges.keys().next().unwrap().clone();
    view.drops
        .insert(dropped.clone(), view.graph.edges[&dropped]);
    agg.replace(&view);
    assert!(agg.changes() > before);
    let got = agg.view();
    assert_eq!(got.graph, view.graph, "the old edge is gone");
    assert_eq!(got.drops, view.drops);
    // Again, with nothing: everything goes.
    agg.replace(&GraphView::default());
    assert_eq!(agg.view().graph, FlowGraph::default());
    assert_eq!(agg.edge_count(), 0);
}

#[test]
fn records_of_flows_to_outside_peers_carry_the_names_dns_gave_the_pod() {
    let names = Arc::new(crate::dns::Names::new(crate::dns::NamesOptions::default()));
    let agg = aggregator_with(Options {
        names: Some(Arc::clone(&names)),
        ..Options::default()
    });
    let r = shop();
    let o = obs(1, "10.0.0.1:43210", "203.0.113.10:443", Initiator::Local);
    let answer = crate::dns::Answer {
        query: "api.payments.example".into(),
        rcode: crate::dns::Rcode::NoError,
        cnames: Vec::new(),
        addresses: vec![("203.0.113.10".parse().expect("ip"), 30)],
    };
    // the answer came a second before the flow, to this pod only
    names.record(
        "10.0.0.1".parse().expect("ip"),
        &answer,
        o.first_seen - 1_000_000_000,
    );
    agg.fold(&o, &r);
    // the same peer from another pod, and from the peer's side
    agg.fold(
        &obs(2, "10.0.0.2:43211", "203.0.113.10:443", Initiator::Local),
        &r,
    );
    agg.fold(
        &obs(1, "10.0.0.1:8080", "203.0.113.10:50000", Initiator::Remote),
        &r,
    );

    let records = agg.recent(10, |_| true);
    let names_of = |i: usize| {
        let rec: &FlowRecord = &records[i];
        (
            rec.source_names
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            rec.destination_names
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        names_of(0),
        (vec![], vec!["api.payments.example".to_owned()])
    );
    assert_eq!(names_of(1), (vec![], vec![]), "another pod did not ask");
    assert_eq!(
        names_of(2),
        (vec!["api.payments.example".to_owned()], vec![])
    );
}

#[test]
fn the_graph_keeps_the_names_flows_carried_per_address_and_workload() {
    let names = Arc::new(crate::dns::Names::new(crate::dns::NamesOptions::default()));
    let agg = aggregator_with(Options {
        names: Some(Arc::clone(&names)),
        ..Options::default()
    });
    let r = shop();
    let first = obs(1, "10.0.0.1:43210", "203.0.113.10:443", Initiator::Local);
    let answer = |ip: &str| crate::dns::Answer {
        query: "api.payments.example".into(),
        rcode: crate::dns::Rcode::NoError,
        cnames: Vec::new(),
        addresses: vec![(ip.parse().expect("ip"), 30)],
    };
    let pod: IpAddr = "10.0.0.1".parse().expect("ip");
    names.record(
        pod,
        &answer("203.0.113.10"),
        first.first_seen - 1_000_000_000,
    );
    agg.fold(&first, &r);
    // re-pointed: a later answer, a later flow to the new address
    let mut second = obs(1, "10.0.0.1:43211", "203.0.113.11:443", Initiator::Local);
    second.first_seen = first.first_seen + 3_000_000_000;
    second.last_seen = second.first_seen + 1_000;
    names.record(pod, &answer("203.0.113.11"), second.first_seen - 1);
    agg.fold(&second, &r);
    // an unnamed address stays out
    agg.fold(
        &obs(1, "10.0.0.1:43212", "198.51.100.1:443", Initiator::Local),
        &r,
    );

    let graph = agg.graph();
    let by_address = &graph.external_names["api.payments.example"];
    assert_eq!(graph.external_names.len(), 1);
    assert_eq!(
        by_address
            .keys()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["203.0.113.10", "203.0.113.11"]
    );
    let seen = &by_address[&"203.0.113.11".parse::<IpAddr>().expect("ip")];
    assert_eq!(
        (seen.first_seen, seen.last_seen),
        (second.first_seen, second.last_seen)
    );
    assert_eq!(
        seen.workloads
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["shop/frontend"]
    );

    // A restore brings them back; a replace swaps them.
    let restored = aggregator();
    restored.restore(&graph);
    assert_eq!(restored.graph(), graph);
    restored.replace(&GraphView::default());
    assert!(restored.graph().external_names.is_empty());
}

#[test]
fn an_nxdomain_answer_goes_to_the_flow_stream_with_its_pod() {
    let agg = Aggregator::new(Options::default(), Arc::new(crate::metrics::Metrics::new()));
    let r = shop();
    agg.record_dns_answer(
        Protocol::Udp,
        1,
        "10.0.0.1:40000".parse().unwrap(),
        "10.96.0.10:53".parse().unwrap(),
        1_700_000_000_000_000_000,
        DnsAnswer {
            query: Arc::from("nope.example"),
            rcode: 3,
        },
        &r,
    );
    let records = agg.recent(10, |_| true);
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(
        record.dns.as_ref().map(|d| (&*d.query, d.rcode)),
        Some(("nope.example", 3))
    );
    assert_eq!(
        record.source_pod.as_ref().map(|p| p.name.as_str()),
        Some("frontend-a")
    );
    assert!(agg.graph().edges.is_empty(), "an answer makes no edge");
}
