//! Listing 21, "async futures": the blocking HTTP client called from async
//! code through an executor, Python's `loop.run_in_executor`.
//!
//! `rates_core::BlockingClient` (the chapter's `requests`) blocks its thread for the whole
//! request; called directly from a task it would stall the event loop, as the
//! blocking sleep does in listing 18 (`waiters`). A `concur::Bridge` runs
//! each blocking fetch on one of its worker threads instead, and hands back
//! its result as a future that the async code awaits. So a blocking library
//! can be used from async code, and the five requests still overlap: the
//! output is that of listing 20 (`async_rates`), in about one request's time.
//!
//! As with `run_in_executor`, `Bridge::run` queues the job at once, not when
//! its future is first polled: all five are queued before the first is
//! awaited, and awaiting them in order gathers them in order. The bridge has
//! a thread per base here; a smaller one would run at most that many
//! blocking fetches at once and queue the rest.
//!
//! The chapter asks `https://api.vatcomply.com`; this example starts a
//! compatible server in-process (`rates_server::spawn`) over the embedded ECB
//! dataset, with 100 ms of simulated latency, so it runs without a network.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p rates-cli --example async_futures
//! ```

use std::time::{Duration, Instant};

use concur::Bridge;
use rates_core::{BlockingClient, Currency, Dataset, FetchError, RateRequest, Rates, present};
use rates_server::ServerOptions;

/// The blocking `GET /rates?base=...`: the chapter's `get_rates(base)` with
/// `requests`.
fn get_rates(client: &BlockingClient, base: Currency) -> Result<Rates, FetchError> {
    client.fetch(&RateRequest { base, symbols: vec![], date: None })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let options = ServerOptions { latency: Duration::from_millis(100), ..ServerOptions::default() };
    let server = rates_server::spawn(Dataset::embedded(), options).expect("start the rates server");
    let client = BlockingClient::new(server.url(), Default::default()).expect("a valid URL");
    // The chapter's SYMBOLS and BASES are the same five currencies.
    let symbols = Currency::parse_list(rates_core::CHAPTER_CURRENCIES).expect("valid codes");
    let bases = symbols.clone();
    let executor = Bridge::new(bases.len()).expect("start the executor threads");

    let started = Instant::now();
    // `loop.run_in_executor(None, get_rates, base)` for every base: each
    // blocking fetch is queued now, on an executor thread...
    let jobs: Vec<_> = bases
        .iter()
        .map(|&base| {
            let client = client.clone();
            (base, executor.run(move || get_rates(&client, base)))
        })
        .collect();
    // ...and awaited as a future, in order.
    for (base, job) in jobs {
        match job.await {
            Ok(Ok(rates)) => println!("{}", present::chapter_line(&rates, &symbols)),
            Ok(Err(err)) => eprintln!("error: cannot fetch the rates of {base}: {err}"),
            Err(err) => eprintln!("error: the executor job fetching the rates of {base} failed: {err}"),
        }
    }
    println!();
    println!("{}", present::elapsed_line(started.elapsed()));
}
