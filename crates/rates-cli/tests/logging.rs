//! What `-v`, `-q` and `RUST_LOG` show on stderr (retries, 429s, long
//! throttle waits, `serve`'s access lines), and that stdout never changes.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};

use common::{Served, get};
use nix::sys::signal::Signal;

/// Runs `rates args` with `RUST_LOG` unset (or set to `rust_log`):
/// (exit code, stdout, stderr).
fn run_env(args: &[&str], rust_log: Option<&str>) -> (i32, String, String) {
    let mut cmd = common::rates();
    cmd.env_remove("RUST_LOG");
    if let Some(v) = rust_log {
        cmd.env("RUST_LOG", v);
    }
    let out = cmd.args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

fn retry_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains("rates::retry")).collect()
}

/// Twenty bases, so that at a 50% fail rate some request is retried but
/// none runs out of its 30 retries (odds of either: about one in a million).
const BASES: &str = "USD,EUR,PLN,NOK,CZK,GBP,JPY,CHF,SEK,DKK,HUF,AUD,CAD,NZD,SGD,HKD,KRW,MXN,BRL,ZAR";

#[test]
fn verbose_shows_each_retry_on_stderr_and_stdout_is_unchanged() {
    let args = ["fetch", "--bases", BASES, "--format", "csv", "--date", "2018-10-12", "--sim-latency", "1ms"];
    let (code, plain, _) = run_env(&args, None);
    assert_eq!(code, 0);
    let faulty = [&args[..], &["--sim-fail-rate", "0.5", "--retries", "30"]].concat();
    let (code, out, err) = run_env(&[&["-v"], &faulty[..]].concat(), None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, plain, "-v changes nothing on stdout");
    let retries = retry_lines(&err);
    assert!(!retries.is_empty(), "no retry logged: {err}");
    for l in &retries {
        // Which request, which retry, how long, and why.
        assert!(l.contains("fetch{base=") && l.contains("date=2018-10-12}"), "{l}");
        assert!(l.contains(" INFO ") && l.contains("retry ") && l.contains("/30 in "), "{l}");
        assert!(l.ends_with("after HTTP 500: Injected failure."), "{l}");
    }
    // Not without -v.
    let (code, out, err) = run_env(&faulty, None);
    assert_eq!((code, out.as_str()), (0, plain.as_str()));
    assert!(retry_lines(&err).is_empty(), "{err}");
}

#[test]
fn every_retry_is_logged_exactly_once() {
    // Every request fails: each of the 3 bases is retried exactly twice.
    let args = ["fetch", "--bases", "USD,EUR,PLN", "--sim-fail-rate", "1", "--retries", "2", "--sim-latency", "1ms"];
    let (code, out_quiet, err) = run_env(&args, None);
    assert_eq!(code, 1, "{err}");
    assert!(retry_lines(&err).is_empty(), "{err}");
    let (code, out, err) = run_env(&[&["-v"], &args[..]].concat(), None);
    assert_eq!(code, 1, "{err}");
    assert_eq!(retry_lines(&err).len(), 6, "{err}");
    for base in ["USD", "EUR", "PLN"] {
        for k in ["retry 1/2 in", "retry 2/2 in"] {
            let n = retry_lines(&err).iter().filter(|l| l.contains(&format!("base={base} ")) && l.contains(k)).count();
            assert_eq!(n, 1, "{base} {k}: {err}");
        }
    }
    // The elapsed time differs from run to run; the rest of stdout does not.
    let strip = |s: &str| s.lines().filter(|l| !l.starts_with("time elapsed")).collect::<Vec<_>>().join("\n");
    assert_eq!(strip(&out), strip(&out_quiet));
    assert!(!out.contains("retry"), "{out}");
}

#[test]
fn rust_log_selects_lines_without_flags_and_flags_win() {
    let args = ["fetch", "--bases", "USD", "--sim-fail-rate", "1", "--retries", "1", "--sim-latency", "1ms"];
    let (_, _, err) = run_env(&args, Some("rates::retry=info"));
    assert_eq!(retry_lines(&err).len(), 1, "{err}");
    let (_, _, err) = run_env(&[&["-q"], &args[..]].concat(), Some("rates::retry=info"));
    assert!(retry_lines(&err).is_empty(), "-q wins over RUST_LOG: {err}");
    // After the subcommand too: the flags are global.
    let (_, _, err) = run_env(&[&args[..], &["-v"]].concat(), None);
    assert_eq!(retry_lines(&err).len(), 1, "{err}");
}

#[test]
fn a_429_is_logged_with_its_retry_after() {
    // Three requests at once against a limit of one at a time: two are
    // refused with 429 and `Retry-After: 1`, and asked again after it,
    // each said with -v (and spending no retry: `--retries 0`).
    let args = [
        "-v",
        "fetch",
        "--bases",
        "USD,EUR,PLN",
        "--model",
        "async",
        "--workers",
        "unlimited",
        "--sim-rate-limit",
        "1",
        "--sim-latency",
        "1ms",
        "--retries",
        "0",
    ];
    let (code, _, err) = run_env(&args, None);
    assert_eq!(code, 0, "{err}");
    let refused: Vec<&str> = retry_lines(&err).into_iter().filter(|l| l.contains("429")).collect();
    assert!(refused.len() >= 2, "{err}");
    for l in refused {
        assert!(l.contains("429 Too Many Requests, not yet: asking again in 1.00s (Retry-After 1s)"), "{l}");
    }
}

#[test]
fn throttle_waits_over_a_second_are_logged() {
    // At 0.5 requests per second the second request waits about 2 s.
    let args = ["fetch", "--bases", "USD,EUR", "--rate", "0.5", "--sim-latency", "1ms"];
    let (code, _, err) = run_env(&[&["-v"], &args[..]].concat(), None);
    assert_eq!(code, 0, "{err}");
    let waits: Vec<&str> = err.lines().filter(|l| l.contains("rates::throttle")).collect();
    assert_eq!(waits.len(), 1, "{err}");
    assert!(waits[0].contains("fetch{base=EUR date=latest}") && waits[0].contains("for the rate limit (--rate)"));
    let (_, _, err) = run_env(&args, None);
    assert!(!err.contains("rates::throttle"), "{err}");
}

/// Starts `rates [flags] serve` on an ephemeral port, its stdout piped too.
fn serve(flags: &[&str]) -> Served {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("rates"));
    cmd.args(flags).args(["serve", "--addr", "127.0.0.1:0"]).env_remove("RUST_LOG").stdout(Stdio::piped());
    Served::start(cmd)
}

/// Stops a server with SIGTERM (it must exit 0) and gives the rest of its
/// stderr and its stdout.
fn stop(served: Served) -> (String, String) {
    let stopped = served.stop(Signal::SIGTERM);
    assert_eq!(stopped.status.code(), Some(0));
    (stopped.stderr, stopped.stdout)
}

#[test]
fn serve_logs_one_access_line_per_request_and_q_silences_it() {
    let served = serve(&[]);
    let addr = served.addr.clone();
    assert_eq!(get(&addr, "/rates?base=USD&symbols=PLN").status, "HTTP/1.1 200 OK");
    assert_eq!(get(&addr, "/nope").status, "HTTP/1.1 404 Not Found");
    assert_eq!(get(&addr, "/metrics").status, "HTTP/1.1 200 OK");
    let (err, out) = stop(served);
    assert_eq!(out, "", "nothing on stdout");
    let access: Vec<&str> = err.lines().filter(|l| l.contains("rates_server::access")).collect();
    assert_eq!(access.len(), 3, "{err}");
    for (line, (path, status)) in
        access.iter().zip([("/rates?base=USD&symbols=PLN", 200), ("/nope", 404), ("/metrics", 200)])
    {
        assert!(line.contains(" INFO "), "{line}");
        assert!(line.contains(&format!("method=GET path={path} status={status} duration_ms=")), "{line}");
    }

    let served = serve(&["-q"]);
    assert_eq!(get(&served.addr, "/rates").status, "HTTP/1.1 200 OK");
    let (err, _) = stop(served);
    assert!(!err.contains("rates_server::access"), "{err}");
}

#[test]
fn serve_keeps_answering_when_its_stderr_is_closed() {
    // A closed terminal or `2>&-`: the access lines cannot be written, and
    // must not fail the requests they are about.
    let mut served = serve(&[]);
    served.close_stderr();
    for _ in 0..3 {
        assert_eq!(get(&served.addr, "/rates?base=USD&symbols=PLN").status, "HTTP/1.1 200 OK");
    }
    assert_eq!(served.stop(Signal::SIGTERM).status.code(), Some(0));
}

#[test]
fn the_embedded_servers_access_lines_wait_for_vv() {
    let args = ["fetch", "--bases", "USD,EUR", "--sim-latency", "1ms"];
    let (_, _, err) = run_env(&[&["-v"], &args[..]].concat(), None);
    assert!(!err.contains("rates_server::access"), "{err}");
    let (_, _, err) = run_env(&[&["-vv"], &args[..]].concat(), None);
    assert_eq!(err.lines().filter(|l| l.contains("rates_server::access")).count(), 2, "{err}");
}
