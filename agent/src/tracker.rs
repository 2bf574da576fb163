//! Turns what the kernel reports (ring-buffer announcements and flow-table
//! sweeps) into [`Observation`]s with counter deltas.
//!
//! The ring buffer is a low-latency hint: an announced flow is reported at
//! once. The sweep is the source of truth: it reports counter deltas, finds
//! flows whose announcement was lost (ring buffer full) and expires idle
//! entries after reporting their last counters, so the kernel table never
//! fills up on a long-running node. This module is pure: the daemon does the
//! map reads and deletes.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use weir_ebpf::abi::{self, FlowEvent, FlowKey, FlowStats};
use weir_generator::model::Protocol;

use crate::flow::{
    CheckedDirection, DenyReason, EntryCounters, EntryKey, Initiator, Observation, Verdict,
};

/// Converts kernel `CLOCK_MONOTONIC` timestamps to Unix time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// Unix nanoseconds at monotonic zero.
    unix_at_boot_ns: i128,
}

impl Clock {
    /// A clock from a simultaneous reading of both clocks.
    #[must_use]
    pub fn from_readings(monotonic_ns: u64, unix_ns: u64) -> Self {
        Self {
            unix_at_boot_ns: i128::from(unix_ns) - i128::from(monotonic_ns),
        }
    }

    /// Read both clocks now. Re-read periodically: wall-clock steps (NTP)
    /// move the offset.
    #[must_use]
    pub fn now() -> Self {
        let mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map_or(0, |t| timespec_ns(&t));
        let unix = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME)
            .map_or(0, |t| timespec_ns(&t));
        Self::from_readings(mono, unix)
    }

    /// Unix nanoseconds of a kernel timestamp.
    #[must_use]
    pub fn to_unix(self, monotonic_ns: u64) -> u64 {
        u64::try_from(self.unix_at_boot_ns + i128::from(monotonic_ns)).unwrap_or(0)
    }
}

fn timespec_ns(t: &nix::sys::time::TimeSpec) -> u64 {
    u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec()).unwrap_or(0)
}

/// The current `CLOCK_MONOTONIC` reading, the kernel's timestamp base.
#[must_use]
pub fn monotonic_now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| timespec_ns(&t))
}

/// When flow table entries expire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expiry {
    /// Any flow idle for this long.
    pub idle: Duration,
    /// A TCP flow that saw FIN or RST and has been idle for this long.
    pub closing: Duration,
}

impl Default for Expiry {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(60),
            closing: Duration::from_secs(10),
        }
    }
}

/// Counters already reported for one flow table entry.
type Reported = EntryCounters;

/// What the report of an adopted connection ([`FlowTracker::adopt`]) folded:
/// one connection, no packet. The entry its packets make in the table
/// carries `connections` 1 for that same connection.
pub const ADOPTED: EntryCounters = EntryCounters {
    packets_from_pod: 0,
    bytes_from_pod: 0,
    packets_to_pod: 0,
    bytes_to_pod: 0,
    connections: 1,
};

/// What one sweep found.
#[derive(Debug, Default)]
pub struct Sweep {
    /// Reports to fold, in table order.
    pub observations: Vec<Observation>,
    /// Entries to delete from the kernel table (already reported as closed).
    pub expired: Vec<FlowKey>,
    /// Flows found in the table whose announcement never arrived.
    pub recovered: u64,
    /// Entries in the table.
    pub entries: u64,
}

/// Per-flow reporting state.
#[derive(Debug)]
pub struct FlowTracker {
    reported: HashMap<FlowKey, Reported>,
    /// Connections reported from the pod's sockets ([`FlowTracker::adopt`])
    /// that have no table entry yet, with when they were adopted (monotonic
    /// ns): kept across sweeps, which only keep the keys in the table, until
    /// an entry carries them on or, idle for [`Expiry::idle`], they would
    /// have expired from the table too.
    adopted: HashMap<FlowKey, u64>,
    expiry: Expiry,
}

impl FlowTracker {
    /// A tracker that knows no flows.
    #[must_use]
    pub fn new(expiry: Expiry) -> Self {
        Self {
            reported: HashMap::new(),
            adopted: HashMap::new(),
            expiry,
        }
    }

    /// Flows currently known.
    #[must_use]
    pub fn len(&self) -> usize {
        self.reported.len()
    }

    /// Whether no flow is known.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.reported.is_empty()
    }

    /// Record a flow reported by other means at monotonic time `now_ns`
    /// (an open socket found at attach time, as one connection:
    /// [`ADOPTED`]), so that the table entry a later packet of the same
    /// connection makes is not reported as a new connection again.
    /// Returns false when the flow was already known.
    pub fn adopt(&mut self, key: FlowKey, now_ns: u64) -> bool {
        if self.reported.contains_key(&key) || self.adopted.contains_key(&key) {
            return false;
        }
        self.adopted.insert(key, now_ns);
        true
    }

    /// What was reported of `key`: its entry's counters, or an adopted
    /// connection's, which its first entry carries on from then.
    fn reported_of(&mut self, key: &FlowKey) -> Option<Reported> {
        if let Some(reported) = self.reported.get(key) {
            return Some(*reported);
        }
        self.adopted.remove(key)?;
        self.reported.insert(*key, ADOPTED);
        Some(ADOPTED)
    }

    /// Start from what the store says was folded of the entries of a
    /// (pinned) table an earlier agent reported: their next reports are
    /// deltas from there, their connections are not new. A seed whose
    /// entry is gone, or was made again since, is dropped by the first
    /// sweep.
    pub fn seed(&mut self, folded: impl IntoIterator<Item = (EntryKey, EntryCounters)>) {
        for (entry, counters) in folded {
            if let Some(key) = flow_key(&entry) {
                self.reported.insert(key, counters);
            }
        }
    }

    /// A ring-buffer announcement: a new flow, reported at once with no
    /// counters (the sweep brings them). `None` for an event that does not
    /// describe a trackable flow, or a flow already reported.
    pub fn on_event(&mut self, event: &FlowEvent, clock: Clock) -> Option<Observation> {
        let known = self.reported_of(&event.key).map(|r| r.connections);
        // A connection already reported (by a sweep that read the entry
        // before its announcement was drained) is not reported again.
        if event.kind != abi::EVENT_NEW_FLOW || known.is_some_and(|c| event.connection <= c) {
            return None;
        }
        let mut obs = base_observation(&event.key, event.initiator, event.flags)?;
        let reported = self.reported.entry(event.key).or_default();
        obs.connections = event.connection.saturating_sub(reported.connections).max(1);
        reported.connections = event.connection;
        obs.folded = Some(*reported);
        let time = clock.to_unix(event.timestamp_ns);
        obs.new_flow = true;
        obs.first_seen = time;
        obs.last_seen = time;
        obs.kernel_time = time;
        obs.icmp = icmp_of(event.key.proto, event.icmp_type, event.icmp_code);
        obs.verdict = Verdict::from_abi(event.verdict);
        obs.reason = DenyReason::from_abi(event.reason);
        obs.direction = if obs.verdict == Verdict::Forwarded && event.peer_identity == 0 {
            // Not judged (observe mode): the direction is the initiator's.
            CheckedDirection::of_initiator(obs.initiator)
        } else {
            CheckedDirection::from_abi(event.direction)
        };
        if event.key.proto == IPPROTO_TCP {
            if obs.initiator == Initiator::Remote {
                obs.tcp_flags_to_pod = event.tcp_flags;
            } else {
                obs.tcp_flags_from_pod = event.tcp_flags;
            }
        }
        Some(obs)
    }

    /// Undo the report of `obs`, which never reached the aggregator (its
    /// queue was full): the next sweep reports its connections again.
    pub fn unreport(&mut self, key: &FlowKey, obs: &Observation) {
        if let Some(reported) = self.reported.get_mut(key) {
            reported.connections = reported.connections.saturating_sub(obs.connections);
        }
    }

    /// A full read of the kernel flow table at monotonic time `now_ns`.
    pub fn sweep(
        &mut self,
        entries: impl IntoIterator<Item = (FlowKey, FlowStats)>,
        now_ns: u64,
        clock: Clock,
    ) -> Sweep {
        let mut sweep = Sweep::default();
        let mut seen = HashMap::with_capacity(self.reported.len());
        for (key, stats) in entries {
            sweep.entries += 1;
            let before = self.reported_of(&key);
            // The counters only grow, within an entry: fewer means the entry
            // was deleted (expired, or by the enforcer) and made again.
            let known = before.is_some_and(|b| {
                stats.connections >= b.connections
                    && stats.packets_from_pod >= b.packets_from_pod
                    && stats.packets_to_pod >= b.packets_to_pod
            });
            let before = before.filter(|_| known).unwrap_or_default();
            // New connections: a new entry, or one reopened by a new
            // connection on its 5-tuple since the last report.
            let connections = if known {
                stats.connections.saturating_sub(before.connections)
            } else {
                stats.connections.max(1)
            };
            let new_flow = connections > 0;
            let idle = Duration::from_nanos(now_ns.saturating_sub(stats.last_seen_ns));
            let timeout = if stats.flags & abi::FLOW_F_CLOSING != 0 {
                self.expiry.closing
            } else {
                self.expiry.idle
            };
            let closed = idle >= timeout;
            let delta = Reported {
                packets_from_pod: stats
                    .packets_from_pod
                    .saturating_sub(before.packets_from_pod),
                bytes_from_pod: stats.bytes_from_pod.saturating_sub(before.bytes_from_pod),
                packets_to_pod: stats.packets_to_pod.saturating_sub(before.packets_to_pod),
                bytes_to_pod: stats.bytes_to_pod.saturating_sub(before.bytes_to_pod),
                connections: 0,
            };
            let changed = delta.packets_from_pod + delta.packets_to_pod > 0;
            if new_flow && !known {
                sweep.recovered += 1;
            }
            let now_reported = Reported {
                packets_from_pod: stats.packets_from_pod,
                bytes_from_pod: stats.bytes_from_pod,
                packets_to_pod: stats.packets_to_pod,
                bytes_to_pod: stats.bytes_to_pod,
                connections: stats.connections,
            };
            if closed {
                sweep.expired.push(key);
            } else {
                seen.insert(key, now_reported);
            }
            if !(new_flow || changed || closed) {
                continue;
            }
            let Some(mut obs) = base_observation(&key, stats.initiator, stats.flags) else {
                continue;
            };
            obs.new_flow = new_flow;
            obs.connections = connections;
            obs.folded = Some(now_reported);
            obs.closed = closed;
            obs.packets_from_pod = delta.packets_from_pod;
            obs.bytes_from_pod = delta.bytes_from_pod;
            obs.packets_to_pod = delta.packets_to_pod;
            obs.bytes_to_pod = delta.bytes_to_pod;
            obs.tcp_flags_from_pod = stats.tcp_flags_from_pod;
            obs.tcp_flags_to_pod = stats.tcp_flags_to_pod;
            obs.icmp = icmp_of(key.proto, stats.icmp_type, stats.icmp_code);
            obs.first_seen = clock.to_unix(stats.first_seen_ns);
            obs.last_seen = clock.to_unix(stats.last_seen_ns);
            obs.verdict = Verdict::from_abi(stats.verdict);
            obs.reason = DenyReason::from_abi(stats.reason);
            // The table keeps no direction: a flow is judged at an endpoint
            // on the side its opener is (egress for the pod's own).
            obs.direction = CheckedDirection::of_initiator(obs.initiator);
            sweep.observations.push(obs);
        }
        // Entries gone from the table (deleted elsewhere) are forgotten too.
        self.reported = seen;
        let idle = u64::try_from(self.expiry.idle.as_nanos()).unwrap_or(u64::MAX);
        self.adopted
            .retain(|_, adopted_ns| now_ns.saturating_sub(*adopted_ns) < idle);
        sweep
    }
}

const IPPROTO_TCP: u8 = 6;

fn icmp_of(proto: u8, icmp_type: u8, code: u8) -> Option<(u8, u8)> {
    matches!(
        Protocol::from_number(proto),
        Some(Protocol::Icmp | Protocol::IcmpV6)
    )
    .then_some((icmp_type, code))
}

/// The identity part of an observation, or `None` for a key that does not
/// decode (unknown family or protocol).
fn base_observation(key: &FlowKey, initiator: u8, flags: u8) -> Option<Observation> {
    let protocol = Protocol::from_number(key.proto)?;
    let (local, remote) = addresses(key)?;
    let initiator = match initiator {
        abi::INITIATOR_LOCAL => Initiator::Local,
        abi::INITIATOR_REMOTE => Initiator::Remote,
        _ => Initiator::Unknown,
    };
    Some(Observation {
        ifindex: key.ifindex,
        protocol,
        local: SocketAddr::new(local, key.local_port),
        remote: SocketAddr::new(remote, key.remote_port),
        initiator,
        initiator_guessed: flags & abi::FLOW_F_INITIATOR_GUESSED != 0,
        new_flow: false,
        connections: 0,
        closed: false,
        packets_from_pod: 0,
        bytes_from_pod: 0,
        packets_to_pod: 0,
        bytes_to_pod: 0,
        tcp_flags_from_pod: 0,
        tcp_flags_to_pod: 0,
        icmp: None,
        first_seen: 0,
        last_seen: 0,
        kernel_time: 0,
        verdict: Verdict::Forwarded,
        reason: DenyReason::None,
        direction: None,
        policies: Vec::new(),
        folded: None,
    })
}

/// The table key of an entry, as the datapath writes it.
fn flow_key(entry: &EntryKey) -> Option<FlowKey> {
    let (family, local_addr, remote_addr) = match (entry.local.ip(), entry.remote.ip()) {
        (IpAddr::V4(l), IpAddr::V4(r)) => {
            let pad = |a: [u8; 4]| {
                let mut out = [0; 16];
                out[..4].copy_from_slice(&a);
                out
            };
            (abi::FAMILY_IPV4, pad(l.octets()), pad(r.octets()))
        }
        (IpAddr::V6(l), IpAddr::V6(r)) => (abi::FAMILY_IPV6, l.octets(), r.octets()),
        _ => return None,
    };
    Some(FlowKey {
        ifindex: entry.ifindex,
        family,
        proto: entry.protocol.number(),
        local_addr,
        remote_addr,
        local_port: entry.local.port(),
        remote_port: entry.remote.port(),
        ..FlowKey::default()
    })
}

fn addresses(key: &FlowKey) -> Option<(IpAddr, IpAddr)> {
    let decode = |bytes: &[u8; 16]| -> Option<IpAddr> {
        match key.family {
            abi::FAMILY_IPV4 => Some(IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])),
            abi::FAMILY_IPV6 => Some(IpAddr::from(*bytes)),
            _ => None,
        }
    };
    Some((decode(&key.local_addr)?, decode(&key.remote_addr)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            ifindex: 7,
            family: abi::FAMILY_IPV4,
            proto: IPPROTO_TCP,
            local_addr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            remote_addr: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            local_port: port,
            remote_port: 80,
            ..FlowKey::default()
        }
    }

    fn stats(packets: u64, last_seen_ns: u64, flags: u8) -> FlowStats {
        FlowStats {
            first_seen_ns: SEC,
            last_seen_ns,
            packets_from_pod: packets,
            bytes_from_pod: packets * 100,
            packets_to_pod: packets,
            bytes_to_pod: packets * 60,
            initiator: abi::INITIATOR_LOCAL,
            flags,
            connections: 1,
            ..FlowStats::default()
        }
    }

    fn event(k: FlowKey) -> FlowEvent {
        FlowEvent {
            version: abi::ABI_VERSION,
            kind: abi::EVENT_NEW_FLOW,
            initiator: abi::INITIATOR_LOCAL,
            timestamp_ns: SEC,
            key: k,
            connection: 1,
            ..FlowEvent::default()
        }
    }

    #[test]
    fn event_then_sweep_reports_one_new_flow_and_deltas() {
        let clock = Clock::from_readings(0, 1_000 * SEC);
        let mut t = FlowTracker::new(Expiry::default());
        let obs = t.on_event(&event(key(40000)), clock).expect("new flow");
        assert!(obs.new_flow);
        assert_eq!(obs.initiator, Initiator::Local);
        assert_eq!(obs.remote.port(), 80);
        assert_eq!(obs.first_seen, 1_001 * SEC);
        assert!(t.on_event(&event(key(40000)), clock).is_none(), "duplicate");

        let s = t.sweep([(key(40000), stats(3, 2 * SEC, 0))], 3 * SEC, clock);
        assert_eq!(s.recovered, 0);
        assert_eq!(s.observations.len(), 1);
        assert!(!s.observations[0].new_flow);
        assert_eq!(s.observations[0].packets_from_pod, 3);

        let s = t.sweep([(key(40000), stats(5, 3 * SEC, 0))], 4 * SEC, clock);
        assert_eq!(s.observations[0].packets_from_pod, 2, "delta, not total");
        assert_eq!(s.observations[0].bytes_to_pod, 120);

        let s = t.sweep([(key(40000), stats(5, 3 * SEC, 0))], 5 * SEC, clock);
        assert!(s.observations.is_empty(), "nothing changed");
    }

    #[test]
    fn sweep_recovers_flows_whose_event_was_lost() {
        let clock = Clock::from_readings(0, 0);
        let mut t = FlowTracker::new(Expiry::default());
        let entries: Vec<_> = (0..100).map(|p| (key(p), stats(1, SEC, 0))).collect();
        let s = t.sweep(entries, 2 * SEC, clock);
        assert_eq!(s.recovered, 100);
        assert_eq!(s.observations.iter().filter(|o| o.new_flow).count(), 100);
        assert_eq!(t.len(), 100);
    }

    #[test]
    fn idle_and_closing_flows_expire_with_a_final_report() {
        let clock = Clock::from_readings(0, 0);
        let expiry = Expiry {
            idle: Duration::from_secs(60),
            closing: Duration::from_secs(10),
        };
        let mut t = FlowTracker::new(expiry);
        t.sweep(
            [
                (key(1), stats(1, SEC, 0)),
                (key(2), stats(1, SEC, abi::FLOW_F_CLOSING)),
            ],
            2 * SEC,
            clock,
        );
        // 20 s later: the closing flow expires, the open one does not.
        let s = t.sweep(
            [
                (key(1), stats(1, SEC, 0)),
                (key(2), stats(2, SEC, abi::FLOW_F_CLOSING)),
            ],
            21 * SEC,
            clock,
        );
        assert_eq!(s.expired, vec![key(2)]);
        assert_eq!(s.observations.len(), 1);
        assert!(s.observations[0].closed);
        assert_eq!(s.observations[0].packets_from_pod, 1);
        assert_eq!(t.len(), 1);
        // After 61 s of idleness the open one expires too, even unchanged.
        let s = t.sweep([(key(1), stats(1, SEC, 0))], 62 * SEC, clock);
        assert_eq!(s.expired, vec![key(1)]);
        assert!(s.observations[0].closed && !s.observations[0].new_flow);
        assert!(t.is_empty());
    }

    fn reopened(packets: u64, first_seen_ns: u64, connections: u32) -> FlowStats {
        FlowStats {
            first_seen_ns,
            last_seen_ns: first_seen_ns,
            connections,
            ..stats(packets, first_seen_ns, 0)
        }
    }

    #[test]
    fn a_reused_tuple_is_a_new_connection_with_its_own_first_seen() {
        let clock = Clock::from_readings(0, 0);
        let mut t = FlowTracker::new(Expiry::default());
        let s = t.sweep([(key(1), reopened(4, SEC, 1))], 2 * SEC, clock);
        assert_eq!(s.observations[0].connections, 1);

        // Reopened once, seen by the sweep first: one new connection with
        // its own first packet, and counters as deltas of the same entry.
        let s = t.sweep([(key(1), reopened(6, 3 * SEC, 2))], 4 * SEC, clock);
        let o = &s.observations[0];
        assert!(o.new_flow);
        assert_eq!(
            (o.connections, o.first_seen, o.packets_from_pod),
            (2 - 1, 3 * SEC, 2)
        );
        assert_eq!(s.recovered, 0, "the entry was known");
        // Its announcement, drained later, is not a second one.
        let mut late = event(key(1));
        late.connection = 2;
        assert!(t.on_event(&late, clock).is_none());

        // Announced first: counted by the event, then the sweep brings the
        // counters only.
        late.connection = 3;
        late.timestamp_ns = 5 * SEC;
        let o = t.on_event(&late, clock).expect("a new connection");
        assert_eq!((o.connections, o.first_seen), (1, 5 * SEC));
        let s = t.sweep([(key(1), reopened(7, 5 * SEC, 3))], 6 * SEC, clock);
        assert_eq!(s.observations.len(), 1);
        assert!(!s.observations[0].new_flow);
        assert_eq!(s.observations[0].connections, 0);
        assert_eq!(s.observations[0].packets_from_pod, 1);

        // Reopened three times between two sweeps: three connections.
        let s = t.sweep([(key(1), reopened(9, 7 * SEC, 6))], 8 * SEC, clock);
        assert_eq!(s.observations[0].connections, 3);
    }

    #[test]
    fn an_entry_made_again_is_new_even_under_a_known_key() {
        let clock = Clock::from_readings(0, 0);
        let mut t = FlowTracker::new(Expiry::default());
        t.sweep([(key(1), reopened(5, SEC, 2))], 2 * SEC, clock);
        // Deleted (by the enforcer) and made again between two sweeps.
        let s = t.sweep([(key(1), reopened(1, 3 * SEC, 1))], 4 * SEC, clock);
        let o = &s.observations[0];
        assert!(o.new_flow);
        assert_eq!((o.connections, o.packets_from_pod), (1, 1));
    }

    #[test]
    fn an_announcement_that_never_reached_the_aggregator_is_swept_again() {
        let clock = Clock::from_readings(0, 0);
        let mut t = FlowTracker::new(Expiry::default());
        let o = t.on_event(&event(key(1)), clock).expect("new");
        t.unreport(&key(1), &o);
        let s = t.sweep([(key(1), reopened(1, SEC, 1))], 2 * SEC, clock);
        assert!(s.observations[0].new_flow);
        assert_eq!(s.observations[0].connections, 1);
    }

    #[test]
    fn a_seeded_tracker_reads_deltas_from_what_was_folded() {
        let clock = Clock::from_readings(0, 0);
        let mut first = FlowTracker::new(Expiry::default());
        let s = first.sweep([(key(1), reopened(4, SEC, 1))], 2 * SEC, clock);
        let o = &s.observations[0];
        let folded = o.folded.expect("a sweep report carries its totals");
        assert_eq!((folded.packets_from_pod, folded.connections), (4, 1));

        // A new agent on the same table: nothing is new, deltas go on.
        let mut next = FlowTracker::new(Expiry::default());
        next.seed([(o.entry(), folded)]);
        let s = next.sweep([(key(1), reopened(4, SEC, 1))], 3 * SEC, clock);
        assert!(s.observations.is_empty(), "{:?}", s.observations);
        assert_eq!(s.recovered, 0);
        assert!(next.on_event(&event(key(1)), clock).is_none());
        let s = next.sweep([(key(1), reopened(6, SEC, 1))], 4 * SEC, clock);
        assert_eq!(s.observations[0].packets_from_pod, 2);
        assert!(!s.observations[0].new_flow);

        // A seed whose entry was made again since counts it whole.
        let mut other = FlowTracker::new(Expiry::default());
        other.seed([(o.entry(), folded)]);
        let s = other.sweep([(key(1), reopened(1, 5 * SEC, 1))], 6 * SEC, clock);
        assert!(s.observations[0].new_flow);
        assert_eq!(s.observations[0].packets_from_pod, 1);
    }

    #[test]
    fn an_adopted_connection_is_not_counted_again_by_its_entry() {
        let clock = Clock::from_readings(0, 0);
        // Opened after the attach, its announcement still in the ring when
        // the socket scan adopted it: the announcement is not a second one.
        let mut t = FlowTracker::new(Expiry::default());
        assert!(t.adopt(key(1), SEC));
        assert!(t.on_event(&event(key(1)), clock).is_none());
        let s = t.sweep([(key(1), reopened(4, SEC, 1))], 2 * SEC, clock);
        let o = &s.observations[0];
        assert!(!o.new_flow);
        assert_eq!((o.connections, o.packets_from_pod), (0, 4));
        assert_eq!(s.recovered, 0);

        // Idle when adopted: sweeps without its entry keep it adopted. Then
        // a packet makes its entry: its packets count, its connection not.
        let mut t = FlowTracker::new(Expiry::default());
        assert!(t.adopt(key(2), SEC));
        let s = t.sweep([], 2 * SEC, clock);
        assert!(s.observations.is_empty());
        assert!(!t.adopt(key(2), 2 * SEC), "already adopted");
        assert!(t.on_event(&event(key(2)), clock).is_none());
        let s = t.sweep([(key(2), reopened(1, 3 * SEC, 1))], 4 * SEC, clock);
        let o = &s.observations[0];
        assert!(!o.new_flow);
        assert_eq!((o.connections, o.packets_from_pod), (0, 1));
        // A new connection on the same 5-tuple later is one.
        let s = t.sweep([(key(2), reopened(3, 5 * SEC, 2))], 6 * SEC, clock);
        assert_eq!(s.observations[0].connections, 1);

        // Idle as long as a table entry may be, an adopted connection is
        // forgotten like one: a packet after that is a new entry.
        let mut t = FlowTracker::new(Expiry::default());
        assert!(t.adopt(key(3), SEC));
        t.sweep([], 61 * SEC, clock);
        let s = t.sweep([(key(3), reopened(1, 62 * SEC, 1))], 62 * SEC, clock);
        assert_eq!(s.observations[0].connections, 1);
    }

    #[test]
    fn undecodable_keys_are_skipped() {
        let clock = Clock::from_readings(0, 0);
        let mut t = FlowTracker::new(Expiry::default());
        let mut bad = key(1);
        bad.family = 9;
        assert!(t.on_event(&event(bad), clock).is_none());
        let s = t.sweep([(bad, stats(1, SEC, 0))], 2 * SEC, clock);
        assert!(s.observations.is_empty());
    }
}
