//! The `rates` command line: a thin layer of argument parsing over the
//! `rates`, `rates-server` and `concur` crates. `main` calls [`main_with`]
//! (or [`parse_error`] when the arguments are refused); tests call
//! [`Cli::parse_from`] and [`run`] in-process. The exit codes are
//! [`exit`]'s.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bench;
mod cache;
mod config;
pub mod exit;
mod fetch;
pub mod flags;
mod history;
pub mod listings;
pub mod logging;
mod output;
pub mod parse;
mod plot;
mod queue;
mod queue_url;
mod session;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use std::io::Write;

use clap::{Args, CommandFactory, Parser, Subcommand};
use rates_core::Dataset;

pub use fetch::FetchArgs;

/// Examples and exit codes after each subcommand's `--help`.
const FETCH_HELP: &str = concat!(
    "\
Examples:
  rates fetch --model thread-pool --workers 4
  rates fetch --format json --date 2018-10-12 --bases USD,EUR
  rates -v fetch --sim-fail-rate 0.3 --retries 3     # each retry logged on stderr
  rates -v fetch --rate auto --sim-rate-limit 2       # the limit learnt from 429s, each change logged

",
    exit::help!()
);
const SERVE_HELP: &str = "\
Examples:
  rates serve --addr 127.0.0.1:8080
  rates serve --latency 50ms --fail-rate 0.1 --rate-limit 2 --burst 4
  rates -q serve --max-connections 256          # no access log
  rates serve --latency 20ms --capacity 8       # 8 answered at once, the rest queue

Metrics in Prometheus' text format at /metrics.

Exit codes:
  0    stopped by Ctrl-C or SIGTERM (requests in flight were finished)
  1    cannot listen on the address
  2    bad usage or input, refused before listening";
const HISTORY_HELP: &str = concat!(
    "\
Examples:
  rates history --base USD --symbols EUR,PLN --from 2020-01-01 --to 2020-12-31 --plot usd.svg
  rates history --base EUR --symbols USD --from 2024-01-01 --to 2024-03-31 --format json --out q1.json
  rates history --base USD --symbols EUR --from 2000-01-01 --to 2024-12-31 --rate 2 --api https://api.vatcomply.com
  rates history --base USD --symbols EUR --from 2000-01-01 --to 2024-12-31 --rate auto --api https://api.vatcomply.com

",
    exit::help!()
);
const BENCH_HELP: &str = concat!(
    "\
Examples:
  rates bench
  rates bench --models sync,async --requests 1000 --sim-latency 20ms --workers 16
  rates bench --workload cpu --json --plot cpu.svg
  rates bench --models thread-pool,async --auto --sim-capacity 8   # each beside its auto row

",
    exit::help!()
);
const COMPLETIONS_HELP: &str = "\
Examples:
  rates completions bash > ~/.local/share/bash-completion/completions/rates
  rates completions zsh > ~/.zfunc/_rates
  rates completions fish > ~/.config/fish/completions/rates.fish";
const MAN_HELP: &str = "\
Examples:
  rates man | man -l -
  rates man --dir man/man1                # rates.1 and one page per subcommand";

const CACHE_HELP: &str = "\
Examples:
  rates cache info
  rates cache clear --cache /tmp/rates-store

Exit codes:
  0    done
  1    the store cannot be read or cleared
  2    bad usage or input";
const WORKER_HELP: &str = "\
Examples:
  rates worker --queue redis://127.0.0.1:6379/0 --concurrency 8
  rates -v worker --queue-file ~/.rates-queue --allow-api http://api:8080 --claim-after 1m

Exit codes:
  0    drained after Ctrl-C or SIGTERM: what it held was finished and acknowledged
  1    the broker cannot be reached or was lost
  2    bad usage or input";
const QUEUE_HELP: &str = "\
Examples:
  rates queue status --queue redis://127.0.0.1:6379/0
  rates queue status --queue redis://broker:6379/0

Exit codes:
  0    done
  1    the broker cannot be reached
  2    bad usage or input";

/// Exchange rates with every concurrency model of the chapter.
#[derive(Debug, Parser)]
#[command(
    name = "rates",
    version,
    about,
    propagate_version = true,
    after_help = concat!(exit::help!(), "\n\n", "Logging (stderr): -v shows each retry and its reason, 429s with their
Retry-After, throttle waits over a second and respawned workers; -vv debug;
-q errors only. Without -v or -q, RUST_LOG sets the filter
(e.g. RUST_LOG=rates::retry=info).")
)]
pub struct Cli {
    /// How much to log on stderr.
    #[command(flatten)]
    pub verbosity: logging::Verbosity,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch the rates of several bases, with any concurrency model.
    #[command(after_help = FETCH_HELP)]
    Fetch(FetchArgs),
    /// Serve the rates API over the ECB dataset, with fault injection.
    #[command(after_help = SERVE_HELP)]
    Serve(ServeArgs),
    /// A base's rates for every business day of a range, one request per weekday.
    #[command(after_help = HISTORY_HELP)]
    History(history::HistoryArgs),
    /// Compare the models on one workload: time, CPU, memory, errors.
    #[command(after_help = BENCH_HELP)]
    Bench(bench::BenchArgs),
    /// The local store of an external API's answers: where it is, what it holds; clear it.
    #[command(after_help = CACHE_HELP)]
    Cache(cache::CacheArgs),
    /// Print a shell completion script on stdout.
    #[command(after_help = COMPLETIONS_HELP)]
    Completions(CompletionsArgs),
    /// Print the man page (roff) on stdout, or write one per subcommand.
    #[command(after_help = MAN_HELP)]
    Man(ManArgs),
    /// Serve a Redis queue: run the requests of `--queue` runs from any host.
    #[command(after_help = WORKER_HELP)]
    Worker(worker::WorkerArgs),
    /// Look at a Redis queue.
    #[command(after_help = QUEUE_HELP)]
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
    /// The faults the server injects.
    #[command(flatten)]
    pub faults: flags::FaultFlags,
    /// The server's limits on connections.
    #[command(flatten)]
    pub limits: flags::ConnFlags,
}

/// Options of `rates completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Options of `rates man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write rates.1 and rates-SUBCOMMAND.1 into this directory instead.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
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
    rates_core::models::registry().register::<bench::CpuWork>()
}

/// Runs a parsed command line and returns its exit code.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Fetch(args) => fetch::run(args),
        Command::Serve(args) => serve(args),
        Command::History(args) => history::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Cache(args) => cache::run(args),
        Command::BenchRun(args) => bench::run_one(args),
        Command::Worker(args) => worker::run(args),
        Command::Queue(args) => queue::run_command(args),
        Command::Completions(args) => {
            // Into memory first: the generator panics if a write fails.
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "rates", &mut script);
            print_all(&script)
        }
        Command::Man(args) => man(args),
    }
}

/// `rates man`: the page of `rates` on stdout, or every page into a directory.
fn man(args: ManArgs) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let cmd = Cli::command();
    match args.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir).with_context(|| format!("cannot write to {}", dir.display()))?;
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut page)?;
            return print_all(&page);
        }
    }
    Ok(exit::code(exit::SUCCESS))
}

/// Writes `bytes` to stdout. A reader that stops early (`rates man | head`)
/// is no error.
fn print_all(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(exit::code(exit::SUCCESS)),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let ds = dataset(args.data.as_ref())?;
    let opts = config::serve_options(&args.faults, &args.limits)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(rates_server::serve(&args.addr, ds, opts))?;
    Ok(exit::code(exit::SUCCESS))
}

/// Runs `cli`, prints any error as one line on stderr, and maps it to an
/// exit code: 2 for bad usage or input, 1 for anything else.
pub fn main_with(cli: Cli) -> ExitCode {
    let serving = matches!(cli.command, Command::Serve(_));
    logging::init(cli.verbosity, serving, std::env::var("RUST_LOG").ok().as_deref());
    raise_open_files_limit();
    // Still one thread here, so growing the table waits for no one.
    let _ = concur::descriptors::reserve(DESCRIPTOR_TABLE);
    match run(cli) {
        Ok(code) => code,
        // A reader that stopped early (`rates fetch | head -1`) is no
        // failure of ours: stop quietly, as other Unix tools do.
        Err(e) if e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(is_broken_pipe)) => {
            exit::code(exit::SUCCESS)
        }
        Err(e) => {
            eprintln!("rates: {e:#}");
            exit::code(if e.downcast_ref::<Usage>().is_some() { exit::USAGE } else { exit::FAILED })
        }
    }
}

/// Reports arguments clap refused and gives the exit code: a bad value is
/// one line on stderr naming the flag and the value, [`exit::USAGE`]; help
/// and version go to stdout; other mistakes (an unknown flag, a missing
/// one) are shown as clap shows them, with its hints.
pub fn parse_error(e: clap::Error) -> ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let source = std::error::Error::source(&e).map(ToString::to_string);
    let flag = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg.split(' ').next().map(str::to_owned),
        _ => None,
    };
    match (e.kind(), flag, source) {
        (ErrorKind::ValueValidation, Some(flag), Some(why)) => {
            let value = match e.get(ContextKind::InvalidValue) {
                Some(ContextValue::String(v)) if !why.contains(&format!("'{v}'")) => format!("invalid value '{v}': "),
                _ => String::new(),
            };
            eprintln!("rates: {flag}: {value}{why}");
            exit::code(exit::USAGE)
        }
        _ => {
            let _ = e.print();
            exit::code(if e.use_stderr() { exit::USAGE } else { exit::SUCCESS })
        }
    }
}

fn is_broken_pipe(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe
}

/// Descriptors the table is grown to at start-up (see
/// `concur::descriptors`): a storm of 8,000 requests with the embedded
/// server in the same process, which holds both ends of each connection.
/// 128 KiB of kernel memory; past it the table still grows, by doubling.
const DESCRIPTOR_TABLE: usize = 16_384;

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
