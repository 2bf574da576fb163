//! IP -> pod resolution, behind one small trait so the aggregator never
//! knows where pods come from (lab state, an inventory file, or the
//! Kubernetes API).
//!
//! A [`Source`] produces an [`Inventory`] snapshot; the agent indexes it into
//! a [`Resolver`] and swaps it in whole, so lookups never see half an update.

pub mod inventory;
pub mod kube;
pub mod lab;
pub mod leases;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    path::PathBuf,
    sync::Arc,
};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use weir_generator::{
    cluster::{Cluster, ClusterPod, ClusterService, NamedPort},
    datapath::Mode,
    model::PodMeta,
};

pub use self::kube::health::SourceHealth;
use self::leases::{Lease, Timeline};

/// Lookups the aggregator needs.
pub trait Resolve: Send + Sync {
    /// The pod that holds `ip`, if any.
    fn pod_by_ip(&self, ip: IpAddr) -> Option<Arc<PodMeta>>;
    /// The pod that held `ip` at `unix_ns` (0: now). A pod that took the
    /// address of a completed or deleted pod is never answered for the
    /// time before it held it. Sources without history answer as
    /// [`Resolve::pod_by_ip`].
    fn pod_by_ip_at(&self, ip: IpAddr, unix_ns: u64) -> Option<Arc<PodMeta>> {
        let _ = unix_ns;
        self.pod_by_ip(ip)
    }
    /// The local pod behind the host-side interface `ifindex`, if any.
    fn pod_by_ifindex(&self, ifindex: u32) -> Option<Arc<PodMeta>>;
    /// Whether `ip` belongs to a pod attached on this node (one whose host
    /// veth is known). The aggregator needs it to count a connection between
    /// two local pods once: both veths report it, and only the initiator's
    /// report makes the edge.
    fn is_attached(&self, ip: IpAddr) -> bool;
    /// The node `pod`, found at `ip`, runs on, when the source knows it
    /// (the API server's `spec.nodeName`). Sources without nodes answer
    /// `None`.
    fn node_of(&self, ip: IpAddr, pod: &PodMeta) -> Option<Arc<str>> {
        let _ = (ip, pod);
        None
    }
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
    /// The pod runs on this node (`spec.nodeName` is this node): the
    /// agent attaches to it once its host veth is known.
    pub local: bool,
    /// The node the pod runs on (`spec.nodeName`), when the source says:
    /// a relay merging several agents' graphs needs both ends' nodes.
    pub node: Option<String>,
}

/// The cluster's NetworkPolicies, ordered by namespace and name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterPolicies(pub Arc<[NetworkPolicy]>);

// NetworkPolicy's equality is structural over strings, integers and
// maps: reflexive, so an equivalence.
impl Eq for ClusterPolicies {}

impl ClusterPolicies {
    /// The policies.
    #[must_use]
    pub fn policies(&self) -> &[NetworkPolicy] {
        &self.0
    }
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
    /// Who held which pod IP when, for sources that know (the API server);
    /// empty: the pods hold their IPs, that is all.
    pub leases: Vec<Lease>,
    /// Addresses that are not pods but have a name: nodes (and
    /// hostNetwork pods, which share their node's address) as
    /// `node/NAME`, the API server as `kube-apiserver`. They stay out of
    /// IP -> pod: policies reach them by ipBlock.
    pub known_hosts: BTreeMap<IpAddr, String>,
    /// This node's own addresses, when the source knows them.
    pub node_ips: Vec<IpAddr>,
    /// The policy set to enforce, when the source declares one (the
    /// cluster's NetworkPolicies); `None`: `weir policy apply` decides.
    pub policies: Option<ClusterPolicies>,
    /// Namespace -> mode, when the source declares them (the namespace
    /// label `weir.dev/mode`; unlabelled namespaces are left out and take
    /// the default mode); `None`: `weir mode set` decides.
    pub modes: Option<BTreeMap<String, Mode>>,
    /// How current the source's view is, for sources that can lag.
    pub health: Option<SourceHealth>,
    /// The guard's settings of namespaces annotated with them
    /// (`weir.dev/guard-window`, `weir.dev/guard-max-drops`,
    /// `weir.dev/guard-skip`); the others take the defaults.
    pub guard: BTreeMap<String, crate::guard::Settings>,
    /// The namespaces promoted automatically (`weir.dev/promote: auto`),
    /// with their settings.
    pub promote: BTreeMap<String, crate::promote::Settings>,
}

impl Inventory {
    /// Read weir's annotations of namespace `name` (the guard's and
    /// automatic promotion's settings); values that do not parse are
    /// warnings naming the namespace and the value, and take the default.
    pub fn namespace_annotations(&mut self, name: &str, annotations: &BTreeMap<String, String>) {
        let (settings, warnings) = crate::guard::settings(name, Some(annotations));
        self.warnings.extend(warnings);
        if settings != crate::guard::Settings::default() {
            self.guard.insert(name.to_owned(), settings);
        }
        let (settings, warnings) = crate::promote::settings(name, Some(annotations));
        self.warnings.extend(warnings);
        if let Some(settings) = settings {
            self.promote.insert(name.to_owned(), settings);
        }
    }

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
    /// The source has no complete view yet (the API server's first lists
    /// have not all arrived).
    #[error("{source_name}: not ready: {reason}")]
    NotReady {
        /// The source.
        source_name: &'static str,
        /// What it waits for.
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
    /// The node of the pod listed at each address, when the source said.
    nodes: HashMap<IpAddr, PodNode, FastHash>,
    /// Addresses whose holders changed over time (empty for sources
    /// without history): looked up by time.
    history: HashMap<IpAddr, Timeline, FastHash>,
    known_hosts: BTreeMap<IpAddr, String>,
    health: Option<SourceHealth>,
    guard: BTreeMap<String, crate::guard::Settings>,
    promote: BTreeMap<String, crate::promote::Settings>,
    cluster: Arc<Cluster>,
    /// Indexes into `cluster.pods` of the pods this node answers for to a
    /// relay: those running here, and those whose node is not known.
    own_pods: Vec<usize>,
    /// A hash of what a relay reads of the cluster here, computed on first
    /// use (only agents a relay reads pay for it).
    fingerprint: std::sync::OnceLock<u64>,
}

/// A listed pod and its node.
#[derive(Debug)]
struct PodNode {
    pod: Arc<PodMeta>,
    node: Arc<str>,
}

impl Resolver {
    /// Index an inventory. `ifindex_of` maps host veth names to interface
    /// indexes (the kernel reports flows by index); veths it does not know
    /// are left out.
    pub fn new(inventory: &Inventory, ifindex_of: impl Fn(&str) -> Option<u32>) -> Self {
        let mut by_ip = HashMap::default();
        let mut by_ifindex = HashMap::default();
        let mut attached = HashSet::default();
        let mut nodes = HashMap::default();
        // One `Arc` per node name, however many pods run there.
        let mut node_names: HashMap<&str, Arc<str>, FastHash> = HashMap::default();
        for pod in &inventory.pods {
            let meta = Arc::new(pod.meta.clone());
            let node = pod
                .node
                .as_deref()
                .map(|name| Arc::clone(node_names.entry(name).or_insert_with(|| Arc::from(name))));
            for ip in &pod.meta.ips {
                by_ip.insert(*ip, Arc::clone(&meta));
                if let Some(node) = &node {
                    nodes.insert(
                        *ip,
                        PodNode {
                            pod: Arc::clone(&meta),
                            node: Arc::clone(node),
                        },
                    );
                }
            }
            if let Some(index) = pod.host_veth.as_deref().and_then(&ifindex_of) {
                by_ifindex.insert(index, Arc::clone(&meta));
                attached.extend(pod.meta.ips.iter().copied());
            }
        }
        let history = timelines(&inventory.leases);
        for (ip, timeline) in &history {
            // The newest holder wins an address two listed pods claim (a
            // terminating pod and its successor).
            match timeline.current() {
                Some(pod) => {
                    by_ip.insert(*ip, Arc::clone(pod));
                }
                None => {
                    by_ip.remove(ip);
                }
            }
        }
        let history = history
            .into_iter()
            .filter(|(_, t)| t.has_history())
            .collect();
        Self {
            by_ip,
            by_ifindex,
            attached,
            nodes,
            history,
            known_hosts: inventory.known_hosts.clone(),
            health: inventory.health.clone(),
            guard: inventory.guard.clone(),
            promote: inventory.promote.clone(),
            cluster: Arc::new(inventory.cluster()),
            own_pods: inventory
                .pods
                .iter()
                .enumerate()
                .filter(|(_, p)| p.local || p.node.is_none())
                .map(|(i, _)| i)
                .collect(),
            fingerprint: std::sync::OnceLock::new(),
        }
    }

    /// A hash of the namespaces, the Services and [`Resolver::own_pods`]:
    /// the same for the same cluster, whichever run computes it (the
    /// resolver is rebuilt on every read of the source, changed or not).
    #[must_use]
    pub fn cluster_fingerprint(&self) -> u64 {
        *self.fingerprint.get_or_init(|| {
            use std::hash::{Hash as _, Hasher as _};
            let pods: Vec<&ClusterPod> = self.own_pods().collect();
            let text =
                serde_json::to_vec(&(&self.cluster.namespaces, &self.cluster.services, pods))
                    .unwrap_or_default();
            // SipHash with fixed keys: stable across runs.
            let mut hasher = std::hash::DefaultHasher::new();
            text.hash(&mut hasher);
            hasher.finish()
        })
    }

    /// The pods this node answers for to a relay: those running here, and
    /// those whose node the source does not know. Together the nodes'
    /// answers list every pod once (pods on a node without an agent are
    /// left out).
    pub fn own_pods(&self) -> impl Iterator<Item = &ClusterPod> {
        self.own_pods
            .iter()
            .filter_map(|&i| self.cluster.pods.get(i))
    }

    /// The name of an address that is not a pod (`node/NAME`,
    /// `kube-apiserver`), if the source named it.
    #[must_use]
    pub fn known_host(&self, ip: IpAddr) -> Option<&str> {
        self.known_hosts.get(&ip).map(String::as_str)
    }

    /// Every named non-pod address.
    #[must_use]
    pub fn known_hosts(&self) -> &BTreeMap<IpAddr, String> {
        &self.known_hosts
    }

    /// The guard's settings of `namespace` (the defaults unless annotated).
    #[must_use]
    pub fn guard_settings(&self, namespace: &str) -> crate::guard::Settings {
        self.guard.get(namespace).copied().unwrap_or_default()
    }

    /// The automatic promotion settings of `namespace`, when it has
    /// `weir.dev/promote: auto`.
    #[must_use]
    pub fn promote_settings(&self, namespace: &str) -> Option<crate::promote::Settings> {
        self.promote.get(namespace).copied()
    }

    /// The namespaces promoted automatically.
    #[must_use]
    pub fn promoted_namespaces(&self) -> &BTreeMap<String, crate::promote::Settings> {
        &self.promote
    }

    /// How current the source's view is, for sources that can lag.
    #[must_use]
    pub fn source_health(&self) -> Option<&SourceHealth> {
        self.health.as_ref()
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

    fn pod_by_ip_at(&self, ip: IpAddr, unix_ns: u64) -> Option<Arc<PodMeta>> {
        if unix_ns != 0
            && !self.history.is_empty()
            && let Some(timeline) = self.history.get(&ip)
        {
            return timeline.at(unix_ns).cloned();
        }
        self.pod_by_ip(ip)
    }

    fn pod_by_ifindex(&self, ifindex: u32) -> Option<Arc<PodMeta>> {
        self.by_ifindex.get(&ifindex).cloned()
    }

    fn is_attached(&self, ip: IpAddr) -> bool {
        self.attached.contains(&ip)
    }

    fn node_of(&self, ip: IpAddr, pod: &PodMeta) -> Option<Arc<str>> {
        // The pod listed at `ip` now; a pod that held the address before
        // (found by time) is another pod, whose node is not known.
        self.nodes
            .get(&ip)
            .filter(|n| {
                std::ptr::eq(Arc::as_ptr(&n.pod), pod)
                    || (n.pod.namespace == pod.namespace && n.pod.name == pod.name)
            })
            .map(|n| Arc::clone(&n.node))
    }
}

/// The leases grouped by address.
fn timelines(leases: &[Lease]) -> HashMap<IpAddr, Timeline, FastHash> {
    let mut spans: HashMap<IpAddr, Vec<_>, FastHash> = HashMap::default();
    for lease in leases {
        spans
            .entry(lease.ip)
            .or_default()
            .push((lease.from, lease.until, Arc::clone(&lease.pod)));
    }
    spans
        .into_iter()
        .map(|(ip, spans)| (ip, Timeline::new(spans)))
        .collect()
}
