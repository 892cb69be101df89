//! The throttle's unit tests, on the fake clock where time matters.

use super::*;
use crate::test_support::{LIMIT, within};
use std::sync::{Arc, Mutex};
use std::thread;

pub(super) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// At most `capacity + rate·w` grants in any window of length `w`.
pub(super) fn assert_windows(grants: &[Duration], rate: f64, capacity: f64) {
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
        assert!(matches!(err, QuotaError::Rate(r) if r.to_bits() == rate.to_bits()));
    }
    assert_eq!(Throttle::new(1.0, 0).expect_err("bad burst"), QuotaError::Burst(0));
    assert_eq!(
        Throttle::new(-2.5, 1).expect_err("bad rate").to_string(),
        "invalid rate -2.5: expected a number per second, at least one a day (0.0000116)"
    );
    assert_eq!(Throttle::chapter(0.5).expect_err("bad rate"), QuotaError::ChapterRate(0.5));
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
    assert_eq!(t.lock().waiting(), 0);
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

#[cfg(feature = "async")]
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

#[cfg(feature = "async")]
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

#[cfg(feature = "async")]
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

#[test]
fn a_margin_delays_the_accrual_once_per_burst() {
    let clock = FakeClock::new();
    let t = Throttle::with_clock(2.0, 4, clock.clone()).expect("valid").with_margin(Duration::from_millis(500));
    for _ in 0..4 {
        t.acquire();
    }
    assert_eq!(clock.now(), Duration::ZERO, "the burst at once");
    t.acquire();
    assert_eq!(clock.now(), Duration::from_millis(1000), "the fifth a margin after its token");
    t.acquire();
    assert_eq!(clock.now(), Duration::from_millis(1500), "then the plain rate");
    assert_eq!(t.try_acquire().expect_err("in debt").earliest(), Duration::from_millis(2000));
    // Full again after an idle spell: the next burst pays the margin again.
    clock.advance(Duration::from_secs(10));
    let start = clock.now();
    for _ in 0..5 {
        t.acquire();
    }
    assert_eq!(clock.now() - start, Duration::from_millis(1000));
}
