//! A cancellation token shared by threads and async tasks.
//!
//! One flag stops a run: threads check it before each attempt and are woken
//! from their sleeps (a `Condvar`), async tasks await it (a tokio `Notify`)
//! and drop what they were doing. A [`Throttle`](crate::Throttle) waiter
//! given the token is woken too, and gives its reserved slot back.

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::sync;

/// A cancellation flag; clones share it. Once set it stays set.
///
/// ```
/// use concur::CancelToken;
/// use std::time::Duration;
///
/// let cancel = CancelToken::new();
/// let sleeper = std::thread::spawn({
///     let cancel = cancel.clone();
///     // Would sleep a minute; returns `true` as soon as the token is cancelled.
///     move || cancel.sleep(Duration::from_secs(60))
/// });
/// cancel.cancel();
/// assert!(sleeper.join().expect("no panic"));
/// assert!(cancel.is_cancelled());
/// ```
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    cancelled: Mutex<bool>,
    wake_threads: Condvar,
    #[cfg(feature = "async")]
    wake_tasks: tokio::sync::Notify,
    /// Other waits to wake on cancel (threads blocked on another lock's
    /// condition variable, see [`CancelToken::watch`]).
    watchers: Watchers,
}

/// A wake-up call for a wait on another condition variable: it takes that
/// wait's lock and notifies, so a waiter between its check of the flag and
/// its wait cannot miss it.
pub(crate) type Watcher = dyn Fn() + Send + Sync;

#[derive(Default)]
struct Watchers(Mutex<Vec<Weak<Watcher>>>);

impl fmt::Debug for Watchers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Watchers")
    }
}

/// The error of an operation stopped by a [`CancelToken`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled;

impl CancelToken {
    /// A token not yet cancelled.
    pub fn new() -> Self {
        CancelToken::default()
    }

    /// Sets the flag and wakes every sleeper and waiter.
    pub fn cancel(&self) {
        *self.lock() = true;
        self.0.wake_threads.notify_all();
        #[cfg(feature = "async")]
        self.0.wake_tasks.notify_waiters();
        // Called outside the list's lock: a watcher takes its own lock.
        let watchers: Vec<_> = sync::lock(&self.0.watchers.0).iter().filter_map(Weak::upgrade).collect();
        for wake in watchers {
            wake();
        }
    }

    /// Calls `wake` when the token is cancelled, while the caller keeps
    /// the `Arc` alive (a dropped one is forgotten). For a thread blocked
    /// on a condition variable of its own: `wake` takes that lock and
    /// notifies, and the thread checks the flag under the lock before
    /// each wait.
    pub(crate) fn watch(&self, wake: &Arc<Watcher>) {
        let mut watchers = sync::lock(&self.0.watchers.0);
        watchers.retain(|w| w.strong_count() > 0);
        watchers.push(Arc::downgrade(wake));
    }

    /// Whether the flag is set.
    pub fn is_cancelled(&self) -> bool {
        *self.lock()
    }

    /// Sleeps the thread for `d`, or less if the token is cancelled
    /// meanwhile; returns whether it was cancelled.
    pub fn sleep(&self, d: Duration) -> bool {
        let guard = self.lock();
        let (guard, _) = sync::wait_timeout_while(&self.0.wake_threads, guard, d, |cancelled| !*cancelled);
        *guard
    }

    /// Resolves once the flag is set.
    #[cfg(feature = "async")]
    pub async fn cancelled(&self) {
        loop {
            let notified = self.0.wake_tasks.notified();
            tokio::pin!(notified);
            // Register before checking, so a `cancel` in between is not missed.
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, bool> {
        // A bool cannot be left half-written: a poisoned lock is still sound.
        sync::lock(&self.0.cancelled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::within;

    #[test]
    fn sleep_wakes_on_cancel() {
        let c = CancelToken::new();
        assert!(!c.sleep(Duration::from_millis(1)));
        let c2 = c.clone();
        let t = std::thread::spawn(move || c2.sleep(Duration::from_secs(60)));
        c.cancel();
        assert!(within(move || t.join().expect("sleeper")));
        assert!(c.sleep(Duration::from_secs(60)), "a cancelled flag does not sleep");
    }

    #[cfg(feature = "async")]
    #[tokio::test(start_paused = true)]
    async fn tasks_wake_on_cancel() {
        let c = CancelToken::new();
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.cancelled().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        c.cancel();
        tokio::time::timeout(Duration::from_secs(1), waiter).await.expect("woken").expect("joined");
        c.cancelled().await; // already set: resolves at once
    }

    #[test]
    fn cancelled_reads_as_a_word() {
        assert_eq!(Cancelled.to_string(), "cancelled");
    }
}
