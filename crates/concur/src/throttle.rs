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
//! The clock is injectable ([`Clock`]): [`SystemClock`] for real use,
//! [`FakeClock`] for tests that move time by hand.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// A source of time for a [`Throttle`].
pub trait Clock: Send + Sync {
    /// Time since this clock's origin. Never decreases.
    fn now(&self) -> Duration;
    /// Blocks the calling thread until [`now`](Clock::now) is at least
    /// `deadline`. A fake clock moves its time there instead.
    fn sleep_until(&self, deadline: Duration);
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Duration {
        (**self).now()
    }
    fn sleep_until(&self, deadline: Duration) {
        (**self).sleep_until(deadline);
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
}

/// A clock that moves only when told: by [`advance`](FakeClock::advance),
/// or by a sleep, which jumps the time to the sleep's deadline at once.
/// Clones share one time.
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
            bucket: Mutex::new(Bucket { tokens: f64::from(burst), last: Some(now) }),
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
        Ok(Throttle { rate, capacity: rate, clock, bucket: Mutex::new(Bucket { tokens: 0.0, last: None }) })
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
        let (_, due) = self.reserve();
        self.clock.sleep_until(due);
    }

    /// Takes a token, sleeping the task until it is due (with
    /// `tokio::time::sleep`, so it needs a tokio runtime with time enabled).
    ///
    /// The token is reserved on the first poll; if the future is dropped
    /// while it sleeps, that token is forfeited, never granted twice.
    pub async fn acquire_async(&self) {
        let (now, due) = self.reserve();
        let wait = due.saturating_sub(now);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes a token if one is available now; never blocks.
    ///
    /// # Errors
    ///
    /// [`NotUntil`], saying when a token will be due.
    pub fn try_acquire(&self) -> Result<(), NotUntil> {
        let mut bucket = self.lock();
        let now = self.refill(&mut bucket);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = secs((1.0 - bucket.tokens) / self.rate);
            Err(NotUntil { wait, at: now.saturating_add(wait) })
        }
    }

    /// The chapter's `consume(amount)`: takes `amount` tokens and returns
    /// `amount` if that many are there, else takes nothing and returns 0.
    /// Never blocks.
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

    /// Takes a token, in debt if need be. Gives the clock's time of the
    /// reservation and when the token is due.
    fn reserve(&self) -> (Duration, Duration) {
        let mut bucket = self.lock();
        let now = self.refill(&mut bucket);
        bucket.tokens -= 1.0;
        let due = if bucket.tokens >= 0.0 { now } else { now.saturating_add(secs(-bucket.tokens / self.rate)) };
        (now, due)
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

impl<C> fmt::Debug for Throttle<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttle").field("rate", &self.rate).field("capacity", &self.capacity).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::within;
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
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![Just(Op::Acquire), Just(Op::Try), (0u32..4).prop_map(Op::Consume)]
    }

    /// Runs `ops`, each after advancing the clock, and gives the grant
    /// instants (one per token).
    fn run(t: &Throttle<FakeClock>, ops: &[(u64, Op)]) -> Vec<Duration> {
        let clock = t.clock().clone();
        let mut grants = Vec::new();
        for (gap_us, op) in ops {
            clock.advance(Duration::from_micros(*gap_us));
            let granted = match op {
                Op::Acquire => {
                    t.acquire();
                    1
                }
                Op::Try => u32::from(t.try_acquire().is_ok()),
                Op::Consume(n) => t.consume(*n),
            };
            grants.extend(std::iter::repeat_n(clock.now(), granted as usize));
        }
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
