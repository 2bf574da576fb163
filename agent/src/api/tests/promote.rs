//! Automatic promotion through the API: a namespace annotated
//! `weir.dev/promote: auto` goes observe -> audit when ready, then audit
//! -> enforce after its audit period with no would-drop, a would-drop
//! restarting the period; each step is in `/api/modes`, the metrics and
//! the audit log, and the guard watches the flip to enforce.

use std::time::Duration;

use weir_generator::datapath::Mode;

use super::*;
use crate::flow::Verdict;

const DENY_DATA: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
    metadata: {name: deny, namespace: data}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n";

const PERIOD: Duration = Duration::from_millis(600);

/// [`state`] with data promoted automatically after [`PERIOD`].
fn auto_data() -> WithEnforcer {
    let mut state = state();
    state.resolver = shop_resolver_with(|inventory| {
        inventory.promote.insert(
            "data".to_owned(),
            crate::promote::Settings { after: PERIOD },
        );
    });
    with_enforcer(state)
}

/// frontend -> db:5432 let through now with an audit verdict (db's
/// ingress would drop it).
fn would_drop_to_db(t: &WithEnforcer, port: u16) {
    denied_to_db(t, port, Verdict::Audit);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_promoted_automatically_goes_to_audit_then_enforce_and_says_so() {
    let t = auto_data();
    let (status, body) = t.send("POST", "/api/policies/enforced", DENY_DATA).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(crate::api::guard::tick(&t.state).await.is_empty());

    // data's edges are old and covered: ready, so audit at once.
    assert_eq!(
        crate::api::promote::tick(&t.state).await,
        [("data".to_owned(), Mode::Audit)]
    );
    let modes = t.get("/api/modes").await;
    assert_eq!(modes["modes"]["data"], "audit", "{modes}");
    assert!(
        modes["promotion"]["shop"].is_null(),
        "shop is not annotated: {modes}"
    );
    let audit = t.get("/api/audit?kind=promote").await;
    let entry = &audit["entries"][0];
    assert_eq!(entry["who"], "weir-promote", "{audit}");
    assert_eq!(entry["namespace"], "data");
    assert_eq!(entry["what"], "observe -> audit");
    let (_, _, metrics) = get(t.state.clone(), "/metrics").await;
    assert!(
        metrics.contains("weir_promotions_total{namespace=\"data\",to=\"audit\"} 1"),
        "{metrics}"
    );

    // The next check starts the audit period: enforce at its end.
    assert!(crate::api::promote::tick(&t.state).await.is_empty());
    let promotion = t.get("/api/modes").await["promotion"]["data"].clone();
    assert_eq!(promotion["next"], "enforce", "{promotion}");
    assert_eq!(promotion["last"]["to"], "audit", "{promotion}");
    let first_at = promotion["at"].as_str().expect("a time").to_owned();
    assert!(
        promotion["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("automatic promotion: enforce at {first_at}")),
        "{promotion}"
    );

    // A would-drop half way: the period starts again.
    tokio::time::sleep(PERIOD / 2).await;
    would_drop_to_db(&t, 43500);
    assert!(crate::api::promote::tick(&t.state).await.is_empty());
    let promotion = t.get("/api/modes").await["promotion"]["data"].clone();
    let second_at = promotion["at"].as_str().expect("a time").to_owned();
    assert!(second_at > first_at, "{first_at} then {promotion}");
    // At the first period's end: still audit.
    tokio::time::sleep(PERIOD / 2 + Duration::from_millis(50)).await;
    assert!(crate::api::promote::tick(&t.state).await.is_empty());
    assert_eq!(t.get("/api/modes").await["modes"]["data"], "audit");

    // At the second's: enforce, and the guard watches it.
    tokio::time::sleep(PERIOD / 2).await;
    assert_eq!(
        crate::api::promote::tick(&t.state).await,
        [("data".to_owned(), Mode::Enforce)]
    );
    assert!(crate::api::guard::tick(&t.state).await.is_empty());
    let modes = t.get("/api/modes").await;
    assert_eq!(modes["modes"]["data"], "enforce", "{modes}");
    assert!(modes["guarded"]["data"].is_object(), "{modes}");
    assert!(modes["promotion"]["data"]["next"].is_null(), "{modes}");
    let audit = t.get("/api/audit?kind=promote").await;
    let whats: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["what"].as_str())
        .collect();
    assert!(whats.contains(&"audit -> enforce"), "{audit}");
    let (_, _, metrics) = get(t.state.clone(), "/metrics").await;
    assert!(
        metrics.contains("weir_promotions_total{namespace=\"data\",to=\"enforce\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_that_is_not_ready_waits_and_says_why() {
    let mut state = state();
    // A new edge of shop seen now: shop is not quiet.
    let now = crate::graph_store::unix_now();
    let mut o = obs(2, "10.0.0.2:43400", "198.51.100.7:443", Initiator::Local);
    o.first_seen = now;
    o.last_seen = now;
    o.kernel_time = now;
    state.aggregator.fold(&o, &shop());
    state.resolver = shop_resolver_with(|inventory| {
        inventory
            .promote
            .insert("shop".to_owned(), crate::promote::Settings::default());
    });
    let t = with_enforcer(state);
    for _ in 0..100 {
        if t.state.enforcer.as_ref().unwrap().view().ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(crate::api::promote::tick(&t.state).await.is_empty());
    let modes = t.get("/api/modes").await;
    assert!(modes["modes"]["shop"].is_null(), "{modes}");
    let promotion = &modes["promotion"]["shop"];
    assert_eq!(promotion["next"], "audit", "{modes}");
    assert!(promotion["at"].is_null(), "{modes}");
    let message = promotion["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "automatic promotion: audit once ready (not ready: its last new edge appeared"
        ) && message.contains("within the quiet period of 600s"),
        "{message}"
    );
}
