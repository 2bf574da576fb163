//! A naive NetworkPolicy evaluator: a direct transcription of the API
//! reference, written apart from `weir_generator::eval` and as simply as
//! possible (no compilation, no precomputation, no shared helpers), to
//! check the real evaluator against.
//!
//! It assumes valid policies and answers one bool per direction.

use std::{collections::BTreeMap, net::IpAddr};

use k8s_openapi::{
    api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort},
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use weir_generator::{
    cluster::{Cluster, ClusterPod},
    eval::Endpoint,
    model::Protocol,
};

/// Whether the source's egress and the destination's ingress allow the flow.
pub fn evaluate(
    policies: &[NetworkPolicy],
    cluster: &Cluster,
    source: Endpoint<'_>,
    destination: Endpoint<'_>,
    protocol: Protocol,
    port: u16,
) -> (bool, bool) {
    let egress = match source {
        Endpoint::External(_) => true,
        Endpoint::Pod(pod) | Endpoint::PodAt(pod, _) => pod_allows(
            policies,
            cluster,
            pod,
            "Egress",
            destination,
            destination,
            protocol,
            port,
        ),
    };
    let ingress = match destination {
        Endpoint::External(_) => true,
        Endpoint::Pod(pod) | Endpoint::PodAt(pod, _) => pod_allows(
            policies,
            cluster,
            pod,
            "Ingress",
            source,
            destination,
            protocol,
            port,
        ),
    };
    (egress, ingress)
}

/// "A pod is isolated for a direction if any policy that selects it has
/// that direction in its policyTypes; then traffic is allowed if any rule
/// of any such policy allows it."
#[expect(clippy::too_many_arguments, reason = "a transcription, kept flat")]
fn pod_allows(
    policies: &[NetworkPolicy],
    cluster: &Cluster,
    pod: &ClusterPod,
    direction: &str,
    other: Endpoint<'_>,
    destination: Endpoint<'_>,
    protocol: Protocol,
    port: u16,
) -> bool {
    let mut isolated = false;
    for policy in policies {
        let policy_namespace = policy
            .metadata
            .namespace
            .clone()
            .expect("a validated policy has a namespace");
        if policy_namespace != pod.meta.namespace {
            continue;
        }
        let spec = policy.spec.clone().unwrap_or_default();
        let pod_selector = spec.pod_selector.clone().unwrap_or_default();
        if !selector_matches(&pod_selector, &pod.meta.labels) {
            continue;
        }
        let mut types = spec.policy_types.clone().unwrap_or_default();
        if types.is_empty() {
            types.push("Ingress".to_owned());
            if !spec.egress.clone().unwrap_or_default().is_empty() {
                types.push("Egress".to_owned());
            }
        }
        if !types.iter().any(|t| t == direction) {
            continue;
        }
        isolated = true;
        let rules: Vec<(Vec<NetworkPolicyPeer>, Vec<NetworkPolicyPort>)> = if direction == "Ingress"
        {
            spec.ingress
                .unwrap_or_default()
                .into_iter()
                .map(|r| (r.from.unwrap_or_default(), r.ports.unwrap_or_default()))
                .collect()
        } else {
            spec.egress
                .unwrap_or_default()
                .into_iter()
                .map(|r| (r.to.unwrap_or_default(), r.ports.unwrap_or_default()))
                .collect()
        };
        for (peers, ports) in rules {
            let by_selector = peers.is_empty()
                || peers.iter().any(|p| {
                    p.ip_block.is_none() && peer_matches(p, &policy_namespace, cluster, other)
                });
            let by_block = peers.iter().any(|p| {
                p.ip_block.is_some() && peer_matches(p, &policy_namespace, cluster, other)
            });
            let peer_ok = by_selector || by_block;
            // weir's restriction: an egress rule's named port resolves on a
            // destination pod that a selector matched, not an ipBlock only.
            let named_ok = direction == "Ingress" || by_selector;
            let port_ok = ports.is_empty()
                || ports
                    .iter()
                    .any(|p| port_matches(p, destination, named_ok, protocol, port));
            if peer_ok && port_ok {
                return true;
            }
        }
    }
    !isolated
}

fn peer_matches(
    peer: &NetworkPolicyPeer,
    policy_namespace: &str,
    cluster: &Cluster,
    other: Endpoint<'_>,
) -> bool {
    if let Some(block) = &peer.ip_block {
        // ipBlock: any address, a pod's too (a pod as a whole: any of its
        // addresses).
        let ips = match other {
            Endpoint::External(ip) | Endpoint::PodAt(_, ip) => vec![ip],
            Endpoint::Pod(pod) => pod.meta.ips.clone(),
        };
        return ips.into_iter().any(|ip| {
            in_cidr(ip, &block.cidr)
                && !block
                    .except
                    .clone()
                    .unwrap_or_default()
                    .iter()
                    .any(|e| in_cidr(ip, e))
        });
    }
    let (Endpoint::Pod(pod) | Endpoint::PodAt(pod, _)) = other else {
        return false;
    };
    let namespace_ok = match &peer.namespace_selector {
        None => pod.meta.namespace == policy_namespace,
        Some(selector) => {
            let mut ns_labels = cluster
                .namespaces
                .get(&pod.meta.namespace)
                .cloned()
                .unwrap_or_default();
            ns_labels
                .entry("kubernetes.io/metadata.name".to_owned())
                .or_insert_with(|| pod.meta.namespace.clone());
            selector_matches(selector, &ns_labels)
        }
    };
    let pod_ok = match &peer.pod_selector {
        None => true,
        Some(selector) => selector_matches(selector, &pod.meta.labels),
    };
    namespace_ok && pod_ok
}

fn port_matches(
    rule_port: &NetworkPolicyPort,
    destination: Endpoint<'_>,
    named_ok: bool,
    protocol: Protocol,
    port: u16,
) -> bool {
    let rule_protocol = rule_port
        .protocol
        .clone()
        .unwrap_or_else(|| "TCP".to_owned());
    // ICMPv4/ICMPv6 never equal TCP, UDP or SCTP.
    if protocol.as_str() != rule_protocol {
        return false;
    }
    match &rule_port.port {
        None => true,
        Some(IntOrString::Int(start)) => {
            let end = rule_port.end_port.unwrap_or(*start);
            *start <= i32::from(port) && i32::from(port) <= end
        }
        Some(IntOrString::String(name)) => match destination {
            Endpoint::External(_) => false,
            _ if !named_ok => false,
            Endpoint::Pod(pod) | Endpoint::PodAt(pod, _) => pod.ports.iter().any(|cp| {
                cp.name.as_deref() == Some(name.as_str())
                    && cp.protocol.as_str() == rule_protocol
                    && cp.port == port
            }),
        },
    }
}

fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    for (k, v) in selector.match_labels.clone().unwrap_or_default() {
        if labels.get(&k) != Some(&v) {
            return false;
        }
    }
    for req in selector.match_expressions.clone().unwrap_or_default() {
        let values = req.values.clone().unwrap_or_default();
        let value = labels.get(&req.key);
        let ok = match req.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => panic!("reference: unknown operator {other}"),
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Whether `ip` is in `cidr` (`address/prefix`), bit by bit.
fn in_cidr(ip: IpAddr, cidr: &str) -> bool {
    let (address, prefix) = cidr.split_once('/').expect("a CIDR is address/prefix");
    let network: IpAddr = address.parse().expect("a CIDR's address");
    let prefix: u32 = prefix.parse().expect("a CIDR's prefix length");
    let (a, b, width) = match (ip, network) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(a.to_bits()), u128::from(b.to_bits()), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (a.to_bits(), b.to_bits(), 128),
        _ => return false,
    };
    (0..prefix).all(|i| {
        let bit = width - 1 - i;
        (a >> bit) & 1 == (b >> bit) & 1
    })
}
