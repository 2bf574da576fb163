//! Pods from an inventory YAML file: for a machine without an API server,
//! or to replay a cluster's state (`kubectl get pods,namespaces -A -o yaml`
//! writes exactly such a file).
//!
//! The file holds Pods, Namespaces and Services, as separate YAML documents
//! and/or in `List`, `PodList`, `NamespaceList` or `ServiceList` objects.
//! Pods' container ports and Services (ClusterIPs, selector, target ports)
//! are what the learner and the evaluator need beyond IP -> pod. A Namespace not declared
//! but used by a pod is added, as the API server would have it.
//!
//! A pod running on this node tells which host-side veth is its own with the
//! annotation [`HOST_VETH_ANNOTATION`] (`weir.dev/host-veth: veth1a2b3c`):
//! without an API server there is no CNI state to ask. With
//! [`InventorySource::with_node`], only pods whose `spec.nodeName` is this
//! node may claim a veth (one file can then describe a whole cluster).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use k8s_openapi::{
    api::core::v1::{Namespace, Pod, Service},
    apimachinery::pkg::util::intstr::IntOrString,
};
use serde::Deserialize;
use weir_generator::{
    cluster::{ClusterService, NAMESPACE_NAME_LABEL, NamedPort, ServicePort, TargetPort},
    identity::pod_meta,
    manifest,
    model::Protocol,
    names,
};

use super::{Inventory, LocalPod, Source, SourceError};

/// Annotation naming a pod's host-side veth.
pub const HOST_VETH_ANNOTATION: &str = "weir.dev/host-veth";

/// A [`Source`] reading an inventory file on every snapshot.
#[derive(Clone, Debug)]
pub struct InventorySource {
    path: PathBuf,
    node_name: Option<String>,
}

impl InventorySource {
    /// Read `path`; every pod with the veth annotation may be local.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            node_name: None,
        }
    }

    /// Only pods scheduled on `node_name` may claim a host veth.
    #[must_use]
    pub fn with_node(mut self, node_name: impl Into<String>) -> Self {
        self.node_name = Some(node_name.into());
        self
    }
}

impl Source for InventorySource {
    fn snapshot(&mut self) -> Result<Inventory, SourceError> {
        let text = std::fs::read_to_string(&self.path).map_err(|source| SourceError::Read {
            path: self.path.clone(),
            source,
        })?;
        parse(&self.path, &text, self.node_name.as_deref())
    }

    fn name(&self) -> &'static str {
        "inventory"
    }
}

/// Just enough of an object to dispatch on its kind.
#[derive(Deserialize)]
struct Head {
    kind: Option<String>,
}

/// Parse an inventory file's text. `path` is only for error messages.
///
/// # Errors
/// [`SourceError::Parse`] naming the 1-based document on malformed YAML,
/// a missing or unknown `kind`, or an object that does not fit its kind.
pub fn parse(path: &Path, text: &str, node_name: Option<&str>) -> Result<Inventory, SourceError> {
    let mut inventory = Inventory::default();
    for document in manifest::documents(text) {
        let fail = |document: usize, reason: String| SourceError::Parse {
            path: path.to_owned(),
            document,
            reason,
        };
        let (index, value) = document.map_err(|(index, e)| fail(index, e.to_string()))?;
        add_object(&mut inventory, value, None, node_name).map_err(|reason| fail(index, reason))?;
    }
    // A namespace used by a pod but not declared is assumed, as the API
    // server would have it, with only its name label, and said so: a
    // namespaceSelector on other labels cannot match it.
    let declares_namespaces = !inventory.namespaces.is_empty();
    let mut undeclared = std::collections::BTreeSet::new();
    for pod in &inventory.pods {
        if !inventory.namespaces.contains_key(&pod.meta.namespace) {
            inventory
                .namespaces
                .insert(pod.meta.namespace.clone(), BTreeMap::new());
            undeclared.insert(pod.meta.namespace.clone());
        }
    }
    if declares_namespaces {
        for namespace in undeclared {
            inventory.warnings.push(format!(
                "{}: pods reference namespace {namespace:?}, which the file does not declare; \
                 assumed with only the kubernetes.io/metadata.name label",
                path.display()
            ));
        }
    }
    for (name, labels) in &mut inventory.namespaces {
        labels
            .entry(NAMESPACE_NAME_LABEL.to_owned())
            .or_insert_with(|| name.clone());
    }
    Ok(inventory)
}

/// Add one object; `item_kind` is the kind list items default to.
fn add_object(
    inventory: &mut Inventory,
    value: serde_yaml::Value,
    item_kind: Option<&str>,
    node_name: Option<&str>,
) -> Result<(), String> {
    let head = Head::deserialize(&value).map_err(|e| e.to_string())?;
    let kind = head.kind.as_deref().or(item_kind).ok_or("missing `kind`")?;
    match kind {
        "Pod" => {
            let pod: Pod = manifest::from_value(value).map_err(|e| format!("Pod: {e}"))?;
            manifest::check_meta(&pod.metadata, names::dns1123_subdomain)
                .map_err(|e| format!("Pod: {e}"))?;
            let meta = pod_meta(&pod).ok_or("Pod: missing `metadata.name`")?;
            let spec_node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            let on_this_node = match node_name {
                Some(node) => spec_node.as_deref() == Some(node),
                None => true,
            };
            let host_veth = pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(HOST_VETH_ANNOTATION))
                .filter(|_| on_this_node)
                .cloned();
            let ports = container_ports(&pod)?;
            let local = match node_name {
                Some(_) => on_this_node,
                None => host_veth.is_some(),
            };
            inventory.pods.push(LocalPod {
                meta,
                host_veth,
                ports,
                local,
                node: spec_node,
            });
        }
        "Service" => {
            let svc: Service = manifest::from_value(value).map_err(|e| format!("Service: {e}"))?;
            manifest::check_meta(&svc.metadata, names::dns1035_label)
                .map_err(|e| format!("Service: {e}"))?;
            if let Some(service) = cluster_service(svc)? {
                inventory.services.push(service);
            }
        }
        "Namespace" => {
            let ns: Namespace =
                manifest::from_value(value).map_err(|e| format!("Namespace: {e}"))?;
            manifest::check_meta(&ns.metadata, names::dns1123_label)
                .map_err(|e| format!("Namespace: {e}"))?;
            let name = ns
                .metadata
                .name
                .ok_or("Namespace: missing `metadata.name`")?;
            inventory
                .namespaces
                .insert(name, ns.metadata.labels.unwrap_or_default());
        }
        "List" | "PodList" | "NamespaceList" | "ServiceList" => {
            let default_kind = kind.strip_suffix("List").filter(|k| !k.is_empty());
            let items = manifest::list_items(&value).map_err(|e| format!("{kind}: {e}"))?;
            for (i, item) in items.into_iter().enumerate() {
                add_object(inventory, item, default_kind, node_name)
                    .map_err(|e| format!("{kind} item {i}: {e}"))?;
            }
        }
        other => {
            return Err(format!(
                "unsupported kind {other:?} (expected Pod, Namespace, Service or a List of them)"
            ));
        }
    }
    Ok(())
}

/// A protocol field: TCP when unset, as the API server defaults it.
fn protocol(value: Option<&str>, field: &str) -> Result<Protocol, String> {
    match value {
        None => Ok(Protocol::Tcp),
        Some(p) => match p.parse() {
            Ok(p @ (Protocol::Tcp | Protocol::Udp | Protocol::Sctp)) => Ok(p),
            _ => Err(format!("{field}: unsupported protocol {p:?}")),
        },
    }
}

fn port_number(value: i32, field: &str) -> Result<u16, String> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{field}: port {value} is out of range"))
}

/// `spec.containers[].ports[]` (init containers serve nothing).
pub(super) fn container_ports(pod: &Pod) -> Result<Vec<NamedPort>, String> {
    let mut ports = Vec::new();
    let containers = pod.spec.iter().flat_map(|s| &s.containers);
    for (c, container) in containers.enumerate() {
        for (i, port) in container.ports.iter().flatten().enumerate() {
            let field = format!("Pod: spec.containers[{c}].ports[{i}]");
            ports.push(NamedPort {
                name: port.name.clone(),
                port: port_number(port.container_port, &field)?,
                protocol: protocol(port.protocol.as_deref(), &field)?,
            });
        }
    }
    Ok(ports)
}

/// A Service with a virtual IP, or `None` for kinds NetworkPolicy never
/// sees traffic through (ExternalName).
pub(super) fn cluster_service(svc: Service) -> Result<Option<ClusterService>, String> {
    let name = svc
        .metadata
        .name
        .ok_or("Service: missing `metadata.name`")?;
    let namespace = svc
        .metadata
        .namespace
        .unwrap_or_else(|| "default".to_owned());
    let spec = svc.spec.unwrap_or_default();
    if spec.type_.as_deref() == Some("ExternalName") {
        return Ok(None);
    }
    let mut cluster_ips = Vec::new();
    let all = spec
        .cluster_ips
        .iter()
        .flatten()
        .map(String::as_str)
        .chain(spec.cluster_ip.as_deref());
    for ip in all.filter(|ip| !ip.is_empty() && *ip != "None") {
        let ip = ip
            .parse()
            .map_err(|_| format!("Service: spec.clusterIPs: bad address {ip:?}"))?;
        if !cluster_ips.contains(&ip) {
            cluster_ips.push(ip);
        }
    }
    let mut ports = Vec::new();
    for (i, port) in spec.ports.iter().flatten().enumerate() {
        let field = format!("Service: spec.ports[{i}]");
        let number = port_number(port.port, &field)?;
        let target = match &port.target_port {
            None => TargetPort::Number(number),
            Some(IntOrString::Int(n)) => {
                TargetPort::Number(port_number(*n, &format!("{field}.targetPort"))?)
            }
            Some(IntOrString::String(s)) => match s.parse::<u16>() {
                Ok(n) => TargetPort::Number(n),
                Err(_) => TargetPort::Name(s.clone()),
            },
        };
        ports.push(ServicePort {
            port: number,
            protocol: protocol(port.protocol.as_deref(), &field)?,
            target,
        });
    }
    Ok(Some(ClusterService {
        namespace,
        name,
        cluster_ips,
        selector: spec.selector,
        ports,
    }))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use weir_generator::model::WorkloadKind;

    use super::*;
    use crate::resolve::Resolve as _;

    const POD_A: &str = r"
apiVersion: v1
kind: Pod
metadata:
  name: web-7d9f8b6c5-abcde
  namespace: shop
  labels: {app: web, pod-template-hash: 7d9f8b6c5}
  annotations: {weir.dev/host-veth: veth1}
  ownerReferences:
  - {apiVersion: apps/v1, kind: ReplicaSet, name: web-7d9f8b6c5, uid: u1, controller: true}
spec:
  nodeName: node-1
  containers: [{name: web, image: nginx}]
status:
  podIP: 10.0.0.5
";

    fn parse_str(text: &str, node: Option<&str>) -> Result<Inventory, SourceError> {
        parse(Path::new("inv.yaml"), text, node)
    }

    #[test]
    fn a_pods_node_is_kept_and_answered_for_its_address() {
        let inv = parse_str(POD_A, Some("node-2")).unwrap();
        assert_eq!(inv.pods[0].node.as_deref(), Some("node-1"));
        assert!(!inv.pods[0].local);
        let resolver = crate::resolve::Resolver::new(&inv, |_| None);
        let ip: std::net::IpAddr = "10.0.0.5".parse().unwrap();
        let pod = resolver.pod_by_ip(ip).unwrap();
        assert_eq!(resolver.node_of(ip, &pod).as_deref(), Some("node-1"));
        // Another pod found at that address (an earlier holder) is not
        // given this pod's node.
        let mut other = (*pod).clone();
        other.name = "web-7d9f8b6c5-old".to_owned();
        assert_eq!(resolver.node_of(ip, &other), None);
    }

    #[test]
    fn undeclared_namespaces_are_assumed_and_reported() {
        let text =
            format!("{POD_A}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: other}}\n");
        let inv = parse_str(&text, None).unwrap();
        assert_eq!(
            inv.namespaces["shop"]["kubernetes.io/metadata.name"],
            "shop"
        );
        assert_eq!(inv.warnings.len(), 1, "{:?}", inv.warnings);
        assert!(inv.warnings[0].contains("inv.yaml") && inv.warnings[0].contains("\"shop\""));
        // A file of pods alone declares no namespaces: nothing to warn about.
        assert!(parse_str(POD_A, None).unwrap().warnings.is_empty());
    }

    #[test]
    fn reads_documents_and_lists() {
        let text = format!(
            "{POD_A}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: shop, labels: {{team: a}}}}\n---\n\
             apiVersion: v1\nkind: PodList\nitems:\n- metadata: {{name: db-0, namespace: data}}\n  status: {{podIP: 10.0.1.9}}\n---\n\
             apiVersion: v1\nkind: List\nitems:\n- {{apiVersion: v1, kind: Namespace, metadata: {{name: data}}}}\n---\n"
        );
        let inv = parse_str(&text, None).unwrap();
        assert_eq!(inv.pods.len(), 2);
        let web = &inv.pods[0];
        assert_eq!(web.meta.workload.kind, WorkloadKind::Deployment);
        assert_eq!(web.meta.workload.name, "web");
        assert_eq!(web.host_veth.as_deref(), Some("veth1"));
        assert_eq!(
            web.meta.ips,
            ["10.0.0.5".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(inv.pods[1].meta.workload.kind, WorkloadKind::Pod);
        assert_eq!(inv.namespaces["shop"]["team"], "a");
        assert_eq!(inv.namespaces["shop"][NAMESPACE_NAME_LABEL], "shop");
        assert_eq!(inv.namespaces["data"][NAMESPACE_NAME_LABEL], "data");
    }

    #[test]
    fn reads_container_ports_and_services() {
        let text = "kind: Pod\nmetadata: {name: dns, namespace: kube-system}\n\
            spec: {containers: [{name: c, ports: [{name: dns, containerPort: 53, protocol: UDP}, {containerPort: 9153}]}]}\n---\n\
            kind: ServiceList\nitems:\n\
            - metadata: {name: kube-dns, namespace: kube-system}\n  \
              spec: {clusterIP: 10.96.0.10, clusterIPs: [10.96.0.10, 'fd00:96::a'], selector: {k8s-app: kube-dns}, \
              ports: [{port: 53, protocol: UDP, targetPort: dns}, {port: 9153, targetPort: 9153}, {port: 80}]}\n\
            - metadata: {name: ext}\n  spec: {type: ExternalName, externalName: example.com}\n\
            - metadata: {name: headless}\n  spec: {clusterIP: None, selector: {a: b}}\n";
        let inv = parse_str(text, None).unwrap();
        assert_eq!(
            inv.pods[0].ports,
            [
                NamedPort {
                    name: Some("dns".into()),
                    port: 53,
                    protocol: Protocol::Udp
                },
                NamedPort {
                    name: None,
                    port: 9153,
                    protocol: Protocol::Tcp
                }
            ]
        );
        assert_eq!(inv.services.len(), 2, "ExternalName is left out");
        let dns = &inv.services[0];
        assert_eq!(dns.cluster_ips.len(), 2);
        assert_eq!(dns.ports[0].target, TargetPort::Name("dns".into()));
        assert_eq!(dns.ports[1].target, TargetPort::Number(9153));
        assert_eq!(dns.ports[2].target, TargetPort::Number(80));
        assert!(inv.services[1].cluster_ips.is_empty());
        let cluster = inv.cluster();
        assert_eq!(cluster.pods.len(), 1);
        assert_eq!(cluster.services.len(), 2);

        let bad = "kind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, ports: [{containerPort: 70000}]}]}\n";
        let err = parse_str(bad, None).unwrap_err().to_string();
        assert!(err.contains("spec.containers[0].ports[0]"), "{err}");
    }

    #[test]
    fn only_pods_on_this_node_claim_a_veth() {
        let here = parse_str(POD_A, Some("node-1")).unwrap();
        assert_eq!(here.pods[0].host_veth.as_deref(), Some("veth1"));
        let elsewhere = parse_str(POD_A, Some("node-2")).unwrap();
        assert_eq!(elsewhere.pods[0].host_veth, None);
    }

    #[test]
    fn errors_name_the_file_and_the_document() {
        let cases = [
            (
                "kind: Pod\nmetadata: {name: a}\n---\nkind: Deployment\n",
                2,
                "unsupported kind",
            ),
            ("kind: Pod\nmetadata: {name: a}\n---\n- [unclosed\n", 2, ""),
            ("metadata: {name: a}\n", 1, "missing `kind`"),
            (
                "kind: Pod\nmetadata: {labels: {a: b}}\n",
                1,
                "metadata.name",
            ),
            ("kind: PodList\nitems: 3\n", 1, "items: expected a list"),
            ("kind: Pod\nmetadata: {name: 3}\nspec: 7\n", 1, "Pod:"),
            (
                "kind: Pod\nmetadata: {name: a}\n---\nkind: Pod\nmetadata: {name: b, namespce: x}\n",
                2,
                "Pod: metadata.namespce: unknown field",
            ),
            (
                "kind: PodList\nitemz: []\n",
                1,
                "PodList: itemz: unknown field",
            ),
            (
                "kind: Namespace\nmetadata: {name: \"a b\"}\n",
                1,
                "Namespace: metadata.name: \"a b\" is not a valid DNS-1123 label",
            ),
            (
                "kind: Pod\nmetadata: {name: a, namespace: \"../x\"}\n",
                1,
                "Pod: metadata.namespace",
            ),
        ];
        for (text, document, needle) in cases {
            let err = parse_str(text, None).unwrap_err();
            let message = err.to_string();
            assert!(
                matches!(err, SourceError::Parse { document: d, .. } if d == document),
                "{text:?}: {message}"
            );
            assert!(message.starts_with("inv.yaml: document "), "{message}");
            assert!(message.contains(needle), "{text:?}: {message}");
        }
    }

    #[test]
    fn source_reads_the_file_and_reports_missing_ones() {
        let dir = std::env::temp_dir().join(format!("weir-inventory-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("inventory.yaml");
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(POD_A.as_bytes()))
            .unwrap();
        let mut source = InventorySource::new(&path).with_node("node-1");
        assert_eq!(source.snapshot().unwrap().pods.len(), 1);
        assert_eq!(source.name(), "inventory");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(source.snapshot(), Err(SourceError::Read { .. })));
    }
}
