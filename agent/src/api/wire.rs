//! The JSON the API serves, as types its server and its clients share:
//! the handlers build these, the CLI (and any other Rust client) reads
//! them back with the same types, so a field cannot drift between the two.
//!
//! Field names, order and absent-versus-null are the API's (docs/api.md);
//! changing a type here changes the API. Domain types that already have
//! their JSON form (a [`Mode`], a [`Protocol`], a NetworkPolicy, a health
//! [`Episode`]) are used as they are. Nothing here knows the server's
//! internals or the CLI: the handlers convert into these types.

use std::{collections::BTreeMap, net::IpAddr, str::FromStr};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::{Deserialize, Serialize};
use weir_generator::{
    cluster::{ClusterService, NamedPort},
    datapath::Mode,
    model::{ExternalNames, Protocol, VerdictCounts, WorkloadRef},
};

use crate::health::Episode;

// ---- `GET /api/flows` ----

/// One flow, as `/api/flows` and `weir observe -o json` give it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowJson {
    /// RFC 3339 with nanoseconds.
    pub time: String,
    /// `FORWARDED` (allowed, or observe mode), `AUDIT` (denied, passed) or
    /// `DROPPED`.
    pub verdict: String,
    /// `POLICY_DENIED` for a flow the policies deny (Hubble's drop reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_reason_desc: Option<String>,
    /// Addresses.
    #[serde(rename = "IP")]
    pub ip: IpJson,
    /// Transport details.
    pub l4: L4Json,
    /// The initiator.
    pub source: EndpointJson,
    /// The responder.
    pub destination: EndpointJson,
    /// DNS names the initiator's address had for the reporting pod when the
    /// flow began (Hubble's `source_names`: a peer outside the cluster that
    /// opened the flow).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_names: Vec<String>,
    /// DNS names the responder's address had for the reporting pod when
    /// the flow began: what the pod looked up before connecting (Hubble's
    /// `destination_names`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_names: Vec<String>,
    /// `L3_L4`, or `L7` for a record of a DNS answer ([`FlowJson::l7`]).
    #[serde(rename = "Type")]
    pub kind: String,
    /// Hubble's `l7` for a DNS answer a pod got, on the query's flow (weir
    /// reports NXDOMAIN answers this way: a name that did not exist has no
    /// later flow to carry it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l7: Option<L7Json>,
    /// The node that saw the flow.
    pub node_name: String,
    /// `EGRESS`, `INGRESS` or `TRAFFIC_DIRECTION_UNKNOWN`.
    pub traffic_direction: String,
    /// False for a flow oriented by its initiator; absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_reply: Option<bool>,
    /// One line for humans, as Hubble's `Summary`.
    #[serde(rename = "Summary", default)]
    pub summary: String,
    /// weir's extras.
    #[serde(default)]
    pub weir: WeirJson,
}

/// Hubble's `Layer7`, as far as weir fills it: a DNS response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct L7Json {
    /// `RESPONSE`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The answer.
    pub dns: DnsJson,
}

/// Hubble's `DNS`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsJson {
    /// The name asked, fully qualified (with the root's dot, as Hubble has
    /// it).
    pub query: String,
    /// The response code (3: NXDOMAIN).
    pub rcode: u16,
}

/// Hubble's `IP`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpJson {
    /// The initiator's address.
    pub source: IpAddr,
    /// The responder's address.
    pub destination: IpAddr,
    /// `IPv4` or `IPv6`.
    #[serde(rename = "ipVersion")]
    pub ip_version: String,
}

/// Hubble's `l4`: one key naming the protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum L4Json {
    /// TCP.
    #[serde(rename = "TCP")]
    Tcp(TcpJson),
    /// UDP.
    #[serde(rename = "UDP")]
    Udp(PortsJson),
    /// SCTP.
    #[serde(rename = "SCTP")]
    Sctp(PortsJson),
    /// ICMP for IPv4.
    #[serde(rename = "ICMPv4")]
    Icmp(IcmpJson),
    /// ICMP for IPv6.
    #[serde(rename = "ICMPv6")]
    IcmpV6(IcmpJson),
}

/// Ports of a UDP or SCTP flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortsJson {
    /// The initiator's port.
    pub source_port: u16,
    /// The responder's port.
    pub destination_port: u16,
}

/// Ports and flags of a TCP flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpJson {
    /// The initiator's port.
    pub source_port: u16,
    /// The responder's port.
    pub destination_port: u16,
    /// Flags seen so far, both directions, as Hubble's `{"SYN": true}`.
    #[serde(default)]
    pub flags: BTreeMap<String, bool>,
}

/// ICMP type and code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IcmpJson {
    /// ICMP type.
    #[serde(rename = "type")]
    pub kind: u8,
    /// ICMP code.
    pub code: u8,
}

/// Hubble's `Endpoint`, as far as weir knows it: empty for an address
/// outside the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointJson {
    /// The pod's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The pod's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// `k8s:key=value`, sorted, as Cilium writes pod labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// The pod's workload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<WorkloadJson>,
}

/// Hubble's `Workload`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadJson {
    /// Name of the top owner.
    pub name: String,
    /// Its kind (`Deployment`, ...).
    pub kind: String,
}

/// weir's extras.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeirJson {
    /// Packets in this report, both directions.
    pub packets: u64,
    /// Bytes in this report, both directions.
    pub bytes: u64,
    /// `local`, `remote` or `unknown`, seen from the reporting endpoint.
    pub initiator: String,
    /// The reporting endpoint.
    pub endpoint: EndpointRefJson,
    /// The flow's first report.
    pub new_flow: bool,
    /// The flow's last report.
    pub closed: bool,
    /// The flow's first packet, RFC 3339 (offline learning replays the
    /// counters an edge had live).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<String>,
    /// The flow's last packet as of this report, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// Why the policies deny the flow (audit and dropped flows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyJson>,
    /// The node of the peer (the end that is not `endpoint`), when the
    /// agent's source knows it: with `initiator: remote` and another node
    /// here, that node's agent reports the same connection from the
    /// initiator's side, and a relay shows that report only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_node: Option<String>,
    /// The record's number in its agent's stream (increasing; a restarted
    /// agent continues above): `/api/flows?after=SEQ` resumes after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// Why a flow was denied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyJson {
    /// `default-deny`, `peer-not-allowed` or `port-not-allowed`.
    pub reason: String,
    /// `INGRESS` or `EGRESS`: the direction that was checked, seen from the
    /// reporting endpoint's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// The policies (`namespace/name`) that isolate the pod in that
    /// direction: none of their rules allows the flow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
}

/// The veth that reported a flow, and its pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRefJson {
    /// Interface index of the host-side veth.
    pub ifindex: u32,
    /// `namespace/pod`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

/// The line a `follow` stream of `/api/flows` sends in place of the
/// records a slow reader missed (Hubble's `lost_events`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostJson {
    /// What was lost.
    pub lost_events: LostEventsJson,
}

/// How many records a follower missed, and where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostEventsJson {
    /// Records skipped.
    pub num_events_lost: u64,
    /// `WEIR_FOLLOW_BUFFER`: the agent's buffer of recent records.
    pub source: String,
}

// ---- `GET /api/graph` and `GET /api/events` ----

/// The whole graph.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphJson {
    /// Grows whenever the graph changes (the `graph` events carry it).
    #[serde(default)]
    pub version: u64,
    /// When this answer was made, RFC 3339.
    #[serde(default)]
    pub generated_at: String,
    /// Workloads first, then external addresses, each in order.
    pub nodes: Vec<NodeJson>,
    /// Ordered by source, then target.
    pub edges: Vec<EdgeJson>,
    /// Connections are missing for some time of the window: the flow
    /// table was full (`degraded` says when and how many).
    #[serde(default)]
    pub incomplete: bool,
    /// Losses during the window: a full flow table (connections missing)
    /// or ring buffer (flows found later), each with its time.
    #[serde(default)]
    pub degraded: Vec<Episode>,
}

/// A node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeJson {
    /// `namespace/workload`, or the address.
    pub id: String,
    /// `workload` or `external`.
    pub kind: String,
    /// The namespace, or `external`: what the UI groups nodes by.
    #[serde(default)]
    pub group: String,
    /// A short display name: the workload's name, or for an external
    /// address a host name when one is known, else the address.
    #[serde(default)]
    pub name: String,
    /// The mode of a workload's namespace (null for external nodes).
    #[serde(default)]
    pub mode: Option<Mode>,
    /// The workload's namespace (null for external nodes).
    pub namespace: Option<String>,
    /// The workload's name (null for external nodes).
    pub workload: Option<String>,
    /// Labels common to the workload's pods.
    pub labels: BTreeMap<String, String>,
    /// Pods seen, by name.
    pub pods: Vec<String>,
    /// For a node standing for a DNS name (its id is the name): every
    /// address flows carried the name for, with when; absent otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<NameAddressJson>,
}

/// An address of a DNS name's node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameAddressJson {
    /// The address.
    pub address: IpAddr,
    /// First packet of a flow that carried the name to or from it, RFC 3339.
    pub first_seen: String,
    /// Last packet of such a flow, RFC 3339.
    pub last_seen: String,
}

/// The worst verdict seen on an edge or port: dropped > audit > forwarded.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum EdgeVerdict {
    /// Allowed, or not judged.
    #[default]
    Forwarded,
    /// Denied by the policies, let through (audit mode).
    Audit,
    /// Denied and dropped (enforce mode).
    Dropped,
}

impl FromStr for EdgeVerdict {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "forwarded" => Ok(Self::Forwarded),
            "audit" => Ok(Self::Audit),
            "dropped" => Ok(Self::Dropped),
            _ => Err(format!("{s:?}: expected forwarded, audit or dropped")),
        }
    }
}

/// Connections from one node to another, over every port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeJson {
    /// `SOURCE->TARGET`.
    #[serde(default)]
    pub id: String,
    /// Initiator's node id.
    pub source: String,
    /// Responder's node id.
    pub target: String,
    /// The worst verdict of its ports.
    #[serde(default)]
    pub verdict: EdgeVerdict,
    /// Destination ports, sorted.
    pub ports: Vec<PortJson>,
    /// Packets, both directions, all ports.
    pub packets: u64,
    /// Bytes, both directions, all ports.
    pub bytes: u64,
    /// Connections opened.
    pub connections: u64,
    /// RFC 3339.
    pub first_seen: String,
    /// RFC 3339.
    pub last_seen: String,
}

/// A destination port of an edge with its counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortJson {
    /// Port number (0 for ICMP).
    pub port: u16,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Connections opened.
    #[serde(default)]
    pub connections: u64,
    /// Packets, both directions.
    #[serde(default)]
    pub packets: u64,
    /// Bytes, both directions.
    #[serde(default)]
    pub bytes: u64,
    /// RFC 3339.
    #[serde(default)]
    pub first_seen: String,
    /// RFC 3339.
    #[serde(default)]
    pub last_seen: String,
    /// Connections by verdict.
    #[serde(default)]
    pub verdicts: VerdictCounts,
}

// ---- `GET /api/edge` and `GET /api/node` ----

/// One direction's check of a port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionCheck {
    /// `allowed`, `denied`, `not-isolated` (no policy selects the pod for
    /// this direction) or `not-applicable` (that end is outside the
    /// cluster).
    pub verdict: String,
    /// The mode of the namespace that checks this direction (null outside
    /// the cluster).
    pub mode: Option<Mode>,
    /// What the datapath does with it in that mode: `forwarded`, `audit`
    /// or `dropped`.
    pub effect: EdgeVerdict,
    /// The policies whose rules allow it (`namespace/name`).
    pub allowed_by: Vec<String>,
    /// Those rules (`namespace/name spec.ingress[0]`).
    pub rules: Vec<String>,
    /// Why it is denied: `default-deny`, `peer-not-allowed`,
    /// `port-not-allowed`.
    pub reason: Option<String>,
    /// The policies that isolate the pod in this direction.
    pub isolated_by: Vec<String>,
}

/// The enforced policies' verdict on one port of an edge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortPolicy {
    /// Port number (0 for ICMP).
    pub port: u16,
    /// Transport protocol.
    pub protocol: Protocol,
    /// `allowed` when both directions allow it, else `denied`.
    pub verdict: String,
    /// What the datapath does now, given the modes: the worse of the two
    /// directions' effects.
    pub effect: EdgeVerdict,
    /// The source pod's egress.
    pub egress: DirectionCheck,
    /// The target pod's ingress.
    pub ingress: DirectionCheck,
}

/// `GET /api/edge`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeDetails {
    /// `SOURCE->TARGET`.
    pub id: String,
    /// Initiator's node id.
    pub source: String,
    /// Responder's node id.
    pub target: String,
    /// The worst verdict seen.
    pub verdict: EdgeVerdict,
    /// Destination ports with their counters, sorted.
    pub ports: Vec<PortJson>,
    /// The source workload's pods seen (empty for an address).
    pub source_pods: Vec<String>,
    /// The target workload's pods seen.
    pub target_pods: Vec<String>,
    /// The edge's last flow records, newest first.
    pub recent_flows: Vec<FlowJson>,
    /// Per port, what the enforced policies say.
    pub policy: Vec<PortPolicy>,
}

/// A pod of a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodJson {
    /// The pod's name.
    pub name: String,
    /// Its addresses (empty for a pod the cluster no longer has).
    pub ips: Vec<IpAddr>,
    /// Its labels (the workload's common labels for a pod the cluster no
    /// longer has).
    pub labels: BTreeMap<String, String>,
}

/// A port a node served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServedPort {
    /// Port number (0 for ICMP).
    pub port: u16,
    /// Transport protocol.
    pub protocol: Protocol,
}

/// An edge seen from one of its nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEdge {
    /// `SOURCE->TARGET`.
    pub id: String,
    /// The node at the other end.
    pub peer: String,
    /// Its ports.
    pub ports: Vec<ServedPort>,
    /// The worst verdict seen.
    pub verdict: EdgeVerdict,
    /// Connections opened.
    pub connections: u64,
}

/// `GET /api/node`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDetails {
    /// The graph's node (id, kind, group, name, namespace, workload,
    /// labels, mode; `pods` here are objects).
    #[serde(flatten)]
    pub node: NodeSummary,
    /// The pods, with addresses and labels.
    pub pods: Vec<PodJson>,
    /// Ports other nodes opened connections to, sorted.
    pub ports_served: Vec<ServedPort>,
    /// Edges into the node.
    pub edges_in: Vec<NodeEdge>,
    /// Edges out of the node.
    pub edges_out: Vec<NodeEdge>,
}

/// A node without its pods' names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSummary {
    /// `namespace/workload`, or the address.
    pub id: String,
    /// `workload` or `external`.
    pub kind: String,
    /// The namespace, or `external`.
    pub group: String,
    /// Short display name.
    pub name: String,
    /// The workload's namespace (null for external nodes).
    pub namespace: Option<String>,
    /// The workload's name (null for external nodes).
    pub workload: Option<String>,
    /// The workload's kind (`Deployment`, ...; null for external nodes).
    pub workload_kind: Option<String>,
    /// Labels common to the workload's pods.
    pub labels: BTreeMap<String, String>,
    /// The mode of a workload's namespace.
    pub mode: Option<Mode>,
}

/// The data of a `graph` event of `GET /api/events`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphEvent {
    /// The graph's version (as `/api/graph` gives it).
    pub version: u64,
    /// Nodes in the unfiltered graph.
    pub nodes: usize,
    /// Edges (source, target pairs) in the unfiltered graph.
    pub edges: usize,
}

// ---- `GET /api/v1/contribution`: what a relay reads of a node ----

/// The format of [`ContributionJson`]; a relay refuses one it does not
/// know.
pub const CONTRIBUTION_FORMAT: u32 = 1;

/// One node's learned graph, every edge by the side(s) the node saw it
/// from, for a relay merging several nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContributionJson {
    /// [`CONTRIBUTION_FORMAT`].
    pub format: u32,
    /// The node's name.
    pub node: String,
    /// The graph store's identity, 16 hex digits: a new one means the
    /// store was wiped or replaced, and what the relay held of the node
    /// is to be replaced, not merged with.
    pub epoch: String,
    /// This run of the agent, 16 hex digits: `version` restarts with it.
    pub instance: String,
    /// Grows whenever the graph changes, within one `instance`.
    pub version: u64,
    /// When this answer was made, RFC 3339.
    pub generated_at: String,
    /// The workloads of the graph, in order.
    pub workloads: Vec<ContributedWorkloadJson>,
    /// The learned edges (forwarded and audited), in order.
    pub edges: Vec<ContributedEdgeJson>,
    /// Connections the datapath dropped, by the edge they would have made.
    pub drops: Vec<ContributedEdgeJson>,
    /// Every namespace the node knows, with its labels: the relay builds
    /// the cluster the generator selects in from the contributions.
    #[serde(default)]
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// The pods this node answers for: those running on it, and those
    /// whose node the source does not know.
    #[serde(default)]
    pub pods: Vec<ContributedPodJson>,
    /// The ClusterIP Services the node knows.
    #[serde(default)]
    pub services: Vec<ClusterService>,
    /// The DNS names flows carried for external addresses, by name and
    /// address ([`FlowGraph::external_names`](weir_generator::model::FlowGraph::external_names));
    /// absent from agents that keep none.
    #[serde(default, skip_serializing_if = "ExternalNames::is_empty")]
    pub external_names: ExternalNames,
}

/// A pod as the generator needs it: what policies select and match on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContributedPodJson {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The workload it belongs to.
    pub workload: WorkloadRef,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its addresses.
    pub ips: Vec<IpAddr>,
    /// Its declared container ports (policies may name them).
    pub ports: Vec<NamedPort>,
}

/// A workload with what the node knows of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContributedWorkloadJson {
    /// Which workload.
    pub workload: WorkloadRef,
    /// Labels common to its pods seen here.
    pub labels: BTreeMap<String, String>,
    /// Its pods seen here, by name.
    pub pods: Vec<String>,
}

/// An end of an edge: a workload, or an address outside the cluster.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeEndJson {
    /// A workload.
    Workload(WorkloadRef),
    /// An address no pod holds.
    External(IpAddr),
}

/// An edge (initiator -> responder, protocol, destination port) with its
/// counters by side. Its sides add up to what the node counted of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContributedEdgeJson {
    /// The initiator.
    pub source: EdgeEndJson,
    /// The responder.
    pub target: EdgeEndJson,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Destination port (0 for ICMP).
    pub port: u16,
    /// By side, in order.
    pub sides: Vec<SideJson>,
}

/// Which end(s) of a connection the node saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeenFromJson {
    /// The node hosts the initiator (egress); the responder is elsewhere.
    Initiator,
    /// The node hosts the responder (ingress); the initiator is elsewhere.
    Responder,
    /// Both ends are on the node.
    Both,
    /// Counted before the node kept sides (restored from an older store).
    Unknown,
}

/// An edge's counters from one side. A relay merges on (edge,
/// `initiator_node`, `responder_node`): a connection seen from both its
/// nodes is counted once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideJson {
    /// Which end(s) the node saw.
    pub seen_from: SeenFromJson,
    /// The initiator's node: this node for `initiator` and `both`, the
    /// peer's node for `responder` when the source knows it, else null.
    pub initiator_node: Option<String>,
    /// The responder's node, likewise.
    pub responder_node: Option<String>,
    /// Connections opened.
    pub connections: u64,
    /// Packets, both directions.
    pub packets: u64,
    /// Bytes, both directions.
    pub bytes: u64,
    /// Unix nanoseconds.
    pub first_seen_ns: u64,
    /// Unix nanoseconds.
    pub last_seen_ns: u64,
    /// Connections by verdict: egress judged at the initiator's node,
    /// ingress at the responder's (`both` counts the two).
    pub verdicts: VerdictCounts,
}

// ---- the relay: `GET /api/v1/coverage` and every answer's `coverage` ----

/// How much of the cluster a relay's answer covers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoverageJson {
    /// How many agents there should be.
    pub expected: usize,
    /// How many of them the relay holds a current contribution of.
    pub synced: usize,
    /// Nodes whose last contribution is kept but not current (their agent
    /// is unreachable, or the node was deleted), in order.
    pub stale: Vec<String>,
    /// Every node the relay knows of, in order.
    pub nodes: Vec<NodeCoverageJson>,
}

/// One node as the relay holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCoverageJson {
    /// The node's name.
    pub node: String,
    /// `synced`, `stale` (kept, not current), `pending` (never read) or
    /// `deleted` (gone from discovery, kept for the retention).
    pub state: NodeState,
    /// The epoch of the contribution held, or null.
    pub epoch: Option<String>,
    /// The version of the contribution held, or null.
    pub version: Option<u64>,
    /// When the agent last answered, RFC 3339, or null.
    pub last_sync: Option<String>,
    /// Why the last read failed, or null.
    pub error: Option<String>,
}

/// The state of a node at the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// The relay holds the agent's current contribution.
    Synced,
    /// The last contribution is kept; the agent did not answer since.
    Stale,
    /// Never read yet.
    Pending,
    /// Gone from discovery; its last contribution is kept for the
    /// retention.
    Deleted,
}

// ---- the enforcer: `/api/modes`, `/api/policies/enforced` ----

/// Every namespace's mode at one moment: `GET /api/modes`, the answer of
/// `PUT /api/modes/{namespace}` and the data of a `modes` event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Modes {
    /// Namespace -> mode, as set.
    pub modes: BTreeMap<String, Mode>,
    /// The mode of every other namespace.
    pub default_mode: Mode,
    /// Namespaces the guard watches since their flip to enforce.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub guarded: BTreeMap<String, GuardWindowJson>,
    /// Namespaces the guard set back to audit, and why (until they are set
    /// to enforce again).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reverted: BTreeMap<String, RevertedJson>,
    /// Namespaces promoted automatically (`weir.dev/promote: auto`): their
    /// next step and when.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub promotion: BTreeMap<String, PromotionJson>,
}

/// A namespace's automatic promotion: `GET /api/modes`' `promotion`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotionJson {
    /// The mode it goes to next; none once enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Mode>,
    /// When, RFC 3339, if nothing is marked as would-drop until then; none
    /// when it waits for readiness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// What it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// The audit period, seconds.
    pub after_seconds: u64,
    /// The last automatic promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<PromotedJson>,
    /// One sentence saying all of it, as `weir status` and the UI show it.
    pub message: String,
}

/// An automatic promotion made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotedJson {
    /// The mode before.
    pub from: Mode,
    /// The mode after.
    pub to: Mode,
    /// When, RFC 3339.
    pub time: String,
}

/// A namespace's guard window: `GET /api/modes`' `guarded`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardWindowJson {
    /// When the namespace went to enforce, RFC 3339.
    pub since: String,
    /// When the window closes, RFC 3339.
    pub until: String,
    /// Distinct learned edges dropped that make the revert.
    pub max_drops: u32,
    /// Edges learned before the flip.
    pub learned_edges: usize,
    /// Those dropped since (`src -> dst PROTO/PORT`).
    pub dropped_edges: Vec<String>,
}

/// A revert by the guard: `GET /api/modes`' `reverted`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevertedJson {
    /// When, RFC 3339.
    pub time: String,
    /// `reverted to audit at TIME because REASON`, as every report says it.
    pub message: String,
    /// Why.
    pub reason: String,
    /// The learned edges dropped.
    pub edges: Vec<String>,
    /// The policies that isolated them.
    pub policies: Vec<String>,
}

impl Modes {
    /// The mode of `namespace`.
    #[must_use]
    pub fn of(&self, namespace: &str) -> Mode {
        self.modes
            .get(namespace)
            .copied()
            .unwrap_or(self.default_mode)
    }
}

/// What is enforced: `GET /api/policies/enforced` (JSON).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Enforced {
    /// The enforced policies, by namespace and name.
    pub policies: Vec<NetworkPolicy>,
    /// Namespace -> mode, as set.
    pub modes: BTreeMap<String, Mode>,
    /// The mode of every other namespace.
    pub default_mode: Mode,
    /// Entries per map.
    pub entries: BTreeMap<String, usize>,
    /// Capacity per map.
    pub limits: BTreeMap<String, usize>,
    /// Whether the maps reflect the policies (the pod source was read).
    pub ready: bool,
    /// Why the pinned maps are kept as they are instead of what is
    /// desired; absent when they are not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

impl Enforced {
    /// The modes alone.
    #[must_use]
    pub fn modes(&self) -> Modes {
        Modes {
            modes: self.modes.clone(),
            default_mode: self.default_mode,
            ..Modes::default()
        }
    }
}

/// What `POST /api/policies/enforced` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The policies of the request, `namespace/name`.
    pub applied: Vec<String>,
    /// Namespaces whose previous policies were removed first.
    pub replaced_namespaces: Vec<String>,
    /// Map writes done.
    pub writes: usize,
    /// Entries per map afterwards.
    pub entries: BTreeMap<String, usize>,
}

/// What `DELETE /api/policies/enforced/{namespace}/{name}` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    /// The policy, `namespace/name`.
    pub deleted: String,
    /// Entries per map afterwards.
    pub entries: BTreeMap<String, usize>,
    /// Map writes done.
    pub writes: usize,
}

/// `GET /api/pending`: the would-have-dropped queue.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingQueue {
    /// Edges the enforced policies deny and nobody decided on, most
    /// recently seen first.
    pub entries: Vec<PendingEdge>,
    /// How long a rejected edge stays out of the queue, seconds.
    pub reject_window_seconds: u64,
}

/// One edge of the queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEdge {
    /// `SOURCE->TARGET:PORT/PROTOCOL`: what approve and reject name.
    pub id: String,
    /// Initiator's node id.
    pub source: String,
    /// Responder's node id.
    pub target: String,
    /// Destination port.
    pub port: u16,
    /// Transport protocol.
    pub protocol: Protocol,
    /// The namespaces whose policies deny it (one per denying side).
    pub namespaces: Vec<String>,
    /// When the queue first saw it marked or dropped (RFC 3339).
    pub first_seen: String,
    /// Its last packet when its counts last grew (RFC 3339).
    pub last_seen: String,
    /// Connections let through with an audit verdict.
    pub audit: u64,
    /// Connections dropped.
    pub dropped: u64,
    /// The denying sides.
    pub denied: Vec<PendingDenial>,
    /// The policies that would allow it (`namespace/name`), one per
    /// denying side; empty when `no_rule` says why there are none.
    pub policies: Vec<String>,
    /// Those policies as a YAML stream.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rule: String,
    /// Why no policy can allow it (ICMP, a workload gone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_rule: Option<String>,
}

/// A side that denies a queued edge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDenial {
    /// `egress` (at the source) or `ingress` (at the target).
    pub direction: String,
    /// That side's namespace.
    pub namespace: String,
    /// `default-deny`, `peer-not-allowed` or `port-not-allowed`.
    pub reason: String,
    /// The policies isolating that side.
    pub isolated_by: Vec<String>,
}

/// `GET /api/pending/preview`: what approving edges would write.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingPreview {
    /// The edges.
    pub edges: Vec<String>,
    /// The policies written (`namespace/name`), all new.
    pub policies: Vec<String>,
    /// Them as a YAML stream, as `kubectl apply -f` and server-side apply
    /// take them.
    pub yaml: String,
    /// Unified diff of the enforced policies of the namespaces concerned,
    /// before and after.
    pub diff: String,
}

/// The body of `POST /api/pending/approve` and `POST /api/pending/reject`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingDecisionBody {
    /// Edge ids, as the queue lists them.
    pub edges: Vec<String>,
    /// Approve only: the policies were written elsewhere (server-side
    /// apply to the cluster, whose policies the agents follow); record the
    /// decision and write nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub record_only: bool,
}

/// The answer to an approve or a reject.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDecided {
    /// `approved` or `rejected`.
    pub decision: String,
    /// The edges.
    pub edges: Vec<String>,
    /// The policies enforced (`namespace/name`; approve only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    /// Map writes it took (approve only).
    #[serde(default)]
    pub writes: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `value` as JSON, read back with its own type.
    fn round_trip<T>(value: &T) -> String
    where
        T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let text = serde_json::to_string(value).unwrap();
        assert_eq!(&serde_json::from_str::<T>(&text).unwrap(), value, "{text}");
        text
    }

    #[test]
    fn a_contribution_reads_back_as_it_was_written() {
        let side = SideJson {
            seen_from: SeenFromJson::Initiator,
            initiator_node: Some("node-1".to_owned()),
            responder_node: None,
            connections: 2,
            packets: 8,
            bytes: 480,
            first_seen_ns: 1_700_000_000_000_000_000,
            last_seen_ns: 1_700_000_001_000_000_000,
            verdicts: VerdictCounts {
                forwarded: 1,
                audit: 1,
                dropped: 0,
            },
        };
        let web = WorkloadRef::new(
            "shop",
            weir_generator::model::WorkloadKind::Deployment,
            "web",
        );
        let contribution = ContributionJson {
            format: CONTRIBUTION_FORMAT,
            node: "node-1".to_owned(),
            epoch: "00000000000000ff".to_owned(),
            instance: "0000000000000001".to_owned(),
            version: 7,
            generated_at: "2026-01-01T00:00:00.000000000Z".to_owned(),
            workloads: vec![ContributedWorkloadJson {
                workload: web.clone(),
                labels: BTreeMap::from([("app".to_owned(), "web".to_owned())]),
                pods: vec!["web-1".to_owned()],
            }],
            external_names: ExternalNames::new(),
            edges: vec![ContributedEdgeJson {
                source: EdgeEndJson::Workload(web),
                target: EdgeEndJson::External("203.0.113.7".parse().unwrap()),
                protocol: Protocol::Tcp,
                port: 443,
                sides: vec![side.clone()],
            }],
            drops: Vec::new(),
            namespaces: BTreeMap::new(),
            pods: Vec::new(),
            services: Vec::new(),
        };
        let text = round_trip(&contribution);
        // A contribution of a weir without namespaces, pods and services
        // still reads.
        let mut older: serde_json::Value = serde_json::from_str(&text).unwrap();
        for field in ["namespaces", "pods", "services"] {
            older.as_object_mut().unwrap().remove(field);
        }
        assert_eq!(
            serde_json::from_value::<ContributionJson>(older).unwrap(),
            contribution
        );
        assert!(
            text.contains(r#""source":{"workload":{"namespace":"shop","kind":"Deployment","name":"web"}},"target":{"external":"203.0.113.7"}"#),
            "{text}"
        );
        assert!(round_trip(&side).starts_with(
            r#"{"seen_from":"initiator","initiator_node":"node-1","responder_node":null,"#
        ));
    }

    #[test]
    fn a_held_enforcer_says_why_and_a_free_one_omits_the_field() {
        let mut enforced = Enforced {
            modes: BTreeMap::from([("shop".to_owned(), Mode::Audit)]),
            entries: BTreeMap::from([("POLICY".to_owned(), 2)]),
            limits: BTreeMap::from([("POLICY".to_owned(), 10)]),
            ready: true,
            ..Enforced::default()
        };
        assert_eq!(
            round_trip(&enforced),
            r#"{"policies":[],"modes":{"shop":"audit"},"default_mode":"observe","entries":{"POLICY":2},"limits":{"POLICY":10},"ready":true}"#
        );
        enforced.held = Some("enforce.json is gone".to_owned());
        assert!(round_trip(&enforced).ends_with(r#""ready":true,"held":"enforce.json is gone"}"#));
        assert_eq!(enforced.modes().of("shop"), Mode::Audit);
        assert_eq!(enforced.modes().of("other"), Mode::Observe);
    }

    #[test]
    fn a_lost_line_reads_back() {
        let lost = LostJson {
            lost_events: LostEventsJson {
                num_events_lost: 3,
                source: "WEIR_FOLLOW_BUFFER".to_owned(),
            },
        };
        assert_eq!(
            round_trip(&lost),
            r#"{"lost_events":{"num_events_lost":3,"source":"WEIR_FOLLOW_BUFFER"}}"#
        );
    }

    #[test]
    fn graph_events_read_back() {
        let event = GraphEvent {
            version: 7,
            nodes: 3,
            edges: 2,
        };
        assert_eq!(round_trip(&event), r#"{"version":7,"nodes":3,"edges":2}"#);
    }
}

// ---- `GET /api/audit` ----

/// The header a client names its user with, recorded as the audit log's
/// `who` (`weir` sends `$USER`, the UI `ui`).
pub const ACTOR_HEADER: &str = "x-weir-actor";

/// `GET /api/audit`: the audit log's entries, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Audit {
    /// The entries the query selects.
    pub entries: Vec<AuditEntryJson>,
}

/// One decision of the audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntryJson {
    /// Its number in the log, from 1.
    pub seq: u64,
    /// When, RFC 3339 with nanoseconds.
    pub time: String,
    /// Who: the client's `X-Weir-Actor` (else `api`), or `guard`, `promoter`.
    pub who: String,
    /// `revert`, `approve`, `reject`, `promote` or `mode-change`.
    pub kind: crate::audit::Kind,
    /// The namespace, when it is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// What was decided.
    pub what: String,
    /// Why, and the rest.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

impl From<&crate::audit::Entry> for AuditEntryJson {
    fn from(entry: &crate::audit::Entry) -> Self {
        Self {
            seq: entry.seq,
            time: crate::timestamp::rfc3339(entry.at),
            who: entry.who.clone(),
            kind: entry.kind,
            namespace: entry.namespace.clone(),
            what: entry.what.clone(),
            details: entry.details.clone(),
        }
    }
}
