//! `weir relay`: the whole cluster in one view.
//!
//! The agents stay the source of truth: each serves its node's graph by
//! side (`GET /api/v1/contribution`) and its flows on a listener that only
//! clients signed by the relay CA reach (mutual TLS). The relay discovers
//! the agents, keeps the last contribution of each (checkpointed, so a
//! restart or a drained node loses nothing), merges them without counting
//! a cross-node connection twice, and serves the agent's API and UI over
//! the merged view, every answer saying how much of the cluster it covers.
//!
//! | module | what |
//! |---|---|
//! | [`config`] | `weir relay` arguments |
//! | [`discovery`] | which agents exist: a static list, or the cluster's EndpointSlices |
//! | [`merge`] | the contributions merged into one view, each connection counted once (pure) |
//! | [`stream`] | the agents' flow streams merged in time order, each connection once (pure) |

pub mod config;
pub mod discovery;
pub mod merge;
pub mod stream;

#[cfg(test)]
mod stream_tests;
