//! Golden tests of the learner: `tests/fixtures/<case>/{cluster.yaml,
//! graph.yaml}` in, `expected.yaml` (every namespace's YAML, then the
//! kustomization) out, byte for byte.
//!
//! To accept new output after a deliberate change:
//! `WEIR_BLESS=1 cargo test -p weir-generator --test synth_golden`, then
//! review the fixture diff.
//!
//! Fixture format:
//!
//! ```yaml
//! # cluster.yaml
//! namespaces: {shop: {team: web}}      # optional extra namespace labels
//! pods:
//!   - workload: shop/frontend          # namespace/[Kind/]name, Kind defaults to Deployment
//!     replicas: 2                      # optional, default 1; pods are <name>-<i>
//!     labels: {app: frontend}
//!     rollout: true                    # optional: per-pod pod-template-hash labels
//!     ports: [{port: 8080, name: http}]  # protocol defaults to TCP
//! services:
//!   - {namespace: shop, name: frontend, selector: {app: frontend},
//!      ports: [{port: 80, targetPort: 8080}]}   # targetPort: number or name
//! # graph.yaml
//! options: {namespaces: [shop], aggregate_external: {v4: 24, v6: 64}, service_ports: both}
//! edges:
//!   - {from: shop/loadgen, to: shop/frontend, port: 8080, protocol: TCP,
//!      connections: 10, first: 1714557600, last: 1714640000}   # seconds
//! ```
#![expect(clippy::print_stderr, reason = "a failing golden test prints its diff")]

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    fs,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::Deserialize;
use weir_generator::{
    cluster::{Cluster, ClusterPod, ClusterService, NamedPort, ServicePort, TargetPort},
    eval::{Endpoint, Evaluator, Flow, PolicySet},
    model::{EdgeKey, EdgeStats, FlowGraph, NodeId, PodMeta, Protocol, WorkloadKind, WorkloadRef},
    synth::{self, AggregateExternal, Options, ServicePorts, Suggestion, WarningKind},
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFile {
    #[serde(default)]
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pods: Vec<PodSpec>,
    #[serde(default)]
    services: Vec<ServiceSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PodSpec {
    workload: String,
    #[serde(default = "one")]
    replicas: usize,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    rollout: bool,
    #[serde(default)]
    ports: Vec<PortSpec>,
}

fn one() -> usize {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PortSpec {
    port: u16,
    name: Option<String>,
    protocol: Option<Protocol>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceSpec {
    namespace: String,
    name: String,
    selector: Option<BTreeMap<String, String>>,
    ports: Vec<ServicePortSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServicePortSpec {
    port: u16,
    target_port: serde_yaml::Value,
    protocol: Option<Protocol>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GraphFile {
    #[serde(default)]
    options: OptionsSpec,
    edges: Vec<EdgeSpec>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OptionsSpec {
    namespaces: Option<BTreeSet<String>>,
    aggregate_external: Option<AggregateSpec>,
    #[serde(default)]
    service_ports: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AggregateSpec {
    v4: u8,
    v6: u8,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EdgeSpec {
    from: String,
    to: String,
    protocol: Protocol,
    #[serde(default)]
    port: u16,
    #[serde(default = "one_u64")]
    connections: u64,
    first: u64,
    last: u64,
}

fn one_u64() -> u64 {
    1
}

fn kind(s: &str) -> WorkloadKind {
    match s {
        "Deployment" => WorkloadKind::Deployment,
        "ReplicaSet" => WorkloadKind::ReplicaSet,
        "StatefulSet" => WorkloadKind::StatefulSet,
        "DaemonSet" => WorkloadKind::DaemonSet,
        "Job" => WorkloadKind::Job,
        "CronJob" => WorkloadKind::CronJob,
        "Pod" => WorkloadKind::Pod,
        other => panic!("unknown workload kind {other:?}"),
    }
}

fn workload(s: &str) -> WorkloadRef {
    match s.split('/').collect::<Vec<_>>()[..] {
        [ns, name] => WorkloadRef::new(ns, WorkloadKind::Deployment, name),
        [ns, k, name] => WorkloadRef::new(ns, kind(k), name),
        _ => panic!("bad workload reference {s:?}: want namespace/[Kind/]name"),
    }
}

fn node(s: &str) -> NodeId {
    s.parse::<IpAddr>()
        .map_or_else(|_| NodeId::Workload(workload(s)), NodeId::External)
}

/// A fixture loaded: the cluster, the graph (every cluster pod added, as
/// the agent does) and the options.
struct Case {
    cluster: Cluster,
    graph: FlowGraph,
    options: Options,
}

fn load(dir: &Path) -> Case {
    let read = |name: &str| {
        let path = dir.join(name);
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let cf: ClusterFile = serde_yaml::from_str(&read("cluster.yaml"))
        .unwrap_or_else(|e| panic!("{}/cluster.yaml: {e}", dir.display()));
    let gf: GraphFile = serde_yaml::from_str(&read("graph.yaml"))
        .unwrap_or_else(|e| panic!("{}/graph.yaml: {e}", dir.display()));

    let mut cluster = Cluster::default();
    for (ns, labels) in &cf.namespaces {
        let mut labels = labels.clone();
        labels.insert("kubernetes.io/metadata.name".into(), ns.clone());
        cluster.namespaces.insert(ns.clone(), labels);
    }
    let mut next_ip: u32 = 0;
    for spec in &cf.pods {
        let w = workload(&spec.workload);
        for i in 0..spec.replicas {
            next_ip += 1;
            let mut labels = spec.labels.clone();
            if spec.rollout {
                labels.insert("pod-template-hash".into(), format!("h{i}"));
            }
            let ns = w.namespace.clone();
            cluster
                .namespaces
                .entry(ns.clone())
                .or_insert_with(|| BTreeMap::from([("kubernetes.io/metadata.name".into(), ns)]));
            cluster.pods.push(ClusterPod {
                meta: PodMeta {
                    namespace: w.namespace.clone(),
                    name: format!("{}-{i}", w.name),
                    labels,
                    workload: w.clone(),
                    ips: vec![IpAddr::V4(Ipv4Addr::from(0x0af4_0000 + next_ip))],
                },
                ports: spec
                    .ports
                    .iter()
                    .map(|p| NamedPort {
                        name: p.name.clone(),
                        port: p.port,
                        protocol: p.protocol.unwrap_or(Protocol::Tcp),
                    })
                    .collect(),
            });
        }
    }
    for s in &cf.services {
        cluster.services.push(ClusterService {
            namespace: s.namespace.clone(),
            name: s.name.clone(),
            cluster_ips: vec![],
            selector: s.selector.clone(),
            ports: s
                .ports
                .iter()
                .map(|p| ServicePort {
                    port: p.port,
                    protocol: p.protocol.unwrap_or(Protocol::Tcp),
                    target: match &p.target_port {
                        serde_yaml::Value::Number(n) => TargetPort::Number(
                            u16::try_from(n.as_u64().expect("numeric targetPort"))
                                .expect("targetPort fits u16"),
                        ),
                        serde_yaml::Value::String(s) => TargetPort::Name(s.clone()),
                        other => panic!("bad targetPort {other:?}"),
                    },
                })
                .collect(),
        });
    }

    let mut graph = FlowGraph::default();
    for pod in &cluster.pods {
        graph.add_pod(&pod.meta);
    }
    for e in &gf.edges {
        graph.record(
            EdgeKey {
                source: node(&e.from),
                target: node(&e.to),
                protocol: e.protocol,
                port: e.port,
            },
            &EdgeStats {
                packets: e.connections * 10,
                bytes: e.connections * 1000,
                connections: e.connections,
                first_seen: e.first * 1_000_000_000,
                last_seen: e.last * 1_000_000_000,
                ..EdgeStats::default()
            },
        );
    }
    let options = Options {
        namespaces: gf.options.namespaces,
        aggregate_external: gf.options.aggregate_external.map(|a| AggregateExternal {
            v4_prefix: a.v4,
            v6_prefix: a.v6,
        }),
        service_ports: match gf.options.service_ports.as_deref() {
            None | Some("target-only") => ServicePorts::TargetOnly,
            Some("both") => ServicePorts::Both,
            Some(other) => panic!("service_ports: {other:?} (want target-only or both)"),
        },
    };
    Case {
        cluster,
        graph,
        options,
    }
}

fn render(s: &Suggestion) -> String {
    format!(
        "{}# kustomization.yaml\n{}",
        s.all_yaml(),
        s.kustomization()
            .lines()
            .map(|l| format!("# {l}\n"))
            .collect::<String>()
    )
}

/// A line diff (longest common subsequence), `-` expected, `+` actual.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            let _ = writeln!(out, "+{:>4} {}", j + 1, b[j]);
            j += 1;
        } else {
            let _ = writeln!(out, "-{:>4} {}", i + 1, a[i]);
            i += 1;
        }
    }
    out
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Every observed edge with ports is allowed by the generated set, pod by pod.
fn assert_complete(case: &Case, s: &Suggestion) {
    let set = PolicySet::new(s.policies().cloned().collect())
        .unwrap_or_else(|e| panic!("generated policies are invalid: {e}"));
    let eval = Evaluator::new(&set, &case.cluster);
    let pods_of = |n: &NodeId| -> Vec<Endpoint<'_>> {
        match n {
            NodeId::Workload(w) => case
                .cluster
                .pods
                .iter()
                .filter(|p| p.meta.workload == *w)
                .map(Endpoint::Pod)
                .collect(),
            NodeId::External(ip) => vec![Endpoint::External(*ip)],
        }
    };
    for key in case.graph.edges.keys() {
        if !key.protocol.has_ports() {
            continue;
        }
        for source in pods_of(&key.source) {
            for destination in pods_of(&key.target) {
                let flow = Flow {
                    source,
                    destination,
                    protocol: key.protocol,
                    port: key.port,
                };
                assert!(
                    eval.evaluate(&flow).allowed(),
                    "observed {} -> {} {}/{} is not allowed",
                    key.source,
                    key.target,
                    key.port,
                    key.protocol
                );
            }
        }
    }
}

#[test]
fn golden_fixtures() {
    let bless = std::env::var_os("WEIR_BLESS").is_some();
    let mut cases: Vec<PathBuf> = fs::read_dir(fixtures())
        .expect("tests/fixtures exists")
        .map(|e| e.expect("readable fixture dir").path())
        .filter(|p| p.join("graph.yaml").exists())
        .collect();
    cases.sort();
    assert!(cases.len() >= 5, "fixtures missing: {cases:?}");
    let mut failures = Vec::new();
    for dir in &cases {
        let case = load(dir);
        let suggestion = synth::synthesize(&case.graph, &case.cluster, &case.options);
        assert_complete(&case, &suggestion);
        let actual = render(&suggestion);
        let again = render(&synth::synthesize(
            &case.graph,
            &case.cluster,
            &case.options,
        ));
        assert_eq!(
            actual,
            again,
            "{}: output is not deterministic",
            dir.display()
        );
        let expected_path = dir.join("expected.yaml");
        if bless {
            fs::write(&expected_path, &actual).expect("write expected.yaml");
            continue;
        }
        let expected = fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            eprintln!(
                "=== {} differs (- expected, + actual); WEIR_BLESS=1 to accept:\n{}",
                dir.display(),
                diff(&expected, &actual)
            );
            failures.push(dir.display().to_string());
        }
    }
    assert!(failures.is_empty(), "golden mismatches: {failures:?}");
}

fn demo() -> Case {
    load(&fixtures().join("demo-shop"))
}

fn policy<'a>(s: &'a Suggestion, ns: &str, name: &str) -> &'a NetworkPolicy {
    s.namespaces[ns]
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no policy {ns}/{name}"))
}

fn evidence(p: &NetworkPolicy) -> BTreeSet<String> {
    p.metadata.annotations.as_ref().expect("annotations")[synth::EVIDENCE_ANNOTATION]
        .lines()
        .map(str::to_owned)
        .collect()
}

// See: the issue's "one new edge changes one rule".
#[test]
fn one_new_edge_changes_one_rule_per_side_and_one_evidence_line() {
    let mut case = demo();
    let before = synth::synthesize(&case.graph, &case.cluster, &case.options);
    // Inside the observation window, so the window lines stay put.
    let stats = EdgeStats {
        packets: 4,
        bytes: 400,
        connections: 2,
        first_seen: 1_714_560_000_000_000_000,
        last_seen: 1_714_570_000_000_000_000,
        ..EdgeStats::default()
    };
    case.graph.record(
        EdgeKey {
            source: node("shop/frontend"),
            target: node("data/StatefulSet/store"),
            protocol: Protocol::Tcp,
            port: 5432,
        },
        &stats,
    );
    let after = synth::synthesize(&case.graph, &case.cluster, &case.options);

    let changed: Vec<String> = after
        .policies()
        .filter(|p| !before.policies().any(|q| q == *p))
        .map(|p| {
            format!(
                "{}/{}",
                p.metadata.namespace.as_deref().unwrap_or_default(),
                p.metadata.name.as_deref().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(changed, ["data/weir-store", "shop/weir-frontend"]);
    assert_eq!(before.policies().count(), after.policies().count());

    for (ns, name, side) in [
        ("shop", "weir-frontend", "egress"),
        ("data", "weir-store", "ingress"),
    ] {
        let (old, new) = (policy(&before, ns, name), policy(&after, ns, name));
        let rules = |p: &NetworkPolicy| -> Vec<String> {
            let spec = p.spec.as_ref().expect("spec");
            let v = if side == "egress" {
                serde_json::to_value(&spec.egress)
            } else {
                serde_json::to_value(&spec.ingress)
            };
            v.expect("json")
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        let (old_rules, new_rules) = (rules(old), rules(new));
        let added: Vec<&String> = new_rules
            .iter()
            .filter(|r| !old_rules.contains(r))
            .collect();
        let removed: Vec<&String> = old_rules
            .iter()
            .filter(|r| !new_rules.contains(r))
            .collect();
        assert_eq!(
            (added.len(), removed.len()),
            (1, 0),
            "{ns}/{name} {side}: {added:?} {removed:?}"
        );
        assert!(added[0].contains("5432"), "{}", added[0]);
        // The other side is untouched.
        let other = |p: &NetworkPolicy| {
            let spec = p.spec.clone().expect("spec");
            if side == "egress" {
                serde_json::to_string(&spec.ingress)
            } else {
                serde_json::to_string(&spec.egress)
            }
        };
        assert_eq!(other(old).ok(), other(new).ok());
        let (eo, en) = (evidence(old), evidence(new));
        assert!(
            eo.is_subset(&en),
            "{ns}/{name}: evidence lines were changed, not added"
        );
        let new_lines: Vec<&String> = en.difference(&eo).collect();
        assert_eq!(new_lines.len(), 1, "{new_lines:?}");
        assert!(
            new_lines[0].contains("5432/TCP: 2 connections"),
            "{}",
            new_lines[0]
        );
    }

    // And in the YAML: a handful of lines, nowhere else.
    let d = diff(&before.all_yaml(), &after.all_yaml());
    assert!(d.lines().all(|l| l.starts_with('+')), "lines removed:\n{d}");
    assert!(d.lines().count() <= 30, "too many lines changed:\n{d}");
}

#[test]
fn dns_is_neither_dropped_nor_invented() {
    let case = demo();
    let s = synth::synthesize(&case.graph, &case.cluster, &case.options);
    let yaml = policy(&s, "shop", "weir-frontend");
    let text = serde_yaml::to_string(yaml).expect("yaml");
    assert!(text.contains("k8s-app: kube-dns"), "{text}");
    // loadgen never resolved names in the fixture: no DNS rule for it.
    let loadgen = serde_yaml::to_string(policy(&s, "load", "weir-loadgen")).expect("yaml");
    assert!(
        !loadgen.contains("kube-dns") && !loadgen.contains("port: 53"),
        "{loadgen}"
    );
    // coredns gets ingress on both protocols from the shop.
    let coredns = serde_yaml::to_string(policy(&s, "kube-system", "weir-coredns")).expect("yaml");
    assert!(
        coredns.contains("protocol: UDP") && coredns.contains("protocol: TCP"),
        "{coredns}"
    );
}

#[test]
fn every_object_is_labelled_and_annotated() {
    let case = demo();
    let s = synth::synthesize(&case.graph, &case.cluster, &case.options);
    assert!(s.policies().count() > 5);
    for p in s.policies() {
        let labels = p.metadata.labels.as_ref().expect("labels");
        assert_eq!(
            labels.get(synth::MANAGED_BY.0).map(String::as_str),
            Some("weir")
        );
        let ev = &p.metadata.annotations.as_ref().expect("annotations")[synth::EVIDENCE_ANNOTATION];
        assert!(ev.contains("window: "), "{ev}");
        let spec = p.spec.as_ref().expect("spec");
        assert_eq!(
            spec.policy_types.as_deref(),
            Some(&["Ingress".to_owned(), "Egress".to_owned()][..])
        );
    }
    assert_eq!(
        s.kustomization(),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n\
         - data.yaml\n- kube-system.yaml\n- load.yaml\n- shop.yaml\n"
    );
}

#[test]
fn icmp_yields_a_warning_not_a_rule() {
    let mut case = demo();
    let before = synth::synthesize(&case.graph, &case.cluster, &case.options);
    case.graph.record(
        EdgeKey {
            source: node("shop/frontend"),
            target: node("shop/cartservice"),
            protocol: Protocol::Icmp,
            port: 0,
        },
        &EdgeStats {
            connections: 1,
            first_seen: 1_714_560_000_000_000_000,
            last_seen: 1_714_560_000_000_000_000,
            ..EdgeStats::default()
        },
    );
    let after = synth::synthesize(&case.graph, &case.cluster, &case.options);
    assert_eq!(before.namespaces, after.namespaces);
    let icmp: Vec<_> = after
        .warnings
        .iter()
        .filter(|w| w.kind == WarningKind::IcmpNotExpressible)
        .collect();
    assert_eq!(icmp.len(), 1, "{:?}", after.warnings);
    assert_eq!(icmp[0].workload.as_deref(), Some("frontend"));
    assert!(icmp[0].to_string().contains("ICMPv4"), "{}", icmp[0]);
}

#[test]
fn namespace_filter_keeps_peers_outside() {
    let mut case = demo();
    case.options.namespaces = Some(BTreeSet::from(["data".to_owned(), "nowhere".to_owned()]));
    let s = synth::synthesize(&case.graph, &case.cluster, &case.options);
    assert_eq!(s.namespaces.keys().collect::<Vec<_>>(), ["data"]);
    let store = serde_yaml::to_string(policy(&s, "data", "weir-store")).expect("yaml");
    assert!(
        store.contains("kubernetes.io/metadata.name: shop"),
        "{store}"
    );
    assert!(
        s.warnings
            .iter()
            .any(|w| w.kind == WarningKind::NoObservedPods && w.namespace == "nowhere"),
        "{:?}",
        s.warnings
    );
}

// See: issue 10 item 0 (an ipBlock matches pod addresses): an aggregated
// external prefix over pod addresses excepts them, so the suggestion stays
// tight for pods while the external address stays allowed.
#[test]
fn aggregated_external_prefix_excepts_the_pods_inside_it() {
    let case = load(&fixtures().join("external-aggregated-over-pods"));
    let s = synth::synthesize(&case.graph, &case.cluster, &case.options);
    let set = PolicySet::new(s.policies().cloned().collect()).expect("valid policies");
    let eval = Evaluator::new(&set, &case.cluster);
    let pods = |name: &str| -> Vec<Endpoint<'_>> {
        case.cluster
            .pods
            .iter()
            .filter(|p| p.meta.workload.name == name)
            .map(|p| Endpoint::PodAt(p, p.meta.ips[0]))
            .collect()
    };
    let backend = pods("backend")[0];
    let external: IpAddr = "10.244.9.9".parse().expect("address");
    let outside = Flow {
        source: backend,
        destination: Endpoint::External(external),
        protocol: Protocol::Tcp,
        port: 443,
    };
    assert!(eval.evaluate(&outside).allowed(), "the observed egress");
    for name in ["gateway", "batch"] {
        for destination in pods(name) {
            let flow = Flow {
                source: backend,
                destination,
                protocol: Protocol::Tcp,
                port: 443,
            };
            assert!(
                !eval.evaluate(&flow).egress.allowed(),
                "backend -> {name} 443/TCP was never observed but the egress allows it"
            );
        }
    }
}
