//! Listing 17, "async_print": ten coroutines, each yields to the event loop
//! once and then prints its number; gathered, they print in the order the
//! loop resumes them.
//!
//! A Rust `async fn` is a coroutine: calling it only builds a future, and
//! nothing runs until an executor polls it. Here ten tasks are spawned on a
//! current-thread tokio runtime — one thread, like asyncio's event loop — and
//! `tokio::task::yield_now().await` is Python's `await asyncio.sleep(0)`: the
//! task gives the thread back to the scheduler, which runs the others before
//! resuming it. So the numbers are printed in the order the scheduler
//! resumes the tasks, not the order they were spawned in. With this tokio
//! that is 9 down to 0: each task runs once in spawn order, yields, and the
//! yielded tasks are woken last-in, first-out. The order is the scheduler's
//! business, not a promise (Python's `asyncio.wait` even takes its
//! coroutines as a set, in no fixed order).
//!
//! Run it with:
//!
//! ```text
//! cargo run -p rates-cli --example async_print
//! ```

use tokio::task::JoinSet;

async fn print_number(number: u32) {
    // Back to the scheduler once; the other tasks run before we resume.
    tokio::task::yield_now().await;
    println!("{number}");
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // The chapter's `asyncio.wait([print_number(number) for number in range(10)])`.
    let mut tasks = JoinSet::new();
    for number in 0..10 {
        tasks.spawn(print_number(number));
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("print_number does not panic");
    }
}
