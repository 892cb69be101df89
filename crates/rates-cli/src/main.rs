//! The `rates` command: parse the arguments, run, map the outcome to an exit
//! code (`rates_cli::exit`).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // A `process-pool` worker is this program started again: serve tasks
    // and exit. Otherwise this returns at once.
    concur::worker_main(rates_cli::worker_registry());
    match rates_cli::Cli::try_parse() {
        Ok(cli) => rates_cli::main_with(cli),
        Err(e) => rates_cli::parse_error(e),
    }
}
