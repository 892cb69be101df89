//! The handle on one task's result ([`AsyncResult`]), the promise its
//! runner completes it with, and [`as_completed`] over many handles.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::TaskError;
// The slot's state is taken even if a thread panicked while holding the
// lock: every change to it is a single assignment, never half made.
use crate::sync::{self, lock};

/// A handle on the result of one task queued with
/// [`Pool::apply_async`](crate::Pool::apply_async) or [`ThreadPool::submit`](crate::ThreadPool::submit).
///
/// Dropping the handle does not cancel the task; its result is discarded.
/// To wait on several, as they finish: [`as_completed`].
#[must_use = "the task runs anyway; wait on the handle to get its result"]
pub struct AsyncResult<R> {
    pub(super) slot: Arc<Slot<R>>,
}

/// How many times a waiter yields before it parks. Spinning, as a
/// channel's receiver does, burns the CPU that many dispatcher threads
/// waiting on few cores need; parking at once makes every answer pay a
/// futex wake-up. A few yields and no spin cost the least CPU per request
/// with either pool behind the dispatchers (`rates bench` with
/// `--sim-latency 0` and many workers shows it); the exact count matters
/// little.
const YIELDS_BEFORE_PARKING: usize = 8;

/// Where a task's result waits for its handle.
pub(super) struct Slot<R> {
    pub(super) state: Mutex<State<R>>,
    done: Condvar,
    /// Set with `state` once finished: read without the lock while the
    /// waiter yields before it parks.
    finished: AtomicBool,
}

pub(super) enum State<R> {
    /// Not finished. `parked`: the handle's owner waits on `done`;
    /// `notify`: an [`as_completed`] waits for this index.
    Pending {
        parked: bool,
        notify: Option<(Sender<usize>, usize)>,
    },
    Finished(Result<R, TaskError>),
    /// Its result was handed out.
    Taken,
}

/// The sending half of an [`AsyncResult`]: whoever runs the task completes
/// it once. Dropped without [`complete`](Self::complete), the task never
/// ran: the handle gives [`TaskError::Cancelled`].
pub struct Promise<R> {
    slot: Arc<Slot<R>>,
}

impl<R> Promise<R> {
    /// Completes the handle, unless it already is: the first result
    /// stands.
    pub fn complete(&self, result: Result<R, TaskError>) {
        let mut state = lock(&self.slot.state);
        let State::Pending { parked, notify } = &mut *state else {
            return;
        };
        let (parked, notify) = (*parked, notify.take());
        *state = State::Finished(result);
        self.slot.finished.store(true, Ordering::Release);
        drop(state);
        if parked {
            self.slot.done.notify_one();
        }
        if let Some((tx, index)) = notify {
            // Its `as_completed` may have been dropped.
            let _ = tx.send(index);
        }
    }
}

impl<R> Drop for Promise<R> {
    fn drop(&mut self) {
        self.complete(Err(TaskError::Cancelled));
    }
}

impl<R> AsyncResult<R> {
    /// A handle and the promise its task completes it with: what a
    /// [`Pool`](super::Pool) implementation's `apply_async` gives and
    /// keeps.
    pub fn channel() -> (Promise<R>, Self) {
        let slot = Arc::new(Slot {
            state: Mutex::new(State::Pending { parked: false, notify: None }),
            done: Condvar::new(),
            finished: AtomicBool::new(false),
        });
        (Promise { slot: Arc::clone(&slot) }, AsyncResult { slot })
    }

    /// A handle that is already resolved, e.g. to [`TaskError::Closed`].
    pub fn ready(result: Result<R, TaskError>) -> Self {
        let state = Mutex::new(State::Finished(result));
        AsyncResult { slot: Arc::new(Slot { state, done: Condvar::new(), finished: AtomicBool::new(true) }) }
    }

    /// Blocks until the task has finished and returns its result.
    pub fn wait(self) -> Result<R, TaskError> {
        self.before_parking();
        let mut state = lock(&self.slot.state);
        loop {
            match &mut *state {
                State::Pending { parked, .. } => *parked = true,
                _ => return take(&mut state),
            }
            state = sync::wait(&self.slot.done, state);
        }
    }

    /// Waits at most `timeout`. Gives the result, or the handle back if the
    /// task has not finished yet, so the caller can wait again.
    pub fn wait_timeout(self, timeout: Duration) -> Result<Result<R, TaskError>, Self> {
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            // Longer than the clock can count: no deadline at all.
            return Ok(self.wait());
        };
        self.before_parking();
        let mut state = lock(&self.slot.state);
        loop {
            match &mut *state {
                State::Pending { parked, .. } => *parked = true,
                _ => return Ok(take(&mut state)),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(state);
                return Err(self);
            }
            state = sync::wait_timeout(&self.slot.done, state, left).0;
        }
    }

    /// Gives the CPU away a few times before parking: a result due within
    /// microseconds (the usual case for a pool's dispatcher) then costs no
    /// futex wait and wake-up. No spinning: with more waiting threads
    /// than cores, a spinning waiter holds a core the producer of its
    /// result needs.
    fn before_parking(&self) {
        for _ in 0..YIELDS_BEFORE_PARKING {
            if self.slot.finished.load(Ordering::Acquire) {
                return;
            }
            std::thread::yield_now();
        }
    }

    /// Whether the task has finished (its result may be taken at once).
    fn is_finished(&self) -> bool {
        matches!(*lock(&self.slot.state), State::Finished(_))
    }
}

/// The finished result of a slot, which is then `Taken`.
fn take<R>(state: &mut State<R>) -> Result<R, TaskError> {
    match std::mem::replace(state, State::Taken) {
        State::Finished(result) => result,
        // A handle is waited on once (`wait` takes it), and `as_completed`
        // takes each index once: neither happens.
        State::Pending { .. } | State::Taken => Err(TaskError::Cancelled),
    }
}

/// Yields `(index, result)` for each handle, as its task finishes: Python's
/// `concurrent.futures.as_completed`. The first item is the first task to
/// finish (`wait(..., return_when=FIRST_COMPLETED)`); the index is the
/// handle's position in `handles`. Each index comes exactly once.
///
/// ```
/// use concur::{ThreadPool, as_completed};
/// use std::time::Duration;
///
/// let pool = ThreadPool::new(2)?;
/// let slow = pool.submit(|| { std::thread::sleep(Duration::from_millis(200)); "slow" });
/// let quick = pool.submit(|| "quick");
/// let mut done = as_completed([slow, quick]);
/// assert_eq!(done.next(), Some((1, Ok("quick"))));
/// assert_eq!(done.next(), Some((0, Ok("slow"))));
/// assert_eq!(done.next(), None);
/// # Ok::<(), concur::PoolError>(())
/// ```
pub fn as_completed<R>(handles: impl IntoIterator<Item = AsyncResult<R>>) -> AsCompleted<R> {
    let (tx, finished) = crossbeam_channel::unbounded();
    let handles: Vec<Option<AsyncResult<R>>> = handles
        .into_iter()
        .enumerate()
        .map(|(index, handle)| {
            let mut state = lock(&handle.slot.state);
            match &mut *state {
                State::Pending { notify, .. } => *notify = Some((tx.clone(), index)),
                // Finished (or, never, taken): ready to be taken.
                _ => {
                    let _ = tx.send(index);
                }
            }
            drop(state);
            Some(handle)
        })
        .collect();
    AsCompleted { left: handles.len(), handles, finished }
}

/// The iterator of [`as_completed`]. Each finishing task names its index
/// on one channel: a step waits for the next name, whatever the number of
/// handles still pending (no polling).
#[must_use = "iterators do nothing unless consumed"]
pub struct AsCompleted<R> {
    handles: Vec<Option<AsyncResult<R>>>,
    left: usize,
    finished: Receiver<usize>,
}

impl<R> Iterator for AsCompleted<R> {
    type Item = (usize, Result<R, TaskError>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        // Every pending handle's promise names it once, when it completes
        // or is dropped; so the channel cannot run dry while any is left.
        let index = self.finished.recv().ok()?;
        let handle = self.handles.get_mut(index)?.take()?;
        self.left -= 1;
        let result = take(&mut lock(&handle.slot.state));
        Some((index, result))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<R> fmt::Debug for AsCompleted<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsCompleted").field("pending", &self.left).finish()
    }
}

impl<R> fmt::Debug for Promise<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Promise").finish_non_exhaustive()
    }
}

impl<R> fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult").field("finished", &self.is_finished()).finish()
    }
}
