//! Enforcement end to end on the real kernel: the demo shop learned, its
//! suggestion applied and enforced (the demo's traffic keeps flowing, what
//! was never observed is dropped and reported); a `kill -9` of the agent
//! (the pinned datapath keeps enforcing, a new agent adopts it); refused
//! input (an invalid set, an overflow) changing nothing; audit mode.
//!
//! Each test has its own lab (podCIDR octets 161-170), state directory and
//! pin directory.

use std::{collections::BTreeSet, time::Duration};

use serde_json::Value;
use weir_integration_tests::{
    harness::{Agent, AgentHome, Lab, eventually, weir, weir_ok},
    shop::{drive_traffic, learn_the_shop, shop_yaml},
};

fn observe_json(agent: &Agent, filters: &[&str]) -> Vec<Value> {
    let url = agent.url();
    let mut args = vec!["observe", "--server", &url, "--last", "10000", "-o", "json"];
    args.extend_from_slice(filters);
    weir_ok(&args)
        .lines()
        .map(|l| serde_json::from_str(l).expect("observe -o json is JSON lines"))
        .collect()
}

/// A DROPPED (or AUDIT) record of a flow from `source` to `destination`
/// pods (`ns/name`), waiting for it to be reported.
fn verdict_record(agent: &Agent, verdict: &str, source: &str, destination: &str) -> Value {
    let pod = |e: &Value| {
        format!(
            "{}/{}",
            e["namespace"].as_str().unwrap_or(""),
            e["pod_name"].as_str().unwrap_or("")
        )
    };
    eventually(Duration::from_secs(10), || {
        observe_json(agent, &["--verdict", verdict])
            .into_iter()
            .find(|f| pod(&f["source"]) == source && pod(&f["destination"]) == destination)
    })
    .unwrap_or_else(|| {
        panic!(
            "no {verdict} record {source} -> {destination}; flows: {:#?}\nlog:\n{}",
            observe_json(agent, &[]),
            agent.log_text()
        )
    })
}

const STORE_FROM_CART: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: store, namespace: data}
spec:
  podSelector: {matchLabels: {app: store}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}
      podSelector: {matchLabels: {app: cartservice}}
    ports: [{port: 6379, protocol: TCP}]
";

fn apply_file(
    agent: &Agent,
    dir: &std::path::Path,
    name: &str,
    yaml: &str,
) -> std::process::Output {
    let path = dir.join(name);
    std::fs::write(&path, yaml).expect("write policy");
    weir(&[
        "policy",
        "apply",
        "--server",
        &agent.url(),
        "-f",
        &path.to_string_lossy(),
    ])
}

fn set_mode(agent: &Agent, namespace: &str, mode: &str) {
    let _ = weir_ok(&[
        "mode",
        "set",
        "--force",
        "--server",
        &agent.url(),
        namespace,
        mode,
    ]);
}

#[test]
fn the_learned_shop_is_enforced_and_the_unobserved_is_dropped() {
    let lab = Lab::up("enf", &shop_yaml(161));
    let agent = Agent::start(
        &lab,
        &["--flow-idle-timeout", "2s", "--flow-closing-timeout", "1s"],
    );
    let server = agent.url();
    // Every edge of the demo is learned before the suggestion is applied.
    learn_the_shop(&lab, &agent, 2, Duration::from_secs(3));

    let applied = weir_ok(&["export", "--server", &server, "--apply"]);
    assert!(applied.contains("enforced"), "{applied}");
    let list = weir_ok(&["policy", "list", "--server", &server]);
    assert!(list.contains("shop") && list.contains("data"), "{list}");
    for ns in ["shop", "data", "kube-system"] {
        set_mode(&agent, ns, "enforce");
    }
    let modes = weir_ok(&["mode", "list", "--server", &server]);
    assert!(modes.contains("enforce"), "{modes}");

    // Everything the demo does keeps working under enforcement.
    drive_traffic(&lab, 1);

    // Never observed: loadgen straight to the store, a frontend to the store.
    let loadgen = lab.pod("shop", "loadgen");
    let frontend = lab.pod("shop", "frontend-");
    let store = lab.pod("data", "store-");
    assert!(
        !lab.probe(&loadgen, &store, "6379/TCP"),
        "loadgen -> store must be dropped"
    );
    assert!(
        !lab.probe(&frontend, &store, "6379/TCP"),
        "frontend -> store must be dropped"
    );
    assert!(!lab.probe(&loadgen, &lab.pod("shop", "catalog-"), "3550/TCP"));

    let drop = verdict_record(&agent, "DROPPED", &loadgen, &store);
    assert_eq!(drop["verdict"], "DROPPED", "{drop:#}");
    assert_eq!(drop["drop_reason_desc"], "POLICY_DENIED", "{drop:#}");
    // Dropped at the loadgen's egress: its policy names only the frontends.
    assert_eq!(drop["traffic_direction"], "EGRESS", "{drop:#}");
    assert_eq!(
        drop["weir"]["policy"]["reason"], "peer-not-allowed",
        "{drop:#}"
    );
    let policies = drop["weir"]["policy"]["policies"]
        .as_array()
        .expect("policies");
    assert!(
        policies
            .iter()
            .all(|p| p.as_str().is_some_and(|p| p.starts_with("shop/")))
            && !policies.is_empty(),
        "{drop:#}"
    );
    let table = weir_ok(&[
        "observe",
        "--server",
        &server,
        "--last",
        "1000",
        "--verdict",
        "DROPPED",
    ]);
    assert!(
        table.contains("DROPPED") && table.contains("peer-not-allowed"),
        "{table}"
    );

    // Drops are counted, not learned.
    let dropped = agent
        .metric("weir_policy_verdicts_total{namespace=\"shop\",verdict=\"DROPPED\",reason=\"peer-not-allowed\"}")
        .unwrap_or(0.0);
    assert!(dropped >= 1.0, "{:?}", agent.get_text("/metrics"));
    assert!(
        agent
            .metric("weir_policy_dropped_packets_total")
            .unwrap_or(0.0)
            >= 1.0
    );
    // The graph draws the drop; what was let through leaves it out.
    let graph = agent.get_json("/api/graph");
    let verdict = graph["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .find(|e| e["id"] == "shop/loadgen->data/store")
        .map(|e| e["verdict"].clone());
    assert_eq!(verdict, Some("dropped".into()), "{graph:#}");
    let passed = agent.get_json("/api/graph?verdict=forwarded");
    let edges: BTreeSet<(String, String)> = passed["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| {
            (
                e["source"].as_str().unwrap_or("").to_owned(),
                e["target"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(
        !edges.contains(&("shop/loadgen".to_owned(), "data/store".to_owned())),
        "{passed:#}"
    );
    let suggestion = agent
        .get_text("/api/policies?namespace=data")
        .expect("suggestion");
    assert!(!suggestion.contains("loadgen"), "{suggestion}");

    // observe is the kill switch.
    set_mode(&agent, "shop", "observe");
    assert!(lab.probe(&loadgen, &lab.pod("shop", "catalog-"), "3550/TCP"));
}

/// A connection dropped at its target's ingress is let out by its source's
/// egress (the source's namespace is observed): the two copies of the same
/// connection meet, the drop wins, and neither the export nor `--apply`
/// reopens what the policy blocked. The drop is drawn with both verdicts.
#[test]
fn a_connection_dropped_at_its_target_is_never_learned_nor_reopened_by_apply() {
    let lab = Lab::up("enx", &shop_yaml(169));
    let agent = Agent::start(&lab, &[]);
    let server = agent.url();
    let work = tempfile::tempdir().expect("work dir");
    let out = apply_file(&agent, work.path(), "store.yaml", STORE_FROM_CART);
    assert!(out.status.success(), "{out:?}");
    set_mode(&agent, "data", "enforce");

    let cart = lab.pod("shop", "cartservice-");
    let catalog = lab.pod("shop", "catalog-");
    let store = lab.pod("data", "store-");
    assert!(
        lab.probe(&cart, &store, "6379/TCP"),
        "the policy allows cart"
    );
    assert!(
        !lab.probe(&catalog, &store, "6379/TCP"),
        "catalog -> store must be dropped at the store"
    );
    let drop = verdict_record(&agent, "DROPPED", &catalog, &store);
    assert_eq!(drop["traffic_direction"], "INGRESS", "{drop:#}");
    // The learned edge of cart -> store is there: the reports were folded.
    eventually(Duration::from_secs(10), || {
        let graph = agent.get_json("/api/graph?verdict=forwarded");
        graph["edges"]
            .as_array()?
            .iter()
            .any(|e| e["id"] == "shop/cartservice->data/store")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no cart edge: {:#}", agent.get_json("/api/graph")));
    // Past a sweep, so the source's swept copy is folded too.
    std::thread::sleep(Duration::from_secs(3));

    let export = weir_ok(&["export", "--server", &server, "--namespace", "data"]);
    assert!(export.contains("cartservice"), "{export}");
    assert!(!export.contains("catalog"), "{export}");
    let graph = agent.get_json("/api/graph");
    let edge = graph["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .find(|e| e["id"] == "shop/catalog->data/store")
        .cloned()
        .unwrap_or_else(|| panic!("the drop is drawn: {graph:#}"));
    assert_eq!(edge["verdict"], "dropped", "{edge:#}");
    let port = &edge["ports"][0];
    assert!(
        port["verdicts"]["forwarded"].as_u64() >= Some(1)
            && port["verdicts"]["dropped"].as_u64() >= Some(1),
        "both ends' verdicts: {edge:#}"
    );

    let applied = weir_ok(&["export", "--server", &server, "--apply"]);
    assert!(applied.contains("enforced"), "{applied}");
    assert!(lab.probe(&cart, &store, "6379/TCP"));
    assert!(
        !lab.probe(&catalog, &store, "6379/TCP"),
        "--apply must not reopen what the policy blocked"
    );
}

#[test]
fn a_killed_agent_keeps_enforcing_and_its_successor_adopts() {
    let lab = Lab::up("enk", &shop_yaml(163));
    let home = AgentHome::new("kill", &["--flow-closing-timeout", "60s"]);
    let mut agent = home.start(&lab);
    let work = tempfile::tempdir().expect("work dir");
    let out = apply_file(&agent, work.path(), "store.yaml", STORE_FROM_CART);
    assert!(out.status.success(), "{out:?}");
    set_mode(&agent, "data", "enforce");
    let cart = lab.pod("shop", "cartservice-");
    let loadgen = lab.pod("shop", "loadgen");
    let store = lab.pod("data", "store-");
    assert!(lab.probe(&cart, &store, "6379/TCP"));
    assert!(!lab.probe(&loadgen, &store, "6379/TCP"));
    let before: Value = serde_json::from_str(&weir_ok(&[
        "policy",
        "list",
        "--server",
        &agent.url(),
        "-o",
        "json",
    ]))
    .expect("json");

    agent.kill();
    for _ in 0..2 {
        assert!(
            lab.probe(&cart, &store, "6379/TCP"),
            "allowed while the agent is dead"
        );
        assert!(
            !lab.probe(&loadgen, &store, "6379/TCP"),
            "denied while the agent is dead"
        );
    }

    let restarted_at = time_now();
    let agent = home.start(&lab);
    let after: Value = serde_json::from_str(&weir_ok(&[
        "policy",
        "list",
        "--server",
        &agent.url(),
        "-o",
        "json",
    ]))
    .expect("json");
    assert_eq!(after["policies"], before["policies"]);
    assert_eq!(after["modes"], before["modes"]);
    eventually(Duration::from_secs(10), || {
        let now: Value = serde_json::from_str(&weir_ok(&[
            "policy",
            "list",
            "--server",
            &agent.url(),
            "-o",
            "json",
        ]))
        .ok()?;
        (now["ready"] == true).then_some(())
    })
    .expect("the new agent compiles its policies");
    let now: Value = serde_json::from_str(&weir_ok(&[
        "policy",
        "list",
        "--server",
        &agent.url(),
        "-o",
        "json",
    ]))
    .expect("json");
    assert_eq!(now["entries"], before["entries"], "adopted maps unchanged");
    assert_eq!(
        agent
            .metric("weir_enforce_updates_total{outcome=\"failed\"}")
            .unwrap_or(0.0),
        0.0
    );
    assert!(lab.probe(&cart, &store, "6379/TCP"));
    assert!(!lab.probe(&loadgen, &store, "6379/TCP"));
    // The flow table was kept: flows opened while no agent ran (and before)
    // are reported by the new one.
    let flows = observe_json(&agent, &["--port", "6379"]);
    assert!(
        flows.iter().any(|f| f["weir"]["first_seen"]
            .as_str()
            .is_some_and(|t| t < restarted_at.as_str())),
        "no flow from before the restart: {flows:#?}"
    );
    assert!(
        !agent.log_text().contains("cannot update enforcement"),
        "{}",
        agent.log_text()
    );
    drop(agent);
    drop(home);
}

/// Now, as the agent prints times.
fn time_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    weir_agent::timestamp::rfc3339(u64::try_from(now.as_nanos()).expect("ns"))
}

#[test]
fn refused_input_changes_nothing() {
    let lab = Lab::up("enb", &shop_yaml(165));
    let agent = Agent::start(&lab, &["--enforce-limit", "POLICY=8"]);
    let work = tempfile::tempdir().expect("work dir");
    let out = apply_file(&agent, work.path(), "store.yaml", STORE_FROM_CART);
    assert!(out.status.success(), "{out:?}");
    set_mode(&agent, "data", "enforce");
    let cart = lab.pod("shop", "cartservice-");
    let loadgen = lab.pod("shop", "loadgen");
    let store = lab.pod("data", "store-");
    assert!(!lab.probe(&loadgen, &store, "6379/TCP"));

    // One good policy (it would let loadgen in) and one bad one: the set is
    // refused as a whole, naming the file, the policy and the field.
    let open = STORE_FROM_CART
        .replace("name: store,", "name: store-open,")
        .replace("app: cartservice", "app: loadgen");
    let bad = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: bad, namespace: data}\n\
        spec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]}\n";
    let dir = work.path().join("set");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join("a-open.yaml"), &open).expect("write");
    std::fs::write(dir.join("b-bad.yaml"), bad).expect("write");
    let out = weir(&[
        "policy",
        "apply",
        "--server",
        &agent.url(),
        "-f",
        &dir.to_string_lossy(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("b-bad.yaml") && stderr.contains("data/bad") && stderr.contains("ipBlock"),
        "{stderr}"
    );
    // The agent refuses it too when a client skips the check.
    let body = format!("{open}---\n{bad}");
    let response = reqwest::blocking::Client::new()
        .post(format!("{}/api/policies/enforced", agent.url()))
        .bearer_auth(agent.token())
        .body(body)
        .send()
        .expect("post");
    assert_eq!(response.status().as_u16(), 422);
    let text = response.text().expect("body");
    assert!(text.contains("data/bad"), "{text}");
    assert!(
        !lab.probe(&loadgen, &store, "6379/TCP"),
        "the previous set stays enforced"
    );
    assert!(lab.probe(&cart, &store, "6379/TCP"));

    // An overflow is refused before anything is written, naming the map.
    let wide = STORE_FROM_CART
        .replace("name: store,", "name: wide,")
        .replace(
            "ports: [{port: 6379, protocol: TCP}]",
            // about 20 prefixes, all in the POLICY trie but the two ends
            "ports: [{port: 1001, endPort: 60000, protocol: TCP}]",
        );
    let out = apply_file(&agent, work.path(), "wide.yaml", &wide);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("map POLICY needs") && stderr.contains("its limit is 8"),
        "{stderr}"
    );
    let list = weir_ok(&["policy", "list", "--server", &agent.url()]);
    assert!(!list.contains("wide"), "{list}");
    assert!(!lab.probe(&loadgen, &store, "6379/TCP"));
    assert!(lab.probe(&cart, &store, "6379/TCP"));
}

#[test]
fn audit_mode_passes_and_reports() {
    let lab = Lab::up("ena", &shop_yaml(167));
    let agent = Agent::start(&lab, &[]);
    let work = tempfile::tempdir().expect("work dir");
    let out = apply_file(&agent, work.path(), "store.yaml", STORE_FROM_CART);
    assert!(out.status.success(), "{out:?}");
    set_mode(&agent, "data", "audit");
    let loadgen = lab.pod("shop", "loadgen");
    let store = lab.pod("data", "store-");
    assert!(
        lab.probe(&loadgen, &store, "6379/TCP"),
        "audit drops nothing"
    );
    let audit = verdict_record(&agent, "AUDIT", &loadgen, &store);
    assert_eq!(audit["traffic_direction"], "INGRESS", "{audit:#}");
    assert_eq!(
        audit["weir"]["policy"]["reason"], "peer-not-allowed",
        "{audit:#}"
    );
    assert_eq!(
        audit["weir"]["policy"]["policies"],
        serde_json::json!(["data/store"]),
        "{audit:#}"
    );
    assert!(audit.get("drop_reason_desc").is_none(), "{audit:#}");
    // What the policy allows is forwarded, not audited.
    let cart = lab.pod("shop", "cartservice-");
    assert!(lab.probe(&cart, &store, "6379/TCP"));
    let audited = observe_json(&agent, &["--verdict", "AUDIT"]);
    assert!(
        audited
            .iter()
            .all(|f| f["source"]["pod_name"] != cart.split_once('/').unwrap().1),
        "{audited:#?}"
    );
}

// ---- denied flows are judged again after a change that allows them ----

/// Two pods; the server echoes UDP on 5353. podCIDR octet 225.
const REJUDGE_LAB: &str = "apiVersion: lab.weir.dev/v1alpha1
kind: Lab
metadata: {name: rejudge}
spec: {podCIDR: 10.225.0.0/24, serviceCIDR: 10.226.0.0/24}
---
apiVersion: v1
kind: Namespace
metadata: {name: u}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: u, labels: {app: client}}
spec:
  containers:
  - name: c
    image: lab
    ports: [{containerPort: 80, protocol: TCP}]
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: u, labels: {app: server}}
spec:
  containers:
  - name: s
    image: lab
    ports: [{containerPort: 5353, protocol: UDP}]
";

const SERVER_DENY: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server, namespace: u}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
";

const SERVER_FROM_CLIENT: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server, namespace: u}
spec:
  podSelector: {matchLabels: {app: server}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
    ports: [{port: 5353, protocol: UDP}]
";

/// A UDP socket of `pod` (`ns/name`) bound to `sport`, connected to
/// `server`: made in the pod's netns by a thread that enters it (a socket
/// keeps the netns it was made in), then used from here.
fn pod_udp_socket(
    lab: &Lab,
    pod: &str,
    sport: u16,
    server: std::net::SocketAddr,
) -> std::net::UdpSocket {
    let status = lab.status();
    let (namespace, name) = pod.split_once('/').expect("ns/name");
    let netns = status["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .find(|p| p["namespace"] == namespace && p["name"] == name)
        .and_then(|p| p["netns"].as_str())
        .unwrap_or_else(|| panic!("no netns for {pod}: {status}"))
        .to_owned();
    std::thread::spawn(move || {
        let file = std::fs::File::open(format!("/run/netns/{netns}")).expect("open netns");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let socket = std::net::UdpSocket::bind(("0.0.0.0", sport)).expect("bind");
        socket.connect(server).expect("connect");
        socket
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        socket
    })
    .join()
    .expect("socket thread")
}

/// One datagram out: whether its echo came back.
fn echoed(socket: &std::net::UdpSocket, n: u32) -> bool {
    let token = format!("rejudge-{n}");
    socket.send(token.as_bytes()).expect("send");
    let mut buf = [0u8; 64];
    loop {
        match socket.recv(&mut buf) {
            Ok(len) if &buf[..len] == token.as_bytes() => return true,
            Ok(_) => {} // a late echo of an earlier datagram
            Err(_) => return false,
        }
    }
}

#[test]
fn a_denied_udp_flow_passes_as_soon_as_a_policy_allows_it() {
    let lab = Lab::up("enr", REJUDGE_LAB);
    // The default idle timeout (60 s): only deleting the entry can let the
    // denied 5-tuple through within the test.
    let agent = Agent::start(&lab, &[]);
    let work = tempfile::tempdir().expect("work dir");
    let out = apply_file(&agent, work.path(), "deny.yaml", SERVER_DENY);
    assert!(out.status.success(), "{out:?}");
    set_mode(&agent, "u", "enforce");
    let status = lab.status();
    let server_ip: std::net::IpAddr = status["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .find(|p| p["name"] == "server")
        .and_then(|p| p["ips"][0].as_str()?.parse().ok())
        .expect("server ip");
    let server = std::net::SocketAddr::from((server_ip, 5353));
    let client = pod_udp_socket(&lab, "u/client", 40_000, server);

    // Denied, and the 5-tuple keeps sending: its DROPPED entry stays fresh.
    for n in 0..5 {
        assert!(!echoed(&client, n), "datagram {n} passed the default deny");
    }
    let drop = verdict_record(&agent, "DROPPED", "u/client", "u/server");
    assert_eq!(drop["traffic_direction"], "INGRESS", "{drop:#}");

    // Allowed: the same 5-tuple passes right after `apply` returns.
    let out = apply_file(&agent, work.path(), "allow.yaml", SERVER_FROM_CLIENT);
    assert!(out.status.success(), "{out:?}");
    let passed = (10..13).find(|&n| echoed(&client, n));
    assert!(
        passed.is_some(),
        "the allowed 5-tuple is still blocked by its old verdict; log:\n{}",
        agent.log_text()
    );
    assert!(echoed(&client, 20));

    // Denied again: the established 5-tuple keeps its FORWARDED verdict (as
    // Cilium and an iptables ESTABLISHED rule keep established flows), a
    // new source port is judged under the new policy and dropped.
    let out = apply_file(&agent, work.path(), "deny.yaml", SERVER_DENY);
    assert!(out.status.success(), "{out:?}");
    assert!(echoed(&client, 30), "an established flow was cut");
    let other = pod_udp_socket(&lab, "u/client", 40_001, server);
    for n in 40..43 {
        assert!(!echoed(&other, n), "a new flow passed the default deny");
    }
}
