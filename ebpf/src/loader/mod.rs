//! Loads weir's programs with aya, attaches them to pod veths and hands out
//! the maps.
//!
//! One [`Datapath`] owns one loaded object: the flow table, ring buffer and
//! counters are shared by every interface it is attached to.

mod attach;
mod maps;
mod test_run;

use std::collections::HashMap;

use aya::{
    Ebpf, EbpfLoader,
    programs::{ProgramError, SchedClassifier},
};

pub use self::{
    attach::{AttachError, AttachMode, Attachment, DetachError},
    maps::{FlowTable, MapError},
    test_run::{Floor, TestRunError, TestRunOutput},
};
use crate::{FLOOR_OBJECT, FLOW_OBJECT};

const FLOWS: &str = "FLOWS";
const EVENTS: &str = "EVENTS";
const COUNTERS: &str = "COUNTERS";

/// Sizes of the maps, chosen at load time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Entries of the flow table (`FLOWS`). Preallocated: each costs about
    /// 150 bytes of kernel memory.
    pub flow_table_entries: u32,
    /// Size of the new-flow ring buffer (`EVENTS`): a power of two and a
    /// multiple of the page size. Each event takes 72 bytes.
    pub ringbuf_bytes: u32,
}

impl Default for LoadOptions {
    /// The sizes compiled into the object: 65536 flows, 256 KiB of events.
    fn default() -> Self {
        Self {
            flow_table_entries: 65536,
            ringbuf_bytes: 256 * 1024,
        }
    }
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

/// The loaded observe programs and their maps.
///
/// Dropping it detaches the programs from every interface and frees the maps
/// that were not taken out.
#[derive(Debug)]
pub struct Datapath {
    ebpf: Ebpf,
    attachments: HashMap<String, attach::Links>,
}

impl Datapath {
    /// Loads `weir_from_pod` and `weir_to_pod` and creates their maps.
    ///
    /// Needs `CAP_BPF` (or root); kernels before 5.11 also need a raised
    /// `RLIMIT_MEMLOCK`, later ones charge BPF memory to the cgroup.
    ///
    /// # Errors
    ///
    /// See [`LoadError`].
    pub fn load(opts: &LoadOptions) -> Result<Self, LoadError> {
        check_options(opts)?;
        let mut ebpf = load_object(
            FLOW_OBJECT,
            EbpfLoader::new()
                .map_max_entries(FLOWS, opts.flow_table_entries)
                .map_max_entries(EVENTS, opts.ringbuf_bytes),
        )?;
        for program in Program::ALL {
            load_classifier(&mut ebpf, program.name())?;
        }
        Ok(Self {
            ebpf,
            attachments: HashMap::new(),
        })
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

fn check_options(opts: &LoadOptions) -> Result<(), LoadError> {
    if opts.flow_table_entries == 0 {
        return Err(LoadError::FlowTableSize);
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
