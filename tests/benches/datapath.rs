//! Per-packet cost of weir's observe programs, by `BPF_PROG_TEST_RUN`, next to
//! the floor program (`weir_floor`: returns `TC_ACT_OK`, nothing else).
//!
//! `cargo bench -p weir-integration-tests --bench datapath` (root) prints a
//! markdown table for docs/benchmarks.md.
//!
//! Method:
//! - existing flow: the flow is created by one run, then the program runs
//!   `REPEAT` times on the same frame in one syscall; the kernel reports the
//!   mean time per run. The floor runs the same way on the same frame.
//! - new flow: every run must see a flow the table does not hold, and a
//!   repeated run on one frame would hit the entry its first run made. So each
//!   new flow is its own frame (the source port varies) run once
//!   (`repeat = 1`); the kernel's figure then includes one `ktime_get_ns()`
//!   and cold-ish caches. The floor runs once on each of the same frames, so
//!   the ratio compares like with like. Each new flow inserts an entry and
//!   emits a ring-buffer event (the ring is drained between rounds, and the
//!   counters are checked: no table-full or ring-full path is measured).
//! - rounds: every round runs floor and observe back to back, in the same
//!   order, on one pinned CPU; the table reports medians over rounds and the
//!   median of the per-round ratios, so machine noise hits both alike.

#![expect(
    clippy::print_stdout,
    reason = "a benchmark prints its table on stdout"
)]

mod common;

use std::net::Ipv4Addr;

use weir_ebpf::{
    abi::{CNT_NEW_FLOWS, CNT_RINGBUF_FULL, CNT_TABLE_FULL},
    loader::{Datapath, Floor, LoadOptions, Program, TestRunOutput},
};
use weir_integration_tests::packets::{
    L4, frame, ipv4,
    tcp::{ACK, PSH, SYN},
};

use common::{median, range, require_root};

const TC_ACT_UNSPEC: i32 = -1;
const TC_ACT_OK: i32 = 0;

/// Runs per syscall for the existing-flow and floor measurements.
const REPEAT: u32 = 200_000;
/// Rounds (each: floor, existing from/to pod, floor and new flows).
const ROUNDS: usize = 9;
/// Distinct new flows per round, each run once.
const NEW_FLOWS: u16 = 4096;

const POD: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const SERVICE_PORT: u16 = 8080;
const CLIENT_PORT: u16 = 10000;
/// First source port of the new flows; rounds use consecutive blocks.
const NEW_FLOW_PORT: u16 = 20000;

fn must<T, E: Into<anyhow::Error>>(what: &str, result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {:#}", e.into()))
}

fn ns(out: TestRunOutput) -> f64 {
    out.duration.as_secs_f64() * 1e9
}

/// One measured row: per-round nanoseconds of the program and of the floor.
#[derive(Default)]
struct Series {
    observe: Vec<f64>,
    floor: Vec<f64>,
}

impl Series {
    fn push(&mut self, observe: f64, floor: f64) {
        self.observe.push(observe);
        self.floor.push(floor);
    }

    fn ratios(&self) -> Vec<f64> {
        self.observe
            .iter()
            .zip(&self.floor)
            .map(|(o, f)| o / f)
            .collect()
    }

    fn row(&self, name: &str, method: &str) -> String {
        let ratios = self.ratios();
        format!(
            "| {name} | {method} | {:.1} | {:.1} | {:.2} | {} |",
            median(&self.floor),
            median(&self.observe),
            median(&ratios),
            range(&ratios, 2),
        )
    }
}

struct Bench {
    datapath: Datapath,
    floor: Floor,
}

impl Bench {
    fn observe(&self, program: Program, packet: &[u8], repeat: u32) -> f64 {
        let out = must(
            "BPF_PROG_TEST_RUN (observe)",
            self.datapath.test_run(program, packet, repeat),
        );
        assert_eq!(out.action, TC_ACT_UNSPEC, "{program:?} changed the verdict");
        ns(out)
    }

    fn floor(&self, packet: &[u8], repeat: u32) -> f64 {
        let out = must(
            "BPF_PROG_TEST_RUN (floor)",
            self.floor.test_run(packet, repeat),
        );
        assert_eq!(out.action, TC_ACT_OK);
        ns(out)
    }
}

/// Pins the calling thread to the last CPU, so consecutive measurements see
/// the same core (and the same caches). Best effort.
fn pin_to_last_cpu() -> Option<usize> {
    let cpus = std::thread::available_parallelism().ok()?.get();
    let cpu = cpus - 1;
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).ok()?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).ok()?;
    Some(cpu)
}

fn main() {
    require_root("datapath bench");
    let cpu = pin_to_last_cpu();

    let datapath = must(
        "loading the datapath",
        Datapath::load(&LoadOptions {
            // every new flow's event fits until the ring is drained
            ringbuf_bytes: 4 << 20,
            ..LoadOptions::default()
        }),
    );
    let floor = must("loading the floor program", Floor::load());
    let mut bench = Bench { datapath, floor };
    let mut ring = must("taking the ring buffer", bench.datapath.take_ring_buf());

    // An established TCP connection: pod client -> peer service, both ways.
    let from_pod = frame(
        ipv4(POD, PEER),
        L4::Tcp {
            sport: CLIENT_PORT,
            dport: SERVICE_PORT,
            flags: ACK | PSH,
        },
    );
    let to_pod = frame(
        ipv4(PEER, POD),
        L4::Tcp {
            sport: SERVICE_PORT,
            dport: CLIENT_PORT,
            flags: ACK | PSH,
        },
    );
    bench.observe(Program::FromPod, &from_pod, 1);
    while ring.next().is_some() {} // the established flow's event

    let new_flows: Vec<Vec<Vec<u8>>> = (0..ROUNDS)
        .map(|round| {
            let base = NEW_FLOW_PORT + u16::try_from(round).expect("few rounds") * NEW_FLOWS;
            (0..NEW_FLOWS)
                .map(|i| {
                    frame(
                        ipv4(POD, PEER),
                        L4::Tcp {
                            sport: base + i,
                            dport: SERVICE_PORT,
                            flags: SYN,
                        },
                    )
                })
                .collect()
        })
        .collect();

    // Warm-up: caches, branch predictors, CPU frequency.
    for _ in 0..3 {
        bench.floor(&from_pod, REPEAT);
        bench.observe(Program::FromPod, &from_pod, REPEAT);
    }

    let mut existing_from = Series::default();
    let mut existing_to = Series::default();
    let mut new_flow = Series::default();
    for packets in &new_flows {
        let before = must("reading counters", bench.datapath.counters());

        let f = bench.floor(&from_pod, REPEAT);
        let o = bench.observe(Program::FromPod, &from_pod, REPEAT);
        existing_from.push(o, f);

        let f = bench.floor(&to_pod, REPEAT);
        let o = bench.observe(Program::ToPod, &to_pod, REPEAT);
        existing_to.push(o, f);

        // New flows: floor and observe alternate packet by packet.
        let mut floor_ns = Vec::with_capacity(packets.len());
        let mut observe_ns = Vec::with_capacity(packets.len());
        for packet in packets {
            floor_ns.push(bench.floor(packet, 1));
            observe_ns.push(bench.observe(Program::FromPod, packet, 1));
        }
        new_flow.push(median(&observe_ns), median(&floor_ns));

        let after = must("reading counters", bench.datapath.counters());
        assert_eq!(
            after[CNT_NEW_FLOWS] - before[CNT_NEW_FLOWS],
            u64::from(NEW_FLOWS),
            "every new-flow frame must create an entry"
        );
        assert_eq!(after[CNT_TABLE_FULL], 0, "the flow table filled up");
        assert_eq!(after[CNT_RINGBUF_FULL], 0, "the ring buffer filled up");
        let mut events = 0;
        while ring.next().is_some() {
            events += 1;
        }
        assert_eq!(events, usize::from(NEW_FLOWS), "one event per new flow");
    }

    println!(
        "BPF_PROG_TEST_RUN, IPv4/TCP frames of {} bytes, {ROUNDS} rounds{}; \
         existing flow: repeat = {REPEAT} per run; new flow: {NEW_FLOWS} distinct \
         flows per round, repeat = 1 each (median per round).",
        from_pod.len(),
        cpu.map_or_else(String::new, |c| format!(" pinned to CPU {c}")),
    );
    println!();
    println!("| path | method | floor ns | observe ns | ratio to floor (median) | ratio range |");
    println!("|---|---|---:|---:|---:|---:|");
    println!(
        "{}",
        existing_from.row("existing flow, weir_from_pod", &format!("repeat {REPEAT}"))
    );
    println!(
        "{}",
        existing_to.row("existing flow, weir_to_pod", &format!("repeat {REPEAT}"))
    );
    println!(
        "{}",
        new_flow.row(
            "new flow (insert + event), weir_from_pod",
            "distinct frames, repeat 1"
        )
    );
}
