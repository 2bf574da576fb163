//! Damaged stores: refused without a panic and left as they are, or
//! repaired with what can be read.

use std::collections::BTreeMap;

use weir_generator::model::WorkloadKind;

use super::*;

/// A graph of `n` edges (a few pages of rows).
fn graph(n: u16) -> FlowGraph {
    let mut g = FlowGraph::default();
    for i in 0..n {
        let web = WorkloadRef::new("shop", WorkloadKind::Deployment, format!("web-{i}"));
        g.workloads.insert(
            web.clone(),
            WorkloadInfo {
                labels: BTreeMap::from([("app".into(), format!("web-{i}"))]),
                ..WorkloadInfo::default()
            },
        );
        let external: IpAddr = format!("192.0.2.{}", i % 250 + 1).parse().unwrap();
        if i % 4 == 0 {
            g.name_address(
                &format!("svc-{}.example", i % 16),
                external,
                &web,
                1_700_000_000_000_000_000,
                1_700_000_100_000_000_000,
            );
        }
        g.record(
            EdgeKey {
                source: NodeId::Workload(web),
                target: NodeId::External(external),
                protocol: Protocol::Tcp,
                port: 1000 + i,
            },
            &EdgeStats {
                packets: 10,
                bytes: 1000,
                connections: 1,
                first_seen: 1_700_000_000_000_000_000,
                last_seen: 1_700_000_100_000_000_000,
                ..EdgeStats::default()
            },
        );
    }
    g
}

/// A store saved twice (an older and a newer graph), closed cleanly.
fn saved_store(dir: &Path) -> Vec<u8> {
    let (store, _) = Store::open(dir, 100).unwrap();
    store.save(&graph(200), 200).unwrap();
    store.save(&graph(400), 300).unwrap();
    drop(store);
    std::fs::read(dir.join(FILE_NAME)).unwrap()
}

/// The three damages: cut to 4 KiB, cut in half, 4 KiB of garbage in the
/// middle.
fn damages(bytes: &[u8]) -> [(&'static str, Vec<u8>); 3] {
    // Over the middle one of the pages that hold rows.
    let mut garbage = bytes.to_vec();
    let row_pages: Vec<usize> = (0..bytes.len() / 4096)
        .filter(|p| {
            bytes[p * 4096..(p + 1) * 4096]
                .windows(7)
                .any(|w| w == b"\"port\":")
        })
        .collect();
    let page = row_pages[row_pages.len() / 2];
    for (i, b) in garbage[page * 4096..(page + 1) * 4096]
        .iter_mut()
        .enumerate()
    {
        *b = u8::try_from(i * 7 % 251).unwrap();
    }
    [
        ("cut to 4 KiB", bytes[..4096].to_vec()),
        ("cut in half", bytes[..bytes.len() / 2].to_vec()),
        ("garbage in the middle", garbage),
    ]
}

#[test]
fn a_damaged_store_is_refused_without_a_panic_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = saved_store(dir.path());
    let path = dir.path().join(FILE_NAME);
    for (damage, damaged) in damages(&bytes) {
        std::fs::write(&path, &damaged).unwrap();
        let err = Store::open(dir.path(), 5).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, StoreError::Corrupt { .. }),
            "{damage}: {message}"
        );
        assert!(
            message.contains(&path.display().to_string()),
            "{damage}: {message}"
        );
        assert!(message.contains("--repair-store"), "{damage}: {message}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            damaged,
            "{damage}: the file changed"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "{damage}"
        );
    }
}

#[test]
fn an_intact_store_is_not_repaired() {
    let dir = tempfile::tempdir().unwrap();
    saved_store(dir.path());
    let (_store, loaded, repair) = Store::repair(dir.path(), 5).unwrap();
    assert_eq!(repair, Repair::Intact);
    assert_eq!(loaded.graph, graph(400));
}

#[test]
fn repair_keeps_what_can_be_read_and_says_what_was_lost() {
    let newest = graph(400);
    for (damage, damaged) in damages(&saved_store(tempfile::tempdir().unwrap().path())) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, &damaged).unwrap();
        let (store, loaded, repair) = Store::repair(dir.path(), 5).unwrap();
        let message = repair.to_string();
        let kept = match &repair {
            Repair::Recovered { kept, .. } | Repair::Nothing { kept, .. } => kept.clone(),
            Repair::Intact => panic!("{damage}: called intact"),
        };
        // The damaged file is kept as it was, beside the new store.
        assert_eq!(kept.parent(), Some(dir.path()), "{damage}");
        assert_eq!(std::fs::read(&kept).unwrap(), damaged, "{damage}");
        assert!(
            message.contains(&kept.display().to_string()),
            "{damage}: {message}"
        );
        assert!(message.contains("lost"), "{damage}: {message}");
        // What was recovered is what had been saved, nothing invented.
        for (key, stats) in &loaded.graph.edges {
            let saved = graph(400)
                .edges
                .get(key)
                .copied()
                .or_else(|| graph(200).edges.get(key).copied());
            assert_eq!(saved, Some(*stats), "{damage}: {key:?}");
        }
        match damage {
            "cut to 4 KiB" => {
                assert!(
                    matches!(repair, Repair::Nothing { .. }),
                    "{damage}: {message}"
                );
                assert!(loaded.graph.edges.is_empty());
                assert_eq!(loaded.window_start, 5);
            }
            _ => {
                // Every page but the lost ones still reads.
                let Repair::Recovered { edges, how, .. } = repair else {
                    panic!("{damage}: {message}")
                };
                assert!(
                    edges > 0 && edges < newest.edges.len(),
                    "{damage}: {message}"
                );
                assert_eq!(edges, loaded.graph.edges.len());
                assert_eq!(how, How::RowByRow, "{damage}");
                assert!(
                    message.contains(&format!("recovered {edges} edges")),
                    "{message}"
                );
                assert_eq!(loaded.window_start, 100, "{damage}");
            }
        }
        // The new store holds what was recovered.
        drop(store);
        let (_store, reopened) = Store::open(dir.path(), 6).unwrap();
        assert_eq!(reopened.graph, loaded.graph, "{damage}");
    }
}
