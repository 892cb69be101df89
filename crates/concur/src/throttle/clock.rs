//! The clocks a [`Throttle`](super::Throttle) reads and sleeps on: the
//! machine's ([`SystemClock`], which follows tokio's paused test time) and
//! a fake one that tests move by hand ([`FakeClock`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[cfg(not(feature = "async"))]
use std::time::Instant;
/// Tokio's instant where async support is built, so the clock follows
/// tokio's paused test time; the standard one otherwise.
#[cfg(feature = "async")]
use tokio::time::Instant;

use crate::cancel::{CancelToken, Cancelled};

/// A source of time for a [`Throttle`](super::Throttle).
pub trait Clock: Send + Sync {
    /// Time since this clock's origin. Never decreases.
    fn now(&self) -> Duration;
    /// Blocks the calling thread until [`now`](Clock::now) is at least
    /// `deadline`. A fake clock moves its time there instead.
    fn sleep_until(&self, deadline: Duration);

    /// [`sleep_until`](Clock::sleep_until), but gives up with [`Cancelled`]
    /// as soon as `cancel` is cancelled (at once if it already is).
    ///
    /// The default checks the token before sleeping only: right for a clock
    /// whose sleep does not block, such as [`FakeClock`]. A clock that
    /// blocks must wake on the token, as [`SystemClock`] does.
    ///
    /// # Errors
    ///
    /// [`Cancelled`] if the token was cancelled before the deadline.
    fn sleep_until_cancellable(&self, deadline: Duration, cancel: &CancelToken) -> Result<(), Cancelled> {
        if cancel.is_cancelled() {
            return Err(Cancelled);
        }
        self.sleep_until(deadline);
        Ok(())
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Duration {
        (**self).now()
    }
    fn sleep_until(&self, deadline: Duration) {
        (**self).sleep_until(deadline);
    }
    fn sleep_until_cancellable(&self, deadline: Duration, cancel: &CancelToken) -> Result<(), Cancelled> {
        (**self).sleep_until_cancellable(deadline, cancel)
    }
}

/// The machine's monotonic clock, read through `tokio::time::Instant`: the
/// same as `std::time::Instant`, except that it follows tokio's paused time
/// in tests (tokio's `test-util`).
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        SystemClock { origin: Instant::now() }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.origin)
    }

    fn sleep_until(&self, deadline: Duration) {
        let wait = deadline.saturating_sub(self.now());
        if !wait.is_zero() {
            // `thread::sleep` sleeps at least this long: one sleep suffices.
            std::thread::sleep(wait);
        }
    }

    /// Sleeps on the token's condition variable, which `cancel` wakes.
    fn sleep_until_cancellable(&self, deadline: Duration, cancel: &CancelToken) -> Result<(), Cancelled> {
        // One sleep, as in `sleep_until`; it checks the token first, so a
        // token already cancelled returns at once.
        if cancel.sleep(deadline.saturating_sub(self.now())) { Err(Cancelled) } else { Ok(()) }
    }
}

/// A clock that moves only when told: by [`advance`](FakeClock::advance),
/// or by a sleep, which jumps the time to the sleep's deadline at once.
/// Clones share one time. A cancellable sleep jumps too, unless its token
/// is already cancelled: nothing here depends on real time.
///
/// ```
/// use concur::Throttle;
/// use concur::throttle::{Clock, FakeClock};
/// use std::time::Duration;
///
/// let clock = FakeClock::new();
/// let throttle = Throttle::with_clock(2.0, 1, clock.clone())?;
/// throttle.acquire(); // the burst: at once
/// throttle.acquire(); // the next token is due half a second later
/// assert_eq!(clock.now(), Duration::from_millis(500));
/// assert!(throttle.try_acquire().is_err());
/// clock.advance(Duration::from_millis(500));
/// assert!(throttle.try_acquire().is_ok());
/// # Ok::<(), concur::QuotaError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct FakeClock {
    nanos: Arc<AtomicU64>,
}

impl FakeClock {
    /// A fake clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the time forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.nanos.fetch_add(nanos(by), Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }

    /// Moves the time to `deadline` unless it is already later: concurrent
    /// sleepers overlap, as they would in real time.
    fn sleep_until(&self, deadline: Duration) {
        self.nanos.fetch_max(nanos(deadline), Ordering::SeqCst);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
