//! Observe mode end to end on the real kernel: a dual-stack lab of three
//! namespaces, the agent attached to every pod's veth, real TCP and UDP
//! connections; the graph and the flow log must hold exactly the edges that
//! were exercised.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use serde_json::Value;
use weir_integration_tests::harness::{Agent, AgentHome, Lab, PinDir, eventually, weir_ok};

/// The lab, in its own address range: tests run in parallel, each with a lab.
/// The node name of the agent whose relay listener is read.
const RELAY_NODE: &str = "obs-node";

fn lab_yaml(subnet: u8) -> String {
    format!(
        "apiVersion: lab.weir.dev/v1alpha1\nkind: Lab\nmetadata: {{name: e2e}}\n\
         spec: {{podCIDR: 10.{subnet}.0.0/16, podCIDRv6: 'fd00:{subnet}::/64', dualStack: true}}\n{PODS}"
    )
}

const PODS: &str = r"---
apiVersion: v1
kind: Namespace
metadata: {name: front}
---
apiVersion: v1
kind: Namespace
metadata: {name: back}
---
apiVersion: v1
kind: Namespace
metadata: {name: infra}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: front}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, tier: front}}
    spec:
      containers:
      - name: web
        image: lab
        ports: [{containerPort: 80, protocol: TCP}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: front, labels: {app: client}}
spec:
  containers: [{name: c, image: lab}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: back}
spec:
  replicas: 1
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
      - name: api
        image: lab
        ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: back, labels: {app: db}}
spec:
  containers:
  - name: db
    image: lab
    ports: [{containerPort: 5432}]
---
apiVersion: v1
kind: Pod
metadata: {name: dns, namespace: infra, labels: {k8s-app: kube-dns}}
spec:
  containers:
  - name: dns
    image: lab
    ports: [{containerPort: 53, protocol: UDP}]
---
apiVersion: v1
kind: Pod
metadata: {name: idle, namespace: infra, labels: {app: idle}}
spec:
  containers:
  - name: idle
    image: lab
    ports: [{containerPort: 9000}]
---
apiVersion: lab.weir.dev/v1alpha1
kind: ExternalHost
metadata: {name: payments}
spec:
  ips: [198.51.100.10]
  ports: [{port: 443, protocol: TCP}]
";

/// (source, target, port, protocol) of a graph edge.
type Edge = (String, String, u64, String);

fn edge(source: &str, target: &str, port: u64, protocol: &str) -> Edge {
    (source.into(), target.into(), port, protocol.into())
}

fn graph_edges(graph: &Value) -> BTreeSet<Edge> {
    let mut edges = BTreeSet::new();
    for e in graph["edges"].as_array().expect("edges") {
        for p in e["ports"].as_array().expect("ports") {
            edges.insert(edge(
                e["source"].as_str().expect("source"),
                e["target"].as_str().expect("target"),
                p["port"].as_u64().expect("port"),
                p["protocol"].as_str().expect("protocol"),
            ));
        }
    }
    edges
}

fn pod_ip(lab: &Lab, pod: &str, v6: bool) -> String {
    let (ns, name) = pod.split_once('/').expect("ns/pod");
    let status = lab.status();
    let p = status["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .find(|p| p["namespace"] == ns && p["name"] == name)
        .unwrap_or_else(|| panic!("{pod} not in status"));
    p["ips"]
        .as_array()
        .expect("ips")
        .iter()
        .filter_map(Value::as_str)
        .find(|ip| ip.contains(':') == v6)
        .unwrap_or_else(|| panic!("{pod} has no {} address", if v6 { "v6" } else { "v4" }))
        .to_owned()
}

/// `weir observe --last 1000 -o json FILTERS...`, parsed line by line.
fn observe_json(agent: &Agent, filters: &[&str]) -> Vec<Value> {
    let url = agent.url();
    let mut args = vec!["observe", "--server", &url, "--last", "1000", "-o", "json"];
    args.extend_from_slice(filters);
    weir_ok(&args)
        .lines()
        .map(|l| serde_json::from_str(l).expect("observe -o json is JSON lines"))
        .collect()
}

#[test]
fn graph_and_flow_log_hold_exactly_the_exercised_edges() {
    let lab = Lab::up("obs", &lab_yaml(131));
    // With the relay listener, so that the relay's read is checked too.
    let certs = tempfile::tempdir().expect("a certificates directory");
    let certs_dir = certs.path().to_str().expect("a UTF-8 path");
    let written = weir_ok(&["certs", "--out", certs_dir, "--node", RELAY_NODE]);
    assert!(written.contains("relay/tls.key"), "{written}");
    let relay_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let agent_certs = format!("{certs_dir}/agents/{RELAY_NODE}");
    let agent = Agent::start(
        &lab,
        &[
            "--node-name",
            RELAY_NODE,
            "--relay-listen",
            &relay_addr.to_string(),
            "--relay-tls-dir",
            &agent_certs,
        ],
    );

    let client = lab.pod("front", "client");
    let web = lab.pod("front", "web-");
    let api = lab.pod("back", "api-");
    let db = lab.pod("back", "db-0");
    let dns = lab.pod("infra", "dns");
    let web_v6 = pod_ip(&lab, &web, true);
    let db_v6 = pod_ip(&lab, &db, true);
    let dns_v6 = pod_ip(&lab, &dns, true);

    // Each edge twice, so connections count above one.
    for _ in 0..2 {
        assert!(lab.probe(&client, &web, "80/TCP"), "client -> web");
        assert!(lab.probe(&web, &api, "8080/TCP"), "web -> api");
        assert!(lab.probe(&api, &db_v6, "5432/TCP"), "api -> db over IPv6");
        assert!(lab.probe(&client, &dns, "53/UDP"), "client -> dns");
        assert!(lab.probe(&api, &dns_v6, "53/UDP"), "api -> dns over IPv6");
        assert!(
            lab.probe(&api, "198.51.100.10", "443/TCP"),
            "api -> payments"
        );
        assert!(
            lab.probe(&client, &web_v6, "80/TCP"),
            "client -> web over IPv6"
        );
    }

    let expected: BTreeSet<Edge> = [
        edge("front/client", "front/web", 80, "TCP"),
        edge("front/web", "back/api", 8080, "TCP"),
        edge("back/api", "back/db-0", 5432, "TCP"),
        edge("front/client", "infra/dns", 53, "UDP"),
        edge("back/api", "infra/dns", 53, "UDP"),
        edge("back/api", "198.51.100.10", 443, "TCP"),
    ]
    .into();

    // The sweep brings the counters: wait until every edge has its 2 or 4
    // connections and packets both ways.
    let graph = eventually(Duration::from_secs(10), || {
        let graph = agent.get_json("/api/graph");
        (graph_edges(&graph) == expected
            && graph["edges"]
                .as_array()?
                .iter()
                .all(|e| e["connections"].as_u64() >= Some(2) && e["packets"].as_u64() >= Some(4)))
        .then_some(graph)
    })
    .unwrap_or_else(|| {
        panic!(
            "graph never matched; last: {:#}\nlog:\n{}",
            agent.get_json("/api/graph"),
            agent.log_text()
        )
    });

    // Connection counts are exact: both ends of a pod-to-pod connection are
    // on this node, and it must be counted once.
    for e in graph["edges"].as_array().expect("edges") {
        let want = if e["source"] == "front/client" && e["target"] == "front/web" {
            4
        } else {
            2
        };
        assert_eq!(e["connections"], want, "connections of {e}");
        assert!(e["bytes"].as_u64() > Some(0), "{e}");
        assert!(
            e["first_seen"].is_string() && e["last_seen"].is_string(),
            "{e}"
        );
    }

    // What a relay reads: the same edges, each seen from this node's
    // side(s), adding up to the graph's counts.
    let contribution = agent.get_json("/api/v1/contribution");
    let node_name = agent.get_json("/healthz")["node_name"].clone();
    assert_eq!(contribution["node"], node_name);
    assert_eq!(
        contribution["epoch"].as_str().map(str::len),
        Some(16),
        "{contribution}"
    );
    let ends = |e: &Value| -> (String, String) {
        let end = |end: &Value| match (&end["workload"], &end["external"]) {
            (Value::Object(w), _) => format!(
                "{}/{}",
                w["namespace"].as_str().unwrap_or_default(),
                w["name"].as_str().unwrap_or_default()
            ),
            (_, ip) => ip.as_str().unwrap_or_default().to_owned(),
        };
        (end(&e["source"]), end(&e["target"]))
    };
    let mut by_pair: BTreeMap<(String, String), u64> = BTreeMap::new();
    for e in contribution["edges"].as_array().expect("edges") {
        let (source, target) = ends(e);
        let external = target == "198.51.100.10";
        for side in e["sides"].as_array().expect("sides") {
            let (seen, responder_node) = if external {
                ("initiator", Value::Null)
            } else {
                ("both", node_name.clone())
            };
            assert_eq!(side["seen_from"], seen, "{e}");
            assert_eq!(side["initiator_node"], node_name, "{e}");
            assert_eq!(side["responder_node"], responder_node, "{e}");
            *by_pair.entry((source.clone(), target.clone())).or_default() +=
                side["connections"].as_u64().expect("connections");
        }
    }
    let graph_pairs: BTreeMap<(String, String), u64> = graph["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| {
            (
                (
                    e["source"].as_str().unwrap_or_default().to_owned(),
                    e["target"].as_str().unwrap_or_default().to_owned(),
                ),
                e["connections"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(by_pair, graph_pairs, "{contribution}");

    // The relay reads the same contribution over mutual TLS, by the node's
    // name at the listener's address (once the graph holds still: the
    // versions of both answers agree).
    let relay = weir_agent::tls::RelayTls::load(&certs.path().join("relay"))
        .expect("the relay's certificates")
        .agent_client(RELAY_NODE, relay_addr)
        .expect("the relay's client");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let url = format!(
        "{}/api/v1/contribution",
        weir_agent::tls::agent_url(RELAY_NODE, relay_addr.port())
    );
    let without_time = |mut c: Value| {
        c.as_object_mut().map(|c| c.remove("generated_at"));
        c
    };
    let mut last = None;
    let same = eventually(Duration::from_secs(10), || {
        let plain = without_time(agent.get_json("/api/v1/contribution"));
        let over_tls = runtime.block_on(async {
            let answer = relay.get(&url).send().await?.error_for_status()?;
            answer.json::<Value>().await
        });
        let over_tls = over_tls.map(without_time).map_err(|e| format!("{e:?}"));
        let same = over_tls.as_ref() == Ok(&plain);
        last = Some((plain, over_tls));
        same.then_some(())
    });
    assert!(
        same.is_some(),
        "the contribution over mutual TLS differs from the API's: {last:#?}\nlog:\n{}",
        agent.log_text()
    );

    // Nodes: the workloads with their namespace, pods and labels; a
    // Deployment's replicas are one node; the external host by IP.
    let nodes = graph["nodes"].as_array().expect("nodes");
    let node = |id: &str| -> &Value {
        nodes
            .iter()
            .find(|n| n["id"] == id)
            .unwrap_or_else(|| panic!("node {id} missing from {nodes:?}"))
    };
    let web_node = node("front/web");
    assert_eq!(web_node["kind"], "workload");
    assert_eq!(web_node["namespace"], "front");
    assert_eq!(web_node["workload"], "web");
    assert_eq!(web_node["labels"]["app"], "web");
    assert_eq!(
        web_node["pods"].as_array().map(Vec::len),
        Some(1),
        "one replica talked"
    );
    assert_eq!(node("198.51.100.10")["kind"], "external");
    assert_eq!(node("infra/dns")["labels"]["k8s-app"], "kube-dns");
    assert!(
        nodes.iter().all(|n| n["id"] != "infra/idle"),
        "a pod that never talked is not in the graph"
    );

    // The flow log: Hubble field names, initiator -> responder, no replies.
    let flows = observe_json(&agent, &[]);
    assert!(!flows.is_empty());
    let mut seen = BTreeSet::new();
    for f in &flows {
        assert_eq!(f["verdict"], "FORWARDED", "{f}");
        assert_eq!(f["is_reply"], false, "{f}");
        let (proto, l4) = f["l4"]
            .as_object()
            .and_then(|m| m.iter().next())
            .expect("l4");
        let port = l4["destination_port"].as_u64().expect("destination_port");
        let workload = |side: &Value| -> String {
            match side["workloads"].as_array().and_then(|w| w.first()) {
                Some(w) => format!(
                    "{}/{}",
                    side["namespace"].as_str().unwrap_or_default(),
                    w["name"].as_str().unwrap_or_default()
                ),
                None => f["IP"]["destination"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            }
        };
        let source = workload(&f["source"]);
        let destination = workload(&f["destination"]);
        assert!(
            f["source"]["pod_name"].is_string(),
            "every exercised flow starts at a pod: {f}"
        );
        if let Some(label) = f["source"]["labels"].as_array().and_then(|l| l.first()) {
            assert!(label.as_str().is_some_and(|l| l.starts_with("k8s:")), "{f}");
        }
        seen.insert(edge(&source, &destination, port, proto));
    }
    assert_eq!(seen, expected, "flows in `weir observe -o json`");

    // Filters: a namespace and a port.
    let filtered = observe_json(&agent, &["--namespace", "infra", "--port", "53"]);
    assert!(!filtered.is_empty());
    assert!(
        filtered.iter().all(
            |f| f["destination"]["namespace"] == "infra" || f["source"]["namespace"] == "infra"
        ),
        "namespace filter"
    );
    assert!(
        filtered
            .iter()
            .all(|f| f["l4"]["UDP"]["destination_port"] == 53),
        "port filter"
    );
}

#[test]
fn a_stalled_agent_loses_ring_buffer_events_and_the_sweep_recovers_every_connection() {
    let lab = Lab::up("ovf", &lab_yaml(132));
    // One page of ring buffer: room for about 50 announcements.
    let agent = Agent::start(&lab, &["--ringbuf-bytes", "4096"]);
    let client = lab.pod("front", "client");
    let dns = lab.pod("infra", "dns");

    // Stall the agent: the kernel keeps tracking while nobody drains.
    agent.pause(true);
    let connections: u64 = 150;
    let out = lab.cmd(&[
        "exec",
        &client,
        "--",
        "python3",
        "-c",
        &format!(
            // Distinct source ports: a reused ephemeral port would make two
            // sends one flow.
            "import socket\nfor i in range({connections}):\n  s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n  s.bind(('', 20000 + i))\n  s.sendto(b'x', ('{}', 53))\n  s.close()",
            pod_ip(&lab, &dns, false)
        ),
    ]);
    assert!(out.status.success(), "traffic: {out:?}");
    agent.pause(false);

    let graph = eventually(Duration::from_secs(10), || {
        let graph = agent.get_json("/api/graph");
        let e = graph["edges"]
            .as_array()?
            .iter()
            .find(|e| e["source"] == "front/client" && e["target"] == "infra/dns")?
            .clone();
        (e["connections"].as_u64() == Some(connections)).then_some(e)
    })
    .unwrap_or_else(|| {
        panic!(
            "not every connection reached the graph: {:#}\n{}",
            agent.get_json("/api/graph"),
            agent.log_text()
        )
    });
    assert_eq!(graph["connections"], connections);
    let lost = agent
        .metric("weir_ringbuf_lost_total")
        .expect("loss metric");
    assert!(
        lost > 0.0,
        "the ring buffer overflowed, so losses are counted"
    );
    // And said where a person looks: degraded, but the graph is complete.
    let health = agent.get_json("/healthz");
    assert_eq!(health["status"], "degraded", "{health:#}");
    assert_eq!(
        health["degraded"][0]["reason"], "ringbuf_full",
        "{health:#}"
    );
    assert!(
        health["reasons"][0]
            .as_str()
            .is_some_and(|r| r.contains("ring buffer full") && r.contains("--ringbuf-bytes")),
        "{health:#}"
    );
    let graph = agent.get_json("/api/graph");
    assert_eq!(graph["incomplete"], false, "{:#}", graph["degraded"]);
    assert_eq!(graph["degraded"][0]["reason"], "ringbuf_full");
    assert!(
        agent.log_text().contains("ring buffer full"),
        "{}",
        agent.log_text()
    );
}

/// `connections` UDP sends from distinct source ports of `from` to the
/// dns pod: as many new flows.
fn udp_burst(lab: &Lab, from: &str, to_ip: &str, first_port: u32, connections: u32) {
    let out = lab.cmd(&[
        "exec",
        from,
        "--",
        "python3",
        "-c",
        &format!(
            "import socket\nfor i in range({connections}):\n  s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n  s.bind(('', {first_port} + i))\n  s.sendto(b'x', ('{to_ip}', 53))\n  s.close()"
        ),
    ]);
    assert!(out.status.success(), "traffic: {out:?}");
}

/// A flow table too small for a burst: connections go uncounted, and the
/// agent says so everywhere a person looks (a warning with the rate,
/// /healthz degraded with the reason, the graph and `weir status` flagged
/// incomplete for that time), then that it is over.
#[test]
fn a_full_flow_table_degrades_the_agent_and_flags_the_graph_until_it_recovers() {
    let lab = Lab::up("full", &lab_yaml(173));
    let agent = Agent::start(
        &lab,
        &[
            "--flow-table-entries",
            "16",
            "--flow-idle-timeout",
            "2s",
            "--loss-clear-after",
            "4s",
        ],
    );
    let client = lab.pod("front", "client");
    let dns = lab.pod("infra", "dns");
    let dns_ip = pod_ip(&lab, &dns, false);
    assert_eq!(agent.get_json("/healthz")["status"], "ok");

    udp_burst(&lab, &client, &dns_ip, 20000, 200);
    let health = eventually(Duration::from_secs(10), || {
        let health = agent.get_json("/healthz");
        (health["status"] == "degraded").then_some(health)
    })
    .unwrap_or_else(|| panic!("not degraded: {:#}", agent.get_json("/healthz")));
    assert_eq!(
        health["degraded"][0]["reason"], "flow_table_full",
        "{health:#}"
    );
    assert_eq!(health["degraded"][0]["incomplete"], true, "{health:#}");
    assert_eq!(health["flow_table_capacity"], 16, "{health:#}");
    let reason = health["reasons"][0].as_str().unwrap_or_default();
    assert!(reason.contains("flow table full (16 entries)"), "{reason}");
    assert!(reason.contains("--flow-table-entries"), "{reason}");

    let graph = agent.get_json("/api/graph");
    assert_eq!(graph["incomplete"], true, "{graph:#}");
    let episode = &graph["degraded"][0];
    assert!(
        episode["from"].as_str().is_some_and(|f| !f.is_empty()),
        "{episode:#}"
    );
    assert!(episode["until"].is_null(), "{episode:#}");
    assert!(
        episode["lost"].as_u64().is_some_and(|n| n > 0),
        "{episode:#}"
    );

    let status = weir_ok(&["status", "--server", &agent.url()]);
    assert!(status.contains("INCOMPLETE from"), "{status}");
    assert!(status.contains("flow table full"), "{status}");
    let log = agent.log_text();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("flow table full")
            && l.contains("rate_per_second")),
        "{log}"
    );

    // No loss for the quiet period: healthy again, and the log says so;
    // the graph keeps the flag for the time it missed connections.
    let health = eventually(Duration::from_secs(20), || {
        let health = agent.get_json("/healthz");
        (health["status"] == "ok").then_some(health)
    })
    .unwrap_or_else(|| {
        panic!(
            "still degraded: {:#}\n{}",
            agent.get_json("/healthz"),
            agent.log_text()
        )
    });
    assert_eq!(health["reasons"], serde_json::json!([]));
    assert!(
        agent.log_text().contains("flow table full ended"),
        "{}",
        agent.log_text()
    );
    let graph = agent.get_json("/api/graph");
    assert_eq!(graph["incomplete"], true, "{graph:#}");
    assert!(
        graph["degraded"][0]["until"].is_string(),
        "{:#}",
        graph["degraded"]
    );
    // A window after the loss is complete.
    let later = agent.get_json("/api/graph?since=1s");
    assert_eq!(later["incomplete"], false, "{:#}", later["degraded"]);
}

#[test]
fn pods_that_come_and_go_are_attached_and_detached_and_shutdown_detaches_all() {
    let lab = Lab::up("dyn", &lab_yaml(133));
    let mut agent = Agent::start(&lab, &[]);
    let veths = |lab: &Lab| -> BTreeSet<String> {
        lab.status()["pods"]
            .as_array()
            .expect("pods")
            .iter()
            .filter_map(|p| p["hostVeth"].as_str().map(str::to_owned))
            .collect()
    };
    let before = veths(&lab);

    // The lab is rebuilt with one more pod: every veth is new.
    let grown = format!(
        "{}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: late, namespace: infra, labels: {{app: late}}}}\nspec:\n  containers: [{{name: l, image: lab}}]\n",
        lab_yaml(133)
    );
    lab.replace(&grown);
    let after = veths(&lab);
    assert_eq!(after.len(), before.len() + 1);
    let attached = eventually(Duration::from_secs(10), || {
        let n = agent.metric("weir_attached_interfaces")?;
        (n == after.len() as f64).then_some(n)
    });
    assert!(
        attached.is_some(),
        "new pods attached:\n{}",
        agent.log_text()
    );

    // Traffic from the new pod is attributed to it.
    let late = lab.pod("infra", "late");
    let dns = lab.pod("infra", "dns");
    assert!(lab.probe(&late, &dns, "53/UDP"));
    let seen = eventually(Duration::from_secs(10), || {
        graph_edges(&agent.get_json("/api/graph"))
            .contains(&edge("infra/late", "infra/dns", 53, "UDP"))
            .then_some(())
    });
    assert!(
        seen.is_some(),
        "flow of a pod that came later:\n{}",
        agent.log_text()
    );
    assert_eq!(
        attached_programs(&after).len(),
        2 * after.len(),
        "both directions of every pod veth carry a probe"
    );

    // SIGTERM: a clean exit that leaves no program on any pod veth.
    assert!(
        agent.stop(),
        "agent exits 0 on SIGTERM:\n{}",
        agent.log_text()
    );
    // While the agent ran, the probes were there (the check can fail)...
    // and after SIGTERM, none remain.
    assert!(
        attached_programs(&after).is_empty(),
        "weir programs left after shutdown: {:?}",
        attached_programs(&after)
    );
}

/// weir programs attached (tcx) to any of `veths`, as (veth, program).
fn attached_programs(veths: &BTreeSet<String>) -> Vec<(String, String)> {
    use aya::programs::{SchedClassifier, TcAttachType};
    let mut found = Vec::new();
    for veth in veths {
        for direction in [TcAttachType::Ingress, TcAttachType::Egress] {
            let (_, programs) = SchedClassifier::query_tcx(veth, direction)
                .unwrap_or_else(|e| panic!("query tcx on {veth}: {e}"));
            for p in programs {
                let name = p.name_as_str().unwrap_or_default().to_owned();
                if name.starts_with("weir_") {
                    found.push((veth.clone(), name));
                }
            }
        }
    }
    found
}

#[test]
fn connections_open_before_the_agent_started_are_learned_with_their_direction() {
    let lab = Lab::up("pre", &lab_yaml(134));
    let client = lab.pod("front", "client");
    let web = lab.pod("front", "web-");
    let web_ip = pod_ip(&lab, &web, false);
    // An idle keep-alive connection, opened before any probe exists: the
    // probes will never see its handshake, nor any packet of it.
    let mut holder = std::process::Command::new(weir_integration_tests::harness::weir_bin())
        .args(["lab", "--lab", &lab.name, "exec", &client, "--"])
        .args([
            "python3",
            "-c",
            &format!(
                "import socket, sys, time\ns = socket.create_connection(('{web_ip}', 80))\nprint('open', flush=True)\nsys.stdin.readline()\ns.sendall(b'ping\\n')\nprint('echo', s.recv(16).decode().strip(), flush=True)\ntime.sleep(30)"
            ),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the connection holder");
    let mut output = std::io::BufReader::new(holder.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut output, &mut line).expect("holder output");
    assert_eq!(line.trim(), "open");

    let agent = Agent::start(&lab, &[]);
    let graph = eventually(Duration::from_secs(10), || {
        let graph = agent.get_json("/api/graph");
        (!graph_edges(&graph).is_empty()).then_some(graph)
    });
    let graph = graph.unwrap_or_else(|| {
        let _ = holder.kill();
        panic!("no edge learned:\n{}", agent.log_text())
    });
    assert_eq!(
        graph_edges(&graph),
        BTreeSet::from([edge("front/client", "front/web", 80, "TCP")]),
        "client -> web, never the reverse"
    );
    assert_eq!(graph["edges"][0]["connections"], 1, "counted once");

    // The connection speaks: its packets make table entries at both veths
    // (mid-stream, the initiator guessed, then settled by the sockets). They
    // bring its packets, and no second connection.
    std::io::Write::write_all(holder.stdin.as_mut().expect("stdin"), b"go\n").expect("to holder");
    line.clear();
    std::io::BufRead::read_line(&mut output, &mut line).expect("holder output");
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(line.trim(), "echo ping", "the connection is still open");
    let graph = eventually(Duration::from_secs(10), || {
        let graph = agent.get_json("/api/graph");
        (graph["edges"][0]["packets"].as_u64() >= Some(2)).then_some(graph)
    })
    .unwrap_or_else(|| {
        panic!(
            "the packets were never counted: {:#}\n{}",
            agent.get_json("/api/graph"),
            agent.log_text()
        )
    });
    assert_eq!(
        graph_edges(&graph),
        BTreeSet::from([edge("front/client", "front/web", 80, "TCP")]),
        "{graph:#}"
    );
    assert_eq!(
        graph["edges"][0]["connections"], 1,
        "still one connection: {graph:#}"
    );
}

/// A restart with another `--flow-table-entries` adopts the pinned table
/// as it is: the agent says so, and reports the table's real capacity.
#[test]
fn a_pinned_flow_table_keeps_its_size_and_the_agent_reports_it() {
    let lab = Lab::up("resize", &lab_yaml(175));
    let pins = PinDir::new("resize");
    let pin_arg = pins.arg();
    let mut first = Agent::start(&lab, &["--pin-dir", &pin_arg, "--flow-table-entries", "64"]);
    assert_eq!(first.metric("weir_flow_table_capacity"), Some(64.0));
    // Killed: the pins stay, as after a crash or an upgrade.
    first.kill();
    let second = Agent::start(
        &lab,
        &["--pin-dir", &pin_arg, "--flow-table-entries", "128"],
    );
    let log = second.log_text();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("pinned map FLOWS was adopted")
            && l.contains("(64), not the 128 asked for")),
        "{log}"
    );
    assert_eq!(second.metric("weir_flow_table_capacity"), Some(64.0));
    assert_eq!(second.get_json("/healthz")["flow_table_capacity"], 64);
}

/// (connections, packets, bytes) of the edge `id`, if drawn.
fn edge_counters(agent: &Agent, id: &str) -> Option<(u64, u64, u64)> {
    let graph = agent.get_json("/api/graph");
    let e = graph["edges"].as_array()?.iter().find(|e| e["id"] == id)?;
    Some((
        e["connections"].as_u64()?,
        e["packets"].as_u64()?,
        e["bytes"].as_u64()?,
    ))
}

/// The flows still in the pinned kernel table when the agent is killed are
/// not folded a second time by its successor: the store and the table agree
/// on what was folded, so the counters are equal across the restart, and
/// what happens afterwards adds up from there.
#[test]
fn counters_survive_a_kill_9_restart_exactly() {
    let lab = Lab::up("rst", &lab_yaml(135));
    // Long timeouts: the flows stay in the table across the restart.
    let home = AgentHome::new(
        "rst",
        &[
            "--flow-closing-timeout",
            "120s",
            "--flow-idle-timeout",
            "120s",
            "--save-interval",
            "200ms",
        ],
    );
    let mut agent = home.start(&lab);
    let client = lab.pod("front", "client");
    let web = lab.pod("front", "web-");
    const EDGE: &str = "front/client->front/web";
    for _ in 0..5 {
        assert!(lab.probe(&client, &web, "80/TCP"), "client -> web");
    }
    eventually(Duration::from_secs(10), || {
        (edge_counters(&agent, EDGE)?.0 == 5).then_some(())
    })
    .unwrap_or_else(|| panic!("5 connections: {:#}", agent.get_json("/api/graph")));
    // Sweeps and saves go by, with nothing new.
    std::thread::sleep(Duration::from_secs(1));
    let before = edge_counters(&agent, EDGE).expect("the edge");
    let contribution = agent.get_json("/api/v1/contribution");

    agent.kill();
    let agent = home.start(&lab);
    // Several sweeps of the adopted table.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        edge_counters(&agent, EDGE),
        Some(before),
        "(connections, packets, bytes) after the restart:\n{}",
        agent.log_text()
    );
    // The store kept its identity and the edges' sides (a relay can still
    // tell them apart); the restart is a new instance.
    let again = agent.get_json("/api/v1/contribution");
    assert_eq!(again["epoch"], contribution["epoch"]);
    assert_ne!(again["instance"], contribution["instance"]);
    assert_eq!(again["edges"], contribution["edges"], "{again}");

    assert!(lab.probe(&client, &web, "80/TCP"), "client -> web");
    let after = eventually(Duration::from_secs(10), || {
        edge_counters(&agent, EDGE).filter(|c| c.0 == 6 && c.1 > before.1)
    })
    .unwrap_or_else(|| panic!("a sixth connection: {:#}", agent.get_json("/api/graph")));
    assert!(after.2 > before.2, "{before:?} then {after:?}");
}
