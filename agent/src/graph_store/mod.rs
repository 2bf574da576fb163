//! The learned flow graph on disk: an embedded [redb] database in the
//! agent's state directory (`--state-dir`, `/var/lib/weir` by default), so
//! restarting or upgrading the agent loses nothing it learned.
//!
//! One file, `weir.redb`, three tables:
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `format_version`, `window_start`, `saved_at`, `epoch` | `u64` (times in Unix ns; `epoch` a random id) |
//! | `workloads` | a workload as JSON | its labels and pods as JSON |
//! | `edges` | an edge key as JSON | its counters as JSON |
//! | `sides` | an edge key, the side it was seen from and the peer's node as JSON | that side's counters as JSON |
//! | `names` | a DNS name and an external address as JSON | when flows carried the name, and for which workloads, as JSON |
//!
//! A store saved before a table was kept reads as if it were empty.
//!
//! JSON rows keep the format readable by the next version without a schema
//! crate; keys are deterministic (`BTreeMap`-ordered structs). A save
//! replaces the graph in one write transaction: a crash leaves the previous
//! save or the new one, never half of one (redb commits are atomic).
//!
//! `epoch` is the store's identity, drawn at random when the store is
//! created (or first opened by a weir that keeps one): a relay comparing
//! it notices a wiped or replaced store.
//!
//! The format is versioned ([`FORMAT_VERSION`]). A store written by a newer
//! weir is refused with a message naming both versions; a file that is not
//! a weir store, or whose rows do not parse, is reported with its path and
//! left untouched: the agent never overwrites what it cannot read.

mod check;
mod salvage;

pub use salvage::How;

use std::{
    fs::File,
    io::Read as _,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::watch;
use tracing::{debug, warn};

use crate::{
    aggregator::{EdgeSide, SeenFrom, Sides},
    flow::{EntryCounters, EntryKey},
};

use redb::{
    Builder, Database, ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _,
    TableDefinition,
};
use serde::{Deserialize, Serialize};
use weir_generator::model::{
    EdgeKey, EdgeStats, FlowGraph, NameSeen, NodeId, Protocol, WorkloadInfo, WorkloadRef,
};

/// Version of the on-disk format this build reads and writes.
pub const FORMAT_VERSION: u64 = 1;

/// The store's file name inside the state directory.
pub const FILE_NAME: &str = "weir.redb";

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const WORKLOADS: TableDefinition<&str, &str> = TableDefinition::new("workloads");
const EDGES: TableDefinition<&str, &str> = TableDefinition::new("edges");
/// What was folded of each live kernel flow table entry (JSON
/// [`EntryKey`] -> JSON [`EntryCounters`]), saved with the graph.
const ENTRIES: TableDefinition<&str, &str> = TableDefinition::new("entries");
/// The learned edges' counters by side (JSON [`SideRow`] -> JSON
/// [`EdgeStats`]), for a relay: see [`SeenFrom`].
const SIDES: TableDefinition<&str, &str> = TableDefinition::new("sides");
/// The names flows carried for external addresses (JSON [`NameRow`] ->
/// JSON [`NameSeen`]): [`FlowGraph::external_names`].
const NAMES: TableDefinition<&str, &str> = TableDefinition::new("names");

const KEY_VERSION: &str = "format_version";
const KEY_WINDOW_START: &str = "window_start";
const KEY_SAVED_AT: &str = "saved_at";
const KEY_EPOCH: &str = "epoch";

/// What the store could not do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The state directory cannot be created.
    #[error("cannot create the state directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another process (another agent) holds the store.
    #[error("{} is in use by another weir agent", path.display())]
    InUse {
        /// The store file.
        path: PathBuf,
    },
    /// The file is not a readable weir store; it was left untouched.
    #[error(
        "{} is corrupt or not a weir store (left untouched): {detail}; \
         `weir agent --repair-store` keeps what can be read of it (the damaged file is kept beside it), \
         or move it away to start learning afresh",
        path.display()
    )]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// What did not read.
        detail: String,
    },
    /// The store was written by a newer weir.
    #[error(
        "{} has store format version {found}, newer than the version this weir reads ({supported}); \
         run a weir at least as new as the one that wrote it",
        path.display()
    )]
    NewerFormat {
        /// The store file.
        path: PathBuf,
        /// The version in the file.
        found: u64,
        /// [`FORMAT_VERSION`].
        supported: u64,
    },
    /// The system's random source failed (a new store's epoch).
    #[error("cannot draw an epoch for {}: the system's random source failed", path.display())]
    Random {
        /// The store file.
        path: PathBuf,
        /// Why.
        #[source]
        source: getrandom::Error,
    },
    /// A database operation failed (I/O, full disk).
    #[error("store {}", path.display())]
    Database {
        /// The store file.
        path: PathBuf,
        /// The database's error.
        #[source]
        source: Box<redb::Error>,
    },
}

/// What a store held when it was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    /// The graph as last saved (empty for a new store).
    pub graph: FlowGraph,
    /// When learning started (the store's creation), Unix ns.
    pub window_start: u64,
    /// When the graph was last saved, Unix ns (`None` for a new store).
    pub saved_at: Option<u64>,
    /// What the saved graph holds of each kernel flow table entry that was
    /// live then: a restarted agent's tracker starts from there.
    pub entries: Vec<(EntryKey, EntryCounters)>,
    /// The store's identity: random, drawn when it was created; a wiped
    /// store has a new one.
    pub epoch: u64,
    /// The saved edges' counters by side (empty for a store saved before
    /// sides were kept).
    pub sides: Sides,
}

/// An open store. Its methods block (file I/O): call them from a blocking
/// context.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: PathBuf,
}

/// A node in a row key: [`NodeId`] has no serde form of its own.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum NodeRow {
    Workload(WorkloadRef),
    External(IpAddr),
}

#[derive(Serialize, Deserialize)]
pub(crate) struct EdgeRow {
    source: NodeRow,
    target: NodeRow,
    protocol: Protocol,
    port: u16,
}

impl From<&EdgeKey> for EdgeRow {
    fn from(key: &EdgeKey) -> Self {
        Self {
            source: (&key.source).into(),
            target: (&key.target).into(),
            protocol: key.protocol,
            port: key.port,
        }
    }
}

impl From<EdgeRow> for EdgeKey {
    fn from(row: EdgeRow) -> Self {
        Self {
            source: row.source.into(),
            target: row.target.into(),
            protocol: row.protocol,
            port: row.port,
        }
    }
}

/// A name of an external address in a row key.
#[derive(Serialize, Deserialize)]
pub(crate) struct NameRow {
    pub(crate) name: String,
    pub(crate) address: IpAddr,
}

/// A side of an edge in a row key.
#[derive(Serialize, Deserialize)]
struct SideRow {
    edge: EdgeRow,
    seen_from: SeenFrom,
    peer_node: Option<String>,
}

impl From<&NodeId> for NodeRow {
    fn from(node: &NodeId) -> Self {
        match node {
            NodeId::Workload(w) => Self::Workload(w.clone()),
            NodeId::External(ip) => Self::External(*ip),
        }
    }
}

impl From<NodeRow> for NodeId {
    fn from(row: NodeRow) -> Self {
        match row {
            NodeRow::Workload(w) => Self::Workload(w),
            NodeRow::External(ip) => Self::External(ip),
        }
    }
}

impl Store {
    /// Open (or create) the store in `dir`, creating `dir` if needed, and
    /// read what it holds. A new store starts its observation window at
    /// `now` (Unix ns). A damaged file is refused and left as it is
    /// (`check`): [`Store::repair`] keeps what can be read of it.
    ///
    /// # Errors
    /// See [`StoreError`]: a newer format, a corrupt file, a store in use.
    pub fn open(dir: &Path, now: u64) -> Result<(Self, Loaded), StoreError> {
        let (path, file, bytes) = lock_and_read(dir)?;
        if !bytes.is_empty() {
            check::examine(&bytes).map_err(|detail| StoreError::Corrupt {
                path: path.clone(),
                detail,
            })?;
        }
        Self::open_locked(path, file, now)
    }

    /// Open the store in `dir` as [`Store::open`] does, but keep what can
    /// be read of a damaged one: the damaged file is renamed beside it
    /// (never removed), and a new store starts with what it held.
    ///
    /// # Errors
    /// As [`Store::open`], except that damage is repaired.
    pub fn repair(dir: &Path, now: u64) -> Result<(Self, Loaded, Repair), StoreError> {
        let (path, file, bytes) = lock_and_read(dir)?;
        let damage = if bytes.is_empty() {
            None
        } else {
            check::examine(&bytes).err()
        };
        let Some(damage) = damage else {
            let (store, loaded) = Self::open_locked(path, file, now)?;
            return Ok((store, loaded, Repair::Intact));
        };
        let salvaged = salvage::salvage(bytes, now);
        let kept = keep_damaged(&path)?;
        // The damaged file keeps its lock until the new one is ours.
        let (store, mut loaded) =
            Self::open(dir, salvaged.as_ref().map_or(now, |s| s.window_start))?;
        drop(file);
        let repair = match salvaged {
            Some(salvaged) => {
                let saved_at = salvaged.saved_at.unwrap_or(now);
                store.save(&salvaged.graph, saved_at)?;
                // A new store: its epoch is new too, so a relay replaces
                // what it held of the damaged one.
                loaded = Loaded {
                    graph: salvaged.graph,
                    window_start: salvaged.window_start,
                    saved_at: Some(saved_at),
                    entries: Vec::new(),
                    epoch: loaded.epoch,
                    sides: Sides::new(),
                };
                Repair::Recovered {
                    damage,
                    kept,
                    workloads: loaded.graph.workloads.len(),
                    edges: loaded.graph.edges.len(),
                    dropped_rows: salvaged.dropped_rows,
                    saved_at: salvaged.saved_at,
                    how: salvaged.how,
                }
            }
            None => Repair::Nothing { damage, kept },
        };
        Ok((store, loaded, repair))
    }

    /// redb on the file `path`, whose lock `file` holds and whose bytes
    /// were examined.
    fn open_locked(path: PathBuf, file: File, now: u64) -> Result<(Self, Loaded), StoreError> {
        let db = Builder::new().create_file(file).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse { path: path.clone() },
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => {
                StoreError::Corrupt {
                    path: path.clone(),
                    detail,
                }
            }
            // What redb says of a file that is not one of its databases.
            redb::DatabaseError::Storage(redb::StorageError::Io(e))
                if e.kind() == std::io::ErrorKind::InvalidData =>
            {
                StoreError::Corrupt {
                    path: path.clone(),
                    detail: e.to_string(),
                }
            }
            other => StoreError::Database {
                path: path.clone(),
                source: Box::new(other.into()),
            },
        })?;
        let store = Self { db, path };
        let loaded = store.load(now)?;
        Ok((store, loaded))
    }

    /// The store file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db_error(&self, e: impl Into<redb::Error>) -> StoreError {
        StoreError::Database {
            path: self.path.clone(),
            source: Box::new(e.into()),
        }
    }

    /// Read the graph, or initialise a new store.
    fn load(&self, now: u64) -> Result<Loaded, StoreError> {
        let read = read_graph(&self.db, now, Rows::Strict).map_err(|e| match e {
            ReadError::Db(e) => self.db_error(e),
            ReadError::Corrupt(detail) => StoreError::Corrupt {
                path: self.path.clone(),
                detail,
            },
            ReadError::Newer(found) => StoreError::NewerFormat {
                path: self.path.clone(),
                found,
                supported: FORMAT_VERSION,
            },
        })?;
        match read {
            // A store written before epochs were kept gets one now.
            Some((loaded, _)) if loaded.epoch == 0 => {
                let epoch = self.new_epoch()?;
                self.write_meta(&[(KEY_EPOCH, epoch)])?;
                Ok(Loaded { epoch, ..loaded })
            }
            Some((loaded, _)) => Ok(loaded),
            None => {
                let epoch = self.new_epoch()?;
                self.write_meta(&[
                    (KEY_VERSION, FORMAT_VERSION),
                    (KEY_WINDOW_START, now),
                    (KEY_EPOCH, epoch),
                ])?;
                Ok(Loaded {
                    graph: FlowGraph::default(),
                    window_start: now,
                    saved_at: None,
                    entries: Vec::new(),
                    epoch,
                    sides: Sides::new(),
                })
            }
        }
    }

    /// A random epoch, never 0 (0 reads as "none yet").
    fn new_epoch(&self) -> Result<u64, StoreError> {
        loop {
            let mut bytes = [0_u8; 8];
            getrandom::fill(&mut bytes).map_err(|source| StoreError::Random {
                path: self.path.clone(),
                source,
            })?;
            let epoch = u64::from_le_bytes(bytes);
            if epoch != 0 {
                return Ok(epoch);
            }
        }
    }

    fn write_meta(&self, rows: &[(&str, u64)]) -> Result<(), StoreError> {
        let write = self.db.begin_write().map_err(|e| self.db_error(e))?;
        {
            let mut meta = write.open_table(META).map_err(|e| self.db_error(e))?;
            for (key, value) in rows {
                meta.insert(*key, *value).map_err(|e| self.db_error(e))?;
            }
        }
        write.commit().map_err(|e| self.db_error(e))
    }

    /// Replace the stored graph with `graph`, atomically, stamped `now`
    /// (Unix ns).
    ///
    /// # Errors
    /// I/O errors ([`StoreError::Database`]).
    pub fn save(&self, graph: &FlowGraph, now: u64) -> Result<(), StoreError> {
        self.save_folded(graph, &[], now)
    }

    /// Replace the stored graph and the folded counters of the kernel
    /// entries it holds ([`Aggregator::for_store`](crate::aggregator::Aggregator::for_store)),
    /// atomically, stamped `now` (Unix ns).
    ///
    /// # Errors
    /// I/O errors ([`StoreError::Database`]).
    pub fn save_folded(
        &self,
        graph: &FlowGraph,
        entries: &[(EntryKey, EntryCounters)],
        now: u64,
    ) -> Result<(), StoreError> {
        self.save_all(graph, entries, &Sides::new(), now)
    }

    /// [`Store::save_folded`] with the edges' counters by side
    /// ([`Aggregator::for_store_with_sides`](crate::aggregator::Aggregator::for_store_with_sides)).
    ///
    /// # Errors
    /// I/O errors ([`StoreError::Database`]).
    pub fn save_all(
        &self,
        graph: &FlowGraph,
        entries: &[(EntryKey, EntryCounters)],
        sides: &Sides,
        now: u64,
    ) -> Result<(), StoreError> {
        let write = self.db.begin_write().map_err(|e| self.db_error(e))?;
        {
            let mut table = write.open_table(SIDES).map_err(|e| self.db_error(e))?;
            table.retain(|_, _| false).map_err(|e| self.db_error(e))?;
            for (edge, sides) in sides {
                for side in sides {
                    let key = to_json(&SideRow {
                        edge: edge.into(),
                        seen_from: side.seen_from,
                        peer_node: side.peer_node.as_deref().map(str::to_owned),
                    });
                    let value = to_json(&side.stats);
                    table
                        .insert(key.as_str(), value.as_str())
                        .map_err(|e| self.db_error(e))?;
                }
            }
        }
        {
            let mut table = write.open_table(NAMES).map_err(|e| self.db_error(e))?;
            table.retain(|_, _| false).map_err(|e| self.db_error(e))?;
            for (name, addresses) in &graph.external_names {
                for (address, seen) in addresses {
                    let key = to_json(&NameRow {
                        name: name.clone(),
                        address: *address,
                    });
                    let value = to_json(seen);
                    table
                        .insert(key.as_str(), value.as_str())
                        .map_err(|e| self.db_error(e))?;
                }
            }
        }
        {
            let mut table = write.open_table(ENTRIES).map_err(|e| self.db_error(e))?;
            table.retain(|_, _| false).map_err(|e| self.db_error(e))?;
            for (key, counters) in entries {
                let (key, value) = (to_json(key), to_json(counters));
                table
                    .insert(key.as_str(), value.as_str())
                    .map_err(|e| self.db_error(e))?;
            }
        }
        {
            let mut workloads = write.open_table(WORKLOADS).map_err(|e| self.db_error(e))?;
            workloads
                .retain(|_, _| false)
                .map_err(|e| self.db_error(e))?;
            for (workload, info) in &graph.workloads {
                let key = to_json(workload);
                let value = to_json(info);
                workloads
                    .insert(key.as_str(), value.as_str())
                    .map_err(|e| self.db_error(e))?;
            }
            let mut edges = write.open_table(EDGES).map_err(|e| self.db_error(e))?;
            edges.retain(|_, _| false).map_err(|e| self.db_error(e))?;
            for (key, stats) in &graph.edges {
                let key = to_json(&EdgeRow {
                    source: (&key.source).into(),
                    target: (&key.target).into(),
                    protocol: key.protocol,
                    port: key.port,
                });
                let value = to_json(stats);
                edges
                    .insert(key.as_str(), value.as_str())
                    .map_err(|e| self.db_error(e))?;
            }
            let mut meta = write.open_table(META).map_err(|e| self.db_error(e))?;
            meta.insert(KEY_VERSION, FORMAT_VERSION)
                .map_err(|e| self.db_error(e))?;
            meta.insert(KEY_SAVED_AT, now)
                .map_err(|e| self.db_error(e))?;
        }
        write.commit().map_err(|e| self.db_error(e))
    }
}

/// What [`Store::repair`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Repair {
    /// The store was not damaged: nothing was done.
    Intact,
    /// Part of a damaged store was recovered into a new one.
    Recovered {
        /// What was wrong with it.
        damage: String,
        /// Where the damaged file was moved.
        kept: PathBuf,
        /// Workloads recovered.
        workloads: usize,
        /// Edges recovered.
        edges: usize,
        /// Rows that did not read and were left out.
        dropped_rows: u64,
        /// When the recovered graph had been saved, Unix ns (`None`: the
        /// store had no save yet).
        saved_at: Option<u64>,
        /// How it was recovered.
        how: How,
    },
    /// Nothing of the damaged store could be read: a new one starts empty.
    Nothing {
        /// What was wrong with it.
        damage: String,
        /// Where the damaged file was moved.
        kept: PathBuf,
    },
}

impl std::fmt::Display for Repair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Intact => f.write_str("the store is intact, nothing to repair"),
            Self::Recovered {
                damage,
                kept,
                workloads,
                edges,
                dropped_rows,
                saved_at,
                how,
            } => {
                write!(
                    f,
                    "the store was {damage}; recovered {edges} edges and {workloads} workloads"
                )?;
                let at = saved_at.map_or_else(|| "never".to_owned(), crate::timestamp::rfc3339);
                match how {
                    How::LastGoodCommit => write!(
                        f,
                        " as saved at {at}: what was learned after that save is lost"
                    )?,
                    How::RowByRow => write!(
                        f,
                        " row by row from the pages left (newest save found: {at}): \
                         edges and workloads whose pages were lost are missing, \
                         and what was learned after that save is lost"
                    )?,
                }
                if *dropped_rows > 0 {
                    write!(
                        f,
                        ", and {dropped_rows} rows that did not read were left out"
                    )?;
                }
                write!(f, "; the damaged file is kept as {}", kept.display())
            }
            Self::Nothing { damage, kept } => write!(
                f,
                "the store was {damage}; nothing could be recovered: everything learned is lost and \
                 learning starts afresh; the damaged file is kept as {}",
                kept.display()
            ),
        }
    }
}

/// Why the graph could not be read from a database.
enum ReadError {
    Db(redb::Error),
    Corrupt(String),
    Newer(u64),
}

impl<E: Into<redb::Error>> From<E> for ReadError {
    fn from(e: E) -> Self {
        Self::Db(e.into())
    }
}

/// What a row that does not parse does.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rows {
    /// Stops the read: the store is corrupt.
    Strict,
    /// Is left out and counted (a repair).
    Lenient,
}

/// The graph in `db` and how many rows were left out, or `None` for a
/// database without a weir store in it yet.
fn read_graph(db: &Database, now: u64, rows: Rows) -> Result<Option<(Loaded, u64)>, ReadError> {
    let read = db.begin_read()?;
    let meta = match read.open_table(META) {
        Ok(table) => Some(table),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let get = |key: &str| -> Result<Option<u64>, ReadError> {
        match &meta {
            None => Ok(None),
            Some(table) => Ok(table.get(key)?.map(|v| v.value())),
        }
    };
    let Some(version) = get(KEY_VERSION)? else {
        if meta.is_some() || has_rows(&read)? {
            return Err(ReadError::Corrupt(
                "data without a format version".to_owned(),
            ));
        }
        return Ok(None);
    };
    if version > FORMAT_VERSION {
        return Err(ReadError::Newer(version));
    }
    if version == 0 {
        return Err(ReadError::Corrupt("format version 0".to_owned()));
    }
    let window_start = get(KEY_WINDOW_START)?.unwrap_or(now);
    let saved_at = get(KEY_SAVED_AT)?;
    let epoch = get(KEY_EPOCH)?.unwrap_or(0);

    let mut dropped = 0_u64;
    let mut bad = |what: String| -> Result<(), ReadError> {
        match rows {
            Rows::Strict => Err(ReadError::Corrupt(what)),
            Rows::Lenient => {
                dropped += 1;
                Ok(())
            }
        }
    };
    let mut graph = FlowGraph::default();
    match read.open_table(WORKLOADS) {
        Ok(table) => {
            for row in table.iter()? {
                let Ok((key, value)) = row else {
                    bad("a workloads row does not read".to_owned())?;
                    continue;
                };
                let (key, value) = (key.value(), value.value());
                match (
                    serde_json::from_str::<WorkloadRef>(key),
                    serde_json::from_str::<WorkloadInfo>(value),
                ) {
                    (Ok(workload), Ok(info)) => {
                        graph.workloads.insert(workload, info);
                    }
                    (Err(e), _) | (_, Err(e)) => bad(format!("workloads row {key:?}: {e}"))?,
                }
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.into()),
    }
    match read.open_table(EDGES) {
        Ok(table) => {
            for row in table.iter()? {
                let Ok((key, value)) = row else {
                    bad("an edges row does not read".to_owned())?;
                    continue;
                };
                let (key, value) = (key.value(), value.value());
                match (
                    serde_json::from_str::<EdgeRow>(key),
                    serde_json::from_str::<EdgeStats>(value),
                ) {
                    (Ok(edge), Ok(stats)) => {
                        graph.edges.insert(
                            EdgeKey {
                                source: edge.source.into(),
                                target: edge.target.into(),
                                protocol: edge.protocol,
                                port: edge.port,
                            },
                            stats,
                        );
                    }
                    (Err(e), _) | (_, Err(e)) => bad(format!("edges row {key:?}: {e}"))?,
                }
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.into()),
    }
    match read.open_table(NAMES) {
        Ok(table) => {
            for row in table.iter()? {
                let Ok((key, value)) = row else {
                    bad("a names row does not read".to_owned())?;
                    continue;
                };
                let (key, value) = (key.value(), value.value());
                match (
                    serde_json::from_str::<NameRow>(key),
                    serde_json::from_str::<NameSeen>(value),
                ) {
                    (Ok(row), Ok(seen)) => {
                        graph
                            .external_names
                            .entry(row.name)
                            .or_default()
                            .insert(row.address, seen);
                    }
                    (Err(e), _) | (_, Err(e)) => bad(format!("names row {key:?}: {e}"))?,
                }
            }
        }
        // Saved by a weir that kept no names.
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let mut sides = Sides::new();
    match read.open_table(SIDES) {
        Ok(table) => {
            for row in table.iter()? {
                let Ok((key, value)) = row else {
                    bad("a sides row does not read".to_owned())?;
                    continue;
                };
                let (key, value) = (key.value(), value.value());
                match (
                    serde_json::from_str::<SideRow>(key),
                    serde_json::from_str::<EdgeStats>(value),
                ) {
                    (Ok(row), Ok(stats)) => {
                        sides.entry(row.edge.into()).or_default().push(EdgeSide {
                            seen_from: row.seen_from,
                            peer_node: row.peer_node.map(Arc::from),
                            stats,
                        });
                    }
                    (Err(e), _) | (_, Err(e)) => bad(format!("sides row {key:?}: {e}"))?,
                }
            }
        }
        // Saved by a weir that kept no sides.
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let mut entries = Vec::new();
    match read.open_table(ENTRIES) {
        Ok(table) => {
            for row in table.iter()? {
                let Ok((key, value)) = row else {
                    bad("an entries row does not read".to_owned())?;
                    continue;
                };
                let (key, value) = (key.value(), value.value());
                match (
                    serde_json::from_str::<EntryKey>(key),
                    serde_json::from_str::<EntryCounters>(value),
                ) {
                    (Ok(key), Ok(counters)) => entries.push((key, counters)),
                    (Err(e), _) | (_, Err(e)) => bad(format!("entries row {key:?}: {e}"))?,
                }
            }
        }
        // Saved by a weir that kept no entries.
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Some((
        Loaded {
            graph,
            window_start,
            saved_at,
            entries,
            epoch,
            sides,
        },
        dropped,
    )))
}

fn has_rows(read: &redb::ReadTransaction) -> Result<bool, ReadError> {
    for table in [WORKLOADS, EDGES] {
        match read.open_table(table) {
            Ok(t) => {
                if t.len()? > 0 {
                    return Ok(true);
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(false)
}

/// Create `dir`, open (or create) the store file in it, lock it as redb
/// does (one agent per store; redb takes the same lock on the same file
/// again) and read it whole.
fn lock_and_read(dir: &Path) -> Result<(PathBuf, File, Vec<u8>), StoreError> {
    std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    let path = dir.join(FILE_NAME);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io_error(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(StoreError::InUse { path }),
        Err(std::fs::TryLockError::Error(e)) => return Err(io_error(&path, e)),
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| io_error(&path, e))?;
    Ok((path, file, bytes))
}

fn io_error(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Database {
        path: path.to_owned(),
        source: Box::new(redb::StorageError::Io(e).into()),
    }
}

/// Move the damaged store aside, to a name no file has yet.
fn keep_damaged(path: &Path) -> Result<PathBuf, StoreError> {
    let stamp = unix_now() / 1_000_000_000;
    let mut n = 0_u32;
    loop {
        let suffix = if n == 0 {
            format!("redb.damaged-{stamp}")
        } else {
            format!("redb.damaged-{stamp}-{n}")
        };
        let kept = path.with_extension(suffix);
        if !kept.exists() {
            return std::fs::rename(path, &kept)
                .map(|()| kept)
                .map_err(|e| io_error(path, e));
        }
        n += 1;
    }
}

/// Saves the aggregator's graph when it changed: periodically, and once
/// more at shutdown.
#[derive(Debug)]
pub struct Persister {
    store: Store,
    aggregator: Arc<crate::aggregator::Aggregator>,
    /// [`Aggregator::changes`](crate::aggregator::Aggregator::changes) at
    /// the last save.
    saved: AtomicU64,
}

impl Persister {
    /// A persister for `aggregator` into `store`. The first
    /// [`Persister::save_if_changed`] saves.
    #[must_use]
    pub fn new(store: Store, aggregator: Arc<crate::aggregator::Aggregator>) -> Self {
        let saved = aggregator.changes().wrapping_sub(1);
        Self {
            store,
            aggregator,
            saved: AtomicU64::new(saved),
        }
    }

    /// Save the graph if it changed since the last save; whether it saved.
    /// Blocks (file I/O).
    ///
    /// # Errors
    /// The store cannot be written; the next call tries again.
    pub fn save_if_changed(&self) -> Result<bool, StoreError> {
        let changes = self.aggregator.changes();
        if changes == self.saved.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let (graph, entries, sides) = self.aggregator.for_store_with_sides();
        self.store.save_all(&graph, &entries, &sides, unix_now())?;
        self.saved.store(changes, Ordering::Relaxed);
        debug!(edges = graph.edges.len(), "graph saved");
        Ok(true)
    }

    /// Save every `interval` when changed, until `shutdown` turns true. The
    /// last save is the caller's, once nothing folds any more.
    pub async fn run(self: Arc<Self>, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            let this = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || this.save_if_changed()).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => warn!(
                    error = crate::error_chain::chain(&error),
                    "cannot save the learned graph, will retry"
                ),
                // Cancelled when the runtime stops first (the agent failed
                // to start): no fault of the save, and not said as a panic.
                Err(error) => warn!("{}", crate::error_chain::task_ended("periodic save", error)),
            }
        }
    }
}

/// Now, Unix ns.
#[must_use]
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_nanos()).ok())
        .unwrap_or(0)
}

/// Rows are plain structs of strings, numbers and maps with string keys:
/// serialising them cannot fail.
fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use weir_generator::model::WorkloadKind;

    use super::*;

    fn graph() -> FlowGraph {
        let web = WorkloadRef::new("shop", WorkloadKind::Deployment, "web");
        let db = WorkloadRef::new("data", WorkloadKind::StatefulSet, "db");
        let mut g = FlowGraph::default();
        g.workloads.insert(
            web.clone(),
            WorkloadInfo {
                labels: BTreeMap::from([("app".into(), "web".into())]),
                pods: BTreeSet::from(["web-a".into(), "web-b".into()]),
            },
        );
        g.workloads.insert(db.clone(), WorkloadInfo::default());
        let stats = EdgeStats {
            packets: 10,
            bytes: 1000,
            connections: 3,
            first_seen: 1_700_000_000_000_000_000,
            last_seen: 1_700_000_100_000_000_000,
            ..EdgeStats::default()
        };
        g.record(
            EdgeKey {
                source: NodeId::Workload(web.clone()),
                target: NodeId::Workload(db),
                protocol: Protocol::Tcp,
                port: 5432,
            },
            &stats,
        );
        g.record(
            EdgeKey {
                source: NodeId::Workload(web.clone()),
                target: NodeId::External("2001:db8::1".parse().unwrap()),
                protocol: Protocol::Udp,
                port: 53,
            },
            &stats,
        );
        g.name_address(
            "ns.example",
            "2001:db8::1".parse().unwrap(),
            &web,
            stats.first_seen,
            stats.last_seen,
        );
        g
    }

    #[test]
    fn a_store_saved_before_names_were_kept_loads_without_them() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), 100).unwrap();
        store.save(&graph(), 200).unwrap();
        // As a weir that kept no names left it.
        let write = store.db.begin_write().unwrap();
        assert!(write.delete_table(NAMES).unwrap());
        write.commit().unwrap();
        drop(store);

        let (_store, loaded) = Store::open(dir.path(), 300).unwrap();
        let mut expected = graph();
        expected.external_names.clear();
        assert_eq!(loaded.graph, expected);
    }

    #[test]
    fn graph_round_trips_and_window_start_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (store, loaded) = Store::open(dir.path(), 100).unwrap();
        assert_eq!(loaded.graph, FlowGraph::default());
        assert_eq!((loaded.window_start, loaded.saved_at), (100, None));
        store.save(&graph(), 200).unwrap();
        drop(store);

        let (store, loaded) = Store::open(dir.path(), 300).unwrap();
        assert_eq!(loaded.graph, graph());
        assert_eq!((loaded.window_start, loaded.saved_at), (100, Some(200)));

        // A save replaces, it does not merge.
        store.save(&FlowGraph::default(), 400).unwrap();
        drop(store);
        let (_store, loaded) = Store::open(dir.path(), 500).unwrap();
        assert_eq!(loaded.graph, FlowGraph::default());
        assert_eq!(loaded.window_start, 100);
    }

    #[test]
    fn the_epoch_is_kept_by_the_store_and_new_for_a_new_store() {
        let dir = tempfile::tempdir().unwrap();
        let (store, first) = Store::open(dir.path(), 100).unwrap();
        assert_ne!(first.epoch, 0);
        store.save(&graph(), 200).unwrap();
        drop(store);
        let (store, again) = Store::open(dir.path(), 300).unwrap();
        assert_eq!(
            again.epoch, first.epoch,
            "a reopened store is the same store"
        );
        drop(store);

        std::fs::remove_file(dir.path().join(FILE_NAME)).unwrap();
        let (_store, wiped) = Store::open(dir.path(), 400).unwrap();
        assert_ne!(wiped.epoch, first.epoch, "a wiped store is a new store");
    }

    #[test]
    fn a_store_saved_without_an_epoch_gets_one_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), 100).unwrap();
        store.save(&graph(), 200).unwrap();
        // As a weir that kept no epoch left it.
        let write = store.db.begin_write().unwrap();
        write.open_table(META).unwrap().remove(KEY_EPOCH).unwrap();
        write.commit().unwrap();
        drop(store);

        let (store, loaded) = Store::open(dir.path(), 300).unwrap();
        assert_ne!(loaded.epoch, 0);
        assert_eq!(loaded.graph, graph());
        drop(store);
        let (_store, again) = Store::open(dir.path(), 400).unwrap();
        assert_eq!(again.epoch, loaded.epoch);
    }

    #[test]
    fn a_store_in_use_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, _) = Store::open(dir.path(), 1).unwrap();
        let err = Store::open(dir.path(), 1).unwrap_err();
        assert!(matches!(err, StoreError::InUse { .. }), "{err}");
    }

    #[test]
    fn a_newer_format_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), 1).unwrap();
        store.save(&graph(), 2).unwrap();
        let write = store.db.begin_write().unwrap();
        write
            .open_table(META)
            .unwrap()
            .insert(KEY_VERSION, FORMAT_VERSION + 1)
            .unwrap();
        write.commit().unwrap();
        drop(store);

        let err = Store::open(dir.path(), 3).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(
                err,
                StoreError::NewerFormat {
                    found: 2,
                    supported: 1,
                    ..
                }
            ),
            "{message}"
        );
        assert!(message.contains("weir.redb"), "{message}");
        assert!(message.contains("version 2"), "{message}");
        // Still there, still the newer version.
        let err = Store::open(dir.path(), 4).unwrap_err();
        assert!(matches!(err, StoreError::NewerFormat { .. }), "{err}");
    }

    #[test]
    fn a_corrupt_file_is_reported_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let garbage = b"this is not a database, but it is somebody's file".repeat(100);
        std::fs::write(&path, &garbage).unwrap();
        let err = Store::open(dir.path(), 1).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert_eq!(std::fs::read(&path).unwrap(), garbage);
    }

    #[test]
    fn rows_saved_before_verdicts_were_counted_load_with_zero_counts() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), 1).unwrap();
        let mut g = graph();
        // A row as the first format wrote it: no `verdicts`.
        let (key, stats) = g.edges.iter().next().map(|(k, s)| (k.clone(), *s)).unwrap();
        let old = format!(
            r#"{{"packets":{},"bytes":{},"connections":{},"first_seen":{},"last_seen":{}}}"#,
            stats.packets, stats.bytes, stats.connections, stats.first_seen, stats.last_seen
        );
        store.save(&g, 2).unwrap();
        let write = store.db.begin_write().unwrap();
        {
            let mut edges = write.open_table(EDGES).unwrap();
            let row = to_json(&EdgeRow {
                source: NodeRow::from(&key.source),
                target: NodeRow::from(&key.target),
                protocol: key.protocol,
                port: key.port,
            });
            edges.insert(row.as_str(), old.as_str()).unwrap();
        }
        write.commit().unwrap();
        drop(store);
        let (store, loaded) = Store::open(dir.path(), 3).unwrap();
        assert_eq!(loaded.graph, g, "{old}");
        assert!(loaded.graph.edges[&key].verdicts.is_zero());

        // Counted verdicts round trip.
        g.edges.get_mut(&key).unwrap().verdicts.audit = 2;
        store.save(&g, 4).unwrap();
        drop(store);
        let (_, loaded) = Store::open(dir.path(), 5).unwrap();
        assert_eq!(loaded.graph.edges[&key].verdicts.audit, 2);
    }

    #[test]
    fn bad_rows_are_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), 1).unwrap();
        let write = store.db.begin_write().unwrap();
        write
            .open_table(EDGES)
            .unwrap()
            .insert("{not json", "{}")
            .unwrap();
        write.commit().unwrap();
        drop(store);
        let err = Store::open(dir.path(), 2).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("edges row"), "{err}");
    }

    #[test]
    fn the_persister_saves_only_changes() {
        use crate::{
            aggregator::{Aggregator, Options, testing::*},
            flow::Initiator,
            metrics::Metrics,
        };
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), 1).unwrap();
        let aggregator = Arc::new(Aggregator::new(
            Options::default(),
            Arc::new(Metrics::new()),
        ));
        let persister = Persister::new(store, Arc::clone(&aggregator));
        assert!(persister.save_if_changed().unwrap(), "the first save saves");
        assert!(!persister.save_if_changed().unwrap());
        aggregator.fold(
            &obs(1, "10.0.0.1:43210", "10.0.1.9:5432", Initiator::Local),
            &shop(),
        );
        assert!(persister.save_if_changed().unwrap());
        assert!(!persister.save_if_changed().unwrap());
        let saved = aggregator.graph();
        drop(persister);
        let (_store, loaded) = Store::open(dir.path(), 2).unwrap();
        assert_eq!(loaded.graph, saved);
        assert_eq!(loaded.graph.edges.len(), 1);
    }

    #[test]
    fn the_sides_of_edges_are_saved_and_come_back() {
        use crate::{aggregator::testing::*, flow::Initiator};
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), 1).unwrap();
        let (aggregator, _) = node_aggregator();
        let r = shop().on_node("10.0.1.9", "node-2");
        for o in [
            obs(1, "10.0.0.1:43210", "10.0.1.9:5432", Initiator::Local),
            obs(1, "10.0.0.1:43211", "10.0.0.2:7070", Initiator::Local),
            obs(2, "10.0.0.2:7070", "10.0.0.1:43211", Initiator::Remote),
            obs(2, "10.0.0.2:7070", "10.0.1.9:40000", Initiator::Remote),
        ] {
            aggregator.fold(&o, &r);
        }
        let persister = Persister::new(store, Arc::clone(&aggregator));
        assert!(persister.save_if_changed().unwrap());
        let before = aggregator.contribution();
        drop(persister);

        let (_store, loaded) = Store::open(dir.path(), 2).unwrap();
        assert_eq!(loaded.sides, before.sides);
        let (again, _) = node_aggregator();
        again.restore_with_sides(&loaded.graph, &loaded.sides);
        let after = again.contribution();
        assert_eq!(after.sides, before.sides);
        assert!(
            after
                .sides
                .values()
                .flatten()
                .all(|s| s.seen_from != SeenFrom::Unknown),
            "{:?}",
            after.sides
        );
    }

    #[test]
    fn folded_entries_are_saved_with_the_graph() {
        let dir = tempfile::tempdir().unwrap();
        let entry = crate::flow::EntryKey {
            ifindex: 7,
            protocol: Protocol::Tcp,
            local: "10.0.0.1:40000".parse().unwrap(),
            remote: "[fd00::2]:80".parse().unwrap(),
        };
        let counters = crate::flow::EntryCounters {
            packets_from_pod: 3,
            bytes_from_pod: 180,
            packets_to_pod: 2,
            bytes_to_pod: 120,
            connections: 2,
        };
        {
            let (store, loaded) = Store::open(dir.path(), 1).unwrap();
            assert!(loaded.entries.is_empty());
            store
                .save_folded(&graph(), &[(entry, counters)], 2)
                .unwrap();
        }
        let (store, loaded) = Store::open(dir.path(), 3).unwrap();
        assert_eq!(loaded.graph, graph());
        assert_eq!(loaded.entries, vec![(entry, counters)]);
        // A save without entries (a repaired graph) drops them.
        store.save(&graph(), 4).unwrap();
        drop(store);
        assert!(Store::open(dir.path(), 5).unwrap().1.entries.is_empty());
    }

    #[test]
    fn the_state_directory_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        let (store, _) = Store::open(&nested, 1).unwrap();
        assert_eq!(store.path(), nested.join(FILE_NAME));
    }
}

#[cfg(test)]
mod damage_tests;
