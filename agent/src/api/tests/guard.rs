//! The guard through the API: a flip to enforce opens a window, a dropped
//! learned edge reverts the namespace to audit within one check, and the
//! revert is reported in `/api/modes`, the metrics and the audit log;
//! `--no-guard` and readiness gating.

use super::*;
use crate::flow::Verdict;

const DENY_DATA: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
    metadata: {name: deny, namespace: data}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n";

/// frontend -> db:5432 dropped now (db's ingress denies it).
fn drop_to_db(t: &WithEnforcer, port: u16) {
    denied_to_db(t, port, Verdict::Dropped);
}

async fn put_mode(t: &WithEnforcer, ns: &str, body: &str) -> (StatusCode, serde_json::Value) {
    t.send("PUT", &format!("/api/modes/{ns}"), body).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_learned_edge_reverts_to_audit_and_says_why() {
    let t = with_enforcer(state());
    let (status, body) = t.send("POST", "/api/policies/enforced", DENY_DATA).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(crate::api::guard::tick(&t.state).await.is_empty());

    let (status, body) = put_mode(&t, "data", r#"{"mode": "enforce"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(crate::api::guard::tick(&t.state).await.is_empty());
    let modes = t.get("/api/modes").await;
    assert_eq!(modes["guarded"]["data"]["learned_edges"], 1, "{modes}");
    assert_eq!(modes["guarded"]["data"]["max_drops"], 1, "{modes}");

    drop_to_db(&t, 43300);
    assert_eq!(crate::api::guard::tick(&t.state).await, ["data"]);
    let modes = t.get("/api/modes").await;
    assert_eq!(modes["modes"]["data"], "audit", "{modes}");
    assert!(modes["guarded"].is_null(), "{modes}");
    let reverted = &modes["reverted"]["data"];
    assert_eq!(
        reverted["edges"],
        serde_json::json!(["shop/frontend -> data/db TCP/5432"])
    );
    assert_eq!(reverted["policies"], serde_json::json!(["data/deny"]));
    let message = reverted["message"].as_str().unwrap();
    assert!(
        message.starts_with("reverted to audit at ")
            && message.contains(
                " because enforce dropped 1 learned edge within the guard window: \
                 shop/frontend -> data/db TCP/5432 (isolated by data/deny)"
            ),
        "{message}"
    );
    let (_, _, metrics) = get(t.state.clone(), "/metrics").await;
    assert!(
        metrics.contains("weir_guard_reverts_total{namespace=\"data\"} 1"),
        "{metrics}"
    );
    let audit = t.get("/api/audit?kind=revert").await;
    let entry = &audit["entries"][0];
    assert_eq!(entry["who"], "weir-guard");
    assert_eq!(entry["namespace"], "data");
    assert_eq!(entry["what"], "enforce -> audit");
    assert_eq!(
        entry["details"]["policies"],
        serde_json::json!(["data/deny"])
    );
    // Once reverted, nothing more happens.
    assert!(crate::api::guard::tick(&t.state).await.is_empty());

    // With --no-guard the same drop keeps the namespace in enforce.
    let (status, body) = put_mode(&t, "data", r#"{"mode": "enforce", "guard": false}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(crate::api::guard::tick(&t.state).await.is_empty());
    assert!(t.get("/api/modes").await["guarded"].is_null());
    drop_to_db(&t, 43301);
    assert!(crate::api::guard::tick(&t.state).await.is_empty());
    let modes = t.get("/api/modes").await;
    assert_eq!(modes["modes"]["data"], "enforce", "{modes}");
    assert!(
        modes["reverted"].is_null(),
        "a new flip clears the last revert: {modes}"
    );
    let audit = t.get("/api/audit?kind=mode-change").await;
    let last = audit["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["details"]["guard"], false, "{last}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drop_in_the_other_namespace_does_not_revert_this_one() {
    let t = with_enforcer(state());
    let (status, _) = t.send("POST", "/api/policies/enforced", DENY_DATA).await;
    assert_eq!(status, StatusCode::OK);
    crate::api::guard::tick(&t.state).await;
    // shop goes to enforce; its policies isolate nothing: data's ingress
    // drops frontend -> db, not shop's egress.
    let (status, _) = put_mode(&t, "shop", r#"{"mode": "enforce"}"#).await;
    assert_eq!(status, StatusCode::OK);
    crate::api::guard::tick(&t.state).await;
    assert_eq!(
        t.get("/api/modes").await["guarded"]["shop"]["learned_edges"],
        3
    );
    drop_to_db(&t, 43302);
    assert!(crate::api::guard::tick(&t.state).await.is_empty());
    assert_eq!(t.get("/api/modes").await["modes"]["shop"], "enforce");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_that_is_not_ready_is_refused_unless_forced() {
    let t = with_enforcer(state());
    // A new edge of shop seen now: shop is not quiet.
    let now = crate::graph_store::unix_now();
    let mut o = obs(2, "10.0.0.2:43400", "198.51.100.7:443", Initiator::Local);
    o.first_seen = now;
    o.last_seen = now;
    o.kernel_time = now;
    t.state.aggregator.fold(&o, &shop());
    let status = t.get("/api/status").await;
    assert_eq!(status["namespaces"][1]["namespace"], "shop", "{status}");
    assert_eq!(status["namespaces"][1]["ready"], false, "{status}");

    let (status, body) =
        put_mode(&t, "shop", r#"{"mode": "enforce", "require_ready": true}"#).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("namespace shop is not ready for enforce: its last new edge appeared")
            && error.contains("within the quiet period of 600s"),
        "{error}"
    );
    assert_eq!(
        t.get("/api/modes").await["modes"]["shop"],
        serde_json::Value::Null
    );
    let (status, body) = put_mode(
        &t,
        "elsewhere",
        r#"{"mode": "audit", "require_ready": true}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("nothing was learned from or to it yet"),
        "{body}"
    );
    // data's edges are old and covered: ready.
    let (status, body) = put_mode(&t, "data", r#"{"mode": "audit", "require_ready": true}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Forced (no require_ready): proceeds, and the audit log says so.
    let (status, body) = put_mode(&t, "shop", r#"{"mode": "enforce"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let audit = t.get("/api/audit?namespace=shop").await;
    assert_eq!(audit["entries"][0]["details"]["forced"], true);
    // Going down is never gated.
    let (status, body) =
        put_mode(&t, "shop", r#"{"mode": "observe", "require_ready": true}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
