//! The enforcement maps, for the agent's enforcer (layouts in `abi`).

use aya::maps::{Array, HashMap, LpmTrie, Map, MapData};

use super::{
    CIDRS, CIDRS_EPOCH, Datapath, ENDPOINTS, FLOWS, FLOWS4, FlowTable, IDENTITIES, MapError, PEERS,
    POLICY, POLICY_EXACT, map_data,
};
use crate::abi::{
    CidrKeyData, EndpointInfo, IpKey, PeerKey, PolicyExactKey, PolicyKeyData, PolicyValue,
};

/// `max_entries` of each enforcement map, as the kernel has them (an
/// adopted pinned map keeps the size it was created with). Check an update
/// against these before changing anything: a full hash or trie refuses
/// inserts with `E2BIG`/`ENOSPC`, leaving a half-applied policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyCapacities {
    /// `ENDPOINTS`.
    pub endpoints: u32,
    /// `IDENTITIES`.
    pub identities: u32,
    /// `CIDRS`.
    pub cidrs: u32,
    /// `POLICY`.
    pub policy: u32,
    /// `POLICY_EXACT`.
    pub policy_exact: u32,
    /// `PEERS`.
    pub peers: u32,
}

/// Typed handles on the enforcement maps (see `abi.h` for the semantics).
///
/// LPM trie keys are `aya::maps::lpm_trie::Key::new(prefix_len, data)` with
/// the data-only mirrors: `CIDRS` prefix_len is 32 + the prefix bits,
/// `POLICY` prefix_len is `abi::POLICY_KEY_FIXED_BITS` + the port prefix bits
/// (port in network order).
///
/// Writing order for a consistent datapath at every moment: identities,
/// CIDRs (then a bump of `CIDRS_EPOCH`), policy and peers first, the
/// endpoint entry last (it turns the checks on); the reverse to remove.
#[derive(Debug)]
pub struct PolicyMaps {
    /// `ENDPOINTS`: host veth ifindex -> the pod's identity, mode, flags.
    pub endpoints: HashMap<MapData, u32, EndpointInfo>,
    /// `IDENTITIES`: exact address -> identity.
    pub identities: HashMap<MapData, IpKey, u32>,
    /// `CIDRS`: ipBlock prefixes (and excepts) -> identity.
    pub cidrs: LpmTrie<MapData, CidrKeyData, u32>,
    /// `POLICY`: allow rules of port ranges, any port or any protocol.
    pub policy: LpmTrie<MapData, PolicyKeyData, PolicyValue>,
    /// `POLICY_EXACT`: allow rules of one protocol and port.
    pub policy_exact: HashMap<MapData, PolicyExactKey, PolicyValue>,
    /// `CIDRS_EPOCH`: bump index 0 after changing `CIDRS` (it invalidates
    /// the programs' cache of peer addresses).
    pub cidrs_epoch: CidrsEpoch,
    /// Second handles on `FLOWS4` and `FLOWS` (the flow tables the datapath
    /// task reads): the enforcer deletes judged entries after a policy
    /// change so they are judged again.
    pub flows: FlowTable,
    /// `PEERS`: (endpoint, direction, peer) pairs some rule names.
    pub peers: HashMap<MapData, PeerKey, u8>,
    /// The maps' sizes.
    pub capacities: PolicyCapacities,
}

/// `CIDRS_EPOCH`, the generation of `CIDRS` the programs' `PEER_CACHE`
/// entries are checked against.
pub struct CidrsEpoch(Array<MapData, u32>);

impl std::fmt::Debug for CidrsEpoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CidrsEpoch")
            .field(&self.0.get(&0, 0).ok())
            .finish()
    }
}

impl CidrsEpoch {
    /// The current epoch.
    ///
    /// # Errors
    ///
    /// The lookup failed.
    pub fn get(&self) -> Result<u32, aya::maps::MapError> {
        self.0.get(&0, 0)
    }

    /// Moves to the next epoch: every cached peer address is looked up in
    /// `CIDRS` again. Call it after `CIDRS` changed (the agent is its only
    /// writer, so read-then-write does not race).
    ///
    /// # Errors
    ///
    /// The lookup or update failed.
    pub fn bump(&mut self) -> Result<u32, aya::maps::MapError> {
        let next = self.0.get(&0, 0)?.wrapping_add(1);
        self.0.set(0, next, 0)?;
        Ok(next)
    }
}

fn max_entries(name: &'static str, map: &Map) -> Result<u32, MapError> {
    let data = map_data(map).ok_or(MapError::Taken { name })?;
    data.info()
        .map(|info| info.max_entries())
        .map_err(|source| MapError::Map { name, source })
}

impl Datapath {
    /// Takes the enforcement maps out of the datapath. The programs keep
    /// using them; with a pin directory they are the pinned ones.
    ///
    /// # Errors
    ///
    /// [`MapError::Taken`] on a second call; [`MapError::Map`] if aya
    /// refuses a map (wrong type or sizes) or its info cannot be read.
    pub fn take_policy_maps(&mut self) -> Result<PolicyMaps, MapError> {
        // Check all first: a failure leaves every map in the datapath.
        for name in [
            ENDPOINTS,
            IDENTITIES,
            CIDRS,
            POLICY,
            POLICY_EXACT,
            CIDRS_EPOCH,
            PEERS,
        ] {
            if self.ebpf.map(name).is_none() {
                return Err(MapError::Taken { name });
            }
        }
        let capacity = |name| {
            let map = self.ebpf.map(name).ok_or(MapError::Taken { name })?;
            max_entries(name, map)
        };
        let capacities = PolicyCapacities {
            endpoints: capacity(ENDPOINTS)?,
            identities: capacity(IDENTITIES)?,
            cidrs: capacity(CIDRS)?,
            policy: capacity(POLICY)?,
            policy_exact: capacity(POLICY_EXACT)?,
            peers: capacity(PEERS)?,
        };
        let err = |name| move |source| MapError::Map { name, source };
        let [v4, v6] = [(FLOWS4, 0), (FLOWS, 1)].map(|(name, i)| {
            self.flows_fds[i]
                .try_clone()
                .map_err(|io_error| {
                    aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                        call: "dup",
                        io_error,
                    })
                })
                .and_then(MapData::from_fd)
                .map(Map::HashMap)
                .map_err(err(name))
        });
        let flows = FlowTable::new(v4?, v6?)?;
        Ok(PolicyMaps {
            endpoints: HashMap::try_from(self.take(ENDPOINTS)?).map_err(err(ENDPOINTS))?,
            identities: HashMap::try_from(self.take(IDENTITIES)?).map_err(err(IDENTITIES))?,
            cidrs: LpmTrie::try_from(self.take(CIDRS)?).map_err(err(CIDRS))?,
            policy: LpmTrie::try_from(self.take(POLICY)?).map_err(err(POLICY))?,
            policy_exact: HashMap::try_from(self.take(POLICY_EXACT)?).map_err(err(POLICY_EXACT))?,
            cidrs_epoch: CidrsEpoch(
                Array::try_from(self.take(CIDRS_EPOCH)?).map_err(err(CIDRS_EPOCH))?,
            ),
            flows,
            peers: HashMap::try_from(self.take(PEERS)?).map_err(err(PEERS))?,
            capacities,
        })
    }
}
