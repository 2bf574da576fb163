//! The guard end to end on the real kernel: a namespace learned, then set
//! to enforce with a policy set that misses its one learned edge. The next
//! connection on that edge is dropped once, the namespace is back in
//! audit within one sweep, the connection works again, and the metric,
//! `weir status`, `weir mode list`, the log and the audit log say why.
//! With `--no-guard` the edge stays dropped. `weir mode set` refuses the
//! namespace while it is not ready, unless `--force`.
//!
//! Its lab uses podCIDR octet 227.

use std::time::Duration;

use weir_integration_tests::harness::{Agent, Lab, eventually, weir, weir_ok};

const LAB: &str = "apiVersion: lab.weir.dev/v1alpha1
kind: Lab
metadata: {name: guard}
spec: {podCIDR: 10.227.0.0/24, serviceCIDR: 10.228.0.0/24}
---
apiVersion: v1
kind: Namespace
metadata: {name: g}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: g, labels: {app: client}}
spec:
  containers:
  - name: c
    image: lab
    ports: [{containerPort: 80, protocol: TCP}]
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: g, labels: {app: server}}
spec:
  containers:
  - name: s
    image: lab
    ports: [{containerPort: 80, protocol: TCP}]
";

/// Isolates the server's ingress and allows nothing: the learned
/// client -> server:80 is missing.
const INCOMPLETE: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server, namespace: g}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
";

fn modes(agent: &Agent) -> serde_json::Value {
    serde_json::from_str(&weir_ok(&[
        "mode",
        "list",
        "-o",
        "json",
        "--server",
        &agent.url(),
    ]))
    .expect("modes JSON")
}

#[test]
fn enforce_dropping_a_learned_edge_falls_back_to_audit_within_one_sweep() {
    let lab = Lab::up("grd", LAB);
    let agent = Agent::start(&lab, &[]);
    let client = lab.pod("g", "client");
    let server = lab.pod("g", "server");
    assert!(lab.probe(&client, &server, "80/TCP"), "observe passes");
    eventually(Duration::from_secs(10), || {
        let graph = agent.get_json("/api/graph?namespace=g");
        (graph["edges"].as_array().map_or(0, Vec::len) > 0).then_some(())
    })
    .expect("client -> server learned");

    let work = tempfile::tempdir().expect("work dir");
    let policy = work.path().join("server.yaml");
    std::fs::write(&policy, INCOMPLETE).expect("write policy");
    let _ = weir_ok(&[
        "policy",
        "apply",
        "--server",
        &agent.url(),
        "-f",
        &policy.to_string_lossy(),
    ]);

    // The edge was learned just now: not quiet, so not ready.
    let refused = weir(&["mode", "set", "g", "enforce", "--server", &agent.url()]);
    assert!(!refused.status.success(), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("namespace g is not ready for enforce")
            && stderr.contains("within the quiet period"),
        "{stderr}"
    );
    assert_eq!(modes(&agent)["modes"]["g"], serde_json::Value::Null);

    let _ = weir_ok(&[
        "mode",
        "set",
        "g",
        "enforce",
        "--force",
        "--server",
        &agent.url(),
    ]);
    let guarded = eventually(Duration::from_secs(5), || {
        let m = modes(&agent);
        m["guarded"]["g"].is_object().then_some(m)
    })
    .unwrap_or_else(|| {
        panic!(
            "the guard watches g: {:#}\n{}",
            modes(&agent),
            agent.log_text()
        )
    });
    assert_eq!(guarded["guarded"]["g"]["learned_edges"], 1, "{guarded:#}");

    // The first SYN is dropped; the guard reverts within a sweep (300 ms
    // here), so the probe's retransmitted SYN may already pass.
    let _ = lab.probe(&client, &server, "80/TCP");
    let dropped = weir_ok(&[
        "observe",
        "--server",
        &agent.url(),
        "--last",
        "1000",
        "-o",
        "json",
        "--verdict",
        "DROPPED",
    ]);
    assert!(
        dropped
            .lines()
            .any(|l| l.contains("\"pod_name\":\"server\"")),
        "enforce dropped the learned edge the policies miss: {dropped}"
    );
    let reverted = eventually(Duration::from_secs(3), || {
        let m = modes(&agent);
        (m["modes"]["g"] == "audit").then_some(m)
    })
    .expect("g is back in audit within one sweep");
    let message = reverted["reverted"]["g"]["message"]
        .as_str()
        .expect("a revert message")
        .to_owned();
    assert!(
        message.starts_with("reverted to audit at ")
            && message.contains("because enforce dropped 1 learned edge")
            && message.contains("client -> g/")
            && message.contains("TCP/80")
            && message.contains("(isolated by g/server)"),
        "{message}"
    );
    assert!(
        lab.probe(&client, &server, "80/TCP"),
        "audit lets it through again"
    );

    assert_eq!(
        agent
            .get_text("/metrics")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("weir_guard_reverts_total{namespace=\"g\"}"))
            .map(str::to_owned),
        Some("weir_guard_reverts_total{namespace=\"g\"} 1".to_owned())
    );
    let status = weir_ok(&["status", "--server", &agent.url()]);
    assert!(status.contains(&format!("g: {message}")), "{status}");
    let audit = weir_ok(&["audit", "--kind", "revert", "--server", &agent.url()]);
    assert!(
        audit.contains("weir-guard") && audit.contains("enforce -> audit"),
        "{audit}"
    );
    let log = agent.log_text();
    assert!(
        log.lines().any(|l| l.contains("guard: reverted to audit")
            && l.contains("edges")
            && l.contains("[\"g/client -> g/server TCP/80\"]")
            && l.contains("[\"g/server\"]")),
        "{log}"
    );

    // --no-guard: the same drop keeps g in enforce.
    let _ = weir_ok(&[
        "mode",
        "set",
        "g",
        "enforce",
        "--force",
        "--no-guard",
        "--server",
        &agent.url(),
    ]);
    assert!(!lab.probe(&client, &server, "80/TCP"), "dropped");
    std::thread::sleep(Duration::from_secs(2));
    let m = modes(&agent);
    assert_eq!(m["modes"]["g"], "enforce", "{m:#}");
    assert!(m["guarded"].is_null() && m["reverted"].is_null(), "{m:#}");
    assert!(!lab.probe(&client, &server, "80/TCP"), "still dropped");
}
