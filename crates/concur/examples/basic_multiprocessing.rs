//! Listing 12, "basic_multiprocessing": start five processes, each printing
//! who it is, and join them.
//!
//! Python's `Process(target=work, args=(n,))` runs a function in a new
//! process. A new Rust process cannot be handed a function either, so, like
//! Python's `spawn` start method, each child runs this same program again
//! with arguments that say what to do (`work N`); the parent then waits for
//! each, in reverse order as the listing does (`processes.pop().join()`).
//!
//! Run it with:
//!
//! ```text
//! cargo run -p concur --example basic_multiprocessing
//! ```

use std::process::Command;

fn work(identifier: usize) {
    println!("Hey, I am the process {identifier}, pid: {}", std::process::id());
}

fn main() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("work") {
        let identifier = args.next().and_then(|n| n.parse().ok()).expect("usage: work N");
        work(identifier);
        return;
    }

    let program = std::env::current_exe().expect("this program's path");
    let mut processes: Vec<_> = (0..5)
        .map(|number: usize| {
            Command::new(&program).args(["work", &number.to_string()]).spawn().expect("a process starts")
        })
        .collect();
    while let Some(mut process) = processes.pop() {
        process.wait().expect("a process is joined");
    }
}
