//! Two simulated nodes on this machine: a lab with nodes a and b (a bridge
//! each, routed through the host), the fake API server serving both nodes'
//! pods on their nodes, and an agent per node on `--source kube`
//! (`NODE_NAME` a and b). Cross-node connections driven by the test are
//! seen by both agents, from the initiator's side on one and the
//! responder's on the other; merged, each edge is there once with as many
//! connections as were made, exactly what one agent counts when the same
//! pods and traffic sit on one node.
//!
//! Then `weir relay` over the two agents (mutual TLS, certificates from
//! `weir certs`; the agents found in their Service's EndpointSlice and
//! counted by their DaemonSet, which the fake API server serves with the
//! pods and takes the relay's writes): its graph counts each connection once, its export is the one
//! node's byte for byte but for evidence times, and a namespace it flips
//! to enforce (with the policies it applied) drops disallowed cross-node
//! connections on both nodes. Agent b killed: coverage 1 of 2, b stale,
//! b's edges kept, writes refused naming b unless partial ones are
//! allowed; b back with a wiped store: the relay takes its new epoch; the
//! relay restarted: nothing lost.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use serde_json::Value;
use weir_agent::{
    api::wire::{ContributionJson, EdgeEndJson, SeenFromJson},
    relay::merge::merge,
};
use weir_generator::model::EdgeKey;
use weir_integration_tests::{
    fake_apiserver::{FakeApiServer, agents_endpointslice, daemonset},
    harness::{
        Agent, Lab, api_token, eventually, free_local_addr, unique_name, weir, weir_bin, weir_ok,
    },
};

/// The pods, on their nodes; `{node_a}`/`{node_b}` become `spec: {nodeName: ...}`
/// fields, or nothing for the one-node reference.
fn lab_yaml(lab: &str, nodes: bool) -> String {
    let on = |node: &str| {
        if nodes {
            format!("nodeName: {node}, ")
        } else {
            String::new()
        }
    };
    let pod = |ns: &str, name: &str, node: &str, port: Option<u16>| {
        let ports = port.map_or_else(String::new, |p| {
            format!(", ports: [{{containerPort: {p}}}]")
        });
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {name}}}}}\n\
             spec: {{{}containers: [{{name: c{ports}}}]}}\n",
            on(node)
        )
    };
    let settings = if nodes {
        "serviceCIDR: 10.157.0.0/16, nodes: [{name: a, podCIDR: 10.151.0.0/16}, {name: b, podCIDR: 10.152.0.0/16}]"
    } else {
        "serviceCIDR: 10.159.0.0/16, podCIDR: 10.158.0.0/16"
    };
    let mut yaml = format!(
        "apiVersion: lab.weir.dev/v1alpha1\nkind: Lab\nmetadata: {{name: {lab}}}\nspec: {{{settings}}}\n\
         ---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: front}}\n\
         ---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: back}}\n"
    );
    for (ns, name, node, port) in [
        ("front", "client", "a", None),
        ("front", "web", "a", Some(80)),
        ("back", "api", "b", Some(8080)),
        ("back", "db", "b", Some(5432)),
        ("back", "cache", "a", Some(6379)),
    ] {
        yaml.push_str(&pod(ns, name, node, port));
    }
    yaml
}

/// (from, to, port, connections): two edges within a node, two across
/// (a -> b and b -> a).
const TRAFFIC: [(&str, &str, u16, u64); 4] = [
    ("front/client", "front/web", 80, 1),
    ("front/web", "back/api", 8080, 3),
    ("back/api", "back/cache", 6379, 2),
    ("back/api", "back/db", 5432, 2),
];

fn drive(lab: &Lab) {
    for (from, to, port, n) in TRAFFIC {
        for _ in 0..n {
            assert!(
                lab.probe(from, to, &format!("{port}/TCP")),
                "{from} -> {to}:{port}"
            );
        }
    }
}

fn contribution(agent: &Agent) -> ContributionJson {
    serde_json::from_value(agent.get_json("/api/v1/contribution")).expect("a contribution")
}

fn end(e: &EdgeEndJson) -> String {
    match e {
        EdgeEndJson::Workload(w) => format!("{}/{}", w.namespace, w.name),
        EdgeEndJson::External(ip) => ip.to_string(),
    }
}

/// (source, target, port) -> (seen from, initiator node, responder node,
/// connections) of every side.
type Sides =
    BTreeMap<(String, String, u16), Vec<(SeenFromJson, Option<String>, Option<String>, u64)>>;

fn sides(c: &ContributionJson) -> Sides {
    c.edges
        .iter()
        .map(|e| {
            (
                (end(&e.source), end(&e.target), e.port),
                e.sides
                    .iter()
                    .map(|s| {
                        (
                            s.seen_from,
                            s.initiator_node.clone(),
                            s.responder_node.clone(),
                            s.connections,
                        )
                    })
                    .collect(),
            )
        })
        .collect()
}

/// The contribution once it holds every connection of `edges`.
fn settled(agent: &Agent, edges: &[(&str, &str, u16, u64)]) -> ContributionJson {
    eventually(Duration::from_secs(15), || {
        let c = contribution(agent);
        let got = sides(&c);
        edges
            .iter()
            .all(|(from, to, port, n)| {
                got.get(&((*from).to_owned(), (*to).to_owned(), *port))
                    .is_some_and(|s| s.iter().map(|s| s.3).sum::<u64>() == *n)
            })
            .then_some(c)
    })
    .unwrap_or_else(|| {
        panic!(
            "contribution incomplete: {:#?}\nlog:\n{}",
            sides(&contribution(agent)),
            agent.log_text()
        )
    })
}

fn connections(
    edges: &BTreeMap<EdgeKey, weir_generator::model::EdgeStats>,
) -> BTreeMap<String, u64> {
    edges
        .iter()
        .map(|(k, s)| {
            (
                format!("{} -> {} {}/{}", k.source, k.target, k.port, k.protocol),
                s.connections,
            )
        })
        .collect()
}

/// The connections of `view` as `/api/graph` shows them: learned and
/// dropped ones, per edge.
fn view_connections(view: &weir_agent::aggregator::GraphView) -> BTreeMap<String, u64> {
    let mut all = connections(&view.graph.edges);
    for (edge, n) in connections(&view.drops) {
        *all.entry(edge).or_default() += n;
    }
    all
}

/// A running `weir relay`, killed on drop.
struct Relay {
    child: std::process::Child,
    listen: std::net::SocketAddr,
    log: std::path::PathBuf,
}

impl Relay {
    fn start(
        state_dir: &std::path::Path,
        tls_dir: &std::path::Path,
        discovery: &[String],
        kubeconfig: &str,
    ) -> Self {
        let listen = free_local_addr();
        let log = std::env::temp_dir().join(format!("{}.log", unique_name("relay-")));
        let mut args = vec![
            "relay".to_owned(),
            "--listen".into(),
            listen.to_string(),
            "--state-dir".into(),
            state_dir.display().to_string(),
            "--tls-dir".into(),
            tls_dir.display().to_string(),
            "--sync-interval".into(),
            "300ms".into(),
        ];
        args.extend_from_slice(discovery);
        let child = std::process::Command::new(weir_bin())
            .args(&args)
            .env("KUBECONFIG", kubeconfig)
            .env("WEIR_TOKEN", api_token())
            .env("RUST_LOG", "info,weir_agent=debug")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("relay log"))
            .spawn()
            .expect("weir relay");
        let mut relay = Self { child, listen, log };
        eventually(Duration::from_secs(20), || {
            if let Ok(Some(status)) = relay.child.try_wait() {
                panic!("relay exited ({status}):\n{}", relay.log_text());
            }
            relay.get("/healthz").map(|_| ())
        })
        .unwrap_or_else(|| panic!("relay never answered:\n{}", relay.log_text()));
        relay
    }

    fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn get(&self, path: &str) -> Option<Value> {
        reqwest::blocking::Client::new()
            .get(format!("{}{path}", self.url()))
            .timeout(Duration::from_secs(5))
            .send()
            .ok()?
            .json()
            .ok()
    }

    fn coverage(&self) -> Value {
        self.get("/api/v1/coverage")
            .unwrap_or_else(|| panic!("no coverage:\n{}", self.log_text()))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as a rollout restarts it, and wait for the exit: the relay
    /// writes its last contributions then (between periodic checkpoints a
    /// SIGKILL may lose the last few seconds, which its agents still hold).
    fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(
                    status.success(),
                    "the relay exited with {status}:\n{}",
                    self.log_text()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the relay did not stop on SIGTERM:\n{}", self.log_text());
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill();
    }
}

/// "source -> target port/PROTO" -> connections of a graph (`/api/graph`).
fn graph_connections(graph: &Value) -> BTreeMap<String, u64> {
    let mut edges = BTreeMap::new();
    for e in graph["edges"].as_array().into_iter().flatten() {
        for p in e["ports"].as_array().into_iter().flatten() {
            edges.insert(
                format!(
                    "{} -> {} {}/{}",
                    e["source"].as_str().unwrap_or_default(),
                    e["target"].as_str().unwrap_or_default(),
                    p["port"],
                    p["protocol"].as_str().unwrap_or_default()
                ),
                e["connections"].as_u64().unwrap_or(0),
            );
        }
    }
    edges
}

/// `weir export` YAML with the evidence times (RFC 3339 instants) blanked.
fn without_times(yaml: &str) -> String {
    yaml.lines()
        .map(|line| {
            line.split(' ')
                .map(|word| {
                    let w = word.trim_end_matches([',', ')']);
                    if w.len() >= 20
                        && w.as_bytes()[4] == b'-'
                        && w.contains('T')
                        && w.ends_with('Z')
                    {
                        word.replace(w, "TIME")
                    } else {
                        word.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `weir observe` records of `agent` with `verdict`, as (source pod,
/// destination pod, port).
fn verdicts(agent: &Agent, verdict: &str) -> BTreeSet<(String, String, u64)> {
    let url = agent.url();
    weir_ok(&[
        "observe",
        "--server",
        &url,
        "--last",
        "1000",
        "-o",
        "json",
        "--verdict",
        verdict,
    ])
    .lines()
    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
    .map(|f| {
        let pod = |e: &Value| {
            format!(
                "{}/{}",
                e["namespace"].as_str().unwrap_or_default(),
                e["pod_name"].as_str().unwrap_or_default()
            )
        };
        (
            pod(&f["source"]),
            pod(&f["destination"]),
            f["l4"]["TCP"]["destination_port"].as_u64().unwrap_or(0),
        )
    })
    .collect()
}

#[test]
fn two_nodes_each_edge_once_as_one_node_counts_it() {
    let lab = Lab::up("relay", &lab_yaml("relay", true));
    let status = lab.status();
    let nodes: BTreeSet<&str> = status["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .filter_map(|p| p["node"].as_str())
        .collect();
    assert_eq!(nodes, BTreeSet::from(["a", "b"]), "{status:#}");
    let api = FakeApiServer::for_lab(&status, "a", &BTreeMap::new());
    let kubeconfig = api.kubeconfig().to_string_lossy().into_owned();
    let env = [("KUBECONFIG", kubeconfig.as_str())];
    let certs = tempfile::tempdir().expect("certs dir");
    let certs_arg = certs.path().display().to_string();
    let _ = weir_ok(&["certs", "--out", &certs_arg, "--node", "a", "--node", "b"]);
    // The agents' relay listeners on one port of two loopback addresses,
    // as a DaemonSet's pods share a port on their nodes' addresses; the
    // relay finds them in the agents' Service's EndpointSlice and expects
    // as many as their DaemonSet schedules.
    let port = free_local_addr().port();
    let relay_listen = BTreeMap::from([
        ("a", std::net::SocketAddr::from(([127, 0, 0, 2], port))),
        ("b", std::net::SocketAddr::from(([127, 0, 0, 3], port))),
    ]);
    let mut slice = agents_endpointslice(
        "weir/weir-agents",
        &[("a", "127.0.0.2", true), ("b", "127.0.0.3", true)],
    );
    slice["ports"][0]["port"] = port.into();
    api.apply("ADDED", slice);
    api.apply("ADDED", daemonset("weir/weir-agent", 2));
    let agent_args = |node: &str| -> Vec<String> {
        vec![
            "--relay-listen".into(),
            relay_listen[node].to_string(),
            "--relay-tls-dir".into(),
            certs.path().join("agents").join(node).display().to_string(),
        ]
    };
    let start_agent = |node: &str, extra: &[&str]| {
        let args = agent_args(node);
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        all.extend_from_slice(extra);
        Agent::start_on_node(&lab, node, "kube", &all, &env)
    };
    let agent_a = start_agent("a", &[]);
    let mut agent_b = start_agent("b", &[]);
    drive(&lab);

    // Each agent counts what its node saw: a connection within a node
    // from both ends, one across nodes from its side, naming the other.
    let a = settled(&agent_a, &[TRAFFIC[0], TRAFFIC[1], TRAFFIC[2]]);
    let b = settled(&agent_b, &[TRAFFIC[1], TRAFFIC[2], TRAFFIC[3]]);
    let (na, nb) = (Some("a".to_owned()), Some("b".to_owned()));
    let key = |i: usize| {
        (
            TRAFFIC[i].0.to_owned(),
            TRAFFIC[i].1.to_owned(),
            TRAFFIC[i].2,
        )
    };
    assert_eq!(
        sides(&a),
        BTreeMap::from([
            (
                key(0),
                vec![(SeenFromJson::Both, na.clone(), na.clone(), 1)]
            ),
            (
                key(1),
                vec![(SeenFromJson::Initiator, na.clone(), nb.clone(), 3)]
            ),
            (
                key(2),
                vec![(SeenFromJson::Responder, nb.clone(), na.clone(), 2)]
            ),
        ]),
        "node a"
    );
    assert_eq!(
        sides(&b),
        BTreeMap::from([
            (
                key(1),
                vec![(SeenFromJson::Responder, na.clone(), nb.clone(), 3)]
            ),
            (
                key(2),
                vec![(SeenFromJson::Initiator, nb.clone(), na.clone(), 2)]
            ),
            (
                key(3),
                vec![(SeenFromJson::Both, nb.clone(), nb.clone(), 2)]
            ),
        ]),
        "node b"
    );

    // Merged: every edge once, with the connections made (not doubled).
    let merged = merge([&a, &b]);
    let want: BTreeMap<String, u64> = TRAFFIC
        .iter()
        .map(|(from, to, port, n)| (format!("{from} -> {to} {port}/TCP"), *n))
        .collect();
    let got = connections(&merged.view.graph.edges);
    assert_eq!(got, want, "merged");

    // One node holding the same pods and traffic counts the same.
    let one = Lab::up("relay1", &lab_yaml("relay1", false));
    let reference = Agent::start(&one, &[]);
    drive(&one);
    let r = settled(&reference, &TRAFFIC);
    assert_eq!(
        connections(&merge([&r]).view.graph.edges),
        got,
        "one node vs two nodes merged"
    );

    // The relay over both agents.
    let relay_state = tempfile::tempdir().expect("relay state");
    let agents: Vec<String> = [
        "--agents-service",
        "weir/weir-agents",
        "--daemonset",
        "weir/weir-agent",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut relay = Relay::start(
        relay_state.path(),
        &certs.path().join("relay"),
        &agents,
        &kubeconfig,
    );
    let synced = |relay: &Relay, edges: &BTreeMap<String, u64>| {
        eventually(Duration::from_secs(15), || {
            let graph = relay.get("/api/graph")?;
            (graph_connections(&graph) == *edges).then_some(graph)
        })
        .unwrap_or_else(|| {
            panic!(
                "relay graph {:#?} != {edges:#?}\ncoverage {}\nlog:\n{}",
                relay.get("/api/graph").map(|g| graph_connections(&g)),
                relay.coverage(),
                relay.log_text()
            )
        })
    };
    let graph = synced(&relay, &want);
    assert_eq!(graph["coverage"]["synced"], 2, "{:#}", graph["coverage"]);
    assert_eq!(
        graph_connections(&reference.get_json("/api/graph")),
        want,
        "the one-node agent"
    );

    // The relay's export is the one node's but for evidence times.
    let export = |url: &str| without_times(&weir_ok(&["export", "--server", url]));
    let (merged_yaml, one_yaml) = (export(&relay.url()), export(&reference.url()));
    assert!(merged_yaml.contains("kind: NetworkPolicy"), "{merged_yaml}");
    assert_eq!(merged_yaml, one_yaml, "relay export vs one-node export");
    drop(reference);
    drop(one);

    // Enforce `back` through the relay: its policies by server-side apply,
    // its mode by the namespace label; the agents read both from the API.
    let _ = weir_ok(&["export", "--apply", "--server", &relay.url()]);
    assert!(
        api.object("networkpolicies", "back/weir-db").is_some(),
        "the relay applied back's policies: {:?}",
        api.writes()
    );
    // Its edges are minutes old: the merged view does not judge it ready.
    let refused = weir(&["mode", "set", "back", "enforce", "--server", &relay.url()]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && stderr.contains("namespace back is not ready for enforce")
            && stderr.contains("within the quiet period"),
        "the relay's readiness gate: {refused:?}"
    );
    let _ = weir_ok(&[
        "mode",
        "set",
        "back",
        "enforce",
        "--force",
        "--server",
        &relay.url(),
    ]);
    for agent in [&agent_a, &agent_b] {
        eventually(Duration::from_secs(10), || {
            (agent.get_json("/api/modes")["modes"]["back"] == "enforce").then_some(())
        })
        .unwrap_or_else(|| panic!("back never enforced:\n{}", agent.log_text()));
    }
    // Learned, still allowed across nodes; never learned, dropped: cache
    // (a) -> db (b) at cache's node (egress), client (a) -> db (b) at db's
    // (ingress).
    assert!(
        lab.probe("front/web", "back/api", "8080/TCP"),
        "learned web -> api"
    );
    assert!(
        lab.probe("back/api", "back/cache", "6379/TCP"),
        "learned api -> cache"
    );
    assert!(
        !lab.probe("back/cache", "back/db", "5432/TCP"),
        "cache -> db"
    );
    assert!(
        !lab.probe("front/client", "back/db", "5432/TCP"),
        "client -> db"
    );
    let drop_on = |agent: &Agent, from: &str| {
        eventually(Duration::from_secs(10), || {
            verdicts(agent, "DROPPED")
                .contains(&(from.to_owned(), "back/db".to_owned(), 5432))
                .then_some(())
        })
        .unwrap_or_else(|| panic!("no drop of {from} -> back/db:\n{}", agent.log_text()))
    };
    drop_on(&agent_a, "back/cache");
    drop_on(&agent_b, "front/client");

    // Agent b killed: coverage 1 of 2, b stale, its edges kept, writes
    // refused naming b unless partial ones are allowed.
    let before = graph_connections(&relay.get("/api/graph").expect("graph"));
    agent_b.kill();
    let coverage = eventually(Duration::from_secs(15), || {
        let c = relay.coverage();
        (c["stale"] == serde_json::json!(["b"])).then_some(c)
    })
    .unwrap_or_else(|| panic!("b never stale: {}\n{}", relay.coverage(), relay.log_text()));
    assert_eq!(
        (coverage["expected"].as_u64(), coverage["synced"].as_u64()),
        (Some(2), Some(1)),
        "{coverage:#}"
    );
    assert_eq!(
        graph_connections(&relay.get("/api/graph").expect("graph")),
        before,
        "b's edges are kept"
    );
    let refused = weir(&["export", "--apply", "--server", &relay.url()]);
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && message.contains("missing: b"),
        "{message}"
    );
    let partial = weir_ok(&[
        "export",
        "--apply",
        "--allow-partial",
        "--server",
        &relay.url(),
    ]);
    assert!(partial.contains("enforced"), "{partial}");

    // Agent b back with a wiped store: a new epoch, which the relay takes.
    let old_epoch = coverage["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["node"] == "b"))
        .map(|n| n["epoch"].clone())
        .expect("b's epoch");
    let agent_b = start_agent("b", &[]);
    let new_epoch = contribution(&agent_b).epoch;
    assert_ne!(
        Value::from(new_epoch.clone()),
        old_epoch,
        "a wiped store has a new epoch"
    );
    eventually(Duration::from_secs(15), || {
        let c = relay.coverage();
        let b = c["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["node"] == "b")?
            .clone();
        (c["synced"] == 2 && b["epoch"] == new_epoch.as_str()).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the relay kept b's old epoch: {}\n{}",
            relay.coverage(),
            relay.log_text()
        )
    });
    // What the relay holds of b is the new store's, not the old one's
    // added to it: the graph is a's and the new b's contributions merged,
    // with the connection b learned since (api and db both on b) counted
    // once, not on top of the old store's two.
    assert!(
        lab.probe("back/api", "back/db", "5432/TCP"),
        "learned api -> db"
    );
    let after_wipe = eventually(Duration::from_secs(15), || {
        let held = graph_connections(&relay.get("/api/graph")?);
        let fresh =
            view_connections(&merge([&contribution(&agent_a), &contribution(&agent_b)]).view);
        (held == fresh && held.get("back/api -> back/db 5432/TCP") == Some(&1)).then_some(held)
    })
    .unwrap_or_else(|| {
        panic!(
            "the relay's graph is not the agents' after b's wipe: {:#?}\nthe agents': {:#?}\n{}",
            relay.get("/api/graph").map(|g| graph_connections(&g)),
            view_connections(&merge([&contribution(&agent_a), &contribution(&agent_b)]).view),
            relay.log_text()
        )
    });
    // The relay restarted on its store (SIGTERM, as a rollout does, within
    // the checkpoint period of b's last change): it serves what it held
    // before, read back from its checkpoint; then both
    // agents gone: both nodes stale, their edges kept.
    relay.stop();
    let relay = Relay::start(
        relay_state.path(),
        &certs.path().join("relay"),
        &agents,
        &kubeconfig,
    );
    assert_eq!(
        graph_connections(&relay.get("/api/graph").expect("graph")),
        after_wipe,
        "the restarted relay serves its checkpoint at once"
    );
    eventually(Duration::from_secs(15), || {
        (relay.coverage()["synced"] == 2).then_some(())
    })
    .unwrap_or_else(|| panic!("{}\n{}", relay.coverage(), relay.log_text()));
    assert_eq!(
        graph_connections(&relay.get("/api/graph").expect("graph")),
        after_wipe,
        "the agents read again after the restart"
    );
    drop(agent_b);
    drop(agent_a);
    let coverage = eventually(Duration::from_secs(15), || {
        let c = relay.coverage();
        (c["stale"] == serde_json::json!(["a", "b"])).then_some(c)
    })
    .unwrap_or_else(|| panic!("{}\n{}", relay.coverage(), relay.log_text()));
    assert_eq!(coverage["synced"], 0, "{coverage:#}");
    assert_eq!(
        graph_connections(&relay.get("/api/graph").expect("graph")),
        after_wipe,
        "stale nodes' edges are kept"
    );
}
