//! `rates serve` protects itself: out of file descriptors (a low limit set
//! for the child), silent sockets are shed so a real request is still
//! answered, and the accept errors show in `/metrics`; bad limits are
//! refused with exit 2. Its descriptor table is grown before any thread
//! starts.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::TcpStream;
use std::process::Command;

use common::{Served, get, metric};
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

#[test]
fn out_of_descriptors_sheds_silent_sockets_and_keeps_serving() {
    // 64 descriptors, a cap far above them and a head timeout that never
    // fires here: only shedding can make room for the real request.
    let served = serve_with_nofile(64, &["--max-connections", "1000", "--header-timeout", "10m"]);
    let addr = served.addr.clone();
    let silent: Vec<TcpStream> = (0..150).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    let answer = get(&addr, "/rates?base=USD&symbols=PLN&date=2018-10-12");
    let (status, body) = (answer.status, answer.body);
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(body.contains("\"PLN\":3.709694"), "{body}");
    let text = get(&addr, "/metrics").body;
    assert!(metric(&text, "rates_accept_errors_total") > 0, "{text}");
    assert!(metric(&text, "rates_connections_closed_total{reason=\"shed\"}") > 0, "{text}");
    assert_eq!(metric(&text, "rates_connections_closed_total{reason=\"header_timeout\"}"), 0, "{text}");
    drop(silent);
    assert_eq!(served.stop(Signal::SIGTERM).status.code(), Some(0));
}

#[test]
fn the_descriptor_table_is_grown_at_start_up_within_the_limit() {
    // Grown while the program has one thread, it never doubles (and
    // stalls every thread) during a storm of connections. A new process
    // starts with a table of 64, and grows it only as descriptors open.
    let fd_size = |served: &Served| -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", served.pid())).unwrap();
        status.lines().find_map(|l| l.strip_prefix("FDSize:")).unwrap().trim().parse().unwrap()
    };
    let served = serve_with_nofile(4096, &[]);
    assert!(fd_size(&served) >= 4096, "FDSize {}", fd_size(&served));
    assert_eq!(served.stop(Signal::SIGTERM).status.code(), Some(0));
    // Never past the limit: 200 descriptors allowed, a table of 256.
    let served = serve_with_nofile(200, &[]);
    assert!((200..=256).contains(&fd_size(&served)), "FDSize {}", fd_size(&served));
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
