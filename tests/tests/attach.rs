//! Attachment on any CNI: each layout is built for real in a node
//! namespace, and the discovered host interface must be exactly the pod's
//! veth, also after a pod is recreated with the same IP (and veth name)
//! and a new veth. Then an agent fed an inventory without veth names
//! attaches to a Calico-style node and reports a flow between two pods.
//!
//! Addresses: 10.191.0.0/16 .. 10.198.0.0/16 and fd00:10:196::/64, all
//! inside node namespaces.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, TcpListener, TcpStream},
    process::Command,
    time::Duration,
};

use weir_agent::netdev::{Discoverer, HostInterface, Method, Outcome, PodQuery};
use weir_integration_tests::{
    cni::{Node, NodeAgent, ProcessPod},
    harness::{Lab, eventually},
};

fn v4(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

/// Discover `pods` (name, IP) from inside `node`.
fn discover(node: &Node, discoverer: &mut Discoverer, pods: &[(&str, Ipv4Addr)]) -> Vec<Outcome> {
    let ips: Vec<Vec<IpAddr>> = pods.iter().map(|(_, ip)| vec![IpAddr::V4(*ip)]).collect();
    let queries: Vec<PodQuery<'_>> = pods
        .iter()
        .zip(&ips)
        .map(|((name, _), ips)| PodQuery {
            namespace: "attach",
            name,
            ips,
        })
        .collect();
    let discovery = node.ns.run(|| discoverer.discover(&queries));
    assert!(
        discovery.error.is_none(),
        "discovery failed: {:?}",
        discovery.error
    );
    discovery.outcomes
}

fn found(node: &Node, veth: &str, method: Method) -> Outcome {
    Outcome::Found(HostInterface {
        ifindex: node.ifindex(veth),
        ifname: veth.to_owned(),
        method,
    })
}

/// The interface index the outcome names.
fn ifindex(outcome: &Outcome) -> Option<u32> {
    match outcome {
        Outcome::Found(f) => Some(f.ifindex),
        _ => None,
    }
}

/// Whether the node has a resolved neighbour entry for `ip`.
fn has_neighbour(node: &Node, ip: Ipv4Addr) -> bool {
    let output = Command::new("ip")
        .args(["-n", node.ns.name(), "neigh", "show", &ip.to_string()])
        .output()
        .expect("ip neigh");
    String::from_utf8_lossy(&output.stdout).contains("lladdr")
}

/// A TCP connection from `from` to `to:port` goes through the node.
fn connects(
    from: &weir_integration_tests::cni::Pod,
    to: &weir_integration_tests::cni::Pod,
) -> bool {
    let listener = to
        .ns
        .run(|| TcpListener::bind((to.ip, 7001)).expect("listen in the pod"));
    from.ns
        .run(|| TcpStream::connect_timeout(&(to.ip, 7001).into(), Duration::from_secs(3)).is_ok())
        && listener.accept().is_ok()
}

#[test]
fn bridge_pods_are_found_by_neighbour_and_fdb_or_by_their_namespace() {
    let node = Node::new();
    node.add_bridge("cni0", "10.191.1.1/24");
    let gateway = "10.191.1.1";
    let a = node.add_bridged_pod("cni0", "veth0a", v4(10, 191, 1, 5), gateway);
    let b = node.add_bridged_pod("cni0", "veth0b", v4(10, 191, 1, 6), gateway);
    // The node talks to a (as a kubelet probe would), never to b.
    node.touch(a.ip);
    assert!(
        eventually(Duration::from_secs(5), || has_neighbour(&node, a.ip)
            .then_some(()))
        .is_some(),
        "no neighbour entry for a"
    );
    assert!(!has_neighbour(&node, b.ip));

    let mut discoverer = Discoverer::new();
    let pods = [("a", a.ip), ("b", b.ip)];
    let outcomes = discover(&node, &mut discoverer, &pods);
    assert_eq!(outcomes[0], found(&node, "veth0a", Method::Neighbour));
    assert_eq!(outcomes[1], found(&node, "veth0b", Method::Namespace));

    // a is deleted and recreated: same IP, same veth name, new veth. The
    // node's neighbour entry (while it lasts) holds the old MAC, whose FDB
    // entry left with the old port.
    let old = node.ifindex("veth0a");
    let a_ip = a.ip;
    node.delete_pod(a);
    let _a = node.add_bridged_pod("cni0", "veth0a", a_ip, gateway);
    let new = node.ifindex("veth0a");
    assert_ne!(old, new);
    let outcomes = discover(&node, &mut discoverer, &pods);
    assert_eq!(ifindex(&outcomes[0]), Some(new), "{outcomes:?}");
    assert_eq!(outcomes[1], found(&node, "veth0b", Method::Namespace));
    // Without a cache, the same answers.
    let fresh = discover(&node, &mut Discoverer::new(), &pods);
    assert_eq!(ifindex(&fresh[0]), Some(new));
    assert_eq!(ifindex(&fresh[1]), Some(node.ifindex("veth0b")));
}

#[test]
fn a_pod_namespace_known_only_by_its_process_is_found() {
    let node = Node::new();
    node.add_bridge("cni0", "10.191.2.1/24");
    let pod = ProcessPod::start(&node, "cni0", "vethproc", v4(10, 191, 2, 5));
    let outcomes = discover(&node, &mut Discoverer::new(), &[("proc", pod.ip)]);
    assert_eq!(outcomes[0], found(&node, "vethproc", Method::Namespace));
}

#[test]
fn calico_pods_are_found_by_their_route_also_when_recreated() {
    let node = Node::new();
    let a = node.add_calico_pod("cali0a1b2c3d4e5", v4(10, 192, 1, 5));
    let b = node.add_calico_pod("cali9f8e7d6c5b4", v4(10, 192, 1, 6));
    assert!(connects(&a, &b), "the Calico layout routes a to b");

    let mut discoverer = Discoverer::new();
    let pods = [("a", a.ip), ("b", b.ip)];
    let outcomes = discover(&node, &mut discoverer, &pods);
    assert_eq!(outcomes[0], found(&node, "cali0a1b2c3d4e5", Method::Route));
    assert_eq!(outcomes[1], found(&node, "cali9f8e7d6c5b4", Method::Route));

    // Calico names the veth after the pod: the recreated pod's has the
    // same name and a new index.
    let old = node.ifindex("cali0a1b2c3d4e5");
    let a_ip = a.ip;
    node.delete_pod(a);
    let a = node.add_calico_pod("cali0a1b2c3d4e5", a_ip);
    assert_ne!(old, node.ifindex("cali0a1b2c3d4e5"));
    let outcomes = discover(&node, &mut discoverer, &pods);
    assert_eq!(outcomes[0], found(&node, "cali0a1b2c3d4e5", Method::Route));
    assert_eq!(outcomes[1], found(&node, "cali9f8e7d6c5b4", Method::Route));
    assert!(connects(&b, &a));
}

#[test]
fn dual_stack_and_ipv6_only_pods_are_found_by_their_route() {
    let node = Node::new();
    let pod = node.add_calico_pod("calid0a1b2c3d4e", v4(10, 196, 1, 5));
    let v6: IpAddr = "fd00:10:196::5".parse().unwrap();
    pod.ns.ip(&[
        "-6",
        "addr",
        "add",
        "fd00:10:196::5/128",
        "dev",
        "eth0",
        "nodad",
    ]);
    node.ns.ip(&[
        "-6",
        "route",
        "add",
        "fd00:10:196::5/128",
        "dev",
        "calid0a1b2c3d4e",
    ]);
    let dual = [IpAddr::V4(pod.ip), v6];
    let queries = [
        PodQuery {
            namespace: "attach",
            name: "dual",
            ips: &dual,
        },
        PodQuery {
            namespace: "attach",
            name: "v6-only",
            ips: &dual[1..],
        },
    ];
    let mut discoverer = Discoverer::new();
    let discovery = node.ns.run(|| discoverer.discover(&queries));
    assert!(discovery.error.is_none(), "{:?}", discovery.error);
    let expected = found(&node, "calid0a1b2c3d4e", Method::Route);
    assert_eq!(discovery.outcomes, vec![expected.clone(), expected]);
}

#[test]
fn kindnet_and_ptp_pods_are_found_by_their_route_also_when_recreated() {
    let node = Node::new();
    let gateway = v4(10, 193, 1, 1);
    let a = node.add_ptp_pod("veth6f1e2d3c", v4(10, 193, 1, 5), gateway);
    let b = node.add_ptp_pod("veth7a8b9c0d", v4(10, 193, 1, 6), gateway);
    assert!(connects(&a, &b), "the ptp layout routes a to b");

    let mut discoverer = Discoverer::new();
    let pods = [("a", a.ip), ("b", b.ip)];
    let outcomes = discover(&node, &mut discoverer, &pods);
    assert_eq!(outcomes[0], found(&node, "veth6f1e2d3c", Method::Route));
    assert_eq!(outcomes[1], found(&node, "veth7a8b9c0d", Method::Route));

    // Recreated under a new veth name (ptp names veths at random).
    let a_ip = a.ip;
    node.delete_pod(a);
    let _a = node.add_ptp_pod("veth11223344", a_ip, gateway);
    let outcomes = discover(&node, &mut discoverer, &pods);
    assert_eq!(outcomes[0], found(&node, "veth11223344", Method::Route));
    assert_eq!(outcomes[1], found(&node, "veth7a8b9c0d", Method::Route));
}

#[test]
fn cilium_pods_routed_through_cilium_host_are_found_by_their_namespace() {
    let node = Node::new();
    node.add_cilium_host("10.197.1.1/32", "10.197.1.0/24");
    let a = node.add_cilium_pod("lxc1a2b3c4d5e6f", v4(10, 197, 1, 5));
    let b = node.add_cilium_pod("lxc6f5e4d3c2b1a", v4(10, 197, 1, 6));
    let outcomes = discover(&node, &mut Discoverer::new(), &[("a", a.ip), ("b", b.ip)]);
    // Never `cilium_host`, a veth whose peer is on the node.
    assert_eq!(
        outcomes,
        vec![
            found(&node, "lxc1a2b3c4d5e6f", Method::Namespace),
            found(&node, "lxc6f5e4d3c2b1a", Method::Namespace),
        ]
    );
}

#[test]
fn the_node_other_nodes_and_silent_addresses_are_never_attached() {
    let node = Node::new();
    node.add_bridge("cni0", "10.194.1.1/24");
    let _pod = node.add_bridged_pod("cni0", "vethlocal", v4(10, 194, 1, 5), "10.194.1.1");
    // Another node's pods, through flannel's VXLAN device.
    node.ns.ip(&[
        "link",
        "add",
        "flannel.1",
        "type",
        "vxlan",
        "id",
        "1",
        "dstport",
        "8472",
        "nolearning",
    ]);
    node.ns.ip(&["link", "set", "flannel.1", "up"]);
    node.ns
        .ip(&["route", "add", "10.194.2.0/24", "dev", "flannel.1"]);
    let outcomes = discover(
        &node,
        &mut Discoverer::new(),
        &[
            // hostNetwork: the node's own address.
            ("host-network", v4(10, 194, 1, 1)),
            ("other-node", v4(10, 194, 2, 7)),
            ("no-route", v4(10, 194, 9, 9)),
            // On the bridge's subnet, but no namespace holds it (yet).
            ("not-yet", v4(10, 194, 1, 50)),
            ("local", v4(10, 194, 1, 5)),
        ],
    );
    assert_eq!(
        outcomes,
        vec![
            Outcome::Node,
            Outcome::Elsewhere,
            Outcome::Elsewhere,
            Outcome::Pending,
            found(&node, "vethlocal", Method::Namespace),
        ]
    );
}

/// The log without its terminal colour codes.
fn without_colours(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

const NODE_NAME: &str = "weir-attach-node";

/// An inventory for the agent: two pods on this node without veth names,
/// a hostNetwork pod on this node, and a pod of another node.
fn inventory(client: Ipv4Addr, server: Ipv4Addr, node_ip: Ipv4Addr) -> String {
    let pod = |name: &str, node: &str, ip: Ipv4Addr, extra: &str| {
        format!(
            "---\napiVersion: v1\nkind: Pod\n\
             metadata: {{name: {name}, namespace: attach-e2e, labels: {{app: {name}}}}}\n\
             spec:\n  nodeName: {node}\n{extra}  containers:\n  - name: main\n    image: x\n    ports: [{{containerPort: 7000}}]\n\
             status: {{podIP: {ip}, podIPs: [{{ip: {ip}}}]}}\n"
        )
    };
    [
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: attach-e2e}\n".to_owned(),
        pod("client", NODE_NAME, client, ""),
        pod("server", NODE_NAME, server, ""),
        pod("kube-proxy", NODE_NAME, node_ip, "  hostNetwork: true\n"),
        pod("elsewhere", "weir-attach-other", v4(10, 195, 2, 9), ""),
    ]
    .concat()
}

#[test]
fn an_agent_attaches_to_discovered_calico_veths_and_reports_their_flow() {
    let node = Node::new();
    let client = node.add_calico_pod("cali5e2ec1e4700", v4(10, 195, 1, 5));
    let server = node.add_calico_pod("cali5e2e5e4e700", v4(10, 195, 1, 6));
    let node_ip = v4(10, 195, 0, 1);
    node.ns
        .ip(&["addr", "add", &format!("{node_ip}/32"), "dev", "uplink0"]);
    let file = tempfile::NamedTempFile::new().expect("inventory file");
    std::fs::write(file.path(), inventory(client.ip, server.ip, node_ip)).expect("write inventory");

    let agent = NodeAgent::start(
        Some(&node),
        &format!("inventory:{}", file.path().display()),
        NODE_NAME,
    );
    let attached = eventually(Duration::from_secs(20), || {
        agent
            .metric("weir_attached_interfaces")
            .filter(|n| *n >= 2.0)
    });
    assert_eq!(attached, Some(2.0), "{}", agent.log_text());
    let log = without_colours(&agent.log_text());
    for veth in ["cali5e2ec1e4700", "cali5e2e5e4e700"] {
        assert!(
            log.lines()
                .any(|l| l.contains(" attached") && l.contains(&format!("interface={veth}"))),
            "{veth} not attached:\n{log}"
        );
    }

    // A TCP exchange between the two pods, through the node.
    let listener = server
        .ns
        .run(|| TcpListener::bind((server.ip, 7000)).expect("server listens"));
    let mut stream = client.ns.run(|| {
        TcpStream::connect_timeout(&(server.ip, 7000).into(), Duration::from_secs(3))
            .expect("client connects")
    });
    let (mut accepted, _) = listener.accept().expect("accept");
    stream.write_all(b"ping").expect("send");
    let mut buf = [0_u8; 4];
    accepted.read_exact(&mut buf).expect("receive");
    drop((stream, accepted));

    let flow = eventually(Duration::from_secs(10), || {
        agent.flows().into_iter().find(|f| {
            f["source"]["pod_name"] == "client" && f["destination"]["pod_name"] == "server"
        })
    })
    .unwrap_or_else(|| panic!("no client -> server flow:\n{}", agent.log_text()));
    assert_eq!(flow["source"]["namespace"], "attach-e2e", "{flow}");
    assert_eq!(flow["l4"]["TCP"]["destination_port"], 7000, "{flow}");
    assert_eq!(flow["is_reply"], false, "{flow}");

    // Still exactly the two pods: neither the hostNetwork pod nor the
    // other node's.
    assert_eq!(agent.metric("weir_attached_interfaces"), Some(2.0));
}

/// The weir lab: pods on a bridge in the machine's namespace.
const LAB: &str = "apiVersion: lab.weir.dev/v1alpha1
kind: Lab
metadata: {name: attach}
spec: {podCIDR: 10.198.0.0/16}
---
apiVersion: v1
kind: Namespace
metadata: {name: attach-lab}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: attach-lab, labels: {app: client}}
spec: {containers: [{name: main, image: x}]}
status: {podIP: 10.198.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: attach-lab, labels: {app: server}}
spec: {containers: [{name: main, image: x, ports: [{containerPort: 7000}]}]}
status: {podIP: 10.198.0.6}
";

#[test]
fn an_agent_attaches_to_a_bridged_lab_from_an_inventory_without_veth_names() {
    let lab = Lab::up("attach", LAB);
    let status = lab.status();
    let veths: Vec<String> = status["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .map(|p| p["hostVeth"].as_str().expect("hostVeth").to_owned())
        .collect();
    assert_eq!(veths.len(), 2, "{status}");
    // The same pods as an API server would list them, on this node, plus
    // a hostNetwork pod with the node's (the bridge's) address.
    let inventory = LAB
        .split("---\n")
        .skip(1)
        .map(|doc| doc.replace("spec: {containers", "spec: {nodeName: weir-attach-lab, containers"))
        .chain([
            "apiVersion: v1\nkind: Pod\nmetadata: {name: node-exporter, namespace: attach-lab}\n\
             spec: {nodeName: weir-attach-lab, hostNetwork: true, containers: [{name: main, image: x}]}\n\
             status: {podIP: 10.198.0.1}\n"
                .to_owned(),
        ])
        .collect::<Vec<_>>()
        .join("---\n");
    let file = tempfile::NamedTempFile::new().expect("inventory file");
    std::fs::write(file.path(), inventory).expect("write inventory");

    let agent = NodeAgent::start(
        None,
        &format!("inventory:{}", file.path().display()),
        "weir-attach-lab",
    );
    let attached = eventually(Duration::from_secs(20), || {
        agent
            .metric("weir_attached_interfaces")
            .filter(|n| *n >= 2.0)
    });
    assert_eq!(attached, Some(2.0), "{}", agent.log_text());
    let log = without_colours(&agent.log_text());
    for veth in &veths {
        assert!(
            log.lines()
                .any(|l| l.contains(" attached") && l.contains(&format!("interface={veth}"))),
            "{veth} not attached:\n{log}"
        );
    }

    assert!(lab.probe("attach-lab/client", "attach-lab/server", "7000"));
    let flow = eventually(Duration::from_secs(10), || {
        agent.flows().into_iter().find(|f| {
            f["source"]["pod_name"] == "client" && f["destination"]["pod_name"] == "server"
        })
    })
    .unwrap_or_else(|| panic!("no client -> server flow:\n{}", agent.log_text()));
    assert_eq!(flow["l4"]["TCP"]["destination_port"], 7000, "{flow}");
    assert_eq!(agent.metric("weir_attached_interfaces"), Some(2.0));
}
