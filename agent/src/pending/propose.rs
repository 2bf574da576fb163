//! Which queued edges the enforced policies still deny, why, and the
//! smallest rule that would allow each: pure, from the queue's state, the
//! enforced set, the cluster and the learned graph.
//!
//! The rule is the learner's: a graph of that one edge goes through
//! [`synth::synthesize`], and of its output only the policy of the side
//! that denies is kept (egress at the source, ingress at the target), with
//! only that direction in `policyTypes`. Such a policy adds to what is
//! allowed and never isolates anything that was not isolated already (the
//! side is isolated: that is why it denies), so approving it cannot cut
//! other traffic. It is its own object, named after the edge, so that an
//! approval is one new policy per denying side, easy to review and to
//! revert, and never rewrites a policy someone else wrote.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use weir_generator::{
    cluster::{Cluster, ClusterPod},
    eval::{Direction, DirectionVerdict, Endpoint, Evaluator, Flow, PolicySet},
    model::{EdgeKey, FlowGraph, NodeId, WorkloadRef},
    synth::{self, WORKLOAD_ANNOTATION},
};

use super::{QueueState, Seen, edge_id};
use crate::learn::{SuggestOptions, analysis::representatives};

/// Annotation on a proposed policy naming the edge it allows.
pub const EDGE_ANNOTATION: &str = "weir.dev/pending-edge";

/// One side that denies a queued edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// `Egress` at the source, `Ingress` at the target.
    pub direction: Direction,
    /// The namespace of that side.
    pub namespace: String,
    /// The evaluator's reason code.
    pub reason: String,
    /// The policies that isolate that side (`namespace/name`).
    pub isolated_by: Vec<String>,
}

/// A queued edge the enforced policies deny.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The edge.
    pub key: EdgeKey,
    /// [`edge_id`] of the key.
    pub id: String,
    /// What the queue counted.
    pub seen: Seen,
    /// The denying sides (one or two).
    pub denied: Vec<Denial>,
    /// The policies that would allow it, or why there are none.
    pub proposal: Result<Vec<NetworkPolicy>, NoRule>,
}

/// Why an edge has no proposal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoRule {
    /// ICMP cannot be named by a NetworkPolicy rule without every port.
    #[error("{protocol} cannot be allowed by a NetworkPolicy without allowing every port")]
    Inexpressible {
        /// The protocol.
        protocol: String,
    },
    /// The learner wrote no policy for that side (its workload is unknown
    /// to the cluster now).
    #[error("no rule for the {direction} of {workload}: the cluster no longer knows it")]
    Unknown {
        /// `egress` or `ingress`.
        direction: Direction,
        /// The workload.
        workload: String,
    },
}

/// What the judgement needs, built once per listing.
pub struct Inputs<'a> {
    /// The enforced policies.
    pub enforced: &'a PolicySet,
    /// Pods, namespaces, Services.
    pub cluster: &'a Cluster,
    /// The learned graph (workload labels and pods).
    pub graph: &'a FlowGraph,
    /// How long a rejection holds.
    pub reject_window: Duration,
}

/// Every queued edge that is denied now and not kept out by a decision,
/// most recent first. Edges whose workloads have no pod any more cannot be
/// judged and are left out.
#[must_use]
pub fn list(state: &QueueState, inputs: &Inputs<'_>) -> Vec<Entry> {
    let evaluator = Evaluator::new(inputs.enforced, inputs.cluster);
    let reps = representatives(inputs.graph, inputs.cluster);
    let mut entries: Vec<Entry> = state
        .seen
        .iter()
        .filter(|(key, _)| state.decided(key, inputs.reject_window).is_none())
        .filter_map(|(key, seen)| {
            let denied = denials(&evaluator, &reps, key)?;
            (!denied.is_empty()).then(|| Entry {
                key: key.clone(),
                id: edge_id(key),
                seen: *seen,
                proposal: proposal(key, &denied, inputs),
                denied,
            })
        })
        .collect();
    entries.sort_by(|a, b| {
        b.seen
            .last_seen
            .cmp(&a.seen.last_seen)
            .then_with(|| a.key.cmp(&b.key))
    });
    entries
}

/// The last would-drop of each namespace: the latest last packet of the
/// queued edges the enforced set denies at that namespace's side (what
/// [`list`] lists, without the proposals), decided ones left out.
#[must_use]
pub fn last_denied(state: &QueueState, inputs: &Inputs<'_>) -> BTreeMap<String, u64> {
    let evaluator = Evaluator::new(inputs.enforced, inputs.cluster);
    let reps = representatives(inputs.graph, inputs.cluster);
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for (key, seen) in &state.seen {
        if state.decided(key, inputs.reject_window).is_some() {
            continue;
        }
        for denial in denials(&evaluator, &reps, key).unwrap_or_default() {
            let t = last.entry(denial.namespace).or_default();
            *t = (*t).max(seen.last_seen);
        }
    }
    last
}

/// The sides of `key` the enforced set denies; `None` when an end is a
/// workload without a pod (nothing to judge).
fn denials(
    evaluator: &Evaluator<'_>,
    reps: &BTreeMap<WorkloadRef, ClusterPod>,
    key: &EdgeKey,
) -> Option<Vec<Denial>> {
    let endpoint = |node: &NodeId| match node {
        NodeId::Workload(w) => reps.get(w).map(Endpoint::Pod),
        NodeId::External(ip) => Some(Endpoint::External(*ip)),
    };
    let (source, destination) = (endpoint(&key.source)?, endpoint(&key.target)?);
    let verdict = evaluator.evaluate(&Flow {
        source,
        destination,
        protocol: key.protocol,
        port: key.port,
    });
    let sides = [
        (Direction::Egress, &verdict.egress, &key.source),
        (Direction::Ingress, &verdict.ingress, &key.target),
    ];
    Some(
        sides
            .into_iter()
            .filter_map(|(direction, v, node)| match (v, node) {
                (
                    DirectionVerdict::Denied {
                        isolated_by,
                        reason,
                    },
                    NodeId::Workload(w),
                ) => Some(Denial {
                    direction,
                    namespace: w.namespace.clone(),
                    reason: reason.as_str().to_owned(),
                    isolated_by: isolated_by.iter().map(ToString::to_string).collect(),
                }),
                _ => None,
            })
            .collect(),
    )
}

/// The name of the policy allowing `key` at `direction`'s side: readable,
/// unique per edge and side, a valid object name.
#[must_use]
pub fn policy_name(key: &EdgeKey, direction: Direction) -> String {
    let node = |n: &NodeId| match n {
        NodeId::Workload(w) => w.name.clone(),
        NodeId::External(ip) => ip.to_string().replace(':', "-"),
    };
    let side = match direction {
        Direction::Egress => "out",
        Direction::Ingress => "in",
    };
    let mut name = format!(
        "weir-allow-{side}-{}-to-{}-{}-{}",
        node(&key.source),
        node(&key.target),
        key.port,
        key.protocol.as_str().to_ascii_lowercase()
    );
    name.truncate(253);
    name.trim_end_matches(['-', '.']).to_owned()
}

/// The policies allowing `key` at its denying sides.
fn proposal(
    key: &EdgeKey,
    denied: &[Denial],
    inputs: &Inputs<'_>,
) -> Result<Vec<NetworkPolicy>, NoRule> {
    if !key.protocol.has_ports() {
        return Err(NoRule::Inexpressible {
            protocol: key.protocol.to_string(),
        });
    }
    let mut graph = FlowGraph::default();
    for node in [&key.source, &key.target] {
        if let NodeId::Workload(w) = node {
            let info = inputs.graph.workloads.get(w).cloned().unwrap_or_default();
            graph.workloads.insert(w.clone(), info);
        }
    }
    let stats = inputs
        .graph
        .edges
        .get(key)
        .copied()
        .unwrap_or(weir_generator::model::EdgeStats {
            connections: 1,
            ..Default::default()
        });
    graph.edges.insert(key.clone(), stats);
    let options = SuggestOptions {
        namespaces: denied.iter().map(|d| d.namespace.clone()).collect(),
        ..SuggestOptions::default()
    };
    let suggestion = synth::synthesize(&graph, inputs.cluster, &options.synth());
    denied
        .iter()
        .map(|d| {
            let workload = match d.direction {
                Direction::Egress => &key.source,
                Direction::Ingress => &key.target,
            };
            let NodeId::Workload(w) = workload else {
                unreachable!("only a workload's side denies")
            };
            let unknown = || NoRule::Unknown {
                direction: d.direction,
                workload: w.to_string(),
            };
            let annotation = format!("{} {w}", w.kind);
            let mut policy = suggestion
                .namespaces
                .get(&w.namespace)
                .into_iter()
                .flatten()
                .find(|p| {
                    p.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(WORKLOAD_ANNOTATION))
                        == Some(&annotation)
                })
                .cloned()
                .ok_or_else(unknown)?;
            let spec = policy.spec.as_mut().ok_or_else(unknown)?;
            match d.direction {
                Direction::Egress => {
                    spec.ingress = None;
                    spec.policy_types = Some(vec!["Egress".to_owned()]);
                }
                Direction::Ingress => {
                    spec.egress = None;
                    spec.policy_types = Some(vec!["Ingress".to_owned()]);
                }
            }
            policy.metadata.name = Some(policy_name(key, d.direction));
            policy
                .metadata
                .annotations
                .get_or_insert_default()
                .insert(EDGE_ANNOTATION.to_owned(), edge_id(key));
            Ok(policy)
        })
        .collect()
}
