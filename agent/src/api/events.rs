//! `GET /api/events`: Server-Sent Events telling the UI when to refetch.
//!
//! - `event: graph`, data `{"version": N, "nodes": K, "edges": M}`: the
//!   graph changed (first sent on connect); changes are coalesced, at most
//!   one event per [`PERIOD`];
//! - `event: modes`, data as `GET /api/modes`: a namespace's mode changed
//!   (first sent on connect);
//! - a keep-alive comment every 15 s.
//!
//! Each stream checks the graph's version every [`PERIOD`] (one atomic
//! read; the counts are only computed when it moved) and ends when the
//! agent stops.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    response::sse::{Event, KeepAlive, Sse},
};
use futures_util::stream::{self, Stream};

use super::{
    AppState, graph,
    wire::{GraphEvent, Modes},
};

/// How often a stream looks for changes: at most two events a second.
pub const PERIOD: Duration = Duration::from_millis(500);

struct Watch {
    state: AppState,
    version: Option<u64>,
    modes: Option<Modes>,
    first: bool,
}

impl Watch {
    fn graph_event(&self) -> GraphEvent {
        let view = self.state.aggregator.view();
        let ports = graph::all_ports(&view);
        let mut nodes = view.graph.nodes();
        let mut pairs = std::collections::BTreeSet::new();
        for key in ports.keys() {
            nodes.insert(key.source.clone());
            nodes.insert(key.target.clone());
            pairs.insert((&key.source, &key.target));
        }
        GraphEvent {
            version: view.version,
            nodes: nodes.len(),
            edges: pairs.len(),
        }
    }

    /// The next events, waiting until there is one or the agent stops.
    async fn next(&mut self) -> Option<Vec<Event>> {
        loop {
            if self.state.aggregator.followers_closed() {
                return None;
            }
            if !self.first {
                tokio::time::sleep(PERIOD).await;
            }
            self.first = false;
            let mut events = Vec::new();
            let version = self.state.aggregator.changes();
            if self.version != Some(version) {
                let event = self.graph_event();
                self.version = Some(event.version);
                events.push(Event::default().event("graph").json_data(event).ok()?);
            }
            let modes = self.state.modes();
            if self.modes.as_ref() != Some(&modes) {
                events.push(Event::default().event("modes").json_data(&modes).ok()?);
                self.modes = Some(modes);
            }
            if !events.is_empty() {
                return Some(events);
            }
        }
    }
}

/// `GET /api/events`.
pub async fn events(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let watch = Watch {
        state,
        version: None,
        modes: None,
        first: true,
    };
    let stream = stream::unfold(watch, |mut watch| async move {
        let events = watch.next().await?;
        Some((stream::iter(events.into_iter().map(Ok)), watch))
    });
    Sse::new(futures_util::StreamExt::flatten(stream)).keep_alive(KeepAlive::default())
}
