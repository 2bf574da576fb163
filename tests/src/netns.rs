//! Network namespaces for privileged tests.
//!
//! Every [`NetNs`] has a unique name (process id and a counter), so tests run
//! in parallel and a crashed run cannot collide with the next one, and is
//! deleted on drop. Interfaces inside a fresh namespace can have fixed names:
//! they are private to it.
//!
//! ```no_run
//! use weir_integration_tests::netns::NetNs;
//!
//! let node = NetNs::new();
//! let pod = NetNs::new();
//! node.add_veth("host0", &pod, "eth0");
//! node.ip(&["addr", "add", "10.99.0.1/24", "dev", "host0"]);
//! pod.ip(&["addr", "add", "10.99.0.2/24", "dev", "eth0"]);
//! let socket = pod.run(|| std::net::UdpSocket::bind("10.99.0.2:53"));
//! ```

use std::{
    fs::File,
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use nix::sched::{CloneFlags, setns};

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// Panics unless the process runs as root: privileged tests fail loudly
/// instead of skipping.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "privileged test: needs root (network namespaces, BPF); run with sudo -E or as root"
    );
}

/// Runs `ip` with `args`, panicking with its output on failure.
pub fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .expect("running ip (iproute2)");
    assert!(
        output.status.success(),
        "ip {} failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// A named network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    file: File,
}

impl NetNs {
    /// Creates a namespace with a unique name and its loopback up.
    ///
    /// # Panics
    ///
    /// When not root or when `ip netns add` fails.
    #[must_use]
    pub fn new() -> Self {
        require_root();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = format!("weir-test-{}-{id}", std::process::id());
        ip(&["netns", "add", &name]);
        let path = PathBuf::from("/run/netns").join(&name);
        let file = File::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        let ns = Self { name, file };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name, as `ip netns` knows it.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <name> <args>`.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full);
    }

    /// Creates a veth pair, `name` here and `peer_name` in `peer`, both up.
    pub fn add_veth(&self, name: &str, peer: &Self, peer_name: &str) {
        self.ip(&[
            "link", "add", name, "type", "veth", "peer", "name", peer_name, "netns", &peer.name,
        ]);
        self.ip(&["link", "set", name, "up"]);
        peer.ip(&["link", "set", peer_name, "up"]);
    }

    /// Runs `f` on a thread that entered this namespace, and returns its
    /// result. Sockets created by `f` stay in the namespace wherever they are
    /// used afterwards; the calling thread's namespace never changes.
    ///
    /// # Panics
    ///
    /// When `setns` fails or `f` panics.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(&self.file, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("entering netns {}: {e}", self.name));
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Default for NetNs {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting removes its interfaces (and the veth peers elsewhere).
        let status = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
        if !matches!(status, Ok(s) if s.success()) && !std::thread::panicking() {
            panic!("ip netns delete {} failed: {status:?}", self.name);
        }
    }
}
