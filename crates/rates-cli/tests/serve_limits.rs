//! `rates serve` protects itself: out of file descriptors (a low limit set
//! for the child), silent sockets are shed so a real request is still
//! answered, and the accept errors show in `/metrics`; bad limits are
//! refused with exit 2.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::Served;
use nix::sys::signal::Signal;

/// Starts `rates serve` with `args` under a limit of `nofile` descriptors
/// (soft and hard, so the program cannot raise it).
fn serve_with_nofile(nofile: u32, args: &[&str]) -> Served {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
        .arg(assert_cmd::cargo::cargo_bin("rates"))
        .args(["serve", "--addr", "127.0.0.1:0"])
        .args(args);
    Served::start(cmd)
}

/// `GET path` on a new connection that asks to be closed after the answer:
/// (status line, body).
fn get(addr: &str, path: &str) -> (String, String) {
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(sock, "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    sock.read_to_string(&mut out).expect("an answer within 30 s");
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{out:?}"));
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

/// The value of metric line `name` in `text`.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[test]
fn out_of_descriptors_sheds_silent_sockets_and_keeps_serving() {
    // 64 descriptors, a cap far above them and a head timeout that never
    // fires here: only shedding can make room for the real request.
    let served = serve_with_nofile(64, &["--max-connections", "1000", "--header-timeout", "10m"]);
    let addr = served.addr.clone();
    let silent: Vec<TcpStream> = (0..150).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    let (status, body) = get(&addr, "/rates?base=USD&symbols=PLN&date=2018-10-12");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(body.contains("\"PLN\":3.709694"), "{body}");
    let (_, text) = get(&addr, "/metrics");
    assert!(metric(&text, "rates_accept_errors_total") > 0, "{text}");
    assert!(metric(&text, "rates_connections_closed_total{reason=\"shed\"}") > 0, "{text}");
    assert_eq!(metric(&text, "rates_connections_closed_total{reason=\"header_timeout\"}"), 0, "{text}");
    drop(silent);
    assert_eq!(served.stop(Signal::SIGTERM).status.code(), Some(0));
}

#[test]
fn bad_limits_exit_2() {
    for (flag, value) in [("--max-connections", "0"), ("--header-timeout", "0"), ("--idle-timeout", "0")] {
        let (code, _, err) = common::run(&["serve", "--addr", "127.0.0.1:0", flag, value]);
        assert_eq!(code, 2, "{flag} {value}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}
