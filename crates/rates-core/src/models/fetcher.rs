//! The fetch job: [`Fetcher`] holds what every request of a run shares
//! (client, retry policy, throttle, the adaptive limits of `--rate auto`
//! and `--workers auto`, cancellation flag, progress hook) and does one
//! request in each model's setting, as a [`Job`]. [`FetchOnce`] is one
//! attempt as a pool task, for the multiprocessing models.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use concur::adaptive::{AdaptiveConcurrency, AdaptiveRate};
use concur::{CancelToken, Pool, Throttle};

use super::fetch_once::{FetchOnce, FetchStamped};
use super::pause::Pause;
use super::traced::{Stamp, Traced, timed, timed_async};
use super::{Job, Workers};
use crate::Trace;
use crate::{
    AsyncClient, BadUrl, BlockingClient, ClientConfig, FetchError, RateRequest, Rates, Reply, RetryPolicy,
    retry::Failure,
};

mod learn;

/// The result of fetching one item: its rates, or why it failed for good.
pub type Outcome = Result<Rates, Failure>;

/// Everything one fetch needs, shared by all workers of a run: the clients
/// (one connection pool each), the retry policy, the optional throttle and
/// the cancellation flag.
pub struct Fetcher {
    config: ClientConfig,
    client: BlockingClient,
    retry: RetryPolicy,
    throttle: Option<Arc<Throttle>>,
    shared_limit: Option<Arc<dyn SharedLimit>>,
    adaptive_rate: Option<Arc<AdaptiveRate>>,
    /// The server's limit, learnt from its first 429 when no `--rate auto`
    /// was asked: the run paces itself by it from then on.
    learnt_rate: OnceLock<AdaptiveRate>,
    /// No request before the last `Retry-After` has passed.
    pause: Pause,
    concurrency: Option<Arc<AdaptiveConcurrency>>,
    latency: Option<LatencySink>,
    cancel: CancelToken,
    progress: Option<Progress>,
    worker_program: Option<std::path::PathBuf>,
    stack_size: Option<usize>,
    trace: Option<Trace>,
}

/// The stack of a thread that fetches: 256 KiB. A request over `http://`
/// runs in 32 KiB (40 in a debug build), one over `https://` with a 4096-bit
/// RSA or a P-256 certificate in 48 (56), and with two intermediate
/// certificates over TLS 1.2 in 56 (64): the deepest frames are ureq's and
/// rustls' handshake, and each intermediate adds a few KiB. A quarter of a
/// MiB leaves four times that for the hooks that run on the same thread
/// (progress, latency sink, a shared limit's broker calls) and for a
/// panic's backtrace. Against the default
/// 2 MiB it takes page tables for 1,000 threads from 4.1 MiB to 0.7 and
/// their address space from 3.0 GiB to 1.2; resident memory is the same.
pub const REQUEST_STACK: usize = 256 * 1024;

/// A rate limit kept outside this process (such as `concur_redis::RedisThrottle`,
/// one limit for every caller on every host), with the local throttle's
/// contract: in any window `w`, at most `burst + rate·w` grants.
pub trait SharedLimit: Send + Sync {
    /// Blocks until a grant; `Err` if `cancel` was cancelled first.
    fn acquire_cancellable(&self, cancel: &CancelToken) -> Result<(), concur::Cancelled>;
}

/// Called with the time each answered attempt took, from its request to
/// its answer (the rate limit's waits and retries' backoff excluded).
pub type LatencySink = Arc<dyn Fn(Duration) + Send + Sync>;

/// Called once per item when it is done (ok or failed), from the thread or
/// task that fetched it: drives progress bars.
pub type Progress = Arc<dyn Fn(&Outcome) + Send + Sync>;

impl fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetcher")
            .field("api", &self.api())
            .field("retry", &self.retry)
            .field("throttle", &self.throttle)
            .field("cancelled", &self.cancel.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    /// A fetcher of the API at `api`, with the default retry policy, no
    /// throttle and a fresh cancellation flag.
    pub fn new(api: &str, config: ClientConfig) -> Result<Self, BadUrl> {
        Ok(Fetcher {
            config,
            client: BlockingClient::new(api, config)?,
            retry: RetryPolicy::default(),
            throttle: None,
            shared_limit: None,
            adaptive_rate: None,
            learnt_rate: OnceLock::new(),
            pause: Pause::default(),
            concurrency: None,
            latency: None,
            cancel: CancelToken::new(),
            progress: None,
            worker_program: None,
            stack_size: Some(REQUEST_STACK),
            trace: None,
        })
    }

    /// Retries failed attempts with `retry`.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Takes a token from `throttle` before every attempt (retries included:
    /// each is a request).
    pub fn with_throttle(mut self, throttle: Option<Arc<Throttle>>) -> Self {
        self.throttle = throttle;
        self
    }

    /// Takes a grant from `limit` before every attempt made on a thread
    /// (every model but `async`, and every run on a queue), after the local
    /// throttle if there is one: a limit shared with other processes.
    pub fn with_shared_limit(mut self, limit: Arc<dyn SharedLimit>) -> Self {
        self.shared_limit = Some(limit);
        self
    }

    /// Takes a grant from `rate` before every attempt, and tells it what
    /// each answer said (a success, a 429 or 503 and its `Retry-After`, the
    /// server's stated policy): `--rate auto`.
    pub fn with_adaptive_rate(mut self, rate: Arc<AdaptiveRate>) -> Self {
        self.adaptive_rate = Some(rate);
        self
    }

    /// Holds a permit of `limit` around every attempt, and tells it how the
    /// attempt went (its latency, or an overload: a timeout, a refused
    /// connection, a 429 or 503): `--workers auto`.
    pub fn with_adaptive_concurrency(mut self, limit: Arc<AdaptiveConcurrency>) -> Self {
        self.concurrency = Some(limit);
        self
    }

    /// Calls `sink` with the latency of every attempt that got an answer.
    pub fn with_latency_sink(mut self, sink: LatencySink) -> Self {
        self.latency = Some(sink);
        self
    }

    /// The stack of each thread a model starts to fetch on:
    /// [`REQUEST_STACK`] unless set; `None` for the platform's default
    /// (for hooks that need more, say).
    pub fn with_stack_size(mut self, bytes: Option<usize>) -> Self {
        self.stack_size = bytes;
        self
    }

    /// Calls `progress` with each item's outcome as it completes, on the
    /// thread that fetched it (see [`with_stack_size`](Self::with_stack_size)).
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Starts `process-pool` workers from `program` instead of this
    /// executable (which must then call `concur::worker_main` with
    /// [`registry`] at the top of `main`, as the `rates` binary does).
    pub fn with_worker_program(mut self, program: impl Into<std::path::PathBuf>) -> Self {
        self.worker_program = Some(program.into());
        self
    }

    /// Writes every attempt, wait, retry and 429 of its runs to `trace`
    /// (see [`crate::trace`]); `None`, the default, writes nothing.
    pub fn with_trace(mut self, trace: Option<Trace>) -> Self {
        self.trace = trace;
        self
    }

    /// The trace its runs are written to, if any.
    pub fn trace(&self) -> Option<&Trace> {
        self.trace.as_ref()
    }

    /// The client's timeouts.
    pub fn config(&self) -> ClientConfig {
        self.config
    }

    /// The API's base URL.
    pub fn api(&self) -> &str {
        self.client.api()
    }

    /// The task each attempt at `req` is on a pool: every attempt at one
    /// request is the same task.
    pub fn task(&self, req: &RateRequest) -> FetchOnce {
        FetchOnce { api: self.api().to_string(), config: self.config, request: req.clone() }
    }

    /// The flag that cancels this fetcher's runs.
    pub fn cancel(&self) -> &CancelToken {
        &self.cancel
    }

    /// The blocking client.
    pub fn client(&self) -> &BlockingClient {
        &self.client
    }

    /// Fetches one item on the calling thread, with throttling and retries;
    /// gives up early (as `Cancelled`) once the run is cancelled.
    pub fn fetch(&self, req: &RateRequest) -> Outcome {
        let _span = span(req).entered();
        self.attempts(Some(req), || (self.client.fetch_reply(req), None))
    }

    /// [`Fetcher::fetch`] with each attempt made by `attempt` (e.g. on a pool
    /// worker): the throttle, the adaptive limits, the retries,
    /// cancellation and progress stay with the caller.
    pub fn fetch_with(&self, attempt: impl Fn() -> Result<Reply, FetchError>) -> Outcome {
        self.attempts(None, || (attempt(), None))
    }

    /// The attempts at `req` (if known, for the trace), each made by
    /// `attempt`, which says where it ran if a worker process made it.
    fn attempts(
        &self,
        req: Option<&RateRequest>,
        attempt: impl Fn() -> (Result<Reply, FetchError>, Option<Stamp>),
    ) -> Outcome {
        let traced = self.trace.as_ref().map(|t| Traced::new(t, None, req));
        let traced = traced.as_ref();
        let cancelled = |_| FetchError::Cancelled;
        let outcome = self.retry.run(
            || {
                if let Some(t) = traced {
                    t.next_attempt();
                }
                // A cancelled run takes no slot, and a wait for one ends
                // when the run is cancelled, giving the slot back.
                let permit = loop {
                    if !timed(traced, "retry-after", || self.pause.wait(&self.cancel)) {
                        return Err(FetchError::Cancelled);
                    }
                    if let Some(t) = &self.throttle {
                        let asked = std::time::Instant::now();
                        timed(traced, "throttle", || t.acquire_cancellable(&self.cancel)).map_err(cancelled)?;
                        log_throttle_wait(asked.elapsed());
                    }
                    if let Some(l) = &self.shared_limit {
                        timed(traced, "shared limit", || l.acquire_cancellable(&self.cancel)).map_err(cancelled)?;
                    }
                    let rate = self.rate_limit();
                    if let Some(r) = rate {
                        timed(traced, "rate", || r.acquire_cancellable(&self.cancel)).map_err(cancelled)?;
                    }
                    // Taken last, just before the request: a permit's latency
                    // is the request's alone, not the rate limit's waits.
                    let permit = match &self.concurrency {
                        Some(c) => Some(
                            timed(traced, "concurrency", || c.acquire_cancellable(&self.cancel)).map_err(cancelled)?,
                        ),
                        None => None,
                    };
                    if !self.limited_since(rate.is_some()) {
                        break permit;
                    }
                };
                if self.cancel.is_cancelled() {
                    return Err(FetchError::Cancelled);
                }
                let sent = self.sending(traced);
                let (answer, stamp) = attempt();
                self.answered(sent, traced, permit, &answer, stamp);
                answer.map(|reply| reply.rates)
            },
            |d| {
                self.cancel.sleep(d);
            },
        );
        self.done(traced, outcome)
    }

    /// Gives the latency sink an answered attempt's time since `sent`.
    fn observe(&self, sent: Option<std::time::Instant>, answer: &Result<Reply, FetchError>) {
        if let (Some(sink), Some(sent), Ok(_)) = (&self.latency, sent, answer) {
            sink(sent.elapsed());
        }
    }

    /// What an attempt notes as it is sent: the time, for the latency
    /// sink, and the trace's own stamp.
    fn sending(&self, traced: Option<&Traced<'_>>) -> (Option<std::time::Instant>, Option<u64>) {
        (self.latency.as_ref().map(|_| std::time::Instant::now()), traced.map(Traced::send))
    }

    /// An attempt's answer, told to the trace, the latency sink and the
    /// adaptive limits, on either path (blocking or async).
    fn answered(
        &self,
        (sent, at): (Option<std::time::Instant>, Option<u64>),
        traced: Option<&Traced<'_>>,
        permit: Option<concur::adaptive::Permit<'_, concur::throttle::SystemClock>>,
        answer: &Result<Reply, FetchError>,
        stamp: Option<Stamp>,
    ) {
        if let (Some(t), Some(at)) = (traced, at) {
            t.answered(at, answer, stamp);
        }
        self.observe(sent, answer);
        self.learn(permit, answer);
        self.trace_limits();
    }

    /// The item is done: its trace is told, then the progress hook.
    fn done(&self, traced: Option<&Traced<'_>>, outcome: Outcome) -> Outcome {
        if let Some(t) = traced {
            t.finish(&outcome);
        }
        if let Some(p) = &self.progress {
            p(&outcome);
        }
        outcome
    }

    /// Fetches one item with `client`, with throttling and retries.
    /// Cancellation drops this future (the `async` model does).
    pub async fn fetch_async(&self, client: &AsyncClient, req: &RateRequest) -> Outcome {
        use tracing::Instrument;
        // A slot of the trace while the task runs, given back if it is dropped.
        let slot = self.trace.as_ref().map(Trace::slot);
        let traced = slot.as_ref().map(|s| Traced::new(s.trace(), Some(s.track()), Some(req)));
        let traced = traced.as_ref();
        let outcome = self
            .retry
            .run_async(|| async {
                if let Some(t) = traced {
                    t.next_attempt();
                }
                // As on the blocking path: once the run is cancelled no
                // request starts, even before the task itself is dropped.
                if self.cancel.is_cancelled() {
                    return Err(FetchError::Cancelled);
                }
                let permit = loop {
                    timed_async(traced, "retry-after", self.pause.wait_async()).await;
                    if let Some(t) = &self.throttle {
                        let asked = tokio::time::Instant::now();
                        timed_async(traced, "throttle", t.acquire_async()).await;
                        log_throttle_wait(asked.elapsed());
                    }
                    let rate = self.rate_limit();
                    if let Some(r) = rate {
                        timed_async(traced, "rate", r.acquire_async()).await;
                    }
                    let permit = match &self.concurrency {
                        Some(c) => Some(timed_async(traced, "concurrency", c.acquire_async()).await),
                        None => None,
                    };
                    if !self.limited_since(rate.is_some()) {
                        break permit;
                    }
                };
                if self.cancel.is_cancelled() {
                    return Err(FetchError::Cancelled);
                }
                let sent = self.sending(traced);
                let answer = client.fetch_reply(req).await;
                self.answered(sent, traced, permit, &answer, None);
                answer.map(|reply| reply.rates)
            })
            .instrument(span(req))
            .await;
        self.done(traced, outcome)
    }
}

/// Throttle waits longer than this are logged: shorter ones are the
/// throttle's ordinary pacing, longer ones explain a run that seems stuck.
const LONG_THROTTLE_WAIT: Duration = Duration::from_secs(1);

/// The context of a request's log lines (its retries, its throttle waits):
/// `fetch{base=USD date=2020-01-02}`. Its fields are only formatted when a
/// line is logged.
fn span(req: &RateRequest) -> tracing::Span {
    tracing::info_span!("fetch", base = %req.base, date = %Day(req.date))
}

/// A request's day, `latest` for none; formatted only when logged.
struct Day(Option<chrono::NaiveDate>);

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => write!(f, "{d}"),
            None => f.write_str("latest"),
        }
    }
}

fn log_throttle_wait(waited: Duration) {
    if waited > LONG_THROTTLE_WAIT {
        tracing::info!(target: "rates::throttle", "waited {waited:.1?} for the rate limit (--rate)");
    }
}

impl Job for Fetcher {
    type Item = RateRequest;
    type Output = Outcome;
    type Shared = AsyncClient;

    fn run(&self, req: &RateRequest) -> Outcome {
        self.fetch(req)
    }

    /// Each attempt is a [`FetchOnce`] task on the pool, while the throttle
    /// and the retry policy stay in this process, so `--rate` holds across
    /// all worker processes and retries are throttled like first attempts.
    fn run_on(&self, pool: &(impl Pool + Sync), req: &RateRequest) -> Outcome {
        let _span = span(req).entered();
        // Traced, a worker process says where and when it made the attempt.
        let stamped = self.trace.as_ref().is_some_and(Trace::stamps_workers);
        self.attempts(Some(req), || {
            let task = self.task(req);
            let failed = |e: concur::TaskError| Err(FetchError::Worker(e.to_string()));
            if stamped {
                match pool.apply_async(FetchStamped(task)).wait() {
                    Ok((answer, stamp)) => (answer, Some(stamp)),
                    Err(e) => (failed(e), None),
                }
            } else {
                (pool.apply_async(task).wait().unwrap_or_else(failed), None)
            }
        })
    }

    /// A new async client of the same API for each run: a client's pooled
    /// connections belong to the runtime that opened them. It keeps as
    /// many idle as the run has tasks in flight; an unlimited run keeps
    /// none, as each of its tasks opened a connection of its own and
    /// nobody is left to reuse them: closed as they finish, they are not
    /// all closed at the end, after the last answer.
    fn shared(&self, workers: Workers) -> Result<AsyncClient, String> {
        let idle = match workers {
            Workers::Bounded(n) => n.get(),
            Workers::Unlimited => 0,
        };
        AsyncClient::with_idle_connections(self.client.api(), self.config, idle).map_err(|e| e.to_string())
    }

    async fn run_async(&self, client: &AsyncClient, req: &RateRequest) -> Outcome {
        self.fetch_async(client, req).await
    }

    fn failed(&self, why: String) -> Outcome {
        Err(Failure { error: FetchError::Worker(why), attempts: 1 })
    }

    fn cancelled(&self) -> Outcome {
        Err(Failure { error: FetchError::Cancelled, attempts: 0 })
    }

    fn cancel(&self) -> Option<&CancelToken> {
        Some(&self.cancel)
    }

    fn worker_program(&self) -> Option<&std::path::Path> {
        self.worker_program.as_deref()
    }

    fn stack_size(&self) -> Option<usize> {
        self.stack_size
    }

    fn trace(&self) -> Option<&Trace> {
        self.trace.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_server::{one_connection, usd, usd_answer};

    /// Runs `f` on a single-threaded runtime, dropped when `f` is done.
    fn on_runtime<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime").block_on(f)
    }

    #[test]
    fn an_unlimited_async_run_closes_each_connection_when_its_answer_is_read() {
        let (url, closed) = one_connection(usd_answer(0));
        let fetcher = Fetcher::new(&url, ClientConfig::default()).expect("a valid URL");
        on_runtime(async {
            let client = fetcher.shared(Workers::Unlimited).expect("a client");
            assert!(fetcher.run_async(&client, &usd()).await.is_ok());
            // The client is alive, yet the server sees its connection close.
            let requests = tokio::task::spawn_blocking(move || closed.recv_timeout(Duration::from_secs(10)))
                .await
                .expect("the wait");
            assert_eq!(requests, Ok(1));
            drop(client);
        });
    }

    #[test]
    fn a_bounded_async_run_reuses_its_connections() {
        let (url, closed) = one_connection(usd_answer(0));
        let fetcher = Fetcher::new(&url, ClientConfig::default()).expect("a valid URL");
        on_runtime(async {
            let client = fetcher.shared(Workers::bounded(4).expect("not zero")).expect("a client");
            for _ in 0..3 {
                assert!(fetcher.run_async(&client, &usd()).await.is_ok());
            }
        });
        // All three on the one connection, closed with the runtime.
        assert_eq!(closed.recv_timeout(Duration::from_secs(10)), Ok(3));
    }
}
