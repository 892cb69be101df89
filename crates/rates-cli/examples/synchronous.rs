//! Listing 5, "synchronous": fetch the rates of the five bases one after
//! another, printing a line for each, then the time it took.
//!
//! This is the baseline of the chapter's application. Each request spends
//! almost all its time waiting on the network (here 100 ms of simulated
//! latency from the in-process server), and the waits add up: about 0.5 s
//! for five bases. The next listings do the same work concurrently.
//!
//! The chapter asks `https://api.vatcomply.com`; this example starts a
//! compatible server in-process (`rates_server::spawn`) over the embedded ECB
//! dataset, so it runs without a network.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p rates-cli --example synchronous
//! ```

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
    // The chapter's SYMBOLS and BASES are the same five currencies.
    let symbols = Currency::parse_list(rates_core::CHAPTER_CURRENCIES).expect("valid codes");
    let bases = symbols.clone();

    let started = Instant::now();
    for &base in &bases {
        fetch_rates(&client, base, &symbols);
    }
    println!();
    println!("{}", present::elapsed_line(started.elapsed()));
}
