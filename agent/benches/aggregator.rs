//! Aggregator fold rate and memory, on one thread.
//!
//! `cargo bench -p weir --bench aggregator` prints markdown table rows for
//! docs/benchmarks.md. No criterion: the numbers wanted are a rate over a
//! realistic mix and allocated bytes, which a plain loop and a counting
//! allocator measure directly.
//!
//! The mix: 10 namespaces, 300 workloads of 3 pods (900 pods, 90 of them
//! attached on this node), 200 external addresses, 5,000 flows between
//! them; observations pick flows at random. The resolver is the agent's real
//! `Resolver`, with every pod's node (the edges' sides name 16 peer nodes).
//!
//! The guard and the pending queue read the graph beside the fold: the
//! steady mix is folded for a while with and without them (alternately),
//! and one pending fold is timed at the learner benchmark's size.

#![expect(
    clippy::print_stdout,
    reason = "a benchmark prints its table on stdout"
)]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    collections::BTreeMap,
    hint::black_box,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicIsize, Ordering},
    },
    time::{Duration, Instant},
};

use weir_agent::{
    aggregator::{Aggregator, Options},
    flow::{Initiator, Observation, Verdict},
    guard::{Guard, Settings},
    metrics::Metrics,
    pending::Queue,
    resolve::{Inventory, LocalPod, Resolver},
};
use weir_generator::{
    datapath::Mode,
    model::{PodMeta, Protocol, WorkloadKind, WorkloadRef},
};

/// Counts live heap bytes, to measure memory per edge and per record.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments,
// upholding `GlobalAlloc`'s contract; the counter has no effect on memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract (non-zero-size layout from the caller).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size().cast_signed(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (above).
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size().cast_signed(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(
                new_size.cast_signed() - layout.size().cast_signed(),
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }
}

const NAMESPACES: usize = 10;
const WORKLOADS: usize = 300;
const PODS_PER_WORKLOAD: usize = 3;
const ATTACHED: usize = 90;
const EXTERNALS: usize = 200;
const FLOWS: usize = 5_000;
const OBSERVATIONS: usize = 2_000_000;

fn pod_ip(i: usize) -> IpAddr {
    let [_, _, hi, lo] = u32::try_from(i).unwrap_or(0).to_be_bytes();
    IpAddr::V4(Ipv4Addr::new(10, 0, hi, lo))
}

fn inventory() -> Inventory {
    let mut pods = Vec::new();
    for w in 0..WORKLOADS {
        let namespace = format!("ns-{}", w % NAMESPACES);
        let name = format!("workload-{w}");
        for p in 0..PODS_PER_WORKLOAD {
            let i = w * PODS_PER_WORKLOAD + p;
            pods.push(LocalPod {
                meta: PodMeta {
                    namespace: namespace.clone(),
                    name: format!("{name}-7d9f8b6c5-{p:05}"),
                    labels: BTreeMap::from([
                        ("app".to_owned(), name.clone()),
                        ("pod-template-hash".to_owned(), "7d9f8b6c5".to_owned()),
                    ]),
                    workload: WorkloadRef::new(&namespace, WorkloadKind::Deployment, &name),
                    ips: vec![pod_ip(i)],
                },
                // Spread attached pods over workloads: every 10th pod.
                host_veth: (i.is_multiple_of(10) && i / 10 < ATTACHED).then(|| format!("veth{i}")),
                ports: Vec::new(),
                local: i.is_multiple_of(10) && i / 10 < ATTACHED,
                // As the kube source gives them: every pod's node, so the
                // edges' sides carry peer nodes (16 other nodes).
                node: Some(if i.is_multiple_of(10) && i / 10 < ATTACHED {
                    "this-node".to_owned()
                } else {
                    format!("node-{}", i % 16)
                }),
            });
        }
    }
    Inventory {
        pods,
        ..Inventory::default()
    }
}

fn flows(rng: &mut Rng) -> Vec<Observation> {
    let attached: Vec<usize> = (0..ATTACHED).map(|k| k * 10).collect();
    let pods = WORKLOADS * PODS_PER_WORKLOAD;
    (0..FLOWS)
        .map(|f| {
            let local_pod = attached[rng.below(attached.len())];
            let remote_ip = if rng.below(10) < 8 {
                pod_ip(rng.below(pods))
            } else {
                IpAddr::V4(Ipv4Addr::new(
                    203,
                    0,
                    113,
                    u8::try_from(rng.below(EXTERNALS)).unwrap_or(0),
                ))
            };
            let (initiator, local_port, remote_port) = match rng.below(20) {
                0 => (Initiator::Unknown, 5353, 5353),
                1..=5 => (Initiator::Remote, 8080, 30_000 + (f % 30_000) as u16),
                _ => (
                    Initiator::Local,
                    30_000 + (f % 30_000) as u16,
                    [80, 443, 5432, 6379, 7070][rng.below(5)],
                ),
            };
            Observation {
                ifindex: u32::try_from(local_pod).unwrap_or(0),
                protocol: if rng.below(10) == 0 {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                },
                local: SocketAddr::new(pod_ip(local_pod), local_port),
                remote: SocketAddr::new(remote_ip, remote_port),
                initiator,
                initiator_guessed: false,
                new_flow: false,
                connections: 0,
                closed: false,
                packets_from_pod: 10,
                bytes_from_pod: 1_500,
                packets_to_pod: 12,
                bytes_to_pod: 9_000,
                tcp_flags_from_pod: 0x18,
                tcp_flags_to_pod: 0x18,
                icmp: None,
                first_seen: 1_700_000_000_000_000_000,
                last_seen: 1_700_000_000_000_000_000 + f as u64,
                kernel_time: 1_700_000_000_000_000_000 + f as u64,
                verdict: weir_agent::flow::Verdict::Forwarded,
                reason: weir_agent::flow::DenyReason::None,
                direction: None,
                policies: Vec::new(),
                folded: None,
            }
        })
        .collect()
}

fn resolver() -> Resolver {
    Resolver::new(&inventory(), |veth| veth.strip_prefix("veth")?.parse().ok())
}

/// Observations drawn from `flows`; `new_every`: one in this many is a new
/// flow (and as many close).
fn stream(flows: &[Observation], rng: &mut Rng, new_every: usize) -> Vec<Observation> {
    (0..OBSERVATIONS)
        .map(|i| {
            let mut o = flows[rng.below(flows.len())].clone();
            match i % new_every {
                0 => {
                    o.new_flow = true;
                    o.local.set_port(o.local.port().wrapping_add(1));
                }
                1 if new_every > 2 => o.closed = true,
                _ => {}
            }
            o
        })
        .collect()
}

/// Folds per second over `observations`, best of three runs; with
/// `metrics`, also what the daemon's loop adds per observation (the counter
/// and the delay histogram).
fn fold_rate(
    name: &str,
    observations: &[Observation],
    flows: &[Observation],
    resolver: &Resolver,
    with_metrics: bool,
) {
    let mut best = f64::MAX;
    let mut edges = 0;
    for _ in 0..3 {
        let metrics = Arc::new(Metrics::new());
        let agg = Aggregator::new(Options::default(), Arc::clone(&metrics));
        for o in flows {
            agg.fold(o, resolver);
        }
        let start = Instant::now();
        for o in observations {
            black_box(agg.fold(black_box(o), resolver));
            if with_metrics {
                metrics.folded(o.kernel_time, o.kernel_time + 150_000);
            }
        }
        best = best.min(start.elapsed().as_secs_f64());
        edges = agg.edge_count();
    }
    let n = observations.len() as f64;
    println!(
        "| fold, {name} | {:.2} M obs/s | {:.0} ns/obs | {edges} edges |",
        n / best / 1e6,
        best * 1e9 / n
    );
}

fn memory(resolver: &Resolver) {
    let template = flows(&mut Rng(7))
        .into_iter()
        .find(|o| o.initiator == Initiator::Local)
        .unwrap_or_else(|| unreachable!("the mix has local initiators"));
    let agg = Aggregator::new(
        Options {
            ring_capacity: 0,
            ..Options::default()
        },
        Arc::new(Metrics::new()),
    );
    // Warm up: intern the workloads first, so the edge cost is alone.
    agg.fold(&template, resolver);
    let edges = 100_000_u32;
    let before = live();
    for port in 1..=edges {
        let mut o = template.clone();
        // Distinct (target, port) pairs: one new edge each.
        o.remote = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0xC000_0000 + port)), 443);
        agg.fold(&o, resolver);
    }
    let per_edge = (live() - before) as f64 / f64::from(edges);
    println!("| memory per graph edge (100k edges, incl. map slack) | {per_edge:.0} B | | |");

    let ring = 10_000;
    let agg = Aggregator::new(
        Options {
            ring_capacity: ring,
            follow_capacity: 1,
            ..Options::default()
        },
        Arc::new(Metrics::new()),
    );
    agg.fold(&template, resolver);
    let before = live();
    let mut o = template.clone();
    o.new_flow = true;
    for _ in 0..ring {
        agg.fold(&o, resolver);
    }
    let per_record = (live() - before) as f64 / ring as f64;
    println!("| memory per flow record in the ring (10k ring) | {per_record:.0} B | | |");
    println!(
        "| flow record heap size (struct + Arc counts; pods are shared with the resolver) | {} B | | |",
        std::mem::size_of::<weir_agent::aggregator::FlowRecord>() + 16
    );
}

/// How often the agent's guard and pending queue read the graph.
#[derive(Clone, Copy)]
struct Intervals {
    /// The guard's check (`--sweep-interval`): one `view()` while a window
    /// is open.
    sweep: Duration,
    /// The pending queue's fold (`--save-interval`): one `view()` folded
    /// into the queue when the graph changed.
    save: Duration,
}

/// What the agent's guard task and pending queue task do to the graph,
/// on a thread of their own, every `every` until `stop`: the guard with a
/// window open on ns-0 (from the first check on), the queue folding the
/// view when the graph changed.
fn bookkeeping(agg: &Aggregator, every: Intervals, stop: &AtomicBool) -> (u32, u32) {
    let queue = Queue::default();
    let mut guard = Guard {
        modes: Some(BTreeMap::new()),
        ..Guard::default()
    };
    let modes = BTreeMap::from([("ns-0".to_owned(), Mode::Enforce)]);
    let start = Instant::now();
    let (mut next_sweep, mut next_save) = (every.sweep, every.save);
    let (mut sweeps, mut folds) = (0, 0);
    let mut folded = None;
    while !stop.load(Ordering::Relaxed) {
        let now = start.elapsed();
        let next = next_sweep.min(next_save);
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(10)));
            continue;
        }
        let unix = weir_agent::graph_store::unix_now();
        if now >= next_sweep {
            // As the agent's guard task: the full view at the flip, the
            // drops alone on every later sweep of the open window.
            if guard.modes.as_ref().is_some_and(|m| *m != modes) {
                let view = agg.view();
                guard.follow_modes(&modes, Some(&view.graph), |_| Settings::default(), unix);
                black_box(guard.check(&view.drops, |_, _| true, unix));
            } else if guard.needs_graph(&modes) {
                let view = agg.drops();
                guard.follow_modes(&modes, None, |_| Settings::default(), unix);
                black_box(guard.check(&view.drops, |_, _| true, unix));
            }
            sweeps += 1;
            next_sweep += every.sweep;
        }
        if now >= next_save {
            let changes = agg.changes();
            if folded != Some(changes) {
                folded = Some(changes);
                queue.observe(&agg.denied());
                folds += 1;
            }
            next_save += every.save;
        }
    }
    assert!(
        guard.windows.contains_key("ns-0") || sweeps == 0,
        "the guard's window is open"
    );
    (sweeps, folds)
}

/// ns per observation folding `observations` round and round for `run`,
/// with the bookkeeping beside it when `with` is given; and the guard
/// checks and pending folds it made.
fn timed_fold(
    observations: &[Observation],
    flows: &[Observation],
    resolver: &Resolver,
    run: Duration,
    with: Option<Intervals>,
) -> (f64, (u32, u32)) {
    let agg = Aggregator::new(Options::default(), Arc::new(Metrics::new()));
    for o in flows {
        agg.fold(o, resolver);
    }
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let (agg, stop) = (&agg, &stop);
        let side = with.map(|every| scope.spawn(move || bookkeeping(agg, every, stop)));
        let start = Instant::now();
        let mut n = 0_u64;
        'run: loop {
            for chunk in observations.chunks(65_536) {
                for o in chunk {
                    black_box(agg.fold(black_box(o), resolver));
                }
                n += chunk.len() as u64;
                if start.elapsed() >= run {
                    break 'run;
                }
            }
        }
        let ns = start.elapsed().as_secs_f64() * 1e9 / n as f64;
        stop.store(true, Ordering::Relaxed);
        let counts = side.map_or((0, 0), |s| s.join().unwrap_or((0, 0)));
        (ns, counts)
    })
}

/// Rounds of [`guard_overhead`]: each is a run without and a run with.
const ROUNDS: usize = 5;

/// The steady mix without and with the guard and the pending queue,
/// alternately, [`ROUNDS`] times each: ratios from one run.
fn guard_overhead(steady: &[Observation], flows: &[Observation], resolver: &Resolver) {
    let run = Duration::from_secs(10);
    println!(
        "\n| steady mix, {} s a run, alternately | without | with | with / without, median of the rounds (range) |\n|---|---|---|---|",
        run.as_secs()
    );
    for (name, every) in [
        (
            "guard window open (2 s sweep) + pending fold (5 s save): the defaults",
            Intervals {
                sweep: Duration::from_secs(2),
                save: Duration::from_secs(5),
            },
        ),
        (
            "the same 10 times as often (200 ms sweep, 500 ms save)",
            Intervals {
                sweep: Duration::from_millis(200),
                save: Duration::from_millis(500),
            },
        ),
    ] {
        let mut without = Vec::new();
        let mut with = Vec::new();
        let mut counts = (0, 0);
        for _ in 0..ROUNDS {
            without.push(timed_fold(steady, flows, resolver, run, None).0);
            let (ns, c) = timed_fold(steady, flows, resolver, run, Some(every));
            with.push(ns);
            counts = c;
        }
        let mut ratios: Vec<f64> = without.iter().zip(&with).map(|(a, b)| b / a).collect();
        ratios.sort_by(f64::total_cmp);
        let median = ratios[ratios.len() / 2];
        let list = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "| {name}; per run {} guard checks, {} pending folds | {} ns/obs | {} ns/obs | {median:.3} ({:.3}–{:.3}) |",
            counts.0,
            counts.1,
            list(&without),
            list(&with),
            ratios[0],
            ratios[ratios.len() - 1],
        );
    }
}

/// Distinct workload edges at about the learner benchmark's 58,800: every
/// attached workload to every workload on one to two ports, a tenth of
/// them audited and one in a hundred dropped.
fn big_graph(flows: &[Observation], resolver: &Resolver, edges: usize) -> Aggregator {
    let template = flows
        .iter()
        .find(|o| o.initiator == Initiator::Local)
        .unwrap_or_else(|| unreachable!("the mix has local initiators"))
        .clone();
    let agg = Aggregator::new(
        Options {
            ring_capacity: 0,
            ..Options::default()
        },
        Arc::new(Metrics::new()),
    );
    for k in 0..edges {
        let mut o = template.clone();
        let local = (k % ATTACHED) * 10;
        let target = (k / ATTACHED) % WORKLOADS;
        let port = 1000 + u16::try_from(k / (ATTACHED * WORKLOADS)).unwrap_or(0);
        o.ifindex = u32::try_from(local).unwrap_or(0);
        o.local = SocketAddr::new(pod_ip(local), 40_000);
        o.remote = SocketAddr::new(pod_ip(target * PODS_PER_WORKLOAD), port);
        o.new_flow = true;
        // verdicts are counted per connection
        o.connections = 1;
        o.verdict = match k % 100 {
            0 => Verdict::Dropped,
            1..=10 => Verdict::Audit,
            _ => Verdict::Forwarded,
        };
        agg.fold(&o, resolver);
    }
    agg
}

/// One pending fold (the view, then the queue's fold of it) at the
/// learner benchmark's size, best of five.
fn pending_fold(flows: &[Observation], resolver: &Resolver) {
    let agg = big_graph(flows, resolver, 58_800);
    let best = |f: &mut dyn FnMut()| {
        (0..5)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed().as_secs_f64() * 1e3
            })
            .fold(f64::MAX, f64::min)
    };
    let view = agg.view();
    let (edges, audited, drops) = (
        view.graph.edges.len(),
        view.graph
            .edges
            .values()
            .filter(|s| s.verdicts.audit > 0)
            .count(),
        view.drops.len(),
    );
    let snapshot = best(&mut || drop(black_box(agg.view())));
    let denied = best(&mut || drop(black_box(agg.denied())));
    // the agent folds the denied snapshot (the same entries, see the
    // aggregator's tests)
    let folded = agg.denied();
    let first = best(&mut || Queue::default().observe(black_box(&folded)));
    let queue = Queue::default();
    queue.observe(&folded);
    let again = best(&mut || queue.observe(black_box(&folded)));
    println!(
        "\n| one pending fold | edges | audited | dropped | `view()`, all edges | `denied()`, what the queue folds | queue fold, new entries | queue fold, nothing new |\n|---|---|---|---|---|---|---|---|"
    );
    println!(
        "| {edges} edges | {edges} | {audited} | {drops} | {snapshot:.1} ms | {denied:.1} ms | {first:.1} ms | {again:.1} ms |"
    );
}

fn main() {
    let resolver = resolver();
    let mut rng = Rng(0x5eed);
    let flows = flows(&mut rng);
    println!("| case | rate | per observation | graph |\n|---|---|---|---|");
    let steady = stream(&flows, &mut rng, 100);
    fold_rate(
        "steady mix (98% counter updates, 1% new, 1% closed)",
        &steady,
        &flows,
        &resolver,
        false,
    );
    fold_rate(
        "steady mix + Metrics::folded (the daemon's loop)",
        &steady,
        &flows,
        &resolver,
        true,
    );
    guard_overhead(&steady, &flows, &resolver);
    pending_fold(&flows, &resolver);
    drop(steady);
    let heavy = stream(&flows, &mut rng, 1);
    fold_rate(
        "new-flow heavy (100% new flows, each a flow record)",
        &heavy,
        &flows,
        &resolver,
        false,
    );
    drop(heavy);
    memory(&resolver);
}
