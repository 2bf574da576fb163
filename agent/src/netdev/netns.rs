//! Pods' network namespaces: where to find them, and what each holds.
//!
//! Runtimes bind-mount pod namespaces under `/run/netns` (containerd,
//! CRI-O, `ip netns`, the weir lab); others (cri-dockerd) only have them as
//! `/proc/<pid>/ns/net` of the pods' processes. Both are listed, and a
//! namespace reached by several paths is read once (same nsfs inode).

use std::{
    collections::HashSet,
    fs::File,
    io,
    path::{Path, PathBuf},
};

use nix::sched::{CloneFlags, setns};

use super::{
    rtnl::Rtnl,
    tables::{Namespace, NamespaceId},
};
use crate::sockets::NETNS_DIR;

/// The nsfs identity of the namespace at `path`.
fn id_of(path: &Path) -> io::Result<NamespaceId> {
    let stat = nix::sys::stat::stat(path).map_err(io::Error::from)?;
    Ok(NamespaceId {
        dev: stat.st_dev,
        ino: stat.st_ino,
    })
}

/// Every network namespace on this machine other than the calling
/// thread's (the node's, whose tables the decision reads), each once:
/// `/run/netns/*` first, then `/proc/<pid>/ns/net`.
#[must_use]
pub fn candidates() -> Vec<(NamespaceId, PathBuf)> {
    let own = id_of(Path::new("/proc/thread-self/ns/net")).ok();
    let named = std::fs::read_dir(NETNS_DIR)
        .into_iter()
        .flatten()
        .filter_map(|e| Some(e.ok()?.path()));
    let processes = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let pid = e.file_name();
            pid.to_str()?
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| e.path().join("ns/net"))
        });
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for path in named.chain(processes) {
        // Processes of other users need CAP_SYS_PTRACE; a process that
        // exited is gone: either way, not a namespace we can read.
        let Ok(id) = id_of(&path) else { continue };
        if Some(id) != own && seen.insert(id) {
            out.push((id, path));
        }
    }
    out
}

/// Read the links and addresses of the namespace at `path`, from a thread
/// that enters it (`setns` changes the calling thread only). `host` gives
/// the namespace's id as the node knows it.
///
/// # Errors
/// The namespace cannot be opened or entered, or netlink fails inside it.
pub fn read(id: NamespaceId, path: &Path, host: &mut Rtnl) -> io::Result<Namespace> {
    let file = File::open(path)?;
    let nsid = host.nsid_of(&file).ok().flatten();
    let (links, addrs) = std::thread::scope(|scope| {
        scope
            .spawn(|| -> io::Result<_> {
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                let mut rtnl = Rtnl::open()?;
                Ok((rtnl.links()?, rtnl.addresses()?))
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("namespace reader thread panicked")))
    })?;
    Ok(Namespace {
        id,
        nsid,
        links,
        addrs,
    })
}
