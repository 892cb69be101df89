//! A fixed pool of worker threads fed by a work queue.
//!
//! Implements the chapter's "thread pool", "two-way queues" and "error
//! handling" listings (7, 8 and 9), and the thread half of
//! "multiprocessing.dummy" (16). Named worker threads take jobs from one
//! shared work queue; every call gets its own results queue, so results come
//! back to the caller instead of being printed by workers. A task's panic is
//! caught and travels back as that task's [`TaskError::Panicked`]; the worker
//! lives on and the queue still drains, so no item is lost or reported twice.
//!
//! Unlike Python's threads, which take turns under the GIL, these workers run
//! Rust code truly in parallel: the pool suits CPU work as well as waiting.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender};

use crate::pool::{AsyncResult, ImapUnordered, InOrder, Pool, PoolError, Task, TaskError, panic_message};

/// A job on the work queue. Dropping it unrun drops the result sender it
/// holds, which is how its caller learns it was cancelled.
type Job = Box<dyn FnOnce() + Send + 'static>;

/// A fixed number of named worker threads sharing one work queue.
///
/// ```
/// use concur::{TaskError, ThreadPool};
///
/// let pool = ThreadPool::new(4)?;
/// let lengths = pool.map(|s: &str| s.len(), ["a", "bb", "ccc"]);
/// assert_eq!(lengths, [Ok(1), Ok(2), Ok(3)]);
///
/// // A panic is that task's error; the pool carries on.
/// let handle = pool.submit(|| -> u8 { panic!("boom") });
/// assert_eq!(handle.wait(), Err(TaskError::Panicked("boom".into())));
/// assert_eq!(pool.submit(|| 1 + 1).wait(), Ok(2));
/// # Ok::<(), concur::PoolError>(())
/// ```
///
/// Unlike Python's threads, which take turns under the GIL, these workers
/// run Rust code truly in parallel. [`Pool`] is the task-based interface the
/// thread pool shares with a process pool.
///
/// # Shutdown
///
/// - [`close`](ThreadPool::close): no new work is accepted; what is queued
///   still runs. Later submissions resolve at once to [`TaskError::Closed`].
/// - [`terminate`](ThreadPool::terminate): close, and cancel every queued job
///   that no worker has started: its handle resolves to
///   [`TaskError::Cancelled`]. Running jobs finish (a thread cannot be killed
///   safely). Does not wait.
/// - [`join`](ThreadPool::join): close, then wait for the workers to finish
///   everything queued and exit.
/// - `Drop`: the same as `join`, so dropping a pool blocks until its queued
///   work is done.
///
/// Every handle and every result iterator resolves: a queued job either runs
/// or is cancelled, never lost, never reported twice.
pub struct ThreadPool {
    /// The sending side of the work queue; `None` once closed. Sends happen
    /// under the lock so that a batch is queued wholly before or wholly
    /// after a close.
    queue: Mutex<Option<Sender<Job>>>,
    /// A receiving side of the work queue, kept so that `terminate` can take
    /// queued jobs off it and drop them.
    backlog: Receiver<Job>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    size: usize,
    /// Worker threads still running, decremented as each exits.
    live: Arc<AtomicUsize>,
}

impl ThreadPool {
    /// A pool of `workers` threads named `concur-worker-N`.
    ///
    /// # Errors
    ///
    /// [`PoolError::NoWorkers`] for 0 (a pool that never runs anything would
    /// make every wait hang), [`PoolError::Spawn`] if a thread cannot start.
    pub fn new(workers: usize) -> Result<Self, PoolError> {
        Self::builder().size(workers).build()
    }

    /// A builder to set the size and the thread names.
    pub fn builder() -> ThreadPoolBuilder {
        ThreadPoolBuilder { size: None, name: "concur-worker".to_owned() }
    }

    /// The number of worker threads.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether the pool has stopped accepting work.
    pub fn is_closed(&self) -> bool {
        self.lock_queue().is_none()
    }

    /// Queues `f` and returns a handle to wait on its result. After
    /// [`close`](Self::close) the handle resolves at once to
    /// [`TaskError::Closed`].
    pub fn submit<R, F>(&self, f: F) -> AsyncResult<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let (tx, handle) = AsyncResult::channel();
        let job: Job = Box::new(move || {
            // The caller may have dropped the handle: the result is discarded.
            let _ = tx.send(run_caught(f));
        });
        match self.execute(vec![job]) {
            Ok(()) => handle,
            Err(_) => AsyncResult::ready(Err(TaskError::Closed)),
        }
    }

    /// Applies `f` to every item and returns the results in input order.
    pub fn map<T, R, F>(&self, f: F, items: impl IntoIterator<Item = T>) -> Vec<Result<R, TaskError>>
    where
        F: Fn(T) -> R + Send + Sync + 'static,
        T: Send + 'static,
        R: Send + 'static,
    {
        self.imap(f, items).collect()
    }

    /// Applies `f` to every item; yields the results lazily in input order.
    /// All items are queued before this returns.
    pub fn imap<T, R, F>(&self, f: F, items: impl IntoIterator<Item = T>) -> Imap<R>
    where
        F: Fn(T) -> R + Send + Sync + 'static,
        T: Send + 'static,
        R: Send + 'static,
    {
        Imap(InOrder::new(self.imap_unordered(f, items)))
    }

    /// Applies `f` to every item; yields `(input index, result)` as tasks
    /// complete. All items are queued before this returns. Every index comes
    /// exactly once: a job cancelled by [`terminate`](Self::terminate) comes
    /// as [`TaskError::Cancelled`], every item after a close as
    /// [`TaskError::Closed`].
    pub fn imap_unordered<T, R, F>(&self, f: F, items: impl IntoIterator<Item = T>) -> ImapUnordered<R>
    where
        F: Fn(T) -> R + Send + Sync + 'static,
        T: Send + 'static,
        R: Send + 'static,
    {
        // Collect first: the input's `next` is user code, which must not run
        // while the queue lock is held.
        let items: Vec<T> = items.into_iter().collect();
        let n = items.len();
        let (tx, rx) = crossbeam_channel::unbounded();
        let f = Arc::new(f);
        let jobs = items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let f = Arc::clone(&f);
                let tx = tx.clone();
                Box::new(move || {
                    let _ = tx.send((i, run_caught(|| f(item))));
                }) as Job
            })
            .collect();
        if self.execute(jobs).is_err() {
            for i in 0..n {
                // Cannot fail: `rx` is alive in this frame.
                let _ = tx.send((i, Err(TaskError::Closed)));
            }
        }
        ImapUnordered::new(rx, n)
    }

    /// Stops accepting work. Queued jobs still run. Idempotent.
    pub fn close(&self) {
        // Dropping the last sender lets workers exit once the queue is empty.
        self.lock_queue().take();
    }

    /// Closes the pool and cancels every queued job that no worker has
    /// started; their callers get [`TaskError::Cancelled`]. Jobs already
    /// running finish. Returns without waiting; call [`join`](Self::join) to
    /// wait for the running jobs.
    pub fn terminate(&self) {
        self.close();
        // Workers may take some of these first and run them; either way
        // each job runs or is dropped exactly once.
        for job in self.backlog.try_iter() {
            drop(job);
        }
    }

    /// Closes the pool and waits until every queued job has run and every
    /// worker has exited. Called from one of the pool's own jobs it does not
    /// wait for that job's thread.
    pub fn join(&self) {
        self.close();
        let handles = std::mem::take(&mut *self.workers.lock().unwrap_or_else(PoisonError::into_inner));
        let me = thread::current().id();
        for handle in handles {
            if handle.thread().id() != me {
                // Workers catch every panic, so join cannot report one.
                let _ = handle.join();
            }
        }
    }

    /// Queues jobs all together, or hands them back if the pool is closed.
    pub(crate) fn execute(&self, jobs: Vec<Job>) -> Result<(), Vec<Job>> {
        let queue = self.lock_queue();
        match queue.as_ref() {
            Some(sender) => {
                for job in jobs {
                    // Cannot fail: `self.backlog` keeps the queue connected.
                    let _ = sender.send(job);
                }
                Ok(())
            }
            None => Err(jobs),
        }
    }

    fn lock_queue(&self) -> MutexGuard<'_, Option<Sender<Job>>> {
        // Nothing panics while holding the lock, so poison carries no
        // broken invariant.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    pub(crate) fn live_workers(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.live)
    }
}

impl Drop for ThreadPool {
    /// Closes the pool and waits for queued work to finish, like
    /// [`join`](ThreadPool::join).
    fn drop(&mut self) {
        self.join();
    }
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("size", &self.size)
            .field("live", &self.live.load(Ordering::Relaxed))
            .field("queued", &self.backlog.len())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Pool for ThreadPool {
    fn map<T: Task>(&self, items: impl IntoIterator<Item = T>) -> Vec<Result<T::Output, TaskError>> {
        ThreadPool::map(self, T::run, items)
    }

    fn imap<T: Task>(&self, items: impl IntoIterator<Item = T>) -> impl Iterator<Item = Result<T::Output, TaskError>> {
        ThreadPool::imap(self, T::run, items)
    }

    fn imap_unordered<T: Task>(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> impl Iterator<Item = (usize, Result<T::Output, TaskError>)> {
        ThreadPool::imap_unordered(self, T::run, items)
    }

    /// Runs [`Task::run`] on a worker thread; nothing is serialised.
    fn apply_async<T: Task>(&self, task: T) -> AsyncResult<T::Output> {
        self.submit(move || task.run())
    }
}

/// Builds a [`ThreadPool`]: `ThreadPool::builder().size(4).name("fetch").build()`.
#[derive(Debug, Clone)]
pub struct ThreadPoolBuilder {
    size: Option<usize>,
    name: String,
}

impl ThreadPoolBuilder {
    /// The number of workers; by default the machine's available
    /// parallelism (1 if unknown), like Python's `Pool()`.
    pub fn size(mut self, workers: usize) -> Self {
        self.size = Some(workers);
        self
    }

    /// The prefix of the worker threads' names: `{name}-0`, `{name}-1`, ...
    pub fn name(mut self, prefix: impl Into<String>) -> Self {
        self.name = prefix.into();
        self
    }

    /// Starts the workers.
    ///
    /// # Errors
    ///
    /// See [`ThreadPool::new`].
    pub fn build(self) -> Result<ThreadPool, PoolError> {
        let size = match self.size {
            Some(0) => return Err(PoolError::NoWorkers),
            Some(n) => n,
            None => thread::available_parallelism().map_or(1, usize::from),
        };
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let live = Arc::new(AtomicUsize::new(0));
        let pool = ThreadPool {
            queue: Mutex::new(Some(tx)),
            backlog: rx.clone(),
            workers: Mutex::new(Vec::with_capacity(size)),
            size,
            live: Arc::clone(&live),
        };
        for i in 0..size {
            let jobs = rx.clone();
            // Made before the spawn so that a thread that never starts
            // still gives its count back when the closure is dropped.
            let alive = Alive::new(&live);
            let spawned = thread::Builder::new().name(format!("{}-{i}", self.name)).spawn(move || work(&jobs, alive));
            match spawned {
                Ok(handle) => pool.workers.lock().unwrap_or_else(PoisonError::into_inner).push(handle),
                // Dropping `pool` closes and joins the workers started so far.
                Err(e) => return Err(PoolError::Spawn(e)),
            }
        }
        Ok(pool)
    }
}

/// A worker's life: run jobs until the queue is closed and empty.
fn work(jobs: &Receiver<Job>, _alive: Alive) {
    for job in jobs.iter() {
        // Jobs catch their task's panic already; this also covers a panic
        // while sending or dropping a result, so a worker never dies.
        let _ = catch_unwind(AssertUnwindSafe(job));
    }
}

/// Counts a live worker; the count drops when the worker's thread ends.
struct Alive(Arc<AtomicUsize>);

impl Alive {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Alive(Arc::clone(count))
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs `f`, turning a panic into [`TaskError::Panicked`].
pub(crate) fn run_caught<R>(f: impl FnOnce() -> R) -> Result<R, TaskError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| TaskError::Panicked(panic_message(&*payload)))
}

/// Results of [`ThreadPool::imap`], in input order.
pub struct Imap<R>(InOrder<ImapUnordered<R>, R>);

impl<R> Iterator for Imap<R> {
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl<R> std::fmt::Debug for Imap<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Imap").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{LIMIT, within};
    use std::collections::HashSet;
    use std::time::Duration;

    fn pool(n: usize) -> ThreadPool {
        ThreadPool::new(n).expect("pool starts")
    }

    /// A job that reports it started, then blocks until released (or the
    /// test's time limit), so tests can hold a worker busy.
    fn gate() -> (impl FnOnce() -> &'static str + Send + 'static, Receiver<()>, Sender<()>) {
        let (started_tx, started_rx) = crossbeam_channel::bounded(1);
        let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
        let job = move || {
            let _ = started_tx.send(());
            let _ = release_rx.recv_timeout(LIMIT);
            "gate"
        };
        (job, started_rx, release_tx)
    }

    #[test]
    fn zero_workers_is_an_error() {
        assert!(matches!(ThreadPool::new(0), Err(PoolError::NoWorkers)));
        assert_eq!(
            ThreadPool::new(0).err().map(|e| e.to_string()),
            Some("a pool needs at least one worker, got 0".to_owned())
        );
    }

    #[test]
    fn map_keeps_input_order() {
        let got = within(|| {
            let pool = pool(4);
            // Earlier items take longer, so they finish later.
            pool.map(
                |i: u64| {
                    thread::sleep(Duration::from_millis(20 - i));
                    i * 10
                },
                0..20,
            )
        });
        let want: Vec<_> = (0..20).map(|i| Ok(i * 10)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn imap_keeps_input_order() {
        let got: Vec<_> = within(|| pool(3).imap(|i: u32| i + 1, 0..50).collect());
        assert_eq!(got, (1..51).map(Ok).collect::<Vec<_>>());
    }

    #[test]
    fn imap_unordered_gives_every_index_once() {
        let got: Vec<_> = within(|| pool(4).imap_unordered(|i: usize| i * 2, 0..200).collect());
        assert_eq!(got.len(), 200);
        let indices: HashSet<usize> = got.iter().map(|(i, _)| *i).collect();
        assert_eq!(indices, (0..200).collect());
        for (i, r) in got {
            assert_eq!(r, Ok(i * 2));
        }
    }

    #[test]
    fn empty_input() {
        let (m, u) = within(|| {
            let pool = pool(2);
            (pool.map(|i: u8| i, []), pool.imap_unordered(|i: u8| i, []).count())
        });
        assert!(m.is_empty());
        assert_eq!(u, 0);
    }

    #[test]
    fn a_panic_is_that_tasks_error_and_the_pool_lives_on() {
        let (got, after) = within(|| {
            // One worker: it must survive every panic to serve the rest.
            let pool = pool(1);
            let got = pool.map(
                |i: u32| {
                    assert!(!i.is_multiple_of(3), "bad item {i}");
                    i
                },
                0..9,
            );
            (got, pool.submit(|| "still serving").wait())
        });
        for (i, r) in got.into_iter().enumerate() {
            if i % 3 == 0 {
                assert_eq!(r, Err(TaskError::Panicked(format!("bad item {i}"))));
            } else {
                assert_eq!(r, Ok(i as u32));
            }
        }
        assert_eq!(after, Ok("still serving"));
    }

    #[test]
    fn four_panics_of_sixteen_give_twelve_results() {
        let got = within(|| {
            pool(3).map(
                |i: u32| {
                    if i.is_multiple_of(4) {
                        panic!("no");
                    }
                    i
                },
                0..16,
            )
        });
        assert_eq!(got.iter().filter(|r| r.is_ok()).count(), 12);
        assert_eq!(got.iter().filter(|r| r.is_err()).count(), 4);
    }

    #[test]
    fn an_erroring_task_returns_its_error_as_output() {
        let got = within(|| pool(2).map(|s: &'static str| s.parse::<u8>().map_err(|e| e.to_string()), ["1", "x", "3"]));
        assert_eq!(got[0], Ok(Ok(1)));
        assert_eq!(got[1], Ok(Err("invalid digit found in string".to_owned())));
        assert_eq!(got[2], Ok(Ok(3)));
    }

    #[test]
    fn submit_after_close_is_an_error_not_a_hang() {
        let (one, many, unordered) = within(|| {
            let pool = pool(2);
            pool.close();
            assert!(pool.is_closed());
            (
                pool.submit(|| 1).wait(),
                pool.map(|i: u8| i, [1, 2]),
                pool.imap_unordered(|i: u8| i, [1, 2]).collect::<Vec<_>>(),
            )
        });
        assert_eq!(one, Err(TaskError::Closed));
        assert_eq!(many, vec![Err(TaskError::Closed), Err(TaskError::Closed)]);
        assert_eq!(unordered.len(), 2);
        assert!(unordered.iter().all(|(_, r)| *r == Err(TaskError::Closed)));
    }

    #[test]
    fn terminate_cancels_queued_work_and_every_handle_resolves() {
        let (first, rest) = within(|| {
            let pool = pool(1);
            let (job, started, release) = gate();
            let first = pool.submit(job);
            started.recv_timeout(LIMIT).expect("gate job started");
            let rest: Vec<_> = (0..10).map(|i| pool.submit(move || i)).collect();
            pool.terminate();
            let _ = release.send(());
            pool.join();
            (first.wait(), rest.into_iter().map(AsyncResult::wait).collect::<Vec<_>>())
        });
        // The running job finishes; the queued ones never start.
        assert_eq!(first, Ok("gate"));
        assert_eq!(rest, vec![Err(TaskError::Cancelled); 10]);
    }

    #[test]
    fn terminate_during_imap_unordered_accounts_for_every_item() {
        let got = within(|| {
            let pool = pool(2);
            let (job, started, release) = gate();
            let gated = pool.submit(job);
            started.recv_timeout(LIMIT).expect("gate job started");
            let results = pool.imap_unordered(|i: usize| i, 0..100);
            pool.terminate();
            let _ = release.send(());
            let got: Vec<_> = results.collect();
            assert_eq!(gated.wait(), Ok("gate"));
            got
        });
        let indices: HashSet<usize> = got.iter().map(|(i, _)| *i).collect();
        assert_eq!((got.len(), indices.len()), (100, 100));
        for (i, r) in got {
            assert!(r == Ok(i) || r == Err(TaskError::Cancelled), "{i}: {r:?}");
        }
    }

    #[test]
    fn join_lets_queued_work_finish() {
        let got = within(|| {
            let pool = pool(1);
            let (job, started, release) = gate();
            let first = pool.submit(job);
            started.recv_timeout(LIMIT).expect("gate job started");
            let rest: Vec<_> = (0..10).map(|i| pool.submit(move || i)).collect();
            let _ = release.send(());
            pool.join();
            assert_eq!(first.wait(), Ok("gate"));
            rest.into_iter().map(AsyncResult::wait).collect::<Vec<_>>()
        });
        assert_eq!(got, (0..10).map(Ok).collect::<Vec<_>>());
    }

    #[test]
    fn drop_finishes_queued_work_and_joins_the_workers() {
        let (live_before, live_after, results) = within(|| {
            let pool = pool(3);
            let live = pool.live_workers();
            let before = live.load(Ordering::SeqCst);
            let handles: Vec<_> = (0..30).map(|i| pool.submit(move || i)).collect();
            drop(pool);
            let after = live.load(Ordering::SeqCst);
            let results: Vec<_> = handles
                .into_iter()
                .map(|h| h.wait_timeout(Duration::ZERO).expect("resolved before drop returned"))
                .collect();
            (before, after, results)
        });
        assert_eq!(live_before, 3);
        assert_eq!(live_after, 0);
        assert_eq!(results, (0..30).map(Ok).collect::<Vec<_>>());
    }

    #[test]
    fn closures_and_items_are_released() {
        let token = Arc::new(());
        let held = Arc::clone(&token);
        within(move || {
            let pool = pool(2);
            let _ = pool.map(move |i: u8| (Arc::strong_count(&held), i), 0..10);
        });
        assert_eq!(Arc::strong_count(&token), 1);
    }

    #[test]
    fn workers_are_named() {
        let name = within(|| {
            let pool = ThreadPool::builder().size(1).name("fetch").build().expect("pool starts");
            pool.submit(|| thread::current().name().map(str::to_owned)).wait()
        });
        assert_eq!(name, Ok(Some("fetch-0".to_owned())));
    }

    #[test]
    fn default_size_is_available_parallelism() {
        let pool = within(|| ThreadPool::builder().build().expect("pool starts"));
        assert!(pool.size() >= 1);
        within(move || drop(pool));
    }

    #[test]
    fn workers_run_in_parallel() {
        // Two tasks that each need the other's message: with fewer than two
        // threads running at once, both would time out.
        let got = within(|| {
            let (a_tx, a_rx) = crossbeam_channel::bounded(1);
            let (b_tx, b_rx) = crossbeam_channel::bounded(1);
            let pool = pool(2);
            let a = pool.submit(move || {
                let _ = a_tx.send(());
                b_rx.recv_timeout(LIMIT).is_ok()
            });
            let b = pool.submit(move || {
                let _ = b_tx.send(());
                a_rx.recv_timeout(LIMIT).is_ok()
            });
            (a.wait(), b.wait())
        });
        assert_eq!(got, (Ok(true), Ok(true)));
    }

    #[test]
    fn many_threads_submit_at_once() {
        let total = within(|| {
            let pool = Arc::new(pool(3));
            let submitters: Vec<_> = (0..4)
                .map(|t| {
                    let pool = Arc::clone(&pool);
                    thread::spawn(move || {
                        (0..100)
                            .map(|i| pool.submit(move || t * 100 + i))
                            .map(AsyncResult::wait)
                            .filter_map(Result::ok)
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let mut all = HashSet::new();
            for s in submitters {
                all.extend(s.join().expect("submitter finished"));
            }
            all.len()
        });
        assert_eq!(total, 400);
    }

    #[test]
    fn dropping_the_pool_inside_its_own_job_does_not_deadlock() {
        let got = within(|| {
            let pool = Arc::new(pool(2));
            let inner = Arc::clone(&pool);
            let handle = pool.submit(move || {
                thread::sleep(Duration::from_millis(10));
                drop(inner); // may be the last reference
                "done"
            });
            drop(pool);
            handle.wait()
        });
        assert_eq!(got, Ok("done"));
    }

    mod as_pool {
        use super::*;
        use serde::{Deserialize, Serialize};

        #[derive(Serialize, Deserialize)]
        struct Halve(u32);

        impl Task for Halve {
            type Output = Result<u32, String>;
            const NAME: &'static str = "halve";
            fn run(self) -> Self::Output {
                assert!(self.0 != 13, "unlucky");
                if self.0.is_multiple_of(2) { Ok(self.0 / 2) } else { Err(format!("{} is odd", self.0)) }
            }
        }

        fn halves(pool: &impl Pool) -> Vec<Result<Result<u32, String>, TaskError>> {
            pool.map([4, 5, 13].map(Halve))
        }

        #[test]
        fn the_trait_runs_tasks() {
            let (mapped, ordered, unordered, one) = within(|| {
                let pool = pool(2);
                (
                    halves(&pool),
                    Pool::imap(&pool, (0..10).map(|i| Halve(i * 2))).collect::<Vec<_>>(),
                    Pool::imap_unordered(&pool, (0..10).map(|i| Halve(i * 2))).collect::<Vec<_>>(),
                    pool.apply_async(Halve(8)).wait(),
                )
            });
            assert_eq!(
                mapped,
                vec![Ok(Ok(2)), Ok(Err("5 is odd".to_owned())), Err(TaskError::Panicked("unlucky".to_owned()))]
            );
            assert_eq!(ordered, (0..10).map(|i| Ok(Ok(i))).collect::<Vec<_>>());
            let indices: HashSet<usize> = unordered.iter().map(|(i, _)| *i).collect();
            assert_eq!(indices, (0..10).collect());
            assert_eq!(one, Ok(Ok(4)));
        }
    }
}
