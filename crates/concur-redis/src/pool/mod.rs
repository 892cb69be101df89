//! The caller's side: [`RedisPool`], which queues tasks on the work stream
//! and hands each task's first result to its caller.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::redis_value;
use super::seal::{QueueKey, Seal, check_keyless};
use super::{DEFAULT_NAMESPACE, Keys, QueueError, connect, ensure_group, random_id, secs};
use concur::CancelToken;
use concur::codec::{self, decode};
use concur::pool::{AsyncResult, ImapUnordered, Pool, Task, TaskError};
use concur::sync::lock;

mod builder;
mod collect;
mod resume;
mod shared;

pub use builder::RedisPoolBuilder;
use collect::{collect, watch};

/// How long any one reply of the broker may take before the connection is
/// taken for dead (blocking reads block for less).
const REPLY_WITHIN: Duration = Duration::from_secs(5);
/// How long queueing tasks may wait for the broker's reply before it is
/// asked again: short, so a cancelled caller is never held by a broker that
/// stopped answering (a task queued twice is answered once).
const SUBMIT_REPLY_WITHIN: Duration = Duration::from_secs(1);

/// The last try of a cancelled pool at its job's keys (to renew them for a
/// resume, or delete them): a connection and a command, each within this,
/// so that Ctrl-C ends the run in under a second whatever the broker does
/// (a stopped broker accepts connections and never answers). A broker that
/// misses it loses nothing: the keys expire, or are renewed by `--resume`.
const LAST_TRY_WITHIN: Duration = Duration::from_millis(400);
/// How often the caller looks for its tasks in the work stream: one
/// neither queued, held by a worker nor answered at two looks in a row
/// (the broker lost it: flushed, or restarted without its data) is queued
/// again, so a lost task is noticed within about three times this.
const LOOK_EVERY: Duration = Duration::from_secs(5);
/// Times a lost task is queued again before it fails.
const REQUEUES: u8 = 2;
/// How often a cancelled caller is noticed.
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// How long a blocking read of results waits before it looks around.
const BLOCK: Duration = Duration::from_secs(1);
/// Tasks queued in one round trip.
const SUBMIT_BATCH: usize = 512;
/// Results read in one round trip.
const READ_BATCH: usize = 1024;
/// The pool numbers the tasks it is not given ids for from here up, so
/// they never meet the ids given to [`RedisPool::apply_with_id`].
const AUTO_IDS: u64 = 1 << 63;

/// Completes one task's handle with its answer (the serialised output, or
/// the worker's error); dropping it unanswered cancels the task.
type Waiter = Box<dyn FnOnce(Result<&[u8], TaskError>) + Send>;

/// A [`Pool`] whose workers are processes on any host, reached through
/// Redis Streams: see the [crate docs](crate) for the guarantees.
///
/// Workers are programs that call [`serve_queue`](crate::serve_queue) with
/// a [`Registry`](concur::Registry) holding the tasks sent here. Switching
/// code written against `impl Pool` from processes to hosts is the line
/// that builds the pool:
///
/// ```no_run
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)]
/// # struct Square(u64);
/// # impl concur::Task for Square {
/// #     type Output = u64;
/// #     const NAME: &'static str = "square";
/// #     fn run(self) -> u64 { self.0 * self.0 }
/// # }
/// use concur::Pool;
/// use concur_redis::RedisPool;
///
/// let pool = RedisPool::connect("redis://127.0.0.1:6379/0")?;
/// let squares = pool.map((1..=4).map(Square));
/// # Ok::<(), concur_redis::QueueError>(())
/// ```
///
/// Dropping the pool closes it and waits for what it queued, like
/// [`ProcessPool`](concur::ProcessPool); [`terminate`](Self::terminate)
/// abandons it instead.
pub struct RedisPool {
    shared: Arc<Shared>,
    collector: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    keys: Keys,
    seal: Seal,
    /// The most each task may run, in milliseconds (0: the worker's own).
    limit_ms: u64,
    /// Said once each: answers dropped as forged, or for tasks never asked.
    said_forged: AtomicBool,
    said_unknown: AtomicBool,
    job: String,
    client: redis::Client,
    job_ttl: Duration,
    broker_timeout: Duration,
    cancel: Option<CancelToken>,
    /// What the job is, for a job that can be resumed
    /// ([`RedisPoolBuilder::describe`]).
    about: Option<String>,
    /// What a resumed job left. Locked before `state` when both are.
    found: Mutex<Found>,
    state: Mutex<State>,
    changed: Condvar,
    next_id: AtomicU64,
    closed: AtomicBool,
    /// The job was given up (its cancel token was cancelled).
    abandoned: AtomicBool,
    /// The connection tasks are queued on; `None` after it failed.
    submit: Mutex<Option<redis::Connection>>,
}

/// What a job left for the caller that resumes it.
#[derive(Debug, Default)]
struct Found {
    /// The first answer (its body) of each task answered before this pool
    /// asked for it: read when the job was resumed, or arrived since for a
    /// task of `queued`.
    answers: HashMap<u64, Vec<u8>>,
    /// Tasks of the job still in the work stream (queued, or held by a
    /// worker) when it was resumed, and not asked for since.
    queued: HashSet<u64>,
}

struct State {
    /// Tasks queued and not answered yet, by task id.
    waiting: HashMap<u64, Waiting>,
    /// The ids given to [`RedisPool::apply_with_id`] so far: an answer for
    /// any other id below `AUTO_IDS` was never asked for.
    given: HashSet<u64>,
    /// The pool is being dropped: the results thread ends.
    stopping: bool,
}

/// A lost task to queue again: its id, name and payload.
type Requeue = (u64, &'static str, Vec<u8>);

/// A task waiting for its answer.
struct Waiting {
    waiter: Waiter,
    /// What to queue again if the broker loses it (`None` for a task the
    /// job's earlier caller queued, or one being queued again).
    task: Option<(&'static str, Vec<u8>)>,
    /// Its entry in the work stream, once queued, and when.
    entry: Option<(String, Instant)>,
    /// Looks that found it neither queued, held nor answered, in a row.
    missing: u8,
    requeued: u8,
}

impl Waiting {
    fn new(waiter: Waiter) -> Self {
        Waiting { waiter, task: None, entry: None, missing: 0, requeued: 0 }
    }
}

impl RedisPool {
    /// A pool on the queue at `url` (`redis://HOST:PORT/DB`, or
    /// `rediss://` for TLS: see [the broker's URL](crate#the-brokers-url))
    /// with default options.
    ///
    /// # Errors
    ///
    /// A bad URL, or a broker that cannot be reached.
    pub fn connect(url: &str) -> Result<Self, QueueError> {
        Self::builder(url).build()
    }

    /// Options for a pool on the queue at `url`.
    pub fn builder(url: impl Into<String>) -> RedisPoolBuilder {
        RedisPoolBuilder {
            url: crate::url::QueueUrl(url.into()),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            job_ttl: Duration::from_secs(60),
            broker_timeout: Duration::from_secs(60),
            cancel: None,
            about: None,
            resume: None,
            key: None,
            task_limit: None,
        }
    }

    /// This pool's job id: its keys and its entries in the work stream
    /// carry it.
    pub fn job(&self) -> &str {
        &self.shared.job
    }

    /// Queues `task` under the id `id` (below 2^63) instead of one the pool
    /// picks, so that a caller resuming the job
    /// ([`RedisPoolBuilder::resume`]) can tell its tasks apart: asking for
    /// the same item under the same id in both callers gives it once.
    ///
    /// In a resumed pool, an id whose answer the job already holds gives
    /// that answer at once, without queueing anything; an id whose task is
    /// still in the work stream (queued, or held by a worker) from the
    /// first caller waits for that task's answer instead of queueing it
    /// again. So the task runs once, not twice; the cost is that its answer
    /// comes when the worker holding it finishes, or, if that worker died,
    /// after another claims it (`claim_after`). Queueing it again instead
    /// would run it twice (the duplicate answer would be dropped) to save
    /// that wait.
    ///
    /// An id must not be waiting twice at once (the second gives an
    /// error); once answered, it may be used again for a new task.
    pub fn apply_with_id<T: Task>(&self, id: u64, task: T) -> AsyncResult<T::Output> {
        if self.is_closed() {
            return AsyncResult::ready(Err(TaskError::Closed));
        }
        if id >= AUTO_IDS {
            return AsyncResult::ready(Err(TaskError::Failed(format!(
                "task id {id} is not below 2^63 (the pool numbers its own tasks from there)"
            ))));
        }
        let (tx, handle) = AsyncResult::channel();
        let waiter: Waiter = Box::new(move |answer| {
            tx.complete(answer.and_then(|bytes| decode(bytes, T::NAME)));
        });
        {
            // `found` then `state`, as `arrived` takes them: an answer
            // arriving now is either found here or given to the waiter.
            let mut found = lock(&self.shared.found);
            if let Some(body) = found.answers.get(&id) {
                waiter(answer_of(body, id));
                return handle;
            }
            let mut state = lock(&self.shared.state);
            if state.waiting.contains_key(&id) {
                return AsyncResult::ready(Err(TaskError::Failed(format!("task id {id} is waiting already"))));
            }
            state.given.insert(id);
            if found.queued.remove(&id) {
                state.waiting.insert(id, Waiting::new(waiter));
                return handle;
            }
        }
        if let Some(queued) = self.shared.prepare_as(Some(id), &task, waiter) {
            self.shared.send(T::NAME, vec![queued]);
        }
        handle
    }

    /// The ids whose answers this pool holds without having queued their
    /// tasks: in a resumed pool, the tasks the job answered before (and
    /// those of [`still_queued`](Self::still_queued) answered since), in
    /// order. Empty for a new job.
    pub fn answered(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = lock(&self.shared.found).answers.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// The answer the job holds for task `id`, as
    /// [`answered`](Self::answered) lists them, read as task `T`'s output.
    pub fn answer<T: Task>(&self, id: u64) -> Option<Result<T::Output, TaskError>> {
        let found = lock(&self.shared.found);
        found.answers.get(&id).map(|body| answer_of(body, id).and_then(|bytes| decode(bytes, T::NAME)))
    }

    /// The ids of the job's tasks that were still in the work stream
    /// (queued, or held by a worker) when this pool resumed it, and not
    /// asked for since, in order: [`apply_with_id`](Self::apply_with_id)
    /// waits for their answers rather than queue them again.
    pub fn still_queued(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = lock(&self.shared.found).queued.iter().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Tasks queued and not answered yet.
    pub fn waiting(&self) -> usize {
        lock(&self.shared.state).waiting.len()
    }

    /// Whether new work is refused.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// Refuses new work ([`TaskError::Closed`]); what is queued goes on.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
    }

    /// Refuses new work and abandons what is queued: every waiting task
    /// gives [`TaskError::Cancelled`], and workers skip the job's tasks
    /// they have not started (a task already running finishes, unseen).
    /// The job ends: it cannot be resumed.
    pub fn terminate(&self) {
        self.close();
        let waiting = std::mem::take(&mut lock(&self.shared.state).waiting);
        drop(waiting);
        self.shared.changed.notify_all();
        // Best effort: if the broker is away, the keys expire by themselves.
        if let Ok(mut con) = connect(&self.shared.client, REPLY_WITHIN) {
            let (keys, job) = (&self.shared.keys, &self.shared.job);
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys.alive(job)).arg(keys.about(job)).query(&mut con);
        }
    }

    /// Waits until every queued task has its result (call
    /// [`close`](Self::close) first, or others may keep adding work).
    pub fn join(&self) {
        let state = lock(&self.shared.state);
        let _done = concur::sync::wait_while(&self.shared.changed, state, |s| !s.waiting.is_empty() && !s.stopping);
    }

    fn imap_unordered_tasks<T: Task>(&self, items: impl IntoIterator<Item = T>) -> ImapUnordered<T::Output> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut batch = Vec::new();
        let mut n = 0;
        for (i, task) in items.into_iter().enumerate() {
            n += 1;
            if self.is_closed() {
                let _ = tx.send((i, Err(TaskError::Closed)));
                continue;
            }
            let tx = tx.clone();
            let waiter: Waiter = Box::new(move |answer| {
                let _ = tx.send((i, answer.and_then(|bytes| decode(bytes, T::NAME))));
            });
            if let Some(queued) = self.shared.prepare_as(None, &task, waiter) {
                batch.push(queued);
            }
            if batch.len() >= SUBMIT_BATCH {
                self.shared.send(T::NAME, std::mem::take(&mut batch));
            }
        }
        self.shared.send(T::NAME, batch);
        ImapUnordered::new(rx, n)
    }
}

/// A task's answer out of the body a worker wrote.
fn answer_of(body: &[u8], id: u64) -> Result<&[u8], TaskError> {
    codec::read_answer(body).unwrap_or_else(|| Err(TaskError::Failed(format!("a malformed answer for task {id}"))))
}

impl Pool for RedisPool {
    fn imap_unordered<T: Task>(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> impl Iterator<Item = (usize, Result<T::Output, TaskError>)> {
        self.imap_unordered_tasks(items)
    }

    fn apply_async<T: Task>(&self, task: T) -> AsyncResult<T::Output> {
        if self.is_closed() {
            return AsyncResult::ready(Err(TaskError::Closed));
        }
        let (tx, handle) = AsyncResult::channel();
        let waiter: Waiter = Box::new(move |answer| {
            tx.complete(answer.and_then(|bytes| decode(bytes, T::NAME)));
        });
        if let Some(queued) = self.shared.prepare_as(None, &task, waiter) {
            self.shared.send(T::NAME, vec![queued]);
        }
        handle
    }
}

impl Drop for RedisPool {
    fn drop(&mut self) {
        self.close();
        self.join();
        lock(&self.shared.state).stopping = true;
        self.shared.changed.notify_all();
        // Cancelled counts even if the results thread has not seen it yet:
        // the answers may all have come first, but the caller may have left
        // items unasked.
        if self.shared.cancelled() {
            // Promptly, whatever the broker does: the results thread is left
            // to end by itself, and the keys get one short try.
            if let Ok(mut con) = connect(&self.shared.client, LAST_TRY_WITHIN) {
                if self.shared.about.is_some() {
                    let _ = self.shared.renew(&mut con);
                } else {
                    let (keys, job) = (&self.shared.keys, &self.shared.job);
                    let _: redis::RedisResult<()> =
                        redis::cmd("DEL").arg(keys.results(job)).arg(keys.alive(job)).query(&mut con);
                }
            }
            return;
        }
        // Wakes the results thread from its blocking read, then removes the
        // job's keys (best effort: they expire anyway), or, for a job given
        // up that can be resumed, gives them their whole time to live.
        if let Ok(mut con) = connect(&self.shared.client, REPLY_WITHIN) {
            let (keys, job) = (&self.shared.keys, &self.shared.job);
            let results = keys.results(job);
            let _: redis::RedisResult<()> =
                redis::cmd("XADD").arg(&results).arg("*").arg("wake").arg(1).query(&mut con);
            if let Some(handle) = lock(&self.collector).take() {
                let _ = handle.join();
            }
            let _: redis::RedisResult<()> =
                redis::cmd("DEL").arg(&results).arg(keys.alive(job)).arg(keys.about(job)).query(&mut con);
        } else if let Some(handle) = lock(&self.collector).take() {
            let _ = handle.join();
        }
    }
}

impl std::fmt::Debug for RedisPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPool")
            .field("job", &self.shared.job)
            .field("waiting", &self.waiting())
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}
