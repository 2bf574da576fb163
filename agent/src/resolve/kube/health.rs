//! How current the kube source's view is, per watched resource.
//!
//! Each reflector reports every item of its watch stream here: an event or
//! a completed relist is a success, an error (the server refused, the
//! connection broke, an object did not decode, `410 Gone`) is counted.
//! A resource is *stale* from its first error after a success until its
//! next success: the agent keeps enforcing the view it has, and says for
//! how long that view may have missed changes.
//!
//! The relay's agent discovery reports its own watches the same way
//! ([`Health::for_resources`]).

use std::{
    collections::BTreeMap,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use serde::Serialize;

/// The resources the kube source watches, in reporting order.
pub const RESOURCES: [&str; 6] = [
    "pods",
    "namespaces",
    "services",
    "endpointslices",
    "networkpolicies",
    "nodes",
];

/// The state of one resource's watch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ResourceHealth {
    /// The first list arrived.
    pub ready: bool,
    /// Seconds since the view last matched the server, while the watch
    /// fails; 0 while it is healthy.
    pub stale_seconds: u64,
    /// Errors since the agent started.
    pub errors: u64,
    /// The last error, while the watch fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The state of every watch, as `/healthz` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SourceHealth {
    /// The source (`kube`).
    pub source: &'static str,
    /// The worst staleness of all resources, in seconds.
    pub stale_seconds: u64,
    /// By resource.
    pub resources: BTreeMap<&'static str, ResourceHealth>,
}

#[derive(Debug, Default)]
struct Watch {
    ready: AtomicBool,
    failing: AtomicBool,
    /// Unix seconds of the last success (or of the start).
    last_ok: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// Shared between the reflector tasks (writers) and the source (reader).
#[derive(Debug)]
pub struct Health {
    resources: &'static [&'static str],
    watches: Box<[Watch]>,
}

impl Health {
    /// The kube source's [`RESOURCES`], none ready, as of `now` (Unix
    /// seconds).
    #[must_use]
    pub fn new(now: u64) -> Self {
        Self::for_resources(&RESOURCES, now)
    }

    /// These resources (at least one), none ready, as of `now` (Unix
    /// seconds).
    #[must_use]
    pub fn for_resources(resources: &'static [&'static str], now: u64) -> Self {
        let watches: Box<[Watch]> = resources.iter().map(|_| Watch::default()).collect();
        for watch in &watches {
            watch.last_ok.store(now, Ordering::Relaxed);
        }
        Self { resources, watches }
    }

    fn watch(&self, resource: &str) -> &Watch {
        let index = self
            .resources
            .iter()
            .position(|r| *r == resource)
            .unwrap_or_default();
        &self.watches[index]
    }

    /// An event or a relist arrived.
    pub fn ok(&self, resource: &str, now: u64) {
        let watch = self.watch(resource);
        watch.last_ok.store(now, Ordering::Relaxed);
        watch.failing.store(false, Ordering::Relaxed);
    }

    /// The first list (or a relist) completed.
    pub fn listed(&self, resource: &str, now: u64) {
        self.ok(resource, now);
        self.watch(resource).ready.store(true, Ordering::Relaxed);
    }

    /// The watch failed; kube-runtime retries with backoff.
    pub fn error(&self, resource: &str, error: String) {
        let watch = self.watch(resource);
        watch.failing.store(true, Ordering::Relaxed);
        watch.errors.fetch_add(1, Ordering::Relaxed);
        *watch
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error);
    }

    /// Whether every resource has been listed once.
    #[must_use]
    pub fn ready(&self) -> bool {
        self.watches.iter().all(|w| w.ready.load(Ordering::Relaxed))
    }

    /// The resources not listed yet.
    #[must_use]
    pub fn waiting_for(&self) -> Vec<&'static str> {
        self.resources
            .iter()
            .zip(&self.watches)
            .filter(|(_, w)| !w.ready.load(Ordering::Relaxed))
            .map(|(r, _)| *r)
            .collect()
    }

    /// A report as of `now` (Unix seconds).
    #[must_use]
    pub fn report(&self, now: u64) -> SourceHealth {
        let resources: BTreeMap<&'static str, ResourceHealth> = self
            .resources
            .iter()
            .zip(&self.watches)
            .map(|(resource, w)| {
                let failing = w.failing.load(Ordering::Relaxed);
                let report = ResourceHealth {
                    ready: w.ready.load(Ordering::Relaxed),
                    stale_seconds: if failing {
                        now.saturating_sub(w.last_ok.load(Ordering::Relaxed))
                    } else {
                        0
                    },
                    errors: w.errors.load(Ordering::Relaxed),
                    last_error: if failing {
                        w.last_error
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .clone()
                    } else {
                        None
                    },
                };
                (*resource, report)
            })
            .collect();
        SourceHealth {
            source: "kube",
            stale_seconds: resources
                .values()
                .map(|r| r.stale_seconds)
                .max()
                .unwrap_or(0),
            resources,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_from_the_last_success_while_failing() {
        let health = Health::new(100);
        assert!(!health.ready());
        for r in RESOURCES {
            health.listed(r, 100);
        }
        assert!(health.ready());
        health.ok("pods", 110);
        health.error("pods", "connection refused".into());
        health.error("pods", "connection refused".into());
        let report = health.report(125);
        assert_eq!(report.resources["pods"].stale_seconds, 15);
        assert_eq!(report.resources["pods"].errors, 2);
        assert_eq!(report.stale_seconds, 15);
        assert_eq!(report.resources["nodes"].stale_seconds, 0);
        health.listed("pods", 130);
        let report = health.report(140);
        assert_eq!(report.stale_seconds, 0);
        assert_eq!(report.resources["pods"].last_error, None);
        assert_eq!(report.resources["pods"].errors, 2);
    }
}
