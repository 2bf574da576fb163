//! The image a user deploys, run the way the chart's DaemonSet runs it.
//!
//! `scripts/image.sh build` (`make image`'s recipe) packs the debug binary
//! twice: one digest, the OCI labels `skopeo inspect` shows, loaded by
//! `podman load` under the name the chart's DaemonSet references. The
//! chart is rendered and its pod and container spec are turned into
//! `podman run` options field by field (`RunSpec::from_chart`): a field the
//! conversion does not know fails the test, so a chart change cannot slip
//! past it. Run under runc against a lab whose pods a fake API server
//! serves (`--source=kube`, as rendered), the agent attaches, observes the
//! lab's traffic, serves /healthz and the graph, stops cleanly, and a new
//! container keeps the graph from the host path. Without any one of the
//! capabilities the chart adds, it exits naming it.
//!
//! Needs podman, buildah, runc and skopeo (`make testdeps`) and
//! `target/tools/helm` (`make helm`); `make test` installs them.

use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use weir_integration_tests::{
    chart::{only_of_kind, render, repo},
    fake_apiserver::FakeApiServer,
    harness::{
        Lab, PinDir, ensure_bpffs, eventually, free_local_addr, metric_value, require_root,
        unique_name, weir_bin,
    },
};

const LAB: &str = r"apiVersion: lab.weir.dev/v1alpha1
kind: Lab
metadata: {name: image}
spec: {podCIDR: 10.213.0.0/16}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
spec: {containers: [{name: c, image: lab}]}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: shop, labels: {app: server}}
spec: {containers: [{name: s, image: lab, ports: [{containerPort: 8080}]}]}
";

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (make testdeps installs it)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `scripts/image.sh build` of the debug binary into `dir`: the archive
/// and its digest.
fn build_image(dir: &Path) -> (PathBuf, String) {
    let out = run(Command::new(repo().join("scripts/image.sh"))
        .arg("build")
        .env("BINARY", weir_bin())
        .env("OUT_DIR", dir)
        .env("SBOM", "0"));
    let version = env!("CARGO_PKG_VERSION");
    let archive = dir.join(format!("weir-{version}.oci.tar"));
    let digest = std::fs::read_to_string(dir.join(format!("weir-{version}.oci.tar.digest")))
        .unwrap_or_else(|e| panic!("no digest next to the archive ({e}): {}", stdout(&out)));
    (archive, digest.trim().to_owned())
}

/// Panics on any key of `object` outside `known`: the conversion below
/// must be told what each field of the chart means for a container.
fn only_keys(object: &Value, known: &[&str], what: &str) {
    for key in object.as_object().into_iter().flatten().map(|(k, _)| k) {
        assert!(
            known.contains(&key.as_str()),
            "{what}.{key} is not turned into a podman option: map it in tests/tests/image.rs"
        );
    }
}

/// A Kubernetes quantity in bytes (memory) or millicores (cpu).
fn quantity(q: &str, unit_milli: bool) -> u64 {
    let (number, scale) = if let Some(n) = q.strip_suffix("Gi") {
        (n, 1 << 30)
    } else if let Some(n) = q.strip_suffix("Mi") {
        (n, 1 << 20)
    } else if let Some(n) = q.strip_suffix("Ki") {
        (n, 1 << 10)
    } else if let Some(n) = q.strip_suffix('m') {
        (n, 1)
    } else if unit_milli {
        (q, 1000)
    } else {
        (q, 1)
    };
    number
        .parse::<u64>()
        .unwrap_or_else(|_| panic!("quantity {q}"))
        * scale
}

/// What the kubelet supplies on a node: the node's name, the Secrets'
/// contents, the API credentials (the service account token's stand-in is
/// a kubeconfig for the fake API server), and room for emptyDirs.
struct Node {
    name: String,
    secrets: BTreeMap<String, BTreeMap<String, String>>,
    kubeconfig: PathBuf,
    scratch: tempfile::TempDir,
}

/// `podman run` options for a pod's container, from its spec alone.
#[derive(Clone)]
struct RunSpec {
    options: Vec<String>,
    image: String,
    args: Vec<String>,
    /// The readiness probe's URL.
    ready_url: String,
    stop_timeout: u64,
}

impl RunSpec {
    fn from_chart(ds: &Value, node: &Node) -> Self {
        let pod = &ds["spec"]["template"]["spec"];
        only_keys(
            pod,
            &[
                "serviceAccountName",
                "automountServiceAccountToken",
                "hostNetwork",
                "dnsPolicy",
                "hostPID",
                "priorityClassName",
                "terminationGracePeriodSeconds",
                "containers",
                "volumes",
                "nodeSelector",
                "affinity",
                "tolerations",
            ],
            "pod",
        );
        let containers = pod["containers"].as_array().expect("containers");
        assert_eq!(containers.len(), 1, "one container");
        let c = &containers[0];
        only_keys(
            c,
            &[
                "name",
                "image",
                "imagePullPolicy",
                "args",
                "env",
                "ports",
                "livenessProbe",
                "readinessProbe",
                "resources",
                "securityContext",
                "volumeMounts",
            ],
            "container",
        );
        let mut o: Vec<String> = Vec::new();
        let mut opt = |s: String| o.push(s);

        // Pod level. serviceAccountName (RBAC), priorityClassName and the
        // scheduling fields have no effect on the container itself.
        if pod["hostNetwork"] == true {
            opt("--network=host".into());
        }
        if pod["hostPID"] == true {
            opt("--pid=host".into());
        }
        match pod["dnsPolicy"].as_str() {
            // Host network: the node's resolv.conf, as podman gives it.
            Some("ClusterFirstWithHostNet") | None => {}
            Some(other) => panic!("dnsPolicy {other} is not mapped"),
        }
        let stop_timeout = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
        opt(format!("--stop-timeout={stop_timeout}"));
        if pod["automountServiceAccountToken"] == true {
            // In a pod: the service account's token and the API's
            // address. Here: a kubeconfig for the fake API server.
            opt(format!(
                "--volume={}:/var/run/weir-test/kubeconfig:ro",
                node.kubeconfig.display()
            ));
            opt("--env=KUBECONFIG=/var/run/weir-test/kubeconfig".into());
        }

        // The container.
        match c["imagePullPolicy"].as_str() {
            // Loaded, never pulled: there is no registry here.
            Some("IfNotPresent" | "Never") => opt("--pull=never".into()),
            other => panic!("imagePullPolicy {other:?}: only a loaded image can run here"),
        }
        for env in c["env"].as_array().into_iter().flatten() {
            let name = env["name"].as_str().expect("env name");
            let value = if let Some(v) = env["value"].as_str() {
                v.to_owned()
            } else {
                match env["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                    Some("spec.nodeName") => node.name.clone(),
                    _ => panic!("env {name}: {env} is not mapped"),
                }
            };
            opt(format!("--env={name}={value}"));
        }
        let resources = &c["resources"];
        only_keys(resources, &["requests", "limits"], "resources");
        only_keys(
            &resources["requests"],
            &["cpu", "memory"],
            "resources.requests",
        );
        only_keys(&resources["limits"], &["cpu", "memory"], "resources.limits");
        if let Some(m) = resources["limits"]["memory"].as_str() {
            opt(format!("--memory={}", quantity(m, false)));
        }
        if let Some(m) = resources["requests"]["memory"].as_str() {
            opt(format!("--memory-reservation={}", quantity(m, false)));
        }
        if let Some(cpu) = resources["limits"]["cpu"].as_str() {
            opt(format!("--cpus={}", quantity(cpu, true) as f64 / 1000.0));
        }
        if let Some(cpu) = resources["requests"]["cpu"].as_str() {
            // The kubelet's cpu.shares for a request.
            opt(format!(
                "--cpu-shares={}",
                quantity(cpu, true) * 1024 / 1000
            ));
        }

        let sc = &c["securityContext"];
        only_keys(
            sc,
            &[
                "privileged",
                "allowPrivilegeEscalation",
                "readOnlyRootFilesystem",
                "runAsUser",
                "runAsGroup",
                "runAsNonRoot",
                "capabilities",
                "seccompProfile",
                "appArmorProfile",
            ],
            "securityContext",
        );
        assert_ne!(
            sc["privileged"], true,
            "a privileged container is not mapped"
        );
        if sc["allowPrivilegeEscalation"] == false {
            opt("--security-opt=no-new-privileges".into());
        }
        if sc["readOnlyRootFilesystem"] == true {
            // Without podman's own tmpfs mounts: the chart mounts what it
            // needs writable.
            opt("--read-only".into());
            opt("--read-only-tmpfs=false".into());
        }
        let uid = sc["runAsUser"].as_u64();
        if sc["runAsNonRoot"] == true {
            assert!(uid.is_some_and(|u| u != 0), "runAsNonRoot with uid 0");
        }
        if let Some(uid) = uid {
            let gid = sc["runAsGroup"].as_u64().unwrap_or(uid);
            opt(format!("--user={uid}:{gid}"));
        }
        let caps = &sc["capabilities"];
        only_keys(caps, &["drop", "add"], "capabilities");
        for cap in caps["drop"].as_array().into_iter().flatten() {
            opt(format!("--cap-drop={}", cap.as_str().expect("cap")));
        }
        for cap in caps["add"].as_array().into_iter().flatten() {
            opt(format!("--cap-add=CAP_{}", cap.as_str().expect("cap")));
        }
        match sc["seccompProfile"]["type"].as_str() {
            // podman's default profile is the runtime's default.
            Some("RuntimeDefault") | None => {}
            Some("Unconfined") => opt("--security-opt=seccomp=unconfined".into()),
            Some(other) => panic!("seccompProfile {other} is not mapped"),
        }
        match sc["appArmorProfile"]["type"].as_str() {
            Some("RuntimeDefault") | None => {}
            Some("Unconfined") => opt("--security-opt=apparmor=unconfined".into()),
            Some(other) => panic!("appArmorProfile {other} is not mapped"),
        }

        let volumes: BTreeMap<&str, &Value> = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| (v["name"].as_str().expect("volume name"), v))
            .collect();
        for mount in c["volumeMounts"].as_array().into_iter().flatten() {
            only_keys(
                mount,
                &["name", "mountPath", "readOnly", "mountPropagation"],
                "volumeMount",
            );
            let name = mount["name"].as_str().expect("mount name");
            let path = mount["mountPath"].as_str().expect("mountPath");
            let volume = volumes
                .get(name)
                .unwrap_or_else(|| panic!("volumeMount {name} has no volume"));
            let mut flags = vec![if mount["readOnly"] == true {
                "ro"
            } else {
                "rw"
            }];
            match mount["mountPropagation"].as_str() {
                Some("HostToContainer") => flags.push("rslave"),
                Some("Bidirectional") => flags.push("rshared"),
                Some("None") | None => {}
                Some(other) => panic!("mountPropagation {other}"),
            }
            let source = if let Some(host) = volume.get("hostPath") {
                let host_path = PathBuf::from(host["path"].as_str().expect("hostPath.path"));
                match host["type"].as_str() {
                    Some("Directory") => assert!(
                        host_path.is_dir(),
                        "hostPath {} (type Directory) is missing",
                        host_path.display()
                    ),
                    Some("DirectoryOrCreate") => {
                        std::fs::create_dir_all(&host_path).expect("create the hostPath");
                    }
                    other => panic!("hostPath type {other:?} is not mapped"),
                }
                host_path
            } else if let Some(empty) = volume.get("emptyDir") {
                if empty["medium"] == "Memory" {
                    let size = empty["sizeLimit"]
                        .as_str()
                        .map_or(String::new(), |s| format!(",size={}", quantity(s, false)));
                    opt(format!("--tmpfs={path}:rw{size}"));
                    continue;
                }
                let dir = node.scratch.path().join(unique_name(name));
                std::fs::create_dir_all(&dir).expect("emptyDir");
                dir
            } else if let Some(secret) = volume.get("secret") {
                let secret_name = secret["secretName"].as_str().expect("secretName");
                let data = node
                    .secrets
                    .get(secret_name)
                    .unwrap_or_else(|| panic!("no Secret {secret_name} on the node"));
                let dir = node.scratch.path().join(unique_name(secret_name));
                std::fs::create_dir_all(&dir).expect("secret dir");
                let mode = u32::try_from(secret["defaultMode"].as_u64().unwrap_or(0o644))
                    .expect("defaultMode");
                for (key, value) in data {
                    let file = dir.join(key);
                    std::fs::write(&file, value).expect("write the secret");
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))
                        .expect("secret mode");
                }
                dir
            } else {
                panic!("volume {volume} is not mapped");
            };
            opt(format!(
                "--volume={}:{path}:{}",
                source.display(),
                flags.join(",")
            ));
        }

        let probe = &c["readinessProbe"]["httpGet"];
        let port = match &probe["port"] {
            Value::String(named) => c["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"] == *named)
                .and_then(|p| p["containerPort"].as_u64())
                .unwrap_or_else(|| panic!("probe port {named} is not a container port")),
            number => number.as_u64().expect("probe port"),
        };
        let host = probe["host"]
            .as_str()
            .expect("hostNetwork probes name a host");
        let ready_url = format!(
            "http://{host}:{port}{}",
            probe["path"].as_str().expect("probe path")
        );
        Self {
            options: o,
            image: c["image"].as_str().expect("image").to_owned(),
            args: c["args"]
                .as_array()
                .expect("args")
                .iter()
                .map(|a| a.as_str().expect("arg").to_owned())
                .collect(),
            ready_url,
            stop_timeout,
        }
    }

    /// The same spec without one added capability.
    fn without(&self, cap: &str) -> Self {
        let flag = format!("--cap-add=CAP_{cap}");
        assert!(self.options.contains(&flag), "{cap} is not added");
        let mut less = self.clone();
        less.options.retain(|o| *o != flag);
        less
    }
}

/// A podman storage of the test's own, removed on drop.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("weir-image-podman")
                .tempdir()
                .expect("podman dir"),
        }
    }

    fn cmd(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .args(["--storage-driver", "overlay", "--runtime", "runc"]);
        cmd
    }

    /// `podman load`: the name it gives the image.
    fn load(&self, archive: &Path) -> String {
        let out = run(self.cmd().arg("load").arg("-i").arg(archive));
        let text = format!("{}\n{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
        text.lines()
            .find_map(|l| l.strip_prefix("Loaded image: "))
            .unwrap_or_else(|| panic!("podman load named no image:\n{text}"))
            .trim()
            .to_owned()
    }

    /// Start a container of `spec` named `name` (detached).
    fn start(&self, spec: &RunSpec, name: &str) -> Container<'_> {
        // runc sets the rlimits as the container's process: it cannot
        // raise them above ours, nor the process count above what the
        // runtime's own limit allows; give both explicitly.
        let nofile = std::fs::read_to_string("/proc/self/limits")
            .expect("read /proc/self/limits")
            .lines()
            .find_map(|l| l.strip_prefix("Max open files"))
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
            .expect("the open files hard limit");
        let mut cmd = self.cmd();
        cmd.args(["run", "--detach", "--name", name])
            .arg(format!("--ulimit=nofile={nofile}:{nofile}"))
            .arg("--ulimit=nproc=4096:4096")
            .args(&spec.options)
            .arg(&spec.image)
            .args(&spec.args);
        run(&mut cmd);
        Container {
            podman: self,
            name: name.to_owned(),
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self
            .cmd()
            .args(["rm", "--all", "--force", "--time", "0"])
            .output();
        let _ = self.cmd().args(["rmi", "--all", "--force"]).output();
    }
}

struct Container<'a> {
    podman: &'a Podman,
    name: String,
}

impl Container<'_> {
    fn logs(&self) -> String {
        let out = self
            .podman
            .cmd()
            .args(["logs", &self.name])
            .output()
            .expect("podman logs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn state(&self, field: &str) -> String {
        stdout(&run(self.podman.cmd().args([
            "inspect",
            "--format",
            &format!("{{{{.State.{field}}}}}"),
            &self.name,
        ])))
    }

    fn running(&self) -> bool {
        self.state("Running") == "true"
    }

    fn exit_code(&self) -> i64 {
        self.state("ExitCode").parse().expect("exit code")
    }

    /// The exit code once it exited by itself, within `timeout`.
    fn exited_within(&self, timeout: Duration) -> Option<i64> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.running() {
                return Some(self.exit_code());
            }
            thread::sleep(Duration::from_millis(200));
        }
        None
    }

    /// `podman stop` (SIGTERM, then SIGKILL after the grace period): the
    /// exit code.
    fn stop(&self, grace: u64) -> i64 {
        run(self
            .podman
            .cmd()
            .args(["stop", "--time", &grace.to_string(), &self.name]));
        self.exit_code()
    }
}

fn get(url: &str) -> Option<String> {
    reqwest::blocking::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .ok()?
        .error_for_status()
        .ok()?
        .text()
        .ok()
}

/// Waits for the readiness probe (200 on /healthz) and `pods` attached
/// veths; panics with the container's log if it exits or takes 60 s.
fn wait_ready(container: &Container<'_>, spec: &RunSpec, api: &str, pods: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        assert!(
            container.running(),
            "the agent exited ({}):\n{}",
            container.exit_code(),
            container.logs()
        );
        let attached = get(&format!("{api}/metrics"))
            .and_then(|m| metric_value(&m, "weir_attached_interfaces"));
        if get(&spec.ready_url).is_some() && attached == Some(pods as f64) {
            return;
        }
        thread::sleep(Duration::from_millis(200));
    }
    panic!("the agent was not ready within 60s:\n{}", container.logs());
}

fn edges(api: &str) -> BTreeSet<(String, String, u64)> {
    let graph: Value = serde_json::from_str(&get(&format!("{api}/api/graph")).unwrap_or_default())
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

#[test]
fn the_image_runs_under_the_daemonsets_exact_privileges() {
    require_root();
    ensure_bpffs();

    // make image's recipe, twice: one digest, labelled.
    let out = tempfile::Builder::new()
        .prefix("weir-image")
        .tempdir()
        .expect("image dir");
    let (archive, digest) = build_image(&out.path().join("a"));
    let (_, again) = build_image(&out.path().join("b"));
    assert_eq!(digest, again, "two builds of one commit, two digests");
    let inspect: Value = serde_json::from_str(&stdout(&run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci-archive:{}", archive.display())))))
    .expect("skopeo inspect is JSON");
    assert_eq!(inspect["Digest"], digest.as_str(), "{inspect:#}");
    let labels = &inspect["Labels"];
    let head = stdout(&run(Command::new("git")
        .arg("-C")
        .arg(repo())
        .args(["rev-parse", "HEAD"])));
    for (label, want) in [
        ("version", env!("CARGO_PKG_VERSION")),
        ("revision", head.as_str()),
        ("source", "https://github.com/weir-dev/weir"),
    ] {
        assert_eq!(
            labels[format!("org.opencontainers.image.{label}")],
            want,
            "{inspect:#}"
        );
    }
    assert!(
        labels["org.opencontainers.image.licenses"]
            .as_str()
            .is_some_and(|l| l.contains("Apache-2.0")),
        "{inspect:#}"
    );

    let podman = Podman::new();
    let loaded = podman.load(&archive);

    let lab = Lab::up("img", LAB);
    let pods = lab.status()["pods"].as_array().map_or(0, Vec::len);
    let client = lab.pod("shop", "client");
    let server = lab.pod("shop", "server");
    let node_name = unique_name("img-node-");
    let apiserver = FakeApiServer::for_lab(&lab.status(), &node_name, &BTreeMap::new());

    // The chart rendered for this node: the API on a free local port, the
    // state and pins in this test's own host paths.
    let listen = free_local_addr();
    let state = tempfile::Builder::new()
        .prefix("weir-image-state")
        .tempdir()
        .expect("state dir");
    let pin = PinDir::new("img");
    let pin_name = pin
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("pin dir name")
        .to_owned();
    let sets = [
        "listen.address=127.0.0.1".to_owned(),
        format!("listen.port={}", listen.port()),
        format!("hostPaths.stateDir={}", state.path().display()),
        format!("hostPaths.pinDir={pin_name}"),
    ];
    let ds = only_of_kind(
        &render(&sets.iter().map(String::as_str).collect::<Vec<_>>()),
        "DaemonSet",
    );
    let node = Node {
        name: node_name,
        secrets: BTreeMap::from([(
            "weir-api-token".to_owned(),
            BTreeMap::from([("token".to_owned(), "image-test-token".to_owned())]),
        )]),
        kubeconfig: apiserver.kubeconfig().to_owned(),
        scratch: tempfile::Builder::new()
            .prefix("weir-image-node")
            .tempdir()
            .expect("node scratch"),
    };
    let spec = RunSpec::from_chart(&ds, &node);
    assert_eq!(
        spec.image, loaded,
        "the chart's image is the one make image builds"
    );
    let api = format!("http://{listen}");

    // Attaches, observes, serves /healthz and the graph.
    let agent = podman.start(&spec, &unique_name("weir-agent-"));
    wait_ready(&agent, &spec, &api, pods);
    let healthz: Value =
        serde_json::from_str(&get(&format!("{api}/healthz")).expect("healthz")).expect("JSON");
    assert_eq!(healthz["source"]["source"], "kube", "{healthz:#}");
    assert_eq!(healthz["attached_pods"], pods, "{healthz:#}");
    assert!(
        pin.path.is_dir(),
        "the datapath is pinned in the host's bpffs"
    );
    assert!(lab.probe(&client, &server, "8080"), "client -> server");
    let edge = ("shop/client".to_owned(), "shop/server".to_owned(), 8080);
    eventually(Duration::from_secs(15), || {
        edges(&api).contains(&edge).then_some(())
    })
    .unwrap_or_else(|| panic!("{edge:?} not observed: {:?}\n{}", edges(&api), agent.logs()));

    // A clean stop within the grace period saves the graph on the host.
    assert_eq!(agent.stop(spec.stop_timeout), 0, "{}", agent.logs());
    let logs = agent.logs();
    assert!(logs.contains("stopped"), "{logs}");
    assert!(
        state.path().join("weir.redb").is_file(),
        "the store is on the host path"
    );
    assert!(
        !pin.path.exists(),
        "observing only, a clean stop unpins:\n{logs}"
    );

    // The restarted container has it back before any new traffic.
    let again = podman.start(&spec, &unique_name("weir-agent-"));
    wait_ready(&again, &spec, &api, pods);
    assert!(
        edges(&api).contains(&edge),
        "the graph survives the restart: {:?}\n{}",
        edges(&api),
        again.logs()
    );
    assert_eq!(again.stop(spec.stop_timeout), 0, "{}", again.logs());

    // Each added capability is needed, and its absence named.
    let added: Vec<String> =
        ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"]
            .as_array()
            .expect("capabilities.add")
            .iter()
            .map(|c| c.as_str().expect("cap").to_owned())
            .collect();
    assert!(added.len() >= 3, "{added:?}");
    for cap in &added {
        let less = podman.start(&spec.without(cap), &unique_name("weir-agent-"));
        let code = less
            .exited_within(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("the agent runs without {cap}:\n{}", less.logs()));
        let logs = less.logs();
        assert_ne!(code, 0, "without {cap}:\n{logs}");
        assert!(
            logs.contains(&format!("missing capability CAP_{cap} (")),
            "without {cap} the agent names it:\n{logs}"
        );
    }
}
