//! Helpers shared by the benches: medians, number formatting, root check,
//! the pods of a bench lab.

/// Exits with a message unless running as root: the benches load eBPF
/// programs and make network namespaces, and never skip silently.
#[expect(
    clippy::print_stderr,
    reason = "the bench's refusal, before anything runs"
)]
pub fn require_root(bench: &str) {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("{bench}: needs root (CAP_BPF, CAP_NET_ADMIN, network namespaces)");
        std::process::exit(2);
    }
}

/// The median of `values` (mean of the middle two for an even count).
///
/// # Panics
///
/// If `values` is empty.
#[must_use]
pub fn median(values: &[f64]) -> f64 {
    assert!(!values.is_empty(), "median of nothing");
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        f64::midpoint(sorted[mid - 1], sorted[mid])
    } else {
        sorted[mid]
    }
}

/// `min..max` of `values`, formatted with `decimals` digits.
#[must_use]
pub fn range(values: &[f64], decimals: usize) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.decimals$}–{max:.decimals$}")
}

/// A pod of a bench lab, from `weir lab status -o json`.
#[allow(dead_code, reason = "the datapath bench has no lab")]
pub struct LabPod {
    /// Name for `ip netns exec`.
    pub netns: String,
    /// Host side of its veth pair.
    pub host_veth: String,
    /// Its IPv4 address.
    pub ip: std::net::Ipv4Addr,
}

/// The pod `name` of a lab's status.
///
/// # Panics
///
/// If the lab has no such pod, or it lacks a field.
#[allow(dead_code, reason = "the datapath bench has no lab")]
pub fn lab_pod(status: &serde_json::Value, name: &str) -> LabPod {
    let pods = status["pods"].as_array().expect("status.pods");
    let pod = pods
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no pod {name} in the lab: {status}"));
    let field = |key: &str| {
        pod[key]
            .as_str()
            .unwrap_or_else(|| panic!("pod {name} has no {key}: {pod}"))
            .to_owned()
    };
    LabPod {
        netns: field("netns"),
        host_veth: field("hostVeth"),
        ip: pod["ips"][0]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("pod {name} has no IPv4 address: {pod}")),
    }
}
