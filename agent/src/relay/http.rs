//! [`Fetch`] over HTTP(S): how the relay reads real agents.
//!
//! An `https://HOST:PORT` agent is asked for as
//! `https://NODE.agents.weir.internal:PORT`, the name its certificate is
//! issued for, which [`AgentNames`] resolves to HOST: the certificate is
//! checked against the node's name, never the address. `http://` URLs
//! (tests) are used as they are.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, PoisonError, RwLock},
};

use reqwest::{
    StatusCode, Url,
    dns::{Addrs, Name, Resolve, Resolving},
    header,
};
use tokio::sync::Notify;

use super::{
    discovery::{AgentEndpoint, agent_server_name},
    flows::FlowSource,
    hub::Fetched,
    sync::Fetch,
};
use crate::api::wire::ContributionJson;

/// Agents' server names to their addresses: the client's resolver.
#[derive(Debug, Default)]
pub struct AgentNames(RwLock<HashMap<String, String>>);

impl Resolve for AgentNames {
    fn resolve(&self, name: Name) -> Resolving {
        let host = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name.as_str())
            .cloned()
            .unwrap_or_else(|| name.as_str().to_owned());
        Box::pin(async move {
            // The connector sets the URL's port.
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Reads agents with `client`, which must resolve names through the
/// [`AgentNames`] given here (`ClientBuilder::dns_resolver`).
#[derive(Clone, Debug)]
pub struct HttpFetch {
    client: reqwest::Client,
    names: Arc<AgentNames>,
}

impl HttpFetch {
    /// Read agents with `client`, whose resolver is `names`.
    #[must_use]
    pub fn new(client: reqwest::Client, names: Arc<AgentNames>) -> Self {
        Self { client, names }
    }

    /// How the relay's `/api/flows` reaches `agent`: as the sync does.
    ///
    /// # Errors
    /// The agent's URL does not parse or has no host.
    pub fn flow_source(&self, agent: &AgentEndpoint) -> Result<FlowSource, String> {
        Ok(FlowSource {
            node: agent.node.clone(),
            client: self.client.clone(),
            base: self.base(agent)?,
        })
    }

    /// The base URL to ask `agent` at.
    fn base(&self, agent: &AgentEndpoint) -> Result<Url, String> {
        let mut url =
            Url::parse(&agent.url).map_err(|e| format!("bad agent URL {}: {e}", agent.url))?;
        if url.scheme() == "https" {
            let host = url
                .host_str()
                .ok_or_else(|| format!("agent URL {} has no host", agent.url))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let name = agent_server_name(&agent.node);
            self.names
                .0
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(name.clone(), host);
            url.set_host(Some(&name))
                .map_err(|e| format!("cannot ask {name}: {e}"))?;
        }
        Ok(url)
    }
}

fn describe(error: &reqwest::Error) -> String {
    crate::error_chain::chain(error)
}

impl Fetch for HttpFetch {
    async fn contribution(
        &self,
        agent: &AgentEndpoint,
        etag: Option<&str>,
    ) -> Result<Fetched, String> {
        let url = self
            .base(agent)?
            .join("/api/v1/contribution")
            .map_err(|e| e.to_string())?;
        let mut request = self.client.get(url);
        if let Some(etag) = etag {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        let response = request.send().await.map_err(|e| describe(&e))?;
        match response.status() {
            StatusCode::NOT_MODIFIED => Ok(Fetched::NotModified),
            StatusCode::OK => {
                let etag = response
                    .headers()
                    .get(header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = response.bytes().await.map_err(|e| describe(&e))?;
                let contribution: ContributionJson = serde_json::from_slice(&body)
                    .map_err(|e| format!("the contribution does not read: {e}"))?;
                Ok(Fetched::Changed {
                    etag,
                    contribution: Box::new(contribution),
                })
            }
            status => {
                let body = response.text().await.unwrap_or_default();
                Err(format!(
                    "contribution: {status}: {}",
                    crate::api::error::shorten(body.trim())
                ))
            }
        }
    }

    async fn watch(&self, agent: &AgentEndpoint, changed: Arc<Notify>) -> Result<(), String> {
        let url = self
            .base(agent)?
            .join("/api/events")
            .map_err(|e| e.to_string())?;
        let mut response = self
            .client
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| describe(&e))?;
        let mut line = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
            for &byte in chunk.iter() {
                if byte == b'\n' {
                    if line.strip_suffix(b"\r").unwrap_or(&line) == b"event: graph" {
                        changed.notify_one();
                    }
                    line.clear();
                } else if line.len() < 64 {
                    // Only short lines matter: `event: NAME`.
                    line.push(byte);
                }
            }
        }
        Ok(())
    }
}
