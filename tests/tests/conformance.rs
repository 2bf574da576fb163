//! Enforcement conformance on the real kernel: namespaces x, y, z with pods
//! a, b, c (TCP and UDP on 80 and 81) and one host outside the cluster.
//! Every scenario is applied with `weir policy apply` in enforce mode and
//! probed with real connections over the full matrix; the observed truth
//! table must equal the generator's evaluator, whose own tables for the same
//! scenarios are written out by hand in generator/tests/semantics.rs. The
//! same scenarios in audit mode drop nothing and record exactly the
//! would-drop set. A pod's traffic to itself is left out: it never crosses
//! the pod's veth, so no CNI can judge it.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    time::{Duration, SystemTime},
};

use serde_json::Value;
use weir_agent::resolve::lab::inventory;
use weir_generator::{
    cluster::Cluster,
    eval::{Endpoint, Evaluator, Flow, PolicySet},
    model::Protocol,
};
use weir_integration_tests::harness::{Agent, Lab, eventually, weir, weir_ok};
use weir_lab::{LabState, probe};

const EXTERNAL: &str = "198.51.100.20";

/// Pod addresses, fixed so that ipBlocks can name them: namespace x, y, z
/// is 10.171.1, .2, .3; pod a, b, c is .10, .11, .12.
fn pod_ip(ns: &str, pod: &str) -> String {
    let n = ["x", "y", "z"]
        .iter()
        .position(|&x| x == ns)
        .expect("x, y or z")
        + 1;
    let p = ["a", "b", "c"]
        .iter()
        .position(|&x| x == pod)
        .expect("a, b or c")
        + 10;
    format!("10.171.{n}.{p}")
}

fn lab_yaml() -> String {
    let mut yaml = String::from(
        "apiVersion: lab.weir.dev/v1alpha1\nkind: Lab\nmetadata: {name: conformance}\n\
         spec: {podCIDR: 10.171.0.0/16, serviceCIDR: 10.172.0.0/16}\n",
    );
    for ns in ["x", "y", "z"] {
        write!(
            yaml,
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}, labels: {{ns: {ns}}}}}\n"
        )
        .expect("writing to a String cannot fail");
        for pod in ["a", "b", "c"] {
            write!(
                yaml,
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: {ns}, labels: {{pod: {pod}}}}}\n\
                 spec:\n  containers:\n  - name: serve\n    image: lab\n    ports:\n\
                 \x20   - {{name: serve-80-tcp, containerPort: 80, protocol: TCP}}\n\
                 \x20   - {{name: serve-81-tcp, containerPort: 81, protocol: TCP}}\n\
                 \x20   - {{name: serve-80-udp, containerPort: 80, protocol: UDP}}\n\
                 \x20   - {{name: serve-81-udp, containerPort: 81, protocol: UDP}}\n\
                 status: {{podIP: {}}}\n",
                pod_ip(ns, pod)
            )
            .expect("writing to a String cannot fail");
        }
    }
    write!(
        yaml,
        "---\napiVersion: lab.weir.dev/v1alpha1\nkind: ExternalHost\nmetadata: {{name: ext}}\n\
         spec:\n  ips: [{EXTERNAL}]\n  ports: [{{port: 80}}, {{port: 81}}, {{port: 80, protocol: UDP}}, {{port: 81, protocol: UDP}}]\n"
    )
    .expect("writing to a String cannot fail");
    yaml
}

/// The scenarios: the policy sets of generator/tests/semantics.rs (ipBlocks
/// moved to the lab's external range and pod addresses), with the upstream
/// e2e suite's ipBlock scenarios on pod addresses.
const SCENARIOS: &[(&str, &str)] = &[
    ("no policies", ""),
    (
        "default deny ingress",
        "metadata: {namespace: x, name: deny-ingress}\nspec: {podSelector: {}, policyTypes: [Ingress]}",
    ),
    (
        "default deny egress",
        "metadata: {namespace: x, name: deny-egress}\nspec: {podSelector: {}, policyTypes: [Egress]}",
    ),
    (
        "default deny both",
        "metadata: {namespace: y, name: deny-all}\nspec: {podSelector: {}, policyTypes: [Ingress, Egress]}",
    ),
    (
        "egress type with empty list",
        "metadata: {namespace: z, name: no-egress}\nspec: {podSelector: {matchLabels: {pod: c}}, policyTypes: [Egress], egress: []}",
    ),
    (
        "allow-all ingress overrides default deny",
        "metadata: {namespace: x, name: deny-ingress}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n---\n\
         metadata: {namespace: x, name: allow-all}\nspec: {podSelector: {}, ingress: [{}]}",
    ),
    (
        "allow-all egress",
        "metadata: {namespace: x, name: deny-all}\nspec: {podSelector: {}, policyTypes: [Ingress, Egress]}\n---\n\
         metadata: {namespace: x, name: allow-egress}\nspec: {podSelector: {}, policyTypes: [Egress], egress: [{}]}",
    ),
    (
        "own namespace only",
        "metadata: {namespace: y, name: isolate-a}\nspec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress, Egress]}",
    ),
    (
        "selecting no pod",
        "metadata: {namespace: x, name: nobody}\nspec: {podSelector: {matchLabels: {pod: d}}, policyTypes: [Ingress, Egress]}",
    ),
    (
        "podSelector peer",
        "metadata: {namespace: x, name: b-to-a}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]",
    ),
    (
        "namespaceSelector peer",
        "metadata: {namespace: x, name: from-y}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]",
    ),
    (
        "namespace AND pod selector",
        "metadata: {namespace: x, name: from-y-b}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n      podSelector: {matchLabels: {pod: b}}",
    ),
    (
        "peers are ORed",
        "metadata: {namespace: x, name: from-y-or-b}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n    - podSelector: {matchLabels: {pod: b}}",
    ),
    (
        "empty namespaceSelector",
        "metadata: {namespace: x, name: from-all-pods}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{namespaceSelector: {}}]}]",
    ),
    (
        "empty podSelector peer",
        "metadata: {namespace: z, name: from-z}\nspec:\n  podSelector: {}\n  ingress: [{from: [{podSelector: {}}]}]",
    ),
    (
        "empty from and ports",
        "metadata: {namespace: x, name: empty-lists}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Ingress, Egress]\n  ingress: [{from: [], ports: []}]\n  egress: [{to: [], ports: [{protocol: UDP, port: 81}]}]",
    ),
    (
        "matchExpressions",
        "metadata: {namespace: x, name: expressions}\nspec:\n  podSelector: {matchExpressions: [{key: pod, operator: In, values: [a, b]}]}\n  ingress:\n  - from:\n    - namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: [x]}]}\n      podSelector: {matchExpressions: [{key: pod, operator: NotIn, values: [c]}]}",
    ),
    (
        "expressions with named and numbered ports",
        "metadata: {namespace: z, name: to-c}\nspec:\n  podSelector: {matchLabels: {pod: c}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchExpressions: [{key: ns, operator: In, values: [x, y]}]}\n      podSelector: {matchExpressions: [{key: pod, operator: NotIn, values: [c]}]}\n    ports: [{port: serve-80-tcp}, {port: 81, protocol: UDP}]",
    ),
    (
        "port defaults to TCP",
        "metadata: {namespace: x, name: tcp-80}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{ports: [{port: 80}]}]",
    ),
    (
        "protocol without port",
        "metadata: {namespace: x, name: udp}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{protocol: UDP}]}]",
    ),
    (
        "named port",
        "metadata: {namespace: x, name: named}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{port: serve-81-udp, protocol: UDP}]}]",
    ),
    (
        "endPort ranges",
        "metadata: {namespace: x, name: ranges}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{ports: [{port: 79, endPort: 80}, {protocol: UDP, port: 81, endPort: 90}]}]",
    ),
    (
        "ipBlock",
        "metadata: {namespace: x, name: from-docs-net}\nspec:\n  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 198.51.100.0/24}}]}]",
    ),
    (
        "ipBlock except",
        "metadata: {namespace: x, name: except}\nspec:\n  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 198.51.100.0/24, except: [198.51.100.16/28]}}]}]",
    ),
    (
        "egress to ipBlock",
        "metadata: {namespace: x, name: to-internet}\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n  egress: [{to: [{ipBlock: {cidr: 0.0.0.0/0}}]}]",
    ),
    (
        "egress to a server in a CIDR block (upstream e2e)",
        "metadata: {namespace: x, name: to-server}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress: [{to: [{ipBlock: {cidr: 10.171.2.11/32}}]}]",
    ),
    (
        "egress except clause on pod addresses (upstream e2e)",
        "metadata: {namespace: x, name: to-y-but-b}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress: [{to: [{ipBlock: {cidr: 10.171.2.0/24, except: [10.171.2.11/32]}}]}]",
    ),
    (
        "an IP in both cidr and except is allowed by another peer or policy (upstream e2e)",
        "metadata: {namespace: x, name: cidr-except}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock: {cidr: 10.171.0.0/16, except: [10.171.2.11/32, 10.171.3.0/24]}\n    - {namespaceSelector: {matchLabels: {ns: z}}, podSelector: {matchLabels: {pod: b}}}\n---\n\
         metadata: {namespace: x, name: the-except}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress: [{to: [{ipBlock: {cidr: 10.171.2.11/32}}]}]",
    ),
    (
        "ipBlock on pod addresses mixed with selectors on ingress (upstream e2e)",
        "metadata: {namespace: x, name: mixed}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: z}}\n    - ipBlock: {cidr: 10.171.2.0/24, except: [10.171.2.10/31]}\n    ports: [{port: 80}]",
    ),
    (
        "policies are a union",
        "metadata: {namespace: x, name: from-b-tcp-80}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}], ports: [{port: 80}]}]\n---\n\
         metadata: {namespace: x, name: from-y-udp-81}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: 81, protocol: UDP}]}]",
    ),
    (
        "both ends must allow",
        "metadata: {namespace: x, name: deny-egress}\nspec: {podSelector: {}, policyTypes: [Egress]}\n---\n\
         metadata: {namespace: x, name: a-to-y-b}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: b}}}]\n    ports: [{port: 80}]\n---\n\
         metadata: {namespace: y, name: deny-ingress}\nspec: {podSelector: {}, policyTypes: [Ingress]}\n---\n\
         metadata: {namespace: y, name: b-from-pods}\nspec:\n  podSelector: {matchLabels: {pod: b}}\n  ingress: [{from: [{namespaceSelector: {}}], ports: [{port: 80}]}]",
    ),
];

const PORTS: [(Protocol, u16); 4] = [
    (Protocol::Tcp, 80),
    (Protocol::Tcp, 81),
    (Protocol::Udp, 80),
    (Protocol::Udp, 81),
];

/// A cell: (from, to, protocol, port), endpoints as `ns/pod` or `ext`.
type Cell = (String, String, Protocol, u16);

/// Every policy document of a scenario, as NetworkPolicy YAML.
fn policy_yaml(scenario: &str) -> String {
    scenario
        .split("\n---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n{d}\n"))
        .collect::<Vec<_>>()
        .join("---\n")
}

fn endpoints() -> Vec<String> {
    let mut all: Vec<String> = ["x", "y", "z"]
        .iter()
        .flat_map(|ns| ["a", "b", "c"].map(|p| format!("{ns}/{p}")))
        .collect();
    all.push("ext".to_owned());
    all
}

/// The generator's evaluator over the lab's cluster: the allowed cells.
fn expected(cluster: &Cluster, scenario: &str) -> BTreeSet<Cell> {
    let policies = if scenario.is_empty() {
        Vec::new()
    } else {
        serde_yaml::Deserializer::from_str(&policy_yaml(scenario))
            .map(|d| serde::Deserialize::deserialize(d).expect("policy YAML"))
            .collect()
    };
    let set = PolicySet::new(policies).expect("valid scenario");
    let eval = Evaluator::new(&set, cluster);
    let endpoint = |name: &str| -> Endpoint<'_> {
        if name == "ext" {
            return Endpoint::External(EXTERNAL.parse().expect("ip"));
        }
        let (ns, pod) = name.split_once('/').expect("ns/pod");
        Endpoint::Pod(
            cluster
                .pods
                .iter()
                .find(|p| p.meta.namespace == ns && p.meta.name == pod)
                .expect("pod in cluster"),
        )
    };
    let mut allowed = BTreeSet::new();
    for from in endpoints() {
        for to in endpoints() {
            if from == to {
                // A pod's traffic to itself never leaves its network
                // namespace: no datapath sees it, and Kubernetes notes that
                // a pod cannot block access to itself.
                continue;
            }
            for (protocol, port) in PORTS {
                let flow = Flow {
                    source: endpoint(&from),
                    destination: endpoint(&to),
                    protocol,
                    port,
                };
                if eval.evaluate(&flow).allowed() {
                    allowed.insert((from.clone(), to.clone(), protocol, port));
                }
            }
        }
    }
    allowed
}

/// Probe every cell with a real connection: the connected cells.
fn observed(state: &LabState) -> BTreeSet<Cell> {
    let mut cells = Vec::new();
    for from in endpoints() {
        for to in endpoints() {
            if from == to {
                // A pod's traffic to itself never leaves its network
                // namespace: no datapath sees it, and Kubernetes notes that
                // a pod cannot block access to itself.
                continue;
            }
            for (protocol, port) in PORTS {
                cells.push((from.clone(), to.clone(), protocol, port));
            }
        }
    }
    let connected = std::sync::Mutex::new(BTreeSet::new());
    std::thread::scope(|scope| {
        for chunk in cells.chunks(cells.len().div_ceil(96)) {
            let connected = &connected;
            scope.spawn(move || {
                for cell in chunk {
                    let (from, to, protocol, port) = cell;
                    let target = if to == "ext" { EXTERNAL } else { to.as_str() };
                    // A blocked cell must fail twice: a UDP datagram lost
                    // under 96 parallel probes is not a verdict. The retry
                    // uses a new socket, so a new flow, judged afresh.
                    let once = || {
                        probe::probe(
                            state,
                            from,
                            target,
                            *port,
                            *protocol,
                            Duration::from_millis(300),
                        )
                        .unwrap_or_else(|e| panic!("probe {cell:?}: {e}"))
                    };
                    let ok = once() || once();
                    if ok {
                        connected.lock().expect("lock").insert(cell.clone());
                    }
                }
            });
        }
    });
    connected.into_inner().expect("lock")
}

fn diff(expected: &BTreeSet<Cell>, observed: &BTreeSet<Cell>) -> String {
    let mut out = String::new();
    for cell in expected.difference(observed) {
        writeln!(out, "  - blocked but allowed by policy: {cell:?}")
            .expect("writing to a String cannot fail");
    }
    for cell in observed.difference(expected) {
        writeln!(out, "  + connected but denied by policy: {cell:?}")
            .expect("writing to a String cannot fail");
    }
    out
}

/// Replace the enforced set with the scenario's policies.
fn apply(agent: &Agent, dir: &std::path::Path, scenario: &str) {
    let url = agent.url();
    let listed = weir_ok(&["policy", "list", "--server", &url, "-o", "json"]);
    let listed: Value = serde_json::from_str(&listed).expect("policy list JSON");
    for p in listed["policies"]
        .as_array()
        .expect("policy list has policies")
    {
        let name = format!(
            "{}/{}",
            p["metadata"]["namespace"].as_str().expect("namespace"),
            p["metadata"]["name"].as_str().expect("name")
        );
        let _ = weir_ok(&["policy", "delete", &name, "--server", &url]);
    }
    if scenario.is_empty() {
        std::thread::sleep(Duration::from_millis(1500));
        return;
    }
    let file = dir.join("scenario.yaml");
    std::fs::write(&file, policy_yaml(scenario)).expect("write scenario");
    let file = file.to_string_lossy().into_owned();
    let _ = weir_ok(&["policy", "apply", "-f", &file, "--server", &url]);
    // Let the previous scenario's flows expire (see the agent's flags).
    std::thread::sleep(Duration::from_millis(1500));
}

fn set_modes(agent: &Agent, mode: &str) {
    for ns in ["x", "y", "z"] {
        let _ = weir_ok(&["mode", "set", ns, mode, "--force", "--server", &agent.url()]);
    }
}

/// Flows recorded with `verdict` since `since`, as cells.
fn recorded(agent: &Agent, verdict: &str, since: SystemTime) -> BTreeSet<Cell> {
    let out = weir(&[
        "observe",
        "--server",
        &agent.url(),
        "--last",
        "100000",
        "-o",
        "json",
    ]);
    let since = time::OffsetDateTime::from(since);
    let at = |f: &Value| {
        f["time"].as_str().and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|f| f["verdict"] == verdict)
        .filter(|f| at(f).is_some_and(|t| t >= since))
        .filter_map(|f| {
            let side = |s: &Value| -> Option<String> {
                match s["pod_name"].as_str() {
                    Some(pod) => Some(format!("{}/{pod}", s["namespace"].as_str()?)),
                    None => Some("ext".to_owned()),
                }
            };
            let (proto, l4) = f["l4"].as_object()?.iter().next()?;
            Some((
                side(&f["source"])?,
                side(&f["destination"])?,
                proto.parse().ok()?,
                u16::try_from(l4["destination_port"].as_u64()?).ok()?,
            ))
        })
        .collect()
}

#[test]
fn enforce_and_audit_match_the_evaluator_over_the_full_matrix() {
    let lab = Lab::up("conf", &lab_yaml());
    // Flows expire one second after their last packet: a UDP probe that
    // reuses a source port of the previous scenario must be judged under the
    // current policies, not inherit the old entry's verdict (the flow table
    // is the connection tracker).
    let agent = Agent::start(
        &lab,
        &["--flow-idle-timeout", "1s", "--flow-closing-timeout", "1s"],
    );
    let state = LabState::load(&lab.name).expect("lab state");
    let cluster = inventory(&state).cluster();
    let work = tempfile::tempdir().expect("tempdir");
    assert!(SCENARIOS.len() >= 25, "at least 25 scenarios");

    let mut failures = String::new();
    set_modes(&agent, "enforce");
    for (name, scenario) in SCENARIOS {
        apply(&agent, work.path(), scenario);
        let want = expected(&cluster, scenario);
        let got = observed(&state);
        if want != got {
            writeln!(failures, "enforce, {name}:\n{}", diff(&want, &got)).unwrap();
        }
    }

    set_modes(&agent, "audit");
    let all = observed_all_cells();
    for (name, scenario) in SCENARIOS {
        apply(&agent, work.path(), scenario);
        let start = SystemTime::now();
        let got = observed(&state);
        if got != all {
            writeln!(failures, "audit drops, {name}:\n{}", diff(&all, &got)).unwrap();
        }
        let would_drop: BTreeSet<Cell> = all
            .difference(&expected(&cluster, scenario))
            .cloned()
            .collect();
        let audited = eventually(Duration::from_secs(5), || {
            let audited = recorded(&agent, "AUDIT", start);
            (audited == would_drop).then_some(audited)
        });
        if audited.is_none() {
            let audited = recorded(&agent, "AUDIT", start);
            writeln!(
                failures,
                "audit record, {name}:\n{}",
                diff(&would_drop, &audited)
            )
            .unwrap();
        }
    }
    assert!(failures.is_empty(), "conformance failures:\n{failures}");
}

/// Every cell: what connects with no policy in force.
fn observed_all_cells() -> BTreeSet<Cell> {
    let mut all = BTreeSet::new();
    for from in endpoints() {
        for to in endpoints() {
            if from == to {
                // A pod's traffic to itself never leaves its network
                // namespace: no datapath sees it, and Kubernetes notes that
                // a pod cannot block access to itself.
                continue;
            }
            for (protocol, port) in PORTS {
                all.insert((from.clone(), to.clone(), protocol, port));
            }
        }
    }
    all
}
