//! Property tests of the throttle's contract: at most `capacity + rate·w`
//! grants in any window of length `w`, over random sequences of every
//! call, waiters giving up included, on the fake clock.

use super::tests::assert_windows;
use super::*;
use proptest::prelude::*;

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
