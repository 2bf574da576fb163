//! The Rust mirrors in `weir_ebpf::abi` against the C structs, as clang laid
//! them out: sizes and every member offset are read from the object's BTF.
//!
//! aya-obj parses BTF but keeps struct members private, so this reads the
//! `.BTF` section itself; the format is small and stable
//! (<https://docs.kernel.org/bpf/btf.html>). Only what the check needs is
//! decoded: names, struct sizes and member offsets.

use std::{collections::BTreeMap, mem::offset_of};

use object::{Object as _, ObjectSection as _};
use weir_ebpf::{
    FLOW_OBJECT,
    abi::{
        CidrKey, CidrKeyData, DnsEvent, EndpointInfo, FlowEvent, FlowKey, FlowKey4, FlowStats,
        IpKey, PeerCacheValue, PeerKey, PolicyExactKey, PolicyKey, PolicyKeyData, PolicyValue,
    },
};

const BTF_MAGIC: u16 = 0xeb9f;
const BTF_KIND_STRUCT: u32 = 4;

/// A struct as BTF describes it: size and member name -> byte offset.
#[derive(Debug)]
struct BtfStruct {
    size: usize,
    members: BTreeMap<String, usize>,
}

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u32_at(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.0[at..at + 4].try_into().expect("a 4-byte slice"))
    }

    fn str_at(&self, at: usize) -> String {
        let tail = &self.0[at..];
        let end = tail
            .iter()
            .position(|&b| b == 0)
            .expect("BTF strings end with NUL");
        String::from_utf8(tail[..end].to_vec()).expect("BTF names are UTF-8")
    }
}

/// Bytes of kind-specific data after a type's 12-byte common header.
fn trailing_len(kind: u32, vlen: usize) -> usize {
    match kind {
        1 | 14 | 17 => 4,             // INT, VAR, DECL_TAG
        3 => 12,                      // ARRAY
        4 | 5 | 15 | 19 => 12 * vlen, // STRUCT, UNION, DATASEC, ENUM64
        6 | 13 => 8 * vlen,           // ENUM, FUNC_PROTO
        // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
        2 | 7..=12 | 16 | 18 => 0,
        other => panic!("unknown BTF kind {other}"),
    }
}

/// Every named struct in the object's `.BTF` section (little endian: bpfel).
fn btf_structs(object: &[u8]) -> BTreeMap<String, BtfStruct> {
    assert!(
        !object.is_empty(),
        "weir-ebpf was built with WEIR_SKIP_EBPF=1: no object to check"
    );
    let elf = object::File::parse(object).expect("the embedded object is ELF");
    let section = elf
        .section_by_name(".BTF")
        .expect("the object has BTF (built with -g)");
    let btf = Bytes(section.data().expect(".BTF is readable"));
    assert_eq!(u16::from_le_bytes([btf.0[0], btf.0[1]]), BTF_MAGIC);
    let hdr_len = btf.u32_at(4) as usize;
    let (type_off, type_len) = (btf.u32_at(8) as usize, btf.u32_at(12) as usize);
    let str_off = btf.u32_at(16) as usize;
    let types = hdr_len + type_off;
    let strings = hdr_len + str_off;

    let mut structs = BTreeMap::new();
    let mut at = types;
    while at < types + type_len {
        let name_off = btf.u32_at(at) as usize;
        let info = btf.u32_at(at + 4);
        let size = btf.u32_at(at + 8) as usize;
        let (kind, vlen, kind_flag) = (
            (info >> 24) & 0x1f,
            (info & 0xffff) as usize,
            info >> 31 == 1,
        );
        let body = at + 12;
        if kind == BTF_KIND_STRUCT && name_off != 0 {
            let members = (0..vlen)
                .map(|i| {
                    let m = body + 12 * i;
                    let bits = btf.u32_at(m + 8);
                    // with kind_flag the top 8 bits are a bitfield size
                    let bit_offset = if kind_flag { bits & 0x00ff_ffff } else { bits };
                    assert_eq!(bit_offset % 8, 0, "ABI structs have no bitfields");
                    (
                        btf.str_at(strings + btf.u32_at(m) as usize),
                        (bit_offset / 8) as usize,
                    )
                })
                .collect();
            structs.insert(btf.str_at(strings + name_off), BtfStruct { size, members });
        }
        at = body + trailing_len(kind, vlen);
    }
    structs
}

fn check(structs: &BTreeMap<String, BtfStruct>, name: &str, size: usize, fields: &[(&str, usize)]) {
    let s = structs
        .get(name)
        .unwrap_or_else(|| panic!("struct {name} is not in the object's BTF"));
    assert_eq!(s.size, size, "size of {name}");
    let expected: BTreeMap<String, usize> = fields
        .iter()
        .map(|&(field, offset)| (field.to_owned(), offset))
        .collect();
    assert_eq!(
        s.members, expected,
        "members of {name} (C: left, Rust: right)"
    );
}

#[test]
fn rust_mirrors_match_the_btf_of_the_object() {
    let structs = btf_structs(FLOW_OBJECT);
    check(
        &structs,
        "flow_key",
        size_of::<FlowKey>(),
        &[
            ("ifindex", offset_of!(FlowKey, ifindex)),
            ("family", offset_of!(FlowKey, family)),
            ("proto", offset_of!(FlowKey, proto)),
            ("_pad0", offset_of!(FlowKey, _pad0)),
            ("local_addr", offset_of!(FlowKey, local_addr)),
            ("remote_addr", offset_of!(FlowKey, remote_addr)),
            ("local_port", offset_of!(FlowKey, local_port)),
            ("remote_port", offset_of!(FlowKey, remote_port)),
            ("_pad1", offset_of!(FlowKey, _pad1)),
        ],
    );
    check(
        &structs,
        "flow_key4",
        size_of::<FlowKey4>(),
        &[
            ("ifindex", offset_of!(FlowKey4, ifindex)),
            ("local_addr", offset_of!(FlowKey4, local_addr)),
            ("remote_addr", offset_of!(FlowKey4, remote_addr)),
            ("local_port", offset_of!(FlowKey4, local_port)),
            ("remote_port", offset_of!(FlowKey4, remote_port)),
            ("proto", offset_of!(FlowKey4, proto)),
            ("_pad0", offset_of!(FlowKey4, _pad0)),
        ],
    );
    check(
        &structs,
        "flow_stats",
        size_of::<FlowStats>(),
        &[
            ("first_seen_ns", offset_of!(FlowStats, first_seen_ns)),
            ("last_seen_ns", offset_of!(FlowStats, last_seen_ns)),
            ("packets_from_pod", offset_of!(FlowStats, packets_from_pod)),
            ("bytes_from_pod", offset_of!(FlowStats, bytes_from_pod)),
            ("packets_to_pod", offset_of!(FlowStats, packets_to_pod)),
            ("bytes_to_pod", offset_of!(FlowStats, bytes_to_pod)),
            (
                "tcp_flags_from_pod",
                offset_of!(FlowStats, tcp_flags_from_pod),
            ),
            ("tcp_flags_to_pod", offset_of!(FlowStats, tcp_flags_to_pod)),
            ("initiator", offset_of!(FlowStats, initiator)),
            ("flags", offset_of!(FlowStats, flags)),
            ("icmp_type", offset_of!(FlowStats, icmp_type)),
            ("icmp_code", offset_of!(FlowStats, icmp_code)),
            ("verdict", offset_of!(FlowStats, verdict)),
            ("reason", offset_of!(FlowStats, reason)),
            ("connections", offset_of!(FlowStats, connections)),
            ("_pad0", offset_of!(FlowStats, _pad0)),
        ],
    );
    check(
        &structs,
        "flow_event",
        size_of::<FlowEvent>(),
        &[
            ("version", offset_of!(FlowEvent, version)),
            ("kind", offset_of!(FlowEvent, kind)),
            ("initiator", offset_of!(FlowEvent, initiator)),
            ("flags", offset_of!(FlowEvent, flags)),
            ("tcp_flags", offset_of!(FlowEvent, tcp_flags)),
            ("icmp_type", offset_of!(FlowEvent, icmp_type)),
            ("icmp_code", offset_of!(FlowEvent, icmp_code)),
            ("timestamp_ns", offset_of!(FlowEvent, timestamp_ns)),
            ("key", offset_of!(FlowEvent, key)),
            ("verdict", offset_of!(FlowEvent, verdict)),
            ("reason", offset_of!(FlowEvent, reason)),
            ("direction", offset_of!(FlowEvent, direction)),
            ("_pad0", offset_of!(FlowEvent, _pad0)),
            ("peer_identity", offset_of!(FlowEvent, peer_identity)),
            ("connection", offset_of!(FlowEvent, connection)),
            ("_pad1", offset_of!(FlowEvent, _pad1)),
        ],
    );
    check(
        &structs,
        "dns_event",
        size_of::<DnsEvent>(),
        &[
            ("version", offset_of!(DnsEvent, version)),
            ("kind", offset_of!(DnsEvent, kind)),
            ("transport", offset_of!(DnsEvent, transport)),
            ("message_len", offset_of!(DnsEvent, message_len)),
            ("captured_len", offset_of!(DnsEvent, captured_len)),
            ("timestamp_ns", offset_of!(DnsEvent, timestamp_ns)),
            ("key", offset_of!(DnsEvent, key)),
            ("payload", offset_of!(DnsEvent, payload)),
        ],
    );
    check(
        &structs,
        "endpoint_info",
        size_of::<EndpointInfo>(),
        &[
            ("identity", offset_of!(EndpointInfo, identity)),
            ("mode", offset_of!(EndpointInfo, mode)),
            ("flags", offset_of!(EndpointInfo, flags)),
            ("_pad0", offset_of!(EndpointInfo, _pad0)),
        ],
    );
    check(
        &structs,
        "ip_key",
        size_of::<IpKey>(),
        &[
            ("family", offset_of!(IpKey, family)),
            ("_pad0", offset_of!(IpKey, _pad0)),
            ("addr", offset_of!(IpKey, addr)),
        ],
    );
    check(
        &structs,
        "cidr_key",
        size_of::<CidrKey>(),
        &[
            ("prefixlen", offset_of!(CidrKey, prefixlen)),
            ("family", offset_of!(CidrKey, family)),
            ("_pad0", offset_of!(CidrKey, _pad0)),
            ("addr", offset_of!(CidrKey, addr)),
        ],
    );
    check(
        &structs,
        "policy_key",
        size_of::<PolicyKey>(),
        &[
            ("prefixlen", offset_of!(PolicyKey, prefixlen)),
            ("endpoint", offset_of!(PolicyKey, endpoint)),
            ("direction", offset_of!(PolicyKey, direction)),
            ("proto", offset_of!(PolicyKey, proto)),
            ("_pad0", offset_of!(PolicyKey, _pad0)),
            ("peer", offset_of!(PolicyKey, peer)),
            ("port", offset_of!(PolicyKey, port)),
            ("_pad1", offset_of!(PolicyKey, _pad1)),
        ],
    );
    check(
        &structs,
        "policy_value",
        size_of::<PolicyValue>(),
        &[("rule_id", offset_of!(PolicyValue, rule_id))],
    );
    check(
        &structs,
        "peer_key",
        size_of::<PeerKey>(),
        &[
            ("endpoint", offset_of!(PeerKey, endpoint)),
            ("direction", offset_of!(PeerKey, direction)),
            ("_pad0", offset_of!(PeerKey, _pad0)),
            ("peer", offset_of!(PeerKey, peer)),
        ],
    );
    check(
        &structs,
        "policy_exact_key",
        size_of::<PolicyExactKey>(),
        &[
            ("endpoint", offset_of!(PolicyExactKey, endpoint)),
            ("direction", offset_of!(PolicyExactKey, direction)),
            ("proto", offset_of!(PolicyExactKey, proto)),
            ("port", offset_of!(PolicyExactKey, port)),
            ("peer", offset_of!(PolicyExactKey, peer)),
        ],
    );
    check(
        &structs,
        "peer_cache_value",
        size_of::<PeerCacheValue>(),
        &[
            ("identity", offset_of!(PeerCacheValue, identity)),
            ("epoch", offset_of!(PeerCacheValue, epoch)),
        ],
    );
}

/// The data-only mirrors that aya's `lpm_trie::Key<K>` wraps: the C struct
/// minus its leading `__u32 prefixlen`, so every offset is the C one - 4.
#[test]
fn lpm_data_mirrors_are_the_c_keys_without_prefixlen() {
    let structs = btf_structs(FLOW_OBJECT);
    let data = |name: &str, size: usize, fields: &[(&str, usize)]| {
        let c = &structs[name];
        assert_eq!(
            c.members.get("prefixlen"),
            Some(&0),
            "{name} starts with prefixlen"
        );
        assert_eq!(c.size - 4, size, "size of {name} without prefixlen");
        let expected: BTreeMap<String, usize> =
            fields.iter().map(|&(f, o)| (f.to_owned(), o + 4)).collect();
        let mut actual = c.members.clone();
        actual.remove("prefixlen");
        assert_eq!(
            actual, expected,
            "members of {name} (C: left, Rust data + 4: right)"
        );
    };
    data(
        "cidr_key",
        size_of::<CidrKeyData>(),
        &[
            ("family", offset_of!(CidrKeyData, family)),
            ("_pad0", offset_of!(CidrKeyData, _pad0)),
            ("addr", offset_of!(CidrKeyData, addr)),
        ],
    );
    data(
        "policy_key",
        size_of::<PolicyKeyData>(),
        &[
            ("endpoint", offset_of!(PolicyKeyData, endpoint)),
            ("direction", offset_of!(PolicyKeyData, direction)),
            ("proto", offset_of!(PolicyKeyData, proto)),
            ("_pad0", offset_of!(PolicyKeyData, _pad0)),
            ("peer", offset_of!(PolicyKeyData, peer)),
            ("port", offset_of!(PolicyKeyData, port)),
            ("_pad1", offset_of!(PolicyKeyData, _pad1)),
        ],
    );
}
