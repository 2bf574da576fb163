//! The web UI end to end, in Debian's headless Chromium driven by
//! playwright-core (tests/e2e/, Node.js): the agent watches the demo shop
//! (pods 10.211.0.0/16, Services 10.212.0.0/16), the shop's traffic is
//! driven and learned, then `node --test tests/e2e/` checks the graph, an
//! edge's details, live updates, the download against `weir export`, the
//! token, enforcing a namespace from the UI (lab probes), approving and
//! rejecting pending edges from the UI (diff first; lab probes), the error state,
//! the CSP, a 500-node / 5,000-edge graph, and the coverage badge a relay's
//! answers bring (served by a route intercept).
//!
//! Needs `make e2edeps` (Chromium from apt, playwright-core from npm into
//! tests/e2e/node_modules); `make test` runs it first. Set
//! `WEIR_UI_SCREENSHOT=docs/img/ui-graph.png` to also write the README's
//! screenshot.

use std::{
    io::Read,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use weir_integration_tests::{
    harness::{Agent, Lab, eventually, weir_bin},
    shop::{learn_the_shop, shop_yaml},
};

const NODE_TIMEOUT: Duration = Duration::from_secs(600);

fn e2e_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e")
}

fn require_tools() {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: run `make e2edeps` (make test does)"
    );
    assert!(
        e2e_dir()
            .join("node_modules/playwright-core/package.json")
            .exists(),
        "tests/e2e/node_modules/playwright-core is missing: run `make e2edeps` (make test does)"
    );
}

#[test]
#[expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "node --test's report, shown with --nocapture or on failure"
)]
fn the_ui_in_chromium_against_the_demo_shop() {
    require_tools();
    // kube-system promoted automatically (its audit period long enough
    // that it stays in audit): the mode switch shows the next step.
    let yaml = shop_yaml(211).replace(
        "  name: kube-system\n---",
        "  name: kube-system\n  annotations: {weir.dev/promote: auto, weir.dev/promote-after: 1h}\n---",
    );
    assert!(yaml.contains("weir.dev/promote: auto"), "{yaml}");
    let lab = Lab::up("ui", &yaml);
    let state = tempfile::Builder::new()
        .prefix("weir-ui-state")
        .tempdir()
        .expect("state dir");
    let state_dir = state.path().to_string_lossy().into_owned();
    let agent = Agent::start(
        &lab,
        &[
            "--state-dir",
            &state_dir,
            "--flow-idle-timeout",
            "2s",
            "--flow-closing-timeout",
            "1s",
            // Not ready at first, ready during the run: the mode switch
            // shows both.
            "--quiet-period",
            "20s",
        ],
    );
    // One more sweep: the counters and the suggestion settle.
    learn_the_shop(&lab, &agent, 2, Duration::from_secs(2));

    let token_file = state.path().join("api-token");
    let token = eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&token_file)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
    })
    .unwrap_or_else(|| {
        panic!(
            "the agent wrote no token to {}:\n{}",
            token_file.display(),
            agent.log_text()
        )
    });

    let mut node = Command::new("node");
    node.args(["--test", "--test-concurrency=1", "."])
        .current_dir(e2e_dir())
        .env("AGENT_URL", agent.url())
        .env("TOKEN", &token)
        .env("WEIR_BIN", weir_bin())
        .env("LAB", &lab.name)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(path) = std::env::var_os("WEIR_UI_SCREENSHOT") {
        let path = Path::new(&path);
        let absolute = if path.is_absolute() {
            path.to_path_buf()
        } else {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
        };
        node.env("SCREENSHOT", absolute);
    }
    let mut child = node
        .spawn()
        .expect("cannot run node (make e2edeps installs it)");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break Some(status);
        }
        if started.elapsed() > NODE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = out_reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    // Node's own report, shown with --nocapture or when the test fails.
    println!("{out}");
    eprintln!("{err}");
    let status = status.unwrap_or_else(|| {
        panic!("node --test did not finish within {NODE_TIMEOUT:?}:\n{out}\n{err}")
    });
    assert!(
        status.success(),
        "the UI end-to-end tests failed ({status}):\n{out}\n{err}\nagent log:\n{}",
        agent.log_text()
    );
    // node's runner counts: the tests ran, none failed or was skipped.
    assert!(out.contains("# fail 0"), "{out}");
    assert!(out.contains("# skipped 0"), "{out}");
    assert!(!out.contains("# pass 0\n"), "no test ran:\n{out}");
    drop(agent);
}
