// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * weir's observe programs: TC programs on both directions of a pod's
 * host-side veth that keep one flow table entry per (endpoint, 5-tuple) and
 * announce new entries through a ring buffer.
 *
 *   weir_from_pod  TC ingress of the host veth: packets the pod sends
 *   weir_to_pod    TC egress of the host veth: packets the pod receives
 *
 * Maps (types and layouts in abi.h):
 *   FLOWS     hash flow_key -> flow_stats: the source of truth. A plain hash,
 *             not LRU, so a full table is visible (WEIR_CNT_TABLE_FULL)
 *             instead of silently evicting flows the agent has not seen.
 *   EVENTS    ring buffer of flow_event, one per new entry: a low-latency
 *             hint only; the agent sweeps FLOWS for entries without
 *             WEIR_FLOW_F_ANNOUNCED, so a full ring loses no flow.
 *   COUNTERS  per-CPU __u64[WEIR_CNT_MAX]: losses are counted, never silent.
 *   CLOCK_CACHE  per-CPU clock reading of the current jiffy (internal, not
 *             read by the agent): see last_seen_clock().
 *
 * Both programs return TC_ACT_UNSPEC: observing never changes the verdict.
 * With tcx (kernel >= 6.6) TC_ACT_UNSPEC is TCX_NEXT, so programs attached
 * after ours (a CNI's own datapath) still run; with legacy cls_bpf in
 * direct-action mode it means "continue with the next filter".
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
	__type(key, struct flow_key);
	__type(value, struct flow_stats);
} FLOWS SEC(".maps");

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

static __always_inline void count(__u32 index)
{
	__u64 *value = bpf_map_lookup_elem(&COUNTERS, &index);

	/* per-CPU slot and TC runs with migration disabled: no atomic needed */
	if (value)
		*value += 1;
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
				  const struct flow_stats *stats, const struct parsed *p)
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
}

/*
 * First packet of a flow (as far as this CPU knows): insert with BPF_NOEXIST,
 * then announce. The ring-buffer record is reserved before the insert so the
 * entry is written once, with WEIR_FLOW_F_ANNOUNCED already right.
 */
static __always_inline void new_flow(const struct flow_key *key, const struct parsed *p, __u64 len,
				     __u64 now, const bool from_pod)
{
	struct flow_stats stats;
	struct flow_stats *existing;
	struct flow_event *ev;
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

	ev = bpf_ringbuf_reserve(&EVENTS, sizeof(*ev), 0);
	if (ev)
		stats.flags |= WEIR_FLOW_F_ANNOUNCED;

	err = bpf_map_update_elem(&FLOWS, key, &stats, BPF_NOEXIST);
	if (!err) {
		count(WEIR_CNT_NEW_FLOWS);
		if (ev) {
			fill_event(ev, key, &stats, p);
			bpf_ringbuf_submit(ev, 0);
		} else {
			count(WEIR_CNT_RINGBUF_FULL);
		}
		return;
	}
	if (ev)
		bpf_ringbuf_discard(ev, 0);

	if (err == -EEXIST) {
		/* another CPU inserted the flow between our lookup and insert */
		existing = bpf_map_lookup_elem(&FLOWS, key);
		if (existing)
			account(existing, p, len, now, from_pod);
		return;
	}
	/* -E2BIG: table full; -ENOMEM: no element to allocate. Untracked either way. */
	count(WEIR_CNT_TABLE_FULL);
}

static __always_inline int observe(struct __sk_buff *skb, const bool from_pod)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct flow_stats *stats;
	struct flow_key key;
	struct parsed p = {};
	int err;

	count(WEIR_CNT_PACKETS);
	__builtin_memset(&key, 0, sizeof(key));
	err = parse_packet(data, data_end, from_pod, &key, &p);
	if (err != PARSE_OK) {
		count(err);
		return TC_ACT_UNSPEC;
	}
	key.ifindex = skb->ifindex;

	/* one lookup; the clock is read after it, as each path needs */
	stats = bpf_map_lookup_elem(&FLOWS, &key);
	if (stats)
		account(stats, &p, skb->len, last_seen_clock(), from_pod);
	else
		new_flow(&key, &p, skb->len, bpf_ktime_get_ns(), from_pod);
	return TC_ACT_UNSPEC;
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
