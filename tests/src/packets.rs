//! Crafted Ethernet frames for `BPF_PROG_TEST_RUN`, built with etherparse.
//!
//! Valid frames come from [`frame`]; malformed ones are valid frames with
//! bytes changed or cut afterwards (see the offset constants), so every
//! broken field is the only thing wrong with the frame.

use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::{
    IpHeaders, IpNumber, Ipv4Extensions, Ipv4Header, Ipv6Extensions, Ipv6FlowLabel, Ipv6Header,
    PacketBuilder, PacketBuilderStep, TcpHeader, VlanId,
};

/// MAC addresses of the two ends; the programs do not look at them.
pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
/// See [`SRC_MAC`].
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
/// Length of an untagged Ethernet header: where IP starts in [`frame`]s.
pub const ETH_LEN: usize = 14;
/// Length of an IPv4 header without options.
pub const IPV4_LEN: usize = 20;
/// Length of an IPv6 header.
pub const IPV6_LEN: usize = 40;

/// TCP flag bits as in the header's 14th byte.
pub mod tcp {
    /// FIN
    pub const FIN: u8 = 0x01;
    /// SYN
    pub const SYN: u8 = 0x02;
    /// RST
    pub const RST: u8 = 0x04;
    /// PSH
    pub const PSH: u8 = 0x08;
    /// ACK
    pub const ACK: u8 = 0x10;
}

/// VLAN tags in front of the IP header.
#[derive(Debug, Clone, Copy)]
pub enum Vlan {
    /// Untagged.
    None,
    /// One 802.1Q tag.
    Single(u16),
    /// QinQ: outer and inner tag.
    Double(u16, u16),
}

/// The layer-4 part of a frame.
#[derive(Debug, Clone)]
pub enum L4 {
    /// TCP with the given flag bits ([`tcp`]).
    Tcp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// Flag bits.
        flags: u8,
    },
    /// UDP.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// ICMP for IPv4: type, code and bytes 5 to 8 (echo: id and sequence).
    Icmpv4 {
        /// ICMP type.
        kind: u8,
        /// ICMP code.
        code: u8,
        /// Bytes 5-8 of the header.
        rest: [u8; 4],
    },
    /// ICMPv6: as [`L4::Icmpv4`].
    Icmpv6 {
        /// ICMPv6 type.
        kind: u8,
        /// ICMPv6 code.
        code: u8,
        /// Bytes 5-8 of the header.
        rest: [u8; 4],
    },
    /// Anything else, written as the IP payload with this protocol number.
    Raw {
        /// IP protocol number.
        proto: u8,
        /// The IP payload.
        bytes: Vec<u8>,
    },
}

/// An SCTP packet: the 12-byte common header, then an INIT chunk header.
#[must_use]
pub fn sctp(sport: u16, dport: u16) -> L4 {
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(&sport.to_be_bytes());
    bytes.extend_from_slice(&dport.to_be_bytes());
    bytes.extend_from_slice(&[0; 8]); // verification tag, checksum
    bytes.extend_from_slice(&[1, 0, 0, 4]); // INIT chunk, flags, length
    L4::Raw { proto: 132, bytes }
}

/// Bytes 5-8 of an ICMP echo header.
#[must_use]
pub fn echo(id: u16, seq: u16) -> [u8; 4] {
    let [a, b] = id.to_be_bytes();
    let [c, d] = seq.to_be_bytes();
    [a, b, c, d]
}

/// An IPv4 header from `src` to `dst` (protocol and lengths are filled in
/// when the frame is written).
#[must_use]
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr) -> Ipv4Header {
    Ipv4Header::new(0, 64, IpNumber::TCP, src.octets(), dst.octets()).expect("valid IPv4 header")
}

/// An IPv6 header from `src` to `dst`.
#[must_use]
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr) -> Ipv6Header {
    Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::ZERO,
        payload_length: 0,
        next_header: IpNumber::TCP,
        hop_limit: 64,
        source: src.octets(),
        destination: dst.octets(),
    }
}

/// The IP part of a frame: a header, and for IPv6 its extension headers.
#[derive(Debug, Clone)]
pub enum Ip {
    /// IPv4 (fragment fields included).
    V4(Ipv4Header),
    /// IPv6 with extension headers (boxed: etherparse keeps room for the
    /// largest ones inline, some 9 KiB).
    V6(Ipv6Header, Box<Ipv6Extensions>),
}

impl Ip {
    /// IPv6 with extension headers.
    #[must_use]
    pub fn v6(header: Ipv6Header, exts: Ipv6Extensions) -> Self {
        Self::V6(header, Box::new(exts))
    }
}

impl From<Ipv4Header> for Ip {
    fn from(h: Ipv4Header) -> Self {
        Self::V4(h)
    }
}

impl From<Ipv6Header> for Ip {
    fn from(h: Ipv6Header) -> Self {
        Self::v6(h, Ipv6Extensions::default())
    }
}

impl From<Ip> for IpHeaders {
    fn from(ip: Ip) -> Self {
        match ip {
            Ip::V4(h) => Self::Ipv4(h, Ipv4Extensions::default()),
            Ip::V6(h, exts) => Self::Ipv6(h, *exts),
        }
    }
}

/// An untagged Ethernet frame carrying `ip` and `l4`, with a few payload bytes.
#[must_use]
pub fn frame(ip: impl Into<Ip>, l4: L4) -> Vec<u8> {
    tagged_frame(Vlan::None, ip, l4)
}

/// A frame with VLAN tags in band, as a trunk port would carry it.
#[must_use]
pub fn tagged_frame(vlan: Vlan, ip: impl Into<Ip>, l4: L4) -> Vec<u8> {
    frame_with_payload(vlan, ip, l4, b"weir")
}

/// A frame carrying `payload` after the L4 header (e.g. a DNS message).
#[must_use]
pub fn frame_with_payload(vlan: Vlan, ip: impl Into<Ip>, l4: L4, payload: &[u8]) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(SRC_MAC, DST_MAC);
    let vid = |id| VlanId::try_new(id).expect("VLAN id below 4096");
    let ip = IpHeaders::from(ip.into());
    let step = match vlan {
        Vlan::None => eth.ip(ip),
        Vlan::Single(id) => eth.single_vlan(vid(id)).ip(ip),
        Vlan::Double(outer, inner) => eth.double_vlan(vid(outer), vid(inner)).ip(ip),
    };
    finish(step, l4, payload)
}

fn finish(step: PacketBuilderStep<IpHeaders>, l4: L4, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let written = match l4 {
        L4::Tcp {
            sport,
            dport,
            flags,
        } => {
            let mut h = TcpHeader::new(sport, dport, 1000, 64240);
            h.fin = flags & tcp::FIN != 0;
            h.syn = flags & tcp::SYN != 0;
            h.rst = flags & tcp::RST != 0;
            h.psh = flags & tcp::PSH != 0;
            h.ack = flags & tcp::ACK != 0;
            step.tcp_header(h).write(&mut out, payload)
        }
        L4::Udp { sport, dport } => step.udp(sport, dport).write(&mut out, payload),
        L4::Icmpv4 { kind, code, rest } => {
            step.icmpv4_raw(kind, code, rest).write(&mut out, payload)
        }
        L4::Icmpv6 { kind, code, rest } => {
            step.icmpv6_raw(kind, code, rest).write(&mut out, payload)
        }
        L4::Raw { proto, bytes } => step.write(&mut out, IpNumber(proto), &bytes),
    };
    written.expect("etherparse writes the frame");
    out
}

/// An IPv4/TCP frame with these `flags`.
pub fn tcp4(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8) -> Vec<u8> {
    frame(
        ipv4(src, dst),
        L4::Tcp {
            sport,
            dport,
            flags,
        },
    )
}
