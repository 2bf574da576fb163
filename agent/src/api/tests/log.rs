//! Error answers are logged once, by the `error::log` middleware, with the
//! request's method, route and status; a 500's cause goes to the log, never
//! to the client.

use std::{
    io::Write,
    sync::{Mutex, PoisonError},
};

use super::*;

/// What a test's subscriber wrote.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Log this thread's events at `debug` and above until the guard drops.
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    /// The lines that mention `needle`.
    fn lines(&self, needle: &str) -> Vec<String> {
        let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

#[tokio::test]
async fn client_errors_are_logged_at_debug_with_the_route() {
    let captured = Captured::default();
    let _guard = captured.install();

    let (status, _, body) = get(state(), "/api/graph?bogus=1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let lines = captured.lines("request refused");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("DEBUG"), "{lines:?}");
    assert!(
        lines[0].contains("method=GET route=\"/api/graph\" status=400 error=bad query"),
        "{lines:?}"
    );

    // No route: the path stands in for it.
    let (status, _, _) = get(state(), "/nope/at/all").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let refused = captured.lines("request refused");
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused[1].contains("route=\"/nope/at/all\" status=404"),
        "{refused:?}"
    );
    // A server error without a cause to tell: warn.
    let (status, _, _) = get(state(), "/api/policies/enforced").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let failed = captured.lines("request failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("WARN"), "{failed:?}");
    assert!(
        failed[0].contains("method=GET route=\"/api/policies/enforced\" status=503"),
        "{failed:?}"
    );
    // Successes are not logged.
    let (status, _, _) = get(state(), "/api/graph").await;
    assert_eq!(status, StatusCode::OK);
    assert!(captured.lines("status=200").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_internal_error_is_logged_once_with_its_cause_and_not_sent() {
    let agent = with_enforcer(state());
    // The file cannot be replaced: the change fails inside the agent.
    let file = agent
        .state_dir()
        .join(crate::enforce::state_file::FILE_NAME);
    std::fs::create_dir(&file).unwrap();
    // This thread polls the request, so its subscriber sees the middleware.
    let captured = Captured::default();
    let _guard = captured.install();

    let (status, body) = agent
        .send("PUT", "/api/modes/shop", r#"{"mode": "enforce"}"#)
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"error": "internal error", "status": 500})
    );
    let lines = captured.lines("enforcement change failed");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let expected = format!(
        "method=PUT route=\"/api/modes/{{namespace}}\" status=500 \
         error=\"cannot save the enforced policies: {}: ",
        file.display()
    );
    assert!(lines[0].contains("ERROR"), "{lines:?}");
    assert!(lines[0].contains(&expected), "{lines:?}\n{expected}");
}
