//! NetworkPolicy semantics (`networking.k8s.io/v1`), with explanations.
//!
//! [`PolicySet::new`] validates policies as the API server does and
//! compiles them; [`Evaluator::new`] precomputes, for one cluster, which
//! policies select which pod; [`Evaluator::evaluate`] then says whether a
//! [`Flow`] is allowed, and why: the rules that allow it, or the policies
//! that isolate the pod and the reason none of their rules matched
//! (cyclonus `pkg/matcher` style).
//!
//! The semantics, from the API reference:
//! - a pod is isolated for a direction only if some policy *in its
//!   namespace* selects it (`spec.podSelector`) with that direction among
//!   its (defaulted) `policyTypes`; a pod that is not isolated allows
//!   everything in that direction;
//! - policies are a union: an isolated pod allows a flow if any rule of any
//!   policy that selects it allows it;
//! - a flow between two pods needs both the source's egress and the
//!   destination's ingress; the side of a flow that is outside the cluster
//!   enforces nothing ([`DirectionVerdict::NotApplicable`]);
//! - a rule allows a flow if one of its peers matches the other side (no
//!   peers: everyone, inside and outside the cluster) and one of its ports
//!   matches (no ports: every port and protocol, ICMP included); a peer's
//!   `podSelector` and `namespaceSelector` are ANDed, a `podSelector` alone
//!   means the policy's own namespace, a `namespaceSelector` alone means
//!   every pod of the matching namespaces;
//! - a port matches TCP when it names no protocol; `port..=endPort` is a
//!   range; a named port is the destination pod's `containerPort` with that
//!   name and protocol (for ingress the selected pod, for egress the peer);
//!   to an endpoint outside the cluster a named port matches nothing;
//!   ICMP has no ports, so it is allowed only by rules without ports;
//! - `policyTypes` unset or empty defaults to Ingress, plus Egress when
//!   `spec.egress` has rules (`SetDefaults_NetworkPolicySpec`);
//!   `ingress`/`egress` absent or empty under a listed type denies that
//!   direction, `ingress: [{}]` allows all of it.
//!
//! **`ipBlock` matches an address, pod or not**: a pod's address in the
//! block's `cidr` and in none of its `except`s matches it, as with Calico,
//! Antrea and kube-router, and as the upstream e2e suite asserts ("should
//! allow egress access to server in CIDR block", "should ensure an IP
//! overlapping both IPBlock.CIDR and IPBlock.Except is allowed"). An
//! address in an `except` is only not matched by *that* peer: the rule's
//! other peers (a `podSelector`) may still match the pod. A flow whose side
//! is a pod the resolver knows is an [`Endpoint::PodAt`] (the address the
//! flow used) or an [`Endpoint::Pod`] (a pod as a whole, for a view by
//! workload: an `ipBlock` matches it when it matches one of its addresses);
//! only an unknown address is an [`Endpoint::External`].
//!
//! One restriction, fail-closed, that the datapath imposes (it keys a named
//! port by the destination pod's identity, and an `ipBlock` by prefix): an
//! egress rule's named port matches a destination pod that one of the
//! rule's selectors matches (or every pod, when the rule has no peers),
//! never one that only an `ipBlock` matches. Ingress rules resolve named
//! ports on the selected pod itself, whatever matched the peer.
//!
//! ```
//! use k8s_openapi::api::networking::v1::NetworkPolicy;
//! use weir_generator::{
//!     cluster::Cluster,
//!     eval::{DirectionVerdict, Endpoint, Evaluator, Flow, PolicySet},
//!     model::Protocol,
//! };
//!
//! let deny: NetworkPolicy = serde_json::from_value(serde_json::json!({
//!     "metadata": {"namespace": "shop", "name": "default-deny"},
//!     "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
//! }))
//! .unwrap();
//! let set = PolicySet::new(vec![deny]).unwrap();
//! let cluster = Cluster::default();
//! let eval = Evaluator::new(&set, &cluster);
//! // Between two addresses outside the cluster, nothing enforces anything.
//! let flow = Flow {
//!     source: Endpoint::External("192.0.2.1".parse().unwrap()),
//!     destination: Endpoint::External("198.51.100.1".parse().unwrap()),
//!     protocol: Protocol::Tcp,
//!     port: 443,
//! };
//! let verdict = eval.evaluate(&flow);
//! assert!(verdict.allowed());
//! assert_eq!(verdict.ingress, DirectionVerdict::NotApplicable);
//! ```
//!
//! Traffic from the pod's own node (always allowed by the API reference)
//! and host-network pods are outside this model: the agent does not hand
//! such flows to the evaluator as pod flows.

mod compile;

use std::{collections::HashMap, fmt, net::IpAddr};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::Serialize;

pub(crate) use self::compile::{CompiledPolicy, Peer, PortMatch, Rule};
use crate::{
    cluster::{Cluster, ClusterPod},
    model::Protocol,
};

pub use crate::cluster::NAMESPACE_NAME_LABEL;

/// A policy that the API server would reject.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A field of a policy is invalid.
    #[error("policy {policy}: {field}: {reason}")]
    Invalid {
        /// `namespace/name` (`?` for a missing part).
        policy: String,
        /// Path of the field, e.g. `spec.ingress[0].from[1].ipBlock.except[0]`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two policies have the same namespace and name.
    #[error("policy {policy}: defined more than once")]
    Duplicate {
        /// `namespace/name`.
        policy: String,
    },
}

/// Validated policies, compiled for evaluation, sorted by namespace and name.
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    policies: Vec<NetworkPolicy>,
    compiled: Vec<CompiledPolicy>,
}

impl PolicySet {
    /// Validate and compile.
    ///
    /// # Errors
    ///
    /// The first invalid policy (in namespace/name order), with the path of
    /// the offending field: a bad CIDR, an `except` outside its CIDR, an
    /// `endPort` below `port` or with a named port, an unknown
    /// `matchExpressions` operator, `In`/`NotIn` without values or
    /// `Exists`/`DoesNotExist` with values, an unknown protocol or policy
    /// type, a peer with no or conflicting selectors, a missing namespace or
    /// name; or two policies with the same namespace and name.
    pub fn new(mut policies: Vec<NetworkPolicy>) -> Result<Self, PolicyError> {
        policies.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        let compiled = policies
            .iter()
            .map(compile::compile)
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(w) = compiled.windows(2).find(|w| w[0].id == w[1].id) {
            return Err(PolicyError::Duplicate {
                policy: w[0].id.to_string(),
            });
        }
        Ok(Self { policies, compiled })
    }

    /// The policies, sorted by namespace and name.
    #[must_use]
    pub fn policies(&self) -> &[NetworkPolicy] {
        &self.policies
    }

    /// Whether there are no policies (everything is allowed).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Number of policies.
    #[must_use]
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// The policies compiled, in the same order.
    pub(crate) fn compiled(&self) -> &[CompiledPolicy] {
        &self.compiled
    }
}

/// One side of a flow.
#[derive(Clone, Copy, Debug)]
pub enum Endpoint<'a> {
    /// A pod of the cluster, at any of its addresses: an `ipBlock` matches
    /// it when it matches one of them (a view by workload, where the
    /// address is not known).
    Pod(&'a ClusterPod),
    /// A pod of the cluster at one of its addresses, the one the flow used.
    PodAt(&'a ClusterPod, IpAddr),
    /// An address that is no pod of the cluster.
    External(IpAddr),
}

impl<'a> Endpoint<'a> {
    /// The pod, unless the endpoint is outside the cluster.
    #[must_use]
    pub const fn pod(&self) -> Option<&'a ClusterPod> {
        match *self {
            Self::Pod(pod) | Self::PodAt(pod, _) => Some(pod),
            Self::External(_) => None,
        }
    }
}

/// A connection initiation: `source` opens `protocol`/`port` on `destination`.
#[derive(Clone, Copy, Debug)]
pub struct Flow<'a> {
    /// The initiator.
    pub source: Endpoint<'a>,
    /// The responder.
    pub destination: Endpoint<'a>,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Destination port (ignored for ICMP).
    pub port: u16,
}

/// A policy, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PolicyRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Direction of traffic relative to the pod a policy selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Direction {
    /// Traffic into the pod (`spec.ingress`).
    Ingress,
    /// Traffic out of the pod (`spec.egress`).
    Egress,
}

impl Direction {
    /// `ingress` or `egress`, as the spec fields are named.
    #[must_use]
    pub const fn field(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ingress => "Ingress",
            Self::Egress => "Egress",
        })
    }
}

/// One rule of a policy: `spec.<direction>[index]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RuleRef {
    /// The policy.
    pub policy: PolicyRef,
    /// `spec.ingress` or `spec.egress`.
    pub direction: Direction,
    /// Index in that list.
    pub index: usize,
}

impl fmt::Display for RuleRef {
    /// `namespace/name spec.ingress[0]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} spec.{}[{}]",
            self.policy,
            self.direction.field(),
            self.index
        )
    }
}

/// Why an isolated pod denies a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DenyReason {
    /// The isolating policies have no rules for this direction.
    DefaultDeny,
    /// No rule's peers match the other side.
    PeerNotAllowed,
    /// Some rule matches the peer, but not on this port and protocol.
    PortNotAllowed,
}

impl DenyReason {
    /// `default-deny`, `peer-not-allowed` or `port-not-allowed`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::DefaultDeny => "default-deny",
            Self::PeerNotAllowed => "peer-not-allowed",
            Self::PortNotAllowed => "port-not-allowed",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict for one direction of a flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum DirectionVerdict {
    /// That side is outside the cluster: nothing of the cluster enforces it.
    NotApplicable,
    /// No policy selects the pod for this direction: allowed.
    NotIsolated,
    /// Every rule (of every selecting policy) that allows the flow, sorted.
    Allowed {
        /// The allowing rules.
        rules: Vec<RuleRef>,
    },
    /// The pod is isolated and no rule allows the flow.
    Denied {
        /// Every policy that selects the pod for this direction, sorted.
        isolated_by: Vec<PolicyRef>,
        /// Why none of their rules allows it.
        reason: DenyReason,
    },
}

impl DirectionVerdict {
    /// Whether this direction lets the flow through.
    #[must_use]
    pub fn allowed(&self) -> bool {
        !matches!(self, Self::Denied { .. })
    }
}

/// The verdict for a flow: the source's egress and the destination's ingress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The source pod's egress.
    pub egress: DirectionVerdict,
    /// The destination pod's ingress.
    pub ingress: DirectionVerdict,
}

impl Verdict {
    /// Whether both directions allow the flow.
    #[must_use]
    pub fn allowed(&self) -> bool {
        self.egress.allowed() && self.ingress.allowed()
    }
}

/// Which policies select a pod, per direction (indices into the set).
#[derive(Clone, Debug, Default)]
struct Selection {
    ingress: Vec<usize>,
    egress: Vec<usize>,
}

impl Selection {
    fn get(&self, direction: Direction) -> &[usize] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// What a scan of the rules found.
#[derive(Clone, Copy, Debug, Default)]
struct Scan {
    any_rule: bool,
    any_peer: bool,
}

/// A [`PolicySet`] applied to a [`Cluster`]: the policies that select each
/// pod are computed once, so that [`evaluate`](Self::evaluate) only walks
/// the rules of the policies that select the flow's two pods.
#[derive(Debug)]
pub struct Evaluator<'a> {
    set: &'a PolicySet,
    cluster: &'a Cluster,
    /// (namespace, name) -> index into `cluster.pods` and `selections`.
    pods: HashMap<(&'a str, &'a str), usize>,
    selections: Vec<Selection>,
    /// Namespace -> indices of its policies.
    by_namespace: HashMap<&'a str, Vec<usize>>,
}

impl<'a> Evaluator<'a> {
    /// Precompute which policies select which pods of `cluster`.
    #[must_use]
    pub fn new(set: &'a PolicySet, cluster: &'a Cluster) -> Self {
        let mut by_namespace: HashMap<&'a str, Vec<usize>> = HashMap::new();
        for (i, p) in set.compiled.iter().enumerate() {
            by_namespace
                .entry(p.id.namespace.as_str())
                .or_default()
                .push(i);
        }
        let mut this = Self {
            set,
            cluster,
            pods: HashMap::with_capacity(cluster.pods.len()),
            selections: Vec::with_capacity(cluster.pods.len()),
            by_namespace,
        };
        for (i, pod) in cluster.pods.iter().enumerate() {
            this.pods
                .entry((pod.meta.namespace.as_str(), pod.meta.name.as_str()))
                .or_insert(i);
            let selection = this.select(pod);
            this.selections.push(selection);
        }
        this
    }

    /// The policies that select `pod`, computed.
    fn select(&self, pod: &ClusterPod) -> Selection {
        let mut selection = Selection::default();
        for &i in self
            .by_namespace
            .get(pod.meta.namespace.as_str())
            .into_iter()
            .flatten()
        {
            let p = &self.set.compiled[i];
            if p.pod_selector.matches(&pod.meta.labels) {
                if p.ingress.is_some() {
                    selection.ingress.push(i);
                }
                if p.egress.is_some() {
                    selection.egress.push(i);
                }
            }
        }
        selection
    }

    /// The policies that select `pod`: precomputed when `pod` is the
    /// cluster's pod of that name (with the same labels), else computed.
    fn selection<'s>(
        &'s self,
        pod: &ClusterPod,
        scratch: &'s mut Option<Selection>,
    ) -> &'s Selection {
        // Fast path: `pod` is an element of `cluster.pods` (the usual case:
        // the resolver hands out references into the cluster).
        let base = self.cluster.pods.as_ptr() as usize;
        let offset = (std::ptr::from_ref(pod) as usize).wrapping_sub(base);
        let size = size_of::<ClusterPod>();
        if offset.is_multiple_of(size) {
            let i = offset / size;
            if self
                .cluster
                .pods
                .get(i)
                .is_some_and(|known| std::ptr::eq(known, pod))
            {
                return &self.selections[i];
            }
        }
        if let Some(&i) = self
            .pods
            .get(&(pod.meta.namespace.as_str(), pod.meta.name.as_str()))
        {
            let known = &self.cluster.pods[i];
            if known.meta.labels == pod.meta.labels {
                return &self.selections[i];
            }
        }
        scratch.insert(self.select(pod))
    }

    /// The verdict for `flow`, with its explanation.
    #[must_use]
    pub fn evaluate(&self, flow: &Flow<'_>) -> Verdict {
        Verdict {
            egress: self.direction(flow, Direction::Egress),
            ingress: self.direction(flow, Direction::Ingress),
        }
    }

    /// Whether `flow` is allowed, without building the explanation.
    #[must_use]
    pub fn allows(&self, flow: &Flow<'_>) -> bool {
        [Direction::Egress, Direction::Ingress]
            .into_iter()
            .all(|d| {
                let Some((subject, other)) = Self::sides(flow, d) else {
                    return true;
                };
                let mut scratch = None;
                let policies = self.selection(subject, &mut scratch).get(d);
                policies.is_empty() || self.scan(policies, d, other, flow, |_, _| true).0
            })
    }

    /// The pod a direction is about, and the other side.
    fn sides<'f>(flow: &Flow<'f>, direction: Direction) -> Option<(&'f ClusterPod, Endpoint<'f>)> {
        let (subject, other) = match direction {
            Direction::Egress => (flow.source, flow.destination),
            Direction::Ingress => (flow.destination, flow.source),
        };
        subject.pod().map(|pod| (pod, other))
    }

    fn direction(&self, flow: &Flow<'_>, direction: Direction) -> DirectionVerdict {
        let Some((subject, other)) = Self::sides(flow, direction) else {
            return DirectionVerdict::NotApplicable;
        };
        let mut scratch = None;
        let policies = self.selection(subject, &mut scratch).get(direction);
        if policies.is_empty() {
            return DirectionVerdict::NotIsolated;
        }
        let mut rules = Vec::new();
        let (_, scan) = self.scan(policies, direction, other, flow, |policy, index| {
            rules.push(RuleRef {
                policy: policy.id.clone(),
                direction,
                index,
            });
            false
        });
        if !rules.is_empty() {
            // Policies are sorted and walked in order, rules by index.
            return DirectionVerdict::Allowed { rules };
        }
        let reason = if !scan.any_rule {
            DenyReason::DefaultDeny
        } else if scan.any_peer {
            DenyReason::PortNotAllowed
        } else {
            DenyReason::PeerNotAllowed
        };
        DirectionVerdict::Denied {
            isolated_by: policies
                .iter()
                .map(|&i| self.set.compiled[i].id.clone())
                .collect(),
            reason,
        }
    }

    /// Walk the rules of `policies` for `direction`, calling `on_allow` for
    /// each rule that allows the flow; stop when it returns true. Returns
    /// whether some rule allowed it, and what was seen.
    fn scan(
        &self,
        policies: &[usize],
        direction: Direction,
        other: Endpoint<'_>,
        flow: &Flow<'_>,
        mut on_allow: impl FnMut(&CompiledPolicy, usize) -> bool,
    ) -> (bool, Scan) {
        let destination = flow.destination.pod();
        let mut scan = Scan::default();
        let mut allowed = false;
        for &i in policies {
            let policy = &self.set.compiled[i];
            for (index, rule) in policy
                .rules(direction)
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                scan.any_rule = true;
                let matched = self.peer_matches(rule, &policy.id.namespace, other);
                if matched == PeerMatch::None {
                    continue;
                }
                scan.any_peer = true;
                // Egress: the destination is the peer, whose named ports
                // count only when a selector matched it (module docs).
                let named = direction == Direction::Ingress || matched == PeerMatch::Pod;
                let destination = destination.filter(|_| named);
                if port_matches(rule, flow.protocol, flow.port, destination) {
                    allowed = true;
                    if on_allow(policy, index) {
                        return (true, scan);
                    }
                }
            }
        }
        (allowed, scan)
    }

    /// How the rule's peers match the other side: a selector (or no
    /// peers) beats an `ipBlock` only, which only matters for named ports.
    fn peer_matches(&self, rule: &Rule, policy_namespace: &str, other: Endpoint<'_>) -> PeerMatch {
        let Some(peers) = &rule.peers else {
            return PeerMatch::Pod;
        };
        let mut matched = PeerMatch::None;
        for peer in peers {
            match (peer, other) {
                (Peer::IpBlock { .. }, Endpoint::External(ip) | Endpoint::PodAt(_, ip)) => {
                    if peer.matches_ip(ip) {
                        matched = PeerMatch::Address;
                    }
                }
                (Peer::IpBlock { .. }, Endpoint::Pod(pod)) => {
                    if pod.meta.ips.iter().any(|&ip| peer.matches_ip(ip)) {
                        matched = PeerMatch::Address;
                    }
                }
                (Peer::Pods { .. }, Endpoint::External(_)) => {}
                (Peer::Pods { namespaces, pods }, Endpoint::Pod(pod) | Endpoint::PodAt(pod, _)) => {
                    if namespaces.matches(
                        &pod.meta.namespace,
                        policy_namespace,
                        &self.cluster.namespaces,
                    ) && pods.matches(&pod.meta.labels)
                    {
                        return PeerMatch::Pod;
                    }
                }
            }
        }
        matched
    }
}

/// What matched the other side of a flow in a rule's peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PeerMatch {
    /// Nothing.
    None,
    /// An `ipBlock` only.
    Address,
    /// A selector, or the rule has no peers (everyone).
    Pod,
}

fn port_matches(
    rule: &Rule,
    protocol: Protocol,
    port: u16,
    destination: Option<&ClusterPod>,
) -> bool {
    let Some(ports) = &rule.ports else {
        return true;
    };
    ports.iter().any(|p| {
        p.protocol == protocol
            && match &p.port {
                PortMatch::Any => true,
                PortMatch::Range(lo, hi) => (*lo..=*hi).contains(&port),
                PortMatch::Named(name) => destination.is_some_and(|pod| {
                    pod.ports.iter().any(|cp| {
                        cp.port == port
                            && cp.protocol == protocol
                            && cp.name.as_deref() == Some(name)
                    })
                }),
            }
    })
}

#[cfg(test)]
mod tests;
