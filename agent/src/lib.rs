//! The weir agent and command-line tool.
//!
//! One binary, `weir`, with subcommands: `agent` (the per-node daemon:
//! datapath loader, aggregator, enforcer, HTTP API), `observe` (a flow log
//! client), `export`/`verify`/`status` (learning), `policy`/`mode`
//! (enforcement), and `lab` (a Kubernetes node in a box, made of network
//! namespaces: the `weir-lab` crate). The commands that talk to an agent
//! or a cluster live in `cmd/` (one module each, over one HTTP client and
//! one output module), `agent` in `daemon`; `cli.rs` only dispatches.
//! Domain modules (`learn`, `enforce`, `resolve`, ...) never import `cmd`.
// One exception, with a SAFETY comment: registering the ring buffer's fd
// with tokio (daemon/datapath.rs).
#![deny(unsafe_code)]

pub mod aggregator;
pub mod api;
pub mod cli;
pub mod cmd;
pub mod daemon;
pub mod enforce;
pub mod error;
pub mod flow;
pub mod health;
pub mod learn;
pub mod metrics;
pub mod netdev;
pub mod resolve;
pub mod sockets;
pub mod store;
pub mod telemetry;
pub mod tracker;
pub mod web;
