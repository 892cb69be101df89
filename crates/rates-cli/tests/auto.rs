//! `--rate auto` and `--workers auto` end to end: the `rates` binary
//! against a real `rates serve` with a rate limit, and against the
//! embedded server, for every model. Only generous bounds are asserted
//! (a count of 429s, the values learnt); the figures of the targets come
//! from `rates bench` and go in the notes.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use common::{MODELS, Served, get, metric, run, signalled};
use nix::sys::signal::Signal::{SIGINT, SIGTERM};

mod common;

/// A `rates serve` limiting every client to `rate` requests a second in
/// bursts of `burst`, with the standard rate-limit headers on every answer
/// or without (as the public API, which says nothing until it answers 429).
fn limited_server(rate: &str, burst: &str, headers: bool) -> Served {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("rates"));
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--latency", "2ms", "--rate-limit", rate, "--burst", burst]);
    if headers {
        cmd.arg("--rate-limit-headers");
    }
    Served::start(cmd)
}

/// The server's count of answers refused with 429, from its metrics.
fn refused(server: &Served) -> u64 {
    metric(&get(&server.addr, "/metrics").body, "rates_rate_limited_total")
}

/// The rate in a `learnt: --rate R --burst B ...` line.
fn learnt_rate(stderr: &str) -> f64 {
    let line = stderr.lines().find(|l| l.starts_with("rates: learnt:")).unwrap_or_else(|| panic!("{stderr}"));
    let rate = line.split_whitespace().skip_while(|w| *w != "--rate").nth(1).unwrap_or_else(|| panic!("{line}"));
    rate.parse().unwrap()
}

/// 40 business days of January and February 2024.
const FROM: &str = "2024-01-01";
const TO: &str = "2024-02-26";
const DAYS: usize = 40;

/// `rates -v history` of [`DAYS`] days with `--rate auto` against `server`.
fn history_with_auto_rate(server: &Served) -> (i32, String, String) {
    let api = server.url();
    let range = ["--base", "USD", "--symbols", "EUR", "--from", FROM, "--to", TO];
    run(&[&["-v", "history", "--api", &api, "--rate", "auto", "--retries", "10"][..], &range].concat())
}

#[test]
fn rate_auto_learns_a_silent_limit_from_429s_and_loses_no_day() {
    let server = limited_server("20", "4", false);
    let (code, out, err) = history_with_auto_rate(&server);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().skip(1).count(), DAYS, "every day once: {out}");
    // Each change of the rate is logged with its reason, and the result is
    // offered for reuse.
    assert!(err.contains("rate ") && err.contains("/s ->"), "{err}");
    let learnt = learnt_rate(&err);
    assert!(learnt > 0.0 && learnt <= 40.0, "learnt {learnt}/s against a limit of 20/s: {err}");
    // Probing finds the limit by touching it, but a limiter that ignored
    // the 429s would have most of its requests refused.
    let refused = refused(&server);
    assert!(refused <= DAYS as u64 / 2, "{refused} answers of 429 for {DAYS} days");
}

#[test]
fn rate_auto_takes_a_stated_limit_from_the_headers() {
    // 10/s in bursts of 10: a policy of 10 per second, stated exactly.
    let server = limited_server("10", "10", true);
    let (code, out, err) = history_with_auto_rate(&server);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().skip(1).count(), DAYS, "{out}");
    let learnt = learnt_rate(&err);
    assert!(learnt <= 10.0 + 1e-9, "never above the stated limit: {learnt}: {err}");
    assert!(learnt >= 5.0, "taken from the policy, not probed from a slow start: {learnt}: {err}");
    // Told the limit, it has no need to touch it: a 429 or two at most,
    // from the first requests before any answer said it.
    let refused = refused(&server);
    assert!(refused <= 4, "{refused} answers of 429 with the policy stated");
}

#[test]
fn workers_auto_runs_every_model_and_reports_the_bound_it_learnt() {
    for model in MODELS {
        let (code, out, err) = run(&["fetch", "--model", model, "--workers", "auto", "--sim-latency", "5ms"]);
        assert_eq!(code, 0, "{model}: {err}");
        assert_eq!(out.lines().filter(|l| l.starts_with("1 ")).count(), 5, "{model}: {out}");
        let line = err.lines().find(|l| l.starts_with("rates: learnt: --workers ")).unwrap_or_else(|| panic!("{err}"));
        let n: usize = line.trim_start_matches("rates: learnt: --workers ").parse().unwrap();
        assert!(n >= 1, "{model}: {line}");
    }
}

#[test]
fn auto_settings_a_queue_cannot_share_are_refused_before_any_request() {
    let queue = "redis://127.0.0.1:1/0";
    for (args, flag) in [
        (vec!["fetch", "--rate", "auto", "--queue", queue], "--rate auto:"),
        (vec!["fetch", "--workers", "auto", "--queue", queue], "--workers auto:"),
        (
            vec![
                "history",
                "--base",
                "USD",
                "--symbols",
                "EUR",
                "--from",
                FROM,
                "--to",
                TO,
                "--workers",
                "auto",
                "--queue",
                queue,
            ],
            "--workers auto:",
        ),
        (vec!["bench", "--workload", "cpu", "--workers", "auto"], "--workload cpu:"),
    ] {
        let (code, out, err) = run(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert!(err.contains(flag), "{args:?}: {err}");
    }
    let (code, _, err) = run(&["fetch", "--rate", "fast"]);
    assert_eq!(code, 2);
    assert!(err.contains("'fast'") && err.contains("auto"), "{err}");
    let (code, _, err) = run(&["fetch", "--workers", "many"]);
    assert_eq!(code, 2);
    assert!(err.contains("'many'") && err.contains("auto"), "{err}");
}

#[test]
fn a_signal_ends_a_wait_for_the_learnt_rate_at_once() {
    // One request in 20 s allowed: after the first, the limiter is told to
    // wait out a Retry-After of 20 s. A signal must end that wait.
    for (signal, code) in [(SIGINT, 130), (SIGTERM, 143)] {
        let (got, _, err) = signalled(
            &["fetch", "--rate", "auto", "--sim-rate-limit", "0.05", "--sim-latency", "0", "--workers", "2"],
            &[(Duration::from_secs(2), signal)],
            Duration::from_secs(10),
        );
        assert_eq!(got, Some(code), "{err}");
        assert!(err.contains("cancelled"), "{err}");
    }
}

#[test]
fn bench_puts_the_auto_rows_beside_the_fixed_ones() {
    let (code, out, err) = run(&[
        "bench",
        "--models",
        "sync,thread-pool,async",
        "--auto",
        "--requests",
        "40",
        "--repeat",
        "1",
        "--sim-latency",
        "5ms",
    ]);
    assert_eq!(code, 0, "{err}");
    for row in ["thread-pool ", "thread-pool auto ", "async ", "async auto "] {
        assert!(out.lines().any(|l| l.starts_with(row)), "no row {row:?}: {out}");
    }
    assert!(!out.lines().any(|l| l.starts_with("sync auto")), "one request at a time whatever the limit: {out}");
    let header = out.lines().nth(1).unwrap();
    assert!(header.trim_end().ends_with("learnt") && header.contains("p50 lat"), "{out}");
    let auto = out.lines().find(|l| l.starts_with("async auto ")).unwrap();
    assert!(auto.contains("--workers "), "{auto}");
}
