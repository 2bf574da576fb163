use std::process::ExitCode;

use clap::Parser;
use weir_agent::{cli, telemetry};

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    telemetry::init(cli.log_format);
    match cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            tracing::error!("{error:#}");
            // Errors also go to stderr plainly: a CLI user may have logs off.
            #[expect(clippy::print_stderr, reason = "the error is the CLI's output")]
            {
                eprintln!("weir: {error:#}");
            }
            ExitCode::from(2)
        }
    }
}
