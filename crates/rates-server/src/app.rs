//! The routes of the API (`API.md`): `/rates`, `/currencies`, `/metrics`, and
//! a JSON 404 for everything else. Fault injection wraps every route but
//! `/metrics`, which stays exact and quick for whoever is watching. Every
//! error answer carries the API's JSON `{"detail": ...}` body, axum's own
//! (a 405 for a wrong method, a rejected extractor) included. Every request,
//! `/metrics` included, is timed into the metrics by code and route and
//! logged as one access line (`tracing`, target `rates_server::access`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Query, Request, State, rejection::QueryRejection};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rates::{Currency, RatesError, parse_date};

use crate::metrics::Route;
use crate::{Shared, faults};

/// The API's router over `shared` state.
pub fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/rates", get(rates))
        .route("/currencies", get(currencies))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), faults::inject));
    Router::new()
        .route("/metrics", get(metrics))
        .merge(api)
        .layer(middleware::map_response(json_errors))
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), observe))
        .with_state(shared)
}

/// The target of the access lines, so they can be filtered on their own
/// (`RUST_LOG=rates_server::access=off`).
pub const ACCESS_LOG: &str = "rates_server::access";

/// Times a request into the metrics and logs it: the outermost layer, so
/// the status is the one the client gets and the time includes the faults.
async fn observe(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let started = tokio::time::Instant::now();
    let method = req.method().clone();
    let route = Route::of(req.uri().path());
    let target = req.uri().path_and_query().map_or_else(|| req.uri().path().to_string(), |p| p.to_string());
    let answer = next.run(req).await;
    let elapsed = started.elapsed();
    let status = answer.status().as_u16();
    shared.metrics.observe(route, status, elapsed.as_secs_f64());
    tracing::info!(
        target: ACCESS_LOG,
        method = %method,
        path = %target,
        status,
        duration_ms = format_args!("{:.3}", elapsed.as_secs_f64() * 1e3),
    );
    answer
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

async fn rates(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
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
        Ok(r) => Json(r).into_response(),
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
