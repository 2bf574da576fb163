//! The agent's HTTP API, the UI and `/metrics`.
//!
//! HTTP is a function: [`app`] builds the router from an [`AppState`];
//! the daemon binds and serves it, tests call it with `oneshot`.
//!
//! | path | what |
//! |---|---|
//! | `GET /` | the UI |
//! | `GET /healthz` | `{"status": "ok", ...}` |
//! | `GET /metrics` | Prometheus text (OpenMetrics when asked for) |
//! | `GET /api/flows` | recent flow records, Hubble-shaped; `follow=true` streams NDJSON |
//! | `GET /api/graph` | the workload graph |
//! | `GET /api/policies` | the suggested NetworkPolicies (YAML, or `format=json`) |
//! | `POST /api/verify` | replay the graph through a YAML body of policies |
//! | `GET /api/status` | per-namespace readiness to audit |
//! | `GET, POST /api/policies/enforced` | the enforced policies; add or replace (YAML body) |
//! | `DELETE /api/policies/enforced/{ns}/{name}` | stop enforcing one |
//! | `GET /api/modes`, `PUT /api/modes/{ns}` | per-namespace modes: observe, audit, enforce |

pub mod enforce;
pub mod error;
pub mod flows;
pub mod graph;
pub mod learn;
pub mod record;

use std::{
    path::PathBuf,
    sync::{Arc, PoisonError, RwLock},
    time::Instant,
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, Uri, header},
    response::{IntoResponse, Response},
    routing::{delete, get, post, put},
};

use self::{error::ApiError, graph::GraphJson};
use crate::{
    aggregator::Aggregator,
    learn::analysis::ReadinessOptions,
    metrics::{Metrics, OPENMETRICS_TEXT, PROMETHEUS_TEXT},
    resolve::Resolver,
    web,
};

/// The current resolver, swapped whole when the inventory changes.
pub type SharedResolver = Arc<RwLock<Arc<Resolver>>>;

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The flow graph and recent flows.
    pub aggregator: Arc<Aggregator>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// The current resolver.
    pub resolver: SharedResolver,
    /// This node's name.
    pub node_name: Arc<str>,
    /// When the agent started, for `/healthz`.
    pub started: Instant,
    /// Serve the UI from this directory instead of the embedded copy
    /// (UI development).
    pub web_dir: Option<PathBuf>,
    /// The observation window and how readiness is judged.
    pub learning: Learning,
    /// The enforcer, when the agent runs one.
    pub enforcer: Option<crate::enforce::task::EnforcerHandle>,
}

/// What `/api/status` needs beyond the graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Learning {
    /// When the observation window started (the store's creation), Unix ns.
    pub window_start: Option<u64>,
    /// Quiet period and coverage window.
    pub readiness: ReadinessOptions,
}

impl AppState {
    /// State for [`app`], started now, with the embedded UI.
    pub fn new(
        aggregator: Arc<Aggregator>,
        metrics: Arc<Metrics>,
        resolver: SharedResolver,
        node_name: impl Into<String>,
    ) -> Self {
        Self {
            aggregator,
            metrics,
            resolver,
            node_name: Arc::from(node_name.into()),
            started: Instant::now(),
            web_dir: None,
            learning: Learning::default(),
            enforcer: None,
        }
    }

    /// Serve the enforcer's endpoints through `handle`.
    #[must_use]
    pub fn with_enforcer(mut self, handle: crate::enforce::task::EnforcerHandle) -> Self {
        self.enforcer = Some(handle);
        self
    }

    /// Set the observation window and the readiness options.
    #[must_use]
    pub fn with_learning(mut self, learning: Learning) -> Self {
        self.learning = learning;
        self
    }

    /// Serve the UI from `dir`.
    #[must_use]
    pub fn with_web_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.web_dir = dir;
        self
    }
}

/// The router.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/flows", get(flows::flows))
        .route("/api/graph", get(graph))
        .route("/api/policies", get(learn::policies))
        .route("/api/verify", post(learn::verify))
        .route("/api/status", get(learn::status))
        .route(
            "/api/policies/enforced",
            get(enforce::list).post(enforce::apply),
        )
        .route(
            "/api/policies/enforced/{namespace}/{name}",
            delete(enforce::delete),
        )
        .route("/api/modes", get(enforce::modes))
        .route("/api/modes/{namespace}", put(enforce::set_mode))
        .route("/{file}", get(asset))
        .fallback(not_found)
        .with_state(state)
}

async fn index(State(state): State<AppState>) -> Result<Response, ApiError> {
    web::serve(state.web_dir.as_deref(), "index.html").await
}

async fn asset(
    State(state): State<AppState>,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    web::serve(state.web_dir.as_deref(), &file).await
}

async fn healthz(State(state): State<AppState>) -> Json<serde_json::Value> {
    let (attached_pods, known_ips) = {
        let resolver = state
            .resolver
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        (resolver.attached_pods(), resolver.known_ips())
    };
    Json(serde_json::json!({
        "status": "ok",
        "node_name": &*state.node_name,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "graph_edges": state.aggregator.edge_count(),
        "flow_records": state.aggregator.record_count(),
        "attached_pods": attached_pods,
        "known_pod_ips": known_ips,
    }))
}

/// Prometheus text by default; OpenMetrics for scrapers that accept it
/// (Prometheus asks for it first).
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let wants_openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if wants_openmetrics {
        (
            [(header::CONTENT_TYPE, OPENMETRICS_TEXT)],
            state.metrics.encode_openmetrics(),
        )
            .into_response()
    } else {
        (
            [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
            state.metrics.encode(),
        )
            .into_response()
    }
}

async fn graph(State(state): State<AppState>) -> Json<GraphJson> {
    Json(GraphJson::from(&state.aggregator.graph()))
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound {
        path: uri.path().to_owned(),
    }
}

#[cfg(test)]
mod tests;
