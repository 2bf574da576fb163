//! Property-based fuzzing of every parser of user input (cargo-fuzz needs
//! nightly; proptest runs on stable and shrinks what it finds): policy
//! YAML, lab YAML, flow JSON lines and the API's query strings. Inputs are
//! built from each format's own vocabulary, so they reach past the first
//! syntax error. The property: no panic, and every refusal is an error
//! value (a 4xx with a JSON body for the API), never a crash or a 500.
//!
//! `PROPTEST_CASES=N cargo test -p weir --test fuzz` runs N cases per
//! target (256 by default).

use std::{path::Path, sync::Arc};

use axum::{body::Body, http::Request};
use http_body_util::BodyExt as _;
use proptest::prelude::*;
use tower::ServiceExt as _;
use weir_agent::{
    aggregator::{Aggregator, Options},
    api::{self, AppState},
    learn::{flow_log, policies},
    metrics::Metrics,
};
use weir_generator::cluster::Cluster;
use weir_lab::spec::parse_str;

/// Text made of `tokens`, at most `len` of them.
fn text(tokens: &'static [&'static str], len: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            9 => prop::sample::select(tokens).prop_map(str::to_owned),
            1 => "\\PC{0,4}",
        ],
        0..len,
    )
    .prop_map(|parts| parts.concat())
}

const YAML: &[&str] = &[
    "\n",
    "\n",
    "\n",
    "  ",
    "  ",
    "- ",
    ": ",
    ", ",
    "{",
    "}",
    "[",
    "]",
    "---\n",
    "\"",
    "'",
    "#",
    "&a ",
    "*a",
    "!!binary ",
    "!!str ",
    "<<: ",
    "? ",
    "|\n",
    "~",
    "null",
    "true",
    "0",
    "-1",
    "65535",
    "65536",
    "1e9",
    "apiVersion",
    "v1",
    "apps/v1",
    "networking.k8s.io/v1",
    "lab.weir.dev/v1alpha1",
    "kind",
    "NetworkPolicy",
    "NetworkPolicyList",
    "List",
    "Pod",
    "Namespace",
    "Service",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "Lab",
    "ExternalHost",
    "items",
    "metadata",
    "name",
    "namespace",
    "labels",
    "annotations",
    "app",
    "shop",
    "web",
    "kube-system",
    "spec",
    "podSelector",
    "namespaceSelector",
    "matchLabels",
    "matchExpressions",
    "key",
    "operator",
    "In",
    "NotIn",
    "Exists",
    "values",
    "policyTypes",
    "Ingress",
    "Egress",
    "ingress",
    "egress",
    "from",
    "to",
    "ports",
    "port",
    "endPort",
    "protocol",
    "TCP",
    "UDP",
    "SCTP",
    "http",
    "ipBlock",
    "cidr",
    "except",
    "10.0.0.0/8",
    "10.0.0.1/32",
    "0.0.0.0/0",
    "::/0",
    "2001:db8::/33",
    "192.0.2.10",
    "fd00:88::5",
    "replicas",
    "selector",
    "template",
    "containers",
    "containerPort",
    "status",
    "podIP",
    "podIPs",
    "ip",
    "clusterIP",
    "clusterIPs",
    "None",
    "targetPort",
    "type",
    "ClusterIP",
    "ips",
    "podCIDR",
    "serviceCIDR",
    "dualStack",
    "10.88.0.0/16",
    "10.96.0.0/28",
    "nodeName",
    "weir.dev/host-veth",
];

const JSON: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "\n",
    "null",
    "true",
    "false",
    "0",
    "-1",
    "65536",
    "1e400",
    "\"flow\"",
    "\"IP\"",
    "\"source\"",
    "\"destination\"",
    "\"10.0.0.1\"",
    "\"2001:db8::1\"",
    "\"l4\"",
    "\"TCP\"",
    "\"UDP\"",
    "\"ICMPv4\"",
    "\"destination_port\"",
    "\"flags\"",
    "\"SYN\"",
    "\"ACK\"",
    "\"time\"",
    "\"2024-01-02T03:04:05Z\"",
    "\"x\"",
    "\"verdict\"",
    "\"DROPPED\"",
    "\"FORWARDED\"",
    "\"Type\"",
    "\"L3_L4\"",
    "\"traffic_direction\"",
    "\"EGRESS\"",
    "\"INGRESS\"",
    "\"is_reply\"",
    "\"weir\"",
    "\"initiator\"",
    "\"local\"",
    "\"remote\"",
    "\"new_flow\"",
    "\"packets\"",
    "\"first_seen\"",
    "\"namespace\"",
    "\"pod_name\"",
    "\"shop\"",
    "\"labels\"",
    "\"k8s:app=web\"",
    "\"workloads\"",
    "\"name\"",
    "\"kind\"",
    "\"Deployment\"",
    "\"lost_events\"",
];

const QUERY: &[&str] = &[
    "&",
    "=",
    "%",
    "%00",
    "%2F",
    "%23",
    "+",
    ",",
    "namespace",
    "pod",
    "node",
    "id",
    "source",
    "target",
    "edge",
    "verdict",
    "forwarded",
    "audit",
    "dropped",
    "last",
    "since",
    "format",
    "yaml",
    "json",
    "dot",
    "aggregate_external",
    "24,64",
    "service_ports",
    "both",
    "target",
    "replace",
    "shop",
    "shop/web",
    "shop%2Fweb",
    "->",
    "10.0.0.1",
    "0",
    "-1",
    "99999999999999999999",
    "1h",
    "2024-01-02T03:04:05Z",
    "protocol",
    "TCP",
    "port",
    "80",
    "..",
    "x",
];

/// A valid policy with bytes of the format's vocabulary spliced in.
fn mutated_policy() -> impl Strategy<Value = String> {
    const POLICY: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: web\n  namespace: shop\nspec:\n  podSelector:\n    matchLabels: {app: web}\n  policyTypes: [Ingress, Egress]\n  ingress:\n  - from:\n    - podSelector: {matchExpressions: [{key: app, operator: In, values: [a]}]}\n      namespaceSelector: {}\n    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}\n    ports: [{port: 80, endPort: 90, protocol: TCP}, {port: http}]\n  egress:\n  - to: []\n";
    (0..POLICY.len(), 0..40usize, text(YAML, 4)).prop_map(|(at, cut, insert)| {
        let mut at = at;
        while !POLICY.is_char_boundary(at) {
            at -= 1;
        }
        let end = (at + cut).min(POLICY.len());
        format!("{}{insert}{}", &POLICY[..at], &POLICY[end..])
    })
}

fn agent() -> AppState {
    let metrics = Arc::new(Metrics::new());
    AppState::new(
        Arc::new(Aggregator::new(Options::default(), Arc::clone(&metrics))),
        metrics,
        Arc::default(),
        "node",
    )
}

proptest! {
    #[test]
    fn policy_yaml(text in prop_oneof![text(YAML, 120), mutated_policy()]) {
        if let Ok(loaded) = policies::parse("p.yaml", &text) {
            // Validation of whatever parsed must not panic either.
            let _ = policies::policy_set(loaded);
        }
    }

    #[test]
    fn lab_yaml(text in text(YAML, 160)) {
        let _ = parse_str(Path::new("lab.yaml"), &text);
    }

    #[test]
    fn flow_json_lines(text in text(JSON, 160)) {
        let parsed = flow_log::parse(&text, &Cluster::default());
        prop_assert!(parsed.usable() <= parsed.flows);
    }

    #[test]
    fn api_query_strings(
        path in prop::sample::select(&[
            "/api/flows", "/api/graph", "/api/edge", "/api/node", "/api/policies",
            "/api/policies/diff", "/api/verify/suggestion", "/api/status", "/api/impact",
            "/api/policies/enforced", "/api/modes", "/api/auth",
        ][..]),
        query in text(QUERY, 12),
    ) {
        // Only what a URI can carry: the query is the client's bytes, the
        // parser's input; spaces and controls are refused by the URI type.
        let query: String = query.chars().filter(|c| c.is_ascii_graphic()).collect();
        let Ok(request) = Request::builder().uri(format!("{path}?{query}")).body(Body::empty()) else {
            return Ok(());
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (status, body) = runtime.block_on(async {
            let response = api::app(agent()).oneshot(request).await.unwrap();
            let status = response.status();
            let body = if status.is_success() {
                Vec::new()
            } else {
                response.into_body().collect().await.unwrap().to_bytes().to_vec()
            };
            (status, body)
        });
        prop_assert!(!status.is_server_error() || status.as_u16() == 503, "{path}?{query}: {status}");
        if status.is_client_error() {
            let json: Result<serde_json::Value, _> = serde_json::from_slice(&body);
            prop_assert!(json.is_ok_and(|j| j["error"].is_string()), "{path}?{query}: {}", String::from_utf8_lossy(&body));
        }
    }
}
