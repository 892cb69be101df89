//! The server against every rule of `docs/API.md`, one row per rule: status
//! and parsed JSON body (key order free), with the numbers checked against
//! the ECB's CSV read independently of the server.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeSet, HashMap};
use std::io::Read;

use rates_server::{RunningServer, ServerOptions};
use serde_json::{Value, json};
use support::{agent, get, get_json, server};

/// The 33 codes the API serves.
const SUPPORTED: [&str; 33] = [
    "EUR", "USD", "JPY", "BGN", "CZK", "DKK", "GBP", "HUF", "PLN", "RON", "SEK", "CHF", "ISK", "NOK", "HRK", "RUB",
    "TRY", "AUD", "BRL", "CAD", "CNY", "HKD", "IDR", "ILS", "INR", "KRW", "MXN", "MYR", "NZD", "PHP", "SGD", "THB",
    "ZAR",
];

/// The ECB's retired codes: in the file, refused by the API.
const RETIRED: [&str; 9] = ["CYP", "EEK", "LTL", "LVL", "MTL", "ROL", "SIT", "SKK", "TRL"];

/// The CSV, parsed here without the project's parser: day → code → the
/// value as printed (`1.1172`), EUR as `1`.
fn csv() -> HashMap<String, HashMap<String, String>> {
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
                .filter(|(_, v)| v.parse::<f64>().is_ok())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .chain([("EUR".to_string(), "1".to_string())])
                .collect();
            (f[0].to_string(), row)
        })
        .collect()
}

/// A printed decimal as (digits, scale): `1.1172` → (11172, 4).
fn decimal(s: &str) -> (u128, u32) {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    (format!("{int}{frac}").parse().unwrap(), frac.len() as u32)
}

/// `a / b` rounded half-to-even to 6 places, from the exact quotient. (The
/// API rounds to 28 digits first; with the ECB's 7-digit values that never
/// changes a result, as the dataset's exhaustive test against Python shows.)
fn cross(a: &str, b: &str) -> f64 {
    let ((am, as_), (bm, bs)) = (decimal(a), decimal(b));
    let num = am * 10u128.pow(bs + 6);
    let den = bm * 10u128.pow(as_);
    let (q, r) = (num / den, num % den);
    let q = match (2 * r).cmp(&den) {
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => q + (q & 1),
        std::cmp::Ordering::Less => q,
    };
    q as f64 / 1e6
}

/// The API's answer for `base` on `day`, all symbols, from the CSV.
fn expected(table: &HashMap<String, HashMap<String, String>>, day: &str, base: &str) -> Value {
    let row = &table[day];
    let rates: serde_json::Map<String, Value> = SUPPORTED
        .iter()
        .filter_map(|c| row.get(*c).map(|v| (c, v)))
        .map(|(c, v)| {
            let value = if base == "EUR" { v.parse::<f64>().unwrap() } else { cross(v, &row[base]) };
            (c.to_string(), json!(value))
        })
        .collect();
    json!({"date": day, "base": base, "rates": rates})
}

/// What a row expects of the body.
enum Body {
    /// Exactly this JSON (key order free).
    Is(Value),
    /// Just an error with this detail.
    Detail(&'static str),
    /// A 200 of this date and base with every supported code published
    /// that day, checked against the CSV.
    AllOf(&'static str, &'static str),
}

/// One rule of the contract: a request and its answer.
struct Row {
    rule: &'static str,
    path: &'static str,
    status: u16,
    body: Body,
}

fn row(rule: &'static str, path: &'static str, status: u16, body: Body) -> Row {
    Row { rule, path, status, body }
}

fn rows() -> Vec<Row> {
    use Body::{AllOf, Detail, Is};
    let last = "2026-10-30";
    vec![
        // The published example, fields in their places.
        row(
            "example",
            "/rates?base=USD&date=2018-10-12&symbols=EUR,PLN,USD",
            200,
            Is(json!({"date":"2018-10-12","base":"USD","rates":{"EUR":0.864006,"PLN":3.709694,"USD":1.0}})),
        ),
        // Defaults: base EUR, every symbol, the latest day.
        row("defaults", "/rates", 200, AllOf(last, "EUR")),
        row("cross rates of a base", "/rates?base=NOK", 200, AllOf(last, "NOK")),
        row("cross rates of a day", "/rates?base=JPY&date=2008-09-15", 200, AllOf("2008-09-15", "JPY")),
        row("ECB values with base EUR", "/rates?date=1999-01-04", 200, AllOf("1999-01-04", "EUR")),
        // 1. The base: one of the 33, case-sensitive.
        row("lower-case base", "/rates?base=usd", 400, Detail("Base currency 'usd' is not supported.")),
        row("unknown base", "/rates?base=XYZ", 400, Detail("Base currency 'XYZ' is not supported.")),
        row("empty base", "/rates?base=", 400, Detail("Base currency '' is not supported.")),
        row("retired base", "/rates?base=CYP&date=2005-01-03", 400, Detail("Base currency 'CYP' is not supported.")),
        // 2. The symbols: split on ',' untrimmed, each one of the 33.
        row("lower-case symbol", "/rates?symbols=usd", 400, Detail("Currency 'usd' is not supported.")),
        row("unknown symbol", "/rates?symbols=USD,XYZ", 400, Detail("Currency 'XYZ' is not supported.")),
        row("untrimmed symbol", "/rates?symbols=USD,%20GBP", 400, Detail("Currency ' GBP' is not supported.")),
        row("trailing comma", "/rates?symbols=USD,", 400, Detail("Currency '' is not supported.")),
        row(
            "retired symbol",
            "/rates?symbols=USD,MTL&date=2005-01-03",
            400,
            Detail("Currency 'MTL' is not supported."),
        ),
        row("empty symbols", "/rates?symbols=", 200, AllOf(last, "EUR")),
        row(
            "a symbol twice",
            "/rates?symbols=USD,USD,PLN&date=2018-10-12",
            200,
            Is(json!({"date":"2018-10-12","base":"EUR","rates":{"USD":1.1574,"PLN":4.2936}})),
        ),
        row(
            "EUR and the base as symbols",
            "/rates?base=USD&symbols=USD,EUR&date=2018-10-12",
            200,
            Is(json!({"date":"2018-10-12","base":"USD","rates":{"USD":1.0,"EUR":0.864006}})),
        ),
        // 3. The date: empty is the latest; strict shape; a real day.
        row("empty date", "/rates?date=", 200, AllOf(last, "EUR")),
        row("bad date", "/rates?date=abc", 400, Detail("Invalid date format: 'abc'. Expected format: YYYY-MM-DD")),
        row(
            "short date",
            "/rates?date=2024-1-01",
            400,
            Detail("Invalid date format: '2024-1-01'. Expected format: YYYY-MM-DD"),
        ),
        row(
            "impossible date",
            "/rates?date=2024-02-30",
            400,
            Detail("Invalid date: '2024-02-30'. Expected a valid date in YYYY-MM-DD format."),
        ),
        // 4. The day answered: the latest on or before the date.
        row("weekend", "/rates?base=USD&date=2018-10-13", 200, AllOf("2018-10-12", "USD")),
        row("holiday", "/rates?date=2018-12-25", 200, AllOf("2018-12-24", "EUR")),
        row("after the data", "/rates?date=2099-01-01", 200, AllOf(last, "EUR")),
        row("before the data", "/rates?date=1998-12-31", 404, Detail("No rate data available for the specified date.")),
        row(
            "the first day",
            "/rates?date=1999-01-04&symbols=USD",
            200,
            Is(json!({"date":"1999-01-04","base":"EUR","rates":{"USD":1.1789}})),
        ),
        // 5. The base must have a rate that day.
        row(
            "RUB after 2022-03-01",
            "/rates?base=RUB&date=2024-01-02",
            400,
            Detail("Base currency 'RUB' not available in current rates data"),
        ),
        row("RUB on 2022-03-01", "/rates?base=RUB&date=2022-03-01", 200, AllOf("2022-03-01", "RUB")),
        row(
            "ISK on 2010-05-05",
            "/rates?base=ISK&date=2010-05-05",
            400,
            Detail("Base currency 'ISK' not available in current rates data"),
        ),
        row(
            "BGN on the last day",
            "/rates?base=BGN",
            400,
            Detail("Base currency 'BGN' not available in current rates data"),
        ),
        // Symbols without a rate that day are left out.
        row(
            "BGN left out",
            "/rates?symbols=USD,BGN",
            200,
            Is(json!({"date":last,"base":"EUR","rates":{"USD":1.1172}})),
        ),
        row(
            "RUB left out",
            "/rates?symbols=RUB&date=2024-01-02",
            200,
            Is(json!({"date":"2024-01-02","base":"EUR","rates":{}})),
        ),
        row(
            "ISK left out",
            "/rates?date=2010-05-05&symbols=ISK",
            200,
            Is(json!({"date":"2010-05-05","base":"EUR","rates":{}})),
        ),
        // Decimal, not binary, division.
        row(
            "NOK to CHF",
            "/rates?base=NOK&symbols=CHF&date=2026-07-08",
            200,
            Is(json!({"date":"2026-07-08","base":"NOK","rates":{"CHF":0.082812}})),
        ),
        // The checks' order: base, symbols, date, day, the base's rate.
        row("base first", "/rates?base=usd&symbols=XYZ&date=abc", 400, Detail("Base currency 'usd' is not supported.")),
        row("symbols second", "/rates?symbols=XYZ&date=abc", 400, Detail("Currency 'XYZ' is not supported.")),
        row(
            "date third",
            "/rates?base=RUB&date=2024-02-30",
            400,
            Detail("Invalid date: '2024-02-30'. Expected a valid date in YYYY-MM-DD format."),
        ),
        row(
            "the day before the base",
            "/rates?base=RUB&date=1998-12-31",
            404,
            Detail("No rate data available for the specified date."),
        ),
        // Unknown paths.
        row("root", "/", 404, Detail("Not Found")),
        row("unknown path", "/nope", 404, Detail("Not Found")),
        row("below a route", "/rates/extra", 404, Detail("Not Found")),
    ]
}

/// Checks `row` against the answer `s` gives.
fn check(table: &HashMap<String, HashMap<String, String>>, a: &ureq::Agent, s: &RunningServer, row: &Row) {
    let (status, body) = get_json(a, s, row.path);
    assert_eq!(status, row.status, "{}: {} answered {body}", row.rule, row.path);
    let want = match &row.body {
        Body::Is(v) => v.clone(),
        Body::Detail(d) => json!({ "detail": d }),
        Body::AllOf(day, base) => expected(table, day, base),
    };
    assert_eq!(body, want, "{}: {}", row.rule, row.path);
}

#[test]
fn every_rule_of_the_contract() {
    let table = csv();
    let s = server(ServerOptions::default());
    let a = agent();
    for row in rows() {
        check(&table, &a, &s, &row);
    }
}

#[test]
fn every_retired_code_is_refused_as_base_and_symbol() {
    let s = server(ServerOptions::default());
    let a = agent();
    for code in RETIRED {
        let (status, body) = get_json(&a, &s, &format!("/rates?base={code}&date=2000-01-04"));
        assert_eq!((status, body), (400, json!({"detail": format!("Base currency '{code}' is not supported.")})));
        let (status, body) = get_json(&a, &s, &format!("/rates?symbols={code}&date=2000-01-04"));
        assert_eq!((status, body), (400, json!({"detail": format!("Currency '{code}' is not supported.")})));
    }
    // Nor are they listed among all symbols on a day the ECB still had them.
    let (_, body) = get_json(&a, &s, "/rates?date=2000-01-04");
    let listed: BTreeSet<&str> = body["rates"].as_object().unwrap().keys().map(String::as_str).collect();
    assert!(listed.iter().all(|c| SUPPORTED.contains(c)), "{listed:?}");
}

#[test]
fn currencies_is_vatcomplys_table_and_searchable() {
    let s = server(ServerOptions::default());
    let a = agent();
    let (status, _, text) = get(&a, &s, "/currencies");
    assert_eq!(status, 200);
    assert_eq!(text, rates_core::CURRENCIES_JSON, "the table as it is, order included");
    let table: Value = serde_json::from_str(rates_core::CURRENCIES_JSON).unwrap();
    let table = table.as_object().unwrap();
    assert_eq!(table.len(), 33);
    // ?search keeps the entries whose code or name has the text, in any case.
    let (status, found) = get_json(&a, &s, "/currencies?search=dollar");
    assert_eq!(status, 200);
    let want: serde_json::Map<String, Value> = table
        .iter()
        .filter(|(_, v)| v["name"].as_str().unwrap().to_lowercase().contains("dollar"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(want.len() >= 6 && want.contains_key("USD"), "{want:?}");
    assert_eq!(found, Value::Object(want));
    assert_eq!(get_json(&a, &s, "/currencies?search=gBp").1, json!({"GBP": table["GBP"]}));
    assert_eq!(get_json(&a, &s, "/currencies?search=no%20such%20money"), (200, json!({})));
    assert_eq!(get_json(&a, &s, "/currencies?search=").1, Value::Object(table.clone()));
}

/// The headers of `GET path` (lower-case names) and its status, asked
/// from a page of another origin.
fn headers(a: &ureq::Agent, s: &RunningServer, path: &str) -> (u16, HashMap<String, String>) {
    let r = a.get(format!("{}{path}", s.url())).header("Origin", "https://example.com").call().unwrap();
    let h = r.headers().iter().map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())).collect();
    (r.status().as_u16(), h)
}

#[test]
fn a_request_that_names_no_origin_is_told_none() {
    // django-cors-headers answers the CORS header to requests with an Origin.
    let s = server(ServerOptions::default());
    let r = agent().get(format!("{}/rates?symbols=USD", s.url())).call().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[test]
fn methods_slashes_and_plus_signs_as_vatcomplys_server_takes_them() {
    let s = server(ServerOptions::public());
    let url = |path: &str| format!("{}{path}", s.url());
    let body = |r: &mut ureq::http::Response<ureq::Body>| -> Value {
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap()
    };
    // Any method but GET on a route: 404 as an unknown path, no token taken.
    for _ in 0..5 {
        let mut r = agent().post(url("/rates")).send("").unwrap();
        assert_eq!(r.status().as_u16(), 404);
        assert_eq!(body(&mut r), json!({"detail": "Not Found"}));
    }
    assert_eq!(agent().head(url("/rates")).call().unwrap().status().as_u16(), 404);
    // A plain OPTIONS: 204 with what the route allows.
    let r = agent().options(url("/rates")).call().unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(r.headers().get("allow").and_then(|v| v.to_str().ok()), Some("GET, OPTIONS"));
    // A trailing slash: a permanent redirect to the route, query kept.
    let no_redirects = ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).build().new_agent();
    let r = no_redirects.get(url("/rates/?base=USD")).call().unwrap();
    assert_eq!(r.status().as_u16(), 308);
    assert_eq!(r.headers().get("location").and_then(|v| v.to_str().ok()), Some("/rates?base=USD"));
    // '+' is not a space: `USD,+GBP` names '+GBP' ('%20' is a space).
    let mut r = agent().get(url("/rates?symbols=USD,+GBP")).call().unwrap();
    assert_eq!((r.status().as_u16(), body(&mut r)), (400, json!({"detail": "Currency '+GBP' is not supported."})));
    let mut r = agent().get(url("/rates?symbols=USD,%20GBP")).call().unwrap();
    assert_eq!((r.status().as_u16(), body(&mut r)), (400, json!({"detail": "Currency ' GBP' is not supported."})));
    // None of that drew on the bucket: /rates still has its burst of 4,
    // the two 400s above taken.
    for want in [200, 200, 429] {
        assert_eq!(agent().get(url("/rates?symbols=USD")).call().unwrap().status().as_u16(), want);
    }
}

#[test]
fn every_answer_allows_any_origin_and_none_is_cacheable() {
    let s = server(ServerOptions::public());
    let a = agent();
    let mut seen = Vec::new();
    for path in ["/rates", "/rates?base=XYZ", "/nope", "/currencies", "/rates", "/rates", "/rates", "/rates"] {
        let (status, h) = headers(&a, &s, path);
        assert_eq!(h.get("access-control-allow-origin").map(String::as_str), Some("*"), "{status} {path}");
        assert!(!h.contains_key("etag") && !h.contains_key("cache-control"), "{status} {path}: {h:?}");
        seen.push(status);
    }
    // A 200, a 400, a 404 and, over the limit, a 429.
    for status in [200, 400, 404, 429] {
        assert!(seen.contains(&status), "{status} in {seen:?}");
    }
}

#[test]
fn a_preflight_is_answered_204_on_any_path() {
    let s = server(ServerOptions::public());
    for path in ["/rates", "/currencies", "/nope"] {
        let r = agent()
            .options(format!("{}{path}", s.url()))
            .header("Origin", "https://example.com")
            .header("Access-Control-Request-Method", "GET")
            .call()
            .unwrap();
        assert_eq!(r.status().as_u16(), 204, "{path}");
        let h = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(h("access-control-allow-origin").as_deref(), Some("*"));
        assert_eq!(h("access-control-allow-methods").as_deref(), Some("GET, POST, PUT, PATCH, DELETE, OPTIONS"));
        assert_eq!(h("allow").as_deref(), Some("GET, OPTIONS"));
        assert_eq!(h("vary").as_deref(), Some("Access-Control-Request-Method, Access-Control-Request-Headers"));
        assert_eq!(h("access-control-allow-headers").as_deref(), Some("Content-Type, Authorization"));
        assert_eq!(h("access-control-max-age").as_deref(), Some("3600"));
    }
    // Preflights draw on no bucket: the burst of /rates is still whole.
    let a = agent();
    for _ in 0..4 {
        assert_eq!(headers(&a, &s, "/rates?symbols=USD").0, 200);
    }
}

#[test]
fn past_the_public_limit_the_429_is_vatcomplys_and_each_route_has_its_bucket() {
    let s = server(ServerOptions::public());
    let a = agent();
    // The burst of 4, with nothing said about the limit.
    for _ in 0..4 {
        let (status, h) = headers(&a, &s, "/rates?symbols=USD");
        assert_eq!(status, 200);
        let limit_headers: Vec<&String> = h.keys().filter(|k| k.contains("ratelimit") || *k == "retry-after").collect();
        assert!(limit_headers.is_empty(), "{limit_headers:?}");
    }
    let mut r = a.get(format!("{}/rates?symbols=USD", s.url())).call().unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let h = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(h("retry-after").as_deref(), Some("1"));
    assert_eq!(h("x-ratelimit-limit").as_deref(), Some("2"));
    assert_eq!(h("x-ratelimit-burst").as_deref(), Some("4"));
    assert_eq!(h("content-type").as_deref(), Some("application/json"));
    for absent in ["x-ratelimit-remaining", "x-ratelimit-reset", "ratelimit", "ratelimit-policy"] {
        assert_eq!(h(absent), None, "{absent}");
    }
    let body: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(body, json!({"detail": "Rate limit exceeded. Try again in 1 seconds.", "retry_after": 1}));
    // /currencies has a bucket of its own, and unknown paths none.
    assert_eq!(headers(&a, &s, "/currencies").0, 200);
    assert_eq!(headers(&a, &s, "/nope").0, 404);
    // Counted in /metrics, which is never limited.
    let (status, _, text) = get(&a, &s, "/metrics");
    assert_eq!(status, 200);
    assert!(text.contains("rates_rate_limited_total 1\n"), "{text}");
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
    // A kept answer is the answer to its own query string only.
    assert_eq!(get_json(&a, &s, "/rates?base=usd&symbols=GBP,JPY").0, 400);
}
