//! DNS answers through the datapath into a running agent: an NXDOMAIN
//! answer is shown where a person looks (the flow stream, `weir observe`,
//! a metric), and a burst of answers is accounted for exactly (each one
//! sent is copied and parsed, or counted where it was lost).
//!
//! Needs root (network namespaces): `cargo test -p weir-integration-tests
//! --test dns_answers`.

use std::time::Duration;

use weir_integration_tests::{
    dns_burst::{self, Counts},
    harness::{Agent, Lab, eventually, weir_ok},
};

/// A client pod and the lab's DNS (kube-system/coredns behind the kube-dns
/// Service).
const NXDOMAIN_LAB: &str = r"
apiVersion: lab.weir.dev/v1alpha1
kind: Lab
metadata: {name: nxdomain}
spec: {podCIDR: 10.251.0.0/24, serviceCIDR: 10.252.0.0/24}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  containers:
  - name: coredns
    ports: [{containerPort: 53, protocol: UDP}, {containerPort: 53, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system}
spec:
  clusterIP: 10.252.0.10
  selector: {k8s-app: kube-dns}
  ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
spec: {containers: [{name: c}]}
";

/// A pod that sends answers from port 53 and one that receives them; no
/// DNS server, so every answer the agent counts is the test's.
const BURST_LAB: &str = r"
apiVersion: lab.weir.dev/v1alpha1
kind: Lab
metadata: {name: burst}
spec: {podCIDR: 10.251.1.0/24}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: sender, namespace: shop, labels: {app: sender}}
spec: {containers: [{name: s}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
spec: {containers: [{name: c}]}
";

#[test]
fn an_nxdomain_answer_is_in_the_flow_stream_and_counted() {
    let lab = Lab::up("nxdomain", NXDOMAIN_LAB);
    let agent = Agent::start(&lab, &[]);

    let out = lab.cmd(&[
        "dns",
        "lookup",
        "shop/client",
        "nothing.payments.example",
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "dns lookup: {out:?}");
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(found["rcode"], "NXDOMAIN", "{found}");

    let url = agent.url();
    let line = eventually(Duration::from_secs(10), || {
        weir_ok(&["observe", "--server", &url, "--last", "1000"])
            .lines()
            .find(|l| l.contains("NXDOMAIN nothing.payments.example"))
            .map(str::to_owned)
    })
    .unwrap_or_else(|| {
        panic!(
            "no NXDOMAIN line in weir observe:\n{}\n{}",
            weir_ok(&["observe", "--server", &url, "--last", "1000"]),
            agent.log_text()
        )
    });
    // The query's flow: the pod asked the DNS Service on 53/UDP.
    assert!(line.contains("shop/client:"), "{line}");
    assert!(
        line.contains(":53 dns-response FORWARDED (NXDOMAIN nothing.payments.example)"),
        "{line}"
    );
    let json = weir_ok(&["observe", "--server", &url, "--last", "1000", "-o", "json"]);
    let record: serde_json::Value = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON lines"))
        .find(|f| f["Type"] == "L7")
        .unwrap_or_else(|| panic!("no L7 record:\n{json}"));
    assert_eq!(
        record["l7"],
        serde_json::json!({"type": "RESPONSE", "dns": {"query": "nothing.payments.example.", "rcode": 3}}),
        "{record}"
    );
    assert_eq!(record["source"]["pod_name"], "client", "{record}");
    assert!(
        agent
            .metric("weir_dns_answers_nxdomain_total")
            .is_some_and(|n| n >= 1.0),
        "{:?}",
        agent.metric("weir_dns_answers_nxdomain_total")
    );
}

/// 4,000 answers as fast as one socket sends them: past the datapath's
/// burst allowance (2,000 per CPU) and faster than an agent drains the ring
/// buffer, so some are lost (how many varies); each one sent is copied or
/// counted as not, and each copied one parsed.
#[test]
fn a_burst_of_answers_is_parsed_or_its_loss_counted_exactly() {
    const SENT: u64 = 4_000;
    let lab = Lab::up("burst", BURST_LAB);
    let agent = Agent::start(&lab, &[]);
    let status = lab.status();
    let pod = |name: &str| {
        status["pods"]
            .as_array()
            .expect("status.pods")
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no pod {name}: {status}"))
            .clone()
    };
    let client_ip: std::net::IpAddr = pod("client")["ips"][0]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("client IP");
    let netns = pod("sender")["netns"]
        .as_str()
        .expect("sender netns")
        .to_owned();
    let before = Counts::read(&agent).expect("metrics");
    assert_eq!(before, Counts::default(), "answers before the burst");

    let sent = dns_burst::send(&netns, (client_ip, 9).into(), SENT, None);
    assert_eq!(sent.answers, SENT);
    let (counts, _) = dns_burst::settled(&agent, SENT, Duration::from_secs(20));
    assert_eq!(
        counts.accounted(),
        SENT,
        "every answer sent is copied, rate-limited or lost to a full ring: {counts:?}"
    );
    assert_eq!(
        counts.parsed + counts.unparsed,
        counts.copied,
        "every copied answer is parsed or counted: {counts:?}"
    );
    assert_eq!(counts.unparsed, 0, "{counts:?}");
    assert_eq!((counts.skipped, counts.truncated), (0, 0), "{counts:?}");
    assert!(counts.parsed > 0, "{counts:?}");
}
