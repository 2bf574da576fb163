//! The `weir` binary's handling of bad arguments: names are validated
//! before any request (a listener counts the connections it gets), and an
//! error is printed once.

use std::{
    net::TcpListener,
    process::{Command, Output},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

/// A local listener counting the connections made to it (the test process
/// ends the thread).
fn counting_server() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a local port");
    let url = format!(
        "http://{}",
        listener.local_addr().expect("the listener's address")
    );
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (url, count)
}

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .env_remove("WEIR_SERVER")
        .env_remove("WEIR_TOKEN")
        .env_remove("RUST_LOG")
        .output()
        .expect("running weir")
}

#[test]
fn bad_names_are_refused_before_any_request() {
    let (server, connections) = counting_server();
    let cases: &[(&[&str], &str)] = &[
        (
            &["mode", "set", "kube-system#oops", "enforce"],
            "kube-system#oops",
        ),
        (&["mode", "set", "../../x", "audit"], "../../x"),
        (&["mode", "set", "a b", "audit"], "a b"),
        (&["mode", "set", "Shop", "audit"], "Shop"),
        (&["mode", "set", "--kube", "x/y", "audit"], "x/y"),
        (&["policy", "delete", "shop/x#frag"], "shop/x#frag"),
        (&["policy", "delete", "shop/a/b"], "shop/a/b"),
        (&["policy", "delete", "../x"], "../x"),
        (&["policy", "delete", "shop"], "expected NAMESPACE/NAME"),
        (&["export", "-n", "shop?x=1"], "shop?x=1"),
        (&["observe", "--namespace", "a%2Fb"], "a%2Fb"),
    ];
    for (args, shown) in cases {
        let mut args = args.to_vec();
        args.extend(["--server", &server, "--token", "t"]);
        if args[0] == "export" || args[0] == "observe" {
            args.retain(|a| *a != "--token" && *a != "t");
        }
        let out = weir(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("invalid value") && stderr.contains(shown),
            "{args:?}: {stderr}"
        );
        assert!(
            stderr.contains("DNS-1123") || stderr.contains("NAMESPACE/NAME"),
            "{args:?}: {stderr}"
        );
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(connections.load(Ordering::SeqCst), 0, "a request was sent");
}

#[test]
fn a_valid_name_does_reach_the_agent() {
    // The counterpart of the test above: the same command with a good
    // name connects (and fails on the listener's empty answer).
    let (server, connections) = counting_server();
    let out = weir(&[
        "mode", "set", "shop", "audit", "--server", &server, "--token", "t",
    ]);
    assert_eq!(out.status.code(), Some(2));
    std::thread::sleep(Duration::from_millis(100));
    assert!(connections.load(Ordering::SeqCst) >= 1);
}

#[test]
fn an_error_is_printed_once() {
    let out = weir(&["policy", "apply", "-f", "/nonexistent/weir-policies.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.matches("/nonexistent/weir-policies.yaml").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.starts_with("weir: cannot read"), "{stderr}");
    // JSON logs: the error is one log record, not a log record and a line.
    let out = weir(&[
        "--log-format",
        "json",
        "policy",
        "apply",
        "-f",
        "/nonexistent/weir-policies.yaml",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let record: serde_json::Value = serde_json::from_str(stderr.trim()).unwrap();
    assert_eq!(record["level"], "ERROR", "{stderr}");
}

/// `weir verify` offline: a flow file that gives no usable flow is an
/// error (exit 2), never "pass: 0 observed edge(s)"; other JSON objects
/// are counted and reported skips.
#[test]
fn verify_never_passes_on_no_flows() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("shop.yaml"),
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {name: deny, namespace: shop}\nspec: {podSelector: {}}\n",
    )
    .unwrap();
    let inventory = dir.path().join("inventory.yaml");
    std::fs::write(
        &inventory,
        "kind: Pod\nmetadata: {name: web, namespace: shop, labels: {app: web}}\n\
         status: {podIP: 10.0.0.1}\n",
    )
    .unwrap();
    let flow = r#"{"time":"2024-01-02T03:04:05Z","verdict":"FORWARDED","IP":{"source":"198.51.100.7","destination":"10.0.0.1"},"l4":{"TCP":{"destination_port":80,"flags":{"SYN":true}}},"destination":{"namespace":"shop","pod_name":"web"},"Type":"L3_L4","traffic_direction":"INGRESS"}"#;
    let lost = r#"{"lost_events":{"num_events_lost":3}}"#;
    let verify = |name: &str, text: &str| {
        let flows = dir.path().join(name);
        std::fs::write(&flows, text).unwrap();
        let out = weir(&[
            "verify",
            "--policies",
            policies.to_str().unwrap(),
            "--flows",
            flows.to_str().unwrap(),
            "--inventory",
            inventory.to_str().unwrap(),
        ]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (name, text) in [
        ("empty.json", String::new()),
        ("garbage.json", "not json\n{\"IP\": 3}\n[1]\n".to_owned()),
        ("others.json", format!("{lost}\n{lost}\n")),
        (
            "replies.json",
            flow.replace("\"Type\"", "\"is_reply\":true,\"Type\""),
        ),
    ] {
        let (code, stdout, stderr) = verify(name, &text);
        assert_eq!(code, Some(2), "{name}: {stdout}{stderr}");
        assert!(stderr.contains("no usable flow"), "{name}: {stderr}");
        assert!(!stdout.contains("pass"), "{name}: {stdout}");
    }
    let (_, _, stderr) = verify("others.json", &format!("{lost}\n"));
    assert!(
        stderr.contains("others.json:1: skipped: not a flow record (an object with lost_events)")
            && stderr.contains("1 other object(s)"),
        "{stderr}"
    );
    // One usable flow among them: verify runs (and reports the denied
    // flow: the policy isolates shop/web for ingress).
    let (code, stdout, stderr) = verify("mixed.json", &format!("{lost}\nnot json\n{flow}\n"));
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("DENIED"), "{stdout}");
    assert!(
        stderr.contains("1 malformed line(s) and 1 other object(s) skipped"),
        "{stderr}"
    );
}

#[test]
fn certs_writes_a_ca_and_every_end_then_keeps_the_ca() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = dir.path().join("certs");
    let out_arg = out.to_str().expect("a UTF-8 path");
    let first = weir(&["certs", "--out", out_arg, "--node", "a", "--node", "b"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let listed = String::from_utf8_lossy(&first.stdout);
    for file in [
        "ca.crt",
        "ca.key",
        "agents/a/tls.crt",
        "agents/a/tls.key",
        "agents/a/ca.crt",
        "agents/b/tls.key",
        "relay/tls.crt",
        "relay/tls.key",
        "relay/ca.crt",
    ] {
        assert!(out.join(file).is_file(), "{file}");
        assert!(
            listed.contains(&format!("{}", out.join(file).display())),
            "{listed}"
        );
    }
    let ca = std::fs::read(out.join("ca.crt")).expect("ca.crt");

    let again = weir(&["certs", "--out", out_arg, "--node", "c"]);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("ca.crt exists"), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(std::fs::read(out.join("ca.crt")).expect("ca.crt"), ca);
    assert!(!out.join("agents/c").exists());

    let bad = weir(&["certs", "--out", out_arg, "--force", "--node", "Node_1"]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("\"Node_1\" is not a node name"), "{stderr}");

    let forced = weir(&["certs", "--out", out_arg, "--force", "--node", "c"]);
    assert!(forced.status.success());
    assert_ne!(std::fs::read(out.join("ca.crt")).expect("ca.crt"), ca);
    assert!(out.join("agents/c/tls.crt").is_file());
}
