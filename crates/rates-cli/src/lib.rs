//! The `rates` command line: a thin layer of argument parsing over the
//! `rates`, `rates-server` and `concur` crates. `main` calls [`main_with`];
//! tests call [`Cli::parse_from`] and [`run`] in-process.

#![forbid(unsafe_code)]

mod bench;
pub mod cli;
mod config;
mod fetch;
pub mod flags;
mod history;
pub mod listings;
mod output;
mod plot;
mod queue;
mod session;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use rates::Dataset;

pub use fetch::FetchArgs;

/// What the exit code says, for `--help`.
const EXIT_CODES: &str = "\
Exit codes:
  0    all good
  1    some items failed (the others are still written)
  2    bad usage or input, refused before any request
  130  stopped by Ctrl-C (what arrived is written)
  143  stopped by SIGTERM (what arrived is written)";

/// Exchange rates with every concurrency model of the chapter.
#[derive(Debug, Parser)]
#[command(name = "rates", version, about, propagate_version = true, after_help = EXIT_CODES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch the rates of several bases, with any concurrency model.
    Fetch(FetchArgs),
    /// Serve the rates API over the ECB dataset, with fault injection.
    Serve(ServeArgs),
    /// A base's rates for every business day of a range, one request per weekday.
    History(history::HistoryArgs),
    /// Compare the models on one workload: time, CPU, memory, errors.
    Bench(bench::BenchArgs),
    /// Serve a Redis queue: run the requests of `--queue` runs from any host.
    Worker(worker::WorkerArgs),
    /// Look at a Redis queue.
    Queue(queue::QueueArgs),
    /// One model once, measured (what `bench` runs in a child process).
    #[command(hide = true)]
    BenchRun(bench::RunArgs),
}

/// Options of `rates serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// A newer eurofxref-hist.csv or .zip to serve instead of the embedded one.
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    #[command(flatten)]
    pub faults: flags::FaultFlags,
    #[command(flatten)]
    pub limits: flags::ConnFlags,
}

/// Bad usage or input: reported as one line, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// Loads `--data` or the embedded dataset; a bad file is a usage error.
fn dataset(path: Option<&PathBuf>) -> anyhow::Result<Arc<Dataset>> {
    match path {
        None => Ok(Dataset::embedded()),
        Some(p) => {
            Dataset::load(p).map(Arc::new).map_err(|e| Usage(format!("bad dataset {}: {e}", p.display())).into())
        }
    }
}

/// Every task a `rates` worker process can run.
pub fn worker_registry() -> concur::Registry {
    rates::models::registry().register::<bench::CpuWork>()
}

/// Runs a parsed command line and returns its exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Fetch(args) => fetch::run(args),
        Command::Serve(args) => serve(args),
        Command::History(args) => history::run(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchRun(args) => bench::run_one(args),
        Command::Worker(args) => worker::run(args),
        Command::Queue(args) => queue::run_command(args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let ds = dataset(args.data.as_ref())?;
    let opts = config::serve_options(&args.faults, &args.limits)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(rates_server::serve(&args.addr, ds, opts))?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `cli`, prints any error as one line on stderr, and maps it to an
/// exit code: 2 for bad usage or input, 1 for anything else.
pub fn main_with(cli: Cli) -> ExitCode {
    raise_open_files_limit();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rates: {e:#}");
            if e.downcast_ref::<Usage>().is_some() { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}

/// Raises the soft limit on open files to the hard one. With unlimited
/// concurrency every request holds a connection, and with the embedded
/// server both of its ends are in this process: the common soft limit of
/// 1024 would refuse a few hundred requests in flight that the machine
/// allows. Left as it is if that cannot be done.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
