//! The relay at scale: 100 and 1,000 simulated agents in one process, all
//! together holding the learner benchmark's cluster (10,000 pods, 1M flow
//! records, about 59k workload edges; `generator/benches/synth.rs`).
//!
//! `cargo bench -p weir --bench relay` prints markdown tables for
//! docs/benchmarks.md. `WEIR_BENCH_QUICK=1` runs 100 agents only.
//!
//! Pod `i` runs on node `i % agents`, so a workload's five pods are on five
//! nodes and a connection between two nodes is in both their
//! contributions (its initiator's side and its responder's). The agents
//! are in-process: each holds its contribution as the JSON it would
//! serve, and the relay reads them through its own [`Fetch`] seam, parsing
//! that JSON (no sockets, no TLS: those are the agent's and the network's
//! cost, not the relay's). Everything else is the relay's own code: the
//! sync tasks with their concurrency and events, the hub, the merge, the
//! aggregator serving the merged view, and its redb checkpoint.

#![expect(
    clippy::print_stdout,
    reason = "a benchmark prints its table on stdout"
)]
#![expect(
    clippy::cast_precision_loss,
    reason = "rates and sizes are printed approximately"
)]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use tokio::sync::{Notify, watch};
use weir_agent::{
    aggregator::{Aggregator, Options as AggregatorOptions},
    api::wire::{
        CONTRIBUTION_FORMAT, ContributedEdgeJson, ContributedPodJson, ContributedWorkloadJson,
        ContributionJson, EdgeEndJson, SeenFromJson, SideJson,
    },
    metrics::Metrics,
    relay::{
        checkpoint::Checkpoint,
        discovery::{AgentEndpoint, AgentSet},
        hub::{Fetched, Hub},
        sync::{self, Fetch, Pace},
    },
};
use weir_generator::{
    cluster::{Cluster, ClusterPod, NamedPort},
    model::{
        EdgeKey, EdgeStats, FlowGraph, NodeId, PodMeta, Protocol, VerdictCounts, WorkloadKind,
        WorkloadRef,
    },
    synth::{self, Options as SynthOptions},
};

/// The system allocator, counting live bytes and their high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` with the caller's arguments;
// the counters do not touch the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `alloc` above with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            let live = LIVE.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// Peak heap above what was live when `f` started.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, Duration, usize) {
    let base = live();
    PEAK.store(base, Ordering::Relaxed);
    let start = Instant::now();
    let out = f();
    let elapsed = start.elapsed();
    (
        out,
        elapsed,
        PEAK.load(Ordering::Relaxed).saturating_sub(base),
    )
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

// ---- the learner benchmark's cluster and records (same generator) ----

/// A tiny deterministic generator (PCG-style LCG), as the learner bench's.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from(self.0 >> 33).expect("31 bits fit") % n
    }
}

const PODS: usize = 10_000;
const RECORDS: usize = 1_000_000;
const PODS_PER_WORKLOAD: usize = 5;
const PODS_PER_NAMESPACE: usize = 500;
const FAN_OUT: usize = 6;
const SERVICE_PORTS: &[(u16, Protocol)] = &[
    (8080, Protocol::Tcp),
    (9090, Protocol::Tcp),
    (5432, Protocol::Tcp),
    (53, Protocol::Udp),
];
/// The relay's pause between a change and the merge (`MERGE_PAUSE` in
/// `relay/mod.rs`), letting a burst of syncs land first.
const MERGE_PAUSE: Duration = Duration::from_millis(200);

/// (source pod, destination: pod index or external address, port index
/// into [`SERVICE_PORTS`], or `None` for the external 443)
type Record = (usize, Result<usize, IpAddr>, Option<usize>);

fn cluster() -> Cluster {
    let mut cluster = Cluster::default();
    for i in 0..PODS {
        let w = i / PODS_PER_WORKLOAD;
        let ns = format!("ns{}", i / PODS_PER_NAMESPACE);
        let workload = WorkloadRef::new(ns.clone(), WorkloadKind::Deployment, format!("svc-{w}"));
        let labels = BTreeMap::from([
            ("app".to_owned(), format!("svc-{w}")),
            ("team".to_owned(), format!("team-{}", w % 7)),
            ("tier".to_owned(), ["web", "api", "db"][w % 3].to_owned()),
            ("pod-template-hash".to_owned(), format!("{:x}", i * 7919)),
        ]);
        let n = u32::try_from(i).expect("pods fit u32") + 1;
        cluster.pods.push(ClusterPod {
            meta: PodMeta {
                namespace: ns,
                name: format!("svc-{w}-{i}"),
                labels,
                workload,
                ips: vec![IpAddr::from((0x0a00_0000 | n).to_be_bytes())],
            },
            ports: vec![NamedPort {
                name: Some("http".into()),
                port: 8080,
                protocol: Protocol::Tcp,
            }],
        });
    }
    cluster
}

fn records() -> Vec<Record> {
    let workloads = PODS / PODS_PER_WORKLOAD;
    let mut rng = Rng(42);
    let peers: Vec<Vec<(usize, usize)>> = (0..workloads)
        .map(|_| {
            (0..FAN_OUT)
                .map(|_| (rng.below(workloads), rng.below(SERVICE_PORTS.len())))
                .collect()
        })
        .collect();
    (0..RECORDS)
        .map(|_| {
            let src = rng.below(PODS);
            let w = src / PODS_PER_WORKLOAD;
            if rng.below(20) == 0 {
                let ext = IpAddr::from([203, 0, 113, u8::try_from(rng.below(200)).expect("u8")]);
                (src, Err(ext), None)
            } else {
                let (peer, port) = peers[w][rng.below(FAN_OUT)];
                let dst = peer * PODS_PER_WORKLOAD + rng.below(PODS_PER_WORKLOAD);
                (src, Ok(dst), Some(port))
            }
        })
        .collect()
}

fn record_time(i: usize) -> u64 {
    1_714_557_600_000_000_000 + u64::try_from(i).expect("fits") * 1_000_000
}

fn port_of(port: Option<usize>) -> (Protocol, u16) {
    port.map_or((Protocol::Tcp, 443), |p| {
        let (port, protocol) = SERVICE_PORTS[p];
        (protocol, port)
    })
}

fn record_stats(i: usize) -> EdgeStats {
    let t = record_time(i);
    EdgeStats {
        packets: 10,
        bytes: 1000,
        connections: 1,
        first_seen: t,
        last_seen: t + 1_000_000,
        verdicts: VerdictCounts {
            forwarded: 1,
            ..VerdictCounts::default()
        },
    }
}

/// What one agent holding every pod learns: the reference the merged
/// graph must equal.
fn one_agent_graph(cluster: &Cluster, records: &[Record]) -> FlowGraph {
    let mut graph = FlowGraph::default();
    for pod in &cluster.pods {
        graph.add_pod(&pod.meta);
    }
    for (i, (src, dst, port)) in records.iter().enumerate() {
        let (protocol, port) = port_of(*port);
        graph.record(
            EdgeKey {
                source: NodeId::Workload(cluster.pods[*src].meta.workload.clone()),
                target: match dst {
                    Ok(d) => NodeId::Workload(cluster.pods[*d].meta.workload.clone()),
                    Err(ip) => NodeId::External(*ip),
                },
                protocol,
                port,
            },
            &record_stats(i),
        );
    }
    graph
}

// ---- the agents' contributions ----

fn node_name(n: usize) -> String {
    format!("node-{n:04}")
}

/// An edge of one node: (source workload, destination workload or
/// external address, port index).
type EdgeIx = (usize, Result<usize, IpAddr>, Option<usize>);
/// A side of it: (seen from, initiator node, responder node).
type SideIx = (SeenFromJson, usize, Option<usize>);

#[derive(Default)]
struct NodeGraph {
    edges: HashMap<EdgeIx, HashMap<SideIx, EdgeStats>>,
    /// Pods seen, by workload.
    seen: BTreeMap<usize, Vec<usize>>,
}

/// Every node's contribution, as the agents would serve it.
fn contributions(cluster: &Cluster, records: &[Record], agents: usize) -> Vec<ContributionJson> {
    let mut nodes: Vec<NodeGraph> = (0..agents).map(|_| NodeGraph::default()).collect();
    for (i, &(src, dst, port)) in records.iter().enumerate() {
        let stats = record_stats(i);
        let from = src % agents;
        let edge = (
            src / PODS_PER_WORKLOAD,
            dst.map(|d| d / PODS_PER_WORKLOAD),
            port,
        );
        let mut add = |node: usize, side: SideIx| {
            let g = &mut nodes[node];
            g.edges
                .entry(edge)
                .or_default()
                .entry(side)
                .or_default()
                .merge(&stats);
            for pod in [Some(src), dst.ok()].into_iter().flatten() {
                g.seen.entry(pod / PODS_PER_WORKLOAD).or_default().push(pod);
            }
        };
        match dst {
            Err(_) => add(from, (SeenFromJson::Initiator, from, None)),
            Ok(d) if d % agents == from => add(from, (SeenFromJson::Both, from, Some(from))),
            Ok(d) => {
                let to = d % agents;
                add(from, (SeenFromJson::Initiator, from, Some(to)));
                add(to, (SeenFromJson::Responder, from, Some(to)));
            }
        }
    }
    let namespaces: BTreeMap<String, BTreeMap<String, String>> = (0..PODS / PODS_PER_NAMESPACE)
        .map(|n| {
            let ns = format!("ns{n}");
            let labels = BTreeMap::from([("kubernetes.io/metadata.name".to_owned(), ns.clone())]);
            (ns, labels)
        })
        .collect();
    let workload = |w: usize| &cluster.pods[w * PODS_PER_WORKLOAD].meta.workload;
    let end = |e: Result<usize, IpAddr>| match e {
        Ok(w) => EdgeEndJson::Workload(workload(w).clone()),
        Err(ip) => EdgeEndJson::External(ip),
    };
    nodes
        .into_iter()
        .enumerate()
        .map(|(n, g)| {
            let mut edges: Vec<ContributedEdgeJson> = g
                .edges
                .into_iter()
                .map(|((src, dst, port), sides)| {
                    let (protocol, port) = port_of(port);
                    let mut sides: Vec<SideJson> = sides
                        .into_iter()
                        .map(|((seen_from, from, to), s)| SideJson {
                            seen_from,
                            initiator_node: Some(node_name(from)),
                            responder_node: to.map(node_name),
                            connections: s.connections,
                            packets: s.packets,
                            bytes: s.bytes,
                            first_seen_ns: s.first_seen,
                            last_seen_ns: s.last_seen,
                            verdicts: s.verdicts,
                        })
                        .collect();
                    sides.sort_by(|a, b| {
                        (a.seen_from, &a.initiator_node, &a.responder_node).cmp(&(
                            b.seen_from,
                            &b.initiator_node,
                            &b.responder_node,
                        ))
                    });
                    ContributedEdgeJson {
                        source: end(Ok(src)),
                        target: end(dst),
                        protocol,
                        port,
                        sides,
                    }
                })
                .collect();
            edges.sort_by(|a, b| {
                (&a.source, &a.target, a.protocol, a.port)
                    .cmp(&(&b.source, &b.target, b.protocol, b.port))
            });
            let workloads = g
                .seen
                .into_iter()
                .map(|(w, mut pods)| {
                    pods.sort_unstable();
                    pods.dedup();
                    let labels = cluster.pods[pods[0]]
                        .meta
                        .labels
                        .iter()
                        .filter(|(k, _)| *k != "pod-template-hash")
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    ContributedWorkloadJson {
                        workload: workload(w).clone(),
                        labels,
                        pods: pods
                            .iter()
                            .map(|p| cluster.pods[*p].meta.name.clone())
                            .collect(),
                    }
                })
                .collect();
            let pods = cluster
                .pods
                .iter()
                .enumerate()
                .filter(|(i, _)| i % agents == n)
                .map(|(_, p)| ContributedPodJson {
                    namespace: p.meta.namespace.clone(),
                    name: p.meta.name.clone(),
                    workload: p.meta.workload.clone(),
                    labels: p.meta.labels.clone(),
                    ips: p.meta.ips.clone(),
                    ports: p.ports.clone(),
                })
                .collect();
            ContributionJson {
                format: CONTRIBUTION_FORMAT,
                node: node_name(n),
                epoch: format!("{:016x}", 0x5eed_0000_0000_0000_u64 + n as u64),
                instance: format!("{:016x}", 0x1_0000_0000_u64 + n as u64),
                version: 1,
                generated_at: "2024-05-01T10:00:00Z".to_owned(),
                workloads,
                edges,
                drops: Vec::new(),
                namespaces: namespaces.clone(),
                pods,
                services: Vec::new(),
                external_names: Default::default(),
            }
        })
        .collect()
}

// ---- in-process agents behind the relay's `Fetch` ----

/// One simulated agent: the JSON it serves and its events.
struct Agent {
    /// (`ETag`, body).
    served: Mutex<(String, Arc<Vec<u8>>)>,
    /// Bumped on every change: the agent's `/api/events` `graph` event.
    events: watch::Sender<u64>,
    alive: AtomicBool,
}

struct Agents(HashMap<String, Agent>);

fn etag(c: &ContributionJson) -> String {
    format!("\"{}-{}-{}\"", c.epoch, c.instance, c.version)
}

impl Agents {
    fn new(contributions: &[ContributionJson]) -> Self {
        Self(
            contributions
                .iter()
                .map(|c| {
                    let body = serde_json::to_vec(c).expect("a contribution serializes");
                    (
                        c.node.clone(),
                        Agent {
                            served: Mutex::new((etag(c), Arc::new(body))),
                            events: watch::Sender::new(c.version),
                            alive: AtomicBool::new(true),
                        },
                    )
                })
                .collect(),
        )
    }

    fn get(&self, node: &str) -> Result<&Agent, String> {
        self.0.get(node).ok_or_else(|| format!("no agent {node}"))
    }

    /// The agent serves `c` from now on and says so on its events.
    fn change(&self, c: &ContributionJson, body: Vec<u8>) {
        let agent = &self.0[&c.node];
        *agent.served.lock().unwrap_or_else(PoisonError::into_inner) = (etag(c), Arc::new(body));
        agent.events.send_replace(c.version);
    }

    /// The agent dies: reads fail, its event stream ends.
    fn kill(&self, node: &str) {
        let agent = &self.0[node];
        agent.alive.store(false, Ordering::SeqCst);
        agent.events.send_modify(|v| *v += 1);
    }

    fn body_bytes(&self) -> usize {
        self.0
            .values()
            .map(|a| {
                a.served
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .1
                    .len()
            })
            .sum()
    }
}

impl Fetch for Agents {
    async fn contribution(
        &self,
        agent: &AgentEndpoint,
        etag: Option<&str>,
    ) -> Result<Fetched, String> {
        let a = self.get(&agent.node)?;
        if !a.alive.load(Ordering::SeqCst) {
            return Err("connection refused".to_owned());
        }
        let (tag, body) = a
            .served
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if etag == Some(tag.as_str()) {
            return Ok(Fetched::NotModified);
        }
        let contribution = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        Ok(Fetched::Changed {
            etag: Some(tag),
            contribution,
        })
    }

    async fn watch(&self, agent: &AgentEndpoint, changed: Arc<Notify>) -> Result<(), String> {
        let a = self.get(&agent.node)?;
        let mut events = a.events.subscribe();
        loop {
            if !a.alive.load(Ordering::SeqCst) {
                return Err("connection refused".to_owned());
            }
            if events.changed().await.is_err() {
                return Ok(());
            }
            if a.alive.load(Ordering::SeqCst) {
                changed.notify_one();
            }
        }
    }
}

fn agent_set(agents: usize) -> AgentSet {
    AgentSet {
        expected: None,
        listed: true,
        agents: (0..agents)
            .map(|n| {
                let node = node_name(n);
                let endpoint = AgentEndpoint {
                    node: node.clone(),
                    url: format!("https://10.1.{}.{}:4244", n / 250, n % 250 + 1),
                    ready: true,
                    terminating: false,
                };
                (node, endpoint)
            })
            .collect(),
    }
}

/// A relay: its hub with sync tasks and the merger running on `rt`.
struct Relay {
    hub: Arc<Hub>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Relay {
    fn start(
        rt: &tokio::runtime::Runtime,
        agents: &Arc<Agents>,
        set: AgentSet,
        checkpoint: Option<&std::path::Path>,
    ) -> Self {
        let _guard = rt.enter();
        // A static list: the sender goes, the set stays.
        let rx = watch::channel(set).1;
        let checkpoint = checkpoint.map(|dir| Checkpoint::open(dir).expect("the checkpoint opens"));
        let aggregator = Arc::new(Aggregator::new(
            AggregatorOptions {
                node_name: "relay".to_owned(),
                ring_capacity: 0,
                ..AggregatorOptions::default()
            },
            Arc::new(Metrics::new()),
        ));
        let hub = Hub::new(rx.clone(), checkpoint, aggregator);
        let pace = Pace::new(Duration::from_secs(30), 8, Duration::from_secs(24 * 3600));
        let tasks = vec![
            rt.spawn(sync::run(Arc::clone(&hub), Arc::clone(agents), rx, pace)),
            rt.spawn(Arc::clone(&hub).run_merger(MERGE_PAUSE)),
        ];
        Self { hub, tasks }
    }

    fn synced(&self) -> usize {
        self.hub.coverage().synced
    }

    /// Stop its tasks and wait until they let go of the hub (and of the
    /// checkpoint's database, which a restarted relay opens again).
    fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        let hub = self.hub;
        wait_until(Duration::from_secs(60), Duration::from_millis(10), || {
            Arc::strong_count(&hub) == 1
        });
    }
}

/// Wait (polling every `every`) until `done`, at most `limit`.
fn wait_until(limit: Duration, every: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "not done within {limit:?}");
        std::thread::sleep(every);
    }
    start.elapsed()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let quick = std::env::var_os("WEIR_BENCH_QUICK").is_some();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let cluster = cluster();
    let records = records();
    let reference = one_agent_graph(&cluster, &records);
    let sizes: &[usize] = if quick { &[100] } else { &[100, 1_000] };

    let mut rows = Vec::new();
    for &n in sizes {
        let contributions = contributions(&cluster, &records, n);
        let sides: usize = contributions
            .iter()
            .flat_map(|c| &c.edges)
            .map(|e| e.sides.len())
            .sum();
        let agents = Arc::new(Agents::new(&contributions));
        drop(contributions);
        let json = agents.body_bytes();

        // A relay with an empty store: every contribution read and merged.
        let state = tempfile::tempdir().expect("a temporary directory");
        let before = live();
        let relay = Relay::start(&rt, &agents, agent_set(n), Some(state.path()));
        let edges = reference.edges.len();
        // Done when a merge made after every agent was read gives one
        // agent's graph, edge for edge and counter for counter (a merge of
        // part of them may have every edge already, not every count).
        let start = Instant::now();
        let (mut checked, mut first) = (u64::MAX, Duration::ZERO);
        wait_until(Duration::from_secs(600), Duration::from_millis(5), || {
            let merges = relay.hub.merges();
            if relay.synced() < n || merges == checked {
                return false;
            }
            (checked, first) = (merges, start.elapsed());
            relay.hub.aggregator().graph().edges == reference.edges
        });
        // The merge's own buffers go once it returned.
        std::thread::sleep(Duration::from_secs(1));
        let relay_bytes = live().saturating_sub(before);
        let merged = relay.hub.aggregator().graph();

        // Export on the merged graph, next to one agent's on the same graph.
        let merged_cluster = relay.hub.resolver().read().expect("resolver").cluster();
        let mut export_merged = Vec::new();
        let mut export_one = Vec::new();
        for _ in 0..3 {
            for (graph, cluster, out) in [
                (&merged, &*merged_cluster, &mut export_merged),
                (&reference, &cluster, &mut export_one),
            ] {
                let ((policies, yaml), took, peak) = peak_of(|| {
                    let s = synth::synthesize(graph, cluster, &SynthOptions::default());
                    let yaml = s.all_yaml();
                    (s.policies().count(), yaml.len())
                });
                out.push((took, peak, policies, yaml));
            }
        }
        drop(merged);

        // Version change -> the edge at the relay.
        let mut latency = Histogram::<u64>::new(3).expect("a histogram");
        let samples = 12;
        for k in 0..samples {
            let node = node_name((k * 7919) % n);
            let held = relay.hub.held();
            let mut c = (*held[&node].contribution.clone().expect("held")).clone();
            drop(held);
            c.version += 1;
            let src = c.edges[0].source.clone();
            c.edges.push(ContributedEdgeJson {
                source: src,
                target: EdgeEndJson::External(IpAddr::from([
                    198,
                    51,
                    100,
                    u8::try_from(k).expect("u8"),
                ])),
                protocol: Protocol::Tcp,
                port: 9999,
                sides: vec![SideJson {
                    seen_from: SeenFromJson::Initiator,
                    initiator_node: Some(node.clone()),
                    responder_node: None,
                    connections: 1,
                    packets: 2,
                    bytes: 120,
                    first_seen_ns: record_time(RECORDS),
                    last_seen_ns: record_time(RECORDS),
                    verdicts: VerdictCounts {
                        forwarded: 1,
                        ..VerdictCounts::default()
                    },
                }],
            });
            let body = serde_json::to_vec(&c).expect("serializes");
            let want = relay.hub.aggregator().edge_count() + 1;
            let start = Instant::now();
            agents.change(&c, body);
            wait_until(Duration::from_secs(120), Duration::from_millis(1), || {
                relay.hub.aggregator().edge_count() == want
            });
            latency
                .record(u64::try_from(start.elapsed().as_micros()).expect("fits"))
                .expect("recorded");
        }

        // Restart with the checkpoint: open, merge, and every agent
        // answering 304 (the tags were kept).
        relay.stop();
        let restart_start = Instant::now();
        let relay = Relay::start(&rt, &agents, agent_set(n), Some(state.path()));
        let restored = restart_start.elapsed();
        let edges_now = edges + samples;
        let resynced = restored
            + wait_until(Duration::from_secs(600), Duration::from_millis(5), || {
                relay.synced() == n && relay.hub.aggregator().edge_count() == edges_now
            });

        // Dead agents: killed together, each marked stale when its next
        // read fails.
        let dead: Vec<String> = (0..10).map(|k| node_name(k * (n / 10))).collect();
        let start = Instant::now();
        for node in &dead {
            agents.kill(node);
        }
        let mut stale_after: BTreeMap<String, Duration> = BTreeMap::new();
        wait_until(Duration::from_secs(120), Duration::from_millis(10), || {
            let coverage = relay.hub.coverage();
            for node in &coverage.stale {
                stale_after
                    .entry(node.clone())
                    .or_insert_with(|| start.elapsed());
            }
            stale_after.len() == dead.len()
        });
        relay.stop();
        let mut stale: Vec<Duration> = stale_after.into_values().collect();
        stale.sort();

        rows.push(Row {
            agents: n,
            sides,
            json,
            edges,
            first,
            relay_bytes,
            export_merged,
            export_one,
            latency,
            restored,
            resynced,
            stale,
        });
    }
    print(&rows);
}

struct Row {
    agents: usize,
    sides: usize,
    json: usize,
    edges: usize,
    first: Duration,
    relay_bytes: usize,
    export_merged: Vec<(Duration, usize, usize, usize)>,
    export_one: Vec<(Duration, usize, usize, usize)>,
    latency: Histogram<u64>,
    restored: Duration,
    resynced: Duration,
    stale: Vec<Duration>,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn print(rows: &[Row]) {
    println!(
        "{} pods, {} flow records, pod i on node i % agents; sync interval 30 s, concurrency 8, merge pause {} ms (the relay's defaults).\n",
        PODS,
        RECORDS,
        MERGE_PAUSE.as_millis()
    );
    println!(
        "| agents | merged edges | sides in all contributions | contributions (JSON) | first sync: all read and merged | relay heap | relay heap per edge |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.0} MiB | {:.0} ms | {:.0} MiB | {:.0} B |",
            r.agents,
            r.edges,
            r.sides,
            mib(r.json),
            ms(r.first),
            mib(r.relay_bytes),
            r.relay_bytes as f64 / r.edges as f64
        );
    }
    println!();
    println!(
        "| agents | version change -> edge at the relay, p50 | p99 | max (n) | restart: checkpoint read and merged | restart: every agent read again (304) | dead agent marked stale, median | max (of 10) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let q = |p: f64| r.latency.value_at_quantile(p) as f64 / 1e3;
        println!(
            "| {} | {:.0} ms | {:.0} ms | {:.0} ms ({}) | {:.0} ms | {:.0} ms | {:.1} s | {:.1} s |",
            r.agents,
            q(0.5),
            q(0.99),
            r.latency.max() as f64 / 1e3,
            r.latency.len(),
            ms(r.restored),
            ms(r.resynced),
            median(r.stale.clone()).as_secs_f64(),
            r.stale.last().map_or(0.0, Duration::as_secs_f64),
        );
    }
    println!();
    println!(
        "| agents | export (synthesize + YAML), merged graph | one agent, same graph | ratio | peak heap, merged | one agent | policies | YAML |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let t = |v: &[(Duration, usize, usize, usize)]| median(v.iter().map(|x| x.0).collect());
        let peak = |v: &[(Duration, usize, usize, usize)]| v.iter().map(|x| x.1).max().unwrap_or(0);
        let (merged, one) = (t(&r.export_merged), t(&r.export_one));
        let (_, _, policies, yaml) = r.export_merged[0];
        println!(
            "| {} | {:.0} ms | {:.0} ms | {:.2} | {:.1} MiB | {:.1} MiB | {} | {:.1} MiB |",
            r.agents,
            ms(merged),
            ms(one),
            merged.as_secs_f64() / one.as_secs_f64(),
            mib(peak(&r.export_merged)),
            mib(peak(&r.export_one)),
            policies,
            mib(yaml)
        );
    }
}
