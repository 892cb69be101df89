//! Clients of the rates API (`docs/API.md`): [`BlockingClient`] on ureq, the
//! chapter's `requests`, and [`AsyncClient`] on reqwest, its `aiohttp`. Both
//! clients share the URL check, the decoding of
//! answers and the typed [`FetchError`], so every model reports failures the
//! same way. A successful answer may also say what the server's rate limit
//! is ([`Reply`], [`RateLimitInfo`]), which an adaptive limiter can follow.

mod blocking;
mod limits;
mod nonblocking;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use blocking::BlockingClient;
pub use limits::RateLimitInfo;
pub use nonblocking::{AsyncClient, AsyncClientError};

use crate::{RateRequest, Rates};

/// What the project's clients do when no `--api` is given and what the public
/// service is called, for messages and docs.
pub const PUBLIC_API: &str = "https://api.vatcomply.com";

/// The largest answer either client reads: an API answer is a few KiB, and
/// a server that sends more (or never stops) is cut off here.
pub(crate) const MAX_BODY: usize = 16 << 20;

/// Timeouts shared by the blocking and async clients.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClientConfig {
    /// Time to establish a connection.
    pub connect_timeout: Duration,
    /// Time for a whole request, from connecting to the last byte.
    pub timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig { connect_timeout: Duration::from_secs(5), timeout: Duration::from_secs(10) }
    }
}

/// A successful answer and what its headers said about the rate limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The rates.
    pub rates: Rates,
    /// The server's rate limit, if its headers gave one.
    pub limit: Option<RateLimitInfo>,
    /// The size of the answer's body (what a trace shows of it).
    #[serde(default)]
    pub bytes: u64,
}

/// Why one request for rates failed. Serialisable, so a failure can cross a
/// process boundary like a result does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The server answered with an error status; `detail` is its explanation.
    #[error("HTTP {status}: {detail}")]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The `detail` of the server's JSON error body, or the body itself.
        detail: String,
        /// The `Retry-After` header of a 429 or 503 (else the JSON body's
        /// `retry_after`, as vatcomply also sends), if any.
        retry_after: Option<Duration>,
        /// What the answer's headers said about the rate limit: vatcomply
        /// states its limit only on its 429s.
        #[serde(default)]
        limit: Option<RateLimitInfo>,
    },
    /// No complete answer within the client's timeout.
    #[error("timed out ({0})")]
    Timeout(String),
    /// No connection could be made (refused, unreachable, unknown host).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The answer was not the JSON the API promises.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// The answer's JSON lacks a field the API promises.
    #[error("answer lacks the '{0}' field")]
    MissingField(String),
    /// Any other transport failure (TLS, protocol, broken connection).
    #[error("transport error: {0}")]
    Transport(String),
    /// The request was never made or was abandoned because the run was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// The worker running the request failed (panicked or died).
    #[error("worker failed: {0}")]
    Worker(String),
    /// The answer is well-formed but not for the question asked: another
    /// base, or a day later than the one asked for.
    #[error("wrong answer: {0}")]
    WrongAnswer(String),
}

impl FetchError {
    /// Whether another attempt may succeed: 5xx, 429, timeouts, connection
    /// and transport errors. Other 4xx answers are the request's fault.
    pub fn is_retryable(&self) -> bool {
        match self {
            FetchError::Status { status, .. } => *status == 429 || *status >= 500,
            FetchError::Timeout(_) | FetchError::Connect(_) | FetchError::Transport(_) => true,
            _ => false,
        }
    }

    /// A 429 that said when to come back: "not yet", and how long to wait
    /// (see [`RetryPolicy`](crate::RetryPolicy)).
    pub fn not_yet(&self) -> Option<Duration> {
        match self {
            FetchError::Status { status: 429, retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// How long the server asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// An `--api` value that is not an `http://` or `https://` URL with a host
/// and, if it has one, a port from 1 to 65535.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid API URL '{0}': expected http://HOST[:PORT] or https://HOST[:PORT], PORT from 1 to 65535")]
pub struct BadUrl(pub String);

/// Checks an API base URL and returns it without a trailing slash.
pub fn parse_api_url(url: &str) -> Result<String, BadUrl> {
    let bad = || BadUrl(url.to_string());
    let trimmed = url.trim_end_matches('/');
    let rest = trimmed.strip_prefix("http://").or_else(|| trimmed.strip_prefix("https://")).ok_or_else(bad)?;
    let uri: ureq::http::Uri = trimmed.parse().map_err(|_| bad())?;
    let host_ok = uri.host().is_some_and(|h| !h.is_empty());
    // The URI grammar takes any digits as a port; a socket takes 1..=65535.
    let authority = uri.authority().map_or("", |a| a.as_str());
    let after_host = authority.rsplit_once(']').map_or(authority, |(_, rest)| rest);
    let port_ok = after_host.rsplit_once(':').is_none_or(|(_, p)| p.parse::<u16>().is_ok_and(|p| p != 0));
    if !host_ok || !port_ok || rest.contains(['?', '#', ' ']) {
        return Err(bad());
    }
    Ok(trimmed.to_string())
}

/// Checks that an answer is for the question: the base asked, and a day no
/// later than the one asked (a holiday answers the business day before it).
pub(crate) fn check_answer(req: &RateRequest, rates: Rates) -> Result<Rates, FetchError> {
    if rates.base != req.base {
        return Err(FetchError::WrongAnswer(format!("asked for base {}, got {}", req.base, rates.base)));
    }
    if let Some(day) = req.date
        && rates.date > day
    {
        return Err(FetchError::WrongAnswer(format!("asked for {day}, got the later day {}", rates.date)));
    }
    Ok(rates)
}

/// Turns an HTTP answer into rates or a typed error; an error keeps the
/// `Retry-After` (the header, else the JSON body's `retry_after`) and the
/// rate limit its headers stated.
pub(crate) fn decode_rates(
    status: u16,
    retry_after: Option<&str>,
    limit: Option<RateLimitInfo>,
    body: &[u8],
) -> Result<Rates, FetchError> {
    if !(200..300).contains(&status) {
        let (detail, body_retry_after) = error_detail(body);
        return Err(FetchError::Status {
            status,
            detail,
            retry_after: retry_after.and_then(parse_retry_after).or(body_retry_after),
            limit,
        });
    }
    // A good answer in one pass; only a bad one is read again, as a tree,
    // to say what is wrong with it.
    if let Ok(rates) = serde_json::from_slice::<Rates>(body) {
        return Ok(rates);
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| FetchError::Malformed(e.to_string()))?;
    let obj = value.as_object().ok_or_else(|| FetchError::Malformed("expected a JSON object".into()))?;
    for field in ["date", "base", "rates"] {
        if !obj.contains_key(field) {
            return Err(FetchError::MissingField(field.into()));
        }
    }
    serde_json::from_value(value).map_err(|e| FetchError::Malformed(e.to_string()))
}

/// The most characters of an error's detail kept: an answer is untrusted,
/// and a detail ends up in messages.
const MAX_DETAIL_CHARS: usize = 200;

/// The `detail` of a JSON error body (else the body's text), shortened,
/// and its `retry_after` in seconds if it has a sane one.
fn error_detail(body: &[u8]) -> (String, Option<Duration>) {
    #[derive(Deserialize)]
    struct Detail {
        detail: serde_json::Value,
        #[serde(default)]
        retry_after: Option<serde_json::Value>,
    }
    let shorten = |text: &str| {
        let text = text.trim();
        match text.char_indices().nth(MAX_DETAIL_CHARS) {
            Some((i, _)) => format!("{}...", &text[..i]),
            None if text.is_empty() => "(empty body)".into(),
            None => text.to_string(),
        }
    };
    match serde_json::from_slice::<Detail>(body) {
        Ok(Detail { detail, retry_after }) => {
            let text = match detail {
                serde_json::Value::String(s) => shorten(&s),
                other => shorten(&other.to_string()),
            };
            let after = retry_after.and_then(|v| v.as_f64()).and_then(|s| parse_retry_after(&s.to_string()));
            (text, after)
        }
        Err(_) => (shorten(&String::from_utf8_lossy(body)), None),
    }
}

/// The longest wait a server's `Retry-After` is taken at: a longer one is
/// cut to this, so that no answer can stall a run for longer.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `Retry-After` in seconds, at most [`MAX_RETRY_AFTER`] (the HTTP-date
/// form is not used by rate limiters we know of, and is ignored).
fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(MAX_RETRY_AFTER.as_secs_f64())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_urls() {
        assert_eq!(parse_api_url("http://127.0.0.1:8080/"), Ok("http://127.0.0.1:8080".into()));
        assert_eq!(parse_api_url(PUBLIC_API), Ok(PUBLIC_API.into()));
        for bad in ["ftp://x", "localhost:80", "http://", "https:///x", "http://a b", ""] {
            assert_eq!(parse_api_url(bad), Err(BadUrl(bad.into())), "{bad}");
        }
    }

    #[test]
    fn decoding() {
        let decode_rates = |status, retry_after, body: &[u8]| decode_rates(status, retry_after, None, body);
        let ok = decode_rates(200, None, br#"{"date":"2018-10-12","base":"USD","rates":{"PLN":3.709694}}"#);
        assert_eq!(ok.map(|r| r.rates.len()), Ok(1));
        assert_eq!(
            decode_rates(429, Some("2"), br#"{"detail": "Rate limit exceeded."}"#),
            Err(FetchError::Status {
                status: 429,
                detail: "Rate limit exceeded.".into(),
                retry_after: Some(Duration::from_secs(2)),
                limit: None,
            })
        );
        assert!(matches!(decode_rates(200, None, b"not json"), Err(FetchError::Malformed(_))));
        assert!(matches!(decode_rates(200, None, b"[1]"), Err(FetchError::Malformed(_))));
        assert_eq!(
            decode_rates(200, None, br#"{"date":"2018-10-12","base":"USD"}"#),
            Err(FetchError::MissingField("rates".into()))
        );
        assert!(matches!(
            decode_rates(200, None, br#"{"date":"2018-10-12","base":"USD","rates":{"PLN":"x"}}"#),
            Err(FetchError::Malformed(_))
        ));
        let Err(FetchError::Status { detail, .. }) = decode_rates(502, None, b"<html>bad gateway</html>") else {
            panic!("a status error")
        };
        assert_eq!(detail, "<html>bad gateway</html>");
        let Err(FetchError::Status { detail, .. }) = decode_rates(403, None, "x".repeat(5000).as_bytes()) else {
            panic!("a status error")
        };
        assert_eq!(detail.len(), MAX_DETAIL_CHARS + 3, "a long body is cut");
        let long_json = format!(r#"{{"detail":"{}"}}"#, "y".repeat(5000));
        let Err(FetchError::Status { detail, .. }) = decode_rates(404, None, long_json.as_bytes()) else {
            panic!("a status error")
        };
        assert_eq!(detail.len(), MAX_DETAIL_CHARS + 3, "a long JSON detail is cut too");
    }

    #[test]
    fn vatcomply_429_is_read_whole() {
        let limit =
            RateLimitInfo { limit: 2, window: Duration::from_secs(1), remaining: None, reset: None, burst: Some(4) };
        let body = br#"{"detail":"Rate limit exceeded. Try again in 1 seconds.","retry_after":1}"#;
        let Err(FetchError::Status { status, retry_after, limit: got, .. }) =
            decode_rates(429, None, Some(limit), body)
        else {
            panic!("a status error")
        };
        assert_eq!(
            (status, retry_after, got),
            (429, Some(Duration::from_secs(1)), Some(limit)),
            "the body's retry_after"
        );
        // The header wins over the body; a silly body value is ignored, a huge one capped.
        let header_first = decode_rates(429, Some("3"), None, body);
        assert_eq!(header_first.err().and_then(|e| e.retry_after()), Some(Duration::from_secs(3)));
        for (json, want) in [
            (r#"{"detail":"x","retry_after":-1}"#, None),
            (r#"{"detail":"x","retry_after":"soon"}"#, None),
            (r#"{"detail":"x","retry_after":1e300}"#, Some(MAX_RETRY_AFTER)),
        ] {
            let got = decode_rates(429, None, None, json.as_bytes()).err().and_then(|e| e.retry_after());
            assert_eq!(got, want, "{json}");
        }
    }

    #[test]
    fn ports_out_of_range_are_bad_urls() {
        for bad in ["http://127.0.0.1:99999", "http://127.0.0.1:0", "http://h:65536/"] {
            assert_eq!(parse_api_url(bad), Err(BadUrl(bad.into())), "{bad}");
        }
        assert_eq!(parse_api_url("http://h:65535"), Ok("http://h:65535".into()));
        assert_eq!(parse_api_url("http://[::1]:8080"), Ok("http://[::1]:8080".into()));
        assert_eq!(parse_api_url("http://[::1]"), Ok("http://[::1]".into()));
    }

    #[test]
    fn answers_must_match_the_question() {
        let day = |s| crate::parse_date(s).expect("a date");
        let usd = || "USD".parse::<crate::Currency>().expect("a code");
        let jpy = || "JPY".parse::<crate::Currency>().expect("a code");
        let req = RateRequest { base: usd(), symbols: vec![], date: Some(day("2018-10-13")) };
        let answer = |base, date| Rates { date: day(date), base, rates: Default::default() };
        // A Saturday answers the Friday before it.
        assert!(check_answer(&req, answer(usd(), "2018-10-12")).is_ok());
        let wrong_base = check_answer(&req, answer(jpy(), "2018-10-12"));
        assert!(matches!(&wrong_base, Err(FetchError::WrongAnswer(m)) if m.contains("USD") && m.contains("JPY")));
        let later = check_answer(&req, answer(usd(), "2018-10-15"));
        assert!(matches!(&later, Err(FetchError::WrongAnswer(m)) if m.contains("2018-10-15")));
        assert!(!FetchError::WrongAnswer(String::new()).is_retryable());
    }

    #[test]
    fn retryable_errors() {
        let status = |s| FetchError::Status { status: s, detail: String::new(), retry_after: None, limit: None };
        assert!(status(500).is_retryable() && status(503).is_retryable() && status(429).is_retryable());
        assert!(!status(400).is_retryable() && !status(404).is_retryable());
        assert!(FetchError::Timeout("x".into()).is_retryable());
        assert!(!FetchError::Malformed("x".into()).is_retryable());
    }
}
