//! Logging setup: `tracing` to stderr, filtered by `RUST_LOG`.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Log output format.
#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Install the global subscriber. `log` records (aya emits through `log`)
/// are bridged by tracing-subscriber's `tracing-log` feature.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,aya=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
    };
    // A second init (tests) keeps the first subscriber; nothing to report.
    drop(result);
}

/// Print the error a command ends with, once: as a `weir: ...` line for
/// people (whatever `RUST_LOG` says), or as a log record when the logs are
/// JSON (a collector reads one format) and errors are logged.
pub fn report_fatal(format: LogFormat, error: &anyhow::Error) {
    if matches!(format, LogFormat::Json) && tracing::enabled!(tracing::Level::ERROR) {
        tracing::error!("{error:#}");
        return;
    }
    #[expect(clippy::print_stderr, reason = "the error is the CLI's output")]
    {
        eprintln!("weir: {error:#}");
    }
}
