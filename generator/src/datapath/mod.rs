//! The policy compiler: NetworkPolicies, pods, namespaces and modes in,
//! the contents of the enforcement maps out (`ebpf/bpf/abi.h`), plus the
//! diff between two compiles that the agent applies to the kernel.
//!
//! [`compile`] is pure and deterministic. Its semantics are the
//! evaluator's ([`crate::eval`]) by construction (it walks the policies as
//! [`PolicySet::new`] compiled them for the evaluator: one lowering of
//! `policyTypes` defaulting, peer shapes, CIDRs and port forms; namespace
//! selectors match as the evaluator's) and by test
//! (`tests/datapath_compile.rs` compares [`DatapathState::judge`], which
//! simulates the kernel lookups, with [`Evaluator`](crate::eval::Evaluator)
//! on random clusters and policies):
//!
//! - **Identities.** Every distinct (namespace, label set) of the cluster's
//!   pods is one identity: everything a policy selects a pod by or matches
//!   a peer pod by is its namespace (and the namespace's labels) and its
//!   labels, so pods of one identity are indistinguishable to policies —
//!   except for named ports, below. Every distinct `ipBlock` cidr and
//!   except prefix is one identity too. Numbers start at 256 and stay
//!   stable across compiles ([`Identities`]). Reserved: [`ID_ANY`] (in rule
//!   keys: any peer), [`ID_HOST`] (the node's addresses: always allowed, as
//!   the API reference requires for kubelet probes), [`ID_WORLD`] (an
//!   address that is no pod, no node and in no `ipBlock` prefix).
//! - **Peer resolution** (kernel and [`DatapathState::judge`]): the exact
//!   address in IDENTITIES (pods, node), else the longest prefix in CIDRS
//!   (the kernel remembers it per address until CIDRS changes), else WORLD.
//!   `ipBlock` matches pod addresses too, as the evaluator decides: a pod
//!   peer whose rules by pod identity (and any peer) miss is looked up
//!   again by the CIDR identity of its address (the longest CIDRS prefix,
//!   remembered the same way), so a pod's traffic is matched by its
//!   selectors or by the blocks that hold its address, with two sets of
//!   lookups at most whatever the number of rules. "In cidr and not in an
//!   except" is the set of trie prefixes inside cidr and not inside an
//!   except (the longest match of an address in cidr is one of them
//!   exactly when the address is in no except), each allowed one by one.
//! - **Endpoints** (every pod; the agent keeps its node's): identity, the
//!   mode of its namespace ([`Input::modes`], else [`Input::default_mode`]),
//!   and the `EP_*` flags: isolated for a direction if some policy of its
//!   namespace selects it with that (defaulted) policy type; `RULES_*` if
//!   one of those has at least one rule in that direction (isolated
//!   without rules: default deny).
//! - **Rules**, per endpoint identity and direction, for every rule of every
//!   policy selecting it: one POLICY entry per (peer, protocol, port
//!   block). Peers: the identities of the pods the peer selectors match,
//!   the CIDR identities of `ipBlock`s, [`ID_ANY`] for an empty `from`/`to`
//!   (everyone: pods, world and host). Rules of one protocol and one port
//!   ([`RuleKey::is_exact`]) go to the POLICY_EXACT hash, the others to
//!   the POLICY trie. Ports: none → protocol 0, prefix 0
//!   (every protocol, ICMP included); a protocol without port → that
//!   protocol, prefix 0; a number → prefix 16; `port..=endPort` →
//!   [`port_prefixes`]; a name → the `containerPort`s of that name and
//!   protocol of the *destination*: for ingress the endpoint's pods, for
//!   egress the peer's pods (an egress rule with a named port and no `to`
//!   is expanded to every pod identity; to a CIDR identity, a pod's address
//!   included, a named port matches nothing: the evaluator's documented
//!   restriction). **If pods of one identity disagree on a named
//!   port's number, every resolved number is allowed for all of them**:
//!   the datapath cannot tell them apart; a pod template that names ports
//!   differently per replica is the only way to get there.
//! - **Peers**: every (endpoint, direction, peer) some rule names, whatever
//!   its ports ([`ID_ANY`] for an empty `from`/`to`), to tell
//!   `port-not-allowed` from `peer-not-allowed` on the deny path.
//! - When several rules give the same POLICY key, the entry carries the
//!   smallest rule id.

mod diff;
mod identity;
mod judge;
mod ports;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
    str::FromStr,
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use self::{
    diff::{Diff, MapDiff},
    identity::{
        Identities, IdentityKey, SavedIdentities, SavedIdentitiesError, SavedIdentity, SavedRule,
    },
    judge::{Judgement, Reason},
    ports::{block_contains, port_prefixes, prefix_mask},
};
use crate::{
    cluster::{Cluster, ClusterPod},
    eval::{Direction, Peer, PolicyRef, PolicySet, PortMatch, Rule, RuleRef},
};

/// `WEIR_ID_ANY`: in rule and peer keys, any peer.
pub const ID_ANY: u32 = 0;
/// `WEIR_ID_HOST`: the node's own addresses; always allowed.
pub const ID_HOST: u32 = 1;
/// `WEIR_ID_WORLD`: an address no pod, node or CIDR entry matches.
pub const ID_WORLD: u32 = 2;
/// `WEIR_ID_FIRST`: the first allocated identity.
pub const ID_FIRST: u32 = 256;
/// The first rule id (0 is never a rule).
pub const RULE_FIRST: u32 = 1;

/// `WEIR_EP_ISOLATED_INGRESS`.
pub const EP_ISOLATED_INGRESS: u8 = 0x01;
/// `WEIR_EP_ISOLATED_EGRESS`.
pub const EP_ISOLATED_EGRESS: u8 = 0x02;
/// `WEIR_EP_RULES_INGRESS`.
pub const EP_RULES_INGRESS: u8 = 0x04;
/// `WEIR_EP_RULES_EGRESS`.
pub const EP_RULES_EGRESS: u8 = 0x08;

/// `WEIR_DIR_*` of a direction.
#[must_use]
pub const fn direction_code(direction: Direction) -> u8 {
    match direction {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

/// The `EP_ISOLATED_*` bit of a direction.
#[must_use]
pub const fn isolated_flag(direction: Direction) -> u8 {
    match direction {
        Direction::Ingress => EP_ISOLATED_INGRESS,
        Direction::Egress => EP_ISOLATED_EGRESS,
    }
}

/// The `EP_RULES_*` bit of a direction.
#[must_use]
pub const fn rules_flag(direction: Direction) -> u8 {
    match direction {
        Direction::Ingress => EP_RULES_INGRESS,
        Direction::Egress => EP_RULES_EGRESS,
    }
}

/// Enforcement mode of a namespace.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Learn only: nothing is judged, nothing dropped.
    #[default]
    Observe,
    /// Judge, report would-drop verdicts, drop nothing.
    Audit,
    /// Judge and drop.
    Enforce,
}

impl Mode {
    /// `observe`, `audit` or `enforce`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Observe => "observe",
            Self::Audit => "audit",
            Self::Enforce => "enforce",
        }
    }

    /// `WEIR_MODE_*`.
    #[must_use]
    pub const fn code(self) -> u8 {
        match self {
            Self::Observe => 0,
            Self::Audit => 1,
            Self::Enforce => 2,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A mode name that weir does not know.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown mode {0:?} (expected observe, audit or enforce)")]
pub struct UnknownMode(pub String);

impl FromStr for Mode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "observe" => Ok(Self::Observe),
            "audit" => Ok(Self::Audit),
            "enforce" => Ok(Self::Enforce),
            _ => Err(UnknownMode(s.to_owned())),
        }
    }
}

/// What [`compile`] reads.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// The policies.
    pub policies: &'a PolicySet,
    /// Namespaces (labels), pods (labels, IPs, container ports).
    pub cluster: &'a Cluster,
    /// Namespace -> mode; a namespace not listed has `default_mode`.
    pub modes: &'a BTreeMap<String, Mode>,
    /// The mode of namespaces not in `modes`.
    pub default_mode: Mode,
    /// The node's addresses: they resolve to [`ID_HOST`] (before pods:
    /// host-network pods share them and are the host to the datapath).
    pub node_ips: &'a [IpAddr],
}

/// A pod, by namespace and name (`ns/name`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl PodKey {
    /// A pod key.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of a cluster pod.
    #[must_use]
    pub fn of(pod: &ClusterPod) -> Self {
        Self::new(&pod.meta.namespace, &pod.meta.name)
    }
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// ENDPOINTS value (`struct endpoint_info`), before the agent keys it by
/// the pod's host-side veth.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointState {
    /// The pod's identity.
    pub identity: u32,
    /// Its namespace's mode.
    pub mode: Mode,
    /// `EP_*` bits.
    pub flags: u8,
}

/// POLICY key (`struct policy_key`). `port` is in host order here with its
/// low `16 - port_prefix` bits zero; the kernel key holds it in network
/// order and `prefixlen = 96 + port_prefix`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleKey {
    /// Endpoint identity.
    pub endpoint: u32,
    /// Direction, from the endpoint.
    pub direction: Direction,
    /// `IPPROTO_*`, 0 = any protocol.
    pub protocol: u8,
    /// Peer identity, [`ID_ANY`] = any peer.
    pub peer: u32,
    /// Port block value.
    pub port: u16,
    /// Port prefix length, 0 (any port) ..= 16 (one port).
    pub port_prefix: u8,
}

impl RuleKey {
    /// Whether the kernel holds it in POLICY_EXACT (one protocol, one
    /// port: a hash lookup) rather than the POLICY trie (port ranges, any
    /// port, any protocol). Exact-port rules are the common case, and a
    /// hash lookup costs the same at 10 rules or 10,000, where a trie walk
    /// grows with the trie.
    #[must_use]
    pub const fn is_exact(&self) -> bool {
        self.protocol != 0 && self.port_prefix == 16
    }
}

/// PEERS key (`struct peer_key`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerKey {
    /// Endpoint identity.
    pub endpoint: u32,
    /// Direction, from the endpoint.
    pub direction: Direction,
    /// Peer identity, [`ID_ANY`] = every peer.
    pub peer: u32,
}

/// Everything the enforcement maps hold, and what the agent needs to
/// explain their verdicts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatapathState {
    /// ENDPOINTS: every pod of the cluster.
    pub endpoints: BTreeMap<PodKey, EndpointState>,
    /// IDENTITIES: pod addresses -> pod identity, node addresses -> [`ID_HOST`].
    pub ips: BTreeMap<IpAddr, u32>,
    /// CIDRS: every distinct `ipBlock` cidr and except -> its identity.
    pub cidrs: BTreeMap<IpNet, u32>,
    /// POLICY_EXACT and POLICY: allow rules -> rule id. The kernel splits
    /// them by [`RuleKey::is_exact`].
    pub rules: BTreeMap<RuleKey, u32>,
    /// PEERS.
    pub peers: BTreeSet<PeerKey>,
    /// Rule id -> its origin, for every rule of every policy (ids are kept
    /// by [`Identities`], so they are sparse, not indices).
    pub rule_table: BTreeMap<u32, RuleRef>,
    /// (endpoint identity, direction) -> the policies that isolate it
    /// (sorted), present iff the endpoint is isolated for the direction:
    /// the "isolated by" of a drop.
    pub isolation: BTreeMap<(u32, Direction), Vec<PolicyRef>>,
}

/// Capacity of each kernel map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// ENDPOINTS.
    pub endpoints: usize,
    /// IDENTITIES.
    pub ips: usize,
    /// CIDRS.
    pub cidrs: usize,
    /// POLICY_EXACT (rules of one protocol and port).
    pub exact_rules: usize,
    /// POLICY (the other rules).
    pub rules: usize,
    /// PEERS.
    pub peers: usize,
}

impl Limits {
    /// The `max_entries` of `ebpf/bpf/flow.bpf.c` (ENDPOINTS is per node:
    /// check a state whose endpoints the agent filtered to its node's).
    pub const KERNEL: Self = Self {
        endpoints: 4096,
        ips: 65536,
        cidrs: 16384,
        exact_rules: 262_144,
        rules: 262_144,
        peers: 65536,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::KERNEL
    }
}

/// Why a compile or a state is refused.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// A kernel map would overflow.
    #[error("map {map} needs {needed} entries, its limit is {limit}")]
    MapFull {
        /// The kernel map: ENDPOINTS, IDENTITIES, CIDRS, POLICY_EXACT,
        /// POLICY or PEERS.
        map: &'static str,
        /// Entries the state has.
        needed: usize,
        /// The map's capacity.
        limit: usize,
    },
    /// The allocator ran out of numbers.
    #[error("no free {what} left")]
    Exhausted {
        /// `identities` or `rule ids`.
        what: &'static str,
    },
}

impl DatapathState {
    /// Whether every map fits its limit.
    ///
    /// # Errors
    ///
    /// [`CompileError::MapFull`] for the first map (in ENDPOINTS,
    /// IDENTITIES, CIDRS, POLICY_EXACT, POLICY, PEERS order) over its limit.
    pub fn check(&self, limits: &Limits) -> Result<(), CompileError> {
        let exact = self.exact_rule_count();
        for (map, needed, limit) in [
            ("ENDPOINTS", self.endpoints.len(), limits.endpoints),
            ("IDENTITIES", self.ips.len(), limits.ips),
            ("CIDRS", self.cidrs.len(), limits.cidrs),
            ("POLICY_EXACT", exact, limits.exact_rules),
            ("POLICY", self.rules.len() - exact, limits.rules),
            ("PEERS", self.peers.len(), limits.peers),
        ] {
            if needed > limit {
                return Err(CompileError::MapFull { map, needed, limit });
            }
        }
        Ok(())
    }

    /// How many of [`Self::rules`] go to POLICY_EXACT.
    #[must_use]
    pub fn exact_rule_count(&self) -> usize {
        self.rules.keys().filter(|k| k.is_exact()).count()
    }
}

/// A pod identity with its members.
struct PodIdentity<'a> {
    id: u32,
    namespace: &'a str,
    labels: &'a BTreeMap<String, String>,
    pods: Vec<&'a ClusterPod>,
}

/// Protocol, port value, prefix length.
type PortBlock = (u8, u16, u8);

/// Compile `input` into the maps' contents, numbering identities and rules
/// with `identities` (updated only on success).
///
/// # Errors
///
/// [`CompileError::Exhausted`] when the allocator has no number left.
/// Map capacities are checked apart: [`DatapathState::check`].
pub fn compile(
    input: &Input<'_>,
    identities: &mut Identities,
) -> Result<DatapathState, CompileError> {
    let policies = input.policies.compiled();
    let cluster = input.cluster;

    // Identity keys: pods by (namespace, labels), every ipBlock prefix.
    let mut groups: BTreeMap<(&str, &BTreeMap<String, String>), Vec<&ClusterPod>> = BTreeMap::new();
    for pod in &cluster.pods {
        groups
            .entry((pod.meta.namespace.as_str(), &pod.meta.labels))
            .or_default()
            .push(pod);
    }
    let mut prefixes = BTreeSet::new();
    let mut origins = BTreeSet::new();
    for policy in policies {
        for direction in [Direction::Ingress, Direction::Egress] {
            for (index, rule) in policy
                .rules(direction)
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                origins.insert(RuleRef {
                    policy: policy.id.clone(),
                    direction,
                    index,
                });
                for peer in rule.peers.iter().flatten() {
                    if let Peer::IpBlock { cidr, except } = peer {
                        prefixes.insert(*cidr);
                        prefixes.extend(except.iter().copied());
                    }
                }
            }
        }
    }
    let mut keys: BTreeSet<IdentityKey> = groups
        .keys()
        .map(|(namespace, labels)| IdentityKey::Pod {
            namespace: (*namespace).to_owned(),
            labels: (*labels).clone(),
        })
        .collect();
    keys.extend(prefixes.iter().copied().map(IdentityKey::Cidr));
    let mut allocator = identities.clone();
    allocator.assign_identities(keys)?;
    allocator.assign_rules(origins)?;
    let rule_ids = allocator.rule_ids();

    let number = |key: &IdentityKey| {
        allocator
            .identity(key)
            .expect("every key was just assigned")
    };
    let idents: Vec<PodIdentity<'_>> = groups
        .into_iter()
        .map(|((namespace, labels), pods)| PodIdentity {
            id: number(&IdentityKey::Pod {
                namespace: namespace.to_owned(),
                labels: labels.clone(),
            }),
            namespace,
            labels,
            pods,
        })
        .collect();
    let cidrs: BTreeMap<IpNet, u32> = prefixes
        .iter()
        .map(|&p| (p, number(&IdentityKey::Cidr(p))))
        .collect();
    let mut by_namespace: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, ident) in idents.iter().enumerate() {
        by_namespace.entry(ident.namespace).or_default().push(i);
    }

    let mut state = DatapathState {
        cidrs,
        rule_table: rule_ids.iter().map(|(o, &id)| (id, o.clone())).collect(),
        ..DatapathState::default()
    };
    let mut flags = vec![0u8; idents.len()];

    for policy in policies {
        let selected: Vec<usize> = by_namespace
            .get(policy.id.namespace.as_str())
            .into_iter()
            .flatten()
            .copied()
            .filter(|&i| policy.pod_selector.matches(idents[i].labels))
            .collect();
        if selected.is_empty() {
            continue;
        }
        for direction in [Direction::Ingress, Direction::Egress] {
            let Some(rules) = policy.rules(direction) else {
                continue;
            };
            for &e in &selected {
                flags[e] |= isolated_flag(direction);
                if !rules.is_empty() {
                    flags[e] |= rules_flag(direction);
                }
                state
                    .isolation
                    .entry((idents[e].id, direction))
                    .or_default()
                    .push(policy.id.clone());
            }
            for (index, rule) in rules.iter().enumerate() {
                let origin = RuleRef {
                    policy: policy.id.clone(),
                    direction,
                    index,
                };
                let rule_id = rule_ids[&origin];
                let ctx = RuleContext {
                    idents: &idents,
                    by_namespace: &by_namespace,
                    cluster,
                    cidrs: &state.cidrs,
                    policy_namespace: &policy.id.namespace,
                    direction,
                };
                let peers = ctx.peers(rule);
                let emit = Emit {
                    ctx: &ctx,
                    rule,
                    peers: &peers,
                    rule_id,
                    fixed: fixed_blocks(rule),
                };
                for &e in &selected {
                    emit.endpoint(e, &mut state.rules, &mut state.peers);
                }
            }
        }
    }

    for (i, ident) in idents.iter().enumerate() {
        for pod in &ident.pods {
            let mode = input
                .modes
                .get(&pod.meta.namespace)
                .copied()
                .unwrap_or(input.default_mode);
            state
                .endpoints
                .entry(PodKey::of(pod))
                .or_insert(EndpointState {
                    identity: ident.id,
                    mode,
                    flags: flags[i],
                });
        }
    }
    for &ip in input.node_ips {
        state.ips.insert(ip, ID_HOST);
    }
    // In cluster order, so that an address two pods claim resolves as
    // `Cluster::pod_by_ip` does: to the first.
    let id_of: BTreeMap<(&str, &BTreeMap<String, String>), u32> = idents
        .iter()
        .map(|i| ((i.namespace, i.labels), i.id))
        .collect();
    for pod in &cluster.pods {
        let id = id_of[&(pod.meta.namespace.as_str(), &pod.meta.labels)];
        for &ip in &pod.meta.ips {
            state.ips.entry(ip).or_insert(id);
        }
    }

    *identities = allocator;
    Ok(state)
}

/// What the peers of one rule resolve to.
enum Peers {
    /// `from`/`to` empty: every peer.
    Any,
    /// These identities: (identity, index of the pod identity, if a pod).
    Some(Vec<(u32, Option<usize>)>),
}

struct RuleContext<'c, 'a> {
    idents: &'c [PodIdentity<'a>],
    by_namespace: &'c BTreeMap<&'a str, Vec<usize>>,
    cluster: &'a Cluster,
    cidrs: &'c BTreeMap<IpNet, u32>,
    policy_namespace: &'c str,
    direction: Direction,
}

impl RuleContext<'_, '_> {
    fn peers(&self, rule: &Rule) -> Peers {
        let Some(peers) = &rule.peers else {
            return Peers::Any;
        };
        let mut pods = BTreeSet::new();
        let mut cidrs = BTreeSet::new();
        for peer in peers {
            match peer {
                Peer::Pods {
                    namespaces,
                    pods: selector,
                } => {
                    for (&ns, members) in self.by_namespace {
                        if namespaces.matches(ns, self.policy_namespace, &self.cluster.namespaces) {
                            pods.extend(
                                members
                                    .iter()
                                    .copied()
                                    .filter(|&i| selector.matches(self.idents[i].labels)),
                            );
                        }
                    }
                }
                Peer::IpBlock { cidr, except } => {
                    cidrs.extend(
                        prefixes_within(self.cidrs, *cidr)
                            .filter(|(p, _)| !except.iter().any(|e| e.contains(p)))
                            .map(|(_, id)| id),
                    );
                }
            }
        }
        let mut list: Vec<(u32, Option<usize>)> = pods
            .into_iter()
            .map(|i| (self.idents[i].id, Some(i)))
            .collect();
        list.extend(cidrs.into_iter().map(|id| (id, None)));
        Peers::Some(list)
    }
}

/// The trie prefixes inside `cidr` (`cidr` included), with their identities.
fn prefixes_within(
    cidrs: &BTreeMap<IpNet, u32>,
    cidr: IpNet,
) -> impl Iterator<Item = (IpNet, u32)> + '_ {
    // Ordered by (address, prefix length): every prefix inside `cidr` has
    // its address in cidr's range and a prefix at least cidr's.
    let low = cidr;
    let high = IpNet::new(cidr.broadcast(), cidr.max_prefix_len()).expect("a host prefix");
    cidrs
        .range(low..=high)
        .filter(move |(p, _)| cidr.contains(*p))
        .map(|(&p, &id)| (p, id))
}

/// The port blocks of a rule that do not depend on the destination pod.
fn fixed_blocks(rule: &Rule) -> Vec<PortBlock> {
    let Some(ports) = &rule.ports else {
        return vec![(0, 0, 0)];
    };
    let mut blocks = Vec::new();
    for port in ports {
        let proto = port.protocol.number();
        match port.port {
            PortMatch::Any => blocks.push((proto, 0, 0)),
            PortMatch::Range(lo, hi) => blocks.extend(
                port_prefixes(lo, hi)
                    .into_iter()
                    .map(|(value, len)| (proto, value, len)),
            ),
            PortMatch::Named(_) => {}
        }
    }
    blocks
}

/// The named ports of a rule resolved against the pods of an identity.
fn named_blocks(rule: &Rule, ident: &PodIdentity<'_>) -> BTreeSet<PortBlock> {
    let mut blocks = BTreeSet::new();
    for port in rule.ports.iter().flatten() {
        let PortMatch::Named(name) = &port.port else {
            continue;
        };
        for pod in &ident.pods {
            for cp in &pod.ports {
                if cp.protocol == port.protocol && cp.name.as_deref() == Some(name.as_str()) {
                    blocks.insert((port.protocol.number(), cp.port, 16));
                }
            }
        }
    }
    blocks
}

fn has_named(rule: &Rule) -> bool {
    rule.ports
        .iter()
        .flatten()
        .any(|p| matches!(p.port, PortMatch::Named(_)))
}

/// Emits one rule's entries for each endpoint identity it applies to.
struct Emit<'e, 'c, 'a> {
    ctx: &'e RuleContext<'c, 'a>,
    rule: &'e Rule,
    peers: &'e Peers,
    rule_id: u32,
    fixed: Vec<PortBlock>,
}

impl Emit<'_, '_, '_> {
    fn endpoint(
        &self,
        e: usize,
        rules: &mut BTreeMap<RuleKey, u32>,
        peer_set: &mut BTreeSet<PeerKey>,
    ) {
        let ctx = self.ctx;
        let endpoint = ctx.idents[e].id;
        let direction = ctx.direction;
        let mut put = |peer: u32, (protocol, port, port_prefix): PortBlock| {
            let key = RuleKey {
                endpoint,
                direction,
                protocol,
                peer,
                port,
                port_prefix,
            };
            rules
                .entry(key)
                .and_modify(|id| *id = (*id).min(self.rule_id))
                .or_insert(self.rule_id);
        };
        let named = has_named(self.rule);
        // Ingress: the destination is the endpoint itself.
        let own_named = if named && direction == Direction::Ingress {
            named_blocks(self.rule, &ctx.idents[e])
        } else {
            BTreeSet::new()
        };
        match self.peers {
            Peers::Any => {
                peer_set.insert(PeerKey {
                    endpoint,
                    direction,
                    peer: ID_ANY,
                });
                for &b in self.fixed.iter().chain(&own_named) {
                    put(ID_ANY, b);
                }
                if named && direction == Direction::Egress {
                    // Any destination: each pod identity on its own ports;
                    // nothing outside the cluster.
                    for ident in ctx.idents {
                        for b in named_blocks(self.rule, ident) {
                            put(ident.id, b);
                        }
                    }
                }
            }
            Peers::Some(list) => {
                for &(peer, pod) in list {
                    peer_set.insert(PeerKey {
                        endpoint,
                        direction,
                        peer,
                    });
                    for &b in self.fixed.iter().chain(&own_named) {
                        put(peer, b);
                    }
                    // Egress: the destination is the peer (a pod, or
                    // nothing for a named port).
                    if named
                        && direction == Direction::Egress
                        && let Some(p) = pod
                    {
                        for b in named_blocks(self.rule, &ctx.idents[p]) {
                            put(peer, b);
                        }
                    }
                }
            }
        }
    }
}
