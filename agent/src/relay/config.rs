//! `weir relay` arguments.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// `weir relay` arguments.
#[derive(Debug, clap::Args)]
pub struct RelayArgs {
    /// Address of the relay's HTTP API and UI (the same API as an agent's,
    /// over the merged view).
    #[arg(long, default_value = "127.0.0.1:9391", env = "WEIR_RELAY_LISTEN")]
    pub listen: SocketAddr,
    /// Where the relay checkpoints the agents' contributions (`relay.redb`).
    #[arg(
        long,
        default_value = "/var/lib/weir-relay",
        env = "WEIR_RELAY_STATE_DIR"
    )]
    pub state_dir: PathBuf,
    /// The relay's client certificate for the agents' relay listeners:
    /// `tls.crt`, `tls.key` and the CA that signed the agents, `ca.crt`
    /// (the layout of a `kubernetes.io/tls` Secret).
    #[arg(long, value_name = "DIR", env = "WEIR_RELAY_TLS_DIR")]
    pub tls_dir: PathBuf,
    /// A static agent: `NODE=https://HOST:PORT` (repeatable). Its
    /// certificate must name `NODE.agents.weir.internal`.
    #[arg(long = "agent", value_name = "NODE=URL", value_parser = parse_agent)]
    pub agents: Vec<(String, String)>,
    /// Discover the agents from the EndpointSlices of this headless
    /// Service (`NAMESPACE/NAME`), through the Kubernetes API.
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = parse_object, conflicts_with = "agents")]
    pub agents_service: Option<(String, String)>,
    /// Expect as many agents as this DaemonSet schedules
    /// (`NAMESPACE/NAME`, its `status.desiredNumberScheduled`).
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = parse_object, requires = "agents_service")]
    pub daemonset: Option<(String, String)>,
    /// The agents' relay-listener port, for discovered endpoints whose
    /// EndpointSlice has no port named `relay`.
    #[arg(long, default_value_t = 4244)]
    pub agent_port: u16,
    /// Read an agent at least this often (with jitter) even when its events
    /// say nothing changed.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub sync_interval: Duration,
    /// At most this many agents are read at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Keep a deleted node's last contribution this long (the learning
    /// window).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub retention: Duration,
    /// Where the token required for changes is read (created when missing),
    /// as for `weir agent`.
    #[arg(long, value_name = "FILE", env = "WEIR_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

/// `NODE=URL`: a node name (a DNS label, as Kubernetes names nodes) and
/// an `https://` URL.
fn parse_agent(value: &str) -> Result<(String, String), String> {
    let (node, url) = value
        .split_once('=')
        .ok_or_else(|| format!("`{value}` is not NODE=URL"))?;
    if !is_dns_subdomain(node) {
        return Err(format!(
            "node `{node}` is not a valid node name (lowercase letters, digits, `-` and `.`)"
        ));
    }
    if !url.starts_with("https://") || url.len() == "https://".len() {
        return Err(format!(
            "`{url}` is not an https:// URL (the agents' relay listener speaks TLS)"
        ));
    }
    Ok((node.to_owned(), url.trim_end_matches('/').to_owned()))
}

/// `NAMESPACE/NAME`.
fn parse_object(value: &str) -> Result<(String, String), String> {
    match value.split_once('/') {
        Some((ns, name)) if is_dns_subdomain(ns) && is_dns_subdomain(name) => {
            Ok((ns.to_owned(), name.to_owned()))
        }
        _ => Err(format!("`{value}` is not NAMESPACE/NAME")),
    }
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_is_a_node_name_and_an_https_url() {
        assert_eq!(
            parse_agent("node-a=https://10.0.0.1:4244/"),
            Ok(("node-a".to_owned(), "https://10.0.0.1:4244".to_owned()))
        );
        for bad in [
            "node-a",
            "Node=https://x",
            "a=http://x:1",
            "a=https://",
            "=https://x",
        ] {
            assert!(parse_agent(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_object_is_namespace_slash_name() {
        assert_eq!(
            parse_object("weir/weir-agents"),
            Ok(("weir".to_owned(), "weir-agents".to_owned()))
        );
        for bad in ["weir", "weir/", "/x", "Weir/x", "a/b/c"] {
            assert!(parse_object(bad).is_err(), "{bad}");
        }
    }
}
