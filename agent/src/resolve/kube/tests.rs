//! The kube source against a scripted API server answering real
//! Kubernetes JSON: the resolver's IP -> pod map, the namespace modes and
//! the NetworkPolicy set must follow the stream exactly.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use serde_json::{Value, json};

use super::{
    KubeSource,
    mock::{ApiServer, Reply, bookmark, event, gone, list, status},
};
use crate::{
    aggregator::{Aggregator, Options},
    flow::{Initiator, Observation},
    metrics::Metrics,
    resolve::{Inventory, Resolve as _, Resolver, Source as _},
};

macro_rules! fixture {
    ($name:literal) => {
        serde_json::from_str::<Value>(include_str!(concat!("fixtures/", $name, ".json")))
            .expect("fixture parses")
    };
}

/// (resource path segment, item kind) of every watched resource.
const KINDS: [(&str, &str); 6] = [
    ("pods", "Pod"),
    ("namespaces", "Namespace"),
    ("services", "Service"),
    ("endpointslices", "EndpointSlice"),
    ("networkpolicies", "NetworkPolicy"),
    ("nodes", "Node"),
];

struct Cluster {
    server: ApiServer,
    source: KubeSource,
    metrics: Arc<Metrics>,
}

/// A source on node-1 whose first lists are `lists` (resource -> List);
/// resources not given list empty. Waits until it is ready.
async fn start(lists: Vec<(&str, Value)>) -> Cluster {
    let (client, server) = ApiServer::start();
    let lists: BTreeMap<&str, Value> = lists.into_iter().collect();
    for (resource, kind) in KINDS {
        match lists.get(resource) {
            Some(list) => server.push(resource, Reply::List(list.clone())),
            None => server.empty(resource, kind),
        }
    }
    let metrics = Arc::new(Metrics::new());
    let mut source = KubeSource::start(client, "node-1", Some(Arc::clone(&metrics)));
    assert!(
        matches!(
            source.snapshot(),
            Err(crate::resolve::SourceError::NotReady { .. })
        ) || source.health.ready(),
        "no view before the first lists"
    );
    tokio::time::timeout(Duration::from_secs(30), source.wait_until_ready())
        .await
        .expect("ready in time")
        .expect("reflectors running");
    Cluster {
        server,
        source,
        metrics,
    }
}

impl Cluster {
    /// The source's inventory once `done` holds (the stream is processed
    /// asynchronously).
    async fn until(&mut self, what: &str, done: impl Fn(&Inventory) -> bool) -> Inventory {
        for _ in 0..2000 {
            if let Ok(inventory) = self.source.snapshot()
                && done(&inventory)
            {
                return inventory;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!(
            "never: {what}; last view: {:#?}; violations: {:?}",
            self.source.snapshot().map(|i| holders(&i)),
            self.server.violations()
        );
    }

    /// Wait until `resource`'s requests number `n`.
    async fn requests(&self, resource: &str, n: usize) {
        for _ in 0..2000 {
            if self.server.seen(resource).len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{resource}: {:?}", self.server.seen(resource));
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// Address -> `namespace/name` of the pod holding it now, over every
/// address the inventory mentions.
fn holders(inventory: &Inventory) -> BTreeMap<IpAddr, String> {
    let resolver = Resolver::new(inventory, |_| None);
    let ips = inventory
        .pods
        .iter()
        .flat_map(|p| p.meta.ips.clone())
        .chain(inventory.leases.iter().map(|l| l.ip))
        .chain(inventory.known_hosts.keys().copied());
    ips.filter_map(|ip| {
        resolver
            .pod_by_ip(ip)
            .map(|p| (ip, format!("{}/{}", p.namespace, p.name)))
    })
    .collect()
}

fn expect_holders(pairs: &[(&str, &str)]) -> BTreeMap<IpAddr, String> {
    pairs
        .iter()
        .map(|(a, p)| (ip(a), (*p).to_owned()))
        .collect()
}

fn policy_names(inventory: &Inventory) -> Vec<String> {
    inventory
        .policies
        .as_ref()
        .expect("the kube source declares the policy set")
        .policies()
        .iter()
        .map(|p| {
            format!(
                "{}/{}",
                p.metadata.namespace.as_deref().unwrap_or_default(),
                p.metadata.name.as_deref().unwrap_or_default()
            )
        })
        .collect()
}

fn modes(inventory: &Inventory) -> BTreeMap<String, String> {
    inventory
        .modes
        .as_ref()
        .expect("the kube source declares modes")
        .iter()
        .map(|(ns, m)| (ns.clone(), m.to_string()))
        .collect()
}

fn pod(base: Value, name: &str, uid: &str, app: &str, ip: &str, network_since: &str) -> Value {
    let mut pod = base;
    pod["metadata"]["name"] = json!(name);
    pod["metadata"]["uid"] = json!(uid);
    pod["metadata"]["labels"]["app"] = json!(app);
    pod["metadata"]["ownerReferences"][0]["name"] = json!(format!("{app}-7d9f8b6c5"));
    pod["status"]["podIP"] = json!(ip);
    pod["status"]["podIPs"] = json!([{"ip": ip}]);
    pod["status"]["conditions"][0]["lastTransitionTime"] = json!(network_since);
    pod
}

fn unix_ns(rfc3339: &str) -> u64 {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .expect("test time");
    u64::try_from(t.unix_timestamp_nanos()).expect("after 1970")
}

#[tokio::test(start_paused = true)]
async fn list_then_watch_follows_the_stream() {
    let mut cluster = start(vec![
        (
            "pods",
            list(
                "Pod",
                "1000",
                vec![
                    fixture!("pod-web"),
                    fixture!("pod-db-remote"),
                    fixture!("pod-kube-proxy"),
                    fixture!("pod-job-done"),
                ],
            ),
        ),
        (
            "namespaces",
            list(
                "Namespace",
                "500",
                vec![fixture!("namespace-shop"), fixture!("namespace-data")],
            ),
        ),
        (
            "services",
            list("Service", "600", vec![fixture!("service-web")]),
        ),
        (
            "endpointslices",
            list(
                "EndpointSlice",
                "200",
                vec![fixture!("endpointslice-kubernetes")],
            ),
        ),
        (
            "networkpolicies",
            list("NetworkPolicy", "700", vec![fixture!("networkpolicy-web")]),
        ),
        (
            "nodes",
            list("Node", "300", vec![fixture!("node-1"), fixture!("node-2")]),
        ),
    ])
    .await;

    let inventory = cluster.source.snapshot().expect("ready");
    // Pods of every node resolve; a hostNetwork pod and a completed Job's
    // pod hold no pod IP.
    assert_eq!(
        holders(&inventory),
        expect_holders(&[
            ("10.181.1.5", "shop/web-7d9f8b6c5-x2k4p"),
            ("10.182.0.7", "data/db-0"),
        ])
    );
    let local: Vec<(&str, bool)> = inventory
        .pods
        .iter()
        .map(|p| (p.meta.name.as_str(), p.local))
        .collect();
    assert_eq!(local, [("db-0", false), ("web-7d9f8b6c5-x2k4p", true)]);
    // Every pod's node, for a relay to know both ends of an edge.
    let nodes: Vec<Option<&str>> = inventory.pods.iter().map(|p| p.node.as_deref()).collect();
    assert_eq!(nodes, [Some("node-2"), Some("node-1")]);
    assert!(inventory.pods.iter().all(|p| p.host_veth.is_none()));
    let web = inventory.pods.iter().find(|p| p.local).expect("web");
    assert_eq!(web.meta.workload.to_string(), "shop/web");
    assert_eq!(web.ports[0].port, 8080);
    assert_eq!(web.ports[0].name.as_deref(), Some("http"));
    // Nodes, hostNetwork pods and the API server are named, not pods.
    assert_eq!(
        inventory.known_hosts,
        BTreeMap::from([
            (ip("10.184.0.10"), "kube-apiserver".to_owned()),
            (ip("10.184.0.11"), "node/node-1".to_owned()),
            (ip("10.184.0.12"), "node/node-2".to_owned()),
        ])
    );
    assert_eq!(inventory.node_ips, [ip("10.184.0.11")]);
    assert_eq!(
        modes(&inventory),
        BTreeMap::from([("data".into(), "audit".into())])
    );
    assert_eq!(inventory.namespaces["shop"]["team"], "storefront");
    assert_eq!(policy_names(&inventory), ["shop/web"]);
    assert_eq!(inventory.services.len(), 1);
    assert_eq!(inventory.services[0].cluster_ips, [ip("10.183.0.20")]);

    // What the stores keep is trimmed.
    let stored = cluster.source.pods.state();
    let web = stored
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("web-7d9f8b6c5-x2k4p"))
        .expect("stored");
    assert!(web.metadata.managed_fields.is_none());
    assert!(web.metadata.annotations.is_none());
    let spec = web.spec.as_ref().expect("spec");
    assert!(spec.volumes.is_none() && spec.tolerations.is_none());
    assert!(spec.containers[0].image.is_none() && spec.containers[0].env.is_none());
    let status = web.status.as_ref().expect("status");
    assert!(status.container_statuses.is_none());
    assert_eq!(status.conditions.as_ref().map(Vec::len), Some(1));
    let node = &cluster.source.nodes.state()[0];
    assert!(node.status.as_ref().is_some_and(|s| s.images.is_none()));
    let ns = &cluster.source.namespaces.state()[0];
    assert!(ns.metadata.annotations.is_none() && ns.metadata.managed_fields.is_none());
    assert!(
        cluster.source.policies.state()[0]
            .metadata
            .annotations
            .is_none()
    );

    // The watch: a pod added on this node, one deleted on the other.
    let cart = pod(
        fixture!("pod-web"),
        "cart-7d9f8b6c5-aaaaa",
        "c4c4c4c4-0000-4000-8000-000000000001",
        "cart",
        "10.181.1.6",
        "2026-11-26T10:10:00Z",
    );
    cluster.server.push(
        "pods",
        Reply::Watch {
            from: "1000".into(),
            events: vec![
                event("ADDED", cart, "1003"),
                event("DELETED", fixture!("pod-db-remote"), "1005"),
            ],
        },
    );
    let inventory = cluster
        .until("cart added, db deleted", |i| {
            holders(i).len() == 2 && holders(i).contains_key(&ip("10.181.1.6"))
        })
        .await;
    assert_eq!(
        holders(&inventory),
        expect_holders(&[
            ("10.181.1.5", "shop/web-7d9f8b6c5-x2k4p"),
            ("10.181.1.6", "shop/cart-7d9f8b6c5-aaaaa"),
        ])
    );
    // The stream ended: the watcher resumes from the last event's version.
    cluster.requests("pods", 3).await;
    let seen = cluster.server.seen("pods");
    assert!(!seen[0].watch, "a list first");
    assert_eq!(
        (seen[2].watch, seen[2].resource_version.as_deref()),
        (true, Some("1005"))
    );

    // The policy set follows additions and deletions exactly.
    cluster.server.push(
        "networkpolicies",
        Reply::Watch {
            from: "700".into(),
            events: vec![
                event("ADDED", fixture!("networkpolicy-default-deny"), "702"),
                event("DELETED", fixture!("networkpolicy-web"), "703"),
            ],
        },
    );
    let inventory = cluster
        .until("default-deny in, web out", |i| {
            policy_names(i) == ["shop/default-deny"]
        })
        .await;
    assert_eq!(policy_names(&inventory), ["shop/default-deny"]);
    assert_eq!(cluster.server.violations(), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn bookmark_resumes_and_gone_relists() {
    let mut cluster = start(vec![(
        "pods",
        list(
            "Pod",
            "1000",
            vec![fixture!("pod-web"), fixture!("pod-db-remote")],
        ),
    )])
    .await;
    // A bookmark moves the resume point; the stream then ends.
    cluster.server.push(
        "pods",
        Reply::Watch {
            from: "1000".into(),
            events: vec![bookmark("v1", "Pod", "1500")],
        },
    );
    // Resumed from the bookmark: the server has compacted past it.
    cluster.server.push(
        "pods",
        Reply::Watch {
            from: "1500".into(),
            events: vec![gone("1500")],
        },
    );
    // The relist: db-0 was deleted and cart created meanwhile.
    let cart = pod(
        fixture!("pod-web"),
        "cart-7d9f8b6c5-bbbbb",
        "c4c4c4c4-0000-4000-8000-000000000002",
        "cart",
        "10.181.1.7",
        "2026-11-26T10:20:00Z",
    );
    cluster.server.push(
        "pods",
        Reply::List(list("Pod", "2000", vec![fixture!("pod-web"), cart])),
    );
    let inventory = cluster
        .until("relisted", |i| holders(i).contains_key(&ip("10.181.1.7")))
        .await;
    assert_eq!(
        holders(&inventory),
        expect_holders(&[
            ("10.181.1.5", "shop/web-7d9f8b6c5-x2k4p"),
            ("10.181.1.7", "shop/cart-7d9f8b6c5-bbbbb"),
        ])
    );
    // db-0's address is free now, and was db-0's before the relist.
    let resolver = Resolver::new(&inventory, |_| None);
    assert!(resolver.pod_by_ip(ip("10.182.0.7")).is_none());
    assert_eq!(
        resolver
            .pod_by_ip_at(ip("10.182.0.7"), unix_ns("2026-11-26T10:00:00Z"))
            .map(|p| p.name.clone())
            .as_deref(),
        Some("db-0")
    );
    cluster.requests("pods", 5).await;
    let seen: Vec<(bool, Option<String>)> = cluster
        .server
        .seen("pods")
        .into_iter()
        .map(|s| (s.watch, s.resource_version))
        .collect();
    assert_eq!(
        seen,
        [
            (false, None),
            (true, Some("1000".into())),
            (true, Some("1500".into())),
            (false, None),
            (true, Some("2000".into())),
        ]
    );
    assert_eq!(cluster.server.violations(), Vec::<String>::new());
    let health = cluster.source.health();
    assert_eq!(health.resources["pods"].errors, 1, "the 410 counted");
    assert_eq!(health.stale_seconds, 0, "healthy again after the relist");
}

#[tokio::test(start_paused = true)]
async fn a_pod_recreated_with_the_same_ip_never_inherits_flows() {
    let mut cluster = start(vec![(
        "pods",
        list(
            "Pod",
            "1000",
            vec![fixture!("pod-web"), fixture!("pod-db-remote")],
        ),
    )])
    .await;
    // web is deleted; cart is created and gets web's address.
    let cart = pod(
        fixture!("pod-web"),
        "cart-7d9f8b6c5-ccccc",
        "c4c4c4c4-0000-4000-8000-000000000003",
        "cart",
        "10.181.1.5",
        "2026-11-26T10:30:00Z",
    );
    cluster.server.push(
        "pods",
        Reply::Watch {
            from: "1000".into(),
            events: vec![
                event("DELETED", fixture!("pod-web"), "1001"),
                event("ADDED", cart, "1002"),
            ],
        },
    );
    let inventory = cluster
        .until("cart holds 10.181.1.5", |i| {
            holders(i).get(&ip("10.181.1.5")).map(String::as_str)
                == Some("shop/cart-7d9f8b6c5-ccccc")
        })
        .await;
    let resolver = Resolver::new(&inventory, |_| None);
    let at = |t: &str| {
        resolver
            .pod_by_ip_at(ip("10.181.1.5"), unix_ns(t))
            .map(|p| p.name.clone())
    };
    assert_eq!(
        at("2026-11-26T10:15:00Z").as_deref(),
        Some("web-7d9f8b6c5-x2k4p")
    );
    assert_eq!(
        at("2026-11-26T10:29:59Z").as_deref(),
        Some("web-7d9f8b6c5-x2k4p")
    );
    assert_eq!(
        at("2026-11-26T10:30:01Z").as_deref(),
        Some("cart-7d9f8b6c5-ccccc")
    );

    // Flows from db-0 (remote) to the address, seen by db's node: before
    // the switch they are web's, after it cart's.
    let aggregator = Aggregator::new(Options::default(), Arc::new(Metrics::new()));
    let flow = |first_seen: &str, port: u16| Observation {
        ifindex: 0,
        local: SocketAddr::new(ip("10.182.0.7"), 40_000),
        remote: SocketAddr::new(ip("10.181.1.5"), port),
        first_seen: unix_ns(first_seen),
        last_seen: unix_ns(first_seen),
        ..crate::aggregator::testing::obs(0, "10.182.0.7:1", "10.181.1.5:1", Initiator::Local)
    };
    aggregator.fold(&flow("2026-11-26T10:20:00Z", 8080), &resolver);
    aggregator.fold(&flow("2026-11-26T10:31:00Z", 7070), &resolver);
    let edges: Vec<String> = aggregator
        .graph()
        .edges
        .keys()
        .map(|k| format!("{} -> {} {}", k.source, k.target, k.port))
        .collect();
    assert_eq!(
        edges,
        ["data/db -> shop/cart 7070", "data/db -> shop/web 8080"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_namespace_relabelled_to_enforce_and_an_invalid_label() {
    let mut cluster = start(vec![(
        "namespaces",
        list(
            "Namespace",
            "500",
            vec![fixture!("namespace-shop"), fixture!("namespace-data")],
        ),
    )])
    .await;
    let mut shop = fixture!("namespace-shop");
    shop["metadata"]["labels"]["weir.dev/mode"] = json!("enforce");
    let mut data = fixture!("namespace-data");
    data["metadata"]["labels"]["weir.dev/mode"] = json!("enforcing");
    cluster.server.push(
        "namespaces",
        Reply::Watch {
            from: "500".into(),
            events: vec![event("MODIFIED", shop.clone(), "510")],
        },
    );
    let inventory = cluster
        .until("shop enforced", |i| {
            modes(i).get("shop").map(String::as_str) == Some("enforce")
        })
        .await;
    assert_eq!(
        modes(&inventory),
        BTreeMap::from([
            ("data".into(), "audit".into()),
            ("shop".into(), "enforce".into())
        ])
    );
    assert!(inventory.warnings.is_empty());
    // An invalid value: a warning naming namespace and value, and the
    // namespace keeps its mode.
    cluster.server.push(
        "namespaces",
        Reply::Watch {
            from: "510".into(),
            events: vec![event("MODIFIED", data, "511")],
        },
    );
    let inventory = cluster.until("warned", |i| !i.warnings.is_empty()).await;
    assert_eq!(
        inventory.warnings,
        [
            "namespace data: label weir.dev/mode=\"enforcing\" is not observe, audit or enforce; \
             the namespace keeps mode audit"
        ]
    );
    assert_eq!(modes(&inventory)["data"], "audit");
    // The label removed: back to the default mode.
    shop["metadata"]["labels"]
        .as_object_mut()
        .expect("labels")
        .remove("weir.dev/mode");
    cluster.server.push(
        "namespaces",
        Reply::Watch {
            from: "511".into(),
            events: vec![event("MODIFIED", shop, "512")],
        },
    );
    let inventory = cluster
        .until("shop unlabelled", |i| !modes(i).contains_key("shop"))
        .await;
    assert_eq!(
        modes(&inventory),
        BTreeMap::from([("data".into(), "audit".into())])
    );
    assert_eq!(cluster.server.violations(), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn errors_disconnects_and_broken_objects_keep_the_view() {
    let mut cluster = start(vec![
        ("pods", list("Pod", "1000", vec![fixture!("pod-web")])),
        (
            "networkpolicies",
            list("NetworkPolicy", "700", vec![fixture!("networkpolicy-web")]),
        ),
    ])
    .await;
    let before = cluster.source.snapshot().expect("ready");

    // The watch request is refused, then the connection breaks.
    cluster.server.push(
        "pods",
        Reply::Status(
            500,
            status(500, "InternalError", "etcdserver: request timed out"),
        ),
    );
    cluster.server.push("pods", Reply::Disconnect);
    // A watch event whose object lacks a required field (a Pod spec
    // without containers) and one without metadata at all.
    let mut broken = fixture!("pod-web");
    broken["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("containers");
    cluster.server.push(
        "pods",
        Reply::Watch {
            from: "1000".into(),
            events: vec![
                event("MODIFIED", broken, "1001"),
                json!({"type": "MODIFIED", "object": {"kind": "Pod", "apiVersion": "v1"}}),
            ],
        },
    );
    // The policies' relist after a 410 has an item that does not decode:
    // the whole list is refused, the previous policy set stays.
    let mut bad_policy = fixture!("networkpolicy-default-deny");
    bad_policy["spec"]["podSelector"] = json!("everything");
    cluster.server.push(
        "networkpolicies",
        Reply::Watch {
            from: "700".into(),
            events: vec![gone("700")],
        },
    );
    cluster.server.push(
        "networkpolicies",
        Reply::List(list("NetworkPolicy", "800", vec![bad_policy])),
    );
    for _ in 0..2000 {
        if cluster.server.drained("pods") && cluster.server.drained("networkpolicies") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(cluster.server.drained("pods") && cluster.server.drained("networkpolicies"));
    // Let the watcher take the last items in.
    cluster.requests("networkpolicies", 4).await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    // Staleness counts in wall-clock seconds.
    std::thread::sleep(Duration::from_millis(1100));
    let after = cluster.source.snapshot().expect("still a view");
    assert_eq!(holders(&after), holders(&before));
    assert_eq!(policy_names(&after), ["shop/web"]);
    let health = after.health.clone().expect("kube health");
    let pods = &health.resources["pods"];
    assert!(
        pods.errors >= 3,
        "500, disconnect, undecodable objects: {pods:?}"
    );
    let policies = &health.resources["networkpolicies"];
    assert!(policies.errors >= 2, "410 and the bad relist: {policies:?}");
    assert!(policies.stale_seconds >= 1, "{policies:?}");
    assert!(policies.last_error.is_some());
    assert!(health.stale_seconds >= 1);
    let metrics = cluster.metrics.encode();
    assert!(
        metrics.contains("weir_kube_watch_errors_total{resource=\"pods\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("weir_kube_stale_seconds{resource=\"networkpolicies\"}"));

    // /healthz says so.
    let resolver = Resolver::new(&after, |_| None);
    assert_eq!(resolver.source_health(), Some(&health));

    // A good relist heals it.
    cluster.server.push(
        "networkpolicies",
        Reply::List(list(
            "NetworkPolicy",
            "900",
            vec![fixture!("networkpolicy-default-deny")],
        )),
    );
    let healed = cluster
        .until("relisted", |i| policy_names(i) == ["shop/default-deny"])
        .await;
    let health = healed.health.expect("kube health");
    assert_eq!(health.resources["networkpolicies"].stale_seconds, 0);
}

#[test]
fn trimming_keeps_a_fraction_of_each_object() {
    use k8s_openapi::api::core::v1::{Node, Pod};
    // Serialized size, as a stand-in for what a stored object holds.
    fn size<T: serde::Serialize>(object: &T) -> usize {
        serde_json::to_vec(object).map_or(0, |v| v.len())
    }
    let mut pod: Pod = serde_json::from_value(fixture!("pod-web")).expect("pod");
    let full = size(&pod);
    super::trim::pod(&mut pod);
    let trimmed = size(&pod);
    assert!(trimmed * 3 < full, "pod: {trimmed} of {full} bytes");
    let mut node: Node = serde_json::from_value(fixture!("node-1")).expect("node");
    let full = size(&node);
    super::trim::node(&mut node);
    let trimmed = size(&node);
    assert!(trimmed * 4 < full, "node: {trimmed} of {full} bytes");
    // What the resolver reads survives.
    assert_eq!(
        super::convert::network_since(&pod),
        Some(unix_ns("2026-11-26T10:00:02Z"))
    );
}

/// The guard's annotations on a Namespace survive the trim and become its
/// settings; a value that does not parse is a warning naming the
/// namespace and the value, and the default is used.
#[test]
fn guard_annotations_set_the_namespaces_guard() {
    use k8s_openapi::api::core::v1::Namespace;

    let ns = |name: &str, annotations: Value| -> Arc<Namespace> {
        let mut ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": annotations}
        }))
        .unwrap();
        super::trim::namespace(&mut ns);
        Arc::new(ns)
    };
    let objects = super::convert::Objects {
        namespaces: vec![
            ns(
                "shop",
                json!({"weir.dev/guard-window": "1h", "weir.dev/guard-max-drops": "2",
                       "weir.dev/guard-skip": "2026-12-07T09:40:00Z",
                       "kubectl.kubernetes.io/last-applied-configuration": "{}"}),
            ),
            ns(
                "blog",
                json!({"weir.dev/guard-window": "soon", "weir.dev/guard-skip": "now"}),
            ),
            ns("data", json!({"weir.dev/guard-window": "0"})),
        ],
        ..super::convert::Objects::default()
    };
    assert_eq!(
        objects.namespaces[0]
            .metadata
            .annotations
            .as_ref()
            .unwrap()
            .len(),
        3,
        "only weir's annotations are kept"
    );
    let inventory = super::convert::inventory(&objects, "node-1", &mut BTreeMap::new());
    let resolver = Resolver::new(&inventory, |_| None);
    assert_eq!(
        resolver.guard_settings("shop"),
        crate::guard::Settings {
            window: Duration::from_secs(3600),
            max_drops: 2,
            skip_at: Some(unix_ns("2026-12-07T09:40:00Z")),
        }
    );
    assert_eq!(resolver.guard_settings("data").window, Duration::ZERO);
    assert_eq!(
        resolver.guard_settings("blog"),
        crate::guard::Settings::default()
    );
    assert_eq!(
        resolver.guard_settings("elsewhere"),
        crate::guard::Settings::default()
    );
    assert_eq!(
        inventory.warnings,
        [
            "namespace blog: annotation weir.dev/guard-window=\"soon\" is not a duration \
          (15m, 1h, 0 for none); using the default 15m",
            "namespace blog: annotation weir.dev/guard-skip=\"now\" is not an RFC 3339 time; \
             the next flip to enforce is guarded",
        ]
    );
}
