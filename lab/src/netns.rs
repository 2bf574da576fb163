//! Entering a lab network namespace from this process, one thread at a
//! time. `setns(CLONE_NEWNET)` changes only the calling thread, and a socket
//! stays in the namespace it was created in, so a dedicated thread can open
//! sockets "inside a pod" without forking (what `ip netns exec` does).

use std::{fs::File, path::Path};

use nix::sched::{CloneFlags, setns};

use super::{
    error::{LabError, Result},
    names::NETNS_DIR,
};

/// Move the *calling thread* into the named netns. Only call it on threads
/// that are dedicated to that netns and end afterwards (or re-enter
/// another): a pooled thread left inside a lab netns would open later
/// sockets there.
///
/// # Errors
/// [`LabError::Netns`] when the netns does not exist or cannot be entered.
pub fn enter(netns: &str) -> Result<()> {
    let err = |source| LabError::Netns {
        netns: netns.to_owned(),
        source,
    };
    let file = File::open(Path::new(NETNS_DIR).join(netns)).map_err(err)?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| err(e.into()))
}

/// Run `f` on a new thread inside the named netns and return its result.
///
/// # Errors
/// When the netns cannot be entered, or `f` fails.
pub fn run_in<R: Send>(netns: &str, f: impl FnOnce() -> Result<R> + Send) -> Result<R> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter(netns)?;
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Write a sysctl of the netns the calling thread is in (`/proc/sys/net`
/// is resolved per thread).
///
/// # Errors
/// I/O errors naming the file.
pub fn write_sysctl(path: &str, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|source| LabError::Io {
        action: "cannot write",
        path: path.into(),
        source,
    })
}
