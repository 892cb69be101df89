//! The fetch models: one function per program of the chapter, all taking the
//! same requests and returning the same ordered outcomes, so they can be
//! swapped with `--model` and compared with `rates bench`.
//!
//! | model | chapter listing |
//! |---|---|
//! | `sync` | synchronous: one request after another |
//! | `thread-per-item` | one thread per item, unbounded |
//! | `thread-pool` | a fixed pool of workers (`concur::ThreadPool`) |
//! | `two-way-queues` | a work queue in, a results queue out, presented by the main thread |
//!
//! Errors travel back as values (the chapter's error-handling listing): every
//! item ends as exactly one `Ok` or one [`Failure`], whatever a worker does.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use concur::Throttle;

use crate::{BlockingClient, FetchError, RateRequest, Rates, RetryPolicy, retry::Failure};

/// The result of fetching one item: its rates, or why it failed for good.
pub type Outcome = Result<Rates, Failure>;

/// Everything one fetch needs, shared by all workers of a model: the client
/// (one connection pool), the retry policy and the optional throttle.
#[derive(Debug)]
pub struct Fetcher {
    client: BlockingClient,
    retry: RetryPolicy,
    throttle: Option<Arc<Throttle>>,
}

impl Fetcher {
    /// A fetcher that retries with `retry` and, with a throttle, takes a
    /// token before every attempt (retries included: each is a request).
    pub fn new(
        client: BlockingClient,
        retry: RetryPolicy,
        throttle: Option<Arc<Throttle>>,
    ) -> Self {
        Fetcher {
            client,
            retry,
            throttle,
        }
    }

    /// The client.
    pub fn client(&self) -> &BlockingClient {
        &self.client
    }

    /// Fetches one item, with throttling and retries.
    pub fn fetch(&self, req: &RateRequest) -> Outcome {
        self.retry.run(
            || {
                if let Some(t) = &self.throttle {
                    t.acquire();
                }
                self.client.fetch(req)
            },
            std::thread::sleep,
        )
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
}

impl Model {
    /// Every model, in the chapter's order.
    pub const ALL: &[Model] = &[
        Model::Sync,
        Model::ThreadPerItem,
        Model::ThreadPool,
        Model::TwoWayQueues,
    ];

    /// The model's `--model` name.
    pub fn name(self) -> &'static str {
        match self {
            Model::Sync => "sync",
            Model::ThreadPerItem => "thread-per-item",
            Model::ThreadPool => "thread-pool",
            Model::TwoWayQueues => "two-way-queues",
        }
    }

    /// Whether `--workers` bounds this model's concurrency.
    pub fn uses_workers(self) -> bool {
        matches!(self, Model::ThreadPool | Model::TwoWayQueues)
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
        Model::ALL
            .iter()
            .copied()
            .find(|m| m.name() == s)
            .ok_or_else(|| UnknownModel(s.to_string()))
    }
}

/// Fetches every request with `model`, at most `workers` at a time where the
/// model has workers, and returns the outcomes in input order.
pub fn run(
    model: Model,
    fetcher: &Arc<Fetcher>,
    requests: &[RateRequest],
    workers: usize,
) -> Vec<Outcome> {
    let workers = workers.clamp(1, requests.len().max(1));
    match model {
        Model::Sync => requests.iter().map(|r| fetcher.fetch(r)).collect(),
        Model::ThreadPerItem => thread_per_item(fetcher, requests),
        Model::ThreadPool => thread_pool(fetcher, requests, workers),
        Model::TwoWayQueues => two_way_queues(fetcher, requests, workers),
    }
}

fn worker_failure(why: impl Into<String>) -> Failure {
    Failure {
        error: FetchError::Worker(why.into()),
        attempts: 1,
    }
}

/// One thread per item, joined in order. A thread that panics fails only its
/// own item.
fn thread_per_item(fetcher: &Fetcher, requests: &[RateRequest]) -> Vec<Outcome> {
    std::thread::scope(|s| {
        let handles: Vec<_> = requests
            .iter()
            .map(|req| {
                std::thread::Builder::new()
                    .name(format!("fetch-{}", req.base))
                    .spawn_scoped(s, move || fetcher.fetch(req))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|p| Err(worker_failure(concur::panic_message(&*p)))),
                Err(e) => Err(worker_failure(format!("cannot start a thread: {e}"))),
            })
            .collect()
    })
}

/// The `concur::ThreadPool`: `map` keeps input order and turns a panicking
/// task into that task's error.
fn thread_pool(fetcher: &Arc<Fetcher>, requests: &[RateRequest], workers: usize) -> Vec<Outcome> {
    let pool = match concur::ThreadPool::new(workers) {
        Ok(p) => p,
        Err(e) => {
            return requests
                .iter()
                .map(|_| Err(worker_failure(e.to_string())))
                .collect();
        }
    };
    let f = Arc::clone(fetcher);
    pool.map(move |req: RateRequest| f.fetch(&req), requests.to_vec())
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| Err(worker_failure(e.to_string()))))
        .collect()
}

/// The chapter's two-way queues, spelled out: the main thread fills a work
/// queue and closes it; workers take items until it is empty and put
/// `(index, outcome)` on a results queue; the main thread collects until every
/// worker has hung up. An item whose worker panicked never comes back and is
/// reported as failed, never lost.
fn two_way_queues(fetcher: &Fetcher, requests: &[RateRequest], workers: usize) -> Vec<Outcome> {
    let (work_tx, work_rx) = crossbeam_channel::unbounded::<(usize, &RateRequest)>();
    let (result_tx, result_rx) = crossbeam_channel::unbounded::<(usize, Outcome)>();
    for item in requests.iter().enumerate() {
        // Cannot fail: the receiver is alive.
        let _ = work_tx.send(item);
    }
    drop(work_tx);

    let mut slots: Vec<Option<Outcome>> = (0..requests.len()).map(|_| None).collect();
    std::thread::scope(|s| {
        for n in 0..workers {
            let (work_rx, result_tx) = (work_rx.clone(), result_tx.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("worker-{n}"))
                .spawn_scoped(s, move || {
                    for (i, req) in work_rx {
                        if result_tx.send((i, fetcher.fetch(req))).is_err() {
                            break;
                        }
                    }
                });
            // With no worker at all the queue never drains; report below.
            if spawned.is_err() && n == 0 {
                break;
            }
        }
        drop(result_tx);
        for (i, outcome) in result_rx {
            slots[i] = Some(outcome);
        }
    });
    slots
        .into_iter()
        .map(|s| s.unwrap_or_else(|| Err(worker_failure("the worker handling this item panicked"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_round_trip() {
        for &m in Model::ALL {
            assert_eq!(m.name().parse::<Model>(), Ok(m));
        }
        assert!(
            "threads"
                .parse::<Model>()
                .is_err_and(|e| e.to_string().contains("thread-pool"))
        );
    }
}
