//! Scale of the learner: clusters of 1,000 and 10,000 pods, 100k and 1M
//! flow records folded into a [`FlowGraph`] (edges dedupe), then the time
//! and peak heap to synthesize and render YAML, and the evaluator's
//! throughput verifying every record against the generated set.
//!
//! Target: 10,000 pods and 1M records in under 2 s and under 1 GiB.
//! Run: `cargo bench -p weir-generator --bench synth` (prints a markdown
//! table). `WEIR_BENCH_QUICK=1` runs the smallest row only,
//! `WEIR_BENCH_BIG=1` the largest.
#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]
#![expect(
    clippy::cast_precision_loss,
    reason = "rates and sizes are printed approximately"
)]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    collections::BTreeMap,
    hint::black_box,
    net::IpAddr,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use weir_generator::{
    cluster::{Cluster, ClusterPod, NamedPort},
    eval::{Endpoint, Evaluator, Flow, PolicySet},
    model::{EdgeKey, EdgeStats, FlowGraph, NodeId, PodMeta, Protocol, WorkloadKind, WorkloadRef},
    synth::{self, Options},
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

/// Peak heap above what was live when `f` started.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, Duration, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let start = Instant::now();
    let out = f();
    let elapsed = start.elapsed();
    (out, elapsed, PEAK.load(Ordering::Relaxed) - base)
}

/// A tiny deterministic generator (PCG-style LCG): same data every run.
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

const PODS_PER_WORKLOAD: usize = 5;
const PODS_PER_NAMESPACE: usize = 500;
/// Each workload talks to this many others (and a few externals).
const FAN_OUT: usize = 6;
const SERVICE_PORTS: &[(u16, Protocol)] = &[
    (8080, Protocol::Tcp),
    (9090, Protocol::Tcp),
    (5432, Protocol::Tcp),
    (53, Protocol::Udp),
];

/// (source pod, destination: pod index or external address, protocol, port)
type Record = (usize, Result<usize, IpAddr>, Protocol, u16);

fn cluster(pods: usize) -> (Cluster, Vec<WorkloadRef>) {
    let mut cluster = Cluster::default();
    let mut workloads = Vec::new();
    for i in 0..pods {
        let w = i / PODS_PER_WORKLOAD;
        let ns = format!("ns{}", i / PODS_PER_NAMESPACE);
        let workload = WorkloadRef::new(ns.clone(), WorkloadKind::Deployment, format!("svc-{w}"));
        if i % PODS_PER_WORKLOAD == 0 {
            workloads.push(workload.clone());
        }
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
    (cluster, workloads)
}

fn records(pods: usize, count: usize) -> Vec<Record> {
    let workloads = pods / PODS_PER_WORKLOAD;
    let mut rng = Rng(42);
    // Who talks to whom: FAN_OUT peers per workload, each on one port.
    let peers: Vec<Vec<(usize, usize)>> = (0..workloads)
        .map(|_| {
            (0..FAN_OUT)
                .map(|_| (rng.below(workloads), rng.below(SERVICE_PORTS.len())))
                .collect()
        })
        .collect();
    (0..count)
        .map(|_| {
            let src = rng.below(pods);
            let w = src / PODS_PER_WORKLOAD;
            if rng.below(20) == 0 {
                let ext = IpAddr::from([203, 0, 113, u8::try_from(rng.below(200)).expect("u8")]);
                (src, Err(ext), Protocol::Tcp, 443)
            } else {
                let (peer, port) = peers[w][rng.below(FAN_OUT)];
                let dst = peer * PODS_PER_WORKLOAD + rng.below(PODS_PER_WORKLOAD);
                let (port, proto) = SERVICE_PORTS[port];
                (src, Ok(dst), proto, port)
            }
        })
        .collect()
}

fn fold(cluster: &Cluster, records: &[Record]) -> FlowGraph {
    let mut graph = FlowGraph::default();
    for pod in &cluster.pods {
        graph.add_pod(&pod.meta);
    }
    for (i, (src, dst, protocol, port)) in records.iter().enumerate() {
        let t = 1_714_557_600_000_000_000 + u64::try_from(i).expect("fits") * 1_000_000;
        graph.record(
            EdgeKey {
                source: NodeId::Workload(cluster.pods[*src].meta.workload.clone()),
                target: match dst {
                    Ok(d) => NodeId::Workload(cluster.pods[*d].meta.workload.clone()),
                    Err(ip) => NodeId::External(*ip),
                },
                protocol: *protocol,
                port: *port,
            },
            &EdgeStats {
                packets: 10,
                bytes: 1000,
                connections: 1,
                first_seen: t,
                last_seen: t + 1_000_000,
                ..EdgeStats::default()
            },
        );
    }
    graph
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    let quick = std::env::var_os("WEIR_BENCH_QUICK").is_some();
    let big = std::env::var_os("WEIR_BENCH_BIG").is_some();
    let rows: &[(usize, usize)] = if quick {
        &[(1_000, 100_000)]
    } else if big {
        &[(10_000, 1_000_000)]
    } else {
        &[
            (1_000, 100_000),
            (1_000, 1_000_000),
            (10_000, 100_000),
            (10_000, 1_000_000),
        ]
    };
    println!(
        "| pods | records | edges | fold | synthesize | render YAML | synth+YAML | peak heap (synth+YAML) | policies | YAML | evaluator | denied |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &(pods, count) in rows {
        let (cluster, _) = cluster(pods);
        let records = records(pods, count);
        let fold_start = Instant::now();
        let graph = fold(&cluster, &records);
        let fold_time = fold_start.elapsed();

        let ((suggestion, yaml, synth_time), total, peak) = peak_of(|| {
            let start = Instant::now();
            let s = synth::synthesize(&graph, &cluster, &Options::default());
            let synth_time = start.elapsed();
            let yaml = s.all_yaml();
            (s, yaml, synth_time)
        });
        let render_time = total - synth_time;

        let set = PolicySet::new(suggestion.policies().cloned().collect())
            .expect("generated policies are valid");
        let eval = Evaluator::new(&set, &cluster);
        let start = Instant::now();
        let mut denied = 0usize;
        for (src, dst, protocol, port) in &records {
            let flow = Flow {
                source: Endpoint::Pod(&cluster.pods[*src]),
                destination: match dst {
                    Ok(d) => Endpoint::Pod(&cluster.pods[*d]),
                    Err(ip) => Endpoint::External(*ip),
                },
                protocol: *protocol,
                port: *port,
            };
            if !black_box(eval.evaluate(&flow)).allowed() {
                denied += 1;
            }
        }
        let eval_time = start.elapsed();
        println!(
            "| {pods} | {count} | {} | {:.0} ms | {:.0} ms | {:.0} ms | **{:.0} ms** | **{:.1} MiB** | {} | {:.1} MiB | {:.2} M flows/s | {denied} |",
            graph.edges.len(),
            fold_time.as_secs_f64() * 1e3,
            synth_time.as_secs_f64() * 1e3,
            render_time.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3,
            mib(peak),
            suggestion.policies().count(),
            mib(yaml.len()),
            count as f64 / eval_time.as_secs_f64() / 1e6,
        );
        assert_eq!(denied, 0, "the generated set must allow every record");
    }
}
