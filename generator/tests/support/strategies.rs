//! proptest strategies for label selectors over the small label alphabet
//! the property tests' clusters use, and for whole NetworkPolicies around
//! each test's own peers and ports (shared by the evaluator's and the
//! compiler's differential tests).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::networking::v1::{
        NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
        NetworkPolicyPort, NetworkPolicySpec,
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, ObjectMeta},
};
use proptest::{collection::vec, option, prelude::*, sample::select};

use super::NAMESPACES;

/// Label keys of the random pods and selectors.
pub const KEYS: [&str; 2] = ["app", "tier"];
/// Label values of the random pods and selectors.
pub const VALUES: [&str; 3] = ["a", "b", "c"];

pub fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map(
        select(&KEYS[..]).prop_map(str::to_owned),
        select(&VALUES[..]).prop_map(str::to_owned),
        0..=2,
    )
}

pub fn requirement() -> impl Strategy<Value = LabelSelectorRequirement> {
    let values = vec(select(&VALUES[..]).prop_map(str::to_owned), 1..=2);
    (
        select(&KEYS[..]),
        select(&["In", "NotIn", "Exists", "DoesNotExist"][..]),
        values,
    )
        .prop_map(|(key, operator, values)| LabelSelectorRequirement {
            key: key.to_owned(),
            operator: operator.to_owned(),
            values: matches!(operator, "In" | "NotIn").then_some(values),
        })
}

pub fn selector() -> impl Strategy<Value = LabelSelector> {
    (option::of(labels()), option::of(vec(requirement(), 0..=2))).prop_map(
        |(match_labels, match_expressions)| LabelSelector {
            match_labels,
            match_expressions,
        },
    )
}

/// Namespace selectors also pick namespaces by name.
pub fn namespace_selector() -> impl Strategy<Value = LabelSelector> {
    prop_oneof![
        3 => selector(),
        1 => select(&NAMESPACES[..]).prop_map(|ns| LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_owned(),
                ns.to_owned()
            )])),
            match_expressions: None,
        }),
    ]
}

/// Every shape of `policyTypes`, the empty list included.
pub const POLICY_TYPES: [Option<&[&str]>; 5] = [
    None,
    Some(&[]),
    Some(&["Ingress"]),
    Some(&["Egress"]),
    Some(&["Ingress", "Egress"]),
];

/// A policy in x, y or z with up to two ingress and two egress rules, each
/// of up to two peers from `peer()` and two ports from `port()`.
pub fn policy<Peer, Port>(
    peer: impl Fn() -> Peer,
    port: impl Fn() -> Port,
) -> impl Strategy<Value = NetworkPolicy>
where
    Peer: Strategy<Value = NetworkPolicyPeer>,
    Port: Strategy<Value = NetworkPolicyPort>,
{
    let rule = || {
        (
            option::of(vec(peer(), 0..=2)),
            option::of(vec(port(), 0..=2)),
        )
    };
    (
        select(&NAMESPACES[..]),
        option::of(selector()),
        select(&POLICY_TYPES[..])
            .prop_map(|t| t.map(|t| t.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())),
        option::of(vec(rule(), 0..=2)),
        option::of(vec(rule(), 0..=2)),
    )
        .prop_map(
            |(ns, pod_selector, policy_types, ingress, egress)| NetworkPolicy {
                metadata: ObjectMeta {
                    namespace: Some(ns.to_owned()),
                    ..Default::default()
                },
                spec: Some(NetworkPolicySpec {
                    pod_selector,
                    policy_types,
                    ingress: ingress.map(|rules| {
                        rules
                            .into_iter()
                            .map(|(from, ports)| NetworkPolicyIngressRule { from, ports })
                            .collect()
                    }),
                    egress: egress.map(|rules| {
                        rules
                            .into_iter()
                            .map(|(to, ports)| NetworkPolicyEgressRule { ports, to })
                            .collect()
                    }),
                }),
            },
        )
}
