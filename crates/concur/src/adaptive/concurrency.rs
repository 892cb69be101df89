//! The adaptive concurrency limit: how many requests may be in flight,
//! learnt from their latency and from overload.
//!
//! # The algorithm
//!
//! A gradient rule in the manner of Netflix's `concurrency-limits`
//! (Gradient2) and Envoy's adaptive concurrency filter, with a slow start:
//!
//! - Each [`Permit`] measures its request's latency. Samples are taken in
//!   windows of `max(limit, 4)` answered requests, about one round trip,
//!   and the limit changes at most once per window, from samples of
//!   requests started under the current limit only (and after a decrease,
//!   only once the requests of the higher limit have all ended, since
//!   until then the server's queue is theirs). That keeps it
//!   deterministic and free of the oscillation a per-sample rule shows.
//! - The window's mean latency is compared with a baseline, the lowest
//!   window mean of the last `baseline_windows` windows: a windowed
//!   minimum, so a server that became slower for good is re-learnt (Envoy
//!   re-measures its minRTT for the same reason).
//! - **Slow start**: while the mean stays within `tolerance` of the
//!   baseline, the limit doubles each window, as TCP's slow start, so a
//!   server with room for 64 is found in four round trips. Netflix's AIMD
//!   (+1 per window) would take sixty.
//! - **Steady state** (from the first rise of latency or overload on):
//!   within tolerance, +1 per window (Vegas' additive probe); above it, the
//!   limit is scaled by `baseline / mean` (Gradient2's gradient, at most
//!   halving per window). Against a server that serves `C` at once and
//!   queues the rest, `n > C` requests in flight take `n/C` times as long
//!   (Little's law), so the gradient lands on `C` in one step; the +1
//!   probe then finds the queue again. The limit stays within about
//!   `C ..= C·tolerance + 1`.
//! - **Overload** (a timeout, 429, 503, refused connection): the limit is
//!   cut at once by `backoff` (AIMD's multiplicative decrease), once per
//!   limit: requests started before a change do not cut it again.
//!
//! Netflix's Vegas alone needs a queue-size estimate in requests, and its
//! AIMD reacts only to drops, not to latency; Gradient2's smoothed
//! long-term average drifts up under sustained queueing, which the
//! windowed minimum does not.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::cancel::{CancelToken, Cancelled, Watcher};
use crate::sync;
use crate::throttle::{Clock, SystemClock};

/// A change of the learnt limit, for an observer
/// ([`AdaptiveConcurrency::on_change`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LimitChange {
    /// The limit before.
    pub from: usize,
    /// The limit after.
    pub to: usize,
    /// Why it changed, in a few words.
    pub why: &'static str,
}

/// How an [`AdaptiveConcurrency`] starts and moves. Values out of range
/// are brought into it (see each field).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConcurrencyConfig {
    /// The starting limit (within `min..=max`).
    pub initial: usize,
    /// The lowest limit (at least 1).
    pub min: usize,
    /// The highest limit (at least `min`).
    pub max: usize,
    /// A window's mean latency up to `tolerance` times the baseline counts
    /// as flat (at least 1).
    pub tolerance: f64,
    /// An overload leaves `backoff · limit` (in `0..1`).
    pub backoff: f64,
    /// The baseline is the lowest window mean of this many windows (at
    /// least 1).
    pub baseline_windows: usize,
}

impl Default for ConcurrencyConfig {
    /// Starts at 4, a count any server takes, between 1 and 256. A
    /// tolerance of 1.2 lets a jitter of a few milliseconds pass as flat
    /// and keeps the queue it allows under a fifth of the latency; a
    /// backoff of ¾ as TCP's CUBIC (0.7); 16 windows of baseline re-learn
    /// within a few seconds at round trips of tens of milliseconds.
    fn default() -> Self {
        ConcurrencyConfig { initial: 4, min: 1, max: 256, tolerance: 1.2, backoff: 0.75, baseline_windows: 16 }
    }
}

impl ConcurrencyConfig {
    /// The same, each field brought into its range.
    fn sane(self) -> Self {
        let min = self.min.max(1);
        let max = self.max.max(min);
        ConcurrencyConfig {
            initial: self.initial.clamp(min, max),
            min,
            max,
            tolerance: if self.tolerance.is_finite() { self.tolerance.max(1.0) } else { 1.2 },
            backoff: if self.backoff.is_finite() { self.backoff.clamp(0.01, 0.99) } else { 0.75 },
            baseline_windows: self.baseline_windows.max(1),
        }
    }
}

/// The fewest samples a window takes, so that a limit of 1 or 2 is not
/// moved by a single answer.
const MIN_WINDOW: usize = 4;

type Observer = Box<dyn Fn(&LimitChange) + Send + Sync>;

/// A limit on requests in flight, learnt from their latency: it grows
/// while latency stays near its observed minimum and shrinks when latency
/// rises or requests are refused or time out (see the module docs for the
/// algorithm).
///
/// Take a [`Permit`] before each request and say how it went
/// ([`Permit::success`], [`Permit::overload`]); dropping it says nothing
/// (a cancelled request). Share it as `Arc<AdaptiveConcurrency>`.
///
/// ```
/// use concur::adaptive::{AdaptiveConcurrency, ConcurrencyConfig};
/// use concur::throttle::FakeClock;
/// use std::time::Duration;
///
/// let clock = FakeClock::new();
/// let limiter = AdaptiveConcurrency::with_clock(ConcurrencyConfig::default(), clock.clone());
/// let cancel = concur::CancelToken::new();
/// // Four requests of 50 ms each: latency flat, so slow start doubles.
/// let permits: Vec<_> = (0..4).map(|_| limiter.acquire_cancellable(&cancel)).collect::<Result<_, _>>()?;
/// assert!(limiter.try_acquire().is_none()); // four in flight: the limit
/// clock.advance(Duration::from_millis(50));
/// permits.into_iter().for_each(|p| p.success());
/// assert_eq!(limiter.limit(), 8);
/// # Ok::<(), concur::Cancelled>(())
/// ```
pub struct AdaptiveConcurrency<C: Clock = SystemClock> {
    clock: C,
    config: ConcurrencyConfig,
    shared: Arc<Shared>,
    observer: Option<Observer>,
}

/// What the waiters wait on: the state, a condition variable for threads,
/// and a `Notify` for tasks.
struct Shared {
    state: Mutex<State>,
    threads: Condvar,
    #[cfg(feature = "async")]
    tasks: tokio::sync::Notify,
}

#[derive(Debug)]
struct State {
    limit: usize,
    in_flight: usize,
    /// Threads blocked in `acquire_cancellable`, so that a freed slot wakes
    /// one of them rather than a task.
    threads_waiting: usize,
    /// Counts the changes of the limit: a permit's samples count only
    /// under the limit it was taken under.
    epoch: u64,
    /// Requests in flight from before the last decrease: until they have
    /// all ended, the server's queue is theirs, and new samples would
    /// overstate the latency under the new limit.
    stale: usize,
    /// The epoch of the last decrease: permits from before it are stale.
    cut_epoch: u64,
    slow_start: bool,
    /// The current window: the sum of its latencies, in seconds, and how
    /// many.
    window_sum: f64,
    window_len: usize,
    /// Whether the requests in flight reached the limit during the current
    /// window: only then did the limit hold anything back, and only then
    /// does flat latency say that a higher one would be taken. A caller
    /// held back by something else (a rate limit, a slow producer) would
    /// otherwise see flat latency and raise the limit without end (TCP's
    /// congestion window validation, RFC 7661).
    window_full: bool,
    /// The means of the last windows, newest last.
    means: VecDeque<f64>,
}

impl AdaptiveConcurrency<SystemClock> {
    /// A limiter on the system clock (which follows tokio's paused test
    /// time).
    pub fn new(config: ConcurrencyConfig) -> Self {
        Self::with_clock(config, SystemClock::new())
    }
}

impl<C: Clock> AdaptiveConcurrency<C> {
    /// A limiter on the given clock.
    pub fn with_clock(config: ConcurrencyConfig, clock: C) -> Self {
        let config = config.sane();
        let state = State {
            limit: config.initial,
            in_flight: 0,
            threads_waiting: 0,
            epoch: 0,
            stale: 0,
            cut_epoch: 0,
            slow_start: true,
            window_full: false,
            window_sum: 0.0,
            window_len: 0,
            means: VecDeque::with_capacity(config.baseline_windows + 1),
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            threads: Condvar::new(),
            #[cfg(feature = "async")]
            tasks: tokio::sync::Notify::new(),
        });
        AdaptiveConcurrency { clock, config, shared, observer: None }
    }

    /// Calls `f` on every change of the limit (after the change, on the
    /// thread that finished the request, outside the limiter's lock).
    pub fn on_change(mut self, f: impl Fn(&LimitChange) + Send + Sync + 'static) -> Self {
        self.observer = Some(Box::new(f));
        self
    }

    /// Takes a slot, blocking the thread (on a condition variable, no
    /// polling) while `limit` requests are in flight, unless `cancel` is
    /// cancelled first: then it returns at once, holding nothing.
    ///
    /// # Errors
    ///
    /// [`Cancelled`] if the token is cancelled before a slot is free.
    pub fn acquire_cancellable(&self, cancel: &CancelToken) -> Result<Permit<'_, C>, Cancelled> {
        if cancel.is_cancelled() {
            return Err(Cancelled);
        }
        if let Some(permit) = self.try_acquire() {
            return Ok(permit);
        }
        // The token wakes this thread through the limiter's own lock.
        let weak = Arc::downgrade(&self.shared);
        let wake: Arc<Watcher> = Arc::new(move || {
            if let Some(shared) = weak.upgrade() {
                drop(shared.lock());
                shared.threads.notify_all();
            }
        });
        cancel.watch(&wake);
        let mut s = self.shared.lock();
        s.threads_waiting += 1;
        loop {
            if cancel.is_cancelled() {
                s.threads_waiting -= 1;
                // A slot freed for this thread goes to the next waiter.
                if s.in_flight < s.limit {
                    self.shared.wake_one(&s);
                }
                return Err(Cancelled);
            }
            if s.in_flight < s.limit {
                s.threads_waiting -= 1;
                return Ok(self.take(&mut s));
            }
            s = sync::wait(&self.shared.threads, s);
        }
    }

    /// Takes a slot, waiting (without blocking the thread: a tokio
    /// `Notify`) while `limit` requests are in flight. A future dropped
    /// while it waits holds nothing.
    #[cfg(feature = "async")]
    pub async fn acquire_async(&self) -> Permit<'_, C> {
        loop {
            let notified = self.shared.tasks.notified();
            tokio::pin!(notified);
            // Registered before the check, so a slot freed in between is
            // not missed.
            notified.as_mut().enable();
            if let Some(permit) = self.try_acquire() {
                return permit;
            }
            notified.await;
        }
    }

    /// Takes a slot if one is free now; never blocks.
    pub fn try_acquire(&self) -> Option<Permit<'_, C>> {
        let mut s = self.shared.lock();
        (s.in_flight < s.limit).then(|| self.take(&mut s))
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.shared.lock().limit
    }

    /// Requests in flight: permits taken and not yet finished or dropped.
    pub fn in_flight(&self) -> usize {
        self.shared.lock().in_flight
    }

    /// The limiter's clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    fn take(&self, s: &mut State) -> Permit<'_, C> {
        s.in_flight += 1;
        s.window_full |= s.in_flight >= s.limit;
        Permit { limiter: self, start: self.clock.now(), epoch: s.epoch, clean: s.stale == 0, done: false }
    }

    /// Frees a permit's slot and learns from how its request went.
    fn finish(&self, epoch: u64, clean: bool, outcome: Outcome) {
        let change = {
            let mut s = self.shared.lock();
            s.in_flight -= 1;
            if epoch < s.cut_epoch {
                s.stale = s.stale.saturating_sub(1);
            }
            let change = if epoch == s.epoch {
                match outcome {
                    Outcome::Latency(latency) if clean => self.sample(&mut s, latency),
                    Outcome::Latency(_) => None,
                    Outcome::Overload => {
                        let to = ((s.limit as f64 * self.config.backoff) as usize).max(self.config.min);
                        s.slow_start = false;
                        self.set_limit(&mut s, to, "overload")
                    }
                    Outcome::Dropped => None,
                }
            } else {
                None
            };
            if change.as_ref().is_some_and(|c| c.to > c.from) {
                self.shared.wake_all();
            } else if s.in_flight < s.limit {
                self.shared.wake_one(&s);
            }
            change
        };
        if let (Some(change), Some(observer)) = (change, &self.observer) {
            observer(&change);
        }
    }

    /// Adds a latency to the window; at its end, moves the limit.
    fn sample(&self, s: &mut State, latency: Duration) -> Option<LimitChange> {
        s.window_sum += latency.as_secs_f64();
        s.window_len += 1;
        if s.window_len < s.limit.max(MIN_WINDOW) {
            return None;
        }
        let mean = s.window_sum / s.window_len as f64;
        let used = std::mem::replace(&mut s.window_full, s.in_flight >= s.limit);
        s.window_sum = 0.0;
        s.window_len = 0;
        if s.means.len() == self.config.baseline_windows {
            s.means.pop_front();
        }
        s.means.push_back(mean);
        let baseline = s.means.iter().copied().fold(f64::INFINITY, f64::min);
        let flat = mean <= baseline * self.config.tolerance;
        let (to, why) = if flat && !used {
            // Nothing was held back: no sign that more would be taken.
            return None;
        } else if flat && s.slow_start {
            (s.limit.saturating_mul(2), "latency flat: slow start")
        } else if flat {
            (s.limit + 1, "latency flat: probing")
        } else {
            s.slow_start = false;
            let gradient = (baseline / mean).max(0.5);
            // Rounded up: by Little's law the product is the server's
            // capacity, and a limit one short of it wastes a place.
            ((s.limit as f64 * gradient - 1e-9).ceil() as usize, "latency rose")
        };
        self.set_limit(s, to.clamp(self.config.min, self.config.max), why)
    }

    fn set_limit(&self, s: &mut State, to: usize, why: &'static str) -> Option<LimitChange> {
        let from = s.limit;
        if to == from {
            return None;
        }
        if to < from {
            // Every request in flight was started under the old limit.
            s.stale = s.in_flight;
            s.cut_epoch = s.epoch + 1;
        }
        s.limit = to;
        s.epoch += 1;
        s.window_full = s.in_flight >= to;
        // Samples of requests started under the old limit say nothing of
        // the new one.
        s.window_sum = 0.0;
        s.window_len = 0;
        Some(LimitChange { from, to, why })
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is updated with plain arithmetic that cannot panic, so
        // a poisoned lock still guards consistent numbers.
        sync::lock(&self.state)
    }

    /// Wakes one waiter for one free slot: a thread if any waits, else a
    /// task (a `Notify` permit, kept if no task waits yet).
    fn wake_one(&self, s: &State) {
        if s.threads_waiting > 0 {
            self.threads.notify_one();
        } else {
            #[cfg(feature = "async")]
            self.tasks.notify_one();
        }
    }

    /// Wakes every waiter: the limit rose.
    fn wake_all(&self) {
        self.threads.notify_all();
        #[cfg(feature = "async")]
        self.tasks.notify_waiters();
    }
}

/// How a request ended.
enum Outcome {
    Latency(Duration),
    Overload,
    Dropped,
}

/// A slot in flight, from [`AdaptiveConcurrency`]: it measures its
/// request's latency itself, from its taking to its end. Say how the
/// request went with [`success`](Permit::success) or
/// [`overload`](Permit::overload); dropped without either, it frees its
/// slot and says nothing (a cancelled request).
#[must_use = "a permit holds its slot until it is finished or dropped"]
pub struct Permit<'a, C: Clock> {
    limiter: &'a AdaptiveConcurrency<C>,
    /// When it was taken, on the limiter's clock.
    pub(super) start: Duration,
    epoch: u64,
    /// Started once the requests of a higher limit had all ended.
    clean: bool,
    done: bool,
}

impl<C: Clock> Permit<'_, C> {
    /// The request got an answer: its latency is a sample.
    pub fn success(mut self) {
        self.done = true;
        let latency = self.limiter.clock.now().saturating_sub(self.start);
        self.limiter.finish(self.epoch, self.clean, Outcome::Latency(latency));
    }

    /// The request timed out, or the server refused it for load (503,
    /// 429, connection refused): a congestion signal, which cuts the limit.
    pub fn overload(mut self) {
        self.done = true;
        self.limiter.finish(self.epoch, self.clean, Outcome::Overload);
    }
}

impl<C: Clock> Drop for Permit<'_, C> {
    fn drop(&mut self) {
        if !self.done {
            self.limiter.finish(self.epoch, self.clean, Outcome::Dropped);
        }
    }
}

impl<C: Clock> fmt::Debug for Permit<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").field("start", &self.start).finish_non_exhaustive()
    }
}

impl<C: Clock> fmt::Debug for AdaptiveConcurrency<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.shared.lock();
        f.debug_struct("AdaptiveConcurrency")
            .field("limit", &s.limit)
            .field("in_flight", &s.in_flight)
            .finish_non_exhaustive()
    }
}
