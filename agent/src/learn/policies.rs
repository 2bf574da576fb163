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
use serde::Deserialize as _;
use weir_generator::eval::{PolicyError, PolicySet};

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
    /// File name (or `request body`).
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
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let fail = |reason: String| LoadError::Document {
            source_name: name.to_owned(),
            document: index + 1,
            reason,
        };
        let value = serde_yaml::Value::deserialize(document).map_err(|e| fail(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        add(&mut policies, name, value, None).map_err(fail)?;
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
            let policy: NetworkPolicy = serde_path_to_error::deserialize(value)
                .map_err(|e| format!("NetworkPolicy: {}: {}", e.path(), e.inner()))?;
            policies.push(Sourced {
                source: name.to_owned(),
                policy,
            });
        }
        "List" | "NetworkPolicyList" => {
            let default_kind = (kind == "NetworkPolicyList").then_some("NetworkPolicy");
            let items = match value.get("items") {
                None | Some(serde_yaml::Value::Null) => return Ok(()),
                Some(serde_yaml::Value::Sequence(items)) => items.clone(),
                Some(_) => return Err(format!("{kind}: `items` is not a list")),
            };
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
        assert!(policies[0].source.ends_with("data.yml"));
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
