//! Reading lab YAML: ordinary Kubernetes objects (Namespace, Pod,
//! Deployment, StatefulSet, DaemonSet, Service, `kind: List`) plus two
//! lab-only kinds (`Lab`, `ExternalHost`, group [`LAB_API_VERSION`]) into
//! a validated [`LabSpec`].
//!
//! Controllers are expanded the way the cluster would: a Deployment becomes
//! `replicas` pods named `<name>-<pod-template-hash>-<suffix>` owned by the
//! ReplicaSet `<name>-<pod-template-hash>`, so that
//! [`weir_generator::identity::pod_meta`] derives their workload exactly as
//! it does for a real cluster. Every error names the file, the 1-based
//! document and, where it can, the field.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, Deployment, StatefulSet},
        core::v1::{Container, Namespace, Pod, PodTemplateSpec, Service},
    },
    apimachinery::pkg::{
        apis::meta::v1::{ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use serde::Deserialize;
use weir_generator::{identity, manifest, model::PodMeta, model::Protocol, names};

use super::names::safe_encode;

/// API group and version of the lab-only kinds.
pub const LAB_API_VERSION: &str = "lab.weir.dev/v1alpha1";

/// Default IPv4 pod CIDR.
pub const DEFAULT_POD_CIDR: &str = "10.88.0.0/16";
/// Default IPv6 pod CIDR (dual-stack labs).
pub const DEFAULT_POD_CIDR_V6: &str = "fd00:88::/64";
/// Default IPv4 service CIDR.
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/16";
/// Default IPv6 service CIDR (dual-stack labs).
pub const DEFAULT_SERVICE_CIDR_V6: &str = "fd00:96::/112";

/// The documentation ranges (RFC 5737, RFC 3849): the only addresses
/// external hosts may have, so a lab can never shadow a real destination.
pub const DOCUMENTATION_RANGES: [&str; 4] = [
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "2001:db8::/32",
];

/// The documentation ranges, parsed.
#[must_use]
pub fn documentation_ranges() -> Vec<IpNet> {
    DOCUMENTATION_RANGES
        .iter()
        .filter_map(|r| r.parse().ok())
        .collect()
}

/// Where an object came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The file.
    pub path: PathBuf,
    /// 1-based document index in the file.
    pub document: usize,
    /// 0-based index in a `kind: List`'s `items`.
    pub item: Option<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.path.display(), self.document)?;
        if let Some(item) = self.item {
            write!(f, ", items[{item}]")?;
        }
        Ok(())
    }
}

/// Lab input that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The YAML itself is malformed.
    #[error("{origin}: malformed YAML")]
    Yaml {
        /// Where.
        origin: Origin,
        /// The parser's complaint.
        #[source]
        source: serde_yaml::Error,
    },
    /// An object is well-formed YAML but not acceptable.
    #[error("{origin}: {field}: {reason}")]
    Invalid {
        /// Where.
        origin: Origin,
        /// The field at fault (`kind`, `spec.ips[0]`, ...).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// No pods and no external hosts: nothing to bring up.
    #[error("no pods or external hosts in {files}")]
    Empty {
        /// The files read.
        files: String,
    },
}

fn invalid(origin: &Origin, field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        origin: origin.clone(),
        field: field.into(),
        reason: reason.into(),
    }
}

/// A node of a multi-node lab (`spec.nodes[]` of the `Lab` kind).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    /// `name`: what pods' `spec.nodeName` and `weir agent --node-name` say.
    pub name: String,
    /// `podCIDR`: its pods' addresses; its first address is the node's
    /// (its bridge's).
    pub pod_cidr: Ipv4Net,
}

/// Network settings of a lab (from the `Lab` kind, else defaults).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// IPv4 pod CIDR; its first address is the node (bridge). In a
    /// multi-node lab, the first node's.
    pub pod_cidr: Ipv4Net,
    /// IPv6 pod CIDR, when dual-stack.
    pub pod_cidr_v6: Option<Ipv6Net>,
    /// IPv4 ClusterIP range.
    pub service_cidr: Ipv4Net,
    /// IPv6 ClusterIP range, when dual-stack.
    pub service_cidr_v6: Option<Ipv6Net>,
    /// The nodes of a multi-node lab, in the order declared (the first is
    /// where pods naming none run); empty for a one-node lab.
    pub nodes: Vec<NodeSpec>,
}

/// A port a pod or external host answers on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortSpec {
    /// `containerPort`.
    pub port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The port's name, for Services' named `targetPort`s.
    pub name: Option<String>,
}

/// A pod to create.
#[derive(Clone, Debug)]
pub struct PodSpec {
    /// Where it was declared (the controller for generated pods).
    pub origin: Origin,
    /// Identity, labels, workload and any addresses from `status`.
    pub meta: PodMeta,
    /// Ports to answer on.
    pub ports: Vec<PortSpec>,
    /// The node it runs on (`spec.nodeName`, a controller's template's, or
    /// the first node); `None` in a one-node lab.
    pub node: Option<String>,
}

/// A host outside the cluster.
#[derive(Clone, Debug)]
pub struct ExternalHostSpec {
    /// Where it was declared.
    pub origin: Origin,
    /// `metadata.name`.
    pub name: String,
    /// Its addresses, all in documentation ranges.
    pub ips: Vec<IpAddr>,
    /// Ports to answer on.
    pub ports: Vec<PortSpec>,
    /// Names the lab's DNS (kube-system/coredns) answers with `ips`.
    pub dns_names: Vec<String>,
    /// The TTL of those answers, in seconds.
    pub dns_ttl: u32,
}

/// The TTL of an external host's DNS answers when `spec.dnsTTL` is not given.
pub const DEFAULT_DNS_TTL: u32 = 30;

/// A Service's `targetPort`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetPort {
    /// A port number.
    Number(u16),
    /// A container port name.
    Name(String),
}

/// One port of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePortSpec {
    /// The port's name.
    pub name: Option<String>,
    /// The Service port.
    pub port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Where the backends listen.
    pub target: TargetPort,
}

/// How a Service's ClusterIP is chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterIp {
    /// Assign from the service CIDR(s).
    Auto,
    /// Headless (`clusterIP: None`): no virtual IP, no DNAT.
    Headless,
    /// Given in the manifest.
    Fixed(Vec<IpAddr>),
}

/// A ClusterIP Service.
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    /// Where it was declared.
    pub origin: Origin,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `spec.clusterIP(s)`.
    pub cluster_ip: ClusterIp,
    /// `spec.selector`; `None` selects nothing (no endpoints).
    pub selector: Option<BTreeMap<String, String>>,
    /// Ports.
    pub ports: Vec<ServicePortSpec>,
}

/// Everything a set of lab files declares, validated.
#[derive(Clone, Debug)]
pub struct LabSpec {
    /// The files, in the order given.
    pub sources: Vec<PathBuf>,
    /// Network settings.
    pub settings: Settings,
    /// Namespaces and their labels (with `kubernetes.io/metadata.name`),
    /// including those only referenced by objects.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// The annotations of declared namespaces that have some (the agent
    /// reads weir's own: the guard's and automatic promotion's settings).
    pub namespace_annotations: BTreeMap<String, BTreeMap<String, String>>,
    /// Pods, controllers expanded, sorted by namespace and name.
    pub pods: Vec<PodSpec>,
    /// External hosts, sorted by name.
    pub external_hosts: Vec<ExternalHostSpec>,
    /// Services, sorted by namespace and name.
    pub services: Vec<ServiceSpec>,
}

/// Read and validate lab files.
///
/// # Errors
/// The first problem found, naming file, document and field.
pub fn parse_files(paths: &[PathBuf]) -> Result<LabSpec, SpecError> {
    let mut builder = Builder::default();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.clone(),
            source,
        })?;
        builder.add_text(path, &text)?;
    }
    builder.finish(paths)
}

/// Parse lab YAML held in memory (`path` only names it in errors).
///
/// # Errors
/// The first problem found.
pub fn parse_str(path: &Path, text: &str) -> Result<LabSpec, SpecError> {
    let mut builder = Builder::default();
    builder.add_text(path, text)?;
    builder.finish(&[path.to_owned()])
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LabObject {
    #[serde(rename = "apiVersion")]
    _api_version: String,
    #[serde(rename = "kind")]
    _kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: LabKindSpec,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabKindSpec {
    #[serde(rename = "podCIDR")]
    pod_cidr: Option<Ipv4Net>,
    #[serde(rename = "podCIDRv6")]
    pod_cidr_v6: Option<Ipv6Net>,
    #[serde(rename = "dualStack")]
    dual_stack: Option<bool>,
    #[serde(rename = "serviceCIDR")]
    service_cidr: Option<Ipv4Net>,
    #[serde(rename = "serviceCIDRv6")]
    service_cidr_v6: Option<Ipv6Net>,
    nodes: Option<Vec<LabNode>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LabNode {
    name: String,
    #[serde(rename = "podCIDR")]
    pod_cidr: Ipv4Net,
}

/// A pod as declared, before its node is checked against the lab's.
struct DeclaredPod {
    spec: PodSpec,
    /// `spec.nodeName` as written, and the field that holds it.
    node: Option<(String, &'static str)>,
}

/// A DaemonSet, expanded once the lab's nodes are known: one pod per node.
struct DeclaredDaemonSet {
    origin: Origin,
    namespace: String,
    name: String,
    template: PodTemplateSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExternalHostObject {
    #[serde(rename = "apiVersion")]
    _api_version: String,
    #[serde(rename = "kind")]
    _kind: String,
    metadata: ObjectMeta,
    spec: ExternalHostKindSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExternalHostKindSpec {
    ips: Vec<IpAddr>,
    #[serde(default)]
    ports: Vec<LabPort>,
    #[serde(default, rename = "dnsNames")]
    dns_names: Vec<String>,
    #[serde(default, rename = "dnsTTL")]
    dns_ttl: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LabPort {
    port: u16,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Default)]
struct Builder {
    lab: Option<(Origin, LabKindSpec)>,
    namespaces: BTreeMap<String, (Origin, BTreeMap<String, String>)>,
    namespace_annotations: BTreeMap<String, BTreeMap<String, String>>,
    pods: BTreeMap<(String, String), DeclaredPod>,
    daemon_sets: Vec<DeclaredDaemonSet>,
    external_hosts: BTreeMap<String, ExternalHostSpec>,
    services: BTreeMap<(String, String), ServiceSpec>,
}

/// Namespaces every cluster has: objects may use them undeclared.
const BUILT_IN_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Most pods a lab holds (controllers expanded): each is a network
/// namespace, a veth pair and an echo server, and `up` creates them one by
/// one; a file that declares more is refused before anything is made.
pub const MAX_PODS: usize = 1024;

const SUPPORTED: &str = "v1 Namespace, Pod, Service, List; apps/v1 Deployment, StatefulSet, DaemonSet; \
     lab.weir.dev/v1alpha1 Lab, ExternalHost";

/// Deserialize strictly (see [`manifest`]), with the failing field's path
/// in the error.
fn typed<T: serde::de::DeserializeOwned>(
    origin: &Origin,
    value: serde_yaml::Value,
) -> Result<T, SpecError> {
    manifest::from_value(value).map_err(|e| invalid(origin, e.field, e.reason))
}

/// A name the lab's DNS may answer: a lowercase DNS subdomain of at least
/// two labels, written without the root's trailing dot (one is accepted).
///
/// # Errors
/// Why the name is not one.
pub fn dns_name(name: &str) -> Result<String, String> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    weir_generator::names::dns1123_subdomain(trimmed)?;
    if !trimmed.contains('.') {
        return Err(format!(
            "{name:?} is not a fully qualified name (e.g. api.example.com)"
        ));
    }
    Ok(trimmed.to_owned())
}

impl Builder {
    fn add_text(&mut self, path: &Path, text: &str) -> Result<(), SpecError> {
        let origin = |document| Origin {
            path: path.to_owned(),
            document,
            item: None,
        };
        for document in manifest::documents(text) {
            let (index, value) = document.map_err(|(index, source)| SpecError::Yaml {
                origin: origin(index),
                source,
            })?;
            self.add_object(&origin(index), value)?;
        }
        Ok(())
    }

    fn add_object(&mut self, origin: &Origin, value: serde_yaml::Value) -> Result<(), SpecError> {
        let text_field = |name: &str| -> Result<String, SpecError> {
            match value.get(name) {
                Some(serde_yaml::Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(invalid(origin, name, "expected a string")),
                None if value.is_mapping() => Err(invalid(origin, name, "missing")),
                None => Err(invalid(
                    origin,
                    "(document)",
                    "expected a Kubernetes object (a mapping)",
                )),
            }
        };
        let api_version = text_field("apiVersion")?;
        let kind = text_field("kind")?;
        match (api_version.as_str(), kind.as_str()) {
            ("v1", "List") => {
                let items =
                    manifest::list_items(&value).map_err(|e| invalid(origin, e.field, e.reason))?;
                for (i, item) in items.into_iter().enumerate() {
                    if origin.item.is_some() {
                        return Err(invalid(origin, "items", "nested lists are not supported"));
                    }
                    let item_origin = Origin {
                        item: Some(i),
                        ..origin.clone()
                    };
                    self.add_object(&item_origin, item)?;
                }
                Ok(())
            }
            ("v1", "Namespace") => self.namespace(origin, typed(origin, value)?),
            ("v1", "Pod") => self.pod(origin, typed(origin, value)?),
            ("v1", "Service") => self.service(origin, typed(origin, value)?),
            ("apps/v1", "Deployment") => self.deployment(origin, typed(origin, value)?),
            ("apps/v1", "StatefulSet") => self.stateful_set(origin, typed(origin, value)?),
            ("apps/v1", "DaemonSet") => self.daemon_set(origin, typed(origin, value)?),
            (LAB_API_VERSION, "Lab") => self.lab(origin, typed(origin, value)?),
            (LAB_API_VERSION, "ExternalHost") => self.external_host(origin, typed(origin, value)?),
            _ => Err(invalid(
                origin,
                "kind",
                format!(
                    "unsupported kind {kind:?} of apiVersion {api_version:?} (supported: {SUPPORTED})"
                ),
            )),
        }
    }

    fn lab(&mut self, origin: &Origin, lab: LabObject) -> Result<(), SpecError> {
        if let Some((first, _)) = &self.lab {
            return Err(invalid(
                origin,
                "kind",
                format!("a second Lab object (the first is at {first})"),
            ));
        }
        drop(lab.metadata);
        self.lab = Some((origin.clone(), lab.spec));
        Ok(())
    }

    fn namespace(&mut self, origin: &Origin, ns: Namespace) -> Result<(), SpecError> {
        let name = required_name(origin, &ns.metadata, names::dns1123_label)?;
        if let Some((first, _)) = self.namespaces.get(&name) {
            return Err(invalid(
                origin,
                "metadata.name",
                format!("namespace {name} is also defined at {first}"),
            ));
        }
        let labels = ns.metadata.labels.unwrap_or_default();
        if let Some(annotations) = ns.metadata.annotations.filter(|a| !a.is_empty()) {
            self.namespace_annotations.insert(name.clone(), annotations);
        }
        self.namespaces.insert(name, (origin.clone(), labels));
        Ok(())
    }

    fn pod(&mut self, origin: &Origin, pod: Pod) -> Result<(), SpecError> {
        required_name(origin, &pod.metadata, names::dns1123_subdomain)?;
        let ports = match &pod.spec {
            Some(spec) => container_ports(origin, "spec", &spec.containers)?,
            None => Vec::new(),
        };
        for (i, ip) in pod
            .status
            .iter()
            .flat_map(|s| s.pod_ips.iter().flatten())
            .enumerate()
        {
            if ip.ip.parse::<IpAddr>().is_err() {
                return Err(invalid(
                    origin,
                    format!("status.podIPs[{i}].ip"),
                    format!("{:?} is not an IP address", ip.ip),
                ));
            }
        }
        if let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref())
            && ip.parse::<IpAddr>().is_err()
        {
            return Err(invalid(
                origin,
                "status.podIP",
                format!("{ip:?} is not an IP address"),
            ));
        }
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .map(|n| (n, "spec.nodeName"));
        self.insert_pod(origin, &pod, ports, node)
    }

    fn insert_pod(
        &mut self,
        origin: &Origin,
        pod: &Pod,
        ports: Vec<PortSpec>,
        node: Option<(String, &'static str)>,
    ) -> Result<(), SpecError> {
        let meta =
            identity::pod_meta(pod).ok_or_else(|| invalid(origin, "metadata.name", "missing"))?;
        if self.pods.len() >= MAX_PODS {
            return Err(invalid(
                origin,
                "metadata.name",
                format!(
                    "pod {}/{} is over the lab's limit of {MAX_PODS} pods (controllers' replicas count)",
                    meta.namespace, meta.name
                ),
            ));
        }
        if let Some(ns) = pod.metadata.namespace.as_deref() {
            names::dns1123_label(ns).map_err(|e| invalid(origin, "metadata.namespace", e))?;
        }
        // A controller's pods carry its template's labels.
        names::labels(&meta.labels, "metadata.labels")
            .map_err(|(field, reason)| invalid(origin, field, reason))?;
        let key = (meta.namespace.clone(), meta.name.clone());
        if let Some(first) = self.pods.get(&key) {
            return Err(invalid(
                origin,
                "metadata.name",
                format!(
                    "pod {}/{} is also defined at {}",
                    key.0, key.1, first.spec.origin
                ),
            ));
        }
        self.pods.insert(
            key,
            DeclaredPod {
                spec: PodSpec {
                    origin: origin.clone(),
                    meta,
                    ports,
                    node: None,
                },
                node,
            },
        );
        Ok(())
    }

    /// Pods of a controller: template labels plus `extra_labels`, owned by
    /// `owner`, named by `names`.
    fn controller_pods(
        &mut self,
        origin: &Origin,
        namespace: &str,
        template: &PodTemplateSpec,
        owner: OwnerReference,
        names: Vec<(String, Option<String>)>,
        extra_labels: &[(&str, String)],
    ) -> Result<(), SpecError> {
        let containers = template
            .spec
            .as_ref()
            .map(|s| s.containers.as_slice())
            .unwrap_or_default();
        let ports = container_ports(origin, "spec.template.spec", containers)?;
        let mut labels = template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        for (k, v) in extra_labels {
            labels.insert((*k).to_owned(), v.clone());
        }
        for (name, node) in names {
            let mut pod_labels = labels.clone();
            if owner.kind == "StatefulSet" {
                pod_labels.insert("statefulset.kubernetes.io/pod-name".into(), name.clone());
                if let Some(index) = name.rsplit('-').next() {
                    pod_labels.insert("apps.kubernetes.io/pod-index".into(), index.to_owned());
                }
            }
            let pod = Pod {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: Some(namespace.to_owned()),
                    labels: Some(pod_labels),
                    owner_references: Some(vec![owner.clone()]),
                    ..ObjectMeta::default()
                },
                ..Pod::default()
            };
            let node = node.map(|n| (n, "spec.template.spec.nodeName"));
            self.insert_pod(origin, &pod, ports.clone(), node)?;
        }
        Ok(())
    }

    fn deployment(&mut self, origin: &Origin, d: Deployment) -> Result<(), SpecError> {
        let name = required_name(origin, &d.metadata, names::dns1123_label)?;
        let namespace = d
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let spec = d.spec.ok_or_else(|| invalid(origin, "spec", "missing"))?;
        let replicas = replicas(origin, spec.replicas)?;
        check_selector(origin, spec.selector.match_labels.as_ref(), &spec.template)?;
        // Kubernetes hashes the pod template into `pod-template-hash`; any
        // stable hash of it gives the same property (new template, new
        // ReplicaSet name).
        let hash = safe_encode(&template_bytes(&spec.template), 10);
        let replica_set = format!("{name}-{hash}");
        let node = template_node(&spec.template);
        let names = suffixed_names(&replica_set, replicas)
            .into_iter()
            .map(|n| (n, node.clone()))
            .collect();
        let owner = owner("ReplicaSet", &replica_set);
        self.controller_pods(
            origin,
            &namespace,
            &spec.template,
            owner,
            names,
            &[("pod-template-hash", hash)],
        )
    }

    fn stateful_set(&mut self, origin: &Origin, s: StatefulSet) -> Result<(), SpecError> {
        let name = required_name(origin, &s.metadata, names::dns1123_label)?;
        let namespace = s
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let spec = s.spec.ok_or_else(|| invalid(origin, "spec", "missing"))?;
        let replicas = replicas(origin, spec.replicas)?;
        check_selector(origin, spec.selector.match_labels.as_ref(), &spec.template)?;
        let revision = format!(
            "{name}-{}",
            safe_encode(&template_bytes(&spec.template), 10)
        );
        let node = template_node(&spec.template);
        let names = (0..replicas)
            .map(|i| (format!("{name}-{i}"), node.clone()))
            .collect();
        let owner = owner("StatefulSet", &name);
        self.controller_pods(
            origin,
            &namespace,
            &spec.template,
            owner,
            names,
            &[("controller-revision-hash", revision)],
        )
    }

    fn daemon_set(&mut self, origin: &Origin, d: DaemonSet) -> Result<(), SpecError> {
        let name = required_name(origin, &d.metadata, names::dns1123_label)?;
        let namespace = d
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let spec = d.spec.ok_or_else(|| invalid(origin, "spec", "missing"))?;
        check_selector(origin, spec.selector.match_labels.as_ref(), &spec.template)?;
        // Its pods (one per node) wait for the Lab object's nodes.
        self.daemon_sets.push(DeclaredDaemonSet {
            origin: origin.clone(),
            namespace,
            name,
            template: spec.template,
        });
        Ok(())
    }

    /// One pod of each DaemonSet on each node (or on the node its
    /// template names).
    fn expand_daemon_sets(&mut self, nodes: &[NodeSpec]) -> Result<(), SpecError> {
        for d in std::mem::take(&mut self.daemon_sets) {
            let revision = safe_encode(&template_bytes(&d.template), 10);
            let on: Vec<Option<String>> = match template_node(&d.template) {
                Some(node) => vec![Some(node)],
                None if nodes.is_empty() => vec![None],
                None => nodes.iter().map(|n| Some(n.name.clone())).collect(),
            };
            let names = suffixed_names(&d.name, on.len())
                .into_iter()
                .zip(on)
                .collect();
            let owner = owner("DaemonSet", &d.name);
            let extra = [
                ("controller-revision-hash", revision),
                ("pod-template-generation", "1".to_owned()),
            ];
            self.controller_pods(&d.origin, &d.namespace, &d.template, owner, names, &extra)?;
        }
        Ok(())
    }

    fn service(&mut self, origin: &Origin, s: Service) -> Result<(), SpecError> {
        let name = required_name(origin, &s.metadata, names::dns1035_label)?;
        let namespace = s
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let spec = s.spec.unwrap_or_default();
        match spec.type_.as_deref() {
            None | Some("ClusterIP") => {}
            Some(other) => {
                return Err(invalid(
                    origin,
                    "spec.type",
                    format!("{other} is not supported by the lab (only ClusterIP)"),
                ));
            }
        }
        let cluster_ip = match (spec.cluster_ip.as_deref(), spec.cluster_ips.as_ref()) {
            (Some("None"), _) => ClusterIp::Headless,
            (_, Some(ips)) if !ips.is_empty() => {
                ClusterIp::Fixed(parse_ips(origin, "spec.clusterIPs", ips)?)
            }
            (Some(ip), _) if !ip.is_empty() => ClusterIp::Fixed(parse_ips(
                origin,
                "spec.clusterIP",
                std::slice::from_ref(&ip.to_owned()),
            )?),
            _ => ClusterIp::Auto,
        };
        let mut ports = Vec::new();
        for (i, p) in spec.ports.iter().flatten().enumerate() {
            let field = format!("spec.ports[{i}]");
            let port = port_number(origin, &format!("{field}.port"), p.port)?;
            let protocol = protocol(origin, &format!("{field}.protocol"), p.protocol.as_deref())?;
            let target = match &p.target_port {
                None => TargetPort::Number(port),
                Some(IntOrString::Int(n)) => {
                    TargetPort::Number(port_number(origin, &format!("{field}.targetPort"), *n)?)
                }
                Some(IntOrString::String(s)) => match s.parse::<i32>() {
                    Ok(n) => {
                        TargetPort::Number(port_number(origin, &format!("{field}.targetPort"), n)?)
                    }
                    Err(_) => TargetPort::Name(s.clone()),
                },
            };
            ports.push(ServicePortSpec {
                name: p.name.clone(),
                port,
                protocol,
                target,
            });
        }
        let key = (namespace.clone(), name.clone());
        if let Some(first) = self.services.get(&key) {
            return Err(invalid(
                origin,
                "metadata.name",
                format!(
                    "service {namespace}/{name} is also defined at {}",
                    first.origin
                ),
            ));
        }
        self.services.insert(
            key,
            ServiceSpec {
                origin: origin.clone(),
                namespace,
                name,
                cluster_ip,
                selector: spec.selector,
                ports,
            },
        );
        Ok(())
    }

    fn external_host(
        &mut self,
        origin: &Origin,
        host: ExternalHostObject,
    ) -> Result<(), SpecError> {
        let name = required_name(origin, &host.metadata, names::dns1123_label)?;
        if host.spec.ips.is_empty() {
            return Err(invalid(
                origin,
                "spec.ips",
                "at least one address is required",
            ));
        }
        let ranges = documentation_ranges();
        for (i, ip) in host.spec.ips.iter().enumerate() {
            if !ranges.iter().any(|r| r.contains(ip)) {
                return Err(invalid(
                    origin,
                    format!("spec.ips[{i}]"),
                    format!(
                        "{ip} is outside the documentation ranges ({}); external hosts must use them so the lab never shadows a real address",
                        DOCUMENTATION_RANGES.join(", ")
                    ),
                ));
            }
        }
        let mut ports = Vec::new();
        for (i, p) in host.spec.ports.iter().enumerate() {
            let field = format!("spec.ports[{i}]");
            let port = port_number(origin, &format!("{field}.port"), i32::from(p.port))?;
            let protocol = protocol(origin, &format!("{field}.protocol"), p.protocol.as_deref())?;
            push_unique(
                &mut ports,
                PortSpec {
                    port,
                    protocol,
                    name: p.name.clone(),
                },
            );
        }
        let mut dns_names = Vec::new();
        for (i, n) in host.spec.dns_names.iter().enumerate() {
            let n = dns_name(n)
                .map_err(|reason| invalid(origin, format!("spec.dnsNames[{i}]"), reason))?;
            if !dns_names.contains(&n) {
                dns_names.push(n);
            }
        }
        let dns_ttl = host.spec.dns_ttl.unwrap_or(DEFAULT_DNS_TTL);
        if let Some(first) = self.external_hosts.get(&name) {
            return Err(invalid(
                origin,
                "metadata.name",
                format!("external host {name} is also defined at {}", first.origin),
            ));
        }
        self.external_hosts.insert(
            name.clone(),
            ExternalHostSpec {
                origin: origin.clone(),
                name,
                ips: host.spec.ips,
                ports,
                dns_names,
                dns_ttl,
            },
        );
        Ok(())
    }

    fn finish(mut self, sources: &[PathBuf]) -> Result<LabSpec, SpecError> {
        let settings = settings(self.lab.as_ref())?;
        self.expand_daemon_sets(&settings.nodes)?;
        let service_nets: Vec<IpNet> = std::iter::once(IpNet::V4(settings.service_cidr))
            .chain(settings.service_cidr_v6.map(IpNet::V6))
            .collect();
        let mut seen: BTreeMap<IpAddr, String> = BTreeMap::new();
        let mut claim =
            |ip: IpAddr, who: String, origin: &Origin, field: &str| -> Result<(), SpecError> {
                if let Some(other) = seen.insert(ip, who.clone()) {
                    return Err(invalid(
                        origin,
                        field,
                        format!("{ip} of {who} is also used by {other}"),
                    ));
                }
                Ok(())
            };
        let mut pods = Vec::with_capacity(self.pods.len());
        for declared in self.pods.into_values() {
            let mut pod = declared.spec;
            pod.node = pod_node(&settings, &pod.origin, declared.node)?;
            let pod_nets: Vec<IpNet> = match &pod.node {
                Some(node) => settings
                    .nodes
                    .iter()
                    .filter(|n| n.name == *node)
                    .map(|n| IpNet::V4(n.pod_cidr))
                    .collect(),
                None => std::iter::once(IpNet::V4(settings.pod_cidr))
                    .chain(settings.pod_cidr_v6.map(IpNet::V6))
                    .collect(),
            };
            for ip in &pod.meta.ips {
                let Some(net) = pod_nets.iter().find(|n| n.contains(ip)) else {
                    let of_node = pod
                        .node
                        .as_ref()
                        .map(|n| format!(" of node {n}"))
                        .unwrap_or_default();
                    return Err(invalid(
                        &pod.origin,
                        "status.podIP",
                        format!(
                            "{ip} is outside the pod CIDRs{of_node} ({})",
                            pod_nets
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                };
                if *ip == net.network() || Some(*ip) == super::ipam::node_address(*net) {
                    return Err(invalid(
                        &pod.origin,
                        "status.podIP",
                        format!("{ip} is reserved (network or node address of {net})"),
                    ));
                }
                claim(
                    *ip,
                    format!("pod {}/{}", pod.meta.namespace, pod.meta.name),
                    &pod.origin,
                    "status.podIP",
                )?;
            }
            pods.push(pod);
        }
        for host in self.external_hosts.values() {
            for ip in &host.ips {
                claim(
                    *ip,
                    format!("external host {}", host.name),
                    &host.origin,
                    "spec.ips",
                )?;
            }
        }
        for svc in self.services.values() {
            if let ClusterIp::Fixed(ips) = &svc.cluster_ip {
                for ip in ips {
                    if !service_nets.iter().any(|n| n.contains(ip)) {
                        return Err(invalid(
                            &svc.origin,
                            "spec.clusterIP",
                            format!(
                                "{ip} is outside the service CIDRs ({})",
                                service_nets
                                    .iter()
                                    .map(ToString::to_string)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        ));
                    }
                    if ip.is_ipv6() && settings.service_cidr_v6.is_none() {
                        return Err(invalid(
                            &svc.origin,
                            "spec.clusterIP",
                            "an IPv6 ClusterIP needs a dual-stack lab",
                        ));
                    }
                    claim(
                        *ip,
                        format!("service {}/{}", svc.namespace, svc.name),
                        &svc.origin,
                        "spec.clusterIP",
                    )?;
                }
            }
        }
        if pods.is_empty() && self.external_hosts.is_empty() {
            return Err(SpecError::Empty {
                files: sources
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let mut namespaces: BTreeMap<String, BTreeMap<String, String>> = self
            .namespaces
            .into_iter()
            .map(|(name, (_, labels))| (name, labels))
            .collect();
        // As the API server refuses an object in a namespace that does not
        // exist: a typo in `metadata.namespace` must not make a new one.
        let referenced = pods
            .iter()
            .map(|p| (&p.origin, &p.meta.namespace))
            .chain(self.services.values().map(|s| (&s.origin, &s.namespace)));
        for (origin, ns) in referenced {
            if BUILT_IN_NAMESPACES.contains(&ns.as_str()) {
                namespaces.entry(ns.clone()).or_default();
            } else if !namespaces.contains_key(ns) {
                return Err(invalid(
                    origin,
                    "metadata.namespace",
                    format!("namespace {ns:?} is not declared (add a v1 Namespace named {ns:?})"),
                ));
            }
        }
        for (name, labels) in &mut namespaces {
            // As the API server does since 1.21: lets namespaceSelector pick
            // a namespace by name.
            labels.insert("kubernetes.io/metadata.name".into(), name.clone());
        }
        Ok(LabSpec {
            sources: sources.to_vec(),
            settings,
            namespaces,
            namespace_annotations: self.namespace_annotations,
            pods,
            external_hosts: self.external_hosts.into_values().collect(),
            services: self.services.into_values().collect(),
        })
    }
}

fn settings(lab: Option<&(Origin, LabKindSpec)>) -> Result<Settings, SpecError> {
    let default_v4 = |s: &str| s.parse::<Ipv4Net>().unwrap_or_else(|_| Ipv4Net::default());
    let default_v6 = |s: &str| s.parse::<Ipv6Net>().unwrap_or_else(|_| Ipv6Net::default());
    let Some((origin, spec)) = lab else {
        return Ok(Settings {
            pod_cidr: default_v4(DEFAULT_POD_CIDR),
            pod_cidr_v6: None,
            service_cidr: default_v4(DEFAULT_SERVICE_CIDR),
            service_cidr_v6: None,
            nodes: Vec::new(),
        });
    };
    let dual = spec
        .dual_stack
        .unwrap_or(spec.pod_cidr_v6.is_some() || spec.service_cidr_v6.is_some());
    if !dual && (spec.pod_cidr_v6.is_some() || spec.service_cidr_v6.is_some()) {
        return Err(invalid(
            origin,
            "spec.dualStack",
            "false, but IPv6 CIDRs are given",
        ));
    }
    let nodes = nodes(origin, spec, dual)?;
    let pod_cidr = spec
        .pod_cidr
        .map_or_else(|| default_v4(DEFAULT_POD_CIDR), |n| n.trunc());
    let s = Settings {
        pod_cidr: nodes.first().map_or(pod_cidr, |n| n.pod_cidr),
        pod_cidr_v6: dual.then(|| {
            spec.pod_cidr_v6
                .map_or_else(|| default_v6(DEFAULT_POD_CIDR_V6), |n| n.trunc())
        }),
        service_cidr: spec
            .service_cidr
            .map_or_else(|| default_v4(DEFAULT_SERVICE_CIDR), |n| n.trunc()),
        service_cidr_v6: dual.then(|| {
            spec.service_cidr_v6
                .map_or_else(|| default_v6(DEFAULT_SERVICE_CIDR_V6), |n| n.trunc())
        }),
        nodes,
    };
    if s.nodes.is_empty() && s.pod_cidr.prefix_len() > 28 {
        return Err(invalid(
            origin,
            "spec.podCIDR",
            "prefix too long (at most /28)",
        ));
    }
    if s.pod_cidr_v6.is_some_and(|n| n.prefix_len() > 120) {
        return Err(invalid(
            origin,
            "spec.podCIDRv6",
            "prefix too long (at most /120)",
        ));
    }
    if s.service_cidr.prefix_len() > 28 || s.service_cidr_v6.is_some_and(|n| n.prefix_len() > 120) {
        return Err(invalid(origin, "spec.serviceCIDR", "prefix too long"));
    }
    // A multi-node lab's ranges are its nodes'; `spec.podCIDR`, when
    // given, only contains them (checked in `nodes`).
    let mut nets: Vec<(String, IpNet)> = Vec::new();
    if s.nodes.is_empty() {
        nets.push(("spec.podCIDR".into(), IpNet::V4(s.pod_cidr)));
    }
    for (i, node) in s.nodes.iter().enumerate() {
        nets.push((format!("spec.nodes[{i}].podCIDR"), IpNet::V4(node.pod_cidr)));
    }
    nets.extend(
        s.pod_cidr_v6
            .map(|n| ("spec.podCIDRv6".into(), IpNet::V6(n))),
    );
    nets.push(("spec.serviceCIDR".into(), IpNet::V4(s.service_cidr)));
    nets.extend(
        s.service_cidr_v6
            .map(|n| ("spec.serviceCIDRv6".into(), IpNet::V6(n))),
    );
    let docs = documentation_ranges();
    for (i, (field, net)) in nets.iter().enumerate() {
        if let Some(doc) = docs.iter().find(|d| overlaps(d, net)) {
            return Err(invalid(
                origin,
                field.as_str(),
                format!(
                    "{net} overlaps the documentation range {doc}, which is for external hosts"
                ),
            ));
        }
        for (other_field, other) in &nets[i + 1..] {
            if overlaps(other, net) {
                return Err(invalid(
                    origin,
                    field.as_str(),
                    format!("{net} overlaps {other_field} {other}"),
                ));
            }
        }
    }
    Ok(s)
}

/// `spec.nodes`: distinct names, IPv4 pod CIDRs of at most /28 inside
/// `spec.podCIDR` when that is given.
fn nodes(origin: &Origin, spec: &LabKindSpec, dual: bool) -> Result<Vec<NodeSpec>, SpecError> {
    let Some(declared) = &spec.nodes else {
        return Ok(Vec::new());
    };
    if declared.is_empty() {
        return Err(invalid(
            origin,
            "spec.nodes",
            "empty (leave it out for a one-node lab)",
        ));
    }
    if dual {
        return Err(invalid(
            origin,
            "spec.nodes",
            "a multi-node lab is IPv4 only (drop spec.dualStack and the IPv6 CIDRs)",
        ));
    }
    let mut nodes: Vec<NodeSpec> = Vec::with_capacity(declared.len());
    for (i, node) in declared.iter().enumerate() {
        names::dns1123_subdomain(&node.name)
            .map_err(|e| invalid(origin, format!("spec.nodes[{i}].name"), e))?;
        if let Some(j) = nodes.iter().position(|n| n.name == node.name) {
            return Err(invalid(
                origin,
                format!("spec.nodes[{i}].name"),
                format!("node {} is also spec.nodes[{j}]", node.name),
            ));
        }
        let field = format!("spec.nodes[{i}].podCIDR");
        let cidr = node.pod_cidr.trunc();
        if cidr.prefix_len() > 28 {
            return Err(invalid(origin, field, "prefix too long (at most /28)"));
        }
        if let Some(all) = spec.pod_cidr.map(|n| n.trunc())
            && !all.contains(&cidr)
        {
            return Err(invalid(
                origin,
                field,
                format!("{cidr} is outside spec.podCIDR {all}"),
            ));
        }
        nodes.push(NodeSpec {
            name: node.name.clone(),
            pod_cidr: cidr,
        });
    }
    Ok(nodes)
}

/// The node a pod runs on: the one it names, else the first; `None` in a
/// one-node lab, where naming a node is an error.
fn pod_node(
    settings: &Settings,
    origin: &Origin,
    named: Option<(String, &'static str)>,
) -> Result<Option<String>, SpecError> {
    match named {
        None => Ok(settings.nodes.first().map(|n| n.name.clone())),
        Some((node, field)) if settings.nodes.is_empty() => Err(invalid(
            origin,
            field,
            format!(
                "node {node:?} is not declared: this lab has one node (declare spec.nodes in the Lab object)"
            ),
        )),
        Some((node, field)) => {
            if settings.nodes.iter().any(|n| n.name == node) {
                Ok(Some(node))
            } else {
                Err(invalid(
                    origin,
                    field,
                    format!(
                        "node {node:?} is not one of the lab's nodes ({})",
                        settings
                            .nodes
                            .iter()
                            .map(|n| n.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            }
        }
    }
}

fn template_node(template: &PodTemplateSpec) -> Option<String> {
    template.spec.as_ref().and_then(|s| s.node_name.clone())
}

/// Whether two networks share an address.
#[must_use]
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn template_bytes(template: &PodTemplateSpec) -> Vec<u8> {
    // k8s-openapi serializes maps in key order: the bytes are stable.
    serde_json::to_vec(template).unwrap_or_default()
}

/// `n` names `<base>-<5 safe chars>`, deterministic and distinct.
fn suffixed_names(base: &str, n: usize) -> Vec<String> {
    let mut names = Vec::with_capacity(n);
    let mut seen = BTreeSet::new();
    let mut attempt = 0usize;
    while names.len() < n {
        let suffix = safe_encode(format!("{base}/{attempt}").as_bytes(), 5);
        attempt += 1;
        if seen.insert(suffix.clone()) {
            names.push(format!("{base}-{suffix}"));
        }
    }
    names
}

fn owner(kind: &str, name: &str) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: kind.into(),
        name: name.into(),
        uid: format!(
            "lab-{:016x}",
            super::names::fnv1a(format!("{kind}/{name}").as_bytes())
        ),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn replicas(origin: &Origin, replicas: Option<i32>) -> Result<usize, SpecError> {
    let n = replicas.unwrap_or(1);
    usize::try_from(n)
        .ok()
        .filter(|n| *n <= 256)
        .ok_or_else(|| {
            invalid(
                origin,
                "spec.replicas",
                format!("{n} is not between 0 and 256"),
            )
        })
}

fn check_selector(
    origin: &Origin,
    match_labels: Option<&BTreeMap<String, String>>,
    template: &PodTemplateSpec,
) -> Result<(), SpecError> {
    let labels = template.metadata.as_ref().and_then(|m| m.labels.as_ref());
    for (k, v) in match_labels.into_iter().flatten() {
        if labels.and_then(|l| l.get(k)) != Some(v) {
            return Err(invalid(
                origin,
                "spec.selector.matchLabels",
                format!("{k}={v} does not match spec.template.metadata.labels"),
            ));
        }
    }
    Ok(())
}

fn required_name(
    origin: &Origin,
    meta: &ObjectMeta,
    valid: fn(&str) -> Result<(), String>,
) -> Result<String, SpecError> {
    let name = meta
        .name
        .clone()
        .ok_or_else(|| invalid(origin, "metadata.name", "missing"))?;
    manifest::check_meta(meta, valid).map_err(|e| invalid(origin, e.field, e.reason))?;
    Ok(name)
}

fn port_number(origin: &Origin, field: &str, n: i32) -> Result<u16, SpecError> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| invalid(origin, field, format!("{n} is not a port number (1-65535)")))
}

fn protocol(origin: &Origin, field: &str, name: Option<&str>) -> Result<Protocol, SpecError> {
    match name.map(str::parse::<Protocol>) {
        None | Some(Ok(Protocol::Tcp)) => Ok(Protocol::Tcp),
        Some(Ok(Protocol::Udp)) => Ok(Protocol::Udp),
        Some(Ok(other)) => Err(invalid(
            origin,
            field,
            format!("{other} is not supported by the lab (TCP or UDP)"),
        )),
        Some(Err(e)) => Err(invalid(origin, field, e.to_string())),
    }
}

fn parse_ips(origin: &Origin, field: &str, ips: &[String]) -> Result<Vec<IpAddr>, SpecError> {
    ips.iter()
        .map(|s| {
            s.parse()
                .map_err(|_| invalid(origin, field, format!("{s:?} is not an IP address")))
        })
        .collect()
}

fn push_unique(ports: &mut Vec<PortSpec>, port: PortSpec) {
    if !ports
        .iter()
        .any(|p| p.port == port.port && p.protocol == port.protocol)
    {
        ports.push(port);
    }
}

fn container_ports(
    origin: &Origin,
    prefix: &str,
    containers: &[Container],
) -> Result<Vec<PortSpec>, SpecError> {
    let mut ports = Vec::new();
    for (c, container) in containers.iter().enumerate() {
        for (i, p) in container.ports.iter().flatten().enumerate() {
            let field = format!("{prefix}.containers[{c}].ports[{i}]");
            let port = port_number(origin, &format!("{field}.containerPort"), p.container_port)?;
            let protocol = protocol(origin, &format!("{field}.protocol"), p.protocol.as_deref())?;
            push_unique(
                &mut ports,
                PortSpec {
                    port,
                    protocol,
                    name: p.name.clone(),
                },
            );
        }
    }
    ports.sort();
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use weir_generator::model::WorkloadKind;

    use super::*;

    fn parse(text: &str) -> Result<LabSpec, SpecError> {
        parse_str(Path::new("lab.yaml"), text)
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    const NS: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n";

    #[test]
    fn errors_name_file_document_and_field() {
        let cases: &[(String, &str)] = &[
            (format!("{NS}---\napiVersion: v1\nkind: ConfigMap\n"), "lab.yaml: document 2: kind: unsupported kind \"ConfigMap\""),
            (format!("{NS}---\nkind: Pod\n"), "lab.yaml: document 2: apiVersion: missing"),
            (format!("{NS}---\n[a, b\n"), "lab.yaml: document 2: malformed YAML"),
            ("- just a list\n".into(), "lab.yaml: document 1: (document): expected a Kubernetes object"),
            (
                "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, ports: [{containerPort: 0}]}]}\n".into(),
                "document 1: spec.containers[0].ports[0].containerPort: 0 is not a port number",
            ),
            (
                "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, ports: [{containerPort: 1, protocol: SCTP}]}]}\n".into(),
                "spec.containers[0].ports[0].protocol: SCTP is not supported",
            ),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: P_1}\n".into(), "metadata.name: \"P_1\" is not a valid DNS-1123 subdomain"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nstatus: {podIP: 10.1.0.5}\n".into(), "status.podIP: 10.1.0.5 is outside the pod CIDRs"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\n".into(), "document 2: metadata.name: pod default/p is also defined at lab.yaml: document 1"),
            (
                "apiVersion: lab.weir.dev/v1alpha1\nkind: ExternalHost\nmetadata: {name: x}\nspec: {ips: [192.0.2.1, 10.0.0.1]}\n".into(),
                "spec.ips[1]: 10.0.0.1 is outside the documentation ranges",
            ),
            ("apiVersion: lab.weir.dev/v1alpha1\nkind: ExternalHost\nmetadata: {name: x}\nspec: {ipz: []}\n".into(), "spec.ipz: unknown field `ipz`"),
            (
                "apiVersion: lab.weir.dev/v1alpha1\nkind: ExternalHost\nmetadata: {name: x}\nspec: {ips: [192.0.2.1], dnsNames: [api.example, Bad_Name.example]}\n".into(),
                "spec.dnsNames[1]: \"Bad_Name.example\" is not a valid DNS-1123 subdomain",
            ),
            (
                "apiVersion: lab.weir.dev/v1alpha1\nkind: ExternalHost\nmetadata: {name: x}\nspec: {ips: [192.0.2.1], dnsNames: [localhost]}\n".into(),
                "spec.dnsNames[0]: \"localhost\" is not a fully qualified name",
            ),
            ("apiVersion: lab.weir.dev/v1alpha1\nkind: Lab\nspec: {podCIDR: nonsense}\n".into(), "spec.podCIDR: invalid IP address"),
            ("apiVersion: lab.weir.dev/v1alpha1\nkind: Lab\nspec: {podCIDR: 192.0.2.0/24}\n".into(), "overlaps the documentation range"),
            (
                "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: p}}\n- {apiVersion: v1, kind: Secret}\n".into(),
                "lab.yaml: document 1, items[1]: kind: unsupported kind \"Secret\"",
            ),
            (
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {replicas: two, selector: {}, template: {}}\n".into(),
                "spec.replicas: invalid type",
            ),
            ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {type: NodePort}\n".into(), "spec.type: NodePort is not supported"),
            (NS.into(), "no pods or external hosts"),
            // Unknown fields, as kubectl --validate=strict refuses them.
            (format!("{NS}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p, bogus: 1}}\n"), "lab.yaml: document 2: metadata.bogus: unknown field"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, ports: [{containerPort: 80, protocl: UDP}]}]}\n".into(), "spec.containers[0].ports[0].protocl: unknown field"),
            ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {selector: {}, template: {}, replica: 3}\n".into(), "spec.replica: unknown field"),
            ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {selectr: {app: a}}\n".into(), "spec.selectr: unknown field"),
            ("apiVersion: v1\nkind: List\nitemz: []\n".into(), "lab.yaml: document 1: itemz: unknown field"),
            // Names and labels as the API server validates them.
            ("apiVersion: v1\nkind: Namespace\nmetadata: {name: \"../x\"}\n".into(), "metadata.name: \"../x\" is not a valid DNS-1123 label"),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {app: \"a b\"}}\n".into(), "metadata.labels.app: \"a b\" is not a valid label value"),
            ("apiVersion: v1\nkind: Service\nmetadata: {name: 1db}\nspec: {}\n".into(), "metadata.name: \"1db\" is not a valid DNS-1035 label"),
        ];
        for (text, want) in cases {
            let got = error(text);
            assert!(got.contains(want), "want {want:?}\n got {got:?}");
        }
    }

    #[test]
    fn deployments_expand_like_a_replica_set() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: c, ports: [{containerPort: 80}, {containerPort: 53, protocol: UDP}]}]}\n";
        let spec = parse(text).unwrap();
        assert_eq!(spec.pods.len(), 3);
        let names: BTreeSet<&str> = spec.pods.iter().map(|p| p.meta.name.as_str()).collect();
        assert_eq!(names.len(), 3);
        for pod in &spec.pods {
            let hash = &pod.meta.labels["pod-template-hash"];
            assert_eq!(hash.len(), 10);
            let suffix = pod.meta.name.strip_prefix(&format!("web-{hash}-")).unwrap();
            assert_eq!(suffix.len(), 5);
            assert_eq!(pod.meta.workload.kind, WorkloadKind::Deployment);
            assert_eq!(pod.meta.workload.to_string(), "shop/web");
            assert_eq!(pod.ports.len(), 2);
        }
        // Deterministic: the same text gives the same names.
        let again = parse(text).unwrap();
        let again: Vec<&str> = again.pods.iter().map(|p| p.meta.name.as_str()).collect();
        assert_eq!(
            again,
            spec.pods
                .iter()
                .map(|p| p.meta.name.as_str())
                .collect::<Vec<_>>()
        );
        assert_eq!(
            spec.namespaces["shop"]["kubernetes.io/metadata.name"],
            "shop"
        );
    }

    /// The labs the demo, the tests and the benchmarks bring up read
    /// strictly (no field the types do not have).
    #[test]
    fn objects_in_undeclared_namespaces_are_refused() {
        let pod = |ns: &str| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, namespace: {ns}}}\nspec: {{containers: [{{name: c}}]}}\n"
            )
        };
        let error = parse(&pod("shpo")).unwrap_err().to_string();
        assert!(
            error.contains("document 1")
                && error.contains("metadata.namespace")
                && error.contains("\"shpo\" is not declared"),
            "{error}"
        );
        let service = "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: nowhere}\nspec: {ports: [{port: 80}]}\n";
        let error = parse(&format!("{}---\n{service}", pod("default")))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("document 2") && error.contains("\"nowhere\" is not declared"),
            "{error}"
        );
        // Built-in namespaces and declared ones, in any order.
        for ns in ["default", "kube-system"] {
            parse(&pod(ns)).unwrap();
        }
        parse(&format!("{}---\n{NS}", pod("a"))).unwrap();
    }

    #[test]
    fn the_repository_labs_parse() {
        for (name, text) in [
            (
                "deploy/examples/shop.yaml",
                include_str!("../../deploy/examples/shop.yaml"),
            ),
            (
                "tests/benches/lab.yaml",
                include_str!("../../tests/benches/lab.yaml"),
            ),
            (
                "deploy/examples/shop-cluster.yaml",
                include_str!("../../deploy/examples/shop-cluster.yaml"),
            ),
        ] {
            if let Err(error) = parse_str(Path::new(name), text) {
                panic!("{error}");
            }
        }
    }

    /// 5 MB of YAML could declare tens of thousands of pods: the total,
    /// controllers expanded, is capped before anything is created.
    #[test]
    fn the_pod_count_is_capped() {
        let deployment = |i: usize| {
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d{i}}}\nspec: {{replicas: 256, selector: {{matchLabels: {{app: d{i}}}}}, template: {{metadata: {{labels: {{app: d{i}}}}}}}}}\n"
            )
        };
        let four: Vec<String> = (0..4).map(deployment).collect();
        assert_eq!(parse(&four.join("---\n")).unwrap().pods.len(), MAX_PODS);
        let five: Vec<String> = (0..5).map(deployment).collect();
        let over = error(&five.join("---\n"));
        assert!(
            over.starts_with("lab.yaml: document 5: metadata.name: pod default/d4-")
                && over.ends_with(
                    "is over the lab's limit of 1024 pods (controllers' replicas count)"
                ),
            "{over}"
        );
        let pods: String = (0..=MAX_PODS)
            .map(|i| format!("---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}}}\n"))
            .collect();
        assert!(error(&pods).contains("document 1025: metadata.name: pod default/p1024 is over"));
    }

    const NODES: &str = "apiVersion: lab.weir.dev/v1alpha1\nkind: Lab\nspec:\n  nodes:\n  - {name: a, podCIDR: 10.151.0.0/16}\n  - {name: b, podCIDR: 10.152.0.0/16}\n---\n";

    #[test]
    fn multi_node_errors_name_file_document_and_field() {
        let lab = |nodes: &str| {
            format!(
                "apiVersion: lab.weir.dev/v1alpha1\nkind: Lab\nspec: {nodes}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\n"
            )
        };
        let cases: &[(String, &str)] = &[
            (
                format!(
                    "{NODES}apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec: {{nodeName: c}}\n"
                ),
                "lab.yaml: document 2: spec.nodeName: node \"c\" is not one of the lab's nodes (a, b)",
            ),
            (
                format!(
                    "{NODES}apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\nspec: {{selector: {{}}, template: {{spec: {{nodeName: x, containers: []}}}}}}\n"
                ),
                "lab.yaml: document 2: spec.template.spec.nodeName: node \"x\" is not one of the lab's nodes",
            ),
            (
                "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {nodeName: a}\n".into(),
                "document 1: spec.nodeName: node \"a\" is not declared: this lab has one node",
            ),
            (
                lab(
                    "{nodes: [{name: a, podCIDR: 10.151.0.0/16}, {name: b, podCIDR: 10.151.3.0/24}]}",
                ),
                "lab.yaml: document 1: spec.nodes[0].podCIDR: 10.151.0.0/16 overlaps spec.nodes[1].podCIDR 10.151.3.0/24",
            ),
            (
                lab(
                    "{nodes: [{name: a, podCIDR: 10.151.0.0/16}, {name: a, podCIDR: 10.152.0.0/16}]}",
                ),
                "spec.nodes[1].name: node a is also spec.nodes[0]",
            ),
            (
                lab(
                    "{podCIDR: 10.151.0.0/16, nodes: [{name: a, podCIDR: 10.151.1.0/24}, {name: b, podCIDR: 10.152.1.0/24}]}",
                ),
                "spec.nodes[1].podCIDR: 10.152.1.0/24 is outside spec.podCIDR 10.151.0.0/16",
            ),
            (
                lab(
                    "{serviceCIDR: 10.152.0.0/16, nodes: [{name: a, podCIDR: 10.151.1.0/24}, {name: b, podCIDR: 10.152.1.0/24}]}",
                ),
                "spec.nodes[1].podCIDR: 10.152.1.0/24 overlaps spec.serviceCIDR 10.152.0.0/16",
            ),
            (lab("{nodes: []}"), "spec.nodes: empty"),
            (
                lab("{nodes: [{name: a, podCIDR: 10.151.0.0/16}], dualStack: true}"),
                "spec.nodes: a multi-node lab is IPv4 only",
            ),
            (
                lab("{nodes: [{name: A_, podCIDR: 10.151.0.0/16}]}"),
                "spec.nodes[0].name: \"A_\" is not a valid DNS-1123 subdomain",
            ),
            (
                lab("{nodes: [{name: a, podCIDR: 10.151.0.0/16, zone: x}]}"),
                "spec.nodes[0].zone: unknown field",
            ),
            (
                format!(
                    "{NODES}apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec: {{nodeName: b}}\nstatus: {{podIP: 10.151.0.9}}\n"
                ),
                "document 2: status.podIP: 10.151.0.9 is outside the pod CIDRs of node b (10.152.0.0/16)",
            ),
        ];
        for (text, want) in cases {
            let got = error(text);
            assert!(got.contains(want), "want {want:?}\n got {got:?}");
        }
    }

    #[test]
    fn pods_run_on_the_node_they_name_else_the_first() {
        let text = format!(
            "{NODES}apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: q}}\nspec: {{nodeName: b}}\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\nspec: {{replicas: 2, selector: {{}}, template: {{spec: {{nodeName: b, containers: []}}}}}}\n---\n\
             apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: ds}}\nspec: {{selector: {{matchLabels: {{app: ds}}}}, template: {{metadata: {{labels: {{app: ds}}}}}}}}\n"
        );
        let spec = parse(&text).unwrap();
        let node_of = |name: &str| -> Vec<Option<&str>> {
            spec.pods
                .iter()
                .filter(|p| p.meta.name.starts_with(name))
                .map(|p| p.node.as_deref())
                .collect()
        };
        assert_eq!(node_of("p"), [Some("a")]);
        assert_eq!(node_of("q"), [Some("b")]);
        assert_eq!(node_of("d-"), [Some("b"), Some("b")]);
        let mut ds = node_of("ds-");
        ds.sort_unstable();
        assert_eq!(
            ds,
            [Some("a"), Some("b")],
            "a DaemonSet has a pod on each node"
        );
        assert_eq!(spec.settings.pod_cidr.to_string(), "10.151.0.0/16");
        assert_eq!(spec.settings.nodes.len(), 2);
        // A one-node lab's pods have no node, and its DaemonSets one pod.
        let single = parse("apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: ds}\nspec: {selector: {}, template: {}}\n").unwrap();
        assert_eq!(single.pods.len(), 1);
        assert!(single.pods[0].node.is_none());
    }

    #[test]
    fn lab_kind_sets_dual_stack() {
        let text = "apiVersion: lab.weir.dev/v1alpha1\nkind: Lab\nspec: {podCIDR: 10.5.0.0/16, dualStack: true}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\n";
        let spec = parse(text).unwrap();
        assert_eq!(spec.settings.pod_cidr.to_string(), "10.5.0.0/16");
        assert_eq!(
            spec.settings.pod_cidr_v6.unwrap().to_string(),
            DEFAULT_POD_CIDR_V6
        );
        let single = parse("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n").unwrap();
        assert!(single.settings.pod_cidr_v6.is_none());
    }
}
