//! What `rates fetch` and `rates history` share: the embedded server or the
//! API of a [`RunConfig`], the fetcher, and one run of a model that Ctrl-C
//! or SIGTERM cancels cleanly.
//!
//! Both commands check every option before anything starts (into a
//! [`RunConfig`]), then run their requests through [`Session::run`], then
//! report failures with [`report`]: each failure once on stderr, a
//! summary, and the exit code
//! (0 all good, 1 some failed, 130 interrupted by Ctrl-C, 143 by SIGTERM).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rates::models::{AutoLimits, Learnt, auto_pool_size};
use rates::{Currency, Dataset, Failure, FetchError, Fetcher, Model, Outcome, Progress, RateRequest, Workers, models};
use rates_server::RunningServer;

use crate::Usage;
use crate::cli::WorkersArg;
use crate::config::{RunConfig, Target};

/// The currencies of a comma-separated `--flag` value, each one `known`:
/// a bad or unknown code is refused before any request.
pub(crate) fn known_currencies(
    known: impl Fn(Currency) -> bool,
    flag: &str,
    list: &str,
) -> Result<Vec<Currency>, Usage> {
    let codes = Currency::parse_list(list).map_err(|e| Usage(format!("--{flag}: {e}")))?;
    match codes.iter().find(|c| !known(**c)) {
        Some(c) => Err(Usage(format!("--{flag}: unknown currency '{c}'"))),
        None => Ok(codes),
    }
}

/// A fetcher and, unless `--api` names one, the embedded server it talks to.
pub(crate) struct Session {
    fetcher: Fetcher,
    /// `--rate auto`, from this burst.
    auto_rate: Option<u32>,
    // Stopped when the session ends, after the run.
    server: Option<RunningServer>,
    /// The queue whose workers run the requests (`--queue`), if any.
    queue: Option<String>,
    /// On the queue, the requests as a job that can be resumed (`history`).
    job: Option<Arc<crate::queue::QueueJob>>,
}

/// What a run produced.
pub(crate) struct Ran {
    /// One outcome per request, in the requests' order.
    pub outcomes: Vec<Outcome>,
    pub elapsed: Duration,
    /// A signal stopped the run: the requests it stopped are
    /// `FetchError::Cancelled`.
    pub stopped: Option<Stop>,
    /// What `--rate auto` and `--workers auto` settled on, if asked.
    pub learnt: Option<Learnt>,
}

impl Session {
    /// Starts the embedded server over the dataset `ds` gives (asked only
    /// then) unless the configuration names an API, and makes the fetcher
    /// every worker of the run shares.
    pub fn start(
        ds: impl FnOnce() -> anyhow::Result<Arc<Dataset>>,
        config: &RunConfig,
        progress: Option<Progress>,
    ) -> anyhow::Result<Self> {
        let (server, api) = match &config.target {
            Target::Remote(api) => (None, api.clone()),
            Target::Embedded(sim) => {
                let s = rates_server::spawn(ds()?, sim.clone()).context("cannot start the embedded server")?;
                let url = s.url().to_string();
                (Some(s), url)
            }
        };
        // On a queue, `--rate` is one limit for every caller of this API
        // through the same broker, kept on the broker.
        let (throttle, shared) = match (&config.queue, config.throttle) {
            (Some(url), Some(q)) => (None, Some(crate::queue::shared_limit(url, &api, q)?)),
            (_, q) => (q.map(|q| q.throttle()).transpose()?, None),
        };
        let mut fetcher = Fetcher::new(&api, config.client)?.with_retry(config.retry).with_throttle(throttle);
        if let Some(limit) = shared {
            fetcher = fetcher.with_shared_limit(limit);
        }
        if let Some(p) = progress {
            fetcher = fetcher.with_progress(p);
        }
        let auto_rate = config.auto_rate.map(|b| b.get());
        Ok(Session { fetcher, auto_rate, server, queue: config.queue.clone(), job: None })
    }

    /// On a queue, runs the requests as `job`, which a later run can resume.
    pub fn with_job(mut self, job: Arc<crate::queue::QueueJob>) -> Self {
        self.job = Some(job);
        self
    }

    /// Runs `requests` with `model`. Ctrl-C or SIGTERM cancels the run: no
    /// new request starts, no throttle wait or backoff goes on, those in
    /// flight are dropped (async models) or finish (blocking ones), and the
    /// outcomes that arrived are returned. A second signal ends the process
    /// at once.
    pub fn run(self, model: Model, requests: &[RateRequest], workers: WorkersArg) -> anyhow::Result<Ran> {
        // `--workers auto`: the model's pool is the most the limit may
        // learn, and the limit decides how many of its workers send at once.
        let (workers, auto_workers) = match workers {
            WorkersArg::Fixed(w) => (w, None),
            WorkersArg::Auto => {
                let most = auto_pool_size(model);
                (Workers::Bounded(most), Some(most))
            }
        };
        let auto = AutoLimits::new(self.auto_rate, auto_workers);
        let fetcher = Arc::new(auto.apply(self.fetcher));
        // A small runtime listens for the signals; the models run on this
        // thread (the async ones on a runtime of their own).
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let cancel = fetcher.cancel().clone();
        let mut signals = Signals::install(&rt)?;
        let stop = Arc::new(std::sync::OnceLock::new());
        rt.spawn({
            let stop = Arc::clone(&stop);
            async move {
                let first = signals.next().await;
                let _ = stop.set(first);
                cancel.cancel();
                let second = signals.next().await;
                eprintln!("rates: {}: stopping at once", second.name());
                crate::output::remove_pending();
                std::process::exit(second.exit_code().into());
            }
        });
        let started = Instant::now();
        let outcomes = match (&self.queue, &self.job) {
            (None, _) => models::run(model, &fetcher, requests, workers),
            (Some(url), Some(job)) => crate::queue::run_job(url, &fetcher, requests, workers, job)?,
            (Some(url), None) => crate::queue::run(url, &*fetcher, requests, workers)?,
        };
        let elapsed = started.elapsed();
        let stopped = stop.get().copied();
        rt.shutdown_background();
        drop(self.server);
        Ok(Ran { outcomes, elapsed, stopped, learnt: auto.learnt() })
    }
}

/// A signal that stops a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Ctrl-C.
    Interrupt,
    /// What service managers and `timeout` send.
    Terminate,
}

impl Stop {
    fn name(self) -> &'static str {
        match self {
            Stop::Interrupt => "interrupted",
            Stop::Terminate => "terminated",
        }
    }

    /// 128 + the signal's number, as a shell reports a command it stopped.
    fn exit_code(self) -> u8 {
        match self {
            Stop::Interrupt => 130,
            Stop::Terminate => 143,
        }
    }
}

/// SIGINT and SIGTERM, their handlers installed at once: a signal that
/// arrives before the first request still stops the run cleanly instead of
/// killing the process.
struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn install(rt: &tokio::runtime::Runtime) -> std::io::Result<Self> {
        let _in_runtime = rt.enter();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals { int: signal(SignalKind::interrupt())?, term: signal(SignalKind::terminate())? })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// The next signal.
    async fn next(&mut self) -> Stop {
        #[cfg(unix)]
        {
            tokio::select! {
                Some(()) = self.int.recv() => Stop::Interrupt,
                Some(()) = self.term.recv() => Stop::Terminate,
                else => std::future::pending().await,
            }
        }
        #[cfg(not(unix))]
        {
            match tokio::signal::ctrl_c().await {
                Ok(()) => Stop::Interrupt,
                Err(_) => std::future::pending().await,
            }
        }
    }
}

/// Names each failure once on stderr (`label: reason (after N attempts)`),
/// then a summary, and gives the exit code: 0 when nothing failed, 130 or
/// 143 when Ctrl-C or SIGTERM stopped the run, 1 otherwise. `ok` counts
/// what was written; cancelled items are counted here, and named by the
/// caller (as bases, or as ranges of days).
pub(crate) fn report<'a>(
    ok: usize,
    failures: impl IntoIterator<Item = (String, &'a Failure)>,
    stopped: Option<Stop>,
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
    if let Some(stop) = stopped {
        eprintln!("rates: {}: {ok} ok, {failed} failed, {cancelled} cancelled", stop.name());
        return ExitCode::from(stop.exit_code());
    }
    if failed + cancelled == 0 {
        return ExitCode::SUCCESS;
    }
    eprintln!("rates: {ok} ok, {failed} failed");
    ExitCode::FAILURE
}
