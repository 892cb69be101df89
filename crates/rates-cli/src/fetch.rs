//! `rates fetch`: the chapter's application. Fetch the rates of each base
//! with the chosen model, print the chapter's lines (or JSON, or CSV), and
//! report each failure once.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use concur::Throttle;
use rates::{ClientConfig, Currency, Fetcher, Model, RateRequest, RetryPolicy, Workers, present};
use rates_server::{RateLimit, ServerOptions};

use crate::{Usage, cli, dataset};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The chapter's lines and the elapsed time.
    Table,
    /// A JSON array of the API's answers.
    Json,
    /// `date,base,SYM,...` rows.
    Csv,
}

/// Options of `rates fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The concurrency model: sync, thread-per-item, thread-pool, two-way-queues, process-pool, dummy-pool,
    /// async, async-executor.
    #[arg(long, default_value = "sync")]
    pub model: Model,
    /// Requests in flight at once for the pooled and async models (0 or "unlimited": all).
    #[arg(long, default_value = "4", value_parser = cli::workers)]
    pub workers: Workers,
    /// Base currencies, comma-separated.
    #[arg(long, default_value = rates::CHAPTER_CURRENCIES)]
    pub bases: String,
    /// Currencies to show, comma-separated.
    #[arg(long, default_value = rates::CHAPTER_CURRENCIES)]
    pub symbols: String,
    /// The day (YYYY-MM-DD); the latest when omitted.
    #[arg(long)]
    pub date: Option<String>,
    /// The API's base URL; without it an embedded server over the ECB data is started.
    #[arg(long, env = "RATES_API")]
    pub api: Option<String>,
    /// A newer eurofxref-hist.csv or .zip for the embedded server and for checking codes.
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// At most this many requests per second, across all workers.
    #[arg(long, value_parser = cli::rate, value_name = "R")]
    pub rate: Option<f64>,
    /// With --rate: requests allowed at once after a quiet spell.
    #[arg(long, default_value_t = 1, requires = "rate", value_name = "B")]
    pub burst: u32,
    /// Retries per request on 5xx, 429, timeouts and connection errors.
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// Time limit of one request.
    #[arg(long, value_parser = cli::duration, default_value = "10s")]
    pub timeout: Duration,
    /// Embedded server: latency of every answer.
    #[arg(long, value_parser = cli::duration, default_value = "100ms", conflicts_with = "api")]
    pub sim_latency: Duration,
    /// Embedded server: random extra latency up to this much.
    #[arg(long, value_parser = cli::duration, default_value = "0", conflicts_with = "api")]
    pub sim_jitter: Duration,
    /// Embedded server: fraction of requests that fail with 500.
    #[arg(long, value_parser = cli::fraction, default_value = "0", conflicts_with = "api")]
    pub sim_fail_rate: f64,
    /// Embedded server: requests per second allowed per client; over it, 429.
    #[arg(long, value_parser = cli::rate, value_name = "R", conflicts_with = "api")]
    pub sim_rate_limit: Option<f64>,
    /// Embedded server: burst of --sim-rate-limit.
    #[arg(long, default_value_t = 1, requires = "sim_rate_limit", value_name = "B")]
    pub sim_burst: u32,
}

/// The validated requests of a `fetch`: refused before any work if bad.
struct Plan {
    requests: Vec<RateRequest>,
    symbols: Vec<Currency>,
}

fn plan(args: &FetchArgs, ds: &rates::Dataset) -> Result<Plan, Usage> {
    let list = |what: &str, s: &str| -> Result<Vec<Currency>, Usage> {
        let codes = Currency::parse_list(s).map_err(|e| Usage(format!("--{what}: {e}")))?;
        match codes.iter().find(|c| !ds.knows(**c)) {
            Some(c) => Err(Usage(format!("--{what}: unknown currency '{c}'"))),
            None => Ok(codes),
        }
    };
    let bases = list("bases", &args.bases)?;
    let symbols = list("symbols", &args.symbols)?;
    let date = args.date.as_deref().map(rates::parse_date).transpose().map_err(|e| Usage(format!("--date: {e}")))?;
    let requests = bases.into_iter().map(|base| RateRequest { base, symbols: symbols.clone(), date }).collect();
    Ok(Plan { requests, symbols })
}

pub(crate) fn run(args: FetchArgs) -> anyhow::Result<ExitCode> {
    let ds = dataset(args.data.as_ref())?;
    let plan = plan(&args, &ds)?;
    let throttle = args
        .rate
        .map(|r| Throttle::new(r, args.burst).map(Arc::new))
        .transpose()
        .map_err(|e| Usage(format!("--rate/--burst: {e}")))?;
    let sim = ServerOptions {
        latency: args.sim_latency,
        jitter: args.sim_jitter,
        fail_rate: args.sim_fail_rate,
        rate_limit: args.sim_rate_limit.map(|rate| RateLimit { rate, burst: args.sim_burst }),
    };
    sim.validate().map_err(|e| Usage(e.to_string()))?;
    let config = ClientConfig { timeout: args.timeout, ..ClientConfig::default() };
    // Check the URL before starting anything.
    if let Some(api) = &args.api {
        rates::parse_api_url(api).map_err(|e| Usage(e.to_string()))?;
    }

    let server = match &args.api {
        Some(_) => None,
        None => Some(rates_server::spawn(ds, sim).context("cannot start the embedded server")?),
    };
    let api = args.api.as_deref().or(server.as_ref().map(|s| s.url())).unwrap_or_default();
    let retry = RetryPolicy { retries: args.retries, ..RetryPolicy::default() };
    let fetcher = Arc::new(
        Fetcher::new(api, config).map_err(|e| Usage(e.to_string()))?.with_retry(retry).with_throttle(throttle),
    );

    // One runtime runs the async models and listens for Ctrl-C, which
    // cancels the run: no new request starts, and what arrived is printed.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let cancel = fetcher.cancel().clone();
    rt.spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            cancel.cancel();
        }
    });
    let started = Instant::now();
    let outcomes = rt.block_on(rates::models::run_async(args.model, &fetcher, &plan.requests, args.workers));
    let elapsed = started.elapsed();
    let interrupted = fetcher.cancel().is_cancelled();
    rt.shutdown_background();
    drop(server);

    let answers: Vec<&rates::Rates> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Table => {
            for r in &answers {
                writeln!(out, "{}", present::chapter_line(r, &plan.symbols))?;
            }
            writeln!(out, "\n{}", present::elapsed_line(elapsed))?;
        }
        Format::Json => writeln!(out, "{}", present::json(&answers, &plan.symbols))?,
        Format::Csv => write!(out, "{}", present::csv(&answers, &plan.symbols))?,
    }
    out.flush()?;

    let failed: Vec<_> =
        plan.requests.iter().zip(&outcomes).filter_map(|(req, o)| o.as_ref().err().map(|f| (req, f))).collect();
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let mut n_cancelled = 0;
    for (req, failure) in &failed {
        if failure.error == rates::FetchError::Cancelled {
            n_cancelled += 1;
        } else {
            eprintln!("rates: {req}: {failure}");
        }
    }
    let n_failed = failed.len() - n_cancelled;
    if interrupted {
        eprintln!("rates: interrupted: {} ok, {n_failed} failed, {n_cancelled} cancelled", answers.len());
        // 128 + SIGINT, as a shell reports a command stopped by Ctrl-C.
        return Ok(ExitCode::from(130));
    }
    eprintln!("rates: {} ok, {n_failed} failed", answers.len());
    Ok(ExitCode::FAILURE)
}
