//! weir's pure core: the flow graph model and workload identity.
//!
//! This crate is to the weir agent what `kube-core` is to `kube`: types and
//! algorithms with no I/O, no async runtime and no kernel access. The agent
//! feeds it observed flows and Kubernetes objects; it answers with a
//! deterministic flow graph (and, later, NetworkPolicies).
//!
//! ```
//! use std::collections::BTreeMap;
//! use weir_generator::model::{NodeId, Protocol, WorkloadKind, WorkloadRef};
//!
//! let web = WorkloadRef::new("shop", WorkloadKind::Deployment, "frontend");
//! assert_eq!(NodeId::Workload(web).to_string(), "shop/frontend");
//! assert_eq!("udp".parse::<Protocol>().unwrap(), Protocol::Udp);
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod identity;
pub mod model;
