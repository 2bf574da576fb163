/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * weir kernel/user ABI: every struct and constant shared between the eBPF
 * programs and the agent is defined here, once.
 *
 * Keep in sync with ebpf/src/abi.rs. The Rust mirrors carry compile-time
 * size/offset asserts, and a test compares them with this object's BTF, so a
 * change here that is not mirrored fails the build or the tests.
 *
 * Rules: fixed-width fields only, explicit padding, no enums or bools in
 * structs (their size is the compiler's choice), every struct 8-byte aligned.
 * Bump WEIR_ABI_VERSION on any incompatible change of an event layout.
 */
#ifndef WEIR_ABI_H
#define WEIR_ABI_H

#include <linux/types.h>

#define WEIR_ABI_VERSION 3

/* Address families as stored in flow_key.family. */
#define WEIR_FAMILY_IPV4 4
#define WEIR_FAMILY_IPV6 6

/*
 * Which side opened the flow, seen from the endpoint (the pod behind the host
 * veth the program runs on). UNKNOWN is its own state: never guessed here.
 */
#define WEIR_INITIATOR_UNKNOWN 0
#define WEIR_INITIATOR_LOCAL 1  /* the pod behind the endpoint */
#define WEIR_INITIATOR_REMOTE 2 /* the peer */

/* flow_stats.flags */
#define WEIR_FLOW_F_INITIATOR_GUESSED 0x01 /* no SYN seen: first packet decided */
#define WEIR_FLOW_F_ANNOUNCED 0x02         /* a ring-buffer event was emitted */
#define WEIR_FLOW_F_CLOSING 0x04           /* TCP FIN or RST seen */

/* flow_event.kind, dns_event.kind: the byte after the version tells them apart */
#define WEIR_EVENT_NEW_FLOW 1
#define WEIR_EVENT_DNS 2

/*
 * Per-CPU counters (array map COUNTERS, index below). Summed by the agent and
 * exported as metrics: losses are counted, never silent.
 */
#define WEIR_CNT_PACKETS 0         /* packets seen by the programs */
#define WEIR_CNT_NEW_FLOWS 1       /* flow table entries created or reopened */
#define WEIR_CNT_RINGBUF_FULL 2    /* new-flow events lost: ring buffer full */
#define WEIR_CNT_TABLE_FULL 3      /* flows not tracked: flow table full */
#define WEIR_CNT_PARSE_ERROR 4     /* truncated or malformed headers */
#define WEIR_CNT_NON_IP 5          /* not IPv4/IPv6 (ARP, LLDP, ...) */
#define WEIR_CNT_FRAGMENT 6        /* non-first IP fragments (no L4 header) */
#define WEIR_CNT_UNSUPPORTED_L4 7  /* IP protocols other than TCP/UDP/SCTP/ICMP */
#define WEIR_CNT_ICMP_CONTROL 8    /* ICMP other than echo: errors, ND, MLD */
#define WEIR_CNT_DROPPED 9         /* packets dropped by enforcement */
#define WEIR_CNT_AUDIT 10          /* packets that enforcement would have dropped */
#define WEIR_CNT_EVENTS_LIMITED 11 /* verdict events suppressed by the rate limit */
#define WEIR_CNT_DNS_ANSWERS 12    /* DNS answers to pods copied to the ring buffer */
#define WEIR_CNT_DNS_LIMITED 13    /* DNS answers not copied: rate limit */
#define WEIR_CNT_DNS_RINGBUF_FULL 14 /* DNS answers not copied: ring buffer full */
#define WEIR_CNT_DNS_TRUNCATED 15  /* DNS answers longer than the copy (cut) */
#define WEIR_CNT_DNS_SKIPPED 16    /* TCP segments from port 53 that are not one whole answer */
#define WEIR_CNT_MAX 17

/*
 * Flow table key: one entry per (endpoint, 5-tuple), the same entry for both
 * directions. FLOWS holds IPv6 flows by this key, FLOWS4 IPv4 flows by
 * flow_key4 (below); events and the agent use this one for both. "local" is the pod behind the endpoint, "remote" its peer.
 * Addresses are in network byte order; IPv4 uses the first 4 bytes and zeroes
 * the rest. Ports are in host byte order. ICMP echo uses the identifier as
 * local_port and 0 as remote_port; other ICMP messages make no flows.
 */
struct flow_key {
	__u32 ifindex; /* host-side veth of the endpoint */
	__u8 family;   /* WEIR_FAMILY_* */
	__u8 proto;    /* IPPROTO_* */
	__u16 _pad0;
	__u8 local_addr[16];
	__u8 remote_addr[16];
	__u16 local_port;
	__u16 remote_port;
	__u32 _pad1;
} __attribute__((aligned(8)));

/*
 * Key of FLOWS4, the IPv4 flow table: the same fields as flow_key for an
 * IPv4 flow (the family is implied), 20 bytes instead of 48, so the hash and
 * the compare on every packet cover less than half. Addresses in network
 * byte order, ports in host byte order, as in flow_key.
 */
struct flow_key4 {
	__u32 ifindex;
	__u32 local_addr;  /* network order */
	__u32 remote_addr; /* network order */
	__u16 local_port;
	__u16 remote_port;
	__u8 proto;
	__u8 _pad0[3];
} __attribute__((aligned(4)));

/*
 * Flow table value. Timestamps are CLOCK_MONOTONIC nanoseconds:
 * first_seen_ns is bpf_ktime_get_ns() of the first packet; last_seen_ns comes
 * from a per-CPU clock read once per tick (it may lag by two ticks, and only
 * drives idle expiry). Counters are updated with atomic adds; the agent reads
 * deltas.
 *
 * One entry can carry several TCP connections in turn: a SYN without ACK on
 * an entry that saw FIN or RST is a new connection on a reused 5-tuple (as
 * conntrack sees it). The entry is then reopened in place: `connections`
 * grows by one, first_seen_ns, the TCP flags, initiator, flags, verdict and
 * reason are the new connection's, and the packet and byte counters keep
 * growing (the agent reads them as deltas).
 */
struct flow_stats {
	__u64 first_seen_ns;
	__u64 last_seen_ns;
	__u64 packets_from_pod;
	__u64 bytes_from_pod;
	__u64 packets_to_pod;
	__u64 bytes_to_pod;
	__u8 tcp_flags_from_pod; /* OR of TCP flags sent by the pod */
	__u8 tcp_flags_to_pod;   /* OR of TCP flags received by the pod */
	__u8 initiator;          /* WEIR_INITIATOR_* */
	__u8 flags;              /* WEIR_FLOW_F_* */
	__u8 icmp_type;          /* first ICMP type seen, 0 otherwise */
	__u8 icmp_code;
	__u8 verdict;            /* WEIR_VERDICT_*, decided on the first packet */
	__u8 reason;             /* WEIR_REASON_* when not forwarded */
	__u32 connections;       /* connections carried: 1, +1 per reopening */
	__u32 _pad0;
} __attribute__((aligned(8)));

/* Ring-buffer record announcing a new flow table entry, or a reopened one. */
struct flow_event {
	__u16 version; /* WEIR_ABI_VERSION */
	__u8 kind;     /* WEIR_EVENT_* */
	__u8 initiator;
	__u8 flags;
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 icmp_code;
	__u64 timestamp_ns; /* bpf_ktime_get_ns() of the first packet */
	struct flow_key key;
	__u8 verdict;   /* WEIR_VERDICT_* */
	__u8 reason;    /* WEIR_REASON_* */
	__u8 direction; /* WEIR_DIR_* checked (the endpoint's side) */
	__u8 _pad0;
	__u32 peer_identity; /* identity the peer resolved to (0: none) */
	__u32 connection;    /* flow_stats.connections of the announced connection */
	__u32 _pad1;
} __attribute__((aligned(8)));

/*
 * A DNS answer a pod received (UDP from port 53, or a TCP segment from port
 * 53 holding one whole length-prefixed message): the first
 * WEIR_DNS_PAYLOAD_MAX bytes of the DNS message (without TCP's length
 * prefix). The key is the flow's, in endpoint terms: local is the pod,
 * remote the server.
 */
#define WEIR_DNS_PAYLOAD_MAX 512

/* dns_event.transport */
#define WEIR_DNS_UDP 0
#define WEIR_DNS_TCP 1

struct dns_event {
	__u16 version; /* WEIR_ABI_VERSION */
	__u8 kind;     /* WEIR_EVENT_DNS */
	__u8 transport;  /* WEIR_DNS_UDP or WEIR_DNS_TCP */
	__u16 message_len;  /* the DNS message's length in the packet */
	__u16 captured_len; /* bytes of payload copied: min(message_len, MAX) */
	__u64 timestamp_ns; /* bpf_ktime_get_ns() */
	struct flow_key key;
	__u8 payload[WEIR_DNS_PAYLOAD_MAX];
} __attribute__((aligned(8)));

/*
 * Enforcement. A namespace is in one of three modes; its pods' endpoints
 * carry it. In audit and enforce the first packet of a flow is judged
 * (egress at the source's veth, ingress at the destination's); the verdict
 * is stored in the flow entry, which then acts as connection tracking:
 * every later packet of the flow, both ways, shares it.
 */
#define WEIR_MODE_OBSERVE 0
#define WEIR_MODE_AUDIT 1
#define WEIR_MODE_ENFORCE 2

#define WEIR_VERDICT_FORWARDED 0 /* allowed, or not judged (observe) */
#define WEIR_VERDICT_AUDIT 1     /* would be dropped; passed (audit mode) */
#define WEIR_VERDICT_DROPPED 2   /* dropped (enforce mode) */

#define WEIR_REASON_NONE 0
#define WEIR_REASON_DEFAULT_DENY 1     /* isolated, and no rule for the direction */
#define WEIR_REASON_PEER_NOT_ALLOWED 2 /* no rule names the peer */
#define WEIR_REASON_PORT_NOT_ALLOWED 3 /* the peer is named, not on this port */

#define WEIR_DIR_INGRESS 0
#define WEIR_DIR_EGRESS 1

/* Reserved identities. Pods and CIDRs get identities from 256 up. */
#define WEIR_ID_ANY 0   /* in policy keys: any peer */
#define WEIR_ID_HOST 1  /* the node itself (kubelet probes): always allowed */
#define WEIR_ID_WORLD 2 /* an address no pod or CIDR entry matches */
#define WEIR_ID_FIRST 256

/* Bits of endpoint_info.flags. */
#define WEIR_EP_ISOLATED_INGRESS 0x01 /* some policy selects it for ingress */
#define WEIR_EP_ISOLATED_EGRESS 0x02  /* some policy selects it for egress */
#define WEIR_EP_RULES_INGRESS 0x04    /* ... and some of them have ingress rules */
#define WEIR_EP_RULES_EGRESS 0x08     /* ... and some of them have egress rules */

/* ENDPOINTS: host veth ifindex -> what the datapath needs of its pod. */
struct endpoint_info {
	__u32 identity; /* the pod's identity (its policy key) */
	__u8 mode;      /* WEIR_MODE_* of the pod's namespace */
	__u8 flags;     /* WEIR_EP_* */
	__u16 _pad0;
} __attribute__((aligned(4)));

/* IDENTITIES: exact address -> identity (pods, the node). */
struct ip_key {
	__u8 family; /* WEIR_FAMILY_* */
	__u8 _pad0[3];
	__u8 addr[16]; /* network order; IPv4 in the first 4 bytes */
} __attribute__((aligned(4)));

/*
 * CIDRS: LPM trie of ipBlock prefixes (and their excepts) -> identity.
 * Every distinct prefix has its own identity; the longest match of an
 * address is the most specific prefix containing it, so "in cidr and not
 * in any except" is the set of prefixes inside cidr and not inside an
 * except, which the compiler allows one by one.
 */
struct cidr_key {
	__u32 prefixlen; /* LPM: 32 (family) + prefix bits */
	__u8 family;
	__u8 _pad0[3];
	__u8 addr[16];
} __attribute__((aligned(4)));

/*
 * POLICY: LPM trie of the allow rules that POLICY_EXACT (below) does not
 * hold. Key bits in order: endpoint identity, direction, protocol, peer
 * identity (all matched exactly), then the port (network order) matched by
 * prefix: a port range is at most 30 prefixes, "any port" is prefix 0. A
 * rule without ports allows every protocol and is stored with protocol 0.
 * After the POLICY_EXACT lookups miss, a lookup tries (peer, proto), (peer,
 * any protocol), (any peer, proto), (any peer, any protocol): four lookups
 * whose cost grows with the depth of the trie, so only what cannot be an
 * exact key lives here.
 */
struct policy_key {
	__u32 prefixlen;   /* LPM: 96 + port prefix bits (0..16) */
	__u32 endpoint;    /* endpoint identity */
	__u8 direction;    /* WEIR_DIR_* */
	__u8 proto;        /* IPPROTO_*, 0 = any protocol */
	__u8 _pad0[2];     /* matched too: always zero */
	__u32 peer;        /* peer identity, WEIR_ID_ANY = any peer */
	__u16 port;        /* network order */
	__u16 _pad1;
} __attribute__((aligned(4)));

#define WEIR_POLICY_KEY_FIXED_BITS 96 /* endpoint + direction + proto + pad + peer */

/*
 * POLICY_EXACT: hash of the allow rules of one protocol and one port, the
 * common case (`ports: [{port: 80}]`), consulted before POLICY: (peer,
 * protocol, port) then (any peer, protocol, port), each one O(1) lookup
 * whatever the number of rules, where an LPM trie walk grows with the trie.
 * POLICY keeps the rest: port ranges (as prefixes), any port, any protocol.
 * The value is a policy_value.
 */
struct policy_exact_key {
	__u32 endpoint;  /* endpoint identity */
	__u8 direction;  /* WEIR_DIR_* */
	__u8 proto;      /* IPPROTO_*, never 0 here */
	__u16 port;      /* network order */
	__u32 peer;      /* peer identity, WEIR_ID_ANY = any peer */
} __attribute__((aligned(4)));

/* POLICY value: which rule allowed it, for the flow log. */
struct policy_value {
	__u32 rule_id; /* index into the agent's rule table */
} __attribute__((aligned(4)));

/*
 * PEERS: (endpoint identity, direction, peer identity) pairs that some rule
 * names: on the deny path only, it tells "port not allowed" from "peer not
 * allowed".
 */
struct peer_key {
	__u32 endpoint;
	__u8 direction;
	__u8 _pad0[3];
	__u32 peer;
} __attribute__((aligned(4)));

/*
 * PEER_CACHE: LRU hash ip_key -> what the CIDRS trie gave a peer address (a
 * CIDR identity or WEIR_ID_WORLD; for a pod's address, the second identity
 * an ipBlock matches it by), so that the trie is walked once per peer
 * address, not once per new connection.
 * CIDRS_EPOCH (an array of one __u32) is bumped by the agent after every
 * change of CIDRS; an entry found under another epoch is stale and looked
 * up again. The programs read the epoch before walking the trie, so an
 * entry is never newer than its epoch says.
 */
struct peer_cache_value {
	__u32 identity;
	__u32 epoch; /* CIDRS_EPOCH when the trie was walked */
} __attribute__((aligned(4)));

_Static_assert(sizeof(struct flow_key) == 48, "flow_key ABI");
_Static_assert(sizeof(struct flow_key4) == 20, "flow_key4 ABI");
_Static_assert(sizeof(struct flow_stats) == 64, "flow_stats ABI");
_Static_assert(sizeof(struct flow_event) == 80, "flow_event ABI");
_Static_assert(sizeof(struct dns_event) == 64 + WEIR_DNS_PAYLOAD_MAX, "dns_event ABI");
_Static_assert(sizeof(struct endpoint_info) == 8, "endpoint_info ABI");
_Static_assert(sizeof(struct ip_key) == 20, "ip_key ABI");
_Static_assert(sizeof(struct cidr_key) == 24, "cidr_key ABI");
_Static_assert(sizeof(struct policy_key) == 20, "policy_key ABI");
_Static_assert(sizeof(struct peer_key) == 12, "peer_key ABI");
_Static_assert(sizeof(struct policy_exact_key) == 12, "policy_exact_key ABI");
_Static_assert(sizeof(struct peer_cache_value) == 8, "peer_cache_value ABI");

#endif /* WEIR_ABI_H */
