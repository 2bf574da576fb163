//! Recorded flows into a flow graph, offline: JSON lines as `weir observe
//! -o json` prints them, or as `hubble observe -o json` does (objects
//! wrapped as `{"flow": {...}}`, or bare flow objects).
//!
//! The rules follow the aggregator's, with what a flow log carries:
//!
//! - replies never make edges (`is_reply: true`; Hubble omits `false`);
//!   a weir record whose initiator is unknown makes none either;
//! - an endpoint is a pod when the inventory knows its namespace and pod
//!   name, or its address; else, when the record names a pod, the pod as
//!   the record describes it (workload from `workloads`, labels from
//!   `k8s:` labels); else it is the address, outside the cluster;
//! - connections are counted once per flow: weir records count on their
//!   first report at the initiator's side (`weir.new_flow`, and not the
//!   responder's copy of a connection between two pods); Hubble events,
//!   one per packet seen, count on a TCP SYN without ACK, or on every
//!   non-TCP event at the initiator's side (`EGRESS`, or `INGRESS` from
//!   outside the cluster);
//! - dropped flows (`verdict: DROPPED`) and non-L3/L4 events are skipped:
//!   they are not traffic the cluster carried.
//!
//! A line that does not parse is counted with its number and the reason,
//! and skipped: one bad line never loses a whole file.

use std::{collections::BTreeMap, net::IpAddr, str::FromStr};

use serde::Deserialize;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use weir_generator::{
    cluster::Cluster,
    identity::workload_of,
    model::{EdgeKey, EdgeStats, FlowGraph, NodeId, PodMeta, Protocol, WorkloadKind, WorkloadRef},
};

/// A line that was skipped because it does not parse.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BadLine {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong, naming the field.
    pub reason: String,
}

/// The graph built from a flow log, and what was left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// The graph.
    pub graph: FlowGraph,
    /// Flow records read.
    pub flows: usize,
    /// Flow records that made no edge: replies, unknown initiators, drops,
    /// non-L3/L4 events.
    pub skipped: usize,
    /// JSON objects that are not flows (lost-event notes, node status),
    /// with what they are.
    pub not_flows: Vec<BadLine>,
    /// Lines that do not parse.
    pub bad: Vec<BadLine>,
}

impl Parsed {
    /// Flow records that made an edge: what a verify or an export can
    /// stand on. Zero means the input told nothing.
    #[must_use]
    pub fn usable(&self) -> usize {
        self.flows - self.skipped
    }
}

#[derive(Deserialize)]
struct RawFlow {
    #[serde(default)]
    time: Option<String>,
    #[serde(default)]
    verdict: Option<String>,
    #[serde(rename = "IP")]
    ip: RawIp,
    #[serde(default)]
    l4: Option<BTreeMap<String, RawL4>>,
    #[serde(default)]
    source: Option<RawEndpoint>,
    #[serde(default)]
    destination: Option<RawEndpoint>,
    #[serde(rename = "Type", default)]
    kind: Option<String>,
    #[serde(default)]
    traffic_direction: Option<String>,
    #[serde(default)]
    is_reply: Option<bool>,
    #[serde(default)]
    weir: Option<RawWeir>,
}

#[derive(Deserialize)]
struct RawIp {
    source: IpAddr,
    destination: IpAddr,
}

#[derive(Deserialize)]
struct RawL4 {
    #[serde(default)]
    destination_port: Option<u16>,
    #[serde(default)]
    flags: Option<BTreeMap<String, bool>>,
}

#[derive(Deserialize, Default)]
struct RawEndpoint {
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    pod_name: Option<String>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    workloads: Vec<RawWorkload>,
}

#[derive(Deserialize)]
struct RawWorkload {
    name: String,
    #[serde(default)]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct RawWeir {
    #[serde(default)]
    packets: u64,
    #[serde(default)]
    bytes: u64,
    #[serde(default)]
    initiator: Option<String>,
    #[serde(default)]
    new_flow: bool,
    #[serde(default)]
    first_seen: Option<String>,
    #[serde(default)]
    last_seen: Option<String>,
}

/// Build a graph from the text of a flow log. Pods are looked up in
/// `cluster` (an inventory) first.
#[must_use]
pub fn parse(text: &str, cluster: &Cluster) -> Parsed {
    let index = PodIndex::new(cluster);
    let mut parsed = Parsed::default();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        match parse_line(trimmed) {
            Ok(None) => parsed.not_flows.push(BadLine {
                line: line_no,
                reason: not_a_flow(trimmed),
            }),
            Ok(Some(flow)) => {
                parsed.flows += 1;
                if !fold(&mut parsed.graph, &flow, &index) {
                    parsed.skipped += 1;
                }
            }
            Err(reason) => parsed.bad.push(BadLine {
                line: line_no,
                reason,
            }),
        }
    }
    parsed
}

/// What a JSON object that is not a flow is: its keys.
fn not_a_flow(line: &str) -> String {
    let keys = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(line)
        .map(|o| o.keys().take(3).cloned().collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    format!("not a flow record (an object with {keys})")
}

/// One line: a flow, `None` for another object, or why it does not parse.
fn parse_line(line: &str) -> Result<Option<RawFlow>, String> {
    let value: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let serde_json::Value::Object(object) = &value else {
        return Err("not a JSON object".to_owned());
    };
    let flow = match object.get("flow") {
        Some(flow @ serde_json::Value::Object(_)) => flow,
        Some(_) => return Err("`flow` is not an object".to_owned()),
        // `{"lost_events": ...}`, `{"node_status": ...}`: not flows.
        None if !object.contains_key("IP") && !object.contains_key("l4") => return Ok(None),
        None => &value,
    };
    serde_path_to_error::deserialize(flow)
        .map(Some)
        .map_err(|e| format!("{}: {}", e.path(), e.inner()))
}

/// Fold one flow; false when it makes no edge.
fn fold(graph: &mut FlowGraph, flow: &RawFlow, index: &PodIndex<'_>) -> bool {
    let source = index.endpoint(flow.source.as_ref(), flow.ip.source);
    let destination = index.endpoint(flow.destination.as_ref(), flow.ip.destination);
    for pod in [&source, &destination].into_iter().flatten() {
        graph.add_pod(pod);
    }
    if flow.kind.as_deref().is_some_and(|k| k != "L3_L4")
        || flow.verdict.as_deref() == Some("DROPPED")
        || flow.is_reply == Some(true)
    {
        return false;
    }
    let initiator = flow.weir.as_ref().and_then(|w| w.initiator.as_deref());
    if initiator == Some("unknown") {
        return false;
    }
    let Some((protocol, l4)) = flow.l4.as_ref().and_then(|l4| {
        l4.iter()
            .find_map(|(name, l4)| Protocol::from_str(name).ok().map(|p| (p, l4)))
    }) else {
        return false;
    };
    let port = if protocol.has_ports() {
        match l4.destination_port {
            Some(port) => port,
            None => return false,
        }
    } else {
        0
    };
    let node = |pod: &Option<PodMeta>, ip: IpAddr| match pod {
        Some(pod) => NodeId::Workload(pod.workload.clone()),
        None => NodeId::External(ip),
    };
    let time = flow.time.as_deref().map_or(0, unix_ns);
    // weir records carry the flow's own first and last packet times.
    let weir_time = |t: Option<&Option<String>>| t.and_then(|t| t.as_deref()).map(unix_ns);
    let first_seen = weir_time(flow.weir.as_ref().map(|w| &w.first_seen)).unwrap_or(time);
    let last_seen = weir_time(flow.weir.as_ref().map(|w| &w.last_seen)).unwrap_or(time);
    let source_is_pod = source.is_some();
    let counts = match &flow.weir {
        // The responder's copy of a pod-to-pod connection: the initiator's
        // veth reports it too.
        Some(w) => w.new_flow && !(initiator == Some("remote") && source_is_pod),
        None => {
            let initiator_side = match flow.traffic_direction.as_deref() {
                Some("EGRESS") => true,
                Some("INGRESS") => !source_is_pod,
                _ => true,
            };
            initiator_side
                && match protocol {
                    Protocol::Tcp => l4.flags.as_ref().is_some_and(|f| {
                        f.get("SYN").copied().unwrap_or(false)
                            && !f.get("ACK").copied().unwrap_or(false)
                    }),
                    _ => true,
                }
        }
    };
    let duplicate = flow
        .weir
        .as_ref()
        .is_some_and(|_| initiator == Some("remote") && source_is_pod);
    // The responder's copy only vouches for the edge; the initiator's
    // reports carry its counters, as in the aggregator.
    let stats = match &flow.weir {
        Some(_) if duplicate => EdgeStats::default(),
        weir => EdgeStats {
            packets: weir.as_ref().map_or(0, |w| w.packets),
            bytes: weir.as_ref().map_or(0, |w| w.bytes),
            connections: u64::from(counts),
            first_seen,
            last_seen,
            ..EdgeStats::default()
        },
    };
    graph.record(
        EdgeKey {
            source: node(&source, flow.ip.source),
            target: node(&destination, flow.ip.destination),
            protocol,
            port,
        },
        &stats,
    );
    true
}

/// RFC 3339 to Unix ns; 0 when it does not parse.
fn unix_ns(time: &str) -> u64 {
    OffsetDateTime::parse(time, &Rfc3339)
        .ok()
        .and_then(|t| u64::try_from(t.unix_timestamp_nanos()).ok())
        .unwrap_or(0)
}

/// Inventory pods by name and by address.
struct PodIndex<'a> {
    by_name: BTreeMap<(&'a str, &'a str), &'a PodMeta>,
    by_ip: BTreeMap<IpAddr, &'a PodMeta>,
}

impl<'a> PodIndex<'a> {
    fn new(cluster: &'a Cluster) -> Self {
        let mut by_name = BTreeMap::new();
        let mut by_ip = BTreeMap::new();
        for pod in &cluster.pods {
            by_name.insert(
                (pod.meta.namespace.as_str(), pod.meta.name.as_str()),
                &pod.meta,
            );
            for ip in &pod.meta.ips {
                by_ip.insert(*ip, &pod.meta);
            }
        }
        Self { by_name, by_ip }
    }

    /// The pod of an endpoint, `None` for an address outside the cluster.
    fn endpoint(&self, endpoint: Option<&RawEndpoint>, ip: IpAddr) -> Option<PodMeta> {
        let named = endpoint.and_then(|e| Some((e.namespace.as_deref()?, e.pod_name.as_deref()?)));
        if let Some(pod) = named.and_then(|key| self.by_name.get(&key)) {
            return Some((*pod).clone());
        }
        if let Some(pod) = self.by_ip.get(&ip) {
            return Some((*pod).clone());
        }
        let (namespace, name) = named?;
        let endpoint = endpoint?;
        let labels: BTreeMap<String, String> = endpoint
            .labels
            .iter()
            .filter_map(|l| l.strip_prefix("k8s:"))
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| {
                !k.starts_with("io.kubernetes.pod.") && !k.starts_with("io.cilium.k8s.")
            })
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let workload = match endpoint.workloads.first() {
            Some(w) => WorkloadRef::new(
                namespace,
                w.kind.as_deref().map_or(WorkloadKind::Pod, workload_kind),
                w.name.as_str(),
            ),
            None => workload_of(namespace, name, &labels, None),
        };
        Some(PodMeta {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            labels,
            workload,
            ips: vec![ip],
        })
    }
}

fn workload_kind(kind: &str) -> WorkloadKind {
    match kind {
        "Deployment" => WorkloadKind::Deployment,
        "ReplicaSet" => WorkloadKind::ReplicaSet,
        "StatefulSet" => WorkloadKind::StatefulSet,
        "DaemonSet" => WorkloadKind::DaemonSet,
        "Job" => WorkloadKind::Job,
        "CronJob" => WorkloadKind::CronJob,
        _ => WorkloadKind::Pod,
    }
}

#[cfg(test)]
mod tests {
    use weir_generator::cluster::ClusterPod;

    use super::*;

    fn w(ns: &str, kind: WorkloadKind, name: &str) -> NodeId {
        NodeId::Workload(WorkloadRef::new(ns, kind, name))
    }

    fn edge(source: NodeId, target: NodeId, protocol: Protocol, port: u16) -> EdgeKey {
        EdgeKey {
            source,
            target,
            protocol,
            port,
        }
    }

    fn inventory() -> Cluster {
        let pod = |ns: &str, name: &str, app: &str, kind, workload: &str, ip: &str| ClusterPod {
            meta: PodMeta {
                namespace: ns.into(),
                name: name.into(),
                labels: BTreeMap::from([("app".into(), app.into())]),
                workload: WorkloadRef::new(ns, kind, workload),
                ips: vec![ip.parse().unwrap()],
            },
            ports: vec![],
        };
        Cluster {
            pods: vec![
                pod(
                    "shop",
                    "web-7d-a",
                    "web",
                    WorkloadKind::Deployment,
                    "web",
                    "10.0.0.1",
                ),
                pod(
                    "data",
                    "db-0",
                    "db",
                    WorkloadKind::StatefulSet,
                    "db",
                    "10.0.1.9",
                ),
            ],
            ..Cluster::default()
        }
    }

    /// `weir observe -o json`: the initiator's and the responder's report
    /// of one connection, a closing report, a reply-less external flow.
    const WEIR: &str = r#"{"time":"2023-11-14T22:13:20.000000000Z","verdict":"FORWARDED","IP":{"source":"10.0.0.1","destination":"10.0.1.9","ipVersion":"IPv4"},"l4":{"TCP":{"source_port":43210,"destination_port":5432,"flags":{"SYN":true}}},"source":{"namespace":"shop","pod_name":"web-7d-a","labels":["k8s:app=web"],"workloads":[{"name":"web","kind":"Deployment"}]},"destination":{"namespace":"data","pod_name":"db-0"},"Type":"L3_L4","node_name":"n","traffic_direction":"EGRESS","is_reply":false,"Summary":"TCP Flags: SYN","weir":{"packets":2,"bytes":120,"initiator":"local","endpoint":{"ifindex":1},"new_flow":true,"closed":false}}
{"time":"2023-11-14T22:13:20.000000000Z","verdict":"FORWARDED","IP":{"source":"10.0.0.1","destination":"10.0.1.9","ipVersion":"IPv4"},"l4":{"TCP":{"source_port":43210,"destination_port":5432,"flags":{"SYN":true}}},"source":{"namespace":"shop","pod_name":"web-7d-a"},"destination":{"namespace":"data","pod_name":"db-0"},"Type":"L3_L4","node_name":"n","traffic_direction":"INGRESS","is_reply":false,"Summary":"","weir":{"packets":2,"bytes":120,"initiator":"remote","endpoint":{"ifindex":2},"new_flow":true,"closed":false}}
{"time":"2023-11-14T22:13:30.000000000Z","verdict":"FORWARDED","IP":{"source":"10.0.0.1","destination":"10.0.1.9","ipVersion":"IPv4"},"l4":{"TCP":{"source_port":43210,"destination_port":5432,"flags":{"FIN":true}}},"source":{"namespace":"shop","pod_name":"web-7d-a"},"destination":{"namespace":"data","pod_name":"db-0"},"Type":"L3_L4","node_name":"n","traffic_direction":"EGRESS","is_reply":false,"Summary":"","weir":{"packets":8,"bytes":800,"initiator":"local","endpoint":{"ifindex":1},"new_flow":false,"closed":true}}
{"lost_events":{"num_events_lost":3}}
{"time":"2023-11-14T22:13:21Z","verdict":"FORWARDED","IP":{"source":"10.0.0.1","destination":"203.0.113.10","ipVersion":"IPv4"},"l4":{"UDP":{"source_port":5000,"destination_port":53}},"source":{"namespace":"shop","pod_name":"web-7d-a"},"destination":{},"Type":"L3_L4","node_name":"n","traffic_direction":"EGRESS","weir":{"packets":1,"bytes":60,"initiator":"local","endpoint":{"ifindex":1},"new_flow":true,"closed":false}}
{"time":"2023-11-14T22:13:22Z","verdict":"FORWARDED","IP":{"source":"10.0.0.1","destination":"10.0.1.9","ipVersion":"IPv4"},"l4":{"TCP":{"source_port":1,"destination_port":6379}},"source":{},"destination":{},"Type":"L3_L4","node_name":"n","traffic_direction":"TRAFFIC_DIRECTION_UNKNOWN","weir":{"packets":1,"bytes":60,"initiator":"unknown","endpoint":{"ifindex":1},"new_flow":true,"closed":false}}
"#;

    #[test]
    fn weir_observe_json_counts_each_connection_once() {
        let parsed = parse(WEIR, &inventory());
        assert!(parsed.bad.is_empty(), "{:?}", parsed.bad);
        assert_eq!(parsed.flows, 5);
        assert_eq!(parsed.skipped, 1, "the unknown initiator");
        assert_eq!(
            parsed.not_flows,
            [BadLine {
                line: 4,
                reason: "not a flow record (an object with lost_events)".to_owned()
            }]
        );
        assert_eq!(parsed.usable(), 4);
        let web = w("shop", WorkloadKind::Deployment, "web");
        let db = w("data", WorkloadKind::StatefulSet, "db");
        let tcp = &parsed.graph.edges[&edge(web.clone(), db, Protocol::Tcp, 5432)];
        assert_eq!(
            (tcp.connections, tcp.packets, tcp.bytes),
            (1, 10, 920),
            "the responder's copy is not counted"
        );
        assert_eq!(tcp.first_seen, 1_700_000_000_000_000_000);
        assert_eq!(tcp.last_seen, 1_700_000_010_000_000_000);
        let ext = edge(
            web,
            NodeId::External("203.0.113.10".parse().unwrap()),
            Protocol::Udp,
            53,
        );
        assert_eq!(parsed.graph.edges[&ext].connections, 1);
        assert_eq!(parsed.graph.edges.len(), 2);
        let info =
            &parsed.graph.workloads[&WorkloadRef::new("shop", WorkloadKind::Deployment, "web")];
        assert_eq!(info.labels["app"], "web", "labels come from the inventory");
    }

    /// `hubble observe -o json`: wrapped and bare flows, SYN then ACK
    /// packets, a reply, a drop, an L7 event, pods the inventory does not
    /// know (workload and labels from the record).
    const HUBBLE: &str = r#"{"flow":{"time":"2024-01-02T03:04:05.123456789Z","verdict":"FORWARDED","IP":{"source":"10.0.2.7","destination":"10.0.1.9","ipVersion":"IPv4"},"l4":{"TCP":{"source_port":40000,"destination_port":5432,"flags":{"SYN":true}}},"source":{"ID":12,"identity":345,"namespace":"shop","labels":["k8s:app=cart","k8s:io.kubernetes.pod.namespace=shop","k8s:io.cilium.k8s.policy.serviceaccount=default"],"pod_name":"cart-5f-x","workloads":[{"name":"cart","kind":"Deployment"}]},"destination":{"namespace":"data","pod_name":"db-0"},"Type":"L3_L4","node_name":"k8s-1","traffic_direction":"EGRESS","trace_observation_point":"TO_STACK","Summary":"TCP Flags: SYN"},"node_name":"k8s-1","time":"2024-01-02T03:04:05.123456789Z"}
{"flow":{"time":"2024-01-02T03:04:05.2Z","verdict":"FORWARDED","IP":{"source":"10.0.2.7","destination":"10.0.1.9","ipVersion":"IPv4"},"l4":{"TCP":{"source_port":40000,"destination_port":5432,"flags":{"ACK":true}}},"source":{"namespace":"shop","pod_name":"cart-5f-x","workloads":[{"name":"cart","kind":"Deployment"}]},"destination":{"namespace":"data","pod_name":"db-0"},"Type":"L3_L4","traffic_direction":"EGRESS"}}
{"flow":{"time":"2024-01-02T03:04:05.3Z","verdict":"FORWARDED","IP":{"source":"10.0.1.9","destination":"10.0.2.7","ipVersion":"IPv4"},"l4":{"TCP":{"source_port":5432,"destination_port":40000,"flags":{"SYN":true,"ACK":true}}},"source":{"namespace":"data","pod_name":"db-0"},"destination":{"namespace":"shop","pod_name":"cart-5f-x"},"Type":"L3_L4","traffic_direction":"INGRESS","is_reply":true}}
{"time":"2024-01-02T03:04:06Z","verdict":"DROPPED","IP":{"source":"10.0.2.7","destination":"10.0.1.9","ipVersion":"IPv4"},"l4":{"TCP":{"source_port":40001,"destination_port":22,"flags":{"SYN":true}}},"source":{"namespace":"shop","pod_name":"cart-5f-x"},"destination":{"namespace":"data","pod_name":"db-0"},"Type":"L3_L4","traffic_direction":"EGRESS"}
{"time":"2024-01-02T03:04:07Z","verdict":"FORWARDED","IP":{"source":"198.51.100.7","destination":"10.0.1.9","ipVersion":"IPv4"},"l4":{"UDP":{"source_port":3333,"destination_port":53}},"source":{"identity":2,"labels":["reserved:world"]},"destination":{"namespace":"data","pod_name":"db-0"},"Type":"L3_L4","traffic_direction":"INGRESS"}
{"time":"2024-01-02T03:04:08Z","verdict":"FORWARDED","IP":{"source":"10.0.2.7","destination":"10.0.1.9","ipVersion":"IPv4"},"l4":{"TCP":{"source_port":40002,"destination_port":80}},"source":{"namespace":"shop","pod_name":"cart-5f-x"},"destination":{"namespace":"data","pod_name":"db-0"},"Type":"L7","l7":{"http":{}}}
"#;

    #[test]
    fn hubble_json_wrapped_or_bare() {
        let parsed = parse(HUBBLE, &inventory());
        assert!(parsed.bad.is_empty(), "{:?}", parsed.bad);
        assert_eq!(parsed.flows, 6);
        assert_eq!(parsed.skipped, 3, "the reply, the drop, the L7 event");
        let cart = w("shop", WorkloadKind::Deployment, "cart");
        let db = w("data", WorkloadKind::StatefulSet, "db");
        let tcp = &parsed.graph.edges[&edge(cart, db.clone(), Protocol::Tcp, 5432)];
        assert_eq!(tcp.connections, 1, "the SYN counts, the ACK does not");
        assert_eq!(tcp.first_seen % 1_000_000_000, 123_456_789);
        let world = edge(
            NodeId::External("198.51.100.7".parse().unwrap()),
            db,
            Protocol::Udp,
            53,
        );
        assert_eq!(parsed.graph.edges[&world].connections, 1);
        assert_eq!(parsed.graph.edges.len(), 2);
        let cart_info =
            &parsed.graph.workloads[&WorkloadRef::new("shop", WorkloadKind::Deployment, "cart")];
        assert_eq!(
            cart_info.labels,
            BTreeMap::from([("app".to_owned(), "cart".to_owned())]),
            "Cilium's own labels are not pod labels"
        );
    }

    #[test]
    fn malformed_lines_are_reported_with_their_numbers_and_skipped() {
        let good = WEIR.lines().next().unwrap();
        let text = format!(
            "{good}\n{{not json\n\n[1,2]\n{{\"flow\": 3}}\n{{\"IP\": {{\"source\": \"10.0.0.1\", \"destination\": \"nope\"}}, \"l4\": {{}}}}\n{good}\n"
        );
        let parsed = parse(&text, &inventory());
        let lines: Vec<usize> = parsed.bad.iter().map(|b| b.line).collect();
        assert_eq!(lines, [2, 4, 5, 6]);
        assert!(
            parsed.bad[3].reason.contains("IP.destination"),
            "{:?}",
            parsed.bad[3]
        );
        assert_eq!(parsed.flows, 2, "the good lines around them are read");
        assert_eq!(parsed.graph.edges.len(), 1);
    }
}
