//! A pool of worker processes: the [`Pool`] interface over child processes.
//!
//! Implements the chapter's "process pools" listing (15) and the process
//! half of "multiprocessing.dummy" (16): Python's `multiprocessing.Pool`.
//! Workers are child processes running *the same executable* as the pool,
//! re-executed rather than forked (Python's `spawn` start method): forking a
//! process that has threads copies their locks but not the threads, so it is
//! never done here. A re-executed child learns it is a worker from a
//! handshake only the pool can give (see [`worker_main`]) and, as the first
//! thing in `main`, calls [`worker_main`] with the [`Registry`](crate::Registry) of the tasks
//! it can run.
//!
//! The parts: `builder.rs` (options), `worker.rs` (the child's side), `manager.rs` (the pool's thread per
//! worker: dispatch, time limits, respawn), `reader.rs` (its readers of
//! what a worker sends), `ring.rs` (the shared memory answers travel
//! through), `answers.rs` (answers on their way to the caller, in
//! batches), `slot.rs` (a worker as the pool sees it) and `sys.rs` (every other
//! call into the operating system). The tasks' encoding, the registry of
//! tasks by name and the frames are the [`codec`](crate::codec), which
//! the pool on a broker shares.
//!
//! # The protocol
//!
//! Tasks and results are [`postcard`] values in length-prefixed frames.
//! Requests go down the child's stdin; the greeting and an initializer's
//! answer come up its stdout; the answers of a chunk come through a ring
//! buffer in memory the pool and the worker share. The worker moves its
//! pipes to private descriptors and points its own stdout at stderr and
//! its stdin at `/dev/null`, so a task's `println!` lands on the terminal
//! instead of in the protocol. Frames (`len` is a little-endian `u32`
//! counting the bytes after it, at most 1 GiB; a larger one is refused as
//! malformed):
//!
//! | from   | where  | frame                                                 |
//! |--------|--------|-------------------------------------------------------|
//! | worker | stdout | `len 'H' "concur/3"`: greeting (output before it skipped) |
//! | pool   | stdin  | `len 'I' name payload`: run this initializer once     |
//! | worker | stdout | `len 'r'`: the initializer ran, or an `'E'` frame     |
//! | pool   | stdin  | `len 'R' name count (len payload)*`: run a chunk      |
//! | worker | ring   | `len 'A'`: the chunk was read; nothing of it has run  |
//! | worker | ring   | `len 'O' output` or `len 'E' kind message`, per task  |
//! | worker | stdout | the byte `W`: wake up, there is something in the ring |
//! | pool   | stdin  | `len 'S'`: there is room in the ring again            |
//!
//! # How answers travel
//!
//! Each worker has a ring of 64 KiB that the pool creates (an anonymous
//! file, `memfd_create` where there is one, a POSIX shared memory object
//! elsewhere) and the worker inherits like the handshake pipe. The worker
//! appends each answer's frame as soon as its task finishes and then
//! *commits* it: it publishes how many bytes it has written in all, with
//! one atomic store and no system call. Its manager copies what is
//! committed into its own memory, parses it there (it trusts no length or
//! count in the ring: a broken worker is that worker's failure, never the
//! pool's), and publishes how much it took, which frees room. So the pool
//! always knows which tasks of a chunk are done, and which one was
//! running; and an answer committed is in memory the pool holds, so it
//! survives the worker's death: when the worker's stdout closes, the
//! manager takes what was committed before it blames anyone.
//!
//! Nobody polls. A manager with nothing to take announces in the ring
//! that it is about to block, looks once more, and blocks on the worker's
//! stdout; a worker that commits while the manager is so announced writes
//! it one wake-up byte. A manager busy taking answers has announced
//! nothing, so a chunk of many small tasks costs the worker one `write`
//! per time its manager ran dry, not one per answer. Without a time limit
//! the manager is not woken for a chunk's acknowledgement, only for
//! answers, so a chunk of one task costs one system call each way, like a
//! pipe's ping-pong. A frame larger than the room left goes in pieces:
//! the worker, out of room, announces it waits and blocks on its stdin
//! until the manager sends `'S'`. The protocol of these announcements,
//! and why no wake-up is lost, is in `ring.rs`.
//!
//! # Failures belong to their task
//!
//! Python's pool hangs when a worker dies mid-task. Here, each worker
//! process has a manager thread in the pool that holds its pipes and takes
//! chunks from the shared work queue. When the worker's stdout closes, the
//! manager reaps it at once, busy or idle, and:
//!
//! - the task it was running (the first of its chunk without an answer)
//!   gets [`TaskError::WorkerDied`] with the exit status or signal, e.g.
//!   `killed by signal 9 (SIGKILL)`;
//! - the tasks of the chunk that it had not started run again on a
//!   replacement worker (they did not run, so they run once);
//! - if the worker died before it acknowledged the chunk (while starting,
//!   or before it read it), nothing is blamed and the chunk goes to a
//!   replacement. So that nothing loops forever, the third such death in a
//!   row fails the chunk's first task (or, if no worker even started, the
//!   whole chunk, with how the last one died).
//!
//! A task may be given a time limit ([`ProcessPoolBuilder::task_timeout`],
//! or per call with [`ProcessPool::with_task_timeout`]). A task that
//! overstays it, whether it loops, waits forever or stopped itself
//! (`SIGSTOP`), fails with [`TaskError::TimedOut`]; its worker is killed and
//! replaced, and the rest of its chunk runs on the replacement.
//!
//! A panic is no death: the worker catches it per task and reports
//! [`TaskError::Panicked`]. Only an abort, an exit or a signal kills it.
//!
//! # No orphans, and what is killed
//!
//! Every worker is the leader of its own process group, so a terminal's
//! Ctrl-C (sent to the foreground group) reaches the pool's process but not
//! its workers: the program decides what to do, and the items the workers
//! hold are not lost to the signal.
//!
//! The guarantee, exactly: whenever a worker ends while the pool's process
//! lives (its tasks are done and the pool is closed, joined or dropped; it
//! is recycled by `max_tasks_per_child`; it died; it timed out; the pool
//! was terminated), the pool sends `SIGKILL` to the worker's process group
//! before reaping the worker, so every process a task started and left in
//! that group ends with it. Not covered: a process a task moved to another
//! group or session (`setsid`, `setpgid`, daemons), and processes left
//! behind when the pool's own process is killed outright. In that last case
//! the workers themselves still end: they read end-of-file on stdin and
//! exit, and on Linux the kernel kills them when the thread that started
//! them ends (`PR_SET_PDEATHSIG`).
//!
//! # Platforms
//!
//! Unix only (Linux, macOS, the BSDs): the pool relies on pipes, process
//! groups and `poll`. The crate builds elsewhere without it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::Sender;

use crate::pool::{AsyncResult, Pool, Promise, Task, TaskError, WorkQueue};
// Nothing panics while holding the pool's locks, so poison carries no
// broken invariant.
use crate::sync::lock;

mod answers;
mod builder;
mod manager;
mod per_call;
mod reader;
// Shared memory mapped by hand: raw pointers into the mapping.
#[allow(unsafe_code)]
mod ring;
mod slot;
// Descriptors and signals through libc.
#[allow(unsafe_code)]
mod sys;
mod worker;

pub use builder::ProcessPoolBuilder;
pub use worker::worker_main;

use answers::{Answers, Batch, Batches};
pub use per_call::PerCall;

use crate::codec::{decode, frames};
use slot::Slot;

/// Tasks of one type sent to a worker in one message, and where their
/// results go. Dropping a chunk with tasks unanswered is how their callers
/// learn those were cancelled.
struct Chunk {
    name: &'static str,
    tasks: frames::Payloads,
    deliver: Box<dyn Deliver>,
    /// How long each task may run.
    timeout: Option<Duration>,
}

/// Where the answers of a chunk's tasks go.
trait Deliver: Send {
    /// Takes the answer for the task at an index of the chunk: its
    /// serialised output, or why there is none. Called once per task.
    fn answer(&mut self, k: usize, result: Result<&[u8], TaskError>);

    /// Hands the answers taken so far to the caller. The manager calls it
    /// whenever it is about to wait, so answers are held back only while
    /// more are already at hand: the caller is woken once per batch of
    /// answers rather than once per answer. Dropping also flushes.
    fn flush(&mut self) {}
}

impl Chunk {
    /// Answers every task from `from` on with `error`.
    fn fail_from(&mut self, from: usize, error: &TaskError) {
        for k in from..self.tasks.len() {
            self.deliver.answer(k, Err(error.clone()));
        }
        self.deliver.flush();
    }
}

/// A pool of worker processes running registered [`Task`]s: Python's
/// `multiprocessing.Pool`.
///
/// Workers re-execute the current program, which must call
/// [`worker_main`] first thing in `main`. Use it through the [`Pool`]
/// trait, like a [`ThreadPool`](crate::ThreadPool):
///
/// ```no_run
/// use concur::{Pool, ProcessPool, Registry, Task};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Square(u64);
///
/// impl Task for Square {
///     type Output = u64;
///     const NAME: &'static str = "square";
///     fn run(self) -> u64 {
///         self.0 * self.0
///     }
/// }
///
/// fn main() -> Result<(), concur::PoolError> {
///     concur::worker_main(Registry::new().register::<Square>());
///
///     let pool = ProcessPool::builder().size(4).build()?;
///     let squares = pool.map((0..10).map(Square));
///     assert_eq!(squares[3], Ok(9));
///     Ok(())
/// }
/// ```
///
/// # Failures
///
/// Each task gives its output or a [`TaskError`]; nothing takes the pool
/// down. A panic is [`TaskError::Panicked`] and the worker carries on. A
/// worker that dies (abort, exit, a signal) fails only the task it was
/// running, with [`TaskError::WorkerDied`]; it is replaced and the rest of
/// its chunk runs on the replacement. A task over its time limit is
/// [`TaskError::TimedOut`]. A task or output that cannot be serialised is
/// [`TaskError::Serialize`]; a task the worker has not registered is
/// [`TaskError::Failed`].
///
/// # Shutdown
///
/// Like [`ThreadPool`](crate::ThreadPool): [`close`](Self::close) refuses
/// new work, [`join`](Self::join) closes and waits for queued work and for
/// every worker to exit, and dropping the pool joins it (give tasks a time
/// limit if one might never return). [`terminate`](Self::terminate) also
/// cancels queued work and kills the workers, failing the tasks they were
/// running. Every worker process is reaped: none is left behind as a
/// zombie or an orphan, and neither are the processes its tasks left in
/// its process group (see the module docs for the exact guarantee).
pub struct ProcessPool {
    /// The chunks, and the manager threads that take them.
    queue: WorkQueue<Chunk>,
    shared: Arc<Shared>,
    chunksize: usize,
    /// Each task's time limit unless a call gives its own.
    task_timeout: Option<Duration>,
}

/// What the pool and its manager threads share.
struct Shared {
    config: builder::Config,
    /// One per manager: its worker, and how to wake it when idle.
    slots: Vec<Slot>,
    /// Every worker ever started, in order.
    spawned: Mutex<Vec<u32>>,
    terminated: AtomicBool,
}

impl Shared {
    /// Wakes up to `n` idle managers, so they look at the queue again.
    fn wake(&self, mut n: usize) {
        for slot in &self.slots {
            if n == 0 {
                break;
            }
            if slot.wake() {
                n -= 1;
            }
        }
    }
}

impl ProcessPool {
    /// A pool of `workers` processes running this program, with the
    /// defaults of [`builder`](Self::builder).
    ///
    /// # Errors
    ///
    /// [`PoolError::NoWorkers`](crate::PoolError::NoWorkers) for 0,
    /// [`PoolError::Spawn`](crate::PoolError::Spawn) if a worker process
    /// cannot be started.
    pub fn new(workers: usize) -> Result<Self, crate::PoolError> {
        Self::builder().size(workers).build()
    }

    /// A builder for the size, chunk size, worker recycling, initializer,
    /// time limit, program and its arguments.
    pub fn builder() -> ProcessPoolBuilder {
        ProcessPoolBuilder::default()
    }

    /// The number of worker processes.
    pub fn size(&self) -> usize {
        self.shared.slots.len()
    }

    /// Tasks sent to a worker per message.
    pub fn chunksize(&self) -> usize {
        self.chunksize
    }

    /// The pids of the worker processes alive now. A worker that dies is
    /// reaped and leaves this list at once; it is replaced when its
    /// manager next has work.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.shared.slots.iter().filter_map(Slot::pid).collect()
    }

    /// The pids of every worker process this pool has started, in order,
    /// including those since reaped.
    pub fn spawned_pids(&self) -> Vec<u32> {
        lock(&self.shared.spawned).clone()
    }

    /// Whether the pool has stopped accepting work.
    pub fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }

    /// Stops accepting work; queued tasks still run. Idempotent.
    pub fn close(&self) {
        self.queue.close();
        // Idle managers learn the queue is closed and let their workers go.
        self.shared.wake(usize::MAX);
    }

    /// Closes the pool, cancels every queued task that no worker has
    /// started ([`TaskError::Cancelled`]) and kills the workers and their
    /// process groups: the tasks they were running fail with
    /// [`TaskError::WorkerDied`]. Returns without waiting;
    /// [`join`](Self::join) waits for the workers to be reaped.
    pub fn terminate(&self) {
        // Set before the kills: a manager starting a worker checks it under
        // the slot's lock, so no new worker escapes.
        self.shared.terminated.store(true, Ordering::SeqCst);
        self.close();
        self.queue.drain();
        for slot in &self.shared.slots {
            slot.kill();
        }
    }

    /// Closes the pool and waits until every queued task has run and every
    /// worker has exited and been reaped.
    pub fn join(&self) {
        self.close();
        self.queue.join();
    }

    /// This pool, with a time limit for each task of the calls made
    /// through it (instead of [`ProcessPoolBuilder::task_timeout`]'s). A
    /// task that runs longer fails with [`TaskError::TimedOut`] and its
    /// worker is replaced.
    ///
    /// ```no_run
    /// # use concur::{Pool, ProcessPool};
    /// # use std::time::Duration;
    /// # fn f(pool: &ProcessPool, tasks: Vec<impl concur::Task>) {
    /// let results = pool.with_task_timeout(Duration::from_secs(5)).map(tasks);
    /// # }
    /// ```
    pub fn with_task_timeout(&self, limit: Duration) -> PerCall<'_> {
        self.per_call().task_timeout(limit)
    }

    /// This pool, sending the tasks of calls through it `chunksize` at a
    /// time (multiprocessing's per-call `chunksize`).
    ///
    /// ```no_run
    /// # use concur::{Pool, ProcessPool};
    /// # fn f(pool: &ProcessPool, tasks: Vec<impl concur::Task>) {
    /// let results = pool.with_chunksize(100).map(tasks);
    /// # }
    /// ```
    pub fn with_chunksize(&self, chunksize: usize) -> PerCall<'_> {
        self.per_call().chunksize(chunksize)
    }

    fn per_call(&self) -> PerCall<'_> {
        PerCall { pool: self, timeout: self.task_timeout, chunksize: self.chunksize }
    }

    /// Queues chunks all together, or hands them back if the pool is closed.
    fn execute(&self, chunks: Vec<Chunk>) -> Result<(), Vec<Chunk>> {
        let n = self.queue.send_all(chunks)?;
        self.shared.wake(n);
        Ok(())
    }

    fn imap_unordered_within<T: Task>(
        &self,
        items: impl IntoIterator<Item = T>,
        timeout: Option<Duration>,
        chunksize: usize,
    ) -> Answers<T::Output> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut n = 0;
        let mut chunks = Vec::new();
        let mut indices = Vec::new();
        let mut tasks = frames::Payloads::default();
        for (i, task) in items.into_iter().enumerate() {
            n = i + 1;
            match tasks.push(&task, || format!("task {:?}", T::NAME)) {
                Ok(()) => {
                    indices.push(i);
                    if tasks.len() == chunksize {
                        let (indices, tasks) = (std::mem::take(&mut indices), std::mem::take(&mut tasks));
                        chunks.push(chunk_of::<T>(indices, tasks, tx.clone(), timeout));
                    }
                }
                // Cannot fail: `rx` is alive in this frame.
                Err(e) => drop(tx.send(Batch::One(i, Err(e)))),
            }
        }
        if !tasks.is_empty() {
            chunks.push(chunk_of::<T>(indices, tasks, tx.clone(), timeout));
        }
        if let Err(chunks) = self.execute(chunks) {
            for mut chunk in chunks {
                chunk.fail_from(0, &TaskError::Closed);
            }
        }
        Answers::new(rx, n)
    }

    fn apply_async_within<T: Task>(&self, task: T, timeout: Option<Duration>) -> AsyncResult<T::Output> {
        let mut tasks = frames::Payloads::default();
        if let Err(e) = tasks.push(&task, || format!("task {:?}", T::NAME)) {
            return AsyncResult::ready(Err(e));
        }
        let (tx, handle) = AsyncResult::channel();
        let chunk = Chunk { name: T::NAME, tasks, deliver: Box::new(One::<T> { tx }), timeout };
        match self.execute(vec![chunk]) {
            Ok(()) => handle,
            Err(_) => AsyncResult::ready(Err(TaskError::Closed)),
        }
    }
}

impl Pool for ProcessPool {
    fn map<T: Task>(&self, items: impl IntoIterator<Item = T>) -> Vec<Result<T::Output, TaskError>> {
        self.imap_unordered_within(items, self.task_timeout, self.chunksize).in_input_order()
    }

    /// Serialises every task now, sends them to the workers `chunksize` at
    /// a time, and yields `(index, result)` as answers arrive.
    fn imap_unordered<T: Task>(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> impl Iterator<Item = (usize, Result<T::Output, TaskError>)> {
        self.imap_unordered_within(items, self.task_timeout, self.chunksize)
    }

    fn apply_async<T: Task>(&self, task: T) -> AsyncResult<T::Output> {
        self.apply_async_within(task, self.task_timeout)
    }
}

/// A chunk whose answers go to `tx`, in batches, under the tasks' input
/// indices.
fn chunk_of<T: Task>(
    indices: Vec<usize>,
    tasks: frames::Payloads,
    tx: Sender<Batch<T::Output>>,
    timeout: Option<Duration>,
) -> Chunk {
    Chunk { name: T::NAME, tasks, deliver: Box::new(Batches::<T>::new(indices, tx)), timeout }
}

/// The answer of one task, for [`Pool::apply_async`].
struct One<T: Task> {
    tx: Promise<T::Output>,
}

impl<T: Task> Deliver for One<T> {
    fn answer(&mut self, _: usize, result: Result<&[u8], TaskError>) {
        self.tx.complete(result.and_then(|bytes| decode(bytes, T::NAME)));
    }
}

impl Drop for ProcessPool {
    /// Closes the pool, lets queued work finish, and reaps every worker,
    /// like [`join`](ProcessPool::join).
    fn drop(&mut self) {
        self.join();
    }
}

impl std::fmt::Debug for ProcessPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessPool")
            .field("size", &self.size())
            .field("chunksize", &self.chunksize)
            .field("task_timeout", &self.task_timeout)
            .field("workers", &self.worker_pids())
            .field("queued", &self.queue.len())
            .field("closed", &self.is_closed())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::ImapUnordered;

    #[test]
    fn results_cancel_what_never_comes() {
        let (tx, rx) = crossbeam_channel::unbounded();
        tx.send((2, Ok(20))).expect("receiver alive");
        drop(tx);
        let results = ImapUnordered::new(rx, 3);
        let got: Vec<_> = results.collect();
        assert_eq!(got, [(2, Ok(20)), (0, Err(TaskError::Cancelled)), (1, Err(TaskError::Cancelled))]);
    }
}
