//! Listing 9, "error handling": a fetch can fail, and the error travels
//! back to the main thread as a value.
//!
//! The in-process server answers about one request in six with status 500
//! (`fail_rate: 1.0 / 6.0`, where the chapter overrides the status code in
//! the client). Each fetch is a single attempt (`client.fetch`, no retries).
//! A worker does not die on an error: it puts either the rates or the error
//! itself on the results queue, as a `Result`, and takes the next item, so
//! the work queue still drains and nothing hangs. The main thread presents
//! the results in the order they arrived and re-raises the first error it
//! meets: `result?` returns it from `main`, which prints it on stderr and
//! exits with status 1, so the program fails visibly instead of silently
//! losing an item. (With `RUST_BACKTRACE=1`, anyhow also prints where the
//! error was made, much like Python's traceback.)
//!
//! With five requests, all succeed in about 40% of runs ((5/6)^5); run it a
//! few times to see both endings.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p rates-cli --example error_handling
//! ```

use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use crossbeam_channel::{Receiver, Sender};
use rates_core::{BlockingClient, Currency, Dataset, RateRequest, Rates, present};
use rates_server::ServerOptions;

const THREAD_POOL_SIZE: usize = 4;

/// One attempt at `GET /rates?base=...`.
fn fetch_rates(client: &BlockingClient, base: Currency) -> anyhow::Result<Rates> {
    let request = RateRequest { base, symbols: vec![], date: None };
    let rates = client.fetch(&request).with_context(|| format!("cannot fetch the rates of {base}"))?;
    Ok(rates)
}

/// Takes bases off the work queue until it is empty, and puts each answer,
/// rates or error, on the results queue.
fn worker(work_queue: &Receiver<Currency>, results_queue: &Sender<anyhow::Result<Rates>>, client: &BlockingClient) {
    for base in work_queue {
        let result = fetch_rates(client, base);
        results_queue.send(result).expect("the results queue is open");
    }
}

fn present_result(rates: &Rates, symbols: &[Currency]) {
    println!("{}", present::chapter_line(rates, symbols));
}

fn main() -> anyhow::Result<()> {
    let options =
        ServerOptions { latency: Duration::from_millis(100), fail_rate: 1.0 / 6.0, ..ServerOptions::default() };
    let server = rates_server::spawn(Dataset::embedded(), options).expect("start the rates server");
    let client = BlockingClient::new(server.url(), Default::default()).expect("a valid URL");
    let symbols = Currency::parse_list(rates_core::CHAPTER_CURRENCIES).expect("valid codes");
    let bases = symbols.clone();

    let started = Instant::now();
    let (work_tx, work_queue) = crossbeam_channel::unbounded();
    let (results_queue, results_rx) = crossbeam_channel::unbounded();
    for base in bases {
        work_tx.send(base).expect("the queue is open");
    }
    drop(work_tx);

    thread::scope(|s| {
        let threads: Vec<_> =
            (0..THREAD_POOL_SIZE).map(|_| s.spawn(|| worker(&work_queue, &results_queue, &client))).collect();
        for thread in threads {
            thread.join().expect("a worker panicked");
        }
    });

    for result in results_rx.try_iter() {
        // The chapter's `if isinstance(result, Exception): raise result`.
        let rates = result?;
        present_result(&rates, &symbols);
    }
    println!();
    println!("{}", present::elapsed_line(started.elapsed()));
    Ok(())
}
