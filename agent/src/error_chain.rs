//! Printing an error with its causes, for logs and messages.
//!
//! `anyhow::Error` prints its chain with `{:#}`; every other error goes
//! through [`chain`], so a log line reads the same either way.

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

#[cfg(test)]
mod tests {
    use super::chain;

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
}
