//! The guard (break-glass): for a while after a namespace goes to enforce
//! (its window, 15 minutes unless the namespace's `weir.dev/guard-window`
//! annotation says otherwise, `0` for none), a dropped connection on an
//! edge learned before the flip is traffic the application really uses
//! that the policies miss. Once `weir.dev/guard-max-drops` distinct learned
//! edges (1 by default) were dropped, the namespace goes back to audit.
//! `--no-guard` skips the guard on one flip: in the agent's own mode, by
//! [`Guard::skip_next`]; in a cluster, where every node's agent follows
//! the Namespace, by the `weir.dev/guard-skip` annotation written with
//! the mode label.
//!
//! This module is the bookkeeping only, pure and synchronous: which
//! namespaces are watched, which edges they learned, which of those were
//! dropped since the flip. `api::guard` runs it against the aggregator and
//! the enforcer once a sweep, and makes the revert (and says why). The
//! state is saved in `guard.json` of the state directory after every
//! change, so a restart keeps the windows, their learned edges and what
//! they counted.
//!
//! The guard reads nothing on the packet path: it compares the graph's
//! drops (by edge, with their last-seen time) with each window's learned
//! edges once per check, so the aggregator pays nothing for it.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use weir_generator::{
    datapath::Mode,
    model::{EdgeKey, EdgeStats, FlowGraph, NodeId},
};

/// The namespace annotation that sets the window (`15m`, `1h`, `0` for
/// none).
pub const WINDOW_ANNOTATION: &str = "weir.dev/guard-window";
/// The namespace annotation that sets how many distinct learned edges may
/// be dropped before the revert (at least 1).
pub const MAX_DROPS_ANNOTATION: &str = "weir.dev/guard-max-drops";
/// The namespace annotation that skips the guard on the namespace's next
/// flip to enforce: the RFC 3339 time of the request (`weir mode set NS
/// enforce --no-guard --kube`, the relay's `PUT /api/modes` with `guard:
/// false`), written in the same patch as the mode label.
pub const SKIP_ANNOTATION: &str = "weir.dev/guard-skip";
/// How long after its request a skip still applies: labels reach the
/// agents in seconds, and a stale annotation must not silence a later flip
/// made another way (by a GitOps tool, say).
pub const SKIP_FRESH: Duration = Duration::from_secs(5 * 60);
/// How far after the check that sees the flip a skip's time may be: the
/// clock of whoever wrote it (a laptop running `weir mode set`) may be
/// ahead of this node's.
pub const SKIP_SKEW: Duration = Duration::from_secs(30);
/// The window without an annotation.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(15 * 60);
/// The threshold without an annotation.
pub const DEFAULT_MAX_DROPS: u32 = 1;
/// The state's file name inside the state directory.
pub const FILE_NAME: &str = "guard.json";

/// A namespace's guard settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// How long the guard watches after the flip; zero: not at all.
    #[serde(with = "secs")]
    pub window: Duration,
    /// Distinct learned edges dropped that make the revert.
    pub max_drops: u32,
    /// When an unguarded flip to enforce was requested
    /// ([`SKIP_ANNOTATION`]), Unix ns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_at: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            window: DEFAULT_WINDOW,
            max_drops: DEFAULT_MAX_DROPS,
            skip_at: None,
        }
    }
}

impl Settings {
    /// Whether a flip to enforce seen by the check at `now` skips the
    /// guard: its skip was requested no more than [`SKIP_FRESH`] before
    /// that check, and not after it (but for [`SKIP_SKEW`]).
    #[must_use]
    pub fn skips(&self, now: u64) -> bool {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.skip_at.is_some_and(|at| {
            at <= now.saturating_add(ns(SKIP_SKEW)) && now.saturating_sub(at) <= ns(SKIP_FRESH)
        })
    }
}

/// Why a flip to enforce opens no guard window, as the agent's log says
/// it: the flip was made with `--no-guard` (`skipped_next`, see
/// [`Guard::skip_next`]), its Namespace carries a fresh
/// [`SKIP_ANNOTATION`], or its window is zero. `None`: it is guarded.
/// The same order as [`Guard::follow_modes`].
#[must_use]
pub fn unguarded_because(settings: &Settings, skipped_next: bool, now: u64) -> Option<String> {
    if skipped_next {
        return Some("the mode was set with --no-guard".to_owned());
    }
    if settings.window.is_zero() {
        return Some(format!("{WINDOW_ANNOTATION} is 0"));
    }
    match settings.skip_at {
        Some(at) if settings.skips(now) => Some(format!(
            "{SKIP_ANNOTATION} asks for it ({})",
            crate::timestamp::rfc3339(at)
        )),
        _ => None,
    }
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// Edge keys as the state file writes them (the generator's keys have no
/// JSON form of their own).
mod edges {
    use std::{collections::BTreeSet, net::IpAddr};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use weir_generator::model::{EdgeKey, NodeId, Protocol, WorkloadRef};

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Node {
        Workload(WorkloadRef),
        External(IpAddr),
    }

    #[derive(Serialize, Deserialize)]
    struct Edge {
        source: Node,
        target: Node,
        protocol: Protocol,
        port: u16,
    }

    fn node(n: &NodeId) -> Node {
        match n {
            NodeId::Workload(w) => Node::Workload(w.clone()),
            NodeId::External(ip) => Node::External(*ip),
        }
    }

    fn id(n: Node) -> NodeId {
        match n {
            Node::Workload(w) => NodeId::Workload(w),
            Node::External(ip) => NodeId::External(ip),
        }
    }

    pub fn serialize<S: Serializer>(set: &BTreeSet<EdgeKey>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(set.iter().map(|k| Edge {
            source: node(&k.source),
            target: node(&k.target),
            protocol: k.protocol,
            port: k.port,
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeSet<EdgeKey>, D::Error> {
        Ok(Vec::<Edge>::deserialize(d)?
            .into_iter()
            .map(|e| EdgeKey {
                source: id(e.source),
                target: id(e.target),
                protocol: e.protocol,
                port: e.port,
            })
            .collect())
    }
}

/// A namespace's settings from its annotations; a value that does not
/// parse is reported (naming the namespace, the annotation and the value)
/// and its default used.
#[must_use]
pub fn settings(
    namespace: &str,
    annotations: Option<&BTreeMap<String, String>>,
) -> (Settings, Vec<String>) {
    let mut out = Settings::default();
    let mut warnings = Vec::new();
    let Some(annotations) = annotations else {
        return (out, warnings);
    };
    if let Some(value) = annotations.get(WINDOW_ANNOTATION) {
        match parse_window(value) {
            Some(window) => out.window = window,
            None => warnings.push(format!(
                "namespace {namespace}: annotation {WINDOW_ANNOTATION}={value:?} is not a \
                 duration (15m, 1h, 0 for none); using the default {}",
                humantime::format_duration(DEFAULT_WINDOW)
            )),
        }
    }
    if let Some(value) = annotations.get(MAX_DROPS_ANNOTATION) {
        match value.trim().parse::<u32>() {
            Ok(n) if n >= 1 => out.max_drops = n,
            _ => warnings.push(format!(
                "namespace {namespace}: annotation {MAX_DROPS_ANNOTATION}={value:?} is not a \
                 whole number of edges of at least 1; using the default {DEFAULT_MAX_DROPS}"
            )),
        }
    }
    if let Some(value) = annotations.get(SKIP_ANNOTATION) {
        match crate::timestamp::parse_rfc3339(value.trim()) {
            Some(at) => out.skip_at = Some(at),
            None => warnings.push(format!(
                "namespace {namespace}: annotation {SKIP_ANNOTATION}={value:?} is not an \
                 RFC 3339 time; the next flip to enforce is guarded"
            )),
        }
    }
    (out, warnings)
}

fn parse_window(value: &str) -> Option<Duration> {
    let value = value.trim();
    if value == "0" {
        return Some(Duration::ZERO);
    }
    humantime::parse_duration(value).ok()
}

/// One namespace's guard window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// When the namespace went to enforce, Unix ns.
    pub started_at: u64,
    /// When the window closes, Unix ns.
    pub until: u64,
    /// Distinct learned edges dropped that make the revert.
    pub max_drops: u32,
    /// The edges from or to the namespace learned before the flip.
    #[serde(with = "edges")]
    pub learned: BTreeSet<EdgeKey>,
    /// Those dropped since the flip.
    #[serde(with = "edges")]
    pub dropped: BTreeSet<EdgeKey>,
}

/// A namespace the guard set back to audit, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reverted {
    /// When, Unix ns.
    pub at: u64,
    /// Why, one sentence.
    pub reason: String,
    /// The learned edges dropped (`src -> dst PROTO/PORT`).
    pub edges: Vec<String>,
    /// The policies that isolated them (`namespace/name`).
    pub policies: Vec<String>,
}

/// A namespace whose window saw enough learned edges dropped: it must go
/// back to audit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trip {
    /// The namespace.
    pub namespace: String,
    /// Its learned edges dropped since the flip.
    pub edges: Vec<EdgeKey>,
    /// Its threshold.
    pub max_drops: u32,
}

/// The guard's whole state, as saved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guard {
    /// Open windows by namespace.
    #[serde(default)]
    pub windows: BTreeMap<String, Window>,
    /// The last revert of each namespace (kept until it is set to enforce
    /// again).
    #[serde(default)]
    pub reverted: BTreeMap<String, Reverted>,
    /// Namespaces whose next flip to enforce is not guarded (`--no-guard`).
    #[serde(default)]
    pub unguarded: BTreeSet<String>,
    /// The modes seen at the last check; `None` before the first, whose
    /// enforced namespaces were enforced before the guard looked.
    #[serde(default)]
    pub modes: Option<BTreeMap<String, Mode>>,
    /// When the last check ran, Unix ns: a flip seen now happened after it.
    #[serde(default)]
    pub checked_at: u64,
}

/// `src -> dst PROTO/PORT`, as logs and the audit log name an edge.
#[must_use]
pub fn edge_name(edge: &EdgeKey) -> String {
    format!(
        "{} -> {} {}/{}",
        edge.source, edge.target, edge.protocol, edge.port
    )
}

fn in_namespace(node: &NodeId, namespace: &str) -> bool {
    matches!(node, NodeId::Workload(w) if w.namespace == namespace)
}

impl Guard {
    /// Whether anything needs the graph at this check: a window is open,
    /// or a namespace changed mode.
    #[must_use]
    pub fn needs_graph(&self, modes: &BTreeMap<String, Mode>) -> bool {
        !self.windows.is_empty() || self.modes.as_ref().is_some_and(|m| m != modes)
    }

    /// Skip the guard on `namespace`'s next flip to enforce.
    pub fn skip_next(&mut self, namespace: &str) {
        self.unguarded.insert(namespace.to_owned());
    }

    /// Follow the namespaces' modes: a namespace newly in enforce opens a
    /// window (unless skipped, by [`Guard::skip_next`] or a fresh
    /// [`SKIP_ANNOTATION`], or its window is zero) with the edges learned
    /// before the flip; a namespace leaving enforce closes its.
    /// Returns the namespaces whose window opened.
    pub fn follow_modes(
        &mut self,
        modes: &BTreeMap<String, Mode>,
        graph: Option<&FlowGraph>,
        settings: impl Fn(&str) -> Settings,
        now: u64,
    ) -> Vec<String> {
        let Some(before) = self.modes.replace(modes.clone()) else {
            return Vec::new();
        };
        let started_at = if self.checked_at == 0 {
            now
        } else {
            self.checked_at
        };
        let mut opened = Vec::new();
        for (namespace, mode) in modes {
            let was = before.get(namespace).copied().unwrap_or_default();
            if *mode != Mode::Enforce {
                self.windows.remove(namespace);
                continue;
            }
            if was == Mode::Enforce {
                continue;
            }
            // A new flip: the previous revert is history (the audit log).
            self.reverted.remove(namespace);
            if self.unguarded.remove(namespace) {
                continue;
            }
            let s = settings(namespace);
            if s.window.is_zero() || s.skips(now) {
                continue;
            }
            let learned = graph
                .map(|g| {
                    g.edges
                        .iter()
                        // Every edge of the graph now: one first seen
                        // between the flip and this check was let through
                        // (dropped connections make no edge). Bounding by
                        // the flip instead lost the edges learned just
                        // before it whenever this check came late.
                        .filter(|(k, stats)| {
                            (in_namespace(&k.source, namespace)
                                || in_namespace(&k.target, namespace))
                                && stats.first_seen <= now
                        })
                        .map(|(k, _)| k.clone())
                        .collect()
                })
                .unwrap_or_default();
            self.windows.insert(
                namespace.clone(),
                Window {
                    started_at,
                    until: started_at
                        .saturating_add(u64::try_from(s.window.as_nanos()).unwrap_or(u64::MAX)),
                    max_drops: s.max_drops,
                    learned,
                    dropped: BTreeSet::new(),
                },
            );
            opened.push(namespace.clone());
        }
        // Namespaces no longer listed fall to the default mode: observe
        // unless the agent's default says otherwise; either way not a flip
        // the user made on them.
        self.windows
            .retain(|ns, _| modes.get(ns) == Some(&Mode::Enforce));
        opened
    }

    /// Count the drops of learned edges in every open window (a drop last
    /// seen since the flip), close the windows that ran out, and return
    /// the namespaces that must go back to audit. `attributable(ns, edge)`
    /// says whether `ns`'s policies could have dropped `edge` (its
    /// egress for a source in it, its ingress for a target in it).
    pub fn check(
        &mut self,
        drops: &BTreeMap<EdgeKey, EdgeStats>,
        attributable: impl Fn(&str, &EdgeKey) -> bool,
        now: u64,
    ) -> Vec<Trip> {
        self.checked_at = now;
        let mut trips = Vec::new();
        self.windows.retain(|namespace, window| {
            for (edge, stats) in drops {
                if stats.last_seen >= window.started_at
                    && window.learned.contains(edge)
                    && !window.dropped.contains(edge)
                    && attributable(namespace, edge)
                {
                    window.dropped.insert(edge.clone());
                }
            }
            if window.dropped.len() >= window.max_drops as usize {
                trips.push(Trip {
                    namespace: namespace.clone(),
                    edges: window.dropped.iter().cloned().collect(),
                    max_drops: window.max_drops,
                });
            }
            // Ran out: the flip is confirmed. A tripped window stays open
            // until the revert lands (the mode leaves enforce).
            now < window.until || window.dropped.len() >= window.max_drops as usize
        });
        trips
    }

    /// Record that `namespace` went back to audit.
    pub fn reverted(&mut self, namespace: &str, reverted: Reverted) {
        self.windows.remove(namespace);
        self.reverted.insert(namespace.to_owned(), reverted);
    }
}

/// Where the guard's state is saved.
#[derive(Clone, Debug)]
pub struct GuardFile {
    path: PathBuf,
}

/// A state file (the guard's, automatic promotion's) cannot be read or
/// written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateFileError {
    /// Reading or writing failed.
    #[error("{what} state {}", path.display())]
    Io {
        /// Whose state.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file does not parse.
    #[error("{what} state {} does not parse", path.display())]
    Parse {
        /// Whose state.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// The guard's state file cannot be read or written.
pub type GuardFileError = StateFileError;

/// The state saved in `path`; the default when there is no file.
///
/// # Errors
/// An unreadable or unparsable file.
pub fn load_json<T: serde::de::DeserializeOwned + Default>(
    what: &'static str,
    path: &Path,
) -> Result<T, StateFileError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StateFileError::Parse {
            what,
            path: path.to_owned(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(source) => Err(StateFileError::Io {
            what,
            path: path.to_owned(),
            source,
        }),
    }
}

/// Save `value` whole in `path`: written beside and renamed, so a crash
/// leaves the previous state or this one.
///
/// # Errors
/// The file cannot be written.
pub fn save_json<T: Serialize>(
    what: &'static str,
    path: &Path,
    value: &T,
) -> Result<(), StateFileError> {
    let io = |source| StateFileError::Io {
        what,
        path: path.to_owned(),
        source,
    };
    let json = serde_json::to_vec_pretty(value).map_err(|source| StateFileError::Parse {
        what,
        path: path.to_owned(),
        source,
    })?;
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let temp = path.with_file_name(format!(".{name}.{}", std::process::id()));
    std::fs::write(&temp, json).map_err(io)?;
    std::fs::rename(&temp, path).map_err(io)
}

impl GuardFile {
    /// `guard.json` in `dir`.
    #[must_use]
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            path: dir.join(FILE_NAME),
        }
    }

    /// The file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved state; the empty state when there is no file.
    ///
    /// # Errors
    /// An unreadable or unparsable file.
    pub fn load(&self) -> Result<Guard, GuardFileError> {
        load_json("guard", &self.path)
    }

    /// Save `guard` whole (see [`save_json`]).
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn save(&self, guard: &Guard) -> Result<(), GuardFileError> {
        save_json("guard", &self.path, guard)
    }
}

/// The guard as the agent shares it: its state behind a lock, saved to
/// its file (when it has one) after every change.
#[derive(Debug, Default)]
pub struct GuardHandle {
    state: std::sync::Mutex<Guard>,
    file: Option<GuardFile>,
}

impl GuardHandle {
    /// The state saved in `file` (empty without one).
    ///
    /// # Errors
    /// An unreadable or unparsable file: the agent says so rather than
    /// forget open windows.
    pub fn load(file: GuardFile) -> Result<Self, GuardFileError> {
        Ok(Self {
            state: std::sync::Mutex::new(file.load()?),
            file: Some(file),
        })
    }

    /// A copy of the state.
    #[must_use]
    pub fn snapshot(&self) -> Guard {
        self.lock().clone()
    }

    /// Change the state with `f`; save it when something but the check
    /// time changed.
    ///
    /// # Errors
    /// The file cannot be written (the change is kept in memory).
    pub fn update<T>(&self, f: impl FnOnce(&mut Guard) -> T) -> (T, Result<(), GuardFileError>) {
        let mut guard = self.lock();
        let mut before = guard.clone();
        let out = f(&mut guard);
        before.checked_at = guard.checked_at;
        let saved = match &self.file {
            Some(file) if before != *guard => file.save(&guard),
            _ => Ok(()),
        };
        (out, saved)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Guard> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
