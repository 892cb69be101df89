//! The concurrency models of the "Concurrency" chapter of *Expert Python
//! Programming*, with Python-familiar semantics and Rust guarantees: a thread
//! pool, a process pool, one pool interface for both, a throttle, a
//! cancellation token, and a bridge from blocking code to async code.
//! Nothing here knows about HTTP.
//!
//! # A pool of threads
//!
//! A [`ThreadPool`] is a fixed number of worker threads taking jobs from one
//! queue (the chapter's "thread pool"). Results come back to the caller, not
//! printed by the workers ("two-way queues"), and each is a `Result`: a panic
//! comes back as that item's error while the pool carries on ("error
//! handling"). Nothing is lost, nothing is reported twice.
//!
//! ```
//! use concur::{TaskError, ThreadPool};
//!
//! let pool = ThreadPool::new(4)?;
//!
//! // `map_fn`: a function over items, results in input order.
//! let squares = pool.map_fn(|x: u64| x * x, 1..=5);
//! assert_eq!(squares, [Ok(1), Ok(4), Ok(9), Ok(16), Ok(25)]);
//!
//! // `imap_unordered_fn`: `(index, result)` as each task finishes.
//! let mut seen: Vec<usize> = pool.imap_unordered_fn(|x: u64| x + 1, 0..10).map(|(i, _)| i).collect();
//! seen.sort();
//! assert_eq!(seen, (0..10).collect::<Vec<_>>());
//!
//! // A panic is that item's error; the others are unaffected.
//! let checked = pool.map_fn(|x: i32| if x < 0 { panic!("negative: {x}") } else { x }, [1, -2, 3]);
//! assert_eq!(checked[1], Err(TaskError::Panicked("negative: -2".into())));
//! assert_eq!((checked[0].clone(), checked[2].clone()), (Ok(1), Ok(3)));
//!
//! // `submit`: one job, and a handle to wait on.
//! let handle = pool.submit(|| "done");
//! assert_eq!(handle.wait(), Ok("done"));
//!
//! // `close` + `join` (or just dropping the pool) lets queued work finish;
//! // `terminate` cancels what has not started. Later work is refused.
//! pool.close();
//! assert_eq!(pool.submit(|| 1).wait(), Err(TaskError::Closed));
//! # Ok::<(), concur::PoolError>(())
//! ```
//!
//! Unlike Python's threads, which take turns under the GIL, these run Rust
//! code in parallel: a thread pool suits CPU work as well as waiting.
//!
//! # One interface for threads and processes
//!
//! Python's `multiprocessing.dummy` offers a thread pool with the interface
//! of the process pool, so that switching is a one-line change. A process
//! cannot be sent a closure, so here the shared interface, [`Pool`], runs
//! [`Task`]s: serialisable values that know how to run themselves and carry
//! a name a worker process can find them by. Code written against
//! `impl Pool` runs on threads or processes alike.
//!
//! ```
//! use concur::{Pool, Task, TaskError, ThreadPool};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Parse(String);
//!
//! impl Task for Parse {
//!     // A task that can fail says so in its output.
//!     type Output = Result<i64, String>;
//!     const NAME: &'static str = "parse";
//!     fn run(self) -> Self::Output {
//!         self.0.trim().parse().map_err(|_| format!("not a number: {:?}", self.0))
//!     }
//! }
//!
//! fn parse_all(pool: &impl Pool, inputs: &[&str]) -> Vec<Result<Result<i64, String>, TaskError>> {
//!     pool.map(inputs.iter().map(|s| Parse(s.to_string())))
//! }
//!
//! let pool = ThreadPool::new(2)?;
//! let parsed = parse_all(&pool, &["1", " 22 ", "x"]);
//! assert_eq!(parsed[0], Ok(Ok(1)));
//! assert_eq!(parsed[1], Ok(Ok(22)));
//! assert_eq!(parsed[2], Ok(Err("not a number: \"x\"".into())));
//! # Ok::<(), concur::PoolError>(())
//! ```
//!
//! # A pool of processes
//!
//! A [`ProcessPool`] runs the same [`Task`]s in worker processes, for work
//! that must not share memory with the caller or may crash. Workers are
//! this same program started again; the program says which tasks it can
//! run, and enters worker mode when it is one, with one call at the top of
//! `main`. Switching the example above to processes is then the one line
//! that builds the pool:
//!
//! ```no_run
//! use concur::{Pool, ProcessPool, Registry, Task, TaskError};
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Serialize, Deserialize)]
//! # struct Parse(String);
//! # impl Task for Parse {
//! #     type Output = Result<i64, String>;
//! #     const NAME: &'static str = "parse";
//! #     fn run(self) -> Self::Output {
//! #         self.0.trim().parse().map_err(|_| format!("not a number: {:?}", self.0))
//! #     }
//! # }
//! # fn parse_all(pool: &impl Pool, inputs: &[&str]) -> Vec<Result<Result<i64, String>, TaskError>> {
//! #     pool.map(inputs.iter().map(|s| Parse(s.to_string())))
//! # }
//!
//! fn main() -> Result<(), concur::PoolError> {
//!     // In a worker process this serves tasks and exits; here it returns.
//!     concur::worker_main(Registry::new().register::<Parse>());
//!
//!     let pool = ProcessPool::builder().size(2).chunksize(10).build()?;
//!     let parsed = parse_all(&pool, &["1", " 22 ", "x"]);
//!     assert_eq!(parsed[1], Ok(Ok(22)));
//!     Ok(())
//! }
//! ```
//!
//! Values cross to a worker only by being serialised, which costs some
//! microseconds per task: raise `chunksize` for many small tasks. What
//! Python's pool lacks: a worker that dies (abort, a signal, `kill -9`)
//! fails only the task it was running, with [`TaskError::WorkerDied`]
//! saying how it died; it is replaced and every other task completes. No
//! worker process outlives the pool or its parent.
//!
//! # A pool across hosts
//!
//! The `concur-redis` crate runs the same [`Task`]s on workers on any
//! machine, through a Redis broker: its `RedisPool` is one more [`Pool`],
//! and its workers run tasks with the same [`Registry`]. What the two
//! crates share is the [`codec`]: how a task and its answer are encoded,
//! and how a worker finds a task's code by its name. A pool outside this
//! crate is built on [`AsyncResult::channel`] and
//! [`ImapUnordered::new`](pool::ImapUnordered::new).
//!
//! # Throttling
//!
//! A [`Throttle`] is a token bucket shared by all workers, to keep a program
//! under a service's request-rate limit. `acquire` blocks exactly until a
//! token is due (no polling); `try_acquire` never blocks and says how long to
//! wait; `acquire_async` is for async tasks. The clock can be replaced, so
//! tests move time by hand. Its rate and burst are a [`Quota`], checked once
//! when made; the other limiters of the workspace (a server's rate limit, a
//! limit kept on a broker) take the same type.
//!
//! A waiter can give up: `acquire_cancellable` returns as soon as its
//! [`CancelToken`] (the flag that stops a run, seen by threads and tasks
//! alike) is cancelled, and a dropped `acquire_async` future stops waiting.
//! Either way the slot it held is given back, so giving up never costs a
//! token, and the rate limit still holds.
//!
//! ```
//! use concur::Throttle;
//! use concur::throttle::{Clock, FakeClock};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! let clock = FakeClock::new();
//! // 2 requests per second, in bursts of up to 4.
//! let throttle = Arc::new(Throttle::with_clock(2.0, 4, clock.clone())?);
//! for _ in 0..6 {
//!     throttle.acquire();
//! }
//! // Four at once, then one every half second.
//! assert_eq!(clock.now(), Duration::from_secs(1));
//!
//! // Cancelled before its turn: no wait, and no token taken.
//! let cancel = concur::CancelToken::new();
//! cancel.cancel();
//! assert_eq!(throttle.acquire_cancellable(&cancel), Err(concur::Cancelled));
//! throttle.acquire();
//! assert_eq!(clock.now(), Duration::from_millis(1500));
//!
//! // The chapter's own throttle: no burst, and `consume` never waits.
//! let chapter = Throttle::chapter_with_clock(2.0, FakeClock::new())?;
//! assert_eq!(chapter.consume(1), 0);
//! # Ok::<(), concur::QuotaError>(())
//! ```
//!
//! # Limits that tune themselves
//!
//! When the service's limit is unknown, the [`adaptive`] module learns it
//! from the answers: an [`AdaptiveRate`] is a token bucket whose rate
//! rises while requests succeed, is cut by a 429 and waits out its
//! `Retry-After`, and takes a limit the server states in its headers as
//! given; an [`AdaptiveConcurrency`] limits the requests in flight, growing
//! while their latency stays near its minimum and shrinking when it rises
//! or requests time out. Either works alone, or both together.
//!
//! ```
//! use concur::adaptive::{AdaptiveRate, RateConfig, RateSignal};
//! use concur::throttle::FakeClock;
//! use std::time::Duration;
//!
//! let clock = FakeClock::new();
//! let rate = AdaptiveRate::with_clock(RateConfig::default(), clock.clone());
//! rate.record(RateSignal::Policy { limit: 10, window: Duration::from_secs(1), remaining: None, reset: None, burst: None });
//! assert_eq!(rate.rate(), 10.0); // the server said so
//! rate.record(RateSignal::Limited { retry_after: None });
//! assert_eq!(rate.rate(), 10.0); // a 429 of a request sent before it knew
//! clock.advance(Duration::from_secs(1));
//! rate.record(RateSignal::Limited { retry_after: None });
//! assert!(rate.rate() < 10.0); // later, a 429 still cuts
//! ```
//!
//! # Blocking code from async code
//!
//! A blocking call inside async code stalls every task on its thread. A
//! [`Bridge`] runs blocking jobs on a bounded set of threads and hands each
//! result back as a future, like Python's `run_in_executor`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), concur::PoolError> {
//! let bridge = concur::Bridge::new(3)?;
//! let jobs: Vec<_> = (0..5).map(|i| bridge.run(move || i * 10)).collect();
//! let mut results = Vec::new();
//! for job in jobs {
//!     results.push(job.await);
//! }
//! assert_eq!(results, [Ok(0), Ok(10), Ok(20), Ok(30), Ok(40)]);
//! # Ok(())
//! # }
//! ```
//!
//! # For Python users
//!
//! | Python | concur |
//! |---|---|
//! | `ThreadPool(n)` / `ThreadPoolExecutor(n)` | [`ThreadPool::new`], with an initializer on [`ThreadPoolBuilder`] |
//! | `Pool(n)` (processes) | [`ProcessPool`] (Unix), the same [`Pool`] trait over [`Task`]s |
//! | `pool.map(f, xs)` | [`ThreadPool::map_fn`] (closures); [`Pool::map`] (tasks) |
//! | `pool.starmap(f, pairs)` | `map_fn(\|(a, b)\| f(a, b), pairs)`: a closure takes the tuple |
//! | `pool.map(f, xs, chunksize=k)` | [`ProcessPool::with_chunksize`]`(k).map(..)` |
//! | `imap`, `imap_unordered` | [`Pool::imap`], [`Pool::imap_unordered`] (`_fn` for closures) |
//! | `apply_async`, `executor.submit` | [`Pool::apply_async`], [`ThreadPool::submit`]: an [`AsyncResult`] |
//! | `as_completed(futures)`, `wait(..., FIRST_COMPLETED)` | [`as_completed`] (its first item) |
//! | `with Pool() as p:` | dropping the pool: it joins (see each pool's docs) |
//! | `loop.run_in_executor` | [`Bridge`] |
//! | a task queue across hosts (Celery, RQ) | the `concur-redis` crate's `RedisPool`: one more [`Pool`] |
#![warn(missing_docs)]
// Unsafe code only in the modules that allow it, each saying why.
#![deny(unsafe_code)]

pub mod adaptive;
#[cfg(feature = "async")]
pub mod bridge;
mod cancel;
pub mod codec;
// Probes the descriptor table and its limit through libc.
#[cfg(unix)]
#[allow(unsafe_code)]
pub mod descriptors;
pub mod pool;
#[cfg(unix)]
pub mod process_pool;
pub mod sync;
pub mod thread_pool;
pub mod throttle;

#[cfg(test)]
mod test_support;

// The types most programs use, at the root; the rest (iterators, handles,
// clocks) in their modules.
pub use crate::adaptive::{AdaptiveConcurrency, AdaptiveRate};
#[cfg(feature = "async")]
pub use crate::bridge::Bridge;
pub use crate::cancel::{CancelToken, Cancelled};
pub use crate::codec::Registry;
pub use crate::pool::{AsyncResult, Pool, PoolError, Task, TaskError, as_completed};
#[cfg(unix)]
pub use crate::process_pool::{ProcessPool, ProcessPoolBuilder, worker_main};
pub use crate::thread_pool::{ThreadPool, ThreadPoolBuilder};
pub use crate::throttle::{Quota, QuotaError, Throttle};
