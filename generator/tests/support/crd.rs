//! Validation of rendered objects against a vendored CRD's
//! `openAPIV3Schema` (generator/schemas/README.md says how and why).
//!
//! Shared by the generator's dialect tests and the privileged lab test
//! (`tests/tests/dns.rs` includes this file by path).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The vendored CiliumNetworkPolicy CRD.
pub const CILIUM_NETWORK_POLICY: &str = "cilium.io_ciliumnetworkpolicies.yaml";
/// The vendored AdminNetworkPolicy CRD (experimental channel).
pub const ADMIN_NETWORK_POLICY: &str = "policy.networking.k8s.io_adminnetworkpolicies.yaml";

/// Where the vendored CRDs are.
pub fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("generator")
        .join("schemas")
}

/// One CRD version's schema, ready to check objects.
pub struct Crd {
    api_version: String,
    kind: String,
    namespaced: bool,
    validator: jsonschema::Validator,
}

impl Crd {
    /// The CRD in `generator/schemas/<file>`, its first served version.
    pub fn load(file: &str) -> Self {
        let path = schemas_dir().join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let crd: Value = serde_yaml::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
        let spec = &crd["spec"];
        let group = spec["group"].as_str().expect("CRD spec.group");
        let kind = spec["names"]["kind"].as_str().expect("CRD spec.names.kind");
        let namespaced = spec["scope"].as_str() == Some("Namespaced");
        let version = spec["versions"]
            .as_array()
            .and_then(|v| v.iter().find(|v| v["served"].as_bool() == Some(true)))
            .unwrap_or_else(|| panic!("{} serves no version", path.display()));
        let mut schema = version["schema"]["openAPIV3Schema"].clone();
        assert!(
            schema.is_object(),
            "{} has no openAPIV3Schema",
            path.display()
        );
        close_objects(&mut schema);
        let validator = jsonschema::draft4::new(&schema)
            .unwrap_or_else(|e| panic!("{}: schema does not compile: {e}", path.display()));
        Self {
            api_version: format!("{group}/{}", version["name"].as_str().expect("name")),
            kind: kind.to_owned(),
            namespaced,
            validator,
        }
    }

    /// Every reason the API server would refuse `object`, empty when none
    /// (CEL rules aside).
    pub fn errors(&self, object: &Value) -> Vec<String> {
        let mut out: Vec<String> = self
            .validator
            .iter_errors(object)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        if object["apiVersion"].as_str() != Some(self.api_version.as_str()) {
            out.push(format!(
                "/apiVersion: {} expected, got {}",
                self.api_version, object["apiVersion"]
            ));
        }
        if object["kind"].as_str() != Some(self.kind.as_str()) {
            out.push(format!(
                "/kind: {} expected, got {}",
                self.kind, object["kind"]
            ));
        }
        match object["metadata"]["name"].as_str() {
            Some(name) if is_dns1123_subdomain(name) => {}
            other => out.push(format!(
                "/metadata/name: a DNS-1123 subdomain expected, got {other:?}"
            )),
        }
        let namespace = object["metadata"].get("namespace");
        if self.namespaced != namespace.is_some() {
            out.push(format!(
                "/metadata/namespace: {} is {}, got {namespace:?}",
                self.kind,
                if self.namespaced {
                    "namespaced"
                } else {
                    "cluster-scoped"
                }
            ));
        }
        out
    }

    /// Panic naming every error of every object of `yaml` (a multi-document
    /// stream) of this CRD's kind; returns how many were checked.
    pub fn check_stream(&self, yaml: &str) -> usize {
        let mut checked = 0;
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let value = <Value as serde::Deserialize>::deserialize(doc).expect("YAML document");
            if value.is_null() || value["kind"].as_str() != Some(self.kind.as_str()) {
                continue;
            }
            let errors = self.errors(&value);
            assert!(
                errors.is_empty(),
                "{} {} fails its CRD schema:\n{}\n---\n{}",
                self.kind,
                value["metadata"]["name"],
                errors.join("\n"),
                serde_yaml::to_string(&value).unwrap_or_default()
            );
            checked += 1;
        }
        checked
    }
}

/// Close every object schema that lists its properties, unless it keeps
/// unknown fields, as the API server's strict field validation does.
fn close_objects(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if is_closed_object(map) {
                map.insert("additionalProperties".to_owned(), Value::Bool(false));
            }
            for value in map.values_mut() {
                close_objects(value);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

fn is_closed_object(map: &Map<String, Value>) -> bool {
    map.get("type").and_then(Value::as_str) == Some("object")
        && map.get("properties").is_some_and(Value::is_object)
        && !map.contains_key("additionalProperties")
        && map.get("x-kubernetes-preserve-unknown-fields") != Some(&Value::Bool(true))
}

fn is_dns1123_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}
