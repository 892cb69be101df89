//! Listing 10, "throttling": a token bucket shared by all workers keeps the
//! program within the API's request-rate limit.
//!
//! The in-process server allows 4 requests per second per client (bursts of
//! 4) and answers 429 Too Many Requests beyond that. The program fetches 20
//! rates (the five bases four times) with 4 workers, all sharing the
//! chapter's throttle, `concur::Throttle::chapter(4.0)`: it starts empty,
//! tokens accrue at 4 per second from the first request on, and it never
//! holds more than 4. Before each fetch a worker calls `consume(1)`; while
//! that returns 0 it sleeps 0.1 s and asks again. That polling is the
//! listing's; the library's `Throttle::acquire` computes the exact wait and
//! sleeps once instead (as `rates fetch --rate` does).
//!
//! The run takes about 5 s (20 tokens at 4 per second), and the server's
//! own counters, printed last, show that no request was refused with 429.
//! Pass `--unthrottled` to skip the throttle and watch most requests get 429.
//!
//! Unlike listing 9, which stops at the first error, the main thread here
//! reports every error and exits with status 1 if there was any, so the
//! count of refused requests stays visible.
//!
//! Run it with:
//!
//! ```text
//! cargo run -p rates-cli --example throttling
//! cargo run -p rates-cli --example throttling -- --unthrottled
//! ```

use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use concur::Throttle;
use crossbeam_channel::{Receiver, Sender};
use rates_core::{BlockingClient, Currency, Dataset, RateRequest, Rates, present};
use rates_server::{Quota, ServerOptions};

const THREAD_POOL_SIZE: usize = 4;
/// Requests per second: the server's limit and the throttle's rate.
const RATE: f64 = 4.0;

/// One attempt at `GET /rates?base=...`.
fn fetch_rates(client: &BlockingClient, base: Currency) -> anyhow::Result<Rates> {
    let request = RateRequest { base, symbols: vec![], date: None };
    let rates = client.fetch(&request).with_context(|| format!("cannot fetch the rates of {base}"))?;
    Ok(rates)
}

/// Takes bases off the work queue until it is empty; waits for a token
/// before each fetch and puts each answer, rates or error, on the results
/// queue.
fn worker(
    work_queue: &Receiver<Currency>,
    results_queue: &Sender<anyhow::Result<Rates>>,
    client: &BlockingClient,
    throttle: Option<&Throttle>,
) {
    for base in work_queue {
        if let Some(throttle) = throttle {
            // The listing's polling: no token yet, so sleep 0.1 s and ask
            // again. (`throttle.acquire()` would sleep exactly long enough.)
            while throttle.consume(1) == 0 {
                thread::sleep(Duration::from_millis(100));
            }
        }
        let result = fetch_rates(client, base);
        results_queue.send(result).expect("the results queue is open");
    }
}

fn main() -> ExitCode {
    let throttled = !std::env::args().any(|arg| arg == "--unthrottled");
    let options = ServerOptions {
        latency: Duration::from_millis(100),
        rate_limit: Some(Quota::new(RATE, 4).expect("a valid quota")),
        ..ServerOptions::default()
    };
    let server = rates_server::spawn(Dataset::embedded(), options).expect("start the rates server");
    let client = BlockingClient::new(server.url(), Default::default()).expect("a valid URL");
    let symbols = Currency::parse_list(rates_core::CHAPTER_CURRENCIES).expect("valid codes");
    let throttle = Throttle::chapter(RATE).expect("a valid rate");

    let started = Instant::now();
    let (work_tx, work_queue) = crossbeam_channel::unbounded();
    let (results_queue, results_rx) = crossbeam_channel::unbounded();
    for &base in symbols.iter().cycle().take(20) {
        work_tx.send(base).expect("the queue is open");
    }
    drop(work_tx);

    // `--unthrottled`: the workers skip the throttle.
    let throttle = throttled.then_some(&throttle);
    thread::scope(|s| {
        let threads: Vec<_> =
            (0..THREAD_POOL_SIZE).map(|_| s.spawn(|| worker(&work_queue, &results_queue, &client, throttle))).collect();
        for thread in threads {
            thread.join().expect("a worker panicked");
        }
    });

    let mut failed = 0;
    for result in results_rx.try_iter() {
        match result {
            Ok(rates) => println!("{}", present::chapter_line(&rates, &symbols)),
            Err(err) => {
                failed += 1;
                eprintln!("error: {err:#}");
            }
        }
    }
    println!();
    println!("{}", present::elapsed_line(started.elapsed()));
    let counts = server.metrics().snapshot();
    println!(
        "server: {} requests, {} answered 200, {} refused with 429",
        counts.total(),
        counts.count(200),
        counts.count(429)
    );
    if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}
