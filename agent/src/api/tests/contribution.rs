//! `GET /api/v1/contribution`: the node's edges by side, its epoch, and
//! `304 Not Modified` while nothing changed.

use super::*;
use crate::api::wire::{ContributionJson, EdgeEndJson, SeenFromJson};

/// The shop of [`state`], with db on node-2 as the kube source says.
fn node_state() -> AppState {
    let (aggregator, metrics) = node_aggregator();
    let r = shop().on_node("10.0.1.9", "node-2");
    for o in [
        obs(1, "10.0.0.1:43210", "10.0.0.2:7070", Initiator::Local),
        obs(2, "10.0.0.2:7070", "10.0.0.1:43210", Initiator::Remote),
        obs(1, "10.0.0.1:43211", "10.0.1.9:5432", Initiator::Local),
        obs(2, "10.0.0.2:7070", "10.0.1.9:40000", Initiator::Remote),
        obs(1, "10.0.0.1:43212", "203.0.113.5:443", Initiator::Local),
    ] {
        aggregator.fold(&o, &r);
    }
    AppState::new(aggregator, metrics, shop_resolver(), "node-1").with_epoch(0xabc)
}

async fn fetch(state: AppState, req: Request<Body>) -> (StatusCode, Option<String>, String) {
    let resp = app(state).oneshot(req).await.unwrap();
    let status = resp.status();
    let etag = resp
        .headers()
        .get(header::ETAG)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, etag, String::from_utf8(body.to_vec()).unwrap())
}

fn request(uri: &str, if_none_match: Option<&str>) -> Request<Body> {
    let mut req = Request::get(uri);
    if let Some(tag) = if_none_match {
        req = req.header(header::IF_NONE_MATCH, tag);
    }
    req.body(Body::empty()).unwrap()
}

/// source, target, seen from, initiator's node, responder's node,
/// connections.
type Row<'a> = (
    EdgeEndJson,
    EdgeEndJson,
    SeenFromJson,
    Option<&'a str>,
    Option<&'a str>,
    u64,
);

fn workload(name: &str) -> EdgeEndJson {
    let ns = if name == "db" { "data" } else { "shop" };
    EdgeEndJson::Workload(weir_generator::model::WorkloadRef::new(
        ns,
        weir_generator::model::WorkloadKind::Deployment,
        name,
    ))
}

#[tokio::test]
async fn the_contribution_has_every_edge_by_side_with_both_nodes() {
    let state = node_state();
    let (status, etag, body) = fetch(state.clone(), request("/api/v1/contribution", None)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let c: ContributionJson = reads_back(&body);
    assert_eq!((c.format, c.node.as_str()), (1, "node-1"));
    assert_eq!(c.epoch, "0000000000000abc");
    assert_eq!(c.version, state.aggregator.changes());
    let prefix = format!("\"{}-{}-{}-", c.epoch, c.instance, c.version);
    assert!(
        etag.as_deref().is_some_and(|t| t.starts_with(&prefix)),
        "{etag:?}"
    );
    // The pods this node answers for: the shop's pods have no node.
    assert_eq!(c.pods.len(), 3);
    assert_eq!(c.pods[2].ports[0].port, 5432);
    assert_eq!(c.workloads.len(), 3);
    let sides: Vec<Row> = c
        .edges
        .iter()
        .flat_map(|e| {
            e.sides.iter().map(|s| {
                (
                    e.source.clone(),
                    e.target.clone(),
                    s.seen_from,
                    s.initiator_node.as_deref(),
                    s.responder_node.as_deref(),
                    s.connections,
                )
            })
        })
        .collect();
    let external = EdgeEndJson::External("203.0.113.5".parse().unwrap());
    assert_eq!(
        sides,
        [
            (
                workload("db"),
                workload("cart"),
                SeenFromJson::Responder,
                Some("node-2"),
                Some("node-1"),
                1
            ),
            (
                workload("frontend"),
                workload("db"),
                SeenFromJson::Initiator,
                Some("node-1"),
                Some("node-2"),
                1
            ),
            (
                workload("frontend"),
                workload("cart"),
                SeenFromJson::Both,
                Some("node-1"),
                Some("node-1"),
                1
            ),
            (
                workload("frontend"),
                external,
                SeenFromJson::Initiator,
                Some("node-1"),
                None,
                1
            ),
        ]
    );
    assert!(c.drops.is_empty());
}

#[tokio::test]
async fn an_unchanged_graph_is_304_and_a_change_is_200() {
    let state = node_state();
    let (_, etag, _) = fetch(state.clone(), request("/api/v1/contribution", None)).await;
    let etag = etag.unwrap();
    let (status, again, body) =
        fetch(state.clone(), request("/api/v1/contribution", Some(&etag))).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(again.as_deref(), Some(etag.as_str()));
    assert!(body.is_empty(), "{body}");
    let unquoted = etag.trim_matches('"');
    let (status, ..) = fetch(
        state.clone(),
        request(&format!("/api/v1/contribution?version={unquoted}"), None),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);

    // A new connection: a new version, the whole answer again.
    state.aggregator.fold(
        &obs(1, "10.0.0.1:43299", "10.0.1.9:5432", Initiator::Local),
        &shop(),
    );
    let (status, newer, body) =
        fetch(state.clone(), request("/api/v1/contribution", Some(&etag))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_ne!(newer, Some(etag));
    let c: ContributionJson = reads_back(&body);
    let to_db = c.edges.iter().find(|e| e.target == workload("db")).unwrap();
    assert_eq!(to_db.sides.iter().map(|s| s.connections).sum::<u64>(), 2);
}

#[tokio::test]
async fn a_changed_cluster_is_not_304_though_the_graph_is_the_same() {
    let state = node_state();
    let (_, etag, _) = fetch(state.clone(), request("/api/v1/contribution", None)).await;
    // The source read again, unchanged: a new resolver, the same tag.
    let same = Arc::clone(&shop_resolver().read().unwrap());
    *state.resolver.write().unwrap() = same;
    let (status, ..) = fetch(
        state.clone(),
        request("/api/v1/contribution", etag.as_deref()),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    // A namespace labelled: the suggestion may change, so must the tag.
    let inventory = crate::resolve::Inventory {
        namespaces: std::collections::BTreeMap::from([(
            "shop".to_owned(),
            std::collections::BTreeMap::from([("team".to_owned(), "a".to_owned())]),
        )]),
        ..crate::resolve::Inventory::default()
    };
    *state.resolver.write().unwrap() = Arc::new(Resolver::new(&inventory, |_| None));
    let (status, _, body) = fetch(
        state.clone(),
        request("/api/v1/contribution", etag.as_deref()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let c: ContributionJson = reads_back(&body);
    assert_eq!(c.namespaces["shop"]["team"], "a");
}

#[tokio::test]
async fn a_new_store_is_a_new_epoch_and_an_old_tag_is_not_304() {
    let dir = tempfile::tempdir().unwrap();
    let (store, loaded) = crate::graph_store::Store::open(dir.path(), 1).unwrap();
    drop(store);
    let first = node_state().with_epoch(loaded.epoch);
    let (_, etag, body) = fetch(first.clone(), request("/api/v1/contribution", None)).await;
    let c: ContributionJson = reads_back(&body);
    assert_eq!(c.epoch, format!("{:016x}", loaded.epoch));

    // The store wiped: same node, same graph and version, another epoch.
    std::fs::remove_file(dir.path().join(crate::graph_store::FILE_NAME)).unwrap();
    let (_store, wiped) = crate::graph_store::Store::open(dir.path(), 2).unwrap();
    assert_ne!(wiped.epoch, loaded.epoch);
    let mut second = first.with_epoch(wiped.epoch);
    let (status, _, body) = fetch(
        second.clone(),
        request("/api/v1/contribution", etag.as_deref()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let c2: ContributionJson = reads_back(&body);
    assert_eq!(c2.version, c.version);
    assert_ne!(c2.epoch, c.epoch);

    // Same store, same version, another run of the agent: not 304 either.
    second.epoch = loaded.epoch;
    second.instance ^= 1;
    let (status, ..) = fetch(second, request("/api/v1/contribution", etag.as_deref())).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_bad_version_is_400_naming_it() {
    let (status, json) = get_json(node_state(), "/api/v1/contribution?version=7").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let error = json["error"].as_str().unwrap_or_default();
    assert!(error.contains("version"), "{error}");
    let (status, _) = get_json(node_state(), "/api/v1/contribution?since=7").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
