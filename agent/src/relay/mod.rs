//! `weir relay`: the whole cluster in one view.
//!
//! The agents stay the source of truth: each serves its node's graph by
//! side (`GET /api/v1/contribution`) and its flows on a listener that only
//! clients signed by the relay CA reach (mutual TLS). The relay discovers
//! the agents, keeps the last contribution of each (checkpointed, so a
//! restart or a drained node loses nothing), merges them without counting
//! a cross-node connection twice, and serves the agent's API and UI over
//! the merged view, every answer saying how much of the cluster it covers.
//!
//! | module | what |
//! |---|---|
//! | [`config`] | `weir relay` arguments |
//! | [`discovery`] | which agents exist: a static list, or the cluster's EndpointSlices |
//! | [`sync`] | one task per agent reads its contribution when it changed (the [`sync::Fetch`] seam) |
//! | [`http`] | [`sync::Fetch`] over HTTPS, checking each agent's certificate against its node |
//! | [`hub`] | what the relay holds of each node, and the merged view made of it |
//! | [`merge`] | the contributions merged into one view, each connection counted once (pure) |
//! | [`stream`] | the agents' flow streams merged in time order, each connection once (pure) |
//! | [`checkpoint`] | `relay.redb`: each node's last contribution and sync state |
//! | [`coverage`] | how much of the cluster the view covers (pure) |
//! | [`serve`] | the agent's API over the merged view, with coverage; writes through the cluster |
//! | [`flows`] | the relay's `GET /api/flows`: the agents' records through [`stream`] |

pub mod checkpoint;
pub mod config;
pub mod coverage;
pub mod discovery;
pub mod flows;
pub mod http;
pub mod hub;
pub mod merge;
pub mod raw_flow;
pub mod serve;
pub mod stream;
pub mod sync;

#[cfg(test)]
mod flows_tests;
#[cfg(test)]
mod stream_tests;

use std::{process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use tracing::{info, warn};

use self::{
    checkpoint::Checkpoint,
    config::RelayArgs,
    http::{AgentNames, HttpFetch},
    hub::Hub,
    serve::{Cluster, Relay},
    sync::Pace,
};
use crate::{
    aggregator::{Aggregator, Options},
    api::{self, AppState},
    daemon::token,
    error_chain::chain,
    metrics::Metrics,
    tls,
};

/// How long the merge waits for more syncs before it remakes the view.
const MERGE_PAUSE: Duration = Duration::from_millis(200);

/// How often changed contributions are checkpointed (sync state changes
/// are at once; a contribution lost in between is read again).
const CHECKPOINT_PERIOD: Duration = Duration::from_secs(5);

/// Run `weir relay` until SIGINT or SIGTERM.
///
/// # Errors
/// A damaged checkpoint, a bad token file, a listen address in use.
pub fn run(args: RelayArgs) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?
        .block_on(serve_relay(args))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve_relay(args: RelayArgs) -> anyhow::Result<()> {
    let (checkpoint, held) = Checkpoint::open(&args.state_dir)?;
    info!(
        store = %checkpoint.path().display(),
        nodes = held.len(),
        "relay store opened"
    );
    let kube = kube::Client::try_default().await;
    let agents = match &args.agents_service {
        Some(service) => {
            let client = kube.as_ref().map_err(|e| {
                anyhow::anyhow!(
                    "--agents-service needs the Kubernetes API (in-cluster or KUBECONFIG): {}",
                    e
                )
            })?;
            let (tx, rx) = tokio::sync::watch::channel(discovery::AgentSet::default());
            let discovering = discovery::kube::watch_agents(
                client.clone(),
                service.clone(),
                args.daemonset.clone(),
                args.agent_port,
                tx,
            );
            tokio::spawn(async move {
                if let Err(error) = discovering.await {
                    warn!(error = chain(&error), "agent discovery stopped");
                }
            });
            rx
        }
        None => discovery::static_list(&args.agents),
    };
    let (api_token, origin) = token::load(
        args.token_file.as_deref(),
        std::env::var("WEIR_TOKEN").ok().as_deref(),
    )
    .context("cannot set up the API token")?;
    let token_path = token::save(&args.state_dir, &api_token, &origin)?;

    let metrics = Arc::new(Metrics::new());
    let aggregator = Arc::new(Aggregator::new(
        Options {
            node_name: "relay".to_owned(),
            ..Options::default()
        },
        Arc::clone(&metrics),
    ));
    let hub = Hub::new(
        agents.clone(),
        Some((checkpoint, held)),
        Arc::clone(&aggregator),
    );
    let names = Arc::new(AgentNames::default());
    let client = tls::RelayTls::load(&args.tls_dir)?
        .builder()
        .dns_resolver(Arc::clone(&names))
        .build()
        .context("cannot build the HTTPS client for the agents")?;
    let fetch = Arc::new(HttpFetch::new(client, names));
    let pace = Pace::new(args.sync_interval, args.concurrency, args.retention);
    let flow_agents = flows::FlowAgents::new(Arc::clone(&fetch), agents.clone());
    let syncing = tokio::spawn(sync::run(Arc::clone(&hub), fetch, agents, pace));
    let merging = tokio::spawn(Arc::clone(&hub).run_merger(MERGE_PAUSE));
    let checkpointing = tokio::spawn(Arc::clone(&hub).run_checkpointer(CHECKPOINT_PERIOD));
    let last_flush = Arc::clone(&hub);

    let cluster = match kube {
        Ok(client) => Cluster::Kube(client),
        Err(error) => {
            // kube's message already holds its causes.
            let reason = error.to_string();
            warn!(
                reason,
                "no Kubernetes API: writes through the relay answer 501"
            );
            Cluster::Unavailable(Arc::from(reason))
        }
    };
    let state = AppState::new(aggregator, metrics, hub.resolver(), "relay")
        .with_token(api_token)
        .with_modes_from_labels();
    let relay = Relay {
        state,
        hub,
        cluster,
        flows: flow_agents,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    info!(listen = %args.listen, token_file = %token_path.display(), "relay API and UI");
    api::server::serve(
        listener,
        serve::app(relay),
        api::server::ServerOptions::default(),
        async {
            crate::daemon::shutdown_signal().await;
            info!("shutting down");
        },
    )
    .await
    .context("HTTP server failed")?;
    for task in [syncing, merging, checkpointing] {
        task.abort();
    }
    tokio::task::spawn_blocking(move || last_flush.flush())
        .await
        .context("the last checkpoint failed")?;
    Ok(())
}
