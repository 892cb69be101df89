//! Listing 7, "thread pool": the bases go on a work queue; a fixed number of
//! worker threads (4) take items until the queue is empty, fetching and
//! printing each; the main thread waits for them and joins them.
//!
//! Unlike one thread per item, the number of threads no longer grows with
//! the number of items. With 5 bases and 4 workers, one worker makes two
//! requests one after the other, so the run takes about two request times.
//!
//! The work queue is a crossbeam channel. The main thread fills it and then
//! drops its sender, so a worker's `for base in work_queue` loop ends once
//! the queue is empty: the chapter's `while not work_queue.empty():
//! work_queue.get_nowait()`. Joining the workers also stands for the
//! chapter's `work_queue.join()`: when every worker has returned, every item
//! has been handled.
//!
//! Pass `--concur` to run the same with the library's `concur::ThreadPool`,
//! which keeps this queue and these workers inside it.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p rates-cli --example thread_pool
//! cargo run -p rates-cli --example thread_pool -- --concur
//! ```

use std::thread;
use std::time::{Duration, Instant};

use concur::ThreadPool;
use crossbeam_channel::Receiver;
use rates_core::{BlockingClient, Currency, Dataset, RateRequest, present};
use rates_server::ServerOptions;

const THREAD_POOL_SIZE: usize = 4;

/// `GET /rates?base=...` and print the chapter's line, or the error.
fn fetch_rates(client: &BlockingClient, base: Currency, symbols: &[Currency]) {
    let request = RateRequest { base, symbols: vec![], date: None };
    match client.fetch(&request) {
        Ok(rates) => println!("{}", present::chapter_line(&rates, symbols)),
        Err(err) => eprintln!("error: cannot fetch the rates of {base}: {err}"),
    }
}

/// Takes bases off the queue until it is empty.
fn worker(work_queue: &Receiver<Currency>, client: &BlockingClient, symbols: &[Currency]) {
    for base in work_queue {
        fetch_rates(client, base, symbols);
    }
}

fn main() {
    let options = ServerOptions { latency: Duration::from_millis(100), ..ServerOptions::default() };
    let server = rates_server::spawn(Dataset::embedded(), options).expect("start the rates server");
    let client = BlockingClient::new(server.url(), Default::default()).expect("a valid URL");
    let symbols = Currency::parse_list(rates_core::CHAPTER_CURRENCIES).expect("valid codes");
    let bases = symbols.clone();

    let started = Instant::now();
    if std::env::args().any(|arg| arg == "--concur") {
        // The library's pool: `map` queues the items and 4 workers run them.
        let pool = ThreadPool::new(THREAD_POOL_SIZE).expect("start the pool");
        let (client, symbols) = (client.clone(), symbols.clone());
        let done = pool.map_fn(move |base| fetch_rates(&client, base, &symbols), bases);
        for err in done.into_iter().filter_map(Result::err) {
            eprintln!("error: a task failed: {err}");
        }
    } else {
        let (work_tx, work_queue) = crossbeam_channel::unbounded();
        for base in bases {
            work_tx.send(base).expect("the queue is open");
        }
        drop(work_tx);

        thread::scope(|s| {
            let threads: Vec<_> =
                (0..THREAD_POOL_SIZE).map(|_| s.spawn(|| worker(&work_queue, &client, &symbols))).collect();
            for thread in threads {
                thread.join().expect("a worker panicked");
            }
        });
    }
    println!();
    println!("{}", present::elapsed_line(started.elapsed()));
}
