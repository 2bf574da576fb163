//! deploy/: the Helm chart renders schema-valid manifests with least
//! privilege, deploy/manifests/ is its fresh render, and the DaemonSet's
//! capability set is proven on the real kernel: the agent attaches and
//! observes with exactly those capabilities, fails without any one of BPF,
//! NET_ADMIN and PERFMON, and learns connections open before it attached
//! only with SYS_ADMIN (setns into the pod's namespace).
//!
//! Needs `target/tools/helm` (`make helm`) and `kubernetes-validate`
//! (`make pydeps`); `make test` installs both. A missing tool fails the
//! test, never skips it.

use std::{
    collections::BTreeSet,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use k8s_openapi::api::{apps::v1::DaemonSet, core::v1::Container, rbac::v1::ClusterRole};
use serde_json::Value;
use weir_integration_tests::harness::{
    Lab, PinDir, eventually, metric_value, require_root, unique_name, weir_bin,
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), PathBuf::from)
}

fn tool(path: &str, install: &str) -> PathBuf {
    let tool = target_dir().join(path);
    assert!(
        tool.exists(),
        "{} is missing: run `make {install}` (make test does)",
        tool.display()
    );
    tool
}

/// `helm template weir deploy/helm/weir --namespace weir --set SETS...`,
/// exactly as `make manifests` runs it (plus the sets).
fn render(sets: &[&str]) -> String {
    let mut cmd = Command::new(tool("tools/helm", "helm"));
    cmd.args(["template", "weir"])
        .arg(repo().join("deploy/helm/weir"))
        .args(["--namespace", "weir"]);
    for set in sets {
        cmd.args(["--set", set]);
    }
    let out = cmd.output().expect("run helm");
    assert!(
        out.status.success(),
        "helm template {sets:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("helm output is UTF-8")
}

/// helm's error for values the chart refuses.
fn render_error(sets: &[&str]) -> String {
    let mut cmd = Command::new(tool("tools/helm", "helm"));
    cmd.args(["template", "weir"])
        .arg(repo().join("deploy/helm/weir"))
        .args(["--namespace", "weir"]);
    for set in sets {
        cmd.args(["--set", set]);
    }
    let out = cmd.output().expect("run helm");
    assert!(!out.status.success(), "helm template {sets:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `kubernetes-validate --strict` on a file: schema errors and unknown
/// fields fail.
fn validate(path: &Path) {
    let out = Command::new(tool("venv/bin/kubernetes-validate", "pydeps"))
        .arg("--strict")
        .arg(path)
        .output()
        .expect("run kubernetes-validate");
    assert!(
        out.status.success(),
        "kubernetes-validate {}:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn validate_text(name: &str, yaml: &str) {
    let file = tempfile::Builder::new()
        .prefix(name)
        .suffix(".yaml")
        .tempfile()
        .expect("temp file");
    std::fs::write(file.path(), yaml).expect("write rendered chart");
    validate(file.path());
}

/// The documents of a multi-document YAML stream, as JSON values.
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("rendered YAML parses"))
        .filter(|doc: &Value| !doc.is_null())
        .collect()
}

fn the<T: serde::de::DeserializeOwned>(yaml: &str, kind: &str) -> T {
    let mut found = documents(yaml).into_iter().filter(|d| d["kind"] == kind);
    let doc = found.next().unwrap_or_else(|| panic!("no {kind} rendered"));
    assert!(found.next().is_none(), "more than one {kind}");
    serde_json::from_value(doc).unwrap_or_else(|e| panic!("{kind} is not a valid {kind}: {e}"))
}

fn agent_container(ds: &DaemonSet) -> Container {
    let pod = ds.spec.as_ref().expect("spec").template.spec.as_ref();
    let containers = &pod.expect("pod spec").containers;
    assert_eq!(containers.len(), 1, "one container");
    containers[0].clone()
}

/// The capabilities the DaemonSet adds (after dropping ALL).
fn capabilities(yaml: &str) -> BTreeSet<String> {
    let ds: DaemonSet = the(yaml, "DaemonSet");
    let caps = agent_container(&ds)
        .security_context
        .and_then(|s| s.capabilities)
        .expect("capabilities");
    assert_eq!(caps.drop, Some(vec!["ALL".to_owned()]), "drop ALL first");
    caps.add.unwrap_or_default().into_iter().collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn every_manifest_and_the_rendered_chart_pass_schema_validation() {
    // deploy/ less the lab's examples (lab kinds) and the chart's sources
    // (templates are not YAML until rendered).
    let mut files = Vec::new();
    let mut dirs = vec![repo().join("deploy")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read deploy/") {
            let path = entry.expect("dir entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if name != "examples" && name != "helm" {
                    dirs.push(path);
                }
            } else if name.ends_with(".yaml") || name.ends_with(".yml") {
                files.push(path);
            }
        }
    }
    assert!(
        files.iter().any(|f| f.ends_with("manifests/weir.yaml")),
        "deploy/manifests/weir.yaml is among {files:?}"
    );
    for file in &files {
        validate(file);
    }
    for (name, sets) in [
        ("default", &[][..]),
        ("enforce", &["rbac.enforce=true"][..]),
        (
            "everything",
            &[
                "rbac.enforce=true",
                "token.generate=true",
                "podNamespaces.proc=true",
                "listen.address=::",
                "extraArgs={--flow-table-entries=131072}",
            ][..],
        ),
        (
            "minimal",
            &[
                "podNamespaces.netnsDir=false",
                "service.enabled=false",
                "networkPolicy.enabled=false",
            ][..],
        ),
    ] {
        validate_text(name, &render(sets));
    }
}

#[test]
fn bad_values_are_refused_naming_the_value() {
    for (set, names) in [
        ("defaultMode=block", "defaultMode"),
        ("listen.port=70000", "listen.port"),
        ("hostPaths.pinDir=/sys/fs/bpf/weir", "hostPaths.pinDir"),
        ("token.generate=yes", "token.generate"),
    ] {
        let error = render_error(&[set]);
        assert!(error.contains(names), "{set}: {error}");
    }
}

#[test]
fn rendered_manifests_are_the_charts_fresh_default_render() {
    let committed = std::fs::read_to_string(repo().join("deploy/manifests/weir.yaml"))
        .expect("deploy/manifests/weir.yaml");
    assert!(
        committed == render(&[]),
        "deploy/manifests/weir.yaml differs from the chart's default render: run `make manifests`"
    );
}

#[test]
fn the_daemonset_runs_with_least_privilege() {
    let yaml = render(&[]);
    let ds: DaemonSet = the(&yaml, "DaemonSet");
    let pod = ds.spec.as_ref().unwrap().template.spec.clone().unwrap();
    let agent = agent_container(&ds);
    let security = agent.security_context.clone().expect("securityContext");
    assert_eq!(security.privileged, Some(false), "never privileged");
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(
        security.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault")
    );
    assert_eq!(
        capabilities(&yaml),
        set(&["BPF", "NET_ADMIN", "PERFMON", "SYS_ADMIN"])
    );
    assert_eq!(pod.host_network, Some(true));
    assert_ne!(pod.host_pid, Some(true), "no hostPID by default");
    assert!(
        pod.init_containers.is_none() && pod.ephemeral_containers.is_none(),
        "one container"
    );

    let node_name = agent
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "NODE_NAME")
        .expect("NODE_NAME env");
    let field = node_name
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .expect("NODE_NAME from the downward API");
    assert_eq!(field.field_path, "spec.nodeName");

    let args = agent.args.clone().unwrap_or_default();
    for arg in [
        "agent",
        "--source=kube",
        "--listen=0.0.0.0:9090",
        "--default-mode=observe",
        "--state-dir=/var/lib/weir",
        "--pin-dir=/sys/fs/bpf/weir",
        "--token-file=/etc/weir/token/token",
    ] {
        assert!(args.iter().any(|a| a == arg), "{arg} in {args:?}");
    }
    for probe in [&agent.liveness_probe, &agent.readiness_probe] {
        let get = probe.as_ref().and_then(|p| p.http_get.as_ref());
        assert_eq!(get.and_then(|g| g.path.as_deref()), Some("/healthz"));
    }

    // Host paths, each mounted where the agent's flags point.
    let volumes = pod.volumes.clone().unwrap_or_default();
    let mounts = agent.volume_mounts.clone().unwrap_or_default();
    let host_path = |mount_path: &str| {
        let mount = mounts
            .iter()
            .find(|m| m.mount_path == mount_path)
            .unwrap_or_else(|| panic!("nothing mounted at {mount_path}"));
        volumes
            .iter()
            .find(|v| v.name == mount.name)
            .and_then(|v| v.host_path.as_ref())
            .map(|h| (h.path.clone(), mount.read_only.unwrap_or(false)))
            .unwrap_or_else(|| panic!("{mount_path} is not a host path"))
    };
    assert_eq!(host_path("/sys/fs/bpf"), ("/sys/fs/bpf".to_owned(), false));
    assert_eq!(
        host_path("/var/lib/weir"),
        ("/var/lib/weir".to_owned(), false)
    );
    assert_eq!(host_path("/run/netns"), ("/run/netns".to_owned(), true));
    let host_paths: BTreeSet<_> = volumes
        .iter()
        .filter_map(|v| v.host_path.as_ref().map(|h| h.path.clone()))
        .collect();
    assert_eq!(
        host_paths,
        set(&["/sys/fs/bpf", "/var/lib/weir", "/run/netns"]),
        "no other host path"
    );

    // Without pods' namespaces: the datapath's three capabilities only.
    let minimal = render(&["podNamespaces.netnsDir=false"]);
    assert_eq!(
        capabilities(&minimal),
        set(&["BPF", "NET_ADMIN", "PERFMON"])
    );
    assert!(!minimal.contains("/run/netns"), "no netns host path");
    // /proc namespaces (cri-dockerd): hostPID and SYS_PTRACE, still not
    // privileged.
    let proc = render(&["podNamespaces.proc=true"]);
    assert_eq!(
        capabilities(&proc),
        set(&["BPF", "NET_ADMIN", "PERFMON", "SYS_ADMIN", "SYS_PTRACE"])
    );
    let ds: DaemonSet = the(&proc, "DaemonSet");
    assert_eq!(ds.spec.unwrap().template.spec.unwrap().host_pid, Some(true));
    for yaml in [&yaml, &minimal, &proc] {
        assert!(!yaml.contains("privileged: true"));
    }
}

#[test]
fn the_daemonsets_flags_are_the_agents() {
    // clap checks every flag and value before `--help` and exits 0 there:
    // an unknown flag or a bad value in the chart fails here.
    for sets in [
        &[][..],
        &[
            "extraArgs={--flow-table-entries=131072}",
            "listen.address=::",
        ][..],
    ] {
        let ds: DaemonSet = the(&render(sets), "DaemonSet");
        let args = agent_container(&ds).args.unwrap_or_default();
        let out = Command::new(weir_bin())
            .args(&args)
            .arg("--help")
            .output()
            .expect("run weir");
        assert!(
            out.status.success(),
            "weir {args:?} is refused:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// (apiGroup, resource, verb) granted by a ClusterRole.
fn grants(role: &ClusterRole) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in role.rules.iter().flatten() {
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    out.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    out
}

#[test]
fn the_cluster_role_writes_only_when_enforcement_is_enabled() {
    let read: BTreeSet<_> = [
        ("", "pods"),
        ("", "namespaces"),
        ("", "services"),
        ("", "nodes"),
        ("discovery.k8s.io", "endpointslices"),
        ("networking.k8s.io", "networkpolicies"),
    ]
    .into_iter()
    .flat_map(|(group, resource)| {
        ["get", "list", "watch"]
            .map(|verb| (group.to_owned(), resource.to_owned(), verb.to_owned()))
    })
    .collect();
    let default: ClusterRole = the(&render(&[]), "ClusterRole");
    assert_eq!(grants(&default), read, "read verbs only by default");

    let enforce: ClusterRole = the(&render(&["rbac.enforce=true"]), "ClusterRole");
    let writes: BTreeSet<_> = grants(&enforce).difference(&read).cloned().collect();
    assert_eq!(
        writes,
        BTreeSet::from([
            ("".to_owned(), "namespaces".to_owned(), "patch".to_owned()),
            (
                "networking.k8s.io".to_owned(),
                "networkpolicies".to_owned(),
                "create".to_owned()
            ),
            (
                "networking.k8s.io".to_owned(),
                "networkpolicies".to_owned(),
                "patch".to_owned()
            ),
        ]),
        "exactly the write verbs of `weir mode set` and `weir export --apply`"
    );
    assert!(grants(&enforce).is_superset(&read));
}

// ---- the capability set on the real kernel ----

/// Pods 10.201.0.0/16: client, and server listening on 8080 and 9000.
const LAB: &str = r"apiVersion: lab.weir.dev/v1alpha1
kind: Lab
metadata: {name: caps}
spec: {podCIDR: 10.201.0.0/16}
---
apiVersion: v1
kind: Namespace
metadata: {name: app}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: app, labels: {app: client}}
spec:
  containers: [{name: c, image: lab}]
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: app, labels: {app: server}}
spec:
  containers:
  - name: s
    image: lab
    ports: [{containerPort: 8080}, {containerPort: 9000}]
";

/// The agent's bpffs must be mounted before it starts: a node's is (systemd
/// mounts it), the DaemonSet's agent has no CAP_SYS_ADMIN to mount one
/// without podNamespaces, and a fresh test machine may not have one. Same
/// lock as the agent's own mount.
fn ensure_bpffs() {
    let lock = std::fs::File::create("/run/weir-bpffs.lock").expect("create the bpffs lock");
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock the bpffs lock");
    let fs = nix::sys::statfs::statfs("/sys/fs/bpf").expect("statfs /sys/fs/bpf");
    if fs.filesystem_type() != nix::sys::statfs::BPF_FS_MAGIC {
        nix::mount::mount(
            Some("bpffs"),
            "/sys/fs/bpf",
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("mount bpffs on /sys/fs/bpf");
    }
}

/// `weir agent --source lab:LAB` run through `setpriv` as a container
/// runtime runs the DaemonSet's container: uid 0, the bounding set (and so
/// the permitted and effective sets of uid 0 after exec) limited to `caps`,
/// no inheritable or ambient capabilities, no_new_privs
/// (allowPrivilegeEscalation: false).
struct CappedAgent {
    child: Child,
    listen: SocketAddr,
    log: PathBuf,
    _state: tempfile::TempDir,
    _pin: PinDir,
}

impl CappedAgent {
    fn start(lab: &Lab, caps: &BTreeSet<String>) -> Self {
        let listen = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let state = tempfile::Builder::new()
            .prefix(&format!("{}-state", lab.name))
            .tempdir()
            .expect("state dir");
        let pin = PinDir::new(&lab.name);
        let log = std::env::temp_dir().join(format!("{}.log", unique_name(&lab.name)));
        let bounding: String = std::iter::once("-all".to_owned())
            .chain(caps.iter().map(|c| format!("+{}", c.to_ascii_lowercase())))
            .collect::<Vec<_>>()
            .join(",");
        let child = Command::new("setpriv")
            .arg(format!("--bounding-set={bounding}"))
            .args(["--inh-caps=-all", "--ambient-caps=-all", "--no-new-privs"])
            .arg(weir_bin())
            .args(["agent", "--source", &format!("lab:{}", lab.name)])
            .args(["--listen", &listen.to_string()])
            .args(["--sweep-interval", "300ms", "--resync-interval", "200ms"])
            .arg("--state-dir")
            .arg(state.path())
            .args(["--pin-dir", &pin.arg()])
            .env("RUST_LOG", "info,weir_agent=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("agent log"))
            .spawn()
            .expect("run setpriv (util-linux)");
        Self {
            child,
            listen,
            log,
            _state: state,
            _pin: pin,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn get(&self, path: &str) -> Option<String> {
        reqwest::blocking::Client::new()
            .get(format!("http://{}{path}", self.listen))
            .timeout(Duration::from_secs(5))
            .send()
            .ok()?
            .error_for_status()
            .ok()?
            .text()
            .ok()
    }

    /// Whether the agent attached to `pods` veths (`true`) or exited
    /// (`false`), whichever comes first within 30 s.
    fn attaches(&mut self, pods: usize) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let attached = self
                .get("/metrics")
                .and_then(|m| metric_value(&m, "weir_attached_interfaces"));
            if attached == Some(pods as f64) {
                return true;
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "agent neither attached nor exited within 30s:\n{}",
            self.log_text()
        );
    }

    /// The graph's edges as (source, target, port).
    fn edges(&self) -> BTreeSet<(String, String, u64)> {
        let graph: Value = serde_json::from_str(&self.get("/api/graph").unwrap_or_default())
            .unwrap_or(Value::Null);
        let mut out = BTreeSet::new();
        for e in graph["edges"].as_array().into_iter().flatten() {
            for p in e["ports"].as_array().into_iter().flatten() {
                out.insert((
                    e["source"].as_str().unwrap_or_default().to_owned(),
                    e["target"].as_str().unwrap_or_default().to_owned(),
                    p["port"].as_u64().unwrap_or_default(),
                ));
            }
        }
        out
    }

    fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for CappedAgent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

fn edge(source: &str, target: &str, port: u64) -> (String, String, u64) {
    (source.to_owned(), target.to_owned(), port)
}

/// An idle TCP connection from the client to the server's port 9000,
/// opened before any agent runs: no probe ever sees a packet of it, so
/// only the pod's sockets (setns into its namespace) tell of it.
fn hold_connection(lab: &Lab, from: &str, to_ip: &str) -> Holder {
    let mut holder = Command::new(weir_bin())
        .args(["lab", "--lab", &lab.name, "exec", from, "--", "python3", "-c"])
        .arg(format!(
            "import socket, time\ns = socket.create_connection(('{to_ip}', 9000))\nprint('open', flush=True)\ntime.sleep(120)"
        ))
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the connection holder");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().expect("stdout")),
        &mut line,
    )
    .expect("holder output");
    assert_eq!(line.trim(), "open");
    Holder(holder)
}

/// The connection holder, killed on drop (also when the test panics).
struct Holder(Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_daemonsets_capabilities_are_enough_and_each_is_needed() {
    require_root();
    ensure_bpffs();
    let full = capabilities(&render(&[]));
    let datapath = capabilities(&render(&["podNamespaces.netnsDir=false"]));
    assert_eq!(
        full.difference(&datapath).cloned().collect::<BTreeSet<_>>(),
        set(&["SYS_ADMIN"])
    );

    let lab = Lab::up("dcp", LAB);
    let client = lab.pod("app", "client");
    let server = lab.pod("app", "server");
    let status = lab.status();
    let server_ip = status["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| format!("app/{}", p["name"].as_str().unwrap_or("")) == server)
        .and_then(|p| p["ips"][0].as_str())
        .unwrap_or_else(|| panic!("server's IP in {status}"))
        .to_owned();
    let holder = hold_connection(&lab, &client, &server_ip);
    let probed = edge("app/client", "app/server", 8080);
    let held = edge("app/client", "app/server", 9000);

    // The datapath's capabilities alone: attached, a new connection is
    // observed; the connection open before it attached is not.
    let mut agent = CappedAgent::start(&lab, &datapath);
    assert!(
        agent.attaches(2),
        "the agent failed with {datapath:?}:\n{}",
        agent.log_text()
    );
    assert!(lab.probe(&client, &server, "8080"), "probe connects");
    let edges = eventually(Duration::from_secs(10), || {
        let edges = agent.edges();
        edges.contains(&probed).then_some(edges)
    })
    .unwrap_or_else(|| panic!("no flow observed with {datapath:?}:\n{}", agent.log_text()));
    thread::sleep(Duration::from_secs(2));
    assert!(
        !edges.contains(&held) && !agent.edges().contains(&held),
        "without SYS_ADMIN the pod's sockets cannot be read"
    );
    agent.stop();
    drop(agent);

    // Each of them is needed: without it the datapath does not load.
    for missing in &datapath {
        let mut less = datapath.clone();
        less.remove(missing);
        let mut agent = CappedAgent::start(&lab, &less);
        assert!(
            !agent.attaches(2),
            "the agent attached without {missing}: the capability is not needed"
        );
        let log = agent.log_text();
        assert!(
            log.contains("cannot start the datapath"),
            "without {missing} the agent fails at the datapath:\n{log}"
        );
    }

    // The full default set: the connection open before the agent attached
    // is learned from the client's sockets, with its direction.
    let mut agent = CappedAgent::start(&lab, &full);
    assert!(
        agent.attaches(2),
        "the agent failed with {full:?}:\n{}",
        agent.log_text()
    );
    let learned = eventually(Duration::from_secs(10), || {
        agent.edges().contains(&held).then_some(())
    });
    drop(holder);
    assert!(
        learned.is_some(),
        "with SYS_ADMIN the open connection is learned: {:?}\n{}",
        agent.edges(),
        agent.log_text()
    );
    assert!(
        !agent
            .edges()
            .contains(&edge("app/server", "app/client", 9000)),
        "client -> server, never the reverse"
    );
    agent.stop();
}
