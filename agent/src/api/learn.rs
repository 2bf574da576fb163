//! The learner's endpoints:
//!
//! - `GET /api/policies?namespace=NS[,NS...]&format=yaml|json&aggregate_external=V4,V6&service_ports=target|both&dialect=standard|cilium|anp&fqdn_patterns=true`:
//!   the suggested NetworkPolicies for the graph learned so far (with the
//!   dialect's objects for egress to DNS names), as one YAML stream
//!   (default) or as JSON (files, kustomization, objects);
//! - `POST /api/verify` with a multi-document YAML body of NetworkPolicies:
//!   the verify report (observed flows they deny, unobserved pairs they
//!   allow) as JSON;
//! - `GET /api/status`: per-namespace readiness.
//!
//! Synthesis and evaluation are CPU work: they run on the blocking pool.

use std::collections::BTreeSet;

use axum::{
    Json,
    extract::{
        Query, State,
        rejection::{QueryRejection, StringRejection},
    },
    http::header,
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use weir_generator::{cluster::Cluster, eval::PolicySet, model::FlowGraph};

use super::{
    AppState,
    error::ApiError,
    query::{self, bad},
};
use crate::learn::{
    self, SuggestOptions,
    analysis::{self, StatusReport, VerifyReport},
    policies,
};

/// `application/yaml` (RFC 9512).
pub const YAML: &str = "application/yaml";

/// The query of `/api/policies` as sent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPoliciesQuery {
    namespace: Option<String>,
    format: Option<String>,
    aggregate_external: Option<String>,
    service_ports: Option<String>,
    dialect: Option<String>,
    fqdn_patterns: Option<String>,
}

/// `yaml` or `json`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Yaml,
    Json,
}

fn parse_query(raw: RawPoliciesQuery) -> Result<(SuggestOptions, Format), ApiError> {
    let namespaces = query::namespaces(raw.namespace)?.unwrap_or_default();
    let format = match raw.format.as_deref() {
        None | Some("yaml") => Format::Yaml,
        Some("json") => Format::Json,
        Some(other) => return Err(bad("format", format!("{other:?}: expected yaml or json"))),
    };
    let aggregate_external = query::optional("aggregate_external", raw.aggregate_external)?;
    let service_ports = query::optional("service_ports", raw.service_ports)?.unwrap_or_default();
    let dialect = query::optional("dialect", raw.dialect)?.unwrap_or_default();
    let fqdn_patterns = query::optional("fqdn_patterns", raw.fqdn_patterns)?.unwrap_or(false);
    Ok((
        SuggestOptions {
            namespaces,
            aggregate_external,
            service_ports,
            dialect,
            fqdn_patterns,
        },
        format,
    ))
}

/// The graph and the cluster at this moment.
pub fn inputs(state: &AppState) -> (FlowGraph, std::sync::Arc<Cluster>) {
    let cluster = state
        .resolver
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .cluster();
    (state.aggregator.graph(), cluster)
}

/// Run CPU work on the blocking pool.
///
/// # Errors
/// [`ApiError::Internal`] when the work panicked.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|error| ApiError::internal("learner task failed", error))
}

/// `GET /api/policies`.
pub async fn policies(
    State(state): State<AppState>,
    query: Result<Query<RawPoliciesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(raw) = query?;
    let (options, format) = parse_query(raw)?;
    let (graph, cluster) = inputs(&state);
    check_namespaces(&options.namespaces, &graph, &cluster)?;
    let suggestion = blocking(move || learn::suggest(&graph, &cluster, &options)).await?;
    Ok(match format {
        Format::Yaml => ([(header::CONTENT_TYPE, YAML)], suggestion.yaml).into_response(),
        Format::Json => Json(suggestion).into_response(),
    })
}

/// Refuse namespaces neither the cluster nor the graph knows.
///
/// # Errors
/// [`ApiError::UnknownNamespace`] naming the first.
pub fn check_namespaces(
    namespaces: &BTreeSet<String>,
    graph: &FlowGraph,
    cluster: &Cluster,
) -> Result<(), ApiError> {
    let known: BTreeSet<&String> = cluster
        .namespaces
        .keys()
        .chain(graph.workloads.keys().map(|w| &w.namespace))
        .collect();
    match namespaces.iter().find(|ns| !known.contains(ns)) {
        Some(unknown) => Err(ApiError::UnknownNamespace {
            namespace: unknown.clone(),
        }),
        None => Ok(()),
    }
}

/// The query of `/api/verify`: none.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVerifyQuery {}

/// `POST /api/verify`: a YAML body of NetworkPolicies.
pub async fn verify(
    State(state): State<AppState>,
    query: Result<Query<RawVerifyQuery>, QueryRejection>,
    body: Result<String, StringRejection>,
) -> Result<Json<VerifyReport>, ApiError> {
    query?;
    let body = body?;
    let loaded = policies::parse("request body", &body).map_err(|e| ApiError::BadPolicies {
        reason: e.to_string(),
    })?;
    if loaded.is_empty() {
        return Err(ApiError::BadPolicies {
            reason: "request body: no NetworkPolicy".to_owned(),
        });
    }
    let set: PolicySet = policies::policy_set(loaded).map_err(|e| ApiError::BadPolicies {
        reason: e.to_string(),
    })?;
    let (graph, cluster) = inputs(&state);
    let report = blocking(move || analysis::verify(&set, &graph, &cluster)).await?;
    Ok(Json(report))
}

/// `GET /api/status`.
pub async fn status(State(state): State<AppState>) -> Result<Json<StatusReport>, ApiError> {
    Ok(Json(status_report(&state).await?))
}

/// The readiness of every namespace.
///
/// # Errors
/// [`ApiError::Internal`] when the suggestion does not validate (a bug).
pub async fn status_report(state: &AppState) -> Result<StatusReport, ApiError> {
    let (graph, cluster) = inputs(state);
    let learning = state.learning;
    let degraded = state.health.episodes(None);
    blocking(move || -> Result<StatusReport, ApiError> {
        let suggestion =
            weir_generator::synth::synthesize(&graph, &cluster, &SuggestOptions::default().synth());
        // The learner's own output must always validate; if it does not,
        // that is weir's bug, not the client's.
        let policies = suggestion.namespaces.into_values().flatten().collect();
        let set = PolicySet::new(policies)
            .map_err(|error| ApiError::internal("the suggestion does not validate", error))?;
        let mut report = analysis::readiness(
            &set,
            &graph,
            &cluster,
            crate::graph_store::unix_now(),
            learning.window_start,
            learning.readiness,
        );
        report.incomplete = degraded.iter().any(|e| e.incomplete);
        report.degraded = degraded;
        Ok(report)
    })
    .await?
}
