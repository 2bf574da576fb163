//! Connections that were open before the probes attached.
//!
//! A probe attached to a busy pod sees mid-stream packets: no SYN says who
//! opened the connection, and an idle keep-alive connection sends nothing at
//! all. The pod's own sockets know both: every established TCP socket is a
//! connection, and the side whose port is a listening socket is the
//! responder. This module reads them from `/proc/thread-self/net/{tcp,tcp6,
//! udp,udp6}` inside the pod's network namespace.
//!
//! Pod network namespaces are found under `/run/netns`, where `ip netns`,
//! CNI plugins run by containerd and CRI-O, and the weir lab bind-mount them;
//! the one holding a pod's IP is the pod's.

use std::{
    collections::BTreeSet,
    fs::File,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
};

use nix::sched::{CloneFlags, setns};
use weir_generator::model::Protocol;

/// Where CNI runtimes and `ip netns` keep named network namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// What a pod's sockets say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodSockets {
    /// Ports with a listening TCP socket, or a bound unconnected UDP socket.
    pub listening: BTreeSet<(Protocol, u16)>,
    /// Established TCP connections as (local, remote).
    pub established: Vec<(SocketAddr, SocketAddr)>,
}

impl PodSockets {
    /// Whether the pod serves `port`.
    #[must_use]
    pub fn listens(&self, protocol: Protocol, port: u16) -> bool {
        self.listening.contains(&(protocol, port))
    }
}

/// TCP states in `/proc/net/tcp` (include/net/tcp_states.h).
const TCP_ESTABLISHED: u8 = 0x01;
const TCP_LISTEN: u8 = 0x0A;
/// A UDP socket "in state 07" (TCP_CLOSE) with no remote address is bound
/// and unconnected: a server.
const UDP_UNCONNECTED: u8 = 0x07;

/// Parse one `/proc/net/{tcp,tcp6,udp,udp6}` table into `out`. Lines that do
/// not parse are skipped: the format is the kernel's, stable since 2.6.
pub fn parse_table(text: &str, protocol: Protocol, out: &mut PodSockets) {
    for line in text.lines().skip(1) {
        let mut fields = line.split_whitespace();
        let (Some(_slot), Some(local), Some(remote), Some(state)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (Some(local), Some(remote), Ok(state)) = (
            parse_addr(local),
            parse_addr(remote),
            u8::from_str_radix(state, 16),
        ) else {
            continue;
        };
        match (protocol, state) {
            (Protocol::Tcp, TCP_LISTEN) => {
                out.listening.insert((protocol, local.port()));
            }
            (Protocol::Tcp, TCP_ESTABLISHED) => out.established.push((local, remote)),
            (Protocol::Udp, UDP_UNCONNECTED) if remote.port() == 0 => {
                out.listening.insert((protocol, local.port()));
            }
            _ => {}
        }
    }
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6). The kernel
/// prints each 32-bit word of the address in host byte order.
fn parse_addr(field: &str) -> Option<SocketAddr> {
    let (addr, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(addr, 16).ok()?.to_ne_bytes(),
        )),
        32 => {
            let mut bytes = [0_u8; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                let word = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            let v6 = Ipv6Addr::from(bytes);
            // Dual-stack sockets show IPv4 peers as v4-mapped addresses.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The sockets of the network namespace at `netns`, and whether it holds
/// any of `ips`; `Ok(None)` when it does not (not this pod's namespace).
///
/// # Errors
/// The namespace cannot be opened or entered, or its tables read.
pub fn read_if_holds(netns: &Path, ips: &[IpAddr]) -> io::Result<Option<PodSockets>> {
    let file = File::open(netns)?;
    let ips = ips.to_vec();
    // setns() changes the calling thread only: a short-lived thread keeps
    // the agent's own threads in the host namespace.
    std::thread::scope(|scope| {
        scope
            .spawn(move || -> io::Result<Option<PodSockets>> {
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                let holds = nix::ifaddrs::getifaddrs()
                    .map_err(io::Error::from)?
                    .filter_map(|a| a.address)
                    .filter_map(|a| {
                        a.as_sockaddr_in()
                            .map(|s| IpAddr::V4(s.ip()))
                            .or_else(|| a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
                    })
                    .any(|ip| ips.contains(&ip));
                if !holds {
                    return Ok(None);
                }
                let mut sockets = PodSockets::default();
                for (table, protocol) in [
                    ("tcp", Protocol::Tcp),
                    ("tcp6", Protocol::Tcp),
                    ("udp", Protocol::Udp),
                    ("udp6", Protocol::Udp),
                ] {
                    // IPv6 may be disabled in the namespace: no table, nothing to read.
                    if let Ok(text) =
                        std::fs::read_to_string(format!("/proc/thread-self/net/{table}"))
                    {
                        parse_table(&text, protocol, &mut sockets);
                    }
                }
                Ok(Some(sockets))
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("socket reader thread panicked")))
    })
}

/// The named network namespaces on this machine.
#[must_use]
pub fn named_namespaces() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(NETNS_DIR)
        .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    paths.sort();
    paths
}

/// The sockets of the pod holding `ips`, searched among `candidates`.
#[must_use]
pub fn find_pod_sockets(candidates: &[PathBuf], ips: &[IpAddr]) -> Option<PodSockets> {
    candidates
        .iter()
        .find_map(|netns| read_if_holds(netns, ips).ok().flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real lines from a pod serving 8080 with one client connected, and a
    // connection it opened itself to 10.88.0.5:6379.
    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0600580A:1F90 0800580A:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
   2: 0600580A:D431 0500580A:18EB 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 20 4 30 10 -1
garbage line
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st
   0: 000080FD000000000000000006000000:1F90 000080FD000000000000000008000000:C351 01 00000000:00000000
   1: 0000000000000000FFFF00000600580A:1F90 0000000000000000FFFF00000900580A:C352 01 00000000:00000000
";
    const UDP: &str = "   sl  local_address rem_address   st
  1: 00000000:0035 00000000:0000 07 00000000:00000000
  2: 0600580A:E000 0300580A:0035 01 00000000:00000000
";

    #[test]
    fn tables_give_listeners_and_connections() {
        let mut s = PodSockets::default();
        parse_table(TCP, Protocol::Tcp, &mut s);
        parse_table(TCP6, Protocol::Tcp, &mut s);
        parse_table(UDP, Protocol::Udp, &mut s);
        assert!(s.listens(Protocol::Tcp, 8080));
        assert!(s.listens(Protocol::Udp, 53));
        assert!(
            !s.listens(Protocol::Udp, 0xE000),
            "a connected UDP socket is a client"
        );
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            s.established,
            vec![
                (addr("10.88.0.6:8080"), addr("10.88.0.8:50000")),
                (addr("10.88.0.6:54321"), addr("10.88.0.5:6379")),
                (addr("[fd80::6]:8080"), addr("[fd80::8]:50001")),
                (addr("10.88.0.6:8080"), addr("10.88.0.9:50002")),
            ]
        );
    }
}
