//! What the pool's handle and its threads share, and do to it: queue
//! tasks, hand each task its first answer, fail what waits, give up the
//! job, renew its keys.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use concur::CancelToken;
use concur::codec::encode;
use concur::pool::{Task, TaskError};

use super::{AUTO_IDS, REPLY_WITHIN, SUBMIT_REPLY_WITHIN, Shared, Waiter, Waiting, answer_of, lock};
use crate::redis_value::Entry;
use crate::seal::TaskMsg;
use crate::{broker_lost, connect, secs};

impl Shared {
    /// Serialises `task` and registers its waiter under `id`, or a new
    /// task id; `None` (the waiter answered at once) if it cannot be
    /// serialised.
    pub(super) fn prepare_as<T: Task>(&self, id: Option<u64>, task: &T, waiter: Waiter) -> Option<(u64, Vec<u8>)> {
        match encode(task, || format!("task {:?}", T::NAME)) {
            Ok(payload) => {
                let id = id.unwrap_or_else(|| self.next_id.fetch_add(1, Ordering::Relaxed));
                lock(&self.state).waiting.insert(id, Waiting::new(waiter));
                Some((id, payload))
            }
            Err(e) => {
                waiter(Err(e));
                None
            }
        }
    }

    /// Queues `tasks` (already registered) on the work stream, in one round
    /// trip. A broker that is away is retried until `broker_timeout` (or
    /// until the job is given up); a batch cut off half-way is sent again
    /// whole, since a duplicate task only gives a duplicate result, which
    /// is dropped. A broker that refuses them (the work stream is not a
    /// stream, say) fails them at once.
    pub(super) fn send(&self, name: &'static str, tasks: Vec<(u64, Vec<u8>)>) {
        if tasks.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        let (ttl, stream) = (secs(self.job_ttl), self.keys.tasks());
        for (id, payload) in &tasks {
            let task = TaskMsg { job: &self.job, id: *id, name, ttl, limit_ms: self.limit_ms, payload };
            self.seal.write_task(&mut pipe, &stream, &task);
        }
        let started = Instant::now();
        let mut backoff = Duration::from_millis(50);
        let mut con = lock(&self.submit);
        let fail = |why: &str, error: fn(String) -> TaskError| {
            for (id, _) in &tasks {
                self.finish(*id, Err(error(why.to_owned())));
            }
        };
        loop {
            let result = match con.as_mut() {
                Some(c) => pipe.query::<Vec<String>>(c),
                None => connect(&self.client, SUBMIT_REPLY_WITHIN).and_then(|mut c| {
                    let r = pipe.query::<Vec<String>>(&mut c);
                    *con = Some(c);
                    r
                }),
            };
            match result {
                Ok(entries) => {
                    drop(con);
                    let now = Instant::now();
                    let mut state = lock(&self.state);
                    for ((id, payload), entry) in tasks.into_iter().zip(entries) {
                        if let Some(w) = state.waiting.get_mut(&id) {
                            w.task = Some((name, payload));
                            w.entry = Some((entry, now));
                        }
                    }
                    return;
                }
                Err(e) if !broker_lost(&e) => {
                    drop(con);
                    tracing::warn!(target: "concur::queue", "the broker refused task {name:?}: {e}");
                    return fail(&format!("the broker refused task {name:?}: {e}"), TaskError::Failed);
                }
                Err(e) => {
                    *con = None;
                    if self.given_up() {
                        drop(con);
                        return fail("", |_| TaskError::Cancelled);
                    }
                    if started.elapsed() >= self.broker_timeout {
                        drop(con);
                        return fail(&format!("cannot queue task {name:?}: {e}"), TaskError::Failed);
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Whether the job was given up (its cancel token, or `terminate`) or
    /// the pool is being dropped.
    pub(super) fn given_up(&self) -> bool {
        self.cancelled() || self.stopping()
    }

    /// Whether the job was given up (its cancel token, or `terminate`).
    pub(super) fn cancelled(&self) -> bool {
        self.abandoned.load(Ordering::SeqCst) || self.cancel.as_ref().is_some_and(CancelToken::is_cancelled)
    }

    /// Gives task `id` its answer, if it is still waiting for one: a later
    /// answer for the same id (a duplicate) finds nothing and is dropped.
    pub(super) fn finish(&self, id: u64, answer: Result<&[u8], TaskError>) {
        let waiter = {
            let mut state = lock(&self.state);
            let waiter = state.waiting.remove(&id);
            if state.waiting.is_empty() {
                self.changed.notify_all();
            }
            waiter
        };
        if let Some(w) = waiter {
            (w.waiter)(answer);
        }
    }

    /// Gives task `id` the answer read from the results stream (`body`),
    /// if it is waiting for one; keeps it for later if it is a task the job
    /// had queued before it was resumed and nobody asked for it yet; drops
    /// it otherwise (a duplicate).
    pub(super) fn arrived(&self, id: u64, body: &[u8]) {
        let (waiter, asked) = {
            let mut found = lock(&self.found);
            let mut state = lock(&self.state);
            let waiter = state.waiting.remove(&id);
            let mut asked = waiter.is_some();
            if waiter.is_none() && found.queued.remove(&id) {
                found.answers.entry(id).or_insert_with(|| body.to_vec());
                asked = true;
            }
            if state.waiting.is_empty() {
                self.changed.notify_all();
            }
            // A duplicate answers a task asked before; any other id was
            // never queued by this job's callers.
            let ours = if id >= AUTO_IDS {
                id < self.next_id.load(Ordering::Relaxed)
            } else {
                state.given.contains(&id) || found.answers.contains_key(&id)
            };
            (waiter, asked || ours)
        };
        if let Some(w) = waiter {
            (w.waiter)(answer_of(body, id));
        } else if !asked && !self.said_unknown.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                target: "concur::queue",
                "job {}: dropped an answer for task {id}, which it never queued (said once)",
                self.job
            );
        }
    }

    /// Drops a result entry that is malformed or not tagged with the key.
    pub(super) fn forged(&self, entry: &Entry, why: &str) {
        if !self.said_forged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                target: "concur::queue",
                "job {}: dropped result entry {}: {why} (said once; do the workers have the queue's key?)",
                self.job,
                entry.id
            );
        }
    }

    /// Fails every waiting task with `why`.
    pub(super) fn fail_all(&self, why: &str) {
        let waiting = std::mem::take(&mut lock(&self.state).waiting);
        self.changed.notify_all();
        for (_, w) in waiting {
            (w.waiter)(Err(TaskError::Failed(why.to_owned())));
        }
    }

    /// Refuses new work and cancels what waits. A job that can be resumed
    /// is left as it is, to expire after `job_ttl` unless resumed (workers
    /// go on with its queued tasks meanwhile); any other ends, so workers
    /// skip its tasks.
    pub(super) fn abandon(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if self.abandoned.swap(true, Ordering::SeqCst) {
            return;
        }
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
    pub(super) fn renew(&self, con: &mut redis::Connection) -> redis::RedisResult<()> {
        let ttl = secs(self.job_ttl);
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(self.keys.alive(&self.job)).arg(1).arg("EX").arg(ttl).ignore();
        if let Some(about) = &self.about {
            // The answers given so far are what a resumed job starts from.
            // Set, not only renewed: a broker that lost it has it again.
            pipe.cmd("SET").arg(self.keys.about(&self.job)).arg(about).arg("EX").arg(ttl).ignore();
            pipe.cmd("EXPIRE").arg(self.keys.results(&self.job)).arg(ttl).ignore();
        }
        pipe.query(con)
    }

    pub(super) fn stopping(&self) -> bool {
        lock(&self.state).stopping
    }

    /// Sleeps `d`, or less if the pool is being dropped.
    pub(super) fn pause(&self, d: Duration) {
        let state = lock(&self.state);
        let _ = self.changed.wait_timeout_while(state, d, |s| !s.stopping);
    }
}
