//! Bursts of DNS answers through the datapath to a running agent, with the
//! exact accounting of what became of each: the privileged test
//! (`tests/tests/dns_answers.rs`) and the bench (`tests/benches/dns_burst.rs`).
//!
//! A lab pod binds UDP port 53 and sends DNS responses to another pod: on
//! the receiver's host veth they are "answers to a pod" for the datapath,
//! which copies each to the agent or counts why not. Every answer sent
//! ends in exactly one of the datapath's counters (copied, rate-limited,
//! ring buffer full; TCP-only skips stay zero), and every copied one in
//! one of the agent's (parsed, unparsed).

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    thread,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{Name, RData, Record, RecordType, rdata::A},
};

use crate::harness::{Agent, eventually};

/// A DNS response for `name` (one A record, TTL 30) with message id `id`.
#[must_use]
pub fn answer(id: u16, name: &str, address: Ipv4Addr) -> Vec<u8> {
    let name = Name::from_ascii(name).expect("a valid DNS name");
    let mut message = Message::new(id, MessageType::Response, OpCode::Query);
    message.add_query(Query::query(name.clone(), RecordType::A));
    message.add_answer(Record::from_rdata(name, 30, RData::A(A(address))));
    message.to_vec().expect("a DNS message encodes")
}

/// How a burst was sent.
#[derive(Clone, Copy, Debug)]
pub struct Sent {
    /// Answers sent (each `send_to` that succeeded).
    pub answers: u64,
    /// From the first to the last send.
    pub elapsed: Duration,
}

impl Sent {
    /// Answers per second actually sent.
    #[must_use]
    pub fn rate(&self) -> f64 {
        self.answers as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Send `count` answers from UDP port 53 inside the lab netns `netns` to
/// `to`, at `rate` answers a second (paced by the clock, not by sleeps
/// alone), or as fast as the socket takes them.
///
/// # Panics
/// When the netns cannot be entered or the socket not bound.
#[must_use]
pub fn send(netns: &str, to: SocketAddr, count: u64, rate: Option<u32>) -> Sent {
    let netns = netns.to_owned();
    thread::scope(|scope| {
        scope
            .spawn(move || {
                weir_lab::netns::enter(&netns)
                    .unwrap_or_else(|e| panic!("cannot enter netns {netns}: {e}"));
                let socket = UdpSocket::bind(("0.0.0.0", 53)).expect("bind UDP port 53 in the pod");
                let messages: Vec<Vec<u8>> = (0..256u16)
                    .map(|i| answer(i, "api.burst.example", Ipv4Addr::new(203, 0, 113, 99)))
                    .collect();
                let start = Instant::now();
                let mut sent = 0u64;
                for i in 0..count {
                    if let Some(rate) = rate {
                        let due = start + Duration::from_secs_f64(i as f64 / f64::from(rate));
                        let now = Instant::now();
                        if due > now {
                            let wait = due - now;
                            // Sleep the long waits, spin the short ones.
                            if wait > Duration::from_micros(200) {
                                thread::sleep(wait - Duration::from_micros(100));
                            }
                            while Instant::now() < due {
                                std::hint::spin_loop();
                            }
                        }
                    }
                    let message = &messages[usize::try_from(i % 256).expect("small")];
                    // A full socket buffer (ENOBUFS) is retried: what counts
                    // is what reached the wire.
                    loop {
                        match socket.send_to(message, to) {
                            Ok(_) => break,
                            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                                thread::yield_now();
                            }
                            Err(e) => panic!("send to {to}: {e}"),
                        }
                    }
                    sent += 1;
                }
                Sent {
                    answers: sent,
                    elapsed: start.elapsed(),
                }
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The agent's counts of DNS answers (its mirror of the datapath's
/// counters, and its parser's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Copied to the agent (`weir_dns_answers_copied_total`).
    pub copied: u64,
    /// Not copied: the rate limit.
    pub limited: u64,
    /// Not copied: the ring buffer was full.
    pub ringbuf_lost: u64,
    /// Copied but cut at the copy's bound.
    pub truncated: u64,
    /// TCP segments not holding one whole answer.
    pub skipped: u64,
    /// Parsed by the agent.
    pub parsed: u64,
    /// Copied but not parsed.
    pub unparsed: u64,
}

impl Counts {
    /// Read them from the agent's `/metrics`.
    #[must_use]
    pub fn read(agent: &Agent) -> Option<Self> {
        let text = agent.get_text("/metrics")?;
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "counters are whole numbers"
        )]
        let get = |name: &str| crate::harness::metric_value(&text, name).map(|v| v as u64);
        Some(Self {
            copied: get("weir_dns_answers_copied_total")?,
            limited: get("weir_dns_answers_limited_total")?,
            ringbuf_lost: get("weir_dns_answers_ringbuf_lost_total")?,
            truncated: get("weir_dns_answers_truncated_total")?,
            skipped: get("weir_dns_answers_skipped_total")?,
            parsed: get("weir_dns_answers_parsed_total")?,
            unparsed: get("weir_dns_answers_unparsed_total")?,
        })
    }

    /// Answers the datapath accounted for: copied or counted as not.
    #[must_use]
    pub const fn accounted(&self) -> u64 {
        self.copied + self.limited + self.ringbuf_lost + self.skipped
    }

    /// Lost between sent and parsed, all counted: not copied, or not
    /// parsed.
    #[must_use]
    pub const fn lost(&self) -> u64 {
        self.limited + self.ringbuf_lost + self.skipped + self.unparsed
    }
}

/// Wait until the agent has accounted for `sent` answers in the datapath
/// and parsed or refused every copied one; the counts then, or the last
/// ones read after `timeout`.
#[must_use]
pub fn settled(agent: &Agent, sent: u64, timeout: Duration) -> (Counts, Duration) {
    let start = Instant::now();
    let mut last = Counts::default();
    let done = eventually(timeout, || {
        let counts = Counts::read(agent)?;
        last = counts;
        (counts.accounted() >= sent && counts.parsed + counts.unparsed >= counts.copied)
            .then_some(counts)
    });
    (done.unwrap_or(last), start.elapsed())
}
