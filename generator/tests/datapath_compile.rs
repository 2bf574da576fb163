//! The datapath compiler (`weir_generator::datapath`): the simulated kernel
//! ([`DatapathState::judge`]) agrees with the evaluator on random clusters
//! and policies; port ranges split into exact prefix blocks; diffs stay
//! small; map limits are enforced; `ipBlock` excepts become trie prefixes.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use k8s_openapi::{
    api::networking::v1::{IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort},
    apimachinery::pkg::util::intstr::IntOrString,
};
use proptest::{collection::vec, option, prelude::*, sample::select};
use support::{
    NAMESPACES, labels as label_map, pod, policies,
    strategies::{labels, namespace_selector, policy, selector},
    xyz_cluster,
};
use weir_generator::{
    cluster::{Cluster, ClusterPod},
    datapath::{
        self, CompileError, DatapathState, EP_ISOLATED_EGRESS, EP_ISOLATED_INGRESS,
        EP_RULES_EGRESS, EP_RULES_INGRESS, ID_ANY, ID_HOST, ID_WORLD, Identities, IdentityKey,
        Input, Limits, Mode, PeerKey, PodKey, Reason, block_contains, port_prefixes,
    },
    eval::{DenyReason, Direction, DirectionVerdict, Endpoint, Evaluator, Flow, PolicySet},
    model::Protocol,
};

// ---------------------------------------------------------------------------
// Helpers

const NODE_IP: &str = "10.0.0.254";

fn compile_with(
    set: &PolicySet,
    cluster: &Cluster,
    modes: &BTreeMap<String, Mode>,
    ids: &mut Identities,
) -> DatapathState {
    let node_ips = [NODE_IP.parse().expect("NODE_IP is an address")];
    datapath::compile(
        &Input {
            policies: set,
            cluster,
            modes,
            default_mode: Mode::Observe,
            node_ips: &node_ips,
        },
        ids,
    )
    .expect("compiles")
}

fn compile_yaml(yaml: &str, cluster: &Cluster) -> (DatapathState, Identities) {
    let set = PolicySet::new(policies(yaml)).expect("the test's policies validate");
    let mut ids = Identities::new();
    let state = compile_with(&set, cluster, &BTreeMap::new(), &mut ids);
    (state, ids)
}

fn key(ns: &str, name: &str) -> PodKey {
    PodKey::new(ns, name)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

// ---------------------------------------------------------------------------
// (1) Differential: judge == evaluator on random clusters and policies.

const PORT_NAMES: [&str; 3] = ["http", "dns", "metrics"];
const PORT_NUMBERS: [u16; 4] = [53, 80, 81, 8080];
const PROTOCOLS: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];
/// Outside the cluster (10.9.9.9 is in 10.0.0.0/8 like the pods).
const EXTERNALS: [&str; 6] = [
    "192.0.2.10",
    "192.0.2.200",
    "198.51.100.7",
    "10.9.9.9",
    "2001:db8::1",
    "2001:db8:0:1::1",
];
/// (cidr, excepts strictly inside it), nested into each other so that
/// one policy's prefixes fall inside another's excepts. Pods are
/// 10.0.0.1..=6 and fd00::1..=6: several blocks hold them and several
/// excepts cut some of them out, so pods are matched by selectors, by
/// blocks, or both.
const BLOCKS: [(&str, &[&str]); 13] = [
    ("192.0.2.0/24", &["192.0.2.0/25", "192.0.2.192/26"]),
    ("0.0.0.0/0", &["192.0.2.0/24", "10.0.0.0/8"]),
    ("10.0.0.0/8", &["10.9.0.0/16"]),
    ("198.51.100.0/24", &[]),
    ("192.0.2.0/28", &["192.0.2.10/32"]),
    ("192.0.2.0/26", &["192.0.2.8/29"]),
    ("2001:db8::/32", &["2001:db8::/64"]),
    ("10.0.0.0/24", &[]),
    ("10.9.0.0/16", &["10.9.9.0/24"]),
    ("::/0", &["fd00::/8"]),
    ("10.0.0.0/29", &["10.0.0.2/32", "10.0.0.4/31"]),
    ("10.0.0.4/30", &["10.0.0.6/32"]),
    ("fd00::/64", &["fd00::2/128", "fd00::4/126"]),
];
/// Destination ports probed: range edges (ranges are `n..=n+d`, d < 30).
const PROBE_PORTS: [u16; 12] = [1, 53, 54, 80, 81, 85, 109, 110, 8080, 8095, 8110, 65535];

fn peer() -> impl Strategy<Value = NetworkPolicyPeer> {
    let block = (
        select(&BLOCKS[..]),
        any::<prop::sample::Index>(),
        0..=2usize,
    )
        .prop_map(|((cidr, excepts), i, n)| {
            let except: Vec<String> = if excepts.is_empty() {
                vec![]
            } else {
                (0..n.min(excepts.len()))
                    .map(|k| excepts[(i.index(excepts.len()) + k) % excepts.len()].to_owned())
                    .collect()
            };
            IPBlock {
                cidr: cidr.to_owned(),
                except: (n > 0).then_some(except),
            }
        });
    prop_oneof![
        2 => selector().prop_map(|s| NetworkPolicyPeer {
            pod_selector: Some(s),
            ..Default::default()
        }),
        1 => namespace_selector().prop_map(|s| NetworkPolicyPeer {
            namespace_selector: Some(s),
            ..Default::default()
        }),
        1 => (selector(), namespace_selector()).prop_map(|(p, n)| NetworkPolicyPeer {
            pod_selector: Some(p),
            namespace_selector: Some(n),
            ..Default::default()
        }),
        3 => block.prop_map(|b| NetworkPolicyPeer {
            ip_block: Some(b),
            ..Default::default()
        }),
    ]
}

fn port() -> impl Strategy<Value = NetworkPolicyPort> {
    let protocol = option::of(select(&["TCP", "UDP", "SCTP"][..]).prop_map(str::to_owned));
    let number = select(&PORT_NUMBERS[..]).prop_map(i32::from);
    let spec = prop_oneof![
        1 => Just((None, None)),
        2 => number
            .clone()
            .prop_map(|n| (Some(IntOrString::Int(n)), None)),
        2 => (number, 0..30i32).prop_map(|(n, d)| (Some(IntOrString::Int(n)), Some(n + d))),
        1 => Just((Some(IntOrString::Int(1)), Some(65535))),
        3 => select(&PORT_NAMES[..]).prop_map(|n| (Some(IntOrString::String(n.to_owned())), None)),
    ];
    (protocol, spec).prop_map(|(protocol, (port, end_port))| NetworkPolicyPort {
        end_port,
        port,
        protocol,
    })
}

fn named_port() -> impl Strategy<Value = (Option<&'static str>, u16, Protocol)> {
    (
        option::weighted(0.8, select(&PORT_NAMES[..])),
        select(&PORT_NUMBERS[..]),
        prop_oneof![3 => Just(Protocol::Tcp), 1 => select(&PROTOCOLS[..])],
    )
}

/// An address inside one of the blocks' prefixes (cidrs and excepts), so
/// that every level of the trie gets probed.
fn external() -> impl Strategy<Value = IpAddr> {
    let prefixes: Vec<ipnet::IpNet> = BLOCKS
        .iter()
        .flat_map(|(cidr, excepts)| std::iter::once(*cidr).chain(excepts.iter().copied()))
        .map(|p| p.parse().expect("BLOCKS are CIDRs"))
        .collect();
    (select(prefixes), any::<u128>()).prop_filter_map("a pod or node address", |(net, bits)| {
        let a = match net {
            ipnet::IpNet::V4(n) => {
                let host = u32::try_from(bits & u128::from(u32::MAX)).expect("masked to 32 bits")
                    & !u32::from(n.netmask());
                IpAddr::from(std::net::Ipv4Addr::from(u32::from(n.network()) | host))
            }
            ipnet::IpNet::V6(n) => IpAddr::from(std::net::Ipv6Addr::from(
                u128::from(n.network()) | (bits & !u128::from(n.netmask())),
            )),
        };
        let internal: ipnet::IpNet = match a {
            IpAddr::V4(_) => "10.0.0.0/24".parse().expect("a CIDR"),
            IpAddr::V6(_) => "fd00::/64".parse().expect("a CIDR"),
        };
        (!internal.contains(&a)).then_some(a)
    })
}

/// Random pods (IPv4 and IPv6 each) in x, y, z. Pods of one identity
/// (namespace, labels) get the same container ports: the datapath cannot
/// tell them apart, and a Deployment's replicas share their template
/// (`named_ports_that_disagree_within_an_identity` covers the other case).
fn cluster() -> impl Strategy<Value = Cluster> {
    let namespaces = vec(labels(), 3);
    let pods = vec(
        (select(&NAMESPACES[..]), labels(), vec(named_port(), 0..=3)),
        1..=6,
    );
    (namespaces, pods).prop_map(|(ns_labels, pods)| {
        let mut cluster = Cluster::default();
        for (ns, mut l) in NAMESPACES.into_iter().zip(ns_labels) {
            l.insert("kubernetes.io/metadata.name".to_owned(), ns.to_owned());
            cluster.namespaces.insert(ns.to_owned(), l);
        }
        let mut template: BTreeMap<(&str, BTreeMap<String, String>), Vec<_>> = BTreeMap::new();
        for (i, (ns, l, ports)) in (1u8..).zip(pods) {
            let ports = template.entry((ns, l.clone())).or_insert(ports).clone();
            let mut p = pod(ns, &format!("p{i}"), l, IpAddr::from([10, 0, 0, i]), &ports);
            p.meta
                .ips
                .push(IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, u16::from(i)]));
            cluster.pods.push(p);
        }
        cluster
    })
}

fn name(e: &Endpoint<'_>) -> String {
    match e {
        Endpoint::Pod(ClusterPod { meta, .. }) => format!("{}/{}", meta.namespace, meta.name),
        Endpoint::PodAt(ClusterPod { meta, .. }, ip) => {
            format!("{}/{}@{ip}", meta.namespace, meta.name)
        }
        Endpoint::External(ip) => ip.to_string(),
    }
}

/// The address the datapath sees for `e`.
fn address(e: &Endpoint<'_>) -> IpAddr {
    match e {
        Endpoint::PodAt(_, ip) | Endpoint::External(ip) => *ip,
        Endpoint::Pod(_) => unreachable!("the datapath sees pods at an address"),
    }
}

/// The judgement of one side against the evaluator's verdict for it.
fn agree(
    state: &DatapathState,
    subject: &ClusterPod,
    direction: Direction,
    judged: datapath::Judgement,
    want: &DirectionVerdict,
) -> Result<(), String> {
    let ep = &state.endpoints[&PodKey::of(subject)];
    match (want, judged.reason) {
        (DirectionVerdict::NotIsolated, Reason::NotIsolated) => Ok(()),
        (DirectionVerdict::Allowed { rules }, Reason::Rule(id)) => {
            let origin = &state.rule_table[&id];
            if rules.iter().any(|r| {
                r.policy == origin.policy
                    && r.direction == origin.direction
                    && r.index == origin.index
            }) {
                Ok(())
            } else {
                Err(format!(
                    "allowed by rule {origin}, not one of the evaluator's"
                ))
            }
        }
        (
            DirectionVerdict::Denied {
                isolated_by,
                reason,
            },
            Reason::Denied(got),
        ) if *reason == got => {
            if state.isolation.get(&(ep.identity, direction)) == Some(isolated_by) {
                Ok(())
            } else {
                Err(format!(
                    "isolated by {:?}, evaluator says {isolated_by:?}",
                    state.isolation.get(&(ep.identity, direction))
                ))
            }
        }
        _ => Err("verdicts differ".to_owned()),
    }
}

fn differential(
    cluster: &Cluster,
    mut pols: Vec<NetworkPolicy>,
    externals: &[IpAddr],
) -> Result<(), TestCaseError> {
    for (i, p) in pols.iter_mut().enumerate() {
        p.metadata.name = Some(format!("p{i}"));
    }
    let set = PolicySet::new(pols)
        .map_err(|e| TestCaseError::fail(format!("generated policy rejected: {e}")))?;
    let modes = BTreeMap::from([("y".to_owned(), Mode::Enforce)]);
    let mut ids = Identities::new();
    let state = compile_with(&set, cluster, &modes, &mut ids);
    state
        .check(&Limits::KERNEL)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    // Recompiling the same input changes nothing.
    let again = compile_with(&set, cluster, &modes, &mut ids);
    prop_assert!(state.diff(&again).is_empty());
    for p in &cluster.pods {
        let ep = state.endpoints[&PodKey::of(p)];
        let mode = if p.meta.namespace == "y" {
            Mode::Enforce
        } else {
            Mode::Observe
        };
        prop_assert_eq!(ep.mode, mode);
        for a in &p.meta.ips {
            prop_assert_eq!(state.ips[a], ep.identity);
        }
        for d in [Direction::Ingress, Direction::Egress] {
            let j = state.judge(&PodKey::of(p), d, ip(NODE_IP), Protocol::Tcp, 1);
            prop_assert!(j.allowed && j.reason == Reason::Host && j.peer == ID_HOST);
        }
    }

    let eval = Evaluator::new(&set, cluster);
    let mut endpoints: Vec<Endpoint<'_>> = cluster
        .pods
        .iter()
        .flat_map(|p| p.meta.ips.iter().map(move |&ip| Endpoint::PodAt(p, ip)))
        .collect();
    endpoints.extend(EXTERNALS.iter().map(|a| Endpoint::External(ip(a))));
    endpoints.extend(externals.iter().copied().map(Endpoint::External));
    for source in &endpoints {
        for destination in &endpoints {
            for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp, Protocol::Icmp] {
                for port in PROBE_PORTS {
                    let flow = Flow {
                        source: *source,
                        destination: *destination,
                        protocol,
                        port,
                    };
                    let verdict = eval.evaluate(&flow);
                    let sides = [
                        (source, destination, Direction::Egress, &verdict.egress),
                        (destination, source, Direction::Ingress, &verdict.ingress),
                    ];
                    for (subject, other, direction, want) in sides {
                        let Some(subject) = subject.pod() else {
                            continue;
                        };
                        let peer_ip = address(other);
                        let j =
                            state.judge(&PodKey::of(subject), direction, peer_ip, protocol, port);
                        prop_assert_eq!(j.allowed, want.allowed());
                        if let Err(e) = agree(&state, subject, direction, j, want) {
                            return Err(TestCaseError::fail(format!(
                                "{} -> {} {protocol}/{port}, {direction} at {} (peer {peer_ip} \
                                 = identity {}): {e}\n datapath: {j:?}\n evaluator: {want:?}",
                                name(source),
                                name(destination),
                                name(&Endpoint::Pod(subject)),
                                j.peer,
                            )));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn datapath_agrees_with_evaluator(
        cluster in cluster(),
        pols in vec(policy(peer, port), 0..=5),
        externals in vec(external(), 4),
    ) {
        differential(&cluster, pols, &externals)?;
    }
}

#[test]
fn named_ports_that_disagree_within_an_identity() {
    // Two replicas with the same labels name port `http` differently: the
    // datapath allows both numbers to both (documented over-approximation).
    let mut cluster = Cluster::default();
    for (i, port) in [(1u8, 80u16), (2, 8080)] {
        cluster.pods.push(pod(
            "x",
            &format!("web-{i}"),
            label_map(&[("app", "web")]),
            IpAddr::from([10, 0, 0, i]),
            &[(Some("http"), port, Protocol::Tcp)],
        ));
    }
    let (state, _) = compile_yaml(
        "
metadata: {namespace: x, name: web}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{ports: [{port: http}]}]
",
        &cluster,
    );
    for pod in ["web-1", "web-2"] {
        for port in [80, 8080] {
            let j = state.judge(
                &key("x", pod),
                Direction::Ingress,
                ip("192.0.2.1"),
                Protocol::Tcp,
                port,
            );
            assert!(j.allowed, "{pod} {port}");
        }
    }
}

#[test]
fn egress_named_port_without_peers_is_per_destination_identity() {
    let mut cluster = Cluster::default();
    cluster.pods.push(pod(
        "x",
        "client",
        label_map(&[("app", "client")]),
        ip("10.0.0.1"),
        &[],
    ));
    cluster.pods.push(pod(
        "y",
        "server",
        label_map(&[("app", "server")]),
        ip("10.0.0.2"),
        &[(Some("http"), 8080, Protocol::Tcp)],
    ));
    let (state, ids) = compile_yaml(
        "
metadata: {namespace: x, name: out}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress: [{ports: [{port: http}]}]
",
        &cluster,
    );
    let server = ids
        .identity(&IdentityKey::Pod {
            namespace: "y".into(),
            labels: label_map(&[("app", "server")]),
        })
        .unwrap();
    let client_key = key("x", "client");
    let client = state.endpoints[&client_key].identity;
    let rules: Vec<_> = state.rules.keys().collect();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(
        (
            rules[0].endpoint,
            rules[0].peer,
            rules[0].port,
            rules[0].port_prefix
        ),
        (client, server, 8080, 16)
    );
    // The rule names every peer, so a miss is a port miss.
    assert!(state.peers.contains(&PeerKey {
        endpoint: client,
        direction: Direction::Egress,
        peer: ID_ANY
    }));
    let judge = |peer: &str, port| {
        state
            .judge(
                &client_key,
                Direction::Egress,
                ip(peer),
                Protocol::Tcp,
                port,
            )
            .reason
    };
    assert!(matches!(judge("10.0.0.2", 8080), Reason::Rule(_)));
    assert_eq!(
        judge("10.0.0.2", 80),
        Reason::Denied(DenyReason::PortNotAllowed)
    );
    assert_eq!(
        judge("192.0.2.1", 8080),
        Reason::Denied(DenyReason::PortNotAllowed)
    );
}

// ---------------------------------------------------------------------------
// (2) port_prefixes.

/// The blocks cover exactly `start..=end`, are aligned, disjoint, sorted,
/// and at most 30.
fn check_blocks(start: u16, end: u16) -> Result<(), String> {
    let blocks = port_prefixes(start, end);
    if blocks.len() > 30 {
        return Err(format!("{start}..={end}: {} blocks", blocks.len()));
    }
    let mut next = u32::from(start);
    for &(value, len) in &blocks {
        if len > 16 {
            return Err(format!("prefix {len}"));
        }
        let size = 1u32 << (16 - len);
        if u32::from(value) % size != 0 {
            return Err(format!("{value}/{len} not aligned"));
        }
        if u32::from(value) != next {
            return Err(format!("{start}..={end}: gap or overlap at {value}/{len}"));
        }
        next += size;
    }
    if next != u32::from(end) + 1 {
        return Err(format!("{start}..={end}: covers up to {next}"));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn port_prefixes_cover_exactly_the_range(a in any::<u16>(), b in any::<u16>(), probe in any::<u16>()) {
        let (start, end) = (a.min(b), a.max(b));
        check_blocks(start, end).map_err(TestCaseError::fail)?;
        // Membership agrees with the range, as the trie would match it.
        let blocks = port_prefixes(start, end);
        let inside = blocks.iter().filter(|&&(v, l)| block_contains(v, l, probe)).count();
        prop_assert_eq!(inside, usize::from((start..=end).contains(&probe)));
    }
}

#[test]
fn port_prefixes_small_ranges_and_edges_exhaustively() {
    let interesting: Vec<u16> = (0..=300)
        .chain(32_700..=32_800)
        .chain(65_280..=65_535)
        .collect();
    for &a in &interesting {
        for &b in &interesting {
            if a <= b {
                check_blocks(a, b).unwrap();
            }
        }
    }
    assert_eq!(port_prefixes(1, 65534).len(), 30);
    assert_eq!(port_prefixes(0, 65535), vec![(0, 0)]);
    assert_eq!(port_prefixes(65535, 65535), vec![(65535, 16)]);
    assert_eq!(port_prefixes(1024, 2047), vec![(1024, 6)]);
    assert!(port_prefixes(5, 4).is_empty());
}

// ---------------------------------------------------------------------------
// (3) Diff minimality.

const BASE: &str = "
metadata: {namespace: x, name: default-deny}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
---
metadata: {namespace: x, name: a-from-y}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: y}}}]
    ports: [{port: 80}, {port: serve-81-udp, protocol: UDP}]
---
metadata: {namespace: z, name: c-out}
spec:
  podSelector: {matchLabels: {pod: c}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 192.0.2.0/24, except: [192.0.2.128/25]}}]
    ports: [{port: 443, endPort: 450}]
";

const NEW_POLICY: &str = "
---
metadata: {namespace: y, name: b-from-x-a}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: x}}, podSelector: {matchLabels: {pod: a}}}]
    ports: [{port: 8000, endPort: 8100}, {port: serve-80-tcp}]
";

#[test]
fn recompiling_the_same_input_changes_nothing() {
    let cluster = xyz_cluster();
    let set = PolicySet::new(policies(BASE)).unwrap();
    let modes = BTreeMap::new();
    let mut ids = Identities::new();
    let a = compile_with(&set, &cluster, &modes, &mut ids);
    let b = compile_with(&set, &cluster, &modes, &mut ids);
    assert_eq!(a, b);
    assert!(a.diff(&b).is_empty());
    assert_eq!(a.diff(&b).len(), 0);
}

#[test]
fn adding_a_policy_touches_only_its_workload() {
    let cluster = xyz_cluster();
    let modes = BTreeMap::new();
    let mut ids = Identities::new();
    let before = compile_with(
        &PolicySet::new(policies(BASE)).unwrap(),
        &cluster,
        &modes,
        &mut ids,
    );
    let after = compile_with(
        &PolicySet::new(policies(&format!("{BASE}{NEW_POLICY}"))).unwrap(),
        &cluster,
        &modes,
        &mut ids,
    );
    let yb = after.endpoints[&key("y", "b")].identity;
    assert_eq!(yb, before.endpoints[&key("y", "b")].identity, "stable");
    let diff = before.diff(&after);
    assert!(!diff.is_empty());
    // ENDPOINTS: only y/b, which becomes isolated for ingress with rules.
    assert_eq!(
        diff.endpoints.upserts.keys().collect::<Vec<_>>(),
        vec![&key("y", "b")]
    );
    assert_eq!(
        diff.endpoints.upserts[&key("y", "b")].flags,
        EP_ISOLATED_INGRESS | EP_RULES_INGRESS
    );
    assert!(diff.endpoints.deletes.is_empty());
    // POLICY and PEERS: new entries of y/b only, nothing else rewritten.
    assert!(!diff.rules.upserts.is_empty());
    assert!(diff.rules.upserts.keys().all(|k| k.endpoint == yb));
    assert!(
        diff.rules
            .upserts
            .keys()
            .all(|k| !before.rules.contains_key(k))
    );
    assert!(diff.rules.deletes.is_empty());
    assert_eq!(diff.peers.upserts.len(), 1);
    assert!(diff.peers.upserts.keys().all(|k| k.endpoint == yb));
    assert!(diff.peers.deletes.is_empty());
    assert!(diff.ips.is_empty() && diff.cidrs.is_empty());
    // 8000..=8100 is 7 blocks, plus serve-80-tcp = 80: 8 entries from x/a.
    assert_eq!(
        diff.rules.upserts.len(),
        port_prefixes(8000, 8100).len() + 1
    );
    // And removing it again is the exact inverse.
    let removed = compile_with(
        &PolicySet::new(policies(BASE)).unwrap(),
        &cluster,
        &modes,
        &mut ids,
    );
    assert_eq!(removed, before);
    let back = after.diff(&removed);
    assert_eq!(
        back.rules.deletes,
        diff.rules.upserts.keys().copied().collect::<BTreeSet<_>>()
    );
    assert!(back.rules.upserts.is_empty());
}

#[test]
fn a_mode_change_touches_only_endpoints() {
    let cluster = xyz_cluster();
    let set = PolicySet::new(policies(BASE)).unwrap();
    let mut ids = Identities::new();
    let audit = BTreeMap::from([("x".to_owned(), Mode::Audit)]);
    let enforce = BTreeMap::from([("x".to_owned(), Mode::Enforce)]);
    let before = compile_with(&set, &cluster, &audit, &mut ids);
    let after = compile_with(&set, &cluster, &enforce, &mut ids);
    let diff = before.diff(&after);
    assert_eq!(
        diff.endpoints.upserts.keys().cloned().collect::<Vec<_>>(),
        vec![key("x", "a"), key("x", "b"), key("x", "c")]
    );
    assert!(
        diff.endpoints
            .upserts
            .values()
            .all(|e| e.mode == Mode::Enforce)
    );
    assert_eq!(diff.len(), 3);
    assert!(diff.rules.is_empty() && diff.peers.is_empty());
    assert!(diff.ips.is_empty() && diff.cidrs.is_empty() && diff.endpoints.deletes.is_empty());
}

#[test]
fn a_relabelled_pod_gets_a_new_identity_and_the_old_one_is_released() {
    let mut cluster = xyz_cluster();
    let set = PolicySet::new(policies(BASE)).unwrap();
    let modes = BTreeMap::new();
    let mut ids = Identities::new();
    let before = compile_with(&set, &cluster, &modes, &mut ids);
    let old = before.endpoints[&key("x", "a")].identity;
    let n = ids.len();
    cluster.pods[0]
        .meta
        .labels
        .insert("pod".into(), "a2".into());
    let after = compile_with(&set, &cluster, &modes, &mut ids);
    let new = after.endpoints[&key("x", "a")].identity;
    assert_ne!(old, new);
    assert!(ids.key(old).is_none());
    assert_eq!(ids.len(), n);
    // x/a lost a-from-y's rules; every other identity kept its number.
    let diff = before.diff(&after);
    assert!(diff.rules.deletes.iter().all(|k| k.endpoint == old));
    for p in cluster.pods.iter().skip(1) {
        let k = PodKey::of(p);
        assert_eq!(before.endpoints[&k].identity, after.endpoints[&k].identity);
    }
}

// ---------------------------------------------------------------------------
// (4) Limits.

/// Lowers one limit.
type Shrink = fn(&mut Limits);

#[test]
fn a_state_over_a_limit_is_refused_naming_the_map() {
    let cluster = xyz_cluster();
    let (state, _) = compile_yaml(&format!("{BASE}{NEW_POLICY}"), &cluster);
    let exact = Limits {
        endpoints: state.endpoints.len(),
        ips: state.ips.len(),
        cidrs: state.cidrs.len(),
        exact_rules: state.exact_rule_count(),
        rules: state.rules.len() - state.exact_rule_count(),
        peers: state.peers.len(),
    };
    assert!(
        exact.exact_rules > 0 && exact.rules > 0,
        "both rule maps are used: {exact:?}"
    );
    state.check(&exact).unwrap();
    state.check(&Limits::default()).unwrap();
    let cases: [(&str, Shrink); 6] = [
        ("ENDPOINTS", |l| l.endpoints -= 1),
        ("IDENTITIES", |l| l.ips -= 1),
        ("CIDRS", |l| l.cidrs -= 1),
        ("POLICY_EXACT", |l| l.exact_rules -= 1),
        ("POLICY", |l| l.rules -= 1),
        ("PEERS", |l| l.peers -= 1),
    ];
    for (map, shrink) in cases {
        let mut limits = exact;
        shrink(&mut limits);
        let err = state.check(&limits).unwrap_err();
        assert!(
            matches!(err, CompileError::MapFull { map: m, .. } if m == map),
            "{err}"
        );
        assert!(err.to_string().contains(map), "{err}");
    }
}

// ---------------------------------------------------------------------------
// (5) CIDRs with except.

#[test]
fn ipblock_excepts_become_trie_prefixes() {
    let cluster = xyz_cluster();
    let (state, ids) = compile_yaml(
        "
metadata: {namespace: x, name: out}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16, 10.2.0.0/16]}}]
  - to: [{ipBlock: {cidr: 10.1.2.0/24}}]
    ports: [{port: 53, protocol: UDP}]
",
        &cluster,
    );
    let cidr = |s: &str| {
        ids.identity(&IdentityKey::Cidr(s.parse().unwrap()))
            .unwrap()
    };
    let prefixes: Vec<String> = state.cidrs.keys().map(ToString::to_string).collect();
    assert_eq!(
        prefixes,
        ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.2.0.0/16"]
    );
    assert!(state.cidrs.values().all(|&id| id >= 256));
    // Rule 0 allows 10/8 only: 10.1.2/24 is inside an except.
    let xa = state.endpoints[&key("x", "a")].identity;
    let allowed: BTreeSet<u32> = state
        .rules
        .iter()
        .filter(|(k, _)| k.endpoint == xa && k.protocol == 0)
        .map(|(k, _)| k.peer)
        .collect();
    assert_eq!(allowed, BTreeSet::from([cidr("10.0.0.0/8")]));
    let udp: BTreeSet<u32> = state
        .rules
        .keys()
        .filter(|k| k.endpoint == xa && k.protocol == 17)
        .map(|k| k.peer)
        .collect();
    assert_eq!(udp, BTreeSet::from([cidr("10.1.2.0/24")]));
    let peers: BTreeSet<u32> = state.peers.iter().map(|k| k.peer).collect();
    assert_eq!(
        peers,
        BTreeSet::from([cidr("10.0.0.0/8"), cidr("10.1.2.0/24")])
    );

    let judge = |peer: &str, protocol, port| {
        state.judge(&key("x", "a"), Direction::Egress, ip(peer), protocol, port)
    };
    assert_eq!(
        judge("10.3.0.1", Protocol::Tcp, 80).peer,
        cidr("10.0.0.0/8")
    );
    assert!(judge("10.3.0.1", Protocol::Tcp, 80).allowed);
    assert!(judge("10.3.0.1", Protocol::Icmp, 0).allowed);
    let excepted = judge("10.1.0.1", Protocol::Tcp, 80);
    assert_eq!(excepted.peer, cidr("10.1.0.0/16"));
    assert_eq!(excepted.reason, Reason::Denied(DenyReason::PeerNotAllowed));
    assert!(!judge("10.2.255.255", Protocol::Tcp, 80).allowed);
    assert!(judge("10.1.2.3", Protocol::Udp, 53).allowed);
    assert_eq!(
        judge("10.1.2.3", Protocol::Tcp, 53).reason,
        Reason::Denied(DenyReason::PortNotAllowed)
    );
    let world = judge("192.0.2.1", Protocol::Tcp, 80);
    assert_eq!(world.peer, ID_WORLD);
    assert_eq!(world.reason, Reason::Denied(DenyReason::PeerNotAllowed));
    // A pod in 10/8 is matched by the ipBlock too: its own identity, then
    // the CIDR identity of its address.
    let pod_peer = judge("10.0.1.11", Protocol::Tcp, 80);
    assert_eq!(pod_peer.peer, state.endpoints[&key("x", "b")].identity);
    assert!(pod_peer.allowed, "{pod_peer:?}");
    assert_eq!(
        state.endpoints[&key("x", "a")].flags,
        EP_ISOLATED_EGRESS | EP_RULES_EGRESS
    );
}

#[test]
fn ipblock_matches_pod_addresses_after_their_identity() {
    // x/a: ingress TCP 80 from y/* by block except y/b, and from z/b by
    // selector in the same rule; UDP 53 from 10.0.3.0/24 (z's pods).
    let cluster = xyz_cluster();
    let (state, ids) = compile_yaml(
        "
metadata: {namespace: x, name: in}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - ipBlock: {cidr: 10.0.2.0/24, except: [10.0.2.11/32]}
    - {namespaceSelector: {matchLabels: {ns: z}}, podSelector: {matchLabels: {pod: b}}}
    ports: [{port: 80}]
  - from: [{ipBlock: {cidr: 10.0.3.0/24}}]
    ports: [{port: 53, protocol: UDP}]
  - from: [{ipBlock: {cidr: 10.0.1.0/24}}]
",
        &cluster,
    );
    let cidr = |s: &str| {
        ids.identity(&IdentityKey::Cidr(s.parse().unwrap()))
            .unwrap()
    };
    let judge = |peer: &str, protocol, port| {
        state.judge(&key("x", "a"), Direction::Ingress, ip(peer), protocol, port)
    };
    let id = |ns, name| state.endpoints[&key(ns, name)].identity;
    assert_eq!(
        state.resolve_cidr(ip("10.0.2.10")),
        Some(cidr("10.0.2.0/24"))
    );
    assert_eq!(
        state.resolve_cidr(ip("10.0.2.11")),
        Some(cidr("10.0.2.11/32"))
    );
    assert_eq!(state.resolve_cidr(ip("192.0.2.1")), None);

    let ya = judge("10.0.2.10", Protocol::Tcp, 80);
    assert_eq!(
        (ya.allowed, ya.reason, ya.peer),
        (true, Reason::Rule(1), id("y", "a"))
    );
    // y/b is excepted and no selector matches it; on 81 y/a is a peer of
    // the rule, the wrong port.
    let yb = judge("10.0.2.11", Protocol::Tcp, 80);
    assert_eq!(yb.reason, Reason::Denied(DenyReason::PeerNotAllowed));
    assert_eq!(
        judge("10.0.2.10", Protocol::Tcp, 81).reason,
        Reason::Denied(DenyReason::PortNotAllowed)
    );
    // z/b by selector, z/a by the UDP 53 block only.
    assert!(judge("10.0.3.11", Protocol::Tcp, 80).allowed);
    assert!(!judge("10.0.3.10", Protocol::Tcp, 80).allowed);
    assert_eq!(
        judge("10.0.3.10", Protocol::Udp, 53).reason,
        Reason::Rule(2)
    );
    // x's own pods by the any-port block, ICMP included (the trie).
    assert_eq!(
        judge("10.0.1.11", Protocol::Icmp, 0).reason,
        Reason::Rule(3)
    );
    assert_eq!(
        judge("10.0.1.11", Protocol::Sctp, 9).reason,
        Reason::Rule(3)
    );
    // Addresses outside the cluster in the same blocks, as before.
    assert_eq!(
        judge("10.0.2.99", Protocol::Tcp, 80).peer,
        cidr("10.0.2.0/24")
    );
    assert!(judge("10.0.2.99", Protocol::Tcp, 80).allowed);
}

#[test]
fn modes_parse_print_and_serialize() {
    for (mode, s, code) in [
        (Mode::Observe, "observe", 0),
        (Mode::Audit, "audit", 1),
        (Mode::Enforce, "enforce", 2),
    ] {
        assert_eq!(mode.to_string(), s);
        assert_eq!(s.parse::<Mode>().unwrap(), mode);
        assert_eq!(s.to_uppercase().parse::<Mode>().unwrap(), mode);
        assert_eq!(serde_json::to_string(&mode).unwrap(), format!("\"{s}\""));
        assert_eq!(
            serde_json::from_str::<Mode>(&format!("\"{s}\"")).unwrap(),
            mode
        );
        assert_eq!(mode.code(), code);
    }
    assert!("drop".parse::<Mode>().is_err());
    assert_eq!(Mode::default(), Mode::Observe);
}

#[test]
fn default_deny_and_verdicts_per_mode() {
    let cluster = xyz_cluster();
    let (state, _) = compile_yaml(BASE, &cluster);
    // x/b: isolated both ways, no rules.
    let ep = state.endpoints[&key("x", "b")];
    assert_eq!(ep.flags, EP_ISOLATED_INGRESS | EP_ISOLATED_EGRESS);
    let j = state.judge(
        &key("x", "b"),
        Direction::Ingress,
        ip("10.0.2.10"),
        Protocol::Tcp,
        80,
    );
    assert_eq!(j.reason, Reason::Denied(DenyReason::DefaultDeny));
    assert_eq!(j.reason.code(), 1);
    assert_eq!(
        [Mode::Observe, Mode::Audit, Mode::Enforce].map(|m| j.verdict(m)),
        [0, 1, 2]
    );
    // An unknown pod is not enforced.
    let unknown = state.judge(
        &key("x", "nope"),
        Direction::Ingress,
        ip("10.0.2.10"),
        Protocol::Tcp,
        80,
    );
    assert!(unknown.allowed && unknown.reason == Reason::NoEndpoint);
}
