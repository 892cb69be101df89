//! The fetch models: one function per program of the chapter, all taking the
//! same requests and returning the same ordered outcomes, so they can be
//! swapped with `--model` and compared with `rates bench`.
//!
//! | model | chapter listing | source |
//! |---|---|---|
//! | `sync` | synchronous: one request after another | here |
//! | `thread-per-item` | one thread per item, unbounded | `threads.rs` |
//! | `thread-pool` | a fixed pool of workers (`concur::ThreadPool`) | `threads.rs` |
//! | `two-way-queues` | a work queue in, a results queue out | `threads.rs` |
//! | `process-pool` | a pool of worker processes (`concur::ProcessPool`) | `processes.rs` |
//! | `dummy-pool` | `multiprocessing.dummy`: the same code over threads | `processes.rs` |
//! | `async` | asyncio + aiohttp: a tokio task per request | `asyncio.rs` |
//! | `async-executor` | `run_in_executor`: the blocking client on `concur::Bridge` | `asyncio.rs` |
//!
//! Errors travel back as values (the chapter's error-handling listing): every
//! item ends as exactly one `Ok` or one [`Failure`], whatever a worker does.
//! A [`Cancel`] stops a run: no new attempt starts, and the items not done
//! come back as [`FetchError::Cancelled`].

mod asyncio;
mod processes;
mod threads;

pub use processes::{FetchOnce, registry};

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use concur::Throttle;

use crate::client::AsyncClientError;
use crate::{
    AsyncClient, BadUrl, BlockingClient, Cancel, ClientConfig, FetchError, RateRequest, Rates, RetryPolicy,
    retry::Failure,
};

/// The result of fetching one item: its rates, or why it failed for good.
pub type Outcome = Result<Rates, Failure>;

/// Everything one fetch needs, shared by all workers of a run: the clients
/// (one connection pool each), the retry policy, the optional throttle and
/// the cancellation flag.
pub struct Fetcher {
    config: ClientConfig,
    client: BlockingClient,
    retry: RetryPolicy,
    throttle: Option<Arc<Throttle>>,
    cancel: Cancel,
    progress: Option<Progress>,
    worker_program: Option<std::path::PathBuf>,
}

/// Called once per item when it is done (ok or failed), from the thread or
/// task that fetched it: drives progress bars.
pub type Progress = Arc<dyn Fn(&Outcome) + Send + Sync>;

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetcher")
            .field("api", &self.api())
            .field("retry", &self.retry)
            .field("throttle", &self.throttle)
            .field("cancelled", &self.cancel.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    /// A fetcher of the API at `api`, with the default retry policy, no
    /// throttle and a fresh cancellation flag.
    pub fn new(api: &str, config: ClientConfig) -> Result<Self, BadUrl> {
        Ok(Fetcher {
            config,
            client: BlockingClient::new(api, config)?,
            retry: RetryPolicy::default(),
            throttle: None,
            cancel: Cancel::new(),
            progress: None,
            worker_program: None,
        })
    }

    /// Retries failed attempts with `retry`.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Takes a token from `throttle` before every attempt (retries included:
    /// each is a request).
    pub fn with_throttle(mut self, throttle: Option<Arc<Throttle>>) -> Self {
        self.throttle = throttle;
        self
    }

    /// Calls `progress` with each item's outcome as it completes.
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Starts `process-pool` workers from `program` instead of this
    /// executable (which must then call `concur::worker_main` with
    /// [`registry`] at the top of `main`, as the `rates` binary does).
    pub fn with_worker_program(mut self, program: impl Into<std::path::PathBuf>) -> Self {
        self.worker_program = Some(program.into());
        self
    }

    fn worker_program(&self) -> Option<&std::path::Path> {
        self.worker_program.as_deref()
    }

    /// The client's timeouts.
    pub fn config(&self) -> ClientConfig {
        self.config
    }

    /// The API's base URL.
    pub fn api(&self) -> &str {
        self.client.api()
    }

    /// The flag that cancels this fetcher's runs.
    pub fn cancel(&self) -> &Cancel {
        &self.cancel
    }

    /// The blocking client.
    pub fn client(&self) -> &BlockingClient {
        &self.client
    }

    /// A new async client of the same API. Each async run makes its own:
    /// a client's pooled connections belong to the runtime that opened them.
    pub fn async_client(&self) -> Result<AsyncClient, AsyncClientError> {
        AsyncClient::new(self.client.api(), self.config)
    }

    /// Fetches one item on the calling thread, with throttling and retries;
    /// gives up early (as `Cancelled`) once the run is cancelled.
    pub fn fetch(&self, req: &RateRequest) -> Outcome {
        self.fetch_with(|| self.client.fetch(req))
    }

    /// [`Fetcher::fetch`] with each attempt made by `attempt` (e.g. on a pool
    /// worker): the throttle, the retries, cancellation and progress stay
    /// with the caller.
    pub fn fetch_with(&self, attempt: impl Fn() -> Result<Rates, FetchError>) -> Outcome {
        let outcome = self.retry.run(
            || {
                // Checked first: a cancelled run takes no throttle slot.
                if self.cancel.is_cancelled() {
                    return Err(FetchError::Cancelled);
                }
                if let Some(t) = &self.throttle {
                    t.acquire();
                }
                if self.cancel.is_cancelled() {
                    return Err(FetchError::Cancelled);
                }
                attempt()
            },
            |d| {
                self.cancel.sleep(d);
            },
        );
        self.done(outcome)
    }

    fn done(&self, outcome: Outcome) -> Outcome {
        if let Some(p) = &self.progress {
            p(&outcome);
        }
        outcome
    }

    /// Fetches one item with `client`, with throttling and retries.
    /// Cancellation drops this future (see [`run_async`]).
    pub async fn fetch_async(&self, client: &AsyncClient, req: &RateRequest) -> Outcome {
        let outcome = self
            .retry
            .run_async(|| async {
                if let Some(t) = &self.throttle {
                    t.acquire_async().await;
                }
                client.fetch(req).await
            })
            .await;
        self.done(outcome)
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
    /// At most this many (at least 1).
    Bounded(usize),
    /// As many as there are items (the chapter's `gather`).
    Unlimited,
}

impl Workers {
    /// The bound for `items` items.
    pub fn for_items(self, items: usize) -> usize {
        match self {
            Workers::Bounded(n) => n.clamp(1, items.max(1)),
            Workers::Unlimited => items.max(1),
        }
    }
}

/// Fetches every request with `model` and returns the outcomes in input
/// order. The async models run on a runtime made for the call.
pub fn run(model: Model, fetcher: &Arc<Fetcher>, requests: &[RateRequest], workers: Workers) -> Vec<Outcome> {
    let n = workers.for_items(requests.len());
    match model {
        Model::Sync => requests.iter().map(|r| fetcher.fetch(r)).collect(),
        Model::ThreadPerItem => threads::thread_per_item(fetcher, requests),
        Model::ThreadPool => threads::thread_pool(fetcher, requests, n),
        Model::TwoWayQueues => threads::two_way_queues(requests, n, |r| fetcher.fetch(r)),
        Model::ProcessPool => processes::process_pool(fetcher, requests, n),
        Model::DummyPool => processes::dummy_pool(fetcher, requests, n),
        Model::Async | Model::AsyncExecutor => match asyncio::runtime() {
            Ok(rt) => rt.block_on(run_async(model, fetcher, requests, workers)),
            Err(e) => requests.iter().map(|_| Err(worker_failure(format!("cannot start a runtime: {e}")))).collect(),
        },
    }
}

/// The async models on the caller's runtime: `async` or `async-executor`
/// (any other model runs on a blocking thread of the runtime). When the
/// fetcher's [`Cancel`] is set, requests in flight are dropped and every
/// unfinished item comes back as `Cancelled`.
pub async fn run_async(
    model: Model,
    fetcher: &Arc<Fetcher>,
    requests: &[RateRequest],
    workers: Workers,
) -> Vec<Outcome> {
    let n = workers.for_items(requests.len());
    match model {
        Model::Async => asyncio::tasks(fetcher, requests, workers).await,
        Model::AsyncExecutor => asyncio::executor(fetcher, requests, n).await,
        other => {
            let (f, reqs) = (Arc::clone(fetcher), requests.to_vec());
            tokio::task::spawn_blocking(move || run(other, &f, &reqs, workers))
                .await
                .unwrap_or_else(|e| reqs_failed(requests, e.to_string()))
        }
    }
}

fn reqs_failed(requests: &[RateRequest], why: String) -> Vec<Outcome> {
    requests.iter().map(|_| Err(worker_failure(why.clone()))).collect()
}

fn worker_failure(why: impl Into<String>) -> Failure {
    Failure { error: FetchError::Worker(why.into()), attempts: 1 }
}

fn cancelled() -> Failure {
    Failure { error: FetchError::Cancelled, attempts: 0 }
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

    #[test]
    fn worker_bounds() {
        assert_eq!(Workers::Bounded(4).for_items(40), 4);
        assert_eq!(Workers::Bounded(8).for_items(3), 3);
        assert_eq!(Workers::Bounded(0).for_items(3), 1);
        assert_eq!(Workers::Unlimited.for_items(100), 100);
        assert_eq!(Workers::Unlimited.for_items(0), 1);
    }
}
