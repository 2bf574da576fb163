//! The lab's DNS, as a cluster's CoreDNS would serve it: the pod
//! kube-system/coredns (label `k8s-app: kube-dns`, containerPort 53) answers
//! A/AAAA queries for the names ExternalHosts declare (`spec.dnsNames`,
//! with `spec.dnsTTL`) and for Services (`NAME.NAMESPACE.svc.cluster.local`),
//! and NXDOMAIN for anything else. Pods resolve through the kube-dns
//! Service's ClusterIP (their `resolv.conf`, see [`resolv_conf`]).
//!
//! The zone is a JSON file in the lab's run directory, read again whenever
//! it changes: `weir lab dns set` re-points a name while the lab runs, as a
//! SaaS provider's addresses move.

use std::{
    collections::BTreeMap,
    io::{self, Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    str::FromStr,
    sync::Mutex,
    time::{Duration, Instant, SystemTime},
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, AAAA},
    },
};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use super::{
    error::{LabError, Result},
    state::{LabState, PodState, ServiceState},
};

/// The zone file's name in the lab's run directory.
pub const ZONE_FILE: &str = "dns-zone.json";

/// The cluster domain Services are named under.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// The TTL of Service names (CoreDNS's default).
pub const SERVICE_TTL: u32 = 5;

/// The label that marks the lab's DNS pod, as on a cluster's CoreDNS.
pub const DNS_LABEL: (&str, &str) = ("k8s-app", "kube-dns");

/// The DNS port.
pub const PORT: u16 = 53;

/// One name's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Seconds an answer may be cached.
    pub ttl: u32,
    /// The addresses (A and AAAA).
    pub ips: Vec<IpAddr>,
}

/// Every name the lab's DNS answers, by lowercase name without the
/// trailing dot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Zone {
    /// The names.
    pub names: BTreeMap<String, Entry>,
}

/// Where a lab's zone file is.
#[must_use]
pub fn zone_path(state: &LabState) -> PathBuf {
    state.run_dir.join(ZONE_FILE)
}

/// Whether `pod` is the lab's DNS server (kube-system, `k8s-app: kube-dns`,
/// port 53).
#[must_use]
pub fn is_dns_pod(pod: &PodState) -> bool {
    pod.namespace == "kube-system"
        && pod.labels.get(DNS_LABEL.0).map(String::as_str) == Some(DNS_LABEL.1)
        && pod.ports.iter().any(|p| p.port == PORT)
}

/// The kube-dns Service (kube-system, selecting the DNS label) with a
/// ClusterIP, if the lab declares one.
#[must_use]
pub fn dns_service(state: &LabState) -> Option<&ServiceState> {
    state.services.iter().find(|s| {
        s.namespace == "kube-system"
            && !s.cluster_ips.is_empty()
            && s.selector
                .as_ref()
                .and_then(|sel| sel.get(DNS_LABEL.0))
                .map(String::as_str)
                == Some(DNS_LABEL.1)
    })
}

/// The `resolv.conf` of a pod in `namespace`, as the kubelet writes it.
#[must_use]
pub fn resolv_conf(service: &ServiceState, namespace: &str) -> String {
    let mut out = String::new();
    for ip in &service.cluster_ips {
        out.push_str(&format!("nameserver {ip}\n"));
    }
    out.push_str(&format!(
        "search {namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}\noptions ndots:5\n"
    ));
    out
}

impl Zone {
    /// The zone a lab starts with: its external hosts' `dnsNames` (a name
    /// several hosts declare answers all their addresses, with the
    /// smallest TTL) and its Services.
    #[must_use]
    pub fn from_state(state: &LabState) -> Self {
        let mut names: BTreeMap<String, Entry> = BTreeMap::new();
        for host in &state.external_hosts {
            for name in &host.dns_names {
                let entry = names.entry(name.clone()).or_insert(Entry {
                    ttl: host.dns_ttl,
                    ips: Vec::new(),
                });
                entry.ttl = entry.ttl.min(host.dns_ttl);
                for ip in &host.ips {
                    if !entry.ips.contains(ip) {
                        entry.ips.push(*ip);
                    }
                }
            }
        }
        for svc in state.services.iter().filter(|s| !s.cluster_ips.is_empty()) {
            names.insert(
                format!("{}.{}.svc.{CLUSTER_DOMAIN}", svc.name, svc.namespace),
                Entry {
                    ttl: SERVICE_TTL,
                    ips: svc.cluster_ips.clone(),
                },
            );
        }
        Self { names }
    }

    /// Read a zone file.
    ///
    /// # Errors
    /// When it cannot be read or is not a zone.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read(path).map_err(|source| LabError::Io {
            action: "cannot read",
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|source| LabError::StateFormat {
            path: path.to_owned(),
            source,
        })
    }

    /// Write the zone file whole (a temporary file renamed over it), so the
    /// server never reads half of it.
    ///
    /// # Errors
    /// I/O errors naming the file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("json.tmp");
        let io = |source, path: &Path| LabError::Io {
            action: "cannot write",
            path: path.to_owned(),
            source,
        };
        let text = serde_json::to_vec_pretty(self).map_err(|e| io(e.into(), &tmp))?;
        std::fs::write(&tmp, text).map_err(|e| io(e, &tmp))?;
        std::fs::rename(&tmp, path).map_err(|e| io(e, path))
    }

    /// The answer to a DNS request, or `None` for what deserves no answer
    /// (not a DNS message, or a response).
    #[must_use]
    pub fn answer(&self, request: &[u8]) -> Option<Vec<u8>> {
        let request = Message::from_vec(request).ok()?;
        if request.metadata.message_type != MessageType::Query {
            return None;
        }
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.authoritative = true;
        let query = match (request.metadata.op_code, request.queries.as_slice()) {
            (OpCode::Query, [query]) => query.clone(),
            _ => {
                response.metadata.response_code = ResponseCode::NotImp;
                return response.to_vec().ok();
            }
        };
        response.add_query(query.clone());
        let key = query.name().to_ascii().to_ascii_lowercase();
        let key = key.strip_suffix('.').unwrap_or(&key);
        match self.names.get(key) {
            None => response.metadata.response_code = ResponseCode::NXDomain,
            Some(entry) => {
                for ip in &entry.ips {
                    let data = match (ip, query.query_type()) {
                        (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
                        (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
                        _ => continue,
                    };
                    response.add_answer(Record::from_rdata(query.name().clone(), entry.ttl, data));
                }
            }
        }
        response.to_vec().ok()
    }
}

/// The zone as a table for people.
#[must_use]
pub fn render(zone: &Zone) -> String {
    let mut out = String::from("NAME\tTTL\tADDRESSES\n");
    for (name, entry) in &zone.names {
        let ips: Vec<String> = entry.ips.iter().map(ToString::to_string).collect();
        out.push_str(&format!("{name}\t{}\t{}\n", entry.ttl, ips.join(",")));
    }
    out
}

/// Change a name's addresses in a running lab (`weir lab dns set`). The
/// addresses must be the lab's (an external host's or a Service's), so a
/// pod that follows the answer reaches something of the lab.
///
/// # Errors
/// An invalid name, an address the lab does not have, or I/O errors.
pub fn set(state: &LabState, name: &str, ips: &[IpAddr], ttl: Option<u32>) -> Result<Zone> {
    let name = super::spec::dns_name(name).map_err(|reason| LabError::Dns {
        reason: format!("name: {reason}"),
    })?;
    if ips.is_empty() {
        return Err(LabError::Dns {
            reason: format!("{name}: at least one address is required"),
        });
    }
    let known = state
        .external_hosts
        .iter()
        .flat_map(|h| &h.ips)
        .chain(state.services.iter().flat_map(|s| &s.cluster_ips));
    let known: Vec<&IpAddr> = known.collect();
    if let Some(ip) = ips.iter().find(|ip| !known.contains(ip)) {
        return Err(LabError::Dns {
            reason: format!(
                "{name}: {ip} is not an address of an external host or Service of lab {}",
                state.lab
            ),
        });
    }
    let path = zone_path(state);
    let mut zone = Zone::load(&path)?;
    let ttl = ttl
        .or_else(|| zone.names.get(&name).map(|e| e.ttl))
        .unwrap_or(super::spec::DEFAULT_DNS_TTL);
    zone.names.insert(
        name,
        Entry {
            ttl,
            ips: ips.to_vec(),
        },
    );
    zone.save(&path)?;
    Ok(zone)
}

/// The zone a server answers from, read again when the file changes.
struct Live {
    path: PathBuf,
    state: Mutex<(Option<SystemTime>, Zone)>,
}

impl Live {
    fn answer(&self, request: &[u8]) -> Option<Vec<u8>> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut guard = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if modified != guard.0 {
            match Zone::load(&self.path) {
                Ok(zone) => *guard = (modified, zone),
                Err(e) => warn!(error = %e, "keeping the previous zone"),
            }
        }
        guard.1.answer(request)
    }
}

/// What `weir lab probe` sends first: the DNS pod answers a probe as
/// every lab pod does, with an echo, so the probes of the lab's traffic
/// reach it as they reach the others.
const PROBE: &[u8] = b"weir-probe ";

/// The reply to one datagram: an echo of a probe, else the DNS answer.
fn reply_to(request: &[u8], zone: impl FnOnce(&[u8]) -> Option<Vec<u8>>) -> Option<Vec<u8>> {
    if request.starts_with(PROBE) {
        Some(request.to_vec())
    } else {
        zone(request)
    }
}

fn serve_udp(socket: &UdpSocket, zone: &Live) {
    let mut buf = [0u8; 4096];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, peer)) => {
                if let Some(reply) = reply_to(&buf[..n], |r| zone.answer(r))
                    && let Err(e) = socket.send_to(&reply, peer)
                {
                    debug!(%e, %peer, "dns reply failed");
                }
            }
            Err(e) => warn!(%e, "dns recv failed"),
        }
    }
}

fn serve_tcp_conn(mut stream: TcpStream, zone: &Live) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    loop {
        let mut len = [0u8; 2];
        match stream.read_exact(&mut len) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            other => other?,
        }
        if len == PROBE[..2] {
            // A probe's line, not a length: echoed as the lab's pods do.
            stream.write_all(&len)?;
            io::copy(&mut stream.try_clone()?, &mut stream)?;
            return Ok(());
        }
        let mut request = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut request)?;
        let Some(reply) = zone.answer(&request) else {
            return Ok(());
        };
        let len = u16::try_from(reply.len()).map_err(|_| io::ErrorKind::InvalidData)?;
        stream.write_all(&len.to_be_bytes())?;
        stream.write_all(&reply)?;
    }
}

/// Serve DNS on the bound sockets from the zone file at `path`. Returns
/// the threads.
#[must_use]
pub fn spawn_server(
    path: PathBuf,
    udp: std::net::UdpSocket,
    tcp: TcpListener,
) -> Vec<std::thread::JoinHandle<()>> {
    let zone = std::sync::Arc::new(Live {
        path,
        state: Mutex::new((None, Zone::default())),
    });
    let z = zone.clone();
    let udp_thread = std::thread::spawn(move || serve_udp(&udp, &z));
    let tcp_thread = std::thread::spawn(move || {
        for stream in tcp.incoming() {
            match stream {
                Ok(stream) => {
                    let z = zone.clone();
                    std::thread::spawn(move || {
                        if let Err(e) = serve_tcp_conn(stream, &z) {
                            debug!(%e, "dns tcp connection ended");
                        }
                    });
                }
                Err(e) => warn!(%e, "dns accept failed"),
            }
        }
    });
    vec![udp_thread, tcp_thread]
}

/// What a lookup got.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Lookup {
    /// `NOERROR`, `NXDOMAIN`, ...
    pub rcode: String,
    /// The A or AAAA addresses.
    pub ips: Vec<IpAddr>,
    /// The smallest TTL of the answers.
    pub ttl: Option<u32>,
}

/// The RFC name of a response code (`NOERROR`, `NXDOMAIN`, ...), as dig
/// prints it.
#[must_use]
pub fn rcode_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "NOERROR".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        other => format!("RCODE{}", u16::from(other)),
    }
}

/// Ask `server` (from the calling thread's netns) for `name`'s A (or AAAA
/// when `ipv6`) records over UDP, resending until `timeout`.
///
/// # Errors
/// No answer in time, or an answer that is not one.
pub fn lookup(server: SocketAddr, name: &str, ipv6: bool, timeout: Duration) -> Result<Lookup> {
    let err = |reason: String| LabError::Dns { reason };
    let qname = Name::from_str(&format!("{}.", name.trim_end_matches('.')))
        .map_err(|e| err(format!("{name:?} is not a DNS name: {e}")))?;
    let qtype = if ipv6 {
        RecordType::AAAA
    } else {
        RecordType::A
    };
    let mut request = Message::query();
    request.metadata.recursion_desired = true;
    request.add_query(Query::query(qname, qtype));
    let id = request.metadata.id;
    let bytes = request
        .to_vec()
        .map_err(|e| err(format!("cannot encode a query: {e}")))?;
    let io = |e: io::Error| err(format!("lookup of {name} at {server}: {e}"));
    let local: SocketAddr = if server.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).map_err(io)?;
    socket.connect(server).map_err(io)?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    let tries = 3u32;
    for _ in 0..tries {
        socket.send(&bytes).map_err(io)?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        socket
            .set_read_timeout(Some((timeout / tries).min(left)))
            .map_err(io)?;
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(io(e)),
        };
        let Ok(reply) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if reply.metadata.id != id {
            continue;
        }
        let mut ips = Vec::new();
        let mut ttl: Option<u32> = None;
        for record in &reply.answers {
            let ip = match &record.data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(a) => IpAddr::V6(a.0),
                _ => continue,
            };
            ips.push(ip);
            ttl = Some(ttl.map_or(record.ttl, |t| t.min(record.ttl)));
        }
        return Ok(Lookup {
            rcode: rcode_name(reply.metadata.response_code),
            ips,
            ttl,
        });
    }
    Err(err(format!(
        "no answer for {name} from {server} within {timeout:?}"
    )))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn zone() -> Zone {
        Zone {
            names: BTreeMap::from([(
                "api.payments.example".to_owned(),
                Entry {
                    ttl: 30,
                    ips: vec![
                        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)),
                        "2001:db8::10".parse().expect("literal"),
                    ],
                },
            )]),
        }
    }

    fn ask(zone: &Zone, name: &str, qtype: RecordType) -> Message {
        let mut q = Message::query();
        q.add_query(Query::query(Name::from_str(name).expect("name"), qtype));
        let reply = zone
            .answer(&q.to_vec().expect("encode"))
            .expect("an answer");
        let reply = Message::from_vec(&reply).expect("decode");
        assert_eq!(reply.metadata.id, q.metadata.id);
        reply
    }

    #[test]
    fn a_probe_is_echoed_and_a_query_answered() {
        let probe = b"weir-probe 10.96.0.10:53 Instant { .. }\n";
        assert_eq!(
            super::reply_to(probe, |_| None).as_deref(),
            Some(&probe[..])
        );
        let zone = zone();
        let mut query = Message::query();
        query.add_query(Query::query(
            Name::from_str("api.payments.example.").expect("name"),
            RecordType::A,
        ));
        let query = query.to_vec().expect("query");
        let answer = super::reply_to(&query, |r| zone.answer(r)).expect("an answer");
        assert!(!Message::from_vec(&answer).expect("dns").answers.is_empty());
    }

    #[test]
    fn answers_a_and_aaaa_with_the_ttl_and_nxdomain_otherwise() {
        let z = zone();
        let a = ask(&z, "API.payments.example.", RecordType::A);
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        assert_eq!(a.answers.len(), 1);
        assert_eq!(a.answers[0].ttl, 30);
        assert_eq!(
            a.answers[0].data,
            RData::A(A(Ipv4Addr::new(203, 0, 113, 10)))
        );
        let aaaa = ask(&z, "api.payments.example.", RecordType::AAAA);
        assert_eq!(aaaa.answers.len(), 1);
        assert!(matches!(aaaa.answers[0].data, RData::AAAA(_)));
        let none = ask(&z, "other.example.", RecordType::A);
        assert_eq!(none.metadata.response_code, ResponseCode::NXDomain);
        assert!(none.answers.is_empty());
        assert_eq!(z.answer(b"\x01\x02junk"), None);
    }
}
