use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use super::*;
use crate::{
    aggregator::testing::*,
    enforce::{
        Enforcer, NodeView, entries::FakeMaps, state_file::DesiredFile, task::EnforcerHandle,
    },
    flow::Initiator,
};

/// An app whose aggregator saw: frontend -> cart:7070 (reported by both
/// attached veths), frontend -> db:5432 twice, an external client -> cart
/// on UDP 53.
fn state() -> AppState {
    let (aggregator, metrics) = node_aggregator();
    let r = shop();
    let mut udp = obs(2, "10.0.0.2:53", "203.0.113.5:40000", Initiator::Remote);
    udp.protocol = weir_generator::model::Protocol::Udp;
    for o in [
        obs(1, "10.0.0.1:43210", "10.0.0.2:7070", Initiator::Local),
        obs(2, "10.0.0.2:7070", "10.0.0.1:43210", Initiator::Remote),
        obs(1, "10.0.0.1:43211", "10.0.1.9:5432", Initiator::Local),
        obs(1, "10.0.0.1:43212", "10.0.1.9:5432", Initiator::Local),
        udp,
    ] {
        aggregator.fold(&o, &r);
    }
    AppState::new(aggregator, metrics, shop_resolver(), "node-1")
        .with_token(auth::Token::new(TOKEN, "test").unwrap())
}

/// The test app's API token.
const TOKEN: &str = "t0ken";

/// The shop of [`state`] as the agent's source would describe it, ports
/// included: the learner and the evaluator read it.
fn shop_resolver() -> SharedResolver {
    shop_resolver_with(|_| {})
}

/// [`shop_resolver`] with `f` changing its inventory first.
fn shop_resolver_with(f: impl FnOnce(&mut crate::resolve::Inventory)) -> SharedResolver {
    use std::collections::BTreeMap;

    use weir_generator::{
        cluster::NamedPort,
        model::{PodMeta, Protocol, WorkloadKind, WorkloadRef},
    };

    use crate::resolve::{Inventory, LocalPod};
    let pod = |ns: &str, workload: &str, name: &str, ip: &str, port: u16| LocalPod {
        meta: PodMeta {
            namespace: ns.into(),
            name: name.into(),
            labels: BTreeMap::from([("app".to_owned(), workload.to_owned())]),
            workload: WorkloadRef::new(ns, WorkloadKind::Deployment, workload),
            ips: vec![ip.parse().unwrap()],
        },
        host_veth: None,
        ports: vec![NamedPort {
            name: None,
            port,
            protocol: Protocol::Tcp,
        }],
        local: false,
        node: None,
    };
    let mut inventory = Inventory {
        pods: vec![
            pod("shop", "frontend", "frontend-a", "10.0.0.1", 8080),
            pod("shop", "cart", "cart-a", "10.0.0.2", 7070),
            pod("data", "db", "db-0", "10.0.1.9", 5432),
        ],
        known_hosts: BTreeMap::from([("198.51.100.7".parse().unwrap(), "payments".to_owned())]),
        ..Inventory::default()
    };
    f(&mut inventory);
    Arc::new(RwLock::new(Arc::new(Resolver::new(&inventory, |_| None))))
}

async fn get(state: AppState, uri: &str) -> (StatusCode, String, String) {
    get_with(state, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn get_with(state: AppState, req: Request<Body>) -> (StatusCode, String, String) {
    let resp = app(state).oneshot(req).await.unwrap();
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

async fn get_json(state: AppState, uri: &str) -> (StatusCode, serde_json::Value) {
    let (status, _, body) = get(state, uri).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
    )
}

/// A client reads `body` with the server's type `T` and loses nothing:
/// written again, it is the same bytes.
fn reads_back<T>(body: &str) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let read: T = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(serde_json::to_string(&read).unwrap(), body);
    read
}

#[tokio::test]
async fn clients_read_the_graph_flows_and_details_with_the_servers_types() {
    /// `uri`'s answer, read by a client with the server's type.
    async fn read<T>(uri: &str) -> T
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let (status, _, body) = get(state(), uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        reads_back(&body)
    }
    let graph: wire::GraphJson = read("/api/graph").await;
    assert_eq!((graph.nodes.len(), graph.edges.len()), (4, 3));
    let flows: Vec<wire::FlowJson> = read("/api/flows").await;
    assert_eq!(flows.len(), 5);
    let edge: wire::EdgeDetails = read("/api/edge?source=shop/frontend&target=data/db").await;
    assert_eq!((edge.ports.len(), edge.policy.len()), (1, 1));
    let node: wire::NodeDetails = read("/api/node?id=shop/frontend").await;
    assert_eq!(node.edges_out.len(), 2);
}

#[tokio::test]
async fn graph_groups_ports_per_pair_with_stable_ids() {
    let (status, json) = get_json(state(), "/api/graph").await;
    assert_eq!(status, StatusCode::OK);
    let t = "2023-11-14T22:13:20.000000000Z";
    let t_last = "2023-11-14T22:13:20.500000000Z";
    let port = |port: u16, protocol: &str, connections: u64| {
        serde_json::json!({"port": port, "protocol": protocol, "connections": connections,
            "packets": 2 * connections, "bytes": 120 * connections,
            "first_seen": t, "last_seen": t_last,
            "verdicts": {"forwarded": connections, "audit": 0, "dropped": 0}})
    };
    assert!(json["version"].as_u64().unwrap() > 0, "{json}");
    assert!(json["generated_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        (&json["nodes"], &json["edges"]),
        (
            &serde_json::json!([
                {"id": "data/db", "kind": "workload", "group": "data", "name": "db",
                 "mode": "observe", "namespace": "data", "workload": "db",
                 "labels": {"app": "db"}, "pods": ["db-0"]},
                {"id": "shop/cart", "kind": "workload", "group": "shop", "name": "cart",
                 "mode": "observe", "namespace": "shop", "workload": "cart",
                 "labels": {"app": "cart"}, "pods": ["cart-a"]},
                {"id": "shop/frontend", "kind": "workload", "group": "shop", "name": "frontend",
                 "mode": "observe", "namespace": "shop", "workload": "frontend",
                 "labels": {"app": "frontend"}, "pods": ["frontend-a"]},
                {"id": "203.0.113.5", "kind": "external", "group": "external",
                 "name": "203.0.113.5", "mode": null, "namespace": null, "workload": null,
                 "labels": {}, "pods": []},
            ]),
            &serde_json::json!([
                {"id": "shop/frontend->data/db", "source": "shop/frontend", "target": "data/db",
                 "verdict": "forwarded", "ports": [port(5432, "TCP", 2)],
                 "packets": 4, "bytes": 240, "connections": 2, "first_seen": t, "last_seen": t_last},
                {"id": "shop/frontend->shop/cart", "source": "shop/frontend", "target": "shop/cart",
                 "verdict": "forwarded", "ports": [port(7070, "TCP", 1)],
                 "packets": 2, "bytes": 120, "connections": 1, "first_seen": t, "last_seen": t_last},
                {"id": "203.0.113.5->shop/cart", "source": "203.0.113.5", "target": "shop/cart",
                 "verdict": "forwarded", "ports": [port(53, "UDP", 1)],
                 "packets": 2, "bytes": 120, "connections": 1, "first_seen": t, "last_seen": t_last},
            ])
        )
    );
}

#[tokio::test]
async fn flows_filter_by_every_parameter() {
    let cases: &[(&str, usize)] = &[
        ("/api/flows", 5),
        ("/api/flows?last=2", 2),
        ("/api/flows?namespace=data", 2),
        ("/api/flows?pod=shop/cart-a", 3),
        ("/api/flows?port=5432", 2),
        ("/api/flows?protocol=udp", 1),
        ("/api/flows?protocol=UDP&namespace=data", 0),
    ];
    for (uri, expected) in cases {
        let (status, json) = get_json(state(), uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        let flows = json.as_array().unwrap_or_else(|| panic!("{uri}: {json}"));
        assert_eq!(flows.len(), *expected, "{uri}: {json:#}");
    }
    let (_, json) = get_json(state(), "/api/flows?last=1").await;
    assert_eq!(json[0]["l4"]["UDP"]["destination_port"], 53);
    assert_eq!(json[0]["traffic_direction"], "INGRESS");
}

#[tokio::test]
async fn flows_after_a_record_number_are_the_later_ones() {
    let state = state();
    let (_, all) = get_json(state.clone(), "/api/flows").await;
    let seqs: Vec<u64> = all
        .as_array()
        .expect("a list")
        .iter()
        .map(|f| {
            f["weir"]["seq"]
                .as_u64()
                .expect("every record has a number")
        })
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let (_, later) = get_json(state.clone(), &format!("/api/flows?after={}", seqs[2])).await;
    let later: Vec<u64> = later
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|f| f["weir"]["seq"].as_u64())
        .collect();
    assert_eq!(later, seqs[3..]);
    // An agent shows all it has, both sides or not.
    let (status, both) = get_json(state, "/api/flows?both_sides=true").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(both, all);
}

#[tokio::test]
async fn bad_parameters_are_400_json_naming_the_parameter() {
    for (uri, name) in [
        ("/api/flows?port=http", "port"),
        ("/api/flows?protocol=gre", "protocol"),
        ("/api/flows?pod=nopod", "pod"),
        ("/api/flows?last=many", "last"),
        ("/api/flows?follow=maybe", "follow"),
        ("/api/flows?after=latest", "after"),
        ("/api/flows?colour=red", "colour"),
    ] {
        let (status, json) = get_json(state(), uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        let error = json["error"].as_str().unwrap_or_default();
        assert!(error.contains(name), "{uri}: {error}");
    }
}

#[tokio::test]
async fn metrics_are_prometheus_text_or_openmetrics_on_request() {
    let (status, content_type, body) = get(state(), "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    for name in [
        "weir_flow_events_total",
        "weir_observations_total",
        "weir_ringbuf_lost_total",
        "weir_flow_table_entries",
        "weir_flow_table_capacity",
        "weir_channel_dropped_total",
        "weir_unresolved_total",
        "weir_graph_edges 3",
        "weir_attached_interfaces",
        "weir_attach_failures_total",
        "weir_aggregation_delay_seconds{quantile=\"0.999\"}",
        "weir_aggregation_delay_seconds_sum",
        "weir_aggregation_delay_seconds_count",
    ] {
        assert!(body.contains(name), "missing {name} in\n{body}");
    }
    let req = Request::get("/metrics")
        .header(
            header::ACCEPT,
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .body(Body::empty())
        .unwrap();
    let (_, content_type, body) = get_with(state(), req).await;
    assert!(content_type.starts_with("application/openmetrics-text"));
    assert!(body.ends_with("# EOF\n"));
}

#[tokio::test]
async fn healthz_index_and_unknown_paths() {
    let (status, json) = get_json(state(), "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["status"], "ok");
    assert_eq!(json["node_name"], "node-1");
    assert_eq!(json["graph_edges"], 3);

    let (status, content_type, body) = get(state(), "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/html"));
    assert!(body.contains("<html") && body.contains("weir"), "{body}");

    for uri in ["/nope", "/api/nope", "/secret.txt"] {
        let (status, json) = get_json(state(), uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert!(
            json["error"]
                .as_str()
                .unwrap_or_default()
                .contains(uri.trim_start_matches('/'))
        );
    }
}

#[tokio::test]
async fn follow_sends_the_backlog_then_live_records() {
    let state = state();
    let aggregator = Arc::clone(&state.aggregator);
    let resp = app(state)
        .oneshot(
            Request::get("/api/flows?follow=true&last=1&namespace=data")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers().get(header::CONTENT_TYPE).unwrap(),
        "application/x-ndjson"
    );
    // One live record that matches and one that does not, then the end.
    let r = shop();
    aggregator.fold(
        &obs(2, "10.0.0.2:1", "198.51.100.1:443", Initiator::Local),
        &r,
    );
    aggregator.fold(&obs(1, "10.0.0.1:9", "10.0.1.9:6432", Initiator::Local), &r);
    aggregator.close_followers();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let lines: Vec<serde_json::Value> = String::from_utf8(body.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ports: Vec<_> = lines
        .iter()
        .map(|l| l["l4"]["TCP"]["destination_port"].as_u64())
        .collect();
    assert_eq!(ports, [Some(5432), Some(6432)]);
}

async fn post(state: AppState, uri: &str, body: &str) -> (StatusCode, serde_json::Value) {
    let req = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/yaml")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let (status, _, body) = get_with(state, req).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
    )
}

#[tokio::test]
async fn policies_come_as_yaml_or_json() {
    let (status, content_type, yaml) = get(state(), "/api/policies").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/yaml");
    assert!(yaml.contains("kind: NetworkPolicy"), "{yaml}");
    assert!(yaml.contains("namespace: shop") && yaml.contains("namespace: data"));

    let (status, json) = get_json(state(), "/api/policies?format=json&namespace=data").await;
    assert_eq!(status, StatusCode::OK);
    let files: Vec<&String> = json["files"].as_object().unwrap().keys().collect();
    assert_eq!(files, ["data"]);
    assert!(
        json["kustomization"]
            .as_str()
            .unwrap()
            .contains("data.yaml")
    );
    let policies = json["policies"].as_array().unwrap();
    let names: Vec<(&str, &str, Option<&str>)> = policies
        .iter()
        .map(|p| {
            (
                p["namespace"].as_str().unwrap(),
                p["name"].as_str().unwrap(),
                p["workload"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("data", "weir-default-deny", None),
            ("data", "weir-db", Some("data/db"))
        ]
    );
    // The whole stream is the per-namespace file, as `weir export` writes.
    assert_eq!(json["yaml"], json["files"]["data"]);
    let (_, _, yaml_data) = get(state(), "/api/policies?namespace=data").await;
    assert_eq!(json["yaml"], yaml_data.as_str());
    for p in policies {
        let doc = p["yaml"].as_str().unwrap();
        assert!(yaml_data.contains(doc), "{doc}");
    }

    let (_, _, same) = get(state(), "/api/policies").await;
    assert_eq!(same, yaml, "deterministic");
}

#[tokio::test]
async fn policies_reject_bad_parameters() {
    for (uri, status, needle) in [
        (
            "/api/policies?format=xml",
            StatusCode::BAD_REQUEST,
            "format",
        ),
        (
            "/api/policies?aggregate_external=24",
            StatusCode::BAD_REQUEST,
            "aggregate_external",
        ),
        (
            "/api/policies?service_ports=all",
            StatusCode::BAD_REQUEST,
            "service_ports",
        ),
        ("/api/policies?nope=1", StatusCode::BAD_REQUEST, "nope"),
        (
            "/api/policies?namespace=",
            StatusCode::BAD_REQUEST,
            "namespace",
        ),
        (
            "/api/policies?namespace=elsewhere",
            StatusCode::NOT_FOUND,
            "elsewhere",
        ),
    ] {
        let (got, json) = get_json(state(), uri).await;
        assert_eq!(got, status, "{uri}: {json}");
        let message = json["error"].as_str().unwrap();
        assert!(message.contains(needle), "{uri}: {message}");
    }
}

#[tokio::test]
async fn verify_replays_the_graph_through_posted_policies() {
    let (_, _, suggestion) = get(state(), "/api/policies").await;
    let (status, report) = post(state(), "/api/verify", &suggestion).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["denied"], serde_json::json!([]));
    assert_eq!(report["observed"], 3);

    let deny = "kind: NetworkPolicy\nmetadata: {name: deny, namespace: data}\n\
        spec: {podSelector: {}, policyTypes: [Ingress]}\n";
    let (status, report) = post(state(), "/api/verify", deny).await;
    assert_eq!(status, StatusCode::OK);
    let denied = report["denied"].as_array().unwrap();
    assert_eq!(denied.len(), 1, "{report}");
    assert_eq!(denied[0]["target"], "data/db");
    assert_eq!(denied[0]["ingress"]["verdict"], "denied");
    assert_eq!(
        denied[0]["ingress"]["policies"],
        serde_json::json!(["data/deny"])
    );

    for (body, needle) in [
        ("kind: ConfigMap\nmetadata: {name: x}\n", "document 1"),
        ("", "no NetworkPolicy"),
        (
            "kind: NetworkPolicy\nmetadata: {name: x}\nspec: {podSelector: {matchExpressions: [{key: a, operator: Maybe}]}}\n",
            "x",
        ),
    ] {
        let (status, json) = post(state(), "/api/verify", body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {json}");
        let message = json["error"].as_str().unwrap();
        assert!(message.contains(needle), "{message}");
    }
}

#[tokio::test]
async fn status_shows_readiness_per_namespace() {
    let (status, json) = get_json(state(), "/api/status").await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let namespaces: Vec<&str> = json["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, ["data", "shop"]);
    assert_eq!(json["quiet_period_seconds"], 600);
    // The test edges are from 2023: long quiet, and nothing recent to cover.
    assert_eq!(json["namespaces"][1]["ready"], true, "{json}");
}

/// `method uri` with `body`, as JSON, with the token: the status and the
/// body as text.
async fn send(app: &Router, method: &str, uri: &str, body: &str) -> (StatusCode, String) {
    let response = app
        .clone()
        .oneshot(
            Request::builder()
                .method(method)
                .uri(uri)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .body(Body::from(body.to_owned()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// A running enforcer over fake maps, with the shop as its node view; the
/// channels are kept so the task lives as long as the test.
struct WithEnforcer {
    app: Router,
    state: AppState,
    _keep: (
        tempfile::TempDir,
        tokio::sync::watch::Sender<Option<Arc<NodeView>>>,
        tokio::sync::watch::Sender<bool>,
    ),
}

fn with_enforcer(state: AppState) -> WithEnforcer {
    let dir = tempfile::tempdir().unwrap();
    let enforcer = Enforcer::new(
        FakeMaps::default(),
        DesiredFile::in_dir(dir.path()),
        weir_generator::datapath::Mode::Observe,
        &std::collections::BTreeMap::new(),
    )
    .unwrap();
    let (node_tx, node_rx) = tokio::sync::watch::channel(None);
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let (handle, _task): (EnforcerHandle, _) =
        crate::enforce::task::spawn(enforcer, node_rx, shutdown_rx, Arc::new(Metrics::new()));
    let cluster = shop_resolver().read().unwrap().cluster();
    node_tx
        .send(Some(Arc::new(NodeView {
            cluster,
            ..NodeView::default()
        })))
        .unwrap();
    let state = state.with_enforcer(handle);
    WithEnforcer {
        app: app(state.clone()),
        state,
        _keep: (dir, node_tx, shutdown_tx),
    }
}

/// frontend -> db:5432 now, judged by db's ingress with `verdict`
/// (dropped under enforce, let through under audit).
fn denied_to_db(t: &WithEnforcer, port: u16, verdict: crate::flow::Verdict) {
    let now = crate::graph_store::unix_now();
    let mut o = obs(
        1,
        &format!("10.0.0.1:{port}"),
        "10.0.1.9:5432",
        Initiator::Local,
    );
    o.first_seen = now;
    o.last_seen = now;
    o.kernel_time = now;
    o.verdict = verdict;
    o.reason = crate::flow::DenyReason::PeerNotAllowed;
    o.direction = Some(crate::flow::CheckedDirection::Ingress);
    t.state.aggregator.fold(&o, &shop());
}

impl WithEnforcer {
    /// The enforcer's state directory.
    fn state_dir(&self) -> &std::path::Path {
        self._keep.0.path()
    }

    async fn send(&self, method: &str, uri: &str, body: &str) -> (StatusCode, serde_json::Value) {
        let (status, text) = send(&self.app, method, uri, body).await;
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    async fn get(&self, uri: &str) -> serde_json::Value {
        let (status, json) = get_json(self.state.clone(), uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {json}");
        json
    }
}

mod guard;
mod promote;

mod enforce {
    use super::*;

    const DENY: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
        metadata: {name: deny, namespace: shop}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n";

    #[tokio::test]
    async fn without_an_enforcer_the_endpoints_say_so() {
        let app = app(state());
        let (status, body) = send(&app, "GET", "/api/policies/enforced", "").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("enforcement is not available"), "{body}");
    }

    /// The JSON of every enforcer endpoint, byte for byte (the CLI, the UI
    /// and the privileged tests read it).
    #[tokio::test(flavor = "multi_thread")]
    async fn enforcer_answers_keep_their_bytes() {
        let t = with_enforcer(state());
        let app = t.app.clone();
        let mut bodies = Vec::new();
        for (method, uri, body) in [
            ("POST", "/api/policies/enforced?replace=data", DENY),
            ("PUT", "/api/modes/shop", r#"{"mode": "enforce"}"#),
            ("GET", "/api/modes", ""),
            ("GET", "/api/policies/enforced", ""),
            ("DELETE", "/api/policies/enforced/shop/deny", ""),
        ] {
            let (status, answer) = send(&app, method, uri, body).await;
            assert_eq!(status, StatusCode::OK, "{method} {uri}: {answer}");
            bodies.push(answer);
        }
        let entries =
            r#"{"CIDRS":0,"ENDPOINTS":0,"IDENTITIES":3,"PEERS":0,"POLICY":0,"POLICY_EXACT":0}"#;
        let max = usize::MAX;
        let limits = format!(
            r#"{{"CIDRS":{max},"ENDPOINTS":{max},"IDENTITIES":{max},"PEERS":{max},"POLICY":{max},"POLICY_EXACT":{max}}}"#
        );
        let modes = r#"{"modes":{"shop":"enforce"},"default_mode":"observe"}"#;
        let policy = r#"{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"deny","namespace":"shop"},"spec":{"podSelector":{},"policyTypes":["Ingress"]}}"#;
        assert_eq!(
            bodies,
            [
                format!(
                    r#"{{"applied":["shop/deny"],"replaced_namespaces":["data"],"writes":0,"entries":{entries}}}"#
                ),
                modes.to_owned(),
                modes.to_owned(),
                format!(
                    r#"{{"policies":[{policy}],"modes":{{"shop":"enforce"}},"default_mode":"observe","entries":{entries},"limits":{limits},"ready":true}}"#
                ),
                format!(r#"{{"deleted":"shop/deny","entries":{entries},"writes":0}}"#),
            ]
        );
        // The CLI reads each with the server's type.
        let applied: wire::Applied = reads_back(&bodies[0]);
        assert_eq!(applied.applied, ["shop/deny"]);
        for modes in &bodies[1..3] {
            let modes: wire::Modes = reads_back(modes);
            assert_eq!(modes.of("shop"), weir_generator::datapath::Mode::Enforce);
        }
        let enforced: wire::Enforced = reads_back(&bodies[3]);
        assert_eq!(enforced.policies.len(), 1);
        assert_eq!(enforced.entries["IDENTITIES"], 3);
        let deleted: wire::Deleted = reads_back(&bodies[4]);
        assert_eq!(deleted.deleted, "shop/deny");
    }

    /// A mode change is an audit log entry naming who asked (the
    /// client's `X-Weir-Actor`), from what to what; a refused one is not.
    #[tokio::test(flavor = "multi_thread")]
    async fn mode_changes_are_audit_log_entries() {
        let t = with_enforcer(state());
        let put = |actor: Option<&str>, body: &str| {
            let mut request = Request::builder()
                .method("PUT")
                .uri("/api/modes/shop")
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
            if let Some(actor) = actor {
                request = request.header(wire::ACTOR_HEADER, actor);
            }
            t.app
                .clone()
                .oneshot(request.body(Body::from(body.to_owned())).unwrap())
        };
        assert_eq!(
            put(Some("alice"), r#"{"mode": "audit"}"#)
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
        assert_eq!(
            put(None, r#"{"mode": "enforce"}"#).await.unwrap().status(),
            StatusCode::OK
        );
        assert_eq!(
            put(Some("mallory"), r#"{"mode": "block"}"#)
                .await
                .unwrap()
                .status(),
            StatusCode::BAD_REQUEST
        );
        let audit = t.get("/api/audit?namespace=shop").await;
        let entries = audit["entries"].as_array().unwrap();
        let got: Vec<(&str, &str, &str)> = entries
            .iter()
            .map(|e| {
                (
                    e["who"].as_str().unwrap(),
                    e["kind"].as_str().unwrap(),
                    e["what"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("alice", "mode-change", "observe -> audit"),
                ("api", "mode-change", "audit -> enforce"),
            ]
        );
        assert_eq!(entries[1]["seq"], 2);
        assert_eq!(entries[1]["namespace"], "shop");
        let json: wire::Audit = serde_json::from_value(audit.clone()).unwrap();
        assert_eq!(json.entries.len(), 2);
        assert_eq!(
            t.get("/api/audit?namespace=blog").await["entries"],
            serde_json::json!([])
        );
        assert_eq!(
            t.get("/api/audit?kind=mode-change&limit=1").await["entries"][0]["seq"],
            2
        );
        let (status, body) = t.send("GET", "/api/audit?kind=nope", "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["error"].as_str().unwrap().contains("kind"), "{body}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn policies_and_modes_round_trip() {
        let t = with_enforcer(state());
        let app = t.app.clone();

        let (status, body) = send(&app, "POST", "/api/policies/enforced", DENY).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("shop/deny"), "{body}");
        let bad = DENY.replace(
            "podSelector: {}",
            "podSelector: {matchExpressions: [{key: a, operator: Nope}]}",
        );
        let (status, body) = send(&app, "POST", "/api/policies/enforced", &bad).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(
            body.contains("request body") && body.contains("shop/deny"),
            "{body}"
        );

        let (status, body) = send(&app, "PUT", "/api/modes/shop", r#"{"mode": "enforce"}"#).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = send(&app, "PUT", "/api/modes/shop", r#"{"mode": "block"}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let (_, body) = send(&app, "GET", "/api/modes", "").await;
        let modes: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(modes["modes"]["shop"], "enforce");
        assert_eq!(modes["default_mode"], "observe");

        let (_, body) = send(&app, "GET", "/api/policies/enforced?format=yaml", "").await;
        assert!(body.contains("name: deny"), "{body}");
        let (status, _) = send(&app, "DELETE", "/api/policies/enforced/shop/deny", "").await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = send(&app, "DELETE", "/api/policies/enforced/shop/deny", "").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

        // Names a cluster could not hold are refused before anything is
        // stored (they used to land in enforce.json, out of reach).
        let long = format!("/api/modes/{}", "x".repeat(300));
        for uri in [
            "/api/modes/..",
            "/api/modes/..%2F..%2Fetc",
            "/api/modes/a%00b",
            "/api/modes/a%20b",
            "/api/modes/Shop",
            long.as_str(),
        ] {
            let (status, body) = send(&app, "PUT", uri, r#"{"mode": "enforce"}"#).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
            assert!(
                body.contains("bad path segment `namespace`"),
                "{uri}: {body}"
            );
        }
        for uri in [
            "/api/policies/enforced/a%20b/deny",
            "/api/policies/enforced/shop/x%23frag",
            "/api/policies/enforced/shop/..",
        ] {
            let (status, body) = send(&app, "DELETE", uri, "").await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        }
        let (status, body) =
            send(&app, "POST", "/api/policies/enforced?replace=shop,..", DENY).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            body.contains("`replace`") && body.contains("DNS-1123"),
            "{body}"
        );
        let typo = DENY.replace("podSelector: {}", "podSelector: {}, ingres: []");
        let (status, body) = send(&app, "POST", "/api/policies/enforced", &typo).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(
            body.contains("request body: document 1: NetworkPolicy: spec.ingres: unknown field"),
            "{body}"
        );
        let (_, body) = send(&app, "GET", "/api/modes", "").await;
        let modes: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(modes["modes"].as_object().unwrap().len(), 1, "{body}");
        let (_, body) = send(&app, "GET", "/api/policies/enforced?format=yaml", "").await;
        assert!(!body.contains("ingres"), "{body}");
    }
}

mod contribution;
mod log;
mod pending;
mod relay;
mod security;
mod server;
mod ui;
