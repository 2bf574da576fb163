//! `--dialect anp`: one cluster-scoped AdminNetworkPolicy
//! (`policy.networking.k8s.io/v1alpha1`, experimental channel) per
//! workload with egress to DNS names.
//!
//! - Its subject is the workload's pods: `namespaceSelector` on
//!   `kubernetes.io/metadata.name` AND the workload's `podSelector`.
//! - One `Allow` rule per name (or folded pattern) with `to: [{domainNames:
//!   [name]}]` and the ports seen. Only `Allow`: NPEP-133 allows
//!   `domainNames` in Allow rules only.
//! - Priority [`PRIORITY`] for all of them. Allow rules do not conflict
//!   with each other, so one priority serves every weir policy; 900 of
//!   0..=1000 puts them after an administrator's own policies (lower
//!   numbers go first), whose Deny and Pass rules then still win.
//! - Everything else stays in the standard NetworkPolicies, which an ANP
//!   Allow bypasses for the names' traffic only; their default deny
//!   remains the "lower priority egress deny" NPEP-133 asks Allow rules to
//!   be paired with.
//! - An ANP holds at most [`MAX_RULES`] egress rules: a workload with more
//!   names gets `-2`, `-3`, ... objects.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use super::{NAMESPACE_NAME_LABEL, PortSet, Target, meta, valid_name};
use crate::synth::render;

/// `apiVersion` of the objects.
pub const API_VERSION: &str = "policy.networking.k8s.io/v1alpha1";
/// `kind` of the objects.
pub const KIND: &str = "AdminNetworkPolicy";
/// `spec.priority` of every AdminNetworkPolicy weir writes.
pub const PRIORITY: u32 = 900;
/// Most egress rules in one AdminNetworkPolicy (its CRD's `maxItems`).
pub const MAX_RULES: usize = 100;
/// Longest rule name (the CRD's `maxLength`).
const MAX_RULE_NAME: usize = 100;

/// An AdminNetworkPolicy, with the fields weir writes.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminNetworkPolicy {
    /// [`API_VERSION`].
    pub api_version: String,
    /// [`KIND`].
    pub kind: String,
    /// Name (cluster-wide), labels, evidence.
    pub metadata: ObjectMeta,
    /// The rules.
    pub spec: Spec,
}

/// `spec`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Spec {
    /// [`PRIORITY`].
    pub priority: u32,
    /// The workload's pods.
    pub subject: Subject,
    /// One Allow rule per name.
    pub egress: Vec<EgressRule>,
}

/// `subject.pods`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Subject {
    /// Pods by namespace and labels.
    pub pods: NamespacedPod,
}

/// A namespace selector AND a pod selector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedPod {
    /// The namespace, by its name label.
    pub namespace_selector: Selector,
    /// The workload's pods.
    pub pod_selector: Selector,
}

/// A label selector by labels.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    /// Labels; empty selects everything.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

/// One egress rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EgressRule {
    /// Identifies the rule (the name it allows).
    pub name: String,
    /// Always `Allow`.
    pub action: String,
    /// One `domainNames` peer.
    pub to: Vec<Peer>,
    /// The ports seen.
    pub ports: Vec<Port>,
}

/// A `domainNames` peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    /// The name or pattern.
    pub domain_names: Vec<String>,
}

/// A `portNumber` port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    /// Port and protocol.
    pub port_number: PortNumber,
}

/// Port and protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PortNumber {
    /// The number.
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
}

/// Whether the CRD accepts `name` in `domainNames`: two labels at least,
/// each starting and ending with a letter or digit, `*.` only as a prefix.
pub(super) fn accepts(name: &str) -> bool {
    valid_name(name, true)
}

fn ports(set: &PortSet) -> Vec<Port> {
    set.iter()
        .map(|(proto, port)| Port {
            port_number: PortNumber {
                port: *port,
                protocol: proto.as_str().to_owned(),
            },
        })
        .collect()
}

/// The policies of one workload: `targets` are its names (or patterns),
/// [`MAX_RULES`] per object.
pub(super) fn policies(
    namespace: &str,
    base_name: &str,
    selector: &BTreeMap<String, String>,
    targets: &[Target],
    evidence: &str,
) -> Vec<AdminNetworkPolicy> {
    targets
        .chunks(MAX_RULES)
        .enumerate()
        .map(|(i, chunk)| {
            let name = if i == 0 {
                render::dns1123(base_name, render::MAX_NAME)
            } else {
                render::dns1123(&format!("{base_name}-{}", i + 1), render::MAX_NAME)
            };
            AdminNetworkPolicy {
                api_version: API_VERSION.to_owned(),
                kind: KIND.to_owned(),
                metadata: meta(&name, None, evidence.to_owned()),
                spec: Spec {
                    priority: PRIORITY,
                    subject: Subject {
                        pods: NamespacedPod {
                            namespace_selector: Selector {
                                match_labels: BTreeMap::from([(
                                    NAMESPACE_NAME_LABEL.to_owned(),
                                    namespace.to_owned(),
                                )]),
                            },
                            pod_selector: Selector {
                                match_labels: selector.clone(),
                            },
                        },
                    },
                    egress: chunk
                        .iter()
                        .map(|t| EgressRule {
                            name: render::dns1123(
                                &format!("allow-{}", t.pattern.replace('*', "any")),
                                MAX_RULE_NAME,
                            ),
                            action: "Allow".to_owned(),
                            to: vec![Peer {
                                domain_names: vec![t.pattern.clone()],
                            }],
                            ports: ports(&t.ports),
                        })
                        .collect(),
                },
            }
        })
        .collect()
}
