//! The audit log: every decision about what a namespace enforces (a mode
//! change, the guard's revert, a promotion, a pending edge approved or
//! rejected), with who made it, when, and why.
//!
//! It is append-only: entries are numbered from 1 and never rewritten or
//! removed. It lives beside the learned graph, in `audit.redb` of the
//! state directory (`--state-dir`), one JSON row per entry keyed by its
//! number, so a restart keeps it and a crash loses at most the entry being
//! written (redb commits are atomic). Without a state directory (tests, a
//! relay) it is kept in memory.
//!
//! ```
//! use weir_agent::audit::{AuditLog, Kind, NewEntry};
//!
//! let log = AuditLog::in_memory();
//! log.append(NewEntry::new("alice", Kind::ModeChange, "mode enforce").namespace("shop"))
//!     .unwrap();
//! assert_eq!(log.list(&Default::default()).unwrap().len(), 1);
//! ```

use std::{
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
};

use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};
use serde::{Deserialize, Serialize};

/// The log's file name inside the state directory.
pub const FILE_NAME: &str = "audit.redb";

/// Entry number -> the entry as JSON.
const ENTRIES: TableDefinition<u64, &str> = TableDefinition::new("entries");

/// What kind of decision an entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// The guard set a namespace back to audit after enforce dropped
    /// learned traffic.
    Revert,
    /// A pending (would-have-dropped) edge was approved into the policies.
    Approve,
    /// A pending edge was rejected: it is not proposed again.
    Reject,
    /// A namespace was promoted automatically (`weir.dev/promote: auto`).
    Promote,
    /// A namespace's mode was set by a user.
    ModeChange,
}

impl Kind {
    /// Every kind, in order.
    pub const ALL: [Self; 5] = [
        Self::Revert,
        Self::Approve,
        Self::Reject,
        Self::Promote,
        Self::ModeChange,
    ];

    /// The name used in the API and the CLI.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Revert => "revert",
            Self::Approve => "approve",
            Self::Reject => "reject",
            Self::Promote => "promote",
            Self::ModeChange => "mode-change",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind name that is not one of [`Kind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown audit kind {0:?}: expected revert, approve, reject, promote or mode-change")]
pub struct UnknownKind(pub String);

impl std::str::FromStr for Kind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

/// One recorded decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Its number: 1 for the first entry, one more for each after.
    pub seq: u64,
    /// When, Unix ns.
    pub at: u64,
    /// Who decided: a user as the client named itself (`X-Weir-Actor`,
    /// else `api`), or the agent's own `guard` or `promoter`.
    pub who: String,
    /// What kind of decision.
    pub kind: Kind,
    /// The namespace it is about, when it is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// What was decided, one line (`audit -> enforce`, `approve shop/web
    /// -> shop/db TCP/5432`).
    pub what: String,
    /// Why, and whatever else explains it (edges, policies, counts).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

/// An entry to append: [`AuditLog::append`] numbers and dates it.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEntry {
    /// Who.
    pub who: String,
    /// What kind.
    pub kind: Kind,
    /// Which namespace.
    pub namespace: Option<String>,
    /// What.
    pub what: String,
    /// Why and the rest.
    pub details: serde_json::Value,
}

impl NewEntry {
    /// An entry about no namespace, without details.
    #[must_use]
    pub fn new(who: impl Into<String>, kind: Kind, what: impl Into<String>) -> Self {
        Self {
            who: who.into(),
            kind,
            namespace: None,
            what: what.into(),
            details: serde_json::Value::Null,
        }
    }

    /// About `namespace`.
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// With `details` (any JSON: an object whose fields say why).
    #[must_use]
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// Which entries [`AuditLog::list`] returns; every field narrows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only about this namespace.
    pub namespace: Option<String>,
    /// Only of this kind.
    pub kind: Option<Kind>,
    /// Only entries numbered after this one (to follow the log).
    pub after: Option<u64>,
    /// At most this many, the newest.
    pub limit: Option<usize>,
}

impl Filter {
    fn matches(&self, entry: &Entry) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| entry.namespace.as_deref() == Some(ns))
            && self.kind.is_none_or(|k| entry.kind == k)
            && self.after.is_none_or(|after| entry.seq > after)
    }
}

/// What the log could not do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The state directory cannot be created.
    #[error("cannot create the state directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The log file cannot be opened, read or written.
    #[error("audit log {}", path.display())]
    Database {
        /// The log file.
        path: PathBuf,
        /// Why.
        #[source]
        source: redb::Error,
    },
    /// An entry does not parse; the file was left as it is.
    #[error("audit log {}: entry {seq} does not parse", path.display())]
    BadEntry {
        /// The log file.
        path: PathBuf,
        /// The entry's number.
        seq: u64,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

enum Backend {
    File { db: Database, path: PathBuf },
    Memory(Vec<Entry>),
}

/// The append-only log; share it as `Arc<AuditLog>`.
pub struct AuditLog {
    backend: Mutex<Backend>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = self.backend.lock().unwrap_or_else(PoisonError::into_inner);
        match &*backend {
            Backend::File { path, .. } => write!(f, "AuditLog({})", path.display()),
            Backend::Memory(entries) => write!(f, "AuditLog(memory, {} entries)", entries.len()),
        }
    }
}

impl Default for AuditLog {
    fn default() -> Self {
        Self::in_memory()
    }
}

impl AuditLog {
    /// Open (or create) `audit.redb` in `dir`.
    ///
    /// # Errors
    /// A directory that cannot be created, a file that is not a redb
    /// database or is held by another agent.
    pub fn open(dir: &Path) -> Result<Self, AuditError> {
        std::fs::create_dir_all(dir).map_err(|source| AuditError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|e| AuditError::Database {
            path: path.clone(),
            source: e.into(),
        })?;
        let log = Self {
            backend: Mutex::new(Backend::File { db, path }),
        };
        // Every row parses, or the agent says which does not at start.
        log.list(&Filter::default())?;
        Ok(log)
    }

    /// A log that lives as long as the process.
    #[must_use]
    pub fn in_memory() -> Self {
        Self {
            backend: Mutex::new(Backend::Memory(Vec::new())),
        }
    }

    /// Append `entry`, dated now.
    ///
    /// # Errors
    /// The file cannot be written; nothing was appended.
    pub fn append(&self, entry: NewEntry) -> Result<Entry, AuditError> {
        self.append_at(entry, unix_now())
    }

    /// Append `entry`, dated `at` (Unix ns).
    ///
    /// # Errors
    /// As [`AuditLog::append`].
    pub fn append_at(&self, entry: NewEntry, at: u64) -> Result<Entry, AuditError> {
        let mut backend = self.backend.lock().unwrap_or_else(PoisonError::into_inner);
        let make = |seq| Entry {
            seq,
            at,
            who: entry.who.clone(),
            kind: entry.kind,
            namespace: entry.namespace.clone(),
            what: entry.what.clone(),
            details: entry.details.clone(),
        };
        match &mut *backend {
            Backend::Memory(entries) => {
                let made = make(entries.last().map_or(1, |e| e.seq + 1));
                entries.push(made.clone());
                Ok(made)
            }
            Backend::File { db, path } => {
                let fail = |e: redb::Error| AuditError::Database {
                    path: path.clone(),
                    source: e,
                };
                let write = db.begin_write().map_err(|e| fail(e.into()))?;
                let made;
                {
                    let mut table = write.open_table(ENTRIES).map_err(|e| fail(e.into()))?;
                    let last = table
                        .last()
                        .map_err(|e| fail(e.into()))?
                        .map_or(0, |(k, _)| k.value());
                    made = make(last + 1);
                    let json = serde_json::to_string(&made).expect("an entry encodes as JSON");
                    table
                        .insert(made.seq, json.as_str())
                        .map_err(|e| fail(e.into()))?;
                }
                write.commit().map_err(|e| fail(e.into()))?;
                Ok(made)
            }
        }
    }

    /// The entries `filter` selects, oldest first.
    ///
    /// # Errors
    /// The file cannot be read, or an entry does not parse.
    pub fn list(&self, filter: &Filter) -> Result<Vec<Entry>, AuditError> {
        let backend = self.backend.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<Entry> = match &*backend {
            Backend::Memory(entries) => entries
                .iter()
                .filter(|e| filter.matches(e))
                .cloned()
                .collect(),
            Backend::File { db, path } => {
                let fail = |e: redb::Error| AuditError::Database {
                    path: path.clone(),
                    source: e,
                };
                let read = db.begin_read().map_err(|e| fail(e.into()))?;
                let table = match read.open_table(ENTRIES) {
                    Ok(table) => table,
                    Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                    Err(e) => return Err(fail(e.into())),
                };
                let start = filter.after.map_or(0, |a| a.saturating_add(1));
                let mut out = Vec::new();
                for row in table.range(start..).map_err(|e| fail(e.into()))? {
                    let (seq, json) = row.map_err(|e| fail(e.into()))?;
                    let entry: Entry = serde_json::from_str(json.value()).map_err(|source| {
                        AuditError::BadEntry {
                            path: path.clone(),
                            seq: seq.value(),
                            source,
                        }
                    })?;
                    if filter.matches(&entry) {
                        out.push(entry);
                    }
                }
                out
            }
        };
        if let Some(limit) = filter.limit
            && out.len() > limit
        {
            out.drain(..out.len() - limit);
        }
        Ok(out)
    }
}

/// Now, Unix ns.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(log: &AuditLog) {
        log.append_at(
            NewEntry::new("alice", Kind::ModeChange, "observe -> enforce").namespace("shop"),
            10,
        )
        .unwrap();
        log.append_at(
            NewEntry::new("guard", Kind::Revert, "enforce -> audit")
                .namespace("shop")
                .details(serde_json::json!({ "reason": "dropped learned edge" })),
            20,
        )
        .unwrap();
        log.append_at(
            NewEntry::new("bob", Kind::Approve, "approve x").namespace("blog"),
            30,
        )
        .unwrap();
    }

    fn check(log: &AuditLog) {
        let all = log.list(&Filter::default()).unwrap();
        assert_eq!(
            all.iter().map(|e| (e.seq, e.at)).collect::<Vec<_>>(),
            [(1, 10), (2, 20), (3, 30)]
        );
        assert_eq!(all[1].details["reason"], "dropped learned edge");
        let shop = log
            .list(&Filter {
                namespace: Some("shop".into()),
                ..Filter::default()
            })
            .unwrap();
        assert_eq!(shop.len(), 2);
        let reverts = log
            .list(&Filter {
                kind: Some(Kind::Revert),
                ..Filter::default()
            })
            .unwrap();
        assert_eq!(reverts.len(), 1);
        assert_eq!(reverts[0].who, "guard");
        let after = log
            .list(&Filter {
                after: Some(1),
                limit: Some(1),
                ..Filter::default()
            })
            .unwrap();
        assert_eq!(after.iter().map(|e| e.seq).collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn in_memory_entries_are_numbered_and_filtered() {
        let log = AuditLog::in_memory();
        fill(&log);
        check(&log);
    }

    #[test]
    fn entries_outlive_the_process_and_numbering_continues() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = AuditLog::open(dir.path()).unwrap();
            assert!(log.list(&Filter::default()).unwrap().is_empty());
            fill(&log);
        }
        let log = AuditLog::open(dir.path()).unwrap();
        check(&log);
        let next = log
            .append(NewEntry::new("carol", Kind::Reject, "reject y"))
            .unwrap();
        assert_eq!(next.seq, 4);
    }

    #[test]
    fn a_file_that_is_not_a_log_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"not redb at all, really not").unwrap();
        let error = AuditLog::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains("audit.redb"), "{error}");
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in Kind::ALL {
            assert_eq!(kind.as_str().parse::<Kind>().unwrap(), kind);
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::json!(kind.as_str())
            );
        }
        assert!("promotion".parse::<Kind>().is_err());
    }
}
