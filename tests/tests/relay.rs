//! Two simulated nodes on this machine: a lab with nodes a and b (a bridge
//! each, routed through the host), the fake API server serving both nodes'
//! pods on their nodes, and an agent per node on `--source kube`
//! (`NODE_NAME` a and b). Cross-node connections driven by the test are
//! seen by both agents, from the initiator's side on one and the
//! responder's on the other; merged, each edge is there once with as many
//! connections as were made, exactly what one agent counts when the same
//! pods and traffic sit on one node.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use weir_agent::{
    api::wire::{ContributionJson, EdgeEndJson, SeenFromJson},
    relay::merge::merge,
};
use weir_generator::model::EdgeKey;
use weir_integration_tests::{
    fake_apiserver::FakeApiServer,
    harness::{Agent, Lab, eventually},
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
    let agent_a = Agent::start_on_node(&lab, "a", "kube", &[], &env);
    let agent_b = Agent::start_on_node(&lab, "b", "kube", &[], &env);
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
}
