//! Listings 18 and 19 ("waiters" and "waiters_await"), checked on clocks the
//! tests control, so the timings are exact and no test waits for real.
//!
//! - An awaited sleep yields: on tokio's paused clock the two waiters
//!   interleave, each line is printed at its own deadline, and the run takes
//!   exactly the longer of the two sums.
//! - A blocking sleep holds the thread and cannot be seen by tokio's clock,
//!   so it is modelled with `concur::throttle::FakeClock`: the clock moves on but the
//!   future does not yield. The waiters then run one after the other and the
//!   run takes exactly the sum of all waits.

use std::cell::RefCell;
use std::time::Duration;

use concur::throttle::{Clock, FakeClock};
use rates_cli::listings::waiter;

const FIRST: [f64; 4] = [0.25, 0.75, 0.5, 0.5];
const SECOND: [f64; 4] = [0.5, 0.25, 0.25, 0.75];

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// `(time, line)` pairs from `(seconds, line)` literals.
fn timeline(entries: &[(f64, &str)]) -> Vec<(Duration, String)> {
    entries.iter().map(|&(t, line)| (secs(t), line.to_owned())).collect()
}

#[tokio::test(start_paused = true)]
async fn awaited_sleeps_interleave_and_take_the_longer_sum() {
    let start = tokio::time::Instant::now();
    let log = RefCell::new(Vec::new());
    let record = |line: String| log.borrow_mut().push((start.elapsed(), line));

    tokio::join!(
        waiter("first", &FIRST, tokio::time::sleep, record),
        waiter("second", &SECOND, tokio::time::sleep, record),
    );

    assert_eq!(start.elapsed(), secs(2.0), "the longer sum: first's 2.0 s, not second's 1.75 s");
    let log = log.into_inner();
    assert!(log.is_sorted_by_key(|(at, _)| *at), "lines in deadline order: {log:#?}");
    // Each line at its own deadline. At 1.0 s both are due; which comes
    // first is the timer's choice, so compare in (time, line) order.
    let mut sorted = log.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        timeline(&[
            (0.25, "first waited 0.25 seconds"),
            (0.5, "second waited 0.5 seconds"),
            (0.75, "second waited 0.25 seconds"),
            (1.0, "first waited 0.75 seconds"),
            (1.0, "second waited 0.25 seconds"),
            (1.5, "first waited 0.5 seconds"),
            (1.75, "second waited 0.75 seconds"),
            (2.0, "first waited 0.5 seconds"),
        ])
    );
}

#[tokio::test]
async fn blocking_sleeps_run_one_after_the_other_and_take_the_sum() {
    let clock = FakeClock::new();
    let log = RefCell::new(Vec::new());
    let record = |line: String| log.borrow_mut().push((clock.now(), line));
    // A blocking sleep: time passes, but the future is ready at once, so the
    // waiter never gives the thread back to the scheduler.
    let blocking_sleep = |wait: Duration| {
        clock.advance(wait);
        std::future::ready(())
    };

    tokio::join!(waiter("first", &FIRST, blocking_sleep, record), waiter("second", &SECOND, blocking_sleep, record),);

    assert_eq!(clock.now(), secs(3.75), "the sum of all waits: 2.0 s + 1.75 s");
    assert_eq!(
        log.into_inner(),
        timeline(&[
            (0.25, "first waited 0.25 seconds"),
            (1.0, "first waited 0.75 seconds"),
            (1.5, "first waited 0.5 seconds"),
            (2.0, "first waited 0.5 seconds"),
            (2.5, "second waited 0.5 seconds"),
            (2.75, "second waited 0.25 seconds"),
            (3.0, "second waited 0.25 seconds"),
            (3.75, "second waited 0.75 seconds"),
        ])
    );
}

/// The example's own blocking sleep, `std::thread::sleep`, with waits of a
/// few milliseconds: the order alone shows that it never yields.
#[tokio::test]
async fn a_real_blocking_sleep_never_yields() {
    let log = RefCell::new(Vec::new());
    let record = |line: String| log.borrow_mut().push(line);
    let blocking_sleep = |wait: Duration| async move { std::thread::sleep(wait) };

    tokio::join!(
        waiter("first", &[0.002, 0.001], blocking_sleep, record),
        waiter("second", &[0.001, 0.001], blocking_sleep, record),
    );

    assert_eq!(
        log.into_inner(),
        [
            "first waited 0.002 seconds",
            "first waited 0.001 seconds",
            "second waited 0.001 seconds",
            "second waited 0.001 seconds",
        ]
    );
}
