//! The client against the public service's limit, end to end: the `rates`
//! binary against `rates serve --public` (vatcomply's limiter: 2 requests
//! a second per client and route, a burst of 4, its exact 429 with
//! `X-RateLimit-Limit`/`X-RateLimit-Burst`, and nothing said on a success).
//! Each run has a server of its own, since the limit is per client address
//! and every test is on 127.0.0.1.
//!
//! What is asserted: every day written once, the 429s the server itself
//! counted, what `auto` learnt, and generous time bounds (twice the
//! limit's bound); the figures go in the notes, from the same commands.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use common::{MODELS, Served, get, metric, run};

mod common;

/// `rates serve --public` with a 5 ms latency.
fn public_server() -> Served {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("rates"));
    cmd.args(["-q", "serve", "--addr", "127.0.0.1:0", "--public", "--latency", "5ms"]);
    Served::start(cmd)
}

/// The answers of 429 the server gave, from its metrics.
fn refused(server: &Served) -> u64 {
    metric(&get(&server.addr, "/metrics").body, "rates_rate_limited_total")
}

/// The first quarter of 2024: 65 weekdays, 63 days of data (New Year's
/// Day and Good Friday are holidays).
const FROM: &str = "2024-01-01";
const TO: &str = "2024-03-31";
const REQUESTS: usize = 65;

/// The limit's bound on the quarter: the burst at once, the rest at 2/s.
const BOUND: Duration = Duration::from_millis((REQUESTS as u64 - 4) * 500);

/// The days of data in the quarter, as `history` writes them.
fn business_days() -> Vec<String> {
    let (from, to) = (rates_core::parse_date(FROM).unwrap(), rates_core::parse_date(TO).unwrap());
    rates_core::Dataset::embedded().days().iter().filter(|d| (from..=to).contains(*d)).map(|d| d.to_string()).collect()
}

/// `rates -v history` of the quarter against `server` with `extra`:
/// (stdout, stderr, time taken), after asserting exit 0 and every day
/// written once, in order.
fn history(server: &Served, extra: &[&str]) -> (String, String, Duration) {
    let api = server.url();
    let args = ["-v", "history", "--api", &api, "--base", "USD", "--symbols", "EUR,PLN", "--from", FROM, "--to", TO];
    let started = Instant::now();
    let (code, out, err) = run(&[&args[..], extra].concat());
    let took = started.elapsed();
    assert_eq!(code, 0, "{extra:?}: {err}");
    let days: Vec<String> = out.lines().skip(1).map(|l| l.split(',').next().unwrap().to_string()).collect();
    assert_eq!(days, business_days(), "{extra:?}: every day once, in order");
    assert!(took < BOUND * 2, "{extra:?}: {took:?} against a bound of {BOUND:?}");
    (out, err, took)
}

/// The `--rate R --burst B` of a `learnt:` line of stderr.
fn learnt(stderr: &str) -> (f64, u32) {
    let line = stderr.lines().find(|l| l.contains("learnt: --rate")).unwrap_or_else(|| panic!("{stderr}"));
    let value =
        |flag: &str| line.split_whitespace().skip_while(|w| *w != flag).nth(1).unwrap_or_else(|| panic!("{line}"));
    (value("--rate").parse().unwrap(), value("--burst").parse().unwrap())
}

#[test]
fn history_at_defaults_loses_no_day_and_says_the_limit() {
    let server = public_server();
    let (_, err, _) = history(&server, &[]);
    // The first requests, sent before the limit is known, meet it: the
    // async model's 8 in flight against a burst of 4. Then the limit
    // stated on the 429 paces the run; no 429 costs a day or a retry.
    let refused = refused(&server);
    assert!(refused <= 8, "{refused} answers of 429");
    assert!(!err.contains("failed"), "{err}");
    assert_eq!(learnt(&err), (2.0, 4), "the limit the 429 stated, offered for reuse: {err}");
}

#[test]
fn rate_auto_takes_the_limit_from_the_first_429() {
    let server = public_server();
    let (_, err, _) = history(&server, &["--rate", "auto"]);
    assert!(refused(&server) <= 2, "at most one more 429 once the limit is known");
    let (rate, burst) = learnt(&err);
    assert!((1.8..=2.2).contains(&rate) && burst == 4, "learnt {rate}/s burst {burst}: {err}");
}

#[test]
fn rate_auto_with_workers_auto_reaches_the_limit() {
    // Waiters asleep on the first rate's slots take the faster schedule
    // once it is learnt; else the run would keep 1/s to its end.
    let server = public_server();
    let (_, err, _) = history(&server, &["--rate", "auto", "--workers", "auto"]);
    assert!(refused(&server) <= 2, "{err}");
    let (rate, burst) = learnt(&err);
    assert!((1.8..=2.2).contains(&rate) && burst == 4, "learnt {rate}/s burst {burst}: {err}");
}

#[test]
fn the_published_limit_as_a_fixed_rate_draws_no_429() {
    // Paced on the client's clock alone, a request may reach the server a
    // few milliseconds before its token there: the throttle's margin
    // covers that.
    for model in ["async", "thread-pool"] {
        let server = public_server();
        history(&server, &["--rate", "2", "--burst", "4", "--model", model]);
        assert_eq!(refused(&server), 0, "{model}");
    }
}

#[test]
fn workers_auto_learns_from_latency_not_from_waits() {
    // A fixed rate holds the requests back; the bound on requests in
    // flight has nothing to learn from that, and must not climb to the
    // pool's size.
    let server = public_server();
    let (_, err, _) = history(&server, &["--rate", "2", "--burst", "4", "--workers", "auto"]);
    assert_eq!(refused(&server), 0);
    let line = err.lines().find(|l| l.starts_with("rates: learnt: --workers ")).unwrap_or_else(|| panic!("{err}"));
    let workers: usize = line.trim_start_matches("rates: learnt: --workers ").parse().unwrap();
    assert!(workers <= 8, "{line}");
}

/// `rates fetch` of the chapter's five bases with every model against a
/// server of its own, with `extra`; gives each model's 429 count.
fn fetch_every_model(extra: &[&str]) -> Vec<(&'static str, u64)> {
    MODELS
        .iter()
        .map(|&model| {
            let server = public_server();
            let api = server.url();
            let (code, out, err) = run(&[&["fetch", "--api", &api, "--model", model][..], extra].concat());
            assert_eq!(code, 0, "{model} {extra:?}: {err}");
            assert_eq!(out.lines().filter(|l| l.starts_with("1 ")).count(), 5, "{model}: {out}");
            (model, refused(&server))
        })
        .collect()
}

#[test]
fn every_model_fetches_at_defaults_without_a_failure() {
    for (model, refused) in fetch_every_model(&[]) {
        // Five requests against a burst of four: at most the one past it.
        assert!(refused <= 1, "{model}: {refused} answers of 429");
    }
}

#[test]
fn every_model_at_the_published_limit_draws_no_429() {
    for (model, refused) in fetch_every_model(&["--rate", "2", "--burst", "4"]) {
        assert_eq!(refused, 0, "{model}");
    }
}
