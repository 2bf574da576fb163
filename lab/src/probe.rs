//! "Does a connection from A to B get through?" The socket is created on a
//! thread that has entered the source's netns (`setns`), so no process is
//! forked per probe and a matrix of hundreds of probes runs in parallel.
//!
//! TCP: connect, send a line, read the echo. UDP: send a datagram, wait for
//! the echo (resent a few times within the timeout). Anything else
//! (refused, unreachable, timeout, wrong echo) is "blocked".

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    str::FromStr,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde::Serialize;
use weir_generator::model::Protocol;

use super::{
    error::{LabError, Result},
    netns,
    state::LabState,
};

/// `PORT[/PROTO]` as on the command line (`80`, `53/UDP`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortProto {
    /// Port.
    pub port: u16,
    /// Protocol (default TCP).
    pub protocol: Protocol,
}

impl FromStr for PortProto {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (port, proto) = s.split_once('/').map_or((s, None), |(p, q)| (p, Some(q)));
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{port:?} is not a port number (1-65535)"))?;
        let protocol = match proto.map(str::parse::<Protocol>) {
            None => Protocol::Tcp,
            Some(Ok(p @ (Protocol::Tcp | Protocol::Udp))) => p,
            Some(Ok(p)) => return Err(format!("{p} probes are not supported (TCP or UDP)")),
            Some(Err(e)) => return Err(e.to_string()),
        };
        Ok(Self { port, protocol })
    }
}

/// Where a probe goes: an address as given, or a pod/external host's
/// address of the wanted family.
///
/// # Errors
/// [`LabError::UnknownEndpoint`] for unknown names or a missing family.
pub fn target_ip(state: &LabState, to: &str, ipv6: bool) -> Result<IpAddr> {
    if let Ok(ip) = to.parse::<IpAddr>() {
        return Ok(ip);
    }
    let (_, ips) = state.endpoint(to)?;
    ips.iter()
        .copied()
        .find(|ip| ip.is_ipv6() == ipv6)
        .ok_or_else(|| LabError::UnknownEndpoint {
            name: format!("{to} (no IPv{} address)", if ipv6 { 6 } else { 4 }),
            lab: state.lab.clone(),
        })
}

/// Resolve `name` from inside `from`'s netns through the lab's DNS
/// Service (its first ClusterIP of the asked family, else its first).
///
/// # Errors
/// No kube-dns Service in the lab, an unknown `from`, or no answer.
pub fn resolve(
    state: &LabState,
    from: &str,
    name: &str,
    ipv6: bool,
    timeout: Duration,
) -> Result<crate::dns::Lookup> {
    let (netns_name, _) = state.endpoint(from)?;
    let svc = crate::dns::dns_service(state).ok_or_else(|| LabError::Dns {
        reason: format!(
            "lab {} has no DNS: declare a kube-system Service selecting k8s-app: kube-dns and its pod with port 53",
            state.lab
        ),
    })?;
    let server = svc
        .cluster_ips
        .iter()
        .find(|ip| ip.is_ipv6() == ipv6)
        .or_else(|| svc.cluster_ips.first())
        .copied()
        .ok_or_else(|| LabError::Dns {
            reason: "the kube-dns Service has no ClusterIP".into(),
        })?;
    let server = SocketAddr::new(server, crate::dns::PORT);
    netns::run_in(netns_name, || {
        crate::dns::lookup(server, name, ipv6, timeout)
    })
}

/// The address `from` reaches `to` at: an IP, a pod's or external host's
/// address, or else a DNS name resolved through the lab's DNS from `from`
/// (the first address of the answer).
///
/// # Errors
/// An unknown endpoint, or a name that does not resolve.
pub fn target_ip_from(
    state: &LabState,
    from: &str,
    to: &str,
    ipv6: bool,
    timeout: Duration,
) -> Result<IpAddr> {
    match target_ip(state, to, ipv6) {
        Err(LabError::UnknownEndpoint { .. }) if to.contains('.') && !to.contains('/') => {
            let found = resolve(state, from, to, ipv6, timeout)?;
            found.ips.first().copied().ok_or_else(|| LabError::Dns {
                reason: format!("{to}: {} with no address", found.rcode),
            })
        }
        other => other,
    }
}

/// Probe from `from` (`namespace/pod` or an external host's name) to `to`
/// (the same, or an IP; names resolve to their IPv4 address).
/// `Ok(true)` when connected.
///
/// # Errors
/// Unknown endpoints and netns that cannot be entered; never for a blocked
/// connection.
pub fn probe(
    state: &LabState,
    from: &str,
    to: &str,
    port: u16,
    protocol: Protocol,
    timeout: Duration,
) -> Result<bool> {
    let (netns_name, _) = state.endpoint(from)?;
    let ip = target_ip(state, to, false)?;
    probe_addr(netns_name, SocketAddr::new(ip, port), protocol, timeout)
}

/// Probe `dst` from inside the named netns.
///
/// # Errors
/// When the netns cannot be entered.
pub fn probe_addr(
    netns_name: &str,
    dst: SocketAddr,
    protocol: Protocol,
    timeout: Duration,
) -> Result<bool> {
    netns::run_in(netns_name, || Ok(attempt(dst, protocol, timeout)))
}

/// One probe from the calling thread's netns.
fn attempt(dst: SocketAddr, protocol: Protocol, timeout: Duration) -> bool {
    let token = format!("weir-probe {dst} {:?}\n", Instant::now());
    let result = match protocol {
        Protocol::Udp => udp(dst, token.as_bytes(), timeout),
        _ => tcp(dst, token.as_bytes(), timeout),
    };
    match result {
        Ok(ok) => ok,
        Err(e) => {
            tracing::debug!(%dst, %e, "probe blocked");
            false
        }
    }
}

fn remaining(deadline: Instant) -> std::io::Result<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| std::io::ErrorKind::TimedOut.into())
}

fn tcp(dst: SocketAddr, token: &[u8], timeout: Duration) -> std::io::Result<bool> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&dst, timeout)?;
    stream.set_write_timeout(Some(remaining(deadline)?))?;
    stream.write_all(token)?;
    let mut echo = vec![0u8; token.len()];
    let mut got = 0;
    while got < echo.len() {
        stream.set_read_timeout(Some(remaining(deadline)?))?;
        let n = stream.read(&mut echo[got..])?;
        if n == 0 {
            return Ok(false);
        }
        got += n;
    }
    Ok(echo == token)
}

fn udp(dst: SocketAddr, token: &[u8], timeout: Duration) -> std::io::Result<bool> {
    let deadline = Instant::now() + timeout;
    let local: SocketAddr = if dst.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }
        .parse()
        .map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let socket = UdpSocket::bind(local)?;
    socket.connect(dst)?;
    // Resend a few times: a datagram can be lost while neighbours resolve.
    let tries = 3u32;
    let mut buf = vec![0u8; token.len() + 64];
    for _ in 0..tries {
        socket.send(token)?;
        let slice = (timeout / tries).min(remaining(deadline)?);
        socket.set_read_timeout(Some(slice))?;
        match socket.recv(&mut buf) {
            Ok(n) if &buf[..n] == token => return Ok(true),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// Results of probing every pod pair.
#[derive(Clone, Debug, Serialize)]
pub struct Matrix {
    /// Port probed.
    pub port: u16,
    /// Protocol probed.
    pub protocol: Protocol,
    /// IP family probed.
    pub family: &'static str,
    /// Pods, `namespace/name`, in row and column order.
    pub pods: Vec<String>,
    /// `connected[from][to]`.
    pub connected: Vec<Vec<bool>>,
}

/// Probe every (from, to) pair among the pods of `namespaces` (all when
/// empty), `concurrency` probes at a time.
///
/// # Errors
/// When a pod's netns cannot be entered.
pub fn matrix(
    state: &LabState,
    namespaces: &[String],
    target: PortProto,
    ipv6: bool,
    timeout: Duration,
    concurrency: usize,
) -> Result<Matrix> {
    let pods: Vec<_> = state
        .pods
        .iter()
        .filter(|p| namespaces.is_empty() || namespaces.contains(&p.namespace))
        .collect();
    let n = pods.len();
    let jobs: Vec<(usize, usize)> = (0..n).flat_map(|i| (0..n).map(move |j| (i, j))).collect();
    let next = Mutex::new(jobs.into_iter());
    let results = Mutex::new(vec![vec![false; n]; n]);
    let first_error: Mutex<Option<LabError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..concurrency.clamp(1, 256).min(n * n) {
            scope.spawn(|| {
                loop {
                    let job = next.lock().ok().and_then(|mut it| it.next());
                    let Some((i, j)) = job else { break };
                    let outcome = pods[j]
                        .ips
                        .iter()
                        .find(|ip| ip.is_ipv6() == ipv6)
                        .map(|ip| {
                            // Each worker is dedicated to probing: entering
                            // another netns per job is what it is for.
                            netns::enter(&pods[i].netns).map(|()| {
                                attempt(SocketAddr::new(*ip, target.port), target.protocol, timeout)
                            })
                        })
                        .unwrap_or(Ok(false));
                    match outcome {
                        Ok(ok) => {
                            if let Ok(mut r) = results.lock() {
                                r[i][j] = ok;
                            }
                        }
                        Err(e) => {
                            if let Ok(mut slot) = first_error.lock() {
                                slot.get_or_insert(e);
                            }
                            break;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    Ok(Matrix {
        port: target.port,
        protocol: target.protocol,
        family: if ipv6 { "IPv6" } else { "IPv4" },
        pods: pods.iter().map(|p| p.key()).collect(),
        connected: results.into_inner().unwrap_or_default(),
    })
}

impl Matrix {
    /// A cyclonus-style truth table: rows are sources, columns destinations
    /// (numbered, with a legend), `.` connected, `X` blocked.
    #[must_use]
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = format!(
            "{}/{} over {} (rows: from, columns: to; . connected, X blocked)\n",
            self.port, self.protocol, self.family
        );
        let width = self.pods.iter().map(String::len).max().unwrap_or(0);
        let label = |i: usize| format!("{i:>2} {:<width$}", self.pods[i]);
        let _ = write!(out, "{:width$}   ", "");
        for j in 0..self.pods.len() {
            let _ = write!(out, " {j:>2}");
        }
        out.push('\n');
        for (i, row) in self.connected.iter().enumerate() {
            out.push_str(&label(i));
            for cell in row {
                let _ = write!(out, "  {}", if *cell { '.' } else { 'X' });
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_proto_parses() {
        assert_eq!(
            "80".parse::<PortProto>().unwrap(),
            PortProto {
                port: 80,
                protocol: Protocol::Tcp
            }
        );
        assert_eq!(
            "53/udp".parse::<PortProto>().unwrap().protocol,
            Protocol::Udp
        );
        assert_eq!("53/UDP".parse::<PortProto>().unwrap().port, 53);
        for bad in ["0", "x", "70000", "80/SCTP", "80/gre"] {
            assert!(bad.parse::<PortProto>().is_err(), "{bad}");
        }
    }
}
