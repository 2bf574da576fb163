//! The capabilities the agent needs, checked before it touches anything.
//!
//! The DaemonSet drops every capability and adds back the few the agent
//! uses. One that a runtime, an admission policy or an edited chart leaves
//! out would otherwise surface later and obliquely: bpf() and
//! perf-related checks pass on CAP_SYS_ADMIN alone, so a missing CAP_BPF
//! goes unnoticed until SYS_ADMIN is gone too, and a missing SYS_ADMIN
//! silently stops pods' sockets from being read. Checking the effective
//! set at start names the missing capability instead.

use std::collections::HashSet;

use caps::{CapSet, Capability};

/// A capability the agent needs, and what for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Need {
    /// The capability.
    pub capability: Capability,
    /// What the agent does with it.
    pub purpose: &'static str,
}

/// The capabilities of the datapath, always needed.
const DATAPATH: [Need; 3] = [
    Need {
        capability: Capability::CAP_BPF,
        purpose: "bpf(): load the eBPF programs, create and pin their maps",
    },
    Need {
        capability: Capability::CAP_NET_ADMIN,
        purpose: "attach TC programs to pods' veths",
    },
    Need {
        capability: Capability::CAP_PERFMON,
        purpose: "the verifier accepts the probes only from a perfmon-capable loader",
    },
];

/// Entering pods' network namespaces (`--require-netns`).
const NETNS: Need = Need {
    capability: Capability::CAP_SYS_ADMIN,
    purpose: "setns() into pods' network namespaces under /run/netns (--require-netns)",
};

/// What the agent needs, given whether it must read pods' sockets.
#[must_use]
pub fn needed(require_netns: bool) -> Vec<Need> {
    let mut needs = DATAPATH.to_vec();
    if require_netns {
        needs.push(NETNS);
    }
    needs
}

/// The capabilities a process with `effective` lacks among `needs`.
#[must_use]
pub fn missing(needs: &[Need], effective: &HashSet<Capability>) -> Vec<Need> {
    needs
        .iter()
        .filter(|n| !effective.contains(&n.capability))
        .copied()
        .collect()
}

/// Why the agent cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// capget() failed.
    #[error("cannot read this process's capabilities")]
    Read(#[source] caps::errors::CapsError),
    /// Some needed capabilities are not in the effective set.
    #[error("missing {}", describe(.0))]
    Missing(Vec<Need>),
}

fn describe(missing: &[Need]) -> String {
    let each: Vec<String> = missing
        .iter()
        .map(|n| format!("capability {} ({})", n.capability, n.purpose))
        .collect();
    each.join(", ")
}

/// Check this process's effective set against `needs`.
///
/// # Errors
/// [`Error::Missing`] naming every capability missing, or [`Error::Read`].
pub fn check(needs: &[Need]) -> Result<(), Error> {
    let effective = caps::read(None, CapSet::Effective).map_err(Error::Read)?;
    let missing = missing(needs, &effective);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::Missing(missing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(caps: &[Capability]) -> HashSet<Capability> {
        caps.iter().copied().collect()
    }

    #[test]
    fn each_missing_capability_is_named_with_its_purpose() {
        use Capability::{CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, CAP_SYS_ADMIN};
        let all = [CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, CAP_SYS_ADMIN];
        let cases: [(bool, &[Capability], &[Capability]); 5] = [
            (false, &all, &[]),
            (true, &all, &[]),
            // SYS_ADMIN would let bpf() through; the check still asks for BPF.
            (
                false,
                &[CAP_NET_ADMIN, CAP_PERFMON, CAP_SYS_ADMIN],
                &[CAP_BPF],
            ),
            (
                true,
                &[CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON],
                &[CAP_SYS_ADMIN],
            ),
            (
                true,
                &[CAP_PERFMON],
                &[CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN],
            ),
        ];
        for (netns, have, want) in cases {
            let got: Vec<Capability> = missing(&needed(netns), &set(have))
                .iter()
                .map(|n| n.capability)
                .collect();
            assert_eq!(got, want, "netns {netns}, having {have:?}");
        }
    }

    #[test]
    fn the_message_names_the_capability_and_what_it_is_for() {
        let message = Error::Missing(missing(&needed(true), &set(&[]))).to_string();
        assert!(
            message.starts_with("missing capability CAP_BPF (bpf(): "),
            "{message}"
        );
        assert!(
            message.contains("capability CAP_SYS_ADMIN (setns() into pods' network namespaces"),
            "{message}"
        );
    }
}
