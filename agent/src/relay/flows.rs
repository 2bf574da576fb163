//! The relay's `GET /api/flows`: the agents' records merged
//! ([`super::stream`]), with the agent's parameters and filter
//! ([`crate::api::flows`]).
//!
//! Without `follow`, every agent is asked for its last `last` matching
//! records at once; the answer is the last `last` of them all, in time
//! order, each connection once. With `follow`, that comes first, then each
//! agent's stream is followed from the record after the last one it gave
//! (`after=`), so nothing falls between the two or comes twice; a broken
//! stream is resumed the same way, with backoff. An agent that does not
//! answer is left out (the answer's coverage says which).

use std::{collections::VecDeque, convert::Infallible, sync::Arc, time::Duration};

use axum::{
    Json,
    body::Body,
    extract::{Query, rejection::QueryRejection},
    http::header,
    response::{IntoResponse, Response},
};
use futures_util::{future::join_all, stream};
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
    time::{Instant, sleep_until},
};

use super::{
    discovery::AgentSet,
    http::HttpFetch,
    raw_flow::{RawFlow, StreamLine},
    stream::{MergeStats, Merger, Options, StreamRecord as _},
};
use crate::{
    api::{
        error::ApiError,
        flows::{FlowQuery, RawFlowQuery, ndjson},
        query::bad,
        wire::{FlowJson, LostJson},
    },
    metrics::Metrics,
};

/// How many records an agent is asked for when a stream resumes: its whole
/// ring, as far as a relay is concerned.
const RESUME_LAST: usize = 100_000;
/// The longest wait before reconnecting to an agent.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Records and notes waiting between the agents' readers and the merger.
const CHANNEL: usize = 4096;

/// An agent's API as the relay reaches it: `base` is its relay listener
/// (`https://<node>.agents.weir.internal:4244`), `client` the relay's
/// mutual-TLS client for it.
#[derive(Clone, Debug)]
pub struct FlowSource {
    /// The agent's node.
    pub node: String,
    /// The client that reaches it.
    pub client: reqwest::Client,
    /// Its base URL.
    pub base: reqwest::Url,
}

/// The agents whose flows the relay merges: those discovery knows now,
/// each reached as the sync reaches it.
#[derive(Clone, Debug)]
pub struct FlowAgents {
    fetch: Arc<HttpFetch>,
    agents: watch::Receiver<AgentSet>,
}

impl FlowAgents {
    /// Over discovery's agents, through `fetch`'s client.
    #[must_use]
    pub fn new(fetch: Arc<HttpFetch>, agents: watch::Receiver<AgentSet>) -> Self {
        Self { fetch, agents }
    }

    /// Every agent discovery knows now (a terminating one too: its
    /// records until it goes are the node's last).
    #[must_use]
    pub fn sources(&self) -> Vec<FlowSource> {
        let agents = self.agents.borrow();
        agents
            .agents
            .values()
            .filter_map(|agent| match self.fetch.flow_source(agent) {
                Ok(source) => Some(source),
                Err(error) => {
                    tracing::warn!(node = %agent.node, error, "cannot read the agent's flows");
                    None
                }
            })
            .collect()
    }
}

/// The handler, over the agents the relay reads now; what the merge sets
/// apart is counted in `metrics`.
///
/// # Errors
/// A bad parameter, named; `after` (an agent's record number means nothing
/// across agents).
pub async fn flows(
    sources: Vec<FlowSource>,
    metrics: Arc<Metrics>,
    query: Result<Query<RawFlowQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(raw) = query.map_err(|e| ApiError::BadQuery {
        reason: e.body_text(),
    })?;
    let query = FlowQuery::parse(raw)?;
    if query.filter.after.is_some() {
        return Err(bad(
            "after",
            "a record number belongs to one agent: ask that agent, not the relay",
        ));
    }
    let options = Options {
        both_sides: query.both_sides,
        ..Options::default()
    };
    let recent = recent(&sources, &query, &options, &metrics).await;
    if !query.follow {
        return Ok(Json(recent.records).into_response());
    }
    let pending: VecDeque<Vec<u8>> = recent
        .records
        .iter()
        .map(|r| ndjson(r).into_bytes())
        .collect();
    let (sender, receiver) = mpsc::channel(CHANNEL);
    let mut readers = JoinSet::new();
    for source in sources {
        let after = recent
            .after
            .iter()
            .find(|(node, _)| *node == source.node)
            .and_then(|(_, seq)| *seq);
        readers.spawn(follow_agent(source, query.clone(), after, sender.clone()));
    }
    drop(sender);
    let follower = Follower {
        receiver,
        _readers: readers,
        merger: Merger::new(options),
        pending,
        metrics,
        counted: MergeStats::default(),
    };
    let body = stream::unfold(follower, |mut f| async move {
        let line = f.next_line().await?;
        Some((Ok::<_, Infallible>(line), f))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response())
}

/// The agents' last records, merged.
struct Recent {
    /// The last `last` of them all, in order.
    records: Vec<FlowJson>,
    /// Per agent that answered, the highest record number it gave.
    after: Vec<(String, Option<u64>)>,
}

/// Ask every agent for its last matching records, at once.
async fn recent(
    sources: &[FlowSource],
    query: &FlowQuery,
    options: &Options,
    metrics: &Metrics,
) -> Recent {
    let answers = join_all(sources.iter().map(|source| async move {
        let url = agent_url(source, query, None, false, query.last);
        let answer = async {
            source
                .client
                .get(url)
                .send()
                .await?
                .error_for_status()?
                .json::<Vec<FlowJson>>()
                .await
        };
        match answer.await {
            Ok(records) => Some((source.node.clone(), records)),
            Err(e) => {
                tracing::warn!(node = %source.node, error = %crate::error_chain::chain(&e), "cannot read the agent's flows");
                None
            }
        }
    }))
    .await;
    // All of them sorted (no bound on the buffer), each connection once
    // among the agents that answered.
    let mut merger = Merger::new(Options {
        max_buffered: usize::MAX,
        max_delay: Duration::MAX,
        ..options.clone()
    });
    let answered: Vec<_> = answers.into_iter().flatten().collect();
    for (node, _) in &answered {
        merger.connect(node);
    }
    let now = std::time::Instant::now();
    let mut records = Vec::new();
    let mut after = Vec::new();
    for (node, answer) in answered {
        let mut high = None;
        for record in answer {
            high = high.max(record.weir.seq);
            merger.push(&node, record, now, &mut records);
        }
        after.push((node, high));
    }
    merger.finish(&mut records);
    count_set_apart(metrics, MergeStats::default(), merger.stats());
    let skip = records.len().saturating_sub(query.last);
    records.drain(..skip);
    Recent { records, after }
}

/// What an agent's reader tells the merger.
#[derive(Debug)]
enum Event {
    /// The agent's stream is up.
    Up(String),
    /// A record of it, as it sent it.
    Record(String, RawFlow),
    /// The agent skipped records for this stream (it fell behind).
    Lost(String, LostJson),
    /// The stream broke; it is being resumed.
    Down(String),
}

/// Follow one agent's stream for as long as the client follows the relay:
/// resume after the last record received whenever it breaks.
async fn follow_agent(
    source: FlowSource,
    query: FlowQuery,
    mut after: Option<u64>,
    events: mpsc::Sender<Event>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let last = if after.is_some() { RESUME_LAST } else { 0 };
        let url = agent_url(&source, &query, after, true, last);
        match source
            .client
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
        {
            Ok(mut response) => {
                if events.send(Event::Up(source.node.clone())).await.is_err() {
                    return;
                }
                backoff = Duration::from_millis(100);
                let mut buffer = Vec::new();
                loop {
                    let chunk = match response.chunk().await {
                        Ok(Some(chunk)) => chunk,
                        Ok(None) => break,
                        Err(e) => {
                            tracing::info!(node = %source.node, error = %crate::error_chain::chain(&e), "the agent's flow stream broke; resuming");
                            break;
                        }
                    };
                    buffer.extend_from_slice(&chunk);
                    // Every whole line of the buffer, then what is left
                    // moved to its front once.
                    let mut start = 0;
                    while let Some(end) = buffer[start..].iter().position(|&b| b == b'\n') {
                        let line = &buffer[start..=start + end];
                        start += end + 1;
                        let Some(event) = parse_line(&source.node, line, &mut after) else {
                            continue;
                        };
                        if events.send(event).await.is_err() {
                            return;
                        }
                    }
                    buffer.drain(..start);
                }
            }
            Err(e) => {
                tracing::info!(node = %source.node, error = %crate::error_chain::chain(&e), "cannot follow the agent's flows; retrying");
            }
        }
        if events.send(Event::Down(source.node.clone())).await.is_err() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One line of an agent's stream: a record (its number noted in `after`),
/// or a note on records it skipped.
fn parse_line(node: &str, line: &[u8], after: &mut Option<u64>) -> Option<Event> {
    let line = line.trim_ascii();
    if line.is_empty() {
        return None;
    }
    match StreamLine::parse(line) {
        Ok(StreamLine::Flow(record)) => {
            if let Some(seq) = record.seq() {
                *after = Some(after.map_or(seq, |a| a.max(seq)));
            }
            Some(Event::Record(node.to_owned(), record))
        }
        Ok(StreamLine::Lost(lost)) => Some(Event::Lost(node.to_owned(), lost)),
        Err(error) => {
            tracing::warn!(
                node,
                error,
                "the agent sent a line that is not a flow record; skipped"
            );
            None
        }
    }
}

/// `source`'s `/api/flows` for `query`.
fn agent_url(
    source: &FlowSource,
    query: &FlowQuery,
    after: Option<u64>,
    follow: bool,
    last: usize,
) -> reqwest::Url {
    let mut url = source.base.clone();
    url.set_path("/api/flows");
    {
        let f = &query.filter;
        let mut q = url.query_pairs_mut();
        q.clear();
        q.append_pair("last", &last.to_string());
        if let Some(ns) = &f.namespace {
            q.append_pair("namespace", ns);
        }
        if let Some((ns, pod)) = &f.pod {
            q.append_pair("pod", &format!("{ns}/{pod}"));
        }
        if let Some(port) = f.port {
            q.append_pair("port", &port.to_string());
        }
        if let Some(protocol) = f.protocol {
            q.append_pair("protocol", protocol.as_str());
        }
        if let Some(verdict) = f.verdict {
            q.append_pair("verdict", verdict.as_str());
        }
        if let Some(after) = after {
            q.append_pair("after", &after.to_string());
        }
        if follow {
            q.append_pair("follow", "true");
        }
    }
    url
}

/// A client's merged stream: the recent records first, then what the
/// merger lets out. Dropping it (the client went away) stops the readers.
struct Follower {
    receiver: mpsc::Receiver<Event>,
    /// Aborted when dropped.
    _readers: JoinSet<()>,
    merger: Merger<RawFlow>,
    pending: VecDeque<Vec<u8>>,
    metrics: Arc<Metrics>,
    /// The merger's stats already added to `metrics`.
    counted: MergeStats,
}

/// Add what the merge set apart between `before` and `now` to `metrics`.
fn count_set_apart(metrics: &Metrics, before: MergeStats, now: MergeStats) {
    for ((outcome, was), (_, is)) in before.set_apart().into_iter().zip(now.set_apart()) {
        metrics.relay_stream_records(outcome, is.saturating_sub(was));
    }
}

impl Follower {
    /// The next NDJSON line, or `None` when every reader is gone.
    async fn next_line(&mut self) -> Option<Vec<u8>> {
        let line = self.next_merged().await;
        let stats = self.merger.stats();
        count_set_apart(&self.metrics, self.counted, stats);
        self.counted = stats;
        line
    }

    async fn next_merged(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                return Some(line);
            }
            let mut out = Vec::new();
            let due = self.merger.next_due().map(Instant::from_std);
            let event = match due {
                Some(due) => tokio::select! {
                    event = self.receiver.recv() => event,
                    () = sleep_until(due) => {
                        self.merger.flush_due(std::time::Instant::now(), &mut out);
                        self.pending.extend(out.into_iter().map(RawFlow::into_line));
                        continue;
                    }
                },
                None => self.receiver.recv().await,
            };
            let now = std::time::Instant::now();
            match event {
                Some(Event::Up(node)) => self.merger.connect(&node),
                Some(Event::Down(node)) => self.merger.disconnect(&node),
                Some(Event::Record(node, record)) => {
                    self.merger.push(&node, record, now, &mut out);
                }
                Some(Event::Lost(node, mut lost)) => {
                    lost.lost_events.source = format!("{}/{node}", lost.lost_events.source);
                    self.pending.push_back(ndjson(&lost).into_bytes());
                }
                None => {
                    self.merger.finish(&mut out);
                    self.pending.extend(out.into_iter().map(RawFlow::into_line));
                    return self.pending.pop_front();
                }
            }
            self.pending.extend(out.into_iter().map(RawFlow::into_line));
        }
    }
}
