/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * DNS answers to pods: a bounded copy of the message on the ring buffer, so
 * the agent can tell which names the addresses a pod talks to came from.
 *
 * Which packets: those a pod receives (weir_to_pod) from port 53 over UDP,
 * or over TCP when one segment holds one whole length-prefixed message
 * (answers that need several segments are counted, WEIR_CNT_DNS_SKIPPED,
 * not reassembled). The test on the per-packet path is one compare of the
 * parsed key's remote port (and the protocol); everything else lives out of
 * line in dns_answer(), which non-DNS packets never enter.
 *
 * Bounds: headers and payload are read with bpf_skb_load_bytes(), which
 * fails rather than read past the packet, at offsets recomputed here (the
 * parser keeps none, so the hot path stores nothing for DNS). At most
 * WEIR_DNS_PAYLOAD_MAX bytes are copied; a longer message is cut and
 * counted (WEIR_CNT_DNS_TRUNCATED), and the record says how long it was.
 * The bytes of the record past captured_len are not written.
 *
 * Rate: a per-CPU token bucket (weir_dns_cost_ns, weir_dns_bucket_ns,
 * 20,000 answers/s and a burst of 2,000 by default) keeps a resolver flood
 * from filling the ring that new-flow hints share; suppressed answers are
 * counted (WEIR_CNT_DNS_LIMITED), as are answers that found the ring full
 * (WEIR_CNT_DNS_RINGBUF_FULL).
 */
#ifndef WEIR_DNS_H
#define WEIR_DNS_H

#define DNS_PORT 53
#define DNS_HEADER_LEN 12

_Static_assert((WEIR_DNS_PAYLOAD_MAX & (WEIR_DNS_PAYLOAD_MAX - 1)) == 0,
	       "the copy's bound is a mask: a power of two");

volatile const __u64 weir_dns_cost_ns = 50000;	      /* 20,000 answers/s per CPU */
volatile const __u64 weir_dns_bucket_ns = 100000000; /* burst of 2,000 */

/* Private to these programs (not ABI): the DNS answers' token bucket. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event_rate);
} DNS_RATE SEC(".maps");

/* Whether a packet the pod receives may be a DNS answer: checked per packet. */
static __always_inline bool maybe_dns_answer(const struct flow_key *key)
{
	return key->remote_port == DNS_PORT &&
	       (key->proto == IPPROTO_UDP || key->proto == IPPROTO_TCP);
}

/* As verdict_event_allowed(), with the DNS bucket. */
static __always_inline bool dns_allowed(__u64 now)
{
	__u32 zero = 0;
	struct event_rate *rate = bpf_map_lookup_elem(&DNS_RATE, &zero);
	__u64 cost = weir_dns_cost_ns;
	__u64 credit;

	if (!rate || !cost)
		return true;
	credit = rate->credit_ns + (now - rate->last_ns);
	if (credit > weir_dns_bucket_ns)
		credit = weir_dns_bucket_ns;
	rate->last_ns = now;
	if (credit < cost) {
		rate->credit_ns = credit;
		return false;
	}
	rate->credit_ns = credit - cost;
	return true;
}

/*
 * The offset of the L4 header, found again as parse_packet() found it (the
 * packet parsed already, so only lengths are read). -1 when a read fails.
 */
static __always_inline long l4_offset(struct __sk_buff *skb, __u8 family)
{
	__u32 off = sizeof(struct ethhdr);
	__be16 proto;
	__u8 b[2];
	int i;

	if (bpf_skb_load_bytes(skb, offsetof(struct ethhdr, h_proto), &proto, sizeof(proto)))
		return -1;
	for (i = 0; i < MAX_VLAN_TAGS; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if (bpf_skb_load_bytes(skb, off + 2, &proto, sizeof(proto)))
			return -1;
		off += sizeof(struct vlan_hdr);
	}
	if (family == WEIR_FAMILY_IPV4) {
		if (bpf_skb_load_bytes(skb, off, b, 1))
			return -1;
		return off + (b[0] & 0x0f) * 4;
	}
	if (bpf_skb_load_bytes(skb, off + offsetof(struct ipv6hdr, nexthdr), b, 1))
		return -1;
	off += sizeof(struct ipv6hdr);
	for (i = 0; i < MAX_IPV6_EXT_HDRS; i++) {
		__u8 nexthdr = b[0];

		switch (nexthdr) {
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS:
			if (bpf_skb_load_bytes(skb, off, b, 2))
				return -1;
			off += (b[1] + 1) * 8;
			break;
		case IPPROTO_FRAGMENT:
			if (bpf_skb_load_bytes(skb, off, b, 1))
				return -1;
			off += sizeof(struct ipv6_frag_hdr);
			break;
		case IPPROTO_AH:
			if (bpf_skb_load_bytes(skb, off, b, 2))
				return -1;
			off += (b[1] + 2) * 4;
			break;
		default:
			return off;
		}
	}
	return -1;
}

/*
 * Not inlined on purpose, as fill_event(): the signature puts struct
 * dns_event into the object's BTF for the ABI test.
 */
static __noinline int fill_dns_event(struct dns_event *ev, const struct flow_key *key,
				     __u32 msg_len, __u32 captured, __u64 now)
{
	ev->version = WEIR_ABI_VERSION;
	ev->kind = WEIR_EVENT_DNS;
	ev->transport = key->proto == IPPROTO_UDP ? WEIR_DNS_UDP : WEIR_DNS_TCP;
	ev->message_len = msg_len > 0xffff ? 0xffff : msg_len;
	ev->captured_len = captured;
	ev->timestamp_ns = now;
	__builtin_memcpy(&ev->key, key, sizeof(*key));
	return 0;
}

/*
 * Copies the DNS message of a packet maybe_dns_answer() matched to the ring
 * buffer. Not inlined: only packets from port 53 pay for it. Returns 0 (see
 * judge() for why a subprogram returns a value).
 */
static __noinline int dns_answer(struct __sk_buff *skb, const struct flow_key *key)
{
	struct dns_event *ev;
	long l4 = l4_offset(skb, key->family);
	__u32 msg_off;
	__u32 msg_len;
	__u32 n;
	__u64 now;
	__u8 b[2];

	if (l4 < 0 || l4 > 0xffff)
		return 0;
	if (key->proto == IPPROTO_UDP) {
		/* the UDP length, not trusted past the packet's end */
		if (bpf_skb_load_bytes(skb, l4 + 4, b, 2))
			return 0;
		msg_off = l4 + sizeof(struct udphdr);
		msg_len = (((__u32)b[0] << 8) | b[1]);
		if (msg_len < sizeof(struct udphdr))
			return 0;
		msg_len -= sizeof(struct udphdr);
		if (msg_off > skb->len)
			return 0;
		if (msg_len > skb->len - msg_off)
			msg_len = skb->len - msg_off;
	} else {
		/* TCP: data offset, then one whole length-prefixed message */
		if (bpf_skb_load_bytes(skb, l4 + 12, b, 1))
			return 0;
		msg_off = l4 + (b[0] >> 4) * 4;
		if (msg_off >= skb->len)
			return 0; /* no payload: handshake, ACKs */
		if (bpf_skb_load_bytes(skb, msg_off, b, 2) ||
		    (((__u32)b[0] << 8) | b[1]) + 2 != skb->len - msg_off) {
			count(WEIR_CNT_DNS_SKIPPED);
			return 0;
		}
		msg_off += 2;
		msg_len = skb->len - msg_off;
	}
	if (msg_len < DNS_HEADER_LEN)
		return 0;

	now = bpf_ktime_get_ns();
	if (!dns_allowed(now)) {
		count(WEIR_CNT_DNS_LIMITED);
		return 0;
	}
	ev = bpf_ringbuf_reserve(&EVENTS, sizeof(*ev), 0);
	if (!ev) {
		count(WEIR_CNT_DNS_RINGBUF_FULL);
		return 0;
	}
	n = msg_len;
	if (n > WEIR_DNS_PAYLOAD_MAX) {
		n = WEIR_DNS_PAYLOAD_MAX;
		count(WEIR_CNT_DNS_TRUNCATED);
	}
	/*
	 * n is in [DNS_HEADER_LEN, WEIR_DNS_PAYLOAD_MAX] already; the mask (a
	 * no-op on those values) is what shows the verifier n in [1, MAX],
	 * where a compare may be applied by clang to another copy of n.
	 */
	n = ((n - 1) & (WEIR_DNS_PAYLOAD_MAX - 1)) + 1;
	if (bpf_skb_load_bytes(skb, msg_off, ev->payload, n)) {
		bpf_ringbuf_discard(ev, 0);
		return 0;
	}
	fill_dns_event(ev, key, msg_len, n, now);
	bpf_ringbuf_submit(ev, 0);
	count(WEIR_CNT_DNS_ANSWERS);
	return 0;
}

#endif /* WEIR_DNS_H */
