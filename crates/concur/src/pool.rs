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
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
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
    rx: Receiver<Result<R, TaskError>>,
}

impl<R> AsyncResult<R> {
    /// A handle and the sender its task completes it with. A sender dropped
    /// without sending means the task was never run: the handle then gives
    /// [`TaskError::Cancelled`].
    pub(crate) fn channel() -> (Sender<Result<R, TaskError>>, Self) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        (tx, AsyncResult { rx })
    }

    /// A handle that is already resolved, e.g. to [`TaskError::Closed`].
    pub(crate) fn ready(result: Result<R, TaskError>) -> Self {
        let (tx, handle) = Self::channel();
        // Cannot fail: the channel has room for one and its receiver is alive.
        let _ = tx.send(result);
        handle
    }

    /// Blocks until the task has finished and returns its result.
    pub fn wait(self) -> Result<R, TaskError> {
        self.rx.recv().unwrap_or(Err(TaskError::Cancelled))
    }

    /// Waits at most `timeout`. Gives the result, or the handle back if the
    /// task has not finished yet, so the caller can wait again.
    pub fn wait_timeout(self, timeout: Duration) -> Result<Result<R, TaskError>, Self> {
        match self.rx.recv_timeout(timeout) {
            Ok(result) => Ok(result),
            Err(RecvTimeoutError::Disconnected) => Ok(Err(TaskError::Cancelled)),
            Err(RecvTimeoutError::Timeout) => Err(self),
        }
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
    AsCompleted { pending: handles.into_iter().enumerate().collect() }
}

/// The iterator of [`as_completed`]. Each step waits on all the handles
/// still pending at once (no polling), in time linear in their number.
#[must_use = "iterators do nothing unless consumed"]
pub struct AsCompleted<R> {
    pending: Vec<(usize, AsyncResult<R>)>,
}

impl<R> Iterator for AsCompleted<R> {
    type Item = (usize, Result<R, TaskError>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.pending.is_empty() {
            return None;
        }
        let mut select = crossbeam_channel::Select::new();
        for (_, handle) in &self.pending {
            select.recv(&handle.rx);
        }
        let op = select.select();
        let at = op.index();
        // A sender dropped unsent: the task never ran.
        let result = op.recv(&self.pending[at].1.rx).unwrap_or(Err(TaskError::Cancelled));
        let (index, _) = self.pending.swap_remove(at);
        Some((index, result))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.pending.len(), Some(self.pending.len()))
    }
}

impl<R> fmt::Debug for AsCompleted<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsCompleted").field("pending", &self.pending.len()).finish()
    }
}

impl<R> fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult").field("finished", &!self.rx.is_empty()).finish()
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
        tx_c.send(Ok(3)).expect("sent");
        assert_eq!(done.next(), Some((2, Ok(3))));
        drop(tx_a); // never run
        assert_eq!(done.next(), Some((0, Err(TaskError::Cancelled))));
        tx_b.send(Ok(2)).expect("sent");
        assert_eq!(done.next(), Some((1, Ok(2))));
        assert_eq!(done.next(), None);
    }

    #[test]
    fn async_result_resolves_and_times_out() {
        let (tx, handle) = AsyncResult::<u8>::channel();
        let handle = handle.wait_timeout(Duration::from_millis(1)).expect_err("nothing was sent yet");
        tx.send(Ok(7)).expect("receiver alive");
        assert_eq!(handle.wait_timeout(Duration::from_secs(10)).ok(), Some(Ok(7)));

        let (tx, handle) = AsyncResult::<u8>::channel();
        drop(tx);
        assert_eq!(handle.wait(), Err(TaskError::Cancelled));

        assert_eq!(AsyncResult::ready(Ok(1)).wait(), Ok(1));
    }
}
