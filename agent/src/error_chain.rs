//! Printing an error with its causes, for logs and messages.
//!
//! `anyhow::Error` prints its chain with `{:#}`; every other error goes
//! through [`chain`], so a log line reads the same either way. A task
//! that ended without its result goes through [`task_ended`].

/// An error and its causes, `a: b: c`, as `{:#}` prints an anyhow chain.
#[must_use]
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// Why the task doing `what` ended without its result: cancelled (the
/// runtime stopped or dropped it first, no fault of the task) or panicked
/// (with the panic's message). Only a panic is said as one: a log line
/// saying "panicked" is a bug to look for.
#[must_use]
pub fn task_ended(what: &str, error: tokio::task::JoinError) -> String {
    let payload = match error.try_into_panic() {
        Ok(payload) => payload,
        Err(_) => {
            return format!("{what} task was cancelled: the runtime stopped before it finished");
        }
    };
    // A panic's payload is a `&str` or a `String` when it has a message.
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned());
    format!("{what} task panicked: {message}")
}

#[cfg(test)]
mod tests {
    use super::{chain, task_ended};

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("middle")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn prints_every_cause_as_anyhow_does() {
        let error = Outer(Middle(std::io::Error::other("inner")));
        assert_eq!(chain(&error), "outer: middle: inner");
        assert_eq!(
            chain(&error),
            format!(
                "{:#}",
                anyhow::Error::from(Outer(Middle(std::io::Error::other("inner"))))
            )
        );
        assert_eq!(chain(&std::io::Error::other("alone")), "alone");
    }

    #[tokio::test]
    async fn a_cancelled_task_is_not_said_to_have_panicked() {
        let never = tokio::spawn(std::future::pending::<()>());
        never.abort();
        let cancelled = never.await.expect_err("aborted");
        assert_eq!(
            task_ended("fold", cancelled),
            "fold task was cancelled: the runtime stopped before it finished"
        );

        let boom = tokio::spawn(async { panic!("boom {}", 7) });
        let panicked = boom.await.expect_err("panicked");
        assert_eq!(task_ended("guard", panicked), "guard task panicked: boom 7");
        let literal = tokio::spawn(async { std::panic::panic_any("static") });
        assert_eq!(
            task_ended("save", literal.await.expect_err("panicked")),
            "save task panicked: static"
        );
    }
}
