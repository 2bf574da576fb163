//! DNS answers: how many a second the agent parses into its per-pod name
//! map, on one thread, against the 10,000 a second a busy node's pods may
//! receive in a burst.
//!
//! `cargo bench -p weir --bench dns` prints markdown table rows for
//! docs/benchmarks.md. The mix: 100 pods, 2,000 names, each answer an A
//! record behind a CNAME (as CDN-hosted SaaS names are), 1 in 10 NXDOMAIN,
//! 9 rounds of 100,000 answers; the median rate is reported.

#![expect(
    clippy::print_stdout,
    reason = "a benchmark prints its table on stdout"
)]

use std::{
    net::{IpAddr, Ipv4Addr},
    str::FromStr as _,
    time::Instant,
};

use hickory_proto::{
    op::{Message, OpCode, Query, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, CNAME},
    },
};
use weir_agent::dns::{Names, NamesOptions, parse};

fn answer(i: u32) -> Vec<u8> {
    let name = Name::from_str(&format!("api{}.svc{}.example.", i % 2000, i % 7)).expect("name");
    if i % 10 == 9 {
        let mut m = Message::error_msg(1, OpCode::Query, ResponseCode::NXDomain);
        m.add_query(Query::query(name, RecordType::A));
        return m.to_vec().expect("encode");
    }
    let edge = Name::from_str(&format!("edge{}.cdn.example.", i % 50)).expect("name");
    let mut m = Message::response(1, OpCode::Query);
    m.add_query(Query::query(name.clone(), RecordType::A));
    m.add_answer(Record::from_rdata(
        name,
        300,
        RData::CNAME(CNAME(edge.clone())),
    ));
    let [a, b] = u16::try_from(i % 60_000).expect("small").to_be_bytes();
    m.add_answer(Record::from_rdata(
        edge,
        30,
        RData::A(A(Ipv4Addr::new(203, 0, a, b))),
    ));
    m.to_vec().expect("encode")
}

fn main() {
    const ROUNDS: usize = 9;
    const ANSWERS: u32 = 100_000;
    let messages: Vec<Vec<u8>> = (0..ANSWERS).map(answer).collect();
    let mut rates = Vec::new();
    for round in 0..ROUNDS {
        let names = Names::new(NamesOptions::default());
        let start = Instant::now();
        for (i, m) in messages.iter().enumerate() {
            let pod = IpAddr::V4(Ipv4Addr::new(
                10,
                0,
                0,
                u8::try_from(i % 100).expect("small"),
            ));
            let a = parse(m).expect("parses");
            names.record(
                pod,
                &a,
                1_000_000_000 * u64::try_from(round * 1000 + i / 1000).expect("small"),
            );
        }
        let secs = start.elapsed().as_secs_f64();
        rates.push(f64::from(ANSWERS) / secs);
        assert_eq!(names.stats().answers, u64::from(ANSWERS));
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[ROUNDS / 2];
    println!(
        "| answers parsed and recorded per second, one thread (median of {ROUNDS}) | {median:.0} |"
    );
    println!("| range | {:.0}–{:.0} |", rates[0], rates[ROUNDS - 1]);
    println!(
        "| headroom over 10,000 answers/s | {:.1}× |",
        median / 10_000.0
    );
}
