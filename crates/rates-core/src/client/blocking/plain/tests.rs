//! The plain path against scripted servers: framing, reuse, and every way
//! a peer can send too much, too little or too slowly.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use super::*;

const BODY: &str = r#"{"date":"2018-10-12","base":"USD","rates":{"PLN":3.709694}}"#;

fn ok_answer() -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{BODY}", BODY.len()).into_bytes()
}

/// A server that answers the `n`th request it reads (on any connection)
/// with `answer(n)`, closing each connection after one answer if
/// `one_per_connection`. It reports each request's line and the number of
/// its connection.
fn server(
    one_per_connection: bool,
    answer: impl Fn(usize) -> Vec<u8> + Send + 'static,
) -> (String, Receiver<(usize, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut n = 0;
        for (connection, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream);
            loop {
                let mut head = String::new();
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|got| got > 2) {
                    head.push_str(&line);
                    line.clear();
                }
                if head.is_empty() {
                    break;
                }
                let _ = tx.send((connection, head.lines().next().unwrap_or_default().to_string()));
                let bytes = answer(n);
                n += 1;
                if reader.get_mut().write_all(&bytes).is_err() || one_per_connection {
                    break;
                }
            }
        }
    });
    (url, rx)
}

fn plain(url: &str) -> Plain {
    Plain::for_api(url, "rates/test").expect("an http URL at an IP address")
}

fn config(timeout: Duration) -> ClientConfig {
    ClientConfig { connect_timeout: Duration::from_secs(5), timeout }
}

fn get(p: &Plain, url: &str) -> Result<Answer, FetchError> {
    p.get("/rates?base=USD", url, &config(Duration::from_secs(5)))
}

fn requests(rx: &Receiver<(usize, String)>) -> Vec<(usize, String)> {
    rx.try_iter().collect()
}

#[test]
fn only_http_at_an_ip_address_takes_the_plain_path() {
    assert!(Plain::for_api("http://127.0.0.1:8080", "x").is_some());
    assert!(Plain::for_api("http://[::1]:9/v1", "x").is_some_and(|p| p.prefix == "/v1" && p.addr.port() == 9));
    assert!(Plain::for_api("http://10.0.0.1", "x").is_some_and(|p| p.addr.port() == 80));
    assert!(Plain::for_api("http://localhost:8080", "x").is_none());
    assert!(Plain::for_api("https://127.0.0.1:8443", "x").is_none());
}

#[test]
fn an_answer_by_length_is_read_and_its_connection_reused() {
    let (url, rx) = server(false, |_| ok_answer());
    let p = plain(&url);
    for _ in 0..3 {
        let a = get(&p, &url).expect("an answer");
        assert_eq!((a.status, a.body.as_slice()), (200, BODY.as_bytes()));
    }
    let seen = requests(&rx);
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|(conn, line)| *conn == 0 && line == "GET /rates?base=USD HTTP/1.1"), "{seen:?}");
}

#[test]
fn the_api_path_prefixes_the_request() {
    let (url, rx) = server(false, |_| ok_answer());
    let api = format!("{url}/v1");
    get(&plain(&api), &api).expect("an answer");
    assert_eq!(requests(&rx)[0].1, "GET /v1/rates?base=USD HTTP/1.1");
}

#[test]
fn a_chunked_answer_with_extensions_and_trailers_is_joined() {
    let (url, _rx) = server(false, |_| {
        let (a, b) = BODY.split_at(10);
        format!(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x};ext=1\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\nx-trailer: 1\r\n\r\n",
                a.len(),
            b.len()
        )
        .into_bytes()
    });
    let p = plain(&url);
    for _ in 0..2 {
        assert_eq!(get(&p, &url).expect("an answer").body, BODY.as_bytes());
    }
}

#[test]
fn an_answer_to_the_connections_end_is_read_and_the_connection_not_kept() {
    let (url, _rx) = server(true, |_| format!("HTTP/1.1 200 OK\r\n\r\n{BODY}").into_bytes());
    let p = plain(&url);
    assert_eq!(get(&p, &url).expect("an answer").body, BODY.as_bytes());
    assert!(concur::sync::lock(&p.idle).is_empty());
}

#[test]
fn a_connection_the_server_closed_while_idle_is_replaced() {
    // The server closes each connection after one answer without saying
    // so: the client keeps it, and finds it closed when it next asks.
    let (url, rx) = server(true, |_| ok_answer());
    let p = plain(&url);
    get(&p, &url).expect("the first answer");
    assert_eq!(concur::sync::lock(&p.idle).len(), 1);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(get(&p, &url).expect("an answer on a new connection").body, BODY.as_bytes());
    let connections: Vec<usize> = requests(&rx).into_iter().map(|(c, _)| c).collect();
    assert_eq!(connections, [0, 1]);
}

#[test]
fn an_interim_answer_is_skipped() {
    let (url, _rx) = server(false, |_| {
        let mut a = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
        a.extend(ok_answer());
        a
    });
    assert_eq!(get(&plain(&url), &url).expect("an answer").status, 200);
}

#[test]
fn headers_are_read_case_blind() {
    let (url, _rx) = server(false, |_| {
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nX-RateLimit-Limit: 2\r\nContent-Length: 2\r\n\r\n{}"
            .to_vec()
    });
    let a = get(&plain(&url), &url).expect("an answer");
    assert_eq!((a.status, a.retry_after.as_deref()), (429, Some("7")));
    assert!(a.limit.is_some());
}

/// The error for an answer of `bytes`, on a fresh server.
fn failure(bytes: Vec<u8>) -> FetchError {
    let (url, _rx) = server(true, move |_| bytes.clone());
    match get(&plain(&url), &url) {
        Err(e) => e,
        Ok(a) => panic!("an answer: {}", a.status),
    }
}

#[test]
fn a_head_past_the_input_buffer_fails() {
    let pad = "p".repeat(INPUT_BUFFER);
    let e = failure(format!("HTTP/1.1 200 OK\r\nx-pad: {pad}\r\ncontent-length: 2\r\n\r\n{{}}").into_bytes());
    assert!(matches!(&e, FetchError::Transport(m) if m.contains("head over")), "{e:?}");
}

#[test]
fn too_many_headers_fail() {
    let headers: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
    let e = failure(format!("HTTP/1.1 200 OK\r\n{headers}content-length: 2\r\n\r\n{{}}").into_bytes());
    assert!(matches!(e, FetchError::Transport(_)), "{e:?}");
}

#[test]
fn malformed_framing_fails() {
    for head in [
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\n{}",
        "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n{}",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n{}",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n",
        "NOT HTTP AT ALL\r\n\r\n",
    ] {
        let e = failure(head.as_bytes().to_vec());
        assert!(matches!(e, FetchError::Transport(_)), "{head:?}: {e:?}");
    }
}

#[test]
fn a_body_that_stops_short_fails() {
    let e = failure(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{}".to_vec());
    assert!(matches!(&e, FetchError::Transport(m) if m.contains("closed")), "{e:?}");
}

#[test]
fn a_stated_length_over_the_cap_fails_before_reading() {
    let e = failure(format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", MAX_BODY + 1).into_bytes());
    assert!(matches!(&e, FetchError::Transport(m) if m.contains("limit")), "{e:?}");
}

/// A server that sends a head, then `chunk` over and over until the client
/// goes.
fn endless(head: &'static str, chunk: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    std::thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else { return };
        let _ = conn.write_all(head.as_bytes());
        while conn.write_all(chunk).is_ok() {}
    });
    url
}

#[test]
fn an_endless_body_is_cut_at_the_cap() {
    let chunk: &'static [u8] = Box::leak(vec![b'x'; 64 * 1024].into_boxed_slice());
    let url = endless("HTTP/1.1 200 OK\r\n\r\n", chunk);
    let e = get(&plain(&url), &url).expect_err("an endless body");
    assert!(matches!(&e, FetchError::Transport(m) if m.contains("limit")), "{e:?}");
}

#[test]
fn endless_chunks_are_cut_at_the_cap() {
    let chunk: &'static [u8] =
        Box::leak(format!("10000\r\n{}\r\n", "x".repeat(0x10000)).into_bytes().into_boxed_slice());
    let url = endless("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", chunk);
    let e = get(&plain(&url), &url).expect_err("endless chunks");
    assert!(matches!(&e, FetchError::Transport(m) if m.contains("limit")), "{e:?}");
}

#[test]
fn a_trickling_answer_times_out_at_the_request_deadline() {
    // A byte every 20 ms: no single read waits long, the whole does.
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    std::thread::spawn(move || {
        let Ok((mut conn, _)) = listener.accept() else { return };
        for byte in b"HTTP/1.1 200 OK\r\nx-slow: ".iter().chain(std::iter::repeat(&b'x')) {
            std::thread::sleep(Duration::from_millis(20));
            if conn.write_all(&[*byte]).is_err() {
                return;
            }
        }
    });
    let start = Instant::now();
    let e = plain(&url).get("/rates", &url, &config(Duration::from_millis(300))).expect_err("too slow");
    assert!(matches!(&e, FetchError::Timeout(m) if m.starts_with("request after")), "{e:?}");
    // Bounded by the deadline, not by a read's wait times the bytes.
    assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
}

#[test]
fn a_refused_connection_is_a_connect_error() {
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let url = format!("http://127.0.0.1:{port}");
    let e = get(&plain(&url), &url).expect_err("nobody listens");
    assert!(matches!(e, FetchError::Connect(_)), "{e:?}");
}

#[test]
fn extra_bytes_after_the_body_keep_the_connection_out_of_reuse() {
    let (url, rx) = server(false, |_| {
        let mut a = ok_answer();
        a.extend_from_slice(b"junk");
        a
    });
    let p = plain(&url);
    for _ in 0..2 {
        assert_eq!(get(&p, &url).expect("an answer").body, BODY.as_bytes());
    }
    let seen = requests(&rx);
    assert_eq!(seen.iter().map(|(c, _)| *c).collect::<Vec<_>>(), [0, 1]);
}

#[test]
fn a_connection_asked_to_close_is_not_kept() {
    let (url, _rx) = server(false, |_| {
        format!("HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: {}\r\n\r\n{BODY}", BODY.len()).into_bytes()
    });
    let p = plain(&url);
    get(&p, &url).expect("an answer");
    assert!(concur::sync::lock(&p.idle).is_empty());
}
