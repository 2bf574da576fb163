//! A TLS directory's PEM files into rustls configurations, on the `ring`
//! provider (kube's), TLS 1.2 and 1.3.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
    server::WebPkiClientVerifier,
};

use super::{CA_FILE, CERT_FILE, KEY_FILE, TlsError};

/// A TLS directory read and checked: this end's certificate chain and key,
/// and the CA the other end must chain to.
#[derive(Debug)]
pub struct TlsDir {
    dir: PathBuf,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
}

/// The agent's relay-listener configuration from `dir`: its certificate,
/// and only clients whose certificate chains to `dir/ca.crt`.
///
/// # Errors
/// A missing or unreadable file, a file without PEM of its kind, a key
/// that is not the certificate's: each names the file.
pub fn server_config(dir: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    TlsDir::load(dir)?.server_config()
}

impl TlsDir {
    /// Read `tls.crt`, `tls.key` and `ca.crt` from `dir`.
    ///
    /// # Errors
    /// See [`server_config`].
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let chain = certificates(&dir.join(CERT_FILE))?;
        let key = private_key(&dir.join(KEY_FILE))?;
        let ca = dir.join(CA_FILE);
        let mut roots = RootCertStore::empty();
        for cert in certificates(&ca)? {
            roots.add(cert).map_err(|e| TlsError::BadCa {
                path: ca.clone(),
                problem: e.to_string(),
            })?;
        }
        Ok(Self {
            dir: dir.to_owned(),
            chain,
            key,
            roots: Arc::new(roots),
        })
    }

    /// The directory it was read from.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether this certificate names `name` (a wildcard too), as a
    /// client expecting `name` checks it.
    ///
    /// # Errors
    /// It does not, or it cannot be parsed; naming `tls.crt`.
    pub fn check_name(&self, name: &str) -> Result<(), TlsError> {
        let path = self.dir.join(CERT_FILE);
        let wrong = |problem: String| TlsError::WrongName {
            path: path.clone(),
            name: name.to_owned(),
            problem,
        };
        let server_name = ServerName::try_from(name).map_err(|e| wrong(e.to_string()))?;
        let cert =
            webpki::EndEntityCert::try_from(&self.chain[0]).map_err(|e| wrong(format!("{e:?}")))?;
        cert.verify_is_valid_for_subject_name(&server_name)
            .map_err(|e| wrong(format!("{e:?}")))
    }

    /// A server that requires a client certificate chaining to the CA.
    ///
    /// # Errors
    /// The key does not match the certificate, or rustls refuses them.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = provider();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&self.roots), provider.clone())
                .build()
                .map_err(|e| self.config_error(&e.to_string()))?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| self.rustls_error(e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| self.rustls_error(e))?;
        // The API is HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// A client that presents this certificate and trusts only the CA.
    ///
    /// # Errors
    /// The key does not match the certificate, or rustls refuses them.
    pub fn client_config(&self) -> Result<ClientConfig, TlsError> {
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| self.rustls_error(e))?
            .with_root_certificates(Arc::clone(&self.roots))
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| self.rustls_error(e))
    }

    fn rustls_error(&self, error: rustls::Error) -> TlsError {
        match error {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsError::KeyMismatch {
                    key: self.dir.join(KEY_FILE),
                    cert: self.dir.join(CERT_FILE),
                }
            }
            other => self.config_error(&other.to_string()),
        }
    }

    fn config_error(&self, problem: &str) -> TlsError {
        TlsError::Config {
            dir: self.dir.clone(),
            problem: problem.to_owned(),
        }
    }
}

/// The `ring` provider, as kube uses: one provider in the binary.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every `CERTIFICATE` block of a PEM file, in order; at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: path.to_owned(),
            problem: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The first private key of a PEM file.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        other => TlsError::BadKey {
            path: path.to_owned(),
            problem: other.to_string(),
        },
    })
}
