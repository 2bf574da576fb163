use weir_generator::model::{Protocol, VerdictCounts, WorkloadKind, WorkloadRef};

use super::*;

const MIN: u64 = 60_000_000_000;

fn workload(ns: &str, name: &str) -> NodeId {
    NodeId::Workload(WorkloadRef::new(ns, WorkloadKind::Deployment, name))
}

fn edge(src: (&str, &str), dst: (&str, &str), port: u16) -> EdgeKey {
    EdgeKey {
        source: workload(src.0, src.1),
        target: workload(dst.0, dst.1),
        protocol: Protocol::Tcp,
        port,
    }
}

fn stats(first_seen: u64, last_seen: u64) -> EdgeStats {
    EdgeStats {
        connections: 1,
        first_seen,
        last_seen,
        verdicts: VerdictCounts::default(),
        ..EdgeStats::default()
    }
}

/// The shop learned web -> api and api -> db before minute 10, and
/// blog -> blogdb (another namespace).
fn shop() -> FlowGraph {
    let mut graph = FlowGraph::default();
    for key in [
        edge(("shop", "web"), ("shop", "api"), 8080),
        edge(("shop", "api"), ("shop", "db"), 5432),
        edge(("blog", "web"), ("blog", "db"), 5432),
    ] {
        graph.edges.insert(key, stats(MIN, 9 * MIN));
    }
    graph
}

fn modes(list: &[(&str, Mode)]) -> BTreeMap<String, Mode> {
    list.iter().map(|(n, m)| ((*n).to_owned(), *m)).collect()
}

/// A guard that saw the shop in audit at minute 10, then the flip.
fn flipped(settings: Settings) -> Guard {
    let mut guard = Guard::default();
    let graph = shop();
    assert!(
        guard
            .follow_modes(
                &modes(&[("shop", Mode::Audit)]),
                Some(&graph),
                |_| settings,
                10 * MIN
            )
            .is_empty()
    );
    guard.check(&BTreeMap::new(), |_, _| true, 10 * MIN);
    let opened = guard.follow_modes(
        &modes(&[("shop", Mode::Enforce)]),
        Some(&graph),
        |_| settings,
        11 * MIN,
    );
    assert_eq!(opened, ["shop"]);
    guard
}

#[test]
fn a_window_learns_the_namespaces_edges_from_before_the_flip() {
    let guard = flipped(Settings::default());
    let window = &guard.windows["shop"];
    // The flip happened after the last check (minute 10).
    assert_eq!(window.started_at, 10 * MIN);
    assert_eq!(window.until, 25 * MIN);
    assert_eq!(
        window.learned,
        [
            edge(("shop", "api"), ("shop", "db"), 5432),
            edge(("shop", "web"), ("shop", "api"), 8080),
        ]
        .into_iter()
        .collect()
    );
    assert_eq!(window.learned.len(), 2);
    assert!(window.dropped.is_empty());
}

/// The check that sees the flip may come long after the previous one (a
/// busy node): an edge first seen in between, just before the flip, is
/// learned all the same.
#[test]
fn an_edge_first_seen_between_the_last_check_and_a_late_flip_check_is_learned() {
    let mut guard = Guard::default();
    let mut graph = shop();
    let audit = modes(&[("shop", Mode::Audit)]);
    guard.follow_modes(&audit, Some(&graph), |_| Settings::default(), 10 * MIN);
    assert!(
        guard
            .check(&BTreeMap::new(), |_, _| true, 10 * MIN)
            .is_empty()
    );
    // Learned at minute 11, the flip at minute 12, seen at minute 13.
    let late = edge(("shop", "web"), ("shop", "cache"), 6379);
    graph.edges.insert(late.clone(), stats(11 * MIN, 11 * MIN));
    let opened = guard.follow_modes(
        &modes(&[("shop", Mode::Enforce)]),
        Some(&graph),
        |_| Settings::default(),
        13 * MIN,
    );
    assert_eq!(opened, ["shop"]);
    let window = &guard.windows["shop"];
    assert_eq!(window.started_at, 10 * MIN);
    assert!(window.learned.contains(&late), "{window:?}");
    assert_eq!(window.learned.len(), 3);
}

#[test]
fn a_dropped_learned_edge_trips_the_window() {
    let mut guard = flipped(Settings::default());
    let db = edge(("shop", "api"), ("shop", "db"), 5432);
    // A drop from before the flip (audit would not drop; a stale entry) or
    // on an edge never learned does not count.
    let mut drops = BTreeMap::new();
    drops.insert(db.clone(), stats(MIN, 9 * MIN));
    drops.insert(
        edge(("shop", "web"), ("shop", "db"), 5432),
        stats(11 * MIN, 11 * MIN),
    );
    assert!(guard.check(&drops, |_, _| true, 11 * MIN).is_empty());
    // The learned edge dropped after the flip does.
    drops.insert(db.clone(), stats(MIN, 11 * MIN));
    let trips = guard.check(&drops, |_, _| true, 12 * MIN);
    assert_eq!(
        trips,
        [Trip {
            namespace: "shop".into(),
            edges: vec![db],
            max_drops: 1
        }]
    );
    // Until the revert lands, it trips again (the revert is retried).
    assert_eq!(guard.check(&drops, |_, _| true, 13 * MIN).len(), 1);
    guard.reverted(
        "shop",
        Reverted {
            at: 13 * MIN,
            reason: "r".into(),
            edges: vec![],
            policies: vec![],
        },
    );
    assert!(guard.windows.is_empty());
    assert!(guard.check(&drops, |_, _| true, 14 * MIN).is_empty());
}

#[test]
fn drops_another_namespace_made_do_not_count() {
    let mut guard = flipped(Settings::default());
    let mut drops = BTreeMap::new();
    drops.insert(
        edge(("shop", "api"), ("shop", "db"), 5432),
        stats(MIN, 11 * MIN),
    );
    assert!(
        guard
            .check(&drops, |ns, _| ns != "shop", 12 * MIN)
            .is_empty()
    );
}

#[test]
fn the_threshold_counts_distinct_learned_edges() {
    let mut guard = flipped(Settings {
        max_drops: 2,
        ..Settings::default()
    });
    let mut drops = BTreeMap::new();
    drops.insert(
        edge(("shop", "api"), ("shop", "db"), 5432),
        stats(MIN, 11 * MIN),
    );
    assert!(guard.check(&drops, |_, _| true, 12 * MIN).is_empty());
    // The same edge again is still one.
    drops.insert(
        edge(("shop", "api"), ("shop", "db"), 5432),
        stats(MIN, 12 * MIN),
    );
    assert!(guard.check(&drops, |_, _| true, 13 * MIN).is_empty());
    drops.insert(
        edge(("shop", "web"), ("shop", "api"), 8080),
        stats(MIN, 13 * MIN),
    );
    assert_eq!(guard.check(&drops, |_, _| true, 14 * MIN)[0].edges.len(), 2);
}

#[test]
fn the_window_closes_when_it_runs_out_or_the_mode_changes() {
    let mut guard = flipped(Settings::default());
    assert!(
        guard
            .check(&BTreeMap::new(), |_, _| true, 24 * MIN)
            .is_empty()
    );
    assert!(guard.windows.contains_key("shop"));
    assert!(
        guard
            .check(&BTreeMap::new(), |_, _| true, 25 * MIN)
            .is_empty()
    );
    assert!(guard.windows.is_empty());
    // A late drop of a learned edge after the window: nothing.
    let mut drops = BTreeMap::new();
    drops.insert(
        edge(("shop", "api"), ("shop", "db"), 5432),
        stats(MIN, 26 * MIN),
    );
    assert!(guard.check(&drops, |_, _| true, 26 * MIN).is_empty());

    let mut guard = flipped(Settings::default());
    guard.follow_modes(
        &modes(&[("shop", Mode::Observe)]),
        None,
        |_| Settings::default(),
        12 * MIN,
    );
    assert!(guard.windows.is_empty());
}

#[test]
fn no_guard_and_a_zero_window_skip_the_flip() {
    let mut guard = Guard::default();
    let graph = shop();
    guard.follow_modes(&modes(&[]), Some(&graph), |_| Settings::default(), MIN);
    guard.skip_next("shop");
    assert!(
        guard
            .follow_modes(
                &modes(&[("shop", Mode::Enforce)]),
                Some(&graph),
                |_| Settings::default(),
                2 * MIN
            )
            .is_empty()
    );
    assert!(guard.unguarded.is_empty(), "the skip is used once");
    let zero = Settings {
        window: Duration::ZERO,
        ..Settings::default()
    };
    assert!(
        guard
            .follow_modes(
                &modes(&[("blog", Mode::Enforce), ("shop", Mode::Enforce)]),
                Some(&graph),
                |_| zero,
                3 * MIN
            )
            .is_empty()
    );
}

/// `weir.dev/guard-skip`, written with the mode label by `weir mode set
/// --kube --no-guard` and the relay: a flip seen at most five minutes
/// after the request skips the guard; a stale request, one well ahead of
/// the check, or a value that is not a time (reported) leaves it guarded.
#[test]
fn a_fresh_skip_annotation_skips_the_flip_and_a_stale_or_bad_one_does_not() {
    const SEC: u64 = 1_000_000_000;
    let graph = shop();
    let now = 20 * MIN;
    let flip = |value: &str| -> (Vec<String>, Vec<String>) {
        let annotations = BTreeMap::from([(SKIP_ANNOTATION.to_owned(), value.to_owned())]);
        let (settings, warnings) = settings("shop", Some(&annotations));
        let mut guard = Guard::default();
        let audit = modes(&[("shop", Mode::Audit)]);
        guard.follow_modes(&audit, Some(&graph), |_| settings, now - MIN);
        guard.check(&BTreeMap::new(), |_, _| true, now - MIN);
        let enforce = modes(&[("shop", Mode::Enforce)]);
        let opened = guard.follow_modes(&enforce, Some(&graph), |_| settings, now);
        assert_eq!(opened.is_empty(), guard.windows.is_empty());
        // The log's reason says so exactly when no window opened.
        let why = unguarded_because(&settings, false, now);
        assert_eq!(why.is_some(), opened.is_empty(), "{value}: {why:?}");
        if let Some(why) = why {
            assert!(
                why.starts_with("weir.dev/guard-skip asks for it ("),
                "{why}"
            );
        }
        (opened, warnings)
    };
    let at = crate::timestamp::rfc3339;
    let skipped = (Vec::<String>::new(), Vec::<String>::new());
    let guarded = (vec!["shop".to_owned()], Vec::<String>::new());
    assert_eq!(flip(&at(now - MIN)), skipped);
    assert_eq!(flip(&at(now - 5 * MIN)), skipped, "five minutes old");
    assert_eq!(flip(&at(now)), skipped);
    assert_eq!(
        flip(&at(now + 10 * SEC)),
        skipped,
        "the writer's clock ahead"
    );
    assert_eq!(flip("2026-12-07T10:00:00+01:00"), guarded, "stale");
    assert_eq!(flip(&at(now - 5 * MIN - SEC)), guarded, "stale");
    assert_eq!(flip(&at(now + MIN)), guarded, "after the check");
    assert_eq!(
        flip("yesterday"),
        (
            vec!["shop".to_owned()],
            vec![
                "namespace shop: annotation weir.dev/guard-skip=\"yesterday\" is not an RFC \
                 3339 time; the next flip to enforce is guarded"
                    .to_owned()
            ]
        )
    );
}

#[test]
fn namespaces_enforced_before_the_guard_first_looked_are_not_watched() {
    let mut guard = Guard::default();
    assert!(
        guard
            .follow_modes(
                &modes(&[("shop", Mode::Enforce)]),
                Some(&shop()),
                |_| Settings::default(),
                MIN
            )
            .is_empty()
    );
    assert!(guard.windows.is_empty());
}

/// A restart during a window: the saved state keeps the window, its
/// learned edges and what it counted, and the next drop trips it.
#[test]
fn a_restart_keeps_the_window_and_its_counts() {
    let dir = tempfile::tempdir().unwrap();
    let file = GuardFile::in_dir(dir.path());
    assert_eq!(file.load().unwrap(), Guard::default());
    let mut guard = flipped(Settings {
        max_drops: 2,
        ..Settings::default()
    });
    let mut drops = BTreeMap::new();
    drops.insert(
        edge(("shop", "api"), ("shop", "db"), 5432),
        stats(MIN, 11 * MIN),
    );
    assert!(guard.check(&drops, |_, _| true, 12 * MIN).is_empty());
    file.save(&guard).unwrap();

    // The new agent's aggregator forgot the drops it had not saved.
    let mut restarted = file.load().unwrap();
    assert_eq!(restarted, guard);
    assert!(
        restarted
            .follow_modes(
                &modes(&[("shop", Mode::Enforce)]),
                Some(&FlowGraph::default()),
                |_| Settings::default(),
                13 * MIN
            )
            .is_empty(),
        "the same mode after the restart is no new flip"
    );
    assert_eq!(restarted.windows["shop"].dropped.len(), 1);
    let mut drops = BTreeMap::new();
    drops.insert(
        edge(("shop", "web"), ("shop", "api"), 8080),
        stats(13 * MIN, 13 * MIN),
    );
    let trips = restarted.check(&drops, |_, _| true, 14 * MIN);
    assert_eq!(trips.len(), 1);
    assert_eq!(trips[0].edges.len(), 2);

    std::fs::write(file.path(), "{not json").unwrap();
    let error = format!("{}", file.load().unwrap_err());
    assert!(error.contains("guard.json"), "{error}");
}

#[test]
fn annotations_set_the_window_and_threshold_and_bad_values_say_so() {
    let annotations = |list: &[(&str, &str)]| -> BTreeMap<String, String> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    assert_eq!(settings("shop", None), (Settings::default(), vec![]));
    let (s, warnings) = settings(
        "shop",
        Some(&annotations(&[
            (WINDOW_ANNOTATION, "1h"),
            (MAX_DROPS_ANNOTATION, "3"),
        ])),
    );
    assert!(warnings.is_empty());
    assert_eq!(
        s,
        Settings {
            window: Duration::from_secs(3600),
            max_drops: 3,
            skip_at: None,
        }
    );
    assert_eq!(
        settings("shop", Some(&annotations(&[(WINDOW_ANNOTATION, "0")])))
            .0
            .window,
        Duration::ZERO
    );
    let (s, warnings) = settings(
        "shop",
        Some(&annotations(&[
            (WINDOW_ANNOTATION, "soon"),
            (MAX_DROPS_ANNOTATION, "0"),
        ])),
    );
    assert_eq!(s, Settings::default());
    assert_eq!(
        warnings,
        [
            "namespace shop: annotation weir.dev/guard-window=\"soon\" is not a duration \
             (15m, 1h, 0 for none); using the default 15m",
            "namespace shop: annotation weir.dev/guard-max-drops=\"0\" is not a whole number \
             of edges of at least 1; using the default 1",
        ]
    );
}

#[test]
fn the_reason_a_flip_is_unguarded_follows_the_order_follow_modes_checks() {
    let now = 20 * MIN;
    let fresh = Settings {
        skip_at: Some(now - MIN),
        ..Settings::default()
    };
    let zero = Settings {
        window: Duration::ZERO,
        ..fresh
    };
    assert_eq!(
        unguarded_because(&zero, true, now).as_deref(),
        Some("the mode was set with --no-guard")
    );
    assert_eq!(
        unguarded_because(&zero, false, now).as_deref(),
        Some("weir.dev/guard-window is 0")
    );
    assert!(unguarded_because(&fresh, false, now).is_some());
    assert_eq!(unguarded_because(&Settings::default(), false, now), None);
    let stale = Settings {
        skip_at: Some(now - 6 * MIN),
        ..Settings::default()
    };
    assert_eq!(unguarded_because(&stale, false, now), None);
}
