//! ClusterIP Services as socket-level load balancing: each pod's own netns
//! gets an nftables `nat` OUTPUT chain that DNATs a ClusterIP:port to one
//! backend, picked at random per connection (like kube-proxy's nftables
//! mode, with one chain per endpoint). Packets leave the pod already
//! addressed to the backend, which is what NetworkPolicy evaluates.

use std::{fmt::Write, net::IpAddr};

use super::state::ServiceState;

/// Name of the table in each pod netns.
pub const TABLE: &str = "weir_services";

fn l4(protocol: weir_generator::model::Protocol) -> &'static str {
    match protocol {
        weir_generator::model::Protocol::Udp => "udp",
        _ => "tcp",
    }
}

/// The ruleset for a pod netns, or `None` when no Service has a ClusterIP.
#[must_use]
pub fn ruleset(services: &[ServiceState]) -> Option<String> {
    let mut rules = String::new();
    let mut chains = String::new();
    for (s, svc) in services.iter().enumerate() {
        for cluster_ip in &svc.cluster_ips {
            let family = if cluster_ip.is_ipv6() { "ip6" } else { "ip" };
            for (p, port) in svc.ports.iter().enumerate() {
                // Backends of the ClusterIP's family only.
                let backends: Vec<_> = port
                    .backends
                    .iter()
                    .filter(|b| b.ip.is_ipv6() == cluster_ip.is_ipv6())
                    .collect();
                if backends.is_empty() {
                    continue; // no endpoints: connections time out
                }
                let proto = l4(port.protocol);
                let mut verdicts = Vec::new();
                for (b, backend) in backends.iter().enumerate() {
                    let chain = format!("svc{s}_{family}_p{p}_ep{b}");
                    let target = match backend.ip {
                        IpAddr::V4(ip) => format!("{ip}:{}", backend.port),
                        IpAddr::V6(ip) => format!("[{ip}]:{}", backend.port),
                    };
                    let _ = writeln!(
                        chains,
                        "\tchain {chain} {{\n\t\tcomment \"{}/{} -> {}\"\n\t\tmeta l4proto {proto} dnat {family} to {target}\n\t}}",
                        svc.namespace, svc.name, backend.pod
                    );
                    verdicts.push(format!("{b} : jump {chain}"));
                }
                let _ = writeln!(
                    rules,
                    "\t\t{family} daddr {cluster_ip} {proto} dport {} numgen random mod {} vmap {{ {} }} comment \"{}/{}\"",
                    port.port,
                    backends.len(),
                    verdicts.join(", "),
                    svc.namespace,
                    svc.name
                );
            }
        }
    }
    if rules.is_empty() {
        return None;
    }
    Some(format!(
        "table inet {TABLE} {{\n\tchain output {{\n\t\ttype nat hook output priority -100; policy accept;\n{rules}\t}}\n{chains}}}\n"
    ))
}

#[cfg(test)]
mod tests {
    use weir_generator::model::Protocol;

    use super::*;
    use crate::state::{Backend, ServicePortState};

    #[test]
    fn dnat_per_backend_and_family() {
        let svc = ServiceState {
            namespace: "shop".into(),
            name: "cart".into(),
            cluster_ips: vec!["10.96.0.11".parse().unwrap(), "fd00:96::b".parse().unwrap()],
            selector: None,
            ports: vec![ServicePortState {
                name: None,
                port: 80,
                protocol: Protocol::Tcp,
                target_port: "7070".into(),
                backends: vec![
                    Backend {
                        pod: "shop/a".into(),
                        ip: "10.88.0.2".parse().unwrap(),
                        port: 7070,
                    },
                    Backend {
                        pod: "shop/a".into(),
                        ip: "fd00:88::2".parse().unwrap(),
                        port: 7070,
                    },
                    Backend {
                        pod: "shop/b".into(),
                        ip: "10.88.0.3".parse().unwrap(),
                        port: 7070,
                    },
                ],
            }],
        };
        let rules = ruleset(&[svc]).unwrap();
        assert!(
            rules.contains("ip daddr 10.96.0.11 tcp dport 80 numgen random mod 2"),
            "{rules}"
        );
        assert!(
            rules.contains("ip6 daddr fd00:96::b tcp dport 80 numgen random mod 1"),
            "{rules}"
        );
        assert!(rules.contains("dnat ip6 to [fd00:88::2]:7070"), "{rules}");
        assert!(rules.contains("dnat ip to 10.88.0.3:7070"), "{rules}");
        assert!(ruleset(&[]).is_none());
    }
}
