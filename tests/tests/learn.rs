//! Learning end to end on the real kernel: the demo shop, driven with the
//! demo's traffic, learned by the agent; the suggestion exported, checked
//! against the Kubernetes schemas (kubernetes-validate) and verified
//! complete and tight against what was observed; the agent restarted on
//! the same state directory without losing anything; and the same YAML
//! learned offline from the recorded flow log and an inventory.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::{Value, json};
use weir_integration_tests::{
    harness::{Agent, Lab, eventually, weir, weir_ok},
    shop::{SHOP, drive_traffic, shop_yaml},
};

fn kubernetes_validate() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let tool = target.join("venv/bin/kubernetes-validate");
    assert!(
        tool.exists(),
        "{} is missing: run `make pydeps` (make test does)",
        tool.display()
    );
    tool
}

/// (source, target, port, protocol) of a graph edge.
type Edge = (String, String, u64, String);

fn graph_edges(graph: &Value) -> BTreeSet<Edge> {
    let mut edges = BTreeSet::new();
    for e in graph["edges"].as_array().expect("edges") {
        for p in e["ports"].as_array().expect("ports") {
            edges.insert((
                e["source"].as_str().expect("source").to_owned(),
                e["target"].as_str().expect("target").to_owned(),
                p["port"].as_u64().expect("port"),
                p["protocol"].as_str().expect("protocol").to_owned(),
            ));
        }
    }
    edges
}

/// An inventory file (Namespaces, Pods with owners and containerPorts,
/// Services) describing the lab as `kubectl get -o yaml` would.
fn inventory_yaml(lab: &Lab) -> String {
    let status = lab.status();
    let mut docs: Vec<Value> = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(SHOP) {
        let value: Value = serde::Deserialize::deserialize(doc).expect("shop.yaml parses");
        if value["kind"] == "Namespace" {
            docs.push(value);
        }
    }
    for pod in status["pods"].as_array().expect("pods") {
        let labels = &pod["labels"];
        let workload = &pod["workload"];
        let name = workload["name"].as_str().expect("workload name");
        let owner = match workload["kind"].as_str().expect("workload kind") {
            "Deployment" => {
                let hash = labels["pod-template-hash"]
                    .as_str()
                    .expect("pod-template-hash");
                json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{name}-{hash}"), "uid": "u", "controller": true}])
            }
            "Pod" => json!([]),
            kind => {
                json!([{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": "u", "controller": true}])
            }
        };
        let ports: Vec<Value> = pod["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .map(|p| {
                let mut port = json!({"containerPort": p["port"], "protocol": p["protocol"]});
                if let Some(name) = p.get("name") {
                    port["name"] = name.clone();
                }
                port
            })
            .collect();
        let ips: Vec<Value> = pod["ips"]
            .as_array()
            .expect("ips")
            .iter()
            .map(|ip| json!({"ip": ip}))
            .collect();
        docs.push(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod["name"], "namespace": pod["namespace"], "labels": labels, "ownerReferences": owner},
            "spec": {"containers": [{"name": "c", "image": "lab", "ports": ports}]},
            "status": {"podIP": ips[0]["ip"], "podIPs": ips},
        }));
    }
    for svc in status["services"].as_array().expect("services") {
        let ports: Vec<Value> = svc["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .map(|p| {
                let target = p["targetPort"].as_str().expect("targetPort");
                let target = target
                    .parse::<u16>()
                    .map_or_else(|_| json!(target), |n| json!(n));
                json!({"port": p["port"], "protocol": p["protocol"], "targetPort": target})
            })
            .collect();
        docs.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": svc["name"], "namespace": svc["namespace"]},
            "spec": {"clusterIPs": svc["clusterIPs"], "selector": svc["selector"], "ports": ports},
        }));
    }
    docs.iter()
        .map(|d| serde_yaml::to_string(d).expect("yaml"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Every file of a directory by name.
fn files(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .expect("read export dir")
        .map(|e| {
            let path = e.expect("entry").path();
            (
                path.file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned(),
                std::fs::read_to_string(&path).expect("read export"),
            )
        })
        .collect()
}

#[test]
fn the_shop_is_learned_exported_verified_and_survives_a_restart() {
    let validate = kubernetes_validate();
    let lab = Lab::up("learn", &shop_yaml(151));
    let state = tempfile::tempdir().expect("state dir");
    let state_dir = state.path().to_string_lossy().into_owned();
    let agent_args = [
        "--state-dir",
        &state_dir,
        "--save-interval",
        "300ms",
        "--flow-idle-timeout",
        "2s",
        "--flow-closing-timeout",
        "1s",
        "--quiet-period",
        "1s",
    ];
    let mut agent = Agent::start(&lab, &agent_args);
    let server = agent.url();

    drive_traffic(&lab, 3);
    let expected: BTreeSet<Edge> = [
        ("shop/loadgen", "shop/frontend", 8080, "TCP"),
        ("shop/frontend", "kube-system/coredns", 53, "UDP"),
        ("shop/frontend", "shop/catalog", 3550, "TCP"),
        ("shop/frontend", "shop/cartservice", 7070, "TCP"),
        ("shop/cartservice", "kube-system/coredns", 53, "UDP"),
        ("shop/cartservice", "data/store", 6379, "TCP"),
        ("shop/cartservice", "203.0.113.10", 443, "TCP"),
    ]
    .into_iter()
    .map(|(s, t, p, proto)| (s.to_owned(), t.to_owned(), p, proto.to_owned()))
    .collect();
    // Every flow closes (short timeouts) and its last report is folded:
    // wait for the graph to hold the edges and stop changing.
    let mut last = Value::Null;
    let graph = eventually(Duration::from_secs(30), || {
        let mut graph = agent.get_json("/api/graph");
        // The answer's own time changes with every request.
        graph["generated_at"] = Value::Null;
        let settled = graph_edges(&graph) == expected && graph == last;
        last = graph.clone();
        std::thread::sleep(Duration::from_secs(3));
        settled.then_some(graph)
    })
    .unwrap_or_else(|| {
        panic!(
            "graph never settled on the demo's edges; last: {last:#}\nlog:\n{}",
            agent.log_text()
        )
    });

    // The flow log, recorded for the offline round trip.
    let work = tempfile::tempdir().expect("work dir");
    let flows = work.path().join("flows.json");
    let log = weir_ok(&[
        "observe", "--server", &server, "--last", "10000", "-o", "json",
    ]);
    std::fs::write(&flows, &log).expect("write flows");

    // Export from the live agent: one file per namespace and a
    // kustomization, all valid Kubernetes objects.
    let live = work.path().join("live");
    let live_s = live.to_string_lossy().into_owned();
    let _ = weir_ok(&["export", "--server", &server, "-o", &live_s]);
    let exported = files(&live);
    let names: Vec<&str> = exported.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "data.yaml",
            "kube-system.yaml",
            "kustomization.yaml",
            "shop.yaml"
        ]
    );
    for name in ["data.yaml", "kube-system.yaml", "shop.yaml"] {
        let out = Command::new(&validate)
            .arg("--strict")
            .arg(live.join(name))
            .output()
            .expect("run kubernetes-validate");
        assert!(
            out.status.success(),
            "kubernetes-validate {name}:\n{}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            exported[name]
        );
    }
    let stdout = weir_ok(&["export", "--server", &server, "--namespace", "data"]);
    assert_eq!(stdout, exported["data.yaml"], "-o - is the same YAML");

    // The suggestion is complete and tight for what was observed.
    let out = weir(&[
        "verify",
        "--policies",
        &live_s,
        "--server",
        &server,
        "--strict",
        "-o",
        "json",
    ]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify -o json: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.code(), Some(0), "verify --strict: {report:#}");
    assert_eq!(report["denied"], json!([]));
    assert_eq!(report["unobserved_allowed"], json!([]));
    assert_eq!(report["observed"], expected.len());

    // A policy set that drops observed traffic fails with exit 1 and says
    // which flows, in which direction, why.
    let strict = work.path().join("deny");
    std::fs::create_dir(&strict).expect("mkdir");
    std::fs::write(
        strict.join("deny.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-all, namespace: data}\n\
         spec: {podSelector: {}, policyTypes: [Ingress]}\n",
    )
    .expect("write deny");
    let strict_s = strict.to_string_lossy().into_owned();
    let out = weir(&["verify", "--policies", &strict_s, "--server", &server]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(
        table.contains("shop/cartservice -> data/store 6379/TCP")
            && table.contains("ingress denied"),
        "{table}"
    );
    // A bad file is an error (exit 2) naming it.
    std::fs::write(strict.join("bad.yaml"), "kind: ConfigMap\n").expect("write bad");
    let out = weir(&["verify", "--policies", &strict_s, "--server", &server]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.yaml: document 1"));

    // Readiness: quiet (1 s) and fully covered.
    let status: Value =
        serde_json::from_str(&weir_ok(&["status", "--server", &server, "-o", "json"]))
            .expect("status json");
    let namespaces = status["namespaces"].as_array().expect("namespaces");
    assert_eq!(namespaces.len(), 3, "{status:#}");
    for ns in namespaces {
        assert_eq!(ns["coverage"], 1.0, "{ns}");
        assert_eq!(ns["ready"], true, "{ns}");
    }
    let table = weir_ok(&["status", "--server", &server]);
    assert!(
        table.contains("NAMESPACE") && table.contains("kube-system"),
        "{table}"
    );

    // Restart on the same state directory: nothing learned is lost.
    assert!(agent.stop(), "agent stops cleanly:\n{}", agent.log_text());
    drop(agent);
    let agent = Agent::start(&lab, &agent_args);
    let server = agent.url();
    let restored = agent.get_json("/api/graph");
    // Nodes and edges; the version and the answer's time are the new
    // agent's.
    assert_eq!(
        (&restored["nodes"], &restored["edges"]),
        (&graph["nodes"], &graph["edges"]),
        "the graph survives a restart"
    );
    // The agent reads its pod source right after it starts; until then it
    // knows no pods to write policies for.
    let again = work.path().join("again");
    let again_s = again.to_string_lossy().into_owned();
    let same = eventually(Duration::from_secs(10), || {
        let _ = weir_ok(&["export", "--server", &server, "-o", &again_s]);
        (files(&again) == exported).then_some(())
    });
    assert!(
        same.is_some(),
        "the same export after a restart; got {:#?}",
        files(&again)
    );
    let out = weir(&[
        "verify",
        "--policies",
        &live_s,
        "--server",
        &server,
        "--strict",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    // Offline: the recorded flow log and an inventory give the same YAML.
    let inventory = work.path().join("inventory.yaml");
    std::fs::write(&inventory, inventory_yaml(&lab)).expect("write inventory");
    let offline = work.path().join("offline");
    let offline_s = offline.to_string_lossy().into_owned();
    let flows_s = flows.to_string_lossy().into_owned();
    let inventory_s = inventory.to_string_lossy().into_owned();
    let out = weir(&[
        "export",
        "--flows",
        &flows_s,
        "--inventory",
        &inventory_s,
        "-o",
        &offline_s,
    ]);
    assert!(out.status.success(), "offline export: {out:?}");
    assert!(
        out.stderr.is_empty(),
        "no skipped lines: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offline_files = files(&offline);
    for (name, text) in &exported {
        assert_eq!(
            offline_files.get(name),
            Some(text),
            "offline {name} differs from the live export"
        );
    }
    let out = weir(&[
        "verify",
        "--policies",
        &live_s,
        "--flows",
        &flows_s,
        "--inventory",
        &inventory_s,
        "--strict",
    ]);
    assert_eq!(out.status.code(), Some(0), "offline verify: {out:?}");
}

/// A store saved with `edges` edges, closed cleanly, as bytes.
fn saved_store(dir: &Path, edges: u16) -> Vec<u8> {
    use weir_generator::model::{
        EdgeKey, EdgeStats, FlowGraph, NodeId, Protocol, WorkloadKind, WorkloadRef,
    };
    let (store, _) = weir_agent::graph_store::Store::open(dir, 1).expect("opening a new store");
    let mut graph = FlowGraph::default();
    for port in 0..edges {
        graph.record(
            EdgeKey {
                source: NodeId::Workload(WorkloadRef::new("shop", WorkloadKind::Deployment, "web")),
                target: NodeId::External("192.0.2.1".parse().expect("an address")),
                protocol: Protocol::Tcp,
                port: 1000 + port,
            },
            &EdgeStats {
                packets: 1,
                connections: 1,
                first_seen: 2,
                last_seen: 3,
                ..EdgeStats::default()
            },
        );
    }
    store.save(&graph, 4).expect("saving the graph");
    drop(store);
    std::fs::read(dir.join("weir.redb")).expect("reading the saved store")
}

/// A damaged store (cut to 4 KiB, cut in half, garbage in the middle)
/// stops the agent with a message naming the file and what to do, without
/// a panic, and the file stays as it was; `--repair-store` starts with
/// what can be read and says what was lost.
#[test]
fn a_damaged_store_stops_the_agent_cleanly_and_repair_store_keeps_what_reads() {
    let scratch = tempfile::tempdir().unwrap();
    let bytes = saved_store(scratch.path(), 300);
    // Garbage over the middle one of the pages that hold rows.
    let mut garbage = bytes.clone();
    let row_pages: Vec<usize> = (0..bytes.len() / 4096)
        .filter(|p| {
            bytes[p * 4096..(p + 1) * 4096]
                .windows(7)
                .any(|w| w == b"\"port\":")
        })
        .collect();
    let page = row_pages[row_pages.len() / 2];
    garbage[page * 4096..(page + 1) * 4096].fill(0xA5);
    for (damage, damaged) in [
        ("cut to 4 KiB", bytes[..4096].to_vec()),
        ("cut in half", bytes[..bytes.len() / 2].to_vec()),
        ("garbage in the middle", garbage),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("weir.redb");
        std::fs::write(&store, &damaged).unwrap();
        let state_dir = dir.path().to_str().unwrap();
        // A port already taken stops a repaired agent once it got that far.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let listen = taken.local_addr().unwrap().to_string();
        let agent = |extra: &[&str]| {
            let mut args = vec![
                "agent",
                "--state-dir",
                state_dir,
                "--no-pin",
                "--listen",
                &listen,
                "--source",
                "inventory:/nonexistent/weir-test-inventory.yaml",
            ];
            args.extend_from_slice(extra);
            Command::new(weir_integration_tests::harness::weir_bin())
                .args(&args)
                .env("WEIR_TOKEN", weir_integration_tests::harness::api_token())
                .output()
                .unwrap()
        };
        let out = agent(&[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{damage}: started\n{stderr}");
        assert_ne!(out.status.code(), Some(101), "{damage}: panicked\n{stderr}");
        assert!(!stderr.contains("panicked"), "{damage}:\n{stderr}");
        assert!(
            stderr.contains(&store.display().to_string()),
            "{damage}:\n{stderr}"
        );
        assert!(stderr.contains("--repair-store"), "{damage}:\n{stderr}");
        assert_eq!(
            std::fs::read(&store).unwrap(),
            damaged,
            "{damage}: the store changed"
        );

        // Repaired: what was recovered and lost is said, the damaged file
        // kept. (The port taken stops the agent right after.)
        let out = agent(&["--repair-store"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{damage}:\n{stderr}");
        assert!(stderr.contains("lost"), "{damage}:\n{stderr}");
        let kept: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("weir.redb.damaged-"))
            .collect();
        assert_eq!(kept.len(), 1, "{damage}:\n{stderr}");
        assert_eq!(std::fs::read(&kept[0]).unwrap(), damaged, "{damage}");
        assert!(
            stderr.contains(&kept[0].display().to_string()),
            "{damage}:\n{stderr}"
        );
        let (_, loaded) = weir_agent::graph_store::Store::open(dir.path(), 5).unwrap();
        if damage == "cut to 4 KiB" {
            assert!(stderr.contains("nothing could be recovered"), "{stderr}");
            assert!(loaded.graph.edges.is_empty());
        } else {
            let recovered = loaded.graph.edges.len();
            assert!(recovered > 0, "{damage}:\n{stderr}");
            assert!(
                stderr.contains(&format!("recovered {recovered} edges")),
                "{damage}:\n{stderr}"
            );
        }
    }
}
