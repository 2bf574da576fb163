//! The guard at work ([`crate::guard`] is its bookkeeping): once a sweep,
//! follow the namespaces' modes, count the drops of learned edges in every
//! open window, and set a tripped namespace back to audit, saying why
//! everywhere: a structured log line naming the edges and the policies
//! that isolated them, `weir_guard_reverts_total{namespace}`, an audit log
//! entry, the namespace's `reverted` in `/api/modes` (which `weir status`,
//! `weir mode list` and the UI's mode switch show) and, in a cluster, an
//! Event on the Namespace.
//!
//! Where the mode lives decides how it is reverted ([`Reverter`]): the
//! enforcer's own (the lab, an inventory, `weir mode set`), or the
//! Namespace's `weir.dev/mode` label (the kube source): there the guard
//! patches the label and records why in the `weir.dev/guard-reverted`
//! annotation, so GitOps tools see the change, and every agent follows the
//! label.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::{Event, Namespace};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::watch;
use tracing::{info, warn};
use weir_generator::{
    datapath::Mode,
    eval::PolicySet,
    model::{EdgeKey, NodeId},
};

use super::{AppState, details, wire::Modes};
use crate::{
    audit::{Kind, NewEntry},
    enforce::{Change, EnforceError, task::ChangeError},
    error_chain::chain,
    guard::{Reverted, SKIP_ANNOTATION, Trip, edge_name},
    resolve::kube::convert::MODE_LABEL,
};

/// The annotation the guard records a revert in (kube source).
pub const REVERTED_ANNOTATION: &str = "weir.dev/guard-reverted";
/// Who the guard is in the audit log, the field manager and the Event.
pub const GUARD: &str = "weir-guard";

/// How the guard sets a namespace back to audit.
#[derive(Clone)]
pub enum Reverter {
    /// Through the enforcer: the mode is the agent's own.
    Local,
    /// The Namespace's `weir.dev/mode` label, through the API server.
    Kube(kube::Client),
}

impl std::fmt::Debug for Reverter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Local => "Reverter::Local",
            Self::Kube(_) => "Reverter::Kube",
        })
    }
}

/// Run [`tick`] every `interval` until `shutdown`, then automatic
/// promotion's ([`super::promote::tick`]): it sees the guard's reverts
/// of this check, and the guard sees its promotions at the next.
pub async fn run(state: AppState, interval: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        tick(&state).await;
        super::promote::tick(&state).await;
    }
}

/// One check: follow the modes, count drops, revert the tripped
/// namespaces. Returns the namespaces reverted.
pub async fn tick(state: &AppState) -> Vec<String> {
    let now = crate::graph_store::unix_now();
    let mut reverted = Vec::new();
    for (trip, policies) in check(state, now) {
        if revert(state, &trip, policies, now).await {
            reverted.push(trip.namespace);
        }
    }
    reverted
}

/// The synchronous part of [`tick`]: the trips, each with the policies
/// that isolated its edges.
fn check(state: &AppState, now: u64) -> Vec<(Trip, Vec<String>)> {
    let Some(enforcer) = state.enforcer.as_ref() else {
        return Vec::new();
    };
    let view = enforcer.view();
    if !view.ready {
        // Modes and policies are not in the maps yet: nothing was flipped.
        // The modes as saved are the baseline, so a flip made as the
        // agent becomes ready is seen as one.
        let (_, saved) = state.guard.update(|guard| {
            if guard.modes.is_none() {
                guard.modes = Some(view.modes.clone());
            }
        });
        if let Err(error) = saved {
            warn!(error = chain(&error), "cannot save the guard's state");
        }
        return Vec::new();
    }
    let modes = view.modes.clone();
    let resolver = Arc::clone(
        &state
            .resolver
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    // A flip needs the learned graph (the window's learned edges); an open
    // window needs the drops on every sweep, and the graph only to explain
    // a drop, which is rare: the full copy waits for it.
    let guard = state.guard.snapshot();
    let full = std::cell::OnceCell::new();
    if guard.modes.as_ref().is_some_and(|m| *m != modes) {
        full.set(state.aggregator.view()).ok();
    }
    let drops = guard.needs_graph(&modes).then(|| match full.get() {
        Some(view) => view.drops.clone(),
        None => state.aggregator.drops().drops,
    });
    let graph = || full.get_or_init(|| state.aggregator.view());
    let cluster = resolver.cluster();
    let mode_view = Modes {
        modes: modes.clone(),
        default_mode: view.default_mode,
        ..Modes::default()
    };
    // Built once a tick, and only when a drop needs explaining.
    let set = std::cell::OnceCell::new();
    let explain = |edge: &EdgeKey| {
        let set = set.get_or_init(|| PolicySet::new(view.policies.clone()).ok());
        let set = set.as_ref()?;
        details::explain(
            set,
            &cluster,
            graph(),
            &mode_view,
            &edge.source,
            &edge.target,
            &[(edge.protocol, edge.port)],
        )
        .into_iter()
        .next()
    };
    // The namespace's own side of the edge denied it.
    let isolating = |namespace: &str, edge: &EdgeKey| -> Vec<String> {
        let Some(port) = explain(edge) else {
            return Vec::new();
        };
        let mut policies = Vec::new();
        if in_namespace(&edge.source, namespace) && port.egress.verdict == "denied" {
            policies.extend(port.egress.isolated_by.iter().cloned());
        }
        if in_namespace(&edge.target, namespace) && port.ingress.verdict == "denied" {
            policies.extend(port.ingress.isolated_by.iter().cloned());
        }
        policies
    };
    let ((opened, unguarded, trips), saved) = state.guard.update(|guard| {
        let (before, skip_next) = (guard.modes.clone(), guard.unguarded.clone());
        let opened = guard.follow_modes(
            &modes,
            full.get().map(|g| &g.graph),
            |ns| resolver.guard_settings(ns),
            now,
        );
        // Flips to enforce that opened no window, and why.
        let unguarded: Vec<(String, String)> = before
            .iter()
            .flat_map(|before| {
                modes.iter().filter(move |(ns, mode)| {
                    **mode == Mode::Enforce && before.get(*ns) != Some(&Mode::Enforce)
                })
            })
            .filter(|(ns, _)| !opened.contains(*ns))
            .filter_map(|(ns, _)| {
                let settings = resolver.guard_settings(ns);
                let why = crate::guard::unguarded_because(&settings, skip_next.contains(ns), now)?;
                Some((ns.clone(), why))
            })
            .collect();
        let trips = match &drops {
            Some(drops) => guard.check(drops, |ns, edge| !isolating(ns, edge).is_empty(), now),
            None => guard.check(&Default::default(), |_, _| false, now),
        };
        let opened: Vec<_> = opened
            .into_iter()
            .filter_map(|ns| guard.windows.get(&ns).map(|w| (ns, w.clone())))
            .collect();
        (opened, unguarded, trips)
    });
    if let Err(error) = saved {
        warn!(error = chain(&error), "cannot save the guard's state");
    }
    for (namespace, reason) in unguarded {
        info!(
            namespace,
            reason, "enforce without a guard window: {reason}"
        );
    }
    for (namespace, window) in opened {
        info!(
            namespace,
            until = crate::timestamp::rfc3339(window.until),
            max_drops = window.max_drops,
            learned_edges = window.learned.len(),
            "guard window opened: enforce falls back to audit if it drops learned traffic"
        );
    }
    trips
        .into_iter()
        .map(|trip| {
            let policies: BTreeSet<String> = trip
                .edges
                .iter()
                .flat_map(|e| isolating(&trip.namespace, e))
                .collect();
            (trip, policies.into_iter().collect())
        })
        .collect()
}

/// Add the guard's windows and reverts to `modes`.
pub fn describe(guard: &crate::guard::Guard, modes: &mut Modes) {
    use super::wire::{GuardWindowJson, RevertedJson};
    let rfc = crate::timestamp::rfc3339;
    modes.guarded = guard
        .windows
        .iter()
        .map(|(ns, w)| {
            (
                ns.clone(),
                GuardWindowJson {
                    since: rfc(w.started_at),
                    until: rfc(w.until),
                    max_drops: w.max_drops,
                    learned_edges: w.learned.len(),
                    dropped_edges: w.dropped.iter().map(edge_name).collect(),
                },
            )
        })
        .collect();
    modes.reverted = guard
        .reverted
        .iter()
        .map(|(ns, r)| {
            (
                ns.clone(),
                RevertedJson {
                    time: rfc(r.at),
                    message: format!("reverted to audit at {} because {}", rfc(r.at), r.reason),
                    reason: r.reason.clone(),
                    edges: r.edges.clone(),
                    policies: r.policies.clone(),
                },
            )
        })
        .collect();
}

fn in_namespace(node: &NodeId, namespace: &str) -> bool {
    matches!(node, NodeId::Workload(w) if w.namespace == namespace)
}

/// The sentence every report of a revert says.
#[must_use]
pub fn reason(trip: &Trip, policies: &[String]) -> String {
    let edges: Vec<String> = trip.edges.iter().map(edge_name).collect();
    let isolated = if policies.is_empty() {
        String::new()
    } else {
        format!(" (isolated by {})", policies.join(", "))
    };
    format!(
        "enforce dropped {} learned {} within the guard window: {}{isolated}",
        edges.len(),
        if edges.len() == 1 { "edge" } else { "edges" },
        edges.join(", "),
    )
}

/// Set `trip`'s namespace back to audit and report it; `false` when the
/// revert failed (it is tried again at the next check).
async fn revert(state: &AppState, trip: &Trip, policies: Vec<String>, now: u64) -> bool {
    let namespace = trip.namespace.as_str();
    let why = reason(trip, &policies);
    let message = format!(
        "reverted to audit at {} because {why}",
        crate::timestamp::rfc3339(now)
    );

    let done = set_mode(
        state,
        &ModeChange {
            namespace,
            mode: Mode::Audit,
            manager: GUARD,
            annotation: REVERTED_ANNOTATION,
            message: &message,
            event_reason: "GuardReverted",
            event_type: "Warning",
        },
        now,
    )
    .await;
    if let Err(error) = done {
        warn!(
            namespace,
            error, "the guard cannot revert the namespace to audit; retrying"
        );
        return false;
    }
    let edges: Vec<String> = trip.edges.iter().map(edge_name).collect();
    warn!(
        namespace,
        edges = ?edges,
        policies = ?policies,
        max_drops = trip.max_drops,
        "guard: {message}"
    );
    state.metrics.guard_revert(namespace);
    super::audit::record(
        state,
        NewEntry::new(GUARD, Kind::Revert, "enforce -> audit")
            .namespace(namespace)
            .details(json!({
                "reason": why,
                "edges": edges,
                "policies": policies,
                "max_drops": trip.max_drops,
            })),
    );
    let (_, saved) = state.guard.update(|guard| {
        guard.reverted(
            namespace,
            Reverted {
                at: now,
                reason: why,
                edges,
                policies,
            },
        );
    });
    if let Err(error) = saved {
        warn!(error = chain(&error), "cannot save the guard's state");
    }
    true
}

/// A mode change the agent makes by itself (the guard's revert, an
/// automatic promotion), and how it is recorded in a cluster.
#[derive(Clone, Copy, Debug)]
pub struct ModeChange<'a> {
    /// The namespace.
    pub namespace: &'a str,
    /// Its new mode.
    pub mode: Mode,
    /// The field manager of the patch and the Event's component.
    pub manager: &'static str,
    /// The annotation recording why.
    pub annotation: &'static str,
    /// Why, one sentence (the annotation's value and the Event's message).
    pub message: &'a str,
    /// The Event's reason.
    pub event_reason: &'static str,
    /// `Warning` or `Normal`.
    pub event_type: &'static str,
}

/// Set a namespace's mode where it lives: through the enforcer, or the
/// Namespace's label in a cluster ([`Reverter`]).
///
/// # Errors
/// Why the change was not made (it is tried again at the next check).
pub async fn set_mode(state: &AppState, change: &ModeChange<'_>, now: u64) -> Result<(), String> {
    match &state.guard_reverter {
        Reverter::Local => set_local(state, change.namespace, change.mode).await,
        Reverter::Kube(client) => set_kube(client.clone(), change, now).await,
    }
}

async fn set_local(state: &AppState, namespace: &str, mode: Mode) -> Result<(), String> {
    let Some(enforcer) = state.enforcer.as_ref() else {
        return Err("no enforcer".to_owned());
    };
    match enforcer
        .change(Change::SetMode {
            namespace: namespace.to_owned(),
            mode,
        })
        .await
    {
        Ok(_) => Ok(()),
        Err(ChangeError::Enforce(error @ EnforceError::Declared { .. })) => Err(format!(
            "{}: the agent has no Kubernetes client to change the label",
            chain(&error)
        )),
        Err(ChangeError::Enforce(error)) => Err(chain(&error)),
        Err(ChangeError::Gone) => Err("the enforcer stopped".to_owned()),
    }
}

/// The guard's revert in a cluster: [`set_kube`] of `audit` as
/// `weir-guard`, recorded in `weir.dev/guard-reverted`.
///
/// # Errors
/// The patch was refused.
pub async fn revert_kube(
    client: kube::Client,
    namespace: &str,
    message: &str,
    now: u64,
) -> Result<(), String> {
    set_kube(
        client,
        &ModeChange {
            namespace,
            mode: Mode::Audit,
            manager: GUARD,
            annotation: REVERTED_ANNOTATION,
            message,
            event_reason: "GuardReverted",
            event_type: "Warning",
        },
        now,
    )
    .await
}

/// The label patch (with the annotation saying why) and the Event, as
/// the change's field manager. The patch is what changes the mode; an
/// Event that cannot be written is logged, not retried.
///
/// # Errors
/// The patch was refused.
pub async fn set_kube(
    client: kube::Client,
    change: &ModeChange<'_>,
    now: u64,
) -> Result<(), String> {
    let ModeChange {
        namespace,
        mode,
        manager,
        annotation,
        message,
        event_reason,
        event_type,
    } = *change;
    let params = PatchParams {
        field_manager: Some(manager.to_owned()),
        ..PatchParams::default()
    };
    let mut patch = json!({"metadata": {
        "labels": {MODE_LABEL: mode.to_string()},
        "annotations": {annotation: message},
    }});
    if mode == Mode::Enforce {
        // A promotion's flip is guarded: a skip left by an earlier
        // `--no-guard` must not apply to it.
        patch["metadata"]["annotations"][SKIP_ANNOTATION] = serde_json::Value::Null;
    }
    Api::<Namespace>::all(client.clone())
        .patch(namespace, &params, &Patch::Merge(&patch))
        .await
        .map_err(|error| {
            format!(
                "cannot label namespace {namespace} {MODE_LABEL}={mode}: {}",
                chain(&error)
            )
        })?;
    let time = crate::timestamp::rfc3339(now);
    // Second precision: the Event's `lastTimestamp` is a metav1.Time.
    let seconds = format!("{}Z", time.get(..19).unwrap_or(&time));
    // In the namespace itself, where its users look (`kubectl get events
    // -n NS`). The API server takes an Event there only when its
    // involvedObject names that namespace too (one without would have to
    // be in `default`).
    let suffix = if manager == GUARD { "guard" } else { "promote" };
    let event: Event = match serde_json::from_value(json!({
        "metadata": {"generateName": format!("{namespace}.{suffix}-"), "namespace": namespace},
        "involvedObject": {
            "apiVersion": "v1", "kind": "Namespace", "name": namespace, "namespace": namespace,
        },
        "type": event_type,
        "reason": event_reason,
        "message": message,
        "source": {"component": manager},
        "reportingComponent": manager,
        "firstTimestamp": seconds,
        "lastTimestamp": seconds,
        "count": 1,
    })) {
        Ok(event) => event,
        Err(error) => return Err(format!("cannot build the Event: {error}")),
    };
    if let Err(error) = Api::<Event>::namespaced(client, namespace)
        .create(&PostParams::default(), &event)
        .await
    {
        warn!(
            namespace,
            error = chain(&error),
            "cannot record the Event of the mode change"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
