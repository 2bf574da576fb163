//! Policy dialects: the learner's suggestion written for a CNI that can
//! name an external peer by its DNS name (`weir export --dialect`).
//!
//! - [`Dialect::Standard`]: the suggestion as it is, NetworkPolicies only;
//!   a name's rule holds an `ipBlock` per address seen for it.
//! - [`Dialect::Cilium`]: the name rules move into one
//!   CiliumNetworkPolicy per workload with `toFQDNs` ([`cilium`]).
//! - [`Dialect::Anp`]: the name rules move into one AdminNetworkPolicy per
//!   workload with `domainNames` ([`anp`]).
//!
//! In both FQDN dialects the in-cluster part stays standard
//! NetworkPolicy, and a name's rule is taken out of the standard policy
//! (its `ipBlock`s would go stale as the name's addresses change). In-
//! cluster peers are never addresses in any dialect: they stay pod and
//! namespace selectors, and the FQDN objects hold names only.
//!
//! A name the dialect's schema would refuse (Cilium: labels of
//! `[-a-z0-9_]`; AdminNetworkPolicy: two labels at least, each starting
//! and ending with a letter or digit) keeps its standard rule, with a
//! warning. With [`Options::fqdn_patterns`], sibling names fold into
//! wildcards by the rule of [`fold`].

pub mod anp;
pub mod cilium;
pub mod fold;
mod input;
mod strip;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::{self, Write as _},
    str::FromStr,
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub use self::input::{AddressSeen, FqdnEgress};
use crate::{
    model::{Protocol, WorkloadRef},
    synth::{EVIDENCE_ANNOTATION, MANAGED_BY, NAMESPACE_NAME_LABEL, Suggestion, render},
};

/// Which kinds of object the suggestion is written as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dialect {
    /// `networking.k8s.io/v1` NetworkPolicy only.
    #[default]
    Standard,
    /// NetworkPolicy, plus CiliumNetworkPolicy (`cilium.io/v2`) for names.
    Cilium,
    /// NetworkPolicy, plus AdminNetworkPolicy
    /// (`policy.networking.k8s.io/v1alpha1`) for names.
    Anp,
}

impl Dialect {
    /// `standard`, `cilium` or `anp`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Cilium => "cilium",
            Self::Anp => "anp",
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A dialect name that weir does not know.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown dialect {0:?} (expected standard, cilium or anp)")]
pub struct UnknownDialect(pub String);

impl FromStr for Dialect {
    type Err = UnknownDialect;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "standard" => Ok(Self::Standard),
            "cilium" => Ok(Self::Cilium),
            "anp" => Ok(Self::Anp),
            _ => Err(UnknownDialect(s.to_owned())),
        }
    }
}

/// How to write the names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Fold sibling names into wildcards ([`fold`]).
    pub fqdn_patterns: bool,
}

/// Ports of a name's rule: (protocol, number), sorted.
type PortSet = BTreeSet<(Protocol, u16)>;

/// A name or folded pattern of one workload, ready to render.
#[derive(Clone, Debug)]
struct Target {
    pattern: String,
    wildcard: bool,
    names: BTreeSet<String>,
    ports: PortSet,
}

/// An object of an FQDN dialect.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    /// `--dialect cilium`.
    Cilium(cilium::CiliumNetworkPolicy),
    /// `--dialect anp`.
    Admin(anp::AdminNetworkPolicy),
}

impl Object {
    /// The object as one YAML document (without the `---` line).
    #[must_use]
    pub fn yaml(&self) -> String {
        // Plain data with string map keys: serializing cannot fail.
        match self {
            Self::Cilium(p) => serde_yaml::to_string(p),
            Self::Admin(p) => serde_yaml::to_string(p),
        }
        .expect("a dialect object always serializes to YAML")
    }

    /// Its metadata.
    #[must_use]
    pub const fn metadata(&self) -> &ObjectMeta {
        match self {
            Self::Cilium(p) => &p.metadata,
            Self::Admin(p) => &p.metadata,
        }
    }
}

/// The suggestion in a dialect.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    /// The dialect.
    pub dialect: Dialect,
    /// The standard part: the suggestion, without the rules of the names
    /// the dialect's objects hold.
    pub standard: Suggestion,
    /// Namespace -> the dialect's objects for its workloads (an
    /// AdminNetworkPolicy is cluster-scoped; it goes with the namespace
    /// of its subject), sorted by name.
    pub objects: BTreeMap<String, Vec<Object>>,
    /// What was left in the standard part, and why.
    pub warnings: Vec<String>,
}

impl Rendered {
    /// The namespace's YAML: its NetworkPolicies, then the dialect's
    /// objects for its workloads.
    #[must_use]
    pub fn yaml(&self, namespace: &str) -> Option<String> {
        let mut out = self.standard.yaml(namespace)?;
        for object in self.objects.get(namespace).into_iter().flatten() {
            out.push_str("---\n");
            out.push_str(&object.yaml());
        }
        Some(out)
    }

    /// Namespace -> its YAML.
    #[must_use]
    pub fn files(&self) -> BTreeMap<String, String> {
        self.standard
            .namespaces
            .keys()
            .filter_map(|ns| self.yaml(ns).map(|y| (ns.clone(), y)))
            .collect()
    }

    /// Every namespace's YAML, in namespace order.
    #[must_use]
    pub fn all_yaml(&self) -> String {
        self.files().into_values().collect()
    }
}

/// The suggestion in `dialect`; `fqdns` is the learner's egress to names.
#[must_use]
pub fn render(
    dialect: Dialect,
    suggestion: &Suggestion,
    fqdns: &[FqdnEgress],
    options: Options,
) -> Rendered {
    let mut rendered = Rendered {
        dialect,
        standard: suggestion.clone(),
        objects: BTreeMap::new(),
        warnings: Vec::new(),
    };
    if dialect == Dialect::Standard {
        return rendered;
    }
    let accepts: fn(&str) -> bool = match dialect {
        Dialect::Cilium => cilium::accepts,
        _ => anp::accepts,
    };
    // Per workload (by its policy): the names the dialect can hold.
    let mut by_workload: BTreeMap<(&str, &str), Vec<&FqdnEgress>> = BTreeMap::new();
    for f in fqdns {
        let ports: PortSet = f
            .ports
            .iter()
            .copied()
            .filter(|(proto, _)| proto.has_ports())
            .collect();
        if !accepts(&f.name) || ports.is_empty() {
            rendered.warnings.push(format!(
                "{}/{}: egress to {} stays as ipBlocks in NetworkPolicy {}: {}",
                f.namespace,
                f.workload.name,
                f.name,
                f.policy,
                if ports.is_empty() {
                    "no port to name"
                } else {
                    "the dialect's schema refuses the name"
                }
            ));
            continue;
        }
        by_workload
            .entry((f.namespace.as_str(), f.policy.as_str()))
            .or_default()
            .push(f);
    }
    for ((namespace, policy_name), list) in by_workload {
        let Some(policy) = rendered
            .standard
            .namespaces
            .get_mut(namespace)
            .and_then(|ps| {
                ps.iter_mut()
                    .find(|p| p.metadata.name.as_deref() == Some(policy_name))
            })
        else {
            continue;
        };
        let first = list[0];
        let targets = targets(&list, options);
        let kind = match dialect {
            Dialect::Cilium => cilium::KIND,
            _ => anp::KIND,
        };
        let object_name = match dialect {
            Dialect::Cilium => policy_name.to_owned(),
            // Cluster-scoped: the namespace makes it unique.
            _ => format!("weir-{namespace}-{}", first.workload.name),
        };
        strip::strip(policy, &list, &format!("{kind} {object_name}"));
        strip::renumber_notes(policy);
        let evidence = evidence(&first.workload, &list, &targets);
        let objects = rendered.objects.entry(namespace.to_owned()).or_default();
        match dialect {
            Dialect::Cilium => objects.push(Object::Cilium(cilium::policy(
                namespace,
                &object_name,
                &first.pod_selector,
                &targets,
                evidence,
            ))),
            _ => objects.extend(
                anp::policies(
                    namespace,
                    &object_name,
                    &first.pod_selector,
                    &targets,
                    &evidence,
                )
                .into_iter()
                .map(Object::Admin),
            ),
        }
    }
    for objects in rendered.objects.values_mut() {
        objects.sort_by(|a, b| a.metadata().name.cmp(&b.metadata().name));
    }
    rendered
}

/// One workload's names, folded or not.
fn targets(list: &[&FqdnEgress], options: Options) -> Vec<Target> {
    let mut names: BTreeMap<String, PortSet> = BTreeMap::new();
    for f in list {
        names.entry(f.name.clone()).or_default().extend(
            f.ports
                .iter()
                .copied()
                .filter(|(proto, _)| proto.has_ports()),
        );
    }
    let folded = if options.fqdn_patterns {
        fold::fold(&names)
    } else {
        fold::exact_all(&names)
    };
    folded
        .into_iter()
        .map(|f| Target {
            pattern: f.pattern,
            wildcard: f.wildcard,
            names: f.names,
            ports: f.ports,
        })
        .collect()
}

/// The evidence annotation of a workload's FQDN object.
fn evidence(workload: &WorkloadRef, list: &[&FqdnEgress], targets: &[Target]) -> String {
    let first = list
        .iter()
        .map(|f| f.seen.first_seen)
        .filter(|t| *t != 0)
        .min();
    let last = list.iter().map(|f| f.seen.last_seen).max();
    let mut out = format!(
        "egress of {} {workload} to DNS names\nwindow: {} .. {}\n",
        workload.kind,
        render::timestamp(first.unwrap_or(0)),
        render::timestamp(last.unwrap_or(0))
    );
    for t in targets {
        let ports: Vec<String> = t
            .ports
            .iter()
            .map(|(proto, port)| format!("{port}/{proto}"))
            .collect();
        if t.wildcard {
            let names: Vec<&str> = t.names.iter().map(String::as_str).collect();
            let _ = writeln!(
                out,
                "egress to {} (folded from {}) {}",
                t.pattern,
                names.join(", "),
                ports.join(", ")
            );
        }
        for f in list.iter().filter(|f| t.names.contains(&f.name)) {
            let addresses: Vec<String> = f.addresses.keys().map(ToString::to_string).collect();
            let _ = writeln!(
                out,
                "egress to {} ({}) {}: {} connection{}, first seen {}, last seen {}",
                f.name,
                addresses.join(", "),
                ports.join(", "),
                f.seen.connections,
                if f.seen.connections == 1 { "" } else { "s" },
                render::timestamp(f.seen.first_seen),
                render::timestamp(f.seen.last_seen)
            );
        }
    }
    out
}

/// Metadata of a dialect object.
fn meta(name: &str, namespace: Option<&str>, evidence: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(BTreeMap::from([(
            MANAGED_BY.0.to_owned(),
            MANAGED_BY.1.to_owned(),
        )])),
        annotations: Some(BTreeMap::from([(EVIDENCE_ANNOTATION.to_owned(), evidence)])),
        ..ObjectMeta::default()
    }
}

/// Whether `name` (or a `*.` pattern) is a name the dialect's schema takes:
/// labels of `[-a-z0-9_]`; for AdminNetworkPolicy (`strict`) at least two
/// labels, each starting and ending with a letter or digit.
fn valid_name(name: &str, strict: bool) -> bool {
    let body = name.strip_prefix("*.").unwrap_or(name);
    let labels: Vec<&str> = body.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && (!strict
                || (l.as_bytes()[0].is_ascii_alphanumeric()
                    && l.as_bytes()[l.len() - 1].is_ascii_alphanumeric()))
    };
    name.len() <= 253 && labels.iter().all(label_ok) && (!strict || labels.len() >= 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_schemas_take() {
        for (name, cilium, anp) in [
            ("api.payments.example", true, true),
            ("*.api.example", true, true),
            ("localhost", true, false),
            ("_srv.example", true, false),
            ("a..example", false, false),
            ("UPPER.example", false, false),
            ("a b.example", false, false),
        ] {
            assert_eq!(valid_name(name, false), cilium, "{name} for cilium");
            assert_eq!(valid_name(name, true), anp, "{name} for anp");
        }
    }

    #[test]
    fn dialect_names_round_trip() {
        for d in [Dialect::Standard, Dialect::Cilium, Dialect::Anp] {
            assert_eq!(d.as_str().parse::<Dialect>(), Ok(d));
        }
        assert!("calico".parse::<Dialect>().is_err());
    }
}
