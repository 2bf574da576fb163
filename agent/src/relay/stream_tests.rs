//! The merged flow stream: order across nodes, the buffer's bounds, late
//! records, one side of a cross-node connection, reconnects.

use std::time::{Duration, Instant};

use super::stream::{MergeStats, Merger, Options};
use crate::{
    api::wire::{EndpointJson, EndpointRefJson, FlowJson, IpJson, L4Json, TcpJson, WeirJson},
    timestamp::rfc3339,
};

/// 2023-11-14T22:13:20Z.
const T0: u64 = 1_700_000_000_000_000_000;
const MS: u64 = 1_000_000;

/// A record `node` reported at `T0 + ms`, numbered `seq` in its stream,
/// seen from the initiator's side (`initiator: local`).
fn flow(node: &str, ms: u64, seq: u64) -> FlowJson {
    FlowJson {
        time: rfc3339(T0 + ms * MS),
        verdict: "FORWARDED".to_owned(),
        drop_reason_desc: None,
        ip: IpJson {
            source: "10.151.0.1".parse().expect("address"),
            destination: "10.152.0.1".parse().expect("address"),
            ip_version: "IPv4".to_owned(),
        },
        l4: L4Json::Tcp(TcpJson {
            source_port: 40000,
            destination_port: 80,
            flags: [("SYN".to_owned(), true)].into(),
        }),
        source: EndpointJson {
            namespace: Some("shop".to_owned()),
            pod_name: Some("web-0".to_owned()),
            ..EndpointJson::default()
        },
        destination: EndpointJson {
            namespace: Some("shop".to_owned()),
            pod_name: Some("db-0".to_owned()),
            ..EndpointJson::default()
        },
        source_names: Vec::new(),
        destination_names: Vec::new(),
        kind: "L3_L4".to_owned(),
        l7: None,
        node_name: node.to_owned(),
        traffic_direction: "EGRESS".to_owned(),
        is_reply: Some(false),
        summary: "TCP Flags: SYN".to_owned(),
        weir: WeirJson {
            packets: 1,
            bytes: 60,
            initiator: "local".to_owned(),
            endpoint: EndpointRefJson::default(),
            new_flow: true,
            closed: false,
            seq: (seq != 0).then_some(seq),
            ..WeirJson::default()
        },
    }
}

/// The responder's report of the same connection, on `node`, whose
/// initiator runs on `initiator_node`.
fn responder(node: &str, initiator_node: Option<&str>, ms: u64, seq: u64) -> FlowJson {
    let mut f = flow(node, ms, seq);
    f.traffic_direction = "INGRESS".to_owned();
    "remote".clone_into(&mut f.weir.initiator);
    f.weir.peer_node = initiator_node.map(str::to_owned);
    f
}

/// (node, ms after T0) of each record.
fn seen(out: &[FlowJson]) -> Vec<(String, u64)> {
    out.iter()
        .map(|f| {
            let ns = crate::timestamp::parse_rfc3339(&f.time).expect("time");
            (f.node_name.clone(), (ns - T0) / MS)
        })
        .collect()
}

fn times(out: &[FlowJson]) -> Vec<u64> {
    seen(out).into_iter().map(|(_, ms)| ms).collect()
}

fn merger(max_buffered: usize, max_delay_ms: u64) -> Merger {
    Merger::new(Options {
        max_buffered,
        max_delay: Duration::from_millis(max_delay_ms),
        both_sides: false,
    })
}

#[test]
fn streams_of_skewed_nodes_come_out_in_time_order_with_their_node() {
    let mut m = merger(100, 1000);
    let now = Instant::now();
    let mut out = Vec::new();
    for node in ["a", "b", "c"] {
        m.connect(node);
    }
    // Each node in its own order; c's clock is 40 ms ahead, so its records
    // arrive before a's and b's of the same time.
    for i in 0..30 {
        m.push("c", flow("c", i * 10 + 45, i + 1), now, &mut out);
        m.push("a", flow("a", i * 10, i + 1), now, &mut out);
        m.push("b", flow("b", i * 10 + 5, i + 1), now, &mut out);
    }
    m.finish(&mut out);
    let got = times(&out);
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(got, sorted);
    assert_eq!(got.len(), 90);
    let nodes = seen(&out);
    assert_eq!(nodes[0], ("a".to_owned(), 0));
    assert_eq!(nodes[1], ("b".to_owned(), 5));
    assert_eq!(nodes.iter().filter(|(n, _)| n == "c").count(), 30);
    let stats = m.stats();
    assert_eq!(
        (stats.received, stats.emitted, stats.out_of_order),
        (90, 90, 0)
    );
}

#[test]
fn the_buffer_never_holds_more_than_its_count_bound() {
    let mut m = merger(10, 1000);
    let now = Instant::now();
    let mut out = Vec::new();
    m.connect("a");
    for i in 0..25 {
        m.push("a", flow("a", 100 - i, 0), now, &mut out);
        assert!(m.buffered() <= 10, "{} buffered after {i}", m.buffered());
    }
    // The count bound let the 15 earliest known at the time go.
    assert_eq!(out.len(), 15);
    assert_eq!(m.buffered(), 10);
    m.finish(&mut out);
    assert_eq!(out.len(), 25);
}

#[test]
fn a_record_waits_at_most_the_age_bound_after_it_arrived() {
    let mut m = merger(100, 1000);
    let start = Instant::now();
    let mut out = Vec::new();
    m.connect("a");
    m.connect("b");
    m.push("a", flow("a", 50, 1), start, &mut out);
    m.push(
        "b",
        flow("b", 10, 1),
        start + Duration::from_millis(400),
        &mut out,
    );
    assert_eq!(m.next_due(), Some(start + Duration::from_secs(1)));
    m.flush_due(start + Duration::from_millis(999), &mut out);
    assert!(out.is_empty());
    // a's record is due; b's is earlier, so it goes first.
    m.flush_due(start + Duration::from_secs(1), &mut out);
    assert_eq!(times(&out), [10, 50]);
    assert_eq!(m.buffered(), 0);
    assert_eq!(m.next_due(), None);

    // A record alone goes when its own time comes, not before.
    m.push(
        "b",
        flow("b", 60, 2),
        start + Duration::from_secs(2),
        &mut out,
    );
    assert_eq!(m.next_due(), Some(start + Duration::from_secs(3)));
    m.flush_due(start + Duration::from_millis(2500), &mut out);
    assert_eq!(out.len(), 2);
    // push flushes what is due too.
    m.push(
        "a",
        flow("a", 70, 2),
        start + Duration::from_secs(3),
        &mut out,
    );
    assert_eq!(times(&out), [10, 50, 60]);
}

#[test]
fn a_record_later_than_the_buffer_is_emitted_and_counted_out_of_order() {
    let mut m = merger(5, 1000);
    let now = Instant::now();
    let mut out = Vec::new();
    m.connect("a");
    m.connect("b");
    for i in 0..20 {
        m.push("a", flow("a", 100 + i, 0), now, &mut out);
    }
    // b's clock is far behind: its record is older than what was emitted.
    m.push("b", flow("b", 3, 0), now, &mut out);
    m.finish(&mut out);
    assert_eq!(out.len(), 21);
    assert!(seen(&out).contains(&("b".to_owned(), 3)));
    assert_eq!(m.stats().out_of_order, 1);
    // Records in the buffer's reach are put in order, not counted.
    let mut m = merger(5, 1000);
    let mut out = Vec::new();
    for ms in [10, 12, 11, 14, 13] {
        m.push("a", flow("a", ms, 0), now, &mut out);
    }
    m.finish(&mut out);
    assert_eq!(times(&out), [10, 11, 12, 13, 14]);
    assert_eq!(m.stats().out_of_order, 0);
}

#[test]
fn a_cross_node_connection_is_shown_once_from_its_initiator() {
    let now = Instant::now();
    let mut m = merger(100, 1000);
    let mut out = Vec::new();
    m.connect("a");
    m.connect("b");
    m.push("a", flow("a", 1, 1), now, &mut out);
    m.push("b", responder("b", Some("a"), 2, 1), now, &mut out);
    // An external client of b's pod: b's report is the only one.
    m.push("b", responder("b", None, 3, 2), now, &mut out);
    // Both ends on b: the agent shows both reports, so does the relay.
    m.push("b", responder("b", Some("b"), 4, 3), now, &mut out);
    m.finish(&mut out);
    assert_eq!(
        seen(&out),
        [("a".into(), 1), ("b".into(), 3), ("b".into(), 4)]
    );
    assert_eq!(m.stats().responder_sides, 1);

    // Asked for both sides: both.
    let mut m = Merger::new(Options {
        both_sides: true,
        ..Options::default()
    });
    let mut out = Vec::new();
    m.connect("a");
    m.connect("b");
    m.push("a", flow("a", 1, 1), now, &mut out);
    m.push("b", responder("b", Some("a"), 2, 1), now, &mut out);
    m.finish(&mut out);
    assert_eq!(seen(&out), [("a".into(), 1), ("b".into(), 2)]);
    let stats = m.stats();
    assert_eq!((stats.responder_sides, stats.emitted), (0, 2));
}

#[test]
fn the_responder_side_is_shown_while_the_initiators_node_is_not_streaming() {
    let now = Instant::now();
    let mut m = merger(100, 1000);
    let mut out = Vec::new();
    m.connect("b");
    // a is not (or not yet) merged: b's report is all there is.
    m.push("b", responder("b", Some("a"), 1, 1), now, &mut out);
    m.connect("a");
    m.push("b", responder("b", Some("a"), 2, 2), now, &mut out);
    m.disconnect("a");
    m.push("b", responder("b", Some("a"), 3, 3), now, &mut out);
    m.finish(&mut out);
    assert_eq!(times(&out), [1, 3]);
}

#[test]
fn a_reconnected_agent_neither_loses_nor_repeats_records() {
    let start = Instant::now();
    let mut m = merger(100, 1000);
    let mut out = Vec::new();
    m.connect("a");
    m.connect("b");
    assert_eq!(m.resume_after("a"), None);
    for seq in 1..=3 {
        m.push("a", flow("a", seq * 10, seq), start, &mut out);
    }
    m.push("b", flow("b", 15, 7), start, &mut out);
    // a's stream breaks with its three records still buffered.
    m.disconnect("a");
    assert_eq!(m.buffered(), 4);
    assert_eq!(m.resume_after("a"), Some(3));
    // It resumes after 3; what it sends again all the same is dropped.
    m.connect("a");
    for seq in 2..=5 {
        m.push("a", flow("a", seq * 10, seq), start, &mut out);
    }
    m.flush_due(start + Duration::from_secs(1), &mut out);
    assert_eq!(
        seen(&out),
        [
            ("a".into(), 10),
            ("b".into(), 15),
            ("a".into(), 20),
            ("a".into(), 30),
            ("a".into(), 40),
            ("a".into(), 50)
        ]
    );
    assert_eq!(m.stats().replayed, 2);
    assert_eq!(m.resume_after("a"), Some(5));

    // A restarted agent numbers above its last run: nothing is dropped.
    m.disconnect("a");
    m.connect("a");
    let restarted = 1_000_000;
    m.push("a", flow("a", 60, restarted), start, &mut out);
    m.finish(&mut out);
    assert_eq!(times(&out).last(), Some(&60));
    assert_eq!(m.stats().replayed, 2);
}

#[test]
fn a_record_without_a_node_gets_the_node_it_came_from_and_a_bad_time_passes() {
    let now = Instant::now();
    let mut m = merger(100, 1000);
    let mut out = Vec::new();
    m.push("a", flow("", 1, 0), now, &mut out);
    let mut bad = flow("b", 2, 0);
    "yesterday".clone_into(&mut bad.time);
    m.push("b", bad, now, &mut out);
    // The bad time goes at once; the good one waits for its bound.
    assert_eq!(out.len(), 1);
    m.finish(&mut out);
    assert_eq!(out[1].node_name, "a");
    assert_eq!(
        m.stats(),
        MergeStats {
            received: 2,
            emitted: 2,
            bad_times: 1,
            ..MergeStats::default()
        }
    );
}

/// Random interleavings of skewed, slightly disordered streams: nothing is
/// lost or repeated, the output is in order within the buffer's reach, and
/// the age queue stays bounded.
#[test]
fn random_interleavings_keep_every_record_once() {
    use proptest::{prelude::*, test_runner::TestRunner};
    let mut runner = TestRunner::default();
    let strategy = (
        2usize..6,
        proptest::collection::vec((0usize..6, 0u64..30), 1..300),
    );
    runner
        .run(&strategy, |(nodes, steps)| {
            let now = Instant::now();
            let mut m = merger(100, 1000);
            let mut out = Vec::new();
            let mut sent = vec![0u64; nodes];
            for node in 0..nodes {
                m.connect(&node.to_string());
            }
            for (step, (node, jitter)) in (0u64..).zip(steps) {
                let node = node % nodes;
                sent[node] += 1;
                let seq = sent[node];
                // A record a millisecond, with up to 30 ms of disorder, on
                // a clock `node` ms off.
                let ms = step + jitter + node as u64;
                m.push(
                    &node.to_string(),
                    flow(&node.to_string(), ms, seq),
                    now,
                    &mut out,
                );
            }
            m.finish(&mut out);
            let total: u64 = sent.iter().sum();
            prop_assert_eq!(out.len() as u64, total);
            let got = times(&out);
            prop_assert!(got.windows(2).all(|w| w[0] <= w[1]), "{:?}", got);
            let mut keys: Vec<(String, Option<u64>)> = out
                .iter()
                .map(|f| (f.node_name.clone(), f.weir.seq))
                .collect();
            keys.sort();
            keys.dedup();
            prop_assert_eq!(keys.len() as u64, total);
            Ok(())
        })
        .expect("property");
}

#[test]
fn records_passed_on_as_lines_merge_as_parsed_ones_do() {
    use super::raw_flow::{RawFlow, StreamLine};
    // Out of order, a responder's side hidden, a replay, a nameless agent.
    let mut nameless = flow("", 4, 2);
    nameless.weir.seq = Some(2);
    let input = [
        ("a", flow("a", 5, 1)),
        ("b", responder("b", Some("a"), 1, 1)),
        ("b", flow("b", 2, 2)),
        ("a", flow("a", 5, 1)),
        ("c", nameless),
        ("b", responder("b", Some("gone"), 3, 3)),
    ];
    let options = Options {
        max_buffered: 2,
        ..Options::default()
    };
    let now = Instant::now();
    let mut typed = Merger::<FlowJson>::new(options.clone());
    let mut raw = Merger::<RawFlow>::new(options);
    for node in ["a", "b", "c"] {
        typed.connect(node);
        raw.connect(node);
    }
    let (mut typed_out, mut raw_out) = (Vec::new(), Vec::new());
    for (node, record) in input {
        let line = serde_json::to_vec(&record).expect("json");
        let Ok(StreamLine::Flow(parsed)) = StreamLine::parse(&line) else {
            panic!("a record");
        };
        typed.push(node, record, now, &mut typed_out);
        raw.push(node, parsed, now, &mut raw_out);
    }
    typed.finish(&mut typed_out);
    raw.finish(&mut raw_out);
    assert_eq!(typed.stats(), raw.stats());
    let lines: Vec<FlowJson> = raw_out
        .into_iter()
        .map(|r| serde_json::from_slice(&r.into_line()).expect("a line of JSON"))
        .collect();
    assert_eq!(lines, typed_out);
    assert_eq!(seen(&typed_out).len(), 4, "{:?}", seen(&typed_out));
    assert!(
        typed_out.iter().any(|f| f.node_name == "c"),
        "named by the relay"
    );
}
