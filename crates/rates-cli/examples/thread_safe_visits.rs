//! Listing 4, "thread_safe_visits": the counter of `thread_visits`, made
//! thread-safe, so 100 threads adding 1 each 100,000 times always give
//! exactly 10,000,000.
//!
//! Two ways, each printed on its own line:
//! - a `Mutex` around the counter, the chapter's `with thread_visits_lock:`
//!   (in Rust the lock owns the data, so it cannot be touched unlocked);
//! - an atomic `fetch_add`, which does the read, the add and the write as
//!   one indivisible step, without a lock.
//!
//! Rust threads, unlike Python's under the GIL, run in parallel on every
//! core; the lock or the atomic is what keeps their updates from being lost.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p rates-cli --example thread_safe_visits
//! ```

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

const THREAD_COUNT: usize = 100;

static THREAD_VISITS: Mutex<usize> = Mutex::new(0);
static ATOMIC_VISITS: AtomicUsize = AtomicUsize::new(0);

fn visit_counter() {
    for _ in 0..100_000 {
        let mut visits = THREAD_VISITS.lock().expect("the lock is poisoned");
        *visits += 1;
    }
}

fn atomic_visit_counter() {
    for _ in 0..100_000 {
        ATOMIC_VISITS.fetch_add(1, Ordering::Relaxed);
    }
}

/// Starts `THREAD_COUNT` threads running `counter`, then joins them all.
fn run_threads(counter: fn()) {
    let threads: Vec<_> = (0..THREAD_COUNT).map(|_| thread::spawn(counter)).collect();
    for thread in threads {
        thread.join().expect("a thread panicked");
    }
}

fn main() {
    run_threads(visit_counter);
    let thread_visits = *THREAD_VISITS.lock().expect("the lock is poisoned");
    println!("thread_count={THREAD_COUNT}, thread_visits={thread_visits} (Mutex)");

    run_threads(atomic_visit_counter);
    let thread_visits = ATOMIC_VISITS.load(Ordering::Relaxed);
    println!("thread_count={THREAD_COUNT}, thread_visits={thread_visits} (AtomicUsize::fetch_add)");
}
