/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Packet parser shared by weir's TC programs: Ethernet, up to two VLAN tags,
 * IPv4 or IPv6 (with extension headers), then TCP, UDP, SCTP, ICMP or ICMPv6.
 *
 * The parser fills a flow_key in endpoint terms (local = the pod, remote = its
 * peer) and says who opened the flow relative to this packet. It never reads
 * past data_end; every bounds check is against the packet end the verifier
 * knows, so a bogus length field can only make the parse fail, never make it
 * read payload as headers.
 *
 * Every function is __always_inline: `from_pod` is a constant in each program,
 * so the compiler folds the direction branches away.
 */
#ifndef WEIR_PARSE_H
#define WEIR_PARSE_H

/* VLAN tags parsed through (802.1Q and 802.1ad, i.e. QinQ). */
#define MAX_VLAN_TAGS 2
/* IPv6 extension headers skipped before giving up (bounded loop). */
#define MAX_IPV6_EXT_HDRS 8

#define IPV4_FRAG_OFFSET 0x1fff /* fragment offset bits of iphdr.frag_off */
#define IPV6_FRAG_OFFSET 0xfff8 /* fragment offset bits of frag_hdr.frag_off */

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

#define ICMP_ECHO_REPLY 0
#define ICMP_ECHO_REQUEST 8
#define ICMPV6_ECHO_REQUEST_TYPE 128
#define ICMPV6_ECHO_REPLY_TYPE 129

/* Not in the UAPI headers (the kernel's own are in include/linux). */
struct vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

struct ipv6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 identification;
};

/* The part of an ICMP/ICMPv6 header common to echo request and reply. */
struct icmp_echo_hdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 id;
	__be16 sequence;
};

/* Who opened the flow, relative to the packet that created the entry. */
enum opener {
	OPENER_SENDER,		/* e.g. TCP SYN, UDP, ICMP echo request */
	OPENER_RECEIVER,	/* e.g. TCP SYN+ACK, ICMP echo reply */
	OPENER_SENDER_GUESSED,	/* mid-stream TCP: the first packet seen decides */
};

/* What the parser learned besides the key. */
struct parsed {
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 opener; /* enum opener */
};

/*
 * Parse results: 0 on success, otherwise the COUNTERS index that says why the
 * packet is not tracked (never WEIR_CNT_PACKETS, which is 0).
 */
#define PARSE_OK 0

static __always_inline void set_ports(struct flow_key *key, __u16 sport, __u16 dport,
				      const bool from_pod)
{
	key->local_port = from_pod ? sport : dport;
	key->remote_port = from_pod ? dport : sport;
}

/*
 * The addresses are copied from typed header fields (iphdr's __be32, ipv6hdr's
 * struct in6_addr), so clang knows they are 4-byte aligned and emits one
 * 32-bit load per 4 bytes; through a void pointer it assembles every address
 * byte by byte (4 loads and 6 shifts/ors per 32 bits). The key's addresses
 * sit at 8-byte aligned offsets, so the stores are whole words too.
 */
static __always_inline void set_addrs4(struct flow_key *key, const struct iphdr *ip,
				       const bool from_pod)
{
	__be32 saddr = ip->saddr;
	__be32 daddr = ip->daddr;

	if (from_pod) {
		__builtin_memcpy(key->local_addr, &saddr, sizeof(saddr));
		__builtin_memcpy(key->remote_addr, &daddr, sizeof(daddr));
	} else {
		__builtin_memcpy(key->local_addr, &daddr, sizeof(daddr));
		__builtin_memcpy(key->remote_addr, &saddr, sizeof(saddr));
	}
}

static __always_inline void set_addrs6(struct flow_key *key, const struct ipv6hdr *ip6,
				       const bool from_pod)
{
	if (from_pod) {
		__builtin_memcpy(key->local_addr, &ip6->saddr, sizeof(ip6->saddr));
		__builtin_memcpy(key->remote_addr, &ip6->daddr, sizeof(ip6->daddr));
	} else {
		__builtin_memcpy(key->local_addr, &ip6->daddr, sizeof(ip6->daddr));
		__builtin_memcpy(key->remote_addr, &ip6->saddr, sizeof(ip6->saddr));
	}
}

/*
 * ICMP and ICMPv6: an echo exchange is keyed by its identifier (as the local
 * port, both directions alike) and is a flow like any other. Every other
 * message is control traffic, not a connection: errors (unreachable, time
 * exceeded, packet too big) belong to the flow they report on, and IPv6
 * neighbour discovery and MLD are link-local plumbing. They are counted
 * (WEIR_CNT_ICMP_CONTROL) and never make flows, so they never make edges.
 */
static __always_inline int parse_icmp(void *l4, void *data_end, const bool v6,
				      struct flow_key *key, struct parsed *p)
{
	struct icmp_echo_hdr *icmp = l4;
	__u8 request = v6 ? ICMPV6_ECHO_REQUEST_TYPE : ICMP_ECHO_REQUEST;
	__u8 reply = v6 ? ICMPV6_ECHO_REPLY_TYPE : ICMP_ECHO_REPLY;

	if ((void *)(icmp + 1) > data_end)
		return WEIR_CNT_PARSE_ERROR;
	if (icmp->type != request && icmp->type != reply)
		return WEIR_CNT_ICMP_CONTROL;
	p->icmp_type = icmp->type;
	p->icmp_code = icmp->code;
	key->local_port = bpf_ntohs(icmp->id);
	key->remote_port = 0;
	p->opener = icmp->type == request ? OPENER_SENDER : OPENER_RECEIVER;
	return PARSE_OK;
}

/* A TCP header's flags and what they say about who opened the connection. */
static __always_inline void parse_tcp_flags(const struct tcphdr *tcp, struct parsed *p)
{
	/* byte 13 holds CWR..FIN; the UAPI struct only has bitfields */
	__u8 flags = ((const __u8 *)tcp)[13];

	p->tcp_flags = flags;
	if ((flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN)
		p->opener = OPENER_SENDER;
	else if ((flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == (TCP_FLAG_SYN | TCP_FLAG_ACK))
		p->opener = OPENER_RECEIVER;
	else
		p->opener = OPENER_SENDER_GUESSED;
}

static __always_inline int parse_l4(void *l4, void *data_end, const bool from_pod,
				    struct flow_key *key, struct parsed *p)
{
	switch (key->proto) {
	case IPPROTO_TCP: {
		struct tcphdr *tcp = l4;

		if ((void *)(tcp + 1) > data_end)
			return WEIR_CNT_PARSE_ERROR;
		parse_tcp_flags(tcp, p);
		set_ports(key, bpf_ntohs(tcp->source), bpf_ntohs(tcp->dest), from_pod);
		return PARSE_OK;
	}
	case IPPROTO_UDP: {
		struct udphdr *udp = l4;

		if ((void *)(udp + 1) > data_end)
			return WEIR_CNT_PARSE_ERROR;
		p->opener = OPENER_SENDER;
		set_ports(key, bpf_ntohs(udp->source), bpf_ntohs(udp->dest), from_pod);
		return PARSE_OK;
	}
	case IPPROTO_SCTP: {
		/* common header: source port, destination port, tag, checksum */
		__be16 *ports = l4;

		if (l4 + 12 > data_end)
			return WEIR_CNT_PARSE_ERROR;
		p->opener = OPENER_SENDER;
		set_ports(key, bpf_ntohs(ports[0]), bpf_ntohs(ports[1]), from_pod);
		return PARSE_OK;
	}
	case IPPROTO_ICMP:
		if (key->family != WEIR_FAMILY_IPV4)
			return WEIR_CNT_UNSUPPORTED_L4;
		return parse_icmp(l4, data_end, false, key, p);
	case IPPROTO_ICMPV6:
		if (key->family != WEIR_FAMILY_IPV6)
			return WEIR_CNT_UNSUPPORTED_L4;
		return parse_icmp(l4, data_end, true, key, p);
	default:
		return WEIR_CNT_UNSUPPORTED_L4;
	}
}

static __always_inline int parse_ipv4(void *l3, void *data_end, const bool from_pod,
				      struct flow_key *key, struct parsed *p)
{
	struct iphdr *ip = l3;
	void *l4;

	if ((void *)(ip + 1) > data_end)
		return WEIR_CNT_PARSE_ERROR;
	/* IHL < 5 would put L4 inside the IP header; past the end is truncation */
	if (ip->version != 4 || ip->ihl < 5)
		return WEIR_CNT_PARSE_ERROR;
	l4 = l3 + ip->ihl * 4;
	if (l4 > data_end)
		return WEIR_CNT_PARSE_ERROR;

	key->family = WEIR_FAMILY_IPV4;
	key->proto = ip->protocol;
	set_addrs4(key, ip, from_pod);
	/* A non-first fragment carries payload where the ports would be. */
	if (ip->frag_off & bpf_htons(IPV4_FRAG_OFFSET))
		return WEIR_CNT_FRAGMENT;
	return parse_l4(l4, data_end, from_pod, key, p);
}

static __always_inline int parse_ipv6(void *l3, void *data_end, const bool from_pod,
				      struct flow_key *key, struct parsed *p)
{
	struct ipv6hdr *ip6 = l3;
	void *cursor = ip6 + 1;
	__u8 nexthdr;
	int i;

	if (cursor > data_end)
		return WEIR_CNT_PARSE_ERROR;
	if (ip6->version != 6)
		return WEIR_CNT_PARSE_ERROR;
	key->family = WEIR_FAMILY_IPV6;
	set_addrs6(key, ip6, from_pod);
	nexthdr = ip6->nexthdr;

	for (i = 0; i < MAX_IPV6_EXT_HDRS; i++) {
		switch (nexthdr) {
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS: {
			struct ipv6_opt_hdr *opt = cursor;

			if ((void *)(opt + 1) > data_end)
				return WEIR_CNT_PARSE_ERROR;
			nexthdr = opt->nexthdr;
			cursor += (opt->hdrlen + 1) * 8; /* RFC 8200: 8-octet units, first excluded */
			break;
		}
		case IPPROTO_FRAGMENT: {
			struct ipv6_frag_hdr *frag = cursor;

			if ((void *)(frag + 1) > data_end)
				return WEIR_CNT_PARSE_ERROR;
			nexthdr = frag->nexthdr;
			key->proto = nexthdr;
			if (frag->frag_off & bpf_htons(IPV6_FRAG_OFFSET))
				return WEIR_CNT_FRAGMENT;
			cursor = frag + 1;
			break;
		}
		case IPPROTO_AH: {
			struct ipv6_opt_hdr *ah = cursor;

			if ((void *)(ah + 1) > data_end)
				return WEIR_CNT_PARSE_ERROR;
			nexthdr = ah->nexthdr;
			cursor += (ah->hdrlen + 2) * 4; /* RFC 4302: 4-octet units, minus 2 */
			break;
		}
		default:
			key->proto = nexthdr;
			return parse_l4(cursor, data_end, from_pod, key, p);
		}
	}
	/* longer chains than any real stack sends */
	return WEIR_CNT_PARSE_ERROR;
}

/*
 * Parse one frame. On success the key holds family, proto, addresses and
 * ports (ifindex is the caller's) and *p the flags and opener.
 */
static __always_inline int parse_packet(void *data, void *data_end, const bool from_pod,
					struct flow_key *key, struct parsed *p)
{
	struct ethhdr *eth = data;
	void *cursor = eth + 1;
	__be16 proto;
	int i;

	if (cursor > data_end)
		return WEIR_CNT_PARSE_ERROR;
	/* one 16-bit load: struct ethhdr is packed, so h_proto is read bytewise */
	proto = *(__be16 *)((void *)eth + offsetof(struct ethhdr, h_proto));

	/*
	 * Tags are parsed through so a tagged frame is never read as IP at the
	 * wrong offset. On a real veth the kernel usually moved the outer tag
	 * to skb->vlan_tci before TC already; in-band tags are still here.
	 */
	for (i = 0; i < MAX_VLAN_TAGS; i++) {
		struct vlan_hdr *vlan = cursor;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vlan + 1) > data_end)
			return WEIR_CNT_PARSE_ERROR;
		proto = vlan->encap_proto;
		cursor = vlan + 1;
	}

	if (proto == bpf_htons(ETH_P_IP))
		return parse_ipv4(cursor, data_end, from_pod, key, p);
	if (proto == bpf_htons(ETH_P_IPV6))
		return parse_ipv6(cursor, data_end, from_pod, key, p);
	/* ARP, LLDP, a third VLAN tag, ... */
	return WEIR_CNT_NON_IP;
}

/*
 * The common frame parsed straight into a FLOWS4 key: Ethernet without
 * in-band VLAN tags, IPv4 without options and not a fragment, TCP or UDP.
 * Fills *key but its ifindex (the caller's) and *p; returns false for any
 * other frame, which parse_packet() then parses (and counts what is wrong
 * with it). This skips the 48-byte flow_key on the per-packet path of an
 * existing IPv4 flow, the commonest packet by far.
 */
static __always_inline bool parse_common4(void *data, void *data_end, const bool from_pod,
					  struct flow_key4 *key, struct parsed *p)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	void *l4 = ip + 1;
	__be16 sport;
	__be16 dport;

	if (l4 > data_end)
		return false;
	if (*(__be16 *)((void *)eth + offsetof(struct ethhdr, h_proto)) != bpf_htons(ETH_P_IP))
		return false;
	if (ip->version != 4 || ip->ihl != 5 || (ip->frag_off & bpf_htons(IPV4_FRAG_OFFSET)))
		return false;
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = l4;

		if ((void *)(tcp + 1) > data_end)
			return false;
		parse_tcp_flags(tcp, p);
		sport = tcp->source;
		dport = tcp->dest;
	} else if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *udp = l4;

		if ((void *)(udp + 1) > data_end)
			return false;
		p->opener = OPENER_SENDER;
		sport = udp->source;
		dport = udp->dest;
	} else {
		return false;
	}
	key->local_addr = from_pod ? ip->saddr : ip->daddr;
	key->remote_addr = from_pod ? ip->daddr : ip->saddr;
	key->local_port = bpf_ntohs(from_pod ? sport : dport);
	key->remote_port = bpf_ntohs(from_pod ? dport : sport);
	key->proto = ip->protocol;
	key->_pad0[0] = 0;
	key->_pad0[1] = 0;
	key->_pad0[2] = 0;
	return true;
}

#endif /* WEIR_PARSE_H */
