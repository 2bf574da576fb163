//! Properties of the learner on random clusters and flow graphs, checked
//! with the evaluator (cilium's `FuzzDistillPolicy` idea):
//!
//! - complete: every observed edge (every pod of the source workload to
//!   every pod of the target) is allowed;
//! - tight: no (source workload, destination workload, protocol, port)
//!   among known workloads and the ports in play is allowed unless it was
//!   observed (pairs whose pods some inexact selector may cover are
//!   skipped, and the learner must have warned about that selector);
//! - deterministic: shuffled insertion orders give byte-identical YAML.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use proptest::{prelude::*, sample::Index};
use weir_generator::{
    cluster::{Cluster, ClusterPod},
    eval::{Endpoint, Evaluator, Flow, PolicySet},
    identity::PER_ROLLOUT_LABELS,
    model::{EdgeKey, EdgeStats, FlowGraph, NodeId, PodMeta, Protocol, WorkloadKind, WorkloadRef},
    synth::{self, Options, Suggestion, WarningKind},
};

const PORTS: &[u16] = &[53, 80, 443, 8080];
/// A port never observed, to check tightness beyond the ports in play.
const UNSEEN_PORT: u16 = 9999;
const PROTOCOLS: &[Protocol] = &[Protocol::Tcp, Protocol::Udp, Protocol::Sctp, Protocol::Icmp];
const EXTERNALS: &[&str] = &[
    "203.0.113.10",
    "203.0.113.11",
    "198.51.100.7",
    "2001:db8::5",
];

#[derive(Clone, Debug)]
struct WorkloadSpec {
    namespace: usize,
    kind: WorkloadKind,
    replicas: usize,
    /// Stable labels shared by every pod.
    labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug)]
struct EdgeSpec {
    source: Index,
    target: Index,
    protocol: Protocol,
    port: u16,
    connections: u64,
    last: u64,
}

fn workload_spec() -> impl Strategy<Value = WorkloadSpec> {
    let kind = prop_oneof![
        Just(WorkloadKind::Deployment),
        Just(WorkloadKind::StatefulSet),
        Just(WorkloadKind::DaemonSet),
        Just(WorkloadKind::Pod),
    ];
    // Few keys and values: overlaps (and inexact workloads) are common.
    let label = (
        prop::sample::select(vec![
            "app",
            "app.kubernetes.io/name",
            "k8s-app",
            "tier",
            "team",
        ]),
        prop::sample::select(vec!["a", "b", "c"]),
    );
    (
        0..3usize,
        kind,
        1..=3usize,
        prop::collection::vec(label, 0..4),
    )
        .prop_map(|(namespace, kind, replicas, labels)| WorkloadSpec {
            namespace,
            kind,
            replicas: if kind == WorkloadKind::Pod {
                1
            } else {
                replicas
            },
            labels: labels
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        })
}

fn edge_spec() -> impl Strategy<Value = EdgeSpec> {
    (
        any::<Index>(),
        any::<Index>(),
        prop::sample::select(PROTOCOLS.to_vec()),
        prop::sample::select(PORTS.to_vec()),
        1..1000u64,
        0..100u64,
    )
        .prop_map(
            |(source, target, protocol, port, connections, last)| EdgeSpec {
                source,
                target,
                protocol,
                port: if protocol.has_ports() { port } else { 0 },
                connections,
                last,
            },
        )
}

struct World {
    cluster: Cluster,
    workloads: Vec<WorkloadRef>,
    edges: Vec<(EdgeKey, EdgeStats)>,
}

fn world(specs: &[WorkloadSpec], edges: &[EdgeSpec]) -> World {
    let mut cluster = Cluster::default();
    let mut workloads = Vec::new();
    let mut ip = 0u32;
    for (i, spec) in specs.iter().enumerate() {
        let ns = format!("ns{}", spec.namespace);
        let w = WorkloadRef::new(ns.clone(), spec.kind, format!("w{i}"));
        for r in 0..spec.replicas {
            ip += 1;
            let mut labels = spec.labels.clone();
            // Per-rollout labels, different on every pod (never selectable).
            labels.insert("pod-template-hash".into(), format!("h{i}x{r}"));
            labels.insert("controller-revision-hash".into(), format!("r{r}"));
            cluster.pods.push(ClusterPod {
                meta: PodMeta {
                    namespace: ns.clone(),
                    name: format!("w{i}-{r}"),
                    labels,
                    workload: w.clone(),
                    ips: vec![IpAddr::from([
                        10,
                        244,
                        0,
                        u8::try_from(ip).expect("few pods"),
                    ])],
                },
                ports: vec![],
            });
        }
        workloads.push(w);
    }
    let node = |index: &Index| {
        let i = index.index(workloads.len() + EXTERNALS.len());
        workloads.get(i).cloned().map_or_else(
            || NodeId::External(EXTERNALS[i - workloads.len()].parse().expect("ip")),
            NodeId::Workload,
        )
    };
    let edges = edges
        .iter()
        .map(|e| {
            (
                EdgeKey {
                    source: node(&e.source),
                    target: node(&e.target),
                    protocol: e.protocol,
                    port: e.port,
                },
                EdgeStats {
                    packets: e.connections * 2,
                    bytes: e.connections * 100,
                    connections: e.connections,
                    first_seen: 1_700_000_000_000_000_000,
                    last_seen: 1_700_000_000_000_000_000 + e.last * 1_000_000_000,
                    ..EdgeStats::default()
                },
            )
        })
        .collect();
    World {
        cluster,
        workloads,
        edges,
    }
}

fn graph(world: &World, pod_order: &[usize], edge_order: &[usize]) -> FlowGraph {
    let mut g = FlowGraph::default();
    for &i in pod_order {
        g.add_pod(&world.cluster.pods[i].meta);
    }
    for &i in edge_order {
        let (k, s) = &world.edges[i];
        g.record(k.clone(), s);
    }
    g
}

fn pods_of<'a>(cluster: &'a Cluster, w: &WorkloadRef) -> Vec<&'a ClusterPod> {
    cluster
        .pods
        .iter()
        .filter(|p| p.meta.workload == *w)
        .collect()
}

/// Workloads whose pods some used selector may over-select: the oracle,
/// computed independently of the learner. A workload is inexact when its
/// stable common labels also match another pod of its namespace; then it,
/// and the workloads of the pods it matches, are tainted.
fn tainted(
    cluster: &Cluster,
    workloads: &[WorkloadRef],
) -> (BTreeSet<WorkloadRef>, BTreeSet<WorkloadRef>) {
    let mut inexact = BTreeSet::new();
    let mut tainted = BTreeSet::new();
    for w in workloads {
        let pods = pods_of(cluster, w);
        let common: BTreeMap<&String, &String> = pods[0]
            .meta
            .labels
            .iter()
            .filter(|(k, v)| {
                !PER_ROLLOUT_LABELS.contains(&k.as_str())
                    && pods.iter().all(|p| p.meta.labels.get(*k) == Some(*v))
            })
            .collect();
        let over: Vec<&ClusterPod> = cluster
            .pods
            .iter()
            .filter(|p| {
                p.meta.namespace == w.namespace
                    && p.meta.workload != *w
                    && common
                        .iter()
                        .all(|(k, v)| p.meta.labels.get(*k) == Some(*v))
            })
            .collect();
        if !over.is_empty() {
            inexact.insert(w.clone());
            tainted.insert(w.clone());
            tainted.extend(over.iter().map(|p| p.meta.workload.clone()));
        }
    }
    (inexact, tainted)
}

fn check(world: &World, suggestion: &Suggestion) -> Result<(), TestCaseError> {
    let set = PolicySet::new(suggestion.policies().cloned().collect())
        .map_err(|e| TestCaseError::fail(format!("invalid policies: {e}")))?;
    let eval = Evaluator::new(&set, &world.cluster);
    let endpoints = |n: &NodeId| -> Vec<Endpoint<'_>> {
        match n {
            NodeId::Workload(w) => pods_of(&world.cluster, w)
                .into_iter()
                .map(Endpoint::Pod)
                .collect(),
            NodeId::External(ip) => vec![Endpoint::External(*ip)],
        }
    };

    // (a) complete.
    let mut observed: BTreeSet<(&NodeId, &NodeId, Protocol, u16)> = BTreeSet::new();
    for (key, _) in &world.edges {
        observed.insert((&key.source, &key.target, key.protocol, key.port));
        if !key.protocol.has_ports() {
            continue;
        }
        for source in endpoints(&key.source) {
            for destination in endpoints(&key.target) {
                let flow = Flow {
                    source,
                    destination,
                    protocol: key.protocol,
                    port: key.port,
                };
                prop_assert!(
                    eval.evaluate(&flow).allowed(),
                    "observed {} -> {} {}/{} denied",
                    key.source,
                    key.target,
                    key.port,
                    key.protocol
                );
            }
        }
    }

    // Warnings agree with the oracle.
    let (inexact, tainted) = tainted(&world.cluster, &world.workloads);
    for w in suggestion
        .warnings
        .iter()
        .filter(|w| w.kind == WarningKind::InexactSelector)
    {
        prop_assert!(
            inexact
                .iter()
                .any(|x| x.namespace == w.namespace && Some(&x.name) == w.workload.as_ref()),
            "unexpected warning {w}"
        );
    }

    // (b) tight.
    let ports: Vec<(Protocol, u16)> = PROTOCOLS
        .iter()
        .flat_map(|&p| {
            let ports: Vec<u16> = if p.has_ports() {
                PORTS.iter().copied().chain([UNSEEN_PORT]).collect()
            } else {
                vec![0]
            };
            ports.into_iter().map(move |port| (p, port))
        })
        .collect();
    for s in &world.workloads {
        for d in &world.workloads {
            if tainted.contains(s) || tainted.contains(d) {
                continue;
            }
            let (sn, dn) = (NodeId::Workload(s.clone()), NodeId::Workload(d.clone()));
            for &(protocol, port) in &ports {
                if observed.contains(&(&sn, &dn, protocol, port)) && protocol.has_ports() {
                    continue;
                }
                for source in endpoints(&sn) {
                    for destination in endpoints(&dn) {
                        let flow = Flow {
                            source,
                            destination,
                            protocol,
                            port,
                        };
                        prop_assert!(
                            !eval.evaluate(&flow).allowed(),
                            "never observed {s} -> {d} {port}/{protocol} is allowed"
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn complete_tight_and_deterministic(
        specs in prop::collection::vec(workload_spec(), 1..8),
        edges in prop::collection::vec(edge_spec(), 0..16),
        seed in any::<u64>(),
    ) {
        let world = world(&specs, &edges);
        let pods: Vec<usize> = (0..world.cluster.pods.len()).collect();
        let order: Vec<usize> = (0..world.edges.len()).collect();
        let g = graph(&world, &pods, &order);
        let suggestion = synth::synthesize(&g, &world.cluster, &Options::default());
        check(&world, &suggestion)?;

        // (c) deterministic: other insertion orders (pods, edges, and the
        // cluster's own pod list) give the same bytes.
        let shuffle = |v: &mut Vec<usize>, salt: u64| {
            let mut x = seed ^ salt;
            for i in (1..v.len()).rev() {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let j = usize::try_from(x >> 33).expect("fits") % (i + 1);
                v.swap(i, j);
            }
        };
        let (mut pods2, mut order2) = (pods.clone(), order.clone());
        shuffle(&mut pods2, 1);
        shuffle(&mut order2, 2);
        let mut cluster2 = world.cluster.clone();
        let mut perm: Vec<usize> = (0..cluster2.pods.len()).collect();
        shuffle(&mut perm, 3);
        cluster2.pods = perm.iter().map(|&i| world.cluster.pods[i].clone()).collect();
        let g2 = graph(&world, &pods2, &order2);
        let again = synth::synthesize(&g2, &cluster2, &Options::default());
        prop_assert_eq!(suggestion.all_yaml(), again.all_yaml());
        prop_assert_eq!(&suggestion.warnings, &again.warnings);
    }
}
