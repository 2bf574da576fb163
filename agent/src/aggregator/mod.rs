//! The aggregator: a synchronous fold of [`Observation`]s into the
//! workload-level [`FlowGraph`], plus a ring of recent flow records.
//!
//! It does no I/O. The daemon feeds it from a bounded channel; the API reads
//! snapshots. Rules:
//!
//! - The observation's endpoint is the pod behind its veth
//!   ([`Resolve::pod_by_ifindex`], else [`Resolve::pod_by_ip`] of the local
//!   address). An unknown endpoint is counted (`weir_unresolved_total
//!   {side="endpoint"}`) and makes no edge.
//! - The peer is the pod holding the remote address, else the address
//!   itself as an external node.
//! - Edges go initiator -> responder, keyed by (source, target, protocol,
//!   destination port); the source port never is, so replies never make
//!   edges. Packets and bytes of both directions count on the edge.
//! - An unknown initiator makes no edge: it is counted
//!   (`weir_initiator_unknown_total`), not guessed (Hubble keeps "unknown"
//!   as its own state too). Its flow records still reach `/api/flows`.
//! - Two pods attached on this node: both veths report the connection. Only
//!   the initiator's report counts packets and bytes; the responder's
//!   report (initiator remote, and the remote address is an attached pod)
//!   brings its verdict. Flow records keep both reports, as Hubble shows
//!   both observation points.
//! - A flow the datapath dropped (enforce mode) makes no edge of the learned
//!   graph: it was seen, not allowed, and the learned graph is what the
//!   cluster lets through (forwarded and audited traffic). Drops are kept
//!   apart, under the same edge keys ([`Aggregator::view`]), for the UI to
//!   draw; they are in the flow records too and counted by
//!   `weir_policy_verdicts_total{verdict="DROPPED"}`.
//! - A connection is learned only if it was allowed at both ends. Between
//!   two attached pods each end judges its own side (egress at the
//!   initiator's veth, ingress at the responder's), so the two reports of
//!   one connection meet under its `ConnKey` (protocol and both ends'
//!   addresses): the initiator's counters are held until the responder's
//!   report says it let the connection in (or until the initiator's flow
//!   ends without one), and go to the drops when either end dropped it,
//!   whichever report comes first. A drop seen later (its event was rate
//!   limited, so a sweep brings it) moves the connection's counters out of
//!   the learned edge, which goes away if nothing else made it.
//! - Every edge counts its connections by verdict (a flow's first report
//!   counts), at both ends: a connection its source's egress let out and
//!   its target's ingress denied counts once as forwarded and once as
//!   audit or dropped.
//!
//! - Every edge keeps its counters by the side this node saw it from
//!   ([`SeenFrom`]) and the peer's node when the resolver knows it, for a
//!   relay merging several nodes' graphs ([`Aggregator::contribution`]): a
//!   connection between pods on two nodes is counted by both, once from
//!   each side, and the relay must take one side, never their sum. The
//!   edge's counters are the sum of its sides, taken at snapshot time, so
//!   the two always agree.
//!
//! - An external peer's DNS names (the names the endpoint pod's DNS answers
//!   gave its address before the flow began, [`Options::names`]) go on the
//!   flow record and into the graph's [`FlowGraph::external_names`], with
//!   the endpoint's workload and the flow's first and last packet. They
//!   are looked up at a flow's first and last report only.
//!
//! The hot path (a counter update on an existing edge) allocates nothing:
//! workloads are interned to `u32` ids on first sight, edge keys are small
//! `Copy` values hashed with foldhash, and flow records are only built for
//! a flow's first and last report.

mod record;

use std::{
    collections::{BTreeMap, HashMap, hash_map},
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
};

use dashmap::DashMap;
use tokio::sync::broadcast;
use weir_generator::model::{
    EdgeKey, EdgeStats, ExternalNames, FlowGraph, NameSeen, NodeId, PodMeta, Protocol, WorkloadRef,
    merge_names,
};

use self::record::Ring;
pub use self::record::{DnsAnswer, FlowRecord, SharedRecord};
use crate::{
    flow::{EntryCounters, EntryKey, Initiator, Observation, Verdict},
    metrics::{Metrics, Side},
    resolve::Resolve,
};

type Hasher = foldhash::fast::RandomState;

/// Sizes of the aggregator's buffers.
#[derive(Clone, Debug)]
pub struct Options {
    /// Name of this node, stamped on flow records.
    pub node_name: String,
    /// How many recent flow records `/api/flows` can return (0 turns flow
    /// records off, for followers too).
    pub ring_capacity: usize,
    /// How many records a follower may fall behind before it is told it
    /// lost some.
    pub follow_capacity: usize,
    /// The DNS names pods' peers had, for flow records (none: records
    /// carry no names).
    pub names: Option<Arc<crate::dns::Names>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            node_name: String::new(),
            ring_capacity: 10_000,
            follow_capacity: 4_096,
            names: None,
        }
    }
}

/// What [`Aggregator::fold`] did with an observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Folded {
    /// Counted on an edge.
    Edge,
    /// Counted on an edge that did not exist before.
    NewEdge,
    /// Skipped: the responder's report of a connection between two
    /// attached pods (the initiator's report counts).
    Duplicate,
    /// Skipped: nobody knows who opened the flow.
    UnknownInitiator,
    /// Skipped: the pod behind the veth is unknown.
    UnresolvedEndpoint,
    /// Skipped: the datapath dropped the flow (enforce mode), at this end
    /// or at the other.
    Dropped,
    /// Held: a connection between two attached pods whose responder has not
    /// reported yet.
    Held,
}

/// The aggregator; share it as `Arc<Aggregator>`.
#[derive(Debug)]
pub struct Aggregator {
    node_name: Arc<str>,
    metrics: Arc<Metrics>,
    /// Folds hold it shared, snapshots exclusively: a snapshot never shows
    /// half an observation (an edge without its workloads' pods).
    gate: RwLock<()>,
    workloads: DashMap<WorkloadRef, WorkloadSlot, Hasher>,
    next_workload: AtomicU32,
    /// Pods already recorded, by the address of the resolver's `Arc`: the
    /// hot path then hashes one word instead of a `WorkloadRef`'s strings.
    /// Entries hold their `Arc`, so an address cannot be reused for another
    /// pod while it is cached; see [`Aggregator::intern`] for the bound.
    seen_pods: DashMap<usize, SeenPod, Hasher>,
    pods_recorded: AtomicUsize,
    /// The learned edges, by side: see [`SeenFrom`].
    edges: DashMap<EdgeSlot, EdgeEntry, Hasher>,
    /// Connections the datapath dropped, by the edge they would have made.
    drops: DashMap<EdgeSlot, EdgeEntry, Hasher>,
    /// Node names interned to ids (this node's is [`THIS_NODE`]), so a
    /// side key stays `Copy`.
    node_ids: DashMap<Arc<str>, u32, Hasher>,
    node_names: RwLock<Vec<Arc<str>>>,
    /// Connections between two attached pods, until both ends are done.
    conns: Mutex<Conns>,
    /// What was folded of each live kernel flow table entry, saved with the
    /// graph (under the same gate) so that a restarted agent resumes from
    /// exactly there: see [`Aggregator::for_store`].
    entries: Mutex<HashMap<EntryKey, EntryCounters, Hasher>>,
    /// Bumped by every change to the graph: the store saves only when it
    /// moved.
    changes: AtomicU64,
    ring: Ring,
    /// DNS names of pods' peers (see [`Options::names`]).
    names: Option<Arc<crate::dns::Names>>,
    /// The names flows carried for external addresses
    /// ([`FlowGraph::external_names`]); written at flows' first and last
    /// reports under the gate, read with it held exclusively.
    external_names: Mutex<ExternalNames>,
}

/// An interned workload and the pods seen of it.
#[derive(Debug)]
struct WorkloadSlot {
    id: u32,
    /// By pod name: a workload may have many pods (a DaemonSet).
    pods: BTreeMap<String, Arc<PodMeta>>,
}

#[derive(Debug)]
struct SeenPod {
    /// Keeps the address this entry is keyed by alive.
    _pod: Arc<PodMeta>,
    workload: u32,
    /// The node the resolver gave for the pod at this address when it was
    /// first seen ([`Resolve::node_of`], interned): a pod never moves, so
    /// the hot path need not hash its node's name again.
    node: (IpAddr, u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum NodeSlot {
    Workload(WorkloadId),
    External(IpAddr),
}

/// An interned workload's `u32` id as two `u16`s: the edge key then aligns
/// to 2 and packs into 40 bytes (44 with a `u32`), which keeps a map entry
/// (key and [`EdgeEntry`]) at 112 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct WorkloadId([u16; 2]);

impl WorkloadId {
    fn new(id: u32) -> Self {
        let [a, b, c, d] = id.to_le_bytes();
        Self([u16::from_le_bytes([a, b]), u16::from_le_bytes([c, d])])
    }

    fn get(self) -> u32 {
        let ([a, b], [c, d]) = (self.0[0].to_le_bytes(), self.0[1].to_le_bytes());
        u32::from_le_bytes([a, b, c, d])
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct EdgeSlot {
    source: NodeSlot,
    target: NodeSlot,
    protocol: Protocol,
    port: u16,
}

/// Which end(s) of a connection this node saw: a relay merging several
/// nodes' graphs keys an edge's counters by (edge, initiator's node,
/// responder's node) and takes one side of a connection seen from both.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum SeenFrom {
    /// This node hosts the initiator (its egress); the responder is
    /// elsewhere: on another node, or not a pod.
    Initiator,
    /// This node hosts the responder (its ingress); the initiator is
    /// elsewhere.
    Responder,
    /// Both ends are on this node: one count, both verdicts.
    Both,
    /// Restored from a store saved before sides were kept.
    Unknown,
}

/// An edge's counters from one side, with the peer's node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeSide {
    /// Which end this node saw.
    pub seen_from: SeenFrom,
    /// The other end's node: this node for [`SeenFrom::Both`]; `None` when
    /// the source does not know it, the peer is not a pod, or the side is
    /// [`SeenFrom::Unknown`].
    pub peer_node: Option<Arc<str>>,
    /// What this side counted.
    pub stats: EdgeStats,
}

/// Edges' counters by side, as [`Aggregator::contribution`] gives them
/// and the store keeps them.
pub type Sides = BTreeMap<EdgeKey, Vec<EdgeSide>>;

/// The id of this node's name.
const THIS_NODE: u32 = 0;
/// No node: the peer's node is not known.
const NO_NODE: u32 = u32::MAX;

/// What one side of an edge counted.
#[derive(Clone, Copy, Debug)]
struct SideStats {
    stats: EdgeStats,
    /// An interned node name, or [`NO_NODE`].
    peer_node: u32,
    seen: SeenFrom,
}

/// An edge's counters by side; the edge's own are their sum. Most edges
/// have one side (more when the peer workload's pods run on several nodes),
/// kept inline: an edge then costs what its counters do, and a fold is one
/// map lookup.
#[derive(Clone, Debug)]
enum EdgeEntry {
    One(SideStats),
    Many(Vec<SideStats>),
}

impl EdgeEntry {
    fn new((seen, peer_node): (SeenFrom, u32)) -> Self {
        Self::One(SideStats {
            stats: EdgeStats::default(),
            peer_node,
            seen,
        })
    }

    fn sides(&self) -> &[SideStats] {
        match self {
            Self::One(side) => std::slice::from_ref(side),
            Self::Many(sides) => sides,
        }
    }

    /// The edge's counters: the sum of its sides.
    fn total(&self) -> EdgeStats {
        let mut total = EdgeStats::default();
        for side in self.sides() {
            total.merge(&side.stats);
        }
        total
    }

    fn merge(&mut self, (seen, peer_node): (SeenFrom, u32), delta: &EdgeStats) {
        let is = |s: &SideStats| s.seen == seen && s.peer_node == peer_node;
        match self {
            Self::One(side) if is(side) => side.stats.merge(delta),
            Self::Many(sides) => match sides.iter_mut().find(|s| is(s)) {
                Some(side) => side.stats.merge(delta),
                None => sides.push(SideStats {
                    stats: *delta,
                    peer_node,
                    seen,
                }),
            },
            Self::One(side) => {
                let first = *side;
                *self = Self::Many(vec![
                    first,
                    SideStats {
                        stats: *delta,
                        peer_node,
                        seen,
                    },
                ]);
            }
        }
    }

    /// Take `stats` out of a side (a side left with no connection and no
    /// packet goes away); whether nothing is left of the edge.
    fn subtract(&mut self, (seen, peer_node): (SeenFrom, u32), stats: &EdgeStats) -> bool {
        let is = |s: &SideStats| s.seen == seen && s.peer_node == peer_node;
        match self {
            Self::One(side) => {
                if is(side) {
                    subtract(&mut side.stats, stats);
                }
                is_empty(&side.stats)
            }
            Self::Many(sides) => {
                if let Some(i) = sides.iter().position(is)
                    && subtract(&mut sides[i].stats, stats)
                {
                    sides.remove(i);
                }
                if let [only] = sides[..] {
                    *self = Self::One(only);
                }
                self.sides().iter().all(|s| is_empty(&s.stats))
            }
        }
    }
}

/// The side of a connection between two attached pods.
const BOTH: (SeenFrom, u32) = (SeenFrom::Both, THIS_NODE);

/// One connection, whichever end reports it: the key both reports of a
/// connection between two attached pods meet under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ConnKey {
    protocol: Protocol,
    initiator: SocketAddr,
    responder: SocketAddr,
}

/// Where a connection's counters are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// Nowhere yet: its responder has not said whether it let it in.
    Held,
    /// On the learned edge.
    Learned,
    /// With the drops.
    Dropped,
}

/// A connection between two attached pods, as its two reports told it.
#[derive(Debug)]
struct Conn {
    edge: EdgeSlot,
    place: Place,
    /// Everything it counted so far, wherever it is.
    stats: EdgeStats,
    initiator_seen: bool,
    responder_seen: bool,
    initiator_closed: bool,
    responder_closed: bool,
    /// The latest verdict of each end.
    initiator_verdict: Verdict,
    responder_verdict: Verdict,
}

impl Conn {
    fn new(edge: EdgeSlot) -> Self {
        Self {
            edge,
            place: Place::Held,
            stats: EdgeStats::default(),
            initiator_seen: false,
            responder_seen: false,
            initiator_closed: false,
            responder_closed: false,
            initiator_verdict: Verdict::Forwarded,
            responder_verdict: Verdict::Forwarded,
        }
    }

    /// Where it belongs now: dropped at either end, else learned once the
    /// responder let it in (or the initiator's flow ended without a word
    /// from the responder: nothing dropped it that this node saw).
    fn wanted(&self) -> Place {
        if self.initiator_verdict == Verdict::Dropped || self.responder_verdict == Verdict::Dropped
        {
            Place::Dropped
        } else if self.initiator_seen && (self.responder_seen || self.initiator_closed) {
            Place::Learned
        } else {
            Place::Held
        }
    }
}

/// The connections between attached pods, with a bound on forgotten ones.
#[derive(Debug, Default)]
struct Conns {
    map: HashMap<ConnKey, Conn, Hasher>,
    /// The latest report time seen (Unix ns): the clock of [`Conns::expire`].
    now: u64,
    folds: u64,
}

/// A connection nobody reported for this long is forgotten (its entries
/// expired from the kernel's table long before, or were deleted without a
/// last report).
const CONN_FORGET_NS: u64 = 10 * 60 * 1_000_000_000;

impl Conns {
    fn expire(&mut self) {
        self.folds += 1;
        if !self.folds.is_multiple_of(1024) {
            return;
        }
        let horizon = self.now.saturating_sub(CONN_FORGET_NS);
        self.map.retain(|_, c| c.stats.last_seen >= horizon);
    }
}

impl Aggregator {
    /// An empty aggregator.
    #[must_use]
    pub fn new(options: Options, metrics: Arc<Metrics>) -> Self {
        let node_name: Arc<str> = Arc::from(options.node_name);
        let node_ids = DashMap::with_hasher(Hasher::default());
        node_ids.insert(Arc::clone(&node_name), THIS_NODE);
        Self {
            node_ids,
            node_names: RwLock::new(vec![Arc::clone(&node_name)]),
            node_name,
            metrics,
            gate: RwLock::new(()),
            workloads: DashMap::with_hasher(Hasher::default()),
            next_workload: AtomicU32::new(0),
            seen_pods: DashMap::with_hasher(Hasher::default()),
            pods_recorded: AtomicUsize::new(0),
            edges: DashMap::with_hasher(Hasher::default()),
            drops: DashMap::with_hasher(Hasher::default()),
            conns: Mutex::new(Conns::default()),
            entries: Mutex::new(HashMap::with_hasher(Hasher::default())),
            changes: AtomicU64::new(0),
            ring: Ring::new(options.ring_capacity, options.follow_capacity),
            names: options.names,
            external_names: Mutex::default(),
        }
    }

    /// Put the record of a DNS answer into the flow stream (see
    /// [`FlowRecord::dns_answer`]): `local` is the pod's end of the query's
    /// flow, behind `ifindex`, `server` the other end, `time` Unix ns.
    #[expect(
        clippy::too_many_arguments,
        reason = "the parts of one answer's flow, named"
    )]
    pub fn record_dns_answer(
        &self,
        protocol: Protocol,
        ifindex: u32,
        local: SocketAddr,
        server: SocketAddr,
        time: u64,
        answer: DnsAnswer,
        resolver: &dyn Resolve,
    ) {
        let pod = resolver
            .pod_by_ifindex(ifindex)
            .or_else(|| resolver.pod_by_ip_at(local.ip(), time));
        let server_pod = resolver.pod_by_ip_at(server.ip(), time);
        self.ring.push(FlowRecord::dns_answer(
            &self.node_name,
            protocol,
            ifindex,
            (local, pod),
            (server, server_pod),
            time,
            answer,
        ));
    }

    /// Fold one observation into the graph (see the module docs for the
    /// rules). Counts unresolved endpoints and peers and unknown initiators;
    /// the caller counts observations and their delay
    /// ([`Metrics::folded`]), as it owns the clock the kernel timestamps
    /// are converted with.
    pub fn fold(&self, obs: &Observation, resolver: &dyn Resolve) -> Folded {
        let endpoint = resolver
            .pod_by_ifindex(obs.ifindex)
            .or_else(|| resolver.pod_by_ip_at(obs.local.ip(), obs.first_seen));
        // The pod that held the address when the flow began, not a pod
        // that took the address over since.
        let peer = resolver.pod_by_ip_at(obs.remote.ip(), obs.first_seen);
        let mut peer_names = Vec::new();
        if obs.new_flow || obs.closed {
            let mut record =
                FlowRecord::new(obs, &self.node_name, endpoint.as_ref(), peer.as_ref());
            record.peer_node = peer
                .as_ref()
                .and_then(|pod| resolver.node_of(obs.remote.ip(), pod));
            if let (None, Some(names)) = (&peer, &self.names) {
                // Names of the peer's address for the endpoint's pod, as
                // its DNS answers gave them before the flow began.
                peer_names = names.names_at(obs.local.ip(), obs.remote.ip(), obs.first_seen);
                record.set_peer_names(peer_names.clone());
            }
            self.ring.push(record);
        }
        let Some(endpoint) = endpoint else {
            self.metrics.unresolved(Side::Endpoint);
            return Folded::UnresolvedEndpoint;
        };

        let _gate = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(folded) = obs.folded {
            let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            if obs.closed {
                entries.remove(&obs.entry());
            } else {
                entries.insert(obs.entry(), folded);
            }
        }
        let local = NodeSlot::Workload(self.intern(&endpoint, obs.local.ip(), resolver).0);
        let (remote, peer_node) = match &peer {
            Some(pod) => {
                let ip = obs.remote.ip();
                let (id, (seen_at, node)) = self.intern(pod, ip, resolver);
                // Another address of the pod (dual stack): asked, not cached.
                let node = if seen_at == ip {
                    node
                } else {
                    self.node_of(resolver, ip, pod)
                };
                (NodeSlot::Workload(id), node)
            }
            None => {
                self.metrics.unresolved(Side::Peer);
                (NodeSlot::External(obs.remote.ip()), NO_NODE)
            }
        };
        let port = if obs.protocol.has_ports() {
            obs.destination_port()
        } else {
            0
        };
        let (source, target) = match obs.initiator {
            Initiator::Local => (local, remote),
            Initiator::Remote => (remote, local),
            Initiator::Unknown => {
                self.metrics.unknown_initiator();
                return Folded::UnknownInitiator;
            }
        };
        let key = EdgeSlot {
            source,
            target,
            protocol: obs.protocol,
            port,
        };
        if !peer_names.is_empty() {
            self.name_peer(&peer_names, obs, &endpoint.workload);
        }
        // Both ends on this node: the two reports of the connection meet.
        if resolver.is_attached(obs.remote.ip()) {
            return self.fold_paired(key, obs);
        }
        let seen = if obs.initiator == Initiator::Local {
            SeenFrom::Initiator
        } else {
            SeenFrom::Responder
        };
        let mut delta = EdgeStats {
            packets: obs.packets_from_pod + obs.packets_to_pod,
            bytes: obs.bytes_from_pod + obs.bytes_to_pod,
            connections: u64::from(obs.connections),
            first_seen: obs.first_seen,
            last_seen: obs.last_seen,
            ..EdgeStats::default()
        };
        count_verdict(&mut delta, obs.verdict, obs.connections);
        match (
            self.merge(key, (seen, peer_node), &delta, obs.verdict),
            obs.verdict,
        ) {
            (_, Verdict::Dropped) => Folded::Dropped,
            (true, _) => Folded::NewEdge,
            (false, _) => Folded::Edge,
        }
    }

    /// The flow's external peer had these DNS names for `workload`'s pod.
    fn name_peer(&self, names: &[Arc<str>], obs: &Observation, workload: &WorkloadRef) {
        let ip = obs.remote.ip();
        let mut map = self
            .external_names
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for name in names {
            if !map.contains_key(&**name) {
                map.insert(name.to_string(), BTreeMap::new());
            }
            let Some(addresses) = map.get_mut(&**name) else {
                continue;
            };
            let seen = addresses.entry(ip).or_default();
            seen.merge(&NameSeen {
                first_seen: obs.first_seen,
                last_seen: obs.last_seen,
                ..NameSeen::default()
            });
            if !seen.workloads.contains(workload) {
                seen.workloads.insert(workload.clone());
            }
        }
    }

    /// One end's report of a connection between two attached pods: the
    /// initiator's brings its counters, the responder's its verdict (and
    /// never counters: they are the same packets). The connection's
    /// counters go where [`Conn::wanted`] says, and move when that changes.
    fn fold_paired(&self, edge: EdgeSlot, obs: &Observation) -> Folded {
        let initiator_end = obs.initiator == Initiator::Local;
        let (initiator, responder) = if initiator_end {
            (obs.local, obs.remote)
        } else {
            (obs.remote, obs.local)
        };
        let key = ConnKey {
            protocol: obs.protocol,
            initiator,
            responder,
        };
        let mut delta = EdgeStats {
            first_seen: obs.first_seen,
            last_seen: obs.last_seen,
            ..EdgeStats::default()
        };
        if initiator_end {
            delta.packets = obs.packets_from_pod + obs.packets_to_pod;
            delta.bytes = obs.bytes_from_pod + obs.bytes_to_pod;
            delta.connections = u64::from(obs.connections);
            count_verdict(&mut delta, obs.verdict, obs.connections);
        } else if obs.verdict != Verdict::Forwarded {
            // The ingress check's own verdict, next to the egress one.
            count_verdict(&mut delta, obs.verdict, obs.connections);
        }
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        conns.now = conns.now.max(obs.last_seen);
        conns.expire();
        let conn = match conns.map.entry(key) {
            hash_map::Entry::Occupied(e) => e.into_mut(),
            // A responder's late report of a connection already settled and
            // forgotten adds nothing: its verdict was counted.
            hash_map::Entry::Vacant(_) if !initiator_end && !obs.new_flow => {
                return Folded::Duplicate;
            }
            hash_map::Entry::Vacant(e) => e.insert(Conn::new(edge)),
        };
        if initiator_end {
            conn.initiator_seen = true;
            conn.initiator_closed |= obs.closed;
            conn.initiator_verdict = obs.verdict;
        } else {
            conn.responder_seen = true;
            conn.responder_closed |= obs.closed;
            conn.responder_verdict = obs.verdict;
        }
        let before = conn.stats;
        conn.stats.merge(&delta);
        let (was, now) = (conn.place, conn.wanted());
        conn.place = now;
        let edge = conn.edge;
        let stats = conn.stats;
        if conn.initiator_closed && conn.responder_closed {
            conns.map.remove(&key);
        }
        drop(conns);
        if was == now {
            if now != Place::Held {
                self.merge_into(now, edge, &delta);
            }
        } else {
            if was != Place::Held {
                self.unmerge(was, edge, &before);
            }
            if now != Place::Held {
                self.merge_into(now, edge, &stats);
            }
        }
        match now {
            _ if !initiator_end => Folded::Duplicate,
            Place::Held => Folded::Held,
            Place::Dropped => Folded::Dropped,
            Place::Learned => Folded::Edge,
        }
    }

    fn merge_into(&self, place: Place, edge: EdgeSlot, stats: &EdgeStats) {
        let verdict = if place == Place::Dropped {
            Verdict::Dropped
        } else {
            Verdict::Forwarded
        };
        self.merge(edge, BOTH, stats, verdict);
    }

    /// Take a connection's counters back out of an edge; an edge left with
    /// no connection and no packet goes away (nothing else made it).
    fn unmerge(&self, place: Place, edge: EdgeSlot, stats: &EdgeStats) {
        let map = if place == Place::Dropped {
            &self.drops
        } else {
            &self.edges
        };
        // Paired connections are always counted on the side both.
        let emptied = map
            .get_mut(&edge)
            .is_some_and(|mut e| e.subtract(BOTH, stats));
        if emptied {
            map.remove(&edge);
            self.metrics.set_graph_edges(self.edges.len());
        }
        self.changes.fetch_add(1, Ordering::Relaxed);
    }

    /// The id of a node name, interning it on first sight.
    fn node_id(&self, name: &Arc<str>) -> u32 {
        if let Some(id) = self.node_ids.get(name) {
            return *id;
        }
        let mut names = self
            .node_names
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *self.node_ids.entry(Arc::clone(name)).or_insert_with(|| {
            names.push(Arc::clone(name));
            u32::try_from(names.len() - 1).unwrap_or(NO_NODE)
        })
    }

    /// Fold `delta` into the edge (the drops' for a dropped flow); whether
    /// the edge is new.
    fn merge(
        &self,
        key: EdgeSlot,
        side: (SeenFrom, u32),
        delta: &EdgeStats,
        verdict: Verdict,
    ) -> bool {
        let map = if verdict == Verdict::Dropped {
            &self.drops
        } else {
            &self.edges
        };
        let mut created = false;
        map.entry(key)
            .or_insert_with(|| {
                created = true;
                EdgeEntry::new(side)
            })
            .merge(side, delta);
        self.changes.fetch_add(1, Ordering::Relaxed);
        if created && verdict != Verdict::Dropped {
            self.metrics.set_graph_edges(self.edges.len());
        }
        created
    }

    /// The id of the node the resolver says `pod`, found at `ip`, runs on.
    fn node_of(&self, resolver: &dyn Resolve, ip: IpAddr, pod: &PodMeta) -> u32 {
        resolver
            .node_of(ip, pod)
            .map_or(NO_NODE, |node| self.node_id(&node))
    }

    /// The workload's id, and the pod's node id with the address it was
    /// asked for when the pod was first seen (at `ip`, if it is new);
    /// recording the pod on the way.
    fn intern(
        &self,
        pod: &Arc<PodMeta>,
        ip: IpAddr,
        resolver: &dyn Resolve,
    ) -> (WorkloadId, (IpAddr, u32)) {
        let address = Arc::as_ptr(pod) as usize;
        if let Some(seen) = self.seen_pods.get(&address) {
            return (WorkloadId::new(seen.workload), seen.node);
        }
        let id = match self.workloads.get_mut(&pod.workload) {
            Some(mut slot) => {
                slot.see(pod, &self.pods_recorded);
                slot.id
            }
            None => {
                let mut slot = self
                    .workloads
                    .entry(pod.workload.clone())
                    .or_insert_with(|| WorkloadSlot {
                        id: self.next_workload.fetch_add(1, Ordering::Relaxed),
                        pods: BTreeMap::new(),
                    });
                slot.see(pod, &self.pods_recorded);
                slot.id
            }
        };
        // Every resolver snapshot brings new `Arc`s for the same pods: once
        // the cache holds about two generations, start over, so it never
        // keeps more than that alive.
        if self.seen_pods.len() > 2 * self.pods_recorded.load(Ordering::Relaxed) + 1024 {
            self.seen_pods.clear();
        }
        let node = (ip, self.node_of(resolver, ip, pod));
        self.seen_pods.insert(
            address,
            SeenPod {
                _pod: Arc::clone(pod),
                workload: id,
                node,
            },
        );
        (WorkloadId::new(id), node)
    }

    /// A consistent, deterministic snapshot of the learned graph (what
    /// the cluster let through).
    #[must_use]
    pub fn graph(&self) -> FlowGraph {
        self.snapshot(false).graph
    }

    /// The learned graph, the dropped connections by edge, and the graph's
    /// version, all from one moment.
    #[must_use]
    pub fn view(&self) -> GraphView {
        self.snapshot(true)
    }

    /// The audited edges and the dropped connections, from one moment:
    /// what was denied, which the pending queue folds. Its graph holds
    /// only the audited edges, and no pods. Cheaper than
    /// [`Aggregator::view`]: nothing else is copied, while folds wait.
    #[must_use]
    pub fn denied(&self) -> GraphView {
        self.snapshot_with(true, EdgeScope::Audited, false, false)
            .view
    }

    /// The dropped connections alone, from one moment (the graph empty):
    /// what the guard checks on every sweep of an open window.
    #[must_use]
    pub fn drops(&self) -> GraphView {
        self.snapshot_with(true, EdgeScope::None, false, false).view
    }

    fn snapshot(&self, with_drops: bool) -> GraphView {
        self.snapshot_with(with_drops, EdgeScope::All, false, false)
            .view
    }

    /// The learned graph, its drops and both by side, from one moment:
    /// what a relay merging several nodes reads (`GET /api/v1/contribution`).
    #[must_use]
    pub fn contribution(&self) -> Contribution {
        let snapshot = self.snapshot_with(true, EdgeScope::All, false, true);
        Contribution {
            node: Arc::clone(&self.node_name),
            view: snapshot.view,
            sides: snapshot.sides,
            drop_sides: snapshot.drop_sides,
        }
    }

    fn snapshot_with(
        &self,
        with_drops: bool,
        scope: EdgeScope,
        with_entries: bool,
        with_sides: bool,
    ) -> Snapshot {
        let (
            mut workloads,
            (edges, sides),
            (drops, drop_sides),
            version,
            entries,
            names,
            external_names,
        ) = {
            let _gate = self.gate.write().unwrap_or_else(PoisonError::into_inner);
            // Each edge's counters (the sum of its sides), and its sides
            // when asked.
            let copy = |map: &DashMap<EdgeSlot, EdgeEntry, Hasher>,
                        keep: &dyn Fn(&EdgeStats) -> bool| {
                let mut totals = Vec::new();
                let mut sides = Vec::new();
                for e in map {
                    let total = e.total();
                    if !keep(&total) {
                        continue;
                    }
                    totals.push((*e.key(), total));
                    if with_sides {
                        sides.extend(e.sides().iter().map(|side| (*e.key(), *side)));
                    }
                }
                (totals, sides)
            };
            let names = if with_sides {
                self.node_names
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
            } else {
                Vec::new()
            };
            let entries: Vec<(EntryKey, EntryCounters)> = if with_entries {
                self.entries
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .map(|(k, v)| (*k, *v))
                    .collect()
            } else {
                Vec::new()
            };
            let workloads: Vec<(u32, WorkloadRef, Vec<Arc<PodMeta>>)> = self
                .workloads
                .iter()
                .map(|e| {
                    let pods = if scope == EdgeScope::All {
                        e.pods.values().cloned().collect()
                    } else {
                        Vec::new()
                    };
                    (e.id, e.key().clone(), pods)
                })
                .collect();
            let edges = match scope {
                EdgeScope::All => copy(&self.edges, &|_| true),
                EdgeScope::Audited => copy(&self.edges, &|s| s.verdicts.audit > 0),
                EdgeScope::None => (Vec::new(), Vec::new()),
            };
            let drops = if with_drops {
                copy(&self.drops, &|_| true)
            } else {
                (Vec::new(), Vec::new())
            };
            let external_names = if scope == EdgeScope::All {
                self.external_names
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
            } else {
                ExternalNames::default()
            };
            (
                workloads,
                edges,
                drops,
                self.changes(),
                entries,
                names,
                external_names,
            )
        };
        workloads.sort_unstable_by_key(|(id, ..)| *id);
        let mut graph = FlowGraph {
            external_names,
            ..FlowGraph::default()
        };
        if scope == EdgeScope::All {
            for (_, _, pods) in &workloads {
                for pod in pods {
                    graph.add_pod(pod);
                }
            }
        }
        let node = |slot: NodeSlot| match slot {
            NodeSlot::External(ip) => Some(NodeId::External(ip)),
            NodeSlot::Workload(id) => workloads
                .binary_search_by_key(&id.get(), |(id, ..)| *id)
                .ok()
                .map(|i| NodeId::Workload(workloads[i].1.clone())),
        };
        // Every workload id in an edge was interned before the edge was
        // made, under the same gate; a miss would be a bug, not data.
        let key = |slot: EdgeSlot| {
            Some(EdgeKey {
                source: node(slot.source)?,
                target: node(slot.target)?,
                protocol: slot.protocol,
                port: slot.port,
            })
        };
        for (slot, stats) in edges {
            if let Some(key) = key(slot) {
                graph.record(key, &stats);
            }
        }
        let drops = drops
            .into_iter()
            .filter_map(|(slot, stats)| Some((key(slot)?, stats)))
            .collect();
        let by_edge = |sides: Vec<(EdgeSlot, SideStats)>| {
            let mut by_edge: BTreeMap<EdgeKey, Vec<EdgeSide>> = BTreeMap::new();
            for (slot, side) in sides {
                let Some(edge) = key(slot) else { continue };
                by_edge.entry(edge).or_default().push(EdgeSide {
                    seen_from: side.seen,
                    peer_node: usize::try_from(side.peer_node)
                        .ok()
                        .and_then(|i| names.get(i))
                        .cloned(),
                    stats: side.stats,
                });
            }
            for sides in by_edge.values_mut() {
                sides.sort_unstable_by(|a, b| {
                    (a.seen_from, &a.peer_node).cmp(&(b.seen_from, &b.peer_node))
                });
            }
            by_edge
        };
        let (sides, drop_sides) = (by_edge(sides), by_edge(drop_sides));
        Snapshot {
            view: GraphView {
                graph,
                drops,
                version,
            },
            entries,
            sides,
            drop_sides,
        }
    }

    /// Merge a saved graph (from the store) into this one: its workloads
    /// with their pods and labels, its edges with their counters. Call it
    /// at start, before the first fold; restoring into a live aggregator
    /// adds the counters on top.
    ///
    /// Pods come back with their workload's common labels (the graph keeps
    /// no more), which is what [`Aggregator::graph`] shows of them, so
    /// `restore(g)` on an empty aggregator gives `graph() == g`.
    pub fn restore(&self, graph: &FlowGraph) {
        self.restore_with_sides(graph, &Sides::new());
    }

    /// [`Aggregator::restore`], with the edges' sides as saved. An edge
    /// whose saved sides do not add up to it (none saved: a store written
    /// before sides were kept, or by an older weir since) comes back on
    /// the side [`SeenFrom::Unknown`].
    pub fn restore_with_sides(&self, graph: &FlowGraph, sides: &Sides) {
        let _gate = self.gate.write().unwrap_or_else(PoisonError::into_inner);
        self.restore_locked(graph, sides);
    }

    /// Swap the whole graph and its drops for `view`'s (its version is not
    /// taken: [`Aggregator::changes`] grows, so `/api/events` tells the UI).
    /// A relay holds the merged view of every node this way; folds and
    /// restores before it are forgotten, flow records are kept.
    pub fn replace(&self, view: &GraphView) {
        let _gate = self.gate.write().unwrap_or_else(PoisonError::into_inner);
        self.workloads.clear();
        self.seen_pods.clear();
        self.pods_recorded.store(0, Ordering::Relaxed);
        self.next_workload.store(0, Ordering::Relaxed);
        self.edges.clear();
        self.drops.clear();
        self.conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .clear();
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.external_names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.restore_locked(&view.graph, &Sides::new());
        for (key, stats) in &view.drops {
            let slot = EdgeSlot {
                source: self.node_slot_locked(&key.source),
                target: self.node_slot_locked(&key.target),
                protocol: key.protocol,
                port: key.port,
            };
            self.drops.insert(
                slot,
                EdgeEntry::One(SideStats {
                    stats: *stats,
                    peer_node: NO_NODE,
                    seen: SeenFrom::Unknown,
                }),
            );
        }
    }

    /// The slot of `node`, interning a workload not seen yet; the caller
    /// holds the gate exclusively.
    fn node_slot_locked(&self, node: &NodeId) -> NodeSlot {
        match node {
            NodeId::External(ip) => NodeSlot::External(*ip),
            NodeId::Workload(w) => NodeSlot::Workload(WorkloadId::new(
                self.workloads
                    .entry(w.clone())
                    .or_insert_with(|| WorkloadSlot {
                        id: self.next_workload.fetch_add(1, Ordering::Relaxed),
                        pods: BTreeMap::new(),
                    })
                    .id,
            )),
        }
    }

    /// [`Aggregator::restore_with_sides`] with the gate held exclusively.
    fn restore_locked(&self, graph: &FlowGraph, sides: &Sides) {
        merge_names(
            &mut self
                .external_names
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            &graph.external_names,
        );
        let mut ids: BTreeMap<&WorkloadRef, u32> = BTreeMap::new();
        for (workload, info) in &graph.workloads {
            let mut slot = self
                .workloads
                .entry(workload.clone())
                .or_insert_with(|| WorkloadSlot {
                    id: self.next_workload.fetch_add(1, Ordering::Relaxed),
                    pods: BTreeMap::new(),
                });
            for name in &info.pods {
                if !slot.pods.contains_key(name) {
                    slot.pods.insert(
                        name.clone(),
                        Arc::new(PodMeta {
                            namespace: workload.namespace.clone(),
                            name: name.clone(),
                            labels: info.labels.clone(),
                            workload: workload.clone(),
                            ips: Vec::new(),
                        }),
                    );
                    self.pods_recorded.fetch_add(1, Ordering::Relaxed);
                }
            }
            ids.insert(workload, slot.id);
        }
        let slot_of = |node: &NodeId| match node {
            NodeId::External(ip) => NodeSlot::External(*ip),
            NodeId::Workload(w) => NodeSlot::Workload(WorkloadId::new(match ids.get(w) {
                Some(id) => *id,
                // An edge to a workload without a row: give it one.
                None => {
                    self.workloads
                        .entry(w.clone())
                        .or_insert_with(|| WorkloadSlot {
                            id: self.next_workload.fetch_add(1, Ordering::Relaxed),
                            pods: BTreeMap::new(),
                        })
                        .id
                }
            })),
        };
        for (key, stats) in &graph.edges {
            let slot = EdgeSlot {
                source: slot_of(&key.source),
                target: slot_of(&key.target),
                protocol: key.protocol,
                port: key.port,
            };
            let saved = sides.get(key).filter(|saved| {
                let mut sum = EdgeStats::default();
                for side in *saved {
                    sum.merge(&side.stats);
                }
                sum == *stats
            });
            let unknown = [EdgeSide {
                seen_from: SeenFrom::Unknown,
                peer_node: None,
                stats: *stats,
            }];
            let saved = match saved {
                Some(saved) if !saved.is_empty() => saved.as_slice(),
                _ => &unknown[..],
            };
            let side_of = |side: &EdgeSide| {
                let peer_node = match (side.seen_from, &side.peer_node) {
                    (SeenFrom::Both, _) => THIS_NODE,
                    (SeenFrom::Unknown, _) | (_, None) => NO_NODE,
                    (_, Some(node)) => self.node_id(node),
                };
                (side.seen_from, peer_node)
            };
            let mut entry = self
                .edges
                .entry(slot)
                .or_insert_with(|| EdgeEntry::new(side_of(&saved[0])));
            for side in saved {
                entry.merge(side_of(side), &side.stats);
            }
        }
        self.changes.fetch_add(1, Ordering::Relaxed);
        self.metrics.set_graph_edges(self.edges.len());
    }

    /// The learned graph and what was folded of each live kernel entry,
    /// from one moment: what the store saves. An agent that restarts on the
    /// same pinned flow table seeds its tracker with the entries (their
    /// counters are in the graph), so nothing is folded twice, whether the
    /// last agent stopped or was killed.
    #[must_use]
    pub fn for_store(&self) -> (FlowGraph, Vec<(EntryKey, EntryCounters)>) {
        let (graph, entries, _) = self.for_store_with_sides();
        (graph, entries)
    }

    /// [`Aggregator::for_store`] and the learned edges' sides, from the
    /// same moment.
    #[must_use]
    pub fn for_store_with_sides(&self) -> (FlowGraph, Vec<(EntryKey, EntryCounters)>, Sides) {
        let Snapshot {
            view,
            mut entries,
            sides,
            ..
        } = self.snapshot_with(false, EdgeScope::All, true, true);
        entries.sort_unstable_by_key(|(k, _)| (k.ifindex, k.protocol, k.local, k.remote));
        (view.graph, entries, sides)
    }

    /// The folded entries from the store (see [`Aggregator::for_store`]):
    /// kept until their flows report again, so a save before that keeps
    /// them too.
    pub fn restore_entries(&self, entries: &[(EntryKey, EntryCounters)]) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(entries.iter().copied());
    }

    /// A number that grows whenever the graph (or its drops) changes, not
    /// a count of anything: compare two readings to know whether to save,
    /// or to tell the UI to refetch.
    #[must_use]
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// How many edges the graph has.
    #[must_use]
    pub fn edge_count(&self) -> usize {
        self.edges.len()
    }

    /// How many flow records the ring holds.
    #[must_use]
    pub fn record_count(&self) -> usize {
        self.ring.len()
    }

    /// The last `last` flow records matching `filter`, oldest first.
    pub fn recent(&self, last: usize, filter: impl Fn(&FlowRecord) -> bool) -> Vec<SharedRecord> {
        self.ring.recent(last, filter)
    }

    /// The last `last` matching records and a receiver of every later record
    /// (unfiltered: the follower filters), with no gap or overlap between
    /// the two. `None` once [`Aggregator::close_followers`] was called.
    pub fn follow(
        &self,
        last: usize,
        filter: impl Fn(&FlowRecord) -> bool,
    ) -> (Vec<SharedRecord>, Option<broadcast::Receiver<SharedRecord>>) {
        self.ring.follow(last, filter)
    }

    /// End every follower's stream (at shutdown: a graceful HTTP shutdown
    /// waits for open responses, and a follow stream never ends by itself).
    pub fn close_followers(&self) {
        self.ring.close_followers();
    }

    /// Whether [`Aggregator::close_followers`] was called: long-lived
    /// streams (server-sent events) end then.
    #[must_use]
    pub fn followers_closed(&self) -> bool {
        self.ring.followers_closed()
    }
}

/// What the UI draws: [`Aggregator::view`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GraphView {
    /// The learned graph (forwarded and audited connections).
    pub graph: FlowGraph,
    /// Dropped connections, by the edge they would have made (their
    /// workloads are in `graph`).
    pub drops: BTreeMap<EdgeKey, EdgeStats>,
    /// [`Aggregator::changes`] at the snapshot: grows with every change.
    pub version: u64,
}

/// A contribution for a relay: [`Aggregator::contribution`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Contribution {
    /// This node's name.
    pub node: Arc<str>,
    /// The learned graph, its drops and their version.
    pub view: GraphView,
    /// Every learned edge's counters by side; the sides of an edge add up
    /// to the edge.
    pub sides: BTreeMap<EdgeKey, Vec<EdgeSide>>,
    /// The drops by side.
    pub drop_sides: BTreeMap<EdgeKey, Vec<EdgeSide>>,
}

/// Which learned edges a snapshot copies.
#[derive(Clone, Copy, PartialEq, Eq)]
enum EdgeScope {
    /// Every edge, and every pod in the graph.
    All,
    /// The edges with audited connections; no pods.
    Audited,
    /// None; no pods.
    None,
}

/// What one snapshot holds; parts not asked for are empty.
struct Snapshot {
    view: GraphView,
    entries: Vec<(EntryKey, EntryCounters)>,
    sides: BTreeMap<EdgeKey, Vec<EdgeSide>>,
    drop_sides: BTreeMap<EdgeKey, Vec<EdgeSide>>,
}

/// Take `stats`' counters out of `edge`; whether nothing is left of it.
fn subtract(edge: &mut EdgeStats, stats: &EdgeStats) -> bool {
    edge.packets = edge.packets.saturating_sub(stats.packets);
    edge.bytes = edge.bytes.saturating_sub(stats.bytes);
    edge.connections = edge.connections.saturating_sub(stats.connections);
    let v = &mut edge.verdicts;
    v.forwarded = v.forwarded.saturating_sub(stats.verdicts.forwarded);
    v.audit = v.audit.saturating_sub(stats.verdicts.audit);
    v.dropped = v.dropped.saturating_sub(stats.verdicts.dropped);
    is_empty(edge)
}

/// No connection and no packet: nothing made the edge.
fn is_empty(edge: &EdgeStats) -> bool {
    edge.connections == 0 && edge.packets == 0
}

/// Counts `connections` new connections under their verdict.
fn count_verdict(stats: &mut EdgeStats, verdict: Verdict, connections: u32) {
    let counts = &mut stats.verdicts;
    let n = u64::from(connections);
    match verdict {
        Verdict::Forwarded => counts.forwarded += n,
        Verdict::Audit => counts.audit += n,
        Verdict::Dropped => counts.dropped += n,
    }
}

impl WorkloadSlot {
    fn see(&mut self, pod: &Arc<PodMeta>, pods_recorded: &AtomicUsize) {
        match self.pods.get_mut(pod.name.as_str()) {
            // A new resolver snapshot may carry new labels: the latest wins.
            Some(known) if !Arc::ptr_eq(known, pod) => *known = Arc::clone(pod),
            Some(_) => {}
            None => {
                self.pods.insert(pod.name.clone(), Arc::clone(pod));
                pods_recorded.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod sides_tests;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
