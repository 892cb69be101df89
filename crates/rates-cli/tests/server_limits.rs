//! `rates serve` under a rate limit refuses as the public service does and
//! says nothing of the limit on a served answer (with
//! `--rate-limit-headers`, the IETF headers tell it); `--public` is the
//! public service's limit; `--capacity` serves at most that many requests
//! at once and queues the rest, for `rates serve` and the embedded server
//! alike; bad capacities are refused with exit 2 and one line naming the
//! value.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{Served, get, metric, run};
use nix::sys::signal::Signal;

/// Starts `rates serve --addr 127.0.0.1:0 args`.
fn serve(args: &[&str]) -> Served {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("rates"));
    cmd.args(["-q", "serve", "--addr", "127.0.0.1:0"]).args(args);
    Served::start(cmd)
}

/// The rate-limit headers among `headers`, sorted.
fn limit_headers(headers: &[String]) -> Vec<&str> {
    let mut found: Vec<&str> = headers.iter().map(String::as_str).filter(|h| h.contains("ratelimit")).collect();
    found.sort();
    found
}

#[test]
fn with_rate_limit_headers_a_limited_server_advertises_its_limit() {
    let served = serve(&["--rate-limit", "5", "--burst", "5", "--rate-limit-headers"]);
    let answer = get(&served.addr, "/rates?base=USD&symbols=PLN");
    let (status, headers) = (answer.status, answer.headers);
    assert_eq!(status, "HTTP/1.1 200 OK");
    // The first answer of a fresh bucket: 4 of 5 left, one back in 0.2 s.
    assert_eq!(limit_headers(&headers), ["ratelimit-policy: \"default\";q=5;w=1", "ratelimit: \"default\";r=4;t=1"]);
    assert_eq!(served.stop(Signal::SIGTERM).status.code(), Some(0));
}

#[test]
fn by_default_the_server_says_nothing_until_its_429() {
    // The old flag for the default still runs.
    for extra in [&[][..], &["--no-rate-limit-headers"][..]] {
        let served = serve(&[&["--rate-limit", "0.01", "--burst", "1"][..], extra].concat());
        let answer = get(&served.addr, "/rates");
        let (status, headers) = (answer.status, answer.headers);
        assert_eq!((status.as_str(), limit_headers(&headers)), ("HTTP/1.1 200 OK", vec![]));
        assert!(!headers.iter().any(|h| h.starts_with("retry-after: ")), "{headers:?}");
        let answer = get(&served.addr, "/rates");
        let (status, headers) = (answer.status, answer.headers);
        assert_eq!(
            (status.as_str(), limit_headers(&headers)),
            ("HTTP/1.1 429 Too Many Requests", vec!["x-ratelimit-burst: 1", "x-ratelimit-limit: 0.01"])
        );
        assert!(headers.iter().any(|h| h == "retry-after: 100"), "{headers:?}");
        assert_eq!(answer.body, r#"{"detail":"Rate limit exceeded. Try again in 100 seconds.","retry_after":100}"#);
        assert_eq!(served.stop(Signal::SIGTERM).status.code(), Some(0));
    }
}

#[test]
fn public_is_the_public_services_limit_per_route() {
    let served = serve(&["--public"]);
    let statuses: Vec<String> = (0..5).map(|_| get(&served.addr, "/rates?symbols=USD").status).collect();
    assert_eq!(statuses[..4], ["HTTP/1.1 200 OK"; 4], "a burst of 4");
    assert_eq!(statuses[4], "HTTP/1.1 429 Too Many Requests", "{statuses:?}");
    let answer = get(&served.addr, "/rates?symbols=USD");
    assert_eq!(limit_headers(&answer.headers), ["x-ratelimit-burst: 4", "x-ratelimit-limit: 2"]);
    assert!(answer.headers.iter().any(|h| h == "retry-after: 1"), "{:?}", answer.headers);
    assert_eq!(answer.body, r#"{"detail":"Rate limit exceeded. Try again in 1 seconds.","retry_after":1}"#);
    // /currencies has its own bucket.
    assert_eq!(get(&served.addr, "/currencies").status, "HTTP/1.1 200 OK");
    assert_eq!(served.stop(Signal::SIGTERM).status.code(), Some(0));
}

#[test]
fn rate_limit_headers_need_a_rate_limit_and_public_takes_none() {
    let (code, _, err) = run(&["serve", "--addr", "127.0.0.1:0", "--rate-limit-headers"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--rate-limit"), "{err}");
    let (code, _, err) = run(&["serve", "--addr", "127.0.0.1:0", "--public", "--rate-limit", "5"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--public") && err.contains("--rate-limit"), "{err}");
    let (code, _, err) = run(&["fetch", "--sim-rate-limit-headers"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--sim-rate-limit"), "{err}");
    let (code, _, err) = run(&["fetch", "--sim-public", "--api", "http://127.0.0.1:1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--sim-public") && err.contains("--api"), "{err}");
}

#[test]
fn serve_queues_requests_beyond_its_capacity() {
    // Six requests held a second each: without the capacity, all six
    // would be served at once.
    let served = serve(&["--capacity", "2", "--latency", "1s"]);
    let addr = served.addr.clone();
    let barrier = std::sync::Barrier::new(6);
    std::thread::scope(|scope| {
        for _ in 0..6 {
            scope.spawn(|| {
                barrier.wait();
                assert_eq!(get(&addr, "/rates").status, "HTTP/1.1 200 OK");
            });
        }
    });
    let text = get(&addr, "/metrics").body;
    let most = metric(&text, "rates_requests_in_service_max");
    assert!((1..=2).contains(&most), "{text}");
    assert_eq!(metric(&text, "rates_requests_total{code=\"200\",route=\"/rates\"}"), 6, "{text}");
    assert_eq!(metric(&text, "rates_requests_waiting"), 0, "{text}");
    assert_eq!(served.stop(Signal::SIGTERM).status.code(), Some(0));
}

#[test]
fn fetch_works_against_an_embedded_server_of_small_capacity() {
    let (code, out, err) = run(&[
        "fetch",
        "--sim-capacity",
        "2",
        "--sim-latency",
        "10ms",
        "--model",
        "thread-pool",
        "--workers",
        "5",
        "--date",
        "2018-10-12",
        "--bases",
        "USD,EUR,PLN,NOK,CZK",
        "--format",
        "csv",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 6, "a header and five bases: {out}");
    assert!(out.contains("2018-10-12,USD,"), "{out}");
}

#[test]
fn bad_capacities_exit_2_naming_the_value() {
    for (args, named) in [
        (&["serve", "--addr", "127.0.0.1:0", "--capacity", "0"][..], "'0'"),
        (&["serve", "--addr", "127.0.0.1:0", "--capacity", "x"][..], "'x'"),
        (&["serve", "--addr", "127.0.0.1:0", "--capacity=-3"][..], "'-3'"),
        (&["serve", "--addr", "127.0.0.1:0", "--capacity", "9999999"][..], "'9999999'"),
        (&["fetch", "--sim-capacity", "0"][..], "'0'"),
        (&["fetch", "--sim-capacity", "x"][..], "'x'"),
    ] {
        let (code, out, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(named) && err.contains("capacity") && err.lines().count() == 1, "{args:?}: {err}");
        assert_eq!(out, "");
    }
}

#[test]
fn sim_public_limits_the_embedded_server_as_the_public_service() {
    // Five bases, one request each: the fifth is past the burst of 4 and
    // waits for the 429's Retry-After of a second.
    let started = std::time::Instant::now();
    let args = ["fetch", "--sim-public", "--sim-latency", "1ms", "--date", "2018-10-12", "--format", "csv"];
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 6, "a header and five bases: {out}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(900), "{:?}: not limited", started.elapsed());
}
