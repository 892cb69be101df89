//! Listing 19, "waiters_await": listing 18 (`waiters`) with an awaited sleep.
//!
//! Two coroutines, "first" and "second", each four times pick a wait of
//! 0.25, 0.5 or 0.75 s at random, sleep with `tokio::time::sleep(..).await`
//! (Python's `await asyncio.sleep(..)`), and print
//! `{name} waited {t} seconds`. They run on a current-thread tokio runtime,
//! joined with `tokio::join!`, as in listing 18. An awaited sleep yields: the
//! waiting coroutine hands the thread back to the scheduler, which runs the
//! other one meanwhile. So their lines interleave, in the order their sleeps
//! end, and the total time is about the longer of the two sums, not the sum
//! of both — two waits overlap on a single thread.
//!
//! The coroutine itself is `rates_cli::listings::waiter`, shared with
//! listing 18 and with the tests in `tests/waiters.rs`, which check this
//! behaviour exactly on tokio's paused clock.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p rates-cli --example waiters_await
//! ```

use std::time::Instant;

use rates_cli::listings::waiter;
use rates_core::present;

/// Four waits of `random.randint(1, 3) / 4` seconds.
fn random_waits() -> Vec<f64> {
    (0..4).map(|_| f64::from(rand::random_range(1..=3_u8)) / 4.0).collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (first, second) = (random_waits(), random_waits());
    let started = Instant::now();
    tokio::join!(
        waiter("first", &first, tokio::time::sleep, |line| println!("{line}")),
        waiter("second", &second, tokio::time::sleep, |line| println!("{line}")),
    );
    let elapsed = started.elapsed();
    let (first_sum, second_sum): (f64, f64) = (first.iter().sum(), second.iter().sum());
    println!();
    println!("{}", present::elapsed_line(elapsed));
    println!(
        "longer of the two sums: {:.2}s (first {first_sum:.2}s, second {second_sum:.2}s)",
        first_sum.max(second_sum)
    );
}
