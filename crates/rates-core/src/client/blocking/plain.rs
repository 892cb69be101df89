//! HTTP/1.1 `GET` over a plain TCP connection, for an API at an IP address
//! over `http://` (the in-process server, a vatcomply run on this host):
//! what [`BlockingClient`](super::BlockingClient) uses for such an API.
//!
//! With a thread per item, every thread pays for its client's deepest call
//! and for its connection's buffers. ureq's path touched 40 KiB of stack
//! and 15 KiB of heap per thread, over half of the chapter's
//! thread-per-item memory; this one asks only what an API answer needs: a
//! small head, a body by `Content-Length`, chunks or the connection's end.
//! Anything else (https, a host name, a proxy, a redirect) stays with ureq.
//!
//! Everything read is the peer's: the head is capped at
//! [`INPUT_BUFFER`](super::INPUT_BUFFER), the body at [`MAX_BODY`], and every
//! read and write waits at most until the request's deadline.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Answer, INPUT_BUFFER};
use crate::client::{ClientConfig, FetchError, MAX_BODY, RateLimitInfo};

/// The most headers an answer may have; more fail the request.
const MAX_HEADERS: usize = 32;

/// The first read asks for this much: an answer's head and a small body.
const FIRST_READ: usize = 1024;

/// At most this many idle connections are kept for reuse.
const MAX_IDLE: usize = 64;

/// An API at `http://ADDR[/prefix]`, and its idle keep-alive connections.
#[derive(Debug)]
pub(super) struct Plain {
    addr: SocketAddr,
    /// The URL's authority, for the `Host` header.
    authority: String,
    /// The URL's path (without a trailing `/`), before `/rates`.
    prefix: String,
    user_agent: &'static str,
    idle: Mutex<Vec<TcpStream>>,
}

/// Why an exchange failed: `Stale` only on a reused connection that the
/// server had closed before it read the request, which a new connection
/// retries.
enum Failure {
    Stale,
    Fetch(FetchError),
}

impl From<FetchError> for Failure {
    fn from(e: FetchError) -> Self {
        Failure::Fetch(e)
    }
}

impl Plain {
    /// The plain path for `api` (checked by `parse_api_url`), if it is
    /// `http://` at an IP address.
    pub(super) fn for_api(api: &str, user_agent: &'static str) -> Option<Self> {
        let rest = api.strip_prefix("http://")?;
        let (authority, prefix) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let uri: ureq::http::uri::Authority = authority.parse().ok()?;
        let ip = uri.host().trim_start_matches('[').trim_end_matches(']').parse().ok()?;
        let addr = SocketAddr::new(ip, uri.port_u16().unwrap_or(80));
        let prefix = if prefix.is_empty() { String::new() } else { format!("/{prefix}") };
        Some(Plain { addr, authority: authority.to_string(), prefix, user_agent, idle: Mutex::new(Vec::new()) })
    }

    /// `GET prefix + path` (a path with its query), on an idle connection
    /// if there is one, within `config`'s time limits.
    pub(super) fn get(&self, path: &str, api: &str, config: &ClientConfig) -> Result<Answer, FetchError> {
        let deadline = Instant::now() + config.timeout;
        let failed = |e: Failure| match e {
            Failure::Stale => FetchError::Transport(format!("{api}: the connection closed before an answer")),
            Failure::Fetch(e) => e,
        };
        let reused = concur::sync::lock(&self.idle).pop();
        if let Some(conn) = reused {
            match self.exchange(conn, path, deadline, config) {
                Err(Failure::Stale) => {}
                done => return done.map_err(failed),
            }
        }
        let conn = self.connect(deadline, api, config)?;
        self.exchange(conn, path, deadline, config).map_err(failed)
    }

    fn connect(&self, deadline: Instant, api: &str, config: &ClientConfig) -> Result<TcpStream, FetchError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let limit = config.connect_timeout.min(left);
        if limit.is_zero() {
            return Err(request_timeout(config));
        }
        TcpStream::connect_timeout(&self.addr, limit).map_err(|e| match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock if limit < config.connect_timeout => {
                request_timeout(config)
            }
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                FetchError::Timeout(format!("connect after {:?}", config.connect_timeout))
            }
            _ => FetchError::Connect(format!("{api}: {e}")),
        })
    }

    /// Sends the request on `conn` and reads its answer; `conn` goes back
    /// to the idle ones if the answer leaves it fit for another.
    fn exchange(
        &self,
        mut conn: TcpStream,
        path: &str,
        deadline: Instant,
        config: &ClientConfig,
    ) -> Result<Answer, Failure> {
        let io_error = |e: io::Error| io_failure(e, config);
        let request = format!(
            "GET {}{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {}\r\nAccept: */*\r\n\r\n",
            self.prefix, self.authority, self.user_agent
        );
        conn.set_write_timeout(Some(left(deadline, config)?)).map_err(io_error)?;
        if let Err(e) = conn.write_all(request.as_bytes()) {
            return Err(if closed(&e) { Failure::Stale } else { io_error(e) });
        }
        drop(request);

        let mut buf = Vec::with_capacity(FIRST_READ);
        let head = loop {
            match parse_head(&buf)? {
                // An interim answer (100 Continue and the like) before the real one.
                Some(head) if (100..200).contains(&head.status) && head.status != 101 => {
                    buf.drain(..head.len);
                    continue;
                }
                Some(head) => break head,
                None if buf.len() >= INPUT_BUFFER => {
                    return Err(transport(&format!("an answer head over {INPUT_BUFFER} bytes")).into());
                }
                None => {}
            }
            let got = match read_more(&mut conn, &mut buf, INPUT_BUFFER, deadline, config) {
                Ok(0) if buf.is_empty() => return Err(Failure::Stale),
                other => other?,
            };
            if got == 0 {
                return Err(transport("the connection closed in the answer's head").into());
            }
        };
        buf.drain(..head.len);

        let (body, reusable) = match head.framing {
            _ if head.status == 204 || head.status == 304 => (Vec::new(), buf.is_empty()),
            Framing::Length(n) => {
                let n = usize::try_from(n).ok().filter(|&n| n <= MAX_BODY).ok_or_else(|| too_big(n))?;
                // One byte past the body would show an answer longer than it said.
                while buf.len() < n {
                    if read_more(&mut conn, &mut buf, n + 1, deadline, config)? == 0 {
                        return Err(transport("the connection closed in the answer's body").into());
                    }
                }
                let reusable = buf.len() == n;
                buf.truncate(n);
                (buf, reusable)
            }
            Framing::Chunked => dechunk(&mut conn, buf, deadline, config)?,
            Framing::ToEnd => {
                while buf.len() <= MAX_BODY && read_more(&mut conn, &mut buf, MAX_BODY + 1, deadline, config)? > 0 {}
                if buf.len() > MAX_BODY {
                    return Err(too_big(buf.len() as u64).into());
                }
                (buf, false)
            }
        };
        if reusable && head.keep_alive {
            let mut idle = concur::sync::lock(&self.idle);
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
        Ok(Answer { status: head.status, retry_after: head.retry_after, limit: head.limit, body })
    }
}

/// How an answer's body ends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    Length(u64),
    Chunked,
    ToEnd,
}

/// What the client keeps of an answer's head.
#[derive(Debug, PartialEq)]
struct Head {
    /// Its length in bytes, the blank line included.
    len: usize,
    status: u16,
    retry_after: Option<String>,
    limit: Option<RateLimitInfo>,
    framing: Framing,
    /// HTTP/1.1 without `Connection: close`.
    keep_alive: bool,
}

/// The head at the start of `buf`, `None` if it is not all there yet.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, FetchError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut answer = httparse::Response::new(&mut headers);
    let len = match answer.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(transport(&format!("a bad answer head ({e})"))),
    };
    let get = |name: &str| {
        answer
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let has_token = |name: &str, token: &str| {
        answer
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let framing = if let Some(codings) = get("transfer-encoding") {
        // Chunked must be the last coding; any other the client cannot read.
        let last = codings.rsplit(',').next().map(str::trim);
        if !last.is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
            return Err(transport("an answer in a transfer coding other than chunked"));
        }
        Framing::Chunked
    } else {
        let mut lengths = answer.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("content-length"));
        match (lengths.next(), lengths.next()) {
            (None, _) => Framing::ToEnd,
            (Some(h), None) => {
                let n = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse().ok());
                Framing::Length(n.ok_or_else(|| transport("an answer with a bad Content-Length"))?)
            }
            (Some(_), Some(_)) => return Err(transport("an answer with two Content-Lengths")),
        }
    };
    let status = answer.code.unwrap_or(0);
    Ok(Some(Head {
        len,
        status,
        retry_after: get("retry-after").map(str::to_owned),
        limit: RateLimitInfo::from_headers(get),
        framing,
        keep_alive: answer.version == Some(1) && !has_token("connection", "close"),
    }))
}

/// Reads a chunked body whose first bytes are `raw`: the body, and whether
/// the connection may carry another request.
fn dechunk(
    conn: &mut TcpStream,
    mut raw: Vec<u8>,
    deadline: Instant,
    config: &ClientConfig,
) -> Result<(Vec<u8>, bool), Failure> {
    // A chunk's size line, or the trailers, longer than this is refused.
    const MAX_LINE: usize = 4096;
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        match httparse::parse_chunk_size(&raw[at..]) {
            Ok(httparse::Status::Complete((line, 0))) => {
                at += line;
                break;
            }
            Ok(httparse::Status::Complete((line, size))) => {
                let size = usize::try_from(size)
                    .ok()
                    .filter(|&s| s <= MAX_BODY - body.len())
                    .ok_or_else(|| too_big(body.len() as u64 + size))?;
                let end = at + line + size;
                while raw.len() < end + 2 {
                    if read_more(conn, &mut raw, end + 2, deadline, config)? == 0 {
                        return Err(transport("the connection closed in a chunk").into());
                    }
                }
                if &raw[end..end + 2] != b"\r\n" {
                    return Err(transport("a chunk without its CRLF").into());
                }
                body.extend_from_slice(&raw[at + line..end]);
                raw.drain(..end + 2);
                at = 0;
            }
            Ok(httparse::Status::Partial) if raw.len() - at < MAX_LINE => {
                let want = raw.len() + 1;
                if read_more(conn, &mut raw, want.max(at + MAX_LINE), deadline, config)? == 0 {
                    return Err(transport("the connection closed in a chunk's size").into());
                }
            }
            _ => return Err(transport("a bad chunk size").into()),
        }
    }
    // Trailers, if any, end with a blank line.
    loop {
        let rest = &raw[at..];
        if rest.starts_with(b"\r\n") {
            return Ok((body, rest.len() == 2));
        }
        if let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok((body, rest.len() == end + 4));
        }
        if rest.len() >= MAX_LINE {
            return Err(transport("trailers over 4 KiB").into());
        }
        if read_more(conn, &mut raw, at + MAX_LINE, deadline, config)? == 0 {
            return Err(transport("the connection closed in the trailers").into());
        }
    }
}

/// One read onto the end of `buf`, which grows to at most `cap` bytes;
/// the bytes read (0: the peer closed, or reset the connection).
fn read_more(
    conn: &mut TcpStream,
    buf: &mut Vec<u8>,
    cap: usize,
    deadline: Instant,
    config: &ClientConfig,
) -> Result<usize, Failure> {
    let filled = buf.len();
    let room = if filled < buf.capacity() { buf.capacity() } else { (filled * 2).max(FIRST_READ) };
    buf.resize(room.min(cap.max(filled + 1)), 0);
    let got = loop {
        let wait = match left(deadline, config) {
            Ok(wait) => wait,
            Err(e) => break Err(Failure::Fetch(e)),
        };
        if let Err(e) = conn.set_read_timeout(Some(wait)) {
            break Err(io_failure(e, config));
        }
        match conn.read(&mut buf[filled..]) {
            // On a socket with a timeout, a read fails with EINTR when the
            // process is stopped and continued (SIGSTOP, SIGCONT), even
            // with no signal handler: it is asked again.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A reset is the peer closing, as an end of stream is.
            Err(e) if closed(&e) => break Ok(0),
            Err(e) => break Err(io_failure(e, config)),
            Ok(n) => break Ok(n),
        }
    };
    buf.truncate(filled + *got.as_ref().unwrap_or(&0));
    got
}

/// The time left until `deadline`, or the request's timeout.
fn left(deadline: Instant, config: &ClientConfig) -> Result<Duration, FetchError> {
    Some(deadline.saturating_duration_since(Instant::now()))
        .filter(|d| !d.is_zero())
        .ok_or_else(|| request_timeout(config))
}

fn request_timeout(config: &ClientConfig) -> FetchError {
    FetchError::Timeout(format!("request after {:?}", config.timeout))
}

fn io_failure(e: io::Error, config: &ClientConfig) -> Failure {
    Failure::Fetch(match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => request_timeout(config),
        _ => transport(&e.to_string()),
    })
}

/// The peer closed or reset the connection.
fn closed(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted)
}

fn too_big(n: u64) -> FetchError {
    transport(&format!("an answer body of {n} bytes, over the {MAX_BODY}-byte limit"))
}

fn transport(what: &str) -> FetchError {
    FetchError::Transport(what.to_string())
}

#[cfg(test)]
mod tests;
