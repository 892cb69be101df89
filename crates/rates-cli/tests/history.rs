//! `rates history` end to end: exactly the dataset's business days over
//! weekends and holidays, values equal to the dataset's, a failing day
//! reported while the others are written, bad input refused before any
//! request, JSON output to a file and the chart, and a throttled run that
//! stays within the server's rate limit.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::IntoResponse;
use chrono::{Datelike, NaiveDate, Weekday};
use common::{Stub, run};
use rates_core::{Currency, Dataset};

mod common;

fn day(s: &str) -> NaiveDate {
    rates_core::parse_date(s).unwrap()
}

/// The dataset's business days from `from` to `to`.
fn business_days(from: &str, to: &str) -> Vec<NaiveDate> {
    Dataset::embedded().days().iter().copied().filter(|d| (day(from)..=day(to)).contains(d)).collect()
}

fn weekdays(from: &str, to: &str) -> usize {
    day(from)
        .iter_days()
        .take_while(|d| *d <= day(to))
        .filter(|d| !matches!(d.weekday(), Weekday::Sat | Weekday::Sun))
        .count()
}

/// Parses `date,SYM..` CSV, checking every value against the dataset.
fn check_csv(csv: &str, base: &str, symbols: &[&str]) -> Vec<NaiveDate> {
    let ds = Dataset::embedded();
    let base: Currency = base.parse().unwrap();
    let syms: Vec<Currency> = symbols.iter().map(|s| s.parse().unwrap()).collect();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(format!("date,{}", symbols.join(",")).as_str()));
    lines
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            assert_eq!(cells.len(), 1 + syms.len(), "{line}");
            let date = day(cells[0]);
            let want = ds.rates(base, &syms, Some(date)).unwrap();
            assert_eq!(want.date, date);
            for (cell, s) in cells[1..].iter().zip(&syms) {
                assert_eq!(cell.parse::<f64>().unwrap(), want.get(*s).unwrap(), "{s} on {date}");
            }
            date
        })
        .collect()
}

#[test]
fn weekends_and_holidays_give_exactly_the_business_days() {
    // Christmas and New Year: TARGET holidays on weekdays; the second range
    // starts on one (2019-01-01, whose answer is 2018-12-31, outside it).
    for (from, to, model) in [("2018-12-20", "2019-01-08", "async"), ("2019-01-01", "2019-01-04", "thread-pool")] {
        let want = business_days(from, to);
        assert!(weekdays(from, to) > want.len(), "{from}..{to} has no holiday");
        let (code, out, err) = run(&[
            "history",
            "--base",
            "USD",
            "--symbols",
            "EUR,PLN,JPY",
            "--from",
            from,
            "--to",
            to,
            "--model",
            model,
            "--sim-latency",
            "0",
        ]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(check_csv(&out, "USD", &["EUR", "PLN", "JPY"]), want, "{from}..{to}");
    }
}

/// A server over the embedded data that fails every request for `failing`
/// with 500, counting the requests for rates it saw in all and for that
/// day (its `/currencies`, asked for the codes it accepts, is counted
/// apart: `all` counts every request).
struct Server {
    url: String,
    requests: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    all: Arc<AtomicU64>,
    _rt: tokio::runtime::Runtime,
}

fn server_failing_on(failing: &'static str) -> Server {
    let shared = rates_server::Shared::new(Dataset::embedded(), rates_server::ServerOptions::default()).unwrap();
    let (requests, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let all = Arc::new(AtomicU64::new(0));
    let (seen, fails, any) = (Arc::clone(&requests), Arc::clone(&failed), Arc::clone(&all));
    let app = rates_server::router(shared).layer(axum::middleware::from_fn(move |req: Request, next: Next| {
        let (seen, fails, any) = (Arc::clone(&seen), Arc::clone(&fails), Arc::clone(&any));
        async move {
            any.fetch_add(1, Ordering::SeqCst);
            if req.uri().path() == "/rates" {
                seen.fetch_add(1, Ordering::SeqCst);
            }
            if req.uri().query().is_some_and(|q| q.contains(&format!("date={failing}"))) {
                fails.fetch_add(1, Ordering::SeqCst);
                let body = axum::Json(serde_json::json!({"detail": "Injected failure."}));
                return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, body).into_response();
            }
            next.run(req).await
        }
    }));
    let (url, rt) = common::serve_app(app, 1);
    Server { url, requests, failed, all, _rt: rt }
}

#[test]
fn a_day_that_fails_is_reported_and_the_others_are_written() {
    let s = server_failing_on("2018-10-10");
    let (code, out, err) = run(&[
        "history",
        "--api",
        &s.url,
        "--base",
        "EUR",
        "--symbols",
        "USD,GBP",
        "--from",
        "2018-10-08",
        "--to",
        "2018-10-12",
        "--retries",
        "2",
        "--model",
        "two-way-queues",
        "--workers",
        "2",
    ]);
    assert_eq!(code, 1, "{err}");
    let days = check_csv(&out, "EUR", &["USD", "GBP"]);
    assert_eq!(days, ["2018-10-08", "2018-10-09", "2018-10-11", "2018-10-12"].map(day));
    // Named once, after its first attempt and two retries.
    assert_eq!(s.failed.load(Ordering::SeqCst), 3);
    assert_eq!(s.requests.load(Ordering::SeqCst), 4 + 3);
    assert!(err.contains("rates: 2018-10-10: HTTP 500: Injected failure. (after 3 attempts)"), "{err}");
    assert_eq!(err.matches("2018-10-10").count(), 1, "{err}");
    assert!(err.contains("rates: 4 ok, 1 failed"), "{err}");
}

#[test]
fn bad_input_is_refused_before_any_request() {
    let s = server_failing_on("never");
    let ok = ["--base", "USD", "--symbols", "EUR", "--from", "2018-10-01", "--to", "2018-10-05"];
    for (change, value, named) in [
        ("--from", "2018-02-30", "'2018-02-30'"),
        ("--to", "2018-10", "'2018-10'"),
        ("--to", "2018-09-30", "--from 2018-10-01 is after --to 2018-09-30"),
        ("--base", "ABC", "'ABC'"),
        ("--base", "USD,EUR", "expected one currency, got 'USD,EUR'"),
        ("--symbols", "EUR,XYZ", "'XYZ'"),
        ("--symbols", "EURO", "EURO"),
    ] {
        let mut args = vec!["history", "--api", &s.url];
        for pair in ok.chunks(2) {
            args.extend_from_slice(&[pair[0], if pair[0] == change { value } else { pair[1] }]);
        }
        let (code, out, err) = run(&args);
        assert_eq!(code, 2, "{change} {value}: {err}");
        assert!(err.contains(named) && err.lines().count() == 1, "{change} {value}: {err}");
        assert_eq!(out, "");
    }
    // Files that could not be written are refused before the work, too,
    // and before the API is asked anything.
    let asked = s.all.load(Ordering::SeqCst);
    let missing = std::env::temp_dir().join(format!("rates-no-such-dir-{}", std::process::id()));
    let (in_missing, svg_in_missing) = (missing.join("out.csv"), missing.join("chart.svg"));
    for (flag, value, named) in [
        ("--plot", "x.png", "'x.png'".to_string()),
        ("--out", in_missing.to_str().unwrap(), format!("'{}'", missing.display())),
        ("--plot", svg_in_missing.to_str().unwrap(), format!("'{}'", missing.display())),
        ("--out", ".", "'.' is a directory".to_string()),
    ] {
        let (code, out, err) = run(&[&["history", "--api", &s.url, flag, value][..], &ok[..]].concat());
        assert_eq!(code, 2, "{flag} {value}: {err}");
        assert!(err.contains(&named) && err.lines().count() == 1, "{flag} {value}: {err}");
        assert_eq!(out, "");
    }
    assert_eq!(s.all.load(Ordering::SeqCst), asked);
    assert_eq!(s.requests.load(Ordering::SeqCst), 0);
}

#[test]
fn json_to_a_file_and_a_chart() {
    let dir = std::env::temp_dir();
    let (json, svg) = (
        dir.join(format!("rates-history-{}.json", std::process::id())),
        dir.join(format!("rates-history-{}.svg", std::process::id())),
    );
    let (code, out, err) = run(&[
        "history",
        "--base",
        "GBP",
        "--symbols",
        "USD,JPY",
        "--from",
        "2020-03-01",
        "--to",
        "2020-04-30",
        "--format",
        "json",
        "--out",
        json.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
        "--sim-latency",
        "1ms",
        "--model",
        "async-executor",
    ]);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let want = business_days("2020-03-01", "2020-04-30");
    let arr = v.as_array().unwrap();
    let dates: Vec<NaiveDate> = arr.iter().map(|r| day(r["date"].as_str().unwrap())).collect();
    assert_eq!(dates, want);
    let ds = Dataset::embedded();
    let (gbp, usd): (Currency, Currency) = ("GBP".parse().unwrap(), "USD".parse().unwrap());
    for r in arr {
        let d = day(r["date"].as_str().unwrap());
        assert_eq!(r["base"], "GBP");
        assert_eq!(r["rates"]["USD"].as_f64(), ds.rates(gbp, &[usd], Some(d)).unwrap().get(usd));
    }
    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<&str> =
        doc.descendants().filter(|n| n.has_tag_name("text")).filter_map(|n| n.text()).map(str::trim).collect();
    assert!(texts.contains(&"USD") && texts.contains(&"JPY"), "{texts:?}");
    let _ = (std::fs::remove_file(&json), std::fs::remove_file(&svg));
}

#[test]
fn a_throttled_history_stays_within_the_servers_rate_limit() {
    // The public service's limit scaled up tenfold to keep the test short:
    // the server allows 20/s with a burst of 8, the client paces itself at
    // 20/s with a burst of 4. The four requests of slack absorb up to 200 ms
    // between a grant and its request reaching the server, on a busy machine.
    // The server counts its 429s (a client waits out a 429's Retry-After
    // without failing the day, so the exit code cannot tell).
    let limited = || {
        let options = rates_server::ServerOptions {
            rate_limit: Some(rates_server::Quota::new(20.0, 8).unwrap()),
            ..rates_server::ServerOptions::default()
        };
        let server = rates_server::spawn(Dataset::embedded(), options).unwrap();
        // The codes it accepts, stored: its /currencies is not asked.
        let store = common::fresh_cache();
        let codes = ["USD", "EUR"].map(|c| c.parse::<Currency>().unwrap());
        rates_core::Store::open(&store)
            .unwrap()
            .put_currencies(server.url(), &codes, rates_core::store::unix_now())
            .unwrap();
        (server, store)
    };
    let range = ["--base", "USD", "--symbols", "EUR", "--from", "2018-10-01", "--to", "2018-10-19", "--retries", "0"];
    let model = ["--model", "thread-pool", "--workers", "8"];
    let (server, store) = limited();
    let api = ["--api", server.url(), "--cache", store.to_str().unwrap()];
    let (code, out, err) = run(&[&["history", "--rate", "20", "--burst", "4"][..], &api, &range, &model].concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(check_csv(&out, "USD", &["EUR"]), business_days("2018-10-01", "2018-10-19"));
    let seen = server.metrics().snapshot();
    assert_eq!((seen.count(429), seen.count(200)), (0, 15), "{err}");

    // The control: unthrottled, the same limit refuses some requests.
    let (server, store) = limited();
    let api = ["--api", server.url(), "--cache", store.to_str().unwrap()];
    let (_, _, err) = run(&[&["history"][..], &api, &range, &model].concat());
    assert!(server.metrics().snapshot().count(429) > 0, "{err}");
}

/// `rates history` of USD in EUR from `from` to `to`, with `more` arguments.
fn usd_history(from: &str, to: &str, more: &[&str]) -> (i32, String, String) {
    let args = ["history", "--base", "USD", "--symbols", "EUR", "--from", from, "--to", to];
    run(&[&args[..], more].concat())
}

#[test]
fn a_range_without_a_business_day_is_refused() {
    // A weekend, and Christmas with Boxing Day (TARGET holidays, on weekdays):
    // the embedded server's data has no rates on either.
    for (from, to, why) in [
        ("2018-12-29", "2018-12-30", "the data has no rates from Saturday 2018-12-29 to Sunday 2018-12-30"),
        ("2018-12-25", "2018-12-26", "the data has no rates from Tuesday 2018-12-25 to Wednesday 2018-12-26"),
    ] {
        assert!(business_days(from, to).is_empty());
        let (code, out, err) = usd_history(from, to, &["--sim-latency", "0"]);
        assert_eq!((code, out.as_str()), (2, ""), "{err}");
        assert_eq!(err, format!("rates: --from {from} --to {to}: no business day in this range: {why}\n"));
    }
    // With an API, a range without a weekday is refused before any request.
    let stub = Stub::new(None);
    let (code, out, err) = usd_history("2018-12-29", "2018-12-30", &["--api", &stub.url]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert!(err.contains("no business day in this range: Saturday 2018-12-29 to Sunday 2018-12-30 has no weekday"));
    assert_eq!((stub.currencies_asked(), stub.rates_asked()), (0, 0));
    // Weekdays that are all holidays: the answers tell, and it is said the same way.
    let store = common::fresh_cache();
    let api = ["--api", &stub.url, "--cache", store.to_str().unwrap()];
    let (code, out, err) = usd_history("2018-12-25", "2018-12-26", &api);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert!(err.contains("no business day in this range") && err.contains("earlier day (holidays)"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(stub.rates_asked(), 2);
    // ... and remembered: asking again costs no request.
    let (code, _, err) = usd_history("2018-12-25", "2018-12-26", &api);
    assert_eq!(code, 2, "{err}");
    assert_eq!((stub.currencies_asked(), stub.rates_asked()), (1, 2));
}

#[test]
fn the_codes_are_the_apis_own_and_a_retired_one_is_refused_locally() {
    // The embedded server: the 33 supported codes, not the ECB file's 42.
    for (flag, value) in [("--symbols", "EUR,CYP"), ("--base", "SIT")] {
        let mut args = vec!["history", "--base", "USD", "--symbols", "EUR", "--from", "2005-01-03"];
        args.extend(["--to", "2005-01-07"]);
        let at = args.iter().position(|a| *a == flag).unwrap();
        args[at + 1] = value;
        let (code, out, err) = run(&args);
        assert_eq!((code, out.as_str()), (2, ""), "{err}");
        assert!(err.contains(&format!("--{}: unsupported currency", &flag[2..])), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    // An API whose /currencies lists USD and PLN only: EUR is refused, PLN is fine.
    let stub = Stub::new(Some((200, r#"{"USD":{"name":"US Dollar"},"PLN":{"name":"Polish Zloty"}}"#)));
    let store = common::fresh_cache();
    let api = ["--api", &stub.url, "--cache", store.to_str().unwrap()];
    let (code, _, err) = usd_history("2018-10-08", "2018-10-12", &api);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("'EUR'") && err.contains("lists 2 codes: PLN, USD"), "{err}");
    assert_eq!(stub.rates_asked(), 0);
    let args = ["history", "--base", "USD", "--symbols", "PLN", "--from", "2018-10-08", "--to", "2018-10-12"];
    let (code, out, err) = run(&[&args[..], &api].concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(check_csv(&out, "USD", &["PLN"]), business_days("2018-10-08", "2018-10-12"));
    assert_eq!((stub.currencies_asked(), stub.rates_asked()), (1, 5));
    // --offline asks nothing, /currencies included: the store has the codes.
    let (code, _, err) = run(&[&args[..], &api, &["--offline"]].concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!((stub.currencies_asked(), stub.rates_asked()), (1, 5));
}
