//! `--fqdn-patterns`: sibling names folded into one wildcard.
//!
//! The rule, exactly:
//!
//! - a name's *parent* is the name without its first label
//!   (`a.api.example` -> `api.example`);
//! - names fold only into a parent of at least two labels, so a wildcard
//!   never covers a whole top-level domain (`a.example` and `b.example`
//!   stay as they are, never `*.example`);
//! - two or more different names with the same parent AND the same port
//!   set fold into `*.<parent>` with that port set: folding widens to
//!   siblings never seen, never to ports never seen;
//! - a name alone with its parent and ports stays exact, and so does the
//!   parent itself (`api.example` is not matched by `*.api.example`).
//!
//! `*.<parent>` matches one label in Cilium's `matchPattern` (the `*`
//! matches DNS characters other than `.`) and one or more labels in an
//! AdminNetworkPolicy's `domainNames`.

use std::collections::{BTreeMap, BTreeSet};

/// A name or a wildcard with the names it stands for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Folded<P> {
    /// `api.payments.example` or `*.api.example`.
    pub pattern: String,
    /// Whether `pattern` is a wildcard.
    pub wildcard: bool,
    /// The observed names it stands for (itself when exact).
    pub names: BTreeSet<String>,
    /// Their common port set.
    pub ports: P,
}

/// Fold `names` (name -> ports) by the rule above; sorted by pattern.
pub fn fold<P: Ord + Clone>(names: &BTreeMap<String, P>) -> Vec<Folded<P>> {
    let mut groups: BTreeMap<(&str, &P), BTreeSet<&str>> = BTreeMap::new();
    let mut out = Vec::new();
    for (name, ports) in names {
        match name.split_once('.') {
            Some((_, parent)) if parent.contains('.') => {
                groups.entry((parent, ports)).or_default().insert(name);
            }
            _ => out.push(exact(name, ports)),
        }
    }
    for ((parent, ports), members) in groups {
        if members.len() < 2 {
            out.extend(members.into_iter().map(|n| exact(n, ports)));
        } else {
            out.push(Folded {
                pattern: format!("*.{parent}"),
                wildcard: true,
                names: members.into_iter().map(str::to_owned).collect(),
                ports: ports.clone(),
            });
        }
    }
    out.sort();
    out
}

/// Every name as it is (no `--fqdn-patterns`); sorted by name.
pub fn exact_all<P: Ord + Clone>(names: &BTreeMap<String, P>) -> Vec<Folded<P>> {
    names.iter().map(|(n, p)| exact(n, p)).collect()
}

fn exact<P: Clone>(name: &str, ports: &P) -> Folded<P> {
    Folded {
        pattern: name.to_owned(),
        wildcard: false,
        names: BTreeSet::from([name.to_owned()]),
        ports: ports.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(list: &[(&str, u16)]) -> BTreeMap<String, u16> {
        list.iter().map(|(n, p)| ((*n).to_owned(), *p)).collect()
    }

    fn patterns(list: &[(&str, u16)]) -> Vec<(String, Vec<String>, u16)> {
        fold(&input(list))
            .into_iter()
            .map(|f| (f.pattern, f.names.into_iter().collect(), f.ports))
            .collect()
    }

    #[test]
    fn siblings_with_the_same_ports_fold() {
        assert_eq!(
            patterns(&[("a.api.example", 443), ("b.api.example", 443)]),
            [(
                "*.api.example".to_owned(),
                vec!["a.api.example".to_owned(), "b.api.example".to_owned()],
                443
            )]
        );
    }

    #[test]
    fn what_does_not_fold() {
        // Different ports: two exact names.
        assert_eq!(
            patterns(&[("a.api.example", 443), ("b.api.example", 8443)])
                .into_iter()
                .map(|p| p.0)
                .collect::<Vec<_>>(),
            ["a.api.example", "b.api.example"]
        );
        // A parent of one label: never a wildcard over a top-level domain.
        assert_eq!(
            patterns(&[("a.example", 443), ("b.example", 443)])
                .into_iter()
                .map(|p| p.0)
                .collect::<Vec<_>>(),
            ["a.example", "b.example"]
        );
        // Alone under its parent; the parent itself is not a sibling;
        // cousins (different parents) do not fold.
        assert_eq!(
            patterns(&[
                ("api.example", 443),
                ("x.a.api.example", 443),
                ("y.b.api.example", 443),
            ])
            .into_iter()
            .map(|p| p.0)
            .collect::<Vec<_>>(),
            ["api.example", "x.a.api.example", "y.b.api.example"]
        );
        // One-label names stay.
        assert_eq!(patterns(&[("localhost", 80)])[0].0, "localhost");
    }

    #[test]
    fn folding_is_per_parent_and_port_set() {
        let got = patterns(&[
            ("a.api.example", 443),
            ("b.api.example", 443),
            ("c.api.example", 80),
            ("a.cdn.example", 443),
            ("b.cdn.example", 443),
        ]);
        let names: Vec<&str> = got.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(names, ["*.api.example", "*.cdn.example", "c.api.example"]);
    }
}
