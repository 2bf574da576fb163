//! `GET /api/audit[?namespace=&kind=&after=&limit=]`: the audit log
//! ([`crate::audit`]), oldest first. Handlers that make a decision record
//! it with [`record`]; who made it is the client's `X-Weir-Actor` header
//! ([`actor`]), since the token says only that the client may.

use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
    http::HeaderMap,
};
use serde::Deserialize;
use tracing::warn;

use super::{
    AppState,
    error::ApiError,
    query,
    wire::{ACTOR_HEADER, Audit, AuditEntryJson},
};
use crate::{
    audit::{Filter, NewEntry},
    error_chain::chain,
};

/// Who asked, as the client says: `X-Weir-Actor` when it is short
/// printable text, else `api`.
#[must_use]
pub fn actor(headers: &HeaderMap) -> String {
    headers
        .get(ACTOR_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| !c.is_control()))
        .map_or_else(|| "api".to_owned(), str::to_owned)
}

/// Append `entry` to the audit log. The decision is already made: a log
/// that cannot be written is logged loudly and counted, not undone.
pub fn record(state: &AppState, entry: NewEntry) {
    if let Err(error) = state.audit.append(entry.clone()) {
        warn!(
            error = chain(&error),
            kind = %entry.kind,
            namespace = entry.namespace.as_deref().unwrap_or(""),
            what = %entry.what,
            "cannot write the audit log"
        );
    }
}

/// The query of `GET /api/audit`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuditQuery {
    namespace: Option<String>,
    kind: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

/// `GET /api/audit`.
pub async fn audit(
    State(state): State<AppState>,
    raw: Result<Query<RawAuditQuery>, QueryRejection>,
) -> Result<Json<Audit>, ApiError> {
    let Query(raw) = raw?;
    let filter = Filter {
        namespace: raw.namespace.filter(|ns| !ns.is_empty()),
        kind: query::optional("kind", raw.kind)?,
        after: query::optional("after", raw.after)?,
        limit: query::optional("limit", raw.limit)?,
    };
    let log = std::sync::Arc::clone(&state.audit);
    let entries = tokio::task::spawn_blocking(move || log.list(&filter))
        .await
        .map_err(|e| ApiError::internal("audit log read panicked", e))?
        .map_err(|e| ApiError::internal("cannot read the audit log", e))?;
    Ok(Json(Audit {
        entries: entries.iter().map(AuditEntryJson::from).collect(),
    }))
}
