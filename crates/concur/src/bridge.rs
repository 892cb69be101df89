//! Blocking work awaited from async code.
//!
//! Implements the chapter's "async futures" listing (21), Python's
//! `loop.run_in_executor(executor, f)`: a blocking call would stall every
//! task on the event loop's thread, so it runs on a worker thread instead and
//! the async code awaits its result as a future. The workers are a bounded
//! [`ThreadPool`]: however many futures are waiting, at most that many
//! blocking jobs run at once; the rest queue.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::pool::{PoolError, TaskError};
use crate::thread_pool::{ThreadPool, run_caught};

/// A bounded set of threads for blocking jobs, each awaited as a future.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), concur::PoolError> {
/// use concur::{Bridge, TaskError};
///
/// let bridge = Bridge::new(3)?;
/// // Blocking code, e.g. a blocking HTTP client, off the async thread.
/// let answer = bridge.run(|| {
///     std::thread::sleep(std::time::Duration::from_millis(10));
///     42
/// });
/// assert_eq!(answer.await, Ok(42));
/// assert_eq!(
///     bridge.run(|| -> u8 { panic!("oops") }).await,
///     Err(TaskError::Panicked("oops".into()))
/// );
/// # Ok(())
/// # }
/// ```
///
/// Dropping the `Bridge` closes it and waits for queued jobs, like dropping a
/// [`ThreadPool`], and so blocks the thread that drops it.
#[derive(Debug)]
pub struct Bridge {
    pool: ThreadPool,
}

impl Bridge {
    /// A bridge running at most `workers` blocking jobs at once, on threads
    /// named `concur-bridge-N`.
    ///
    /// # Errors
    ///
    /// As [`ThreadPool::new`]: 0 workers, or a thread that cannot start.
    pub fn new(workers: usize) -> Result<Self, PoolError> {
        Ok(Self::with_pool(ThreadPool::builder().size(workers).name("concur-bridge").build()?))
    }

    /// A bridge over a pool built elsewhere (e.g. to choose its thread
    /// names). The pool stays usable through [`pool`](Self::pool).
    pub fn with_pool(pool: ThreadPool) -> Self {
        Bridge { pool }
    }

    /// The worker pool.
    pub fn pool(&self) -> &ThreadPool {
        &self.pool
    }

    /// Queues `f` on a worker now and returns a future of its result.
    ///
    /// The job is queued when `run` is called, as with `run_in_executor`,
    /// not when the future is first polled. A panic in `f` is
    /// [`TaskError::Panicked`]. Dropping the future does not stop the job;
    /// its result is discarded. After [`close`](Self::close) the future
    /// resolves to [`TaskError::Closed`].
    pub fn run<R, F>(&self, f: F) -> BlockingJob<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = Box::new(move || {
            // The future may have been dropped: the result is discarded.
            let _ = tx.send(run_caught(f));
        });
        match self.pool.execute(vec![job]) {
            Ok(()) => BlockingJob { result: Ok(rx) },
            Err(_) => BlockingJob { result: Err(Some(TaskError::Closed)) },
        }
    }

    /// Stops accepting jobs; queued ones still run.
    pub fn close(&self) {
        self.pool.close();
    }
}

/// The future of a job queued with [`Bridge::run`].
#[must_use = "the job runs anyway; await this to get its result"]
pub struct BlockingJob<R> {
    /// The receiver of the job's result, or the error to give at once.
    result: Result<oneshot::Receiver<Result<R, TaskError>>, Option<TaskError>>,
}

impl<R> Future for BlockingJob<R> {
    type Output = Result<R, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is Unpin, so the pin can be undone.
        match &mut self.get_mut().result {
            Ok(rx) => Pin::new(rx).poll(cx).map(|received| {
                // A sender dropped unsent: the job was cancelled unrun.
                received.unwrap_or(Err(TaskError::Cancelled))
            }),
            Err(error) => Poll::Ready(Err(error.take().unwrap_or(TaskError::Closed))),
        }
    }
}

impl<R> std::fmt::Debug for BlockingJob<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingJob").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::LIMIT;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Runs `fut` on a current-thread runtime, failing the test if it takes
    /// longer than the limit.
    fn block_on<F: Future>(fut: F) -> F::Output {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime starts");
        runtime.block_on(async { tokio::time::timeout(LIMIT, fut).await }).expect("within the limit")
    }

    #[test]
    fn at_most_n_jobs_run_at_once() {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let bridge = Arc::new(Bridge::new(3).expect("bridge starts"));
        let done = block_on({
            let (running, most, bridge) = (Arc::clone(&running), Arc::clone(&most), Arc::clone(&bridge));
            async move {
                // All 20 futures exist before any is awaited.
                let jobs: Vec<_> = (0..20)
                    .map(|i| {
                        let (running, most) = (Arc::clone(&running), Arc::clone(&most));
                        bridge.run(move || {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(5));
                            running.fetch_sub(1, Ordering::SeqCst);
                            i
                        })
                    })
                    .collect();
                let mut tasks = tokio::task::JoinSet::new();
                for job in jobs {
                    tasks.spawn(job);
                }
                let mut done = Vec::new();
                while let Some(result) = tasks.join_next().await {
                    done.push(result.expect("task finished").expect("job ran"));
                }
                done.sort_unstable();
                done
            }
        });
        assert_eq!(done, (0..20).collect::<Vec<_>>());
        let most = most.load(Ordering::SeqCst);
        assert!((1..=3).contains(&most), "{most} jobs ran at once");
    }

    #[test]
    fn a_panic_is_an_error_and_the_bridge_lives_on() {
        let bridge = Bridge::new(1).expect("bridge starts");
        let (panicked, after) = block_on(async {
            let panicked = bridge.run(|| -> u8 { panic!("blocking call failed") }).await;
            (panicked, bridge.run(|| 7).await)
        });
        assert_eq!(panicked, Err(TaskError::Panicked("blocking call failed".to_owned())));
        assert_eq!(after, Ok(7));
    }

    #[test]
    fn the_loop_keeps_running_while_a_job_blocks() {
        let bridge = Bridge::new(1).expect("bridge starts");
        let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
        let got = block_on(async {
            let blocked = bridge.run(move || release_rx.recv_timeout(LIMIT).is_ok());
            // This task runs on the loop's only thread while the job
            // blocks a worker; then it releases the job.
            let other = tokio::spawn(async move {
                tokio::task::yield_now().await;
                release_tx.send(()).is_ok()
            });
            (other.await.expect("task finished"), blocked.await)
        });
        assert_eq!(got, (true, Ok(true)));
    }

    #[test]
    fn a_dropped_future_does_not_stop_the_job() {
        let bridge = Bridge::new(1).expect("bridge starts");
        let (tx, rx) = crossbeam_channel::bounded(1);
        drop(bridge.run(move || tx.send("ran").is_ok()));
        assert_eq!(rx.recv_timeout(LIMIT), Ok("ran"));
    }

    #[test]
    fn run_after_close_is_an_error() {
        let bridge = Bridge::new(1).expect("bridge starts");
        bridge.close();
        let got = block_on(bridge.run(|| 1));
        assert_eq!(got, Err(TaskError::Closed));
    }

    #[test]
    fn terminated_jobs_are_cancelled() {
        let bridge = Bridge::new(1).expect("bridge starts");
        let (started_tx, started_rx) = crossbeam_channel::bounded(1);
        let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
        let first = bridge.run(move || {
            let _ = started_tx.send(());
            release_rx.recv_timeout(LIMIT).is_ok()
        });
        started_rx.recv_timeout(LIMIT).expect("first job started");
        let queued = bridge.run(|| 2);
        bridge.pool().terminate();
        let _ = release_tx.send(());
        let got = block_on(async { (first.await, queued.await) });
        assert_eq!(got, (Ok(true), Err(TaskError::Cancelled)));
    }
}
