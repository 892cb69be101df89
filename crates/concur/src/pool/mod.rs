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
use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

mod handle;
mod iter;
#[cfg(test)]
mod tests;
mod work_queue;

pub use handle::{AsCompleted, AsyncResult, Promise, as_completed};
pub use iter::ImapUnordered;
pub(crate) use iter::{InOrder, Tally};
pub(crate) use work_queue::WorkQueue;

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
