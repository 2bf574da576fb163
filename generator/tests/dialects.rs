//! The dialects (`weir export --dialect cilium|anp`): every object they
//! render validates against the vendored CRD schema, names replace their
//! `ipBlock`s, in-cluster peers never become addresses, and the validator
//! itself refuses wrong objects.

mod support {
    pub mod crd;
}

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use serde_json::Value;
use support::crd::{ADMIN_NETWORK_POLICY, CILIUM_NETWORK_POLICY, Crd};
use weir_generator::{
    cluster::{Cluster, ClusterPod},
    dialect::{self, AddressSeen, Dialect, FqdnEgress, Options},
    model::{EdgeKey, EdgeStats, FlowGraph, NodeId, PodMeta, Protocol, WorkloadKind, WorkloadRef},
    synth::{self, Suggestion},
};

const S: u64 = 1_000_000_000;
const T0: u64 = 1_765_000_000 * S;

fn web() -> WorkloadRef {
    WorkloadRef::new("shop", WorkloadKind::Deployment, "web")
}

fn db() -> WorkloadRef {
    WorkloadRef::new("shop", WorkloadKind::Deployment, "db")
}

fn pod(w: &WorkloadRef, ip: &str) -> ClusterPod {
    ClusterPod {
        meta: PodMeta {
            namespace: w.namespace.clone(),
            name: format!("{}-0", w.name),
            labels: BTreeMap::from([("app".to_owned(), w.name.clone())]),
            workload: w.clone(),
            ips: vec![ip.parse().expect("pod address")],
        },
        ports: vec![],
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// shop/web talks to shop/db (5432), to 198.51.100.7:80 (no name) and to
/// the names' addresses on 443.
fn scenario(names: &[(&str, &[&str])]) -> (Suggestion, Vec<FqdnEgress>, Cluster) {
    let cluster = Cluster {
        namespaces: BTreeMap::new(),
        pods: vec![pod(&web(), "10.251.0.10"), pod(&db(), "10.251.0.20")],
        services: vec![],
    };
    let stats = EdgeStats {
        packets: 10,
        bytes: 1000,
        connections: 2,
        first_seen: T0,
        last_seen: T0 + 60 * S,
        ..EdgeStats::default()
    };
    let mut graph = FlowGraph::default();
    for p in &cluster.pods {
        graph.add_pod(&p.meta);
    }
    let edge = |target: NodeId, port: u16| EdgeKey {
        source: NodeId::Workload(web()),
        target,
        protocol: Protocol::Tcp,
        port,
    };
    graph.record(edge(NodeId::Workload(db()), 5432), &stats);
    graph.record(edge(NodeId::External(ip("198.51.100.7")), 80), &stats);
    let mut fqdns = Vec::new();
    for (name, addresses) in names {
        for a in *addresses {
            graph.record(edge(NodeId::External(ip(a)), 443), &stats);
        }
        let seen = AddressSeen {
            first_seen: T0,
            last_seen: T0 + 60 * S,
            connections: 2,
        };
        fqdns.push(FqdnEgress {
            namespace: "shop".into(),
            workload: web(),
            policy: "weir-web".into(),
            pod_selector: BTreeMap::from([("app".to_owned(), "web".to_owned())]),
            name: (*name).to_owned(),
            ports: vec![(Protocol::Tcp, 443)],
            addresses: addresses.iter().map(|a| (ip(a), seen)).collect(),
            seen,
        });
    }
    let suggestion = synth::synthesize(&graph, &cluster, &synth::Options::default());
    (suggestion, fqdns, cluster)
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).expect("a YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// Every `cidr` anywhere in `value`, and every `toCIDR` entry.
fn cidrs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("cidr", Value::String(s)) => out.push(s.clone()),
                    ("toCIDR", Value::Array(list)) => {
                        out.extend(list.iter().filter_map(|c| c.as_str().map(str::to_owned)));
                    }
                    _ => cidrs(v, out),
                }
            }
        }
        Value::Array(list) => list.iter().for_each(|v| cidrs(v, out)),
        _ => {}
    }
}

const ONE_NAME: &[(&str, &[&str])] = &[("api.payments.example", &["203.0.113.10", "203.0.113.11"])];

#[test]
fn cilium_names_replace_their_ip_blocks_and_validate() {
    let (suggestion, fqdns, _) = scenario(ONE_NAME);
    let rendered = dialect::render(Dialect::Cilium, &suggestion, &fqdns, Options::default());
    assert!(rendered.warnings.is_empty(), "{:?}", rendered.warnings);
    let yaml = rendered.yaml("shop").unwrap();
    let crd = Crd::load(CILIUM_NETWORK_POLICY);
    assert_eq!(
        crd.check_stream(&yaml),
        1,
        "one CiliumNetworkPolicy:\n{yaml}"
    );
    let docs = docs(&yaml);
    let cnp = of_kind(&docs, "CiliumNetworkPolicy")[0];
    assert_eq!(cnp["metadata"]["name"], "weir-web");
    assert_eq!(cnp["metadata"]["namespace"], "shop");
    assert_eq!(cnp["spec"]["endpointSelector"]["matchLabels"]["app"], "web");
    let egress = cnp["spec"]["egress"].as_array().unwrap();
    // The DNS rule first: kube-dns on 53 UDP and TCP, every lookup seen.
    assert_eq!(
        egress[0]["toEndpoints"][0]["matchLabels"]["k8s:k8s-app"],
        "kube-dns"
    );
    assert_eq!(
        egress[0]["toEndpoints"][0]["matchLabels"]["k8s:io.kubernetes.pod.namespace"],
        "kube-system"
    );
    let dns_ports: Vec<(&str, &str)> = egress[0]["toPorts"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["port"].as_str().unwrap(), p["protocol"].as_str().unwrap()))
        .collect();
    assert_eq!(dns_ports, [("53", "UDP"), ("53", "TCP")]);
    assert_eq!(
        egress[0]["toPorts"][0]["rules"]["dns"][0]["matchPattern"],
        "*"
    );
    // One rule for the name, with its port.
    assert_eq!(egress.len(), 2);
    assert_eq!(
        egress[1]["toFQDNs"],
        serde_json::json!([{"matchName": "api.payments.example"}])
    );
    assert_eq!(
        egress[1]["toPorts"],
        serde_json::json!([{"ports": [{"port": "443", "protocol": "TCP"}]}])
    );
    let evidence = cnp["metadata"]["annotations"]["weir.dev/evidence"]
        .as_str()
        .unwrap();
    assert!(
        evidence.contains("egress to api.payments.example (203.0.113.10, 203.0.113.11) 443/TCP"),
        "{evidence}"
    );

    // The standard policy lost the name's addresses, and only them.
    let np = of_kind(&docs, "NetworkPolicy")
        .into_iter()
        .find(|d| d["metadata"]["name"] == "weir-web")
        .unwrap();
    let mut blocks = Vec::new();
    cidrs(np, &mut blocks);
    assert_eq!(blocks, ["198.51.100.7/32"]);
    assert!(np["spec"]["egress"].to_string().contains("\"app\":\"db\""));
    assert!(
        np["metadata"]["annotations"]["weir.dev/evidence"]
            .as_str()
            .unwrap()
            .contains("egress to api.payments.example: allowed by CiliumNetworkPolicy weir-web")
    );
    // The standard dialect keeps them.
    let standard = dialect::render(Dialect::Standard, &suggestion, &fqdns, Options::default());
    assert_eq!(standard.yaml("shop"), suggestion.yaml("shop"));
    let mut blocks = Vec::new();
    cidrs(&Value::Array(docs_of(&standard.all_yaml())), &mut blocks);
    assert!(blocks.contains(&"203.0.113.10/32".to_owned()), "{blocks:?}");
}

fn docs_of(yaml: &str) -> Vec<Value> {
    docs(yaml)
}

#[test]
fn anp_names_are_allow_rules_with_domain_names_and_validate() {
    let (suggestion, fqdns, _) = scenario(ONE_NAME);
    let rendered = dialect::render(Dialect::Anp, &suggestion, &fqdns, Options::default());
    assert!(rendered.warnings.is_empty(), "{:?}", rendered.warnings);
    let yaml = rendered.yaml("shop").unwrap();
    let crd = Crd::load(ADMIN_NETWORK_POLICY);
    assert_eq!(
        crd.check_stream(&yaml),
        1,
        "one AdminNetworkPolicy:\n{yaml}"
    );
    let docs = docs(&yaml);
    let anp = of_kind(&docs, "AdminNetworkPolicy")[0];
    assert_eq!(anp["metadata"]["name"], "weir-shop-web");
    assert!(anp["metadata"].get("namespace").is_none());
    assert_eq!(anp["spec"]["priority"], dialect::anp::PRIORITY);
    assert_eq!(
        anp["spec"]["subject"],
        serde_json::json!({"pods": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "shop"}},
            "podSelector": {"matchLabels": {"app": "web"}},
        }})
    );
    let egress = anp["spec"]["egress"].as_array().unwrap();
    assert_eq!(egress.len(), 1);
    assert_eq!(
        egress[0],
        serde_json::json!({
            "name": "allow-api.payments.example",
            "action": "Allow",
            "to": [{"domainNames": ["api.payments.example"]}],
            "ports": [{"portNumber": {"port": 443, "protocol": "TCP"}}],
        })
    );
    anp_cel_rules(anp);
    let np = of_kind(&docs, "NetworkPolicy")
        .into_iter()
        .find(|d| d["metadata"]["name"] == "weir-web")
        .unwrap();
    let mut blocks = Vec::new();
    cidrs(np, &mut blocks);
    assert_eq!(blocks, ["198.51.100.7/32"]);
}

/// The CEL rules of the AdminNetworkPolicy CRD that concern names (the
/// schema check does not evaluate CEL).
fn anp_cel_rules(anp: &Value) {
    for rule in anp["spec"]["egress"].as_array().expect("egress rules") {
        let names = rule["to"]
            .as_array()
            .expect("peers")
            .iter()
            .any(|peer| peer.get("domainNames").is_some());
        if names {
            assert_eq!(rule["action"], "Allow", "domainNames only in Allow rules");
            assert!(
                !rule["ports"].to_string().contains("namedPort"),
                "no namedPort with domainNames"
            );
        }
    }
}

#[test]
fn fqdn_patterns_fold_siblings_in_both_dialects() {
    let (suggestion, fqdns, _) = scenario(&[
        ("a.api.example", &["203.0.113.20"]),
        ("b.api.example", &["203.0.113.21"]),
        ("api.payments.example", &["203.0.113.10"]),
    ]);
    let options = Options {
        fqdn_patterns: true,
    };
    let cilium = dialect::render(Dialect::Cilium, &suggestion, &fqdns, options);
    let yaml = cilium.yaml("shop").unwrap();
    Crd::load(CILIUM_NETWORK_POLICY).check_stream(&yaml);
    let docs = docs(&yaml);
    let cnp = of_kind(&docs, "CiliumNetworkPolicy")[0];
    let fqdn_rules: Vec<&Value> = cnp["spec"]["egress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["toFQDNs"])
        .filter(|v| !v.is_null())
        .collect();
    assert_eq!(
        fqdn_rules,
        [
            &serde_json::json!([{"matchPattern": "*.api.example"}]),
            &serde_json::json!([{"matchName": "api.payments.example"}]),
        ]
    );
    let evidence = cnp["metadata"]["annotations"]["weir.dev/evidence"]
        .as_str()
        .unwrap();
    assert!(
        evidence.contains("egress to *.api.example (folded from a.api.example, b.api.example)"),
        "{evidence}"
    );
    // All three names' ipBlocks left the standard policy.
    let mut blocks = Vec::new();
    cidrs(&Value::Array(docs.clone()), &mut blocks);
    assert_eq!(blocks, ["198.51.100.7/32"]);

    let anp = dialect::render(Dialect::Anp, &suggestion, &fqdns, options);
    let yaml = anp.yaml("shop").unwrap();
    Crd::load(ADMIN_NETWORK_POLICY).check_stream(&yaml);
    let docs = docs_of(&yaml);
    let names: Vec<&Value> = of_kind(&docs, "AdminNetworkPolicy")[0]["spec"]["egress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["to"][0]["domainNames"])
        .collect();
    assert_eq!(
        names,
        [
            &serde_json::json!(["*.api.example"]),
            &serde_json::json!(["api.payments.example"]),
        ]
    );
    // Without the flag, no wildcard.
    let exact = dialect::render(Dialect::Cilium, &suggestion, &fqdns, Options::default());
    assert!(!exact.all_yaml().contains("matchPattern: '*.api.example'"));
    assert_eq!(exact.all_yaml().matches("matchName:").count(), 3);
}

#[test]
fn in_cluster_peers_never_become_addresses_in_any_dialect() {
    let (suggestion, fqdns, cluster) = scenario(ONE_NAME);
    let pod_ips: BTreeSet<IpAddr> = cluster
        .pods
        .iter()
        .flat_map(|p| p.meta.ips.iter().copied())
        .collect();
    for d in [Dialect::Standard, Dialect::Cilium, Dialect::Anp] {
        for patterns in [false, true] {
            let rendered = dialect::render(
                d,
                &suggestion,
                &fqdns,
                Options {
                    fqdn_patterns: patterns,
                },
            );
            let all = docs(&rendered.all_yaml());
            let mut blocks = Vec::new();
            cidrs(&Value::Array(all.clone()), &mut blocks);
            for b in &blocks {
                let net: ipnet::IpNet = b.parse().unwrap();
                assert!(
                    !pod_ips.iter().any(|p| net.contains(p)),
                    "{d}: {b} covers a pod"
                );
            }
            // shop/db is reached by selector in the standard part.
            let web = all
                .iter()
                .find(|v| v["kind"] == "NetworkPolicy" && v["metadata"]["name"] == "weir-web")
                .unwrap();
            assert!(
                web["spec"]["egress"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r["to"][0]["podSelector"]["matchLabels"]["app"] == "db"),
                "{d}: {web}"
            );
            // The FQDN objects name no address at all.
            for v in all.iter().filter(|v| v["kind"] != "NetworkPolicy") {
                let text = v["spec"].to_string();
                assert!(!text.contains("10.251."), "{d}: {text}");
                assert!(!text.contains("203.0.113."), "{d}: {text}");
            }
        }
    }
}

#[test]
fn a_name_the_schema_refuses_keeps_its_ip_blocks_with_a_warning() {
    let (suggestion, fqdns, _) = scenario(&[("localhost", &["203.0.113.30"])]);
    let anp = dialect::render(Dialect::Anp, &suggestion, &fqdns, Options::default());
    assert!(anp.objects.is_empty());
    assert_eq!(anp.warnings.len(), 1);
    assert!(anp.warnings[0].contains("localhost"), "{:?}", anp.warnings);
    assert!(anp.all_yaml().contains("203.0.113.30/32"));
    // Cilium takes single-label names.
    let cilium = dialect::render(Dialect::Cilium, &suggestion, &fqdns, Options::default());
    assert!(cilium.warnings.is_empty());
    assert!(!cilium.all_yaml().contains("203.0.113.30/32"));
}

#[test]
fn the_schema_check_refuses_wrong_objects() {
    let (suggestion, fqdns, _) = scenario(ONE_NAME);
    let cilium = Crd::load(CILIUM_NETWORK_POLICY);
    let yaml = dialect::render(Dialect::Cilium, &suggestion, &fqdns, Options::default()).all_yaml();
    let good = of_kind(&docs(&yaml), "CiliumNetworkPolicy")[0].clone();
    assert_eq!(cilium.errors(&good), Vec::<String>::new());

    // A misspelled field (the API server's strict validation refuses it).
    let mut typo = good.clone();
    let rule = typo["spec"]["egress"][1].as_object_mut().unwrap();
    let v = rule.remove("toFQDNs").unwrap();
    rule.insert("toFQDN".into(), v);
    assert!(!cilium.errors(&typo).is_empty(), "toFQDN accepted");
    // A missing required field: neither endpointSelector nor nodeSelector.
    let mut missing = good.clone();
    missing["spec"]
        .as_object_mut()
        .unwrap()
        .remove("endpointSelector");
    assert!(
        !cilium.errors(&missing).is_empty(),
        "no endpointSelector accepted"
    );
    // A wrong type and a wrong enum value.
    let mut port = good.clone();
    port["spec"]["egress"][1]["toPorts"][0]["ports"][0]["protocol"] = "HTTP".into();
    assert!(!cilium.errors(&port).is_empty(), "protocol HTTP accepted");
    // A wrong apiVersion, a missing namespace.
    let mut version = good.clone();
    version["apiVersion"] = "cilium.io/v1".into();
    assert!(!cilium.errors(&version).is_empty());
    let mut unscoped = good;
    unscoped["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("namespace");
    assert!(!cilium.errors(&unscoped).is_empty());

    let admin = Crd::load(ADMIN_NETWORK_POLICY);
    let yaml = dialect::render(Dialect::Anp, &suggestion, &fqdns, Options::default()).all_yaml();
    let good = of_kind(&docs(&yaml), "AdminNetworkPolicy")[0].clone();
    assert_eq!(admin.errors(&good), Vec::<String>::new());
    let mut no_priority = good.clone();
    no_priority["spec"]
        .as_object_mut()
        .unwrap()
        .remove("priority");
    assert!(
        !admin.errors(&no_priority).is_empty(),
        "no priority accepted"
    );
    let mut typo = good.clone();
    let peer = typo["spec"]["egress"][0]["to"][0].as_object_mut().unwrap();
    let v = peer.remove("domainNames").unwrap();
    peer.insert("domainName".into(), v);
    assert!(!admin.errors(&typo).is_empty(), "domainName accepted");
    let mut bad_name = good.clone();
    bad_name["spec"]["egress"][0]["to"][0]["domainNames"][0] = "api.*.example".into();
    assert!(
        !admin.errors(&bad_name).is_empty(),
        "a wildcard inside accepted"
    );
    let mut priority = good;
    priority["spec"]["priority"] = 1001.into();
    assert!(
        !admin.errors(&priority).is_empty(),
        "priority 1001 accepted"
    );
}
