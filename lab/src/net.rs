//! Kernel plumbing of the lab through `ip` and `nft`: the bridge, pod
//! namespaces and veth pairs, on-link routes, and the firewall that keeps
//! lab traffic off the uplink. Each function does one step so `up` can
//! record a resource before making it.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{
    cmd::{self, run},
    error::{LabError, Result},
    ipam::node_address,
    netns,
    spec::documentation_ranges,
    state::{LabState, Segment},
};

/// Refuse a pod or service CIDR that is already routed here (another lab,
/// a real network): the bridge's route would shadow it or be shadowed, and
/// a ClusterIP would stand for a real address.
///
/// # Errors
/// [`LabError::CidrInUse`], or an `ip` failure.
pub fn check_cidrs_free(state: &LabState) -> Result<()> {
    let mut routes = Vec::new();
    for family in ["-4", "-6"] {
        let out = run("ip", &["-j", family, "route", "show"])?;
        routes.extend(serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap_or_default());
    }
    route_conflict(&lab_cidrs(state), &routes)
}

/// The lab's ranges, with the Lab field each comes from.
fn lab_cidrs(state: &LabState) -> Vec<(String, IpNet)> {
    let mut cidrs = Vec::new();
    if state.nodes.is_empty() {
        cidrs.push(("spec.podCIDR".to_owned(), IpNet::V4(state.pod_cidr)));
    }
    for (i, node) in state.nodes.iter().enumerate() {
        cidrs.push((format!("spec.nodes[{i}].podCIDR"), IpNet::V4(node.pod_cidr)));
    }
    cidrs.extend(
        [
            ("spec.podCIDRv6", state.pod_cidr_v6.map(IpNet::V6)),
            ("spec.serviceCIDR", Some(IpNet::V4(state.service_cidr))),
            ("spec.serviceCIDRv6", state.service_cidr_v6.map(IpNet::V6)),
        ]
        .into_iter()
        .filter_map(|(field, net)| Some((field.to_owned(), net?))),
    );
    cidrs
}

/// The first of `ours` that a route of `ip -j route show` overlaps.
fn route_conflict(ours: &[(String, IpNet)], routes: &[serde_json::Value]) -> Result<()> {
    for route in routes {
        let dst = route
            .get("dst")
            .and_then(|d| d.as_str())
            .unwrap_or("default");
        let dev = route.get("dev").and_then(|d| d.as_str()).unwrap_or("?");
        let Ok(net) = dst
            .parse::<IpNet>()
            .or_else(|_| dst.parse::<IpAddr>().map(IpNet::from))
        else {
            continue; // "default", multicast, ...
        };
        if net.prefix_len() == 0 || is_link_local_v6(net.network()) {
            continue;
        }
        if let Some((field, cidr)) = ours.iter().find(|(_, o)| super::spec::overlaps(o, &net)) {
            return Err(LabError::CidrInUse {
                field: field.clone(),
                cidr: cidr.to_string(),
                route: dst.to_owned(),
                dev: dev.to_owned(),
            });
        }
    }
    Ok(())
}

fn is_link_local_v6(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(a) if (a.segments()[0] & 0xffc0) == 0xfe80)
}

/// The root-netns table that keeps the lab in its box: anything routed
/// between a lab bridge and an interface that is not one of the lab's
/// bridges is dropped (a multi-node lab's nodes are routed to each other,
/// bridge to bridge, and to nothing else), and the host accepts from a
/// bridge only what is addressed to that node's address. Bridged traffic
/// (pod to pod on one node) is not routed and does not match; with
/// `br_netfilter` it is seen with both interfaces equal to the bridge,
/// which the forward rules let through.
#[must_use]
pub fn firewall_ruleset(table: &str, state: &LabState) -> String {
    let segments = state.segments();
    let bridges = segments
        .iter()
        .map(|s| format!("\"{}\"", s.bridge))
        .collect::<Vec<_>>()
        .join(", ");
    let mut input = String::new();
    for segment in &segments {
        let bridge = segment.bridge;
        for ip in segment.node_addresses() {
            if ip.is_ipv6() {
                input.push_str(&format!(
                    "\t\tiifname \"{bridge}\" ip6 daddr != {{ {ip}, fe80::/10, ff00::/8 }} counter drop\n"
                ));
            } else {
                input.push_str(&format!(
                    "\t\tiifname \"{bridge}\" ip daddr != {{ {ip}, 255.255.255.255, 224.0.0.0/4 }} counter drop\n"
                ));
            }
        }
    }
    format!(
        "table inet {table} {{\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter - 10; policy accept;\n\
         \t\tiifname {{ {bridges} }} oifname != {{ {bridges} }} counter drop comment \"weir lab: never route to the uplink\"\n\
         \t\toifname {{ {bridges} }} iifname != {{ {bridges} }} counter drop comment \"weir lab: never route from the uplink\"\n\
         \t}}\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter - 10; policy accept;\n\
         {input}\
         \t}}\n\
         }}\n"
    )
}

/// Create the root firewall table.
///
/// # Errors
/// `nft` failures.
pub fn add_firewall(table: &str, state: &LabState) -> Result<()> {
    cmd::run_with_stdin("nft", &["-f", "-"], Some(&firewall_ruleset(table, state)))?;
    Ok(())
}

/// Delete an nftables table of the root netns, if present.
///
/// # Errors
/// `nft` failures other than "no such table".
pub fn delete_table(family: &str, name: &str) -> Result<()> {
    Ok(cmd::run_absent_ok(
        "nft",
        &["delete", "table", family, name],
    )?)
}

fn write_root_sysctl(path: &str, value: &str) -> Result<()> {
    netns::write_sysctl(path, value)
}

/// Create a node's bridge with its node addresses. No STP, no forward
/// delay (ports forward at once), no IGMP/MLD snooping surprises, and no
/// call into iptables from the bridge for this bridge. It carries the
/// lab's alias (`down` finds it by that). A multi-node lab's bridges
/// forward (IPv4, per interface: nothing else of the host starts to)
/// so that nodes reach each other through the host.
///
/// # Errors
/// `ip` failures.
pub fn add_bridge(state: &LabState, segment: &Segment<'_>) -> Result<()> {
    let br = segment.bridge;
    run(
        "ip",
        &[
            "link",
            "add",
            br,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
            "mcast_snooping",
            "0",
            "nf_call_iptables",
            "0",
            "nf_call_ip6tables",
            "0",
            "nf_call_arptables",
            "0",
        ],
    )?;
    if let Ok(lab) = state.name() {
        run(
            "ip",
            &["link", "set", "dev", br, "alias", &lab.bridge_alias()],
        )?;
    }
    if segment.pod_cidr_v6.is_some() {
        // Addresses are usable at once: nothing else can hold them.
        write_root_sysctl(&format!("/proc/sys/net/ipv6/conf/{br}/accept_dad"), "0")?;
    }
    // Answer ARP on the bridge only for the node address, not for the
    // host's other addresses (an external host may use the same
    // documentation address as the uplink).
    write_root_sysctl(&format!("/proc/sys/net/ipv4/conf/{br}/arp_ignore"), "1")?;
    if !state.nodes.is_empty() {
        write_root_sysctl(&format!("/proc/sys/net/ipv4/conf/{br}/forwarding"), "1")?;
    }
    for net in segment.nets() {
        let Some(ip) = node_address(net) else {
            continue;
        };
        let addr = format!("{ip}/{}", net.prefix_len());
        if ip.is_ipv6() {
            run("ip", &["addr", "add", &addr, "dev", br, "nodad"])?;
        } else {
            run("ip", &["addr", "add", &addr, "dev", br])?;
        }
    }
    run("ip", &["link", "set", br, "up"])?;
    Ok(())
}

/// Bridges (of any lab) whose alias is `alias`.
#[must_use]
pub fn bridges_with_alias(alias: &str) -> Vec<String> {
    let Ok(out) = run("ip", &["-j", "link", "show", "type", "bridge"]) else {
        return Vec::new();
    };
    serde_json::from_str::<Vec<serde_json::Value>>(&out)
        .unwrap_or_default()
        .iter()
        .filter(|l| l.get("ifalias").and_then(|a| a.as_str()) == Some(alias))
        .filter_map(|l| l.get("ifname")?.as_str().map(str::to_owned))
        .collect()
}

/// Delete an interface, if present.
///
/// # Errors
/// `ip` failures other than "no such device".
pub fn delete_link(name: &str) -> Result<()> {
    Ok(cmd::run_absent_ok("ip", &["link", "del", name])?)
}

/// Create a named netns.
///
/// # Errors
/// `ip` failures.
pub fn add_netns(name: &str) -> Result<()> {
    run("ip", &["netns", "add", name])?;
    Ok(())
}

/// Delete a named netns, if present.
///
/// # Errors
/// `ip` failures other than "no such netns".
pub fn delete_netns(name: &str) -> Result<()> {
    Ok(cmd::run_absent_ok("ip", &["netns", "del", name])?)
}

/// Pids of processes in a named netns.
#[must_use]
pub fn netns_pids(name: &str) -> Vec<u32> {
    run("ip", &["netns", "pids", name])
        .map(|out| {
            out.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Named netns whose name starts with `prefix`.
#[must_use]
pub fn list_netns(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(super::names::NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// Whether an interface exists in the root netns.
#[must_use]
pub fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// A veth pair: `host` on the bridge, `eth0` in `netns`.
///
/// # Errors
/// `ip` failures.
pub fn add_veth(host: &str, netns: &str, bridge: &str) -> Result<()> {
    run(
        "ip",
        &[
            "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", netns,
        ],
    )?;
    run("ip", &["link", "set", host, "master", bridge, "up"])?;
    Ok(())
}

/// Address and route the inside of a pod or external host: `ips` on eth0,
/// on-link routes to its node's ranges, the service ranges and the
/// documentation ranges (external hosts sit on the first node), routes to
/// the other nodes' ranges through its node's address, and no default
/// route, so nothing can leave the lab.
///
/// # Errors
/// `ip` failures.
pub fn configure_inside(
    state: &LabState,
    netns_name: &str,
    ips: &[IpAddr],
    external: bool,
    node: Option<&str>,
) -> Result<()> {
    let has_v6 = ips.iter().any(IpAddr::is_ipv6);
    if has_v6 {
        netns::run_in(netns_name, || {
            netns::write_sysctl("/proc/sys/net/ipv6/conf/eth0/accept_dad", "0")
        })?;
    }
    let n = netns_name;
    run("ip", &["-n", n, "link", "set", "lo", "up"])?;
    let first = state.segments().first().map(|s| s.node);
    let segment = if external {
        state.segment(None)
    } else {
        state.segment(node)
    };
    let pod_nets: Vec<IpNet> = segment.map(|s| s.nets()).unwrap_or_default();
    for ip in ips {
        // Pods take the pod CIDR's prefix (on-link route for free);
        // external hosts a host prefix plus explicit routes below.
        let prefix = pod_nets
            .iter()
            .find(|net| !external && net.contains(ip))
            .map_or(if ip.is_ipv6() { 128 } else { 32 }, IpNet::prefix_len);
        let addr = format!("{ip}/{prefix}");
        if ip.is_ipv6() {
            run(
                "ip",
                &["-n", n, "addr", "add", &addr, "dev", "eth0", "nodad"],
            )?;
        } else {
            run("ip", &["-n", n, "addr", "add", &addr, "dev", "eth0"])?;
        }
    }
    run("ip", &["-n", n, "link", "set", "eth0", "up"])?;
    let mut routes: Vec<IpNet> = Vec::new();
    if external {
        routes.extend(pod_nets.iter().copied());
    } else {
        routes.push(IpNet::V4(state.service_cidr));
        routes.extend(state.service_cidr_v6.map(IpNet::V6));
    }
    // External hosts are on the first node's bridge: reached on-link from
    // there only.
    if external || segment.map(|s| s.node) == first {
        routes.extend(documentation_ranges());
    }
    for route in routes {
        if route.network().is_ipv6() && !has_v6 {
            continue;
        }
        add_route(n, &route.to_string(), None)?;
    }
    if !external && let Some(own) = segment {
        let gateway = own.node_addresses().into_iter().find(IpAddr::is_ipv4);
        for other in state.segments().iter().filter(|s| s.bridge != own.bridge) {
            if let Some(gateway) = gateway {
                add_route(n, &other.pod_cidr.to_string(), Some(gateway))?;
            }
        }
    }
    Ok(())
}

/// `ip route add DST dev eth0 [via GATEWAY]` inside a netns; a route that
/// is already there (the prefix route of an address) is fine.
fn add_route(netns_name: &str, dst: &str, via: Option<IpAddr>) -> Result<()> {
    let gateway = via.map(|ip| ip.to_string());
    let mut args = vec!["-n", netns_name, "route", "add", dst];
    if let Some(gateway) = &gateway {
        args.extend(["via", gateway.as_str()]);
    }
    args.extend(["dev", "eth0"]);
    match run("ip", &args) {
        Ok(_) => Ok(()),
        Err(e @ cmd::CmdError::Failed { .. }) if e.to_string().contains("File exists") => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Load an nftables ruleset inside a netns.
///
/// # Errors
/// `nft` failures.
pub fn nft_in(netns_name: &str, ruleset: &str) -> Result<()> {
    cmd::run_with_stdin(
        "ip",
        &["netns", "exec", netns_name, "nft", "-f", "-"],
        Some(ruleset),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{plan::plan, spec::parse_str};

    /// Every range the lab claims is checked against the machine's routes,
    /// the service CIDRs as much as the pod CIDRs.
    #[test]
    fn a_route_over_any_lab_range_is_refused_naming_its_field() {
        let spec = parse_str(
            Path::new("lab.yaml"),
            "apiVersion: lab.weir.dev/v1alpha1\nkind: Lab\nspec: {podCIDR: 10.77.0.0/16, serviceCIDR: 10.200.0.0/16, dualStack: true}\n\
             ---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\n",
        )
        .unwrap();
        let state = plan(&"t".parse().unwrap(), &spec).unwrap();
        let ours = lab_cidrs(&state);
        let routes = |json: &str| serde_json::from_str::<Vec<serde_json::Value>>(json).unwrap();
        let cases = [
            (
                r#"[{"dst":"default","dev":"eth0"},{"dst":"10.200.3.0/24","dev":"eth9"}]"#,
                "spec.serviceCIDR 10.200.0.0/16 overlaps 10.200.3.0/24 already routed on this machine (dev eth9)",
            ),
            (
                r#"[{"dst":"10.0.0.0/8","dev":"wg0"}]"#,
                "spec.podCIDR 10.77.0.0/16 overlaps 10.0.0.0/8",
            ),
            (
                r#"[{"dst":"fd00:96::/120","dev":"eth1"}]"#,
                "spec.serviceCIDRv6",
            ),
            (r#"[{"dst":"fd00:88::5","dev":"eth1"}]"#, "spec.podCIDRv6"),
        ];
        for (json, want) in cases {
            let error = route_conflict(&ours, &routes(json))
                .unwrap_err()
                .to_string();
            assert!(error.contains(want), "want {want:?}\n got {error:?}");
        }
        let clear = r#"[{"dst":"default","dev":"eth0"},{"dst":"192.168.1.0/24","dev":"eth0"},{"dst":"fe80::/64","dev":"eth0"}]"#;
        assert!(route_conflict(&ours, &routes(clear)).is_ok());
    }
}
