//! Attaching the programs to a pod's host-side veth.
//!
//! Without a pin directory the links belong to the [`Datapath`] and go away
//! with it. With one ([`super::LoadOptions::pin`], tcx only) each link is
//! pinned under `<pin>/links/<ifname>_{ingress,egress}`: it outlives the
//! process, and the next `attach` of the interface replaces the program in
//! that link atomically (`BPF_LINK_UPDATE`), with no moment without one.

use std::{
    io,
    path::{Path, PathBuf},
};

use aya::{
    pin::PinError,
    programs::{
        LinkOrder, ProgramError, TcAttachType,
        links::{FdLink, LinkError, PinnedLink},
        tc::{
            self, NlOptions, SchedClassifierLink, SchedClassifierLinkId, TcAttachOptions, TcError,
        },
    },
    sys::SyscallError,
    util::KernelVersion,
};
use nix::errno::Errno;
use tracing::{debug, warn};

use super::{Datapath, Program, pin};

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
    from_pod: Link,
    to_pod: Link,
}

/// One program's link on one interface.
#[derive(Debug)]
enum Link {
    /// Owned by the program: detached with the [`Datapath`].
    Owned(SchedClassifierLinkId),
    /// Pinned: dropping the fd leaves it attached; removing the pin (and
    /// then this fd) detaches it.
    Pinned(#[expect(dead_code, reason = "held open, never read")] FdLink),
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
    /// Pinned links need tcx ([`AttachMode::Tcx`], kernel >= 6.6).
    #[error("pinned attachment of {ifname} needs tcx links (kernel >= 6.6)")]
    PinNeedsTcx {
        /// The interface name.
        ifname: String,
    },
    /// A pinned link could not be opened or used.
    #[error("using the pinned link {path} of {ifname}")]
    PinnedLink {
        /// The interface name.
        ifname: String,
        /// The pin.
        path: PathBuf,
        /// aya's error (boxed: it is large and rare).
        #[source]
        source: Box<LinkError>,
    },
    /// The pin of a defunct link (its interface was deleted) could not be
    /// removed.
    #[error("removing the stale pinned link {path} of {ifname}")]
    StalePin {
        /// The interface name.
        ifname: String,
        /// The pin.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A new link could not be pinned.
    #[error("pinning the link of {program} on {ifname} at {path}")]
    Pin {
        /// The program's name.
        program: &'static str,
        /// The interface name.
        ifname: String,
        /// The pin.
        path: PathBuf,
        /// aya's error (boxed: it is large and rare).
        #[source]
        source: Box<PinError>,
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
    /// A pinned link could not be unpinned (it stays attached).
    #[error("removing the pinned link {path} of {ifname}")]
    Unpin {
        /// The interface name.
        ifname: String,
        /// The pin.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
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
    /// With a pin directory the links are pinned there and outlive the
    /// process; an interface with pinned links (from an earlier agent) gets
    /// the programs of this [`Datapath`] swapped in atomically, keeping the
    /// links. A pinned link whose interface is gone (defunct) is replaced.
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
    /// As [`Datapath::attach`]; [`AttachMode::Tcx`] fails on kernels before
    /// 6.6, [`AttachMode::Netlink`] with a pin directory fails with
    /// [`AttachError::PinNeedsTcx`].
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
        if self.pin.is_some() && mode == AttachMode::Netlink {
            return Err(AttachError::PinNeedsTcx {
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

        let from_pod = self.attach_link(Program::FromPod, ifname, TcAttachType::Ingress, mode)?;
        let to_pod = match self.attach_link(Program::ToPod, ifname, TcAttachType::Egress, mode) {
            Ok(link) => link,
            Err(e) => {
                match from_pod {
                    Link::Owned(id) => {
                        if let Err(error) = self.classifier_mut(Program::FromPod).detach(id) {
                            warn!(%error, ifname, "detaching weir_from_pod after a failed attach");
                        }
                    }
                    // Left pinned: it may have replaced an earlier agent's
                    // program, and removing it would stop enforcing. A new
                    // attach replaces it, detach removes it.
                    Link::Pinned(_) => {}
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

    fn attach_link(
        &mut self,
        program: Program,
        ifname: &str,
        attach_type: TcAttachType,
        mode: AttachMode,
    ) -> Result<Link, AttachError> {
        let Some(dir) = self.pin.clone() else {
            return self
                .attach_one(program, ifname, attach_type, mode)
                .map(Link::Owned);
        };
        let path = pin::link_path(&dir, ifname, attach_type);
        if let Some(link) = self.replace_pinned(program, ifname, &path)? {
            return Ok(Link::Pinned(link));
        }
        let id = self.attach_one(program, ifname, attach_type, mode)?;
        let link = self.take_fd_link(program, ifname, &path, id)?;
        match link.pin(&path) {
            Ok(pinned) => Ok(Link::Pinned(FdLink::from(pinned))),
            // the link is dropped (detached) with the error
            Err(source) => Err(AttachError::Pin {
                program: program.name(),
                ifname: ifname.to_owned(),
                path,
                source: Box::new(source),
            }),
        }
    }

    /// Swaps this datapath's `program` into the link pinned at `path`, if
    /// there is a live one. `None`: no pin, or a defunct link (its interface
    /// was deleted), whose pin is removed.
    fn replace_pinned(
        &mut self,
        program: Program,
        ifname: &str,
        path: &Path,
    ) -> Result<Option<FdLink>, AttachError> {
        let link_error = |source: LinkError| AttachError::PinnedLink {
            ifname: ifname.to_owned(),
            path: path.to_owned(),
            source: Box::new(source),
        };
        let pinned = match PinnedLink::from_pin(path) {
            Ok(pinned) => pinned,
            Err(LinkError::SyscallError(SyscallError { io_error, .. }))
                if io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(link_error(e)),
        };
        let link = SchedClassifierLink::try_from(FdLink::from(pinned)).map_err(link_error)?;
        let id = match self.classifier_mut(program).attach_to_link(link) {
            Ok(id) => id,
            Err(e) if program_errno(&e) == Some(libc::ENOLINK) => {
                debug!(ifname, path = %path.display(), "replacing a defunct pinned link");
                if let Err(pin::CleanupError::Remove { path, source }) = pin::remove(path) {
                    return Err(AttachError::StalePin {
                        ifname: ifname.to_owned(),
                        path,
                        source,
                    });
                }
                return Ok(None);
            }
            Err(source) => {
                return Err(AttachError::Attach {
                    program: program.name(),
                    ifname: ifname.to_owned(),
                    source,
                });
            }
        };
        self.take_fd_link(program, ifname, path, id).map(Some)
    }

    /// Takes a tcx link out of the program, as an fd link to pin or keep.
    fn take_fd_link(
        &mut self,
        program: Program,
        ifname: &str,
        path: &Path,
        id: SchedClassifierLinkId,
    ) -> Result<FdLink, AttachError> {
        let link = self
            .classifier_mut(program)
            .take_link(id)
            .map_err(|source| AttachError::Attach {
                program: program.name(),
                ifname: ifname.to_owned(),
                source,
            })?;
        FdLink::try_from(link).map_err(|source| AttachError::PinnedLink {
            ifname: ifname.to_owned(),
            path: path.to_owned(),
            source: Box::new(source),
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
    /// With a pin directory this removes the link pins, also those of an
    /// interface that an earlier agent attached and this one did not (see
    /// [`Datapath::pinned_interfaces`]).
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
        let links = self.attachments.remove(ifname);
        if let Some(dir) = self.pin.clone() {
            // pinned: the pins are what keeps the links attached
            let paths = [TcAttachType::Ingress, TcAttachType::Egress]
                .map(|side| pin::link_path(&dir, ifname, side));
            if links.is_none() && !paths.iter().any(|p| p.exists()) {
                return Err(DetachError::NotAttached {
                    ifname: ifname.to_owned(),
                });
            }
            let mut result = Ok(());
            for path in paths {
                if let Err(pin::CleanupError::Remove { path, source }) = pin::remove(&path) {
                    result = result.and(Err(DetachError::Unpin {
                        ifname: ifname.to_owned(),
                        path,
                        source,
                    }));
                }
            }
            // dropping `links` closes the last fds: the links detach
            drop(links);
            return result;
        }
        let links = links.ok_or_else(|| DetachError::NotAttached {
            ifname: ifname.to_owned(),
        })?;
        let from_pod = self.detach_one(Program::FromPod, ifname, links.from_pod);
        let to_pod = self.detach_one(Program::ToPod, ifname, links.to_pod);
        from_pod.and(to_pod)
    }

    /// Interfaces with links pinned in the pin directory, by this datapath
    /// or an earlier one (empty without a pin directory). An agent that
    /// restarts detaches those whose pod is gone.
    ///
    /// # Errors
    ///
    /// Reading the pin directory failed.
    pub fn pinned_interfaces(&self) -> io::Result<Vec<String>> {
        self.pin
            .as_deref()
            .map_or_else(|| Ok(Vec::new()), pin::pinned_interfaces)
    }

    fn detach_one(
        &mut self,
        program: Program,
        ifname: &str,
        link: Link,
    ) -> Result<(), DetachError> {
        let Link::Owned(link) = link else {
            return Ok(()); // only without a pin directory, see detach
        };
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
