//! What the datapath tests share around `BPF_PROG_TEST_RUN`: the test-run
//! device is loopback, so flow keys name lo's ifindex.

use std::net::IpAddr;

use weir_ebpf::abi::{FAMILY_IPV4, FAMILY_IPV6, FlowKey};

/// Unwraps with the whole error chain in the panic message.
pub fn must<T, E: Into<anyhow::Error>>(what: &str, result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| panic!("{what}: {:#}", e.into()))
}

/// The index of lo, where test-run frames arrive.
pub fn lo_ifindex() -> u32 {
    must("if_nametoindex(lo)", nix::net::if_::if_nametoindex("lo"))
}

/// An address as the ABI stores it: IPv4 in the first 4 bytes.
pub fn addr16(ip: IpAddr) -> [u8; 16] {
    let mut out = [0; 16];
    match ip {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out = v6.octets(),
    }
    out
}

/// The ABI's `FAMILY_*` of an address.
pub fn family(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        FAMILY_IPV4
    } else {
        FAMILY_IPV6
    }
}

/// The key the programs build for a test-run frame of a flow at lo.
pub fn key(
    proto: u8,
    local: impl Into<IpAddr>,
    local_port: u16,
    remote: impl Into<IpAddr>,
    remote_port: u16,
) -> FlowKey {
    let (local, remote) = (local.into(), remote.into());
    FlowKey {
        ifindex: lo_ifindex(),
        family: family(local),
        proto,
        local_addr: addr16(local),
        remote_addr: addr16(remote),
        local_port,
        remote_port,
        ..FlowKey::default()
    }
}
