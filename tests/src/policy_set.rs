//! Large sets of small NetworkPolicies, as users apply them.

use std::fmt::Write as _;

/// `n` NetworkPolicies in `namespace`, each letting pods labelled
/// `app: client` reach the pods labelled `app: {app}` on its own TCP port
/// (`first_port + i`, wrapping within 10000-59999): about 300 bytes of
/// YAML each, one POLICY_EXACT rule each on a node running those pods.
#[must_use]
pub fn small_policies(namespace: &str, app: &str, n: usize, first_port: usize) -> String {
    let mut yaml = String::with_capacity(n * 320);
    for i in 0..n {
        let port = 10_000 + (first_port + i) % 50_000;
        let _ = write!(
            yaml,
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
             metadata: {{name: allow-{i:05}, namespace: {namespace}}}\n\
             spec:\n  podSelector: {{matchLabels: {{app: {app}}}}}\n  policyTypes: [Ingress]\n\
             \x20 ingress:\n  - from:\n    - podSelector: {{matchLabels: {{app: client}}}}\n\
             \x20   ports: [{{port: {port}, protocol: TCP}}]\n"
        );
    }
    yaml
}
