//! What `rates fetch` and `rates history` share: the client's options
//! (API, throttle, retries, timeout), the embedded server's simulated
//! faults, and one run of a model that Ctrl-C cancels cleanly.
//!
//! Both commands check every option before anything starts, then run their
//! requests through [`Session::run`], then report failures with
//! [`report`]: each failure once on stderr, a summary, and the exit code
//! (0 all good, 1 some failed, 130 interrupted).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use concur::Throttle;
use rates::{ClientConfig, Currency, Dataset, Failure, FetchError, Fetcher, Model, Outcome, Progress, RateRequest};
use rates::{RetryPolicy, Workers, models};
use rates_server::{RateLimit, RunningServer, ServerOptions};

use crate::{Usage, cli};

/// Where the requests go and how each is made.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The API's base URL; without it an embedded server over the ECB data is started.
    #[arg(long, env = "RATES_API")]
    pub api: Option<String>,
    /// A newer eurofxref-hist.csv or .zip for the embedded server and for checking codes.
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
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
}

/// The embedded server's fault injection, to watch retries and throttling
/// work without a flaky network.
#[derive(Debug, Args)]
pub struct SimArgs {
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

impl SimArgs {
    fn options(&self) -> ServerOptions {
        ServerOptions {
            latency: self.sim_latency,
            jitter: self.sim_jitter,
            fail_rate: self.sim_fail_rate,
            rate_limit: self.sim_rate_limit.map(|rate| RateLimit { rate, burst: self.sim_burst }),
            ..Default::default()
        }
    }
}

/// The currencies of a comma-separated `--flag` value, each one the
/// dataset knows: a bad or unknown code is refused before any request.
pub(crate) fn known_currencies(ds: &Dataset, flag: &str, list: &str) -> Result<Vec<Currency>, Usage> {
    let codes = Currency::parse_list(list).map_err(|e| Usage(format!("--{flag}: {e}")))?;
    match codes.iter().find(|c| !ds.knows(**c)) {
        Some(c) => Err(Usage(format!("--{flag}: unknown currency '{c}'"))),
        None => Ok(codes),
    }
}

/// A fetcher and, unless `--api` names one, the embedded server it talks to.
pub(crate) struct Session {
    fetcher: Arc<Fetcher>,
    // Stopped when the session ends, after the run.
    server: Option<RunningServer>,
}

/// What a run produced.
pub(crate) struct Ran {
    /// One outcome per request, in the requests' order.
    pub outcomes: Vec<Outcome>,
    pub elapsed: Duration,
    /// Ctrl-C arrived: the requests it stopped are `FetchError::Cancelled`.
    pub interrupted: bool,
}

impl Session {
    /// Checks every option (a bad one is a [`Usage`] error), then starts
    /// the embedded server over `ds` unless `--api` is given.
    pub fn start(
        ds: Arc<Dataset>,
        client: &ClientArgs,
        sim: &SimArgs,
        progress: Option<Progress>,
    ) -> anyhow::Result<Self> {
        let throttle = client
            .rate
            .map(|r| Throttle::new(r, client.burst).map(Arc::new))
            .transpose()
            .map_err(|e| Usage(format!("--rate/--burst: {e}")))?;
        let sim = sim.options();
        sim.validate().map_err(|e| Usage(e.to_string()))?;
        if let Some(api) = &client.api {
            rates::parse_api_url(api).map_err(|e| Usage(e.to_string()))?;
        }

        let server = match &client.api {
            Some(_) => None,
            None => Some(rates_server::spawn(ds, sim).context("cannot start the embedded server")?),
        };
        let api = client.api.as_deref().or(server.as_ref().map(|s| s.url())).unwrap_or_default();
        let config = ClientConfig { timeout: client.timeout, ..ClientConfig::default() };
        let retry = RetryPolicy { retries: client.retries, ..RetryPolicy::default() };
        let mut fetcher =
            Fetcher::new(api, config).map_err(|e| Usage(e.to_string()))?.with_retry(retry).with_throttle(throttle);
        if let Some(p) = progress {
            fetcher = fetcher.with_progress(p);
        }
        Ok(Session { fetcher: Arc::new(fetcher), server })
    }

    /// Runs `requests` with `model`. Ctrl-C cancels the run: no new request
    /// starts, those in flight are dropped (async models) or finish (blocking
    /// ones), and the outcomes that arrived are returned.
    pub fn run(self, model: Model, requests: &[RateRequest], workers: Workers) -> anyhow::Result<Ran> {
        // One runtime runs the async models and listens for Ctrl-C.
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let cancel = self.fetcher.cancel().clone();
        let ctrl_c = interrupted(&rt)?;
        rt.spawn(async move {
            ctrl_c.await;
            cancel.cancel();
        });
        let started = Instant::now();
        let outcomes = rt.block_on(models::run_async(model, &self.fetcher, requests, workers));
        let elapsed = started.elapsed();
        let interrupted = self.fetcher.cancel().is_cancelled();
        rt.shutdown_background();
        drop(self.server);
        Ok(Ran { outcomes, elapsed, interrupted })
    }
}

/// A future that resolves on Ctrl-C, its handler installed now: a SIGINT
/// that arrives before the first request still cancels the run instead of
/// killing the process.
fn interrupted(rt: &tokio::runtime::Runtime) -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    let _in_runtime = rt.enter();
    #[cfg(unix)]
    {
        let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        Ok(async move {
            sigint.recv().await;
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// Names each failure once on stderr (`label: reason (after N attempts)`),
/// then a summary, and gives the exit code: 0 when nothing failed, 130
/// when Ctrl-C interrupted the run, 1 otherwise. `ok` counts what was
/// written; cancelled items are counted, not named.
pub(crate) fn report<'a>(
    ok: usize,
    failures: impl IntoIterator<Item = (String, &'a Failure)>,
    interrupted: bool,
) -> ExitCode {
    let (mut failed, mut cancelled) = (0, 0);
    for (label, failure) in failures {
        if failure.error == FetchError::Cancelled {
            cancelled += 1;
        } else {
            failed += 1;
            eprintln!("rates: {label}: {failure}");
        }
    }
    if interrupted {
        eprintln!("rates: interrupted: {ok} ok, {failed} failed, {cancelled} cancelled");
        // 128 + SIGINT, as a shell reports a command stopped by Ctrl-C.
        return ExitCode::from(130);
    }
    if failed + cancelled == 0 {
        return ExitCode::SUCCESS;
    }
    eprintln!("rates: {ok} ok, {failed} failed");
    ExitCode::FAILURE
}
