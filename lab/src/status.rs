//! `weir lab status`: what the lab is, as a table or JSON.

use std::fmt::Write;

use serde::Serialize;

use super::state::{ExternalHostState, LabState, NodeState, Phase, PodState, ServiceState};

/// The JSON shape of `weir lab status -o json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status<'a> {
    /// Lab name.
    pub lab: &'a str,
    /// Whether `up` finished.
    pub phase: Phase,
    /// Bridge (the first node's).
    pub bridge: &'a str,
    /// Pod CIDRs (of every node).
    #[serde(rename = "podCIDRs")]
    pub pod_cidrs: Vec<String>,
    /// The nodes of a multi-node lab (each pod names its own).
    #[serde(skip_serializing_if = "<[NodeState]>::is_empty")]
    pub nodes: &'a [NodeState],
    /// Pods.
    pub pods: &'a [PodState],
    /// External hosts.
    pub external_hosts: &'a [ExternalHostState],
    /// Services.
    pub services: &'a [ServiceState],
}

impl<'a> From<&'a LabState> for Status<'a> {
    fn from(s: &'a LabState) -> Self {
        Self {
            lab: &s.lab,
            phase: s.phase,
            bridge: &s.bridge,
            pod_cidrs: s
                .segments()
                .iter()
                .flat_map(|segment| segment.nets())
                .map(|n| n.to_string())
                .collect(),
            nodes: &s.nodes,
            pods: &s.pods,
            external_hosts: &s.external_hosts,
            services: &s.services,
        }
    }
}

fn join<T: ToString>(items: &[T]) -> String {
    let s = items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    if s.is_empty() { "-".into() } else { s }
}

fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(String::len)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Human-readable status.
#[must_use]
pub fn render(s: &LabState) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "lab {} ({:?}), bridge {}, pod CIDRs {}",
        s.lab,
        s.phase,
        s.bridge,
        join(&Status::from(s).pod_cidrs)
    );
    if !s.nodes.is_empty() {
        let mut rows = vec![
            ["NODE", "POD CIDR", "ADDRESS", "BRIDGE"]
                .map(String::from)
                .to_vec(),
        ];
        for n in &s.nodes {
            rows.push(vec![
                n.name.clone(),
                n.pod_cidr.to_string(),
                n.address.to_string(),
                n.bridge.clone(),
            ]);
        }
        out.push('\n');
        out.push_str(&table(&rows));
    }
    let multi = !s.nodes.is_empty();
    let mut header = vec![
        "NAMESPACE",
        "NAME",
        "WORKLOAD",
        "IPS",
        "PORTS",
        "NETNS",
        "VETH",
        "LABELS",
    ];
    if multi {
        header.insert(2, "NODE");
    }
    let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for p in &s.pods {
        let ports: Vec<String> = p
            .ports
            .iter()
            .map(|p| format!("{}/{}", p.port, p.protocol))
            .collect();
        let labels: Vec<String> = p.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut row = vec![
            p.namespace.clone(),
            p.name.clone(),
            format!("{}/{}", p.workload.kind, p.workload.name),
            join(&p.ips),
            join(&ports),
            p.netns.clone(),
            p.host_veth.clone(),
            join(&labels),
        ];
        if multi {
            row.insert(2, p.node.clone().unwrap_or_default());
        }
        rows.push(row);
    }
    out.push('\n');
    out.push_str(&table(&rows));
    if !s.external_hosts.is_empty() {
        let mut rows = vec![
            ["EXTERNAL HOST", "IPS", "PORTS", "NETNS", "VETH"]
                .map(String::from)
                .to_vec(),
        ];
        for h in &s.external_hosts {
            let ports: Vec<String> = h
                .ports
                .iter()
                .map(|p| format!("{}/{}", p.port, p.protocol))
                .collect();
            rows.push(vec![
                h.name.clone(),
                join(&h.ips),
                join(&ports),
                h.netns.clone(),
                h.host_veth.clone(),
            ]);
        }
        out.push('\n');
        out.push_str(&table(&rows));
    }
    if !s.services.is_empty() {
        let mut rows = vec![
            ["NAMESPACE", "SERVICE", "CLUSTER-IPS", "PORTS", "BACKENDS"]
                .map(String::from)
                .to_vec(),
        ];
        for svc in &s.services {
            let ports: Vec<String> = svc
                .ports
                .iter()
                .map(|p| format!("{}/{}->{}", p.port, p.protocol, p.target_port))
                .collect();
            let mut backends: Vec<String> = svc
                .ports
                .iter()
                .flat_map(|p| &p.backends)
                .map(|b| b.pod.clone())
                .collect();
            backends.sort();
            backends.dedup();
            rows.push(vec![
                svc.namespace.clone(),
                svc.name.clone(),
                join(&svc.cluster_ips),
                join(&ports),
                join(&backends),
            ]);
        }
        out.push('\n');
        out.push_str(&table(&rows));
    }
    out
}
