//! DNS in the lab and names on flows, end to end: the lab's
//! kube-system/coredns answers the names ExternalHosts declare, pods resolve
//! through the kube-dns Service, and a test re-points a name.
//!
//! Needs root (network namespaces): `cargo test -p weir-integration-tests
//! --test dns`.

use serde_json::Value;
use weir_integration_tests::harness::Lab;

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
