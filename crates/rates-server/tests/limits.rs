//! The server protects itself from silent connections: a cap on open
//! connections that sheds the longest-waiting one, a header timeout, an idle
//! keep-alive timeout, all counted in `/metrics`. Real sockets on loopback;
//! every wait is bounded generously, so only a hang would exceed it.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use rates_server::{ConnLimits, ServerOptions, Snapshot};
use support::{agent, get, get_json, server};

/// Longer than any close this file waits for should take.
const BOUND: Duration = Duration::from_secs(10);

fn limits(l: ConnLimits) -> ServerOptions {
    ServerOptions { limits: l, ..Default::default() }
}

/// `n` connections that never send a byte.
fn silent(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n).map(|_| TcpStream::connect(addr).expect("connect")).collect()
}

/// True if the server closed `s` within `BOUND` (EOF, or a reset).
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(BOUND)).unwrap();
    match s.read(&mut [0u8; 64]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted),
    }
}

/// The value of metric line `name` in `text`.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// Polls the server's counters until `done` holds, at most `BOUND`.
fn wait_for(server: &rates_server::RunningServer, done: impl Fn(&Snapshot) -> bool) -> Snapshot {
    let start = Instant::now();
    loop {
        let s = server.metrics().snapshot();
        if done(&s) || start.elapsed() > BOUND {
            return s;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn silent_sockets_at_the_cap_do_not_starve_a_real_request() {
    let cap = 8;
    let s = server(limits(ConnLimits {
        max_connections: cap,
        header_timeout: Duration::from_secs(3600),
        ..Default::default()
    }));
    let mut sockets = silent(s.addr(), 300);
    let a = agent();
    let (status, body) = get_json(&a, &s, "/rates?base=USD&symbols=PLN&date=2018-10-12");
    assert_eq!((status, &body["rates"]["PLN"]), (200, &serde_json::json!(3.709694)));
    // 301 connections through a cap of 8: the 293 that waited longest were
    // closed to make room, and the answer's connection is one of the 8.
    let m = wait_for(&s, |m| m.shed == 293);
    assert_eq!((m.shed, m.connections_open, m.header_timeouts), (293, cap as u64, 0), "{m:?}");
    assert!(closed_by_server(&mut sockets[0]), "the oldest silent socket was shed");
    assert!(!sockets.last_mut().is_some_and(|l| {
        l.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        matches!(l.read(&mut [0u8; 8]), Ok(0))
    }));
    // Read over HTTP too (a new connection, if the agent opens one, sheds
    // one more).
    let (_, _, text) = get(&a, &s, "/metrics");
    assert!(metric(&text, "rates_connections_closed_total{reason=\"shed\"}") >= 293, "{text}");
    assert_eq!(metric(&text, "rates_connections_open"), cap as u64, "{text}");
}

#[test]
fn silent_sockets_are_closed_after_the_header_timeout() {
    let s = server(limits(ConnLimits { header_timeout: Duration::from_millis(200), ..Default::default() }));
    let mut sockets = silent(s.addr(), 100);
    for (i, sock) in sockets.iter_mut().enumerate() {
        assert!(closed_by_server(sock), "socket {i} still open after {BOUND:?}");
    }
    // Counted before the close, so exact now; the gauge follows at once.
    let m = wait_for(&s, |m| m.connections_open == 0);
    assert_eq!((m.header_timeouts, m.idle_timeouts, m.shed, m.connections_open), (100, 0, 0, 0), "{m:?}");
    let (_, _, text) = get(&agent(), &s, "/metrics");
    assert!(text.contains("rates_connections_closed_total{reason=\"header_timeout\"} 100\n"), "{text}");
}

#[test]
fn a_slow_head_is_closed_after_the_header_timeout() {
    let s = server(limits(ConnLimits { header_timeout: Duration::from_millis(300), ..Default::default() }));
    let mut sock = TcpStream::connect(s.addr()).unwrap();
    sock.write_all(b"GET /rates HTTP/1.1\r\nhost: x\r\n").unwrap();
    assert!(closed_by_server(&mut sock));
    assert_eq!(wait_for(&s, |m| m.header_timeouts == 1).header_timeouts, 1);
}

/// Reads one answer with a `content-length` off `sock`: (status line, body).
fn read_answer(sock: &mut TcpStream) -> (String, String) {
    sock.set_read_timeout(Some(BOUND)).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = sock.read(&mut chunk).expect("an answer");
        assert!(n > 0, "closed mid-answer: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned))
                .and_then(|v| v.trim().parse().ok())
                .expect("a content-length");
            if buf.len() >= end + 4 + len {
                return (text.lines().next().unwrap_or_default().to_string(), text[end + 4..].to_string());
            }
        }
    }
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let s = server(limits(ConnLimits {
        header_timeout: Duration::from_secs(3600),
        idle_timeout: Duration::from_millis(300),
        ..Default::default()
    }));
    let mut sock = TcpStream::connect(s.addr()).unwrap();
    sock.write_all(b"GET /rates?symbols=USD HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    assert_eq!(read_answer(&mut sock).0, "HTTP/1.1 200 OK");
    assert!(closed_by_server(&mut sock));
    let m = wait_for(&s, |m| m.idle_timeouts == 1);
    assert_eq!((m.idle_timeouts, m.header_timeouts), (1, 0), "{m:?}");
    let (_, _, text) = get(&agent(), &s, "/metrics");
    assert!(text.contains("rates_connections_closed_total{reason=\"idle_timeout\"} 1\n"), "{text}");
}

#[test]
fn connections_busy_answering_are_not_shed() {
    // Two slow requests fill a cap of 2; a third connection waits for a slot
    // instead of closing one of them, and is answered once one finishes.
    let s = server(ServerOptions {
        latency: Duration::from_secs(1),
        limits: ConnLimits { max_connections: 2, ..Default::default() },
        ..Default::default()
    });
    let url = format!("{}/rates?symbols=USD", s.url());
    let call = |url: String| std::thread::spawn(move || agent().get(&url).call().map(|r| r.status().as_u16()));
    let mut answers = vec![call(url.clone()), call(url.clone())];
    assert_eq!(wait_for(&s, |m| m.in_flight == 2).in_flight, 2);
    answers.push(call(url));
    for a in answers {
        assert_eq!(a.join().unwrap().expect("answered"), 200);
    }
    // Every answer came (a busy connection shed would have lost its own);
    // the newcomer waited, then took the slot of the first connection done
    // (closed, or shed once idle).
    let m = s.metrics().snapshot();
    assert_eq!((m.count(200), m.cap_full), (3, 1), "{m:?}");
    assert!(m.shed <= 1, "{m:?}");
}

/// More connections at once than tokio's `bind` lets the kernel hold (1024):
/// an `async` client with unlimited workers opens thousands.
const STORM: usize = 1100;

/// Raises this process's descriptor limit to its hard limit, so the storm's
/// client sockets fit where the soft limit is 1024.
fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

#[test]
fn the_listen_backlog_holds_a_storm_of_connections() {
    raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let listener = {
        let _in_runtime = rt.enter();
        rates_server::listen(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap()
    };
    let addr = listener.local_addr().unwrap();
    // Nothing accepts: a handshake completes only if the backlog has room
    // for it; past a full backlog the kernel drops it and the client
    // retries a second later, then three, then seven...
    let mut held = Vec::with_capacity(STORM);
    for i in 0..STORM {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(30)) {
            Ok(s) => held.push(s),
            Err(e) => panic!("connection {i} of {STORM} not held by the backlog: {e}"),
        }
    }
    drop(listener);
}
