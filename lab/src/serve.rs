//! The responders behind each pod's containerPorts: TCP echo (accept, echo
//! what is read until EOF) and UDP echo (each datagram back to its sender).
//! `weir lab up` starts one `weir lab serve` per pod inside the pod's netns
//! (`ip netns exec`); it prints `ready` on stdout once every socket is bound,
//! so `up` returns only when the lab answers.

use std::{
    io::{self, Read, Write},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::Path,
    time::Duration,
};

use socket2::{Domain, Protocol as SockProtocol, Socket, Type};
use tracing::{debug, info, warn};

/// How long an idle echo connection is kept.
const IDLE: Duration = Duration::from_secs(300);

/// Bind `[::]:port` dual-stack, falling back to `0.0.0.0:port` where IPv6
/// is off, so one socket serves both families.
fn bind(port: u16, ty: Type) -> io::Result<Socket> {
    let proto = if ty == Type::STREAM {
        SockProtocol::TCP
    } else {
        SockProtocol::UDP
    };
    let v6 = Socket::new(Domain::IPV6, ty, Some(proto)).and_then(|s| {
        s.set_only_v6(false)?;
        s.set_reuse_address(true)?;
        s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
        Ok(s)
    });
    match v6 {
        Ok(s) => Ok(s),
        Err(e) => {
            debug!(%e, port, "no IPv6 socket, binding IPv4 only");
            let s = Socket::new(Domain::IPV4, ty, Some(proto))?;
            s.set_reuse_address(true)?;
            s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())?;
            Ok(s)
        }
    }
}

fn echo_tcp(mut stream: TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE))?;
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n])?;
    }
}

fn serve_tcp(listener: &TcpListener, port: u16) {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let peer = stream.peer_addr().ok();
                debug!(port, ?peer, "tcp connection");
                std::thread::spawn(move || {
                    if let Err(e) = echo_tcp(stream) {
                        debug!(%e, port, ?peer, "tcp echo ended");
                    }
                });
            }
            Err(e) => warn!(%e, port, "accept failed"),
        }
    }
}

fn serve_udp(socket: &UdpSocket, port: u16) {
    let mut buf = [0u8; 65536];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, peer)) => {
                debug!(port, %peer, n, "udp datagram");
                if let Err(e) = socket.send_to(&buf[..n], peer) {
                    debug!(%e, port, %peer, "udp echo failed");
                }
            }
            Err(e) => warn!(%e, port, "recv failed"),
        }
    }
}

/// Bind every port, report `ready` on stdout, then answer forever. With
/// `dns` (the zone file), port 53 answers DNS (the lab's CoreDNS) instead
/// of echoing.
///
/// # Errors
/// When a port cannot be bound.
pub fn serve(tcp: &[u16], udp: &[u16], dns: Option<&Path>) -> io::Result<()> {
    // Own session: the lab, not the terminal that ran `up`, decides when
    // responders end (`down` kills them).
    if let Err(e) = nix::unistd::setsid() {
        debug!(%e, "setsid");
    }
    let mut threads = Vec::new();
    let dns_port = |p: &&u16| dns.is_some() && **p == crate::dns::PORT;
    if let Some(zone) = dns {
        let udp_socket = UdpSocket::from(bind(crate::dns::PORT, Type::DGRAM)?);
        let tcp_socket = bind(crate::dns::PORT, Type::STREAM)?;
        tcp_socket.listen(128)?;
        threads.extend(crate::dns::spawn_server(
            zone.to_owned(),
            udp_socket,
            TcpListener::from(tcp_socket),
        ));
    }
    let (tcp, udp): (Vec<u16>, Vec<u16>) = (
        tcp.iter().filter(|p| !dns_port(p)).copied().collect(),
        udp.iter().filter(|p| !dns_port(p)).copied().collect(),
    );
    let mut listeners = Vec::new();
    for &port in &tcp {
        let s = bind(port, Type::STREAM)?;
        s.listen(128)?;
        listeners.push((TcpListener::from(s), port));
    }
    let mut sockets = Vec::new();
    for &port in &udp {
        sockets.push((UdpSocket::from(bind(port, Type::DGRAM)?), port));
    }
    for (listener, port) in listeners {
        threads.push(std::thread::spawn(move || serve_tcp(&listener, port)));
    }
    for (socket, port) in sockets {
        threads.push(std::thread::spawn(move || serve_udp(&socket, port)));
    }
    info!(?tcp, ?udp, dns = dns.is_some(), "responder ready");
    // The readiness protocol with `lab up`: one line, then stdout is unused.
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "ready")?;
    stdout.flush()?;
    drop(stdout);
    if threads.is_empty() {
        // No ports: stay alive as the pod's "pause" process.
        loop {
            std::thread::park();
        }
    }
    for t in threads {
        if t.join().is_err() {
            warn!("responder thread panicked");
        }
    }
    Ok(())
}
