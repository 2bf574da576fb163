//! The relay's merged flow stream: records per second through the merger
//! and the share it emits out of order, for 100 agents.
//!
//! `cargo bench -p weir --bench relay_stream` prints markdown table rows
//! for docs/benchmarks.md. One thread, in process: the agents' streams are
//! simulated and interleaved as a relay reads them (a few records from one
//! agent, then from another), no network.
//!
//! The simulated cluster makes 200,000 records a second in all (the
//! target rate), spread over 100 agents at random. A record's time is the
//! moment it happened on a common clock plus its node's clock skew (drawn
//! per node, uniform in ±skew); the relay receives each agent's records in
//! the agent's order, in bursts of 1 to 16. Two costs are measured: the
//! merger alone (records already parsed), and the relay's whole path for a
//! record (an NDJSON line parsed, merged, written out as a line).

#![expect(
    clippy::print_stdout,
    reason = "a benchmark prints its table on stdout"
)]

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use weir_agent::{
    api::wire::{EndpointJson, EndpointRefJson, FlowJson, IpJson, L4Json, TcpJson, WeirJson},
    relay::{
        raw_flow::{RawFlow, StreamLine},
        stream::{Merger, Options, StreamRecord},
    },
    timestamp::rfc3339,
};

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const AGENTS: usize = 100;
/// Records a second, all agents together.
const RATE: u64 = 200_000;
const RECORDS: usize = 2_000_000;
/// Records generated (untimed) before each timed round.
const CHUNK: usize = 20_000;
const T0: u64 = 1_700_000_000_000_000_000;

fn node(i: usize) -> String {
    format!("node-{i:03}")
}

/// A realistic record: pods on two nodes, TCP, Cilium-style labels.
fn record(agent: usize, time: u64, seq: u64, rng: &mut Rng) -> FlowJson {
    let peer = usize::try_from(rng.below(AGENTS as u64)).unwrap_or(0);
    let endpoint = |ns: &str, pod: String, app: &str| EndpointJson {
        namespace: Some(ns.to_owned()),
        pod_name: Some(pod),
        labels: vec![
            format!("k8s:app={app}"),
            format!("k8s:io.kubernetes.pod.namespace={ns}"),
        ],
        workloads: Vec::new(),
    };
    let port = u16::try_from(30_000 + rng.below(30_000)).unwrap_or(30_000);
    FlowJson {
        time: rfc3339(time),
        verdict: "FORWARDED".to_owned(),
        drop_reason_desc: None,
        ip: IpJson {
            source: format!("10.151.{}.{}", agent, seq % 250 + 1)
                .parse()
                .expect("address"),
            destination: format!("10.152.{}.{}", peer, seq % 200 + 1)
                .parse()
                .expect("address"),
            ip_version: "IPv4".to_owned(),
        },
        l4: L4Json::Tcp(TcpJson {
            source_port: port,
            destination_port: 8080,
            flags: [("SYN".to_owned(), true), ("ACK".to_owned(), true)].into(),
        }),
        source: endpoint("shop", format!("web-7d9f8b6c5-{agent:05}"), "web"),
        destination: endpoint("data", format!("db-{peer}"), "db"),
        source_names: Vec::new(),
        destination_names: Vec::new(),
        kind: "L3_L4".to_owned(),
        l7: None,
        node_name: node(agent),
        traffic_direction: "EGRESS".to_owned(),
        is_reply: Some(false),
        summary: "TCP Flags: SYN, ACK".to_owned(),
        weir: WeirJson {
            packets: 2,
            bytes: 120,
            initiator: "local".to_owned(),
            endpoint: EndpointRefJson {
                ifindex: 42,
                pod: Some(format!("shop/web-7d9f8b6c5-{agent:05}")),
            },
            new_flow: true,
            closed: false,
            first_seen: Some(rfc3339(time)),
            last_seen: Some(rfc3339(time)),
            policy: None,
            peer_node: Some(node(peer)),
            seq: Some(seq),
        },
    }
}

/// The simulated cluster: what each agent has made and not yet sent.
struct Cluster {
    rng: Rng,
    skew: Vec<i64>,
    pending: Vec<VecDeque<FlowJson>>,
    seq: Vec<u64>,
    made: u64,
}

impl Cluster {
    fn new(skew_ns: u64, seed: u64) -> Self {
        let mut rng = Rng(seed);
        let skew = (0..AGENTS)
            .map(|_| {
                if skew_ns == 0 {
                    0
                } else {
                    i64::try_from(rng.below(2 * skew_ns + 1)).unwrap_or(0)
                        - i64::try_from(skew_ns).unwrap_or(0)
                }
            })
            .collect();
        Self {
            rng,
            skew,
            pending: vec![VecDeque::new(); AGENTS],
            seq: vec![1_700_000_000_000_000; AGENTS],
            made: 0,
        }
    }

    /// The next `n` records as the relay receives them: (agent, record).
    fn receive(&mut self, n: usize) -> Vec<(usize, FlowJson)> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            // The cluster runs ahead of the relay's reads by a few records
            // per agent.
            while self.pending.iter().map(VecDeque::len).sum::<usize>() < 8 * AGENTS {
                let agent = usize::try_from(self.rng.below(AGENTS as u64)).unwrap_or(0);
                let time = T0 + self.made * 1_000_000_000 / RATE;
                let time = time.saturating_add_signed(self.skew[agent]);
                self.made += 1;
                self.seq[agent] += 1;
                let r = record(agent, time, self.seq[agent], &mut self.rng);
                self.pending[agent].push_back(r);
            }
            let agent = usize::try_from(self.rng.below(AGENTS as u64)).unwrap_or(0);
            let burst = 1 + self.rng.below(16);
            for _ in 0..burst {
                match self.pending[agent].pop_front() {
                    Some(r) if out.len() < n => out.push((agent, r)),
                    Some(r) => {
                        self.pending[agent].push_front(r);
                        break;
                    }
                    None => break,
                }
            }
        }
        out
    }
}

struct Outcome {
    rate: f64,
    out_of_order: f64,
}

/// The merger alone, on parsed records.
fn merge_parsed(skew_ns: u64) -> Outcome {
    let mut cluster = Cluster::new(skew_ns, 0x5eed);
    let mut merger = Merger::new(Options::default());
    let names: Vec<String> = (0..AGENTS).map(node).collect();
    for name in &names {
        merger.connect(name);
    }
    let mut out = Vec::new();
    let mut busy = Duration::ZERO;
    let mut done = 0;
    while done < RECORDS {
        let chunk = cluster.receive(CHUNK);
        done += chunk.len();
        let started = Instant::now();
        for (agent, record) in chunk {
            merger.push(&names[agent], record, started, &mut out);
            out.clear();
        }
        busy += started.elapsed();
    }
    merger.finish(&mut out);
    outcome(&merger, busy)
}

/// The relay's whole path for a record: a line in, a line out, with each
/// line parsed into a [`FlowJson`] and encoded again (`typed`), or its
/// header read and the line passed on as it came ([`RawFlow`], what the
/// relay does).
fn merge_lines(skew_ns: u64, typed: bool) -> Outcome {
    let mut cluster = Cluster::new(skew_ns, 0x5eed);
    let names: Vec<String> = (0..AGENTS).map(node).collect();
    let mut typed_merger = Merger::<FlowJson>::new(Options::default());
    let mut raw_merger = Merger::<RawFlow>::new(Options::default());
    for name in &names {
        typed_merger.connect(name);
        raw_merger.connect(name);
    }
    let (mut typed_out, mut raw_out) = (Vec::new(), Vec::new());
    let mut written = 0usize;
    let mut busy = Duration::ZERO;
    let mut done = 0;
    while done < RECORDS {
        let lines: Vec<(usize, Vec<u8>)> = cluster
            .receive(CHUNK)
            .into_iter()
            .map(|(agent, r)| {
                let mut line = serde_json::to_vec(&r).expect("json");
                line.push(b'\n');
                (agent, line)
            })
            .collect();
        done += lines.len();
        let started = Instant::now();
        for (agent, line) in lines {
            if typed {
                let record: FlowJson = serde_json::from_slice(&line).expect("a record");
                typed_merger.push(&names[agent], record, started, &mut typed_out);
                for r in typed_out.drain(..) {
                    written += serde_json::to_vec(&r).expect("json").len() + 1;
                }
            } else {
                let Ok(StreamLine::Flow(record)) = StreamLine::parse(&line) else {
                    panic!("a record");
                };
                raw_merger.push(&names[agent], record, started, &mut raw_out);
                for r in raw_out.drain(..) {
                    written += r.into_line().len();
                }
            }
        }
        busy += started.elapsed();
    }
    std::hint::black_box(written);
    if typed {
        typed_merger.finish(&mut typed_out);
        outcome(&typed_merger, busy)
    } else {
        raw_merger.finish(&mut raw_out);
        outcome(&raw_merger, busy)
    }
}

fn outcome<R: StreamRecord>(merger: &Merger<R>, busy: Duration) -> Outcome {
    let stats = merger.stats();
    assert_eq!(stats.emitted, RECORDS as u64, "every record comes out");
    #[expect(clippy::cast_precision_loss, reason = "rates for a table")]
    Outcome {
        rate: stats.emitted as f64 / busy.as_secs_f64(),
        out_of_order: stats.out_of_order as f64 / stats.emitted as f64,
    }
}

fn main() {
    println!(
        "| clock skew between nodes | merger alone | line in, merged, line out: header read, line passed on | the same, parsed and re-encoded | out of order |\n|---|---|---|---|---|"
    );
    for (label, skew_ns) in [
        ("none", 0),
        ("±100 µs", 100_000),
        ("±1 ms", 1_000_000),
        ("±10 ms", 10_000_000),
    ] {
        let parsed = merge_parsed(skew_ns);
        let raw = merge_lines(skew_ns, false);
        let typed = merge_lines(skew_ns, true);
        assert!(
            (raw.out_of_order - parsed.out_of_order).abs() < f64::EPSILON,
            "the raw path merges as the parsed one"
        );
        println!(
            "| {label} | {:.0}k records/s | {:.0}k records/s | {:.0}k records/s | {:.2}% |",
            parsed.rate / 1e3,
            raw.rate / 1e3,
            typed.rate / 1e3,
            parsed.out_of_order * 100.0
        );
    }
}
