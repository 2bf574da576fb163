//! Names the lab gives to kernel objects. Interface names are limited to
//! 15 bytes (`IFNAMSIZ` - 1), so long names are replaced by hashes; netns
//! names are files under `/run/netns`.

use std::{fmt, str::FromStr};

/// Longest interface name the kernel accepts.
pub const IFNAME_MAX: usize = 15;

/// Directory where `ip netns add` bind-mounts named network namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// FNV-1a, 64 bit: tiny, stable across releases and platforms (unlike
/// `DefaultHasher`), which is all deterministic naming needs.
#[must_use]
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The alphabet Kubernetes uses for generated name parts
/// (`k8s.io/apimachinery/pkg/util/rand.SafeEncodeString`): no vowels, no
/// look-alikes, so generated names never spell words.
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `len` characters of the Kubernetes-safe alphabet derived from `seed`.
#[must_use]
pub fn safe_encode(seed: &[u8], len: usize) -> String {
    let mut hash = fnv1a(seed);
    let base = SAFE_ALPHABET.len() as u64;
    let mut out = String::with_capacity(len);
    for round in 0..len {
        if hash == 0 {
            // Re-seed so long outputs keep varying.
            hash = fnv1a(&[seed, &round.to_le_bytes()].concat());
        }
        let index = usize::try_from(hash % base).unwrap_or(0);
        out.push(char::from(SAFE_ALPHABET[index]));
        hash /= base;
    }
    out
}

/// A validated lab name: lower-case letters, digits and `-`, 1 to 32
/// characters, starting and ending with a letter or digit. It appears in
/// netns, bridge and nftables table names, hence the strict alphabet.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabName(String);

/// A lab name that breaks the rules of [`LabName`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid lab name {0:?}: use 1-32 lower-case letters, digits or '-', starting and ending with a letter or digit"
)]
pub struct InvalidLabName(pub String);

impl FromStr for LabName {
    type Err = InvalidLabName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = (1..=32).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidLabName(s.to_owned()))
        }
    }
}

impl fmt::Display for LabName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl LabName {
    /// The name as a string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The bridge: `weir-<lab>` when it fits in 15 bytes, else
    /// `weir-` and a hash.
    #[must_use]
    pub fn bridge(&self) -> String {
        let readable = format!("weir-{}", self.0);
        if readable.len() <= IFNAME_MAX {
            readable
        } else {
            format!("weir-{:010x}", fnv1a(self.0.as_bytes()) >> 24)
        }
    }

    /// The bridge of node `node` of a multi-node lab, whose first node
    /// has [`Self::bridge`]: `weir-<lab>.<node>` when it fits in 15 bytes
    /// (a lab name has no `.`, so no lab's bridge is named so), else
    /// `weir-` and a hash of both.
    #[must_use]
    pub fn node_bridge(&self, node: &str) -> String {
        let readable = format!("weir-{}.{node}", self.0);
        if readable.len() <= IFNAME_MAX {
            readable
        } else {
            let hash = fnv1a(format!("{}/{node}", self.0).as_bytes()) >> 24;
            format!("weir-{hash:010x}")
        }
    }

    /// The alias every bridge of this lab carries, so `down` finds them
    /// all without the state file.
    #[must_use]
    pub fn bridge_alias(&self) -> String {
        format!("weir lab {}", self.0)
    }

    /// Prefix of every netns of this lab. `_` never occurs in Kubernetes
    /// names nor lab names, so the prefix cannot match another lab's.
    #[must_use]
    pub fn netns_prefix(&self) -> String {
        format!("weir-{}_", self.0)
    }

    /// Netns of a pod: `weir-<lab>_<namespace>_<pod>` (hashed if too long for
    /// a file name).
    #[must_use]
    pub fn pod_netns(&self, namespace: &str, pod: &str) -> String {
        self.bounded_netns(&format!("{namespace}_{pod}"))
    }

    /// Netns of an external host: `weir-<lab>_<host>` (two parts where pods
    /// have three, so they never collide).
    #[must_use]
    pub fn external_netns(&self, host: &str) -> String {
        self.bounded_netns(host)
    }

    fn bounded_netns(&self, rest: &str) -> String {
        let name = format!("{}{rest}", self.netns_prefix());
        if name.len() <= 200 {
            name
        } else {
            format!("{}h{:016x}", self.netns_prefix(), fnv1a(rest.as_bytes()))
        }
    }

    /// Host side of a pod's veth, as a CNI names it: `veth` and 11 hex digits
    /// of a hash of lab, namespace and pod (Calico: `cali` + 11 hex).
    #[must_use]
    pub fn host_veth(&self, namespace: &str, pod: &str) -> String {
        let key = format!("{}/{namespace}/{pod}", self.0);
        format!("veth{:011x}", fnv1a(key.as_bytes()) & 0xfff_ffff_ffff)
    }

    /// The root-namespace nftables table that keeps lab traffic off the
    /// uplink.
    #[must_use]
    pub fn nft_table(&self) -> String {
        format!("weir_lab_{}", self.0.replace('-', "_"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_names_are_validated() {
        for good in ["default", "t1", "a-b-c", "x0123456789012345678901234567890"] {
            assert!(good.parse::<LabName>().is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "a/b", &"x".repeat(33)] {
            assert!(bad.parse::<LabName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn interface_names_fit_ifnamsiz() {
        for lab in ["default", "t", &"x".repeat(32), "it-123456-abcdef"] {
            let lab: LabName = lab.parse().unwrap();
            assert!(lab.bridge().len() <= IFNAME_MAX, "{}", lab.bridge());
            let veth = lab.host_veth("some-very-long-namespace", &"p".repeat(200));
            assert_eq!(veth.len(), IFNAME_MAX, "{veth}");
            assert!(lab.pod_netns("ns", &"p".repeat(253)).len() <= 255);
        }
        assert_eq!(
            "default".parse::<LabName>().unwrap().bridge(),
            "weir-default"
        );
    }

    #[test]
    fn names_are_deterministic_and_distinct() {
        let a: LabName = "a".parse().unwrap();
        let b: LabName = "b".parse().unwrap();
        assert_eq!(a.host_veth("ns", "p"), a.host_veth("ns", "p"));
        assert_ne!(a.host_veth("ns", "p"), b.host_veth("ns", "p"));
        assert_ne!(a.host_veth("ns", "p1"), a.host_veth("ns", "p2"));
        assert_eq!(safe_encode(b"x", 10), safe_encode(b"x", 10));
        assert_eq!(safe_encode(b"x", 10).len(), 10);
    }
}
