//! Listing 2, "start_new_threads": start ten threads, then wait for all of
//! them.
//!
//! All ten are started before any is joined, so they run at the same time;
//! joining them in order only waits until each has finished. Unlike Python's
//! threads, which take turns under the GIL, these can run Rust code in
//! parallel on every core.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p rates-cli --example start_new_threads
//! ```

use std::thread;

fn my_function() {
    println!("printing from thread");
}

fn main() {
    let threads: Vec<_> = (0..10).map(|_| thread::spawn(my_function)).collect();
    for thread in threads {
        thread.join().expect("a thread panicked");
    }
}
