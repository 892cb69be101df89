//! Listing 6, "one thread per item": start a thread for each base, each
//! fetching and printing its rates, then join them all.
//!
//! The five requests wait on the network at the same time, so the whole run
//! takes about as long as one request (~0.1 s here) instead of the sum of
//! all five. Lines come in the order the answers arrive, not in input order.
//! The catch: the number of threads is unbounded, so a thousand items would
//! start a thousand threads (listing 7 bounds it with a pool).
//!
//! `thread::scope` lets the threads borrow the client and the symbols; it
//! would join them at its end anyway, but the listing's joins are kept.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p rates-cli --example one_thread_per_item
//! ```

use std::thread;
use std::time::{Duration, Instant};

use rates_core::{BlockingClient, Currency, Dataset, RateRequest, present};
use rates_server::ServerOptions;

/// `GET /rates?base=...` and print the chapter's line, or the error.
fn fetch_rates(client: &BlockingClient, base: Currency, symbols: &[Currency]) {
    let request = RateRequest { base, symbols: vec![], date: None };
    match client.fetch(&request) {
        Ok(rates) => println!("{}", present::chapter_line(&rates, symbols)),
        Err(err) => eprintln!("error: cannot fetch the rates of {base}: {err}"),
    }
}

fn main() {
    let options = ServerOptions { latency: Duration::from_millis(100), ..ServerOptions::default() };
    let server = rates_server::spawn(Dataset::embedded(), options).expect("start the rates server");
    let client = BlockingClient::new(server.url(), Default::default()).expect("a valid URL");
    let symbols = Currency::parse_list(rates_core::CHAPTER_CURRENCIES).expect("valid codes");
    let bases = symbols.clone();

    let started = Instant::now();
    let (client, symbols) = (&client, &symbols[..]);
    thread::scope(|s| {
        let threads: Vec<_> = bases.iter().map(|&base| s.spawn(move || fetch_rates(client, base, symbols))).collect();
        for thread in threads {
            thread.join().expect("a thread panicked");
        }
    });
    println!();
    println!("{}", present::elapsed_line(started.elapsed()));
}
