//! The run-wide "not before" of a rate-limited server: a 429's
//! `Retry-After` says when *this client* may come back, not when one of its
//! requests may, so every worker of the run (threads, tasks, the process
//! pool's attempts, which are all sent from this process) holds its next
//! request until then. Without it the other workers keep sending into the
//! same empty bucket, each earning a 429 of its own.

use std::sync::Mutex;
use std::time::Duration;

use concur::CancelToken;
use concur::sync::lock;
use tokio::time::Instant;

/// Waits a server asks for that are longer than this are said on stderr
/// (a warning), not only with `-v`: a run that sits still for them must
/// say why, and that it can be stopped.
const LOUD_WAIT: Duration = Duration::from_secs(5);

/// Says on stderr that the run waits `wait` because `why`, if that is
/// long enough to look like a hang.
pub(crate) fn announce_wait(wait: Duration, why: &str) {
    if wait >= LOUD_WAIT {
        tracing::warn!(
            target: "rates::retry",
            "waiting {:.0?}: {why}; no request goes until then (Ctrl-C stops the run)",
            wait
        );
    }
}

/// When the run may send again. `tokio::time::Instant`, so that under a
/// paused test clock the pause is on the test's time (outside a runtime it
/// is the system's monotonic clock).
#[derive(Debug, Default)]
pub(crate) struct Pause {
    until: Mutex<Option<Instant>>,
}

impl Pause {
    /// No request of the run before `after` from now (a later pause
    /// already set stands).
    pub(crate) fn hold(&self, after: Duration) {
        let now = Instant::now();
        let Some(until) = now.checked_add(after) else { return };
        let mut held = lock(&self.until);
        if held.is_some_and(|h| h >= until) {
            return;
        }
        *held = Some(until);
        drop(held);
        announce_wait(after, "the server answered 429 with that Retry-After");
    }

    /// Whether the run is paused now.
    pub(crate) fn is_on(&self) -> bool {
        !self.remaining().is_zero()
    }

    /// How long from now the run is paused; zero when it is not.
    fn remaining(&self) -> Duration {
        let held = *lock(&self.until);
        held.map_or(Duration::ZERO, |until| until.saturating_duration_since(Instant::now()))
    }

    /// Blocks until the pause is over (a pause extended meanwhile is
    /// waited for too); `false` if `cancel` was cancelled first.
    pub(crate) fn wait(&self, cancel: &CancelToken) -> bool {
        loop {
            let left = self.remaining();
            if left.is_zero() {
                return !cancel.is_cancelled();
            }
            // `sleep` says whether the run was cancelled meanwhile.
            if cancel.sleep(left) {
                return false;
            }
        }
    }

    /// [`wait`](Self::wait) for async code, on tokio's timer. Dropping the
    /// future abandons the wait.
    pub(crate) async fn wait_async(&self) {
        loop {
            let left = self.remaining();
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_every_waiter_until_it_ends() {
        let pause = std::sync::Arc::new(Pause::default());
        let started = Instant::now();
        pause.wait_async().await;
        assert_eq!(started.elapsed(), Duration::ZERO, "no pause: no wait");
        pause.hold(Duration::from_secs(2));
        pause.hold(Duration::from_secs(1)); // shorter: the longer stands
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let pause = std::sync::Arc::clone(&pause);
                tokio::spawn(async move {
                    pause.wait_async().await;
                    started.elapsed()
                })
            })
            .collect();
        // Extended while they wait: they wait for the new end.
        tokio::time::sleep(Duration::from_millis(500)).await;
        pause.hold(Duration::from_secs(3));
        for w in waiters {
            assert_eq!(w.await.expect("a waiter"), Duration::from_millis(3500));
        }
    }

    #[test]
    fn a_blocking_wait_ends_with_the_pause_or_a_cancel() {
        let pause = Pause::default();
        let cancel = CancelToken::new();
        assert!(pause.wait(&cancel));
        pause.hold(Duration::from_millis(30));
        assert!(pause.wait(&cancel));
        assert_eq!(pause.remaining(), Duration::ZERO, "waited to its end");
        pause.hold(Duration::from_secs(3600));
        cancel.cancel();
        assert!(!pause.wait(&cancel), "a cancelled run does not wait out an hour");
        // A pause past the end of the clock is ignored, not a panic.
        Pause::default().hold(Duration::MAX);
    }
}
