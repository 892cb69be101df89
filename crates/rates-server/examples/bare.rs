//! The yardstick for the server's own cost: a bare axum server that answers
//! `GET /rates` with the bytes `rates serve` gives for the same query, made
//! once at start, on the same runtime `rates serve` uses (tokio's default
//! multi-thread runtime). No middleware, no metrics, no connection limits.
//!
//! ```text
//! cargo run --release -p rates-server --example bare -- 127.0.0.1:8081 'base=USD'
//! wrk -t2 -c64 -d10s 'http://127.0.0.1:8081/rates?base=USD'
//! ```
//!
//! The query string given decides the body; the one requested is ignored.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::routing::get;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8081".into());
    let query = args.next().unwrap_or_else(|| "base=USD".into());
    let body = answer(&query)?;
    eprintln!("bare axum on http://{addr}/rates: {} bytes", body.len());
    let app = Router::new().route(
        "/rates",
        get(move || {
            let body = body.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], body) }
        }),
    );
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        axum::serve(listener, app).await
    })?;
    Ok(())
}

/// The JSON body `rates serve` answers `query` with.
fn answer(query: &str) -> Result<Bytes, Box<dyn std::error::Error>> {
    let q: HashMap<&str, &str> = query.split('&').filter_map(|kv| kv.split_once('=')).collect();
    let base = q.get("base").copied().unwrap_or("EUR").parse()?;
    let symbols = match q.get("symbols") {
        Some(list) => list.split(',').map(str::parse).collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let date = q.get("date").map(|d| rates_core::parse_date(d)).transpose()?;
    let rates = rates_core::Dataset::embedded().rates(base, &symbols, date)?;
    Ok(Bytes::from(serde_json::to_vec(&rates)?))
}
