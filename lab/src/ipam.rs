//! Deterministic address assignment: the same spec always gives the same
//! addresses, whatever the order of files and documents, because pods are
//! assigned in (namespace, name) order after explicit addresses are taken.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::IpNet;

/// The node's (bridge's) address: the first host address of the range.
#[must_use]
pub fn node_address(net: IpNet) -> Option<IpAddr> {
    address_at(net, 1)
}

/// The address `offset` after the network address, if inside `net`.
#[must_use]
pub fn address_at(net: IpNet, offset: u128) -> Option<IpAddr> {
    let ip = match net {
        IpNet::V4(n) => {
            let base = u128::from(u32::from(n.network()));
            IpAddr::V4(Ipv4Addr::from(
                u32::try_from(base.checked_add(offset)?).ok()?,
            ))
        }
        IpNet::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n.network()).checked_add(offset)?)),
    };
    net.contains(&ip).then_some(ip)
}

/// Offset of `ip` from the network address of `net`.
#[must_use]
pub fn offset_of(net: IpNet, ip: IpAddr) -> Option<u128> {
    if !net.contains(&ip) {
        return None;
    }
    match (net, ip) {
        (IpNet::V4(n), IpAddr::V4(a)) => Some(u128::from(u32::from(a) - u32::from(n.network()))),
        (IpNet::V6(n), IpAddr::V6(a)) => Some(u128::from(a) - u128::from(n.network())),
        _ => None,
    }
}

/// Hands out addresses of one range in ascending order, skipping taken
/// ones, the network address, `first_offset - 1` reserved offsets and (for
/// IPv4) the broadcast address.
#[derive(Clone, Debug)]
pub struct Allocator {
    net: IpNet,
    next: u128,
    taken: BTreeSet<IpAddr>,
}

impl Allocator {
    /// An allocator whose first candidate is `first_offset` into `net`.
    #[must_use]
    pub fn new(net: IpNet, first_offset: u128) -> Self {
        Self {
            net,
            next: first_offset.max(1),
            taken: BTreeSet::new(),
        }
    }

    /// Mark an address used (explicit addresses, before assigning).
    pub fn take(&mut self, ip: IpAddr) {
        self.taken.insert(ip);
    }

    /// Whether `ip` may still be handed out.
    fn usable(&self, ip: IpAddr) -> bool {
        let broadcast = matches!(self.net, IpNet::V4(n) if IpAddr::V4(n.broadcast()) == ip);
        !broadcast && !self.taken.contains(&ip)
    }

    /// Take the address at `offset` if it is free (pairs a pod's IPv6
    /// address with its IPv4 one: 10.88.0.7 and fd00:88::7).
    pub fn take_offset(&mut self, offset: u128) -> Option<IpAddr> {
        let ip = address_at(self.net, offset)?;
        (offset >= 1 && self.usable(ip) && Some(ip) != node_address(self.net)).then(|| {
            self.taken.insert(ip);
            ip
        })
    }

    /// The next free address, or `None` when the range is exhausted.
    pub fn next_free(&mut self) -> Option<IpAddr> {
        loop {
            let ip = address_at(self.net, self.next)?;
            self.next += 1;
            if self.usable(ip) {
                self.taken.insert(ip);
                return Some(ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_in_order_skipping_taken_and_reserved() {
        let net: IpNet = "10.88.0.0/29".parse().unwrap();
        let mut a = Allocator::new(net, 2);
        a.take("10.88.0.3".parse().unwrap());
        let got: Vec<String> = std::iter::from_fn(|| a.next_free())
            .map(|ip| ip.to_string())
            .collect();
        assert_eq!(got, ["10.88.0.2", "10.88.0.4", "10.88.0.5", "10.88.0.6"]);
        assert_eq!(node_address(net).unwrap().to_string(), "10.88.0.1");
    }

    #[test]
    fn v6_pairs_with_v4_offsets() {
        let v4: IpNet = "10.88.0.0/16".parse().unwrap();
        let v6: IpNet = "fd00:88::/64".parse().unwrap();
        let mut a4 = Allocator::new(v4, 2);
        let mut a6 = Allocator::new(v6, 2);
        let ip4 = a4.next_free().unwrap();
        let ip6 = a6.take_offset(offset_of(v4, ip4).unwrap()).unwrap();
        assert_eq!(
            (ip4.to_string(), ip6.to_string()),
            ("10.88.0.2".into(), "fd00:88::2".into())
        );
        assert!(a6.take_offset(2).is_none(), "taken twice");
        assert!(a6.take_offset(1).is_none(), "node address");
    }

    #[test]
    fn same_input_same_output() {
        let net: IpNet = "fd00:1::/120".parse().unwrap();
        let run = || {
            let mut a = Allocator::new(net, 10);
            (0..5).filter_map(|_| a.next_free()).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }
}
