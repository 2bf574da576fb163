//! A small Kubernetes API server over plain HTTP for privileged tests: it
//! serves a lab's pods, namespaces and Services as real API objects, so an
//! agent started with `--source kube` (and [`FakeApiServer::kubeconfig`] in
//! `KUBECONFIG`) sees the lab as a node of a cluster.
//!
//! Lists answer with the current objects and resourceVersion; a watch
//! (`watch=true&resourceVersion=N`) first replays the events after `N`,
//! then stays open and gets every event the test pushes, one JSON
//! `WatchEvent` per line, as the API server streams them. Every change
//! bumps the one resourceVersion counter, as etcd's revision does.
//! Namespaced paths list and watch one namespace; label and field
//! selectors are not applied (the tests serve only what the agent asks
//! for, e.g. no EndpointSlice but the API server's).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex, PoisonError},
    thread,
};

use axum::{
    Router,
    body::Body,
    extract::{RawQuery, State},
    http::{StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

/// The resources the agent's kube source watches, by the last segment of
/// their paths, with their List kind and apiVersion.
const RESOURCES: &[(&str, &str, &str)] = &[
    ("pods", "PodList", "v1"),
    ("namespaces", "NamespaceList", "v1"),
    ("services", "ServiceList", "v1"),
    ("nodes", "NodeList", "v1"),
    ("endpointslices", "EndpointSliceList", "discovery.k8s.io/v1"),
    (
        "networkpolicies",
        "NetworkPolicyList",
        "networking.k8s.io/v1",
    ),
];

/// One event of a resource, kept for watches that resume from before it.
struct Logged {
    rv: u64,
    event: Value,
}

#[derive(Default)]
struct Store {
    rv: u64,
    /// resource -> "namespace/name" -> object.
    objects: BTreeMap<&'static str, BTreeMap<String, Value>>,
    log: BTreeMap<&'static str, Vec<Logged>>,
    watchers: BTreeMap<&'static str, Vec<mpsc::UnboundedSender<Value>>>,
    /// (resource, watch) of every request, for the test's assertions.
    requests: Vec<(String, bool)>,
}

type Shared = Arc<Mutex<Store>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Store> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

fn resource(name: &str) -> Option<(&'static str, &'static str, &'static str)> {
    RESOURCES.iter().copied().find(|(r, _, _)| *r == name)
}

fn key(object: &Value) -> String {
    format!(
        "{}/{}",
        object["metadata"]["namespace"].as_str().unwrap_or_default(),
        object["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// A running fake API server; stops when dropped.
pub struct FakeApiServer {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Shared,
    kubeconfig: tempfile::NamedTempFile,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FakeApiServer {
    /// Start an empty server on a free local port.
    #[must_use]
    pub fn start() -> Self {
        let shared: Shared = Arc::new(Mutex::new(Store {
            rv: 1,
            ..Store::default()
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake API");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let app = Router::new()
            .fallback(serve)
            .with_state(Arc::clone(&shared));
        let thread = thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        let kubeconfig = tempfile::Builder::new()
            .prefix("weir-fake-kubeconfig")
            .suffix(".yaml")
            .tempfile()
            .expect("kubeconfig file");
        std::fs::write(
            kubeconfig.path(),
            format!(
                "apiVersion: v1\nkind: Config\n\
                 clusters: [{{name: fake, cluster: {{server: 'http://{addr}'}}}}]\n\
                 users: [{{name: anonymous, user: {{}}}}]\n\
                 contexts: [{{name: fake, context: {{cluster: fake, user: anonymous, namespace: default}}}}]\n\
                 current-context: fake\n"
            ),
        )
        .expect("write kubeconfig");
        Self {
            addr,
            shared,
            kubeconfig,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Start a server holding the lab's pods (all on `node_name`), their
    /// namespaces (labels from `namespace_labels`, else none), its
    /// Services, and the node, from `weir lab status -o json`.
    #[must_use]
    pub fn for_lab(
        status: &Value,
        node_name: &str,
        namespace_labels: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> Self {
        let server = Self::start();
        let pods = status["pods"].as_array().expect("status.pods");
        let mut namespaces: BTreeMap<String, BTreeMap<String, String>> = namespace_labels.clone();
        for pod in pods {
            let ns = pod["namespace"].as_str().expect("pod namespace");
            namespaces.entry(ns.to_owned()).or_default();
        }
        for (name, labels) in &namespaces {
            server.apply("ADDED", namespace(name, labels));
        }
        server.apply("ADDED", node(node_name));
        for pod in pods {
            server.apply("ADDED", lab_pod(pod, node_name));
        }
        for svc in status["services"].as_array().into_iter().flatten() {
            server.apply("ADDED", service(svc));
        }
        server
    }

    /// The kubeconfig that points at this server (for `KUBECONFIG`).
    #[must_use]
    pub fn kubeconfig(&self) -> &Path {
        self.kubeconfig.path()
    }

    /// Store `object` (created, replaced or, for `DELETED`, removed) under
    /// a new resourceVersion and send the event to every open watch of its
    /// kind.
    pub fn apply(&self, kind: &str, mut object: Value) {
        let resource = match object["kind"].as_str() {
            Some("Pod") => "pods",
            Some("Namespace") => "namespaces",
            Some("Service") => "services",
            Some("Node") => "nodes",
            Some("EndpointSlice") => "endpointslices",
            Some("NetworkPolicy") => "networkpolicies",
            other => panic!("the fake API server does not serve {other:?}"),
        };
        let mut store = lock(&self.shared);
        store.rv += 1;
        let rv = store.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let objects = store.objects.entry(resource).or_default();
        if kind == "DELETED" {
            objects.remove(&key(&object));
        } else {
            objects.insert(key(&object), object.clone());
        }
        let event = json!({"type": kind, "object": object});
        store.log.entry(resource).or_default().push(Logged {
            rv,
            event: event.clone(),
        });
        if let Some(watchers) = store.watchers.get_mut(resource) {
            watchers.retain(|w| w.send(event.clone()).is_ok());
        }
    }

    /// How many watch requests of `resource` were made so far.
    #[must_use]
    pub fn watches(&self, resource: &str) -> usize {
        lock(&self.shared)
            .requests
            .iter()
            .filter(|(r, watch)| r == resource && *watch)
            .count()
    }

    /// How many watches of `resource` are open now.
    #[must_use]
    pub fn open_watches(&self, resource: &str) -> usize {
        lock(&self.shared)
            .watchers
            .get(resource)
            .map_or(0, |w| w.iter().filter(|w| !w.is_closed()).count())
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        // Open watches would hold a graceful shutdown: close them first.
        lock(&self.shared).watchers.clear();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(State(shared): State<Shared>, uri: Uri, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
    };
    let last = uri.path().rsplit('/').next().unwrap_or_default();
    let watch = param("watch").as_deref() == Some("true");
    let mut store = lock(&shared);
    store.requests.push((last.to_owned(), watch));
    let Some((resource, list_kind, api_version)) = resource(last) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("{} is not served", uri.path()),
        );
    };
    // Namespaced paths (`/namespaces/<ns>/<resource>`) list that namespace.
    let in_namespace = uri
        .path()
        .strip_suffix(&format!("/{resource}"))
        .and_then(|p| p.rsplit_once("/namespaces/"))
        .map(|(_, ns)| ns.to_owned());
    let selects = |object: &Value| {
        in_namespace
            .as_deref()
            .is_none_or(|ns| object["metadata"]["namespace"] == ns)
    };
    if !watch {
        let items: Vec<Value> = store
            .objects
            .get(resource)
            .into_iter()
            .flat_map(BTreeMap::values)
            .filter(|o| selects(o))
            .cloned()
            .collect();
        let body = json!({
            "kind": list_kind,
            "apiVersion": api_version,
            "metadata": {"resourceVersion": store.rv.to_string()},
            "items": items,
        });
        return (
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
    }
    let from: u64 = param("resourceVersion")
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0);
    let (tx, rx) = mpsc::unbounded_channel::<Value>();
    for logged in store.log.get(resource).into_iter().flatten() {
        if logged.rv > from {
            let _ = tx.send(logged.event.clone());
        }
    }
    store.watchers.entry(resource).or_default().push(tx);
    drop(store);
    // A watch of one namespace sees only that namespace's events.
    let lines = futures_util::stream::unfold((rx, in_namespace), |(mut rx, ns)| async move {
        loop {
            let event = rx.recv().await?;
            if ns
                .as_deref()
                .is_none_or(|ns| event["object"]["metadata"]["namespace"] == ns)
            {
                let mut line = event.to_string();
                line.push('\n');
                return Some((Ok::<_, std::io::Error>(line), (rx, ns)));
            }
        }
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(lines),
    )
        .into_response()
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason,
        "code": code.as_u16(),
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// A Namespace with `labels` (plus `kubernetes.io/metadata.name`, which
/// the API server sets on every namespace).
#[must_use]
pub fn namespace(name: &str, labels: &BTreeMap<String, String>) -> Value {
    let mut labels = labels.clone();
    labels.insert("kubernetes.io/metadata.name".into(), name.into());
    json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "uid": format!("ns-{name}"), "labels": labels},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })
}

/// The Node `name`, Ready.
#[must_use]
pub fn node(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": format!("node-{name}"),
            "labels": {"kubernetes.io/hostname": name}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    })
}

/// A lab pod (an entry of `weir lab status -o json`'s `pods`) as the API
/// server shows it: Running on `node_name`, its network up since before the
/// test, owned by the controller its workload implies (a Deployment's pods
/// by the ReplicaSet `<deployment>-<pod-template-hash>`, as the lab names
/// them).
///
/// # Panics
/// A field missing from the status, or a CronJob pod (its Job's name is
/// not in the status).
#[must_use]
pub fn lab_pod(pod: &Value, node_name: &str) -> Value {
    let namespace = pod["namespace"].as_str().expect("pod namespace");
    let name = pod["name"].as_str().expect("pod name");
    let labels = &pod["labels"];
    let workload = &pod["workload"];
    let owner_name = workload["name"].as_str().expect("workload name");
    let owner = match workload["kind"].as_str().expect("workload kind") {
        "Pod" => None,
        "Deployment" => {
            let hash = labels["pod-template-hash"]
                .as_str()
                .expect("a Deployment's pod has a pod-template-hash label");
            Some(("apps/v1", "ReplicaSet", format!("{owner_name}-{hash}")))
        }
        kind @ ("ReplicaSet" | "StatefulSet" | "DaemonSet") => {
            Some(("apps/v1", kind, owner_name.to_owned()))
        }
        "Job" => Some(("batch/v1", "Job", owner_name.to_owned())),
        other => panic!("lab pod {namespace}/{name}: workload kind {other} is not served"),
    };
    let owner_references: Vec<Value> = owner
        .into_iter()
        .map(|(api_version, kind, owner)| {
            json!({"apiVersion": api_version, "kind": kind, "name": owner,
                "uid": format!("{kind}-{namespace}-{owner}"), "controller": true,
                "blockOwnerDeletion": true})
        })
        .collect();
    let ips: Vec<&str> = pod["ips"]
        .as_array()
        .expect("pod ips")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let ports: Vec<Value> = pod["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let mut port = json!({"containerPort": p["port"], "protocol": p["protocol"]});
            if let Some(name) = p["name"].as_str() {
                port["name"] = json!(name);
            }
            port
        })
        .collect();
    // Long before any flow of the test: the pod held its IP throughout.
    let since = "2026-01-01T00:00:00Z";
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": namespace,
            "uid": format!("pod-{namespace}-{name}"),
            "labels": labels,
            "ownerReferences": owner_references,
            "creationTimestamp": since,
        },
        "spec": {
            "nodeName": node_name,
            "containers": [{"name": "main", "image": "lab", "ports": ports}],
        },
        "status": {
            "phase": "Running",
            "podIP": ips.first(),
            "podIPs": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": since},
                {"type": "Ready", "status": "True", "lastTransitionTime": since},
            ],
        },
    })
}

/// A lab Service (an entry of the status's `services`) as a ClusterIP
/// Service.
#[must_use]
pub fn service(svc: &Value) -> Value {
    let namespace = svc["namespace"].as_str().expect("service namespace");
    let name = svc["name"].as_str().expect("service name");
    let ips: Vec<Value> = svc["clusterIPs"].as_array().cloned().unwrap_or_default();
    let ports: Vec<Value> = svc["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let target = p["targetPort"].as_str().unwrap_or_default();
            let target = target
                .parse::<u16>()
                .map_or_else(|_| json!(target), |n| json!(n));
            let mut port =
                json!({"port": p["port"], "protocol": p["protocol"], "targetPort": target});
            if let Some(name) = p["name"].as_str() {
                port["name"] = json!(name);
            }
            port
        })
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("svc-{namespace}-{name}")},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ips.first().cloned().unwrap_or_else(|| json!("None")),
            "clusterIPs": if ips.is_empty() { json!(["None"]) } else { json!(ips) },
            "selector": svc["selector"],
            "ports": ports,
        },
    })
}
