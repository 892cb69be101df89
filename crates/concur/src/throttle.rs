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
//! [`acquire_async`] future) gives its slot back, so cancellation never
//! costs a token; see [`Throttle`] for how that keeps the rate.
//!
//! The clock is injectable ([`Clock`]): [`SystemClock`] for real use,
//! [`FakeClock`] for tests that move time by hand.
//!
//! [`acquire_cancellable`]: Throttle::acquire_cancellable
//! [`acquire_async`]: Throttle::acquire_async

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::cancel::{CancelToken, Cancelled};

/// A source of time for a [`Throttle`].
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
    origin: tokio::time::Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        SystemClock { origin: tokio::time::Instant::now() }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        tokio::time::Instant::now().saturating_duration_since(self.origin)
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
/// use concur::{Clock, FakeClock, Throttle};
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
/// # Ok::<(), concur::ThrottleError>(())
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

/// Seconds as a duration, saturating instead of panicking on huge values.
fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX)
}

/// A parameter a [`Throttle`] cannot work with.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ThrottleError {
    /// The rate must be a finite number of tokens per second above 0.
    #[error("throttle rate must be a finite number of tokens per second above 0, got {0}")]
    Rate(f64),
    /// The burst must be at least one token.
    #[error("throttle burst must be at least 1 token, got {0}")]
    Burst(u32),
    /// The chapter's bucket holds at most `rate` tokens, so below 1 it could
    /// never grant a single one.
    #[error("the chapter's throttle needs a rate of at least 1 token per second, got {0}")]
    ChapterRate(f64),
}

/// Refused by [`Throttle::try_acquire`]: no token is available yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limited: the next token is due in {wait:?}")]
pub struct NotUntil {
    wait: Duration,
    at: Duration,
}

impl NotUntil {
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
/// waiters get distinct slots, served in the order they asked, and nobody
/// polls.
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
/// # async fn main() -> Result<(), concur::ThrottleError> {
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
    clock: C,
    bucket: Mutex<Bucket>,
}

/// Tokens in the bucket as of `last`. Negative tokens are reservations not
/// yet due.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    /// `None` until the first request, for the chapter's "from the first
    /// request on".
    last: Option<Duration>,
    /// The reservations that had to wait, in the order they were made (so
    /// by due time, and by `seq`), until their time has passed.
    waiting: VecDeque<Slot>,
    /// How many of `waiting` were given back and not taken again.
    freed: usize,
    /// The `seq` of the next reservation that has to wait.
    next_seq: u64,
}

/// A reservation that had to wait.
#[derive(Debug, Clone, Copy)]
struct Slot {
    seq: u64,
    due: Duration,
    /// Given back by its waiter; free for the next reservation.
    freed: bool,
}

impl Bucket {
    fn new(tokens: f64, last: Option<Duration>) -> Self {
        Bucket { tokens, last, waiting: VecDeque::new(), freed: 0, next_seq: 0 }
    }

    /// Forgets the slots whose time has passed: granted, or given back and
    /// not taken in time.
    fn forget_past(&mut self, now: Duration) {
        while let Some(slot) = self.waiting.front()
            && slot.due < now
        {
            if slot.freed {
                self.freed -= 1;
            }
            self.waiting.pop_front();
        }
    }

    /// The earliest given-back slot not yet past, if any.
    fn earliest_freed(&mut self, now: Duration) -> Option<&mut Slot> {
        if self.freed == 0 {
            return None;
        }
        self.forget_past(now);
        self.waiting.iter_mut().find(|slot| slot.freed)
    }
}

impl Throttle<SystemClock> {
    /// A bucket of `burst` tokens, full at the start, refilled at `rate`
    /// tokens per second.
    ///
    /// # Errors
    ///
    /// A rate that is not finite and above 0, or a burst of 0.
    pub fn new(rate: f64, burst: u32) -> Result<Self, ThrottleError> {
        Self::with_clock(rate, burst, SystemClock::new())
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
    pub fn chapter(rate: f64) -> Result<Self, ThrottleError> {
        Self::chapter_with_clock(rate, SystemClock::new())
    }
}

impl<C: Clock> Throttle<C> {
    /// [`Throttle::new`] with the given clock.
    ///
    /// # Errors
    ///
    /// As [`Throttle::new`].
    pub fn with_clock(rate: f64, burst: u32, clock: C) -> Result<Self, ThrottleError> {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(ThrottleError::Rate(rate));
        }
        if burst == 0 {
            return Err(ThrottleError::Burst(burst));
        }
        let now = clock.now();
        Ok(Throttle {
            rate,
            capacity: f64::from(burst),
            clock,
            bucket: Mutex::new(Bucket::new(f64::from(burst), Some(now))),
        })
    }

    /// [`Throttle::chapter`] with the given clock.
    ///
    /// # Errors
    ///
    /// As [`Throttle::chapter`].
    pub fn chapter_with_clock(rate: f64, clock: C) -> Result<Self, ThrottleError> {
        if !(rate.is_finite() && rate >= 1.0) {
            return Err(ThrottleError::ChapterRate(rate));
        }
        Ok(Throttle { rate, capacity: rate, clock, bucket: Mutex::new(Bucket::new(0.0, None)) })
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
        let slot = self.reserve();
        self.clock.sleep_until(slot.due);
        slot.keep();
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
    /// # Ok::<(), concur::ThrottleError>(())
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
        let freed = match bucket.earliest_freed(now) {
            Some(slot) if slot.due == now => {
                slot.freed = false;
                bucket.freed -= 1;
                return Ok(());
            }
            Some(slot) => Some(slot.due),
            None => None,
        };
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let bucket_at = now.saturating_add(secs((1.0 - bucket.tokens) / self.rate));
            let at = freed.map_or(bucket_at, |due| due.min(bucket_at));
            Err(NotUntil { wait: at.saturating_sub(now), at })
        }
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

    /// Takes the earliest given-back slot, or else a token, in debt if need
    /// be. Dropping the reservation before its time gives the slot back.
    fn reserve(&self) -> Reservation<'_, C> {
        let mut bucket = self.lock();
        let now = self.refill(&mut bucket);
        if let Some(slot) = bucket.earliest_freed(now) {
            slot.freed = false;
            let (seq, due) = (slot.seq, slot.due);
            bucket.freed -= 1;
            return Reservation { throttle: self, seq: Some(seq), now, due };
        }
        bucket.tokens -= 1.0;
        if bucket.tokens >= 0.0 {
            // Granted now: nothing to give back.
            return Reservation { throttle: self, seq: None, now, due: now };
        }
        let due = now.saturating_add(secs(-bucket.tokens / self.rate));
        bucket.forget_past(now);
        let seq = bucket.next_seq;
        bucket.next_seq += 1;
        bucket.waiting.push_back(Slot { seq, due, freed: false });
        Reservation { throttle: self, seq: Some(seq), now, due }
    }

    /// Gives back the waiting slot `seq`, unless its time has come.
    fn give_back(&self, seq: u64) {
        let mut bucket = self.lock();
        let now = self.refill(&mut bucket);
        bucket.forget_past(now);
        let Ok(i) = bucket.waiting.binary_search_by_key(&seq, |slot| slot.seq) else {
            return; // its time passed: granted
        };
        if bucket.waiting[i].due <= now {
            return; // due now: granted
        }
        if i + 1 < bucket.waiting.len() {
            // Later waiters sleep until their slots: keep this one aside.
            bucket.waiting[i].freed = true;
            bucket.freed += 1;
            return;
        }
        // The latest reservation, still in debt: undo it, and the
        // given-back slots this leaves at the end, newest first. Refills
        // since then added to a negative balance, so none was capped and
        // the undoing is exact.
        bucket.waiting.pop_back();
        bucket.tokens += 1.0;
        while let Some(slot) = bucket.waiting.back()
            && slot.freed
            && slot.due > now
        {
            bucket.waiting.pop_back();
            bucket.freed -= 1;
            bucket.tokens += 1.0;
        }
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
        self.bucket.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A reserved slot. Dropped without [`keep`](Reservation::keep) (a
/// cancelled or dropped waiter), it gives the slot back.
struct Reservation<'a, C: Clock> {
    throttle: &'a Throttle<C>,
    /// The waiting slot; `None` for a token granted at once, or once kept.
    seq: Option<u64>,
    /// The clock's time when the reservation was made.
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
        f.debug_struct("Throttle").field("rate", &self.rate).field("capacity", &self.capacity).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{LIMIT, within};
    use proptest::prelude::*;
    use std::thread;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// At most `capacity + rate·w` grants in any window of length `w`.
    fn assert_windows(grants: &[Duration], rate: f64, capacity: f64) {
        for i in 0..grants.len() {
            for j in i..grants.len() {
                let w = grants[j].saturating_sub(grants[i]).as_secs_f64();
                let count = (j - i + 1) as f64;
                let bound = capacity + rate * w;
                assert!(count <= bound + 1e-6, "{count} grants in {w} s from {:?}; bound {bound}", grants[i]);
            }
        }
    }

    #[test]
    fn bad_parameters_are_named() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = Throttle::new(rate, 1).expect_err("bad rate");
            assert!(matches!(err, ThrottleError::Rate(r) if r.to_bits() == rate.to_bits()));
        }
        assert_eq!(Throttle::new(1.0, 0).expect_err("bad burst"), ThrottleError::Burst(0));
        assert_eq!(
            Throttle::new(-2.5, 1).expect_err("bad rate").to_string(),
            "throttle rate must be a finite number of tokens per second above 0, got -2.5"
        );
        assert_eq!(Throttle::chapter(0.5).expect_err("bad rate"), ThrottleError::ChapterRate(0.5));
        assert!(Throttle::chapter(f64::NAN).is_err());
    }

    #[test]
    fn burst_then_rate() {
        let clock = FakeClock::new();
        let t = Throttle::with_clock(10.0, 3, clock.clone()).expect("valid");
        let mut grants = Vec::new();
        for _ in 0..6 {
            t.acquire();
            grants.push(clock.now());
        }
        assert_eq!(grants, [0, 0, 0, 100, 200, 300].map(ms));
    }

    #[test]
    fn try_acquire_says_when() {
        let clock = FakeClock::new();
        let t = Throttle::with_clock(4.0, 1, clock.clone()).expect("valid");
        assert_eq!(t.try_acquire(), Ok(()));
        clock.advance(ms(100));
        let refused = t.try_acquire().expect_err("bucket empty");
        assert_eq!(refused.wait_time(), ms(150));
        assert_eq!(refused.earliest(), ms(250));
        clock.advance(ms(150));
        assert_eq!(t.try_acquire(), Ok(()));
    }

    #[test]
    fn a_refused_try_takes_nothing() {
        let clock = FakeClock::new();
        let t = Throttle::with_clock(1.0, 1, clock.clone()).expect("valid");
        t.acquire();
        for _ in 0..5 {
            assert!(t.try_acquire().is_err());
        }
        clock.advance(ms(1000));
        assert_eq!(t.try_acquire(), Ok(()));
    }

    #[test]
    fn full_again_once_every_token_has_accrued() {
        let clock = FakeClock::new();
        let t = Throttle::with_clock(10.0, 2, clock.clone()).expect("valid");
        assert!(t.is_full());
        assert_eq!(t.try_acquire(), Ok(()));
        assert!(!t.is_full());
        assert_eq!(t.try_acquire(), Ok(()));
        clock.advance(ms(150));
        assert!(!t.is_full());
        clock.advance(ms(50));
        assert!(t.is_full());
    }

    #[test]
    fn waiters_are_served_after_reservations() {
        let clock = FakeClock::new();
        let t = Throttle::with_clock(1.0, 1, clock.clone()).expect("valid");
        t.acquire(); // t = 0
        t.acquire(); // reserved and slept to t = 1
        assert_eq!(clock.now(), ms(1000));
        // The bucket is empty at 1 s: a try must wait a whole second.
        assert_eq!(t.try_acquire().map_err(|e| e.wait_time()), Err(ms(1000)));
    }

    #[test]
    fn chapter_semantics() {
        let clock = FakeClock::new();
        clock.advance(Duration::from_secs(100)); // before the first request: no accrual
        let t = Throttle::chapter_with_clock(2.0, clock.clone()).expect("valid");
        assert_eq!(t.consume(1), 0, "no initial burst");
        clock.advance(ms(499));
        assert_eq!(t.consume(1), 0);
        clock.advance(ms(1));
        assert_eq!(t.consume(1), 1, "tokens accrue from the first request on");
        clock.advance(Duration::from_secs(60));
        assert_eq!(t.consume(3), 0, "the bucket holds at most `rate` tokens");
        assert_eq!(t.consume(2), 2);
        assert_eq!(t.consume(1), 0);
        assert_eq!(t.capacity(), 2.0);
        assert_eq!(t.rate(), 2.0);
    }

    #[test]
    fn chapter_throttle_also_acquires() {
        let clock = FakeClock::new();
        let t = Throttle::chapter_with_clock(4.0, clock.clone()).expect("valid");
        t.acquire();
        assert_eq!(clock.now(), ms(250), "the first token is due 1/rate after the first request");
    }

    #[test]
    fn system_clock_acquires() {
        within(|| {
            let t = Throttle::new(1000.0, 2).expect("valid");
            for _ in 0..5 {
                t.acquire();
            }
        });
    }

    #[test]
    fn long_run_rate_is_exact() {
        for (rate, burst) in [(3.0, 1), (7.5, 4), (1000.0, 10), (0.25, 2)] {
            let clock = FakeClock::new();
            let t = Throttle::with_clock(rate, burst, clock.clone()).expect("valid");
            let n = 5_000;
            for _ in 0..n {
                t.acquire();
            }
            let want = f64::from(n - burst) / rate;
            let got = clock.now().as_secs_f64();
            assert!((got - want).abs() <= 1e-6 * want.max(1.0), "rate {rate}: {got} s, want {want} s");
        }
    }

    /// A fake clock that records every deadline slept to: with `acquire`,
    /// the instants tokens were granted.
    #[derive(Default)]
    struct Recording {
        clock: FakeClock,
        deadlines: Mutex<Vec<Duration>>,
    }

    impl Clock for Recording {
        fn now(&self) -> Duration {
            self.clock.now()
        }
        fn sleep_until(&self, deadline: Duration) {
            self.deadlines.lock().expect("not poisoned").push(deadline);
            self.clock.sleep_until(deadline);
        }
    }

    #[test]
    fn concurrent_waiters_get_distinct_slots() {
        let rate = 50.0;
        let recording = Arc::new(Recording::default());
        let t = Arc::new(Throttle::with_clock(rate, 1, Arc::clone(&recording)).expect("valid"));
        within(move || {
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    let t = Arc::clone(&t);
                    thread::spawn(move || (0..50).for_each(|_| t.acquire()))
                })
                .collect();
            for th in threads {
                th.join().expect("thread finished");
            }
        });
        let mut grants = recording.deadlines.lock().expect("not poisoned").clone();
        assert_eq!(grants.len(), 400);
        grants.sort();
        for pair in grants.windows(2) {
            let gap = (pair[1] - pair[0]).as_secs_f64();
            assert!(gap >= 1.0 / rate - 1e-8, "grants {pair:?} closer than 1/rate");
        }
        assert_windows(&grants, rate, 1.0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Acquire,
        Try,
        Consume(u32),
        /// A waiter that has reserved its slot and not yet woken (an
        /// `acquire_async` future, a blocked `acquire_cancellable`).
        Reserve,
        /// The waiter at this index (modulo how many there are) gives up:
        /// its slot is given back unless its time has come.
        GiveUp(usize),
        /// `acquire_cancellable` with a token already cancelled.
        AcquireCancelled,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Acquire),
            2 => Just(Op::Try),
            1 => (0u32..4).prop_map(Op::Consume),
            3 => Just(Op::Reserve),
            3 => any::<usize>().prop_map(Op::GiveUp),
            1 => Just(Op::AcquireCancelled),
        ]
    }

    /// Runs `ops`, each after advancing the clock, and gives the grant
    /// instants (one per token), in order. A waiter that gives up before its
    /// slot is due is not granted; every other waiter is granted at its
    /// slot's time.
    fn run(t: &Throttle<FakeClock>, ops: &[(u64, Op)]) -> Vec<Duration> {
        let clock = t.clock().clone();
        let cancelled = CancelToken::new();
        cancelled.cancel();
        let mut grants = Vec::new();
        let mut waiters: Vec<Reservation<'_, FakeClock>> = Vec::new();
        for (gap_us, op) in ops {
            clock.advance(Duration::from_micros(*gap_us));
            let granted = match op {
                Op::Acquire => {
                    t.acquire();
                    1
                }
                Op::Try => u32::from(t.try_acquire().is_ok()),
                Op::Consume(n) => t.consume(*n),
                Op::Reserve => {
                    waiters.push(t.reserve());
                    0
                }
                Op::GiveUp(i) => {
                    if !waiters.is_empty() {
                        let slot = waiters.swap_remove(i % waiters.len());
                        if slot.due <= clock.now() {
                            grants.push(slot.due);
                        }
                    }
                    0
                }
                Op::AcquireCancelled => {
                    assert_eq!(t.acquire_cancellable(&cancelled), Err(Cancelled));
                    0
                }
            };
            grants.extend(std::iter::repeat_n(clock.now(), granted as usize));
        }
        for slot in waiters {
            grants.push(slot.due);
            slot.keep();
        }
        grants.sort();
        grants
    }

    proptest! {
        #[test]
        fn no_window_exceeds_burst_plus_rate_times_length(
            rate in 0.1f64..500.0,
            burst in 1u32..10,
            ops in prop::collection::vec((0u64..400_000, op()), 1..120),
        ) {
            let t = Throttle::with_clock(rate, burst, FakeClock::new()).expect("valid");
            assert_windows(&run(&t, &ops), rate, f64::from(burst));
        }

        /// Waiters giving up among all the other calls, with gaps measured
        /// in slots, so that the grants are packed close to the bound.
        #[test]
        fn waiters_giving_up_never_crowd_the_grants(
            rate in 0.5f64..100.0,
            burst in 1u32..4,
            ops in prop::collection::vec((0u64..1500, op()), 1..200),
        ) {
            let t = Throttle::with_clock(rate, burst, FakeClock::new()).expect("valid");
            // Gaps of 0 to 1.5 slots, in microseconds.
            let ops: Vec<_> = ops.into_iter().map(|(milli_slots, op)| ((milli_slots as f64 * 1e3 / rate) as u64, op)).collect();
            assert_windows(&run(&t, &ops), rate, f64::from(burst));
        }

        #[test]
        fn chapter_windows_are_bounded_by_rate(
            rate in 1.0f64..100.0,
            ops in prop::collection::vec((0u64..400_000, op()), 1..120),
        ) {
            let t = Throttle::chapter_with_clock(rate, FakeClock::new()).expect("valid");
            assert_windows(&run(&t, &ops), rate, rate);
        }

        #[test]
        fn acquires_alone_keep_the_rate_exactly(
            rate in 0.1f64..1000.0,
            burst in 1u32..10,
            n in 20u32..300,
        ) {
            let clock = FakeClock::new();
            let t = Throttle::with_clock(rate, burst, clock.clone()).expect("valid");
            for _ in 0..n {
                t.acquire();
            }
            let want = f64::from(n.saturating_sub(burst)) / rate;
            let got = clock.now().as_secs_f64();
            prop_assert!((got - want).abs() <= 1e-6 * want.max(1.0), "{} vs {}", got, want);
        }
    }

    #[test]
    fn a_slot_given_back_at_the_end_is_undone() {
        let clock = FakeClock::new();
        let t = Throttle::with_clock(1.0, 1, clock.clone()).expect("valid");
        t.acquire(); // the burst, at 0
        let waiters: Vec<_> = (0..5).map(|_| t.reserve()).collect();
        assert_eq!(waiters.iter().map(|w| w.due).collect::<Vec<_>>(), [1, 2, 3, 4, 5].map(|s| ms(1000 * s)));
        // Given back oldest first: all but the last are kept aside, and the
        // last undoes them all.
        drop(waiters);
        assert_eq!(t.lock().waiting.len(), 0);
        t.acquire();
        assert_eq!(clock.now(), ms(1000), "the slot right after the granted ones");
    }

    #[test]
    fn a_slot_given_back_in_the_middle_goes_to_the_next_asker() {
        let clock = FakeClock::new();
        let t = Throttle::with_clock(1.0, 1, clock.clone()).expect("valid");
        t.acquire(); // the burst, at 0
        let first = t.reserve();
        let second = t.reserve();
        let third = t.reserve();
        assert_eq!((first.due, second.due, third.due), (ms(1000), ms(2000), ms(3000)));
        drop(second);
        let next = t.reserve();
        assert_eq!(next.due, ms(2000), "takes the slot given back, not one after the last");
        let after = t.reserve();
        assert_eq!(after.due, ms(4000));
        // A given-back slot is offered to `try_acquire` too, at its time.
        drop(next);
        clock.advance(ms(1500));
        let refused = t.try_acquire().expect_err("not yet");
        assert_eq!(refused.earliest(), ms(2000));
        clock.advance(ms(500));
        assert_eq!(t.try_acquire(), Ok(()));
        assert!(t.try_acquire().is_err(), "taken once");
        for w in [first, third, after] {
            w.keep();
        }
    }

    #[test]
    fn a_slot_given_back_is_never_granted_late() {
        let clock = FakeClock::new();
        let t = Throttle::with_clock(1.0, 1, clock.clone()).expect("valid");
        t.acquire(); // the burst, at 0
        let first = t.reserve();
        let second = t.reserve();
        drop(first);
        // The freed slot (1 s) has passed: granting it at 1.5 s would put
        // two grants within half a second of each other.
        clock.advance(ms(1500));
        let next = t.reserve();
        assert_eq!(next.due, ms(3000));
        second.keep();
        next.keep();
    }

    #[test]
    fn a_slot_whose_time_has_come_is_not_given_back() {
        let clock = FakeClock::new();
        let t = Throttle::with_clock(1.0, 1, clock.clone()).expect("valid");
        t.acquire();
        let waiter = t.reserve();
        clock.advance(ms(1000));
        drop(waiter); // due now: granted, though its waiter did not take it
        t.acquire();
        assert_eq!(clock.now(), ms(2000));
    }

    #[test]
    fn a_cancelled_token_acquires_nothing() {
        let clock = FakeClock::new();
        let t = Throttle::with_clock(1.0, 1, clock.clone()).expect("valid");
        let cancel = CancelToken::new();
        cancel.cancel();
        assert_eq!(t.acquire_cancellable(&cancel), Err(Cancelled));
        assert!(t.is_full(), "checked before reserving");
        assert_eq!(t.acquire_cancellable(&CancelToken::new()), Ok(()));
        assert_eq!(t.acquire_cancellable(&CancelToken::new()), Ok(()));
        assert_eq!(clock.now(), ms(1000), "an uncancelled token waits as `acquire` does");
    }

    /// The real clock, announcing each cancellable sleep's deadline, so a
    /// test knows when a waiter has reserved its slot and gone to sleep.
    struct Announcing {
        clock: SystemClock,
        sleeps: crossbeam_channel::Sender<Duration>,
    }

    impl Clock for Announcing {
        fn now(&self) -> Duration {
            self.clock.now()
        }
        fn sleep_until(&self, deadline: Duration) {
            self.clock.sleep_until(deadline);
        }
        fn sleep_until_cancellable(&self, deadline: Duration, cancel: &CancelToken) -> Result<(), Cancelled> {
            self.sleeps.send(deadline).expect("test listens");
            self.clock.sleep_until_cancellable(deadline, cancel)
        }
    }

    #[test]
    fn a_cancelled_blocking_acquire_returns_at_once_and_gives_its_slot_back() {
        let (sleeps, asleep) = crossbeam_channel::unbounded();
        // One token every two minutes.
        let t = Arc::new(
            Throttle::with_clock(1.0 / 120.0, 1, Announcing { clock: SystemClock::new(), sleeps }).expect("valid"),
        );
        t.acquire();
        // A waiter blocks on a slot two minutes away, and is cancelled.
        let wait_in_thread = |cancel: &CancelToken| {
            let (t, cancel) = (Arc::clone(&t), cancel.clone());
            thread::spawn(move || t.acquire_cancellable(&cancel))
        };
        let cancel = CancelToken::new();
        let waiter = wait_in_thread(&cancel);
        let slot = asleep.recv_timeout(LIMIT).expect("the waiter sleeps");
        assert!(slot > Duration::from_secs(100), "{slot:?}");
        cancel.cancel();
        assert_eq!(within(move || waiter.join().expect("no panic")), Err(Cancelled));
        // The next waiter gets that slot, not the one after it.
        let cancel = CancelToken::new();
        let next = wait_in_thread(&cancel);
        let next_slot = asleep.recv_timeout(LIMIT).expect("the next waiter sleeps");
        assert!(next_slot.abs_diff(slot) < ms(1), "{next_slot:?} is not {slot:?}");
        cancel.cancel();
        assert_eq!(within(move || next.join().expect("no panic")), Err(Cancelled));
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_async_acquires_give_their_slots_back() {
        let t = Arc::new(Throttle::new(10.0, 1).expect("valid"));
        let start = tokio::time::Instant::now();
        t.acquire_async().await; // the burst, at 0
        // Twenty waiters with a timeout of 250 ms: two are granted (at 100
        // and 200 ms), eighteen give up, in whatever order.
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let t = Arc::clone(&t);
            tasks.spawn(async move { tokio::time::timeout(ms(250), t.acquire_async()).await.is_ok() });
        }
        let mut granted = 0;
        while let Some(done) = tasks.join_next().await {
            granted += u32::from(done.expect("task finished"));
        }
        assert_eq!((granted, start.elapsed()), (2, ms(250)));
        // The next caller gets the slot right after the granted ones, not
        // eighteen slots later.
        t.acquire_async().await;
        assert_eq!(start.elapsed(), ms(300));
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_async_sleeps_in_tokio_time() {
        let t = Throttle::new(10.0, 2).expect("valid");
        let start = tokio::time::Instant::now();
        let mut grants = Vec::new();
        for _ in 0..7 {
            t.acquire_async().await;
            grants.push(start.elapsed());
        }
        assert_eq!(grants, [0, 0, 100, 200, 300, 400, 500].map(ms));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_async_waiters_get_distinct_slots() {
        let t = Arc::new(Throttle::new(20.0, 1).expect("valid"));
        let start = tokio::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let t = Arc::clone(&t);
            tasks.spawn(async move {
                t.acquire_async().await;
                start.elapsed()
            });
        }
        let mut grants = Vec::new();
        while let Some(done) = tasks.join_next().await {
            grants.push(done.expect("task finished"));
        }
        grants.sort();
        assert_eq!(grants, (0..10).map(|i| ms(50 * i)).collect::<Vec<_>>());
    }
}
