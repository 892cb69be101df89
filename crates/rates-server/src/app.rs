//! The routes of the API (`API.md`): `/rates`, `/currencies`, `/metrics`, and
//! a JSON 404 for everything else. Fault injection wraps every route but
//! `/metrics`, which stays exact and quick for whoever is watching. Every
//! error answer carries the API's JSON `{"detail": ...}` body, axum's own
//! (a 405 for a wrong method, a rejected extractor) included. Every request,
//! `/metrics` included, is timed into the metrics by code and route and
//! logged as one access line (`tracing`, target `rates_server::access`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rates::{Currency, RatesError, parse_date};

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
    let answer =
        if route == Route::Metrics { inner(req).await } else { faults::inject(shared, peer, req, inner).await };
    let answer = json_errors(answer).await;
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
        self.0.read().unwrap_or_else(|p| p.into_inner()).get(query).cloned()
    }

    fn put(&self, query: &str, body: Bytes) {
        if query.len() > MAX_ANSWER_KEY {
            return;
        }
        let mut answers = self.0.write().unwrap_or_else(|p| p.into_inner());
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

/// A JSON answer from its bytes, with the headers `Json` gives.
fn json_body(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

async fn rates(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let query = req.uri().query().unwrap_or_default();
    if let Some(body) = shared.answers.get(query) {
        return json_body(body);
    }
    let Ok(Query(q)) = Query::<HashMap<String, String>>::try_from_uri(req.uri()) else {
        return detail(StatusCode::BAD_REQUEST, "Invalid query string.");
    };
    let bad = |e: RatesError| detail(StatusCode::BAD_REQUEST, e.to_string());

    let base_raw = q.get("base").map_or("EUR", |s| s.as_str());
    let Ok(base) = base_raw.parse::<Currency>() else {
        return bad(RatesError::UnknownBase(base_raw.to_string()));
    };
    let mut symbols = Vec::new();
    if let Some(list) = q.get("symbols").filter(|s| !s.is_empty()) {
        for raw in list.split(',') {
            match raw.trim().parse::<Currency>() {
                Ok(c) if !symbols.contains(&c) => symbols.push(c),
                Ok(_) => {}
                Err(_) => return bad(RatesError::UnknownSymbol(raw.to_string())),
            }
        }
    }
    let date = match q.get("date").map(|d| parse_date(d)).transpose() {
        Ok(d) => d,
        Err(e) => return detail(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match shared.dataset.rates(base, &symbols, date) {
        Ok(r) => match serde_json::to_vec(&r) {
            Ok(body) => {
                let body = Bytes::from(body);
                shared.answers.put(query, body.clone());
                json_body(body)
            }
            Err(e) => detail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        Err(e @ RatesError::NoData) => detail(StatusCode::NOT_FOUND, e.to_string()),
        Err(e) => bad(e),
    }
}

async fn currencies(State(shared): State<Arc<Shared>>) -> Response {
    let table: serde_json::Map<String, serde_json::Value> = shared
        .dataset
        .currency_names()
        .into_iter()
        .map(|(code, name)| (code.to_string(), serde_json::json!({ "name": name, "symbol": code })))
        .collect();
    Json(table).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], shared.metrics.render()).into_response()
}

async fn not_found() -> Response {
    detail(StatusCode::NOT_FOUND, "Not found.")
}

#[cfg(test)]
mod tests {
    use super::*;

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
