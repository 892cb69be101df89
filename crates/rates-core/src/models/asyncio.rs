//! The asynchronous models of the chapter's last section: `async` (asyncio
//! with aiohttp: a tokio task per item on one runtime, gathered back into
//! input order) and `async-executor` (`run_in_executor`: blocking work
//! called from tasks through `concur::Bridge`, a bounded blocking executor).
//! Each makes its own runtime for the run, so a caller needs none.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{Job, Workers, all_failed};

/// The runtime of one async run: one thread, as asyncio's, unless `cores`,
/// then a thread per core.
fn runtime(cores: bool) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder =
        if cores { tokio::runtime::Builder::new_multi_thread() } else { tokio::runtime::Builder::new_current_thread() };
    builder.enable_all().build()
}

/// A task per item; a semaphore keeps at most `workers` in flight (none
/// when unlimited, like the chapter's `gather`).
pub(super) fn tasks<J: Job>(job: &Arc<J>, items: &[J::Item], workers: Workers) -> Vec<J::Output> {
    // Waiting tasks, a bounded number at a time, share one thread: half
    // the CPU per request of a thread per core, with no hand-offs between
    // threads. Computing tasks need the cores, and so does a storm of
    // connections opened at once, whose connects and reads then overlap.
    let cores = job.computes() || workers == Workers::Unlimited;
    let rt = match runtime(cores) {
        Ok(rt) => rt,
        Err(e) => return all_failed(&**job, items.len(), format_args!("cannot start a runtime: {e}")),
    };
    rt.block_on(async {
        let limit = match workers {
            Workers::Bounded(n) => Some(Arc::new(Semaphore::new(n.get()))),
            Workers::Unlimited => None,
        };
        let shared = match job.shared(workers) {
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
    // The work runs on the bridge's threads; the runtime only awaits it.
    let rt = match runtime(false) {
        Ok(rt) => rt,
        Err(e) => return all_failed(&**job, items.len(), format_args!("cannot start a runtime: {e}")),
    };
    let bridge = match super::threads::pool_of(&**job, workers, "concur-bridge") {
        Ok(pool) => concur::Bridge::with_pool(pool),
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::thread::ThreadId;

    use concur::Pool;

    use super::*;

    /// Each item answers with the thread its task ran on, after a pause
    /// that lets the other tasks run.
    struct WhereRun {
        computes: bool,
    }

    impl Job for WhereRun {
        type Item = u64;
        type Output = ThreadId;
        type Shared = ();

        fn run(&self, _: &u64) -> ThreadId {
            std::thread::current().id()
        }

        fn run_on(&self, _: &(impl Pool + Sync), item: &u64) -> ThreadId {
            self.run(item)
        }

        fn shared(&self, _: Workers) -> Result<(), String> {
            Ok(())
        }

        async fn run_async(&self, (): &(), &ms: &u64) -> ThreadId {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            // Some work after the wait, where another thread could take it.
            std::hint::black_box((0..10_000u64).sum::<u64>());
            std::thread::current().id()
        }

        fn computes(&self) -> bool {
            self.computes
        }

        fn failed(&self, _: String) -> ThreadId {
            std::thread::current().id()
        }

        fn cancelled(&self) -> ThreadId {
            std::thread::current().id()
        }
    }

    #[test]
    fn tasks_that_wait_share_one_thread() {
        let job = Arc::new(WhereRun { computes: false });
        let items: Vec<u64> = (0..64).map(|i| i % 4).collect();
        let threads: HashSet<ThreadId> =
            tasks(&job, &items, Workers::bounded(16).expect("not zero")).into_iter().collect();
        assert_eq!(threads.len(), 1, "{threads:?}");
    }

    #[test]
    fn tasks_that_compute_or_are_unlimited_run_beside_the_caller() {
        for (computes, workers) in [(true, Workers::bounded(2).expect("not zero")), (false, Workers::Unlimited)] {
            let job = Arc::new(WhereRun { computes });
            let threads: HashSet<ThreadId> = tasks(&job, &[0, 1, 2], workers).into_iter().collect();
            // A runtime's worker threads, never the thread that waits for them.
            assert!(!threads.contains(&std::thread::current().id()), "{computes} {workers:?}: {threads:?}");
        }
    }
}
