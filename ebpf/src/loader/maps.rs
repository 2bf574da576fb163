//! Handles on the maps the agent reads: the flow table, the new-flow ring
//! buffer and the counters.

use aya::maps::{self, HashMap, Map, MapData, PerCpuArray, RingBuf};

use super::{COUNTERS, Datapath, EVENTS, FLOWS, FLOWS4};
use crate::abi::{CNT_MAX, FlowKey, FlowKey4, FlowStats};

/// Why a map could not be handed out or read.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// The map was taken out of the [`Datapath`] before.
    #[error("map {name} was already taken")]
    Taken {
        /// The map's name.
        name: &'static str,
    },
    /// aya refused the map (wrong type or size) or the syscall failed.
    #[error("accessing map {name}")]
    Map {
        /// The map's name.
        name: &'static str,
        /// aya's error.
        #[source]
        source: maps::MapError,
    },
}

/// The flow tables, `FLOWS4` (IPv4 flows) and `FLOWS` (IPv6 flows): the
/// source of truth for learning, seen as one table of [`FlowKey`]s.
///
/// New entries are announced through the ring buffer, but an event can be
/// lost (`CNT_RINGBUF_FULL`): sweep this table for entries without
/// `FLOW_F_ANNOUNCED`, and remove entries once they are recorded and idle.
///
/// A `FLOWS` pinned by a build before `FLOWS4` may still hold IPv4 flows,
/// which the programs keep using until they expire: they are read and
/// removed here like the others.
#[derive(Debug)]
pub struct FlowTable {
    v4: HashMap<MapData, FlowKey4, FlowStats>,
    v6: HashMap<MapData, FlowKey, FlowStats>,
}

impl FlowTable {
    /// Both tables, from their maps (`FLOWS4`, `FLOWS`).
    pub(super) fn new(v4: Map, v6: Map) -> Result<Self, MapError> {
        let err = |name| move |source| MapError::Map { name, source };
        Ok(Self {
            v4: HashMap::try_from(v4).map_err(err(FLOWS4))?,
            v6: HashMap::try_from(v6).map_err(err(FLOWS))?,
        })
    }

    /// Iterates over the entries, IPv4 first. The tables change while they
    /// are walked: an entry may be missed or seen twice, as with any BPF
    /// hash iteration.
    pub fn iter(&self) -> impl Iterator<Item = Result<(FlowKey, FlowStats), maps::MapError>> + '_ {
        self.v4
            .iter()
            .map(|entry| entry.map(|(key, stats)| (key.flow_key(), stats)))
            .chain(self.v6.iter())
    }

    /// The stats of one flow, if it is in the table.
    ///
    /// # Errors
    ///
    /// The lookup syscall failed.
    pub fn get(&self, key: &FlowKey) -> Result<Option<FlowStats>, maps::MapError> {
        if let Some(short) = FlowKey4::of(key)
            && let Some(stats) = found(self.v4.get(&short, 0))?
        {
            return Ok(Some(stats));
        }
        found(self.v6.get(key, 0))
    }

    /// Removes a flow; its next packet creates and announces a new entry.
    ///
    /// # Errors
    ///
    /// [`maps::MapError::KeyNotFound`] when the key is in neither table,
    /// else the syscall's error.
    pub fn remove(&mut self, key: &FlowKey) -> Result<(), maps::MapError> {
        if let Some(short) = FlowKey4::of(key) {
            match absent(self.v4.remove(&short)) {
                // not there: maybe an IPv4 flow of an older build, in FLOWS
                Err(maps::MapError::KeyNotFound) => {}
                done => return done,
            }
        }
        absent(self.v6.remove(key))
    }
}

/// aya reports a delete of a missing key as the syscall's ENOENT.
fn absent(result: Result<(), maps::MapError>) -> Result<(), maps::MapError> {
    match result {
        Err(maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Err(maps::MapError::KeyNotFound)
        }
        other => other,
    }
}

fn found(result: Result<FlowStats, maps::MapError>) -> Result<Option<FlowStats>, maps::MapError> {
    match result {
        Ok(stats) => Ok(Some(stats)),
        Err(maps::MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Datapath {
    /// Takes the new-flow ring buffer `EVENTS` out of the datapath. Each
    /// record decodes with [`crate::abi::FlowEvent::from_bytes`].
    ///
    /// # Errors
    ///
    /// [`MapError::Taken`] on a second call.
    pub fn take_ring_buf(&mut self) -> Result<RingBuf<MapData>, MapError> {
        let map = self.take(EVENTS)?;
        RingBuf::try_from(map).map_err(|source| MapError::Map {
            name: EVENTS,
            source,
        })
    }

    /// Takes the flow tables `FLOWS4` and `FLOWS` out of the datapath.
    ///
    /// # Errors
    ///
    /// [`MapError::Taken`] on a second call.
    pub fn take_flow_table(&mut self) -> Result<FlowTable, MapError> {
        if self.ebpf.map(FLOWS).is_none() {
            return Err(MapError::Taken { name: FLOWS });
        }
        let v4 = self.take(FLOWS4)?;
        FlowTable::new(v4, self.take(FLOWS)?)
    }

    /// The counters (`COUNTERS`, indexed by `abi::CNT_*`), summed over CPUs.
    ///
    /// # Errors
    ///
    /// The map lookup failed.
    pub fn counters(&self) -> Result<[u64; CNT_MAX], MapError> {
        let err = |source| MapError::Map {
            name: COUNTERS,
            source,
        };
        let map = self
            .ebpf
            .map(COUNTERS)
            .ok_or(MapError::Taken { name: COUNTERS })?;
        let array = PerCpuArray::<_, u64>::try_from(map).map_err(err)?;
        let mut sums = [0; CNT_MAX];
        // A COUNTERS map pinned by an older build may have fewer slots:
        // the counters it lacks read 0 (the programs cannot count them).
        for (index, sum) in (0..array.len()).zip(&mut sums) {
            *sum = array.get(&index, 0).map_err(err)?.iter().sum();
        }
        Ok(sums)
    }

    pub(super) fn take(&mut self, name: &'static str) -> Result<Map, MapError> {
        self.ebpf.take_map(name).ok_or(MapError::Taken { name })
    }
}
