//! `weir agent` arguments and the validated configuration built from them.

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    str::FromStr,
    time::Duration,
};

use anyhow::ensure;
use weir_generator::datapath::Mode;
use weir_lab::LabName;

use crate::{learn::analysis::ReadinessOptions, tracker::Expiry};

/// `weir agent` arguments.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// Where pods come from: `lab` (the lab on this machine, `lab:NAME` for a
    /// named lab), `inventory:FILE` (Pods, Namespaces and Services as YAML)
    /// or `kube` (the API server: the kubeconfig out of a cluster, the
    /// service account inside one; namespace modes from the
    /// `weir.dev/mode` label and the enforced policies from the cluster's
    /// NetworkPolicies).
    #[arg(long, default_value = "lab", env = "WEIR_SOURCE")]
    pub source: SourceSpec,
    /// Address of the HTTP API and UI.
    #[arg(long, default_value = "127.0.0.1:9090", env = "WEIR_LISTEN")]
    pub listen: SocketAddr,
    /// A host name the API answers to besides its addresses and localhost
    /// (`NAME`, `*.DOMAIN`, `*` for any; repeat or separate with commas):
    /// a request naming another is refused, against DNS rebinding.
    #[arg(
        long = "allowed-host",
        value_name = "NAME",
        env = "WEIR_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
    /// Most HTTP connections open at once; beyond it new connections wait
    /// until one closes.
    #[arg(long, default_value_t = crate::api::server::DEFAULT_MAX_CONNECTIONS, env = "WEIR_MAX_CONNECTIONS")]
    pub max_connections: usize,
    /// Time an HTTP connection has to send a whole request head (line and
    /// headers), from its opening or its previous answer; then it is closed.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,
    /// Time a request has to send its whole body (408 after it).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub body_read_timeout: Duration,
    /// Largest request body (413 above it): a policy set to apply or
    /// verify. The default holds as many small policies as the rule maps
    /// can (units: KiB, MiB, GiB; KB, MB, GB).
    #[arg(long, default_value = "64MiB", env = "WEIR_MAX_BODY_SIZE")]
    pub max_body_size: bytesize::ByteSize,
    /// Name of this node (defaults to the host name). With a multi-node
    /// lab (`--source lab`), the lab node this agent is.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// How often the flow table is swept for counters, lost announcements
    /// and idle flows.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub sweep_interval: Duration,
    /// How often the pod source is re-read (attach to new pods, detach from gone ones).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub resync_interval: Duration,
    /// Idle time after which a flow leaves the kernel table (its counters are kept).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub flow_idle_timeout: Duration,
    /// Idle time after which a TCP flow that saw FIN or RST leaves the table.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub flow_closing_timeout: Duration,
    /// Capacity of each kernel flow table (one for IPv4 flows, one for IPv6).
    #[arg(long, default_value_t = 65_536)]
    pub flow_table_entries: u32,
    /// A loss (full flow table, full ring buffer) stops degrading the agent
    /// after this long without one.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration, hide = true)]
    pub loss_clear_after: Duration,
    /// Size of the new-flow ring buffer in bytes (a power of two, at least one page).
    #[arg(long, default_value_t = 256 * 1024)]
    pub ringbuf_bytes: u32,
    /// Capacity of the queue between the datapath and the aggregator.
    #[arg(long, default_value_t = 16_384)]
    pub channel_capacity: usize,
    /// Directory of the agent's state: the learned graph lives there and
    /// survives restarts and upgrades.
    #[arg(long, default_value = "/var/lib/weir", env = "WEIR_STATE_DIR")]
    pub state_dir: PathBuf,
    /// Start even when the store in --state-dir is damaged: keep what can
    /// be read of it in a new store (saying what was lost) and move the
    /// damaged file aside. Without it, a damaged store stops the agent.
    #[arg(long)]
    pub repair_store: bool,
    /// How often the learned graph is saved when it changed (and once more
    /// at shutdown).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub save_interval: Duration,
    /// How long `weir pending reject` keeps an edge out of the queue: seen
    /// again after that, it is proposed again.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    pub pending_reject_window: Duration,
    /// A namespace is ready to audit once no new edge appeared for this long
    /// and the suggestion covers all its recent traffic.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub quiet_period: Duration,
    /// How far back "recent traffic" goes for readiness coverage.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub coverage_window: Duration,
    /// Directory on a bpffs where the datapath's maps and links are pinned:
    /// killing or restarting the agent keeps enforcing, and the next agent
    /// adopts them (flow table and policies included). `weir agent
    /// --cleanup` removes them.
    #[arg(long, default_value = "/sys/fs/bpf/weir", env = "WEIR_PIN_DIR")]
    pub pin_dir: PathBuf,
    /// Pin nothing: the datapath goes away with the agent (development).
    #[arg(long, hide = true, conflicts_with = "cleanup")]
    pub no_pin: bool,
    /// Detach and remove everything weir pinned under --pin-dir, then exit.
    #[arg(long)]
    pub cleanup: bool,
    /// Refuse to start without CAP_SYS_ADMIN, which reading pods' sockets
    /// in their network namespaces under /run/netns needs (setns). Without
    /// it the agent reads them when it can (the chart sets it with
    /// podNamespaces.netnsDir).
    #[arg(long, env = "WEIR_REQUIRE_NETNS")]
    pub require_netns: bool,
    /// The mode of namespaces no `weir mode set` named.
    #[arg(long, default_value_t = Mode::Observe, env = "WEIR_DEFAULT_MODE")]
    pub default_mode: Mode,
    /// The node's own addresses (always allowed, as NetworkPolicy requires
    /// for kubelet probes); a lab's bridge addresses are found by themselves.
    #[arg(long = "node-ip", value_name = "IP")]
    pub node_ips: Vec<IpAddr>,
    /// A file holding the API token that requests changing state must
    /// present (a mounted Secret's key). Without it, `WEIR_TOKEN`, else a
    /// token generated at start and printed once. Whichever it is, it is
    /// written to `<state-dir>/api-token` (mode 0600) for local CLIs.
    #[arg(long, value_name = "FILE", env = "WEIR_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Also serve, for `weir relay`, this node's contribution, flows,
    /// events and health (read-only) on this address over mutual TLS:
    /// only clients whose certificate chains to --relay-tls-dir's CA.
    /// Off unless given.
    #[arg(long, value_name = "ADDR", env = "WEIR_RELAY_LISTEN")]
    pub relay_listen: Option<SocketAddr>,
    /// The relay listener's certificate for `<node>.agents.weir.internal`
    /// and the CA its clients must chain to: `tls.crt`, `tls.key`,
    /// `ca.crt` (a `kubernetes.io/tls` Secret with the CA, as cert-manager
    /// and the chart write it). Required with --relay-listen.
    #[arg(long, value_name = "DIR", env = "WEIR_RELAY_TLS_DIR")]
    pub relay_tls_dir: Option<PathBuf>,
    /// Lower an enforcement map's limit below its capacity: MAP=ENTRIES
    /// (ENDPOINTS, IDENTITIES, CIDRS, POLICY, PEERS); for tests.
    #[arg(long = "enforce-limit", value_name = "MAP=N", hide = true, value_parser = parse_limit)]
    pub enforce_limits: Vec<(String, usize)>,
}

fn parse_limit(s: &str) -> Result<(String, usize), String> {
    let (map, n) = s
        .split_once('=')
        .ok_or_else(|| format!("expected MAP=ENTRIES, got {s:?}"))?;
    let map = map.to_ascii_uppercase();
    if !crate::enforce::entries::MAPS.contains(&map.as_str()) {
        return Err(format!(
            "unknown map {map:?} (expected one of {})",
            crate::enforce::entries::MAPS.join(", ")
        ));
    }
    let n = n.parse().map_err(|_| format!("bad entry count {n:?}"))?;
    Ok((map, n))
}

/// Where pods come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// A lab on this machine, by name.
    Lab(LabName),
    /// A YAML file of Pods and Namespaces.
    Inventory(PathBuf),
    /// The Kubernetes API server.
    Kube,
}

impl FromStr for SourceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = if s == "lab" { "lab:default" } else { s };
        if s == "kube" {
            return Ok(Self::Kube);
        }
        match s.split_once(':') {
            Some(("lab", name)) => name.parse().map(Self::Lab).map_err(|e| e.to_string()),
            Some(("inventory", path)) if !path.is_empty() => Ok(Self::Inventory(path.into())),
            _ => Err(format!(
                "unknown source {s:?}: expected lab, lab:NAME, inventory:FILE or kube"
            )),
        }
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Lab(name) => write!(f, "lab:{name}"),
            Self::Inventory(path) => write!(f, "inventory:{}", path.display()),
            Self::Kube => f.write_str("kube"),
        }
    }
}

impl SourceSpec {
    /// Open the source. The kube source connects with kube-rs's defaults
    /// and waits up to `ready_within` for its first lists; later (or if
    /// the API server is down) the agent keeps its previous view and
    /// retries with backoff.
    ///
    /// # Errors
    /// No usable Kubernetes client configuration.
    pub async fn open(
        &self,
        node_name: &str,
        metrics: &std::sync::Arc<crate::metrics::Metrics>,
        ready_within: Duration,
    ) -> anyhow::Result<Box<dyn crate::resolve::Source>> {
        use anyhow::Context as _;

        use crate::resolve::{inventory::InventorySource, kube::KubeSource, lab::LabSource};
        Ok(match self {
            Self::Lab(name) => {
                crate::resolve::lab::check_node(name, node_name).map_err(anyhow::Error::msg)?;
                Box::new(LabSource::new(name).with_node(node_name))
            }
            Self::Inventory(path) => {
                Box::new(InventorySource::new(path.clone()).with_node(node_name))
            }
            Self::Kube => {
                let source = KubeSource::connect(node_name, Some(std::sync::Arc::clone(metrics)))
                    .await
                    .context("cannot configure a Kubernetes client (kubeconfig or in-cluster)")?;
                match tokio::time::timeout(ready_within, source.wait_until_ready()).await {
                    Ok(Ok(())) => tracing::info!(
                        "listed pods, namespaces, services, endpointslices, networkpolicies and nodes"
                    ),
                    Ok(Err(error)) => anyhow::bail!("kube source stopped: {error}"),
                    Err(_) => tracing::warn!(
                        waited = ?ready_within,
                        "the API server has not answered every first list yet; going on, resolving nothing until it does"
                    ),
                }
                Box::new(source)
            }
        })
    }
}

/// Validated agent configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Pod source.
    pub source: SourceSpec,
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// HTTP connection limits.
    pub server: crate::api::server::ServerOptions,
    /// HTTP request limits.
    pub request_limits: crate::api::limits::RequestLimits,
    /// Host names the API answers to.
    pub allowed_hosts: crate::api::host::AllowedHosts,
    /// Node name.
    pub node_name: String,
    /// Sweep period.
    pub sweep_interval: Duration,
    /// Source re-read period.
    pub resync_interval: Duration,
    /// Flow expiry.
    pub expiry: Expiry,
    /// Kernel flow table capacity.
    pub flow_table_entries: u32,
    /// Time without a loss after which the agent is healthy again.
    pub loss_clear_after: Duration,
    /// Ring buffer bytes.
    pub ringbuf_bytes: u32,
    /// Datapath -> aggregator queue capacity.
    pub channel_capacity: usize,
    /// State directory (the store).
    pub state_dir: PathBuf,
    /// `--repair-store`.
    pub repair_store: bool,
    /// Store save period.
    pub save_interval: Duration,
    /// `--pending-reject-window`.
    pub pending_reject_window: Duration,
    /// How readiness is judged.
    pub readiness: ReadinessOptions,
    /// Where the datapath is pinned (`None`: nothing outlives the agent).
    pub pin_dir: Option<PathBuf>,
    /// The mode of namespaces not set explicitly.
    pub default_mode: Mode,
    /// Node addresses given on the command line.
    pub node_ips: Vec<IpAddr>,
    /// Limits lowered below the maps' capacities, by map.
    pub enforce_limits: BTreeMap<String, usize>,
    /// `--token-file`.
    pub token_file: Option<PathBuf>,
    /// `--require-netns`: CAP_SYS_ADMIN is checked at start.
    pub require_netns: bool,
    /// The relay listener, when one is asked for.
    pub relay: Option<RelayListener>,
}

/// `--relay-listen` and `--relay-tls-dir`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayListener {
    /// Where it listens.
    pub listen: SocketAddr,
    /// `tls.crt`, `tls.key`, `ca.crt`.
    pub tls_dir: PathBuf,
}

impl TryFrom<AgentArgs> for Config {
    type Error = anyhow::Error;

    fn try_from(args: AgentArgs) -> anyhow::Result<Self> {
        ensure!(
            args.ringbuf_bytes.is_power_of_two() && args.ringbuf_bytes >= 4096,
            "--ringbuf-bytes must be a power of two of at least 4096, got {}",
            args.ringbuf_bytes
        );
        ensure!(
            args.flow_table_entries > 0,
            "--flow-table-entries must be positive"
        );
        ensure!(
            args.channel_capacity > 0,
            "--channel-capacity must be positive"
        );
        ensure!(
            !args.sweep_interval.is_zero() && !args.resync_interval.is_zero(),
            "--sweep-interval and --resync-interval must be positive"
        );
        ensure!(
            !args.save_interval.is_zero() && !args.coverage_window.is_zero(),
            "--save-interval and --coverage-window must be positive"
        );
        ensure!(
            args.max_connections > 0,
            "--max-connections must be positive"
        );
        ensure!(
            !args.header_read_timeout.is_zero() && !args.body_read_timeout.is_zero(),
            "--header-read-timeout and --body-read-timeout must be positive"
        );
        let max_body = usize::try_from(args.max_body_size.as_u64())
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--max-body-size must be positive and fit in memory, got {}",
                    args.max_body_size
                )
            })?;
        let relay = match (args.relay_listen, args.relay_tls_dir) {
            (Some(listen), Some(tls_dir)) => {
                ensure!(
                    listen != args.listen || listen.port() == 0,
                    "--relay-listen {listen} is the API's --listen address: the relay listener needs its own"
                );
                Some(RelayListener { listen, tls_dir })
            }
            (Some(_), None) => anyhow::bail!(
                "--relay-listen needs --relay-tls-dir (WEIR_RELAY_TLS_DIR): a directory with tls.crt, tls.key and ca.crt (weir certs writes one)"
            ),
            (None, Some(_)) => anyhow::bail!(
                "--relay-tls-dir is given without --relay-listen (WEIR_RELAY_LISTEN): say where the relay listener listens"
            ),
            (None, None) => None,
        };
        let node_name = match args.node_name {
            Some(name) => name,
            None => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".to_owned()),
        };
        Ok(Self {
            source: args.source,
            listen: args.listen,
            server: crate::api::server::ServerOptions {
                max_connections: args.max_connections,
                header_read_timeout: args.header_read_timeout,
            },
            allowed_hosts: crate::api::host::AllowedHosts::new(&args.allowed_hosts)
                .map_err(anyhow::Error::msg)?,
            request_limits: crate::api::limits::RequestLimits::new(
                max_body,
                args.body_read_timeout,
            ),
            node_name,
            sweep_interval: args.sweep_interval,
            resync_interval: args.resync_interval,
            expiry: Expiry {
                idle: args.flow_idle_timeout,
                closing: args.flow_closing_timeout,
            },
            flow_table_entries: args.flow_table_entries,
            loss_clear_after: args.loss_clear_after,
            ringbuf_bytes: args.ringbuf_bytes,
            channel_capacity: args.channel_capacity,
            state_dir: args.state_dir,
            repair_store: args.repair_store,
            save_interval: args.save_interval,
            pending_reject_window: args.pending_reject_window,
            readiness: ReadinessOptions {
                quiet_period: args.quiet_period,
                window: args.coverage_window,
            },
            pin_dir: (!args.no_pin).then_some(args.pin_dir),
            default_mode: args.default_mode,
            node_ips: args.node_ips,
            enforce_limits: args.enforce_limits.into_iter().collect(),
            token_file: args.token_file,
            require_netns: args.require_netns,
            relay,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_specs_parse() {
        assert_eq!(
            "lab".parse(),
            Ok(SourceSpec::Lab("default".parse().unwrap()))
        );
        assert_eq!(
            "lab:e2e".parse(),
            Ok(SourceSpec::Lab("e2e".parse().unwrap()))
        );
        assert_eq!(
            "inventory:/tmp/x.yaml".parse(),
            Ok(SourceSpec::Inventory("/tmp/x.yaml".into()))
        );
        assert_eq!("kube".parse(), Ok(SourceSpec::Kube));
        assert_eq!(SourceSpec::Kube.to_string(), "kube");
        for bad in ["", "kube:", "lab:", "inventory:", "file:x"] {
            assert!(bad.parse::<SourceSpec>().is_err(), "{bad}");
        }
    }

    /// `weir agent ARGS` into a configuration.
    fn config(args: &[&str]) -> anyhow::Result<Config> {
        #[derive(clap::Parser)]
        struct Agent {
            #[command(flatten)]
            args: AgentArgs,
        }
        let parsed = <Agent as clap::Parser>::try_parse_from(
            ["agent", "--node-name", "a"].iter().chain(args),
        )?;
        Config::try_from(parsed.args)
    }

    #[test]
    fn the_relay_listener_needs_its_certificates_and_its_own_address() {
        assert_eq!(config(&[]).unwrap().relay, None);
        assert_eq!(
            config(&[
                "--relay-listen",
                "0.0.0.0:4244",
                "--relay-tls-dir",
                "/certs"
            ])
            .unwrap()
            .relay,
            Some(RelayListener {
                listen: "0.0.0.0:4244".parse().unwrap(),
                tls_dir: "/certs".into(),
            })
        );
        let error = config(&["--relay-listen", "0.0.0.0:4244"]).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("--relay-listen needs --relay-tls-dir"),
            "{error}"
        );
        let error = config(&["--relay-tls-dir", "/certs"]).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("--relay-tls-dir is given without --relay-listen"),
            "{error}"
        );
        let error = config(&[
            "--relay-listen",
            "127.0.0.1:9090",
            "--relay-tls-dir",
            "/certs",
        ])
        .unwrap_err();
        assert!(error.to_string().contains("its own"), "{error}");
        // Port 0 is a port each of them picks.
        assert!(
            config(&[
                "--listen",
                "127.0.0.1:0",
                "--relay-listen",
                "127.0.0.1:0",
                "--relay-tls-dir",
                "/certs",
            ])
            .is_ok()
        );
    }
}
