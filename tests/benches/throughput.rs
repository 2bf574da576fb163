//! iperf3 between two lab pods with weir's probes detached and attached.
//!
//! `cargo bench -p weir-integration-tests --bench throughput` (root, iperf3
//! installed, the `weir` binary built) prints a markdown table for
//! docs/benchmarks.md.
//!
//! Method: the two-pod lab in `tests/benches/lab.yaml` comes up under a unique
//! name; `iperf3 -s` runs in the server pod's network namespace, the client
//! in the other. Each round measures TCP throughput (`-t 3`) and the 64-byte
//! UDP packet rate (`-u -l 64 -b 0`, packets the receiver got per second)
//! once with the probes detached and once attached; the order of the two
//! alternates from round to round so a drift of the machine does not favour
//! either. "Attached" loads `weir_ebpf::loader::Datapath` in this process and
//! attaches it to both pods' host veths (tcx on 6.6+); dropping it detaches.
//! Neither iperf3 is pinned: on 2 vCPUs, pinning (`-A`) made single runs
//! vary more, not less.
//!
//! After each attached pair of runs, the same pair runs again with the
//! kernel's run statistics on (BPF_ENABLE_STATS, held by this process),
//! apart from the throughput compared: each program's run time per run
//! under iperf3
//! (TCP and UDP apart) is reported next to its `BPF_PROG_TEST_RUN` figure
//! on an established flow, the same loaded programs on the same machine,
//! measured between the rounds with the statistics off. Enabling them costs
//! two clock reads and a per-CPU update per run (about 45 ns here, by test
//! run), which would count against the attached side; part of it falls
//! inside the measured run time.

#![expect(
    clippy::print_stdout,
    reason = "a benchmark prints its table on stdout"
)]

mod common;

use std::{
    net::Ipv4Addr,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use weir_ebpf::{
    abi::CNT_PACKETS,
    loader::{Datapath, Floor, LoadOptions, Program},
};
use weir_integration_tests::{
    harness::Lab,
    packets::{
        L4, frame, ipv4,
        tcp::{ACK, PSH},
    },
};

use common::{LabPod, lab_pod, median, range, require_root};

const ROUNDS: usize = 9;
/// Test runs of an established flow per `BPF_PROG_TEST_RUN` call.
const TEST_RUN_REPEAT: u32 = 200_000;
const SECONDS: u32 = 3;
const PORT: &str = "5201";

/// `iperf3 -s` inside a pod, killed on drop.
struct Server(Child);

impl Server {
    fn start(netns: &str) -> Self {
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "iperf3", "-s", "-p", PORT])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting iperf3 -s (is iperf3 installed?)");
        Self(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the iperf3 client in `client`'s namespace and returns its JSON report.
fn iperf(client: &LabPod, server: &LabPod, seconds: u32, extra: &[&str]) -> Result<Value, String> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &client.netns,
            "iperf3",
            "-c",
            &server.ip.to_string(),
        ])
        .args(["-p", PORT, "-J", "-t", &seconds.to_string()])
        .args(extra)
        .output()
        .map_err(|e| format!("running iperf3: {e}"))?;
    let report: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("iperf3 printed no JSON ({e}): {out:?}"))?;
    if let Some(error) = report["error"].as_str() {
        return Err(format!("iperf3: {error}"));
    }
    Ok(report)
}

fn number(report: &Value, path: &[&str]) -> f64 {
    let mut v = report;
    for key in path {
        v = &v[key];
    }
    v.as_f64()
        .unwrap_or_else(|| panic!("iperf3 JSON has no {}: {report}", path.join(".")))
}

/// TCP throughput in Gbit/s, as received.
fn tcp(client: &LabPod, server: &LabPod) -> f64 {
    let report = iperf(client, server, SECONDS, &[]).unwrap_or_else(|e| panic!("{e}"));
    number(&report, &["end", "sum_received", "bits_per_second"]) / 1e9
}

/// 64-byte UDP datagrams the receiver got, per second.
fn udp(client: &LabPod, server: &LabPod) -> f64 {
    let report = iperf(client, server, SECONDS, &["-u", "-l", "64", "-b", "0"])
        .unwrap_or_else(|e| panic!("{e}"));
    let received = &["end", "sum_received"];
    let at = |key| number(&report, &[received[0], received[1], key]);
    (at("packets") - at("lost_packets")) / at("seconds")
}

/// Waits until the server answers (iperf3 -s needs a moment to listen).
fn wait_for_server(client: &LabPod, server: &LabPod) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match iperf(client, server, 1, &[]) {
            Ok(_) => return,
            Err(e) if Instant::now() > deadline => panic!("iperf3 server not ready: {e}"),
            Err(_) => thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn attach(pods: &[&LabPod]) -> Datapath {
    let mut datapath = Datapath::load(&LoadOptions::default())
        .unwrap_or_else(|e| panic!("loading the datapath: {e:#}"));
    for pod in pods {
        datapath
            .attach(&pod.host_veth)
            .unwrap_or_else(|e| panic!("attaching to {}: {e:#}", pod.host_veth));
    }
    datapath
}

#[derive(Default)]
struct Side {
    tcp_gbps: Vec<f64>,
    udp_pps: Vec<f64>,
}

const PROGRAMS: [Program; 2] = [Program::FromPod, Program::ToPod];

/// Each program's (runs, run time) from the kernel's statistics.
fn run_stats(datapath: &Datapath) -> [(u64, Duration); 2] {
    PROGRAMS.map(|p| {
        datapath
            .run_stats(p)
            .unwrap_or_else(|e| panic!("run statistics of {p:?}: {e}"))
    })
}

/// ns per run of each program between two readings.
fn ns_per_run(before: [(u64, Duration); 2], after: [(u64, Duration); 2]) -> [f64; 2] {
    [0, 1].map(|i| {
        let runs = after[i].0 - before[i].0;
        assert!(runs > 0, "{:?} did not run under iperf3", PROGRAMS[i]);
        #[expect(clippy::cast_precision_loss, reason = "counts are small")]
        let ns = (after[i].1 - before[i].1).as_nanos() as f64 / runs as f64;
        ns
    })
}

/// Per program: ns per run under TCP and under UDP, and by test run.
#[derive(Default)]
struct ProgramCost {
    tcp: [Vec<f64>; 2],
    udp: [Vec<f64>; 2],
    test_run: [Vec<f64>; 2],
    floor: Vec<f64>,
}

/// `BPF_PROG_TEST_RUN` of both programs on an established flow (created by
/// the first run; its key has the test-run device's ifindex, so it is not
/// one of the lab's flows), and of the floor, alternated.
fn test_runs(datapath: &Datapath, floor: &Floor, cost: &mut ProgramCost) {
    const POD: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    let tcp = |src, sport, dst, dport| {
        frame(
            ipv4(src, dst),
            L4::Tcp {
                sport,
                dport,
                flags: ACK | PSH,
            },
        )
    };
    let frames = [tcp(POD, 40000, PEER, 80), tcp(PEER, 80, POD, 40000)];
    let ns = |out: weir_ebpf::loader::TestRunOutput| {
        f64::from(u32::try_from(out.duration.as_nanos()).unwrap_or(u32::MAX))
    };
    for (i, program) in PROGRAMS.into_iter().enumerate() {
        datapath
            .test_run(program, &frames[i], 1)
            .unwrap_or_else(|e| panic!("test run: {e}"));
        let out = datapath
            .test_run(program, &frames[i], TEST_RUN_REPEAT)
            .unwrap_or_else(|e| panic!("test run: {e}"));
        cost.test_run[i].push(ns(out));
    }
    let out = floor
        .test_run(&frames[0], TEST_RUN_REPEAT)
        .unwrap_or_else(|e| panic!("test run (floor): {e}"));
    cost.floor.push(ns(out));
}

fn row(name: &str, unit: &str, detached: &[f64], attached: &[f64], decimals: usize) -> String {
    let ratios: Vec<f64> = attached.iter().zip(detached).map(|(a, d)| a / d).collect();
    let (d, a) = (median(detached), median(attached));
    format!(
        "| {name} | {unit} | {d:.decimals$} ({}) | {a:.decimals$} ({}) | {:.3} | {} |",
        range(detached, decimals),
        range(attached, decimals),
        a / d,
        range(&ratios, 3),
    )
}

fn main() {
    require_root("throughput bench");
    let release = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/weir");
    if std::env::var_os("WEIR_BIN").is_none() && release.exists() {
        // SAFETY: still single-threaded, nothing else reads the environment yet.
        unsafe { std::env::set_var("WEIR_BIN", &release) };
    }

    let lab = Lab::up("wbench", include_str!("lab.yaml"));
    let status = lab.status();
    let (client, server) = (lab_pod(&status, "client"), lab_pod(&status, "server"));
    let server_process = Server::start(&server.netns);
    wait_for_server(&client, &server);

    let mut detached = Side::default();
    let mut attached = Side::default();
    let mut with_stats = Side::default();
    let mut cost = ProgramCost::default();
    let floor = Floor::load().unwrap_or_else(|e| panic!("loading the floor program: {e:#}"));
    let mut packets_seen = 0;
    for round in 0..ROUNDS {
        // D,A then A,D: each state goes first equally often
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for with_probes in order {
            let datapath = with_probes.then(|| attach(&[&client, &server]));
            let Some(datapath) = datapath else {
                detached.tcp_gbps.push(tcp(&client, &server));
                detached.udp_pps.push(udp(&client, &server));
                continue;
            };
            // the throughput with the statistics off, as a user runs it
            attached.tcp_gbps.push(tcp(&client, &server));
            attached.udp_pps.push(udp(&client, &server));
            {
                // while this fd is open the kernel keeps run statistics
                let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
                    .unwrap_or_else(|e| panic!("enabling BPF run statistics: {e}"));
                let before = run_stats(&datapath);
                with_stats.tcp_gbps.push(tcp(&client, &server));
                let between = run_stats(&datapath);
                with_stats.udp_pps.push(udp(&client, &server));
                let after = run_stats(&datapath);
                let (t, u) = (ns_per_run(before, between), ns_per_run(between, after));
                for i in 0..2 {
                    cost.tcp[i].push(t[i]);
                    cost.udp[i].push(u[i]);
                }
            } // statistics off: they would add two clock reads to each test run
            // before the test runs, which the counters count too
            let counters = datapath
                .counters()
                .unwrap_or_else(|e| panic!("reading counters: {e:#}"));
            packets_seen += counters[CNT_PACKETS];
            test_runs(&datapath, &floor, &mut cost);
            // datapath dropped: detached
        }
    }
    assert!(packets_seen > 0, "the attached probes saw no packets");

    println!(
        "iperf3 {} between two lab pods (veth pairs on one bridge), {ROUNDS} rounds, \
         detached and attached alternating, {SECONDS} s per run; medians (range); \
         the probes counted {packets_seen} packets while attached.",
        iperf3_version()
    );
    println!();
    println!(
        "| traffic | unit | probes detached | probes attached | attached / detached (medians) | per-round ratio range |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    println!(
        "{}",
        row(
            "TCP, 1 stream",
            "Gbit/s",
            &detached.tcp_gbps,
            &attached.tcp_gbps,
            2
        )
    );
    println!(
        "{}",
        row(
            "UDP, 64-byte payload",
            "packets/s received",
            &detached.udp_pps,
            &attached.udp_pps,
            0
        )
    );
    println!();
    println!(
        "After each attached pair, the same two runs again with the kernel's run statistics on \
         (for the table below; they add two clock reads to every run of every program): \
         TCP {:.2} Gbit/s ({}), {:.3} of detached; UDP {:.0} packets/s ({}), {:.3} of detached \
         (medians).",
        median(&with_stats.tcp_gbps),
        range(&with_stats.tcp_gbps, 2),
        median(&with_stats.tcp_gbps) / median(&detached.tcp_gbps),
        median(&with_stats.udp_pps),
        range(&with_stats.udp_pps, 0),
        median(&with_stats.udp_pps) / median(&detached.udp_pps),
    );
    println!();
    println!(
        "Each program's cost per run: the kernel's run statistics (`run_time_ns / run_cnt`, \
         as `bpftool prog show` reports them) under iperf3 in the runs with statistics on, next to \
         `BPF_PROG_TEST_RUN` of the same loaded programs on an established flow (repeat \
         {TEST_RUN_REPEAT}) after each attached run; medians (range) over the {ROUNDS} rounds. \
         The floor program (`weir_floor`, returns at once) by test run: {:.0} ns ({}). \
         Load average at the end: {}.",
        median(&cost.floor),
        range(&cost.floor, 0),
        std::fs::read_to_string("/proc/loadavg").map_or_else(
            |_| "?".to_owned(),
            |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
        )
    );
    println!();
    println!(
        "| program | test run, ns | under iperf3 TCP, ns/run | / test run | under iperf3 UDP 64 B, ns/run | / test run |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (i, program) in PROGRAMS.iter().enumerate() {
        let test_run = median(&cost.test_run[i]);
        let (tcp, udp) = (median(&cost.tcp[i]), median(&cost.udp[i]));
        println!(
            "| {} | {test_run:.0} ({}) | {tcp:.0} ({}) | {:.2} | {udp:.0} ({}) | {:.2} |",
            program.name(),
            range(&cost.test_run[i], 0),
            range(&cost.tcp[i], 0),
            tcp / test_run,
            range(&cost.udp[i], 0),
            udp / test_run,
        );
    }
    drop(server_process);
    drop(lab);
}

fn iperf3_version() -> String {
    Command::new("iperf3")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .nth(1)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "?".to_owned())
}
