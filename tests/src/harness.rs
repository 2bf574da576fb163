//! Drives the real `weir` binary: a lab with a unique name, an agent
//! attached to it, probes, and API reads. Every guard cleans up on drop, also
//! when the test panics.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

/// Panic unless running as root: privileged tests never skip silently.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (CAP_BPF, CAP_NET_ADMIN, network namespaces); run it through `make test`"
    );
}

/// The `weir` binary built by `cargo build -p weir` (the Makefile builds it
/// before the privileged tests).
#[must_use]
pub fn weir_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("WEIR_BIN") {
        return path.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let bin = target.join("debug/weir");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p weir` first (make test does)",
        bin.display()
    );
    bin
}

/// The API token of every agent [`Agent::start`] starts (`WEIR_TOKEN`),
/// which [`weir`] passes to the CLI: tests' commands that change state
/// present it as a user's would.
#[must_use]
pub fn api_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("weir-test-{}-{nanos:x}", std::process::id())
    })
}

/// Run `weir ARGS...` (with the agents' API token in `WEIR_TOKEN`) and
/// return its output.
#[must_use]
pub fn weir(args: &[&str]) -> Output {
    Command::new(weir_bin())
        .args(args)
        .env("WEIR_TOKEN", api_token())
        .output()
        .unwrap_or_else(|e| panic!("cannot run weir {args:?}: {e}"))
}

/// Run `weir ARGS...`, panic with its stderr unless it succeeds, return stdout.
#[must_use]
pub fn weir_ok(args: &[&str]) -> String {
    let out = weir(args);
    assert!(
        out.status.success(),
        "weir {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call, valid as a lab name.
#[must_use]
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}{}-{}",
        std::process::id() % 100_000,
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    )
}

/// A running lab, removed on drop.
pub struct Lab {
    /// The lab's name (`--lab`).
    pub name: String,
    spec: tempfile::NamedTempFile,
}

impl Lab {
    /// `weir lab --lab <unique> up` with `yaml` as the only file.
    #[must_use]
    pub fn up(prefix: &str, yaml: &str) -> Self {
        require_root();
        let name = unique_name(prefix);
        let spec = tempfile::Builder::new()
            .prefix(&name)
            .suffix(".yaml")
            .tempfile()
            .expect("temp file");
        std::fs::write(spec.path(), yaml).expect("write lab spec");
        let lab = Self { name, spec };
        let path = lab.spec.path().to_string_lossy().into_owned();
        let _ = weir_ok(&["lab", "--lab", &lab.name, "up", &path]);
        lab
    }

    /// `weir lab up --replace` with a new spec: the same lab, rebuilt.
    pub fn replace(&self, yaml: &str) {
        std::fs::write(self.spec.path(), yaml).expect("write lab spec");
        let path = self.spec.path().to_string_lossy().into_owned();
        let out = self.cmd(&["up", "--replace", &path]);
        assert!(out.status.success(), "lab up --replace failed: {out:?}");
    }

    /// `weir lab --lab <name> ARGS...`.
    #[must_use]
    pub fn cmd(&self, args: &[&str]) -> Output {
        let mut all = vec!["lab", "--lab", &self.name];
        all.extend_from_slice(args);
        weir(&all)
    }

    /// `weir lab status -o json`, parsed.
    #[must_use]
    pub fn status(&self) -> serde_json::Value {
        let out = self.cmd(&["status", "-o", "json"]);
        assert!(out.status.success(), "lab status failed: {out:?}");
        serde_json::from_slice(&out.stdout).expect("lab status -o json is JSON")
    }

    /// The name of the first pod of `namespace` whose name starts with `prefix`.
    #[must_use]
    pub fn pod(&self, namespace: &str, prefix: &str) -> String {
        let status = self.status();
        let pods = status["pods"].as_array().expect("status.pods");
        pods.iter()
            .filter(|p| p["namespace"] == namespace)
            .filter_map(|p| p["name"].as_str())
            .find(|n| n.starts_with(prefix))
            .map(|n| format!("{namespace}/{n}"))
            .unwrap_or_else(|| panic!("no pod {namespace}/{prefix}* in the lab: {status}"))
    }

    /// Probe and return whether it connected.
    #[must_use]
    pub fn probe(&self, from: &str, to: &str, port: &str) -> bool {
        let out = self.cmd(&["probe", from, to, port, "--timeout", "2s"]);
        match out.status.code() {
            Some(0) => true,
            Some(1) => false,
            _ => panic!("probe {from} -> {to} {port} errored: {out:?}"),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = self.cmd(&["down"]);
        if !out.status.success() && !thread::panicking() {
            panic!("lab down failed: {out:?}");
        }
    }
}

/// A unique `--pin-dir` under `/sys/fs/bpf`, cleaned up on drop with
/// `weir agent --cleanup` (maps unpinned, links detached): a pinned
/// datapath outlives its agent by design, so every test removes its own.
pub struct PinDir {
    /// The directory.
    pub path: PathBuf,
}

impl PinDir {
    /// A fresh, unused pin directory.
    #[must_use]
    pub fn new(prefix: &str) -> Self {
        Self {
            path: Path::new("/sys/fs/bpf").join(unique_name(&format!("weir-test-{prefix}-"))),
        }
    }

    /// The path as an argument.
    #[must_use]
    pub fn arg(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let out = weir(&["agent", "--cleanup", "--pin-dir", &self.arg()]);
        if !out.status.success() && !thread::panicking() {
            panic!("weir agent --cleanup failed: {out:?}");
        }
    }
}

/// What the agents of one node keep across a restart: a state directory
/// (`--state-dir`) and a pin directory (`--pin-dir`, cleaned up on drop:
/// stop the agents first), with the rest of their arguments.
pub struct AgentHome {
    args: Vec<String>,
    _state: tempfile::TempDir,
    _pin: PinDir,
}

impl AgentHome {
    /// Fresh directories (the pin directory named after `prefix`), and
    /// `extra` after them on every start.
    #[must_use]
    pub fn new(prefix: &str, extra: &[&str]) -> Self {
        let state = tempfile::tempdir().expect("state dir");
        let pin = PinDir::new(prefix);
        let mut args = vec![
            "--state-dir".to_owned(),
            state.path().to_string_lossy().into_owned(),
            "--pin-dir".to_owned(),
            pin.arg(),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        Self {
            args,
            _state: state,
            _pin: pin,
        }
    }

    /// Start an agent on `lab` in this home ([`Agent::start`]).
    #[must_use]
    pub fn start(&self, lab: &Lab) -> Agent {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        Agent::start(lab, &args)
    }
}

/// A running `weir agent`, stopped with SIGTERM on drop.
pub struct Agent {
    child: Child,
    /// Its API address.
    pub listen: SocketAddr,
    log: PathBuf,
    /// Its `--state-dir`.
    state_dir: PathBuf,
    /// A private `--state-dir` unless the caller passed one: agents of
    /// parallel tests must not share (or lock each other out of) a store.
    _state: Option<tempfile::TempDir>,
    /// A private `--pin-dir` unless the caller passed one; dropped (cleaned
    /// up) after the agent stopped.
    _pin: Option<PinDir>,
}

impl Agent {
    /// Start `weir agent --source lab:<lab> EXTRA...` and wait for `/healthz`.
    #[must_use]
    pub fn start(lab: &Lab, extra: &[&str]) -> Self {
        Self::start_with(lab, &format!("lab:{}", lab.name), extra, &[])
    }

    /// Start `weir agent --source SOURCE EXTRA...` with `env` added to its
    /// environment, and wait until it attached to every pod of `lab`.
    #[must_use]
    pub fn start_with(lab: &Lab, source: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let pods = lab.status()["pods"].as_array().map_or(0, Vec::len);
        Self::start_attaching(lab, pods, source, extra, env)
    }

    /// Start the agent of node `node` of a multi-node lab (`--node-name
    /// NODE`), and wait until it attached to that node's pods.
    #[must_use]
    pub fn start_on_node(
        lab: &Lab,
        node: &str,
        source: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let pods = lab.status()["pods"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["node"] == node)
            .count();
        let extra = [&["--node-name", node][..], extra].concat();
        Self::start_attaching(lab, pods, source, &extra, env)
    }

    fn start_attaching(
        lab: &Lab,
        pods: usize,
        source: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let listen = free_local_addr();
        let log = std::env::temp_dir().join(format!(
            "{}.log",
            unique_name(&format!("{}-agent-", lab.name))
        ));
        let log_file = std::fs::File::create(&log).expect("agent log file");
        let listen_arg = listen.to_string();
        let mut args = vec![
            "agent",
            "--source",
            source,
            "--listen",
            &listen_arg,
            "--sweep-interval",
            "300ms",
            "--resync-interval",
            "200ms",
        ];
        args.extend_from_slice(extra);
        let state = (!extra.contains(&"--state-dir")).then(|| {
            tempfile::Builder::new()
                .prefix(&format!("{}-state", lab.name))
                .tempdir()
                .expect("agent state dir")
        });
        let state_arg = state
            .as_ref()
            .map(|d| d.path().to_string_lossy().into_owned());
        if let Some(dir) = &state_arg {
            args.extend(["--state-dir", dir.as_str()]);
        }
        let pin = (!extra.contains(&"--pin-dir")).then(|| PinDir::new(&lab.name));
        let pin_arg = pin.as_ref().map(PinDir::arg);
        if let Some(dir) = &pin_arg {
            args.extend(["--pin-dir", dir.as_str()]);
        }
        let state_dir = PathBuf::from(
            args.iter()
                .position(|a| *a == "--state-dir")
                .and_then(|i| args.get(i + 1))
                .expect("a --state-dir"),
        );
        let child = Command::new(weir_bin())
            .args(&args)
            .env("RUST_LOG", "info,weir_agent=debug")
            .env("WEIR_TOKEN", api_token())
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("cannot start weir agent");
        let mut agent = Self {
            child,
            listen,
            log,
            state_dir,
            _state: state,
            _pin: pin,
        };
        agent.wait_ready(pods);
        assert_eq!(
            agent.token(),
            api_token(),
            "the agent writes its token to <state-dir>/api-token"
        );
        agent
    }

    fn wait_ready(&mut self, pods: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("agent exited early ({status}):\n{}", self.log_text());
            }
            let attached = self
                .get_text("/metrics")
                .and_then(|m| metric_value(&m, "weir_attached_interfaces"));
            if attached == Some(pods as f64) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "agent not attached to {pods} pods within 30s (attached: {attached:?}):\n{}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The agent's log so far.
    #[must_use]
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The API token the agent wrote to `<state-dir>/api-token`, for
    /// requests that change state.
    #[must_use]
    pub fn token(&self) -> String {
        let path = self.state_dir.join("api-token");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
            .trim()
            .to_owned()
    }

    /// The agent's process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The API base URL.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// GET a path, `None` when the agent does not answer.
    #[must_use]
    pub fn get_text(&self, path: &str) -> Option<String> {
        let response = reqwest::blocking::Client::new()
            .get(format!("{}{path}", self.url()))
            .timeout(Duration::from_secs(5))
            .send()
            .ok()?;
        response.error_for_status().ok()?.text().ok()
    }

    /// GET a JSON document, panicking on any failure.
    #[must_use]
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let text = self
            .get_text(path)
            .unwrap_or_else(|| panic!("GET {path} failed:\n{}", self.log_text()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"))
    }

    /// A metric's value (the first sample whose name and labels start with `name`).
    #[must_use]
    pub fn metric(&self, name: &str) -> Option<f64> {
        metric_value(&self.get_text("/metrics")?, name)
    }

    /// Send SIGSTOP (true) or SIGCONT (false): a stalled agent, for
    /// ring-buffer overflow tests.
    pub fn pause(&self, stop: bool) {
        let signal = if stop {
            nix::sys::signal::Signal::SIGSTOP
        } else {
            nix::sys::signal::Signal::SIGCONT
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        nix::sys::signal::kill(pid, signal).expect("signal agent");
    }

    /// SIGKILL and wait: the agent gets no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait; returns whether it exited cleanly.
    pub fn stop(&mut self) -> bool {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

/// The value of the first sample line starting with `name` (Prometheus text).
#[must_use]
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Poll `check` until it returns `Some`, for up to `timeout`.
pub fn eventually<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// A free local TCP address (bound, then released).
#[must_use]
pub fn free_local_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr")
}

/// The agent's bpffs must be mounted before it starts: a node's is (systemd
/// mounts it), the DaemonSet's agent has no CAP_SYS_ADMIN to mount one
/// without podNamespaces, and a fresh test machine may not have one. Same
/// lock as the agent's own mount.
pub fn ensure_bpffs() {
    let lock = std::fs::File::create("/run/weir-bpffs.lock").expect("create the bpffs lock");
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock the bpffs lock");
    let fs = nix::sys::statfs::statfs("/sys/fs/bpf").expect("statfs /sys/fs/bpf");
    if fs.filesystem_type() != nix::sys::statfs::BPF_FS_MAGIC {
        nix::mount::mount(
            Some("bpffs"),
            "/sys/fs/bpf",
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("mount bpffs on /sys/fs/bpf");
    }
}
