//! The reflectors' objects as an [`Inventory`]: pure functions of the
//! stores' contents (and of the modes last derived, which an invalid label
//! keeps).

use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
    sync::Arc,
};

use k8s_openapi::api::{
    core::v1::{Namespace, Node, Pod, Service},
    discovery::v1::EndpointSlice,
    networking::v1::NetworkPolicy,
};
use weir_generator::{
    cluster::NAMESPACE_NAME_LABEL, datapath::Mode, identity::pod_meta, model::PodMeta,
};

use super::trim::NETWORK_READY_CONDITION;
use crate::resolve::{
    ClusterPolicies, Inventory, LocalPod,
    inventory::{cluster_service, container_ports},
};

/// The namespace label that sets a namespace's mode.
pub const MODE_LABEL: &str = "weir.dev/mode";

/// The name the API server's addresses get among the known hosts.
pub const API_SERVER: &str = "kube-apiserver";

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What the stores hold at one moment.
#[derive(Debug, Default)]
pub struct Objects {
    /// Pods.
    pub pods: Vec<Arc<Pod>>,
    /// Namespaces.
    pub namespaces: Vec<Arc<Namespace>>,
    /// Services.
    pub services: Vec<Arc<Service>>,
    /// EndpointSlices (the source watches only the API server's).
    pub slices: Vec<Arc<EndpointSlice>>,
    /// NetworkPolicies.
    pub policies: Vec<Arc<NetworkPolicy>>,
    /// Nodes.
    pub nodes: Vec<Arc<Node>>,
}

/// Whether the pod holds its IPs: it has its own network namespace and
/// has not completed (a completed pod's address goes back to the pool).
#[must_use]
pub fn holds_ip(pod: &Pod) -> bool {
    !host_network(pod) && !completed(pod)
}

fn host_network(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.host_network) == Some(true)
}

fn completed(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// When the pod's network came up (Unix ns), if the API says.
#[must_use]
pub fn network_since(pod: &Pod) -> Option<u64> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == NETWORK_READY_CONDITION && c.status == "True")?
        .last_transition_time
        .as_ref()?
        .0
        .timestamp_nanos_opt()
        .and_then(|ns| u64::try_from(ns).ok())
}

/// The key the IP ledger knows a pod by: its uid, else (an object without
/// one) its namespace and name.
#[must_use]
pub fn pod_key(pod: &Pod) -> String {
    match &pod.metadata.uid {
        Some(uid) => uid.clone(),
        None => format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        ),
    }
}

/// The pod as the resolver describes it, if it has a name.
#[must_use]
pub fn meta(pod: &Pod) -> Option<Arc<PodMeta>> {
    pod_meta(pod).map(Arc::new)
}

/// The inventory the objects describe. `modes` holds the modes derived
/// last time: a namespace whose label is invalid keeps its mode there.
pub fn inventory(
    objects: &Objects,
    node_name: &str,
    modes: &mut BTreeMap<String, Mode>,
) -> Inventory {
    let mut inventory = Inventory::default();
    add_namespaces(&mut inventory, &objects.namespaces, modes);
    add_pods(&mut inventory, &objects.pods, node_name);
    for svc in &objects.services {
        match cluster_service(Service::clone(svc)) {
            Ok(Some(service)) => inventory.services.push(service),
            Ok(None) => {}
            Err(reason) => inventory.warnings.push(format!(
                "Service {}/{}: {reason}; left out",
                svc.metadata.namespace.as_deref().unwrap_or_default(),
                svc.metadata.name.as_deref().unwrap_or_default()
            )),
        }
    }
    inventory
        .services
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut policies: Vec<NetworkPolicy> = objects
        .policies
        .iter()
        .map(|p| NetworkPolicy::clone(p))
        .collect();
    policies.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    inventory.policies = Some(ClusterPolicies(policies.into()));
    add_nodes(&mut inventory, &objects.nodes, node_name);
    add_api_server(&mut inventory, &objects.slices);
    inventory
}

fn add_namespaces(
    inventory: &mut Inventory,
    namespaces: &[Arc<Namespace>],
    modes: &mut BTreeMap<String, Mode>,
) {
    let mut next = BTreeMap::new();
    for ns in namespaces {
        let Some(name) = ns.metadata.name.clone() else {
            inventory
                .warnings
                .push("a Namespace without metadata.name; left out".to_owned());
            continue;
        };
        let mut labels = ns.metadata.labels.clone().unwrap_or_default();
        if let Some(value) = labels.get(MODE_LABEL) {
            match value.parse::<Mode>() {
                Ok(mode) => {
                    next.insert(name.clone(), mode);
                }
                Err(_) => {
                    let kept = modes.get(&name).copied();
                    inventory.warnings.push(format!(
                        "namespace {name}: label {MODE_LABEL}={value:?} is not observe, audit or \
                         enforce; the namespace keeps {}",
                        kept.map_or_else(|| "the default mode".to_owned(), |m| format!("mode {m}"))
                    ));
                    if let Some(mode) = kept {
                        next.insert(name.clone(), mode);
                    }
                }
            }
        }
        if let Some(annotations) = ns.metadata.annotations.as_ref() {
            inventory.namespace_annotations(&name, annotations);
        }
        labels
            .entry(NAMESPACE_NAME_LABEL.to_owned())
            .or_insert_with(|| name.clone());
        inventory.namespaces.insert(name, labels);
    }
    modes.clone_from(&next);
    inventory.modes = Some(next);
}

fn add_pods(inventory: &mut Inventory, pods: &[Arc<Pod>], node_name: &str) {
    for pod in pods {
        let spec_node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
        if host_network(pod) {
            // The node's address: a node, not a pod, for IP purposes.
            for ip in pod_ips(pod) {
                inventory
                    .known_hosts
                    .entry(ip)
                    .or_insert_with(|| format!("node/{}", spec_node.unwrap_or("unknown")));
            }
            continue;
        }
        if completed(pod) {
            continue;
        }
        let Some(meta) = pod_meta(pod) else {
            inventory
                .warnings
                .push("a Pod without metadata.name; left out".to_owned());
            continue;
        };
        let ports = container_ports(pod).unwrap_or_else(|reason| {
            inventory.warnings.push(format!(
                "Pod {}/{}: {reason}; its ports are left out",
                meta.namespace, meta.name
            ));
            Vec::new()
        });
        if !inventory.namespaces.contains_key(&meta.namespace) {
            // Pods can arrive before their namespace's watch event.
            inventory.namespaces.insert(
                meta.namespace.clone(),
                BTreeMap::from([(NAMESPACE_NAME_LABEL.to_owned(), meta.namespace.clone())]),
            );
        }
        inventory.pods.push(LocalPod {
            local: spec_node == Some(node_name),
            node: spec_node.map(str::to_owned),
            meta,
            host_veth: None,
            ports,
        });
    }
    inventory
        .pods
        .sort_by(|a, b| (&a.meta.namespace, &a.meta.name).cmp(&(&b.meta.namespace, &b.meta.name)));
}

fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .chain(status.pod_ip.as_deref())
        .filter_map(|s| s.parse().ok())
        .collect();
    ips.sort_unstable();
    ips.dedup();
    ips
}

fn add_nodes(inventory: &mut Inventory, nodes: &[Arc<Node>], node_name: &str) {
    let mut own = HashSet::new();
    for node in nodes {
        let Some(name) = node.metadata.name.as_deref() else {
            continue;
        };
        let addresses = node
            .status
            .iter()
            .flat_map(|s| s.addresses.iter().flatten())
            .filter_map(|a| a.address.parse::<IpAddr>().ok());
        for ip in addresses {
            inventory.known_hosts.insert(ip, format!("node/{name}"));
            if name == node_name {
                own.insert(ip);
            }
        }
    }
    inventory.node_ips = own.into_iter().collect();
    inventory.node_ips.sort_unstable();
}

/// The API server's addresses, from the `default/kubernetes` Service's
/// EndpointSlices (the API server's own endpoint reconciler writes them).
fn add_api_server(inventory: &mut Inventory, slices: &[Arc<EndpointSlice>]) {
    let ours = slices.iter().filter(|s| {
        s.metadata.namespace.as_deref() == Some("default")
            && s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .map(String::as_str)
                == Some("kubernetes")
    });
    for slice in ours {
        for endpoint in &slice.endpoints {
            for ip in endpoint.addresses.iter().filter_map(|a| a.parse().ok()) {
                inventory.known_hosts.insert(ip, API_SERVER.to_owned());
            }
        }
    }
}
