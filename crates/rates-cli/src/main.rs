//! The `rates` command: parse the arguments, run, map the outcome to an exit
//! code (0 all good, 1 some items failed, 2 bad usage or input, 130 and 143
//! stopped by Ctrl-C and SIGTERM).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // A `process-pool` worker is this program started again: serve tasks
    // and exit. Otherwise this returns at once.
    concur::worker_main(rates_cli::worker_registry());
    rates_cli::main_with(rates_cli::Cli::parse())
}
