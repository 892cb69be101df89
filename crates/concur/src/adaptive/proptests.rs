//! Property tests against simulated servers whose limits vary: the learnt
//! rate never grants above `burst + rate·w` in any window, few requests
//! meet a 429, and neither the rate nor the concurrency limit swings
//! wider than a stated band around the server's fixed limit.

use super::sim::*;
use super::*;
use proptest::prelude::*;
use std::time::Duration;

/// In every window `[grants[i], grants[j]]`, at most `burst + r·w`
/// grants, with `r` the highest learnt rate in force at any time in that
/// window (of several changes at one instant, each counts).
fn assert_windows(run: &RateRun, initial: f64, burst: f64) {
    // The rate in force from each instant on.
    let mut steps = vec![(Duration::ZERO, initial)];
    steps.extend(run.rates.iter().copied());
    for i in 0..run.grants.len() {
        // The rate in force just before the window, then every change in it.
        let mut next = steps.partition_point(|(at, _)| *at < run.grants[i]);
        let mut highest = steps[next.saturating_sub(1)].1;
        for j in i..run.grants.len() {
            while next < steps.len() && steps[next].0 <= run.grants[j] {
                highest = highest.max(steps[next].1);
                next += 1;
            }
            let w = (run.grants[j] - run.grants[i]).as_secs_f64();
            let count = (j - i + 1) as f64;
            let bound = burst + highest * w;
            assert!(count <= bound + 1e-6, "{count} grants in {w} s from {:?}; bound {bound}", run.grants[i]);
        }
    }
}

/// The lowest and highest learnt rate set from `from` on.
fn rate_band(run: &RateRun, from: Duration) -> (f64, f64) {
    let after = run.rates.iter().filter(|(at, _)| *at >= from).map(|(_, r)| *r);
    after.chain([run.rate]).fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(r), hi.max(r)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// A server with a token bucket of `limit`/s and `burst`, no headers.
    #[test]
    fn a_rate_limit_is_learnt_with_few_429s_and_a_narrow_swing(
        limit in 2u32..=40,
        burst in 1u32..=10,
        latency_ms in 5u64..=200,
    ) {
        let latency = Duration::from_millis(latency_ms);
        // Enough clients that the server, not they, is the limit.
        let workers = (2.0 * f64::from(limit) * latency.as_secs_f64()).ceil() as usize + 1;
        let server = RateServer {
            limit: f64::from(limit), burst, headers: false, latency, workers, requests: 60 * limit as usize,
        };
        let config = RateConfig::default();
        let run = rate_run(server, config);
        assert_windows(&run, config.initial, f64::from(config.burst));
        let share = run.limited as f64 / run.sent as f64;
        prop_assert!(share < 0.05, "{:.1} % 429s", 100.0 * share);
        // Learnt by the second cut (the first sees the server's burst
        // drained by the ramp's overshoot, the second only its refill):
        // from then on the rate stays in a band around the limit.
        let mut cuts = run.rates.iter().zip(run.rates.iter().skip(1)).filter(|(a, b)| b.1 < a.1).map(|(_, b)| b.0);
        let learnt = cuts.nth(1).unwrap_or(run.finish);
        let (low, high) = rate_band(&run, learnt);
        let l = f64::from(limit);
        prop_assert!(low >= 0.5 * l && high <= 1.5 * l, "rate in {low:.2}..{high:.2} against {l}");
        // The time: the ramp from 1/s costs up to ten seconds, each 429 a
        // second of Retry-After, and between 429s the rate sits under the
        // limit (what the server delivered is all it knows of it).
        let ideal = RateRun::ideal(&server);
        prop_assert!(run.finish.as_secs_f64() <= 1.5 * ideal, "{:?} against an ideal {ideal:.1} s", run.finish);
    }

    /// The same with the server's policy in its answers: taken as given.
    #[test]
    fn a_stated_policy_is_followed_exactly(
        limit in 2u32..=40,
        latency_ms in 5u64..=200,
    ) {
        let latency = Duration::from_millis(latency_ms);
        let workers = (2.0 * f64::from(limit) * latency.as_secs_f64()).ceil() as usize + 1;
        // A burst of a second's worth, as the policy implies.
        let server = RateServer {
            limit: f64::from(limit), burst: limit, headers: true, latency, workers, requests: 60 * limit as usize,
        };
        let config = RateConfig::default();
        let run = rate_run(server, config);
        assert_windows(&run, config.initial, f64::from(limit));
        prop_assert!(run.limited * 100 < run.sent, "{} 429s of {}", run.limited, run.sent);
        prop_assert_eq!(run.rate, f64::from(limit));
        // `remaining: 0` holds until the reset, in whole seconds from the
        // answer: each second's worth then costs a round trip more.
        let ideal = RateRun::ideal(&server) * (1.0 + latency.as_secs_f64());
        prop_assert!(run.finish.as_secs_f64() <= 1.05 * ideal + 2.0 * latency.as_secs_f64(), "{:?} against an ideal {ideal:.1} s", run.finish);
    }

    /// A server that serves `capacity` at once and queues the rest. At
    /// least the initial limit (4): below it, the first samples already
    /// queue, and the baseline learnt from them is too high.
    #[test]
    fn a_capacity_is_learnt_and_kept_in_a_narrow_band(
        capacity in 4usize..=32,
        latency_ms in 5u64..=100,
    ) {
        let latency = Duration::from_millis(latency_ms);
        let server = CapacityServer { capacity, latency, workers: 256, requests: 100 * capacity };
        let run = concurrency_run(server, Some(ConcurrencyConfig::default()));
        // Settled after a tenth of the run: within [0.9·C - 1, 1.25·C + 3]
        // (the tolerance allows a queue of a fifth of C; the rest is the
        // noise of a window of a few samples of a queue that comes in steps).
        let (low, high) = run.band(run.finish / 10);
        let c = capacity as f64;
        prop_assert!(low as f64 >= 0.9 * c - 1.0 && high as f64 <= 1.25 * c + 3.0, "limit in {low}..={high} against {capacity}");
        prop_assert!(run.median() <= latency.mul_f64(1.5), "median {:?}", run.median());
        // At least 90 % of the server's throughput.
        let ideal = (server.requests as f64 / c).ceil() * latency.as_secs_f64();
        prop_assert!(ideal / run.finish.as_secs_f64() >= 0.9, "{:?} against {ideal} s", run.finish);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Acquire,
    Try,
    Advance(u64),
    Success,
    Limited(Option<u64>),
    Policy { limit: u32, window_ms: u64, remaining: Option<u32> },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Acquire),
        3 => Just(Op::Try),
        3 => (0u64..2_000).prop_map(Op::Advance),
        4 => Just(Op::Success),
        1 => proptest::option::of(0u64..3_000).prop_map(Op::Limited),
        1 => (1u32..20, 100u64..5_000, proptest::option::of(0u32..5))
            .prop_map(|(limit, window_ms, remaining)| Op::Policy { limit, window_ms, remaining }),
    ]
}

proptest! {
    /// Any sequence of calls and answers: in every window, no more grants
    /// than the largest burst plus the highest rate in force times the
    /// window's length.
    #[test]
    fn grants_never_exceed_burst_plus_rate_times_window(
        initial in 0.5f64..20.0,
        burst in 1u32..5,
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        let clock = crate::throttle::FakeClock::new();
        let config = RateConfig { initial, burst, ..RateConfig::default() };
        let changes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let rate = AdaptiveRate::with_clock(config, clock.clone()).on_change({
            let (changes, clock) = (changes.clone(), clock.clone());
            move |c| changes.lock().expect("not poisoned").push((crate::throttle::Clock::now(&clock), c.to))
        });
        let never = crate::CancelToken::new();
        let mut grants = Vec::new();
        let mut bursts = burst;
        for op in ops {
            match op {
                Op::Acquire => {
                    rate.acquire_cancellable(&never).expect("not cancelled");
                    grants.push(crate::throttle::Clock::now(&clock));
                }
                Op::Try => {
                    if rate.try_acquire().is_ok() {
                        grants.push(crate::throttle::Clock::now(&clock));
                    }
                }
                Op::Advance(ms) => clock.advance(Duration::from_millis(ms)),
                Op::Success => rate.record(RateSignal::Success),
                Op::Limited(after) => rate.record(RateSignal::Limited { retry_after: after.map(Duration::from_millis) }),
                Op::Policy { limit, window_ms, remaining } => rate.record(RateSignal::Policy {
                    limit,
                    window: Duration::from_millis(window_ms),
                    remaining,
                    reset: Some(Duration::from_millis(500)),
                    burst: None,
                }),
            }
            bursts = bursts.max(rate.burst());
        }
        let run = RateRun {
            finish: crate::throttle::Clock::now(&clock),
            sent: grants.len(),
            limited: 0,
            grants,
            rates: changes.lock().expect("not poisoned").clone(),
            rate: rate.rate(),
            burst: bursts,
        };
        assert_windows(&run, rate_initial(&config), f64::from(bursts));
    }
}

/// The rate a config starts at, as the limiter brings it into range.
fn rate_initial(config: &RateConfig) -> f64 {
    config.initial.clamp(config.min, config.max)
}
