//! Helpers shared by the benches: medians, number formatting, root check.

/// Exits with a message unless running as root: the benches load eBPF
/// programs and make network namespaces, and never skip silently.
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
