//! [`ProcessPoolBuilder`]: the options of a [`ProcessPool`] and starting it.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::manager::Manager;
use super::slot::Slot;
use super::{ProcessPool, Shared};
use crate::codec::encode;
use crate::pool::WorkQueue;
use crate::pool::{PoolError, Task, TaskError};

/// What every manager needs to know to start and drive a worker.
pub(super) struct Config {
    pub(super) program: PathBuf,
    pub(super) args: Vec<OsString>,
    pub(super) initializer: Option<(&'static str, Vec<u8>)>,
    pub(super) max_tasks_per_child: Option<usize>,
    pub(super) start_timeout: Duration,
}

/// Builds a [`ProcessPool`]:
/// `ProcessPool::builder().size(4).chunksize(10).build()`.
#[derive(Clone)]
pub struct ProcessPoolBuilder {
    size: Option<usize>,
    chunksize: usize,
    max_tasks_per_child: Option<usize>,
    program: Option<PathBuf>,
    args: Vec<OsString>,
    initializer: Option<Result<(&'static str, Vec<u8>), TaskError>>,
    start_timeout: Duration,
    task_timeout: Option<Duration>,
}

impl Default for ProcessPoolBuilder {
    fn default() -> Self {
        ProcessPoolBuilder {
            size: None,
            chunksize: 1,
            max_tasks_per_child: None,
            program: None,
            args: Vec::new(),
            initializer: None,
            start_timeout: Duration::from_secs(30),
            task_timeout: None,
        }
    }
}

impl ProcessPoolBuilder {
    /// The number of worker processes; by default the machine's available
    /// parallelism (1 if unknown), like Python's `Pool()`. Zero is refused
    /// by [`build`](Self::build) with [`PoolError::NoWorkers`], as by every
    /// pool of this crate: never taken as one.
    pub fn size(mut self, workers: usize) -> Self {
        self.size = Some(workers);
        self
    }

    /// How many tasks go to a worker in one message (default 1). Larger
    /// chunks pay the cost of a round trip once per chunk instead of once
    /// per task, but a chunk is served by one worker, so load evens out
    /// less well. 0 is taken as 1.
    pub fn chunksize(mut self, tasks: usize) -> Self {
        self.chunksize = tasks.max(1);
        self
    }

    /// Replaces a worker after it has run this many tasks (Python's
    /// `maxtasksperchild`), e.g. to bound the memory a leaky task can
    /// accumulate. Unlike Python, which counts chunks, this counts tasks: a
    /// chunk is split where a worker's allowance ends. 0 is taken as 1.
    pub fn max_tasks_per_child(mut self, tasks: usize) -> Self {
        self.max_tasks_per_child = Some(tasks.max(1));
        self
    }

    /// Runs `task` in every worker when it starts, before any other task
    /// (Python's `initializer` and `initargs`); its output is discarded.
    /// `T` must be registered with the workers. If it fails, the worker is
    /// not used: the tasks given to it fail with [`TaskError::Failed`]
    /// naming the initializer, or [`TaskError::WorkerDied`] if it killed
    /// the worker.
    pub fn initializer<T: Task>(mut self, task: T) -> Self {
        let encoded = encode(&task, || format!("initializer {:?}", T::NAME));
        self.initializer = Some(encoded.map(|bytes| (T::NAME, bytes)));
        self
    }

    /// The program workers run; by default this one
    /// ([`std::env::current_exe`]). It must call
    /// [`worker_main`](crate::worker_main) first thing in `main`.
    pub fn program(mut self, path: impl Into<PathBuf>) -> Self {
        self.program = Some(path.into());
        self
    }

    /// Arguments the workers' program is started with (none by default),
    /// e.g. to select the code path that reaches
    /// [`worker_main`](crate::worker_main) in a program that does not call
    /// it first thing. Added to those of earlier calls.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// How long a new worker may take to start and greet the pool (default
    /// 30 s). A program that never calls [`worker_main`](crate::worker_main)
    /// fails the tasks given to it after this long instead of hanging the
    /// pool.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// How long each task may run (by default, as long as it takes). A
    /// task that runs longer, or stops, fails with [`TaskError::TimedOut`];
    /// its worker and the worker's process group are killed, and a new
    /// worker takes the rest of its chunk. The clock starts when the
    /// worker takes the task. [`ProcessPool::with_task_timeout`] sets a
    /// limit for one call instead.
    pub fn task_timeout(mut self, limit: Duration) -> Self {
        self.task_timeout = Some(limit);
        self
    }

    /// Starts the worker processes. It does not wait for them to be ready:
    /// a worker that cannot start properly fails the tasks given to it.
    ///
    /// # Errors
    ///
    /// [`PoolError::NoWorkers`] for a size of 0; [`PoolError::Spawn`] if
    /// the program cannot be found or started, or the initializer cannot
    /// be serialised.
    pub fn build(self) -> Result<ProcessPool, PoolError> {
        let size = match self.size {
            Some(0) => return Err(PoolError::NoWorkers),
            Some(n) => n,
            None => thread::available_parallelism().map_or(1, usize::from),
        };
        let program = match self.program {
            Some(program) => program,
            None => std::env::current_exe().map_err(PoolError::Spawn)?,
        };
        let initializer = self
            .initializer
            .transpose()
            .map_err(|e| PoolError::Spawn(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        let mut slots = Vec::with_capacity(size);
        let mut wakes = Vec::with_capacity(size);
        for _ in 0..size {
            let (slot, wake) = Slot::new().map_err(PoolError::Spawn)?;
            slots.push(slot);
            wakes.push(wake);
        }
        let shared = Arc::new(Shared {
            config: Config {
                program,
                args: self.args,
                initializer,
                max_tasks_per_child: self.max_tasks_per_child,
                start_timeout: self.start_timeout,
            },
            slots,
            spawned: Mutex::new(Vec::with_capacity(size)),
            terminated: AtomicBool::new(false),
        });
        let pool = ProcessPool {
            queue: WorkQueue::new(size),
            shared: Arc::clone(&shared),
            chunksize: self.chunksize,
            task_timeout: self.task_timeout,
        };
        for (slot, wake) in wakes.into_iter().enumerate() {
            // Each manager spawns its own worker: on Linux a worker is
            // killed when the *thread* that spawned it ends, so that must
            // be the thread that lives as long as the worker.
            let (started_tx, started_rx) = crossbeam_channel::bounded(1);
            let manager = Manager::new(slot, Arc::clone(&shared), wake);
            let chunks = pool.queue.receiver();
            let spawned = thread::Builder::new()
                .name(format!("concur-process-{slot}"))
                .spawn(move || manager.run(&chunks, &started_tx))
                .map_err(PoolError::Spawn)?;
            pool.queue.add_thread(spawned);
            match started_rx.recv() {
                Ok(Ok(())) => {}
                // Dropping `pool` closes and joins the managers started so far.
                Ok(Err(e)) => return Err(PoolError::Spawn(e)),
                Err(_) => return Err(PoolError::Spawn(io::Error::other("manager thread died"))),
            }
        }
        Ok(pool)
    }
}

impl std::fmt::Debug for ProcessPoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessPoolBuilder")
            .field("size", &self.size)
            .field("chunksize", &self.chunksize)
            .field("max_tasks_per_child", &self.max_tasks_per_child)
            .field("program", &self.program)
            .field("args", &self.args)
            .field("initializer", &self.initializer.as_ref().map(|i| i.as_ref().map(|(name, _)| name)))
            .field("start_timeout", &self.start_timeout)
            .field("task_timeout", &self.task_timeout)
            .finish()
    }
}
