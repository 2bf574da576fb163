//! proptest strategies for label selectors over the small label alphabet
//! the property tests' clusters use (shared by the evaluator's and the
//! compiler's differential tests).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
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
