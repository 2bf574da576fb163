//! `GET /api/v1/contribution`: what a relay merging several nodes reads of
//! this one ([`ContributionJson`]): the learned graph, every edge by the
//! side(s) this node saw it from with the peer's node, and the store's
//! `epoch`.
//!
//! The answer's `ETag` is `"EPOCH-INSTANCE-VERSION-CLUSTER"`: the store's
//! identity, this run of the agent (the graph's version restarts with it),
//! the version, and a hash of the namespaces, pods and Services it lists
//! (their labels decide the suggestion as much as the graph). A client sending it back (`If-None-Match`, or `version=` for
//! one that cannot set headers) gets `304 Not Modified` while nothing
//! changed.

use axum::{
    Json,
    extract::{Query, State, rejection::QueryRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use weir_generator::model::{EdgeKey, NodeId};

use super::{
    AppState,
    error::ApiError,
    query,
    wire::{
        CONTRIBUTION_FORMAT, ContributedEdgeJson, ContributedPodJson, ContributedWorkloadJson,
        ContributionJson, EdgeEndJson, SeenFromJson, SideJson,
    },
};
use std::sync::Arc;

use crate::{
    aggregator::{Contribution, EdgeSide, SeenFrom},
    resolve::Resolver,
    timestamp::rfc3339,
};

/// The query of `/api/v1/contribution` as sent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawContributionQuery {
    /// The `ETag` of the answer the client holds, unquoted.
    version: Option<String>,
}

/// What an answer's `ETag` names: one graph of one store in one run, and
/// one view of the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    /// The store's identity.
    pub epoch: u64,
    /// This run of the agent.
    pub instance: u64,
    /// The graph's version.
    pub version: u64,
    /// [`Resolver::cluster_fingerprint`].
    pub cluster: u64,
}

impl std::fmt::Display for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:016x}-{:016x}-{}-{:016x}",
            self.epoch, self.instance, self.version, self.cluster
        )
    }
}

impl std::str::FromStr for Tag {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad =
            || format!("expected EPOCH-INSTANCE-VERSION-CLUSTER as the ETag gives it, got {s:?}");
        let mut parts = s.split('-');
        let (Some(epoch), Some(instance), Some(version), Some(cluster), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad());
        };
        let hex = |p: &str| {
            (p.len() == 16)
                .then(|| u64::from_str_radix(p, 16).ok())
                .flatten()
        };
        Ok(Self {
            epoch: hex(epoch).ok_or_else(bad)?,
            instance: hex(instance).ok_or_else(bad)?,
            version: version.parse().map_err(|_| bad())?,
            cluster: hex(cluster).ok_or_else(bad)?,
        })
    }
}

/// `GET /api/v1/contribution`.
///
/// # Errors
/// A bad query (400).
pub async fn contribution(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<RawContributionQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(raw) = query?;
    let held: Option<Tag> = query::optional("version", raw.version)?;
    let resolver = Arc::clone(
        &state
            .resolver
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let tag = |version| Tag {
        epoch: state.epoch,
        instance: state.instance,
        version,
        cluster: resolver.cluster_fingerprint(),
    };
    let current = tag(state.aggregator.changes());
    if held == Some(current) || none_match(&headers, &current) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag(&current))]).into_response());
    }
    let contribution = state.aggregator.contribution();
    let tag = tag(contribution.view.version);
    let json = to_json(
        &contribution,
        &resolver,
        &tag,
        &rfc3339(crate::graph_store::unix_now()),
    );
    Ok(([(header::ETAG, etag(&tag))], Json(json)).into_response())
}

/// The tag as an `ETag` header (a strong one: the body is the same bytes
/// but for `generated_at`).
fn etag(tag: &Tag) -> HeaderValue {
    // Hex digits, dashes and decimal digits: always a valid header value.
    HeaderValue::from_str(&format!("\"{tag}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}

/// Whether `If-None-Match` names `tag` (or is `*`).
fn none_match(headers: &HeaderMap, tag: &Tag) -> bool {
    let wanted = tag.to_string();
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| {
            t == "*" || {
                let t = t.strip_prefix("W/").unwrap_or(t);
                t.strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    .is_some_and(|t| t == wanted)
            }
        })
}

/// The wire form of `contribution`, with the namespaces, Services and the
/// pods this node answers for as `resolver` knows them.
#[must_use]
pub fn to_json(
    contribution: &Contribution,
    resolver: &Resolver,
    tag: &Tag,
    generated_at: &str,
) -> ContributionJson {
    let cluster = resolver.cluster();
    let node = &*contribution.node;
    let edges = |sides: &std::collections::BTreeMap<EdgeKey, Vec<EdgeSide>>| {
        sides
            .iter()
            .map(|(key, sides)| ContributedEdgeJson {
                source: end(&key.source),
                target: end(&key.target),
                protocol: key.protocol,
                port: key.port,
                sides: sides.iter().map(|s| side(node, s)).collect(),
            })
            .collect()
    };
    ContributionJson {
        format: CONTRIBUTION_FORMAT,
        node: node.to_owned(),
        epoch: format!("{:016x}", tag.epoch),
        instance: format!("{:016x}", tag.instance),
        version: tag.version,
        generated_at: generated_at.to_owned(),
        workloads: contribution
            .view
            .graph
            .workloads
            .iter()
            .map(|(workload, info)| ContributedWorkloadJson {
                workload: workload.clone(),
                labels: info.labels.clone(),
                pods: info.pods.iter().cloned().collect(),
            })
            .collect(),
        edges: edges(&contribution.sides),
        drops: edges(&contribution.drop_sides),
        namespaces: cluster.namespaces.clone(),
        pods: resolver
            .own_pods()
            .map(|p| ContributedPodJson {
                namespace: p.meta.namespace.clone(),
                name: p.meta.name.clone(),
                workload: p.meta.workload.clone(),
                labels: p.meta.labels.clone(),
                ips: p.meta.ips.clone(),
                ports: p.ports.clone(),
            })
            .collect(),
        services: cluster.services.clone(),
        external_names: contribution.view.graph.external_names.clone(),
    }
}

fn end(node: &NodeId) -> EdgeEndJson {
    match node {
        NodeId::Workload(w) => EdgeEndJson::Workload(w.clone()),
        NodeId::External(ip) => EdgeEndJson::External(*ip),
    }
}

fn side(node: &str, side: &EdgeSide) -> SideJson {
    let this = Some(node.to_owned());
    let peer = side.peer_node.as_deref().map(str::to_owned);
    let (seen_from, initiator_node, responder_node) = match side.seen_from {
        SeenFrom::Initiator => (SeenFromJson::Initiator, this, peer),
        SeenFrom::Responder => (SeenFromJson::Responder, peer, this),
        SeenFrom::Both => (SeenFromJson::Both, this.clone(), this),
        SeenFrom::Unknown => (SeenFromJson::Unknown, None, None),
    };
    let stats = &side.stats;
    SideJson {
        seen_from,
        initiator_node,
        responder_node,
        connections: stats.connections,
        packets: stats.packets,
        bytes: stats.bytes,
        first_seen_ns: stats.first_seen,
        last_seen_ns: stats.last_seen,
        verdicts: stats.verdicts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_reads_back_and_bad_ones_are_refused() {
        let tag = Tag {
            epoch: 0xff,
            instance: 1,
            version: 42,
            cluster: 0xab,
        };
        assert_eq!(
            tag.to_string(),
            "00000000000000ff-0000000000000001-42-00000000000000ab"
        );
        assert_eq!(tag.to_string().parse::<Tag>(), Ok(tag));
        for bad in [
            "",
            "42",
            "ff-1-42-ab",
            "00000000000000ff-0000000000000001-42",
            "00000000000000ff-0000000000000001-x-00000000000000ab",
            "00000000000000fg-0000000000000001-1-00000000000000ab",
            "a-b-c-d-e",
        ] {
            assert!(bad.parse::<Tag>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn if_none_match_takes_lists_weak_tags_and_a_star() {
        let tag = Tag {
            epoch: 1,
            instance: 2,
            version: 3,
            cluster: 4,
        };
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(value).unwrap());
            none_match(&headers, &tag)
        };
        let quoted = format!("\"{tag}\"");
        assert!(with(&quoted));
        assert!(with(&format!("\"other\", W/{quoted}")));
        assert!(with("*"));
        assert!(
            !with(&tag.to_string()),
            "an unquoted tag is not an entity tag"
        );
        assert!(!with(
            "\"0000000000000001-0000000000000002-4-0000000000000004\""
        ));
        assert!(!none_match(&HeaderMap::new(), &tag));
    }
}
