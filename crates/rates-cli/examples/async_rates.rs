//! Listing 20, "async rates": the chapter's application with asyncio and
//! aiohttp — one asynchronous HTTP session, a coroutine per base, gathered,
//! the results presented in order.
//!
//! `rates_core::AsyncClient` (over reqwest) is the aiohttp session: one client and
//! one connection pool shared by every task. Each base gets a task on a
//! current-thread tokio runtime, so one thread runs all five requests: while
//! a request waits on the network its task is suspended and the others make
//! progress. The handles are awaited in input order, like `asyncio.gather`,
//! so the lines come out in the order of the bases whatever order the answers
//! arrive in, and the whole run takes about one request's time (~0.1 s here)
//! instead of five (listing 5, `synchronous`).
//!
//! The chapter asks `https://api.vatcomply.com`; this example starts a
//! compatible server in-process (`rates_server::spawn`, on its own thread)
//! over the embedded ECB dataset, with 100 ms of simulated latency, so it
//! runs without a network.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p rates-cli --example async_rates
//! ```

use std::time::{Duration, Instant};

use rates_core::{AsyncClient, Currency, Dataset, FetchError, RateRequest, Rates, present};
use rates_server::ServerOptions;

/// `GET /rates?base=...`: the chapter's `get_rates(session, base)`.
async fn get_rates(client: AsyncClient, base: Currency) -> Result<Rates, FetchError> {
    client.fetch(&RateRequest { base, symbols: vec![], date: None }).await
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let options = ServerOptions { latency: Duration::from_millis(100), ..ServerOptions::default() };
    let server = rates_server::spawn(Dataset::embedded(), options).expect("start the rates server");
    let client = AsyncClient::new(server.url(), Default::default()).expect("a valid URL and an HTTP stack");
    // The chapter's SYMBOLS and BASES are the same five currencies.
    let symbols = Currency::parse_list(rates_core::CHAPTER_CURRENCIES).expect("valid codes");
    let bases = symbols.clone();

    let started = Instant::now();
    // A task per base, all started before any is awaited...
    let tasks: Vec<_> = bases.iter().map(|&base| (base, tokio::spawn(get_rates(client.clone(), base)))).collect();
    // ...then gathered in order.
    for (base, task) in tasks {
        match task.await {
            Ok(Ok(rates)) => println!("{}", present::chapter_line(&rates, &symbols)),
            Ok(Err(err)) => eprintln!("error: cannot fetch the rates of {base}: {err}"),
            Err(err) => eprintln!("error: the task fetching the rates of {base} failed: {err}"),
        }
    }
    println!();
    println!("{}", present::elapsed_line(started.elapsed()));
}
