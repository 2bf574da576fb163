//! Loads weir's programs with aya, attaches them to pod veths and hands out
//! the maps.
//!
//! One [`Datapath`] owns one loaded object: the flow table, ring buffer,
//! counters and policy maps are shared by every interface it is attached to.
//!
//! With [`LoadOptions::pin`] the maps and the tcx links live on in a bpffs
//! directory after the process exits (the programs keep enforcing), and the
//! next [`Datapath::load`] adopts them; see [`Datapath::cleanup`].

mod attach;
mod maps;
mod pin;
mod policy;
mod test_run;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Map, MapData, MapType},
    programs::{ProgramError, SchedClassifier},
};

pub use self::{
    attach::{AttachError, AttachMode, Attachment, DetachError},
    maps::{FlowTable, MapError},
    pin::CleanupError,
    policy::{CidrsEpoch, PolicyCapacities, PolicyMaps},
    test_run::{Floor, TestRunError, TestRunOutput},
};
use crate::{
    FLOOR_OBJECT, FLOW_OBJECT,
    abi::{
        CNT_MAX, CidrKey, EndpointInfo, FAMILY_IPV4, FlowKey, FlowKey4, FlowStats, IpKey,
        PeerCacheValue, PeerKey, PolicyExactKey, PolicyKey, PolicyValue,
    },
};

const FLOWS: &str = "FLOWS";
const FLOWS4: &str = "FLOWS4";
const EVENTS: &str = "EVENTS";
const COUNTERS: &str = "COUNTERS";
const ENDPOINTS: &str = "ENDPOINTS";
const IDENTITIES: &str = "IDENTITIES";
const CIDRS: &str = "CIDRS";
const POLICY: &str = "POLICY";
const POLICY_EXACT: &str = "POLICY_EXACT";
const CIDRS_EPOCH: &str = "CIDRS_EPOCH";
const PEER_CACHE: &str = "PEER_CACHE";
const PEERS: &str = "PEERS";

/// Globals of the object, set at load time (see the rate limit in flow.bpf.c).
const EVENT_COST_NS: &str = "weir_event_cost_ns";
const EVENT_BUCKET_NS: &str = "weir_event_bucket_ns";
/// The DNS answers' token bucket (bpf/dns.h).
const DNS_COST_NS: &str = "weir_dns_cost_ns";
const DNS_BUCKET_NS: &str = "weir_dns_bucket_ns";
/// Set when an adopted `FLOWS` still holds IPv4 flows (flow.bpf.c).
const IPV4_IN_FLOWS: &str = "weir_ipv4_in_flows";

/// What a map must look like, pinned or not: (name, type, key size, value
/// size). A pinned map left by an incompatible build is refused, not used.
const SHARED_MAPS: [(&str, MapType, usize, usize); 12] = [
    (
        FLOWS4,
        MapType::Hash,
        size_of::<FlowKey4>(),
        size_of::<FlowStats>(),
    ),
    (
        FLOWS,
        MapType::Hash,
        size_of::<FlowKey>(),
        size_of::<FlowStats>(),
    ),
    (EVENTS, MapType::RingBuf, 0, 0),
    (
        COUNTERS,
        MapType::PerCpuArray,
        size_of::<u32>(),
        size_of::<u64>(),
    ),
    (
        ENDPOINTS,
        MapType::Hash,
        size_of::<u32>(),
        size_of::<EndpointInfo>(),
    ),
    (
        IDENTITIES,
        MapType::Hash,
        size_of::<IpKey>(),
        size_of::<u32>(),
    ),
    (
        CIDRS,
        MapType::LpmTrie,
        size_of::<CidrKey>(),
        size_of::<u32>(),
    ),
    (
        POLICY,
        MapType::LpmTrie,
        size_of::<PolicyKey>(),
        size_of::<PolicyValue>(),
    ),
    (PEERS, MapType::Hash, size_of::<PeerKey>(), size_of::<u8>()),
    (
        POLICY_EXACT,
        MapType::Hash,
        size_of::<PolicyExactKey>(),
        size_of::<PolicyValue>(),
    ),
    (
        CIDRS_EPOCH,
        MapType::Array,
        size_of::<u32>(),
        size_of::<u32>(),
    ),
    (
        PEER_CACHE,
        MapType::LruHash,
        size_of::<IpKey>(),
        size_of::<PeerCacheValue>(),
    ),
];

/// Sizes of the maps and the pin directory, chosen at load time.
///
/// Sizes apply to maps this load creates; maps adopted from
/// [`LoadOptions::pin`] keep the size they were created with (resizing needs
/// [`Datapath::cleanup`]). [`PolicyMaps::capacities`] has the real ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Entries of each flow table: `FLOWS4` (IPv4 flows, preallocated:
    /// each costs 152 bytes of kernel memory, a 136-byte hash element and
    /// a 16-byte bucket as the kernel accounts it: 10.0 MB for the default,
    /// 152 MB for 1M entries) and `FLOWS` (IPv6 flows, allocated as they
    /// come: a 16-byte bucket per entry up front, 1 MB for the default, and
    /// 168 bytes per flow present, as the kernel accounts it).
    pub flow_table_entries: u32,
    /// Size of the new-flow ring buffer (`EVENTS`): a power of two and a
    /// multiple of the page size. Each event takes 80 bytes (72 and the
    /// record header).
    pub ringbuf_bytes: u32,
    /// Entries of `ENDPOINTS` (local pods, by host veth ifindex).
    pub endpoints_entries: u32,
    /// Entries of `IDENTITIES` (exact address -> identity).
    pub identities_entries: u32,
    /// Entries of the `CIDRS` LPM trie (not preallocated).
    pub cidrs_entries: u32,
    /// Entries of the `POLICY` LPM trie (not preallocated).
    pub policy_entries: u32,
    /// Entries of the `POLICY_EXACT` hash (not preallocated).
    pub policy_exact_entries: u32,
    /// Entries of the `PEER_CACHE` LRU (peer addresses resolved by the
    /// CIDRS trie; preallocated, about 100 bytes each).
    pub peer_cache_entries: u32,
    /// Entries of `PEERS`.
    pub peers_entries: u32,
    /// Ring-buffer events of denied flows allowed per second and CPU (a
    /// token bucket); 0 disables the limit. Suppressed events are counted
    /// in `CNT_EVENTS_LIMITED` and their flows found by the sweep.
    pub verdict_events_per_sec: u32,
    /// Burst of the token bucket: events of denied flows a CPU may emit at
    /// once. At least 1 unless the limit is disabled.
    pub verdict_events_burst: u32,
    /// DNS answers to pods copied to the ring buffer per second and CPU (a
    /// token bucket, bpf/dns.h); 0 disables the limit. Suppressed answers
    /// are counted in `CNT_DNS_LIMITED`.
    pub dns_answers_per_sec: u32,
    /// Burst of the DNS answers' token bucket. At least 1 unless the limit
    /// is disabled.
    pub dns_answers_burst: u32,
    /// A directory on a bpffs (e.g. `/sys/fs/bpf/weir`) where the maps are
    /// pinned by name and the tcx links under `links/<ifname>_{ingress,egress}`.
    /// Maps pinned there already are adopted (flows and policy state survive
    /// an agent restart); links stay attached when the process exits.
    /// `None`: nothing outlives the [`Datapath`].
    pub pin: Option<PathBuf>,
}

impl Default for LoadOptions {
    /// The sizes compiled into the object: 65536 flows, 256 KiB of events,
    /// 4096 endpoints, 65536 identities, 16384 CIDRs, 262144 policy entries
    /// in each of the trie and the exact hash, 65536 peers, 16384 cached
    /// peer addresses; 1000 denied-flow events per second and CPU, burst 100;
    /// 20,000 DNS answers per second and CPU, burst 2,000; no pinning.
    fn default() -> Self {
        Self {
            flow_table_entries: 65536,
            ringbuf_bytes: 256 * 1024,
            endpoints_entries: 4096,
            identities_entries: 65536,
            cidrs_entries: 16384,
            policy_entries: 262_144,
            policy_exact_entries: 262_144,
            peer_cache_entries: 16384,
            peers_entries: 65536,
            verdict_events_per_sec: 1000,
            verdict_events_burst: 100,
            dns_answers_per_sec: 20_000,
            dns_answers_burst: 2_000,
            pin: None,
        }
    }
}

impl LoadOptions {
    fn map_sizes(&self) -> [(&'static str, u32); 10] {
        [
            (FLOWS4, self.flow_table_entries),
            (FLOWS, self.flow_table_entries),
            (EVENTS, self.ringbuf_bytes),
            (ENDPOINTS, self.endpoints_entries),
            (IDENTITIES, self.identities_entries),
            (CIDRS, self.cidrs_entries),
            (POLICY, self.policy_entries),
            (POLICY_EXACT, self.policy_exact_entries),
            (PEER_CACHE, self.peer_cache_entries),
            (PEERS, self.peers_entries),
        ]
    }

    /// The token bucket as the programs want it: nanoseconds of credit per
    /// event and bucket size in nanoseconds (0, 0: no limit).
    fn event_bucket(&self) -> (u64, u64) {
        bucket(self.verdict_events_per_sec, self.verdict_events_burst)
    }

    /// The DNS answers' bucket, as [`LoadOptions::event_bucket`].
    fn dns_bucket(&self) -> (u64, u64) {
        bucket(self.dns_answers_per_sec, self.dns_answers_burst)
    }
}

fn bucket(per_sec: u32, burst: u32) -> (u64, u64) {
    const NANOS: u64 = 1_000_000_000;
    if per_sec == 0 {
        return (0, 0);
    }
    let cost = (NANOS / u64::from(per_sec)).max(1);
    (cost, cost * u64::from(burst))
}

/// One of the observe programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Program {
    /// `weir_from_pod`: TC ingress of the host veth, packets the pod sends.
    FromPod,
    /// `weir_to_pod`: TC egress of the host veth, packets the pod receives.
    ToPod,
}

impl Program {
    /// Both observe programs.
    pub const ALL: [Self; 2] = [Self::FromPod, Self::ToPod];

    /// The program's name in the object.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::FromPod => "weir_from_pod",
            Self::ToPod => "weir_to_pod",
        }
    }
}

/// Why the programs could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The crate was built with `WEIR_SKIP_EBPF=1`.
    #[error(
        "the embedded eBPF objects are empty stubs (weir-ebpf was built with WEIR_SKIP_EBPF=1)"
    )]
    StubObject,
    /// [`LoadOptions::flow_table_entries`] is zero.
    #[error("the flow table needs at least one entry")]
    FlowTableSize,
    /// Another map size in [`LoadOptions`] is zero.
    #[error("map {map} needs at least one entry")]
    MapSize {
        /// The map's name.
        map: &'static str,
    },
    /// A map is missing from the object or its info cannot be read.
    #[error("map {name} is missing from the eBPF object")]
    MissingMap {
        /// The map's name.
        name: &'static str,
    },
    /// [`LoadOptions::verdict_events_burst`] or
    /// [`LoadOptions::dns_answers_burst`] is zero with a rate limit set.
    #[error("an event rate limit needs a burst of at least 1")]
    EventBurst,
    /// The pin directory could not be created.
    #[error("creating the pin directory {path}")]
    PinDir {
        /// The directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A map pinned in [`LoadOptions::pin`] is not what this build expects
    /// (left by another version): remove the pins with [`Datapath::cleanup`].
    #[error(
        "pinned map {name} in {dir} is incompatible ({detail}): run the cleanup to remove the old pins"
    )]
    PinnedMapMismatch {
        /// The map's name.
        name: &'static str,
        /// The pin directory.
        dir: PathBuf,
        /// What differs.
        detail: String,
    },
    /// [`LoadOptions::ringbuf_bytes`] is not a power of two multiple of the page size.
    #[error("ring buffer size {bytes} is not a power of two multiple of the page size {page_size}")]
    RingBufSize {
        /// The requested size.
        bytes: u32,
        /// The system's page size.
        page_size: u64,
    },
    /// aya could not load the object (parse, BTF, map creation).
    #[error("loading the eBPF object")]
    Object {
        /// aya's error.
        #[source]
        source: aya::EbpfError,
    },
    /// A program is missing from the object or has the wrong type.
    #[error("program {name} is missing from the eBPF object or is not a TC classifier")]
    MissingProgram {
        /// The program's name.
        name: &'static str,
    },
    /// The kernel rejected a program (the verifier log is in the source).
    #[error("loading program {name}")]
    Program {
        /// The program's name.
        name: &'static str,
        /// aya's error, with the verifier log.
        #[source]
        source: ProgramError,
    },
}

/// The loaded programs and their maps.
///
/// Dropping it detaches the programs from every interface it attached them
/// to and frees the maps that were not taken out, except what is pinned
/// ([`LoadOptions::pin`]): pinned links stay attached, pinned maps stay.
#[derive(Debug)]
pub struct Datapath {
    ebpf: Ebpf,
    /// Second descriptors of `FLOWS4` and `FLOWS`:
    /// [`Datapath::take_policy_maps`] opens its own handles on them,
    /// whoever took the table. Descriptors, not the maps' ids:
    /// `BPF_MAP_GET_FD_BY_ID` needs `CAP_SYS_ADMIN`, which the agent does
    /// not otherwise need (docs/deploy.md).
    flows_fds: [std::os::fd::OwnedFd; 2],
    attachments: HashMap<String, attach::Links>,
    pin: Option<PathBuf>,
    /// Each sized map's real size (a pinned map keeps the size it was
    /// created with).
    sizes: Vec<MapSize>,
}

/// A map's size: what [`LoadOptions`] asked for, and what it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSize {
    /// The map's name.
    pub map: &'static str,
    /// The size asked for (entries; bytes for the ring buffer).
    pub requested: u32,
    /// The size it has: another one when it was adopted from the pin
    /// directory, created by an agent that asked for another size.
    pub actual: u32,
}

impl Datapath {
    /// Loads `weir_from_pod` and `weir_to_pod` and creates their maps, or
    /// adopts the maps pinned in [`LoadOptions::pin`].
    ///
    /// Needs `CAP_BPF` (or root); kernels before 5.11 also need a raised
    /// `RLIMIT_MEMLOCK`, later ones charge BPF memory to the cgroup.
    ///
    /// # Errors
    ///
    /// See [`LoadError`].
    pub fn load(opts: &LoadOptions) -> Result<Self, LoadError> {
        check_options(opts)?;
        let (cost, bucket) = opts.event_bucket();
        let (dns_cost, dns_bucket) = opts.dns_bucket();
        let mut loader = EbpfLoader::new();
        for (name, entries) in opts.map_sizes() {
            loader.map_max_entries(name, entries);
        }
        // a FLOWS pinned by a build before FLOWS4 may hold IPv4 flows
        let ipv4_in_flows = u32::from(
            opts.pin
                .as_deref()
                .is_some_and(|dir| pinned_flows_hold_ipv4(&dir.join(FLOWS))),
        );
        loader
            .override_global(EVENT_COST_NS, &cost, true)
            .override_global(EVENT_BUCKET_NS, &bucket, true)
            .override_global(DNS_COST_NS, &dns_cost, true)
            .override_global(DNS_BUCKET_NS, &dns_bucket, true)
            .override_global(IPV4_IN_FLOWS, &ipv4_in_flows, true);
        if let Some(dir) = &opts.pin {
            pin::create_dirs(dir)?;
            for (name, ..) in SHARED_MAPS {
                loader.map_pin_path(name, dir.join(name));
            }
        }
        let mut ebpf = load_object(FLOW_OBJECT, &mut loader)?;
        if let Some(dir) = &opts.pin {
            check_shared_maps(&ebpf, dir)?;
        }
        for program in Program::ALL {
            load_classifier(&mut ebpf, program.name())?;
        }
        let sizes = opts
            .map_sizes()
            .into_iter()
            .map(|(map, requested)| {
                let actual = ebpf
                    .map(map)
                    .and_then(map_data)
                    .and_then(|data| data.info().ok())
                    .map_or(requested, |info| info.max_entries());
                MapSize {
                    map,
                    requested,
                    actual,
                }
            })
            .collect();
        let fd = |name| {
            ebpf.map(name)
                .and_then(map_data)
                .and_then(|data| {
                    std::os::fd::AsFd::as_fd(data.fd())
                        .try_clone_to_owned()
                        .ok()
                })
                .ok_or(LoadError::MissingMap { name })
        };
        let flows_fds = [fd(FLOWS4)?, fd(FLOWS)?];
        Ok(Self {
            ebpf,
            flows_fds,
            attachments: HashMap::new(),
            pin: opts.pin.clone(),
            sizes,
        })
    }

    /// Maps whose size is not the one asked for: adopted from the pin
    /// directory, they kept the size an earlier agent created them with.
    #[must_use]
    pub fn resized_maps(&self) -> Vec<MapSize> {
        self.sizes
            .iter()
            .filter(|s| s.actual != s.requested)
            .copied()
            .collect()
    }

    /// The flow tables' real capacity, per family (a pinned table's own:
    /// the smaller of the two when they differ).
    #[must_use]
    pub fn flow_table_capacity(&self) -> u32 {
        self.sizes
            .iter()
            .filter(|s| s.map == FLOWS || s.map == FLOWS4)
            .map(|s| s.actual)
            .min()
            .unwrap_or(0)
    }

    /// The pin directory of [`LoadOptions::pin`].
    #[must_use]
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin.as_deref()
    }

    /// The kernel's run statistics of `program`: (runs, total run time).
    /// They only grow while statistics are enabled
    /// (`aya::sys::enable_stats`, or `sysctl kernel.bpf_stats_enabled=1`);
    /// benchmarks read them under real traffic.
    ///
    /// # Errors
    ///
    /// The kernel refused `BPF_OBJ_GET_INFO_BY_FD`.
    pub fn run_stats(&self, program: Program) -> Result<(u64, Duration), ProgramError> {
        let info = self.classifier(program).info()?;
        Ok((info.run_count(), info.run_time()))
    }

    fn classifier(&self, program: Program) -> &SchedClassifier {
        self.ebpf
            .program(program.name())
            .and_then(|p| p.try_into().ok())
            .expect("observe programs are checked in Datapath::load")
    }

    fn classifier_mut(&mut self, program: Program) -> &mut SchedClassifier {
        self.ebpf
            .program_mut(program.name())
            .and_then(|p| p.try_into().ok())
            .expect("observe programs are checked in Datapath::load")
    }
}

/// The map's kernel data (every map weir uses is one of these types).
pub(super) fn map_data(map: &Map) -> Option<&MapData> {
    match map {
        Map::HashMap(data)
        | Map::LpmTrie(data)
        | Map::PerCpuArray(data)
        | Map::RingBuf(data)
        | Map::Array(data)
        | Map::LruHashMap(data) => Some(data),
        _ => None,
    }
}

/// Whether the `FLOWS` pinned at `path` holds an IPv4 flow: builds before
/// `FLOWS4` kept both families there. Anything unreadable (no pin, another
/// layout, which [`check_shared_maps`] then refuses) counts as no.
fn pinned_flows_hold_ipv4(path: &Path) -> bool {
    let Ok(data) = MapData::from_pin(path) else {
        return false;
    };
    let Ok(flows) = aya::maps::HashMap::<_, FlowKey, FlowStats>::try_from(Map::HashMap(data))
    else {
        return false;
    };
    flows
        .keys()
        .any(|key| key.is_ok_and(|key| key.family == FAMILY_IPV4))
}

/// Refuses pinned maps that another build left with another layout: the
/// programs would read them with this build's structs.
fn check_shared_maps(ebpf: &Ebpf, dir: &Path) -> Result<(), LoadError> {
    for (name, map_type, key_size, value_size) in SHARED_MAPS {
        let mismatch = |detail: String| LoadError::PinnedMapMismatch {
            name,
            dir: dir.to_owned(),
            detail,
        };
        let info = ebpf
            .map(name)
            .and_then(map_data)
            .ok_or_else(|| mismatch("not a map of the expected type".to_owned()))?
            .info()
            .map_err(|e| mismatch(format!("reading its info: {e}")))?;
        let found_type = info
            .map_type()
            .map_err(|e| mismatch(format!("reading its type: {e}")))?;
        if found_type != map_type {
            return Err(mismatch(format!(
                "type {found_type:?}, expected {map_type:?}"
            )));
        }
        let sizes = (info.key_size() as usize, info.value_size() as usize);
        if map_type != MapType::RingBuf && sizes != (key_size, value_size) {
            return Err(mismatch(format!(
                "key/value sizes {sizes:?}, expected {:?}",
                (key_size, value_size)
            )));
        }
        if name == COUNTERS && info.max_entries() as usize != CNT_MAX {
            return Err(mismatch(format!(
                "{} counters, expected {CNT_MAX}",
                info.max_entries()
            )));
        }
    }
    Ok(())
}

fn check_options(opts: &LoadOptions) -> Result<(), LoadError> {
    if opts.flow_table_entries == 0 {
        return Err(LoadError::FlowTableSize);
    }
    for (map, entries) in opts.map_sizes() {
        if entries == 0 && map != EVENTS {
            return Err(LoadError::MapSize { map });
        }
    }
    if (opts.verdict_events_per_sec != 0 && opts.verdict_events_burst == 0)
        || (opts.dns_answers_per_sec != 0 && opts.dns_answers_burst == 0)
    {
        return Err(LoadError::EventBurst);
    }
    let page_size = page_size();
    let bytes = opts.ringbuf_bytes;
    if !bytes.is_power_of_two() || u64::from(bytes) % page_size != 0 {
        return Err(LoadError::RingBufSize { bytes, page_size });
    }
    Ok(())
}

fn page_size() -> u64 {
    // 4 KiB when sysconf cannot tell, which it always can on Linux.
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(4096)
}

fn load_object(object: &[u8], loader: &mut EbpfLoader<'_>) -> Result<Ebpf, LoadError> {
    if object.is_empty() {
        return Err(LoadError::StubObject);
    }
    loader
        .load(object)
        .map_err(|source| LoadError::Object { source })
}

fn load_classifier(ebpf: &mut Ebpf, name: &'static str) -> Result<(), LoadError> {
    let program: &mut SchedClassifier = ebpf
        .program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or(LoadError::MissingProgram { name })?;
    program
        .load()
        .map_err(|source| LoadError::Program { name, source })
}

/// Loads the floor program's object (see [`Floor`]).
fn load_floor() -> Result<Ebpf, LoadError> {
    let mut ebpf = load_object(FLOOR_OBJECT, &mut EbpfLoader::new())?;
    load_classifier(&mut ebpf, test_run::FLOOR)?;
    Ok(ebpf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_options_are_valid() {
        check_options(&LoadOptions::default()).unwrap();
    }

    #[test]
    fn ring_buffer_must_be_a_power_of_two_number_of_pages() {
        let page = u32::try_from(page_size()).unwrap();
        for bytes in [0, page / 2, page * 3, page + 1] {
            let opts = LoadOptions {
                ringbuf_bytes: bytes,
                ..LoadOptions::default()
            };
            let result = check_options(&opts);
            assert!(
                matches!(result, Err(LoadError::RingBufSize { bytes: b, .. }) if b == bytes),
                "{bytes}: {result:?}"
            );
        }
        check_options(&LoadOptions {
            ringbuf_bytes: page,
            ..LoadOptions::default()
        })
        .unwrap();
    }

    #[test]
    fn policy_maps_must_not_be_empty() {
        let opts = LoadOptions {
            policy_entries: 0,
            ..LoadOptions::default()
        };
        assert!(matches!(
            check_options(&opts),
            Err(LoadError::MapSize { map: POLICY })
        ));
    }

    #[test]
    fn event_rate_limit() {
        let defaults = LoadOptions::default();
        assert_eq!(defaults.event_bucket(), (1_000_000, 100_000_000));
        assert_eq!(defaults.dns_bucket(), (50_000, 100_000_000));
        let off = LoadOptions {
            verdict_events_per_sec: 0,
            verdict_events_burst: 0,
            ..LoadOptions::default()
        };
        check_options(&off).unwrap();
        assert_eq!(off.event_bucket(), (0, 0));
        let no_burst = LoadOptions {
            verdict_events_burst: 0,
            ..LoadOptions::default()
        };
        assert!(matches!(
            check_options(&no_burst),
            Err(LoadError::EventBurst)
        ));
    }

    #[test]
    fn flow_table_must_not_be_empty() {
        let opts = LoadOptions {
            flow_table_entries: 0,
            ..LoadOptions::default()
        };
        assert!(matches!(
            check_options(&opts),
            Err(LoadError::FlowTableSize)
        ));
    }
}
