//! A flow record as the API serves it ([`FlowJson`]), with Hubble's field names where Hubble
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

use weir_generator::model::{PodMeta, Protocol};

use super::wire::{
    DnsJson, EndpointJson, EndpointRefJson, FlowJson, IcmpJson, IpJson, L4Json, L7Json, PolicyJson,
    PortsJson, TcpJson, WeirJson, WorkloadJson,
};
use crate::{
    aggregator::{DnsAnswer, FlowRecord},
    flow::{CheckedDirection, Initiator, Verdict},
    timestamp::rfc3339,
};

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
        let summary = match &r.dns {
            Some(dns) => dns_summary(dns),
            None => summary(&l4, r.closed),
        };
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
            source_names: r.source_names.iter().map(ToString::to_string).collect(),
            destination_names: r
                .destination_names
                .iter()
                .map(ToString::to_string)
                .collect(),
            kind: if r.dns.is_some() { "L7" } else { "L3_L4" }.to_owned(),
            l7: r.dns.as_ref().map(|dns| L7Json {
                kind: "RESPONSE".to_owned(),
                dns: DnsJson {
                    query: format!("{}.", dns.query),
                    rcode: dns.rcode,
                },
            }),
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
                peer_node: r.peer_node.as_deref().map(str::to_owned),
                seq: (r.seq != 0).then_some(r.seq),
            },
        }
    }
}

/// `NXDOMAIN nope.example`: what `weir observe` prints of the answer.
fn dns_summary(dns: &DnsAnswer) -> String {
    match dns.rcode {
        3 => format!("NXDOMAIN {}", dns.query),
        0 => format!("NOERROR {}", dns.query),
        code => format!("DNS rcode {code} {}", dns.query),
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
    fn an_nxdomain_answer_is_an_l7_record_of_the_query_flow() {
        let r = shop();
        let pod = crate::resolve::Resolve::pod_by_ifindex(&r, 1);
        let record = FlowRecord::dns_answer(
            &Arc::from("node-1"),
            Protocol::Udp,
            1,
            ("10.0.0.1:40000".parse().unwrap(), pod),
            ("10.96.0.10:53".parse().unwrap(), None),
            1_700_000_000_000_000_000,
            DnsAnswer {
                query: Arc::from("nope.example"),
                rcode: 3,
            },
        );
        let json = serde_json::to_value(FlowJson::from(&record)).unwrap();
        assert_eq!(json["Type"], "L7");
        assert_eq!(
            json["l7"],
            serde_json::json!({"type": "RESPONSE", "dns": {"query": "nope.example.", "rcode": 3}})
        );
        assert_eq!(json["Summary"], "NXDOMAIN nope.example");
        assert_eq!(json["source"]["pod_name"], "frontend-a");
        assert_eq!(json["IP"]["destination"], "10.96.0.10");
        assert_eq!(json["l4"]["UDP"]["destination_port"], 53);
        assert_eq!(json["weir"]["new_flow"], false);
        // A flow record has no `l7`.
        let o = obs(1, "10.0.0.1:43210", "198.51.100.7:443", Initiator::Local);
        let flow = serde_json::to_value(FlowJson::from(&self::record(&o))).unwrap();
        assert!(flow.get("l7").is_none(), "{flow}");
    }

    #[test]
    fn the_peers_node_and_the_records_number_are_weir_extras() {
        let o = obs(2, "10.0.0.2:7070", "10.0.1.9:41000", Initiator::Remote);
        let mut r = record(&o);
        r.peer_node = Some(Arc::from("node-2"));
        r.seq = 1_700_000_000_000_001;
        let json = serde_json::to_value(FlowJson::from(&r)).unwrap();
        assert_eq!(json["weir"]["initiator"], "remote");
        assert_eq!(json["weir"]["peer_node"], "node-2");
        assert_eq!(json["weir"]["seq"], 1_700_000_000_000_001_u64);
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
        // Outside a ring, and without nodes: no number, no peer node.
        assert!(
            !text.contains("seq") && !text.contains("peer_node"),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<FlowJson>(&text).unwrap(), json);
    }
}
