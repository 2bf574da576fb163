//! The lab as a node of a cluster: its pods, namespaces and Services served
//! as API objects by a fake API server, the agent on `--source kube`. It
//! must attach to every pod and attribute flows exactly as an agent on
//! `--source lab` does for the same traffic; a namespace relabelled
//! `weir.dev/mode=enforce` with a NetworkPolicy pushed through the watch
//! turns the datapath to enforcement, and relabelled `observe` turns it
//! back.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use serde_json::{Value, json};
use weir_integration_tests::{
    fake_apiserver::{FakeApiServer, namespace},
    harness::{Agent, Lab, eventually, unique_name, weir_bin, weir_ok},
};

const LAB: &str = r"apiVersion: lab.weir.dev/v1alpha1
kind: Lab
metadata: {name: kube}
spec: {podCIDR: 10.181.0.0/16}
---
apiVersion: v1
kind: Namespace
metadata: {name: front}
---
apiVersion: v1
kind: Namespace
metadata: {name: back}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: front}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: lab, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: front, labels: {app: client}}
spec: {containers: [{name: c, image: lab}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: back}
spec:
  replicas: 1
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {containers: [{name: api, image: lab, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: back, labels: {app: db}}
spec: {containers: [{name: db, image: lab, ports: [{containerPort: 5432}]}]}
";

/// Back's pods accept web's connections to 8080 only.
fn allow_web_to_api() -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "api-from-web", "namespace": "back", "uid": "np-api-from-web"},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{
                "from": [{
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "front"}},
                    "podSelector": {"matchLabels": {"app": "web"}},
                }],
                "ports": [{"port": 8080, "protocol": "TCP"}],
            }],
        },
    })
}

struct Pods {
    client: String,
    web: String,
    api: String,
    db: String,
}

/// The test's traffic: each connection twice.
fn drive(lab: &Lab, pods: &Pods) {
    for _ in 0..2 {
        assert!(
            lab.probe(&pods.client, &pods.web, "80/TCP"),
            "client -> web"
        );
        assert!(lab.probe(&pods.web, &pods.api, "8080/TCP"), "web -> api");
        assert!(
            lab.probe(&pods.client, &pods.db, "5432/TCP"),
            "client -> db"
        );
    }
}

/// (source, target, port, protocol, connections) of every graph edge.
type Edge = (String, String, u64, String, u64);

fn graph_edges(agent: &Agent) -> BTreeSet<Edge> {
    let graph = agent.get_json("/api/graph");
    let mut edges = BTreeSet::new();
    for e in graph["edges"].as_array().expect("edges") {
        for p in e["ports"].as_array().expect("ports") {
            edges.insert((
                e["source"].as_str().expect("source").to_owned(),
                e["target"].as_str().expect("target").to_owned(),
                p["port"].as_u64().expect("port"),
                p["protocol"].as_str().expect("protocol").to_owned(),
                e["connections"].as_u64().unwrap_or(0),
            ));
        }
    }
    edges
}

/// The graph's nodes without times and counters: how pods were attributed.
fn graph_nodes(agent: &Agent) -> BTreeSet<String> {
    let graph = agent.get_json("/api/graph");
    graph["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            json!({
                "id": n["id"], "kind": n["kind"], "namespace": n["namespace"],
                "workload": n["workload"], "labels": n["labels"], "pods": n["pods"],
            })
            .to_string()
        })
        .collect()
}

/// `weir observe -o json`, each record cut to what attribution decides:
/// both ends without their ephemeral ports, the protocol, the verdict.
fn flows(agent: &Agent, filters: &[&str]) -> Vec<Value> {
    let url = agent.url();
    let mut args = vec!["observe", "--server", &url, "--last", "1000", "-o", "json"];
    args.extend_from_slice(filters);
    weir_ok(&args)
        .lines()
        .map(|l| serde_json::from_str(l).expect("observe -o json is JSON lines"))
        .collect()
}

fn attribution(flow: &Value) -> String {
    let (protocol, l4) = flow["l4"]
        .as_object()
        .and_then(|l4| l4.iter().next())
        .map_or((None, &Value::Null), |(k, v)| (Some(k.clone()), v));
    json!({
        "source": flow["source"],
        "destination": flow["destination"],
        "ip": flow["IP"],
        "protocol": protocol,
        "destination_port": l4["destination_port"],
        "direction": flow["traffic_direction"],
        "is_reply": flow["is_reply"],
        "verdict": flow["verdict"],
        "endpoint": flow["weir"]["endpoint"]["pod"],
        "initiator": flow["weir"]["initiator"],
    })
    .to_string()
}

/// What an agent reported for [`drive`]'s traffic, once the sweep brought
/// every connection.
fn report(agent: &Agent) -> (BTreeSet<Edge>, BTreeSet<String>, BTreeSet<String>) {
    let edges = eventually(Duration::from_secs(10), || {
        let edges = graph_edges(agent);
        (edges.len() == 3 && edges.iter().all(|e| e.4 >= 2)).then_some(edges)
    })
    .unwrap_or_else(|| {
        panic!(
            "graph incomplete: {:#}\nlog:\n{}",
            agent.get_json("/api/graph"),
            agent.log_text()
        )
    });
    let flows = flows(agent, &[]).iter().map(attribution).collect();
    (edges, graph_nodes(agent), flows)
}

fn modes(agent: &Agent) -> Value {
    agent.get_json("/api/modes")
}

#[test]
fn the_kube_source_attaches_attributes_and_follows_namespace_modes() {
    let lab = Lab::up("kube", LAB);
    let pods = Pods {
        client: lab.pod("front", "client"),
        web: lab.pod("front", "web-"),
        api: lab.pod("back", "api-"),
        db: lab.pod("back", "db-0"),
    };
    let pod_count = lab.status()["pods"].as_array().map_or(0, Vec::len);
    assert_eq!(pod_count, 4, "{}", lab.status());

    // The reference: the same traffic through the lab source.
    let reference = {
        let agent = Agent::start(&lab, &[]);
        drive(&lab, &pods);
        report(&agent)
    };

    let node = unique_name("kube-node-");
    let api = FakeApiServer::for_lab(&lab.status(), &node, &BTreeMap::new());
    let kubeconfig = api.kubeconfig().to_string_lossy().into_owned();
    let agent = Agent::start_with(
        &lab,
        "kube",
        &["--node-name", &node],
        &[("KUBECONFIG", &kubeconfig)],
    );
    assert_eq!(
        agent.metric("weir_attached_interfaces"),
        Some(pod_count as f64),
        "attached to every lab pod"
    );
    for resource in ["pods", "namespaces", "networkpolicies"] {
        assert!(
            api.open_watches(resource) >= 1,
            "the agent watches {resource} after listing"
        );
    }
    let healthz = agent.get_json("/healthz");
    assert_eq!(healthz["source"]["source"], "kube", "{healthz:#}");
    assert_eq!(healthz["attached_pods"], pod_count, "{healthz:#}");

    drive(&lab, &pods);
    let observed = report(&agent);
    assert_eq!(observed.0, reference.0, "graph edges (kube vs lab source)");
    assert_eq!(observed.1, reference.1, "graph nodes (kube vs lab source)");
    assert_eq!(observed.2, reference.2, "flow records (kube vs lab source)");
    for (from, to) in [
        (&pods.client, &pods.web),
        (&pods.web, &pods.api),
        (&pods.client, &pods.db),
    ] {
        let pod_name = |p: &str| p.split_once('/').map(|(_, n)| n.to_owned());
        assert!(
            observed.2.iter().any(|f| {
                let f: Value = serde_json::from_str(f).expect("JSON");
                f["source"]["pod_name"].as_str().map(str::to_owned) == pod_name(from)
                    && f["destination"]["pod_name"].as_str().map(str::to_owned) == pod_name(to)
            }),
            "a flow record {from} -> {to}: {:#?}",
            observed.2
        );
    }
    assert!(
        reference.0.contains(&(
            "front/web".to_owned(),
            "back/api".to_owned(),
            8080,
            "TCP".to_owned(),
            2
        )),
        "{:?}",
        reference.0
    );

    // Enforce `back` by label, with a policy that lets web reach api only.
    api.apply("ADDED", allow_web_to_api());
    let enforce = BTreeMap::from([("weir.dev/mode".to_owned(), "enforce".to_owned())]);
    // The policy leaves client -> db out on purpose, though it was learned
    // above: no guard window, or the guard would set back to audit.
    let mut back = namespace("back", &enforce);
    back["metadata"]["annotations"] = json!({"weir.dev/guard-window": "0"});
    api.apply("MODIFIED", back);
    eventually(Duration::from_secs(10), || {
        (modes(&agent)["modes"]["back"] == "enforce").then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "back never enforced: {:#}\nlog:\n{}",
            modes(&agent),
            agent.log_text()
        )
    });
    eventually(Duration::from_secs(10), || {
        (!lab.probe(&pods.client, &pods.db, "5432/TCP")).then_some(())
    })
    .unwrap_or_else(|| panic!("client -> db is never dropped:\n{}", agent.log_text()));
    assert!(
        lab.probe(&pods.web, &pods.api, "8080/TCP"),
        "web -> api is allowed"
    );
    assert!(
        lab.probe(&pods.client, &pods.web, "80/TCP"),
        "front stays observed"
    );
    let pod_of = |e: &Value| {
        format!(
            "{}/{}",
            e["namespace"].as_str().unwrap_or(""),
            e["pod_name"].as_str().unwrap_or("")
        )
    };
    let drop = eventually(Duration::from_secs(10), || {
        flows(&agent, &["--verdict", "DROPPED"])
            .into_iter()
            .find(|f| pod_of(&f["source"]) == pods.client && pod_of(&f["destination"]) == pods.db)
    })
    .unwrap_or_else(|| {
        panic!(
            "no DROPPED record client -> db: {:#?}\nlog:\n{}",
            flows(&agent, &[]),
            agent.log_text()
        )
    });
    assert_eq!(drop["l4"]["TCP"]["destination_port"], 5432, "{drop:#}");
    assert_eq!(
        drop["weir"]["policy"]["policies"],
        json!(["back/api-from-web"]),
        "the pushed NetworkPolicy decided: {drop:#}"
    );
    assert_eq!(
        drop["weir"]["policy"]["reason"], "peer-not-allowed",
        "{drop:#}"
    );
    assert!(
        flows(&agent, &["--verdict", "DROPPED"])
            .iter()
            .all(|f| pod_of(&f["destination"]) == pods.db),
        "only client -> db is dropped"
    );

    // Relabelled observe: the connection works again.
    let observe = BTreeMap::from([("weir.dev/mode".to_owned(), "observe".to_owned())]);
    api.apply("MODIFIED", namespace("back", &observe));
    eventually(Duration::from_secs(10), || {
        (modes(&agent)["modes"]["back"] == "observe").then_some(())
    })
    .unwrap_or_else(|| panic!("back never observed again: {:#}", modes(&agent)));
    eventually(Duration::from_secs(10), || {
        lab.probe(&pods.client, &pods.db, "5432/TCP").then_some(())
    })
    .unwrap_or_else(|| panic!("client -> db stays dropped:\n{}", agent.log_text()));
    assert_eq!(
        api.watches("namespaces"),
        1,
        "one namespace watch carried every change"
    );
}

/// The guard's lab: client -> server:80 in one namespace (podCIDR octet
/// 247).
const GUARD_LAB: &str = "apiVersion: lab.weir.dev/v1alpha1
kind: Lab
metadata: {name: kguard}
spec: {podCIDR: 10.247.0.0/24, serviceCIDR: 10.248.0.0/24}
---
apiVersion: v1
kind: Namespace
metadata: {name: kg}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: kg, labels: {app: client}}
spec: {containers: [{name: c, image: lab}]}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: kg, labels: {app: server}}
spec: {containers: [{name: s, image: lab, ports: [{containerPort: 80}]}]}
";

/// Isolates the server's ingress and allows nothing: the learned
/// client -> server:80 is missing.
fn isolate_server() -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "server", "namespace": "kg", "uid": "np-kg-server"},
        "spec": {"podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"]},
    })
}

/// The guard's lab with an agent on the kube source (the fake API
/// server), its client -> server:80 learned, then the server isolated by
/// a policy that misses it ([`isolate_server`]). Fields drop in the
/// order listed in the tests' patterns, reversed: the agent first, the
/// lab last.
struct GuardedLab {
    lab: Lab,
    client: String,
    server: String,
    api: FakeApiServer,
    kubeconfig: String,
    agent: Agent,
}

fn learned_guard_lab(name: &str, yaml: &str, node_prefix: &str) -> GuardedLab {
    let lab = Lab::up(name, yaml);
    let client = lab.pod("kg", "client");
    let server = lab.pod("kg", "server");
    let node = unique_name(node_prefix);
    let api = FakeApiServer::for_lab(&lab.status(), &node, &BTreeMap::new());
    let kubeconfig = api.kubeconfig().to_string_lossy().into_owned();
    let agent = Agent::start_with(
        &lab,
        "kube",
        &["--node-name", &node],
        &[("KUBECONFIG", &kubeconfig)],
    );
    assert!(lab.probe(&client, &server, "80/TCP"), "observe passes");
    eventually(Duration::from_secs(10), || {
        let graph = agent.get_json("/api/graph?namespace=kg");
        (graph["edges"].as_array().map_or(0, Vec::len) > 0).then_some(())
    })
    .unwrap_or_else(|| panic!("client -> server never learned:\n{}", agent.log_text()));
    api.apply("ADDED", isolate_server());
    GuardedLab {
        lab,
        client,
        server,
        api,
        kubeconfig,
        agent,
    }
}

/// In a cluster the guard reverts through the API server: a namespace
/// labelled enforce (the default window) whose policies miss a learned
/// edge gets, once that edge is dropped, exactly a merge patch of its
/// `weir.dev/mode` label back to audit with the `weir.dev/guard-reverted`
/// annotation saying why, and a Warning Event on the Namespace; the agents
/// follow the label, and the connection works again. The label is set by
/// `weir mode set --kube`, whose readiness gate (asked of the agent)
/// first refuses the namespace, just learned.
#[test]
fn the_guard_reverts_a_labelled_namespace_by_patching_its_label() {
    let GuardedLab {
        lab,
        client,
        server,
        api,
        kubeconfig,
        agent,
    } = learned_guard_lab("kgrd", GUARD_LAB, "kguard-node-");
    // `mode set --kube` asks the agent first: the edge is seconds old, so
    // kg is not ready, and nothing is written.
    let mode_set = |extra: &[&str]| {
        let server = agent.url();
        let mut args = vec![
            "mode", "set", "kg", "enforce", "--kube", "--server", &server,
        ];
        args.extend_from_slice(extra);
        std::process::Command::new(weir_bin())
            .args(&args)
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .expect("run weir mode set --kube")
    };
    let refused = mode_set(&[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && stderr.contains("namespace kg is not ready for enforce")
            && stderr.contains("within the quiet period"),
        "{refused:?}"
    );
    assert!(api.writes().is_empty(), "{:?}", api.writes());
    // The guard counts as learned the edges first seen before its last
    // check ahead of the flip: let it check (every 300 ms) after the edge,
    // even on a loaded machine.
    std::thread::sleep(Duration::from_secs(1));
    // Forced: the label, as a GitOps tool would set it.
    let forced = mode_set(&["--force"]);
    assert!(forced.status.success(), "{forced:?}");
    let label = api.writes();
    assert_eq!(
        label
            .iter()
            .map(|w| (
                w.method.as_str(),
                w.path.as_str(),
                w.field_manager.as_deref(),
                &w.body
            ))
            .collect::<Vec<_>>(),
        [(
            "PATCH",
            "/api/v1/namespaces/kg",
            Some("weir"),
            &json!({"metadata": {
                "labels": {"weir.dev/mode": "enforce"},
                "annotations": {"weir.dev/guard-skip": null},
            }})
        )]
    );
    let guarded = eventually(Duration::from_secs(10), || {
        let m = modes(&agent);
        m["guarded"]["kg"].is_object().then_some(m)
    })
    .unwrap_or_else(|| {
        panic!(
            "the guard never watched kg: {:#}\n{}",
            modes(&agent),
            agent.log_text()
        )
    });
    assert_eq!(
        guarded["guarded"]["kg"]["learned_edges"],
        1,
        "{guarded:#}\n{:#}\n{}",
        agent.get_json("/api/graph?namespace=kg"),
        agent.log_text()
    );
    assert_eq!(api.writes(), label, "the guard wrote nothing yet");

    // Dropped once; the guard reverts within a sweep, so a retransmitted
    // SYN may already pass.
    let _ = lab.probe(&client, &server, "80/TCP");
    let writes = eventually(Duration::from_secs(5), || {
        let writes = api.writes().split_off(label.len());
        (writes.len() >= 2).then_some(writes)
    })
    .unwrap_or_else(|| {
        panic!(
            "the guard never wrote: {:?}\n{}",
            api.writes(),
            agent.log_text()
        )
    });
    let message = modes(&agent)["reverted"]["kg"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no revert in /api/modes: {:#}", modes(&agent)))
        .to_owned();
    assert!(
        message.starts_with("reverted to audit at ")
            && message.ends_with(
                " because enforce dropped 1 learned edge within the guard window: \
                 kg/client -> kg/server TCP/80 (isolated by kg/server)"
            ),
        "{message}"
    );
    let patch = &writes[0];
    assert_eq!(
        (
            patch.method.as_str(),
            patch.path.as_str(),
            patch.content_type.as_str(),
            patch.field_manager.as_deref(),
            patch.dry_run,
        ),
        (
            "PATCH",
            "/api/v1/namespaces/kg",
            "application/merge-patch+json",
            Some("weir-guard"),
            false
        ),
        "{writes:#?}"
    );
    assert_eq!(
        patch.body,
        json!({"metadata": {
            "labels": {"weir.dev/mode": "audit"},
            "annotations": {"weir.dev/guard-reverted": message},
        }})
    );
    let post = &writes[1];
    assert_eq!(
        (
            post.method.as_str(),
            post.path.as_str(),
            post.content_type.as_str()
        ),
        ("POST", "/api/v1/namespaces/kg/events", "application/json"),
        "{writes:#?}"
    );
    assert_eq!(writes.len(), 2, "{writes:#?}");
    // Stored: the API server took the Event as it is.
    let events = api.objects("events");
    assert_eq!(events.len(), 1, "{writes:#?}\n{}", agent.log_text());
    let event = &events[0];
    assert_eq!(
        (
            &event["type"],
            &event["reason"],
            &event["message"],
            &event["involvedObject"],
            &event["source"]["component"]
        ),
        (
            &json!("Warning"),
            &json!("GuardReverted"),
            &json!(message),
            &json!({"apiVersion": "v1", "kind": "Namespace", "name": "kg", "namespace": "kg"}),
            &json!("weir-guard")
        ),
        "{event:#}"
    );
    let stored = api.object("namespaces", "/kg").expect("kg");
    assert_eq!(stored["metadata"]["labels"]["weir.dev/mode"], "audit");

    // The agent follows the label: audit, the connection passes again.
    eventually(Duration::from_secs(5), || {
        (modes(&agent)["modes"]["kg"] == "audit").then_some(())
    })
    .unwrap_or_else(|| panic!("kg never audited: {:#}", modes(&agent)));
    assert!(
        lab.probe(&client, &server, "80/TCP"),
        "audit lets it through again:\n{}",
        agent.log_text()
    );
}

/// `weir mode set --kube --no-guard`: the label patch annotates the
/// Namespace `weir.dev/guard-skip` with the time of the request, the agent
/// (which follows the Namespace, as every node's does) opens no window,
/// and the learned edge its policies miss stays dropped: no revert, no
/// write but the user's. The guard's lab in its own ranges (podCIDR octet
/// 207, Services 208).
#[test]
fn an_unguarded_flip_through_the_label_keeps_the_drop() {
    let GuardedLab {
        lab,
        client,
        server,
        api,
        kubeconfig,
        agent,
    } = learned_guard_lab(
        "kskip",
        &GUARD_LAB
            .replace("10.247.", "10.207.")
            .replace("10.248.", "10.208."),
        "kskip-node-",
    );
    // As in the guarded test: a guarded flip would learn the edge.
    std::thread::sleep(Duration::from_secs(1));

    let set = std::process::Command::new(weir_bin())
        .args([
            "mode",
            "set",
            "kg",
            "enforce",
            "--kube",
            "--force",
            "--no-guard",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .expect("run weir mode set --kube --no-guard");
    assert!(set.status.success(), "{set:?}");
    let label = api.writes();
    assert_eq!(label.len(), 1, "{label:#?}");
    let skip = label[0].body["metadata"]["annotations"]["weir.dev/guard-skip"]
        .as_str()
        .unwrap_or_else(|| panic!("no weir.dev/guard-skip: {label:#?}"))
        .to_owned();
    assert_eq!(
        (
            label[0].method.as_str(),
            label[0].path.as_str(),
            label[0].content_type.as_str(),
            label[0].field_manager.as_deref(),
            &label[0].body
        ),
        (
            "PATCH",
            "/api/v1/namespaces/kg",
            "application/merge-patch+json",
            Some("weir"),
            &json!({"metadata": {
                "labels": {"weir.dev/mode": "enforce"},
                "annotations": {"weir.dev/guard-skip": skip},
            }})
        )
    );
    assert!(
        String::from_utf8_lossy(&set.stdout).contains(&format!("weir.dev/guard-skip={skip}")),
        "{set:?}"
    );
    let stored = api.object("namespaces", "/kg").expect("kg");
    assert_eq!(
        stored["metadata"]["annotations"]["weir.dev/guard-skip"],
        skip
    );

    eventually(Duration::from_secs(5), || {
        (modes(&agent)["modes"]["kg"] == "enforce").then_some(())
    })
    .unwrap_or_else(|| panic!("kg never enforced: {:#}", modes(&agent)));
    // The guard checks every 300 ms: let it see the flip.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        modes(&agent)["guarded"]["kg"].is_null(),
        "no window: {:#}\n{}",
        modes(&agent),
        agent.log_text()
    );
    let log = agent.log_text();
    assert!(
        log.contains("enforce without a guard window: weir.dev/guard-skip asks for it"),
        "the agent says why:\n{log}"
    );
    assert!(
        !lab.probe(&client, &server, "80/TCP"),
        "enforce drops the edge the policies miss"
    );
    // A guarded flip is reverted within a sweep; this one never is.
    let reverted = eventually(Duration::from_secs(3), || {
        (api.writes().len() > 1 || modes(&agent)["modes"]["kg"] != "enforce").then_some(())
    });
    assert!(
        reverted.is_none(),
        "the guard reverted an unguarded flip: {:#?}\n{:#}\n{}",
        api.writes(),
        modes(&agent),
        agent.log_text()
    );
    assert!(
        modes(&agent)["reverted"]["kg"].is_null(),
        "{:#}",
        modes(&agent)
    );
    assert!(
        !lab.probe(&client, &server, "80/TCP"),
        "still dropped:\n{}",
        agent.log_text()
    );
}
