//! The server against every rule of `API.md`, one test per rule, with
//! numbers checked against the ECB's CSV read independently of the server.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::io::Read;

use rates_server::ServerOptions;
use serde_json::{Value, json};
use support::{agent, get, get_json, server};

/// The CSV, parsed here without the project's parser: day → code → per-EUR value.
fn csv() -> HashMap<String, HashMap<String, f64>> {
    let zip = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/eurofxref-hist.zip")).unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
    let mut text = String::new();
    archive.by_index(0).unwrap().read_to_string(&mut text).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let row = header[1..]
                .iter()
                .zip(&f[1..])
                .filter_map(|(h, v)| v.parse::<f64>().ok().map(|v| (h.to_string(), v)))
                .chain([("EUR".to_string(), 1.0)])
                .collect();
            (f[0].to_string(), row)
        })
        .collect()
}

/// Python's round(x, 6), via correctly rounded formatting.
fn round6(x: f64) -> f64 {
    format!("{x:.6}").parse().unwrap()
}

#[test]
fn published_example_2018_10_12_usd() {
    let s = server(ServerOptions::default());
    let (status, body) = get_json(&agent(), &s, "/rates?base=USD&date=2018-10-12");
    assert_eq!(status, 200);
    assert_eq!(body["date"], "2018-10-12");
    assert_eq!(body["base"], "USD");
    assert_eq!(body["rates"]["PLN"], 3.709694);
    assert_eq!(body["rates"]["EUR"], 0.864006);
    assert_eq!(body["rates"]["USD"], 1.0);
}

#[test]
fn cross_rates_match_the_csv_for_several_days_and_bases() {
    let table = csv();
    let s = server(ServerOptions::default());
    let a = agent();
    for day in ["1999-01-04", "2008-09-15", "2018-10-12", "2022-03-01", "2026-10-30"] {
        for base in ["EUR", "USD", "PLN", "JPY", "GBP"] {
            let (status, body) = get_json(&a, &s, &format!("/rates?base={base}&date={day}"));
            assert_eq!(status, 200, "{base} {day}: {body}");
            let row = &table[day];
            let rates = body["rates"].as_object().unwrap();
            assert_eq!(rates.len(), row.len(), "{base} {day}: every published currency, no more");
            for (code, per_eur) in row {
                let want = if code == base { 1.0 } else { round6(per_eur / row[base]) };
                assert_eq!(rates[code].as_f64(), Some(want), "{base} {day} {code}");
            }
        }
    }
}

#[test]
fn base_defaults_to_eur_and_date_to_the_last_day() {
    let s = server(ServerOptions::default());
    let (status, body) = get_json(&agent(), &s, "/rates");
    assert_eq!(status, 200);
    assert_eq!(body["base"], "EUR");
    assert_eq!(body["date"], "2026-10-30");
    assert_eq!(body["rates"]["EUR"], 1.0);
    assert_eq!(body["rates"]["USD"], 1.1172);
}

#[test]
fn rates_include_eur_and_the_base() {
    let s = server(ServerOptions::default());
    let (_, body) = get_json(&agent(), &s, "/rates?base=NOK");
    assert_eq!(body["rates"]["NOK"], 1.0);
    assert_eq!(body["rates"]["EUR"], round6(1.0 / 10.312));
}

#[test]
fn symbols_select_and_may_leave_out_eur_and_the_base() {
    let s = server(ServerOptions::default());
    let (status, body) = get_json(&agent(), &s, "/rates?base=USD&symbols=PLN,CZK&date=2018-10-12");
    assert_eq!(status, 200);
    let keys: Vec<&String> = body["rates"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["CZK", "PLN"]);
}

#[test]
fn unpublished_currencies_are_absent() {
    let s = server(ServerOptions::default());
    let (_, body) = get_json(&agent(), &s, "/rates?date=2020-01-02");
    let rates = body["rates"].as_object().unwrap();
    assert!(rates.contains_key("USD") && rates.contains_key("HRK"), "HRK was still published in 2020");
    assert!(!rates.contains_key("CYP"), "CYP stopped in 2007");
    let (_, body) = get_json(&agent(), &s, "/rates?date=2024-01-02");
    assert!(!body["rates"].as_object().unwrap().contains_key("RUB"), "RUB stopped in 2022");
}

#[test]
fn known_code_without_a_rate_that_day_is_400() {
    let s = server(ServerOptions::default());
    let a = agent();
    assert_eq!(get_json(&a, &s, "/rates?base=CYP&date=2020-01-02").0, 400);
    assert_eq!(get_json(&a, &s, "/rates?symbols=RUB&date=2024-01-02").0, 400);
    assert_eq!(get_json(&a, &s, "/rates?base=CYP&date=2005-01-03").0, 200);
}

#[test]
fn bad_date_format_is_400() {
    let s = server(ServerOptions::default());
    for bad in ["2024", "2024-01", "abc"] {
        let (status, body) = get_json(&agent(), &s, &format!("/rates?date={bad}"));
        assert_eq!(status, 400);
        assert_eq!(body, json!({"detail": format!("Invalid date format: '{bad}'. Expected format: YYYY-MM-DD")}));
    }
}

#[test]
fn impossible_date_is_400() {
    let s = server(ServerOptions::default());
    let (status, body) = get_json(&agent(), &s, "/rates?date=2024-02-30");
    assert_eq!(status, 400);
    assert_eq!(body, json!({"detail": "Invalid date: '2024-02-30'."}));
}

#[test]
fn weekend_answers_the_business_day_before() {
    let s = server(ServerOptions::default());
    let (status, body) = get_json(&agent(), &s, "/rates?base=USD&date=2018-10-13");
    assert_eq!(status, 200);
    assert_eq!(body["date"], "2018-10-12");
    assert_eq!(body["rates"]["PLN"], 3.709694);
    // A holiday: 2018-12-25 falls back to 2018-12-24.
    assert_eq!(get_json(&agent(), &s, "/rates?date=2018-12-25").1["date"], "2018-12-24");
}

#[test]
fn future_date_answers_the_last_day() {
    let s = server(ServerOptions::default());
    assert_eq!(get_json(&agent(), &s, "/rates?date=2099-01-01").1["date"], "2026-10-30");
}

#[test]
fn date_before_the_data_is_404() {
    let s = server(ServerOptions::default());
    let (status, body) = get_json(&agent(), &s, "/rates?date=1999-01-03");
    assert_eq!(status, 404);
    assert_eq!(body, json!({"detail": "No rate data available for the specified date."}));
    assert_eq!(get_json(&agent(), &s, "/rates?date=1999-01-04").0, 200);
}

#[test]
fn lower_case_codes_are_accepted() {
    let s = server(ServerOptions::default());
    let (status, body) = get_json(&agent(), &s, "/rates?base=usd&symbols=pln&date=2018-10-12");
    assert_eq!(status, 200);
    assert_eq!(body, json!({"date": "2018-10-12", "base": "USD", "rates": {"PLN": 3.709694}}));
}

#[test]
fn unknown_base_is_400() {
    let s = server(ServerOptions::default());
    for bad in ["XYZ", "US"] {
        let (status, body) = get_json(&agent(), &s, &format!("/rates?base={bad}"));
        assert_eq!(status, 400);
        assert_eq!(body, json!({"detail": format!("Base currency '{bad}' is not supported.")}));
    }
}

#[test]
fn unknown_symbol_is_400() {
    let s = server(ServerOptions::default());
    let (status, body) = get_json(&agent(), &s, "/rates?symbols=USD,XYZ");
    assert_eq!(status, 400);
    assert_eq!(body, json!({"detail": "Currency 'XYZ' is not supported."}));
}

#[test]
fn unknown_path_is_404_json() {
    let s = server(ServerOptions::default());
    for path in ["/", "/nope", "/rates/extra"] {
        let (status, body) = get_json(&agent(), &s, path);
        assert_eq!((status, body), (404, json!({"detail": "Not found."})), "{path}");
    }
}

#[test]
fn currencies_lists_every_code_with_name_and_symbol() {
    let s = server(ServerOptions::default());
    let (status, body) = get_json(&agent(), &s, "/currencies");
    assert_eq!(status, 200);
    let table = body.as_object().unwrap();
    assert_eq!(table.len(), 42);
    for code in ["EUR", "USD", "CYP", "PLN", "ZAR"] {
        assert_eq!(table[code]["symbol"], code);
        assert!(table[code]["name"].as_str().is_some_and(|n| !n.is_empty()), "{code}");
    }
    assert_eq!(table["PLN"]["name"], "Polish Zloty");
}

#[test]
fn metrics_are_prometheus_text() {
    let s = server(ServerOptions::default());
    let a = agent();
    get(&a, &s, "/rates");
    get(&a, &s, "/nope");
    let (status, _, text) = get(&a, &s, "/metrics");
    assert_eq!(status, 200);
    // Prometheus names the status label `code`; `route` tells the API's
    // routes apart, anything else is `other`.
    assert!(text.contains("rates_requests_total{code=\"200\",route=\"/rates\"} 1\n"), "{text}");
    assert!(text.contains("rates_requests_total{code=\"404\",route=\"other\"} 1\n"), "{text}");
    assert!(text.contains("# TYPE rates_requests_in_flight gauge\nrates_requests_in_flight 0\n"), "{text}");
    assert!(text.contains("rates_requests_in_flight_max 1\n"), "{text}");
    assert!(text.contains("rates_rate_limited_total 0\n"), "{text}");
}

#[test]
fn json_errors_have_only_a_detail() {
    let s = server(ServerOptions::default());
    let (_, body) = get_json(&agent(), &s, "/rates?base=XYZ");
    assert!(matches!(&body, Value::Object(m) if m.len() == 1 && m["detail"].is_string()));
}

/// The server keeps the answers it made: asked again, a query gets the same
/// bytes; a query differing in any way gets its own answer,
/// errors included.
#[test]
fn a_query_asked_again_gets_the_same_answer() {
    let s = server(ServerOptions::default());
    let a = agent();
    let first = get(&a, &s, "/rates?base=USD&symbols=GBP,JPY");
    assert_eq!(first.0, 200);
    for _ in 0..3 {
        assert_eq!(get(&a, &s, "/rates?base=USD&symbols=GBP,JPY"), first);
    }
    let (status, other) = get_json(&a, &s, "/rates?base=USD&symbols=GBP");
    assert_eq!(status, 200);
    assert_eq!(other["rates"].as_object().map(|r| r.len()), Some(1));
    let (status, bad) = get_json(&a, &s, "/rates?base=USD&symbols=GBP,XXX");
    assert_eq!((status, bad["detail"].as_str().is_some()), (400, true));
    let (status, none) = get_json(&a, &s, "/rates?base=USD&date=1990-01-01");
    assert_eq!(status, 404, "{none}");
}
