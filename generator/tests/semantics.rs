//! NetworkPolicy semantics from the Kubernetes documentation, as truth
//! tables in the style of cyclonus: namespaces x, y, z with pods a, b, c
//! and one external address `ext`, every (source, destination) pair on
//! TCP/UDP 80/81. Each scenario states its full expected table as "allow
//! all, then deny ..., then allow ..." over endpoint and port patterns; a
//! failure prints the tables that differ, with the verdicts of the
//! mismatching cells.
//!
//! Patterns (comma-separated lists allowed):
//! endpoints: `*` (everything), `pods`, `ext`, `x/*`, `*/a`, `x/a`;
//! ports: `*`, `tcp`, `udp`, `80`, `tcp/80`.

mod support;

use std::{collections::BTreeSet, fmt::Write as _};

use support::{endpoints, policies, render, xyz_cluster};
use weir_generator::{
    cluster::Cluster,
    eval::{Endpoint, Evaluator, Flow, PolicySet},
    model::Protocol,
};

const ENDPOINTS: [&str; 10] = [
    "x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c", "ext",
];
const PORTS: [(Protocol, u16); 4] = [
    (Protocol::Tcp, 80),
    (Protocol::Tcp, 81),
    (Protocol::Udp, 80),
    (Protocol::Udp, 81),
];

/// A cell of the truth table: (source, destination, port) indices.
type Cell = (usize, usize, usize);

/// The expected truth table: the set of allowed cells.
#[derive(Clone)]
struct Expect(BTreeSet<Cell>);

fn endpoint_pattern(pattern: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in pattern.split(',').map(str::trim) {
        for (i, name) in ENDPOINTS.iter().enumerate() {
            let hit = match part {
                "*" => true,
                "pods" => *name != "ext",
                "ext" => *name == "ext",
                _ => match part.split_once('/') {
                    Some(("*", pod)) => name.ends_with(&format!("/{pod}")),
                    Some((ns, "*")) => name.starts_with(&format!("{ns}/")),
                    Some(_) => *name == part,
                    None => panic!("bad endpoint pattern {part:?}"),
                },
            };
            if hit {
                out.push(i);
            }
        }
    }
    assert!(
        !out.is_empty(),
        "endpoint pattern {pattern:?} matches nothing"
    );
    out
}

fn port_pattern(pattern: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in pattern.split(',').map(str::trim) {
        for (i, (protocol, port)) in PORTS.iter().enumerate() {
            let proto = protocol.as_str().to_ascii_lowercase();
            let hit = match part.split_once('/') {
                Some((p, n)) => p == proto && n == port.to_string(),
                None => part == "*" || part == proto || part == port.to_string(),
            };
            if hit {
                out.push(i);
            }
        }
    }
    assert!(!out.is_empty(), "port pattern {pattern:?} matches nothing");
    out
}

impl Expect {
    fn all() -> Self {
        let mut cells = BTreeSet::new();
        for s in 0..ENDPOINTS.len() {
            for d in 0..ENDPOINTS.len() {
                for p in 0..PORTS.len() {
                    cells.insert((s, d, p));
                }
            }
        }
        Self(cells)
    }

    fn set(mut self, from: &str, to: &str, ports: &str, allow: bool) -> Self {
        for s in endpoint_pattern(from) {
            for d in endpoint_pattern(to) {
                for p in port_pattern(ports) {
                    if allow {
                        self.0.insert((s, d, p));
                    } else {
                        self.0.remove(&(s, d, p));
                    }
                }
            }
        }
        self
    }

    fn deny(self, from: &str, to: &str, ports: &str) -> Self {
        self.set(from, to, ports, false)
    }

    fn allow(self, from: &str, to: &str, ports: &str) -> Self {
        self.set(from, to, ports, true)
    }
}

/// An explanation to check: (from, to, `proto/port` or `icmp`, egress, ingress)
/// with the verdicts rendered by `support::render`.
type Check<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str);

fn endpoint<'c>(cluster: &'c Cluster, name: &str) -> Endpoint<'c> {
    if let Some(ip) = name.strip_prefix("ext:") {
        return Endpoint::External(ip.parse().unwrap_or_else(|e| panic!("{name}: {e}")));
    }
    endpoints(cluster)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no endpoint {name}"))
        .1
}

fn protocol_port(s: &str) -> (Protocol, u16) {
    match s.split_once('/') {
        Some((p, n)) => (
            p.parse().unwrap_or_else(|e| panic!("{s}: {e}")),
            n.parse().unwrap_or_else(|e| panic!("{s}: {e}")),
        ),
        None => (s.parse().unwrap_or_else(|e| panic!("{s}: {e}")), 0),
    }
}

/// Evaluate every cell, compare with `expect`, check the explanations.
fn run(yaml: &str, expect: &Expect, checks: &[Check<'_>]) {
    let cluster = xyz_cluster();
    let set = PolicySet::new(policies(yaml)).unwrap_or_else(|e| panic!("{e}"));
    let eval = Evaluator::new(&set, &cluster);
    let eps = endpoints(&cluster);
    assert_eq!(
        eps.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ENDPOINTS
    );

    let mut report = String::new();
    for (p, (protocol, port)) in PORTS.iter().enumerate() {
        let mut grid = String::new();
        let mut wrong = Vec::new();
        write!(grid, "{protocol}/{port:<4}").expect("writing to a String cannot fail");
        for name in ENDPOINTS {
            write!(grid, " {name:>3}").expect("writing to a String cannot fail");
        }
        grid.push('\n');
        for (s, (sname, source)) in eps.iter().enumerate() {
            write!(grid, "{sname:<8}").expect("writing to a String cannot fail");
            for (d, (_, destination)) in eps.iter().enumerate() {
                let flow = Flow {
                    source: *source,
                    destination: *destination,
                    protocol: *protocol,
                    port: *port,
                };
                let verdict = eval.evaluate(&flow);
                assert_eq!(
                    eval.allows(&flow),
                    verdict.allowed(),
                    "allows() and evaluate() disagree"
                );
                let want = expect.0.contains(&(s, d, p));
                let got = verdict.allowed();
                let mark = match (want, got) {
                    (true, true) => ".",
                    (false, false) => "X",
                    (false, true) => "+",
                    (true, false) => "-",
                };
                write!(grid, " {mark:>3}").expect("writing to a String cannot fail");
                if want != got {
                    wrong.push(format!(
                        "  {sname} -> {} {protocol}/{port}: expected {}, egress {}; ingress {}",
                        ENDPOINTS[d],
                        if want { "allowed" } else { "denied" },
                        render(&verdict.egress),
                        render(&verdict.ingress)
                    ));
                }
            }
            grid.push('\n');
        }
        if !wrong.is_empty() {
            write!(report, "\n{grid}{}\n", wrong.join("\n"))
                .expect("writing to a String cannot fail");
        }
    }
    assert!(
        report.is_empty(),
        "truth table differs (rows: source, columns: destination; \
         '.' allowed, 'X' denied as expected, '+' allowed but expected denied, \
         '-' denied but expected allowed):\n{report}"
    );

    for (from, to, port, egress, ingress) in checks {
        let (protocol, port) = protocol_port(port);
        let verdict = eval.evaluate(&Flow {
            source: endpoint(&cluster, from),
            destination: endpoint(&cluster, to),
            protocol,
            port,
        });
        assert_eq!(
            (render(&verdict.egress), render(&verdict.ingress)),
            ((*egress).to_owned(), (*ingress).to_owned()),
            "explanation of {from} -> {to} {protocol}/{port}"
        );
    }
}

const NOT_ISOLATED: &str = "not-isolated";
const NOT_APPLICABLE: &str = "not-applicable";

// --- Isolation and default deny ------------------------------------------

#[test]
fn no_policies_allow_everything() {
    run(
        "",
        &Expect::all(),
        &[("x/a", "ext", "tcp/80", NOT_ISOLATED, NOT_APPLICABLE)],
    );
}

#[test]
fn default_deny_ingress() {
    run(
        "metadata: {namespace: x, name: deny-ingress}
spec: {podSelector: {}, policyTypes: [Ingress]}",
        &Expect::all().deny("*", "x/*", "*"),
        &[
            (
                "x/b",
                "x/a",
                "tcp/80",
                NOT_ISOLATED,
                "denied (default-deny) by x/deny-ingress",
            ),
            (
                "ext",
                "x/a",
                "icmp",
                NOT_APPLICABLE,
                "denied (default-deny) by x/deny-ingress",
            ),
            ("x/a", "y/a", "udp/81", NOT_ISOLATED, NOT_ISOLATED),
        ],
    );
}

#[test]
fn default_deny_egress() {
    run(
        "metadata: {namespace: x, name: deny-egress}
spec: {podSelector: {}, policyTypes: [Egress]}",
        &Expect::all().deny("x/*", "*", "*"),
        &[
            (
                "x/a",
                "ext",
                "tcp/80",
                "denied (default-deny) by x/deny-egress",
                NOT_APPLICABLE,
            ),
            ("ext", "x/a", "tcp/80", NOT_APPLICABLE, NOT_ISOLATED),
        ],
    );
}

#[test]
fn default_deny_both_directions() {
    run(
        "metadata: {namespace: y, name: deny-all}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}",
        &Expect::all().deny("*", "y/*", "*").deny("y/*", "*", "*"),
        &[(
            "y/a",
            "y/b",
            "tcp/80",
            "denied (default-deny) by y/deny-all",
            "denied (default-deny) by y/deny-all",
        )],
    );
}

#[test]
fn policy_types_default_to_ingress() {
    // No policyTypes, no rules: Ingress only.
    run(
        "metadata: {namespace: x, name: empty}
spec: {podSelector: {}}",
        &Expect::all().deny("*", "x/*", "*"),
        &[("x/a", "y/a", "tcp/80", NOT_ISOLATED, NOT_ISOLATED)],
    );
}

#[test]
fn policy_types_default_to_egress_when_egress_rules_exist() {
    // No policyTypes but egress rules: Ingress and Egress, so x/a receives
    // nothing (no ingress rules) and sends only to namespace y.
    run(
        "metadata: {namespace: x, name: egress-to-y}
spec:
  podSelector: {matchLabels: {pod: a}}
  egress: [{to: [{namespaceSelector: {matchLabels: {ns: y}}}]}]",
        &Expect::all()
            .deny("*", "x/a", "*")
            .deny("x/a", "*", "*")
            .allow("x/a", "y/*", "*"),
        &[
            (
                "x/a",
                "y/c",
                "udp/81",
                "allowed by x/egress-to-y spec.egress[0]",
                NOT_ISOLATED,
            ),
            (
                "x/a",
                "z/c",
                "udp/81",
                "denied (peer-not-allowed) by x/egress-to-y",
                NOT_ISOLATED,
            ),
            (
                "x/b",
                "x/a",
                "tcp/80",
                NOT_ISOLATED,
                "denied (default-deny) by x/egress-to-y",
            ),
        ],
    );
}

#[test]
fn empty_egress_list_does_not_default_egress() {
    // `egress: []` is no egress section for the API server's defaulting
    // (len(spec.Egress) == 0): the policy isolates for Ingress only.
    run(
        "metadata: {namespace: x, name: empty-egress}
spec: {podSelector: {}, egress: []}",
        &Expect::all().deny("*", "x/*", "*"),
        &[],
    );
}

#[test]
fn explicit_egress_type_with_empty_list_denies_egress() {
    run(
        "metadata: {namespace: z, name: no-egress}
spec: {podSelector: {matchLabels: {pod: c}}, policyTypes: [Egress], egress: []}",
        &Expect::all().deny("z/c", "*", "*"),
        &[],
    );
}

#[test]
fn allow_all_ingress_rule_overrides_default_deny() {
    run(
        "metadata: {namespace: x, name: deny-ingress}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
metadata: {namespace: x, name: allow-all}
spec: {podSelector: {}, ingress: [{}]}",
        &Expect::all(),
        &[
            (
                "ext",
                "x/c",
                "udp/80",
                NOT_APPLICABLE,
                "allowed by x/allow-all spec.ingress[0]",
            ),
            (
                "y/a",
                "x/c",
                "icmp",
                NOT_ISOLATED,
                "allowed by x/allow-all spec.ingress[0]",
            ),
        ],
    );
}

#[test]
fn allow_all_egress_rule() {
    run(
        "metadata: {namespace: x, name: deny-all}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
---
metadata: {namespace: x, name: allow-egress}
spec: {podSelector: {}, policyTypes: [Egress], egress: [{}]}",
        &Expect::all().deny("*", "x/*", "*"),
        &[],
    );
}

#[test]
fn policies_select_pods_of_their_own_namespace_only() {
    run(
        "metadata: {namespace: y, name: isolate-a}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress, Egress]}",
        &Expect::all().deny("*", "y/a", "*").deny("y/a", "*", "*"),
        &[("x/b", "x/a", "tcp/80", NOT_ISOLATED, NOT_ISOLATED)],
    );
}

#[test]
fn a_policy_selecting_no_pod_changes_nothing() {
    run(
        "metadata: {namespace: x, name: nobody}
spec: {podSelector: {matchLabels: {pod: d}}, policyTypes: [Ingress, Egress]}",
        &Expect::all(),
        &[],
    );
}

// --- Peers -----------------------------------------------------------------

#[test]
fn pod_selector_peer_is_the_policys_namespace() {
    run(
        "metadata: {namespace: x, name: b-to-a}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]",
        &Expect::all().deny("*", "x/a", "*").allow("x/b", "x/a", "*"),
        &[
            (
                "x/b",
                "x/a",
                "udp/81",
                NOT_ISOLATED,
                "allowed by x/b-to-a spec.ingress[0]",
            ),
            (
                "y/b",
                "x/a",
                "udp/81",
                NOT_ISOLATED,
                "denied (peer-not-allowed) by x/b-to-a",
            ),
        ],
    );
}

#[test]
fn namespace_selector_peer_is_every_pod_of_the_namespaces() {
    run(
        "metadata: {namespace: x, name: from-y}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]",
        &Expect::all().deny("*", "x/a", "*").allow("y/*", "x/a", "*"),
        &[],
    );
}

#[test]
fn namespace_and_pod_selector_in_one_peer_are_anded() {
    run(
        "metadata: {namespace: x, name: from-y-b}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: y}}
      podSelector: {matchLabels: {pod: b}}",
        &Expect::all().deny("*", "x/a", "*").allow("y/b", "x/a", "*"),
        &[],
    );
}

#[test]
fn separate_peers_are_ored() {
    run(
        "metadata: {namespace: x, name: from-y-or-b}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: y}}
    - podSelector: {matchLabels: {pod: b}}",
        &Expect::all()
            .deny("*", "x/a", "*")
            .allow("y/*,x/b", "x/a", "*"),
        &[],
    );
}

#[test]
fn empty_namespace_selector_is_every_pod_but_nothing_outside() {
    run(
        "metadata: {namespace: x, name: from-all-pods}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{namespaceSelector: {}}]}]",
        &Expect::all()
            .deny("*", "x/a", "*")
            .allow("pods", "x/a", "*"),
        &[(
            "ext",
            "x/a",
            "tcp/80",
            NOT_APPLICABLE,
            "denied (peer-not-allowed) by x/from-all-pods",
        )],
    );
}

#[test]
fn empty_pod_selector_peer_is_every_pod_of_the_namespace() {
    run(
        "metadata: {namespace: z, name: from-z}
spec:
  podSelector: {}
  ingress: [{from: [{podSelector: {}}]}]",
        &Expect::all().deny("*", "z/*", "*").allow("z/*", "z/*", "*"),
        &[],
    );
}

#[test]
fn empty_from_and_ports_lists_mean_everything() {
    run(
        "metadata: {namespace: x, name: empty-lists}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress, Egress]
  ingress: [{from: [], ports: []}]
  egress: [{to: [], ports: [{protocol: UDP, port: 81}]}]",
        &Expect::all()
            .deny("x/a", "*", "*")
            .allow("x/a", "*", "udp/81"),
        &[(
            "x/a",
            "ext",
            "tcp/80",
            "denied (port-not-allowed) by x/empty-lists",
            NOT_APPLICABLE,
        )],
    );
}

#[test]
fn match_expressions_in_and_not_in() {
    run(
        "metadata: {namespace: x, name: expressions}
spec:
  podSelector: {matchExpressions: [{key: pod, operator: In, values: [a, b]}]}
  ingress:
  - from:
    - namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: [x]}]}
      podSelector: {matchExpressions: [{key: pod, operator: NotIn, values: [c]}]}",
        &Expect::all()
            .deny("*", "x/a,x/b", "*")
            .allow("y/a,y/b,z/a,z/b", "x/a,x/b", "*"),
        &[],
    );
}

#[test]
fn match_expressions_exists_and_does_not_exist() {
    // Every pod has a `pod` label, so the DoesNotExist peer matches no pod;
    // the namespace name label is present on every namespace.
    run(
        "metadata: {namespace: y, name: exists}
spec:
  podSelector: {matchExpressions: [{key: pod, operator: Exists}]}
  ingress:
  - from:
    - podSelector: {matchExpressions: [{key: pod, operator: DoesNotExist}]}
    - namespaceSelector:
        matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [z]}]",
        &Expect::all().deny("*", "y/*", "*").allow("z/*", "y/*", "*"),
        &[(
            "y/a",
            "y/b",
            "tcp/81",
            NOT_ISOLATED,
            "denied (peer-not-allowed) by y/exists",
        )],
    );
}

#[test]
fn namespace_and_pod_expressions_with_ports() {
    run(
        "metadata: {namespace: z, name: to-c}
spec:
  podSelector: {matchLabels: {pod: c}}
  ingress:
  - from:
    - namespaceSelector: {matchExpressions: [{key: ns, operator: In, values: [x, y]}]}
      podSelector: {matchExpressions: [{key: pod, operator: NotIn, values: [c]}]}
    ports: [{port: serve-80-tcp}, {port: 81, protocol: UDP}]",
        &Expect::all()
            .deny("*", "z/c", "*")
            .allow("x/a,x/b,y/a,y/b", "z/c", "tcp/80,udp/81"),
        &[],
    );
}

// --- Ports -------------------------------------------------------------------

#[test]
fn port_by_number_defaults_to_tcp() {
    run(
        "metadata: {namespace: x, name: tcp-80}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{ports: [{port: 80}]}]",
        &Expect::all()
            .deny("*", "x/a", "*")
            .allow("*", "x/a", "tcp/80"),
        &[
            (
                "y/a",
                "x/a",
                "udp/80",
                NOT_ISOLATED,
                "denied (port-not-allowed) by x/tcp-80",
            ),
            // ICMP has no port: only rules without ports allow it.
            (
                "y/a",
                "x/a",
                "icmp",
                NOT_ISOLATED,
                "denied (port-not-allowed) by x/tcp-80",
            ),
            (
                "y/a",
                "x/a",
                "sctp/80",
                NOT_ISOLATED,
                "denied (port-not-allowed) by x/tcp-80",
            ),
        ],
    );
}

#[test]
fn protocol_without_port_is_every_port() {
    run(
        "metadata: {namespace: x, name: udp}
spec:
  podSelector: {}
  ingress: [{ports: [{protocol: UDP}]}]",
        &Expect::all().deny("*", "x/*", "*").allow("*", "x/*", "udp"),
        &[(
            "ext",
            "x/b",
            "udp/5353",
            NOT_APPLICABLE,
            "allowed by x/udp spec.ingress[0]",
        )],
    );
}

#[test]
fn named_ingress_port() {
    run(
        "metadata: {namespace: x, name: named}
spec:
  podSelector: {}
  ingress: [{ports: [{port: serve-81-udp, protocol: UDP}]}]",
        &Expect::all()
            .deny("*", "x/*", "*")
            .allow("*", "x/*", "udp/81"),
        &[],
    );
}

#[test]
fn named_port_with_another_protocol_matches_nothing() {
    // `serve-80-udp` is a UDP port; the rule's protocol defaults to TCP.
    run(
        "metadata: {namespace: x, name: wrong-protocol}
spec:
  podSelector: {}
  ingress: [{ports: [{port: serve-80-udp}]}]",
        &Expect::all().deny("*", "x/*", "*"),
        &[(
            "y/a",
            "x/a",
            "udp/80",
            NOT_ISOLATED,
            "denied (port-not-allowed) by x/wrong-protocol",
        )],
    );
}

#[test]
fn named_egress_port_resolves_at_the_destination_pod() {
    // Outside the cluster there is no container port to name: nothing matches.
    run(
        "metadata: {namespace: x, name: named-egress}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress: [{ports: [{port: serve-80-tcp}]}]",
        &Expect::all()
            .deny("x/*", "*", "*")
            .allow("x/*", "pods", "tcp/80"),
        &[(
            "x/a",
            "ext",
            "tcp/80",
            "denied (port-not-allowed) by x/named-egress",
            NOT_APPLICABLE,
        )],
    );
}

#[test]
fn end_port_ranges() {
    run(
        "metadata: {namespace: x, name: ranges}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{ports: [{port: 79, endPort: 80}, {protocol: UDP, port: 81, endPort: 90}]}]",
        &Expect::all()
            .deny("*", "x/a", "*")
            .allow("*", "x/a", "tcp/80,udp/81"),
        &[
            (
                "z/c",
                "x/a",
                "udp/90",
                NOT_ISOLATED,
                "allowed by x/ranges spec.ingress[0]",
            ),
            (
                "z/c",
                "x/a",
                "udp/91",
                NOT_ISOLATED,
                "denied (port-not-allowed) by x/ranges",
            ),
        ],
    );
}

// --- ipBlock -------------------------------------------------------------------

#[test]
fn ip_block_matches_the_outside() {
    run(
        "metadata: {namespace: x, name: from-docs-net}
spec:
  podSelector: {}
  ingress: [{from: [{ipBlock: {cidr: 192.0.2.0/24}}]}]",
        &Expect::all().deny("*", "x/*", "*").allow("ext", "x/*", "*"),
        &[(
            "ext:198.51.100.1",
            "x/a",
            "tcp/80",
            NOT_APPLICABLE,
            "denied (peer-not-allowed) by x/from-docs-net",
        )],
    );
}

#[test]
fn ip_block_except() {
    run(
        "metadata: {namespace: x, name: except}
spec:
  podSelector: {}
  ingress: [{from: [{ipBlock: {cidr: 192.0.2.0/24, except: [192.0.2.8/29]}}]}]",
        &Expect::all().deny("*", "x/*", "*"),
        &[
            (
                "ext",
                "x/a",
                "tcp/80",
                NOT_APPLICABLE,
                "denied (peer-not-allowed) by x/except",
            ),
            (
                "ext:192.0.2.16",
                "x/a",
                "tcp/80",
                NOT_APPLICABLE,
                "allowed by x/except spec.ingress[0]",
            ),
        ],
    );
}

#[test]
fn ip_block_matches_pod_addresses() {
    // 10.0.0.0/8 holds every pod IP (x: 10.0.1.x, y: 10.0.2.x, z: 10.0.3.x):
    // an ipBlock matches any address, a pod's too (Calico, Antrea and the
    // upstream e2e suite).
    run(
        "metadata: {namespace: x, name: pod-cidr}
spec:
  podSelector: {}
  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}}]}]",
        &Expect::all()
            .deny("*", "x/*", "*")
            .allow("pods", "x/*", "*"),
        &[
            (
                "y/a",
                "x/a",
                "tcp/80",
                NOT_ISOLATED,
                "allowed by x/pod-cidr spec.ingress[0]",
            ),
            (
                "ext",
                "x/a",
                "tcp/80",
                NOT_APPLICABLE,
                "denied (peer-not-allowed) by x/pod-cidr",
            ),
        ],
    );
}

#[test]
fn egress_to_ip_block_reaches_pods_and_the_outside() {
    run(
        "metadata: {namespace: x, name: to-anywhere}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress: [{to: [{ipBlock: {cidr: 0.0.0.0/0}}]}]",
        &Expect::all(),
        &[(
            "x/a",
            "y/b",
            "tcp/80",
            "allowed by x/to-anywhere spec.egress[0]",
            NOT_ISOLATED,
        )],
    );
}

#[test]
fn egress_to_a_server_in_a_cidr_block() {
    // Upstream e2e: "should allow egress access to server in CIDR block"
    // (the server pod's /32).
    run(
        "metadata: {namespace: x, name: to-server}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress: [{to: [{ipBlock: {cidr: 10.0.2.11/32}}]}]",
        &Expect::all().deny("x/a", "*", "*").allow("x/a", "y/b", "*"),
        &[(
            "x/a",
            "y/c",
            "tcp/80",
            "denied (peer-not-allowed) by x/to-server",
            NOT_ISOLATED,
        )],
    );
}

#[test]
fn egress_except_clause_on_pod_addresses() {
    // Upstream e2e: "should enforce except clause while egress access to
    // server in CIDR block": y's pods are 10.0.2.0/24, y/b is excepted.
    run(
        "metadata: {namespace: x, name: to-y-but-b}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress: [{to: [{ipBlock: {cidr: 10.0.2.0/24, except: [10.0.2.11/32]}}]}]",
        &Expect::all()
            .deny("x/a", "*", "*")
            .allow("x/a", "y/a, y/c", "*"),
        &[(
            "x/a",
            "y/b",
            "tcp/80",
            "denied (peer-not-allowed) by x/to-y-but-b",
            NOT_ISOLATED,
        )],
    );
}

#[test]
fn an_excepted_pod_address_allowed_by_another_peer_or_policy() {
    // Upstream e2e: "should ensure an IP overlapping both IPBlock.CIDR and
    // IPBlock.Except is allowed": the except only takes the address out of
    // that ipBlock; another policy's block (y/b) or the same rule's
    // selector (z/b) still matches it.
    run(
        "metadata: {namespace: x, name: cidr-except}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {cidr: 10.0.0.0/16, except: [10.0.2.11/32, 10.0.3.0/24]}
    - {namespaceSelector: {matchLabels: {ns: z}}, podSelector: {matchLabels: {pod: b}}}
---
metadata: {namespace: x, name: the-except}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress: [{to: [{ipBlock: {cidr: 10.0.2.11/32}}]}]",
        &Expect::all().deny("x/a", "ext, z/a, z/c", "*"),
        &[
            (
                "x/a",
                "y/b",
                "tcp/80",
                "allowed by x/the-except spec.egress[0]",
                NOT_ISOLATED,
            ),
            (
                "x/a",
                "z/b",
                "tcp/80",
                "allowed by x/cidr-except spec.egress[0]",
                NOT_ISOLATED,
            ),
            (
                "x/a",
                "z/a",
                "tcp/80",
                "denied (peer-not-allowed) by x/cidr-except, x/the-except",
                NOT_ISOLATED,
            ),
        ],
    );
}

#[test]
fn ip_block_and_selectors_mixed_on_ingress() {
    // Upstream e2e mixes ipBlock with selectors: x/a takes TCP 80 from
    // z's pods by selector and from y's by block, except y/a and y/b
    // (10.0.2.10/31).
    run(
        "metadata: {namespace: x, name: mixed}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: z}}
    - ipBlock: {cidr: 10.0.2.0/24, except: [10.0.2.10/31]}
    ports: [{port: 80}]",
        &Expect::all()
            .deny("*", "x/a", "*")
            .allow("z/*, y/c", "x/a", "tcp/80"),
        &[
            (
                "y/c",
                "x/a",
                "tcp/81",
                NOT_ISOLATED,
                "denied (port-not-allowed) by x/mixed",
            ),
            (
                "y/b",
                "x/a",
                "tcp/80",
                NOT_ISOLATED,
                "denied (peer-not-allowed) by x/mixed",
            ),
        ],
    );
}

#[test]
fn egress_named_ports_need_a_selector_not_an_ip_block() {
    // weir's documented restriction, fail-closed: an egress rule's named
    // port resolves on a destination pod a selector matched; y/a matched
    // by its address only gets the numbered port.
    run(
        "metadata: {namespace: x, name: named}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 10.0.2.10/32}}, {namespaceSelector: {matchLabels: {ns: z}}}]
    ports: [{port: serve-80-tcp}, {port: 81, protocol: UDP}]",
        &Expect::all()
            .deny("x/a", "*", "*")
            .allow("x/a", "z/*", "tcp/80, udp/81")
            .allow("x/a", "y/a", "udp/81"),
        &[(
            "x/a",
            "y/a",
            "tcp/80",
            "denied (port-not-allowed) by x/named",
            NOT_ISOLATED,
        )],
    );
}

// --- Unions and both ends ----------------------------------------------------

#[test]
fn policies_are_a_union() {
    run(
        "metadata: {namespace: x, name: from-b-tcp-80}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}], ports: [{port: 80}]}]
---
metadata: {namespace: x, name: from-y-udp-81}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: 81, protocol: UDP}]}]",
        &Expect::all()
            .deny("*", "x/a", "*")
            .allow("x/b", "x/a", "tcp/80")
            .allow("y/*", "x/a", "udp/81"),
        &[
            (
                "x/b",
                "x/a",
                "udp/81",
                NOT_ISOLATED,
                "denied (port-not-allowed) by x/from-b-tcp-80, x/from-y-udp-81",
            ),
            (
                "z/a",
                "x/a",
                "udp/81",
                NOT_ISOLATED,
                "denied (peer-not-allowed) by x/from-b-tcp-80, x/from-y-udp-81",
            ),
        ],
    );
}

#[test]
fn every_allowing_rule_is_listed() {
    run(
        "metadata: {namespace: x, name: allow-all}
spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{}]}
---
metadata: {namespace: x, name: from-b}
spec:
  podSelector: {}
  ingress:
  - from: [{podSelector: {matchLabels: {pod: c}}}]
  - from: [{podSelector: {matchLabels: {pod: b}}}]
    ports: [{port: 80}, {port: 81}]",
        &Expect::all()
            .deny("*", "x/b,x/c", "*")
            .allow("x/c", "x/b,x/c", "*")
            .allow("x/b", "x/b,x/c", "tcp"),
        &[(
            "x/b",
            "x/a",
            "tcp/81",
            NOT_ISOLATED,
            "allowed by x/allow-all spec.ingress[0], x/from-b spec.ingress[1]",
        )],
    );
}

#[test]
fn both_ends_must_allow() {
    run(
        "metadata: {namespace: x, name: deny-egress}
spec: {podSelector: {}, policyTypes: [Egress]}
---
metadata: {namespace: x, name: a-to-y-b}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: b}}}]
    ports: [{port: 80}]
---
metadata: {namespace: y, name: deny-ingress}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
metadata: {namespace: y, name: b-from-pods}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress: [{from: [{namespaceSelector: {}}], ports: [{port: 80}]}]",
        &Expect::all()
            .deny("x/*", "*", "*")
            .deny("*", "y/*", "*")
            .allow("x/a,y/*,z/*", "y/b", "tcp/80"),
        &[
            (
                "x/a",
                "y/b",
                "tcp/80",
                "allowed by x/a-to-y-b spec.egress[0]",
                "allowed by y/b-from-pods spec.ingress[0]",
            ),
            (
                "x/b",
                "y/b",
                "tcp/80",
                "denied (default-deny) by x/deny-egress",
                "allowed by y/b-from-pods spec.ingress[0]",
            ),
            (
                "x/a",
                "y/a",
                "tcp/80",
                "denied (peer-not-allowed) by x/a-to-y-b, x/deny-egress",
                "denied (default-deny) by y/deny-ingress",
            ),
        ],
    );
}
