//! `rates fetch` end to end: the binary against its embedded server (or one
//! started here), checking output, formats and exit codes.
#![allow(clippy::unwrap_used)]

use common::{MODELS, Stub, rates, run};
use rates_server::{ServerOptions, spawn};

mod common;

/// The chapter's five lines for 2026-10-30, the last day of the embedded data.
const CHAPTER_LINES: &str = "\
1 USD =     1.0 USD,   0.895 EUR,    3.94 PLN,    9.23 NOK,    21.8 CZK
1 EUR =    1.12 USD,     1.0 EUR,     4.4 PLN,    10.3 NOK,    24.4 CZK
1 PLN =   0.254 USD,   0.227 EUR,     1.0 PLN,    2.34 NOK,    5.53 CZK
1 NOK =   0.108 USD,   0.097 EUR,   0.427 PLN,     1.0 NOK,    2.36 CZK
1 CZK =  0.0459 USD,  0.0411 EUR,   0.181 PLN,   0.423 NOK,     1.0 CZK
";

/// Splits table output into the lines and the elapsed-time line.
fn table_parts(out: &str) -> (&str, &str) {
    let (lines, tail) = out.rsplit_once("\n\n").unwrap();
    (lines, tail)
}

#[test]
fn default_output_is_the_chapters() {
    let (code, out, err) = run(&["fetch", "--sim-latency", "0"]);
    assert_eq!(code, 0, "{err}");
    let (lines, tail) = table_parts(&out);
    assert_eq!(format!("{lines}\n"), CHAPTER_LINES);
    let secs = tail.strip_prefix("time elapsed: ").and_then(|t| t.strip_suffix("s\n")).unwrap();
    assert!(secs.len() >= 4 && secs.parse::<f64>().is_ok(), "{tail:?}");
    assert_eq!(err, "");
}

#[test]
fn every_model_prints_the_same_lines() {
    for model in MODELS {
        let (code, out, err) = run(&["fetch", "--model", model, "--sim-latency", "5ms"]);
        assert_eq!(code, 0, "{model}: {err}");
        assert_eq!(format!("{}\n", table_parts(&out).0), CHAPTER_LINES, "{model}");
    }
}

#[test]
fn json_format_parses() {
    let (code, out, _) = run(&["fetch", "--format", "json", "--date", "2018-10-12", "--sim-latency", "0"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 5);
    assert_eq!(arr[0]["base"], "USD");
    assert_eq!(arr[0]["date"], "2018-10-12");
    assert_eq!(arr[0]["rates"]["PLN"], 3.709694);
    assert_eq!(arr[0]["rates"]["USD"], 1.0);
}

#[test]
fn csv_format_parses() {
    let (code, out, _) =
        run(&["fetch", "--format", "csv", "--bases", "USD,PLN", "--date", "2018-10-12", "--sim-latency", "0"]);
    assert_eq!(code, 0);
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows[0], ["date", "base", "USD", "EUR", "PLN", "NOK", "CZK"]);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1][..2], ["2018-10-12", "USD"]);
    assert_eq!(rows[1][4].parse::<f64>().unwrap(), 3.709694);
    assert_eq!(rows[2][1], "PLN");
}

#[test]
fn bad_input_exits_2_with_one_line_naming_the_value() {
    let cases: &[(&[&str], &str)] = &[
        (&["fetch", "--bases", "USD,XYZ"], "'XYZ'"),
        (&["fetch", "--symbols", "US"], "'US'"),
        (&["fetch", "--date", "2024-02-30"], "'2024-02-30'"),
        (&["fetch", "--date", "yesterday"], "'yesterday'"),
        (&["fetch", "--api", "ftp://example"], "'ftp://example'"),
        (&["fetch", "--model", "fibers"], "'fibers'"),
        (&["fetch", "--sim-fail-rate", "2"], "'2'"),
        (&["fetch", "--timeout", "soon"], "'soon'"),
        (&["fetch", "--rate", "-1"], "'-1'"),
        // Retired codes the ECB file has and the API refuses.
        (&["fetch", "--symbols", "USD,CYP"], "'CYP'"),
        (&["fetch", "--bases", "CYP"], "'CYP'"),
        (&["fetch", "--date", "1998-12-31"], "1998-12-31"),
    ];
    for (args, named) in cases {
        let (code, out, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(out, "", "{args:?}");
        assert!(err.contains(named), "{args:?}: {err}");
        let first = err.lines().next().unwrap_or("");
        assert!(first.contains(named), "{args:?}: the first line names the value: {err}");
    }
}

#[test]
fn zero_workers_and_bad_counts_are_refused_at_parse_time_in_one_line() {
    let history = ["history", "--base", "USD", "--symbols", "EUR", "--from", "2020-01-01", "--to", "2020-01-31"];
    let cases: &[(&[&str], &str)] = &[
        (&["fetch", "--workers", "0"], "'0'"),
        (&[&history[..], &["--workers", "0"]].concat(), "'0'"),
        (&["bench", "--workers", "0"], "'0'"),
        (&["fetch", "--workers", "100001"], "'100001'"),
        (&["worker", "--queue", "redis://127.0.0.1:1/0", "--concurrency", "0"], "'0'"),
        (&["worker", "--queue", "redis://127.0.0.1:1/0", "--max-deliveries", "0"], "'0'"),
        (&["serve", "--addr", "127.0.0.1:0", "--burst", "0", "--rate-limit", "2"], "'0'"),
    ];
    for (args, named) in cases {
        let (code, out, err) = run(args);
        assert_eq!((code, out.as_str()), (2, ""), "{args:?}: {err}");
        assert!(err.starts_with("rates: --") && err.contains(named) && err.lines().count() == 1, "{args:?}: {err}");
    }
    // `unlimited` is how all at once is said.
    let (code, _, err) = run(&["fetch", "--workers", "unlimited", "--bases", "USD", "--sim-latency", "0"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn bad_url_exits_2_before_any_request() {
    // An --api that is refused never reaches the network: nothing listens
    // here and the command still answers 2, not a connection error.
    let (code, _, err) = run(&["fetch", "--api", "http://"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn partial_failure_prints_the_rest_and_exits_1() {
    // RUB is a supported code with no rate since March 2022: that base
    // fails with a 400 (never retried), USD succeeds.
    let (code, out, err) =
        run(&["fetch", "--bases", "USD,RUB", "--symbols", "USD,EUR", "--date", "2023-01-02", "--sim-latency", "0"]);
    assert_eq!(code, 1, "{err}");
    assert!(out.starts_with("1 USD =     1.0 USD,   0.936 EUR\n"), "{out}");
    assert!(!out.contains("RUB"));
    assert!(err.contains("RUB") && err.contains("HTTP 400") && err.contains("1 attempt"), "{err}");
    assert!(err.contains("1 ok, 1 failed"), "{err}");
}

#[test]
fn external_api_via_env() {
    let server = spawn(rates_core::Dataset::embedded(), ServerOptions::default()).unwrap();
    let out = rates()
        .args(["fetch", "--bases", "USD", "--symbols", "PLN", "--date", "2018-10-12"])
        .env("RATES_API", server.url())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8(out.stdout).unwrap().starts_with("1 USD =    3.71 PLN\n"));
    // Its /currencies, for the codes it accepts, then the rates.
    assert_eq!(server.metrics().snapshot().count(200), 2);
}

#[test]
fn all_failing_with_retries_off_exits_1() {
    let (code, out, err) = run(&["fetch", "--sim-fail-rate", "1", "--retries", "0", "--sim-latency", "0"]);
    assert_eq!(code, 1);
    assert!(out.starts_with("\ntime elapsed: "), "{out}");
    assert_eq!(err.matches("Injected failure").count(), 5, "{err}");
    assert!(err.contains("0 ok, 5 failed"));
}

/// Starts `rates fetch` with `args`, sends it SIGINT after `after`, and
/// returns (exit code, stdout, stderr); fails if it does not end within 10 s
/// of the signal.
fn interrupted(args: &[&str], after: std::time::Duration) -> (Option<i32>, String, String) {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("rates"))
        .args(args)
        .env_remove("RATES_API")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    common::await_signal_handlers(child.id());
    std::thread::sleep(after);
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let mut status = None;
    for _ in 0..200 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("rates fetch did not stop within 10 s of SIGINT");
    };
    let (mut out, mut err) = (String::new(), String::new());
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status.code(), out, err)
}

#[test]
fn ctrl_c_prints_what_arrived_reports_the_rest_cancelled_and_exits_130() {
    for model in ["async", "thread-pool"] {
        // One request at a time, each held 400 ms by the server: about two
        // have arrived when the signal comes, and one is in flight.
        let (code, out, err) = interrupted(
            &["fetch", "--model", model, "--workers", "1", "--sim-latency", "400ms"],
            std::time::Duration::from_millis(1000),
        );
        assert_eq!(code, Some(130), "{model}: {err}");
        let (lines, tail) = out.rsplit_once("\n\n").unwrap_or(("", &out));
        let lines: Vec<&str> = lines.lines().filter(|l| !l.is_empty()).collect();
        let expected: Vec<&str> = CHAPTER_LINES.lines().collect();
        assert!(lines.len() < 5, "{model}: the run was cut short: {out}");
        // Which items arrived depends on scheduling; those that did are
        // printed as the chapter prints them, in input order.
        let positions: Vec<usize> = lines
            .iter()
            .map(|l| expected.iter().position(|e| e == l).unwrap_or_else(|| panic!("{model}: unexpected line {l}")))
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{model}: out of order: {out}");
        assert!(tail.starts_with("time elapsed: "), "{model}: {out}");
        let summary = format!("interrupted: {} ok, 0 failed, {} cancelled", lines.len(), 5 - lines.len());
        assert!(err.contains(&summary), "{model}: {err}");
    }
}

#[test]
fn data_option_loads_a_newer_csv() {
    let dir = std::env::temp_dir().join(format!("rates-data-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("eurofxref-hist.csv");
    std::fs::write(&csv, "Date,USD,PLN,\n2030-01-03,2.0,5.0,\n2030-01-02,1.0,4.0,\n").unwrap();
    let (code, out, err) = run(&[
        "fetch",
        "--data",
        csv.to_str().unwrap(),
        "--bases",
        "USD",
        "--symbols",
        "PLN",
        "--sim-latency",
        "0",
        "--format",
        "csv",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "date,base,PLN\n2030-01-03,USD,2.5\n");

    // A currency the newer file lacks is refused before any request.
    let (code, _, err) = run(&["fetch", "--data", csv.to_str().unwrap(), "--bases", "NOK"]);
    assert_eq!(code, 2, "{err}");

    std::fs::write(&csv, "Date,USD,PLN,\n2030-01-03,2.0,five,\n").unwrap();
    let (code, out, err) = run(&["fetch", "--data", csv.to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(err.contains("line 2, field PLN: invalid rate 'five'"), "{err}");
    let (code, _, err) = run(&["fetch", "--data", dir.join("missing.zip").to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("missing.zip"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_reader_that_stops_early_is_no_error() {
    // `rates fetch | head -1`: the pipe closes after the first line.
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("rates"))
        .args(["fetch", "--sim-latency", "0"])
        .env_remove("RATES_API")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // closed before anything is written
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

/// `rates fetch --format csv` of USD in EUR and PLN, with `more` arguments.
fn usd_csv(more: &[&str]) -> (i32, String, String) {
    let args = ["fetch", "--format", "csv", "--bases", "USD", "--symbols", "EUR,PLN", "--sim-latency", "0"];
    run(&[&args[..], more].concat())
}

#[test]
fn a_weekend_date_is_answered_with_the_business_day_before_and_said_once() {
    // Saturday; Friday 2024-03-29 was Good Friday, a TARGET holiday.
    let (code, out, err) = usd_csv(&["--date", "2024-03-30"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        err,
        "rates: note: no rates for 2024-03-30 (Saturday); the answer is of 2024-03-28, the business day before\n"
    );
    // The data is the answer, as it is.
    let (code, thursday, err) = usd_csv(&["--date", "2024-03-28"]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(out, thursday);
    assert!(out.contains("\n2024-03-28,USD,"), "{out}");
    // Several bases: still one note.
    let (code, _, err) = run(&["fetch", "--date", "2024-03-29", "--sim-latency", "0"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("2024-03-29 (Friday, a holiday)"), "{err}");
}

#[test]
fn a_future_date_is_answered_with_the_latest_day_and_said_so() {
    let (code, out, err) = usd_csv(&["--date", "2999-01-01"]);
    assert_eq!(code, 0, "{err}");
    let last = rates_core::Dataset::embedded().last_day();
    assert_eq!(
        err,
        format!(
            "rates: note: 2999-01-01 (Tuesday) is in the future; the answer is of {last}, the latest day published\n"
        )
    );
    let (code, latest, _) = usd_csv(&[]);
    assert_eq!(code, 0);
    assert_eq!(out, latest);
}

#[test]
fn a_date_before_the_data_is_refused_before_any_request() {
    let stub = Stub::new(None);
    for api in [None, Some(stub.url.as_str())] {
        let mut args = vec!["fetch", "--date", "1998-12-31"];
        args.extend(api.map(|url| ["--api", url]).into_iter().flatten());
        let (code, out, err) = run(&args);
        assert_eq!((code, out.as_str()), (2, ""), "{api:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("--date 1998-12-31") && err.contains("1999-01-04"), "{err}");
    }
    assert_eq!((stub.rates_asked(), stub.currencies_asked()), (0, 0));
    // The first day itself is fine.
    let (code, out, err) = usd_csv(&["--date", "1999-01-04"]);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
}

/// A `/currencies` answer listing EUR, USD and XAU (which the ECB has never had).
const THREE_CODES: &str = r#"{"EUR":{"name":"Euro"},"USD":{"name":"US Dollar"},"XAU":{"name":"Gold"}}"#;

#[test]
fn with_api_the_codes_its_currencies_lists_decide_asked_once_per_store() {
    let stub = Stub::new(Some((200, THREE_CODES)));
    let store = common::fresh_cache();
    let cache = store.to_str().unwrap();
    let fetch = |symbols: &str| {
        let args = ["fetch", "--api", &stub.url, "--cache", cache, "--bases", "USD", "--date", "2018-10-12"];
        run(&[&args[..], &["--symbols", symbols, "--format", "csv"]].concat())
    };
    // PLN is supported, but this API does not list it: refused, nothing asked of /rates.
    let (code, out, err) = fetch("EUR,PLN");
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("'PLN'") && err.contains("/currencies lists 3 codes: EUR, USD, XAU"), "{err}");
    assert_eq!((stub.currencies_asked(), stub.rates_asked()), (1, 0));
    // What it lists is asked for, from the store now: XAU too, which the
    // server then refuses itself.
    let (code, out, err) = fetch("EUR");
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("date,base,EUR\n2018-10-12,USD,0.86"), "{out}");
    let (code, _, err) = fetch("XAU");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("HTTP 400") && err.contains("XAU"), "{err}");
    assert_eq!((stub.currencies_asked(), stub.rates_asked()), (1, 2));
    // Another store asks again.
    let (code, _, err) = run(&["fetch", "--api", &stub.url, "--bases", "USD", "--symbols", "CYP"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(stub.currencies_asked(), 2);
}

#[test]
fn stored_codes_expire_after_a_day() {
    let stub = Stub::new(Some((200, THREE_CODES)));
    let dir = common::fresh_cache();
    let c = |s: &str| s.parse::<rates_core::Currency>().unwrap();
    let now = rates_core::store::unix_now();
    // Stored an hour ago: trusted, not asked again.
    rates_core::Store::open(&dir).unwrap().put_currencies(&stub.url, &[c("EUR"), c("PLN")], now - 3600).unwrap();
    let args = ["fetch", "--api", &stub.url, "--cache", dir.to_str().unwrap(), "--bases", "EUR", "--symbols"];
    let (code, _, err) = run(&[&args[..], &["USD"]].concat());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("'USD'") && err.contains("lists 2 codes: EUR, PLN"), "{err}");
    assert_eq!(stub.currencies_asked(), 0);
    // Stored two days ago: asked again, and replaced.
    rates_core::Store::open(&dir).unwrap().put_currencies(&stub.url, &[c("EUR"), c("PLN")], now - 2 * 86_400).unwrap();
    let (code, _, err) = run(&[&args[..], &["USD", "--date", "2018-10-12"]].concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(stub.currencies_asked(), 1);
    let (codes, _) = rates_core::Store::open(&dir).unwrap().currencies(&stub.url).unwrap().unwrap();
    assert_eq!(codes, [c("EUR"), c("USD"), c("XAU")]);
}

#[test]
fn an_api_without_a_sane_currencies_is_checked_against_the_supported_codes() {
    let long_key = Box::leak(format!(r#"{{"{}":{{"name":"x"}}}}"#, "A".repeat(5000)).into_boxed_str());
    for (status, body) in [
        (404, r#"{"detail":"Not Found"}"#),
        (200, "not JSON"),
        (200, "{}"),
        (200, r#"{"usd":{"name":"US Dollar"}}"#),
        (200, &*long_key),
        (429, r#"{"detail":"Rate limit exceeded. Try again in 1 seconds.","retry_after":1}"#),
    ] {
        let stub = Stub::new(Some((status, body)));
        let args = ["-v", "fetch", "--api", &stub.url, "--bases", "USD", "--date", "2018-10-12", "--symbols"];
        let (code, out, err) = run(&[&args[..], &["EUR"]].concat());
        assert_eq!(code, 0, "{status} {body}: {err}");
        assert!(out.starts_with("1 USD =   0.864 EUR\n"), "{out}");
        let line = err.lines().find(|l| l.contains("/currencies")).unwrap_or_else(|| panic!("no -v line: {err}"));
        assert!(line.contains("33 supported") && line.len() < 300, "{line}");
        // The supported codes decide: a retired one is refused, unasked.
        let (code, _, err) = run(&[&args[1..], &["EUR,CYP"]].concat());
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("'CYP'") && !err.contains("/currencies:"), "{err}");
        // Nothing was kept: each run asked once.
        assert_eq!((stub.currencies_asked(), stub.rates_asked()), (2, 1), "{status} {body}");
    }
    // Nothing listening: the run goes on, and fails on its own requests.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let (code, _, err) = run(&["fetch", "--api", &url, "--retries", "0", "--bases", "USD"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("0 ok, 1 failed"), "{err}");
}
