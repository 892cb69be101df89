//! The adaptive rate's unit tests, on the fake clock (or tokio's paused
//! time).

use super::*;
use crate::adaptive::{AdaptiveConcurrency, ConcurrencyConfig};
use crate::test_support::{LIMIT, within};
use crate::throttle::FakeClock;
use std::sync::Mutex;
use std::thread;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn rate_on(config: RateConfig) -> (AdaptiveRate<FakeClock>, FakeClock) {
    let clock = FakeClock::new();
    (AdaptiveRate::with_clock(config, clock.clone()), clock)
}

/// Takes tokens (the fake clock jumps to each) and records a success for
/// each, until `until`.
fn succeed_until(rate: &AdaptiveRate<FakeClock>, until: Duration) {
    let never = CancelToken::new();
    while rate.clock().now() < until {
        rate.acquire_cancellable(&never).expect("not cancelled");
        rate.record(RateSignal::Success);
    }
}

#[test]
fn rate_rises_while_successes_come() {
    let (rate, _) = rate_on(RateConfig::default());
    let changes = Arc::new(Mutex::new(Vec::new()));
    let rate = rate.on_change({
        let changes = changes.clone();
        move |c| changes.lock().expect("not poisoned").push(c.clone())
    });
    assert_eq!(rate.rate(), 1.0);
    succeed_until(&rate, Duration::from_secs(5));
    // +1/s per second of success: 1, 2, 3, 4, 5 (some seconds take two
    // grants to notice, so at least four steps).
    assert!(rate.rate() >= 4.0, "{}", rate.rate());
    let changes = changes.lock().expect("not poisoned");
    assert!(changes.len() >= 3);
    assert!(changes.iter().all(|c| c.to > c.from && c.why == "no 429 for an interval"), "{changes:?}");
    assert_eq!(changes[0], RateChange { from: 1.0, to: 2.0, why: "no 429 for an interval" });
}

#[test]
fn an_idle_caller_does_not_raise_the_rate() {
    let (rate, clock) = rate_on(RateConfig { initial: 10.0, ..RateConfig::default() });
    // Answers come, but the caller takes one token a second of the ten.
    for _ in 0..10 {
        rate.try_acquire().expect("a token a second is always there");
        clock.advance(Duration::from_secs(1));
        rate.record(RateSignal::Success);
    }
    assert_eq!(rate.rate(), 10.0);
}

#[test]
fn a_429_cuts_by_the_factor_and_nothing_is_granted_before_retry_after() {
    let (rate, clock) = rate_on(RateConfig { initial: 4.0, ..RateConfig::default() });
    rate.try_acquire().expect("the burst");
    clock.advance(ms(100));
    rate.record(RateSignal::Limited { retry_after: Some(Duration::from_secs(2)) });
    // Nothing delivered yet: the plain factor.
    assert_eq!(rate.rate(), 2.0);
    assert_eq!(rate.limited(), 1);
    let refused = rate.try_acquire().expect_err("held");
    assert_eq!(refused.earliest(), ms(2100));
    clock.advance(ms(1999));
    assert!(rate.try_acquire().is_err(), "still held 1 ms before the end");
    clock.advance(ms(1));
    assert_eq!(rate.try_acquire(), Ok(()));
    // Then the learnt rate: 2/s, no burst.
    assert_eq!(rate.try_acquire().expect_err("paced").earliest(), ms(2600));
}

#[test]
fn a_blocking_acquire_waits_out_retry_after() {
    let (rate, clock) = rate_on(RateConfig { initial: 4.0, burst: 3, ..RateConfig::default() });
    rate.record(RateSignal::Limited { retry_after: Some(Duration::from_secs(3)) });
    rate.acquire_cancellable(&CancelToken::new()).expect("not cancelled");
    assert_eq!(clock.now(), Duration::from_secs(3));
}

#[test]
fn a_429_without_retry_after_empties_the_bucket() {
    let (rate, clock) = rate_on(RateConfig { initial: 4.0, burst: 4, ..RateConfig::default() });
    rate.record(RateSignal::Limited { retry_after: None });
    // Burst gone; the next token one interval of the new rate (2/s) on.
    assert_eq!(rate.try_acquire().expect_err("empty").earliest(), ms(500));
    assert_eq!(clock.now(), Duration::ZERO);
}

#[test]
fn the_429s_of_one_interval_cut_once() {
    let (rate, clock) = rate_on(RateConfig { initial: 8.0, ..RateConfig::default() });
    for _ in 0..3 {
        rate.record(RateSignal::Limited { retry_after: None });
        clock.advance(ms(100));
    }
    assert_eq!(rate.rate(), 4.0);
    assert_eq!(rate.limited(), 3);
    clock.advance(Duration::from_secs(1));
    rate.record(RateSignal::Limited { retry_after: None });
    assert_eq!(rate.rate(), 2.0, "a later 429 cuts again");
}

#[test]
fn a_cut_keeps_what_the_server_delivered() {
    // 10/s taken for 3 s: the server delivered 10/s, so the cut is 5 %,
    // not ½.
    let config = RateConfig { initial: 10.0, increase: 0.0, growth: 0.0, ..RateConfig::default() };
    let (rate, _) = rate_on(config);
    succeed_until(&rate, Duration::from_secs(3));
    rate.record(RateSignal::Limited { retry_after: None });
    assert!((rate.rate() - 9.5).abs() < 0.5, "{}", rate.rate());
    // After a 429 it only probes: 2 % a second.
    let before = rate.rate();
    succeed_until(&rate, Duration::from_secs(6));
    assert!(rate.rate() > before && rate.rate() < before * 1.07, "{before} -> {}", rate.rate());
}

#[test]
fn a_policy_sets_the_rate_and_burst_and_caps_the_probe() {
    let (rate, _) = rate_on(RateConfig::default());
    let policy =
        RateSignal::Policy { limit: 10, window: Duration::from_secs(2), remaining: None, reset: None, burst: None };
    rate.record(policy);
    assert_eq!((rate.rate(), rate.burst()), (5.0, 5));
    succeed_until(&rate, Duration::from_secs(5));
    assert_eq!(rate.rate(), 5.0, "never above the stated rate");
    // A 429 still cuts; the rate then climbs back to the policy, no higher.
    rate.record(RateSignal::Limited { retry_after: None });
    assert!(rate.rate() < 5.0);
    rate.record(policy); // the same policy again: no reset of the cut
    assert!(rate.rate() < 5.0);
    succeed_until(&rate, Duration::from_secs(15));
    assert_eq!(rate.rate(), 5.0);
    // A larger window: one second's worth of burst.
    rate.record(RateSignal::Policy {
        limit: 600,
        window: Duration::from_secs(60),
        remaining: None,
        reset: None,
        burst: None,
    });
    assert_eq!((rate.rate(), rate.burst()), (10.0, 10));
}

#[test]
fn vatcomplys_429_sets_rate_and_burst_without_a_cut() {
    // Its limit is stated only on a 429: 2/s, a bucket of 4, Retry-After 1.
    let (rate, clock) = rate_on(RateConfig { initial: 4.0, ..RateConfig::default() });
    let stated =
        RateSignal::Policy { limit: 2, window: Duration::from_secs(1), remaining: None, reset: None, burst: Some(4) };
    rate.try_acquire().expect("the first token");
    rate.record(stated);
    rate.record(RateSignal::Limited { retry_after: Some(Duration::from_secs(1)) });
    // Another request of before the policy meets the same empty bucket.
    rate.record(stated);
    rate.record(RateSignal::Limited { retry_after: Some(Duration::from_secs(1)) });
    assert_eq!((rate.rate(), rate.burst()), (2.0, 4), "the stated limit, not a cut below it");
    // Not before the Retry-After; then what the server refilled meanwhile.
    assert_eq!(rate.try_acquire().expect_err("held").earliest(), Duration::from_secs(1));
    clock.advance(Duration::from_secs(1));
    rate.try_acquire().expect("refilled 2 in the hold");
    rate.try_acquire().expect("refilled 2 in the hold");
    assert!(rate.try_acquire().is_err());
    // A huge stated burst is not taken at its word.
    rate.record(RateSignal::Policy {
        limit: 2,
        window: Duration::from_secs(1),
        remaining: None,
        reset: None,
        burst: Some(u32::MAX),
    });
    assert!(rate.burst() <= 10_000, "{}", rate.burst());
}

#[test]
fn a_margin_delays_the_accrual_after_a_burst() {
    let (rate, clock) = rate_on(RateConfig { initial: 2.0, burst: 4, margin: 1.0, ..RateConfig::default() });
    let never = CancelToken::new();
    for _ in 0..4 {
        rate.acquire_cancellable(&never).expect("the burst");
    }
    assert_eq!(clock.now(), Duration::ZERO);
    rate.acquire_cancellable(&never).expect("a token");
    assert_eq!(clock.now(), ms(1000), "one interval, plus one of margin");
    rate.acquire_cancellable(&never).expect("a token");
    assert_eq!(clock.now(), ms(1500), "then the rate itself");
    // Idle until full again: the next burst pays the margin once more.
    clock.advance(Duration::from_secs(10));
    let start = clock.now();
    for _ in 0..5 {
        rate.acquire_cancellable(&never).expect("a token");
    }
    assert_eq!(clock.now() - start, ms(1000));
}

#[test]
fn no_requests_left_holds_until_reset() {
    let (rate, clock) = rate_on(RateConfig { initial: 5.0, burst: 5, ..RateConfig::default() });
    rate.try_acquire().expect("the burst");
    let policy = |remaining| RateSignal::Policy {
        limit: 5,
        window: Duration::from_secs(1),
        remaining: Some(remaining),
        reset: Some(Duration::from_secs(2)),
        burst: None,
    };
    rate.record(policy(1));
    rate.try_acquire().expect("one left");
    assert!(rate.try_acquire().is_err(), "the server said one was left");
    rate.record(policy(0));
    assert_eq!(rate.try_acquire().expect_err("held").earliest(), Duration::from_secs(2));
    clock.advance(Duration::from_secs(2));
    for _ in 0..5 {
        rate.try_acquire().expect("refilled during the hold, up to the burst");
    }
    assert!(rate.try_acquire().is_err());
}

#[test]
fn a_cancelled_acquire_returns_at_once_and_gives_its_slot_back() {
    // One token per 1000 s, on the real clock: a wait that would hang.
    let rate = Arc::new(AdaptiveRate::new(RateConfig { initial: 0.001, min: 0.001, ..RateConfig::default() }));
    let cancel = CancelToken::new();
    assert_eq!(rate.acquire_cancellable(&cancel), Ok(()));
    let waiter = thread::spawn({
        let (rate, cancel) = (rate.clone(), cancel.clone());
        move || rate.acquire_cancellable(&cancel)
    });
    // Wait until it has reserved (the next free slot is then 2000 s away),
    // so that there is a slot to give back.
    for _ in 0..1000 {
        if rate.try_acquire().expect_err("one token per 1000 s").wait_time() > Duration::from_secs(1500) {
            break;
        }
        thread::sleep(ms(5));
    }
    assert!(rate.try_acquire().expect_err("in debt").wait_time() > Duration::from_secs(1500), "reserved");
    cancel.cancel();
    assert_eq!(within(move || waiter.join().expect("no panic")), Err(Cancelled));
    // Its slot is back: the next is due within 1000 s, not 2000.
    let next = rate.try_acquire().expect_err("one token per 1000 s");
    assert!(next.wait_time() <= Duration::from_secs(1000), "{next:?}");
    assert_eq!(rate.acquire_cancellable(&cancel), Err(Cancelled), "a cancelled token takes nothing");
    assert!(rate.try_acquire().expect_err("still").wait_time() <= Duration::from_secs(1000));
}

#[cfg(feature = "async")]
#[tokio::test(start_paused = true)]
async fn async_acquire_paces_and_requeues_behind_a_429() {
    let rate = Arc::new(AdaptiveRate::new(RateConfig { initial: 2.0, ..RateConfig::default() }));
    let start = tokio::time::Instant::now();
    rate.acquire_async().await;
    rate.acquire_async().await;
    assert_eq!(start.elapsed(), ms(500));
    // A waiter asleep until 1 s; at 0.6 s a 429 says "retry after 3 s".
    let waiter = tokio::spawn({
        let rate = rate.clone();
        async move { rate.acquire_async().await }
    });
    tokio::time::sleep(ms(100)).await;
    rate.record(RateSignal::Limited { retry_after: Some(Duration::from_secs(3)) });
    waiter.await.expect("joined");
    assert_eq!(start.elapsed(), ms(3600), "granted at the end of the hold, not at its old slot");
    // A dropped waiter takes nothing.
    let before = rate.try_acquire().expect_err("paced").earliest();
    assert!(tokio::time::timeout(ms(10), rate.acquire_async()).await.is_err());
    assert_eq!(rate.try_acquire().expect_err("paced").earliest(), before);
}

#[test]
fn nonsense_settings_are_brought_into_range() {
    let config = RateConfig { initial: f64::NAN, min: -1.0, max: 0.0, burst: 0, ..RateConfig::default() };
    let (rate, _) = rate_on(config);
    assert!(rate.rate() > 0.0 && rate.rate().is_finite());
    assert_eq!(rate.burst(), 1);
    let limiter = AdaptiveConcurrency::with_clock(
        ConcurrencyConfig { initial: 0, min: 0, max: 0, ..Default::default() },
        FakeClock::new(),
    );
    assert_eq!(limiter.limit(), 1);
}

#[test]
fn a_full_bucket_holds_the_burst_and_no_more() {
    let (rate, clock) = rate_on(RateConfig { initial: 2.0, burst: 3, ..RateConfig::default() });
    clock.advance(Duration::from_secs(60)); // idle: the bucket fills, up to the burst
    for _ in 0..3 {
        rate.try_acquire().expect("the burst");
    }
    assert_eq!(rate.try_acquire().expect_err("burst spent").wait_time(), ms(500));
}

#[test]
fn a_smaller_stated_burst_takes_effect_at_once() {
    let (rate, _) = rate_on(RateConfig { initial: 100.0, burst: 10, ..RateConfig::default() });
    rate.record(RateSignal::Policy {
        limit: 2,
        window: Duration::from_secs(1),
        remaining: None,
        reset: None,
        burst: None,
    });
    assert_eq!(rate.burst(), 2);
    rate.try_acquire().expect("1");
    rate.try_acquire().expect("2");
    assert!(rate.try_acquire().is_err(), "no more than the stated burst");
}

#[tokio::test(start_paused = true)]
async fn waiters_asleep_on_a_slow_schedule_take_a_faster_one_at_once() {
    // Eight tasks queue at 1/s: the last slot is 7 s away. The rate then
    // rises to 10/s: every waiter must move to the new schedule, not sleep
    // out its old slot (the `--rate auto --workers auto` stall at 1/s).
    let rate = Arc::new(AdaptiveRate::new(RateConfig { initial: 1.0, burst: 1, ..RateConfig::default() }));
    let start = tokio::time::Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let rate = Arc::clone(&rate);
            tokio::spawn(async move {
                rate.acquire_async().await;
                start.elapsed()
            })
        })
        .collect();
    tokio::time::sleep(ms(10)).await;
    rate.record(RateSignal::Policy {
        limit: 10,
        window: Duration::from_secs(1),
        remaining: None,
        reset: None,
        burst: Some(1),
    });
    let mut last = Duration::ZERO;
    for t in tasks {
        last = last.max(t.await.expect("a waiter"));
    }
    assert!(last <= ms(800), "the last of eight at 10/s, not at 1/s: {last:?}");
}

#[test]
fn blocked_threads_asleep_on_a_slow_schedule_take_a_faster_one_at_once() {
    // The same with threads on the real clock, bounded: at 0.01/s the
    // second waiter's slot is 100 s away, and the last 700 s.
    let rate = Arc::new(AdaptiveRate::new(RateConfig { initial: 0.01, min: 0.01, burst: 1, ..RateConfig::default() }));
    let cancel = CancelToken::new();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (rate, cancel, done) = (Arc::clone(&rate), cancel.clone(), done_tx.clone());
            thread::spawn(move || {
                let got = rate.acquire_cancellable(&cancel);
                let _ = done.send(got);
            })
        })
        .collect();
    // The first takes the burst at once; the others sleep on far slots.
    assert_eq!(done_rx.recv_timeout(LIMIT), Ok(Ok(())));
    rate.record(RateSignal::Policy {
        limit: 1000,
        window: Duration::from_secs(1),
        remaining: None,
        reset: None,
        burst: Some(10),
    });
    for _ in 1..8 {
        assert_eq!(done_rx.recv_timeout(LIMIT), Ok(Ok(())), "a waiter moved to the new schedule");
    }
    cancel.cancel();
    threads.into_iter().for_each(|t| t.join().expect("a waiter thread"));
}
