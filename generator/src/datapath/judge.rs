//! The kernel's verdict algorithm, simulated on a [`DatapathState`].

use std::net::IpAddr;

use ipnet::IpNet;

use super::{
    DatapathState, ID_ANY, ID_HOST, ID_WORLD, Mode, PeerKey, PodKey, RuleKey, isolated_flag,
    rules_flag,
};
use crate::{
    eval::{DenyReason, Direction},
    model::Protocol,
};

/// Why the datapath lets a packet through or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The pod has no ENDPOINTS entry: nothing to enforce.
    NoEndpoint,
    /// The peer is the node ([`ID_HOST`]).
    Host,
    /// The endpoint is not isolated for the direction.
    NotIsolated,
    /// A POLICY entry allows it: its rule id.
    Rule(u32),
    /// Denied, as the evaluator explains it.
    Denied(DenyReason),
}

impl Reason {
    /// `WEIR_REASON_*` (0 when allowed).
    #[must_use]
    pub const fn code(self) -> u8 {
        match self {
            Self::Denied(DenyReason::DefaultDeny) => 1,
            Self::Denied(DenyReason::PeerNotAllowed) => 2,
            Self::Denied(DenyReason::PortNotAllowed) => 3,
            _ => 0,
        }
    }
}

/// What [`DatapathState::judge`] decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Judgement {
    /// Whether the policies allow the flow in this direction.
    pub allowed: bool,
    /// Why.
    pub reason: Reason,
    /// The identity the peer address resolved to.
    pub peer: u32,
}

impl Judgement {
    /// `WEIR_VERDICT_*` for an endpoint in `mode`: 0 forwarded (allowed,
    /// or observe mode, which judges nothing), 1 audit, 2 dropped.
    #[must_use]
    pub const fn verdict(&self, mode: Mode) -> u8 {
        match (self.allowed, mode) {
            (true, _) | (false, Mode::Observe) => 0,
            (false, Mode::Audit) => 1,
            (false, Mode::Enforce) => 2,
        }
    }
}

impl DatapathState {
    /// The identity the datapath gives `ip`: the exact address in
    /// IDENTITIES, else [`resolve_cidr`](Self::resolve_cidr), else
    /// [`ID_WORLD`].
    #[must_use]
    pub fn resolve(&self, ip: IpAddr) -> u32 {
        if let Some(&id) = self.ips.get(&ip) {
            return id;
        }
        self.resolve_cidr(ip).unwrap_or(ID_WORLD)
    }

    /// The identity of the longest CIDRS prefix holding `ip`, if any: an
    /// external address's identity, and a pod address's second one (an
    /// `ipBlock` matches pods too).
    #[must_use]
    pub fn resolve_cidr(&self, ip: IpAddr) -> Option<u32> {
        let max = match ip {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        (0..=max).rev().find_map(|len| {
            let net = IpNet::new(ip, len).expect("len <= max").trunc();
            self.cidrs.get(&net).copied()
        })
    }

    /// The POLICY_EXACT lookup: the rule of exactly this (endpoint,
    /// direction, protocol, peer, port).
    #[must_use]
    pub fn lookup_exact(
        &self,
        endpoint: u32,
        direction: Direction,
        protocol: u8,
        peer: u32,
        port: u16,
    ) -> Option<u32> {
        let key = RuleKey {
            endpoint,
            direction,
            protocol,
            peer,
            port,
            port_prefix: 16,
        };
        key.is_exact()
            .then(|| self.rules.get(&key).copied())
            .flatten()
    }

    /// The POLICY trie lookup: the longest-prefix entry for this exact
    /// (endpoint, direction, protocol, peer) and `port`, among the rules
    /// the trie holds (not [`RuleKey::is_exact`] ones).
    #[must_use]
    pub fn lookup_rule(
        &self,
        endpoint: u32,
        direction: Direction,
        protocol: u8,
        peer: u32,
        port: u16,
    ) -> Option<u32> {
        (0..=16u8).rev().find_map(|port_prefix| {
            let key = RuleKey {
                endpoint,
                direction,
                protocol,
                peer,
                port: port & super::prefix_mask(port_prefix),
                port_prefix,
            };
            if key.is_exact() {
                return None;
            }
            self.rules.get(&key).copied()
        })
    }

    /// Judge the first packet of a flow at `endpoint`'s veth, as the kernel
    /// does: `direction` is the endpoint's (egress: it opens the flow to
    /// `peer_ip`; ingress: `peer_ip` opens it to the endpoint), `port` the
    /// destination port (ignored, as 0, for ICMP). Modes are not looked at
    /// ([`Judgement::verdict`] applies them).
    ///
    /// 1. ENDPOINTS\[endpoint\]; none: not enforced.
    /// 2. Peer identity: [`resolve`](Self::resolve); [`ID_HOST`] is allowed.
    /// 3. Not `EP_ISOLATED_<dir>`: allowed. No `EP_RULES_<dir>`: default deny.
    /// 4. First hit allows: POLICY_EXACT (peer, protocol, port) and (any
    ///    peer, protocol, port) unless ICMP; then POLICY (longest port
    ///    prefix each): (peer, protocol), (peer, any protocol), (any peer,
    ///    protocol), (any peer, any protocol).
    /// 5. A pod peer (its address in IDENTITIES) with a CIDR identity too
    ///    ([`resolve_cidr`](Self::resolve_cidr)), for the `ipBlock`s that
    ///    hold its address: POLICY_EXACT (cidr, protocol, port) unless
    ///    ICMP, then POLICY (cidr, protocol), (cidr, any protocol).
    /// 6. Denied: port-not-allowed if PEERS has (endpoint, dir, peer),
    ///    (endpoint, dir, cidr) or (endpoint, dir, any), else
    ///    peer-not-allowed.
    #[must_use]
    pub fn judge(
        &self,
        endpoint: &PodKey,
        direction: Direction,
        peer_ip: IpAddr,
        protocol: Protocol,
        port: u16,
    ) -> Judgement {
        let Some(ep) = self.endpoints.get(endpoint) else {
            return Judgement {
                allowed: true,
                reason: Reason::NoEndpoint,
                peer: ID_ANY,
            };
        };
        let peer = self.resolve(peer_ip);
        let done = |allowed, reason| Judgement {
            allowed,
            reason,
            peer,
        };
        if peer == ID_HOST {
            return done(true, Reason::Host);
        }
        if ep.flags & isolated_flag(direction) == 0 {
            return done(true, Reason::NotIsolated);
        }
        if ep.flags & rules_flag(direction) == 0 {
            return done(false, Reason::Denied(DenyReason::DefaultDeny));
        }
        let proto = protocol.number();
        let port = if protocol.has_ports() { port } else { 0 };
        if protocol.has_ports() {
            for p in [peer, ID_ANY] {
                if let Some(rule) = self.lookup_exact(ep.identity, direction, proto, p, port) {
                    return done(true, Reason::Rule(rule));
                }
            }
        }
        for (p, pr) in [(peer, proto), (peer, 0), (ID_ANY, proto), (ID_ANY, 0)] {
            if let Some(rule) = self.lookup_rule(ep.identity, direction, pr, p, port) {
                return done(true, Reason::Rule(rule));
            }
        }
        let cidr = if self.ips.contains_key(&peer_ip) {
            self.resolve_cidr(peer_ip)
        } else {
            None
        };
        if let Some(c) = cidr {
            let exact = protocol
                .has_ports()
                .then(|| self.lookup_exact(ep.identity, direction, proto, c, port))
                .flatten();
            let rule = exact.or_else(|| {
                [proto, 0]
                    .into_iter()
                    .find_map(|pr| self.lookup_rule(ep.identity, direction, pr, c, port))
            });
            if let Some(rule) = rule {
                return done(true, Reason::Rule(rule));
            }
        }
        let named = [Some(peer), cidr, Some(ID_ANY)]
            .into_iter()
            .flatten()
            .any(|p| {
                self.peers.contains(&PeerKey {
                    endpoint: ep.identity,
                    direction,
                    peer: p,
                })
            });
        done(
            false,
            Reason::Denied(if named {
                DenyReason::PortNotAllowed
            } else {
                DenyReason::PeerNotAllowed
            }),
        )
    }
}
