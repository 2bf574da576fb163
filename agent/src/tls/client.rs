//! The relay's HTTPS client for the agents' relay listeners: it presents
//! the relay's certificate, trusts only the CA of its directory (no system
//! roots) and speaks only `https`.
//!
//! An agent is addressed by name, `https://<node>.agents.weir.internal:PORT`,
//! and the name is resolved to the address discovery found
//! ([`RelayTls::agent_client`]): the agent's certificate is checked against
//! its node's name, never against an IP address.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::ClientConfig;

use super::{TlsDir, TlsError, agent_server_name};

/// The relay's side of mutual TLS, read once from its directory.
#[derive(Clone, Debug)]
pub struct RelayTls {
    dir: PathBuf,
    config: Arc<ClientConfig>,
}

/// A client for the agents, from the relay's TLS directory (`tls.crt`,
/// `tls.key`, `ca.crt`). Names are resolved by DNS; see
/// [`RelayTls::agent_client`] to reach a discovered address.
///
/// # Errors
/// As [`RelayTls::load`] and [`RelayTls::client`].
pub fn relay_client(dir: &Path) -> Result<reqwest::Client, TlsError> {
    RelayTls::load(dir)?.client()
}

/// The base URL of `node`'s relay listener on `port`, by its name.
#[must_use]
pub fn agent_url(node: &str, port: u16) -> String {
    format!("https://{}:{port}", agent_server_name(node))
}

impl RelayTls {
    /// Read the relay's certificate, key and CA from `dir`.
    ///
    /// # Errors
    /// A missing or unreadable file, a file without PEM of its kind, a key
    /// that is not the certificate's: each names the file.
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let loaded = TlsDir::load(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            config: Arc::new(loaded.client_config()?),
        })
    }

    /// A client builder with this TLS identity, `https` only: add timeouts
    /// or name resolutions, then build.
    pub fn builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .use_preconfigured_tls(ClientConfig::clone(&self.config))
            .https_only(true)
    }

    /// A client with this TLS identity.
    ///
    /// # Errors
    /// reqwest cannot build it (no TLS backend, no resolver).
    pub fn client(&self) -> Result<reqwest::Client, TlsError> {
        self.build(self.builder())
    }

    /// A client for `node`'s agent at `addr`: [`agent_url`]`(node, port)`
    /// connects to `addr` and expects the certificate of `node`.
    ///
    /// # Errors
    /// As [`RelayTls::client`].
    pub fn agent_client(&self, node: &str, addr: SocketAddr) -> Result<reqwest::Client, TlsError> {
        self.build(self.builder().resolve(&agent_server_name(node), addr))
    }

    fn build(&self, builder: reqwest::ClientBuilder) -> Result<reqwest::Client, TlsError> {
        builder.build().map_err(|e| TlsError::Client {
            dir: self.dir.clone(),
            problem: crate::error_chain::chain(&e),
        })
    }
}

/// The address of a discovered agent's URL, `https://IP:PORT`.
///
/// # Errors
/// Another scheme, a host name, or no port.
pub fn agent_address(url: &str) -> Result<SocketAddr, TlsError> {
    let invalid = || TlsError::AgentUrl {
        url: url.to_owned(),
    };
    let authority = url
        .strip_prefix("https://")
        .ok_or_else(invalid)?
        .trim_end_matches('/');
    authority.parse().map_err(|_| invalid())
}
