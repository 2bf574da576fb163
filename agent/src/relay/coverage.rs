//! How much of the cluster the relay's view covers (pure): from the agents
//! discovery knows and what the relay holds of each node.

use std::collections::{BTreeMap, BTreeSet};

use super::{discovery::AgentSet, hub::Held};
use crate::{
    api::wire::{CoverageJson, NodeCoverageJson, NodeState},
    timestamp::rfc3339,
};

/// The coverage of `held` against `agents`.
#[must_use]
pub fn coverage(agents: &AgentSet, held: &BTreeMap<String, Held>) -> CoverageJson {
    let names: BTreeSet<&String> = agents.agents.keys().chain(held.keys()).collect();
    let nodes: Vec<NodeCoverageJson> = names
        .into_iter()
        .map(|node| {
            let h = held.get(node);
            let contribution = h.and_then(|h| h.contribution.as_deref());
            NodeCoverageJson {
                node: node.clone(),
                state: state(agents.agents.contains_key(node), h),
                epoch: contribution.map(|c| c.epoch.clone()),
                version: contribution.map(|c| c.version),
                last_sync: h.and_then(|h| h.last_sync).map(rfc3339),
                error: h.and_then(|h| h.error.clone()),
            }
        })
        .collect();
    CoverageJson {
        expected: agents.expected(),
        synced: nodes
            .iter()
            .filter(|n| n.state == NodeState::Synced)
            .count(),
        stale: nodes
            .iter()
            .filter(|n| n.state == NodeState::Stale)
            .map(|n| n.node.clone())
            .collect(),
        nodes,
    }
}

fn state(discovered: bool, held: Option<&Held>) -> NodeState {
    let Some(held) = held else {
        return NodeState::Pending;
    };
    if !discovered {
        NodeState::Deleted
    } else if held.contribution.is_none() {
        NodeState::Pending
    } else if held.stale_since.is_some() {
        NodeState::Stale
    } else {
        NodeState::Synced
    }
}

/// Whether every expected agent is synced (and some are: before
/// discovery has listed anything, nothing is covered).
#[must_use]
pub fn complete(coverage: &CoverageJson) -> bool {
    coverage.expected > 0 && coverage.synced >= coverage.expected
}

/// What is missing for full coverage, for an error message: the nodes not
/// synced, and agents expected but not discovered.
#[must_use]
pub fn missing(coverage: &CoverageJson) -> String {
    let mut parts: Vec<String> = coverage
        .nodes
        .iter()
        .filter(|n| matches!(n.state, NodeState::Stale | NodeState::Pending))
        .map(|n| {
            let state = match n.state {
                NodeState::Stale => "stale",
                _ => "not read yet",
            };
            format!("{} ({state})", n.node)
        })
        .collect();
    let discovered = coverage
        .nodes
        .iter()
        .filter(|n| n.state != NodeState::Deleted)
        .count();
    if coverage.expected > discovered {
        parts.push(format!(
            "{} expected agent(s) not discovered",
            coverage.expected - discovered
        ));
    }
    parts.join(", ")
}

/// The `Weir-Coverage` header's value: `synced=1; expected=2; stale=b`
/// (`stale` left out when no node is).
#[must_use]
pub fn header(coverage: &CoverageJson) -> String {
    let mut value = format!("synced={}; expected={}", coverage.synced, coverage.expected);
    if !coverage.stale.is_empty() {
        value.push_str("; stale=");
        value.push_str(&coverage.stale.join(","));
    }
    value
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::relay::discovery::static_list;

    fn agents(nodes: &[&str]) -> AgentSet {
        let list: Vec<(String, String)> = nodes
            .iter()
            .map(|n| ((*n).to_owned(), format!("https://{n}:4244")))
            .collect();
        static_list(&list).borrow().clone()
    }

    fn held(synced: bool, stale: bool) -> Held {
        let contribution: crate::api::wire::ContributionJson = serde_json::from_value(
            serde_json::json!({"format": 1, "node": "x", "epoch": "00000000000000ab",
                "instance": "0000000000000001", "version": 3, "generated_at": "",
                "workloads": [], "edges": [], "drops": []}),
        )
        .expect("a contribution");
        Held {
            contribution: synced.then(|| Arc::new(contribution)),
            last_sync: synced.then_some(1_700_000_000_000_000_000),
            stale_since: stale.then_some(1_700_000_001_000_000_000),
            error: stale.then(|| "connection refused".to_owned()),
            ..Held::default()
        }
    }

    #[test]
    fn coverage_counts_synced_nodes_and_names_stale_and_deleted_ones() {
        let held = BTreeMap::from([
            ("a".to_owned(), held(true, false)),
            ("b".to_owned(), held(true, true)),
            ("gone".to_owned(), held(true, false)),
        ]);
        let c = coverage(&agents(&["a", "b", "c"]), &held);
        assert_eq!((c.expected, c.synced), (3, 1));
        assert_eq!(c.stale, ["b"]);
        let states: Vec<(&str, NodeState)> =
            c.nodes.iter().map(|n| (n.node.as_str(), n.state)).collect();
        assert_eq!(
            states,
            [
                ("a", NodeState::Synced),
                ("b", NodeState::Stale),
                ("c", NodeState::Pending),
                ("gone", NodeState::Deleted)
            ]
        );
        assert_eq!(c.nodes[1].error.as_deref(), Some("connection refused"));
        assert_eq!(c.nodes[0].epoch.as_deref(), Some("00000000000000ab"));
        assert!(!complete(&c));
        assert_eq!(missing(&c), "b (stale), c (not read yet)");
        assert_eq!(header(&c), "synced=1; expected=3; stale=b");
    }

    #[test]
    fn agents_expected_but_not_discovered_are_missing_too() {
        let mut set = agents(&["a"]);
        set.expected = Some(3);
        let held = BTreeMap::from([("a".to_owned(), held(true, false))]);
        let c = coverage(&set, &held);
        assert_eq!((c.expected, c.synced), (3, 1));
        assert_eq!(missing(&c), "2 expected agent(s) not discovered");
        set.expected = Some(1);
        let c = coverage(&set, &held);
        assert!(complete(&c));
        assert_eq!(header(&c), "synced=1; expected=1");
        // Discovery has listed nothing yet: nothing is covered.
        let c = coverage(&AgentSet::default(), &BTreeMap::new());
        assert!(!complete(&c));
    }
}
