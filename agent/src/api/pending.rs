//! The would-have-dropped queue ([`crate::pending`]):
//!
//! - `GET /api/pending[?namespace=NS[,NS...]]`: the queued edges the
//!   enforced policies deny, with the policies that isolate them and the
//!   policies that would allow them;
//! - `GET /api/pending/preview?edges=ID[,ID...]`: what approving them would
//!   write, with the diff of the enforced policies (read-only);
//! - `POST /api/pending/approve` `{"edges": [ID...]}`: enforce those
//!   policies (the answer comes once the datapath enforces them), or with
//!   `"record_only": true` record the approval of policies written to the
//!   cluster by the client;
//! - `POST /api/pending/reject` `{"edges": [ID...]}`: keep them denied and
//!   out of the queue for the reject window.
//!
//! An id that is not in the queue now (allowed since, decided, its
//! workloads gone) is a `404` naming it; nothing is written or recorded
//! then, for any of the edges asked.

use std::collections::BTreeSet;

use axum::{
    Json,
    extract::{
        Query, State,
        rejection::{JsonRejection, QueryRejection},
    },
    http::HeaderMap,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::Deserialize;
use weir_generator::eval::PolicySet;

use super::{
    AppState,
    enforce::{change, per_map},
    error::{ApiError, shorten},
    learn::blocking,
    query,
    wire::{
        PendingDecided, PendingDecisionBody, PendingDenial, PendingEdge, PendingPreview,
        PendingQueue,
    },
};
use crate::{
    audit::{Kind, NewEntry},
    enforce::{Change, state_file::key_of},
    learn::policy_yaml,
    pending::{
        DecisionKind,
        propose::{self, Entry, Inputs},
    },
    timestamp::rfc3339,
};

/// The queue as it stands: the aggregator's latest folded in, judged
/// against the enforced set.
async fn entries(state: &AppState) -> Result<Vec<Entry>, ApiError> {
    let view = state.aggregator.view();
    state.pending.observe(&view);
    let queued = state.pending.snapshot();
    let enforced = state.enforced_policies();
    let cluster = state.cluster();
    let reject_window = state.pending.reject_window;
    blocking(move || -> Result<Vec<Entry>, ApiError> {
        let set = PolicySet::new(enforced)
            .map_err(|error| ApiError::internal("the enforced set does not validate", error))?;
        Ok(propose::list(
            &queued,
            &Inputs {
                enforced: &set,
                cluster: &cluster,
                graph: &view.graph,
                reject_window,
            },
        ))
    })
    .await?
}

fn policy_key(policy: &NetworkPolicy) -> String {
    let (namespace, name) = key_of(policy);
    format!("{namespace}/{name}")
}

fn stream(policies: &[&NetworkPolicy]) -> String {
    policies
        .iter()
        .map(|p| format!("---\n{}", policy_yaml(p)))
        .collect()
}

impl From<&Entry> for PendingEdge {
    fn from(e: &Entry) -> Self {
        let (policies, rule, no_rule) = match &e.proposal {
            Ok(policies) => (
                policies.iter().map(policy_key).collect(),
                stream(&policies.iter().collect::<Vec<_>>()),
                None,
            ),
            Err(why) => (Vec::new(), String::new(), Some(why.to_string())),
        };
        let namespaces: BTreeSet<String> = e.denied.iter().map(|d| d.namespace.clone()).collect();
        Self {
            id: e.id.clone(),
            source: e.key.source.to_string(),
            target: e.key.target.to_string(),
            port: e.key.port,
            protocol: e.key.protocol,
            namespaces: namespaces.into_iter().collect(),
            first_seen: rfc3339(e.seen.first_seen),
            last_seen: rfc3339(e.seen.last_seen),
            audit: e.seen.audit,
            dropped: e.seen.dropped,
            denied: e
                .denied
                .iter()
                .map(|d| PendingDenial {
                    direction: d.direction.field().to_owned(),
                    namespace: d.namespace.clone(),
                    reason: d.reason.clone(),
                    isolated_by: d.isolated_by.clone(),
                })
                .collect(),
            policies,
            rule,
            no_rule,
        }
    }
}

/// The query of `GET /api/pending`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListQuery {
    namespace: Option<String>,
}

/// `GET /api/pending`.
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<RawListQuery>, QueryRejection>,
) -> Result<Json<PendingQueue>, ApiError> {
    let Query(raw) = query?;
    let namespaces = query::namespaces(raw.namespace)?;
    let entries = entries(&state).await?;
    Ok(Json(PendingQueue {
        entries: entries
            .iter()
            .filter(|e| {
                namespaces
                    .as_ref()
                    .is_none_or(|wanted| e.denied.iter().any(|d| wanted.contains(&d.namespace)))
            })
            .map(PendingEdge::from)
            .collect(),
        reject_window_seconds: state.pending.reject_window.as_secs(),
    }))
}

/// The entries named by `ids`, in the order asked (each once).
fn chosen(entries: Vec<Entry>, ids: &[String]) -> Result<Vec<Entry>, ApiError> {
    if ids.is_empty() {
        return Err(ApiError::BadField {
            name: "edges",
            reason:
                "at least one edge id (SOURCE->TARGET:PORT/PROTOCOL, as `weir pending` lists them)"
                    .to_owned(),
        });
    }
    let mut chosen: Vec<Entry> = Vec::with_capacity(ids.len());
    for id in ids {
        if chosen.iter().any(|e| &e.id == id) {
            continue;
        }
        let entry = entries.iter().find(|e| &e.id == id).ok_or_else(|| ApiError::Status {
            code: 404,
            message: format!(
                "no pending edge {}: it is not in the queue (allowed since, decided, or its workloads are gone)",
                shorten(id)
            ),
        })?;
        chosen.push(entry.clone());
    }
    Ok(chosen)
}

/// What approving `chosen` writes, and the diff it makes to `enforced`.
fn preview(
    chosen: &[Entry],
    enforced: &[NetworkPolicy],
) -> Result<(Vec<NetworkPolicy>, PendingPreview), ApiError> {
    let mut added: Vec<NetworkPolicy> = Vec::new();
    for entry in chosen {
        let policies = entry.proposal.as_ref().map_err(|why| ApiError::Status {
            code: 422,
            message: format!("edge {} cannot be approved: {why}", entry.id),
        })?;
        added.extend(policies.iter().cloned());
    }
    let namespaces: BTreeSet<String> = added.iter().map(|p| key_of(p).0).collect();
    let mut diff = String::new();
    for ns in &namespaces {
        let in_ns = |p: &&NetworkPolicy| p.metadata.namespace.as_deref() == Some(ns.as_str());
        let mut before: Vec<&NetworkPolicy> = enforced.iter().filter(in_ns).collect();
        before.sort_by_key(|p| key_of(p));
        let new_keys: BTreeSet<(String, String)> = added.iter().map(key_of).collect();
        let mut after: Vec<&NetworkPolicy> = before
            .iter()
            .copied()
            .filter(|p| !new_keys.contains(&key_of(p)))
            .chain(added.iter().filter(in_ns))
            .collect();
        after.sort_by_key(|p| key_of(p));
        let (before, after) = (stream(&before), stream(&after));
        diff.push_str(
            &similar::TextDiff::from_lines(&before, &after)
                .unified_diff()
                .context_radius(3)
                .header(
                    &format!("enforced/{ns}.yaml"),
                    &format!("approved/{ns}.yaml"),
                )
                .to_string(),
        );
    }
    let preview = PendingPreview {
        edges: chosen.iter().map(|e| e.id.clone()).collect(),
        policies: added.iter().map(policy_key).collect(),
        yaml: stream(&added.iter().collect::<Vec<_>>()),
        diff,
    };
    Ok((added, preview))
}

/// The query of `GET /api/pending/preview`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPreviewQuery {
    edges: Option<String>,
}

/// `GET /api/pending/preview`.
pub async fn preview_approval(
    State(state): State<AppState>,
    query: Result<Query<RawPreviewQuery>, QueryRejection>,
) -> Result<Json<PendingPreview>, ApiError> {
    let Query(raw) = query?;
    let ids: Vec<String> = query::required("edges", raw.edges)?
        .split(',')
        .map(str::to_owned)
        .collect();
    let chosen = chosen(entries(&state).await?, &ids)?;
    let (_, preview) = preview(&chosen, &state.enforced_policies())?;
    Ok(Json(preview))
}

/// `POST /api/pending/approve`.
pub async fn approve(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<PendingDecisionBody>, JsonRejection>,
) -> Result<Json<PendingDecided>, ApiError> {
    let Json(body) = body?;
    let chosen = chosen(entries(&state).await?, &body.edges)?;
    let (policies, preview) = preview(&chosen, &state.enforced_policies())?;
    let mut writes = 0;
    if !body.record_only {
        let handle = state
            .enforcer
            .as_ref()
            .ok_or(ApiError::EnforcementUnavailable)?;
        let outcome = change(
            handle,
            Change::Apply {
                policies,
                replace: BTreeSet::new(),
            },
        )
        .await?;
        writes = outcome.writes;
        let _ = per_map(&outcome.entries);
    }
    record(
        &state,
        &headers,
        &chosen,
        DecisionKind::Approved,
        body.record_only,
    );
    Ok(Json(PendingDecided {
        decision: DecisionKind::Approved.to_string(),
        edges: preview.edges,
        policies: preview.policies,
        writes,
    }))
}

/// `POST /api/pending/reject`.
pub async fn reject(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<PendingDecisionBody>, JsonRejection>,
) -> Result<Json<PendingDecided>, ApiError> {
    let Json(body) = body?;
    if body.record_only {
        return Err(ApiError::BadField {
            name: "record_only",
            reason: "approve only: a rejection writes nothing anyway".to_owned(),
        });
    }
    let chosen = chosen(entries(&state).await?, &body.edges)?;
    record(&state, &headers, &chosen, DecisionKind::Rejected, false);
    Ok(Json(PendingDecided {
        decision: DecisionKind::Rejected.to_string(),
        edges: chosen.iter().map(|e| e.id.clone()).collect(),
        policies: Vec::new(),
        writes: 0,
    }))
}

/// Remember the decision, and write it to the audit log: one entry per
/// edge, in the namespace whose policies denied it.
fn record(
    state: &AppState,
    headers: &HeaderMap,
    chosen: &[Entry],
    kind: DecisionKind,
    elsewhere: bool,
) {
    let now = crate::graph_store::unix_now();
    state.pending.update(|s| {
        for entry in chosen {
            s.decide(entry.key.clone(), kind, now);
        }
        ((), true)
    });
    let who = super::audit::actor(headers);
    for entry in chosen {
        let isolated_by: Vec<&String> = entry.denied.iter().flat_map(|d| &d.isolated_by).collect();
        let policies: Vec<String> = entry
            .proposal
            .as_ref()
            .map(|p| p.iter().map(policy_key).collect())
            .unwrap_or_default();
        let key = &entry.key;
        let what = format!(
            "{kind_verb} {} -> {} {}/{}",
            key.source,
            key.target,
            key.protocol,
            key.port,
            kind_verb = match kind {
                DecisionKind::Approved => "approve",
                DecisionKind::Rejected => "reject",
            }
        );
        let reason = match (kind, elsewhere) {
            (DecisionKind::Approved, false) => {
                format!(
                    "enforced {} (denied by {isolated_by:?})",
                    policies.join(", ")
                )
            }
            (DecisionKind::Approved, true) => format!(
                "applied to the cluster by the client: {} (denied by {isolated_by:?})",
                policies.join(", ")
            ),
            (DecisionKind::Rejected, _) => format!(
                "kept denied by {isolated_by:?} for {}",
                humantime::format_duration(state.pending.reject_window)
            ),
        };
        let mut audit_entry = NewEntry::new(
            who.clone(),
            match kind {
                DecisionKind::Approved => Kind::Approve,
                DecisionKind::Rejected => Kind::Reject,
            },
            what,
        )
        .details(serde_json::json!({
            "reason": reason,
            "edge": entry.id,
            "isolated_by": isolated_by,
            "policies": policies,
        }));
        if let Some(denial) = entry.denied.first() {
            audit_entry = audit_entry.namespace(denial.namespace.clone());
        }
        super::audit::record(state, audit_entry);
        tracing::info!(
            edge = %entry.id,
            decision = %kind,
            %who,
            ?isolated_by,
            "pending edge decided"
        );
    }
}
