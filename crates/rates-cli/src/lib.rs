//! The `rates` command line: a thin layer of argument parsing over the
//! `rates`, `rates-server` and `concur` crates. `main` calls [`main_with`];
//! tests call [`Cli::parse_from`] and [`run`] in-process.

mod bench;
pub mod cli;
mod fetch;
mod history;
pub mod listings;
mod plot;
mod session;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use rates::Dataset;
use rates_server::{RateLimit, ServerOptions};

pub use fetch::FetchArgs;

/// Exchange rates with every concurrency model of the chapter.
#[derive(Debug, Parser)]
#[command(name = "rates", version, about, propagate_version = true)]
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
    pub faults: FaultArgs,
    /// A connection must send a whole request head within this long (from
    /// accept, or from the first byte of a keep-alive connection's next request).
    #[arg(long, value_parser = cli::duration, default_value = "10s", value_name = "DURATION")]
    pub header_timeout: Duration,
    /// A keep-alive connection idle this long between requests is closed.
    #[arg(long, value_parser = cli::duration, default_value = "30s", value_name = "DURATION")]
    pub idle_timeout: Duration,
    /// At most this many connections open; at the cap a new one closes the
    /// connection that has waited longest for a request (or, if all are busy,
    /// waits in the listen backlog).
    #[arg(long, default_value_t = rates_server::ConnLimits::default().max_connections, value_name = "N")]
    pub max_connections: usize,
}

/// Fault injection of the server, shared by `serve` and (as `--sim-*`) by
/// the commands that start the embedded server.
#[derive(Debug, Args, Clone)]
pub struct FaultArgs {
    /// Every answer waits this long (e.g. 50ms).
    #[arg(long, value_parser = cli::duration, default_value = "0")]
    pub latency: Duration,
    /// Plus a random extra delay up to this much.
    #[arg(long, value_parser = cli::duration, default_value = "0")]
    pub jitter: Duration,
    /// This fraction of requests answers 500 (e.g. 0.2 or 20%).
    #[arg(long, value_parser = cli::fraction, default_value = "0")]
    pub fail_rate: f64,
    /// Per client IP, at most this many requests per second; over it, 429.
    #[arg(long, value_parser = cli::rate, value_name = "R")]
    pub rate_limit: Option<f64>,
    /// With --rate-limit: requests allowed at once.
    #[arg(long, default_value_t = 1, requires = "rate_limit", value_name = "B")]
    pub burst: u32,
}

impl FaultArgs {
    fn options(&self) -> ServerOptions {
        ServerOptions {
            latency: self.latency,
            jitter: self.jitter,
            fail_rate: self.fail_rate,
            rate_limit: self.rate_limit.map(|rate| RateLimit { rate, burst: self.burst }),
            ..Default::default()
        }
    }
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

/// Checks, before any work, that a file can be written at `path`: its
/// directory exists. Results are not fetched only to be lost.
fn check_out_path(flag: &str, path: &Path) -> Result<(), Usage> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if path.is_dir() {
        return Err(Usage(format!("{flag}: '{}' is a directory", path.display())));
    }
    if dir.is_dir() { Ok(()) } else { Err(Usage(format!("{flag}: no directory '{}'", dir.display()))) }
}

/// Writes `bytes` to a new file beside `path`, then renames it over `path`:
/// a reader never sees half a file, and a failed write leaves an older file
/// as it was.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("cannot write {}", path.display()))
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
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let ds = dataset(args.data.as_ref())?;
    let limits = rates_server::ConnLimits {
        header_timeout: args.header_timeout,
        idle_timeout: args.idle_timeout,
        max_connections: args.max_connections,
    };
    let opts = ServerOptions { limits, ..args.faults.options() };
    opts.validate().map_err(|e| Usage(e.to_string()))?;
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
