//! A vatcomply-compatible exchange-rates server over the ECB dataset
//! (`docs/API.md`): `/rates` and `/currencies` answer what vatcomply's own
//! code answers, byte for byte where it matters (statuses, error texts,
//! decimal cross rates, CORS, its rate limiter's 429). Around it, fault
//! injection — latency, jitter, failures, a per-client rate limit, a
//! capacity beyond which requests queue — so clients, tests and benchmarks
//! can reproduce a real network on loopback.
//!
//! [`spawn`] starts it in-process on an ephemeral loopback port and hands
//! back its URL: the `rates` command's default API and what every test uses.
//! [`serve`] serves on an address until Ctrl-C or SIGTERM, heard by
//! [`signals`], which the `rates` command uses for its own runs too.
//!
//! ```
//! use rates_server::{ServerOptions, spawn};
//!
//! let server = spawn(rates_core::Dataset::embedded(), ServerOptions::default()).unwrap();
//! let client = rates_core::BlockingClient::new(server.url(), Default::default()).unwrap();
//! let req = rates_core::RateRequest { base: "USD".parse().unwrap(), symbols: vec![], date: None };
//! assert_eq!(client.fetch(&req).unwrap().base.as_str(), "USD");
//! server.stop();
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod app;
mod conn;
mod faults;
mod metrics;
mod process;
pub mod signals;
mod timer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use app::{ACCESS_LOG, router};
pub use concur::throttle::Quota;
pub use conn::ConnLimits;
pub use faults::{PUBLIC_LIMIT, Policy};
pub use metrics::{Metrics, Snapshot};
use rates_core::Dataset;
pub use timer::Timer;

/// Fault injection, all off by default, and the limits on connections.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerOptions {
    /// Every answer waits this long, without blocking other requests.
    pub latency: Duration,
    /// Plus a uniformly random extra delay up to this much.
    pub jitter: Duration,
    /// This fraction of requests (0.0..=1.0) answers 500.
    pub fail_rate: f64,
    /// A token bucket per client IP and route; over it, vatcomply's 429
    /// ([`PUBLIC_LIMIT`] is the public service's).
    pub rate_limit: Option<Quota>,
    /// Whether every answer of a limited route also says what the limit
    /// allows, in the IETF `RateLimit-Policy`/`RateLimit` headers (off by
    /// default: vatcomply sends none, and only its 429s tell).
    pub rate_limit_headers: bool,
    /// At most this many requests are served (waited on and answered) at
    /// once; the rest wait their turn, first come first served, and the
    /// wait counts in their latency. Nothing is dropped: the queue is at
    /// most one request per open connection, so the connection cap bounds it.
    pub capacity: Option<usize>,
    /// Time limits on connections and a cap on how many are open.
    pub limits: ConnLimits,
    /// The clock of the latency, the jitter and the connections' limits: a
    /// thread of the server's own by default; tests on tokio's paused clock
    /// need [`Timer::Runtime`].
    pub timer: Timer,
}

/// A server option out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid {name} '{value}': {expected}")]
pub struct OptionError {
    /// The option.
    pub name: &'static str,
    /// The bad value.
    pub value: String,
    /// What is expected instead.
    pub expected: &'static str,
}

impl Default for ServerOptions {
    /// No faults, no limits but the default connection limits; no standard
    /// rate-limit headers (they would show only once a rate limit is set).
    fn default() -> Self {
        ServerOptions {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            fail_rate: 0.0,
            rate_limit: None,
            rate_limit_headers: false,
            capacity: None,
            limits: ConnLimits::default(),
            timer: Timer::default(),
        }
    }
}

/// The largest capacity: as many as the connections a server may keep.
pub const MAX_CAPACITY: usize = 1 << 20;

impl ServerOptions {
    /// The public service's behaviour on the wire: its rate limit (2 per
    /// second, a burst of 4, per client and route), its 429, and nothing
    /// about the limit on a served answer. No latency: add the network's.
    pub fn public() -> ServerOptions {
        ServerOptions { rate_limit: Some(PUBLIC_LIMIT), rate_limit_headers: false, ..ServerOptions::default() }
    }

    /// Checks the options, naming the first bad one.
    pub fn validate(&self) -> Result<(), OptionError> {
        if !(0.0..=1.0).contains(&self.fail_rate) {
            return Err(OptionError {
                name: "fail rate",
                value: self.fail_rate.to_string(),
                expected: "a fraction between 0 and 1",
            });
        }
        if let Some(n) = self.capacity
            && !(1..=MAX_CAPACITY).contains(&n)
        {
            return Err(OptionError {
                name: "capacity",
                value: n.to_string(),
                expected: "a number of requests from 1 to 1048576",
            });
        }
        self.limits.validate()
    }
}

/// The state every request handler shares.
#[derive(Debug)]
pub struct Shared {
    dataset: Arc<Dataset>,
    options: ServerOptions,
    metrics: Metrics,
    limiter: faults::Limiter,
    /// The rate limit's headers, if it has them.
    advertised: Option<faults::Advertised>,
    /// The requests that may be served at once, if limited.
    capacity: Option<tokio::sync::Semaphore>,
    /// The `/rates` answers made so far.
    answers: app::Answers,
    /// The server's own timer, when it has one (see [`Timer`]).
    timer: Option<timer::PreciseTimer>,
}

impl Shared {
    /// State for a server over `dataset` with `options`.
    pub fn new(dataset: Arc<Dataset>, options: ServerOptions) -> Result<Arc<Shared>, OptionError> {
        options.validate()?;
        let limiter = faults::Limiter::new(options.rate_limit);
        let advertised = options.rate_limit.filter(|_| options.rate_limit_headers).map(faults::Advertised::new);
        let capacity = options.capacity.map(tokio::sync::Semaphore::new);
        let answers = app::Answers::default();
        let timer = match options.timer {
            Timer::Precise => timer::PreciseTimer::start()
                .inspect_err(|e| {
                    tracing::warn!(
                        "no timer thread ({e}): latency and connection limits on tokio's timer, in whole milliseconds"
                    )
                })
                .ok(),
            Timer::Runtime => None,
        };
        let metrics = Metrics::default();
        Ok(Arc::new(Shared { dataset, options, metrics, limiter, advertised, capacity, answers, timer }))
    }

    /// The server's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Ends at `at`, on the server's own timer if it has one, else on
    /// tokio's.
    pub(crate) fn sleep_until(&self, at: tokio::time::Instant) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
        match &self.timer {
            Some(timer) => Box::pin(timer.sleep_until(at.into_std())),
            None => Box::pin(tokio::time::sleep_until(at)),
        }
    }
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A fault-injection option is out of range.
    #[error(transparent)]
    Option(#[from] OptionError),
    /// The address could not be bound, or the runtime not started.
    #[error("cannot listen on {addr}: {source}")]
    Io {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A server running in-process on its own runtime thread. Dropping it stops
/// the server gracefully (in-flight requests finish, bounded by a grace
/// period) and joins the thread.
#[derive(Debug)]
pub struct RunningServer {
    url: String,
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningServer {
    /// The base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's counters, read directly (no HTTP round trip).
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Stops the server and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// How long a stopping server lets in-flight requests finish.
const GRACE: Duration = Duration::from_secs(5);

/// Connections the kernel holds for a server before it accepts them. A
/// client that opens thousands at once (`async` with unlimited workers)
/// must not overflow it: past it, the kernel drops their handshakes and
/// they retry only a second later. The kernel caps it at
/// `net.core.somaxconn` (4096 by default since Linux 5.4).
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` with the [`LISTEN_BACKLOG`] (tokio's and std's
/// `bind` give 1024 and 128), reusing the address as they do. Call it
/// inside a tokio runtime.
pub fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Starts a server on an ephemeral loopback port, on a runtime of its own
/// with one worker thread: the server shares the machine with its client
/// in this process, and on a machine of few cores a second server worker
/// only competes with the client's threads for them.
pub fn spawn(dataset: Arc<Dataset>, options: ServerOptions) -> Result<RunningServer, ServeError> {
    let shared = Shared::new(dataset, options)?;
    let io_err = |source| ServeError::Io { addr: "127.0.0.1:0".into(), source };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("rates-server")
        .enable_all()
        .build()
        .map_err(io_err)?;
    // A deep backlog: at the connection cap, or when a client opens
    // thousands of connections at once, newcomers wait there rather than
    // have their connection attempts dropped and retried a second later.
    let listener = {
        let _in_runtime = runtime.enter();
        listen(SocketAddr::from(([127, 0, 0, 1], 0))).map_err(io_err)?
    };
    let addr = listener.local_addr().map_err(io_err)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app_state = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name("rates-server".into())
        .spawn(move || {
            runtime.block_on(async move {
                let _ = run(listener, app_state, async {
                    let _ = stop_rx.await;
                })
                .await;
            });
            // Tasks still running past the grace period are dropped here.
            runtime.shutdown_timeout(Duration::from_millis(100));
        })
        .map_err(io_err)?;
    Ok(RunningServer { url: format!("http://{addr}"), addr, shared, stop: Some(stop_tx), thread: Some(thread) })
}

/// Serves on `listener` until `shutdown` resolves, then lets in-flight
/// requests finish for at most a grace period. The connection limits of
/// the options apply (see [`ConnLimits`]); accept errors are counted and
/// retried, never returned.
pub async fn run(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // On a worker of the runtime, not the thread that awaits this: the
    // connection tasks the loop spawns then start in that worker's own
    // queue, with no hand-off to wake another thread for each connection.
    match tokio::spawn(conn::serve(listener, shared, shutdown, GRACE)).await {
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Cancelled only when the runtime shuts down.
        Ok(()) | Err(_) => Ok(()),
    }
}

/// Serves at `addr` (the `rates serve` command) until Ctrl-C or SIGTERM.
pub async fn serve(addr: &str, dataset: Arc<Dataset>, options: ServerOptions) -> Result<(), ServeError> {
    let shared = Shared::new(dataset, options)?;
    let io_err = |source| ServeError::Io { addr: addr.to_string(), source };
    let listener = bind(addr).await.map_err(io_err)?;
    let local = listener.local_addr().map_err(io_err)?;
    // Listen for signals before telling anyone where to connect.
    let stop = shutdown_signal();
    eprintln!("rates server listening on http://{local} (Ctrl-C to stop)");
    run(listener, shared, stop).await.map_err(io_err)
}

/// A [`listen`]er on the first of `addr`'s addresses that can be bound, as
/// tokio's `bind` tries them.
async fn bind(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        match listen(a) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "could not resolve to any address")))
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM ([`signals::Signals`]). The
/// handlers are installed when this is called, not when the future is
/// first polled, so a signal that arrives in between is not lost (nor
/// kills the process). Call it inside a tokio runtime; if the handlers
/// cannot be installed, it never resolves.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    let signals = signals::Signals::install().ok();
    async move {
        match signals {
            Some(mut s) => {
                s.next().await;
            }
            None => std::future::pending().await,
        }
    }
}
