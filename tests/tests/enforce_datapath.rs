//! Privileged enforcement tests: the policy maps filled by hand, flows
//! judged by the programs through `BPF_PROG_TEST_RUN`, and the pinned
//! datapath surviving its process on a real veth.
//!
//! They need root and a BPF-capable kernel and fail (never skip) without:
//! `cargo test -p weir-integration-tests --test enforce_datapath`.
//!
//! Test runs happen in the test thread's network namespace, where the kernel
//! runs the program on loopback: the ENDPOINTS entry is lo's ifindex.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::{
    maps::{MapData, RingBuf, lpm_trie::Key},
    programs::{SchedClassifier, TcAttachType},
};
use weir_ebpf::{
    abi::{
        CNT_AUDIT, CNT_DROPPED, CNT_EVENTS_LIMITED, CNT_MAX, CNT_NEW_FLOWS, CidrKeyData,
        DIR_EGRESS, DIR_INGRESS, EP_ISOLATED_EGRESS, EP_ISOLATED_INGRESS, EP_RULES_EGRESS,
        EP_RULES_INGRESS, EndpointInfo, FLOW_F_ANNOUNCED, FlowEvent, FlowKey, FlowKey4, FlowStats,
        ID_ANY, ID_HOST, ID_WORLD, IpKey, MODE_AUDIT, MODE_ENFORCE, MODE_OBSERVE,
        POLICY_KEY_FIXED_BITS, PeerKey, PolicyExactKey, PolicyKeyData, PolicyValue,
        REASON_DEFAULT_DENY, REASON_NONE, REASON_PEER_NOT_ALLOWED, REASON_PORT_NOT_ALLOWED,
        VERDICT_AUDIT, VERDICT_DROPPED, VERDICT_FORWARDED,
    },
    loader::{Datapath, FlowTable, LoadOptions, PolicyMaps, Program},
};
use weir_integration_tests::{
    netns::{NetNs, require_root},
    packets::{
        L4, echo, frame, ipv4, ipv6,
        tcp::{ACK, FIN, SYN},
        tcp4,
    },
    test_run::{addr16, family, key, lo_ifindex, must},
};

const TC_ACT_UNSPEC: i32 = -1;
const TC_ACT_SHOT: i32 = 2;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;

const POD: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const STRANGER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
const NODE: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
const POD6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
const PEER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);

/// Identities: the pod's own, and some peers.
const POD_ID: u32 = 1000;
const PEER_ID: u32 = 1001;

/// A port range as LPM prefixes: (first port, prefix bits), largest aligned
/// blocks first, as the compiler stores it.
fn port_prefixes(lo: u16, hi: u16) -> Vec<(u16, u32)> {
    let (mut start, end) = (u32::from(lo), u32::from(hi));
    let mut out = Vec::new();
    while start <= end {
        let mut size = if start == 0 {
            1 << 16
        } else {
            start & start.wrapping_neg()
        };
        while start + size - 1 > end {
            size >>= 1;
        }
        out.push((
            u16::try_from(start).expect("start <= hi, a port"),
            16 - size.trailing_zeros(),
        ));
        start += size;
    }
    out
}

#[test]
fn port_prefixes_cover_exactly_the_range() {
    assert_eq!(port_prefixes(80, 80), [(80, 16)]);
    assert_eq!(port_prefixes(0, 65535), [(0, 0)]);
    for (lo, hi) in [(8000, 8100), (1, 65535), (1024, 2047), (5, 9)] {
        let prefixes = port_prefixes(lo, hi);
        assert!(prefixes.len() <= 30);
        let covered: Vec<u16> = prefixes
            .iter()
            .flat_map(|&(p, bits)| {
                let n = 1u32 << (16 - bits);
                (0..n).map(move |i| u16::try_from(u32::from(p) + i).unwrap())
            })
            .collect();
        assert_eq!(covered, (lo..=hi).collect::<Vec<_>>(), "{lo}-{hi}");
    }
}

/// A loaded datapath with its flow table, policy maps and ring buffer out.
struct Harness {
    datapath: Datapath,
    flows: FlowTable,
    maps: PolicyMaps,
    ring: RingBuf<MapData>,
}

impl Harness {
    fn new() -> Self {
        Self::with(&LoadOptions::default())
    }

    fn with(opts: &LoadOptions) -> Self {
        require_root();
        let mut datapath = must("loading the datapath", Datapath::load(opts));
        let flows = must("taking the flow table", datapath.take_flow_table());
        let maps = must("taking the policy maps", datapath.take_policy_maps());
        let ring = must("taking the ring buffer", datapath.take_ring_buf());
        Self {
            datapath,
            flows,
            maps,
            ring,
        }
    }

    /// The test-run device (lo) as an endpoint of `POD_ID`.
    fn endpoint(&mut self, mode: u8, flags: u8) {
        let info = EndpointInfo {
            identity: POD_ID,
            mode,
            flags,
            ..EndpointInfo::default()
        };
        must(
            "ENDPOINTS insert",
            self.maps.endpoints.insert(lo_ifindex(), info, 0),
        );
    }

    fn identity(&mut self, ip: impl Into<IpAddr>, id: u32) {
        let ip = ip.into();
        let key = IpKey {
            family: family(ip),
            addr: addr16(ip),
            ..IpKey::default()
        };
        must("IDENTITIES insert", self.maps.identities.insert(key, id, 0));
    }

    fn cidr(&mut self, ip: impl Into<IpAddr>, bits: u32, id: u32) {
        let ip = ip.into();
        let data = CidrKeyData {
            family: family(ip),
            addr: addr16(ip),
            ..CidrKeyData::default()
        };
        must(
            "CIDRS insert",
            self.maps.cidrs.insert(&Key::new(32 + bits, data), id, 0),
        );
    }

    /// Allows `peer` on `proto` and the port range, and names the peer in
    /// PEERS, as the compiler does: one port in POLICY_EXACT, prefixes of
    /// a range in POLICY. `proto` 0: any protocol, any port.
    fn allow(&mut self, direction: u8, peer: u32, proto: u8, ports: (u16, u16)) {
        let prefixes = if proto == 0 {
            vec![(0, 0)]
        } else {
            port_prefixes(ports.0, ports.1)
        };
        for (port, bits) in prefixes {
            if proto != 0 && bits == 16 {
                let key = PolicyExactKey {
                    endpoint: POD_ID,
                    direction,
                    proto,
                    port: port.to_be(),
                    peer,
                };
                must(
                    "POLICY_EXACT insert",
                    self.maps
                        .policy_exact
                        .insert(key, PolicyValue { rule_id: 7 }, 0),
                );
                continue;
            }
            let data = PolicyKeyData {
                endpoint: POD_ID,
                direction,
                proto,
                peer,
                port: port.to_be(),
                ..PolicyKeyData::default()
            };
            must(
                "POLICY insert",
                self.maps.policy.insert(
                    &Key::new(POLICY_KEY_FIXED_BITS + bits, data),
                    PolicyValue { rule_id: 7 },
                    0,
                ),
            );
        }
        let key = PeerKey {
            endpoint: POD_ID,
            direction,
            peer,
            ..PeerKey::default()
        };
        must("PEERS insert", self.maps.peers.insert(key, 1, 0));
    }

    fn run(&self, program: Program, frame: &[u8]) -> i32 {
        must(
            "BPF_PROG_TEST_RUN",
            self.datapath.test_run(program, frame, 1),
        )
        .action
    }

    fn pod_sends(&self, frame: &[u8]) -> i32 {
        self.run(Program::FromPod, frame)
    }

    fn pod_receives(&self, frame: &[u8]) -> i32 {
        self.run(Program::ToPod, frame)
    }

    fn stats(&self, key: &FlowKey) -> FlowStats {
        must("looking up a flow", self.flows.get(key)).unwrap_or_else(|| {
            let all: Vec<_> = self.flows.iter().collect();
            panic!("no flow {key:?} in {all:#?}")
        })
    }

    fn verdict(&self, key: &FlowKey) -> (u8, u8) {
        let s = self.stats(key);
        (s.verdict, s.reason)
    }

    fn events(&mut self) -> Vec<FlowEvent> {
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
            out.push(must("decoding", FlowEvent::from_bytes(&item)));
        }
        out
    }

    fn counters(&self) -> [u64; CNT_MAX] {
        must("reading counters", self.datapath.counters())
    }
}

fn udp4(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    frame(ipv4(src, dst), L4::Udp { sport, dport })
}

fn ping4(src: Ipv4Addr, dst: Ipv4Addr, id: u16) -> Vec<u8> {
    frame(
        ipv4(src, dst),
        L4::Icmpv4 {
            kind: 8,
            code: 0,
            rest: echo(id, 1),
        },
    )
}

const EGRESS_WITH_RULES: u8 = EP_ISOLATED_EGRESS | EP_RULES_EGRESS;
const INGRESS_WITH_RULES: u8 = EP_ISOLATED_INGRESS | EP_RULES_INGRESS;

// ---- verdicts of new flows ----

#[test]
fn egress_rule_allows_its_port_and_peer_only() {
    let mut h = Harness::new();
    h.identity(PEER, PEER_ID);
    h.allow(DIR_EGRESS, PEER_ID, IPPROTO_TCP, (80, 80));
    h.endpoint(MODE_ENFORCE, EGRESS_WITH_RULES);

    assert_eq!(h.pod_sends(&tcp4(POD, 40000, PEER, 80, SYN)), TC_ACT_UNSPEC);
    assert_eq!(
        h.verdict(&key(IPPROTO_TCP, POD, 40000, PEER, 80)),
        (VERDICT_FORWARDED, REASON_NONE)
    );

    assert_eq!(h.pod_sends(&tcp4(POD, 40001, PEER, 81, SYN)), TC_ACT_SHOT);
    assert_eq!(
        h.verdict(&key(IPPROTO_TCP, POD, 40001, PEER, 81)),
        (VERDICT_DROPPED, REASON_PORT_NOT_ALLOWED)
    );

    // UDP to the allowed port: the rule is TCP only
    assert_eq!(h.pod_sends(&udp4(POD, 40002, PEER, 80)), TC_ACT_SHOT);
    assert_eq!(
        h.verdict(&key(IPPROTO_UDP, POD, 40002, PEER, 80)),
        (VERDICT_DROPPED, REASON_PORT_NOT_ALLOWED)
    );

    // an address nobody knows is WORLD, which no rule names
    assert_eq!(
        h.pod_sends(&tcp4(POD, 40003, STRANGER, 80, SYN)),
        TC_ACT_SHOT
    );
    assert_eq!(
        h.verdict(&key(IPPROTO_TCP, POD, 40003, STRANGER, 80)),
        (VERDICT_DROPPED, REASON_PEER_NOT_ALLOWED)
    );

    // ingress is not isolated: anyone may connect to the pod
    assert_eq!(
        h.pod_receives(&tcp4(STRANGER, 50000, POD, 22, SYN)),
        TC_ACT_UNSPEC
    );
    assert_eq!(
        h.verdict(&key(IPPROTO_TCP, POD, 22, STRANGER, 50000)),
        (VERDICT_FORWARDED, REASON_NONE)
    );

    let c = h.counters();
    assert_eq!((c[CNT_DROPPED], c[CNT_AUDIT]), (3, 0));
    assert_eq!(c[CNT_NEW_FLOWS], 5);
}

#[test]
fn isolated_without_rules_is_default_deny() {
    let mut h = Harness::new();
    h.identity(PEER, PEER_ID);
    h.endpoint(MODE_ENFORCE, EP_ISOLATED_INGRESS | EP_ISOLATED_EGRESS);

    assert_eq!(h.pod_sends(&tcp4(POD, 40000, PEER, 80, SYN)), TC_ACT_SHOT);
    assert_eq!(
        h.verdict(&key(IPPROTO_TCP, POD, 40000, PEER, 80)),
        (VERDICT_DROPPED, REASON_DEFAULT_DENY)
    );
    assert_eq!(
        h.pod_receives(&tcp4(PEER, 50000, POD, 80, SYN)),
        TC_ACT_SHOT
    );
    assert_eq!(
        h.verdict(&key(IPPROTO_TCP, POD, 80, PEER, 50000)),
        (VERDICT_DROPPED, REASON_DEFAULT_DENY)
    );
}

#[test]
fn port_ranges_are_prefixes() {
    let mut h = Harness::new();
    h.identity(PEER, PEER_ID);
    h.allow(DIR_INGRESS, PEER_ID, IPPROTO_TCP, (8000, 8100));
    h.endpoint(MODE_ENFORCE, INGRESS_WITH_RULES);

    for (port, allowed) in [
        (7999, false),
        (8000, true),
        (8050, true),
        (8064, true),
        (8100, true),
        (8101, false),
    ] {
        let action = h.pod_receives(&tcp4(PEER, 50000, POD, port, SYN));
        let expected = if allowed { TC_ACT_UNSPEC } else { TC_ACT_SHOT };
        assert_eq!(action, expected, "port {port}");
        let (verdict, reason) = h.verdict(&key(IPPROTO_TCP, POD, port, PEER, 50000));
        if allowed {
            assert_eq!((verdict, reason), (VERDICT_FORWARDED, REASON_NONE));
        } else {
            assert_eq!(
                (verdict, reason),
                (VERDICT_DROPPED, REASON_PORT_NOT_ALLOWED)
            );
        }
    }
}

#[test]
fn any_peer_rule_allows_everyone_on_its_port() {
    let mut h = Harness::new();
    h.identity(PEER, PEER_ID);
    h.allow(DIR_EGRESS, ID_ANY, IPPROTO_TCP, (443, 443));
    h.endpoint(MODE_ENFORCE, EGRESS_WITH_RULES);

    assert_eq!(
        h.pod_sends(&tcp4(POD, 40000, STRANGER, 443, SYN)),
        TC_ACT_UNSPEC
    );
    assert_eq!(
        h.pod_sends(&tcp4(POD, 40001, PEER, 443, SYN)),
        TC_ACT_UNSPEC
    );
    // every peer is named (by the any-peer rule): the port is what is wrong
    assert_eq!(h.pod_sends(&tcp4(POD, 40002, PEER, 444, SYN)), TC_ACT_SHOT);
    assert_eq!(
        h.verdict(&key(IPPROTO_TCP, POD, 40002, PEER, 444)),
        (VERDICT_DROPPED, REASON_PORT_NOT_ALLOWED)
    );
}

#[test]
fn any_protocol_rule_allows_icmp_and_every_port() {
    const OTHER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 4);
    const OTHER_ID: u32 = 1002;
    let mut h = Harness::new();
    h.identity(PEER, PEER_ID);
    h.identity(OTHER, OTHER_ID);
    h.allow(DIR_EGRESS, PEER_ID, 0, (0, 0));
    h.allow(DIR_EGRESS, OTHER_ID, IPPROTO_TCP, (80, 80));
    h.endpoint(MODE_ENFORCE, EGRESS_WITH_RULES);

    assert_eq!(h.pod_sends(&ping4(POD, PEER, 7)), TC_ACT_UNSPEC);
    assert_eq!(
        h.verdict(&key(IPPROTO_ICMP, POD, 7, PEER, 0)),
        (VERDICT_FORWARDED, REASON_NONE)
    );
    assert_eq!(h.pod_sends(&udp4(POD, 40000, PEER, 5353)), TC_ACT_UNSPEC);
    assert_eq!(h.pod_sends(&tcp4(POD, 40000, PEER, 1, SYN)), TC_ACT_UNSPEC);

    // ICMP has no ports: a TCP rule never allows it, whatever its ports
    assert_eq!(h.pod_sends(&ping4(POD, OTHER, 8)), TC_ACT_SHOT);
    assert_eq!(
        h.verdict(&key(IPPROTO_ICMP, POD, 8, OTHER, 0)),
        (VERDICT_DROPPED, REASON_PORT_NOT_ALLOWED)
    );
    assert_eq!(h.pod_sends(&ping4(POD, STRANGER, 9)), TC_ACT_SHOT);
    assert_eq!(
        h.verdict(&key(IPPROTO_ICMP, POD, 9, STRANGER, 0)),
        (VERDICT_DROPPED, REASON_PEER_NOT_ALLOWED)
    );
}

#[test]
fn cidr_identities_are_longest_prefix_matches() {
    const CIDR_ID: u32 = 2000;
    const EXCEPT_ID: u32 = 2001;
    let mut h = Harness::new();
    // 192.168.0.0/16 except 192.168.1.0/24: the except has its own identity
    h.cidr(Ipv4Addr::new(192, 168, 0, 0), 16, CIDR_ID);
    h.cidr(Ipv4Addr::new(192, 168, 1, 0), 24, EXCEPT_ID);
    // an exact entry (a pod) is its own identity, and in the block too
    h.identity(Ipv4Addr::new(192, 168, 5, 6), PEER_ID);
    h.allow(DIR_EGRESS, CIDR_ID, IPPROTO_TCP, (80, 80));
    h.endpoint(MODE_ENFORCE, EGRESS_WITH_RULES);

    let inside = Ipv4Addr::new(192, 168, 5, 5);
    let excepted = Ipv4Addr::new(192, 168, 1, 5);
    let exact = Ipv4Addr::new(192, 168, 5, 6);
    let outside = Ipv4Addr::new(192, 169, 0, 1);
    assert_eq!(
        h.pod_sends(&tcp4(POD, 40000, inside, 80, SYN)),
        TC_ACT_UNSPEC
    );
    assert_eq!(
        h.pod_sends(&tcp4(POD, 40000, excepted, 80, SYN)),
        TC_ACT_SHOT
    );
    assert_eq!(
        h.pod_sends(&tcp4(POD, 40000, exact, 80, SYN)),
        TC_ACT_UNSPEC
    );
    assert_eq!(
        h.pod_sends(&tcp4(POD, 40000, outside, 80, SYN)),
        TC_ACT_SHOT
    );

    let peers: Vec<(Ipv4Addr, u32, u8)> = h
        .events()
        .iter()
        .map(|e| {
            let IpAddr::V4(ip) = e.key.remote_ip() else {
                panic!("IPv4 flows only")
            };
            (ip, e.peer_identity, e.reason)
        })
        .collect();
    assert_eq!(
        peers,
        [
            (inside, CIDR_ID, REASON_NONE),
            (excepted, EXCEPT_ID, REASON_PEER_NOT_ALLOWED),
            (exact, PEER_ID, REASON_NONE),
            (outside, ID_WORLD, REASON_PEER_NOT_ALLOWED),
        ]
    );
}

#[test]
fn ip_blocks_match_pod_addresses_after_their_identity() {
    // Pods 10.0.0.2 (PEER_ID) and 10.0.0.3 (STRANGER_ID), v6 fd00::2 (PEER_ID):
    // 10.0.0.0/24 except 10.0.0.3/32 on TCP 80 (the upstream "except clause"
    // scenario), the except itself by selector on UDP 53, fd00::/64 on any
    // protocol (ICMP included, the POLICY trie), and PEER_ID by identity on
    // TCP 81.
    const STRANGER_ID: u32 = 1002;
    const CIDR_ID: u32 = 2000;
    const EXCEPT_ID: u32 = 2001;
    const CIDR6_ID: u32 = 2002;
    let mut h = Harness::new();
    h.identity(PEER, PEER_ID);
    h.identity(STRANGER, STRANGER_ID);
    h.identity(PEER6, PEER_ID);
    h.cidr(Ipv4Addr::new(10, 0, 0, 0), 24, CIDR_ID);
    h.cidr(STRANGER, 32, EXCEPT_ID);
    h.cidr(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0), 64, CIDR6_ID);
    h.allow(DIR_EGRESS, CIDR_ID, IPPROTO_TCP, (80, 80));
    h.allow(DIR_EGRESS, STRANGER_ID, IPPROTO_UDP, (53, 53));
    h.allow(DIR_EGRESS, CIDR6_ID, 0, (0, 0));
    h.allow(DIR_EGRESS, PEER_ID, IPPROTO_TCP, (81, 81));
    h.endpoint(MODE_ENFORCE, EGRESS_WITH_RULES);

    let cases: [(Vec<u8>, FlowKey, i32, u8); 8] = [
        // by the block (its CIDR identity), on the block's port only
        (
            tcp4(POD, 40000, PEER, 80, SYN),
            key(IPPROTO_TCP, POD, 40000, PEER, 80),
            TC_ACT_UNSPEC,
            REASON_NONE,
        ),
        (
            tcp4(POD, 40001, PEER, 82, SYN),
            key(IPPROTO_TCP, POD, 40001, PEER, 82),
            TC_ACT_SHOT,
            REASON_PORT_NOT_ALLOWED,
        ),
        // by identity, as before
        (
            tcp4(POD, 40002, PEER, 81, SYN),
            key(IPPROTO_TCP, POD, 40002, PEER, 81),
            TC_ACT_UNSPEC,
            REASON_NONE,
        ),
        // the except: not by the block, by its selector on UDP 53
        (
            tcp4(POD, 40003, STRANGER, 80, SYN),
            key(IPPROTO_TCP, POD, 40003, STRANGER, 80),
            TC_ACT_SHOT,
            REASON_PORT_NOT_ALLOWED,
        ),
        (
            udp4(POD, 40004, STRANGER, 53),
            key(IPPROTO_UDP, POD, 40004, STRANGER, 53),
            TC_ACT_UNSPEC,
            REASON_NONE,
        ),
        // a pod in no block with no rule of its own
        (
            tcp4(POD, 40005, Ipv4Addr::new(10, 0, 1, 9), 80, SYN),
            key(IPPROTO_TCP, POD, 40005, Ipv4Addr::new(10, 0, 1, 9), 80),
            TC_ACT_SHOT,
            REASON_PEER_NOT_ALLOWED,
        ),
        // IPv6 pod address: any protocol by the block, ICMPv6 echo too
        (
            frame(
                ipv6(POD6, PEER6),
                L4::Udp {
                    sport: 40006,
                    dport: 9,
                },
            ),
            key(IPPROTO_UDP, POD6, 40006, PEER6, 9),
            TC_ACT_UNSPEC,
            REASON_NONE,
        ),
        (
            frame(
                ipv6(POD6, PEER6),
                L4::Icmpv6 {
                    kind: 128,
                    code: 0,
                    rest: echo(7, 1),
                },
            ),
            key(IPPROTO_ICMPV6, POD6, 7, PEER6, 0),
            TC_ACT_UNSPEC,
            REASON_NONE,
        ),
    ];
    for (packet, flow, action, reason) in cases {
        assert_eq!(h.pod_sends(&packet), action, "{flow:?}");
        assert_eq!(h.stats(&flow).reason, reason, "{flow:?}");
    }
    // The peer identity reported is the pod's own.
    let peers: Vec<u32> = h.events().iter().map(|e| e.peer_identity).collect();
    assert_eq!(
        peers,
        [
            PEER_ID,
            PEER_ID,
            PEER_ID,
            STRANGER_ID,
            STRANGER_ID,
            ID_WORLD,
            PEER_ID,
            PEER_ID
        ]
    );
}

#[test]
fn cached_cidr_identities_follow_the_epoch() {
    const CIDR_ID: u32 = 2000;
    const EXCEPT_ID: u32 = 2001;
    let mut h = Harness::new();
    h.cidr(Ipv4Addr::new(192, 168, 0, 0), 16, CIDR_ID);
    h.allow(DIR_EGRESS, CIDR_ID, IPPROTO_TCP, (80, 80));
    h.endpoint(MODE_ENFORCE, EGRESS_WITH_RULES);
    let peer = Ipv4Addr::new(192, 168, 5, 5);
    assert_eq!(h.pod_sends(&tcp4(POD, 40000, peer, 80, SYN)), TC_ACT_UNSPEC);

    // The address's identity is remembered: a new except changes nothing
    // for it until the epoch moves (the agent bumps it after every change
    // of CIDRS), then the trie is walked again.
    h.cidr(Ipv4Addr::new(192, 168, 5, 0), 24, EXCEPT_ID);
    assert_eq!(
        h.pod_sends(&tcp4(POD, 40001, peer, 80, SYN)),
        TC_ACT_UNSPEC,
        "the cached identity is used"
    );
    let epoch = must("CIDRS_EPOCH", h.maps.cidrs_epoch.get());
    assert_eq!(
        must("CIDRS_EPOCH bump", h.maps.cidrs_epoch.bump()),
        epoch + 1
    );
    assert_eq!(h.pod_sends(&tcp4(POD, 40002, peer, 80, SYN)), TC_ACT_SHOT);
    // And the new answer is remembered in turn.
    assert_eq!(h.pod_sends(&tcp4(POD, 40003, peer, 80, SYN)), TC_ACT_SHOT);
    let peers: Vec<u32> = h.events().iter().map(|e| e.peer_identity).collect();
    assert_eq!(peers, [CIDR_ID, CIDR_ID, EXCEPT_ID, EXCEPT_ID]);
}

#[test]
fn the_host_is_always_allowed() {
    let mut h = Harness::new();
    h.identity(NODE, ID_HOST);
    h.endpoint(MODE_ENFORCE, EP_ISOLATED_INGRESS | EP_ISOLATED_EGRESS);

    // kubelet probes the pod, the pod talks to the node
    assert_eq!(
        h.pod_receives(&tcp4(NODE, 50000, POD, 8080, SYN)),
        TC_ACT_UNSPEC
    );
    assert_eq!(h.pod_sends(&udp4(POD, 40000, NODE, 53)), TC_ACT_UNSPEC);
    assert_eq!(h.pod_sends(&tcp4(POD, 40000, PEER, 53, SYN)), TC_ACT_SHOT);
    let events = h.events();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].peer_identity, ID_HOST);
    assert_eq!(events[0].verdict, VERDICT_FORWARDED);
    assert_eq!(events[2].reason, REASON_DEFAULT_DENY);
}

#[test]
fn ipv6_flows_are_judged_too() {
    let mut h = Harness::new();
    h.identity(PEER6, PEER_ID);
    h.cidr(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32, 3000);
    h.allow(DIR_EGRESS, PEER_ID, IPPROTO_TCP, (443, 443));
    h.allow(DIR_EGRESS, 3000, IPPROTO_UDP, (53, 53));
    h.endpoint(MODE_ENFORCE, EGRESS_WITH_RULES);

    let tcp6 = |dst: Ipv6Addr, dport: u16| {
        frame(
            ipv6(POD6, dst),
            L4::Tcp {
                sport: 40000,
                dport,
                flags: SYN,
            },
        )
    };
    let world6 = Ipv6Addr::new(0x2001, 0xdb9, 0, 0, 0, 0, 0, 1);
    let in_cidr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
    assert_eq!(h.pod_sends(&tcp6(PEER6, 443)), TC_ACT_UNSPEC);
    assert_eq!(h.pod_sends(&tcp6(PEER6, 444)), TC_ACT_SHOT);
    assert_eq!(h.pod_sends(&tcp6(world6, 443)), TC_ACT_SHOT);
    let udp6 = frame(
        ipv6(POD6, in_cidr),
        L4::Udp {
            sport: 40000,
            dport: 53,
        },
    );
    assert_eq!(h.pod_sends(&udp6), TC_ACT_UNSPEC);
    // an IPv4 address with the same first bytes is another family
    let v4_lookalike = Ipv4Addr::new(0x20, 0x01, 0x0d, 0xb8);
    assert_eq!(
        h.pod_sends(&udp4(POD, 40000, v4_lookalike, 53)),
        TC_ACT_SHOT
    );
}

// ---- modes ----

#[test]
fn audit_mode_passes_and_records() {
    let mut h = Harness::new();
    h.endpoint(MODE_AUDIT, EP_ISOLATED_EGRESS);

    let syn = tcp4(POD, 40000, PEER, 80, SYN);
    assert_eq!(h.pod_sends(&syn), TC_ACT_UNSPEC);
    assert_eq!(
        h.pod_receives(&tcp4(PEER, 80, POD, 40000, SYN | ACK)),
        TC_ACT_UNSPEC
    );
    assert_eq!(h.pod_sends(&tcp4(POD, 40000, PEER, 80, ACK)), TC_ACT_UNSPEC);
    assert_eq!(
        h.verdict(&key(IPPROTO_TCP, POD, 40000, PEER, 80)),
        (VERDICT_AUDIT, REASON_DEFAULT_DENY)
    );
    let c = h.counters();
    assert_eq!(
        (c[CNT_AUDIT], c[CNT_DROPPED]),
        (3, 0),
        "every packet counts"
    );
    let events = h.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].verdict, VERDICT_AUDIT);
}

#[test]
fn observe_mode_and_unknown_endpoints_judge_nothing() {
    let mut h = Harness::new();
    // no ENDPOINTS entry
    assert_eq!(h.pod_sends(&tcp4(POD, 40000, PEER, 80, SYN)), TC_ACT_UNSPEC);
    // observe mode, even with isolation flags
    h.endpoint(MODE_OBSERVE, EP_ISOLATED_EGRESS | EP_ISOLATED_INGRESS);
    assert_eq!(h.pod_sends(&tcp4(POD, 40001, PEER, 80, SYN)), TC_ACT_UNSPEC);
    assert_eq!(
        h.pod_receives(&tcp4(PEER, 50000, POD, 80, SYN)),
        TC_ACT_UNSPEC
    );
    for e in h.events() {
        assert_eq!((e.verdict, e.reason, e.peer_identity), (0, 0, 0), "{e:?}");
        assert_ne!(e.flags & FLOW_F_ANNOUNCED, 0);
    }
    for entry in h.flows.iter() {
        let (_, s) = must("iterating", entry);
        assert_eq!((s.verdict, s.reason), (VERDICT_FORWARDED, REASON_NONE));
    }
    let c = h.counters();
    assert_eq!(
        (c[CNT_DROPPED], c[CNT_AUDIT], c[CNT_EVENTS_LIMITED]),
        (0, 0, 0)
    );
}

#[test]
fn leaving_enforce_mode_releases_dropped_flows() {
    let mut h = Harness::new();
    h.endpoint(MODE_ENFORCE, EP_ISOLATED_EGRESS);
    let syn = tcp4(POD, 40000, PEER, 80, SYN);
    let k = key(IPPROTO_TCP, POD, 40000, PEER, 80);
    assert_eq!(h.pod_sends(&syn), TC_ACT_SHOT);

    h.endpoint(MODE_AUDIT, EP_ISOLATED_EGRESS);
    assert_eq!(h.pod_sends(&syn), TC_ACT_UNSPEC);
    assert_eq!(h.verdict(&k), (VERDICT_AUDIT, REASON_DEFAULT_DENY));

    // and an audited flow stays passing when the namespace goes to enforce:
    // a mode change never breaks a connection that exists
    h.endpoint(MODE_ENFORCE, EP_ISOLATED_EGRESS);
    assert_eq!(h.pod_sends(&syn), TC_ACT_UNSPEC);
    assert_eq!(h.pod_sends(&tcp4(POD, 40001, PEER, 80, SYN)), TC_ACT_SHOT);

    // observe (or no endpoint): forwarded
    h.endpoint(MODE_OBSERVE, EP_ISOLATED_EGRESS);
    let k2 = key(IPPROTO_TCP, POD, 40001, PEER, 80);
    assert_eq!(h.pod_sends(&tcp4(POD, 40001, PEER, 80, SYN)), TC_ACT_UNSPEC);
    assert_eq!(h.verdict(&k2), (VERDICT_FORWARDED, REASON_NONE));
    assert_eq!(h.counters()[CNT_DROPPED], 2);
}

#[test]
fn enforcing_a_namespace_keeps_its_established_flows() {
    let mut h = Harness::new();
    h.endpoint(MODE_OBSERVE, 0);
    assert_eq!(h.pod_sends(&tcp4(POD, 40000, PEER, 80, SYN)), TC_ACT_UNSPEC);
    h.endpoint(MODE_ENFORCE, EP_ISOLATED_EGRESS | EP_ISOLATED_INGRESS);
    assert_eq!(
        h.pod_receives(&tcp4(PEER, 80, POD, 40000, SYN | ACK)),
        TC_ACT_UNSPEC
    );
    assert_eq!(h.pod_sends(&tcp4(POD, 40000, PEER, 80, ACK)), TC_ACT_UNSPEC);
    assert_eq!(h.pod_sends(&tcp4(POD, 40001, PEER, 80, SYN)), TC_ACT_SHOT);
}

/// A new connection on a reused 5-tuple is judged again: the namespace went
/// to enforce while the old connection was open (kept, as established
/// connections are), and after its FIN the client's next SYN from the same
/// port is a new connection, which the policy denies.
#[test]
fn a_new_connection_on_a_reused_tuple_is_judged_again() {
    let mut h = Harness::new();
    h.identity(PEER, PEER_ID);
    h.endpoint(MODE_OBSERVE, 0);
    let k = key(IPPROTO_TCP, POD, 40000, PEER, 80);
    assert_eq!(h.pod_sends(&tcp4(POD, 40000, PEER, 80, SYN)), TC_ACT_UNSPEC);
    h.endpoint(MODE_ENFORCE, EGRESS_WITH_RULES);
    h.allow(DIR_EGRESS, PEER_ID, IPPROTO_TCP, (443, 443));
    for (from_pod, frame) in [
        (false, tcp4(PEER, 80, POD, 40000, SYN | ACK)),
        (true, tcp4(POD, 40000, PEER, 80, ACK)),
        (true, tcp4(POD, 40000, PEER, 80, FIN | ACK)),
        (false, tcp4(PEER, 80, POD, 40000, FIN | ACK)),
    ] {
        let action = if from_pod {
            h.pod_sends(&frame)
        } else {
            h.pod_receives(&frame)
        };
        assert_eq!(action, TC_ACT_UNSPEC, "the established connection is kept");
    }
    assert_eq!(h.verdict(&k), (VERDICT_FORWARDED, REASON_NONE));
    h.events();

    assert_eq!(h.pod_sends(&tcp4(POD, 40000, PEER, 80, SYN)), TC_ACT_SHOT);
    let s = h.stats(&k);
    assert_eq!(s.connections, 2);
    assert_eq!(
        (s.verdict, s.reason),
        (VERDICT_DROPPED, REASON_PORT_NOT_ALLOWED)
    );
    let events = h.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(
        (events[0].connection, events[0].verdict, events[0].direction),
        (2, VERDICT_DROPPED, DIR_EGRESS)
    );
    // its retransmission stays dropped, as part of the new connection
    assert_eq!(h.pod_sends(&tcp4(POD, 40000, PEER, 80, SYN)), TC_ACT_SHOT);
    assert_eq!(h.stats(&k).connections, 2);
    assert_eq!(h.counters()[CNT_DROPPED], 2);
}

// ---- connection tracking ----

#[test]
fn replies_of_allowed_flows_pass_and_denied_flows_stay_dropped() {
    let mut h = Harness::new();
    h.identity(PEER, PEER_ID);
    h.allow(DIR_EGRESS, PEER_ID, IPPROTO_TCP, (80, 80));
    // ingress isolated with no ingress rule: only replies may come in
    h.endpoint(MODE_ENFORCE, EGRESS_WITH_RULES | EP_ISOLATED_INGRESS);

    assert_eq!(h.pod_sends(&tcp4(POD, 40000, PEER, 80, SYN)), TC_ACT_UNSPEC);
    assert_eq!(
        h.pod_receives(&tcp4(PEER, 80, POD, 40000, SYN | ACK)),
        TC_ACT_UNSPEC
    );
    assert_eq!(h.pod_sends(&tcp4(POD, 40000, PEER, 80, ACK)), TC_ACT_UNSPEC);
    assert_eq!(
        h.pod_receives(&tcp4(PEER, 80, POD, 40000, ACK)),
        TC_ACT_UNSPEC
    );
    // the peer opening its own connection is judged at ingress
    assert_eq!(
        h.pod_receives(&tcp4(PEER, 50000, POD, 80, SYN)),
        TC_ACT_SHOT
    );

    // a denied flow: retransmits and anything of it both ways are dropped
    let denied = tcp4(POD, 40001, PEER, 81, SYN);
    assert_eq!(h.pod_sends(&denied), TC_ACT_SHOT);
    assert_eq!(h.pod_sends(&denied), TC_ACT_SHOT);
    assert_eq!(
        h.pod_receives(&tcp4(PEER, 81, POD, 40001, SYN | ACK)),
        TC_ACT_SHOT
    );
    let s = h.stats(&key(IPPROTO_TCP, POD, 40001, PEER, 81));
    assert_eq!((s.packets_from_pod, s.packets_to_pod), (2, 1));
    assert_eq!(h.counters()[CNT_DROPPED], 4);
    assert_eq!(h.events().len(), 3, "one event per flow");
}

// ---- events ----

#[test]
fn events_carry_verdict_reason_direction_and_peer() {
    let mut h = Harness::new();
    h.identity(PEER, PEER_ID);
    h.allow(DIR_EGRESS, PEER_ID, IPPROTO_TCP, (80, 80));
    h.allow(DIR_INGRESS, PEER_ID, IPPROTO_TCP, (8080, 8080));
    h.endpoint(MODE_ENFORCE, EGRESS_WITH_RULES | INGRESS_WITH_RULES);

    h.pod_sends(&tcp4(POD, 40000, PEER, 80, SYN));
    h.pod_sends(&tcp4(POD, 40001, PEER, 81, SYN));
    h.pod_receives(&tcp4(PEER, 50000, POD, 9090, SYN));
    h.pod_receives(&tcp4(STRANGER, 50000, POD, 8080, SYN));
    let got: Vec<_> = h
        .events()
        .iter()
        .map(|e| (e.verdict, e.reason, e.direction, e.peer_identity))
        .collect();
    assert_eq!(
        got,
        [
            (VERDICT_FORWARDED, REASON_NONE, DIR_EGRESS, PEER_ID),
            (
                VERDICT_DROPPED,
                REASON_PORT_NOT_ALLOWED,
                DIR_EGRESS,
                PEER_ID
            ),
            (
                VERDICT_DROPPED,
                REASON_PORT_NOT_ALLOWED,
                DIR_INGRESS,
                PEER_ID
            ),
            (
                VERDICT_DROPPED,
                REASON_PEER_NOT_ALLOWED,
                DIR_INGRESS,
                ID_WORLD
            ),
        ]
    );
}

/// Keeps the calling thread on one CPU: the rate limit is per CPU.
fn pin_to_one_cpu() {
    use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
    use nix::unistd::Pid;
    let allowed = must("sched_getaffinity", sched_getaffinity(Pid::from_raw(0)));
    let cpu = (0..CpuSet::count())
        .find(|&c| allowed.is_set(c).unwrap_or(false))
        .expect("some CPU is allowed");
    let mut one = CpuSet::new();
    must("CpuSet::set", one.set(cpu));
    must(
        "sched_setaffinity",
        sched_setaffinity(Pid::from_raw(0), &one),
    );
}

#[test]
fn events_of_denied_flows_are_rate_limited() {
    const FLOWS: u32 = 10_000;
    const RATE: u32 = 1000;
    const BURST: u32 = 100;
    let mut h = Harness::with(&LoadOptions {
        ringbuf_bytes: 1 << 20,
        verdict_events_per_sec: RATE,
        verdict_events_burst: BURST,
        ..LoadOptions::default()
    });
    h.endpoint(MODE_ENFORCE, EP_ISOLATED_EGRESS);
    // test runs in a std::thread so the affinity does not leak to other tests
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            pin_to_one_cpu();
            for i in 0..FLOWS {
                let [a, b] = u16::try_from(i / 60000).unwrap().to_be_bytes();
                let dst = Ipv4Addr::new(10, 1, a, b);
                let sport = 1024 + u16::try_from(i % 60000).unwrap();
                assert_eq!(h.pod_sends(&tcp4(POD, sport, dst, 80, SYN)), TC_ACT_SHOT);
            }
        });
    });
    let elapsed = start.elapsed();
    let events = h.events();
    let n = u64::try_from(events.len()).unwrap();
    let refill = u64::try_from(u128::from(RATE) * elapsed.as_nanos() / 1_000_000_000).unwrap();
    let bound = u64::from(BURST) + refill + 1;
    assert!(
        n >= u64::from(BURST) && n <= bound,
        "{n} events for {FLOWS} denied flows in {elapsed:?} (bound {bound})"
    );
    let c = h.counters();
    assert_eq!(c[CNT_EVENTS_LIMITED], u64::from(FLOWS) - n);
    assert_eq!(c[CNT_NEW_FLOWS], u64::from(FLOWS));
    // every flow is in the table with its verdict; the sweep finds the
    // unannounced ones
    let (mut flows, mut unannounced) = (0u32, 0u32);
    for entry in h.flows.iter() {
        let (_, s) = must("iterating", entry);
        assert_eq!(s.verdict, VERDICT_DROPPED);
        flows += 1;
        if s.flags & FLOW_F_ANNOUNCED == 0 {
            unannounced += 1;
        }
    }
    assert_eq!(flows, FLOWS);
    assert_eq!(u64::from(unannounced), c[CNT_EVENTS_LIMITED]);
    // allowed flows are not limited
    h.endpoint(MODE_ENFORCE, 0);
    for sport in 0..10 {
        h.pod_sends(&tcp4(POD, sport + 1, PEER, 80, SYN));
    }
    assert_eq!(h.events().len(), 10);
}

// ---- pinning ----

/// A private bpffs mounted on a temporary directory (this machine's
/// /sys/fs/bpf may not be one), with the pin directory inside; on drop the
/// pins are cleaned up and the file system unmounted.
struct PinDir {
    mount: tempfile::TempDir,
    path: PathBuf,
}

impl PinDir {
    fn new() -> Self {
        use nix::mount::{MsFlags, mount};
        require_root();
        let mount_dir = must("tempdir", tempfile::tempdir());
        must(
            "mounting a bpffs",
            mount(
                Some("bpf"),
                mount_dir.path(),
                Some("bpf"),
                MsFlags::empty(),
                None::<&str>,
            ),
        );
        let path = mount_dir.path().join("weir");
        Self {
            mount: mount_dir,
            path,
        }
    }

    fn opts(&self) -> LoadOptions {
        LoadOptions {
            pin: Some(self.path.clone()),
            ..LoadOptions::default()
        }
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        use nix::mount::{MntFlags, umount2};
        let cleanup = Datapath::cleanup(&self.path);
        let unmount = umount2(self.mount.path(), MntFlags::MNT_DETACH);
        if !std::thread::panicking() {
            must("cleanup", cleanup);
            must("unmounting the bpffs", unmount);
        }
    }
}

#[test]
fn a_second_load_adopts_the_pinned_maps() {
    let pin = PinDir::new();
    let first = {
        let mut h = Harness::with(&pin.opts());
        h.endpoint(MODE_ENFORCE, EP_ISOLATED_EGRESS);
        h.identity(PEER, PEER_ID);
        assert_eq!(h.pod_sends(&tcp4(POD, 40000, PEER, 80, SYN)), TC_ACT_SHOT);
        h.stats(&key(IPPROTO_TCP, POD, 40000, PEER, 80))
    };
    for name in [
        "FLOWS4",
        "FLOWS",
        "EVENTS",
        "COUNTERS",
        "ENDPOINTS",
        "POLICY",
        "links",
    ] {
        assert!(pin.path.join(name).exists(), "{name} is pinned");
    }

    let h = Harness::with(&pin.opts());
    assert_eq!(h.stats(&key(IPPROTO_TCP, POD, 40000, PEER, 80)), first);
    let ep = must("ENDPOINTS get", h.maps.endpoints.get(&lo_ifindex(), 0));
    assert_eq!((ep.identity, ep.mode), (POD_ID, MODE_ENFORCE));
    assert_eq!(h.counters()[CNT_DROPPED], 1, "counters are pinned too");
    // the established verdict still holds under the new programs
    assert_eq!(h.pod_sends(&tcp4(POD, 40000, PEER, 80, SYN)), TC_ACT_SHOT);
    assert_eq!(h.maps.capacities.policy, 262_144);
    drop(h);

    must("cleanup", Datapath::cleanup(&pin.path));
    assert!(!pin.path.exists());
    let fresh = Harness::with(&pin.opts());
    assert!(
        fresh.flows.iter().next().is_none(),
        "cleanup freed the maps"
    );
}

/// Builds before `FLOWS4` kept IPv4 flows in `FLOWS`, by the 48-byte key.
/// A new agent adopting such a pinned table carries those flows on: their
/// established verdict holds, their packets are counted in the old entry,
/// the table reads them once and removes them; new flows go to `FLOWS4`.
#[test]
fn ipv4_flows_of_a_table_pinned_before_flows4_keep_their_verdict() {
    use aya::maps::{HashMap as BpfHash, Map};
    let pin = PinDir::new();
    let k = key(IPPROTO_TCP, POD, 40000, PEER, 80);
    {
        // an established, forwarded flow, as an older build left it
        let h = Harness::with(&pin.opts());
        assert_eq!(h.pod_sends(&tcp4(POD, 40000, PEER, 80, SYN)), TC_ACT_UNSPEC);
        let stats = h.stats(&k);
        let pinned = |name: &str| {
            let data = must(
                "opening a pinned map",
                MapData::from_pin(pin.path.join(name)),
            );
            Map::HashMap(data)
        };
        let mut v4: BpfHash<_, FlowKey4, FlowStats> =
            must("FLOWS4", BpfHash::try_from(pinned("FLOWS4")));
        must("FLOWS4 remove", v4.remove(&FlowKey4::of(&k).expect("IPv4")));
        let mut v6: BpfHash<_, FlowKey, FlowStats> =
            must("FLOWS", BpfHash::try_from(pinned("FLOWS")));
        must("FLOWS insert", v6.insert(k, stats, 0));
    }

    let mut h = Harness::with(&pin.opts());
    // the namespace is enforced since: a new flow to PEER is dropped
    h.endpoint(MODE_ENFORCE, EP_ISOLATED_EGRESS);
    assert_eq!(
        h.pod_sends(&tcp4(POD, 40001, PEER, 80, SYN)),
        TC_ACT_SHOT,
        "a new flow is judged"
    );
    assert_eq!(
        h.pod_sends(&tcp4(POD, 40000, PEER, 80, ACK)),
        TC_ACT_UNSPEC,
        "the established flow keeps its verdict"
    );
    assert_eq!(h.counters()[CNT_NEW_FLOWS], 2, "one before, one new since");
    let s = h.stats(&k);
    assert_eq!((s.packets_from_pod, s.verdict), (2, VERDICT_FORWARDED));
    let keys: Vec<FlowKey> = h
        .flows
        .iter()
        .map(|e| must("reading the tables", e).0)
        .collect();
    assert_eq!(keys.iter().filter(|&&key| key == k).count(), 1, "{keys:#?}");
    assert_eq!(keys.len(), 2, "{keys:#?}");

    // deleted (expired, or by the enforcer): the next packet is a new flow,
    // judged, in FLOWS4
    must("removing the old entry", h.flows.remove(&k));
    assert_eq!(must("lookup", h.flows.get(&k)), None);
    assert_eq!(h.pod_sends(&tcp4(POD, 40000, PEER, 80, ACK)), TC_ACT_SHOT);
    assert_eq!(h.verdict(&k).0, VERDICT_DROPPED);
    assert_eq!(h.counters()[CNT_NEW_FLOWS], 3);
}

#[test]
fn adopted_maps_keep_their_size() {
    let pin = PinDir::new();
    drop(Harness::with(&LoadOptions {
        policy_entries: 1000,
        ..pin.opts()
    }));
    let h = Harness::with(&pin.opts());
    assert_eq!(h.maps.capacities.policy, 1000);
    assert_eq!(h.maps.capacities.endpoints, 4096);
}

fn tcx_programs(ns: &NetNs, ifname: &str, side: TcAttachType) -> Vec<(String, u32)> {
    let (_, programs) = must(
        "query_tcx",
        ns.run(|| SchedClassifier::query_tcx(ifname, side)),
    );
    programs
        .iter()
        .map(|p| (p.name_as_str().unwrap_or_default().to_owned(), p.id()))
        .collect()
}

/// Whether a UDP datagram from the node side reaches the pod.
fn udp_gets_through(node: &NetNs, pod: &NetNs, port: u16) -> bool {
    let pod_socket = must(
        "bind",
        pod.run(|| UdpSocket::bind((Ipv4Addr::new(10, 98, 0, 2), port))),
    );
    must(
        "timeout",
        pod_socket.set_read_timeout(Some(Duration::from_millis(300))),
    );
    let node_socket = must(
        "bind",
        node.run(|| UdpSocket::bind((Ipv4Addr::new(10, 98, 0, 1), 0))),
    );
    let to = SocketAddr::from((Ipv4Addr::new(10, 98, 0, 2), port));
    must("send", node_socket.send_to(b"hello", to));
    pod_socket.recv_from(&mut [0; 16]).is_ok()
}

#[test]
fn pinned_links_outlive_the_datapath_and_are_replaced_atomically() {
    let pin = PinDir::new();
    let node = NetNs::new();
    let pod = NetNs::new();
    node.add_veth("host0", &pod, "eth0");
    node.ip(&["addr", "add", "10.98.0.1/24", "dev", "host0"]);
    pod.ip(&["addr", "add", "10.98.0.2/24", "dev", "eth0"]);
    let from_pod = |ns: &NetNs| tcx_programs(ns, "host0", TcAttachType::Ingress);
    let to_pod = |ns: &NetNs| tcx_programs(ns, "host0", TcAttachType::Egress);

    let mut first = Harness::with(&pin.opts());
    let attachment = must("attaching", node.run(|| first.datapath.attach("host0")));
    assert!(udp_gets_through(&node, &pod, 7001));
    // the node's address is WORLD: ingress isolated without rules denies it
    let info = EndpointInfo {
        identity: POD_ID,
        mode: MODE_ENFORCE,
        flags: EP_ISOLATED_INGRESS,
        ..EndpointInfo::default()
    };
    must(
        "ENDPOINTS insert",
        first.maps.endpoints.insert(attachment.ifindex, info, 0),
    );
    assert!(!udp_gets_through(&node, &pod, 7002));
    let before = (from_pod(&node), to_pod(&node));
    assert_eq!(before.0.len(), 1);
    assert_eq!(before.0[0].0, "weir_from_pod");
    assert_eq!(before.1[0].0, "weir_to_pod");

    // the agent dies without detaching: the links and the policy stay
    drop(first);
    assert_eq!((from_pod(&node), to_pod(&node)), before);
    assert!(!udp_gets_through(&node, &pod, 7003), "still enforcing");
    assert_eq!(
        must("listing pins", Datapath::load(&pin.opts()))
            .pinned_interfaces()
            .ok(),
        Some(vec!["host0".to_owned()])
    );

    // a new agent attaches: same links, its programs swapped in
    let mut second = Harness::with(&pin.opts());
    must(
        "attaching again",
        node.run(|| second.datapath.attach("host0")),
    );
    let after = (from_pod(&node), to_pod(&node));
    assert_eq!(after.0.len(), 1, "replaced, not added: {after:?}");
    assert_eq!(after.1.len(), 1, "replaced, not added: {after:?}");
    assert_ne!(after.0[0].1, before.0[0].1, "a new program");
    assert_ne!(after.1[0].1, before.1[0].1, "a new program");
    assert!(!udp_gets_through(&node, &pod, 7004), "adopted the policy");
    must(
        "ENDPOINTS remove",
        second.maps.endpoints.remove(&attachment.ifindex),
    );
    assert!(udp_gets_through(&node, &pod, 7005));

    // detaching unpins
    must("detaching", node.run(|| second.datapath.detach("host0")));
    assert!(from_pod(&node).is_empty() && to_pod(&node).is_empty());
    must("attaching", node.run(|| second.datapath.attach("host0")));
    drop(second);
    assert_eq!(from_pod(&node).len(), 1);

    // cleanup removes the links and the maps (the kernel frees a link whose
    // last reference was its pin from a workqueue: poll)
    must("cleanup", Datapath::cleanup(&pin.path));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(from_pod(&node).is_empty() && to_pod(&node).is_empty()) {
        assert!(
            Instant::now() < deadline,
            "links still attached after cleanup"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!pin.path.exists());
}

#[test]
fn a_pinned_link_of_a_deleted_interface_is_replaced() {
    let pin = PinDir::new();
    let node = NetNs::new();
    let pod = NetNs::new();
    node.add_veth("host0", &pod, "eth0");
    let mut h = Harness::with(&pin.opts());
    must("attaching", node.run(|| h.datapath.attach("host0")));
    drop(h);
    // the pod is recreated: same veth name, new interface
    node.ip(&["link", "delete", "host0"]);
    node.add_veth("host0", &pod, "eth0");
    let mut h = Harness::with(&pin.opts());
    must("attaching", node.run(|| h.datapath.attach("host0")));
    let programs = tcx_programs(&node, "host0", TcAttachType::Ingress);
    assert_eq!(programs.len(), 1, "{programs:?}");
}
