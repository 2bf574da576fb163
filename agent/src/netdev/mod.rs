//! Finding a local pod's host-side interface from its IPs, on any CNI.
//!
//! A source that knows pods but not their veths (the Kubernetes API, an
//! inventory file without the `weir.dev/host-veth` annotation) leaves
//! [`crate::resolve::LocalPod::host_veth`] empty; the datapath asks a
//! [`Discoverer`] which interface to attach to. The kernel is asked in this
//! order, for each pod IP:
//!
//! 1. **Route** (`RTM_GETROUTE`, policy routing included). A `local` route
//!    means the address is the node's: the node itself or a hostNetwork
//!    pod, never attached to. A route out of a **veth** gives the pod's
//!    interface: Calico (`cali*`, /32 route, proxy ARP), kindnet and the
//!    ptp plugin (/32 route, host-side address), and Cilium chaining on
//!    top of those. A route out of anything else (uplink, tunnel, no
//!    route) means another node's pod.
//! 2. **Neighbour and FDB**, for a route out of a **bridge** (bridge CNI,
//!    flannel's `cni0`, the weir lab): the pod IP's ARP/NDP entry on the
//!    bridge gives its MAC, the bridge's forwarding database the port the
//!    MAC was learned on. A port that is not a veth (a VXLAN port) means
//!    another node's pod.
//! 3. **Namespaces**, for a bridged pod the node has no entry for (a pod
//!    that has not talked to the node yet, or a stale entry of a recreated
//!    pod), and for a pod routed out of a node device although the caller
//!    says it runs here (Cilium without endpoint routes sends local pods
//!    through `cilium_host`, a veth whose peer is on the node, so never
//!    taken for a pod's): the pod's network namespace (`/run/netns/*`, `/proc/<pid>/ns/net`,
//!    each once) that holds the IP on a veth names its peer (`IFLA_LINK`);
//!    the host veth must name it back and carry the namespace's id.
//!
//! Answers are cached by pod (namespace/name and IPs) while the interface
//! exists under the same name; a recreated pod brings a new interface and
//! is found again. Namespaces are scanned at most every
//! [`RESCAN_INTERVAL`] unless an IP is waiting that the last scan did not
//! already miss.
//!
//! Limits: a pod whose address is not on a veth (macvlan, ipvlan, SR-IOV)
//! has no host veth to find; a namespace the agent may not enter is
//! skipped; an address reached through an interface the kernel dropped
//! between two lookups waits for the next resync.

pub mod decide;
pub mod netns;
pub mod rtnl;
pub mod tables;

use std::{
    collections::{HashMap, HashSet},
    io,
    net::IpAddr,
    time::{Duration, Instant},
};

use tracing::debug;

pub use self::decide::{Located, Method};
use self::{
    decide::{by_namespace, by_route, combine},
    rtnl::Rtnl,
    tables::{HostTables, Namespace},
};

/// How long a namespace scan that missed some bridged IPs stands before
/// the same IPs trigger another.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(10);

/// A pod to find.
#[derive(Clone, Copy, Debug)]
pub struct PodQuery<'a> {
    /// The pod's namespace.
    pub namespace: &'a str,
    /// The pod's name.
    pub name: &'a str,
    /// Its IPs.
    pub ips: &'a [IpAddr],
}

/// A pod's host-side interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostInterface {
    /// Interface index.
    pub ifindex: u32,
    /// Interface name (what the datapath attaches to).
    pub ifname: String,
    /// How it was found.
    pub method: Method,
}

/// What became of one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Its interface on this node.
    Found(HostInterface),
    /// It has the node's address (hostNetwork): not to be attached.
    Node,
    /// Not on this node.
    Elsewhere,
    /// Bridged, but no namespace holds its IP yet (or an interface
    /// vanished meanwhile): asked again at the next call.
    Pending,
}

/// The answers of one [`Discoverer::discover`] call.
#[derive(Debug)]
pub struct Discovery {
    /// One outcome per queried pod, in order.
    pub outcomes: Vec<Outcome>,
    /// Indexes (into the query) of the pods found by this call rather
    /// than remembered: new pods, or pods with a new interface.
    pub newly_found: Vec<usize>,
    /// Namespaces entered by this call.
    pub namespaces_read: usize,
    /// Why the kernel could not be asked; the outcomes are then the cached
    /// answers (nothing found earlier is lost).
    pub error: Option<io::Error>,
}

type PodKey = (String, String);

/// A pod IP the tables did not place, and the bridge it is routed to.
type Unplaced = (IpAddr, Option<u32>);

/// Finds pods' host interfaces and remembers them.
#[derive(Debug, Default)]
pub struct Discoverer {
    cache: HashMap<PodKey, (Vec<IpAddr>, HostInterface)>,
    /// When namespaces were last scanned and the bridged IPs it missed.
    last_scan: Option<(Instant, HashSet<IpAddr>)>,
}

impl Discoverer {
    /// A discoverer with nothing cached.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Find each pod's host interface. Pods not in `pods` are forgotten.
    pub fn discover(&mut self, pods: &[PodQuery<'_>]) -> Discovery {
        let queried: HashSet<PodKey> = pods.iter().map(key).collect();
        self.cache.retain(|k, _| queried.contains(k));
        match self.ask_kernel(pods) {
            Ok((outcomes, newly_found, namespaces_read)) => Discovery {
                outcomes,
                newly_found,
                namespaces_read,
                error: None,
            },
            Err(error) => Discovery {
                outcomes: pods
                    .iter()
                    .map(|p| match self.cache.get(&key(p)) {
                        Some((ips, found)) if ips == p.ips => Outcome::Found(found.clone()),
                        _ => Outcome::Pending,
                    })
                    .collect(),
                newly_found: Vec::new(),
                namespaces_read: 0,
                error: Some(error),
            },
        }
    }

    fn ask_kernel(
        &mut self,
        pods: &[PodQuery<'_>],
    ) -> io::Result<(Vec<Outcome>, Vec<usize>, usize)> {
        let mut rtnl = Rtnl::open()?;
        let host = HostTables::new(rtnl.links()?, rtnl.neighbours()?, rtnl.fdb()?);
        let mut outcomes = Vec::with_capacity(pods.len());
        // Pods the tables did not place, for the namespaces to tell:
        // (pod, [(ip, the bridge it is routed to)]).
        let mut unplaced: Vec<(usize, Vec<Unplaced>)> = Vec::new();
        for (i, pod) in pods.iter().enumerate() {
            if let Some(found) = self.cached(pod, &host) {
                outcomes.push(Outcome::Found(found));
                continue;
            }
            let answers: Vec<Located> = pod
                .ips
                .iter()
                .map(|ip| match rtnl.route_to(*ip) {
                    Ok(route) => by_route(*ip, &route, &host),
                    Err(error) => {
                        debug!(%ip, %error, "route lookup failed");
                        Located::Unknown
                    }
                })
                .collect();
            outcomes.push(match combine(&answers) {
                Located::Veth { ifindex, method } => found(&host, ifindex, method),
                Located::Node => Outcome::Node,
                // The caller says the pod runs here: a namespace may still
                // hold it behind a route through a node device (Cilium
                // without endpoint routes, via `cilium_host`).
                Located::Elsewhere => {
                    unplaced.push((i, pod.ips.iter().map(|ip| (*ip, None)).collect()));
                    Outcome::Elsewhere
                }
                Located::Unknown => Outcome::Pending,
                Located::OnBridge { .. } => {
                    let ips = pod
                        .ips
                        .iter()
                        .zip(&answers)
                        .filter_map(|(ip, a)| match a {
                            Located::OnBridge { bridge } => Some((*ip, Some(*bridge))),
                            _ => None,
                        })
                        .collect();
                    unplaced.push((i, ips));
                    Outcome::Pending
                }
            });
        }
        let mut namespaces_read = 0;
        if !unplaced.is_empty() {
            let waiting: HashSet<IpAddr> = unplaced
                .iter()
                .flat_map(|(_, ips)| ips.iter().map(|(ip, _)| *ip))
                .collect();
            if self.scan_due(&waiting) {
                let namespaces = scan(&mut rtnl);
                namespaces_read = namespaces.len();
                let mut missed = HashSet::new();
                for (i, ips) in &unplaced {
                    let hit = ips
                        .iter()
                        .find_map(|(ip, bridge)| by_namespace(*ip, &host, &namespaces, *bridge));
                    match hit {
                        Some(ifindex) => outcomes[*i] = found(&host, ifindex, Method::Namespace),
                        None => missed.extend(ips.iter().map(|(ip, _)| *ip)),
                    }
                }
                self.last_scan = Some((Instant::now(), missed));
            }
        }
        let mut newly_found = Vec::new();
        for (i, (pod, outcome)) in pods.iter().zip(&outcomes).enumerate() {
            if let Outcome::Found(found) = outcome {
                let entry = (pod.ips.to_vec(), found.clone());
                if self.cache.insert(key(pod), entry.clone()).as_ref() != Some(&entry) {
                    newly_found.push(i);
                }
            }
        }
        Ok((outcomes, newly_found, namespaces_read))
    }

    /// The cached answer, if the interface still exists under its name.
    fn cached(&self, pod: &PodQuery<'_>, host: &HostTables) -> Option<HostInterface> {
        let (ips, found) = self.cache.get(&key(pod))?;
        (ips == pod.ips && host.veth(found.ifindex)?.name == found.ifname).then(|| found.clone())
    }

    /// Scan when an IP is waiting that the last scan did not already miss,
    /// or the last scan is old.
    fn scan_due(&self, waiting: &HashSet<IpAddr>) -> bool {
        match &self.last_scan {
            None => true,
            Some((at, missed)) => at.elapsed() >= RESCAN_INTERVAL || !waiting.is_subset(missed),
        }
    }
}

fn key(pod: &PodQuery<'_>) -> PodKey {
    (pod.namespace.to_owned(), pod.name.to_owned())
}

fn found(host: &HostTables, ifindex: u32, method: Method) -> Outcome {
    match host.links.get(&ifindex) {
        Some(link) => Outcome::Found(HostInterface {
            ifindex,
            ifname: link.name.clone(),
            method,
        }),
        None => Outcome::Pending,
    }
}

/// Read every pod namespace there is; one that cannot be read (gone
/// meanwhile, or not permitted) is skipped.
fn scan(host: &mut Rtnl) -> Vec<Namespace> {
    netns::candidates()
        .into_iter()
        .filter_map(|(id, path)| match netns::read(id, &path, host) {
            Ok(ns) => Some(ns),
            Err(error) => {
                debug!(path = %path.display(), %error, "cannot read network namespace");
                None
            }
        })
        .collect()
}
