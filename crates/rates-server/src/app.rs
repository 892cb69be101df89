//! The routes of the API (`API.md`): `/rates`, `/currencies`, `/metrics`, and
//! a JSON 404 for everything else. Fault injection wraps every route but
//! `/metrics`, which stays exact and quick for whoever is watching.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State, rejection::QueryRejection};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rates::{Currency, RatesError, parse_date};

use crate::{Shared, faults};

/// The API's router over `shared` state.
pub fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/rates", get(rates))
        .route("/currencies", get(currencies))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), faults::inject));
    Router::new().route("/metrics", get(metrics)).merge(api).with_state(shared)
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
