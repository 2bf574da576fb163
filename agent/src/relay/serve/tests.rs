//! The relay's API: the agent's answers over the merged view, with the
//! coverage on every answer; writes refused while a node is missing.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;
use weir_generator::{
    cluster::NamedPort,
    datapath::Mode,
    model::{PodMeta, Protocol, WorkloadKind, WorkloadRef},
};

use super::*;
use crate::{
    aggregator::{Aggregator, Options, testing::*},
    api::{auth::Token, contribution::Tag},
    flow::Initiator,
    metrics::Metrics,
    relay::{discovery::static_list, http::HttpFetch, hub::Fetched},
    resolve::{Inventory, LocalPod, Resolver},
};

const TOKEN: &str = "relay-test-token-0123456789abcdef";

fn aggregator(node: &str) -> Arc<Aggregator> {
    Arc::new(Aggregator::new(
        Options {
            node_name: node.into(),
            ..Options::default()
        },
        Arc::new(Metrics::new()),
    ))
}

/// frontend on node a, db on node b; `node` runs its pods ("one" runs
/// both).
fn inventory(node: &str) -> Inventory {
    let pod = |ns: &str, name: &str, ip: &str, port: u16, on: &str| LocalPod {
        meta: PodMeta {
            namespace: ns.into(),
            name: format!("{name}-0"),
            labels: BTreeMap::from([("app".to_owned(), name.to_owned())]),
            workload: WorkloadRef::new(ns, WorkloadKind::Deployment, name),
            ips: vec![ip.parse().unwrap()],
        },
        host_veth: None,
        ports: vec![NamedPort {
            name: Some("main".to_owned()),
            port,
            protocol: Protocol::Tcp,
        }],
        local: node == "one" || node == on,
        node: (node != "one").then(|| on.to_owned()),
    };
    let ns = |name: &str| {
        (
            name.to_owned(),
            BTreeMap::from([
                ("kubernetes.io/metadata.name".to_owned(), name.to_owned()),
                ("team".to_owned(), format!("{name}-team")),
                ("weir.dev/mode".to_owned(), "audit".to_owned()),
            ]),
        )
    };
    Inventory {
        pods: vec![
            pod("shop", "frontend", "10.0.0.1", 8080, "a"),
            pod("data", "db", "10.0.1.9", 5432, "b"),
        ],
        namespaces: BTreeMap::from([ns("shop"), ns("data")]),
        ..Inventory::default()
    }
}

fn resolver(attached: &str) -> FakeResolver {
    let at = |node: &str, i| (attached == "one" || attached == node).then_some(i);
    FakeResolver::default()
        .pod("shop", "frontend", "frontend-0", "10.0.0.1", at("a", 1))
        .pod("data", "db", "db-0", "10.0.1.9", at("b", 3))
        .on_node("10.0.0.1", "a")
        .on_node("10.0.1.9", "b")
}

/// frontend -> db and frontend -> 203.0.113.7:443, as `node` sees them.
fn fold(agg: &Aggregator, node: &str) {
    let r = resolver(node);
    if node != "b" {
        agg.fold(
            &obs(1, "10.0.0.1:40000", "10.0.1.9:5432", Initiator::Local),
            &r,
        );
        agg.fold(
            &obs(1, "10.0.0.1:40001", "203.0.113.7:443", Initiator::Local),
            &r,
        );
    }
    if node != "a" {
        agg.fold(
            &obs(3, "10.0.1.9:5432", "10.0.0.1:40000", Initiator::Remote),
            &r,
        );
    }
}

fn contribution(node: &str) -> crate::api::wire::ContributionJson {
    let agg = aggregator(node);
    fold(&agg, node);
    let c = agg.contribution();
    let tag = Tag {
        epoch: 1,
        instance: 1,
        version: c.view.version,
        cluster: 0,
    };
    crate::api::contribution::to_json(
        &c,
        &Resolver::new(&inventory(node), |_| None),
        &tag,
        "2026-01-01T00:00:00Z",
    )
}

/// A relay over nodes a and b; b stale unless `b_synced`.
fn relay(b_synced: bool) -> Relay {
    let agents = static_list(&[
        ("a".to_owned(), "https://10.0.0.1:4244".to_owned()),
        ("b".to_owned(), "https://10.0.0.2:4244".to_owned()),
    ]);
    let flows = FlowAgents::new(
        Arc::new(HttpFetch::new(reqwest::Client::new(), Arc::default())),
        agents.clone(),
    );
    let hub = Hub::new(agents, None, aggregator("relay"));
    for node in ["a", "b"] {
        let fetched = Fetched::Changed {
            etag: None,
            contribution: Box::new(contribution(node)),
        };
        hub.answered(node, fetched, 1).unwrap();
    }
    if !b_synced {
        hub.failed("b", "connection refused".to_owned(), 2);
    }
    hub.remerge();
    let state = AppState::new(
        Arc::clone(hub.aggregator()),
        Arc::new(Metrics::new()),
        hub.resolver(),
        "relay",
    )
    .with_token(Token::new(TOKEN, "test").unwrap())
    .with_modes_from_labels();
    Relay {
        state,
        hub,
        cluster: Cluster::Unavailable(Arc::from("no kubeconfig")),
        flows,
    }
}

/// The agent holding both pods and all the traffic.
fn one_agent() -> AppState {
    let agg = aggregator("one");
    fold(&agg, "one");
    let resolver = Arc::new(std::sync::RwLock::new(Arc::new(Resolver::new(
        &inventory("one"),
        |_| None,
    ))));
    AppState::new(agg, Arc::new(Metrics::new()), resolver, "one")
}

async fn call(router: Router, request: Request<Body>) -> (StatusCode, Option<String>, String) {
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let header = response
        .headers()
        .get(COVERAGE_HEADER)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, header, String::from_utf8(body.to_vec()).unwrap())
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn write(method: &str, uri: &str, body: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

#[tokio::test]
async fn json_answers_carry_the_coverage_and_every_answer_the_header() {
    let relay = relay(false);
    let (status, header, body) = call(app(relay.clone()), get("/api/graph")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(header.as_deref(), Some("synced=1; expected=2; stale=b"));
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["coverage"]["expected"], 2);
    assert_eq!(json["coverage"]["stale"], serde_json::json!(["b"]));
    assert!(
        json["edges"].as_array().is_some_and(|e| !e.is_empty()),
        "{body}"
    );

    // YAML: the header, the body as an agent writes it.
    let (status, header, yaml) = call(app(relay.clone()), get("/api/policies")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header.as_deref(), Some("synced=1; expected=2; stale=b"));
    assert!(!yaml.contains("coverage"), "{yaml}");

    // Errors are JSON objects too.
    let (status, header, body) = call(app(relay.clone()), get("/api/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(header.is_some());
    assert!(body.contains("\"coverage\":{"), "{body}");

    let (_, header, body) = call(app(relay), get("/api/v1/coverage")).await;
    assert!(header.is_some());
    assert!(!body.contains("\"coverage\""), "{body}");
    let coverage: CoverageJson = serde_json::from_str(&body).unwrap();
    assert_eq!((coverage.synced, coverage.expected), (1, 2));
}

#[tokio::test]
async fn flows_are_the_relays_own_merge_of_its_agents() {
    // The merged view's aggregator has no records; the relay's handler
    // answers (it refuses one agent's record numbers, the agent's accepts
    // them), with the coverage header.
    let (status, header, body) = call(app(relay(false)), get("/api/flows?after=3")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("after"), "{body}");
    assert_eq!(header.as_deref(), Some("synced=1; expected=2; stale=b"));
    assert!(body.contains("\"coverage\":{"), "{body}");
}

#[tokio::test]
async fn healthz_is_degraded_while_an_agent_is_not_synced() {
    let (_, _, body) = call(app(relay(false)), get("/healthz")).await;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], "degraded", "{body}");
    assert!(
        json["reasons"][0].as_str().unwrap().contains("b (stale)"),
        "{body}"
    );
    let (_, _, body) = call(app(relay(true)), get("/healthz")).await;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], "ok", "{body}");
}

#[tokio::test]
async fn suggestions_through_the_relay_are_one_agents() {
    let relay = relay(true);
    for uri in ["/api/policies", "/api/policies?format=json", "/api/status"] {
        let (_, _, merged) = call(app(relay.clone()), get(uri)).await;
        let (_, _, one) = call(crate::api::app(one_agent()), get(uri)).await;
        let merged = if uri == "/api/policies" {
            merged
        } else {
            let mut json: serde_json::Value = serde_json::from_str(&merged).unwrap();
            json.as_object_mut().unwrap().remove("coverage");
            let mut one: serde_json::Value = serde_json::from_str(&one).unwrap();
            // Readiness is judged at the time of the request.
            for j in [&mut json, &mut one] {
                if let Some(namespaces) = j.get_mut("namespaces").and_then(|n| n.as_array_mut()) {
                    for ns in namespaces {
                        if let Some(o) = ns.as_object_mut() {
                            o.retain(|k, _| !k.contains("since") && !k.contains("age"));
                        }
                    }
                }
            }
            assert_eq!(json, one, "{uri}");
            continue;
        };
        assert_eq!(merged, one, "{uri}");
        assert!(merged.contains("kind: NetworkPolicy"), "{merged}");
    }
}

#[tokio::test]
async fn writes_are_refused_naming_missing_nodes_unless_partial_is_allowed() {
    let policy = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: x\n  namespace: shop\nspec:\n  podSelector: {}\n";
    for (method, uri, body) in [
        ("POST", "/api/policies/enforced", policy),
        ("PUT", "/api/modes/shop", r#"{"mode": "enforce"}"#),
    ] {
        let (status, _, answer) = call(app(relay(false)), write(method, uri, body)).await;
        assert_eq!(status, StatusCode::CONFLICT, "{uri}: {answer}");
        assert!(answer.contains("missing: b (stale)"), "{answer}");
        assert!(answer.contains("allow_partial=true"), "{answer}");

        let partial = format!("{uri}?allow_partial=true");
        let (status, _, answer) = call(app(relay(false)), write(method, &partial, body)).await;
        assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{uri}: {answer}");
        assert!(answer.contains("no kubeconfig"), "{answer}");

        // Full coverage: no refusal (and here no cluster to write to).
        let (status, ..) = call(app(relay(true)), write(method, uri, body)).await;
        assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{uri}");

        // Without the token: refused before anything else.
        let mut unauthenticated = write(method, uri, body);
        unauthenticated.headers_mut().remove("authorization");
        let (status, ..) = call(app(relay(false)), unauthenticated).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
    }
    let (status, _, answer) = call(
        app(relay(false)),
        write("PUT", "/api/modes/shop?allow_partial=maybe", "{}"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
}

#[tokio::test]
async fn modes_come_from_the_namespaces_labels() {
    let relay = relay(true);
    let (_, _, body) = call(app(relay.clone()), get("/api/modes")).await;
    let modes: serde_json::Value = serde_json::from_str(&body).unwrap();
    let expected = serde_json::json!({"data": "audit", "shop": "audit"});
    assert_eq!(modes["modes"], expected, "{body}");
    assert_eq!(modes["default_mode"], "observe");
    // The same modes reach /api/events' `modes` events.
    assert_eq!(
        serde_json::to_value(relay.state.modes()).unwrap()["modes"],
        expected
    );
}

/// The relay keeps the agent's readiness gate: `require_ready` (what
/// `weir mode set` sends unless `--force`) refuses a step up of a
/// namespace the merged view does not judge ready, before anything is
/// written; without it, or for a ready namespace, the label is patched.
#[tokio::test]
async fn mode_set_through_the_relay_refuses_a_namespace_that_is_not_ready_unless_forced() {
    let ((refused, forced, ready), seen) = crate::cmd::kube::mock::serve(async |client| {
        let relay = Relay {
            cluster: Cluster::Kube(client),
            ..relay(true)
        };
        let put = |uri: &str, body: &str| call(app(relay.clone()), write("PUT", uri, body));
        let refused = put(
            "/api/modes/quiet",
            r#"{"mode": "audit", "require_ready": true}"#,
        )
        .await;
        let forced = put("/api/modes/quiet", r#"{"mode": "audit"}"#).await;
        // shop's traffic is old and the suggestion covers it: ready.
        let ready = put(
            "/api/modes/shop",
            r#"{"mode": "enforce", "require_ready": true}"#,
        )
        .await;
        // --no-guard: every node's agent runs the guard, so the skip goes
        // with the label.
        let unguarded = put("/api/modes/shop", r#"{"mode": "enforce", "guard": false}"#).await;
        assert_eq!(unguarded.0, StatusCode::OK, "{}", unguarded.2);
        let entries = relay.state.audit.list(&Default::default()).unwrap();
        let details: Vec<_> = entries
            .iter()
            .map(|e| (e.kind, e.what.as_str(), &e.details["guard"]))
            .collect();
        assert_eq!(
            details,
            [
                (
                    Kind::ModeChange,
                    "observe -> audit",
                    &serde_json::json!(false)
                ),
                (
                    Kind::ModeChange,
                    "audit -> enforce",
                    &serde_json::json!(true)
                ),
                (
                    Kind::ModeChange,
                    "audit -> enforce",
                    &serde_json::json!(false)
                ),
            ],
            "{entries:#?}"
        );
        (refused, forced, ready)
    })
    .await;
    assert_eq!(refused.0, StatusCode::CONFLICT, "{}", refused.2);
    assert!(
        refused.2.contains(
            "namespace quiet is not ready for audit: nothing was learned from or to it yet; \
             force it to proceed"
        ),
        "{}",
        refused.2
    );
    assert_eq!(forced.0, StatusCode::OK, "{}", forced.2);
    assert_eq!(ready.0, StatusCode::OK, "{}", ready.2);
    let patches: Vec<(&str, &str, &serde_json::Value)> = seen
        .iter()
        .map(|(method, path, _, _, body)| (method.as_str(), path.as_str(), body))
        .collect();
    assert_eq!(
        patches,
        [
            (
                "PATCH",
                "/api/v1/namespaces/quiet",
                &serde_json::json!({"metadata": {
                    "labels": {"weir.dev/mode": "audit"},
                    "annotations": {"weir.dev/guard-skip": null},
                }})
            ),
            (
                "PATCH",
                "/api/v1/namespaces/shop",
                &serde_json::json!({"metadata": {
                    "labels": {"weir.dev/mode": "enforce"},
                    "annotations": {"weir.dev/guard-skip": null},
                }})
            ),
            ("PATCH", "/api/v1/namespaces/shop", &seen[2].4),
        ],
        "nothing written for the refused one"
    );
    // The time of the request, which the agents check is fresh.
    let skip = seen[2].4["metadata"]["annotations"]["weir.dev/guard-skip"]
        .as_str()
        .unwrap_or_else(|| panic!("no skip in {:#}", seen[2].4));
    let at = crate::timestamp::parse_rfc3339(skip).unwrap_or_else(|| panic!("{skip}"));
    assert!(
        at <= crate::graph_store::unix_now()
            && at + 60_000_000_000 > crate::graph_store::unix_now(),
        "{skip}"
    );
    assert_eq!(
        seen[2].4,
        serde_json::json!({"metadata": {
            "labels": {"weir.dev/mode": "enforce"},
            "annotations": {"weir.dev/guard-skip": skip},
        }})
    );
}

#[test]
fn coverage_is_added_to_objects_only() {
    let c = CoverageJson {
        expected: 1,
        synced: 1,
        ..CoverageJson::default()
    };
    let added =
        |json: &str| add_coverage(json.as_bytes(), &c).map(|v| String::from_utf8(v).unwrap());
    assert_eq!(
        added(r#"{"a":1}"#).as_deref(),
        Some(r#"{"a":1,"coverage":{"expected":1,"synced":1,"stale":[],"nodes":[]}}"#)
    );
    assert_eq!(
        added(" {} \n").as_deref(),
        Some(r#" {"coverage":{"expected":1,"synced":1,"stale":[],"nodes":[]}} "#.to_owned() + "\n")
            .as_deref()
    );
    assert_eq!(added("[1]"), None);
    assert_eq!(added(""), None);
}

/// Serve `relay` on 127.0.0.1 from a thread of its own (the CLI blocks).
fn serve_relay(relay: Relay) -> reqwest::Url {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app(relay)).await.unwrap();
            });
    });
    url.parse().unwrap()
}

#[test]
fn the_cli_says_which_nodes_are_missing_and_allow_partial_proceeds() {
    use crate::cmd::{
        client::{ServerArgs, TokenArgs},
        policy::{ModeCommand, SetModeArgs, run_mode},
    };
    let server = serve_relay(relay(false));
    let set = |allow_partial: bool| {
        let args = SetModeArgs {
            server: ServerArgs {
                server: server.clone(),
            },
            token: TokenArgs {
                token: Some(TOKEN.to_owned()),
                ..TokenArgs::default()
            },
            namespace: "shop".to_owned(),
            mode: Mode::Enforce,
            kube: false,
            allow_partial,
            no_guard: false,
            force: false,
        };
        format!("{:#}", run_mode(&ModeCommand::Set(args)).unwrap_err())
    };
    let refused = set(false);
    assert!(refused.contains("missing: b (stale)"), "{refused}");
    assert!(refused.contains("--allow-partial"), "{refused}");
    // Past the coverage check: here no cluster to write to.
    let partial = set(true);
    assert!(partial.contains("no kubeconfig"), "{partial}");

    let token = TokenArgs {
        token: Some(TOKEN.to_owned()),
        ..TokenArgs::default()
    }
    .resolve();
    let policy = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: x\n  namespace: shop\nspec:\n  podSelector: {}\n";
    let apply = |allow_partial| {
        let result = crate::cmd::policy::post_policies(
            &server,
            &token,
            policy.to_owned(),
            &["shop".to_owned()],
            allow_partial,
        );
        format!("{:#}", result.unwrap_err())
    };
    assert!(
        apply(false).contains("missing: b (stale)"),
        "{}",
        apply(false)
    );
    assert!(apply(true).contains("no kubeconfig"), "{}", apply(true));
}
