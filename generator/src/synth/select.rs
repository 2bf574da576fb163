//! Choosing the label subset that selects exactly one workload's pods.
//!
//! The search is exact (smallest subset first) while the number of subsets
//! stays small, which covers every real workload (a handful of stable
//! labels); past [`SUBSET_BUDGET`] candidate subsets it falls back to a
//! greedy cover, which is still exact but maybe not the smallest.

use std::collections::BTreeMap;

use crate::{cluster::ClusterPod, identity::PER_ROLLOUT_LABELS};

/// Keys tried first, in this order, because they name the application
/// rather than a version or a rollout (the recommended label, the classic
/// one, and the one kube-dns and other addons use).
pub(super) const PREFERRED_KEYS: &[&str] = &["app.kubernetes.io/name", "app", "k8s-app"];

/// How many candidate subsets the exact search checks before going greedy.
const SUBSET_BUDGET: usize = 20_000;

/// The selector chosen for a workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Selection {
    /// `matchLabels`.
    pub labels: BTreeMap<String, String>,
    /// Whether it selects exactly the workload's pods in its namespace.
    pub exact: bool,
    /// When not exact: names of the other pods it selects too (sorted).
    pub also_selects: Vec<String>,
}

/// Labels every pod of the workload carries with the same value, less the
/// per-rollout ones, ordered by preference: [`PREFERRED_KEYS`] first, then
/// the rest by key. The order is the tie-break of the search.
fn candidate_labels(pods: &[&ClusterPod]) -> Vec<(String, String)> {
    let Some((first, rest)) = pods.split_first() else {
        return Vec::new();
    };
    let mut common: Vec<(String, String)> = first
        .meta
        .labels
        .iter()
        .filter(|(k, v)| {
            !PER_ROLLOUT_LABELS.contains(&k.as_str())
                && rest.iter().all(|p| p.meta.labels.get(*k) == Some(*v))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let rank = |k: &str| {
        PREFERRED_KEYS
            .iter()
            .position(|p| *p == k)
            .unwrap_or(PREFERRED_KEYS.len())
    };
    common.sort_by(|(a, _), (b, _)| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
    common
}

/// A set of pod indices (into `others`) as a bit set.
#[derive(Clone)]
struct Bits(Vec<u64>);

impl Bits {
    fn and(&self, other: &Self) -> Self {
        Self(self.0.iter().zip(&other.0).map(|(a, b)| a & b).collect())
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    fn count(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }

    fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(i, w)| {
            (0..64)
                .filter(move |b| w & (1u64 << b) != 0)
                .map(move |b| i * 64 + b)
        })
    }
}

/// The smallest label subset of the workload's `pods` that selects none of
/// `others` (the other pods of its namespace). Among subsets of the same
/// size the first in preference order wins. A workload without stable
/// labels that is alone in its namespace gets `{}`.
#[cfg(test)]
pub(super) fn select(pods: &[&ClusterPod], others: &[&ClusterPod]) -> Selection {
    select_in(
        pods,
        others,
        |_| false,
        |k, v| {
            others
                .iter()
                .enumerate()
                .filter(|(_, p)| p.meta.labels.get(k).map(String::as_str) == Some(v))
                .map(|(j, _)| j)
                .collect()
        },
    )
}

/// [`select`] over a namespace's pods `universe`, of which `own(j)` tells
/// the workload's own; `posting(k, v)` lists the universe pods carrying
/// label `k=v` (an inverted index, so that selecting every workload of a
/// namespace costs the sum of posting lists, not pods x labels lookups).
pub(super) fn select_in(
    pods: &[&ClusterPod],
    universe: &[&ClusterPod],
    own: impl Fn(usize) -> bool,
    posting: impl Fn(&str, &str) -> Vec<usize>,
) -> Selection {
    let candidates = candidate_labels(pods);
    let n = universe.len();
    let mut others = Bits(vec![0; n.div_ceil(64)]);
    for j in (0..n).filter(|&j| !own(j)) {
        others.0[j / 64] |= 1 << (j % 64);
    }
    // matches[i]: the other pods that carry candidate label i.
    let matches: Vec<Bits> = candidates
        .iter()
        .map(|(k, v)| {
            let mut bits = Bits(vec![0; n.div_ceil(64)]);
            for j in posting(k, v) {
                bits.0[j / 64] |= 1 << (j % 64);
            }
            bits.and(&others)
        })
        .collect();
    let selected_by = |subset: &[usize]| {
        subset
            .iter()
            .fold(others.clone(), |acc, &i| acc.and(&matches[i]))
    };
    let labels_of = |subset: &[usize]| -> BTreeMap<String, String> {
        subset.iter().map(|&i| candidates[i].clone()).collect()
    };

    let all: Vec<usize> = (0..candidates.len()).collect();
    let leftover = selected_by(&all);
    if !leftover.is_empty() {
        // Even every stable label together selects other pods: nothing
        // does better, so take the most specific selector and say so.
        let mut also: Vec<String> = leftover
            .ones()
            .map(|j| universe[j].meta.name.clone())
            .collect();
        also.sort();
        return Selection {
            labels: labels_of(&all),
            exact: false,
            also_selects: also,
        };
    }
    if candidates.is_empty() {
        return Selection {
            labels: BTreeMap::new(),
            exact: true,
            also_selects: Vec::new(),
        };
    }
    let mut budget = SUBSET_BUDGET;
    for size in 1..=candidates.len() {
        let mut combo: Vec<usize> = (0..size).collect();
        loop {
            if budget == 0 {
                return greedy(&candidates, &matches, &others);
            }
            budget -= 1;
            if selected_by(&combo).is_empty() {
                return Selection {
                    labels: labels_of(&combo),
                    exact: true,
                    also_selects: Vec::new(),
                };
            }
            if !next_combination(&mut combo, candidates.len()) {
                break;
            }
        }
    }
    // Unreachable in practice: the full set was exact above.
    greedy(&candidates, &matches, &others)
}

/// Advance `combo` (strictly increasing indices below `n`) to the next
/// combination in lexicographic order; false when it was the last.
fn next_combination(combo: &mut [usize], n: usize) -> bool {
    let k = combo.len();
    let mut i = k;
    while i > 0 {
        i -= 1;
        if combo[i] < n - k + i {
            combo[i] += 1;
            for j in i + 1..k {
                combo[j] = combo[j - 1] + 1;
            }
            return true;
        }
    }
    false
}

/// Greedy cover: repeatedly add the label that leaves the fewest other pods
/// selected (earliest in preference order on ties) until none is left.
fn greedy(candidates: &[(String, String)], matches: &[Bits], others: &Bits) -> Selection {
    let mut chosen: Vec<usize> = Vec::new();
    let mut current = others.clone();
    while !current.is_empty() {
        let best = (0..candidates.len())
            .filter(|i| !chosen.contains(i))
            .min_by_key(|&i| (current.and(&matches[i]).count(), i));
        let Some(best) = best else { break };
        current = current.and(&matches[best]);
        chosen.push(best);
    }
    Selection {
        labels: chosen.iter().map(|&i| candidates[i].clone()).collect(),
        exact: current.is_empty(),
        also_selects: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PodMeta, WorkloadKind, WorkloadRef};

    fn pod(name: &str, labels: &[(&str, &str)]) -> ClusterPod {
        ClusterPod {
            meta: PodMeta {
                namespace: "ns".into(),
                name: name.into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                workload: WorkloadRef::new("ns", WorkloadKind::Pod, name),
                ips: vec![],
            },
            ports: vec![],
        }
    }

    fn keys(s: &Selection) -> Vec<String> {
        s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    #[test]
    fn prefers_well_known_keys_and_skips_rollout_labels() {
        let a = pod(
            "a",
            &[
                ("pod-template-hash", "x1"),
                ("team", "a"),
                ("app", "web"),
                ("app.kubernetes.io/name", "web"),
            ],
        );
        let s = select(&[&a], &[]);
        assert_eq!(keys(&s), ["app.kubernetes.io/name=web"]);
        assert!(s.exact);
    }

    #[test]
    fn takes_the_smallest_subset_that_excludes_the_rest() {
        let web = pod("web", &[("app", "shop"), ("tier", "web")]);
        let api = pod("api", &[("app", "shop"), ("tier", "api")]);
        let s = select(&[&web], &[&api]);
        assert_eq!(keys(&s), ["tier=web"]);
        // Two labels needed: each alone is shared with someone else.
        let a = pod("a", &[("app", "x"), ("tier", "1")]);
        let b = pod("b", &[("app", "x"), ("tier", "2")]);
        let c = pod("c", &[("app", "y"), ("tier", "1")]);
        let s = select(&[&a], &[&b, &c]);
        assert_eq!(keys(&s), ["app=x", "tier=1"]);
        assert!(s.exact);
    }

    #[test]
    fn labels_that_differ_between_pods_are_not_candidates() {
        let a1 = pod("a1", &[("app", "a"), ("version", "1")]);
        let a2 = pod("a2", &[("app", "a"), ("version", "2")]);
        let b = pod("b", &[("app", "b"), ("version", "1")]);
        let s = select(&[&a1, &a2], &[&b]);
        assert_eq!(keys(&s), ["app=a"]);
    }

    #[test]
    fn inexact_when_labels_are_a_subset_of_another_workloads() {
        let a = pod("a", &[("app", "a"), ("pod-template-hash", "1")]);
        let b = pod("b", &[("app", "a"), ("extra", "yes")]);
        let s = select(&[&a], &[&b]);
        assert!(!s.exact);
        assert_eq!(keys(&s), ["app=a"]);
        assert_eq!(s.also_selects, ["b"]);
    }

    #[test]
    fn no_labels_alone_in_namespace_is_everything() {
        let a = pod("a", &[("pod-template-hash", "1")]);
        let s = select(&[&a], &[]);
        assert!(s.exact && s.labels.is_empty());
    }

    #[test]
    fn combinations_are_enumerated_in_order() {
        let mut c = vec![0, 1];
        let mut seen = vec![c.clone()];
        while next_combination(&mut c, 4) {
            seen.push(c.clone());
        }
        assert_eq!(
            seen,
            [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]].map(Vec::from)
        );
    }
}
