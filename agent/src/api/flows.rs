//! `GET /api/flows?namespace=&pod=&port=&protocol=&verdict=&last=&follow=&after=&both_sides=`:
//! recent flow records, filtered, as a JSON array; with
//! `follow=true` an NDJSON stream of the last `last` records and then every
//! new one, until the client goes away or the agent stops. `after=SEQ`
//! keeps only records numbered above SEQ (`weir.seq`): a follower that lost
//! its stream resumes where it was. `both_sides` is for a relay (which
//! shows a cross-node connection from its initiator's side unless it is
//! given); an agent shows every record it has either way.
//!
//! The same filter serves a relay on the records its agents send
//! ([`FlowFields`] is what it reads of a record).
//!
//! A follower that falls behind is not waited for (ingest never blocks on
//! HTTP clients): it gets a Hubble-style `lost_events` line saying how many
//! records it missed, and goes on from the oldest one still buffered.

use std::{convert::Infallible, str::FromStr, sync::Arc};

use axum::{
    Json,
    body::Body,
    extract::{Query, State, rejection::QueryRejection},
    http::header,
    response::{IntoResponse, Response},
};
use futures_util::stream;
use serde::Deserialize;
use tokio::sync::broadcast::{self, error::RecvError};
use weir_generator::model::Protocol;

use super::{
    AppState,
    error::ApiError,
    query::{self, bad},
    wire::{FlowJson, L4Json, LostEventsJson, LostJson},
};
use crate::{
    aggregator::{FlowRecord, SharedRecord},
    flow::Verdict,
};

/// Records returned when `last` is not given.
pub const DEFAULT_LAST: usize = 100;

/// The query string as sent: every value is checked by [`FlowQuery::parse`]
/// so that errors name the parameter.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFlowQuery {
    namespace: Option<String>,
    pod: Option<String>,
    port: Option<String>,
    protocol: Option<String>,
    last: Option<String>,
    follow: Option<String>,
    verdict: Option<String>,
    after: Option<String>,
    both_sides: Option<String>,
}

/// A checked `/api/flows` query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowQuery {
    /// Which records.
    pub filter: FlowFilter,
    /// How many of the recent ones.
    pub last: usize,
    /// Then stream new ones.
    pub follow: bool,
    /// Through a relay, both nodes' reports of a cross-node connection.
    pub both_sides: bool,
}

/// Which records a client wants; every given field must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowFilter {
    /// Either end's pod is in this namespace.
    pub namespace: Option<String>,
    /// Either end is this pod: (namespace, name).
    pub pod: Option<(String, String)>,
    /// Either end's port.
    pub port: Option<u16>,
    /// Transport protocol.
    pub protocol: Option<Protocol>,
    /// The datapath's verdict.
    pub verdict: Option<Verdict>,
    /// Only records numbered above this (`weir.seq`).
    pub after: Option<u64>,
}

/// What a filter reads of a flow record: the agent's [`FlowRecord`], or the
/// [`FlowJson`] a relay gets from its agents.
pub trait FlowFields {
    /// The initiator's and the responder's pod, as (namespace, name).
    fn pods(&self) -> [Option<(&str, &str)>; 2];
    /// Transport protocol.
    fn protocol(&self) -> Protocol;
    /// Source and destination port, for protocols with ports.
    fn ports(&self) -> Option<(u16, u16)>;
    /// The datapath's verdict (`None`: not one weir knows).
    fn verdict(&self) -> Option<Verdict>;
    /// The record's number in its agent's stream (0: none).
    fn seq(&self) -> u64;
}

impl FlowFields for FlowRecord {
    fn pods(&self) -> [Option<(&str, &str)>; 2] {
        [self.source_pod.as_deref(), self.destination_pod.as_deref()]
            .map(|p| p.map(|p| (p.namespace.as_str(), p.name.as_str())))
    }

    fn protocol(&self) -> Protocol {
        self.protocol
    }

    fn ports(&self) -> Option<(u16, u16)> {
        self.protocol
            .has_ports()
            .then(|| (self.source.port(), self.destination.port()))
    }

    fn verdict(&self) -> Option<Verdict> {
        Some(self.verdict)
    }

    fn seq(&self) -> u64 {
        self.seq
    }
}

impl FlowFields for FlowJson {
    fn pods(&self) -> [Option<(&str, &str)>; 2] {
        [&self.source, &self.destination].map(|e| e.namespace.as_deref().zip(e.pod_name.as_deref()))
    }

    fn protocol(&self) -> Protocol {
        match self.l4 {
            L4Json::Tcp(_) => Protocol::Tcp,
            L4Json::Udp(_) => Protocol::Udp,
            L4Json::Sctp(_) => Protocol::Sctp,
            L4Json::Icmp(_) => Protocol::Icmp,
            L4Json::IcmpV6(_) => Protocol::IcmpV6,
        }
    }

    fn ports(&self) -> Option<(u16, u16)> {
        match &self.l4 {
            L4Json::Tcp(t) => Some((t.source_port, t.destination_port)),
            L4Json::Udp(p) | L4Json::Sctp(p) => Some((p.source_port, p.destination_port)),
            L4Json::Icmp(_) | L4Json::IcmpV6(_) => None,
        }
    }

    fn verdict(&self) -> Option<Verdict> {
        self.verdict.parse().ok()
    }

    fn seq(&self) -> u64 {
        self.weir.seq.unwrap_or(0)
    }
}

impl FlowQuery {
    /// Check every parameter.
    ///
    /// # Errors
    /// [`ApiError::BadParameter`] naming the first bad one.
    pub fn parse(raw: RawFlowQuery) -> Result<Self, ApiError> {
        let namespace = match raw.namespace {
            Some(ns) if ns.is_empty() => return Err(bad("namespace", "empty".to_owned())),
            ns => ns,
        };
        let pod = raw
            .pod
            .map(|p| match p.split_once('/') {
                Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                    Ok((ns.to_owned(), name.to_owned()))
                }
                _ => Err(bad("pod", format!("expected NAMESPACE/POD, got {p:?}"))),
            })
            .transpose()?;
        // Checked in this order: the first bad one is named.
        let port = query::port(raw.port)?;
        let protocol = query::optional("protocol", raw.protocol)?;
        let last = raw
            .last
            .map(|n| {
                usize::from_str(&n).map_err(|_| {
                    bad(
                        "last",
                        format!("expected a non-negative integer, got {n:?}"),
                    )
                })
            })
            .transpose()?
            .unwrap_or(DEFAULT_LAST);
        let verdict = query::optional("verdict", raw.verdict)?;
        let follow = flag("follow", raw.follow)?;
        let after = raw
            .after
            .map(|n| {
                u64::from_str(&n).map_err(|_| {
                    bad(
                        "after",
                        format!("expected a record number (weir.seq), got {n:?}"),
                    )
                })
            })
            .transpose()?;
        let both_sides = flag("both_sides", raw.both_sides)?;
        Ok(Self {
            filter: FlowFilter {
                namespace,
                pod,
                port,
                protocol,
                verdict,
                after,
            },
            last,
            follow,
            both_sides,
        })
    }
}

/// A boolean parameter: absent or `false`/`0`, or `true`/`1`/empty.
fn flag(name: &'static str, value: Option<String>) -> Result<bool, ApiError> {
    match value.as_deref() {
        None | Some("false" | "0") => Ok(false),
        Some("true" | "1" | "") => Ok(true),
        Some(other) => Err(bad(name, format!("expected true or false, got {other:?}"))),
    }
}

impl FlowFilter {
    /// Whether a record passes.
    #[must_use]
    pub fn matches(&self, r: &impl FlowFields) -> bool {
        let pods = r.pods();
        if let Some(ns) = &self.namespace
            && !pods.iter().flatten().any(|(n, _)| n == ns)
        {
            return false;
        }
        if let Some((ns, name)) = &self.pod
            && !pods.iter().flatten().any(|(n, p)| n == ns && p == name)
        {
            return false;
        }
        if let Some(port) = self.port
            && !r.ports().is_some_and(|(s, d)| s == port || d == port)
        {
            return false;
        }
        if self.verdict.is_some_and(|v| Some(v) != r.verdict()) {
            return false;
        }
        if self.after.is_some_and(|after| r.seq() <= after) {
            return false;
        }
        self.protocol.is_none_or(|p| p == r.protocol())
    }
}

/// The handler.
pub(crate) async fn flows(
    State(state): State<AppState>,
    query: Result<Query<RawFlowQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(raw) = query.map_err(|e| ApiError::BadQuery {
        reason: e.body_text(),
    })?;
    let query = FlowQuery::parse(raw)?;
    let filter = query.filter;
    if !query.follow {
        let records = state.aggregator.recent(query.last, |r| filter.matches(r));
        let body: Vec<FlowJson> = records.iter().map(|r| FlowJson::from(r.as_ref())).collect();
        return Ok(Json(body).into_response());
    }
    let (backlog, receiver) = state.aggregator.follow(query.last, |r| filter.matches(r));
    let follow = Follow {
        backlog: backlog.into_iter(),
        receiver,
        filter: Arc::new(filter),
    };
    let body = Body::from_stream(stream::unfold(follow, |mut f| async move {
        let line = f.next_line().await?;
        Some((Ok::<_, Infallible>(line), f))
    }));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// A follower's state: the backlog, then the live records.
struct Follow {
    backlog: std::vec::IntoIter<SharedRecord>,
    receiver: Option<broadcast::Receiver<SharedRecord>>,
    filter: Arc<FlowFilter>,
}

impl Follow {
    /// The next NDJSON line, or `None` when the stream ends.
    async fn next_line(&mut self) -> Option<String> {
        if let Some(record) = self.backlog.next() {
            return Some(ndjson(&FlowJson::from(record.as_ref())));
        }
        let receiver = self.receiver.as_mut()?;
        loop {
            match receiver.recv().await {
                Ok(record) if self.filter.matches(record.as_ref()) => {
                    return Some(ndjson(&FlowJson::from(record.as_ref())));
                }
                Ok(_) => {}
                Err(RecvError::Lagged(missed)) => {
                    return Some(ndjson(&LostJson {
                        lost_events: LostEventsJson {
                            num_events_lost: missed,
                            source: "WEIR_FOLLOW_BUFFER".to_owned(),
                        },
                    }));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

pub(crate) fn ndjson(value: &impl serde::Serialize) -> String {
    // Serializing these plain structs cannot fail; an empty object keeps
    // the stream well-formed if it ever did.
    let mut line = serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned());
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Query pairs, and the parameter they should be rejected for.
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);

    /// The query as axum gives it to the handler.
    fn raw(pairs: &[(&str, &str)]) -> RawFlowQuery {
        let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let uri: axum::http::Uri = format!("/?{}", query.join("&")).parse().unwrap();
        Query::<RawFlowQuery>::try_from_uri(&uri).unwrap().0
    }

    #[test]
    fn parameters_are_checked_and_named() {
        let cases: &[Case<'_>] = &[
            (
                &[("pod", "shop/web-1"), ("port", "80"), ("protocol", "tcp")],
                None,
            ),
            (&[("follow", "true"), ("last", "0")], None),
            (&[("pod", "web-1")], Some("pod")),
            (&[("pod", "shop/")], Some("pod")),
            (&[("port", "70000")], Some("port")),
            (&[("protocol", "gre")], Some("protocol")),
            (&[("last", "-1")], Some("last")),
            (&[("follow", "yes")], Some("follow")),
            (&[("namespace", "")], Some("namespace")),
            (&[("after", "12"), ("both_sides", "true")], None),
            (&[("after", "-3")], Some("after")),
            (&[("both_sides", "both")], Some("both_sides")),
        ];
        for (pairs, bad) in cases {
            match (FlowQuery::parse(raw(pairs)), bad) {
                (Ok(_), None) => {}
                (Err(ApiError::BadParameter { name, .. }), Some(bad)) => {
                    assert_eq!(name, *bad, "{pairs:?}");
                }
                (other, _) => panic!("{pairs:?}: {other:?}"),
            }
        }
        let q = FlowQuery::parse(raw(&[])).unwrap();
        assert_eq!((q.last, q.follow), (DEFAULT_LAST, false));
    }

    #[test]
    fn the_first_bad_parameter_in_checking_order_is_named() {
        for (pairs, first) in [
            (&[("verdict", "x"), ("last", "x")], "last"),
            (&[("protocol", "x"), ("port", "x")], "port"),
            (&[("follow", "x"), ("verdict", "x")], "verdict"),
            (&[("last", "x"), ("protocol", "x")], "protocol"),
        ] {
            match FlowQuery::parse(raw(pairs)) {
                Err(ApiError::BadParameter { name, .. }) => assert_eq!(name, first, "{pairs:?}"),
                other => panic!("{pairs:?}: {other:?}"),
            }
        }
    }
}
