//! Unprivileged checks of the embedded objects: the programs and maps the
//! loader and the agent expect are there, with the right types.

use aya_obj::{Object, ProgramSection, maps::Map};
use weir_ebpf::{FLOOR_OBJECT, FLOW_OBJECT};

fn parse(object: &[u8]) -> Object {
    assert!(
        !object.is_empty(),
        "weir-ebpf was built with WEIR_SKIP_EBPF=1: no object to check"
    );
    Object::parse(object).expect("the embedded object parses")
}

fn assert_classifier(object: &Object, name: &str) {
    let program = object
        .programs
        .get(name)
        .unwrap_or_else(|| panic!("program {name} missing"));
    assert!(
        matches!(program.section, ProgramSection::SchedClassifier),
        "{name} is {:?}, expected a TC classifier",
        program.section
    );
}

fn map_type(object: &Object, name: &str) -> u32 {
    let map: &Map = object
        .maps
        .get(name)
        .unwrap_or_else(|| panic!("map {name} missing"));
    map.map_type()
}

#[test]
fn flow_object_has_the_observe_programs_and_maps() {
    let object = parse(FLOW_OBJECT);
    assert_classifier(&object, "weir_from_pod");
    assert_classifier(&object, "weir_to_pod");
    for flows in ["FLOWS4", "FLOWS"] {
        assert_eq!(
            map_type(&object, flows),
            aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_HASH as u32
        );
    }
    assert_eq!(
        map_type(&object, "EVENTS"),
        aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_RINGBUF as u32
    );
    assert_eq!(
        map_type(&object, "COUNTERS"),
        aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_PERCPU_ARRAY as u32
    );
}

#[test]
fn flow_table_types_match_the_abi() {
    let object = parse(FLOW_OBJECT);
    const BPF_F_NO_PREALLOC: u32 = 1;
    // IPv4 flows by the short key, preallocated; IPv6 by the full key,
    // allocated as they come
    for (name, key, flags) in [
        ("FLOWS4", size_of::<weir_ebpf::abi::FlowKey4>(), 0),
        (
            "FLOWS",
            size_of::<weir_ebpf::abi::FlowKey>(),
            BPF_F_NO_PREALLOC,
        ),
    ] {
        let flows = &object.maps[name];
        assert_eq!(flows.key_size() as usize, key, "{name}");
        assert_eq!(
            flows.value_size() as usize,
            size_of::<weir_ebpf::abi::FlowStats>(),
            "{name}"
        );
        assert_eq!(flows.max_entries(), 65536, "{name}");
        assert_eq!(flows.map_flags(), flags, "{name}");
    }
    let counters = &object.maps["COUNTERS"];
    assert_eq!(counters.max_entries() as usize, weir_ebpf::abi::CNT_MAX);
    assert_eq!(counters.value_size() as usize, size_of::<u64>());
}

#[test]
fn floor_object_has_the_floor_program() {
    let object = parse(FLOOR_OBJECT);
    assert_classifier(&object, "weir_floor");
}

#[test]
fn programs_are_dual_licensed() {
    for object in [FLOW_OBJECT, FLOOR_OBJECT] {
        assert_eq!(parse(object).license.to_str().unwrap(), "Dual BSD/GPL");
    }
}

#[test]
fn enforcement_maps_match_the_abi() {
    use aya_obj::generated::bpf_map_type::{
        BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LPM_TRIE, BPF_MAP_TYPE_PERCPU_ARRAY,
    };
    use weir_ebpf::abi::{CidrKey, EndpointInfo, IpKey, PeerKey, PolicyKey, PolicyValue};
    const BPF_F_NO_PREALLOC: u32 = 1;

    let object = parse(FLOW_OBJECT);
    for (name, map_type, key, value, entries) in [
        (
            "ENDPOINTS",
            BPF_MAP_TYPE_HASH,
            4,
            size_of::<EndpointInfo>(),
            4096,
        ),
        (
            "IDENTITIES",
            BPF_MAP_TYPE_HASH,
            size_of::<IpKey>(),
            4,
            65536,
        ),
        (
            "CIDRS",
            BPF_MAP_TYPE_LPM_TRIE,
            size_of::<CidrKey>(),
            4,
            16384,
        ),
        (
            "POLICY",
            BPF_MAP_TYPE_LPM_TRIE,
            size_of::<PolicyKey>(),
            size_of::<PolicyValue>(),
            262_144,
        ),
        ("PEERS", BPF_MAP_TYPE_HASH, size_of::<PeerKey>(), 1, 65536),
    ] {
        let map = &object.maps[name];
        assert_eq!(map.map_type(), map_type as u32, "{name}");
        assert_eq!(map.key_size() as usize, key, "{name} key");
        assert_eq!(map.value_size() as usize, value, "{name} value");
        assert_eq!(map.max_entries(), entries, "{name} entries");
        if map_type == BPF_MAP_TYPE_LPM_TRIE {
            assert_eq!(map.map_flags() & BPF_F_NO_PREALLOC, BPF_F_NO_PREALLOC);
        }
    }
    assert_eq!(
        map_type(&object, "EVENT_RATE"),
        BPF_MAP_TYPE_PERCPU_ARRAY as u32
    );
}
