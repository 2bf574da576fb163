//! weir's eBPF datapath.
//!
//! The programs are C (`bpf/flow.bpf.c`, `bpf/floor.bpf.c`), compiled by
//! `build.rs` with clang and embedded in this crate; [`abi`] mirrors the
//! structs of `bpf/abi.h` that the kernel and the agent exchange, and
//! [`loader`] loads the programs with aya, attaches them to pod veths and
//! hands out the maps: the flow table, ring buffer and counters for
//! observing, the policy maps ([`loader::PolicyMaps`]) for enforcing.
//! With [`loader::LoadOptions::pin`] maps and links are pinned on a bpffs
//! and outlive the process.
//!
//! ```no_run
//! use weir_ebpf::loader::{Datapath, LoadOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut datapath = Datapath::load(&LoadOptions::default())?;
//! datapath.attach("veth1234")?;
//! let flows = datapath.take_flow_table()?;
//! for entry in flows.iter() {
//!     let (key, stats) = entry?;
//!     println!("{} -> {}: {} packets", key.local_ip(), key.remote_ip(), stats.packets_from_pod);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Building without clang: `WEIR_SKIP_EBPF=1` embeds empty stub objects, so
//! `cargo check` works anywhere; loading them fails with
//! [`loader::LoadError::StubObject`].

pub mod abi;
pub mod loader;

/// The programs `weir_from_pod` and `weir_to_pod` and their maps, as
/// an ELF object (empty when built with `WEIR_SKIP_EBPF=1`).
///
/// Public so tools and tests can inspect what is loaded (programs, maps, BTF).
pub static FLOW_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flow.bpf.o"));

/// The `weir_floor` program, which only returns `TC_ACT_OK`: the baseline for
/// benchmarks (empty when built with `WEIR_SKIP_EBPF=1`).
pub static FLOOR_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floor.bpf.o"));
