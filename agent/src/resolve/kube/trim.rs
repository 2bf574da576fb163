//! Objects cut down to what the resolver, the learner and the enforcer
//! read, before the reflectors store them: a node's cache of every pod in
//! the cluster must stay small. `managedFields` and annotations (the
//! `last-applied-configuration` one repeats the whole object) go first;
//! then each kind keeps only the fields listed here.

use k8s_openapi::{
    api::{
        core::v1::{
            Container, ContainerPort, Namespace, Node, NodeAddress, NodeStatus, Pod, PodCondition,
            PodSpec, PodStatus, Service, ServiceSpec,
        },
        discovery::v1::{Endpoint, EndpointSlice},
        networking::v1::NetworkPolicy,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

/// The pod condition whose transition marks the pod's network as set up:
/// from then on the pod holds its IP.
pub const NETWORK_READY_CONDITION: &str = "PodReadyToStartContainers";

/// The prefix of the namespace annotations weir reads.
pub const WEIR_ANNOTATION_PREFIX: &str = "weir.dev/";

/// Drops what no reader needs from any object's metadata.
pub fn meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    meta.annotations = None;
    meta.finalizers = None;
    meta.generate_name = None;
}

/// A pod keeps: name, namespace, uid, labels, its controller, the node,
/// `hostNetwork`, container names and ports, phase, IPs and the network
/// readiness condition.
pub fn pod(pod: &mut Pod) {
    meta(&mut pod.metadata);
    if let Some(owners) = &mut pod.metadata.owner_references {
        owners.retain(|o| o.controller == Some(true));
    }
    if let Some(spec) = pod.spec.take() {
        pod.spec = Some(PodSpec {
            node_name: spec.node_name,
            host_network: spec.host_network,
            containers: spec
                .containers
                .into_iter()
                .map(|c| Container {
                    name: c.name,
                    ports: c.ports.map(|ports| {
                        ports
                            .into_iter()
                            .map(|p| ContainerPort {
                                host_ip: None,
                                host_port: None,
                                ..p
                            })
                            .collect()
                    }),
                    ..Container::default()
                })
                .collect(),
            ..PodSpec::default()
        });
    }
    if let Some(status) = pod.status.take() {
        pod.status = Some(PodStatus {
            phase: status.phase,
            pod_ip: status.pod_ip,
            pod_ips: status.pod_ips,
            conditions: status.conditions.map(|conditions| {
                conditions
                    .into_iter()
                    .filter(|c| c.type_ == NETWORK_READY_CONDITION)
                    .map(|c| PodCondition {
                        message: None,
                        reason: None,
                        last_probe_time: None,
                        ..c
                    })
                    .collect()
            }),
            ..PodStatus::default()
        });
    }
}

/// A namespace keeps its name and labels.
pub fn namespace(ns: &mut Namespace) {
    // weir's own annotations (the guard's settings) are read; the rest go.
    let weir: Option<std::collections::BTreeMap<String, String>> =
        ns.metadata.annotations.take().map(|all| {
            all.into_iter()
                .filter(|(k, _)| k.starts_with(WEIR_ANNOTATION_PREFIX))
                .collect()
        });
    meta(&mut ns.metadata);
    ns.metadata.annotations = weir.filter(|a| !a.is_empty());
    ns.spec = None;
    ns.status = None;
}

/// A Service keeps its type, virtual IPs, selector and ports.
pub fn service(svc: &mut Service) {
    meta(&mut svc.metadata);
    svc.status = None;
    if let Some(spec) = svc.spec.take() {
        svc.spec = Some(ServiceSpec {
            type_: spec.type_,
            cluster_ip: spec.cluster_ip,
            cluster_ips: spec.cluster_ips,
            selector: spec.selector,
            ports: spec.ports,
            ..ServiceSpec::default()
        });
    }
}

/// An EndpointSlice keeps its labels and its endpoints' addresses and
/// readiness.
pub fn endpoint_slice(slice: &mut EndpointSlice) {
    meta(&mut slice.metadata);
    slice.ports = None;
    for endpoint in &mut slice.endpoints {
        *endpoint = Endpoint {
            addresses: std::mem::take(&mut endpoint.addresses),
            conditions: endpoint.conditions.take(),
            ..Endpoint::default()
        };
    }
}

/// A NetworkPolicy keeps everything the evaluator reads (its spec).
pub fn network_policy(policy: &mut NetworkPolicy) {
    meta(&mut policy.metadata);
}

/// A node keeps its name and addresses (its status otherwise lists every
/// image it holds).
pub fn node(node: &mut Node) {
    meta(&mut node.metadata);
    node.metadata.labels = None;
    node.spec = None;
    let addresses = node
        .status
        .take()
        .and_then(|s| s.addresses)
        .map(|addresses| {
            addresses
                .into_iter()
                .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
                .map(|a| NodeAddress {
                    address: a.address,
                    type_: a.type_,
                })
                .collect()
        });
    node.status = Some(NodeStatus {
        addresses,
        ..NodeStatus::default()
    });
}
