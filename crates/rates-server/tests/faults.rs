//! Fault injection and `/metrics` under load: concurrency is counted right,
//! latency does not serialise requests, the fail rate holds statistically,
//! and the rate limit answers 429 with `Retry-After`.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use rates_server::{Quota, ServerOptions};
use support::{agent, get, get_json, server};

#[test]
fn max_in_flight_counts_concurrent_requests_and_latency_does_not_block() {
    let s = server(ServerOptions { latency: Duration::from_secs(1), ..Default::default() });
    let a = agent();
    // Ten requests held by the server at once; they all finish, so the
    // server kept serving while each one waited.
    let barrier = std::sync::Barrier::new(10);
    std::thread::scope(|scope| {
        for _ in 0..10 {
            scope.spawn(|| {
                barrier.wait();
                assert_eq!(get(&a, &s, "/rates?base=USD").0, 200);
            });
        }
    });
    let m = s.metrics().snapshot();
    assert_eq!(m.count(200), 10);
    assert_eq!(m.in_flight, 0);
    // All ten were released together and each is held a second, so all ten
    // overlap; a server that serialised its waits would show 1.
    assert_eq!(m.max_in_flight, 10, "{m:?}");
}

#[test]
fn max_in_flight_is_exact_for_a_bounded_client() {
    let s = server(ServerOptions { latency: Duration::from_millis(50), ..Default::default() });
    let a = agent();
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                for _ in 0..5 {
                    assert_eq!(get(&a, &s, "/rates").0, 200);
                }
            });
        }
    });
    let m = s.metrics().snapshot();
    assert_eq!(m.count(200), 15);
    assert!(m.max_in_flight <= 3, "never more than the client's 3 threads: {m:?}");
}

#[test]
fn fail_rate_holds_within_statistical_bounds() {
    let s = server(ServerOptions { fail_rate: 0.3, ..Default::default() });
    let a = agent();
    let n = 400;
    let mut failures = 0;
    for _ in 0..n {
        let (status, body) = get_json(&a, &s, "/rates?base=USD");
        if status == 500 {
            assert_eq!(body["detail"], "Injected failure.");
            failures += 1;
        } else {
            assert_eq!(status, 200);
        }
    }
    // Binomial(400, 0.3): mean 120, sd 9.2; ±6 sd fails once in ~10^9 runs.
    assert!((65..=175).contains(&failures), "{failures} failures of {n}");
    assert_eq!(s.metrics().snapshot().count(500), failures);
}

#[test]
fn rate_limit_answers_429_with_retry_after() {
    // 0.01/s: no token comes back during the test, however slow the machine.
    let s = server(ServerOptions { rate_limit: Some(Quota::new(0.01, 3).unwrap()), ..Default::default() });
    let a = agent();
    let statuses: Vec<(u16, Option<String>)> = (0..5)
        .map(|_| {
            let (status, retry, _) = get(&a, &s, "/rates");
            (status, retry)
        })
        .collect();
    assert_eq!(statuses[..3], [(200, None), (200, None), (200, None)]);
    for (status, retry) in &statuses[3..] {
        assert_eq!(*status, 429);
        let secs: u64 = retry.as_deref().unwrap().parse().unwrap();
        assert!((1..=100).contains(&secs), "Retry-After {secs}");
    }
    let (_, body) = get_json(&a, &s, "/rates");
    assert_eq!(
        body,
        serde_json::json!({"detail": "Rate limit exceeded. Try again in 100 seconds.", "retry_after": 100})
    );
    let m = s.metrics().snapshot();
    assert_eq!((m.count(429), m.rate_limited), (3, 3));
    // Monitoring is never limited.
    assert_eq!(get(&a, &s, "/metrics").0, 200);
}

#[test]
fn jitter_and_latency_apply_and_the_server_stops() {
    let s = server(ServerOptions {
        latency: Duration::from_millis(20),
        jitter: Duration::from_millis(20),
        ..Default::default()
    });
    let a = agent();
    assert_eq!(get(&a, &s, "/rates").0, 200);
    let url = s.url().to_string();
    s.stop();
    assert!(a.get(format!("{url}/rates")).call().is_err(), "stopped server still answers");
}

#[test]
fn bad_options_are_refused() {
    let bad =
        rates_server::spawn(rates_core::Dataset::embedded(), ServerOptions { fail_rate: 1.5, ..Default::default() });
    assert!(bad.is_err_and(|e| e.to_string().contains("'1.5'")));
    // A rate limit of burst 0 cannot even be given to a server.
    assert!(Quota::new(1.0, 0).is_err());
}

/// `GET path` → (status, every rate-limit header, by lower-case name).
fn limit_headers(a: &ureq::Agent, s: &rates_server::RunningServer, path: &str) -> (u16, Vec<(String, String)>) {
    let r = a.get(format!("{}{path}", s.url())).call().unwrap();
    let mut found: Vec<(String, String)> = r
        .headers()
        .iter()
        .filter(|(name, _)| name.as_str().contains("ratelimit") || name.as_str() == "retry-after")
        .map(|(name, v)| (name.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    found.sort();
    (r.status().as_u16(), found)
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    v.sort();
    v
}

#[test]
fn with_standard_headers_limited_answers_carry_them() {
    // 0.01/s: no token comes back during the test, so the numbers are
    // exact; the policy is the burst of 3 per the 300 s that refill it.
    let limit = Some(Quota::new(0.01, 3).unwrap());
    let s = server(ServerOptions { rate_limit: limit, rate_limit_headers: true, ..Default::default() });
    let a = agent();
    let policy = ("ratelimit-policy", "\"default\";q=3;w=300");
    for remaining in ["2", "1", "0"] {
        let state = format!("\"default\";r={remaining};t=100");
        assert_eq!(limit_headers(&a, &s, "/rates"), (200, pairs(&[policy, ("ratelimit", state.as_str())])));
    }
    // Refused: vatcomply's fields and the standard ones, `t` agreeing with Retry-After.
    let refused = [
        policy,
        ("ratelimit", "\"default\";r=0;t=100"),
        ("retry-after", "100"),
        ("x-ratelimit-burst", "3"),
        ("x-ratelimit-limit", "0.01"),
    ];
    assert_eq!(limit_headers(&a, &s, "/rates"), (429, pairs(&refused)));
    // /currencies has a bucket of its own.
    assert_eq!(limit_headers(&a, &s, "/currencies").0, 200);
    // Monitoring and unknown paths are neither limited nor annotated.
    assert_eq!(limit_headers(&a, &s, "/metrics"), (200, vec![]));
    assert_eq!(limit_headers(&a, &s, "/nope"), (404, vec![]));
}

#[test]
fn by_default_or_without_a_limit_served_answers_say_nothing() {
    let quiet = server(ServerOptions { rate_limit: Some(Quota::new(0.01, 1).unwrap()), ..Default::default() });
    let a = agent();
    assert_eq!(limit_headers(&a, &quiet, "/rates"), (200, vec![]));
    let refused = [("retry-after", "100"), ("x-ratelimit-burst", "1"), ("x-ratelimit-limit", "0.01")];
    assert_eq!(limit_headers(&a, &quiet, "/rates"), (429, pairs(&refused)));
    let plain = server(ServerOptions::default());
    assert_eq!(limit_headers(&a, &plain, "/rates"), (200, vec![]));
}

#[test]
fn at_capacity_requests_queue_and_all_are_answered() {
    let s = server(ServerOptions { capacity: Some(2), latency: Duration::from_millis(200), ..Default::default() });
    let a = agent();
    let barrier = std::sync::Barrier::new(6);
    std::thread::scope(|scope| {
        for _ in 0..6 {
            scope.spawn(|| {
                barrier.wait();
                assert_eq!(get(&a, &s, "/rates?base=USD").0, 200);
            });
        }
    });
    let m = s.metrics().snapshot();
    assert_eq!((m.count(200), m.max_in_service, m.waiting, m.in_service), (6, 2, 0, 0), "{m:?}");
}

#[test]
fn a_capacity_of_zero_is_refused() {
    let bad =
        rates_server::spawn(rates_core::Dataset::embedded(), ServerOptions { capacity: Some(0), ..Default::default() });
    assert!(bad.is_err_and(|e| e.to_string() == "invalid capacity '0': a number of requests from 1 to 1048576"));
}

#[test]
fn a_server_stops_while_answers_wait_on_its_latency_timer() {
    let s = server(ServerOptions { latency: Duration::from_secs(60), ..Default::default() });
    let url = format!("{}/rates", s.url());
    let client = std::thread::spawn(move || agent().get(url).call().map(|r| r.status().as_u16()));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while s.metrics().snapshot().in_flight == 0 {
        assert!(std::time::Instant::now() < deadline, "the request never arrived");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Stopping gives the answer its grace, then drops it and the timer:
    // done long before the latency, or the timer thread held it.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        s.stop();
        let _ = done_tx.send(());
    });
    done_rx.recv_timeout(Duration::from_secs(30)).expect("the server stops within its grace");
    assert!(client.join().unwrap().is_err(), "the waiting answer was dropped, not given");
}
