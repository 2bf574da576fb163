//! The relay listener over real TCP and real TLS: what a client with the
//! relay's certificate reads, and who is refused at the handshake.

use std::{
    net::SocketAddr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, pem::PemObject as _},
};
use tokio::sync::oneshot;

use super::*;
use crate::{
    api::{
        server::{ServerOptions, Tls, serve_tls},
        wire::ContributionJson,
    },
    tls::{self, RelayTls, agent_server_name, agent_url, generate},
};

/// `weir certs --node a --node b` into a temporary directory.
fn certs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let certs = generate::generate(
        &["a".to_owned(), "b".to_owned()],
        Duration::from_secs(86_400),
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    generate::write(&certs, dir.path(), false).unwrap();
    dir
}

/// The test state's relay listener with `agent_dir`'s certificate, stopped
/// when [`Listener::stop`] is called.
struct Listener {
    addr: SocketAddr,
    state: AppState,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

impl Listener {
    async fn start(agent_dir: &Path) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = state();
        let tls = Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(tls::server_config(agent_dir).unwrap()),
            metrics: Arc::clone(&state.metrics),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let (app, aggregator) = (relay_app(state.clone()), Arc::clone(&state.aggregator));
        let options = ServerOptions {
            max_connections: 16,
            header_read_timeout: Duration::from_secs(5),
        };
        let done = tokio::spawn(async move {
            serve_tls(listener, app, options, tls, async move {
                let _ = stopped.await;
                aggregator.close_followers();
            })
            .await
            .unwrap();
        });
        Self {
            addr,
            state,
            stop: Some(stop),
            done,
        }
    }

    /// `path` on node `node`'s listener, by name.
    fn url(&self, node: &str, path: &str) -> String {
        format!("{}{path}", agent_url(node, self.addr.port()))
    }

    /// Wait until `reason` was counted `count` times (the server counts
    /// after the client already saw the refusal).
    async fn counted(&self, reason: &'static str, count: u64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.state.metrics.relay_handshake_failures(reason) != count {
            assert!(
                Instant::now() < deadline,
                "{reason} handshake failures: {} instead of {count}",
                self.state.metrics.relay_handshake_failures(reason)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(5), &mut self.done)
            .await
            .expect("the listener stops")
            .unwrap();
    }
}

/// The relay's client from `dir`, reaching node `node` at `addr`.
fn relay(dir: &Path, node: &str, addr: SocketAddr) -> reqwest::Client {
    RelayTls::load(dir)
        .unwrap()
        .agent_client(node, addr)
        .unwrap()
}

/// A client that trusts `ca_dir`'s CA and presents no certificate.
fn anonymous(ca_dir: &Path, node: &str, addr: SocketAddr) -> reqwest::Client {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_dir.join(tls::CA_FILE)).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .resolve(&agent_server_name(node), addr)
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_relay_reads_the_contribution_over_mutual_tls() {
    let certs = certs();
    let listener = Listener::start(&certs.path().join("agents/a")).await;
    let client = relay(&certs.path().join("relay"), "a", listener.addr);

    let answer = client
        .get(listener.url("a", "/api/v1/contribution"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.headers()[header::CONTENT_TYPE.as_str()],
        "application/json"
    );
    let over_tls = answer.text().await.unwrap();
    let contribution: ContributionJson = serde_json::from_str(&over_tls).unwrap();
    assert_eq!(contribution.node, "node-1");
    assert!(!contribution.edges.is_empty());
    // The same answer as the API's.
    let plain = app(listener.state.clone())
        .oneshot(
            Request::get("/api/v1/contribution")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let plain = plain.into_body().collect().await.unwrap().to_bytes();
    let without_time = |json: &[u8]| {
        let mut value: serde_json::Value = serde_json::from_slice(json).unwrap();
        value
            .as_object_mut()
            .unwrap()
            .remove("generated_at")
            .unwrap();
        value
    };
    assert_eq!(without_time(over_tls.as_bytes()), without_time(&plain));

    for (path, kind) in [
        ("/healthz", "application/json"),
        ("/api/flows?last=5", "application/json"),
        ("/api/flows?follow=true&last=1", "application/x-ndjson"),
        ("/api/events", "text/event-stream"),
    ] {
        let answer = client.get(listener.url("a", path)).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{path}");
        let content_type = answer.headers()[header::CONTENT_TYPE.as_str()]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
    }
    assert_eq!(
        listener
            .state
            .metrics
            .relay_handshake_failures("certificate"),
        0
    );
    listener.stop().await;
}

#[tokio::test]
async fn the_relay_listener_serves_reads_only() {
    let certs = certs();
    let listener = Listener::start(&certs.path().join("agents/a")).await;
    let client = relay(&certs.path().join("relay"), "a", listener.addr);
    let status = |request: reqwest::RequestBuilder| async move {
        request.send().await.unwrap().status().as_u16()
    };
    for path in ["/api/graph", "/api/policies", "/api/modes", "/metrics", "/"] {
        assert_eq!(
            status(client.get(listener.url("a", path))).await,
            404,
            "{path}"
        );
    }
    assert_eq!(
        status(client.post(listener.url("a", "/api/policies/enforced"))).await,
        404
    );
    assert_eq!(
        status(client.put(listener.url("a", "/api/modes/shop"))).await,
        404
    );
    assert_eq!(
        status(client.post(listener.url("a", "/api/v1/contribution"))).await,
        405
    );
    listener.stop().await;
}

#[tokio::test]
async fn clients_without_a_certificate_of_the_ca_are_refused() {
    let (ours, theirs) = (certs(), certs());
    let listener = Listener::start(&ours.path().join("agents/a")).await;
    let contribution = listener.url("a", "/api/v1/contribution");

    // No certificate (trusting the right CA).
    let error = anonymous(ours.path(), "a", listener.addr)
        .get(&contribution)
        .send()
        .await
        .unwrap_err();
    assert!(!error.is_status(), "{error}");
    listener.counted("certificate", 1).await;

    // A relay certificate from another CA (trusting ours).
    let mut mixed = theirs.path().join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    for file in [tls::CERT_FILE, tls::KEY_FILE] {
        std::fs::copy(theirs.path().join("relay").join(file), mixed.join(file)).unwrap();
    }
    std::fs::copy(ours.path().join(tls::CA_FILE), mixed.join(tls::CA_FILE)).unwrap();
    relay(&mixed, "a", listener.addr)
        .get(&contribution)
        .send()
        .await
        .unwrap_err();
    listener.counted("certificate", 2).await;

    // Not TLS at all.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/api/v1/contribution", listener.addr))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
    listener.counted("protocol", 1).await;

    // The listener goes on serving the relay.
    mixed = ours.path().join("relay");
    let answer = relay(&mixed, "a", listener.addr)
        .get(&contribution)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    listener.stop().await;
}

#[tokio::test]
async fn the_relay_refuses_agents_it_cannot_trust() {
    let (ours, theirs) = (certs(), certs());
    let listener = Listener::start(&ours.path().join("agents/a")).await;

    // A relay whose CA did not sign the agent.
    let error = relay(&theirs.path().join("relay"), "a", listener.addr)
        .get(listener.url("a", "/api/v1/contribution"))
        .send()
        .await
        .unwrap_err();
    let error = crate::error_chain::chain(&error);
    assert!(error.contains("UnknownIssuer"), "{error}");

    // Node a's agent where node b is expected.
    let error = relay(&ours.path().join("relay"), "b", listener.addr)
        .get(listener.url("b", "/api/v1/contribution"))
        .send()
        .await
        .unwrap_err();
    let error = crate::error_chain::chain(&error);
    assert!(error.contains("not valid for name"), "{error}");
    listener.stop().await;
}
