//! Settings for some calls only: a [`ProcessPool`] seen through a
//! [`PerCall`] gives its tasks another time limit or chunk size.

use std::time::Duration;

use super::ProcessPool;
use crate::pool::{AsyncResult, Pool, Task, TaskError};

/// A [`ProcessPool`] with settings for the calls made through it, itself a
/// [`Pool`]: made by [`ProcessPool::with_task_timeout`] or
/// [`ProcessPool::with_chunksize`], each setting the pool's own by default.
#[derive(Debug, Clone, Copy)]
pub struct PerCall<'a> {
    pub(super) pool: &'a ProcessPool,
    pub(super) timeout: Option<Duration>,
    pub(super) chunksize: usize,
}

impl PerCall<'_> {
    /// A time limit for each task of these calls.
    #[must_use]
    pub fn task_timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Tasks per chunk sent to a worker for these calls (at least 1).
    #[must_use]
    pub fn chunksize(mut self, chunksize: usize) -> Self {
        self.chunksize = chunksize.max(1);
        self
    }
}

impl Pool for PerCall<'_> {
    fn map<T: Task>(&self, items: impl IntoIterator<Item = T>) -> Vec<Result<T::Output, TaskError>> {
        self.pool.imap_unordered_within(items, self.timeout, self.chunksize).in_input_order()
    }

    fn imap_unordered<T: Task>(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> impl Iterator<Item = (usize, Result<T::Output, TaskError>)> {
        self.pool.imap_unordered_within(items, self.timeout, self.chunksize)
    }

    fn apply_async<T: Task>(&self, task: T) -> AsyncResult<T::Output> {
        self.pool.apply_async_within(task, self.timeout)
    }
}
