//! [`BlockingClient`]: the rates API over HTTP/1.1, one connection pool
//! shared by every thread that fetches. An API at an IP address over
//! `http://` is spoken to by [`plain`], lean enough for a thread per item;
//! any other (https, a host name, a proxy, a redirect) through ureq.

mod plain;

use std::sync::Arc;

use std::time::Duration;

use ureq::Agent;
use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use super::{
    BadUrl, ClientConfig, FetchError, MAX_BODY, RateLimitInfo, Reply, check_answer, decode_rates, parse_api_url,
};
use crate::{RateRequest, Rates};

/// An answer as `BlockingClient::get` reads it.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    limit: Option<RateLimitInfo>,
    body: Vec<u8>,
}

/// A connection's input buffer: an answer's whole head (status line and
/// headers) must fit in it, and a body is read through it in pieces. A
/// larger head fails the request (ureq says the peer disconnected). 8 KiB
/// is what proxies such as nginx pass by default, and it is zero-filled
/// per connection, so with a thread per item it is paid per thread.
const INPUT_BUFFER: usize = 8 * 1024;

/// A connection's output buffer: it holds a request's head, a line and a
/// few headers.
const OUTPUT_BUFFER: usize = 4 * 1024;

/// The `User-Agent` of every request.
const USER_AGENT: &str = concat!("rates/", env!("CARGO_PKG_VERSION"));

/// A blocking client of the rates API, cheap to share between threads
/// (`&BlockingClient` or `Arc<BlockingClient>`).
#[derive(Debug, Clone)]
pub struct BlockingClient {
    agent: Agent,
    /// The API's own path for a plain-http API at an IP address, unless
    /// a proxy is to be asked.
    plain: Option<Arc<plain::Plain>>,
    api: String,
    config: ClientConfig,
}

impl BlockingClient {
    /// A client of the API at `api` (e.g. `https://api.vatcomply.com`).
    pub fn new(api: &str, config: ClientConfig) -> Result<Self, BadUrl> {
        let api = parse_api_url(api)?;
        let agent = Agent::config_builder()
            // Error statuses carry a `detail` we want to read, so they are
            // answers, not transport errors.
            .http_status_as_error(false)
            .timeout_connect(Some(config.connect_timeout))
            .timeout_global(Some(config.timeout))
            .max_idle_connections_per_host(64)
            // ureq's default buffers are 128 KiB each way per connection,
            // zero-filled when first used: 256 KiB resident for every
            // connection, most of thread-per-item's memory. An answer's
            // head and a request's are a few hundred bytes.
            .input_buffer_size(INPUT_BUFFER)
            .output_buffer_size(OUTPUT_BUFFER)
            .user_agent(USER_AGENT)
            .build();
        let proxied = match (agent.proxy(), api.parse::<Uri>()) {
            (Some(proxy), Ok(uri)) => !proxy.is_no_proxy(&uri),
            (Some(_), Err(_)) => true,
            (None, _) => false,
        };
        let plain = if proxied { None } else { plain::Plain::for_api(&api, USER_AGENT).map(Arc::new) };
        let agent = Agent::with_parts(agent, DefaultConnector::new(), LiteralFirst(DefaultResolver::default()));
        Ok(BlockingClient { agent, plain, api, config })
    }

    /// The API's base URL.
    pub fn api(&self) -> &str {
        &self.api
    }

    /// One attempt at `GET /rates` for `req`.
    pub fn fetch(&self, req: &RateRequest) -> Result<Rates, FetchError> {
        self.fetch_reply(req).map(|r| r.rates)
    }

    /// [`fetch`](Self::fetch), with what the answer's headers said about the
    /// server's rate limit.
    pub fn fetch_reply(&self, req: &RateRequest) -> Result<Reply, FetchError> {
        let url = format!("{}/rates?{}", self.api, req.query());
        let a = self.get(&url)?;
        let rates = check_answer(req, decode_rates(a.status, a.retry_after.as_deref(), a.limit, &a.body)?)?;
        Ok(Reply { rates, limit: a.limit, bytes: a.body.len() as u64 })
    }

    /// `GET /currencies`: code → name.
    pub fn currencies(&self) -> Result<std::collections::BTreeMap<String, String>, FetchError> {
        let Answer { status, retry_after, limit, body } = self.get(&format!("{}/currencies", self.api))?;
        if status != 200 {
            return Err(decode_rates(status, retry_after.as_deref(), limit, &body)
                .err()
                .unwrap_or(FetchError::Malformed(format!("status {status}"))));
        }
        #[derive(serde::Deserialize)]
        struct Entry {
            name: String,
        }
        let map: std::collections::BTreeMap<String, Entry> =
            serde_json::from_slice(&body).map_err(|e| FetchError::Malformed(e.to_string()))?;
        Ok(map.into_iter().map(|(k, v)| (k, v.name)).collect())
    }

    fn get(&self, url: &str) -> Result<Answer, FetchError> {
        if let Some(plain) = &self.plain {
            let path = url.strip_prefix(self.api.as_str()).unwrap_or(url);
            let answer = plain.get(path, &self.api, &self.config)?;
            // ureq knows how to follow a redirect, and where it may lead.
            if !matches!(answer.status, 301 | 302 | 303 | 307 | 308) {
                return Ok(answer);
            }
        }
        let mut resp = self.agent.get(url).call().map_err(|e| self.map_error(e))?;
        let status = resp.status().as_u16();
        let headers = resp.headers();
        let retry_after = headers.get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
        // Every answer may state the limit: vatcomply does only on its 429s.
        let limit = RateLimitInfo::from_headers(|name| headers.get(name).and_then(|v| v.to_str().ok()));
        let body = resp.body_mut().with_config().limit(MAX_BODY as u64).read_to_vec().map_err(|e| self.map_error(e))?;
        Ok(Answer { status, retry_after, limit, body })
    }

    fn map_error(&self, e: ureq::Error) -> FetchError {
        use std::io::ErrorKind;
        let timeout = |what: &str, limit: Duration| FetchError::Timeout(format!("{what} after {limit:?}"));
        match e {
            ureq::Error::Timeout(ureq::Timeout::Connect) => timeout("connect", self.config.connect_timeout),
            ureq::Error::Timeout(_) => timeout("request", self.config.timeout),
            ureq::Error::Io(io) if io.kind() == ErrorKind::TimedOut => timeout("request", self.config.timeout),
            ureq::Error::Io(io)
                if matches!(
                    io.kind(),
                    ErrorKind::ConnectionRefused | ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable
                ) =>
            {
                FetchError::Connect(format!("{}: {io}", self.api))
            }
            ureq::Error::HostNotFound => FetchError::Connect(format!("{}: host not found", self.api)),
            ureq::Error::ConnectionFailed => FetchError::Connect(format!("{}: connection failed", self.api)),
            other => FetchError::Transport(other.to_string()),
        }
    }
}

/// Resolves an IP address in the URL as itself, and anything else as ureq
/// does. ureq's resolver, with a time limit set, looks every name up on a
/// new thread, even `127.0.0.1`, and before it looks in its connection
/// pool: a thread started and joined for every request.
#[derive(Debug)]
struct LiteralFirst(DefaultResolver);

impl Resolver for LiteralFirst {
    fn resolve(&self, uri: &Uri, config: &Config, timeout: NextTimeout) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let literal = uri.authority().and_then(|a| {
            let host = a.host().trim_start_matches('[').trim_end_matches(']');
            let port = a.port_u16().or_else(|| match uri.scheme_str() {
                Some("https") => Some(443),
                Some("http") => Some(80),
                _ => None,
            })?;
            Some(std::net::SocketAddr::new(host.parse().ok()?, port))
        });
        match literal {
            Some(addr) => {
                let mut addrs = self.empty();
                addrs.push(addr);
                Ok(addrs)
            }
            None => self.0.resolve(uri, config, timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_server::{one_connection, usd, usd_answer};

    fn resolve(url: &str) -> Result<Vec<std::net::SocketAddr>, ureq::Error> {
        let uri: Uri = url.parse().expect("a URI");
        let config = Config::default();
        let resolved = LiteralFirst(DefaultResolver::default()).resolve(&uri, &config, NextTimeout::default())?;
        Ok(resolved.iter().copied().collect())
    }

    #[test]
    fn ip_literals_resolve_to_themselves() {
        let addr = |s: &str| s.parse::<std::net::SocketAddr>().expect("an address");
        assert_eq!(resolve("http://127.0.0.1:8080/rates").ok(), Some(vec![addr("127.0.0.1:8080")]));
        assert_eq!(resolve("http://[::1]:9/x").ok(), Some(vec![addr("[::1]:9")]));
        assert_eq!(resolve("https://10.0.0.1/").ok(), Some(vec![addr("10.0.0.1:443")]));
        // A name goes to ureq's resolver.
        assert!(resolve("http://localhost:8080/").is_ok_and(|a| !a.is_empty()));
    }

    #[test]
    fn connections_get_small_buffers() {
        // ureq's defaults, 128 KiB each way, are zero-filled per connection:
        // with a thread per item they were most of the memory.
        let client = BlockingClient::new("http://127.0.0.1:1", ClientConfig::default()).expect("a valid URL");
        let config = client.agent.config();
        assert_eq!((config.input_buffer_size(), config.output_buffer_size()), (8 * 1024, 4 * 1024));
    }

    #[test]
    fn a_head_filling_most_of_the_input_buffer_is_read() {
        let (url, _) = one_connection(usd_answer(INPUT_BUFFER - 1024));
        let client = BlockingClient::new(&url, ClientConfig::default()).expect("a valid URL");
        let rates = client.fetch(&usd()).expect("an answer with a 7 KiB head");
        assert_eq!(rates.rates.len(), 1);
    }

    #[test]
    fn a_head_past_the_input_buffer_is_a_transport_error_not_a_panic() {
        let (url, _) = one_connection(usd_answer(2 * INPUT_BUFFER));
        let client = BlockingClient::new(&url, ClientConfig::default()).expect("a valid URL");
        let answer = client.fetch(&usd());
        assert!(matches!(answer, Err(FetchError::Transport(_))), "{answer:?}");
    }

    #[test]
    fn an_api_at_an_ip_address_takes_the_plain_path_and_a_name_does_not() {
        let plain = |url: &str| BlockingClient::new(url, ClientConfig::default()).map(|c| c.plain.is_some());
        assert_eq!(plain("http://127.0.0.1:8080"), Ok(true));
        assert_eq!(plain("http://[::1]:8080/v1"), Ok(true));
        assert_eq!(plain("http://localhost:8080"), Ok(false));
        assert_eq!(plain("https://127.0.0.1:8443"), Ok(false));
    }

    #[test]
    fn a_redirect_on_the_plain_path_is_followed_through_ureq() {
        use std::io::{BufRead, BufReader, Write};
        // Every connection: the first request it reads is redirected, the
        // next answered; the plain path and ureq each open their own.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        let to = format!("{url}/rates?base=USD");
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = std::sync::Arc::clone(&answered);
        std::thread::spawn(move || {
            for stream in listener.incoming().take(3) {
                let Ok(stream) = stream else { return };
                let (to, count) = (to.clone(), std::sync::Arc::clone(&count));
                // A thread a connection: the plain path keeps its own open.
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream);
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                        if line == "\r\n" {
                            let answer = if count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                                format!(
                                    "HTTP/1.1 308 Permanent Redirect\r\nlocation: {to}\r\ncontent-length: 0\r\n\r\n"
                                )
                            } else {
                                String::from_utf8(usd_answer(0)).expect("text")
                            };
                            if reader.get_mut().write_all(answer.as_bytes()).is_err() {
                                break;
                            }
                        }
                        line.clear();
                    }
                });
            }
        });
        let client = BlockingClient::new(&url, ClientConfig::default()).expect("a valid URL");
        let rates = client.fetch(&usd()).expect("the redirect followed");
        assert_eq!(rates.base, usd().base);
        assert_eq!(answered.load(std::sync::atomic::Ordering::SeqCst), 2, "one redirect, one answer");
    }
}
