//! The enforcement maps' contents in the kernel's own terms (ABI keys and
//! values), the plan that takes the maps from one content to another in a
//! safe order, and the small trait the plan is applied through.
//!
//! Diffs are computed here, on ABI entries, rather than on the compiler's
//! [`DatapathState`]: ENDPOINTS is keyed by host veth ifindex, which the
//! compiler never sees (a pod recreated under its name keeps its key there
//! and gets a new veth), and after an agent restart the "before" side is
//! what the pinned maps hold, read back from the kernel.

use std::{
    collections::{HashMap, HashSet},
    hash::Hash,
    net::IpAddr,
};

use ipnet::IpNet;
use weir_ebpf::abi::{
    self, CidrKeyData, EndpointInfo, IpKey, PeerKey, PolicyExactKey, PolicyKeyData, PolicyValue,
};
use weir_generator::datapath::{DatapathState, PodKey, direction_code};

/// An LPM trie key: prefix length and data.
pub type Lpm<K> = (u32, K);

/// Everything the six enforcement maps hold (the programs' own PEER_CACHE
/// is invalidated through CIDRS_EPOCH, see [`Op::BumpCidrsEpoch`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entries {
    /// ENDPOINTS: host veth ifindex -> endpoint.
    pub endpoints: HashMap<u32, EndpointInfo>,
    /// IDENTITIES: exact address -> identity.
    pub identities: HashMap<IpKey, u32>,
    /// CIDRS: prefix -> identity.
    pub cidrs: HashMap<Lpm<CidrKeyData>, u32>,
    /// POLICY_EXACT: allow rule of one protocol and port -> rule id.
    pub exact: HashMap<PolicyExactKey, PolicyValue>,
    /// POLICY: the other allow rules -> rule id.
    pub policy: HashMap<Lpm<PolicyKeyData>, PolicyValue>,
    /// PEERS: (endpoint, direction, peer) some rule names.
    pub peers: HashSet<PeerKey>,
}

/// Map names, as the compiler's limits and errors spell them.
pub const MAPS: [&str; 6] = [
    "ENDPOINTS",
    "IDENTITIES",
    "CIDRS",
    "POLICY_EXACT",
    "POLICY",
    "PEERS",
];

impl Entries {
    /// The kernel entries of a compiled state, for the pods of this node:
    /// `local` maps a pod to its host veth's ifindex; other pods have no
    /// ENDPOINTS entry (no program of this node runs for them).
    #[must_use]
    pub fn of_state(
        state: &DatapathState,
        local: &std::collections::BTreeMap<PodKey, u32>,
    ) -> Self {
        let endpoints = state
            .endpoints
            .iter()
            .filter_map(|(pod, ep)| {
                let ifindex = *local.get(pod)?;
                Some((
                    ifindex,
                    EndpointInfo {
                        identity: ep.identity,
                        mode: ep.mode.code(),
                        flags: ep.flags,
                        _pad0: 0,
                    },
                ))
            })
            .collect();
        let identities = state
            .ips
            .iter()
            .map(|(ip, id)| (ip_key(*ip), *id))
            .collect();
        let cidrs = state
            .cidrs
            .iter()
            .map(|(net, id)| (cidr_key(*net), *id))
            .collect();
        let exact = state
            .rules
            .iter()
            .filter(|(rule, _)| rule.is_exact())
            .map(|(rule, id)| {
                (
                    PolicyExactKey {
                        endpoint: rule.endpoint,
                        direction: direction_code(rule.direction),
                        proto: rule.protocol,
                        port: rule.port.to_be(),
                        peer: rule.peer,
                    },
                    PolicyValue { rule_id: *id },
                )
            })
            .collect();
        let policy = state
            .rules
            .iter()
            .filter(|(rule, _)| !rule.is_exact())
            .map(|(rule, id)| {
                (
                    (
                        abi::POLICY_KEY_FIXED_BITS + u32::from(rule.port_prefix),
                        PolicyKeyData {
                            endpoint: rule.endpoint,
                            direction: direction_code(rule.direction),
                            proto: rule.protocol,
                            _pad0: [0; 2],
                            peer: rule.peer,
                            port: rule.port.to_be(),
                            _pad1: 0,
                        },
                    ),
                    PolicyValue { rule_id: *id },
                )
            })
            .collect();
        let peers = state
            .peers
            .iter()
            .map(|p| PeerKey {
                endpoint: p.endpoint,
                direction: direction_code(p.direction),
                _pad0: [0; 3],
                peer: p.peer,
            })
            .collect();
        Self {
            endpoints,
            identities,
            cidrs,
            exact,
            policy,
            peers,
        }
    }

    /// Mirror one write.
    pub fn apply(&mut self, op: &Op) {
        match *op {
            Op::PutEndpoint(k, v) => drop(self.endpoints.insert(k, v)),
            Op::DelEndpoint(k) => drop(self.endpoints.remove(&k)),
            Op::PutIdentity(k, v) => drop(self.identities.insert(k, v)),
            Op::DelIdentity(k) => drop(self.identities.remove(&k)),
            Op::PutCidr(k, v) => drop(self.cidrs.insert(k, v)),
            Op::DelCidr(k) => drop(self.cidrs.remove(&k)),
            Op::PutExact(k, v) => drop(self.exact.insert(k, v)),
            Op::DelExact(k) => drop(self.exact.remove(&k)),
            Op::BumpCidrsEpoch => {}
            Op::PutRule(k, v) => drop(self.policy.insert(k, v)),
            Op::DelRule(k) => drop(self.policy.remove(&k)),
            Op::PutPeer(k) => drop(self.peers.insert(k)),
            Op::DelPeer(k) => drop(self.peers.remove(&k)),
        }
    }

    /// Entries per map, in [`MAPS`] order.
    #[must_use]
    pub fn counts(&self) -> [usize; 6] {
        [
            self.endpoints.len(),
            self.identities.len(),
            self.cidrs.len(),
            self.exact.len(),
            self.policy.len(),
            self.peers.len(),
        ]
    }
}

/// IDENTITIES key of an address.
#[must_use]
pub fn ip_key(ip: IpAddr) -> IpKey {
    let (family, addr) = family_addr(ip);
    IpKey {
        family,
        _pad0: [0; 3],
        addr,
    }
}

/// CIDRS key of a prefix: the family byte and its padding are matched
/// exactly (32 bits), then the prefix.
#[must_use]
pub fn cidr_key(net: IpNet) -> Lpm<CidrKeyData> {
    let (family, addr) = family_addr(net.network());
    (
        32 + u32::from(net.prefix_len()),
        CidrKeyData {
            family,
            _pad0: [0; 3],
            addr,
        },
    )
}

fn family_addr(ip: IpAddr) -> (u8, [u8; 16]) {
    match ip {
        IpAddr::V4(v4) => {
            let mut addr = [0; 16];
            addr[..4].copy_from_slice(&v4.octets());
            (abi::FAMILY_IPV4, addr)
        }
        IpAddr::V6(v6) => (abi::FAMILY_IPV6, v6.octets()),
    }
}

/// One map write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// ENDPOINTS insert or update.
    PutEndpoint(u32, EndpointInfo),
    /// ENDPOINTS delete.
    DelEndpoint(u32),
    /// IDENTITIES insert or update.
    PutIdentity(IpKey, u32),
    /// IDENTITIES delete.
    DelIdentity(IpKey),
    /// CIDRS insert or update.
    PutCidr(Lpm<CidrKeyData>, u32),
    /// CIDRS delete.
    DelCidr(Lpm<CidrKeyData>),
    /// CIDRS_EPOCH increment, after CIDRS changed: the programs' cached
    /// peer identities are looked up in CIDRS again.
    BumpCidrsEpoch,
    /// POLICY_EXACT insert or update.
    PutExact(PolicyExactKey, PolicyValue),
    /// POLICY_EXACT delete.
    DelExact(PolicyExactKey),
    /// POLICY insert or update.
    PutRule(Lpm<PolicyKeyData>, PolicyValue),
    /// POLICY delete.
    DelRule(Lpm<PolicyKeyData>),
    /// PEERS insert.
    PutPeer(PeerKey),
    /// PEERS delete.
    DelPeer(PeerKey),
}

impl Op {
    /// The map it writes.
    #[must_use]
    pub const fn map(&self) -> &'static str {
        match self {
            Self::PutEndpoint(..) | Self::DelEndpoint(_) => "ENDPOINTS",
            Self::PutIdentity(..) | Self::DelIdentity(_) => "IDENTITIES",
            Self::PutCidr(..) | Self::DelCidr(_) => "CIDRS",
            Self::BumpCidrsEpoch => "CIDRS_EPOCH",
            Self::PutExact(..) | Self::DelExact(_) => "POLICY_EXACT",
            Self::PutRule(..) | Self::DelRule(_) => "POLICY",
            Self::PutPeer(_) | Self::DelPeer(_) => "PEERS",
        }
    }
}

/// The writes that take the maps from `old` to `new`, in an order that
/// never denies a connection both sides allow:
///
/// 1. what a lookup reaches last is added first: identities and CIDRs of
///    new peers (then a CIDRS_EPOCH bump, so no cached peer identity
///    predates them), then PEERS, POLICY_EXACT and POLICY rules, so every
///    rule an endpoint may need exists before anything points at it;
/// 2. then ENDPOINTS (new pods, changed modes and isolation flags): an
///    endpoint switches to enforce only once its rules are in place;
/// 3. deletes last, endpoints first (a pod that stops being judged before
///    its rules go), then rules, peers, CIDRs (and another epoch bump) and
///    identities.
///
/// Keys are sorted within each step so the plan is deterministic.
#[must_use]
pub fn plan(old: &Entries, new: &Entries) -> Vec<Op> {
    let mut ops = Vec::new();
    for (k, v) in changed(&old.identities, &new.identities) {
        ops.push(Op::PutIdentity(k, v));
    }
    let before = ops.len();
    for (k, v) in changed(&old.cidrs, &new.cidrs) {
        ops.push(Op::PutCidr(k, v));
    }
    if ops.len() > before {
        ops.push(Op::BumpCidrsEpoch);
    }
    let mut peers: Vec<PeerKey> = new.peers.difference(&old.peers).copied().collect();
    peers.sort_by_key(peer_order);
    ops.extend(peers.into_iter().map(Op::PutPeer));
    for (k, v) in changed(&old.exact, &new.exact) {
        ops.push(Op::PutExact(k, v));
    }
    for (k, v) in changed(&old.policy, &new.policy) {
        ops.push(Op::PutRule(k, v));
    }
    for (k, v) in changed(&old.endpoints, &new.endpoints) {
        ops.push(Op::PutEndpoint(k, v));
    }
    ops.extend(gone(&old.endpoints, &new.endpoints).map(Op::DelEndpoint));
    ops.extend(gone(&old.exact, &new.exact).map(Op::DelExact));
    ops.extend(gone(&old.policy, &new.policy).map(Op::DelRule));
    let mut peers: Vec<PeerKey> = old.peers.difference(&new.peers).copied().collect();
    peers.sort_by_key(peer_order);
    ops.extend(peers.into_iter().map(Op::DelPeer));
    let before = ops.len();
    ops.extend(gone(&old.cidrs, &new.cidrs).map(Op::DelCidr));
    if ops.len() > before {
        ops.push(Op::BumpCidrsEpoch);
    }
    ops.extend(gone(&old.identities, &new.identities).map(Op::DelIdentity));
    ops
}

/// Which endpoints' denied flows a plan could turn into allowed ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejudge {
    /// None: the plan only removes allowances (or changes nothing).
    Nothing,
    /// These endpoints, by host veth ifindex.
    Endpoints(HashSet<u32>),
    /// Every endpoint: the plan changes what peer addresses resolve to.
    All,
}

impl Rejudge {
    /// Whether the endpoint behind `ifindex` is concerned.
    #[must_use]
    pub fn covers(&self, ifindex: u32) -> bool {
        match self {
            Self::Nothing => false,
            Self::Endpoints(set) => set.contains(&ifindex),
            Self::All => true,
        }
    }
}

/// The endpoints whose AUDIT and DROPPED flows must be judged again after
/// `ops` took the maps from `old` to `new`: an endpoint entry that is new,
/// gone, or changed its identity or mode (audit to enforce included: the
/// flows audit let through are judged, and dropped, under enforce), lost
/// an isolation or gained rules in a direction; a new rule for its
/// identity; or, for every endpoint, any change of IDENTITIES or CIDRS (a
/// peer may resolve to another identity). Deleted rules, PEERS changes and
/// a new isolation allow nothing new.
#[must_use]
pub fn rejudge(ops: &[Op], old: &Entries, new: &Entries) -> Rejudge {
    let mut ifindexes = HashSet::new();
    let mut identities = HashSet::new();
    for op in ops {
        match *op {
            Op::PutIdentity(..)
            | Op::DelIdentity(_)
            | Op::PutCidr(..)
            | Op::DelCidr(_)
            | Op::BumpCidrsEpoch => return Rejudge::All,
            Op::PutEndpoint(ifindex, now) => {
                if old
                    .endpoints
                    .get(&ifindex)
                    .is_none_or(|was| loosens(was, &now))
                {
                    ifindexes.insert(ifindex);
                }
            }
            Op::DelEndpoint(ifindex) => {
                ifindexes.insert(ifindex);
            }
            Op::PutExact(key, _) => {
                identities.insert(key.endpoint);
            }
            Op::PutRule((_, key), _) => {
                identities.insert(key.endpoint);
            }
            Op::DelExact(_) | Op::DelRule(_) | Op::PutPeer(_) | Op::DelPeer(_) => {}
        }
    }
    for endpoints in [&old.endpoints, &new.endpoints] {
        ifindexes.extend(
            endpoints
                .iter()
                .filter(|(_, ep)| identities.contains(&ep.identity))
                .map(|(ifindex, _)| *ifindex),
        );
    }
    if ifindexes.is_empty() {
        Rejudge::Nothing
    } else {
        Rejudge::Endpoints(ifindexes)
    }
}

/// Whether an endpoint entry going from `was` to `now` may allow a flow
/// `was` denied.
fn loosens(was: &EndpointInfo, now: &EndpointInfo) -> bool {
    const ISOLATED: u8 = abi::EP_ISOLATED_INGRESS | abi::EP_ISOLATED_EGRESS;
    const RULES: u8 = abi::EP_RULES_INGRESS | abi::EP_RULES_EGRESS;
    was.identity != now.identity
        || was.mode != now.mode
        || was.flags & ISOLATED & !now.flags != 0
        || now.flags & RULES & !was.flags != 0
}

fn peer_order(p: &PeerKey) -> (u32, u8, u32) {
    (p.endpoint, p.direction, p.peer)
}

/// A sort key for ABI structs (they are not `Ord`): their Debug form is
/// deterministic and only used to order a plan.
fn order<K: std::fmt::Debug>(k: &K) -> String {
    format!("{k:?}")
}

fn changed<K, V>(old: &HashMap<K, V>, new: &HashMap<K, V>) -> Vec<(K, V)>
where
    K: Copy + Eq + Hash + std::fmt::Debug,
    V: Copy + PartialEq,
{
    let mut out: Vec<(K, V)> = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, v)| (*k, *v))
        .collect();
    out.sort_by_cached_key(|(k, _)| order(k));
    out
}

fn gone<K, V>(old: &HashMap<K, V>, new: &HashMap<K, V>) -> impl Iterator<Item = K>
where
    K: Copy + Eq + Hash + std::fmt::Debug,
{
    let mut out: Vec<K> = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .copied()
        .collect();
    out.sort_by_cached_key(order);
    out.into_iter()
}

/// The enforcement maps, as the enforcer writes them. The kernel's are in
/// [`super::kernel`]; tests use a `HashMap`-backed fake.
pub trait PolicyMapsIo: Send {
    /// Everything the maps hold now (pinned maps of a previous agent).
    ///
    /// # Errors
    /// A map that cannot be read.
    fn read(&self) -> Result<Entries, MapIoError>;
    /// One write.
    ///
    /// # Errors
    /// A write the kernel refused (full map, no memory).
    fn write(&mut self, op: &Op) -> Result<(), MapIoError>;
    /// The capacity of each map, in [`MAPS`] order.
    fn capacity(&self) -> [usize; 6];
    /// Delete the flow-table entries judged AUDIT or DROPPED at the
    /// endpoints `which` covers: the next packet of each flow is judged
    /// again, under the maps as they are now. FORWARDED entries stay.
    /// Returns how many were deleted.
    ///
    /// # Errors
    /// The flow table cannot be read or an entry deleted.
    fn forget_denied(&mut self, which: &Rejudge) -> Result<usize, MapIoError>;
}

/// A map operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("{op} {map}")]
pub struct MapIoError {
    /// `read`, `update` or `delete`.
    pub op: &'static str,
    /// The map.
    pub map: &'static str,
    /// The kernel's answer.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Maps in memory, for tests: records every write.
#[derive(Debug, Default)]
pub struct FakeMaps {
    /// What the maps hold.
    pub entries: Entries,
    /// Every write, in order.
    pub log: Vec<Op>,
    /// Fail the write with this index (0-based), once.
    pub fail_at: Option<usize>,
    /// Capacities.
    pub capacity: Option<[usize; 6]>,
    /// The flow table: (endpoint ifindex, verdict) per flow.
    pub flows: Vec<(u32, u8)>,
}

impl PolicyMapsIo for FakeMaps {
    fn read(&self) -> Result<Entries, MapIoError> {
        Ok(self.entries.clone())
    }

    fn write(&mut self, op: &Op) -> Result<(), MapIoError> {
        if self.fail_at == Some(self.log.len()) {
            self.fail_at = None;
            return Err(MapIoError {
                op: "update",
                map: op.map(),
                source: "injected failure".into(),
            });
        }
        self.log.push(*op);
        self.entries.apply(op);
        Ok(())
    }

    fn capacity(&self) -> [usize; 6] {
        self.capacity.unwrap_or([usize::MAX; 6])
    }

    fn forget_denied(&mut self, which: &Rejudge) -> Result<usize, MapIoError> {
        let before = self.flows.len();
        self.flows.retain(|&(ifindex, verdict)| {
            verdict == abi::VERDICT_FORWARDED || !which.covers(ifindex)
        });
        Ok(before - self.flows.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(identity: u32, mode: u8) -> EndpointInfo {
        EndpointInfo {
            identity,
            mode,
            flags: 3,
            _pad0: 0,
        }
    }

    fn rule(endpoint: u32, peer: u32, port: u16) -> Lpm<PolicyKeyData> {
        (
            abi::POLICY_KEY_FIXED_BITS + 16,
            PolicyKeyData {
                endpoint,
                direction: abi::DIR_INGRESS,
                proto: 6,
                peer,
                port: port.to_be(),
                ..PolicyKeyData::default()
            },
        )
    }

    #[test]
    fn upserts_come_before_endpoints_and_deletes_last() {
        let old = Entries {
            endpoints: HashMap::from([(7, ep(300, abi::MODE_OBSERVE)), (8, ep(301, 2))]),
            identities: HashMap::from([(ip_key("10.0.0.8".parse().unwrap()), 301)]),
            policy: HashMap::from([(rule(301, 300, 80), PolicyValue { rule_id: 1 })]),
            ..Entries::default()
        };
        let new = Entries {
            endpoints: HashMap::from([(7, ep(300, abi::MODE_ENFORCE))]),
            identities: HashMap::from([(ip_key("10.0.0.9".parse().unwrap()), 302)]),
            cidrs: HashMap::from([(cidr_key("203.0.113.0/24".parse().unwrap()), 400)]),
            exact: HashMap::new(),
            policy: HashMap::from([(rule(300, 302, 6379), PolicyValue { rule_id: 2 })]),
            peers: HashSet::from([PeerKey {
                endpoint: 300,
                peer: 302,
                ..PeerKey::default()
            }]),
        };
        let ops = plan(&old, &new);
        let kinds: Vec<&str> = ops
            .iter()
            .map(|op| match op {
                Op::PutIdentity(..) => "put identity",
                Op::PutCidr(..) => "put cidr",
                Op::BumpCidrsEpoch => "bump epoch",
                Op::PutExact(..) => "put exact",
                Op::DelExact(_) => "del exact",
                Op::PutPeer(_) => "put peer",
                Op::PutRule(..) => "put rule",
                Op::PutEndpoint(..) => "put endpoint",
                Op::DelEndpoint(_) => "del endpoint",
                Op::DelRule(_) => "del rule",
                Op::DelPeer(_) => "del peer",
                Op::DelCidr(_) => "del cidr",
                Op::DelIdentity(_) => "del identity",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "put identity",
                "put cidr",
                "bump epoch",
                "put peer",
                "put rule",
                "put endpoint",
                "del endpoint",
                "del rule",
                "del identity"
            ]
        );
        let mut maps = FakeMaps {
            entries: old.clone(),
            ..FakeMaps::default()
        };
        for op in &ops {
            maps.write(op).unwrap();
        }
        assert_eq!(maps.entries, new);
        assert!(plan(&new, &new).is_empty());
    }

    #[test]
    fn only_what_can_allow_more_is_judged_again() {
        let old = Entries {
            endpoints: HashMap::from([(7, ep(300, 2)), (8, ep(301, 2)), (9, ep(302, 2))]),
            policy: HashMap::from([(rule(301, 300, 80), PolicyValue { rule_id: 1 })]),
            ..Entries::default()
        };
        let exact = PolicyExactKey {
            endpoint: 300,
            proto: 6,
            port: 80u16.to_be(),
            peer: 301,
            ..PolicyExactKey::default()
        };
        // A new rule for identity 300 (ifindex 7), a rule of 301 removed.
        let new = Entries {
            exact: HashMap::from([(exact, PolicyValue { rule_id: 2 })]),
            ..old.clone()
        };
        let new = Entries {
            policy: HashMap::new(),
            ..new
        };
        let ops = plan(&old, &new);
        assert_eq!(
            rejudge(&ops, &old, &new),
            Rejudge::Endpoints(HashSet::from([7]))
        );
        // Only removals: nothing.
        let ops = plan(
            &old,
            &Entries {
                policy: HashMap::new(),
                ..old.clone()
            },
        );
        assert_eq!(rejudge(&ops, &old, &new), Rejudge::Nothing);
        // A mode change: that endpoint.
        let moded = Entries {
            endpoints: HashMap::from([(7, ep(300, 2)), (8, ep(301, 1)), (9, ep(302, 2))]),
            ..old.clone()
        };
        assert_eq!(
            rejudge(&plan(&old, &moded), &old, &moded),
            Rejudge::Endpoints(HashSet::from([8]))
        );
        // Peers may resolve differently: everyone.
        let cidr = Entries {
            cidrs: HashMap::from([(cidr_key("10.9.0.0/16".parse().unwrap()), 400)]),
            ..old.clone()
        };
        let ops = plan(&old, &cidr);
        assert!(ops.contains(&Op::BumpCidrsEpoch));
        assert_eq!(rejudge(&ops, &old, &cidr), Rejudge::All);
    }

    #[test]
    fn keys_are_the_kernels() {
        let (len, key) = cidr_key("10.1.0.0/16".parse().unwrap());
        assert_eq!(len, 48);
        assert_eq!(key.family, abi::FAMILY_IPV4);
        assert_eq!(&key.addr[..4], &[10, 1, 0, 0]);
        let key = ip_key("fd00::1".parse().unwrap());
        assert_eq!(key.family, abi::FAMILY_IPV6);
        assert_eq!(key.addr[15], 1);
        let (_, rule) = rule(1, 2, 0x1234);
        assert_eq!(rule.port.to_ne_bytes(), [0x12, 0x34], "network order");
    }
}
