use std::{collections::BTreeMap, time::Instant};

use super::*;
use crate::{
    cluster::NamedPort,
    model::{PodMeta, WorkloadKind, WorkloadRef},
};

fn policy(yaml: &str) -> NetworkPolicy {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("bad test policy: {e}\n{yaml}"))
}

/// A policy `x/p` with the given spec (YAML, indented under `spec:`).
fn with_spec(spec: &str) -> NetworkPolicy {
    policy(&format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{namespace: x, name: p}}\nspec:\n{spec}"
    ))
}

#[test]
fn invalid_policies_name_the_policy_and_the_field() {
    // (spec, field path, reason fragment)
    let cases: &[(&str, &str, &str)] = &[
        (
            "  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]",
            "spec.ingress[0].from[0].ipBlock.cidr",
            "invalid CIDR",
        ),
        (
            "  ingress: [{from: [{ipBlock: {cidr: 10.0.0.1}}]}]",
            "spec.ingress[0].from[0].ipBlock.cidr",
            "invalid CIDR",
        ),
        (
            "  ingress: [{from: [{podSelector: {}}, {ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/16, 11.0.0.0/16]}}]}]",
            "spec.ingress[0].from[1].ipBlock.except[1]",
            "strict subset",
        ),
        (
            "  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.0.0.0/8]}}]}]",
            "spec.ingress[0].from[0].ipBlock.except[0]",
            "strict subset",
        ),
        (
            "  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: ['::/64']}}]}]",
            "spec.ingress[0].from[0].ipBlock.except[0]",
            "strict subset",
        ),
        (
            "  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [bogus]}}]}]",
            "spec.ingress[0].from[0].ipBlock.except[0]",
            "invalid CIDR",
        ),
        (
            "  egress: [{}, {ports: [{port: 90, endPort: 80}]}]",
            "spec.egress[1].ports[0].endPort",
            "greater than or equal",
        ),
        (
            "  ingress: [{ports: [{port: http, endPort: 80}]}]",
            "spec.ingress[0].ports[0].endPort",
            "non-numeric",
        ),
        (
            "  ingress: [{ports: [{endPort: 80}]}]",
            "spec.ingress[0].ports[0].endPort",
            "port is not specified",
        ),
        (
            "  ingress: [{ports: [{port: 0}]}]",
            "spec.ingress[0].ports[0].port",
            "between 1 and 65535",
        ),
        (
            "  ingress: [{ports: [{port: 70000}]}]",
            "spec.ingress[0].ports[0].port",
            "between 1 and 65535",
        ),
        (
            "  ingress: [{ports: [{port: 80, endPort: 70000}]}]",
            "spec.ingress[0].ports[0].endPort",
            "between 1 and 65535",
        ),
        (
            "  ingress: [{ports: [{port: '80'}]}]",
            "spec.ingress[0].ports[0].port",
            "invalid port name",
        ),
        (
            "  ingress: [{ports: [{port: Http}]}]",
            "spec.ingress[0].ports[0].port",
            "invalid port name",
        ),
        (
            "  ingress: [{ports: [{port: a-very-long-port-name}]}]",
            "spec.ingress[0].ports[0].port",
            "invalid port name",
        ),
        (
            "  ingress: [{ports: [{protocol: ICMP}]}]",
            "spec.ingress[0].ports[0].protocol",
            "unsupported protocol",
        ),
        (
            "  ingress: [{ports: [{protocol: tcp, port: 80}]}]",
            "spec.ingress[0].ports[0].protocol",
            "unsupported protocol",
        ),
        (
            "  podSelector: {matchExpressions: [{key: app, operator: Equals, values: [a]}]}",
            "spec.podSelector.matchExpressions[0].operator",
            "unknown operator",
        ),
        (
            "  ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: In}]}}]}]",
            "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].values",
            "must be specified",
        ),
        (
            "  egress: [{to: [{podSelector: {matchExpressions: [{key: a, operator: Exists}, {key: b, operator: DoesNotExist, values: [x]}]}}]}]",
            "spec.egress[0].to[0].podSelector.matchExpressions[1].values",
            "may not be specified",
        ),
        (
            "  ingress: [{from: [{}]}]",
            "spec.ingress[0].from[0]",
            "must specify a peer",
        ),
        (
            "  ingress: [{from: [{podSelector: {}, ipBlock: {cidr: 10.0.0.0/8}}]}]",
            "spec.ingress[0].from[0]",
            "both ipBlock and another peer",
        ),
        (
            "  policyTypes: [Ingress, egress]",
            "spec.policyTypes[1]",
            "unsupported value",
        ),
        // Rules of a direction the policy does not govern are still checked.
        (
            "  policyTypes: [Egress]\n  ingress: [{ports: [{port: 0}]}]",
            "spec.ingress[0].ports[0].port",
            "between 1 and 65535",
        ),
    ];
    for (spec, field, reason) in cases {
        let err = PolicySet::new(vec![with_spec(spec)]).expect_err(spec);
        let msg = err.to_string();
        assert!(msg.contains("x/p"), "{spec}: {msg}");
        assert!(msg.contains(field), "{spec}: want field {field}, got {msg}");
        assert!(msg.contains(reason), "{spec}: want {reason:?}, got {msg}");
        let PolicyError::Invalid {
            policy, field: f, ..
        } = &err
        else {
            panic!("{spec}: {err:?}");
        };
        assert_eq!((policy.as_str(), f.as_str()), ("x/p", *field), "{msg}");
    }
}

#[test]
fn missing_metadata_and_duplicates_are_rejected() {
    let mut p = with_spec("  podSelector: {}");
    p.metadata.namespace = None;
    let msg = PolicySet::new(vec![p]).unwrap_err().to_string();
    assert!(
        msg.contains("?/p") && msg.contains("metadata.namespace"),
        "{msg}"
    );

    let mut p = with_spec("  podSelector: {}");
    p.metadata.name = None;
    let msg = PolicySet::new(vec![p]).unwrap_err().to_string();
    assert!(
        msg.contains("x/?") && msg.contains("metadata.name"),
        "{msg}"
    );

    let p = with_spec("  podSelector: {}");
    let err = PolicySet::new(vec![p.clone(), p]).unwrap_err();
    assert!(matches!(err, PolicyError::Duplicate { .. }), "{err}");
    assert_eq!(err.to_string(), "policy x/p: defined more than once");
}

#[test]
fn valid_edge_cases_are_accepted() {
    for spec in [
        "  podSelector: {}",
        "  ingress: [{}]",
        "  ingress: [{from: [], ports: []}]",
        "  policyTypes: []",
        "  ingress: [{ports: [{port: 65535, endPort: 65535, protocol: SCTP}]}]",
        "  ingress: [{ports: [{port: serve-80-tcp}]}]",
        "  ingress: [{from: [{ipBlock: {cidr: 10.1.2.3/8, except: [10.1.0.0/16]}}]}]",
        "  ingress: [{from: [{ipBlock: {cidr: '2001:db8::/32', except: ['2001:db8::1/128']}}]}]",
        "  egress: [{to: [{namespaceSelector: {}, podSelector: {matchLabels: {a: b}}}]}]",
    ] {
        PolicySet::new(vec![with_spec(spec)]).unwrap_or_else(|e| panic!("{spec}: {e}"));
    }
    assert!(PolicySet::new(vec![]).unwrap().is_empty());
}

fn pod(ns: &str, name: &str, labels: &[(&str, &str)], ip: [u8; 4]) -> ClusterPod {
    ClusterPod {
        meta: PodMeta {
            namespace: ns.into(),
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            workload: WorkloadRef::new(ns, WorkloadKind::Pod, name),
            ips: vec![IpAddr::from(ip)],
        },
        ports: vec![NamedPort {
            name: Some("http".into()),
            port: 8080,
            protocol: Protocol::Tcp,
        }],
    }
}

#[test]
fn ip_block_matches_a_pod_at_the_address_of_the_flow() {
    // A dual-stack pod: the v4 block matches it at its v4 address, not at
    // its v6 one; as a whole (no address known) at any of them.
    let set = PolicySet::new(vec![with_spec(
        "  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/24, except: [10.0.0.2/32]}}]}]",
    )])
    .unwrap();
    let mut client = pod("y", "client", &[("app", "client")], [10, 0, 0, 1]);
    let v6: IpAddr = "fd00::1".parse().unwrap();
    client.meta.ips.push(v6);
    let excepted = pod("y", "other", &[("app", "client")], [10, 0, 0, 2]);
    let server = pod("x", "server", &[("app", "server")], [10, 0, 1, 1]);
    let cluster = Cluster {
        pods: vec![client, excepted, server],
        ..Cluster::default()
    };
    let eval = Evaluator::new(&set, &cluster);
    let [client, excepted, server] = [&cluster.pods[0], &cluster.pods[1], &cluster.pods[2]];
    let from = |source| {
        eval.evaluate(&Flow {
            source,
            destination: Endpoint::Pod(server),
            protocol: Protocol::Tcp,
            port: 80,
        })
        .ingress
    };
    let allowed = DirectionVerdict::Allowed {
        rules: vec![RuleRef {
            policy: PolicyRef {
                namespace: "x".into(),
                name: "p".into(),
            },
            direction: Direction::Ingress,
            index: 0,
        }],
    };
    assert_eq!(from(Endpoint::PodAt(client, client.meta.ips[0])), allowed);
    assert_eq!(from(Endpoint::Pod(client)), allowed);
    assert!(!from(Endpoint::PodAt(client, v6)).allowed());
    assert!(!from(Endpoint::Pod(excepted)).allowed());
    assert!(!from(Endpoint::PodAt(excepted, excepted.meta.ips[0])).allowed());
}

#[test]
fn pods_outside_the_cluster_snapshot_are_selected_on_the_fly() {
    let set = PolicySet::new(vec![with_spec(
        "  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: http}]}]",
    )])
    .unwrap();
    let cluster = Cluster {
        pods: vec![pod("x", "web", &[("app", "web")], [10, 0, 0, 1])],
        ..Cluster::default()
    };
    let eval = Evaluator::new(&set, &cluster);
    // Not in the cluster, and a pod of the same name with other labels.
    let db = pod("x", "db", &[("app", "db")], [10, 0, 0, 2]);
    let relabelled = pod("x", "web", &[("app", "db")], [10, 0, 0, 1]);
    let web = &cluster.pods[0];
    let flow = |s, d, port| Flow {
        source: Endpoint::Pod(s),
        destination: Endpoint::Pod(d),
        protocol: Protocol::Tcp,
        port,
    };
    assert!(eval.evaluate(&flow(web, &db, 8080)).allowed());
    assert!(eval.allows(&flow(web, &db, 8080)));
    assert_eq!(
        eval.evaluate(&flow(web, &db, 80)).ingress,
        DirectionVerdict::Denied {
            isolated_by: vec![PolicyRef {
                namespace: "x".into(),
                name: "p".into()
            }],
            reason: DenyReason::PortNotAllowed
        }
    );
    // The cluster's x/web is not selected; this one, relabelled, is.
    assert!(!eval.evaluate(&flow(web, &relabelled, 80)).ingress.allowed());
    assert!(eval.evaluate(&flow(web, &relabelled, 8080)).allowed());
    assert_eq!(
        eval.evaluate(&flow(&db, web, 80)).ingress,
        DirectionVerdict::NotIsolated
    );
}

#[test]
fn verdicts_serialize_with_kebab_case_tags() {
    let v = Verdict {
        egress: DirectionVerdict::NotApplicable,
        ingress: DirectionVerdict::Denied {
            isolated_by: vec![PolicyRef {
                namespace: "x".into(),
                name: "p".into(),
            }],
            reason: DenyReason::PeerNotAllowed,
        },
    };
    assert_eq!(
        serde_json::to_value(&v).unwrap(),
        serde_json::json!({
            "egress": {"verdict": "not-applicable"},
            "ingress": {"verdict": "denied", "isolated_by": [{"namespace": "x", "name": "p"}],
                "reason": "peer-not-allowed"}
        })
    );
    let r = RuleRef {
        policy: PolicyRef {
            namespace: "x".into(),
            name: "p".into(),
        },
        direction: Direction::Egress,
        index: 2,
    };
    assert_eq!(r.to_string(), "x/p spec.egress[2]");
}

/// 10k pods in 20 namespaces, a default deny and an allow policy per
/// namespace: precomputation and 1M evaluations stay cheap (this is the
/// `weir verify` budget). Timings are printed, not asserted; the assertion
/// is that the work is done at all in a debug build within the test's run.
#[test]
#[expect(clippy::print_stderr, reason = "the timings, shown with --nocapture")]
fn ten_thousand_pods_and_many_flows() {
    let mut policies = Vec::new();
    let mut cluster = Cluster::default();
    for n in 0..20u8 {
        let ns = format!("ns{n}");
        cluster.namespaces.insert(
            ns.clone(),
            BTreeMap::from([(NAMESPACE_NAME_LABEL.to_owned(), ns.clone())]),
        );
        policies.push(policy(&format!(
            "metadata: {{namespace: {ns}, name: deny}}\nspec: {{podSelector: {{}}, policyTypes: [Ingress, Egress]}}"
        )));
        policies.push(policy(&format!(
            "metadata: {{namespace: {ns}, name: allow}}\nspec:\n  podSelector: {{matchExpressions: [{{key: app, operator: In, values: [a0, a1]}}]}}\n  policyTypes: [Ingress, Egress]\n  ingress: [{{from: [{{namespaceSelector: {{}}, podSelector: {{matchLabels: {{app: a1}}}}}}], ports: [{{port: http}}]}}]\n  egress: [{{to: [{{namespaceSelector: {{}}}}]}}, {{to: [{{ipBlock: {{cidr: 0.0.0.0/0}}}}], ports: [{{port: 53, protocol: UDP}}]}}]"
        )));
        for i in 0..500u16 {
            let app = format!("a{}", i % 5);
            let [hi, lo] = i.to_be_bytes();
            cluster.pods.push(pod(
                &ns,
                &format!("p{i}"),
                &[("app", app.as_str())],
                [10, n, hi, lo],
            ));
        }
    }
    let set = PolicySet::new(policies).unwrap();
    let start = Instant::now();
    let eval = Evaluator::new(&set, &cluster);
    let built = start.elapsed();
    let flows: u32 = if cfg!(debug_assertions) {
        100_000
    } else {
        1_000_000
    };
    let mut allowed = 0u32;
    let start = Instant::now();
    for k in 0..flows {
        let s = &cluster.pods[(k as usize * 7919) % cluster.pods.len()];
        let d = &cluster.pods[(k as usize * 104_729 + 14) % cluster.pods.len()];
        let flow = Flow {
            source: Endpoint::Pod(s),
            destination: Endpoint::Pod(d),
            protocol: Protocol::Tcp,
            port: 8080,
        };
        if eval.evaluate(&flow).allowed() {
            allowed += 1;
        }
    }
    eprintln!(
        "precompute {built:?}, {flows} evaluations {:?}, {allowed} allowed",
        start.elapsed()
    );
    assert!(allowed > 0 && allowed < flows);
}
