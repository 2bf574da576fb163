//! Differential test: the compiled [`Evaluator`] agrees with the naive
//! reference evaluator (`support/reference.rs`) on every flow of random
//! small clusters under random policies (selectors from a small label
//! alphabet, every peer kind, ports by number, range and name, ipBlocks
//! with except, every policyTypes shape).

mod support;

use std::net::IpAddr;

use k8s_openapi::{
    api::networking::v1::{IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort},
    apimachinery::pkg::util::intstr::IntOrString,
};
use proptest::{collection::vec, option, prelude::*, sample::select};
use support::{
    NAMESPACES, pod, reference,
    strategies::{labels, namespace_selector, policy, selector},
};
use weir_generator::{
    cluster::{Cluster, ClusterPod},
    eval::{DirectionVerdict, Endpoint, Evaluator, Flow, PolicySet},
    model::Protocol,
};

const PORT_NAMES: [&str; 3] = ["http", "dns", "metrics"];
const PORT_NUMBERS: [u16; 4] = [53, 80, 81, 8080];
const PROTOCOLS: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];
const EXTERNALS: [&str; 5] = [
    "192.0.2.10",
    "192.0.2.200",
    "198.51.100.7",
    "10.9.9.9",
    "2001:db8::1",
];
/// (cidr, excepts strictly inside it). Pods are 10.0.0.1..=6 (the even
/// ones also fd00::<n>): several blocks and excepts slice them.
const BLOCKS: [(&str, &[&str]); 9] = [
    ("192.0.2.0/24", &["192.0.2.0/25", "192.0.2.192/26"]),
    ("0.0.0.0/0", &["192.0.2.0/24", "10.0.0.0/8"]),
    ("10.0.0.0/8", &["10.9.0.0/16"]),
    ("198.51.100.0/24", &[]),
    ("192.0.2.0/28", &["192.0.2.10/32"]),
    ("2001:db8::/32", &["2001:db8::/64"]),
    ("10.0.0.0/29", &["10.0.0.2/32", "10.0.0.4/31"]),
    ("10.0.0.4/30", &["10.0.0.6/32"]),
    ("fd00::/64", &["fd00::2/128"]),
];

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
        selector().prop_map(|s| NetworkPolicyPeer {
            pod_selector: Some(s),
            ..Default::default()
        }),
        namespace_selector().prop_map(|s| NetworkPolicyPeer {
            namespace_selector: Some(s),
            ..Default::default()
        }),
        (selector(), namespace_selector()).prop_map(|(p, n)| NetworkPolicyPeer {
            pod_selector: Some(p),
            namespace_selector: Some(n),
            ..Default::default()
        }),
        block.prop_map(|b| NetworkPolicyPeer {
            ip_block: Some(b),
            ..Default::default()
        }),
    ]
}

fn port() -> impl Strategy<Value = NetworkPolicyPort> {
    let protocol = option::of(select(&["TCP", "UDP", "SCTP"][..]).prop_map(str::to_owned));
    let number = select(&PORT_NUMBERS[..]).prop_map(i32::from);
    let spec = prop_oneof![
        Just((None, None)),
        number
            .clone()
            .prop_map(|n| (Some(IntOrString::Int(n)), None)),
        (number, 0..30i32).prop_map(|(n, d)| (Some(IntOrString::Int(n)), Some(n + d))),
        select(&PORT_NAMES[..]).prop_map(|n| (Some(IntOrString::String(n.to_owned())), None)),
    ];
    (protocol, spec).prop_map(|(protocol, (port, end_port))| NetworkPolicyPort {
        end_port,
        port,
        protocol,
    })
}

fn named_port() -> impl Strategy<Value = (Option<&'static str>, u16, Protocol)> {
    (
        option::of(select(&PORT_NAMES[..])),
        select(&PORT_NUMBERS[..]),
        select(&PROTOCOLS[..]),
    )
}

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
        for (i, (ns, l, ports)) in (1u8..).zip(pods) {
            let mut p = pod(ns, &format!("p{i}"), l, IpAddr::from([10, 0, 0, i]), &ports);
            if i % 2 == 0 {
                p.meta
                    .ips
                    .push(IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, u16::from(i)]));
            }
            cluster.pods.push(p);
        }
        cluster
    })
}

fn check(cluster: &Cluster, mut policies: Vec<NetworkPolicy>) -> Result<(), TestCaseError> {
    for (i, p) in policies.iter_mut().enumerate() {
        p.metadata.name = Some(format!("p{i}"));
    }
    let set = PolicySet::new(policies.clone())
        .map_err(|e| TestCaseError::fail(format!("generated policy rejected: {e}")))?;
    let eval = Evaluator::new(&set, cluster);
    // Each pod as a whole and at each of its addresses.
    let mut endpoints: Vec<Endpoint<'_>> = cluster.pods.iter().map(Endpoint::Pod).collect();
    for p in &cluster.pods {
        endpoints.extend(p.meta.ips.iter().map(|&ip| Endpoint::PodAt(p, ip)));
    }
    endpoints.extend(
        EXTERNALS
            .iter()
            .map(|ip| Endpoint::External(ip.parse().expect("EXTERNALS are addresses"))),
    );
    for source in &endpoints {
        for destination in &endpoints {
            for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp, Protocol::Icmp] {
                for port in [53, 80, 81, 85, 8080] {
                    let flow = Flow {
                        source: *source,
                        destination: *destination,
                        protocol,
                        port,
                    };
                    let verdict = eval.evaluate(&flow);
                    let want = reference::evaluate(
                        &policies,
                        cluster,
                        *source,
                        *destination,
                        protocol,
                        port,
                    );
                    let got = (verdict.egress.allowed(), verdict.ingress.allowed());
                    prop_assert_eq!(
                        got,
                        want,
                        "{} -> {} {}/{}: {:?}",
                        name(source),
                        name(destination),
                        protocol,
                        port,
                        verdict
                    );
                    prop_assert_eq!(eval.allows(&flow), verdict.allowed());
                    for (side, v) in [(source, &verdict.egress), (destination, &verdict.ingress)] {
                        prop_assert_eq!(
                            matches!(side, Endpoint::External(_)),
                            *v == DirectionVerdict::NotApplicable
                        );
                        if let DirectionVerdict::Allowed { rules } = v {
                            prop_assert!(!rules.is_empty() && rules.is_sorted());
                        }
                        if let DirectionVerdict::Denied { isolated_by, .. } = v {
                            prop_assert!(!isolated_by.is_empty() && isolated_by.is_sorted());
                        }
                    }
                }
            }
        }
    }
    Ok(())
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn evaluator_agrees_with_reference(cluster in cluster(), policies in vec(policy(peer, port), 0..=4)) {
        check(&cluster, policies)?;
    }
}
