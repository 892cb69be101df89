//! Code shared by the chapter's listings 18 and 19 ("waiters" and
//! "waiters_await", in `examples/`) and their tests (`tests/waiters.rs`).
//!
//! Both listings run the same coroutine, `waiter`, and differ only in how it
//! sleeps: listing 18 calls a blocking sleep, which never gives the thread
//! back to the scheduler, and listing 19 awaits an async sleep, which does.
//! So [`waiter`] takes the sleep as an argument, and the tests can pass a
//! sleep on a clock they control.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use rates_cli::listings::waiter;
//!
//! let mut lines = Vec::new();
//! // An awaited sleep: other tasks run while this one waits.
//! waiter("first", &[0.001, 0.002], tokio::time::sleep, |line| lines.push(line)).await;
//! assert_eq!(lines, ["first waited 0.001 seconds", "first waited 0.002 seconds"]);
//! # }
//! ```

use std::future::Future;
use std::time::Duration;

/// The chapter's `waiter(name)` coroutine: for each `t` in `waits` (in
/// seconds), sleeps `t` with `sleep`, then hands `log` the line
/// `{name} waited {t} seconds`.
///
/// Whether it yields while it waits is up to `sleep`:
///
/// - `|d| async move { std::thread::sleep(d) }` blocks: the future is ready
///   on its first poll, having held the thread for the whole wait (listing 18);
/// - `tokio::time::sleep` yields until the deadline (listing 19).
///
/// `t` is printed with `{}`, which for the chapter's waits (`0.25`, `0.5`,
/// `0.75`, that is `random.randint(1, 3) / 4`) gives what Python prints.
pub async fn waiter<S, F>(name: &str, waits: &[f64], mut sleep: S, mut log: impl FnMut(String))
where
    S: FnMut(Duration) -> F,
    F: Future<Output = ()>,
{
    for &t in waits {
        sleep(Duration::from_secs_f64(t)).await;
        log(format!("{name} waited {t} seconds"));
    }
}
