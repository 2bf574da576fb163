//! Who held which IP, and when.
//!
//! Pod IPs are reused: a Job's completed pod gives its address back, a
//! deleted pod's address goes to the next pod scheduled on the node. A flow
//! must be attributed to the pod that held the address when the flow was
//! seen, never to its successor. The [`IpLedger`] records, per address, the
//! holders in order as intervals `[from, until)` (Unix nanoseconds); the
//! [`Resolver`](super::Resolver) indexes them for lookups at a time.
//!
//! Boundaries come from what the API tells:
//! - a holder starts at its `PodReadyToStartContainers` condition (the pod
//!   sandbox and its network exist from then), else when it was first seen;
//! - it stops when it completes (Succeeded, Failed), is deleted, or its
//!   address changes, as seen by the agent; a successor that started
//!   earlier (the watch lags) cuts it short at the successor's start, so
//!   intervals never overlap and the newest holder always wins.
//!
//! Ended holders are kept for a retention period, long enough for the
//! flows they had to be reported (kernel idle timeouts are seconds to a
//! minute), then forgotten.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
    time::Duration,
};

use weir_generator::model::PodMeta;

/// One pod's hold on one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The address.
    pub ip: IpAddr,
    /// The pod.
    pub pod: Arc<PodMeta>,
    /// Since when, Unix ns (0: since before the source watched).
    pub from: u64,
    /// Until when, Unix ns, exclusive; `None` while it holds the address.
    pub until: Option<u64>,
}

/// How long ended holders are remembered by default.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(600);

#[derive(Clone, Debug)]
struct Hold {
    uid: String,
    pod: Arc<PodMeta>,
    from: u64,
    until: Option<u64>,
    /// When the agent learned the hold ended (retention counts from then:
    /// `until` may lie far back when the news came late).
    ended_at: Option<u64>,
}

/// The holders of every address, oldest first.
#[derive(Debug)]
pub struct IpLedger {
    by_ip: HashMap<IpAddr, Vec<Hold>>,
    retention_ns: u64,
}

impl Default for IpLedger {
    fn default() -> Self {
        Self::new(DEFAULT_RETENTION)
    }
}

impl IpLedger {
    /// A ledger forgetting ended holders `retention` after they ended.
    #[must_use]
    pub fn new(retention: Duration) -> Self {
        Self {
            by_ip: HashMap::new(),
            retention_ns: u64::try_from(retention.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// Pod `uid` (described by `pod`, whose `ips` it holds) is running: it
    /// holds its addresses since `from` (kept from its first record), and
    /// no longer holds addresses it had before.
    pub fn hold(&mut self, uid: &str, pod: &Arc<PodMeta>, from: u64, now: u64) {
        for ip in &pod.ips {
            let holds = self.by_ip.entry(*ip).or_default();
            match holds.last_mut() {
                Some(last) if last.uid == uid => {
                    // The same pod again (labels may have changed).
                    last.pod = Arc::clone(pod);
                    continue;
                }
                _ => {}
            }
            // A pod seen again after it was cut short by a successor is
            // not the holder any more: the newest holder wins.
            if holds.iter().any(|h| h.uid == uid) {
                continue;
            }
            let from = match holds.last() {
                // Never before the previous holder began.
                Some(previous) => from.max(previous.from.saturating_add(1)),
                None => from,
            };
            if let Some(previous) = holds.last_mut() {
                previous.until = Some(previous.until.map_or(from, |until| until.min(from)));
                previous.ended_at.get_or_insert(now);
            }
            holds.push(Hold {
                uid: uid.to_owned(),
                pod: Arc::clone(pod),
                from,
                until: None,
                ended_at: None,
            });
        }
        let held: HashSet<IpAddr> = pod.ips.iter().copied().collect();
        self.release_where(uid, now, |ip| !held.contains(ip));
    }

    /// Pod `uid` completed or was deleted, as seen at `now`.
    pub fn release(&mut self, uid: &str, now: u64) {
        self.release_where(uid, now, |_| true);
    }

    /// After a relist: every holder not in `present` is gone (deleted while
    /// the watch was down).
    pub fn release_absent(&mut self, present: &HashSet<String>, now: u64) {
        let gone: HashSet<String> = self
            .by_ip
            .values()
            .filter_map(|holds| holds.last())
            .filter(|h| h.until.is_none() && !present.contains(&h.uid))
            .map(|h| h.uid.clone())
            .collect();
        for uid in gone {
            self.release(&uid, now);
        }
    }

    fn release_where(&mut self, uid: &str, now: u64, which: impl Fn(&IpAddr) -> bool) {
        for (ip, holds) in &mut self.by_ip {
            if !which(ip) {
                continue;
            }
            if let Some(hold) = holds.iter_mut().find(|h| h.uid == uid && h.until.is_none()) {
                hold.until = Some(now.max(hold.from.saturating_add(1)));
                hold.ended_at = Some(now);
            }
        }
    }

    /// Forget holders whose end the agent learned more than the retention
    /// before `now`.
    pub fn prune(&mut self, now: u64) {
        let horizon = now.saturating_sub(self.retention_ns);
        self.by_ip.retain(|_, holds| {
            holds.retain(|h| h.ended_at.is_none_or(|ended| ended > horizon));
            !holds.is_empty()
        });
    }

    /// Every remembered hold, by address then time.
    #[must_use]
    pub fn leases(&self) -> Vec<Lease> {
        let mut leases: Vec<Lease> = self
            .by_ip
            .iter()
            .flat_map(|(ip, holds)| {
                holds.iter().map(|h| Lease {
                    ip: *ip,
                    pod: Arc::clone(&h.pod),
                    from: h.from,
                    until: h.until,
                })
            })
            .collect();
        leases.sort_by_key(|l| (l.ip, l.from));
        leases
    }
}

/// `(from, until, pod)` of one hold.
pub(super) type Span = (u64, Option<u64>, Arc<PodMeta>);

/// One address's holders, indexed for lookups at a time.
#[derive(Clone, Debug, Default)]
pub(super) struct Timeline {
    /// `(from, until, pod)`, oldest first, not overlapping. The first
    /// holder reaches back to the beginning of time: before it, no other
    /// holder is known, and clocks of different nodes differ a little.
    spans: Box<[Span]>,
}

impl Timeline {
    pub(super) fn new(mut spans: Vec<Span>) -> Self {
        spans.sort_by_key(|s| s.0);
        if let Some(first) = spans.first_mut() {
            first.0 = 0;
        }
        Self {
            spans: spans.into_boxed_slice(),
        }
    }

    /// The pod that held the address at `at` (Unix ns).
    pub(super) fn at(&self, at: u64) -> Option<&Arc<PodMeta>> {
        let after = self.spans.partition_point(|s| s.0 <= at);
        let (_, until, pod) = self.spans.get(after.checked_sub(1)?)?;
        until.is_none_or(|until| at < until).then_some(pod)
    }

    /// The pod holding the address now.
    pub(super) fn current(&self) -> Option<&Arc<PodMeta>> {
        self.spans
            .last()
            .filter(|(_, until, _)| until.is_none())
            .map(|(_, _, pod)| pod)
    }

    /// Whether it says more than "this pod, always".
    pub(super) fn has_history(&self) -> bool {
        self.spans.len() > 1 || self.spans.iter().any(|s| s.1.is_some())
    }
}

#[cfg(test)]
mod tests {
    use weir_generator::model::{WorkloadKind, WorkloadRef};

    use super::*;

    const S: u64 = 1_000_000_000;

    fn pod(name: &str, ip: &str) -> Arc<PodMeta> {
        Arc::new(PodMeta {
            namespace: "ns".into(),
            name: name.into(),
            labels: Default::default(),
            workload: WorkloadRef::new("ns", WorkloadKind::Pod, name),
            ips: vec![ip.parse().unwrap()],
        })
    }

    fn timeline(ledger: &IpLedger, ip: &str) -> Timeline {
        let ip: IpAddr = ip.parse().unwrap();
        Timeline::new(
            ledger
                .leases()
                .into_iter()
                .filter(|l| l.ip == ip)
                .map(|l| (l.from, l.until, l.pod))
                .collect(),
        )
    }

    fn name(pod: Option<&Arc<PodMeta>>) -> Option<&str> {
        pod.map(|p| p.name.as_str())
    }

    #[test]
    fn a_successor_never_inherits_the_flows_of_its_predecessor() {
        let mut ledger = IpLedger::default();
        let a = pod("a", "10.181.0.5");
        let b = pod("b", "10.181.0.5");
        ledger.hold("uid-a", &a, 100 * S, 100 * S);
        ledger.release("uid-a", 200 * S);
        ledger.hold("uid-b", &b, 210 * S, 211 * S);
        let t = timeline(&ledger, "10.181.0.5");
        assert_eq!(name(t.at(50 * S)), Some("a"), "before a: only a is known");
        assert_eq!(name(t.at(150 * S)), Some("a"));
        assert_eq!(name(t.at(205 * S)), None, "free between a and b");
        assert_eq!(name(t.at(210 * S)), Some("b"));
        assert_eq!(name(t.current()), Some("b"));
    }

    #[test]
    fn a_late_release_is_cut_at_the_successors_start() {
        let mut ledger = IpLedger::default();
        let a = pod("a", "10.181.0.6");
        let b = pod("b", "10.181.0.6");
        ledger.hold("uid-a", &a, 100 * S, 100 * S);
        // b is seen holding the address before a's deletion arrives.
        ledger.hold("uid-b", &b, 150 * S, 160 * S);
        ledger.release("uid-a", 170 * S);
        let t = timeline(&ledger, "10.181.0.6");
        assert_eq!(name(t.at(149 * S)), Some("a"));
        assert_eq!(name(t.at(155 * S)), Some("b"));
        assert_eq!(name(t.at(175 * S)), Some("b"));
        // A stale update of a afterwards does not take the address back.
        ledger.hold("uid-a", &a, 100 * S, 180 * S);
        assert_eq!(name(timeline(&ledger, "10.181.0.6").current()), Some("b"));
    }

    #[test]
    fn relist_releases_the_absent_and_prune_forgets_the_old() {
        let mut ledger = IpLedger::new(Duration::from_secs(60));
        ledger.hold("uid-a", &pod("a", "10.181.0.7"), 0, 10 * S);
        ledger.hold("uid-c", &pod("c", "10.181.0.8"), 0, 10 * S);
        ledger.release_absent(&HashSet::from(["uid-c".to_owned()]), 20 * S);
        let t = timeline(&ledger, "10.181.0.7");
        assert_eq!(name(t.current()), None);
        assert_eq!(name(t.at(19 * S)), Some("a"));
        ledger.prune(79 * S);
        assert_eq!(ledger.leases().len(), 2);
        ledger.prune(81 * S);
        assert_eq!(ledger.leases().len(), 1, "a ended more than 60 s ago");
    }

    #[test]
    fn an_address_change_ends_the_old_hold() {
        let mut ledger = IpLedger::default();
        ledger.hold("uid-a", &pod("a", "10.181.0.9"), 5 * S, 5 * S);
        ledger.hold("uid-a", &pod("a", "10.181.0.10"), 5 * S, 30 * S);
        assert_eq!(name(timeline(&ledger, "10.181.0.9").current()), None);
        assert_eq!(name(timeline(&ledger, "10.181.0.9").at(20 * S)), Some("a"));
        assert_eq!(name(timeline(&ledger, "10.181.0.10").current()), Some("a"));
    }
}
