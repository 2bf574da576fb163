//! `<state-dir>/pending.json`: the queue's counters and decisions, a
//! versioned JSON document written atomically (temp file, fsync, rename)
//! like `enforce.json`, so a restarted agent lists what it listed before.
//! A file this version cannot read is reported with its path and left
//! untouched.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use weir_generator::model::EdgeKey;

use super::{Decision, QueueState, Seen};
use crate::graph_store::EdgeRow;

/// The file's name inside the state directory.
pub const FILE_NAME: &str = "pending.json";

/// Version of the format this build reads and writes.
pub const FORMAT_VERSION: u64 = 1;

/// Why the file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueFileError {
    /// It cannot be read or written.
    #[error("cannot read or write {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It does not parse as a queue.
    #[error("{} is not a pending queue this weir reads (at `{field}`)", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where in the document (`entries[0].edge`; `.` for the whole).
        field: String,
        /// The parser's error, naming the line and the field.
        #[source]
        source: serde_json::Error,
    },
    /// A newer weir wrote it.
    #[error(
        "{} has format_version {found}; this weir reads {FORMAT_VERSION} and older",
        path.display()
    )]
    NewerFormat {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u64,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    /// The edge, as the graph store writes its keys.
    edge: EdgeRow,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seen: Option<Seen>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    decision: Option<Decision>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    format_version: u64,
    entries: Vec<Entry>,
}

/// The queue's file.
#[derive(Clone, Debug)]
pub struct QueueFile {
    path: PathBuf,
}

impl QueueFile {
    /// The file in `dir`.
    #[must_use]
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            path: dir.join(FILE_NAME),
        }
    }

    /// Its path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What it holds; an empty queue when it does not exist.
    ///
    /// # Errors
    /// See [`QueueFileError`].
    pub fn load(&self) -> Result<QueueState, QueueFileError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(QueueState::default());
            }
            Err(source) => {
                return Err(QueueFileError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let corrupt = |field: String, source| QueueFileError::Corrupt {
            path: self.path.clone(),
            field,
            source,
        };
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| corrupt(".".to_owned(), e))?;
        if let Some(found) = value
            .get("format_version")
            .and_then(serde_json::Value::as_u64)
            .filter(|v| *v > FORMAT_VERSION)
        {
            return Err(QueueFileError::NewerFormat {
                path: self.path.clone(),
                found,
            });
        }
        let document: Document = serde_path_to_error::deserialize(value)
            .map_err(|e| corrupt(e.path().to_string(), e.into_inner()))?;
        let mut state = QueueState::default();
        for entry in document.entries {
            let key = EdgeKey::from(entry.edge);
            if let Some(seen) = entry.seen {
                state.seen.insert(key.clone(), seen);
            }
            if let Some(decision) = entry.decision {
                state.decisions.insert(key, decision);
            }
        }
        Ok(state)
    }

    /// Replace its content, atomically.
    ///
    /// # Errors
    /// See [`QueueFileError`].
    pub fn save(&self, state: &QueueState) -> Result<(), QueueFileError> {
        let keys: std::collections::BTreeSet<&EdgeKey> =
            state.seen.keys().chain(state.decisions.keys()).collect();
        let document = Document {
            format_version: FORMAT_VERSION,
            entries: keys
                .into_iter()
                .map(|k| Entry {
                    edge: EdgeRow::from(k),
                    seen: state.seen.get(k).copied(),
                    decision: state.decisions.get(k).copied(),
                })
                .collect(),
        };
        let io = |source| QueueFileError::Io {
            path: self.path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(&document).map_err(|e| io(e.into()))?;
        crate::enforce::state_file::write_atomically(&self.path, &bytes).map_err(io)
    }
}
