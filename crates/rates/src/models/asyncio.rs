//! The asynchronous models of the chapter's last section: `async` (asyncio
//! with aiohttp: a tokio task per request on one runtime, gathered back into
//! input order) and `async-executor` (`run_in_executor`: the blocking client
//! called from tasks through `concur::Bridge`, a bounded blocking executor).

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{Fetcher, Outcome, Workers, cancelled, worker_failure};
use crate::{Cancel, RateRequest};

/// The runtime the blocking entry point [`super::run`] makes for an async run.
pub(super) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()
}

/// A task per request; a semaphore keeps at most `workers` in flight (none
/// when unlimited, like the chapter's `gather`).
pub(super) async fn tasks(fetcher: &Arc<Fetcher>, requests: &[RateRequest], workers: Workers) -> Vec<Outcome> {
    let limit = match workers {
        Workers::Bounded(n) => Some(Arc::new(Semaphore::new(n.max(1)))),
        Workers::Unlimited => None,
    };
    let client = match fetcher.async_client() {
        Ok(c) => c,
        Err(e) => return requests.iter().map(|_| Err(worker_failure(e.to_string()))).collect(),
    };
    let mut set = JoinSet::new();
    for (i, req) in requests.iter().cloned().enumerate() {
        let (f, limit, client) = (Arc::clone(fetcher), limit.clone(), client.clone());
        set.spawn(async move {
            // The semaphore is never closed, so acquiring cannot fail.
            let _permit = match limit {
                Some(s) => s.acquire_owned().await.ok(),
                None => None,
            };
            (i, f.fetch_async(&client, &req).await)
        });
    }
    gather(set, requests.len(), fetcher.cancel()).await
}

/// Tasks awaiting blocking fetches that run on a bridge of `workers` threads.
pub(super) async fn executor(fetcher: &Arc<Fetcher>, requests: &[RateRequest], workers: usize) -> Vec<Outcome> {
    let bridge = match concur::Bridge::new(workers) {
        Ok(b) => b,
        Err(e) => return requests.iter().map(|_| Err(worker_failure(e.to_string()))).collect(),
    };
    let mut set = JoinSet::new();
    for (i, req) in requests.iter().cloned().enumerate() {
        let f = Arc::clone(fetcher);
        let job = bridge.run(move || f.fetch(&req));
        set.spawn(async move { (i, job.await.unwrap_or_else(|e| Err(worker_failure(e.to_string())))) });
    }
    let out = gather(set, requests.len(), fetcher.cancel()).await;
    // Jobs still queued see the cancel flag and return at once; the bridge
    // joins its threads when dropped, so none outlives the run.
    let _ = tokio::task::spawn_blocking(move || drop(bridge)).await;
    out
}

/// Collects `(index, outcome)` from every task into input order. On
/// cancellation, aborts the tasks still running (dropping their requests)
/// and reports their items as cancelled.
async fn gather(mut set: JoinSet<(usize, Outcome)>, n: usize, cancel: &Cancel) -> Vec<Outcome> {
    let mut slots: Vec<Option<Outcome>> = (0..n).map(|_| None).collect();
    let mut cancelling = false;
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled(), if !cancelling => {
                cancelling = true;
                set.abort_all();
            }
            next = set.join_next() => match next {
                Some(Ok((i, outcome))) => slots[i] = Some(outcome),
                Some(Err(_)) => {} // aborted or panicked: the slot stays empty
                None => break,
            },
        }
    }
    slots
        .into_iter()
        .map(|s| {
            s.unwrap_or_else(|| {
                if cancelling { Err(cancelled()) } else { Err(worker_failure("the task fetching this item panicked")) }
            })
        })
        .collect()
}
