//! `/api/pending`: the queue of what the enforced policies deny, its
//! preview, approve and reject.

use super::*;
use crate::flow::{CheckedDirection, DenyReason, Verdict};

/// Only the shop's egress is isolated: frontend -> db:6000 is denied at
/// the frontend.
const SHOP_EGRESS: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
    metadata: {name: egress, namespace: shop}\n\
    spec: {podSelector: {}, policyTypes: [Egress]}\n";

const EDGE: &str = "shop/frontend->data/db:6000/TCP";

/// [`state`] plus a connection frontend -> db:6000 its egress dropped.
fn dropped_state() -> AppState {
    let state = state();
    let mut o = obs(1, "10.0.0.1:43400", "10.0.1.9:6000", Initiator::Local);
    o.verdict = Verdict::Dropped;
    o.reason = DenyReason::PeerNotAllowed;
    o.direction = Some(CheckedDirection::Egress);
    o.policies = vec!["shop/egress".to_owned()];
    state.aggregator.fold(&o, &shop());
    state
}

fn body(edges: &[&str]) -> String {
    serde_json::json!({ "edges": edges }).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_edge_is_queued_with_its_rule_and_approving_it_enforces_the_rule() {
    let t = with_enforcer(dropped_state());
    // Nothing enforced yet: nothing is denied, nothing pending.
    assert_eq!(
        t.get("/api/pending").await["entries"],
        serde_json::json!([])
    );
    let (status, answer) = t.send("POST", "/api/policies/enforced", SHOP_EGRESS).await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    let (status, _, text) = get(t.state.clone(), "/api/pending").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let queue: wire::PendingQueue = reads_back(&text);
    assert_eq!(queue.entries.len(), 1, "{text}");
    let entry = &queue.entries[0];
    assert_eq!(entry.id, EDGE);
    assert_eq!(entry.namespaces, ["shop"]);
    assert_eq!((entry.dropped, entry.audit), (1, 0));
    assert_eq!(
        entry.denied,
        [wire::PendingDenial {
            direction: "egress".to_owned(),
            namespace: "shop".to_owned(),
            reason: "default-deny".to_owned(),
            isolated_by: vec!["shop/egress".to_owned()],
        }]
    );
    // The learner's rule for that one edge, egress only, at the frontend.
    assert_eq!(
        entry.policies,
        ["shop/weir-allow-out-frontend-to-db-6000-tcp"]
    );
    let policy: k8s_openapi::api::networking::v1::NetworkPolicy =
        serde_yaml::from_str(entry.rule.trim_start_matches("---\n")).expect(&entry.rule);
    let spec = policy.spec.unwrap();
    assert_eq!(spec.policy_types, Some(vec!["Egress".to_owned()]));
    assert_eq!(spec.ingress, None);
    let egress = spec.egress.unwrap();
    assert_eq!(egress.len(), 1, "{}", entry.rule);
    assert!(
        entry.rule.contains("port: 6000")
            && entry.rule.contains("app: db")
            && entry.rule.contains("kubernetes.io/metadata.name: data")
            && entry.rule.contains("app: frontend"),
        "{}",
        entry.rule
    );
    // Only the shop's policies deny it.
    assert_eq!(
        t.get("/api/pending?namespace=data").await["entries"],
        serde_json::json!([])
    );

    // The preview: the diff of the shop's enforced policies, nothing written.
    let preview = t
        .get(&format!("/api/pending/preview?edges={}", urlencode(EDGE)))
        .await;
    let diff = preview["diff"].as_str().unwrap();
    assert!(
        diff.contains("--- enforced/shop.yaml")
            && diff.contains("+++ approved/shop.yaml")
            && diff.contains("+  name: weir-allow-out-frontend-to-db-6000-tcp"),
        "{diff}"
    );
    assert_eq!(
        t.get("/api/policies/enforced").await["policies"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let (status, answer) = t.send("POST", "/api/pending/approve", &body(&[EDGE])).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["decision"], "approved");
    assert_eq!(
        answer["policies"],
        serde_json::json!(["shop/weir-allow-out-frontend-to-db-6000-tcp"])
    );
    let enforced = t.get("/api/policies/enforced").await;
    assert_eq!(
        enforced["policies"].as_array().unwrap().len(),
        2,
        "{enforced}"
    );
    // Allowed now: out of the queue.
    assert_eq!(
        t.get("/api/pending").await["entries"],
        serde_json::json!([])
    );

    // Approving it again, or an edge that never was: 404 naming it, and
    // nothing written.
    for edges in [vec![EDGE], vec!["shop/frontend->data/db:1/TCP"]] {
        let (status, answer) = t.send("POST", "/api/pending/approve", &body(&edges)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains(&format!("no pending edge {}", edges[0])),
            "{answer}"
        );
    }
    assert_eq!(
        t.get("/api/policies/enforced").await["policies"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (status, answer) = t.send("POST", "/api/pending/approve", &body(&[])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (status, answer) = t
        .send("POST", "/api/pending/approve", r#"{"edge": []}"#)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_edge_leaves_the_queue_and_cannot_be_approved() {
    let t = with_enforcer(dropped_state());
    let (status, answer) = t.send("POST", "/api/policies/enforced", SHOP_EGRESS).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(t.get("/api/pending").await["entries"][0]["id"], EDGE);

    let (status, answer) = t.send("POST", "/api/pending/reject", &body(&[EDGE])).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let decided: wire::PendingDecided = serde_json::from_value(answer).unwrap();
    assert_eq!(
        (decided.decision.as_str(), decided.edges.as_slice()),
        ("rejected", [EDGE.to_owned()].as_slice())
    );
    assert_eq!(
        t.get("/api/pending").await["entries"],
        serde_json::json!([])
    );
    let (status, answer) = t.send("POST", "/api/pending/approve", &body(&[EDGE])).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    // Still denied: nothing was enforced for it.
    assert_eq!(
        t.get("/api/policies/enforced").await["policies"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn decisions_need_the_token_and_approving_needs_an_enforcer() {
    let state = dropped_state();
    let app = app(state.clone());
    let response = app
        .clone()
        .oneshot(
            Request::post("/api/pending/reject")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body(&[EDGE])))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Without an enforcer nothing is denied: the edge is not pending.
    let (status, answer) = send(&app, "POST", "/api/pending/approve", &body(&[EDGE])).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    let (status, answer) = get_json(state, "/api/pending/preview").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("`edges`"),
        "{answer}"
    );
}

fn urlencode(s: &str) -> String {
    reqwest::Url::parse_with_params("http://x/", [("e", s)])
        .unwrap()
        .query()
        .unwrap()[2..]
        .to_owned()
}
