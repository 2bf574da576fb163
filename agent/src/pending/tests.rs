use std::time::Duration;

use weir_generator::model::{
    EdgeKey, EdgeStats, NodeId, Protocol, VerdictCounts, WorkloadKind, WorkloadRef,
};

use super::*;

fn key(source: &str, target: &str, port: u16) -> EdgeKey {
    let node = |s: &str| {
        let (ns, name) = s.split_once('/').unwrap();
        NodeId::Workload(WorkloadRef::new(ns, WorkloadKind::Deployment, name))
    };
    EdgeKey {
        source: node(source),
        target: node(target),
        protocol: Protocol::Tcp,
        port,
    }
}

fn stats(first: u64, last: u64, verdicts: VerdictCounts) -> EdgeStats {
    EdgeStats {
        packets: 2,
        bytes: 120,
        connections: verdicts.forwarded + verdicts.audit + verdicts.dropped,
        first_seen: first,
        last_seen: last,
        verdicts,
    }
}

/// A view with `audited` learned edges (audit count) and `dropped` drops.
fn view(audited: &[(&EdgeKey, u64, u64)], dropped: &[(&EdgeKey, u64, u64)]) -> GraphView {
    let mut view = GraphView::default();
    for (k, n, last) in audited {
        view.graph.edges.insert(
            (*k).clone(),
            stats(
                1,
                *last,
                VerdictCounts {
                    forwarded: 5,
                    audit: *n,
                    dropped: 0,
                },
            ),
        );
    }
    for (k, n, last) in dropped {
        view.drops.insert(
            (*k).clone(),
            stats(
                *last - 1,
                *last,
                VerdictCounts {
                    forwarded: 0,
                    audit: 0,
                    dropped: *n,
                },
            ),
        );
    }
    view
}

#[test]
fn the_queue_counts_audits_and_drops_across_a_restart() {
    let a = key("shop/loadgen", "data/store", 6379);
    let b = key("shop/frontend", "shop/cart", 7070);
    let mut q = QueueState::default();
    // A learned edge with no audit verdict is not queued.
    let mut quiet = view(&[], &[]);
    quiet
        .graph
        .edges
        .insert(b.clone(), stats(1, 2, VerdictCounts::default()));
    assert!(!q.observe(&quiet));
    assert!(q.seen.is_empty());

    assert!(q.observe(&view(&[(&b, 2, 100)], &[(&a, 1, 50)])));
    assert_eq!((q.seen[&a].dropped, q.seen[&a].audit), (1, 0));
    assert_eq!((q.seen[&a].first_seen, q.seen[&a].last_seen), (49, 50));
    // An audited edge's first sight is its last packet then, not the
    // edge's first packet (it may have been learned long before).
    assert_eq!((q.seen[&b].audit, q.seen[&b].first_seen), (2, 100));
    // The same snapshot again changes nothing.
    assert!(!q.observe(&view(&[(&b, 2, 100)], &[(&a, 1, 50)])));
    // Growth adds what grew.
    assert!(q.observe(&view(&[(&b, 2, 100)], &[(&a, 3, 70)])));
    assert_eq!((q.seen[&a].dropped, q.seen[&a].last_seen), (3, 70));
    // The agent restarted: drops count from zero again, and count whole.
    assert!(q.observe(&view(&[(&b, 2, 100)], &[(&a, 1, 90)])));
    assert_eq!((q.seen[&a].dropped, q.seen[&a].last_seen), (4, 90));
    assert_eq!(q.seen[&a].first_seen, 49);
}

#[test]
fn a_rejection_holds_for_its_window_and_an_approval_until_denied_again() {
    let a = key("shop/loadgen", "data/store", 6379);
    let window = Duration::from_nanos(1_000);
    let mut q = QueueState::default();
    assert!(q.observe(&view(&[], &[(&a, 1, 500)])));
    assert_eq!(q.decided(&a, window), None);

    q.decide(a.clone(), DecisionKind::Rejected, 600);
    assert_eq!(
        q.decided(&a, window).map(|d| d.kind),
        Some(DecisionKind::Rejected)
    );
    // Seen again inside the window: still out.
    q.observe(&view(&[], &[(&a, 2, 1_500)]));
    assert!(q.decided(&a, window).is_some());
    // Seen again after it: proposed again.
    q.observe(&view(&[], &[(&a, 3, 1_700)]));
    assert_eq!(q.decided(&a, window), None);

    q.decide(a.clone(), DecisionKind::Approved, 1_800);
    assert!(q.decided(&a, window).is_some());
    // Denied after the approval (the policy was removed): back.
    q.observe(&view(&[], &[(&a, 4, 1_801)]));
    assert_eq!(q.decided(&a, window), None);
}

#[test]
fn the_file_keeps_counts_and_decisions_and_names_itself_when_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let file = QueueFile::in_dir(dir.path());
    assert_eq!(file.load().unwrap(), QueueState::default());

    let a = key("shop/loadgen", "data/store", 6379);
    let b = key("shop/frontend", "shop/cart", 7070);
    let queue = Queue::load(file.clone(), DEFAULT_REJECT_WINDOW).unwrap();
    queue.observe(&view(&[(&b, 2, 100)], &[(&a, 1, 50)]));
    queue.update(|s| {
        s.decide(b.clone(), DecisionKind::Rejected, 7);
        ((), true)
    });
    assert!(queue.save_if_changed().unwrap());
    assert!(!queue.save_if_changed().unwrap(), "nothing changed since");
    let again = Queue::load(file.clone(), DEFAULT_REJECT_WINDOW).unwrap();
    assert_eq!(again.snapshot(), queue.snapshot());
    assert_eq!(
        again.snapshot().decisions[&b],
        Decision {
            kind: DecisionKind::Rejected,
            at: 7
        }
    );

    std::fs::write(
        file.path(),
        r#"{"format_version": 1, "entries": [{"edge": 3}]}"#,
    )
    .unwrap();
    let error = crate::error_chain::chain(&file.load().unwrap_err());
    assert!(
        error.contains(&file.path().display().to_string()) && error.contains("`entries[0].edge`"),
        "{error}"
    );
    std::fs::write(file.path(), r#"{"format_version": 9, "entries": []}"#).unwrap();
    let error = file.load().unwrap_err().to_string();
    assert!(error.contains("format_version 9"), "{error}");
    // Left as it was.
    assert!(std::fs::read_to_string(file.path()).unwrap().contains('9'));
}

#[test]
fn edge_ids_and_policy_names_are_readable_and_valid() {
    let a = key("shop/loadgen", "data/store", 6379);
    assert_eq!(edge_id(&a), "shop/loadgen->data/store:6379/TCP");
    for direction in [
        weir_generator::eval::Direction::Egress,
        weir_generator::eval::Direction::Ingress,
    ] {
        let name = propose::policy_name(&a, direction);
        weir_generator::names::dns1123_subdomain(&name).unwrap();
    }
    assert_eq!(
        propose::policy_name(&a, weir_generator::eval::Direction::Ingress),
        "weir-allow-in-loadgen-to-store-6379-tcp"
    );
    let external = EdgeKey {
        target: NodeId::External("2001:db8::1".parse().unwrap()),
        ..a
    };
    let name = propose::policy_name(&external, weir_generator::eval::Direction::Egress);
    weir_generator::names::dns1123_subdomain(&name).unwrap();
}
