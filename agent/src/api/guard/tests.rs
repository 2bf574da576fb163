use http::{Request, Response};
use kube::client::Body;
use tower_test::mock;

use super::*;

/// In a cluster the revert is exactly two requests: a merge patch of the
/// Namespace's mode label with the annotation saying why (field manager
/// `weir-guard`, so GitOps tools see who changed it), then an Event on the
/// Namespace.
#[tokio::test]
async fn a_cluster_revert_patches_the_label_and_records_an_event() {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..2 {
            let (request, send) = handle.next_request().await.expect("a request");
            let (parts, body) = request.into_parts();
            let body = body.collect_bytes().await.expect("a body");
            let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            seen.push((
                parts.method.to_string(),
                parts.uri.path().to_owned(),
                parts.uri.query().unwrap_or_default().to_owned(),
                parts
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
                json.clone(),
            ));
            send.send_response(
                Response::builder()
                    .body(Body::from(json.to_string().into_bytes()))
                    .expect("response"),
            );
        }
        seen
    });
    let now = crate::timestamp::parse_rfc3339("2026-12-07T03:30:00.123456789Z").unwrap();
    let message = "reverted to audit at 2026-12-07T03:30:00.123456789Z because enforce dropped \
                   1 learned edge within the guard window: shop/web -> shop/db TCP/5432 \
                   (isolated by shop/db)";
    revert_kube(kube::Client::new(service, "default"), "shop", message, now)
        .await
        .expect("reverted");
    let seen = server.await.expect("server");
    assert_eq!(
        seen[0],
        (
            "PATCH".to_owned(),
            "/api/v1/namespaces/shop".to_owned(),
            "&fieldManager=weir-guard".to_owned(),
            "application/merge-patch+json".to_owned(),
            json!({"metadata": {
                "labels": {"weir.dev/mode": "audit"},
                "annotations": {"weir.dev/guard-reverted": message},
            }}),
        )
    );
    assert_eq!(
        (seen[1].0.as_str(), seen[1].1.as_str(), seen[1].2.as_str()),
        ("POST", "/api/v1/namespaces/shop/events", "")
    );
    assert_eq!(
        seen[1].4,
        json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": "shop.guard-", "namespace": "shop"},
            "involvedObject": {
                "apiVersion": "v1", "kind": "Namespace", "name": "shop", "namespace": "shop",
            },
            "type": "Warning",
            "reason": "GuardReverted",
            "message": message,
            "source": {"component": "weir-guard"},
            "reportingComponent": "weir-guard",
            "firstTimestamp": "2026-12-07T03:30:00Z",
            "lastTimestamp": "2026-12-07T03:30:00Z",
            "count": 1,
        })
    );
}

#[test]
fn the_reason_names_every_edge_and_policy() {
    use weir_generator::model::{EdgeKey, Protocol, WorkloadKind, WorkloadRef};
    let w = |name: &str| NodeId::Workload(WorkloadRef::new("shop", WorkloadKind::Deployment, name));
    let trip = Trip {
        namespace: "shop".into(),
        edges: vec![
            EdgeKey {
                source: w("api"),
                target: w("db"),
                protocol: Protocol::Tcp,
                port: 5432,
            },
            EdgeKey {
                source: w("web"),
                target: w("api"),
                protocol: Protocol::Tcp,
                port: 8080,
            },
        ],
        max_drops: 2,
    };
    assert_eq!(
        reason(&trip, &["shop/api".to_owned(), "shop/db".to_owned()]),
        "enforce dropped 2 learned edges within the guard window: shop/api -> shop/db TCP/5432, \
         shop/web -> shop/api TCP/8080 (isolated by shop/api, shop/db)"
    );
}
