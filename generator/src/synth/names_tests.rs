//! The learner with DNS names: one rule per name, its addresses as
//! `ipBlock`s, annotated, and the [`FqdnEgress`] values beside.

use std::{collections::BTreeMap, net::IpAddr};

use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer};

use super::*;
use crate::{
    cluster::{Cluster, ClusterPod},
    model::{EdgeKey, EdgeStats, FlowGraph, NodeId, PodMeta, Protocol, WorkloadKind, WorkloadRef},
};

const S: u64 = 1_000_000_000;
const NAME: &str = "api.payments.example";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn workload(name: &str) -> WorkloadRef {
    WorkloadRef::new("shop", WorkloadKind::Deployment, name)
}

fn cluster() -> Cluster {
    let pod = |name: &str, addr: &str| ClusterPod {
        meta: PodMeta {
            namespace: "shop".into(),
            name: format!("{name}-0"),
            labels: BTreeMap::from([("app".into(), name.into())]),
            workload: workload(name),
            ips: vec![ip(addr)],
        },
        ports: Vec::new(),
    };
    Cluster {
        pods: vec![pod("web", "10.0.0.1"), pod("api", "10.0.0.2")],
        ..Cluster::default()
    }
}

fn out(graph: &mut FlowGraph, from: &str, to: &str, port: u16, at: u64) {
    graph.record(
        EdgeKey {
            source: NodeId::Workload(workload(from)),
            target: NodeId::External(ip(to)),
            protocol: Protocol::Tcp,
            port,
        },
        &EdgeStats {
            packets: 4,
            bytes: 400,
            connections: 1,
            first_seen: at * S,
            last_seen: (at + 5) * S,
            ..EdgeStats::default()
        },
    );
}

fn policy<'s>(s: &'s Suggestion, name: &str) -> &'s NetworkPolicy {
    s.policies()
        .find(|p| p.metadata.name.as_deref() == Some(name))
        .expect("policy")
}

fn cidrs(peers: &[NetworkPolicyPeer]) -> Vec<String> {
    peers
        .iter()
        .map(|p| p.ip_block.as_ref().expect("ipBlock").cidr.clone())
        .collect()
}

fn ports(
    rule_ports: Option<&Vec<k8s_openapi::api::networking::v1::NetworkPolicyPort>>,
) -> Vec<String> {
    rule_ports
        .into_iter()
        .flatten()
        .map(|p| {
            format!(
                "{:?}/{}",
                p.port.as_ref().expect("port"),
                p.protocol.as_deref().unwrap_or("")
            )
        })
        .collect()
}

/// web resolved the name twice (re-pointed) and connected to both
/// addresses; it also went to an unnamed address and to an address only
/// api had a name for.
fn graph() -> FlowGraph {
    let mut g = FlowGraph::default();
    out(&mut g, "web", "203.0.113.10", 443, 1000);
    out(&mut g, "web", "203.0.113.11", 443, 2000);
    out(&mut g, "web", "198.51.100.7", 443, 1500);
    out(&mut g, "web", "198.51.100.8", 443, 1500);
    out(&mut g, "api", "198.51.100.8", 443, 1600);
    let web = workload("web");
    g.name_address(NAME, ip("203.0.113.10"), &web, 1000 * S, 1005 * S);
    g.name_address(NAME, ip("203.0.113.11"), &web, 2000 * S, 2005 * S);
    g.name_address(
        "cdn.example",
        ip("198.51.100.8"),
        &workload("api"),
        1600 * S,
        1605 * S,
    );
    g
}

#[test]
fn a_name_gets_one_rule_with_every_address_seen_for_it() {
    let s = synthesize(&graph(), &cluster(), &Options::default());
    let web = policy(&s, "weir-web");
    let egress = web.spec.as_ref().unwrap().egress.as_ref().expect("egress");
    assert_eq!(egress.len(), 2, "{egress:#?}");
    // Unnamed (for web) addresses with the same ports share one rule, as before.
    assert_eq!(
        cidrs(egress[0].to.as_ref().unwrap()),
        ["198.51.100.7/32", "198.51.100.8/32"]
    );
    // The name's rule holds both of its addresses, after the others.
    assert_eq!(
        cidrs(egress[1].to.as_ref().unwrap()),
        ["203.0.113.10/32", "203.0.113.11/32"]
    );
    assert_eq!(ports(egress[1].ports.as_ref()), ["Int(443)/TCP"]);

    let notes = FqdnRuleNote::of(web).expect("annotation parses");
    assert_eq!(notes.len(), 1);
    let note = &notes[0];
    assert_eq!(
        (note.direction.as_str(), note.rule, note.name.as_str()),
        ("egress", 1, NAME)
    );
    assert_eq!(
        note.addresses.keys().copied().collect::<Vec<_>>(),
        [ip("203.0.113.10"), ip("203.0.113.11")]
    );
    assert_eq!(note.connections, 2);
    assert_eq!(note.ports, ["443/TCP"]);
    assert_eq!(note.first_seen, "1970-01-01T00:16:40Z");
    assert_eq!(note.last_seen, "1970-01-01T00:33:25Z");
    let evidence = &web.metadata.annotations.as_ref().unwrap()[EVIDENCE_ANNOTATION];
    assert!(
        evidence.contains(&format!(
            "egress to 203.0.113.11 ({NAME}) 443/TCP: 1 connection"
        )),
        "{evidence}"
    );

    // api's name for its address is not web's: api gets a name rule, web not.
    let api = policy(&s, "weir-api");
    let notes = FqdnRuleNote::of(api).expect("annotation parses");
    assert_eq!(
        notes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        ["cdn.example"]
    );

    assert_eq!(
        s.fqdn_egress,
        [
            FqdnEgress {
                namespace: "shop".into(),
                workload: workload("api"),
                policy: "weir-api".into(),
                pod_selector: BTreeMap::from([("app".into(), "api".into())]),
                name: "cdn.example".into(),
                ports: vec![(Protocol::Tcp, 443)],
                addresses: BTreeMap::from([(
                    ip("198.51.100.8"),
                    AddressSeen {
                        first_seen: 1600 * S,
                        last_seen: 1605 * S,
                        connections: 1
                    }
                )]),
                seen: AddressSeen {
                    first_seen: 1600 * S,
                    last_seen: 1605 * S,
                    connections: 1
                },
            },
            FqdnEgress {
                namespace: "shop".into(),
                workload: workload("web"),
                policy: "weir-web".into(),
                pod_selector: BTreeMap::from([("app".into(), "web".into())]),
                name: NAME.into(),
                ports: vec![(Protocol::Tcp, 443)],
                addresses: BTreeMap::from([
                    (
                        ip("203.0.113.10"),
                        AddressSeen {
                            first_seen: 1000 * S,
                            last_seen: 1005 * S,
                            connections: 1
                        }
                    ),
                    (
                        ip("203.0.113.11"),
                        AddressSeen {
                            first_seen: 2000 * S,
                            last_seen: 2005 * S,
                            connections: 1
                        }
                    ),
                ]),
                seen: AddressSeen {
                    first_seen: 1000 * S,
                    last_seen: 2005 * S,
                    connections: 2
                },
            },
        ]
    );
}

#[test]
fn without_names_every_address_is_a_peer_as_before() {
    let mut g = graph();
    g.external_names.clear();
    let s = synthesize(&g, &cluster(), &Options::default());
    let web = policy(&s, "weir-web");
    let egress = web.spec.as_ref().unwrap().egress.as_ref().expect("egress");
    assert_eq!(egress.len(), 1);
    assert_eq!(egress[0].to.as_ref().unwrap().len(), 4);
    assert!(FqdnRuleNote::of(web).unwrap().is_empty());
    assert!(s.fqdn_egress.is_empty());
}

#[test]
fn a_name_rule_takes_the_ports_of_all_its_addresses_and_aggregation_leaves_it_alone() {
    let mut g = graph();
    out(&mut g, "web", "203.0.113.11", 8443, 2100);
    let s = synthesize(
        &g,
        &cluster(),
        &Options {
            aggregate_external: Some(AggregateExternal {
                v4_prefix: 24,
                v6_prefix: 64,
            }),
            ..Options::default()
        },
    );
    let web = policy(&s, "weir-web");
    let egress = web.spec.as_ref().unwrap().egress.as_ref().expect("egress");
    assert_eq!(egress.len(), 2, "still one rule for the name: {egress:#?}");
    assert_eq!(cidrs(egress[0].to.as_ref().unwrap()), ["198.51.100.0/24"]);
    assert_eq!(
        cidrs(egress[1].to.as_ref().unwrap()),
        ["203.0.113.10/32", "203.0.113.11/32"]
    );
    assert_eq!(
        ports(egress[1].ports.as_ref()),
        ["Int(443)/TCP", "Int(8443)/TCP"]
    );
}

#[test]
fn ingress_from_a_named_peer_is_grouped_by_name_too() {
    let mut g = FlowGraph::default();
    for (addr, at) in [("203.0.113.20", 10), ("203.0.113.21", 20)] {
        g.record(
            EdgeKey {
                source: NodeId::External(ip(addr)),
                target: NodeId::Workload(workload("api")),
                protocol: Protocol::Tcp,
                port: 8080,
            },
            &EdgeStats {
                connections: 1,
                first_seen: at * S,
                last_seen: at * S,
                ..EdgeStats::default()
            },
        );
        g.name_address(
            "hooks.partner.example",
            ip(addr),
            &workload("api"),
            at * S,
            at * S,
        );
    }
    let s = synthesize(&g, &cluster(), &Options::default());
    let api = policy(&s, "weir-api");
    let ingress = api
        .spec
        .as_ref()
        .unwrap()
        .ingress
        .as_ref()
        .expect("ingress");
    assert_eq!(ingress.len(), 1);
    assert_eq!(
        cidrs(ingress[0].from.as_ref().unwrap()),
        ["203.0.113.20/32", "203.0.113.21/32"]
    );
    let notes = FqdnRuleNote::of(api).unwrap();
    assert_eq!((notes[0].direction.as_str(), notes[0].rule), ("ingress", 0));
    assert!(s.fqdn_egress.is_empty(), "egress only");
}

#[test]
fn the_yaml_comments_the_name_rule_and_still_reads_back_as_the_policy() {
    let s = synthesize(&graph(), &cluster(), &Options::default());
    let yaml = s.yaml("shop").expect("shop");
    assert!(
        yaml.contains(&format!(
            "  # {NAME}: 2 addresses seen in the window\n  - ports:"
        )),
        "{yaml}"
    );
    let docs: Vec<NetworkPolicy> = yaml
        .split("\n---\n")
        .skip(1)
        .map(|d| serde_yaml::from_str(d).expect("policy"))
        .collect();
    let expected: Vec<&NetworkPolicy> = s.namespaces["shop"].iter().collect();
    assert_eq!(docs.iter().collect::<Vec<_>>(), expected);
}
