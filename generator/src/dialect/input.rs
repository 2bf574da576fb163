//! The learner's egress to DNS names, as the dialects read it.
//!
//! Mirrors the learner's output type field for field until the learner
//! emits it (then these become re-exports of it).

use std::{collections::BTreeMap, net::IpAddr};

use crate::model::{Protocol, WorkloadRef};

/// When and how much traffic went to one address of a name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddressSeen {
    /// First packet, Unix ns (0: unknown).
    pub first_seen: u64,
    /// Last packet, Unix ns.
    pub last_seen: u64,
    /// Connections opened.
    pub connections: u64,
}

/// Egress of one workload to one DNS name, as learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FqdnEgress {
    /// The workload's namespace.
    pub namespace: String,
    /// The workload.
    pub workload: WorkloadRef,
    /// The name of the standard NetworkPolicy holding the rule.
    pub policy: String,
    /// The workload's pod selector (`matchLabels`), as in that policy.
    pub pod_selector: BTreeMap<String, String>,
    /// The DNS name: lowercase, without the root's trailing dot.
    pub name: String,
    /// The ports the workload's traffic to the name went to, sorted.
    pub ports: Vec<(Protocol, u16)>,
    /// The addresses that traffic went to under the name, in the window.
    pub addresses: BTreeMap<IpAddr, AddressSeen>,
    /// All of it together.
    pub seen: AddressSeen,
}
