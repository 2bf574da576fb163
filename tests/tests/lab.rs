//! `weir lab` end to end: real network namespaces, veths, a bridge and
//! nftables, driven through the built `weir` binary and the library API.
//! Needs root; each test uses its own lab name and CIDR, so they run in
//! parallel and beside other labs.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use serde_json::Value;
use weir_agent::resolve::{Source, lab::LabSource};
use weir_generator::model::{Protocol, WorkloadKind};
use weir_integration_tests::harness::{require_root, weir_bin};
use weir_lab::{LabState, probe};

fn weir(lab: &str, args: &[&str]) -> Output {
    Command::new(weir_bin())
        .args(["lab", "--lab", lab])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run weir lab {args:?}: {e}"))
}

fn weir_ok(lab: &str, args: &[&str]) -> String {
    let out = weir(lab, args);
    assert!(
        out.status.success(),
        "weir lab --lab {lab} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A lab name unique to this test process.
fn lab_name(tag: &str) -> String {
    format!("t{}{tag}", std::process::id() % 100_000)
}

/// Runs `weir lab down` on drop, also when the test panics.
struct LabGuard {
    lab: String,
    dir: PathBuf,
}

impl LabGuard {
    fn new(tag: &str) -> Self {
        let lab = lab_name(tag);
        let dir = std::env::temp_dir().join(format!("weir-lab-test-{lab}"));
        std::fs::create_dir_all(&dir).expect("creating the test's spec directory");
        Self { lab, dir }
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        let mut f = std::fs::File::create(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        f.write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        let _ = weir(&self.lab, &["down"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three namespaces, seven pods, dual-stack, one external host, a Service.
fn lab_yaml(octet: u8) -> String {
    format!(
        r"
apiVersion: lab.weir.dev/v1alpha1
kind: Lab
metadata: {{name: test}}
spec:
  podCIDR: 10.{octet}.0.0/16
  podCIDRv6: fd00:{octet}::/64
  serviceCIDR: 10.{s}.0.0/16
  serviceCIDRv6: fd00:{s}::/112
  dualStack: true
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Namespace
    metadata: {{name: shop, labels: {{team: web}}}}
  - apiVersion: v1
    kind: Namespace
    metadata: {{name: data}}
  - apiVersion: v1
    kind: Namespace
    metadata: {{name: infra}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: shop}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
        - name: c
          ports: [{{name: http, containerPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: shop, labels: {{app: client}}}}
spec: {{containers: [{{name: c}}]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: fixed, namespace: shop, labels: {{app: fixed}}}}
spec: {{containers: [{{name: c, ports: [{{containerPort: 80}}]}}]}}
status: {{podIP: 10.{octet}.1.50}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db, namespace: data}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec: {{containers: [{{name: c, ports: [{{containerPort: 5432}}]}}]}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: dns, namespace: infra}}
spec:
  selector: {{matchLabels: {{k8s-app: dns}}}}
  template:
    metadata: {{labels: {{k8s-app: dns}}}}
    spec:
      containers:
        - name: c
          ports:
            - {{containerPort: 53, protocol: UDP}}
            - {{containerPort: 53, protocol: TCP}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: http}}]
---
apiVersion: lab.weir.dev/v1alpha1
kind: ExternalHost
metadata: {{name: payments}}
spec:
  ips: [203.0.113.10, 2001:db8::10]
  ports: [{{port: 443, protocol: TCP}}]
",
        s = octet + 1
    )
}

fn netns_left(lab: &str) -> Vec<String> {
    let prefix = format!("weir-{lab}_");
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Running (a zombie waiting for init to reap it is not).
fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with(['Z', 'X']))
    })
}

/// Everything the state lists is gone: netns, links, processes, tables,
/// state file.
fn assert_gone(lab: &str, state: &Value) {
    assert!(
        netns_left(lab).is_empty(),
        "netns left: {:?}",
        netns_left(lab)
    );
    let bridge = state["bridge"]
        .as_str()
        .expect("the state names its bridge");
    assert!(
        !Path::new("/sys/class/net").join(bridge).exists(),
        "bridge {bridge} left"
    );
    for pod in state["pods"]
        .as_array()
        .expect("the state lists its pods")
        .iter()
        .chain(
            state["externalHosts"]
                .as_array()
                .expect("the state lists its external hosts"),
        )
    {
        let veth = pod["hostVeth"].as_str().expect("a pod has a host veth");
        assert!(
            !Path::new("/sys/class/net").join(veth).exists(),
            "veth {veth} left"
        );
    }
    for r in state["resources"]
        .as_array()
        .expect("the state lists its resources")
    {
        if r["type"] == "process" {
            let pid = r["pid"].as_u64().expect("a process resource has a pid");
            assert!(!alive(pid), "responder {pid} still running");
        }
    }
    let table = format!("weir_lab_{}", lab.replace('-', "_"));
    let nft = Command::new("nft")
        .args(["list", "table", "inet", &table])
        .output()
        .expect("running nft");
    assert!(!nft.status.success(), "nft table {table} left");
    assert!(
        !Path::new(&format!("/run/weir/lab-{lab}.json")).exists(),
        "state file left"
    );
}

fn raw_state(lab: &str) -> Value {
    let path = format!("/run/weir/lab-{lab}.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn probe_cli(lab: &str, from: &str, to: &str, port: &str) -> bool {
    let out = weir(lab, &["probe", from, to, port, "--timeout", "1s"]);
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    match out.status.code() {
        Some(0) => {
            assert_eq!(text, "connected");
            true
        }
        Some(1) => {
            assert_eq!(text, "blocked");
            false
        }
        _ => panic!("probe {from} -> {to} {port} failed: {}", stderr(&out)),
    }
}

#[test]
fn lab_up_probe_replace_down() {
    require_root();
    let g = LabGuard::new("a");
    let lab = g.lab.as_str();
    let yaml = g.file("lab.yaml", &lab_yaml(241));
    let yaml = yaml.to_str().unwrap();
    weir_ok(lab, &["up", yaml]);

    // status -o json
    let status: Value = serde_json::from_str(&weir_ok(lab, &["status", "-o", "json"])).unwrap();
    let pods = status["pods"].as_array().unwrap();
    assert_eq!(pods.len(), 7, "{status:#}");
    let namespaces: std::collections::BTreeSet<&str> = pods
        .iter()
        .map(|p| p["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces.len(), 3);
    for pod in pods {
        let netns = pod["netns"].as_str().unwrap();
        assert!(Path::new("/run/netns").join(netns).exists(), "{netns}");
        let veth = pod["hostVeth"].as_str().unwrap();
        assert!(veth.len() <= 15 && veth.starts_with("veth"), "{veth}");
        assert!(Path::new("/sys/class/net").join(veth).exists(), "{veth}");
        assert_eq!(pod["ips"].as_array().unwrap().len(), 2, "dual-stack: {pod}");
    }
    let web: Vec<&Value> = pods
        .iter()
        .filter(|p| p["labels"]["app"] == "web")
        .collect();
    assert_eq!(web.len(), 3);
    for p in &web {
        assert_eq!(p["workload"]["kind"], "Deployment");
        assert_eq!(p["workload"]["name"], "web");
        let name = p["name"].as_str().unwrap();
        let hash = p["labels"]["pod-template-hash"].as_str().unwrap();
        assert_eq!(hash.len(), 10);
        assert!(
            name.starts_with(&format!("web-{hash}-")) && name.len() == "web-".len() + 10 + 1 + 5,
            "{name}"
        );
    }
    let fixed = pods.iter().find(|p| p["name"] == "fixed").unwrap();
    assert_eq!(fixed["ips"][0], "10.241.1.50");
    assert_eq!(status["externalHosts"][0]["name"], "payments");
    assert!(
        status["services"][0]["clusterIPs"][0]
            .as_str()
            .unwrap()
            .starts_with("10.242.")
    );

    let web0 = format!("shop/{}", web[0]["name"].as_str().unwrap());
    let web0_v6 = web[0]["ips"][1].as_str().unwrap().to_owned();
    let dns = pods.iter().find(|p| p["namespace"] == "infra").unwrap();
    let dns_name = format!("infra/{}", dns["name"].as_str().unwrap());
    let dns_v6 = dns["ips"][1].as_str().unwrap().to_owned();

    // TCP and UDP, v4 and v6.
    assert!(probe_cli(lab, "shop/client", &web0, "8080"));
    assert!(probe_cli(lab, "shop/client", &web0_v6, "8080/TCP"));
    assert!(probe_cli(lab, "shop/client", &dns_name, "53/UDP"));
    assert!(probe_cli(lab, "shop/client", &dns_v6, "53/udp"));
    assert!(probe_cli(lab, "data/db-0", &dns_name, "53"));
    // Nobody listens.
    assert!(!probe_cli(lab, "shop/client", &web0, "9999"));
    assert!(!probe_cli(lab, "shop/client", &dns_name, "9999/UDP"));
    // External host, both families, both directions.
    assert!(probe_cli(lab, "shop/client", "payments", "443"));
    assert!(probe_cli(lab, "shop/client", "2001:db8::10", "443"));
    assert!(probe_cli(lab, "payments", &web0, "8080"));
    // ClusterIP Service, DNATed inside the client's netns.
    let cluster_ip = status["services"][0]["clusterIPs"][0].as_str().unwrap();
    let cluster_ip6 = status["services"][0]["clusterIPs"][1].as_str().unwrap();
    assert!(probe_cli(lab, "shop/client", cluster_ip, "80"));
    assert!(probe_cli(lab, "shop/client", cluster_ip6, "80"));

    // Nothing leaves the lab: no default route in pods.
    for target in ["1.1.1.1", "2606:4700::1111"] {
        let out = weir(
            lab,
            &["exec", "shop/client", "--", "ip", "route", "get", target],
        );
        assert!(
            !out.status.success(),
            "pod has a route to {target}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // exec passes the exit code through.
    assert_eq!(
        weir(lab, &["exec", &web0, "--", "sh", "-c", "exit 7"])
            .status
            .code(),
        Some(7)
    );

    // The matrix: every client reaches every web pod on 8080.
    let m: Value = serde_json::from_slice(
        &weir(
            lab,
            &[
                "probe", "--matrix", "--port", "8080/TCP", "-n", "shop", "-o", "json",
            ],
        )
        .stdout,
    )
    .unwrap();
    let names: Vec<&str> = m["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for (i, row) in m["connected"].as_array().unwrap().iter().enumerate() {
        for (j, cell) in row.as_array().unwrap().iter().enumerate() {
            let expect = names[j].starts_with("shop/web-");
            assert_eq!(cell.as_bool(), Some(expect), "{} -> {}", names[i], names[j]);
        }
    }

    // Library API.
    let state = LabState::load(lab).unwrap();
    assert!(
        probe::probe(
            &state,
            "shop/client",
            &web0,
            8080,
            Protocol::Tcp,
            Duration::from_secs(1)
        )
        .unwrap()
    );
    assert!(
        !probe::probe(
            &state,
            "shop/client",
            &web0,
            8081,
            Protocol::Tcp,
            Duration::from_millis(300)
        )
        .unwrap()
    );
    let inventory = LabSource::new(&lab.parse().unwrap()).snapshot().unwrap();
    assert_eq!(inventory.pods.len(), 7, "external hosts are not pods");
    assert!(inventory.pods.iter().all(|p| p.host_veth.is_some()));
    assert!(
        inventory
            .pods
            .iter()
            .any(|p| p.meta.workload.kind == WorkloadKind::StatefulSet)
    );
    assert_eq!(
        inventory.namespaces["infra"]["kubernetes.io/metadata.name"],
        "infra"
    );

    // A second up refuses and says what to do; --replace works.
    let again = weir(lab, &["up", yaml]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stderr(&again).contains("weir lab down") && stderr(&again).contains("--replace"),
        "{}",
        stderr(&again)
    );
    let before = raw_state(lab);
    weir_ok(lab, &["up", "--replace", yaml]);
    for r in before["resources"].as_array().unwrap() {
        if r["type"] == "process" {
            assert!(
                !alive(r["pid"].as_u64().unwrap()),
                "old responder survived --replace"
            );
        }
    }
    assert!(
        probe_cli(lab, "shop/client", &web0, "8080"),
        "same names after --replace"
    );

    // down removes everything, and is idempotent.
    let state = raw_state(lab);
    assert!(weir_ok(lab, &["down"]).contains("removed"));
    assert_gone(lab, &state);
    assert!(weir_ok(lab, &["down"]).contains("nothing to remove"));
    assert_eq!(weir(lab, &["status"]).status.code(), Some(2));
}

#[test]
fn lab_down_after_crash() {
    require_root();
    let g = LabGuard::new("b");
    let lab = g.lab.as_str();
    let yaml = g.file("lab.yaml", &lab_yaml(243));
    weir_ok(lab, &["up", yaml.to_str().unwrap()]);
    let state = raw_state(lab);
    // Crash: responders killed, one netns and one veth gone by hand, the
    // state file left claiming `creating`.
    for r in state["resources"].as_array().unwrap() {
        if r["type"] == "process" {
            let pid = r["pid"].as_u64().unwrap();
            Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()
                .unwrap();
        }
    }
    let pod = &state["pods"][0];
    Command::new("ip")
        .args(["netns", "del", pod["netns"].as_str().unwrap()])
        .status()
        .unwrap();
    Command::new("ip")
        .args([
            "link",
            "del",
            state["pods"][1]["hostVeth"].as_str().unwrap(),
        ])
        .status()
        .unwrap();
    let mut crashed = state.clone();
    crashed["phase"] = "creating".into();
    std::fs::write(format!("/run/weir/lab-{lab}.json"), crashed.to_string()).unwrap();
    weir_ok(lab, &["down"]);
    assert_gone(lab, &state);

    // Lost state file: down still finds the lab's objects by name.
    weir_ok(lab, &["up", yaml.to_str().unwrap()]);
    let state = raw_state(lab);
    std::fs::remove_file(format!("/run/weir/lab-{lab}.json")).unwrap();
    let refused = weir(lab, &["up", yaml.to_str().unwrap()]);
    assert!(!refused.status.success(), "up over leftovers must refuse");
    weir_ok(lab, &["down"]);
    assert_gone(lab, &state);
}

#[test]
fn lab_rejects_bad_input_naming_file_and_document() {
    require_root();
    let g = LabGuard::new("c");
    let lab = g.lab.as_str();
    let cases = [
        (
            "unknown.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
            "document 2",
            "kind",
        ),
        (
            "malformed.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: [oops\n",
            "document 2",
            "malformed YAML",
        ),
        (
            "field.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, ports: [{containerPort: 99999}]}]}\n",
            "document 1",
            "spec.containers[0].ports[0].containerPort",
        ),
        (
            "external.yaml",
            "apiVersion: lab.weir.dev/v1alpha1\nkind: ExternalHost\nmetadata: {name: x}\nspec: {ips: [8.8.8.8]}\n",
            "document 1",
            "spec.ips[0]",
        ),
        (
            "list.yaml",
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: p}\n- apiVersion: v1\n  kind: Secret\n",
            "items[1]",
            "kind",
        ),
    ];
    for (name, text, document, field) in cases {
        let path = g.file(name, text);
        let out = weir(lab, &["up", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{name} accepted");
        let err = stderr(&out);
        for needle in [name, document, field] {
            assert!(err.contains(needle), "{name}: {needle:?} not in {err}");
        }
        assert!(netns_left(lab).is_empty(), "{name} left netns behind");
    }
}

/// Two nodes, each with a bridge; a client on a (the first node, where
/// pods naming none run), a Deployment on b with a Service, a DaemonSet
/// (a pod on each node).
fn two_node_yaml() -> &'static str {
    r"
apiVersion: lab.weir.dev/v1alpha1
kind: Lab
metadata: {name: two-nodes}
spec:
  serviceCIDR: 10.155.0.0/16
  nodes:
  - {name: a, podCIDR: 10.153.0.0/16}
  - {name: b, podCIDR: 10.154.0.0/16}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
spec: {containers: [{name: c, ports: [{containerPort: 9000}]}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {nodeName: b, containers: [{name: c, ports: [{containerPort: 8080}]}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: shop}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: c, ports: [{containerPort: 7000}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"
}

fn read_sysctl(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {path}: {e}"))
        .trim()
        .to_owned()
}

fn run_ok(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", stderr(&out));
}

/// A stand-in for the machine's uplink: a namespace of the test's own on a
/// veth from the root namespace, which forwards on it (as an uplink would),
/// with a responder on 7000. Nothing ever leaves the machine.
struct Uplink {
    netns: String,
    veth: String,
    responder: std::process::Child,
}

impl Uplink {
    const ADDRESS: &str = "10.156.0.2";

    fn start(tag: &str) -> Self {
        let netns = format!("weir-test-uplink-{tag}");
        let veth = format!("upl{tag}");
        assert!(veth.len() <= 15, "{veth}");
        run_ok("ip", &["netns", "add", &netns]);
        run_ok(
            "ip",
            &[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ],
        );
        run_ok("ip", &["addr", "add", "10.156.0.1/30", "dev", &veth]);
        run_ok("ip", &["link", "set", &veth, "up"]);
        std::fs::write(format!("/proc/sys/net/ipv4/conf/{veth}/forwarding"), "1")
            .expect("forwarding on the uplink");
        for args in [
            &["addr", "add", "10.156.0.2/30", "dev", "eth0"][..],
            &["link", "set", "eth0", "up"],
            &["link", "set", "lo", "up"],
            &["route", "add", "default", "via", "10.156.0.1"],
        ] {
            run_ok("ip", &[&["-n", netns.as_str()][..], args].concat());
        }
        let mut responder = Command::new("ip")
            .args(["netns", "exec", &netns])
            .arg(weir_bin())
            .args(["lab", "serve", "--tcp", "7000"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("uplink responder");
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(responder.stdout.take().expect("stdout")),
            &mut ready,
        )
        .expect("responder ready line");
        assert_eq!(ready.trim(), "ready");
        Self {
            netns,
            veth,
            responder,
        }
    }
}

impl Drop for Uplink {
    fn drop(&mut self) {
        let _ = self.responder.kill();
        let _ = self.responder.wait();
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
    }
}

/// The packets the lab's forward rules dropped, by rule comment.
fn forward_drops(lab: &str) -> u64 {
    let table = format!("weir_lab_{}", lab.replace('-', "_"));
    let out = Command::new("nft")
        .args(["list", "table", "inet", &table])
        .output()
        .expect("nft");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("never route"))
        .filter_map(|l| {
            let rest = l.split("counter packets ").nth(1)?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

#[test]
fn a_multi_node_lab_routes_node_to_node_and_never_to_the_uplink() {
    require_root();
    let g = LabGuard::new("m");
    let lab = g.lab.as_str();
    let yaml = g.file("two-nodes.yaml", two_node_yaml());
    let ip_forward = read_sysctl("/proc/sys/net/ipv4/ip_forward");
    weir_ok(lab, &["up", yaml.to_str().unwrap()]);

    let status: Value = serde_json::from_str(&weir_ok(lab, &["status", "-o", "json"])).unwrap();
    let nodes = status["nodes"].as_array().expect("status lists nodes");
    let node = |name: &str| {
        nodes
            .iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("no node {name}: {status:#}"))
    };
    assert_eq!(node("a")["podCIDR"], "10.153.0.0/16");
    assert_eq!(node("a")["address"], "10.153.0.1");
    assert_eq!(node("b")["address"], "10.154.0.1");
    assert_eq!(
        status["podCIDRs"],
        serde_json::json!(["10.153.0.0/16", "10.154.0.0/16"])
    );
    let pods = status["pods"].as_array().unwrap();
    assert_eq!(pods.len(), 5, "{status:#}");
    let mut on = std::collections::BTreeMap::<&str, Vec<String>>::new();
    for pod in pods {
        let name = format!(
            "{}/{}",
            pod["namespace"].as_str().unwrap(),
            pod["name"].as_str().unwrap()
        );
        let node_name = pod["node"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no node"));
        let prefix = if node_name == "a" {
            "10.153."
        } else {
            "10.154."
        };
        let ip = pod["ips"][0].as_str().unwrap();
        assert!(
            ip.starts_with(prefix),
            "{name} {ip} outside node {node_name}'s range"
        );
        // Each pod's veth is on its node's bridge.
        let veth = pod["hostVeth"].as_str().unwrap();
        let master = std::fs::read_link(format!("/sys/class/net/{veth}/master")).unwrap();
        assert_eq!(
            master.file_name().unwrap().to_str().unwrap(),
            node(node_name)["bridge"].as_str().unwrap(),
            "{name}"
        );
        on.entry(node_name).or_default().push(name);
    }
    assert_eq!(on["a"].len(), 2, "client and a DaemonSet pod on a: {on:?}");
    assert_eq!(on["b"].len(), 3, "web x2 and a DaemonSet pod on b: {on:?}");
    let (agent_a, agent_b) = {
        let ds = |n: &str| {
            on[n]
                .iter()
                .find(|p| p.starts_with("shop/agent-"))
                .unwrap()
                .clone()
        };
        (ds("a"), ds("b"))
    };
    let web = on["b"]
        .iter()
        .find(|p| p.starts_with("shop/web-"))
        .unwrap()
        .clone();

    // Node to node, both ways, and to a Service whose backends are on b.
    assert!(probe_cli(lab, "shop/client", &web, "8080"));
    assert!(probe_cli(lab, &web, "shop/client", "9000"));
    assert!(probe_cli(lab, &agent_b, &agent_a, "7000"));
    let cluster_ip = status["services"][0]["clusterIPs"][0].as_str().unwrap();
    assert!(probe_cli(lab, "shop/client", cluster_ip, "80"));
    // Forwarding is on for the lab's bridges only.
    for n in ["a", "b"] {
        let bridge = node(n)["bridge"].as_str().unwrap();
        assert_eq!(
            read_sysctl(&format!("/proc/sys/net/ipv4/conf/{bridge}/forwarding")),
            "1"
        );
    }
    assert_eq!(
        read_sysctl("/proc/sys/net/ipv4/ip_forward"),
        ip_forward,
        "the host's own setting is left alone"
    );

    // A pod that routes everything through its node still reaches nothing
    // but lab bridges: not the uplink, nor the uplink it.
    let uplink = Uplink::start(&format!("{}", std::process::id() % 100_000));
    let uplink_addr = std::net::SocketAddr::new(Uplink::ADDRESS.parse().unwrap(), 7000);
    assert!(
        probe::probe_addr(
            &uplink.netns,
            uplink_addr,
            Protocol::Tcp,
            Duration::from_secs(1)
        )
        .unwrap(),
        "the uplink's responder answers"
    );
    weir_ok(
        lab,
        &[
            "exec",
            &web,
            "--",
            "ip",
            "route",
            "add",
            "default",
            "via",
            "10.154.0.1",
        ],
    );
    let before = forward_drops(lab);
    assert!(
        !probe_cli(lab, &web, Uplink::ADDRESS, "7000"),
        "a pod reached the uplink"
    );
    assert!(
        forward_drops(lab) > before,
        "the lab's forward rule dropped it"
    );
    let web_ip = pods
        .iter()
        .find(|p| format!("shop/{}", p["name"].as_str().unwrap()) == web)
        .and_then(|p| p["ips"][0].as_str())
        .unwrap()
        .parse()
        .unwrap();
    let before = forward_drops(lab);
    assert!(
        !probe::probe_addr(
            &uplink.netns,
            std::net::SocketAddr::new(web_ip, 8080),
            Protocol::Tcp,
            Duration::from_secs(1)
        )
        .unwrap(),
        "the uplink reached a pod"
    );
    assert!(
        forward_drops(lab) > before,
        "the lab's forward rule dropped it"
    );
    drop(uplink);

    // down removes every node's bridge, also without the state file.
    let bridges: Vec<String> = nodes
        .iter()
        .map(|n| n["bridge"].as_str().unwrap().to_owned())
        .collect();
    let state = raw_state(lab);
    std::fs::remove_file(format!("/run/weir/lab-{lab}.json")).unwrap();
    assert!(weir_ok(lab, &["down"]).contains("removed"));
    assert_gone(lab, &state);
    for bridge in bridges {
        assert!(
            !Path::new("/sys/class/net").join(&bridge).exists(),
            "bridge {bridge} left"
        );
    }
}
