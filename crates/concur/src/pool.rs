//! The one pool interface shared by threads and processes.
//!
//! Implements the chapter's "process pools" and "multiprocessing.dummy"
//! listings (15 and 16): Python's `multiprocessing.Pool` and
//! `multiprocessing.dummy.Pool` have the same methods, so switching a program
//! between processes and threads is a one-line change. Here that interface is
//! the [`Pool`] trait. A process cannot receive a closure, so the trait is not
//! over functions but over a registered [`Task`] type: a serialisable value
//! that knows how to run itself, with a [`Task::NAME`] by which a worker
//! process finds it. A thread pool simply calls [`Task::run`]; a process pool
//! sends the task over a pipe and the result back.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A unit of work a [`Pool`] can run, in a thread or in another process.
///
/// A task that can fail reports its own error in its output
/// (`type Output = Result<X, E>`); [`TaskError`] is reserved for the pool's
/// failure to run it at all.
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Square(u64);
///
/// impl concur::Task for Square {
///     type Output = u64;
///     const NAME: &'static str = "square";
///     fn run(self) -> u64 {
///         self.0 * self.0
///     }
/// }
/// ```
pub trait Task: Serialize + DeserializeOwned + Send + 'static {
    /// What running the task produces.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// A name unique among the tasks of a program: how a worker process
    /// finds the code to run, since it cannot be sent a function.
    const NAME: &'static str;
    /// Does the work.
    fn run(self) -> Self::Output;
}

/// Why a pool could not give a task's output.
///
/// A task's *own* failure belongs in its output (`Output = Result<X, E>`);
/// these are failures of the pool to run it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The task panicked; the panic message.
    #[error("task panicked: {0}")]
    Panicked(String),
    /// The task could not be run for a reason the worker reported as text,
    /// e.g. a worker process that knows no task of that name.
    #[error("task failed: {0}")]
    Failed(String),
    /// The task was queued but never run: the pool was terminated first.
    #[error("task cancelled before it ran")]
    Cancelled,
    /// The pool was closed before the task was submitted; it was not queued.
    #[error("pool is closed: no new work is accepted")]
    Closed,
    /// The worker running the task died: how (its exit status or signal,
    /// kept as numbers too).
    #[error("worker died: {0}")]
    WorkerDied(WorkerExit),
    /// The task or its output could not be (de)serialised.
    #[error("serialisation failed: {0}")]
    Serialize(String),
    /// The task ran longer than its time limit (the limit), and was
    /// stopped: for a process pool, its worker was killed and replaced.
    #[error("task exceeded its time limit of {0:?}")]
    TimedOut(Duration),
}

/// How a worker process ended, for [`TaskError::WorkerDied`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerExit {
    /// Its exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// What happened, in words, e.g. `killed by signal 9 (SIGKILL) while
    /// starting`.
    pub detail: String,
}

impl fmt::Display for WorkerExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

/// The pool interface of the chapter: `map`, `imap`, `imap_unordered` and
/// `apply_async`, over [`Task`]s.
///
/// Write code against `P: Pool` and the choice of threads or processes is
/// made in one line where the pool is built:
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)]
/// # struct Square(u64);
/// # impl concur::Task for Square {
/// #     type Output = u64;
/// #     const NAME: &'static str = "square";
/// #     fn run(self) -> u64 { self.0 * self.0 }
/// # }
/// use concur::{Pool, ThreadPool};
///
/// fn squares(pool: &impl Pool) -> Vec<u64> {
///     pool.map((1..=4).map(Square))
///         .into_iter()
///         .map(|r| r.expect("a square cannot fail"))
///         .collect()
/// }
///
/// let pool = ThreadPool::new(2)?; // the one line that picks threads
/// assert_eq!(squares(&pool), [1, 4, 9, 16]);
/// # Ok::<(), concur::PoolError>(())
/// ```
///
/// Every method accounts for every item: each input gives exactly one
/// result, an `Ok` output or a [`TaskError`]. Input is consumed (and queued)
/// when the method is called; results are yielded as they come.
///
/// Implementors provide [`imap_unordered`](Pool::imap_unordered) and
/// [`apply_async`](Pool::apply_async); `imap` and `map` come from those.
///
/// [`ThreadPool`](crate::ThreadPool) also takes closures, under other
/// names so the two cannot be confused: `map_fn`, `imap_fn` and
/// `imap_unordered_fn` apply a function to items, while `map`, `imap` and
/// `imap_unordered` (this trait) run tasks.
pub trait Pool {
    /// Runs every task and returns their results in input order.
    fn map<T: Task>(&self, items: impl IntoIterator<Item = T>) -> Vec<Result<T::Output, TaskError>> {
        self.imap(items).collect()
    }

    /// Runs every task; yields the results lazily, in input order.
    fn imap<T: Task>(&self, items: impl IntoIterator<Item = T>) -> impl Iterator<Item = Result<T::Output, TaskError>> {
        InOrder::new(self.imap_unordered(items))
    }

    /// Runs every task; yields `(input index, result)` as tasks complete.
    /// Each index appears exactly once.
    fn imap_unordered<T: Task>(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> impl Iterator<Item = (usize, Result<T::Output, TaskError>)>;

    /// Queues one task and returns a handle to wait on its result.
    fn apply_async<T: Task>(&self, task: T) -> AsyncResult<T::Output>;
}

/// A handle on the result of one task queued with
/// [`Pool::apply_async`] or [`ThreadPool::submit`](crate::ThreadPool::submit).
///
/// Dropping the handle does not cancel the task; its result is discarded.
/// To wait on several, as they finish: [`as_completed`].
#[must_use = "the task runs anyway; wait on the handle to get its result"]
pub struct AsyncResult<R> {
    slot: Arc<Slot<R>>,
}

/// How many times a waiter yields before it parks. A channel's receiver
/// (crossbeam's, as this handle was) spins for microseconds and then
/// yields: with 16 dispatcher threads waiting on 2 cores the spinning took
/// a tenth of all CPU samples. Parking at once was worse for the process
/// pool (each answer then paid a futex wake-up: 52 µs of CPU per request
/// against 42); 8 yields and no spin gave 0.88× the CPU per request of the
/// channel with the process pool and 0.84× with the thread pool behind the
/// same dispatchers (`rates bench --models process-pool,dummy-pool
/// --requests 5000 --sim-latency 0 --workers 16`, 8 alternations); 2 to
/// 32 yields differ little.
const YIELDS_BEFORE_PARKING: usize = 8;

/// Where a task's result waits for its handle.
struct Slot<R> {
    state: Mutex<State<R>>,
    done: Condvar,
    /// Set with `state` once finished: read without the lock while the
    /// waiter yields before it parks.
    finished: AtomicBool,
}

enum State<R> {
    /// Not finished. `parked`: the handle's owner waits on `done`;
    /// `notify`: an [`as_completed`] waits for this index.
    Pending {
        parked: bool,
        notify: Option<(Sender<usize>, usize)>,
    },
    Finished(Result<R, TaskError>),
    /// Its result was handed out.
    Taken,
}

/// The sending half of an [`AsyncResult`]: whoever runs the task completes
/// it once. Dropped without [`complete`](Self::complete), the task never
/// ran: the handle gives [`TaskError::Cancelled`].
pub(crate) struct Promise<R> {
    slot: Arc<Slot<R>>,
}

impl<R> Promise<R> {
    /// Completes the handle, unless it already is: the first result
    /// stands.
    pub(crate) fn complete(&self, result: Result<R, TaskError>) {
        let mut state = lock(&self.slot.state);
        let State::Pending { parked, notify } = &mut *state else {
            return;
        };
        let (parked, notify) = (*parked, notify.take());
        *state = State::Finished(result);
        self.slot.finished.store(true, Ordering::Release);
        drop(state);
        if parked {
            self.slot.done.notify_one();
        }
        if let Some((tx, index)) = notify {
            // Its `as_completed` may have been dropped.
            let _ = tx.send(index);
        }
    }
}

impl<R> Drop for Promise<R> {
    fn drop(&mut self) {
        self.complete(Err(TaskError::Cancelled));
    }
}

/// The slot's state even if a thread panicked while holding the lock: every
/// change to it is a single assignment, so it is never half made.
fn lock<R>(state: &Mutex<State<R>>) -> MutexGuard<'_, State<R>> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<R> AsyncResult<R> {
    /// A handle and the promise its task completes it with.
    pub(crate) fn channel() -> (Promise<R>, Self) {
        let slot = Arc::new(Slot {
            state: Mutex::new(State::Pending { parked: false, notify: None }),
            done: Condvar::new(),
            finished: AtomicBool::new(false),
        });
        (Promise { slot: Arc::clone(&slot) }, AsyncResult { slot })
    }

    /// A handle that is already resolved, e.g. to [`TaskError::Closed`].
    pub(crate) fn ready(result: Result<R, TaskError>) -> Self {
        let state = Mutex::new(State::Finished(result));
        AsyncResult { slot: Arc::new(Slot { state, done: Condvar::new(), finished: AtomicBool::new(true) }) }
    }

    /// Blocks until the task has finished and returns its result.
    pub fn wait(self) -> Result<R, TaskError> {
        self.before_parking();
        let mut state = lock(&self.slot.state);
        loop {
            match &mut *state {
                State::Pending { parked, .. } => *parked = true,
                _ => return take(&mut state),
            }
            state = self.slot.done.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Waits at most `timeout`. Gives the result, or the handle back if the
    /// task has not finished yet, so the caller can wait again.
    pub fn wait_timeout(self, timeout: Duration) -> Result<Result<R, TaskError>, Self> {
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            // Longer than the clock can count: no deadline at all.
            return Ok(self.wait());
        };
        self.before_parking();
        let mut state = lock(&self.slot.state);
        loop {
            match &mut *state {
                State::Pending { parked, .. } => *parked = true,
                _ => return Ok(take(&mut state)),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(state);
                return Err(self);
            }
            state = self.slot.done.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Gives the CPU away a few times before parking: a result due within
    /// microseconds (the usual case for a pool's dispatcher) then costs no
    /// futex wait and wake-up. No spinning: with more waiting threads
    /// than cores, a spinning waiter holds a core the producer of its
    /// result needs.
    fn before_parking(&self) {
        for _ in 0..YIELDS_BEFORE_PARKING {
            if self.slot.finished.load(Ordering::Acquire) {
                return;
            }
            std::thread::yield_now();
        }
    }

    /// Whether the task has finished (its result may be taken at once).
    fn is_finished(&self) -> bool {
        matches!(*lock(&self.slot.state), State::Finished(_))
    }
}

/// The finished result of a slot, which is then `Taken`.
fn take<R>(state: &mut State<R>) -> Result<R, TaskError> {
    match std::mem::replace(state, State::Taken) {
        State::Finished(result) => result,
        // A handle is waited on once (`wait` takes it), and `as_completed`
        // takes each index once: neither happens.
        State::Pending { .. } | State::Taken => Err(TaskError::Cancelled),
    }
}

/// Yields `(index, result)` for each handle, as its task finishes: Python's
/// `concurrent.futures.as_completed`. The first item is the first task to
/// finish (`wait(..., return_when=FIRST_COMPLETED)`); the index is the
/// handle's position in `handles`. Each index comes exactly once.
///
/// ```
/// use concur::{ThreadPool, as_completed};
/// use std::time::Duration;
///
/// let pool = ThreadPool::new(2)?;
/// let slow = pool.submit(|| { std::thread::sleep(Duration::from_millis(200)); "slow" });
/// let quick = pool.submit(|| "quick");
/// let mut done = as_completed([slow, quick]);
/// assert_eq!(done.next(), Some((1, Ok("quick"))));
/// assert_eq!(done.next(), Some((0, Ok("slow"))));
/// assert_eq!(done.next(), None);
/// # Ok::<(), concur::PoolError>(())
/// ```
pub fn as_completed<R>(handles: impl IntoIterator<Item = AsyncResult<R>>) -> AsCompleted<R> {
    let (tx, finished) = crossbeam_channel::unbounded();
    let handles: Vec<Option<AsyncResult<R>>> = handles
        .into_iter()
        .enumerate()
        .map(|(index, handle)| {
            let mut state = lock(&handle.slot.state);
            match &mut *state {
                State::Pending { notify, .. } => *notify = Some((tx.clone(), index)),
                // Finished (or, never, taken): ready to be taken.
                _ => {
                    let _ = tx.send(index);
                }
            }
            drop(state);
            Some(handle)
        })
        .collect();
    AsCompleted { left: handles.len(), handles, finished }
}

/// The iterator of [`as_completed`]. Each finishing task names its index
/// on one channel: a step waits for the next name, whatever the number of
/// handles still pending (no polling).
#[must_use = "iterators do nothing unless consumed"]
pub struct AsCompleted<R> {
    handles: Vec<Option<AsyncResult<R>>>,
    left: usize,
    finished: Receiver<usize>,
}

impl<R> Iterator for AsCompleted<R> {
    type Item = (usize, Result<R, TaskError>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        // Every pending handle's promise names it once, when it completes
        // or is dropped; so the channel cannot run dry while any is left.
        let index = self.finished.recv().ok()?;
        let handle = self.handles.get_mut(index)?.take()?;
        self.left -= 1;
        let result = take(&mut lock(&handle.slot.state));
        Some((index, result))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<R> fmt::Debug for AsCompleted<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsCompleted").field("pending", &self.left).finish()
    }
}

impl<R> fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult").field("finished", &self.is_finished()).finish()
    }
}

/// Turns `(index, result)` pairs arriving in any order into results in index
/// order, buffering the early ones. The input must give each index from 0
/// exactly once (every pool's `imap_unordered` does).
pub(crate) struct InOrder<I, R> {
    inner: I,
    next: usize,
    early: BTreeMap<usize, Result<R, TaskError>>,
}

impl<I, R> InOrder<I, R> {
    pub(crate) fn new(inner: I) -> Self {
        InOrder { inner, next: 0, early: BTreeMap::new() }
    }
}

impl<I, R> Iterator for InOrder<I, R>
where
    I: Iterator<Item = (usize, Result<R, TaskError>)>,
{
    type Item = Result<R, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(result) = self.early.remove(&self.next) {
                self.next += 1;
                return Some(result);
            }
            match self.inner.next() {
                Some((i, result)) if i == self.next => {
                    self.next += 1;
                    return Some(result);
                }
                Some((i, result)) => {
                    self.early.insert(i, result);
                }
                // Only reachable if the input broke its contract and skipped
                // an index: give the rest in order rather than drop them.
                None => {
                    let (i, result) = self.early.pop_first()?;
                    self.next = i + 1;
                    return Some(result);
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let (lo, hi) = self.inner.size_hint();
        let buffered = self.early.len();
        (lo.saturating_add(buffered), hi.and_then(|h| h.checked_add(buffered)))
    }
}

/// Why a pool could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// A pool of zero workers would accept work and never do it.
    #[error("a pool needs at least one worker, got 0")]
    NoWorkers,
    /// The operating system refused to start a worker.
    #[error("cannot start a worker: {0}")]
    Spawn(std::io::Error),
    /// A worker's initializer panicked (the panic's message).
    #[error("a worker's initializer panicked: {0}")]
    Initializer(String),
}

/// The message of a panic payload (what `catch_unwind` or
/// `JoinHandle::join` hands back): the `&str` or `String` given to `panic!`,
/// or a placeholder for other payloads.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Results of `imap_unordered` (both pools): `(input index, result)` in
/// completion order, each index exactly once; the indices whose senders
/// vanished without an answer come last, as `Cancelled`.
pub struct ImapUnordered<R> {
    results: Receiver<(usize, Result<R, TaskError>)>,
    tally: Tally,
}

impl<R> ImapUnordered<R> {
    /// Results of `n` tasks, each answering `(index, result)` on `results`.
    pub(crate) fn new(results: Receiver<(usize, Result<R, TaskError>)>, n: usize) -> Self {
        ImapUnordered { results, tally: Tally::new(n) }
    }
}

/// Which of `n` input indices have been answered, for the iterators of
/// `imap_unordered`: each index is given once (a repeat is dropped), and
/// once no more answers can come, those never answered are named in
/// order, as cancelled.
#[derive(Debug)]
pub(crate) struct Tally {
    seen: Vec<bool>,
    left: usize,
    /// Once no more answers can come, the indices not seen were
    /// cancelled; this is where the search for them resumes.
    cancelled_from: Option<usize>,
}

impl Tally {
    pub(crate) fn new(n: usize) -> Self {
        Tally { seen: vec![false; n], left: n, cancelled_from: None }
    }

    /// Indices not given yet.
    pub(crate) fn left(&self) -> usize {
        self.left
    }

    /// How many indices there are.
    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether answers may still come (no index was named cancelled yet).
    pub(crate) fn open(&self) -> bool {
        self.cancelled_from.is_none()
    }

    /// Counts the answer of index `i`: `false` for a repeat or an index
    /// out of range, which is to be dropped.
    pub(crate) fn take(&mut self, i: usize) -> bool {
        match self.seen.get_mut(i) {
            Some(seen @ false) => {
                *seen = true;
                self.left -= 1;
                true
            }
            _ => false,
        }
    }

    /// No more answers can come: the next index never answered, counted
    /// as given (cancelled).
    pub(crate) fn next_cancelled(&mut self) -> Option<usize> {
        let from = self.cancelled_from.unwrap_or(0);
        let i = from + self.seen.get(from..)?.iter().position(|seen| !seen)?;
        self.seen[i] = true;
        self.left -= 1;
        self.cancelled_from = Some(i + 1);
        Some(i)
    }
}

impl<R> Iterator for ImapUnordered<R> {
    type Item = (usize, Result<R, TaskError>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.tally.left() == 0 {
            return None;
        }
        if self.tally.open() {
            // Blocks until a job reports, or until every job's sender is
            // gone (all ran or were cancelled): never hangs.
            while let Ok((i, result)) = self.results.recv() {
                if self.tally.take(i) {
                    return Some((i, result));
                }
            }
        }
        self.tally.next_cancelled().map(|i| (i, Err(TaskError::Cancelled)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.tally.left(), Some(self.tally.left()))
    }
}

impl<R> ExactSizeIterator for ImapUnordered<R> {}
impl<R> std::iter::FusedIterator for ImapUnordered<R> {}

impl<R> std::fmt::Debug for ImapUnordered<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapUnordered").field("left", &self.tally.left()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_gives_each_index_once_then_names_the_rest_cancelled() {
        let mut t = Tally::new(4);
        assert!(t.take(2) && !t.take(2), "a repeat is dropped");
        assert!(!t.take(9), "an index out of range is dropped");
        assert!(t.open());
        assert_eq!((t.next_cancelled(), t.next_cancelled()), (Some(0), Some(1)));
        assert!(!t.open());
        assert_eq!(t.next_cancelled(), Some(3), "2 was answered");
        assert_eq!((t.next_cancelled(), t.left(), t.len()), (None, 0, 4));
    }

    #[test]
    fn in_order_reorders_and_keeps_everything() {
        let arrivals = vec![(2, Ok(20)), (0, Ok(0)), (3, Err(TaskError::Cancelled)), (1, Ok(10))];
        let got: Vec<_> = InOrder::new(arrivals.into_iter()).collect();
        assert_eq!(got, vec![Ok(0), Ok(10), Ok(20), Err(TaskError::Cancelled)]);
    }

    #[test]
    fn in_order_survives_a_missing_index() {
        let arrivals = vec![(2, Ok(20)), (0, Ok(0))];
        let got: Vec<Result<i32, TaskError>> = InOrder::new(arrivals.into_iter()).collect();
        assert_eq!(got, vec![Ok(0), Ok(20)]);
    }

    #[test]
    fn panic_messages() {
        let p: Box<dyn Any + Send> = Box::new("static");
        assert_eq!(panic_message(&*p), "static");
        let p: Box<dyn Any + Send> = Box::new(format!("owned {}", 1));
        assert_eq!(panic_message(&*p), "owned 1");
        let p: Box<dyn Any + Send> = Box::new(42_u8);
        assert_eq!(panic_message(&*p), "non-string panic payload");
    }

    #[test]
    fn as_completed_gives_each_handle_once_in_finishing_order() {
        let (tx_a, a) = AsyncResult::<u8>::channel();
        let (tx_b, b) = AsyncResult::<u8>::channel();
        let (tx_c, c) = AsyncResult::<u8>::channel();
        let mut done = as_completed([a, b, c]);
        assert_eq!(done.size_hint(), (3, Some(3)));
        tx_c.complete(Ok(3));
        assert_eq!(done.next(), Some((2, Ok(3))));
        drop(tx_a); // never run
        assert_eq!(done.next(), Some((0, Err(TaskError::Cancelled))));
        tx_b.complete(Ok(2));
        assert_eq!(done.next(), Some((1, Ok(2))));
        assert_eq!(done.next(), None);
    }

    #[test]
    fn as_completed_takes_handles_finished_before_it_first() {
        let (tx_a, a) = AsyncResult::<u8>::channel();
        let (tx_b, b) = AsyncResult::<u8>::channel();
        tx_b.complete(Ok(2));
        let mut done = as_completed([a, b, AsyncResult::ready(Ok(3))]);
        assert_eq!(done.next(), Some((1, Ok(2))));
        assert_eq!(done.next(), Some((2, Ok(3))));
        // Completed after `as_completed` registered it, from another
        // thread: its promise names it on the iterator's channel.
        let finisher = std::thread::spawn(move || tx_a.complete(Ok(1)));
        assert_eq!(done.next(), Some((0, Ok(1))));
        assert_eq!(done.next(), None);
        finisher.join().expect("no panic");
    }

    #[test]
    fn a_parked_waiter_is_woken_by_the_result() {
        let (tx, handle) = AsyncResult::<u8>::channel();
        let slot = Arc::clone(&handle.slot);
        let (got_tx, got) = crossbeam_channel::bounded(1);
        let waiter = std::thread::spawn(move || got_tx.send(handle.wait()).expect("the test waits"));
        // Complete only once the waiter has parked, so that the wake-up is
        // what the test drives.
        let parked = || matches!(*lock(&slot.state), State::Pending { parked: true, .. });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !parked() {
            assert!(std::time::Instant::now() < deadline, "the waiter never parked");
            std::thread::sleep(Duration::from_millis(1));
        }
        tx.complete(Ok(5));
        assert_eq!(got.recv_timeout(Duration::from_secs(10)), Ok(Ok(5)));
        waiter.join().expect("no panic");
    }

    #[test]
    fn the_first_result_stands() {
        let (tx, handle) = AsyncResult::<u8>::channel();
        tx.complete(Ok(1));
        tx.complete(Ok(2));
        drop(tx);
        assert_eq!(handle.wait(), Ok(1));
    }

    #[test]
    fn async_result_resolves_and_times_out() {
        let (tx, handle) = AsyncResult::<u8>::channel();
        let handle = handle.wait_timeout(Duration::from_millis(1)).expect_err("nothing was sent yet");
        tx.complete(Ok(7));
        assert_eq!(handle.wait_timeout(Duration::from_secs(10)).ok(), Some(Ok(7)));

        let (tx, handle) = AsyncResult::<u8>::channel();
        drop(tx);
        assert_eq!(handle.wait(), Err(TaskError::Cancelled));

        assert_eq!(AsyncResult::ready(Ok(1)).wait(), Ok(1));
        assert_eq!(AsyncResult::ready(Ok(2)).wait_timeout(Duration::MAX).ok(), Some(Ok(2)));
    }
}
