//! A token bucket shared by threads and tasks, to stay under a request rate.
//!
//! Implements the chapter's "throttling" listing (10). The chapter's
//! `Throttle` only answers "is there a token now?", and its workers sleep
//! 0.1 s and ask again. This one also answers "when is my token due?":
//! [`acquire`](Throttle::acquire) reserves the next free slot under a lock
//! and sleeps exactly until it, once, so concurrent waiters get distinct
//! slots and nobody polls. That is the GCRA ("theoretical arrival time")
//! algorithm, written as a token bucket that may go into debt: a reservation
//! takes a token even when the bucket is empty, and the debt says how long
//! the waiter sleeps.
//!
//! A waiter that gives up (a cancelled [`acquire_cancellable`], a dropped
//! [`acquire_async`] future) gives its slot back, so cancellation does not
//! cost a token; see [`Throttle`] for how that keeps the rate.
//!
//! The clock is injectable ([`Clock`]): [`SystemClock`] for real use,
//! [`FakeClock`] for tests that move time by hand.
//!
//! [`acquire_cancellable`]: Throttle::acquire_cancellable
//! [`acquire_async`]: Throttle::acquire_async

mod bucket;
mod clock;
#[cfg(test)]
mod proptests;
mod quota;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::cancel::{CancelToken, Cancelled};
use crate::sync;
use bucket::Bucket;
pub use clock::{Clock, FakeClock, SystemClock};
pub use quota::{Quota, QuotaError};

/// Seconds as a duration, saturating instead of panicking on huge values.
fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX)
}

/// Refused by [`Throttle::try_acquire`]: no token is available yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limited: the next token is due in {wait:?}")]
pub struct NotUntil {
    wait: Duration,
    at: Duration,
}

impl NotUntil {
    /// A refusal at `now` of a token due `at`; for the other limiters of
    /// this crate.
    pub(crate) fn new(now: Duration, at: Duration) -> Self {
        NotUntil { wait: at.saturating_sub(now), at }
    }

    /// How long from the refusal until a token is due (if nobody else takes
    /// it first).
    pub fn wait_time(&self) -> Duration {
        self.wait
    }

    /// When the token is due, on the throttle's clock.
    pub fn earliest(&self) -> Duration {
        self.at
    }
}

/// A token bucket: `rate` tokens per second, at most `burst` at once.
///
/// Share it between threads as `Arc<Throttle>`. A waiter reserves the next
/// free slot under a lock and sleeps exactly until it, once: concurrent
/// waiters get distinct slots, served in the order they asked (except that
/// a slot given back goes to the next to ask), and nobody polls.
///
/// # Giving a slot back
///
/// A waiter that gives up before its slot is due (a cancelled
/// [`acquire_cancellable`](Throttle::acquire_cancellable), a dropped
/// [`acquire_async`](Throttle::acquire_async) future) gives the slot back:
/// - the latest reservation is undone, as if it had never been made, and so
///   is every given-back slot it leaves at the end of the queue;
/// - a slot in the middle of the queue cannot be undone that way: later
///   waiters already sleep until theirs, and a token put back in the bucket
///   would let a newcomer be granted at the same instant as one of them.
///   It is kept aside instead, and the next reservation takes the earliest
///   such slot (before its time; a slot whose time passed unused is lost,
///   since granting it late could crowd the grants after it).
///
/// Either way every grant falls on a slot the bucket itself handed out, at
/// that slot's time, so the contract below holds whoever gives up when.
///
/// # Contract
///
/// With rate `r` tokens per second and burst `b`:
/// - in any time window of length `w`, at most `b + r·w` tokens are granted
///   (counted at the instant each grant is due; a blocked thread may wake a
///   little later than that, as the OS schedules it);
/// - over a long run, grants come at rate `r`.
///
/// [`Throttle::chapter`] gives the chapter's rules instead: no initial
/// burst, tokens accrue from the first request on, and the bucket holds at
/// most `rate` tokens.
///
/// # Time
///
/// The clock is a type parameter ([`Clock`]): [`SystemClock`] by default,
/// [`FakeClock`] in tests that move time by hand.
/// [`acquire_async`](Throttle::acquire_async) sleeps with `tokio::time`, and
/// [`SystemClock`] reads tokio's clock, so under tokio's paused test time
/// (`#[tokio::test(start_paused = true)]`) the throttle sees the paused time.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), concur::QuotaError> {
/// use concur::Throttle;
/// use std::sync::Arc;
///
/// // The public rates API allows 2 requests per second, in bursts of 4.
/// let throttle = Arc::new(Throttle::new(2.0, 4)?);
/// let start = tokio::time::Instant::now();
/// for _ in 0..6 {
///     throttle.acquire_async().await;
/// }
/// // Four at once, then one every half second.
/// assert_eq!(start.elapsed(), std::time::Duration::from_secs(1));
/// # Ok(())
/// # }
/// ```
pub struct Throttle<C = SystemClock> {
    rate: f64,
    capacity: f64,
    /// How long after the first grant from a full bucket tokens start to
    /// accrue again (see [`with_margin`](Throttle::with_margin)).
    margin: Duration,
    clock: C,
    bucket: Mutex<Bucket>,
}

impl Throttle<SystemClock> {
    /// A bucket of `burst` tokens, full at the start, refilled at `rate`
    /// tokens per second: [`Throttle::of`] a [`Quota::new`].
    ///
    /// # Errors
    ///
    /// As [`Quota::new`]: a rate that is not finite or below one a day, or
    /// a burst of 0.
    pub fn new(rate: f64, burst: u32) -> Result<Self, QuotaError> {
        Ok(Self::of(Quota::new(rate, burst)?))
    }

    /// A bucket of `quota`'s burst, full at the start, refilled at its rate.
    pub fn of(quota: Quota) -> Self {
        Self::of_with_clock(quota, SystemClock::new())
    }

    /// The chapter's `Throttle(rate)`: the bucket starts empty, tokens
    /// accrue at `rate` per second from the first request on, and it holds
    /// at most `rate` tokens. Use it with [`consume`](Self::consume), as the
    /// chapter does, or with `acquire`.
    ///
    /// One difference from the listing: it adds tokens only once more than
    /// one has accrued; here they accrue continuously. A request can
    /// therefore succeed slightly earlier, never more often overall.
    ///
    /// # Errors
    ///
    /// A rate that is not finite or is below 1 (the bucket would hold less
    /// than one token).
    pub fn chapter(rate: f64) -> Result<Self, QuotaError> {
        Self::chapter_with_clock(rate, SystemClock::new())
    }
}

impl<C: Clock> Throttle<C> {
    /// [`Throttle::new`] with the given clock.
    ///
    /// # Errors
    ///
    /// As [`Throttle::new`].
    pub fn with_clock(rate: f64, burst: u32, clock: C) -> Result<Self, QuotaError> {
        Ok(Self::of_with_clock(Quota::new(rate, burst)?, clock))
    }

    /// [`Throttle::of`] with the given clock.
    pub fn of_with_clock(quota: Quota, clock: C) -> Self {
        let now = clock.now();
        let burst = f64::from(quota.burst());
        Throttle {
            rate: quota.rate(),
            capacity: burst,
            margin: Duration::ZERO,
            clock,
            bucket: Mutex::new(Bucket::new(burst, Some(now))),
        }
    }

    /// [`Throttle::chapter`] with the given clock.
    ///
    /// # Errors
    ///
    /// As [`Throttle::chapter`].
    pub fn chapter_with_clock(rate: f64, clock: C) -> Result<Self, QuotaError> {
        if !(rate.is_finite() && rate >= 1.0) {
            return Err(QuotaError::ChapterRate(rate));
        }
        Ok(Throttle { rate, capacity: rate, margin: Duration::ZERO, clock, bucket: Mutex::new(Bucket::new(0.0, None)) })
    }

    /// The same bucket, but when a grant takes the first token of a full
    /// bucket, tokens start to accrue again only `margin` later.
    ///
    /// For pacing against a server's own token bucket: the server's starts
    /// refilling when the burst's first request *arrives*, which may be
    /// later than it was sent (a new connection's handshake), while a
    /// later request on a warm connection arrives sooner. Paced on the
    /// client's clock alone, that request can reach the server a few
    /// milliseconds before its token there. A margin as long as the
    /// spread of those delays keeps the server's clock within the limit
    /// too, at the cost of `margin` once after each burst. The contract
    /// still holds: the margin only ever delays grants.
    ///
    /// ```
    /// use concur::Throttle;
    /// use concur::throttle::{Clock, FakeClock};
    /// use std::time::Duration;
    ///
    /// let clock = FakeClock::new();
    /// let t = Throttle::with_clock(2.0, 2, clock.clone())?.with_margin(Duration::from_millis(500));
    /// t.acquire();
    /// t.acquire(); // the burst
    /// t.acquire(); // one interval, plus the margin
    /// assert_eq!(clock.now(), Duration::from_secs(1));
    /// # Ok::<(), concur::QuotaError>(())
    /// ```
    pub fn with_margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// Tokens per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The most tokens the bucket holds: the burst, or the chapter's `rate`.
    pub fn capacity(&self) -> f64 {
        self.capacity
    }

    /// The throttle's clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Takes a token, blocking the thread until it is due. The token is
    /// reserved at once, so waiters are served in the order they asked.
    pub fn acquire(&self) {
        // Nothing can interrupt this sleep: no guard to give the slot back.
        let slot = self.take_slot();
        self.clock.sleep_until(slot.due);
    }

    /// [`acquire`](Self::acquire), unless `cancel` is cancelled first:
    /// then it returns at once (waking from its sleep), and the slot it had
    /// reserved is given back, so the next caller gets it.
    ///
    /// ```
    /// use concur::{CancelToken, Cancelled, Throttle};
    ///
    /// let throttle = Throttle::new(0.001, 1)?; // one token per 1000 s
    /// let cancel = CancelToken::new();
    /// assert_eq!(throttle.acquire_cancellable(&cancel), Ok(())); // the burst
    /// cancel.cancel();
    /// // Does not wait 1000 s, and takes nothing.
    /// assert_eq!(throttle.acquire_cancellable(&cancel), Err(Cancelled));
    /// # Ok::<(), concur::QuotaError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Cancelled`] if the token is cancelled before the slot is due.
    pub fn acquire_cancellable(&self, cancel: &CancelToken) -> Result<(), Cancelled> {
        // Checked first, so a cancelled run reserves nothing at all.
        if cancel.is_cancelled() {
            return Err(Cancelled);
        }
        let slot = self.reserve();
        // On `Err` the slot is dropped, which gives it back.
        self.clock.sleep_until_cancellable(slot.due, cancel)?;
        slot.keep();
        Ok(())
    }

    /// Takes a token, sleeping the task until it is due (with
    /// `tokio::time::sleep`, so it needs a tokio runtime with time enabled).
    ///
    /// The token is reserved on the first poll. If the future is dropped
    /// before the token is due (by a timeout, say), the slot is given back:
    /// a dropped acquire costs nothing.
    #[cfg(feature = "async")]
    pub async fn acquire_async(&self) {
        let slot = self.reserve();
        let wait = slot.due.saturating_sub(slot.now);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        slot.keep();
    }

    /// Takes a token if one is available now; never blocks.
    ///
    /// # Errors
    ///
    /// [`NotUntil`], saying when a token will be due.
    pub fn try_acquire(&self) -> Result<(), NotUntil> {
        let mut bucket = self.lock();
        let now = self.refill(&mut bucket);
        // A given-back slot is taken only at its own time (see the type's
        // docs); it may be due before the bucket's next token.
        if bucket.tokens >= 1.0 {
            // No debt, so no slot is waiting: nor any given back.
            self.take_token(&mut bucket, now);
            return Ok(());
        }
        // A given-back slot is taken only at its own time (see the type's
        // docs); it may be due before the bucket's next token.
        let freed = bucket.earliest_freed(now);
        if freed == Some(now) {
            bucket.take_freed(now);
            return Ok(());
        }
        let bucket_at = accrual_start(&bucket, now).saturating_add(secs((1.0 - bucket.tokens) / self.rate));
        let at = freed.map_or(bucket_at, |due| due.min(bucket_at));
        Err(NotUntil { wait: at.saturating_sub(now), at })
    }

    /// The chapter's `consume(amount)`: takes `amount` tokens and returns
    /// `amount` if that many are there, else takes nothing and returns 0.
    /// Never blocks.
    #[must_use = "0 means no token was taken"]
    pub fn consume(&self, amount: u32) -> u32 {
        let mut bucket = self.lock();
        self.refill(&mut bucket);
        if bucket.tokens >= f64::from(amount) {
            bucket.tokens -= f64::from(amount);
            amount
        } else {
            0
        }
    }

    /// Whether the bucket is full now: no reservation outstanding and no
    /// request within the last `capacity / rate` seconds. A full bucket of
    /// [`Throttle::new`] behaves exactly as a new one, so a holder of many
    /// throttles (one per client, say) may drop it and start afresh.
    pub fn is_full(&self) -> bool {
        let mut bucket = self.lock();
        self.refill(&mut bucket);
        bucket.tokens >= self.capacity
    }

    /// [`take_slot`](Self::take_slot), guarded: dropping the reservation
    /// before its time gives the slot back.
    fn reserve(&self) -> Reservation<'_, C> {
        let Taken { seq, now, due } = self.take_slot();
        Reservation { throttle: self, seq, now, due }
    }

    /// Takes a token if one is there; else the earliest given-back slot;
    /// else a token in debt, to wait for.
    fn take_slot(&self) -> Taken {
        let mut bucket = self.lock();
        let now = self.refill(&mut bucket);
        if bucket.tokens >= 1.0 {
            // No debt, so no slot is waiting: nor any given back.
            self.take_token(&mut bucket, now);
            return Taken { seq: None, now, due: now };
        }
        if let Some((seq, due)) = bucket.take_freed(now) {
            return Taken { seq: Some(seq), now, due };
        }
        bucket.tokens -= 1.0;
        let due = accrual_start(&bucket, now).saturating_add(secs(-bucket.tokens / self.rate));
        let seq = bucket.wait_for(due, now);
        Taken { seq: Some(seq), now, due }
    }

    /// Takes a token that is there; the first of a full bucket delays the
    /// accrual by the margin.
    fn take_token(&self, bucket: &mut Bucket, now: Duration) {
        if bucket.tokens >= self.capacity && !self.margin.is_zero() {
            bucket.last = Some(now.saturating_add(self.margin));
        }
        bucket.tokens -= 1.0;
    }

    /// Gives back the waiting slot `seq`, unless its time has come.
    fn give_back(&self, seq: u64) {
        let mut bucket = self.lock();
        let now = self.refill(&mut bucket);
        bucket.give_back(seq, now);
    }

    /// Adds the tokens accrued since the last request, up to the capacity,
    /// and gives the time now. Reads the clock under the lock, so that
    /// requests are accounted in the order of their times.
    fn refill(&self, bucket: &mut Bucket) -> Duration {
        let now = self.clock.now();
        let last = *bucket.last.get_or_insert(now);
        let elapsed = now.saturating_sub(last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.capacity);
        bucket.last = Some(now.max(last));
        now
    }

    fn lock(&self) -> MutexGuard<'_, Bucket> {
        // The bucket is updated with plain arithmetic that cannot panic, so
        // a poisoned lock still guards consistent numbers.
        sync::lock(&self.bucket)
    }
}

/// When the bucket's tokens (counted as of its `last`) accrue from: now,
/// or later during a margin.
fn accrual_start(bucket: &Bucket, now: Duration) -> Duration {
    bucket.last.map_or(now, |last| last.max(now))
}

/// A slot just taken.
struct Taken {
    /// The waiting slot; `None` for a token granted at once.
    seq: Option<u64>,
    /// The clock's time when it was taken.
    now: Duration,
    /// When the token is granted.
    due: Duration,
}

/// A reserved slot. Dropped without [`keep`](Reservation::keep) (a
/// cancelled or dropped waiter), it gives the slot back.
struct Reservation<'a, C: Clock> {
    throttle: &'a Throttle<C>,
    /// The waiting slot; `None` for a token granted at once, or once kept.
    seq: Option<u64>,
    /// The clock's time when the reservation was made (the async acquire
    /// sleeps from it).
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    now: Duration,
    /// When the token is granted.
    due: Duration,
}

impl<C: Clock> Reservation<'_, C> {
    /// The token is the waiter's: nothing to give back.
    fn keep(mut self) {
        self.seq = None;
    }
}

impl<C: Clock> Drop for Reservation<'_, C> {
    fn drop(&mut self) {
        if let Some(seq) = self.seq.take() {
            self.throttle.give_back(seq);
        }
    }
}

impl<C> fmt::Debug for Throttle<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttle")
            .field("rate", &self.rate)
            .field("capacity", &self.capacity)
            .field("margin", &self.margin)
            .finish_non_exhaustive()
    }
}
