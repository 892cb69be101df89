//! Helpers for this crate's tests: bounds on every blocking wait, so that a
//! bug fails a test instead of hanging it.

use std::panic::resume_unwind;
use std::thread;
use std::time::Duration;

/// How long a test waits for something that should happen promptly.
pub(crate) const LIMIT: Duration = Duration::from_secs(10);

/// Runs `f` on another thread and gives its result, failing the test if it
/// takes longer than a few [`LIMIT`]s (a hang) and re-raising its panic.
pub(crate) fn within<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let runner = thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(LIMIT * 3) {
        Ok(result) => result,
        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
            panic!("test hung for {:?}", LIMIT * 3)
        }
        // The sender is gone without a result: `f` panicked.
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => match runner.join() {
            Err(payload) => resume_unwind(payload),
            Ok(()) => unreachable!("runner ended without a result or a panic"),
        },
    }
}
