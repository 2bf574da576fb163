use std::collections::BTreeMap;

use weir_ebpf::abi;
use weir_generator::{
    cluster::{Cluster, ClusterPod},
    model::{PodMeta, WorkloadKind, WorkloadRef},
};

use super::{entries::FakeMaps, *};

fn pod(ns: &str, app: &str, ip: &str) -> ClusterPod {
    ClusterPod {
        meta: PodMeta {
            namespace: ns.to_owned(),
            name: format!("{app}-0"),
            labels: BTreeMap::from([("app".to_owned(), app.to_owned())]),
            workload: WorkloadRef::new(ns, WorkloadKind::Deployment, app),
            ips: vec![ip.parse().unwrap()],
        },
        ports: Vec::new(),
    }
}

fn node() -> Arc<NodeView> {
    let cluster = Cluster {
        namespaces: ["shop", "data"]
            .into_iter()
            .map(|ns| {
                (
                    ns.to_owned(),
                    BTreeMap::from([("kubernetes.io/metadata.name".to_owned(), ns.to_owned())]),
                )
            })
            .collect(),
        pods: vec![
            pod("shop", "web", "10.0.0.1"),
            pod("shop", "cart", "10.0.0.2"),
            pod("data", "store", "10.0.0.3"),
        ],
        services: Vec::new(),
    };
    Arc::new(NodeView {
        cluster: Arc::new(cluster),
        local: BTreeMap::from([
            (PodKey::new("shop", "web-0"), 11),
            (PodKey::new("shop", "cart-0"), 12),
            (PodKey::new("data", "store-0"), 13),
        ]),
        node_ips: vec!["10.0.0.254".parse().unwrap()],
        ..NodeView::default()
    })
}

fn policy(yaml: &str) -> NetworkPolicy {
    serde_yaml::from_str(yaml).unwrap()
}

const STORE_FROM_CART: &str = "
metadata: {name: store, namespace: data}
spec:
  podSelector: {matchLabels: {app: store}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}
      podSelector: {matchLabels: {app: cart}}
    ports: [{port: 6379, protocol: TCP}]
";

fn enforcer(dir: &std::path::Path, maps: FakeMaps) -> Enforcer<FakeMaps> {
    Enforcer::new(
        maps,
        DesiredFile::in_dir(dir),
        Mode::Observe,
        &BTreeMap::new(),
    )
    .unwrap()
}

fn apply(yaml: &[&str]) -> Change {
    Change::Apply {
        policies: yaml.iter().map(|y| policy(y)).collect(),
        replace: BTreeSet::new(),
    }
}

#[test]
fn nothing_is_written_before_the_node_is_known() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = enforcer(dir.path(), FakeMaps::default());
    assert!(matches!(
        e.change(apply(&[STORE_FROM_CART])),
        Err(EnforceError::NotReady)
    ));
    assert!(e.maps.log.is_empty());
    e.set_node(node()).unwrap();
    let endpoints = &e.maps.entries.endpoints;
    assert_eq!(endpoints.len(), 3, "every local pod is an endpoint");
    assert!(endpoints.values().all(|ep| ep.mode == abi::MODE_OBSERVE));
}

#[test]
fn policies_and_modes_are_compiled_applied_saved_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = enforcer(dir.path(), FakeMaps::default());
    e.set_node(node()).unwrap();
    e.change(apply(&[STORE_FROM_CART])).unwrap();
    let outcome = e
        .change(Change::SetMode {
            namespace: "data".to_owned(),
            mode: Mode::Enforce,
        })
        .unwrap();
    assert!(outcome.writes > 0);
    let store = e.maps.entries.endpoints[&13];
    assert_eq!(store.mode, abi::MODE_ENFORCE);
    assert_ne!(store.flags & abi::EP_ISOLATED_INGRESS, 0);
    assert_eq!(e.maps.entries.endpoints[&11].mode, abi::MODE_OBSERVE);
    assert!(
        !e.maps.entries.exact.is_empty() && e.maps.entries.policy.is_empty(),
        "a rule of one port goes to POLICY_EXACT"
    );
    assert_eq!(
        e.explain().policies(13, CheckedDirection::Ingress),
        ["data/store"]
    );
    assert!(
        e.explain()
            .policies(11, CheckedDirection::Ingress)
            .is_empty()
    );

    // A new agent on the same state directory and the same (pinned) maps
    // compiles the same content: nothing to write.
    let maps = FakeMaps {
        entries: e.maps.entries.clone(),
        ..FakeMaps::default()
    };
    let mut again = enforcer(dir.path(), maps);
    assert_eq!(again.view().policies.len(), 1);
    assert_eq!(again.view().modes["data"], Mode::Enforce);
    let outcome = again.set_node(node()).unwrap();
    assert_eq!(outcome.writes, 0, "{:?}", again.maps.log);

    // Deleting restores the open state.
    again
        .change(Change::Delete {
            namespace: "data".to_owned(),
            name: "store".to_owned(),
        })
        .unwrap();
    assert!(again.maps.entries.exact.is_empty());
    assert!(matches!(
        again.change(Change::Delete {
            namespace: "data".to_owned(),
            name: "store".to_owned(),
        }),
        Err(EnforceError::NoSuchPolicy { .. })
    ));
}

#[test]
fn an_invalid_set_or_an_overflow_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = enforcer(dir.path(), FakeMaps::default());
    e.set_node(node()).unwrap();
    e.change(apply(&[STORE_FROM_CART])).unwrap();
    let before = e.maps.entries.clone();
    let writes = e.maps.log.len();

    let bad = "metadata: {name: bad, namespace: shop}\nspec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]}";
    let err = e.change(apply(&[STORE_FROM_CART, bad])).unwrap_err();
    let text = crate::error_chain::chain(&err);
    assert!(
        text.contains("shop/bad") && text.contains("ipBlock"),
        "{text}"
    );
    assert!(err.is_client_error());
    assert_eq!(e.maps.entries, before);
    assert_eq!(e.maps.log.len(), writes);
    assert_eq!(e.view().policies.len(), 1);

    let fresh = tempfile::tempdir().unwrap();
    let mut tiny = enforcer(
        fresh.path(),
        FakeMaps {
            capacity: Some([16, 16, 16, 0, 16, 16]),
            ..FakeMaps::default()
        },
    );
    tiny.set_node(node()).unwrap();
    let writes = tiny.maps.log.len();
    let err = tiny.change(apply(&[STORE_FROM_CART])).unwrap_err();
    assert!(
        err.to_string().starts_with("map POLICY_EXACT needs")
            && err.to_string().contains("limit is 0"),
        "{err}"
    );
    assert_eq!(tiny.maps.log.len(), writes, "refused before any write");
}

#[test]
fn a_failed_write_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = enforcer(dir.path(), FakeMaps::default());
    e.set_node(node()).unwrap();
    let before = e.maps.entries.clone();
    e.maps.fail_at = Some(e.maps.log.len() + 2);
    let err = e.change(apply(&[STORE_FROM_CART])).unwrap_err();
    assert!(
        matches!(
            err,
            EnforceError::Write {
                rolled_back: true,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(e.maps.entries, before);
    assert!(e.view().policies.is_empty());
    assert!(
        DesiredFile::in_dir(dir.path())
            .load()
            .unwrap()
            .policies
            .is_empty()
    );
}

/// The node after churn: the cart pod was relabelled (a new identity,
/// numbered after the others) and a new pod came.
fn churned_node() -> Arc<NodeView> {
    let mut view = (*node()).clone();
    let mut cluster = (*view.cluster).clone();
    cluster.pods[1]
        .meta
        .labels
        .insert("version".to_owned(), "2".to_owned());
    cluster.pods.push(pod("shop", "api", "10.0.0.4"));
    view.cluster = Arc::new(cluster);
    view.local.insert(PodKey::new("shop", "api-0"), 14);
    Arc::new(view)
}

#[test]
fn a_restarted_agent_keeps_the_identities_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = enforcer(dir.path(), FakeMaps::default());
    e.set_node(node()).unwrap();
    e.change(apply(&[STORE_FROM_CART])).unwrap();
    e.set_node(churned_node()).unwrap();
    let pinned = e.maps.entries.clone();

    // Same state directory, same (pinned) maps: the same numbers.
    let mut again = enforcer(
        dir.path(),
        FakeMaps {
            entries: pinned.clone(),
            ..FakeMaps::default()
        },
    );
    let outcome = again.set_node(churned_node()).unwrap();
    assert_eq!(outcome.writes, 0, "{:?}", again.maps.log);
    assert_eq!(again.maps.entries, pinned);

    // Without the saved allocator the numbers differ after this churn: the
    // first diff rewrites entries (correct, not minimal).
    std::fs::remove_file(dir.path().join(state_file::IDENTITIES_FILE_NAME)).unwrap();
    let mut fresh = enforcer(
        dir.path(),
        FakeMaps {
            entries: pinned,
            ..FakeMaps::default()
        },
    );
    assert!(fresh.set_node(churned_node()).unwrap().writes > 0);

    // A corrupt file is not fatal: the agent numbers afresh.
    std::fs::write(dir.path().join(state_file::IDENTITIES_FILE_NAME), "{").unwrap();
    let mut corrupt = enforcer(dir.path(), FakeMaps::default());
    corrupt.set_node(churned_node()).unwrap();
}

#[test]
fn denied_flows_of_loosened_endpoints_are_judged_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = enforcer(dir.path(), FakeMaps::default());
    e.set_node(node()).unwrap();
    let deny_all =
        "metadata: {name: deny, namespace: data}\nspec: {podSelector: {}, policyTypes: [Ingress]}";
    e.change(apply(&[deny_all])).unwrap();
    e.change(Change::SetMode {
        namespace: "data".to_owned(),
        mode: Mode::Enforce,
    })
    .unwrap();
    // store (13): one dropped and one forwarded flow; web (11): a dropped
    // flow of another endpoint the next change does not concern.
    let flows = vec![
        (13, abi::VERDICT_DROPPED),
        (13, abi::VERDICT_FORWARDED),
        (11, abi::VERDICT_DROPPED),
    ];
    e.maps.flows.clone_from(&flows);

    // Nothing changes: nothing is judged again.
    let outcome = e.change(apply(&[deny_all])).unwrap();
    assert_eq!(outcome.writes, 0);
    assert_eq!(outcome.rejudged_flows, 0);
    assert_eq!(e.maps.flows, flows);

    // Allowing cart -> store: the store's denied flow goes, its forwarded
    // flow and the web's denied flow stay.
    let outcome = e.change(apply(&[deny_all, STORE_FROM_CART])).unwrap();
    assert_eq!(outcome.rejudged_flows, 1);
    assert_eq!(
        e.maps.flows,
        [(13, abi::VERDICT_FORWARDED), (11, abi::VERDICT_DROPPED)]
    );

    // Tightening (the rule goes) allows nothing new: every entry stays,
    // established connections included.
    e.maps.flows.clone_from(&flows);
    let outcome = e
        .change(Change::Delete {
            namespace: "data".to_owned(),
            name: "store".to_owned(),
        })
        .unwrap();
    assert!(outcome.writes > 0);
    assert_eq!(outcome.rejudged_flows, 0);
    assert_eq!(e.maps.flows, flows);
}

#[test]
fn a_missing_file_keeps_the_pinned_enforcement_until_told() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = enforcer(dir.path(), FakeMaps::default());
    e.set_node(node()).unwrap();
    e.change(apply(&[STORE_FROM_CART])).unwrap();
    e.change(Change::SetMode {
        namespace: "data".to_owned(),
        mode: Mode::Enforce,
    })
    .unwrap();
    let pinned = e.maps.entries.clone();

    // enforce.json deleted; a new agent adopts the pinned maps.
    std::fs::remove_file(dir.path().join(state_file::FILE_NAME)).unwrap();
    let mut again = enforcer(
        dir.path(),
        FakeMaps {
            entries: pinned.clone(),
            ..FakeMaps::default()
        },
    );
    let held = again.view().held.expect("held");
    assert!(held.contains("enforce.json is missing"), "{held}");
    assert!(again.view().judging(), "a clean stop keeps the pins");
    let outcome = again.set_node(node()).unwrap();
    assert_eq!(outcome.writes, 0, "{:?}", again.maps.log);
    assert_eq!(again.maps.entries, pinned, "still enforcing as pinned");
    assert_eq!(again.maps.entries.endpoints[&13].mode, abi::MODE_ENFORCE);

    // Told: what is asked replaces the pinned state.
    again
        .change(Change::SetMode {
            namespace: "shop".to_owned(),
            mode: Mode::Audit,
        })
        .unwrap();
    assert!(again.view().held.is_none());
    assert_eq!(again.maps.entries.endpoints[&13].mode, abi::MODE_OBSERVE);

    // Pinned maps that judge nothing hold nothing.
    std::fs::remove_file(dir.path().join(state_file::FILE_NAME)).unwrap();
    let observing = enforcer(dir.path(), FakeMaps::default());
    assert!(observing.view().held.is_none());
}
