//! The threaded models of the chapter's multithreading section: one thread
//! per item, a thread pool, and two-way queues. Each fetches through the
//! shared [`Fetcher`] and returns outcomes in input order.

use std::sync::Arc;

use super::{Fetcher, Outcome, worker_failure};
use crate::RateRequest;

/// One thread per item, joined in order. A thread that panics fails only its
/// own item.
pub(super) fn thread_per_item(fetcher: &Fetcher, requests: &[RateRequest]) -> Vec<Outcome> {
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
                Ok(h) => h.join().unwrap_or_else(|p| Err(worker_failure(concur::panic_message(&*p)))),
                Err(e) => Err(worker_failure(format!("cannot start a thread: {e}"))),
            })
            .collect()
    })
}

/// The `concur::ThreadPool`: `map` keeps input order and turns a panicking
/// task into that task's error.
pub(super) fn thread_pool(fetcher: &Arc<Fetcher>, requests: &[RateRequest], workers: usize) -> Vec<Outcome> {
    let pool = match concur::ThreadPool::new(workers) {
        Ok(p) => p,
        Err(e) => {
            return requests.iter().map(|_| Err(worker_failure(e.to_string()))).collect();
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
pub(super) fn two_way_queues(
    requests: &[RateRequest],
    workers: usize,
    fetch: impl Fn(&RateRequest) -> Outcome + Sync,
) -> Vec<Outcome> {
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
            let (work_rx, result_tx, fetch) = (work_rx.clone(), result_tx.clone(), &fetch);
            let spawned = std::thread::Builder::new().name(format!("worker-{n}")).spawn_scoped(s, move || {
                for (i, req) in work_rx {
                    if result_tx.send((i, fetch(req))).is_err() {
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
