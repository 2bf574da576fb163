//! Test helpers shared by the aggregator's and the API's tests: a
//! `BTreeMap`-based resolver and builders for pods and observations.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use weir_generator::model::{PodMeta, Protocol, WorkloadKind, WorkloadRef};

use super::{Aggregator, Options};
use crate::{
    flow::{Initiator, Observation},
    metrics::Metrics,
    resolve::Resolve,
};

/// An aggregator of node `node-1`, and the metrics it counts in.
pub(crate) fn node_aggregator() -> (Arc<Aggregator>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let options = Options {
        node_name: "node-1".into(),
        ..Options::default()
    };
    (
        Arc::new(Aggregator::new(options, Arc::clone(&metrics))),
        metrics,
    )
}

/// A resolver over fixed maps.
#[derive(Debug, Default)]
pub(crate) struct FakeResolver {
    by_ip: BTreeMap<IpAddr, Arc<PodMeta>>,
    by_ifindex: BTreeMap<u32, Arc<PodMeta>>,
    attached: BTreeSet<IpAddr>,
    nodes: BTreeMap<IpAddr, Arc<str>>,
}

impl FakeResolver {
    /// Add a pod; `ifindex` makes it attached on this node.
    pub(crate) fn pod(
        mut self,
        namespace: &str,
        workload: &str,
        name: &str,
        ip: &str,
        ifindex: Option<u32>,
    ) -> Self {
        let ip: IpAddr = ip.parse().expect("test IP");
        let meta = Arc::new(PodMeta {
            namespace: namespace.into(),
            name: name.into(),
            labels: BTreeMap::from([("app".to_owned(), workload.to_owned())]),
            workload: WorkloadRef::new(namespace, WorkloadKind::Deployment, workload),
            ips: vec![ip],
        });
        self.by_ip.insert(ip, Arc::clone(&meta));
        if let Some(index) = ifindex {
            self.by_ifindex.insert(index, meta);
            self.attached.insert(ip);
        }
        self
    }

    /// Say which node the pod at `ip` runs on (`spec.nodeName`).
    pub(crate) fn on_node(mut self, ip: &str, node: &str) -> Self {
        self.nodes
            .insert(ip.parse().expect("test IP"), Arc::from(node));
        self
    }
}

impl Resolve for FakeResolver {
    fn pod_by_ip(&self, ip: IpAddr) -> Option<Arc<PodMeta>> {
        self.by_ip.get(&ip).cloned()
    }

    fn pod_by_ifindex(&self, ifindex: u32) -> Option<Arc<PodMeta>> {
        self.by_ifindex.get(&ifindex).cloned()
    }

    fn is_attached(&self, ip: IpAddr) -> bool {
        self.attached.contains(&ip)
    }

    fn node_of(&self, ip: IpAddr, _pod: &PodMeta) -> Option<Arc<str>> {
        self.nodes.get(&ip).cloned()
    }
}

/// A TCP observation: a new flow with one packet each way.
pub(crate) fn obs(ifindex: u32, local: &str, remote: &str, initiator: Initiator) -> Observation {
    let local: SocketAddr = local.parse().expect("test address");
    let remote: SocketAddr = remote.parse().expect("test address");
    Observation {
        ifindex,
        protocol: Protocol::Tcp,
        local,
        remote,
        initiator,
        initiator_guessed: false,
        new_flow: true,
        connections: 1,
        closed: false,
        packets_from_pod: 1,
        bytes_from_pod: 60,
        packets_to_pod: 1,
        bytes_to_pod: 60,
        tcp_flags_from_pod: 0x02,
        tcp_flags_to_pod: 0x12,
        icmp: None,
        first_seen: 1_700_000_000_000_000_000,
        last_seen: 1_700_000_000_500_000_000,
        kernel_time: 1_700_000_000_500_000_000,
        verdict: crate::flow::Verdict::Forwarded,
        reason: crate::flow::DenyReason::None,
        direction: None,
        policies: Vec::new(),
        folded: None,
    }
}

/// The shop: frontend (attached, ifindex 1) and cart (attached, ifindex 2)
/// on this node, db on another node.
pub(crate) fn shop() -> FakeResolver {
    FakeResolver::default()
        .pod("shop", "frontend", "frontend-a", "10.0.0.1", Some(1))
        .pod("shop", "cart", "cart-a", "10.0.0.2", Some(2))
        .pod("data", "db", "db-0", "10.0.1.9", None)
}
