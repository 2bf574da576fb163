//! The server over real TCP: connection limits, timeouts, and the JSON
//! errors of requests over the limits.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::oneshot,
};

use super::*;
use crate::api::{
    limits::RequestLimits,
    server::{ServerOptions, serve},
};

/// A server of the test state, stopped when the guard drops.
struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(options: ServerOptions, limits: RequestLimits) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = state().with_limits(limits);
        let aggregator = Arc::clone(&state.aggregator);
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            serve(listener, app(state), options, async move {
                let _ = stopped.await;
                aggregator.close_followers();
            })
            .await
            .unwrap();
        });
        Self {
            addr,
            stop: Some(stop),
            done,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(5), &mut self.done)
            .await
            .expect("the server stops once its connections are done")
            .unwrap();
    }
}

fn options(max_connections: usize, header_read_timeout: Duration) -> ServerOptions {
    ServerOptions {
        max_connections,
        header_read_timeout,
    }
}

/// Read until the peer closes or `within` passes; `None` if it did not
/// close.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut all = Vec::new();
    let read = async {
        let mut buf = [0; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read).await.ok()?;
    Some(all)
}

/// Send `request` (a connection that closes after it) and return the
/// status and the body parsed as JSON.
async fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before all of a large request is
    // written: the answer is what matters.
    let _ = stream.write_all(request).await;
    let answer = read_to_close(&mut stream, Duration::from_secs(5))
        .await
        .expect("the server answers and closes");
    parse(&answer)
}

fn parse(answer: &[u8]) -> (u16, serde_json::Value) {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head:?}"));
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    (status, json)
}

fn get(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}\r\n")
        .into_bytes()
}

#[tokio::test]
async fn half_sent_heads_and_idle_connections_are_closed_after_the_header_timeout() {
    let server = Running::start(
        options(16, Duration::from_millis(300)),
        RequestLimits::default(),
    )
    .await;
    let mut half = TcpStream::connect(server.addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .unwrap();
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    // A keep-alive connection after its answer gets the same deadline.
    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    for stream in [&mut half, &mut idle, &mut kept] {
        assert!(
            read_to_close(stream, Duration::from_secs(3))
                .await
                .is_some(),
            "a connection without a whole request head is still open after 3s"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let server = Running::start(
        options(2, Duration::from_secs(60)),
        RequestLimits::default(),
    )
    .await;
    let first = TcpStream::connect(server.addr).await.unwrap();
    let _second = TcpStream::connect(server.addr).await.unwrap();
    // Both take their slot before the third arrives.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    third.write_all(&get("/healthz", "")).await.unwrap();
    let mut buf = [0; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf))
            .await
            .is_err(),
        "a third connection was served while two held the only slots"
    );
    drop(first);
    let answer = read_to_close(&mut third, Duration::from_secs(3))
        .await
        .expect("served once a slot is free");
    let (status, json) = parse(&[&buf[..], &answer].concat());
    assert_eq!((status, &json["status"]), (200, &serde_json::json!("ok")));
    server.stop().await;
}

#[tokio::test]
async fn heads_over_the_limits_are_json_errors() {
    let server = Running::start(
        options(16, Duration::from_secs(5)),
        RequestLimits::default(),
    )
    .await;
    let long_uri = format!("/api/graph?namespace={}", "a".repeat(limits::MAX_URI_BYTES));
    let (status, json) = exchange(server.addr, &get(&long_uri, "")).await;
    assert_eq!(status, 414, "{json}");
    assert!(json["error"].as_str().unwrap().contains("8192"), "{json}");
    let many: String = (0..limits::MAX_HEADERS + 20)
        .map(|i| format!("X-H{i}: v\r\n"))
        .collect();
    let (status, json) = exchange(server.addr, &get("/healthz", &many)).await;
    assert_eq!(status, 431, "{json}");
    assert!(
        json["error"].as_str().unwrap().contains("100 fields"),
        "{json}"
    );
    let large = format!("X-Large: {}\r\n", "v".repeat(limits::MAX_HEADER_BYTES));
    let (status, json) = exchange(server.addr, &get("/healthz", &large)).await;
    assert_eq!(status, 431, "{json}");
    assert_eq!(json["status"], 431);
    server.stop().await;
}

#[tokio::test]
async fn bodies_over_the_size_limit_are_413_json_naming_the_flag() {
    let server = Running::start(
        options(16, Duration::from_secs(5)),
        RequestLimits::new(1024, Duration::from_secs(5)),
    )
    .await;
    let body = "#".repeat(2000);
    let declared = format!(
        "POST /api/verify HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let chunked = format!(
        "POST /api/verify HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    for request in [declared, chunked] {
        let (status, json) = exchange(server.addr, request.as_bytes()).await;
        assert_eq!(status, 413, "{json}");
        let error = json["error"].as_str().unwrap();
        assert!(
            error.contains("1 KiB") && error.contains("--max-body-size"),
            "{error}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn slow_bodies_are_cut_off_with_a_408() {
    let server = Running::start(
        options(16, Duration::from_secs(5)),
        RequestLimits::new(1024, Duration::from_millis(300)),
    )
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(
            b"POST /api/verify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nkind: ",
        )
        .await
        .unwrap();
    let answer = read_to_close(&mut stream, Duration::from_secs(3))
        .await
        .expect("a body that never completes is cut off");
    let (status, json) = parse(&answer);
    assert_eq!(status, 408, "{json}");
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("--body-read-timeout"),
        "{json}"
    );
    server.stop().await;
}

#[tokio::test]
async fn streams_outlive_the_read_timeouts() {
    let server = Running::start(
        options(16, Duration::from_millis(200)),
        RequestLimits::new(1024, Duration::from_millis(200)),
    )
    .await;
    for path in ["/api/events", "/api/flows?follow=true"] {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut first = [0; 12];
        stream.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"HTTP/1.1 200", "{path}");
        assert!(
            read_to_close(&mut stream, Duration::from_secs(1))
                .await
                .is_none(),
            "{path}: the stream was closed within 1s, with read timeouts of 200ms"
        );
    }
    server.stop().await;
}
