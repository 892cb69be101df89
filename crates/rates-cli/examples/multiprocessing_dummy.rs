//! Listing 16, "multiprocessing.dummy": the process-pools program with a
//! flag that picks either worker processes or worker threads. Both pools
//! implement `concur::Pool`, so the code that fetches is written once,
//! against the trait, and the flag changes only the line that builds the
//! pool.
//!
//! In Python the switch trades the GIL (threads) against serialisation and
//! process start-up (processes). Rust threads have no GIL, so here threads
//! win on cost and processes buy isolation: a crashing task cannot take the
//! program down.
//!
//! ```text
//! cargo run --example multiprocessing_dummy              # worker processes
//! cargo run --example multiprocessing_dummy -- --threads # worker threads
//! ```

use std::time::{Duration, Instant};

use concur::{Pool, ProcessPool, ThreadPool};
use rates_core::models::FetchOnce;
use rates_core::{ClientConfig, Currency, Dataset, RateRequest, present};
use rates_server::ServerOptions;

const POOL_SIZE: usize = 4;

/// The program proper: the same for threads and processes.
fn main_with(pool: &impl Pool, api: &str, symbols: &[Currency]) {
    let tasks = symbols.iter().map(|&base| FetchOnce {
        api: api.to_string(),
        config: ClientConfig::default(),
        request: RateRequest { base, symbols: vec![], date: None },
    });
    for result in pool.map(tasks) {
        match result {
            Ok(Ok(reply)) => println!("{}", present::chapter_line(&reply.rates, symbols)),
            Ok(Err(e)) => eprintln!("error: {e}"),
            Err(e) => eprintln!("error: the worker failed: {e}"),
        }
    }
}

fn main() {
    concur::worker_main(rates_core::models::registry());

    let server = rates_server::spawn(
        Dataset::embedded(),
        ServerOptions { latency: Duration::from_millis(100), ..ServerOptions::default() },
    )
    .expect("start the rates server");
    let symbols = Currency::parse_list(rates_core::CHAPTER_CURRENCIES).expect("valid codes");

    let use_threads = std::env::args().any(|a| a == "--threads");
    let started = Instant::now();
    if use_threads {
        main_with(&ThreadPool::new(POOL_SIZE).expect("start threads"), server.url(), &symbols);
    } else {
        main_with(&ProcessPool::new(POOL_SIZE).expect("start processes"), server.url(), &symbols);
    }
    println!("\n{}", present::elapsed_line(started.elapsed()));
    eprintln!("({})", if use_threads { "threads" } else { "processes" });
}
