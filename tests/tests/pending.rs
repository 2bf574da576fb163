//! The would-have-dropped queue end to end on the real kernel: the demo
//! shop learned, its suggestion enforced, then new edges appear. Each is
//! dropped and queued with the rule that would allow it; `weir pending
//! approve` makes the connection pass, `weir pending reject` keeps it
//! dropped and out of the queue, and a restarted agent lists what it
//! listed before.
//!
//! The lab is in its own ranges (podCIDR octet 187, Services 188).

use std::time::Duration;

use serde_json::Value;
use weir_integration_tests::{
    harness::{Agent, AgentHome, Lab, eventually, weir, weir_ok},
    shop::{learn_the_shop, shop_yaml},
};

fn pending(agent: &Agent) -> Value {
    serde_json::from_str(&weir_ok(&[
        "pending",
        "--server",
        &agent.url(),
        "-o",
        "json",
    ]))
    .expect("weir pending -o json is JSON")
}

/// The queue's entry `id`, once it is there.
fn queued(agent: &Agent, id: &str) -> Value {
    eventually(Duration::from_secs(10), || {
        pending(agent)["entries"]
            .as_array()?
            .iter()
            .find(|e| e["id"] == id)
            .cloned()
    })
    .unwrap_or_else(|| {
        panic!(
            "{id} never queued: {:#}\nlog:\n{}",
            pending(agent),
            agent.log_text()
        )
    })
}

fn is_queued(agent: &Agent, id: &str) -> bool {
    pending(agent)["entries"]
        .as_array()
        .is_some_and(|a| a.iter().any(|e| e["id"] == id))
}

#[test]
fn new_edges_under_enforce_are_queued_approved_rejected_and_kept_across_a_restart() {
    let lab = Lab::up("pnd", &shop_yaml(187));
    // One pin directory for both agents: the successor adopts the maps.
    let home = AgentHome::new(
        "pnd",
        &[
            "--flow-idle-timeout",
            "2s",
            "--flow-closing-timeout",
            "1s",
            "--save-interval",
            "300ms",
        ],
    );
    let mut agent = home.start(&lab);
    let server = agent.url();
    learn_the_shop(&lab, &agent, 2, Duration::from_secs(3));
    let applied = weir_ok(&["export", "--server", &server, "--apply"]);
    assert!(applied.contains("enforced"), "{applied}");
    for ns in ["shop", "data", "kube-system"] {
        let _ = weir_ok(&["mode", "set", "--force", "--server", &server, ns, "enforce"]);
    }
    assert_eq!(pending(&agent)["entries"], serde_json::json!([]));

    // A new edge: loadgen -> store, denied at both ends.
    let loadgen = lab.pod("shop", "loadgen");
    let frontend = lab.pod("shop", "frontend-");
    let store = lab.pod("data", "store-");
    let catalog = lab.pod("shop", "catalog-");
    assert!(!lab.probe(&loadgen, &store, "6379/TCP"), "dropped first");
    let approved = "shop/loadgen->data/store:6379/TCP";
    let entry = queued(&agent, approved);
    assert!(entry["dropped"].as_u64() >= Some(1), "{entry:#}");
    assert_eq!(entry["namespaces"], serde_json::json!(["data", "shop"]));
    assert_eq!(
        entry["policies"],
        serde_json::json!([
            "shop/weir-allow-out-loadgen-to-store-6379-tcp",
            "data/weir-allow-in-loadgen-to-store-6379-tcp"
        ]),
        "{entry:#}"
    );
    let isolated: Vec<&str> = entry["denied"]
        .as_array()
        .expect("denied")
        .iter()
        .flat_map(|d| d["isolated_by"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    assert!(
        isolated.contains(&"shop/weir-default-deny")
            && isolated.contains(&"data/weir-default-deny"),
        "{entry:#}"
    );
    let rule = entry["rule"].as_str().expect("rule");
    assert!(
        rule.contains("port: 6379") && rule.contains("app.kubernetes.io/name: loadgen"),
        "{rule}"
    );
    let table = weir_ok(&["pending", "--server", &server, "-n", "data"]);
    assert!(
        table.contains(approved) && table.contains("data/weir-default-deny"),
        "{table}"
    );

    // Approved: the diff first, then the connection passes.
    let out = weir_ok(&["pending", "approve", "--server", &server, approved]);
    assert!(
        out.contains("+++ approved/data.yaml")
            && out.contains("+  name: weir-allow-in-loadgen-to-store-6379-tcp")
            && out.contains(&format!("approved {approved}")),
        "{out}"
    );
    assert!(lab.probe(&loadgen, &store, "6379/TCP"), "approved: passes");
    assert!(!is_queued(&agent, approved));
    // Approving it again: the edge is gone from the queue, a clear refusal.
    let again = weir(&["pending", "approve", "--server", &server, approved]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && stderr.contains("no pending edge") && stderr.contains("404"),
        "{again:?}"
    );

    // Rejected: stays dropped and out of the queue.
    assert!(!lab.probe(&frontend, &store, "6379/TCP"));
    let rejected = "shop/frontend->data/store:6379/TCP";
    queued(&agent, rejected);
    let out = weir_ok(&["pending", "reject", "--server", &server, rejected]);
    assert!(out.contains(&format!("rejected {rejected}")), "{out}");
    assert!(
        !lab.probe(&frontend, &store, "6379/TCP"),
        "rejected: dropped"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(!is_queued(&agent, rejected), "{:#}", pending(&agent));
    let audit = weir_ok(&["audit", "--server", &server]);
    assert!(
        audit.contains("approve shop/loadgen -> data/store")
            && audit.contains("reject shop/frontend -> data/store"),
        "{audit}"
    );

    // A third, left pending across a restart (drops are not in the graph
    // store: the queue's own file keeps it).
    assert!(!lab.probe(&loadgen, &catalog, "3550/TCP"));
    let kept = "shop/loadgen->shop/catalog:3550/TCP";
    let before = queued(&agent, kept);
    std::thread::sleep(Duration::from_secs(1));
    assert!(agent.stop(), "stopped cleanly:\n{}", agent.log_text());
    let agent = home.start(&lab);
    let after = queued(&agent, kept);
    assert_eq!(
        (&after["dropped"], &after["first_seen"], &after["policies"]),
        (
            &before["dropped"],
            &before["first_seen"],
            &before["policies"]
        )
    );
    assert!(!is_queued(&agent, rejected), "the rejection is kept too");
    assert!(!is_queued(&agent, approved));
    drop(agent);
    drop(home);
}
