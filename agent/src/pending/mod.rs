//! The would-have-dropped queue: every connection the datapath marked
//! (audit) or dropped (enforce), as workload-level edges, with the
//! policies that isolate it and the smallest rule that would allow it,
//! until a person approves it (the rule is enforced) or rejects it.
//!
//! The aggregator already keeps what the queue needs: audited connections
//! are counted on the learned edges (`verdicts.audit`), dropped ones in
//! [`GraphView::drops`]. [`QueueState::observe`] folds a snapshot of both
//! into the queue's own counters, which outlive the aggregator's (drops
//! are not in the graph store) through [`file::QueueFile`].
//!
//! Rules, and why:
//!
//! - An entry is listed while the enforced policies deny it: once a policy
//!   allows the edge (approved here, or written by hand) it leaves the
//!   queue by itself, whatever was decided.
//! - A rejected entry stays out of the queue until it is seen again more
//!   than the reject window after the decision: the application may have
//!   changed by then, and someone should look again.
//! - An approved entry stays out unless it is denied again after the
//!   approval (a policy removed since).
//! - Counters survive a restart: the aggregator's drops start again from
//!   zero, so the queue adds what grew since its last look, and a counter
//!   lower than last time counts whole (it restarted).
//!
//! The proposal ([`propose`]) is the learner's own output for a graph of
//! that one edge: the same selectors and peers `weir export` would write.

pub mod file;
pub mod propose;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use weir_generator::model::{EdgeKey, EdgeStats, NodeId, Protocol};

use crate::aggregator::GraphView;

pub use self::file::{QueueFile, QueueFileError};

/// How long a rejected edge stays out of the queue by default.
pub const DEFAULT_REJECT_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);

/// An entry's id, as the API and the CLI name it:
/// `SOURCE->TARGET:PORT/PROTOCOL` (`shop/loadgen->data/store:6379/TCP`).
#[must_use]
pub fn edge_id(key: &EdgeKey) -> String {
    format!(
        "{}->{}:{}/{}",
        key.source, key.target, key.port, key.protocol
    )
}

/// What the queue saw of one edge. Times are Unix nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// When the queue first saw it marked or dropped (for an audited edge:
    /// the edge's last packet at that look).
    pub first_seen: u64,
    /// The last packet of the last look at which its counts grew.
    pub last_seen: u64,
    /// Connections let through with an audit verdict.
    pub audit: u64,
    /// Connections dropped.
    pub dropped: u64,
    /// The aggregator's counters at the last look, to add only what grew.
    #[serde(default)]
    pub raw_audit: u64,
    /// See `raw_audit`.
    #[serde(default)]
    pub raw_dropped: u64,
}

/// What a person decided about an edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecisionKind {
    /// Its rule was enforced.
    Approved,
    /// Keep it denied.
    Rejected,
}

impl fmt::Display for DecisionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Approved => "approved",
            Self::Rejected => "rejected",
        })
    }
}

/// A decision and when it was made (Unix ns).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Approved or rejected.
    pub kind: DecisionKind,
    /// When.
    pub at: u64,
}

/// The queue's memory: what was seen and what was decided, by edge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueState {
    /// Every edge ever marked or dropped (until forgotten).
    pub seen: BTreeMap<EdgeKey, Seen>,
    /// The last decision about each edge.
    pub decisions: BTreeMap<EdgeKey, Decision>,
}

/// Connections of `stats` with a verdict the queue counts: `verdicts` when
/// counted, else every connection (a drop entry counts only drops).
fn dropped_connections(stats: &EdgeStats) -> u64 {
    if stats.verdicts.dropped > 0 {
        stats.verdicts.dropped
    } else {
        stats.connections.max(1)
    }
}

/// What grew between two readings of a counter that may have restarted.
fn growth(previous: u64, now: u64) -> u64 {
    if now >= previous { now - previous } else { now }
}

impl QueueState {
    /// Fold a snapshot of the aggregator: audited connections of learned
    /// edges and dropped connections. Returns whether anything changed.
    pub fn observe(&mut self, view: &GraphView) -> bool {
        let mut changed = false;
        let audited = view
            .graph
            .edges
            .iter()
            .filter(|(_, s)| s.verdicts.audit > 0)
            .map(|(k, s)| (k, s, s.verdicts.audit, 0));
        let dropped = view
            .drops
            .iter()
            .map(|(k, s)| (k, s, 0, dropped_connections(s)));
        // One edge may be both (audited at one end, dropped at the other).
        let mut readings: BTreeMap<&EdgeKey, (u64, u64, u64, u64)> = BTreeMap::new();
        for (key, stats, audit, drop) in audited.chain(dropped) {
            let r = readings.entry(key).or_insert((u64::MAX, 0, 0, 0));
            let first = if drop > 0 {
                stats.first_seen
            } else {
                stats.last_seen
            };
            r.0 = r.0.min(first);
            r.1 = r.1.max(stats.last_seen);
            r.2 += audit;
            r.3 += drop;
        }
        for (key, (first, last, audit, drop)) in readings {
            let entry = self.seen.entry(key.clone()).or_insert_with(|| {
                changed = true;
                Seen {
                    first_seen: first,
                    ..Seen::default()
                }
            });
            let (more_audit, more_dropped) = (
                growth(entry.raw_audit, audit),
                growth(entry.raw_dropped, drop),
            );
            if (entry.raw_audit, entry.raw_dropped) != (audit, drop) {
                changed = true;
            }
            entry.raw_audit = audit;
            entry.raw_dropped = drop;
            if more_audit + more_dropped > 0 {
                entry.audit += more_audit;
                entry.dropped += more_dropped;
                entry.last_seen = entry.last_seen.max(last);
                entry.first_seen = entry.first_seen.min(first);
                changed = true;
            }
        }
        changed
    }

    /// Whether a decision keeps `key` out of the queue now.
    #[must_use]
    pub fn decided(&self, key: &EdgeKey, reject_window: Duration) -> Option<Decision> {
        let decision = *self.decisions.get(key)?;
        let last_seen = self.seen.get(key).map_or(0, |s| s.last_seen);
        let until = match decision.kind {
            DecisionKind::Approved => decision.at,
            DecisionKind::Rejected => decision
                .at
                .saturating_add(u64::try_from(reject_window.as_nanos()).unwrap_or(u64::MAX)),
        };
        (last_seen <= until).then_some(decision)
    }

    /// Record a decision about `key`.
    pub fn decide(&mut self, key: EdgeKey, kind: DecisionKind, at: u64) {
        self.decisions.insert(key, Decision { kind, at });
    }
}

/// The queue, shared by the API and the task that saves it.
#[derive(Debug)]
pub struct Queue {
    state: Mutex<QueueState>,
    /// Where it is saved (none: it lives as long as the process).
    file: Option<QueueFile>,
    /// Changed since the last save.
    dirty: std::sync::atomic::AtomicBool,
    /// How long a rejection holds.
    pub reject_window: Duration,
}

impl Default for Queue {
    fn default() -> Self {
        Self::in_memory(DEFAULT_REJECT_WINDOW)
    }
}

impl Queue {
    /// A queue nothing saves.
    #[must_use]
    pub fn in_memory(reject_window: Duration) -> Self {
        Self {
            state: Mutex::new(QueueState::default()),
            file: None,
            dirty: false.into(),
            reject_window,
        }
    }

    /// The queue `file` holds (empty when it does not exist yet).
    ///
    /// # Errors
    /// The file exists and cannot be read, or is not a queue this version
    /// reads: it is left untouched.
    pub fn load(file: QueueFile, reject_window: Duration) -> Result<Self, QueueFileError> {
        let state = file.load()?;
        Ok(Self {
            state: Mutex::new(state),
            file: Some(file),
            dirty: false.into(),
            reject_window,
        })
    }

    /// Run `f` on the state; mark it for saving when `f` says it changed.
    pub fn update<T>(&self, f: impl FnOnce(&mut QueueState) -> (T, bool)) -> T {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (value, changed) = f(&mut state);
        if changed {
            self.dirty.store(true, std::sync::atomic::Ordering::Release);
        }
        value
    }

    /// A copy of the state.
    #[must_use]
    pub fn snapshot(&self) -> QueueState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Fold `view` in (see [`QueueState::observe`]).
    pub fn observe(&self, view: &GraphView) {
        self.update(|s| ((), s.observe(view)));
    }

    /// Save when something changed since the last save.
    ///
    /// # Errors
    /// The file cannot be written; it stays marked for the next try.
    pub fn save_if_changed(&self) -> Result<bool, QueueFileError> {
        let Some(file) = &self.file else {
            return Ok(false);
        };
        if !self.dirty.swap(false, std::sync::atomic::Ordering::AcqRel) {
            return Ok(false);
        }
        let state = self.snapshot();
        file.save(&state).inspect_err(|_| {
            self.dirty.store(true, std::sync::atomic::Ordering::Release);
        })?;
        Ok(true)
    }
}

/// The namespaces an edge belongs to: each end's that is a workload.
#[must_use]
pub fn namespaces_of(key: &EdgeKey) -> BTreeSet<&str> {
    [&key.source, &key.target]
        .into_iter()
        .filter_map(|n| match n {
            NodeId::Workload(w) => Some(w.namespace.as_str()),
            NodeId::External(_) => None,
        })
        .collect()
}

/// Whether a NetworkPolicy can allow `protocol` without allowing every
/// port (ICMP cannot be named by a rule).
#[must_use]
pub const fn expressible(protocol: Protocol) -> bool {
    protocol.has_ports()
}

/// Fold the aggregator's changes into `queue` and save it every
/// `interval` while they move, and once more at shutdown: the queue on
/// disk is at most `interval` behind, as the learned graph is.
pub async fn run(
    queue: std::sync::Arc<Queue>,
    aggregator: std::sync::Arc<crate::aggregator::Aggregator>,
    interval: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut folded = None;
    loop {
        let stopping = tokio::select! {
            _ = ticker.tick() => false,
            _ = shutdown.changed() => true,
        };
        let changes = aggregator.changes();
        if folded != Some(changes) {
            folded = Some(changes);
            queue.observe(&aggregator.denied());
        }
        let saved = {
            let queue = std::sync::Arc::clone(&queue);
            tokio::task::spawn_blocking(move || queue.save_if_changed()).await
        };
        match saved {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(
                error = crate::error_chain::chain(&error),
                "cannot save the pending queue"
            ),
            // Cancelled when the runtime stops first (the agent failed to
            // start): no fault of the save, and not said as a panic.
            Err(error) => tracing::warn!(
                "{}",
                crate::error_chain::task_ended("pending queue save", error)
            ),
        }
        if stopping || *shutdown.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
