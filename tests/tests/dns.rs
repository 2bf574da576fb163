//! DNS in the lab and names on flows, end to end: the lab's
//! kube-system/coredns answers the names ExternalHosts declare, pods resolve
//! through the kube-dns Service, and a test re-points a name.
//!
//! Needs root (network namespaces): `cargo test -p weir-integration-tests
//! --test dns`.

use std::{
    sync::{Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use serde_json::Value;
use weir_integration_tests::harness::{Agent, Lab, eventually, weir, weir_ok};

/// A lab with CoreDNS, its Service, a client pod and two hosts of a payment
/// provider; only the first is `api.payments.example` at the start.
const LAB: &str = r"
apiVersion: lab.weir.dev/v1alpha1
kind: Lab
metadata: {name: dns}
spec: {podCIDR: 10.217.0.0/24, serviceCIDR: 10.218.0.0/24}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  containers:
  - name: coredns
    ports: [{containerPort: 53, protocol: UDP}, {containerPort: 53, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system}
spec:
  clusterIP: 10.218.0.10
  selector: {k8s-app: kube-dns}
  ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
spec: {containers: [{name: c}]}
---
apiVersion: lab.weir.dev/v1alpha1
kind: ExternalHost
metadata: {name: payments-a}
spec:
  ips: [203.0.113.210]
  ports: [{port: 443}]
  dnsNames: [api.payments.example]
  dnsTTL: 30
---
apiVersion: lab.weir.dev/v1alpha1
kind: ExternalHost
metadata: {name: payments-b}
spec:
  ips: [203.0.113.211]
  ports: [{port: 443}]
";

/// The two tests that bring [`LAB`] up take turns: its pod and Service
/// ranges and its external hosts' addresses would overlap on this machine.
static LAB_IN_USE: Mutex<()> = Mutex::new(());

fn lab_turn() -> MutexGuard<'static, ()> {
    LAB_IN_USE.lock().unwrap_or_else(PoisonError::into_inner)
}

fn lookup(lab: &Lab, name: &str) -> Value {
    let out = lab.cmd(&["dns", "lookup", "shop/client", name, "-o", "json"]);
    assert!(out.status.success(), "dns lookup {name}: {out:?}");
    serde_json::from_slice(&out.stdout).expect("dns lookup -o json is JSON")
}

fn exec(lab: &Lab, args: &[&str]) -> String {
    let mut all = vec!["exec", "shop/client", "--"];
    all.extend_from_slice(args);
    let out = lab.cmd(&all);
    assert!(out.status.success(), "lab exec {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn lab_dns_answers_declared_names_through_the_service_and_follows_a_repoint() {
    let _turn = lab_turn();
    let lab = Lab::up("dns", LAB);

    let found = lookup(&lab, "api.payments.example");
    assert_eq!(found["rcode"], "NOERROR");
    assert_eq!(found["ips"], serde_json::json!(["203.0.113.210"]));
    assert_eq!(found["ttl"], 30);
    assert_eq!(
        lookup(&lab, "nothing.payments.example")["rcode"],
        "NXDOMAIN"
    );
    assert_eq!(
        lookup(&lab, "kube-dns.kube-system.svc.cluster.local")["ips"],
        serde_json::json!(["10.218.0.10"])
    );

    // The pod's own resolver (glibc, its resolv.conf) asks the Service IP.
    let resolv = exec(&lab, &["cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 10.218.0.10"), "{resolv}");
    assert!(resolv.contains("search shop.svc.cluster.local"), "{resolv}");
    let hosts = exec(&lab, &["getent", "hosts", "api.payments.example"]);
    assert!(hosts.starts_with("203.0.113.210"), "{hosts}");
    assert!(lab.probe("shop/client", "api.payments.example", "443"));

    // Re-point: the running server answers the new address at once.
    let out = lab.cmd(&["dns", "set", "api.payments.example", "203.0.113.211"]);
    assert!(out.status.success(), "dns set: {out:?}");
    assert_eq!(
        lookup(&lab, "api.payments.example")["ips"],
        serde_json::json!(["203.0.113.211"])
    );
    let hosts = exec(&lab, &["getent", "hosts", "api.payments.example"]);
    assert!(hosts.starts_with("203.0.113.211"), "{hosts}");

    // Only the lab's own addresses: nothing outside is ever pointed at.
    let out = lab.cmd(&["dns", "set", "api.payments.example", "192.0.2.99"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("192.0.2.99 is not an address of an external host or Service"),
        "{err}"
    );

    let status = lab.status();
    let client = status["pods"]
        .as_array()
        .and_then(|pods| pods.iter().find(|p| p["name"] == "client"))
        .and_then(|p| p["netns"].as_str())
        .expect("the client pod's netns in lab status")
        .to_owned();
    let netns_etc = std::path::Path::new("/etc/netns").join(client);
    assert!(
        netns_etc.join("resolv.conf").exists(),
        "{}",
        netns_etc.display()
    );
    let name = lab.name.clone();
    drop(lab);
    assert!(
        !netns_etc.exists(),
        "lab {name} down left {}",
        netns_etc.display()
    );
}

/// The flows from shop/client to `ip:443`, as `weir observe -o json` prints
/// them.
fn flows_to(agent: &Agent, ip: &str) -> Vec<Value> {
    let url = agent.url();
    weir_ok(&["observe", "--server", &url, "--last", "1000", "-o", "json"])
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("observe -o json is JSON lines"))
        .filter(|f| f["IP"]["destination"] == ip && f["l4"]["TCP"]["destination_port"] == 443)
        .collect()
}

/// The learned export of namespace shop, as `weir export` prints it
/// (standard NetworkPolicies); `extra` adds arguments (a dialect).
fn learned_export(agent: &Agent, extra: &[&str]) -> String {
    let url = agent.url();
    let mut args = vec!["export", "--server", url.as_str(), "--namespace", "shop"];
    args.extend_from_slice(extra);
    weir_ok(&args)
}

/// The client's policy in `export`, parsed, with its egress rules whose
/// peers are the name's host ipBlocks.
fn client_policy(export: &str) -> Value {
    export
        .split("\n---\n")
        .skip(1)
        .map(|doc| serde_yaml::from_str::<Value>(doc).expect("export is YAML"))
        .find(|p| p["metadata"]["name"] == "weir-client")
        .unwrap_or_else(|| panic!("no weir-client policy in:\n{export}"))
}

/// The `to` CIDRs of each egress rule of `policy`.
fn egress_cidrs(policy: &Value) -> Vec<Vec<String>> {
    policy["spec"]["egress"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|rule| {
            rule["to"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|peer| peer["ipBlock"]["cidr"].as_str().map(str::to_owned))
                .collect()
        })
        .collect()
}

/// The graph's node for `name`, once it has `addresses` addresses.
fn name_node(agent: &Agent, name: &str, addresses: usize) -> Value {
    eventually(Duration::from_secs(10), || {
        let graph = agent.get_json("/api/graph");
        graph["nodes"]
            .as_array()
            .and_then(|nodes| nodes.iter().find(|n| n["id"] == name).cloned())
            .filter(|n| {
                n["addresses"]
                    .as_array()
                    .is_some_and(|a| a.len() == addresses)
            })
    })
    .unwrap_or_else(|| {
        panic!(
            "no node {name} with {addresses} addresses in {}",
            agent.get_json("/api/graph")
        )
    })
}

/// The pod resolves the name through the Service, connects to what it got,
/// and the agent's flow record carries the name; after the name moves, the
/// new connection's record carries it too, the old one keeps its own. The
/// graph draws the name as one node with its addresses, and the export
/// allows the name with one rule holding every address seen for it,
/// annotated with the name and its evidence.
#[test]
fn flows_to_a_resolved_name_carry_it_and_follow_a_repoint() {
    let _turn = lab_turn();
    let lab = Lab::up("dnsflow", LAB);
    let agent = Agent::start(&lab, &[]);

    assert!(lab.probe("shop/client", "api.payments.example", "443"));
    let first = eventually(Duration::from_secs(10), || {
        flows_to(&agent, "203.0.113.210").into_iter().next()
    })
    .unwrap_or_else(|| panic!("no flow to 203.0.113.210:\n{}", agent.log_text()));
    assert_eq!(
        first["destination_names"],
        serde_json::json!(["api.payments.example"]),
        "{first}"
    );
    let url = agent.url();
    let line = weir_ok(&["observe", "--server", &url, "--last", "1000"]);
    assert!(
        line.contains("-> api.payments.example:443 (203.0.113.210)"),
        "{line}"
    );

    // The graph has the name's node, the address no node of its own.
    let node = name_node(&agent, "api.payments.example", 1);
    assert_eq!(node["addresses"][0]["address"], "203.0.113.210", "{node}");
    let graph = agent.get_json("/api/graph");
    let ids: Vec<&str> = graph["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["id"].as_str())
        .collect();
    assert!(!ids.contains(&"203.0.113.210"), "{ids:?}");
    assert!(
        graph["edges"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["id"] == "shop/client->api.payments.example"),
        "{graph}"
    );

    let export = learned_export(&agent, &[]);
    let policy = client_policy(&export);
    let rules = egress_cidrs(&policy);
    assert!(
        rules.contains(&vec!["203.0.113.210/32".to_owned()]),
        "{export}"
    );
    assert!(
        export.contains("# api.payments.example: 1 address seen in the window"),
        "{export}"
    );
    let notes: Value = serde_json::from_str(
        policy["metadata"]["annotations"]["weir.dev/fqdn-rules"]
            .as_str()
            .unwrap_or_else(|| panic!("no weir.dev/fqdn-rules annotation:\n{export}")),
    )
    .expect("the annotation is JSON");
    assert_eq!(notes[0]["name"], "api.payments.example", "{notes}");
    assert_eq!(notes[0]["direction"], "egress", "{notes}");
    assert!(notes[0]["connections"].as_u64() >= Some(1), "{notes}");

    let out = lab.cmd(&["dns", "set", "api.payments.example", "203.0.113.211"]);
    assert!(out.status.success(), "dns set: {out:?}");
    assert!(lab.probe("shop/client", "api.payments.example", "443"));
    let second = eventually(Duration::from_secs(10), || {
        flows_to(&agent, "203.0.113.211").into_iter().next()
    })
    .unwrap_or_else(|| panic!("no flow to 203.0.113.211:\n{}", agent.log_text()));
    assert_eq!(
        second["destination_names"],
        serde_json::json!(["api.payments.example"]),
        "{second}"
    );
    assert!(
        agent
            .metric("weir_dns_answers_parsed_total")
            .is_some_and(|n| n >= 2.0),
        "{:?}",
        agent.metric("weir_dns_answers_parsed_total")
    );

    // Re-pointed: still one node and one rule for the name, now with both
    // addresses.
    name_node(&agent, "api.payments.example", 2);
    let export = learned_export(&agent, &[]);
    let rules = egress_cidrs(&client_policy(&export));
    let named: Vec<&Vec<String>> = rules
        .iter()
        .filter(|cidrs| cidrs.iter().any(|c| c.starts_with("203.0.113.21")))
        .collect();
    assert_eq!(
        named,
        [&vec![
            "203.0.113.210/32".to_owned(),
            "203.0.113.211/32".to_owned()
        ]],
        "{export}"
    );
    assert!(
        export.contains("# api.payments.example: 2 addresses seen in the window"),
        "{export}"
    );

    // In the FQDN dialects the name is one rule naming it, and its
    // addresses leave the NetworkPolicy.
    let cilium = learned_export(&agent, &["--dialect", "cilium"]);
    let cnp = object_of_kind(&cilium, "CiliumNetworkPolicy");
    let fqdn_rules: Vec<&Value> = cnp["spec"]["egress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|rule| rule.get("toFQDNs").is_some())
        .collect();
    assert_eq!(fqdn_rules.len(), 1, "{cilium}");
    assert_eq!(
        fqdn_rules[0]["toFQDNs"],
        serde_json::json!([{"matchName": "api.payments.example"}]),
        "{cilium}"
    );
    // The name's addresses are in no rule, and no note points at a rule
    // that went to the CiliumNetworkPolicy.
    assert!(!cilium.contains("cidr: 203.0.113.21"), "{cilium}");
    assert!(!cilium.contains("weir.dev/fqdn-rules"), "{cilium}");
    let anp = learned_export(&agent, &["--dialect", "anp"]);
    let admin = object_of_kind(&anp, "AdminNetworkPolicy");
    let allowed: Vec<&Value> = admin["spec"]["egress"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(allowed.len(), 1, "{anp}");
    assert_eq!(allowed[0]["action"], "Allow", "{anp}");
    assert_eq!(
        allowed[0]["to"],
        serde_json::json!([{"domainNames": ["api.payments.example"]}]),
        "{anp}"
    );
    assert!(!anp.contains("cidr: 203.0.113.21"), "{anp}");
    let refused = weir(&[
        "export",
        "--server",
        agent.url().as_str(),
        "--dialect",
        "calico",
    ]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("calico"),
        "{said}"
    );
}

/// The one document of `kind` in an export.
fn object_of_kind(export: &str, kind: &str) -> Value {
    let mut found = export
        .split("\n---\n")
        .map(|doc| serde_yaml::from_str::<Value>(doc.trim_start_matches("---\n")).expect("YAML"))
        .filter(|doc| doc["kind"] == kind);
    let object = found
        .next()
        .unwrap_or_else(|| panic!("no {kind} in:\n{export}"));
    assert!(found.next().is_none(), "more than one {kind} in:\n{export}");
    object
}

// ---- the datapath's copy of DNS answers (BPF_PROG_TEST_RUN) ----

mod datapath {
    use std::{
        net::{Ipv4Addr, Ipv6Addr},
        str::FromStr as _,
    };

    use etherparse::{IpAuthHeader, IpNumber, Ipv6Extensions, Ipv6RawExtHeader, TcpOptionElement};
    use hickory_proto::{
        op::{Message, Query},
        rr::{Name, RData, Record, RecordType, rdata::A},
    };
    use weir_ebpf::{
        abi::{
            CNT_DNS_ANSWERS, CNT_DNS_LIMITED, CNT_DNS_RINGBUF_FULL, CNT_DNS_SKIPPED,
            CNT_DNS_TRUNCATED, CNT_MAX, DNS_PAYLOAD_MAX, DNS_TCP, DNS_UDP, DnsEvent, FlowEvent,
            RingRecord,
        },
        loader::{Datapath, LoadOptions, Program},
    };
    use weir_integration_tests::{
        netns::require_root,
        packets::{Ip, L4, Vlan, frame_with_payload, ipv4, ipv6, tcp},
        test_run::{key, must},
    };

    const POD: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 53);
    const POD6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
    const DNS6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x53);
    const IPPROTO_TCP: u8 = 6;
    const IPPROTO_UDP: u8 = 17;

    struct Harness {
        datapath: Datapath,
        ring: aya::maps::RingBuf<aya::maps::MapData>,
    }

    impl Harness {
        fn with(opts: &LoadOptions) -> Self {
            require_root();
            let mut datapath = must("loading the datapath", Datapath::load(opts));
            let ring = must("taking the ring buffer", datapath.take_ring_buf());
            Self { datapath, ring }
        }

        fn new() -> Self {
            Self::with(&LoadOptions::default())
        }

        fn run(&self, program: Program, frame: &[u8]) {
            let out = must(
                "BPF_PROG_TEST_RUN",
                self.datapath.test_run(program, frame, 1),
            );
            assert_eq!(out.action, -1, "observe programs never set a verdict");
        }

        /// Every record in the ring: (flow events, DNS events).
        fn drain(&mut self) -> (Vec<FlowEvent>, Vec<DnsEvent>) {
            let (mut flows, mut dns) = (Vec::new(), Vec::new());
            while let Some(item) = self.ring.next() {
                match must("decoding a ring record", RingRecord::from_bytes(&item)) {
                    RingRecord::Flow(f) => flows.push(f),
                    RingRecord::Dns(d) => dns.push(*d),
                }
            }
            (flows, dns)
        }

        fn counters(&self) -> [u64; CNT_MAX] {
            must("reading counters", self.datapath.counters())
        }
    }

    /// A real answer: api.payments.example A 203.0.113.210, TTL 30.
    fn answer() -> Vec<u8> {
        let name = Name::from_str("api.payments.example.").expect("name");
        let mut m = Message::response(0x1234, hickory_proto::op::OpCode::Query);
        m.add_query(Query::query(name.clone(), RecordType::A));
        m.add_answer(Record::from_rdata(
            name,
            30,
            RData::A(A(Ipv4Addr::new(203, 0, 113, 210))),
        ));
        m.to_vec().expect("encode")
    }

    fn udp4(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        frame_with_payload(
            Vlan::None,
            ipv4(DNS, POD),
            L4::Udp { sport, dport },
            payload,
        )
    }

    #[test]
    fn a_udp_answer_to_a_pod_is_copied_whole_with_its_flow_key() {
        let mut h = Harness::new();
        let msg = answer();
        h.run(Program::ToPod, &udp4(53, 40000, &msg));

        let (flows, dns) = h.drain();
        assert_eq!(flows.len(), 1, "the answer's flow is announced as before");
        let [ev] = dns.as_slice() else {
            panic!("one DNS record, got {dns:?}");
        };
        assert_eq!(ev.key, key(IPPROTO_UDP, POD, 40000, DNS, 53));
        assert_eq!(ev.transport, DNS_UDP);
        assert_eq!(ev.message(), msg.as_slice());
        assert_eq!(usize::from(ev.message_len), msg.len());
        assert!(!ev.truncated());
        let parsed = Message::from_vec(ev.message()).expect("the copy parses");
        assert_eq!(parsed.answers.len(), 1);
        assert_eq!(h.counters()[CNT_DNS_ANSWERS], 1);
    }

    #[test]
    fn only_answers_to_pods_from_port_53_are_copied() {
        let mut h = Harness::new();
        let msg = answer();
        // the pod's own query, a pod serving DNS, another port, a short message
        h.run(
            Program::FromPod,
            &frame_with_payload(
                Vlan::None,
                ipv4(POD, DNS),
                L4::Udp {
                    sport: 40000,
                    dport: 53,
                },
                &msg,
            ),
        );
        h.run(
            Program::FromPod,
            &frame_with_payload(
                Vlan::None,
                ipv4(POD, DNS),
                L4::Udp {
                    sport: 53,
                    dport: 40001,
                },
                &msg,
            ),
        );
        h.run(Program::ToPod, &udp4(5353, 40002, &msg));
        h.run(Program::ToPod, &udp4(53, 40003, &msg[..11]));
        let (flows, dns) = h.drain();
        assert_eq!(flows.len(), 4);
        assert!(dns.is_empty(), "{dns:?}");
        assert_eq!(h.counters()[CNT_DNS_ANSWERS], 0);
    }

    #[test]
    fn a_long_answer_is_cut_at_the_bound_and_counted() {
        let mut h = Harness::new();
        let long: Vec<u8> = (0..1400u32).map(|i| (i % 251) as u8).collect();
        h.run(Program::ToPod, &udp4(53, 40000, &long));
        let (_, dns) = h.drain();
        let [ev] = dns.as_slice() else {
            panic!("one DNS record, got {dns:?}");
        };
        assert_eq!(usize::from(ev.captured_len), DNS_PAYLOAD_MAX);
        assert_eq!(usize::from(ev.message_len), long.len());
        assert_eq!(ev.message(), &long[..DNS_PAYLOAD_MAX]);
        assert!(ev.truncated());
        assert_eq!(h.counters()[CNT_DNS_TRUNCATED], 1);
    }

    /// The UDP length field is not trusted past the packet, nor ignored
    /// when it says less than the frame holds (Ethernet padding).
    #[test]
    fn the_copy_never_reads_past_the_packet_whatever_the_udp_length_says() {
        let mut h = Harness::new();
        let msg = answer();
        let mut lying = udp4(53, 40000, &msg);
        let udp_len = 14 + 20 + 4;
        lying[udp_len..udp_len + 2].copy_from_slice(&1400u16.to_be_bytes());
        h.run(Program::ToPod, &lying);
        let mut short = udp4(53, 40001, &msg);
        short[udp_len..udp_len + 2].copy_from_slice(&(8u16 + 20).to_be_bytes());
        h.run(Program::ToPod, &short);
        let mut tiny = udp4(53, 40002, &msg);
        tiny[udp_len..udp_len + 2].copy_from_slice(&3u16.to_be_bytes());
        h.run(Program::ToPod, &tiny);

        let (_, dns) = h.drain();
        assert_eq!(dns.len(), 2, "{dns:?}");
        assert_eq!(
            dns[0].message(),
            msg.as_slice(),
            "only the bytes the packet has"
        );
        assert_eq!(
            dns[1].message(),
            &msg[..20],
            "the UDP length bounds the message"
        );
    }

    #[test]
    fn tcp_answers_in_one_segment_are_copied_without_the_length_prefix() {
        let mut h = Harness::new();
        let msg = answer();
        let mut seg = u16::try_from(msg.len())
            .expect("short")
            .to_be_bytes()
            .to_vec();
        seg.extend_from_slice(&msg);
        let tcp_frame = |payload: &[u8], sport: u16| {
            frame_with_payload(
                Vlan::None,
                ipv4(DNS, POD),
                L4::Tcp {
                    sport: 53,
                    dport: sport,
                    flags: tcp::ACK | tcp::PSH,
                },
                payload,
            )
        };
        h.run(Program::ToPod, &tcp_frame(&seg, 40000));
        // half a message, and a bare ACK
        h.run(Program::ToPod, &tcp_frame(&seg[..seg.len() / 2], 40001));
        h.run(Program::ToPod, &tcp_frame(&[], 40002));
        // TCP options move the payload: the data offset is read
        let mut with_options = etherparse::TcpHeader::new(53, 40003, 1, 1000);
        with_options.ack = true;
        with_options
            .set_options(&[
                TcpOptionElement::MaximumSegmentSize(1460),
                TcpOptionElement::Noop,
                TcpOptionElement::Noop,
                TcpOptionElement::SelectiveAcknowledgementPermitted,
            ])
            .expect("options");
        let mut framed = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(DNS.octets(), POD.octets(), 64)
            .tcp_header(with_options)
            .write(&mut framed, &seg)
            .expect("frame");
        h.run(Program::ToPod, &framed);

        let (_, dns) = h.drain();
        assert_eq!(dns.len(), 2, "{dns:?}");
        for ev in &dns {
            assert_eq!(ev.transport, DNS_TCP);
            assert_eq!(ev.message(), msg.as_slice());
        }
        assert_eq!(dns[1].key, key(IPPROTO_TCP, POD, 40003, DNS, 53));
        assert_eq!(h.counters()[CNT_DNS_SKIPPED], 1, "the half message");
    }

    #[test]
    fn ipv6_extension_headers_and_vlan_tags_move_the_payload() {
        let mut h = Harness::new();
        let msg = answer();
        let raw = |len: usize| {
            must(
                "ext header",
                Ipv6RawExtHeader::new_raw(IpNumber::UDP, &vec![0; len]),
            )
        };
        let exts = Ipv6Extensions {
            hop_by_hop_options: Some(raw(6)),
            destination_options: Some(raw(14)),
            auth: Some(must(
                "auth",
                IpAuthHeader::new(IpNumber::UDP, 1, 1, &[0; 12]),
            )),
            ..Ipv6Extensions::default()
        };
        h.run(
            Program::ToPod,
            &frame_with_payload(
                Vlan::None,
                Ip::v6(ipv6(DNS6, POD6), exts),
                L4::Udp {
                    sport: 53,
                    dport: 40000,
                },
                &msg,
            ),
        );
        h.run(
            Program::ToPod,
            &frame_with_payload(
                Vlan::Double(10, 20),
                ipv4(DNS, POD),
                L4::Udp {
                    sport: 53,
                    dport: 40001,
                },
                &msg,
            ),
        );
        let (_, dns) = h.drain();
        assert_eq!(dns.len(), 2, "{dns:?}");
        assert_eq!(dns[0].key, key(IPPROTO_UDP, POD6, 40000, DNS6, 53));
        assert!(dns.iter().all(|ev| ev.message() == msg.as_slice()));
    }

    #[test]
    fn answers_past_the_rate_limit_or_a_full_ring_are_counted() {
        let mut h = Harness::with(&LoadOptions {
            dns_answers_per_sec: 1,
            dns_answers_burst: 3,
            ..LoadOptions::default()
        });
        let msg = answer();
        for port in 0..10 {
            h.run(Program::ToPod, &udp4(53, 40000 + port, &msg));
        }
        let (_, dns) = h.drain();
        assert_eq!(dns.len(), 3);
        let c = h.counters();
        assert_eq!((c[CNT_DNS_ANSWERS], c[CNT_DNS_LIMITED]), (3, 7));

        let page = u32::try_from(
            must(
                "page size",
                nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE),
            )
            .expect("a page size"),
        )
        .expect("small");
        let mut h = Harness::with(&LoadOptions {
            ringbuf_bytes: page,
            ..LoadOptions::default()
        });
        for port in 0..20 {
            h.run(Program::ToPod, &udp4(53, 40000 + port, &msg));
        }
        let (_, dns) = h.drain();
        let c = h.counters();
        assert!(
            !dns.is_empty() && dns.len() < 20,
            "{} records in a page",
            dns.len()
        );
        assert_eq!(c[CNT_DNS_ANSWERS], dns.len() as u64);
        assert_eq!(c[CNT_DNS_RINGBUF_FULL], 20 - dns.len() as u64);
    }
}
