//! The caller's side: [`RedisPool`], which queues tasks on the work stream
//! and hands each task's first result to its caller.

use std::collections::HashMap;
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
    state: Mutex<State>,
    changed: Condvar,
    next_id: AtomicU64,
    closed: AtomicBool,
    /// The connection tasks are queued on; `None` after it failed.
    submit: Mutex<Option<redis::Connection>>,
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
            url: url.into(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            job_ttl: Duration::from_secs(60),
            broker_timeout: Duration::from_secs(60),
            cancel: None,
        }
    }

    /// This pool's job id: its keys and its entries in the work stream
    /// carry it.
    pub fn job(&self) -> &str {
        &self.shared.job
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
    pub fn terminate(&self) {
        self.close();
        let waiting = std::mem::take(&mut lock(&self.shared.state).waiting);
        drop(waiting);
        self.shared.changed.notify_all();
        // Best effort: if the broker is away, the key expires by itself.
        if let Ok(mut con) = connect(&self.shared.client, REPLY_WITHIN) {
            let _: redis::RedisResult<()> =
                redis::cmd("DEL").arg(self.shared.keys.alive(&self.shared.job)).query(&mut con);
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
            if let Some(queued) = self.shared.prepare(&task, waiter) {
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
    /// Serialises `task` and registers its waiter under a new task id;
    /// `None` (the waiter answered at once) if it cannot be serialised.
    fn prepare<T: Task>(&self, task: &T, waiter: Waiter) -> Option<(u64, Vec<u8>)> {
        match encode(task, || format!("task {:?}", T::NAME)) {
            Ok(payload) => {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
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

    /// Fails every waiting task with `why`.
    fn fail_all(&self, why: &str) {
        let waiting = std::mem::take(&mut lock(&self.state).waiting);
        self.changed.notify_all();
        for (_, waiter) in waiting {
            waiter(Err(TaskError::Failed(why.to_owned())));
        }
    }

    /// Refuses new work, cancels what waits, and ends the job, so workers
    /// skip its tasks.
    fn abandon(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let waiting = std::mem::take(&mut lock(&self.state).waiting);
        drop(waiting);
        self.changed.notify_all();
        // Best effort: if the broker is away, the key expires by itself.
        if let Ok(mut con) = connect(&self.client, REPLY_WITHIN) {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(self.keys.alive(&self.job)).query(&mut con);
        }
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

/// The results thread: reads the job's results stream, hands each task
/// its first answer, and keeps the job alive. Reconnects to a broker that
/// went away; after `broker_timeout` without one, fails what is waiting.
fn collect(shared: &Shared) {
    let results = shared.keys.results(&shared.job);
    let alive = shared.keys.alive(&shared.job);
    let renew_every = shared.job_ttl / 3;
    let mut last = "0-0".to_owned();
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
            if renewed.is_none_or(|t| t.elapsed() >= renew_every) {
                redis::cmd("SET").arg(&alive).arg(1).arg("EX").arg(secs(shared.job_ttl)).query::<()>(c)?;
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
                    let answer = match entry.get("answer").map(wire::answer) {
                        Some(Ok(wire::Answer::Task(result))) => result,
                        _ => Err(TaskError::Failed(format!("a malformed answer for task {id} in {results}"))),
                    };
                    shared.finish(id, answer);
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
            let _ = tx.send(answer.and_then(|bytes| decode(bytes, T::NAME)));
        });
        if let Some(queued) = self.shared.prepare(&task, waiter) {
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
        // job's keys (best effort: they expire anyway).
        if let Ok(mut con) = connect(&self.shared.client, REPLY_WITHIN) {
            let results = self.shared.keys.results(&self.shared.job);
            let _: redis::RedisResult<()> =
                redis::cmd("XADD").arg(&results).arg("*").arg("wake").arg(1).query(&mut con);
            if let Some(handle) = lock(&self.collector).take() {
                let _ = handle.join();
            }
            let _: redis::RedisResult<()> =
                redis::cmd("DEL").arg(&results).arg(self.shared.keys.alive(&self.shared.job)).query(&mut con);
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
