//! What the relay holds of each node, and the merged view made of it.
//!
//! The sync tasks report each agent's answers here; the hub keeps the last
//! contribution of every node (checkpointed), its sync state, and remakes
//! the merged view (the aggregator and the cluster the API serves) when a
//! contribution changes.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use super::{
    checkpoint::{Checkpoint, CheckpointError},
    coverage,
    discovery::AgentSet,
    merge,
};
use crate::{
    aggregator::Aggregator,
    api::{
        SharedResolver,
        wire::{CONTRIBUTION_FORMAT, ContributionJson, CoverageJson},
    },
    error_chain::chain,
    resolve::Resolver,
};

/// What the relay holds of one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// Its last contribution, kept while the agent is unreachable and for
    /// the retention once the node is gone.
    pub contribution: Option<Arc<ContributionJson>>,
    /// The `ETag` of that answer, sent back as `If-None-Match`.
    pub etag: Option<String>,
    /// When the agent last answered (Unix ns).
    pub last_sync: Option<u64>,
    /// Since when the agent does not answer (Unix ns); `None` while it does.
    pub stale_since: Option<u64>,
    /// Since when discovery no longer lists the node (Unix ns).
    pub deleted_since: Option<u64>,
    /// Why the last read failed.
    pub error: Option<String>,
}

/// What an agent answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetched {
    /// `304 Not Modified`: what the relay holds is current.
    NotModified,
    /// A contribution, with its `ETag`.
    Changed {
        /// The answer's `ETag`.
        etag: Option<String>,
        /// The contribution.
        contribution: Box<ContributionJson>,
    },
}

/// The relay's state: every node's contribution and the merged view.
#[derive(Debug)]
pub struct Hub {
    held: Mutex<BTreeMap<String, Held>>,
    agents: watch::Receiver<AgentSet>,
    checkpoint: Option<Checkpoint>,
    dirty: Notify,
    aggregator: Arc<Aggregator>,
    resolver: SharedResolver,
    unknown_sides: AtomicUsize,
    merges: AtomicU64,
    /// Nodes whose new contribution is not checkpointed yet: a busy
    /// agent's contribution changes with every read, written at most once
    /// per [`Hub::run_checkpointer`] period.
    unsaved: Mutex<BTreeSet<String>>,
}

impl Hub {
    /// A hub serving the merged view through `aggregator` and `resolver`,
    /// starting from what `checkpoint` held.
    #[must_use]
    pub fn new(
        agents: watch::Receiver<AgentSet>,
        checkpoint: Option<(Checkpoint, BTreeMap<String, Held>)>,
        aggregator: Arc<Aggregator>,
    ) -> Arc<Self> {
        let (checkpoint, held) = match checkpoint {
            Some((c, held)) => (Some(c), held),
            None => (None, BTreeMap::new()),
        };
        let hub = Arc::new(Self {
            held: Mutex::new(held),
            agents,
            checkpoint,
            dirty: Notify::new(),
            aggregator,
            resolver: Arc::new(RwLock::new(Arc::new(Resolver::default()))),
            unknown_sides: AtomicUsize::new(0),
            merges: AtomicU64::new(0),
            unsaved: Mutex::new(BTreeSet::new()),
        });
        hub.remerge();
        hub
    }

    /// The merged graph and drops.
    #[must_use]
    pub fn aggregator(&self) -> &Arc<Aggregator> {
        &self.aggregator
    }

    /// The cluster of the merged view, for the API.
    #[must_use]
    pub fn resolver(&self) -> SharedResolver {
        Arc::clone(&self.resolver)
    }

    /// The agents discovery knows now.
    #[must_use]
    pub fn agents(&self) -> AgentSet {
        self.agents.borrow().clone()
    }

    /// A copy of what the relay holds of every node.
    #[must_use]
    pub fn held(&self) -> BTreeMap<String, Held> {
        self.lock().clone()
    }

    /// How much of the cluster the merged view covers now.
    #[must_use]
    pub fn coverage(&self) -> CoverageJson {
        coverage::coverage(&self.agents.borrow(), &self.lock())
    }

    /// Sides merged as they were, without their nodes (see
    /// [`merge::Merged::unknown_sides`]).
    #[must_use]
    pub fn unknown_sides(&self) -> usize {
        self.unknown_sides.load(Ordering::Relaxed)
    }

    /// How many times the merged view was made: grows after every change
    /// of a contribution.
    #[must_use]
    pub fn merges(&self) -> u64 {
        self.merges.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Held>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `node`'s agent answered at `now`.
    ///
    /// # Errors
    /// The contribution is of an unknown format or of another node: the
    /// answer is not taken (the caller counts it as a failure).
    pub fn answered(&self, node: &str, fetched: Fetched, now: u64) -> Result<(), String> {
        if let Fetched::Changed { contribution, .. } = &fetched {
            if contribution.format != CONTRIBUTION_FORMAT {
                return Err(format!(
                    "contribution format {} is not the format this relay reads ({CONTRIBUTION_FORMAT})",
                    contribution.format
                ));
            }
            if contribution.node != node {
                return Err(format!(
                    "the agent says it is node {:?}, discovery says {node:?}",
                    contribution.node
                ));
            }
        }
        let (changed, save) = {
            let mut held = self.lock();
            let h = held.entry(node.to_owned()).or_default();
            let was_stale = h.stale_since.is_some() || h.error.is_some();
            h.last_sync = Some(now);
            h.stale_since = None;
            h.error = None;
            let changed = match fetched {
                Fetched::NotModified => false,
                Fetched::Changed { etag, contribution } => {
                    let same = h.contribution.as_deref().is_some_and(|old| {
                        (&old.epoch, &old.instance, old.version)
                            == (
                                &contribution.epoch,
                                &contribution.instance,
                                contribution.version,
                            )
                    }) && h.etag == etag;
                    if let Some(old) = h.contribution.as_deref()
                        && old.epoch != contribution.epoch
                    {
                        info!(
                            node,
                            old = old.epoch,
                            new = contribution.epoch,
                            "the agent's store has a new epoch: what the relay held of it is replaced"
                        );
                    }
                    if !same {
                        h.contribution = Some(Arc::new(*contribution));
                        h.etag = etag;
                    }
                    !same
                }
            };
            // A node back from stale is saved now; a new contribution alone
            // waits for the next flush (the agent has it too).
            (changed, was_stale.then(|| h.clone()))
        };
        if let Some(h) = save {
            self.save([(node, Some(&h))]);
        } else if changed {
            self.unsaved
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(node.to_owned());
        }
        if changed {
            self.dirty.notify_one();
        }
        Ok(())
    }

    /// `node`'s agent did not answer at `now`: its contribution is kept,
    /// marked stale.
    pub fn failed(&self, node: &str, error: String, now: u64) {
        let save = {
            let mut held = self.lock();
            let h = held.entry(node.to_owned()).or_default();
            let first = h.stale_since.is_none();
            h.stale_since.get_or_insert(now);
            let news = h.error.as_deref() != Some(error.as_str());
            if news {
                warn!(
                    node,
                    error, "cannot read the agent; its last contribution is kept, stale"
                );
            }
            h.error = Some(error);
            (first || news).then(|| h.clone())
        };
        if let Some(h) = save {
            self.save([(node, Some(&h))]);
        }
    }

    /// Discovery lists `set` at `now`: nodes it no longer lists are marked
    /// deleted (their contribution kept), nodes back are not. A set not
    /// [`listed`](AgentSet::listed) yet (discovery before its first list,
    /// or failing to list) says nothing of any node.
    pub fn discovered(&self, set: &AgentSet, now: u64) {
        if !set.listed {
            return;
        }
        let changed: Vec<(String, Held)> = {
            let mut held = self.lock();
            held.iter_mut()
                .filter_map(|(node, h)| {
                    let listed = set.agents.contains_key(node);
                    match (listed, h.deleted_since) {
                        (false, None) => {
                            info!(node, "the node is gone from discovery; its contribution is kept for the retention");
                            h.deleted_since = Some(now);
                        }
                        (true, Some(_)) => h.deleted_since = None,
                        _ => return None,
                    }
                    Some((node.clone(), h.clone()))
                })
                .collect()
        };
        self.save(changed.iter().map(|(n, h)| (n.as_str(), Some(h))));
    }

    /// Forget nodes deleted for longer than `retention` at `now`.
    pub fn prune(&self, now: u64, retention: Duration) {
        let retention = u64::try_from(retention.as_nanos()).unwrap_or(u64::MAX);
        let gone: Vec<String> = {
            let mut held = self.lock();
            let gone: Vec<String> = held
                .iter()
                .filter(|(_, h)| {
                    h.deleted_since
                        .is_some_and(|t| now.saturating_sub(t) >= retention)
                })
                .map(|(n, _)| n.clone())
                .collect();
            for node in &gone {
                held.remove(node);
                info!(
                    node,
                    "the node was deleted longer than the retention: its contribution is dropped"
                );
            }
            gone
        };
        if !gone.is_empty() {
            self.save(gone.iter().map(|n| (n.as_str(), None)));
            self.dirty.notify_one();
        }
    }

    /// Checkpoint the contributions that changed since the last flush.
    pub fn flush(&self) {
        let unsaved =
            std::mem::take(&mut *self.unsaved.lock().unwrap_or_else(PoisonError::into_inner));
        if unsaved.is_empty() {
            return;
        }
        let rows: Vec<(String, Option<Held>)> = {
            let held = self.lock();
            unsaved
                .into_iter()
                .map(|node| {
                    let h = held.get(&node).cloned();
                    (node, h)
                })
                .collect()
        };
        self.save(rows.iter().map(|(n, h)| (n.as_str(), h.as_ref())));
    }

    /// Flush the checkpoint every `period`.
    pub async fn run_checkpointer(self: Arc<Self>, period: Duration) {
        loop {
            tokio::time::sleep(period).await;
            let hub = Arc::clone(&self);
            if tokio::task::spawn_blocking(move || hub.flush())
                .await
                .is_err()
            {
                warn!("the checkpoint flush failed; it is retried");
            }
        }
    }

    fn save<'a>(&self, rows: impl IntoIterator<Item = (&'a str, Option<&'a Held>)>) {
        if let Some(checkpoint) = &self.checkpoint
            && let Err(error) = checkpoint.save(rows)
        {
            let error: &CheckpointError = &error;
            warn!(error = chain(error), "cannot checkpoint the relay's state");
        }
    }

    /// Merge the contributions held and serve the result.
    pub fn remerge(&self) {
        let contributions: Vec<Arc<ContributionJson>> = self
            .lock()
            .values()
            .filter_map(|h| h.contribution.clone())
            .collect();
        let merged = merge::merge(contributions.iter().map(Arc::as_ref));
        let resolver = Resolver::new(&merged.inventory, |_| None);
        // The cluster first: a client told of a new graph reads it with
        // the cluster it was made with.
        *self
            .resolver
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(resolver);
        self.aggregator.replace(&merged.view);
        self.unknown_sides
            .store(merged.unknown_sides, Ordering::Relaxed);
        self.merges.fetch_add(1, Ordering::Relaxed);
    }

    /// Remake the merged view after changes, at most once per `pause`.
    pub async fn run_merger(self: Arc<Self>, pause: Duration) {
        loop {
            self.dirty.notified().await;
            // Let a burst of syncs land first.
            tokio::time::sleep(pause).await;
            let hub = Arc::clone(&self);
            if tokio::task::spawn_blocking(move || hub.remerge())
                .await
                .is_err()
            {
                warn!("the merge failed; the previous view is served");
            }
        }
    }
}
