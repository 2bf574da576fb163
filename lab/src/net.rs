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
    state::LabState,
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
fn lab_cidrs(state: &LabState) -> Vec<(&'static str, IpNet)> {
    [
        ("spec.podCIDR", Some(IpNet::V4(state.pod_cidr))),
        ("spec.podCIDRv6", state.pod_cidr_v6.map(IpNet::V6)),
        ("spec.serviceCIDR", Some(IpNet::V4(state.service_cidr))),
        ("spec.serviceCIDRv6", state.service_cidr_v6.map(IpNet::V6)),
    ]
    .into_iter()
    .filter_map(|(field, net)| Some((field, net?)))
    .collect()
}

/// The first of `ours` that a route of `ip -j route show` overlaps.
fn route_conflict(ours: &[(&'static str, IpNet)], routes: &[serde_json::Value]) -> Result<()> {
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
                field,
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
/// between the lab bridge and another interface is dropped, and the host
/// accepts from the bridge only what is addressed to the node address.
/// Bridged traffic (pod to pod) is not routed and does not match; with
/// `br_netfilter` it is seen with both interfaces equal to the bridge,
/// which the forward rules let through.
#[must_use]
pub fn firewall_ruleset(table: &str, state: &LabState) -> String {
    let bridge = &state.bridge;
    let mut input = String::new();
    for (ip, _) in node_nets(state) {
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
    format!(
        "table inet {table} {{\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter - 10; policy accept;\n\
         \t\tiifname \"{bridge}\" oifname != \"{bridge}\" counter drop comment \"weir lab: never route to the uplink\"\n\
         \t\toifname \"{bridge}\" iifname != \"{bridge}\" counter drop comment \"weir lab: never route from the uplink\"\n\
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

/// Create the bridge with the node addresses. No STP, no forward delay
/// (ports forward at once), no IGMP/MLD snooping surprises, and no call
/// into iptables from the bridge for this bridge.
///
/// # Errors
/// `ip` failures.
pub fn add_bridge(state: &LabState) -> Result<()> {
    let br = state.bridge.as_str();
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
    if state.pod_cidr_v6.is_some() {
        // Addresses are usable at once: nothing else can hold them.
        write_root_sysctl(&format!("/proc/sys/net/ipv6/conf/{br}/accept_dad"), "0")?;
    }
    // Answer ARP on the bridge only for the node address, not for the
    // host's other addresses (an external host may use the same
    // documentation address as the uplink).
    write_root_sysctl(&format!("/proc/sys/net/ipv4/conf/{br}/arp_ignore"), "1")?;
    for net in node_nets(state) {
        let addr = format!("{}/{}", net.0, net.1.prefix_len());
        if net.0.is_ipv6() {
            run("ip", &["addr", "add", &addr, "dev", br, "nodad"])?;
        } else {
            run("ip", &["addr", "add", &addr, "dev", br])?;
        }
    }
    run("ip", &["link", "set", br, "up"])?;
    Ok(())
}

fn node_nets(state: &LabState) -> Vec<(IpAddr, IpNet)> {
    std::iter::once(IpNet::V4(state.pod_cidr))
        .chain(state.pod_cidr_v6.map(IpNet::V6))
        .filter_map(|net| node_address(net).map(|ip| (ip, net)))
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
/// on-link routes to the lab's ranges and the documentation ranges, and no
/// default route, so nothing can leave the lab.
///
/// # Errors
/// `ip` failures.
pub fn configure_inside(
    state: &LabState,
    netns_name: &str,
    ips: &[IpAddr],
    external: bool,
) -> Result<()> {
    let has_v6 = ips.iter().any(IpAddr::is_ipv6);
    if has_v6 {
        netns::run_in(netns_name, || {
            netns::write_sysctl("/proc/sys/net/ipv6/conf/eth0/accept_dad", "0")
        })?;
    }
    let n = netns_name;
    run("ip", &["-n", n, "link", "set", "lo", "up"])?;
    let pod_nets: Vec<IpNet> = std::iter::once(IpNet::V4(state.pod_cidr))
        .chain(state.pod_cidr_v6.map(IpNet::V6))
        .collect();
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
    let mut routes: Vec<IpNet> = documentation_ranges();
    if external {
        routes.extend(pod_nets.iter().copied());
    } else {
        routes.push(IpNet::V4(state.service_cidr));
        routes.extend(state.service_cidr_v6.map(IpNet::V6));
    }
    for route in routes {
        if route.network().is_ipv6() && !has_v6 {
            continue;
        }
        let dst = route.to_string();
        match run("ip", &["-n", n, "route", "add", &dst, "dev", "eth0"]) {
            Ok(_) => {}
            // Already there as the prefix route of an address.
            Err(e @ cmd::CmdError::Failed { .. }) if e.to_string().contains("File exists") => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
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
