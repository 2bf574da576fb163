//! Connections the probes did not see open: those already established when
//! a pod was attached, and flows whose table entry was recreated mid-stream
//! (after an idle expiry). The pod's sockets say who is the client.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use weir_ebpf::abi::{self, FlowKey};
use weir_generator::model::Protocol;

use crate::{
    flow::{DenyReason, Initiator, Observation, Verdict},
    sockets::{self, PodSockets},
};

/// How long a pod's socket table is trusted before a guessed flow re-reads it.
const REFRESH: Duration = Duration::from_secs(10);

/// Socket knowledge per attached endpoint (host veth ifindex).
#[derive(Debug, Default)]
pub(super) struct SocketHints {
    by_endpoint: HashMap<u32, (Instant, PodSockets)>,
}

impl SocketHints {
    /// Read the sockets of the pod behind `ifindex` (holding `ips`).
    pub(super) fn read(&mut self, ifindex: u32, ips: &[IpAddr]) -> Option<&PodSockets> {
        let sockets = sockets::find_pod_sockets(&sockets::named_namespaces(), ips)?;
        self.by_endpoint.insert(ifindex, (Instant::now(), sockets));
        self.by_endpoint.get(&ifindex).map(|(_, s)| s)
    }

    /// Forget endpoints that are gone.
    pub(super) fn retain(&mut self, keep: impl Fn(u32) -> bool) {
        self.by_endpoint.retain(|ifindex, _| keep(*ifindex));
    }

    /// Decide the initiator of a flow the kernel could only guess, from the
    /// pod's sockets (re-read when stale): the side whose port listens is the
    /// responder. Unsettled guesses keep the kernel's first-packet answer.
    pub(super) fn settle(&mut self, obs: &mut Observation, ips: Option<&[IpAddr]>) {
        if !obs.initiator_guessed {
            return;
        }
        let fresh = self
            .by_endpoint
            .get(&obs.ifindex)
            .is_some_and(|(at, _)| at.elapsed() < REFRESH);
        if !fresh && let Some(ips) = ips {
            self.read(obs.ifindex, ips);
        }
        if let Some((_, sockets)) = self.by_endpoint.get(&obs.ifindex)
            && let Some(initiator) = initiator_from_sockets(obs, sockets)
        {
            obs.initiator = initiator;
            obs.initiator_guessed = false;
        }
    }
}

/// Who opened `obs`, if the pod's sockets tell.
fn initiator_from_sockets(obs: &Observation, sockets: &PodSockets) -> Option<Initiator> {
    if sockets.listens(obs.protocol, obs.local.port()) {
        Some(Initiator::Remote)
    } else if sockets
        .established
        .iter()
        .any(|&(l, r)| l == obs.local && r == obs.remote)
    {
        // The pod holds a client socket to the peer.
        Some(Initiator::Local)
    } else {
        None
    }
}

/// The established TCP connections of a pod, as first reports of flows seen
/// at `ifindex`, with the flow-table key each would have.
pub(super) fn open_connections(
    ifindex: u32,
    sockets: &PodSockets,
    now_unix_ns: u64,
) -> Vec<(FlowKey, Observation)> {
    sockets
        .established
        .iter()
        .filter(|(local, remote)| !local.ip().is_loopback() && !remote.ip().is_loopback())
        .filter_map(|&(local, remote)| {
            let key = flow_key(ifindex, local, remote)?;
            let initiator = if sockets.listens(Protocol::Tcp, local.port()) {
                Initiator::Remote
            } else {
                Initiator::Local
            };
            let obs = Observation {
                ifindex,
                protocol: Protocol::Tcp,
                local,
                remote,
                initiator,
                initiator_guessed: false,
                new_flow: true,
                connections: 1,
                closed: false,
                packets_from_pod: 0,
                bytes_from_pod: 0,
                packets_to_pod: 0,
                bytes_to_pod: 0,
                tcp_flags_from_pod: 0,
                tcp_flags_to_pod: 0,
                icmp: None,
                first_seen: now_unix_ns,
                last_seen: now_unix_ns,
                kernel_time: 0,
                verdict: Verdict::Forwarded,
                reason: DenyReason::None,
                direction: None,
                policies: Vec::new(),
                folded: Some(crate::tracker::ADOPTED),
            };
            Some((key, obs))
        })
        .collect()
}

/// The flow-table key of a TCP connection seen at `ifindex`.
fn flow_key(ifindex: u32, local: SocketAddr, remote: SocketAddr) -> Option<FlowKey> {
    let (family, local_addr, remote_addr) = match (local.ip(), remote.ip()) {
        (IpAddr::V4(l), IpAddr::V4(r)) => (abi::FAMILY_IPV4, pad(l.octets()), pad(r.octets())),
        (IpAddr::V6(l), IpAddr::V6(r)) => (abi::FAMILY_IPV6, l.octets(), r.octets()),
        _ => return None,
    };
    Some(FlowKey {
        ifindex,
        family,
        proto: Protocol::Tcp.number(),
        local_addr,
        remote_addr,
        local_port: local.port(),
        remote_port: remote.port(),
        ..FlowKey::default()
    })
}

fn pad(v4: [u8; 4]) -> [u8; 16] {
    let mut out = [0; 16];
    out[..4].copy_from_slice(&v4);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn sockets() -> PodSockets {
        PodSockets {
            listening: BTreeSet::from([(Protocol::Tcp, 8080), (Protocol::Udp, 53)]),
            established: vec![
                (
                    "10.0.0.6:8080".parse().unwrap(),
                    "10.0.0.8:50000".parse().unwrap(),
                ),
                (
                    "10.0.0.6:54321".parse().unwrap(),
                    "10.0.0.5:6379".parse().unwrap(),
                ),
                (
                    "127.0.0.1:1".parse().unwrap(),
                    "127.0.0.1:2".parse().unwrap(),
                ),
            ],
        }
    }

    #[test]
    fn open_connections_know_their_initiator_and_key() {
        let found = open_connections(7, &sockets(), 42);
        assert_eq!(found.len(), 2, "loopback is not pod traffic");
        let (key, served) = &found[0];
        assert_eq!(served.initiator, Initiator::Remote, "8080 listens");
        assert_eq!((key.local_port, key.remote_port), (8080, 50000));
        assert_eq!(&key.local_addr[..4], &[10, 0, 0, 6]);
        assert_eq!(found[1].1.initiator, Initiator::Local, "client socket");
        assert!(found.iter().all(|(_, o)| o.new_flow && o.first_seen == 42));
    }

    #[test]
    fn guesses_are_settled_by_listening_ports() {
        let (_, mut obs) = open_connections(7, &sockets(), 0).remove(0);
        let mut hints = SocketHints::default();
        hints.by_endpoint.insert(7, (Instant::now(), sockets()));
        // The server spoke first after an idle expiry: the kernel guessed Local.
        obs.initiator = Initiator::Local;
        obs.initiator_guessed = true;
        hints.settle(&mut obs, None);
        assert_eq!(obs.initiator, Initiator::Remote);
        assert!(!obs.initiator_guessed);

        // A flow the sockets know nothing of keeps the kernel's guess.
        obs.local = "10.0.0.6:9999".parse().unwrap();
        obs.initiator = Initiator::Local;
        obs.initiator_guessed = true;
        hints.settle(&mut obs, None);
        assert_eq!(obs.initiator, Initiator::Local);
        assert!(obs.initiator_guessed);
    }
}
