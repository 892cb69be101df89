//! Tests of the accept loop and the connection watchdog, on tokio's
//! paused clock and on real loopback sockets.
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;
use crate::Timer;

/// Hands out queued results, then waits forever; counts its calls.
struct FakeListener {
    queue: VecDeque<io::Result<DuplexStream>>,
    calls: Arc<AtomicU64>,
}

impl Accept for FakeListener {
    type Io = DuplexStream;
    async fn accept(&mut self) -> io::Result<(DuplexStream, SocketAddr)> {
        self.calls.fetch_add(1, Relaxed);
        match self.queue.pop_front() {
            Some(r) => r.map(|io| (io, SocketAddr::from(([127, 0, 0, 1], 40000)))),
            None => std::future::pending().await,
        }
    }
}

fn emfile() -> io::Error {
    io::Error::from_raw_os_error(24)
}

/// Starts the accept loop over `queue`; returns the metrics, the accept
/// calls and the sender that stops it.
fn start(
    queue: Vec<io::Result<DuplexStream>>,
    limits: ConnLimits,
) -> (Arc<Shared>, Arc<AtomicU64>, tokio::sync::oneshot::Sender<()>) {
    start_with(queue, crate::ServerOptions { limits, timer: Timer::Runtime, ..Default::default() })
}

fn start_with(
    queue: Vec<io::Result<DuplexStream>>,
    options: crate::ServerOptions,
) -> (Arc<Shared>, Arc<AtomicU64>, tokio::sync::oneshot::Sender<()>) {
    let shared = Shared::new(rates_core::Dataset::embedded(), options).unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let listener = FakeListener { queue: queue.into(), calls: Arc::clone(&calls) };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let s = Arc::clone(&shared);
    tokio::spawn(async move {
        serve(listener, s, async { drop(rx.await) }, Duration::from_secs(1)).await;
    });
    (shared, calls, tx)
}

/// Reads until EOF (or the peer's reset), returning what came.
async fn read_all(io: &mut DuplexStream) -> String {
    let mut out = Vec::new();
    let _ = io.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one answer with a `content-length`.
async fn read_answer(io: &mut DuplexStream) -> String {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = io.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed mid-answer: {}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap();
            if out.len() >= end + 4 + len {
                return text;
            }
        }
    }
}

const GET: &[u8] = b"GET /rates?symbols=USD HTTP/1.1\r\nhost: x\r\n\r\n";

#[tokio::test(start_paused = true)]
async fn accept_errors_back_off_and_the_listener_goes_on() {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let queue = vec![Err(emfile()), Err(emfile()), Err(emfile()), Err(emfile()), Ok(server)];
    let started = Instant::now();
    let (metrics, calls, _stop) = start(queue, ConnLimits::default());
    client.write_all(GET).await.unwrap();
    let answer = read_answer(&mut client).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    // Four errors, each followed by a growing pause (20+40+80+160 ms):
    // the loop slept rather than spun, and then accepted again.
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    assert_eq!(calls.load(Relaxed), 6, "four errors, the connection, and the wait for the next");
    assert_eq!(metrics.metrics().snapshot().accept_errors, 4);
}

#[tokio::test(start_paused = true)]
async fn an_accept_error_sheds_a_waiting_connection() {
    let (mut silent, s1) = tokio::io::duplex(1024);
    let (mut client, s2) = tokio::io::duplex(64 * 1024);
    let limits = ConnLimits { header_timeout: Duration::from_secs(3600), ..Default::default() };
    // The first error may come before the silent connection was found
    // silent (it is then not shed, and the loop backs off); the second
    // sheds it.
    let (metrics, _calls, _stop) = start(vec![Ok(s1), Err(emfile()), Err(emfile()), Ok(s2)], limits);
    // The silent connection is closed to free a descriptor, long before
    // its header timeout.
    assert_eq!(read_all(&mut silent).await, "");
    client.write_all(GET).await.unwrap();
    assert!(read_answer(&mut client).await.starts_with("HTTP/1.1 200 OK"));
    let s = metrics.metrics().snapshot();
    assert_eq!((s.accept_errors, s.shed, s.header_timeouts), (2, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_silent_connection_is_closed_at_the_header_timeout() {
    let (mut silent, server) = tokio::io::duplex(1024);
    let limits = ConnLimits { header_timeout: Duration::from_secs(7), ..Default::default() };
    let started = Instant::now();
    let (metrics, _, _stop) = start(vec![Ok(server)], limits);
    assert_eq!(read_all(&mut silent).await, "");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(7) && waited < Duration::from_secs(8), "{waited:?}");
    let s = metrics.metrics().snapshot();
    assert_eq!((s.header_timeouts, s.idle_timeouts), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_slow_head_is_closed_at_the_header_timeout() {
    let (mut slow, server) = tokio::io::duplex(1024);
    let limits = ConnLimits { header_timeout: Duration::from_secs(5), ..Default::default() };
    let started = Instant::now();
    let (metrics, _, _stop) = start(vec![Ok(server)], limits);
    // A byte now and then does not extend the limit.
    for b in b"GET /rat" {
        slow.write_all(&[*b]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(read_all(&mut slow).await, "");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(5) && waited < Duration::from_secs(6), "{waited:?}");
    assert_eq!(metrics.metrics().snapshot().header_timeouts, 1);
}

/// A connection to a server with a 2 s head timeout and a 20 s idle
/// timeout, its first request answered and the connection kept alive.
async fn answered_keep_alive_connection() -> (DuplexStream, Arc<Shared>, tokio::sync::oneshot::Sender<()>) {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let limits = ConnLimits {
        header_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(20),
        ..Default::default()
    };
    let (metrics, _, stop) = start(vec![Ok(server)], limits);
    client.write_all(GET).await.unwrap();
    read_answer(&mut client).await;
    (client, metrics, stop)
}

#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout() {
    let (mut client, metrics, _stop) = answered_keep_alive_connection().await;
    // Idle longer than a head may take, yet kept; then a second request
    // on the same connection is answered.
    tokio::time::sleep(Duration::from_secs(15)).await;
    client.write_all(GET).await.unwrap();
    assert!(read_answer(&mut client).await.starts_with("HTTP/1.1 200 OK"));
    let idle_from = Instant::now();
    assert_eq!(read_all(&mut client).await, "");
    let idle = idle_from.elapsed();
    assert!(idle >= Duration::from_secs(20) && idle < Duration::from_secs(21), "{idle:?}");
    let s = metrics.metrics().snapshot();
    assert_eq!((s.header_timeouts, s.idle_timeouts, s.connections_open), (0, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn the_next_head_on_a_keep_alive_connection_is_timed_from_its_first_byte() {
    let (mut client, metrics, _stop) = answered_keep_alive_connection().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    client.write_all(b"GET /ra").await.unwrap();
    let first_byte = Instant::now();
    assert_eq!(read_all(&mut client).await, "");
    let waited = first_byte.elapsed();
    assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(3), "{waited:?}");
    let s = metrics.metrics().snapshot();
    assert_eq!((s.header_timeouts, s.idle_timeouts), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn answering_is_not_timed() {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let options = crate::ServerOptions {
        latency: Duration::from_secs(60),
        limits: ConnLimits { header_timeout: Duration::from_secs(1), ..Default::default() },
        timer: Timer::Runtime,
        ..Default::default()
    };
    let (metrics, _, _stop) = start_with(vec![Ok(server)], options);
    client.write_all(GET).await.unwrap();
    assert!(read_answer(&mut client).await.starts_with("HTTP/1.1 200 OK"));
    assert_eq!(metrics.metrics().snapshot().header_timeouts, 0);
}

#[tokio::test(start_paused = true)]
async fn at_the_cap_the_longest_waiting_connection_makes_room() {
    let (mut old, s1) = tokio::io::duplex(1024);
    let (mut newer, s2) = tokio::io::duplex(1024);
    let (mut client, s3) = tokio::io::duplex(64 * 1024);
    let limits = ConnLimits { max_connections: 2, header_timeout: Duration::from_secs(3600), ..Default::default() };
    let (metrics, _, _stop) = start(vec![Ok(s1), Ok(s2), Ok(s3)], limits);
    client.write_all(GET).await.unwrap();
    assert!(read_answer(&mut client).await.starts_with("HTTP/1.1 200 OK"));
    assert_eq!(read_all(&mut old).await, "", "the oldest silent connection is shed");
    newer.write_all(GET).await.unwrap();
    assert!(read_answer(&mut newer).await.starts_with("HTTP/1.1 200 OK"), "the newer one is kept");
    let s = metrics.metrics().snapshot();
    assert_eq!((s.shed, s.connections_open), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn at_the_cap_a_new_connection_has_time_to_send_its_request() {
    // A client opening many connections at once writes on the first a
    // moment after the second arrived: the first is answered, not shed.
    let (mut first, s1) = tokio::io::duplex(64 * 1024);
    let (mut second, s2) = tokio::io::duplex(64 * 1024);
    let limits = ConnLimits { max_connections: 1, ..Default::default() };
    let (metrics, calls, _stop) = start(vec![Ok(s1), Ok(s2)], limits);
    tokio::time::sleep(FIRST_WORD / 2).await;
    assert_eq!(calls.load(Relaxed), 2, "the second connection is waiting at the cap");
    first.write_all(GET).await.unwrap();
    assert!(read_answer(&mut first).await.starts_with("HTTP/1.1 200 OK"), "the first is answered");
    // Idle once answered, it makes room for the second.
    assert_eq!(read_all(&mut first).await, "");
    second.write_all(GET).await.unwrap();
    assert!(read_answer(&mut second).await.starts_with("HTTP/1.1 200 OK"));
    let s = metrics.metrics().snapshot();
    assert_eq!((s.cap_full, s.shed), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn at_the_cap_a_new_connection_still_silent_after_its_grace_is_shed() {
    let (mut first, s1) = tokio::io::duplex(1024);
    let (mut second, s2) = tokio::io::duplex(64 * 1024);
    let limits = ConnLimits { max_connections: 1, header_timeout: Duration::from_secs(3600), ..Default::default() };
    let started = Instant::now();
    let (metrics, _, _stop) = start(vec![Ok(s1), Ok(s2)], limits);
    assert_eq!(read_all(&mut first).await, "", "shed");
    assert!(started.elapsed() >= FIRST_WORD, "shed after {:?}", started.elapsed());
    second.write_all(GET).await.unwrap();
    assert!(read_answer(&mut second).await.starts_with("HTTP/1.1 200 OK"));
    assert_eq!(metrics.metrics().snapshot().shed, 1);
}

#[tokio::test(start_paused = true)]
async fn stopping_does_not_wait_for_a_spared_connection_to_ripen() {
    let (mut first, s1) = tokio::io::duplex(1024);
    let (_second, s2) = tokio::io::duplex(1024);
    let limits = ConnLimits { max_connections: 1, header_timeout: Duration::from_secs(3600), ..Default::default() };
    let started = Instant::now();
    let (metrics, calls, stop) = start(vec![Ok(s1), Ok(s2)], limits);
    tokio::time::sleep(FIRST_WORD / 4).await;
    assert_eq!(calls.load(Relaxed), 2, "the second connection is waiting at the cap");
    stop.send(()).unwrap();
    assert_eq!(read_all(&mut first).await, "", "closed by the stop");
    assert!(started.elapsed() < FIRST_WORD, "closed after {:?}", started.elapsed());
    assert_eq!(metrics.metrics().snapshot().shed, 0);
}

#[tokio::test(start_paused = true)]
async fn a_request_unread_in_its_socket_is_not_shed() {
    // At a cap of 1 the first connection's request is in its socket but
    // not read yet when the second arrives: it is answered, and only then,
    // idle, shed for the newcomer.
    let (mut first, s1) = tokio::io::duplex(64 * 1024);
    let (_second, s2) = tokio::io::duplex(1024);
    first.write_all(GET).await.unwrap();
    let limits = ConnLimits { max_connections: 1, ..Default::default() };
    let (metrics, _, _stop) = start(vec![Ok(s1), Ok(s2)], limits);
    assert!(read_answer(&mut first).await.starts_with("HTTP/1.1 200 OK"));
    assert_eq!(read_all(&mut first).await, "", "shed once idle");
    let s = metrics.metrics().snapshot();
    assert_eq!((s.cap_full, s.shed, s.connections_open), (1, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn stopping_closes_waiting_connections_and_finishes_answers() {
    let (mut busy, s1) = tokio::io::duplex(64 * 1024);
    let (mut silent, s2) = tokio::io::duplex(1024);
    let options = crate::ServerOptions { latency: Duration::from_secs(2), timer: Timer::Runtime, ..Default::default() };
    let shared = Shared::new(rates_core::Dataset::embedded(), options).unwrap();
    let listener = FakeListener { queue: vec![Ok(s1), Ok(s2)].into(), calls: Arc::default() };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server =
        tokio::spawn(serve(listener, Arc::clone(&shared), async { drop(stop_rx.await) }, Duration::from_secs(30)));
    busy.write_all(GET).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped = Instant::now();
    stop_tx.send(()).unwrap();
    assert_eq!(read_all(&mut silent).await, "");
    assert_eq!(stopped.elapsed(), Duration::ZERO, "the silent connection closes at once");
    assert!(read_answer(&mut busy).await.starts_with("HTTP/1.1 200 OK"), "the answer in flight is finished");
    server.await.unwrap();
    assert!(stopped.elapsed() < Duration::from_secs(2), "then the server returns, well within its grace");
    assert_eq!(shared.metrics().snapshot().connections_open, 0);
}

#[tokio::test(start_paused = true)]
async fn hypers_own_error_answers_carry_json() {
    let (mut client, server) = tokio::io::duplex(256 * 1024);
    let (_metrics, _, _stop) = start(vec![Ok(server)], ConnLimits::default());
    let big = format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "a".repeat(2 * MAX_HEAD));
    client.write_all(big.as_bytes()).await.unwrap();
    let answer = read_all(&mut client).await;
    assert!(answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{answer}");
    assert!(answer.contains("content-type: application/json\r\n"), "{answer}");
    assert!(answer.ends_with(r#"{"detail":"Request header fields too large."}"#), "{answer}");
}

#[test]
fn only_error_statuses_are_rewritten() {
    assert_eq!(hyper_error_status(b"HTTP/1.1 400 Bad Request\r\n"), Some(StatusCode::BAD_REQUEST));
    assert_eq!(hyper_error_status(b"HTTP/1.1 200 OK\r\n"), None);
    assert_eq!(hyper_error_status(b"{\"detail\""), None);
    assert_eq!(hyper_error_status(b"HTTP/1.1 4"), None);
}

#[test]
fn limits_are_validated() {
    assert!(ConnLimits::default().validate().is_ok());
    let zero = ConnLimits { header_timeout: Duration::ZERO, ..Default::default() };
    assert_eq!(zero.validate().unwrap_err().name, "header timeout");
    let zero = ConnLimits { idle_timeout: Duration::ZERO, ..Default::default() };
    assert_eq!(zero.validate().unwrap_err().name, "idle timeout");
    let none = ConnLimits { max_connections: 0, ..Default::default() };
    assert_eq!(none.validate().unwrap_err().name, "max connections");
}

/// The value of header `name` (lower case, as hyper writes it) in `answer`.
fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
}

/// Six clients send a request at once to a server of `options`: the
/// server's state and the answers.
async fn six_at_once(options: crate::ServerOptions) -> (Arc<Shared>, Vec<String>) {
    let (clients, servers): (Vec<_>, Vec<_>) = (0..6).map(|_| tokio::io::duplex(64 * 1024)).unzip();
    let (shared, _, _stop) = start_with(servers.into_iter().map(Ok).collect(), options);
    let mut answers = tokio::task::JoinSet::new();
    for mut client in clients {
        answers.spawn(async move {
            client.write_all(GET).await.unwrap();
            read_answer(&mut client).await
        });
    }
    let answers = tokio::time::timeout(Duration::from_secs(60), answers.join_all()).await.expect("no hang");
    (shared, answers)
}

#[tokio::test(start_paused = true)]
async fn requests_beyond_the_capacity_wait_their_turn() {
    let options = crate::ServerOptions {
        capacity: Some(2),
        latency: Duration::from_millis(200),
        timer: Timer::Runtime,
        ..Default::default()
    };
    let (shared, answers) = six_at_once(options).await;
    assert!(answers.iter().all(|a| a.starts_with("HTTP/1.1 200 OK")), "{answers:?}");
    let s = shared.metrics().snapshot();
    // All six were in at once, two at a time were served.
    assert_eq!((s.count(200), s.max_in_flight, s.max_in_service), (6, 6, 2), "{s:?}");
    assert_eq!((s.waiting, s.in_service), (0, 0));
    // The wait counts in the latency the server records: two answers
    // took one latency, two took two, two took three.
    let text = shared.metrics().render();
    for (le, n) in [("0.1", 0), ("0.25", 2), ("0.5", 4), ("1", 6)] {
        let line = format!("rates_request_duration_seconds_bucket{{code=\"200\",route=\"/rates\",le=\"{le}\"}} {n}\n");
        assert!(text.contains(&line), "{line} in {text}");
    }
}

#[tokio::test(start_paused = true)]
async fn without_a_capacity_nothing_waits() {
    let options =
        crate::ServerOptions { latency: Duration::from_millis(200), timer: Timer::Runtime, ..Default::default() };
    let (shared, answers) = six_at_once(options).await;
    assert_eq!(answers.len(), 6);
    assert_eq!(shared.metrics().snapshot().max_in_service, 6);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_follows_the_advertised_policy_gets_no_429() {
    for (rate, burst) in [(5.0, 5), (2.0, 4), (3.0, 5), (0.5, 1)] {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let options = crate::ServerOptions {
            rate_limit: Some(crate::Quota::new(rate, burst).expect("a valid quota")),
            rate_limit_headers: true,
            ..Default::default()
        };
        let (shared, _, _stop) = start_with(vec![Ok(server)], options);
        let mut policy = None;
        for _ in 0..40 {
            client.write_all(GET).await.unwrap();
            let answer = read_answer(&mut client).await;
            assert!(answer.starts_with("HTTP/1.1 200 OK"), "{rate}/s burst {burst}: {answer}");
            // The client's own parser reads the policy; it never changes.
            let info = rates_core::RateLimitInfo::from_headers(|name| header(&answer, name)).expect("headers");
            assert_eq!(*policy.get_or_insert((info.limit, info.window)), (info.limit, info.window));
            // One request every window/limit: rate = limit / window.
            tokio::time::sleep(info.window / info.limit).await;
        }
        assert_eq!(shared.metrics().snapshot().rate_limited, 0);
        // Twice as fast is refused, or the test above proves nothing.
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let options = crate::ServerOptions {
            rate_limit: Some(crate::Quota::new(rate, burst).expect("a valid quota")),
            ..Default::default()
        };
        let (shared, _, _stop) = start_with(vec![Ok(server)], options);
        let (limit, window) = policy.expect("learnt");
        for _ in 0..40 {
            client.write_all(GET).await.unwrap();
            read_answer(&mut client).await;
            tokio::time::sleep(window / limit / 2).await;
        }
        assert!(shared.metrics().snapshot().rate_limited > 0, "{rate}/s burst {burst}");
    }
}

#[tokio::test(start_paused = true)]
async fn by_default_only_the_429_tells_as_vatcomplys_does() {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let options = crate::ServerOptions {
        rate_limit: Some(crate::Quota::new(1.0, 1).expect("a valid quota")),
        ..Default::default()
    };
    let (_shared, _, _stop) = start_with(vec![Ok(server)], options);
    let standard = ["ratelimit", "ratelimit-policy", "x-ratelimit-remaining", "x-ratelimit-reset"];
    client.write_all(GET).await.unwrap();
    let answer = read_answer(&mut client).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    for name in standard.iter().chain(&["x-ratelimit-limit", "x-ratelimit-burst", "retry-after"]) {
        assert_eq!(header(&answer, name), None, "{name} in {answer}");
    }
    client.write_all(GET).await.unwrap();
    let answer = read_answer(&mut client).await;
    assert!(answer.starts_with("HTTP/1.1 429 Too Many Requests"), "{answer}");
    for name in standard {
        assert_eq!(header(&answer, name), None, "{name} in {answer}");
    }
    assert_eq!(header(&answer, "retry-after"), Some("1"));
    assert_eq!(header(&answer, "x-ratelimit-limit"), Some("1"));
    assert_eq!(header(&answer, "x-ratelimit-burst"), Some("1"));
}

#[tokio::test]
async fn connections_tell_the_accept_loop_only_while_it_waits_for_room() {
    // Whether `room` holds a wake-up for the next wait.
    async fn woken(room: &Room) -> bool {
        tokio::select! {
            biased;
            () = room.notify.notified() => true,
            () = std::future::ready(()) => false,
        }
    }
    let room = Room::default();
    room.tell();
    assert!(!woken(&room).await, "nobody waits: no wake-up is kept");
    room.wanted.store(true, SeqCst);
    room.tell();
    assert!(woken(&room).await, "the waiting loop is woken");
}

#[tokio::test(start_paused = true)]
async fn a_kept_answer_is_the_routes_answer_byte_for_byte() {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let (shared, _, _stop) = start(vec![Ok(server)], ConnLimits::default());
    // Without its date line, which may tick between the two.
    let undated = |a: String| a.lines().filter(|l| !l.starts_with("date: ")).collect::<Vec<_>>().join("\n");
    client.write_all(GET).await.unwrap();
    let made = undated(read_answer(&mut client).await);
    client.write_all(GET).await.unwrap();
    let kept = undated(read_answer(&mut client).await);
    assert_eq!(kept, made);
    assert!(made.contains("content-type: application/json"), "{made}");
    // Counted and timed like any answer.
    assert_eq!(shared.metrics().snapshot().count(200), 2);
    // HEAD is no method of the API's routes (vatcomply answers 404), and
    // the kept answer is not given to it.
    client.write_all(b"HEAD /rates?symbols=USD HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut head = vec![0u8; 4096];
    let n = client.read(&mut head).await.unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 404 Not Found") && head.ends_with("\r\n\r\n"), "{head}");
}

#[tokio::test(start_paused = true)]
async fn a_request_is_timed_from_its_head_not_from_the_connections_accept_or_idle_time() {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let (shared, _, _stop) = start(vec![Ok(server)], ConnLimits::default());
    // Silent for 5 s after the accept, and 5 s between the two requests.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        client.write_all(GET).await.unwrap();
        assert!(read_answer(&mut client).await.starts_with("HTTP/1.1 200 OK"));
    }
    // No time passes on the paused clock while a request is answered.
    let text = shared.metrics().render();
    let line = "rates_request_duration_seconds_bucket{code=\"200\",route=\"/rates\",le=\"0.0005\"} 2\n";
    assert!(text.contains(line), "{line} in {text}");
}
