//! The enforcer's endpoints:
//!
//! - `GET /api/policies/enforced[?format=json|yaml]`: the enforced policies
//!   (JSON: with modes and map occupancy; YAML: the policies as one stream);
//! - `POST /api/policies/enforced[?replace=NS[,NS...]]` with a YAML body of
//!   NetworkPolicies: add or replace them by namespace and name (after
//!   removing every policy of the `replace` namespaces). The whole
//!   resulting set is validated; one bad policy refuses the request and the
//!   previous set stays. The answer comes once the datapath enforces the
//!   new set;
//! - `DELETE /api/policies/enforced/{namespace}/{name}`;
//! - `GET /api/modes`; `PUT /api/modes/{namespace}` with `{"mode": "observe"
//!   | "audit" | "enforce"}`.

use std::collections::{BTreeMap, BTreeSet};

use axum::{
    Json,
    extract::{
        Path, Query, State,
        rejection::{JsonRejection, PathRejection, QueryRejection, StringRejection},
    },
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use weir_generator::{datapath::Mode, names};

use super::{
    AppState, audit,
    error::ApiError,
    learn::YAML,
    wire::{Applied, Deleted, Enforced, Modes},
};
use crate::{
    audit::{Kind, NewEntry},
    enforce::{
        Change, EnforceError, Outcome, View,
        task::{ChangeError, EnforcerHandle},
    },
    error_chain::chain,
    learn::analysis,
    learn::policies,
};

impl From<&View> for Modes {
    fn from(view: &View) -> Self {
        Self {
            modes: view.modes.clone(),
            default_mode: view.default_mode,
            ..Self::default()
        }
    }
}

impl From<&View> for Enforced {
    fn from(view: &View) -> Self {
        Self {
            policies: view.policies.clone(),
            modes: view.modes.clone(),
            default_mode: view.default_mode,
            entries: per_map(&view.entries),
            limits: per_map(&view.limits),
            ready: view.ready,
            held: view.held.clone(),
        }
    }
}

/// A count per map, keyed by the map's name.
pub(crate) fn per_map(counts: &BTreeMap<&'static str, usize>) -> BTreeMap<String, usize> {
    counts.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

fn enforcer(state: &AppState) -> Result<&EnforcerHandle, ApiError> {
    state
        .enforcer
        .as_ref()
        .ok_or(ApiError::EnforcementUnavailable)
}

pub(crate) async fn change(handle: &EnforcerHandle, change: Change) -> Result<Outcome, ApiError> {
    match handle.change(change).await {
        Ok(outcome) => Ok(outcome),
        Err(ChangeError::Gone) => Err(ApiError::EnforcementUnavailable),
        Err(ChangeError::Enforce(EnforceError::NoSuchPolicy { namespace, name })) => {
            Err(ApiError::UnknownPolicy {
                policy: format!("{namespace}/{name}"),
            })
        }
        Err(ChangeError::Enforce(error)) if error.is_client_error() => Err(ApiError::Refused {
            reason: chain(&error),
        }),
        Err(ChangeError::Enforce(error)) => {
            Err(ApiError::internal("enforcement change failed", error))
        }
    }
}

/// The query of `GET /api/policies/enforced`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListQuery {
    format: Option<String>,
}

/// `GET /api/policies/enforced`.
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<RawListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(raw) = query?;
    let view = enforcer(&state)?.view();
    match raw.format.as_deref() {
        None | Some("json") => Ok(Json(Enforced::from(&*view)).into_response()),
        Some("yaml") => {
            let mut body = String::new();
            for policy in &view.policies {
                body.push_str("---\n");
                body.push_str(&serde_yaml::to_string(policy).map_err(|error| {
                    ApiError::internal("cannot encode a policy as YAML", error)
                })?);
            }
            Ok(([(header::CONTENT_TYPE, YAML)], body).into_response())
        }
        Some(other) => Err(ApiError::BadParameter {
            name: "format",
            reason: format!("{other:?}: expected yaml or json"),
        }),
    }
}

/// The query of `POST /api/policies/enforced`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApplyQuery {
    replace: Option<String>,
    /// For a relay (`--allow-partial`); an agent covers its node whole.
    #[serde(rename = "allow_partial")]
    _allow_partial: Option<String>,
}

/// `POST /api/policies/enforced`.
pub async fn apply(
    State(state): State<AppState>,
    query: Result<Query<RawApplyQuery>, QueryRejection>,
    body: Result<String, StringRejection>,
) -> Result<Json<Applied>, ApiError> {
    let Query(raw) = query?;
    let body = body?;
    let handle = enforcer(&state)?;
    let mut replace = BTreeSet::new();
    for ns in raw.replace.iter().flat_map(|r| r.split(',')) {
        names::dns1123_label(ns).map_err(|reason| ApiError::BadParameter {
            name: "replace",
            reason,
        })?;
        replace.insert(ns.to_owned());
    }
    let loaded = policies::parse("request body", &body).map_err(|e| ApiError::BadPolicies {
        reason: e.to_string(),
    })?;
    if loaded.is_empty() && replace.is_empty() {
        return Err(ApiError::BadPolicies {
            reason: "request body: no NetworkPolicy".to_owned(),
        });
    }
    // Each policy is checked on its own first, so the error names it.
    policies::policy_set(loaded.clone()).map_err(|e| ApiError::BadPolicies {
        reason: e.to_string(),
    })?;
    let names: Vec<String> = loaded
        .iter()
        .map(|s| {
            let (ns, name) = crate::enforce::state_file::key_of(&s.policy);
            format!("{ns}/{name}")
        })
        .collect();
    let outcome = change(
        handle,
        Change::Apply {
            policies: loaded.into_iter().map(|s| s.policy).collect(),
            replace: replace.clone(),
        },
    )
    .await?;
    Ok(Json(Applied {
        applied: names,
        replaced_namespaces: replace.into_iter().collect(),
        writes: outcome.writes,
        entries: per_map(&outcome.entries),
    }))
}

/// A name from the URL path, checked as the API server checks it: a
/// namespace stored in `enforce.json` must be one a cluster could have.
pub(crate) fn path_name(
    segment: &str,
    value: &str,
    valid: fn(&str) -> Result<(), String>,
) -> Result<(), ApiError> {
    valid(value).map_err(|reason| ApiError::Status {
        code: 400,
        message: format!("bad path segment `{segment}`: {reason}"),
    })
}

/// `DELETE /api/policies/enforced/{namespace}/{name}`.
pub async fn delete(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Deleted>, ApiError> {
    let Path((namespace, name)) = path?;
    path_name("namespace", &namespace, names::dns1123_label)?;
    path_name("name", &name, names::dns1123_subdomain)?;
    let handle = enforcer(&state)?;
    let policy = format!("{namespace}/{name}");
    let outcome = change(handle, Change::Delete { namespace, name }).await?;
    Ok(Json(Deleted {
        deleted: policy,
        entries: per_map(&outcome.entries),
        writes: outcome.writes,
    }))
}

/// `GET /api/modes`.
pub async fn modes(State(state): State<AppState>) -> Result<Json<Modes>, ApiError> {
    enforcer(&state)?;
    Ok(Json(state.modes()))
}

/// The body of `PUT /api/modes/{namespace}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeBody {
    pub(crate) mode: String,
    /// `false`: no guard window after this flip to enforce (`--no-guard`).
    #[serde(default)]
    pub(crate) guard: Option<bool>,
    /// `true`: refuse audit or enforce for a namespace that is not ready
    /// (`weir mode set` sends it unless `--force`; the UI too).
    #[serde(default)]
    pub(crate) require_ready: Option<bool>,
}

/// The `mode` of a `PUT /api/modes/{namespace}` body.
pub(crate) fn parse_mode(value: &str) -> Result<Mode, ApiError> {
    value.parse().map_err(
        |weir_generator::datapath::UnknownMode(value)| ApiError::BadField {
            name: "mode",
            reason: weir_generator::datapath::UnknownMode(super::error::shorten(&value))
                .to_string(),
        },
    )
}

/// Why `namespace` is not ready to be judged (the readiness of
/// `/api/status`: quiet for the quiet period, the suggestion covering its
/// recent traffic), or `None` when it is.
async fn not_ready(state: &AppState, namespace: &str) -> Result<Option<String>, ApiError> {
    let report = super::learn::status_report(state).await?;
    Ok(analysis::why_not_ready(&report, namespace))
}

/// `PUT /api/modes/{namespace}`.
pub async fn set_mode(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<ModeBody>, JsonRejection>,
) -> Result<Json<Modes>, ApiError> {
    let Path(namespace) = path?;
    path_name("namespace", &namespace, names::dns1123_label)?;
    let Json(body) = body?;
    let mode = parse_mode(&body.mode)?;
    let handle = enforcer(&state)?;
    let before = handle.view().modes.get(&namespace).copied();
    let default_mode = handle.view().default_mode;
    let from = before.unwrap_or(default_mode);
    if body.require_ready == Some(true)
        && mode > from
        && let Some(reason) = not_ready(&state, &namespace).await?
    {
        return Err(ApiError::Status {
            code: 409,
            message: analysis::not_ready_message(&namespace, mode, &reason),
        });
    }
    let unguarded = mode == Mode::Enforce && body.guard == Some(false);
    if unguarded {
        let (_, saved) = state.guard.update(|g| g.skip_next(&namespace));
        if let Err(error) = saved {
            return Err(ApiError::internal("cannot save the guard's state", error));
        }
    }
    let changed = change(
        handle,
        Change::SetMode {
            namespace: namespace.clone(),
            mode,
        },
    )
    .await;
    if changed.is_err() && unguarded {
        let _ = state.guard.update(|g| g.unguarded.remove(&namespace));
    }
    changed?;
    audit::record(
        &state,
        NewEntry::new(
            audit::actor(&headers),
            Kind::ModeChange,
            format!("{from} -> {mode}"),
        )
        .namespace(namespace)
        .details(serde_json::json!({
            "from": from,
            "to": mode,
            "guard": mode == Mode::Enforce && !unguarded,
            "forced": body.require_ready != Some(true),
        })),
    );
    Ok(Json(state.modes()))
}
