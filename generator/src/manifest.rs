//! Kubernetes objects from a user's YAML, read as `kubectl apply
//! --validate=strict` reads them: a field the type does not have is an
//! error naming its path, never dropped. serde (and so k8s-openapi's
//! types) ignores unknown fields; a typo such as `fromm:` in an ingress
//! rule would then leave a rule that allows every peer.
//!
//! Every reader of user objects (policy files, `weir verify`, the
//! inventory, the lab, the API's YAML bodies) goes through [`documents`]
//! and [`from_value`] (and [`list_items`] for `kind: List`).

use std::fmt;

use crate::names;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize as _, de::DeserializeOwned};

/// A field at fault and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Its path, e.g. `spec.ingress[0].fromm` (`(object)` for the object
    /// itself).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// The documents of a YAML stream, 1-based, empty ones (a trailing `---`)
/// left out; a malformed document is `Err` with its index, and ends the
/// stream (the parser cannot resynchronise: it would repeat the error).
pub fn documents(
    text: &str,
) -> impl Iterator<Item = Result<(usize, serde_yaml::Value), (usize, serde_yaml::Error)>> + '_ {
    let mut failed = false;
    serde_yaml::Deserializer::from_str(text)
        .enumerate()
        .map_while(move |(i, document)| {
            if failed {
                return None;
            }
            match serde_yaml::Value::deserialize(document) {
                Ok(value) => Some(Ok((i + 1, value))),
                Err(error) => {
                    failed = true;
                    Some(Err((i + 1, error)))
                }
            }
        })
        .filter(|document| !matches!(document, Ok((_, value)) if value.is_null()))
}

/// Deserialize `value` as a `T`, refusing any field `T` does not have.
///
/// # Errors
/// The first field of the wrong type, else the unknown fields (the first
/// one's path as [`FieldError::field`], every one's in the reason).
pub fn from_value<T: DeserializeOwned>(value: serde_yaml::Value) -> Result<T, FieldError> {
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(path_text(&path));
    let deserializer = serde_ignored::Deserializer::new(value, &mut record);
    let parsed: T = serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let field = error.path().to_string();
        FieldError {
            field: if field == "." {
                "(object)".to_owned()
            } else {
                field
            },
            reason: error.into_inner().to_string(),
        }
    })?;
    match unknown.as_slice() {
        [] => Ok(parsed),
        [one] => Err(FieldError {
            field: one.clone(),
            reason: "unknown field".to_owned(),
        }),
        [first, ..] => Err(FieldError {
            field: first.clone(),
            reason: format!("unknown field (unknown fields: {})", unknown.join(", ")),
        }),
    }
}

/// The `items` of a `kind: List` object, refusing fields a List does not
/// have (`itemz:` would otherwise read as an empty list).
///
/// # Errors
/// An unknown top-level field, or `items` that is not a list.
pub fn list_items(value: &serde_yaml::Value) -> Result<Vec<serde_yaml::Value>, FieldError> {
    const LIST_FIELDS: [&str; 4] = ["apiVersion", "kind", "metadata", "items"];
    let Some(mapping) = value.as_mapping() else {
        return Err(FieldError {
            field: "(object)".to_owned(),
            reason: "expected a Kubernetes object (a mapping)".to_owned(),
        });
    };
    for key in mapping.keys() {
        let name = key.as_str().unwrap_or_default();
        if !LIST_FIELDS.contains(&name) {
            return Err(FieldError {
                field: key_text(key),
                reason: "unknown field".to_owned(),
            });
        }
    }
    match value.get("items") {
        None | Some(serde_yaml::Value::Null) => Ok(Vec::new()),
        Some(serde_yaml::Value::Sequence(items)) => Ok(items.clone()),
        Some(_) => Err(FieldError {
            field: "items".to_owned(),
            reason: "expected a list".to_owned(),
        }),
    }
}

/// `ValidateObjectMeta`: the name by `name_rule` (see
/// [`crate::names`]), the namespace a DNS-1123 label, the labels
/// valid keys and values. A missing name or namespace is the caller's
/// business (some kinds default them).
///
/// # Errors
/// The first invalid field.
pub fn check_meta(
    meta: &ObjectMeta,
    name_rule: fn(&str) -> Result<(), String>,
) -> Result<(), FieldError> {
    let error = |field: &str, reason| FieldError {
        field: field.to_owned(),
        reason,
    };
    if let Some(name) = &meta.name {
        name_rule(name).map_err(|e| error("metadata.name", e))?;
    }
    if let Some(namespace) = &meta.namespace {
        names::dns1123_label(namespace).map_err(|e| error("metadata.namespace", e))?;
    }
    names::labels(meta.labels.iter().flatten(), "metadata.labels")
        .map_err(|(field, reason)| FieldError { field, reason })
}

fn key_text(key: &serde_yaml::Value) -> String {
    match key {
        serde_yaml::Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .map_or_else(|_| "?".to_owned(), |s| s.trim_end().to_owned()),
    }
}

/// `spec.ingress[0].fromm`, the way `serde_path_to_error` and the API
/// server write paths.
fn path_text(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", path_text(parent)),
        Path::Map { parent, key } => {
            let parent = path_text(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => path_text(parent),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::networking::v1::NetworkPolicy;

    use super::*;

    fn policy(yaml: &str) -> Result<NetworkPolicy, FieldError> {
        from_value(serde_yaml::from_str(yaml).unwrap())
    }

    #[test]
    fn unknown_fields_are_refused_with_their_path() {
        let good = policy(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\n\
             spec: {podSelector: {}, ingress: [{from: [{podSelector: {matchLabels: {app: x}}}]}]}\n",
        );
        assert!(good.is_ok(), "{good:?}");
        let error = policy(
            "metadata: {name: a, bogus: 1}\nspec: {ingres: [], podSelector: {matchLabelz: {}}}\n",
        )
        .unwrap_err();
        assert_eq!(error.field, "metadata.bogus");
        assert!(
            error.reason.contains("spec.ingres")
                && error.reason.contains("spec.podSelector.matchLabelz"),
            "{error}"
        );
        // A type error comes first and names its field.
        let error = policy("spec: {podSelector: [], bogus: 1}\n").unwrap_err();
        assert_eq!(error.field, "spec.podSelector");
    }

    #[test]
    fn lists_refuse_unknown_fields() {
        let list = |yaml: &str| list_items(&serde_yaml::from_str(yaml).unwrap());
        assert_eq!(
            list("apiVersion: v1\nkind: List\nitems: [1, 2]\n")
                .unwrap()
                .len(),
            2
        );
        assert_eq!(list("kind: List\n").unwrap().len(), 0);
        assert_eq!(list("kind: List\nitemz: [1]\n").unwrap_err().field, "itemz");
        assert_eq!(list("kind: List\nitems: 1\n").unwrap_err().field, "items");
    }

    #[test]
    fn documents_are_numbered_and_empty_ones_skipped() {
        let docs: Vec<_> = documents("---\na: 1\n---\n---\nb: 2\n---\n[x\n").collect();
        let indices: Vec<usize> = docs
            .iter()
            .map(|d| match d {
                Ok((i, _)) | Err((i, _)) => *i,
            })
            .collect();
        assert_eq!(indices, [1, 3, 4]);
        assert!(docs[2].is_err());
    }
}
