//! Listing 8, "two-way queues": the workers of the thread pool no longer
//! print. Each puts its answer on a results queue, and the main thread
//! presents the results once the workers are done.
//!
//! Doing (fetching, on the workers) is now separate from presenting (on the
//! main thread), so output can no longer interleave, and the main thread
//! could sort, aggregate or format the results any way it likes.
//!
//! Both queues are crossbeam channels. A `rates_core::Rates` is the chapter's
//! `(base, rates)` pair: it carries its base. A failed fetch is only
//! reported on stderr by the worker and its item goes missing from the
//! results; listing 9 (`error_handling`) sends errors back instead.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p rates-cli --example two_way_queues
//! ```

use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use rates_core::{BlockingClient, Currency, Dataset, RateRequest, Rates, present};
use rates_server::ServerOptions;

const THREAD_POOL_SIZE: usize = 4;

/// `GET /rates?base=...`.
fn fetch_rates(client: &BlockingClient, base: Currency) -> Option<Rates> {
    let request = RateRequest { base, symbols: vec![], date: None };
    match client.fetch(&request) {
        Ok(rates) => Some(rates),
        Err(err) => {
            eprintln!("error: cannot fetch the rates of {base}: {err}");
            None
        }
    }
}

/// Takes bases off the work queue until it is empty, and puts the answers
/// on the results queue.
fn worker(work_queue: &Receiver<Currency>, results_queue: &Sender<Rates>, client: &BlockingClient) {
    for base in work_queue {
        if let Some(rates) = fetch_rates(client, base) {
            results_queue.send(rates).expect("the results queue is open");
        }
    }
}

fn present_result(rates: &Rates, symbols: &[Currency]) {
    println!("{}", present::chapter_line(rates, symbols));
}

fn main() {
    let options = ServerOptions { latency: Duration::from_millis(100), ..ServerOptions::default() };
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
    // No more work: a worker's loop ends once the queue is empty.
    drop(work_tx);

    thread::scope(|s| {
        let threads: Vec<_> =
            (0..THREAD_POOL_SIZE).map(|_| s.spawn(|| worker(&work_queue, &results_queue, &client))).collect();
        for thread in threads {
            thread.join().expect("a worker panicked");
        }
    });

    // The workers are done, so every result is on the queue already.
    for rates in results_rx.try_iter() {
        present_result(&rates, &symbols);
    }
    println!();
    println!("{}", present::elapsed_line(started.elapsed()));
}
