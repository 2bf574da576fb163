//! Discovery's conversion on API objects, and its watches against a
//! scripted API server answering real Kubernetes JSON.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::api::{apps::v1::DaemonSet, discovery::v1::EndpointSlice};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{AgentEndpoint, AgentSet, KubeDiscovery, agent_set};
use crate::resolve::kube::{
    health::Health,
    mock::{ApiServer, Reply, event, gone, list, status},
};

/// One endpoint: `(node, address, ready, terminating)`.
type Ep<'a> = (Option<&'a str>, &'a str, bool, bool);

/// An EndpointSlice of the Service `weir/weir-agents`, as the
/// EndpointSlice controller writes it (with the fields discovery drops).
fn slice(name: &str, endpoints: &[Ep<'_>], relay_port: Option<u16>) -> Value {
    let address_type = if endpoints.iter().any(|(_, a, _, _)| a.contains(':')) {
        "IPv6"
    } else {
        "IPv4"
    };
    let ports = match relay_port {
        Some(port) => json!([{"name": "relay", "port": port, "protocol": "TCP"},
            {"name": "http", "port": 9090, "protocol": "TCP"}]),
        None => json!([{"name": "http", "port": 9090, "protocol": "TCP"}]),
    };
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": name, "namespace": "weir", "uid": format!("uid-{name}"),
            "resourceVersion": "1", "generateName": "weir-agents-",
            "labels": {"kubernetes.io/service-name": "weir-agents",
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "weir-agents",
                "uid": "svc-uid", "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                "apiVersion": "discovery.k8s.io/v1"}],
        },
        "addressType": address_type,
        "endpoints": endpoints.iter().map(|(node, address, ready, terminating)| {
            let mut e = json!({
                "addresses": [address],
                "conditions": {"ready": ready, "serving": *ready || *terminating, "terminating": terminating},
                "targetRef": {"kind": "Pod", "namespace": "weir", "name": format!("weir-agent-{address}")},
            });
            if let Some(node) = node {
                e["nodeName"] = json!(node);
                e["zone"] = json!("zone-a");
            }
            e
        }).collect::<Vec<_>>(),
        "ports": ports,
    })
}

/// The DaemonSet `weir/weir-agent` scheduling `desired` pods.
fn daemonset(desired: u32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "weir-agent", "namespace": "weir", "uid": "ds-uid", "resourceVersion": "1",
            "annotations": {"deprecated.daemonset.template.generation": "1"}},
        "spec": {
            "selector": {"matchLabels": {"app": "weir"}},
            "template": {"metadata": {"labels": {"app": "weir"}},
                "spec": {"containers": [{"name": "agent", "image": "weir:1"}]}},
        },
        "status": {"currentNumberScheduled": desired, "desiredNumberScheduled": desired,
            "numberMisscheduled": 0, "numberReady": desired},
    })
}

fn typed<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("a valid object")
}

fn set(slices: &[Value], ds: Option<Value>) -> AgentSet {
    let slices: Vec<EndpointSlice> = slices.iter().cloned().map(typed).collect();
    let ds: Option<DaemonSet> = ds.map(typed);
    agent_set(&slices, ds.as_ref(), 4244)
}

fn agent(node: &str, url: &str, ready: bool, terminating: bool) -> (String, AgentEndpoint) {
    (
        node.to_owned(),
        AgentEndpoint {
            node: node.to_owned(),
            url: url.to_owned(),
            ready,
            terminating,
        },
    )
}

#[test]
fn one_agent_per_endpoint_with_its_node_and_state() {
    let got = set(
        &[slice(
            "weir-agents-x1",
            &[
                (Some("a"), "10.151.0.2", true, false),
                (Some("b"), "10.151.0.3", false, false),
                (Some("c"), "10.151.0.4", false, true),
                (None, "10.151.0.9", true, false),
            ],
            None,
        )],
        Some(daemonset(4)),
    );
    assert_eq!(
        got,
        AgentSet {
            listed: true,
            expected: Some(4),
            agents: BTreeMap::from([
                agent("a", "https://10.151.0.2:4244", true, false),
                agent("b", "https://10.151.0.3:4244", false, false),
                agent("c", "https://10.151.0.4:4244", false, true),
            ]),
        }
    );
    assert_eq!(got.expected(), 4);
}

#[test]
fn absent_conditions_mean_ready_and_not_terminating() {
    // The API: a nil `ready` is true, a nil `terminating` false.
    let mut raw = slice("s", &[(Some("a"), "10.151.0.2", false, true)], None);
    raw["endpoints"][0]
        .as_object_mut()
        .expect("endpoint")
        .remove("conditions");
    let got = set(&[raw], None);
    assert_eq!(
        got.agents,
        BTreeMap::from([agent("a", "https://10.151.0.2:4244", true, false)])
    );
    // No DaemonSet: as many expected as discovered.
    assert_eq!((got.expected, got.expected()), (None, 1));
}

#[test]
fn ipv6_addresses_are_bracketed_and_the_relay_port_is_the_slices() {
    let got = set(
        &[
            slice("v6", &[(Some("a"), "::1", true, false)], None),
            slice(
                "named",
                &[(Some("b"), "10.151.0.3", true, false)],
                Some(14244),
            ),
            slice(
                "long",
                &[(Some("c"), "fd00:0:0::0:3", true, false)],
                Some(9443),
            ),
        ],
        None,
    );
    let urls: Vec<(&str, &str)> = got
        .agents
        .values()
        .map(|a| (a.node.as_str(), a.url.as_str()))
        .collect();
    assert_eq!(
        urls,
        [
            ("a", "https://[::1]:4244"),
            ("b", "https://10.151.0.3:14244"),
            ("c", "https://[fd00::3]:9443"),
        ]
    );
}

#[test]
fn slices_are_merged_and_a_node_in_two_keeps_its_best_endpoint() {
    let one = slice(
        "weir-agents-1",
        &[
            (Some("a"), "10.151.0.2", true, false),
            (Some("b"), "10.151.0.3", false, false),
        ],
        None,
    );
    let two = slice(
        "weir-agents-2",
        &[
            (Some("c"), "10.152.0.2", true, false),
            // b moved here, ready: it wins over its old endpoint.
            (Some("b"), "10.152.0.3", true, false),
            // a's old pod, terminating: the ready one wins.
            (Some("a"), "10.152.0.4", false, true),
        ],
        None,
    );
    let expected = BTreeMap::from([
        agent("a", "https://10.151.0.2:4244", true, false),
        agent("b", "https://10.152.0.3:4244", true, false),
        agent("c", "https://10.152.0.2:4244", true, false),
    ]);
    assert_eq!(set(&[one.clone(), two.clone()], None).agents, expected);
    assert_eq!(set(&[two, one], None).agents, expected, "in either order");

    // Equally good endpoints: the same one whatever the order.
    let x = slice("x", &[(Some("a"), "10.151.0.7", true, false)], None);
    let y = slice("y", &[(Some("a"), "10.151.0.5", true, false)], None);
    let first = set(&[x.clone(), y.clone()], None);
    assert_eq!(first, set(&[y, x], None));
    assert_eq!(first.agents["a"].url, "https://10.151.0.5:4244");
    // Not ready but not terminating beats terminating.
    let old = slice("old", &[(Some("a"), "10.151.0.5", false, true)], None);
    let new = slice("new", &[(Some("a"), "10.151.0.8", false, false)], None);
    assert_eq!(
        set(&[old, new], None).agents["a"].url,
        "https://10.151.0.8:4244"
    );
}

#[test]
fn a_daemonset_without_status_expects_nothing_yet() {
    let mut ds = daemonset(3);
    ds.as_object_mut().expect("ds").remove("status");
    let got = set(
        &[slice("s", &[(Some("a"), "10.151.0.2", true, false)], None)],
        Some(ds),
    );
    assert_eq!(got.expected, None);
}

#[test]
fn trimming_keeps_what_discovery_reads() {
    let mut slice: EndpointSlice = typed(slice(
        "s",
        &[(Some("a"), "10.151.0.2", false, true)],
        Some(4244),
    ));
    let before = agent_set([&slice], None, 1);
    super::trim_slice(&mut slice);
    assert_eq!(agent_set([&slice], None, 1), before);
    assert!(slice.metadata.managed_fields.is_none() && slice.metadata.labels.is_none());
    assert!(slice.endpoints[0].target_ref.is_none() && slice.endpoints[0].zone.is_none());
    let mut ds: DaemonSet = typed(daemonset(3));
    super::trim_daemonset(&mut ds);
    assert!(ds.spec.is_none() && ds.metadata.annotations.is_none());
    assert_eq!(agent_set([], Some(&ds), 1).expected, Some(3));
}

// The watches.

struct Watching {
    server: ApiServer,
    rx: watch::Receiver<AgentSet>,
    health: Arc<Health>,
    task: tokio::task::JoinHandle<Result<(), super::DiscoveryError>>,
}

/// Discovery of `weir/weir-agents` (and `weir/weir-agent` when `daemonset`)
/// on a scripted server; its first replies are queued before it starts.
fn start(daemonset: bool, first: Vec<(&str, Reply)>) -> Watching {
    let (client, server) = ApiServer::start();
    for (resource, reply) in first {
        server.push(resource, reply);
    }
    let discovery = KubeDiscovery::new(
        ("weir".into(), "weir-agents".into()),
        daemonset.then(|| ("weir".into(), "weir-agent".into())),
        4244,
    );
    let health = discovery.health();
    let (tx, rx) = watch::channel(AgentSet::default());
    let task = tokio::spawn(discovery.run(client, tx));
    Watching {
        server,
        rx,
        health,
        task,
    }
}

impl Watching {
    /// The next published set.
    async fn next(&mut self, what: &str) -> AgentSet {
        match tokio::time::timeout(Duration::from_secs(60), self.rx.changed()).await {
            Ok(Ok(())) => self.rx.borrow_and_update().clone(),
            other => panic!(
                "no new set ({what}): {other:?}; last {:?}; violations {:?}",
                *self.rx.borrow(),
                self.server.violations()
            ),
        }
    }

    /// The published set once `done` holds.
    async fn until(&mut self, what: &str, done: impl Fn(&AgentSet) -> bool) -> AgentSet {
        loop {
            let set = self.rx.borrow_and_update().clone();
            if done(&set) {
                return set;
            }
            self.next(what).await;
        }
    }

    /// Let every task run until all wait (the clock is paused: sleeping
    /// returns only once nothing else can run).
    async fn settle(&self) {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

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

fn slices(rv: &str, items: Vec<Value>) -> Reply {
    Reply::List(list("EndpointSlice", rv, items))
}

fn watch_from(from: &str, events: Vec<Value>) -> Reply {
    Reply::Watch {
        from: from.into(),
        events,
    }
}

#[tokio::test(start_paused = true)]
async fn readiness_and_the_daemonset_status_follow_the_watches() {
    let a = (Some("a"), "10.151.0.2", true, false);
    let b = (Some("b"), "10.152.0.2", true, false);
    let mut w = start(
        true,
        vec![
            (
                "endpointslices",
                slices("10", vec![slice("s1", &[a, b], None)]),
            ),
            (
                "daemonsets",
                Reply::List(list("DaemonSet", "20", vec![daemonset(2)])),
            ),
        ],
    );
    let first = w.next("the first lists").await;
    assert_eq!(
        first,
        AgentSet {
            listed: true,
            expected: Some(2),
            agents: BTreeMap::from([
                agent("a", "https://10.151.0.2:4244", true, false),
                agent("b", "https://10.152.0.2:4244", true, false),
            ]),
        }
    );
    // Only the Service's slices in its namespace, only the one DaemonSet.
    let seen = w.server.seen("endpointslices");
    assert_eq!(
        seen[0].path,
        "/apis/discovery.k8s.io/v1/namespaces/weir/endpointslices"
    );
    assert!(
        seen[0]
            .query
            .contains("labelSelector=kubernetes.io%2Fservice-name%3Dweir-agents"),
        "{}",
        seen[0].query
    );
    let seen = w.server.seen("daemonsets");
    assert_eq!(seen[0].path, "/apis/apps/v1/namespaces/weir/daemonsets");
    assert!(
        seen[0]
            .query
            .contains("fieldSelector=metadata.name%3Dweir-agent"),
        "{}",
        seen[0].query
    );

    // b's agent fails its readiness probe.
    let b_down = (Some("b"), "10.152.0.2", false, false);
    w.server.push(
        "endpointslices",
        watch_from(
            "10",
            vec![event("MODIFIED", slice("s1", &[a, b_down], None), "11")],
        ),
    );
    let set = w.next("b not ready").await;
    assert!(!set.agents["b"].ready && set.agents["a"].ready);
    assert_eq!(set.expected, Some(2));

    // A third node joins: the DaemonSet schedules one more agent.
    w.server.push(
        "daemonsets",
        watch_from("20", vec![event("MODIFIED", daemonset(3), "21")]),
    );
    let set = w.next("three expected").await;
    assert_eq!((set.expected, set.agents.len()), (Some(3), 2));

    // A change discovery does not read (a label) publishes nothing.
    let mut relabelled = slice("s1", &[a, b_down], None);
    relabelled["metadata"]["labels"]["team"] = json!("net");
    w.server.push(
        "endpointslices",
        watch_from("11", vec![event("MODIFIED", relabelled, "12")]),
    );
    w.requests("endpointslices", 4).await;
    w.settle().await;
    assert!(
        !w.rx.has_changed().expect("discovery runs"),
        "republished an unchanged set: {:?}",
        *w.rx.borrow()
    );

    // The DaemonSet deleted: no count to expect any more.
    w.server.push(
        "daemonsets",
        watch_from("21", vec![event("DELETED", daemonset(3), "22")]),
    );
    let set = w.next("no DaemonSet").await;
    assert_eq!((set.expected, set.expected()), (None, 2));
    assert_eq!(w.server.violations(), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_moving_between_slices_and_a_relist_that_missed_a_delete() {
    let a = (Some("a"), "10.151.0.2", true, false);
    let b = (Some("b"), "10.152.0.2", true, false);
    let c = (Some("c"), "10.153.0.2", true, false);
    let a_moved = (Some("a"), "10.151.0.9", true, false);
    let mut w = start(
        false,
        vec![(
            "endpointslices",
            slices(
                "10",
                vec![slice("s1", &[a, b], None), slice("s2", &[c], None)],
            ),
        )],
    );
    let first = w.next("the first list").await;
    assert_eq!(first.agents.len(), 3);
    assert_eq!(first.expected, None);
    assert_eq!(
        w.server.seen("daemonsets"),
        vec![],
        "no DaemonSet asked for"
    );

    // The controller moves a's new endpoint to s2, then drops a from s1.
    w.server.push(
        "endpointslices",
        watch_from(
            "10",
            vec![
                event("MODIFIED", slice("s2", &[c, a_moved], None), "11"),
                event("MODIFIED", slice("s1", &[b], None), "12"),
            ],
        ),
    );
    let moved = w
        .until("a in s2", |s| {
            s.agents.get("a").map(|a| a.url.as_str()) == Some("https://10.151.0.9:4244")
        })
        .await;
    assert_eq!(
        moved.agents.keys().collect::<Vec<_>>(),
        ["a", "b", "c"],
        "{moved:?}"
    );

    // The watch expires; meanwhile s1 was deleted, and the relist is all
    // that says so.
    w.server
        .push("endpointslices", watch_from("12", vec![gone("12")]));
    w.server.push(
        "endpointslices",
        slices("30", vec![slice("s2", &[c, a_moved], None)]),
    );
    let relisted = w.until("b gone", |s| !s.agents.contains_key("b")).await;
    assert_eq!(
        relisted.agents,
        BTreeMap::from([
            agent("a", "https://10.151.0.9:4244", true, false),
            agent("c", "https://10.153.0.2:4244", true, false),
        ])
    );
    let health = w.health.report(super::now_s());
    let slices_health = &health.resources["endpointslices"];
    assert_eq!(slices_health.errors, 1, "the 410");
    assert_eq!(slices_health.last_error, None, "healthy after the relist");
    assert_eq!(w.server.violations(), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn a_refused_list_is_reported_and_nothing_is_published_until_a_list() {
    let mut w = start(
        true,
        vec![
            (
                "endpointslices",
                Reply::Status(
                    403,
                    status(
                        403,
                        "Forbidden",
                        "endpointslices.discovery.k8s.io is forbidden: User \"system:serviceaccount:weir:weir-relay\" cannot list resource \"endpointslices\"",
                    ),
                ),
            ),
            (
                "daemonsets",
                Reply::List(list("DaemonSet", "20", vec![daemonset(2)])),
            ),
        ],
    );
    w.requests("endpointslices", 2).await;
    w.settle().await;
    assert!(
        !w.rx.has_changed().expect("discovery runs"),
        "an empty view was published before the slices were listed"
    );
    assert!(!w.rx.borrow().listed);
    assert_eq!(w.health.waiting_for(), ["endpointslices"]);
    let report = w.health.report(super::now_s());
    let slices_health = &report.resources["endpointslices"];
    assert_eq!(slices_health.errors, 1);
    assert!(
        slices_health
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("forbidden")),
        "{slices_health:?}"
    );

    // The retry (after the backoff) lists.
    w.server.push(
        "endpointslices",
        slices(
            "10",
            vec![slice("s1", &[(Some("a"), "10.151.0.2", true, false)], None)],
        ),
    );
    let set = w.next("listed").await;
    assert_eq!((set.agents.len(), set.expected), (1, Some(2)));
    assert!(w.health.ready());
    assert_eq!(
        w.health.report(super::now_s()).resources["endpointslices"].last_error,
        None
    );

    // Discovery ends with its last receiver.
    drop(w.rx);
    let ended = tokio::time::timeout(Duration::from_secs(60), w.task)
        .await
        .expect("discovery stops")
        .expect("not panicked");
    assert!(ended.is_ok(), "{ended:?}");
}
