//! `weir audit`: the agent's audit log of decisions (mode changes, the
//! guard's reverts, promotions, approvals and rejections).
//!
//! ```text
//! weir audit                 # every entry, oldest first
//! weir audit -n shop --kind revert
//! ```

use std::{
    io::{self, Write as _},
    process::ExitCode,
};

use super::{
    client::{self, Client, ServerArgs, endpoint},
    output::{Output, table},
};
use crate::api::wire::Audit;

/// `weir audit` arguments.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Only entries about this namespace.
    #[arg(short, long, value_parser = client::namespace_arg)]
    pub namespace: Option<String>,
    /// Only entries of this kind: revert, approve, reject, promote or
    /// mode-change.
    #[arg(long)]
    pub kind: Option<crate::audit::Kind>,
    /// Only the newest N entries.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Run `weir audit`.
///
/// # Errors
/// An unreachable agent, an answer that does not parse.
pub fn run(args: &AuditArgs) -> anyhow::Result<ExitCode> {
    let mut url = endpoint(&args.server.server, &["api", "audit"])?;
    {
        let mut query = url.query_pairs_mut();
        if let Some(ns) = &args.namespace {
            query.append_pair("namespace", ns);
        }
        if let Some(kind) = args.kind {
            query.append_pair("kind", kind.as_str());
        }
        if let Some(limit) = args.limit {
            query.append_pair("limit", &limit.to_string());
        }
    }
    let audit: Audit = Client::new()?.get_json(&url, "audit log")?;
    let mut out = io::stdout().lock();
    match args.output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, &audit)?;
            writeln!(out)?;
        }
        Output::Table => out.write_all(render(&audit).as_bytes())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The table `weir audit` prints: one row per entry, the reason (the
/// details' `reason`, when they have one) last.
#[must_use]
pub fn render(audit: &Audit) -> String {
    let mut rows = vec![[
        "#".to_owned(),
        "TIME".to_owned(),
        "WHO".to_owned(),
        "KIND".to_owned(),
        "NAMESPACE".to_owned(),
        "WHAT".to_owned(),
        "WHY".to_owned(),
    ]];
    rows.extend(audit.entries.iter().map(|e| {
        [
            e.seq.to_string(),
            e.time.clone(),
            e.who.clone(),
            e.kind.to_string(),
            e.namespace.clone().unwrap_or_else(|| "-".to_owned()),
            e.what.clone(),
            e.details
                .get("reason")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("")
                .to_owned(),
        ]
    }));
    table(&rows)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        aggregator::{Aggregator, Options},
        api::AppState,
        audit::{AuditLog, Kind, NewEntry},
        metrics::Metrics,
    };

    #[test]
    fn weir_audit_reads_the_agents_log_filtered() {
        let metrics = Arc::new(Metrics::new());
        let log = Arc::new(AuditLog::in_memory());
        log.append(
            NewEntry::new("alice", Kind::ModeChange, "observe -> enforce").namespace("shop"),
        )
        .unwrap();
        log.append(
            NewEntry::new("guard", Kind::Revert, "enforce -> audit")
                .namespace("shop")
                .details(serde_json::json!({ "reason": "dropped learned edge shop/web -> shop/db TCP/5432" })),
        )
        .unwrap();
        log.append(NewEntry::new("bob", Kind::Reject, "reject x").namespace("blog"))
            .unwrap();
        let state = AppState::new(
            Arc::new(Aggregator::new(Options::default(), Arc::clone(&metrics))),
            metrics,
            Arc::default(),
            "node",
        )
        .with_audit(log);
        let server = super::super::testing::serve(state);
        let mut url = endpoint(&server.parse().unwrap(), &["api", "audit"]).unwrap();
        url.query_pairs_mut()
            .append_pair("namespace", "shop")
            .append_pair("kind", "revert");
        let audit: Audit = Client::new().unwrap().get_json(&url, "audit").unwrap();
        assert_eq!(audit.entries.len(), 1);
        let text = render(&audit);
        assert!(text.contains("guard"), "{text}");
        assert!(
            text.contains("dropped learned edge shop/web -> shop/db TCP/5432"),
            "{text}"
        );
        assert!(!text.contains("alice"), "{text}");

        url.set_query(Some("kind=promotion"));
        let error = Client::new().unwrap().get(&url).unwrap_err().to_string();
        assert!(error.contains("kind"), "{error}");
    }
}
