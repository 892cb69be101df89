//! Listing 1, "start_new_thread": start one thread and wait for it.
//!
//! `std::thread::spawn` creates the thread and starts it at once (Python's
//! `Thread(target=...)` followed by `start()`); `join` waits for it to end.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p rates-cli --example start_new_thread
//! ```

use std::thread;

fn my_function() {
    println!("printing from thread");
}

fn main() {
    let thread = thread::spawn(my_function);
    thread.join().expect("the thread panicked");
}
