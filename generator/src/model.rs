//! The flow graph: workloads and external addresses as nodes, observed
//! connection initiations as edges keyed by (source, target, protocol, port).
//!
//! Everything is `BTreeMap`-based so that iteration, JSON and YAML are
//! deterministic: the same flows always give the same bytes.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
    str::FromStr,
};

use serde::{Deserialize, Serialize};

/// Transport protocol of a flow, named as Kubernetes and Hubble name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// TCP.
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
    /// SCTP.
    #[serde(rename = "SCTP")]
    Sctp,
    /// ICMP for IPv4.
    #[serde(rename = "ICMPv4")]
    Icmp,
    /// ICMP for IPv6.
    #[serde(rename = "ICMPv6")]
    IcmpV6,
}

impl Protocol {
    /// The IANA protocol number (`IPPROTO_*`).
    #[must_use]
    pub const fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Sctp => 132,
            Self::Icmp => 1,
            Self::IcmpV6 => 58,
        }
    }

    /// The protocol for an IANA number, if weir tracks it.
    #[must_use]
    pub const fn from_number(number: u8) -> Option<Self> {
        match number {
            6 => Some(Self::Tcp),
            17 => Some(Self::Udp),
            132 => Some(Self::Sctp),
            1 => Some(Self::Icmp),
            58 => Some(Self::IcmpV6),
            _ => None,
        }
    }

    /// The canonical name (`TCP`, `UDP`, `SCTP`, `ICMPv4`, `ICMPv6`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
            Self::Icmp => "ICMPv4",
            Self::IcmpV6 => "ICMPv6",
        }
    }

    /// Whether flows of this protocol have ports (ICMP has none).
    #[must_use]
    pub const fn has_ports(self) -> bool {
        matches!(self, Self::Tcp | Self::Udp | Self::Sctp)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A protocol name that weir does not know.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown protocol {0:?} (expected TCP, UDP, SCTP, ICMP or ICMPv6)")]
pub struct UnknownProtocol(pub String);

impl FromStr for Protocol {
    type Err = UnknownProtocol;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            "sctp" => Ok(Self::Sctp),
            "icmp" | "icmpv4" => Ok(Self::Icmp),
            "icmpv6" => Ok(Self::IcmpV6),
            _ => Err(UnknownProtocol(s.to_owned())),
        }
    }
}

/// The kind of a workload: a pod's top owner, or the pod itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum WorkloadKind {
    /// `apps/v1` Deployment (through its ReplicaSet).
    Deployment,
    /// `apps/v1` ReplicaSet without a Deployment.
    ReplicaSet,
    /// `apps/v1` StatefulSet.
    StatefulSet,
    /// `apps/v1` DaemonSet.
    DaemonSet,
    /// `batch/v1` Job without a CronJob.
    Job,
    /// `batch/v1` CronJob (through its Jobs).
    CronJob,
    /// A bare pod: the pod is its own workload.
    Pod,
}

impl WorkloadKind {
    /// The Kubernetes kind name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::ReplicaSet => "ReplicaSet",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
            Self::Job => "Job",
            Self::CronJob => "CronJob",
            Self::Pod => "Pod",
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A workload: the unit policies select and the graph draws.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WorkloadRef {
    /// Namespace of the workload.
    pub namespace: String,
    /// Kind of the top owner.
    pub kind: WorkloadKind,
    /// Name of the top owner.
    pub name: String,
}

impl WorkloadRef {
    /// A workload reference.
    pub fn new(namespace: impl Into<String>, kind: WorkloadKind, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            kind,
            name: name.into(),
        }
    }
}

impl fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What a resolver knows of a pod: enough to name it, group it and select it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodMeta {
    /// Namespace of the pod.
    pub namespace: String,
    /// Name of the pod.
    pub name: String,
    /// The pod's labels.
    pub labels: BTreeMap<String, String>,
    /// The workload the pod belongs to.
    pub workload: WorkloadRef,
    /// The pod's IPs (`status.podIPs`).
    pub ips: Vec<IpAddr>,
}

/// A node of the flow graph.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeId {
    /// A workload inside the cluster.
    Workload(WorkloadRef),
    /// An address outside the cluster (or not known to the resolver).
    External(IpAddr),
}

impl fmt::Display for NodeId {
    /// `namespace/workload` for workloads, the address for external nodes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Workload(w) => w.fmt(f),
            Self::External(ip) => ip.fmt(f),
        }
    }
}

/// Identity of an edge: who opened connections to whom, on which port. The
/// source port is never part of it; replies never make edges.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EdgeKey {
    /// The initiator.
    pub source: NodeId,
    /// The responder.
    pub target: NodeId,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Destination port (0 for ICMP).
    pub port: u16,
}

/// Connections by the datapath's verdict (Hubble's `FORWARDED`, `AUDIT`,
/// `DROPPED`). Absent from stores written before verdicts were counted:
/// those read as zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictCounts {
    /// Allowed, or not judged.
    #[serde(default)]
    pub forwarded: u64,
    /// Denied by the policies and let through (audit mode).
    #[serde(default)]
    pub audit: u64,
    /// Denied and dropped (enforce mode).
    #[serde(default)]
    pub dropped: u64,
}

impl VerdictCounts {
    /// Fold other counts into these.
    pub fn merge(&mut self, other: &Self) {
        self.forwarded += other.forwarded;
        self.audit += other.audit;
        self.dropped += other.dropped;
    }

    /// Whether nothing was counted.
    #[must_use]
    pub const fn is_zero(&self) -> bool {
        self.forwarded == 0 && self.audit == 0 && self.dropped == 0
    }
}

/// Counters of an edge. Times are Unix nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeStats {
    /// Packets in both directions.
    pub packets: u64,
    /// Bytes in both directions (IP layer).
    pub bytes: u64,
    /// Connections (flows) opened.
    pub connections: u64,
    /// First packet of the first connection.
    pub first_seen: u64,
    /// Last packet seen.
    pub last_seen: u64,
    /// Connections by verdict (zero in graphs saved before they were
    /// counted).
    #[serde(default, skip_serializing_if = "VerdictCounts::is_zero")]
    pub verdicts: VerdictCounts,
}

impl EdgeStats {
    /// Fold another set of counters into this one.
    pub fn merge(&mut self, other: &Self) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.connections += other.connections;
        self.first_seen = match (self.first_seen, other.first_seen) {
            (0, t) | (t, 0) => t,
            (a, b) => a.min(b),
        };
        self.last_seen = self.last_seen.max(other.last_seen);
        self.verdicts.merge(&other.verdicts);
    }
}

/// What the graph knows of a workload node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadInfo {
    /// Labels common to all of the workload's pods seen so far.
    pub labels: BTreeMap<String, String>,
    /// Names of the workload's pods seen so far.
    pub pods: BTreeSet<String>,
}

/// When flows to (or from) an external address carried a DNS name, and
/// for which workloads: one entry of [`FlowGraph::external_names`]. Times
/// are Unix nanoseconds, those of the flows (not of the DNS answers).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameSeen {
    /// The first packet of the first flow that carried the name.
    pub first_seen: u64,
    /// The last packet of the latest such flow seen.
    pub last_seen: u64,
    /// The in-cluster ends of those flows: the workloads whose pods got
    /// the name's DNS answer and then talked to the address. A workload's
    /// name rules use only what its own pods resolved, so a shared CDN
    /// address named for another workload adds nothing to its policy.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub workloads: BTreeSet<WorkloadRef>,
}

impl NameSeen {
    /// Fold other sightings into these (earliest first, latest last, the
    /// union of workloads).
    pub fn merge(&mut self, other: &Self) {
        self.first_seen = match (self.first_seen, other.first_seen) {
            (0, t) | (t, 0) => t,
            (a, b) => a.min(b),
        };
        self.last_seen = self.last_seen.max(other.last_seen);
        self.workloads.extend(other.workloads.iter().cloned());
    }
}

/// The DNS names of external addresses: fully qualified name (lowercase,
/// no trailing dot) -> address -> when flows named so were seen. One name
/// has several addresses (round robin, re-pointing), and one address may
/// have several names (a shared front end).
pub type ExternalNames = BTreeMap<String, BTreeMap<IpAddr, NameSeen>>;

/// Fold `from` into `into`: [`NameSeen::merge`] per name and address.
pub fn merge_names(into: &mut ExternalNames, from: &ExternalNames) {
    for (name, addresses) in from {
        let mine = into.entry(name.clone()).or_default();
        for (ip, seen) in addresses {
            mine.entry(*ip).or_default().merge(seen);
        }
    }
}

/// The workload-level flow graph.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowGraph {
    /// Workload nodes with what is known of them. External nodes appear only
    /// through edges.
    pub workloads: BTreeMap<WorkloadRef, WorkloadInfo>,
    /// Edges with their counters.
    pub edges: BTreeMap<EdgeKey, EdgeStats>,
    /// Names of external addresses, as the DNS answers a pod got before a
    /// flow named them ([`FlowGraph::name_address`]); empty when no DNS was
    /// observed. Addresses without a name are simply absent.
    pub external_names: ExternalNames,
}

impl FlowGraph {
    /// Record a pod of a workload (labels are intersected across pods).
    pub fn add_pod(&mut self, pod: &PodMeta) {
        let info = self.workloads.entry(pod.workload.clone()).or_default();
        if info.pods.is_empty() {
            info.labels.clone_from(&pod.labels);
        } else if !info.pods.contains(&pod.name) {
            info.labels.retain(|k, v| pod.labels.get(k) == Some(v));
        }
        info.pods.insert(pod.name.clone());
    }

    /// Fold counters into an edge.
    pub fn record(&mut self, key: EdgeKey, stats: &EdgeStats) {
        self.edges.entry(key).or_default().merge(stats);
    }

    /// Record that flows of `workload` to or from the external address
    /// `ip` carried the DNS name `name`, from `first_seen` to `last_seen`
    /// (Unix ns).
    pub fn name_address(
        &mut self,
        name: &str,
        ip: IpAddr,
        workload: &WorkloadRef,
        first_seen: u64,
        last_seen: u64,
    ) {
        let seen = self
            .external_names
            .entry(name.to_owned())
            .or_default()
            .entry(ip)
            .or_default();
        seen.merge(&NameSeen {
            first_seen,
            last_seen,
            workloads: BTreeSet::new(),
        });
        if !seen.workloads.contains(workload) {
            seen.workloads.insert(workload.clone());
        }
    }

    /// Fold other names in ([`merge_names`]).
    pub fn merge_names(&mut self, names: &ExternalNames) {
        merge_names(&mut self.external_names, names);
    }

    /// Address -> its names, sorted: the inverse of
    /// [`FlowGraph::external_names`].
    #[must_use]
    pub fn names_by_address(&self) -> BTreeMap<IpAddr, BTreeSet<&str>> {
        let mut out: BTreeMap<IpAddr, BTreeSet<&str>> = BTreeMap::new();
        for (name, addresses) in &self.external_names {
            for ip in addresses.keys() {
                out.entry(*ip).or_default().insert(name.as_str());
            }
        }
        out
    }

    /// Every node, workloads and external addresses, in order.
    #[must_use]
    pub fn nodes(&self) -> BTreeSet<NodeId> {
        let mut nodes: BTreeSet<NodeId> = self
            .workloads
            .keys()
            .cloned()
            .map(NodeId::Workload)
            .collect();
        for key in self.edges.keys() {
            nodes.insert(key.source.clone());
            nodes.insert(key.target.clone());
        }
        nodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_names_round_trip() {
        for p in [
            Protocol::Tcp,
            Protocol::Udp,
            Protocol::Sctp,
            Protocol::Icmp,
            Protocol::IcmpV6,
        ] {
            assert_eq!(p.as_str().parse::<Protocol>().unwrap(), p);
            assert_eq!(Protocol::from_number(p.number()), Some(p));
        }
        assert!("gre".parse::<Protocol>().is_err());
    }

    #[test]
    fn merge_keeps_earliest_first_and_latest_last() {
        let mut a = EdgeStats {
            packets: 1,
            bytes: 10,
            connections: 1,
            first_seen: 100,
            last_seen: 200,
            ..EdgeStats::default()
        };
        a.merge(&EdgeStats {
            packets: 2,
            bytes: 20,
            connections: 1,
            first_seen: 50,
            last_seen: 150,
            ..EdgeStats::default()
        });
        assert_eq!((a.packets, a.bytes, a.connections), (3, 30, 2));
        assert_eq!((a.first_seen, a.last_seen), (50, 200));
        let mut empty = EdgeStats::default();
        empty.merge(&a);
        assert_eq!(empty.first_seen, 50);
    }

    #[test]
    fn names_merge_per_address_and_invert() {
        let web = WorkloadRef::new("shop", WorkloadKind::Deployment, "web");
        let api = WorkloadRef::new("shop", WorkloadKind::Deployment, "api");
        let a: IpAddr = "203.0.113.10".parse().unwrap();
        let b: IpAddr = "203.0.113.11".parse().unwrap();
        let mut g = FlowGraph::default();
        g.name_address("api.payments.example", a, &web, 100, 200);
        g.name_address("api.payments.example", a, &web, 50, 150);
        let mut other = FlowGraph::default();
        other.name_address("api.payments.example", a, &api, 300, 400);
        other.name_address("api.payments.example", b, &web, 500, 600);
        other.name_address("cdn.example", b, &api, 500, 600);
        g.merge_names(&other.external_names);
        let seen = &g.external_names["api.payments.example"][&a];
        assert_eq!((seen.first_seen, seen.last_seen), (50, 400));
        assert_eq!(seen.workloads, BTreeSet::from([api.clone(), web.clone()]));
        assert_eq!(g.external_names["api.payments.example"].len(), 2);
        let by_address = g.names_by_address();
        assert_eq!(
            by_address[&b],
            BTreeSet::from(["api.payments.example", "cdn.example"])
        );
        assert_eq!(by_address[&a], BTreeSet::from(["api.payments.example"]));
    }

    #[test]
    fn workload_labels_are_intersected_across_pods() {
        let w = WorkloadRef::new("shop", WorkloadKind::Deployment, "web");
        let pod = |name: &str, hash: &str| PodMeta {
            namespace: "shop".into(),
            name: name.into(),
            labels: BTreeMap::from([
                ("app".into(), "web".into()),
                ("pod-template-hash".into(), hash.into()),
            ]),
            workload: w.clone(),
            ips: vec![],
        };
        let mut g = FlowGraph::default();
        g.add_pod(&pod("web-a", "1"));
        g.add_pod(&pod("web-b", "2"));
        let info = &g.workloads[&w];
        assert_eq!(info.labels.len(), 1);
        assert_eq!(info.pods.len(), 2);
    }
}
