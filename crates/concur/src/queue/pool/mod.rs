//! The caller's side: [`RedisPool`], which queues tasks on the work stream
//! and hands each task's first result to its caller.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::redis_value::{self, Entry};
use super::{DEFAULT_NAMESPACE, Keys, QueueError, connect, ensure_group, random_id, secs};
use crate::CancelToken;
use crate::pool::{AsyncResult, ImapUnordered, Pool, Task, TaskError};
use crate::process_pool::registry::{decode, encode};
use crate::process_pool::wire;

mod builder;
mod resume;
pub use builder::RedisPoolBuilder;

/// How long any one reply of the broker may take before the connection is
/// taken for dead (blocking reads block for less).
const REPLY_WITHIN: Duration = Duration::from_secs(5);
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
/// Redis Streams: see the [module docs](crate::queue) for the guarantees.
///
/// Workers are programs that call [`serve_queue`](crate::serve_queue) with
/// a [`Registry`](crate::Registry) holding the tasks sent here. Switching
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
/// use concur::{Pool, RedisPool};
///
/// let pool = RedisPool::connect("redis://127.0.0.1:6379/0")?;
/// let squares = pool.map((1..=4).map(Square));
/// # Ok::<(), concur::QueueError>(())
/// ```
///
/// Dropping the pool closes it and waits for what it queued, like
/// [`ProcessPool`](crate::ProcessPool); [`terminate`](Self::terminate)
/// abandons it instead.
pub struct RedisPool {
    shared: Arc<Shared>,
    collector: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    keys: Keys,
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
    waiting: HashMap<u64, Waiter>,
    /// The pool is being dropped: the results thread ends.
    stopping: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RedisPool {
    /// A pool on the queue at `url` (`redis://HOST:PORT/DB`) with default
    /// options.
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
            url: crate::queue::url::QueueUrl(url.into()),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            job_ttl: Duration::from_secs(60),
            broker_timeout: Duration::from_secs(60),
            cancel: None,
            about: None,
            resume: None,
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
            if found.queued.remove(&id) {
                state.waiting.insert(id, waiter);
                return handle;
            }
        }
        if let Some(queued) = self.shared.prepare_as(Some(id), &task, waiter) {
            self.shared.send(T::NAME, &[queued]);
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
        let _done = self
            .shared
            .changed
            .wait_while(state, |s| !s.waiting.is_empty() && !s.stopping)
            .unwrap_or_else(PoisonError::into_inner);
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
                self.shared.send(T::NAME, &std::mem::take(&mut batch));
            }
        }
        self.shared.send(T::NAME, &batch);
        ImapUnordered::new(rx, n)
    }
}

impl Shared {
    /// Serialises `task` and registers its waiter under `id`, or a new
    /// task id; `None` (the waiter answered at once) if it cannot be
    /// serialised.
    fn prepare_as<T: Task>(&self, id: Option<u64>, task: &T, waiter: Waiter) -> Option<(u64, Vec<u8>)> {
        match encode(task, || format!("task {:?}", T::NAME)) {
            Ok(payload) => {
                let id = id.unwrap_or_else(|| self.next_id.fetch_add(1, Ordering::Relaxed));
                lock(&self.state).waiting.insert(id, waiter);
                Some((id, payload))
            }
            Err(e) => {
                waiter(Err(e));
                None
            }
        }
    }

    /// Queues `tasks` (already registered) on the work stream, in one round
    /// trip. A broker that is away is retried until `broker_timeout`; a
    /// batch cut off half-way is sent again whole, since a duplicate task
    /// only gives a duplicate result, which is dropped.
    fn send(&self, name: &str, tasks: &[(u64, Vec<u8>)]) {
        if tasks.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        let ttl = secs(self.job_ttl);
        for (id, payload) in tasks {
            pipe.cmd("XADD")
                .arg(self.keys.tasks())
                .arg("*")
                .arg("job")
                .arg(&self.job)
                .arg("id")
                .arg(id)
                .arg("name")
                .arg(name)
                .arg("ttl")
                .arg(ttl)
                .arg("payload")
                .arg(payload.as_slice())
                .ignore();
        }
        let started = Instant::now();
        let mut backoff = Duration::from_millis(50);
        let mut con = lock(&self.submit);
        loop {
            let result = match con.as_mut() {
                Some(c) => pipe.query::<()>(c),
                None => connect(&self.client, REPLY_WITHIN).and_then(|mut c| {
                    let r = pipe.query::<()>(&mut c);
                    *con = Some(c);
                    r
                }),
            };
            match result {
                Ok(()) => return,
                Err(e) => {
                    *con = None;
                    if started.elapsed() >= self.broker_timeout {
                        drop(con);
                        let why = format!("cannot queue task {name:?}: {e}");
                        for (id, _) in tasks {
                            self.finish(*id, Err(TaskError::Failed(why.clone())));
                        }
                        return;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Gives task `id` its answer, if it is still waiting for one: a later
    /// answer for the same id (a duplicate) finds nothing and is dropped.
    fn finish(&self, id: u64, answer: Result<&[u8], TaskError>) {
        let waiter = {
            let mut state = lock(&self.state);
            let waiter = state.waiting.remove(&id);
            if state.waiting.is_empty() {
                self.changed.notify_all();
            }
            waiter
        };
        if let Some(waiter) = waiter {
            waiter(answer);
        }
    }

    /// Gives task `id` the answer read from the results stream (`body`),
    /// if it is waiting for one; keeps it for later if it is a task the job
    /// had queued before it was resumed and nobody asked for it yet; drops
    /// it otherwise (a duplicate).
    fn arrived(&self, id: u64, body: &[u8]) {
        let waiter = {
            let mut found = lock(&self.found);
            let mut state = lock(&self.state);
            let waiter = state.waiting.remove(&id);
            if waiter.is_none() && found.queued.remove(&id) {
                found.answers.entry(id).or_insert_with(|| body.to_vec());
            }
            if state.waiting.is_empty() {
                self.changed.notify_all();
            }
            waiter
        };
        if let Some(waiter) = waiter {
            waiter(answer_of(body, id));
        }
    }

    /// Fails every waiting task with `why`.
    fn fail_all(&self, why: &str) {
        let waiting = std::mem::take(&mut lock(&self.state).waiting);
        self.changed.notify_all();
        for (_, waiter) in waiting {
            waiter(Err(TaskError::Failed(why.to_owned())));
        }
    }

    /// Refuses new work and cancels what waits. A job that can be resumed
    /// is left as it is, to expire after `job_ttl` unless resumed (workers
    /// go on with its queued tasks meanwhile); any other ends, so workers
    /// skip its tasks.
    fn abandon(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.abandoned.store(true, Ordering::SeqCst);
        let waiting = std::mem::take(&mut lock(&self.state).waiting);
        drop(waiting);
        self.changed.notify_all();
        if self.about.is_some() {
            return;
        }
        // Best effort: if the broker is away, the key expires by itself.
        if let Ok(mut con) = connect(&self.client, REPLY_WITHIN) {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(self.keys.alive(&self.job)).query(&mut con);
        }
    }

    /// Gives the job's keys their whole time to live again: the caller
    /// renews them while it lives, and a job given up can be resumed for
    /// `job_ttl` after that.
    fn renew(&self, con: &mut redis::Connection) -> redis::RedisResult<()> {
        let ttl = secs(self.job_ttl);
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(self.keys.alive(&self.job)).arg(1).arg("EX").arg(ttl).ignore();
        if self.about.is_some() {
            // The answers given so far are what a resumed job starts from.
            pipe.cmd("EXPIRE").arg(self.keys.about(&self.job)).arg(ttl).ignore();
            pipe.cmd("EXPIRE").arg(self.keys.results(&self.job)).arg(ttl).ignore();
        }
        pipe.query(con)
    }

    fn stopping(&self) -> bool {
        lock(&self.state).stopping
    }

    /// Sleeps `d`, or less if the pool is being dropped.
    fn pause(&self, d: Duration) {
        let state = lock(&self.state);
        let _ = self.changed.wait_timeout_while(state, d, |s| !s.stopping);
    }
}

/// A task's answer out of the body a worker wrote.
fn answer_of(body: &[u8], id: u64) -> Result<&[u8], TaskError> {
    match wire::answer(body) {
        Ok(wire::Answer::Task(result)) => result,
        _ => Err(TaskError::Failed(format!("a malformed answer for task {id}"))),
    }
}

/// The results thread: reads the job's results stream after entry `from`,
/// hands each task its first answer, and keeps the job alive until it is
/// given up. Reconnects to a broker that went away; after
/// `broker_timeout` without one, fails what is waiting.
fn collect(shared: &Shared, from: String) {
    let results = shared.keys.results(&shared.job);
    let renew_every = shared.job_ttl / 3;
    let mut last = from;
    let mut con: Option<redis::Connection> = None;
    let mut renewed: Option<Instant> = None;
    let mut lost_since: Option<Instant> = None;
    let mut abandoned = false;
    while !shared.stopping() {
        if !abandoned && shared.cancel.as_ref().is_some_and(CancelToken::is_cancelled) {
            shared.abandon();
            abandoned = true;
        }
        let read = (|| -> redis::RedisResult<Vec<Entry>> {
            let c = match con.as_mut() {
                Some(c) => c,
                None => con.insert(connect(&shared.client, REPLY_WITHIN)?),
            };
            // A job given up is no longer renewed: it ends (or, resumable,
            // waits to be resumed) when its time to live runs out.
            if !abandoned && renewed.is_none_or(|t| t.elapsed() >= renew_every) {
                shared.renew(c)?;
                renewed = Some(Instant::now());
            }
            let reply: redis::Value = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(READ_BATCH)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&results)
                .arg(&last)
                .query(c)?;
            Ok(redis_value::read_reply(&reply))
        })();
        match read {
            Ok(entries) => {
                lost_since = None;
                for entry in entries {
                    last.clone_from(&entry.id);
                    let Some(id) = entry.number::<u64>("id") else { continue };
                    shared.arrived(id, entry.get("answer").unwrap_or_default());
                }
            }
            Err(e) => {
                con = None;
                let since = *lost_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= shared.broker_timeout {
                    shared.fail_all(&format!("lost the queue's broker for {:?}: {e}", shared.broker_timeout));
                    lost_since = None;
                }
                shared.pause(Duration::from_millis(200));
            }
        }
    }
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
            self.shared.send(T::NAME, &[queued]);
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
            // Cancelled counts even if the results thread has not seen it
            // yet: the answers may all have come first, but the caller may
            // have left items unasked.
            let given_up = self.shared.abandoned.load(Ordering::SeqCst)
                || self.shared.cancel.as_ref().is_some_and(CancelToken::is_cancelled);
            if self.shared.about.is_some() && given_up {
                let _ = self.shared.renew(&mut con);
            } else {
                let _: redis::RedisResult<()> =
                    redis::cmd("DEL").arg(&results).arg(keys.alive(job)).arg(keys.about(job)).query(&mut con);
            }
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
