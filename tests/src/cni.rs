//! CNI layouts built for real, for the attachment tests: a "node" network
//! namespace with forwarding on (the machine's own namespace is never
//! touched), and pods wired to it the way each CNI wires them.
//!
//! - bridge (bridge CNI, flannel's `cni0`): pod veths enslaved to a bridge
//!   holding the gateway address; pods on a /24 with a default route to it.
//! - Calico: host veth `cali…` without address, MAC `ee:ee:ee:ee:ee:ee`
//!   on every one of them, proxy ARP, a /32 route to the pod; the pod has a
//!   /32 and a default route via 169.254.1.1.
//! - kindnet / ptp: host veth holding the gateway address as a /32, a /32
//!   route to the pod through it; the pod routes everything via the
//!   gateway.
//!
//! Cilium in chaining mode keeps the chained plugin's layout (it adds only
//! BPF programs), so these three cover it.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    harness::{metric_value, weir_bin},
    netns::NetNs,
};

/// A node: the namespace where host veths, routes and bridges live.
#[derive(Debug)]
pub struct Node {
    /// Its namespace.
    pub ns: NetNs,
}

impl Node {
    /// A fresh node namespace that forwards between its pods, with a
    /// stand-in uplink (`ifb`, which sends nothing anywhere) that the
    /// route to Calico's 169.254.1.1 leaves through: proxy ARP answers
    /// only for addresses routed out of another interface, which on a
    /// real node the default route via the uplink provides.
    #[must_use]
    pub fn new() -> Self {
        let ns = NetNs::new();
        ns.run(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))
            .expect("ip_forward in the node namespace");
        ns.ip(&["link", "add", "uplink0", "type", "ifb"]);
        ns.ip(&["link", "set", "uplink0", "up"]);
        ns.ip(&["route", "add", "169.254.1.1/32", "dev", "uplink0"]);
        Self { ns }
    }

    /// The index of the node's interface `name`.
    ///
    /// # Panics
    /// When there is no such interface.
    #[must_use]
    pub fn ifindex(&self, name: &str) -> u32 {
        self.ns
            .run(|| nix::net::if_::if_nametoindex(name))
            .unwrap_or_else(|e| panic!("no interface {name} on the node: {e}"))
    }

    /// A bridge holding `gateway` (CIDR notation), up.
    pub fn add_bridge(&self, name: &str, gateway: &str) {
        self.ns.ip(&["link", "add", name, "type", "bridge"]);
        self.ns.ip(&["addr", "add", gateway, "dev", name]);
        self.ns.ip(&["link", "set", name, "up"]);
    }

    /// A pod on `bridge` with `ip`/24 and a default route via `gateway`.
    #[must_use]
    pub fn add_bridged_pod(
        &self,
        bridge: &str,
        host_veth: &str,
        ip: Ipv4Addr,
        gateway: &str,
    ) -> Pod {
        let pod = NetNs::new();
        self.ns.add_veth(host_veth, &pod, "eth0");
        self.ns.ip(&["link", "set", host_veth, "master", bridge]);
        pod.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        pod.ip(&["route", "add", "default", "via", gateway]);
        Pod::new(pod, ip, host_veth)
    }

    /// A Calico pod.
    #[must_use]
    pub fn add_calico_pod(&self, host_veth: &str, ip: Ipv4Addr) -> Pod {
        let pod = NetNs::new();
        self.ns.add_veth(host_veth, &pod, "eth0");
        self.ns
            .ip(&["link", "set", host_veth, "address", "ee:ee:ee:ee:ee:ee"]);
        self.sysctl(&format!("net/ipv4/conf/{host_veth}/proxy_arp"), "1");
        self.ns.ip(&[
            "route",
            "add",
            &format!("{ip}/32"),
            "dev",
            host_veth,
            "scope",
            "link",
        ]);
        pod.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
        pod.ip(&[
            "route",
            "add",
            "169.254.1.1",
            "dev",
            "eth0",
            "scope",
            "link",
        ]);
        pod.ip(&[
            "route",
            "add",
            "default",
            "via",
            "169.254.1.1",
            "dev",
            "eth0",
        ]);
        Pod::new(pod, ip, host_veth)
    }

    /// A kindnet / ptp pod: the host veth holds `gateway` as a /32.
    #[must_use]
    pub fn add_ptp_pod(&self, host_veth: &str, ip: Ipv4Addr, gateway: Ipv4Addr) -> Pod {
        let pod = NetNs::new();
        self.ns.add_veth(host_veth, &pod, "eth0");
        self.ns
            .ip(&["addr", "add", &format!("{gateway}/32"), "dev", host_veth]);
        self.ns.ip(&[
            "route",
            "add",
            &format!("{ip}/32"),
            "dev",
            host_veth,
            "scope",
            "host",
            "src",
            &gateway.to_string(),
        ]);
        pod.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
        let gw = gateway.to_string();
        pod.ip(&["route", "add", &gw, "dev", "eth0", "scope", "link"]);
        pod.ip(&["route", "add", "default", "via", &gw, "dev", "eth0"]);
        Pod::new(pod, ip, host_veth)
    }

    /// Delete `pod` and wait until its host veth is gone too: the kernel
    /// dismantles a deleted namespace's interfaces asynchronously, and a
    /// CNI that reuses the name must wait as well.
    ///
    /// # Panics
    /// When the veth is still there after 10s.
    pub fn delete_pod(&self, pod: Pod) {
        let veth = pod.host_veth.clone();
        drop(pod);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .ns
            .run(|| nix::net::if_::if_nametoindex(veth.as_str()))
            .is_ok()
        {
            assert!(Instant::now() < deadline, "{veth} outlived its pod");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Cilium's own datapath (no endpoint routes): the `cilium_host` /
    /// `cilium_net` veth pair on the node holding `gateway`, with the pod
    /// CIDR `cidr` routed through `cilium_host`.
    pub fn add_cilium_host(&self, gateway: &str, cidr: &str) {
        self.ns.ip(&[
            "link",
            "add",
            "cilium_host",
            "type",
            "veth",
            "peer",
            "name",
            "cilium_net",
        ]);
        self.ns.ip(&["link", "set", "cilium_host", "up"]);
        self.ns.ip(&["link", "set", "cilium_net", "up"]);
        self.ns.ip(&["addr", "add", gateway, "dev", "cilium_host"]);
        self.ns.ip(&["route", "add", cidr, "dev", "cilium_host"]);
    }

    /// A Cilium pod: an `lxc…` veth without a route of its own (BPF
    /// programs forward to it).
    #[must_use]
    pub fn add_cilium_pod(&self, host_veth: &str, ip: Ipv4Addr) -> Pod {
        let pod = NetNs::new();
        self.ns.add_veth(host_veth, &pod, "eth0");
        pod.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
        Pod::new(pod, ip, host_veth)
    }

    /// Write `/proc/sys/<path>` inside the node.
    pub fn sysctl(&self, path: &str, value: &str) {
        let file = format!("/proc/sys/{path}");
        self.ns
            .run(|| std::fs::write(&file, value))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
    }

    /// Send one UDP datagram from the node to `ip`: the node resolves the
    /// pod's MAC (a neighbour entry) and the bridge learns it (FDB).
    pub fn touch(&self, ip: Ipv4Addr) {
        self.ns.run(|| {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp socket in the node");
            let _ = socket.send_to(b"hello", (ip, 9));
        });
    }
}

impl Default for Node {
    fn default() -> Self {
        Self::new()
    }
}

/// A pod: its namespace, address and host-side veth name.
#[derive(Debug)]
pub struct Pod {
    /// Its namespace (deleting it deletes both veth ends).
    pub ns: NetNs,
    /// Its address.
    pub ip: Ipv4Addr,
    /// The host end's name.
    pub host_veth: String,
}

impl Pod {
    fn new(ns: NetNs, ip: Ipv4Addr, host_veth: &str) -> Self {
        Self {
            ns,
            ip,
            host_veth: host_veth.to_owned(),
        }
    }
}

/// A pod namespace that exists only as `/proc/<pid>/ns/net` of a process
/// (runtimes that do not bind-mount it under `/run/netns`), on a bridge.
#[derive(Debug)]
pub struct ProcessPod {
    child: Child,
    /// Its address.
    pub ip: Ipv4Addr,
}

impl ProcessPod {
    /// `unshare --net sleep` holding a namespace with `ip`/24 on a veth
    /// `host_veth` enslaved to the node's `bridge`.
    ///
    /// # Panics
    /// When a command fails.
    #[must_use]
    pub fn start(node: &Node, bridge: &str, host_veth: &str, ip: Ipv4Addr) -> Self {
        let child = Command::new("unshare")
            .args(["--net", "sleep", "600"])
            .spawn()
            .expect("unshare --net sleep");
        let pid = child.id().to_string();
        let netns = format!("/proc/{pid}/ns/net");
        // unshare switches namespace right after fork: wait for it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_link(&netns).ok() == std::fs::read_link("/proc/self/ns/net").ok() {
            assert!(
                Instant::now() < deadline,
                "unshare did not enter a new netns"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let pod = Self { child, ip };
        node.ns.ip(&[
            "link", "add", host_veth, "type", "veth", "peer", "name", "eth0", "netns", &pid,
        ]);
        node.ns
            .ip(&["link", "set", host_veth, "master", bridge, "up"]);
        for args in [
            vec!["addr", "add", &format!("{ip}/24"), "dev", "eth0"],
            vec!["link", "set", "eth0", "up"],
        ] {
            let status = Command::new("nsenter")
                .arg(format!("--net={netns}"))
                .arg("ip")
                .args(&args)
                .status()
                .expect("nsenter ip");
            assert!(status.success(), "nsenter ip {args:?}");
        }
        pod
    }
}

impl Drop for ProcessPod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `weir agent` running inside a node namespace (`nsenter --net`), so
/// that it attaches to the node's veths, or in the machine's own namespace
/// (for a `weir lab`, whose bridge lives there); its API is reached from a
/// thread in the agent's namespace. Stopped with SIGTERM on drop.
pub struct NodeAgent {
    child: Child,
    /// The agent's network namespace; `None`: the machine's.
    netns: Option<PathBuf>,
    port: u16,
    log: PathBuf,
    _state: tempfile::TempDir,
}

/// Run `f` on a thread inside `netns` (or right here for `None`).
fn in_netns<T: Send>(netns: Option<&PathBuf>, f: impl FnOnce() -> T + Send) -> T {
    let Some(path) = netns else { return f() };
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("entering {}: {e}", path.display()));
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

impl NodeAgent {
    /// Start `weir agent --source SOURCE --node-name NODE_NAME` in `node`
    /// (`None`: in the machine's own namespace).
    ///
    /// # Panics
    /// When the agent does not start or does not answer within 30s.
    #[must_use]
    pub fn start(node: Option<&Node>, source: &str, node_name: &str) -> Self {
        let netns = node.map(|n| PathBuf::from("/run/netns").join(n.ns.name()));
        let port = in_netns(netns.as_ref(), || {
            TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port()
        });
        let state = tempfile::Builder::new()
            .prefix("weir-attach-state")
            .tempdir()
            .expect("state dir");
        let log = state.path().join("agent.log");
        let mut command = Command::new("nsenter");
        if let Some(path) = &netns {
            command.arg(format!("--net={}", path.display()));
        }
        let child = command
            .arg(weir_bin())
            .args(["agent", "--source", source, "--node-name", node_name])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--sweep-interval", "300ms", "--resync-interval", "200ms"])
            .arg("--no-pin")
            .arg("--state-dir")
            .arg(state.path())
            .env("RUST_LOG", "info,weir_agent=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("agent log"))
            .spawn()
            .expect("cannot start weir agent");
        let mut agent = Self {
            child,
            netns,
            port,
            log,
            _state: state,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while agent.get("/healthz").is_none() {
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!("agent exited early ({status}):\n{}", agent.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "agent not ready within 30s:\n{}",
                agent.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        agent
    }

    /// The agent's log so far.
    #[must_use]
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path` (HTTP/1.0, from the agent's namespace): the body on 200.
    #[must_use]
    pub fn get(&self, path: &str) -> Option<String> {
        let port = self.port;
        in_netns(self.netns.as_ref(), || {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
            stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
            let mut response = String::new();
            stream.read_to_string(&mut response).ok()?;
            let (head, body) = response.split_once("\r\n\r\n")?;
            let status = head.split_whitespace().nth(1)?;
            (status == "200").then(|| body.to_owned())
        })
    }

    /// A metric's value.
    #[must_use]
    pub fn metric(&self, name: &str) -> Option<f64> {
        metric_value(&self.get("/metrics")?, name)
    }

    /// `weir observe --last 1000 -o json`, run in the agent's namespace,
    /// parsed.
    ///
    /// # Panics
    /// When the command fails or prints something else than JSON lines.
    #[must_use]
    pub fn flows(&self) -> Vec<serde_json::Value> {
        let mut command = Command::new("nsenter");
        if let Some(path) = &self.netns {
            command.arg(format!("--net={}", path.display()));
        }
        let output = command
            .arg(weir_bin())
            .args([
                "observe",
                "--server",
                &format!("http://127.0.0.1:{}", self.port),
            ])
            .args(["--last", "1000", "-o", "json"])
            .output()
            .expect("weir observe");
        assert!(
            output.status.success(),
            "weir observe failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("observe -o json is JSON lines"))
            .collect()
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
