//! Enforcement cost: per packet by `BPF_PROG_TEST_RUN` at 10 and 10,000
//! rules and 10,000 CIDR prefixes; the new-connection rate between two lab
//! pods filtered by a linear iptables chain, an nftables set and weir; what
//! one new connection costs in each of those filters (connect() latency
//! added, and weir's own kernel time); the time to compile and apply 10,000
//! rules; and `weir policy apply` of 10,000 NetworkPolicies end to end.
//!
//! `cargo bench -p weir-integration-tests --bench enforce` (root, iptables
//! and nft installed, the `weir` binary built) prints markdown tables for
//! docs/benchmarks.md; `-- per-packet`, `-- connection-rate`, `-- syn-cost`,
//! `-- apply` or `-- cli-apply` runs those sections only.
//!
//! Method:
//! - per packet: five datapaths are loaded side by side, each with the
//!   test-run device (lo) as an endpoint in ENFORCE mode, isolated for
//!   egress, and `weir_from_pod` runs on an allowed TCP flow. "10 rules":
//!   9 rules for other peers and the matching one; "10,000 rules": 9,999
//!   others (1,000 peers x 10 ports) and the matching one; "10,000 CIDR
//!   rules": 10,000 /24s in CIDRS, one rule per prefix, the peer found by
//!   longest-prefix match (then remembered in PEER_CACHE); "every peer
//!   address new": the same maps, each new connection to an address not
//!   seen before, so each walks the CIDRS trie (the cache's worst case);
//!   "the peer a pod in one": the CIDR maps, the peer's address also a pod
//!   in IDENTITIES with no rule of its own, allowed by its /24 (an ipBlock
//!   matches pod addresses: the lookups by pod identity miss first).
//!   Rules are single-port, in POLICY_EXACT where the agent puts them.
//!   New connection: distinct source ports, each run once (`repeat = 1`),
//!   floor interleaved on the same frames; established: one flow, `repeat`
//!   runs in one syscall. Rounds alternate the cases; medians over rounds.
//! - connection rate: a TCP connect + close (linger 0: RST, no TIME_WAIT)
//!   loop from the client pod's netns to a listener in the server pod's,
//!   for a few seconds per run; the four filters alternate per round.
//! - syn cost: the same filters, 1,500 sequential connects per run from a
//!   client pinned to one CPU, each timed; per run the median connect()
//!   latency, and per round the filter's median minus the unfiltered one
//!   (what the filter adds to a new connection). weir's programs' own time
//!   per connection comes from the kernel's run statistics (BPF_ENABLE_STATS
//!   held open by the bench), so it needs no subtraction of noisy medians.
//! - apply: `datapath::compile` of 100 policies x 10 peers x 10 ports over
//!   1,000 pods (10,000 POLICY_EXACT entries), the ABI entries, and the
//!   enforcer's writes (`entries::plan` from empty maps) into a freshly
//!   loaded datapath's maps, end to end in this process.

#![expect(
    clippy::print_stdout,
    reason = "a benchmark prints its table on stdout"
)]

mod common;

use std::{
    collections::BTreeMap,
    fs::File,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf, lpm_trie::Key};
use serde_json::{Value, json};
use socket2::{Domain, Socket, Type};
use weir_agent::enforce::entries::{self, Entries, PolicyMapsIo as _};
use weir_ebpf::{
    abi::{
        CNT_DROPPED, CNT_NEW_FLOWS, CNT_TABLE_FULL, CidrKeyData, DIR_EGRESS, EP_ISOLATED_EGRESS,
        EP_RULES_EGRESS, EndpointInfo, FAMILY_IPV4, IpKey, MODE_ENFORCE, PeerKey, PolicyExactKey,
        PolicyValue,
    },
    loader::{Datapath, Floor, LoadOptions, PolicyMaps, Program, TestRunOutput},
};
use weir_generator::{
    cluster::{Cluster, ClusterPod, NamedPort},
    datapath::{self, Identities, Input, Mode, PodKey},
    eval::PolicySet,
    model::{PodMeta, Protocol, WorkloadKind, WorkloadRef},
};
use weir_integration_tests::{
    harness::{Agent, Lab, weir},
    packets::{
        L4, frame, ipv4,
        tcp::{ACK, PSH, SYN},
    },
    policy_set::small_policies,
};

use common::{LabPod, lab_pod, median, range, require_root};

const TC_ACT_UNSPEC: i32 = -1;
const TC_ACT_OK: i32 = 0;
const TC_ACT_SHOT: i32 = 2;
const IPPROTO_TCP: u8 = 6;

const REPEAT: u32 = 200_000;
const ROUNDS: usize = 9;
const NEW_FLOWS: u16 = 2048;
const NEW_FLOW_PORT: u16 = 20000;
const CLIENT_PORT: u16 = 10000;

const POD: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const POD_ID: u32 = 1000;
const PEER_ID: u32 = 1001;
const SERVICE_PORT: u16 = 8080;
const RULES: usize = 10_000;

const EGRESS: u8 = EP_ISOLATED_EGRESS | EP_RULES_EGRESS;

fn must<T, E: Into<anyhow::Error>>(what: &str, result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {:#}", e.into()))
}

fn ns(out: TestRunOutput) -> f64 {
    out.duration.as_secs_f64() * 1e9
}

fn ip_key(ip: Ipv4Addr) -> IpKey {
    let mut addr = [0; 16];
    addr[..4].copy_from_slice(&ip.octets());
    IpKey {
        family: FAMILY_IPV4,
        addr,
        ..IpKey::default()
    }
}

/// Fills the policy maps with an egress-isolated ENFORCE endpoint of
/// `endpoint` (its ifindex `ifindex`) whose rules are helpers' rules.
struct Filler<'a> {
    maps: &'a mut PolicyMaps,
    endpoint: u32,
}

impl Filler<'_> {
    fn identity(&mut self, ip: Ipv4Addr, id: u32) {
        must(
            "IDENTITIES insert",
            self.maps.identities.insert(ip_key(ip), id, 0),
        );
    }

    fn cidr(&mut self, ip: Ipv4Addr, bits: u32, id: u32) {
        let mut addr = [0; 16];
        addr[..4].copy_from_slice(&ip.octets());
        let data = CidrKeyData {
            family: FAMILY_IPV4,
            addr,
            ..CidrKeyData::default()
        };
        must(
            "CIDRS insert",
            self.maps.cidrs.insert(&Key::new(32 + bits, data), id, 0),
        );
    }

    /// A rule of one TCP port: POLICY_EXACT, where the agent puts it.
    fn allow(&mut self, peer: u32, port: u16, rule_id: u32) {
        let key = PolicyExactKey {
            endpoint: self.endpoint,
            direction: DIR_EGRESS,
            proto: IPPROTO_TCP,
            port: port.to_be(),
            peer,
        };
        must(
            "POLICY_EXACT insert",
            self.maps
                .policy_exact
                .insert(key, PolicyValue { rule_id }, 0),
        );
        let key = PeerKey {
            endpoint: self.endpoint,
            direction: DIR_EGRESS,
            peer,
            ..PeerKey::default()
        };
        must("PEERS insert", self.maps.peers.insert(key, 1, 0));
    }

    fn endpoint(&mut self, ifindex: u32) {
        let info = EndpointInfo {
            identity: self.endpoint,
            mode: MODE_ENFORCE,
            flags: EGRESS,
            ..EndpointInfo::default()
        };
        must(
            "ENDPOINTS insert",
            self.maps.endpoints.insert(ifindex, info, 0),
        );
    }

    /// `rules` POLICY entries for `peer_id` (at `peer` address) on `port`:
    /// `rules - 1` for other peers (1,000 at most, 10.1.x.y) and ports, then
    /// the matching one.
    fn peer_rules(&mut self, rules: usize, peer: Ipv4Addr, peer_id: u32, port: u16) {
        self.identity(peer, peer_id);
        let others = rules - 1;
        let peers = others.min(1000);
        for k in 0..peers {
            let k32 = u32::try_from(k).expect("few peers");
            let [_, _, hi, lo] = k32.to_be_bytes();
            self.identity(Ipv4Addr::new(10, 1, hi, lo), 2000 + k32);
        }
        for i in 0..others {
            let peer = 2000 + u32::try_from(i % peers).expect("few peers");
            let port = 1000 + u16::try_from(i / peers).expect("few ports");
            self.allow(peer, port, u32::try_from(i).expect("few rules") + 1);
        }
        self.allow(peer_id, port, 99_999);
    }
}

/// The /24 number `i` of the CIDR case, and the peer inside the middle one.
fn cidr_net(i: usize) -> Ipv4Addr {
    let i = u32::try_from(i).expect("few prefixes");
    Ipv4Addr::from((172u32 << 24) | ((16 << 16) + (i << 8)))
}

fn cidr_peer() -> Ipv4Addr {
    let [a, b, c, _] = cidr_net(RULES / 2).octets();
    Ipv4Addr::new(a, b, c, 9)
}

fn lo_ifindex() -> u32 {
    must("if_nametoindex(lo)", nix::net::if_::if_nametoindex("lo"))
}

struct Case {
    name: &'static str,
    datapath: Datapath,
    ring: RingBuf<MapData>,
    _maps: PolicyMaps,
    peer: Ipv4Addr,
    /// New connections go to a peer address never seen before (each one
    /// walks the CIDRS trie), instead of `peer`.
    fresh_peers: bool,
    /// Per round: established (repeat) and new-flow medians, and floors.
    est: Vec<f64>,
    est_floor: Vec<f64>,
    new: Vec<f64>,
    new_floor: Vec<f64>,
}

fn load_case(name: &'static str, fill: impl FnOnce(&mut Filler<'_>) -> Ipv4Addr) -> Case {
    let mut datapath = must(
        "loading the datapath",
        Datapath::load(&LoadOptions {
            ringbuf_bytes: 1 << 20,
            ..LoadOptions::default()
        }),
    );
    let mut maps = must("taking the policy maps", datapath.take_policy_maps());
    let ring = must("taking the ring buffer", datapath.take_ring_buf());
    let mut filler = Filler {
        maps: &mut maps,
        endpoint: POD_ID,
    };
    let peer = fill(&mut filler);
    filler.endpoint(lo_ifindex());
    Case {
        name,
        datapath,
        ring,
        _maps: maps,
        peer,
        fresh_peers: false,
        est: Vec::new(),
        est_floor: Vec::new(),
        new: Vec::new(),
        new_floor: Vec::new(),
    }
}

fn tcp(dst: Ipv4Addr, sport: u16, flags: u8) -> Vec<u8> {
    frame(
        ipv4(POD, dst),
        L4::Tcp {
            sport,
            dport: SERVICE_PORT,
            flags,
        },
    )
}

impl Case {
    /// The peer of new connection `i` of `round`.
    fn new_peer(&self, round: usize, i: u16) -> Ipv4Addr {
        if !self.fresh_peers {
            return self.peer;
        }
        // .10 and up in every /24 (the established flow's peer is .9).
        let n = round * usize::from(NEW_FLOWS) + usize::from(i);
        let [a, b, c, _] = cidr_net(n % RULES).octets();
        Ipv4Addr::new(a, b, c, 10 + u8::try_from(n / RULES).expect("few rounds"))
    }

    fn run(&self, packet: &[u8], repeat: u32) -> f64 {
        let out = must(
            "BPF_PROG_TEST_RUN",
            self.datapath.test_run(Program::FromPod, packet, repeat),
        );
        assert_eq!(
            out.action, TC_ACT_UNSPEC,
            "{}: the allowed flow was not allowed",
            self.name
        );
        ns(out)
    }
}

fn floor_run(floor: &Floor, packet: &[u8], repeat: u32) -> f64 {
    let out = must("BPF_PROG_TEST_RUN (floor)", floor.test_run(packet, repeat));
    assert_eq!(out.action, TC_ACT_OK);
    ns(out)
}

fn pin_to_last_cpu() -> Option<usize> {
    let cpus = thread::available_parallelism().ok()?.get();
    let cpu = cpus - 1;
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).ok()?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).ok()?;
    Some(cpu)
}

fn cidr_rules(f: &mut Filler<'_>) -> Ipv4Addr {
    for i in 0..RULES {
        let id = 5000 + u32::try_from(i).expect("few");
        f.cidr(cidr_net(i), 24, id);
        f.allow(id, SERVICE_PORT, id);
    }
    cidr_peer()
}

/// The CIDR case with the peer a pod: its address in IDENTITIES under a pod
/// identity no rule names, allowed by the /24 that holds it (an ipBlock
/// matches pod addresses).
fn cidr_rules_pod_peer(f: &mut Filler<'_>) -> Ipv4Addr {
    let peer = cidr_rules(f);
    f.identity(peer, PEER_ID);
    peer
}

fn per_packet() {
    let cpu = pin_to_last_cpu();
    let floor = must("loading the floor program", Floor::load());
    let mut fresh = load_case("10,000 CIDR rules, every peer address new", cidr_rules);
    fresh.fresh_peers = true;
    let mut cases = [
        load_case("10 rules", |f| {
            f.peer_rules(10, PEER, PEER_ID, SERVICE_PORT);
            PEER
        }),
        load_case("10,000 rules", |f| {
            f.peer_rules(RULES, PEER, PEER_ID, SERVICE_PORT);
            PEER
        }),
        load_case("10,000 CIDR rules", cidr_rules),
        fresh,
        load_case(
            "10,000 CIDR rules, the peer a pod in one",
            cidr_rules_pod_peer,
        ),
    ];
    // Enforcement is on: a port no rule names is dropped.
    for case in &cases {
        let denied = frame(
            ipv4(POD, case.peer),
            L4::Tcp {
                sport: 1,
                dport: SERVICE_PORT + 1,
                flags: SYN,
            },
        );
        let out = must(
            "BPF_PROG_TEST_RUN",
            case.datapath.test_run(Program::FromPod, &denied, 1),
        );
        assert_eq!(out.action, TC_ACT_SHOT, "{}: not enforcing", case.name);
    }
    let established: Vec<Vec<u8>> = cases
        .iter()
        .map(|c| {
            let p = tcp(c.peer, CLIENT_PORT, ACK | PSH);
            c.run(&tcp(c.peer, CLIENT_PORT, SYN), 1);
            p
        })
        .collect();
    for case in &mut cases {
        while case.ring.next().is_some() {}
    }
    for _ in 0..3 {
        for (case, packet) in cases.iter().zip(&established) {
            floor_run(&floor, packet, REPEAT);
            case.run(packet, REPEAT);
        }
    }
    for round in 0..ROUNDS {
        let base = NEW_FLOW_PORT + u16::try_from(round).expect("few rounds") * NEW_FLOWS;
        let before: Vec<_> = cases
            .iter()
            .map(|c| must("counters", c.datapath.counters()))
            .collect();
        for (case, packet) in cases.iter_mut().zip(&established) {
            case.est_floor.push(floor_run(&floor, packet, REPEAT));
            case.est.push(case.run(packet, REPEAT));
        }
        let frames: Vec<Vec<Vec<u8>>> = cases
            .iter()
            .map(|c| {
                (0..NEW_FLOWS)
                    .map(|i| tcp(c.new_peer(round, i), base + i, SYN))
                    .collect()
            })
            .collect();
        let mut samples = vec![(Vec::new(), Vec::new()); cases.len()];
        for i in 0..usize::from(NEW_FLOWS) {
            for ((case, frames), (f, o)) in cases.iter().zip(&frames).zip(&mut samples) {
                let packet = &frames[i];
                f.push(floor_run(&floor, packet, 1));
                o.push(case.run(packet, 1));
            }
        }
        for ((case, (f, o)), before) in cases.iter_mut().zip(samples).zip(before) {
            case.new_floor.push(median(&f));
            case.new.push(median(&o));
            let after = must("counters", case.datapath.counters());
            assert_eq!(
                after[CNT_NEW_FLOWS] - before[CNT_NEW_FLOWS],
                u64::from(NEW_FLOWS),
                "{}: every new frame must create a flow",
                case.name
            );
            assert_eq!(after[CNT_TABLE_FULL], 0);
            assert_eq!(after[CNT_DROPPED], 1, "{}: only the probe drop", case.name);
            while case.ring.next().is_some() {}
        }
    }

    println!(
        "BPF_PROG_TEST_RUN of `weir_from_pod`, the endpoint in enforce mode \
         (egress isolated), an allowed IPv4/TCP flow, {ROUNDS} rounds{}; \
         established: repeat = {REPEAT} per run; new connection: {NEW_FLOWS} \
         distinct SYNs per round and case, repeat = 1 each (median per round); \
         the cases and the floor alternate packet by packet.",
        cpu.map_or_else(String::new, |c| format!(" pinned to CPU {c}")),
    );
    println!();
    println!(
        "| case | path | floor ns | enforce ns | ratio to floor | vs 10 rules (median) | vs 10 rules range |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    let rel = |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| x / y).collect() };
    for (path, pick) in [("new connection", 0usize), ("established", 1usize)] {
        let get = |c: &Case| {
            if pick == 0 {
                (c.new.clone(), c.new_floor.clone())
            } else {
                (c.est.clone(), c.est_floor.clone())
            }
        };
        let (base, _) = get(&cases[0]);
        for case in &cases {
            let (o, f) = get(case);
            let vs = rel(&o, &base);
            println!(
                "| {} | {path} | {:.1} | {:.1} | {:.2} | {:.3} | {} |",
                case.name,
                median(&f),
                median(&o),
                median(&rel(&o, &f)),
                median(&vs),
                range(&vs, 3),
            );
        }
    }
    println!();
}

// ---- connection rate between lab pods ----

const LAB_ROUNDS: usize = 3;
const LAB_SECONDS: u64 = 2;
const LAB_PORT: u16 = 5202;
/// Client source ports run from here up, once each per run.
const FIRST_SPORT: u16 = 1024;
const CHAIN: &str = "WEIRBENCH";
const NFT_TABLE: &str = "weirbench";

fn enter(netns: &str) {
    let file = File::open(format!("/run/netns/{netns}"))
        .unwrap_or_else(|e| panic!("opening netns {netns}: {e}"));
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("entering netns {netns}: {e}"));
}

/// A listener in the server pod that accepts and drops, forever.
fn serve(netns: String) {
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        enter(&netns);
        let listener = TcpListener::bind(("0.0.0.0", LAB_PORT)).expect("bind in the server pod");
        tx.send(()).expect("ready");
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    rx.recv().expect("server started");
}

/// Connect + close (RST) loop from `client`'s netns: connections per second.
fn connect_rate(client: &LabPod, server: Ipv4Addr, seconds: u64) -> (f64, u64) {
    let netns = client.netns.clone();
    thread::scope(|s| {
        s.spawn(move || {
            enter(&netns);
            let to = SocketAddr::from((server, LAB_PORT)).into();
            let (mut ok, mut failed) = (0u64, 0u64);
            let start = Instant::now();
            let end = start + Duration::from_secs(seconds);
            // Source ports in order, none reused within a run: a reused
            // 5-tuple would find weir's flow entry of the last connection.
            let mut sports = FIRST_SPORT..=u16::MAX;
            while Instant::now() < end {
                let Some(sport) = sports.next() else { break };
                let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
                socket.set_linger(Some(Duration::ZERO)).expect("linger");
                if socket
                    .bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, sport)).into())
                    .is_err()
                {
                    continue;
                }
                match socket.connect_timeout(&to, Duration::from_secs(1)) {
                    Ok(()) => ok += 1,
                    Err(_) => failed += 1,
                }
            }
            #[expect(clippy::cast_precision_loss, reason = "counts are small")]
            let rate = ok as f64 / start.elapsed().as_secs_f64();
            (rate, failed)
        })
        .join()
        .expect("client thread")
    })
}

fn sh(program: &str, args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{program}: {e}"))?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .map_err(|e| format!("{program} stdin: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Every rule this bench adds, removed on drop (and before adding).
struct Firewall {
    client: Ipv4Addr,
    server: Ipv4Addr,
}

impl Firewall {
    fn jumps(&self) -> [String; 2] {
        [self.client, self.server].map(|ip| format!("-s {ip}/32 -j {CHAIN}"))
    }

    fn clean(&self) {
        for jump in self.jumps() {
            let args: Vec<&str> = jump.split(' ').collect();
            while sh("iptables", &[&["-D", "FORWARD"], &args[..]].concat(), None).is_ok() {}
        }
        let _ = sh("iptables", &["-F", CHAIN], None);
        let _ = sh("iptables", &["-X", CHAIN], None);
        let _ = sh("nft", &["delete", "table", "inet", NFT_TABLE], None);
    }

    /// Another source address for rule `i`: 10.1.x.y.
    fn other(i: usize) -> Ipv4Addr {
        let [_, _, hi, lo] = u32::try_from(i).expect("few").to_be_bytes();
        Ipv4Addr::new(10, 1, hi, lo)
    }

    fn iptables(&self) {
        let (c, s) = (self.client, self.server);
        let mut rules = format!(
            "*filter\n:{CHAIN} - [0:0]\n-A {CHAIN} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n"
        );
        for i in 0..RULES - 1 {
            rules.push_str(&format!(
                "-A {CHAIN} -s {}/32 -d {s}/32 -p tcp --dport {LAB_PORT} -j ACCEPT\n",
                Self::other(i)
            ));
        }
        rules.push_str(&format!(
            "-A {CHAIN} -s {c}/32 -d {s}/32 -p tcp --dport {LAB_PORT} -j ACCEPT\n-A {CHAIN} -j DROP\n"
        ));
        for jump in self.jumps() {
            rules.push_str(&format!("-I FORWARD 1 {jump}\n"));
        }
        rules.push_str("COMMIT\n");
        sh("iptables-restore", &["--noflush"], Some(&rules)).unwrap_or_else(|e| panic!("{e}"));
    }

    fn nft(&self) {
        let (c, s) = (self.client, self.server);
        let mut elements: Vec<String> = (0..RULES - 1)
            .map(|i| format!("{} . {s} . {LAB_PORT}", Self::other(i)))
            .collect();
        elements.push(format!("{c} . {s} . {LAB_PORT}"));
        let script = format!(
            "table inet {NFT_TABLE} {{\n\
             set allowed {{ type ipv4_addr . ipv4_addr . inet_service; elements = {{ {} }} }}\n\
             chain forward {{ type filter hook forward priority 0; policy accept;\n\
             ip saddr {{ {c}, {s} }} ct state established,related accept\n\
             ip saddr . ip daddr . tcp dport @allowed counter accept\n\
             ip saddr {{ {c}, {s} }} drop\n}}\n}}\n",
            elements.join(", ")
        );
        sh("nft", &["-f", "-"], Some(&script)).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Packets that hit the final allow rule (the filter saw the traffic).
    fn iptables_hits(&self) -> u64 {
        let out = Command::new("iptables")
            .args(["-nvxL", CHAIN])
            .output()
            .expect("iptables -L");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .rev()
            .nth(1)
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    fn nft_hits(&self) -> u64 {
        let out = Command::new("nft")
            .args(["list", "chain", "inet", NFT_TABLE, "forward"])
            .output()
            .expect("nft list");
        let text = String::from_utf8_lossy(&out.stdout);
        text.split("counter packets ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        self.clean();
    }
}

/// weir with 10,000 rules: the client's endpoint enforces egress, the
/// server is its allowed peer; both veths carry the programs.
fn weir_enforcing(client: &LabPod, server: &LabPod) -> Datapath {
    let mut datapath = must(
        "loading the datapath",
        Datapath::load(&LoadOptions::default()),
    );
    let mut maps = must("policy maps", datapath.take_policy_maps());
    let mut filler = Filler {
        maps: &mut maps,
        endpoint: POD_ID,
    };
    filler.peer_rules(RULES, server.ip, PEER_ID, LAB_PORT);
    filler.endpoint(must(
        "if_nametoindex",
        nix::net::if_::if_nametoindex(client.host_veth.as_str()),
    ));
    for pod in [client, server] {
        must("attaching", datapath.attach(&pod.host_veth));
    }
    datapath
}

fn connection_rate() {
    let release = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/weir");
    if std::env::var_os("WEIR_BIN").is_none() && release.exists() {
        // SAFETY: no other thread reads the environment now.
        unsafe { std::env::set_var("WEIR_BIN", &release) };
    }
    let lab = Lab::up("wenf", include_str!("lab.yaml"));
    let status = lab.status();
    let (client, server) = (lab_pod(&status, "client"), lab_pod(&status, "server"));
    serve(server.netns.clone());
    let fw = Firewall {
        client: client.ip,
        server: server.ip,
    };
    fw.clean();
    let (r, failed) = connect_rate(&client, server.ip, 1);
    assert!(
        r > 0.0 && failed == 0,
        "no connections without filtering ({failed} failed)"
    );

    let names = [
        "no filtering",
        "iptables, linear chain of 10,000",
        "nftables, set of 10,000",
        "weir, 10,000 rules (enforce)",
    ];
    let mut rates = vec![Vec::new(); names.len()];
    let mut failures = vec![0u64; names.len()];
    let mut hits = vec![0u64; names.len()];
    for round in 0..LAB_ROUNDS {
        for k in 0..names.len() {
            let which = (k + round) % names.len();
            let mut datapath = None;
            match which {
                1 => fw.iptables(),
                2 => fw.nft(),
                3 => datapath = Some(weir_enforcing(&client, &server)),
                _ => {}
            }
            let (rate, failed) = connect_rate(&client, server.ip, LAB_SECONDS);
            hits[which] += match which {
                1 => fw.iptables_hits(),
                2 => fw.nft_hits(),
                3 => {
                    let c = must("counters", datapath.as_ref().expect("weir").counters());
                    assert_eq!(c[CNT_DROPPED], 0, "weir dropped the allowed peer");
                    assert_eq!(c[CNT_TABLE_FULL], 0, "weir's flow table filled up");
                    #[expect(
                        clippy::cast_possible_truncation,
                        clippy::cast_sign_loss,
                        reason = "a count"
                    )]
                    let connections = (rate * LAB_SECONDS as f64) as u64;
                    assert!(
                        c[CNT_NEW_FLOWS] >= connections,
                        "weir saw fewer new flows than connections"
                    );
                    c[CNT_NEW_FLOWS]
                }
                _ => 0,
            };
            drop(datapath);
            fw.clean();
            rates[which].push(rate);
            failures[which] += failed;
        }
    }
    drop(lab);

    println!(
        "TCP connect + close (linger 0) loop between two lab pods on one bridge \
         (br_netfilter: bridge-nf-call-iptables = {}), {LAB_ROUNDS} rounds of \
         {LAB_SECONDS} s per filter, filters alternating; medians (range).",
        std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables")
            .map_or_else(|_| "?".to_owned(), |s| s.trim().to_owned())
    );
    println!();
    println!("| filter | connections/s | range | vs no filtering | weir / this | checks |");
    println!("|---|---:|---:|---:|---:|---|");
    let none = median(&rates[0]);
    let weir = median(&rates[3]);
    for (k, name) in names.iter().enumerate() {
        let m = median(&rates[k]);
        let check = match k {
            1 => format!("{} SYNs hit the matching rule", hits[k]),
            2 => format!("{} SYNs hit the set rule", hits[k]),
            3 => format!(
                "{} new flow entries (both veths), 0 dropped, table never full",
                hits[k]
            ),
            _ => String::new(),
        };
        let check = if failures[k] > 0 {
            format!("{check}; {} connects failed", failures[k])
        } else {
            check
        };
        println!(
            "| {name} | {m:.0} | {} | {:.3} | {:.2} | {check} |",
            range(&rates[k], 0),
            m / none,
            weir / m,
        );
    }
    println!();
}

// ---- the cost of one new connection in each filter ----

const SYN_ROUNDS: usize = 9;
const SYN_CONNECTS: u16 = 1500;
/// Source ports of the latency runs: above the rate runs', fresh per run.
const SYN_FIRST_SPORT: u16 = 30000;

/// `SYN_CONNECTS` sequential connects (each closed with an RST) from the
/// client pod, the thread pinned to one CPU: each connect's latency in µs,
/// and how many failed.
fn connect_latencies(client: &LabPod, server: Ipv4Addr, cpu: Option<usize>) -> (Vec<f64>, u64) {
    let netns = client.netns.clone();
    thread::scope(|s| {
        s.spawn(move || {
            enter(&netns);
            if let Some(cpu) = cpu {
                let mut set = nix::sched::CpuSet::new();
                must("CPU set", set.set(cpu));
                must(
                    "pinning the client",
                    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set),
                );
            }
            let to = SocketAddr::from((server, LAB_PORT)).into();
            let mut out = Vec::with_capacity(SYN_CONNECTS.into());
            let mut failed = 0u64;
            for sport in SYN_FIRST_SPORT..SYN_FIRST_SPORT + SYN_CONNECTS {
                let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
                socket.set_linger(Some(Duration::ZERO)).expect("linger");
                socket
                    .bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, sport)).into())
                    .unwrap_or_else(|e| panic!("bind to source port {sport}: {e}"));
                let t0 = Instant::now();
                // a SYN lost under load waits a second for its retransmission:
                // counted, not a sample
                match socket.connect_timeout(&to, Duration::from_millis(500)) {
                    Ok(()) => out.push(t0.elapsed().as_secs_f64() * 1e6),
                    Err(_) => failed += 1,
                }
            }
            (out, failed)
        })
        .join()
        .expect("client thread")
    })
}

/// weir's programs' own time per connection, from the kernel's run
/// statistics: (runs per connection, ns per connection).
fn weir_kernel_time(
    datapath: &Datapath,
    before: [(u64, Duration); 2],
    connects: u64,
) -> (f64, f64) {
    let now = [Program::FromPod, Program::ToPod].map(|p| must("run stats", datapath.run_stats(p)));
    let runs: u64 = now.iter().zip(&before).map(|(n, b)| n.0 - b.0).sum();
    let time: Duration = now.iter().zip(&before).map(|(n, b)| n.1 - b.1).sum();
    #[expect(clippy::cast_precision_loss, reason = "counts are small")]
    let per = (
        runs as f64 / connects as f64,
        time.as_nanos() as f64 / connects as f64,
    );
    per
}

fn syn_cost() {
    let release = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/weir");
    if std::env::var_os("WEIR_BIN").is_none() && release.exists() {
        // SAFETY: no other thread reads the environment now.
        unsafe { std::env::set_var("WEIR_BIN", &release) };
    }
    let lab = Lab::up("wsyn", include_str!("lab.yaml"));
    let status = lab.status();
    let (client, server) = (lab_pod(&status, "client"), lab_pod(&status, "server"));
    serve(server.netns.clone());
    let fw = Firewall {
        client: client.ip,
        server: server.ip,
    };
    fw.clean();
    let cpu = thread::available_parallelism().ok().map(|n| n.get() - 1);
    // while this fd is open the kernel keeps run statistics of BPF programs
    let _stats = must(
        "enabling BPF run statistics",
        aya::sys::enable_stats(aya::sys::Stats::RunTime),
    );

    let names = [
        "no filtering",
        "iptables, linear chain of 10,000",
        "nftables, set of 10,000",
        "weir, 10,000 rules (enforce)",
    ];
    let mut medians = vec![Vec::new(); names.len()];
    let mut failures = vec![0u64; names.len()];
    let mut weir_runs = Vec::new();
    let mut weir_ns = Vec::new();
    for round in 0..SYN_ROUNDS {
        for k in 0..names.len() {
            let which = (k + round) % names.len();
            let mut datapath = None;
            match which {
                1 => fw.iptables(),
                2 => fw.nft(),
                3 => datapath = Some(weir_enforcing(&client, &server)),
                _ => {}
            }
            let before = datapath.as_ref().map(|d| {
                [Program::FromPod, Program::ToPod].map(|p| must("run stats", d.run_stats(p)))
            });
            let (latencies, failed) = connect_latencies(&client, server.ip, cpu);
            failures[which] += failed;
            let ok = u64::try_from(latencies.len()).expect("few");
            match which {
                1 => assert!(
                    fw.iptables_hits() >= ok,
                    "iptables saw fewer SYNs than connections"
                ),
                2 => assert!(
                    fw.nft_hits() >= ok,
                    "nftables saw fewer SYNs than connections"
                ),
                3 => {
                    let d = datapath.as_ref().expect("weir");
                    let c = must("counters", d.counters());
                    assert_eq!(c[CNT_DROPPED], 0, "weir dropped the allowed peer");
                    assert!(
                        c[CNT_NEW_FLOWS] >= 2 * ok,
                        "weir saw fewer new flows than connections (both veths)"
                    );
                    let (runs, ns) = weir_kernel_time(d, before.expect("stats"), ok);
                    weir_runs.push(runs);
                    weir_ns.push(ns);
                }
                _ => {}
            }
            drop(datapath);
            fw.clean();
            medians[which].push(median(&latencies));
        }
    }
    drop(lab);

    println!(
        "{SYN_CONNECTS} sequential TCP connects (each closed with an RST) from the client pod \
         to the server pod, the client pinned to CPU {}; {SYN_ROUNDS} rounds, the four filters \
         alternating in rotating order; per run the median connect() latency; the filter's \
         added latency is the median over rounds of its run minus the same round's unfiltered \
         run. Load average at the end: {}.",
        cpu.map_or_else(|| "?".to_owned(), |c| c.to_string()),
        std::fs::read_to_string("/proc/loadavg").map_or_else(
            |_| "?".to_owned(),
            |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
        )
    );
    println!();
    println!(
        "| filter | connect() µs, median | range over rounds | added vs no filtering, µs | range | connects timed out |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let mut added = vec![0.0; names.len()];
    for (k, name) in names.iter().enumerate() {
        let diffs: Vec<f64> = medians[k]
            .iter()
            .zip(&medians[0])
            .map(|(f, n)| f - n)
            .collect();
        added[k] = median(&diffs);
        println!(
            "| {name} | {:.1} | {} | {:+.1} | {} | {} |",
            median(&medians[k]),
            range(&medians[k], 1),
            added[k],
            range(&diffs, 1),
            failures[k],
        );
    }
    println!();
    let weir = median(&weir_ns);
    println!(
        "weir's programs ran {:.1} times per connection (SYN, SYN-ACK, ACK, RST at both veths), \
         {weir:.0} ns per connection in all (kernel run statistics, median over rounds; range {} ns). \
         Added latency of the linear iptables chain / weir's time per connection: {:.0}x; \
         of the nftables set: {:.1}x. Added latency of the chain / weir's added latency: {:.0}x; \
         of the set: {:.1}x.",
        median(&weir_runs),
        range(&weir_ns, 0),
        added[1] * 1e3 / weir,
        added[2] * 1e3 / weir,
        added[1] / added[3],
        added[2] / added[3],
    );
    println!();
}

// ---- time to apply 10,000 rules ----

const NAMESPACES: usize = 10;
const WORKLOADS: usize = 100;
const REPLICAS: usize = 10;

fn ns_name(w: usize) -> String {
    format!("ns{}", w % NAMESPACES)
}

fn cluster() -> Cluster {
    let mut cluster = Cluster::default();
    for n in 0..NAMESPACES {
        let name = format!("ns{n}");
        cluster.namespaces.insert(
            name.clone(),
            BTreeMap::from([("kubernetes.io/metadata.name".to_owned(), name)]),
        );
    }
    let mut i = 0u32;
    for w in 0..WORKLOADS {
        for r in 0..REPLICAS {
            i += 1;
            let [_, _, hi, lo] = i.to_be_bytes();
            cluster.pods.push(ClusterPod {
                meta: PodMeta {
                    namespace: ns_name(w),
                    name: format!("w{w}-{r}"),
                    labels: BTreeMap::from([("app".to_owned(), format!("w{w}"))]),
                    workload: WorkloadRef::new(
                        ns_name(w),
                        WorkloadKind::Deployment,
                        format!("w{w}"),
                    ),
                    ips: vec![IpAddr::from([10, 244, hi, lo])],
                },
                ports: vec![NamedPort {
                    name: Some("http".to_owned()),
                    port: 8080,
                    protocol: Protocol::Tcp,
                }],
            });
        }
    }
    cluster
}

/// Workload `w` accepts 10 ports from the 10 next workloads.
fn peer_policy(w: usize) -> Value {
    let from: Vec<_> = (1..=10)
        .map(|k| {
            let p = (w + k) % WORKLOADS;
            json!({
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns_name(p)}},
                "podSelector": {"matchLabels": {"app": format!("w{p}")}},
            })
        })
        .collect();
    let ports: Vec<_> = (0..10).map(|j| json!({"port": 9000 + j})).collect();
    json!({
        "metadata": {"namespace": ns_name(w), "name": format!("w{w}-in")},
        "spec": {
            "podSelector": {"matchLabels": {"app": format!("w{w}")}},
            "ingress": [{"from": from, "ports": ports}],
        },
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn apply_time() {
    const RUNS: usize = 5;
    let cluster = cluster();
    let set = PolicySet::new(
        (0..WORKLOADS)
            .map(|w| serde_json::from_value(peer_policy(w)).expect("valid policy"))
            .collect(),
    )
    .expect("valid set");
    let modes = BTreeMap::new();
    let node_ips: [IpAddr; 1] = [IpAddr::from([192, 168, 0, 10])];
    // every pod local, on a made-up ifindex
    let local: BTreeMap<PodKey, u32> = cluster
        .pods
        .iter()
        .zip(100_000u32..)
        .map(|(p, i)| {
            (
                PodKey {
                    namespace: p.meta.namespace.clone(),
                    name: p.meta.name.clone(),
                },
                i,
            )
        })
        .collect();
    let (mut compile, mut convert, mut write, mut total) = (vec![], vec![], vec![], vec![]);
    let mut counts = [0; 6];
    for _ in 0..RUNS {
        let mut datapath = must(
            "loading the datapath",
            Datapath::load(&LoadOptions::default()),
        );
        let mut maps = must("policy maps", datapath.take_policy_maps());
        let t0 = Instant::now();
        let state = must(
            "compile",
            datapath::compile(
                &Input {
                    policies: &set,
                    cluster: &cluster,
                    modes: &modes,
                    default_mode: Mode::Enforce,
                    node_ips: &node_ips,
                },
                &mut Identities::new(),
            ),
        );
        let t1 = Instant::now();
        let entries = Entries::of_state(&state, &local);
        let t2 = Instant::now();
        // The enforcer's path: the plan from empty maps, written in order.
        for op in entries::plan(&Entries::default(), &entries) {
            must("map write", maps.write(&op));
        }
        let t3 = Instant::now();
        compile.push(ms(t1 - t0));
        convert.push(ms(t2 - t1));
        write.push(ms(t3 - t2));
        total.push(ms(t3 - t0));
        counts = entries.counts();
        assert!(
            counts[3] >= RULES,
            "expected 10,000 POLICY_EXACT entries, got {}",
            counts[3]
        );
    }
    println!(
        "100 NetworkPolicies (each: 10 peer workloads x 10 ports) over 1,000 pods \
         in 10 namespaces, all local and in enforce mode: {} ENDPOINTS, {} IDENTITIES, \
         {} CIDRS, {} POLICY_EXACT, {} POLICY, {} PEERS entries; {RUNS} runs into \
         freshly loaded maps, medians (range).",
        counts[0], counts[1], counts[2], counts[3], counts[4], counts[5]
    );
    println!();
    println!("| step | ms | range |");
    println!("|---|---:|---:|");
    for (name, v) in [
        ("compile (`datapath::compile`, cold identities)", &compile),
        ("ABI entries (`Entries::of_state`)", &convert),
        (
            "write into the maps (`entries::plan`, as the enforcer)",
            &write,
        ),
        ("**total**", &total),
    ] {
        println!("| {name} | {:.1} | {} |", median(v), range(v, 1));
    }
}

/// Sections to run: every one, or those named on the command line
/// (`cargo bench ... --bench enforce -- per-packet apply`).
const SECTIONS: [&str; 5] = [
    "per-packet",
    "connection-rate",
    "syn-cost",
    "apply",
    "cli-apply",
];

/// `weir policy apply -f` of 10,000 small NetworkPolicies to a running
/// agent whose lab pod they all select: the user's path (the CLI reads,
/// checks and sends the YAML; the agent reads, checks, compiles and writes
/// the maps and answers once enforced), timed as the command's wall time.
/// Run 1 starts from no policy; each later run moves every policy to other
/// ports (10,000 rules removed, 10,000 added).
fn cli_apply() {
    const RUNS: usize = 6;
    const POLICIES: usize = 10_000;
    let release = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/weir");
    if std::env::var_os("WEIR_BIN").is_none() && release.exists() {
        // SAFETY: no other thread reads the environment now.
        unsafe { std::env::set_var("WEIR_BIN", &release) };
    }
    let lab = Lab::up("wcli", include_str!("lab.yaml"));
    let agent = Agent::start(&lab, &[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let url = agent.url();
    let (mut first, mut later, mut bytes) = (0.0, vec![], 0);
    for run in 0..RUNS {
        let path = dir.path().join(format!("run{run}.yaml"));
        let yaml = small_policies("bench", "server", POLICIES, run * POLICIES);
        bytes = yaml.len();
        std::fs::write(&path, yaml).expect("write the policies");
        let path = path.to_string_lossy().into_owned();
        let t0 = Instant::now();
        let out = weir(&["policy", "apply", "--server", &url, "-f", &path]);
        let took = ms(t0.elapsed());
        assert!(
            out.status.success(),
            "weir policy apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if run == 0 {
            first = took;
        } else {
            later.push(took);
        }
    }
    let enforced = agent.get_json("/api/policies/enforced");
    let count = enforced["policies"].as_array().map_or(0, Vec::len);
    assert_eq!(count, POLICIES, "enforced policies after the runs");
    println!(
        "{POLICIES} NetworkPolicies ({:.1} MB of YAML), each one ingress port from \
         `app: client` to the lab's server pod, applied with `weir policy apply -f` \
         (release build) to an agent attached to the lab; wall time of the command.",
        bytes as f64 / 1e6
    );
    println!();
    println!("| run | ms | range |");
    println!("|---|---:|---:|");
    println!("| first apply (no policy before) | {first:.0} | |");
    println!(
        "| each policy moved to other ports ({} runs, median) | {:.0} | {} |",
        later.len(),
        median(&later),
        range(&later, 0)
    );
}

fn main() {
    require_root("enforce bench");
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if let Some(bad) = named.iter().find(|a| !SECTIONS.contains(&a.as_str())) {
        panic!("unknown section {bad:?} (expected one of {SECTIONS:?})");
    }
    let run = |section: &str| named.is_empty() || named.iter().any(|a| a == section);
    if run("per-packet") {
        println!("**Per-packet cost**\n");
        per_packet();
    }
    if run("connection-rate") {
        println!("**New-connection rate between two lab pods**\n");
        connection_rate();
    }
    if run("syn-cost") {
        println!("**What one new connection costs in each filter, at 10,000 rules**\n");
        syn_cost();
    }
    if run("apply") {
        println!("**Time to apply 10,000 rules**\n");
        apply_time();
    }
    if run("cli-apply") {
        println!("**`weir policy apply` of 10,000 NetworkPolicies**\n");
        cli_apply();
    }
}
