//! The relay's agent discovery over HTTP against the fake API server, as
//! the two-node test and a cluster use it: kube-rs's real requests (label
//! and field selectors, the apps/v1 and discovery.k8s.io/v1 paths) pick
//! the agents' Service's EndpointSlice and their DaemonSet out of others,
//! and the watches carry readiness and the DaemonSet's count.

use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::watch;
use weir_agent::relay::discovery::{AgentSet, kube::KubeDiscovery};
use weir_integration_tests::fake_apiserver::{FakeApiServer, agents_endpointslice, daemonset};

async fn client(api: &FakeApiServer) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(api.kubeconfig()).expect("the fake kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("a kube config");
    kube::Client::try_from(config).expect("a kube client")
}

/// The published set once `done` holds.
async fn until(
    rx: &mut watch::Receiver<AgentSet>,
    what: &str,
    done: impl Fn(&AgentSet) -> bool,
) -> AgentSet {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let set = rx.borrow_and_update().clone();
        if done(&set) {
            return set;
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            other => panic!("never: {what} ({other:?}); last {set:?}"),
        }
    }
}

#[tokio::test]
async fn discovery_sees_the_agents_service_and_daemonset_only() {
    let api = FakeApiServer::start();
    api.apply(
        "ADDED",
        agents_endpointslice(
            "weir/weir-agents",
            &[("a", "10.151.0.2", true), ("b", "10.152.0.2", false)],
        ),
    );
    // Another Service's slice in the namespace, the same Service's name in
    // another namespace, another DaemonSet: none of them count.
    api.apply(
        "ADDED",
        agents_endpointslice("weir/weir-ui", &[("c", "10.153.0.2", true)]),
    );
    api.apply(
        "ADDED",
        agents_endpointslice("other/weir-agents", &[("d", "10.154.0.2", true)]),
    );
    api.apply("ADDED", daemonset("weir/weir-agent", 2));
    api.apply("ADDED", daemonset("weir/weir-ui", 7));

    let mut rx = KubeDiscovery::new(
        ("weir".into(), "weir-agents".into()),
        Some(("weir".into(), "weir-agent".into())),
        4244,
    )
    .spawn(client(&api).await);
    let set = until(&mut rx, "the first lists", |s| s.listed).await;
    assert_eq!(set.expected, Some(2));
    let agents: Vec<(&str, &str, bool)> = set
        .agents
        .values()
        .map(|a| (a.node.as_str(), a.url.as_str(), a.ready))
        .collect();
    assert_eq!(
        agents,
        [
            ("a", "https://10.151.0.2:4244", true),
            ("b", "https://10.152.0.2:4244", false),
        ]
    );

    // b turns ready; a third node joins, its agent not yet up.
    api.apply(
        "MODIFIED",
        agents_endpointslice(
            "weir/weir-agents",
            &[("a", "10.151.0.2", true), ("b", "10.152.0.2", true)],
        ),
    );
    let set = until(&mut rx, "b ready", |s| {
        s.agents.get("b").is_some_and(|b| b.ready)
    })
    .await;
    assert_eq!(set.agents.len(), 2);
    api.apply("MODIFIED", daemonset("weir/weir-agent", 3));
    api.apply("MODIFIED", daemonset("weir/weir-ui", 9));
    let set = until(&mut rx, "three expected", |s| s.expected == Some(3)).await;
    assert_eq!(set.expected(), 3);

    // The agents' slice goes (the Service deleted): no agent left.
    api.apply("DELETED", agents_endpointslice("weir/weir-agents", &[]));
    until(&mut rx, "no agents", |s| s.agents.is_empty()).await;
    assert!(api.watches("endpointslices") >= 1 && api.watches("daemonsets") >= 1);

    // Discovery ends with its last receiver, closing its watches.
    drop(rx);
    for _ in 0..200 {
        if api.open_watches("endpointslices") + api.open_watches("daemonsets") == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("discovery still watches with no one listening");
}
