// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * weir's datapath: TC programs on both directions of a pod's host-side veth
 * that keep one flow table entry per (endpoint, 5-tuple), announce new
 * entries through a ring buffer and, for endpoints in audit or enforce mode,
 * judge each new flow against the policy maps.
 *
 *   weir_from_pod  TC ingress of the host veth: packets the pod sends
 *   weir_to_pod    TC egress of the host veth: packets the pod receives
 *
 * Maps (types and layouts in abi.h):
 *   FLOWS4    hash flow_key4 -> flow_stats: the IPv4 flows, the source of
 *             truth. A plain hash, not LRU, so a full table is visible
 *             (WEIR_CNT_TABLE_FULL) instead of silently evicting flows the
 *             agent has not seen. Keyed by 20 bytes, not flow_key's 48: the
 *             key's hash and compare are most of an established flow's cost.
 *             A packet of an existing IPv4 TCP or UDP flow is looked up by the
 *             key parsed straight from its headers (parse_common4()).
 *   FLOWS     hash flow_key -> flow_stats: the IPv6 flows, the same way (not
 *             preallocated: most clusters have few or none). A FLOWS pinned
 *             by a build before FLOWS4 also holds IPv4 flows: see
 *             weir_ipv4_in_flows.
 *   EVENTS    ring buffer of flow_event, one per new entry: a low-latency
 *             hint only; the agent sweeps both tables for entries without
 *             WEIR_FLOW_F_ANNOUNCED, so a full ring loses no flow.
 *   COUNTERS  per-CPU __u64[WEIR_CNT_MAX]: losses are counted, never silent.
 *   CLOCK_CACHE  per-CPU clock reading of the current jiffy (internal, not
 *             read by the agent): see last_seen_clock().
 *   ENDPOINTS, IDENTITIES, CIDRS, CIDRS_EPOCH, POLICY_EXACT, POLICY,
 *             PEERS: the enforcement state written by the agent (see
 *             "Enforcement" below and abi.h).
 *   PEER_CACHE  LRU of the identities the CIDRS trie gave peer addresses
 *             (written here, invalidated by CIDRS_EPOCH): see cidr_identity().
 *   EVENT_RATE  per-CPU token bucket for the events of denied flows
 *             (internal): see verdict_event_allowed().
 *   DNS_RATE  the same for DNS answers, which EVENTS also carries as
 *             dns_event records (see dns.h).
 *
 * The programs return TC_ACT_UNSPEC unless enforcement drops the packet
 * (TC_ACT_SHOT). With tcx (kernel >= 6.6) TC_ACT_UNSPEC is TCX_NEXT, so
 * programs attached after ours (a CNI's own datapath) still run; with legacy
 * cls_bpf in direct-action mode it means "continue with the next filter".
 *
 * Enforcement. Only the first packet of a flow (no flow table entry yet) is
 * judged, and only at an endpoint whose ENDPOINTS entry is in audit or
 * enforce mode; the verdict is stored in the new entry and every later
 * packet of the flow, both ways, shares it (connection tracking), so the
 * existing-flow path costs no lookup at all, and an endpoint that is not in
 * ENDPOINTS (or observed) costs one hash lookup per new flow.
 *   - Direction: weir_from_pod checks EGRESS (the pod sends the first
 *     packet), weir_to_pod INGRESS. The port is the first packet's
 *     destination port. Each end of a pod-to-pod flow judges its own side.
 *   - Peer identity: IDENTITIES (exact address), else the longest CIDRS
 *     prefix (remembered per address in PEER_CACHE), else WEIR_ID_WORLD.
 *     WEIR_ID_HOST is always allowed.
 *   - Not isolated in that direction: forwarded. Isolated without rules in
 *     that direction: DEFAULT_DENY. Else two POLICY_EXACT lookups, then four
 *     POLICY lookups (judge()); a miss is PORT_NOT_ALLOWED when PEERS names
 *     the peer (or any peer), PEER_NOT_ALLOWED otherwise.
 *   - ipBlock matches pod addresses too (NetworkPolicy as Calico, Antrea
 *     and the upstream e2e suite read it): when the rules by a pod peer's
 *     identity and by any peer miss, the CIDR identity of its address (the
 *     longest CIDRS prefix, remembered in PEER_CACHE like an external
 *     address's) gets one POLICY_EXACT and two POLICY lookups, and PEERS
 *     one more on the deny path.
 *   - Cost of an allowed new flow whatever the number of rules: a pod peer
 *     on an exact port is three hash lookups (ENDPOINTS, IDENTITIES,
 *     POLICY_EXACT); a CIDR peer adds PEER_CACHE and the one-entry
 *     CIDRS_EPOCH array, and walks the CIDRS trie only the first time its
 *     address is seen after a change of CIDRS; a pod peer allowed by an
 *     ipBlock only pays its misses by identity first, then those two and
 *     one POLICY_EXACT hit.
 *   - ICMP/ICMPv6 echo has no ports: only "any protocol" rules (protocol 0,
 *     stored with any port, i.e. port prefix 0) match it; the lookups use
 *     protocol 0 and port 0.
 *   - Denied: audit mode passes the packet with verdict AUDIT (every packet
 *     of the flow counts WEIR_CNT_AUDIT); enforce mode (or any unknown mode:
 *     fail closed) drops it with verdict DROPPED (WEIR_CNT_DROPPED).
 *   - A DROPPED entry whose endpoint has since left enforce mode (agent
 *     switched the namespace to audit/observe, or removed the endpoint) is
 *     downgraded on its next packet: AUDIT, or FORWARDED when observed. That
 *     check costs one ENDPOINTS lookup, on the drop path only. After a
 *     change that could allow more, the agent deletes the AUDIT and DROPPED
 *     entries of the endpoints concerned, so their next packet is judged
 *     again; FORWARDED entries are kept (established connections survive a
 *     tightening, as with Cilium and an iptables ESTABLISHED rule).
 *   - Events of denied flows go through a per-CPU token bucket
 *     (weir_event_cost_ns, weir_event_bucket_ns: 1000/s, burst 100 by
 *     default); a suppressed event is counted in WEIR_CNT_EVENTS_LIMITED and
 *     its entry stays without WEIR_FLOW_F_ANNOUNCED, so the sweep reports it.
 *   - A new TCP connection on the 5-tuple of an entry that saw FIN or RST
 *     (a client reusing a source port before the old entry expired) is
 *     judged again: see reopen().
 *   Limitations: mid-stream TCP (no SYN, e.g. after the entry expired) is
 *   judged as a new flow from whichever side sends first; non-first IP
 *   fragments, ICMP errors and IP protocols other than TCP/UDP/SCTP/ICMP are
 *   not judged (they pass); when the flow table is full a flow is judged on
 *   every packet with nothing remembered, so replies of allowed flows are
 *   judged as new flows of the other direction.
 *
 * Needs kernel >= 5.8 (ring buffer).
 *
 * Timestamps: a new flow's first_seen_ns (and its event's timestamp_ns) is
 * bpf_ktime_get_ns(), precise. On the per-packet path of an existing flow,
 * last_seen_ns is the coarse clock (bpf_ktime_get_coarse_ns(), 5.11+: the
 * same CLOCK_MONOTONIC base at tick resolution, 4 ms with HZ=250), read once
 * per jiffy and CPU: reading the clock was a third of the per-packet cost,
 * and last_seen_ns only decides idle expiry (10 s and more). It lags the
 * precise clock by at most two ticks and never moves backwards (account()).
 */
// clang-format off
#include <stdbool.h>
#include <stddef.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <asm-generic/errno-base.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "abi.h"
#include "parse.h"
// clang-format on

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Private to these programs (not ABI): see last_seen_clock(). */
struct clock_cache {
	__u64 jiffies;
	__u64 ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key4);
	__type(value, struct flow_stats);
} FLOWS4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct flow_key);
	__type(value, struct flow_stats);
} FLOWS SEC(".maps");

/*
 * Set by the loader when it adopted a pinned FLOWS that still holds IPv4
 * flows (a build before FLOWS4 made them): an IPv4 flow missing from FLOWS4
 * is then looked up in FLOWS too, so its established verdict and counters
 * carry on under the new programs instead of being judged and announced
 * again. Such an entry stays in FLOWS until it expires or is deleted; new
 * flows always go to FLOWS4. Left 0, the verifier drops the extra lookup.
 */
volatile const __u32 weir_ipv4_in_flows = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} EVENTS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, WEIR_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} COUNTERS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct clock_cache);
} CLOCK_CACHE SEC(".maps");

/* Private to these programs (not ABI): see verdict_event_allowed(). */
struct event_rate {
	__u64 credit_ns; /* tokens, as nanoseconds of refill */
	__u64 last_ns;
};

/* The verdict of a new flow, as judge() decides it. */
struct judgment {
	__u8 verdict;	/* WEIR_VERDICT_* */
	__u8 reason;	/* WEIR_REASON_* */
	__u8 direction; /* WEIR_DIR_* */
	__u8 _pad0;
	__u32 peer; /* peer identity, 0 when not judged */
};

/*
 * Token bucket of denied-flow events, per CPU: one event costs
 * weir_event_cost_ns of credit, the bucket holds weir_event_bucket_ns (the
 * burst). Set at load time by the loader; 0 cost disables the limit.
 */
volatile const __u64 weir_event_cost_ns = 1000000;    /* 1000 events/s */
volatile const __u64 weir_event_bucket_ns = 100000000; /* burst of 100 */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event_rate);
} EVENT_RATE SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct endpoint_info);
} ENDPOINTS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ip_key);
	__type(value, __u32);
} IDENTITIES SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct cidr_key);
	__type(value, __u32);
} CIDRS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} CIDRS_EPOCH SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ip_key);
	__type(value, struct peer_cache_value);
} PEER_CACHE SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct policy_exact_key);
	__type(value, struct policy_value);
} POLICY_EXACT SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
} POLICY SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct peer_key);
	__type(value, __u8);
} PEERS SEC(".maps");

/* The FLOWS4 key of an IPv4 flow_key. */
static __always_inline void key4_of(struct flow_key4 *k4, const struct flow_key *key)
{
	k4->ifindex = key->ifindex;
	__builtin_memcpy(&k4->local_addr, key->local_addr, 4);
	__builtin_memcpy(&k4->remote_addr, key->remote_addr, 4);
	k4->local_port = key->local_port;
	k4->remote_port = key->remote_port;
	k4->proto = key->proto;
	k4->_pad0[0] = 0;
	k4->_pad0[1] = 0;
	k4->_pad0[2] = 0;
}

/* The flow's entry: FLOWS4 for IPv4 (see weir_ipv4_in_flows), else FLOWS. */
static __always_inline struct flow_stats *flow_lookup(const struct flow_key *key)
{
	struct flow_key4 k4;
	struct flow_stats *stats;

	if (key->family != WEIR_FAMILY_IPV4)
		return bpf_map_lookup_elem(&FLOWS, key);
	key4_of(&k4, key);
	stats = bpf_map_lookup_elem(&FLOWS4, &k4);
	if (!stats && weir_ipv4_in_flows)
		stats = bpf_map_lookup_elem(&FLOWS, key);
	return stats;
}

/* Inserts a new entry into the family's table, failing if one exists. */
static __always_inline long flow_insert(const struct flow_key *key, const struct flow_stats *stats)
{
	struct flow_key4 k4;

	if (key->family != WEIR_FAMILY_IPV4)
		return bpf_map_update_elem(&FLOWS, key, stats, BPF_NOEXIST);
	key4_of(&k4, key);
	return bpf_map_update_elem(&FLOWS4, &k4, stats, BPF_NOEXIST);
}

static __always_inline void count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&COUNTERS, &index);

	/* per-CPU slot and TC runs with migration disabled: no atomic needed */
	if (value)
		*value += 1;
}

#include "dns.h"

/*
 * Takes one token for the event of a denied flow. Per CPU, and TC programs
 * run with migration disabled: no atomics. The first call finds last_ns 0
 * and a full bucket.
 */
static __always_inline bool verdict_event_allowed(__u64 now)
{
	__u32 zero = 0;
	struct event_rate *rate = bpf_map_lookup_elem(&EVENT_RATE, &zero);
	__u64 cost = weir_event_cost_ns;
	__u64 credit;

	if (!rate || !cost)
		return true;
	credit = rate->credit_ns + (now - rate->last_ns);
	if (credit > weir_event_bucket_ns)
		credit = weir_event_bucket_ns;
	rate->last_ns = now;
	if (credit < cost) {
		rate->credit_ns = credit;
		return false;
	}
	rate->credit_ns = credit - cost;
	return true;
}

static __always_inline __u8 initiator_of(__u8 opener, const bool from_pod)
{
	bool sender_opened = opener != OPENER_RECEIVER;

	/* from_pod: the sender is the pod (LOCAL); to_pod: the peer is */
	return sender_opened == from_pod ? WEIR_INITIATOR_LOCAL : WEIR_INITIATOR_REMOTE;
}

/*
 * The clock for last_seen_ns of existing flows (see the top of this file).
 * Kernels before 5.11 have no coarse helper: the CO-RE check, resolved
 * against the running kernel's BTF at load time, picks the precise clock
 * there and the verifier drops the branch not taken.
 */
static __always_inline __u64 tick_clock(void)
{
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_ktime_get_coarse_ns))
		return bpf_ktime_get_coarse_ns();
	return bpf_ktime_get_ns();
}

/*
 * tick_clock(), read at most once per jiffy and CPU: the coarse clock only
 * moves at a tick, and bpf_jiffies64() is inlined by the verifier (a load),
 * while the helper call costs more than the rest of the per-packet path.
 * The value can lag the coarse clock by one more tick when this CPU read it
 * between the jiffies update and the timekeeping update of the same tick.
 */
static __always_inline __u64 last_seen_clock(void)
{
	__u32 zero = 0;
	struct clock_cache *cache = bpf_map_lookup_elem(&CLOCK_CACHE, &zero);
	__u64 jiffies = bpf_jiffies64();
	__u64 now;

	if (!cache) /* never: a one-entry array */
		return tick_clock();
	if (cache->jiffies == jiffies)
		return cache->ns;
	now = tick_clock();
	cache->jiffies = jiffies;
	cache->ns = now;
	return now;
}

static __always_inline __u8 closing_flag(__u8 tcp_flags)
{
	return tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST) ? WEIR_FLOW_F_CLOSING : 0;
}

/*
 * The per-packet path of an existing flow. Counters use atomic adds (one
 * flow can be hit from several CPUs at once). Flag bytes are ORed with plain
 * stores, and only when a new bit shows up: BPF has no 8-bit atomics, and the
 * 32-bit atomic OR needs kernel >= 5.12; the worst a race can do is lose one
 * flag bit, which a later packet of the same flow sets again.
 *
 * last_seen_ns only moves forward: `now` may be the coarse clock, which lags
 * the precise first_seen_ns of a flow created less than a tick ago.
 */
static __always_inline void account(struct flow_stats *stats, const struct parsed *p, __u64 len,
				    __u64 now, const bool from_pod)
{
	__u8 closing = closing_flag(p->tcp_flags);

	if (from_pod) {
		__sync_fetch_and_add(&stats->packets_from_pod, 1);
		__sync_fetch_and_add(&stats->bytes_from_pod, len);
		if ((stats->tcp_flags_from_pod & p->tcp_flags) != p->tcp_flags)
			stats->tcp_flags_from_pod |= p->tcp_flags;
	} else {
		__sync_fetch_and_add(&stats->packets_to_pod, 1);
		__sync_fetch_and_add(&stats->bytes_to_pod, len);
		if ((stats->tcp_flags_to_pod & p->tcp_flags) != p->tcp_flags)
			stats->tcp_flags_to_pod |= p->tcp_flags;
	}
	if (closing && !(stats->flags & closing))
		stats->flags |= closing;
	if (now > stats->last_seen_ns)
		stats->last_seen_ns = now;
}

/*
 * Not inlined on purpose: clang emits BTF only for types in function
 * signatures, globals and maps, and this signature is what puts struct
 * flow_event into the object's BTF, where a test compares it with the Rust
 * mirror. It runs once per new flow, so the call costs nothing that matters.
 */
static __noinline void fill_event(struct flow_event *ev, const struct flow_key *key,
				  const struct flow_stats *stats, const struct parsed *p,
				  const struct judgment *j)
{
	ev->version = WEIR_ABI_VERSION;
	ev->kind = WEIR_EVENT_NEW_FLOW;
	ev->initiator = stats->initiator;
	ev->flags = stats->flags;
	ev->tcp_flags = p->tcp_flags;
	ev->icmp_type = stats->icmp_type;
	ev->icmp_code = stats->icmp_code;
	ev->timestamp_ns = stats->first_seen_ns;
	__builtin_memcpy(&ev->key, key, sizeof(*key));
	/* ring-buffer records are not zeroed: every field is written */
	ev->verdict = stats->verdict;
	ev->reason = stats->reason;
	ev->direction = j->direction;
	ev->_pad0 = 0;
	ev->peer_identity = j->peer;
	ev->connection = stats->connections;
	ev->_pad1 = 0;
}

/*
 * The identity the CIDRS trie gives an address: its longest prefix, else
 * world. The answer is remembered per address in PEER_CACHE under the
 * CIDRS_EPOCH read before the walk: the agent bumps the epoch after it
 * changes CIDRS, so a remembered answer is never older than the trie it
 * came from claims (a walk that raced a change is stored under the old
 * epoch and found stale at once). Pod addresses are cached too: an ipBlock
 * matches them (the second identity of a pod peer, see judge()).
 */
static __always_inline __u32 cidr_identity(const struct ip_key *ip)
{
	struct peer_cache_value cached;
	struct peer_cache_value *hit;
	struct cidr_key cidr;
	__u32 zero = 0;
	__u32 *epoch;
	__u32 *id;
	__u32 identity;

	epoch = bpf_map_lookup_elem(&CIDRS_EPOCH, &zero);
	cached.epoch = epoch ? *epoch : 0;
	hit = bpf_map_lookup_elem(&PEER_CACHE, ip);
	if (hit && hit->epoch == cached.epoch)
		return hit->identity;

	__builtin_memset(&cidr, 0, sizeof(cidr));
	/* IPv4 keys have zeroes after the 4 address bytes: the full length works */
	cidr.prefixlen = 32 + 128;
	cidr.family = ip->family;
	__builtin_memcpy(cidr.addr, ip->addr, sizeof(cidr.addr));
	id = bpf_map_lookup_elem(&CIDRS, &cidr);
	identity = id ? *id : WEIR_ID_WORLD;
	cached.identity = identity;
	/* best effort: a failed update only means the next flow walks again */
	bpf_map_update_elem(&PEER_CACHE, ip, &cached, BPF_ANY);
	return identity;
}

/*
 * The identity of the peer's address: exact (a pod, the node: *pod set),
 * else cidr_identity().
 */
static __always_inline __u32 peer_identity(const struct flow_key *key, struct ip_key *ip,
					   bool *pod)
{
	__u32 *id;

	__builtin_memset(ip, 0, sizeof(*ip));
	ip->family = key->family;
	__builtin_memcpy(ip->addr, key->remote_addr, sizeof(ip->addr));
	id = bpf_map_lookup_elem(&IDENTITIES, ip);
	*pod = id != NULL;
	if (id)
		return *id;
	return cidr_identity(ip);
}

/* One POLICY_EXACT lookup: (endpoint, direction, protocol, port, peer). */
static __always_inline bool exact_allows(struct policy_exact_key *ek, __u32 peer)
{
	ek->peer = peer;
	return bpf_map_lookup_elem(&POLICY_EXACT, ek) != NULL;
}

/* One POLICY lookup: the port is matched by prefix, the rest exactly. */
static __always_inline bool policy_allows(struct policy_key *pk, __u32 peer, __u8 proto)
{
	pk->peer = peer;
	pk->proto = proto;
	return bpf_map_lookup_elem(&POLICY, pk) != NULL;
}

/*
 * Judges the first packet of a flow at an endpoint in audit or enforce mode
 * (see the top of this file). Not inlined: it runs once per new flow, and
 * keeping it out of line keeps the per-packet path small. It returns 0:
 * a void subprogram may leave a stack pointer in R0 (the compiler reuses
 * it), which the verifier refuses at the exit of a subprogram.
 */
static __noinline int judge(const struct endpoint_info *ep, const struct flow_key *key,
			     struct judgment *j)
{
	__u8 isolated = j->direction == WEIR_DIR_EGRESS ? WEIR_EP_ISOLATED_EGRESS
							: WEIR_EP_ISOLATED_INGRESS;
	__u8 rules = j->direction == WEIR_DIR_EGRESS ? WEIR_EP_RULES_EGRESS : WEIR_EP_RULES_INGRESS;
	bool icmp = key->proto == IPPROTO_ICMP || key->proto == IPPROTO_ICMPV6;
	struct policy_exact_key ek;
	struct policy_key pk;
	struct peer_key peer;
	struct ip_key ip;
	__u32 cidr = WEIR_ID_WORLD;
	bool named;
	bool pod;
	__u16 port;

	j->verdict = WEIR_VERDICT_FORWARDED;
	j->reason = WEIR_REASON_NONE;
	j->peer = peer_identity(key, &ip, &pod);
	if (j->peer == WEIR_ID_HOST || !(ep->flags & isolated))
		return 0;

	if (!(ep->flags & rules)) {
		j->reason = WEIR_REASON_DEFAULT_DENY;
		goto deny;
	}

	/* the destination port of the first packet: the peer's on egress */
	port = j->direction == WEIR_DIR_EGRESS ? key->remote_port : key->local_port;
	__builtin_memset(&ek, 0, sizeof(ek));
	ek.endpoint = ep->identity;
	ek.direction = j->direction;
	ek.proto = key->proto;
	ek.port = bpf_htons(port);
	/* the common case: a rule naming this protocol and port */
	if (!icmp && (exact_allows(&ek, j->peer) || exact_allows(&ek, WEIR_ID_ANY)))
		return 0;
	/* ranges, any port, any protocol */
	__builtin_memset(&pk, 0, sizeof(pk));
	pk.prefixlen = WEIR_POLICY_KEY_FIXED_BITS + 16;
	pk.endpoint = ep->identity;
	pk.direction = j->direction;
	pk.port = icmp ? 0 : bpf_htons(port);
	if (!icmp && policy_allows(&pk, j->peer, key->proto))
		return 0;
	if (policy_allows(&pk, j->peer, 0))
		return 0;
	if (!icmp && policy_allows(&pk, WEIR_ID_ANY, key->proto))
		return 0;
	if (policy_allows(&pk, WEIR_ID_ANY, 0))
		return 0;
	/*
	 * A pod peer's address may be in an ipBlock too: its CIDR identity,
	 * looked up last so that rules by pod identity cost what they did.
	 */
	if (pod) {
		cidr = cidr_identity(&ip);
		if (cidr != WEIR_ID_WORLD) {
			if (!icmp && exact_allows(&ek, cidr))
				return 0;
			if (!icmp && policy_allows(&pk, cidr, key->proto))
				return 0;
			if (policy_allows(&pk, cidr, 0))
				return 0;
		}
	}

	__builtin_memset(&peer, 0, sizeof(peer));
	peer.endpoint = ep->identity;
	peer.direction = j->direction;
	peer.peer = j->peer;
	named = bpf_map_lookup_elem(&PEERS, &peer) != NULL;
	if (!named && cidr != WEIR_ID_WORLD) {
		peer.peer = cidr;
		named = bpf_map_lookup_elem(&PEERS, &peer) != NULL;
	}
	if (!named) {
		peer.peer = WEIR_ID_ANY;
		named = bpf_map_lookup_elem(&PEERS, &peer) != NULL;
	}
	j->reason = named ? WEIR_REASON_PORT_NOT_ALLOWED : WEIR_REASON_PEER_NOT_ALLOWED;
deny:
	j->verdict = ep->mode == WEIR_MODE_AUDIT ? WEIR_VERDICT_AUDIT : WEIR_VERDICT_DROPPED;
	return 0;
}

/* Counts a packet of a judged flow; TC_ACT_SHOT when it is dropped. */
static __always_inline int apply(__u8 verdict)
{
	if (verdict == WEIR_VERDICT_FORWARDED)
		return TC_ACT_UNSPEC;
	if (verdict == WEIR_VERDICT_AUDIT) {
		count(WEIR_CNT_AUDIT);
		return TC_ACT_UNSPEC;
	}
	count(WEIR_CNT_DROPPED);
	return TC_ACT_SHOT;
}

/*
 * A packet of an existing flow whose verdict is not FORWARDED (the per-packet
 * path only reads the verdict byte). A DROPPED flow whose endpoint left
 * enforce mode is downgraded first, so switching a namespace back to audit
 * or observe never keeps dropping its flows.
 */
static __noinline int existing_denied(struct flow_stats *stats, __u32 ifindex)
{
	struct endpoint_info *ep;

	if (stats->verdict == WEIR_VERDICT_DROPPED) {
		ep = bpf_map_lookup_elem(&ENDPOINTS, &ifindex);
		if (!ep || ep->mode == WEIR_MODE_OBSERVE) {
			stats->verdict = WEIR_VERDICT_FORWARDED;
			stats->reason = WEIR_REASON_NONE;
		} else if (ep->mode == WEIR_MODE_AUDIT) {
			stats->verdict = WEIR_VERDICT_AUDIT;
		}
	}
	return apply(stats->verdict);
}

/*
 * First packet of a flow (as far as this CPU knows): insert with BPF_NOEXIST,
 * then announce. The ring-buffer record is reserved before the insert so the
 * entry is written once, with WEIR_FLOW_F_ANNOUNCED already right.
 */
static __always_inline int new_flow(const struct flow_key *key, const struct parsed *p, __u64 len,
				    __u64 now, const struct judgment *j, const bool from_pod)
{
	struct flow_stats stats;
	struct flow_stats *existing;
	struct flow_event *ev;
	bool limited = false;
	long err;

	__builtin_memset(&stats, 0, sizeof(stats));
	stats.first_seen_ns = now;
	stats.last_seen_ns = now;
	if (from_pod) {
		stats.packets_from_pod = 1;
		stats.bytes_from_pod = len;
		stats.tcp_flags_from_pod = p->tcp_flags;
	} else {
		stats.packets_to_pod = 1;
		stats.bytes_to_pod = len;
		stats.tcp_flags_to_pod = p->tcp_flags;
	}
	stats.initiator = initiator_of(p->opener, from_pod);
	stats.flags = closing_flag(p->tcp_flags);
	if (p->opener == OPENER_SENDER_GUESSED)
		stats.flags |= WEIR_FLOW_F_INITIATOR_GUESSED;
	stats.icmp_type = p->icmp_type;
	stats.icmp_code = p->icmp_code;
	stats.verdict = j->verdict;
	stats.reason = j->reason;
	stats.connections = 1;

	if (j->verdict != WEIR_VERDICT_FORWARDED && !verdict_event_allowed(now)) {
		limited = true;
		ev = NULL;
	} else {
		ev = bpf_ringbuf_reserve(&EVENTS, sizeof(*ev), 0);
	}
	if (ev)
		stats.flags |= WEIR_FLOW_F_ANNOUNCED;

	err = flow_insert(key, &stats);
	if (!err) {
		count(WEIR_CNT_NEW_FLOWS);
		if (ev) {
			fill_event(ev, key, &stats, p, j);
			bpf_ringbuf_submit(ev, 0);
		} else if (limited) {
			count(WEIR_CNT_EVENTS_LIMITED);
		} else {
			count(WEIR_CNT_RINGBUF_FULL);
		}
		return apply(j->verdict);
	}
	if (ev)
		bpf_ringbuf_discard(ev, 0);

	if (err == -EEXIST) {
		/* another CPU inserted the flow between our lookup and insert */
		existing = flow_lookup(key);
		if (existing) {
			account(existing, p, len, now, from_pod);
			return apply(existing->verdict);
		}
		return apply(j->verdict);
	}
	/* -E2BIG: table full; -ENOMEM: no element to allocate. Untracked either way. */
	count(WEIR_CNT_TABLE_FULL);
	return apply(j->verdict);
}

/*
 * The verdict of a new flow: one ENDPOINTS lookup, then judge() for an
 * endpoint in audit or enforce mode.
 */
static __always_inline void decide(const struct flow_key *key, struct judgment *j,
				   const bool from_pod)
{
	struct endpoint_info *ep = bpf_map_lookup_elem(&ENDPOINTS, &key->ifindex);

	__builtin_memset(j, 0, sizeof(*j));
	j->direction = from_pod ? WEIR_DIR_EGRESS : WEIR_DIR_INGRESS;
	if (ep && ep->mode != WEIR_MODE_OBSERVE)
		judge(ep, key, j);
}

/*
 * Whether a packet of an existing entry opens a new connection on its
 * 5-tuple: a TCP SYN without ACK (OPENER_SENDER) after FIN or RST, as a
 * client that reuses a source port sends while the old connection's entry
 * waits for its closing expiry. conntrack starts a new connection there too.
 */
static __always_inline bool reopens(const struct flow_stats *stats, __u8 proto,
				    const struct parsed *p)
{
	return (stats->flags & WEIR_FLOW_F_CLOSING) && proto == IPPROTO_TCP &&
	       p->opener == OPENER_SENDER;
}

/*
 * A new connection on an entry's 5-tuple (reopens()): the entry is restarted
 * in place for it, as new_flow() would have made it, except that the packet
 * and byte counters keep growing (the agent reads deltas) and `connections`
 * grows by one. It is judged again and announced again. `connections` is
 * bumped last, with an atomic add (a full barrier), so a sweep that sees the
 * new count also sees the new connection's first_seen_ns and verdict.
 */
static __always_inline int reopen(struct flow_stats *stats, const struct flow_key *key,
				  const struct parsed *p, __u64 len, const bool from_pod)
{
	__u64 now = bpf_ktime_get_ns();
	struct flow_event *ev;
	bool limited = false;
	struct judgment j;
	__u8 flags;

	decide(key, &j, from_pod);
	if (j.verdict != WEIR_VERDICT_FORWARDED && !verdict_event_allowed(now)) {
		limited = true;
		ev = NULL;
	} else {
		ev = bpf_ringbuf_reserve(&EVENTS, sizeof(*ev), 0);
	}
	flags = closing_flag(p->tcp_flags);
	if (ev)
		flags |= WEIR_FLOW_F_ANNOUNCED;
	stats->first_seen_ns = now;
	stats->tcp_flags_from_pod = 0;
	stats->tcp_flags_to_pod = 0;
	stats->initiator = initiator_of(p->opener, from_pod);
	stats->flags = flags;
	stats->verdict = j.verdict;
	stats->reason = j.reason;
	account(stats, p, len, now, from_pod);
	__sync_fetch_and_add(&stats->connections, 1);
	count(WEIR_CNT_NEW_FLOWS);
	if (ev) {
		fill_event(ev, key, stats, p, &j);
		bpf_ringbuf_submit(ev, 0);
	} else if (limited) {
		count(WEIR_CNT_EVENTS_LIMITED);
	} else {
		count(WEIR_CNT_RINGBUF_FULL);
	}
	return apply(j.verdict);
}

/* A packet of an existing flow that does not reopen it: counted, then judged. */
static __always_inline int existing_flow(struct flow_stats *stats, const struct parsed *p,
					 __u64 len, __u32 ifindex, const bool from_pod)
{
	account(stats, p, len, last_seen_clock(), from_pod);
	/* the flow's verdict: no lookup unless it was denied */
	if (stats->verdict == WEIR_VERDICT_FORWARDED)
		return TC_ACT_UNSPEC;
	return existing_denied(stats, ifindex);
}

static __always_inline int observe(struct __sk_buff *skb, const bool from_pod)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct flow_stats *stats = NULL;
	bool looked_up4 = false;
	struct flow_key4 key4;
	struct judgment j;
	struct flow_key key;
	struct parsed p = {};
	int err;

	count(WEIR_CNT_PACKETS);
	/*
	 * An existing IPv4 TCP or UDP flow, the commonest packet, is looked up
	 * by the FLOWS4 key parsed straight from the headers. Everything else
	 * (a miss, a reopening, a possible DNS answer, IPv6, VLAN tags...)
	 * takes the full path below, which parses again into the 48-byte key
	 * that new flows, events and DNS records carry.
	 */
	if (parse_common4(data, data_end, from_pod, &key4, &p) &&
	    (from_pod || key4.remote_port != DNS_PORT)) {
		key4.ifindex = skb->ifindex;
		stats = bpf_map_lookup_elem(&FLOWS4, &key4);
		if (stats && !reopens(stats, key4.proto, &p))
			return existing_flow(stats, &p, skb->len, key4.ifindex, from_pod);
		looked_up4 = true;
	}

	__builtin_memset(&key, 0, sizeof(key));
	err = parse_packet(data, data_end, from_pod, &key, &p);
	if (err != PARSE_OK) {
		count(err);
		return TC_ACT_UNSPEC;
	}
	key.ifindex = skb->ifindex;
	/* answers from port 53 go to the agent too (dns.h); one compare for the rest */
	if (!from_pod && maybe_dns_answer(&key))
		dns_answer(skb, &key);

	/* one lookup per table; the clock is read after it, as each path needs */
	if (!looked_up4)
		stats = flow_lookup(&key);
	else if (!stats && weir_ipv4_in_flows)
		stats = bpf_map_lookup_elem(&FLOWS, &key);
	if (stats) {
		if (reopens(stats, key.proto, &p))
			return reopen(stats, &key, &p, skb->len, from_pod);
		return existing_flow(stats, &p, skb->len, key.ifindex, from_pod);
	}
	decide(&key, &j, from_pod);
	return new_flow(&key, &p, skb->len, bpf_ktime_get_ns(), &j, from_pod);
}

SEC("classifier")
int weir_from_pod(struct __sk_buff *skb)
{
	return observe(skb, true);
}

SEC("classifier")
int weir_to_pod(struct __sk_buff *skb)
{
	return observe(skb, false);
}
