//! The `sluicegate` binary: parse the command line, set up logging, run the command,
//! print any error as `sluicegate: …`. `anyhow` lives only in this binary.
#![forbid(unsafe_code)]

mod cli;
mod dispatch;
mod process;

use std::process::ExitCode;

use clap::Parser;
use sluicegate::config::{self, spec::LogSpec};

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `run` takes its access-log settings from the config. A file that does not load
    // is reported by `dispatch` (with the logger up); here it just means no access log.
    let log = match &cli.command {
        Command::Run { config, .. } => config::load(config).map(|s| s.log).unwrap_or_default(),
        _ => LogSpec::default(),
    };
    // Writes what the access log still holds when dropped, at the end of main.
    let _access_log = match process::init_logging(log) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("sluicegate: cannot start the access log writer: {err}");
            return ExitCode::FAILURE;
        }
    };
    match dispatch::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("sluicegate: {err:#}");
            ExitCode::FAILURE
        }
    }
}
