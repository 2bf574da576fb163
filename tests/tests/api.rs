//! The agent's HTTP server under clients that hold connections: the real
//! `weir agent` binary, a one-pod lab (podCIDR octet 233).

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use weir_integration_tests::harness::{Agent, Lab, eventually};

const LAB: &str = "apiVersion: lab.weir.dev/v1alpha1
kind: Lab
metadata: {name: api}
spec: {podCIDR: 10.233.0.0/24, serviceCIDR: 10.234.0.0/24}
---
apiVersion: v1
kind: Namespace
metadata: {name: a}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: a, labels: {app: web}}
spec:
  containers:
  - name: c
    image: lab
    ports: [{containerPort: 80, protocol: TCP}]
";

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the agent's fd directory")
        .count()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("the agent's status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// `n` connections that each send half a request head and wait.
fn half_heads(agent: &Agent, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut stream = TcpStream::connect(agent.listen).expect("connect");
            stream
                .write_all(b"GET /api/graph HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                .expect("send half a head");
            stream
        })
        .collect()
}

/// `/healthz`'s time to answer on a new connection.
fn healthz_time(agent: &Agent) -> Duration {
    let start = Instant::now();
    let mut stream = TcpStream::connect(agent.listen).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .expect("/healthz answers within 5s");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    start.elapsed()
}

/// Idle connections are held up to `--max-connections` and closed after
/// `--header-read-timeout`; meanwhile `/healthz` answers and the agent's
/// memory stays bounded.
#[test]
fn idle_connections_are_bounded_and_closed() {
    const HEADER_TIMEOUT_S: u64 = 3;
    const MAX_CONNECTIONS: usize = 400;
    /// The memory 400 held connections may add (measured: about 8 MiB).
    const RSS_BOUND_KIB: u64 = 32 * 1024;
    let lab = Lab::up("api", LAB);
    let timeout = format!("{HEADER_TIMEOUT_S}s");
    let max = MAX_CONNECTIONS.to_string();
    let agent = Agent::start(
        &lab,
        &["--header-read-timeout", &timeout, "--max-connections", &max],
    );
    let pid = agent.pid();
    let (fds_before, rss_before) = (open_fds(pid), rss_kib(pid));

    let held = half_heads(&agent, 300);
    let took = healthz_time(&agent);
    assert!(
        took < Duration::from_secs(1),
        "/healthz took {took:?} with 300 idle connections"
    );
    // 300 more: beyond the limit, they wait in the listen backlog.
    let waiting = half_heads(&agent, 300);
    std::thread::sleep(Duration::from_millis(500));
    let (fds, rss) = (open_fds(pid), rss_kib(pid));
    assert!(
        fds <= fds_before + MAX_CONNECTIONS + 8,
        "{fds} open files with 600 idle connections and --max-connections {MAX_CONNECTIONS} (before: {fds_before})"
    );
    assert!(
        fds >= fds_before + MAX_CONNECTIONS - 8,
        "only {fds} open files with 600 idle connections (before: {fds_before}): connections not accepted up to the limit"
    );
    assert!(
        rss <= rss_before + RSS_BOUND_KIB,
        "RSS grew from {rss_before} KiB to {rss} KiB with {MAX_CONNECTIONS} idle connections"
    );
    eprintln!(
        "{MAX_CONNECTIONS} idle connections: RSS {rss_before} -> {rss} KiB, {fds_before} -> {fds} open files"
    );

    // Each is closed after the header timeout (the waiting ones once
    // accepted): the agent is back where it started.
    let closed = eventually(Duration::from_secs(4 * HEADER_TIMEOUT_S), || {
        (open_fds(pid) <= fds_before + 2).then_some(())
    });
    assert!(
        closed.is_some(),
        "{} open files {}s after 600 idle connections (before: {fds_before})",
        open_fds(pid),
        4 * HEADER_TIMEOUT_S
    );
    let took = healthz_time(&agent);
    assert!(took < Duration::from_secs(1), "/healthz took {took:?}");
    drop((held, waiting));
}
