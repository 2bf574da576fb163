//! The JSON form of a flow record, with Hubble's field names where Hubble
//! has the field (`observer.Flow` as `hubble observe -o json` prints it), so
//! tools that read Hubble flow logs read weir's. weir's own extras live
//! under `weir`.
//!
//! Records are flows, not packets, and are oriented initiator -> responder:
//! `IP.source` is the initiator and `is_reply` is false (absent when the
//! initiator is unknown). `traffic_direction` is the direction the datapath
//! checked at the reporting veth: `EGRESS` when its pod opened the flow,
//! `INGRESS` when its peer did.
//!
//! `verdict` is `FORWARDED`, `AUDIT` (the policies deny the flow, the
//! namespace is in audit mode: it passed) or `DROPPED` (with Hubble's
//! `drop_reason_desc: POLICY_DENIED`); `weir.policy` says why: the reason
//! (`default-deny`, `peer-not-allowed`, `port-not-allowed`), the checked
//! direction and the policies isolating the pod in that direction.

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use weir_generator::model::{PodMeta, Protocol};

use crate::{
    aggregator::FlowRecord,
    flow::{CheckedDirection, Initiator, Verdict},
};

/// One flow, as `/api/flows` and `weir observe -o json` give it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowJson {
    /// RFC 3339 with nanoseconds.
    pub time: String,
    /// `FORWARDED` (allowed, or observe mode), `AUDIT` (denied, passed) or
    /// `DROPPED`.
    pub verdict: String,
    /// `POLICY_DENIED` for a flow the policies deny (Hubble's drop reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_reason_desc: Option<String>,
    /// Addresses.
    #[serde(rename = "IP")]
    pub ip: IpJson,
    /// Transport details.
    pub l4: L4Json,
    /// The initiator.
    pub source: EndpointJson,
    /// The responder.
    pub destination: EndpointJson,
    /// `L3_L4`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// The node that saw the flow.
    pub node_name: String,
    /// `EGRESS`, `INGRESS` or `TRAFFIC_DIRECTION_UNKNOWN`.
    pub traffic_direction: String,
    /// False for a flow oriented by its initiator; absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_reply: Option<bool>,
    /// One line for humans, as Hubble's `Summary`.
    #[serde(rename = "Summary", default)]
    pub summary: String,
    /// weir's extras.
    #[serde(default)]
    pub weir: WeirJson,
}

/// Hubble's `IP`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpJson {
    /// The initiator's address.
    pub source: IpAddr,
    /// The responder's address.
    pub destination: IpAddr,
    /// `IPv4` or `IPv6`.
    #[serde(rename = "ipVersion")]
    pub ip_version: String,
}

/// Hubble's `l4`: one key naming the protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum L4Json {
    /// TCP.
    #[serde(rename = "TCP")]
    Tcp(TcpJson),
    /// UDP.
    #[serde(rename = "UDP")]
    Udp(PortsJson),
    /// SCTP.
    #[serde(rename = "SCTP")]
    Sctp(PortsJson),
    /// ICMP for IPv4.
    #[serde(rename = "ICMPv4")]
    Icmp(IcmpJson),
    /// ICMP for IPv6.
    #[serde(rename = "ICMPv6")]
    IcmpV6(IcmpJson),
}

/// Ports of a UDP or SCTP flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortsJson {
    /// The initiator's port.
    pub source_port: u16,
    /// The responder's port.
    pub destination_port: u16,
}

/// Ports and flags of a TCP flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpJson {
    /// The initiator's port.
    pub source_port: u16,
    /// The responder's port.
    pub destination_port: u16,
    /// Flags seen so far, both directions, as Hubble's `{"SYN": true}`.
    #[serde(default)]
    pub flags: BTreeMap<String, bool>,
}

/// ICMP type and code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IcmpJson {
    /// ICMP type.
    #[serde(rename = "type")]
    pub kind: u8,
    /// ICMP code.
    pub code: u8,
}

/// Hubble's `Endpoint`, as far as weir knows it: empty for an address
/// outside the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointJson {
    /// The pod's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The pod's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// `k8s:key=value`, sorted, as Cilium writes pod labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// The pod's workload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<WorkloadJson>,
}

/// Hubble's `Workload`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadJson {
    /// Name of the top owner.
    pub name: String,
    /// Its kind (`Deployment`, ...).
    pub kind: String,
}

/// weir's extras.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeirJson {
    /// Packets in this report, both directions.
    pub packets: u64,
    /// Bytes in this report, both directions.
    pub bytes: u64,
    /// `local`, `remote` or `unknown`, seen from the reporting endpoint.
    pub initiator: String,
    /// The reporting endpoint.
    pub endpoint: EndpointRefJson,
    /// The flow's first report.
    pub new_flow: bool,
    /// The flow's last report.
    pub closed: bool,
    /// The flow's first packet, RFC 3339 (offline learning replays the
    /// counters an edge had live).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<String>,
    /// The flow's last packet as of this report, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// Why the policies deny the flow (audit and dropped flows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyJson>,
}

/// Why a flow was denied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyJson {
    /// `default-deny`, `peer-not-allowed` or `port-not-allowed`.
    pub reason: String,
    /// `INGRESS` or `EGRESS`: the direction that was checked, seen from the
    /// reporting endpoint's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// The policies (`namespace/name`) that isolate the pod in that
    /// direction: none of their rules allows the flow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
}

/// The veth that reported a flow, and its pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRefJson {
    /// Interface index of the host-side veth.
    pub ifindex: u32,
    /// `namespace/pod`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

/// Hubble's TCP flag names, by bit (`tcphdr` order).
const TCP_FLAGS: [(u8, &str); 8] = [
    (0x01, "FIN"),
    (0x02, "SYN"),
    (0x04, "RST"),
    (0x08, "PSH"),
    (0x10, "ACK"),
    (0x20, "URG"),
    (0x40, "ECE"),
    (0x80, "CWR"),
];

impl From<&FlowRecord> for FlowJson {
    fn from(r: &FlowRecord) -> Self {
        let l4 = l4(r);
        let summary = summary(&l4, r.closed);
        Self {
            time: rfc3339(r.time),
            verdict: r.verdict.as_str().to_owned(),
            drop_reason_desc: (r.verdict == Verdict::Dropped).then(|| "POLICY_DENIED".to_owned()),
            ip: IpJson {
                source: r.source.ip(),
                destination: r.destination.ip(),
                ip_version: if r.source.is_ipv4() { "IPv4" } else { "IPv6" }.to_owned(),
            },
            l4,
            source: endpoint(r.source_pod.as_deref()),
            destination: endpoint(r.destination_pod.as_deref()),
            kind: "L3_L4".to_owned(),
            node_name: r.node_name.to_string(),
            traffic_direction: r
                .direction
                .or_else(|| CheckedDirection::of_initiator(r.initiator))
                .map_or("TRAFFIC_DIRECTION_UNKNOWN", CheckedDirection::as_str)
                .to_owned(),
            is_reply: (r.initiator != Initiator::Unknown).then_some(false),
            summary,
            weir: WeirJson {
                packets: r.packets,
                bytes: r.bytes,
                initiator: match r.initiator {
                    Initiator::Local => "local",
                    Initiator::Remote => "remote",
                    Initiator::Unknown => "unknown",
                }
                .to_owned(),
                endpoint: EndpointRefJson {
                    ifindex: r.ifindex,
                    pod: r
                        .endpoint_pod()
                        .map(|p| format!("{}/{}", p.namespace, p.name)),
                },
                new_flow: r.new_flow,
                closed: r.closed,
                first_seen: (r.first_seen != 0).then(|| rfc3339(r.first_seen)),
                last_seen: (r.last_seen != 0).then(|| rfc3339(r.last_seen)),
                policy: (r.verdict != Verdict::Forwarded).then(|| PolicyJson {
                    reason: r.reason.as_str().to_owned(),
                    direction: r.direction.map(|d| d.as_str().to_owned()),
                    policies: r.policies.clone(),
                }),
            },
        }
    }
}

fn l4(r: &FlowRecord) -> L4Json {
    let ports = PortsJson {
        source_port: r.source.port(),
        destination_port: r.destination.port(),
    };
    let (kind, code) = r.icmp.unwrap_or_default();
    match r.protocol {
        Protocol::Tcp => L4Json::Tcp(TcpJson {
            source_port: ports.source_port,
            destination_port: ports.destination_port,
            flags: TCP_FLAGS
                .iter()
                .filter(|(bit, _)| r.tcp_flags & bit != 0)
                .map(|(_, name)| ((*name).to_owned(), true))
                .collect(),
        }),
        Protocol::Udp => L4Json::Udp(ports),
        Protocol::Sctp => L4Json::Sctp(ports),
        Protocol::Icmp => L4Json::Icmp(IcmpJson { kind, code }),
        Protocol::IcmpV6 => L4Json::IcmpV6(IcmpJson { kind, code }),
    }
}

fn endpoint(pod: Option<&PodMeta>) -> EndpointJson {
    let Some(pod) = pod else {
        return EndpointJson::default();
    };
    let mut labels: Vec<String> = pod
        .labels
        .iter()
        .map(|(k, v)| format!("k8s:{k}={v}"))
        .collect();
    // Cilium adds the namespace as a label; tools filter on it.
    labels.push(format!("k8s:io.kubernetes.pod.namespace={}", pod.namespace));
    labels.sort();
    EndpointJson {
        namespace: Some(pod.namespace.clone()),
        pod_name: Some(pod.name.clone()),
        labels,
        workloads: vec![WorkloadJson {
            name: pod.workload.name.clone(),
            kind: pod.workload.kind.as_str().to_owned(),
        }],
    }
}

fn summary(l4: &L4Json, closed: bool) -> String {
    let mut s = match l4 {
        L4Json::Tcp(tcp) => {
            let flags: Vec<&str> = TCP_FLAGS
                .iter()
                .map(|(_, name)| *name)
                .filter(|name| tcp.flags.contains_key(*name))
                .collect();
            format!("TCP Flags: {}", flags.join(", "))
        }
        L4Json::Udp(_) => "UDP".to_owned(),
        L4Json::Sctp(_) => "SCTP".to_owned(),
        L4Json::Icmp(i) => format!("ICMPv4 {}", icmp_name(false, i)),
        L4Json::IcmpV6(i) => format!("ICMPv6 {}", icmp_name(true, i)),
    };
    if closed {
        s.push_str(" (flow closed)");
    }
    s
}

fn icmp_name(v6: bool, i: &IcmpJson) -> String {
    let name = match (v6, i.kind) {
        (false, 0) | (true, 129) => "EchoReply",
        (false, 8) | (true, 128) => "EchoRequest",
        (false, 3) | (true, 1) => "DestinationUnreachable",
        (false, 11) | (true, 3) => "TimeExceeded",
        _ => return format!("type {} code {}", i.kind, i.code),
    };
    name.to_owned()
}

/// Unix nanoseconds as RFC 3339 in UTC with nine fractional digits
/// (fixed width, so the strings sort as the times do).
#[must_use]
pub fn rfc3339(unix_ns: u64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ns))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::aggregator::testing::{obs, shop};

    fn record(o: &crate::flow::Observation) -> FlowRecord {
        let r = shop();
        let ep = crate::resolve::Resolve::pod_by_ifindex(&r, o.ifindex);
        let peer = crate::resolve::Resolve::pod_by_ip(&r, o.remote.ip());
        FlowRecord::new(o, &Arc::from("node-1"), ep.as_ref(), peer.as_ref())
    }

    #[test]
    fn times_are_rfc3339_with_nanoseconds() {
        assert_eq!(
            rfc3339(1_700_000_000_000_000_001),
            "2023-11-14T22:13:20.000000001Z"
        );
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn tcp_flow_has_hubbles_shape() {
        let o = obs(1, "10.0.0.1:43210", "198.51.100.7:443", Initiator::Local);
        let json = serde_json::to_value(FlowJson::from(&record(&o))).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "time": "2023-11-14T22:13:20.000000000Z",
                "verdict": "FORWARDED",
                "IP": {"source": "10.0.0.1", "destination": "198.51.100.7", "ipVersion": "IPv4"},
                "l4": {"TCP": {"source_port": 43210, "destination_port": 443,
                    "flags": {"SYN": true, "ACK": true}}},
                "source": {"namespace": "shop", "pod_name": "frontend-a",
                    "labels": ["k8s:app=frontend", "k8s:io.kubernetes.pod.namespace=shop"],
                    "workloads": [{"name": "frontend", "kind": "Deployment"}]},
                "destination": {},
                "Type": "L3_L4",
                "node_name": "node-1",
                "traffic_direction": "EGRESS",
                "is_reply": false,
                "Summary": "TCP Flags: SYN, ACK",
                "weir": {"packets": 2, "bytes": 120, "initiator": "local",
                    "endpoint": {"ifindex": 1, "pod": "shop/frontend-a"},
                    "new_flow": true, "closed": false,
                    "first_seen": "2023-11-14T22:13:20.000000000Z",
                    "last_seen": "2023-11-14T22:13:20.500000000Z"}
            })
        );
    }

    #[test]
    fn ingress_icmp_and_unknown_initiators() {
        let mut o = obs(2, "10.0.0.2:7", "10.0.1.9:7", Initiator::Remote);
        o.protocol = Protocol::Icmp;
        o.icmp = Some((8, 0));
        o.closed = true;
        let json = FlowJson::from(&record(&o));
        assert_eq!(json.traffic_direction, "INGRESS");
        assert_eq!(json.source.pod_name.as_deref(), Some("db-0"));
        assert_eq!(json.l4, L4Json::Icmp(IcmpJson { kind: 8, code: 0 }));
        assert_eq!(json.summary, "ICMPv4 EchoRequest (flow closed)");

        let mut o = obs(1, "[fd00::1]:5353", "[fd00::9]:5353", Initiator::Unknown);
        o.protocol = Protocol::Udp;
        let json = FlowJson::from(&record(&o));
        assert_eq!(json.is_reply, None);
        assert_eq!(json.ip.ip_version, "IPv6");
        assert_eq!(json.traffic_direction, "TRAFFIC_DIRECTION_UNKNOWN");
        let text = serde_json::to_string(&json).unwrap();
        assert!(!text.contains("is_reply"), "{text}");
        assert_eq!(serde_json::from_str::<FlowJson>(&text).unwrap(), json);
    }
}
