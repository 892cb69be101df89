//! [`Cancel`]: one flag that stops a run, seen by threads (which check it
//! before each attempt and wake from backoff sleeps) and by async tasks
//! (which await it and drop their in-flight requests). Ctrl-C sets it.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A cancellation flag shared by every worker of a run; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    cancelled: Mutex<bool>,
    wake_threads: Condvar,
    wake_tasks: tokio::sync::Notify,
}

impl Cancel {
    /// A flag not yet set.
    pub fn new() -> Self {
        Cancel::default()
    }

    /// Sets the flag and wakes every sleeper and waiter.
    pub fn cancel(&self) {
        *self.lock() = true;
        self.0.wake_threads.notify_all();
        self.0.wake_tasks.notify_waiters();
    }

    /// Whether the flag is set.
    pub fn is_cancelled(&self) -> bool {
        *self.lock()
    }

    /// Sleeps `d`, or less if the run is cancelled meanwhile; returns
    /// whether it was cancelled.
    pub fn sleep(&self, d: Duration) -> bool {
        let guard = self.lock();
        let (guard, _) = self
            .0
            .wake_threads
            .wait_timeout_while(guard, d, |cancelled| !*cancelled)
            .unwrap_or_else(|p| p.into_inner());
        *guard
    }

    /// Resolves once the flag is set.
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

    fn lock(&self) -> std::sync::MutexGuard<'_, bool> {
        self.0.cancelled.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_wakes_on_cancel() {
        let c = Cancel::new();
        assert!(!c.sleep(Duration::from_millis(1)));
        let c2 = c.clone();
        let t = std::thread::spawn(move || c2.sleep(Duration::from_secs(60)));
        c.cancel();
        assert!(t.join().expect("sleeper"));
        assert!(c.sleep(Duration::from_secs(60)), "a cancelled flag does not sleep");
    }

    #[tokio::test(start_paused = true)]
    async fn tasks_wake_on_cancel() {
        let c = Cancel::new();
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
}
