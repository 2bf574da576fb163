//! Rust mirrors of the kernel/user ABI in `bpf/abi.h`.
//!
//! Keep in sync with bpf/abi.h: that header is the single source of truth.
//! Every struct here carries compile-time size and offset asserts, and a test
//! (`tests/btf.rs`) compares them with the BTF of the compiled object, so a
//! change on one side only fails the build or the tests.
//!
//! No dependencies beyond `aya::Pod` and `std`: the agent, the tests and any
//! tool that decodes recorded events can use these types as plain data.

use std::{
    fmt,
    mem::{offset_of, size_of},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// `WEIR_ABI_VERSION`: bumped on any incompatible change of an event layout.
pub const ABI_VERSION: u16 = 3;

/// `WEIR_FAMILY_IPV4`: [`FlowKey::family`] of an IPv4 flow.
pub const FAMILY_IPV4: u8 = 4;
/// `WEIR_FAMILY_IPV6`: [`FlowKey::family`] of an IPv6 flow.
pub const FAMILY_IPV6: u8 = 6;

/// `WEIR_INITIATOR_UNKNOWN`: nobody is known to have opened the flow.
pub const INITIATOR_UNKNOWN: u8 = 0;
/// `WEIR_INITIATOR_LOCAL`: the pod behind the endpoint opened the flow.
pub const INITIATOR_LOCAL: u8 = 1;
/// `WEIR_INITIATOR_REMOTE`: the peer opened the flow.
pub const INITIATOR_REMOTE: u8 = 2;

/// `WEIR_FLOW_F_INITIATOR_GUESSED`: no SYN was seen, the first packet decided.
pub const FLOW_F_INITIATOR_GUESSED: u8 = 0x01;
/// `WEIR_FLOW_F_ANNOUNCED`: a ring-buffer event was emitted for the entry.
pub const FLOW_F_ANNOUNCED: u8 = 0x02;
/// `WEIR_FLOW_F_CLOSING`: a TCP FIN or RST was seen.
pub const FLOW_F_CLOSING: u8 = 0x04;

/// `WEIR_EVENT_NEW_FLOW`: [`FlowEvent::kind`] announcing a new flow entry.
pub const EVENT_NEW_FLOW: u8 = 1;
/// `WEIR_EVENT_DNS`: [`DnsEvent::kind`], a DNS answer a pod received.
pub const EVENT_DNS: u8 = 2;

/// `WEIR_DNS_PAYLOAD_MAX`: bytes of a DNS message a [`DnsEvent`] carries.
pub const DNS_PAYLOAD_MAX: usize = 512;
/// `WEIR_DNS_UDP`: [`DnsEvent::transport`] of an answer over UDP.
pub const DNS_UDP: u8 = 0;
/// `WEIR_DNS_TCP`: [`DnsEvent::transport`] of an answer in one TCP segment.
pub const DNS_TCP: u8 = 1;

/// `WEIR_CNT_PACKETS`: packets seen by the programs.
pub const CNT_PACKETS: usize = 0;
/// `WEIR_CNT_NEW_FLOWS`: flow table entries created.
pub const CNT_NEW_FLOWS: usize = 1;
/// `WEIR_CNT_RINGBUF_FULL`: new-flow events lost because the ring buffer was full.
pub const CNT_RINGBUF_FULL: usize = 2;
/// `WEIR_CNT_TABLE_FULL`: flows not tracked because the flow table was full.
pub const CNT_TABLE_FULL: usize = 3;
/// `WEIR_CNT_PARSE_ERROR`: truncated or malformed headers.
pub const CNT_PARSE_ERROR: usize = 4;
/// `WEIR_CNT_NON_IP`: frames that are not IPv4/IPv6 (ARP, LLDP, ...).
pub const CNT_NON_IP: usize = 5;
/// `WEIR_CNT_FRAGMENT`: non-first IP fragments (no L4 header, not tracked).
pub const CNT_FRAGMENT: usize = 6;
/// `WEIR_CNT_UNSUPPORTED_L4`: IP protocols other than TCP/UDP/SCTP/ICMP.
pub const CNT_UNSUPPORTED_L4: usize = 7;
/// `WEIR_CNT_ICMP_CONTROL`: ICMP other than echo (errors, ND, MLD): not flows.
pub const CNT_ICMP_CONTROL: usize = 8;
/// `WEIR_CNT_DROPPED`: packets dropped by enforcement.
pub const CNT_DROPPED: usize = 9;
/// `WEIR_CNT_AUDIT`: packets that enforcement would have dropped (audit mode).
pub const CNT_AUDIT: usize = 10;
/// `WEIR_CNT_EVENTS_LIMITED`: verdict events suppressed by the rate limit.
pub const CNT_EVENTS_LIMITED: usize = 11;
/// `WEIR_CNT_DNS_ANSWERS`: DNS answers to pods copied to the ring buffer.
pub const CNT_DNS_ANSWERS: usize = 12;
/// `WEIR_CNT_DNS_LIMITED`: DNS answers not copied because of the rate limit.
pub const CNT_DNS_LIMITED: usize = 13;
/// `WEIR_CNT_DNS_RINGBUF_FULL`: DNS answers not copied: the ring buffer was full.
pub const CNT_DNS_RINGBUF_FULL: usize = 14;
/// `WEIR_CNT_DNS_TRUNCATED`: DNS answers longer than [`DNS_PAYLOAD_MAX`] (cut).
pub const CNT_DNS_TRUNCATED: usize = 15;
/// `WEIR_CNT_DNS_SKIPPED`: TCP segments from port 53 that are not one whole answer.
pub const CNT_DNS_SKIPPED: usize = 16;
/// `WEIR_CNT_MAX`: number of counters.
pub const CNT_MAX: usize = 17;

/// Counter names, indexed by `CNT_*`, for metrics and logs (a fixed set).
pub const COUNTER_NAMES: [&str; CNT_MAX] = [
    "packets",
    "new_flows",
    "ringbuf_full",
    "table_full",
    "parse_error",
    "non_ip",
    "fragment",
    "unsupported_l4",
    "icmp_control",
    "dropped",
    "audit",
    "events_limited",
    "dns_answers",
    "dns_limited",
    "dns_ringbuf_full",
    "dns_truncated",
    "dns_skipped",
];

/// `WEIR_MODE_OBSERVE`: [`EndpointInfo::mode`] of a namespace that is only
/// observed: nothing is judged.
pub const MODE_OBSERVE: u8 = 0;
/// `WEIR_MODE_AUDIT`: flows are judged; denied ones pass with
/// [`VERDICT_AUDIT`].
pub const MODE_AUDIT: u8 = 1;
/// `WEIR_MODE_ENFORCE`: flows are judged; denied ones are dropped.
pub const MODE_ENFORCE: u8 = 2;

/// `WEIR_VERDICT_FORWARDED`: allowed, or not judged (observe).
pub const VERDICT_FORWARDED: u8 = 0;
/// `WEIR_VERDICT_AUDIT`: would be dropped; passed (audit mode).
pub const VERDICT_AUDIT: u8 = 1;
/// `WEIR_VERDICT_DROPPED`: dropped (enforce mode).
pub const VERDICT_DROPPED: u8 = 2;

/// `WEIR_REASON_NONE`: forwarded.
pub const REASON_NONE: u8 = 0;
/// `WEIR_REASON_DEFAULT_DENY`: isolated, and no rule for the direction.
pub const REASON_DEFAULT_DENY: u8 = 1;
/// `WEIR_REASON_PEER_NOT_ALLOWED`: no rule names the peer.
pub const REASON_PEER_NOT_ALLOWED: u8 = 2;
/// `WEIR_REASON_PORT_NOT_ALLOWED`: the peer is named, not on this port.
pub const REASON_PORT_NOT_ALLOWED: u8 = 3;

/// `WEIR_DIR_INGRESS`: traffic the endpoint receives.
pub const DIR_INGRESS: u8 = 0;
/// `WEIR_DIR_EGRESS`: traffic the endpoint sends.
pub const DIR_EGRESS: u8 = 1;

/// `WEIR_ID_ANY`: in policy keys, any peer.
pub const ID_ANY: u32 = 0;
/// `WEIR_ID_HOST`: the node itself (kubelet probes): always allowed.
pub const ID_HOST: u32 = 1;
/// `WEIR_ID_WORLD`: an address no pod or CIDR entry matches.
pub const ID_WORLD: u32 = 2;
/// `WEIR_ID_FIRST`: pods and CIDRs get identities from here up.
pub const ID_FIRST: u32 = 256;

/// `WEIR_EP_ISOLATED_INGRESS`: some policy selects the endpoint for ingress.
pub const EP_ISOLATED_INGRESS: u8 = 0x01;
/// `WEIR_EP_ISOLATED_EGRESS`: some policy selects the endpoint for egress.
pub const EP_ISOLATED_EGRESS: u8 = 0x02;
/// `WEIR_EP_RULES_INGRESS`: ... and some of them have ingress rules.
pub const EP_RULES_INGRESS: u8 = 0x04;
/// `WEIR_EP_RULES_EGRESS`: ... and some of them have egress rules.
pub const EP_RULES_EGRESS: u8 = 0x08;

/// `WEIR_POLICY_KEY_FIXED_BITS`: the bits of a policy key before the port
/// (endpoint, direction, protocol, padding, peer), all matched exactly.
pub const POLICY_KEY_FIXED_BITS: u32 = 96;

/// `struct flow_key`: one flow table entry per (endpoint, 5-tuple), the same
/// for both directions. "local" is the pod behind the endpoint.
///
/// Addresses are in network byte order (IPv4 in the first 4 bytes, rest
/// zero); ports in host byte order. ICMP echo uses the identifier as
/// `local_port` and 0 as `remote_port`; other ICMP messages make no flows.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Host-side veth of the endpoint.
    pub ifindex: u32,
    /// `FAMILY_*`.
    pub family: u8,
    /// IP protocol number (`IPPROTO_*`).
    pub proto: u8,
    /// Padding; always zero.
    pub _pad0: u16,
    /// Address of the pod, network byte order.
    pub local_addr: [u8; 16],
    /// Address of the peer, network byte order.
    pub remote_addr: [u8; 16],
    /// Port of the pod, host byte order.
    pub local_port: u16,
    /// Port of the peer, host byte order.
    pub remote_port: u16,
    /// Padding; always zero.
    pub _pad1: u32,
}

/// `struct flow_key4`: the key of `FLOWS4`, the IPv4 flow table: an IPv4
/// [`FlowKey`]'s fields in 20 bytes (the family is implied). The agent sees
/// IPv4 flows as [`FlowKey`]s: convert with [`FlowKey4::of`] and
/// [`FlowKey4::flow_key`].
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey4 {
    /// Host-side veth of the endpoint.
    pub ifindex: u32,
    /// Address of the pod, network byte order (the octets in memory order).
    pub local_addr: [u8; 4],
    /// Address of the peer, network byte order.
    pub remote_addr: [u8; 4],
    /// Port of the pod, host byte order.
    pub local_port: u16,
    /// Port of the peer, host byte order.
    pub remote_port: u16,
    /// IP protocol number (`IPPROTO_*`).
    pub proto: u8,
    /// Padding; always zero.
    pub _pad0: [u8; 3],
}

impl FlowKey4 {
    /// The `FLOWS4` key of an IPv4 flow; `None` for another family.
    #[must_use]
    pub fn of(key: &FlowKey) -> Option<Self> {
        (key.family == FAMILY_IPV4).then(|| Self {
            ifindex: key.ifindex,
            local_addr: [
                key.local_addr[0],
                key.local_addr[1],
                key.local_addr[2],
                key.local_addr[3],
            ],
            remote_addr: [
                key.remote_addr[0],
                key.remote_addr[1],
                key.remote_addr[2],
                key.remote_addr[3],
            ],
            local_port: key.local_port,
            remote_port: key.remote_port,
            proto: key.proto,
            _pad0: [0; 3],
        })
    }

    /// The flow's [`FlowKey`], as events and the agent carry it.
    #[must_use]
    pub fn flow_key(&self) -> FlowKey {
        let mut local_addr = [0; 16];
        let mut remote_addr = [0; 16];
        local_addr[..4].copy_from_slice(&self.local_addr);
        remote_addr[..4].copy_from_slice(&self.remote_addr);
        FlowKey {
            ifindex: self.ifindex,
            family: FAMILY_IPV4,
            proto: self.proto,
            local_addr,
            remote_addr,
            local_port: self.local_port,
            remote_port: self.remote_port,
            ..FlowKey::default()
        }
    }
}

/// `struct flow_stats`: the flow table value. Timestamps are
/// `bpf_ktime_get_ns()` (`CLOCK_MONOTONIC`).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// First packet of the flow.
    pub first_seen_ns: u64,
    /// Latest packet of the flow.
    pub last_seen_ns: u64,
    /// Packets sent by the pod.
    pub packets_from_pod: u64,
    /// Bytes sent by the pod (whole frames, L2 included).
    pub bytes_from_pod: u64,
    /// Packets received by the pod.
    pub packets_to_pod: u64,
    /// Bytes received by the pod (whole frames, L2 included).
    pub bytes_to_pod: u64,
    /// OR of the TCP flags sent by the pod.
    pub tcp_flags_from_pod: u8,
    /// OR of the TCP flags received by the pod.
    pub tcp_flags_to_pod: u8,
    /// `INITIATOR_*`.
    pub initiator: u8,
    /// `FLOW_F_*`.
    pub flags: u8,
    /// First ICMP type seen, 0 otherwise.
    pub icmp_type: u8,
    /// First ICMP code seen.
    pub icmp_code: u8,
    /// `VERDICT_*`, decided on the first packet.
    pub verdict: u8,
    /// `REASON_*` when not forwarded.
    pub reason: u8,
    /// Connections the entry has carried: 1, plus one each time a new TCP
    /// connection reopened it (a SYN on a reused 5-tuple after FIN or RST).
    /// The timestamps, flags, initiator and verdict are the latest
    /// connection's; the packet and byte counters are the sum of all.
    pub connections: u32,
    /// Padding; always zero.
    pub _pad0: u32,
}

/// `struct dns_event`: a DNS answer a pod received, the first
/// [`DNS_PAYLOAD_MAX`] bytes of the message (TCP's length prefix removed).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsEvent {
    /// [`ABI_VERSION`] of the programs that wrote the record.
    pub version: u16,
    /// [`EVENT_DNS`].
    pub kind: u8,
    /// [`DNS_UDP`] or [`DNS_TCP`].
    pub transport: u8,
    /// The message's length in the packet.
    pub message_len: u16,
    /// Bytes of `payload` written: `min(message_len, DNS_PAYLOAD_MAX)`.
    pub captured_len: u16,
    /// `bpf_ktime_get_ns()` when it was seen.
    pub timestamp_ns: u64,
    /// The flow's key: local is the pod, remote the DNS server.
    pub key: FlowKey,
    /// The message; bytes past `captured_len` are zero.
    pub payload: [u8; DNS_PAYLOAD_MAX],
}

impl DnsEvent {
    /// The captured bytes of the message.
    #[must_use]
    pub fn message(&self) -> &[u8] {
        &self.payload[..usize::from(self.captured_len).min(DNS_PAYLOAD_MAX)]
    }

    /// Whether the message was cut at [`DNS_PAYLOAD_MAX`].
    #[must_use]
    pub fn truncated(&self) -> bool {
        self.message_len > self.captured_len
    }
}

/// `struct flow_event`: the ring-buffer record announcing a new flow entry,
/// or a new connection that reopened one.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    /// [`ABI_VERSION`] of the programs that wrote the record.
    pub version: u16,
    /// `EVENT_*`.
    pub kind: u8,
    /// `INITIATOR_*`.
    pub initiator: u8,
    /// `FLOW_F_*` of the new entry.
    pub flags: u8,
    /// TCP flags of the first packet.
    pub tcp_flags: u8,
    /// ICMP type of the first packet, 0 otherwise.
    pub icmp_type: u8,
    /// ICMP code of the first packet.
    pub icmp_code: u8,
    /// `bpf_ktime_get_ns()` of the first packet.
    pub timestamp_ns: u64,
    /// The new entry's key in the flow table.
    pub key: FlowKey,
    /// `VERDICT_*` of the flow.
    pub verdict: u8,
    /// `REASON_*` when not forwarded.
    pub reason: u8,
    /// `DIR_*` that was checked (the endpoint's side).
    pub direction: u8,
    /// Padding; always zero.
    pub _pad0: u8,
    /// Identity the peer resolved to (0: not judged).
    pub peer_identity: u32,
    /// [`FlowStats::connections`] of the announced connection.
    pub connection: u32,
    /// Padding; always zero.
    pub _pad1: u32,
}

/// `struct endpoint_info`: the `ENDPOINTS` value (key: host veth ifindex).
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointInfo {
    /// The pod's identity (its policy key).
    pub identity: u32,
    /// `MODE_*` of the pod's namespace.
    pub mode: u8,
    /// `EP_*`.
    pub flags: u8,
    /// Padding; always zero.
    pub _pad0: u16,
}

/// `struct ip_key`: the `IDENTITIES` key (exact address -> identity).
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IpKey {
    /// `FAMILY_*`.
    pub family: u8,
    /// Padding; always zero.
    pub _pad0: [u8; 3],
    /// Network order; IPv4 in the first 4 bytes, the rest zero.
    pub addr: [u8; 16],
}

/// `struct cidr_key`: the `CIDRS` LPM trie key, with its prefix length.
///
/// aya's `LpmTrie` takes keys as `lpm_trie::Key<K>` (prefix length + data):
/// use [`CidrKeyData`] there; this full struct is the C layout.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CidrKey {
    /// LPM prefix length: 32 (family) + prefix bits.
    pub prefixlen: u32,
    /// `FAMILY_*`.
    pub family: u8,
    /// Padding; always zero (matched too).
    pub _pad0: [u8; 3],
    /// Network order; IPv4 in the first 4 bytes, the rest zero.
    pub addr: [u8; 16],
}

/// [`CidrKey`] without its leading prefix length: the data of an aya
/// `lpm_trie::Key<CidrKeyData>`.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CidrKeyData {
    /// `FAMILY_*`.
    pub family: u8,
    /// Padding; always zero (matched too).
    pub _pad0: [u8; 3],
    /// Network order; IPv4 in the first 4 bytes, the rest zero.
    pub addr: [u8; 16],
}

/// `struct policy_key`: the `POLICY` LPM trie key, with its prefix length.
///
/// Use [`PolicyKeyData`] with aya's `LpmTrie`; this full struct is the C
/// layout.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyKey {
    /// LPM prefix length: [`POLICY_KEY_FIXED_BITS`] + port prefix bits (0..=16).
    pub prefixlen: u32,
    /// Endpoint identity.
    pub endpoint: u32,
    /// `DIR_*`.
    pub direction: u8,
    /// IP protocol number, 0 = any protocol.
    pub proto: u8,
    /// Padding; always zero (matched too).
    pub _pad0: [u8; 2],
    /// Peer identity, [`ID_ANY`] = any peer.
    pub peer: u32,
    /// Port, network order.
    pub port: u16,
    /// Padding; always zero.
    pub _pad1: u16,
}

/// [`PolicyKey`] without its leading prefix length: the data of an aya
/// `lpm_trie::Key<PolicyKeyData>`.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyKeyData {
    /// Endpoint identity.
    pub endpoint: u32,
    /// `DIR_*`.
    pub direction: u8,
    /// IP protocol number, 0 = any protocol.
    pub proto: u8,
    /// Padding; always zero (matched too).
    pub _pad0: [u8; 2],
    /// Peer identity, [`ID_ANY`] = any peer.
    pub peer: u32,
    /// Port, network order (`port.to_be()`).
    pub port: u16,
    /// Padding; always zero.
    pub _pad1: u16,
}

/// `struct policy_exact_key`: the `POLICY_EXACT` hash key, a rule of one
/// protocol and one port, looked up before the `POLICY` trie.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyExactKey {
    /// Endpoint identity.
    pub endpoint: u32,
    /// `DIR_*`.
    pub direction: u8,
    /// `IPPROTO_*`, never 0.
    pub proto: u8,
    /// Port, network order (`port.to_be()`).
    pub port: u16,
    /// Peer identity, [`ID_ANY`] = any peer.
    pub peer: u32,
}

/// `struct peer_cache_value`: a `PEER_CACHE` entry, the identity the
/// `CIDRS` trie gave an address and the `CIDRS_EPOCH` it was found in.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PeerCacheValue {
    /// The identity.
    pub identity: u32,
    /// `CIDRS_EPOCH` when the trie was walked.
    pub epoch: u32,
}

/// `struct policy_value`: which rule allowed the flow, for the flow log.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyValue {
    /// Index into the agent's rule table.
    pub rule_id: u32,
}

/// `struct peer_key`: the `PEERS` key, (endpoint, direction, peer) pairs
/// some rule names.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PeerKey {
    /// Endpoint identity.
    pub endpoint: u32,
    /// `DIR_*`.
    pub direction: u8,
    /// Padding; always zero.
    pub _pad0: [u8; 3],
    /// Peer identity ([`ID_ANY`]: some rule allows any peer).
    pub peer: u32,
}

// Layout asserts: the numbers are the ones in abi.h (and its _Static_asserts).
const _: () = {
    assert!(size_of::<FlowKey>() == 48);
    assert!(offset_of!(FlowKey, ifindex) == 0);
    assert!(offset_of!(FlowKey, family) == 4);
    assert!(offset_of!(FlowKey, proto) == 5);
    assert!(offset_of!(FlowKey, _pad0) == 6);
    assert!(offset_of!(FlowKey, local_addr) == 8);
    assert!(offset_of!(FlowKey, remote_addr) == 24);
    assert!(offset_of!(FlowKey, local_port) == 40);
    assert!(offset_of!(FlowKey, remote_port) == 42);
    assert!(offset_of!(FlowKey, _pad1) == 44);

    assert!(size_of::<FlowKey4>() == 20);
    assert!(align_of::<FlowKey4>() == 4);
    assert!(offset_of!(FlowKey4, ifindex) == 0);
    assert!(offset_of!(FlowKey4, local_addr) == 4);
    assert!(offset_of!(FlowKey4, remote_addr) == 8);
    assert!(offset_of!(FlowKey4, local_port) == 12);
    assert!(offset_of!(FlowKey4, remote_port) == 14);
    assert!(offset_of!(FlowKey4, proto) == 16);
    assert!(offset_of!(FlowKey4, _pad0) == 17);

    assert!(size_of::<FlowStats>() == 64);
    assert!(offset_of!(FlowStats, first_seen_ns) == 0);
    assert!(offset_of!(FlowStats, last_seen_ns) == 8);
    assert!(offset_of!(FlowStats, packets_from_pod) == 16);
    assert!(offset_of!(FlowStats, bytes_from_pod) == 24);
    assert!(offset_of!(FlowStats, packets_to_pod) == 32);
    assert!(offset_of!(FlowStats, bytes_to_pod) == 40);
    assert!(offset_of!(FlowStats, tcp_flags_from_pod) == 48);
    assert!(offset_of!(FlowStats, tcp_flags_to_pod) == 49);
    assert!(offset_of!(FlowStats, initiator) == 50);
    assert!(offset_of!(FlowStats, flags) == 51);
    assert!(offset_of!(FlowStats, icmp_type) == 52);
    assert!(offset_of!(FlowStats, icmp_code) == 53);
    assert!(offset_of!(FlowStats, verdict) == 54);
    assert!(offset_of!(FlowStats, reason) == 55);
    assert!(offset_of!(FlowStats, connections) == 56);
    assert!(offset_of!(FlowStats, _pad0) == 60);

    assert!(size_of::<DnsEvent>() == 64 + DNS_PAYLOAD_MAX);
    assert!(offset_of!(DnsEvent, version) == 0);
    assert!(offset_of!(DnsEvent, kind) == 2);
    assert!(offset_of!(DnsEvent, transport) == 3);
    assert!(offset_of!(DnsEvent, message_len) == 4);
    assert!(offset_of!(DnsEvent, captured_len) == 6);
    assert!(offset_of!(DnsEvent, timestamp_ns) == 8);
    assert!(offset_of!(DnsEvent, key) == 16);
    assert!(offset_of!(DnsEvent, payload) == 64);

    assert!(size_of::<FlowEvent>() == 80);
    assert!(offset_of!(FlowEvent, version) == 0);
    assert!(offset_of!(FlowEvent, kind) == 2);
    assert!(offset_of!(FlowEvent, initiator) == 3);
    assert!(offset_of!(FlowEvent, flags) == 4);
    assert!(offset_of!(FlowEvent, tcp_flags) == 5);
    assert!(offset_of!(FlowEvent, icmp_type) == 6);
    assert!(offset_of!(FlowEvent, icmp_code) == 7);
    assert!(offset_of!(FlowEvent, timestamp_ns) == 8);
    assert!(offset_of!(FlowEvent, key) == 16);
    assert!(offset_of!(FlowEvent, verdict) == 64);
    assert!(offset_of!(FlowEvent, reason) == 65);
    assert!(offset_of!(FlowEvent, direction) == 66);
    assert!(offset_of!(FlowEvent, _pad0) == 67);
    assert!(offset_of!(FlowEvent, peer_identity) == 68);
    assert!(offset_of!(FlowEvent, connection) == 72);
    assert!(offset_of!(FlowEvent, _pad1) == 76);

    assert!(size_of::<EndpointInfo>() == 8);
    assert!(offset_of!(EndpointInfo, identity) == 0);
    assert!(offset_of!(EndpointInfo, mode) == 4);
    assert!(offset_of!(EndpointInfo, flags) == 5);
    assert!(offset_of!(EndpointInfo, _pad0) == 6);

    assert!(size_of::<IpKey>() == 20);
    assert!(offset_of!(IpKey, family) == 0);
    assert!(offset_of!(IpKey, _pad0) == 1);
    assert!(offset_of!(IpKey, addr) == 4);

    assert!(size_of::<CidrKey>() == 24);
    assert!(offset_of!(CidrKey, prefixlen) == 0);
    assert!(offset_of!(CidrKey, family) == 4);
    assert!(offset_of!(CidrKey, _pad0) == 5);
    assert!(offset_of!(CidrKey, addr) == 8);
    assert!(size_of::<CidrKeyData>() == 20);
    assert!(offset_of!(CidrKeyData, family) == 0);
    assert!(offset_of!(CidrKeyData, _pad0) == 1);
    assert!(offset_of!(CidrKeyData, addr) == 4);

    assert!(size_of::<PolicyKey>() == 20);
    assert!(offset_of!(PolicyKey, prefixlen) == 0);
    assert!(offset_of!(PolicyKey, endpoint) == 4);
    assert!(offset_of!(PolicyKey, direction) == 8);
    assert!(offset_of!(PolicyKey, proto) == 9);
    assert!(offset_of!(PolicyKey, _pad0) == 10);
    assert!(offset_of!(PolicyKey, peer) == 12);
    assert!(offset_of!(PolicyKey, port) == 16);
    assert!(offset_of!(PolicyKey, _pad1) == 18);
    assert!(size_of::<PolicyKeyData>() == 16);
    assert!(offset_of!(PolicyKeyData, endpoint) == 0);
    assert!(offset_of!(PolicyKeyData, direction) == 4);
    assert!(offset_of!(PolicyKeyData, proto) == 5);
    assert!(offset_of!(PolicyKeyData, _pad0) == 6);
    assert!(offset_of!(PolicyKeyData, peer) == 8);
    assert!(offset_of!(PolicyKeyData, port) == 12);
    assert!(offset_of!(PolicyKeyData, _pad1) == 14);
    // POLICY_KEY_FIXED_BITS: endpoint, direction, proto, pad and peer.
    assert!(offset_of!(PolicyKeyData, port) * 8 == POLICY_KEY_FIXED_BITS as usize);

    assert!(size_of::<PolicyValue>() == 4);
    assert!(offset_of!(PolicyValue, rule_id) == 0);

    assert!(size_of::<PeerKey>() == 12);
    assert!(offset_of!(PeerKey, endpoint) == 0);
    assert!(offset_of!(PeerKey, direction) == 4);
    assert!(offset_of!(PeerKey, _pad0) == 5);
    assert!(offset_of!(PeerKey, peer) == 8);

    assert!(size_of::<PolicyExactKey>() == 12);
    assert!(offset_of!(PolicyExactKey, endpoint) == 0);
    assert!(offset_of!(PolicyExactKey, direction) == 4);
    assert!(offset_of!(PolicyExactKey, proto) == 5);
    assert!(offset_of!(PolicyExactKey, port) == 6);
    assert!(offset_of!(PolicyExactKey, peer) == 8);

    assert!(size_of::<PeerCacheValue>() == 8);
    assert!(offset_of!(PeerCacheValue, identity) == 0);
    assert!(offset_of!(PeerCacheValue, epoch) == 4);
};

// SAFETY: FlowKey is #[repr(C)], made only of integers and integer arrays
// with explicit padding fields (no implicit padding, asserted above), so every
// bit pattern is valid and all of its bytes are initialised.
unsafe impl aya::Pod for FlowKey {}
// SAFETY: as for FlowKey: #[repr(C)], integers and byte arrays, explicit
// padding (offsets asserted above).
unsafe impl aya::Pod for FlowKey4 {}
// SAFETY: as for FlowKey: #[repr(C)], integers only, explicit padding.
unsafe impl aya::Pod for FlowStats {}
// SAFETY: as for FlowKey: #[repr(C)], integers and a Pod FlowKey, explicit
// padding.
unsafe impl aya::Pod for FlowEvent {}
// SAFETY: as for FlowEvent: #[repr(C)], integers, a Pod FlowKey and a byte
// array, no implicit padding (offsets asserted above).
unsafe impl aya::Pod for DnsEvent {}
// SAFETY: the enforcement structs below are all #[repr(C)], made of integers
// and integer arrays with explicit padding fields (sizes and offsets asserted
// above: no implicit padding).
unsafe impl aya::Pod for EndpointInfo {}
// SAFETY: as for EndpointInfo.
unsafe impl aya::Pod for IpKey {}
// SAFETY: as for EndpointInfo.
unsafe impl aya::Pod for CidrKey {}
// SAFETY: as for EndpointInfo.
unsafe impl aya::Pod for CidrKeyData {}
// SAFETY: as for EndpointInfo.
unsafe impl aya::Pod for PolicyKey {}
// SAFETY: as for EndpointInfo.
unsafe impl aya::Pod for PolicyKeyData {}
// SAFETY: as for EndpointInfo.
unsafe impl aya::Pod for PolicyValue {}
// SAFETY: as for EndpointInfo.
unsafe impl aya::Pod for PeerKey {}
// SAFETY: as for EndpointInfo.
unsafe impl aya::Pod for PolicyExactKey {}
// SAFETY: as for EndpointInfo.
unsafe impl aya::Pod for PeerCacheValue {}

/// A ring-buffer record: the buffer carries both kinds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RingRecord {
    /// A new flow (or connection).
    Flow(FlowEvent),
    /// A DNS answer (boxed: it is seven times a flow event's size).
    Dns(Box<DnsEvent>),
}

impl RingRecord {
    /// Decodes a record by its kind (the byte after the version).
    ///
    /// # Errors
    ///
    /// As [`FlowEvent::from_bytes`] and [`DnsEvent::from_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        match bytes.get(2) {
            Some(&EVENT_DNS) => DnsEvent::from_bytes(bytes).map(|e| Self::Dns(Box::new(e))),
            _ => FlowEvent::from_bytes(bytes).map(Self::Flow),
        }
    }
}

impl DnsEvent {
    /// Decodes a ring-buffer record of kind [`EVENT_DNS`] (as
    /// [`FlowEvent::from_bytes`]: no alignment needed). Only the captured
    /// bytes of the payload are read; the rest is zero.
    ///
    /// # Errors
    ///
    /// [`DecodeError::TooShort`] or [`DecodeError::Version`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        const HEADER: usize = 64;
        let expected = size_of::<Self>();
        if bytes.len() < expected {
            return Err(DecodeError::TooShort {
                len: bytes.len(),
                expected,
            });
        }
        let mut r = Reader { bytes };
        let version = r.u16();
        if version != ABI_VERSION {
            return Err(DecodeError::Version {
                found: version,
                expected: ABI_VERSION,
            });
        }
        let kind = r.u8();
        let transport = r.u8();
        let message_len = r.u16();
        let captured_len = r.u16().min(DNS_PAYLOAD_MAX as u16);
        let timestamp_ns = r.u64();
        let key = FlowKey::read(&mut r);
        let mut payload = [0u8; DNS_PAYLOAD_MAX];
        let n = usize::from(captured_len);
        payload[..n].copy_from_slice(&bytes[HEADER..HEADER + n]);
        Ok(Self {
            version,
            kind,
            transport,
            message_len,
            captured_len,
            timestamp_ns,
            key,
            payload,
        })
    }
}

/// Why a ring-buffer record could not be decoded.
///
/// `Display` and `Error` are written by hand to keep this module free of
/// dependencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The record is shorter than a [`FlowEvent`].
    TooShort {
        /// Length of the record.
        len: usize,
        /// `size_of::<FlowEvent>()`.
        expected: usize,
    },
    /// The record was written by programs with another ABI version.
    Version {
        /// Version in the record.
        found: u16,
        /// [`ABI_VERSION`].
        expected: u16,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort { len, expected } => {
                write!(f, "flow event is {len} bytes, expected at least {expected}")
            }
            Self::Version { found, expected } => {
                write!(f, "flow event has ABI version {found}, expected {expected}")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Cursor over a native-endian byte slice; lengths are checked by the caller.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.bytes.split_at(N);
        self.bytes = rest;
        let mut out = [0; N];
        out.copy_from_slice(head);
        out
    }

    fn u8(&mut self) -> u8 {
        u8::from_ne_bytes(self.take())
    }

    fn u16(&mut self) -> u16 {
        u16::from_ne_bytes(self.take())
    }

    fn u32(&mut self) -> u32 {
        u32::from_ne_bytes(self.take())
    }

    fn u64(&mut self) -> u64 {
        u64::from_ne_bytes(self.take())
    }
}

impl FlowKey {
    /// Decodes a key; the caller checked that 48 bytes are left.
    fn read(r: &mut Reader<'_>) -> Self {
        Self {
            ifindex: r.u32(),
            family: r.u8(),
            proto: r.u8(),
            _pad0: r.u16(),
            local_addr: r.take(),
            remote_addr: r.take(),
            local_port: r.u16(),
            remote_port: r.u16(),
            _pad1: r.u32(),
        }
    }

    /// Address of the pod.
    ///
    /// The programs only write [`FAMILY_IPV4`] and [`FAMILY_IPV6`]; any
    /// family other than IPv4 reads the 16 bytes as IPv6.
    #[must_use]
    pub fn local_ip(&self) -> IpAddr {
        ip(self.family, self.local_addr)
    }

    /// Address of the peer (see [`FlowKey::local_ip`]).
    #[must_use]
    pub fn remote_ip(&self) -> IpAddr {
        ip(self.family, self.remote_addr)
    }
}

fn ip(family: u8, addr: [u8; 16]) -> IpAddr {
    if family == FAMILY_IPV4 {
        Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]).into()
    } else {
        Ipv6Addr::from(addr).into()
    }
}

impl FlowEvent {
    /// Decodes a ring-buffer record.
    ///
    /// Copies field by field from native-endian bytes, so `bytes` needs no
    /// alignment. Longer records are accepted (a later ABI may append
    /// fields without bumping the version); shorter ones and other versions
    /// are not.
    ///
    /// # Errors
    ///
    /// [`DecodeError::TooShort`] or [`DecodeError::Version`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let expected = size_of::<Self>();
        if bytes.len() < expected {
            return Err(DecodeError::TooShort {
                len: bytes.len(),
                expected,
            });
        }
        let mut r = Reader { bytes };
        let version = r.u16();
        if version != ABI_VERSION {
            return Err(DecodeError::Version {
                found: version,
                expected: ABI_VERSION,
            });
        }
        Ok(Self {
            version,
            kind: r.u8(),
            initiator: r.u8(),
            flags: r.u8(),
            tcp_flags: r.u8(),
            icmp_type: r.u8(),
            icmp_code: r.u8(),
            timestamp_ns: r.u64(),
            key: FlowKey::read(&mut r),
            verdict: r.u8(),
            reason: r.u8(),
            direction: r.u8(),
            _pad0: r.u8(),
            peer_identity: r.u32(),
            connection: r.u32(),
            _pad1: r.u32(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_bytes(version: u16) -> Vec<u8> {
        let mut b = Vec::with_capacity(80);
        b.extend_from_slice(&version.to_ne_bytes());
        b.extend_from_slice(&[
            EVENT_NEW_FLOW,
            INITIATOR_REMOTE,
            FLOW_F_ANNOUNCED,
            0x02,
            0,
            0,
        ]);
        b.extend_from_slice(&1234u64.to_ne_bytes());
        b.extend_from_slice(&7u32.to_ne_bytes());
        b.extend_from_slice(&[FAMILY_IPV4, 6, 0, 0]);
        b.extend_from_slice(&[10, 0, 0, 1]);
        b.extend_from_slice(&[0; 12]);
        b.extend_from_slice(&[10, 0, 0, 2]);
        b.extend_from_slice(&[0; 12]);
        b.extend_from_slice(&8080u16.to_ne_bytes());
        b.extend_from_slice(&40000u16.to_ne_bytes());
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&[VERDICT_DROPPED, REASON_PORT_NOT_ALLOWED, DIR_EGRESS, 0]);
        b.extend_from_slice(&300u32.to_ne_bytes());
        b.extend_from_slice(&2u32.to_ne_bytes());
        b.extend_from_slice(&[0; 4]);
        b
    }

    #[test]
    fn decodes_a_hand_built_event() {
        let event = FlowEvent::from_bytes(&event_bytes(ABI_VERSION)).unwrap();
        assert_eq!(event.kind, EVENT_NEW_FLOW);
        assert_eq!(event.initiator, INITIATOR_REMOTE);
        assert_eq!(event.flags, FLOW_F_ANNOUNCED);
        assert_eq!(event.tcp_flags, 0x02);
        assert_eq!(event.timestamp_ns, 1234);
        assert_eq!(event.key.ifindex, 7);
        assert_eq!(event.key.proto, 6);
        assert_eq!(event.key.local_port, 8080);
        assert_eq!(event.key.remote_port, 40000);
        assert_eq!(event.key.local_ip(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(event.key.remote_ip(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(event.verdict, VERDICT_DROPPED);
        assert_eq!(event.reason, REASON_PORT_NOT_ALLOWED);
        assert_eq!(event.direction, DIR_EGRESS);
        assert_eq!(event.peer_identity, 300);
        assert_eq!(event.connection, 2);
    }

    #[test]
    fn dns_records_decode_by_kind_and_only_their_captured_bytes() {
        let mut b = vec![0u8; size_of::<DnsEvent>()];
        b[..2].copy_from_slice(&ABI_VERSION.to_ne_bytes());
        b[2] = EVENT_DNS;
        b[3] = DNS_TCP;
        b[4..6].copy_from_slice(&700u16.to_ne_bytes());
        b[6..8].copy_from_slice(&3u16.to_ne_bytes());
        b[8..16].copy_from_slice(&99u64.to_ne_bytes());
        b[64..68].copy_from_slice(&[1, 2, 3, 0xff]);
        let RingRecord::Dns(ev) = RingRecord::from_bytes(&b).unwrap() else {
            panic!("a DNS record");
        };
        assert_eq!(ev.message(), &[1, 2, 3]);
        assert_eq!(ev.payload[3], 0, "bytes past captured_len are not read");
        assert!(ev.truncated());
        assert_eq!(ev.transport, DNS_TCP);
        assert_eq!(ev.timestamp_ns, 99);
        assert!(matches!(
            RingRecord::from_bytes(&event_bytes(ABI_VERSION)),
            Ok(RingRecord::Flow(_))
        ));
        assert!(matches!(
            RingRecord::from_bytes(&b[..100]),
            Err(DecodeError::TooShort { len: 100, .. })
        ));
        // a claimed length past the payload is capped, never read past it
        b[6..8].copy_from_slice(&u16::MAX.to_ne_bytes());
        let RingRecord::Dns(ev) = RingRecord::from_bytes(&b).unwrap() else {
            panic!("a DNS record");
        };
        assert_eq!(ev.message().len(), DNS_PAYLOAD_MAX);
    }

    #[test]
    fn decodes_from_an_unaligned_slice() {
        let mut shifted = vec![0xff];
        shifted.extend(event_bytes(ABI_VERSION));
        let event = FlowEvent::from_bytes(&shifted[1..]).unwrap();
        assert_eq!(event.key.local_port, 8080);
    }

    #[test]
    fn accepts_trailing_bytes() {
        let mut bytes = event_bytes(ABI_VERSION);
        bytes.extend_from_slice(&[0; 8]);
        assert!(FlowEvent::from_bytes(&bytes).is_ok());
    }

    #[test]
    fn rejects_short_records() {
        for len in [0, 1, 16, 63, 64, 71, 72, 79] {
            let bytes = &event_bytes(ABI_VERSION)[..len];
            assert_eq!(
                FlowEvent::from_bytes(bytes),
                Err(DecodeError::TooShort { len, expected: 80 })
            );
        }
    }

    #[test]
    fn rejects_other_versions() {
        assert_eq!(
            FlowEvent::from_bytes(&event_bytes(1)),
            Err(DecodeError::Version {
                found: 1,
                expected: ABI_VERSION
            })
        );
    }

    #[test]
    fn ipv4_keys_convert_both_ways_and_ipv6_has_no_short_key() {
        let key = FlowKey {
            ifindex: 7,
            family: FAMILY_IPV4,
            proto: 6,
            local_addr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            remote_addr: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            local_port: 40000,
            remote_port: 80,
            ..FlowKey::default()
        };
        let short = FlowKey4::of(&key).expect("an IPv4 key");
        assert_eq!(
            (short.local_addr, short.remote_addr, short.local_port),
            ([10, 0, 0, 1], [10, 0, 0, 2], 40000)
        );
        assert_eq!(short.flow_key(), key);
        let v6 = FlowKey {
            family: FAMILY_IPV6,
            ..key
        };
        assert_eq!(FlowKey4::of(&v6), None);
    }

    #[test]
    fn ips_by_family() {
        let mut key = FlowKey {
            family: FAMILY_IPV6,
            ..FlowKey::default()
        };
        key.local_addr = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(key.local_ip(), Ipv6Addr::LOCALHOST);
        assert_eq!(key.remote_ip(), Ipv6Addr::UNSPECIFIED);
    }
}
