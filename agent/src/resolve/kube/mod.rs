//! Pods, namespaces, Services, the API server's EndpointSlices,
//! NetworkPolicies and nodes from the Kubernetes API, through kube-rs
//! reflectors.
//!
//! Each resource has a `watcher` (list, then watch from the list's
//! resourceVersion, with bookmarks) behind kube-runtime's default backoff,
//! whose events are cut down ([`trim`]) and written to a reflector store.
//! kube-runtime handles the protocol: a watch that ends is resumed from the
//! last resourceVersion seen (bookmarks included), `410 Gone` and other
//! desyncs relist, and the store swaps in a relist only once it is
//! complete. Failures never reach the agent as failures: the stores keep
//! the last complete view, which the agent keeps enforcing, and [`health`]
//! tells how stale it is (`/healthz`, `weir_kube_stale_seconds`).
//!
//! The pod watch also feeds the [`IpLedger`]: who held which IP when, so a
//! flow is attributed to the pod that held the address when it was seen.
//!
//! [`Source::snapshot`] reads the stores (no I/O): it fails with
//! [`SourceError::NotReady`] until every resource was listed once, so the
//! agent never mistakes an empty cache for an empty cluster.

pub mod convert;
pub mod health;
pub mod trim;

#[cfg(test)]
pub(crate) mod mock;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, HashSet},
    fmt::Debug,
    sync::{Arc, Mutex, PoisonError},
    time::{SystemTime, UNIX_EPOCH},
};

use futures_util::StreamExt as _;
use k8s_openapi::api::{
    core::v1::{Namespace, Node, Pod, Service},
    discovery::v1::EndpointSlice,
    networking::v1::NetworkPolicy,
};
use kube::{
    Api, Client, Resource,
    runtime::{
        WatchStreamExt as _,
        reflector::{self, Store},
        watcher::{self, Event},
    },
};
use serde::de::DeserializeOwned;
use tokio::task::{AbortHandle, JoinHandle};
use tracing::{debug, warn};
use weir_generator::datapath::Mode;

use self::{
    convert::Objects,
    health::{Health, SourceHealth},
};
use super::{Inventory, Source, SourceError, leases::IpLedger};
use crate::metrics::Metrics;

/// A [`Source`] fed by reflectors on the API server.
pub struct KubeSource {
    node_name: String,
    pods: Store<Pod>,
    namespaces: Store<Namespace>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    policies: Store<NetworkPolicy>,
    nodes: Store<Node>,
    ledger: Arc<Mutex<IpLedger>>,
    health: Arc<Health>,
    metrics: Option<Arc<Metrics>>,
    /// Modes derived last, kept for namespaces whose label turns invalid.
    modes: BTreeMap<String, Mode>,
    tasks: Vec<AbortHandle>,
}

impl Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource")
            .field("node_name", &self.node_name)
            .field("pods", &self.pods.len())
            .finish_non_exhaustive()
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Unix nanoseconds now.
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

const NS_PER_S: u64 = 1_000_000_000;

impl KubeSource {
    /// Connect with kube-rs's defaults: the kubeconfig (`KUBECONFIG`,
    /// `~/.kube/config`) out of a cluster, the service account inside one;
    /// then start watching.
    ///
    /// # Errors
    /// No usable configuration.
    pub async fn connect(
        node_name: impl Into<String>,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Self, kube::Error> {
        let client = Client::try_default().await?;
        Ok(Self::start(client, node_name, metrics))
    }

    /// Start the reflectors on `client` (must run inside a tokio runtime).
    /// `node_name` decides which pods are local.
    #[must_use]
    pub fn start(
        client: Client,
        node_name: impl Into<String>,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        let health = Arc::new(Health::new(now_ns() / NS_PER_S));
        let ledger = Arc::new(Mutex::new(IpLedger::default()));
        let config = watcher::Config::default();
        let mut tasks = Vec::new();
        let mut spawn = |task: JoinHandle<()>| tasks.push(task.abort_handle());
        let reflect = Reflect {
            health: &health,
            metrics: metrics.as_ref(),
        };

        let mut feed = LedgerFeed::new(Arc::clone(&ledger));
        let (pods, task) = reflect.run(
            Api::<Pod>::all(client.clone()),
            config.clone(),
            "pods",
            trim::pod,
            move |event| feed.on_event(event, now_ns()),
        );
        spawn(task);
        let (namespaces, task) = reflect.run(
            Api::<Namespace>::all(client.clone()),
            config.clone(),
            "namespaces",
            trim::namespace,
            |_| {},
        );
        spawn(task);
        let (services, task) = reflect.run(
            Api::<Service>::all(client.clone()),
            config.clone(),
            "services",
            trim::service,
            |_| {},
        );
        spawn(task);
        // Only the API server's slices: pods' own endpoints come from the
        // pods, and a node need not cache every slice of the cluster.
        let (slices, task) = reflect.run(
            Api::<EndpointSlice>::namespaced(client.clone(), "default"),
            config
                .clone()
                .labels("kubernetes.io/service-name=kubernetes"),
            "endpointslices",
            trim::endpoint_slice,
            |_| {},
        );
        spawn(task);
        let (policies, task) = reflect.run(
            Api::<NetworkPolicy>::all(client.clone()),
            config.clone(),
            "networkpolicies",
            trim::network_policy,
            |_| {},
        );
        spawn(task);
        let (nodes, task) = reflect.run(
            Api::<Node>::all(client),
            config,
            "nodes",
            trim::node,
            |_| {},
        );
        spawn(task);

        Self {
            node_name: node_name.into(),
            pods,
            namespaces,
            services,
            slices,
            policies,
            nodes,
            ledger,
            health,
            metrics,
            modes: BTreeMap::new(),
            tasks,
        }
    }

    /// Wait until every resource has been listed once.
    ///
    /// # Errors
    /// A reflector stopped before its first list (the source is dropped).
    pub async fn wait_until_ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.pods.wait_until_ready().await?;
        self.namespaces.wait_until_ready().await?;
        self.services.wait_until_ready().await?;
        self.slices.wait_until_ready().await?;
        self.policies.wait_until_ready().await?;
        self.nodes.wait_until_ready().await?;
        // The stores are swapped in before the reflector's task reports the
        // list: wait for the report too, so `snapshot` agrees.
        while !self.health.ready() {
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    /// How stale the view is now; also sets the staleness metrics.
    #[must_use]
    pub fn health(&self) -> SourceHealth {
        let report = self.health.report(now_ns() / NS_PER_S);
        if let Some(metrics) = &self.metrics {
            for (resource, status) in &report.resources {
                metrics.set_kube_stale(resource, status.stale_seconds);
            }
        }
        report
    }

    fn objects(&self) -> Objects {
        Objects {
            pods: self.pods.state(),
            namespaces: self.namespaces.state(),
            services: self.services.state(),
            slices: self.slices.state(),
            policies: self.policies.state(),
            nodes: self.nodes.state(),
        }
    }
}

impl Source for KubeSource {
    fn snapshot(&mut self) -> Result<Inventory, SourceError> {
        let health = self.health();
        if !self.health.ready() {
            return Err(SourceError::NotReady {
                source_name: "kube",
                reason: format!(
                    "waiting for the first list of {}",
                    self.health.waiting_for().join(", ")
                ),
            });
        }
        let now = now_ns();
        let leases = {
            let mut ledger = self.ledger.lock().unwrap_or_else(PoisonError::into_inner);
            ledger.prune(now);
            ledger.leases()
        };
        let mut inventory = convert::inventory(&self.objects(), &self.node_name, &mut self.modes);
        inventory.leases = leases;
        inventory.health = Some(health);
        Ok(inventory)
    }

    fn name(&self) -> &'static str {
        "kube"
    }
}

/// Starts one reflector, reporting to `health` (and `metrics`).
pub(crate) struct Reflect<'a> {
    pub(crate) health: &'a Arc<Health>,
    pub(crate) metrics: Option<&'a Arc<Metrics>>,
}

impl Reflect<'_> {
    /// Watch `api` into a store: the watcher with kube-runtime's default
    /// backoff, objects trimmed before they are stored; `on_event` sees
    /// every event after the store applied it. The task runs until
    /// aborted.
    pub(crate) fn run<K>(
        &self,
        api: Api<K>,
        config: watcher::Config,
        resource: &'static str,
        trim: fn(&mut K),
        mut on_event: impl FnMut(&Event<K>) + Send + 'static,
    ) -> (Store<K>, JoinHandle<()>)
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let (reader, writer) = reflector::store();
        let stream = watcher::watcher(api, config)
            .default_backoff()
            .modify(trim)
            .reflect(writer);
        let health = Arc::clone(self.health);
        let metrics = self.metrics.cloned();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                let now = now_ns() / NS_PER_S;
                match item {
                    Ok(event) => {
                        match &event {
                            Event::InitDone => {
                                debug!(resource, "listed");
                                health.listed(resource, now);
                            }
                            Event::Apply(_) | Event::Delete(_) => health.ok(resource, now),
                            Event::Init | Event::InitApply(_) => {}
                        }
                        on_event(&event);
                    }
                    Err(error) => {
                        warn!(
                            resource,
                            error = %error,
                            "watch failed; retrying with backoff, keeping the current view"
                        );
                        health.error(resource, error.to_string());
                        if let Some(metrics) = &metrics {
                            metrics.kube_watch_error(resource);
                        }
                    }
                }
            }
        });
        (reader, task)
    }
}

/// Feeds the pod watch's events to the IP ledger.
struct LedgerFeed {
    ledger: Arc<Mutex<IpLedger>>,
    /// The pods of the list in progress.
    listing: Option<HashSet<String>>,
    /// Whether a list completed before: pods of the first list held their
    /// IPs since before the agent watched.
    listed: bool,
}

impl LedgerFeed {
    fn new(ledger: Arc<Mutex<IpLedger>>) -> Self {
        Self {
            ledger,
            listing: None,
            listed: false,
        }
    }

    fn on_event(&mut self, event: &Event<Pod>, now: u64) {
        match event {
            Event::Init => self.listing = Some(HashSet::new()),
            Event::InitApply(pod) => {
                if let Some(listing) = &mut self.listing {
                    listing.insert(convert::pod_key(pod));
                }
                self.apply(pod, now, !self.listed);
            }
            Event::InitDone => {
                let present = self.listing.take().unwrap_or_default();
                self.lock().release_absent(&present, now);
                self.listed = true;
            }
            Event::Apply(pod) => self.apply(pod, now, false),
            Event::Delete(pod) => self.lock().release(&convert::pod_key(pod), now),
        }
    }

    fn apply(&self, pod: &Pod, now: u64, first_list: bool) {
        let key = convert::pod_key(pod);
        let meta = convert::meta(pod).filter(|m| convert::holds_ip(pod) && !m.ips.is_empty());
        let mut ledger = self.lock();
        match meta {
            Some(meta) => {
                let from = convert::network_since(pod).unwrap_or(if first_list { 0 } else { now });
                ledger.hold(&key, &meta, from, now);
            }
            None => ledger.release(&key, now),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IpLedger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
