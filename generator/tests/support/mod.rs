//! Shared by the evaluator's integration tests: the cyclonus-like cluster
//! (namespaces x, y, z with pods a, b, c), policy parsing, compact verdict
//! rendering, and the naive reference evaluator.
#![allow(dead_code, reason = "each test binary uses a different part")]

pub mod reference;
pub mod strategies;

use std::{collections::BTreeMap, fmt::Write as _, net::IpAddr};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::Deserialize as _;
use weir_generator::{
    cluster::{Cluster, ClusterPod, NamedPort},
    eval::{DirectionVerdict, Endpoint},
    model::{PodMeta, Protocol, WorkloadKind, WorkloadRef},
};

/// The namespaces of the truth tables.
pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
/// The pods in each namespace.
pub const PODS: [&str; 3] = ["a", "b", "c"];
/// The one address outside the cluster.
pub const EXTERNAL: &str = "192.0.2.10";

/// Labels from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A pod with the given labels, IP and `(name, port, protocol)` container ports.
pub fn pod(
    namespace: &str,
    name: &str,
    pod_labels: BTreeMap<String, String>,
    ip: IpAddr,
    ports: &[(Option<&str>, u16, Protocol)],
) -> ClusterPod {
    ClusterPod {
        meta: PodMeta {
            namespace: namespace.into(),
            name: name.into(),
            labels: pod_labels,
            workload: WorkloadRef::new(namespace, WorkloadKind::Pod, name),
            ips: vec![ip],
        },
        ports: ports
            .iter()
            .map(|(n, port, protocol)| NamedPort {
                name: n.map(str::to_owned),
                port: *port,
                protocol: *protocol,
            })
            .collect(),
    }
}

/// Namespaces x, y, z (labelled `ns=<name>` and
/// `kubernetes.io/metadata.name=<name>`), pods a, b, c in each (`pod=<name>`,
/// IP `10.0.<1..3>.<10..12>`), each serving TCP and UDP on 80 and 81 under
/// the names `serve-<port>-<protocol>`.
pub fn xyz_cluster() -> Cluster {
    let mut cluster = Cluster::default();
    for (n, ns) in (1u8..).zip(NAMESPACES) {
        cluster.namespaces.insert(
            ns.to_owned(),
            labels(&[("ns", ns), ("kubernetes.io/metadata.name", ns)]),
        );
        for (p, name) in (10u8..).zip(PODS) {
            cluster.pods.push(pod(
                ns,
                name,
                labels(&[("pod", name)]),
                IpAddr::from([10, 0, n, p]),
                &[
                    (Some("serve-80-tcp"), 80, Protocol::Tcp),
                    (Some("serve-81-tcp"), 81, Protocol::Tcp),
                    (Some("serve-80-udp"), 80, Protocol::Udp),
                    (Some("serve-81-udp"), 81, Protocol::Udp),
                ],
            ));
        }
    }
    cluster
}

/// The endpoints of the truth tables, in table order: `x/a` .. `z/c`, `ext`.
pub fn endpoints(cluster: &Cluster) -> Vec<(String, Endpoint<'_>)> {
    let mut all: Vec<(String, Endpoint<'_>)> = cluster
        .pods
        .iter()
        .map(|p| {
            (
                format!("{}/{}", p.meta.namespace, p.meta.name),
                Endpoint::Pod(p),
            )
        })
        .collect();
    all.push((
        "ext".to_owned(),
        Endpoint::External(EXTERNAL.parse().expect("EXTERNAL is an address")),
    ));
    all
}

/// Policies from a multi-document YAML string (`---` separated).
pub fn policies(yaml: &str) -> Vec<NetworkPolicy> {
    if yaml.trim().is_empty() {
        return Vec::new();
    }
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| {
            NetworkPolicy::deserialize(doc)
                .unwrap_or_else(|e| panic!("bad test policy: {e}\n{yaml}"))
        })
        .collect()
}

/// A direction verdict in one line: `not-applicable`, `not-isolated`,
/// `allowed by x/p spec.ingress[0], ...`, `denied (default-deny) by x/p, ...`.
pub fn render(v: &DirectionVerdict) -> String {
    match v {
        DirectionVerdict::NotApplicable => "not-applicable".to_owned(),
        DirectionVerdict::NotIsolated => "not-isolated".to_owned(),
        DirectionVerdict::Allowed { rules } => {
            let mut s = "allowed by ".to_owned();
            for (i, r) in rules.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                write!(s, "{r}").expect("writing to a String cannot fail");
            }
            s
        }
        DirectionVerdict::Denied {
            isolated_by,
            reason,
        } => {
            let mut s = format!("denied ({reason}) by ");
            for (i, p) in isolated_by.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                write!(s, "{p}").expect("writing to a String cannot fail");
            }
            s
        }
    }
}
