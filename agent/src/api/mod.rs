//! The agent's HTTP API, the UI and `/metrics`.
//!
//! HTTP is a function: [`app`] builds the router from an [`AppState`];
//! the daemon binds and serves it, tests call it with `oneshot`.
//! docs/api.md describes every endpoint with examples.
//!
//! | path | what |
//! |---|---|
//! | `GET /` | the UI |
//! | `GET /healthz` | `{"status": "ok", ...}` |
//! | `GET /metrics` | Prometheus text (OpenMetrics when asked for) |
//! | `GET /api/flows` | recent flow records, Hubble-shaped; `follow=true` streams NDJSON |
//! | `GET /api/graph` | the workload graph with verdicts; filters `namespace`, `protocol`, `port`, `verdict`, `since` |
//! | `GET /api/edge?source=&target=` | one edge: ports, pods, recent flows, enforced policy verdict per port |
//! | `GET /api/node?id=` | one node: pods, ports served, edges in and out |
//! | `GET /api/events` | server-sent events: `graph` (version changed), `modes` |
//! | `GET /api/policies` | the suggested NetworkPolicies (YAML, or `format=json`) |
//! | `GET /api/policies/diff?namespace=` | suggested vs enforced policies of a namespace |
//! | `POST /api/verify` | replay the graph through a YAML body of policies (read-only) |
//! | `GET /api/verify/suggestion` | the same for the current suggestion |
//! | `GET /api/status` | per-namespace readiness to audit |
//! | `GET /api/impact?namespace=&mode=&window=` | what the enforced policies would deny in that mode |
//! | `GET /api/v1/contribution` | this node's graph by side, for a relay; `304` while unchanged |
//! | `GET /api/auth` | `{"writes_need_token": true}` |
//! | `GET, POST /api/policies/enforced` | the enforced policies; add or replace (YAML body) |
//! | `DELETE /api/policies/enforced/{ns}/{name}` | stop enforcing one |
//! | `GET /api/modes`, `PUT /api/modes/{ns}` | per-namespace modes: observe, audit, enforce |
//! | `GET /api/audit` | the audit log: mode changes, reverts, promotions, approvals; filters `namespace`, `kind`, `after`, `limit` |
//! | `GET /api/pending` | the would-have-dropped queue: denied edges, why, the rule that would allow each |
//! | `GET /api/pending/preview?edges=` | what approving edges would write, as a diff |
//! | `POST /api/pending/approve`, `POST /api/pending/reject` | decide on queued edges |
//!
//! The JSON of each answer is a type of [`wire`], shared with the clients;
//! query strings are checked with [`query`], so errors name the parameter.
//!
//! [`relay_app`] is the read-only subset a relay reads over mutual TLS
//! (`--relay-listen`).
//!
//! Every request that changes state needs `Authorization: Bearer TOKEN`
//! ([`auth`]); errors are JSON `{"error": "...", "status": CODE}`.

pub mod audit;
pub mod auth;
pub mod contribution;
pub mod details;
pub mod enforce;
pub mod error;
pub mod events;
pub mod flows;
pub mod graph;
pub mod guard;
pub mod host;
pub mod learn;
pub mod limits;
pub mod pending;
pub mod promote;
pub mod query;
pub mod record;
pub mod review;
pub mod server;
pub mod ui;
pub mod wire;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, PoisonError, RwLock},
    time::Instant,
};

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Path, State, rejection::PathRejection},
    http::{HeaderMap, Method, Uri, header},
    response::{IntoResponse, Response},
    routing::{delete, get, post, put},
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use weir_generator::cluster::Cluster;

use self::{auth::Token, error::ApiError, wire::Modes};
use crate::{
    aggregator::Aggregator,
    learn::analysis::ReadinessOptions,
    metrics::{Metrics, OPENMETRICS_TEXT, PROMETHEUS_TEXT},
    resolve::Resolver,
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
    /// Modes are the namespaces' `weir.dev/mode` labels, as the resolver's
    /// cluster has them (a relay: every agent follows the labels).
    pub modes_from_labels: bool,
    /// What a request that changes state must present.
    pub token: Token,
    /// Request URI, header and body limits.
    pub limits: limits::RequestLimits,
    /// Host names answered to besides addresses and localhost.
    pub hosts: host::AllowedHosts,
    /// The agent's losses (full flow table, full ring buffer).
    pub health: Arc<crate::health::Health>,
    /// The graph store's identity ([`Loaded::epoch`](crate::graph_store::Loaded::epoch));
    /// without a store, one drawn for this run (nothing outlives it).
    pub epoch: u64,
    /// This run of the agent: the graph's version restarts with it.
    pub instance: u64,
    /// The append-only log of decisions ([`crate::audit`]); in memory
    /// unless [`AppState::with_audit`] gives the state directory's.
    pub audit: Arc<crate::audit::AuditLog>,
    /// The guard's state ([`crate::guard`]); in memory unless
    /// [`AppState::with_guard`] gives the state directory's.
    pub guard: Arc<crate::guard::GuardHandle>,
    /// How the guard reverts a namespace.
    pub guard_reverter: guard::Reverter,
    /// The would-have-dropped queue.
    pub pending: Arc<crate::pending::Queue>,
    /// Automatic promotion's clocks ([`crate::promote`]); in memory unless
    /// [`AppState::with_promote`] gives the state directory's.
    pub promote: Arc<promote::Promoter>,
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
    /// State for [`app`], started now, with the embedded UI and a random
    /// token ([`AppState::with_token`] sets the agent's).
    ///
    /// # Panics
    /// When the system has no random source.
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
            modes_from_labels: false,
            token: Token::generate().expect("the system's random source works"),
            limits: limits::RequestLimits::default(),
            hosts: host::AllowedHosts::default(),
            health: Arc::default(),
            epoch: random_id(),
            instance: random_id(),
            audit: Arc::default(),
            guard: Arc::default(),
            guard_reverter: guard::Reverter::Local,
            pending: Arc::default(),
            promote: Arc::default(),
        }
    }

    /// Keep automatic promotion's clocks in `promote`.
    #[must_use]
    pub fn with_promote(mut self, promote: crate::promote::PromoteHandle) -> Self {
        self.promote = Arc::new(promote::Promoter::new(promote));
        self
    }

    /// Keep the guard's state in `guard`, revert through `reverter`.
    #[must_use]
    pub fn with_guard(
        mut self,
        guard: Arc<crate::guard::GuardHandle>,
        reverter: guard::Reverter,
    ) -> Self {
        self.guard = guard;
        self.guard_reverter = reverter;
        self
    }

    /// Record decisions in `log`.
    #[must_use]
    pub fn with_audit(mut self, log: Arc<crate::audit::AuditLog>) -> Self {
        self.audit = log;
        self
    }

    /// Take the modes from the namespaces' labels (a relay).
    #[must_use]
    pub fn with_modes_from_labels(mut self) -> Self {
        self.modes_from_labels = true;
        self
    }

    /// Require `token` for changes.
    #[must_use]
    pub fn with_token(mut self, token: Token) -> Self {
        self.token = token;
        self
    }

    /// Apply `limits` to requests.
    #[must_use]
    pub fn with_limits(mut self, limits: limits::RequestLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Answer requests naming `hosts` too.
    #[must_use]
    pub fn with_allowed_hosts(mut self, hosts: host::AllowedHosts) -> Self {
        self.hosts = hosts;
        self
    }

    /// Every namespace's mode (all observe without an enforcer, unless
    /// they come from the namespaces' labels).
    #[must_use]
    pub fn modes(&self) -> Modes {
        if self.modes_from_labels {
            let cluster = self.cluster();
            return Modes {
                modes: cluster
                    .namespaces
                    .iter()
                    .filter_map(|(ns, labels)| {
                        let mode = labels.get(crate::resolve::kube::convert::MODE_LABEL)?;
                        Some((ns.clone(), mode.parse().ok()?))
                    })
                    .collect(),
                default_mode: weir_generator::datapath::Mode::default(),
                ..Modes::default()
            };
        }
        let mut modes = self
            .enforcer
            .as_ref()
            .map(|e| Modes::from(&*e.view()))
            .unwrap_or_default();
        guard::describe(&self.guard.snapshot(), &mut modes);
        self.promote.describe(&mut modes);
        modes
    }

    /// The enforced policies (none without an enforcer).
    #[must_use]
    pub fn enforced_policies(&self) -> Vec<NetworkPolicy> {
        self.enforcer
            .as_ref()
            .map(|e| e.view().policies.clone())
            .unwrap_or_default()
    }

    /// The cluster as the resolver knows it now.
    #[must_use]
    pub fn cluster(&self) -> Arc<Cluster> {
        self.resolver
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .cluster()
    }

    /// Host names of external addresses the pod source knows.
    #[must_use]
    pub fn host_names(&self) -> BTreeMap<IpAddr, String> {
        self.resolver
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .known_hosts()
            .clone()
    }

    /// Report the losses `health` tracks.
    /// The graph store's identity.
    #[must_use]
    pub fn with_epoch(mut self, epoch: u64) -> Self {
        self.epoch = epoch;
        self
    }

    #[must_use]
    pub fn with_health(mut self, health: Arc<crate::health::Health>) -> Self {
        self.health = health;
        self
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

    /// Keep the would-have-dropped queue in `queue`.
    #[must_use]
    pub fn with_pending(mut self, queue: Arc<crate::pending::Queue>) -> Self {
        self.pending = queue;
        self
    }

    /// Serve the UI from `dir`.
    #[must_use]
    pub fn with_web_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.web_dir = dir;
        self
    }
}

/// A random id (an epoch without a store, an instance).
fn random_id() -> u64 {
    let mut bytes = [0_u8; 8];
    getrandom::fill(&mut bytes).expect("the system's random source works");
    u64::from_le_bytes(bytes)
}

/// The router: [`routes`] [`with_layers`].
pub fn app(state: AppState) -> Router {
    with_layers(routes(), state)
}

/// Every route of the API, without its layers: a relay adds its own
/// answers in front of them ([`with_layers`] then adds the agent's).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/auth", get(auth_info))
        .route("/api/flows", get(flows::flows))
        .route("/api/graph", get(graph::graph))
        .route("/api/v1/contribution", get(contribution::contribution))
        .route("/api/edge", get(details::edge))
        .route("/api/node", get(details::node))
        .route("/api/events", get(events::events))
        .route("/api/policies", get(learn::policies))
        .route("/api/policies/diff", get(review::policy_diff))
        .route("/api/verify", post(learn::verify))
        .route("/api/verify/suggestion", get(review::verify_suggestion))
        .route("/api/status", get(learn::status))
        .route("/api/impact", get(review::impact))
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
        .route("/api/audit", get(audit::audit))
        .route("/api/pending", get(pending::list))
        .route("/api/pending/preview", get(pending::preview_approval))
        .route("/api/pending/approve", post(pending::approve))
        .route("/api/pending/reject", post(pending::reject))
        .route("/{file}", get(asset))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// `router` with the agent's layers: request limits, the token guard, the
/// host check, the security headers and error logging.
pub fn with_layers(router: Router<AppState>, state: AppState) -> Router {
    router
        // Bodies arrive read and checked by `limits::limit`.
        .layer(DefaultBodyLimit::max(state.limits.max_body()))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::limit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            host::check,
        ))
        .layer(axum::middleware::from_fn(auth::headers))
        // Outermost: it sees every answer, the other layers' refusals too.
        .layer(axum::middleware::from_fn(error::log))
        .with_state(state)
}

/// The relay listener's router (`--relay-listen`): read-only, what a relay
/// reads of this node. mTLS stands in for the token and the `Host` check
/// (only a client whose certificate the CA signed gets here); the request
/// limits, the JSON errors and the error log are the same as [`app`]'s.
///
/// | path | what |
/// |---|---|
/// | `GET /healthz` | as on the API |
/// | `GET /api/v1/contribution` | this node's graph by side |
/// | `GET /api/flows` | recent flows; `follow=true` streams them |
/// | `GET /api/events` | server-sent events: `graph` when its version changed |
pub fn relay_app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/contribution", get(contribution::contribution))
        .route("/api/flows", get(flows::flows))
        .route("/api/events", get(events::events))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.limits.max_body()))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::limit,
        ))
        .layer(axum::middleware::from_fn(auth::headers))
        .layer(axum::middleware::from_fn(error::log))
        .with_state(state)
}

/// `GET /api/auth`: what a client needs to know before changing state.
async fn auth_info() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "writes_need_token": true }))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::Status {
        code: 405,
        message: format!("method {method} is not allowed on {}", uri.path()),
    }
}

async fn index(State(state): State<AppState>) -> Result<Response, ApiError> {
    ui::serve(state.web_dir.as_deref(), "index.html").await
}

async fn asset(
    State(state): State<AppState>,
    file: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(file) = file?;
    ui::serve(state.web_dir.as_deref(), &file).await
}

async fn healthz(State(state): State<AppState>) -> Json<serde_json::Value> {
    let (attached_pods, known_ips, source) = {
        let resolver = state
            .resolver
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        (
            resolver.attached_pods(),
            resolver.known_ips(),
            resolver.source_health().cloned(),
        )
    };
    // Degraded while something is lost: the reasons say what and what to do.
    let degraded = state.health.ongoing();
    let held = state.enforcer.as_ref().and_then(|e| e.view().held.clone());
    let reasons: Vec<&str> = degraded
        .iter()
        .map(|e| e.message.as_str())
        .chain(held.as_deref())
        .collect();
    Json(serde_json::json!({
        "status": if reasons.is_empty() { "ok" } else { "degraded" },
        "reasons": reasons,
        "degraded": degraded,
        "flow_table_capacity": state.metrics.flow_table_capacity(),
        "node_name": &*state.node_name,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs(),
        "graph_edges": state.aggregator.edge_count(),
        "flow_records": state.aggregator.record_count(),
        "attached_pods": attached_pods,
        "known_pod_ips": known_ips,
        // How stale the pod source's view is (kube source), else null.
        "source": source,
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

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound {
        path: uri.path().to_owned(),
    }
}

#[cfg(test)]
mod tests;
