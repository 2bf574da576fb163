//! What the cluster looks like, as far as NetworkPolicy cares: namespaces
//! with their labels, pods with labels, IPs and named ports, and Services.
//! Both the evaluator and the learner read it; the agent builds it from
//! whichever source it runs on.

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

use crate::model::{PodMeta, Protocol};

/// The label the API server puts on every namespace, its name (immutable
/// since Kubernetes 1.21): policies select peer namespaces by it, and weir
/// assumes it even when a namespace's labels omit it.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A port a container declares (`spec.containers[].ports[]`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NamedPort {
    /// `name`, which policies may refer to.
    pub name: Option<String>,
    /// `containerPort`.
    pub port: u16,
    /// `protocol` (TCP when unset).
    pub protocol: Protocol,
}

/// A pod with what policies select and match on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterPod {
    /// Identity, labels and IPs.
    pub meta: PodMeta,
    /// Declared container ports (for named ports).
    pub ports: Vec<NamedPort>,
}

/// A Service port and where it leads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    /// `port`: what clients connect to on the ClusterIP.
    pub port: u16,
    /// `protocol`.
    pub protocol: Protocol,
    /// `targetPort`: the backend pod's port.
    pub target: TargetPort,
}

/// `targetPort`: a number, or a container port name resolved per backend pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetPort {
    /// A port number.
    Number(u16),
    /// A container port name.
    Name(String),
}

/// A ClusterIP Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterService {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// ClusterIPs.
    pub cluster_ips: Vec<IpAddr>,
    /// Selector (`None`: a Service without selector, endpoints managed elsewhere).
    pub selector: Option<BTreeMap<String, String>>,
    /// Ports.
    pub ports: Vec<ServicePort>,
}

/// The cluster: namespaces, pods and Services.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    /// Namespace name -> labels (including `kubernetes.io/metadata.name`).
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Every pod.
    pub pods: Vec<ClusterPod>,
    /// ClusterIP Services.
    pub services: Vec<ClusterService>,
}

impl Cluster {
    /// The labels of a namespace; a namespace known only from its pods has
    /// the label every namespace carries, `kubernetes.io/metadata.name`.
    #[must_use]
    pub fn namespace_labels(&self, namespace: &str) -> BTreeMap<String, String> {
        self.namespaces.get(namespace).cloned().unwrap_or_else(|| {
            BTreeMap::from([(NAMESPACE_NAME_LABEL.to_owned(), namespace.to_owned())])
        })
    }

    /// The pod holding `ip`.
    #[must_use]
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&ClusterPod> {
        self.pods.iter().find(|p| p.meta.ips.contains(&ip))
    }
}
