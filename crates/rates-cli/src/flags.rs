//! The raw flags the user typed, one clap group per concern, declared once
//! and flattened into every subcommand that takes them, so an option is
//! spelled the same everywhere. Nothing here is checked beyond its syntax:
//! `config.rs` turns these into the validated configuration a run
//! uses, once, before any work.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::parse;

/// Where the requests go and how each is made (`fetch`, `history`, `bench`).
#[derive(Debug, Clone, Args)]
pub struct ClientFlags {
    /// The API's base URL; without it an embedded server over the ECB data is started.
    #[arg(long, env = "RATES_API")]
    pub api: Option<String>,
    /// A newer eurofxref-hist.csv or .zip for the embedded server and for checking codes.
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// At most this many requests per second, across all workers; `auto`
    /// learns it from the server's 429s, Retry-After and rate-limit headers.
    #[arg(long, value_parser = parse::rate_or_auto, value_name = "R|auto")]
    pub rate: Option<parse::RateArg>,
    /// With --rate: requests allowed at once after a quiet spell.
    #[arg(long, default_value = "1", requires = "rate", value_name = "B")]
    pub burst: NonZeroU32,
    /// Retries per request on 5xx, 429, timeouts and connection errors [default: 3; bench: 0].
    #[arg(long, value_name = "K")]
    pub retries: Option<u32>,
    /// Time limit of one request.
    #[arg(long, value_parser = parse::timeout, default_value = "10s")]
    pub timeout: Duration,
    /// Run every request on the workers of this Redis queue
    /// (redis://[USER:PASSWORD@]HOST[:PORT][/DB], rediss:// for TLS; start
    /// them with `rates worker`): --model
    /// (--models) is then ignored, --workers bounds the requests in flight,
    /// --rate is one limit on the broker for every caller and worker.
    #[arg(long, value_name = "URL")]
    pub queue: Option<String>,
    /// --queue's URL from the first line of this file, so its password is
    /// not on the command line; without either, RATES_QUEUE.
    #[arg(long, value_name = "PATH", conflicts_with = "queue")]
    pub queue_file: Option<PathBuf>,
    /// With a rediss:// queue: check the broker's certificate against the
    /// CA certificates of this PEM file instead of the Web PKI roots.
    #[arg(long, env = "RATES_QUEUE_CA", value_name = "PATH")]
    pub queue_ca: Option<PathBuf>,
    /// The queue's shared key (16 bytes or more, the same on callers and
    /// workers) from the first line of this file; without it,
    /// RATES_QUEUE_KEY. Tasks and answers are signed with it; a broker not
    /// on this host is refused without one.
    #[arg(long, value_name = "PATH", value_parser = crate::queue::key_file)]
    pub queue_key_file: Option<PathBuf>,
}

/// Where a queue is and which one (`worker`, `queue status`).
#[derive(Debug, Clone, Args)]
pub struct QueueFlags {
    /// The Redis queue: redis://[USER:PASSWORD@]HOST[:PORT][/DB], or
    /// rediss://... for TLS (one queue per database); without it or
    /// --queue-file, RATES_QUEUE.
    #[arg(long, value_name = "URL")]
    pub queue: Option<String>,
    /// The queue's URL from the first line of this file, so its password
    /// is not on the command line.
    #[arg(long, value_name = "PATH", conflicts_with = "queue")]
    pub queue_file: Option<PathBuf>,
    /// With a rediss:// queue: check the broker's certificate against the
    /// CA certificates of this PEM file instead of the Web PKI roots.
    #[arg(long, env = "RATES_QUEUE_CA", value_name = "PATH")]
    pub queue_ca: Option<PathBuf>,
}

/// The embedded server's simulated network and faults (`fetch`, `history`,
/// `bench`), to watch retries and throttling work without a flaky network.
#[derive(Debug, Clone, Args)]
#[command(group = clap::ArgGroup::new("sim_limited").args(["sim_rate_limit", "sim_public"]).multiple(false))]
pub struct SimFlags {
    /// Embedded server: latency of every answer [default: 100ms; bench: 20ms].
    #[arg(long, alias = "latency", value_parser = parse::duration, value_name = "T", conflicts_with = "api")]
    pub sim_latency: Option<Duration>,
    /// Embedded server: random extra latency up to this much.
    #[arg(long, alias = "jitter", value_parser = parse::duration, default_value = "0", conflicts_with = "api")]
    pub sim_jitter: Duration,
    /// Embedded server: fraction of requests that fail with 500.
    #[arg(long, alias = "fail-rate", value_parser = parse::fraction, default_value = "0", conflicts_with = "api")]
    pub sim_fail_rate: f64,
    /// Embedded server: requests per second allowed per client and route
    /// (/rates, /currencies); over it, a 429 as the public service's.
    #[arg(long, value_parser = parse::rate, value_name = "R", conflicts_with = "api")]
    pub sim_rate_limit: Option<f64>,
    /// Embedded server: burst of --sim-rate-limit.
    #[arg(long, default_value = "1", requires = "sim_rate_limit", value_name = "B")]
    pub sim_burst: NonZeroU32,
    /// Embedded server: the public service (api.vatcomply.com) in one flag:
    /// 2 requests per second with a burst of 4, per client and route, its
    /// 429 past them, nothing said of the limit on a served answer; the
    /// latency is still --sim-latency's.
    #[arg(long, conflicts_with = "api")]
    pub sim_public: bool,
    /// Embedded server: every answer under the rate limit also carries the
    /// IETF RateLimit-Policy and RateLimit headers (the public service sends none).
    #[arg(long, requires = "sim_limited")]
    pub sim_rate_limit_headers: bool,
    /// No rate-limit headers on served answers: the default now, kept so
    /// that older command lines still run.
    #[arg(long, hide = true, conflicts_with = "sim_rate_limit_headers")]
    pub sim_no_rate_limit_headers: bool,
    /// Embedded server: serves at most N requests at once, the rest wait their turn.
    #[arg(long, value_parser = parse::capacity, value_name = "N", conflicts_with = "api")]
    pub sim_capacity: Option<usize>,
}

/// The faults `rates serve` injects into its own answers.
#[derive(Debug, Clone, Args)]
#[command(group = clap::ArgGroup::new("limited").args(["rate_limit", "public"]).multiple(false))]
pub struct FaultFlags {
    /// Every answer waits this long (e.g. 50ms).
    #[arg(long, value_parser = parse::duration, default_value = "0")]
    pub latency: Duration,
    /// Plus a random extra delay up to this much.
    #[arg(long, value_parser = parse::duration, default_value = "0")]
    pub jitter: Duration,
    /// This fraction of requests answers 500 (e.g. 0.2 or 20%).
    #[arg(long, value_parser = parse::fraction, default_value = "0")]
    pub fail_rate: f64,
    /// Per client IP and route (/rates, /currencies), at most this many
    /// requests per second; over it, a 429 as the public service's
    /// (Retry-After, X-RateLimit-Limit, X-RateLimit-Burst).
    #[arg(long, value_parser = parse::rate, value_name = "R")]
    pub rate_limit: Option<f64>,
    /// With --rate-limit: requests allowed at once.
    #[arg(long, default_value = "1", requires = "rate_limit", value_name = "B")]
    pub burst: NonZeroU32,
    /// Behave as the public service (api.vatcomply.com): 2 requests per
    /// second with a burst of 4, per client and route, its 429 past them,
    /// nothing said of the limit on a served answer.
    #[arg(long)]
    pub public: bool,
    /// Under a rate limit, every answer also carries the IETF
    /// RateLimit-Policy and RateLimit headers (the public service sends none).
    #[arg(long, requires = "limited")]
    pub rate_limit_headers: bool,
    /// No rate-limit headers on served answers: the default now, kept so
    /// that older command lines still run.
    #[arg(long, hide = true, conflicts_with = "rate_limit_headers")]
    pub no_rate_limit_headers: bool,
    /// Serve at most N requests at once; the rest wait their turn, so
    /// latency grows with load, as on a saturated server.
    #[arg(long, value_parser = parse::capacity, value_name = "N")]
    pub capacity: Option<usize>,
}

/// How `rates serve` protects itself from clients that hold connections.
#[derive(Debug, Clone, Args)]
pub struct ConnFlags {
    /// A connection must send a whole request head within this long (from
    /// accept, or from the first byte of a keep-alive connection's next request).
    #[arg(long, value_parser = parse::duration, default_value = "10s", value_name = "DURATION")]
    pub header_timeout: Duration,
    /// A keep-alive connection idle this long between requests is closed.
    #[arg(long, value_parser = parse::duration, default_value = "30s", value_name = "DURATION")]
    pub idle_timeout: Duration,
    /// At most this many connections open; at the cap a new one closes the
    /// connection that has waited longest for a request (or, if all are busy,
    /// waits in the listen backlog).
    #[arg(long, default_value_t = rates_server::ConnLimits::default().max_connections, value_name = "N")]
    pub max_connections: usize,
}

/// Where the local store of answers is (`history`, `cache`).
#[derive(Debug, Clone, Args)]
pub struct CacheFlag {
    /// Folder of the store of answers from --api [default: $XDG_CACHE_HOME/rates, else ~/.cache/rates].
    #[arg(long, env = "RATES_CACHE", value_name = "DIR")]
    pub cache: Option<PathBuf>,
}

/// How `history` uses the local store of an external API's answers.
#[derive(Debug, Clone, Args)]
pub struct StoreFlags {
    /// The store's folder.
    #[command(flatten)]
    pub dir: CacheFlag,
    /// Answer from the store alone, making no request; days not stored are named.
    #[arg(long, conflicts_with = "no_cache")]
    pub offline: bool,
    /// Neither read nor write the store.
    #[arg(long)]
    pub no_cache: bool,
    /// Answers about the last two days (which may be published late) are asked again once this old.
    #[arg(long, value_parser = parse::duration, default_value = "1h", value_name = "DURATION")]
    pub max_age: Duration,
}

/// Where a run's trace goes (`fetch`, `history`, `worker`).
#[derive(Debug, Clone, Args)]
pub struct TraceFlag {
    /// Write a trace of the run to this file as it goes (Chrome's Trace
    /// Event format, JSON, for Perfetto's UI): every request, wait, retry
    /// and 429 on the track of the thread, task or process that made it.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
}

impl TraceFlag {
    /// The trace, created now (before any request), of a process called
    /// `process`; a path that cannot be written is a usage error naming it.
    pub fn open(&self, process: &str) -> Result<Option<rates_core::Trace>, crate::Usage> {
        self.trace
            .as_deref()
            .map(|p| {
                rates_core::Trace::create(p, process).map_err(|e| crate::Usage(format!("--trace {}: {e}", p.display())))
            })
            .transpose()
    }
}
