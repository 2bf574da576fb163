//! The relay's merged flow stream: every agent's `/api/flows` records in
//! one stream, in time order, each tagged with its node; a connection
//! between pods on two nodes shown once, from its initiator's side.
//!
//! Pure: the I/O around it feeds each agent's records in and writes out
//! what comes back.
//!
//! - **Order.** Each agent sends its records about in time order; the
//!   agents' clocks and networks differ. The merger holds records in a
//!   buffer sorted by time and lets the earliest go when the buffer holds
//!   more than [`Options::max_buffered`] records, or when a record has
//!   waited [`Options::max_delay`] since it arrived (Hubble Relay's 100
//!   flows and 1 s). A record later than that bound (an agent's clock far
//!   behind, a slow network) is still shown, out of order, and counted
//!   ([`MergeStats::out_of_order`]). Waiting is measured on the relay's
//!   clock from arrival, not from the record's time: a node whose clock
//!   is ahead is never held longer than the bound.
//! - **One side of a connection.** A connection between pods on two nodes
//!   is reported by both agents: the initiator's (`weir.initiator:
//!   local`) and the responder's (`weir.initiator: remote`, with the
//!   initiator's node in `weir.peer_node`). Unless
//!   [`Options::both_sides`], the responder's report is hidden while the
//!   initiator's node is one of the streams being merged; otherwise (that
//!   agent is down, or the peer's node is unknown) it is the only report
//!   and is shown. Same-node connections are shown as the agent shows
//!   them.
//! - **Reconnects.** Each record carries its number in its agent's stream
//!   (`weir.seq`). A stream that broke resumes with
//!   `/api/flows?follow=true&after=`[`Merger::resume_after`]; whatever an
//!   agent sends again is dropped ([`MergeStats::replayed`]), and what was
//!   buffered when it broke is still shown.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    time::{Duration, Instant},
};

use crate::{api::wire::FlowJson, timestamp::parse_rfc3339};

/// What the merger reads of a record: a parsed [`FlowJson`], or a
/// [`RawFlow`](super::raw_flow::RawFlow) passed on as its agent sent it.
pub trait StreamRecord {
    /// Its time (Unix ns); `None` when it is not RFC 3339.
    fn time_ns(&self) -> Option<u64>;
    /// Its number in its agent's stream (`weir.seq`).
    fn seq(&self) -> Option<u64>;
    /// The node that reported it (`node_name`), empty when not named.
    fn node_name(&self) -> &str;
    /// Name the node that reported it, for an agent that has no name;
    /// `false` when the record cannot take the name (it stays unnamed).
    fn set_node_name(&mut self, node: &str) -> bool;
    /// The initiator's node, when this is the responder's report of the
    /// connection (`weir.initiator: remote` and `weir.peer_node`).
    fn initiator_node(&self) -> Option<&str>;
}

impl StreamRecord for FlowJson {
    fn time_ns(&self) -> Option<u64> {
        parse_rfc3339(&self.time)
    }

    fn seq(&self) -> Option<u64> {
        self.weir.seq
    }

    fn node_name(&self) -> &str {
        &self.node_name
    }

    fn set_node_name(&mut self, node: &str) -> bool {
        node.clone_into(&mut self.node_name);
        true
    }

    fn initiator_node(&self) -> Option<&str> {
        (self.weir.initiator == "remote")
            .then_some(self.weir.peer_node.as_deref())
            .flatten()
    }
}

/// The merger's bounds and choices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// At most this many records wait to be put in order.
    pub max_buffered: usize,
    /// No record waits longer than this after it arrived.
    pub max_delay: Duration,
    /// Show both nodes' reports of a cross-node connection.
    pub both_sides: bool,
}

impl Default for Options {
    /// Hubble Relay's: 100 flows, 1 s.
    fn default() -> Self {
        Self {
            max_buffered: 100,
            max_delay: Duration::from_secs(1),
            both_sides: false,
        }
    }
}

/// What the merger did with the records it got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// Records received.
    pub received: u64,
    /// Records emitted.
    pub emitted: u64,
    /// Emitted records earlier than a record emitted before them.
    pub out_of_order: u64,
    /// Responders' reports hidden: the initiator's node reports the
    /// connection.
    pub responder_sides: u64,
    /// Records an agent sent again after a reconnect, dropped.
    pub replayed: u64,
    /// Records whose time is not RFC 3339, emitted as they came.
    pub bad_times: u64,
    /// Records of an agent without a name that could not be given the
    /// node they came from (not a flow record), emitted as they came.
    pub unnamed: u64,
}

impl MergeStats {
    /// The records set apart or passed on unordered, by outcome, for the
    /// relay's `weir_relay_stream_records_total`.
    #[must_use]
    pub const fn set_apart(&self) -> [(&'static str, u64); 5] {
        [
            ("out_of_order", self.out_of_order),
            ("responder_side", self.responder_sides),
            ("replayed", self.replayed),
            ("bad_time", self.bad_times),
            ("unnamed", self.unnamed),
        ]
    }
}

/// A buffered record's place: its time, then its arrival.
type Key = (u64, u64);

/// An agent's stream.
#[derive(Debug, Default)]
struct Source {
    /// The stream is up: its node's reports are being merged.
    connected: bool,
    /// The highest `weir.seq` received.
    last_seq: u64,
}

/// The merger of records `R`. Feed it with [`Merger::push`], call
/// [`Merger::flush_due`] by [`Merger::next_due`], and [`Merger::finish`]
/// at the end.
#[derive(Debug)]
pub struct Merger<R = FlowJson> {
    options: Options,
    buffer: BTreeMap<Key, R>,
    /// Buffered records by arrival, for the age bound. Records emitted by
    /// the count bound stay here until they reach the front or a
    /// compaction removes them.
    arrivals: VecDeque<(Instant, Key)>,
    sources: HashMap<String, Source>,
    next_arrival: u64,
    /// The latest time emitted so far.
    high_water: Option<u64>,
    stats: MergeStats,
}

impl<R: StreamRecord> Merger<R> {
    /// A merger with no sources yet.
    #[must_use]
    pub fn new(options: Options) -> Self {
        Self {
            options,
            buffer: BTreeMap::new(),
            arrivals: VecDeque::new(),
            sources: HashMap::new(),
            next_arrival: 0,
            high_water: None,
            stats: MergeStats::default(),
        }
    }

    /// `node`'s stream is up (again): its records come in, and the
    /// responders' reports of connections it initiated are hidden.
    pub fn connect(&mut self, node: &str) {
        self.sources.entry(node.to_owned()).or_default().connected = true;
    }

    /// `node`'s stream broke: what it sent is still emitted, and the
    /// responders' reports of connections it initiated are shown again
    /// (they are the only ones now).
    pub fn disconnect(&mut self, node: &str) {
        if let Some(source) = self.sources.get_mut(node) {
            source.connected = false;
        }
    }

    /// The `after=` with which `node`'s stream resumes: the highest record
    /// number it sent; `None` before it sent a numbered record.
    #[must_use]
    pub fn resume_after(&self, node: &str) -> Option<u64> {
        self.sources
            .get(node)
            .map(|s| s.last_seq)
            .filter(|&seq| seq != 0)
    }

    /// What happened so far.
    #[must_use]
    pub fn stats(&self) -> MergeStats {
        self.stats
    }

    /// How many records wait.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// A record from `node`'s stream, arrived at `now`; what is due is
    /// appended to `out`, in order.
    pub fn push(&mut self, node: &str, mut record: R, now: Instant, out: &mut Vec<R>) {
        self.stats.received += 1;
        // The node the relay reached, for an agent that has no name.
        if record.node_name().is_empty() && !record.set_node_name(node) {
            self.stats.unnamed += 1;
        }
        let source = self.sources.entry(node.to_owned()).or_default();
        if let Some(seq) = record.seq() {
            if seq <= source.last_seq {
                self.stats.replayed += 1;
                return self.flush_due(now, out);
            }
            source.last_seq = seq;
        }
        if !self.options.both_sides && self.initiator_reports(&record) {
            self.stats.responder_sides += 1;
            return self.flush_due(now, out);
        }
        let Some(time) = record.time_ns() else {
            self.stats.bad_times += 1;
            self.emit_unordered(record, out);
            return self.flush_due(now, out);
        };
        let key = (time, self.next_arrival);
        self.next_arrival += 1;
        self.buffer.insert(key, record);
        self.arrivals.push_back((now, key));
        while self.buffer.len() > self.options.max_buffered {
            self.emit_first(out);
        }
        self.flush_due(now, out);
        self.compact();
    }

    /// Emit, in order, every record up to the last one that has waited
    /// [`Options::max_delay`] at `now`.
    pub fn flush_due(&mut self, now: Instant, out: &mut Vec<R>) {
        while let Some(&(arrived, key)) = self.arrivals.front() {
            if !self.buffer.contains_key(&key) {
                self.arrivals.pop_front();
                continue;
            }
            if now.saturating_duration_since(arrived) < self.options.max_delay {
                break;
            }
            self.arrivals.pop_front();
            while self
                .buffer
                .first_key_value()
                .is_some_and(|(k, _)| *k <= key)
            {
                self.emit_first(out);
            }
        }
    }

    /// When the next record is due: call [`Merger::flush_due`] then
    /// (`None`: nothing waits, or never, for an unbounded delay).
    #[must_use]
    pub fn next_due(&self) -> Option<Instant> {
        self.arrivals
            .iter()
            .find(|(_, key)| self.buffer.contains_key(key))
            .and_then(|(arrived, _)| arrived.checked_add(self.options.max_delay))
    }

    /// Emit everything buffered, in order (the client went away, or every
    /// stream ended).
    pub fn finish(&mut self, out: &mut Vec<R>) {
        while !self.buffer.is_empty() {
            self.emit_first(out);
        }
        self.arrivals.clear();
    }

    /// Whether `record` is the responder's report of a connection whose
    /// initiator's node is being merged: that node reports it too.
    fn initiator_reports(&self, record: &R) -> bool {
        record.initiator_node().is_some_and(|peer| {
            peer != record.node_name() && self.sources.get(peer).is_some_and(|s| s.connected)
        })
    }

    fn emit_first(&mut self, out: &mut Vec<R>) {
        if let Some(((time, _), record)) = self.buffer.pop_first() {
            if self.high_water.is_some_and(|high| time < high) {
                self.stats.out_of_order += 1;
            } else {
                self.high_water = Some(time);
            }
            self.stats.emitted += 1;
            out.push(record);
        }
    }

    fn emit_unordered(&mut self, record: R, out: &mut Vec<R>) {
        self.stats.emitted += 1;
        out.push(record);
    }

    /// Drop the arrivals of records the count bound emitted, once they
    /// outnumber the buffer: the age bound's queue stays proportional to
    /// the buffer, whatever the rate.
    fn compact(&mut self) {
        if self.arrivals.len()
            > self
                .options
                .max_buffered
                .saturating_mul(2)
                .saturating_add(64)
        {
            let buffer = &self.buffer;
            self.arrivals.retain(|(_, key)| buffer.contains_key(key));
        }
    }
}
