//! The weir agent and command-line tool: one binary, `weir`.
//!
//! Where each command lives: `weir agent` is [`daemon`], which wires the
//! probes, the aggregator, the enforcer and the HTTP API ([`api`]) into one
//! process. `weir observe`, `graph`, `export`, `verify`, `status`, `policy`
//! and `mode` are clients in [`cmd`], one module each over one HTTP client
//! ([`cmd::client`]) and one output module ([`cmd::output`]). `weir lab` is
//! the `weir-lab` crate. [`cli`] only parses and dispatches.
//!
//! Three words name one thing each:
//! - **datapath**: the eBPF programs and maps (the `weir-ebpf` crate).
//!   `daemon/probes.rs` loads and attaches them and reads their flows;
//!   `weir_generator::datapath` compiles policies into their rule maps;
//!   [`enforce`] writes those maps.
//! - **store**: [`graph_store`] is what was learned, on disk (`weir.redb`);
//!   what the user asked to enforce is `enforce.json`
//!   ([`enforce::state_file`]).
//! - **flows**: [`flow`] is one endpoint's view of a connection as decoded
//!   from the kernel; [`learn::flow_log`] reads recorded flow logs offline;
//!   `api::flows` serves `GET /api/flows`, whose records are
//!   [`api::wire::FlowJson`].
//!
//! Above the domain, a module is named after what it serves: `api::learn`
//! and `cmd::learn` serve [`learn`] over HTTP and on the command line,
//! `api::record` turns `aggregator::record`'s records into JSON.
//!
//! The module rule: a module imports only from lower layers of this table,
//! or from its own layer without an import circle; [`cmd`] reads the API
//! through [`api::wire`] only; below the commands nothing names `clap` or
//! `reqwest` (but `telemetry`'s `--log-format` values, and `tls`'s client
//! for the relay, built where its certificates are read). `tests/layers.rs`
//! checks it on the source.
//!
//! | layer | module | what |
//! |---|---|---|
//! | 0 | `dns` | DNS answers pods received: parsed, and each pod's names of addresses over time |
//! | 0 | `error_chain` | one printer for error chains, for logs |
//! | 0 | `flow` | a flow as decoded from the kernel: one endpoint's view of a connection |
//! | 0 | `metrics` | the Prometheus metrics |
//! | 0 | `telemetry` | logging set-up |
//! | 0 | `timestamp` | Unix nanoseconds as RFC 3339, and back |
//! | 1 | `tracker` | ring-buffer events and flow-table sweeps into observations (pure) |
//! | 1 | `aggregator` | observations into the flow graph and the recent flow records |
//! | 1 | `resolve` | IP to pod: the lab, inventory and Kubernetes sources |
//! | 1 | `netdev` | a pod's host-side interface, on any CNI |
//! | 1 | `sockets` | connections open before the probes attached |
//! | 1 | `learn` | suggestions, verification and readiness from a flow graph |
//! | 1 | `enforce` | the enforcer: policies and modes compiled into the datapath's maps |
//! | 1 | `graph_store` | the learned flow graph on disk |
//! | 1 | `pending` | the would-have-dropped queue: denied edges, decisions, the rule that would allow each |
//! | 1 | `tls` | mutual TLS between the relay and the agents: certificates, configurations, the relay's client |
//! | 1 | `audit` | the append-only log of enforcement decisions (`audit.redb`) |
//! | 1 | `guard` | the break-glass guard's bookkeeping: windows after a flip to enforce (pure) |
//! | 1 | `promote` | automatic promotion: observe -> audit -> enforce when ready and quiet (pure) |
//! | 1 | `health` | what the agent lost and when, for `/healthz` and the UI |
//! | 1 | `api::wire` | the JSON the API serves, shared by its server and its clients |
//! | 2 | `api` | the HTTP API, the UI and `/metrics` |
//! | 3 | `daemon` | `weir agent` |
//! | 3 | `cmd` | the commands that talk to an agent or a cluster |
//! | 3 | `relay` | `weir relay`: every node's agent merged into one view |
//! | 4 | `cli` | argument parsing and dispatch |
// One exception, with a SAFETY comment: registering the ring buffer's fd
// with tokio (daemon/probes.rs).
#![deny(unsafe_code)]

pub mod aggregator;
pub mod api;
pub mod audit;
pub mod cli;
pub mod cmd;
pub mod daemon;
pub mod dns;
pub mod enforce;
pub mod error_chain;
pub mod flow;
pub mod graph_store;
pub mod guard;
pub mod health;
pub mod learn;
pub mod metrics;
pub mod netdev;
pub mod pending;
pub mod promote;
pub mod relay;
pub mod resolve;
pub mod sockets;
pub mod telemetry;
pub mod timestamp;
pub mod tls;
pub mod tracker;
