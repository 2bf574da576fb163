//! The datapath task: the only owner of aya. It attaches the probes to the
//! pods the source reports, drains the new-flow ring buffer, sweeps the flow
//! table, and sends observations to the fold task.
//!
//! Everything runs in one task with `select!`, so the tracker needs no lock
//! and attach/detach never race with a sweep.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    sync::{mpsc, watch},
    time::MissedTickBehavior,
};
use tracing::{debug, info, trace, warn};
use weir_ebpf::{
    abi::{self, DnsEvent, FlowEvent, FlowKey, RingRecord},
    loader::{AttachError, Datapath, FlowTable, LoadOptions, PolicyMaps},
};
use weir_generator::{datapath::PodKey, model::Protocol};

use super::{
    Config, SharedResolver,
    preexisting::{self, SocketHints},
};
use crate::{
    enforce::NodeView,
    flow::{EntryCounters, EntryKey, Observation},
    health::Health,
    metrics::{EventSource, KernelCounters, Metrics},
    netdev::{Discoverer, Outcome, PodQuery},
    resolve::{Inventory, Resolver, Source},
    tracker::{Clock, FlowTracker, monotonic_now_ns},
};

/// The datapath task's state.
pub(super) struct DatapathTask {
    datapath: Datapath,
    ring: AsyncFd<RingBuf<MapData>>,
    table: FlowTable,
    tracker: FlowTracker,
    source: Box<dyn Source>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    resolver: SharedResolver,
    tx: mpsc::Sender<Observation>,
    /// The flow table's real capacity (a pinned table keeps its own).
    flow_table_entries: u32,
    sweep_interval: Duration,
    resync_interval: Duration,
    /// Attached interfaces and their ifindex.
    ifindexes: BTreeMap<String, u32>,
    /// The pod IPs behind each attached ifindex.
    endpoint_ips: HashMap<u32, Vec<IpAddr>>,
    /// Pods' sockets, for connections open before the probes attached.
    hints: SocketHints,
    /// The source's last warnings, logged once each time they change.
    source_warnings: Vec<String>,
    /// Interfaces that failed to attach, by ifindex, so a bad one is not
    /// retried (and logged) every resync; a new interface of the same name is.
    failed: BTreeMap<String, Option<u32>>,
    /// The node as the enforcer needs it, published after every resync
    /// that changed it.
    node: watch::Sender<Option<Arc<NodeView>>>,
    /// Node addresses from the command line.
    node_ips: Vec<IpAddr>,
    /// Finds the host veths of local pods the source names none for.
    discoverer: Discoverer,
    /// The names DNS answers gave pods' peers.
    names: Arc<crate::dns::Names>,
    /// The name map's drops already reported as a metric.
    names_dropped: u64,
    /// Where records of NXDOMAIN answers go (the flow stream).
    flows: Option<Arc<crate::aggregator::Aggregator>>,
}

impl DatapathTask {
    /// Load the programs and open the maps (adopting those pinned by a
    /// previous agent); the enforcement maps are handed out to their owner,
    /// the enforcer.
    pub(super) fn start(
        config: &Config,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        resolver: SharedResolver,
        tx: mpsc::Sender<Observation>,
        node: watch::Sender<Option<Arc<NodeView>>>,
        source: Box<dyn Source>,
    ) -> anyhow::Result<(Self, PolicyMaps)> {
        let mut datapath = Datapath::load(&LoadOptions {
            flow_table_entries: config.flow_table_entries,
            ringbuf_bytes: config.ringbuf_bytes,
            pin: config.pin_dir.clone(),
            ..LoadOptions::default()
        })
        .context("cannot load the eBPF programs")?;
        if let Some(dir) = datapath.pin_dir() {
            info!(pin_dir = %dir.display(), "datapath pinned: it keeps running when the agent stops");
        }
        // Pinned maps keep their size: say so, and report the real one.
        for size in datapath.resized_maps() {
            warn!(
                map = size.map,
                asked = size.requested,
                size = size.actual,
                "the pinned map {} was adopted with the size an earlier agent gave it ({}), not the {} asked for; \
                 it keeps that size while pinned: `weir agent --cleanup` (which also ends enforcement until the \
                 next start) and a restart apply the new size",
                size.map,
                size.actual,
                size.requested
            );
        }
        let flow_table_entries = datapath.flow_table_capacity();
        health.set_flow_table_capacity(u64::from(flow_table_entries));
        metrics.set_flow_table(0, u64::from(flow_table_entries));
        let policy_maps = datapath.take_policy_maps().context("enforcement maps")?;
        let ring = datapath.take_ring_buf().context("ring buffer")?;
        // SAFETY: the AsyncFd owns the RingBuf, which owns the map's fd, so
        // the fd stays open for as long as it is registered.
        #[expect(
            unsafe_code,
            reason = "tokio's AsyncFd::register is unsafe for I/O safety"
        )]
        let ring = unsafe { AsyncFd::register(ring) }
            .map_err(|e| e.into_parts().1)
            .context("cannot poll the ring buffer")?;
        let table = datapath.take_flow_table().context("flow table")?;
        // The baseline of the loss counters: what adopted maps counted
        // before this agent is not its to report.
        match datapath.counters() {
            Ok(c) => health.kernel_totals(
                c[abi::CNT_TABLE_FULL],
                c[abi::CNT_RINGBUF_FULL],
                Clock::now().to_unix(monotonic_now_ns()),
            ),
            Err(error) => warn!(%error, "cannot read kernel counters"),
        }
        let tracker = FlowTracker::new(config.expiry);
        let task = Self {
            datapath,
            ring,
            table,
            tracker,
            source,
            metrics,
            health,
            resolver,
            tx,
            flow_table_entries,
            sweep_interval: config.sweep_interval,
            resync_interval: config.resync_interval,
            ifindexes: BTreeMap::new(),
            endpoint_ips: HashMap::new(),
            hints: SocketHints::default(),
            source_warnings: Vec::new(),
            failed: BTreeMap::new(),
            node,
            node_ips: config.node_ips.clone(),
            discoverer: Discoverer::new(),
            names: Arc::default(),
            names_dropped: 0,
            flows: None,
        };
        Ok((task, policy_maps))
    }

    /// What the store holds of the (pinned) table's entries was folded
    /// already: their reports start from there. Call it before [`Self::run`].
    pub(super) fn seed(&mut self, folded: &[(EntryKey, EntryCounters)]) {
        self.tracker.seed(folded.iter().copied());
    }

    /// Run until `shutdown` turns true; then sweep once more so the last
    /// counters reach the aggregator, and detach everything (by dropping the
    /// datapath).
    pub(super) async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        self.resync().await;
        let mut sweep = tokio::time::interval(self.sweep_interval);
        sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut resync = tokio::time::interval(self.resync_interval);
        resync.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                ready = self.ring.readable_mut() => {
                    let mut guard = ready.context("ring buffer poll failed")?;
                    let (events, answers) = drain(guard.get_inner_mut());
                    guard.clear_ready();
                    self.answers(&answers);
                    self.announce(&events);
                }
                _ = sweep.tick() => self.sweep().await,
                _ = resync.tick() => self.resync().await,
            }
        }
        let (events, answers) = drain(self.ring.get_mut());
        self.answers(&answers);
        self.announce(&events);
        self.sweep().await;
        let attached = self.datapath.attached().count();
        let pinned = self.datapath.pin_dir().is_some();
        drop(self.datapath);
        if pinned {
            info!(
                interfaces = attached,
                "probes stay attached (pinned); `weir agent --cleanup` removes them"
            );
        } else {
            info!(interfaces = attached, "probes detached");
        }
        Ok(())
    }

    /// New-flow hints: reported at once, dropped (and counted) if the fold
    /// task is behind, since the sweep reports every flow anyway.
    fn announce(&mut self, events: &[FlowEvent]) {
        let clock = Clock::now();
        for event in events {
            self.metrics.observed(EventSource::Ringbuf);
            if let Some(mut obs) = self.tracker.on_event(event, clock) {
                self.settle(&mut obs);
                if let Err(error) = self.tx.try_send(obs) {
                    // The sweep reports it instead, as a new connection.
                    self.tracker.unreport(&event.key, &error.into_inner());
                    self.metrics.channel_dropped();
                }
            }
        }
    }

    /// Read the whole flow table: counters, lost announcements, expiry.
    /// Sweep reports wait for room in the queue: they are the source of
    /// truth and must not be dropped.
    async fn sweep(&mut self) {
        let clock = Clock::now();
        let now = monotonic_now_ns();
        let mut read_errors = 0_u32;
        let entries: Vec<_> = self
            .table
            .iter()
            .filter_map(|entry| entry.map_err(|_| read_errors += 1).ok())
            .collect();
        if read_errors > 0 {
            debug!(read_errors, "flow table entries changed while swept");
        }
        let result = self.tracker.sweep(entries, now, clock);
        for key in &result.expired {
            if let Err(error) = self.table.remove(key) {
                trace!(%error, "expired flow already gone");
            }
        }
        if result.recovered > 0 {
            debug!(
                recovered = result.recovered,
                "flows found by the sweep, not the ring buffer"
            );
        }
        self.metrics.set_flow_table(
            result.entries - result.expired.len() as u64,
            u64::from(self.flow_table_entries),
        );
        for mut obs in result.observations {
            self.metrics.observed(EventSource::Sweep);
            self.settle(&mut obs);
            if self.tx.send(obs).await.is_err() {
                break;
            }
        }
        match self.datapath.counters() {
            Ok(c) => {
                self.health.kernel_totals(
                    c[abi::CNT_TABLE_FULL],
                    c[abi::CNT_RINGBUF_FULL],
                    clock.to_unix(now),
                );
                self.metrics.set_kernel_counters(&KernelCounters {
                    packets: c[abi::CNT_PACKETS],
                    new_flows: c[abi::CNT_NEW_FLOWS],
                    ringbuf_full: c[abi::CNT_RINGBUF_FULL],
                    table_full: c[abi::CNT_TABLE_FULL],
                    parse_errors: c[abi::CNT_PARSE_ERROR],
                    non_ip: c[abi::CNT_NON_IP],
                    fragments: c[abi::CNT_FRAGMENT],
                    unsupported_l4: c[abi::CNT_UNSUPPORTED_L4],
                    icmp_control: c[abi::CNT_ICMP_CONTROL],
                    dropped: c[abi::CNT_DROPPED],
                    audit: c[abi::CNT_AUDIT],
                    events_limited: c[abi::CNT_EVENTS_LIMITED],
                    dns_answers: c[abi::CNT_DNS_ANSWERS],
                    dns_limited: c[abi::CNT_DNS_LIMITED],
                    dns_ringbuf_full: c[abi::CNT_DNS_RINGBUF_FULL],
                    dns_truncated: c[abi::CNT_DNS_TRUNCATED],
                    dns_skipped: c[abi::CNT_DNS_SKIPPED],
                });
            }
            Err(error) => warn!(error = %error, "cannot read kernel counters"),
        }
    }

    /// Where the DNS answers' names go (the map the aggregator reads).
    pub(super) fn set_names(&mut self, names: Arc<crate::dns::Names>) {
        self.names = names;
    }

    /// Where records of NXDOMAIN answers go: the aggregator's flow stream,
    /// so `weir observe` shows a name that did not exist as it happens.
    pub(super) fn set_flow_records(&mut self, aggregator: Arc<crate::aggregator::Aggregator>) {
        self.flows = Some(aggregator);
    }

    /// DNS answers pods received: parsed into the names their peers have
    /// (what does not parse is counted); an NXDOMAIN answer is also a
    /// record in the flow stream and is counted.
    fn answers(&mut self, answers: &[DnsEvent]) {
        if answers.is_empty() {
            return;
        }
        let clock = Clock::now();
        for ev in answers {
            match crate::dns::parse(ev.message()) {
                Ok(answer) => {
                    self.metrics.dns_answer(true);
                    let at = clock.to_unix(ev.timestamp_ns);
                    self.names.record(ev.key.local_ip(), &answer, at);
                    if answer.rcode == crate::dns::Rcode::NxDomain {
                        self.metrics.dns_nxdomain();
                        self.nxdomain_record(ev, &answer, at);
                    }
                }
                Err(error) => {
                    self.metrics.dns_answer(false);
                    trace!(%error, truncated = ev.truncated(), "dns answer not parsed");
                }
            }
        }
        let stats = self.names.stats();
        self.metrics.dns_names(
            stats.bindings,
            stats.dropped.saturating_sub(self.names_dropped),
        );
        self.names_dropped = stats.dropped;
    }

    fn nxdomain_record(&self, ev: &DnsEvent, answer: &crate::dns::Answer, at: u64) {
        let Some(flows) = &self.flows else {
            return;
        };
        let protocol = if ev.transport == abi::DNS_TCP {
            Protocol::Tcp
        } else {
            Protocol::Udp
        };
        let resolver = Arc::clone(&self.resolver.read().unwrap_or_else(|e| e.into_inner()));
        flows.record_dns_answer(
            protocol,
            ev.key.ifindex,
            SocketAddr::new(ev.key.local_ip(), ev.key.local_port),
            SocketAddr::new(ev.key.remote_ip(), ev.key.remote_port),
            at,
            crate::aggregator::DnsAnswer {
                query: Arc::from(answer.query.as_str()),
                rcode: 3,
            },
            resolver.as_ref(),
        );
    }

    /// Settle a guessed initiator from the pod's sockets.
    fn settle(&mut self, obs: &mut Observation) {
        if obs.initiator_guessed {
            let ips = self.endpoint_ips.get(&obs.ifindex).map(Vec::as_slice);
            self.hints.settle(obs, ips);
        }
    }

    /// Report the connections a newly attached pod already has open: the
    /// probes will never see their handshake, and an idle one no packet.
    async fn report_open_connections(&mut self, ifindex: u32) {
        let Some(ips) = self.endpoint_ips.get(&ifindex).cloned() else {
            return;
        };
        let Some(sockets) = self.hints.read(ifindex, &ips) else {
            debug!(ifindex, "no network namespace holds the pod's IPs");
            return;
        };
        let monotonic = monotonic_now_ns();
        let now = Clock::now().to_unix(monotonic);
        // A connection with a table entry was seen by the probes (opened
        // since the attach, its announcement not drained yet, or a packet
        // since): the entry reports it, with its first packet's time and
        // verdict. A socket is established only after a handshake packet
        // crossed the veth, so every connection opened since has one.
        let open: Vec<_> = preexisting::open_connections(ifindex, sockets, now)
            .into_iter()
            .filter(|(key, _)| !self.in_table(key))
            .collect();
        if !open.is_empty() {
            info!(
                ifindex,
                connections = open.len(),
                "learned connections open before attach"
            );
        }
        for (key, obs) in open {
            if self.tracker.adopt(key, monotonic) && self.tx.send(obs).await.is_err() {
                break;
            }
        }
    }

    /// Whether the flow table holds `key`; a failed lookup answers no, and
    /// the socket's report stands in (adopted, it is counted once either way).
    fn in_table(&self, key: &FlowKey) -> bool {
        match self.table.get(key) {
            Ok(found) => found.is_some(),
            Err(error) => {
                debug!(%error, "flow table lookup failed");
                false
            }
        }
    }

    /// Re-read the source: attach to new pods, detach from gone ones, and
    /// swap in a fresh resolver. A source that cannot be read keeps the
    /// previous view.
    async fn resync(&mut self) {
        let mut inventory = match self.source.snapshot() {
            Ok(inventory) => inventory,
            Err(error) => {
                warn!(
                    source = self.source.name(),
                    error = crate::error_chain::chain(&error),
                    "cannot read pod source, keeping the previous view"
                );
                return;
            }
        };
        if inventory.warnings != self.source_warnings {
            for warning in &inventory.warnings {
                warn!(source = self.source.name(), "{warning}");
            }
            self.source_warnings.clone_from(&inventory.warnings);
        }
        self.discover_host_veths(&mut inventory);
        let attached = self.reconcile_attachments(&inventory);
        let resolver = Resolver::new(&inventory, |ifname| {
            nix::net::if_::if_nametoindex(ifname).ok()
        });
        let view = NodeView {
            cluster: resolver.cluster(),
            local: inventory
                .pods
                .iter()
                .filter_map(|p| {
                    let ifindex = *self.ifindexes.get(p.host_veth.as_deref()?)?;
                    Some((PodKey::new(&p.meta.namespace, &p.meta.name), ifindex))
                })
                .collect(),
            node_ips: self.node_ips(&inventory.node_ips),
            policies: inventory.policies.clone(),
            modes: inventory.modes.clone(),
        };
        // The resolver first: the guard reads a flip's settings (the
        // `weir.dev/guard-skip` written with the mode label) from it once
        // the enforcer has the new modes.
        *self.resolver.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(resolver);
        self.node.send_if_modified(|current| {
            if current.as_deref() == Some(&view) {
                false
            } else {
                *current = Some(Arc::new(view));
                true
            }
        });
        // Only now: the fold task resolves these reports with the resolver
        // just installed, which knows the newly attached pods.
        for ifindex in attached {
            self.report_open_connections(ifindex).await;
        }
    }

    /// The node's addresses: `--node-ip`s and the source's (for a lab,
    /// its node's bridge addresses, where the lab's "kubelet" would probe
    /// from; a lab that is not up has none).
    fn node_ips(&self, from_source: &[IpAddr]) -> Vec<IpAddr> {
        let mut ips = self.node_ips.clone();
        ips.extend(from_source);
        ips.sort_unstable();
        ips.dedup();
        ips
    }

    /// Name the host veth of each local pod the source names none for,
    /// from the kernel's routes, neighbours, FDB and pod namespaces
    /// (`crate::netdev`). A pod found nowhere yet is asked for again at
    /// the next resync; a hostNetwork pod is never attached.
    fn discover_host_veths(&mut self, inventory: &mut Inventory) {
        let wanted: Vec<usize> = (0..inventory.pods.len())
            .filter(|&i| {
                let pod = &inventory.pods[i];
                pod.local && pod.host_veth.is_none() && !pod.meta.ips.is_empty()
            })
            .collect();
        if wanted.is_empty() {
            return;
        }
        let queries: Vec<PodQuery<'_>> = wanted
            .iter()
            .map(|&i| {
                let meta = &inventory.pods[i].meta;
                PodQuery {
                    namespace: &meta.namespace,
                    name: &meta.name,
                    ips: &meta.ips,
                }
            })
            .collect();
        let discovery = self.discoverer.discover(&queries);
        if let Some(error) = &discovery.error {
            warn!(%error, "cannot read the node's interfaces, keeping the pods' last known ones");
        }
        for (n, (&i, outcome)) in wanted.iter().zip(discovery.outcomes).enumerate() {
            let pod = &mut inventory.pods[i];
            match outcome {
                Outcome::Found(found) => {
                    if discovery.newly_found.contains(&n) {
                        info!(
                            pod = %format_args!("{}/{}", pod.meta.namespace, pod.meta.name),
                            interface = %found.ifname,
                            ifindex = found.ifindex,
                            method = ?found.method,
                            "found the pod's host interface"
                        );
                    }
                    pod.host_veth = Some(found.ifname);
                }
                Outcome::Node => trace!(
                    pod = %format_args!("{}/{}", pod.meta.namespace, pod.meta.name),
                    "pod has the node's address (hostNetwork): not attached"
                ),
                Outcome::Elsewhere | Outcome::Pending => trace!(
                    pod = %format_args!("{}/{}", pod.meta.namespace, pod.meta.name),
                    ?outcome,
                    "no host interface for the pod yet"
                ),
            }
        }
    }

    /// Attach to every pod veth, detach from gone ones. Attachments are
    /// keyed by name and ifindex: CNIs name veths after the pod, so a pod
    /// recreated under the same name brings a new interface with the old
    /// name, whose predecessor's programs went away with it.
    fn reconcile_attachments(&mut self, inventory: &Inventory) -> Vec<u32> {
        let wanted: BTreeMap<&str, Option<u32>> = inventory
            .pods
            .iter()
            .filter_map(|p| p.host_veth.as_deref())
            .map(|name| (name, nix::net::if_::if_nametoindex(name).ok()))
            .collect();
        self.endpoint_ips = inventory
            .pods
            .iter()
            .filter_map(|p| {
                let index = wanted.get(p.host_veth.as_deref()?).copied().flatten()?;
                Some((index, p.meta.ips.clone()))
            })
            .collect();
        let mut newly_attached = Vec::new();
        let stale: Vec<String> = self
            .ifindexes
            .iter()
            .filter(|(name, index)| wanted.get(name.as_str()) != Some(&Some(**index)))
            .map(|(name, _)| name.clone())
            .collect();
        for gone in stale {
            self.ifindexes.remove(&gone);
            match self.datapath.detach(&gone) {
                Ok(()) => info!(interface = %gone, "detached"),
                // The veth went away with its pod: the kernel dropped the links.
                Err(error) => debug!(interface = %gone, %error, "detach"),
            }
        }
        self.failed
            .retain(|name, index| wanted.get(name.as_str()) == Some(index));
        for (&ifname, &index) in &wanted {
            let Some(index) = index else {
                // Listed but not (yet, or any more) in the kernel.
                continue;
            };
            if self.ifindexes.contains_key(ifname) || self.failed.get(ifname) == Some(&Some(index))
            {
                continue;
            }
            match self.datapath.attach(ifname) {
                Ok(a) => {
                    info!(interface = %a.ifname, ifindex = a.ifindex, mode = ?a.mode, "attached");
                    newly_attached.push(a.ifindex);
                    self.ifindexes.insert(a.ifname, a.ifindex);
                }
                Err(AttachError::InterfaceGone { ifname }) => {
                    // The pod went away between listing and attaching.
                    self.metrics.attach_failed();
                    warn!(interface = %ifname, "interface vanished before attach, skipped");
                }
                Err(error) => {
                    self.metrics.attach_failed();
                    self.failed.insert(ifname.to_owned(), Some(index));
                    warn!(
                        interface = %ifname,
                        error = crate::error_chain::chain(&error),
                        "cannot attach, skipped"
                    );
                }
            }
        }
        self.metrics.set_attached(self.ifindexes.len());
        let live: std::collections::HashSet<u32> = self.ifindexes.values().copied().collect();
        self.hints.retain(|ifindex| live.contains(&ifindex));
        newly_attached
    }
}

/// Everything in the ring buffer now: new-flow hints, and DNS answers.
/// Records that do not decode (an ABI mismatch) are skipped: the sweep
/// still reports their flows.
fn drain(ring: &mut RingBuf<MapData>) -> (Vec<FlowEvent>, Vec<DnsEvent>) {
    let mut events = Vec::new();
    let mut answers = Vec::new();
    while let Some(item) = ring.next() {
        match RingRecord::from_bytes(&item) {
            Ok(RingRecord::Flow(event)) => events.push(event),
            Ok(RingRecord::Dns(answer)) => answers.push(*answer),
            Err(error) => trace!(%error, "undecodable ring buffer record"),
        }
    }
    (events, answers)
}
