//! Who may change state, the headers every answer carries, and JSON
//! errors for whatever a client sends.

use super::*;

async fn send(
    state: AppState,
    method: &str,
    uri: &str,
    headers: &[(header::HeaderName, &str)],
    body: impl Into<Body>,
) -> (StatusCode, header::HeaderMap, serde_json::Value) {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(name, *value);
    }
    let response = app(state)
        .oneshot(request.body(body.into()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {uri}: not JSON ({e}): {status} {text:?}"));
    (status, headers, json)
}

const BEARER: &str = "Bearer t0ken";

/// Request headers.
type Headers<'a> = Vec<(header::HeaderName, &'a str)>;

#[tokio::test]
async fn auth_says_writes_need_a_token() {
    let (status, _, json) = send(state(), "GET", "/api/auth", &[], Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json, serde_json::json!({"writes_need_token": true}));
}

#[tokio::test]
async fn changes_without_the_right_token_are_401_json() {
    let changes = [
        ("POST", "/api/policies/enforced"),
        ("PUT", "/api/modes/shop"),
        ("DELETE", "/api/policies/enforced/shop/deny"),
        ("PATCH", "/api/graph"),
        ("POST", "/api/nope"),
    ];
    for (method, uri) in changes {
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Bearer t0ke"),
            Some("Bearer t0ken2"),
            Some("Basic dDBrZW4="),
            Some("t0ken"),
            Some("Bearer"),
        ] {
            let headers: Vec<(header::HeaderName, &str)> = auth
                .map(|a| (header::AUTHORIZATION, a))
                .into_iter()
                .collect();
            let (status, headers, json) =
                send(state(), method, uri, &headers, r#"{"mode": "audit"}"#).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri} {auth:?}");
            assert_eq!(headers.get(header::WWW_AUTHENTICATE).unwrap(), "Bearer");
            assert_eq!(json["status"], 401);
            assert!(json["error"].as_str().unwrap().contains("token"), "{json}");
        }
    }
    // With the token the request reaches its handler (no enforcer here).
    let (status, _, json) = send(
        state(),
        "PUT",
        "/api/modes/shop",
        &[
            (header::AUTHORIZATION, BEARER),
            (header::CONTENT_TYPE, "application/json"),
        ],
        r#"{"mode": "audit"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{json}");
}

#[tokio::test]
async fn reads_and_verify_need_no_token() {
    let (status, _, _) = send(state(), "GET", "/api/graph", &[], Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, json) = send(
        state(),
        "POST",
        "/api/verify",
        &[],
        "kind: NetworkPolicy\nmetadata: {name: x, namespace: data}\nspec: {podSelector: {}}\n",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
}

#[tokio::test]
async fn other_host_names_are_refused_with_403_json() {
    let hosts = host::AllowedHosts::new(&["weir.weir-system.svc".to_owned()]).unwrap();
    let paths = [
        "/api/graph",
        "/api/flows",
        "/api/events",
        "/api/flows?follow=true",
        "/healthz",
        "/",
    ];
    for path in paths {
        for refused in [
            "attacker.example:9090",
            "attacker.example",
            "127.0.0.1.nip.io:9090",
        ] {
            let (status, headers, json) = send(
                state().with_allowed_hosts(hosts.clone()),
                "GET",
                path,
                &[(header::HOST, refused)],
                Body::empty(),
            )
            .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path} {refused}");
            assert_eq!(json["status"], 403);
            assert!(json["error"].as_str().unwrap().contains(refused), "{json}");
            assert_eq!(headers.get("x-content-type-options").unwrap(), "nosniff");
        }
    }
    // A change from a rebound name is refused before its token is looked at.
    let (status, _, _) = send(
        state(),
        "PUT",
        "/api/modes/shop",
        &[
            (header::HOST, "attacker.example:9090"),
            (header::AUTHORIZATION, BEARER),
        ],
        r#"{"mode": "enforce"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for accepted in [
        "127.0.0.1:9090",
        "127.0.0.1",
        "[::1]:9090",
        "10.244.0.7:9090",
        "localhost:9090",
        "localhost",
        "weir.weir-system.svc:9090",
    ] {
        let response = app(state().with_allowed_hosts(hosts.clone()))
            .oneshot(
                Request::get("/api/graph")
                    .header(header::HOST, accepted)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{accepted}");
    }
}

#[tokio::test]
async fn cross_origin_reads_and_streams_are_refused() {
    for path in ["/api/graph", "/api/events", "/api/flows?follow=true"] {
        let (status, _, json) = send(
            state(),
            "GET",
            path,
            &[
                (header::HOST, "127.0.0.1:9090"),
                (header::ORIGIN, "http://evil.example"),
            ],
            Body::empty(),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {json}");
    }
    let (status, _, json) = send(
        state(),
        "POST",
        "/api/verify",
        &[
            (header::HOST, "127.0.0.1:9090"),
            (header::ORIGIN, "http://evil.example"),
        ],
        "kind: NetworkPolicy\nmetadata: {name: x, namespace: data}\nspec: {podSelector: {}}\n",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{json}");
}

#[tokio::test]
async fn cross_origin_changes_are_refused_even_with_the_token() {
    for origin in ["http://evil.example", "null", "http://127.0.0.1:9091"] {
        let (status, _, json) = send(
            state(),
            "PUT",
            "/api/modes/shop",
            &[
                (header::HOST, "127.0.0.1:9090"),
                (header::ORIGIN, origin),
                (header::AUTHORIZATION, BEARER),
                (header::CONTENT_TYPE, "application/json"),
            ],
            r#"{"mode": "enforce"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{origin}");
        assert_eq!(json["status"], 403);
        assert!(json["error"].as_str().unwrap().contains(origin), "{json}");
    }
    // The UI's own origin passes.
    let (status, _, _) = send(
        state(),
        "PUT",
        "/api/modes/shop",
        &[
            (header::HOST, "127.0.0.1:9090"),
            (header::ORIGIN, "http://127.0.0.1:9090"),
            (header::AUTHORIZATION, BEARER),
            (header::CONTENT_TYPE, "application/json"),
        ],
        r#"{"mode": "enforce"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn every_answer_has_the_security_headers_and_no_cors() {
    let cases: [(&str, &str, Headers<'_>); 6] = [
        ("GET", "/api/graph", vec![]),
        ("GET", "/api/nope", vec![]),
        ("GET", "/healthz", vec![]),
        ("POST", "/api/policies/enforced", vec![]),
        (
            "OPTIONS",
            "/api/modes/shop",
            vec![
                (header::ORIGIN, "http://evil.example"),
                (header::ACCESS_CONTROL_REQUEST_METHOD, "PUT"),
            ],
        ),
        (
            "GET",
            "/api/graph",
            vec![(header::ORIGIN, "http://evil.example")],
        ),
    ];
    for (method, uri, headers) in cases {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = app(state())
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let h = response.headers();
        assert_eq!(
            h.get("x-content-type-options").unwrap(),
            "nosniff",
            "{method} {uri}"
        );
        assert_eq!(h.get("referrer-policy").unwrap(), "no-referrer");
        assert_eq!(h.get("x-frame-options").unwrap(), "DENY");
        assert!(
            !h.keys().any(|k| k.as_str().starts_with("access-control-")),
            "{method} {uri}: {h:?}"
        );
    }
}

#[tokio::test]
async fn malformed_requests_are_4xx_json() {
    let token = (header::AUTHORIZATION, BEARER);
    let json_type = (header::CONTENT_TYPE, "application/json");
    let cases: Vec<(&str, &str, Headers<'_>, Body, StatusCode)> = vec![
        (
            "GET",
            "/api/verify",
            vec![],
            Body::empty(),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "DELETE",
            "/api/graph",
            vec![token.clone()],
            Body::empty(),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "PUT",
            "/api/modes/shop",
            vec![token.clone(), json_type.clone()],
            Body::from("{"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "PUT",
            "/api/modes/shop",
            vec![token.clone(), json_type.clone()],
            Body::from(r#"{"mode": 3}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "PUT",
            "/api/modes/shop",
            vec![token.clone(), json_type.clone()],
            Body::from(r#"{"mode": "audit", "x": 1}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "PUT",
            "/api/modes/shop",
            vec![token.clone()],
            Body::from(r#"{"mode": "audit"}"#),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "PUT",
            "/api/modes/shop",
            vec![token.clone(), json_type.clone()],
            Body::from(r#"{"mode": "block"}"#),
            StatusCode::BAD_REQUEST,
        ),
        (
            "DELETE",
            "/api/policies/enforced/%FF/x",
            vec![token.clone()],
            Body::empty(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/verify",
            vec![],
            Body::from(vec![0xff, 0xfe]),
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/verify",
            vec![],
            Body::from("kind: NetworkPolicy\n  bad: [\n"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "GET",
            "/api/flows?last=-1",
            vec![],
            Body::empty(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/api/graph?since=%FF",
            vec![],
            Body::empty(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/%FF",
            vec![],
            Body::empty(),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (method, uri, headers, body, expected) in cases {
        let (status, _, json) = send(state(), method, uri, &headers, body).await;
        assert_eq!(status, expected, "{method} {uri}: {json}");
        assert_eq!(json["status"], expected.as_u16(), "{method} {uri}");
        assert!(
            !json["error"].as_str().unwrap_or_default().is_empty(),
            "{json}"
        );
    }
}

#[tokio::test]
async fn bad_body_values_are_named_as_body_fields_and_not_echoed_whole() {
    let auth = [
        (header::AUTHORIZATION, BEARER),
        (header::CONTENT_TYPE, "application/json"),
    ];
    let (status, _, json) = send(
        state(),
        "PUT",
        "/api/modes/shop",
        &auth,
        r#"{"mode": "block"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let error = json["error"].as_str().unwrap();
    assert!(
        error.contains("request body: field `mode`") && error.contains("\"block\""),
        "{error}"
    );
    assert!(!error.contains("query"), "{error}");

    let huge = "x".repeat(1024 * 1024);
    let cases = [
        (
            "PUT",
            "/api/modes/shop",
            format!(r#"{{"mode": "{huge}"}}"#),
            "expected observe, audit or enforce",
        ),
        (
            "PUT",
            "/api/modes/shop",
            format!(r#"{{"mode": "audit", "{huge}": 1}}"#),
            "bytes in all",
        ),
        (
            "POST",
            "/api/verify",
            format!(
                "kind: NetworkPolicy\nmetadata: {{name: {huge}, namespace: data}}\nspec: {{podSelector: {{}}, policyTypes: [{huge}]}}\n"
            ),
            "",
        ),
    ];
    for (method, uri, body, says) in cases {
        let (status, _, json) = send(state(), method, uri, &auth, body).await;
        assert!(status.is_client_error(), "{method} {uri}: {status}");
        let error = json["error"].as_str().unwrap();
        assert!(
            error.len() <= error::MAX_MESSAGE + 64,
            "{method} {uri}: an error of {} bytes",
            error.len()
        );
        assert!(error.contains(says), "{method} {uri}: {error}");
    }
}
