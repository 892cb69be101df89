//! Helpers shared by the server's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use rates_server::{RunningServer, ServerOptions, spawn};

/// A server over the embedded dataset with `options`.
pub fn server(options: ServerOptions) -> RunningServer {
    spawn(rates_core::Dataset::embedded(), options).expect("server starts")
}

/// A plain HTTP agent that treats error statuses as answers.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// `GET path` → (status, Retry-After header, body as JSON or text).
pub fn get(agent: &ureq::Agent, server: &RunningServer, path: &str) -> (u16, Option<String>, String) {
    let mut r = agent.get(format!("{}{path}", server.url())).call().expect("request completes");
    let status = r.status().as_u16();
    let retry = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    (status, retry, r.body_mut().read_to_string().expect("body"))
}

/// `GET path` → (status, JSON body).
pub fn get_json(agent: &ureq::Agent, server: &RunningServer, path: &str) -> (u16, serde_json::Value) {
    let (status, _, body) = get(agent, server, path);
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}")))
}
