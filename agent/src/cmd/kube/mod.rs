//! What weir writes to a cluster, from the CLI: a namespace's mode label
//! (`weir mode set --kube`) and the suggested NetworkPolicies by
//! server-side apply (`weir export --apply --kube`), both as field manager
//! `weir`. The agents read them back through their watches
//! (`resolve/kube`): the label flips the namespace's mode on every node,
//! the policies become the enforced set.

use std::{
    io::{self, Write as _},
    process::ExitCode,
};

use anyhow::Context as _;
use k8s_openapi::api::{core::v1::Namespace, networking::v1::NetworkPolicy};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;
use weir_generator::datapath::Mode;

use reqwest::Url;

use super::client::{Client as CliClient, endpoint};
use crate::{
    api::wire::Modes,
    guard::SKIP_ANNOTATION,
    learn::{PoliciesJson, analysis::StatusReport},
    resolve::kube::convert::MODE_LABEL,
};

/// The field manager of everything weir writes.
pub const FIELD_MANAGER: &str = "weir";

/// Whether the API server only checks a write (`dryRun=All`) or makes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DryRun {
    /// The server validates and admits the request, then stores nothing.
    #[default]
    Server,
    /// The request is made.
    None,
}

/// A write the cluster refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// A policy without a namespace or a name cannot be applied.
    #[error("policy {index}: missing metadata.{field}")]
    Incomplete {
        /// Its 0-based index in the set.
        index: usize,
        /// `namespace` or `name`.
        field: &'static str,
    },
    /// The API server refused or could not be reached.
    #[error("{what}")]
    Api {
        /// What was asked.
        what: String,
        /// Why it failed.
        #[source]
        source: kube::Error,
    },
}

/// The merge patch of [`set_mode`]: the mode label, and the guard's skip
/// ([`SKIP_ANNOTATION`]) set to the time of the request for an unguarded
/// flip to enforce, removed (`null`) otherwise so it never lingers.
#[must_use]
pub fn mode_patch(mode: Mode, unguarded_at: Option<u64>) -> serde_json::Value {
    let skip = match unguarded_at {
        Some(at) if mode == Mode::Enforce => crate::timestamp::rfc3339(at).into(),
        _ => serde_json::Value::Null,
    };
    json!({"metadata": {
        "labels": {MODE_LABEL: mode.to_string()},
        "annotations": {SKIP_ANNOTATION: skip},
    }})
}

/// Set `namespace`'s mode label with a merge patch (only that label and
/// the guard's skip change; any other field manager keeps its fields).
/// `unguarded_at`: the time (Unix ns) of a request to enforce without the
/// guard (`--no-guard`); the agents skip the guard on a flip they see
/// soon after it.
///
/// # Errors
/// [`WriteError::Api`] naming the namespace.
pub async fn set_mode(
    client: Client,
    namespace: &str,
    mode: Mode,
    unguarded_at: Option<u64>,
) -> Result<(), WriteError> {
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let patch = mode_patch(mode, unguarded_at);
    Api::<Namespace>::all(client)
        .patch(namespace, &params, &Patch::Merge(&patch))
        .await
        .map_err(|source| WriteError::Api {
            what: format!("cannot label namespace {namespace} {MODE_LABEL}={mode}"),
            source,
        })?;
    Ok(())
}

/// Server-side apply each policy (field manager `weir`, no force: a field
/// another manager owns is a conflict to resolve, not to overwrite).
/// Returns `namespace/name` of each, in order. Every policy is checked for
/// a namespace and a name before anything is sent.
///
/// # Errors
/// [`WriteError`]; policies before the failing one were applied (or, with
/// [`DryRun::Server`], checked).
pub async fn apply_policies(
    client: Client,
    policies: &[NetworkPolicy],
    dry_run: DryRun,
) -> Result<Vec<String>, WriteError> {
    let mut keys = Vec::with_capacity(policies.len());
    for (index, policy) in policies.iter().enumerate() {
        let namespace = policy
            .metadata
            .namespace
            .as_deref()
            .ok_or(WriteError::Incomplete {
                index,
                field: "namespace",
            })?;
        let name = policy
            .metadata
            .name
            .as_deref()
            .ok_or(WriteError::Incomplete {
                index,
                field: "name",
            })?;
        keys.push((namespace, name));
    }
    let mut params = PatchParams::apply(FIELD_MANAGER);
    if dry_run == DryRun::Server {
        params = params.dry_run();
    }
    let mut applied = Vec::with_capacity(policies.len());
    for (policy, (namespace, name)) in policies.iter().zip(keys) {
        Api::<NetworkPolicy>::namespaced(client.clone(), namespace)
            .patch(name, &params, &Patch::Apply(policy))
            .await
            .map_err(|source| WriteError::Api {
                what: format!("cannot apply NetworkPolicy {namespace}/{name}"),
                source,
            })?;
        applied.push(format!("{namespace}/{name}"));
    }
    Ok(applied)
}

/// Run `future` on a runtime of its own (the CLI is synchronous).
///
/// # Errors
/// The runtime cannot start, or `future` fails.
pub fn block_on<T>(future: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future)
}

/// A client from kube-rs's defaults (the kubeconfig's current context, or
/// the service account inside a pod).
///
/// # Errors
/// No usable configuration.
pub async fn client() -> anyhow::Result<Client> {
    Client::try_default()
        .await
        .context("cannot configure a Kubernetes client (kubeconfig or in-cluster)")
}

/// Why the readiness gate refuses to set `namespace` to `mode`, from the
/// modes and readiness an agent or the relay reports: a step up (observe
/// -> audit -> enforce) of a namespace that is not ready. The sentence is
/// the agent's own.
#[must_use]
pub fn readiness_refusal(
    modes: &Modes,
    status: &StatusReport,
    namespace: &str,
    mode: Mode,
) -> Option<String> {
    let from = modes
        .modes
        .get(namespace)
        .copied()
        .unwrap_or(modes.default_mode);
    if mode <= from {
        return None;
    }
    let reason = crate::learn::analysis::why_not_ready(status, namespace)?;
    Some(crate::learn::analysis::not_ready_message(
        namespace, mode, &reason,
    ))
}

/// Ask the agent or relay at `server` whether `namespace` may go to
/// `mode` ([`readiness_refusal`]).
///
/// # Errors
/// `server` cannot say, or the namespace is not ready.
pub fn check_ready(server: &Url, namespace: &str, mode: Mode) -> anyhow::Result<()> {
    let asking = || {
        format!(
            "cannot ask {server} whether namespace {namespace} is ready for {mode} \
             (--server: an agent or the relay; --force sets the label without asking)"
        )
    };
    let client = CliClient::new().with_context(asking)?;
    let modes: Modes = client
        .get_json(&endpoint(server, &["api", "modes"])?, "modes")
        .with_context(asking)?;
    let status: StatusReport = client
        .get_json(&endpoint(server, &["api", "status"])?, "a status")
        .with_context(asking)?;
    match readiness_refusal(&modes, &status, namespace, mode) {
        Some(refusal) => anyhow::bail!("{refusal} (--force)"),
        None => Ok(()),
    }
}

/// `weir mode set NS MODE --kube`: label the namespace, once the agent or
/// relay at `ready_at` (none: `--force`) judged it ready for `mode`;
/// `no_guard`: a flip to enforce skips the guard.
///
/// # Errors
/// Not ready, no usable configuration, a refused patch.
pub fn run_set_mode(
    namespace: &str,
    mode: Mode,
    ready_at: Option<&Url>,
    no_guard: bool,
) -> anyhow::Result<ExitCode> {
    if let Some(server) = ready_at {
        check_ready(server, namespace, mode)?;
    }
    let unguarded_at = (no_guard && mode == Mode::Enforce).then(crate::graph_store::unix_now);
    block_on(async {
        let client = client().await?;
        set_mode(client, namespace, mode, unguarded_at).await?;
        Ok(())
    })?;
    let mut out = io::stdout().lock();
    writeln!(out, "namespace {namespace} labelled weir.dev/mode={mode}")?;
    if let Some(at) = unguarded_at {
        writeln!(
            out,
            "without the guard: annotated {SKIP_ANNOTATION}={}",
            crate::timestamp::rfc3339(at)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `weir export --apply --kube`: server-side apply of the suggestion.
///
/// # Errors
/// The suggestion's YAML does not read back, no usable configuration, a
/// refused apply.
pub fn apply_export(policies: &PoliciesJson, dry_run: DryRun) -> anyhow::Result<ExitCode> {
    let mut set = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&policies.yaml) {
        let policy: Option<NetworkPolicy> =
            serde::Deserialize::deserialize(document).context("the suggestion's YAML")?;
        set.extend(policy);
    }
    let applied = block_on(async {
        let client = client().await?;
        Ok(apply_policies(client, &set, dry_run).await?)
    })?;
    let mut out = io::stdout().lock();
    for key in &applied {
        match dry_run {
            DryRun::Server => writeln!(out, "networkpolicy {key} checked (server dry run)")?,
            DryRun::None => writeln!(out, "networkpolicy {key} applied")?,
        }
    }
    if dry_run == DryRun::Server {
        writeln!(out, "nothing was stored: --dry-run=none applies")?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
pub(crate) mod mock;
#[cfg(test)]
mod tests;
