//! The endpoints the web UI reads: graph filters and verdicts, edge and
//! node details with the enforced policies' explanation, events, the
//! policy diff, verify of the suggestion and the impact of a mode.

use std::time::Duration;

use super::*;
use crate::flow::Verdict;

/// [`state`] plus: an audited frontend -> db connection, the cart's own
/// (audited) report of the frontend -> cart connection, and a dropped
/// frontend -> 198.51.100.7:443.
fn ui_state() -> AppState {
    let state = state();
    let r = shop();
    let mut audited = obs(1, "10.0.0.1:43213", "10.0.1.9:5432", Initiator::Local);
    audited.verdict = Verdict::Audit;
    let mut ingress_audit = obs(2, "10.0.0.2:7070", "10.0.0.1:43210", Initiator::Remote);
    ingress_audit.verdict = Verdict::Audit;
    let mut dropped = obs(1, "10.0.0.1:43300", "198.51.100.7:443", Initiator::Local);
    dropped.verdict = Verdict::Dropped;
    for o in [audited, ingress_audit, dropped] {
        state.aggregator.fold(&o, &r);
    }
    state
}

fn edge_ids(json: &serde_json::Value) -> Vec<&str> {
    json["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{json}"))
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect()
}

fn node_ids(json: &serde_json::Value) -> Vec<&str> {
    json["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect()
}

const DB: &str = "shop/frontend->data/db";
const CART: &str = "shop/frontend->shop/cart";
const DNS: &str = "203.0.113.5->shop/cart";
const DROPPED: &str = "shop/frontend->198.51.100.7";

#[tokio::test]
async fn external_nodes_carry_the_names_the_source_knows() {
    let (status, _, body) = get(ui_state(), "/api/graph").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let name_of = |id: &str| {
        json["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .unwrap_or_else(|| panic!("no node {id} in {json}"))["name"]
            .clone()
    };
    assert_eq!(name_of("198.51.100.7"), "payments", "a named host");
    assert_eq!(name_of("203.0.113.5"), "203.0.113.5", "an unnamed address");
}

#[tokio::test]
async fn graph_filters_select_ports_of_edges() {
    let cases: &[(&str, &[&str])] = &[
        ("", &[DB, CART, DROPPED, DNS]),
        ("?namespace=data", &[DB]),
        ("?namespace=data,shop", &[DB, CART, DROPPED, DNS]),
        ("?protocol=udp", &[DNS]),
        ("?protocol=ICMP", &[]),
        ("?port=7070", &[CART]),
        ("?port=7070&protocol=UDP", &[]),
        ("?verdict=audit", &[DB, CART]),
        ("?verdict=DROPPED", &[DROPPED]),
        ("?verdict=forwarded", &[DB, CART, DNS]),
        ("?namespace=data&verdict=forwarded", &[DB]),
        // The test flows are from 2023.
        ("?since=15m", &[]),
        ("?since=2023-11-14T22:13:20Z", &[DB, CART, DROPPED, DNS]),
        ("?since=2023-11-14T22:13:21Z", &[]),
    ];
    for (query, expected) in cases {
        let uri = format!("/api/graph{query}");
        let (status, json) = get_json(ui_state(), &uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {json}");
        assert_eq!(edge_ids(&json), *expected, "{uri}");
    }
    let (_, json) = get_json(ui_state(), "/api/graph?verdict=dropped").await;
    assert_eq!(node_ids(&json), ["shop/frontend", "198.51.100.7"]);
    let (_, json) = get_json(ui_state(), "/api/graph?namespace=data").await;
    assert_eq!(node_ids(&json), ["data/db", "shop/frontend"]);
    let (_, json) = get_json(ui_state(), "/api/graph").await;
    assert_eq!(json["nodes"].as_array().unwrap().len(), 5, "{json}");
}

#[tokio::test]
async fn graph_counts_verdicts_per_port_and_shows_the_worst() {
    let (_, json) = get_json(ui_state(), "/api/graph").await;
    let edge = |id: &str| {
        json["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("no {id} in {json}"))
            .clone()
    };
    let db = edge(DB);
    assert_eq!(db["verdict"], "audit");
    assert_eq!(db["connections"], 3);
    assert_eq!(
        db["ports"][0]["verdicts"],
        serde_json::json!({"forwarded": 2, "audit": 1, "dropped": 0})
    );
    // The cart's report of the frontend's connection adds its ingress
    // verdict, not a second connection.
    let cart = edge(CART);
    assert_eq!(
        (&cart["verdict"], &cart["connections"]),
        (&"audit".into(), &1.into())
    );
    assert_eq!(
        cart["ports"][0]["verdicts"],
        serde_json::json!({"forwarded": 1, "audit": 1, "dropped": 0})
    );
    let dropped = edge(DROPPED);
    assert_eq!(dropped["verdict"], "dropped");
    assert_eq!(dropped["ports"][0]["verdicts"]["dropped"], 1);
    assert_eq!(edge(DNS)["verdict"], "forwarded");

    // A dropped connection is drawn, never learned.
    let (_, _, yaml) = get(ui_state(), "/api/policies").await;
    assert!(!yaml.contains("198.51.100.7"), "{yaml}");
    let (_, status) = get_json(ui_state(), "/api/status").await;
    assert_eq!(status["edges"], 3, "{status}");
}

#[tokio::test]
async fn graph_versions_grow_with_every_fold() {
    let state = ui_state();
    let (_, before) = get_json(state.clone(), "/api/graph").await;
    state.aggregator.fold(
        &obs(1, "10.0.0.1:50000", "10.0.1.9:5432", Initiator::Local),
        &shop(),
    );
    let (_, after) = get_json(state, "/api/graph").await;
    assert!(
        after["version"].as_u64() > before["version"].as_u64(),
        "{} then {}",
        before["version"],
        after["version"]
    );
}

#[tokio::test]
async fn bad_graph_and_detail_queries_are_400_json_naming_the_parameter() {
    for (uri, name) in [
        ("/api/graph?verdict=maybe", "verdict"),
        ("/api/graph?port=http", "port"),
        ("/api/graph?port=65536", "port"),
        ("/api/graph?protocol=gre", "protocol"),
        ("/api/graph?since=yesterday", "since"),
        ("/api/graph?namespace=", "namespace"),
        ("/api/graph?namespace=a,,b", "namespace"),
        ("/api/graph?colour=red", "colour"),
        ("/api/graph?port=1&port=2", "port"),
        ("/api/edge?source=shop/frontend", "target"),
        ("/api/edge?target=data/db&source=", "source"),
        ("/api/node", "id"),
        ("/api/node?id=x&extra=1", "extra"),
        ("/api/impact?namespace=shop", "mode"),
        ("/api/impact?namespace=shop&mode=block", "mode"),
        (
            "/api/impact?namespace=shop&mode=audit&window=soon",
            "window",
        ),
        ("/api/impact?mode=audit", "namespace"),
        ("/api/policies/diff", "namespace"),
        ("/api/policies/diff?namespace=a,b", "namespace"),
        ("/api/verify/suggestion?namespace=", "namespace"),
    ] {
        let (status, json) = get_json(ui_state(), uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {json}");
        assert_eq!(json["status"], 400, "{uri}");
        let error = json["error"].as_str().unwrap_or_default();
        assert!(error.contains(name), "{uri}: {error}");
    }
    for uri in [
        "/api/edge?source=shop/frontend&target=shop/nope",
        "/api/edge?source=data/db&target=shop/frontend",
        "/api/edge?source=10.9.9.9&target=shop/cart",
        "/api/node?id=shop/nope",
        "/api/node?id=10.9.9.9",
        "/api/node?id=nonsense",
        "/api/impact?namespace=elsewhere&mode=audit",
        "/api/policies/diff?namespace=elsewhere",
        "/api/verify/suggestion?namespace=elsewhere",
    ] {
        let (status, json) = get_json(ui_state(), uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {json}");
        assert_eq!(json["status"], 404, "{uri}");
    }
}

/// Ingress to the db from the frontend on 5432, and every egress of the
/// shop denied.
const POLICIES: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: data}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}
      podSelector: {matchLabels: {app: frontend}}
    ports: [{port: 5432, protocol: TCP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress, namespace: shop}
spec: {podSelector: {}, policyTypes: [Egress]}
";

#[tokio::test(flavor = "multi_thread")]
async fn edge_details_explain_each_port_with_the_enforced_policies_and_modes() {
    let t = with_enforcer(ui_state());
    let uri = "/api/edge?source=shop/frontend&target=data/db";
    let json = t.get(uri).await;
    assert_eq!(json["id"], DB);
    assert_eq!(json["verdict"], "audit");
    assert_eq!(json["source_pods"], serde_json::json!(["frontend-a"]));
    assert_eq!(json["target_pods"], serde_json::json!(["db-0"]));
    assert_eq!(json["ports"][0]["port"], 5432);
    assert_eq!(json["ports"][0]["connections"], 3);
    let flows = json["recent_flows"].as_array().unwrap();
    let source_ports: Vec<u64> = flows
        .iter()
        .map(|f| f["l4"]["TCP"]["source_port"].as_u64().unwrap())
        .collect();
    assert_eq!(source_ports, [43213, 43212, 43211], "newest first");
    // Nothing enforced yet: nobody is isolated.
    let policy = &json["policy"][0];
    assert_eq!(
        (&policy["verdict"], &policy["effect"]),
        (&"allowed".into(), &"forwarded".into())
    );
    assert_eq!(policy["egress"]["verdict"], "not-isolated");
    assert_eq!(policy["ingress"]["verdict"], "not-isolated");

    let (status, body) = t.send("POST", "/api/policies/enforced", POLICIES).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = t
        .send("PUT", "/api/modes/shop", r#"{"mode": "audit"}"#)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let json = t.get(uri).await;
    let policy = &json["policy"][0];
    assert_eq!(
        policy,
        &serde_json::json!({
            "port": 5432, "protocol": "TCP", "verdict": "denied", "effect": "audit",
            "egress": {"verdict": "denied", "mode": "audit", "effect": "audit",
                       "allowed_by": [], "rules": [], "reason": "default-deny",
                       "isolated_by": ["shop/deny-egress"]},
            "ingress": {"verdict": "allowed", "mode": "observe", "effect": "forwarded",
                        "allowed_by": ["data/db"], "rules": ["data/db spec.ingress[0]"],
                        "reason": null, "isolated_by": []},
        })
    );
    // The client's type reads a denied direction and loses nothing.
    let read: wire::EdgeDetails = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(serde_json::to_value(&read).unwrap(), json);
    assert_eq!(
        read.policy[0].egress.reason.as_deref(),
        Some("default-deny")
    );
    t.send("PUT", "/api/modes/shop", r#"{"mode": "enforce"}"#)
        .await;
    let json = t.get(uri).await;
    assert_eq!(json["policy"][0]["effect"], "dropped");
    let graph = t.get("/api/graph?namespace=shop").await;
    let modes: Vec<&serde_json::Value> = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["mode"])
        .collect();
    assert!(modes.contains(&&"enforce".into()) && modes.contains(&&serde_json::Value::Null));

    // An external target: its ingress is not the cluster's.
    let json = t
        .get("/api/edge?source=shop/frontend&target=198.51.100.7")
        .await;
    assert_eq!(json["verdict"], "dropped");
    assert_eq!(json["target_pods"], serde_json::json!([]));
    assert_eq!(json["policy"][0]["ingress"]["verdict"], "not-applicable");
    assert_eq!(
        json["policy"][0]["ingress"]["mode"],
        serde_json::Value::Null
    );
    assert_eq!(json["recent_flows"][0]["verdict"], "DROPPED");
}

#[tokio::test]
async fn node_details_list_pods_ports_and_edges() {
    let (status, json) = get_json(ui_state(), "/api/node?id=shop/cart").await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(
        json,
        serde_json::json!({
            "id": "shop/cart", "kind": "workload", "group": "shop", "name": "cart",
            "namespace": "shop", "workload": "cart", "workload_kind": "Deployment",
            "labels": {"app": "cart"}, "mode": "observe",
            "pods": [{"name": "cart-a", "ips": ["10.0.0.2"], "labels": {"app": "cart"}}],
            "ports_served": [{"port": 53, "protocol": "UDP"}, {"port": 7070, "protocol": "TCP"}],
            "edges_in": [
                {"id": DNS, "peer": "203.0.113.5", "ports": [{"port": 53, "protocol": "UDP"}],
                 "verdict": "forwarded", "connections": 1},
                {"id": CART, "peer": "shop/frontend", "ports": [{"port": 7070, "protocol": "TCP"}],
                 "verdict": "audit", "connections": 1},
            ],
            "edges_out": [],
        })
    );
    let (_, json) = get_json(ui_state(), "/api/node?id=198.51.100.7").await;
    assert_eq!(
        (&json["kind"], &json["group"], &json["name"]),
        (&"external".into(), &"external".into(), &"payments".into())
    );
    assert_eq!(json["edges_in"][0]["verdict"], "dropped");
    assert_eq!(json["pods"], serde_json::json!([]));
    let (_, json) = get_json(ui_state(), "/api/node?id=shop%2Ffrontend").await;
    let out: Vec<&str> = json["edges_out"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["peer"].as_str().unwrap())
        .collect();
    assert_eq!(out, ["198.51.100.7", "data/db", "shop/cart"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_diff_compares_enforced_and_suggested_policies_by_name_and_spec() {
    let t = with_enforcer(ui_state());
    let diff = t.get("/api/policies/diff?namespace=data").await;
    assert_eq!(
        diff["added"],
        serde_json::json!(["weir-db", "weir-default-deny"])
    );
    assert_eq!(diff["removed"], serde_json::json!([]));
    assert!(
        diff["diff"].as_str().unwrap().contains("+  name: weir-db"),
        "{diff}"
    );

    // Enforce the suggestion of data, then one policy of our own there.
    let (_, _, suggestion) = get(t.state.clone(), "/api/policies?namespace=data").await;
    let (status, body) = t.send("POST", "/api/policies/enforced", &suggestion).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = t.send("POST", "/api/policies/enforced", POLICIES).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let diff = t.get("/api/policies/diff?namespace=data").await;
    assert_eq!(diff["added"], serde_json::json!([]));
    assert_eq!(diff["removed"], serde_json::json!(["db"]));
    assert_eq!(diff["changed"], serde_json::json!([]));
    assert_eq!(
        diff["unchanged"],
        serde_json::json!(["weir-db", "weir-default-deny"])
    );
    let text = diff["diff"].as_str().unwrap();
    assert!(
        text.starts_with("--- enforced/data.yaml\n+++ suggested/data.yaml\n"),
        "{text}"
    );
    assert!(text.contains("-  name: db\n"), "{text}");

    // A changed port is a changed spec.
    let changed = suggestion.replace("port: 5432", "port: 5433");
    assert_ne!(changed, suggestion);
    let (status, body) = t.send("POST", "/api/policies/enforced", &changed).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let diff = t.get("/api/policies/diff?namespace=data").await;
    assert_eq!(diff["changed"], serde_json::json!(["weir-db"]));
    let text = diff["diff"].as_str().unwrap();
    let line = |sign: char, port: &str| {
        text.lines()
            .any(|l| l.starts_with(sign) && l.contains(port))
    };
    assert!(line('-', "5433") && line('+', "5432"), "{text}");
}

#[tokio::test]
async fn verify_of_the_suggestion_denies_nothing_observed() {
    let (status, report) = get_json(ui_state(), "/api/verify/suggestion").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["observed"], 3);
    assert_eq!(report["denied"], serde_json::json!([]));
    // The same report as POSTing the suggestion.
    let (_, _, yaml) = get(ui_state(), "/api/policies").await;
    let (_, posted) = post(ui_state(), "/api/verify", &yaml).await;
    assert_eq!(report, posted);
    let (status, report) = get_json(ui_state(), "/api/verify/suggestion?namespace=data").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["denied"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn impact_counts_what_the_enforced_policies_would_deny_in_that_mode() {
    let t = with_enforcer(ui_state());
    let uri = "/api/impact?namespace=shop&mode=enforce&window=100000h";
    let json = t.get(uri).await;
    assert_eq!(
        (&json["flows_total"], &json["flows_denied"]),
        (&6.into(), &0.into()),
        "nothing enforced: {json}"
    );
    let (status, body) = t.send("POST", "/api/policies/enforced", POLICIES).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let json = t.get(uri).await;
    // Every egress of the shop is denied: frontend -> db (3), -> cart,
    // -> 198.51.100.7; the external client's ingress to the cart is not.
    assert_eq!(json["namespace"], "shop");
    assert_eq!(json["mode"], "enforce");
    assert_eq!(json["window_seconds"], 360_000_000);
    assert_eq!(
        (&json["flows_total"], &json["flows_denied"]),
        (&6.into(), &5.into())
    );
    assert_eq!(
        json["denied"][0],
        serde_json::json!({"source": "shop/frontend", "target": "data/db", "port": 5432,
            "protocol": "TCP", "direction": "egress", "reason": "default-deny",
            "isolated_by": ["shop/deny-egress"], "connections": 3})
    );
    assert_eq!(json["denied"].as_array().unwrap().len(), 3);
    assert_eq!(json["readiness"]["namespace"], "shop");
    // The policies in force, not the suggestion; observe denies nothing;
    // the window leaves out the 2023 flows.
    let json = t
        .get("/api/impact?namespace=data&mode=audit&window=100000h")
        .await;
    assert_eq!(
        (&json["flows_total"], &json["flows_denied"]),
        (&3.into(), &0.into())
    );
    let json = t
        .get("/api/impact?namespace=shop&mode=observe&window=100000h")
        .await;
    assert_eq!(json["flows_denied"], 0);
    let json = t.get("/api/impact?namespace=shop&mode=enforce").await;
    assert_eq!(
        (&json["flows_total"], &json["window_seconds"]),
        (&0.into(), &3600.into())
    );
}

/// The text of the next frames of an event stream, until `until` is in it.
async fn read_until(body: &mut Body, text: &mut String, until: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !text.contains(until) {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("no {until:?} in time; got {text:?}"))
            .unwrap_or_else(|| panic!("stream ended before {until:?}; got {text:?}"))
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
}

#[tokio::test]
async fn events_announce_graph_versions_and_end_with_the_agent() {
    let state = ui_state();
    let aggregator = Arc::clone(&state.aggregator);
    let version = aggregator.changes();
    let response = app(state)
        .oneshot(Request::get("/api/events").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers().get(header::CONTENT_TYPE).unwrap(),
        "text/event-stream"
    );
    let mut body = response.into_body();
    let mut text = String::new();
    read_until(&mut body, &mut text, "event: modes\n").await;
    assert!(
        text.starts_with(&format!(
            "event: graph\ndata: {{\"version\":{version},\"nodes\":5,\"edges\":4}}\n\n"
        )),
        "{text}"
    );
    assert!(
        text.contains("data: {\"modes\":{},\"default_mode\":\"observe\"}"),
        "{text}"
    );

    // A fold: one coalesced event with the new version.
    let r = shop();
    aggregator.fold(
        &obs(1, "10.0.0.1:50001", "10.0.1.9:6432", Initiator::Local),
        &r,
    );
    aggregator.fold(
        &obs(1, "10.0.0.1:50002", "10.0.1.9:6432", Initiator::Local),
        &r,
    );
    let mut next = String::new();
    read_until(&mut body, &mut next, "\n\n").await;
    assert_eq!(
        next,
        format!(
            "event: graph\ndata: {{\"version\":{},\"nodes\":5,\"edges\":4}}\n\n",
            aggregator.changes()
        )
    );
    assert!(aggregator.changes() > version);

    aggregator.close_followers();
    let end = tokio::time::timeout(Duration::from_secs(5), body.collect())
        .await
        .expect("the stream ends when the agent stops");
    assert!(end.is_ok());
}
