use std::process::ExitCode;

use clap::Parser;
use weir_agent::{cli, telemetry};

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let format = cli.log_format;
    telemetry::init(format);
    match cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            telemetry::report_fatal(format, &error);
            ExitCode::from(2)
        }
    }
}
