//! The threaded models of the chapter's multithreading section: one thread
//! per item, a thread pool, and two-way queues. Each does its items through
//! the shared [`Job`] and returns outputs in input order.

use std::sync::Arc;

use super::{Job, all_failed};

/// A builder of a thread named `name` with the stack `job` asks for.
fn thread<J: Job>(job: &J, name: String) -> std::thread::Builder {
    let builder = std::thread::Builder::new().name(name);
    match job.stack_size() {
        Some(bytes) => builder.stack_size(bytes),
        None => builder,
    }
}

/// A `concur::ThreadPool` of `workers` threads named `name-N`, with the
/// stack `job` asks for.
pub(super) fn pool_of<J: Job>(job: &J, workers: usize, name: &str) -> Result<concur::ThreadPool, concur::PoolError> {
    let builder = concur::ThreadPool::builder().size(workers).name(name);
    match job.stack_size() {
        Some(bytes) => builder.stack_size(bytes),
        None => builder,
    }
    .build()
}

/// One thread per item, joined in order. A thread that panics fails only its
/// own item.
pub(super) fn thread_per_item<J: Job>(job: &Arc<J>, items: &[J::Item]) -> Vec<J::Output> {
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let job = &**job;
                thread(job, format!("item-{i}")).spawn_scoped(s, move || job.run(item))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h.join().unwrap_or_else(|p| job.failed(concur::pool::panic_message(&*p))),
                Err(e) => job.failed(format!("cannot start a thread: {e}")),
            })
            .collect()
    })
}

/// The `concur::ThreadPool`: `map` keeps input order and turns a panicking
/// task into that task's error.
pub(super) fn thread_pool<J: Job>(job: &Arc<J>, items: &[J::Item], workers: usize) -> Vec<J::Output> {
    let pool = match pool_of(&**job, workers, "concur-worker") {
        Ok(p) => p,
        Err(e) => return all_failed(&**job, items.len(), e),
    };
    let j = Arc::clone(job);
    pool.map_fn(move |item: J::Item| j.run(&item), items.to_vec())
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| job.failed(e.to_string())))
        .collect()
}

/// The chapter's two-way queues, spelled out: the main thread fills a work
/// queue and closes it; workers take items until it is empty and put
/// `(index, output)` on a results queue; the main thread collects until every
/// worker has hung up. An item whose worker panicked never comes back and is
/// reported as failed, never lost.
pub(super) fn two_way_queues<J: Job>(
    job: &J,
    items: &[J::Item],
    workers: usize,
    work: impl Fn(&J::Item) -> J::Output + Sync,
) -> Vec<J::Output> {
    let (work_tx, work_rx) = crossbeam_channel::unbounded::<(usize, &J::Item)>();
    let (result_tx, result_rx) = crossbeam_channel::unbounded::<(usize, J::Output)>();
    for item in items.iter().enumerate() {
        // Cannot fail: the receiver is alive.
        let _ = work_tx.send(item);
    }
    drop(work_tx);

    let mut slots: Vec<Option<J::Output>> = (0..items.len()).map(|_| None).collect();
    std::thread::scope(|s| {
        for n in 0..workers {
            let (work_rx, result_tx, work) = (work_rx.clone(), result_tx.clone(), &work);
            let spawned = thread(job, format!("worker-{n}")).spawn_scoped(s, move || {
                for (i, item) in work_rx {
                    if result_tx.send((i, work(item))).is_err() {
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
        for (i, output) in result_rx {
            slots[i] = Some(output);
        }
    });
    slots
        .into_iter()
        .map(|s| s.unwrap_or_else(|| job.failed("the worker handling this item panicked".into())))
        .collect()
}
