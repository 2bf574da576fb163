//! The enforcer task: the only writer of the enforcement maps. Changes come
//! over a bounded channel, each with a reply sent once the maps hold the
//! result (or nothing changed); the node view comes from the datapath task
//! over a `watch` channel. Changes wait until the first node view arrived:
//! compiling against no pods would empty maps a previous agent pinned.
//!
//! Readers (the API, the fold loop) never wait on the task: it publishes a
//! [`View`] and an [`Explain`] snapshot after every change.

use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use super::{
    Change, EnforceError, Enforcer, Explain, NodeView, Outcome, View, entries::PolicyMapsIo,
};
use crate::{error_chain::chain, metrics::Metrics};

/// The explanation snapshot the fold loop reads.
pub type SharedExplain = Arc<RwLock<Arc<Explain>>>;

type Reply = oneshot::Sender<Result<Outcome, EnforceError>>;

/// A way to the enforcer task; cheap to clone.
#[derive(Clone, Debug)]
pub struct EnforcerHandle {
    tx: mpsc::Sender<(Change, Reply)>,
    view: Arc<RwLock<Arc<View>>>,
    explain: SharedExplain,
}

/// A change that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// Refused or failed; see the cause.
    #[error(transparent)]
    Enforce(#[from] EnforceError),
    /// The enforcer task is gone (the agent is stopping).
    #[error("the enforcer is not running")]
    Gone,
}

impl EnforcerHandle {
    /// Apply a change; returns once the datapath enforces it.
    ///
    /// # Errors
    /// See [`ChangeError`].
    pub async fn change(&self, change: Change) -> Result<Outcome, ChangeError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((change, reply))
            .await
            .map_err(|_| ChangeError::Gone)?;
        Ok(answer.await.map_err(|_| ChangeError::Gone)??)
    }

    /// What is enforced now.
    #[must_use]
    pub fn view(&self) -> Arc<View> {
        Arc::clone(&self.view.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The verdict explanations, shared.
    #[must_use]
    pub fn explain(&self) -> SharedExplain {
        Arc::clone(&self.explain)
    }
}

/// Start the task.
pub fn spawn<M: PolicyMapsIo + 'static>(
    enforcer: Enforcer<M>,
    node: watch::Receiver<Option<Arc<NodeView>>>,
    shutdown: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) -> (EnforcerHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(16);
    let handle = EnforcerHandle {
        tx,
        view: Arc::new(RwLock::new(Arc::new(enforcer.view()))),
        explain: Arc::new(RwLock::new(Arc::new(enforcer.explain()))),
    };
    let task = tokio::spawn(run(enforcer, rx, node, shutdown, metrics, handle.clone()));
    (handle, task)
}

async fn run<M: PolicyMapsIo>(
    mut enforcer: Enforcer<M>,
    mut rx: mpsc::Receiver<(Change, Reply)>,
    mut node: watch::Receiver<Option<Arc<NodeView>>>,
    mut shutdown: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    handle: EnforcerHandle,
) {
    let publish = |enforcer: &Enforcer<M>| {
        let view = enforcer.view();
        for (map, entries) in &view.entries {
            metrics.set_enforce_entries(map, *entries);
        }
        *handle.view.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(view);
        *handle
            .explain
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(enforcer.explain());
    };
    let count = |result: &Result<Outcome, EnforceError>| {
        metrics.enforce_update(match result {
            Ok(_) => "applied",
            Err(e) if e.is_client_error() => "rejected",
            Err(_) => "failed",
        });
    };
    let mut ready = false;
    loop {
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            changed = node.changed() => {
                if changed.is_err() {
                    break;
                }
                let Some(view) = node.borrow_and_update().clone() else {
                    continue;
                };
                let first = !ready;
                // Compiling and writing maps is CPU and syscalls: off the
                // async workers.
                let result = tokio::task::block_in_place(|| enforcer.set_node(view));
                count(&result);
                match &result {
                    Ok(outcome) if first || outcome.writes > 0 => info!(
                        writes = outcome.writes,
                        entries = ?outcome.entries,
                        "enforcement maps updated for the node's pods"
                    ),
                    Ok(_) => {}
                    Err(error) => warn!(
                        error = chain(error),
                        "cannot update enforcement for the node's pods, keeping the previous maps"
                    ),
                }
                ready = true;
                publish(&enforcer);
            }
            command = rx.recv(), if ready => {
                let Some((change, reply)) = command else { break };
                let result = tokio::task::block_in_place(|| enforcer.change(change));
                count(&result);
                match &result {
                    Ok(outcome) => info!(writes = outcome.writes, entries = ?outcome.entries, "enforcement changed"),
                    Err(error) => warn!(
                        error = chain(error),
                        "enforcement change refused"
                    ),
                }
                publish(&enforcer);
                // The caller may have given up waiting: nothing to tell.
                let _ = reply.send(result);
            }
        }
    }
}
