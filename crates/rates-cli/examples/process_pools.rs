//! Listing 15, "process pools": a pool of 4 worker processes maps the fetch
//! function over the bases and returns the results in order; the main
//! process presents them.
//!
//! The workers are this example's own executable started again:
//! `concur::worker_main` at the top of `main` turns such a child into a
//! worker (the counterpart of Python's spawn start method). What crosses to a
//! worker is a `rates_core::models::FetchOnce` task, serialised; what comes back is
//! its serialised result.
//!
//! ```text
//! cargo run --example process_pools
//! ```

use std::time::{Duration, Instant};

use concur::{Pool, ProcessPool};
use rates_core::models::FetchOnce;
use rates_core::{ClientConfig, Currency, Dataset, RateRequest, present};
use rates_server::ServerOptions;

fn main() {
    // In a worker process this serves tasks and exits; here it returns.
    concur::worker_main(rates_core::models::registry());

    let server = rates_server::spawn(
        Dataset::embedded(),
        ServerOptions { latency: Duration::from_millis(100), ..ServerOptions::default() },
    )
    .expect("start the rates server");
    let symbols = Currency::parse_list(rates_core::CHAPTER_CURRENCIES).expect("valid codes");

    let started = Instant::now();
    let pool = ProcessPool::new(4).expect("start 4 worker processes");
    let tasks = symbols.iter().map(|&base| FetchOnce {
        api: server.url().to_string(),
        config: ClientConfig::default(),
        request: RateRequest { base, symbols: vec![], date: None },
    });
    for result in pool.map(tasks) {
        match result {
            Ok(Ok(reply)) => println!("{}", present::chapter_line(&reply.rates, &symbols)),
            Ok(Err(e)) => eprintln!("error: {e}"),
            Err(e) => eprintln!("error: the worker failed: {e}"),
        }
    }
    println!("\n{}", present::elapsed_line(started.elapsed()));
}
