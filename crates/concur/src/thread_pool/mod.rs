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
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use crossbeam_channel::Receiver;

use crate::pool::{AsyncResult, ImapUnordered, InOrder, Pool, PoolError, Task, TaskError, WorkQueue, panic_message};

// Reads the thread's attributes through libc.
#[allow(unsafe_code)]
mod stack;

pub use stack::current_stack_size;

/// A job on the work queue. Dropping it unrun drops the result sender it
/// holds, which is how its caller learns it was cancelled.
type Job = Box<dyn FnOnce() + Send + 'static>;

/// A fixed number of named worker threads sharing one work queue.
///
/// ```
/// use concur::{TaskError, ThreadPool};
///
/// let pool = ThreadPool::new(4)?;
/// let lengths = pool.map_fn(|s: &str| s.len(), ["a", "bb", "ccc"]);
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
/// # Dropping
///
/// Dropping the pool is [`join`](Self::join): it stops taking work, lets
/// the queued jobs finish and waits for its threads, so the dropping thread
/// blocks for as long as that takes (rayon's pools detach instead; Python's
/// `with Pool()` terminates). Nothing queued is lost and no thread outlives
/// the pool. Call [`terminate`](Self::terminate) first to drop queued work
/// instead of waiting for it.
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
    /// The jobs, and the worker threads that take them.
    queue: WorkQueue<Job>,
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

    /// A builder to set the size, the thread names, their stacks and an
    /// initializer.
    pub fn builder() -> ThreadPoolBuilder {
        ThreadPoolBuilder { size: None, name: "concur-worker".to_owned(), stack_size: None, initializer: None }
    }

    /// The number of worker threads.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether the pool has stopped accepting work.
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
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
            tx.complete(run_caught(f));
        });
        match self.execute(vec![job]) {
            Ok(()) => handle,
            Err(_) => AsyncResult::ready(Err(TaskError::Closed)),
        }
    }

    /// Applies `f` to every item and returns the results in input order.
    pub fn map_fn<T, R, F>(&self, f: F, items: impl IntoIterator<Item = T>) -> Vec<Result<R, TaskError>>
    where
        F: Fn(T) -> R + Send + Sync + 'static,
        T: Send + 'static,
        R: Send + 'static,
    {
        self.imap_fn(f, items).collect()
    }

    /// Applies `f` to every item; yields the results lazily in input order.
    /// All items are queued before this returns.
    pub fn imap_fn<T, R, F>(&self, f: F, items: impl IntoIterator<Item = T>) -> Imap<R>
    where
        F: Fn(T) -> R + Send + Sync + 'static,
        T: Send + 'static,
        R: Send + 'static,
    {
        Imap(InOrder::new(self.imap_unordered_fn(f, items)))
    }

    /// Applies `f` to every item; yields `(input index, result)` as tasks
    /// complete. All items are queued before this returns. Every index comes
    /// exactly once: a job cancelled by [`terminate`](Self::terminate) comes
    /// as [`TaskError::Cancelled`], every item after a close as
    /// [`TaskError::Closed`].
    pub fn imap_unordered_fn<T, R, F>(&self, f: F, items: impl IntoIterator<Item = T>) -> ImapUnordered<R>
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
        self.queue.close();
    }

    /// Closes the pool and cancels every queued job that no worker has
    /// started; their callers get [`TaskError::Cancelled`]. Jobs already
    /// running finish. Returns without waiting; call [`join`](Self::join) to
    /// wait for the running jobs.
    pub fn terminate(&self) {
        self.queue.drain();
    }

    /// Closes the pool and waits until every queued job has run and every
    /// worker has exited. Called from one of the pool's own jobs it does not
    /// wait for that job's thread.
    pub fn join(&self) {
        self.queue.join();
    }

    /// Queues jobs all together, or hands them back if the pool is closed.
    pub(crate) fn execute(&self, jobs: Vec<Job>) -> Result<(), Vec<Job>> {
        self.queue.send_all(jobs).map(drop)
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
            .field("queued", &self.queue.len())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Pool for ThreadPool {
    fn map<T: Task>(&self, items: impl IntoIterator<Item = T>) -> Vec<Result<T::Output, TaskError>> {
        ThreadPool::map_fn(self, T::run, items)
    }

    fn imap<T: Task>(&self, items: impl IntoIterator<Item = T>) -> impl Iterator<Item = Result<T::Output, TaskError>> {
        ThreadPool::imap_fn(self, T::run, items)
    }

    fn imap_unordered<T: Task>(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> impl Iterator<Item = (usize, Result<T::Output, TaskError>)> {
        ThreadPool::imap_unordered_fn(self, T::run, items)
    }

    /// Runs [`Task::run`] on a worker thread; nothing is serialised.
    fn apply_async<T: Task>(&self, task: T) -> AsyncResult<T::Output> {
        self.submit(move || task.run())
    }
}

/// Builds a [`ThreadPool`]: `ThreadPool::builder().size(4).name("fetch").build()`.
#[derive(Clone)]
pub struct ThreadPoolBuilder {
    size: Option<usize>,
    name: String,
    stack_size: Option<usize>,
    initializer: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for ThreadPoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPoolBuilder")
            .field("size", &self.size)
            .field("name", &self.name)
            .field("stack_size", &self.stack_size)
            .field("initializer", &self.initializer.is_some())
            .finish()
    }
}

impl ThreadPoolBuilder {
    /// The number of workers; by default the machine's available
    /// parallelism (1 if unknown), like Python's `Pool()`. Zero is refused
    /// by [`build`](Self::build) with [`PoolError::NoWorkers`], as by every
    /// pool of this crate: never taken as one.
    pub fn size(mut self, workers: usize) -> Self {
        self.size = Some(workers);
        self
    }

    /// The prefix of the worker threads' names: `{name}-0`, `{name}-1`, ...
    pub fn name(mut self, prefix: impl Into<String>) -> Self {
        self.name = prefix.into();
        self
    }

    /// The stack of each worker thread, in bytes (Python's
    /// `threading.stack_size`); the platform's default (2 MiB on Linux)
    /// when unset. Only the pages a task touches are resident, so this
    /// bounds address space and page tables rather than memory: a pool of
    /// many threads with a small stack each needs a task whose deepest call
    /// fits, or the process aborts on the guard page.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Runs `init` on every worker thread when it starts, before it takes
    /// any job (Python's `initializer`; `initargs` are what the closure
    /// captures): to set up thread-local state, say. [`build`](Self::build)
    /// returns once every worker has run it.
    ///
    /// ```
    /// use std::cell::Cell;
    ///
    /// thread_local!(static SCALE: Cell<u32> = const { Cell::new(1) });
    ///
    /// let pool = concur::ThreadPool::builder().size(2).initializer(|| SCALE.set(10)).build()?;
    /// let scaled = pool.map_fn(|x: u32| x * SCALE.get(), [1, 2, 3]);
    /// assert_eq!(scaled, [Ok(10), Ok(20), Ok(30)]);
    /// # Ok::<(), concur::PoolError>(())
    /// ```
    pub fn initializer(mut self, init: impl Fn() + Send + Sync + 'static) -> Self {
        self.initializer = Some(Arc::new(init));
        self
    }

    /// Starts the workers, and waits for their initializer if there is one.
    ///
    /// # Errors
    ///
    /// See [`ThreadPool::new`]; and [`PoolError::Initializer`] if the
    /// initializer panics on a worker. Then no pool is made, and the
    /// workers already started are stopped and joined.
    pub fn build(self) -> Result<ThreadPool, PoolError> {
        let size = match self.size {
            Some(0) => return Err(PoolError::NoWorkers),
            Some(n) => n,
            None => thread::available_parallelism().map_or(1, usize::from),
        };
        let live = Arc::new(AtomicUsize::new(0));
        let pool = ThreadPool { queue: WorkQueue::new(size), size, live: Arc::clone(&live) };
        // Each worker reports how its initializer went, then works.
        let (init_tx, init_rx) = crossbeam_channel::bounded::<Result<(), TaskError>>(size);
        for i in 0..size {
            let jobs = pool.queue.receiver();
            let init = self.initializer.clone().map(|init| (init, init_tx.clone()));
            // Made before the spawn so that a thread that never starts
            // still gives its count back when the closure is dropped.
            let alive = Alive::new(&live);
            let mut thread = thread::Builder::new().name(format!("{}-{i}", self.name));
            if let Some(bytes) = self.stack_size {
                thread = thread.stack_size(bytes);
            }
            let spawned = thread.spawn(move || {
                if let Some((init, report)) = init {
                    let done = run_caught(|| init());
                    let ok = done.is_ok();
                    let _ = report.send(done);
                    if !ok {
                        // `build` fails: this worker takes no job.
                        return;
                    }
                }
                work(&jobs, alive);
            });
            match spawned {
                Ok(handle) => pool.queue.add_thread(handle),
                // Dropping `pool` closes and joins the workers started so far.
                Err(e) => return Err(PoolError::Spawn(e)),
            }
        }
        // Every started worker holds a sender until it has reported, so this
        // ends after `size` reports (none without an initializer).
        drop(init_tx);
        for report in init_rx.iter() {
            if let Err(error) = report {
                let message = match error {
                    TaskError::Panicked(message) => message,
                    other => other.to_string(),
                };
                // Dropping `pool` closes and joins the workers.
                return Err(PoolError::Initializer(message));
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
mod tests;
