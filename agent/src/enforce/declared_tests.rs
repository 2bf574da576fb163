//! A source that declares the policy set and the modes (the kube source:
//! NetworkPolicy objects, namespace labels) is the source of truth.

use std::collections::BTreeMap;

use weir_ebpf::abi;
use weir_generator::{
    cluster::{Cluster, ClusterPod},
    model::{PodMeta, WorkloadKind, WorkloadRef},
};

use super::{entries::FakeMaps, *};
use crate::resolve::ClusterPolicies;

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

const INVALID: &str = "
metadata: {name: broken, namespace: data}
spec:
  podSelector: {}
  ingress:
  - from: [{ipBlock: {cidr: not-a-cidr}}]
";

fn view(policies: &[&str], modes: &[(&str, Mode)]) -> Arc<NodeView> {
    let pod = |ns: &str, app: &str, ip: &str| ClusterPod {
        meta: PodMeta {
            namespace: ns.to_owned(),
            name: format!("{app}-0"),
            labels: BTreeMap::from([("app".to_owned(), app.to_owned())]),
            workload: WorkloadRef::new(ns, WorkloadKind::Deployment, app),
            ips: vec![ip.parse().unwrap()],
        },
        ports: Vec::new(),
    };
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
            pod("shop", "cart", "10.0.0.2"),
            pod("data", "store", "10.0.0.3"),
        ],
        services: Vec::new(),
    };
    let policies: Vec<NetworkPolicy> = policies
        .iter()
        .map(|y| serde_yaml::from_str(y).unwrap())
        .collect();
    Arc::new(NodeView {
        cluster: Arc::new(cluster),
        local: BTreeMap::from([
            (PodKey::new("shop", "cart-0"), 12),
            (PodKey::new("data", "store-0"), 13),
        ]),
        node_ips: Vec::new(),
        policies: Some(ClusterPolicies(policies.into())),
        modes: Some(modes.iter().map(|(ns, m)| ((*ns).to_owned(), *m)).collect()),
    })
}

fn names(e: &Enforcer<FakeMaps>) -> Vec<String> {
    e.view()
        .policies
        .iter()
        .map(|p| p.metadata.name.clone().unwrap_or_default())
        .collect()
}

#[test]
fn the_declared_set_and_modes_replace_the_stored_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = Enforcer::new(
        FakeMaps::default(),
        DesiredFile::in_dir(dir.path()),
        Mode::Observe,
        &BTreeMap::new(),
    )
    .unwrap();
    e.set_node(view(&[STORE_FROM_CART], &[("data", Mode::Enforce)]))
        .unwrap();
    assert_eq!(names(&e), ["store"]);
    assert_eq!(e.maps.entries.endpoints[&13].mode, abi::MODE_ENFORCE);
    assert_ne!(
        e.maps.entries.endpoints[&13].flags & abi::EP_ISOLATED_INGRESS,
        0
    );

    // Changes the cluster declares are refused through the agent's API.
    for change in [
        Change::SetMode {
            namespace: "data".into(),
            mode: Mode::Observe,
        },
        Change::Delete {
            namespace: "data".into(),
            name: "store".into(),
        },
    ] {
        let error = e.change(change).unwrap_err();
        assert!(
            matches!(error, EnforceError::Declared { .. }) && error.is_client_error(),
            "{error}"
        );
    }

    // An invalid set is refused whole: the previous set stays, the modes
    // still follow the labels.
    e.set_node(view(&[INVALID, STORE_FROM_CART], &[("data", Mode::Audit)]))
        .unwrap();
    assert_eq!(names(&e), ["store"]);
    assert_eq!(e.maps.entries.endpoints[&13].mode, abi::MODE_AUDIT);
    assert_eq!(
        e.view().modes,
        BTreeMap::from([("data".into(), Mode::Audit)])
    );

    // The set emptied in the cluster: nothing isolates the store any more.
    e.set_node(view(&[], &[("data", Mode::Enforce)])).unwrap();
    assert!(names(&e).is_empty());
    assert_eq!(
        e.maps.entries.endpoints[&13].flags & abi::EP_ISOLATED_INGRESS,
        0
    );
    // What is enforced is saved: an agent restarted without the API server
    // enforces it again.
    let reloaded = DesiredFile::in_dir(dir.path()).load().unwrap();
    assert!(reloaded.policies.is_empty());
    assert_eq!(
        reloaded.modes,
        BTreeMap::from([("data".into(), Mode::Enforce)])
    );
}
