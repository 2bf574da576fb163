//! Flow records: what `/api/flows` and `weir observe` show, one per flow
//! start or end (never per counter update, so the fold stays cheap), kept
//! in a bounded ring and broadcast to followers.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
};

use tokio::sync::broadcast;
use weir_generator::model::{PodMeta, Protocol};

use crate::flow::{CheckedDirection, DenyReason, Initiator, Observation, Verdict};

/// One flow start or end, oriented initiator -> responder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRecord {
    /// When it happened, Unix nanoseconds: the first packet for a new flow,
    /// the last packet for a closed one.
    pub time: u64,
    /// The node that saw it.
    pub node_name: Arc<str>,
    /// Transport protocol.
    pub protocol: Protocol,
    /// The initiator's address (the pod's for an unknown initiator).
    pub source: SocketAddr,
    /// The responder's address.
    pub destination: SocketAddr,
    /// The initiator's pod, when known.
    pub source_pod: Option<Arc<PodMeta>>,
    /// The responder's pod, when known.
    pub destination_pod: Option<Arc<PodMeta>>,
    /// Who opened the flow, seen from the endpoint.
    pub initiator: Initiator,
    /// Host-side veth that reported the flow.
    pub ifindex: u32,
    /// TCP flags seen so far in both directions.
    pub tcp_flags: u8,
    /// ICMP type and code of the first message.
    pub icmp: Option<(u8, u8)>,
    /// Packets in this report (both directions).
    pub packets: u64,
    /// Bytes in this report (both directions).
    pub bytes: u64,
    /// The flow's first report.
    pub new_flow: bool,
    /// The flow's last report.
    pub closed: bool,
    /// The flow's first packet, Unix ns.
    pub first_seen: u64,
    /// The flow's last packet so far, Unix ns.
    pub last_seen: u64,
    /// The datapath's verdict.
    pub verdict: Verdict,
    /// Why it was not forwarded.
    pub reason: DenyReason,
    /// The direction the datapath checked at the reporting endpoint.
    pub direction: Option<CheckedDirection>,
    /// The policies isolating the endpoint's pod in that direction, for
    /// flows that were not forwarded.
    pub policies: Vec<String>,
    /// The node of the peer (the end that is not the reporting endpoint),
    /// when the source knows it: a relay merging several nodes' streams
    /// tells the responder's report of a connection whose initiator's node
    /// reports it too.
    pub peer_node: Option<Arc<str>>,
    /// DNS names the initiator's address had for the endpoint's pod when
    /// the flow began (a peer outside the cluster that opened it).
    pub source_names: Vec<Arc<str>>,
    /// DNS names the responder's address had for the endpoint's pod when
    /// the flow began.
    pub destination_names: Vec<Arc<str>>,
    /// For a record of a DNS answer (not a flow start or end; see
    /// [`FlowRecord::dns_answer`]): the name asked and the response code.
    pub dns: Option<DnsAnswer>,
    /// The record's place in this agent's stream, given when the ring takes
    /// it (0 before): a follower that reconnects asks for what came after
    /// the last one it got.
    pub seq: u64,
}

impl FlowRecord {
    /// The record of an observation, given its resolved pods.
    #[must_use]
    pub fn new(
        obs: &Observation,
        node_name: &Arc<str>,
        endpoint: Option<&Arc<PodMeta>>,
        peer: Option<&Arc<PodMeta>>,
    ) -> Self {
        let local = (obs.local, endpoint.cloned());
        let remote = (obs.remote, peer.cloned());
        let ((source, source_pod), (destination, destination_pod)) = match obs.initiator {
            Initiator::Remote => (remote, local),
            Initiator::Local | Initiator::Unknown => (local, remote),
        };
        Self {
            time: if obs.new_flow {
                obs.first_seen
            } else {
                obs.last_seen
            },
            node_name: Arc::clone(node_name),
            protocol: obs.protocol,
            source,
            destination,
            source_pod,
            destination_pod,
            initiator: obs.initiator,
            ifindex: obs.ifindex,
            tcp_flags: obs.tcp_flags_from_pod | obs.tcp_flags_to_pod,
            icmp: obs.icmp,
            packets: obs.packets_from_pod + obs.packets_to_pod,
            bytes: obs.bytes_from_pod + obs.bytes_to_pod,
            new_flow: obs.new_flow,
            closed: obs.closed,
            first_seen: obs.first_seen,
            last_seen: obs.last_seen,
            verdict: obs.verdict,
            reason: obs.reason,
            direction: obs.direction,
            policies: obs.policies.clone(),
            peer_node: None,
            source_names: Vec::new(),
            destination_names: Vec::new(),
            dns: None,
            seq: 0,
        }
    }

    /// The record of a DNS answer the pod `local` got from `server` at
    /// `time` (Unix ns), on the query's flow (`local` -> `server`): a flow
    /// record comes when the query's flow begins, before its answer, and
    /// only says how the name resolved through the names of later flows; a
    /// name that did not exist has no later flow.
    #[must_use]
    pub fn dns_answer(
        node_name: &Arc<str>,
        protocol: Protocol,
        ifindex: u32,
        (local, local_pod): (SocketAddr, Option<Arc<PodMeta>>),
        (server, server_pod): (SocketAddr, Option<Arc<PodMeta>>),
        time: u64,
        answer: DnsAnswer,
    ) -> Self {
        Self {
            time,
            node_name: Arc::clone(node_name),
            protocol,
            source: local,
            destination: server,
            source_pod: local_pod,
            destination_pod: server_pod,
            initiator: Initiator::Local,
            ifindex,
            tcp_flags: 0,
            icmp: None,
            packets: 1,
            bytes: 0,
            new_flow: false,
            closed: false,
            first_seen: time,
            last_seen: time,
            verdict: Verdict::Forwarded,
            reason: DenyReason::None,
            direction: None,
            policies: Vec::new(),
            peer_node: None,
            source_names: Vec::new(),
            destination_names: Vec::new(),
            dns: Some(answer),
            seq: 0,
        }
    }

    /// Give the peer's DNS names to whichever side the peer is.
    pub fn set_peer_names(&mut self, names: Vec<Arc<str>>) {
        match self.initiator {
            Initiator::Remote => self.source_names = names,
            Initiator::Local | Initiator::Unknown => self.destination_names = names,
        }
    }

    /// The pod behind the veth that reported the flow.
    #[must_use]
    pub fn endpoint_pod(&self) -> Option<&Arc<PodMeta>> {
        match self.initiator {
            Initiator::Remote => self.destination_pod.as_ref(),
            Initiator::Local | Initiator::Unknown => self.source_pod.as_ref(),
        }
    }
}

/// The DNS answer a record reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsAnswer {
    /// The name asked: lowercase, without the root's trailing dot.
    pub query: Arc<str>,
    /// The response code (3: NXDOMAIN).
    pub rcode: u16,
}

/// A shared flow record.
pub type SharedRecord = Arc<FlowRecord>;

/// The last records, and the channel to followers. Pushing and subscribing
/// happen under one lock so that a follower's backlog and its live stream
/// neither overlap nor leave a gap.
#[derive(Debug)]
pub(crate) struct Ring {
    inner: Mutex<RingInner>,
}

#[derive(Debug)]
struct RingInner {
    records: VecDeque<SharedRecord>,
    capacity: usize,
    followers: Option<broadcast::Sender<SharedRecord>>,
    /// The next record's [`FlowRecord::seq`].
    next_seq: u64,
}

impl Ring {
    pub(crate) fn new(capacity: usize, follow_capacity: usize) -> Self {
        Self::starting_at(capacity, follow_capacity, first_seq())
    }

    /// A ring whose first record gets `seq`.
    pub(crate) fn starting_at(capacity: usize, follow_capacity: usize, seq: u64) -> Self {
        let (sender, _) = broadcast::channel(follow_capacity.max(1));
        Self {
            inner: Mutex::new(RingInner {
                records: VecDeque::with_capacity(capacity),
                capacity,
                followers: Some(sender),
                next_seq: seq.max(1),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RingInner> {
        // The ring holds plain data: a panic elsewhere leaves it consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn push(&self, mut record: FlowRecord) {
        let mut inner = self.lock();
        if inner.capacity == 0 {
            return;
        }
        record.seq = inner.next_seq;
        inner.next_seq += 1;
        let record = Arc::new(record);
        if inner.records.len() == inner.capacity {
            inner.records.pop_front();
        }
        if let Some(sender) = &inner.followers {
            // No receivers is not an error here: nobody follows right now.
            // A slow receiver is not waited for: it lags and is told so.
            let _ = sender.send(Arc::clone(&record));
        }
        inner.records.push_back(record);
    }

    /// The last `last` records matching `filter`, oldest first.
    pub(crate) fn recent(
        &self,
        last: usize,
        filter: impl Fn(&FlowRecord) -> bool,
    ) -> Vec<SharedRecord> {
        let inner = self.lock();
        collect_last(&inner.records, last, filter)
    }

    /// Like [`Ring::recent`], plus a receiver for every later record, or
    /// `None` once followers were closed.
    pub(crate) fn follow(
        &self,
        last: usize,
        filter: impl Fn(&FlowRecord) -> bool,
    ) -> (Vec<SharedRecord>, Option<broadcast::Receiver<SharedRecord>>) {
        let inner = self.lock();
        let backlog = collect_last(&inner.records, last, filter);
        (
            backlog,
            inner.followers.as_ref().map(broadcast::Sender::subscribe),
        )
    }

    pub(crate) fn close_followers(&self) {
        self.lock().followers = None;
    }

    pub(crate) fn followers_closed(&self) -> bool {
        self.lock().followers.is_none()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().records.len()
    }
}

/// The first record's sequence number: the time the ring was made, in
/// microseconds since the Unix epoch. A restarted agent then numbers its
/// records above every number its previous run gave (unless that run
/// averaged more than one record a microsecond), so a follower's
/// `after=SEQ` never skips a new run's records; and the numbers stay below
/// 2^53 (exact in JavaScript) until the year 2255.
fn first_seq() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| {
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX >> 11)
        })
}

fn collect_last(
    records: &VecDeque<SharedRecord>,
    last: usize,
    filter: impl Fn(&FlowRecord) -> bool,
) -> Vec<SharedRecord> {
    let mut out: Vec<SharedRecord> = records
        .iter()
        .rev()
        .filter(|r| filter(r))
        .take(last)
        .cloned()
        .collect();
    out.reverse();
    out
}
