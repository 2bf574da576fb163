//! IP -> pod resolution, behind one small trait so the aggregator never
//! knows where pods come from (lab state, an inventory file, or the
//! Kubernetes API).
//!
//! A [`Source`] produces an [`Inventory`] snapshot; the agent indexes it into
//! a [`Resolver`] and swaps it in whole, so lookups never see half an update.

pub mod inventory;
pub mod lab;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    path::PathBuf,
    sync::Arc,
};

use weir_generator::{
    cluster::{Cluster, ClusterPod, ClusterService, NamedPort},
    model::PodMeta,
};

/// Lookups the aggregator needs.
pub trait Resolve: Send + Sync {
    /// The pod that holds `ip`, if any.
    fn pod_by_ip(&self, ip: IpAddr) -> Option<Arc<PodMeta>>;
    /// The local pod behind the host-side interface `ifindex`, if any.
    fn pod_by_ifindex(&self, ifindex: u32) -> Option<Arc<PodMeta>>;
    /// Whether `ip` belongs to a pod attached on this node (one whose host
    /// veth is known). The aggregator needs it to count a connection between
    /// two local pods once: both veths report it, and only the initiator's
    /// report makes the edge.
    fn is_attached(&self, ip: IpAddr) -> bool;
}

/// A pod with what the node knows of its network attachment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPod {
    /// Identity and addresses.
    pub meta: PodMeta,
    /// Host-side veth name, when the pod runs on this node.
    pub host_veth: Option<String>,
    /// Declared container ports (policies may name them).
    pub ports: Vec<NamedPort>,
}

/// Everything a source knows at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Pods of every namespace.
    pub pods: Vec<LocalPod>,
    /// Namespaces and their labels.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// ClusterIP Services.
    pub services: Vec<ClusterService>,
    /// What the source found odd but could work with (e.g. a pod in a
    /// namespace the file does not declare), for the user to see.
    pub warnings: Vec<String>,
}

impl Inventory {
    /// The cluster as the generator sees it: namespaces, pods with their
    /// ports, Services.
    #[must_use]
    pub fn cluster(&self) -> Cluster {
        Cluster {
            namespaces: self.namespaces.clone(),
            pods: self
                .pods
                .iter()
                .map(|p| ClusterPod {
                    meta: p.meta.clone(),
                    ports: p.ports.clone(),
                })
                .collect(),
            services: self.services.clone(),
        }
    }
}

/// Where the agent learns about pods.
pub trait Source: Send {
    /// A fresh snapshot.
    ///
    /// # Errors
    /// When the source cannot be read; the agent keeps its previous view.
    fn snapshot(&mut self) -> Result<Inventory, SourceError>;
    /// A short name for logs and metrics.
    fn name(&self) -> &'static str;
}

/// A source that could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file did not parse.
    #[error("{}: document {document}: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based index of the YAML document.
        document: usize,
        /// What is wrong, naming the field.
        reason: String,
    },
}

/// Lookups happen for every observation: a fast non-cryptographic hash.
/// Keys are pod IPs and interface indexes, not attacker-chosen in bulk.
type FastHash = foldhash::fast::RandomState;

/// An indexed, immutable inventory.
#[derive(Debug, Default)]
pub struct Resolver {
    by_ip: HashMap<IpAddr, Arc<PodMeta>, FastHash>,
    by_ifindex: HashMap<u32, Arc<PodMeta>, FastHash>,
    attached: HashSet<IpAddr, FastHash>,
    cluster: Arc<Cluster>,
}

impl Resolver {
    /// Index an inventory. `ifindex_of` maps host veth names to interface
    /// indexes (the kernel reports flows by index); veths it does not know
    /// are left out.
    pub fn new(inventory: &Inventory, ifindex_of: impl Fn(&str) -> Option<u32>) -> Self {
        let mut by_ip = HashMap::default();
        let mut by_ifindex = HashMap::default();
        let mut attached = HashSet::default();
        for pod in &inventory.pods {
            let meta = Arc::new(pod.meta.clone());
            for ip in &pod.meta.ips {
                by_ip.insert(*ip, Arc::clone(&meta));
            }
            if let Some(index) = pod.host_veth.as_deref().and_then(&ifindex_of) {
                by_ifindex.insert(index, Arc::clone(&meta));
                attached.extend(pod.meta.ips.iter().copied());
            }
        }
        Self {
            by_ip,
            by_ifindex,
            attached,
            cluster: Arc::new(inventory.cluster()),
        }
    }

    /// The cluster this resolver was built from (for the learner and the
    /// evaluator).
    #[must_use]
    pub fn cluster(&self) -> Arc<Cluster> {
        Arc::clone(&self.cluster)
    }

    /// How many pods are attached on this node (have a known host veth).
    #[must_use]
    pub fn attached_pods(&self) -> usize {
        self.by_ifindex.len()
    }

    /// How many pod IPs the resolver knows.
    #[must_use]
    pub fn known_ips(&self) -> usize {
        self.by_ip.len()
    }
}

impl Resolve for Resolver {
    fn pod_by_ip(&self, ip: IpAddr) -> Option<Arc<PodMeta>> {
        self.by_ip.get(&ip).cloned()
    }

    fn pod_by_ifindex(&self, ifindex: u32) -> Option<Arc<PodMeta>> {
        self.by_ifindex.get(&ifindex).cloned()
    }

    fn is_attached(&self, ip: IpAddr) -> bool {
        self.attached.contains(&ip)
    }
}
