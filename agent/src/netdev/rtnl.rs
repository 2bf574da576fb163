//! Thin rtnetlink I/O: dumps and lookups turned into [`super::tables`]
//! types. A socket answers for the network namespace its creating thread
//! was in, so opening one on a thread that entered a pod's namespace reads
//! that namespace.

use std::{io, net::IpAddr, os::fd::AsRawFd};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage},
    link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    nsid::{NsidAttribute, NsidMessage},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteType},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use tracing::debug;

use super::tables::{FdbEntry, Link, LinkKind, Mac, Neighbour, Route, RouteKind};

/// An rtnetlink socket in the calling thread's network namespace.
pub struct Rtnl {
    socket: Socket,
    seq: u32,
}

impl Rtnl {
    /// Open a socket in the calling thread's namespace.
    ///
    /// # Errors
    /// The socket cannot be created or bound.
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self { socket, seq: 0 })
    }

    /// Send one request and collect its answers: every part of a dump, or
    /// the single reply of a lookup.
    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        dump: bool,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = if dump {
            NLM_F_REQUEST | NLM_F_DUMP
        } else {
            NLM_F_REQUEST
        };
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let mut out = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full()?;
            let mut offset = 0;
            while let Some(rest) = data.get(offset..).filter(|r| r.len() >= 16) {
                // nlmsghdr: length (u32), type, flags, sequence (u32).
                let length = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let seq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
                if length < 16 || length > rest.len() {
                    break;
                }
                offset += (length + 3) & !3;
                if seq != self.seq {
                    continue;
                }
                let parsed =
                    match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rest[..length]) {
                        Ok(parsed) => parsed,
                        Err(error) => {
                            // One entry this crate cannot parse costs that entry only.
                            debug!(%error, "undecodable netlink message skipped");
                            continue;
                        }
                    };
                match parsed.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(error) if error.code.is_some() => {
                        return Err(error.to_io());
                    }
                    NetlinkPayload::Error(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(message) => {
                        out.push(message);
                        if !dump {
                            return Ok(out);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Every interface.
    ///
    /// # Errors
    /// Netlink errors.
    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        let answers = self.request(RouteNetlinkMessage::GetLink(LinkMessage::default()), true)?;
        Ok(answers
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => Some(link_of(link)),
                _ => None,
            })
            .collect())
    }

    /// Every interface address, by interface index.
    ///
    /// # Errors
    /// Netlink errors.
    pub fn addresses(&mut self) -> io::Result<Vec<(u32, IpAddr)>> {
        let answers = self.request(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            true,
        )?;
        Ok(answers
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => address_of(a),
                _ => None,
            })
            .collect())
    }

    /// The ARP and NDP tables.
    ///
    /// # Errors
    /// Netlink errors.
    pub fn neighbours(&mut self) -> io::Result<Vec<Neighbour>> {
        let answers = self.request(
            RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
            true,
        )?;
        Ok(answers
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => neighbour_of(n),
                _ => None,
            })
            .collect())
    }

    /// Every bridge's forwarding database.
    ///
    /// # Errors
    /// Netlink errors.
    pub fn fdb(&mut self) -> io::Result<Vec<FdbEntry>> {
        let mut request = NeighbourMessage::default();
        request.header.family = AddressFamily::Bridge;
        let answers = self.request(RouteNetlinkMessage::GetNeighbour(request), true)?;
        Ok(answers
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => fdb_entry_of(n),
                _ => None,
            })
            .collect())
    }

    /// The kernel's route lookup for `ip` (`ip route get`), policy
    /// routing included. No route at all is [`RouteKind::Unreachable`].
    ///
    /// # Errors
    /// Netlink errors other than "no route".
    pub fn route_to(&mut self, ip: IpAddr) -> io::Result<Route> {
        let mut request = RouteMessage::default();
        request.header.address_family = match ip {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        request.header.destination_prefix_length = if ip.is_ipv4() { 32 } else { 128 };
        request
            .attributes
            .push(RouteAttribute::Destination(RouteAddress::from(ip)));
        let unreachable = Route {
            kind: RouteKind::Unreachable,
            oif: None,
        };
        let answers = match self.request(RouteNetlinkMessage::GetRoute(request), false) {
            Ok(answers) => answers,
            Err(error)
                if matches!(
                    error.raw_os_error(),
                    Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EACCES | libc::EINVAL)
                ) =>
            {
                return Ok(unreachable);
            }
            Err(error) => return Err(error),
        };
        Ok(answers
            .iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => Some(route_of(r)),
                _ => None,
            })
            .unwrap_or(unreachable))
    }

    /// The id this namespace gives the namespace `netns` (an open nsfs
    /// file), if the kernel assigned one.
    ///
    /// # Errors
    /// Netlink errors.
    pub fn nsid_of(&mut self, netns: &impl AsRawFd) -> io::Result<Option<i32>> {
        let mut request = NsidMessage::default();
        let fd = u32::try_from(netns.as_raw_fd()).map_err(io::Error::other)?;
        request.attributes.push(NsidAttribute::Fd(fd));
        let answers = self.request(RouteNetlinkMessage::GetNsId(request), false)?;
        Ok(answers.iter().find_map(|m| match m {
            RouteNetlinkMessage::NewNsId(n) => n.attributes.iter().find_map(|a| match a {
                NsidAttribute::Id(id) if *id >= 0 => Some(*id),
                _ => None,
            }),
            _ => None,
        }))
    }
}

/// A link message as a [`Link`].
#[must_use]
pub fn link_of(message: &LinkMessage) -> Link {
    let mut link = Link {
        index: message.header.index,
        name: String::new(),
        kind: LinkKind::Other,
        master: None,
        peer: None,
        peer_netnsid: None,
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name.clone_from(name),
            LinkAttribute::Controller(master) => link.master = Some(*master),
            LinkAttribute::Link(peer) if *peer != 0 => link.peer = Some(*peer),
            LinkAttribute::LinkNetNsId(id) if *id >= 0 => link.peer_netnsid = Some(*id),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = match kind {
                            InfoKind::Veth => LinkKind::Veth,
                            InfoKind::Bridge => LinkKind::Bridge,
                            _ => LinkKind::Other,
                        };
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn address_of(message: &AddressMessage) -> Option<(u32, IpAddr)> {
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer's
    // on point-to-point links (and the same as IFA_LOCAL elsewhere).
    let local = message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let address = message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    });
    Some((message.header.index, local.or(address)?))
}

fn mac_of(message: &NeighbourMessage) -> Option<Mac> {
    message.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(bytes) => bytes.as_slice().try_into().ok(),
        _ => None,
    })
}

fn neighbour_of(message: &NeighbourMessage) -> Option<Neighbour> {
    let ip = message.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        _ => None,
    })?;
    Some(Neighbour {
        ip,
        ifindex: message.header.ifindex,
        mac: mac_of(message),
        usable: !matches!(
            message.header.state,
            NeighbourState::Incomplete | NeighbourState::Failed | NeighbourState::None
        ),
    })
}

fn fdb_entry_of(message: &NeighbourMessage) -> Option<FdbEntry> {
    if message.header.family != AddressFamily::Bridge {
        return None;
    }
    let bridge = message.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Controller(index) => Some(*index),
        _ => None,
    });
    Some(FdbEntry {
        mac: mac_of(message)?,
        port: message.header.ifindex,
        // Entries without a master are the port device's own ("self").
        bridge: Some(bridge?),
        local: message.header.state == NeighbourState::Permanent,
    })
}

fn route_of(message: &RouteMessage) -> Route {
    Route {
        kind: match message.header.kind {
            RouteType::Local => RouteKind::Local,
            RouteType::Unicast => RouteKind::Unicast,
            _ => RouteKind::Unreachable,
        },
        oif: message.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(oif) => Some(*oif),
            _ => None,
        }),
    }
}
