//! A CA and the certificates it signs for the agents and the relay, for
//! labs, tests and installs without cert-manager (`weir certs`).
//!
//! ECDSA P-256 keys. The CA may sign end certificates only (path length
//! 0); an agent's certificate names `<node>.agents.weir.internal` for
//! server authentication, the relay's `relay.weir.internal` for client
//! authentication.

use std::{
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    time::Duration,
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::OffsetDateTime;

use super::{CA_FILE, CERT_FILE, KEY_FILE, RELAY_SERVER_NAME, TlsError, agent_server_name};

/// A certificate and its private key, PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A CA and everything it signed.
#[derive(Clone, Debug)]
pub struct Certificates {
    pub ca: Issued,
    /// By node, in the order given.
    pub agents: Vec<(String, Issued)>,
    pub relay: Issued,
}

/// Certificates start this long before `now`, for clocks a little behind.
const BACKDATE: Duration = Duration::from_secs(3600);

/// A new CA, one agent certificate per node and the relay's, valid from
/// `now` for `validity`.
///
/// # Errors
/// A node name that cannot be a DNS name, or a key rcgen cannot make.
pub fn generate(
    nodes: &[String],
    validity: Duration,
    now: OffsetDateTime,
) -> Result<Certificates, TlsError> {
    for node in nodes {
        if !is_node_name(node) {
            return Err(TlsError::NodeName { node: node.clone() });
        }
    }
    let not_before = now - BACKDATE;
    let not_after = now + validity;

    let ca_key = key("CA key")?;
    let mut ca_params = CertificateParams::default();
    // Two CAs never share a name, so that a certificate of another one
    // reads as an unknown issuer rather than a bad signature.
    let id: String = ca_params
        .key_identifier(&ca_key)
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    ca_params.distinguished_name = name(&format!("weir relay CA {id}"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|e| generate_error("CA certificate", &e))?;
    let ca = Issued {
        cert_pem: ca_cert.pem(),
        key_pem: ca_key.serialize_pem(),
    };
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf = |dns: String, usage: ExtendedKeyUsagePurpose| -> Result<Issued, TlsError> {
        let what = format!("certificate of {dns}");
        let key = key(&what)?;
        let mut params =
            CertificateParams::new(vec![dns.clone()]).map_err(|e| generate_error(&what, &e))?;
        params.distinguished_name = name(&dns);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(|e| generate_error(&what, &e))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    };
    let agents = nodes
        .iter()
        .map(|node| {
            leaf(agent_server_name(node), ExtendedKeyUsagePurpose::ServerAuth)
                .map(|issued| (node.clone(), issued))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let relay = leaf(
        RELAY_SERVER_NAME.to_owned(),
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    Ok(Certificates { ca, agents, relay })
}

/// Write `certs` under `out`: `ca.crt`, `ca.key`, `agents/<node>/` and
/// `relay/`, each of these with `tls.crt`, `tls.key` and `ca.crt`. Keys are
/// readable by their owner only. An existing CA is replaced only with
/// `force`. Returns the files written.
///
/// # Errors
/// An existing CA without `force`, or a file that cannot be written.
pub fn write(certs: &Certificates, out: &Path, force: bool) -> Result<Vec<PathBuf>, TlsError> {
    if !force {
        for file in [CA_FILE, "ca.key"] {
            let path = out.join(file);
            if path.exists() {
                return Err(TlsError::CaExists { path });
            }
        }
    }
    let mut written = Vec::new();
    let mut put = |path: PathBuf, text: &str, secret: bool| -> Result<(), TlsError> {
        write_file(&path, text, secret)?;
        written.push(path);
        Ok(())
    };
    put(out.join(CA_FILE), &certs.ca.cert_pem, false)?;
    put(out.join("ca.key"), &certs.ca.key_pem, true)?;
    let ends = certs
        .agents
        .iter()
        .map(|(node, issued)| (out.join("agents").join(node), issued))
        .chain([(out.join("relay"), &certs.relay)]);
    for (dir, issued) in ends {
        put(dir.join(CERT_FILE), &issued.cert_pem, false)?;
        put(dir.join(KEY_FILE), &issued.key_pem, true)?;
        put(dir.join(CA_FILE), &certs.ca.cert_pem, false)?;
    }
    Ok(written)
}

/// A Kubernetes node name: a DNS subdomain (lowercase letters, digits, `-`
/// and `.`, labels of 1 to 63 characters), short enough to stay one under
/// the agents' domain.
#[must_use]
pub fn is_node_name(node: &str) -> bool {
    let labels_ok = node.split('.').all(|label| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    labels_ok && agent_server_name(node).len() <= 253
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

fn key(what: &str) -> Result<KeyPair, TlsError> {
    KeyPair::generate().map_err(|e| generate_error(what, &e))
}

fn generate_error(what: &str, error: &rcgen::Error) -> TlsError {
    TlsError::Generate {
        what: what.to_owned(),
        problem: error.to_string(),
    }
}

/// Write `text` to `path`, its directory created; a secret is `0600` (also
/// when the file existed with wider permissions).
fn write_file(path: &Path, text: &str, secret: bool) -> Result<(), TlsError> {
    let error = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(error)?;
    }
    let mode = if secret { 0o600 } else { 0o644 };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(error)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(error)?;
    file.write_all(text.as_bytes()).map_err(error)
}
