//! The kernel's tables as the decision needs them: plain data, filled by
//! [`super::rtnl`] from netlink or by tests from fixtures.

use std::{collections::HashMap, net::IpAddr};

/// An Ethernet address.
pub type Mac = [u8; 6];

/// What kind of device a link is (`IFLA_INFO_KIND`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// One end of a veth pair: what CNIs give pods.
    Veth,
    /// A Linux bridge (bridge CNI, flannel's `cni0`, the weir lab).
    Bridge,
    /// Anything else (uplinks, tunnels, `lo`, dummies).
    Other,
}

/// One network interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Interface index, in the namespace it was read from.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Device kind.
    pub kind: LinkKind,
    /// The bridge it is a port of (`IFLA_MASTER`).
    pub master: Option<u32>,
    /// For a veth: its peer's index, in the peer's namespace (`IFLA_LINK`).
    pub peer: Option<u32>,
    /// For a veth whose peer lives in another namespace: that namespace's
    /// id as the reading namespace knows it (`IFLA_LINK_NETNSID`).
    pub peer_netnsid: Option<i32>,
}

impl Link {
    /// A veth whose peer lives in another namespace: what a pod's host
    /// end is. A veth pair within the node (Cilium's `cilium_host` /
    /// `cilium_net`) is not.
    #[must_use]
    pub fn is_pod_veth(&self) -> bool {
        self.kind == LinkKind::Veth && self.peer_netnsid.is_some()
    }
}

/// An ARP or NDP entry of the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// The neighbour's address.
    pub ip: IpAddr,
    /// The interface it was resolved on.
    pub ifindex: u32,
    /// Its Ethernet address, when resolved.
    pub mac: Option<Mac>,
    /// Whether the entry can be trusted (not `INCOMPLETE` or `FAILED`).
    pub usable: bool,
}

/// A bridge forwarding database entry: which port a MAC was learned on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    /// The learned address.
    pub mac: Mac,
    /// The bridge port it is behind.
    pub port: u32,
    /// The bridge (`NDA_MASTER`).
    pub bridge: Option<u32>,
    /// A bridge's own address (`permanent`), not a learned one.
    pub local: bool,
}

/// What the kernel's route lookup (`RTM_GETROUTE`) says of an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind {
    /// The address is the node's own (`local` table).
    Local,
    /// Forwarded out of an interface.
    Unicast,
    /// No route, blackhole, prohibit or unreachable.
    Unreachable,
}

/// The answer of a route lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// Route type.
    pub kind: RouteKind,
    /// Output interface.
    pub oif: Option<u32>,
}

/// The node's interfaces, neighbours and bridge FDB at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostTables {
    /// Links by index.
    pub links: HashMap<u32, Link>,
    /// ARP and NDP entries.
    pub neighbours: Vec<Neighbour>,
    /// Every bridge's forwarding database.
    pub fdb: Vec<FdbEntry>,
}

impl HostTables {
    /// Index `links` by their index.
    #[must_use]
    pub fn new(links: Vec<Link>, neighbours: Vec<Neighbour>, fdb: Vec<FdbEntry>) -> Self {
        Self {
            links: links.into_iter().map(|l| (l.index, l)).collect(),
            neighbours,
            fdb,
        }
    }

    /// The link `index` if it is a veth.
    #[must_use]
    pub fn veth(&self, index: u32) -> Option<&Link> {
        self.links.get(&index).filter(|l| l.kind == LinkKind::Veth)
    }
}

/// Identifies a network namespace on this machine (its nsfs inode), so one
/// reached by several paths is read once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamespaceId {
    /// Device of the nsfs file.
    pub dev: u64,
    /// Inode of the nsfs file.
    pub ino: u64,
}

/// What one (pod) network namespace holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    /// Which namespace.
    pub id: NamespaceId,
    /// Its id as the node's namespace knows it (`RTM_GETNSID`), when the
    /// kernel assigned one (it does for a namespace holding a veth peer).
    pub nsid: Option<i32>,
    /// Its interfaces.
    pub links: Vec<Link>,
    /// Its addresses, by interface index.
    pub addrs: Vec<(u32, IpAddr)>,
}
