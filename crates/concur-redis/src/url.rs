//! The broker's URL: what is accepted, how it is shown, how it connects.
//!
//! A queue is named by `redis://[USER:PASSWORD@]HOST[:PORT][/DB]`, or
//! `rediss://...` for TLS to the broker (rustls; the server's certificate
//! is checked against the Web PKI roots, or against the CA certificates of
//! a PEM file named by the `ssl_ca_certs` query parameter, as redis-py and
//! Celery spell it: `rediss://alice:PASSWORD@broker:6380/0?ssl_ca_certs=/etc/rates/ca.pem`).
//! There is no way to turn the certificate check off.
//!
//! The URL holds the password: [`redact_url`] is how it is shown anywhere
//! (logs, errors, status lines), and errors of the redis client are kept
//! free of it ([`open`], [`reach`]).

use std::time::Duration;

use super::{QueueError, connect};

/// The query parameter naming a PEM file of CA certificates for `rediss://`.
pub const CA_PARAM: &str = "ssl_ca_certs";

/// What a password is shown as.
const HIDDEN: &str = "***";

/// `url` with its password, if any, replaced by `***`:
/// `redis://alice:***@host/0`. A URL that does not parse loses everything
/// between the first `:` after its scheme's `//` and its last `@`, so a
/// mistyped URL is safe to print too.
pub fn redact_url(url: &str) -> String {
    if let Some(mut parsed) = redis::parse_redis_url(url) {
        if parsed.password().is_none() {
            return url.to_owned();
        }
        if parsed.set_password(Some(HIDDEN)).is_ok() {
            return parsed.to_string();
        }
    }
    let Some(start) = url.find("://").map(|i| i + 3) else {
        // Not a URL at all: nothing can be told apart from a password.
        return if url.contains('@') || url.contains(':') { HIDDEN.to_owned() } else { url.to_owned() };
    };
    let rest = &url[start..];
    match rest.rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!("{}{}:{HIDDEN}{}", &url[..start], &rest[..colon], &rest[at..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// A URL kept in a value that may be printed with `{:?}`: it shows
/// redacted.
#[derive(Clone)]
pub(crate) struct QueueUrl(pub(crate) String);

impl std::ops::Deref for QueueUrl {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for QueueUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

/// Checks that `url` names a queue this crate can use: `redis://` or
/// `rediss://`, a host, an optional port and database number, and no
/// other query parameter than `ssl_ca_certs` (with `rediss://`). The
/// error names the URL redacted.
///
/// # Errors
///
/// [`QueueError::Invalid`], saying what is wrong.
pub fn check_url(url: &str) -> Result<(), QueueError> {
    let invalid = |why: &str| {
        QueueError::Invalid(format!(
            "invalid URL '{}': {why}; expected redis://[USER:PASSWORD@]HOST[:PORT][/DB] or rediss://...",
            redact_url(url)
        ))
    };
    let parsed = redis::parse_redis_url(url).ok_or_else(|| invalid("not a redis:// or rediss:// URL"))?;
    let tls = match parsed.scheme() {
        "redis" => false,
        "rediss" => true,
        _ => return Err(invalid("not a redis:// or rediss:// URL")),
    };
    match parsed.host_str() {
        None | Some("") => return Err(invalid("no host")),
        Some(_) => {}
    }
    match parsed.path().trim_matches('/') {
        "" => {}
        db if db.parse::<u32>().is_ok() => {}
        _ => return Err(invalid("the path must be a database number")),
    }
    if parsed.fragment().is_some() {
        return Err(invalid("no #fragment (the certificate check cannot be turned off)"));
    }
    for (key, _) in parsed.query_pairs() {
        match &*key {
            CA_PARAM if tls => {}
            CA_PARAM => return Err(invalid("ssl_ca_certs needs rediss://")),
            other => return Err(invalid(&format!("unknown parameter '{other}'"))),
        }
    }
    Ok(())
}

/// `url` with the PEM file of CA certificates `path` to check the broker's
/// certificate with (the `ssl_ca_certs` parameter, replacing any).
///
/// # Errors
///
/// A URL that is not `rediss://` ([`check_url`]'s errors otherwise).
pub fn with_ca_file(url: &str, path: &std::path::Path) -> Result<String, QueueError> {
    check_url(url)?;
    let mut parsed = redis::parse_redis_url(url)
        .ok_or_else(|| QueueError::Invalid(format!("invalid queue URL '{}'", redact_url(url))))?;
    if parsed.scheme() != "rediss" {
        return Err(QueueError::Invalid(format!(
            "a CA file is for a rediss:// (TLS) queue, not '{}'",
            redact_url(url)
        )));
    }
    let path = path
        .to_str()
        .ok_or_else(|| QueueError::Invalid(format!("the CA file's name is not UTF-8: {}", path.display())))?;
    let others: Vec<(String, String)> =
        parsed.query_pairs().filter(|(k, _)| k != CA_PARAM).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    parsed.query_pairs_mut().clear().extend_pairs(others).append_pair(CA_PARAM, path);
    Ok(parsed.to_string())
}

/// A client for the broker at `url` (checked; for `rediss://`, with TLS
/// and the CA file of `ssl_ca_certs`, read now). Errors never hold the
/// password.
pub(crate) fn open(url: &str) -> Result<redis::Client, QueueError> {
    check_url(url)?;
    let ca = redis::parse_redis_url(url)
        .and_then(|u| u.query_pairs().find(|(k, _)| k == CA_PARAM).map(|(_, v)| v.into_owned()));
    let opened = match ca {
        Some(path) => {
            let pem = read_ca(&path)?;
            install_crypto_provider();
            redis::Client::build_with_tls(url, redis::TlsCertificates { client_tls: None, root_cert: Some(pem) })
        }
        None => {
            if url.starts_with("rediss:") {
                install_crypto_provider();
            }
            redis::Client::open(url)
        }
    };
    opened.map_err(|e| redis_error(url, "bad queue URL", e))
}

/// A first connection to the broker at `url` through `client`, replies
/// bounded by `reply_within`; its error names the URL redacted.
pub(crate) fn reach(
    client: &redis::Client,
    url: &str,
    reply_within: Duration,
) -> Result<redis::Connection, QueueError> {
    connect(client, reply_within).map_err(|e| redis_error(url, &format!("cannot reach {}", redact_url(url)), e))
}

/// The redis client's error `e` about `url`, kept as it is unless its text
/// shows the URL's password (the client's own messages do not; this makes
/// sure), which is then hidden.
pub(crate) fn redis_error(url: &str, what: &str, e: redis::RedisError) -> QueueError {
    let text = e.to_string();
    match hide_password(url, &text) {
        Some(hidden) => QueueError::Invalid(format!("redis: {what}: {hidden}")),
        None => QueueError::Redis { what: what.to_owned(), source: e },
    }
}

/// `text` with every appearance of `url`'s password (as typed, and
/// decoded) hidden, or `None` if it shows none.
fn hide_password(url: &str, text: &str) -> Option<String> {
    let typed = password_of(url)?;
    let decoded = percent_decode(&typed);
    let mut shown = false;
    let mut out = text.to_owned();
    for secret in [typed.as_str(), decoded.as_str()] {
        if !secret.is_empty() && out.contains(secret) {
            out = out.replace(secret, HIDDEN);
            shown = true;
        }
    }
    shown.then_some(out)
}

/// The password of `url` as typed, whether or not the URL parses (the
/// span [`redact_url`] hides).
fn password_of(url: &str) -> Option<String> {
    if let Some(parsed) = redis::parse_redis_url(url) {
        return parsed.password().map(str::to_owned);
    }
    let rest = &url[url.find("://")? + 3..];
    let userinfo = &rest[..rest.rfind('@')?];
    Some(userinfo[userinfo.find(':')? + 1..].to_owned())
}

/// `%XX` escapes decoded, as the redis client decodes a password; invalid
/// escapes and non-UTF-8 results are left as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
}

/// The PEM CA certificates of the file at `path`: at least one.
fn read_ca(path: &str) -> Result<Vec<u8>, QueueError> {
    let pem =
        std::fs::read(path).map_err(|e| QueueError::Invalid(format!("cannot read the queue's CA file {path}: {e}")))?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(QueueError::Invalid(format!("the queue's CA file {path} holds no PEM certificate")));
    }
    Ok(pem)
}

/// Makes rustls's process-wide crypto provider the one the rest of the
/// program uses (ring), unless one is already installed: the redis
/// client's TLS asks for the default.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread installing one first is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_hidden() {
        assert_eq!(redact_url("redis://alice:s3cret@host/0"), "redis://alice:***@host/0");
        assert_eq!(redact_url("rediss://:s3cret@host:6380/1"), "rediss://:***@host:6380/1");
        assert_eq!(redact_url("redis://alice:p%40ss@host/0"), "redis://alice:***@host/0");
        assert_eq!(redact_url("redis://host:6379/0"), "redis://host:6379/0");
        assert_eq!(redact_url("redis://alice@host/0"), "redis://alice@host/0");
        assert_eq!(
            redact_url("rediss://u:pw@h/0?ssl_ca_certs=%2Fetc%2Fca.pem"),
            "rediss://u:***@h/0?ssl_ca_certs=%2Fetc%2Fca.pem"
        );
    }

    #[test]
    fn a_url_that_does_not_parse_is_hidden_too() {
        // A '/' in the password ends the authority: the URL does not parse.
        let shown = redact_url("redis://alice:pa/ss@host/0");
        assert!(!shown.contains("pa/ss") && !shown.contains("ss@"), "{shown}");
        assert_eq!(shown, "redis://alice:***@host/0");
        assert_eq!(redact_url("redis://alice:pw@"), "redis://alice:***@");
        assert_eq!(redact_url("alice:pw@host"), "***");
        assert_eq!(redact_url("host"), "host");
    }

    #[test]
    fn the_password_is_found_in_any_text() {
        let url = "redis://alice:p%40ss@host/0";
        assert_eq!(hide_password(url, "no p@ss here").as_deref(), Some("no *** here"));
        assert_eq!(hide_password(url, "and p%40ss").as_deref(), Some("and ***"));
        assert_eq!(hide_password(url, "nothing"), None);
        assert_eq!(hide_password("redis://host/0", "nothing"), None);
    }

    #[test]
    fn a_kept_url_debugs_redacted() {
        let url = QueueUrl("redis://alice:s3cret@host/0".into());
        assert_eq!(format!("{url:?}"), "redis://alice:***@host/0");
        assert_eq!(&*url, "redis://alice:s3cret@host/0");
    }

    #[test]
    fn urls_are_checked() {
        for good in [
            "redis://host",
            "redis://127.0.0.1:6379/0",
            "rediss://alice:pw@host:6380/2",
            "rediss://host/0?ssl_ca_certs=/etc/ca.pem",
        ] {
            assert!(check_url(good).is_ok(), "{good}");
        }
        for bad in [
            "http://host",
            "redis://",
            "redis:///0",
            "redis://host/zero",
            "rediss://host/0#insecure",
            "redis://host/0?ssl_ca_certs=/etc/ca.pem",
            "rediss://host/0?protocol=resp3",
            "redis+unix:///tmp/redis.sock",
            "host:6379",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        let e = check_url("redis://alice:s3cret@host/zero").expect_err("bad").to_string();
        assert!(e.contains("redis://alice:***@host/zero") && !e.contains("s3cret"), "{e}");
    }

    #[test]
    fn a_ca_file_is_a_parameter() {
        let url = with_ca_file("rediss://u:pw@h:6380/0", std::path::Path::new("/etc/my ca.pem")).expect("rediss");
        assert_eq!(url, "rediss://u:pw@h:6380/0?ssl_ca_certs=%2Fetc%2Fmy+ca.pem");
        assert!(check_url(&url).is_ok());
        let again = with_ca_file(&url, std::path::Path::new("/b.pem")).expect("rediss");
        assert_eq!(again, "rediss://u:pw@h:6380/0?ssl_ca_certs=%2Fb.pem");
        assert!(with_ca_file("redis://h/0", std::path::Path::new("/b.pem")).is_err());
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_said() {
        let e = open("rediss://h/0?ssl_ca_certs=/nonexistent/ca.pem").expect_err("no file").to_string();
        assert!(e.contains("cannot read the queue's CA file /nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn opening_a_tls_url_needs_no_broker() {
        assert!(open("rediss://alice:pw@127.0.0.1:1/0").is_ok());
        assert!(open("redis://alice:pw@127.0.0.1:1/0").is_ok());
    }
}
