//! The agent's Prometheus metrics.
//!
//! Every label has a fixed, small set of values (`&'static str`), never
//! anything taken from traffic: cardinality stays bounded whatever the node
//! sees. Hot-path counters are pre-resolved handles, so counting is one
//! atomic add.
//!
//! Two kinds of values do not fit prometheus-client's own types and are
//! encoded next to the registry output:
//! - kernel counters, which the datapath keeps and the agent only mirrors
//!   (set, not incremented), through a [`Collector`];
//! - the aggregation delay, kept in an HDR histogram and exported as a
//!   summary (prometheus-client 0.24 has no summary type).

use std::{
    fmt::Write as _,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use hdrhistogram::Histogram;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

/// Content type of [`Metrics::encode`].
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of [`Metrics::encode_openmetrics`].
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Where a flow event came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventSource {
    /// The ring buffer hint.
    Ringbuf,
    /// A sweep of the flow table.
    Sweep,
}

/// Which side of an observation the resolver did not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The local pod behind the veth.
    Endpoint,
    /// The other end.
    Peer,
}

/// Kernel counter values, read by the daemon from the datapath's per-CPU
/// statistics map and summed over CPUs. All are totals since the maps were
/// created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    /// Packets the programs saw.
    pub packets: u64,
    /// Flows inserted into the flow table.
    pub new_flows: u64,
    /// Ring-buffer reservations that failed (`RINGBUF_FULL`).
    pub ringbuf_full: u64,
    /// Flow-table inserts that failed because the table was full.
    pub table_full: u64,
    /// Packets that did not parse.
    pub parse_errors: u64,
    /// Packets that were not IPv4 or IPv6.
    pub non_ip: u64,
    /// IP fragments (not tracked).
    pub fragments: u64,
    /// Packets of transport protocols weir does not track.
    pub unsupported_l4: u64,
    /// ICMP messages other than echo (errors, neighbour discovery): not flows.
    pub icmp_control: u64,
    /// Packets dropped by enforcement.
    pub dropped: u64,
    /// Packets enforcement would have dropped (audit mode).
    pub audit: u64,
    /// Verdict events the datapath's rate limit suppressed.
    pub events_limited: u64,
    /// DNS answers to pods the datapath copied to the ring buffer.
    pub dns_answers: u64,
    /// DNS answers not copied because of the rate limit.
    pub dns_limited: u64,
    /// DNS answers not copied because the ring buffer was full.
    pub dns_ringbuf_full: u64,
    /// DNS answers longer than the copy (cut).
    pub dns_truncated: u64,
    /// TCP segments from port 53 that did not hold one whole answer.
    pub dns_skipped: u64,
}

/// The agent's metrics; share it as `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    ringbuf_events: Counter,
    sweep_events: Counter,
    observations: Counter,
    channel_dropped: Counter,
    dns_parsed: Counter,
    dns_unparsed: Counter,
    dns_nxdomain: Counter,
    dns_bindings: Gauge,
    dns_bindings_dropped: Counter,
    unresolved_endpoint: Counter,
    unresolved_peer: Counter,
    unknown_initiator: Counter,
    flow_table_entries: Gauge,
    flow_table_capacity: Gauge,
    graph_edges: Gauge,
    attached: Gauge,
    attach_failures: Counter,
    verdicts: Family<[(&'static str, String); 3], Counter>,
    enforce_applies: Family<[(&'static str, &'static str); 1], Counter>,
    enforce_entries: Family<[(&'static str, &'static str); 1], Gauge>,
    kube_stale: Family<[(&'static str, &'static str); 1], Gauge>,
    kube_errors: Family<[(&'static str, &'static str); 1], Counter>,
    relay_handshake_failures: Family<[(&'static str, &'static str); 1], Counter>,
    relay_stream_records: Family<[(&'static str, &'static str); 1], Counter>,
    guard_reverts: Family<[(&'static str, String); 1], Counter>,
    promotions: Family<[(&'static str, String); 2], Counter>,
    kernel: Arc<KernelCollector>,
    delay: Mutex<DelayWindow>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("weir");

        let events = Family::<[(&'static str, &'static str); 1], Counter>::default();
        let ringbuf_events = events.get_or_create(&[("source", "ringbuf")]).clone();
        let sweep_events = events.get_or_create(&[("source", "sweep")]).clone();
        registry.register(
            "flow_events",
            "Flow events read from the datapath, by where they came from",
            events,
        );

        let observations = Counter::default();
        registry.register(
            "observations",
            "Observations folded into the flow graph",
            observations.clone(),
        );
        let channel_dropped = Counter::default();
        registry.register(
            "channel_dropped",
            "Observations dropped because the aggregator's queue was full",
            channel_dropped.clone(),
        );
        let dns_parsed = Counter::default();
        registry.register(
            "dns_answers_parsed",
            "DNS answers to pods parsed into names",
            dns_parsed.clone(),
        );
        let dns_unparsed = Counter::default();
        registry.register(
            "dns_answers_unparsed",
            "DNS answers to pods that did not parse (malformed, cut, not a response)",
            dns_unparsed.clone(),
        );
        let dns_nxdomain = Counter::default();
        registry.register(
            "dns_answers_nxdomain",
            "DNS answers to pods that said the name does not exist (NXDOMAIN), of those parsed",
            dns_nxdomain.clone(),
        );
        let dns_bindings = Gauge::default();
        registry.register(
            "dns_name_bindings",
            "(pod, address, name) bindings the agent holds from DNS answers",
            dns_bindings.clone(),
        );
        let dns_bindings_dropped = Counter::default();
        registry.register(
            "dns_name_bindings_dropped",
            "Bindings (and NXDOMAIN names) from DNS answers not kept: the name map was full",
            dns_bindings_dropped.clone(),
        );

        let unresolved = Family::<[(&'static str, &'static str); 1], Counter>::default();
        let unresolved_endpoint = unresolved.get_or_create(&[("side", "endpoint")]).clone();
        let unresolved_peer = unresolved.get_or_create(&[("side", "peer")]).clone();
        registry.register(
            "unresolved",
            "Observations whose endpoint pod or peer pod was unknown to the resolver",
            unresolved,
        );
        let unknown_initiator = Counter::default();
        registry.register(
            "initiator_unknown",
            "Observations left out of the graph because their initiator was unknown",
            unknown_initiator.clone(),
        );

        let flow_table_entries = Gauge::default();
        registry.register(
            "flow_table_entries",
            "Entries in the kernel flow tables (IPv4 and IPv6 together)",
            flow_table_entries.clone(),
        );
        let flow_table_capacity = Gauge::default();
        registry.register(
            "flow_table_capacity",
            "Capacity of each kernel flow table (IPv4, IPv6)",
            flow_table_capacity.clone(),
        );
        let graph_edges = Gauge::default();
        registry.register(
            "graph_edges",
            "Edges of the workload flow graph",
            graph_edges.clone(),
        );
        let attached = Gauge::default();
        registry.register(
            "attached_interfaces",
            "Host-side interfaces the probes are attached to",
            attached.clone(),
        );
        let attach_failures = Counter::default();
        registry.register(
            "attach_failures",
            "Failed attempts to attach the probes to an interface",
            attach_failures.clone(),
        );

        // The namespace label is bounded by the cluster's namespaces, and
        // verdict and reason by their fixed sets.
        let verdicts = Family::<[(&'static str, String); 3], Counter>::default();
        registry.register(
            "policy_verdicts",
            "New flows by the namespace of the reporting pod, the datapath's verdict and the deny reason",
            verdicts.clone(),
        );
        let enforce_applies = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "enforce_updates",
            "Policy map updates by outcome (applied, rejected, failed)",
            enforce_applies.clone(),
        );
        let enforce_entries = Family::<[(&'static str, &'static str); 1], Gauge>::default();
        registry.register(
            "enforce_map_entries",
            "Entries the agent wrote to each enforcement map",
            enforce_entries.clone(),
        );

        // The resource label takes the kube source's six resource names.
        let kube_stale = Family::<[(&'static str, &'static str); 1], Gauge>::default();
        registry.register(
            "kube_stale_seconds",
            "Seconds the kube source's view of a resource may have missed changes (0 while its watch is healthy)",
            kube_stale.clone(),
        );
        let kube_errors = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "kube_watch_errors",
            "Errors of the kube source's watches by resource (refused, disconnected, undecodable objects, 410 Gone)",
            kube_errors.clone(),
        );

        let relay_handshake_failures =
            Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "relay_tls_handshake_failures",
            "TLS handshakes the relay listener refused or lost, by reason (certificate: none, or not signed by the CA; protocol; timeout; io)",
            relay_handshake_failures.clone(),
        );

        let relay_stream_records = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register(
            "relay_stream_records",
            "Records the relay's merged flow streams set apart or passed on unordered, by outcome (out_of_order, responder_side, replayed, bad_time, unnamed)",
            relay_stream_records.clone(),
        );

        // The namespace label is bounded by the cluster's namespaces.
        let guard_reverts = Family::<[(&'static str, String); 1], Counter>::default();
        registry.register(
            "guard_reverts",
            "Namespaces the guard set back to audit after enforce dropped learned traffic",
            guard_reverts.clone(),
        );
        let promotions = Family::<[(&'static str, String); 2], Counter>::default();
        registry.register(
            "promotions",
            "Namespaces promoted automatically (weir.dev/promote: auto), by the mode they went to",
            promotions.clone(),
        );

        let kernel = Arc::new(KernelCollector::default());
        registry.register_collector(Box::new(Arc::clone(&kernel)));

        Self {
            registry,
            ringbuf_events,
            sweep_events,
            observations,
            channel_dropped,
            dns_parsed,
            dns_unparsed,
            dns_nxdomain,
            dns_bindings,
            dns_bindings_dropped,
            unresolved_endpoint,
            unresolved_peer,
            unknown_initiator,
            flow_table_entries,
            flow_table_capacity,
            graph_edges,
            attached,
            attach_failures,
            verdicts,
            enforce_applies,
            enforce_entries,
            kube_stale,
            kube_errors,
            relay_handshake_failures,
            relay_stream_records,
            guard_reverts,
            promotions,
            kernel,
            delay: Mutex::new(DelayWindow::new()),
        }
    }

    /// Count a flow event read from the datapath.
    pub fn observed(&self, source: EventSource) {
        match source {
            EventSource::Ringbuf => self.ringbuf_events.inc(),
            EventSource::Sweep => self.sweep_events.inc(),
        };
    }

    /// The name map's size, and bindings it could not keep since the last
    /// call.
    pub fn dns_names(&self, bindings: usize, newly_dropped: u64) {
        self.dns_bindings.set(gauge_value(bindings as u64));
        self.dns_bindings_dropped.inc_by(newly_dropped);
    }

    /// Count a DNS answer to a pod, parsed or not.
    pub fn dns_answer(&self, parsed: bool) {
        if parsed {
            self.dns_parsed.inc();
        } else {
            self.dns_unparsed.inc();
        }
    }

    /// Count a parsed DNS answer that was NXDOMAIN.
    pub fn dns_nxdomain(&self) {
        self.dns_nxdomain.inc();
    }

    /// Count an observation the aggregator's queue had no room for.
    pub fn channel_dropped(&self) {
        self.channel_dropped.inc();
    }

    /// Count an observation whose endpoint or peer was unknown.
    pub fn unresolved(&self, side: Side) {
        match side {
            Side::Endpoint => self.unresolved_endpoint.inc(),
            Side::Peer => self.unresolved_peer.inc(),
        };
    }

    /// Count an observation left out of the graph for want of an initiator.
    pub fn unknown_initiator(&self) {
        self.unknown_initiator.inc();
    }

    /// Count a folded observation and record its aggregation delay: from
    /// the kernel timestamp to `now`, both Unix nanoseconds.
    pub fn folded(&self, kernel_time: u64, now: u64) {
        self.observations.inc();
        self.record_delay(now.saturating_sub(kernel_time), now);
    }

    /// Record one aggregation delay in nanoseconds, `now` being the Unix
    /// time in nanoseconds (it paces the quantile window).
    pub fn record_delay(&self, delay_ns: u64, now: u64) {
        // A poisoned lock only means another thread panicked mid-record; the
        // histogram is still usable.
        let mut window = self.delay.lock().unwrap_or_else(PoisonError::into_inner);
        window.record(delay_ns, now);
    }

    /// Set the flow table's occupancy.
    pub fn set_flow_table(&self, entries: u64, capacity: u64) {
        self.flow_table_entries.set(gauge_value(entries));
        self.flow_table_capacity.set(gauge_value(capacity));
    }

    /// The flow table's capacity as last set.
    #[must_use]
    pub fn flow_table_capacity(&self) -> u64 {
        u64::try_from(self.flow_table_capacity.get()).unwrap_or(0)
    }

    /// Set the number of graph edges.
    pub fn set_graph_edges(&self, edges: usize) {
        self.graph_edges.set(gauge_value(edges as u64));
    }

    /// Set the number of interfaces the probes are attached to.
    pub fn set_attached(&self, interfaces: usize) {
        self.attached.set(gauge_value(interfaces as u64));
    }

    /// Count a failed attach.
    pub fn attach_failed(&self) {
        self.attach_failures.inc();
    }

    /// Count a new flow's verdict at a pod of `namespace`.
    pub fn verdict(
        &self,
        namespace: &str,
        verdict: crate::flow::Verdict,
        reason: crate::flow::DenyReason,
    ) {
        self.verdicts
            .get_or_create(&[
                ("namespace", namespace.to_owned()),
                ("verdict", verdict.as_str().to_owned()),
                ("reason", reason.as_str().to_owned()),
            ])
            .inc();
    }

    /// Count a revert of `namespace` by the guard.
    pub fn guard_revert(&self, namespace: &str) {
        self.guard_reverts
            .get_or_create(&[("namespace", namespace.to_owned())])
            .inc();
    }

    /// Count an automatic promotion of `namespace` to `to`.
    pub fn promotion(&self, namespace: &str, to: weir_generator::datapath::Mode) {
        self.promotions
            .get_or_create(&[("namespace", namespace.to_owned()), ("to", to.to_string())])
            .inc();
    }

    /// Count a policy map update: `applied`, `rejected` (invalid input or
    /// over a limit: nothing changed) or `failed` (a map write failed).
    pub fn enforce_update(&self, outcome: &'static str) {
        self.enforce_applies
            .get_or_create(&[("outcome", outcome)])
            .inc();
    }

    /// Set the number of entries in one enforcement map.
    pub fn set_enforce_entries(&self, map: &'static str, entries: usize) {
        self.enforce_entries
            .get_or_create(&[("map", map)])
            .set(gauge_value(entries as u64));
    }

    /// Count an error of the kube source's watch on `resource`.
    pub fn kube_watch_error(&self, resource: &'static str) {
        self.kube_errors
            .get_or_create(&[("resource", resource)])
            .inc();
    }

    /// Count a TLS handshake the relay listener did not complete, by
    /// `reason`: `certificate`, `protocol`, `timeout` or `io`.
    pub fn relay_handshake_failed(&self, reason: &'static str) {
        self.relay_handshake_failures
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// The relay listener's failed handshakes for `reason` so far.
    #[must_use]
    pub fn relay_handshake_failures(&self, reason: &'static str) -> u64 {
        self.relay_handshake_failures
            .get_or_create(&[("reason", reason)])
            .get()
    }

    /// Count `records` the relay's stream merge set apart for `outcome`.
    pub fn relay_stream_records(&self, outcome: &'static str, records: u64) {
        if records > 0 {
            self.relay_stream_records
                .get_or_create(&[("outcome", outcome)])
                .inc_by(records);
        }
    }

    /// Set how stale the kube source's view of `resource` is.
    pub fn set_kube_stale(&self, resource: &'static str, seconds: u64) {
        self.kube_stale
            .get_or_create(&[("resource", resource)])
            .set(gauge_value(seconds));
    }

    /// Mirror the datapath's counters.
    pub fn set_kernel_counters(&self, counters: &KernelCounters) {
        self.kernel.set(counters);
    }

    /// The Prometheus text format (0.0.4), what `/metrics` serves by default.
    #[must_use]
    pub fn encode(&self) -> String {
        to_prometheus_text(&self.encode_openmetrics())
    }

    /// The OpenMetrics text format, for scrapers that ask for it.
    #[must_use]
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; an error here would be a bug in
        // a collector, and an empty scrape says so without crashing.
        if prometheus_client::encoding::text::encode_registry(&mut out, &self.registry).is_err() {
            return String::new();
        }
        {
            let window = self.delay.lock().unwrap_or_else(PoisonError::into_inner);
            window.encode(&mut out);
        }
        out.push_str("# EOF\n");
        out
    }
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// OpenMetrics text -> Prometheus text 0.0.4: counters are declared with
/// their `_total` name (0.0.4 parsers match `# TYPE` to sample names
/// literally) and the OpenMetrics-only lines go.
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .filter(|name| !name.ends_with("_total"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Kernel counters, mirrored: the datapath owns the totals, the agent only
/// reports the last values it read.
#[derive(Debug, Default)]
struct KernelCollector {
    values: [AtomicU64; KERNEL_COUNTERS.len()],
}

/// Names (without the registry's `weir_` prefix) and help of the mirrored
/// kernel counters, in [`KernelCollector::values`] order.
const KERNEL_COUNTERS: [(&str, &str); 17] = [
    ("datapath_packets", "Packets seen by the datapath"),
    (
        "datapath_new_flows",
        "Flows inserted into the kernel flow table",
    ),
    (
        "ringbuf_lost",
        "Flow events the ring buffer had no room for (recovered by sweeps)",
    ),
    (
        "flow_table_full",
        "Flows not tracked because the kernel flow table was full",
    ),
    (
        "datapath_parse_errors",
        "Packets the datapath could not parse",
    ),
    ("datapath_non_ip", "Packets that were neither IPv4 nor IPv6"),
    ("datapath_fragments", "IP fragments (not tracked)"),
    (
        "datapath_unsupported_l4",
        "Packets of transport protocols weir does not track",
    ),
    (
        "datapath_icmp_control",
        "ICMP errors and neighbour discovery: control traffic, not flows",
    ),
    ("policy_dropped_packets", "Packets dropped by enforcement"),
    (
        "policy_audit_packets",
        "Packets enforcement would have dropped (namespaces in audit mode)",
    ),
    (
        "policy_events_limited",
        "Verdict events the datapath's rate limit suppressed",
    ),
    (
        "dns_answers_copied",
        "DNS answers to pods the datapath copied to the agent",
    ),
    (
        "dns_answers_limited",
        "DNS answers not copied: the datapath's rate limit",
    ),
    (
        "dns_answers_ringbuf_lost",
        "DNS answers not copied: the ring buffer was full",
    ),
    (
        "dns_answers_truncated",
        "DNS answers longer than the datapath's copy (cut)",
    ),
    (
        "dns_answers_skipped",
        "TCP segments from port 53 that did not hold one whole answer (not copied)",
    ),
];

impl KernelCollector {
    fn set(&self, c: &KernelCounters) {
        let values = [
            c.packets,
            c.new_flows,
            c.ringbuf_full,
            c.table_full,
            c.parse_errors,
            c.non_ip,
            c.fragments,
            c.unsupported_l4,
            c.icmp_control,
            c.dropped,
            c.audit,
            c.events_limited,
            c.dns_answers,
            c.dns_limited,
            c.dns_ringbuf_full,
            c.dns_truncated,
            c.dns_skipped,
        ];
        for (slot, v) in self.values.iter().zip(values) {
            slot.store(v, Ordering::Relaxed);
        }
    }
}

impl Collector for KernelCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for ((name, help), value) in KERNEL_COUNTERS.iter().zip(&self.values) {
            let counter = ConstCounter::new(value.load(Ordering::Relaxed));
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

/// Width of one histogram window. Quantiles cover the last one to two
/// windows, so they follow the current delay rather than the delay since
/// start (what client_golang's summaries do with `MaxAge`).
const WINDOW_NS: u64 = 60_000_000_000;
/// Delays above this are recorded as this (a minute late is simply late).
const MAX_DELAY_NS: u64 = 60_000_000_000;
const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];
const DELAY_NAME: &str = "weir_aggregation_delay_seconds";

/// Aggregation delays: two rotating HDR histograms for the quantiles, and
/// exact cumulative sum and count as a summary's `_sum` and `_count` require.
#[derive(Debug)]
struct DelayWindow {
    current: Histogram<u64>,
    previous: Histogram<u64>,
    window_start: u64,
    sum_ns: u128,
    count: u64,
}

impl DelayWindow {
    fn new() -> Self {
        Self {
            current: new_histogram(),
            previous: new_histogram(),
            window_start: 0,
            sum_ns: 0,
            count: 0,
        }
    }

    fn record(&mut self, delay_ns: u64, now: u64) {
        if now.saturating_sub(self.window_start) >= WINDOW_NS {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.reset();
            self.window_start = now;
        }
        self.current.saturating_record(delay_ns.min(MAX_DELAY_NS));
        self.sum_ns += u128::from(delay_ns);
        self.count += 1;
    }

    fn encode(&self, out: &mut String) {
        let mut merged = self.current.clone();
        // Both histograms share their bounds, so adding cannot fail.
        if merged.add(&self.previous).is_err() {
            merged = self.current.clone();
        }
        let _ = writeln!(
            out,
            "# HELP {DELAY_NAME} Delay from the kernel timestamp of a flow event to its folding into the graph (quantiles over the last 1-2 minutes)"
        );
        let _ = writeln!(out, "# TYPE {DELAY_NAME} summary");
        for q in QUANTILES {
            let ns = if merged.is_empty() {
                0
            } else {
                merged.value_at_quantile(q)
            };
            let _ = writeln!(out, "{DELAY_NAME}{{quantile=\"{q}\"}} {}", seconds(ns));
        }
        #[expect(
            clippy::cast_precision_loss,
            reason = "a sum in seconds is a float; nanosecond precision is not needed"
        )]
        let sum = self.sum_ns as f64 / 1e9;
        let _ = writeln!(out, "{DELAY_NAME}_sum {sum}");
        let _ = writeln!(out, "{DELAY_NAME}_count {}", self.count);
    }
}

fn new_histogram() -> Histogram<u64> {
    // 3 significant digits from 1 ns to a minute: about 30 KiB each. The
    // bounds are constants, so the constructor cannot fail at run time.
    Histogram::new_with_max(MAX_DELAY_NS, 3).expect("constant histogram bounds are valid")
}

#[expect(clippy::cast_precision_loss, reason = "delays are far below 2^53 ns")]
fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_has_every_metric_with_prometheus_counter_names() {
        let m = Metrics::new();
        m.observed(EventSource::Ringbuf);
        m.observed(EventSource::Sweep);
        m.channel_dropped();
        m.unresolved(Side::Peer);
        m.set_flow_table(10, 65536);
        m.set_attached(3);
        m.attach_failed();
        m.set_graph_edges(4);
        m.set_kernel_counters(&KernelCounters {
            ringbuf_full: 7,
            dns_limited: 5,
            ..KernelCounters::default()
        });
        m.dns_names(12, 3);
        m.folded(1_000, 1_000 + 250_000);
        let text = m.encode();
        for needle in [
            "weir_flow_events_total{source=\"ringbuf\"} 1",
            "weir_flow_events_total{source=\"sweep\"} 1",
            "# TYPE weir_flow_events_total counter",
            "weir_observations_total 1",
            "weir_ringbuf_lost_total 7",
            "weir_dns_answers_limited_total 5",
            "weir_dns_name_bindings 12",
            "weir_dns_name_bindings_dropped_total 3",
            "weir_flow_table_entries 10",
            "weir_flow_table_capacity 65536",
            "weir_channel_dropped_total 1",
            "weir_unresolved_total{side=\"peer\"} 1",
            "weir_unresolved_total{side=\"endpoint\"} 0",
            "weir_graph_edges 4",
            "weir_attached_interfaces 3",
            "weir_attach_failures_total 1",
            "# TYPE weir_aggregation_delay_seconds summary",
            "weir_aggregation_delay_seconds{quantile=\"0.99\"} 0.00025",
            "weir_aggregation_delay_seconds_count 1",
        ] {
            // Whole lines: a doubled prefix must not pass as a substring.
            assert!(
                text.lines().any(|l| l.starts_with(needle)),
                "missing {needle:?} in\n{text}"
            );
        }
        assert!(
            !text.contains("weir_weir_"),
            "prefix applied twice:\n{text}"
        );
        assert!(!text.contains("# EOF"));
        assert!(m.encode_openmetrics().ends_with("# EOF\n"));
    }

    #[test]
    fn delay_quantiles_forget_old_windows() {
        let mut w = DelayWindow::new();
        w.record(1_000_000_000, WINDOW_NS);
        w.record(1_000, 3 * WINDOW_NS);
        w.record(1_000, 5 * WINDOW_NS);
        let mut out = String::new();
        w.encode(&mut out);
        assert!(out.contains("{quantile=\"0.999\"} 0.000001"), "{out}");
        assert!(out.contains("_count 3"), "{out}");
    }
}
