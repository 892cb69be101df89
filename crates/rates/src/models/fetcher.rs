//! The fetch job: [`Fetcher`] holds what every request of a run shares
//! (client, retry policy, throttle, the adaptive limits of `--rate auto`
//! and `--workers auto`, cancellation flag, progress hook) and does one
//! request in each model's setting, as a [`Job`]. [`FetchOnce`] is one
//! attempt as a pool task, for the multiprocessing models.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use concur::adaptive::{AdaptiveConcurrency, AdaptiveRate, Permit, RateSignal};
use concur::throttle::SystemClock;
use concur::{Pool, Task, Throttle};
use serde::{Deserialize, Serialize};

use super::pause::Pause;
use super::{Job, Workers};
use crate::{
    AsyncClient, BadUrl, BlockingClient, Cancel, ClientConfig, FetchError, RateRequest, Rates, Reply, RetryPolicy,
    retry::Failure,
};

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
    cancel: Cancel,
    progress: Option<Progress>,
    worker_program: Option<std::path::PathBuf>,
    stack_size: Option<usize>,
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

/// A rate limit kept outside this process (such as `concur::RedisThrottle`,
/// one limit for every caller on every host), with the local throttle's
/// contract: in any window `w`, at most `burst + rate·w` grants.
pub trait SharedLimit: Send + Sync {
    /// Blocks until a grant; `Err` if `cancel` was cancelled first.
    fn acquire_cancellable(&self, cancel: &Cancel) -> Result<(), concur::Cancelled>;
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
            cancel: Cancel::new(),
            progress: None,
            worker_program: None,
            stack_size: Some(REQUEST_STACK),
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

    /// The client's timeouts.
    pub fn config(&self) -> ClientConfig {
        self.config
    }

    /// The API's base URL.
    pub fn api(&self) -> &str {
        self.client.api()
    }

    /// The flag that cancels this fetcher's runs.
    pub fn cancel(&self) -> &Cancel {
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
        self.fetch_with(|| self.client.fetch_reply(req))
    }

    /// [`Fetcher::fetch`] with each attempt made by `attempt` (e.g. on a pool
    /// worker): the throttle, the adaptive limits, the retries,
    /// cancellation and progress stay with the caller.
    pub fn fetch_with(&self, attempt: impl Fn() -> Result<Reply, FetchError>) -> Outcome {
        let outcome = self.retry.run(
            || {
                // A cancelled run takes no slot, and a wait for one ends
                // when the run is cancelled, giving the slot back.
                let permit = loop {
                    if !self.pause.wait(&self.cancel) {
                        return Err(FetchError::Cancelled);
                    }
                    if let Some(t) = &self.throttle {
                        let asked = std::time::Instant::now();
                        t.acquire_cancellable(&self.cancel).map_err(|_| FetchError::Cancelled)?;
                        log_throttle_wait(asked.elapsed());
                    }
                    if let Some(l) = &self.shared_limit {
                        l.acquire_cancellable(&self.cancel).map_err(|_| FetchError::Cancelled)?;
                    }
                    let rate = self.rate_limit();
                    if let Some(r) = rate {
                        r.acquire_cancellable(&self.cancel).map_err(|_| FetchError::Cancelled)?;
                    }
                    // Taken last, just before the request: a permit's latency
                    // is the request's alone, not the rate limit's waits.
                    let permit = match &self.concurrency {
                        Some(c) => Some(c.acquire_cancellable(&self.cancel).map_err(|_| FetchError::Cancelled)?),
                        None => None,
                    };
                    if !self.limited_since(rate.is_some()) {
                        break permit;
                    }
                };
                if self.cancel.is_cancelled() {
                    return Err(FetchError::Cancelled);
                }
                let sent = self.latency.as_ref().map(|_| std::time::Instant::now());
                let answer = attempt();
                self.observe(sent, &answer);
                self.learn(permit, &answer);
                answer.map(|reply| reply.rates)
            },
            |d| {
                self.cancel.sleep(d);
            },
        );
        self.done(outcome)
    }

    /// Gives the latency sink an answered attempt's time since `sent`.
    fn observe(&self, sent: Option<std::time::Instant>, answer: &Result<Reply, FetchError>) {
        if let (Some(sink), Some(sent), Ok(_)) = (&self.latency, sent, answer) {
            sink(sent.elapsed());
        }
    }

    /// The rate the run paces itself by: `--rate auto`'s, else the one
    /// learnt from the server's 429s, if any yet.
    fn rate_limit(&self) -> Option<&AdaptiveRate> {
        self.adaptive_rate.as_deref().or_else(|| self.learnt_rate.get())
    }

    /// Whether a 429 came while this attempt waited at its gates: the run
    /// is paused, or a rate was learnt that the attempt (which had none,
    /// `had_rate` false) did not wait for. Then it goes through the gates
    /// again rather than join the burst that earned the 429 (a run of 8
    /// in flight, waiting on permits, drew 61 answers of 429 that way).
    fn limited_since(&self, had_rate: bool) -> bool {
        self.pause.is_on() || (!had_rate && self.rate_limit().is_some())
    }

    /// The rate and burst learnt from the server's 429s in a run without
    /// `--rate auto`, if it met any: what `--rate`/`--burst` would reuse.
    pub fn learnt_limit(&self) -> Option<(f64, u32)> {
        self.learnt_rate.get().map(|r| (r.rate(), r.burst()))
    }

    /// Tells the adaptive limits what an attempt's answer said.
    fn learn(&self, permit: Option<Permit<'_, SystemClock>>, answer: &Result<Reply, FetchError>) {
        match answer {
            Ok(reply) => {
                if let Some(p) = permit {
                    p.success();
                }
                if let Some(r) = self.rate_limit() {
                    if let Some(l) = reply.limit {
                        r.record(policy(l));
                    }
                    r.record(RateSignal::Success);
                }
            }
            Err(e) if is_overload(e) => {
                if let Some(p) = permit {
                    p.overload();
                }
                if let FetchError::Status { status, retry_after, limit, .. } = e {
                    // Not before the server said: no worker of the run.
                    if let Some(after) = retry_after {
                        self.pause.hold(*after);
                    }
                    // A 429 is the server's limit: a run that had none
                    // learns it now, and paces by it from here on.
                    let rate = match (self.rate_limit(), status) {
                        (Some(r), _) => Some(r),
                        (None, 429) => Some(self.learnt_rate.get_or_init(learnt_rate)),
                        (None, _) => None,
                    };
                    if let Some(r) = rate {
                        if let Some(l) = limit {
                            r.record(policy(*l));
                        }
                        r.record(RateSignal::Limited { retry_after: *retry_after });
                    }
                }
            }
            // Cancelled, or an answer that says nothing of the server's
            // load (a 404, a 500 of its own, a malformed body): the permit
            // is given back without a sample.
            Err(_) => drop(permit),
        }
    }

    fn done(&self, outcome: Outcome) -> Outcome {
        if let Some(p) = &self.progress {
            p(&outcome);
        }
        outcome
    }

    /// Fetches one item with `client`, with throttling and retries.
    /// Cancellation drops this future (the `async` model does).
    pub async fn fetch_async(&self, client: &AsyncClient, req: &RateRequest) -> Outcome {
        use tracing::Instrument;
        let outcome = self
            .retry
            .run_async(|| async {
                // As on the blocking path: once the run is cancelled no
                // request starts, even before the task itself is dropped.
                if self.cancel.is_cancelled() {
                    return Err(FetchError::Cancelled);
                }
                let permit = loop {
                    self.pause.wait_async().await;
                    if let Some(t) = &self.throttle {
                        let asked = tokio::time::Instant::now();
                        t.acquire_async().await;
                        log_throttle_wait(asked.elapsed());
                    }
                    let rate = self.rate_limit();
                    if let Some(r) = rate {
                        r.acquire_async().await;
                    }
                    let permit = match &self.concurrency {
                        Some(c) => Some(c.acquire_async().await),
                        None => None,
                    };
                    if !self.limited_since(rate.is_some()) {
                        break permit;
                    }
                };
                if self.cancel.is_cancelled() {
                    return Err(FetchError::Cancelled);
                }
                let sent = self.latency.as_ref().map(|_| std::time::Instant::now());
                let answer = client.fetch_reply(req).await;
                self.observe(sent, &answer);
                self.learn(permit, &answer);
                answer.map(|reply| reply.rates)
            })
            .instrument(span(req))
            .await;
        self.done(outcome)
    }
}

/// What an answer's rate-limit headers said, as the adaptive rate reads it;
/// a wait it implies (nothing left until a reset) is announced.
fn policy(l: crate::RateLimitInfo) -> RateSignal {
    if let (Some(0), Some(reset)) = (l.remaining, l.reset) {
        super::pause::announce_wait(reset, "the server said no request is left until its limit resets");
    }
    RateSignal::Policy { limit: l.limit, window: l.window, remaining: l.remaining, reset: l.reset, burst: l.burst }
}

/// The rate a run without `--rate auto` paces itself by once the server
/// refused it: `--rate auto`'s, started from the first 429 (whose headers,
/// if it has them, set it at once), with the margin that keeps the
/// server's clock, not only ours, within the limit.
fn learnt_rate() -> AdaptiveRate {
    AdaptiveRate::new(super::auto::server_rate()).on_change(super::auto::log_rate_change)
}

/// Whether a failed attempt says the server is overloaded or limiting us:
/// a 429 or 503, a timeout, a connection refused or cut.
fn is_overload(e: &FetchError) -> bool {
    match e {
        FetchError::Status { status, .. } => matches!(status, 429 | 503),
        FetchError::Timeout(_) | FetchError::Connect(_) | FetchError::Transport(_) => true,
        _ => false,
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
        self.fetch_with(|| {
            let task = FetchOnce { api: self.api().to_string(), config: self.config, request: req.clone() };
            pool.apply_async(task).wait().unwrap_or_else(|e| Err(FetchError::Worker(e.to_string())))
        })
    }

    /// A new async client of the same API for each run: a client's pooled
    /// connections belong to the runtime that opened them. It keeps as
    /// many idle as the run has tasks in flight; an unlimited run keeps
    /// none, as each of its tasks opened a connection of its own and
    /// nobody is left to reuse them (closed as they finish, they are not
    /// all closed at the end, after the last answer: 2,000 requests at
    /// 50 ms, 111 ms instead of 123).
    fn shared(&self, workers: Workers) -> Result<AsyncClient, String> {
        let idle = match workers {
            Workers::Bounded(n) => n.max(1),
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

    fn cancel(&self) -> Option<&Cancel> {
        Some(&self.cancel)
    }

    fn worker_program(&self) -> Option<&std::path::Path> {
        self.worker_program.as_deref()
    }

    fn stack_size(&self) -> Option<usize> {
        self.stack_size
    }
}

/// One attempt at `GET /rates`, as a task a pool worker runs: what crosses
/// to a worker process (serialised) and back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchOnce {
    /// The API's base URL.
    pub api: String,
    /// The client's timeouts.
    pub config: ClientConfig,
    /// What to fetch.
    pub request: RateRequest,
}

impl Task for FetchOnce {
    /// The answer with its rate-limit headers, which the caller's adaptive
    /// rate learns from.
    type Output = Result<Reply, FetchError>;
    const NAME: &'static str = "rates::FetchOnce";

    /// In a process that serves tasks from others (see [`FetchPolicy`]),
    /// an API not allowed is this task's error, without a request, and the
    /// timeouts are capped at the policy's.
    fn run(self) -> Self::Output {
        let config = match POLICY.get() {
            Some(policy) => policy.admit(&self.api, self.config)?,
            None => self.config,
        };
        client(&self.api, config)?.fetch_reply(&self.request)
    }
}

/// What a process that runs [`FetchOnce`] tasks for others (a `rates
/// worker` on a queue) lets them do: which APIs they may ask, and the
/// longest timeouts, whatever a task carries. Set once per process with
/// [`FetchOnce::serve_with`]; a process without one (a process pool's
/// worker, whose tasks come from its own parent) runs tasks as they are.
#[derive(Debug, Clone, PartialEq)]
struct FetchPolicy {
    /// The APIs tasks may ask (base URLs, compared without a trailing `/`).
    allow: Vec<String>,
    /// The longest connect and request timeouts.
    max: ClientConfig,
}

impl FetchPolicy {
    /// The configuration a task may use on `api`: its own timeouts within
    /// the policy's; an API not allowed is an error.
    fn admit(&self, api: &str, asked: ClientConfig) -> Result<ClientConfig, FetchError> {
        let api = api.trim_end_matches('/');
        if !self.allow.iter().any(|a| allows(a.trim_end_matches('/'), api)) {
            return Err(FetchError::Worker(format!(
                "the API {api:?} is not allowed on this worker (its --allow-api): nothing was requested"
            )));
        }
        Ok(ClientConfig {
            connect_timeout: asked.connect_timeout.min(self.max.connect_timeout),
            timeout: asked.timeout.min(self.max.timeout),
        })
    }
}

/// Whether the allowed API `allowed` covers `api`: the same URL, or, for
/// an entry ending in `:*` (`http://127.0.0.1:*`), the same scheme and host
/// on any port.
fn allows(allowed: &str, api: &str) -> bool {
    match allowed.strip_suffix(":*") {
        Some(base) => api
            .strip_prefix(base)
            .and_then(|rest| rest.strip_prefix(':'))
            .is_some_and(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())),
        None => allowed == api,
    }
}

static POLICY: OnceLock<FetchPolicy> = OnceLock::new();

impl FetchOnce {
    /// Clients a process keeps, at most (the most recently used).
    pub const CLIENT_CACHE: usize = CLIENT_CACHE;

    /// Bounds the tasks this process runs from now on, before it serves
    /// tasks from others (`rates worker`): only the APIs of `allow` are
    /// asked (any other is the task's error, without a request), and a
    /// task's timeouts are capped at `max`'s. Once per process: `false` if
    /// a policy was set already (which stays).
    pub fn serve_with(allow: Vec<String>, max: ClientConfig) -> bool {
        POLICY.set(FetchPolicy { allow, max }).is_ok()
    }

    /// How many clients this process keeps now (at most
    /// [`CLIENT_CACHE`](Self::CLIENT_CACHE)).
    pub fn cached_clients() -> usize {
        CACHED.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Clients kept per process, at most.
const CLIENT_CACHE: usize = 16;

/// One blocking client per API and configuration in each process, so a
/// worker reuses its connections from task to task; at most
/// [`CLIENT_CACHE`] of them, the least recently used dropped (with its
/// connections), so whatever APIs and timeouts tasks name, descriptors and
/// memory stay bounded.
fn client(api: &str, config: ClientConfig) -> Result<BlockingClient, FetchError> {
    static CLIENTS: OnceLock<Mutex<std::collections::VecDeque<(String, BlockingClient)>>> = OnceLock::new();
    let key = format!("{api} {config:?}");
    let mut clients = CLIENTS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(at) = clients.iter().position(|(k, _)| *k == key) {
        let hit = clients.remove(at).map(|(_, c)| c);
        if let Some(c) = hit {
            clients.push_front((key, c.clone()));
            return Ok(c);
        }
    }
    let c = BlockingClient::new(api, config).map_err(|e| FetchError::Transport(e.to_string()))?;
    clients.push_front((key, c.clone()));
    clients.truncate(CLIENT_CACHE);
    CACHED.store(clients.len(), std::sync::atomic::Ordering::Relaxed);
    Ok(c)
}

/// Clients in the cache now (for tests and logs).
static CACHED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The tasks a `rates` worker process can run; pass to `concur::worker_main`
/// at the top of `main` (add your own tasks with `.register`).
pub fn registry() -> concur::Registry {
    concur::Registry::new().register::<FetchOnce>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_server::{one_connection, usd, usd_answer};

    #[test]
    fn a_bad_api_is_an_error_not_a_panic() {
        let task = FetchOnce {
            api: "nonsense".into(),
            config: ClientConfig::default(),
            request: RateRequest { base: crate::Currency::EUR, symbols: vec![], date: None },
        };
        assert!(matches!(task.run(), Err(FetchError::Transport(_))));
    }

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
            let client = fetcher.shared(Workers::Bounded(4)).expect("a client");
            for _ in 0..3 {
                assert!(fetcher.run_async(&client, &usd()).await.is_ok());
            }
        });
        // All three on the one connection, closed with the runtime.
        assert_eq!(closed.recv_timeout(Duration::from_secs(10)), Ok(3));
    }

    #[test]
    fn the_client_cache_stays_at_its_bound() {
        for i in 0..(3 * CLIENT_CACHE as u64) {
            let config = ClientConfig { timeout: Duration::from_millis(1000 + i), ..ClientConfig::default() };
            client("http://127.0.0.1:9", config).expect("a client");
            assert!(FetchOnce::cached_clients() <= CLIENT_CACHE);
        }
        assert_eq!(FetchOnce::cached_clients(), CLIENT_CACHE);
    }

    #[test]
    fn a_policy_allows_its_apis_only_and_caps_timeouts() {
        let policy = FetchPolicy { allow: vec!["http://a.test/".into()], max: ClientConfig::default() };
        let huge = ClientConfig { connect_timeout: Duration::MAX, timeout: Duration::from_secs(u64::MAX) };
        assert_eq!(policy.admit("http://a.test", huge), Ok(ClientConfig::default()));
        assert!(matches!(policy.admit("http://b.test", huge), Err(FetchError::Worker(m)) if m.contains("not allowed")));
        let any_port = FetchPolicy { allow: vec!["http://127.0.0.1:*".into()], max: ClientConfig::default() };
        assert!(any_port.admit("http://127.0.0.1:8080", huge).is_ok());
        for other in ["http://127.0.0.1", "http://127.0.0.10:80", "http://127.0.0.1:80/x", "http://127.0.0.1:80@evil"] {
            assert!(any_port.admit(other, huge).is_err(), "{other}");
        }
    }

    #[test]
    fn the_registry_knows_the_fetch_task() {
        assert!(registry().names().any(|n| n == FetchOnce::NAME));
    }
}
