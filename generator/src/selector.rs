//! Label selectors (`metav1.LabelSelector`) as NetworkPolicy uses them:
//! `matchLabels` and `matchExpressions` ANDed, the empty selector `{}`
//! matching everything.
//!
//! weir keeps its own small matcher rather than `kube_core::Selector`:
//! `kube-core` is not a dependency of the workspace and would bring its own
//! `k8s-openapi` version next to ours; its conversion error does not say
//! which field of which policy is wrong, which `weir verify` must report;
//! and the semantics fit in a page (`k8s.io/apimachinery`
//! `LabelSelectorAsSelector`), tested here by a table.
//!
//! Semantics, as in `apimachinery/pkg/labels/selector.go`:
//! - `matchLabels: {k: v}`: the label `k` exists with value `v`;
//! - `In`: the label exists and its value is one of `values`;
//! - `NotIn`: the label is absent, or its value is none of `values`;
//! - `Exists` / `DoesNotExist`: the key is present / absent.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// A selector that the API server would reject, with the field at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SelectorError {
    /// Path of the offending field, e.g. `spec.podSelector.matchExpressions[0].values`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A `matchExpressions` operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    /// `In`.
    In,
    /// `NotIn`.
    NotIn,
    /// `Exists`.
    Exists,
    /// `DoesNotExist`.
    DoesNotExist,
}

impl Operator {
    /// The operator for its API spelling (case-sensitive, as the API server is).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "In" => Some(Self::In),
            "NotIn" => Some(Self::NotIn),
            "Exists" => Some(Self::Exists),
            "DoesNotExist" => Some(Self::DoesNotExist),
            _ => None,
        }
    }
}

/// One compiled requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    key: String,
    operator: Operator,
    /// Sorted and deduplicated (for `In`/`NotIn`).
    values: Vec<String>,
}

impl Requirement {
    fn matches<'l>(&self, get: &impl Fn(&str) -> Option<&'l str>) -> bool {
        let value = get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }

    fn contains(&self, v: &str) -> bool {
        self.values
            .binary_search_by(|probe| probe.as_str().cmp(v))
            .is_ok()
    }
}

/// A validated, compiled label selector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    labels: Vec<(String, String)>,
    requirements: Vec<Requirement>,
}

impl Selector {
    /// Validate and compile `selector`; errors name fields under `field_path`.
    ///
    /// # Errors
    ///
    /// An unknown operator, `In`/`NotIn` without values,
    /// `Exists`/`DoesNotExist` with values, or a key or value that is not
    /// a valid label key or value.
    pub fn new(selector: &LabelSelector, field_path: &str) -> Result<Self, SelectorError> {
        crate::names::labels(
            selector.match_labels.iter().flatten(),
            &format!("{field_path}.matchLabels"),
        )
        .map_err(|(field, reason)| SelectorError { field, reason })?;
        let labels = selector
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut requirements = Vec::new();
        for (i, req) in selector.match_expressions.iter().flatten().enumerate() {
            requirements.push(compile_requirement(
                req,
                &format!("{field_path}.matchExpressions[{i}]"),
            )?);
        }
        Ok(Self {
            labels,
            requirements,
        })
    }

    /// The selector that matches everything (`{}`).
    #[must_use]
    pub fn everything() -> Self {
        Self::default()
    }

    /// Whether this is the empty selector, which matches everything.
    #[must_use]
    pub fn is_everything(&self) -> bool {
        self.labels.is_empty() && self.requirements.is_empty()
    }

    /// Whether a set of labels matches.
    #[must_use]
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(|k| labels.get(k).map(String::as_str))
    }

    /// Whether the labels that `get` looks up match (for label sets that
    /// are not a `BTreeMap`, such as a namespace known only by name).
    pub fn matches_with<'l>(&self, get: impl Fn(&str) -> Option<&'l str>) -> bool {
        self.labels.iter().all(|(k, v)| get(k) == Some(v.as_str()))
            && self.requirements.iter().all(|r| r.matches(&get))
    }
}

fn compile_requirement(
    req: &LabelSelectorRequirement,
    path: &str,
) -> Result<Requirement, SelectorError> {
    let err = |field: String, reason: String| SelectorError { field, reason };
    if req.key.is_empty() {
        return Err(err(format!("{path}.key"), "must not be empty".into()));
    }
    crate::names::label_key(&req.key).map_err(|reason| err(format!("{path}.key"), reason))?;
    for (i, value) in req.values.iter().flatten().enumerate() {
        crate::names::label_value(value)
            .map_err(|reason| err(format!("{path}.values[{i}]"), reason))?;
    }
    let Some(operator) = Operator::parse(&req.operator) else {
        return Err(err(
            format!("{path}.operator"),
            format!(
                "unknown operator {:?} (expected In, NotIn, Exists or DoesNotExist)",
                req.operator
            ),
        ));
    };
    let values = req.values.as_deref().unwrap_or_default();
    match operator {
        Operator::In | Operator::NotIn if values.is_empty() => {
            return Err(err(
                format!("{path}.values"),
                format!("must be specified when operator is {}", req.operator),
            ));
        }
        Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
            return Err(err(
                format!("{path}.values"),
                format!("may not be specified when operator is {}", req.operator),
            ));
        }
        _ => {}
    }
    let mut values = values.to_vec();
    values.sort();
    values.dedup();
    Ok(Requirement {
        key: req.key.clone(),
        operator,
        values,
    })
}

/// Check `selector` as the API server would; errors name fields under
/// `field_path` (e.g. `spec.podSelector`).
///
/// # Errors
///
/// See [`Selector::new`].
pub fn validate(selector: &LabelSelector, field_path: &str) -> Result<(), SelectorError> {
    Selector::new(selector, field_path).map(drop)
}

/// Whether `labels` match `selector`. An invalid selector (see
/// [`validate`]) matches nothing, as a selector that cannot be converted
/// selects nothing in the API server's controllers.
#[must_use]
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    Selector::new(selector, "").is_ok_and(|s| s.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: Option<&[&str]>) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.map(|v| v.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    fn sel(ml: &[(&str, &str)], me: Vec<LabelSelectorRequirement>) -> LabelSelector {
        LabelSelector {
            match_labels: (!ml.is_empty()).then(|| labels(ml)),
            match_expressions: (!me.is_empty()).then_some(me),
        }
    }

    #[test]
    fn matching_table() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        let bare = labels(&[]);
        // (selector, labels, expected)
        let cases: Vec<(LabelSelector, &BTreeMap<String, String>, bool)> = vec![
            (LabelSelector::default(), &web, true),
            (LabelSelector::default(), &bare, true),
            (sel(&[("app", "web")], vec![]), &web, true),
            (sel(&[("app", "db")], vec![]), &web, false),
            (
                sel(&[("app", "web"), ("tier", "back")], vec![]),
                &web,
                false,
            ),
            (sel(&[("app", "web")], vec![]), &bare, false),
            (
                sel(&[], vec![expr("app", "In", Some(&["db", "web"]))]),
                &web,
                true,
            ),
            (
                sel(&[], vec![expr("app", "In", Some(&["db"]))]),
                &web,
                false,
            ),
            (
                sel(&[], vec![expr("app", "In", Some(&["web"]))]),
                &bare,
                false,
            ),
            (
                sel(&[], vec![expr("app", "NotIn", Some(&["db"]))]),
                &web,
                true,
            ),
            (
                sel(&[], vec![expr("app", "NotIn", Some(&["web"]))]),
                &web,
                false,
            ),
            // NotIn matches when the label is absent.
            (
                sel(&[], vec![expr("app", "NotIn", Some(&["web"]))]),
                &bare,
                true,
            ),
            (sel(&[], vec![expr("app", "Exists", None)]), &web, true),
            (sel(&[], vec![expr("app", "Exists", None)]), &bare, false),
            (
                sel(&[], vec![expr("app", "DoesNotExist", None)]),
                &web,
                false,
            ),
            (
                sel(&[], vec![expr("app", "DoesNotExist", None)]),
                &bare,
                true,
            ),
            // matchLabels AND matchExpressions.
            (
                sel(&[("app", "web")], vec![expr("tier", "In", Some(&["back"]))]),
                &web,
                false,
            ),
            (
                sel(
                    &[("app", "web")],
                    vec![
                        expr("tier", "In", Some(&["front"])),
                        expr("x", "DoesNotExist", None),
                    ],
                ),
                &web,
                true,
            ),
            // Empty values list for Exists is fine.
            (sel(&[], vec![expr("app", "Exists", Some(&[]))]), &web, true),
            // Invalid selectors match nothing.
            (
                sel(&[], vec![expr("app", "in", Some(&["web"]))]),
                &web,
                false,
            ),
            (sel(&[], vec![expr("app", "In", None)]), &web, false),
        ];
        for (i, (s, l, want)) in cases.iter().enumerate() {
            assert_eq!(matches(s, l), *want, "case {i}: {s:?} on {l:?}");
        }
    }

    #[test]
    fn validation_table() {
        // (selector, expected error field, expected reason fragment)
        let cases: Vec<(LabelSelector, Option<(&str, &str)>)> = vec![
            (LabelSelector::default(), None),
            (sel(&[], vec![expr("a", "In", Some(&["1"]))]), None),
            (sel(&[], vec![expr("a", "DoesNotExist", None)]), None),
            (
                sel(&[], vec![expr("a", "Equals", Some(&["1"]))]),
                Some(("p.matchExpressions[0].operator", "unknown operator")),
            ),
            (
                sel(
                    &[],
                    vec![expr("a", "Exists", None), expr("b", "NotIn", Some(&[]))],
                ),
                Some(("p.matchExpressions[1].values", "must be specified")),
            ),
            (
                sel(&[], vec![expr("a", "In", None)]),
                Some(("p.matchExpressions[0].values", "must be specified")),
            ),
            (
                sel(&[], vec![expr("a", "Exists", Some(&["x"]))]),
                Some(("p.matchExpressions[0].values", "may not be specified")),
            ),
            (
                sel(&[], vec![expr("", "Exists", None)]),
                Some(("p.matchExpressions[0].key", "must not be empty")),
            ),
        ];
        for (s, want) in cases {
            match (validate(&s, "p"), want) {
                (Ok(()), None) => {}
                (Err(e), Some((field, reason))) => {
                    assert_eq!(e.field, field, "{s:?}");
                    assert!(e.reason.contains(reason), "{s:?}: {e}");
                }
                (got, want) => panic!("{s:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn matches_with_a_lookup() {
        let s = Selector::new(&sel(&[("kubernetes.io/metadata.name", "x")], vec![]), "p").unwrap();
        assert!(s.matches_with(|k| (k == "kubernetes.io/metadata.name").then_some("x")));
        assert!(!s.matches_with(|_| None));
        assert!(Selector::everything().is_everything());
    }
}
