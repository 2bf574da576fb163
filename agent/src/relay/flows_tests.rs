//! The relay's `/api/flows` over two agents' real APIs: one connection
//! between their nodes shown once, filters passed on, a followed stream
//! that carries what the agents see next.

use std::{net::IpAddr, sync::Arc, time::Duration};

use axum::{Router, routing::get};

use super::flows::{FlowSource, flows};
use crate::{
    aggregator::{Aggregator, Options, testing::*},
    api::{AppState, SharedResolver, app, wire::FlowJson},
    flow::Initiator,
    metrics::Metrics,
};

fn aggregator(node: &str) -> Arc<Aggregator> {
    let options = Options {
        node_name: node.into(),
        ..Options::default()
    };
    Arc::new(Aggregator::new(options, Arc::new(Metrics::new())))
}

async fn serve(router: Router) -> reqwest::Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    url.parse().expect("url")
}

/// node-1 runs the frontend, node-2 the database; the frontend opened a
/// connection to the database (both nodes report it) and an external
/// client one to the database (node-2 alone).
async fn cluster() -> (reqwest::Url, Arc<Aggregator>, Arc<Metrics>) {
    let one = aggregator("node-1");
    let at_one = shop().on_node("10.0.1.9", "node-2");
    one.fold(
        &obs(1, "10.0.0.1:43210", "10.0.1.9:5432", Initiator::Local),
        &at_one,
    );
    let two = aggregator("node-2");
    let at_two = two_resolver();
    let mut at_db = obs(9, "10.0.1.9:5432", "10.0.0.1:43210", Initiator::Remote);
    at_db.first_seen += 1_000;
    two.fold(&at_db, &at_two);
    let mut external = obs(9, "10.0.1.9:5432", "203.0.113.5:40000", Initiator::Remote);
    external.first_seen += 2_000_000_000;
    two.fold(&external, &at_two);
    let mut sources = Vec::new();
    for (node, agg) in [("node-1", &one), ("node-2", &two)] {
        let state = AppState::new(
            Arc::clone(agg),
            Arc::new(Metrics::new()),
            SharedResolver::default(),
            node,
        );
        sources.push(FlowSource {
            node: node.to_owned(),
            client: reqwest::Client::new(),
            base: serve(app(state)).await,
        });
    }
    let metrics = Arc::new(Metrics::new());
    let relay_metrics = Arc::clone(&metrics);
    let relay = Router::new().route(
        "/api/flows",
        get(move |query| flows(sources.clone(), Arc::clone(&relay_metrics), query)),
    );
    (serve(relay).await, two, metrics)
}

/// node-2's view: the database attached, the frontend on node-1.
fn two_resolver() -> FakeResolver {
    FakeResolver::default()
        .pod("data", "db", "db-0", "10.0.1.9", Some(9))
        .pod("shop", "frontend", "frontend-a", "10.0.0.1", None)
        .on_node("10.0.0.1", "node-1")
}

/// (node, source address, direction) of each record.
fn summary(flows: &[FlowJson]) -> Vec<(String, IpAddr, String)> {
    flows
        .iter()
        .map(|f| {
            (
                f.node_name.clone(),
                f.ip.source,
                f.traffic_direction.clone(),
            )
        })
        .collect()
}

async fn get_flows(relay: &reqwest::Url, query: &str) -> Vec<FlowJson> {
    let url = relay.join(&format!("/api/flows?{query}")).expect("url");
    let response = reqwest::get(url).await.expect("the relay answers");
    assert_eq!(response.status(), 200);
    response.json().await.expect("flow records")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_node_connection_is_shown_once_and_filters_reach_the_agents() {
    let (relay, _, metrics) = cluster().await;
    let frontend: IpAddr = "10.0.0.1".parse().expect("address");
    let external: IpAddr = "203.0.113.5".parse().expect("address");
    assert_eq!(
        summary(&get_flows(&relay, "").await),
        [
            ("node-1".into(), frontend, "EGRESS".into()),
            ("node-2".into(), external, "INGRESS".into()),
        ]
    );
    // node-2's report of the frontend's connection was hidden, and said so.
    let hidden = r#"weir_relay_stream_records_total{outcome="responder_side"} 1"#;
    assert!(metrics.encode().contains(hidden), "{}", metrics.encode());
    assert_eq!(
        summary(&get_flows(&relay, "both_sides=true").await),
        [
            ("node-1".into(), frontend, "EGRESS".into()),
            ("node-2".into(), frontend, "INGRESS".into()),
            ("node-2".into(), external, "INGRESS".into()),
        ]
    );
    assert_eq!(
        get_flows(&relay, "namespace=shop&both_sides=true")
            .await
            .len(),
        2
    );
    assert_eq!(get_flows(&relay, "last=1").await.len(), 1);
    let bad = reqwest::get(relay.join("/api/flows?after=3").expect("url"))
        .await
        .expect("answer");
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.expect("body").contains("after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_stream_merges_what_the_agents_see_next() {
    let (relay, two, _) = cluster().await;
    let url = relay.join("/api/flows?follow=true&last=10").expect("url");
    let mut response = reqwest::get(url).await.expect("the relay answers");
    assert_eq!(response.status(), 200);
    // A new connection on node-2, after the stream began.
    let later = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut o = obs(9, "10.0.1.9:5432", "198.51.100.7:41000", Initiator::Remote);
        o.first_seen += 3_000_000_000;
        two.fold(&o, &two_resolver());
    });
    let mut text = String::new();
    let read = async {
        while text.lines().count() < 3 {
            let chunk = response.chunk().await.expect("stream").expect("more");
            text.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap_or_else(|_| panic!("three records within 10 s, got:\n{text}"));
    later.await.expect("fold");
    let records: Vec<FlowJson> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a record"))
        .collect();
    let sources: Vec<String> = records.iter().map(|f| f.ip.source.to_string()).collect();
    assert_eq!(sources, ["10.0.0.1", "203.0.113.5", "198.51.100.7"]);
    assert!(records.iter().skip(1).all(|f| f.node_name == "node-2"));
}
