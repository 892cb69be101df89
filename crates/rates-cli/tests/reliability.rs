//! Nothing lost, nothing hung: the `rates` binary driven as an adversary
//! would — signals at awkward moments, junk flags, an API that answers the
//! wrong question, output paths the system refuses.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::{MODELS, run, signalled};
use nix::sys::signal::Signal::{SIGINT, SIGTERM};

mod common;

const SECOND: Duration = Duration::from_secs(1);
/// Only a hang exceeds this.
const BOUND: Duration = Duration::from_secs(20);

#[test]
fn ctrl_c_is_prompt_whatever_the_throttle() {
    // One request every 20 s: after the first, every model waits on the
    // throttle. Ctrl-C must end that wait, not sit out a slot per item.
    for model in MODELS {
        let (code, out, err) = signalled(
            &["fetch", "--model", model, "--workers", "2", "--rate", "0.05", "--sim-latency", "0"],
            &[(SECOND, SIGINT)],
            Duration::from_secs(10),
        );
        assert_eq!(code, Some(130), "{model}: {err}");
        assert!(out.contains("time elapsed"), "{model}: {out}");
        assert!(err.contains("interrupted: ") && err.contains("cancelled"), "{model}: {err}");
        assert!(!err.contains("worker"), "{model}: no worker failure: {err}");
    }
}

#[test]
fn sigterm_writes_what_arrived_and_exits_143() {
    for model in ["sync", "async", "process-pool"] {
        let (code, out, err) = signalled(
            &["fetch", "--model", model, "--workers", "1", "--sim-latency", "300ms"],
            &[(Duration::from_millis(1000), SIGTERM)],
            BOUND,
        );
        assert_eq!(code, Some(143), "{model}: {err}");
        let lines = out.lines().filter(|l| l.starts_with("1 ")).count();
        assert!((1..5).contains(&lines), "{model}: some lines arrived, not all: {out}");
        assert!(err.contains(&format!("terminated: {lines} ok, 0 failed")), "{model}: {err}");
        assert!(err.contains("rates: not fetched: "), "{model}: {err}");
        assert!(!err.contains("worker"), "{model}: no worker failure: {err}");
    }
}

#[test]
fn a_second_signal_exits_at_once() {
    // The request in flight would hold the first Ctrl-C for 30 s.
    let (code, out, err) = signalled(
        &["fetch", "--bases", "USD", "--sim-latency", "30s", "--timeout", "60s"],
        &[(SECOND, SIGINT), (Duration::from_millis(300), SIGINT)],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("stopping at once"), "{err}");
    assert_eq!(out, "");
}

#[test]
fn history_stopped_by_sigterm_writes_its_rows_and_names_the_days_not_fetched() {
    let dir = std::env::temp_dir().join(format!("rates-reliability-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("usd.csv");
    let (code, _, err) = signalled(
        &[
            "history",
            "--base",
            "USD",
            "--symbols",
            "EUR",
            "--from",
            "2019-01-01",
            "--to",
            "2019-12-31",
            "--model",
            "sync",
            "--sim-latency",
            "100ms",
            "--out",
            csv.to_str().unwrap(),
        ],
        &[(Duration::from_millis(1500), SIGTERM)],
        BOUND,
    );
    assert_eq!(code, Some(143), "{err}");
    let text = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert!(!rows.is_empty() && rows.len() < 100, "{text}");
    assert!(rows[0].starts_with("2019-01-02,"), "{text}");
    // The days not fetched run from the first missing one to the end.
    let not_fetched =
        err.lines().find_map(|l| l.strip_prefix("rates: not fetched: ")).unwrap_or_else(|| panic!("{err}"));
    assert!(not_fetched.contains("..2019-12-31 ("), "{err}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary file is left");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unbounded_and_impossible_inputs_are_refused_before_any_request() {
    let cases: &[(&[&str], &str)] = &[
        (&["fetch", "--rate", "1e-300"], "'1e-300'"),
        (&["fetch", "--timeout", "0"], "'0'"),
        (&["fetch", "--timeout", "100h"], "'100h'"),
        (&["fetch", "--api", "http://127.0.0.1:99999"], "'http://127.0.0.1:99999'"),
        (&["fetch", "--api", "http://127.0.0.1:0"], "'http://127.0.0.1:0'"),
        (&["history", "--base", "USD", "--symbols", "EUR", "--from", "1990-01-01", "--to", "1998-01-01"], "no data"),
    ];
    for (args, named) in cases {
        let (code, out, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(out, "", "{args:?}");
        // The first line names the value (clap adds a hint to its own).
        assert!(err.lines().next().unwrap_or("").contains(named), "{args:?}: {err}");
    }
}

#[test]
fn a_range_beyond_the_data_is_clipped_and_said_so() {
    let (code, out, err) = run(&[
        "history",
        "--base",
        "USD",
        "--symbols",
        "EUR",
        "--from",
        "0001-01-01",
        "--to",
        "1999-01-08",
        "--sim-latency",
        "0",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("--from 0001-01-01 is before the first day of data: starting at 1999-01-04"), "{err}");
    let days: Vec<&str> = out.lines().skip(1).map(|l| &l[..10]).collect();
    assert_eq!(days, ["1999-01-04", "1999-01-05", "1999-01-06", "1999-01-07", "1999-01-08"]);

    let (code, out, err) = run(&[
        "history",
        "--base",
        "USD",
        "--symbols",
        "EUR",
        "--from",
        "2026-10-29",
        "--to",
        "9999-12-31",
        "--sim-latency",
        "0",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("--to 9999-12-31 is after the last day of data: ending at 2026-10-30"), "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
}

#[test]
fn an_output_path_the_system_refuses_is_found_before_any_request() {
    // Its directory exists; the name is longer than any file system takes.
    let long = std::env::temp_dir().join("x".repeat(300));
    for flag in ["--out", "--plot"] {
        let value = format!("{}.svg", long.display());
        let (code, out, err) = run(&[
            "history",
            "--api",
            "http://127.0.0.1:9",
            "--base",
            "USD",
            "--symbols",
            "EUR",
            "--from",
            "2020-01-01",
            "--to",
            "2020-01-31",
            flag,
            &value,
        ]);
        assert_eq!(code, 2, "{flag}: {err}");
        assert_eq!(out, "");
        assert!(err.starts_with(&format!("rates: {flag}: cannot write '")), "{flag}: {err}");
    }
}

/// A server that answers every request with `body`, for as long as the
/// test runs.
fn misbehaving_api(body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[test]
fn answers_to_another_question_are_failures_naming_the_mismatch() {
    let api = misbehaving_api(r#"{"date": "2018-10-12", "base": "JPY", "rates": {"EUR": 0.0077}}"#);
    for model in ["sync", "async"] {
        let (code, out, err) = run(&[
            "fetch",
            "--api",
            &api,
            "--model",
            model,
            "--bases",
            "USD",
            "--symbols",
            "EUR",
            "--date",
            "2018-10-12",
        ]);
        assert_eq!(code, 1, "{model}: {err}");
        assert!(!out.contains("JPY"), "{model}: {out}");
        assert!(err.contains("wrong answer: asked for base USD, got JPY (after 1 attempt)"), "{model}: {err}");
    }

    let api = misbehaving_api(r#"{"date": "2018-10-15", "base": "USD", "rates": {"EUR": 0.86}}"#);
    let (code, _, err) = run(&["fetch", "--api", &api, "--bases", "USD", "--symbols", "EUR", "--date", "2018-10-12"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("wrong answer: asked for 2018-10-12, got the later day 2018-10-15"), "{err}");
}

#[test]
fn an_inherited_worker_variable_does_not_hijack_the_program() {
    // What a pool worker's environment carries, inherited by accident: the
    // program must run as itself, warn once, and print its own output.
    for value in ["1", "1:3:12345:00ff", "junk"] {
        let out = common::rates()
            .args(["fetch", "--bases", "USD", "--symbols", "EUR", "--date", "2018-10-12", "--sim-latency", "0"])
            .env("CONCUR_WORKER", value)
            .output()
            .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{value}: {stderr}");
        assert!(stdout.starts_with("1 USD =   0.864 EUR\n"), "{value}: {stdout}");
        assert_eq!(stderr.lines().count(), 1, "{value}: one warning: {stderr}");
        assert!(stderr.contains("CONCUR_WORKER"), "{value}: {stderr}");
    }
}

#[test]
fn a_second_signal_leaves_no_temporary_file_behind() {
    // The output's temporary file exists from the start; an exit at once
    // must remove it too, and leave no half-written target.
    let dir = std::env::temp_dir().join(format!("rates-second-signal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("usd.csv");
    let (code, _, err) = signalled(
        &[
            "history",
            "--base",
            "USD",
            "--symbols",
            "EUR",
            "--from",
            "2019-01-01",
            "--to",
            "2019-01-31",
            "--model",
            "sync",
            "--sim-latency",
            "30s",
            "--timeout",
            "60s",
            "--out",
            csv.to_str().unwrap(),
        ],
        &[(SECOND, SIGINT), (Duration::from_millis(300), SIGTERM)],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(143), "{err}");
    assert!(err.contains("stopping at once"), "{err}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "nothing left in the folder");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_request_stopped_and_continued_is_answered() {
    // On a socket with a read timeout, Linux fails a blocked read with
    // EINTR when the process is stopped and continued, even with no signal
    // handler: the client must read again, not call the request failed.
    // The stop comes once the server holds the client's request (each
    // answer waits 1.5 s), so the client is in that read.
    use nix::sys::signal::Signal::{SIGCONT, SIGSTOP};
    use nix::sys::signal::kill;
    use std::process::{Command, Stdio};
    let mut serve = Command::new(assert_cmd::cargo::cargo_bin("rates"));
    serve.args(["-q", "serve", "--addr", "127.0.0.1:0", "--latency", "1500ms"]);
    let server = common::Served::start(serve);
    // The client asks `/currencies` first: the stop must come in the
    // `/rates` request that follows it.
    let rates_in_flight = |runs: u64| {
        let page = common::get(&server.addr, "/metrics").body;
        // No line until the first answer on the route.
        let currencies = r#"rates_requests_total{code="200",route="/currencies"} "#;
        let answered = page.lines().find_map(|l| l.strip_prefix(currencies)?.parse::<u64>().ok()).unwrap_or(0);
        answered == runs && common::metric(&page, "rates_requests_in_flight") > 0
    };
    for (runs, model) in (1..).zip(["sync", "thread-pool"]) {
        let args = ["fetch", "--api", &server.url(), "--model", model, "--bases", "USD", "--symbols", "EUR"];
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("rates"))
            .args(args)
            .args(["--retries", "0"])
            .env("RATES_CACHE", common::fresh_cache())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let deadline = std::time::Instant::now() + BOUND;
        while !rates_in_flight(runs) {
            assert!(std::time::Instant::now() < deadline, "{model}: no request reached the server");
            std::thread::sleep(Duration::from_millis(10));
        }
        kill(pid, SIGSTOP).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        kill(pid, SIGCONT).unwrap();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("{model}: rates fetch did not end within {BOUND:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // It has exited, so its pipes are at their ends (and its output is
        // a few lines: it could not have filled them).
        let out = child.wait_with_output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(status.code(), Some(0), "{model}: {stderr}");
        assert!(stdout.contains("1 USD ="), "{model}: {stdout}");
    }
}
