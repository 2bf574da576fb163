//! The relay's HTTP API: the agent's API and UI ([`crate::api`]) over the
//! merged view, and what only the relay has:
//!
//! - every JSON object answer gets a top-level `coverage` and every answer
//!   a `Weir-Coverage` header ([`coverage::header`]);
//! - `GET /api/flows`: the agents' flow records merged ([`flows`]);
//! - `GET /api/v1/coverage`; `GET /healthz` is `degraded` while an
//!   expected agent is not synced;
//! - `GET /api/modes` from the namespaces' `weir.dev/mode` labels;
//! - `POST /api/policies/enforced` and `PUT /api/modes/{ns}` refuse with
//!   409 while coverage is below 100% (a missing node means missing allow
//!   rules) unless `allow_partial=true`; `PUT /api/modes/{ns}` with
//!   `require_ready` (`weir mode set` without `--force`) refuses a step up
//!   of a namespace the merged view does not judge ready, as an agent
//!   does; then they write to the cluster with the
//!   server-side apply of `weir export --apply --kube` / `weir mode set
//!   --kube`; without a Kubernetes API they answer 501 saying why. A mode
//!   set with `guard: false` (`--no-guard`) annotates the Namespace
//!   `weir.dev/guard-skip` in the same patch, and every mode set is an
//!   entry of the relay's audit log.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json, Router,
    body::Body,
    extract::{Query, Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use http_body_util::BodyExt as _;
use serde::Deserialize;
use tracing::info;
use weir_generator::datapath::Mode;

use super::{
    coverage,
    flows::{self, FlowAgents},
    hub::Hub,
};
use crate::{
    api::{
        self, AppState,
        error::ApiError,
        wire::{Applied, CoverageJson, Modes},
    },
    audit::{Kind, NewEntry},
    cmd::kube as writes,
    learn::policies,
};

/// The header every relay answer carries.
pub const COVERAGE_HEADER: &str = "weir-coverage";

/// Where the relay writes modes and policies.
#[derive(Clone)]
pub enum Cluster {
    /// The Kubernetes API.
    Kube(kube::Client),
    /// None: writes answer 501 with this reason.
    Unavailable(Arc<str>),
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Kube(_) => f.write_str("Kube"),
            Self::Unavailable(reason) => write!(f, "Unavailable({reason})"),
        }
    }
}

/// What the relay's handlers share.
#[derive(Clone, Debug)]
pub struct Relay {
    /// The agent's API state over the merged view.
    pub state: AppState,
    /// What the relay holds of each node.
    pub hub: Arc<Hub>,
    /// Where writes go.
    pub cluster: Cluster,
    /// Whose flows `/api/flows` merges.
    pub flows: FlowAgents,
}

/// The relay's router.
pub fn app(relay: Relay) -> Router {
    let routes = api::routes().layer(middleware::from_fn_with_state(relay.clone(), intercept));
    api::with_layers(routes, relay.state.clone())
        .layer(middleware::from_fn_with_state(relay, with_coverage))
}

/// The relay's own answers, before the agent's routes.
async fn intercept(State(relay): State<Relay>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    match (method, path.as_str()) {
        (Method::GET, "/healthz") => healthz(&relay),
        (Method::GET, "/api/v1/coverage") => Json(relay.hub.coverage()).into_response(),
        (Method::GET, "/api/flows") => flows::flows(
            relay.flows.sources(),
            Arc::clone(&relay.state.metrics),
            Query::try_from_uri(request.uri()),
        )
        .await
        .unwrap_or_else(IntoResponse::into_response),
        (Method::GET, "/api/modes") => Json(modes(&relay)).into_response(),
        (Method::POST, "/api/policies/enforced") => apply(relay, request)
            .await
            .unwrap_or_else(IntoResponse::into_response),
        (Method::PUT, p) if p.starts_with("/api/modes/") => {
            let namespace = p.trim_start_matches("/api/modes/").to_owned();
            set_mode(relay, namespace, request)
                .await
                .unwrap_or_else(IntoResponse::into_response)
        }
        _ => next.run(request).await,
    }
}

/// `GET /healthz`: degraded while an expected agent is not synced.
fn healthz(relay: &Relay) -> Response {
    let c = relay.hub.coverage();
    let mut reasons = Vec::new();
    if !coverage::complete(&c) {
        reasons.push(format!(
            "{} of {} agents synced; missing: {}",
            c.synced,
            c.expected,
            coverage::missing(&c)
        ));
    }
    Json(serde_json::json!({
        "status": if reasons.is_empty() { "ok" } else { "degraded" },
        "reasons": reasons,
        "role": "relay",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": relay.state.started.elapsed().as_secs(),
        "graph_edges": relay.state.aggregator.edge_count(),
        "unknown_sides": relay.hub.unknown_sides(),
    }))
    .into_response()
}

/// The namespaces' modes, from their `weir.dev/mode` labels.
fn modes(relay: &Relay) -> Modes {
    relay.state.modes()
}

/// The query of the relay's writes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWriteQuery {
    allow_partial: Option<String>,
    /// `POST /api/policies/enforced` only; through the Kubernetes API
    /// policies are applied, none removed.
    replace: Option<String>,
}

/// Refuse a write while coverage is below 100%, unless allowed.
fn check_coverage(relay: &Relay, request: &Request, what: &str) -> Result<(), ApiError> {
    let Query(raw) =
        Query::<RawWriteQuery>::try_from_uri(request.uri()).map_err(|e| ApiError::BadQuery {
            reason: e.body_text(),
        })?;
    let allow_partial = match raw.allow_partial.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::BadParameter {
                name: "allow_partial",
                reason: format!("{:?}: expected true or false", api::error::shorten(other)),
            });
        }
    };
    let _ = raw.replace;
    let c = relay.hub.coverage();
    if coverage::complete(&c) || allow_partial {
        return Ok(());
    }
    Err(ApiError::Status {
        code: 409,
        message: format!(
            "refused to {what}: the relay covers {} of {} agents (missing: {}); a missing node \
             means missing allow rules. Retry with allow_partial=true (--allow-partial) to write anyway",
            c.synced,
            c.expected,
            coverage::missing(&c)
        ),
    })
}

fn client(relay: &Relay) -> Result<kube::Client, ApiError> {
    match &relay.cluster {
        Cluster::Kube(client) => Ok(client.clone()),
        Cluster::Unavailable(reason) => Err(ApiError::Status {
            code: 501,
            message: format!(
                "the relay writes through the Kubernetes API and has none: {reason}; \
                 run it in the cluster (or with KUBECONFIG), or write through each agent"
            ),
        }),
    }
}

fn write_failed(error: &writes::WriteError) -> ApiError {
    ApiError::Status {
        code: 502,
        message: crate::error_chain::chain(error),
    }
}

/// The whole body of a write (the API's body limit bounds it).
async fn body_bytes(request: Request) -> Result<axum::body::Bytes, ApiError> {
    Ok(request
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::BadBody {
            reason: e.to_string(),
        })?
        .to_bytes())
}

/// `POST /api/policies/enforced`: server-side apply of the body's policies.
async fn apply(relay: Relay, request: Request) -> Result<Response, ApiError> {
    check_coverage(&relay, &request, "apply policies")?;
    let client = client(&relay)?;
    let body = body_bytes(request).await?;
    let text = std::str::from_utf8(&body).map_err(|e| ApiError::BadBody {
        reason: e.to_string(),
    })?;
    let loaded = policies::parse("request body", text).map_err(|e| ApiError::BadPolicies {
        reason: e.to_string(),
    })?;
    if loaded.is_empty() {
        return Err(ApiError::BadPolicies {
            reason: "request body: no NetworkPolicy".to_owned(),
        });
    }
    let set: Vec<_> = loaded.into_iter().map(|s| s.policy).collect();
    let applied = writes::apply_policies(client, &set, writes::DryRun::None)
        .await
        .map_err(|e| write_failed(&e))?;
    Ok(Json(Applied {
        writes: applied.len(),
        applied,
        replaced_namespaces: Vec::new(),
        entries: BTreeMap::new(),
    })
    .into_response())
}

/// `PUT /api/modes/{namespace}`: the namespace's `weir.dev/mode` label.
async fn set_mode(relay: Relay, namespace: String, request: Request) -> Result<Response, ApiError> {
    api::enforce::path_name(
        "namespace",
        &namespace,
        weir_generator::names::dns1123_label,
    )?;
    check_coverage(
        &relay,
        &request,
        &format!("set the mode of namespace {namespace}"),
    )?;
    let client = client(&relay)?;
    let actor = api::audit::actor(request.headers());
    let body: api::enforce::ModeBody = serde_json::from_slice(&body_bytes(request).await?)
        .map_err(|e| ApiError::BadBody {
            reason: e.to_string(),
        })?;
    let mode = api::enforce::parse_mode(&body.mode)?;
    // The readiness gate of the agent's `PUT /api/modes`, on the merged
    // view: a step up of a namespace that is not ready is refused.
    let current = modes(&relay);
    let from = current
        .modes
        .get(&namespace)
        .copied()
        .unwrap_or(current.default_mode);
    if body.require_ready == Some(true)
        && mode > from
        && let Some(reason) = crate::learn::analysis::why_not_ready(
            &api::learn::status_report(&relay.state).await?,
            &namespace,
        )
    {
        return Err(ApiError::Status {
            code: 409,
            message: crate::learn::analysis::not_ready_message(&namespace, mode, &reason),
        });
    }
    // Every node's agent runs the guard: the skip travels with the label.
    let unguarded = mode == Mode::Enforce && body.guard == Some(false);
    let now = crate::graph_store::unix_now();
    writes::set_mode(client, &namespace, mode, unguarded.then_some(now))
        .await
        .map_err(|e| write_failed(&e))?;
    info!(
        namespace,
        from = %from,
        to = %mode,
        guard = mode == Mode::Enforce && !unguarded,
        actor,
        "namespace labelled {}={mode}{}",
        crate::resolve::kube::convert::MODE_LABEL,
        if unguarded { ", unguarded" } else { "" }
    );
    api::audit::record(
        &relay.state,
        NewEntry::new(actor, Kind::ModeChange, format!("{from} -> {mode}"))
            .namespace(namespace.clone())
            .details(serde_json::json!({
                "from": from,
                "to": mode,
                "guard": mode == Mode::Enforce && !unguarded,
                "forced": body.require_ready != Some(true),
            })),
    );
    let mut modes = modes(&relay);
    modes.modes.insert(namespace, mode);
    Ok(Json(modes).into_response())
}

/// Say the coverage on every answer: the header always, the field in JSON
/// objects (other answers, streams included, pass as they are).
async fn with_coverage(State(relay): State<Relay>, request: Request, next: Next) -> Response {
    // The coverage itself needs no second copy.
    let is_coverage = request.uri().path() == "/api/v1/coverage";
    let response = next.run(request).await;
    let c = relay.hub.coverage();
    let (mut parts, body) = response.into_parts();
    if let Ok(value) = HeaderValue::from_str(&coverage::header(&c)) {
        parts.headers.insert(COVERAGE_HEADER, value);
    }
    let json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim() == "application/json")
        });
    if !json || is_coverage || parts.status == StatusCode::NOT_MODIFIED {
        return Response::from_parts(parts, body);
    }
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            return ApiError::internal("cannot read an answer to add coverage", error)
                .into_response();
        }
    };
    let body = add_coverage(&bytes, &c).map_or_else(|| Body::from(bytes), Body::from);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, body)
}

/// `json` with `"coverage"` added last, when it is an object; its other
/// bytes as they were.
fn add_coverage(json: &[u8], coverage: &CoverageJson) -> Option<Vec<u8>> {
    let start = json.iter().position(|b| !b.is_ascii_whitespace())?;
    let end = json.iter().rposition(|b| !b.is_ascii_whitespace())?;
    if json[start] != b'{' || json[end] != b'}' {
        return None;
    }
    let empty = json[start + 1..end].iter().all(u8::is_ascii_whitespace);
    let field = serde_json::to_vec(coverage).ok()?;
    let mut out = Vec::with_capacity(json.len() + field.len() + 16);
    out.extend_from_slice(&json[..end]);
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(b"\"coverage\":");
    out.extend_from_slice(&field);
    out.extend_from_slice(&json[end..]);
    Some(out)
}

#[cfg(test)]
mod tests;
