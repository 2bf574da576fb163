//! The demo shop (deploy/examples/shop.yaml) as the learn and enforce tests
//! use it: in its own address ranges, with the traffic scripts/demo.sh drives.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{Agent, Lab, eventually};

/// Edges of the demo's traffic ([`drive_traffic`]) in the agent's graph.
pub const SHOP_EDGES: usize = 7;

pub const SHOP: &str = include_str!("../../deploy/examples/shop.yaml");

/// The shop in its own address ranges: 10.`octet`.0.0/16 for pods,
/// 10.`octet + 1`.0.0/16 for Services.
pub fn shop_yaml(octet: u8) -> String {
    let (_, rest) = SHOP
        .split_once("\n---\n")
        .expect("shop.yaml starts with its Lab document");
    let svc = octet + 1;
    let lab = format!(
        "apiVersion: lab.weir.dev/v1alpha1\nkind: Lab\nmetadata: {{name: shop}}\n\
        spec: {{podCIDR: 10.{octet}.0.0/16, podCIDRv6: 'fd00:{octet}::/64', serviceCIDR: 10.{svc}.0.0/16, \
        serviceCIDRv6: 'fd00:{svc}::/112', dualStack: true}}\n"
    );
    format!(
        "{lab}---\n{}",
        rest.replace(
            "clusterIP: 10.96.0.10",
            &format!("clusterIP: 10.{svc}.0.10")
        )
    )
}

pub fn ip_of(status: &Value, pod: &str, v6: bool) -> String {
    let (ns, name) = pod.split_once('/').expect("ns/pod");
    status["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .find(|p| p["namespace"] == ns && p["name"] == name)
        .and_then(|p| {
            p["ips"]
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .find(|ip| ip.contains(':') == v6)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("{pod} has no address"))
}

pub fn cluster_ip(status: &Value, service: &str) -> String {
    let (ns, name) = service.split_once('/').expect("ns/name");
    status["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["namespace"] == ns && s["name"] == name)
        .and_then(|s| {
            s["clusterIPs"]
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .find(|ip| !ip.contains(':'))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("{service} has no IPv4 ClusterIP"))
}

/// The traffic of scripts/demo.sh; panics naming the first probe that
/// does not connect.
pub fn drive_traffic(lab: &Lab, rounds: usize) {
    let status = lab.status();
    let mut frontends: Vec<String> = status["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .filter(|p| p["namespace"] == "shop")
        .filter_map(|p| p["name"].as_str())
        .filter(|n| n.starts_with("frontend-"))
        .map(|n| format!("shop/{n}"))
        .collect();
    frontends.sort();
    let loadgen = lab.pod("shop", "loadgen");
    let cart = lab.pod("shop", "cartservice-");
    let catalog = lab.pod("shop", "catalog-");
    let store = lab.pod("data", "store-");
    let dns = lab.pod("kube-system", "coredns-");
    let store_v6 = ip_of(&status, &store, true);
    let catalog_v6 = ip_of(&status, &catalog, true);
    let kube_dns = cluster_ip(&status, "kube-system/kube-dns");
    let cart_svc = cluster_ip(&status, "shop/cartservice");
    for _ in 0..rounds {
        for fe in &frontends {
            assert!(lab.probe(&loadgen, fe, "8080/TCP"), "loadgen -> {fe}");
            assert!(lab.probe(fe, &kube_dns, "53/UDP"), "{fe} -> kube-dns");
            assert!(lab.probe(fe, &catalog, "3550/TCP"), "{fe} -> catalog");
            assert!(lab.probe(fe, &catalog_v6, "3550/TCP"), "{fe} -> catalog v6");
            assert!(lab.probe(fe, &cart_svc, "7070/TCP"), "{fe} -> cart svc");
        }
        assert!(lab.probe(&cart, &dns, "53/UDP"), "cart -> dns");
        assert!(lab.probe(&cart, &store, "6379/TCP"), "cart -> store");
        assert!(lab.probe(&cart, &store_v6, "6379/TCP"), "cart -> store v6");
        assert!(
            lab.probe(&cart, "203.0.113.10", "443/TCP"),
            "cart -> payments"
        );
    }
}

/// The demo's traffic, `rounds` times, until `agent`'s graph holds every
/// edge of it; then `settle` (a sweep or two) for the counters and the
/// suggestion to settle. Panics with the graph when an edge is missing.
pub fn learn_the_shop(lab: &Lab, agent: &Agent, rounds: usize, settle: Duration) {
    drive_traffic(lab, rounds);
    eventually(Duration::from_secs(20), || {
        let graph = agent.get_json("/api/graph");
        (graph["edges"].as_array().map_or(0, Vec::len) >= SHOP_EDGES).then_some(())
    })
    .unwrap_or_else(|| panic!("graph incomplete: {:#}", agent.get_json("/api/graph")));
    std::thread::sleep(settle);
}
