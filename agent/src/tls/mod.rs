//! Mutual TLS between the relay and the agents' relay listeners.
//!
//! One CA signs both ends: each agent presents a certificate for
//! [`agent_server_name`] of its node and accepts only clients whose
//! certificate chains to the CA ([`server_config`]); the relay presents a
//! certificate for [`RELAY_SERVER_NAME`] and trusts only that CA, never the
//! system's roots ([`RelayTls`]). Each side reads a directory laid out as a
//! `kubernetes.io/tls` Secret with the CA beside it, as cert-manager and
//! the chart write it: `tls.crt`, `tls.key`, `ca.crt`.
//!
//! | module | what |
//! |---|---|
//! | [`load`] | the directory's PEM files into rustls configurations |
//! | [`client`] | the relay's HTTPS client for the agents |
//! | [`generate`] | a CA and its certificates, for `weir certs` |

pub mod client;
pub mod generate;
pub mod load;

use std::{io, path::PathBuf};

pub use self::{
    client::{RelayTls, agent_address, agent_url, relay_client},
    load::{TlsDir, server_config},
};

/// The certificate chain file of a TLS directory.
pub const CERT_FILE: &str = "tls.crt";
/// The private key file of a TLS directory.
pub const KEY_FILE: &str = "tls.key";
/// The CA file of a TLS directory: the only root the other end may chain to.
pub const CA_FILE: &str = "ca.crt";

/// The DNS name under which every agent's relay listener is named.
pub const AGENTS_DOMAIN: &str = "agents.weir.internal";

/// The DNS name of the relay's client certificate.
pub const RELAY_SERVER_NAME: &str = "relay.weir.internal";

/// The DNS name an agent's relay-listener certificate is issued for:
/// `<node>.agents.weir.internal`, with the node name's dots made dashes
/// (as Cilium names its Hubble peers), so the name has one label under
/// the domain and the chart's wildcard `*.agents.weir.internal` covers
/// every node, `ip-10-0-1-2.ec2.internal` too.
#[must_use]
pub fn agent_server_name(node: &str) -> String {
    format!("{}.{AGENTS_DOMAIN}", node.replace('.', "-"))
}

/// Why TLS material could not be read, used or written; each names its file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: no PEM certificate in it", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: not PEM certificates: {problem}", path.display())]
    BadCertificate { path: PathBuf, problem: String },
    #[error("{}: no PEM private key in it (PKCS#8, PKCS#1 or SEC1)", path.display())]
    NoKey { path: PathBuf },
    #[error("{}: not a PEM private key: {problem}", path.display())]
    BadKey { path: PathBuf, problem: String },
    #[error("{}: the key does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("{}: a certificate that cannot be a trust anchor: {problem}", path.display())]
    BadCa { path: PathBuf, problem: String },
    #[error(
        "{}: the certificate is not valid for {name}: {problem} (weir certs --node NODE issues one)",
        path.display()
    )]
    WrongName {
        path: PathBuf,
        name: String,
        problem: String,
    },
    #[error("{}: cannot use this certificate and key: {problem}", dir.display())]
    Config { dir: PathBuf, problem: String },
    #[error("cannot build the relay's HTTPS client from {}: {problem}", dir.display())]
    Client { dir: PathBuf, problem: String },
    #[error("{url:?} is not https://ADDRESS:PORT (an IP address and a port)")]
    AgentUrl { url: String },
    #[error("{node:?} is not a node name (lowercase letters, digits, '-' and '.')")]
    NodeName { node: String },
    #[error("cannot generate the {what}: {problem}")]
    Generate { what: String, problem: String },
    #[error(
        "{} exists: a new CA would void every certificate the old one signed \
         (pass --force to replace it)",
        path.display()
    )]
    CaExists { path: PathBuf },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

#[cfg(test)]
mod tests;
