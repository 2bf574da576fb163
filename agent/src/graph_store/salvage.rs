//! What `--repair-store` can read of a damaged store.
//!
//! First redb's own repair, on an in-memory copy: it goes back to the last
//! commit whose pages all match their checksums, a consistent graph. When
//! no commit survives (a file cut short loses pages of every commit), the
//! rows are read one by one from the b-tree leaves that are still there:
//! weir's rows are JSON of known types, so a row that parses is one weir
//! wrote. A leaf is, in redb's file format 3, the byte 1, a padding byte,
//! the number of pairs (`u16`), the end offset of each key (`u32`), of
//! each value (`u32`, for variable-width values), then the keys and the
//! values, at a page boundary.

use weir_generator::model::{EdgeKey, EdgeStats, FlowGraph, NameSeen, WorkloadInfo, WorkloadRef};

use super::{EdgeRow, KEY_SAVED_AT, KEY_WINDOW_START, NameRow, Rows, check, read_graph};

/// What a repair could read.
pub(super) struct Salvaged {
    pub(super) graph: FlowGraph,
    pub(super) window_start: u64,
    pub(super) saved_at: Option<u64>,
    pub(super) dropped_rows: u64,
    pub(super) how: How,
}

/// How the graph was recovered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    /// The last commit whose pages all check: consistent as of its save.
    LastGoodCommit,
    /// Row by row from the pages that are left: possibly from several
    /// saves, each edge as last found.
    RowByRow,
}

const PAGE: usize = 4096;
const LEAF: u8 = 1;

/// Read what can be read of damaged `bytes`, or `None`.
pub(super) fn salvage(bytes: Vec<u8>, now: u64) -> Option<Salvaged> {
    last_good_commit(bytes.clone(), now).or_else(|| row_by_row(&bytes, now))
}

fn last_good_commit(mut bytes: Vec<u8>, now: u64) -> Option<Salvaged> {
    let declared = usize::try_from(check::declared_len(&bytes).ok()?).ok()?;
    if bytes.len() < declared {
        // Zeros where pages were lost: their checksums fail.
        bytes.resize(declared, 0);
    }
    check::force_full_repair(&mut bytes);
    check::quietly(|| {
        let mut db = check::open_copy(bytes)?;
        db.check_integrity().map_err(|e| e.to_string())?;
        match read_graph(&db, now, Rows::Lenient) {
            Ok(Some((loaded, dropped_rows))) => Ok(Salvaged {
                graph: loaded.graph,
                window_start: loaded.window_start,
                saved_at: loaded.saved_at,
                dropped_rows,
                how: How::LastGoodCommit,
            }),
            Ok(None) => Err("no weir store in it".to_owned()),
            Err(_) => Err("unreadable".to_owned()),
        }
    })
    .ok()
}

fn row_by_row(bytes: &[u8], now: u64) -> Option<Salvaged> {
    let mut graph = FlowGraph::default();
    let mut window_start: Option<u64> = None;
    let mut saved_at: Option<u64> = None;
    // The superheader is page 0.
    for start in (PAGE..bytes.len()).step_by(PAGE) {
        let page = &bytes[start..];
        for (key, value) in leaf_pairs(page, false) {
            let (Ok(key), Ok(value)) = (std::str::from_utf8(key), std::str::from_utf8(value))
            else {
                continue;
            };
            if let (Ok(edge), Ok(stats)) = (
                serde_json::from_str::<EdgeRow>(key),
                serde_json::from_str::<EdgeStats>(value),
            ) {
                let key = EdgeKey {
                    source: edge.source.into(),
                    target: edge.target.into(),
                    protocol: edge.protocol,
                    port: edge.port,
                };
                // An older save's copy of a row has seen less.
                let newer = graph.edges.get(&key).is_none_or(|old| {
                    (stats.last_seen, stats.packets) > (old.last_seen, old.packets)
                });
                if newer {
                    graph.edges.insert(key, stats);
                }
            } else if let (Ok(workload), Ok(info)) = (
                serde_json::from_str::<WorkloadRef>(key),
                serde_json::from_str::<WorkloadInfo>(value),
            ) {
                graph.workloads.entry(workload).or_insert(info);
            } else if let (Ok(row), Ok(seen)) = (
                serde_json::from_str::<NameRow>(key),
                serde_json::from_str::<NameSeen>(value),
            ) {
                // An older save's copy of a row has seen less: merge.
                graph
                    .external_names
                    .entry(row.name)
                    .or_default()
                    .entry(row.address)
                    .or_default()
                    .merge(&seen);
            }
        }
        // The meta table: string keys, u64 values.
        for (key, value) in leaf_pairs(page, true) {
            let Ok(value) = <[u8; 8]>::try_from(value).map(u64::from_le_bytes) else {
                continue;
            };
            match key {
                k if k == KEY_WINDOW_START.as_bytes() => {
                    window_start = Some(window_start.map_or(value, |w| w.min(value)));
                }
                k if k == KEY_SAVED_AT.as_bytes() => {
                    saved_at = Some(saved_at.map_or(value, |s| s.max(value)));
                }
                _ => {}
            }
        }
    }
    if graph.edges.is_empty() && graph.workloads.is_empty() {
        return None;
    }
    Some(Salvaged {
        graph,
        window_start: window_start.unwrap_or(now),
        saved_at,
        dropped_rows: 0,
        how: How::RowByRow,
    })
}

/// The pairs of a b-tree leaf at the start of `page`, if it is one:
/// variable-width keys, and values of 8 bytes (`fixed_u64`) or variable.
fn leaf_pairs(page: &[u8], fixed_u64: bool) -> Vec<(&[u8], &[u8])> {
    let mut pairs = Vec::new();
    if page.len() < 4 || page[0] != LEAF {
        return pairs;
    }
    let n = usize::from(u16::from_le_bytes([page[2], page[3]]));
    let offset = |i: usize| -> Option<usize> {
        let at = 4 + 4 * i;
        let raw = page.get(at..at + 4)?;
        usize::try_from(u32::from_le_bytes(raw.try_into().ok()?)).ok()
    };
    let tables = if fixed_u64 { 1 } else { 2 };
    let keys_start = 4 + 4 * n * tables;
    let mut key_start = keys_start;
    let mut key_ends = Vec::with_capacity(n);
    for i in 0..n {
        let Some(end) = offset(i).filter(|e| *e >= key_start && *e <= page.len()) else {
            return Vec::new();
        };
        key_ends.push(end);
        key_start = end;
    }
    let mut value_start = key_start;
    let mut key_start = keys_start;
    for (i, key_end) in key_ends.into_iter().enumerate() {
        let value_end = if fixed_u64 {
            value_start + 8
        } else {
            match offset(n + i) {
                Some(end) if end >= value_start => end,
                _ => return pairs,
            }
        };
        let (Some(key), Some(value)) = (
            page.get(key_start..key_end),
            page.get(value_start..value_end),
        ) else {
            return pairs;
        };
        pairs.push((key, value));
        key_start = key_end;
        value_start = value_end;
    }
    pairs
}
