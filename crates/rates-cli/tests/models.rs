//! The fetch models against the in-process server: concurrency bounds seen
//! from the server's side, every item accounted for under failures, and a
//! throttled client that stays within the server's rate limit.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use rates_core::{ClientConfig, Fetcher, Model, RateRequest, RetryPolicy, Workers};
use rates_server::{Quota, RunningServer, ServerOptions, spawn};

fn server(options: ServerOptions) -> RunningServer {
    spawn(rates_core::Dataset::embedded(), options).unwrap()
}

/// `n` requests cycling through the chapter's bases.
fn requests(n: usize) -> Vec<RateRequest> {
    let bases = rates_core::Currency::parse_list(rates_core::CHAPTER_CURRENCIES).unwrap();
    (0..n).map(|i| RateRequest { base: bases[i % bases.len()], symbols: bases.clone(), date: None }).collect()
}

fn fetcher(s: &RunningServer, retry: RetryPolicy, throttle: Option<concur::Throttle>) -> Arc<Fetcher> {
    // Worker processes are the `rates` binary, which enters worker mode; this
    // test binary does not.
    let f = Fetcher::new(s.url(), ClientConfig::default())
        .unwrap()
        .with_worker_program(assert_cmd::cargo::cargo_bin("rates"));
    Arc::new(f.with_retry(retry).with_throttle(throttle.map(Arc::new)))
}

fn run(model: Model, f: &Arc<Fetcher>, reqs: &[RateRequest], workers: usize) -> Vec<rates_core::Outcome> {
    rates_core::models::run(model, f, reqs, Workers::bounded(workers).expect("not zero"))
}

fn latency(ms: u64) -> ServerOptions {
    ServerOptions { latency: Duration::from_millis(ms), ..Default::default() }
}

#[test]
fn pooled_models_hold_exactly_workers_requests_in_flight() {
    for model in [
        Model::ThreadPool,
        Model::TwoWayQueues,
        Model::ProcessPool,
        Model::DummyPool,
        Model::Async,
        Model::AsyncExecutor,
    ] {
        let s = server(latency(50));
        let out = run(model, &fetcher(&s, RetryPolicy::none(), None), &requests(40), 4);
        assert!(out.iter().all(Result::is_ok), "{model}");
        let m = s.metrics().snapshot();
        assert_eq!((m.count(200), m.max_in_flight), (40, 4), "{model}");
    }
}

#[test]
fn sync_holds_one_request_in_flight() {
    let s = server(latency(5));
    let out = run(Model::Sync, &fetcher(&s, RetryPolicy::none(), None), &requests(10), 4);
    assert_eq!(out.len(), 10);
    assert_eq!(s.metrics().snapshot().max_in_flight, 1);
}

#[test]
fn thread_per_item_holds_every_item_in_flight() {
    // Long enough for all 40 threads to start while the first still waits.
    let s = server(latency(1000));
    let out = run(Model::ThreadPerItem, &fetcher(&s, RetryPolicy::none(), None), &requests(40), 4);
    assert!(out.iter().all(Result::is_ok));
    assert_eq!(s.metrics().snapshot().max_in_flight, 40);
}

#[test]
fn every_model_returns_the_same_ordered_results() {
    let s = server(ServerOptions::default());
    let f = fetcher(&s, RetryPolicy::none(), None);
    let reqs = requests(12);
    let want = run(Model::Sync, &f, &reqs, 1);
    for &model in Model::ALL {
        assert_eq!(run(model, &f, &reqs, 3), want, "{model}");
    }
    assert!(want.iter().zip(&reqs).all(|(r, q)| r.as_ref().unwrap().base == q.base));
}

#[test]
fn with_retries_every_item_is_accounted_for_exactly_once() {
    let s = server(ServerOptions { fail_rate: 0.3, ..Default::default() });
    let retry = RetryPolicy {
        retries: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        ..RetryPolicy::default()
    };
    let f = fetcher(&s, retry, None);
    for &model in Model::ALL {
        s.metrics().reset();
        let out = run(model, &f, &requests(60), 4);
        assert_eq!(out.len(), 60, "{model}");
        let ok = out.iter().filter(|o| o.is_ok()).count() as u64;
        let failed: Vec<_> = out.iter().filter_map(|o| o.as_ref().err()).collect();
        let m = s.metrics().snapshot();
        // One 200 per success, and every attempt the client reports was a
        // request the server saw: nothing lost, nothing counted twice.
        assert_eq!(m.count(200), ok, "{model}");
        assert!(failed.iter().all(|f| f.attempts == 4), "{model}: {failed:?}");
        assert_eq!(m.total(), ok + m.count(500), "{model}");
        assert!(m.count(500) >= failed.len() as u64 * 4, "{model}");
    }
}

#[test]
fn without_retries_failures_are_reported_once_each() {
    let s = server(ServerOptions { fail_rate: 0.3, ..Default::default() });
    let f = fetcher(&s, RetryPolicy::none(), None);
    for &model in Model::ALL {
        s.metrics().reset();
        let out = run(model, &f, &requests(60), 4);
        let failed = out.iter().filter(|o| o.is_err()).count() as u64;
        let m = s.metrics().snapshot();
        assert_eq!((m.count(500), m.count(200)), (failed, 60 - failed), "{model}");
        for o in out.iter().filter_map(|o| o.as_ref().err()) {
            assert_eq!(o.attempts, 1);
            assert_eq!(o.error.to_string(), "HTTP 500: Injected failure.");
        }
    }
}

#[test]
fn a_client_throttled_at_the_servers_rate_gets_no_429() {
    // The server allows 20/s with a burst of 4; the client paces itself at
    // exactly 20/s. The three requests of slack absorb up to 150 ms between a
    // grant and its request reaching the server, on a busy machine.
    let s = server(ServerOptions { rate_limit: Some(Quota::new(20.0, 4).unwrap()), ..Default::default() });
    let throttle = concur::Throttle::new(20.0, 1).unwrap();
    let f = fetcher(&s, RetryPolicy::none(), Some(throttle));
    let out = run(Model::ThreadPool, &f, &requests(30), 4);
    assert!(out.iter().all(Result::is_ok), "{:?}", out.iter().find(|o| o.is_err()));
    let m = s.metrics().snapshot();
    assert_eq!((m.count(200), m.rate_limited), (30, 0));
}

#[test]
fn an_unthrottled_client_is_refused_by_the_same_limit_and_loses_nothing() {
    // The control for the test above: the limit does bite without a throttle.
    // Its 429s say when to come back ("not yet"), which spends no retry:
    // even without retries every request ends answered.
    let s = server(ServerOptions { rate_limit: Some(Quota::new(20.0, 4).unwrap()), ..Default::default() });
    let out = run(Model::ThreadPool, &fetcher(&s, RetryPolicy::none(), None), &requests(30), 4);
    assert!(out.iter().all(Result::is_ok), "{:?}", out.iter().find(|o| o.is_err()));
    assert!(s.metrics().snapshot().rate_limited > 0);
}

#[test]
fn async_holds_exactly_workers_in_flight_or_everything_when_unlimited() {
    let s = server(latency(50));
    let f = fetcher(&s, RetryPolicy::none(), None);
    let out = run(Model::Async, &f, &requests(100), 8);
    assert!(out.iter().all(Result::is_ok));
    assert_eq!(s.metrics().snapshot().max_in_flight, 8);

    // Unlimited: the chapter's gather, every request at once.
    let s = server(latency(1000));
    let f = fetcher(&s, RetryPolicy::none(), None);
    let out = rates_core::models::run(Model::Async, &f, &requests(100), Workers::Unlimited);
    assert!(out.iter().all(Result::is_ok));
    assert_eq!(s.metrics().snapshot().max_in_flight, 100);
}

#[test]
fn async_executor_is_bounded_by_its_executor() {
    let s = server(latency(50));
    let f = fetcher(&s, RetryPolicy::none(), None);
    let out = run(Model::AsyncExecutor, &f, &requests(100), 8);
    assert!(out.iter().all(Result::is_ok));
    assert_eq!(s.metrics().snapshot().max_in_flight, 8);
}

#[test]
fn a_cancelled_run_starts_nothing_and_reports_every_item_cancelled() {
    let s = server(ServerOptions::default());
    let f = fetcher(&s, RetryPolicy::none(), None);
    f.cancel().cancel();
    for &model in Model::ALL {
        let out = run(model, &f, &requests(7), 3);
        assert_eq!(out.len(), 7);
        for o in &out {
            let failure = o.as_ref().unwrap_err();
            assert_eq!((&failure.error, failure.attempts), (&rates_core::FetchError::Cancelled, 0), "{model}");
        }
    }
    assert_eq!(s.metrics().snapshot().total(), 0);
}

#[test]
fn cancelling_async_mid_run_drops_requests_in_flight() {
    let s = server(latency(10_000));
    let f = fetcher(&s, RetryPolicy::none(), None);
    let cancel = f.cancel().clone();
    let run = std::thread::spawn(move || rates_core::models::run(Model::Async, &f, &requests(10), Workers::Unlimited));
    std::thread::sleep(Duration::from_millis(200));
    cancel.cancel();
    // Ends long before the server's 10 s latency: the requests were dropped.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !run.is_finished() {
        assert!(std::time::Instant::now() < deadline, "the run ends soon after cancel");
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = run.join().unwrap();
    assert!(out.iter().all(|o| o.as_ref().is_err_and(|f| f.error == rates_core::FetchError::Cancelled)));
}
