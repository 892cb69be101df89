//! The pool across hosts: the [`Pool`](concur::Pool) interface of
//! `concur` over Redis Streams, with workers on any machine that reaches
//! the broker.
//!
//! The chapter's two-way queues, on a broker instead of in memory: tasks go
//! to one work stream, read by a consumer group that every worker joins;
//! each result comes back on the results stream of the job (one
//! [`RedisPool`] is one job). Tasks are `concur`'s [`Task`](concur::Task)s
//! in its [`codec`](concur::codec), so any program that calls
//! [`concur::worker_main`] can also serve a queue with [`serve_queue`] and
//! the same [`Registry`](concur::Registry). A [`RedisThrottle`] is one
//! rate limit for every caller, on the broker's clock; [`queue_status`]
//! says what a queue holds.
//!
//! ```no_run
//! use concur::{Pool, Registry, Task};
//! use concur_redis::{RedisPool, WorkerOptions, serve_queue};
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Serialize, Deserialize)]
//! # struct Square(u64);
//! # impl Task for Square {
//! #     type Output = u64;
//! #     const NAME: &'static str = "square";
//! #     fn run(self) -> u64 { self.0 * self.0 }
//! # }
//! # fn worker() -> Result<(), concur_redis::QueueError> {
//! // On each worker host, until its stop token is cancelled:
//! serve_queue("redis://127.0.0.1:6379/0", Registry::new().register::<Square>(), WorkerOptions::new())?;
//! # Ok(())
//! # }
//! // The caller: one more `Pool`.
//! let pool = RedisPool::connect("redis://127.0.0.1:6379/0")?;
//! let squares = pool.map((1..=4).map(Square));
//! # Ok::<(), concur_redis::QueueError>(())
//! ```
//!
//! The names of the broker's keys are [`Keys`]'.
//!
//! # Guarantees
//!
//! - **At-least-once execution.** A worker acknowledges a task in the same
//!   transaction that writes its result. A worker that dies holding tasks
//!   (SIGKILL, a host gone) leaves them pending in the group; another
//!   worker claims them (`XAUTOCLAIM`) once they have been idle for
//!   `claim_after`. A live worker renews its claim on what it runs, so a
//!   long task is not taken from it.
//! - **Exactly-once results.** Every task has an id in its job; the pool
//!   gives the first result for an id to the caller and drops later ones
//!   (a slow worker finishing a task that was also claimed and finished).
//! - **Dead letters.** A task delivered more than `max_deliveries` times
//!   without an answer goes to the dead-letter stream, and the caller gets
//!   [`TaskError::Failed`](concur::TaskError::Failed) for it, beginning with
//!   `dead letter:`.
//! - **Nothing runs forever for a dead caller.** A job lives while its
//!   caller renews a key with a time to live; workers skip (acknowledge
//!   without running) the tasks of a job whose key has expired, and a
//!   job's results stream expires too.
//! - **An interrupted job can be resumed.** A job started with a
//!   description ([`RedisPoolBuilder::describe`]) and given up by its
//!   caller (cancelled, or the caller killed) is left for its `job_ttl`:
//!   workers go on with its tasks still queued, and a new caller that
//!   names it ([`RedisPoolBuilder::resume`]) gets the answers already
//!   given back ([`RedisPool::answered`]) and waits for the tasks still in
//!   the work stream instead of queueing them again. Tasks queued with
//!   [`RedisPool::apply_with_id`] keep their ids across the two callers.
//! - **A broker restart loses nothing** when Redis runs with
//!   `appendonly yes` and `appendfsync always`; both sides reconnect and
//!   go on. (With the default `appendfsync everysec`, a crash can lose the
//!   last second of writes: a lost task is then never answered, and the
//!   caller fails it when its job's time runs out.)
//! - **A lost task is noticed.** A caller looks for its tasks every 5 s: one
//!   neither queued, held by a worker nor answered at two looks in a row
//!   (the broker was flushed, or restarted without its data) is queued
//!   again, at most twice, then fails; both are said on stderr. So a lost
//!   task is queued again or failed within about 15 s.
//!
//! # The broker is not trusted
//!
//! Anyone who can write to the broker can add entries, so with a
//! [`QueueKey`] (the same on callers and workers) every task and result
//! carries an HMAC-SHA256 tag over all the other side acts on. A worker
//! sends a task whose tag is missing or wrong, or that is malformed or out
//! of range (a time to live over 7 days), to the dead letters with the
//! reason, running nothing; a caller drops such a result, or one for a task
//! it never queued, and says so once (a `tracing` warning). Without a key,
//! [`RedisPool`] and [`serve_queue`] use only a broker on this host
//! (loopback, or a Unix socket): [`QueueError::KeyRequired`] otherwise.
//!
//! A worker bounds what a task asks: each task runs at most its own limit
//! ([`RedisPoolBuilder::task_limit`]) within the worker's
//! ([`WorkerOptions::task_limit`], 10 minutes by default); past it the task
//! is answered with an error, acknowledged, and its slot goes to the next
//! task (its claim is no longer renewed). A broker that answers a command
//! with an error (a key of the wrong type, a value out of range) fails the
//! entries concerned (dead letters, with the reason), not the worker; a
//! caller fails the tasks concerned at once instead of retrying. A caller
//! given a cancel token ([`RedisPoolBuilder::cancel_on`]) gives up within
//! a tenth of a second of its cancellation, whatever the broker does.
//!
//! # The broker's URL
//!
//! `redis://[USER:PASSWORD@]HOST[:PORT][/DB]`, or `rediss://...` for TLS
//! to the broker (rustls): its certificate is checked against the Web PKI
//! roots, or against the CA certificates of the PEM file that the
//! `ssl_ca_certs` query parameter names ([`with_ca_file`]); the check
//! cannot be turned off. [`check_url`] says what is wrong with a URL. The
//! password is never shown: errors, log lines and `Debug` output show the
//! URL as [`redact_url`] does (`redis://alice:***@host/0`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod pool;
mod redis_value;
mod seal;
mod status;
mod throttle;
mod url;
mod worker;

pub use pool::{RedisPool, RedisPoolBuilder};
pub use seal::QueueKey;
pub use status::{QueueStatus, WorkerSeen, queue_status};
pub use throttle::RedisThrottle;
pub use url::{CA_PARAM, check_url, redact_url, with_ca_file};
pub use worker::{WorkerOptions, serve_queue};

use std::time::Duration;

/// Why the queue could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The broker refused or dropped a command (with the command's
    /// purpose).
    #[error("redis: {what}: {source}")]
    Redis {
        /// What was being done.
        what: String,
        /// The client's error.
        source: redis::RedisError,
    },
    /// An option or a reply made no sense.
    #[error("{0}")]
    Invalid(String),
    /// A broker on another host without a [`QueueKey`]: whoever can write
    /// to it could make the workers run anything.
    #[error(
        "the queue on {0} needs a key (the same on callers and workers): without one, only a broker on this host is used"
    )]
    KeyRequired(String),
    /// [`resume`](RedisPoolBuilder::resume): no such job on the broker
    /// (never started, finished, or expired: a job outlives its caller by
    /// its `job_ttl` only).
    #[error("no job {0} to resume: unknown, finished, or expired")]
    UnknownJob(String),
    /// [`resume`](RedisPoolBuilder::resume): the job was started for other
    /// work than the description given.
    #[error("job {job} was started for {was:?}, not {asked:?}")]
    NotTheSameJob {
        /// The job's id.
        job: String,
        /// The description the job was started with.
        was: String,
        /// The description given to resume it.
        asked: String,
    },
}

impl QueueError {
    fn redis(what: impl Into<String>) -> impl FnOnce(redis::RedisError) -> QueueError {
        let what = what.into();
        move |source| QueueError::Redis { what, source }
    }
}

/// The names of the keys of one queue, under a namespace
/// ([`DEFAULT_NAMESPACE`] unless one is given), so several queues can
/// share one Redis database. The pool, its workers, [`queue_status`] and
/// [`RedisThrottle`]s name keys only through these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    ns: String,
}

/// The consumer group every worker of a queue joins.
pub const GROUP: &str = "workers";

impl Default for Keys {
    fn default() -> Self {
        Keys::new(DEFAULT_NAMESPACE)
    }
}

impl Keys {
    /// The keys of the queue under namespace `ns`.
    pub fn new(ns: &str) -> Self {
        Keys { ns: ns.to_owned() }
    }

    /// The work stream: `job`, `id`, `name`, `payload`, `ttl` per entry.
    pub fn tasks(&self) -> String {
        format!("{}:tasks", self.ns)
    }

    /// Tasks delivered too often, or refused: `job`, `id`, `name`, and
    /// `deliveries` or `reason`, and the `worker` that put them there.
    pub fn dead(&self) -> String {
        format!("{}:dead", self.ns)
    }

    /// Workers seen: consumer name → unix time of its last sign of life.
    pub fn workers(&self) -> String {
        format!("{}:workers", self.ns)
    }

    /// A job's results: `id`, `answer` (the task's answer in `concur`'s
    /// codec), `worker`.
    pub fn results(&self, job: &str) -> String {
        format!("{}:job:{job}:results", self.ns)
    }

    /// Exists while the job's caller lives (it renews the time to live).
    pub fn alive(&self, job: &str) -> String {
        format!("{}:job:{job}:alive", self.ns)
    }

    /// What a resumable job is (its description), with the job's time to
    /// live: a caller resuming it must give the same.
    pub fn about(&self, job: &str) -> String {
        format!("{}:job:{job}:about", self.ns)
    }

    /// The state of the [`RedisThrottle`] called `name`: one limit shared
    /// by every caller that names it.
    pub fn limit(&self, name: &str) -> String {
        format!("{}:limit:{name}", self.ns)
    }
}

/// The default namespace of keys.
pub const DEFAULT_NAMESPACE: &str = "concur";

/// Whole seconds, at least one (Redis expiry times).
pub(crate) fn secs(d: Duration) -> u64 {
    d.as_secs().max(1)
}

/// Makes the consumer group (and the stream) unless they exist.
pub(crate) fn ensure_group(con: &mut redis::Connection, keys: &Keys) -> redis::RedisResult<()> {
    let made: redis::RedisResult<()> =
        redis::cmd("XGROUP").arg("CREATE").arg(keys.tasks()).arg(GROUP).arg("0").arg("MKSTREAM").query(con);
    match made {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// A connection to `client`, with a bound on how long any reply may take
/// (blocking reads add their own block time to it).
pub(crate) fn connect(client: &redis::Client, reply_within: Duration) -> redis::RedisResult<redis::Connection> {
    let con = client.get_connection_with_timeout(reply_within)?;
    con.set_read_timeout(Some(reply_within))?;
    con.set_write_timeout(Some(reply_within))?;
    Ok(con)
}

/// Whether a command failed because the connection did (refused, dropped,
/// timed out): the broker is away, and reconnecting may help. Any other
/// error is the broker's answer (a key of the wrong type, a value out of
/// range), which the same command would get again.
pub(crate) fn broker_lost(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

/// A fresh random hex id (a job's).
pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 8];
    // Without randomness, time and pid still make a job id unique enough.
    if getrandom::fill(&mut bytes).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        bytes = (t.as_nanos() as u64 ^ u64::from(std::process::id())).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
