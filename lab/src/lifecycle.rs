//! `up` and `down`. `up` records each resource in the state file before
//! creating it and tears down whatever it made when a step fails; `down`
//! removes what the state file lists *and* sweeps for anything named like
//! the lab's objects, so it also cleans up after a crash or a lost state
//! file. Both are idempotent.

use std::{
    collections::BTreeSet,
    fs::File,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tracing::{debug, info, warn};

use super::{
    error::{LabError, Result},
    names::LabName,
    net, plan, services, spec,
    state::{LabState, Phase, Resource, state_path},
};

/// What `up` needs.
#[derive(Clone, Debug)]
pub struct UpOptions {
    /// The lab.
    pub lab: LabName,
    /// YAML files.
    pub files: Vec<PathBuf>,
    /// Replace a running lab of the same name instead of refusing.
    pub replace: bool,
    /// The `weir` binary that runs responders (`weir lab serve`).
    pub responder_exe: PathBuf,
    /// How long to wait for responders to bind their ports.
    pub ready_timeout: Duration,
}

/// Whether anything of the lab exists (state file, netns or bridge).
#[must_use]
pub fn exists(lab: &LabName) -> bool {
    state_path(lab).exists()
        || !net::list_netns(&lab.netns_prefix()).is_empty()
        || net::link_exists(&lab.bridge())
        || !net::bridges_with_alias(&lab.bridge_alias()).is_empty()
}

/// Bring a lab up from YAML files.
///
/// # Errors
/// Invalid files, a lab that is already up (unless `replace`), a CIDR in
/// use, or a failed step (after which everything made is removed again).
pub fn up(opts: &UpOptions) -> Result<LabState> {
    let spec = spec::parse_files(&opts.files)?;
    let mut state = plan::plan(&opts.lab, &spec)?;
    if exists(&opts.lab) {
        if !opts.replace {
            return Err(LabError::AlreadyUp {
                lab: opts.lab.to_string(),
                path: state_path(&opts.lab),
            });
        }
        info!(lab = %opts.lab, "replacing the running lab");
        down(&opts.lab)?;
    }
    net::check_cidrs_free(&state)?;
    if let Err(error) = create(&mut state, opts) {
        warn!(%error, lab = %opts.lab, "lab up failed, removing what was made");
        if let Err(cleanup) = down(&opts.lab) {
            warn!(error = %cleanup, "cleanup failed; run `weir lab down`");
        }
        return Err(error);
    }
    state.phase = Phase::Ready;
    state.save()?;
    Ok(state)
}

struct Box_ {
    netns: String,
    veth: String,
    ips: Vec<std::net::IpAddr>,
    tcp: Vec<u16>,
    udp: Vec<u16>,
    external: bool,
    /// The lab's DNS server (kube-system/coredns): port 53 answers DNS.
    dns: bool,
    /// The pod's namespace (for its `resolv.conf`); `None` for hosts.
    namespace: Option<String>,
    /// The node (pods of a multi-node lab).
    node: Option<String>,
    /// The bridge of its node.
    bridge: String,
}

fn boxes(state: &LabState) -> Vec<Box_> {
    let split = |ports: &[super::state::Port], proto| {
        ports
            .iter()
            .filter(|p| p.protocol == proto)
            .map(|p| p.port)
            .collect::<Vec<_>>()
    };
    use weir_generator::model::Protocol::{Tcp, Udp};
    let bridge_of = |node: Option<&str>| {
        state
            .segment(node)
            .map_or_else(|| state.bridge.clone(), |s| s.bridge.to_owned())
    };
    let pods = state.pods.iter().map(|p| Box_ {
        netns: p.netns.clone(),
        veth: p.host_veth.clone(),
        ips: p.ips.clone(),
        tcp: split(&p.ports, Tcp),
        udp: split(&p.ports, Udp),
        external: false,
        dns: super::dns::is_dns_pod(p),
        namespace: Some(p.namespace.clone()),
        node: p.node.clone(),
        bridge: bridge_of(p.node.as_deref()),
    });
    let hosts = state.external_hosts.iter().map(|h| Box_ {
        netns: h.netns.clone(),
        veth: h.host_veth.clone(),
        ips: h.ips.clone(),
        tcp: split(&h.ports, Tcp),
        udp: split(&h.ports, Udp),
        external: true,
        dns: false,
        namespace: None,
        node: None,
        bridge: state.bridge.clone(),
    });
    pods.chain(hosts).collect()
}

fn create(state: &mut LabState, opts: &UpOptions) -> Result<()> {
    let lab = &opts.lab;
    state.save()?;
    let run_dir = state.run_dir.clone();
    state.record(Resource::RunDir {
        path: run_dir.clone(),
    })?;
    std::fs::create_dir_all(&run_dir).map_err(|source| LabError::Io {
        action: "cannot create",
        path: run_dir.clone(),
        source,
    })?;
    let zone = super::dns::zone_path(state);
    super::dns::Zone::from_state(state).save(&zone)?;
    let table = lab.nft_table();
    state.record(Resource::NftTable {
        family: "inet".into(),
        name: table.clone(),
    })?;
    net::add_firewall(&table, state)?;
    let bridges: Vec<String> = state
        .segments()
        .iter()
        .map(|s| s.bridge.to_owned())
        .collect();
    for bridge in bridges {
        state.record(Resource::Bridge {
            name: bridge.clone(),
        })?;
        if let Some(segment) = state.segments().iter().find(|s| s.bridge == bridge) {
            net::add_bridge(state, segment)?;
        }
    }
    let ruleset = services::ruleset(&state.services);
    let boxes = boxes(state);
    for b in &boxes {
        state.record(Resource::Netns {
            name: b.netns.clone(),
        })?;
        net::add_netns(&b.netns)?;
        state.record(Resource::Veth {
            name: b.veth.clone(),
        })?;
        net::add_veth(&b.veth, &b.netns, &b.bridge)?;
        net::configure_inside(state, &b.netns, &b.ips, b.external, b.node.as_deref())?;
        if let (false, Some(rules)) = (b.external, &ruleset) {
            net::nft_in(&b.netns, rules)?;
        }
        let resolv = super::dns::dns_service(state)
            .zip(b.namespace.as_deref())
            .map(|(svc, ns)| super::dns::resolv_conf(svc, ns));
        if let Some(resolv) = resolv {
            let dir = netns_etc(&b.netns);
            state.record(Resource::NetnsEtc { path: dir.clone() })?;
            write_resolv_conf(&dir, &resolv)?;
        }
    }
    let mut started = Vec::new();
    for b in boxes
        .iter()
        .filter(|b| !b.tcp.is_empty() || !b.udp.is_empty())
    {
        let log = run_dir.join(format!("{}.log", b.netns));
        let zone = b.dns.then_some(zone.as_path());
        let (child, pid) = spawn_responder(opts, b, zone, &log)?;
        state.record(Resource::Process {
            pid,
            netns: b.netns.clone(),
        })?;
        started.push((child, b.netns.clone(), log));
    }
    wait_ready(started, opts.ready_timeout)
}

/// Where `ip netns exec` finds a netns's own `/etc` files (bind-mounted
/// over the machine's, as `resolv.conf` is for a pod).
fn netns_etc(netns: &str) -> PathBuf {
    std::path::Path::new("/etc/netns").join(netns)
}

fn write_resolv_conf(dir: &std::path::Path, text: &str) -> Result<()> {
    let io = |source, path: PathBuf| LabError::Io {
        action: "cannot write",
        path,
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| io(e, dir.to_owned()))?;
    let path = dir.join("resolv.conf");
    std::fs::write(&path, text).map_err(|e| io(e, path))
}

fn spawn_responder(
    opts: &UpOptions,
    b: &Box_,
    zone: Option<&std::path::Path>,
    log: &std::path::Path,
) -> Result<(Child, u32)> {
    let io = |source| LabError::Io {
        action: "cannot start a responder, log",
        path: log.to_owned(),
        source,
    };
    let stderr = File::create(log).map_err(io)?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &b.netns])
        .arg(&opts.responder_exe)
        .args([
            "lab",
            "--lab",
            opts.lab.as_str(),
            "serve",
            "--netns",
            &b.netns,
        ]);
    for p in &b.tcp {
        cmd.args(["--tcp", &p.to_string()]);
    }
    for p in &b.udp {
        cmd.args(["--udp", &p.to_string()]);
    }
    if let Some(zone) = zone {
        cmd.arg("--dns").arg(zone);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(io)?;
    let pid = child.id();
    debug!(netns = %b.netns, pid, "responder started");
    Ok((child, pid))
}

/// Wait for each responder's `ready` line; a responder that exits or stays
/// silent fails `up`.
fn wait_ready(started: Vec<(Child, String, PathBuf)>, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let (tx, rx) = mpsc::channel();
    let mut pending = BTreeSet::new();
    for (mut child, netns, log) in started {
        pending.insert(netns.clone());
        let tx = tx.clone();
        let stdout = child.stdout.take();
        std::thread::spawn(move || {
            let ready = stdout.is_some_and(|out| {
                let mut line = String::new();
                BufReader::new(out).read_line(&mut line).is_ok() && line.trim() == "ready"
            });
            // The child runs on after `up` exits (reparented to init).
            drop(child);
            let _ = tx.send((netns, log, ready));
        });
    }
    drop(tx);
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((netns, _, true)) => {
                pending.remove(&netns);
            }
            Ok((netns, log, false)) => return Err(LabError::Responder { netns, log }),
            Err(_) => {
                let netns = pending.into_iter().next().unwrap_or_default();
                return Err(LabError::Responder {
                    log: PathBuf::from(format!("the log of {netns}")),
                    netns,
                });
            }
        }
    }
    Ok(())
}

/// Whether `pid` is a lab responder (guards against a recycled pid).
fn is_responder(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        args.windows(2).any(|w| w[0] == b"lab") && args.contains(&b"serve".as_slice())
    })
}

fn terminate(pids: &BTreeSet<u32>) {
    // A zombie (exited, not yet reaped by init) counts as gone.
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with(['Z', 'X']))
        })
    };
    for &pid in pids {
        let Ok(raw) = i32::try_from(pid) else {
            continue;
        };
        if let Err(e) = kill(Pid::from_raw(raw), Signal::SIGTERM) {
            debug!(pid, %e, "SIGTERM");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &pid in pids.iter().filter(|p| alive(**p)) {
        let Ok(raw) = i32::try_from(pid) else {
            continue;
        };
        if let Err(e) = kill(Pid::from_raw(raw), Signal::SIGKILL) {
            debug!(pid, %e, "SIGKILL");
        }
    }
}

/// Remove everything of a lab. Returns whether there was anything.
///
/// # Errors
/// Failures to delete an object that exists; the state file is kept then,
/// so `down` can be run again.
pub fn down(lab: &LabName) -> Result<bool> {
    let path = state_path(lab);
    let state = match LabState::load_from(&path, lab.as_str()) {
        Ok(state) => Some(state),
        Err(LabError::NotUp { .. }) => None,
        Err(error @ LabError::StateFormat { .. }) => {
            warn!(%error, "ignoring the unreadable state file, sweeping by name");
            None
        }
        Err(e) => return Err(e),
    };
    let found = state.is_some() || exists(lab);
    let resources = state
        .as_ref()
        .map(|s| s.resources.clone())
        .unwrap_or_default();
    let mut netns: BTreeSet<String> = net::list_netns(&lab.netns_prefix()).into_iter().collect();
    let mut veths = BTreeSet::new();
    let mut tables = BTreeSet::from([("inet".to_owned(), lab.nft_table())]);
    let mut bridges = BTreeSet::from([lab.bridge()]);
    bridges.extend(net::bridges_with_alias(&lab.bridge_alias()));
    let mut dirs = BTreeSet::from([super::state::run_dir(lab)]);
    // Each netns's own /etc (resolv.conf), by name as for the netns.
    dirs.extend(netns.iter().map(|ns| netns_etc(ns)));
    let mut pids = BTreeSet::new();
    for r in resources {
        match r {
            Resource::Netns { name } => {
                netns.insert(name);
            }
            Resource::Veth { name } => {
                veths.insert(name);
            }
            Resource::NftTable { family, name } => {
                tables.insert((family, name));
            }
            Resource::Bridge { name } => {
                bridges.insert(name);
            }
            Resource::RunDir { path } | Resource::NetnsEtc { path } => {
                dirs.insert(path);
            }
            Resource::Process { pid, .. } => {
                if is_responder(pid) {
                    pids.insert(pid);
                }
            }
        }
    }
    if let Some(s) = &state {
        veths.extend(s.pods.iter().map(|p| p.host_veth.clone()));
        veths.extend(s.external_hosts.iter().map(|h| h.host_veth.clone()));
    }
    // Anything still running inside the lab's namespaces (responders,
    // `lab exec` leftovers) belongs to the lab.
    for ns in &netns {
        pids.extend(net::netns_pids(ns));
    }
    terminate(&pids);
    for bridge in &bridges {
        if let Ok(out) = super::cmd::run("ip", &["-o", "link", "show", "master", bridge]) {
            // "12: vethabc@if2: <...>": ports of the bridge, made by the lab.
            veths.extend(out.lines().filter_map(|l| {
                let name = l.split(": ").nth(1)?;
                Some(name.split('@').next()?.to_owned())
            }));
        }
    }
    for veth in &veths {
        net::delete_link(veth)?;
    }
    for ns in &netns {
        net::delete_netns(ns)?;
    }
    for bridge in &bridges {
        net::delete_link(bridge)?;
    }
    for (family, name) in &tables {
        net::delete_table(family, name)?;
    }
    for dir in &dirs {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(LabError::Io {
                    action: "cannot remove",
                    path: dir.clone(),
                    source,
                });
            }
        }
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(LabError::Io {
                action: "cannot remove",
                path,
                source,
            });
        }
    }
    Ok(found)
}
