//! The queue's side of `rates`: `rates queue status`, and the run of a
//! `fetch` or `history` whose requests go to a queue's workers
//! (`--queue`), a `history`'s as a job that can be resumed
//! ([`run_job`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Subcommand};
use concur::{AsyncResult, CancelToken, Pool, Task, TaskError, codec};
use concur_redis::{Keys, QueueError, QueueKey, QueueStatus, RedisPool, RedisPoolBuilder, RedisThrottle};
use rates_core::models::{FetchOnce, Job, SharedLimit};
use rates_core::{FetchError, Fetcher, Outcome, Progress, RateRequest, Workers, models};

use crate::flags;
use crate::queue_url::shown;
use crate::{Usage, exit};
use concur::throttle::Quota;

/// `rates queue`: look at a queue.
#[derive(Debug, Args)]
pub struct QueueArgs {
    #[command(subcommand)]
    pub command: QueueCommand,
}

/// The subcommands of `rates queue`.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Tasks queued, in flight per worker, dead letters, and workers seen.
    Status(flags::QueueFlags),
}

pub(crate) fn run_command(args: QueueArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        QueueCommand::Status(q) => {
            let url = crate::queue_url::of_queue(&q)?;
            let status = concur_redis::queue_status(&url, concur_redis::DEFAULT_NAMESPACE)?;
            print!("{}", render(&status, now()));
            Ok(exit::code(exit::SUCCESS))
        }
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The status as lines for a terminal.
fn render(status: &QueueStatus, now: u64) -> String {
    let mut out = String::new();
    let in_flight: u64 = status.in_flight.iter().map(|(_, n)| n).sum();
    let _ = writeln!(out, "queued: {}", status.queued);
    let _ = writeln!(out, "in flight: {in_flight}");
    for (worker, n) in &status.in_flight {
        let _ = writeln!(out, "  {worker}: {n}");
    }
    let _ = writeln!(out, "dead letters: {}", status.dead_letters);
    let _ = writeln!(out, "workers seen: {}", status.workers.len());
    for w in &status.workers {
        let _ = writeln!(out, "  {}: {}s ago", w.name, now.saturating_sub(w.last_seen));
    }
    out
}

/// Runs `items` of `job` on the workers of the queue at `url`, `workers`
/// in flight at once. What the job keeps around each task (the fetcher's
/// throttle and retries) stays here, so `--rate` holds across every worker
/// on every host; cancelling the job abandons what is still queued.
pub(crate) fn run<J: Job>(url: &str, job: &J, items: &[J::Item], workers: Workers) -> anyhow::Result<Vec<J::Output>> {
    let mut pool = keyed(RedisPool::builder(url))?;
    if let Some(cancel) = job.cancel() {
        pool = pool.cancel_on(cancel.clone());
    }
    let pool = pool.build().map_err(|e| match e {
        QueueError::KeyRequired(host) => key_required(&host),
        other => anyhow::Error::new(other).context(format!("cannot use the queue at {}", shown(url))),
    })?;
    warn_if_no_worker(url);
    Ok(models::run_on_pool(&pool, job, items, workers))
}

/// What a task may take beyond its request's timeouts before its worker
/// ends it.
const TASK_MARGIN: std::time::Duration = std::time::Duration::from_secs(5);

/// The environment variable that holds the queue's key.
pub(crate) const KEY_ENV: &str = "RATES_QUEUE_KEY";

/// The key read from `--queue-key-file`, when given.
static KEY_FROM_FILE: OnceLock<QueueKey> = OnceLock::new();

/// `--queue-key-file PATH`: reads the key (its first line, at least 16
/// bytes) at once, so a bad file is a usage error before any work, and
/// keeps it for the queue's callers and worker of this process.
pub(crate) fn key_file(path: &str) -> Result<std::path::PathBuf, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the queue's key from {path}: {e}"))?;
    let key = QueueKey::new(text.lines().next().unwrap_or("").trim().as_bytes()).map_err(|e| format!("{path}: {e}"))?;
    let _ = KEY_FROM_FILE.set(key);
    Ok(path.into())
}

/// The queue's key: `--queue-key-file`'s, else `RATES_QUEUE_KEY`'s, else
/// none (then only a broker on this host is used).
pub(crate) fn key() -> Result<Option<QueueKey>, Usage> {
    if let Some(key) = KEY_FROM_FILE.get() {
        return Ok(Some(key.clone()));
    }
    match std::env::var(KEY_ENV) {
        Ok(secret) if !secret.trim().is_empty() => {
            QueueKey::new(secret.trim().as_bytes()).map(Some).map_err(|e| Usage(format!("{KEY_ENV}: {e}")))
        }
        _ => Ok(None),
    }
}

/// `builder` with the queue's key, if one is given.
fn keyed(builder: RedisPoolBuilder) -> Result<RedisPoolBuilder, Usage> {
    Ok(match key()? {
        Some(key) => builder.key(key),
        None => builder,
    })
}

/// The one line that says how to give the key a remote broker needs.
pub(crate) fn key_required(host: &str) -> anyhow::Error {
    anyhow::Error::new(Usage(format!(
        "--queue: the broker {host} is not on this host, so its tasks must be signed: give the queue's key \
         (16 bytes or more, the same on callers and workers) in {KEY_ENV} or with --queue-key-file PATH"
    )))
}

/// How long a job outlives a run that stopped (the pool's default
/// `job_ttl`): the window in which `--resume` can take it up.
pub(crate) const RESUMABLE_FOR: &str = "60 s";

/// The bits of a task id that number an item's attempts: a task id is
/// `item << ATTEMPT_BITS | attempt`.
const ATTEMPT_BITS: u32 = 20;
const LAST_ATTEMPT: u64 = (1 << ATTEMPT_BITS) - 1;

fn task_id(item: u64, attempt: u64) -> u64 {
    (item << ATTEMPT_BITS) | attempt.min(LAST_ATTEMPT)
}

/// A `history`'s requests as a job of the queue that a later run can
/// resume (`--resume`) after this one was stopped.
pub(crate) struct QueueJob {
    /// The job to take up, or `None` to start one.
    pub resume: Option<String>,
    /// What the job is (the command's base, symbols and range): a run
    /// resuming it must describe the same.
    pub about: String,
    /// Each request's item number in the job (its day's place in the whole
    /// range, whichever days this run asks for), so two runs name a day
    /// alike.
    pub items: Vec<u64>,
    /// Told about each request the job had already answered, as the
    /// fetcher tells about the others.
    pub progress: Option<Progress>,
    /// The job's id, once started or taken up.
    pub id: OnceLock<String>,
}

/// Runs a `history`'s `requests` as the job `spec` on the queue at `url`,
/// `workers` in flight at once: the job's id is said at the start, and a
/// resumed job's answers are taken as they are.
///
/// Each request is one item of the job; each attempt at it (the fetcher's
/// retries stay here) is one task, whose id is the item's number and the
/// attempt's. Resuming, an item with a good answer among its tasks is
/// done: it is neither fetched nor queued. An item whose task is still in
/// the work stream (queued, or held by a worker when the first run
/// stopped) waits for that task's answer rather than queue another: the
/// day is fetched once, at the price of waiting for that task's worker
/// (or, if it died, for another to claim the task). Any other item is
/// fetched, its attempts numbered after those the job has seen.
///
/// # Errors
///
/// An unknown, finished or expired job, or one of other requests, is
/// refused as a usage error (exit 2); a broker that cannot be reached is
/// an error.
pub(crate) fn run_job(
    url: &str,
    fetcher: &Fetcher,
    requests: &[RateRequest],
    workers: Workers,
    spec: &QueueJob,
) -> anyhow::Result<Vec<Outcome>> {
    // A task's time: its request's, with room for its worker to take it up.
    let config = fetcher.config();
    let mut builder = keyed(RedisPool::builder(url))?
        .describe(&spec.about)
        .cancel_on(fetcher.cancel().clone())
        .task_limit(config.connect_timeout + config.timeout + TASK_MARGIN);
    if let Some(job) = &spec.resume {
        builder = builder.resume(job);
    }
    let pool = builder.build().map_err(|e| match e {
        QueueError::UnknownJob(job) => anyhow::Error::new(Usage(format!(
            "--resume {job}: no such job on {} (unknown, finished, or expired: a stopped run can be resumed \
             for {RESUMABLE_FOR})",
            shown(url)
        ))),
        QueueError::NotTheSameJob { job, was, .. } => anyhow::Error::new(Usage(format!(
            "--resume {job}: that job is {was}, not {}: give the stopped run's --base, --symbols, --from and --to",
            spec.about
        ))),
        QueueError::KeyRequired(host) => key_required(&host),
        other => anyhow::Error::new(other).context(format!("cannot use the queue at {}", shown(url))),
    })?;
    let job = pool.job().to_owned();
    eprintln!("rates: job {job} (resume with --resume {job})");
    let _ = spec.id.set(job);
    warn_if_no_worker(url);

    // What the job holds, per item: a good answer, the last attempt seen,
    // a task still in the work stream.
    let mut done: HashMap<u64, rates_core::Rates> = HashMap::new();
    let mut attempts: HashMap<u64, u64> = HashMap::new();
    for id in pool.answered() {
        let (item, attempt) = (id >> ATTEMPT_BITS, id & LAST_ATTEMPT);
        let seen = attempts.entry(item).or_default();
        *seen = (*seen).max(attempt + 1);
        if let Some(Ok(Ok(reply))) = pool.answer::<FetchOnce>(id) {
            done.entry(item).or_insert(reply.rates);
        }
    }
    let mut carried: HashMap<u64, u64> = HashMap::new();
    for id in pool.still_queued() {
        let (item, attempt) = (id >> ATTEMPT_BITS, id & LAST_ATTEMPT);
        let seen = attempts.entry(item).or_default();
        *seen = (*seen).max(attempt + 1);
        carried.insert(item, id);
    }

    let mut outcomes: Vec<Option<Outcome>> = (0..requests.len()).map(|_| None).collect();
    let mut todo = Vec::new();
    for (i, item) in spec.items.iter().enumerate().take(requests.len()) {
        match done.remove(item) {
            Some(rates) => {
                let outcome: Outcome = Ok(rates);
                if let Some(p) = &spec.progress {
                    p(&outcome);
                }
                outcomes[i] = Some(outcome);
            }
            None => todo.push(i),
        }
    }
    let tasks = JobTasks {
        pool: &pool,
        items: todo
            .iter()
            .map(|&i| {
                let item = spec.items[i];
                let next = AtomicU64::new(attempts.get(&item).copied().unwrap_or(0));
                let known = codec::encode(&fetcher.task(&requests[i]), String::new).unwrap_or_default();
                (known, ItemTasks { item, next, carried: Mutex::new(carried.get(&item).copied()) })
            })
            .collect(),
    };
    let todo_requests: Vec<RateRequest> = todo.iter().map(|&i| requests[i].clone()).collect();
    let cancelled_task = FetchError::Worker(TaskError::Cancelled.to_string());
    let fetched = models::run_on_pool(&tasks, fetcher, &todo_requests, workers);
    for (&i, outcome) in todo.iter().zip(fetched) {
        // A task the stop cancelled is a day not fetched (to resume), not a
        // worker's failure.
        outcomes[i] = Some(match outcome {
            Err(f) if fetcher.cancel().is_cancelled() && f.error == cancelled_task => fetcher.cancelled(),
            other => other,
        });
    }
    Ok(outcomes.into_iter().map(|o| o.unwrap_or_else(|| fetcher.failed("no thread could run it".into()))).collect())
}

/// The job's pool as this run's requests see it. A task is known by its
/// encoding: every attempt at a request is the same task
/// ([`Fetcher::task`]), so its bytes name its item. Each task is that
/// item's next attempt, queued under the attempt's id; an item's first
/// task waits for the one the job still had queued, if any. A task of no
/// item is queued under an id the pool picks.
struct JobTasks<'a> {
    pool: &'a RedisPool,
    items: HashMap<Vec<u8>, ItemTasks>,
}

/// One item's attempts.
struct ItemTasks {
    item: u64,
    /// The next attempt's number.
    next: AtomicU64,
    /// The item's task the job still had in the work stream.
    carried: Mutex<Option<u64>>,
}

impl Pool for JobTasks<'_> {
    fn imap_unordered<T: Task>(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> impl Iterator<Item = (usize, Result<T::Output, TaskError>)> {
        let handles: Vec<AsyncResult<T::Output>> = items.into_iter().map(|t| self.apply_async(t)).collect();
        handles.into_iter().enumerate().map(|(i, h)| (i, h.wait()))
    }

    fn apply_async<T: Task>(&self, task: T) -> AsyncResult<T::Output> {
        let item = codec::encode(&task, String::new).ok().and_then(|bytes| self.items.get(&bytes));
        let Some(item) = item else {
            return self.pool.apply_async(task);
        };
        let carried = concur::sync::lock(&item.carried).take();
        let id = carried.unwrap_or_else(|| task_id(item.item, item.next.fetch_add(1, Ordering::Relaxed)));
        self.pool.apply_with_id(id, task)
    }
}

/// Says so when no worker serves the queue yet (not an error: workers may
/// be started after the run).
fn warn_if_no_worker(url: &str) {
    if concur_redis::queue_status(url, concur_redis::DEFAULT_NAMESPACE).is_ok_and(|s| s.workers.is_empty()) {
        let url = shown(url);
        eprintln!("rates: no worker serves {url} yet: the requests wait for one (start `rates worker --queue {url}`)");
    }
}

/// `--rate` with `--queue`: a limit kept on the queue's broker, shared by
/// every caller of the same API through it.
struct SharedThrottle(RedisThrottle);

impl SharedLimit for SharedThrottle {
    fn acquire_cancellable(&self, cancel: &CancelToken) -> Result<(), concur::Cancelled> {
        self.0.acquire_cancellable(cancel)
    }
}

/// The shared limit of `quota` for requests to `api`, on the broker at `url`.
pub(crate) fn shared_limit(url: &str, api: &str, quota: Quota) -> anyhow::Result<Arc<dyn SharedLimit>> {
    let throttle = RedisThrottle::new(url, &Keys::default().limit(api), quota)
        .with_context(|| format!("cannot use the queue at {}", shown(url)))?;
    Ok(Arc::new(SharedThrottle(throttle)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        let mut status = QueueStatus::default();
        status.queued = 3;
        status.in_flight = vec![("a-1".into(), 2), ("b-2".into(), 1)];
        status.dead_letters = 1;
        let text = render(&status, 100);
        assert_eq!(text, "queued: 3\nin flight: 3\n  a-1: 2\n  b-2: 1\ndead letters: 1\nworkers seen: 0\n");
    }
}
