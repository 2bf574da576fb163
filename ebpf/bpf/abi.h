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

#define WEIR_ABI_VERSION 1

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

/* flow_event.kind */
#define WEIR_EVENT_NEW_FLOW 1

/*
 * Per-CPU counters (array map COUNTERS, index below). Summed by the agent and
 * exported as metrics: losses are counted, never silent.
 */
#define WEIR_CNT_PACKETS 0         /* packets seen by the programs */
#define WEIR_CNT_NEW_FLOWS 1       /* flow table entries created */
#define WEIR_CNT_RINGBUF_FULL 2    /* new-flow events lost: ring buffer full */
#define WEIR_CNT_TABLE_FULL 3      /* flows not tracked: flow table full */
#define WEIR_CNT_PARSE_ERROR 4     /* truncated or malformed headers */
#define WEIR_CNT_NON_IP 5          /* not IPv4/IPv6 (ARP, LLDP, ...) */
#define WEIR_CNT_FRAGMENT 6        /* non-first IP fragments (no L4 header) */
#define WEIR_CNT_UNSUPPORTED_L4 7  /* IP protocols other than TCP/UDP/SCTP/ICMP */
#define WEIR_CNT_ICMP_CONTROL 8    /* ICMP other than echo: errors, ND, MLD */
#define WEIR_CNT_MAX 9

/*
 * Flow table key: one entry per (endpoint, 5-tuple), the same entry for both
 * directions. "local" is the pod behind the endpoint, "remote" its peer.
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
 * Flow table value. Timestamps are CLOCK_MONOTONIC nanoseconds:
 * first_seen_ns is bpf_ktime_get_ns() of the first packet; last_seen_ns comes
 * from a per-CPU clock read once per tick (it may lag by two ticks, and only
 * drives idle expiry). Counters are updated with atomic adds; the agent reads
 * deltas.
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
	__u16 _pad0;
} __attribute__((aligned(8)));

/* Ring-buffer record announcing a new flow table entry. */
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
} __attribute__((aligned(8)));

_Static_assert(sizeof(struct flow_key) == 48, "flow_key ABI");
_Static_assert(sizeof(struct flow_stats) == 56, "flow_stats ABI");
_Static_assert(sizeof(struct flow_event) == 64, "flow_event ABI");

#endif /* WEIR_ABI_H */
