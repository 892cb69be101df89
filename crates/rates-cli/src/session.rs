//! What `rates fetch` and `rates history` share: the embedded server or the
//! API of a [`RunConfig`], the fetcher, and one run of a model that Ctrl-C
//! or SIGTERM cancels cleanly.
//!
//! Both commands check every option before anything starts (into a
//! [`RunConfig`]), then run their requests through [`Session::run`], then
//! report failures with [`report`]: each failure once on stderr, a
//! summary, and the exit code ([`crate::exit`]).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rates_core::models::{AutoLimits, Learnt, auto_pool_size};
use rates_core::{
    Currency, Dataset, Failure, FetchError, Fetcher, Model, Outcome, Progress, RateRequest, Workers, models,
};
use rates_server::RunningServer;
use rates_server::signals::Stop;

use crate::cache::NoCodes;
use crate::config::{RunConfig, Target};
use crate::parse::WorkersArg;
use crate::{Usage, exit};

/// The currencies of a comma-separated `--flag` value, checked for their
/// syntax alone (three letters, none twice): whether the API accepts them
/// is [`Accepted::check`]'s question.
pub(crate) fn parse_currencies(flag: &str, list: &str) -> Result<Vec<Currency>, Usage> {
    Currency::parse_list(list).map_err(|e| Usage(format!("--{flag}: {e}")))
}

/// The codes a run's API accepts as a base or a symbol: the one answer to
/// "is this code good?" of `fetch` and `history` (on a queue too), asked
/// before any request for rates.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Accepted {
    codes: Vec<Currency>,
    /// Whose list it is, for the line that refuses a code.
    whose: String,
}

/// The most codes taken from an API's `/currencies`: ISO 4217 has fewer
/// than 200, and an answer listing more is not one.
pub(crate) const MAX_CODES: usize = 300;

/// The most codes a refusal lists.
const CODES_SHOWN: usize = 40;

impl Accepted {
    /// The codes the API supports (`rates_core::SUPPORTED`) that `ds` has (the
    /// embedded server's data, a `--data` file that may lack some).
    pub fn supported(ds: Option<&Dataset>) -> Accepted {
        let codes = rates_core::SUPPORTED.iter().copied().filter(|c| ds.is_none_or(|ds| ds.knows(*c))).collect();
        Accepted { codes, whose: "the API supports".into() }
    }

    /// Whether `c` is accepted.
    pub fn contains(&self, c: Currency) -> bool {
        self.codes.contains(&c)
    }

    /// Refuses the first of `codes` that is not accepted, naming it, the
    /// flag and the codes that are.
    pub fn check(&self, flag: &str, codes: &[Currency]) -> Result<(), Usage> {
        let Some(bad) = codes.iter().find(|c| !self.contains(**c)) else {
            return Ok(());
        };
        let shown: Vec<&str> = self.codes.iter().take(CODES_SHOWN).map(Currency::as_str).collect();
        let more = if self.codes.len() > CODES_SHOWN { ", ..." } else { "" };
        Err(Usage(format!(
            "--{flag}: unsupported currency '{bad}': {} {} codes: {}{more}",
            self.whose,
            self.codes.len(),
            shown.join(", ")
        )))
    }
}

/// The codes of a `/currencies` answer's keys, if they are codes: each
/// three upper-case letters (the API's codes are case-sensitive), at least
/// one and at most [`MAX_CODES`]. The answer is untrusted: anything else
/// is refused whole.
pub(crate) fn codes_of<'a>(keys: impl ExactSizeIterator<Item = &'a str>) -> Result<Vec<Currency>, NoCodes> {
    if keys.len() == 0 || keys.len() > MAX_CODES {
        return Err(NoCodes(format!("{} codes listed, expected 1 to {MAX_CODES}", keys.len())));
    }
    let code = |k: &str| {
        let shown: String = k.chars().take(12).collect();
        match k.len() == 3 && k.bytes().all(|b| b.is_ascii_uppercase()) {
            true => k.parse::<Currency>().map_err(|_| NoCodes(format!("'{shown}' is not a currency code"))),
            false => Err(NoCodes(format!("'{}' is not a currency code", shown.escape_debug()))),
        }
    };
    keys.map(code).collect()
}

/// The codes a run's API accepts ([`Accepted`]). The embedded server
/// accepts the supported codes its data has (`ds`). An external API says
/// which in its `/currencies`, asked once (a single attempt, with the
/// client's timeout) and kept in `store` for a day ([`crate::cache::api_codes`]);
/// if that cannot be asked or makes no sense, the supported codes are
/// taken and a `-v` line says why: a run is never failed for it.
pub(crate) fn accepted_codes(
    config: &RunConfig,
    ds: Option<&Dataset>,
    store: Option<&rates_core::Store>,
    offline: bool,
) -> Accepted {
    let api = match &config.target {
        Target::Embedded(_) => return Accepted::supported(ds),
        Target::Remote(api) => api,
    };
    let ask = || {
        let client = rates_core::BlockingClient::new(api, config.client).map_err(|e| NoCodes(e.to_string()))?;
        let table = client.currencies().map_err(|e| NoCodes(e.to_string()))?;
        codes_of(table.keys().map(String::as_str))
    };
    match crate::cache::api_codes(store, api, offline, rates_core::store::unix_now(), ask) {
        Ok(codes) => Accepted { codes, whose: format!("{api}/currencies lists") },
        Err(NoCodes(why)) => {
            verbose(&format!(
                "{api}/currencies: {why}: checking codes against the {} supported",
                rates_core::SUPPORTED.len()
            ));
            Accepted::supported(None)
        }
    }
}

/// A line on stderr when `-v` (or `RUST_LOG`) asks for informational
/// lines: what this crate says of itself, where it has no logger of its own.
pub(crate) fn verbose(line: &str) {
    use tracing_subscriber::filter::LevelFilter;
    if LevelFilter::current() >= LevelFilter::INFO {
        eprintln!("rates: {line}");
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
    /// The requests in flight at once.
    workers: WorkersArg,
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
    /// The server's limit, learnt from its 429s by a run without
    /// `--rate auto` that met them.
    pub limited: Option<Learnt>,
}

impl Ran {
    /// Says on stderr what the run learnt of the limits: what `auto`
    /// settled on, and the limit a server's 429s taught a run that had no
    /// `--rate auto`, as the options that keep within it next time.
    pub fn say_learnt(&self) {
        if let Some(learnt) = &self.learnt {
            eprintln!("rates: {learnt}");
        }
        if let Some(limited) = &self.limited {
            eprintln!("rates: the server refused requests past its limit (429); {limited} keeps within it");
        }
    }
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
            (_, q) => (q.map(crate::config::throttle), None),
        };
        let mut fetcher = Fetcher::new(&api, config.client)?.with_retry(config.retry).with_throttle(throttle);
        if let Some(limit) = shared {
            fetcher = fetcher.with_shared_limit(limit);
        }
        if let Some(p) = progress {
            fetcher = fetcher.with_progress(p);
        }
        let auto_rate = config.auto_rate.map(|b| b.get());
        Ok(Session { fetcher, auto_rate, server, queue: config.queue.clone(), workers: config.workers, job: None })
    }

    /// Writes the run to `trace`, if any (`--trace`).
    pub fn with_trace(mut self, trace: Option<rates_core::Trace>) -> Self {
        self.fetcher = self.fetcher.with_trace(trace);
        self
    }

    /// On a queue, runs the requests as `job`, which a later run can resume.
    pub fn with_job(mut self, job: Arc<crate::queue::QueueJob>) -> Self {
        self.job = Some(job);
        self
    }

    /// Runs `requests` with `model`, as many in flight at once as the
    /// configuration's `--workers`. Ctrl-C or SIGTERM cancels the run: no
    /// new request starts, no throttle wait or backoff goes on, those in
    /// flight are dropped (async models) or finish (blocking ones), and the
    /// outcomes that arrived are returned. A second signal ends the process
    /// at once ([`exit::on_signals`]).
    pub fn run(self, model: Model, requests: &[RateRequest]) -> anyhow::Result<Ran> {
        // `--workers auto`: the model's pool is the most the limit may
        // learn, and the limit decides how many of its workers send at once.
        let (workers, auto_workers) = match self.workers {
            WorkersArg::Fixed(w) => (w, None),
            WorkersArg::Auto => {
                let most = auto_pool_size(model);
                (Workers::Bounded(most), Some(most.get()))
            }
        };
        let auto = AutoLimits::new(self.auto_rate, auto_workers);
        let fetcher = Arc::new(auto.apply(self.fetcher));
        // The models run on this thread (the async ones on a runtime of
        // their own); the signals are heard on a thread of the watch's.
        let cancel = fetcher.cancel().clone();
        let signals = exit::on_signals("rates", move |_| cancel.cancel())?;
        let started = Instant::now();
        let outcomes = match (&self.queue, &self.job) {
            (None, _) => models::run(model, &fetcher, requests, workers),
            (Some(url), Some(job)) => crate::queue::run_job(url, &fetcher, requests, workers, job)?,
            (Some(url), None) => crate::queue::run(url, &*fetcher, requests, workers)?,
        };
        let elapsed = started.elapsed();
        let stopped = signals.stopped();
        let limited = fetcher.learnt_limit().map(|rate| Learnt { rate: Some(rate), workers: None });
        drop(signals);
        drop(self.server);
        Ok(Ran { outcomes, elapsed, stopped, learnt: auto.learnt(), limited })
    }
}

/// Names each failure once on stderr (`label: reason (after N attempts)`),
/// then a summary, and gives the exit code: [`exit::SUCCESS`] when nothing
/// failed, [`exit::of_stop`] when Ctrl-C or SIGTERM stopped the run,
/// [`exit::FAILED`] otherwise. `ok` counts
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
        return exit::code(exit::of_stop(stop));
    }
    if failed + cancelled == 0 {
        return exit::code(exit::SUCCESS);
    }
    eprintln!("rates: {ok} ok, {failed} failed");
    exit::code(exit::FAILED)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Currency {
        s.parse().expect("three letters")
    }

    #[test]
    fn a_currencies_answer_gives_codes_or_is_refused_whole() {
        assert_eq!(codes_of(["EUR", "USD"].into_iter()), Ok(vec![c("EUR"), c("USD")]));
        for bad in [&["EUR", "usd"][..], &["EUR", "DOLLAR"], &["E1R"], &["EU"], &[""], &["ÉUR"], &[]] {
            assert!(codes_of(bad.iter().copied()).is_err(), "{bad:?}");
        }
        let many: Vec<String> = (0..=MAX_CODES)
            .map(|i| format!("A{}{}", (b'A' + (i / 26) as u8) as char, (b'A' + (i % 26) as u8) as char))
            .collect();
        let e = codes_of(many.iter().map(String::as_str)).expect_err("too many");
        assert!(e.0.contains(&(MAX_CODES + 1).to_string()), "{e:?}");
        assert!(codes_of(many[..MAX_CODES].iter().map(String::as_str)).is_ok());
        // A long key is shown short: the answer is untrusted.
        let long = "X".repeat(10_000);
        let e = codes_of([long.as_str()].into_iter()).expect_err("not a code");
        assert!(e.0.len() < 100, "{e:?}");
    }

    #[test]
    fn the_supported_codes_are_those_the_data_has_and_a_refusal_names_the_code() {
        let all = Accepted::supported(None);
        assert!(all.contains(c("USD")) && !all.contains(c("CYP")) && !all.contains(c("XYZ")));
        assert_eq!(all.codes.len(), rates_core::SUPPORTED.len());
        let ds = rates_core::Dataset::parse_csv("Date,USD,CYP,\n2030-01-02,1.0,0.5,\n").expect("a dataset");
        let some = Accepted::supported(Some(&ds));
        assert_eq!(some.codes, [c("EUR"), c("USD")]);
        assert_eq!(all.check("bases", &[c("USD"), c("EUR")]).ok(), Some(()));
        let e = all.check("symbols", &[c("USD"), c("CYP")]).expect_err("retired");
        assert!(e.0.starts_with("--symbols: unsupported currency 'CYP': the API supports 33 codes: EUR, USD,"), "{e}");
        assert_eq!(e.0.lines().count(), 1);
    }
}
