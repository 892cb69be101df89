//! The routes of the API (`docs/API.md`): `/rates`, `/currencies`,
//! `/metrics`, and a JSON 404 for everything else. Fault injection wraps
//! every route but `/metrics`, which stays exact and quick for whoever is
//! watching. Every error answer carries the API's JSON `{"detail": ...}`
//! body, axum's own (a 405 for a wrong method, a rejected extractor)
//! included. Every answer allows any origin (CORS), and a CORS preflight is
//! answered before any route or fault, as vatcomply answers it. Every
//! request, `/metrics` included, is timed into the metrics by code and
//! route and logged as one access line (`tracing`, target
//! `rates_server::access`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock, RwLock};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use concur::sync;
use rates_core::{CURRENCIES_JSON, Currency, Dataset, RatesError, is_supported, supported_code};

use crate::metrics::Route;
use crate::{Shared, faults};

/// The API's router over `shared` state: the routes behind the one layer
/// that observes every request and injects the faults ([`handle`]).
pub fn router(shared: Arc<Shared>) -> Router {
    let state = Arc::clone(&shared);
    routes(shared).layer(middleware::from_fn(move |req: Request, next: Next| {
        let shared = Arc::clone(&state);
        async move {
            let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
            handle(&shared, peer, tokio::time::Instant::now(), req, |req| next.run(req)).await.0
        }
    }))
}

/// The routes alone. The server's own connections call them through
/// [`handle`] directly rather than through [`router`]'s layer, which costs
/// a boxed service clone and a boxed future per request.
pub(crate) fn routes(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/rates", get(rates))
        .route("/currencies", get(currencies))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(shared)
}

/// The target of the access lines, so they can be filtered on their own
/// (`RUST_LOG=rates_server::access=off`).
pub const ACCESS_LOG: &str = "rates_server::access";

/// Answers one request from `peer`, whose head began at `started`, with
/// `inner` (the routes), in this order from the outside in: time it into
/// the metrics and log it (so the status is the one the client gets and
/// the time includes the faults), give a non-JSON error answer the API's
/// JSON body, and, on every route but `/metrics`, inject the faults.
/// Returns the answer and when it was made.
pub(crate) async fn handle<F, Fut>(
    shared: &Shared,
    peer: Option<IpAddr>,
    started: tokio::time::Instant,
    req: Request,
    inner: F,
) -> (Response, tokio::time::Instant)
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let route = Route::of(req.uri().path());
    // What the access line needs, copied only if it is written.
    let logged = tracing::enabled!(target: ACCESS_LOG, tracing::Level::INFO).then(|| {
        let uri = req.uri();
        (req.method().clone(), uri.path_and_query().map_or_else(|| uri.path().to_string(), |p| p.to_string()))
    });
    // As django-cors-headers: any origin is allowed, said to a request
    // that names one.
    let cross_origin = req.headers().contains_key(header::ORIGIN);
    let answer = if let Some(answer) = before_routes(&req) {
        answer
    } else if route == Route::Metrics {
        inner(req).await
    } else {
        faults::inject(shared, peer, req, inner).await
    };
    let mut answer = json_errors(answer).await;
    if cross_origin {
        answer.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    }
    let made = tokio::time::Instant::now();
    let elapsed = made.saturating_duration_since(started);
    let status = answer.status().as_u16();
    shared.metrics.observe(route, status, elapsed.as_secs_f64());
    if let Some((method, target)) = logged {
        tracing::info!(
            target: ACCESS_LOG,
            method = %method,
            path = %target,
            status,
            duration_ms = format_args!("{:.3}", elapsed.as_secs_f64() * 1e3),
        );
    }
    (answer, made)
}

/// The most of a non-JSON error body kept as its detail.
const MAX_DETAIL: usize = 4096;

/// Gives an error answer that is not JSON (axum's bare 405, a plain-text
/// rejection) the API's `{"detail": ...}` body, keeping its other headers
/// (a 405's `Allow`).
async fn json_errors(answer: Response) -> Response {
    let status = answer.status();
    let is_json =
        answer.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return answer;
    }
    let (mut parts, body) = answer.into_parts();
    let text = axum::body::to_bytes(body, MAX_DETAIL).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let detail_text = if text.trim().is_empty() { status_detail(status) } else { text.trim().to_string() };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    let mut answer = detail(status, detail_text);
    answer.headers_mut().extend(parts.headers);
    answer
}

/// A status's reason as a sentence, the style of the API's details:
/// 405 → "Method not allowed.".
pub(crate) fn status_detail(status: StatusCode) -> String {
    let reason = status.canonical_reason().unwrap_or("Error");
    let mut words = reason.split(' ');
    let mut out = words.next().unwrap_or_default().to_string();
    for w in words {
        out.push(' ');
        // Acronyms (URI, HTTP) keep their case.
        if w.chars().all(|c| c.is_ascii_uppercase()) { out.push_str(w) } else { out.push_str(&w.to_lowercase()) }
    }
    out.push('.');
    out
}

/// An error answer: `{"detail": ...}` with its status.
pub(crate) fn detail(status: StatusCode, detail: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "detail": detail.into() }))).into_response()
}

/// The `/rates` answers already made, by query string: the dataset never
/// changes while the server runs, so neither does the answer to a query,
/// and making it (the lookup and the JSON) costs more than all the rest of
/// a request. Bounded: long query strings are not kept, and a full cache
/// starts again empty.
#[derive(Debug, Default)]
pub(crate) struct Answers(RwLock<HashMap<Box<str>, Bytes>>);

/// The most answers kept (about a kilobyte each, with their key).
const MAX_ANSWERS: usize = 1024;

/// The longest query string whose answer is kept.
const MAX_ANSWER_KEY: usize = 256;

impl Answers {
    fn get(&self, query: &str) -> Option<Bytes> {
        sync::read(&self.0).get(query).cloned()
    }

    fn put(&self, query: &str, body: Bytes) {
        if query.len() > MAX_ANSWER_KEY {
            return;
        }
        let mut answers = sync::write(&self.0);
        if answers.len() >= MAX_ANSWERS {
            answers.clear();
        }
        answers.insert(query.into(), body);
    }
}

/// The answer to `req` if it is a `GET /rates` whose answer is already
/// kept: the same bytes and headers the route gives, without the route.
pub(crate) fn kept_answer(shared: &Shared, req: &Request) -> Option<Response> {
    if req.method() != axum::http::Method::GET || req.uri().path() != "/rates" {
        return None;
    }
    shared.answers.get(req.uri().query().unwrap_or_default()).map(json_body)
}

/// A JSON answer from its bytes, with the headers `Json` gives and its
/// length, so that the router's answer and a kept one list their headers
/// in the same order.
fn json_body(body: Bytes) -> Response {
    let length = HeaderValue::from(body.len());
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json")), (header::CONTENT_LENGTH, length)], body)
        .into_response()
}

/// The API's routes, as vatcomply's server matches them.
const API_ROUTES: [&str; 2] = ["/rates", "/currencies"];

/// What vatcomply's server answers before its routes, if anything: a CORS
/// preflight on any path; a route with a trailing slash, redirected (308)
/// to the route; on a route, a plain `OPTIONS` (204, its `Allow`) and any
/// method but `GET` (404, as for an unknown path). None of these takes a
/// token of the rate limit.
fn before_routes(req: &Request) -> Option<Response> {
    if is_preflight(req) {
        return Some(preflight());
    }
    let path = req.uri().path();
    if let Some(route) = path.strip_suffix('/').filter(|p| API_ROUTES.contains(p)) {
        let location = match req.uri().query() {
            Some(q) => format!("{route}?{q}"),
            None => route.to_string(),
        };
        let location = HeaderValue::from_str(&location).unwrap_or_else(|_| HeaderValue::from_static("/"));
        return Some((StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, location)]).into_response());
    }
    if !API_ROUTES.contains(&path) {
        return None;
    }
    match *req.method() {
        Method::GET => None,
        Method::OPTIONS => Some(
            (StatusCode::NO_CONTENT, [(header::ALLOW, "GET, OPTIONS"), (header::CONTENT_TYPE, "application/json")])
                .into_response(),
        ),
        _ => Some(not_found_answer()),
    }
}

/// Whether `req` is a CORS preflight: `OPTIONS` with an `Origin` and the
/// method the real request will use.
fn is_preflight(req: &Request) -> bool {
    req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ORIGIN)
        && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The answer to a preflight, on any path: vatcomply's (django-cors-headers'
/// methods and max age, the headers it allows), any origin.
fn preflight() -> Response {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        (header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, PUT, PATCH, DELETE, OPTIONS"),
        (header::ACCESS_CONTROL_ALLOW_HEADERS, "Content-Type, Authorization"),
        (header::ACCESS_CONTROL_MAX_AGE, "3600"),
        (header::VARY, "Access-Control-Request-Method, Access-Control-Request-Headers"),
        (header::ALLOW, "GET, OPTIONS"),
        (header::CONTENT_TYPE, "application/json"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    (StatusCode::NO_CONTENT, headers).into_response()
}

async fn rates(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let query = req.uri().query().unwrap_or_default();
    if let Some(body) = shared.answers.get(query) {
        return json_body(body);
    }
    let q = query_params(query);
    let param = |name: &str| q.get(name).map(String::as_str);
    match rates_answer(&shared.dataset, param("base"), param("symbols"), param("date")) {
        Ok(body) => {
            let body = Bytes::from(body);
            shared.answers.put(query, body.clone());
            json_body(body)
        }
        Err((status, text)) => detail(status, text),
    }
}

/// A query string's parameters as vatcomply's server reads them: `%XX`
/// decoded (invalid UTF-8 replaced), `+` kept as it is (`USD,+GBP` names
/// `+GBP`), the last of a repeated name standing.
fn query_params(query: &str) -> HashMap<String, String> {
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

/// A `/rates` answer's JSON, or its error status and detail, from the raw
/// parameters, checked in vatcomply's order: the base (one of the supported
/// codes, exactly), each symbol, the date's shape, the date, the data of
/// that day, the base's rate that day. Absent and empty `symbols` and
/// `date` mean all and the latest.
pub(crate) fn rates_answer(
    dataset: &Dataset,
    base: Option<&str>,
    symbols: Option<&str>,
    date: Option<&str>,
) -> Result<Vec<u8>, (StatusCode, String)> {
    let bad = |text: String| (StatusCode::BAD_REQUEST, text);
    let base_raw = base.unwrap_or("EUR");
    let base = supported_code(base_raw).ok_or_else(|| bad(format!("Base currency '{base_raw}' is not supported.")))?;
    let mut wanted = Vec::new();
    // Split as it is, untrimmed: `USD, GBP` names ' GBP', `USD,` names ''.
    for raw in symbols.filter(|s| !s.is_empty()).into_iter().flat_map(|s| s.split(',')) {
        let c = supported_code(raw).ok_or_else(|| bad(format!("Currency '{raw}' is not supported.")))?;
        if !wanted.contains(&c) {
            wanted.push(c);
        }
    }
    let date = match date.filter(|d| !d.is_empty()) {
        None => None,
        Some(d) => Some(api_date(d).map_err(bad)?),
    };
    let (day, listed) = dataset.rates_in_order(base, &wanted, date, is_supported).map_err(|e| match e {
        RatesError::NoData => (StatusCode::NOT_FOUND, e.to_string()),
        e => bad(e.to_string()),
    })?;
    Ok(rates_json(day, base, &listed))
}

/// A `date` as vatcomply reads it: the shape of `^\d{4}-\d{2}-\d{2}$`
/// (Python's `$` also matches before a final newline, which then fails as
/// a date), then a real calendar day (year 1 on, as Python's dates).
fn api_date(d: &str) -> Result<chrono::NaiveDate, String> {
    let shape = d.strip_suffix('\n').unwrap_or(d).as_bytes();
    let shaped = shape.len() == 10
        && shape.iter().enumerate().all(|(i, &b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
    if !shaped {
        return Err(format!("Invalid date format: '{d}'. Expected format: YYYY-MM-DD"));
    }
    rates_core::parse_date(d)
        .ok()
        .filter(|day| chrono::Datelike::year(day) >= 1)
        .ok_or_else(|| format!("Invalid date: '{d}'. Expected a valid date in YYYY-MM-DD format."))
}

/// `{"date":...,"base":...,"rates":{...}}` with the rates in the given
/// order (vatcomply's: EUR, then the ECB's), numbers as serde writes them.
fn rates_json(day: chrono::NaiveDate, base: Currency, rates: &[(Currency, f64)]) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::with_capacity(48 + 20 * rates.len());
    // Writes to a Vec cannot fail; codes are three ASCII letters, no escaping.
    let _ = write!(out, r#"{{"date":"{day}","base":"{base}","rates":{{"#);
    for (i, (code, value)) in rates.iter().enumerate() {
        let _ = write!(out, r#"{}"{code}":"#, if i == 0 { "" } else { "," });
        let _ = serde_json::to_writer(&mut out, value);
    }
    out.extend_from_slice(b"}}");
    out
}

/// The `/currencies` answer: vatcomply's whole table as it is, or, with a
/// non-empty `search`, the entries whose code or name contains it, in any
/// case (`{}` when none does).
async fn currencies(Query(q): Query<HashMap<String, String>>) -> Response {
    match q.get("search").filter(|s| !s.is_empty()) {
        None => json_body(Bytes::from_static(CURRENCIES_JSON.as_bytes())),
        Some(search) => json_body(Bytes::from(currencies_matching(search))),
    }
}

/// One entry of the embedded `/currencies` table: its code, its name in
/// lower case, and its JSON value as written.
struct CurrencyEntry {
    code: String,
    code_lower: String,
    name_lower: String,
    json: Box<serde_json::value::RawValue>,
}

/// The embedded table's entries in its order, read once.
fn currency_entries() -> &'static [CurrencyEntry] {
    static ENTRIES: OnceLock<Vec<CurrencyEntry>> = OnceLock::new();
    ENTRIES.get_or_init(|| {
        // The table is part of the source tree and covered by tests, so a
        // failure here is a build defect, not an input error.
        let Entries(entries) = serde_json::from_str(CURRENCIES_JSON).expect("the embedded /currencies table parses");
        entries
            .into_iter()
            .map(|(code, json)| {
                #[derive(serde::Deserialize)]
                struct Named {
                    name: String,
                }
                let name = serde_json::from_str::<Named>(json.get()).map(|n| n.name).unwrap_or_default();
                CurrencyEntry { code_lower: code.to_lowercase(), code, name_lower: name.to_lowercase(), json }
            })
            .collect()
    })
}

/// A JSON object's entries in the order written (serde_json's own map
/// sorts them), each value as written.
struct Entries(Vec<(String, Box<serde_json::value::RawValue>)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// The entries whose code or name contains `search`, case-insensitively,
/// as a JSON object in the table's order.
fn currencies_matching(search: &str) -> Vec<u8> {
    let term = search.to_lowercase();
    let mut out = b"{".to_vec();
    for e in currency_entries().iter().filter(|e| e.code_lower.contains(&term) || e.name_lower.contains(&term)) {
        if out.len() > 1 {
            out.push(b',');
        }
        // The code is three ASCII letters: no escaping.
        out.extend_from_slice(format!("\"{}\":", e.code).as_bytes());
        out.extend_from_slice(e.json.get().as_bytes());
    }
    out.push(b'}');
    out
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], shared.metrics.render()).into_response()
}

async fn not_found() -> Response {
    not_found_answer()
}

/// vatcomply's answer to a path (or a method) it has no route for.
fn not_found_answer() -> Response {
    detail(StatusCode::NOT_FOUND, "Not Found")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rates_answer` over the embedded data, as (status, JSON).
    fn ask(base: Option<&str>, symbols: Option<&str>, date: Option<&str>) -> (u16, serde_json::Value) {
        match rates_answer(&Dataset::embedded(), base, symbols, date) {
            Ok(body) => (200, serde_json::from_slice(&body).expect("JSON")),
            Err((status, text)) => (status.as_u16(), serde_json::json!({ "detail": text })),
        }
    }

    #[test]
    fn checks_come_in_vatcomplys_order() {
        // A bad base wins over a bad symbol, which wins over a bad date.
        assert_eq!(ask(Some("usd"), Some("XYZ"), Some("abc")).1["detail"], "Base currency 'usd' is not supported.");
        assert_eq!(ask(None, Some("USD,XYZ"), Some("abc")).1["detail"], "Currency 'XYZ' is not supported.");
        assert_eq!(ask(None, None, Some("abc")).1["detail"], "Invalid date format: 'abc'. Expected format: YYYY-MM-DD");
        // A day before the data wins over a base without a rate.
        assert_eq!(ask(Some("RUB"), None, Some("1998-12-31")).0, 404);
        assert_eq!(ask(Some("RUB"), None, Some("2024-01-02")).0, 400);
    }

    #[test]
    fn dates_are_read_as_vatcomply_reads_them() {
        assert_eq!(api_date("2018-10-12").map(|d| d.to_string()).as_deref(), Ok("2018-10-12"));
        for bad in ["2024-1-01", "2024/01/01", " 2024-01-01", "2024-01-01 ", "２０２４-01-01"] {
            assert!(api_date(bad).is_err_and(|e| e.starts_with("Invalid date format")), "{bad:?}");
        }
        // Python's `$` matches before a final newline; the date then fails.
        for bad in ["2024-02-30", "0000-01-01", "2024-01-01\n"] {
            assert!(api_date(bad).is_err_and(|e| e.starts_with("Invalid date: ")), "{bad:?}");
        }
    }

    #[test]
    fn the_answer_keeps_vatcomplys_order() {
        let body = rates_answer(&Dataset::embedded(), Some("USD"), Some("PLN,EUR,USD,PLN"), Some("2018-10-12"))
            .expect("answer");
        assert_eq!(
            String::from_utf8_lossy(&body),
            r#"{"date":"2018-10-12","base":"USD","rates":{"EUR":0.864006,"USD":1.0,"PLN":3.709694}}"#
        );
    }

    #[test]
    fn currencies_are_searched_by_code_or_name_in_any_case() {
        let codes = |search: &str| -> Vec<String> {
            let v: serde_json::Value = serde_json::from_slice(&currencies_matching(search)).expect("JSON");
            let mut codes: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
            codes.sort();
            codes
        };
        assert_eq!(codes("zar"), ["ZAR"]);
        assert_eq!(codes("POUND"), ["GBP"]);
        assert!(codes("dollar").len() > 5 && codes("dollar").contains(&"USD".to_string()));
        assert!(codes("no such money").is_empty());
        // Every entry as the embedded table writes it.
        let all = currencies_matching("");
        let parsed: serde_json::Value = serde_json::from_slice(&all).expect("JSON");
        let embedded: serde_json::Value = serde_json::from_str(CURRENCIES_JSON).expect("JSON");
        assert_eq!(parsed, embedded);
        assert_eq!(all, CURRENCIES_JSON.as_bytes(), "in the same order, byte for byte");
    }

    #[test]
    fn answers_are_kept_by_query_string() {
        let answers = Answers::default();
        assert_eq!(answers.get("base=USD"), None);
        answers.put("base=USD", Bytes::from_static(b"usd"));
        answers.put("base=GBP", Bytes::from_static(b"gbp"));
        assert_eq!(answers.get("base=USD").as_deref(), Some(&b"usd"[..]));
        assert_eq!(answers.get("base=GBP").as_deref(), Some(&b"gbp"[..]));
        assert_eq!(answers.get("base=usd"), None, "the key is the exact query string");
    }

    #[test]
    fn answers_stay_bounded() {
        let answers = Answers::default();
        let long = format!("base=USD&x={}", "y".repeat(MAX_ANSWER_KEY));
        answers.put(&long, Bytes::from_static(b"long"));
        assert_eq!(answers.get(&long), None, "a long query string is not kept");
        for i in 0..MAX_ANSWERS {
            answers.put(&format!("date={i}"), Bytes::from_static(b"x"));
        }
        assert!(answers.get("date=0").is_some());
        // One more than fits: the cache starts again with just it.
        answers.put("base=USD", Bytes::from_static(b"usd"));
        assert_eq!(answers.get("date=0"), None);
        assert!(answers.get("base=USD").is_some());
        assert_eq!(answers.0.read().map(|m| m.len()).unwrap_or_default(), 1);
    }
}
