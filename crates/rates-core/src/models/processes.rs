//! The multiprocessing models: `process-pool` (the chapter's process pools
//! listing) and `dummy-pool` (`multiprocessing.dummy`: the same code over a
//! thread pool with the identical interface). Both are one generic function
//! over `concur::Pool`; only the line that builds the pool differs.
//!
//! `workers` dispatcher threads each drive one item at a time through
//! [`Job::run_on`], so what stays in this process around each task (the
//! fetch job's throttle and retries) holds across all worker processes.

use std::sync::Arc;

use concur::{Pool, ProcessPool};

use super::threads::{pool_of, two_way_queues};
use super::{Job, all_failed};

/// `process-pool`: `workers` worker processes.
pub(super) fn process_pool<J: Job>(job: &Arc<J>, items: &[J::Item], workers: usize) -> Vec<J::Output> {
    let mut builder = ProcessPool::builder().size(workers);
    if let Some(program) = job.worker_program() {
        builder = builder.program(program);
    }
    match builder.build() {
        Ok(pool) => on_pool(&pool, &**job, items, workers),
        Err(e) => all_failed(&**job, items.len(), format_args!("cannot start worker processes: {e}")),
    }
}

/// `dummy-pool`: the same code over `workers` threads.
pub(super) fn dummy_pool<J: Job>(job: &Arc<J>, items: &[J::Item], workers: usize) -> Vec<J::Output> {
    match pool_of(&**job, workers, "concur-worker") {
        Ok(pool) => on_pool(&pool, &**job, items, workers),
        Err(e) => all_failed(&**job, items.len(), e),
    }
}

/// Does every item on `pool`: one generic function for threads and
/// processes alike.
pub(super) fn on_pool<J: Job>(pool: &(impl Pool + Sync), job: &J, items: &[J::Item], workers: usize) -> Vec<J::Output> {
    two_way_queues(job, items, workers, |item| job.run_on(pool, item))
}
