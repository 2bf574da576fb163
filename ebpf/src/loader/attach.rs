//! Attaching the observe programs to a pod's host-side veth.

use aya::{
    programs::{
        LinkOrder, ProgramError, TcAttachType,
        tc::{self, NlOptions, SchedClassifierLinkId, TcAttachOptions, TcError},
    },
    sys::SyscallError,
    util::KernelVersion,
};
use nix::errno::Errno;
use tracing::warn;

use super::{Datapath, Program};

/// How the programs are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// tcx links (kernel >= 6.6): no qdisc, ordered with other programs, and
    /// removed by the kernel with the interface.
    Tcx,
    /// cls_bpf filters on a clsact qdisc (older kernels).
    Netlink,
}

impl AttachMode {
    /// tcx when the running kernel has it (6.6), as aya's own `attach` decides.
    #[must_use]
    pub fn detect() -> Self {
        match KernelVersion::current() {
            Ok(v) if v >= KernelVersion::new(6, 6, 0) => Self::Tcx,
            _ => Self::Netlink,
        }
    }

    fn options(self) -> TcAttachOptions {
        match self {
            // First in the chain: we see every packet the pod sends or gets,
            // even ones a CNI program then drops or redirects, and our
            // TCX_NEXT hands each packet on unchanged.
            Self::Tcx => TcAttachOptions::TcxOrder(LinkOrder::first()),
            Self::Netlink => TcAttachOptions::Netlink(NlOptions::default()),
        }
    }
}

/// Where the programs were attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The interface name.
    pub ifname: String,
    /// Its index: the `ifindex` of its flows' keys.
    pub ifindex: u32,
    /// tcx or clsact.
    pub mode: AttachMode,
}

/// The links of one attached interface.
#[derive(Debug)]
pub(super) struct Links {
    from_pod: SchedClassifierLinkId,
    to_pod: SchedClassifierLinkId,
}

/// Why the programs could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The interface does not exist (any more): a pod that went away between
    /// being seen and being attached to. Callers log and skip it.
    #[error("interface {ifname} does not exist")]
    InterfaceGone {
        /// The interface name.
        ifname: String,
    },
    /// [`Datapath::attach`] was already called for the interface.
    #[error("the programs are already attached to {ifname}")]
    AlreadyAttached {
        /// The interface name.
        ifname: String,
    },
    /// Resolving the interface name failed for another reason than its absence.
    #[error("looking up interface {ifname}")]
    Lookup {
        /// The interface name.
        ifname: String,
        /// The errno of `if_nametoindex`.
        #[source]
        source: Errno,
    },
    /// The clsact qdisc could not be added (legacy attach only).
    #[error("adding the clsact qdisc to {ifname}")]
    Qdisc {
        /// The interface name.
        ifname: String,
        /// aya's error.
        #[source]
        source: TcError,
    },
    /// The kernel refused to attach a program.
    #[error("attaching {program} to {ifname}")]
    Attach {
        /// The program's name.
        program: &'static str,
        /// The interface name.
        ifname: String,
        /// aya's error.
        #[source]
        source: ProgramError,
    },
}

/// Why the programs could not be detached.
#[derive(Debug, thiserror::Error)]
pub enum DetachError {
    /// [`Datapath::attach`] was not called for the interface.
    #[error("the programs are not attached to {ifname}")]
    NotAttached {
        /// The interface name.
        ifname: String,
    },
    /// The kernel refused to detach a program.
    #[error("detaching {program} from {ifname}")]
    Detach {
        /// The program's name.
        program: &'static str,
        /// The interface name.
        ifname: String,
        /// aya's error.
        #[source]
        source: ProgramError,
    },
}

/// The errno behind an aya attach/detach error, where there is one.
///
/// Matched variant by variant: aya's `#[error(transparent)]` wrappers forward
/// `source()` past the `io::Error`, so walking the source chain misses it.
fn program_errno(error: &ProgramError) -> Option<i32> {
    match error {
        ProgramError::SyscallError(SyscallError { io_error, .. }) => io_error.raw_os_error(),
        ProgramError::TcError(tc) => tc_errno(tc),
        ProgramError::NetlinkError(netlink) => netlink.raw_os_error(),
        _ => None,
    }
}

fn tc_errno(error: &TcError) -> Option<i32> {
    match error {
        TcError::NetlinkError(netlink) => netlink.raw_os_error(),
        TcError::IoError(io) => io.raw_os_error(),
        _ => None,
    }
}

impl Datapath {
    /// Attaches `weir_from_pod` to the ingress and `weir_to_pod` to the
    /// egress of `ifname`, a pod's host-side veth.
    ///
    /// Uses tcx on kernels >= 6.6; on older ones adds the clsact qdisc
    /// first (an existing one is reused) and attaches cls_bpf filters.
    ///
    /// # Errors
    ///
    /// [`AttachError::InterfaceGone`] when `ifname` does not exist (also when
    /// it vanishes midway); see [`AttachError`] for the rest.
    pub fn attach(&mut self, ifname: &str) -> Result<Attachment, AttachError> {
        self.attach_with(ifname, AttachMode::detect())
    }

    /// [`Datapath::attach`] with the attach mode chosen by the caller: tests
    /// cover the legacy clsact path on new kernels, and an operator can keep
    /// to clsact where other tools expect TC filters.
    ///
    /// # Errors
    ///
    /// As [`Datapath::attach`]; [`AttachMode::Tcx`] fails on kernels before 6.6.
    pub fn attach_with(
        &mut self,
        ifname: &str,
        mode: AttachMode,
    ) -> Result<Attachment, AttachError> {
        if self.attachments.contains_key(ifname) {
            return Err(AttachError::AlreadyAttached {
                ifname: ifname.to_owned(),
            });
        }
        let gone = || AttachError::InterfaceGone {
            ifname: ifname.to_owned(),
        };
        let ifindex = nix::net::if_::if_nametoindex(ifname).map_err(|errno| match errno {
            Errno::ENODEV => gone(),
            source => AttachError::Lookup {
                ifname: ifname.to_owned(),
                source,
            },
        })?;

        if mode == AttachMode::Netlink {
            match tc::qdisc_add_clsact(ifname) {
                Ok(()) => {}
                Err(e) if tc_errno(&e) == Some(libc::EEXIST) => {}
                Err(e) if tc_errno(&e) == Some(libc::ENODEV) => return Err(gone()),
                Err(source) => {
                    return Err(AttachError::Qdisc {
                        ifname: ifname.to_owned(),
                        source,
                    });
                }
            }
        }

        let from_pod = self.attach_one(Program::FromPod, ifname, TcAttachType::Ingress, mode)?;
        let to_pod = match self.attach_one(Program::ToPod, ifname, TcAttachType::Egress, mode) {
            Ok(link) => link,
            Err(e) => {
                if let Err(error) = self.classifier_mut(Program::FromPod).detach(from_pod) {
                    warn!(%error, ifname, "detaching weir_from_pod after a failed attach");
                }
                return Err(e);
            }
        };
        self.attachments
            .insert(ifname.to_owned(), Links { from_pod, to_pod });
        Ok(Attachment {
            ifname: ifname.to_owned(),
            ifindex,
            mode,
        })
    }

    fn attach_one(
        &mut self,
        program: Program,
        ifname: &str,
        attach_type: TcAttachType,
        mode: AttachMode,
    ) -> Result<SchedClassifierLinkId, AttachError> {
        self.classifier_mut(program)
            .attach_with_options(ifname, attach_type, mode.options())
            .map_err(|source| {
                if program_errno(&source) == Some(libc::ENODEV) {
                    AttachError::InterfaceGone {
                        ifname: ifname.to_owned(),
                    }
                } else {
                    AttachError::Attach {
                        program: program.name(),
                        ifname: ifname.to_owned(),
                        source,
                    }
                }
            })
    }

    /// Detaches both programs from `ifname`.
    ///
    /// An interface that no longer exists is detached already: the kernel
    /// removed its filters and links with it, so that is not an error.
    ///
    /// Call it from the network namespace that [`Datapath::attach`] ran in:
    /// clsact filters are removed by ifindex over netlink, which resolves in
    /// the calling thread's namespace (tcx links are not affected).
    ///
    /// # Errors
    ///
    /// [`DetachError::NotAttached`] if [`Datapath::attach`] was not called
    /// for `ifname`, [`DetachError::Detach`] if the kernel refused.
    pub fn detach(&mut self, ifname: &str) -> Result<(), DetachError> {
        let links = self
            .attachments
            .remove(ifname)
            .ok_or_else(|| DetachError::NotAttached {
                ifname: ifname.to_owned(),
            })?;
        let from_pod = self.detach_one(Program::FromPod, ifname, links.from_pod);
        let to_pod = self.detach_one(Program::ToPod, ifname, links.to_pod);
        from_pod.and(to_pod)
    }

    fn detach_one(
        &mut self,
        program: Program,
        ifname: &str,
        link: SchedClassifierLinkId,
    ) -> Result<(), DetachError> {
        match self.classifier_mut(program).detach(link) {
            Ok(()) => Ok(()),
            Err(e) if program_errno(&e) == Some(libc::ENODEV) => Ok(()),
            Err(source) => Err(DetachError::Detach {
                program: program.name(),
                ifname: ifname.to_owned(),
                source,
            }),
        }
    }

    /// Interfaces the programs are attached to.
    pub fn attached(&self) -> impl Iterator<Item = &str> {
        self.attachments.keys().map(String::as_str)
    }
}
