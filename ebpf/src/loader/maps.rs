//! Handles on the maps the agent reads: the flow table, the new-flow ring
//! buffer and the counters.

use aya::maps::{self, HashMap, Map, MapData, PerCpuArray, RingBuf};

use super::{COUNTERS, Datapath, EVENTS, FLOWS};
use crate::abi::{CNT_MAX, FlowKey, FlowStats};

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

/// The flow table `FLOWS`: the source of truth for learning.
///
/// New entries are announced through the ring buffer, but an event can be
/// lost (`CNT_RINGBUF_FULL`): sweep this table for entries without
/// `FLOW_F_ANNOUNCED`, and remove entries once they are recorded and idle.
#[derive(Debug)]
pub struct FlowTable {
    map: HashMap<MapData, FlowKey, FlowStats>,
}

impl FlowTable {
    /// Iterates over the entries. The table changes while it is walked: an
    /// entry may be missed or seen twice, as with any BPF hash iteration.
    pub fn iter(&self) -> impl Iterator<Item = Result<(FlowKey, FlowStats), maps::MapError>> + '_ {
        self.map.iter()
    }

    /// The stats of one flow, if it is in the table.
    ///
    /// # Errors
    ///
    /// The lookup syscall failed.
    pub fn get(&self, key: &FlowKey) -> Result<Option<FlowStats>, maps::MapError> {
        match self.map.get(key, 0) {
            Ok(stats) => Ok(Some(stats)),
            Err(maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes a flow; its next packet creates and announces a new entry.
    ///
    /// # Errors
    ///
    /// The key is not in the table or the syscall failed.
    pub fn remove(&mut self, key: &FlowKey) -> Result<(), maps::MapError> {
        self.map.remove(key)
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

    /// Takes the flow table `FLOWS` out of the datapath.
    ///
    /// # Errors
    ///
    /// [`MapError::Taken`] on a second call.
    pub fn take_flow_table(&mut self) -> Result<FlowTable, MapError> {
        let map = self.take(FLOWS)?;
        let map = HashMap::try_from(map).map_err(|source| MapError::Map {
            name: FLOWS,
            source,
        })?;
        Ok(FlowTable { map })
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
