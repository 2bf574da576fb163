//! Which `Host` names the API answers to, against DNS rebinding: a page of
//! `attacker.example` whose name is made to resolve to 127.0.0.1 is on its
//! own origin to the browser, so it could read every answer of an agent on
//! loopback. Its requests carry `Host: attacker.example`, so, as Jupyter
//! and other local servers do, the agent refuses (403) every request whose
//! `Host` is a name other than:
//!
//! - `localhost` and `*.localhost` (browsers resolve them to loopback
//!   themselves);
//! - the names given with `--allowed-host` (`NAME`, `*.DOMAIN` for its
//!   subdomains, `*` for any).
//!
//! An address (`127.0.0.1:9090`, `[::1]`, the listen address, a pod's or
//! node's address) is always accepted: a page whose origin is an address
//! reached the agent without a name to rebind, so it is the agent's own
//! page. A request without `Host` (not a browser's) is accepted too.

use std::{net::IpAddr, sync::Arc};

use axum::{
    extract::{Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{AppState, error::ApiError};

/// The host names a request may name, besides addresses and `localhost`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    any: bool,
    names: Arc<[String]>,
    domains: Arc<[String]>,
}

impl AllowedHosts {
    /// `--allowed-host` values: `NAME`, `*.DOMAIN` or `*`.
    ///
    /// # Errors
    /// An empty value, or one with characters a host name cannot have.
    pub fn new(given: &[String]) -> Result<Self, String> {
        let mut hosts = Self::default();
        let (mut names, mut domains) = (Vec::new(), Vec::new());
        for value in given {
            let value = value.to_ascii_lowercase();
            if value == "*" {
                hosts.any = true;
                continue;
            }
            let (list, name) = match value.strip_prefix("*.") {
                Some(domain) => (&mut domains, domain),
                None => (&mut names, value.as_str()),
            };
            let name = name.strip_suffix('.').unwrap_or(name);
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !valid {
                return Err(format!(
                    "--allowed-host {value:?} is not a host name, *.DOMAIN or *"
                ));
            }
            list.push(name.to_owned());
        }
        hosts.names = names.into();
        hosts.domains = domains.into();
        Ok(hosts)
    }

    /// Whether a request with this `Host` header value is answered.
    #[must_use]
    pub fn allows(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        let name = normalize(strip_port(host));
        if is_address(&name) || name == "localhost" || name.ends_with(".localhost") {
            return true;
        }
        self.names.contains(&name)
            || self.domains.iter().any(|d| {
                name.strip_suffix(d.as_str())
                    .is_some_and(|sub| sub.ends_with('.'))
            })
    }
}

/// Lower case, without the root's trailing dot (`LOCALHOST.` is `localhost`).
fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// `name` of `name:port`; `[::1]` of `[::1]:9090`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(name, _)| name)
}

fn is_address(name: &str) -> bool {
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    bare.parse::<IpAddr>().is_ok()
}

/// Refuse requests whose `Host` (or absolute URI) names another host.
pub async fn check(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let named = request
        .headers()
        .get_all(header::HOST)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .chain(request.uri().authority().map(|a| a.as_str().to_owned()));
    for host in named {
        if !state.hosts.allows(&host) {
            return ApiError::HostNotAllowed {
                host: super::error::shorten(&host),
            }
            .into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_localhost_are_always_allowed() {
        let hosts = AllowedHosts::default();
        for host in [
            "127.0.0.1:9090",
            "127.0.0.1",
            "[::1]:9090",
            "[::1]",
            "10.244.1.7:9090",
            "0.0.0.0:9090",
            "localhost:9090",
            "LOCALHOST.",
            "localhost",
            "ui.localhost:9090",
        ] {
            assert!(hosts.allows(host), "{host}");
        }
        for host in [
            "attacker.example:9090",
            "attacker.example",
            "localhost.attacker.example",
            "127.0.0.1.attacker.example",
            "weir.weir-system.svc:9090",
            "",
            "[::1",
        ] {
            assert!(!hosts.allows(host), "{host}");
        }
    }

    #[test]
    fn configured_names_domains_and_any() {
        let hosts = AllowedHosts::new(&[
            "weir.weir-system.svc".to_owned(),
            "*.example.com".to_owned(),
        ])
        .unwrap();
        for host in [
            "weir.weir-system.svc:9090",
            "WEIR.weir-system.svc.",
            "a.example.com",
            "a.b.example.com:80",
        ] {
            assert!(hosts.allows(host), "{host}");
        }
        for host in ["example.com", "badexample.com", "weir.weir-system.svc.evil"] {
            assert!(!hosts.allows(host), "{host}");
        }
        assert!(AllowedHosts::new(&["*".to_owned()]).unwrap().allows("x.y"));
        for bad in ["", "*.", "a b", "a/b", "*.*.x"] {
            let error = AllowedHosts::new(&[bad.to_owned()]).unwrap_err();
            assert!(error.contains("--allowed-host"), "{error}");
        }
    }
}
