//! Scale of the datapath compiler: 10,000 POLICY entries from pod peers
//! (100 policies x 10 peer workloads x 10 ports over 1,000 pods) and
//! 10,000 from `ipBlock`s (100 policies x 100 distinct /24s); the time to
//! compile cold (fresh identities), to recompile unchanged (warm
//! identities), to compile with one more policy, and to diff.
//!
//! Run: `cargo bench -p weir-generator --bench compile` (prints a markdown
//! table).
#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::{
    collections::BTreeMap,
    hint::black_box,
    net::IpAddr,
    time::{Duration, Instant},
};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::json;
use weir_generator::{
    cluster::{Cluster, ClusterPod, NamedPort},
    datapath::{self, DatapathState, Identities, Input, Limits, Mode},
    eval::PolicySet,
    model::{PodMeta, Protocol, WorkloadKind, WorkloadRef},
};

const NAMESPACES: usize = 10;
const WORKLOADS: usize = 100;
const PODS_PER_WORKLOAD: usize = 10;

fn ns(w: usize) -> String {
    format!("ns{}", w % NAMESPACES)
}

/// 1,000 pods: 100 workloads of 10 replicas in 10 namespaces.
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
        for r in 0..PODS_PER_WORKLOAD {
            i += 1;
            let [_, _, hi, lo] = i.to_be_bytes();
            cluster.pods.push(ClusterPod {
                meta: PodMeta {
                    namespace: ns(w),
                    name: format!("w{w}-{r}"),
                    labels: BTreeMap::from([
                        ("app".to_owned(), format!("w{w}")),
                        ("pod-template-hash".to_owned(), "5d8f7".to_owned()),
                    ]),
                    workload: WorkloadRef::new(ns(w), WorkloadKind::Deployment, format!("w{w}")),
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

/// Policy number `w` of a scenario.
type MakePolicy = fn(usize) -> NetworkPolicy;

fn policy(value: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(value).expect("valid policy")
}

/// Policy `w`: workload `w` accepts 10 ports from the 10 next workloads.
fn peer_policy(w: usize) -> NetworkPolicy {
    let from: Vec<_> = (1..=10)
        .map(|k| {
            let p = (w + k) % WORKLOADS;
            json!({
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns(p)}},
                "podSelector": {"matchLabels": {"app": format!("w{p}")}},
            })
        })
        .collect();
    let ports: Vec<_> = (0..10).map(|j| json!({"port": 9000 + j})).collect();
    policy(json!({
        "metadata": {"namespace": ns(w), "name": format!("w{w}-in")},
        "spec": {
            "podSelector": {"matchLabels": {"app": format!("w{w}")}},
            "ingress": [{"from": from, "ports": ports}],
        },
    }))
}

/// Policy `w`: workload `w` may reach 100 distinct /24s on 443.
fn cidr_policy(w: usize) -> NetworkPolicy {
    let to: Vec<_> = (0..100)
        .map(|j| json!({"ipBlock": {"cidr": format!("172.{}.{j}.0/24", 16 + w)}}))
        .collect();
    policy(json!({
        "metadata": {"namespace": ns(w), "name": format!("w{w}-out")},
        "spec": {
            "podSelector": {"matchLabels": {"app": format!("w{w}")}},
            "policyTypes": ["Egress"],
            "egress": [{"to": to, "ports": [{"port": 443}]}],
        },
    }))
}

/// One more policy for the diff: workload 0 accepts `http` from everyone.
fn extra_policy() -> NetworkPolicy {
    policy(json!({
        "metadata": {"namespace": ns(0), "name": "w0-http"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "w0"}},
            "ingress": [{"ports": [{"port": "http"}, {"port": 30000, "endPort": 32767}]}],
        },
    }))
}

fn compile(set: &PolicySet, cluster: &Cluster, ids: &mut Identities) -> DatapathState {
    let modes = BTreeMap::from([(ns(0), Mode::Enforce)]);
    let node_ips = ["192.168.0.10".parse().expect("an address")];
    datapath::compile(
        &Input {
            policies: set,
            cluster,
            modes: &modes,
            default_mode: Mode::Audit,
            node_ips: &node_ips,
        },
        ids,
    )
    .expect("compiles")
}

/// Median of `runs` timings of `f`.
fn median<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let cluster = cluster();
    println!(
        "| scenario | pods | policies | POLICY | CIDRS | PEERS | identities | compile (cold) \
         | recompile (warm) | + 1 policy: compile | diff | diff ops |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let scenarios: [(&str, MakePolicy); 2] =
        [("pod peers", peer_policy), ("ipBlock peers", cidr_policy)];
    for (name, make) in scenarios {
        let policies: Vec<_> = (0..100).map(make).collect();
        let set = PolicySet::new(policies.clone()).expect("valid set");
        let mut more = policies;
        more.push(extra_policy());
        let bigger = PolicySet::new(more).expect("valid set");

        let cold = median(5, || compile(&set, &cluster, &mut Identities::new()));
        let mut ids = Identities::new();
        let state = compile(&set, &cluster, &mut ids);
        state.check(&Limits::KERNEL).expect("fits the kernel maps");
        let warm = median(5, || compile(&set, &cluster, &mut ids.clone()));
        let plus = median(5, || compile(&bigger, &cluster, &mut ids.clone()));
        let newer = compile(&bigger, &cluster, &mut ids.clone());
        let diff_time = median(5, || state.diff(&newer));
        let diff = state.diff(&newer);
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cluster.pods.len(),
            set.len(),
            state.rules.len(),
            state.cidrs.len(),
            state.peers.len(),
            ids.len(),
            ms(cold),
            ms(warm),
            ms(plus),
            ms(diff_time),
            diff.len(),
        );
    }
}
