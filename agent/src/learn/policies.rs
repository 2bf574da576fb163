//! Reading NetworkPolicies: every `*.yaml`/`*.yml` of a directory (the
//! output of `weir export -o DIR`, or a repository's policy folder), or one
//! multi-document YAML text (`POST /api/verify`).
//!
//! `kustomization.yaml` is skipped; every other document must be a
//! `networking.k8s.io/v1` NetworkPolicy (or a `List` of them): anything
//! else is an error naming the file and the document, never silently
//! ignored, as a verify that skipped a policy would vouch for the wrong set.

use std::path::{Path, PathBuf};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use weir_generator::{
    eval::{PolicyError, PolicySet},
    manifest,
};

/// Policies that cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The directory or a file cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A document is not a NetworkPolicy, or does not parse as one.
    #[error("{source_name}: document {document}: {reason}")]
    Document {
        /// The file (or `request body`).
        source_name: String,
        /// 1-based document index.
        document: usize,
        /// What is wrong.
        reason: String,
    },
    /// A NetworkPolicy the API server would reject.
    #[error("{source_name}: {error}")]
    Invalid {
        /// The file (or `request body`) it came from.
        source_name: String,
        /// The evaluator's error, naming the policy and the field.
        error: PolicyError,
    },
    /// The directory holds no policy file.
    #[error("{} holds no *.yaml or *.yml policy file", path.display())]
    Empty {
        /// The directory.
        path: PathBuf,
    },
}

/// A policy and where it came from.
#[derive(Clone, Debug)]
pub struct Sourced {
    /// File name (or `request body`) and 1-based document index.
    pub source: String,
    /// The policy.
    pub policy: NetworkPolicy,
}

/// The NetworkPolicies of one YAML text (`name` for messages).
///
/// # Errors
/// [`LoadError::Document`] for a document that is not a NetworkPolicy.
pub fn parse(name: &str, text: &str) -> Result<Vec<Sourced>, LoadError> {
    let mut policies = Vec::new();
    for document in manifest::documents(text) {
        let fail = |document: usize, reason: String| LoadError::Document {
            source_name: name.to_owned(),
            document,
            reason,
        };
        let (index, value) = document.map_err(|(index, e)| fail(index, e.to_string()))?;
        let origin = format!("{name}: document {index}");
        add(&mut policies, &origin, value, None).map_err(|reason| fail(index, reason))?;
    }
    Ok(policies)
}

fn add(
    policies: &mut Vec<Sourced>,
    name: &str,
    value: serde_yaml::Value,
    item_kind: Option<&str>,
) -> Result<(), String> {
    let kind = value
        .get("kind")
        .and_then(serde_yaml::Value::as_str)
        .or(item_kind)
        .ok_or("missing `kind`")?
        .to_owned();
    match kind.as_str() {
        "NetworkPolicy" => {
            let api_version = value.get("apiVersion").and_then(serde_yaml::Value::as_str);
            if !matches!(api_version, None | Some("networking.k8s.io/v1")) {
                return Err(format!(
                    "NetworkPolicy: unsupported apiVersion {api_version:?} (expected networking.k8s.io/v1)"
                ));
            }
            let policy: NetworkPolicy =
                manifest::from_value(value).map_err(|e| format!("NetworkPolicy: {e}"))?;
            policies.push(Sourced {
                source: name.to_owned(),
                policy,
            });
        }
        "List" | "NetworkPolicyList" => {
            let default_kind = (kind == "NetworkPolicyList").then_some("NetworkPolicy");
            let items = manifest::list_items(&value).map_err(|e| format!("{kind}: {e}"))?;
            for (i, item) in items.into_iter().enumerate() {
                add(policies, name, item, default_kind)
                    .map_err(|e| format!("{kind} item {i}: {e}"))?;
            }
        }
        other => {
            return Err(format!(
                "unexpected kind {other:?} (a policy directory holds NetworkPolicies)"
            ));
        }
    }
    Ok(())
}

/// The policies of every `*.yaml`/`*.yml` in `dir` (not recursive), in
/// file name order; `kustomization.yaml` is skipped.
///
/// # Errors
/// See [`LoadError`].
pub fn load_dir(dir: &Path) -> Result<Vec<Sourced>, LoadError> {
    let read = |path: &Path, source| LoadError::Read {
        path: path.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| read(dir, e))? {
        let path = entry.map_err(|e| read(dir, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let yaml = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "yaml" || e == "yml");
        let kustomization = matches!(
            name,
            "kustomization.yaml" | "kustomization.yml" | "Kustomization"
        );
        if yaml && !kustomization && path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(LoadError::Empty {
            path: dir.to_owned(),
        });
    }
    files.sort();
    let mut policies = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|e| read(&path, e))?;
        policies.extend(parse(&path.display().to_string(), &text)?);
    }
    Ok(policies)
}

/// Validate policies into a set for the evaluator. A policy the API server
/// would reject is reported with its file.
///
/// # Errors
/// [`LoadError::Invalid`].
pub fn policy_set(policies: Vec<Sourced>) -> Result<PolicySet, LoadError> {
    // Validate one by one first: the set's error names the policy and the
    // field, this names the file too.
    for sourced in &policies {
        if let Err(error) = PolicySet::new(vec![sourced.policy.clone()]) {
            return Err(LoadError::Invalid {
                source_name: sourced.source.clone(),
                error,
            });
        }
    }
    PolicySet::new(policies.into_iter().map(|s| s.policy).collect()).map_err(|error| {
        LoadError::Invalid {
            source_name: "policies".to_owned(),
            error,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DENY: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
        metadata: {name: default-deny, namespace: shop}\nspec: {podSelector: {}, policyTypes: [Ingress, Egress]}\n";

    #[test]
    fn reads_a_directory_of_multi_document_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("shop.yaml"), format!("{DENY}---\n{DENY}")).unwrap();
        std::fs::write(
            dir.path().join("data.yml"),
            format!("apiVersion: v1\nkind: List\nitems:\n- {}\n", "{apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: a, namespace: data}, spec: {podSelector: {}}}"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("kustomization.yaml"),
            "resources: [shop.yaml]\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("README.md"), "not yaml").unwrap();
        let policies = load_dir(dir.path()).unwrap();
        assert_eq!(policies.len(), 3);
        assert!(policies[0].source.ends_with("data.yml: document 1"));
    }

    #[test]
    fn other_kinds_and_bad_fields_name_the_file_and_document() {
        let cases = [
            (
                format!("{DENY}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n"),
                "p.yaml: document 2: unexpected kind \"ConfigMap\"",
            ),
            (
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x}\nspec: {podSelector: {}, ingress: [{ports: [{port: [1]}]}]}\n".to_owned(),
                "p.yaml: document 1: NetworkPolicy: spec.ingress[0].ports[0].port",
            ),
            (
                "metadata: {name: x}\n".to_owned(),
                "missing `kind`",
            ),
            (
                "apiVersion: extensions/v1beta1\nkind: NetworkPolicy\n".to_owned(),
                "unsupported apiVersion",
            ),
        ];
        for (text, needle) in cases {
            let err = parse("p.yaml", &text).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    /// Every level of a NetworkPolicy with one typo'd field: refused (as
    /// `kubectl apply --validate=strict` does), naming the file, the
    /// document and the field's path. Accepting `fromm:` would leave a
    /// rule that allows every peer.
    #[test]
    fn unknown_fields_are_refused_at_every_level() {
        let cases = [
            (
                "metadata: {name: x, namespace: shop, bogus: 1}",
                "metadata.bogus",
            ),
            (
                "metadata: {name: x, namespace: shop, labelz: {a: b}}",
                "metadata.labelz",
            ),
            (
                "bogus: 1
metadata: {name: x, namespace: shop}",
                "bogus",
            ),
            ("spec: {podSelector: {}, ingres: []}", "spec.ingres"),
            ("spec: {podSelector: {}, egres: []}", "spec.egres"),
            (
                "spec: {podSelector: {}, policyType: [Ingress]}",
                "spec.policyType",
            ),
            ("spec: {podSelectors: {}}", "spec.podSelectors"),
            (
                "spec: {podSelector: {matchLabel: {app: a}}}",
                "spec.podSelector.matchLabel",
            ),
            (
                "spec: {podSelector: {matchExpressions: [{key: a, operater: In, values: [b]}]}}",
                "spec.podSelector.matchExpressions[0].operater",
            ),
            (
                "spec: {podSelector: {}, ingress: [{fromm: [{podSelector: {matchLabels: {app: nobody}}}]}]}",
                "spec.ingress[0].fromm",
            ),
            (
                "spec: {podSelector: {}, ingress: [{from: [], port: []}]}",
                "spec.ingress[0].port",
            ),
            (
                "spec: {podSelector: {}, ingress: [{}, {from: [{podselector: {}}]}]}",
                "spec.ingress[1].from[0].podselector",
            ),
            (
                "spec: {podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabelz: {}}}]}]}",
                "spec.ingress[0].from[0].namespaceSelector.matchLabelz",
            ),
            (
                "spec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, excepts: [10.1.0.0/16]}}]}]}",
                "spec.ingress[0].from[0].ipBlock.excepts",
            ),
            (
                "spec: {podSelector: {}, ingress: [{ports: [{port: 80, protocl: UDP}]}]}",
                "spec.ingress[0].ports[0].protocl",
            ),
            (
                "spec: {podSelector: {}, ingress: [{ports: [{port: 80, end_port: 90}]}]}",
                "spec.ingress[0].ports[0].end_port",
            ),
            (
                "spec: {podSelector: {}, egress: [{too: []}]}",
                "spec.egress[0].too",
            ),
            (
                "spec: {podSelector: {}, egress: [{to: [{ipblock: {cidr: 0.0.0.0/0}}]}]}",
                "spec.egress[0].to[0].ipblock",
            ),
            (
                "spec: {podSelector: {}, egress: [{to: [{podSelector: {}}], ports: [{prot: 53}]}]}",
                "spec.egress[0].ports[0].prot",
            ),
        ];
        for (body, field) in cases {
            let body = if body.starts_with("metadata") || body.starts_with("bogus") {
                body.to_owned()
            } else {
                format!("metadata: {{name: x, namespace: shop}}\n{body}")
            };
            let text = format!(
                "{DENY}---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n{body}\n"
            );
            let error = parse("p.yaml", &text).unwrap_err().to_string();
            let want = format!("p.yaml: document 2: NetworkPolicy: {field}: unknown field");
            assert!(error.starts_with(&want), "want {want:?}\n got {error:?}");
        }
        // In a List, and a List's own fields.
        let list = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: a, namespace: b}, spec: {ingres: []}}\n";
        let error = parse("l.yaml", list).unwrap_err().to_string();
        assert!(
            error.contains(
                "l.yaml: document 1: List item 0: NetworkPolicy: spec.ingres: unknown field"
            ),
            "{error}"
        );
        let error = parse("l.yaml", "apiVersion: v1\nkind: List\nitemz: []\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("l.yaml: document 1: List: itemz: unknown field"),
            "{error}"
        );
    }

    /// Names and labels the API server would refuse, named with the file,
    /// the document and the field.
    #[test]
    fn bad_names_and_labels_are_refused() {
        let long = "a".repeat(64);
        let cases = [
            (
                "metadata: {name: x, namespace: \"../../etc\"}",
                "metadata.namespace",
                "DNS-1123 label",
            ),
            (
                "metadata: {name: x, namespace: Shop}",
                "metadata.namespace",
                "DNS-1123 label",
            ),
            (
                "metadata: {name: x, namespace: \"a b\"}",
                "metadata.namespace",
                "DNS-1123 label",
            ),
            (
                "metadata: {name: x, namespace: \"a\\0\"}",
                "metadata.namespace",
                "DNS-1123 label",
            ),
            (
                &*format!("metadata: {{name: x, namespace: {long}}}"),
                "metadata.namespace",
                "no more than 63",
            ),
            (
                "metadata: {name: \"x#frag\", namespace: shop}",
                "metadata.name",
                "DNS-1123 subdomain",
            ),
            (
                "metadata: {name: X, namespace: shop}",
                "metadata.name",
                "DNS-1123 subdomain",
            ),
            (
                "metadata: {name: x, namespace: shop, labels: {\"a/b/c\": x}}",
                "metadata.labels",
                "at most one '/'",
            ),
            (
                "metadata: {name: x, namespace: shop, labels: {app: \"-x\"}}",
                "metadata.labels.app",
                "label value",
            ),
            (
                "metadata: {name: x, namespace: shop}\nspec: {podSelector: {matchLabels: {\"Example.com/a\": b}}}",
                "spec.podSelector.matchLabels",
                "prefix",
            ),
            (
                "metadata: {name: x, namespace: shop}\nspec: {podSelector: {matchLabels: {app: \"we b\"}}}",
                "spec.podSelector.matchLabels.app",
                "label value",
            ),
            (
                "metadata: {name: x, namespace: shop}\nspec: {podSelector: {}, ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: \"a b\", operator: Exists}]}}]}]}",
                "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].key",
                "label key",
            ),
            (
                "metadata: {name: x, namespace: shop}\nspec: {podSelector: {}, egress: [{to: [{podSelector: {matchExpressions: [{key: a, operator: In, values: [ok, \"no!\"]}]}}]}]}",
                "spec.egress[0].to[0].podSelector.matchExpressions[0].values[1]",
                "label value",
            ),
        ];
        for (body, field, why) in cases {
            let text = format!(
                "{DENY}---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n{body}\n"
            );
            let error = parse("p.yaml", &text)
                .and_then(policy_set)
                .unwrap_err()
                .to_string();
            assert!(
                error.starts_with("p.yaml: document 2: policy ")
                    && error.contains(&format!(": {field}: "))
                    && error.contains(why),
                "{body}: {error}"
            );
        }
    }

    #[test]
    fn an_empty_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(load_dir(dir.path()), Err(LoadError::Empty { .. })));
        assert!(matches!(
            load_dir(&dir.path().join("missing")),
            Err(LoadError::Read { .. })
        ));
    }
}
