//! `--dialect cilium`: one CiliumNetworkPolicy (`cilium.io/v2`) per
//! workload with egress to DNS names.
//!
//! - One egress rule per name (or folded pattern) with `toFQDNs`
//!   (`matchName`, `matchPattern` for a folded pattern) and the ports seen:
//!   a name's new address is still the same rule, and Cilium learns the
//!   addresses from the lookups it sees.
//! - A first rule lets the pods reach kube-dns (`kube-system`, `k8s-app:
//!   kube-dns`) on 53/UDP and 53/TCP with `rules.dns: [{matchPattern:
//!   "*"}]`: Cilium only learns a name's addresses from lookups its DNS
//!   proxy sees, and only for traffic an L7 DNS rule selects. `*` keeps
//!   every other lookup (in-cluster Service names) working; it allows no
//!   destination beyond kube-dns.
//! - Everything else stays in the standard NetworkPolicies. Cilium enforces
//!   both kinds together, and allowed traffic is the union of what either
//!   allows, so the CiliumNetworkPolicy adds only the names.

use std::{collections::BTreeMap, fmt::Write as _};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use super::{PortSet, Target, meta, valid_name};

/// `apiVersion` of the objects.
pub const API_VERSION: &str = "cilium.io/v2";
/// `kind` of the objects.
pub const KIND: &str = "CiliumNetworkPolicy";
/// The kube-dns pods, as Cilium labels them (`k8s:` source prefix).
pub const KUBE_DNS: [(&str, &str); 2] = [
    ("k8s:io.kubernetes.pod.namespace", "kube-system"),
    ("k8s:k8s-app", "kube-dns"),
];

/// A CiliumNetworkPolicy, with the fields weir writes.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CiliumNetworkPolicy {
    /// [`API_VERSION`].
    pub api_version: String,
    /// [`KIND`].
    pub kind: String,
    /// Name, namespace, labels, evidence.
    pub metadata: ObjectMeta,
    /// The rules.
    pub spec: Spec,
}

/// `spec`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    /// The workload's pods.
    pub endpoint_selector: Selector,
    /// The DNS rule, then one rule per name.
    pub egress: Vec<EgressRule>,
}

/// An `EndpointSelector` by labels.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    /// Labels; empty selects every endpoint of the namespace.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

/// One egress rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    /// Endpoints (the DNS rule).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub to_endpoints: Vec<Selector>,
    /// Names.
    #[serde(rename = "toFQDNs", skip_serializing_if = "Vec::is_empty")]
    pub to_fqdns: Vec<FqdnSelector>,
    /// Ports (and the DNS rule's L7 rule).
    pub to_ports: Vec<PortRule>,
}

/// `matchName` or `matchPattern`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FqdnSelector {
    /// A literal name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_name: Option<String>,
    /// A wildcard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_pattern: Option<String>,
}

/// Ports, with L7 rules for the DNS rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PortRule {
    /// Port and protocol pairs.
    pub ports: Vec<PortProtocol>,
    /// `dns` rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<L7Rules>,
}

/// A port (a string, as Cilium's schema has it) and its protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PortProtocol {
    /// The number.
    pub port: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
}

/// L7 rules: DNS only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct L7Rules {
    /// Which lookups the DNS proxy allows (and sees).
    pub dns: Vec<FqdnSelector>,
}

/// Whether Cilium accepts `name` in `matchName` (or `pattern` in
/// `matchPattern`): labels of `[-a-z0-9_]` (and `*` in patterns).
pub(super) fn accepts(name: &str) -> bool {
    valid_name(name, false)
}

fn ports(set: &PortSet) -> Vec<PortProtocol> {
    set.iter()
        .map(|(proto, port)| PortProtocol {
            port: port.to_string(),
            protocol: proto.as_str().to_owned(),
        })
        .collect()
}

/// The policy of one workload: `targets` are its names (or patterns).
pub(super) fn policy(
    namespace: &str,
    name: &str,
    selector: &BTreeMap<String, String>,
    targets: &[Target],
    evidence: String,
) -> CiliumNetworkPolicy {
    let dns = EgressRule {
        to_endpoints: vec![Selector {
            match_labels: KUBE_DNS
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }],
        to_fqdns: Vec::new(),
        to_ports: vec![PortRule {
            ports: ["UDP", "TCP"]
                .iter()
                .map(|p| PortProtocol {
                    port: "53".to_owned(),
                    protocol: (*p).to_owned(),
                })
                .collect(),
            rules: Some(L7Rules {
                dns: vec![FqdnSelector {
                    match_name: None,
                    match_pattern: Some("*".to_owned()),
                }],
            }),
        }],
    };
    let mut egress = vec![dns];
    for t in targets {
        let selector = if t.wildcard {
            FqdnSelector {
                match_name: None,
                match_pattern: Some(t.pattern.clone()),
            }
        } else {
            FqdnSelector {
                match_name: Some(t.pattern.clone()),
                match_pattern: None,
            }
        };
        egress.push(EgressRule {
            to_endpoints: Vec::new(),
            to_fqdns: vec![selector],
            to_ports: vec![PortRule {
                ports: ports(&t.ports),
                rules: None,
            }],
        });
    }
    let mut evidence = evidence;
    let _ = writeln!(
        evidence,
        "egress to kube-dns 53/UDP, 53/TCP with a DNS rule: Cilium learns the names' addresses from the lookups it sees"
    );
    CiliumNetworkPolicy {
        api_version: API_VERSION.to_owned(),
        kind: KIND.to_owned(),
        metadata: meta(name, Some(namespace), evidence),
        spec: Spec {
            endpoint_selector: Selector {
                match_labels: selector.clone(),
            },
            egress,
        },
    }
}
