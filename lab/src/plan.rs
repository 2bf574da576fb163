//! From a validated spec to the lab's full description: addresses,
//! interface and netns names, service endpoints. Pure, so `up` can print
//! or check the plan before touching the kernel.

use std::{collections::BTreeMap, net::IpAddr};

use ipnet::IpNet;
use weir_generator::model::Protocol;

use super::{
    error::{LabError, Result},
    ipam::{Allocator, node_address, offset_of},
    names::LabName,
    spec::{ClusterIp, LabSpec, PortSpec, TargetPort},
    state::{
        Backend, ExternalHostState, LabState, NodeState, Phase, PodState, Port, STATE_VERSION,
        ServicePortState, ServiceState, run_dir,
    },
};

fn port(p: &PortSpec) -> Port {
    Port {
        name: p.name.clone(),
        port: p.port,
        protocol: p.protocol,
    }
}

/// Describe the lab `spec` makes.
///
/// # Errors
/// [`LabError::Exhausted`] when a range is too small.
pub fn plan(lab: &LabName, spec: &LabSpec) -> Result<LabState> {
    let settings = &spec.settings;
    let v6 = settings.pod_cidr_v6.map(IpNet::V6);
    // Each node hands out its own range; offset 1 is the node (bridge),
    // pods start at 2. A one-node lab's node has no name.
    let mut alloc4: BTreeMap<Option<&str>, (IpNet, Allocator)> = BTreeMap::new();
    if settings.nodes.is_empty() {
        let net = IpNet::V4(settings.pod_cidr);
        alloc4.insert(None, (net, Allocator::new(net, 2)));
    }
    for node in &settings.nodes {
        let net = IpNet::V4(node.pod_cidr);
        alloc4.insert(Some(&node.name), (net, Allocator::new(net, 2)));
    }
    let mut alloc6 = v6.map(|net| Allocator::new(net, 2));
    for ip in spec.pods.iter().flat_map(|p| &p.meta.ips) {
        for (_, a) in alloc4.values_mut() {
            a.take(*ip);
        }
        if let Some(a) = &mut alloc6 {
            a.take(*ip);
        }
    }
    let exhausted = |net: IpNet, what: &str| LabError::Exhausted {
        range: net.to_string(),
        what: what.to_owned(),
    };
    let mut pods = Vec::with_capacity(spec.pods.len());
    for pod in &spec.pods {
        let meta = &pod.meta;
        let key = format!("{}/{}", meta.namespace, meta.name);
        let (v4, node_alloc) =
            alloc4
                .get_mut(&pod.node.as_deref())
                .ok_or_else(|| LabError::Exhausted {
                    range: format!("node {}", pod.node.as_deref().unwrap_or("-")),
                    what: key.clone(),
                })?;
        let v4 = *v4;
        let mut ip4 = meta.ips.iter().copied().find(IpAddr::is_ipv4);
        let mut ip6 = meta.ips.iter().copied().find(IpAddr::is_ipv6);
        if ip4.is_none() {
            ip4 = Some(node_alloc.next_free().ok_or_else(|| exhausted(v4, &key))?);
        }
        if let (None, Some(a), Some(net)) = (ip6, &mut alloc6, v6) {
            // Same host offset as the IPv4 address when free: easy to read.
            let paired = ip4
                .and_then(|ip| offset_of(v4, ip))
                .and_then(|o| a.take_offset(o));
            ip6 = Some(
                paired
                    .or_else(|| a.next_free())
                    .ok_or_else(|| exhausted(net, &key))?,
            );
        }
        pods.push(PodState {
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            labels: meta.labels.clone(),
            workload: meta.workload.clone(),
            ips: ip4.into_iter().chain(ip6).collect(),
            netns: lab.pod_netns(&meta.namespace, &meta.name),
            host_veth: lab.host_veth(&meta.namespace, &meta.name),
            ports: pod.ports.iter().map(port).collect(),
            node: pod.node.clone(),
        });
    }
    let nodes = settings
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            Ok(NodeState {
                name: n.name.clone(),
                pod_cidr: n.pod_cidr,
                // The first node's bridge is the lab's, as in a one-node lab.
                bridge: if i == 0 {
                    lab.bridge()
                } else {
                    lab.node_bridge(&n.name)
                },
                address: node_address(IpNet::V4(n.pod_cidr))
                    .ok_or_else(|| exhausted(IpNet::V4(n.pod_cidr), "the node address"))?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let external_hosts = spec
        .external_hosts
        .iter()
        .map(|h| ExternalHostState {
            name: h.name.clone(),
            ips: h.ips.clone(),
            netns: lab.external_netns(&h.name),
            // `~` cannot occur in a Kubernetes namespace: no pod collides.
            host_veth: lab.host_veth("~external", &h.name),
            ports: h.ports.iter().map(port).collect(),
            dns_names: h.dns_names.clone(),
            dns_ttl: h.dns_ttl,
        })
        .collect();
    let services = services(spec, &pods)?;
    Ok(LabState {
        version: STATE_VERSION,
        lab: lab.to_string(),
        phase: Phase::Creating,
        bridge: lab.bridge(),
        pod_cidr: settings.pod_cidr,
        pod_cidr_v6: settings.pod_cidr_v6,
        service_cidr: settings.service_cidr,
        service_cidr_v6: settings.service_cidr_v6,
        nodes,
        run_dir: run_dir(lab),
        sources: spec.sources.clone(),
        namespaces: spec.namespaces.clone(),
        namespace_annotations: spec.namespace_annotations.clone(),
        pods,
        external_hosts,
        services,
        resources: Vec::new(),
    })
}

fn services(spec: &LabSpec, pods: &[PodState]) -> Result<Vec<ServiceState>> {
    let settings = &spec.settings;
    let v4 = IpNet::V4(settings.service_cidr);
    let v6 = settings.service_cidr_v6.map(IpNet::V6);
    // Offsets below 10 are left for well-known addresses (`kubernetes` at
    // .1, kube-dns at .10 in kubeadm clusters), given explicitly.
    let mut alloc4 = Allocator::new(v4, 11);
    let mut alloc6 = v6.map(|net| Allocator::new(net, 11));
    for svc in &spec.services {
        if let ClusterIp::Fixed(ips) = &svc.cluster_ip {
            for ip in ips {
                alloc4.take(*ip);
                if let Some(a) = &mut alloc6 {
                    a.take(*ip);
                }
            }
        }
    }
    let mut out = Vec::with_capacity(spec.services.len());
    for svc in &spec.services {
        let key = format!("{}/{}", svc.namespace, svc.name);
        let cluster_ips = match &svc.cluster_ip {
            ClusterIp::Headless => Vec::new(),
            ClusterIp::Fixed(ips) => ips.clone(),
            ClusterIp::Auto => {
                let ip4 = alloc4.next_free().ok_or_else(|| LabError::Exhausted {
                    range: v4.to_string(),
                    what: key.clone(),
                })?;
                let ip6 = match (&mut alloc6, v6) {
                    (Some(a), Some(net)) => {
                        Some(a.next_free().ok_or_else(|| LabError::Exhausted {
                            range: net.to_string(),
                            what: key.clone(),
                        })?)
                    }
                    _ => None,
                };
                std::iter::once(ip4).chain(ip6).collect()
            }
        };
        let selected: Vec<&PodState> = match &svc.selector {
            Some(sel) if !sel.is_empty() => pods
                .iter()
                .filter(|p| p.namespace == svc.namespace)
                .filter(|p| sel.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
                .collect(),
            _ => Vec::new(),
        };
        let ports = svc
            .ports
            .iter()
            .map(|sp| {
                let backends = selected
                    .iter()
                    .filter_map(|pod| {
                        let port = target_port(pod, &sp.target, sp.protocol)?;
                        Some(pod.ips.iter().map(move |ip| Backend {
                            pod: pod.key(),
                            ip: *ip,
                            port,
                        }))
                    })
                    .flatten()
                    .collect();
                ServicePortState {
                    name: sp.name.clone(),
                    port: sp.port,
                    protocol: sp.protocol,
                    target_port: match &sp.target {
                        TargetPort::Number(n) => n.to_string(),
                        TargetPort::Name(n) => n.clone(),
                    },
                    backends,
                }
            })
            .collect();
        out.push(ServiceState {
            namespace: svc.namespace.clone(),
            name: svc.name.clone(),
            cluster_ips,
            selector: svc.selector.clone(),
            ports,
        });
    }
    Ok(out)
}

/// The port a backend pod serves `target` on: numbers are taken as is (as
/// Kubernetes does, whether or not the pod declares them), names are looked
/// up among the pod's ports.
fn target_port(pod: &PodState, target: &TargetPort, protocol: Protocol) -> Option<u16> {
    match target {
        TargetPort::Number(n) => Some(*n),
        TargetPort::Name(name) => pod
            .ports
            .iter()
            .find(|p| p.protocol == protocol && p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.port),
    }
}
