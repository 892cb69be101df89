//! The chapter's concurrency models: one function per program of the
//! chapter, generic over the [`Job`] one item does (a request, or a unit of
//! CPU work), all returning the same ordered outputs, so they can be swapped
//! with `--model` and compared with `rates bench`. [`run`] is the one
//! dispatcher: `fetch`, `history` and both bench workloads call it.
//!
//! | model | chapter listing | source |
//! |---|---|---|
//! | `sync` | synchronous: one item after another | here |
//! | `thread-per-item` | one thread per item, unbounded | `threads.rs` |
//! | `thread-pool` | a fixed pool of workers (`concur::ThreadPool`) | `threads.rs` |
//! | `two-way-queues` | a work queue in, a results queue out | `threads.rs` |
//! | `process-pool` | a pool of worker processes (`concur::ProcessPool`) | `processes.rs` |
//! | `dummy-pool` | `multiprocessing.dummy`: the same code over threads | `processes.rs` |
//! | `async` | asyncio + aiohttp: a tokio task per item | `asyncio.rs` |
//! | `async-executor` | `run_in_executor`: blocking work on `concur::Bridge` | `asyncio.rs` |
//!
//! Errors travel back as values (the chapter's error-handling listing): every
//! item ends as exactly one output, whatever a worker does. A job's
//! [`CancelToken`] stops a run: no new item starts, and the items not done come
//! back as the job's cancelled output. The fetch job is [`Fetcher`]
//! (`fetcher.rs`): throttle, retries and progress around each request.

mod asyncio;
mod auto;
mod fetch_once;
mod fetcher;
mod pause;
mod processes;
mod threads;
mod traced;

pub use auto::{AutoLimits, Learnt, auto_pool_size};
pub use fetch_once::{FetchOnce, FetchStamped, registry};
pub use fetcher::{Fetcher, LatencySink, Outcome, Progress, REQUEST_STACK, SharedLimit};
pub use traced::Stamp;

use std::fmt;
use std::future::Future;
use std::num::NonZeroUsize;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use concur::Pool;

use concur::CancelToken;

/// The work one item does, whatever model runs it. The models own the
/// concurrency (threads, processes, a runtime); a job only says how one item
/// is done in each setting, and what an item that was not done becomes.
pub trait Job: Send + Sync + 'static {
    /// One unit of work: a request, or a CPU item's seed.
    type Item: Clone + Send + Sync + 'static;
    /// What an item ends as: its result, or why it failed.
    type Output: Send + 'static;
    /// What the async model's tasks share during one run (e.g. a client
    /// whose connections belong to that run's runtime).
    type Shared: Send + Sync + 'static;

    /// Does `item` on the calling thread (`sync`, the thread models and the
    /// async executor).
    fn run(&self, item: &Self::Item) -> Self::Output;

    /// Does `item` with `pool`'s workers (`process-pool`, `dummy-pool`):
    /// the work crosses to a worker as a `concur::Task`.
    fn run_on(&self, pool: &(impl Pool + Sync), item: &Self::Item) -> Self::Output;

    /// Makes what the async model's tasks share, inside the run's runtime,
    /// for a run of at most `workers` tasks in flight (to size a pool of
    /// connections, say).
    ///
    /// # Errors
    ///
    /// Why the async model cannot run (every item then fails with it).
    fn shared(&self, workers: Workers) -> Result<Self::Shared, String>;

    /// Does `item` as an async task (`async`).
    fn run_async(&self, shared: &Self::Shared, item: &Self::Item) -> impl Future<Output = Self::Output> + Send;

    /// Whether `run_async` computes rather than waits. The async model
    /// then runs its tasks on a thread per core; tasks that wait, a bounded
    /// number at a time, share one thread, as asyncio's do.
    fn computes(&self) -> bool {
        false
    }

    /// What an item becomes when its worker failed before giving an output
    /// (a panic, a dead process, a pool that would not start).
    fn failed(&self, why: String) -> Self::Output;

    /// What an item becomes when a cancelled run never did it.
    fn cancelled(&self) -> Self::Output;

    /// The flag that cancels this job's runs, if it can be cancelled.
    fn cancel(&self) -> Option<&CancelToken> {
        None
    }

    /// The stack, in bytes, of each thread a model starts to call
    /// [`run`](Self::run) or [`run_on`](Self::run_on) (a thread per item,
    /// the pools' workers, the executor's threads); the platform's default
    /// (2 MiB on Linux) when `None`. Only touched pages are resident: a
    /// small stack saves address space and page tables, not memory, and the
    /// deepest call of `run` must fit in it.
    fn stack_size(&self) -> Option<usize> {
        None
    }

    /// The program `process-pool` starts as its workers; this executable
    /// when `None`.
    fn worker_program(&self) -> Option<&Path> {
        None
    }

    /// The trace its runs are written to, if any: the models name its
    /// tracks after themselves.
    fn trace(&self) -> Option<&crate::Trace> {
        None
    }
}

/// A concurrency model of the chapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Model {
    /// One request after another.
    Sync,
    /// A thread per item.
    ThreadPerItem,
    /// A fixed pool of worker threads.
    ThreadPool,
    /// Explicit work and results queues between the main thread and workers.
    TwoWayQueues,
    /// A tokio task per request, at most `workers` in flight (or all).
    Async,
    /// Async tasks awaiting the blocking client on a bounded executor.
    AsyncExecutor,
    /// A pool of worker processes.
    ProcessPool,
    /// The process pool's code over a thread pool.
    DummyPool,
}

impl Model {
    /// Every model, in the chapter's order.
    pub const ALL: &[Model] = &[
        Model::Sync,
        Model::ThreadPerItem,
        Model::ThreadPool,
        Model::TwoWayQueues,
        Model::ProcessPool,
        Model::DummyPool,
        Model::Async,
        Model::AsyncExecutor,
    ];

    /// The model's `--model` name.
    pub fn name(self) -> &'static str {
        match self {
            Model::Sync => "sync",
            Model::ThreadPerItem => "thread-per-item",
            Model::ThreadPool => "thread-pool",
            Model::TwoWayQueues => "two-way-queues",
            Model::Async => "async",
            Model::AsyncExecutor => "async-executor",
            Model::ProcessPool => "process-pool",
            Model::DummyPool => "dummy-pool",
        }
    }

    /// Whether `--workers` bounds this model's concurrency.
    pub fn uses_workers(self) -> bool {
        !matches!(self, Model::Sync | Model::ThreadPerItem)
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `--model` value that names no model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown model '{0}': expected one of {list}", list = Model::ALL.iter().map(|m| m.name()).collect::<Vec<_>>().join(", "))]
pub struct UnknownModel(pub String);

impl FromStr for Model {
    type Err = UnknownModel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Model::ALL.iter().copied().find(|m| m.name() == s).ok_or_else(|| UnknownModel(s.to_string()))
    }
}

/// How many requests a model may have in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// At most this many: zero cannot be asked for, as the pools refuse
    /// zero workers.
    Bounded(NonZeroUsize),
    /// As many as there are items (the chapter's `gather`).
    Unlimited,
}

impl Workers {
    /// At most `n`; `None` for zero.
    pub const fn bounded(n: usize) -> Option<Workers> {
        match NonZeroUsize::new(n) {
            Some(n) => Some(Workers::Bounded(n)),
            None => None,
        }
    }

    /// The bound for `items` items.
    pub fn for_items(self, items: usize) -> usize {
        match self {
            Workers::Bounded(n) => n.get().min(items.max(1)),
            Workers::Unlimited => items.max(1),
        }
    }
}

/// Does every item with `model` and returns the outputs in input order.
/// The async models run on a runtime of their own, made for the call.
pub fn run<J: Job>(model: Model, job: &Arc<J>, items: &[J::Item], workers: Workers) -> Vec<J::Output> {
    let n = workers.for_items(items.len());
    if let Some(trace) = job.trace() {
        trace.set_model(model, n);
    }
    match model {
        Model::Sync => items.iter().map(|item| job.run(item)).collect(),
        Model::ThreadPerItem => threads::thread_per_item(job, items),
        Model::ThreadPool => threads::thread_pool(job, items, n),
        Model::TwoWayQueues => threads::two_way_queues(&**job, items, n, |item| job.run(item)),
        Model::ProcessPool => processes::process_pool(job, items, n),
        Model::DummyPool => processes::dummy_pool(job, items, n),
        Model::Async => asyncio::tasks(job, items, workers),
        Model::AsyncExecutor => asyncio::executor(job, items, n),
    }
}

/// Does every item on a pool the caller built (e.g. a `concur_redis::RedisPool`,
/// whose workers are on other hosts), `workers` items in flight at once,
/// and returns the outputs in input order: what `process-pool` and
/// `dummy-pool` do once their pool is built.
pub fn run_on_pool<J: Job>(pool: &(impl Pool + Sync), job: &J, items: &[J::Item], workers: Workers) -> Vec<J::Output> {
    processes::on_pool(pool, job, items, workers.for_items(items.len()))
}

/// Every item failed with `why`.
fn all_failed<J: Job>(job: &J, n: usize, why: impl fmt::Display) -> Vec<J::Output> {
    let why = why.to_string();
    (0..n).map(|_| job.failed(why.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_round_trip() {
        for &m in Model::ALL {
            assert_eq!(m.name().parse::<Model>(), Ok(m));
        }
        assert!("threads".parse::<Model>().is_err_and(|e| e.to_string().contains("thread-pool")));
    }

    fn stack_size() -> usize {
        concur::thread_pool::current_stack_size().expect("Linux gives the size")
    }

    /// A task answering with the stack size of the thread it ran on.
    #[derive(serde::Serialize, serde::Deserialize)]
    struct StackOf;

    impl concur::Task for StackOf {
        type Output = usize;
        const NAME: &'static str = "stack-of";
        fn run(self) -> usize {
            stack_size()
        }
    }

    /// Each item answers with the stack size of the thread it ran on.
    struct Stacked(Option<usize>);

    impl Job for Stacked {
        type Item = ();
        type Output = usize;
        type Shared = ();

        fn run(&self, (): &()) -> usize {
            stack_size()
        }

        fn run_on(&self, pool: &(impl Pool + Sync), (): &()) -> usize {
            pool.apply_async(StackOf).wait().unwrap_or(0)
        }

        fn shared(&self, _: Workers) -> Result<(), String> {
            Ok(())
        }

        async fn run_async(&self, (): &(), (): &()) -> usize {
            stack_size()
        }

        fn failed(&self, _: String) -> usize {
            0
        }

        fn cancelled(&self) -> usize {
            0
        }

        fn stack_size(&self) -> Option<usize> {
            self.0
        }
    }

    #[test]
    fn the_threads_a_model_starts_have_the_stack_its_job_asks_for() {
        let asked = 192 * 1024;
        let threaded =
            [Model::ThreadPerItem, Model::ThreadPool, Model::TwoWayQueues, Model::DummyPool, Model::AsyncExecutor];
        for model in threaded {
            let sizes = run(model, &Arc::new(Stacked(Some(asked))), &[(); 4], Workers::bounded(2).expect("not zero"));
            // The platform adds room for thread-local storage and rounds up
            // to a page.
            assert!(sizes.iter().all(|s| (asked..asked + 64 * 1024).contains(s)), "{model:?}: {sizes:?}");
            // Without one, the platform's default: 2 MiB.
            let sizes = run(model, &Arc::new(Stacked(None)), &[(); 4], Workers::bounded(2).expect("not zero"));
            assert!(sizes.iter().all(|&s| s >= 2 * 1024 * 1024), "{model:?}: {sizes:?}");
        }
    }

    #[test]
    fn a_fetcher_asks_for_the_request_stack_unless_told_otherwise() {
        let fetcher = Fetcher::new("http://127.0.0.1:9", crate::ClientConfig::default()).expect("a valid URL");
        assert_eq!(Job::stack_size(&fetcher), Some(REQUEST_STACK));
        assert_eq!(Job::stack_size(&fetcher.with_stack_size(None)), None);
    }

    #[test]
    fn worker_bounds() {
        assert_eq!(Workers::bounded(4).expect("not zero").for_items(40), 4);
        assert_eq!(Workers::bounded(8).expect("not zero").for_items(3), 3);
        assert_eq!(Workers::bounded(0), None, "zero workers cannot be asked for");
        assert_eq!(Workers::Unlimited.for_items(100), 100);
        assert_eq!(Workers::Unlimited.for_items(0), 1);
    }
}
