//! Listing 18, "waiters": two coroutines, "first" and "second", each four
//! times pick a wait of 0.25, 0.5 or 0.75 s at random and call a *blocking*
//! sleep, printing `{name} waited {t} seconds`.
//!
//! Both run on a current-thread tokio runtime (one thread, like asyncio's
//! event loop), joined with `tokio::join!`. But `std::thread::sleep`, like
//! Python's `time.sleep`, holds the thread and never yields to the
//! scheduler: while "first" sleeps nothing else can run. So the two run one
//! after the other — all of first's lines, then all of second's — and the
//! total time is the sum of all eight waits. One blocking call stalls the
//! whole loop; listing 19 (`waiters_await`) awaits the sleep instead.
//!
//! The coroutine itself is `rates_cli::listings::waiter`, shared with
//! listing 19 and with the tests in `tests/waiters.rs`, which check this
//! behaviour on a fake clock.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p rates-cli --example waiters
//! ```

use std::time::{Duration, Instant};

use rates_cli::listings::waiter;
use rates_core::present;

/// Four waits of `random.randint(1, 3) / 4` seconds.
fn random_waits() -> Vec<f64> {
    (0..4).map(|_| f64::from(rand::random_range(1..=3_u8)) / 4.0).collect()
}

/// Python's `time.sleep` inside a coroutine: the future is ready on its first
/// poll, after the thread has slept through the whole wait.
async fn blocking_sleep(wait: Duration) {
    std::thread::sleep(wait);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (first, second) = (random_waits(), random_waits());
    let started = Instant::now();
    tokio::join!(
        waiter("first", &first, blocking_sleep, |line| println!("{line}")),
        waiter("second", &second, blocking_sleep, |line| println!("{line}")),
    );
    let elapsed = started.elapsed();
    let sum: f64 = first.iter().chain(&second).sum();
    println!();
    println!("{}", present::elapsed_line(elapsed));
    println!("sum of all waits: {sum:.2}s");
}
