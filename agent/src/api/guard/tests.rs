use super::*;
use crate::cmd::kube::mock;

/// In a cluster the revert is exactly two requests: a merge patch of the
/// Namespace's mode label with the annotation saying why (field manager
/// `weir-guard`, so GitOps tools see who changed it), then an Event on the
/// Namespace.
#[tokio::test]
async fn a_cluster_revert_patches_the_label_and_records_an_event() {
    let now = crate::timestamp::parse_rfc3339("2026-12-07T03:30:00.123456789Z").unwrap();
    let message = "reverted to audit at 2026-12-07T03:30:00.123456789Z because enforce dropped \
                   1 learned edge within the guard window: shop/web -> shop/db TCP/5432 \
                   (isolated by shop/db)";
    let (reverted, seen) =
        mock::serve(async |client| revert_kube(client, "shop", message, now).await).await;
    reverted.expect("reverted");
    assert_eq!(seen.len(), 2, "{seen:#?}");
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

/// An automatic promotion to enforce is guarded: its patch removes a
/// `weir.dev/guard-skip` an earlier `--no-guard` may have left.
#[tokio::test]
async fn a_cluster_promotion_to_enforce_removes_a_guard_skip() {
    let now = crate::timestamp::parse_rfc3339("2026-12-07T03:30:00Z").unwrap();
    let change = |mode| ModeChange {
        namespace: "shop",
        mode,
        manager: "weir-promote",
        annotation: "weir.dev/promoted",
        message: "promoted",
        event_reason: "Promoted",
        event_type: "Normal",
    };
    let (promoted, seen) = mock::serve(async |client| {
        set_kube(client.clone(), &change(Mode::Enforce), now).await?;
        set_kube(client, &change(Mode::Audit), now).await
    })
    .await;
    promoted.expect("promoted");
    let patches: Vec<&serde_json::Value> = seen
        .iter()
        .filter(|(method, ..)| method == "PATCH")
        .map(|(.., body)| body)
        .collect();
    assert_eq!(
        patches,
        [
            &json!({"metadata": {
                "labels": {"weir.dev/mode": "enforce"},
                "annotations": {"weir.dev/promoted": "promoted", "weir.dev/guard-skip": null},
            }}),
            &json!({"metadata": {
                "labels": {"weir.dev/mode": "audit"},
                "annotations": {"weir.dev/promoted": "promoted"},
            }}),
        ]
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
