//! Per pod, which names an address had and when: the answers a pod
//! received, kept as intervals `[answered, answered + max(TTL, minimum
//! window)]`, so a flow is given the names that were valid for its pod
//! when it began (a later re-pointing does not rename an older flow, and
//! an answer the pod cached a little past its TTL still counts).
//! Queries answered NXDOMAIN are kept per pod too.
//!
//! Bounded: at most [`NamesOptions::max_bindings`] bindings and as many
//! NXDOMAIN names; what does not fit is counted, never silent. Bindings
//! whose interval ended more than [`NamesOptions::retain_ns`] ago are
//! forgotten.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
};

use super::parse::{Answer, Rcode};

/// Limits of a [`Names`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamesOptions {
    /// The shortest time an answer counts for, whatever its TTL
    /// (resolvers and applications cache past short TTLs).
    pub min_window_ns: u64,
    /// How long an ended binding is kept for flows reported late (a sweep
    /// finds a flow whose event was lost).
    pub retain_ns: u64,
    /// Most bindings (pod, address, name) held at once.
    pub max_bindings: usize,
}

impl Default for NamesOptions {
    /// A 60 s minimum window, bindings kept 10 min after they end, 100,000
    /// bindings.
    fn default() -> Self {
        Self {
            min_window_ns: 60 * NANOS,
            retain_ns: 600 * NANOS,
            max_bindings: 100_000,
        }
    }
}

const NANOS: u64 = 1_000_000_000;

#[derive(Clone, Debug)]
struct Binding {
    name: Arc<str>,
    from: u64,
    until: u64,
}

/// A name a pod asked for that did not exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NxDomain {
    /// The pod's address.
    pub pod: IpAddr,
    /// The name.
    pub name: Arc<str>,
    /// Answers seen.
    pub count: u64,
    /// The last one, Unix ns.
    pub last: u64,
}

#[derive(Debug, Default)]
struct Inner {
    /// pod address -> peer address -> bindings.
    bindings: HashMap<IpAddr, HashMap<IpAddr, Vec<Binding>>>,
    held: usize,
    nxdomain: HashMap<(IpAddr, Arc<str>), (u64, u64)>,
    inserted: u64,
    /// Bindings not kept because the map was full.
    dropped: u64,
    answers: u64,
}

/// The per-pod name map; share it as `Arc<Names>`.
#[derive(Debug, Default)]
pub struct Names {
    options: NamesOptions,
    inner: Mutex<Inner>,
}

/// Counts for metrics and status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NamesStats {
    /// Answers recorded.
    pub answers: u64,
    /// Bindings held now.
    pub bindings: usize,
    /// Bindings (and NXDOMAIN names) not kept: the map was full.
    pub dropped: u64,
}

impl Names {
    /// An empty map with these limits.
    #[must_use]
    pub fn new(options: NamesOptions) -> Self {
        Self {
            options,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Plain data: a panic elsewhere leaves it consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Record an answer `pod` received at `at` (Unix ns).
    pub fn record(&self, pod: IpAddr, answer: &Answer, at: u64) {
        let opts = self.options;
        let mut inner = self.lock();
        inner.answers += 1;
        if answer.rcode == Rcode::NxDomain {
            let full = inner.nxdomain.len() >= opts.max_bindings;
            let key = (pod, Arc::from(answer.query.as_str()));
            match inner.nxdomain.get_mut(&key) {
                Some((count, last)) => {
                    *count += 1;
                    *last = (*last).max(at);
                }
                None if full => inner.dropped += 1,
                None => {
                    inner.nxdomain.insert(key, (1, at));
                }
            }
            return;
        }
        let name: Arc<str> = Arc::from(answer.query.as_str());
        for &(ip, ttl) in &answer.addresses {
            let until = at + (u64::from(ttl) * NANOS).max(opts.min_window_ns);
            let full = inner.held >= opts.max_bindings;
            let list = inner
                .bindings
                .entry(pod)
                .or_default()
                .entry(ip)
                .or_default();
            // The same name again while its interval lasts: extend it.
            if let Some(b) = list
                .iter_mut()
                .rev()
                .find(|b| *b.name == *name && b.from <= at && at <= b.until)
            {
                b.until = b.until.max(until);
                continue;
            }
            if full {
                inner.dropped += 1;
                continue;
            }
            list.push(Binding {
                name: Arc::clone(&name),
                from: at,
                until,
            });
            inner.held += 1;
        }
        inner.inserted += 1;
        if inner.inserted.is_multiple_of(1024) {
            Self::forget(&mut inner, at.saturating_sub(opts.retain_ns));
        }
    }

    /// Drop bindings that ended before `horizon`.
    fn forget(inner: &mut Inner, horizon: u64) {
        let mut held = 0;
        inner.bindings.retain(|_, peers| {
            peers.retain(|_, list| {
                list.retain(|b| b.until >= horizon);
                held += list.len();
                !list.is_empty()
            });
            !peers.is_empty()
        });
        inner.held = held;
        inner.nxdomain.retain(|_, (_, last)| *last >= horizon);
    }

    /// The names `peer` had for `pod` at `at` (Unix ns), sorted.
    #[must_use]
    pub fn names_at(&self, pod: IpAddr, peer: IpAddr, at: u64) -> Vec<Arc<str>> {
        let inner = self.lock();
        let mut out: Vec<Arc<str>> = inner
            .bindings
            .get(&pod)
            .and_then(|peers| peers.get(&peer))
            .into_iter()
            .flatten()
            .filter(|b| b.from <= at && at <= b.until)
            .map(|b| Arc::clone(&b.name))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The NXDOMAIN answers pods got, by pod and name.
    #[must_use]
    pub fn nxdomains(&self) -> Vec<NxDomain> {
        let inner = self.lock();
        let mut out: Vec<NxDomain> = inner
            .nxdomain
            .iter()
            .map(|((pod, name), (count, last))| NxDomain {
                pod: *pod,
                name: Arc::clone(name),
                count: *count,
                last: *last,
            })
            .collect();
        out.sort_by(|a, b| (a.pod, &a.name).cmp(&(b.pod, &b.name)));
        out
    }

    /// Counts.
    #[must_use]
    pub fn stats(&self) -> NamesStats {
        let inner = self.lock();
        NamesStats {
            answers: inner.answers,
            bindings: inner.held,
            dropped: inner.dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const OTHER_POD: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));
    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 10));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 11));
    const S: u64 = NANOS;

    fn answer(name: &str, ips: &[(IpAddr, u32)]) -> Answer {
        Answer {
            query: name.into(),
            rcode: Rcode::NoError,
            cnames: Vec::new(),
            addresses: ips.to_vec(),
        }
    }

    fn names(n: &Names, pod: IpAddr, peer: IpAddr, at: u64) -> Vec<String> {
        n.names_at(pod, peer, at)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn an_answer_names_its_addresses_for_that_pod_only_while_it_lasts() {
        let n = Names::new(NamesOptions::default());
        n.record(POD, &answer("api.payments.example", &[(A, 300)]), 1000 * S);
        assert_eq!(names(&n, POD, A, 1001 * S), ["api.payments.example"]);
        assert!(names(&n, OTHER_POD, A, 1001 * S).is_empty(), "per pod");
        assert!(
            names(&n, POD, A, 999 * S).is_empty(),
            "not before the answer"
        );
        assert!(names(&n, POD, A, 1301 * S).is_empty(), "not after the TTL");
    }

    #[test]
    fn short_ttls_count_for_the_minimum_window() {
        let n = Names::new(NamesOptions::default());
        n.record(POD, &answer("api.payments.example", &[(A, 1)]), 1000 * S);
        assert_eq!(names(&n, POD, A, 1059 * S), ["api.payments.example"]);
        assert!(names(&n, POD, A, 1061 * S).is_empty());
    }

    /// A re-pointed name: the old address keeps its name for flows of its
    /// time, the new address has it from the new answer on.
    #[test]
    fn a_repointed_name_is_versioned_in_time() {
        let n = Names::new(NamesOptions::default());
        n.record(POD, &answer("api.payments.example", &[(A, 30)]), 1000 * S);
        n.record(POD, &answer("api.payments.example", &[(B, 30)]), 2000 * S);
        assert_eq!(names(&n, POD, A, 1010 * S), ["api.payments.example"]);
        assert!(names(&n, POD, B, 1010 * S).is_empty());
        assert_eq!(names(&n, POD, B, 2010 * S), ["api.payments.example"]);
        assert!(names(&n, POD, A, 2010 * S).is_empty());
        // two names for one address (a shared CDN edge)
        n.record(POD, &answer("cdn.example", &[(B, 30)]), 2001 * S);
        assert_eq!(
            names(&n, POD, B, 2010 * S),
            ["api.payments.example", "cdn.example"]
        );
    }

    #[test]
    fn nxdomain_is_recorded_and_the_map_is_bounded_with_losses_counted() {
        let n = Names::new(NamesOptions {
            max_bindings: 2,
            ..NamesOptions::default()
        });
        let mut nx = answer("nope.example", &[]);
        nx.rcode = Rcode::NxDomain;
        n.record(POD, &nx, 5 * S);
        n.record(POD, &nx, 6 * S);
        assert_eq!(
            n.nxdomains(),
            [NxDomain {
                pod: POD,
                name: "nope.example".into(),
                count: 2,
                last: 6 * S
            }]
        );
        n.record(POD, &answer("a.example", &[(A, 30), (B, 30)]), 10 * S);
        n.record(OTHER_POD, &answer("a.example", &[(A, 30)]), 10 * S);
        let stats = n.stats();
        assert_eq!((stats.bindings, stats.dropped, stats.answers), (2, 1, 4));
        assert!(names(&n, OTHER_POD, A, 11 * S).is_empty());
    }
}
