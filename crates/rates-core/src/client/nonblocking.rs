//! [`AsyncClient`]: the rates API over reqwest, the chapter's `aiohttp`
//! session — one client, one connection pool, shared by every task.

use super::{
    BadUrl, ClientConfig, FetchError, MAX_BODY, RateLimitInfo, Reply, check_answer, decode_rates, parse_api_url,
};
use crate::{RateRequest, Rates};

/// An async client of the rates API; clone it freely (clones share the pool).
#[derive(Debug, Clone)]
pub struct AsyncClient {
    http: reqwest::Client,
    api: String,
    /// `{api}/rates`, parsed once: parsing it for every request (its host
    /// through IDNA) cost more than any other step of building one.
    rates_url: reqwest::Url,
    config: ClientConfig,
}

impl AsyncClient {
    /// A client of the API at `api` that keeps up to 1,024 connections
    /// open between requests. Fails on a bad URL, or if the TLS backend
    /// cannot start (reported as a transport error).
    pub fn new(api: &str, config: ClientConfig) -> Result<Self, AsyncClientError> {
        Self::with_idle_connections(api, config, 1024)
    }

    /// [`new`](Self::new), keeping at most `idle` connections open between
    /// requests. With none, each connection is closed as soon as its answer
    /// is read: right for a storm of requests that each open one, which
    /// would otherwise all be closed at once when the client is dropped.
    pub fn with_idle_connections(api: &str, config: ClientConfig, idle: usize) -> Result<Self, AsyncClientError> {
        let api = parse_api_url(api)?;
        let rates_url = reqwest::Url::parse(&format!("{api}/rates")).map_err(|_| BadUrl(api.clone()))?;
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .pool_max_idle_per_host(idle)
            .tcp_nodelay(true)
            .user_agent(concat!("rates/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AsyncClientError::Init(e.to_string()))?;
        Ok(AsyncClient { http, api, rates_url, config })
    }

    /// The API's base URL.
    pub fn api(&self) -> &str {
        &self.api
    }

    /// One attempt at `GET /rates` for `req`.
    pub async fn fetch(&self, req: &RateRequest) -> Result<Rates, FetchError> {
        self.fetch_reply(req).await.map(|r| r.rates)
    }

    /// [`fetch`](Self::fetch), with what the answer's headers said about the
    /// server's rate limit.
    pub async fn fetch_reply(&self, req: &RateRequest) -> Result<Reply, FetchError> {
        let resp = self.http.get(self.url_of(req)).send().await.map_err(|e| self.map_error(e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers();
        let retry_after = headers.get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        // Every answer may state the limit: vatcomply does only on its 429s.
        let limit = RateLimitInfo::from_headers(|name| headers.get(name).and_then(|v| v.to_str().ok()));
        let body = self.read_body(resp).await?;
        let bytes = body.len() as u64;
        let rates = check_answer(req, decode_rates(status, retry_after.as_deref(), limit, &body)?)?;
        Ok(Reply { rates, limit, bytes })
    }

    /// An answer's body, at most [`MAX_BODY`] bytes: a larger or endless
    /// one is an error as soon as it passes the cap, not memory.
    async fn read_body(&self, mut resp: reqwest::Response) -> Result<Vec<u8>, FetchError> {
        let too_big = || FetchError::Malformed(format!("answer larger than {} MiB", MAX_BODY >> 20));
        if let Some(n) = resp.content_length().filter(|&n| n > MAX_BODY as u64) {
            return Err(FetchError::Malformed(format!(
                "answer of {n} bytes announced, more than {} MiB",
                MAX_BODY >> 20
            )));
        }
        let mut body = Vec::with_capacity(resp.content_length().map_or(0, |n| n as usize));
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.map_error(e))? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// The URL that asks for `req`.
    fn url_of(&self, req: &RateRequest) -> reqwest::Url {
        let mut url = self.rates_url.clone();
        url.set_query(Some(&req.query()));
        url
    }

    fn map_error(&self, e: reqwest::Error) -> FetchError {
        if e.is_timeout() {
            FetchError::Timeout(format!("request after {:?}", self.config.timeout))
        } else if e.is_connect() {
            FetchError::Connect(format!("{}: {}", self.api, root_cause(&e)))
        } else {
            FetchError::Transport(root_cause(&e))
        }
    }
}

/// The innermost cause of an error: reqwest's own message is generic
/// ("error sending request"), the cause says what happened.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Why an [`AsyncClient`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AsyncClientError {
    /// The URL is not an API URL.
    #[error(transparent)]
    BadUrl(#[from] BadUrl),
    /// The HTTP stack could not start.
    #[error("cannot start the HTTP client: {0}")]
    Init(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that answers one request with `head` and then `chunk`
    /// again and again until the client goes away; gives its URL and a
    /// receiver of the bytes of body it wrote.
    fn endless(head: &'static str) -> (String, std::sync::mpsc::Receiver<usize>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let Ok((mut stream, _)) = listener.accept() else { return };
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ = stream.write_all(head.as_bytes());
            let chunk = vec![b' '; 64 * 1024];
            let mut written = 0;
            // Bounded: four times the cap is proof enough of "endless".
            while written < 4 * MAX_BODY && stream.write_all(&chunk).is_ok() {
                written += chunk.len();
            }
            let _ = tx.send(written);
        });
        (url, rx)
    }

    /// What the client makes of the `endless` answer with `head`, and the
    /// receiver of the bytes of body the server wrote.
    async fn fetched(head: &'static str) -> (Result<Reply, FetchError>, std::sync::mpsc::Receiver<usize>) {
        let (url, written) = endless(head);
        let client = AsyncClient::new(&url, ClientConfig::default()).expect("client");
        let req = RateRequest { base: "USD".parse().expect("code"), symbols: vec![], date: None };
        (client.fetch_reply(&req).await, written)
    }

    #[tokio::test]
    async fn an_endless_answer_is_cut_at_the_cap() {
        let (got, written) = fetched("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n").await;
        assert!(matches!(&got, Err(FetchError::Malformed(m)) if m == "answer larger than 16 MiB"), "{got:?}");
        let written = tokio::task::spawn_blocking(move || written.recv_timeout(std::time::Duration::from_secs(30)))
            .await
            .expect("the wait")
            .expect("the server stopped");
        assert!(written < 4 * MAX_BODY, "the client stopped reading at the cap: {written} bytes sent");
    }

    #[tokio::test]
    async fn an_answer_announced_too_large_is_refused_unread() {
        let (got, _) = fetched("HTTP/1.1 200 OK\r\ncontent-length: 1073741824\r\n\r\n").await;
        // Refused on its announced length, before a byte of it is read.
        assert!(matches!(&got, Err(FetchError::Malformed(m)) if m.contains("1073741824 bytes announced")), "{got:?}");
    }

    #[test]
    fn the_url_of_a_request_keeps_the_apis_path_and_the_query_as_written() {
        let client = AsyncClient::new("http://127.0.0.1:1/api/", ClientConfig::default()).expect("client");
        let req = RateRequest {
            base: "USD".parse().expect("code"),
            symbols: vec!["EUR".parse().expect("code"), "GBP".parse().expect("code")],
            date: chrono::NaiveDate::from_ymd_opt(2019, 3, 4),
        };
        assert_eq!(
            client.url_of(&req).as_str(),
            "http://127.0.0.1:1/api/rates?base=USD&symbols=EUR,GBP&date=2019-03-04"
        );
    }

    #[test]
    fn a_bad_api_is_refused() {
        for bad in ["ftp://x", "http://", "http://h:99999", "http://h/a?b"] {
            assert!(
                matches!(AsyncClient::new(bad, ClientConfig::default()), Err(AsyncClientError::BadUrl(_))),
                "{bad}"
            );
        }
    }
}
