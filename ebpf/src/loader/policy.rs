//! The enforcement maps, for the agent's enforcer (layouts in `abi`).

use aya::maps::{HashMap, LpmTrie, Map, MapData};

use super::{CIDRS, Datapath, ENDPOINTS, IDENTITIES, MapError, PEERS, POLICY, map_data};
use crate::abi::{CidrKeyData, EndpointInfo, IpKey, PeerKey, PolicyKeyData, PolicyValue};

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
/// CIDRs, policy and peers first, the endpoint entry last (it turns the
/// checks on); the reverse to remove.
#[derive(Debug)]
pub struct PolicyMaps {
    /// `ENDPOINTS`: host veth ifindex -> the pod's identity, mode, flags.
    pub endpoints: HashMap<MapData, u32, EndpointInfo>,
    /// `IDENTITIES`: exact address -> identity.
    pub identities: HashMap<MapData, IpKey, u32>,
    /// `CIDRS`: ipBlock prefixes (and excepts) -> identity.
    pub cidrs: LpmTrie<MapData, CidrKeyData, u32>,
    /// `POLICY`: allow rules.
    pub policy: LpmTrie<MapData, PolicyKeyData, PolicyValue>,
    /// `PEERS`: (endpoint, direction, peer) pairs some rule names.
    pub peers: HashMap<MapData, PeerKey, u8>,
    /// The maps' sizes.
    pub capacities: PolicyCapacities,
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
        for name in [ENDPOINTS, IDENTITIES, CIDRS, POLICY, PEERS] {
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
            peers: capacity(PEERS)?,
        };
        let err = |name| move |source| MapError::Map { name, source };
        Ok(PolicyMaps {
            endpoints: HashMap::try_from(self.take(ENDPOINTS)?).map_err(err(ENDPOINTS))?,
            identities: HashMap::try_from(self.take(IDENTITIES)?).map_err(err(IDENTITIES))?,
            cidrs: LpmTrie::try_from(self.take(CIDRS)?).map_err(err(CIDRS))?,
            policy: LpmTrie::try_from(self.take(POLICY)?).map_err(err(POLICY))?,
            peers: HashMap::try_from(self.take(PEERS)?).map_err(err(PEERS))?,
            capacities,
        })
    }
}
