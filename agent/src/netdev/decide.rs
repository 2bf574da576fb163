//! Pure decisions: given the kernel's tables, which host interface is a
//! pod's. No I/O here; [`super::Discoverer`] fetches the tables.

use std::net::IpAddr;

use super::tables::{HostTables, LinkKind, Namespace, Route, RouteKind};

/// How a pod's interface was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
    /// The route to the pod IP leaves through a veth (Calico, Cilium
    /// chaining, kindnet, ptp).
    Route,
    /// The route leaves through a bridge; the pod IP's neighbour entry
    /// gives its MAC and the bridge FDB the port.
    Neighbour,
    /// The pod's network namespace holds the IP on a veth whose peer is
    /// the host interface.
    Namespace,
}

/// Where an address lives, as far as the node can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Located {
    /// Behind this host veth.
    Veth {
        /// Host-side interface index.
        ifindex: u32,
        /// How it was found.
        method: Method,
    },
    /// The node's own address: the node itself or a hostNetwork pod.
    /// Never attached to.
    Node,
    /// Routed elsewhere (another node, a tunnel, the uplink, no route).
    Elsewhere,
    /// The route leads to a local bridge but neither the neighbour table
    /// nor the FDB says which port: the pod's namespace must tell.
    OnBridge {
        /// The bridge.
        bridge: u32,
    },
    /// Routed through an interface the node does not know (it vanished
    /// between the lookups): try again later.
    Unknown,
}

/// What the route, the neighbour table and the FDB say of `ip`.
#[must_use]
pub fn by_route(ip: IpAddr, route: &Route, host: &HostTables) -> Located {
    match route.kind {
        RouteKind::Local => Located::Node,
        RouteKind::Unreachable => Located::Elsewhere,
        RouteKind::Unicast => {
            let Some(link) = route.oif.and_then(|oif| host.links.get(&oif)) else {
                return Located::Unknown;
            };
            match link.kind {
                LinkKind::Veth if link.is_pod_veth() => Located::Veth {
                    ifindex: link.index,
                    method: Method::Route,
                },
                LinkKind::Bridge => by_fdb(ip, link.index, host),
                LinkKind::Veth | LinkKind::Other => Located::Elsewhere,
            }
        }
    }
}

/// A pod behind a bridge: neighbour entry -> MAC -> FDB port.
fn by_fdb(ip: IpAddr, bridge: u32, host: &HostTables) -> Located {
    let on_bridge = Located::OnBridge { bridge };
    let Some(mac) = host
        .neighbours
        .iter()
        .find(|n| n.ip == ip && n.ifindex == bridge && n.usable)
        .and_then(|n| n.mac)
    else {
        return on_bridge;
    };
    let port = host
        .fdb
        .iter()
        .filter(|e| e.mac == mac && !e.local && e.bridge.is_none_or(|b| b == bridge))
        .find_map(|e| host.links.get(&e.port).filter(|l| l.master == Some(bridge)));
    match port {
        Some(port) if port.is_pod_veth() => Located::Veth {
            ifindex: port.index,
            method: Method::Neighbour,
        },
        // Learned on a tunnel or uplink port: a pod of another node.
        Some(_) => Located::Elsewhere,
        // The FDB entry aged out or went with a deleted port (a recreated
        // pod behind a stale neighbour entry).
        None => on_bridge,
    }
}

/// The host veth whose peer holds `ip` in one of `namespaces`. Both ends
/// must name each other (`IFLA_LINK` on each side) and, when the kernel
/// gave the namespace an id, the host end's `IFLA_LINK_NETNSID` must be it:
/// interface indexes are per namespace, so an index alone proves nothing.
/// When several namespaces hold the address (a leaked sandbox), the one
/// whose host veth is a port of `bridge` wins.
#[must_use]
pub fn by_namespace(
    ip: IpAddr,
    host: &HostTables,
    namespaces: &[Namespace],
    bridge: Option<u32>,
) -> Option<u32> {
    let mut candidates = namespaces.iter().flat_map(|ns| {
        ns.addrs
            .iter()
            .filter(move |(_, addr)| *addr == ip)
            .filter_map(move |(ifindex, _)| {
                let inside = ns
                    .links
                    .iter()
                    .find(|l| l.index == *ifindex && l.kind == LinkKind::Veth)?;
                let outside = host.veth(inside.peer?)?;
                let names_each_other = outside.peer == Some(inside.index);
                let same_namespace = match (outside.peer_netnsid, ns.nsid) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                };
                (names_each_other && same_namespace).then_some(outside)
            })
    });
    let first = candidates.next()?;
    if bridge.is_none() || first.master == bridge {
        return Some(first.index);
    }
    Some(
        candidates
            .find(|l| l.master == bridge)
            .map_or(first.index, |l| l.index),
    )
}

/// One answer for a pod from the answers for each of its IPs: any node
/// address makes it a hostNetwork pod; else the first veth found; else
/// whatever still needs work; else elsewhere.
#[must_use]
pub fn combine(answers: &[Located]) -> Located {
    if answers.contains(&Located::Node) {
        return Located::Node;
    }
    if let Some(veth) = answers.iter().find(|a| matches!(a, Located::Veth { .. })) {
        return *veth;
    }
    answers
        .iter()
        .find(|a| matches!(a, Located::OnBridge { .. } | Located::Unknown))
        .copied()
        .unwrap_or(Located::Elsewhere)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netdev::tables::{FdbEntry, Link, NamespaceId, Neighbour};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn link(index: u32, name: &str, kind: LinkKind) -> Link {
        Link {
            index,
            name: name.to_owned(),
            kind,
            master: None,
            peer: None,
            peer_netnsid: None,
        }
    }

    fn veth(index: u32, name: &str, peer: u32, nsid: i32, master: Option<u32>) -> Link {
        Link {
            master,
            peer: Some(peer),
            peer_netnsid: Some(nsid),
            ..link(index, name, LinkKind::Veth)
        }
    }

    const MAC_A: [u8; 6] = [0x0a, 0x58, 0x0a, 0xf4, 0x00, 0x05];
    const MAC_B: [u8; 6] = [0x0a, 0x58, 0x0a, 0xf4, 0x00, 0x06];

    fn unicast(oif: u32) -> Route {
        Route {
            kind: RouteKind::Unicast,
            oif: Some(oif),
        }
    }

    /// flannel: eth0 (2), flannel.1 (3), cni0 (4) with two pods' veths
    /// (10, 11) as ports and the vxlan device not enslaved.
    fn flannel() -> HostTables {
        HostTables::new(
            vec![
                link(1, "lo", LinkKind::Other),
                link(2, "eth0", LinkKind::Other),
                link(3, "flannel.1", LinkKind::Other),
                link(4, "cni0", LinkKind::Bridge),
                veth(10, "veth1a2b3c4d", 3, 0, Some(4)),
                veth(11, "veth5e6f7a8b", 3, 1, Some(4)),
            ],
            vec![
                Neighbour {
                    ip: ip("10.244.0.5"),
                    ifindex: 4,
                    mac: Some(MAC_A),
                    usable: true,
                },
                Neighbour {
                    ip: ip("10.244.0.7"),
                    ifindex: 4,
                    mac: None,
                    usable: false,
                },
            ],
            vec![
                FdbEntry {
                    mac: MAC_A,
                    port: 10,
                    bridge: Some(4),
                    local: false,
                },
                FdbEntry {
                    mac: MAC_B,
                    port: 11,
                    bridge: Some(4),
                    local: false,
                },
                // The bridge's own address on a port is not a pod's.
                FdbEntry {
                    mac: [0xee; 6],
                    port: 10,
                    bridge: Some(4),
                    local: true,
                },
            ],
        )
    }

    #[test]
    fn bridge_with_a_neighbour_entry_goes_through_the_fdb() {
        let host = flannel();
        assert_eq!(
            by_route(ip("10.244.0.5"), &unicast(4), &host),
            Located::Veth {
                ifindex: 10,
                method: Method::Neighbour
            }
        );
    }

    #[test]
    fn bridge_without_a_usable_neighbour_needs_the_namespace() {
        let host = flannel();
        for pod in ["10.244.0.6", "10.244.0.7"] {
            assert_eq!(
                by_route(ip(pod), &unicast(4), &host),
                Located::OnBridge { bridge: 4 },
                "{pod}"
            );
        }
    }

    #[test]
    fn a_stale_neighbour_whose_mac_left_the_fdb_needs_the_namespace() {
        let mut host = flannel();
        host.fdb.retain(|e| e.mac != MAC_A);
        assert_eq!(
            by_route(ip("10.244.0.5"), &unicast(4), &host),
            Located::OnBridge { bridge: 4 }
        );
    }

    #[test]
    fn a_mac_learned_on_a_tunnel_port_is_elsewhere() {
        let mut host = flannel();
        host.links.get_mut(&3).unwrap().master = Some(4);
        host.fdb[0].port = 3;
        assert_eq!(
            by_route(ip("10.244.0.5"), &unicast(4), &host),
            Located::Elsewhere
        );
    }

    #[test]
    fn calico_kindnet_and_chaining_route_straight_to_the_veth() {
        // Calico: cali* veth without address, `10.191.1.5 dev cali… scope
        // link`; kindnet/ptp: the same /32 with a host-side address.
        let host = HostTables::new(
            vec![
                link(2, "eth0", LinkKind::Other),
                link(7, "tunl0", LinkKind::Other),
                veth(12, "cali12345678901", 3, 0, None),
            ],
            vec![],
            vec![],
        );
        assert_eq!(
            by_route(ip("10.191.1.5"), &unicast(12), &host),
            Located::Veth {
                ifindex: 12,
                method: Method::Route
            }
        );
        // Cilium's own datapath routes pods through `cilium_host`, a veth
        // whose peer (`cilium_net`) is on the node: not a pod's.
        let mut cilium = host.clone();
        cilium.links.insert(
            20,
            Link {
                peer: Some(21),
                ..link(20, "cilium_host", LinkKind::Veth)
            },
        );
        assert_eq!(
            by_route(ip("10.191.1.7"), &unicast(20), &cilium),
            Located::Elsewhere
        );
        // Another node's pod: through the IPIP tunnel or the uplink.
        assert_eq!(
            by_route(ip("10.191.2.5"), &unicast(7), &host),
            Located::Elsewhere
        );
        assert_eq!(
            by_route(ip("10.191.3.5"), &unicast(2), &host),
            Located::Elsewhere
        );
        // The interface vanished between the dump and the lookup.
        assert_eq!(
            by_route(ip("10.191.1.6"), &unicast(99), &host),
            Located::Unknown
        );
    }

    #[test]
    fn node_addresses_and_unroutable_ones_are_never_pods() {
        let host = flannel();
        let local = Route {
            kind: RouteKind::Local,
            oif: Some(1),
        };
        assert_eq!(by_route(ip("192.168.1.10"), &local, &host), Located::Node);
        let none = Route {
            kind: RouteKind::Unreachable,
            oif: None,
        };
        assert_eq!(by_route(ip("10.191.9.9"), &none, &host), Located::Elsewhere);
    }

    fn pod_namespace(ino: u64, nsid: Option<i32>, eth0: u32, peer: u32, addr: &str) -> Namespace {
        Namespace {
            id: NamespaceId { dev: 4, ino },
            nsid,
            links: vec![
                link(1, "lo", LinkKind::Other),
                Link {
                    peer: Some(peer),
                    peer_netnsid: Some(0),
                    ..link(eth0, "eth0", LinkKind::Veth)
                },
            ],
            addrs: vec![(1, ip("127.0.0.1")), (eth0, ip(addr))],
        }
    }

    #[test]
    fn the_namespace_holding_the_ip_names_its_peer() {
        let host = flannel();
        let namespaces = [
            pod_namespace(100, Some(0), 3, 10, "10.244.0.5"),
            pod_namespace(101, Some(1), 3, 11, "10.244.0.6"),
        ];
        assert_eq!(
            by_namespace(ip("10.244.0.6"), &host, &namespaces, Some(4)),
            Some(11)
        );
        assert_eq!(
            by_namespace(ip("10.244.0.5"), &host, &namespaces, None),
            Some(10)
        );
        assert_eq!(
            by_namespace(ip("10.244.0.9"), &host, &namespaces, Some(4)),
            None
        );
    }

    #[test]
    fn an_index_match_in_the_wrong_namespace_is_rejected() {
        let host = flannel();
        // Both pods' eth0 are index 3; the one holding .6 claims peer 10,
        // whose netnsid is 0, not this namespace's 1.
        let namespaces = [pod_namespace(101, Some(1), 3, 10, "10.244.0.6")];
        assert_eq!(
            by_namespace(ip("10.244.0.6"), &host, &namespaces, Some(4)),
            None
        );
        // A peer that does not name the pod's interface back is rejected.
        let namespaces = [pod_namespace(101, Some(1), 5, 11, "10.244.0.6")];
        assert_eq!(
            by_namespace(ip("10.244.0.6"), &host, &namespaces, Some(4)),
            None
        );
    }

    #[test]
    fn a_leaked_sandbox_loses_to_the_one_on_the_bridge() {
        let mut host = flannel();
        host.links.get_mut(&10).unwrap().master = None;
        let namespaces = [
            pod_namespace(100, Some(0), 3, 10, "10.244.0.6"),
            pod_namespace(101, Some(1), 3, 11, "10.244.0.6"),
        ];
        assert_eq!(
            by_namespace(ip("10.244.0.6"), &host, &namespaces, Some(4)),
            Some(11)
        );
    }

    #[test]
    fn a_pod_with_a_node_address_is_a_host_network_pod() {
        let veth = Located::Veth {
            ifindex: 10,
            method: Method::Route,
        };
        assert_eq!(combine(&[veth, Located::Node]), Located::Node);
        assert_eq!(combine(&[Located::Elsewhere, veth]), veth);
        assert_eq!(
            combine(&[Located::Elsewhere, Located::OnBridge { bridge: 4 }]),
            Located::OnBridge { bridge: 4 }
        );
        assert_eq!(combine(&[]), Located::Elsewhere);
    }
}
