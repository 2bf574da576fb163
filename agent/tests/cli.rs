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
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
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
        .unwrap()
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
