//! The clients' error mapping against real answers: every failure comes
//! back as its typed `FetchError`, never a panic, and the blocking (ureq) and
//! async (reqwest) clients agree on every case.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use rates_core::{AsyncClient, BlockingClient, ClientConfig, FetchError, RateRequest, Rates};
use rates_server::{Quota, ServerOptions};
use support::server;

fn usd() -> RateRequest {
    RateRequest { base: "USD".parse().unwrap(), symbols: vec![], date: None }
}

fn client(url: &str) -> BlockingClient {
    BlockingClient::new(url, ClientConfig::default()).unwrap()
}

/// One fetch with each client, the blocking one first.
fn both(url: &str, config: ClientConfig, req: &RateRequest) -> [Result<Rates, FetchError>; 2] {
    let blocking = BlockingClient::new(url, config).unwrap().fetch(req);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let nonblocking = rt.block_on(async { AsyncClient::new(url, config).unwrap().fetch(req).await });
    [blocking, nonblocking]
}

/// Both clients' error for `req`, checked to be the same.
fn same_error(url: &str, config: ClientConfig, req: &RateRequest) -> FetchError {
    let [a, b] = both(url, config, req);
    let (a, b) = (a.unwrap_err(), b.unwrap_err());
    assert_eq!(std::mem::discriminant(&a), std::mem::discriminant(&b), "blocking {a:?} vs async {b:?}");
    if matches!(a, FetchError::Status { .. } | FetchError::MissingField(_)) {
        assert_eq!(a, b);
    }
    a
}

/// A one-shot HTTP server on loopback that answers `response` verbatim.
fn raw_server(response: &'static str) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    // Two connections: one for each client.
    let t = std::thread::spawn(move || {
        for _ in 0..2 {
            if let Ok((mut conn, _)) = listener.accept() {
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(response.as_bytes());
            }
        }
    });
    (url, t)
}

#[test]
fn success() {
    let s = server(ServerOptions::default());
    let [a, b] = both(s.url(), ClientConfig::default(), &usd());
    let r = a.unwrap();
    assert_eq!(r.base.as_str(), "USD");
    assert_eq!(r.date.to_string(), "2026-10-30");
    assert_eq!(b.unwrap(), r);
}

#[test]
fn status_500_carries_the_detail() {
    let s = server(ServerOptions { fail_rate: 1.0, ..Default::default() });
    let e = same_error(s.url(), ClientConfig::default(), &usd());
    assert_eq!(
        e,
        FetchError::Status { status: 500, detail: "Injected failure.".into(), retry_after: None, limit: None }
    );
    assert!(e.is_retryable());
}

#[test]
fn status_404_is_final() {
    let s = server(ServerOptions::default());
    let req = RateRequest { date: rates_core::parse_date("1998-01-01").ok(), ..usd() };
    let e = same_error(s.url(), ClientConfig::default(), &req);
    assert_eq!(
        e,
        FetchError::Status {
            status: 404,
            detail: "No rate data available for the specified date.".into(),
            retry_after: None,
            limit: None,
        }
    );
    assert!(!e.is_retryable());
}

#[test]
fn status_429_carries_retry_after() {
    let s = server(ServerOptions { rate_limit: Some(Quota::new(0.01, 1).unwrap()), ..Default::default() });
    assert!(client(s.url()).fetch(&usd()).is_ok());
    // The bucket is empty now: both clients are refused.
    let e = same_error(s.url(), ClientConfig::default(), &usd());
    let FetchError::Status { status: 429, retry_after: Some(after), .. } = e else { panic!("{e:?}") };
    assert!(after >= Duration::from_secs(1));
}

#[test]
fn malformed_json() {
    let (url, t) = raw_server(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9\r\nconnection: close\r\n\r\n{\"date\": ",
    );
    let e = same_error(&url, ClientConfig::default(), &usd());
    assert!(matches!(e, FetchError::Malformed(_)), "{e:?}");
    t.join().unwrap();
}

#[test]
fn missing_field() {
    let body = r#"{"date": "2020-01-02", "base": "USD"}"#;
    let resp = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
    let (url, t) = raw_server(Box::leak(resp.into_boxed_str()));
    assert_eq!(same_error(&url, ClientConfig::default(), &usd()), FetchError::MissingField("rates".into()));
    t.join().unwrap();
}

#[test]
fn connection_refused() {
    let url = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    }; // the listener is closed here: nothing listens on the port
    let e = same_error(&url, ClientConfig::default(), &usd());
    assert!(matches!(e, FetchError::Connect(_)), "{e:?}");
    assert!(e.is_retryable());
}

#[test]
fn timeout_when_the_server_is_slower_than_the_client() {
    let s = server(ServerOptions { latency: Duration::from_secs(3), ..Default::default() });
    let c =
        BlockingClient::new(s.url(), ClientConfig { timeout: Duration::from_millis(200), ..ClientConfig::default() })
            .unwrap();
    let e = c.fetch(&usd()).unwrap_err();
    assert!(matches!(e, FetchError::Timeout(_)), "{e:?}");
}

#[test]
fn currencies_endpoint() {
    let s = server(ServerOptions::default());
    let table = client(s.url()).currencies().unwrap();
    assert_eq!(table.get("USD").map(String::as_str), Some("US Dollar"));
}

/// One `fetch_reply` with each client, the blocking one first.
fn both_replies(url: &str) -> [Result<rates_core::Reply, FetchError>; 2] {
    let blocking = client(url).fetch_reply(&usd());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let nonblocking =
        rt.block_on(async { AsyncClient::new(url, ClientConfig::default()).unwrap().fetch_reply(&usd()).await });
    [blocking, nonblocking]
}

#[test]
fn replies_carry_the_advertised_rate_limit() {
    // 0.01/s: no token comes back during the test, so the numbers are exact.
    let limit = Some(Quota::new(0.01, 3).unwrap());
    let s = server(ServerOptions { rate_limit: limit, rate_limit_headers: true, ..Default::default() });
    let [a, b] = both_replies(s.url());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.rates.base.as_str(), "USD");
    // 3 per 300 s: the whole burst, refilled within the window; the next
    // request is allowed in 100 s.
    let info = |remaining| rates_core::RateLimitInfo {
        limit: 3,
        window: Duration::from_secs(300),
        remaining: Some(remaining),
        reset: Some(Duration::from_secs(100)),
        burst: None,
    };
    assert_eq!((a.limit, b.limit), (Some(info(2)), Some(info(1))));
    // By default (as vatcomply), or with no rate limit: nothing to read.
    let quiet = server(ServerOptions { rate_limit: limit, ..Default::default() });
    let plain = server(ServerOptions::default());
    for s in [&quiet, &plain] {
        let [a, b] = both_replies(s.url());
        assert_eq!((a.unwrap().limit, b.unwrap().limit), (None, None));
    }
}
