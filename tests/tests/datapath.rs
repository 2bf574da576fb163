//! Privileged datapath tests: weir's observe programs run on crafted frames
//! through `BPF_PROG_TEST_RUN`, and once attached to a real veth pair.
//!
//! They need root and a BPF-capable kernel and fail (never skip) without:
//! `cargo test -p weir-integration-tests --test datapath`.
//!
//! Test runs happen in the test thread's network namespace, where the
//! kernel runs the program on loopback: flow keys carry lo's ifindex.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use etherparse::{
    IpAuthHeader, IpFragOffset, IpNumber, Ipv4Options, Ipv6Extensions, Ipv6FragmentHeader,
    Ipv6RawExtHeader, Ipv6RoutingExtensions,
};
use weir_ebpf::{
    abi::{
        ABI_VERSION, CNT_FRAGMENT, CNT_ICMP_CONTROL, CNT_MAX, CNT_NEW_FLOWS, CNT_NON_IP,
        CNT_PACKETS, CNT_PARSE_ERROR, CNT_RINGBUF_FULL, CNT_TABLE_FULL, CNT_UNSUPPORTED_L4,
        EVENT_NEW_FLOW, FLOW_F_ANNOUNCED, FLOW_F_CLOSING, FLOW_F_INITIATOR_GUESSED, FlowEvent,
        FlowKey, FlowStats, INITIATOR_LOCAL, INITIATOR_REMOTE,
    },
    loader::{
        AttachError, AttachMode, Datapath, DetachError, Floor, FlowTable, LoadOptions, Program,
    },
};
use weir_integration_tests::{
    netns::{NetNs, require_root},
    packets::{
        ETH_LEN, IPV4_LEN, IPV6_LEN, Ip, L4, Vlan, echo, frame, ipv4, ipv6, sctp, tagged_frame,
        tcp::{ACK, FIN, PSH, RST, SYN},
        tcp4,
    },
    test_run::{key, must},
};

const TC_ACT_UNSPEC: i32 = -1;
const TC_ACT_OK: i32 = 0;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_SCTP: u8 = 132;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;

const POD: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const POD6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
const PEER6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);

/// A freshly loaded datapath with its flow table taken out.
struct Harness {
    datapath: Datapath,
    flows: FlowTable,
}

impl Harness {
    fn new() -> Self {
        Self::with(&LoadOptions::default())
    }

    fn with(opts: &LoadOptions) -> Self {
        require_root();
        let mut datapath = must("loading the datapath", Datapath::load(opts));
        let flows = must("taking the flow table", datapath.take_flow_table());
        Self { datapath, flows }
    }

    fn run(&self, program: Program, frame: &[u8]) {
        let out = must(
            "BPF_PROG_TEST_RUN",
            self.datapath.test_run(program, frame, 1),
        );
        assert_eq!(
            out.action, TC_ACT_UNSPEC,
            "observe programs never set a verdict"
        );
    }

    fn pod_sends(&self, frame: &[u8]) {
        self.run(Program::FromPod, frame);
    }

    fn pod_receives(&self, frame: &[u8]) {
        self.run(Program::ToPod, frame);
    }

    fn flows(&self) -> Vec<(FlowKey, FlowStats)> {
        self.flows
            .iter()
            .map(|e| must("iterating the flow table", e))
            .collect()
    }

    fn only_flow(&self) -> (FlowKey, FlowStats) {
        match self.flows().as_slice() {
            [one] => *one,
            other => panic!("expected exactly one flow, got {other:#?}"),
        }
    }

    fn stats(&self, key: &FlowKey) -> FlowStats {
        must("looking up a flow", self.flows.get(key))
            .unwrap_or_else(|| panic!("no flow {key:?} in {:#?}", self.flows()))
    }

    fn counters(&self) -> [u64; CNT_MAX] {
        must("reading counters", self.datapath.counters())
    }

    fn counter(&self, index: usize) -> u64 {
        self.counters()[index]
    }
}

fn len(frame: &[u8]) -> u64 {
    frame.len() as u64
}

// ---- TCP initiator semantics ----

#[test]
fn tcp_syn_from_pod_makes_the_pod_the_initiator() {
    let h = Harness::new();
    let syn = tcp4(POD, 40000, PEER, 80, SYN);
    h.pod_sends(&syn);

    let (k, s) = h.only_flow();
    assert_eq!(k, key(IPPROTO_TCP, POD, 40000, PEER, 80));
    assert_eq!(s.initiator, INITIATOR_LOCAL);
    assert_eq!(s.flags & FLOW_F_INITIATOR_GUESSED, 0);
    assert_eq!((s.packets_from_pod, s.bytes_from_pod), (1, len(&syn)));
    assert_eq!((s.packets_to_pod, s.bytes_to_pod), (0, 0));
    assert_eq!(s.tcp_flags_from_pod, SYN);
    assert_eq!(s.first_seen_ns, s.last_seen_ns);
    assert_eq!(h.counter(CNT_NEW_FLOWS), 1);
    assert_eq!(h.counter(CNT_PACKETS), 1);
}

#[test]
fn tcp_syn_to_pod_makes_the_peer_the_initiator() {
    let h = Harness::new();
    let syn = tcp4(PEER, 40000, POD, 80, SYN);
    h.pod_receives(&syn);

    let (k, s) = h.only_flow();
    assert_eq!(k, key(IPPROTO_TCP, POD, 80, PEER, 40000));
    assert_eq!(s.initiator, INITIATOR_REMOTE);
    assert_eq!(s.flags & FLOW_F_INITIATOR_GUESSED, 0);
    assert_eq!((s.packets_to_pod, s.bytes_to_pod), (1, len(&syn)));
    assert_eq!(s.packets_from_pod, 0);
    assert_eq!(s.tcp_flags_to_pod, SYN);
}

#[test]
fn tcp_syn_ack_makes_the_receiver_the_initiator() {
    let h = Harness::new();
    // The pod answers a connection we did not see open: the peer opened it.
    h.pod_sends(&tcp4(POD, 80, PEER, 40000, SYN | ACK));
    // The peer answers the pod's connection.
    h.pod_receives(&tcp4(PEER, 443, POD, 50000, SYN | ACK));

    let answered = h.stats(&key(IPPROTO_TCP, POD, 80, PEER, 40000));
    assert_eq!(answered.initiator, INITIATOR_REMOTE);
    assert_eq!(answered.flags & FLOW_F_INITIATOR_GUESSED, 0);
    let opened = h.stats(&key(IPPROTO_TCP, POD, 50000, PEER, 443));
    assert_eq!(opened.initiator, INITIATOR_LOCAL);
    assert_eq!(opened.flags & FLOW_F_INITIATOR_GUESSED, 0);
}

#[test]
fn tcp_without_syn_guesses_the_first_sender() {
    let h = Harness::new();
    h.pod_receives(&tcp4(PEER, 40000, POD, 80, ACK | PSH));

    let (_, s) = h.only_flow();
    assert_eq!(s.initiator, INITIATOR_REMOTE);
    assert_ne!(s.flags & FLOW_F_INITIATOR_GUESSED, 0);
}

#[test]
fn existing_flow_accumulates_per_direction() {
    let h = Harness::new();
    let syn = tcp4(POD, 40000, PEER, 80, SYN);
    let syn_ack = tcp4(PEER, 80, POD, 40000, SYN | ACK);
    let ack = tcp4(POD, 40000, PEER, 80, ACK);
    let fin = tcp4(PEER, 80, POD, 40000, FIN | ACK);
    h.pod_sends(&syn);
    h.pod_receives(&syn_ack);
    h.pod_sends(&ack);
    h.pod_receives(&fin);

    let (k, s) = h.only_flow();
    assert_eq!(k, key(IPPROTO_TCP, POD, 40000, PEER, 80));
    assert_eq!(
        s.initiator, INITIATOR_LOCAL,
        "the first packet decides, later ones do not"
    );
    assert_eq!(
        (s.packets_from_pod, s.bytes_from_pod),
        (2, len(&syn) + len(&ack))
    );
    assert_eq!(
        (s.packets_to_pod, s.bytes_to_pod),
        (2, len(&syn_ack) + len(&fin))
    );
    assert_eq!(s.tcp_flags_from_pod, SYN | ACK);
    assert_eq!(s.tcp_flags_to_pod, SYN | ACK | FIN);
    assert_ne!(s.flags & FLOW_F_CLOSING, 0);
    assert!(s.last_seen_ns >= s.first_seen_ns);
    assert_eq!(h.counter(CNT_NEW_FLOWS), 1);
    assert_eq!(h.counter(CNT_PACKETS), 4);
}

/// Two CPUs at once, each running both programs on one flow (the pod's
/// data on one, the ACKs it receives on the other, as a TCP connection
/// spreads over CPUs): every packet and byte is counted, in its direction,
/// none lost to a race between the CPUs' updates of the same entry.
#[test]
fn two_cpus_in_both_directions_count_every_packet() {
    // IPv4 flows live in FLOWS4, IPv6 flows in FLOWS: both tables
    count_every_packet_from_two_cpus(POD.into(), PEER.into());
    count_every_packet_from_two_cpus(POD6.into(), PEER6.into());
}

fn tcp(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, flags: u8) -> Vec<u8> {
    let ip = match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => Ip::from(ipv4(src, dst)),
        (IpAddr::V6(src), IpAddr::V6(dst)) => Ip::from(ipv6(src, dst)),
        _ => panic!("one family per flow"),
    };
    frame(
        ip,
        L4::Tcp {
            sport,
            dport,
            flags,
        },
    )
}

fn count_every_packet_from_two_cpus(pod: IpAddr, peer: IpAddr) {
    const RUNS: u32 = 20;
    const REPEAT: u32 = 50_000;
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    assert!(
        cpus >= 2,
        "this test needs two CPUs to race on one flow entry, the machine has {cpus}"
    );
    let h = Harness::new();
    let data = tcp(pod, 40000, peer, 80, ACK | PSH);
    // a different length each way, so a byte counted in the wrong direction shows
    let mut ack = tcp(peer, 80, pod, 40000, ACK);
    ack.resize(ack.len() + 100, 0);
    let start = std::sync::Barrier::new(2);

    std::thread::scope(|scope| {
        for cpu in [0, 1] {
            let (h, data, ack, start) = (&h, &data, &ack, &start);
            scope.spawn(move || {
                let mut set = nix::sched::CpuSet::new();
                must("CPU set", set.set(cpu));
                must(
                    "pinning the thread to its CPU",
                    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set),
                );
                start.wait();
                for run in 0..RUNS {
                    // the two CPUs take the directions in opposite orders
                    let (first, second) = if run % 2 == u32::from(cpu == 1) {
                        ((Program::FromPod, data), (Program::ToPod, ack))
                    } else {
                        ((Program::ToPod, ack), (Program::FromPod, data))
                    };
                    for (program, frame) in [first, second] {
                        must(
                            "BPF_PROG_TEST_RUN",
                            h.datapath.test_run(program, frame, REPEAT),
                        );
                    }
                }
            });
        }
    });

    let per_direction = 2 * u64::from(RUNS) * u64::from(REPEAT);
    let (k, s) = h.only_flow();
    assert_eq!(k, key(IPPROTO_TCP, pod, 40000, peer, 80));
    assert_eq!(
        (s.packets_from_pod, s.bytes_from_pod),
        (per_direction, per_direction * len(&data)),
        "packets and bytes the pod sent"
    );
    assert_eq!(
        (s.packets_to_pod, s.bytes_to_pod),
        (per_direction, per_direction * len(&ack)),
        "packets and bytes the pod received"
    );
    assert_eq!(h.counter(CNT_PACKETS), 2 * per_direction);
    assert_eq!(h.counter(CNT_NEW_FLOWS), 1);
}

/// A client that reuses its source port while the old connection's entry
/// still waits for its closing expiry opens a new connection: the entry is
/// reopened for it (counted, its own first packet time, initiator and
/// flags, announced again), and the counters keep adding up.
#[test]
fn a_syn_after_fin_on_the_same_tuple_is_a_new_connection() {
    let mut h = Harness::new();
    let mut ring = must("taking the ring buffer", h.datapath.take_ring_buf());
    let k = key(IPPROTO_TCP, POD, 40000, PEER, 80);
    let first = [
        (true, tcp4(POD, 40000, PEER, 80, SYN)),
        (false, tcp4(PEER, 80, POD, 40000, SYN | ACK)),
        (true, tcp4(POD, 40000, PEER, 80, ACK)),
        (true, tcp4(POD, 40000, PEER, 80, FIN | ACK)),
        (false, tcp4(PEER, 80, POD, 40000, FIN | ACK)),
        (true, tcp4(POD, 40000, PEER, 80, ACK)),
    ];
    for (from_pod, frame) in &first {
        if *from_pod {
            h.pod_sends(frame);
        } else {
            h.pod_receives(frame);
        }
    }
    let old = h.stats(&k);
    assert_eq!(old.connections, 1);
    assert_ne!(old.flags & FLOW_F_CLOSING, 0);
    let announced = |ring: &mut aya::maps::RingBuf<aya::maps::MapData>| {
        let mut events = Vec::new();
        while let Some(item) = ring.next() {
            events.push(must("decoding the event", FlowEvent::from_bytes(&item)));
        }
        events
    };
    assert_eq!(announced(&mut ring).len(), 1);

    // a retransmitted ACK of the old connection is not a new one
    h.pod_sends(&tcp4(POD, 40000, PEER, 80, ACK));
    assert_eq!(h.stats(&k).connections, 1);

    std::thread::sleep(Duration::from_millis(2));
    let syn = tcp4(POD, 40000, PEER, 80, SYN);
    h.pod_sends(&syn);
    let new = h.stats(&k);
    assert_eq!(new.connections, 2, "{new:?}");
    assert!(
        new.first_seen_ns > old.last_seen_ns,
        "its own first packet time"
    );
    assert_eq!(new.initiator, INITIATOR_LOCAL);
    assert_eq!(new.flags & FLOW_F_CLOSING, 0, "the new connection is open");
    assert_eq!((new.tcp_flags_from_pod, new.tcp_flags_to_pod), (SYN, 0));
    assert_eq!(
        new.packets_from_pod,
        old.packets_from_pod + 2,
        "counters add up"
    );
    assert_eq!(new.packets_to_pod, old.packets_to_pod);
    let events = announced(&mut ring);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].key, k);
    assert_eq!(events[0].connection, 2);
    assert_eq!(events[0].timestamp_ns, new.first_seen_ns);
    assert_eq!(h.counter(CNT_NEW_FLOWS), 2);

    // the new connection's own packets are its own, once
    h.pod_receives(&tcp4(PEER, 80, POD, 40000, SYN | ACK));
    h.pod_sends(&tcp4(POD, 40000, PEER, 80, ACK));
    assert_eq!(h.stats(&k).connections, 2);
    assert!(announced(&mut ring).is_empty());

    // after a reset, the peer may open the same tuple the other way round
    h.pod_receives(&tcp4(PEER, 80, POD, 40000, RST));
    h.pod_receives(&tcp4(PEER, 80, POD, 40000, SYN));
    let third = h.stats(&k);
    assert_eq!(third.connections, 3);
    assert_eq!(third.initiator, INITIATOR_REMOTE);
    assert_eq!(announced(&mut ring)[0].connection, 3);
}

/// Only a bare SYN reopens, and only TCP: a SYN-ACK or a UDP datagram on a
/// closing entry belongs to the flow there is.
#[test]
fn only_a_bare_tcp_syn_reopens_a_closing_entry() {
    let h = Harness::new();
    let k = key(IPPROTO_TCP, POD, 40000, PEER, 80);
    h.pod_sends(&tcp4(POD, 40000, PEER, 80, SYN));
    h.pod_receives(&tcp4(PEER, 80, POD, 40000, RST | ACK));
    h.pod_receives(&tcp4(PEER, 80, POD, 40000, SYN | ACK));
    h.pod_sends(&tcp4(POD, 40000, PEER, 80, FIN | ACK));
    assert_eq!(h.stats(&k).connections, 1);
    // a SYN on an entry that never closed is a retransmission
    let open = key(IPPROTO_TCP, POD, 40001, PEER, 80);
    h.pod_sends(&tcp4(POD, 40001, PEER, 80, SYN));
    h.pod_sends(&tcp4(POD, 40001, PEER, 80, SYN));
    assert_eq!(h.stats(&open).connections, 1);
    assert_eq!(h.counter(CNT_NEW_FLOWS), 2);
}

// ---- UDP, SCTP, ICMP ----

#[test]
fn udp_v4_flow_in_both_directions() {
    let h = Harness::new();
    let query = frame(
        ipv4(PEER, POD),
        L4::Udp {
            sport: 5353,
            dport: 53,
        },
    );
    let answer = frame(
        ipv4(POD, PEER),
        L4::Udp {
            sport: 53,
            dport: 5353,
        },
    );
    h.pod_receives(&query);
    h.pod_sends(&answer);

    let (k, s) = h.only_flow();
    assert_eq!(k, key(IPPROTO_UDP, POD, 53, PEER, 5353));
    assert_eq!(s.initiator, INITIATOR_REMOTE);
    assert_eq!(s.flags & FLOW_F_INITIATOR_GUESSED, 0);
    assert_eq!((s.packets_to_pod, s.bytes_to_pod), (1, len(&query)));
    assert_eq!((s.packets_from_pod, s.bytes_from_pod), (1, len(&answer)));
    assert_eq!(s.tcp_flags_from_pod | s.tcp_flags_to_pod, 0);
}

#[test]
fn udp_v6_flow() {
    let h = Harness::new();
    h.pod_sends(&frame(
        ipv6(POD6, PEER6),
        L4::Udp {
            sport: 33000,
            dport: 53,
        },
    ));

    let (k, s) = h.only_flow();
    assert_eq!(k, key(IPPROTO_UDP, POD6, 33000, PEER6, 53));
    assert_eq!(k.local_ip(), POD6);
    assert_eq!(s.initiator, INITIATOR_LOCAL);
}

#[test]
fn sctp_ports_come_from_the_common_header() {
    let h = Harness::new();
    h.pod_sends(&frame(ipv4(POD, PEER), sctp(40000, 38412)));

    let (k, s) = h.only_flow();
    assert_eq!(k, key(IPPROTO_SCTP, POD, 40000, PEER, 38412));
    assert_eq!(s.initiator, INITIATOR_LOCAL);
}

#[test]
fn icmp_echo_request_and_reply_are_one_flow() {
    let h = Harness::new();
    h.pod_sends(&frame(
        ipv4(POD, PEER),
        L4::Icmpv4 {
            kind: 8,
            code: 0,
            rest: echo(77, 1),
        },
    ));
    h.pod_receives(&frame(
        ipv4(PEER, POD),
        L4::Icmpv4 {
            kind: 0,
            code: 0,
            rest: echo(77, 1),
        },
    ));

    let (k, s) = h.only_flow();
    assert_eq!(k, key(IPPROTO_ICMP, POD, 77, PEER, 0));
    assert_eq!(s.initiator, INITIATOR_LOCAL);
    assert_eq!((s.packets_from_pod, s.packets_to_pod), (1, 1));
    assert_eq!((s.icmp_type, s.icmp_code), (8, 0));
}

#[test]
fn icmp_echo_reply_first_makes_the_receiver_the_initiator() {
    let h = Harness::new();
    h.pod_receives(&frame(
        ipv4(PEER, POD),
        L4::Icmpv4 {
            kind: 0,
            code: 0,
            rest: echo(9, 1),
        },
    ));

    let (k, s) = h.only_flow();
    assert_eq!(k, key(IPPROTO_ICMP, POD, 9, PEER, 0));
    assert_eq!(s.initiator, INITIATOR_LOCAL);
    assert_eq!(s.icmp_type, 0);
}

#[test]
fn icmp_errors_are_counted_not_flows() {
    let h = Harness::new();
    // port unreachable, sent to the pod; time exceeded, sent by it
    h.pod_receives(&frame(
        ipv4(PEER, POD),
        L4::Icmpv4 {
            kind: 3,
            code: 3,
            rest: [0; 4],
        },
    ));
    h.pod_sends(&frame(
        ipv4(POD, PEER),
        L4::Icmpv4 {
            kind: 11,
            code: 0,
            rest: [0; 4],
        },
    ));

    assert!(h.flows().is_empty(), "an ICMP error is not a connection");
    assert_eq!(h.counter(CNT_ICMP_CONTROL), 2);
}

#[test]
fn icmpv6_echo_request_and_reply_are_one_flow() {
    let h = Harness::new();
    h.pod_receives(&frame(
        ipv6(PEER6, POD6),
        L4::Icmpv6 {
            kind: 128,
            code: 0,
            rest: echo(4242, 1),
        },
    ));
    h.pod_sends(&frame(
        ipv6(POD6, PEER6),
        L4::Icmpv6 {
            kind: 129,
            code: 0,
            rest: echo(4242, 1),
        },
    ));
    // neighbour solicitation: link-local plumbing, not a flow
    h.pod_sends(&frame(
        ipv6(POD6, PEER6),
        L4::Icmpv6 {
            kind: 135,
            code: 0,
            rest: [0; 4],
        },
    ));

    let echo_flow = h.stats(&key(IPPROTO_ICMPV6, POD6, 4242, PEER6, 0));
    assert_eq!(echo_flow.initiator, INITIATOR_REMOTE);
    assert_eq!(
        (echo_flow.packets_from_pod, echo_flow.packets_to_pod),
        (1, 1)
    );
    assert_eq!(echo_flow.icmp_type, 128);
    assert_eq!(h.flows().len(), 1, "neighbour solicitation makes no flow");
    assert_eq!(h.counter(CNT_ICMP_CONTROL), 1);
}

// ---- VLAN ----

#[test]
fn vlan_tagged_frames_are_parsed_through() {
    for vlan in [Vlan::Single(100), Vlan::Double(200, 300)] {
        let h = Harness::new();
        let tagged = tagged_frame(
            vlan,
            ipv4(POD, PEER),
            L4::Tcp {
                sport: 40000,
                dport: 80,
                flags: SYN,
            },
        );
        h.pod_sends(&tagged);

        let (k, s) = h.only_flow();
        assert_eq!(k, key(IPPROTO_TCP, POD, 40000, PEER, 80), "{vlan:?}");
        assert_eq!(s.bytes_from_pod, len(&tagged), "{vlan:?}");
        assert_eq!(h.counter(CNT_PARSE_ERROR), 0, "{vlan:?}");
    }
}

#[test]
fn a_third_vlan_tag_is_not_read_as_ip() {
    let h = Harness::new();
    let mut three = tagged_frame(
        Vlan::Double(200, 300),
        ipv4(POD, PEER),
        L4::Udp { sport: 1, dport: 2 },
    );
    // Push one more 802.1Q tag in front of the two.
    three.splice(12..12, [0x81, 0x00, 0x00, 0x64]);
    h.pod_sends(&three);

    assert!(h.flows().is_empty());
    assert_eq!(h.counter(CNT_NON_IP), 1);
}

#[test]
fn non_ip_frames_are_counted() {
    let h = Harness::new();
    let mut arp = vec![0xff; 12];
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    h.pod_sends(&arp);

    assert!(h.flows().is_empty());
    assert_eq!(h.counter(CNT_NON_IP), 1);
    assert_eq!(h.counter(CNT_PACKETS), 1);
}

// ---- malformed and truncated headers ----

#[test]
fn truncated_headers_are_parse_errors() {
    let tcp = tcp4(POD, 40000, PEER, 80, SYN);
    let udp = frame(ipv4(POD, PEER), L4::Udp { sport: 1, dport: 2 });
    let sctp = frame(ipv4(POD, PEER), sctp(1, 2));
    let ping = frame(
        ipv4(POD, PEER),
        L4::Icmpv4 {
            kind: 8,
            code: 0,
            rest: echo(1, 1),
        },
    );
    let tagged = tagged_frame(
        Vlan::Single(5),
        ipv4(POD, PEER),
        L4::Udp { sport: 1, dport: 2 },
    );
    let tagged6 = tagged_frame(
        Vlan::Single(5),
        ipv6(POD6, PEER6),
        L4::Udp { sport: 1, dport: 2 },
    );
    let hop_by_hop = Ipv6Extensions {
        hop_by_hop_options: Some(must(
            "hop-by-hop",
            Ipv6RawExtHeader::new_raw(IpNumber::TCP, &[0; 14]),
        )),
        ..Ipv6Extensions::default()
    };
    let with_ext = frame(
        Ip::v6(ipv6(POD6, PEER6), hop_by_hop),
        L4::Tcp {
            sport: 1,
            dport: 2,
            flags: SYN,
        },
    );
    const VLAN: usize = ETH_LEN + 4;

    // BPF_PROG_TEST_RUN itself refuses (EINVAL, kernel 6.18) an untagged
    // frame whose ethertype says IPv4 or IPv6 but whose IP header is cut:
    // cut IP headers are sent behind a VLAN tag, which the kernel does not
    // look through.
    let cases: [(&str, &[u8]); 11] = [
        ("vlan tag cut", &tagged[..ETH_LEN + 2]),
        ("ipv4 header of one byte", &tagged[..=VLAN]),
        ("ipv4 header cut", &tagged[..VLAN + IPV4_LEN - 1]),
        ("ipv6 header cut", &tagged6[..VLAN + IPV6_LEN - 1]),
        ("tcp header cut", &tcp[..ETH_LEN + IPV4_LEN + 19]),
        ("tcp header missing", &tcp[..ETH_LEN + IPV4_LEN]),
        ("udp header cut", &udp[..ETH_LEN + IPV4_LEN + 7]),
        ("sctp common header cut", &sctp[..ETH_LEN + IPV4_LEN + 11]),
        ("icmp echo header cut", &ping[..ETH_LEN + IPV4_LEN + 6]),
        (
            "ipv6 extension header cut",
            &with_ext[..ETH_LEN + IPV6_LEN + 8],
        ),
        (
            "tcp after ipv6 extension header cut",
            &with_ext[..ETH_LEN + IPV6_LEN + 16 + 10],
        ),
    ];
    let h = Harness::new();
    for (i, (name, frame)) in cases.iter().enumerate() {
        let out = must(name, h.datapath.test_run(Program::FromPod, frame, 1));
        assert_eq!(out.action, TC_ACT_UNSPEC, "{name}");
        assert_eq!(h.counter(CNT_PARSE_ERROR), i as u64 + 1, "{name}");
        assert!(h.flows().is_empty(), "{name}: {:#?}", h.flows());
    }
    assert_eq!(h.counter(CNT_NEW_FLOWS), 0);
}

#[test]
fn ipv4_ihl_is_validated() {
    let valid = tcp4(POD, 40000, PEER, 80, SYN);
    let mut short_ihl = valid.clone();
    short_ihl[ETH_LEN] = 0x44; // version 4, IHL 4: L4 would start inside the IP header
    let mut past_end = valid.clone();
    past_end[ETH_LEN] = 0x4f; // IHL 15: 60 bytes of IP header, more than the frame has
    assert!(past_end.len() < ETH_LEN + 60);

    let h = Harness::new();
    h.pod_sends(&short_ihl);
    h.pod_sends(&past_end);
    assert_eq!(h.counter(CNT_PARSE_ERROR), 2);
    assert!(h.flows().is_empty());
}

#[test]
fn ipv4_options_move_the_l4_header() {
    let mut header = ipv4(POD, PEER);
    header.options = Ipv4Options::from([1, 1, 1, 0]); // NOP NOP NOP EOL: IHL 6
    let h = Harness::new();
    h.pod_sends(&frame(
        header,
        L4::Tcp {
            sport: 40000,
            dport: 80,
            flags: SYN,
        },
    ));

    let (k, _) = h.only_flow();
    assert_eq!(k, key(IPPROTO_TCP, POD, 40000, PEER, 80));
}

/// An existing IPv4 flow's plain frames are looked up by the key parsed
/// straight from the headers, tagged frames and frames with IP options by the
/// full parser: both must find the one entry.
#[test]
fn plain_tagged_and_optioned_frames_of_one_flow_share_its_entry() {
    let tcp = |flags| L4::Tcp {
        sport: 40000,
        dport: 80,
        flags,
    };
    let mut optioned = ipv4(POD, PEER);
    optioned.options = Ipv4Options::from([1, 1, 1, 0]);
    let sent = [
        frame(ipv4(POD, PEER), tcp(SYN)),
        frame(ipv4(POD, PEER), tcp(ACK)),
        tagged_frame(Vlan::Single(100), ipv4(POD, PEER), tcp(ACK)),
        frame(optioned, tcp(ACK)),
    ];
    let received = tcp4(PEER, 80, POD, 40000, ACK);
    let h = Harness::new();
    for f in &sent {
        h.pod_sends(f);
    }
    h.pod_receives(&received);

    let (k, s) = h.only_flow();
    assert_eq!(k, key(IPPROTO_TCP, POD, 40000, PEER, 80));
    assert_eq!(
        (s.packets_from_pod, s.bytes_from_pod),
        (4, sent.iter().map(|f| len(f)).sum())
    );
    assert_eq!((s.packets_to_pod, s.bytes_to_pod), (1, len(&received)));
    assert_eq!(s.tcp_flags_from_pod, SYN | ACK);
    assert_eq!(h.counter(CNT_NEW_FLOWS), 1);
    assert_eq!(h.counter(CNT_PACKETS), 5);
}

#[test]
fn ipv6_extension_header_chain_is_skipped() {
    let raw = |len: usize| {
        must(
            "extension header",
            Ipv6RawExtHeader::new_raw(IpNumber::TCP, &vec![0; len]),
        )
    };
    // routing type 0 with segments left 0: ignored by receivers, fine to parse
    let exts = Ipv6Extensions {
        hop_by_hop_options: Some(raw(6)),
        destination_options: Some(raw(14)),
        routing: Some(Ipv6RoutingExtensions {
            routing: raw(22),
            final_destination_options: Some(raw(6)),
        }),
        fragment: None,
        auth: Some(must(
            "auth header",
            IpAuthHeader::new(IpNumber::TCP, 1, 1, &[0; 12]),
        )),
    };
    let h = Harness::new();
    h.pod_receives(&frame(
        Ip::v6(ipv6(PEER6, POD6), exts),
        L4::Tcp {
            sport: 40000,
            dport: 443,
            flags: SYN,
        },
    ));

    let (k, s) = h.only_flow();
    assert_eq!(k, key(IPPROTO_TCP, POD6, 443, PEER6, 40000));
    assert_eq!(s.initiator, INITIATOR_REMOTE);
}

#[test]
fn ipv6_first_fragment_has_ports_later_ones_are_counted() {
    let fragment = |offset: u16, more: bool| Ipv6Extensions {
        fragment: Some(Ipv6FragmentHeader::new(
            IpNumber::TCP,
            must("fragment offset", IpFragOffset::try_new(offset)),
            more,
            0x1234,
        )),
        ..Ipv6Extensions::default()
    };
    let first = frame(
        Ip::v6(ipv6(POD6, PEER6), fragment(0, true)),
        L4::Tcp {
            sport: 40000,
            dport: 80,
            flags: SYN,
        },
    );
    // a later fragment: payload bytes where a TCP header would be
    let later = frame(
        Ip::v6(ipv6(POD6, PEER6), fragment(185, false)),
        L4::Raw {
            proto: IPPROTO_TCP,
            bytes: vec![0xee; 32],
        },
    );

    let h = Harness::new();
    h.pod_sends(&first);
    h.pod_sends(&later);

    let (k, s) = h.only_flow();
    assert_eq!(k, key(IPPROTO_TCP, POD6, 40000, PEER6, 80));
    assert_eq!(
        s.packets_from_pod, 1,
        "non-first fragments are not accounted"
    );
    assert_eq!(h.counter(CNT_FRAGMENT), 1);
}

#[test]
fn ipv4_first_fragment_has_ports_later_ones_are_counted() {
    let mut first_header = ipv4(POD, PEER);
    first_header.more_fragments = true;
    let mut later_header = ipv4(POD, PEER);
    later_header.fragment_offset = must("fragment offset", IpFragOffset::try_new(185));
    let first = frame(
        first_header,
        L4::Udp {
            sport: 40000,
            dport: 4789,
        },
    );
    let later = frame(
        later_header,
        L4::Raw {
            proto: IPPROTO_UDP,
            bytes: vec![0xee; 32],
        },
    );

    let h = Harness::new();
    h.pod_sends(&first);
    h.pod_sends(&later);

    let (k, s) = h.only_flow();
    assert_eq!(k, key(IPPROTO_UDP, POD, 40000, PEER, 4789));
    assert_eq!(s.packets_from_pod, 1);
    assert_eq!(h.counter(CNT_FRAGMENT), 1);
}

#[test]
fn unsupported_l4_is_counted() {
    let h = Harness::new();
    h.pod_sends(&frame(
        ipv4(POD, PEER),
        L4::Raw {
            proto: 47,
            bytes: vec![0; 16],
        },
    )); // GRE
    h.pod_sends(&frame(
        ipv6(POD6, PEER6),
        L4::Raw {
            proto: 50,
            bytes: vec![0; 16],
        },
    )); // ESP
    assert!(h.flows().is_empty());
    assert_eq!(h.counter(CNT_UNSUPPORTED_L4), 2);
}

// ---- ring buffer and table limits ----

#[test]
fn new_flows_are_announced_once() {
    let mut h = Harness::new();
    let mut ring = must("taking the ring buffer", h.datapath.take_ring_buf());
    h.pod_sends(&tcp4(POD, 40000, PEER, 80, SYN));

    let event = {
        let item = ring.next().expect("an event for the new flow");
        must("decoding the event", FlowEvent::from_bytes(&item))
    };
    let (k, s) = h.only_flow();
    assert_eq!(event.version, ABI_VERSION);
    assert_eq!(event.kind, EVENT_NEW_FLOW);
    assert_eq!(event.key, k);
    assert_eq!(event.initiator, INITIATOR_LOCAL);
    assert_eq!(event.tcp_flags, SYN);
    assert_eq!(event.timestamp_ns, s.first_seen_ns);
    assert_ne!(event.flags & FLOW_F_ANNOUNCED, 0);
    assert_ne!(s.flags & FLOW_F_ANNOUNCED, 0);

    h.pod_receives(&tcp4(PEER, 80, POD, 40000, SYN | ACK));
    h.pod_sends(&tcp4(POD, 40000, PEER, 80, ACK));
    assert!(
        ring.next().is_none(),
        "no event for packets of an existing flow"
    );
    assert_eq!(h.counter(CNT_RINGBUF_FULL), 0);
}

#[test]
fn full_ring_buffer_loses_events_not_flows() {
    const FLOWS: u16 = 200;
    let page = u32::try_from(
        must(
            "page size",
            nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE),
        )
        .unwrap(),
    )
    .unwrap();
    let mut h = Harness::with(&LoadOptions {
        ringbuf_bytes: page,
        ..LoadOptions::default()
    });
    let mut ring = must("taking the ring buffer", h.datapath.take_ring_buf());
    for sport in 0..FLOWS {
        h.pod_sends(&tcp4(POD, 10000 + sport, PEER, 80, SYN));
    }

    let mut events = 0;
    while let Some(item) = ring.next() {
        must("decoding", FlowEvent::from_bytes(&item));
        events += 1;
    }
    let flows = h.flows();
    let announced = flows
        .iter()
        .filter(|(_, s)| s.flags & FLOW_F_ANNOUNCED != 0)
        .count();
    assert!(
        events > 0 && events < usize::from(FLOWS),
        "{events} events in one page"
    );
    assert_eq!(
        flows.len(),
        usize::from(FLOWS),
        "every flow is in the table"
    );
    assert_eq!(announced, events, "exactly the announced flows are marked");
    assert_eq!(
        h.counter(CNT_RINGBUF_FULL),
        u64::from(FLOWS) - events as u64
    );
    assert_eq!(h.counter(CNT_NEW_FLOWS), u64::from(FLOWS));
}

#[test]
fn full_flow_table_is_counted() {
    const ENTRIES: u16 = 8;
    let h = Harness::with(&LoadOptions {
        flow_table_entries: u32::from(ENTRIES),
        ..LoadOptions::default()
    });
    // each family has its own table of that size (IPv6 allocated as needed)
    let families: [(IpAddr, IpAddr); 2] = [(POD.into(), PEER.into()), (POD6.into(), PEER6.into())];
    for (done, (pod, peer)) in (1..).zip(families) {
        for sport in 0..20 {
            h.pod_sends(&tcp(pod, 10000 + sport, peer, 80, SYN));
        }
        assert_eq!(h.flows().len() as u64, done * u64::from(ENTRIES));
        assert_eq!(h.counter(CNT_NEW_FLOWS), done * u64::from(ENTRIES));
        assert_eq!(h.counter(CNT_TABLE_FULL), done * (20 - u64::from(ENTRIES)));

        // flows already in a full table are still accounted
        let (k, _) = *h
            .flows()
            .iter()
            .find(|(k, _)| k.local_ip() == pod)
            .expect("a flow of the family");
        h.pod_sends(&tcp(pod, k.local_port, peer, 80, ACK));
        assert_eq!(h.stats(&k).packets_from_pod, 2);
    }
}

// ---- test-run plumbing for benchmarks ----

#[test]
fn repeated_test_runs_all_reach_the_maps() {
    let h = Harness::new();
    let syn = tcp4(POD, 40000, PEER, 80, SYN);
    let out = must(
        "test run",
        h.datapath.test_run(Program::FromPod, &syn, 1000),
    );
    assert_eq!(out.action, TC_ACT_UNSPEC);
    assert!(
        out.duration < Duration::from_millis(1),
        "mean per run: {:?}",
        out.duration
    );
    assert_eq!(h.only_flow().1.packets_from_pod, 1000);
}

#[test]
fn floor_program_returns_ok() {
    require_root();
    let floor = must("loading the floor", Floor::load());
    let out = must(
        "test run",
        floor.test_run(&tcp4(POD, 40000, PEER, 80, SYN), 1000),
    );
    assert_eq!(out.action, TC_ACT_OK);
    assert!(out.duration < Duration::from_millis(1));
}

// ---- real attachment ----

/// Polls `f` until it returns `Some`, for counters that real traffic
/// updates asynchronously (softirq on another CPU).
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn attached_programs_see_real_tcp_and_udp() {
    let mode = AttachMode::detect();
    assert_eq!(mode, AttachMode::Tcx, "kernels >= 6.6 attach with tcx");
    real_traffic(mode);
}

#[test]
fn attached_with_clsact_programs_see_real_tcp_and_udp() {
    real_traffic(AttachMode::Netlink);
}

/// A "pod" netns behind a veth whose host end is in a "node" netns, with
/// the programs attached to the host end; TCP and UDP across it.
fn real_traffic(mode: AttachMode) {
    const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
    const POD_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
    let node = NetNs::new();
    let pod = NetNs::new();
    node.add_veth("host0", &pod, "eth0");
    node.ip(&["addr", "add", "10.99.0.1/24", "dev", "host0"]);
    pod.ip(&["addr", "add", "10.99.0.2/24", "dev", "eth0"]);

    let mut h = Harness::new();
    let attachment = must(
        "attaching",
        node.run(|| h.datapath.attach_with("host0", mode)),
    );
    assert_eq!(
        (attachment.ifname.as_str(), attachment.mode),
        ("host0", mode)
    );

    // TCP: the pod connects to a server on the node side.
    let listener = must("listen", node.run(|| TcpListener::bind((HOST_IP, 8080))));
    let server_addr = SocketAddr::from((HOST_IP, 8080));
    let mut client = must(
        "connect",
        pod.run(|| TcpStream::connect_timeout(&server_addr, Duration::from_secs(5))),
    );
    let client_port = must("local addr", client.local_addr()).port();
    let (mut server, _) = must("accept", listener.accept());
    must("write", client.write_all(b"ping"));
    let mut buf = [0; 4];
    must("read", server.read_exact(&mut buf));
    must("write", server.write_all(b"pong"));
    must("read", client.read_exact(&mut buf));
    drop(client);
    drop(server);

    // UDP: the node side sends to a socket in the pod, which answers.
    let pod_socket = must("bind", pod.run(|| UdpSocket::bind((POD_IP, 5353))));
    let node_socket = must("bind", node.run(|| UdpSocket::bind((HOST_IP, 0))));
    let node_port = must("local addr", node_socket.local_addr()).port();
    for s in [&pod_socket, &node_socket] {
        must("timeout", s.set_read_timeout(Some(Duration::from_secs(5))));
    }
    must("send", node_socket.send_to(b"query", (POD_IP, 5353)));
    let (_, from) = must("recv", pod_socket.recv_from(&mut [0; 16]));
    must("send", pod_socket.send_to(b"answer", from));
    must("recv", node_socket.recv_from(&mut [0; 16]));

    let with_ifindex = |mut k: FlowKey| {
        k.ifindex = attachment.ifindex;
        k
    };
    let tcp_key = with_ifindex(key(IPPROTO_TCP, POD_IP, client_port, HOST_IP, 8080));
    let tcp = eventually("the TCP flow to close", || {
        must("lookup", h.flows.get(&tcp_key)).filter(|s| s.flags & FLOW_F_CLOSING != 0)
    });
    assert_eq!(tcp.initiator, INITIATOR_LOCAL);
    assert_eq!(tcp.flags & FLOW_F_INITIATOR_GUESSED, 0);
    assert_eq!(tcp.tcp_flags_from_pod & (SYN | ACK | FIN), SYN | ACK | FIN);
    assert_eq!(tcp.tcp_flags_to_pod & (SYN | ACK), SYN | ACK);
    assert!(tcp.packets_from_pod >= 3, "{tcp:?}"); // SYN, ACK, data, FIN, ...
    assert!(tcp.packets_to_pod >= 2, "{tcp:?}"); // SYN+ACK, data, ...
    assert!(tcp.bytes_from_pod >= tcp.packets_from_pod * 54, "{tcp:?}");

    let udp_key = with_ifindex(key(IPPROTO_UDP, POD_IP, 5353, HOST_IP, node_port));
    let udp = eventually("the UDP answer", || {
        must("lookup", h.flows.get(&udp_key)).filter(|s| s.packets_from_pod > 0)
    });
    assert_eq!(udp.initiator, INITIATOR_REMOTE);
    assert_eq!((udp.packets_to_pod, udp.packets_from_pod), (1, 1));

    // ARP went through both programs too, as non-IP.
    assert!(h.counter(CNT_NON_IP) > 0);

    // Attach bookkeeping (netlink requests go to the calling thread's netns,
    // so clsact detaches run in the node netns like the attach did): twice is refused, detach twice is refused, and a
    // detached interface can be attached again.
    assert!(matches!(
        node.run(|| h.datapath.attach_with("host0", mode)),
        Err(AttachError::AlreadyAttached { .. })
    ));
    must("detaching", node.run(|| h.datapath.detach("host0")));
    assert!(matches!(
        h.datapath.detach("host0"),
        Err(DetachError::NotAttached { .. })
    ));
    // (with clsact: the qdisc stays after detach, so this reuses it)
    must(
        "attaching again",
        node.run(|| h.datapath.attach_with("host0", mode)),
    );

    // The pod goes away: detaching what the kernel already removed is fine.
    node.ip(&["link", "delete", "host0"]);
    must(
        "detaching a vanished interface",
        node.run(|| h.datapath.detach("host0")),
    );
}

#[test]
fn attaching_to_a_missing_interface_is_interface_gone() {
    let ns = NetNs::new();
    let mut h = Harness::new();
    let err = ns
        .run(|| h.datapath.attach("weir-gone0"))
        .expect_err("no such interface");
    assert!(
        matches!(&err, AttachError::InterfaceGone { ifname } if ifname == "weir-gone0"),
        "{err:?}"
    );
    assert_eq!(h.datapath.attached().count(), 0);
}
