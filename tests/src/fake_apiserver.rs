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
//! Namespaced paths list and watch one namespace. Equality-based label
//! and field selectors (`labelSelector=k=v,k!=v,k,!k`,
//! `fieldSelector=metadata.name=x`) filter lists and watches alike; a
//! set-based selector is refused with 400 rather than ignored. (An object
//! that stops matching a watch's selector is not turned into a `DELETED`
//! event, as the real server does: the tests never relabel out of a
//! selector.)
//!
//! Besides a lab's objects it serves the agents' side of a cluster for the
//! relay: the headless Service's EndpointSlice ([`agents_endpointslice`])
//! and the agents' DaemonSet ([`daemonset`]).
//!
//! It takes the writes weir makes (`weir mode set --kube`, `weir export
//! --apply --kube`, the relay's, the guard's): PATCHes of Namespaces and
//! NetworkPolicies, by server-side apply or JSON merge patch, and POSTs of
//! core/v1 Events (checked as the API server checks them), stored and
//! pushed to watches as `ADDED`/`MODIFIED` ([`FakeApiServer::writes`]
//! lists them with their bodies). A multi-node lab's pods are served on
//! their own nodes.

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
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

/// The resources the agent's kube source and the relay's discovery watch, by the last segment of
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
    ("daemonsets", "DaemonSetList", "apps/v1"),
    ("events", "EventList", "v1"),
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
    /// Every PATCH and POST, for the test's assertions.
    writes: Vec<Write>,
}

/// A PATCH or POST the server received (refused ones too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// `PATCH` or `POST`.
    pub method: String,
    /// The request path.
    pub path: String,
    /// `Content-Type`: `application/apply-patch+yaml` (server-side apply)
    /// or `application/merge-patch+json` for a PATCH, `application/json`
    /// for a POST.
    pub content_type: String,
    /// The body, read as YAML (JSON is YAML); `null` when it is neither.
    pub body: Value,
    /// `fieldManager`, if given.
    pub field_manager: Option<String>,
    /// `dryRun=All`: checked, nothing stored.
    pub dry_run: bool,
}

type Shared = Arc<Mutex<Store>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Store> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

fn resource(name: &str) -> Option<(&'static str, &'static str, &'static str)> {
    RESOURCES.iter().copied().find(|(r, _, _)| *r == name)
}

/// The resource an object of its kind is stored under.
fn resource_of(object: &Value) -> Option<&'static str> {
    Some(match object["kind"].as_str()? {
        "Pod" => "pods",
        "Namespace" => "namespaces",
        "Service" => "services",
        "Node" => "nodes",
        "EndpointSlice" => "endpointslices",
        "NetworkPolicy" => "networkpolicies",
        "DaemonSet" => "daemonsets",
        "Event" => "events",
        _ => return None,
    })
}

/// Store `object` under a new resourceVersion (or remove it, for
/// `DELETED`) and send the event to every open watch of `resource`;
/// returns the object as stored.
fn record(store: &mut Store, resource: &'static str, kind: &str, mut object: Value) -> Value {
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
    object
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

    /// Start a server holding the lab's pods (each on the node the status
    /// gives it, else on `node_name`), their namespaces (labels from
    /// `namespace_labels`, else none), its Services, and the nodes, from
    /// `weir lab status -o json`.
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
        let mut nodes: Vec<&str> = status["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["name"].as_str())
            .collect();
        if !nodes.contains(&node_name) {
            nodes.push(node_name);
        }
        for name in nodes {
            server.apply("ADDED", node(name));
        }
        for pod in pods {
            server.apply(
                "ADDED",
                lab_pod(pod, pod["node"].as_str().unwrap_or(node_name)),
            );
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
    pub fn apply(&self, kind: &str, object: Value) {
        let resource = resource_of(&object)
            .unwrap_or_else(|| panic!("the fake API server does not serve {:?}", object["kind"]));
        record(&mut lock(&self.shared), resource, kind, object);
    }

    /// The writes (PATCH requests) received so far, in order.
    #[must_use]
    pub fn writes(&self) -> Vec<Write> {
        lock(&self.shared).writes.clone()
    }

    /// The stored object `namespace/name` (`/name` for cluster-scoped ones)
    /// of `resource` (`namespaces`, `networkpolicies`, ...).
    #[must_use]
    pub fn object(&self, resource: &str, key: &str) -> Option<Value> {
        lock(&self.shared)
            .objects
            .get(resource)
            .and_then(|objects| objects.get(key))
            .cloned()
    }

    /// Every stored object of `resource`, by `namespace/name`.
    #[must_use]
    pub fn objects(&self, resource: &str) -> Vec<Value> {
        lock(&self.shared)
            .objects
            .get(resource)
            .map(|objects| objects.values().cloned().collect())
            .unwrap_or_default()
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

async fn serve(
    State(shared): State<Shared>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
    RawQuery(query): RawQuery,
    body: axum::body::Bytes,
) -> Response {
    let query = query.unwrap_or_default();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if method == Method::PATCH || method == Method::POST {
        let write = Write {
            method: method.to_string(),
            path: uri.path().to_owned(),
            content_type: content_type.to_owned(),
            body: serde_yaml::from_slice(&body).unwrap_or(Value::Null),
            field_manager: query_param(&query, "fieldManager"),
            dry_run: query_param(&query, "dryRun").as_deref() == Some("All"),
        };
        lock(&shared).writes.push(write.clone());
        return if method == Method::PATCH {
            patch(&shared, &write, &body)
        } else {
            post(&shared, &write)
        };
    }
    if method != Method::GET {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("{method} is not served"),
        );
    }
    let param = |name: &str| query_param(&query, name);
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
    let selector = match Selector::parse(
        param("labelSelector").as_deref(),
        param("fieldSelector").as_deref(),
    ) {
        Ok(selector) => selector,
        Err(message) => return status(StatusCode::BAD_REQUEST, "BadRequest", &message),
    };
    let selects = |object: &Value| {
        in_namespace
            .as_deref()
            .is_none_or(|ns| object["metadata"]["namespace"] == ns)
            && selector.matches(object)
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
    // A watch of one namespace sees only that namespace's events, a watch
    // with selectors only its objects' events.
    let filter = (in_namespace, selector);
    let lines = futures_util::stream::unfold((rx, filter), |(mut rx, filter)| async move {
        loop {
            let event = rx.recv().await?;
            let (ns, selector) = &filter;
            let object = &event["object"];
            if ns
                .as_deref()
                .is_none_or(|ns| object["metadata"]["namespace"] == ns)
                && selector.matches(object)
            {
                let mut line = event.to_string();
                line.push('\n');
                return Some((Ok::<_, std::io::Error>(line), (rx, filter)));
            }
        }
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(lines),
    )
        .into_response()
}

/// A PATCH of a Namespace (`/api/v1/namespaces/NAME`) or a NetworkPolicy
/// (`.../namespaces/NS/networkpolicies/NAME`), as weir writes them: a
/// server-side apply (`application/apply-patch+yaml`, `fieldManager`
/// required) creates the object or merges its labels and annotations and
/// replaces the fields it gives (one field manager: nothing to
/// arbitrate); a JSON merge patch (`application/merge-patch+json`)
/// changes an object that exists. `dryRun=All` answers without storing.
/// A stored change is pushed to watches as `ADDED` or `MODIFIED`.
fn patch(shared: &Shared, write: &Write, body: &[u8]) -> Response {
    let path = write.path.as_str();
    let content_type = write.content_type.as_str();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let n = segments.len();
    let (resource, namespace, name) = match (n >= 4).then(|| &segments[n - 4..]) {
        Some(["namespaces", ns, "networkpolicies", name]) => (
            "networkpolicies",
            Some((*ns).to_owned()),
            (*name).to_owned(),
        ),
        _ if n >= 2 && segments[n - 2] == "namespaces" => {
            ("namespaces", None, segments[n - 1].to_owned())
        }
        _ => {
            return status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                &format!("PATCH {path} is not served (namespaces and networkpolicies only)"),
            );
        }
    };
    let field_manager = write.field_manager.clone();
    let dry_run = write.dry_run;
    let mut store = lock(shared);
    let store_key = format!("{}/{name}", namespace.as_deref().unwrap_or_default());
    let existing = store
        .objects
        .get(resource)
        .and_then(|objects| objects.get(&store_key))
        .cloned();
    let bad = |message: String| status(StatusCode::BAD_REQUEST, "BadRequest", &message);
    let (object, event) = match content_type {
        "application/apply-patch+yaml" => {
            if field_manager.is_none() {
                return bad("PATCH with apply requires a fieldManager".into());
            }
            let applied: Value = match serde_yaml::from_slice(body) {
                Ok(value) => value,
                Err(e) => return bad(format!("the applied configuration is not YAML: {e}")),
            };
            let kind = if resource == "namespaces" {
                "Namespace"
            } else {
                "NetworkPolicy"
            };
            if applied["kind"] != kind || applied["metadata"]["name"] != name.as_str() {
                return bad(format!(
                    "the applied configuration is not the {kind} {name} of the path: {applied}"
                ));
            }
            match existing {
                None => {
                    let mut object = applied;
                    object["metadata"]["uid"] = json!(format!("{resource}-{store_key}"));
                    if let Some(ns) = &namespace {
                        object["metadata"]["namespace"] = json!(ns);
                    }
                    if resource == "namespaces" {
                        object["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
                    }
                    (object, "ADDED")
                }
                Some(mut object) => {
                    for (field, value) in applied.as_object().into_iter().flatten() {
                        if field == "metadata" {
                            for part in ["labels", "annotations"] {
                                for (k, v) in value[part].as_object().into_iter().flatten() {
                                    object["metadata"][part][k] = v.clone();
                                }
                            }
                        } else {
                            object[field] = value.clone();
                        }
                    }
                    (object, "MODIFIED")
                }
            }
        }
        "application/merge-patch+json" => {
            let Some(mut object) = existing else {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("{resource} \"{name}\" not found"),
                );
            };
            let merge: Value = match serde_json::from_slice(body) {
                Ok(value) => value,
                Err(e) => return bad(format!("the merge patch is not JSON: {e}")),
            };
            merge_patch(&mut object, &merge);
            (object, "MODIFIED")
        }
        other => {
            return status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                &format!(
                    "the body of the request was in an unknown format - accepted media types include: application/apply-patch+yaml, application/merge-patch+json (got {other:?})"
                ),
            );
        }
    };
    let object = if dry_run {
        object
    } else {
        record(&mut store, resource, event, object)
    };
    let code = if event == "ADDED" {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        object.to_string(),
    )
        .into_response()
}

/// A POST of a core/v1 Event (`/api/v1/namespaces/NS/events`), checked
/// as the API server checks an Event without `eventTime`: the namespace
/// of the body (if any) is the path's; an `involvedObject` with a
/// namespace is in the Event's namespace, one without (a cluster-scoped
/// object) only in `default`; a `generateName` gets a suffix. Stored and
/// pushed to watches as `ADDED`.
fn post(shared: &Shared, write: &Write) -> Response {
    let segments: Vec<&str> = write.path.trim_matches('/').split('/').collect();
    let ["api", "v1", "namespaces", namespace, "events"] = segments.as_slice() else {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("POST {} is not served (core/v1 events only)", write.path),
        );
    };
    let namespace = (*namespace).to_owned();
    let mut event = write.body.clone();
    if event["kind"] != "Event" || event["apiVersion"] != "v1" {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("the body is not a v1 Event: {event}"),
        );
    }
    match event["metadata"]["namespace"].as_str() {
        None => event["metadata"]["namespace"] = json!(namespace),
        Some(ns) if ns == namespace => {}
        Some(ns) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!(
                    "the namespace of the provided object ({ns}) does not match the namespace \
                     sent on the request ({namespace})"
                ),
            );
        }
    }
    let involved = event["involvedObject"]["namespace"]
        .as_str()
        .unwrap_or_default();
    let agrees = if involved.is_empty() {
        namespace == "default"
    } else {
        involved == namespace
    };
    if !agrees {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            &format!(
                "Event is invalid: involvedObject.namespace: Invalid value: {involved:?}: does \
                 not match event.namespace"
            ),
        );
    }
    let mut store = lock(shared);
    if event["metadata"]["name"].as_str().is_none() {
        let Some(prefix) = event["metadata"]["generateName"].as_str() else {
            return status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                "Event is invalid: metadata.name: Required value: name or generateName is required",
            );
        };
        event["metadata"]["name"] = json!(format!("{prefix}{:05x}", store.rv + 1));
    }
    let key = key(&event);
    if store
        .objects
        .get("events")
        .is_some_and(|events| events.contains_key(&key))
    {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("events {key:?} already exists"),
        );
    }
    event["metadata"]["uid"] = json!(format!("event-{key}"));
    let event = record(&mut store, "events", "ADDED", event);
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        event.to_string(),
    )
        .into_response()
}

/// The query parameter `name`, decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(v))
}

/// RFC 7386: `null` removes, objects merge, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (k, v) in fields {
        if v.is_null() {
            if let Some(t) = target.as_object_mut() {
                t.remove(k);
            }
        } else {
            merge_patch(&mut target[k], v);
        }
    }
}

/// A query value with `%XX` escapes and `+` decoded.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| value.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, byte) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One requirement of a selector.
#[derive(Clone, Debug)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

/// A request's label and field selectors (equality-based only).
#[derive(Clone, Debug, Default)]
struct Selector {
    labels: Vec<Requirement>,
    /// (dotted path, value, equal).
    fields: Vec<(String, String, bool)>,
}

impl Selector {
    fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Self, String> {
        let terms = |s: Option<&str>| -> Vec<String> {
            s.unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let mut selector = Self::default();
        for term in terms(labels) {
            if term.contains(" in ") || term.contains(" notin ") || term.contains('(') {
                return Err(format!(
                    "labelSelector `{term}`: set-based selectors are not served by the fake API server"
                ));
            }
            let requirement = if let Some((k, v)) = term.split_once("!=") {
                Requirement::NotEquals(k.to_owned(), v.to_owned())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                Requirement::Equals(k.to_owned(), v.to_owned())
            } else if let Some(k) = term.strip_prefix('!') {
                Requirement::Absent(k.to_owned())
            } else {
                Requirement::Exists(term.clone())
            };
            selector.labels.push(requirement);
        }
        for term in terms(fields) {
            let field = if let Some((k, v)) = term.split_once("!=") {
                (k.to_owned(), v.to_owned(), false)
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k.to_owned(), v.to_owned(), true)
            } else {
                return Err(format!("fieldSelector `{term}` is not FIELD=VALUE"));
            };
            selector.fields.push(field);
        }
        Ok(selector)
    }

    fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |k: &str| labels.get(k).and_then(Value::as_str);
        let labels_match = self.labels.iter().all(|r| match r {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::Absent(k) => label(k).is_none(),
        });
        labels_match
            && self.fields.iter().all(|(path, value, equal)| {
                let found = path
                    .split('.')
                    .try_fold(object, |v, segment| v.get(segment))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                (found == value) == *equal
            })
    }
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

/// The EndpointSlice of the agents' headless Service `service`
/// (`NAMESPACE/NAME`), as the EndpointSlice controller writes it: one
/// endpoint per `(node, ip, ready)` (an IPv6 slice when the first address
/// is IPv6), the port named `relay` (4244), the agent pods as targets.
///
/// # Panics
/// `service` is not `NAMESPACE/NAME`.
#[must_use]
pub fn agents_endpointslice(service: &str, endpoints: &[(&str, &str, bool)]) -> Value {
    let (namespace, name) = service
        .split_once('/')
        .expect("the service is NAMESPACE/NAME");
    let address_type = match endpoints.first() {
        Some((_, ip, _)) if ip.contains(':') => "IPv6",
        _ => "IPv4",
    };
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(node, ip, ready)| {
            json!({
                "addresses": [ip],
                "conditions": {"ready": ready, "serving": ready, "terminating": false},
                "nodeName": node,
                "targetRef": {"kind": "Pod", "namespace": namespace, "name": format!("weir-agent-{node}"),
                    "uid": format!("pod-{namespace}-weir-agent-{node}")},
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{name}-agents"), "namespace": namespace,
            "uid": format!("slice-{namespace}-{name}"),
            "labels": {
                "kubernetes.io/service-name": name,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": name,
                "uid": format!("svc-{namespace}-{name}"), "controller": true, "blockOwnerDeletion": true}],
        },
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": [{"name": "relay", "port": 4244, "protocol": "TCP"}],
    })
}

/// The agents' DaemonSet `name` (`NAMESPACE/NAME`) with `desired` pods
/// to schedule (`status.desiredNumberScheduled`), all of them up.
///
/// # Panics
/// `name` is not `NAMESPACE/NAME`.
#[must_use]
pub fn daemonset(name: &str, desired: u32) -> Value {
    let (namespace, name) = name
        .split_once('/')
        .expect("the DaemonSet is NAMESPACE/NAME");
    let labels = json!({"app.kubernetes.io/name": "weir", "app.kubernetes.io/component": "agent"});
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("ds-{namespace}-{name}"),
            "generation": 1, "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels},
                "spec": {"containers": [{"name": "agent", "image": "weir"}]}},
        },
        "status": {
            "currentNumberScheduled": desired, "desiredNumberScheduled": desired,
            "numberMisscheduled": 0, "numberReady": desired, "numberAvailable": desired,
            "updatedNumberScheduled": desired, "observedGeneration": 1,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_decoded_and_filter_by_label_and_field() {
        assert_eq!(
            percent_decode("kubernetes.io%2Fservice-name%3Dweir-agents"),
            "kubernetes.io/service-name=weir-agents"
        );
        assert_eq!(percent_decode("a+b%2"), "a b%2");
        let slice = agents_endpointslice("weir/weir-agents", &[("a", "10.151.0.2", true)]);
        let other = agents_endpointslice("weir/other", &[("a", "10.151.0.3", true)]);
        let select = |labels: Option<&str>, fields: Option<&str>| {
            let selector = Selector::parse(labels, fields).expect("a valid selector");
            (selector.matches(&slice), selector.matches(&other))
        };
        assert_eq!(
            select(Some("kubernetes.io/service-name=weir-agents"), None),
            (true, false)
        );
        assert_eq!(
            select(Some("kubernetes.io/service-name!=weir-agents"), None),
            (false, true)
        );
        assert_eq!(
            select(Some("kubernetes.io/service-name,!missing"), None),
            (true, true)
        );
        assert_eq!(
            select(None, Some("metadata.name=other-agents")),
            (false, true)
        );
        assert_eq!(select(None, Some("metadata.namespace=weir")), (true, true));
        assert!(Selector::parse(Some("app in (a,b)"), None).is_err());
        assert!(Selector::parse(None, Some("metadata.name")).is_err());
    }

    #[test]
    fn the_agents_objects_are_what_the_relay_reads() {
        let slice = agents_endpointslice(
            "weir/weir-agents",
            &[("a", "fd00::2", true), ("b", "fd00::3", false)],
        );
        assert_eq!(slice["addressType"], "IPv6");
        assert_eq!(slice["endpoints"][1]["nodeName"], "b");
        assert_eq!(slice["endpoints"][1]["conditions"]["ready"], false);
        assert_eq!(slice["ports"][0]["name"], "relay");
        let ds = daemonset("weir/weir-agent", 3);
        assert_eq!(ds["metadata"]["namespace"], "weir");
        assert_eq!(ds["status"]["desiredNumberScheduled"], 3);
    }
}

#[cfg(test)]
mod writes {
    use std::io::BufRead as _;

    use super::*;

    fn patch(
        api: &FakeApiServer,
        path: &str,
        query: &str,
        content_type: &str,
        body: &Value,
    ) -> (u16, Value) {
        let response = reqwest::blocking::Client::new()
            .patch(format!("http://{}{path}?{query}", api.addr))
            .header("content-type", content_type)
            .body(body.to_string())
            .send()
            .expect("PATCH");
        let code = response.status().as_u16();
        (code, response.json().expect("a JSON answer"))
    }

    /// The first event a watch from `rv` streams.
    fn first_event(api: &FakeApiServer, path: &str, rv: u64) -> Value {
        let response = reqwest::blocking::Client::new()
            .get(format!(
                "http://{}{path}?watch=true&resourceVersion={rv}",
                api.addr
            ))
            .send()
            .expect("watch");
        let mut line = String::new();
        std::io::BufReader::new(response)
            .read_line(&mut line)
            .expect("an event");
        serde_json::from_str(&line).expect("a JSON event")
    }

    #[test]
    fn server_side_apply_and_merge_patches_store_and_push_events() {
        let api = FakeApiServer::start();
        api.apply("ADDED", namespace("back", &BTreeMap::new()));
        let rv = lock(&api.shared).rv;
        let apply = "application/apply-patch+yaml";
        let labels = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "back", "labels": {"weir.dev/mode": "enforce"}}});
        let (code, ns) = patch(
            &api,
            "/api/v1/namespaces/back",
            "fieldManager=weir",
            apply,
            &labels,
        );
        assert_eq!(code, 200, "{ns}");
        assert_eq!(ns["metadata"]["labels"]["weir.dev/mode"], "enforce");
        assert_eq!(
            ns["metadata"]["labels"]["kubernetes.io/metadata.name"], "back",
            "kept"
        );
        let event = first_event(&api, "/api/v1/namespaces", rv);
        assert_eq!(event["type"], "MODIFIED");
        assert_eq!(
            event["object"]["metadata"]["labels"]["weir.dev/mode"],
            "enforce"
        );

        let policy = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "db", "namespace": "back"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}});
        let path = "/apis/networking.k8s.io/v1/namespaces/back/networkpolicies/db";
        let (code, _) = patch(&api, path, "dryRun=All&fieldManager=weir", apply, &policy);
        assert_eq!(code, 201);
        assert!(
            api.object("networkpolicies", "back/db").is_none(),
            "a dry run stores nothing"
        );
        let rv = lock(&api.shared).rv;
        let (code, _) = patch(&api, path, "fieldManager=weir", apply, &policy);
        assert_eq!(code, 201);
        let event = first_event(&api, "/apis/networking.k8s.io/v1/networkpolicies", rv);
        assert_eq!(
            (
                event["type"].as_str(),
                event["object"]["metadata"]["namespace"].as_str()
            ),
            (Some("ADDED"), Some("back"))
        );
        let mut changed = policy.clone();
        changed["spec"]["policyTypes"] = json!(["Ingress", "Egress"]);
        let (code, stored) = patch(&api, path, "fieldManager=weir", apply, &changed);
        assert_eq!(code, 200);
        assert_eq!(stored["spec"]["policyTypes"], json!(["Ingress", "Egress"]));

        let (code, refused) = patch(&api, path, "", apply, &policy);
        assert_eq!(code, 400, "apply needs a field manager: {refused}");
        let merge = json!({"metadata": {"labels": {"weir.dev/mode": "observe", "team": "x"}}});
        let (code, ns) = patch(
            &api,
            "/api/v1/namespaces/back",
            "fieldManager=weir",
            "application/merge-patch+json",
            &merge,
        );
        assert_eq!(code, 200);
        assert_eq!(ns["metadata"]["labels"]["weir.dev/mode"], "observe");
        assert_eq!(ns["metadata"]["labels"]["team"], "x");
        let (code, _) = patch(
            &api,
            "/api/v1/namespaces/nowhere",
            "",
            "application/merge-patch+json",
            &merge,
        );
        assert_eq!(code, 404);
        let writes = api.writes();
        assert_eq!(writes.len(), 7);
        assert!(writes[1].dry_run && writes[1].field_manager.as_deref() == Some("weir"));
    }

    fn post(api: &FakeApiServer, path: &str, body: &Value) -> (u16, Value) {
        let response = reqwest::blocking::Client::new()
            .post(format!("http://{}{path}", api.addr))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .expect("POST");
        let code = response.status().as_u16();
        (code, response.json().expect("a JSON answer"))
    }

    fn event(namespace: &str, involved: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": "shop.guard-", "namespace": namespace},
            "involvedObject": involved,
            "type": "Warning", "reason": "GuardReverted", "message": "why",
        })
    }

    #[test]
    fn events_are_checked_as_the_api_server_checks_them_and_stored() {
        let api = FakeApiServer::start();
        let path = "/api/v1/namespaces/shop/events";
        let namespace = |ns: Option<&str>| {
            let mut object = json!({"apiVersion": "v1", "kind": "Namespace", "name": "shop"});
            if let Some(ns) = ns {
                object["namespace"] = json!(ns);
            }
            object
        };
        // A cluster-scoped object's Event outside `default`: refused.
        let (code, refused) = post(&api, path, &event("shop", namespace(None)));
        assert_eq!(code, 422, "{refused}");
        assert!(
            refused["message"]
                .as_str()
                .is_some_and(|m| m.contains("does not match event.namespace")),
            "{refused}"
        );
        let (code, _) = post(&api, path, &event("other", namespace(Some("other"))));
        assert_eq!(code, 400, "the body's namespace is the path's");
        assert!(api.objects("events").is_empty());

        let (code, stored) = post(&api, path, &event("shop", namespace(Some("shop"))));
        assert_eq!(code, 201, "{stored}");
        let name = stored["metadata"]["name"].as_str().expect("a name");
        assert!(name.starts_with("shop.guard-") && name.len() > "shop.guard-".len());
        let (code, _) = post(
            &api,
            "/api/v1/namespaces/default/events",
            &event("default", namespace(None)),
        );
        assert_eq!(code, 201, "a cluster-scoped object's Event in default");
        assert_eq!(api.objects("events").len(), 2);
        let listed: Value = reqwest::blocking::get(format!("http://{}{path}", api.addr))
            .expect("list")
            .json()
            .expect("JSON");
        assert_eq!(listed["kind"], "EventList");
        assert_eq!(
            listed["items"].as_array().map(Vec::len),
            Some(1),
            "{listed}"
        );

        let writes = api.writes();
        assert_eq!(writes.len(), 4, "refused ones too");
        assert_eq!(
            (writes[2].method.as_str(), writes[2].path.as_str()),
            ("POST", path)
        );
        assert_eq!(writes[2].content_type, "application/json");
        assert_eq!(writes[2].body, event("shop", namespace(Some("shop"))));
        let (code, _) = post(&api, "/api/v1/namespaces/shop/pods", &json!({}));
        assert_eq!(code, 405);
    }
}
