//! The relay's own store, `<state-dir>/relay.redb`: each node's last
//! contribution and sync state, so a restarted relay, or one whose agent's
//! node was drained, loses nothing. One row per node (JSON), written when
//! what the relay holds of the node changes.
//!
//! A damaged file is refused and left as it is, naming it: the agents can
//! be read again, but the contributions of deleted nodes live only here.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};
use serde::{Deserialize, Serialize};

use super::hub::Held;
use crate::api::wire::ContributionJson;

/// The store's file name in the state directory.
pub const FILE_NAME: &str = "relay.redb";

/// The format of the rows; a newer one is refused.
const FORMAT: u64 = 1;

const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const KEY_FORMAT: &str = "format";

/// What the checkpoint could not do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The state directory cannot be created.
    #[error("cannot create the relay's state directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another relay holds the store.
    #[error("{} is in use by another weir relay", path.display())]
    InUse {
        /// The store file.
        path: PathBuf,
    },
    /// The file is not a readable relay store; it was left untouched.
    #[error(
        "{} is corrupt or not a weir relay store (left untouched): {detail}; \
         move it away to start afresh (the relay reads every agent again, \
         but the contributions it kept of deleted nodes are lost)",
        path.display()
    )]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// What did not read, naming the row.
        detail: String,
    },
    /// The store was written by a newer weir.
    #[error(
        "{} has relay store format {found}, newer than the format this weir reads ({FORMAT}); \
         run a weir at least as new as the one that wrote it",
        path.display()
    )]
    NewerFormat {
        /// The store file.
        path: PathBuf,
        /// The format in the file.
        found: u64,
    },
    /// A database operation failed (I/O, full disk).
    #[error("relay store {}", path.display())]
    Database {
        /// The store file.
        path: PathBuf,
        /// The database's error.
        #[source]
        source: Box<redb::Error>,
    },
}

/// A node's row, as written.
#[derive(Serialize)]
struct RowRef<'a> {
    contribution: Option<&'a ContributionJson>,
    etag: Option<&'a str>,
    last_sync: Option<u64>,
    stale_since: Option<u64>,
    deleted_since: Option<u64>,
    error: Option<&'a str>,
}

/// A node's row, as read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    contribution: Option<ContributionJson>,
    etag: Option<String>,
    last_sync: Option<u64>,
    stale_since: Option<u64>,
    deleted_since: Option<u64>,
    error: Option<String>,
}

/// The open store.
#[derive(Debug)]
pub struct Checkpoint {
    db: Database,
    path: PathBuf,
}

impl Checkpoint {
    /// Open (or create) `dir/relay.redb` and read every node's row.
    ///
    /// # Errors
    /// [`CheckpointError`], naming the file.
    pub fn open(dir: &Path) -> Result<(Self, BTreeMap<String, Held>), CheckpointError> {
        std::fs::create_dir_all(dir).map_err(|source| CheckpointError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let corrupt = |detail: String| CheckpointError::Corrupt {
            path: path.clone(),
            detail,
        };
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                CheckpointError::InUse { path: path.clone() }
            }
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => corrupt(detail),
            redb::DatabaseError::Storage(redb::StorageError::Io(e))
                if e.kind() == std::io::ErrorKind::InvalidData =>
            {
                corrupt(e.to_string())
            }
            other => CheckpointError::Database {
                path: path.clone(),
                source: Box::new(other.into()),
            },
        })?;
        let store = Self { db, path };
        let held = store.load()?;
        Ok((store, held))
    }

    /// The store file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db_error(&self, e: impl Into<redb::Error>) -> CheckpointError {
        CheckpointError::Database {
            path: self.path.clone(),
            source: Box::new(e.into()),
        }
    }

    fn load(&self) -> Result<BTreeMap<String, Held>, CheckpointError> {
        let tx = self.db.begin_write().map_err(|e| self.db_error(e))?;
        {
            let mut meta = tx.open_table(META).map_err(|e| self.db_error(e))?;
            let found = meta
                .get(KEY_FORMAT)
                .map_err(|e| self.db_error(e))?
                .map(|v| v.value());
            match found {
                Some(found) if found > FORMAT => {
                    return Err(CheckpointError::NewerFormat {
                        path: self.path.clone(),
                        found,
                    });
                }
                Some(_) => {}
                None => {
                    meta.insert(KEY_FORMAT, FORMAT)
                        .map_err(|e| self.db_error(e))?;
                }
            }
            tx.open_table(NODES).map_err(|e| self.db_error(e))?;
        }
        tx.commit().map_err(|e| self.db_error(e))?;

        let tx = self.db.begin_read().map_err(|e| self.db_error(e))?;
        let table = tx.open_table(NODES).map_err(|e| self.db_error(e))?;
        let mut held = BTreeMap::new();
        for row in table.iter().map_err(|e| self.db_error(e))? {
            let (node, value) = row.map_err(|e| self.db_error(e))?;
            let node = node.value().to_owned();
            let row: Row =
                serde_json::from_slice(value.value()).map_err(|e| CheckpointError::Corrupt {
                    path: self.path.clone(),
                    detail: format!("row of node {node}: {e}"),
                })?;
            held.insert(
                node,
                Held {
                    contribution: row.contribution.map(Arc::new),
                    etag: row.etag,
                    last_sync: row.last_sync,
                    stale_since: row.stale_since,
                    deleted_since: row.deleted_since,
                    error: row.error,
                },
            );
        }
        Ok(held)
    }

    /// Write the rows of `changed` (`None`: remove the node's row), in one
    /// transaction.
    ///
    /// # Errors
    /// [`CheckpointError::Database`].
    pub fn save<'a>(
        &self,
        changed: impl IntoIterator<Item = (&'a str, Option<&'a Held>)>,
    ) -> Result<(), CheckpointError> {
        let tx = self.db.begin_write().map_err(|e| self.db_error(e))?;
        {
            let mut table = tx.open_table(NODES).map_err(|e| self.db_error(e))?;
            for (node, held) in changed {
                match held {
                    Some(h) => {
                        let row = RowRef {
                            contribution: h.contribution.as_deref(),
                            etag: h.etag.as_deref(),
                            last_sync: h.last_sync,
                            stale_since: h.stale_since,
                            deleted_since: h.deleted_since,
                            error: h.error.as_deref(),
                        };
                        // Plain data: serializing cannot fail.
                        let bytes = serde_json::to_vec(&row).unwrap_or_default();
                        table
                            .insert(node, bytes.as_slice())
                            .map_err(|e| self.db_error(e))?;
                    }
                    None => {
                        table.remove(node).map_err(|e| self.db_error(e))?;
                    }
                }
            }
        }
        tx.commit().map_err(|e| self.db_error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contribution(node: &str) -> ContributionJson {
        serde_json::from_value(serde_json::json!({"format": 1, "node": node,
            "epoch": "00000000000000ab", "instance": "0000000000000001", "version": 3,
            "generated_at": "2026-01-01T00:00:00Z", "workloads": [], "edges": [], "drops": []}))
        .expect("a contribution")
    }

    #[test]
    fn rows_come_back_after_a_reopen_and_removed_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let a = Held {
            contribution: Some(Arc::new(contribution("a"))),
            etag: Some("\"t\"".to_owned()),
            last_sync: Some(5),
            stale_since: Some(6),
            deleted_since: None,
            error: Some("refused".to_owned()),
        };
        let b = Held {
            deleted_since: Some(7),
            ..a.clone()
        };
        {
            let (store, held) = Checkpoint::open(dir.path()).unwrap();
            assert!(held.is_empty());
            store.save([("a", Some(&a)), ("b", Some(&b))]).unwrap();
            store.save([("b", None)]).unwrap();
        }
        let (_, held) = Checkpoint::open(dir.path()).unwrap();
        assert_eq!(held, BTreeMap::from([("a".to_owned(), a)]));
    }

    #[test]
    fn a_damaged_store_is_refused_naming_the_file_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, b"not a database, not at all; just some bytes").unwrap();
        let error = Checkpoint::open(dir.path()).unwrap_err();
        assert!(
            matches!(error, CheckpointError::Corrupt { .. }),
            "{error:?}"
        );
        assert!(
            error.to_string().contains(&path.display().to_string()),
            "{error}"
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"not a database, not at all; just some bytes"
        );
    }

    #[test]
    fn a_row_that_does_not_read_is_refused_naming_its_node() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _) = Checkpoint::open(dir.path()).unwrap();
            let tx = store.db.begin_write().unwrap();
            tx.open_table(NODES)
                .unwrap()
                .insert("b", b"{\"contribution\": 7}".as_slice())
                .unwrap();
            tx.commit().unwrap();
        }
        let error = Checkpoint::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains("row of node b"), "{error}");
        assert!(error.contains(FILE_NAME), "{error}");
    }

    #[test]
    fn a_newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (store, _) = Checkpoint::open(dir.path()).unwrap();
            let tx = store.db.begin_write().unwrap();
            tx.open_table(META).unwrap().insert(KEY_FORMAT, 2).unwrap();
            tx.commit().unwrap();
        }
        let error = Checkpoint::open(dir.path()).unwrap_err();
        assert!(
            matches!(error, CheckpointError::NewerFormat { found: 2, .. }),
            "{error:?}"
        );
    }
}
