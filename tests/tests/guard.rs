//! The guard end to end on the real kernel: a namespace learned, then set
//! to enforce with a policy set that misses its one learned edge. The next
//! connection on that edge is dropped once, the namespace is back in
//! audit within one sweep, the connection works again, and the metric,
//! `weir status`, `weir mode list`, the log and the audit log say why.
//! With `--no-guard` the edge stays dropped. `weir mode set` refuses the
//! namespace while it is not ready, unless `--force`. An agent restarted
//! during a window continues it: same end, same count. A namespace
//! annotated `weir.dev/promote: auto` goes observe -> audit -> enforce by
//! itself, each step in the audit log.
//!
//! Its labs use podCIDR octets 227, 245 (the restart) and 246 (the shop,
//! pods and Services halved).

use std::time::Duration;

use weir_integration_tests::{
    harness::{Agent, AgentHome, Lab, eventually, weir, weir_ok},
    shop::{drive_traffic, shop_yaml},
};

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
    let log = agent.log_text();
    assert!(
        log.contains("enforce without a guard window: the mode was set with --no-guard"),
        "the agent says the flip is unguarded:\n{log}"
    );
}

/// Two learned edges, a threshold of two (the namespace's annotation, as
/// in a cluster).
const RESTART_LAB: &str = "apiVersion: lab.weir.dev/v1alpha1
kind: Lab
metadata: {name: guard-restart}
spec: {podCIDR: 10.245.0.0/24, serviceCIDR: 10.246.0.0/24}
---
apiVersion: v1
kind: Namespace
metadata:
  name: g
  annotations: {weir.dev/guard-max-drops: '2'}
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
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: g, labels: {app: api}}
spec:
  containers:
  - name: a
    image: lab
    ports: [{containerPort: 80, protocol: TCP}]
";

/// Every pod of g isolated for ingress, nothing allowed.
const DENY_ALL: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: g}
spec:
  podSelector: {}
  policyTypes: [Ingress]
";

#[test]
fn an_agent_restarted_during_a_guard_window_continues_it() {
    let lab = Lab::up("grr", RESTART_LAB);
    let home = AgentHome::new("grr", &[]);
    let mut agent = home.start(&lab);
    let client = lab.pod("g", "client");
    let server = lab.pod("g", "server");
    let api = lab.pod("g", "api");
    assert!(lab.probe(&client, &server, "80/TCP"), "observe passes");
    assert!(lab.probe(&client, &api, "80/TCP"), "observe passes");
    eventually(Duration::from_secs(10), || {
        let graph = agent.get_json("/api/graph?namespace=g");
        (graph["edges"].as_array().map_or(0, Vec::len) == 2).then_some(())
    })
    .expect("client -> server and client -> api learned");

    let work = tempfile::tempdir().expect("work dir");
    let policy = work.path().join("deny.yaml");
    std::fs::write(&policy, DENY_ALL).expect("write policy");
    let _ = weir_ok(&[
        "policy",
        "apply",
        "--server",
        &agent.url(),
        "-f",
        &policy.to_string_lossy(),
    ]);
    let _ = weir_ok(&[
        "mode",
        "set",
        "g",
        "enforce",
        "--force",
        "--server",
        &agent.url(),
    ]);
    let window = eventually(Duration::from_secs(5), || {
        let m = modes(&agent);
        m["guarded"]["g"]
            .is_object()
            .then(|| m["guarded"]["g"].clone())
    })
    .unwrap_or_else(|| panic!("the guard watches g: {:#}", modes(&agent)));
    assert_eq!(
        window["learned_edges"],
        2,
        "{window:#}\n{:#}\n{}",
        agent.get_json("/api/graph?namespace=g"),
        agent.log_text()
    );
    assert_eq!(
        window["max_drops"], 2,
        "the annotation's threshold: {window:#}"
    );

    // One learned edge dropped: counted, below the threshold.
    assert!(!lab.probe(&client, &server, "80/TCP"), "enforce drops it");
    let counted = eventually(Duration::from_secs(5), || {
        let m = modes(&agent);
        (m["guarded"]["g"]["dropped_edges"]
            .as_array()
            .map_or(0, Vec::len)
            == 1)
            .then(|| m["guarded"]["g"].clone())
    })
    .unwrap_or_else(|| panic!("the drop is counted: {:#}", modes(&agent)));
    assert_eq!(modes(&agent)["modes"]["g"], "enforce");

    assert!(agent.stop(), "stopped cleanly:\n{}", agent.log_text());
    let agent = home.start(&lab);
    let m = modes(&agent);
    assert_eq!(m["modes"]["g"], "enforce", "{m:#}");
    assert_eq!(
        m["guarded"]["g"], counted,
        "the same window (end, learned edges, count) after the restart"
    );
    let status = weir_ok(&["status", "--server", &agent.url()]);
    let until = counted["until"].as_str().expect("until");
    assert!(
        status.contains(&format!(
            "g: guarded until {until} (1 of 2 learned edges dropped; 2 reverts to audit)"
        )),
        "weir status shows the same window: {status}"
    );

    // The second learned edge dropped after the restart: two, the revert.
    let _ = lab.probe(&client, &api, "80/TCP");
    let reverted = eventually(Duration::from_secs(3), || {
        let m = modes(&agent);
        (m["modes"]["g"] == "audit").then_some(m)
    })
    .unwrap_or_else(|| {
        panic!(
            "g is back in audit within one sweep: {:#}\n{}",
            modes(&agent),
            agent.log_text()
        )
    });
    let message = reverted["reverted"]["g"]["message"].as_str().expect("why");
    assert!(
        message.contains("because enforce dropped 2 learned edges")
            && message.contains("g/client -> g/api TCP/80")
            && message.contains("g/client -> g/server TCP/80"),
        "{message}"
    );
    assert!(
        lab.probe(&client, &api, "80/TCP"),
        "audit lets it through again"
    );
    drop(agent);
    drop(home);
}

/// The demo shop in 10.246.0.0/16 (pods in the lower half, Services in
/// the upper), its shop namespace promoted automatically after 3 s of
/// audit.
fn auto_shop() -> String {
    let yaml = shop_yaml(246)
        .replace("podCIDR: 10.246.0.0/16", "podCIDR: 10.246.0.0/17")
        .replace("serviceCIDR: 10.247.0.0/16", "serviceCIDR: 10.246.128.0/17")
        .replace(
            "serviceCIDRv6: 'fd00:247::/112'",
            "serviceCIDRv6: 'fd00:246:1::/112'",
        )
        .replace("clusterIP: 10.247.0.10", "clusterIP: 10.246.128.10")
        .replace(
            "  name: shop\n  labels:\n    team: storefront\n",
            "  name: shop\n  labels:\n    team: storefront\n  annotations:\n    \
             weir.dev/promote: auto\n    weir.dev/promote-after: 3s\n",
        );
    assert!(yaml.contains("weir.dev/promote-after: 3s"), "{yaml}");
    assert!(
        !yaml.contains("10.247.") && !yaml.contains("fd00:247"),
        "{yaml}"
    );
    yaml
}

#[test]
fn a_namespace_promoted_automatically_goes_observe_audit_enforce_by_itself() {
    let lab = Lab::up("gpr", &auto_shop());
    let agent = Agent::start(
        &lab,
        &[
            "--flow-idle-timeout",
            "2s",
            "--flow-closing-timeout",
            "1s",
            "--quiet-period",
            "2s",
        ],
    );
    let server = agent.url();
    drive_traffic(&lab, 2);
    eventually(Duration::from_secs(20), || {
        let graph = agent.get_json("/api/graph");
        (graph["edges"].as_array().map_or(0, Vec::len) >= 7).then_some(())
    })
    .unwrap_or_else(|| panic!("graph incomplete: {:#}", agent.get_json("/api/graph")));
    // The suggestion enforced (modes untouched): what audit then enforce
    // judge the traffic by.
    let applied = weir_ok(&["export", "--server", &server, "--apply"]);
    assert!(applied.contains("enforced"), "{applied}");
    assert_eq!(modes(&agent)["modes"]["shop"], serde_json::Value::Null);

    // Quiet for 2 s and covered: audit by itself.
    let audited = eventually(Duration::from_secs(20), || {
        let m = modes(&agent);
        (m["modes"]["shop"] == "audit").then_some(m)
    })
    .unwrap_or_else(|| {
        panic!(
            "shop never went to audit: {:#}\n{}",
            modes(&agent),
            agent.log_text()
        )
    });
    assert_eq!(
        audited["promotion"]["shop"]["last"]["from"], "observe",
        "{audited:#}"
    );
    assert!(
        audited["modes"]["data"].is_null(),
        "data is not annotated: {audited:#}"
    );
    // The application keeps working under audit, marked nothing: enforce
    // 3 s later, by itself, with the guard watching.
    drive_traffic(&lab, 1);
    let enforced = eventually(Duration::from_secs(20), || {
        let m = modes(&agent);
        (m["modes"]["shop"] == "enforce" && m["guarded"]["shop"].is_object()).then_some(m)
    })
    .unwrap_or_else(|| {
        panic!(
            "shop never went to enforce: {:#}\n{}",
            modes(&agent),
            agent.log_text()
        )
    });
    assert_eq!(
        enforced["promotion"]["shop"]["last"]["to"], "enforce",
        "{enforced:#}"
    );
    assert_eq!(
        enforced["promotion"]["shop"]["message"],
        "automatic promotion: enforced"
    );
    drive_traffic(&lab, 1);
    assert_eq!(
        modes(&agent)["modes"]["shop"],
        "enforce",
        "the guard saw nothing dropped"
    );

    let audit = weir_ok(&["audit", "--kind", "promote", "--server", &server]);
    let steps: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("weir-promote"))
        .collect();
    assert!(
        steps.len() == 2
            && steps
                .iter()
                .any(|l| l.contains("observe -> audit") && l.contains("shop"))
            && steps
                .iter()
                .any(|l| l.contains("audit -> enforce") && l.contains("shop")),
        "{audit}"
    );
    let status = weir_ok(&["status", "--server", &server]);
    assert!(
        status.contains("shop: automatic promotion: enforced (last: audit -> enforce at "),
        "{status}"
    );
    assert_eq!(
        agent.metric("weir_promotions_total{namespace=\"shop\",to=\"enforce\"}"),
        Some(1.0)
    );
    let log = agent.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("automatic promotion: promoted from audit to enforce")),
        "{log}"
    );
}
