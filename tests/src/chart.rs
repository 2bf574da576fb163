//! The Helm chart as the tests see it: `helm template` of
//! `deploy/helm/weir`, exactly as `make manifests` runs it, and its
//! documents.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;

/// The repository's root.
#[must_use]
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The cargo target directory (`CARGO_TARGET_DIR` or `target/`).
#[must_use]
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from)
}

/// A tool `make <install>` puts under the target directory; panics naming
/// the make target when it is missing.
#[must_use]
pub fn tool(path: &str, install: &str) -> PathBuf {
    let tool = target_dir().join(path);
    assert!(
        tool.exists(),
        "{} is missing: run `make {install}` (make test does)",
        tool.display()
    );
    tool
}

/// `helm template` of the chart; `cluster` is the kubeconfig of an API
/// server helm reads (`lookup`) as `helm upgrade` would.
fn helm_template(sets: &[&str], cluster: Option<&Path>) -> Output {
    let mut cmd = Command::new(tool("tools/helm", "helm"));
    cmd.args(["template", "weir"])
        .arg(repo().join("deploy/helm/weir"))
        .args(["--namespace", "weir"]);
    if let Some(kubeconfig) = cluster {
        cmd.arg("--dry-run=server").env("KUBECONFIG", kubeconfig);
    }
    for set in sets {
        cmd.args(["--set", set]);
    }
    cmd.output().expect("run helm")
}

/// `helm template weir deploy/helm/weir --namespace weir --set SETS...`;
/// panics with helm's error when the chart refuses the values.
#[must_use]
pub fn render(sets: &[&str]) -> String {
    rendered(sets, &helm_template(sets, None))
}

/// [`render`] against the API server of `kubeconfig`, as `helm upgrade`
/// renders.
#[must_use]
pub fn render_on_cluster(kubeconfig: &Path, sets: &[&str]) -> String {
    rendered(sets, &helm_template(sets, Some(kubeconfig)))
}

fn rendered(sets: &[&str], out: &Output) -> String {
    assert!(
        out.status.success(),
        "helm template {sets:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("helm output is UTF-8")
}

/// helm's error for values the chart refuses; panics when it renders.
#[must_use]
pub fn render_error(sets: &[&str]) -> String {
    let out = helm_template(sets, None);
    assert!(!out.status.success(), "helm template {sets:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The documents of a multi-document YAML stream, as JSON values.
#[must_use]
pub fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("rendered YAML parses"))
        .filter(|doc: &Value| !doc.is_null())
        .collect()
}

/// The one document of `kind` in `yaml`; panics when there is none or more
/// than one.
#[must_use]
pub fn only_of_kind(yaml: &str, kind: &str) -> Value {
    let mut found = documents(yaml).into_iter().filter(|d| d["kind"] == kind);
    let doc = found.next().unwrap_or_else(|| panic!("no {kind} rendered"));
    assert!(found.next().is_none(), "more than one {kind}");
    doc
}
