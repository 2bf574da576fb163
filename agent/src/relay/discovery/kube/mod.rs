//! The agents as the Kubernetes API knows them: the EndpointSlices of the
//! headless Service over the agents' DaemonSet (one endpoint per agent pod,
//! with its node and its ready and terminating state), and how many agents
//! to expect from the DaemonSet's `status.desiredNumberScheduled`.
//!
//! Both are watched through the kube source's reflectors
//! ([`crate::resolve::kube`]): list then watch, kube-runtime's default
//! backoff, relists swapped in whole, every error reported to a [`Health`]
//! (the view is kept meanwhile). After each change the whole set is
//! computed again from the stores ([`agent_set`], pure), so an endpoint
//! that moves from one slice to another, or a relist that missed a delete,
//! needs no bookkeeping; it is published only when it differs from the
//! last one, and only once every watch has listed (an empty cache is not
//! an empty cluster).

use std::{
    net::IpAddr,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use k8s_openapi::api::{
    apps::v1::{DaemonSet, DaemonSetStatus},
    discovery::v1::{Endpoint, EndpointConditions, EndpointSlice},
};
use kube::{
    Api, Client,
    runtime::{reflector::Store, watcher},
};
use tokio::{
    sync::{Notify, watch},
    task::{JoinError, JoinHandle},
};
use tracing::{debug, info, warn};

use super::{AgentEndpoint, AgentSet};
use crate::resolve::kube::{Reflect, health::Health, trim};

/// The resources discovery watches, as [`Health`] reports them; without a
/// DaemonSet only the first.
pub const RESOURCES: [&str; 2] = ["endpointslices", "daemonsets"];

/// The name of the Service port (and so of the EndpointSlice port) that
/// is the agents' relay listener.
pub const RELAY_PORT_NAME: &str = "relay";

/// Discovery stopped: its watches retry forever, so only a watch task that
/// ended (it panicked) stops it.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// A watch task ended.
    #[error("the {resource} watch stopped")]
    Stopped {
        /// `endpointslices` or `daemonsets`.
        resource: &'static str,
        /// Why, when it panicked or was cancelled.
        #[source]
        source: Option<JoinError>,
    },
}

/// Agent discovery through the Kubernetes API.
#[derive(Debug)]
pub struct KubeDiscovery {
    /// The headless Service `(namespace, name)` whose slices list the agents.
    service: (String, String),
    /// The agents' DaemonSet `(namespace, name)`, for the expected count.
    daemonset: Option<(String, String)>,
    /// The relay listener's port when a slice names none.
    port: u16,
    health: Arc<Health>,
}

/// Watch the agents: see [`KubeDiscovery`].
///
/// # Errors
/// A watch task stopped.
pub async fn watch_agents(
    client: Client,
    service: (String, String),
    daemonset: Option<(String, String)>,
    port: u16,
    tx: watch::Sender<AgentSet>,
) -> Result<(), DiscoveryError> {
    KubeDiscovery::new(service, daemonset, port)
        .run(client, tx)
        .await
}

impl KubeDiscovery {
    /// Discovery of the agents behind `service`, expecting as many as
    /// `daemonset` schedules when given; `port` is the agents' relay port
    /// when their slices have no port named [`RELAY_PORT_NAME`].
    #[must_use]
    pub fn new(service: (String, String), daemonset: Option<(String, String)>, port: u16) -> Self {
        let resources = if daemonset.is_some() {
            &RESOURCES[..]
        } else {
            &RESOURCES[..1]
        };
        Self {
            service,
            daemonset,
            port,
            health: Arc::new(Health::for_resources(resources, now_s())),
        }
    }

    /// How current discovery's view is (for the relay's `/healthz`).
    #[must_use]
    pub fn health(&self) -> Arc<Health> {
        Arc::clone(&self.health)
    }

    /// Start watching in a task: the agent set as it changes, starting
    /// from [`AgentSet::default`] (not listed) until the first lists. The
    /// task ends with the last receiver; should a watch task stop, it
    /// says so at error level and the set stays as it was.
    #[must_use]
    pub fn spawn(self, client: Client) -> watch::Receiver<AgentSet> {
        let (tx, rx) = watch::channel(AgentSet::default());
        tokio::spawn(async move {
            if let Err(error) = self.run(client, tx).await {
                tracing::error!(
                    error = %crate::error_chain::chain(&error),
                    "agent discovery stopped; the relay keeps the agents it knew"
                );
            }
        });
        rx
    }

    /// Watch until every receiver of `tx` is gone (then `Ok`), publishing
    /// each new [`AgentSet`] (always [`AgentSet::listed`]).
    ///
    /// # Errors
    /// A watch task stopped.
    pub async fn run(
        self,
        client: Client,
        tx: watch::Sender<AgentSet>,
    ) -> Result<(), DiscoveryError> {
        let changed = Arc::new(Notify::new());
        let reflect = Reflect {
            health: &self.health,
            metrics: None,
        };
        let (service_ns, service_name) = &self.service;
        let (slices, slice_task) = reflect.run(
            Api::<EndpointSlice>::namespaced(client.clone(), service_ns),
            watcher::Config::default()
                .labels(&format!("kubernetes.io/service-name={service_name}")),
            RESOURCES[0],
            trim_slice,
            notifier(&changed),
        );
        let mut tasks = Tasks(vec![(RESOURCES[0], slice_task)]);
        let daemonset = self.daemonset.as_ref().map(|(ns, name)| {
            let (store, task) = reflect.run(
                Api::<DaemonSet>::namespaced(client, ns),
                watcher::Config::default().fields(&format!("metadata.name={name}")),
                RESOURCES[1],
                trim_daemonset,
                notifier(&changed),
            );
            tasks.0.push((RESOURCES[1], task));
            store
        });

        loop {
            tokio::select! {
                () = changed.notified() => {}
                () = tx.closed() => return Ok(()),
                stopped = tasks.any_ended() => return Err(stopped),
            }
            if !self.health.ready() {
                continue;
            }
            let set = self.current(&slices, daemonset.as_ref());
            tx.send_if_modified(|last| {
                if *last == set {
                    return false;
                }
                self.log(&set);
                *last = set;
                true
            });
        }
    }

    fn current(
        &self,
        slices: &Store<EndpointSlice>,
        daemonset: Option<&Store<DaemonSet>>,
    ) -> AgentSet {
        let slices = slices.state();
        let daemonset = daemonset.and_then(|store| store.state().into_iter().next());
        agent_set(
            slices.iter().map(AsRef::as_ref),
            daemonset.as_deref(),
            self.port,
        )
    }

    fn log(&self, set: &AgentSet) {
        let ready = set.agents.values().filter(|a| a.ready).count();
        let (ns, name) = &self.service;
        info!(
            service = %format!("{ns}/{name}"),
            discovered = set.agents.len(),
            ready,
            expected = set.expected(),
            "agents changed"
        );
        if let Some((ns, name)) = &self.daemonset
            && set.expected.is_none()
        {
            warn!(
                daemonset = %format!("{ns}/{name}"),
                "the agents' DaemonSet is missing or has no status yet; expecting only the agents discovered"
            );
        }
    }
}

/// Wakes the publishing loop after an event that changed a store. Init
/// and InitApply leave the store as it was until the relist is complete.
fn notifier<K>(changed: &Arc<Notify>) -> impl FnMut(&watcher::Event<K>) + Send + 'static {
    let changed = Arc::clone(changed);
    move |event| {
        if !matches!(event, watcher::Event::Init | watcher::Event::InitApply(_)) {
            changed.notify_one();
        }
    }
}

/// The reflector tasks, aborted when discovery stops.
struct Tasks(Vec<(&'static str, JoinHandle<()>)>);

impl Tasks {
    /// The first task that ends.
    async fn any_ended(&mut self) -> DiscoveryError {
        let ended = futures_util::future::select_all(
            self.0
                .iter_mut()
                .map(|(resource, task)| Box::pin(async move { (*resource, task.await) })),
        );
        let ((resource, result), _, _) = ended.await;
        DiscoveryError::Stopped {
            resource,
            source: result.err(),
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for (_, task) in &self.0 {
            task.abort();
        }
    }
}

/// The agents listed by `slices` (the EndpointSlices of their Service),
/// expecting as many as `daemonset` schedules.
///
/// One agent per node: an endpoint without a `nodeName` (or without an
/// address) is ignored; a node listed twice (an endpoint moving between
/// slices, or an old pod terminating next to its replacement) keeps its
/// best endpoint: ready first, then not terminating, then the lowest URL
/// (so the answer does not depend on the order of the slices). The URL is
/// `https://ADDRESS:PORT` with the slice's port named [`RELAY_PORT_NAME`],
/// else `port`.
pub fn agent_set<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    daemonset: Option<&DaemonSet>,
    port: u16,
) -> AgentSet {
    let mut set = AgentSet {
        listed: true,
        expected: daemonset
            .and_then(|ds| ds.status.as_ref())
            .map(|status| usize::try_from(status.desired_number_scheduled).unwrap_or(0)),
        agents: std::collections::BTreeMap::new(),
    };
    for slice in slices {
        let slice_name = slice.metadata.name.as_deref().unwrap_or_default();
        let port = relay_port(slice).unwrap_or(port);
        for endpoint in &slice.endpoints {
            let Some(agent) = agent(endpoint, port) else {
                debug!(
                    slice = slice_name,
                    addresses = ?endpoint.addresses,
                    "an endpoint without a node or an address is not an agent; ignored"
                );
                continue;
            };
            match set.agents.get(&agent.node) {
                Some(known) if rank(known) >= rank(&agent) => {}
                _ => {
                    set.agents.insert(agent.node.clone(), agent);
                }
            }
        }
    }
    set
}

/// Which of two endpoints of a node wins: the greater.
fn rank(agent: &AgentEndpoint) -> (bool, bool, std::cmp::Reverse<&str>) {
    (
        agent.ready,
        !agent.terminating,
        std::cmp::Reverse(agent.url.as_str()),
    )
}

/// The slice's port named `relay`.
fn relay_port(slice: &EndpointSlice) -> Option<u16> {
    slice
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(RELAY_PORT_NAME))
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok())
}

fn agent(endpoint: &Endpoint, port: u16) -> Option<AgentEndpoint> {
    let node = endpoint.node_name.clone()?;
    // Consumers use the first address only (the API's rule).
    let address = endpoint.addresses.first()?;
    let host = match address.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("[{ip}]"),
        Ok(IpAddr::V4(ip)) => ip.to_string(),
        Err(_) => address.clone(),
    };
    let conditions = endpoint.conditions.as_ref();
    Some(AgentEndpoint {
        node,
        url: format!("https://{host}:{port}"),
        // The API: a nil `ready` means ready, a nil `terminating` not.
        ready: conditions.and_then(|c| c.ready).unwrap_or(true),
        terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
    })
}

/// A slice keeps its name, ports and each endpoint's addresses,
/// conditions and node.
fn trim_slice(slice: &mut EndpointSlice) {
    trim::meta(&mut slice.metadata);
    slice.metadata.labels = None;
    slice.metadata.owner_references = None;
    for endpoint in &mut slice.endpoints {
        *endpoint = Endpoint {
            addresses: std::mem::take(&mut endpoint.addresses),
            conditions: endpoint
                .conditions
                .take()
                .map(|c| EndpointConditions { serving: None, ..c }),
            node_name: endpoint.node_name.take(),
            ..Endpoint::default()
        };
    }
}

/// A DaemonSet keeps its name and how many pods it should schedule (its
/// spec holds the whole pod template).
fn trim_daemonset(ds: &mut DaemonSet) {
    trim::meta(&mut ds.metadata);
    ds.metadata.labels = None;
    ds.spec = None;
    ds.status = ds.status.take().map(|s| DaemonSetStatus {
        desired_number_scheduled: s.desired_number_scheduled,
        ..DaemonSetStatus::default()
    });
}

/// Unix seconds now.
fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
