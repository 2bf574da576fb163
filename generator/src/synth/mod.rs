//! The learner: the smallest set of standard NetworkPolicies that allows
//! exactly the observed traffic.
//!
//! From a [`FlowGraph`] and the [`Cluster`] it proposes, per namespace:
//!
//! - `weir-default-deny`: `podSelector: {}` isolating every pod for ingress
//!   and egress;
//! - `weir-<workload>` for every workload that sends or receives traffic,
//!   selecting it by the smallest label subset that matches exactly its pods
//!   (never per-rollout labels), with egress rules for what it opened and
//!   ingress rules for what was opened to it.
//!
//! Choices, and why:
//!
//! - Every in-cluster edge yields egress at the source AND ingress at the
//!   destination: either side may be enforced alone (another namespace, a
//!   deleted policy), and both are needed for the flow to pass.
//! - Workload policies name both policy types even when one side has no
//!   rules: such a policy stays tight if the default-deny is removed.
//! - Peers with identical port sets share one rule; then every rule is an
//!   exact product of its peers and ports (ports with identical peer sets
//!   share rules as a consequence), so nothing unobserved slips in.
//! - ICMP cannot be expressed: a NetworkPolicy port always has a port
//!   number or none, and a rule without ports allows every port of every
//!   protocol. An ICMP-only edge therefore yields no rule and a
//!   [`WarningKind::IcmpNotExpressible`] warning, rather than a loose rule.
//! - DNS (to kube-dns, UDP and TCP 53) is an edge like any other: it is
//!   emitted when observed and never added otherwise.
//! - Evidence is one line per observed edge (not per rule index), so a new
//!   edge adds one line and does not renumber the others.
//! - An external address that flows carried a DNS name for
//!   ([`FlowGraph::external_names`], per workload) is not a peer of its
//!   own: the name is. Each name a workload's pods resolved gets one rule,
//!   whose peers are an `ipBlock` per address its traffic under that name
//!   went to in the window and whose ports are those of that traffic, so
//!   when the name is re-pointed the new address joins the same rule
//!   rather than adding one. Tightness holds per name (a port seen on one
//!   of its addresses is allowed on all of them: the name is the
//!   destination). The rules are listed, with their evidence, in the
//!   [`FQDN_RULES_ANNOTATION`] annotation and, for egress, as
//!   [`FqdnEgress`] values for renderers of FQDN-aware dialects. An
//!   address with several names is in each name's rule.
//!
//! ```
//! use weir_generator::{cluster::Cluster, model::FlowGraph, synth};
//!
//! let suggestion = synth::synthesize(&FlowGraph::default(), &Cluster::default(), &Default::default());
//! assert!(suggestion.namespaces.is_empty());
//! ```

#[cfg(test)]
mod names_tests;
pub(crate) mod render;
mod select;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    fmt::Write as _,
    net::IpAddr,
};

use ipnet::IpNet;
use k8s_openapi::{
    api::networking::v1::{
        IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule,
        NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};

use self::select::Selection;
use crate::{
    cluster::{Cluster, ClusterPod, ClusterService, TargetPort},
    model::{EdgeStats, FlowGraph, NodeId, Protocol, WorkloadRef},
};

/// Name of the per-namespace default-deny policy.
pub const DEFAULT_DENY: &str = "weir-default-deny";
/// Label on every object weir generates.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "weir");
/// Annotation saying which observed traffic justifies a policy.
pub const EVIDENCE_ANNOTATION: &str = "weir.dev/evidence";
/// Annotation naming the workload a policy is for.
pub const WORKLOAD_ANNOTATION: &str = "weir.dev/workload";
/// Annotation listing the rules made for DNS names, as JSON
/// ([`FqdnRuleNote`] values), so a reviewer sees why each address is there
/// and `weir verify` can match a flow's name to its rule.
pub const FQDN_RULES_ANNOTATION: &str = "weir.dev/fqdn-rules";
pub use crate::cluster::NAMESPACE_NAME_LABEL;

/// What to generate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Only these namespaces (None: every namespace with observed pods).
    /// Workloads of other namespaces still appear as peers.
    pub namespaces: Option<BTreeSet<String>>,
    /// Merge external addresses into prefixes of these lengths (None: one
    /// `/32` or `/128` per address).
    pub aggregate_external: Option<AggregateExternal>,
    /// Which ports of traffic to a Service to allow.
    pub service_ports: ServicePorts,
}

/// Prefix lengths for external addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AggregateExternal {
    /// IPv4 prefix length (0..=32).
    pub v4_prefix: u8,
    /// IPv6 prefix length (0..=128).
    pub v6_prefix: u8,
}

/// Which ports to allow for traffic that went through a ClusterIP Service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServicePorts {
    /// The backend's target port only: NetworkPolicy is evaluated after
    /// DNAT, which is what the graph records.
    #[default]
    TargetOnly,
    /// The target port and the Service port, for CNIs that check before
    /// DNAT. Wider than needed on CNIs that do not.
    Both,
}

/// What kind of problem a [`Warning`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum WarningKind {
    /// No label subset selects exactly the workload's pods: the most
    /// specific selector was used, and rules naming it cover more pods.
    InexactSelector,
    /// ICMP traffic was observed; NetworkPolicy cannot allow it without
    /// allowing every port, so no rule was emitted.
    IcmpNotExpressible,
    /// An edge endpoint is a workload the cluster does not know; its edges
    /// were skipped.
    UnknownWorkload,
    /// A requested namespace has no observed pods; nothing was generated.
    NoObservedPods,
}

/// Something a reviewer should know about a suggestion.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Warning {
    /// Namespace concerned.
    pub namespace: String,
    /// Workload concerned (its name), if any.
    pub workload: Option<String>,
    /// What happened and what was done.
    pub message: String,
    /// Machine-readable kind.
    pub kind: WarningKind,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.workload {
            Some(w) => write!(f, "{}/{}: {}", self.namespace, w, self.message),
            None => write!(f, "{}: {}", self.namespace, self.message),
        }
    }
}

/// The proposed policies.
#[derive(Clone, Debug, PartialEq)]
pub struct Suggestion {
    /// Namespace -> its policies: the default-deny first, then workload
    /// policies by name.
    pub namespaces: BTreeMap<String, Vec<NetworkPolicy>>,
    /// What could not be done exactly, sorted.
    pub warnings: Vec<Warning>,
    /// Egress to DNS names, one per (policy, name), sorted by namespace,
    /// policy and name: what the standard policies hold as the name's
    /// `ipBlock` rule, for dialects that can name the peer instead
    /// (`toFQDNs`, `domainNames`).
    pub fqdn_egress: Vec<FqdnEgress>,
}

/// When and how much traffic went to (or came from) one address of a name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AddressSeen {
    /// First packet, Unix ns (0: unknown).
    pub first_seen: u64,
    /// Last packet, Unix ns.
    pub last_seen: u64,
    /// Connections opened.
    pub connections: u64,
}

impl AddressSeen {
    fn saw(&mut self, stats: &EdgeStats) {
        self.first_seen = match (self.first_seen, stats.first_seen) {
            (0, t) | (t, 0) => t,
            (a, b) => a.min(b),
        };
        self.last_seen = self.last_seen.max(stats.last_seen);
        self.connections += stats.connections;
    }

    fn merge(&mut self, other: &Self) {
        self.saw(&EdgeStats {
            first_seen: other.first_seen,
            last_seen: other.last_seen,
            connections: other.connections,
            ..EdgeStats::default()
        });
    }
}

/// Egress of one workload to one DNS name, as learned: the standard
/// policy's rule for the name, in a form a dialect renderer turns into a
/// `toFQDNs` or `domainNames` peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FqdnEgress {
    /// The workload's namespace.
    pub namespace: String,
    /// The workload.
    pub workload: WorkloadRef,
    /// The name of the standard NetworkPolicy holding the rule.
    pub policy: String,
    /// The workload's pod selector (`matchLabels`), as in that policy.
    pub pod_selector: BTreeMap<String, String>,
    /// The DNS name: lowercase, without the root's trailing dot.
    pub name: String,
    /// The ports the workload's traffic to the name went to, sorted.
    pub ports: Vec<(Protocol, u16)>,
    /// The addresses that traffic went to under the name, in the window.
    pub addresses: BTreeMap<IpAddr, AddressSeen>,
    /// All of it together.
    pub seen: AddressSeen,
}

/// One entry of the [`FQDN_RULES_ANNOTATION`] annotation: a rule made for
/// a DNS name, with its evidence.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FqdnRuleNote {
    /// `egress` or `ingress`.
    pub direction: String,
    /// The rule's index in `spec.egress` or `spec.ingress`.
    pub rule: usize,
    /// The DNS name.
    pub name: String,
    /// Its addresses with their evidence, by address.
    pub addresses: BTreeMap<IpAddr, AddressNote>,
    /// The rule's ports, `PORT/PROTOCOL`.
    pub ports: Vec<String>,
    /// First packet under the name, RFC 3339.
    pub first_seen: String,
    /// Last packet under the name, RFC 3339.
    pub last_seen: String,
    /// Connections under the name.
    pub connections: u64,
}

/// The evidence of one address of a name rule.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AddressNote {
    /// RFC 3339.
    pub first_seen: String,
    /// RFC 3339.
    pub last_seen: String,
    /// Connections.
    pub connections: u64,
}

impl FqdnRuleNote {
    /// The entries of a policy's [`FQDN_RULES_ANNOTATION`] annotation (none
    /// when it has none).
    ///
    /// # Errors
    /// The annotation is not a JSON list of entries.
    pub fn of(policy: &NetworkPolicy) -> Result<Vec<Self>, serde_json::Error> {
        policy
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(FQDN_RULES_ANNOTATION))
            .map_or_else(|| Ok(Vec::new()), |json| serde_json::from_str(json))
    }
}

impl Suggestion {
    /// The policies of `namespace` as multi-document YAML that `kubectl
    /// apply -f` accepts, headed by the namespace's warnings as comments.
    #[must_use]
    pub fn yaml(&self, namespace: &str) -> Option<String> {
        let policies = self.namespaces.get(namespace)?;
        let mut out = format!(
            "# NetworkPolicies suggested by weir for namespace {namespace} from observed traffic.\n"
        );
        for w in self.warnings.iter().filter(|w| w.namespace == namespace) {
            let _ = writeln!(out, "# warning: {w}");
        }
        for p in policies {
            out.push_str("---\n");
            let notes = FqdnRuleNote::of(p).unwrap_or_default();
            let comments: Vec<(&str, usize, String)> = notes
                .iter()
                .map(|n| {
                    (
                        n.direction.as_str(),
                        n.rule,
                        format!(
                            "{}: {} address{} seen in the window",
                            n.name,
                            n.addresses.len(),
                            if n.addresses.len() == 1 { "" } else { "es" }
                        ),
                    )
                })
                .collect();
            out.push_str(&render::with_rule_comments(
                &render::policy_yaml(p),
                &comments,
            ));
        }
        Some(out)
    }

    /// Every namespace's YAML, in namespace order.
    #[must_use]
    pub fn all_yaml(&self) -> String {
        self.namespaces
            .keys()
            .filter_map(|ns| self.yaml(ns))
            .collect()
    }

    /// A `kustomization.yaml` listing one `<namespace>.yaml` per namespace.
    #[must_use]
    pub fn kustomization(&self) -> String {
        let mut out = String::from(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n",
        );
        for ns in self.namespaces.keys() {
            let _ = writeln!(out, "- {ns}.yaml");
        }
        out
    }

    /// Every policy, namespace by namespace.
    pub fn policies(&self) -> impl Iterator<Item = &NetworkPolicy> {
        self.namespaces.values().flatten()
    }
}

/// A rule peer, ordered: same-namespace pods, other namespaces' pods, CIDRs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Peer {
    Pods {
        /// `None`: the policy's own namespace.
        namespace: Option<String>,
        selector: BTreeMap<String, String>,
    },
    /// An `ipBlock`; `except` holds the addresses of pods inside it, so an
    /// aggregated prefix never opens traffic to pods (an `ipBlock` matches
    /// pod addresses too).
    Cidr { net: IpNet, except: BTreeSet<IpNet> },
}

impl Peer {
    fn to_k8s(&self) -> NetworkPolicyPeer {
        match self {
            Self::Pods {
                namespace,
                selector,
            } => NetworkPolicyPeer {
                namespace_selector: namespace.as_ref().map(|ns| {
                    label_selector(&BTreeMap::from([(
                        NAMESPACE_NAME_LABEL.to_owned(),
                        ns.clone(),
                    )]))
                }),
                pod_selector: Some(label_selector(selector)),
                ip_block: None,
            },
            Self::Cidr { net, except } => NetworkPolicyPeer {
                ip_block: Some(IPBlock {
                    cidr: net.to_string(),
                    except: (!except.is_empty())
                        .then(|| except.iter().map(ToString::to_string).collect()),
                }),
                ..NetworkPolicyPeer::default()
            },
        }
    }
}

fn label_selector(labels: &BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: (!labels.is_empty()).then(|| labels.clone()),
        match_expressions: None,
    }
}

/// A port as rules list it: by number, then protocol.
type Port = (u16, Protocol);

/// One direction of one workload's policy.
#[derive(Default)]
struct Side {
    peers: BTreeMap<Peer, BTreeSet<Port>>,
    /// External peers by DNS name: one rule each, after the others.
    named: BTreeMap<String, NamedPeer>,
}

/// The traffic of one side under one DNS name.
#[derive(Default)]
struct NamedPeer {
    addresses: BTreeMap<IpAddr, AddressSeen>,
    ports: BTreeSet<Port>,
}

impl NamedPeer {
    fn seen(&self) -> AddressSeen {
        let mut all = AddressSeen::default();
        for seen in self.addresses.values() {
            all.merge(seen);
        }
        all
    }
}

fn k8s_ports(ports: &BTreeSet<Port>) -> Vec<NetworkPolicyPort> {
    ports
        .iter()
        .map(|(port, proto)| NetworkPolicyPort {
            port: Some(IntOrString::Int(i32::from(*port))),
            protocol: Some(proto.as_str().to_owned()),
            end_port: None,
        })
        .collect()
}

impl Side {
    /// Rules: peers grouped by identical port sets, ordered by first peer;
    /// then one rule per DNS name, by name.
    fn rules(&self) -> Vec<(Vec<NetworkPolicyPeer>, Vec<NetworkPolicyPort>)> {
        let mut rules = self.grouped_rules();
        for named in self.named.values() {
            let peers = named
                .addresses
                .keys()
                .map(|ip| {
                    Peer::Cidr {
                        net: IpNet::from(*ip),
                        except: BTreeSet::new(),
                    }
                    .to_k8s()
                })
                .collect();
            rules.push((peers, k8s_ports(&named.ports)));
        }
        rules
    }

    /// Traffic on `ports` with a peer, or with an external address under
    /// its DNS names.
    fn add(
        &mut self,
        peer: Option<Peer>,
        names: Option<(IpAddr, &[&str])>,
        ports: BTreeSet<Port>,
        stats: &EdgeStats,
    ) {
        if let Some(peer) = peer {
            self.peers
                .entry(peer)
                .or_default()
                .extend(ports.iter().copied());
        }
        if let Some((ip, names)) = names {
            for name in names {
                let named = self.named.entry((*name).to_owned()).or_default();
                named.addresses.entry(ip).or_default().saw(stats);
                named.ports.extend(ports.iter().copied());
            }
        }
    }

    /// The entries of [`FQDN_RULES_ANNOTATION`] for this side's name rules.
    fn notes(&self, direction: &str) -> Vec<FqdnRuleNote> {
        let first = self.grouped_rules().len();
        self.named
            .iter()
            .enumerate()
            .map(|(i, (name, named))| {
                let seen = named.seen();
                FqdnRuleNote {
                    direction: direction.to_owned(),
                    rule: first + i,
                    name: name.clone(),
                    addresses: named
                        .addresses
                        .iter()
                        .map(|(ip, s)| {
                            (
                                *ip,
                                AddressNote {
                                    first_seen: render::timestamp(s.first_seen),
                                    last_seen: render::timestamp(s.last_seen),
                                    connections: s.connections,
                                },
                            )
                        })
                        .collect(),
                    ports: named
                        .ports
                        .iter()
                        .map(|(port, proto)| format!("{port}/{proto}"))
                        .collect(),
                    first_seen: render::timestamp(seen.first_seen),
                    last_seen: render::timestamp(seen.last_seen),
                    connections: seen.connections,
                }
            })
            .collect()
    }

    /// Rules of the peers that are not DNS names.
    fn grouped_rules(&self) -> Vec<(Vec<NetworkPolicyPeer>, Vec<NetworkPolicyPort>)> {
        let mut by_ports: BTreeMap<&BTreeSet<Port>, Vec<&Peer>> = BTreeMap::new();
        for (peer, ports) in &self.peers {
            by_ports.entry(ports).or_default().push(peer);
        }
        let mut rules: Vec<(&Peer, Vec<NetworkPolicyPeer>, Vec<NetworkPolicyPort>)> = by_ports
            .into_iter()
            .map(|(ports, peers)| {
                (
                    peers[0],
                    peers.iter().map(|p| p.to_k8s()).collect(),
                    k8s_ports(ports),
                )
            })
            .collect();
        rules.sort_by(|a, b| a.0.cmp(b.0));
        rules.into_iter().map(|(_, p, q)| (p, q)).collect()
    }
}

/// Everything gathered for one workload's policy.
#[derive(Default)]
struct Draft {
    ingress: Side,
    egress: Side,
    /// Evidence lines, keyed so that they sort by direction, peer, port.
    evidence: BTreeMap<(u8, String, Port, bool), String>,
    first_seen: u64,
    last_seen: u64,
}

impl Draft {
    fn saw(&mut self, stats: &EdgeStats) {
        if stats.first_seen != 0 && (self.first_seen == 0 || stats.first_seen < self.first_seen) {
            self.first_seen = stats.first_seen;
        }
        self.last_seen = self.last_seen.max(stats.last_seen);
    }
}

/// The cluster, indexed by workload and namespace.
struct Index<'c> {
    workloads: BTreeMap<&'c WorkloadRef, Vec<&'c ClusterPod>>,
    namespaces: BTreeMap<&'c str, Vec<&'c ClusterPod>>,
    /// Per namespace: label `k=v` -> indices into `namespaces[ns]`.
    postings: BTreeMap<&'c str, BTreeMap<(&'c str, &'c str), Vec<usize>>>,
    services: BTreeMap<&'c str, Vec<&'c ClusterService>>,
    /// Every pod address, for the `except`s of aggregated external prefixes.
    pod_ips: BTreeSet<IpAddr>,
}

impl<'c> Index<'c> {
    fn new(cluster: &'c Cluster) -> Self {
        let mut workloads: BTreeMap<&WorkloadRef, Vec<&ClusterPod>> = BTreeMap::new();
        let mut namespaces: BTreeMap<&str, Vec<&ClusterPod>> = BTreeMap::new();
        for pod in &cluster.pods {
            workloads.entry(&pod.meta.workload).or_default().push(pod);
            namespaces
                .entry(pod.meta.namespace.as_str())
                .or_default()
                .push(pod);
        }
        let mut postings: BTreeMap<&str, BTreeMap<(&str, &str), Vec<usize>>> = BTreeMap::new();
        for (ns, pods) in &namespaces {
            let index = postings.entry(ns).or_default();
            for (j, pod) in pods.iter().enumerate() {
                for (k, v) in &pod.meta.labels {
                    index.entry((k.as_str(), v.as_str())).or_default().push(j);
                }
            }
        }
        let mut services: BTreeMap<&str, Vec<&ClusterService>> = BTreeMap::new();
        for s in &cluster.services {
            services.entry(s.namespace.as_str()).or_default().push(s);
        }
        let pod_ips = cluster
            .pods
            .iter()
            .flat_map(|p| p.meta.ips.iter().copied())
            .collect();
        Self {
            workloads,
            namespaces,
            postings,
            services,
            pod_ips,
        }
    }

    fn knows(&self, node: &NodeId) -> bool {
        match node {
            NodeId::Workload(w) => self.workloads.contains_key(w),
            NodeId::External(_) => true,
        }
    }

    /// The selector of a workload (the cluster must know it).
    fn select(&self, workload: &WorkloadRef) -> Selection {
        let pods = self.workloads.get(workload).map_or(&[][..], Vec::as_slice);
        let ns = workload.namespace.as_str();
        let universe = self.namespaces.get(ns).map_or(&[][..], Vec::as_slice);
        let postings = self.postings.get(ns);
        select::select_in(
            pods,
            universe,
            |j| universe[j].meta.workload == *workload,
            |k, v| {
                postings
                    .and_then(|p| p.get(&(k, v)))
                    .cloned()
                    .unwrap_or_default()
            },
        )
    }

    /// Service ports that lead to `port` on the pods of `workload`, with a
    /// note for the evidence: `(service port, note)`.
    fn service_ports(&self, workload: &WorkloadRef, port: Port) -> Vec<(Port, String)> {
        let pods = self.workloads.get(workload).map_or(&[][..], Vec::as_slice);
        let mut out = Vec::new();
        for svc in self
            .services
            .get(workload.namespace.as_str())
            .into_iter()
            .flatten()
        {
            let Some(selector) = svc.selector.as_ref().filter(|s| !s.is_empty()) else {
                continue;
            };
            let selects = pods.iter().any(|p| {
                selector
                    .iter()
                    .all(|(k, v)| p.meta.labels.get(k) == Some(v))
            });
            if !selects {
                continue;
            }
            for sp in svc.ports.iter().filter(|sp| sp.protocol == port.1) {
                let leads_there = match &sp.target {
                    TargetPort::Number(n) => *n == port.0,
                    TargetPort::Name(name) => pods.iter().any(|p| {
                        p.ports.iter().any(|np| {
                            np.name.as_deref() == Some(name)
                                && np.port == port.0
                                && np.protocol == port.1
                        })
                    }),
                };
                if leads_there && sp.port != port.0 {
                    out.push((
                        (sp.port, sp.protocol),
                        format!(
                            "{}/{} is Service {}/{} port {} (targetPort {}), allowed for CNIs that check before DNAT",
                            sp.port, sp.protocol, svc.namespace, svc.name, sp.port, port.0
                        ),
                    ));
                }
            }
        }
        out
    }
}

/// Propose policies for the observed traffic. See the [module docs](self).
#[must_use]
pub fn synthesize(graph: &FlowGraph, cluster: &Cluster, options: &Options) -> Suggestion {
    let index = Index::new(cluster);
    let mut warnings: BTreeSet<Warning> = BTreeSet::new();

    for node in graph.nodes() {
        if let NodeId::Workload(w) = &node
            && !index.knows(&node)
        {
            warnings.insert(Warning {
                namespace: w.namespace.clone(),
                workload: Some(w.name.clone()),
                message: format!(
                    "{} {w} was observed but is not in the cluster; its edges were skipped",
                    w.kind
                ),
                kind: WarningKind::UnknownWorkload,
            });
        }
    }

    let observed: BTreeSet<&str> = graph
        .nodes()
        .iter()
        .filter(|n| index.knows(n))
        .filter_map(|n| match n {
            NodeId::Workload(w) => index
                .workloads
                .get_key_value(w)
                .map(|(k, _)| k.namespace.as_str()),
            NodeId::External(_) => None,
        })
        .collect();
    let scope: BTreeSet<&str> = match &options.namespaces {
        None => observed,
        Some(wanted) => {
            for ns in wanted.iter().filter(|ns| !observed.contains(ns.as_str())) {
                warnings.insert(Warning {
                    namespace: ns.clone(),
                    workload: None,
                    message: "no observed pods in this namespace; no policies generated".into(),
                    kind: WarningKind::NoObservedPods,
                });
            }
            observed
                .into_iter()
                .filter(|ns| wanted.contains(*ns))
                .collect()
        }
    };

    let mut selections: BTreeMap<WorkloadRef, Selection> = BTreeMap::new();
    let mut selector_of = |w: &WorkloadRef| -> BTreeMap<String, String> {
        selections
            .entry(w.clone())
            .or_insert_with(|| index.select(w))
            .labels
            .clone()
    };
    let mut drafts: BTreeMap<WorkloadRef, Draft> = BTreeMap::new();
    let mut windows: BTreeMap<&str, Draft> = BTreeMap::new();
    // External address -> workload -> the names its pods resolved for it.
    let mut names_of: BTreeMap<IpAddr, BTreeMap<&WorkloadRef, Vec<&str>>> = BTreeMap::new();
    for (name, addresses) in &graph.external_names {
        for (ip, seen) in addresses {
            for w in &seen.workloads {
                names_of
                    .entry(*ip)
                    .or_default()
                    .entry(w)
                    .or_default()
                    .push(name);
            }
        }
    }
    let named = |w: &WorkloadRef, peer: &NodeId| match peer {
        NodeId::External(ip) => names_of
            .get(ip)
            .and_then(|by| by.get(w))
            .map(|n| (*ip, n.as_slice())),
        NodeId::Workload(_) => None,
    };
    let shown = |peer: &NodeId, names: Option<(IpAddr, &[&str])>| match names {
        Some((_, names)) => format!("{peer} ({})", names.join(", ")),
        None => peer.to_string(),
    };

    for (key, stats) in &graph.edges {
        if !index.knows(&key.source) || !index.knows(&key.target) {
            continue;
        }
        let in_scope =
            |n: &NodeId| matches!(n, NodeId::Workload(w) if scope.contains(w.namespace.as_str()));
        if !in_scope(&key.source) && !in_scope(&key.target) {
            continue;
        }
        if !key.protocol.has_ports() {
            let owner = if in_scope(&key.source) {
                &key.source
            } else {
                &key.target
            };
            if let NodeId::Workload(w) = owner {
                warnings.insert(Warning {
                    namespace: w.namespace.clone(),
                    workload: Some(w.name.clone()),
                    message: format!(
                        "{} {} -> {} observed ({} connections) cannot be allowed by a NetworkPolicy \
                         without allowing every port; no rule emitted",
                        key.protocol,
                        key.source,
                        key.target,
                        stats.connections
                    ),
                    kind: WarningKind::IcmpNotExpressible,
                });
            }
            continue;
        }
        let port: Port = (key.port, key.protocol);
        let mut ports = vec![(port, None)];
        if options.service_ports == ServicePorts::Both
            && let NodeId::Workload(dst) = &key.target
        {
            ports.extend(
                index
                    .service_ports(dst, port)
                    .into_iter()
                    .map(|(p, note)| (p, Some(note))),
            );
        }
        let evidence = |peer: &str| {
            format!(
                "{} {}/{}: {} connection{}, last seen {}",
                peer,
                port.0,
                port.1,
                stats.connections,
                if stats.connections == 1 { "" } else { "s" },
                render::timestamp(stats.last_seen)
            )
        };

        if let NodeId::Workload(src) = &key.source
            && in_scope(&key.source)
        {
            let names = named(src, &key.target);
            let peer = names.is_none().then(|| {
                peer_of(
                    &key.target,
                    &src.namespace,
                    options,
                    &index.pod_ips,
                    &mut selector_of,
                )
            });
            let draft = drafts.entry(src.clone()).or_default();
            draft.saw(stats);
            let mut set = BTreeSet::new();
            let target = shown(&key.target, names);
            for (p, note) in &ports {
                set.insert(*p);
                if let Some(note) = note {
                    draft.evidence.insert(
                        (1, target.clone(), *p, true),
                        format!("egress to {target} {note}"),
                    );
                }
            }
            draft.evidence.insert(
                (1, target.clone(), port, false),
                format!("egress to {}", evidence(&target)),
            );
            draft.egress.add(peer, names, set, stats);
            windows
                .entry(src.namespace.as_str())
                .or_default()
                .saw(stats);
        }
        if let NodeId::Workload(dst) = &key.target
            && in_scope(&key.target)
        {
            let names = named(dst, &key.source);
            let peer = names.is_none().then(|| {
                peer_of(
                    &key.source,
                    &dst.namespace,
                    options,
                    &index.pod_ips,
                    &mut selector_of,
                )
            });
            let draft = drafts.entry(dst.clone()).or_default();
            draft.saw(stats);
            let mut set = BTreeSet::new();
            let source = shown(&key.source, names);
            for (p, note) in &ports {
                set.insert(*p);
                if let Some(note) = note {
                    draft.evidence.insert(
                        (0, source.clone(), *p, true),
                        format!("ingress from {source} {note}"),
                    );
                }
            }
            draft.evidence.insert(
                (0, source.clone(), port, false),
                format!("ingress from {}", evidence(&source)),
            );
            draft.ingress.add(peer, names, set, stats);
            windows
                .entry(dst.namespace.as_str())
                .or_default()
                .saw(stats);
        }
    }

    // Selections of every workload that got a policy (peers are already in).
    for w in drafts.keys() {
        selector_of(w);
    }
    for (w, s) in &selections {
        if !s.exact {
            let mut also = s
                .also_selects
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            if s.also_selects.len() > 5 {
                let _ = write!(also, " and {} more", s.also_selects.len() - 5);
            }
            warnings.insert(Warning {
                namespace: w.namespace.clone(),
                workload: Some(w.name.clone()),
                message: format!(
                    "no label subset selects exactly the pods of {} {w}; used its most specific \
                     selector {}, which also selects pod(s) {also}: rules for it cover those too",
                    w.kind,
                    format_labels(&s.labels),
                ),
                kind: WarningKind::InexactSelector,
            });
        }
    }

    let mut namespaces: BTreeMap<String, Vec<NetworkPolicy>> = BTreeMap::new();
    let mut fqdn_egress: Vec<FqdnEgress> = Vec::new();
    for ns in &scope {
        let window = windows.get(ns);
        let deny_evidence = format!(
            "every pod of namespace {ns} is isolated for ingress and egress; the other weir-* \
             policies allow the observed traffic\nwindow: {} .. {}\n",
            render::timestamp(window.map_or(0, |d| d.first_seen)),
            render::timestamp(window.map_or(0, |d| d.last_seen)),
        );
        let mut policies = vec![policy(
            ns,
            DEFAULT_DENY.to_owned(),
            &BTreeMap::new(),
            BTreeMap::from([(EVIDENCE_ANNOTATION.to_owned(), deny_evidence)]),
            Vec::new(),
            Vec::new(),
        )];

        let in_ns: Vec<(&WorkloadRef, &Draft)> =
            drafts.iter().filter(|(w, _)| w.namespace == *ns).collect();
        let mut base_count: BTreeMap<String, usize> = BTreeMap::new();
        for (w, _) in &in_ns {
            *base_count.entry(format!("weir-{}", w.name)).or_default() += 1;
        }
        let mut workload_policies: Vec<NetworkPolicy> = Vec::new();
        for (w, draft) in in_ns {
            let base = format!("weir-{}", w.name);
            let name = if base_count[&base] > 1 || base == DEFAULT_DENY {
                format!("{base}-{}", w.kind.as_str().to_ascii_lowercase())
            } else {
                base
            };
            let name = render::dns1123(&name, render::MAX_NAME);
            let selection = &selections[w];
            let mut evidence = format!(
                "window: {} .. {}\n",
                render::timestamp(draft.first_seen),
                render::timestamp(draft.last_seen)
            );
            if !selection.exact {
                let _ = writeln!(
                    evidence,
                    "warning: selector also selects pod(s) {}",
                    selection.also_selects.join(", ")
                );
            }
            for line in draft.evidence.values() {
                evidence.push_str(line);
                evidence.push('\n');
            }
            let mut annotations = BTreeMap::from([
                (EVIDENCE_ANNOTATION.to_owned(), evidence),
                (WORKLOAD_ANNOTATION.to_owned(), format!("{} {w}", w.kind)),
            ]);
            let mut notes = draft.egress.notes("egress");
            notes.extend(draft.ingress.notes("ingress"));
            if !notes.is_empty() {
                // Plain data with string keys: it always serializes.
                let json = serde_json::to_string_pretty(&notes)
                    .expect("name rule notes always serialize to JSON");
                annotations.insert(FQDN_RULES_ANNOTATION.to_owned(), json + "\n");
            }
            for (dns_name, named) in &draft.egress.named {
                fqdn_egress.push(FqdnEgress {
                    namespace: (*ns).to_owned(),
                    workload: (*w).clone(),
                    policy: name.clone(),
                    pod_selector: selection.labels.clone(),
                    name: dns_name.clone(),
                    ports: named
                        .ports
                        .iter()
                        .map(|(port, proto)| (*proto, *port))
                        .collect(),
                    addresses: named.addresses.clone(),
                    seen: named.seen(),
                });
            }
            let ingress = draft
                .ingress
                .rules()
                .into_iter()
                .map(|(from, ports)| NetworkPolicyIngressRule {
                    from: Some(from),
                    ports: Some(ports),
                })
                .collect();
            let egress = draft
                .egress
                .rules()
                .into_iter()
                .map(|(to, ports)| NetworkPolicyEgressRule {
                    to: Some(to),
                    ports: Some(ports),
                })
                .collect();
            workload_policies.push(policy(
                ns,
                name,
                &selection.labels,
                annotations,
                ingress,
                egress,
            ));
        }
        workload_policies.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        policies.extend(workload_policies);
        namespaces.insert((*ns).to_owned(), policies);
    }

    fqdn_egress.sort_by(|a, b| {
        (&a.namespace, &a.policy, &a.name).cmp(&(&b.namespace, &b.policy, &b.name))
    });
    Suggestion {
        namespaces,
        warnings: warnings.into_iter().collect(),
        fqdn_egress,
    }
}

fn format_labels(labels: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", inner.join(","))
}

/// The peer standing for `node` in a policy of namespace `ns`.
fn peer_of(
    node: &NodeId,
    ns: &str,
    options: &Options,
    pod_ips: &BTreeSet<IpAddr>,
    selector_of: &mut impl FnMut(&WorkloadRef) -> BTreeMap<String, String>,
) -> Peer {
    match node {
        NodeId::Workload(w) => Peer::Pods {
            namespace: (w.namespace != ns).then(|| w.namespace.clone()),
            selector: selector_of(w),
        },
        NodeId::External(ip) => {
            let net = external_net(*ip, options.aggregate_external);
            // An except must be strictly inside its CIDR: a host prefix
            // (no aggregation) needs none, the address is not a pod's.
            // Runs of consecutive pod addresses merge into one prefix that
            // still holds pod addresses only.
            let hosts: Vec<IpNet> = pod_ips
                .iter()
                .filter(|pod| net.contains(*pod))
                .map(|pod| IpNet::from(*pod))
                .filter(|host| host.prefix_len() > net.prefix_len())
                .collect();
            let except = IpNet::aggregate(&hosts)
                .into_iter()
                .filter(|e| e.prefix_len() > net.prefix_len())
                .collect();
            Peer::Cidr { net, except }
        }
    }
}

fn external_net(ip: IpAddr, aggregate: Option<AggregateExternal>) -> IpNet {
    let (max, len) = match ip {
        IpAddr::V4(_) => (32, aggregate.map_or(32, |a| a.v4_prefix)),
        IpAddr::V6(_) => (128, aggregate.map_or(128, |a| a.v6_prefix)),
    };
    IpNet::new(ip, len.min(max))
        .map(|n| n.trunc())
        .unwrap_or_else(|_| IpNet::from(ip))
}

fn policy(
    namespace: &str,
    name: String,
    selector: &BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    ingress: Vec<NetworkPolicyIngressRule>,
    egress: Vec<NetworkPolicyEgressRule>,
) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY.0.to_owned(),
                MANAGED_BY.1.to_owned(),
            )])),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(label_selector(selector)),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ingress: (!ingress.is_empty()).then_some(ingress),
            egress: (!egress.is_empty()).then_some(egress),
        }),
    }
}
