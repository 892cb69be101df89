//! The adaptive concurrency limit's unit tests, on the fake clock (or
//! tokio's paused time), both limiters against simulated servers, and what
//! crosses threads.

use super::sim::*;
use super::*;
use crate::test_support::{LIMIT, within};
use crate::throttle::FakeClock;
use crate::{CancelToken, Cancelled};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// The concurrency limit.

fn limiter_on(config: ConcurrencyConfig) -> (AdaptiveConcurrency<FakeClock>, FakeClock) {
    let clock = FakeClock::new();
    (AdaptiveConcurrency::with_clock(config, clock.clone()), clock)
}

/// Fills the limit, lets `latency` pass, and answers them all.
fn round(limiter: &AdaptiveConcurrency<FakeClock>, latency: Duration) {
    let permits: Vec<_> = std::iter::from_fn(|| limiter.try_acquire()).collect();
    assert_eq!(permits.len(), limiter.limit());
    limiter.clock().advance(latency);
    permits.into_iter().for_each(Permit::success);
}

#[test]
fn slow_start_doubles_while_latency_is_flat() {
    let (limiter, _) = limiter_on(ConcurrencyConfig::default());
    let changes = Arc::new(Mutex::new(Vec::new()));
    let limiter = limiter.on_change({
        let changes = changes.clone();
        move |c| changes.lock().expect("not poisoned").push(c.clone())
    });
    for _ in 0..4 {
        round(&limiter, ms(50));
    }
    assert_eq!(limiter.limit(), 64);
    let changes = changes.lock().expect("not poisoned");
    assert_eq!(changes.iter().map(|c| c.to).collect::<Vec<_>>(), [8, 16, 32, 64]);
    assert!(changes.iter().all(|c| c.why == "latency flat: slow start"));
}

#[test]
fn a_caller_held_back_elsewhere_does_not_raise_the_limit() {
    // A fixed rate lets one request out at a time: latency is flat, but
    // the limit of 4 never held anything back, so it proves nothing
    // (without this rule it would climb to the pool's size).
    let (limiter, clock) = limiter_on(ConcurrencyConfig::default());
    for _ in 0..200 {
        let p = limiter.try_acquire().expect("far below the limit");
        clock.advance(ms(5));
        p.success();
        clock.advance(ms(495)); // the throttle's wait, outside any permit
    }
    assert_eq!(limiter.limit(), 4);
    // Once the requests do fill it, slow start goes on as before.
    round(&limiter, ms(5));
    assert_eq!(limiter.limit(), 8);
}

#[test]
fn the_limit_shrinks_when_latency_doubles_then_probes_by_one() {
    let (limiter, _) = limiter_on(ConcurrencyConfig::default());
    round(&limiter, ms(50));
    round(&limiter, ms(50));
    assert_eq!(limiter.limit(), 16);
    round(&limiter, ms(100));
    assert_eq!(limiter.limit(), 8, "halved: the gradient baseline/latency");
    round(&limiter, ms(50));
    assert_eq!(limiter.limit(), 9, "slow start is over: +1");
}

#[test]
fn the_limit_shrinks_on_overload_once_per_limit() {
    let (limiter, _) = limiter_on(ConcurrencyConfig { initial: 8, ..Default::default() });
    let permits: Vec<_> = std::iter::from_fn(|| limiter.try_acquire()).collect();
    let mut permits = permits.into_iter();
    permits.next().expect("one").overload();
    assert_eq!(limiter.limit(), 6);
    // Started under the old limit: they say nothing new.
    permits.next().expect("two").overload();
    assert_eq!(limiter.limit(), 6);
    drop(permits);
    limiter.try_acquire().expect("a slot").overload();
    assert_eq!(limiter.limit(), 4);
}

#[test]
fn the_limit_stays_within_min_and_max() {
    let config = ConcurrencyConfig { initial: 3, min: 2, max: 10, ..Default::default() };
    let (limiter, _) = limiter_on(config);
    for _ in 0..5 {
        round(&limiter, ms(10));
    }
    assert_eq!(limiter.limit(), 10);
    for _ in 0..10 {
        limiter.try_acquire().expect("a slot").overload();
    }
    assert_eq!(limiter.limit(), 2);
}

#[test]
fn permits_free_their_slots_however_they_end() {
    let (limiter, _) = limiter_on(ConcurrencyConfig { initial: 3, min: 3, max: 3, ..Default::default() });
    let a = limiter.try_acquire().expect("1");
    let b = limiter.try_acquire().expect("2");
    let c = limiter.try_acquire().expect("3");
    assert!(limiter.try_acquire().is_none());
    assert_eq!(limiter.in_flight(), 3);
    a.success();
    b.overload();
    drop(c);
    assert_eq!(limiter.in_flight(), 0);
    assert_eq!(limiter.limit(), 3);
}

#[test]
fn a_blocked_acquire_is_woken_by_a_freed_slot() {
    let limiter =
        Arc::new(AdaptiveConcurrency::new(ConcurrencyConfig { initial: 1, min: 1, max: 1, ..Default::default() }));
    let held = limiter.try_acquire().expect("the one slot");
    let (tx, rx) = crossbeam_channel::bounded(1);
    let waiter = thread::spawn({
        let limiter = limiter.clone();
        move || {
            let permit = limiter.acquire_cancellable(&CancelToken::new()).expect("not cancelled");
            tx.send(limiter.in_flight()).expect("the test waits");
            drop(permit);
        }
    });
    assert!(rx.recv_timeout(ms(50)).is_err(), "blocked while the slot is held");
    drop(held);
    assert_eq!(rx.recv_timeout(LIMIT).expect("woken"), 1);
    waiter.join().expect("no panic");
    assert_eq!(limiter.in_flight(), 0);
}

#[test]
fn a_cancelled_blocked_acquire_returns_at_once_holding_nothing() {
    let limiter =
        Arc::new(AdaptiveConcurrency::new(ConcurrencyConfig { initial: 1, min: 1, max: 1, ..Default::default() }));
    let held = limiter.try_acquire().expect("the one slot");
    let cancel = CancelToken::new();
    let waiter = thread::spawn({
        let (limiter, cancel) = (limiter.clone(), cancel.clone());
        move || limiter.acquire_cancellable(&cancel).map(drop)
    });
    thread::sleep(ms(20)); // most likely blocked by now; either way it must end
    cancel.cancel();
    assert_eq!(within(move || waiter.join().expect("no panic")), Err(Cancelled));
    assert_eq!(limiter.in_flight(), 1, "the held slot is still held");
    assert_eq!(limiter.acquire_cancellable(&cancel).map(drop), Err(Cancelled));
    drop(held);
    assert_eq!(limiter.in_flight(), 0);
    assert!(limiter.try_acquire().is_some());
}

#[cfg(feature = "async")]
#[tokio::test(start_paused = true)]
async fn async_acquire_waits_for_a_slot_without_blocking() {
    let limiter =
        Arc::new(AdaptiveConcurrency::new(ConcurrencyConfig { initial: 1, min: 1, max: 1, ..Default::default() }));
    let held = limiter.acquire_async().await;
    // A dropped waiter holds nothing.
    assert!(tokio::time::timeout(ms(10), limiter.acquire_async()).await.is_err());
    assert_eq!(limiter.in_flight(), 1);
    let waiter = tokio::spawn({
        let limiter = limiter.clone();
        async move {
            let permit = limiter.acquire_async().await;
            tokio::time::sleep(ms(30)).await;
            permit.success();
        }
    });
    tokio::time::sleep(ms(20)).await;
    assert!(!waiter.is_finished(), "waits while the slot is held");
    held.success();
    tokio::time::timeout(LIMIT, waiter).await.expect("woken").expect("joined");
    assert_eq!(limiter.in_flight(), 0);
}

// Against simulated servers: the figures the limiters are built to reach.

#[test]
fn five_per_second_without_headers_is_met_closely_with_few_429s() {
    let server = RateServer { limit: 5.0, burst: 5, headers: false, latency: ms(20), workers: 4, requests: 300 };
    let run = rate_run(server, RateConfig::default());
    let ratio = run.finish.as_secs_f64() / RateRun::ideal(&server);
    let share = run.limited as f64 / run.sent as f64;
    assert!(ratio <= 1.15, "{ratio:.3} of the ideal time");
    assert!(share < 0.05, "{:.1} % 429s", 100.0 * share);
}

#[test]
fn five_per_second_with_headers_is_met_exactly() {
    let server = RateServer { limit: 5.0, burst: 5, headers: true, latency: ms(20), workers: 4, requests: 300 };
    let run = rate_run(server, RateConfig::default());
    let ratio = run.finish.as_secs_f64() / RateRun::ideal(&server);
    assert!(ratio <= 1.05, "{ratio:.3} of the ideal time");
    assert!(run.limited * 100 < run.sent, "{} 429s of {}", run.limited, run.sent);
    assert_eq!((run.rate, run.burst), (5.0, 5));
}

/// The fewest seconds any fixed worker count from 1 to 64 takes.
fn best_fixed(server: CapacityServer) -> f64 {
    (1..=64)
        .map(|w| concurrency_run(CapacityServer { workers: w, ..server }, None).finish.as_secs_f64())
        .fold(f64::MAX, f64::min)
}

#[test]
fn a_server_of_capacity_eight_is_filled_without_queueing() {
    let server = CapacityServer { capacity: 8, latency: ms(20), workers: 256, requests: 1000 };
    let run = concurrency_run(server, Some(ConcurrencyConfig::default()));
    let best = best_fixed(server);
    assert!(best / run.finish.as_secs_f64() >= 0.9, "auto {:?}, best fixed {best} s", run.finish);
    assert!(run.median() <= ms(30), "median {:?}", run.median());
    let (low, high) = run.band(ms(200));
    assert!(low >= 8 && high <= 12, "settled in {low}..={high}");
}

#[test]
fn a_server_without_limit_is_found_in_a_few_round_trips() {
    let server = CapacityServer { capacity: usize::MAX, latency: ms(50), workers: 256, requests: 1000 };
    let run = concurrency_run(server, Some(ConcurrencyConfig::default()));
    let best = best_fixed(server);
    assert!(run.finish.as_secs_f64() <= 1.1 * best, "auto {:?}, best fixed {best} s", run.finish);
}

#[test]
fn samples_wait_until_the_requests_of_a_higher_limit_have_ended() {
    let (limiter, clock) = limiter_on(ConcurrencyConfig::default());
    round(&limiter, ms(50));
    round(&limiter, ms(50));
    assert_eq!(limiter.limit(), 16);
    let take = |n| (0..n).map(|_| limiter.try_acquire().expect("a slot")).collect::<Vec<_>>();
    // Sixteen take 100 ms: the limit halves while eight others are queued.
    let mut first = take(16);
    clock.advance(ms(100));
    first.drain(..8).for_each(Permit::success);
    let queued = take(8);
    first.into_iter().for_each(Permit::success);
    assert_eq!(limiter.limit(), 8);
    // Four started while the queue was still the old one's: slow, but
    // not the new limit's fault.
    let mut queued = queued.into_iter();
    queued.by_ref().take(4).for_each(Permit::success);
    let behind = take(4);
    clock.advance(ms(100));
    queued.for_each(Permit::success);
    behind.into_iter().for_each(Permit::success);
    assert_eq!(limiter.limit(), 8);
    // The new limit's own requests answer at the unloaded latency: flat.
    round(&limiter, ms(50));
    assert_eq!(limiter.limit(), 9);
}

#[test]
fn the_limiters_and_permits_cross_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<AdaptiveRate>();
    shared::<AdaptiveConcurrency>();
    shared::<Permit<'static, crate::throttle::SystemClock>>();
}
