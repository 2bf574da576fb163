//! Automatic promotion at work ([`crate::promote`] is the decision): once
//! a sweep, after the guard's check, gather what each namespace with
//! `weir.dev/promote: auto` looks like (its mode, its readiness, its last
//! would-drop from the pending queue, the guard's last revert), decide,
//! and make the steps. A step is a mode change made where the mode lives,
//! by the guard's own path ([`super::guard::set_mode`]: the enforcer, or
//! the Namespace's `weir.dev/mode` label with the `weir.dev/promoted`
//! annotation and an Event in a cluster), then an audit log entry
//! (`weir-promote`), a log line and `weir_promotions_total{namespace,to}`.
//! The guard watches a promotion to enforce as it watches `weir mode set`.
//!
//! Readiness is costly (the learner's suggestion over the whole graph): it
//! is computed only when a step is due, at most once a second.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use serde_json::json;
use tracing::{info, warn};
use weir_generator::{datapath::Mode, eval::PolicySet};

use super::{
    AppState,
    guard::{ModeChange, set_mode},
    learn::blocking,
    wire::{Modes, PromotedJson, PromotionJson},
};
use crate::{
    audit::{Kind, NewEntry},
    error_chain::chain,
    learn::analysis::StatusReport,
    pending::propose::{Inputs, last_denied},
    promote::{ACTOR, Decision, Observation, PromoteHandle, Promoted, Settings, decide},
    timestamp::rfc3339,
};

/// The annotation a promotion is recorded in (kube source).
pub const PROMOTED_ANNOTATION: &str = "weir.dev/promoted";
/// The shortest time between two readiness computations.
const READINESS_EVERY: Duration = Duration::from_secs(1);

/// Automatic promotion as the agent shares it: the saved clocks, the last
/// decisions (for `/api/modes`) and the last readiness computed.
#[derive(Debug, Default)]
pub struct Promoter {
    state: PromoteHandle,
    decided: Mutex<BTreeMap<String, (Settings, Decision)>>,
    readiness: Mutex<Option<(Instant, Arc<StatusReport>)>>,
}

impl Promoter {
    /// Keep the clocks in `state`.
    #[must_use]
    pub fn new(state: PromoteHandle) -> Self {
        Self {
            state,
            ..Self::default()
        }
    }

    /// Add each automatic namespace's next step to `modes`.
    pub fn describe(&self, modes: &mut Modes) {
        let promoted = self.state.snapshot().promoted;
        let decided = self.decided.lock().unwrap_or_else(PoisonError::into_inner);
        modes.promotion = decided
            .iter()
            .map(|(ns, (settings, decision))| {
                let last = promoted.get(ns).map(|p| PromotedJson {
                    from: p.from,
                    to: p.to,
                    time: rfc3339(p.at),
                });
                (ns.clone(), json_of(settings, decision, last))
            })
            .collect();
    }
}

fn json_of(settings: &Settings, decision: &Decision, last: Option<PromotedJson>) -> PromotionJson {
    let (next, at, waiting) = match decision {
        Decision::Wait { to, at, why } => (Some(*to), at.map(rfc3339), Some(why.clone())),
        Decision::Promote(to) => (Some(*to), None, None),
        Decision::Off | Decision::Done => (None, None, None),
    };
    let message = match (&next, &at, &waiting) {
        (Some(to), Some(at), _) => format!("automatic promotion: {to} at {at}"),
        (Some(to), None, Some(why)) => format!("automatic promotion: {to} once ready ({why})"),
        (Some(to), ..) => format!("automatic promotion: {to} now"),
        (None, ..) => "automatic promotion: enforced".to_owned(),
    };
    PromotionJson {
        next,
        at,
        waiting,
        after_seconds: settings.after.as_secs(),
        last,
        message,
    }
}

/// One check; returns the promotions made (namespace, new mode).
pub async fn tick(state: &AppState) -> Vec<(String, Mode)> {
    let Some(enforcer) = state.enforcer.as_ref() else {
        return Vec::new();
    };
    let view = enforcer.view();
    if !view.ready {
        return Vec::new();
    }
    let autos: BTreeMap<String, Settings> = state
        .resolver
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .promoted_namespaces()
        .clone();
    let promoter = &state.promote;
    if autos.is_empty() {
        promoter
            .decided
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        let (_, saved) = promoter.state.update(|p| p.clocks.clear());
        if let Err(error) = saved {
            warn!(
                error = chain(&error),
                "cannot save automatic promotion's state"
            );
        }
        return Vec::new();
    }
    let now = crate::graph_store::unix_now();
    let (modes, default_mode, enforced) =
        (view.modes.clone(), view.default_mode, view.policies.clone());
    drop(view);
    let reverted = state.guard.snapshot().reverted;
    let Some(would_drop) = last_would_drop(state, enforced, &autos).await else {
        return Vec::new();
    };
    let observe = |ns: &str| -> Observation<'static> {
        Observation {
            mode: modes.get(ns).copied().unwrap_or(default_mode),
            not_ready: None,
            last_would_drop: would_drop.get(ns).copied(),
            reverted_at: reverted.get(ns).map(|r| r.at),
        }
    };

    // First without readiness: only a step that is due needs it.
    let clocks = promoter.state.snapshot().clocks;
    let due = autos.iter().any(|(ns, settings)| {
        let (_, decision) = decide(clocks.get(ns).copied(), Some(*settings), &observe(ns), now);
        matches!(decision, Decision::Promote(_))
    });
    let report = if due { readiness(state).await } else { None };
    let reasons: BTreeMap<&str, Option<String>> = autos
        .keys()
        .map(|ns| {
            let why = match &report {
                Some(report) => crate::learn::analysis::why_not_ready(report, ns),
                None if due => Some("its readiness cannot be computed now".to_owned()),
                None => None,
            };
            (ns.as_str(), why)
        })
        .collect();

    let ((decisions, steps), saved) = promoter.state.update(|p| {
        p.clocks.retain(|ns, _| autos.contains_key(ns));
        p.promoted.retain(|ns, _| autos.contains_key(ns));
        let mut decisions = BTreeMap::new();
        let mut steps = Vec::new();
        for (ns, settings) in &autos {
            let seen = Observation {
                not_ready: reasons.get(ns.as_str()).and_then(|r| r.as_deref()),
                ..observe(ns)
            };
            let (clock, decision) = decide(p.clocks.get(ns).copied(), Some(*settings), &seen, now);
            if let Some(clock) = clock {
                p.clocks.insert(ns.clone(), clock);
            }
            if let Decision::Promote(to) = decision {
                steps.push((ns.clone(), seen.mode, to, p.clocks.get(ns).map(|c| c.since)));
            }
            decisions.insert(ns.clone(), (*settings, decision));
        }
        (decisions, steps)
    });
    if let Err(error) = saved {
        warn!(
            error = chain(&error),
            "cannot save automatic promotion's state"
        );
    }
    *promoter
        .decided
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = decisions;

    let mut made = Vec::new();
    for (namespace, from, to, since) in steps {
        if promote(state, &namespace, from, to, since, &autos[&namespace], now).await {
            made.push((namespace, to));
        }
    }
    made
}

/// The readiness report, computed at most once a [`READINESS_EVERY`].
async fn readiness(state: &AppState) -> Option<Arc<StatusReport>> {
    let cached = state
        .promote
        .readiness
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    if let Some((at, report)) = cached
        && at.elapsed() < READINESS_EVERY
    {
        return Some(report);
    }
    match super::learn::status_report(state).await {
        Ok(report) => {
            let report = Arc::new(report);
            *state
                .promote
                .readiness
                .lock()
                .unwrap_or_else(PoisonError::into_inner) =
                Some((Instant::now(), Arc::clone(&report)));
            Some(report)
        }
        Err(error) => {
            warn!(?error, "automatic promotion cannot judge readiness");
            None
        }
    }
}

/// The last would-drop of learned traffic of each namespace: the pending
/// queue's edges its side of the enforced set denies. `None` when it
/// cannot be judged: no step then.
async fn last_would_drop(
    state: &AppState,
    enforced: Vec<k8s_openapi::api::networking::v1::NetworkPolicy>,
    autos: &BTreeMap<String, Settings>,
) -> Option<BTreeMap<String, u64>> {
    state.pending.observe(&state.aggregator.denied());
    let queued = state.pending.snapshot();
    let reject_window = state.pending.reject_window;
    // Judging needs the whole graph (the workloads' pods): copied only
    // when an undecided entry touches a namespace promoted automatically,
    // not on every tick.
    let concerned = queued.seen.keys().any(|key| {
        queued.decided(key, reject_window).is_none()
            && crate::pending::namespaces_of(key)
                .iter()
                .any(|ns| autos.contains_key(*ns))
    });
    if !concerned {
        return Some(BTreeMap::new());
    }
    let view = state.aggregator.view();
    let cluster = state.cluster();
    let found = blocking(move || {
        let set = PolicySet::new(enforced).ok()?;
        Some(last_denied(
            &queued,
            &Inputs {
                enforced: &set,
                cluster: &cluster,
                graph: &view.graph,
                reject_window,
            },
        ))
    })
    .await;
    let found = found.ok().flatten();
    if found.is_none() {
        warn!("automatic promotion cannot judge the pending queue's would-drops");
    }
    found
}

/// Make one step and report it; `false` when the change failed (it is
/// tried again at the next check).
async fn promote(
    state: &AppState,
    namespace: &str,
    from: Mode,
    to: Mode,
    since: Option<u64>,
    settings: &Settings,
    now: u64,
) -> bool {
    let why = match to {
        Mode::Enforce => format!(
            "{} of audit with no would-drop of learned traffic since {}, and it is ready",
            humantime::format_duration(settings.after),
            since.map_or_else(|| "the start".to_owned(), rfc3339),
        ),
        _ => "it is ready (quiet for the quiet period, its traffic covered)".to_owned(),
    };
    let message = format!(
        "promoted from {from} to {to} at {} because {why}",
        rfc3339(now)
    );
    let done = set_mode(
        state,
        &ModeChange {
            namespace,
            mode: to,
            manager: ACTOR,
            annotation: PROMOTED_ANNOTATION,
            message: &message,
            event_reason: "Promoted",
            event_type: "Normal",
        },
        now,
    )
    .await;
    if let Err(error) = done {
        warn!(
            namespace,
            error, "automatic promotion cannot change the mode; retrying"
        );
        return false;
    }
    info!(namespace, %from, %to, "automatic promotion: {message}");
    state.metrics.promotion(namespace, to);
    super::audit::record(
        state,
        NewEntry::new(ACTOR, Kind::Promote, format!("{from} -> {to}"))
            .namespace(namespace)
            .details(json!({
                "from": from,
                "to": to,
                "reason": why,
                "guard": to == Mode::Enforce,
                "after_seconds": settings.after.as_secs(),
            })),
    );
    let seen = Observation {
        mode: to,
        ..Observation::default()
    };
    let (clock, next) = decide(None, Some(*settings), &seen, now);
    let (_, saved) = state.promote.state.update(|p| {
        p.promoted
            .insert(namespace.to_owned(), Promoted { from, to, at: now });
        if let Some(clock) = clock {
            p.clocks.insert(namespace.to_owned(), clock);
        }
    });
    // What /api/modes says until the next check.
    state
        .promote
        .decided
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(namespace.to_owned(), (*settings, next));
    if let Err(error) = saved {
        warn!(
            error = chain(&error),
            "cannot save automatic promotion's state"
        );
    }
    true
}
