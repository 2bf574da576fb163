//! The lab's state file, `/run/weir/lab-<name>.json`: what the lab is (pods,
//! external hosts, services, addresses) and every kernel object and process
//! it made, recorded *before* each is created so that `down` can clean up
//! after a crash at any point. Written atomically (temp file + rename).
//! `/run` is a tmpfs: a reboot, which removes every lab object, also
//! removes the state.

use std::{
    collections::BTreeMap,
    io::Write,
    net::IpAddr,
    path::{Path, PathBuf},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use weir_generator::model::{PodMeta, Protocol, WorkloadRef};

use super::{
    error::{LabError, Result},
    names::LabName,
};

/// Where lab state files live.
pub const STATE_DIR: &str = "/run/weir";

/// Version of the state file format.
pub const STATE_VERSION: u32 = 1;

/// Whether `up` finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// `up` is running, or crashed.
    Creating,
    /// Everything is up.
    Ready,
}

/// A port something answers on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    /// The port's name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Port number.
    pub port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
}

/// A pod of the lab.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodState {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels (with `pod-template-hash` etc. for controller pods).
    pub labels: BTreeMap<String, String>,
    /// The workload, derived as for a real cluster.
    pub workload: WorkloadRef,
    /// Addresses, IPv4 first.
    pub ips: Vec<IpAddr>,
    /// Name for `ip netns exec`.
    pub netns: String,
    /// Host side of the veth pair.
    pub host_veth: String,
    /// Ports its responder answers on.
    pub ports: Vec<Port>,
    /// The node it runs on, in a multi-node lab.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// A node of a multi-node lab: a bridge of its own with the node's
/// address, routed to the other nodes' bridges through the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeState {
    /// Its name (pods' `spec.nodeName`, the agent's `--node-name`).
    pub name: String,
    /// Its pods' range.
    #[serde(rename = "podCIDR")]
    pub pod_cidr: Ipv4Net,
    /// Its bridge.
    pub bridge: String,
    /// The node's address: the first of its pod CIDR, on its bridge.
    pub address: IpAddr,
}

/// One bridge of a lab with the ranges on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    /// The node, in a multi-node lab.
    pub node: Option<&'a str>,
    /// The bridge.
    pub bridge: &'a str,
    /// Its IPv4 pod range.
    pub pod_cidr: Ipv4Net,
    /// Its IPv6 pod range (one-node dual-stack labs).
    pub pod_cidr_v6: Option<Ipv6Net>,
}

impl Segment<'_> {
    /// The pod ranges, IPv4 first.
    #[must_use]
    pub fn nets(&self) -> Vec<IpNet> {
        std::iter::once(IpNet::V4(self.pod_cidr))
            .chain(self.pod_cidr_v6.map(IpNet::V6))
            .collect()
    }

    /// The node's addresses (the first of each pod range).
    #[must_use]
    pub fn node_addresses(&self) -> Vec<IpAddr> {
        self.nets()
            .into_iter()
            .filter_map(super::ipam::node_address)
            .collect()
    }
}

impl PodState {
    /// `namespace/name`.
    #[must_use]
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// What a resolver needs to know of the pod.
    #[must_use]
    pub fn meta(&self) -> PodMeta {
        PodMeta {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            labels: self.labels.clone(),
            workload: self.workload.clone(),
            ips: self.ips.clone(),
        }
    }
}

/// A host outside the cluster (not a pod: no workload, never in an
/// inventory).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalHostState {
    /// Name.
    pub name: String,
    /// Addresses, in documentation ranges.
    pub ips: Vec<IpAddr>,
    /// Name for `ip netns exec`.
    pub netns: String,
    /// Host side of the veth pair.
    pub host_veth: String,
    /// Ports its responder answers on.
    pub ports: Vec<Port>,
    /// Names the lab's DNS answers with `ips` (at `up`; `weir lab dns set`
    /// may re-point them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_names: Vec<String>,
    /// The TTL of those answers, in seconds.
    #[serde(default = "default_dns_ttl")]
    pub dns_ttl: u32,
}

fn default_dns_ttl() -> u32 {
    super::spec::DEFAULT_DNS_TTL
}

/// One backend of a Service port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    /// `namespace/pod`.
    pub pod: String,
    /// The pod address traffic is DNATed to.
    pub ip: IpAddr,
    /// The resolved target port.
    pub port: u16,
}

/// One port of a Service with its endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePortState {
    /// Name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Service port.
    pub port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// `targetPort` as written (number or name).
    pub target_port: String,
    /// Ready backends (every selected pod with the port).
    pub backends: Vec<Backend>,
}

/// A ClusterIP Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceState {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// ClusterIPs (empty for headless Services), named as in the Service spec.
    #[serde(rename = "clusterIPs")]
    pub cluster_ips: Vec<IpAddr>,
    /// Selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<BTreeMap<String, String>>,
    /// Ports and their backends.
    pub ports: Vec<ServicePortState>,
}

/// Something the lab made and `down` removes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Resource {
    /// The run directory (logs).
    RunDir {
        /// Path.
        path: PathBuf,
    },
    /// A netns's own `/etc` directory (`/etc/netns/NAME`, its
    /// `resolv.conf`).
    NetnsEtc {
        /// Path.
        path: PathBuf,
    },
    /// An nftables table in the root netns.
    NftTable {
        /// `inet`, `ip`, ...
        family: String,
        /// Table name.
        name: String,
    },
    /// The bridge.
    Bridge {
        /// Interface name.
        name: String,
    },
    /// A named network namespace.
    Netns {
        /// Name under /run/netns.
        name: String,
    },
    /// A veth pair (by its host side).
    Veth {
        /// Host-side name.
        name: String,
    },
    /// A responder process.
    Process {
        /// Its pid.
        pid: u32,
        /// The netns it serves.
        netns: String,
    },
}

/// Everything about a lab.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabState {
    /// Format version.
    pub version: u32,
    /// The lab's name.
    pub lab: String,
    /// Whether `up` finished.
    pub phase: Phase,
    /// Bridge name (the first node's in a multi-node lab).
    pub bridge: String,
    /// IPv4 pod CIDR (the bridge holds its first address); the first
    /// node's in a multi-node lab.
    #[serde(rename = "podCIDR")]
    pub pod_cidr: Ipv4Net,
    /// IPv6 pod CIDR, when dual-stack.
    #[serde(rename = "podCIDRv6", default, skip_serializing_if = "Option::is_none")]
    pub pod_cidr_v6: Option<Ipv6Net>,
    /// IPv4 service CIDR.
    #[serde(rename = "serviceCIDR")]
    pub service_cidr: Ipv4Net,
    /// IPv6 service CIDR, when dual-stack.
    #[serde(
        rename = "serviceCIDRv6",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub service_cidr_v6: Option<Ipv6Net>,
    /// The nodes of a multi-node lab (the first holds `bridge` and
    /// `podCIDR`); empty for a one-node lab.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeState>,
    /// Logs of responders.
    pub run_dir: PathBuf,
    /// The YAML files the lab was made from.
    pub sources: Vec<PathBuf>,
    /// Namespaces and labels (with `kubernetes.io/metadata.name`).
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// The annotations of namespaces that have some.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub namespace_annotations: BTreeMap<String, BTreeMap<String, String>>,
    /// Pods, sorted by namespace and name.
    pub pods: Vec<PodState>,
    /// External hosts, sorted by name.
    pub external_hosts: Vec<ExternalHostState>,
    /// Services, sorted by namespace and name.
    pub services: Vec<ServiceState>,
    /// What was made, in creation order.
    pub resources: Vec<Resource>,
}

/// Where a lab's state file is.
#[must_use]
pub fn state_path(lab: &LabName) -> PathBuf {
    Path::new(STATE_DIR).join(format!("lab-{lab}.json"))
}

/// Where a lab's logs go.
#[must_use]
pub fn run_dir(lab: &LabName) -> PathBuf {
    Path::new(STATE_DIR).join(format!("lab-{lab}"))
}

impl LabState {
    /// Load the state of lab `lab`.
    ///
    /// # Errors
    /// [`LabError::NotUp`] when there is no such lab; I/O and format errors.
    pub fn load(lab: &str) -> Result<Self> {
        let name: LabName = lab.parse()?;
        Self::load_from(&state_path(&name), lab)
    }

    /// Load a state file by path (`lab` only names it in errors).
    ///
    /// # Errors
    /// [`LabError::NotUp`] when the file does not exist.
    pub fn load_from(path: &Path, lab: &str) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LabError::NotUp {
                    lab: lab.to_owned(),
                    path: path.to_owned(),
                });
            }
            Err(source) => {
                return Err(LabError::Io {
                    action: "cannot read",
                    path: path.to_owned(),
                    source,
                });
            }
        };
        serde_json::from_str(&text).map_err(|source| LabError::StateFormat {
            path: path.to_owned(),
            source,
        })
    }

    /// The lab's validated name.
    ///
    /// # Errors
    /// When the state holds an invalid name (a hand-edited file).
    pub fn name(&self) -> Result<LabName> {
        Ok(self.lab.parse()?)
    }

    /// Write the state atomically: readers see the old or the new file,
    /// never half of one.
    ///
    /// # Errors
    /// I/O errors, naming the file.
    pub fn save(&self) -> Result<()> {
        let path = state_path(&self.name()?);
        let io = |action, source| LabError::Io {
            action,
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(STATE_DIR).map_err(|e| io("cannot create the directory of", e))?;
        let tmp = path.with_extension(format!("json.tmp.{}", std::process::id()));
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| LabError::StateFormat {
            path: path.clone(),
            source,
        })?;
        let mut file = std::fs::File::create(&tmp).map_err(|e| io("cannot write", e))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| io("cannot write", e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io("cannot write", e))
    }

    /// Record a resource (and persist) before creating it.
    ///
    /// # Errors
    /// When the state cannot be written: then nothing should be created.
    pub fn record(&mut self, resource: Resource) -> Result<()> {
        if !self.resources.contains(&resource) {
            self.resources.push(resource);
        }
        self.save()
    }

    /// The pod `namespace/name`.
    #[must_use]
    pub fn pod(&self, key: &str) -> Option<&PodState> {
        let (ns, name) = key.split_once('/')?;
        self.pods
            .iter()
            .find(|p| p.namespace == ns && p.name == name)
    }

    /// The lab's bridges with their ranges: one per node.
    #[must_use]
    pub fn segments(&self) -> Vec<Segment<'_>> {
        if self.nodes.is_empty() {
            return vec![Segment {
                node: None,
                bridge: &self.bridge,
                pod_cidr: self.pod_cidr,
                pod_cidr_v6: self.pod_cidr_v6,
            }];
        }
        self.nodes
            .iter()
            .map(|n| Segment {
                node: Some(&n.name),
                bridge: &n.bridge,
                pod_cidr: n.pod_cidr,
                pod_cidr_v6: None,
            })
            .collect()
    }

    /// The segment of node `node` (`None`: the first, where external
    /// hosts and, in a one-node lab, every pod are).
    #[must_use]
    pub fn segment(&self, node: Option<&str>) -> Option<Segment<'_>> {
        self.segments()
            .into_iter()
            .find(|s| node.is_none() || s.node == node)
    }

    /// The names of a multi-node lab's nodes, in order.
    #[must_use]
    pub fn node_names(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.name.as_str()).collect()
    }

    /// The external host `name`.
    #[must_use]
    pub fn external_host(&self, name: &str) -> Option<&ExternalHostState> {
        self.external_hosts.iter().find(|h| h.name == name)
    }

    /// The netns and addresses of a pod (`ns/pod`) or external host
    /// (`name`).
    ///
    /// # Errors
    /// [`LabError::UnknownEndpoint`].
    pub fn endpoint(&self, name: &str) -> Result<(&str, &[IpAddr])> {
        if let Some(p) = self.pod(name) {
            return Ok((&p.netns, &p.ips));
        }
        if let Some(h) = self.external_host(name) {
            return Ok((&h.netns, &h.ips));
        }
        Err(LabError::UnknownEndpoint {
            name: name.to_owned(),
            lab: self.lab.clone(),
        })
    }
}
