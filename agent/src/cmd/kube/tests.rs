use super::{mock::serve, *};

#[tokio::test]
async fn mode_set_patches_the_namespace_label() {
    let (result, seen) =
        serve(async |client| set_mode(client, "shop", Mode::Enforce, None).await).await;
    result.expect("patched");
    assert_eq!(
        seen,
        [(
            "PATCH".to_owned(),
            "/api/v1/namespaces/shop".to_owned(),
            "&fieldManager=weir".to_owned(),
            "application/merge-patch+json".to_owned(),
            json!({"metadata": {
                "labels": {"weir.dev/mode": "enforce"},
                "annotations": {"weir.dev/guard-skip": null},
            }}),
        )]
    );
}

/// `--no-guard`: the same patch annotates the time of the request, which
/// every node's agent reads with the label; any other mode removes it.
#[tokio::test]
async fn mode_set_without_the_guard_annotates_the_time_of_the_request() {
    let at = 1_796_636_400_123_456_789;
    let (result, seen) = serve(async |client| {
        set_mode(client.clone(), "shop", Mode::Enforce, Some(at)).await?;
        set_mode(client, "shop", Mode::Audit, Some(at)).await
    })
    .await;
    result.expect("patched");
    let bodies: Vec<(&str, &str, &str, &serde_json::Value)> = seen
        .iter()
        .map(|(m, p, q, _, b)| (m.as_str(), p.as_str(), q.as_str(), b))
        .collect();
    assert_eq!(
        bodies,
        [
            (
                "PATCH",
                "/api/v1/namespaces/shop",
                "&fieldManager=weir",
                &json!({"metadata": {
                    "labels": {"weir.dev/mode": "enforce"},
                    "annotations": {"weir.dev/guard-skip": "2026-12-07T09:40:00.123456789Z"},
                }})
            ),
            (
                "PATCH",
                "/api/v1/namespaces/shop",
                "&fieldManager=weir",
                &json!({"metadata": {
                    "labels": {"weir.dev/mode": "audit"},
                    "annotations": {"weir.dev/guard-skip": null},
                }})
            ),
        ]
    );
}

fn policy(namespace: &str, name: &str) -> NetworkPolicy {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }))
    .expect("policy")
}

#[tokio::test]
async fn export_apply_is_a_server_side_apply_dry_run_by_default() {
    let policies = [policy("shop", "default-deny"), policy("data", "db")];
    let (result, seen) =
        serve(async |client| apply_policies(client, &policies, DryRun::default()).await).await;
    assert_eq!(result.expect("applied"), ["shop/default-deny", "data/db"]);
    let requests: Vec<(&str, &str, &str, &str)> = seen
        .iter()
        .map(|(m, p, q, c, _)| (m.as_str(), p.as_str(), q.as_str(), c.as_str()))
        .collect();
    assert_eq!(
        requests,
        [
            (
                "PATCH",
                "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/default-deny",
                "&dryRun=All&fieldManager=weir",
                "application/apply-patch+yaml"
            ),
            (
                "PATCH",
                "/apis/networking.k8s.io/v1/namespaces/data/networkpolicies/db",
                "&dryRun=All&fieldManager=weir",
                "application/apply-patch+yaml"
            ),
        ]
    );
    // The whole object, with its type, as server-side apply needs.
    assert_eq!(seen[0].4["kind"], "NetworkPolicy");
    assert_eq!(seen[0].4["apiVersion"], "networking.k8s.io/v1");
    assert_eq!(seen[0].4["spec"]["policyTypes"], json!(["Ingress"]));

    let (result, seen) =
        serve(async |client| apply_policies(client, &policies[..1], DryRun::None).await).await;
    result.expect("applied");
    assert_eq!(seen[0].2, "&fieldManager=weir", "no dryRun once asked");
}

#[test]
fn the_cli_asks_for_the_cluster_explicitly() {
    use clap::Parser as _;

    use crate::cli::{Cli, Command};
    let parse = |args: &[&str]| Cli::try_parse_from([&["weir"], args].concat());
    let Ok(Cli {
        command: Command::Export(export),
        ..
    }) = parse(&["export", "--apply", "--kube"])
    else {
        panic!("export --apply --kube parses");
    };
    assert!(export.kube && export.dry_run == DryRun::Server);
    let Ok(Cli {
        command: Command::Export(export),
        ..
    }) = parse(&["export", "--apply", "--kube", "--dry-run", "none"])
    else {
        panic!("--dry-run none parses");
    };
    assert_eq!(export.dry_run, DryRun::None);
    assert!(
        parse(&["export", "--kube"]).is_err(),
        "--kube needs --apply"
    );
    assert!(parse(&["export", "--dry-run", "none"]).is_err());
    let Ok(Cli {
        command: Command::Mode(crate::cmd::policy::ModeCommand::Set(set)),
        ..
    }) = parse(&["mode", "set", "shop", "enforce", "--kube"])
    else {
        panic!("mode set --kube parses");
    };
    assert!(set.kube && set.mode == Mode::Enforce);
}

#[tokio::test]
async fn a_policy_without_namespace_sends_nothing() {
    let mut nameless = policy("shop", "x");
    nameless.metadata.namespace = None;
    let (result, seen) = serve(async |client| {
        apply_policies(client, &[policy("shop", "a"), nameless], DryRun::None).await
    })
    .await;
    assert!(
        matches!(
            result,
            Err(WriteError::Incomplete {
                index: 1,
                field: "namespace"
            })
        ),
        "{result:?}"
    );
    assert!(seen.is_empty());
}

/// `mode set --kube` judges as the agent does: a step up of a namespace
/// that is not ready is refused with the agent's reason; the same mode,
/// a step down or a ready namespace is not.
#[test]
fn mode_set_kube_refuses_a_step_up_of_a_namespace_that_is_not_ready() {
    let status: StatusReport = serde_json::from_value(json!({
        "window_start": null, "observed_seconds": null,
        "quiet_period_seconds": 600, "window_seconds": 3600, "edges": 2,
        "namespaces": [
            {"namespace": "shop", "edges": 1, "last_new_edge": null,
             "seconds_since_last_new_edge": 30, "recent_connections": 4,
             "covered_connections": 4, "coverage": 1.0, "ready": false},
            {"namespace": "data", "edges": 1, "last_new_edge": null,
             "seconds_since_last_new_edge": 900, "recent_connections": 4,
             "covered_connections": 4, "coverage": 1.0, "ready": true},
        ],
    }))
    .expect("a status report");
    let modes: Modes = serde_json::from_value(json!({
        "modes": {"shop": "audit"}, "default_mode": "observe",
    }))
    .expect("modes");
    assert_eq!(
        readiness_refusal(&modes, &status, "shop", Mode::Enforce).as_deref(),
        Some(
            "namespace shop is not ready for enforce: its last new edge appeared 30s ago, \
             within the quiet period of 600s; force it to proceed"
        )
    );
    assert_eq!(
        readiness_refusal(&modes, &status, "empty", Mode::Audit).as_deref(),
        Some(
            "namespace empty is not ready for audit: nothing was learned from or to it yet; force it to proceed"
        ),
        "from the default mode"
    );
    for (namespace, mode) in [
        ("shop", Mode::Audit),
        ("shop", Mode::Observe),
        ("data", Mode::Enforce),
    ] {
        assert_eq!(
            readiness_refusal(&modes, &status, namespace, mode),
            None,
            "{namespace} {mode}"
        );
    }
}

#[test]
fn mode_set_kube_says_when_it_cannot_ask_about_readiness() {
    // Nothing listens on port 9 of localhost.
    let server: Url = "http://127.0.0.1:9".parse().expect("url");
    let error = format!(
        "{:#}",
        check_ready(&server, "shop", Mode::Enforce).expect_err("no server")
    );
    assert!(
        error.starts_with(
            "cannot ask http://127.0.0.1:9/ whether namespace shop is ready for enforce"
        ) && error.contains("--force sets the label without asking"),
        "{error}"
    );
}
