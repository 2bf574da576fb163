//! deploy/: the Helm chart renders schema-valid manifests with least
//! privilege, deploy/manifests/ is its fresh render, and the DaemonSet's
//! capability set is proven on the real kernel: the agent attaches and
//! observes with exactly those capabilities, fails naming the missing one
//! without any one of BPF, NET_ADMIN and PERFMON, and learns connections open before it attached
//! only with SYS_ADMIN (setns into the pod's namespace).
//!
//! Needs `target/tools/helm` (`make helm`) and `kubernetes-validate`
//! (`make pydeps`); `make test` installs both. A missing tool fails the
//! test, never skips it.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, PoisonError},
    thread,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment},
    core::v1::{Container, PodSpec, PodTemplateSpec, Secret, Service},
    networking::v1::NetworkPolicy,
    rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding},
};
use serde_json::Value;
use weir_integration_tests::{
    chart::{documents, only_of_kind, render, render_error, render_on_cluster, repo, tool},
    harness::{
        Lab, PinDir, ensure_bpffs, eventually, metric_value, require_root, unique_name, weir_bin,
    },
};

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

fn the<T: serde::de::DeserializeOwned>(yaml: &str, kind: &str) -> T {
    serde_json::from_value(only_of_kind(yaml, kind))
        .unwrap_or_else(|e| panic!("{kind} is not a valid {kind}: {e}"))
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
        ("relay", &[RELAY][..]),
        (
            "relay-everything",
            &[
                RELAY,
                "rbac.enforce=true",
                "certManager.enabled=true",
                "relay.persistence.enabled=true",
                "relay.persistence.storageClassName=fast",
                "relay.address=::",
                "relay.agentListen.address=::",
                "relay.service.type=LoadBalancer",
            ][..],
        ),
        (
            "relay-minimal",
            &[
                RELAY,
                "relay.replicas=2",
                "rbac.create=false",
                "relay.serviceAccount.create=false",
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
        ("relay.replica=2", "replica"),
        ("relay.replicas=0", "relay.replicas"),
        ("relay.agentListen.port=0", "relay.agentListen.port"),
        ("relay.syncInterval=soon", "relay.syncInterval"),
        (
            "certManager.issuerRef.kind=Vault",
            "certManager.issuerRef.kind",
        ),
        ("certManager.issuerRef.kind=Issuer", "name"),
        ("certManager.duration=90d", "certManager.duration"),
    ] {
        let error = render_error(&[set]);
        assert!(error.contains(names), "{set}: {error}");
    }
    // Checks across values, by the chart itself.
    for (sets, names) in [
        (
            &[RELAY, "relay.persistence.enabled=true", "relay.replicas=2"][..],
            "relay.replicas: 1",
        ),
        (
            &[
                RELAY,
                "relay.tls.validityDays=30",
                "relay.tls.renewBeforeDays=30",
            ][..],
            "relay.tls.renewBeforeDays",
        ),
    ] {
        let error = render_error(sets);
        assert!(error.contains(names), "{sets:?}: {error}");
    }
}

/// deploy/manifests/: each file and the values it is rendered with, as
/// `make manifests` renders them. weir-relay.yaml takes its certificates
/// from cert-manager, so that no render carries a private key.
const MANIFESTS: &[(&str, &[&str])] = &[
    ("weir.yaml", &[]),
    ("weir-relay.yaml", &[RELAY, "certManager.enabled=true"]),
];

#[test]
fn rendered_manifests_are_the_charts_fresh_render() {
    for (file, sets) in MANIFESTS {
        let path = repo().join("deploy/manifests").join(file);
        let committed =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            committed == render(sets),
            "deploy/manifests/{file} differs from the chart's render with {sets:?}: run `make manifests`"
        );
        assert!(
            !committed.contains("PRIVATE KEY") && !committed.contains("kubernetes.io/tls"),
            "{file} carries no key"
        );
    }
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
        &[RELAY][..],
        &[
            RELAY,
            "relay.agentListen.address=::",
            "relay.agentListen.port=4300",
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

#[test]
fn the_relay_deployments_flags_are_the_relays() {
    // As for the agents: clap checks every flag and value before `--help`.
    for sets in [
        &[RELAY][..],
        &[
            RELAY,
            "relay.address=::",
            "relay.agentListen.port=4300",
            "relay.syncInterval=1h 30m",
            "relay.retention=2d",
            "relay.concurrency=32",
            "relay.persistence.enabled=true",
            "certManager.enabled=true",
            "logFormat=text",
        ][..],
    ] {
        let deploy: Deployment = named(&render(sets), "Deployment", "weir-relay");
        let args = relay_container(&deploy).args.unwrap_or_default();
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
    rule_grants(role.rules.as_deref().unwrap_or_default())
}

fn rule_grants(rules: &[PolicyRule]) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in rules {
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
            ("".to_owned(), "events".to_owned(), "create".to_owned()),
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
        "exactly the write verbs of `weir mode set`, the guard's Event and `weir export --apply`"
    );
    assert!(grants(&enforce).is_superset(&read));
}

// ---- the relay ----

const RELAY: &str = "relay.enabled=true";

/// The object of `kind` named `name`.
fn named<T: serde::de::DeserializeOwned>(yaml: &str, kind: &str, name: &str) -> T {
    let mut found = documents(yaml)
        .into_iter()
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name);
    let doc = found
        .next()
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"));
    assert!(found.next().is_none(), "more than one {kind} {name}");
    serde_json::from_value(doc).unwrap_or_else(|e| panic!("{kind} {name} is not valid: {e}"))
}

/// The names of the rendered objects of `kind`.
fn names(yaml: &str, kind: &str) -> BTreeSet<String> {
    documents(yaml)
        .into_iter()
        .filter(|d| d["kind"] == kind)
        .map(|d| {
            d["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

fn pod_spec(deploy: &Deployment) -> PodSpec {
    let spec = deploy.spec.as_ref().expect("spec");
    spec.template.spec.clone().expect("pod spec")
}

fn relay_container(deploy: &Deployment) -> Container {
    let containers = pod_spec(deploy).containers;
    assert_eq!(containers.len(), 1, "one container");
    containers[0].clone()
}

/// The value of `--flag=VALUE` in `args`.
fn flag<'a>(args: &'a [String], flag: &str) -> &'a str {
    let prefix = format!("{flag}=");
    let mut found = args.iter().filter_map(|a| a.strip_prefix(&prefix));
    let value = found
        .next()
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
    assert!(found.next().is_none(), "{flag} twice in {args:?}");
    value
}

/// Whether a selector (matchLabels) selects a pod with `labels`.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn pod_labels(template: &PodTemplateSpec) -> BTreeMap<String, String> {
    template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .expect("pod labels")
}

/// Where `container` mounts the Secret `secret` (read-only).
fn secret_mount(pod: &PodSpec, container: &Container, secret: &str) -> String {
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some(secret))
        .unwrap_or_else(|| panic!("no volume of Secret {secret}"));
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == volume.name)
        .unwrap_or_else(|| panic!("Secret {secret} is not mounted"));
    assert_eq!(mount.read_only, Some(true), "{secret} mounted read-only");
    mount.mount_path.clone()
}

#[test]
fn the_relay_is_rendered_only_when_enabled() {
    let default = render(&[]);
    assert!(names(&default, "Deployment").is_empty());
    assert_eq!(names(&default, "Service"), set(&["weir"]));
    assert!(
        !default.contains("relay"),
        "nothing of the relay by default"
    );
    let ds: DaemonSet = the(&default, "DaemonSet");
    let args = agent_container(&ds).args.unwrap_or_default();
    assert!(
        !args.iter().any(|a| a.starts_with("--relay")),
        "no relay listener by default: {args:?}"
    );

    let relay = render(&[RELAY]);
    assert_eq!(names(&relay, "Deployment"), set(&["weir-relay"]));
    assert_eq!(
        names(&relay, "Service"),
        set(&["weir", "weir-agents", "weir-relay"])
    );
    assert_eq!(
        names(&relay, "Secret"),
        set(&["weir-relay-ca", "weir-agent-tls", "weir-relay-tls"])
    );
    assert_eq!(
        names(&relay, "ServiceAccount"),
        set(&["weir", "weir-relay"])
    );
    assert_eq!(names(&relay, "ClusterRole"), set(&["weir", "weir-relay"]));
    assert_eq!(names(&relay, "Role"), set(&["weir-relay"]));
    assert_eq!(names(&relay, "NetworkPolicy"), set(&["weir", "weir-relay"]));
}

#[test]
fn the_relay_runs_without_privileges_and_keeps_its_own_state() {
    let yaml = render(&[RELAY]);
    let deploy: Deployment = named(&yaml, "Deployment", "weir-relay");
    let pod = pod_spec(&deploy);
    let relay = relay_container(&deploy);

    let pod_security = pod.security_context.clone().expect("pod securityContext");
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert!(
        pod_security.run_as_user.is_some_and(|u| u != 0),
        "not uid 0"
    );
    let security = relay.security_context.clone().expect("securityContext");
    assert_eq!(security.privileged, Some(false));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.run_as_non_root, Some(true));
    let caps = security.capabilities.expect("capabilities");
    assert_eq!(caps.drop, Some(vec!["ALL".to_owned()]));
    assert!(caps.add.unwrap_or_default().is_empty(), "no capability");
    assert_ne!(pod.host_network, Some(true));
    assert_ne!(pod.host_pid, Some(true));
    assert!(
        pod.volumes.iter().flatten().all(|v| v.host_path.is_none()),
        "no host path"
    );
    assert_eq!(pod.service_account_name.as_deref(), Some("weir-relay"));

    let args = relay.args.clone().unwrap_or_default();
    assert_eq!(args.first().map(String::as_str), Some("relay"));
    let listen: SocketAddr = flag(&args, "--listen").parse().expect("--listen");
    assert_eq!(listen, "0.0.0.0:9391".parse().expect("address"));
    let port = relay
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("api"))
        .expect("api port");
    assert_eq!(port.container_port, 9391);
    for probe in [&relay.liveness_probe, &relay.readiness_probe] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("httpGet");
        assert_eq!(get.path.as_deref(), Some("/healthz"));
        assert_eq!(
            get.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("api".to_owned())
        );
    }
    let resources = relay.resources.clone().expect("resources");
    assert!(resources.requests.is_some() && resources.limits.is_some());

    // The flags' directories are what is mounted there.
    assert_eq!(
        secret_mount(&pod, &relay, "weir-relay-tls"),
        flag(&args, "--tls-dir")
    );
    let token_dir = secret_mount(&pod, &relay, "weir-api-token");
    assert_eq!(flag(&args, "--token-file"), format!("{token_dir}/token"));
    let state_dir = flag(&args, "--state-dir");
    let state = relay
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == state_dir)
        .expect("the state directory is mounted");
    let volume = |spec: &PodSpec, name: &str| {
        spec.volumes
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .cloned()
            .expect("state volume")
    };
    assert!(
        volume(&pod, &state.name).empty_dir.is_some(),
        "emptyDir by default"
    );
    assert_eq!(deploy.spec.as_ref().and_then(|s| s.replicas), Some(1));

    // Two replicas: nothing else changes (no coordination between them).
    let two: Deployment = named(
        &render(&[RELAY, "relay.replicas=2"]),
        "Deployment",
        "weir-relay",
    );
    assert_eq!(two.spec.as_ref().and_then(|s| s.replicas), Some(2));
    assert_eq!(pod_spec(&two), pod);

    // A PersistentVolumeClaim: one replica at a time.
    let persistent = render(&[RELAY, "relay.persistence.enabled=true"]);
    let deploy: Deployment = named(&persistent, "Deployment", "weir-relay");
    let claim = volume(&pod_spec(&deploy), &state.name)
        .persistent_volume_claim
        .expect("the state on a claim")
        .claim_name;
    assert_eq!(
        names(&persistent, "PersistentVolumeClaim"),
        set(&[claim.as_str()])
    );
    let strategy = deploy.spec.and_then(|s| s.strategy).and_then(|s| s.type_);
    assert_eq!(strategy.as_deref(), Some("Recreate"));
}

#[test]
fn the_relay_finds_the_agents_through_the_headless_service() {
    let yaml = render(&[RELAY]);
    let ds: DaemonSet = the(&yaml, "DaemonSet");
    let deploy: Deployment = named(&yaml, "Deployment", "weir-relay");
    let relay_args = relay_container(&deploy).args.unwrap_or_default();
    let agent = agent_container(&ds);
    let agent_args = agent.args.clone().unwrap_or_default();
    let agent_pod = ds.spec.as_ref().expect("spec").template.clone();
    let relay_pod = deploy.spec.as_ref().expect("spec").template.clone();

    // --agents-service and --daemonset name the chart's own objects.
    let (ns, service_name) = flag(&relay_args, "--agents-service")
        .split_once('/')
        .expect("NAMESPACE/NAME");
    assert_eq!(ns, "weir");
    let ds_name = ds.metadata.name.clone().expect("name");
    assert_eq!(flag(&relay_args, "--daemonset"), format!("weir/{ds_name}"));

    let headless: Service = named(&yaml, "Service", service_name);
    let spec = headless.spec.expect("spec");
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"), "headless");
    assert_eq!(spec.publish_not_ready_addresses, Some(false));
    let selector = spec.selector.expect("selector");
    assert_eq!(
        Some(&selector),
        ds.spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.as_ref()),
        "the DaemonSet's pods"
    );
    assert!(selects(&selector, &pod_labels(&agent_pod)));
    let ports = spec.ports.expect("ports");
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].name.as_deref(), Some("relay"));
    assert_eq!(ports[0].port, 4244);
    let agent_port = agent
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("relay"))
        .expect("the agent's relay port");
    assert_eq!(agent_port.container_port, 4244);
    assert_eq!(flag(&relay_args, "--agent-port"), "4244");

    // The agent listens there with the agents' certificate.
    let listen: SocketAddr = flag(&agent_args, "--relay-listen")
        .parse()
        .expect("address");
    assert_eq!(listen, "0.0.0.0:4244".parse().expect("address"));
    let agent_spec = agent_pod.spec.clone().expect("pod spec");
    assert_eq!(
        secret_mount(&agent_spec, &agent, "weir-agent-tls"),
        flag(&agent_args, "--relay-tls-dir")
    );

    // The relay's pods are never taken for agents, and the relay's Service
    // selects them only.
    let relay_labels = pod_labels(&relay_pod);
    let agent_service: Service = named(&yaml, "Service", "weir");
    let agent_policy: NetworkPolicy = named(&yaml, "NetworkPolicy", "weir");
    for (what, agent_selector) in [
        (
            "the DaemonSet",
            ds.spec
                .as_ref()
                .and_then(|s| s.selector.match_labels.clone()),
        ),
        (
            "the agents' Service",
            agent_service.spec.and_then(|s| s.selector),
        ),
        ("the headless Service", Some(selector.clone())),
        (
            "the agents' NetworkPolicy",
            agent_policy
                .spec
                .and_then(|s| s.pod_selector.and_then(|p| p.match_labels)),
        ),
    ] {
        let agent_selector = agent_selector.unwrap_or_default();
        assert!(
            selects(&agent_selector, &pod_labels(&agent_pod)),
            "{what} selects the agents"
        );
        assert!(
            !selects(&agent_selector, &relay_labels),
            "{what} selects the relay's pods"
        );
    }
    let relay_service: Service = named(&yaml, "Service", "weir-relay");
    let relay_selector = relay_service
        .spec
        .and_then(|s| s.selector)
        .unwrap_or_default();
    assert!(selects(&relay_selector, &relay_labels));
    assert!(!selects(&relay_selector, &pod_labels(&agent_pod)));

    // Another port, and IPv6.
    let yaml = render(&[
        RELAY,
        "relay.agentListen.port=4300",
        "relay.agentListen.address=::",
    ]);
    let ds: DaemonSet = the(&yaml, "DaemonSet");
    let agent_args = agent_container(&ds).args.unwrap_or_default();
    assert_eq!(flag(&agent_args, "--relay-listen"), "[::]:4300");
    let deploy: Deployment = named(&yaml, "Deployment", "weir-relay");
    assert_eq!(
        flag(
            &relay_container(&deploy).args.unwrap_or_default(),
            "--agent-port"
        ),
        "4300"
    );
    let headless: Service = named(&yaml, "Service", "weir-agents");
    assert_eq!(
        headless.spec.and_then(|s| s.ports).expect("ports")[0].port,
        4300
    );
}

/// (apiGroup, resource) with get, list and watch.
fn reads(resources: &[(&str, &str)]) -> BTreeSet<(String, String, String)> {
    resources
        .iter()
        .flat_map(|(group, resource)| {
            ["get", "list", "watch"]
                .map(|verb| ((*group).to_owned(), (*resource).to_owned(), verb.to_owned()))
        })
        .collect()
}

#[test]
fn the_relays_roles_read_and_write_only_with_enforcement() {
    let yaml = render(&[RELAY]);
    let deploy: Deployment = named(&yaml, "Deployment", "weir-relay");
    let pod = pod_spec(&deploy);
    let account = pod
        .service_account_name
        .as_deref()
        .expect("service account");
    let bound_to_relay = |subjects: Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
        let subjects = subjects.unwrap_or_default();
        assert_eq!(subjects.len(), 1);
        assert_eq!(
            (subjects[0].name.as_str(), subjects[0].namespace.as_deref()),
            (account, Some("weir")),
            "bound to the relay's ServiceAccount"
        );
    };

    // Cluster-wide: the merged view's workloads, modes and policies.
    let cluster_reads = reads(&[
        ("", "pods"),
        ("", "namespaces"),
        ("networking.k8s.io", "networkpolicies"),
    ]);
    let role: ClusterRole = named(&yaml, "ClusterRole", "weir-relay");
    assert_eq!(grants(&role), cluster_reads, "read verbs only by default");
    let binding: ClusterRoleBinding = named(&yaml, "ClusterRoleBinding", "weir-relay");
    assert_eq!(binding.role_ref.name, "weir-relay");
    bound_to_relay(binding.subjects);

    // Discovery: the release's namespace only.
    let role: Role = named(&yaml, "Role", "weir-relay");
    assert_eq!(role.metadata.namespace.as_deref(), Some("weir"));
    assert_eq!(
        rule_grants(role.rules.as_deref().unwrap_or_default()),
        reads(&[
            ("discovery.k8s.io", "endpointslices"),
            ("apps", "daemonsets")
        ])
    );
    let binding: RoleBinding = named(&yaml, "RoleBinding", "weir-relay");
    assert_eq!(
        (
            binding.role_ref.kind.as_str(),
            binding.role_ref.name.as_str()
        ),
        ("Role", "weir-relay")
    );
    bound_to_relay(binding.subjects);

    // The agents' role is unchanged by the relay.
    let agents: ClusterRole = named(&yaml, "ClusterRole", "weir");
    assert_eq!(grants(&agents), grants(&the(&render(&[]), "ClusterRole")));

    let enforce = render(&[RELAY, "rbac.enforce=true"]);
    let cluster: ClusterRole = named(&enforce, "ClusterRole", "weir-relay");
    let writes: BTreeSet<_> = grants(&cluster)
        .difference(&cluster_reads)
        .cloned()
        .collect();
    let write = |group: &str, resource: &str, verb: &str| {
        (group.to_owned(), resource.to_owned(), verb.to_owned())
    };
    assert_eq!(
        writes,
        BTreeSet::from([
            write("", "namespaces", "patch"),
            write("networking.k8s.io", "networkpolicies", "create"),
            write("networking.k8s.io", "networkpolicies", "patch"),
        ]),
        "exactly the writes of a mode flip and of export --apply"
    );
    assert!(grants(&cluster).is_superset(&cluster_reads));
    let role: Role = named(&enforce, "Role", "weir-relay");
    assert!(
        rule_grants(role.rules.as_deref().unwrap_or_default())
            .iter()
            .all(|(_, _, verb)| ["get", "list", "watch"].contains(&verb.as_str())),
        "discovery never writes"
    );
}

/// (port, peers as JSON) of each ingress or egress rule.
fn rules(policy: &NetworkPolicy, egress: bool) -> Vec<(BTreeSet<i32>, Value)> {
    let value = serde_json::to_value(policy.spec.as_ref().expect("spec")).expect("JSON");
    let (rules, peers) = if egress {
        ("egress", "to")
    } else {
        ("ingress", "from")
    };
    value[rules]
        .as_array()
        .into_iter()
        .flatten()
        .map(|rule| {
            let ports = rule["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| i32::try_from(p["port"].as_i64().expect("numeric port")).expect("port"))
                .collect();
            (ports, rule[peers].clone())
        })
        .collect()
}

#[test]
fn network_policies_open_the_relay_listener_to_the_relay_only() {
    let yaml = render(&[RELAY]);
    let deploy: Deployment = named(&yaml, "Deployment", "weir-relay");
    let relay_labels = pod_labels(&deploy.spec.as_ref().expect("spec").template);

    // The agents: the API from networkPolicy.from, the relay listener from
    // the relay's pods only.
    let agents: NetworkPolicy = named(&yaml, "NetworkPolicy", "weir");
    let ingress = rules(&agents, false);
    let default_from = serde_json::json!([{"podSelector": {}}]);
    assert_eq!(ingress.len(), 2, "{ingress:?}");
    assert_eq!(ingress[0], (BTreeSet::from([9090]), default_from.clone()));
    assert_eq!(ingress[1].0, BTreeSet::from([4244]));
    let peers = ingress[1].1.as_array().expect("peers");
    assert_eq!(peers.len(), 1);
    assert!(peers[0].get("namespaceSelector").is_none() && peers[0].get("ipBlock").is_none());
    let selector: BTreeMap<String, String> =
        serde_json::from_value(peers[0]["podSelector"]["matchLabels"].clone())
            .expect("matchLabels");
    assert!(selects(&selector, &relay_labels), "the relay's pods");
    let ds: DaemonSet = the(&yaml, "DaemonSet");
    assert!(!selects(
        &selector,
        &pod_labels(&ds.spec.expect("spec").template)
    ));

    // The relay: its API from where the agents' API is reachable; out only
    // to the agents' listeners and the API server.
    let relay: NetworkPolicy = named(&yaml, "NetworkPolicy", "weir-relay");
    let spec = relay.spec.clone().expect("spec");
    assert_eq!(
        spec.pod_selector.and_then(|p| p.match_labels).as_ref(),
        Some(&selector)
    );
    assert_eq!(
        spec.policy_types,
        Some(vec!["Ingress".to_owned(), "Egress".to_owned()])
    );
    assert_eq!(
        rules(&relay, false),
        vec![(BTreeSet::from([9391]), default_from)]
    );
    assert_eq!(
        rules(&relay, true),
        vec![(BTreeSet::from([4244, 443, 6443]), Value::Null)]
    );

    let off = render(&[RELAY, "networkPolicy.enabled=false"]);
    assert!(names(&off, "NetworkPolicy").is_empty());
}

/// The chart's certificate Secrets of a render: name -> key -> bytes.
fn tls_secrets(yaml: &str) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
    documents(yaml)
        .into_iter()
        .filter(|d| d["kind"] == "Secret" && d["type"] == "kubernetes.io/tls")
        .map(|d| {
            let secret: Secret = serde_json::from_value(d).expect("a Secret");
            let data = secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            (secret.metadata.name.expect("name"), data)
        })
        .collect()
}

/// The pods' `weir.dev/certs-checksum`s: (DaemonSet's, Deployment's).
fn checksums(yaml: &str) -> (String, String) {
    let annotation = |template: &PodTemplateSpec| {
        template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get("weir.dev/certs-checksum"))
            .cloned()
            .expect("weir.dev/certs-checksum")
    };
    let ds: DaemonSet = the(yaml, "DaemonSet");
    let deploy: Deployment = named(yaml, "Deployment", "weir-relay");
    (
        annotation(&ds.spec.expect("spec").template),
        annotation(&deploy.spec.expect("spec").template),
    )
}

#[test]
fn cert_manager_issues_the_secrets_the_pods_mount() {
    let yaml = render(&[RELAY, "certManager.enabled=true"]);
    assert!(tls_secrets(&yaml).is_empty(), "no key in the render");
    let certificate = |name: &str| -> Value {
        let doc = documents(&yaml)
            .into_iter()
            .find(|d| d["kind"] == "Certificate" && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no Certificate {name}"));
        assert_eq!(doc["apiVersion"], "cert-manager.io/v1");
        doc["spec"].clone()
    };
    let agents = certificate("weir-agent-tls");
    assert_eq!(agents["secretName"], "weir-agent-tls");
    assert_eq!(
        agents["dnsNames"],
        serde_json::json!(["*.agents.weir.internal"])
    );
    assert!(
        agents["usages"]
            .as_array()
            .expect("usages")
            .contains(&"server auth".into())
    );
    let relay = certificate("weir-relay-tls");
    assert_eq!(relay["secretName"], "weir-relay-tls");
    assert_eq!(
        relay["dnsNames"],
        serde_json::json!(["relay.weir.internal"])
    );
    assert!(
        relay["usages"]
            .as_array()
            .expect("usages")
            .contains(&"client auth".into())
    );

    // Without an issuerRef: the chart's own CA, a CA issuer, so the Secrets
    // carry ca.crt.
    let issuer = &agents["issuerRef"];
    assert_eq!(relay["issuerRef"], *issuer);
    assert_eq!(issuer["kind"], "Issuer");
    let ca_issuer = documents(&yaml)
        .into_iter()
        .find(|d| d["kind"] == "Issuer" && d["metadata"]["name"] == issuer["name"])
        .expect("the CA Issuer");
    let ca = certificate(
        ca_issuer["spec"]["ca"]["secretName"]
            .as_str()
            .expect("a CA issuer"),
    );
    assert_eq!(ca["isCA"], true);
    let root = documents(&yaml)
        .into_iter()
        .find(|d| d["kind"] == "Issuer" && d["metadata"]["name"] == ca["issuerRef"]["name"])
        .expect("the CA's issuer");
    assert!(root["spec"]["selfSigned"].is_object());

    // The pods mount those Secrets (and nothing rolls them: cert-manager
    // renews in place).
    let ds: DaemonSet = the(&yaml, "DaemonSet");
    let agent_pod = ds.spec.expect("spec").template;
    assert!(
        agent_pod.metadata.and_then(|m| m.annotations).is_none(),
        "no checksum to roll on"
    );
    let agent_spec = agent_pod.spec.expect("pod spec");
    secret_mount(&agent_spec, &agent_spec.containers[0], "weir-agent-tls");
    let deploy: Deployment = named(&yaml, "Deployment", "weir-relay");
    secret_mount(
        &pod_spec(&deploy),
        &relay_container(&deploy),
        "weir-relay-tls",
    );

    // A cluster's issuer instead: no Issuer of the chart's.
    let yaml = render(&[
        RELAY,
        "certManager.enabled=true",
        "certManager.issuerRef.name=corp-ca",
        "certManager.issuerRef.kind=ClusterIssuer",
    ]);
    assert!(names(&yaml, "Issuer").is_empty());
    assert_eq!(
        names(&yaml, "Certificate"),
        set(&["weir-agent-tls", "weir-relay-tls"])
    );
    for doc in documents(&yaml)
        .into_iter()
        .filter(|d| d["kind"] == "Certificate")
    {
        assert_eq!(
            doc["spec"]["issuerRef"],
            serde_json::json!({"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
        );
    }
}

// The chart's certificates across upgrades: `helm template --dry-run=server`
// runs the chart's `lookup`s against a fake API server holding the
// previous install's Secrets.

/// Serves `GET /api/v1` and `GET /api/v1/namespaces/NS/secrets/NAME` from
/// a map of Secrets, as helm's `lookup` reads them.
struct SecretServer {
    secrets: Arc<Mutex<BTreeMap<String, Value>>>,
    kubeconfig: tempfile::NamedTempFile,
    _runtime: tokio::runtime::Runtime,
}

impl SecretServer {
    fn start() -> Self {
        use axum::{extract::Path as UrlPath, http::StatusCode, routing::get};
        let secrets = Arc::new(Mutex::new(BTreeMap::<String, Value>::new()));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let store = secrets.clone();
        let app = axum::Router::new()
            .route(
                "/api/v1",
                get(|| async {
                    axum::Json(serde_json::json!({
                        "kind": "APIResourceList", "groupVersion": "v1",
                        "resources": [{"name": "secrets", "singularName": "secret",
                            "namespaced": true, "kind": "Secret", "verbs": ["get"]}]
                    }))
                }),
            )
            .route(
                "/api/v1/namespaces/{ns}/secrets/{name}",
                get(move |UrlPath((ns, name)): UrlPath<(String, String)>| {
                    let found = store
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get(&format!("{ns}/{name}"))
                        .cloned();
                    async move {
                        match found {
                            Some(secret) => (StatusCode::OK, axum::Json(secret)),
                            None => (
                                StatusCode::NOT_FOUND,
                                axum::Json(serde_json::json!({
                                    "kind": "Status", "apiVersion": "v1", "status": "Failure",
                                    "reason": "NotFound", "code": 404
                                })),
                            ),
                        }
                    }
                }),
            );
        runtime.spawn(async move { axum::serve(listener, app).await });
        let kubeconfig = tempfile::NamedTempFile::new().expect("kubeconfig");
        std::fs::write(
            kubeconfig.path(),
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
                 clusters: [{{name: fake, cluster: {{server: 'http://{addr}'}}}}]\n\
                 contexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]\n\
                 users: [{{name: fake, user: {{}}}}]\n"
            ),
        )
        .expect("write kubeconfig");
        Self {
            secrets,
            kubeconfig,
            _runtime: runtime,
        }
    }

    /// The cluster holds what `yaml` installs (its Secrets).
    fn install(&self, yaml: &str) {
        let mut secrets = self.secrets.lock().unwrap_or_else(PoisonError::into_inner);
        for doc in documents(yaml)
            .into_iter()
            .filter(|d| d["kind"] == "Secret")
        {
            let key = format!(
                "{}/{}",
                doc["metadata"]["namespace"].as_str().expect("namespace"),
                doc["metadata"]["name"].as_str().expect("name")
            );
            secrets.insert(key, doc);
        }
    }

    /// Changes the installed Secret `name`; a change to null deletes it.
    fn edit(&self, name: &str, change: impl FnOnce(Option<&mut Value>)) {
        let mut secrets = self.secrets.lock().unwrap_or_else(PoisonError::into_inner);
        let key = format!("weir/{name}");
        change(secrets.get_mut(&key));
        if secrets.get(&key).is_some_and(Value::is_null) {
            secrets.remove(&key);
        }
    }

    /// The chart rendered as `helm upgrade` would against this cluster.
    fn render(&self, sets: &[&str]) -> String {
        render_on_cluster(self.kubeconfig.path(), sets)
    }
}

#[test]
fn the_charts_certificates_are_kept_across_upgrades_and_renewed_near_expiry() {
    // PEMs are long: the assertions compare without printing them.
    let cluster = SecretServer::start();
    let install = cluster.render(&[RELAY]);
    let first = tls_secrets(&install);
    assert_eq!(
        first.keys().cloned().collect::<BTreeSet<_>>(),
        set(&["weir-relay-ca", "weir-agent-tls", "weir-relay-tls"])
    );
    for leaf in ["weir-agent-tls", "weir-relay-tls"] {
        assert_eq!(
            first[leaf].keys().cloned().collect::<BTreeSet<_>>(),
            set(&["tls.crt", "tls.key", "ca.crt"])
        );
        assert!(
            first[leaf]["ca.crt"] == first["weir-relay-ca"]["tls.crt"],
            "{leaf}'s ca.crt is the CA's certificate"
        );
    }
    let (ds_sum, relay_sum) = checksums(&install);
    assert_eq!(ds_sum, relay_sum, "one set of certificates per render");
    // Without a cluster to look up (helm template), every render is new.
    assert!(
        tls_secrets(&render(&[RELAY])) != first,
        "helm template issues anew"
    );

    // An upgrade keeps every certificate, and so rolls no pod.
    cluster.install(&install);
    let upgrade = cluster.render(&[RELAY]);
    assert!(
        tls_secrets(&upgrade) == first,
        "an upgrade changed the certificates"
    );
    assert_eq!(checksums(&upgrade), (ds_sum.clone(), relay_sum.clone()));

    // The agents' certificate within renewBeforeDays of its expiry: that
    // one is re-issued by the same CA, and the pods roll.
    let soon = (std::time::SystemTime::now() + Duration::from_secs(86_400))
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs();
    cluster.edit("weir-agent-tls", |secret| {
        secret.expect("installed")["metadata"]["annotations"]["weir.dev/expires"] =
            soon.to_string().into();
    });
    let upgrade = cluster.render(&[RELAY]);
    let renewed = tls_secrets(&upgrade);
    let agents = &renewed["weir-agent-tls"];
    assert!(
        agents["tls.crt"] != first["weir-agent-tls"]["tls.crt"]
            && agents["tls.key"] != first["weir-agent-tls"]["tls.key"],
        "the expiring certificate is re-issued with a new key"
    );
    assert!(
        agents["ca.crt"] == first["weir-relay-ca"]["tls.crt"],
        "by the same CA"
    );
    assert!(
        renewed["weir-relay-tls"] == first["weir-relay-tls"]
            && renewed["weir-relay-ca"] == first["weir-relay-ca"],
        "the others are kept"
    );
    assert_ne!(checksums(&upgrade).0, ds_sum, "the agents roll");

    // A deleted CA (rotation): a new CA and new certificates, all chained
    // to it.
    cluster.install(&install);
    cluster.edit("weir-relay-ca", |secret| {
        *secret.expect("installed") = Value::Null;
    });
    let rotated = tls_secrets(&cluster.render(&[RELAY]));
    assert!(
        rotated["weir-relay-ca"]["tls.crt"] != first["weir-relay-ca"]["tls.crt"],
        "a new CA"
    );
    for leaf in ["weir-agent-tls", "weir-relay-tls"] {
        assert!(
            rotated[leaf]["tls.crt"] != first[leaf]["tls.crt"],
            "{leaf} re-issued"
        );
        assert!(
            rotated[leaf]["ca.crt"] == rotated["weir-relay-ca"]["tls.crt"],
            "{leaf} by the new CA"
        );
    }
}

/// Writes a certificate Secret's keys as files into `dir`, as its volume
/// mounts them.
fn write_secret(dir: &Path, data: &BTreeMap<String, Vec<u8>>) {
    std::fs::create_dir_all(dir).expect("create the TLS directory");
    for (key, value) in data {
        std::fs::write(dir.join(key), value).expect("write a Secret key");
    }
}

/// An agent's relay listener as far as TLS goes: weir's server
/// configuration from `dir`, answering each request `ok`.
async fn tls_listener(dir: &Path) -> SocketAddr {
    let acceptor = tokio_rustls::TlsAcceptor::from(
        weir_agent::tls::server_config(dir).expect("the agents' certificate loads"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                // A refused handshake ends here: the client sees it fail.
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut head = [0u8; 4096];
                let _ = tls.read(&mut head).await;
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

#[test]
fn the_charts_certificates_pass_weirs_mutual_tls() {
    let dirs = tempfile::tempdir().expect("temp dir");
    let secrets = tls_secrets(&render(&[RELAY]));
    write_secret(&dirs.path().join("agent"), &secrets["weir-agent-tls"]);
    write_secret(&dirs.path().join("relay"), &secrets["weir-relay-tls"]);
    // Another install's relay certificate (another CA's), trusting this
    // install's CA: only the agent can refuse it.
    let mut other = tls_secrets(&render(&[RELAY]))["weir-relay-tls"].clone();
    other.insert(
        "ca.crt".to_owned(),
        secrets["weir-relay-ca"]["tls.crt"].clone(),
    );
    write_secret(&dirs.path().join("other"), &other);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let addr = tls_listener(&dirs.path().join("agent")).await;
        let get = |dir: &str, node: &str| {
            let relay = weir_agent::tls::RelayTls::load(&dirs.path().join(dir))
                .expect("the relay's certificate loads");
            let client = relay.agent_client(node, addr).expect("client");
            let url = format!("{}/healthz", weir_agent::tls::agent_url(node, addr.port()));
            async move {
                let answer = client
                    .get(url)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await?;
                answer.text().await
            }
        };
        // The relay reaches any node's agent: the wildcard names them all,
        // a node name with dots too (its dots are dashes in the name).
        for node in ["node-a", "ip-10-0-0-1", "ip-10-0-1-2.ec2.internal"] {
            let body = get("relay", node).await;
            assert_eq!(
                body.as_ref().ok().map(String::as_str),
                Some("ok"),
                "{node}: {body:?}"
            );
        }
        // A relay certificate of another CA is refused by the agent.
        assert!(
            get("other", "node-a").await.is_err(),
            "another CA's relay was let in"
        );
    });
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
            log.contains(&format!("missing capability CAP_{missing} (")),
            "without {missing} the agent fails at start naming it:\n{log}"
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
