//! Reading the agents: one task per agent discovery lists.
//!
//! Each task reads the agent's contribution with `If-None-Match` (a `304`
//! says nothing changed) when the agent's `/api/events` says its graph
//! changed, else every `--sync-interval` with jitter. At most
//! `--concurrency` reads run at once; a failed read is retried with
//! exponential backoff and jitter, the node's last contribution kept and
//! marked stale meanwhile. How a read is made is [`Fetch`]: HTTPS to the
//! agents in the relay, in-process agents in tests and benchmarks.

use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};

use tokio::{
    sync::{Notify, Semaphore, watch},
    task::JoinHandle,
};

use super::{
    discovery::{AgentEndpoint, AgentSet},
    hub::{Fetched, Hub},
};
use crate::graph_store::unix_now;

/// How the relay reads an agent.
pub trait Fetch: Send + Sync + 'static {
    /// The agent's contribution, or [`Fetched::NotModified`] when `etag`
    /// is still current.
    fn contribution(
        &self,
        agent: &AgentEndpoint,
        etag: Option<&str>,
    ) -> impl Future<Output = Result<Fetched, String>> + Send;

    /// Follow the agent's events, calling `changed` on each `graph` event,
    /// until the stream ends or fails.
    fn watch(
        &self,
        agent: &AgentEndpoint,
        changed: Arc<Notify>,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// How often and how many at once.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    /// Read each agent at least this often (with jitter).
    pub interval: Duration,
    /// At most this many reads at once.
    pub concurrency: usize,
    /// The first retry after a failure; doubles up to `interval`.
    pub backoff: Duration,
    /// A read taking longer fails.
    pub timeout: Duration,
    /// Forget a deleted node's contribution after this long.
    pub retention: Duration,
}

impl Pace {
    /// `interval`, `concurrency` and `retention` as given; retries from 1 s,
    /// reads time out after 10 s.
    #[must_use]
    pub fn new(interval: Duration, concurrency: usize, retention: Duration) -> Self {
        Self {
            interval,
            concurrency: concurrency.max(1),
            backoff: Duration::from_secs(1).min(interval),
            timeout: Duration::from_secs(10),
            retention,
        }
    }
}

/// `d` scaled by a random factor in [0.75, 1.25): agents read at once
/// drift apart.
#[must_use]
pub fn jitter(d: Duration) -> Duration {
    let mut byte = [0_u8; 1];
    let r = getrandom::fill(&mut byte).map_or(128, |()| byte[0]);
    d.mul_f64(0.75 + f64::from(r) / 512.0)
}

/// The wait before retry number `failures` (1 for the first).
#[must_use]
pub fn backoff(pace: &Pace, failures: u32) -> Duration {
    let doubled = pace
        .backoff
        .saturating_mul(1_u32 << failures.saturating_sub(1).min(16));
    jitter(doubled.min(pace.interval.max(pace.backoff)))
}

/// A task that ends when dropped.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Read every agent discovery lists, for as long as the future runs.
pub async fn run<F: Fetch>(
    hub: Arc<Hub>,
    fetch: Arc<F>,
    mut agents: watch::Receiver<AgentSet>,
    pace: Pace,
) {
    let permits = Arc::new(Semaphore::new(pace.concurrency));
    let mut tasks: BTreeMap<String, (AgentEndpoint, Task)> = BTreeMap::new();
    let mut discovery_open = true;
    loop {
        let set = agents.borrow_and_update().clone();
        hub.discovered(&set, unix_now());
        tasks.retain(|node, (agent, _)| set.agents.get(node) == Some(agent));
        for (node, agent) in &set.agents {
            if !tasks.contains_key(node) {
                let task = tokio::spawn(follow(
                    Arc::clone(&hub),
                    Arc::clone(&fetch),
                    agent.clone(),
                    Arc::clone(&permits),
                    pace,
                ));
                tasks.insert(node.clone(), (agent.clone(), Task(task)));
            }
        }
        let prune = tokio::time::sleep(pace.retention.min(Duration::from_secs(60)));
        tokio::select! {
            changed = agents.changed(), if discovery_open => {
                // A static list's sender is gone: its agents never change.
                discovery_open = changed.is_ok();
            }
            () = prune => hub.prune(unix_now(), pace.retention),
        }
    }
}

/// Read one agent, for as long as the future runs.
async fn follow<F: Fetch>(
    hub: Arc<Hub>,
    fetch: Arc<F>,
    agent: AgentEndpoint,
    permits: Arc<Semaphore>,
    pace: Pace,
) {
    let changed = Arc::new(Notify::new());
    let _watch = Task(tokio::spawn(watch_events(
        Arc::clone(&fetch),
        agent.clone(),
        Arc::clone(&changed),
        pace,
    )));
    let mut failures = 0_u32;
    loop {
        let etag = hub
            .held()
            .get(&agent.node)
            .and_then(|h| h.contribution.is_some().then(|| h.etag.clone()).flatten());
        let result = {
            let Ok(_permit) = permits.acquire().await else {
                return;
            };
            match tokio::time::timeout(pace.timeout, fetch.contribution(&agent, etag.as_deref()))
                .await
            {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {:?}", pace.timeout)),
            }
        };
        let result = result.and_then(|fetched| hub.answered(&agent.node, fetched, unix_now()));
        let wait = match result {
            Ok(()) => {
                failures = 0;
                jitter(pace.interval)
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                hub.failed(&agent.node, error, unix_now());
                backoff(&pace, failures)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = changed.notified() => {}
        }
    }
}

/// Follow the agent's events, again after a pause whenever they end.
///
/// A stream that ends (the agent stopped, its node went away) asks for a
/// read at once: a dead agent is then marked stale within a read's timeout,
/// not at the next periodic read.
async fn watch_events<F: Fetch>(
    fetch: Arc<F>,
    agent: AgentEndpoint,
    changed: Arc<Notify>,
    pace: Pace,
) {
    let mut failures = 0_u32;
    loop {
        match fetch.watch(&agent, Arc::clone(&changed)).await {
            Ok(()) => failures = 1,
            Err(_) => failures = failures.saturating_add(1),
        }
        changed.notify_one();
        tokio::time::sleep(backoff(&pace, failures)).await;
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod pace_tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_interval_with_jitter() {
        let pace = Pace::new(Duration::from_secs(30), 8, Duration::from_secs(3600));
        for (failures, base) in [(1, 1), (2, 2), (3, 4), (5, 16), (6, 30), (40, 30)] {
            let wait = backoff(&pace, failures);
            let base = Duration::from_secs(base);
            assert!(
                wait >= base.mul_f64(0.75) && wait < base.mul_f64(1.25),
                "{failures}: {wait:?}"
            );
        }
    }
}
