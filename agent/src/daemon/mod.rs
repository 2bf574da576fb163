//! `weir agent`: the node daemon.
//!
//! Tasks, all under one supervisor and one shutdown signal:
//! - the datapath task owns aya (programs, maps, ring buffer), attaches to
//!   pods as the source reports them, turns kernel reports into
//!   observations and sends them over a bounded channel;
//! - the fold task feeds observations to the aggregator;
//! - the HTTP server serves the API, and with `--relay-listen` a second
//!   one serves the relay its read-only subset over mutual TLS;
//! - the save task writes the learned graph to the store in `--state-dir`
//!   when it changed (restored at start, saved once more at shutdown);
//! - the enforcer task owns the enforcement maps (handed over by the
//!   datapath task at load), recompiles the enforced policies when they,
//!   a namespace's mode or the node's pods change, and writes the maps.
//!
//! The datapath is pinned under `--pin-dir`: when the agent is killed, or
//! stops while some namespace is in audit or enforce mode, the programs
//! stay attached and keep enforcing with the last maps; the next agent
//! adopts them. An agent that judges nothing unpins and detaches at a
//! clean stop. `weir agent --cleanup` removes everything.

mod caps;
mod config;
mod preexisting;
mod probes;
pub mod token;

use std::{process::ExitCode, sync::Arc};

use anyhow::Context as _;
pub use config::{AgentArgs, Config, SourceSpec};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::{
    aggregator::{Aggregator, Options as AggregatorOptions},
    api::{self, AppState, Learning, SharedResolver},
    enforce::{Enforcer, state_file::DesiredFile, task::SharedExplain},
    error_chain::task_ended,
    flow::{Observation, Verdict},
    graph_store::{Persister, Store},
    health::Health,
    metrics::Metrics,
    resolve::Resolve as _,
    tracker::Clock,
};

/// Run the agent until SIGINT or SIGTERM.
///
/// # Errors
/// Invalid configuration, a datapath that does not load, or a listen
/// address that cannot be bound.
pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    if args.cleanup {
        weir_ebpf::loader::Datapath::cleanup(&args.pin_dir)
            .with_context(|| format!("cannot clean up {}", args.pin_dir.display()))?;
        info!(pin_dir = %args.pin_dir.display(), "removed everything weir pinned or attached");
        return Ok(ExitCode::SUCCESS);
    }
    let config = Config::try_from(args)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    // Before anything is read, written or attached: a capability the
    // runtime did not grant is named here, not found out half-started.
    caps::check(&caps::needed(config.require_netns)).context("cannot start the agent")?;
    // The token first: a bad --token-file stops the agent before it
    // attaches anything.
    let (api_token, token_origin) = token::load(
        config.token_file.as_deref(),
        std::env::var("WEIR_TOKEN").ok().as_deref(),
    )
    .context("cannot set up the API token")?;
    // The relay listener's certificates too: bad ones stop the agent
    // before it attaches anything, naming the file.
    let relay_tls = config
        .relay
        .as_ref()
        .map(|relay| {
            let dir = crate::tls::TlsDir::load(&relay.tls_dir)?;
            // A certificate for another node fails every read of the
            // relay's; the agent still observes and serves its API.
            let name = crate::tls::agent_server_name(&config.node_name);
            if let Err(error) = dir.check_name(&name) {
                warn!(error = %error, "the relay listener's certificate does not name this node: the relay will refuse it");
            }
            dir.server_config()
        })
        .transpose()
        .context("cannot set up the relay listener (--relay-tls-dir)")?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new(config.loss_clear_after));
    let names = Arc::new(crate::dns::Names::new(crate::dns::NamesOptions::default()));
    let aggregator = Arc::new(Aggregator::new(
        AggregatorOptions {
            node_name: config.node_name.clone(),
            names: Some(Arc::clone(&names)),
            ..AggregatorOptions::default()
        },
        Arc::clone(&metrics),
    ));
    // The learned graph comes back before anything folds; a store that
    // cannot be read stops the agent rather than start learning afresh.
    let (store, loaded) = open_store(&config)?;
    // Only the agent that holds the store may replace the token file.
    let token_path = token::save(&config.state_dir, &api_token, &token_origin)?;
    aggregator.restore_with_sides(&loaded.graph, &loaded.sides);
    aggregator.restore_entries(&loaded.entries);
    // The queue too: one this weir cannot read stops the agent, untouched.
    let pending = Arc::new(
        crate::pending::Queue::load(
            crate::pending::QueueFile::in_dir(&config.state_dir),
            config.pending_reject_window,
        )
        .context("cannot read the pending queue")?,
    );
    info!(
        store = %store.path().display(),
        edges = loaded.graph.edges.len(),
        "learned graph loaded"
    );
    let persister = Arc::new(Persister::new(store, Arc::clone(&aggregator)));
    let audit = Arc::new(
        crate::audit::AuditLog::open(&config.state_dir).context("cannot open the audit log")?,
    );
    // Open guard windows outlive a restart; a file that does not read
    // stops the agent rather than forget them.
    let guard = Arc::new(
        crate::guard::GuardHandle::load(crate::guard::GuardFile::in_dir(&config.state_dir))
            .context("cannot read the guard's state")?,
    );
    let promote =
        crate::promote::PromoteHandle::load(crate::promote::PromoteFile::in_dir(&config.state_dir))
            .context("cannot read automatic promotion's state")?;
    let resolver: SharedResolver = Arc::default();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (tx, rx) = mpsc::channel(config.channel_capacity);

    if let Some(dir) = &config.pin_dir {
        ensure_bpffs(dir)?;
    }
    let source = config
        .source
        .open(&config.node_name, &metrics, KUBE_FIRST_LIST_WAIT)
        .await?;
    let (node_tx, node_rx) = watch::channel(None);
    let (mut datapath, policy_maps) = probes::DatapathTask::start(
        &config,
        Arc::clone(&metrics),
        Arc::clone(&health),
        Arc::clone(&resolver),
        tx,
        node_tx,
        source,
    )
    .context("cannot start the datapath")?;
    datapath.set_names(names);
    datapath.set_flow_records(Arc::clone(&aggregator));
    datapath.seed(&loaded.entries);
    let enforcer = Enforcer::new(
        policy_maps,
        DesiredFile::in_dir(&config.state_dir),
        config.default_mode,
        &config.enforce_limits,
    )
    .context("cannot start the enforcer")?;
    info!(
        default_mode = %config.default_mode,
        pinned_entries = ?enforcer.applied().counts(),
        enforced_policies = enforcer.view().policies.len(),
        "enforcer ready"
    );
    let (enforcer, enforce_task) =
        crate::enforce::task::spawn(enforcer, node_rx, shutdown_rx.clone(), Arc::clone(&metrics));
    let datapath = tokio::spawn(datapath.run(shutdown_rx.clone()));
    let fold = tokio::spawn(fold_loop(
        rx,
        Arc::clone(&aggregator),
        Arc::clone(&resolver),
        Arc::clone(&metrics),
        enforcer.explain(),
    ));

    let saver = tokio::spawn(Arc::clone(&persister).run(config.save_interval, shutdown_rx.clone()));
    let pending_saver = tokio::spawn(crate::pending::run(
        Arc::clone(&pending),
        Arc::clone(&aggregator),
        config.save_interval,
        shutdown_rx.clone(),
    ));

    let state = AppState::new(
        Arc::clone(&aggregator),
        Arc::clone(&metrics),
        Arc::clone(&resolver),
        config.node_name.clone(),
    )
    .with_learning(Learning {
        window_start: Some(loaded.window_start),
        readiness: config.readiness,
    })
    .with_epoch(loaded.epoch)
    .with_audit(audit)
    .with_guard(guard, guard_reverter(&config).await?)
    .with_promote(promote)
    .with_enforcer(enforcer.clone())
    .with_health(Arc::clone(&health))
    .with_token(api_token.clone())
    .with_limits(config.request_limits.clone())
    .with_allowed_hosts(config.allowed_hosts.clone())
    .with_pending(pending);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    info!(listen = %config.listen, source = %config.source, "weir agent ready");
    match &token_origin {
        // Printed once, so the user can open the UI with it.
        token::Origin::Generated => info!(
            url = %format!("http://{}/#token={}", config.listen, api_token.expose()),
            token_file = %token_path.display(),
            "web UI (changes need the token in this URL, also in the token file)"
        ),
        origin => info!(
            url = %format!("http://{}/", config.listen),
            token_from = %match origin {
                token::Origin::File(path) => path.display().to_string(),
                _ => "WEIR_TOKEN".to_owned(),
            },
            token_file = %token_path.display(),
            "web UI"
        ),
    }
    let relay_server = match (&config.relay, relay_tls) {
        (Some(relay), Some(tls)) => {
            let listener = tokio::net::TcpListener::bind(relay.listen)
                .await
                .with_context(|| format!("cannot listen on {} (--relay-listen)", relay.listen))?;
            info!(
                relay_listen = %relay.listen,
                tls_dir = %relay.tls_dir.display(),
                "relay listener ready (mutual TLS, read-only)"
            );
            let tls = api::server::Tls {
                acceptor: tokio_rustls::TlsAcceptor::from(tls),
                metrics: Arc::clone(&metrics),
            };
            let mut stop = shutdown_rx.clone();
            Some(tokio::spawn(api::server::serve_tls(
                listener,
                api::relay_app(state.clone()),
                config.server,
                tls,
                async move {
                    let _ = stop.wait_for(|stopping| *stopping).await;
                },
            )))
        }
        _ => None,
    };
    let guard_task = tokio::spawn(api::guard::run(
        state.clone(),
        config.sweep_interval,
        shutdown_rx.clone(),
    ));
    let followers = Arc::clone(&aggregator);
    api::server::serve(listener, api::app(state), config.server, async move {
        shutdown_signal().await;
        info!("shutting down");
        let _ = shutdown_tx.send(true);
        // Open `weir observe -f` streams would hold the shutdown forever.
        followers.close_followers();
    })
    .await
    .context("HTTP server failed")?;
    if let Some(relay_server) = relay_server {
        match relay_server.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => warn!(%error, "relay listener ended with an error"),
            Err(error) => warn!("{}", task_ended("relay listener", error)),
        }
    }

    // The datapath task does a last sweep and detaches; the fold task ends
    // when its channel closes.
    match datapath.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => warn!(error = format!("{error:#}"), "datapath ended with an error"),
        Err(error) => warn!("{}", task_ended("datapath", error)),
    }
    for (what, task) in [
        ("fold", fold),
        ("guard", guard_task),
        ("enforcer", enforce_task),
    ] {
        if let Err(error) = task.await {
            warn!("{}", task_ended(what, error));
        }
    }
    // A stop (not a crash) of an agent that judges nothing leaves nothing
    // behind: pins matter only to keep enforcing without the agent.
    if let Some(dir) = &config.pin_dir
        && !enforcer.view().judging()
    {
        match weir_ebpf::loader::Datapath::cleanup(dir) {
            Ok(()) => {
                info!(pin_dir = %dir.display(), "nothing enforced: datapath unpinned and detached")
            }
            Err(error) => warn!(
                error = crate::error_chain::chain(&error),
                "cannot unpin the datapath"
            ),
        }
    }
    for (what, task) in [("save", saver), ("pending queue", pending_saver)] {
        if let Err(error) = task.await {
            warn!("{}", task_ended(what, error));
        }
    }
    // Everything folded: the last save.
    tokio::task::spawn_blocking(move || persister.save_if_changed())
        .await
        .map_err(|error| anyhow::anyhow!(task_ended("final save", error)))?
        .context("cannot save the learned graph at shutdown")?;
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// How the guard reverts: the Namespace's label with the kube source (the
/// mode is the label there), the enforcer's own mode otherwise.
async fn guard_reverter(config: &Config) -> anyhow::Result<api::guard::Reverter> {
    Ok(match config.source {
        crate::daemon::config::SourceSpec::Kube => api::guard::Reverter::Kube(
            kube::Client::try_default()
                .await
                .context("cannot configure a Kubernetes client for the guard")?,
        ),
        _ => api::guard::Reverter::Local,
    })
}

/// The store, repaired when asked: a damaged one stops the agent otherwise,
/// and is never written.
fn open_store(config: &Config) -> anyhow::Result<(Store, crate::graph_store::Loaded)> {
    let now = crate::graph_store::unix_now();
    if !config.repair_store {
        return Store::open(&config.state_dir, now).context("cannot open the agent's store");
    }
    let (store, loaded, repair) =
        Store::repair(&config.state_dir, now).context("cannot repair the agent's store")?;
    match repair {
        crate::graph_store::Repair::Intact => {
            info!(store = %store.path().display(), "{repair}");
        }
        _ => warn!(store = %store.path().display(), "{repair}"),
    }
    Ok((store, loaded))
}

async fn fold_loop(
    mut rx: mpsc::Receiver<Observation>,
    aggregator: Arc<Aggregator>,
    resolver: SharedResolver,
    metrics: Arc<Metrics>,
    explain: SharedExplain,
) {
    let mut clock = Clock::now();
    let mut folded: u64 = 0;
    while let Some(mut obs) = rx.recv().await {
        folded += 1;
        if folded.is_multiple_of(4096) {
            clock = Clock::now();
        }
        let current = Arc::clone(&resolver.read().unwrap_or_else(|e| e.into_inner()));
        if obs.new_flow
            && let Some(pod) = current
                .pod_by_ifindex(obs.ifindex)
                .or_else(|| current.pod_by_ip(obs.local.ip()))
        {
            metrics.verdict(&pod.namespace, obs.verdict, obs.reason);
        }
        // A denied flow's record names the policies that isolate its pod.
        if obs.verdict != Verdict::Forwarded
            && (obs.new_flow || obs.closed)
            && let Some(direction) = obs.direction
        {
            let explain = Arc::clone(&explain.read().unwrap_or_else(|e| e.into_inner()));
            obs.policies = explain.policies(obs.ifindex, direction);
        }
        aggregator.fold(&obs, current.as_ref());
        if obs.kernel_time != 0 {
            metrics.folded(
                obs.kernel_time,
                clock.to_unix(crate::tracker::monotonic_now_ns()),
            );
        }
    }
}

/// How long the agent waits at start for the API server's first lists
/// before it goes on without a view (and keeps asking).
const KUBE_FIRST_LIST_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Where bpffs is conventionally mounted (systemd mounts it; minimal
/// hosts and containers may not).
const BPFFS: &str = "/sys/fs/bpf";

/// Mount bpffs on `/sys/fs/bpf` when the pin directory is under it and it
/// is not mounted, as Cilium's agent does: pins need a bpffs.
fn ensure_bpffs(pin_dir: &std::path::Path) -> anyhow::Result<()> {
    if !pin_dir.starts_with(BPFFS) {
        return Ok(());
    }
    // Two agents starting together (tests) must not both mount: the second
    // mount would hide the first one's pins.
    let lock = std::fs::File::create("/run/weir-bpffs.lock")
        .context("cannot create /run/weir-bpffs.lock")?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| errno)
        .context("cannot lock /run/weir-bpffs.lock")?;
    let fs = nix::sys::statfs::statfs(BPFFS).with_context(|| format!("cannot stat {BPFFS}"))?;
    if fs.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC {
        return Ok(());
    }
    nix::mount::mount(
        Some("bpffs"),
        BPFFS,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| {
        format!("{BPFFS} is not a bpffs and cannot be mounted (--pin-dir needs one)")
    })?;
    info!(path = BPFFS, "mounted bpffs");
    Ok(())
}

/// SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            warn!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
