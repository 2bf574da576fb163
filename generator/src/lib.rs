//! weir's pure core: the flow graph model, workload identity, NetworkPolicy
//! semantics and the learner that proposes minimal policies.
//!
//! This crate is to the weir agent what `kube-core` is to `kube`: types and
//! algorithms with no I/O, no async runtime and no kernel access. The agent
//! feeds it observed flows and Kubernetes objects; it answers with a
//! deterministic flow graph, verdicts with explanations, and
//! NetworkPolicies.
//!
//! ```
//! use weir_generator::model::{NodeId, Protocol, WorkloadKind, WorkloadRef};
//!
//! let web = WorkloadRef::new("shop", WorkloadKind::Deployment, "frontend");
//! assert_eq!(NodeId::Workload(web).to_string(), "shop/frontend");
//! assert_eq!("udp".parse::<Protocol>().unwrap(), Protocol::Udp);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cluster;
pub mod datapath;
pub mod dialect;
pub mod eval;
pub mod identity;
pub mod manifest;
pub mod model;
pub mod names;
pub mod selector;
pub mod synth;
