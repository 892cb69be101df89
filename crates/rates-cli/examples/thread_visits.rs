//! Listing 3, "thread_visits": 100 threads each add 1 to a shared counter
//! 100,000 times without a lock, and updates get lost.
//!
//! An increment is a read, an add and a write; when two threads read the
//! same value, both write back that value plus one, and one update is lost.
//! The total is therefore usually below the 10,000,000 expected.
//!
//! In Python the listing writes `value = thread_visits; thread_visits =
//! value + 1` on a global. In Rust that plain `+=` on data shared between
//! threads does not compile: it would be a data race. So the counter here is
//! an `AtomicUsize`, read with one `load` and written with a separate
//! `store`. Every access is atomic, so this is safe Rust with no undefined
//! behaviour, yet it is still a race condition: the read-add-write as a
//! whole is not atomic, and updates are lost exactly as in the chapter.
//! (`thread_safe_visits` shows the fixes.)
//!
//! Python's threads take turns under the GIL and lose updates only when a
//! switch falls between the read and the write; Rust threads really run in
//! parallel on every core, so they lose updates all the time.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p rates-cli --example thread_visits
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

static THREAD_VISITS: AtomicUsize = AtomicUsize::new(0);

fn visit_counter() {
    for _ in 0..100_000 {
        // Read, then write: another thread may write in between.
        let value = THREAD_VISITS.load(Ordering::Relaxed);
        THREAD_VISITS.store(value + 1, Ordering::Relaxed);
    }
}

fn main() {
    let thread_count = 100;
    let threads: Vec<_> = (0..thread_count).map(|_| thread::spawn(visit_counter)).collect();
    for thread in threads {
        thread.join().expect("a thread panicked");
    }
    let thread_visits = THREAD_VISITS.load(Ordering::Relaxed);
    println!("thread_count={thread_count}, thread_visits={thread_visits}");
}
