//! The asynchronous models of the chapter's last section: `async` (asyncio
//! with aiohttp: a tokio task per item on one runtime, gathered back into
//! input order) and `async-executor` (`run_in_executor`: blocking work
//! called from tasks through `concur::Bridge`, a bounded blocking executor).
//! Each makes its own runtime for the run, so a caller needs none.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{Job, Workers, all_failed};

/// The runtime of one async run.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()
}

/// A task per item; a semaphore keeps at most `workers` in flight (none
/// when unlimited, like the chapter's `gather`).
pub(super) fn tasks<J: Job>(job: &Arc<J>, items: &[J::Item], workers: Workers) -> Vec<J::Output> {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return all_failed(&**job, items.len(), format_args!("cannot start a runtime: {e}")),
    };
    rt.block_on(async {
        let limit = match workers {
            Workers::Bounded(n) => Some(Arc::new(Semaphore::new(n.max(1)))),
            Workers::Unlimited => None,
        };
        let shared = match job.shared() {
            Ok(s) => Arc::new(s),
            Err(e) => return all_failed(&**job, items.len(), e),
        };
        let mut set = JoinSet::new();
        for (i, item) in items.iter().cloned().enumerate() {
            let (job, limit, shared) = (Arc::clone(job), limit.clone(), Arc::clone(&shared));
            set.spawn(async move {
                // The semaphore is never closed, so acquiring cannot fail.
                let _permit = match limit {
                    Some(s) => s.acquire_owned().await.ok(),
                    None => None,
                };
                (i, job.run_async(&shared, &item).await)
            });
        }
        gather(&**job, set, items.len()).await
    })
}

/// Tasks awaiting blocking work that runs on a bridge of `workers` threads.
pub(super) fn executor<J: Job>(job: &Arc<J>, items: &[J::Item], workers: usize) -> Vec<J::Output> {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return all_failed(&**job, items.len(), format_args!("cannot start a runtime: {e}")),
    };
    let bridge = match concur::Bridge::new(workers) {
        Ok(b) => b,
        Err(e) => return all_failed(&**job, items.len(), e),
    };
    let out = rt.block_on(async {
        let mut set = JoinSet::new();
        for (i, item) in items.iter().cloned().enumerate() {
            let j = Arc::clone(job);
            let work = bridge.run(move || j.run(&item));
            let j = Arc::clone(job);
            set.spawn(async move { (i, work.await.unwrap_or_else(|e| j.failed(e.to_string()))) });
        }
        gather(&**job, set, items.len()).await
    });
    // Work still queued sees the cancel flag and returns at once; the bridge
    // joins its threads when dropped, here outside the runtime, so none
    // outlives the run.
    drop(bridge);
    out
}

/// Collects `(index, output)` from every task into input order. On
/// cancellation, aborts the tasks still running (dropping their work in
/// flight) and reports their items as cancelled.
async fn gather<J: Job>(job: &J, mut set: JoinSet<(usize, J::Output)>, n: usize) -> Vec<J::Output> {
    let mut slots: Vec<Option<J::Output>> = (0..n).map(|_| None).collect();
    let mut cancelling = false;
    let cancelled = async {
        match job.cancel() {
            Some(c) => c.cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(cancelled);
    loop {
        tokio::select! {
            biased;
            () = &mut cancelled, if !cancelling => {
                cancelling = true;
                set.abort_all();
            }
            next = set.join_next() => match next {
                Some(Ok((i, output))) => slots[i] = Some(output),
                Some(Err(_)) => {} // aborted or panicked: the slot stays empty
                None => break,
            },
        }
    }
    slots
        .into_iter()
        .map(|s| {
            s.unwrap_or_else(|| {
                if cancelling { job.cancelled() } else { job.failed("the task doing this item panicked".into()) }
            })
        })
        .collect()
}
